"""rocmstreams: owned, queryable, closeable GPU streams for Numba kernels, on ROCm and CUDA.

Importing the package touches no GPU; the backend is chosen on first use (see
:func:`rocmstreams.backend`).

Layers, each importing only those below it: ``errors``; ``backends`` (the runtimes behind one
HIP-named interface); ``core`` (devices, the lifetime holder, array interfaces, configuration);
``streamcore`` (the door every stream operation passes); ``event``, ``graph``, ``stream``,
``staging``, ``memory`` (the public objects); ``integrations`` (Numba); this package.
"""
from __future__ import annotations

from .backends import BACKENDS
from .core.config import Config, config, configure
from .core.device import device_count, priority_range
from .core.info import BackendInfo, DeviceInfo, backend
from .errors import (BackendUnavailableError, CallbackError, CaptureError, DeviceMismatchError,
                     EventError,
                     EventNotReadyError, EventNotRecordedError, EventTimingDisabledError,
                     GraphClosedError, InvalidDeviceError, OutOfMemoryError, RocmStreamsError,
                     StreamClosedError, StreamCreationError, SynchronizeError, WaitTimeoutError)
from .event import Event
from .graph import Graph
from .memory import (DeviceArray, copy_async, device_view, empty, empty_cache, empty_like,
                     is_pinned, memory_stats, pinned_empty, to_device)
from .stream import RocmStream, StreamOptions, default_stream, per_thread_default_stream
from .trace import Trace, TraceRecord, range, trace  # noqa: A004 - rs.range, NVTX's name
from .integrations import numba as _numba  # noqa: F401  (registers the Numba launch hook)
from .integrations.numba import prepare, use_for_numba

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "backend", "BackendInfo", "DeviceInfo", "device_count", "priority_range",
    "Config", "config", "configure",
    "RocmStream", "StreamOptions", "default_stream", "per_thread_default_stream", "Event",
    "Graph",
    "DeviceArray", "empty", "empty_like", "to_device", "pinned_empty", "device_view",
    "copy_async", "is_pinned", "memory_stats", "empty_cache", "prepare", "use_for_numba", "trace", "Trace", "TraceRecord",
    "RocmStreamsError", "BackendUnavailableError", "InvalidDeviceError", "DeviceMismatchError",
    "StreamCreationError",
    "StreamClosedError", "SynchronizeError", "OutOfMemoryError", "EventError",
    "EventTimingDisabledError", "EventNotRecordedError", "EventNotReadyError", "CallbackError",
    "CaptureError", "GraphClosedError", "WaitTimeoutError",
]
