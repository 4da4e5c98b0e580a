"""Event timing and its three error cases."""
import numpy as np
import pytest

import rocmstreams as rs


def test_elapsed_time_between_two_timing_events_is_non_negative(kernels, stream, rng):
    start = stream.record(timing=True)
    d = rs.to_device(rng.random(4096, dtype=np.float32), stream=stream)
    kernels.scale[8, 64, stream](d, np.float32(2), d)
    end = stream.record(timing=True)
    end.synchronize()
    ms = start.elapsed_time(end)
    assert isinstance(ms, float) and ms >= 0.0


def test_elapsed_time_measures_a_held_interval(latch, stream):
    import time
    gate = latch()
    start = stream.record(timing=True)
    gate.hold(stream)
    end = stream.record(timing=True)
    time.sleep(0.05)
    gate.release()
    end.synchronize()
    assert start.elapsed_time(end) >= 40.0


def test_elapsed_time_with_timing_disabled_is_a_clear_error(stream):
    a, b = stream.record(timing=False), stream.record(timing=True)
    stream.synchronize()
    with pytest.raises(rs.EventTimingDisabledError, match="timing=True"):
        a.elapsed_time(b)


def test_elapsed_time_of_a_never_recorded_event_is_a_clear_error(stream):
    a = stream.record(timing=True)
    never = rs.Event(timing=True)
    stream.synchronize()
    with pytest.raises(rs.EventNotRecordedError, match="record"):
        a.elapsed_time(never)


def test_elapsed_time_while_the_work_still_runs_is_a_clear_error(latch, stream):
    gate = latch()
    a = stream.record(timing=True)
    gate.hold(stream)
    b = stream.record(timing=True)
    with pytest.raises(rs.EventNotReadyError, match="synchronize"):
        a.elapsed_time(b)
    gate.release()
    b.synchronize()
    assert a.elapsed_time(b) >= 0.0


def test_event_errors_share_one_base(stream):
    assert issubclass(rs.EventNotReadyError, rs.EventError)
    assert issubclass(rs.EventError, rs.RocmStreamsError)


def test_re_recording_an_event_moves_it(latch, stream, make_stream):
    other = make_stream(non_blocking=True)
    ev = stream.record()
    stream.synchronize()
    assert ev.query()
    gate = latch().hold(other)
    ev.record(other)
    assert not ev.query()
    gate.release()
    ev.synchronize()
    assert ev.query()


def test_event_close_is_idempotent_and_closed_events_refuse_work(stream):
    ev = rs.Event()
    ev.close()
    ev.close()
    assert ev.is_closed and "closed" in repr(ev)
    for op in (ev.query, ev.synchronize, lambda: ev.record(stream), lambda: stream.wait(ev)):
        with pytest.raises(rs.StreamClosedError):
            op()
    assert stream.query()
