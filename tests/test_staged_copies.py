"""Copies from pageable memory staged through page-locked buffers (rocmstreams.staging).

The ``staged`` fixture shrinks the threshold, chunk and slice sizes so that small arrays cross
many chunks, several buffers and several host threads on every backend.
"""
import threading
import time

import numpy as np
import pytest

import rocmstreams as rs
from rocmstreams import staging
from conftest import safety_net

THRESHOLD = 4096
CHUNK = 3000  # not a multiple of any itemsize above 8: elements straddle chunks
BUFFERS = 2


@pytest.fixture
def staged():
    with rs.configure(staging_min_bytes=THRESHOLD, staging_chunk_bytes=CHUNK,
                      staging_buffers=BUFFERS, staging_threads=3, staging_min_slice_bytes=512):
        yield staging
    staging.free_buffers()


@pytest.fixture
def device_copies(stream_calls):
    """Every memcpy_async the backend is asked for, as (dst, src, nbytes, stream)."""
    calls = []

    def make(real):
        def counting(self, dst, src, nbytes):
            calls.append((dst, src, nbytes, self.handle))
            real(self, dst, src, nbytes)
        return counting

    stream_calls("memcpy_async", make)
    return calls


def _random(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _back(d, stream):
    out = rs.pinned_empty(d.shape, d.dtype)
    d.copy_to_host(out, stream=stream)
    stream.synchronize()
    return np.array(out)


def _chunks(nbytes):
    return -(-nbytes // CHUNK)


def test_pageable_copies_below_the_threshold_go_to_the_runtime_in_one_piece(
        staged, device_copies, stream, rng):
    x = _random(rng, THRESHOLD // 4 - 1, np.float32)
    d = rs.to_device(x, stream=stream)
    assert len(device_copies) == 1 and device_copies[0][2] == x.nbytes
    np.testing.assert_array_equal(_back(d, stream), x)


@pytest.mark.parametrize("nbytes", [THRESHOLD, THRESHOLD + 8, 7 * CHUNK, 7 * CHUNK + 1000,
                                    41 * CHUNK - 8])
def test_pageable_copies_from_the_threshold_up_go_in_chunks_and_arrive_whole(
        staged, device_copies, stream, rng, nbytes):
    x = _random(rng, nbytes // 8, np.float64)
    d = rs.empty_like(x)
    rs.copy_async(d, x, stream=stream)
    sizes = [n for _, _, n, _ in device_copies]
    assert len(sizes) == _chunks(nbytes) and sum(sizes) == nbytes
    assert all(n == CHUNK for n in sizes[:-1])
    assert {s for *_, s in device_copies} == {stream.handle}
    np.testing.assert_array_equal(_back(d, stream), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8, np.complex128,
                                   np.bool_])
@pytest.mark.parametrize("shape", [(5003,), (37, 61), (7, 11, 29)])
def test_staged_copies_deliver_every_dtype_and_shape(staged, stream, rng, dtype, shape):
    x = _random(rng, shape, dtype)
    if x.nbytes < THRESHOLD:
        x = _random(rng, (4,) + shape, dtype)
    d = rs.to_device(x, stream=stream)
    out = _back(d, stream)
    assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(out, x)


def test_to_device_copy_from_and_copy_async_all_stage_pageable_sources(
        staged, device_copies, stream, rng):
    x = _random(rng, (40, 100), np.float32)
    a = rs.to_device(x, stream=stream)
    b = rs.empty_like(x).copy_from(x, stream=stream)
    c = rs.empty_like(x)
    rs.copy_async(c, x, stream=stream)
    assert len(device_copies) == 3 * _chunks(x.nbytes)
    for d in (a, b, c):
        np.testing.assert_array_equal(_back(d, stream), x)


def test_page_locked_sources_are_never_staged(staged, device_copies, stream, rng):
    x = rs.pinned_empty(10 * CHUNK // 4, np.float32)
    x[:] = _random(rng, x.shape, np.float32)
    d = rs.to_device(x[3:], stream=stream)  # a view of page-locked memory is page-locked too
    assert len(device_copies) == 1
    np.testing.assert_array_equal(_back(d, stream), x[3:])


def test_the_source_may_be_overwritten_as_soon_as_the_call_returns(
        staged, monkeypatch, latch, stream, rng):
    rs.configure(staging_buffers=8)  # room for every chunk: the call cannot block
    x = _random(rng, 5 * CHUNK // 8, np.float64)
    expected = x.copy()
    d = rs.empty_like(x)
    with latch() as gate:
        gate.hold(stream)
        rs.copy_async(d, x, stream=stream)
        assert not stream.query()  # the call returned before any device copy ran
        x[:] = -1.0
    np.testing.assert_array_equal(_back(d, stream), expected)


def test_a_staging_buffer_is_refilled_only_after_its_device_copy_ran(staged, latch, stream, rng):
    x = _random(rng, 6 * CHUNK // 4, np.float32)  # 6 chunks through 2 buffers
    d = rs.empty_like(x)
    done = threading.Event()
    failure = []

    def copy():
        try:
            rs.copy_async(d, x, stream=stream)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failure.append(exc)
        done.set()

    with latch() as gate:
        gate.hold(stream)
        worker = threading.Thread(target=copy)
        worker.start()
        # Held behind the latch, the first two chunks' copies cannot run, so the third chunk
        # has no free buffer: the call must still be waiting, however long we look.
        assert not done.wait(0.3)
    worker.join(30)
    assert done.is_set() and not failure, failure
    np.testing.assert_array_equal(_back(d, stream), x)


def test_a_kernel_queued_after_a_staged_copy_sees_all_of_it(staged, kernels, stream, rng):
    x = _random(rng, 9 * CHUNK // 4 + 5, np.float32)
    a = np.float32(rng.uniform(0.5, 2.0))
    d = rs.to_device(x, stream=stream)
    out = rs.empty_like(x)
    kernels.scale[8, 64, stream](out, a, d)
    np.testing.assert_array_equal(_back(out, stream), a * x)


def test_a_staged_copy_runs_after_a_kernel_queued_before_it(staged, kernels, stream, rng):
    x = _random(rng, 9 * CHUNK // 4 + 5, np.float32)
    d = rs.to_device(np.zeros_like(x), stream=stream)
    kernels.scale[8, 64, stream](d, np.float32(3), d)  # writes d; the copy must land after it
    rs.copy_async(d, x, stream=stream)
    np.testing.assert_array_equal(_back(d, stream), x)


def test_staged_copies_on_the_legacy_default_stream(staged, rng):
    x = _random(rng, 5 * CHUNK // 2, np.int16)
    d = rs.to_device(x)
    np.testing.assert_array_equal(_back(d, rs.default_stream()), x)


def test_staged_copies_from_several_threads_at_once_do_not_mix(staged, make_stream, rng):
    streams = [make_stream(non_blocking=True) for _ in range(4)]
    sources = [_random(rng, 23 * CHUNK // 8 + i, np.float64) for i in range(4)]
    results, failures = [None] * 4, []

    def run(i):
        try:
            d = rs.empty_like(sources[i])
            for _ in range(5):
                rs.copy_async(d, sources[i], stream=streams[i])
            results[i] = _back(d, streams[i])
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    for x, out in zip(sources, results):
        np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("stage_d2h", [False, True])
def test_copies_into_pageable_memory_hold_the_data_when_the_call_returns(
        staged, monkeypatch, device_copies, kernels, stream, rng, stage_d2h):
    restore = rs.configure(stage_device_to_host=stage_d2h)
    x = _random(rng, 11 * CHUNK // 4 + 3, np.float32)
    src = rs.pinned_empty(x.shape, x.dtype)
    src[:] = x
    d = rs.to_device(src, stream=stream)
    kernels.scale[8, 64, stream](d, np.float32(2), d)
    out = np.full_like(x, np.nan)
    del device_copies[:]
    d.copy_to_host(out, stream=stream)  # no synchronize: a pageable destination is filled
    np.testing.assert_array_equal(out, np.float32(2) * x)
    assert len(device_copies) == (_chunks(x.nbytes) if stage_d2h else 1)
    rs.configure(**vars(restore.previous))


@pytest.mark.parametrize("case", ["shape", "dtype", "non_contiguous", "read_only_destination"])
def test_bad_pageable_copies_are_refused_with_nothing_queued(
        staged, device_copies, stream, rng, case):
    x = _random(rng, 4 * CHUNK // 4, np.float32)
    d = rs.empty_like(x)
    calls = {
        "shape": lambda: rs.copy_async(d, _random(rng, x.size + 1, np.float32), stream=stream),
        "dtype": lambda: rs.copy_async(d, x.astype(np.float64), stream=stream),
        "non_contiguous": lambda: rs.copy_async(d, np.repeat(x, 2)[::2], stream=stream),
        "read_only_destination": lambda: rs.copy_async(
            np.frombuffer(x.tobytes(), np.float32), d, stream=stream),
    }
    with pytest.raises(ValueError):
        calls[case]()
    assert device_copies == []
    rs.copy_async(d, x, stream=stream)  # the stream is still usable
    np.testing.assert_array_equal(_back(d, stream), x)


@pytest.mark.parametrize("direction", ["to_device", "to_host"])
@pytest.mark.parametrize("nbytes", [64, 4 * CHUNK])
def test_pageable_copies_on_a_capturing_stream_raise_capture_error_before_queueing(
        staged, device_copies, kernels, stream, rng, direction, nbytes):
    x = _random(rng, nbytes // 4, np.float32)
    d = rs.empty_like(x)
    pinned = rs.pinned_empty(x.shape, x.dtype)
    pinned[:] = x
    with stream.capture() as graph:
        with pytest.raises(rs.CaptureError, match="pinned_empty"):
            if direction == "to_device":
                rs.copy_async(d, x, stream=stream)
            else:
                rs.copy_async(np.empty_like(x), d, stream=stream)
        assert device_copies == []
        rs.copy_async(d, pinned, stream=stream)  # page-locked copies are capturable
    assert len(device_copies) == 1
    graph.launch(stream)
    np.testing.assert_array_equal(_back(d, stream), x)
    graph.close()


def test_empty_cache_returns_the_staging_buffers_page_locked_memory(staged, backend, stream,
                                                                    rng):
    stream.synchronize()
    rs.empty_cache()  # nothing cached: the buffers below are new
    base = backend.live_handles()
    x = _random(rng, 8 * CHUNK // 4, np.float32)
    d = rs.to_device(x, stream=stream)
    e = rs.to_device(x, stream=stream)  # the second copy reuses the first one's buffers
    grown = {k: v - base[k] for k, v in backend.live_handles().items()}
    assert grown["allocations"] == 2 + BUFFERS and grown["events"] == BUFFERS
    stream.synchronize()
    rs.empty_cache()
    assert backend.live_handles() == {**base, "allocations": base["allocations"] + 2}
    for out in (d, e):
        np.testing.assert_array_equal(_back(out, stream), x)


def test_free_buffers_gives_the_buffers_to_the_pinned_cache_without_waiting(staged, latch,
                                                                            stream, rng):
    """A staging buffer a latched stream still copies from goes back to the cache at once, and
    is not handed out again before the stream has read it."""
    x = _random(rng, BUFFERS * CHUNK // 4, np.float32)  # one chunk per buffer: no host wait
    gate = latch().hold(stream)
    d = rs.to_device(x, stream=stream)  # the chunks wait in the buffers behind the latch
    before = rs.memory_stats()
    staging.free_buffers()
    after = rs.memory_stats()
    assert not stream.query(), "giving the buffers back waited for the latched stream"
    assert after["pinned_cached_bytes"] > before["pinned_cached_bytes"]
    garbage = [rs.pinned_empty(CHUNK, np.uint8) for _ in range(2 * BUFFERS)]
    for g in garbage:
        g[:] = 0xEE
    gate.release()
    np.testing.assert_array_equal(_back(d, stream), x)
    assert gate.released, f"latch timed out after {gate.polls} polls"


def test_a_larger_chunk_size_replaces_the_smaller_pooled_buffers(staged, monkeypatch, stream,
                                                                 rng):
    x = _random(rng, 10 * CHUNK // 4, np.float32)
    first = rs.to_device(x, stream=stream)
    rs.configure(staging_chunk_bytes=2 * CHUNK + 4)  # the staged fixture restores it
    y = _random(rng, 10 * CHUNK // 4, np.float32)
    second = rs.to_device(y, stream=stream)
    np.testing.assert_array_equal(_back(first, stream), x)
    np.testing.assert_array_equal(_back(second, stream), y)


def test_ctrl_c_ends_a_staged_copy_waiting_behind_a_busy_stream_and_the_stream_stays_usable(
        staged, latch, ctrl_c, stream, rng):
    x = _random(rng, 10 * CHUNK // 4, np.float32)  # 10 chunks through 2 buffers
    with latch() as gate:
        gate.hold(stream)
        net = safety_net(gate)
        sent = ctrl_c(0.2)
        with pytest.raises(KeyboardInterrupt):
            rs.to_device(x, stream=stream)
        took = time.perf_counter() - sent[0]
    net.cancel()
    stream.synchronize()
    assert took < 0.5, f"Ctrl-C took {took * 1e3:.0f} ms to end the staged copy"
    y = _random(rng, 10 * CHUNK // 4, np.float32)
    np.testing.assert_array_equal(_back(rs.to_device(y, stream=stream), stream), y)


def test_the_buffers_of_an_interrupted_staged_copy_are_refilled_only_after_its_device_copies_ran(
        staged, latch, ctrl_c, stream, make_stream, rng):
    x = _random(rng, 10 * CHUNK // 4, np.float32)
    other = make_stream(non_blocking=True)
    y = _random(rng, 6 * CHUNK // 4, np.float32)
    d = rs.empty_like(y, stream=other)
    done = threading.Event()
    with latch() as gate:
        gate.hold(stream)
        net = safety_net(gate)
        ctrl_c(0.2)
        with pytest.raises(KeyboardInterrupt):
            rs.to_device(x, stream=stream)  # leaves two chunks queued behind the latch
        worker = threading.Thread(target=lambda: (rs.copy_async(d, y, stream=other), done.set()))
        worker.start()
        # the pool's buffers are the interrupted copy's, their device copies held by the latch
        assert not done.wait(0.3)
    net.cancel()
    worker.join(30)
    assert done.is_set()
    np.testing.assert_array_equal(_back(d, other), y)
