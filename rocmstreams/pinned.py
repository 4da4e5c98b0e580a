"""The caching allocator of page-locked host memory, the way CuPy's ``PinnedMemoryPool`` and
PyTorch's ``CachingHostAllocator`` work.

The runtime's free of page-locked memory (``cudaFreeHost`` / ``hipHostFree``) waits for the
whole device, and its allocation costs milliseconds. Blocks are therefore kept, rounded to size
classes (four per power of two, at least 512 bytes), and handed out again; they go back to the
runtime only in :func:`trim` (``rs.empty_cache()``), or with the process.

The lifetime rule: a block is handed out again only once every stream that used it has passed
its last use. Each use queued on a stream (a copy from or into a pinned array, a staging
buffer's chunk) is followed there by a record of an event the block keeps for that stream
(:func:`record_use`), so a block released while a stream still copies from it waits, as
``pending``, until its events have passed. That is checked with event queries when a block of
its size class is asked for, never with a host wait: a release makes no runtime call at all.
Recording at the use, not at the release, keeps no stream open for a later record, and a
per-thread default stream is named by the thread that used it.

Memory whose uses are not seen is freed by the runtime as before (a device-wide wait): a block
that :func:`untrack` marked (a device view given to kernels, a copy captured into a graph).

One object, :data:`_cache`, with one lock; the lock is taken by user calls only (a release
arrives through the lifetime release queue, drained outside every lock), never by a finalizer.
"""
from __future__ import annotations

import collections
import os
import threading
import warnings
from typing import Callable

from .backends import PER_THREAD_STREAM, Backend, StreamCalls, active
from .core import lifetime
from .core.device import thread_token, using_device
from .errors import RocmStreamsError

__all__ = ["PinnedBlock", "size_class", "take", "record_use", "untrack", "wait_for_uses",
           "release", "releaser", "trim", "usage"]

_MIN_CLASS = 512
_SCAN = 16  # pending blocks of one class queried per allocation, oldest first
_SPARE_EVENTS = 64  # idle events kept per device for the next block's first use on a stream


def size_class(nbytes: int) -> int:
    """The bytes a request of ``nbytes`` gets: at least 512, else the next of the four sizes
    per power of two (2**k times 1, 1.25, 1.5, 1.75), so a block wastes at most a fifth."""
    if nbytes <= _MIN_CLASS:
        return _MIN_CLASS
    step = 1 << max((nbytes - 1).bit_length() - 3, 0)
    return -(-nbytes // step) * step


class PinnedBlock:
    """One page-locked allocation of the cache.

    ``events`` maps each stream it was used on, as ``(handle, device, thread)`` (``thread``
    names the thread for a per-thread default stream, else 0), to an event recorded there after
    its last use; ``tracked`` is False once a use the cache cannot see was possible.
    """

    __slots__ = ("ptr", "size", "device", "backend", "events", "tracked")

    def __init__(self, ptr: int, size: int, device: int, backend: Backend) -> None:
        self.ptr, self.size, self.device, self.backend = ptr, size, device, backend
        self.events: dict[tuple[int, int, int], int] = {}
        self.tracked = True


class _HostCache:
    """Blocks by ``(device, size class)``: ``free`` (every use passed) and ``pending``
    (released, some event maybe not yet passed, oldest first); the bytes handed out."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free: dict[tuple[int, int], list[PinnedBlock]] = {}
        self.pending: dict[tuple[int, int], collections.deque[PinnedBlock]] = {}
        self.spare: dict[int, list[int]] = {}  # device -> idle events
        self.stats: dict[int, dict[str, int]] = {}

    def of(self, device: int) -> dict[str, int]:
        return self.stats.setdefault(device, {"pinned_in_use_bytes": 0, "pinned_cached_bytes": 0,
                                              "pinned_peak_bytes": 0, "pinned_allocations": 0,
                                              "pinned_reuses": 0})

    def handed(self, block: PinnedBlock, reused: bool) -> list[tuple[int, int]]:
        """Under the lock: ``block`` goes to a user; its events become spares, up to
        ``_SPARE_EVENTS`` a device; returns the others, as ``(device, event)``, to destroy."""
        d = self.of(block.device)
        d["pinned_in_use_bytes"] += block.size
        d["pinned_peak_bytes"] = max(d["pinned_peak_bytes"], d["pinned_in_use_bytes"])
        if reused:
            d["pinned_cached_bytes"] -= block.size
            d["pinned_reuses"] += 1
        else:
            d["pinned_allocations"] += 1
        excess = []
        for (_, device, _), event in block.events.items():
            spare = self.spare.setdefault(device, [])
            if len(spare) < _SPARE_EVENTS:
                spare.append(event)
            else:
                excess.append((device, event))
        block.events = {}
        return excess


_cache = _HostCache()


def _forget_after_fork() -> None:
    """A forked child's page-locked memory is the parent's mapping: start with none cached."""
    global _cache
    _cache = _HostCache()


os.register_at_fork(after_in_child=_forget_after_fork)


def _passed(block: PinnedBlock) -> bool:
    """Whether every stream that used ``block`` has passed its last use (queries, no wait)."""
    be = block.backend
    return all(be.event_query(event) for event in list(block.events.values()))


def take(nbytes: int, device: int) -> PinnedBlock:
    """A block of at least ``nbytes`` for ``device``: a cached one whose uses have all passed,
    else a new one from the runtime (after giving the cache back once, if that fails)."""
    size = size_class(nbytes)
    key = (device, size)
    cache = _cache
    with cache.lock:
        free = cache.free.get(key)
        if free:
            block = free.pop()
            excess = cache.handed(block, True)
            _destroy(block.backend, excess)
            return block
        waiting = cache.pending.get(key)
        candidates = list(waiting)[:_SCAN] if waiting else []
    if candidates and not lifetime.releases_blocked():  # a capture refuses queries
        for block in candidates:
            if not _passed(block):
                with cache.lock:  # to the back: the next scan looks at newer blocks first
                    queue = cache.pending.get(key)
                    if queue and queue[0] is block:
                        queue.rotate(-1)
                continue
            with cache.lock:
                try:
                    cache.pending[key].remove(block)
                except ValueError:
                    continue  # another thread took it meanwhile
                excess = cache.handed(block, True)
            _destroy(block.backend, excess)
            return block
    return _allocate(size, device, cache)


def _destroy(be: Backend, events: list[tuple[int, int]]) -> None:
    for device, event in events:
        try:
            with using_device(device):
                be.event_destroy(event)
        except RocmStreamsError as exc:  # cleanup warns, never raises
            _warn(f"rocmstreams: destroying the pinned cache's event {event:#x} failed: {exc}")


def _warn(message: str) -> None:
    warnings.warn(message, ResourceWarning, stacklevel=3)


def _allocate(size: int, device: int, cache: _HostCache) -> PinnedBlock:
    be = active()
    with using_device(device):
        try:
            ptr = be.host_malloc(size)
        except RocmStreamsError:
            # cached blocks hold page-locked memory the system may need: give back what has
            # passed (the runtime's free waits for the device; only here and in trim) and retry
            trim()
            ptr = be.host_malloc(size)
    block = PinnedBlock(ptr, size, device, be)
    with cache.lock:
        cache.handed(block, False)
    return block


def _event_for(block: PinnedBlock, key: tuple[int, int, int]) -> int:
    cache = _cache
    device = key[1]
    with cache.lock:
        spare = cache.spare.get(device)
        event = spare.pop() if spare else None
    if event is None:
        with using_device(device):
            event = block.backend.event_create(False)
    found = block.events.setdefault(key, event)
    if found != event:  # another thread's copy on the same stream made one first
        with cache.lock:
            cache.spare.setdefault(device, []).append(event)
    return found


def record_use(block: PinnedBlock, calls: StreamCalls, device: int, capturing: bool) -> None:
    """Inside the door of a stream of ``device``, after a use of ``block`` was queued there:
    record the block's event of that stream behind it. In a graph capture the replays are the
    uses, and no record can follow them: the block is no longer tracked."""
    if capturing:
        untrack(block)
        return
    handle = calls.handle
    key = (handle, device, thread_token() if handle == PER_THREAD_STREAM else 0)
    event = block.events.get(key)
    if event is None:
        event = _event_for(block, key)
    calls.event_record(event)


def untrack(block: PinnedBlock) -> None:
    """Uses of ``block`` may come that the cache does not see (kernels reading a device view):
    its release frees it through the runtime, which waits for the device."""
    block.tracked = False


def wait_for_uses(block: PinnedBlock,
                  wait: Callable[[Backend, int], None] | None = None) -> None:
    """Block the host until every use of ``block`` has passed (staging, inside a copy call);
    ``wait(backend, event)`` waits for one event (the caller's interruptible wait; the
    runtime's event synchronize when omitted)."""
    be = block.backend
    for event in list(block.events.values()):
        if wait is None:
            be.event_synchronize(event)
        else:
            wait(be, event)


def release(block: PinnedBlock) -> None:
    """``block`` has no user left: cache it until its uses pass. No runtime call, no wait
    (an untracked block aside). Called from the release queue's drain or a user call."""
    cache = _cache
    with cache.lock:
        d = cache.of(block.device)
        d["pinned_in_use_bytes"] -= block.size
        if block.tracked:
            d["pinned_cached_bytes"] += block.size
            key = (block.device, block.size)
            if block.events:
                cache.pending.setdefault(key, collections.deque()).append(block)
            else:
                cache.free.setdefault(key, []).append(block)
            return
    _free(block)


def releaser(block: PinnedBlock) -> Callable[[int], None]:
    """The release function of the lifetime Handle that owns ``block`` for one user."""
    def release_block(ptr: int) -> None:
        release(block)
    return release_block


def _free(block: PinnedBlock) -> None:
    """Give ``block`` and its events back to the runtime; warns, never raises."""
    events, block.events = block.events, {}
    _destroy(block.backend, [(device, event) for (_, device, _), event in events.items()])
    try:
        with using_device(block.device):
            block.backend.host_free(block.ptr)
    except RocmStreamsError as exc:
        _warn(f"rocmstreams: freeing page-locked memory at {block.ptr:#x} failed: {exc}")


def trim() -> None:
    """Give the cached blocks whose uses have all passed back to the runtime (its free waits
    for the device), and the idle events; blocks a stream may still use stay cached."""
    cache = _cache
    with cache.lock:
        blocks = [b for free in cache.free.values() for b in free]
        cache.free.clear()
        waiting = [b for queue in cache.pending.values() for b in queue]
        spare, cache.spare = cache.spare, {}
    if not lifetime.releases_blocked():
        passed = [b for b in waiting if _passed(b)]
        with cache.lock:
            for b in passed:
                queue = cache.pending.get((b.device, b.size))
                if queue is not None and b in queue:
                    queue.remove(b)
                    blocks.append(b)
    with cache.lock:
        for b in blocks:
            cache.of(b.device)["pinned_cached_bytes"] -= b.size
    _destroy(active(), [(device, e) for device, events in spare.items() for e in events])
    for b in blocks:
        _free(b)


def usage(device: int) -> dict[str, int]:
    """``pinned_in_use_bytes`` (blocks handed out: arrays and staging buffers),
    ``pinned_cached_bytes`` (kept for reuse), ``pinned_peak_bytes``, ``pinned_allocations``
    (blocks taken from the runtime) and ``pinned_reuses`` (blocks handed out again), by the
    size class of each block, for blocks allocated with ``device``."""
    with _cache.lock:
        return dict(_cache.of(device))

