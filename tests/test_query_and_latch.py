"""query() and Event.query() reflect the real in-flight work."""
import rocmstreams as rs


def test_query_is_false_while_a_kernel_holds_the_stream(latch, stream):
    gate = latch().hold(stream)
    assert stream.query() is False
    gate.release()
    stream.synchronize()
    assert stream.query() is True
    assert gate.released, f"latch timed out after {gate.polls} polls"


def test_event_query_is_false_until_the_work_before_it_finishes(latch, stream):
    gate = latch().hold(stream)
    ev = stream.record()
    assert ev.query() is False
    gate.release()
    ev.synchronize()
    assert ev.query() is True
    assert gate.released, f"latch timed out after {gate.polls} polls"


def test_work_queued_behind_a_latch_waits_for_it(latch, stream):
    ran = []
    gate = latch().hold(stream)
    stream.launch_host_func(ran.append, 1)
    for _ in range(20):
        assert not stream.query()
    assert ran == []
    gate.release()
    stream.synchronize()
    assert ran == [1]


def test_an_unrecorded_event_reports_done():
    ev = rs.Event()
    assert ev.query() is True
    ev.synchronize()
    ev.close()


def test_query_of_an_idle_stream_is_true(stream):
    assert stream.query() is True
    stream.synchronize()
    assert stream.query() is True
