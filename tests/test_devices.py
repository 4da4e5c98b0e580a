"""Invalid devices are refused before any runtime call, naming the valid ordinals."""
import numpy as np
import pytest

import rocmstreams as rs


def _bad_devices():
    return [-1, rs.device_count(), rs.device_count() + 5, "0", 1.5, True, None.__class__]


@pytest.mark.parametrize("make", [
    lambda d: rs.RocmStream(device=d),
    lambda d: rs.Event(device=d),
    lambda d: rs.empty(8, np.float32, device=d),
    lambda d: rs.priority_range(d),
], ids=["stream", "event", "empty", "priority_range"])
def test_invalid_device_is_refused_naming_the_valid_ordinals(make):
    before = rs.backend().live_handles()
    for bad in _bad_devices():
        with pytest.raises(rs.InvalidDeviceError, match="valid ordinal") as info:
            make(bad)
        assert isinstance(info.value, ValueError)
    assert rs.backend().live_handles() == before


def test_device_zero_and_the_current_device_are_accepted(make_stream):
    s = make_stream(device=0)
    assert s.device == 0
    assert rs.device_count() >= 1
