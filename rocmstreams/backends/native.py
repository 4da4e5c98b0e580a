"""The compiled hot calls: whether they are built, their switch, and a runtime library's entry
points for them.

``native_calls`` (built from ``native_calls.c`` by ``pip install`` where a C compiler and Python's
headers exist) calls C function pointers bound to what stays fixed: a stream's query, synchronize
and event record, a prepared kernel's launch. It returns the runtime's status; the backend answers
success itself and hands every other status to the binding's own call, which raises the runtime's
error through the backend's one choke point. Where the extension is not built, or
``ROCMSTREAMS_NATIVE_CALLS=0`` was set when rocmstreams was imported (the extension is then left
out of the process), every call goes through the binding, as it always can.
"""
from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, Callable

try:
    from . import native_calls as _extension
except ImportError:  # not built: no C compiler or headers at install time
    _extension = None  # type: ignore[assignment]

__all__ = ["EntryPoints", "LaunchBinder", "built", "allowed_by_environment", "enabled",
           "set_enabled", "entry_points", "launch_binder", "handle_call", "handle_pair_call",
           "stream_door"]


def allowed_by_environment() -> bool:
    """False where ``ROCMSTREAMS_NATIVE_CALLS`` is 0, off, false or no."""
    value = os.environ.get("ROCMSTREAMS_NATIVE_CALLS", "").strip().lower()
    return value not in ("0", "off", "false", "no")


#: The extension where it is built and the environment allows it, else None.
compiled = _extension if allowed_by_environment() else None

#: ``bind(function, params, extra)``: the compiled launch of one kernel function with one
#: parameter buffer, called as ``(gx, gy, gz, bx, by, bz, shared, raw stream)`` -> status.
LaunchBinder = Callable[[Any, "int | None", Any], Callable[..., int]]


@dataclass(frozen=True)
class EntryPoints:
    """Addresses of a runtime library's C calls: ``int query(stream)``, ``int synchronize(
    stream)``, ``int record(event, stream)``, and the kernel launch with cuLaunchKernel's
    signature; ``not_ready`` is the library's status for work still running."""

    stream_query: int
    stream_synchronize: int
    event_record: int
    launch_kernel: int
    not_ready: int = 600


#: True in a process forked from the one that loaded the compiled calls (they stay off there).
_forked = False


def _after_fork_in_child() -> None:
    """A forked child calls the runtime through the binding: on the H200 the driver's
    cuStreamQuery answered success in a child of a process that had initialised CUDA, where
    the runtime's call reports the fork (and rocmstreams says to use 'spawn')."""
    global _forked
    set_enabled(False)
    _forked = True  # and stays off: a configure() in the child must not turn it back on


def built() -> bool:
    """Whether the extension was built and imports."""
    return _extension is not None


def enabled() -> bool:
    """Whether the compiled calls are built and turned on."""
    return compiled is not None and compiled.enabled()


def set_enabled(on: bool) -> None:
    """Turn the compiled calls on or off for the whole process (off: every bound call returns
    ``NOT_CALLED`` at once, so the backend makes the binding's call)."""
    if compiled is not None:
        compiled.set_enabled(bool(on) and not _forked)


def entry_points(library: Callable[[], Any], names: tuple[str, str, str, str],
                 not_ready: int = 600) -> EntryPoints | None:
    """The addresses of ``names`` (query, synchronize, record, launch) in the ctypes library
    ``library()`` returns; None where the extension is not built, or the library does not load
    or lacks one of them."""
    if compiled is None:
        return None
    try:
        lib = library()
        addresses = [ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in names]
    except Exception:  # noqa: BLE001 - no library, no symbol, anything: the binding's calls
        return None
    if not all(addresses):
        return None
    query, sync, record, launch = (int(a) for a in addresses)  # type: ignore[arg-type]
    return EntryPoints(query, sync, record, launch, not_ready)


def launch_binder(points: EntryPoints | None) -> LaunchBinder | None:
    """What a KernelDriver's ``bind_launch`` is for these entry points (None: none)."""
    if compiled is None or points is None:
        return None
    launch_kernel, kernel_launch = points.launch_kernel, compiled.KernelLaunch

    def bind(function: Any, params: int | None, extra: Any) -> Callable[..., int]:
        return kernel_launch(launch_kernel, int(function), params or 0, extra or 0)

    return bind


def handle_call(fn: int, handle: int) -> Callable[[], int]:
    """``fn(handle)`` compiled and bound (the extension must be built)."""
    assert compiled is not None
    return compiled.HandleCall(fn, handle)


def handle_pair_call(fn: int, second: int) -> Callable[[int], int]:
    """``fn(first, second)`` compiled and bound to ``second``."""
    assert compiled is not None
    return compiled.HandlePairCall(fn, second)


def stream_door(points: EntryPoints, stream: int, calls: Any, slow: Any, running: list,
                tracers: list, pending: Any) -> Any:
    """The compiled door of one stream (raw handle ``stream``): ``query(core)``,
    ``synchronize(core, timeout=None)``, ``record_event(core, event_handle)`` and ``submit(core,
    kind, fn, *args)`` make the checks of ``slow``'s methods of the same names (the stream
    core's door) and count the operation in flight in C; anything else, and every status but
    success (not-ready, for a query), they hand to ``slow``'s method. ``fn`` is called with
    ``calls``; ``running``, ``tracers`` and ``pending`` are the lists (a deque) whose emptiness
    the fast path needs: host callbacks running, open traces, deferred releases."""
    assert compiled is not None
    return compiled.StreamDoor(points.stream_query, points.event_record, stream,
                               points.not_ready, calls, slow, running, tracers, pending)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
