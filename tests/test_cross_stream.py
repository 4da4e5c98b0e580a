"""Events and wait() order work across streams; independent streams run meanwhile."""
import time

import numpy as np

import rocmstreams as rs


def _wait_until(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.001)
    return False


def test_s2_waits_on_s1_event_while_an_independent_s3_finishes(latch, stamps, make_stream, rng):
    s1, s2, s3 = (make_stream(non_blocking=True) for _ in range(3))
    x = rng.random(1000)
    d = rs.empty(1000, np.float64)
    back = rs.pinned_empty(1000, np.float64)
    gate = latch().hold(s1)
    stamps.stamp(s1, 1)
    done = s1.record()
    s2.wait(done)
    stamps.stamp(s2, 2)
    s2_ran = []
    s2.launch_host_func(s2_ran.append, True)

    d.copy_from(x, stream=s3)
    d.copy_to_host(back, stream=s3)
    s3_ran = []
    s3.launch_host_func(s3_ran.append, True)
    assert _wait_until(s3.query), "independent stream s3 did not finish while s1 was latched"
    s3.synchronize()
    np.testing.assert_array_equal(back, x)
    assert s3_ran == [True]
    assert not s1.query() and not s2.query() and s2_ran == []

    gate.release()
    s2.synchronize()
    assert s2_ran == [True]
    assert stamps.tags(s1) == [1, 2]


def test_wait_on_a_stream_orders_after_its_queued_work(latch, stamps, make_stream):
    s1, s2 = make_stream(non_blocking=True), make_stream(non_blocking=True)
    gate = latch().hold(s1)
    stamps.stamp(s1, 10)
    s2.wait(s1)
    stamps.stamp(s2, 20)
    assert not s2.query()
    gate.release()
    s2.synchronize()
    s1.synchronize()
    assert stamps.tags(s1) == [10, 20]


def test_wait_accepts_only_events_and_streams(stream):
    import pytest
    with pytest.raises(TypeError, match="Event or a stream"):
        stream.wait(42)
    assert stream.query()
