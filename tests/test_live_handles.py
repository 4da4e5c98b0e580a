"""Create/drop loops return the live-handle counts to their baseline."""
import gc
import threading

import numpy as np

import rocmstreams as rs
from conftest import collect


def _settled():
    collect()
    rs.default_stream().synchronize()
    return rs.backend().live_handles()


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
