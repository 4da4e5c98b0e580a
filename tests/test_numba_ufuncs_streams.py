"""numba's kernel helpers take a RocmStream in stream order: ``forall``, ``@vectorize`` and
``@guvectorize`` with ``target="cuda"``, and ``Reduce``.

Each test holds the stream with a latch, queues a kernel that rewrites the input in place, then
calls numba's helper with ``stream=s``: a helper that ran ahead of the stream (or on another one)
would read the old input, every time. The helpers are called once before the latch is held, since
loading a kernel's module waits for the whole device (README, "Kernel loading").

Every test runs on every backend: numba's CUDA simulator (the cpu backend's kernels) has no
cuda ufunc target, so there rocmstreams builds numba's CPU ufunc of the same function and calls
it numba's CUDA way (rocmstreams/integrations/numba/simulated_ufuncs.py).
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import rocmstreams as rs
from rocmstreams.kernels import cuda as kcuda  # a module global: the simulator patches those

N = 4096


@pytest.fixture
def cuda(kernels):
    """numba.cuda as the backend sees it (the simulator on cpu)."""
    return kernels.cuda


def _held_then(gate, stream, kernels, dn, call):
    """Hold ``stream``, double ``dn`` in place on it, then ``call()``: the helper under test."""
    gate.hold(stream)
    kernels.scale[(dn.size + 255) // 256, 256, stream](dn, np.float32(2), dn)
    result = call()
    assert not stream.query(), "the helper waited for the held stream on the host"
    return result


def test_forall_on_a_rocmstream_runs_after_the_work_queued_before_it(kernels, stream, latch,
                                                                    rng):
    @kcuda.jit  # defined on the fly, launched only through forall
    def plus_one(out, x):
        i = kcuda.grid(1)
        if i < out.size:
            out[i] = x[i] + 1

    x = rng.random(N).astype(np.float32)
    dn = rs.to_device(x, stream=stream)
    out = rs.empty(N, np.float32)
    plus_one.forall(N, stream=stream)(out, dn)  # loads the kernel
    with latch() as gate:
        _held_then(gate, stream, kernels, dn,
                   lambda: plus_one.forall(N, stream=stream)(out, dn))
    np.testing.assert_allclose(out.copy_to_host(stream=stream), 2 * x + 1, rtol=1e-6)


def test_vectorize_on_a_rocmstream_reads_its_input_in_stream_order(cuda, kernels, stream,
                                                                  latch, rng):
    import numba

    @numba.vectorize(["float32(float32, float32)"], target="cuda")
    def fma1(a, b):
        return a * b + 1

    x, y = rng.random(N).astype(np.float32), rng.random(N).astype(np.float32)
    dn, dy = cuda.to_device(x, stream=stream), cuda.to_device(y, stream=stream)
    dout = cuda.device_array(N, np.float32, stream=stream)
    fma1(dn, dy, out=dout, stream=stream)
    with latch() as gate:
        _held_then(gate, stream, kernels, dn, lambda: fma1(dn, dy, out=dout, stream=stream))
    np.testing.assert_allclose(dout.copy_to_host(stream=stream), 2 * x * y + 1, rtol=1e-6)


def test_vectorize_with_host_inputs_on_a_rocmstream_returns_the_result(cuda, stream, rng):
    import numba

    @numba.vectorize(["float32(float32, float32)"], target="cuda")
    def sub(a, b):
        return a - b

    x, y = rng.random(N).astype(np.float32), rng.random(N).astype(np.float32)
    got = sub(x, y, stream=stream)  # host in, host out: numba copies back on the stream
    stream.synchronize()
    np.testing.assert_allclose(np.asarray(got), x - y, rtol=1e-6)


def test_guvectorize_on_a_rocmstream_reads_its_input_in_stream_order(cuda, kernels,
                                                                    stream, latch, rng):
    import numba

    @numba.guvectorize(["void(float32[:], float32[:])"], "(n)->()", target="cuda")
    def row_sum(row, total):
        acc = 0.0
        for v in row:
            acc += v
        total[0] = acc

    x = rng.random((64, 64)).astype(np.float32)
    dn = cuda.to_device(x, stream=stream)
    dout = cuda.device_array(64, np.float32, stream=stream)
    row_sum(dn, out=dout, stream=stream)
    flat = dn.reshape(dn.size)
    with latch() as gate:
        _held_then(gate, stream, kernels, flat, lambda: row_sum(dn, out=dout, stream=stream))
    np.testing.assert_allclose(dout.copy_to_host(stream=stream), (2 * x).sum(axis=1), rtol=1e-5)


def test_reduce_on_a_rocmstream_sums_in_stream_order(kernels, stream, latch, rng):
    cuda = kernels.cuda
    total = cuda.Reduce(lambda a, b: a + b)
    x = rng.random(N).astype(np.float32)
    dn = cuda.to_device(x, stream=stream)
    res = cuda.device_array(1, np.float32, stream=stream)
    total(dn, res=res, stream=stream)
    with latch() as gate:
        _held_then(gate, stream, kernels, dn, lambda: total(dn, res=res, stream=stream))
    np.testing.assert_allclose(res.copy_to_host(stream=stream)[0], 2 * x.sum(), rtol=1e-4)


def test_reduce_on_a_rocmstream_without_res_returns_the_sum_of_the_data_in_stream_order(
        kernels, make_stream, latch, rng):
    # numba reads the result through the legacy default stream, which waits for a blocking
    # stream only (as numba's own cuda.stream() is): on a non-blocking one it can read early
    stream = make_stream(non_blocking=False)
    total = kernels.cuda.Reduce(lambda a, b: a + b)
    x = rng.random(N).astype(np.float32)
    dn = kernels.cuda.to_device(x, stream=stream)
    total(dn, stream=stream)  # loads its kernels
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[(N + 255) // 256, 256, stream](dn, np.float32(2), dn)
        timer = threading.Timer(0.3, gate.release)  # the call returns once the sum is there
        timer.start()
        got = total(dn, stream=stream)
        timer.join()
    np.testing.assert_allclose(got, 2 * x.sum(), rtol=1e-4)
