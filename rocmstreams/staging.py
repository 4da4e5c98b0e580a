"""Copies between pageable host memory and the device, staged through page-locked buffers.

A runtime copies from pageable memory through small page-locked buffers of its own, one piece
after the other on the calling thread: numba-cuda's ``to_device`` of 256 MiB from a pageable
array ran at 8.1 GB/s on an H100, where page-locked memory reaches ~50 GB/s. Here a large pageable
copy is cut into chunks that go through a reused pool of page-locked buffers: the host copies
chunk i+1 into a free buffer (numpy copies, split over a few threads: ``np.copyto`` releases the
GIL) while the device's copy engine moves chunk i from its buffer. A buffer is written again only
after an event recorded behind its last device copy has passed.

What a caller sees (:func:`rocmstreams.copy_async` decides when to stage):

- host to device: the call returns once the source has been read in full, so the caller may
  overwrite it at once, as after a CUDA copy from pageable memory. The device data is ready when
  the stream passes the copy, like any copy on the stream. The call waits on the host only when
  it is more than :data:`BUFFERS` chunks ahead of the stream.
- device to host (only with :data:`STAGE_D2H`): the call returns once the host array holds the
  data, as a copy into pageable memory does.

Only memory from :func:`rocmstreams.pinned_empty` (and views of it) is known to be page-locked;
page-locked arrays from other libraries (``cupyx.empty_pinned``, ``torch.Tensor.pin_memory``)
are staged like pageable ones: correct, a little slower than copying them directly.

The module constants below are read at every call; change them to tune (tests make them small so
that small arrays cross many chunks). Copies smaller than :data:`MIN_STAGED_BYTES` stay direct.
"""
from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import os
import threading
import warnings
import weakref

import numpy as np

from .backends import Backend
from .device import using_device

__all__ = ["MIN_STAGED_BYTES", "CHUNK_BYTES", "BUFFERS", "THREADS", "MIN_SLICE_BYTES",
           "STAGE_D2H", "copy_to_device", "copy_to_host", "free_buffers"]

#: Pageable copies of at least this many bytes are staged; smaller ones go to the runtime as is.
MIN_STAGED_BYTES = 1 << 20
#: Bytes per chunk, and the size of each page-locked staging buffer.
CHUNK_BYTES = 32 << 20
#: Staging buffers one copy cycles through (how far the host may run ahead of the stream).
BUFFERS = 4
#: Host threads (the caller's included) that share each chunk's numpy copy.
THREADS = min(8, os.cpu_count() or 1)
#: A chunk is split across threads only in slices of at least this many bytes.
MIN_SLICE_BYTES = 1 << 20
#: Stage device-to-host copies into pageable memory too (off: see benchmarks/README.md).
STAGE_D2H = False

_SLICE_ALIGN = 64  # slices start on cache lines


class _Buffer:
    """One page-locked staging buffer and the event that marks its last device copy."""

    __slots__ = ("ptr", "nbytes", "view", "event", "recorded")

    def __init__(self, be: Backend, nbytes: int) -> None:
        self.ptr = be.host_malloc(nbytes)
        try:
            self.event = be.event_create(False)
        except BaseException:
            be.host_free(self.ptr)
            raise
        self.nbytes = nbytes
        self.view = np.frombuffer((ctypes.c_byte * nbytes).from_address(self.ptr), np.uint8)
        self.recorded = False

    def wait(self, be: Backend) -> None:
        """Block until the device copy that last used this buffer has finished."""
        if self.recorded:
            be.event_synchronize(self.event)

    def mark(self, be: Backend, stream: int) -> None:
        be.event_record(self.event, stream)
        self.recorded = True


def _release(be: Backend, buffers: list[_Buffer]) -> None:
    """Free buffers once their copies are done; warns, never raises (finalizers call it)."""
    while buffers:
        buf = buffers.pop()
        try:
            buf.wait(be)
            be.event_destroy(buf.event)
            be.host_free(buf.ptr)
        except Exception as exc:  # noqa: BLE001 - cleanup must not raise
            try:
                warnings.warn(f"rocmstreams: freeing a staging buffer at {buf.ptr:#x} failed: "
                              f"{exc}", ResourceWarning, stacklevel=2)
            except Exception:  # noqa: BLE001 - warnings can fail at interpreter exit
                pass


class _Pool:
    """The idle staging buffers of one device; freed at exit or by :func:`free_buffers`."""

    __slots__ = ("_be", "_device", "_lock", "_idle", "_finalizer", "__weakref__")

    def __init__(self, be: Backend, device: int) -> None:
        self._be, self._device = be, device
        self._lock = threading.Lock()
        self._idle: list[_Buffer] = []
        self._finalizer = weakref.finalize(self, _release, be, self._idle)

    def take(self, count: int, nbytes: int) -> list[_Buffer]:
        """``count`` buffers of at least ``nbytes``; idle ones first, new ones after."""
        with self._lock:
            fit = [b for b in self._idle if b.nbytes >= nbytes][:count]
            small = [b for b in self._idle if b.nbytes < nbytes]  # CHUNK_BYTES grew
            self._idle[:] = [b for b in self._idle if b not in fit and b not in small]
        _release(self._be, small)
        try:
            with using_device(self._device):
                while len(fit) < count:
                    fit.append(_Buffer(self._be, nbytes))
        except BaseException:
            self.give(fit)
            raise
        return fit

    def give(self, buffers: list[_Buffer]) -> None:
        with self._lock:
            self._idle.extend(buffers)

    def free(self) -> None:
        with self._lock:
            idle, self._idle[:] = list(self._idle), []
        _release(self._be, idle)


_pools: dict[int, _Pool] = {}  # device ordinal -> pool
_pools_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_size = 0


def _pool(be: Backend, device: int) -> _Pool:
    with _pools_lock:
        pool = _pools.get(device)
        if pool is None:
            pool = _pools[device] = _Pool(be, device)
        return pool


def free_buffers() -> None:
    """Free every idle staging buffer now (buffers of copies in progress go back afterwards).

    They are allocated again on the next staged copy; at exit they are freed without this.
    """
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.free()


def _workers(count: int) -> concurrent.futures.ThreadPoolExecutor:
    global _executor, _executor_size
    with _pools_lock:
        if _executor is None or _executor_size < count:  # THREADS grew; the old one's idle
            _executor = concurrent.futures.ThreadPoolExecutor(   # threads end when it is freed
                count, thread_name_prefix="rocmstreams-staging")
            _executor_size = count
        return _executor


def _host_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[:] = src`` (flat byte arrays), split over up to :data:`THREADS` threads."""
    nbytes = dst.nbytes
    parts = max(1, min(THREADS, nbytes // max(MIN_SLICE_BYTES, 1)))
    if parts == 1:
        np.copyto(dst, src)
        return
    step = -(-nbytes // parts)
    step = -(-step // _SLICE_ALIGN) * _SLICE_ALIGN
    pool = _workers(parts - 1)
    futures = [pool.submit(np.copyto, dst[lo:lo + step], src[lo:lo + step])
               for lo in range(step, nbytes, step)]
    try:
        np.copyto(dst[:step], src[:step])
    finally:
        concurrent.futures.wait(futures)  # no thread may still write when the buffer moves on
    for future in futures:
        future.result()


def _flat_bytes(ary: np.ndarray) -> np.ndarray:
    """A 1-d uint8 view of a C-contiguous array's memory."""
    return ary.reshape(-1).view(np.uint8)


def _chunks(nbytes: int, chunk: int) -> list[tuple[int, int]]:
    return [(lo, min(chunk, nbytes - lo)) for lo in range(0, nbytes, chunk)]


def copy_to_device(be: Backend, dst: int, src: np.ndarray, stream: int, device: int) -> None:
    """Queue ``src`` (pageable, C-contiguous) into device address ``dst`` on ``stream``.

    Returns once ``src`` has been read; the device copies run on ``stream`` in order.
    """
    flat = _flat_bytes(src)
    chunk = max(int(CHUNK_BYTES), 1)
    pieces = _chunks(flat.nbytes, chunk)
    pool = _pool(be, device)
    buffers = pool.take(min(max(int(BUFFERS), 1), len(pieces)), chunk)
    try:
        for i, (lo, n) in enumerate(pieces):
            buf = buffers[i % len(buffers)]
            buf.wait(be)
            _host_copy(buf.view[:n], flat[lo:lo + n])
            be.memcpy_async(dst + lo, buf.ptr, n, stream)
            buf.mark(be, stream)
    finally:
        pool.give(buffers)


def copy_to_host(be: Backend, dst: np.ndarray, src: int, stream: int, device: int) -> None:
    """Copy device address ``src`` into ``dst`` (pageable, C-contiguous, writeable) after the
    work queued on ``stream``; returns once ``dst`` holds the data."""
    flat = _flat_bytes(dst)
    chunk = max(int(CHUNK_BYTES), 1)
    pieces = _chunks(flat.nbytes, chunk)
    pool = _pool(be, device)
    buffers = pool.take(min(max(int(BUFFERS), 1), len(pieces)), chunk)
    waiting = collections.deque(pieces)
    in_flight: collections.deque[tuple[_Buffer, int, int]] = collections.deque()

    def queue(buf: _Buffer) -> None:
        lo, n = waiting.popleft()
        buf.wait(be)  # its previous copy (maybe from the host, on another stream) has run
        be.memcpy_async(buf.ptr, src + lo, n, stream)
        buf.mark(be, stream)
        in_flight.append((buf, lo, n))

    try:
        for buf in buffers:
            queue(buf)
        while in_flight:
            buf, lo, n = in_flight.popleft()
            buf.wait(be)
            _host_copy(flat[lo:lo + n], buf.view[:n])
            if waiting:
                queue(buf)
    finally:
        pool.give(buffers)


