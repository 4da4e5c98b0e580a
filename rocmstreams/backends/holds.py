"""Holds on streams, the same for every backend: a stream that a queued stream-ordered free
still needs is destroyed by its last hold's release, not when it is released.

The memory layer holds each stream a block was used on until the block's free is queued
(``Backend.stream_hold`` / ``stream_unhold``); a backend's ``stream_destroy`` asks
:meth:`StreamHolds.defer_destroy` first and, where the last :meth:`StreamHolds.unhold` says so,
destroys the stream then.
"""
from __future__ import annotations

from typing import Container, ContextManager

__all__ = ["StreamHolds"]


class StreamHolds:
    """Hold counts by stream handle, and the held streams whose destroy waits for the last.

    Parameters
    ----------
    lock : context manager
        Guards the counts: the backend's own lock (the cpu backend's, so that a hold and a
        destroy are ordered with its stream table) or one of their own. Never held while a
        stream is destroyed.
    """

    __slots__ = ("_lock", "_counts", "_doomed")

    def __init__(self, lock: ContextManager[object]) -> None:
        self._lock = lock
        self._counts: dict[int, int] = {}
        self._doomed: set[int] = set()

    def hold(self, stream: int, owned: Container[int]) -> None:
        """One more hold on ``stream`` where it is one of ``owned`` (the backend's streams: the
        default streams live for the process, and a borrowed one is its owner's)."""
        with self._lock:
            if stream in owned:
                self._counts[stream] = self._counts.get(stream, 0) + 1

    def defer_destroy(self, stream: int) -> bool:
        """True where ``stream`` is held: its destroy is then the last :meth:`unhold`'s."""
        if not self._counts:  # the common case, answered without the lock
            return False
        with self._lock:
            if self._counts.get(stream):
                self._doomed.add(stream)
                return True
        return False

    def unhold(self, stream: int) -> bool:
        """One hold fewer on ``stream`` (none: nothing); True where that was the last hold of a
        stream whose destroy was deferred: the caller destroys it now."""
        with self._lock:
            count = self._counts.get(stream)
            if not count:
                return False
            if count > 1:
                self._counts[stream] = count - 1
                return False
            del self._counts[stream]
            if stream not in self._doomed:
                return False
            self._doomed.discard(stream)
            return True
