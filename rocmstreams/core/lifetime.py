"""The one lifetime holder of raw runtime handles, and the queue finalizers hand releases to.

A :class:`Handle` owns one raw handle (a stream, event, graph, allocation). Operations that pass
the handle to the runtime bracket the call with :meth:`Handle.enter` / :meth:`Handle.leave`;
:meth:`Handle.close` marks it closed at once (later ``enter`` calls raise) and releases the raw
handle when the last operation in flight has left, so no call ever reaches the runtime with a
released (or reused) handle, whichever thread closes. ``close`` is idempotent, and a release that
fails warns, never raises.

Finalizers (:func:`own`: ``weakref.finalize``'s mechanism, a weak reference with a callback kept
in a registry, without its Python-level bookkeeping) run on any thread, inside any allocation,
while any lock is held: they only append to a queue (:func:`defer`), which is drained outside
locks and outside graph captures (:func:`drain`), the way numba-cuda defers its deallocations.
A host callback's thread never releases: there a drain does nothing, and a handle whose last
operation leaves there is queued for the next drain on another thread (the runtimes forbid
runtime calls in a host callback; see :mod:`rocmstreams.core.callbacks`).

The in-flight count is a list whose ``append`` / ``pop`` the interpreter makes atomic; the order
``enter``: count, then read ``value``; ``close``: clear ``value``, then read the count, makes
every operation either see the handle closed or be counted before the close looks.
"""
from __future__ import annotations

import collections
import threading
import warnings
import weakref
from typing import Callable, Protocol

from ..errors import RocmStreamsError, StreamClosedError
from .callbacks import on_callback_thread, running

__all__ = ["Handle", "Closable", "Finalizer", "own", "defer", "drain", "pending", "release_queue",
           "block_releases", "unblock_releases"]


class Closable(Protocol):
    def close(self) -> None: ...


class Handle:
    """Owns one raw handle; released once, after the last operation in flight.

    Parameters
    ----------
    value : int
        The raw handle.
    release : callable or None
        ``release(value)``; None for a borrowed handle, which is only detached.
    what : str
        What the handle is, for messages ("RocmStream", "Event", ...).
    closed_error : type
        Raised by :meth:`enter` once closed.
    """

    __slots__ = ("value", "users", "release", "what", "closed_error", "_token", "__weakref__")

    def __init__(self, value: int, release: Callable[[int], None] | None, what: str,
                 closed_error: type[RocmStreamsError] = StreamClosedError) -> None:
        self.value: int | None = value
        self.users: list[None] = []
        self.release = release
        self.what = what
        self.closed_error = closed_error
        self._token = [value]  # popped once: whoever pops it releases

    @property
    def closed(self) -> bool:
        return self.value is None

    def closed_message(self) -> str:
        return f"this {self.what} is closed; create a new {self.what}"

    def enter(self) -> int:
        """The raw handle, counted in use until :meth:`leave`; raises once closed."""
        self.users.append(None)
        value = self.value
        if value is None:
            self.leave()
            raise self.closed_error(self.closed_message())
        return value

    def leave(self) -> None:
        self.users.pop()
        if self.value is None and not self.users:
            self.finish()

    def close(self) -> None:
        """Mark closed now; release once no operation is in flight. Idempotent; warns on a
        failed release, never raises."""
        if self.value is None:
            return
        self.value = None
        if not self.users:
            self.finish()

    def finish(self) -> None:
        """Release the raw handle, once (whoever calls first); only once it is closed and no
        operation is in flight. On a host callback's thread it is queued for the next drain."""
        if running and on_callback_thread():
            defer(_Finish(self))
            return
        try:
            value = self._token.pop()
        except IndexError:
            return  # released already (or by another thread)
        release, self.release = self.release, None
        if release is None:
            return
        try:
            release(value)
        except Exception as exc:  # noqa: BLE001 - cleanup must not raise
            _warn(f"rocmstreams: releasing {self.what} {value:#x} failed: {exc}")


class _Finish:
    """A release due on a host callback's thread, left to the next drain."""

    __slots__ = ("handle",)

    def __init__(self, handle: Handle) -> None:
        self.handle = handle

    def close(self) -> None:
        self.handle.finish()


def _warn(message: str) -> None:
    try:
        warnings.warn(message, ResourceWarning, stacklevel=3)
    except Exception:  # noqa: BLE001 - warnings can fail at interpreter exit
        pass


# ---- deferred releases -------------------------------------------------------------------------
_pending: collections.deque[Closable] = collections.deque()
_blocked: list[None] = []  # one entry per open graph capture: releases would invalidate it
_draining = threading.Lock()


def defer(obj: Closable) -> None:
    """Queue ``obj.close()`` for the next :func:`drain`: the body of every finalizer. Takes no
    lock and calls no runtime."""
    _pending.append(obj)


#: What each live finalizer closes once its owner is collected (dict set and pop are atomic).
_owned: dict["Finalizer", Closable] = {}


class Finalizer(weakref.ref):
    """The weak reference :func:`own` registers; :meth:`detach` cancels it (an explicit close).

    It lives in the registry, not in its owner, so that an owner collected in a reference cycle
    still runs it (the collector skips callbacks of weak references that are garbage too). Its
    hash and equality are its identity, which stay valid after the owner is gone."""

    __slots__ = ()
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def detach(self) -> None:
        _owned.pop(self, None)


def _collected(ref: Finalizer) -> None:
    """The callback of every :class:`Finalizer`: hand its object to the queue; no lock, no
    runtime call, never raises (it runs wherever the collector runs)."""
    try:
        obj = _owned.pop(ref, None)
        if obj is not None:
            defer(obj)
    except Exception:  # noqa: BLE001 - at interpreter exit the module's globals may be gone
        pass


def own(owner: object, obj: Closable) -> Finalizer:
    """Close ``obj`` (through the queue) once ``owner`` is collected; ``obj`` must not refer to
    ``owner``. The returned finalizer is detached by an explicit close."""
    ref = Finalizer(owner, _collected)
    _owned[ref] = obj
    return ref


def pending() -> int:
    """How many releases wait for the next drain."""
    return len(_pending)


def release_queue() -> "collections.deque[Closable]":
    """The queue itself, for a compiled door that checks it is empty without a call."""
    return _pending


def block_releases() -> None:
    """A graph capture begins: hold deferred releases (a free would invalidate it)."""
    _blocked.append(None)


def releases_blocked() -> bool:
    """True while a graph capture is open (releases wait; so must anything that would query
    or synchronize a stream, which a capture in global mode refuses)."""
    return bool(_blocked)


def unblock_releases() -> None:
    _blocked.pop()


def drain() -> None:
    """Run the deferred releases; called by user calls outside every lock of rocmstreams (object
    creation, close, synchronize), never by a finalizer. Does nothing while a capture is open,
    while another thread drains, or on a host callback's thread."""
    if not _pending or _blocked or (running and on_callback_thread()):
        return
    if not _draining.acquire(blocking=False):
        return
    try:
        while _pending and not _blocked:  # only the drain pops: a non-empty queue stays so
            obj = _pending.popleft()
            try:
                obj.close()
            except Exception as exc:  # noqa: BLE001 - a release never raises into user code
                _warn(f"rocmstreams: a deferred release failed: {exc}")
    finally:
        _draining.release()

