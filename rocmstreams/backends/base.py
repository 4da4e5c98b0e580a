"""The small interface every backend implements, named after the HIP runtime calls.

Handles cross this interface as plain ``int`` addresses (0 is the legacy default stream,
``PER_THREAD_STREAM`` the per-thread default stream), so that the public classes never touch a
binding's own handle types and never branch on the backend.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Protocol, Sequence

#: Handle of the legacy default (NULL) stream on every backend.
LEGACY_STREAM = 0
#: Handle of the per-thread default stream (``cudaStreamPerThread`` / ``hipStreamPerThread``).
PER_THREAD_STREAM = 2


@functools.lru_cache(maxsize=None)
def _signature(py_func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(py_func)


def check_kernel_arguments(dispatcher: Any, args: Sequence[Any]) -> None:
    """Raise TypeError, before anything is queued, when ``args`` do not fit the kernel."""
    py_func = getattr(dispatcher, "py_func", None)
    if py_func is None:
        return
    try:
        _signature(py_func).bind(*args)
    except TypeError as exc:
        raise TypeError(f"kernel {py_func.__name__}: {exc}; nothing was launched") from None


CLOSED_LAUNCH_STREAM = "the launch stream is closed; configure the kernel on an open RocmStream"


class KernelLauncher:
    """Launches one kernel: ``launch_on(stream, config, *args)``, or ``configure(stream,
    config)(*args)``.

    ``stream`` is any object whose ``_handle`` is the stream handle, None once closed, and whose
    ``_capture`` is the graph it is capturing or None (a RocmStream, or a weak proxy of one);
    ``config`` is ``(gx, gy, gz, bx, by, bz, sharedmem)``.

    Parameters
    ----------
    launch : callable
        ``launch(handle, args, config)``: the backend's launch through the Numba module.
    """

    def __init__(self, launch: Callable[[int, tuple, tuple], None]) -> None:
        self._launch = launch

    def configure(self, stream: Any, config: tuple) -> Callable[..., None]:
        """The launch on ``stream`` with ``config``: a function taking the kernel's arguments."""
        launch_on = self.launch_on

        def launch(*args: Any) -> None:
            launch_on(stream, config, *args)

        return launch

    def launch_on(self, stream: Any, config: tuple, *args: Any) -> None:
        try:
            handle = stream._handle
        except ReferenceError:  # a proxy of a collected stream: its handle went with it
            handle = None
        if handle is None:
            from ..errors import StreamClosedError
            raise StreamClosedError(CLOSED_LAUNCH_STREAM)
        if stream._capture is not None:  # a graph keeps its launches' arrays alive
            stream._capture._keep(args)
        self._launch(handle, args, config)


class Backend(Protocol):
    """One GPU runtime (or the embedded cpu runtime) behind the HIP-named calls.

    Every method raises a :class:`rocmstreams.errors.RocmStreamsError` subclass on failure, mapped
    in one place per backend. ``stream_query`` and ``event_query`` return False only for the
    runtime's not-ready code.
    """

    name: str

    # devices
    def get_device_count(self) -> int: ...
    def get_device(self) -> int: ...
    def set_device(self, ordinal: int) -> None: ...
    def device_name(self, ordinal: int) -> str: ...
    def device_get_stream_priority_range(self) -> tuple[int, int]:
        """(least, greatest) priority of the current device; greatest is numerically lower."""
    def versions(self) -> dict[str, str]: ...

    #: The status object of a successful call in the results of the bound calls below (tested
    #: with ``is``).
    success: Any

    # hot paths: calls bound once to a handle, returning the binding's raw ``(status, ...)``
    def bind_stream(self, stream: int) -> tuple[Callable[[], tuple], Callable[[], tuple]]:
        """``(query, synchronize)`` of ``stream``, bound; interpret a result that is not
        ``success`` with :meth:`stream_query_result` / :meth:`stream_synchronize_result`."""
    def stream_object(self, stream: int) -> Any:
        """What the bound calls take for ``stream`` (the binding's own handle object)."""
    def bind_event(self, event: int) -> Callable[[Any], tuple]:
        """``record(stream object)`` of ``event``, bound; see :meth:`event_record_result`."""
    def stream_query_result(self, result: tuple, stream: int) -> bool:
        """False for the not-ready status; raises for any other failure."""
    def stream_synchronize_result(self, result: tuple, stream: int) -> None:
        """Raises the error a failed synchronize of ``stream`` returned."""
    def event_record_result(self, result: tuple, event: int, stream: int) -> None:
        """Raises the error a failed record of ``event`` on ``stream`` returned."""

    # streams
    def stream_create(self, non_blocking: bool, priority: int, device: int | None = None) -> int:
        """A stream on ``device`` (the current device; None: ask the runtime which it is)."""
    def stream_query(self, stream: int) -> bool: ...
    def stream_synchronize(self, stream: int) -> None: ...
    def stream_destroy(self, stream: int) -> None: ...
    def stream_wait_event(self, stream: int, event: int) -> None: ...
    def launch_host_func(self, stream: int, fn: Callable[[], None]) -> None:
        """Run ``fn()`` after all earlier work on ``stream``; later work waits for it.

        ``fn`` never raises (the caller wraps it) and must not call the runtime.
        """

    # events
    def event_create(self, timing: bool) -> int: ...
    def event_record(self, event: int, stream: int) -> None: ...
    def event_query(self, event: int) -> bool: ...
    def event_synchronize(self, event: int) -> None: ...
    def event_elapsed_time(self, start: int, end: int) -> float: ...
    def event_destroy(self, event: int) -> None: ...

    # memory
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def host_malloc(self, nbytes: int) -> int:
        """Page-locked host memory, mapped into the device's address space (a latch can spin on it)."""
    def host_free(self, ptr: int) -> None: ...
    def memcpy_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        """Copy in the direction the unified address space implies (``*MemcpyDefault``)."""

    # graph capture (global capture mode)
    def stream_begin_capture(self, stream: int) -> None:
        """Start recording the work queued on ``stream`` instead of running it.

        The legacy default stream cannot be captured; a stream already capturing cannot begin
        again (both :class:`~rocmstreams.errors.CaptureError`).
        """
    def stream_end_capture(self, stream: int) -> int:
        """Stop recording on ``stream``; return the handle of the graph of what was recorded.

        The capture ends even when this raises: CaptureError when the capture was invalidated (a
        call the runtime refuses during capture, such as a query of the capturing stream) or
        ``stream`` is not capturing.
        """
    def stream_is_capturing(self, stream: int) -> bool:
        """True from begin to end capture, also once the capture was invalidated."""
    def graph_instantiate(self, graph: int) -> int:
        """An executable graph made from ``graph``; returns its handle."""
    def graph_launch(self, graph_exec: int, stream: int) -> None:
        """Queue one replay of ``graph_exec`` on ``stream``: every recorded operation, in order,
        after earlier work on ``stream`` and after the previous launch of ``graph_exec``."""
    def graph_exec_destroy(self, graph_exec: int) -> None:
        """Destroy an executable graph; launches already queued still run."""
    def graph_destroy(self, graph: int) -> None:
        """Destroy a graph (its executables stay usable)."""

    # kernels
    def numba_module(self) -> Any:
        """The ``numba.cuda``-dialect module kernels are compiled with on this backend."""
    def launch_kernel(self, dispatcher: Any, griddim: Any, blockdim: Any, stream: int,
                      sharedmem: int, args: Sequence[Any]) -> None:
        """Launch a Numba kernel (a ``@cuda.jit`` dispatcher) on ``stream`` through Numba."""
    def kernel_launcher(self, dispatcher: Any) -> KernelLauncher:
        """The launcher of a kernel on the current device (made once and kept).

        It may prepare launches (types resolved once per signature, arguments packed into a
        reused buffer); its results equal :meth:`launch_kernel`'s, and what it cannot prepare
        goes there.
        """

    # bookkeeping
    def live_handles(self) -> dict[str, int]:
        """How many streams and events this backend created and has not destroyed."""
