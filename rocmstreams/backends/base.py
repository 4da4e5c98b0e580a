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
    """Launches one kernel: ``launch_on(stream, config, *args)``.

    ``stream`` is any object whose ``_handle`` is the stream handle, None once closed (a
    RocmStream, or a weak proxy of one); ``config`` is ``(gx, gy, gz, bx, by, bz, sharedmem)``.

    Parameters
    ----------
    launch : callable
        ``launch(handle, args, config)``: the backend's launch through the Numba module.
    """

    def __init__(self, launch: Callable[[int, tuple, tuple], None]) -> None:
        self._launch = launch

    def launch_on(self, stream: Any, config: tuple, *args: Any) -> None:
        try:
            handle = stream._handle
        except ReferenceError:  # a proxy of a collected stream: its handle went with it
            handle = None
        if handle is None:
            from ..errors import StreamClosedError
            raise StreamClosedError(CLOSED_LAUNCH_STREAM)
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

    # streams
    def stream_create(self, non_blocking: bool, priority: int) -> int: ...
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
