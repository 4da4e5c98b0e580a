"""The stream core: one :class:`StreamCore` per stream, and its door.

Every operation on a stream reaches the runtime through :meth:`StreamCore.submit` (work: kernel
launches, copies, host callbacks, event records and waits, graph launches) or one of the waits
(:meth:`StreamCore.query`, :meth:`StreamCore.synchronize`) and capture calls beside it. The door
checks, once per operation, that the stream is open and what its capture state allows; keeps
alive what the runtime still reads (a graph capture keeps the arguments of captured work); counts
the operation in flight, so that a concurrent :meth:`close` releases the handle only after it
(see :class:`rocmstreams.core.lifetime.Handle`); and calls the backend's bound calls.

Public objects reach a stream's core through the ``__rocmstreams_core__`` attribute
(:func:`core_of`), the protocol every RocmStream carries.
"""
from __future__ import annotations

import concurrent.futures
import numbers
import os
import threading
import time
from typing import Any, Callable, Protocol, TypeVar, cast

from .backends import LEGACY_STREAM, PER_THREAD_STREAM, Backend, StreamCalls, active
from .core import lifetime
from .core.callbacks import refuse, running, wrap
from .core.device import using_device
from .core.lifetime import Handle
from .errors import CallbackError, CaptureError, RocmStreamsError, StreamClosedError, WaitTimeoutError

__all__ = ["StreamCore", "Capture", "core_of", "default_core", "wait_blocking",
           "release_when_done", "check_timeout", "tracers", "Tracer", "LAUNCH", "COPY",
           "HOST_FUNC", "RECORD", "WAIT", "GRAPH_LAUNCH"]

T = TypeVar("T")

# What an operation is: work a capture records, and work it refuses (named for messages).
LAUNCH, COPY, HOST_FUNC = "a kernel launch", "a copy", "a host callback"
RECORD, WAIT, GRAPH_LAUNCH = "an event record", "a wait", "a graph launch"
_CAPTURED = frozenset((LAUNCH, COPY, HOST_FUNC))
_REFUSED_IN_CAPTURE = {
    RECORD: "events inside a graph capture are not supported: record events and wait on "
            "streams or events before `with stream.capture()` or after it",
    WAIT: "events inside a graph capture are not supported: record events and wait on streams "
          "or events before `with stream.capture()` or after it",
    GRAPH_LAUNCH: "graph.launch() on a stream that is capturing is not supported; launch the "
                  "graph before the capture begins or after it ends",
}

# ---- tracing -----------------------------------------------------------------------------------
class Tracer(Protocol):
    """What an open trace offers the door: ``begin`` before an operation is queued (returns
    what ``end`` takes), ``end`` after."""

    def begin(self, core: "StreamCore", kind: str, fn: Any, args: tuple) -> Any: ...
    def end(self, core: "StreamCore", token: Any) -> None: ...


#: The open traces (rocmstreams.trace adds and removes them); empty, the door pays one check.
tracers: list[Tracer] = []


# ---- host callbacks ----------------------------------------------------------------------------
def _callback_error(errors: list[tuple[Callable[..., Any], BaseException]]) -> CallbackError:
    """The first callback error, counting the others; empties ``errors``."""
    taken = []
    while errors:
        try:
            taken.append(errors.pop(0))
        except IndexError:
            break
    fn, exc = taken[0]
    name = getattr(fn, "__qualname__", repr(fn))
    more = "" if len(taken) == 1 else f" (and {len(taken) - 1} more callbacks raised since)"
    err = CallbackError(f"host callback {name} raised {type(exc).__name__}: {exc}{more}")
    err.__cause__ = exc
    return err


# ---- waits -------------------------------------------------------------------------------------
def check_timeout(timeout: Any) -> None:
    """Refuse a ``timeout=`` that is not None or a non-negative number of seconds."""
    if timeout is None:
        return
    # cast: typeshed's numbers.Real declares no >= (every real number compares with 0)
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or \
            not cast(float, timeout) >= 0:
        raise ValueError(f"timeout must be a non-negative number of seconds or None, got "
                         f"{timeout!r}")


_waiters = concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="rocmstreams-wait")


def _new_waiters() -> None:
    """A forked child has none of the parent's threads: a fresh waiter pool."""
    global _waiters
    _waiters = concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="rocmstreams-wait")


os.register_at_fork(after_in_child=_new_waiters)
_SPIN_QUERIES = 8
_SLICE = 0.02  # seconds a wait sleeps between checks for signals


def wait_blocking(query: Callable[[], bool], block: Callable[[], None], timeout: float | None,
                  what: str, holder: Handle) -> None:
    """Wait for ``query()`` to turn True, interruptibly, ``timeout`` seconds at most.

    A few queries first (short waits end at query latency); then ``block()``, the runtime's
    blocking wait, runs on a waiter thread that holds ``holder`` in use, while this thread
    waits on a lock, which a signal interrupts (KeyboardInterrupt within milliseconds) and a
    timeout ends (:class:`~rocmstreams.errors.WaitTimeoutError`). Either way the stream (or
    event) stays usable, and the runtime wait ends on its own when the work does.
    """
    for _ in range(_SPIN_QUERIES):
        if query():
            return
    holder.enter()  # the waiter's own use of the handle, left when the runtime wait returns
    done = threading.Event()
    failure: list[BaseException] = []

    def job() -> None:
        try:
            block()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failure.append(exc)
        finally:
            done.set()
            holder.leave()

    try:
        _waiters.submit(job)
    except BaseException:
        holder.leave()
        raise
    # Wait in short slices: a signal the OS delivers to another thread does not interrupt a
    # lock wait of this one, but each slice's end runs the signal handlers (Ctrl-C) here.
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done.wait(_SLICE if deadline is None
                        else max(0.0, min(_SLICE, deadline - time.monotonic()))):
        if deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeoutError(f"{what} timed out after {timeout} s: the work is still "
                                   "running and stays queued; wait again, or query() to poll")
    if failure:
        raise failure[0]


def release_when_done(block: Callable[[], None], holders: list[Handle]) -> None:
    """Close ``holders`` now and release their handles once ``block()``, the runtime's blocking
    wait for the work that still uses them, has returned on a waiter thread; never waits here.

    What a wait that is given up (Ctrl-C) leaves behind is released this way: never while the
    device may still use it, never leaked.
    """
    for holder in holders:
        holder.enter()  # left when the runtime wait returns: only then is a handle released

    def job() -> None:
        try:
            block()
        except BaseException:  # noqa: BLE001 - a failed wait still ends the use; release
            pass
        finally:
            for holder in holders:
                holder.leave()

    try:
        _waiters.submit(job)
    except RuntimeError:  # the waiter pool is shut down (interpreter exit): wait here
        job()
    for holder in holders:
        holder.close()


class Capture:
    """An open graph capture as the door sees it: what captured work must keep alive, and where
    captured callbacks put their errors."""

    __slots__ = ("kept", "errors", "has_callbacks")

    def __init__(self, kept: list[Any]) -> None:
        self.kept = kept
        self.errors: list[tuple[Callable[..., Any], BaseException]] = []
        self.has_callbacks = False


class StreamCore(Handle):
    """One stream: its handle (owned or borrowed), device, bound runtime calls, capture state and
    callback errors, and the door every operation passes.

    Parameters
    ----------
    backend : Backend
    handle : int
        The raw stream handle.
    device : int
    owned : bool
        True: released through the backend (pooled or destroyed) when closed.
    owner : object
        Kept alive as long as the stream (a borrowed stream's foreign owner).
    """

    __slots__ = ("backend", "device", "calls", "owned", "owner", "capture", "callback_errors",
                 "door")

    def __init__(self, backend: Backend, handle: int, device: int, owned: bool,
                 owner: object = None) -> None:
        Handle.__init__(self, handle, backend.stream_destroy if owned else None, "RocmStream")
        self.backend = backend
        self.device = device
        self.calls: StreamCalls = backend.stream_calls(handle)
        if handle in (LEGACY_STREAM, PER_THREAD_STREAM) and backend.get_device_count() > 1:
            # handles 0 and 2 name the default streams of whichever device is current
            self.calls = OnDevice(self.calls, device)
        #: What the public objects call the hot operations through, the core first:
        #: ``door.query(core)``, ``door.synchronize(core, timeout)``, ``door.record_event(core,
        #: event_handle)``, ``door.submit(core, kind, fn, *args)``. The stream's compiled door
        #: where its calls offer one (the same checks and count, made in C; anything else it
        #: hands to these methods of StreamCore), else StreamCore itself.
        bind_door = getattr(self.calls, "bind_door", None)
        self.door: Any = StreamCore if bind_door is None else bind_door(
            StreamCore, running, tracers, lifetime.release_queue())
        self.owned = owned
        self.owner = owner
        self.capture: Capture | None = None
        self.callback_errors: list[tuple[Callable[..., Any], BaseException]] = []

    def closed_message(self) -> str:
        return "this RocmStream is closed; create a new RocmStream"

    # ---- the door ----------------------------------------------------------------------------
    def submit(self, kind: str, fn: Callable[..., T], *args: Any) -> T:
        """Queue one operation: ``fn(calls, *args)`` with the stream's bound calls.

        Raises StreamClosedError on a closed stream and CaptureError for what a capture
        refuses, and RocmStreamsError from a host callback, before ``fn`` runs; in a capture,
        ``args`` stay alive as long as the graph.
        """
        if running:
            refuse(kind)
        users = self.users
        users.append(None)
        try:
            if self.value is None:
                raise StreamClosedError(self.closed_message())
            capture = self.capture
            if capture is not None:
                if kind not in _CAPTURED:
                    raise CaptureError(_REFUSED_IN_CAPTURE[kind])
                capture.kept.append(args)
            if tracers and capture is None:
                return self._traced(kind, fn, args)
            return fn(self.calls, *args)
        finally:
            users.pop()
            if self.value is None and not users:
                self.finish()

    def check(self, kind: str) -> None:
        """Raise now what :meth:`submit` would raise for an operation of ``kind`` (closed
        stream, capture state, a host callback), before the caller prepares one (e.g. creates an
        event)."""
        if running:
            refuse(kind)
        self.enter()
        self.leave()
        if self.capture is not None and kind not in _CAPTURED:
            raise CaptureError(_REFUSED_IN_CAPTURE[kind])

    def record(self, event: int) -> None:
        """Record ``event`` after the work queued so far (the door written out: a hot path)."""
        if running:
            refuse(RECORD)
        if tracers:
            self.submit(RECORD, type(self.calls).event_record, event)
            return
        users = self.users
        users.append(None)
        try:
            if self.value is None:
                raise StreamClosedError(self.closed_message())
            if self.capture is not None:
                raise CaptureError(_REFUSED_IN_CAPTURE[RECORD])
            self.calls.event_record(event)
        finally:
            users.pop()
            if self.value is None and not users:
                self.finish()

    def record_event(self, holder: Handle) -> None:
        """Record the event whose handle ``holder`` owns (Event.record), its handle in use for
        the call: the door for the event and the stream written out, as :meth:`record`."""
        if tracers:
            traced = holder.enter()
            try:
                self.submit(RECORD, type(self.calls).event_record, traced)
            finally:
                holder.leave()
            return
        held, users = holder.users, self.users
        held.append(None)
        users.append(None)
        try:
            event = holder.value
            if event is None:
                raise StreamClosedError(holder.closed_message())
            if self.value is None:
                raise StreamClosedError(self.closed_message())
            if self.capture is not None:
                raise CaptureError(_REFUSED_IN_CAPTURE[RECORD])
            if running:
                refuse(RECORD)
            self.calls.event_record(event)
        finally:
            users.pop()
            if self.value is None and not users:
                self.finish()
            held.pop()
            if holder.value is None and not held:
                holder.finish()

    def _traced(self, kind: str, fn: Callable[..., T], args: tuple) -> T:
        tokens = [(t, t.begin(self, kind, fn, args)) for t in list(tracers)]
        try:
            return fn(self.calls, *args)
        finally:
            for t, token in tokens:
                t.end(self, token)

    def add_callback(self, fn: Callable[..., Any], args: tuple) -> None:
        """Queue ``fn(*args)`` on a host thread after earlier work; its exception is raised by
        the next :meth:`synchronize` (of the stream a captured callback's graph replays on)."""
        capture = self.capture
        if capture is not None:
            capture.has_callbacks = True
        errors = self.callback_errors if capture is None else capture.errors
        self.submit(HOST_FUNC, _launch_host_func, wrap(fn, args, errors))

    def query(self) -> bool:
        """True when the stream is idle (the hot path: the door written out)."""
        if running:
            refuse("query()")
        users = self.users
        users.append(None)
        try:
            if self.value is None:
                raise StreamClosedError(self.closed_message())
            if self.capture is not None:
                raise _capturing("query()")
            return self.calls.query()
        finally:
            users.pop()
            if self.value is None and not users:
                self.finish()

    def synchronize(self, timeout: float | None = None) -> None:
        """Wait until the stream is idle; interruptible, ``timeout`` seconds at most (the door
        written out: a synchronize of an idle stream is a hot path)."""
        if running:
            refuse("synchronize()")
        if timeout is not None:
            check_timeout(timeout)
        # releases run before the wait, not after: the frees of arrays dropped so far are
        # queued on their streams, and the stream is idle when this returns
        lifetime.drain()
        users = self.users
        users.append(None)
        try:
            if self.value is None:
                raise StreamClosedError(self.closed_message())
            if self.capture is not None:
                raise _capturing("synchronize()")
            calls = self.calls
            if not calls.query():
                if self.value == PER_THREAD_STREAM:
                    self._wait_per_thread(timeout)
                else:
                    wait_blocking(calls.query, calls.synchronize, timeout, "synchronize()",
                                  self)
        finally:
            users.pop()
            if self.value is None and not users:
                self.finish()
        if self.callback_errors:
            raise _callback_error(self.callback_errors)

    def _wait_per_thread(self, timeout: float | None) -> None:
        """The per-thread default stream is the calling thread's: mark its work here with an
        event, and let the waiter thread wait for the event."""
        be = self.backend
        event = Handle(be.event_create(False), be.event_destroy, "Event")
        try:
            self.calls.event_record(event.value)  # type: ignore[arg-type]
            handle: int = event.value  # type: ignore[assignment]
            wait_blocking(lambda: be.event_query(handle), lambda: be.event_synchronize(handle),
                          timeout, "synchronize()", event)
        finally:
            event.close()

    # ---- capture -----------------------------------------------------------------------------
    def _refuse_uncapturable(self) -> None:
        """Raise what a capture may not begin on (the caller has entered the handle)."""
        if self.value == LEGACY_STREAM:
            raise CaptureError("the legacy default stream (handle 0) cannot be captured; "
                               "capture a stream you created, e.g. RocmStream(non_blocking=True)")
        if self.capture is not None:
            raise CaptureError("this stream is already capturing a graph and captures do not "
                               "nest; end the open capture (leave its `with stream.capture()` "
                               "block) first")

    def check_capturable(self) -> None:
        """Raise now what :meth:`begin_capture` would refuse: a closed stream, the legacy
        default stream, a stream already capturing, a host callback."""
        if running:
            refuse("capture()")
        self.enter()
        try:
            self._refuse_uncapturable()
        finally:
            self.leave()

    def begin_capture(self, kept: list[Any]) -> Capture:
        if running:
            refuse("capture()")
        self.enter()
        try:
            self._refuse_uncapturable()
            capture = Capture(kept)
            lifetime.block_releases()
            try:
                self.calls.begin_capture()
            except BaseException:
                lifetime.unblock_releases()
                raise
            self.capture = capture
            return capture
        finally:
            self.leave()

    def end_capture(self) -> int:
        """End the open capture; the recorded graph's handle (raises CaptureError for an
        invalidated capture, which still ends it)."""
        self.users.append(None)
        try:
            self.capture = None
            try:
                return self.calls.end_capture()
            finally:
                lifetime.unblock_releases()
        finally:
            self.users.pop()
            if self.value is None and not self.users:
                self.finish()

    # ---- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        if self.value is None:
            return
        if self.capture is not None:
            raise CaptureError("cannot close a stream while it is capturing a graph; leave the "
                               "`with stream.capture()` block first")
        self.owner = None
        Handle.close(self)


class OnDevice:
    """The calls of a default stream of one device: each made with that device current (the
    runtime reads handles 0 and 2 as the current device's default streams)."""

    __slots__ = ("handle", "device", "_calls")

    def __init__(self, calls: StreamCalls, device: int) -> None:
        self.handle, self.device, self._calls = calls.handle, device, calls

    def _on(self, name: str, *args: Any) -> Any:
        with using_device(self.device):
            return getattr(self._calls, name)(*args)

    def query(self) -> bool:
        return cast(bool, self._on("query"))

    def synchronize(self) -> None:
        self._on("synchronize")

    def event_record(self, event: int) -> None:
        self._on("event_record", event)

    def wait_event(self, event: int) -> None:
        self._on("wait_event", event)

    def memcpy_async(self, dst: int, src: int, nbytes: int) -> None:
        self._on("memcpy_async", dst, src, nbytes)

    def memcpy_peer_async(self, dst: int, dst_device: int, src: int, src_device: int,
                          nbytes: int) -> None:
        self._on("memcpy_peer_async", dst, dst_device, src, src_device, nbytes)

    def launch_host_func(self, fn: Callable[[], None]) -> None:
        self._on("launch_host_func", fn)

    def launch_kernel(self, dispatcher: Any, config: tuple, args: Any, arrays: Any) -> None:
        self._on("launch_kernel", dispatcher, config, args, arrays)

    def begin_capture(self) -> None:
        self._on("begin_capture")

    def end_capture(self) -> int:
        return cast(int, self._on("end_capture"))

    def graph_launch(self, graph_exec: int) -> None:
        self._on("graph_launch", graph_exec)


def _capturing(what: str) -> CaptureError:
    return CaptureError(f"{what} is not allowed while the stream is capturing a graph: its work "
                        "is being recorded, not run; end the capture (leave the "
                        "`with stream.capture()` block) first")


def _launch_host_func(calls: StreamCalls, fn: Callable[[], None]) -> None:
    calls.launch_host_func(fn)


def core_of(stream: Any, what: str = "this call") -> StreamCore:
    """The core of a stream argument: a RocmStream (anything carrying
    ``__rocmstreams_core__``), 0 (the legacy default stream), or a foreign stream: any object
    with ``__cuda_stream__`` (numba-cuda, cuda.core, CuPy, PyTorch), borrowed for the call
    (never destroyed, its owner kept alive while queued work needs it), and on the cpu backend a
    Numba simulator stream, which orders nothing and stands for the legacy default stream.
    TypeError for anything else."""
    core = getattr(stream, "__rocmstreams_core__", None)
    if isinstance(core, StreamCore):
        return core
    be = active()
    if type(stream) is int and stream == 0:
        return default_core(be.get_device())
    protocol = getattr(stream, "__cuda_stream__", None)
    if protocol is not None:
        found = protocol() if callable(protocol) else protocol
        if isinstance(found, tuple) and len(found) == 2 and found[0] == 0:
            return StreamCore(be, int(found[1]), be.get_device(), owned=False, owner=stream)
        raise TypeError(f"{type(stream).__name__}.__cuda_stream__() must return (0, handle), "
                        f"got {found!r}")
    if be.numba_stream(LEGACY_STREAM) is None and \
            type(stream).__module__.startswith("numba.cuda.simulator"):
        return default_core(be.get_device())
    raise TypeError(f"{what} takes a RocmStream, 0, or a stream with __cuda_stream__ (numba, "
                    f"cuda.core, CuPy, PyTorch), got {type(stream).__name__} {stream!r}")


_defaults: dict[tuple[int, int, int], StreamCore] = {}


def default_core(device: int, handle: int = LEGACY_STREAM) -> StreamCore:
    """The (never closed) core of the legacy or per-thread default stream of ``device``."""
    be = active()
    key = (id(be), device, handle)
    core = _defaults.get(key)
    if core is None:
        core = _defaults.setdefault(key, StreamCore(be, handle, device, owned=False))
    return core

