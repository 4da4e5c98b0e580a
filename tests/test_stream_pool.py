"""Closed idle streams are kept and reused by the next RocmStream with the same device and options
(GPU backends); a stream closed while its work runs is never handed to a new RocmStream."""
import numpy as np

import rocmstreams as rs
from conftest import needs_gpu

pytestmark = needs_gpu


def test_a_new_stream_reuses_an_idle_closed_one_and_runs_work_as_a_new_stream(kernels, rng):
    old = rs.RocmStream(non_blocking=True, priority=0)
    handle = old.handle
    old.close()
    new = rs.RocmStream(non_blocking=True, priority=0)
    try:
        assert new.handle == handle and new.query()
        assert new != old and not new.is_closed
        x = rng.random(256, dtype=np.float32)
        d = rs.to_device(x, stream=new)
        kernels.scale[2, 128, new](d, np.float32(3), d)
        np.testing.assert_array_equal(d.copy_to_host(stream=new), np.float32(3) * x)
    finally:
        new.synchronize()
        new.close()


def test_a_stream_closed_while_its_work_runs_is_not_reused(kernels, latch):
    busy = rs.RocmStream(non_blocking=True)
    gate = latch().hold(busy)
    held = busy.record()
    busy.close()
    fresh = [rs.RocmStream(non_blocking=True) for _ in range(4)]
    try:
        # (the runtime may give a new stream the address of the destroyed one: compare work)
        assert not held.query(), "the latch let go too early for this test to mean anything"
        assert all(s.query() for s in fresh), "a new stream carries the closed stream's work"
    finally:
        gate.release()
        for s in fresh:
            s.close()


def test_streams_of_other_options_do_not_share_the_pool():
    low, high = rs.priority_range()
    a = rs.RocmStream(non_blocking=True, priority=low)
    handle = a.handle
    a.close()
    b = rs.RocmStream(non_blocking=False, priority=low)
    c = rs.RocmStream(non_blocking=True, priority=high) if high != low else None
    try:
        assert b.handle != handle and (c is None or c.handle != handle)
    finally:
        b.close()
        if c is not None:
            c.close()
