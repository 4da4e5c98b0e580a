"""rocmstreams: owned, queryable, closeable GPU streams for Numba kernels, on ROCm and CUDA.

Importing the package touches no GPU; the backend is chosen on first use (see
:func:`rocmstreams.backend`).
"""
from __future__ import annotations

from .backends import BACKENDS, backend
from .device import device_count, priority_range
from .errors import (BackendUnavailableError, CallbackError, CaptureError, EventError,
                     EventNotReadyError, EventNotRecordedError, EventTimingDisabledError,
                     GraphClosedError, InvalidDeviceError, OutOfMemoryError, RocmStreamsError,
                     StreamClosedError, StreamCreationError, SynchronizeError)
from .event import Event
from .graph import Graph
from .memory import (DeviceArray, copy_async, device_view, empty, empty_like, is_pinned,
                     pinned_empty, to_device)
from .stream import RocmStream, StreamOptions, default_stream, per_thread_default_stream

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "backend", "device_count", "priority_range",
    "RocmStream", "StreamOptions", "default_stream", "per_thread_default_stream", "Event",
    "Graph",
    "DeviceArray", "empty", "empty_like", "to_device", "pinned_empty", "device_view",
    "copy_async", "is_pinned",
    "RocmStreamsError", "BackendUnavailableError", "InvalidDeviceError", "StreamCreationError",
    "StreamClosedError", "SynchronizeError", "OutOfMemoryError", "EventError",
    "EventTimingDisabledError", "EventNotRecordedError", "EventNotReadyError", "CallbackError",
    "CaptureError", "GraphClosedError",
]
