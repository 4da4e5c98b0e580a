"""Graph capture: `with stream.capture() as graph:` records, `graph.launch(stream)` replays, and
misuse is refused before the runtime sees it, leaving the stream and its capture usable.

Arrays are made (and kernels compiled, by the `kernels` fixture) before each capture: inside a
capture only stream work on the capturing stream is allowed on GPUs.
"""
import gc
import pickle
import threading
import time
import weakref

import numpy as np
import pytest

import rocmstreams as rs
from conftest import collect

N = 256
GRID, BLOCK = 4, 64  # covers N: add_scalar is not grid-stride


def _device(x, stream):
    d = rs.to_device(x, stream=stream)
    stream.synchronize()
    return d


def _read(d, stream):
    out = rs.pinned_empty(d.shape, d.dtype)
    d.copy_to_host(out, stream=stream)
    stream.synchronize()
    return out.copy()


def _add_one_graph(kernels, stream, d):
    with stream.capture() as graph:
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
    return graph


@pytest.fixture
def spy(monkeypatch, runtime):
    """Records the graph handles the backend destroys: ``calls['graph_destroy']`` etc."""
    collect()  # graphs earlier tests dropped are released now, not counted here
    calls = {"graph_destroy": [], "graph_exec_destroy": [], "graph_instantiate": []}
    for name, seen in calls.items():
        original = getattr(runtime, name)

        def wrapper(handle, _original=original, _seen=seen):
            _seen.append(handle)
            return _original(handle)

        monkeypatch.setattr(runtime, name, wrapper)
    return calls


# recording and replay ----------------------------------------------------------------------------
def test_capture_records_work_instead_of_running_it(kernels, stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    seen = []
    with stream.capture():
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(7))
        stream.launch_host_func(seen.append, "ran")
    np.testing.assert_array_equal(_read(d, stream), x)
    assert seen == []


def test_replay_reruns_every_captured_kernel(kernels, stream, rng):
    x, y = rng.random(N, dtype=np.float32), rng.random(N, dtype=np.float32)
    v, a, b = (np.float32(0.25 + rng.random() / 2) for _ in range(3))
    dx, dy = _device(x, stream), _device(y, stream)
    with stream.capture() as graph:
        kernels.add_scalar[GRID, BLOCK, stream](dx, v)
        kernels.scale[2, 64, stream](dy, a, dx)
        kernels.saxpy[2, 64, stream](dx, b, dy, dx)
    replays = 6
    for _ in range(replays):  # queued back to back, no synchronize between
        graph.launch(stream)
    for _ in range(replays):
        x = x + v
        y = a * x
        x = b * y + x
    np.testing.assert_allclose(_read(dx, stream), x, rtol=1e-5)
    np.testing.assert_allclose(_read(dy, stream), y, rtol=1e-5)


def test_each_replay_copies_the_pinned_input_as_it_is_at_replay_time(kernels, stream, rng):
    inp, out = rs.pinned_empty(N, np.float32), rs.pinned_empty(N, np.float32)
    inp[:] = rng.random(N, dtype=np.float32)
    out[:] = np.nan
    d_in, d_out = rs.empty(N, np.float32), rs.empty(N, np.float32)
    a = np.float32(3)
    with stream.capture() as graph:
        d_in.copy_from(inp, stream=stream)
        kernels.scale[2, 64, stream](d_out, a, d_in)
        rs.copy_async(out, d_out, stream=stream)
    stream.synchronize()
    assert np.isnan(out).all()
    for _ in range(4):
        inp[:] = rng.random(N, dtype=np.float32)
        graph.launch(stream)
        stream.synchronize()
        np.testing.assert_array_equal(out, a * inp)


def test_captured_callbacks_run_once_per_replay_in_captured_order(kernels, stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    seen = []
    with stream.capture() as graph:
        stream.launch_host_func(seen.append, "first")
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
        stream.launch_host_func(seen.append, "second")
    for _ in range(3):
        graph.launch(stream)
    stream.synchronize()
    assert seen == ["first", "second"] * 3
    np.testing.assert_array_equal(_read(d, stream), x + np.float32(1) + np.float32(1) +
                                  np.float32(1))


def test_a_captured_callback_sees_the_work_captured_before_it(kernels, stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    out = rs.pinned_empty(N, np.float32)
    snapshots = []
    with stream.capture() as graph:
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
        d.copy_to_host(out, stream=stream)
        stream.launch_host_func(lambda: snapshots.append(out.copy()))
    for _ in range(3):
        graph.launch(stream)
    stream.synchronize()
    expected = x
    assert len(snapshots) == 3
    for snapshot in snapshots:
        expected = expected + np.float32(1)
        np.testing.assert_array_equal(snapshot, expected)


def test_a_graph_replays_on_another_stream_of_the_device(kernels, stream, make_stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    graph = _add_one_graph(kernels, stream, d)
    other = make_stream(non_blocking=True)
    graph.launch(other)
    graph.launch(other)
    np.testing.assert_array_equal(_read(d, other), x + np.float32(1) + np.float32(1))


def test_a_graph_outlives_the_stream_it_was_captured_on(kernels, make_stream, rng):
    x = rng.random(N, dtype=np.float32)
    captured, other = make_stream(non_blocking=True), make_stream(non_blocking=True)
    d = _device(x, captured)
    graph = _add_one_graph(kernels, captured, d)
    captured.close()
    graph.launch(other)
    np.testing.assert_array_equal(_read(d, other), x + np.float32(1))


def test_only_the_capturing_streams_work_is_recorded(kernels, stream, make_stream, rng):
    xa, xb = rng.random(N, dtype=np.float32), rng.random(N, dtype=np.float32)
    other = make_stream(non_blocking=True)
    da, db = _device(xa, stream), _device(xb, other)
    with stream.capture() as graph:
        kernels.add_scalar[GRID, BLOCK, stream](da, np.float32(1))
        kernels.add_scalar[GRID, BLOCK, other](db, np.float32(10))  # runs now, not recorded
    np.testing.assert_array_equal(_read(db, other), xb + np.float32(10))
    np.testing.assert_array_equal(_read(da, stream), xa)
    graph.launch(stream)
    np.testing.assert_array_equal(_read(da, stream), xa + np.float32(1))
    np.testing.assert_array_equal(_read(db, other), xb + np.float32(10))


def test_one_stream_captures_one_graph_after_another(kernels, stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    add_one = _add_one_graph(kernels, stream, d)
    with stream.capture() as double:
        kernels.scale[2, 64, stream](d, np.float32(2), d)
    add_one.launch(stream)
    double.launch(stream)
    add_one.launch(stream)
    expected = (x + np.float32(1)) * np.float32(2) + np.float32(1)
    np.testing.assert_array_equal(_read(d, stream), expected)


def test_an_empty_capture_replays_as_nothing(stream):
    with stream.capture() as graph:
        pass
    graph.launch(stream)
    stream.synchronize()
    assert stream.query() and not graph.is_closed


def test_launch_returns_at_once_and_the_replay_waits_for_earlier_work(latch, stream):
    seen = []
    with stream.capture() as graph:
        stream.launch_host_func(seen.append, "replayed")
    gate = latch()
    gate.hold(stream)
    graph.launch(stream)
    assert seen == [] and not stream.query()
    gate.release()
    stream.synchronize()
    assert gate.released and seen == ["replayed"]


def test_replays_of_one_graph_on_two_streams_run_one_after_another(latch, stream, make_stream):
    seen = []
    with stream.capture() as graph:
        stream.launch_host_func(seen.append, "replay")
    first, second = make_stream(non_blocking=True), make_stream(non_blocking=True)
    gate = latch()
    gate.hold(first)
    graph.launch(first)
    graph.launch(second)  # ordered behind the launch on `first`, as cudaGraphLaunch orders them
    second.launch_host_func(seen.append, "after the second replay")
    time.sleep(0.2)  # time enough for `second` to run ahead, were it not held
    assert seen == []
    gate.release()
    first.synchronize()
    second.synchronize()
    assert seen == ["replay", "replay", "after the second replay"]


def test_a_failing_captured_callback_raises_at_the_replay_streams_synchronize(stream, make_stream):
    def boom():
        raise KeyError("in a replay")

    with stream.capture() as graph:
        stream.launch_host_func(boom)
    other = make_stream(non_blocking=True)
    graph.launch(other)
    with pytest.raises(rs.CallbackError, match="boom raised KeyError") as info:
        other.synchronize()
    assert isinstance(info.value.__cause__, KeyError)
    stream.synchronize()  # the capturing stream has nothing to report
    other.synchronize()  # delivered once


def test_concurrent_replays_on_two_streams_each_raise_their_own_callback_error(
        stream, make_stream, stream_calls):
    """The second replay's callback runs before the first replay's stream has delivered its
    errors: ``first`` is held by a host function queued right behind its replay (below the
    door, so nothing else changes), while ``second``'s replay runs after the first replay."""
    replays = iter(["first", "second"])

    def boom():
        raise KeyError(next(replays))

    with stream.capture() as graph:
        stream.launch_host_func(boom)
    first, second = make_stream(non_blocking=True), make_stream(non_blocking=True)
    held = first.__rocmstreams_core__.calls.handle
    gate = threading.Event()

    def hold_after_replay(original):
        def graph_launch(self, graph_exec):
            original(self, graph_exec)
            if self.handle == held:
                self.launch_host_func(lambda: gate.wait(10))
        return graph_launch

    stream_calls("graph_launch", hold_after_replay)
    try:
        graph.launch(first)
        graph.launch(second)
        with pytest.raises(rs.CallbackError) as info:
            second.synchronize(timeout=20)
    finally:
        gate.set()
    assert info.value.__cause__.args == ("second",)
    assert "more callbacks" not in str(info.value)
    with pytest.raises(rs.CallbackError) as info:
        first.synchronize(timeout=20)
    assert info.value.__cause__.args == ("first",)
    first.synchronize()
    second.synchronize()  # each delivered once


# misuse during capture -----------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["query", "synchronize"])
def test_query_or_synchronize_during_capture_raises_and_capture_survives(call, kernels, stream,
                                                                         rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    with stream.capture() as graph:
        with pytest.raises(rs.CaptureError, match="end the capture"):
            getattr(stream, call)()
        assert stream.is_capturing
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(2))
    graph.launch(stream)
    np.testing.assert_array_equal(_read(d, stream), x + np.float32(2))


EVENT_CALLS = {
    "stream.record()": lambda s, other, ev: s.record(),
    "stream.record(event)": lambda s, other, ev: s.record(ev),
    "event.record(stream)": lambda s, other, ev: ev.record(s),
    "stream.wait(event)": lambda s, other, ev: s.wait(ev),
    "stream.wait(other stream)": lambda s, other, ev: s.wait(other),
    "other.wait(capturing stream)": lambda s, other, ev: other.wait(s),
}


@pytest.mark.parametrize("name", sorted(EVENT_CALLS))
def test_events_inside_a_capture_raise_and_capture_survives(name, kernels, stream, make_stream,
                                                           rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    other = make_stream(non_blocking=True)
    ev = other.record()
    other.synchronize()
    with stream.capture() as graph:
        with pytest.raises(rs.CaptureError, match="events inside a graph capture are not"):
            EVENT_CALLS[name](stream, other, ev)
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(3))
    graph.launch(stream)
    np.testing.assert_array_equal(_read(d, stream), x + np.float32(3))


def test_closing_a_capturing_stream_raises_and_the_stream_stays_open(kernels, stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    with stream.capture() as graph:
        with pytest.raises(rs.CaptureError, match="capturing"):
            stream.close()
        assert not stream.is_closed and stream.is_capturing
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
    graph.launch(stream)
    np.testing.assert_array_equal(_read(d, stream), x + np.float32(1))
    stream.close()
    assert stream.is_closed


def test_nested_capture_on_one_stream_raises_and_the_outer_capture_survives(kernels, stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    with stream.capture() as graph:
        with pytest.raises(rs.CaptureError, match="do not nest"):
            stream.capture()
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
    graph.launch(stream)
    np.testing.assert_array_equal(_read(d, stream), x + np.float32(1))


def test_capture_on_a_closed_stream_raises_the_closed_error():
    s = rs.RocmStream(non_blocking=True)
    s.close()
    with pytest.raises(rs.StreamClosedError, match="closed"):
        s.capture()
    assert not s.is_capturing


def test_the_legacy_default_stream_cannot_be_captured():
    legacy = rs.default_stream()
    with pytest.raises(rs.CaptureError, match="legacy default stream"):
        legacy.capture()
    assert not legacy.is_capturing
    legacy.synchronize()


def test_a_capture_context_is_entered_once(stream):
    capture = stream.capture()
    with capture:
        pass
    with pytest.raises(rs.CaptureError, match="entered once"):
        capture.__enter__()
    assert not stream.is_capturing


def test_is_capturing_is_true_only_inside_the_capture_block_and_read_only(stream):
    assert stream.is_capturing is False
    with stream.capture():
        assert stream.is_capturing is True
    assert stream.is_capturing is False
    with pytest.raises(AttributeError):
        stream.is_capturing = True


# an exception inside the block ---------------------------------------------------------------------
def test_an_exception_in_the_block_discards_the_graph_and_the_stream_runs_on(kernels, stream,
                                                                            rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    with pytest.raises(KeyError, match="in the block"):
        with stream.capture() as graph:
            kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(5))
            raise KeyError("in the block")
    assert graph.is_closed and not stream.is_capturing
    with pytest.raises(rs.GraphClosedError, match="discarded"):
        graph.launch(stream)
    kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
    np.testing.assert_array_equal(_read(d, stream), x + np.float32(1))


def test_a_discarded_capture_frees_its_graph_and_is_never_instantiated(kernels, stream, spy):
    d = rs.empty(N, np.float32)
    with pytest.raises(ValueError):
        with stream.capture():
            kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
            raise ValueError("abandon")
    assert len(spy["graph_destroy"]) == 1
    assert spy["graph_instantiate"] == [] and spy["graph_exec_destroy"] == []


# launch misuse -------------------------------------------------------------------------------------
def test_a_graph_cannot_be_launched_or_closed_inside_its_own_capture(kernels, stream,
                                                                    make_stream, rng):
    x = rng.random(N, dtype=np.float32)
    d = _device(x, stream)
    other = make_stream(non_blocking=True)
    with stream.capture() as graph:
        for target in (stream, other):
            with pytest.raises(rs.CaptureError, match="still being captured"):
                graph.launch(target)
        with pytest.raises(rs.CaptureError, match="leave"):
            graph.close()
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
    graph.launch(stream)
    np.testing.assert_array_equal(_read(d, stream), x + np.float32(1))


def test_launching_a_graph_onto_a_capturing_stream_raises(kernels, stream, make_stream, rng):
    x = rng.random(N, dtype=np.float32)
    other = make_stream(non_blocking=True)
    d = _device(x, other)
    first = _add_one_graph(kernels, other, d)
    with stream.capture() as second:
        with pytest.raises(rs.CaptureError, match="capturing"):
            first.launch(stream)
    second.launch(stream)
    np.testing.assert_array_equal(_read(d, stream), x)


def test_launch_on_a_closed_stream_raises_the_stream_closed_error(kernels, stream):
    graph = _add_one_graph(kernels, stream, rs.empty(N, np.float32))
    closed = rs.RocmStream(non_blocking=True)
    closed.close()
    with pytest.raises(rs.StreamClosedError, match="RocmStream is closed") as info:
        graph.launch(closed)
    assert not isinstance(info.value, rs.GraphClosedError)
    assert not graph.is_closed


def test_launch_of_a_closed_graph_raises_the_graph_closed_error(kernels, stream):
    graph = _add_one_graph(kernels, stream, rs.empty(N, np.float32))
    graph.close()
    with pytest.raises(rs.GraphClosedError, match="Graph is closed") as info:
        graph.launch(stream)
    assert isinstance(info.value, rs.StreamClosedError)  # one closed-object family
    assert stream.query()


class _NotRocm:
    def __cuda_stream__(self):
        return (0, 0)


@pytest.mark.parametrize("target", [None, 7, "s"], ids=["None", "int", "str"])
def test_launch_on_something_not_a_stream_is_a_type_error(target, stream):
    with stream.capture() as graph:
        pass
    with pytest.raises(TypeError, match="RocmStream"):
        graph.launch(target)


@pytest.mark.parametrize("target", [0, _NotRocm()], ids=["0", "cuda_stream"])
def test_a_graph_launches_on_the_legacy_stream_and_on_foreign_streams(kernels, target, rng):
    s = rs.RocmStream()
    x = rng.random(N, dtype=np.float32)
    d = _device(x, s)
    with s.capture() as graph:
        kernels.add_scalar[GRID, BLOCK, s](d, np.float32(1))
    graph.launch(target)  # 0 and (0, 0) both name the legacy default stream
    rs.default_stream().synchronize()
    np.testing.assert_array_equal(_read(d, s), x + np.float32(1))
    graph.close()
    s.close()


# lifetime ------------------------------------------------------------------------------------------
def test_close_frees_both_handles_once_and_is_idempotent(kernels, stream, spy):
    graph = _add_one_graph(kernels, stream, rs.empty(N, np.float32))
    graph.launch(stream)
    graph.close()
    graph.close()
    assert graph.is_closed
    assert len(spy["graph_exec_destroy"]) == 1 and len(spy["graph_destroy"]) == 1
    stream.synchronize()  # the replay queued before close still ran


def test_a_graph_keeps_the_arrays_of_its_captured_work_alive_until_closed(kernels, stream, rng):
    x = rng.random(N, dtype=np.float32)
    out = rs.pinned_empty(N, np.float32)
    d = _device(x, stream)
    watch = weakref.ref(d)
    with stream.capture() as graph:
        kernels.add_scalar[GRID, BLOCK, stream](d, np.float32(1))
        rs.copy_async(out, d, stream=stream)
    del d
    collect()
    assert watch() is not None, "the graph let go of an array its replays write"
    expected = x
    for _ in range(3):
        graph.launch(stream)
        expected = expected + np.float32(1)
    stream.synchronize()
    np.testing.assert_array_equal(out, expected)
    graph.close()
    collect()
    assert watch() is None, "a closed graph still holds its arrays"


def test_a_dropped_graph_frees_its_handles(kernels, stream, spy):
    graph = _add_one_graph(kernels, stream, rs.empty(N, np.float32))
    del graph
    collect()
    assert len(spy["graph_exec_destroy"]) == 1 and len(spy["graph_destroy"]) == 1


def test_a_failed_release_warns_and_close_does_not_raise(kernels, stream, runtime, monkeypatch):
    backend = runtime
    graph = _add_one_graph(kernels, stream, rs.empty(N, np.float32))
    original = backend.graph_exec_destroy
    destroyed = []

    def failing(handle):
        original(handle)  # nothing leaks; the failure is what is tested
        raise rs.RocmStreamsError("refused", backend=backend.name)

    monkeypatch.setattr(backend, "graph_exec_destroy", failing)
    monkeypatch.setattr(backend, "graph_destroy",
                        lambda h, _o=backend.graph_destroy: (destroyed.append(h), _o(h)))
    with pytest.warns(ResourceWarning, match="releasing Graph .* failed: refused"):
        graph.close()
    assert graph.is_closed and len(destroyed) == 1  # the graph itself was still freed
    graph.close()


def test_repr_is_safe_in_every_state(kernels, stream):
    with stream.capture() as graph:
        assert "capturing" in repr(graph)
    assert "ready" in repr(graph) and stream.backend_name in repr(graph)
    graph.close()
    assert "closed" in repr(graph) and "closed" in repr(graph)
    with pytest.raises(RuntimeError):
        with stream.capture() as discarded:
            raise RuntimeError
    assert "discarded" in repr(discarded)


def test_a_graph_is_made_only_by_capture_and_cannot_be_pickled(stream):
    with pytest.raises(TypeError, match="capture"):
        rs.Graph()
    with stream.capture() as graph:
        pass
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(graph)


def test_graph_closed_error_pickles_with_its_backend():
    err = rs.GraphClosedError("this Graph is closed", backend="cpu")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is rs.GraphClosedError and back.backend == "cpu"
    assert str(back) == str(err)
