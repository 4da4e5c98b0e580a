"""One Backend over a HIP-named runtime binding: ``cuda.bindings.runtime`` or hip-python.

cuda.bindings mirrors HIP name for name (``cudaStreamCreateWithPriority`` /
``hipStreamCreateWithPriority``) and both return ``(status, *values)`` tuples, so one class serves
both; a :class:`RuntimeAdapter` holds what differs (the prefix, enum values, a few names). Every
status goes through :meth:`RuntimeBackend._check`, the backend's one error-check choke point.
"""
# GIL and host functions (numba-cuda issue 317). A host function is Python code: the runtime's
# callback thread must take the GIL to run it, and it does so while the runtime holds the stream
# (on CUDA also an internal lock). A thread that holds the GIL and blocks in a runtime call (a
# synchronize, a destroy or free that waits for work, a copy from pageable memory) waits for the
# callback while the callback waits for the GIL: a deadlock. What the bindings do, read in their
# sources:
# - cuda.bindings.runtime (NVIDIA/cuda-python, cuda_bindings/cuda/bindings/runtime.pyx.in): every
#   wrapper makes its C call inside ``with nogil:``, the blocking ones included
#   (cudaStreamSynchronize, cudaEventSynchronize, cudaStreamDestroy, cudaFree, cudaFreeHost,
#   cudaMemcpyAsync, ...). Its
#   cudaLaunchHostFunc gives the runtime its own C wrapper (cudaStreamRtHostCallbackWrapper), which
#   takes the GIL, calls our pointer with our userData, then frees its record: a host function
#   captured into a graph then runs freed memory on the graph's second launch (a segfault, seen on
#   an H100; NVIDIA/cuda-python issue 790). So the cuda backend enqueues host functions with the
#   driver's cuLaunchHostFunc through ctypes (cuda.py), which releases the GIL during the call.
# - hip-python (rocm.bindings.hip; hip.pyx ships in the wheel): since its rocm.bindings codegen
#   rework every generated call is wrapped in ``with nogil:`` (its CHANGELOG: "Generated cy* call
#   sites are now wrapped in with nogil"); 10.0 wraps every call made here (a test checks the
#   installed hip.pyx). hipLaunchHostFunc hands our function pointer to HIP unchanged.
# Our trampoline is a ctypes callback, which takes the GIL itself (PyGILState_Ensure). So no call
# rocmstreams makes holds the GIL while it waits, and a pending host function can always take it:
# the deadlock cannot come from rocmstreams. It can still come from other code that calls the
# runtime holding the GIL while a host function is pending (the caveat numba-cuda PR 321
# documents). For a binding that does not release the GIL (``releases_gil=False``, older
# hip-python), synchronize and destroy first poll the query call, sleeping (so releasing the GIL)
# between polls; a query is non-blocking, so the blocking call that follows returns at once.
from __future__ import annotations

import ctypes
import importlib.metadata
import itertools
import os
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence, cast

from ..errors import (CaptureError, EventError, EventNotReadyError, InvalidDeviceError,
                      OutOfMemoryError, RocmStreamsError, StreamCreationError, SynchronizeError)
from . import native
from .base import LEGACY_STREAM, PER_THREAD_STREAM, KernelDriver, on_device
from .holds import StreamHolds

__all__ = ["RuntimeAdapter", "RuntimeBackend", "RuntimeStreamCalls", "NativeStreamCalls",
           "NumbaKernels", "capture_codes", "KEEP_ALL"]

_SUCCESS = 0
#: A release threshold that keeps every freed byte cached (the pool's attribute is a uint64).
KEEP_ALL = (1 << 64) - 1
_CACHE_GRAIN = 512  # our own cache rounds sizes up to this many bytes
_UNKNOWN = object()
#: Status names (after the prefix) of faults that leave the context unusable.
_FAULTS = ("IllegalAddress", "LaunchFailure", "IllegalInstruction", "MisalignedAddress",
           "InvalidAddressSpace", "InvalidPc", "HardwareStackError", "Assert")
_CAPTURE_ERRORS = ("ErrorStreamCaptureUnsupported", "ErrorStreamCaptureInvalidated",
                   "ErrorStreamCaptureMerge", "ErrorStreamCaptureUnmatched",
                   "ErrorStreamCaptureUnjoined", "ErrorStreamCaptureIsolation",
                   "ErrorStreamCaptureImplicit", "ErrorCapturedEvent",
                   "ErrorStreamCaptureWrongThread")

# ---- host functions: one C-callable trampoline for every binding ----------------------------
# userData is an int key into these dicts. A function enqueued on a capturing stream becomes a
# graph node that may run once per graph launch, so it stays registered (for the process).
_HostFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_pending: dict[int, Callable[[], None]] = {}
_captured: dict[int, Callable[[], None]] = {}
_keys = itertools.count(1)


def _run_host_fn(key: int | None) -> None:
    """Body of the trampoline the runtime calls: run the callable under ``key``; never raises."""
    try:
        fn = _pending.pop(key or 0, None) or _captured.get(key or 0)
        if fn is None:
            warnings.warn(f"rocmstreams: host function {key} ran, but none was pending",
                          RuntimeWarning, stacklevel=1)
            return
        fn()
    except BaseException as exc:  # noqa: BLE001 - nothing may unwind into the runtime's thread
        try:
            warnings.warn(f"rocmstreams: a host function raised {exc!r}; it was dropped",
                          RuntimeWarning, stacklevel=1)
        except BaseException:  # noqa: BLE001
            pass


_TRAMPOLINE = _HostFn(_run_host_fn)  # lives as long as the module: the runtime keeps its address
# a callback's address is never NULL, so c_void_p.value (int | None) is an int here
_TRAMPOLINE_ADDRESS: int = cast(int, ctypes.cast(_TRAMPOLINE, ctypes.c_void_p).value)


def capture_codes(error_enum: Any, prefix: str) -> frozenset[int]:
    """The stream-capture status codes of a binding's error enum (same names in HIP and CUDA)."""
    return frozenset(int(getattr(error_enum, prefix + name)) for name in _CAPTURE_ERRORS)


def _take(kept: list[int] | None) -> int | None:
    """One of the idle handles ``kept`` (pooled streams, cached blocks), taken; None where there
    is none. Lock-free: another thread may take the last one between the check and the pop."""
    if kept:
        try:
            return kept.pop()
        except IndexError:
            pass
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value)


class NumbaKernels:
    """Numba kernels launched on runtime streams through the module's ``external_stream``.

    Parameters
    ----------
    load_module : callable
        Returns the ``numba.cuda``-dialect module (``numba.cuda`` or ``numba.hip``), or raises
        :class:`~rocmstreams.errors.BackendUnavailableError`; called once, on first use.
    """

    def __init__(self, load_module: Callable[[], Any]) -> None:
        self._load = load_module
        self._module: Any = None
        self._streams: dict[int, Any] = {}  # int handle -> the module's external stream

    def module(self) -> Any:
        if self._module is None:
            self._module = self._load()
        return self._module

    def stream(self, handle: int) -> Any:
        module = self.module()
        if handle == LEGACY_STREAM:
            return module.legacy_default_stream()
        if handle == PER_THREAD_STREAM:
            return module.per_thread_default_stream()
        ext = self._streams.get(handle)
        if ext is None:
            ext = self._streams.setdefault(handle, module.external_stream(handle))
        return ext

    def forget(self, handle: int) -> None:
        self._streams.pop(handle, None)


@dataclass(frozen=True)
class RuntimeAdapter:
    """What differs between the HIP-named bindings; enum values are the binding's own.

    ``memcpy_default`` and ``capture_mode_global`` are binding enum members (hip-python refuses
    plain ints there); ``error_enum(code)`` makes the value ``<prefix>GetErrorName`` takes;
    ``device_name(call, ordinal)`` returns a ``(status, name)`` tuple through ``call``.
    """

    name: str
    binding: Any
    prefix: str
    packages: tuple[str, ...]
    stream_non_blocking: int
    event_disable_timing: int
    host_alloc_flags: int
    memcpy_default: Any
    capture_mode_global: Any
    capture_status_none: int
    not_ready: int
    out_of_memory: int
    invalid_device: int
    capture_codes: frozenset[int]
    legacy_stream: int
    host_alloc: str
    host_free: str
    error_enum: Callable[[int], Any]
    device_name: Callable[[Callable[..., tuple], int], tuple]
    format_version: Callable[[int], str]
    kernels: NumbaKernels
    releases_gil: bool = True
    #: ``(stream, function address, key) -> (status,)`` where the binding's own
    #: ``<prefix>LaunchHostFunc`` must not be used; None uses it.
    launch_host_func: Callable[[int, int, int], tuple] | None = None
    #: Builds the driver calls of prepared kernel launches for a backend; None launches every
    #: kernel through the Numba module's own launch.
    kernel_driver: Callable[["RuntimeBackend"], KernelDriver] | None = None
    #: The binding's handle objects for a stream and an event handle (ints pass unchanged).
    stream_object: Callable[[int], Any] = int
    event_object: Callable[[int], Any] = int
    #: The device attribute that says whether a device has stream-ordered memory pools (a
    #: binding enum member), and the pool attribute calls: ``pool_get_attribute(call, pool,
    #: name) -> (status, int)``, ``pool_set_attribute(call, pool, name, value) -> (status,)``
    #: where ``name`` follows ``<prefix>MemPool`` (``AttrReleaseThreshold``, ...). None: no
    #: pools; the backend caches device memory itself (see :class:`RuntimeBackend`).
    memory_pools_attribute: Any = None
    #: The status ``<prefix>DeviceEnablePeerAccess`` returns for a pair already enabled (by
    #: another library in the process): success for us.
    peer_already_enabled: int | None = None
    pool_get_attribute: Callable[[Callable[..., tuple], Any, str], tuple] | None = None
    pool_set_attribute: Callable[[Callable[..., tuple], Any, str, int], tuple] | None = None
    #: The C entry points of the runtime's library for the compiled hot calls (see
    #: backends.native), resolved once on first use; None (or a None result): none.
    native_entry_points: Callable[[], native.EntryPoints | None] | None = None


class RuntimeBackend:
    """The :class:`~rocmstreams.backends.base.Backend` over a HIP-named runtime binding.

    Parameters
    ----------
    adapter : RuntimeAdapter
        The binding and its names and values. Constructing touches no GPU.
    """

    #: Idle streams kept per (device, flags, priority); the configuration sets it.
    stream_pool_size = 16
    _native_points: native.EntryPoints | None | bool = False  # False: not resolved yet

    def __init__(self, adapter: RuntimeAdapter) -> None:
        self._a = adapter
        self.name = adapter.name
        # live handles by kind (dict/set add and discard are atomic: no lock on these paths)
        self._live: dict[str, Any] = {"streams": {}, "events": set(), "allocations": set()}
        self._allocations: set[int] = self._live["allocations"]
        self._streams: dict[int, Any] = self._live["streams"]
        # idle released streams kept for reuse: (device, flags, priority) -> handles (the
        # "streams" entry of _live maps each stream in use to that key)
        self._stream_pool: dict[tuple[int, int, int], list[int]] = {}
        self._bound: dict[str, Callable[..., tuple]] = {}
        self._success = adapter.error_enum(_SUCCESS)
        self._kernel_driver: KernelDriver | None = None
        # bound calls by stream handle, kept while the stream lives (a pooled stream's calls
        # serve the RocmStream that reuses it), and the binding's event objects by handle
        self._calls: dict[int, RuntimeStreamCalls] = {}
        self._events: dict[int, Any] = {}
        self._pid = os.getpid()
        # stream-ordered memory: the pool of each device (None: our own cache), the cache's
        # blocks by (device, stream, rounded size), the bytes each device's cache holds, and
        # holds on streams that a queued free still needs (a held stream's destroy waits)
        self._pools: dict[int, Any] = {}
        self._cache: dict[tuple[int, int, int], list[int]] = {}
        self._cache_bytes: dict[int, list[int]] = {}  # device -> [reserved, peak, cached]
        self._sizes: dict[int, int] = {}
        self._holds = StreamHolds(threading.Lock())
        self._memory_streams: dict[int, int] = {}
        self._peers: dict[tuple[int, int], bool] = {}  # (device, peer) -> direct access
        self._peer_lock = threading.Lock()
        self._device_count: int | None = None  # asked of the runtime on first use
        self.release_threshold = KEEP_ALL

    # ---- the choke point ---------------------------------------------------------------------
    def _fn(self, fn: str) -> Callable[..., tuple]:
        """The binding's ``<prefix><fn>``, looked up once."""
        try:
            return self._bound[fn]
        except KeyError:
            func = self._bound[fn] = getattr(self._a.binding, self._a.prefix + fn)
            return func

    def _call(self, fn: str, *args: Any) -> tuple:
        """Call ``<prefix><fn>(*args)``; a symbol the loaded library lacks becomes our error."""
        func = self._fn(fn)
        try:
            return func(*args)
        except RocmStreamsError:
            raise
        except RuntimeError as exc:  # hip-python: failed to dlopen / dlsym
            raise RocmStreamsError(f"{self._a.prefix}{fn} is not available: {exc}",
                                   backend=self.name) from exc

    def _check(self, result: tuple, error_class: type[RocmStreamsError], what: str) -> Any:
        """Return a call's values (None, one value, or a tuple); raise on any non-success."""
        if result[0] is not self._success and int(result[0]) != _SUCCESS:
            raise self.error(int(result[0]), what, error_class=error_class)
        values = result[1:]
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def error(self, code: int, what: str, *, name: str | None = None,
              message: str | None = None,
              error_class: type[RocmStreamsError] = RocmStreamsError) -> RocmStreamsError:
        """The error for status ``code``: every failure of this backend is built here."""
        a = self._a
        cls: type[RocmStreamsError]
        if code == a.out_of_memory:
            cls, hint = OutOfMemoryError, "; free memory (or allocate less) and try again"
        elif code == a.invalid_device:
            cls, hint = InvalidDeviceError, "; rocmstreams.device_count() says which ordinals exist"
        elif code in a.capture_codes:
            cls, hint = CaptureError, ("; the stream (or another, under global capture mode) is "
                                       "being captured into a graph: end the capture first")
        else:
            cls, hint = error_class, ""
        if name is None:
            name, found = self._describe(code)
            message = message or found
        if any(fault in name for fault in _FAULTS):
            hint += ("; a kernel faulted, and the GPU context is lost after a kernel fault: "
                     "every later call fails the same way; restart the process")
        if os.getpid() != self._pid:
            hint += ("; this process was forked from the one that initialised the GPU, and GPU "
                     "runtimes do not survive a fork: start worker processes with the 'spawn' "
                     "method (multiprocessing.set_start_method('spawn'))")
        return cls(what + hint, backend=self.name, code=code, name=name,
                   runtime_message=message)

    def _describe(self, code: int) -> tuple[str, str | None]:
        try:
            value = self._a.error_enum(code)
            name = _text(self._call("GetErrorName", value)[1])
            message = _text(self._call("GetErrorString", value)[1])
        except Exception:  # noqa: BLE001 - a code the binding's enum lacks, or no library
            return f"{self._a.prefix}Error{code}", None
        return name or f"{self._a.prefix}Error{code}", message

    def _ready(self, result: tuple, what: str) -> bool:
        """A query's answer: False only for the not-ready status; raises for any failure."""
        if result[0] is self._success:
            return True
        if int(result[0]) == self._a.not_ready:
            return False
        self._check(result, RocmStreamsError, what)
        return True

    def _stream(self, handle: int) -> int:
        return self._a.legacy_stream if handle == LEGACY_STREAM else handle

    def _wait_polling(self, query: str, handle: Any) -> None:
        """For a binding that holds the GIL in calls: wait in sleeps, which release it."""
        if self._a.releases_gil:
            return
        delay = 1e-5
        while int(self._call(query, handle)[0]) == self._a.not_ready:
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)

    # ---- devices -----------------------------------------------------------------------------
    def get_device_count(self) -> int:
        """How many GPUs the runtime sees: asked once (the count is fixed when the runtime
        starts), so a launch or a device check that needs it makes no runtime call."""
        count = self._device_count
        if count is None:
            count = self._device_count = int(self._check(
                self._call("GetDeviceCount"), RocmStreamsError, "could not count the GPUs"))
        return count

    def set_device(self, ordinal: int) -> None:
        self._check(self._call("SetDevice", ordinal), RocmStreamsError,
                    f"could not make device {ordinal} current")

    def device_name(self, ordinal: int) -> str:
        name = self._check(self._a.device_name(self._call, ordinal), RocmStreamsError,
                           f"could not read the name of device {ordinal}")
        return _text(name) or ""

    def device_get_stream_priority_range(self) -> tuple[int, int]:
        least, greatest = self._check(self._call("DeviceGetStreamPriorityRange"),
                                      RocmStreamsError, "could not read the stream priority range")
        return int(least), int(greatest)

    def peer_access(self, device: int, peer: int) -> bool:
        if device == peer:
            return True
        found = self._peers.get((device, peer))
        if found is not None:
            return found
        with self._peer_lock:  # enabled once per pair, however many threads copy
            found = self._peers.get((device, peer))
            if found is None:
                found = self._peers[(device, peer)] = self._enable_peer(device, peer)
        return found

    def _enable_peer(self, device: int, peer: int) -> bool:
        can = self._check(self._call("DeviceCanAccessPeer", device, peer), RocmStreamsError,
                          f"could not ask whether device {device} can access device {peer}")
        if not int(can):
            return False
        with on_device(self, device):
            result = self._call("DeviceEnablePeerAccess", peer, 0)
        if result[0] is not self._success and int(result[0]) != self._a.peer_already_enabled:
            self._check(result, RocmStreamsError,
                        f"could not enable access from device {device} to device {peer}")
        return True

    def get_device(self) -> int:
        result = self._fn("GetDevice")()
        if result[0] is not self._success:
            self._check(result, RocmStreamsError, "could not read the current device")
        return int(result[1])

    def versions(self) -> dict[str, str]:
        a = self._a
        runtime = self._check(self._call("RuntimeGetVersion"), RocmStreamsError,
                              "could not read the runtime version")
        driver = self._check(self._call("DriverGetVersion"), RocmStreamsError,
                             "could not read the driver version")
        binding = "unknown"
        for package in a.packages:
            try:
                binding = f"{package} {importlib.metadata.version(package)}"
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        return {"runtime": a.format_version(int(runtime)), "driver": a.format_version(int(driver)),
                "binding": binding}

    # ---- streams -----------------------------------------------------------------------------
    def stream_create(self, non_blocking: bool, priority: int, device: int) -> int:
        flags = self._a.stream_non_blocking if non_blocking else 0
        key = (device, flags, priority)
        handle = _take(self._stream_pool.get(key))  # an idle stream released with these options
        if handle is not None:
            self._live["streams"][handle] = key
            return handle
        result = self._fn("StreamCreateWithPriority")(flags, priority)
        if result[0] is not self._success:
            self._check(result, StreamCreationError,
                        f"could not create a stream (non_blocking={non_blocking}, "
                        f"priority={priority})")
        handle = int(result[1])
        self._live["streams"][handle] = key
        return handle

    def stream_calls(self, stream: int) -> "RuntimeStreamCalls":
        calls = self._calls.get(stream)
        if calls is None:
            points = self.native_entry_points()
            calls = (RuntimeStreamCalls(self, stream) if points is None
                     else NativeStreamCalls(self, stream, points))
            if stream in self._live["streams"] or stream in (LEGACY_STREAM, PER_THREAD_STREAM):
                self._calls[stream] = calls
        return calls

    def event_object(self, event: int) -> Any:
        """The binding's object for event handle ``event`` (made once per handle)."""
        found = self._events.get(event)
        if found is None:
            found = self._events[event] = self._a.event_object(event)
        return found

    def stream_destroy(self, stream: int) -> None:
        if self._holds.defer_destroy(stream):
            return  # destroyed by the last stream_unhold
        live = self._live["streams"]
        key = live.get(stream)
        if key is not None and self.stream_pool_size > 0:
            pool = self._stream_pool.get(key)
            if pool is None:
                pool = self._stream_pool.setdefault(key, [])
            if len(pool) < self.stream_pool_size and self.stream_calls(stream).idle():
                live.pop(stream, None)
                pool.append(stream)
                return
        self._a.kernels.forget(stream)
        self._calls.pop(stream, None)
        if not self._a.releases_gil:
            self._wait_polling("StreamQuery", self._stream(stream))
        result = self._fn("StreamDestroy")(stream)
        if result[0] is not self._success:
            self._check(result, RocmStreamsError, f"could not destroy stream {stream:#x}")
        live.pop(stream, None)  # only once destroyed: a refused destroy leaves it counted

    # ---- events ------------------------------------------------------------------------------
    def event_create(self, timing: bool) -> int:
        flags = 0 if timing else self._a.event_disable_timing
        handle = self._check(self._call("EventCreateWithFlags", flags), RocmStreamsError,
                             f"could not create an event (timing={timing})")
        self._live["events"].add(int(handle))
        return int(handle)

    def event_query(self, event: int) -> bool:
        return self._ready(self._fn("EventQuery")(event), f"querying event {event:#x} failed")

    def event_synchronize(self, event: int) -> None:
        self._wait_polling("EventQuery", event)
        self._check(self._call("EventSynchronize", event), SynchronizeError,
                    f"waiting for event {event:#x} failed: work before it raised or faulted")

    def event_elapsed_time(self, start: int, end: int) -> float:
        result = self._call("EventElapsedTime", start, end)
        what = f"no elapsed time between events {start:#x} and {end:#x}"
        if int(result[0]) == self._a.not_ready:
            raise self.error(self._a.not_ready, what + ": the work before them is still running",
                             error_class=EventNotReadyError)
        return float(self._check(result, EventError, what))

    def event_destroy(self, event: int) -> None:
        self._check(self._call("EventDestroy", event), RocmStreamsError,
                    f"could not destroy event {event:#x}")
        self._live["events"].discard(event)
        self._events.pop(event, None)

    # ---- memory ------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        ptr = self._check(self._call("Malloc", nbytes), RocmStreamsError,
                          f"could not allocate {nbytes} bytes of device memory")
        ptr = 0 if ptr is None else int(ptr)
        self._live["allocations"].add(ptr)
        return ptr

    def free(self, ptr: int) -> None:
        self._check(self._call("Free", ptr), RocmStreamsError,
                    f"could not free device memory at {ptr:#x}")
        self._live["allocations"].discard(ptr)

    def device_synchronize(self, device: int) -> None:
        self._check(self._call("DeviceSynchronize"), RocmStreamsError,
                    f"could not synchronize device {device}")

    def host_malloc(self, nbytes: int) -> int:
        ptr = self._check(self._call(self._a.host_alloc, nbytes, self._a.host_alloc_flags),
                          RocmStreamsError,
                          f"could not allocate {nbytes} bytes of pinned host memory")
        ptr = 0 if ptr is None else int(ptr)
        self._live["allocations"].add(ptr)
        return ptr

    def host_free(self, ptr: int) -> None:
        self._check(self._call(self._a.host_free, ptr), RocmStreamsError,
                    f"could not free pinned host memory at {ptr:#x}")
        self._live["allocations"].discard(ptr)

    # ---- stream-ordered memory ---------------------------------------------------------------
    # The runtime's pool of each device (cudaMallocAsync / hipMallocAsync), its release
    # threshold set high so freed memory stays cached. A device without pools gets a cache of
    # our own with the pools' reuse rule: a block freed on a stream is reused by allocations on
    # that stream only (in stream order, so after the work queued before the free), and goes
    # back to the system only in pool_trim (rocmstreams.empty_cache), through the runtime's
    # free, which waits for the device.
    def _pool(self, device: int) -> Any:
        """The default pool of ``device``, set up on first use; None where it has none."""
        try:
            return self._pools[device]
        except KeyError:
            pass
        a, pool = self._a, None
        if a.memory_pools_attribute is not None and a.pool_set_attribute is not None:
            try:
                supported = self._check(self._call("DeviceGetAttribute",
                                                   a.memory_pools_attribute, device),
                                        RocmStreamsError, "")
            except RocmStreamsError:
                supported = 0
            if supported:
                pool = self._check(self._call("DeviceGetDefaultMemPool", device),
                                   RocmStreamsError,
                                   f"could not get the memory pool of device {device}")
                self._set_pool(pool, "AttrReleaseThreshold", self.release_threshold)
        self._pools[device] = pool
        return pool

    def _set_pool(self, pool: Any, name: str, value: int) -> None:
        setter = cast(Callable[..., tuple], self._a.pool_set_attribute)
        self._check(setter(self._call, pool, name, value), RocmStreamsError,
                    f"could not set the memory pool's {name} to {value}")

    def _get_pool(self, pool: Any, name: str) -> int:
        getter = cast(Callable[..., tuple], self._a.pool_get_attribute)
        return int(self._check(getter(self._call, pool, name), RocmStreamsError,
                               f"could not read the memory pool's {name}"))

    def memory_pools(self, device: int) -> bool:
        """Whether ``device`` allocates from the runtime's pool (else from our cache)."""
        return self._pool(device) is not None

    def memory_stream(self, device: int) -> int:
        found = self._memory_streams.get(device)
        if found is not None:
            return found
        with on_device(self, device):
            result = self._call("StreamCreateWithPriority", self._a.stream_non_blocking, 0)
        handle = int(self._check(result, StreamCreationError,
                                 f"could not create the memory stream of device {device}"))
        found = self._memory_streams.setdefault(device, handle)
        if found == handle:
            self._calls[handle] = RuntimeStreamCalls(self, handle)
        else:  # another thread made one first
            self._call("StreamDestroy", handle)
        return found

    def malloc_async(self, nbytes: int, stream: int, device: int) -> int:
        pool = self._pools.get(device, _UNKNOWN)
        if pool is _UNKNOWN:
            pool = self._pool(device)
        if pool is None:
            return self._cache_malloc(nbytes, stream, device)
        result = self._fn("MallocAsync")(nbytes, self._a.legacy_stream
                                         if stream == LEGACY_STREAM else stream)
        if result[0] is not self._success:
            self._check(result, RocmStreamsError, f"could not allocate {nbytes} bytes of device "
                        f"memory on stream {stream:#x}")
        ptr = int(result[1]) if result[1] else 0
        self._allocations.add(ptr)
        return ptr

    def free_async(self, ptr: int, nbytes: int, stream: int, device: int) -> None:
        if self._pools.get(device) is None:
            self._cache_free(ptr, stream, device)
            return
        result = self._fn("FreeAsync")(ptr, self._a.legacy_stream
                                       if stream == LEGACY_STREAM else stream)
        if result[0] is not self._success:
            self._check(result, RocmStreamsError, f"could not free device memory at {ptr:#x} on "
                        f"stream {stream:#x}")
        self._allocations.discard(ptr)

    def _cache_malloc(self, nbytes: int, stream: int, device: int) -> int:
        size = -(-max(nbytes, 1) // _CACHE_GRAIN) * _CACHE_GRAIN
        usage = self._cache_bytes.setdefault(device, [0, 0, 0])
        found = _take(self._cache.get((device, stream, size)))
        if found is not None:
            usage[2] -= size
            self._live["allocations"].add(found)
            return found
        ptr = self.malloc(size)
        self._sizes[ptr] = size
        usage[0] += size
        usage[1] = max(usage[1], usage[0])
        return ptr

    def _cache_free(self, ptr: int, stream: int, device: int) -> None:
        size = self._sizes[ptr]
        self._live["allocations"].discard(ptr)
        self._cache.setdefault((device, stream, size), []).append(ptr)
        self._cache_bytes.setdefault(device, [0, 0, 0])[2] += size

    def pool_trim(self, device: int) -> None:
        if self._pools.get(device) is not None:
            self.pool_trim_to(device, 0)
            return
        usage = self._cache_bytes.setdefault(device, [0, 0, 0])
        for key in [k for k in list(self._cache) if k[0] == device]:
            for ptr in self._cache.pop(key, []):
                self._live["allocations"].add(ptr)
                self.free(ptr)
                size = self._sizes.pop(ptr)
                usage[0] -= size
                usage[2] -= size

    def pool_trim_to(self, device: int, keep: int) -> None:
        pool = self._pools.get(device)
        if pool is not None:  # the own cache's free waits for the device: pool_trim only
            self._check(self._call("MemPoolTrimTo", pool, keep), RocmStreamsError,
                        f"could not trim the memory pool of device {device}")

    def pool_usage(self, device: int) -> dict[str, int]:
        pool = self._pool(device)
        if pool is None:
            reserved, peak, _ = self._cache_bytes.get(device, [0, 0, 0])
            return {"reserved_bytes": reserved, "reserved_peak_bytes": peak}
        return {"reserved_bytes": self._get_pool(pool, "AttrReservedMemCurrent"),
                "reserved_peak_bytes": self._get_pool(pool, "AttrReservedMemHigh")}

    def set_release_threshold(self, nbytes: int) -> None:
        self.release_threshold = nbytes
        for pool in list(self._pools.values()):
            if pool is not None:
                self._set_pool(pool, "AttrReleaseThreshold", nbytes)

    def stream_hold(self, stream: int) -> None:
        self._holds.hold(stream, self._streams)

    def stream_unhold(self, stream: int) -> None:
        if self._holds.unhold(stream):
            self.stream_destroy(stream)

    # ---- graphs ------------------------------------------------------------------------------
    def graph_instantiate(self, graph: int) -> int:
        graph_exec = self._check(self._call("GraphInstantiateWithFlags", graph, 0),
                                 RocmStreamsError, f"could not instantiate graph {graph:#x}")
        return int(graph_exec)

    def graph_exec_destroy(self, graph_exec: int) -> None:
        self._check(self._call("GraphExecDestroy", graph_exec), RocmStreamsError,
                    f"could not destroy executable graph {graph_exec:#x}")

    def graph_destroy(self, graph: int) -> None:
        self._check(self._call("GraphDestroy", graph), RocmStreamsError,
                    f"could not destroy graph {graph:#x}")

    # ---- kernels -----------------------------------------------------------------------------
    def numba_module(self) -> Any:
        return self._a.kernels.module()

    def numba_stream(self, stream: int) -> Any:
        return self._a.kernels.stream(stream)

    def kernel_driver(self) -> KernelDriver | None:
        if self._kernel_driver is None and self._a.kernel_driver is not None:
            self._kernel_driver = self._a.kernel_driver(self)
        return self._kernel_driver

    # ---- the compiled hot calls --------------------------------------------------------------
    def native_entry_points(self) -> native.EntryPoints | None:
        """The runtime library's entry points for the compiled calls (resolved once), or None
        where the extension is not built or the library lacks them."""
        points = self._native_points
        if points is False:
            found = self._a.native_entry_points
            points = self._native_points = None if found is None else found()
        return points  # type: ignore[return-value]

    @property
    def native_calls(self) -> bool:
        """Whether the hot calls (stream query, synchronize, event record, prepared launches)
        are made from compiled code: built, turned on, and entry points found."""
        return native.enabled() and self.native_entry_points() is not None

    @native_calls.setter
    def native_calls(self, on: bool) -> None:
        native.set_enabled(on)  # the configuration's switch, for the whole process

    # ---- bookkeeping -------------------------------------------------------------------------
    def live_handles(self) -> dict[str, int]:
        counts = {kind: len(handles) for kind, handles in self._live.items()}
        counts["pooled_streams"] = sum(len(p) for p in list(self._stream_pool.values()))
        return counts


class RuntimeStreamCalls:
    """The runtime's calls bound to one stream handle (see base.StreamCalls)."""

    __slots__ = ("handle", "_be", "_a", "_raw", "_obj", "_ok", "_query", "_sync", "_record",
                 "_events")

    def __init__(self, backend: RuntimeBackend, handle: int) -> None:
        a = backend._a
        self.handle = handle
        self._be, self._a = backend, a
        self._raw = a.legacy_stream if handle == LEGACY_STREAM else handle
        self._obj = a.stream_object(self._raw)
        self._ok = backend._success
        self._query = backend._fn("StreamQuery")
        self._sync = backend._fn("StreamSynchronize")
        self._record = backend._fn("EventRecord")
        self._events = backend._events

    def query(self) -> bool:
        result = self._query(self._obj)
        if result[0] is self._ok:
            return True
        return self._be._ready(result, f"querying stream {self.handle:#x} failed")

    def idle(self) -> bool:
        """Whether all work queued on the stream has finished, without failing: a query that
        never raises (not ready and every failure alike answer False)."""
        return self._query(self._obj)[0] is self._ok

    def synchronize(self) -> None:
        if not self._a.releases_gil:
            self._be._wait_polling("StreamQuery", self._raw)
        result = self._sync(self._obj)
        if result[0] is not self._ok:
            self._be._check(result, SynchronizeError, f"waiting for stream {self.handle:#x} "
                            "failed: work queued on it raised or faulted")

    def event_record(self, event: int) -> None:
        obj = self._events.get(event)
        if obj is None:
            obj = self._be.event_object(event)
        result = self._record(obj, self._obj)
        if result[0] is not self._ok:
            self._be._check(result, RocmStreamsError,
                            f"could not record event {event:#x} on stream {self.handle:#x}")

    def wait_event(self, event: int) -> None:
        self._be._check(self._be._call("StreamWaitEvent", self._raw, event, 0), RocmStreamsError,
                        f"stream {self.handle:#x} could not wait for event {event:#x}")

    def memcpy_async(self, dst: int, src: int, nbytes: int) -> None:
        self._be._check(self._be._call("MemcpyAsync", dst, src, nbytes, self._a.memcpy_default,
                                       self._raw), RocmStreamsError,
                        f"could not copy {nbytes} bytes from {src:#x} to {dst:#x} on "
                        f"{self.handle:#x}")

    def memcpy_peer_async(self, dst: int, dst_device: int, src: int, src_device: int,
                          nbytes: int) -> None:
        self._be._check(self._be._call("MemcpyPeerAsync", dst, dst_device, src, src_device,
                                       nbytes, self._raw), RocmStreamsError,
                        f"could not copy {nbytes} bytes from {src:#x} on device {src_device} to "
                        f"{dst:#x} on device {dst_device} on {self.handle:#x}")

    def launch_host_func(self, fn: Callable[[], None]) -> None:
        key = next(_keys)
        registry = _captured if self.is_capturing() else _pending
        registry[key] = fn  # before the call: the function may run before the call returns
        try:
            a = self._a
            if a.launch_host_func is not None:
                result = a.launch_host_func(self._raw, _TRAMPOLINE_ADDRESS, key)
            else:
                host_fn = getattr(a.binding, a.prefix + "HostFn_t")(_TRAMPOLINE_ADDRESS)
                result = self._be._call("LaunchHostFunc", self._raw, host_fn, key)
            self._be._check(result, RocmStreamsError,
                            f"could not enqueue a host function on {self.handle:#x}")
        except BaseException:
            registry.pop(key, None)
            raise

    def launch_kernel(self, dispatcher: Any, config: tuple, args: Sequence[Any],
                      arrays: Sequence[Any]) -> None:
        # configure(), not [], so that a patched __getitem__ does not route this launch back
        launch = dispatcher.configure(config[:3], config[3:6],
                                      self._a.kernels.stream(self.handle), config[6])
        try:
            launch(*args)
        except Exception as exc:
            code = getattr(exc, "code", None)
            if type(exc).__name__ not in ("CudaAPIError", "HipAPIError") or code is None:
                raise
            raise self._be.error(int(code),
                                 f"launching {getattr(dispatcher, '__name__', 'a kernel')} on "
                                 f"stream {self.handle:#x} failed",
                                 name=getattr(code, "name", None),
                                 message=_text(getattr(exc, "msg", None))) from exc

    def begin_capture(self) -> None:
        self._be._check(self._be._call("StreamBeginCapture", self._raw,
                                       self._a.capture_mode_global), CaptureError,
                        f"could not begin capturing stream {self.handle:#x}")

    def end_capture(self) -> int:
        graph = self._be._check(self._be._call("StreamEndCapture", self._raw), CaptureError,
                                f"could not end the capture of stream {self.handle:#x}")
        return 0 if graph is None else int(graph)

    def is_capturing(self) -> bool:
        """True from begin to end capture, also once the capture was invalidated."""
        status = self._be._check(self._be._call("StreamIsCapturing", self._raw), CaptureError,
                                 f"could not ask whether stream {self.handle:#x} is capturing")
        return int(status) != self._a.capture_status_none

    def graph_launch(self, graph_exec: int) -> None:
        self._be._check(self._be._call("GraphLaunch", graph_exec, self._raw), RocmStreamsError,
                        f"could not launch graph {graph_exec:#x} on stream {self.handle:#x}")


class NativeStreamCalls(RuntimeStreamCalls):
    """:class:`RuntimeStreamCalls` whose query, synchronize and event record are compiled calls.

    Success (and, for a query, not-ready) is answered here; any other status, NOT_CALLED while
    the compiled calls are off included, makes the binding's call of the base class, which
    raises the runtime's own error through the choke point. Redoing the call is safe: a failed
    call did nothing, and a query or synchronize may be repeated. On CUDA that also covers a
    thread with no current context (CUDA_ERROR_INVALID_CONTEXT from the driver): the runtime's
    call binds the device's primary context, and the next compiled call succeeds.
    """

    __slots__ = ("_native_query", "_native_sync", "_native_record", "_not_ready", "_points",
                 "_door")

    def __init__(self, backend: RuntimeBackend, handle: int, points: native.EntryPoints) -> None:
        super().__init__(backend, handle)
        # the runtime's legacy stream handle is the driver's (cudaStreamLegacy == CU_STREAM_LEGACY)
        self._native_query = native.handle_call(points.stream_query, self._raw)
        self._native_sync = native.handle_call(points.stream_synchronize, self._raw)
        self._native_record = native.handle_pair_call(points.event_record, self._raw)
        self._not_ready = points.not_ready
        self._points = points
        self._door: Any = None

    def bind_door(self, slow: Any, running: list, tracers: list, pending: Any) -> Any:
        """The stream core's door compiled for this stream (see native.stream_door), made once:
        the calls of a pooled stream serve every RocmStream that reuses it."""
        door = self._door
        if door is None:
            door = self._door = native.stream_door(self._points, self._raw, self, slow, running,
                                                   tracers, pending)
        return door

    def query(self) -> bool:
        status = self._native_query()
        if status == 0:
            return True
        if status == self._not_ready:
            return False
        return super().query()

    def synchronize(self) -> None:
        if self._native_sync() != 0:  # the compiled call releases the GIL: no polling needed
            super().synchronize()

    def event_record(self, event: int) -> None:
        if self._native_record(event) != 0:
            super().event_record(event)
