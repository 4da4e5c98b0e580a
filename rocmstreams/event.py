"""Event: a marker in a stream's work, for waits, completion checks and timing."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generator

from .backends import active
from .core import config as configuration
from .core import lifetime
from .core.callbacks import refuse, running
from .core.device import check_device, using_device
from .core.lifetime import Handle
from .errors import DeviceMismatchError, EventNotReadyError, EventNotRecordedError, \
    EventTimingDisabledError, StreamClosedError
from .streamcore import WAIT, StreamCore, check_timeout, core_of, default_core, wait_blocking

if TYPE_CHECKING:
    from .stream import RocmStream

__all__ = ["Event"]


class Event:
    """A point in a stream's work.

    Parameters
    ----------
    timing : bool, default False
        Record timestamps, so that :meth:`elapsed_time` works (costs a little at record time).
    device : int, optional
        Device ordinal; the current device when omitted.

    Notes
    -----
    ``close()`` destroys the event (idempotent; also done when the event is collected); after
    it every operation raises :class:`~rocmstreams.errors.StreamClosedError`.
    """

    __slots__ = ("_backend", "_handle", "_device", "_timing", "_recorded", "_finalizer",
                 "__weakref__")

    def __init__(self, *, timing: bool = False, device: int | None = None) -> None:
        if running:
            refuse("Event()")
        if not isinstance(timing, bool):
            raise TypeError(f"timing must be True or False, got {timing!r}")
        ordinal = check_device(device)
        be = active()
        lifetime.drain()
        with using_device(ordinal):
            raw = be.event_create(timing)
        self._backend = be
        self._handle = Handle(raw, be.event_destroy, "Event")
        self._device = ordinal
        self._timing = timing
        self._recorded = False
        self._finalizer = lifetime.own(self, self._handle)

    @property
    def handle(self) -> int:
        """The raw ``hipEvent_t`` / ``cudaEvent_t`` address."""
        value = self._handle.value
        if value is None:
            raise StreamClosedError(self._handle.closed_message())
        return value

    @property
    def device(self) -> int:
        """Ordinal of the device the event belongs to."""
        return self._device

    @property
    def timing(self) -> bool:
        """Whether the event records timestamps."""
        return self._timing

    @property
    def is_recorded(self) -> bool:
        """Whether :meth:`record` has run at least once."""
        return self._recorded

    @property
    def is_closed(self) -> bool:
        return self._handle.value is None

    def record(self, stream: "RocmStream | None" = None) -> "Event":
        """Mark the work queued so far on ``stream`` (the legacy default stream when omitted).

        Raises
        ------
        TypeError
            ``stream`` is not a RocmStream.
        DeviceMismatchError
            ``stream`` belongs to another device than the event (a ValueError).
        CaptureError
            ``stream`` is capturing a graph (events inside a capture are not supported).
        """
        if running:
            refuse("Event.record()")
        if stream is None:
            core = default_core(self._device)
        else:
            try:
                core = stream.__rocmstreams_core__
            except AttributeError:
                core = core_of(stream, "Event.record()")
        if core.device != self._device:
            raise DeviceMismatchError(
                f"this event belongs to device {self._device} and the stream to device "
                f"{core.device}: an event records only on a stream of its own device; make the "
                f"event there (Event(device={core.device}) or stream.record()), or record on a "
                f"stream of device {self._device}")
        core.door.record_event(core, self._handle)
        self._recorded = True
        return self

    def wait_on(self, core: StreamCore) -> None:
        """Make ``core``'s later work wait for this event (``RocmStream.wait`` calls it); the
        stream may belong to another device than the event (the runtimes allow it)."""
        event = self._handle.enter()
        try:
            core.submit(WAIT, type(core.calls).wait_event, event)
        finally:
            self._handle.leave()

    def query(self) -> bool:
        """True when the work before the last record has finished (or it was never recorded)."""
        if running:
            refuse("Event.query()")
        event = self._handle.enter()
        try:
            return self._backend.event_query(event)
        finally:
            self._handle.leave()

    def synchronize(self, timeout: float | None = None) -> None:
        """Block until the work before the last record has finished.

        Interruptible (Ctrl-C raises KeyboardInterrupt at once; the event stays usable).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; then :class:`~rocmstreams.errors.WaitTimeoutError`.
        """
        if running:
            refuse("Event.synchronize()")
        check_timeout(timeout)
        event = self._handle.enter()
        be = self._backend
        try:
            if not be.event_query(event):
                wait_blocking(lambda: be.event_query(event), lambda: be.event_synchronize(event),
                              timeout, "Event.synchronize()", self._handle)
            if configuration.release_threshold is not None:  # Config.pool_release_threshold
                be.event_synchronize(event)  # passed: the runtime sees the frees before it
                configuration.trim_pool(self._device)
        finally:
            self._handle.leave()
        lifetime.drain()

    def __await__(self) -> Generator[Any, None, None]:
        """``await event``: wait for the work before the last record without blocking the
        running asyncio loop (a worker thread of the loop waits)."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(None, self.synchronize).__await__()

    def elapsed_time(self, end: "Event") -> float:
        """Milliseconds from this event to ``end``; both must be timing events, recorded, done.

        Raises
        ------
        TypeError
            ``end`` is not an Event.
        EventTimingDisabledError, EventNotRecordedError, EventNotReadyError
        """
        if running:
            refuse("Event.elapsed_time()")
        if not isinstance(end, Event):
            raise TypeError(f"elapsed_time takes the end Event, got {type(end).__name__}")
        start_handle, end_handle = self.handle, end.handle
        for ev in (self, end):
            if not ev._timing:
                raise EventTimingDisabledError(
                    "elapsed_time needs events created with timing=True "
                    "(Event(timing=True) or stream.record(timing=True))")
            if not ev._recorded:
                raise EventNotRecordedError(
                    "elapsed_time needs both events recorded: call event.record(stream) first")
        for ev in (self, end):
            if not ev.query():
                raise EventNotReadyError("the work before an event is still running; call "
                                         "end.synchronize() before asking for elapsed time")
        return self._backend.event_elapsed_time(start_handle, end_handle)

    def close(self) -> None:
        """Destroy the event (once no call on it is in flight); idempotent. Refused in a host
        callback (an event dropped there is released after it)."""
        if running:
            refuse("Event.close()")
        self._handle.close()
        self._finalizer.detach()

    def __reduce__(self) -> Any:
        raise TypeError("an Event belongs to its process and cannot be pickled")

    def __repr__(self) -> str:
        value = self._handle.value
        if value is None:
            return "<Event closed>"
        state = "recorded" if self._recorded else "unrecorded"
        return (f"<Event handle={value:#x} device={self._device} timing={self._timing} "
                f"{state} backend={self._backend.name}>")

