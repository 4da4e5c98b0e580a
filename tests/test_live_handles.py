"""Create/drop loops return the live-handle counts to their baseline."""
import gc
import os
import threading

import numpy as np
import pytest

import rocmstreams as rs
from conftest import collect


def _settled():
    """Live handle counts once garbage is collected and the device is idle. Streams waiting in
    the reuse pool are not live ones (the pool is bounded: checked here); a loop's first closes
    may fill it, so they are left out of the counts compared."""
    collect()
    rs.default_stream().synchronize()
    counts = rs.backend().live_handles()
    pooled = counts.pop("pooled_streams", 0)
    assert pooled <= 4 * rs.config().stream_pool_size  # (blocking, non-blocking) x priorities
    return counts


def test_streams_events_and_memory_return_to_baseline_after_create_drop_loops():
    base = _settled()
    threads = threading.active_count()
    for i in range(200):
        s = rs.RocmStream(non_blocking=bool(i % 2))
        ev = s.record(timing=bool(i % 3))
        d = rs.empty(1024, np.float32)
        rs.copy_async(d, np.zeros(1024, np.float32), stream=s)
        if i % 4 == 0:
            s.close()
        del s, ev, d
    after = _settled()
    assert after == base
    if rs.backend().name == "cpu":  # each cpu stream is a real thread: they must be gone too
        for _ in range(200):
            if threading.active_count() <= threads:
                break
            import time
            time.sleep(0.01)
        assert threading.active_count() <= threads


def test_with_blocks_leave_nothing_behind():
    base = _settled()
    for _ in range(50):
        with rs.RocmStream() as s:
            s.record()
    assert _settled() == base


CYCLES = int(os.environ.get("ROCMSTREAMS_LEAK_CYCLES", "2000"))


def _threads_settle(limit, timeout=10.0):
    import time
    deadline = time.monotonic() + timeout
    while threading.active_count() > limit and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


def test_many_create_close_cycles_leave_no_handle_or_thread_behind():
    base = _settled()
    threads = threading.active_count()
    for _ in range(CYCLES):
        rs.RocmStream(non_blocking=True).close()
        rs.Event().close()
    assert _settled() == base
    assert _threads_settle(threads) <= threads


def test_threads_creating_and_dropping_objects_leave_nothing_behind():
    base = _settled()
    threads = threading.active_count()
    errors = []

    def work():
        try:
            for i in range(CYCLES // 8):
                s = rs.RocmStream(non_blocking=bool(i % 2))
                s.record()
                rs.empty(64, np.uint8)
                del s  # dropped, not closed: released through the queue
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors
    assert _settled() == base
    assert _threads_settle(threads + 1) <= threads + 1  # a waiter thread may have been made


def test_objects_in_reference_cycles_are_released_once_collected():
    base = _settled()

    class Node:
        def __init__(self):
            self.me = self
            self.stream = rs.RocmStream()
            self.event = self.stream.record()
            self.array = rs.empty(256, np.float32)

    nodes = [Node() for _ in range(100)]
    del nodes
    assert _settled() == base


def test_out_of_memory_is_a_clear_error_and_the_stream_stays_usable(stream, kernels):
    too_big = 1 << 62
    with pytest.raises(rs.OutOfMemoryError) as info:
        rs.empty(too_big, np.uint8)
    assert isinstance(info.value, MemoryError)
    assert "allocate less" in str(info.value) or "free memory" in str(info.value)
    a = rs.to_device(np.zeros(16, np.float32), stream=stream)
    kernels.add_scalar[1, 16, stream](a, np.float32(3))
    np.testing.assert_array_equal(a.copy_to_host(stream=stream), np.full(16, 3, np.float32))
