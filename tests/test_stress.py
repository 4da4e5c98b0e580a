"""The stress harness (tests/stress_harness.py), small, on every backend: threads feeding streams
with cross-stream waits and concurrent closes run every stamp in an order the waits allow."""
from __future__ import annotations

import pytest

import rocmstreams as rs
import stress_harness


def test_threads_streams_waits_and_closes_keep_every_ordering_edge(kernels):
    report = stress_harness.run(ops=1500, streams=16, threads=8, seed=3)
    print(report)
    assert report.errors == []
    assert report.ops == 1500 and report.waits > 0 and report.closes > 0
    assert report.violations == 0


@pytest.mark.skipif(rs.backend().name != "cpu", reason="on a GPU a dropped wait shows only "
                    "by chance; the cpu workers run a dropped wait's stamps out of order")
def test_the_harness_catches_a_dropped_event_wait(kernels, stream_calls):
    stream_calls("wait_event", lambda real: lambda self, event: None)
    report = stress_harness.run(ops=3000, streams=16, threads=8, seed=1)
    assert report.violations > 0, report
