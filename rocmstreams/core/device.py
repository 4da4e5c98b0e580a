"""Device ordinals: checked in Python before any runtime call, and the current-device scope."""
from __future__ import annotations

import itertools
import operator
import threading
from typing import ContextManager, SupportsIndex, cast

import numpy as np

from ..backends import active, on_device
from ..errors import InvalidDeviceError

__all__ = ["device_count", "check_device", "using_device", "priority_range",
           "checked_priority_range", "thread_token"]

_thread = threading.local()
_tokens = itertools.count(1)  # next() on a count is atomic under the GIL


def thread_token() -> int:
    """This thread's number, never reused by a later thread (a thread ident can be): the
    per-thread default stream handle names the calling thread's stream, so what was used on it
    remembers which threads' streams those were."""
    token = getattr(_thread, "token", None)
    if token is None:
        token = _thread.token = next(_tokens)
    return token


def device_count() -> int:
    """How many devices the selected backend sees."""
    return active().get_device_count()


def check_device(device: object | None) -> int:
    """Return a valid ordinal for ``device`` (None means the current device).

    Raises
    ------
    InvalidDeviceError
        When ``device`` is not an int or names no device; no runtime call is made with it.
    """
    be = active()
    if device is None:
        return be.get_device()
    if type(device) is int and device == 0:  # the common case, valid on every backend
        return 0
    count = be.get_device_count()
    valid = f"valid ordinals are 0..{count - 1}" if count > 1 else "the only valid ordinal is 0"
    if isinstance(device, (bool, np.bool_)):
        raise InvalidDeviceError(f"device must be an int ordinal, got {device!r}; {valid}")
    try:
        ordinal = operator.index(cast(SupportsIndex, device))  # TypeError when it is not
    except TypeError:
        raise InvalidDeviceError(
            f"device must be an int ordinal, got {type(device).__name__} {device!r}; {valid}"
        ) from None
    if not 0 <= ordinal < count:
        raise InvalidDeviceError(f"device {ordinal} does not exist; {valid}")
    return ordinal


def using_device(ordinal: int) -> ContextManager[None]:
    """Make ``ordinal`` current for the block, restoring the previous device after."""
    return on_device(active(), ordinal)


def priority_range(device: object | None = None) -> tuple[int, int]:
    """``(least, greatest)`` stream priority of ``device``; greatest is numerically lowest."""
    return checked_priority_range(check_device(device))


_PRIORITY_RANGES: dict[tuple[object, int], tuple[int, int]] = {}


def checked_priority_range(ordinal: int) -> tuple[int, int]:
    """The range of a checked ordinal; a device's range never changes, so it is asked once."""
    be = active()
    key = (be, ordinal)
    found = _PRIORITY_RANGES.get(key)
    if found is None:
        with using_device(ordinal):
            found = _PRIORITY_RANGES[key] = be.device_get_stream_priority_range()
    return found
