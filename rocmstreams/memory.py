"""Device arrays, page-locked host arrays, and async copies between them on a stream.

Endpoints are numpy arrays (host), :class:`DeviceArray`, or any object exporting the CUDA Array
Interface (CuPy, PyTorch, Numba device arrays). Every copy is checked (shape, dtype, contiguity,
size) before anything is queued.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import pinned, staging
from .backends import PER_THREAD_STREAM, Backend, active
from .backends.host_bytes import host_bytes
from .core import lifetime
from .core.arrays import ArrayInfo, byte_size, c_strides, describe, device_dtype, shape_of
from .core.callbacks import refuse, running
from .core.config import config
from .core.device import check_device, thread_token, using_device
from .core.lifetime import Handle
from .errors import CaptureError, DeviceMismatchError, OutOfMemoryError, RocmStreamsError
from .streamcore import COPY, StreamCore, core_of, default_core

if TYPE_CHECKING:
    from .stream import RocmStream

__all__ = ["DeviceArray", "DeviceBlock", "empty", "empty_like", "to_device", "pinned_empty",
           "device_view", "copy_async", "is_pinned", "memory_stats", "empty_cache", "note_use",
           "block_of", "device_block"]


class _Block:
    """One page-locked array's lease on a block of the pinned cache, owned through a lifetime
    Handle; once no array views it, the release queue gives the block back to the cache, which
    hands it out again after the streams that used it have passed those uses."""

    __slots__ = ("ptr", "nbytes", "device", "block", "handle", "__weakref__")

    def __init__(self, block: pinned.PinnedBlock, nbytes: int, device: int) -> None:
        self.ptr, self.nbytes, self.device, self.block = block.ptr, nbytes, device, block
        self.handle = Handle(block.ptr, pinned.releaser(block), "page-locked memory")
        lifetime.own(self, self.handle)


class DeviceBlock:
    """One stream-ordered device allocation and the streams it was used on.

    ``home`` is the stream it was allocated on, and freed on. ``ready`` is False while work on
    another stream may not yet touch it (see :func:`empty`). What its free needs (the other
    streams it was used on, the threads whose per-thread default stream it was used on) lives in
    ``release``, the :class:`_Release` the release queue closes once no array views the block:
    the home stream waits for an event recorded on each other stream, then frees it (never a
    host wait).
    """

    __slots__ = ("ptr", "nbytes", "device", "home", "ready", "release", "__weakref__")

    def __init__(self, ptr: int, nbytes: int, device: int, home: int, ready: bool,
                 release: "_Release") -> None:
        self.ptr, self.nbytes, self.device, self.home = ptr, nbytes, device, home
        self.ready, self.release = ready, release
        lifetime.own(self, release)

    @property
    def others(self) -> dict[tuple[int, int], None]:
        """The other streams work using it was queued on, as ``(handle, device)`` in order of
        first use, each held open until the free (:func:`note_use` adds them; a peer copy's
        stream may be of another device)."""
        return dict(self.release.others or {})

    @property
    def threads(self) -> set[int]:
        """The threads (see :func:`~rocmstreams.core.device.thread_token`) whose per-thread
        default stream it was used on."""
        return set(self.release.threads or ())


class _Stats:
    """Device memory rocmstreams holds, per device (updated under a lock by user calls and by
    the release queue's drain, never by a finalizer). Each device's figures are a list:
    in use, peak, allocations, frees, retries after release."""

    FIELDS = ("in_use_bytes", "peak_bytes", "allocations", "frees", "retries_after_release")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_device: dict[int, list[int]] = {}

    def of(self, device: int) -> list[int]:
        """The figures of ``device`` (under the lock)."""
        found = self.by_device.get(device)
        if found is None:
            found = self.by_device[device] = [0, 0, 0, 0, 0]
        return found

    def allocated(self, device: int, nbytes: int) -> None:
        with self.lock:
            d = self.by_device.get(device) or self.of(device)
            in_use = d[0] = d[0] + nbytes
            d[2] += 1
            if in_use > d[1]:
                d[1] = in_use

    def freed(self, device: int, nbytes: int) -> None:
        with self.lock:
            d = self.by_device.get(device) or self.of(device)
            d[0] -= nbytes
            d[3] += 1

    def retried(self, device: int) -> None:
        with self.lock:
            self.of(device)[4] += 1

    def figures(self, device: int) -> dict[str, int]:
        with self.lock:
            return dict(zip(self.FIELDS, self.of(device)))


_stats = _Stats()
_uses = threading.Lock()  # taken only to add a stream to a block's others (the first use there)


def _allocate(nbytes: int, device: int, core: StreamCore | None) -> DeviceBlock:
    """A block on ``core``'s stream (held open until the free), or with ``core`` None (or
    capturing) on the memory stream of ``device``: the backend's own, which only allocates,
    waits and frees."""
    be = active()
    if lifetime.pending():
        lifetime.drain()
    entered = core is not None and core.capture is None
    if entered:
        home, ready = cast(StreamCore, core).enter(), True  # a concurrent close waits for it
    else:
        home, ready = be.memory_stream(device), False
    try:
        # a runtime without pools allocates on the current device
        previous = be.get_device()
        if previous == device:
            ptr = _malloc(be, nbytes, home, device)
        else:
            be.set_device(device)
            try:
                ptr = _malloc(be, nbytes, home, device)
            finally:
                be.set_device(previous)
        be.stream_hold(home)
    finally:
        if entered:
            cast(StreamCore, core).leave()
    if not ready and not lifetime.releases_blocked():
        # nothing queued on the memory stream before this allocation is left to run: the block
        # is ready for every stream now (a query, never a wait; a capture refuses queries)
        ready = be.stream_calls(home).query()
    _stats.allocated(device, nbytes)
    return DeviceBlock(ptr, nbytes, device, home, ready,
                       _Release(be, ptr, nbytes, device, home,
                                {thread_token()} if home == PER_THREAD_STREAM else None))


def _malloc(be: Backend, nbytes: int, home: int, device: int) -> int:
    try:
        return be.malloc_async(nbytes, home, device)
    except OutOfMemoryError as first:
        # arrays already dropped may still wait in the release queue (or the device waiter),
        # and the pool caches freed memory: free them and give the cache back, then try again
        lifetime.drain()
        _device_waiter.wait_idle()
        be.pool_trim(device)
        _stats.retried(device)
        try:
            return be.malloc_async(nbytes, home, device)
        except OutOfMemoryError as second:
            raise _out_of_memory(second, nbytes, device) from first


def _warn(message: str) -> None:
    try:
        warnings.warn(message, ResourceWarning, stacklevel=3)
    except Exception:  # noqa: BLE001 - warnings can fail at interpreter exit
        pass


class _Unordered(Exception):
    """A free that no stream order can place (see ``_Release``)."""


class _Release:
    """What frees one block, closed once by the release queue when its block is collected (it
    must not refer to the block): the other streams it was used on (``others``, a dict used as
    an ordered set of ``(handle, device)``, None until the first), and the threads whose
    per-thread default stream it was used on (``threads``, None until the first). Never
    raises: a failed free warns."""

    __slots__ = ("backend", "ptr", "nbytes", "device", "home", "others", "threads")

    def __init__(self, backend: Backend, ptr: int, nbytes: int, device: int, home: int,
                 threads: set[int] | None) -> None:
        self.backend, self.ptr, self.nbytes, self.device, self.home = (backend, ptr, nbytes,
                                                                       device, home)
        self.others: dict[tuple[int, int], None] | None = None
        self.threads = threads

    def close(self) -> None:
        ptr, self.ptr = self.ptr, 0  # once (only the release queue's drain closes it)
        if not ptr:
            return
        be, device = self.backend, self.device
        try:
            previous = be.get_device()  # the home stream may be a default stream of ``device``
            if previous == device:
                self._free(ptr)
                return
            be.set_device(device)
            try:
                self._free(ptr)
            finally:
                be.set_device(previous)
        except Exception as exc:  # noqa: BLE001 - cleanup must not raise
            _warn(f"rocmstreams: releasing device allocation {ptr:#x} failed: {exc}")

    def _free(self, ptr: int) -> None:
        be, nbytes, device, home = self.backend, self.nbytes, self.device, self.home
        others, threads = self.others, self.threads
        if not others and not threads:  # used on its home stream only: the common case
            try:
                be.free_async(ptr, nbytes, home, device)
            finally:
                be.stream_unhold(home)
                _stats.freed(device, nbytes)
            return
        # A block of the memory stream is freed on the last stream of its device that used it,
        # not on the memory stream: a free there would wait for that use, and every later
        # allocation of the memory stream (and every stream using one) would wait behind it,
        # chaining independent streams into one. The memory stream then only allocates, and
        # stays idle. (A stream of another device, a peer copy's, cannot free it.)
        target = home
        if others and home == be.memory_stream(device):
            target = next((s for s, d in reversed(others) if d == device), home)
        rest = {key: None for key in others or () if key != (target, device)}
        holds = [other for other, _ in rest] + ([target] if target != home else []) + [home]
        deferred = False
        try:
            try:
                if threads and not threads <= {thread_token()}:
                    # the per-thread handle names the *calling* thread's stream, and a release
                    # runs on whichever thread drains: on another thread than the one(s) that
                    # used it, no order can be made on theirs
                    raise _Unordered("it was used on another thread's per-thread default stream")
                if rest:
                    _after_other_streams(be, target, rest)
            except _Unordered:
                # every stream of the device passes its work so far, theirs among them; only
                # then does the block go back: a host wait, made by the device waiter's thread
                _device_waiter.free_after_device(be, device, ptr, nbytes, holds)
                deferred = True
            except RocmStreamsError as exc:
                # a stream it was used on is gone from under us (a borrowed stream its owner
                # destroyed): fall back to a free after the whole device
                warnings.warn(f"rocmstreams: ordering the free of {ptr:#x} after its use on "
                              f"other streams failed ({exc}); freeing it after the whole "
                              "device instead", ResourceWarning, stacklevel=2)
                _device_waiter.free_after_device(be, device, ptr, nbytes, holds)
                deferred = True
            else:
                be.free_async(ptr, nbytes, target, device)
        finally:
            if not deferred:  # every hold goes, whatever failed on the way
                _unhold_and_count(be, holds, device, nbytes)


def _unhold_and_count(be: Backend, holds: list[int], device: int, nbytes: int) -> None:
    try:
        for stream in holds:
            be.stream_unhold(stream)
    finally:
        _stats.freed(device, nbytes)


class _DeviceWaiter:
    """Frees that need every stream of a device to pass its work first (a block used on another
    thread's per-thread default stream, or on a stream gone from under us): a thread of its own
    synchronizes the device, then frees, so that the thread that dropped the array (a user's,
    or the release queue's drain) never waits for the GPU. Started at the first such free; while
    a graph capture is open it waits (a capture in global mode refuses a device synchronize).
    An allocation that ran out of memory, and :func:`empty_cache`, wait for it to be idle."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Backend, int, int, int, list[int]]] = \
            queue.SimpleQueue()
        self._idle = threading.Condition(threading.Lock())  # taken only here, briefly
        self._outstanding = 0
        self._thread: threading.Thread | None = None

    def free_after_device(self, be: Backend, device: int, ptr: int, nbytes: int,
                          holds: list[int]) -> None:
        """Hand the free over (raises, handing nothing, where the thread cannot start)."""
        with self._idle:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, daemon=True,
                                          name="rocmstreams-device-waiter")
                thread.start()
                self._thread = thread
            self._outstanding += 1
        self._queue.put((be, device, ptr, nbytes, holds))

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Return once every free handed over so far is done (or ``timeout`` passed)."""
        with self._idle:
            self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def _run(self) -> None:
        while True:
            be, device, ptr, nbytes, holds = self._queue.get()
            try:
                while lifetime.releases_blocked():  # a capture is open: free after it
                    time.sleep(0.005)
                be.set_device(device)
                be.device_synchronize(device)  # the runtime's free of pool memory does not wait
                be.free(ptr)
            except Exception as exc:  # noqa: BLE001 - cleanup must not raise
                _warn(f"rocmstreams: releasing device allocation {ptr:#x} after the whole "
                      f"device failed: {exc}")
            finally:
                try:
                    _unhold_and_count(be, holds, device, nbytes)
                except Exception as exc:  # noqa: BLE001
                    _warn(f"rocmstreams: releasing the streams that held {ptr:#x} failed: {exc}")
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread is not there, nor are its frees to make."""
        self._queue = queue.SimpleQueue()
        self._idle = threading.Condition(threading.Lock())
        self._outstanding, self._thread = 0, None


_device_waiter = _DeviceWaiter()
os.register_at_fork(after_in_child=_device_waiter.forget_after_fork)


def _after_other_streams(be: Backend, home: int, others: dict[tuple[int, int], None]) -> None:
    """Make ``home`` (its device current) wait, on the device, for the work queued so far on
    each of ``others``; an event records only on a stream of its own device, so each device
    of ``others`` gets its own."""
    home_calls = be.stream_calls(home)
    events: dict[int, int] = {}
    try:
        for other, device in list(others):  # (their holds are the caller's to give back)
            event = events.get(device)
            with using_device(device):
                if event is None:
                    event = events[device] = be.event_create(False)
                be.stream_calls(other).event_record(event)
            home_calls.wait_event(event)  # waits for the record made just now
    finally:
        for device, event in events.items():
            with using_device(device):
                be.event_destroy(event)


def device_block(nbytes: int, device: int, core: StreamCore | None) -> DeviceBlock:
    """A stream-ordered allocation of ``nbytes`` on ``core``'s stream (None: ready for any
    stream, see :func:`empty`), for memory another library wraps (Numba's memory manager)."""
    if running:
        refuse("a device allocation for Numba (its memory manager's memalloc)")
    return _allocate(nbytes, device, core)


def note_use(block: DeviceBlock | None, stream: int, device: int | None = None) -> None:
    """Work using ``block`` is being queued on ``stream`` (a raw handle, not its home) of
    ``device`` (the block's when omitted; another for a peer copy): from inside the door of that
    stream (prepared launches, Numba's launch, copies). The first use there holds the stream
    open until the free, and where the block is not yet ready for other streams (see
    :func:`empty`) makes ``stream`` wait for its allocation."""
    if block is None:
        return
    release = block.release
    if stream == PER_THREAD_STREAM:
        token = thread_token()
        threads = release.threads
        if threads is None or token not in threads:
            with _uses:
                if release.threads is None:
                    release.threads = {token}
                else:
                    release.threads.add(token)
    if device is None or device == block.device:
        if stream == block.home:
            return
        device = block.device
    key = (stream, device)
    others = release.others
    if others is not None and key in others:
        return
    be = active()
    with _uses:
        others = release.others
        if others is None:
            others = release.others = {}
        elif key in others:
            return
        others[key] = None
        be.stream_hold(stream)
    if not block.ready:
        _wait_for_allocation(be, block, stream, device)


def _wait_for_allocation(be: Backend, block: DeviceBlock, stream: int, device: int) -> None:
    with using_device(block.device):
        home = be.stream_calls(block.home)
        # (inside an open capture no query: a capture in global mode refuses one on any stream)
        if not lifetime.releases_blocked() and home.query():  # every earlier free there has run
            block.ready = True
            return
        event = be.event_create(False)
        home.event_record(event)
    try:
        with using_device(device):
            be.stream_calls(stream).wait_event(event)
    finally:
        with using_device(block.device):
            be.event_destroy(event)


def block_of(array: Any) -> DeviceBlock | None:
    """The stream-ordered block a rocmstreams device array views, else None."""
    return array.__rocmstreams_block__ if type(array) is DeviceArray else None


def _out_of_memory(exc: OutOfMemoryError, nbytes: int, device: int) -> OutOfMemoryError:
    found = memory_stats(device)
    return OutOfMemoryError(
        f"out of device memory on device {device}: asked for {nbytes} bytes while rocmstreams "
        f"holds {found['in_use_bytes']} bytes there in arrays ({found['reserved_bytes']} bytes "
        f"reserved by the pool); drop arrays you no longer need (then rs.empty_cache()) or "
        f"allocate less ({exc.message})", backend=exc.backend, code=exc.code, name=exc.name,
        runtime_message=exc.runtime_message)


def memory_stats(device: int | None = None) -> dict[str, int]:
    """Device memory rocmstreams holds on ``device`` (the current one when omitted).

    ``in_use_bytes`` and ``peak_bytes``: bytes in live arrays, now and at most;
    ``reserved_bytes`` and ``reserved_peak_bytes``: bytes the pool of that device holds from it
    (in arrays and cached for reuse; each device has its own pool); ``allocations`` and ``frees`` (counts);
    ``retries_after_release`` (allocations that first failed, then succeeded after releasing
    what was dropped and cached); ``pending_releases`` (dropped objects whose release waits for
    the next rocmstreams call).

    Page-locked host memory allocated with ``device`` (see :func:`pinned_empty`), by the size
    class of each block: ``pinned_in_use_bytes`` (arrays and staging buffers),
    ``pinned_cached_bytes`` (kept for reuse; :func:`empty_cache` gives it back),
    ``pinned_peak_bytes``, ``pinned_allocations`` (blocks taken from the runtime) and
    ``pinned_reuses`` (blocks handed out again).
    """
    if running:
        refuse("rocmstreams.memory_stats()")
    ordinal = check_device(device)
    found = _stats.figures(ordinal)
    found.update(active().pool_usage(ordinal))
    found.update(pinned.usage(ordinal))
    found["pending_releases"] = lifetime.pending()
    return found


def empty_cache() -> None:
    """Release now what dropped arrays and streams left in the release queue, give the memory
    the pools cache back to the device (what the device has finished with), and give the
    page-locked blocks the host cache keeps (idle staging buffers among them) back to the
    runtime, those still used by a stream aside.

    The runtime's free of page-locked memory waits for the whole device: this is the one call
    that does it (dropping a pinned array never does)."""
    if running:
        refuse("rocmstreams.empty_cache()")
    lifetime.drain()
    _device_waiter.wait_idle()
    be = active()
    for device in range(be.get_device_count()):
        be.pool_trim(device)
    staging.free_buffers()
    pinned.trim()
    lifetime.drain()  # what a collection during the trim handed to the queue


class DeviceArray:
    """A C-contiguous array in device memory; a Numba kernel argument and copy endpoint.

    Build one with :func:`empty`, :func:`empty_like`, :func:`to_device` or :func:`device_view`.
    It exports ``__cuda_array_interface__`` (version 3, no stream: ordering is the caller's, through
    the streams the work is queued on).
    """

    # __rocmstreams_abi__: the kernel-ABI values the Numba integration caches on the array
    __slots__ = ("_ptr", "_shape", "_dtype", "_device", "_keepalive", "__rocmstreams_abi__",
                 "__rocmstreams_block__", "__weakref__")
    _ptr: int
    _shape: tuple[int, ...]
    _dtype: np.dtype
    _device: int
    _keepalive: object
    __rocmstreams_abi__: tuple[Any, tuple[int, ...], Any, Any] | None
    #: the stream-ordered allocation the array views (None: memory rocmstreams does not pool)
    __rocmstreams_block__: DeviceBlock | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("use rocmstreams.empty, empty_like, to_device or device_view")

    @classmethod
    def _wrap(cls, ptr: int, shape: tuple[int, ...], dtype: np.dtype, device: int,
              keepalive: object, block: DeviceBlock | None = None) -> "DeviceArray":
        self = object.__new__(cls)
        self._ptr, self._shape, self._dtype = ptr, shape, dtype
        self._device, self._keepalive = device, keepalive
        self.__rocmstreams_abi__ = None
        self.__rocmstreams_block__ = block
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        n = 1
        for extent in self._shape:
            n *= extent
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        return c_strides(self._shape, self._dtype.itemsize)

    @property
    def ptr(self) -> int:
        """Device address of the first element."""
        return self._ptr

    @property
    def device(self) -> int:
        return self._device

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self._shape[0]

    def __getitem__(self, key: slice) -> "DeviceArray":
        """A view of a contiguous range of rows: ``d[lo:hi]`` (step 1 only)."""
        if not isinstance(key, slice) or not self._shape:
            raise TypeError("DeviceArray supports only d[lo:hi] views along the first axis")
        lo, hi, step = key.indices(self._shape[0])
        if step != 1:
            raise ValueError("DeviceArray views must be contiguous (step 1)")
        hi = max(hi, lo)
        row = self.strides[0]
        return DeviceArray._wrap(self._ptr + lo * row, (hi - lo,) + self._shape[1:], self._dtype,
                                 self._device, self, self.__rocmstreams_block__)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self._shape, "typestr": self._dtype.str, "data": (self._ptr, False),
                "strides": None, "version": 3, "stream": None}

    def copy_to_host(self, out: np.ndarray | None = None, *,
                     stream: "RocmStream | None" = None) -> np.ndarray:
        """Queue a copy into ``out`` (a new host array when omitted) on ``stream`` (the legacy
        default stream of the array's device when omitted); returns it.

        The host array holds the data once the stream has passed the copy.
        """
        if out is None:
            out = np.empty(self._shape, self._dtype)
        copy_async(out, self, stream=stream)
        return out

    def copy_from(self, src: Any, *, stream: "RocmStream | None" = None) -> "DeviceArray":
        """Queue a copy from ``src`` (host array or device array) into this array."""
        copy_async(self, src, stream=stream)
        return self

    def __reduce__(self) -> Any:
        raise TypeError("a DeviceArray lives in this process's device memory and cannot be "
                        "pickled; copy it to the host (copy_to_host) and send that")

    def __repr__(self) -> str:
        return (f"<DeviceArray shape={self._shape} dtype={self._dtype} ptr={self._ptr:#x} "
                f"device={self._device}>")


def empty(shape: int | tuple[int, ...], dtype: Any = np.float64, *,
          device: int | None = None, stream: "RocmStream | None" = None) -> DeviceArray:
    """An uninitialised device array from the device's stream-ordered memory pool.

    With ``stream``, the memory is allocated on that stream: work queued on ``stream`` after
    this call may use it, and so may work on any stream ordered after that point (as with
    CuPy's and PyTorch's current stream). Without ``stream``, on ``device`` (the current one
    when omitted), it is ready for work on any stream.

    Dropping the array never waits: it is freed on the stream it was allocated on, once that
    stream and every other stream rocmstreams queued work using it on have passed that work.

    Raises
    ------
    TypeError
        ``shape`` is not an int or a tuple of ints, or ``dtype`` holds Python objects.
    ValueError
        A negative extent, or a size no device can hold.
    DeviceMismatchError
        A ``device`` that is not the device of ``stream``; nothing was allocated.
    OutOfMemoryError
        The device cannot hold it, even after releasing what was dropped and cached; streams
        stay usable.
    """
    return _empty(shape, dtype, device, stream, "empty")


def _empty(shape: int | tuple[int, ...], dtype: Any, device: int | None,
           stream: "RocmStream | None", call: str) -> DeviceArray:
    if running:
        refuse(f"rocmstreams.{call}()")
    shape, dtype = shape_of(shape), device_dtype(dtype)
    nbytes = byte_size(shape, dtype)
    if stream is None:
        return _new(shape, dtype, nbytes, check_device(device), None)
    core = core_of(stream, f"{call}(stream=)")
    if core.capture is not None:
        # a closed stream is refused before anything is allocated (outside a capture by the
        # allocation's own entry to the stream)
        core.check(COPY)
    return _new(shape, dtype, nbytes, _allocation_device(device, core, call), core)


def _allocation_device(device: int | None, core: StreamCore, call: str) -> int:
    """The ordinal of ``device`` for memory of ``core``'s stream: the stream's device when
    None; DeviceMismatchError (before anything is allocated) for any other device."""
    if device is None:
        return core.device
    ordinal = check_device(device)
    if ordinal != core.device:
        raise DeviceMismatchError(
            f"{call}: device={ordinal} is not the device of the stream (device {core.device}); "
            f"leave device out to use the stream's device, or pass a stream of device "
            f"{ordinal} (rs.RocmStream(device={ordinal})); nothing was allocated")
    return ordinal


def _new(shape: tuple[int, ...], dtype: np.dtype, nbytes: int, device: int,
         core: StreamCore | None) -> DeviceArray:
    if not nbytes:  # holds no memory
        return DeviceArray._wrap(0, shape, dtype, device, None)
    block = _allocate(nbytes, device, core)
    return DeviceArray._wrap(block.ptr, shape, dtype, device, block, block)


def empty_like(ary: Any, *, device: int | None = None,
               stream: "RocmStream | None" = None) -> DeviceArray:
    """An uninitialised device array with ``ary``'s shape and dtype (see :func:`empty`)."""
    info = describe(ary)
    return _empty(info.shape, info.dtype, device, stream, "empty_like")


def to_device(ary: np.ndarray, *, stream: "RocmStream | None" = None,
              device: int | None = None) -> DeviceArray:
    """A new device array, allocated on ``stream`` and filled from host array ``ary`` by an
    async copy there (the legacy default stream when omitted; see :func:`empty`).

    From pageable memory the call returns once ``ary`` has been read (see :func:`copy_async`).

    Raises
    ------
    DeviceMismatchError
        A ``device`` that is not the device of ``stream``; nothing was allocated.
    """
    if running:
        refuse("rocmstreams.to_device()")
    if not isinstance(ary, np.ndarray):
        raise TypeError(f"to_device takes a numpy array, got {type(ary).__name__}")
    dtype = device_dtype(ary.dtype)
    # a bad stream is refused before anything is allocated
    core = _core(stream) if stream is not None or device is None else \
        default_core(check_device(device))
    core.check(COPY)
    ordinal = _allocation_device(device, core, "to_device")
    if not ary.flags.c_contiguous:
        ary = np.ascontiguousarray(ary)
    out = _new(ary.shape, dtype, ary.nbytes, ordinal, core)
    _copy_into_new(core, out, ary)
    return out


def _copy_into_new(core: StreamCore, out: DeviceArray, ary: np.ndarray) -> None:
    """:func:`_copy` from a C-contiguous host array into ``out``, a new array of its shape and
    dtype on ``core``'s device, where every check of the endpoints holds by construction."""
    lease = _pinned_block(ary)
    if lease is None and core.capture is not None:
        raise CaptureError(_PAGEABLE_IN_CAPTURE)
    nbytes = ary.nbytes
    if not nbytes:
        core.enter()  # a closed stream still refuses an empty copy
        core.leave()
        return
    d = ArrayInfo("device", out._shape, out._dtype, out._ptr, out.strides, True, False)
    core.submit(COPY, _queue_copy, out, ary, d, describe(ary), lease is None,
                None if lease is None else lease.block, core)


def pinned_empty(shape: int | tuple[int, ...], dtype: Any = np.float64, *,
                 device: int | None = None) -> np.ndarray:
    """An uninitialised numpy array in page-locked host memory, mapped for the devices.

    Copies from and to it run asynchronously at full link speed, on a stream of any device (the
    memory is portable); ``device`` (the current one when omitted) is the one it is allocated
    with, and the default device of :func:`device_view`.

    The memory comes from a cache (see :mod:`rocmstreams.pinned`). Dropping the last array
    viewing it never waits: the block is handed out again only after every stream rocmstreams
    queued a copy from or into it on has passed that copy (an event recorded behind each copy,
    queried, never waited for); :func:`empty_cache` gives cached blocks back to the runtime.
    Memory given to :func:`device_view` is freed by the runtime instead (its kernels' uses are
    not seen), which waits for the device.
    """
    if running:
        refuse("rocmstreams.pinned_empty()")
    shape, dtype = shape_of(shape), device_dtype(dtype)
    nbytes = byte_size(shape, dtype)
    ordinal = check_device(device)
    lifetime.drain()
    block = _Block(pinned.take(nbytes, ordinal), nbytes, ordinal)
    # the array's base keeps the lease (and says the memory is page-locked: _pinned_block)
    return host_bytes(block.ptr, nbytes, block).view(dtype).reshape(shape)


def _pinned_block(ary: np.ndarray) -> _Block | None:
    base: Any = ary
    while base is not None:
        block = getattr(base, "_rocmstreams_block", None)
        if block is not None:
            return block
        nxt = getattr(base, "base", None)
        base = getattr(base, "obj", None) if nxt is None else nxt
    return None


def is_pinned(ary: np.ndarray) -> bool:
    """Whether ``ary`` lies in page-locked memory from :func:`pinned_empty`."""
    return _pinned_block(ary) is not None


def device_view(ary: np.ndarray, *, device: int | None = None) -> DeviceArray:
    """A device's view of a page-locked array from :func:`pinned_empty` (no copy); ``device``
    is the one its kernels run on (the array's allocating device when omitted).

    Kernels reading it see host writes as they happen, e.g. a flag the host sets. Their uses
    are not seen by the pinned cache, so the memory goes back to the runtime when dropped (a
    free that waits for the device), not to the cache.
    """
    block = _pinned_block(ary)
    if block is None:
        raise ValueError("device_view needs an array from rocmstreams.pinned_empty")
    if not ary.flags.c_contiguous:
        raise ValueError("device_view needs a C-contiguous array")
    ordinal = block.device if device is None else check_device(device)
    pinned.untrack(block.block)  # kernels reading it are not seen: freed after the device
    return DeviceArray._wrap(ary.ctypes.data, ary.shape, ary.dtype, ordinal, ary)


def _core(stream: "RocmStream | None") -> StreamCore:
    if stream is None:
        return default_core(active().get_device())
    return core_of(stream, "a copy's stream=")


def copy_async(dst: Any, src: Any, *, stream: "RocmStream | None" = None) -> None:
    """Queue a copy of ``src`` into ``dst`` on ``stream`` (when omitted, the legacy default
    stream of the device endpoint's device, of the destination's in a copy between devices, else
    of the current device).

    Host-to-device, device-to-host and device-to-device, decided by the endpoints' kinds. Both
    must be C-contiguous with the same shape and dtype; anything else is refused before
    anything is queued.

    A device endpoint must be on the stream's device, except in a copy between two devices (a
    peer copy: ``dst`` on one device, ``src`` on another, ``stream`` on either of them): that
    goes directly over the link where the devices can reach each other (peer access is enabled
    once per pair), else through page-locked host buffers, on ``stream`` either way.

    A host endpoint in page-locked memory (:func:`pinned_empty`) is copied asynchronously. One in
    pageable memory follows CUDA's rules for pageable copies: from it, the call returns once the
    source has been read, so it may be overwritten at once (the device data is ready when the
    stream passes the copy); into it, the call returns once the data is there. Pageable sources
    of at least ``config().staging_min_bytes`` are copied in chunks through reused page-locked
    buffers, the host filling one while the device empties another (see
    :mod:`rocmstreams.staging`).

    Raises
    ------
    ValueError, TypeError
        Endpoints that do not match or cannot be copied; nothing was queued.
    DeviceMismatchError
        A device endpoint on another device than the stream (outside a peer copy), or a peer
        copy on a stream of neither device; nothing was queued.
    CaptureError
        A pageable host endpoint while ``stream`` is capturing a graph; nothing was queued.
    """
    if running:
        refuse("rocmstreams.copy_async()")
    if stream is None:
        found = _device_of(dst)
        found = _device_of(src) if found is None else found
        core = default_core(active().get_device() if found is None else found)
    else:
        core = _core(stream)
    _copy(core, dst, src, stream)


def _device_of(array: Any) -> int | None:
    """The device of a rocmstreams array in device memory (None: host memory, or an array
    whose device rocmstreams does not know)."""
    if type(array) is DeviceArray and array.__rocmstreams_block__ is not None:
        return array.device
    return None


def _peer(core: StreamCore, dst: Any, src: Any) -> tuple[int, int] | None:
    """``(dst_device, src_device)`` for a copy between two devices, None for one on the
    stream's device; DeviceMismatchError for endpoints the stream cannot reach."""
    dd, sd = _device_of(dst), _device_of(src)
    if dd is not None and sd is not None and dd != sd:
        if core.device not in (dd, sd):
            raise DeviceMismatchError(
                f"a copy from device {sd} to device {dd} was queued on a stream of device "
                f"{core.device}; queue it on a stream of device {sd} or {dd} "
                f"(rs.RocmStream(device={dd}))")
        return dd, sd
    for side, found in (("destination", dd), ("source", sd)):
        if found is not None and found != core.device:
            raise DeviceMismatchError(
                f"the {side} is on device {found} but the stream is on device {core.device}; "
                f"queue the copy on a stream of device {found} (rs.RocmStream(device={found})), "
                f"or copy the array to device {core.device} first")
    return None


_PAGEABLE_IN_CAPTURE = (
    "a copy to or from pageable host memory cannot be captured into a graph: it reads (or "
    "fills) the host array during the call, with host waits a graph cannot record; copy "
    "through a page-locked array from rocmstreams.pinned_empty, or end the capture")


def _copy(core: StreamCore, dst: Any, src: Any, stream: Any) -> None:
    d, s = describe(dst), describe(src)
    if d.kind == "host" and s.kind == "host":
        raise ValueError("both endpoints are host arrays; use numpy to copy between them")
    if d.dtype != s.dtype:
        raise ValueError(f"dtype mismatch: destination {d.dtype}, source {s.dtype}")
    if d.shape != s.shape:
        raise ValueError(f"shape mismatch: destination {d.shape}, source {s.shape}")
    if not (d.contiguous and s.contiguous):
        side = "destination" if not d.contiguous else "source"
        raise ValueError(f"the {side} is not C-contiguous; copy it to a contiguous array "
                         "first (np.ascontiguousarray or .copy())")
    if d.kind == "host" and d.readonly:
        raise ValueError("the destination host array is read-only")
    peer = _peer(core, dst, src)
    host = dst if d.kind == "host" else src if s.kind == "host" else None
    lease = None if host is None else _pinned_block(host)
    pageable = host is not None and lease is None
    if pageable and core.capture is not None:
        raise CaptureError(_PAGEABLE_IN_CAPTURE)
    nbytes = d.nbytes
    if not nbytes:
        core.enter()  # a closed stream still refuses an empty copy
        core.leave()
        return
    if pageable and d.kind == "host":
        # A copy into pageable memory returns once the data is there, so it waits for the work
        # queued before it; wait for that here, interruptibly, and the runtime's copy (which
        # blocks without answering a signal) has only the copy itself left to do.
        core.synchronize()
    if peer is not None:
        core.submit(COPY, _queue_peer_copy, dst, src, d, s, peer, core)
        return
    core.submit(COPY, _queue_copy, dst, src, d, s, pageable, None if lease is None else
                lease.block, core)


def _queue_peer_copy(calls: Any, dst: DeviceArray, src: DeviceArray, d: ArrayInfo,
                     s: ArrayInfo, devices: tuple[int, int], core: StreamCore) -> None:
    """Inside the door: a copy between two devices, over the link where the stream's device
    reaches the other one, else staged through page-locked buffers of the stream's device."""
    dst_device, src_device = devices
    note_use(dst.__rocmstreams_block__, calls.handle, core.device)
    note_use(src.__rocmstreams_block__, calls.handle, core.device)
    be = core.backend
    other = src_device if core.device == dst_device else dst_device
    if be.peer_access(core.device, other):
        calls.memcpy_peer_async(d.address, dst_device, s.address, src_device, d.nbytes)
    elif core.capture is not None:
        raise CaptureError(
            f"devices {src_device} and {dst_device} cannot reach each other, so a copy between "
            "them goes through host buffers the host reuses, which a graph cannot record; copy "
            "between them before `with stream.capture()` or after it")
    else:
        staging.copy_between_devices(be, calls, core.device, d.address, s.address, d.nbytes,
                                     config())


def _queue_copy(calls: Any, dst: Any, src: Any, d: ArrayInfo, s: ArrayInfo, pageable: bool,
                host: pinned.PinnedBlock | None, core: StreamCore) -> None:
    """Inside the door: the runtime copy, or a staged one for large pageable endpoints; a
    copy from or into page-locked memory of the cache (``host``) is followed by its event."""
    if type(dst) is DeviceArray:
        note_use(dst.__rocmstreams_block__, calls.handle)
    if type(src) is DeviceArray:
        note_use(src.__rocmstreams_block__, calls.handle)
    nbytes = d.nbytes
    cfg = config()
    if pageable and nbytes >= cfg.staging_min_bytes:
        if s.kind == "host":
            staging.copy_to_device(core.backend, calls, core.device, d.address, src, cfg)
            return
        if cfg.stage_device_to_host:
            staging.copy_to_host(core.backend, calls, core.device, dst, s.address, cfg)
            return
    calls.memcpy_async(d.address, s.address, nbytes)
    if host is not None:
        pinned.record_use(host, calls, core.device, core.capture is not None)
