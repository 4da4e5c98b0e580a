"""Event: a marker in a stream's work, for waits, completion checks and timing."""
from __future__ import annotations

import warnings
import weakref
from typing import TYPE_CHECKING

from .backends import LEGACY_STREAM, Backend, backend
from .device import check_device, using_device
from .errors import (EventNotReadyError, EventNotRecordedError, EventTimingDisabledError,
                     StreamClosedError)

if TYPE_CHECKING:
    from .stream import RocmStream

__all__ = ["Event"]


def _destroy(be: Backend, handle: int) -> None:
    try:
        be.event_destroy(handle)
    except Exception as exc:  # noqa: BLE001 - cleanup must not raise
        warnings.warn(f"rocmstreams: destroying event {handle:#x} failed: {exc}",
                      ResourceWarning, stacklevel=2)


class Event:
    """A point in a stream's work.

    Parameters
    ----------
    timing : bool, default False
        Record timestamps, so that :meth:`elapsed_time` works (costs a little at record time).
    device : int, optional
        Device ordinal; the current device when omitted.
    """

    __slots__ = ("_backend", "_handle", "_device", "_timing", "_recorded", "_finalizer",
                 "_record", "_legacy", "_ok", "__weakref__")

    def __init__(self, *, timing: bool = False, device: int | None = None) -> None:
        if not isinstance(timing, bool):
            raise TypeError(f"timing must be True or False, got {timing!r}")
        ordinal = check_device(device)
        be = backend()
        with using_device(ordinal):
            handle = be.event_create(timing)
        self._backend = be
        self._handle: int | None = handle
        self._device = ordinal
        self._timing = timing
        self._recorded = False
        self._finalizer = weakref.finalize(self, _destroy, be, handle)
        # the runtime's record bound to this event: ``record(stream object)``, the hot path
        self._record = be.bind_event(handle)
        self._legacy = be.stream_object(LEGACY_STREAM)
        self._ok = be.success

    def _live(self) -> int:
        if self._handle is None:
            raise StreamClosedError("this Event is closed; create a new Event")
        return self._handle

    @property
    def handle(self) -> int:
        """The raw ``hipEvent_t`` / ``cudaEvent_t`` address."""
        return self._live()

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
        return self._handle is None

    def record(self, stream: "RocmStream | None" = None) -> "Event":
        """Mark the work queued so far on ``stream`` (the legacy default stream when omitted).

        Raises
        ------
        CaptureError
            ``stream`` is capturing a graph (events inside a capture are not supported).
        """
        record = self._record
        if record is None:
            self._live()
        if stream is None:
            result = record(self._legacy)
        else:
            target = stream._stream_obj
            if target is None:
                target = stream._bind()[2]
            if stream._capture is not None:
                from .stream import _event_in_capture
                raise _event_in_capture()
            result = record(target)
        if result[0] is not self._ok:
            self._backend.event_record_result(result, self._handle,
                                              LEGACY_STREAM if stream is None else stream._handle)
        self._recorded = True
        return self

    def query(self) -> bool:
        """True when the work before the last record has finished (or it was never recorded)."""
        return self._backend.event_query(self._live())

    def synchronize(self) -> None:
        """Block until the work before the last record has finished."""
        self._backend.event_synchronize(self._live())

    def elapsed_time(self, end: "Event") -> float:
        """Milliseconds from this event to ``end``; both must be timing events, recorded, done.

        Raises
        ------
        EventTimingDisabledError, EventNotRecordedError, EventNotReadyError
        """
        start_handle, end_handle = self._live(), end._live()
        for ev in (self, end):
            if not ev._timing:
                raise EventTimingDisabledError(
                    "elapsed_time needs events created with timing=True "
                    "(Event(timing=True) or stream.record(timing=True))")
            if not ev._recorded:
                raise EventNotRecordedError(
                    "elapsed_time needs both events recorded: call event.record(stream) first")
        for ev in (self, end):
            if not self._backend.event_query(ev._handle):
                raise EventNotReadyError("the work before an event is still running; call "
                                         "end.synchronize() before asking for elapsed time")
        return self._backend.event_elapsed_time(start_handle, end_handle)

    def close(self) -> None:
        """Destroy the event; idempotent."""
        if self._handle is None:
            return
        self._handle = None
        self._record = None
        self._finalizer()

    def __repr__(self) -> str:
        if self._handle is None:
            return "<Event closed>"
        state = "recorded" if self._recorded else "unrecorded"
        return (f"<Event handle={self._handle:#x} device={self._device} timing={self._timing} "
                f"{state} backend={self._backend.name}>")
