"""rs.trace(): every operation queued on RocmStreams inside the block, as it ran."""
from __future__ import annotations

import json
import sys
import time
import types

import numpy as np
import pytest

import rocmstreams as rs
from conftest import needs_gpu, safety_net


def _pipeline(kernels, streams, n=256, chunks=4):
    x = np.random.default_rng(1).random(n * chunks).astype(np.float32)
    out = rs.pinned_empty(x.size, np.float32)
    for c in range(chunks):
        s = streams[c % len(streams)]
        d = rs.to_device(x[c * n:(c + 1) * n], stream=s)
        kernels.scale[2, 128, s](d, np.float32(2), d)
        rs.copy_async(out[c * n:(c + 1) * n], d, stream=s)
    for s in streams:
        s.synchronize()
    return x, out


def test_the_trace_of_a_pipeline_has_each_streams_operations_in_order(kernels, make_stream):
    streams = [make_stream(non_blocking=True) for _ in range(2)]
    with rs.trace() as t:
        x, out = _pipeline(kernels, streams)
    np.testing.assert_array_equal(out, 2 * x)
    for s in streams:
        mine = [r for r in t.records if r.stream == s.handle]
        assert [r.kind for r in mine] == ["H2D", "kernel", "D2H"] * 2
        assert all(r.end_ms >= r.start_ms for r in mine)
        for a, b in zip(mine, mine[1:]):  # one stream's operations never overlap
            assert b.start_ms >= a.end_ms - 1e-6
    kernel = next(r for r in t.records if r.kind == "kernel")
    assert (kernel.name, kernel.grid, kernel.block) == ("scale", (2, 1, 1), (128, 1, 1))
    assert next(r for r in t.records if r.kind == "H2D").nbytes == 256 * 4


@needs_gpu
def test_two_streams_doing_independent_work_overlap_on_a_gpu(latch, make_stream):
    streams = [make_stream(non_blocking=True) for _ in range(2)]
    with latch() as gate:
        net = safety_net(gate)
        with rs.trace() as t:
            for s in streams:  # each stream's kernel spins until the release: both at once
                gate.hold(s)
            time.sleep(0.05)
            gate.release()
            for s in streams:
                s.synchronize()
    net.cancel()
    assert gate.released, "the latch kernels timed out instead of being released"
    kernels = [r for r in t.records if r.kind == "kernel"]
    assert sorted(r.stream for r in kernels) == sorted(s.handle for s in streams)
    overlap = t.summary()["overlap_fraction"]
    assert overlap > 0.5, f"two streams ran at once {overlap:.0%} of the trace"


def test_summary_table_and_chrome_trace(kernels, make_stream, tmp_path):
    streams = [make_stream(non_blocking=True) for _ in range(2)]
    with rs.trace() as t:
        with rs.range("step 1"):
            _pipeline(kernels, streams)
    summary = t.summary()
    assert summary["streams"] == 2 and summary["operations"] == 12
    assert set(summary["busy_ms"]) == {s.handle for s in streams}
    assert 0.0 <= summary["overlap_fraction"] <= 1.0
    assert set(summary["copy_gbps"]) == {"H2D", "D2H"}
    rows = t.table()
    assert len(rows) == 13  # twelve operations and the range
    path = tmp_path / "trace.json"
    t.save(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    assert {e["tid"] for e in events} == {f"stream {s.handle:#x}" for s in streams} | {"ranges"}
    assert any(e["name"] == "step 1" for e in events)


def test_the_plot_has_one_lane_per_stream(kernels, make_stream):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    streams = [make_stream(non_blocking=True) for _ in range(3)]
    with rs.trace() as t:
        _pipeline(kernels, streams, chunks=3)
    fig = t.plot()
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert labels == t.lanes() and len(labels) == 3


def test_the_plots_legend_lies_outside_the_lanes(kernels, make_stream):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    with rs.trace() as t:
        _pipeline(kernels, [make_stream(non_blocking=True) for _ in range(2)], chunks=2)
    fig = t.plot()
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: it covers no bar
    assert legend.x1 <= fig.bbox.x1 + 1  # and inside the figure


def test_nothing_is_recorded_outside_a_trace(kernels, stream, stream_calls):
    recorded = []
    stream_calls("event_record", lambda real: lambda self, ev: (recorded.append(ev),
                                                                 real(self, ev))[1])
    a = rs.to_device(np.zeros(32, np.float32), stream=stream)
    kernels.add_scalar[1, 32, stream](a, np.float32(1))
    stream.synchronize()
    assert recorded == []  # no timing events outside a trace


def _fake_module(monkeypatch, name, **attrs):
    """``sys.modules[name]``: a module holding ``attrs`` (what an import of ``name`` finds)."""
    module = types.ModuleType(name)
    vars(module).update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _fake_roctx(monkeypatch, calls):
    return _fake_module(monkeypatch, "rocm.bindings.roctx",
                        roctxRangePushA=lambda message: calls.append(("push", message)),
                        roctxRangePop=lambda: calls.append(("pop",)))


def test_a_range_is_pushed_and_popped_on_roctx_where_hip_python_has_it(monkeypatch):
    calls = []
    _fake_roctx(monkeypatch, calls)
    monkeypatch.setitem(sys.modules, "nvtx", None)  # not installed
    with rs.range("step 3"):
        assert calls == [("push", "step 3")]
    assert calls == [("push", "step 3"), ("pop",)]


def test_a_range_is_pushed_and_popped_on_nvtx_where_it_is_installed(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "rocm.bindings.roctx", None)  # not installed
    _fake_module(monkeypatch, "nvtx", push_range=lambda message: calls.append(("push", message)),
                 pop_range=lambda: calls.append(("pop",)))
    with rs.range("step 4"):
        assert calls == [("push", "step 4")]
    assert calls == [("push", "step 4"), ("pop",)]


def test_hip_pythons_nvtx_shim_over_roctx_does_not_push_the_range_twice(monkeypatch):
    calls = []
    roctx = _fake_roctx(monkeypatch, calls)
    _fake_module(monkeypatch, "nvtx", _roctx=roctx,
                 push_range=lambda message: roctx.roctxRangePushA(message),
                 pop_range=lambda: roctx.roctxRangePop())
    with rs.range("step 5"):
        pass
    assert calls == [("push", "step 5"), ("pop",)]


def test_a_profiler_binding_that_fails_leaves_the_range_working(kernels, monkeypatch):
    def broken(message):
        raise RuntimeError("libroctx64.so: cannot open shared object file")

    _fake_module(monkeypatch, "rocm.bindings.roctx", roctxRangePushA=broken,
                 roctxRangePop=lambda: pytest.fail("popped a range never pushed"))
    monkeypatch.setitem(sys.modules, "nvtx", None)
    with rs.trace() as t:
        with rs.range("step 6"):
            pass
    assert [r.name for r in t.records if r.kind == "range"] == ["step 6"]


def test_a_range_needs_a_name():
    with pytest.raises(TypeError, match="name"):
        with rs.range(3):
            pass


def test_entering_a_trace_waits_for_no_busy_blocking_stream(latch, make_stream):
    busy = make_stream()  # blocking, as RocmStream() is by default
    with latch() as gate:
        gate.hold(busy)
        net = safety_net(gate)
        t0 = time.perf_counter()
        with rs.trace():
            entered = time.perf_counter() - t0
            gate.release()
    net.cancel()
    busy.synchronize()
    assert entered < 0.5, f"entering rs.trace() took {entered:.2f} s behind a busy stream"


def test_ctrl_c_inside_a_trace_reaches_the_user_at_once(kernels, latch, ctrl_c, stream):
    a = rs.to_device(np.ones(64, np.float32), stream=stream)
    with latch() as gate:
        net = safety_net(gate)
        sent = ctrl_c(0.2)
        with pytest.raises(KeyboardInterrupt):
            with rs.trace():
                gate.hold(stream)
                kernels.scale[1, 64, stream](a, np.float32(2), a)
                stream.synchronize()
        took = time.perf_counter() - sent[0]
    net.cancel()
    stream.synchronize()
    assert took < 0.5, f"Ctrl-C reached the user {took:.2f} s after the signal"


def test_ctrl_c_ends_the_wait_for_the_traced_work_when_a_trace_closes(kernels, latch, ctrl_c,
                                                                      stream):
    a = rs.to_device(np.ones(64, np.float32), stream=stream)
    with latch() as gate:
        net = safety_net(gate)
        sent = ctrl_c(0.2)
        with pytest.raises(KeyboardInterrupt):
            with rs.trace():
                gate.hold(stream)
                kernels.scale[1, 64, stream](a, np.float32(2), a)
        took = time.perf_counter() - sent[0]
    net.cancel()
    stream.synchronize()
    assert took < 0.5, f"Ctrl-C ended the trace's wait {took:.2f} s after the signal"


def test_a_trace_left_by_ctrl_c_destroys_its_events_only_once_the_work_has_run(
        kernels, latch, ctrl_c, backend, stream):
    a = rs.to_device(np.ones(64, np.float32), stream=stream)
    stream.synchronize()
    rs.empty_cache()  # the pinned cache's events (of blocks earlier tests left) stay as they are
    base = backend.live_handles()["events"]
    with latch() as gate:
        net = safety_net(gate)
        ctrl_c(0.2)
        with pytest.raises(KeyboardInterrupt):
            with rs.trace():
                gate.hold(stream)
                kernels.scale[1, 64, stream](a, np.float32(2), a)
                stream.synchronize()
        assert backend.live_handles()["events"] > base  # the device may still record them
    net.cancel()
    stream.synchronize()
    deadline = time.monotonic() + 10
    while backend.live_handles()["events"] > base and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.live_handles()["events"] == base
