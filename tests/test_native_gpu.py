"""On a GPU backend with the compiled layer built, the hot calls are the compiled ones, and they
answer as the binding's calls do (the rest of the suite checks the behaviour itself)."""
from __future__ import annotations

import linecache
import threading

import numpy as np
import pytest

import rocmstreams as rs
from rocmstreams.backends import native
from rocmstreams.backends.runtime import NativeStreamCalls
from rocmstreams.kernels import cuda

pytestmark = pytest.mark.skipif(rs.backend().name == "cpu" or not native.built(),
                                reason="needs a GPU backend and the compiled layer built")


@cuda.jit
def add_one(out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] += 1


def test_the_backend_reports_the_compiled_calls_in_use():
    assert rs.backend().native_calls is True


def test_a_stream_queries_synchronizes_and_records_through_the_compiled_calls(stream):
    assert isinstance(stream.__rocmstreams_core__.calls, NativeStreamCalls)
    assert isinstance(rs.default_stream().__rocmstreams_core__.calls, NativeStreamCalls)


def test_a_prepared_launch_goes_through_the_compiled_launch_call(stream):
    out = rs.to_device(np.zeros(64, np.float32), stream=stream)
    for _ in range(3):
        add_one[1, 64, stream](out)
    sources = ["".join(linecache.cache[name][2]) for name in list(linecache.cache)
               if str(name).startswith("<rocmstreams prepared launch") and "add_one" in name]
    assert sources and "compiled launch call" in sources[-1], sources
    assert np.all(out.copy_to_host(stream=stream) == 3)


def _every_hot_call(stream: rs.RocmStream, latch) -> None:
    gate = latch().hold(stream)
    assert stream.query() is False
    gate.release()
    stream.synchronize()
    assert stream.query() is True and gate.released
    out = rs.to_device(np.zeros(256, np.float32), stream=stream)
    for grid in (1, 2, 1):
        add_one[grid, 128, stream](out)
    done = rs.Event().record(stream)
    done.synchronize()
    assert np.array_equal(out.copy_to_host(stream=stream), np.r_[np.full(128, 3.0),
                                                                   np.ones(128)])


def test_every_hot_call_answers_alike_with_the_compiled_calls_on_and_off(stream, latch):
    _every_hot_call(stream, latch)
    with rs.configure(native_calls=False):
        assert rs.backend().native_calls is False
        _every_hot_call(stream, latch)
    assert rs.backend().native_calls is True


def test_a_thread_that_never_used_the_runtime_makes_every_hot_call(stream, latch):
    """On CUDA the driver answers such a thread CUDA_ERROR_INVALID_CONTEXT; the runtime's own
    call then binds the device's context, and the compiled calls go on from there."""
    failures: list[BaseException] = []

    def body() -> None:
        try:
            _every_hot_call(stream, latch)
            legacy = rs.default_stream()
            assert legacy.query() in (True, False)
            legacy.synchronize()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failures.append(exc)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join(120)
    assert not worker.is_alive() and not failures, failures
