"""Page-locked host memory from a cache: dropping a pinned array never waits, and a block is not
handed out again before every stream that used it has passed that use. Latches make the order
certain (no timing); on cpu a held latch stalls kernels, and copies queued behind it on its
stream wait for it like any work there."""
import threading

import numpy as np
import pytest

import rocmstreams as rs
from conftest import collect
from rocmstreams import pinned

N = 4096  # 16 KiB of float32: below the staging threshold, so copies go to the runtime as-is


def test_dropping_a_pinned_array_a_latched_stream_copies_from_leaves_that_stream_busy(
        latch, stream, rng):
    expected = rng.random(N, dtype=np.float32)
    src = rs.pinned_empty(N, np.float32)
    src[:] = expected
    d = rs.empty(N, np.float32, stream=stream)
    gate = latch().hold(stream)
    rs.copy_async(d, src, stream=stream)  # reads src once the latch lets go
    del src
    collect()  # the release runs here: were it the runtime's free, it would wait for the latch
    assert not stream.query(), "dropping the pinned array waited for the latched stream"
    gate.release()
    stream.synchronize()
    assert gate.released, f"latch timed out after {gate.polls} polls"


def test_a_dropped_pinned_array_is_not_handed_out_before_the_stream_that_reads_it_passes(
        latch, stream, rng):
    expected = rng.random(N, dtype=np.float32)
    src = rs.pinned_empty(N, np.float32)
    src[:] = expected
    d = rs.empty(N, np.float32, stream=stream)
    gate = latch().hold(stream)
    rs.copy_async(d, src, stream=stream)
    del src
    collect()
    garbage = [rs.pinned_empty(N, np.float32) for _ in range(4)]  # the same size class
    for g in garbage:
        g[:] = -7
    assert not stream.query(), "the latch let go early: the test proves nothing"
    gate.release()
    out = rs.pinned_empty(N, np.float32)
    rs.copy_async(out, d, stream=stream)
    stream.synchronize()
    assert gate.released, f"latch timed out after {gate.polls} polls"
    np.testing.assert_array_equal(out, expected)


def test_a_dropped_pinned_array_is_not_handed_out_before_the_stream_that_writes_it_passes(
        latch, stream, rng):
    d = rs.to_device(rng.random(N, dtype=np.float32), stream=stream)
    dst = rs.pinned_empty(N, np.float32)
    gate = latch().hold(stream)
    rs.copy_async(dst, d, stream=stream)  # writes dst once the latch lets go
    del dst
    collect()
    fresh = [rs.pinned_empty(N, np.float32) for _ in range(4)]
    for f in fresh:
        f[:] = 3
    assert not stream.query(), "the latch let go early: the test proves nothing"
    gate.release()
    stream.synchronize()
    assert gate.released, f"latch timed out after {gate.polls} polls"
    for f in fresh:
        np.testing.assert_array_equal(f, np.full(N, 3, np.float32))


def test_a_pinned_array_of_another_threads_per_thread_stream_is_not_reused_before_it_passes(
        rng):
    """The event that guards the block is recorded by the thread whose per-thread default
    stream copied from it, so the stream is that thread's own (held by a gate a timer opens)."""
    expected = rng.random(N, dtype=np.float32)
    d = rs.empty(N, np.float32)
    gate = threading.Event()
    done = []

    def work():
        s = rs.per_thread_default_stream()
        src = rs.pinned_empty(N, np.float32)
        src[:] = expected
        s.launch_host_func(gate.wait, 10)
        rs.copy_async(d, src, stream=s)  # reads src once the gate opens
        done.append(s.record())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    collect()  # src's release runs here, on this thread
    garbage = [rs.pinned_empty(N, np.float32) for _ in range(4)]
    for g in garbage:
        g[:] = -7
    gate.set()
    done[0].synchronize()
    out = rs.pinned_empty(N, np.float32)
    rs.copy_async(out, d, stream=rs.default_stream())
    rs.default_stream().synchronize()
    np.testing.assert_array_equal(out, expected)


def test_fresh_pinned_arrays_in_a_loop_do_not_grow_memory(stream):
    d = rs.empty(N, np.float32, stream=stream)
    stream.synchronize()
    collect()
    base = rs.memory_stats()
    for i in range(2000):
        h = rs.pinned_empty(N, np.float32)
        h[:] = i
        rs.copy_async(d, h, stream=stream)
        del h
        if i % 100 == 99:  # at most 100 copies in flight (on cpu the loop outruns the stream)
            stream.synchronize()
    stream.synchronize()
    collect()
    after = rs.memory_stats()
    assert after["pinned_in_use_bytes"] == base["pinned_in_use_bytes"]
    # the cache hands out blocks the stream has passed: as many as copies were in flight at
    # once, not 2000
    assert after["pinned_allocations"] - base["pinned_allocations"] <= 250
    assert after["pinned_reuses"] - base["pinned_reuses"] >= 2000 - 250


def test_empty_cache_gives_cached_blocks_back_to_the_runtime(backend, stream):
    stream.synchronize()
    rs.empty_cache()
    arrays = [rs.pinned_empty(N, np.float32) for _ in range(3)]
    d = rs.empty(N, np.float32, stream=stream)
    for a in arrays:
        rs.copy_async(d, a, stream=stream)
    stream.synchronize()
    del arrays, a
    collect()
    cached = rs.memory_stats()["pinned_cached_bytes"]
    assert cached >= 3 * N * 4
    held = backend.live_handles()["allocations"]
    rs.empty_cache()
    # (blocks a stream of another test may still use would stay)
    assert rs.memory_stats()["pinned_cached_bytes"] <= cached - 3 * N * 4
    assert backend.live_handles()["allocations"] <= held - 3


def test_empty_cache_keeps_a_block_a_latched_stream_still_copies_from(latch, stream):
    stream.synchronize()
    rs.empty_cache()  # nothing cached: the call below has nothing it may free (a runtime free
    src = rs.pinned_empty(N, np.float32)  # of page-locked memory would wait for the device)
    src[:] = 5
    d = rs.empty(N, np.float32, stream=stream)
    gate = latch().hold(stream)
    rs.copy_async(d, src, stream=stream)
    del src
    collect()
    rs.empty_cache()
    assert not stream.query()
    assert rs.memory_stats()["pinned_cached_bytes"] >= N * 4
    gate.release()
    stream.synchronize()
    assert gate.released, f"latch timed out after {gate.polls} polls"
    cached = rs.memory_stats()["pinned_cached_bytes"]
    rs.empty_cache()
    assert rs.memory_stats()["pinned_cached_bytes"] <= cached - N * 4


def test_memory_stats_count_pinned_bytes_in_use_by_size_class():
    collect()
    before = rs.memory_stats()["pinned_in_use_bytes"]
    a = rs.pinned_empty(1000, np.float32)
    assert rs.memory_stats()["pinned_in_use_bytes"] == before + pinned.size_class(a.nbytes)
    del a
    collect()
    assert rs.memory_stats()["pinned_in_use_bytes"] == before


def test_a_pinned_array_given_to_device_view_goes_back_to_the_runtime_not_the_cache():
    rs.empty_cache()
    before = rs.memory_stats()["pinned_cached_bytes"]
    a = rs.pinned_empty(N, np.float32)
    rs.device_view(a)  # kernels may read it on streams the cache cannot see
    del a
    collect()
    assert rs.memory_stats()["pinned_cached_bytes"] == before


@pytest.mark.parametrize("nbytes", [0, 1, 512, 513, 4000, 4096, 5000, 1 << 20, (1 << 24) + 1])
def test_size_classes_fit_the_request_and_waste_at_most_a_quarter(nbytes):
    size = pinned.size_class(nbytes)
    assert size >= max(nbytes, 512)
    assert nbytes <= 512 or size <= nbytes * 1.25
    assert pinned.size_class(size) == size
