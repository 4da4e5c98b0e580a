"""Blocking streams synchronize with the legacy default stream; non-blocking ones do not."""
import time

import rocmstreams as rs


def _settle(seconds=0.2):
    time.sleep(seconds)


def test_legacy_default_stream_work_waits_for_a_blocking_stream(latch, make_stream):
    blocking = make_stream(non_blocking=False)
    legacy = rs.default_stream()
    gate = latch().hold(blocking)
    ran = []
    legacy.launch_host_func(ran.append, "legacy")
    _settle()
    assert ran == [] and not legacy.query()
    gate.release()
    legacy.synchronize()
    assert ran == ["legacy"]


def test_legacy_default_stream_work_does_not_wait_for_a_non_blocking_stream(latch, make_stream):
    free = make_stream(non_blocking=True)
    legacy = rs.default_stream()
    gate = latch().hold(free)
    ran = []
    legacy.launch_host_func(ran.append, "legacy")
    legacy.synchronize()
    assert ran == ["legacy"] and not free.query()
    gate.release()
    free.synchronize()


def test_blocking_stream_work_waits_for_the_legacy_default_stream(latch, make_stream):
    blocking = make_stream(non_blocking=False)
    free = make_stream(non_blocking=True)
    legacy = rs.default_stream()
    gate = latch().hold(legacy)
    ran = []
    blocking.launch_host_func(ran.append, "blocking")
    free.launch_host_func(ran.append, "free")
    free.synchronize()
    _settle()
    assert ran == ["free"] and not blocking.query()
    gate.release()
    blocking.synchronize()
    assert ran == ["free", "blocking"]
