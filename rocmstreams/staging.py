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
  it is more than ``staging_buffers`` chunks ahead of the stream.
- device to host (only with ``stage_device_to_host``): the call returns once the host array holds the
  data, as a copy into pageable memory does.

Only memory from :func:`rocmstreams.pinned_empty` (and views of it) is known to be page-locked;
page-locked arrays from other libraries (``cupyx.empty_pinned``, ``torch.Tensor.pin_memory``)
are staged like pageable ones: correct, a little slower than copying them directly.

The tunables live in the configuration (``rocmstreams.configure(staging_chunk_bytes=...,
staging_buffers=..., staging_threads=..., staging_min_bytes=..., staging_min_slice_bytes=...,
stage_device_to_host=...)``), read at every call; copies smaller than ``staging_min_bytes`` stay
direct. Staging buffers are blocks of the page-locked host cache (:mod:`rocmstreams.pinned`),
each chunk's copy followed by the block's event on its stream, kept in a pool per device;
:func:`free_buffers` gives the idle ones back to that cache, never waiting for a stream
(``rs.empty_cache()`` frees them).
"""
from __future__ import annotations

import collections
import concurrent.futures
import os
import threading

import numpy as np

from . import pinned
from .backends import Backend, StreamCalls
from .backends.host_bytes import host_bytes
from .core.config import Config
from .core.lifetime import Handle
from .streamcore import wait_blocking

__all__ = ["copy_to_device", "copy_to_host", "copy_between_devices", "free_buffers",
           "host_copy"]

_SLICE_ALIGN = 64  # slices start on cache lines


class _Buffer:
    """One page-locked staging buffer: a block of the pinned cache, and its device."""

    __slots__ = ("block", "device", "nbytes", "view")
    view: np.ndarray

    def __init__(self, nbytes: int, device: int) -> None:
        self.block = pinned.take(nbytes, device)
        self.device = device
        self.nbytes = nbytes
        self.view = host_bytes(self.block.ptr, nbytes)

    @property
    def ptr(self) -> int:
        return self.block.ptr

    def wait(self) -> None:
        """Block until the device copies that used this buffer so far have finished;
        interruptible, as synchronize() is (Ctrl-C: KeyboardInterrupt at once, the buffer still
        marked behind those copies, so it is reused only after they ran)."""
        pinned.wait_for_uses(self.block, _wait_event)

    def send(self, calls: StreamCalls, *copies: tuple[int, int, int]) -> None:
        """Queue ``copies`` (dst, src, nbytes) from or into the buffer on the stream of
        ``calls`` and mark the buffer behind them (marked even when a Ctrl-C lands between)."""
        try:
            for dst, src, nbytes in copies:
                calls.memcpy_async(dst, src, nbytes)
        finally:
            self.mark(calls)

    def mark(self, calls: StreamCalls) -> None:
        """After a copy using the buffer was queued on the stream of ``calls``."""
        pinned.record_use(self.block, calls, self.device, False)

    def close(self) -> None:
        """Give the block back to the pinned cache, which reuses it once its copies are done;
        no wait, no runtime call."""
        pinned.release(self.block)


class _Pool:
    """The idle staging buffers of one device; freed at exit or by :func:`free_buffers`."""

    __slots__ = ("_be", "_device", "_lock", "_idle")

    def __init__(self, be: Backend, device: int) -> None:
        self._be, self._device = be, device
        self._lock = threading.Lock()
        self._idle: list[_Buffer] = []

    def take(self, count: int, nbytes: int) -> list[_Buffer]:
        """``count`` buffers of at least ``nbytes``; idle ones first, new ones after."""
        with self._lock:
            fit = [b for b in self._idle if b.nbytes >= nbytes][:count]
            small = [b for b in self._idle if b.nbytes < nbytes]  # the chunk size grew
            self._idle[:] = [b for b in self._idle if b not in fit and b not in small]
        for buf in small:
            buf.close()
        try:
            while len(fit) < count:
                fit.append(_Buffer(nbytes, self._device))
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
        for buf in idle:
            buf.close()


_pools: dict[int, _Pool] = {}  # device ordinal -> pool
_pools_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_size = 0


def _forget_after_fork() -> None:
    """A forked child has none of the parent's threads, and its pinned buffers are the
    parent's: start with none."""
    global _executor, _executor_size, _pools_lock
    _executor, _executor_size, _pools_lock = None, 0, threading.Lock()
    _pools.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


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
        if _executor is None or _executor_size < count:  # more threads asked; the old idle
            _executor = concurrent.futures.ThreadPoolExecutor(   # threads end when it is freed
                count, thread_name_prefix="rocmstreams-staging")
            _executor_size = count
        return _executor


def host_copy(dst: np.ndarray, src: np.ndarray, cfg: Config) -> None:
    """``dst[:] = src`` (flat byte arrays), split over up to ``staging_threads`` threads."""
    nbytes = dst.nbytes
    parts = max(1, min(cfg.staging_threads, nbytes // cfg.staging_min_slice_bytes))
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
        _join(futures)  # no thread may still write when the buffer moves on
    for future in futures:
        future.result()


def _join(futures: list[concurrent.futures.Future[None]]) -> None:
    """Wait for ``futures``, a Ctrl-C meanwhile raised only once they are done (a slice's copy:
    milliseconds), as a staging buffer must not move on while a thread still writes it."""
    interrupted: BaseException | None = None
    while True:
        try:
            concurrent.futures.wait(futures)
            break
        except BaseException as exc:  # noqa: BLE001 - raised below, once the threads are done
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _wait_event(be: Backend, event: int) -> None:
    """An interruptible host wait for ``event`` (the one synchronize() uses); the event is the
    pinned cache's, borrowed here (a Handle that releases nothing counts the waiter's use)."""
    if be.event_query(event):
        return
    wait_blocking(lambda: be.event_query(event), lambda: be.event_synchronize(event),
                  None, "a staged copy", Handle(event, None, "staging event"))


def _flat_bytes(ary: np.ndarray) -> np.ndarray:
    """A 1-d uint8 view of a C-contiguous array's memory."""
    return ary.reshape(-1).view(np.uint8)


def _chunks(nbytes: int, chunk: int) -> list[tuple[int, int]]:
    return [(lo, min(chunk, nbytes - lo)) for lo in range(0, nbytes, chunk)]


def copy_to_device(be: Backend, calls: StreamCalls, device: int, dst: int, src: np.ndarray,
                   cfg: Config) -> None:
    """Queue ``src`` (pageable, C-contiguous) into device address ``dst`` on the stream of
    ``calls``; returns once ``src`` has been read, the device copies running in order."""
    flat = _flat_bytes(src)
    chunk = cfg.staging_chunk_bytes
    pieces = _chunks(flat.nbytes, chunk)
    pool = _pool(be, device)
    buffers = pool.take(min(cfg.staging_buffers, len(pieces)), chunk)
    try:
        for i, (lo, n) in enumerate(pieces):
            buf = buffers[i % len(buffers)]
            buf.wait()
            host_copy(buf.view[:n], flat[lo:lo + n], cfg)
            buf.send(calls, (dst + lo, buf.ptr, n))
    finally:
        pool.give(buffers)


def copy_between_devices(be: Backend, calls: StreamCalls, device: int, dst: int, src: int,
                         nbytes: int, cfg: Config) -> None:
    """Queue a copy of ``nbytes`` between device addresses of two devices that cannot reach
    each other, on the stream of ``calls`` (of ``device``): each chunk goes into a page-locked
    buffer of ``device`` and on from it, both copies on the stream, so the host never waits
    for the data; a buffer is reused once an event behind its last copy has passed."""
    pieces = _chunks(nbytes, cfg.staging_chunk_bytes)
    pool = _pool(be, device)
    buffers = pool.take(min(cfg.staging_buffers, len(pieces)), cfg.staging_chunk_bytes)
    try:
        for i, (lo, n) in enumerate(pieces):
            buf = buffers[i % len(buffers)]
            buf.wait()
            buf.send(calls, (buf.ptr, src + lo, n), (dst + lo, buf.ptr, n))
    finally:
        pool.give(buffers)


def copy_to_host(be: Backend, calls: StreamCalls, device: int, dst: np.ndarray, src: int,
                 cfg: Config) -> None:
    """Copy device address ``src`` into ``dst`` (pageable, C-contiguous, writeable) after the
    work queued on the stream of ``calls``; returns once ``dst`` holds the data."""
    flat = _flat_bytes(dst)
    chunk = cfg.staging_chunk_bytes
    pieces = _chunks(flat.nbytes, chunk)
    pool = _pool(be, device)
    buffers = pool.take(min(cfg.staging_buffers, len(pieces)), chunk)
    waiting = collections.deque(pieces)
    in_flight: collections.deque[tuple[_Buffer, int, int]] = collections.deque()

    def queue(buf: _Buffer) -> None:
        lo, n = waiting.popleft()
        buf.wait()  # its previous copy (maybe from the host, on another stream) has run
        buf.send(calls, (buf.ptr, src + lo, n))
        in_flight.append((buf, lo, n))

    try:
        for buf in buffers:
            queue(buf)
        while in_flight:
            buf, lo, n = in_flight.popleft()
            buf.wait()
            host_copy(flat[lo:lo + n], buf.view[:n], cfg)
            if waiting:
                queue(buf)
    finally:
        pool.give(buffers)
