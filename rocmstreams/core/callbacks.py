"""Host callbacks as the rest of the package sees them: whether the calling thread is running one.

A host callback (``launch_host_func``, ``add_callback``) runs on a thread of the runtime (or of
the cpu backend's stream workers) while the stream waits for it. The runtimes forbid runtime
calls there (CUDA: "host functions must not make CUDA API calls"; the call may deadlock, or fail
with ``cudaErrorNotPermitted``), and a wait there would wait for the callback itself. So every
public call that reaches the runtime starts with :func:`refuse`, and releases a callback thread
would run (:mod:`rocmstreams.core.lifetime`) wait for the next drain on another thread instead.

The cost outside callbacks is one truth test of :data:`running` (a module list, empty unless a
callback runs somewhere); only then is the thread-local flag read.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from ..errors import RocmStreamsError

__all__ = ["running", "on_callback_thread", "refuse", "wrap"]

#: One entry per host callback running now, on any thread (append and pop are atomic).
running: list[None] = []
_thread = threading.local()


def on_callback_thread() -> bool:
    """True on a thread that is running a host callback now."""
    return bool(running) and getattr(_thread, "active", False)


def refuse(what: str) -> None:
    """Raise when called from a host callback, before ``what`` reaches the runtime."""
    if running and getattr(_thread, "active", False):
        raise RocmStreamsError(
            f"{what} was called from inside a host callback; callbacks must not call the GPU "
            "runtime (no stream, event, memory or graph calls): do it on the thread that "
            "queued the callback, after the stream passes it (stream.synchronize(), or an "
            "Event recorded after the callback), or signal that thread from the callback "
            "(e.g. a threading.Event)")


def wrap(fn: Callable[..., Any], args: tuple,
         errors: list[tuple[Callable[..., Any], BaseException]]) -> Callable[[], None]:
    """``fn(*args)`` as the runtime calls it: marked as a callback on its thread while it runs,
    its exception appended to ``errors`` (it never raises)."""
    def call() -> None:
        outer = getattr(_thread, "active", False)
        _thread.active = True
        running.append(None)
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - delivered at synchronize()
            errors.append((fn, exc))
        finally:
            running.pop()
            _thread.active = outer
    return call
