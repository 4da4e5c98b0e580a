"""Several devices: each object says its device, cross-device misuse is refused before anything
is queued, cross-device event waits work, peer copies are exact, state is per device.

On the cpu backend the ``devices`` fixture simulates two devices (``configure(cpu_devices=2)``),
with the runtimes' device rules, so these run in CI; on a GPU backend they need two GPUs and are
skipped with fewer. Tests marked ``multi_gpu`` need two real GPUs.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import rocmstreams as rs
from rocmstreams.core import lifetime

ROOT = Path(__file__).resolve().parents[1]


def _devices(count: int):
    with rs.configure(cpu_devices=count):
        if rs.device_count() < count:
            pytest.skip(f"needs {count} devices, {rs.device_count()} here")
        try:
            yield tuple(range(count))
        finally:
            gc.collect()
            lifetime.drain()  # releases of device-1 memory run while device 1 exists
            for d in range(count):
                rs.default_stream(device=d).synchronize()


@pytest.fixture
def devices():
    yield from _devices(2)


@pytest.fixture
def three_devices():
    yield from _devices(3)


@pytest.fixture
def streams(devices):
    made = [rs.RocmStream(non_blocking=True, device=d) for d in devices]
    yield made
    for s in made:
        s.synchronize()
        s.close()


@pytest.fixture
def gate():
    """A host-side gate: ``gate.hold(stream)`` blocks the stream until the test ends or
    ``gate.set()`` (bounded: 30 s)."""
    event = threading.Event()
    event.hold = lambda stream: stream.launch_host_func(event.wait, 30)
    yield event
    event.set()


def _random(rng, n=4096, dtype=np.float32):
    return rng.standard_normal(n).astype(dtype)


def _on(device, x):
    """``x`` on ``device``, there once this returns (copied on its default stream)."""
    a = rs.to_device(x, device=device)
    rs.default_stream(device=device).synchronize()
    return a


# ---- simulated devices -------------------------------------------------------------------------
def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "ROCMSTREAMS_BACKEND": "cpu", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=120)


def test_the_environment_variable_sets_the_simulated_device_count():
    found = _python("import rocmstreams as rs; print(rs.device_count(), "
                    "len(rs.backend().devices))", ROCMSTREAMS_CPU_DEVICES="3")
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["3", "3"]


def test_a_bad_environment_variable_is_refused_naming_it():
    found = _python("import rocmstreams as rs; rs.device_count()", ROCMSTREAMS_CPU_DEVICES="two")
    assert found.returncode != 0
    assert "ROCMSTREAMS_CPU_DEVICES='two'" in found.stderr


@pytest.mark.parametrize("bad", [0, 65, -1, 1.5, True, "2"])
def test_configure_refuses_a_bad_cpu_device_count(bad):
    before = rs.config()
    with pytest.raises((TypeError, ValueError), match="cpu_devices"):
        rs.configure(cpu_devices=bad)
    assert rs.config() == before


# ---- every object says its device --------------------------------------------------------------
def test_a_stream_an_event_and_an_array_say_their_device(devices, streams):
    s1 = streams[1]
    assert s1.device == 1
    assert s1.record().device == 1
    assert rs.empty(16, np.float32, stream=s1).device == 1
    assert rs.Event(device=1).device == 1
    assert rs.default_stream(device=1).device == 1


def test_a_graph_says_its_device_and_refuses_a_stream_of_another(devices, streams, rng, kernels):
    s0, s1 = streams
    x = _random(rng, 64)
    a = rs.to_device(x, stream=s1)
    with s1.capture() as graph:
        kernels.scale[1, 64, s1](a, np.float32(2), a)
    assert graph.device == 1
    with pytest.raises(rs.DeviceMismatchError, match="device 1.*device 0"):
        graph.launch(s0)
    graph.launch(s1)
    np.testing.assert_array_equal(a.copy_to_host(stream=s1), x * 2)
    graph.close()


def test_page_locked_memory_and_its_device_view_say_their_device(devices, streams, rng):
    x = _random(rng, 256)
    host = rs.pinned_empty(x.shape, x.dtype, device=1)
    host[:] = x
    assert rs.device_view(host).device == 1 and rs.device_view(host, device=0).device == 0
    a0 = rs.empty(x.shape, x.dtype, stream=streams[0])
    rs.copy_async(a0, host, stream=streams[0])  # portable: a stream of any device copies it
    np.testing.assert_array_equal(a0.copy_to_host(stream=streams[0]), x)


# ---- cross-device use ------------------------------------------------------------------------
def test_an_event_records_only_on_a_stream_of_its_device(devices, streams):
    event = rs.Event(device=0)
    with pytest.raises(rs.DeviceMismatchError, match="device 0.*device 1") as info:
        event.record(streams[1])
    assert "Event(device=1)" in str(info.value)
    assert not event.is_recorded


def test_a_stream_of_device_1_waits_for_an_event_of_device_0(devices, streams, gate, rng):
    s0, s1 = streams
    x = _random(rng)
    a0 = rs.to_device(x, stream=s0)
    b1 = rs.empty(x.shape, x.dtype, stream=s1)
    s0.synchronize()
    gate.hold(s0)
    rs.copy_async(a0, np.zeros_like(x), stream=s0)  # runs after the gate, before the event
    rs.copy_async(a0, x * 3, stream=s0)
    ready = s0.record()
    s1.wait(ready)
    rs.copy_async(b1, a0, stream=s1)
    assert not s1.query()  # the wait holds device 1's stream while device 0's is gated
    gate.set()
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), x * 3)


def test_a_stream_waits_for_all_work_on_a_stream_of_another_device(devices, streams, gate, rng):
    s0, s1 = streams
    x = _random(rng)
    a0 = rs.empty(x.shape, x.dtype, stream=s0)
    b1 = rs.empty(x.shape, x.dtype, stream=s1)
    gate.hold(s0)
    rs.copy_async(a0, x, stream=s0)
    s1.wait(s0)
    rs.copy_async(b1, a0, stream=s1)
    assert not s1.query()
    gate.set()
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), x)


def test_a_host_copy_into_an_array_of_another_device_is_refused_before_queueing(devices,
                                                                                streams, rng):
    s0, s1 = streams
    x = _random(rng)
    b1 = rs.to_device(np.zeros_like(x), stream=s1)
    with pytest.raises(rs.DeviceMismatchError,
                       match="destination is on device 1 but the stream is on device 0"):
        rs.copy_async(b1, x, stream=s0)
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), np.zeros_like(x))


def test_a_peer_copy_on_a_stream_of_neither_device_is_refused(three_devices, rng):
    s2 = rs.RocmStream(device=2)
    x = _random(rng)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    with pytest.raises(rs.DeviceMismatchError, match="from device 0 to device 1.*device 2"):
        rs.copy_async(b1, a0, stream=s2)
    s2.close()


def test_a_kernel_given_an_array_of_another_device_is_refused_before_launch(
        devices, streams, rng, kernels):
    s0, s1 = streams
    x = _random(rng, 256)
    b1 = rs.to_device(x, stream=s1)
    s1.synchronize()
    with pytest.raises(rs.DeviceMismatchError, match="argument 0 is on device 1.*device 0"):
        kernels.scale[2, 128, s0](b1, np.float32(2), b1)
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), x)


ALLOCATING_CALLS = {
    "empty": lambda x, **where: rs.empty(x.shape, x.dtype, **where),
    "empty_like": lambda x, **where: rs.empty_like(x, **where),
    "to_device": lambda x, **where: rs.to_device(x, **where),
}


@pytest.mark.parametrize("call", ALLOCATING_CALLS)
def test_a_device_other_than_the_streams_is_refused_before_anything_is_allocated(
        devices, streams, rng, call):
    x = _random(rng)
    before = [(rs.memory_stats(d)["allocations"], rs.memory_stats(d)["reserved_bytes"])
              for d in devices]
    with pytest.raises(rs.DeviceMismatchError,
                       match=rf"^{call}: device=0 is not the device of the stream \(device 1\); "
                             r"leave device out"):
        ALLOCATING_CALLS[call](x, stream=streams[1], device=0)
    assert [(rs.memory_stats(d)["allocations"], rs.memory_stats(d)["reserved_bytes"])
            for d in devices] == before


# ---- peer copies ---------------------------------------------------------------------------
@pytest.mark.parametrize("on", ["destination", "source"])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_a_peer_copy_is_exact(devices, streams, rng, on, dtype):
    x = (rng.standard_normal(10_000) * 1000).astype(dtype)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    stream = streams[1] if on == "destination" else streams[0]
    rs.copy_async(b1, a0, stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(b1.copy_to_host(stream=streams[1]), x)


def test_a_peer_copy_takes_the_runtimes_peer_call(devices, streams, rng, stream_calls):
    seen = []
    stream_calls("memcpy_peer_async", lambda original: lambda self, *a: (seen.append(a[1::2]),
                                                                         original(self, *a)))
    x = _random(rng)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    rs.copy_async(b1, a0, stream=streams[1])
    np.testing.assert_array_equal(b1.copy_to_host(stream=streams[1]), x)
    assert seen == [(1, 0)]


def test_a_peer_copy_without_peer_access_is_staged_through_the_host(devices, streams, rng,
                                                                    runtime, monkeypatch,
                                                                    stream_calls):
    monkeypatch.setattr(runtime, "peer_access", lambda device, peer: device == peer)
    direct = []
    stream_calls("memcpy_peer_async", lambda original: lambda self, *a: direct.append(a))
    x = _random(rng, 50_000)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    with rs.configure(staging_chunk_bytes=16 << 10, staging_buffers=2):
        rs.copy_async(b1, a0, stream=streams[1])  # 13 chunks through 2 buffers
    np.testing.assert_array_equal(b1.copy_to_host(stream=streams[1]), x)
    assert direct == []


def test_ctrl_c_ends_a_host_staged_peer_copy_waiting_behind_a_busy_stream(
        devices, streams, rng, runtime, monkeypatch, gate, ctrl_c):
    monkeypatch.setattr(runtime, "peer_access", lambda device, peer: device == peer)
    x = _random(rng, 50_000)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    s1 = streams[1]
    with rs.configure(staging_chunk_bytes=16 << 10, staging_buffers=2):
        gate.hold(s1)
        net = threading.Timer(3.0, gate.set)  # a wait that ignores Ctrl-C fails, never hangs
        net.start()
        start = time.perf_counter()
        sent = ctrl_c(0.2)
        try:
            rs.copy_async(b1, a0, stream=s1)  # 13 chunks through 2 buffers held by the gate
        except KeyboardInterrupt:
            took = time.perf_counter() - sent[0]
        else:
            returned = time.perf_counter() - start
            late = None
            try:
                time.sleep(2)
            except KeyboardInterrupt:
                late = time.perf_counter() - start
            raise AssertionError(f"the copy returned after {returned:.3f} s (gate set: "
                                 f"{gate.is_set()}) without KeyboardInterrupt; the signal, "
                                 f"sent at {sent[0] - start if sent else None} s, reached this "
                                 f"thread at {late} s")
        net.cancel()
        gate.set()
        rs.copy_async(b1, a0, stream=s1)
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), x)
    assert took < 0.5, f"Ctrl-C took {took * 1e3:.0f} ms to end the staged peer copy"


def test_a_captured_peer_copy_replays_exactly(devices, streams, rng):
    x = _random(rng)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    s1 = streams[1]
    with s1.capture() as graph:
        rs.copy_async(b1, a0, stream=s1)
    graph.launch(s1)
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), x)
    graph.close()


def test_a_staged_peer_copy_is_refused_in_a_capture(devices, streams, rng, runtime,
                                                    monkeypatch):
    monkeypatch.setattr(runtime, "peer_access", lambda device, peer: device == peer)
    x = _random(rng)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    s1 = streams[1]
    with pytest.raises(rs.CaptureError, match="cannot reach each other"):
        with s1.capture():
            rs.copy_async(b1, a0, stream=s1)
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), np.zeros_like(x))


@pytest.mark.skipif(rs.backend().name != "cpu", reason="reads the cpu backend's bookkeeping")
def test_a_peer_copy_enables_access_from_the_streams_device(devices, streams, rng, runtime):
    x = _random(rng)
    a0, b1 = _on(0, x), _on(1, np.zeros_like(x))
    for _ in range(3):
        rs.copy_async(b1, a0, stream=streams[1])
    streams[1].synchronize()
    assert (1, 0) in runtime.peers_enabled()


def test_an_array_dropped_after_a_peer_copy_is_freed_after_the_copy(devices, streams, gate,
                                                                    rng):
    s0, s1 = streams
    x = _random(rng)
    a0 = rs.to_device(x, stream=s0)
    b1 = rs.empty(x.shape, x.dtype, stream=s1)
    s0.synchronize()
    before = rs.memory_stats(0)["in_use_bytes"]
    gate.hold(s1)
    rs.copy_async(b1, a0, stream=s1)
    del a0
    gc.collect()
    lifetime.drain()
    # the free waits (on the device) for the copy on device 1's stream: reuse cannot clobber it
    clobber = rs.to_device(np.zeros_like(x), stream=s0)
    gate.set()
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), x)
    assert rs.memory_stats(0)["in_use_bytes"] == before
    del clobber


# ---- per-device state ----------------------------------------------------------------------
def test_work_on_the_default_stream_of_device_1_runs_there(devices, rng):
    x = _random(rng)
    d1 = rs.default_stream(device=1)
    a = rs.to_device(x, device=1)  # on device 1's legacy stream, device 0 current
    assert a.device == 1
    np.testing.assert_array_equal(a.copy_to_host(stream=d1), x)


def test_a_copy_without_a_stream_runs_on_the_default_stream_of_the_arrays_device(devices,
                                                                                rng):
    x = _random(rng)
    a = rs.to_device(x, device=1)
    np.testing.assert_array_equal(a.copy_to_host(), x)  # device 0 current


def test_each_device_has_its_own_memory_pool(devices, streams, rng):
    before = [rs.memory_stats(d) for d in devices]
    a = rs.empty(1 << 16, np.uint8, stream=streams[1])
    after = [rs.memory_stats(d) for d in devices]
    assert after[1]["in_use_bytes"] - before[1]["in_use_bytes"] == 1 << 16
    assert after[0]["in_use_bytes"] == before[0]["in_use_bytes"]
    assert after[1]["reserved_bytes"] >= 1 << 16
    del a


def test_each_device_has_its_own_priority_range(devices):
    for d in devices:
        least, greatest = rs.priority_range(d)
        s = rs.RocmStream(device=d, priority=greatest)
        assert (s.device, s.priority) == (d, greatest)
        s.close()


def test_a_kernel_launched_on_device_1_runs_there_with_its_own_launcher(devices, streams, rng,
                                                                         kernels):
    from rocmstreams.integrations.numba.dispatch import launcher_of
    from rocmstreams.backends import active
    s0, s1 = streams
    x = _random(rng, 512)
    a0, b1 = rs.to_device(x, stream=s0), rs.to_device(x, stream=s1)
    kernels.scale[4, 128, s0](a0, np.float32(2), a0)
    launch = kernels.scale[4, 128, s1]
    launch(b1, np.float32(3), b1)
    assert launch.launcher.launcher is launcher_of(active(), kernels.scale, 1)
    assert launcher_of(active(), kernels.scale, 1) is not launcher_of(active(), kernels.scale, 0)
    np.testing.assert_array_equal(a0.copy_to_host(stream=s0), x * 2)
    np.testing.assert_array_equal(b1.copy_to_host(stream=s1), x * 3)


def test_a_pipeline_on_each_device_from_its_own_thread_is_exact(devices, rng, kernels):
    xs = [_random(rng, 8192) for _ in devices]
    out: dict[int, np.ndarray] = {}

    def run(device: int) -> None:
        with rs.RocmStream(non_blocking=True, device=device) as s:
            a = rs.to_device(xs[device], stream=s)
            kernels.saxpy[16, 128, s](a, np.float32(2), a, a)
            out[device] = a.copy_to_host(stream=s)

    threads = [threading.Thread(target=run, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for d in devices:
        np.testing.assert_allclose(out[d], xs[d] * 3, rtol=1e-6)


# ---- real GPUs ---------------------------------------------------------------------------------
@pytest.mark.multi_gpu
def test_two_gpus_reach_each_other_or_stage(runtime):
    answer = runtime.peer_access(0, 1)
    assert isinstance(answer, bool)
    assert runtime.peer_access(0, 1) is answer  # asked once, kept
