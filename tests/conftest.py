"""Shared fixtures: every test runs on the process's backend (ROCMSTREAMS_BACKEND, else auto).

Run the suite once per backend: ``ROCMSTREAMS_BACKEND=cpu pytest``, ``...=cuda pytest``,
``...=hip pytest``. The backend is printed in the header.
"""
from __future__ import annotations

import os
import signal
import threading
import time

os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")  # tests launch tiny grids on purpose

import numpy as np
import pytest

import rocmstreams as rs


def pytest_report_header(config):
    be = rs.backend()
    return f"rocmstreams backend: {be.name} ({be.devices[0].name})"


@pytest.fixture(scope="session")
def backend():
    """The selected backend, described (rs.backend())."""
    return rs.backend()


@pytest.fixture(scope="session")
def runtime():
    """The selected backend's runtime object (internal: tests patch its calls)."""
    from rocmstreams.backends import active
    return active()


@pytest.fixture
def stream_calls(runtime, monkeypatch):
    """Patches a method of the backend's bound stream calls for the test:
    ``stream_calls("memcpy_async", wrapper_factory)``, where the factory gets the original."""
    cls = type(runtime.stream_calls(0))

    def patch(name, make):
        monkeypatch.setattr(cls, name, make(getattr(cls, name)))
    return patch


def collect():
    """Collect garbage and run the releases finalizers deferred (what the next rocmstreams call
    that creates, closes or waits does)."""
    import gc

    from rocmstreams.core import lifetime
    gc.collect()
    lifetime.drain()


@pytest.fixture(scope="session")
def kernels():
    """The shipped kernels, each compiled and run once so no test compiles while latched."""
    from rocmstreams import kernels as k
    s = rs.RocmStream(non_blocking=True)
    a = rs.to_device(np.zeros(32, np.float32), stream=s)
    k.saxpy[1, 32, s](a, np.float32(1), a, a)
    k.scale[1, 32, s](a, np.float32(1), a)
    k.add_scalar[1, 32, s](a, np.float32(1))
    counter = rs.to_device(np.zeros(1, np.int32), stream=s)
    k.stamp[1, 1, s](counter, rs.to_device(np.zeros(4, np.int32), stream=s), np.int32(0))
    with k.Latch() as gate:
        gate.hold(s)
    s.synchronize()
    s.close()
    return k


@pytest.fixture
def rng():
    return np.random.default_rng()


@pytest.fixture
def stream():
    s = rs.RocmStream(non_blocking=True)
    yield s
    if not s.is_closed:
        s.synchronize()
        s.close()


@pytest.fixture
def make_stream():
    made = []

    def make(**kwargs):
        s = rs.RocmStream(**kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        if not s.is_closed:
            s.synchronize()
            s.close()


@pytest.fixture
def latch(kernels):
    """A factory of latches; every latch is released when the test ends, pass or fail."""
    made = []

    def make():
        gate = kernels.Latch()
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.release()


class StampLog:
    """Device counter + log for the stamp kernel: ``tags()`` gives launch tags in run order."""

    def __init__(self, kernels, stream, size=256):
        self._k = kernels
        self.counter = rs.to_device(np.zeros(1, np.int32), stream=stream)
        self.log = rs.to_device(np.full(size, -1, np.int32), stream=stream)
        stream.synchronize()

    def stamp(self, stream, tag):
        self._k.stamp[1, 1, stream](self.counter, self.log, np.int32(tag))

    def tags(self, stream):
        out = self.log.copy_to_host(stream=stream)
        stream.synchronize()
        return [int(t) for t in out if t >= 0]


@pytest.fixture
def stamps(kernels, stream):
    return StampLog(kernels, stream)


@pytest.fixture
def ctrl_c():
    """``sent = ctrl_c(after)``: the process gets SIGINT (Ctrl-C) ``after`` seconds from now, and
    ``sent`` the time it was raised. It is raised from a timer thread, so no wait of the test's
    thread ends by itself: a wait ends at once only if it waits in slices, as a runtime's blocking
    wait never answers a signal. Skipped off POSIX and off the main thread."""
    if os.name != "posix":
        pytest.skip("needs POSIX signals")
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    timers = []
    # Python's own Ctrl-C handler (KeyboardInterrupt), as a user's interpreter or Jupyter kernel
    # has it: a library an earlier test used may have left its own SIGINT handler installed
    # (the first run of a fresh clone lost the signal that way, never a rerun)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def arm(after=0.2):
        sent = []
        timer = threading.Timer(after, lambda: (sent.append(time.perf_counter()),
                                                signal.raise_signal(signal.SIGINT)))
        timers.append(timer)
        timer.start()
        return sent

    yield arm
    for timer in timers:
        timer.cancel()
    signal.signal(signal.SIGINT, previous)


def safety_net(gate, seconds=3.0):
    """Release ``gate`` after ``seconds`` whatever happens: a wait that ignores Ctrl-C fails the
    test instead of hanging it."""
    timer = threading.Timer(seconds, gate.release)
    timer.start()
    return timer


needs_gpu = pytest.mark.skipif(rs.backend().name == "cpu", reason="needs a GPU backend")


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.multi_gpu`` tests need two real GPUs: skipped on the cpu backend (whose
    simulated devices the other multi-device tests use) and where fewer GPUs exist."""
    be = rs.backend()
    if be.name != "cpu" and len(be.devices) >= 2:
        return
    why = pytest.mark.skip(reason=f"needs two GPUs; the {be.name} backend has "
                                  f"{len(be.devices) if be.name != 'cpu' else 0}")
    for item in items:
        if "multi_gpu" in item.keywords:
            item.add_marker(why)
