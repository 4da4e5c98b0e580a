"""Every error rocmstreams raises, in one hierarchy.

The base class carries the backend, the runtime's status code, the code's name and the runtime's
own message, and survives pickling (errors cross process boundaries in test runners and pools).
"""
from __future__ import annotations

__all__ = [
    "RocmStreamsError",
    "BackendUnavailableError",
    "InvalidDeviceError",
    "DeviceMismatchError",
    "StreamCreationError",
    "StreamClosedError",
    "SynchronizeError",
    "OutOfMemoryError",
    "EventError",
    "EventTimingDisabledError",
    "EventNotRecordedError",
    "EventNotReadyError",
    "CallbackError",
    "CaptureError",
    "GraphClosedError",
    "WaitTimeoutError",
]


class RocmStreamsError(RuntimeError):
    """Base of every rocmstreams error.

    Parameters
    ----------
    message : str
        What went wrong and what to do about it.
    backend : str, optional
        ``"cuda"``, ``"hip"`` or ``"cpu"`` where a runtime call failed.
    code : int, optional
        The runtime's status code (``cudaError_t`` / ``hipError_t`` value).
    name : str, optional
        The status code's name, e.g. ``"hipErrorOutOfMemory"``.
    runtime_message : str, optional
        The runtime's own description of the code.
    """

    def __init__(self, message: str, *, backend: str | None = None, code: int | None = None,
                 name: str | None = None, runtime_message: str | None = None) -> None:
        self.message = message
        self.backend = backend
        self.code = code
        self.name = name
        self.runtime_message = runtime_message
        super().__init__(self._render())

    def _render(self) -> str:
        if self.code is None:
            return self.message
        detail = f"{self.backend}: {self.name} ({self.code})"
        if self.runtime_message:
            detail += f": {self.runtime_message}"
        return f"{self.message} [{detail}]"

    def __reduce__(self):
        kwargs = dict(backend=self.backend, code=self.code, name=self.name,
                      runtime_message=self.runtime_message)
        return _rebuild, (type(self), self.message, kwargs)


def _rebuild(cls, message, kwargs):
    return cls(message, **kwargs)


class BackendUnavailableError(RocmStreamsError):
    """The requested backend cannot run here; the message says what is missing and how to get it."""


class InvalidDeviceError(RocmStreamsError, ValueError):
    """A device ordinal that is not an int or names no device; raised before any runtime call."""


class DeviceMismatchError(RocmStreamsError, ValueError):
    """An object of one device used with a stream (or object) of another, where the runtime
    cannot do that; raised before anything is queued, naming both devices."""


class StreamCreationError(RocmStreamsError):
    """The runtime refused to create a stream."""


class StreamClosedError(RocmStreamsError):
    """An operation was asked of a stream (or event) that has been closed."""


class SynchronizeError(RocmStreamsError):
    """Waiting for a stream or event failed: work queued on it raised or faulted."""


class OutOfMemoryError(RocmStreamsError, MemoryError):
    """An allocation failed for lack of memory; streams stay usable afterwards."""


class EventError(RocmStreamsError):
    """An event cannot answer what was asked of it."""


class EventTimingDisabledError(EventError):
    """Elapsed time was asked of an event created with ``timing=False``."""


class EventNotRecordedError(EventError):
    """Elapsed time or a wait was asked of an event that was never recorded."""


class EventNotReadyError(EventError):
    """Elapsed time was asked while the work before an event is still running."""


class CallbackError(RocmStreamsError):
    """A host callback raised; its exception is this error's ``__cause__``."""


class CaptureError(RocmStreamsError):
    """Graph capture was misused: a query, synchronize or event on a capturing stream, a nested
    capture, a graph launched inside its own capture, or a capture the runtime invalidated."""


class GraphClosedError(StreamClosedError):
    """An operation was asked of a graph that was closed, or discarded because its capture
    block raised."""


class WaitTimeoutError(RocmStreamsError, TimeoutError):
    """A wait given ``timeout=`` ran out; the work it waited for is still queued, and the stream
    (or event) stays usable."""
