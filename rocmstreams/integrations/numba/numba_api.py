"""Numba's own API takes a RocmStream: ``cuda.to_device(x, stream=s)``, ``d.copy_to_host(
stream=s)``, ``d.copy_to_device(h, stream=s)``, ``cuda.event().record(s)``, ``ev.wait(s)``.

On GPU backends Numba's driver turns every stream argument into a handle in two functions
(``_stream_handle`` and ``_to_core_stream`` of ``numba.cuda.cudadrv.driver``); a RocmStream is
given to them as the Numba module's external stream of the same handle, so Numba's copies and
events run on the RocmStream itself, in its order (a closed RocmStream is refused first).

On the cpu backend Numba's simulator copies at call time; with a RocmStream the copy is queued
on the stream as a host function instead, so it runs after the work queued before it: from the
host the source is read at the call (as from pageable memory), into the host the call returns
once the data is there. ``cuda.event()`` there is a rocmstreams Event, so records and waits are
real cross-stream dependencies.
"""
from __future__ import annotations

import functools
import importlib
import threading
from typing import Any, Callable

import numpy as np

from ...backends import Backend
from ...core.callbacks import on_callback_thread, refuse, running
from ...errors import StreamClosedError
from ...event import Event
from ...stream import RocmStream, default_stream
from ...streamcore import StreamCore
from .simulated_ufuncs import install_simulated_ufuncs

__all__ = ["install_numba_api", "SimulatorEvent", "register_device_array_type"]

_PATCHED = "_rocmstreams_patched"


def _core_of(stream: Any) -> StreamCore | None:
    core = getattr(stream, "__rocmstreams_core__", None)
    return core if isinstance(core, StreamCore) else None


def install_numba_api(backend: Backend) -> None:
    """Make the backend's Numba module take RocmStreams wherever it takes a stream
    (idempotent)."""
    module = backend.numba_module()
    if getattr(module, _PATCHED, False):
        return
    if module.__name__ == "numba.hip":
        register_device_array_type()
    if backend.numba_stream(0) is None:
        _install_simulator(module)
    else:
        for place in ("cudadrv.driver", "hipdrv.driver"):  # numba-cuda's, numba-hip's
            try:
                driver = importlib.import_module(f"{module.__name__}.{place}")
            except ImportError:
                continue
            _install_driver(backend, driver)
            _install_context_guard(module.__name__, driver)
            break
    setattr(module, _PATCHED, True)


def register_device_array_type() -> None:
    """Type a rocmstreams DeviceArray for Numba from its own shape and dtype (a C-contiguous
    array), so that typing it needs no GPU context: numba-hip otherwise types a CUDA Array
    Interface object through ``as_cuda_array``, which initialises the HIP driver. Idempotent."""
    from numba.core import types
    from numba.core.typing.typeof import typeof_impl
    from numba.np.numpy_support import from_dtype

    from ...memory import DeviceArray

    if DeviceArray in typeof_impl.registry:
        return

    @typeof_impl.register(DeviceArray)
    def _typeof_device_array(val: DeviceArray, c: Any) -> Any:
        return types.Array(from_dtype(val.dtype), val.ndim, "C")


# ---- GPU backends: the driver's stream conversions ----------------------------------------------
def _install_driver(backend: Backend, driver: Any) -> None:
    def numba_stream(stream: Any) -> Any:
        if running:  # any stream: a host callback must not reach the driver
            refuse("a numba.cuda call with a stream (a copy, an event or a launch)")
        core = _core_of(stream)
        if core is None:
            return stream
        _refuse_closed(core)  # before Numba sees its handle
        return backend.numba_stream(core.calls.handle)

    for name in ("_stream_handle", "_to_core_stream"):
        original = getattr(driver, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def converted(stream: Any, _original: Callable[[Any], Any] = original) -> Any:
            return _original(numba_stream(stream))

        setattr(driver, name, converted)


def _refuse_closed(core: StreamCore) -> None:
    """StreamClosedError for a closed RocmStream given to numba (or the stream a numba array is
    bound to), saying so."""
    try:
        core.enter()
    except StreamClosedError as exc:
        raise StreamClosedError(
            f"{exc} (numba was given it: as stream=, or as the stream the array was made for "
            "or bound to; pass stream= an open RocmStream, or bind the array to one with "
            "d.bind(stream))") from None
    core.leave()


def _may_queue(stream: Any, what: str) -> None:
    """Before a numba call is queued on the cpu backend's RocmStream ``stream``: refused inside
    a host callback, and on a closed stream (see :func:`_refuse_closed`)."""
    if running:
        refuse(what)
    _refuse_closed(stream.__rocmstreams_core__)


def _install_context_guard(name: str, driver: Any) -> None:
    """Refuse every Numba call that enters a GPU context (its ``require_context`` calls:
    copies, arrays, events, launches) from inside a host callback, before Numba's first driver
    call there (which the runtime forbids: CUDA answers ``cudaErrorNotPermitted``, or the call
    may deadlock). Numba enters a context through its driver's ``get_active_context``."""
    instance = driver.driver
    original = instance.get_active_context

    @functools.wraps(original)
    def get_active_context(*args: Any, **kwargs: Any) -> Any:
        if running:
            refuse(f"a {name} call (a copy, array, event or launch)")
        return original(*args, **kwargs)

    instance.get_active_context = get_active_context
    # the methods of numba's own streams and events call the driver directly
    for cls_name, methods in (("Stream", ("synchronize", "query")),
                              ("Event", ("query", "synchronize", "record", "wait",
                                         "elapsed_time"))):
        cls = getattr(driver, cls_name, None)
        for method in methods:
            if cls is not None and callable(getattr(cls, method, None)):
                setattr(cls, method, _refused_in_callbacks(getattr(cls, method),
                                                           f"numba's {cls_name}.{method}()"))


def _refused_in_callbacks(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if running:
            refuse(what)
        return fn(*args, **kwargs)
    return guarded


# ---- cpu backend: queue the simulator's copies on the stream --------------------------------------
class SimulatorEvent:
    """``cuda.event()`` on the cpu backend: a rocmstreams Event behind Numba's Event API."""

    def __init__(self, timing: bool = True) -> None:
        self.event = Event(timing=bool(timing))

    def record(self, stream: Any = 0) -> None:
        self.event.record(stream if _core_of(stream) is not None else None)

    def wait(self, stream: Any = 0) -> None:
        target = stream if _core_of(stream) is not None else default_stream()
        target.wait(self.event)

    def query(self) -> bool:
        return self.event.query()

    def synchronize(self) -> None:
        self.event.synchronize()

    def elapsed_time(self, evtend: "SimulatorEvent") -> float:
        return self.event.elapsed_time(evtend.event)


def _wait_through(stream: RocmStream) -> None:
    """Return once the work queued on ``stream`` so far (this call's copy included) ran."""
    stream.record().synchronize()


def _own_stream(array: Any, stream: Any) -> tuple[Any, bool]:
    """numba's ``_default_stream``: the stream passed, else the one the array is bound to; with
    neither, the legacy default stream, and True: numba's call is synchronous then (and, as on
    a GPU, ordered after the work queued on blocking streams)."""
    chosen = stream if stream else getattr(array, "stream", 0)
    if chosen:
        return chosen, False
    return default_stream(), True


def _install_simulator(module: Any) -> None:
    from numba.cuda.simulator.cudadrv import devicearray
    from numba.cuda.simulator.kernel import BlockThread

    fake = devicearray.FakeCUDAArray
    to_device = module.to_device
    device_array_like = module.device_array_like
    copy_to_host = fake.copy_to_host
    copy_to_device = fake.copy_to_device
    simulated_setitem = fake.__setitem__
    simulated_getitem = fake.__getitem__
    simulated_reduce = module.Reduce

    @functools.wraps(to_device)
    def queued_to_device(ary: Any, stream: Any = 0, copy: bool = True, to: Any = None) -> Any:
        if _core_of(stream) is None:
            return to_device(ary, stream=stream, copy=copy, to=to)
        _may_queue(stream, "numba.cuda.to_device() on a RocmStream")
        host = np.array(ary, copy=True, subok=True)  # read now, as from pageable memory
        if to is not None:
            stream.launch_host_func(copy_to_device, to, host)
            return None
        out = to_device(np.empty_like(host))
        out.stream = stream  # bound to it, as numba's to_device(stream=) binds its array
        if copy:
            stream.launch_host_func(copy_to_device, out, host)
        return out

    @functools.wraps(device_array_like)
    def bound_device_array_like(ary: Any, stream: Any = 0) -> Any:
        out = device_array_like(ary)
        out.stream = stream  # the simulator's own drops it
        return out

    @functools.wraps(copy_to_host)
    def queued_copy_to_host(self: Any, ary: Any = None, stream: Any = 0) -> Any:
        stream, _ = _own_stream(self, stream)  # (it returns once the data is there, always)
        if _core_of(stream) is None:
            return copy_to_host(self, ary, stream=stream)
        _may_queue(stream, "numba.cuda's copy_to_host() on a RocmStream")
        out = np.empty(self.shape, self.dtype) if ary is None else ary
        stream.launch_host_func(copy_to_host, self, out)
        _wait_through(stream)
        return out

    @functools.wraps(copy_to_device)
    def queued_copy_to_device(self: Any, ary: Any, stream: Any = 0) -> Any:
        stream, synchronous = _own_stream(self, stream)
        if _core_of(stream) is None:
            return copy_to_device(self, ary, stream=stream)
        _may_queue(stream, "numba.cuda's copy_to_device() on a RocmStream")
        host = ary if isinstance(ary, fake) else np.array(ary, copy=True, subok=True)
        stream.launch_host_func(copy_to_device, self, host)
        if synchronous:
            _wait_through(stream)
        return None

    def queued_setitem(self: Any, key: Any, value: Any, stream: Any = 0) -> None:
        """``d.setitem(key, value, stream=s)`` and ``d[key] = value`` on an array bound to a
        RocmStream: queued there, in its order (a host value is read at the call)."""
        stream, synchronous = _own_stream(self, stream)
        if _core_of(stream) is None:
            simulated_setitem(self, key, value)
            return
        _may_queue(stream, "numba.cuda's setitem() on a RocmStream")
        if isinstance(value, fake):
            source: Any = value
        else:
            source = np.array(value, copy=True)

        def assign() -> None:
            simulated_setitem(self, key, source)  # a device source is read when this runs

        stream.launch_host_func(assign)
        if synchronous:
            _wait_through(stream)

    def get_in_order(self: Any, key: Any) -> Any:
        """``d[key]`` read on the host: a scalar read waits for the work queued on the array's
        stream (the legacy default one where it has none), as numba's copy back does."""
        item = simulated_getitem(self, key)
        if isinstance(item, fake) or isinstance(threading.current_thread(), BlockThread) or \
                on_callback_thread():
            return item  # a view reads nothing yet; a kernel's or a callback's read is direct
        stream, _ = _own_stream(self, 0)
        if _core_of(stream) is None:
            return item
        _wait_through(stream)
        return simulated_getitem(self, key)

    def set_in_order(self: Any, key: Any, value: Any) -> None:
        if isinstance(threading.current_thread(), BlockThread):  # a simulated kernel's store
            simulated_setitem(self, key, value)
        else:
            queued_setitem(self, key, value)

    @functools.wraps(simulated_reduce)
    def stream_reduce(func: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        """``cuda.Reduce(f)(arr, size=None, res=None, init=0, stream=0)``, numba's signature:
        on a RocmStream the reduction runs there, in its order; without ``res`` the call
        returns the result once the stream ran it."""
        reduce = simulated_reduce(func)

        def call(arr: Any, size: int | None = None, res: Any = None, init: Any = 0,
                 stream: Any = 0) -> Any:
            if res is not None and not isinstance(res, fake):
                raise TypeError(f"Reduce's res is a device array of at least one element "
                                f"(cuda.device_array(1, dtype)), got {type(res).__name__}")
            stream, synchronous = _own_stream(None, stream)  # numba's Reduce binds no array
            seq = arr if size is None else arr[:size]
            if not isinstance(seq, fake):
                seq = np.array(seq, copy=True)  # a host input is read at the call, as numba does
            if _core_of(stream) is None:
                return reduce(seq, res=res, init=init)
            _may_queue(stream, "numba.cuda's Reduce on a RocmStream")
            result: list[Any] = []

            def run() -> None:
                result.append(reduce(seq, init=init))
                if res is not None:  # written in place: res may be bound to this stream
                    simulated_setitem(res, 0, result[0])

            stream.launch_host_func(run)
            if res is not None and not synchronous:
                return None
            _wait_through(stream)
            return None if res is not None else result[0]

        return call

    module.to_device = queued_to_device
    module.device_array_like = bound_device_array_like
    module.Reduce = module.reduce = stream_reduce
    fake.copy_to_host = queued_copy_to_host  # type: ignore[method-assign]
    fake.copy_to_device = queued_copy_to_device  # type: ignore[method-assign]
    fake.setitem = queued_setitem  # type: ignore[attr-defined]
    fake.__setitem__ = set_in_order  # type: ignore[method-assign]
    fake.__getitem__ = get_in_order  # type: ignore[method-assign]
    install_simulated_ufuncs(fake)  # vectorize/guvectorize(target="cuda"), with stream=

    module.event = SimulatorEvent

    def event_elapsed_time(evtstart: SimulatorEvent, evtend: SimulatorEvent) -> float:
        return evtstart.elapsed_time(evtend)

    module.event_elapsed_time = event_elapsed_time
