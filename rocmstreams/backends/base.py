"""The small interface every backend implements, named after the HIP runtime calls.

Handles cross this interface as plain ``int`` addresses (0 is the legacy default stream,
``PER_THREAD_STREAM`` the per-thread default stream), so that the public classes never touch a
binding's own handle types and never branch on the backend. Every call returns values or raises a
:class:`~rocmstreams.errors.RocmStreamsError` built by the backend's one error point,
:meth:`Backend.error`; no caller ever sees a runtime status.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

__all__ = ["LEGACY_STREAM", "PER_THREAD_STREAM", "Backend", "StreamCalls", "KernelDriver",
           "on_device"]

#: Handle of the legacy default (NULL) stream on every backend.
LEGACY_STREAM = 0
#: Handle of the per-thread default stream (``cudaStreamPerThread`` / ``hipStreamPerThread``).
PER_THREAD_STREAM = 2


class StreamCalls(Protocol):
    """The runtime's calls on one stream, bound once to its handle (the hot paths).

    Made by :meth:`Backend.stream_calls`; only the stream core calls them, through its door.
    """

    #: The stream handle the calls are bound to.
    handle: int

    def query(self) -> bool:
        """True when the stream is idle; False only for the runtime's not-ready answer."""
    def synchronize(self) -> None:
        """Block until the stream is idle (releasing the GIL); raises what its work raised."""
    def event_record(self, event: int) -> None: ...
    def wait_event(self, event: int) -> None: ...
    def memcpy_async(self, dst: int, src: int, nbytes: int) -> None:
        """Copy in the direction the unified address space implies (``*MemcpyDefault``)."""
    def memcpy_peer_async(self, dst: int, dst_device: int, src: int, src_device: int,
                          nbytes: int) -> None:
        """Copy between the memory of two devices (``*MemcpyPeerAsync``)."""
    def launch_host_func(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` after all earlier work; later work waits for it. ``fn`` never raises."""
    def launch_kernel(self, dispatcher: Any, config: tuple, args: Sequence[Any],
                      arrays: Sequence[Any]) -> None:
        """Launch a Numba kernel through the Numba module's own launch path.

        ``config`` is ``(gx, gy, gz, bx, by, bz, sharedmem)``; ``arrays[i]`` describes
        ``args[i]`` where it is a device array (its ``shape``, ``dtype``, ``address`` and byte
        ``strides``), else is None.
        """
    def begin_capture(self) -> None:
        """Start recording the stream's work (global capture mode) instead of running it."""
    def end_capture(self) -> int:
        """Stop recording; the handle of the recorded graph. The capture ends even if it raises
        (:class:`~rocmstreams.errors.CaptureError` for an invalidated capture)."""
    def graph_launch(self, graph_exec: int) -> None:
        """Queue one replay of ``graph_exec``, after earlier work and its previous replay."""


@dataclass(frozen=True)
class KernelDriver:
    """The driver calls a backend gives prepared kernel launches (see integrations.numba).

    ``launch(function, gx, gy, gz, bx, by, bz, shared, stream, params, extra)`` is the driver's
    launch call, returning a tuple whose first item is its status; ``success`` is the status of
    success (compared with ``is``); ``function(kernel)`` the launchable function of a compiled
    Numba kernel on the current device; ``stream(handle)`` the object ``launch`` takes for a
    stream handle; ``error(status, what)`` the exception for a failed launch; ``extra`` the value
    passed as the launch call's ``extra`` argument.

    ``buffer_markers``, where the driver takes all parameters as one buffer through ``extra``
    (CUDA's ``CU_LAUNCH_PARAM_BUFFER_POINTER``/``_SIZE``/``_END``, in that order);
    ``param_info(function, count)`` the function's parameters as ``(offset, size)`` pairs, or
    None where the driver cannot say.
    """

    launch: Callable[..., tuple]
    success: Any
    function: Callable[[Any], Any]
    stream: Callable[[int], Any]
    error: Callable[[Any, str], BaseException]
    extra: Any = 0
    buffer_markers: tuple[int, int, int] | None = None
    param_info: Callable[[Any, int], list[tuple[int, int]] | None] | None = None
    #: ``recover(status, device)``: True when the failure was a thread with no current context
    #: and ``device``'s context is now current, so the launch may be made once more.
    recover: Callable[[Any, int], bool] = lambda status, device: False
    #: ``bind_launch(function, params, extra)``: the launch call compiled (backends.native) and
    #: bound to one function and parameter buffer, called as ``(gx, gy, gz, bx, by, bz, shared,
    #: raw_stream(handle))`` and returning the driver's status as an int; on any status but 0
    #: the launch is made again through ``launch``, which says why it failed. None: every
    #: launch goes through ``launch``.
    bind_launch: Callable[[Any, "int | None", Any], Callable[..., int]] | None = None
    raw_stream: Callable[[int], int] = int
    #: ``load(function)``: make the function resident on the current device now. A runtime that
    #: loads lazily does it at the first launch, and that load waits for the device's work;
    #: ``rocmstreams.prepare`` calls this so the wait happens there instead.
    load: Callable[[Any], None] = lambda function: None


class Backend(Protocol):
    """One GPU runtime (or the embedded cpu runtime) behind the HIP-named calls."""

    name: str
    #: Idle streams kept per (device, flags, priority) once released (0: none); set from the
    #: configuration (``rocmstreams.configure(stream_pool_size=...)``).
    stream_pool_size: int
    #: Whether the hot calls (stream query, synchronize, event record, prepared launches) are
    #: made from compiled code (backends.native); set from the configuration
    #: (``rocmstreams.configure(native_calls=...)``), read back False where they cannot be.
    native_calls: bool
    #: Cached bytes each memory pool keeps when trimmed (``set_release_threshold`` sets it).
    release_threshold: int

    # the error point
    def error(self, code: int, what: str, *, name: str | None = None,
              message: str | None = None) -> Exception:
        """The error for a runtime status ``code``: the one place errors are built."""

    # devices
    def get_device_count(self) -> int: ...
    def get_device(self) -> int: ...
    def set_device(self, ordinal: int) -> None: ...
    def device_name(self, ordinal: int) -> str: ...
    def device_get_stream_priority_range(self) -> tuple[int, int]:
        """(least, greatest) priority of the current device; greatest is numerically lower."""
    def peer_access(self, device: int, peer: int) -> bool:
        """Whether ``device`` reaches the memory of ``peer`` directly: asks the runtime once per
        pair (``*DeviceCanAccessPeer``) and, where it can, enables the access from ``device``
        (``*DeviceEnablePeerAccess``, once per pair); True for ``device == peer``."""
    def versions(self) -> dict[str, str]: ...

    # streams
    def stream_create(self, non_blocking: bool, priority: int, device: int) -> int:
        """A stream on ``device`` (which the caller has made current): an idle pooled one with
        the same options, else a new one."""
    def stream_destroy(self, stream: int) -> None:
        """Release a stream this backend created: pooled when idle and the pool has room,
        else destroyed (its queued work still completes)."""
    def stream_calls(self, stream: int) -> StreamCalls:
        """The hot calls bound to ``stream``."""

    # events
    def event_create(self, timing: bool) -> int: ...
    def event_query(self, event: int) -> bool: ...
    def event_synchronize(self, event: int) -> None: ...
    def event_elapsed_time(self, start: int, end: int) -> float: ...
    def event_destroy(self, event: int) -> None: ...

    # memory
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def device_synchronize(self, device: int) -> None:
        """Wait until every stream of ``device`` (the current one) has run its work so far."""
    def host_malloc(self, nbytes: int) -> int:
        """Page-locked host memory, mapped into the device's address space."""
    def host_free(self, ptr: int) -> None: ...

    # stream-ordered memory (the runtime's pool; where a device has none, a cache of our own
    # with the same semantics)
    def malloc_async(self, nbytes: int, stream: int, device: int) -> int:
        """Device memory usable by work queued on ``stream`` after this call (and by work on
        any stream ordered after that point); ``device`` is the stream's, made current."""
    def free_async(self, ptr: int, nbytes: int, stream: int, device: int) -> None:
        """Return ``ptr`` (from :meth:`malloc_async`) to the pool once ``stream`` passes the
        work queued on it so far; never blocks the host, never synchronizes the device."""
    def memory_pools(self, device: int) -> bool:
        """Whether ``device`` allocates from the runtime's pool (False: the backend's cache)."""
    def memory_stream(self, device: int) -> int:
        """A non-blocking stream of the backend's own on ``device``, for memory allocated
        without a stream: it only allocates, waits and frees. Lives for the process; not
        counted by :meth:`live_handles`."""
    def pool_trim(self, device: int) -> None:
        """Give the memory the pool of ``device`` caches, unused, back to the system."""
    def pool_trim_to(self, device: int, keep: int) -> None:
        """Give unused memory of ``device``'s pool back until it reserves no more than ``keep``
        bytes (in use included), where that waits for no work: a runtime pool, the cpu pool.
        The backend's own cache (a device without pools) keeps its blocks, whose free waits for
        the device, until :meth:`pool_trim`."""
    def pool_usage(self, device: int) -> dict[str, int]:
        """``reserved_bytes`` and ``reserved_peak_bytes``: memory the pool of ``device`` holds
        from the system (in use and cached), now and at most."""
    def set_release_threshold(self, nbytes: int) -> None:
        """Cached bytes each pool keeps when the runtime trims it at a synchronize."""
    def stream_hold(self, stream: int) -> None:
        """Keep ``stream`` (one this backend created) from being released until the matching
        :meth:`stream_unhold`: a release waits for work queued on it (a stream-ordered free)."""
    def stream_unhold(self, stream: int) -> None: ...

    # graphs
    def graph_instantiate(self, graph: int) -> int: ...
    def graph_exec_destroy(self, graph_exec: int) -> None: ...
    def graph_destroy(self, graph: int) -> None: ...

    # kernels
    def numba_module(self) -> Any:
        """The ``numba.cuda``-dialect module kernels are compiled with on this backend."""
    def numba_stream(self, stream: int) -> Any:
        """The Numba module's own stream object for ``stream`` (an external stream), or None
        where Numba's streams order nothing (the simulator)."""
    def kernel_driver(self) -> KernelDriver | None:
        """The driver calls of prepared launches; None: every launch takes Numba's own."""

    # bookkeeping
    def live_handles(self) -> dict[str, int]:
        """How many streams (in use), events and allocations this backend made and has not
        released, and how many idle streams it keeps pooled (``"pooled_streams"``)."""


@contextlib.contextmanager
def on_device(backend: Backend, ordinal: int) -> Iterator[None]:
    """Make ``ordinal`` the calling thread's current device of ``backend`` for the block, the
    previous one current again after (no call where it is current already)."""
    previous = backend.get_device()
    if previous == ordinal:
        yield
        return
    backend.set_device(ordinal)
    try:
        yield
    finally:
        backend.set_device(previous)
