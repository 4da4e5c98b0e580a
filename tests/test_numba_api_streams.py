"""Numba's own API takes a RocmStream, in exact stream order, on every backend.

Restated from numba-cuda's stream, event and async-copy tests, each made order-sensitive: the
stream is held first by a latch (released at once for non-blocking calls, by a timer for calls
that return only once the data is there), so an operation that ignores the stream's order reads
or writes too early every time."""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

import rocmstreams as rs
from conftest import needs_gpu
from rocmstreams.kernels import cuda as kernel_cuda


@kernel_cuda.jit
def twice(out, x):
    """``out[i] = 2 * x[i]``: a kernel of this module, never launched before its test."""
    i = kernel_cuda.grid(1)
    if i < out.size:
        out[i] = 2 * x[i]


@pytest.fixture
def cuda(kernels):
    return kernels.cuda


def _nothing():
    return contextlib.nullcontext()


def _release_later(gate, seconds=0.3):
    t = threading.Timer(seconds, gate.release)
    t.start()
    return t


def test_to_device_on_a_rocmstream_runs_after_the_work_queued_before_it(cuda, kernels, stream,
                                                                      latch, rng):
    old, x = rng.random(256).astype(np.float32), rng.random(256).astype(np.float32)
    dn = cuda.to_device(old)
    out = rs.empty(256, np.float32)
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[1, 256, stream](out, np.float32(2), dn)  # reads the old data
        cuda.to_device(x, stream=stream, to=dn)  # numba's copy, after the kernel
        x_before = x.copy()
        x[:] = -1  # the source was read at the call
    np.testing.assert_array_equal(out.copy_to_host(stream=stream), 2 * old)
    np.testing.assert_array_equal(dn.copy_to_host(stream=stream), x_before)


def test_to_device_on_a_rocmstream_gives_a_new_array_filled_in_stream_order(cuda, kernels,
                                                                          stream, rng):
    x = rng.random(256).astype(np.float32)
    dn = cuda.to_device(x, stream=stream)
    out = rs.empty(256, np.float32)
    kernels.scale[1, 256, stream](out, np.float32(2), dn)
    np.testing.assert_array_equal(out.copy_to_host(stream=stream), 2 * x)


def test_copy_to_host_on_a_rocmstream_sees_the_kernel_queued_before_it(cuda, kernels, stream,
                                                                     latch, rng):
    x = rng.random(128).astype(np.float32)
    dn = cuda.to_device(np.zeros(128, np.float32))
    dx = rs.to_device(x, stream=stream)
    stream.synchronize()
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[1, 128, stream](dn, np.float32(3), dx)  # writes numba's array
        timer = _release_later(gate)
        host = dn.copy_to_host(stream=stream)  # returns once the data is there
        timer.join()
    np.testing.assert_array_equal(host, 3 * x)


def test_copy_to_device_on_a_rocmstream_waits_for_the_kernel_that_reads_the_old_data(
        cuda, kernels, stream, latch, rng):
    old, new = rng.random(64).astype(np.float32), rng.random(64).astype(np.float32)
    dn = cuda.to_device(old)
    out = rs.empty(64, np.float32)
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[1, 64, stream](out, np.float32(1), dn)  # reads the old data
        dn.copy_to_device(new, stream=stream)
    np.testing.assert_array_equal(out.copy_to_host(stream=stream), old)
    np.testing.assert_array_equal(dn.copy_to_host(stream=stream), new)


MAKERS = {
    "device_array": lambda cuda, x, s: cuda.device_array(x.shape, x.dtype, stream=s),
    "device_array_like": lambda cuda, x, s: cuda.device_array_like(x, stream=s),
    "to_device": lambda cuda, x, s: cuda.to_device(np.zeros_like(x), stream=s),
}


@pytest.mark.parametrize("make", MAKERS)
def test_a_numba_array_made_for_a_rocmstream_copies_back_in_its_order_by_default(
        make, cuda, kernels, stream, latch, rng):
    x = rng.random(128).astype(np.float32)
    dx = rs.to_device(x, stream=stream)
    dn = MAKERS[make](cuda, x, stream)
    assert dn.stream is stream
    stream.synchronize()
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[1, 128, stream](dn, np.float32(3), dx)
        timer = _release_later(gate)
        host = dn.copy_to_host()  # no stream: the array's own, as numba does
        timer.join()
        stream.synchronize()
    np.testing.assert_array_equal(host, 3 * x)


def test_a_mapped_array_made_for_a_rocmstream_is_bound_to_it_and_written_in_its_order(
        cuda, kernels, stream, latch, rng):
    # (numba-cuda 0.30.4's own MappedNDArray.copy_to_host fails: it has no alloc_size; a mapped
    # array is host memory, read here as such once the stream passed the kernel)
    x = rng.random(128).astype(np.float32)
    dx = rs.to_device(x, stream=stream)
    mapped = cuda.mapped_array(128, np.float32, stream=stream)
    assert mapped.stream is stream
    stream.synchronize()
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[1, 128, stream](mapped, np.float32(3), dx)
        assert not stream.query()
    stream.synchronize()
    np.testing.assert_array_equal(np.array(mapped, copy=True), 3 * x)


@pytest.mark.parametrize("how", ["setitem(stream=)", "d[...] = on a bound array"])
def test_numba_setitem_on_a_rocmstream_runs_after_the_kernel_queued_before_it(
        how, cuda, kernels, stream, latch, rng):
    x = rng.random(256).astype(np.float32)
    dx = rs.to_device(x, stream=stream)
    dn = cuda.to_device(np.zeros(256, np.float32), stream=stream)
    dn.setitem(slice(0, 4), np.float32(0), stream=stream)  # loads numba's assignment kernel
    stream.synchronize()
    value = rng.random(4).astype(np.float32)
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[1, 256, stream](dn, np.float32(2), dx)  # writes all of dn
        if how == "setitem(stream=)":
            dn.setitem(slice(0, 4), value, stream=stream)
        else:
            dn[0:4] = value
        value_then = value.copy()
        value[:] = -1  # a host value is read at the call
        assert not stream.query()
    want = 2 * x
    want[:4] = value_then
    np.testing.assert_array_equal(dn.copy_to_host(stream=stream), want)


def test_a_grid_computed_from_each_size_gives_what_a_fixed_grid_gives(kernels, stream, rng):
    sizes = rng.integers(1, 640, size=20)  # (small: the cpu backend simulates each thread)
    for n in sizes:
        x = rng.random(int(n)).astype(np.float32)
        dx = rs.to_device(x, stream=stream)
        varying, fixed = rs.empty(int(n), np.float32), rs.empty(int(n), np.float32)
        kernels.scale[(int(n) + 127) // 128, 128, stream](varying, np.float32(3), dx)
        kernels.scale[5, 128, stream](fixed, np.float32(3), dx)  # 640 threads: covers any n
        np.testing.assert_array_equal(varying.copy_to_host(stream=stream), 3 * x)
        np.testing.assert_array_equal(fixed.copy_to_host(stream=stream),
                                      varying.copy_to_host(stream=stream))


def test_a_numba_event_recorded_on_a_rocmstream_completes_with_it(cuda, stream, latch):
    ev = cuda.event()
    with latch() as gate:
        gate.hold(stream)
        ev.record(stream=stream)
        assert not ev.query()
    stream.synchronize()
    ev.synchronize()
    assert ev.query()


def test_a_numba_event_wait_orders_another_rocmstream(cuda, kernels, make_stream, latch):
    s1, s2 = make_stream(non_blocking=True), make_stream(non_blocking=True)
    counter = rs.to_device(np.zeros(1, np.int32), stream=s1)
    log = rs.to_device(np.full(4, -1, np.int32), stream=s1)
    s1.synchronize()
    ev = cuda.event()
    with latch() as gate:
        gate.hold(s1)
        kernels.stamp[1, 1, s1](counter, log, np.int32(1))
        ev.record(stream=s1)
        ev.wait(stream=s2)
        kernels.stamp[1, 1, s2](counter, log, np.int32(2))
    s2.synchronize()
    assert log.copy_to_host(stream=s1)[:2].tolist() == [1, 2]


def test_numbas_elapsed_time_between_events_on_a_rocmstream(cuda, stream):
    start, end = cuda.event(timing=True), cuda.event(timing=True)
    start.record(stream=stream)
    end.record(stream=stream)
    end.synchronize()
    assert cuda.event_elapsed_time(start, end) >= 0


def test_numbas_calls_refuse_a_closed_rocmstream(cuda):
    s = rs.RocmStream(non_blocking=True)
    s.close()
    with pytest.raises(rs.StreamClosedError):
        cuda.to_device(np.zeros(4, np.float32), stream=s)


class _Foreign:
    """A stream of another library: only the CUDA stream protocol."""

    def __init__(self, handle):
        self.handle = handle

    def __cuda_stream__(self):
        return (0, self.handle)


def test_foreign_and_numba_streams_are_taken_wherever_rocmstreams_takes_a_stream(cuda, kernels,
                                                                               stream, latch,
                                                                               rng):
    x = rng.random(64).astype(np.float32)
    d = rs.empty(64, np.float32)
    foreign = _Foreign(stream.handle)
    ev = rs.Event()
    with latch() as gate:
        gate.hold(stream)
        rs.copy_async(d, x, stream=foreign)  # queued on the same stream, behind the latch
        ev.record(foreign)
        assert not ev.query()
    ev.synchronize()
    np.testing.assert_array_equal(d.copy_to_host(stream=0), x)
    numba_stream = cuda.stream()
    out = rs.pinned_empty(64, np.float32)
    rs.copy_async(out, d, stream=numba_stream)
    numba_stream.synchronize()
    rs.default_stream().synchronize()
    np.testing.assert_array_equal(out, x)


def test_a_kernel_launch_on_a_foreign_stream_runs_in_that_streams_order(kernels, make_stream,
                                                                        latch):
    s, other = make_stream(non_blocking=True), make_stream(non_blocking=True)
    a = rs.to_device(np.zeros(64, np.float32), stream=s)
    s.synchronize()
    with latch() as gate:
        gate.hold(s)
        kernels.add_scalar[1, 64, _Foreign(s.handle)](a, np.float32(1))  # behind the latch
        before = a.copy_to_host(stream=other)
        other.synchronize()
    s.synchronize()
    np.testing.assert_array_equal(before, np.zeros(64, np.float32))
    np.testing.assert_array_equal(a.copy_to_host(stream=s), np.ones(64, np.float32))


def test_prepare_compiles_without_launching_and_later_launches_run_right(stream, rng):
    x = rng.random(100).astype(np.float32)
    dx = rs.to_device(x, stream=stream)
    out = rs.to_device(np.zeros(100, np.float32), stream=stream)
    stream.synchronize()
    rs.prepare(twice, out, dx)
    np.testing.assert_array_equal(out.copy_to_host(stream=stream), 0)  # nothing ran
    twice[1, 128, stream](out, dx)
    np.testing.assert_array_equal(out.copy_to_host(stream=stream), 2 * x)


@needs_gpu
def test_a_kernel_prepared_ahead_launches_first_behind_a_latched_stream_without_waiting(
        cuda, make_stream, latch, rng):
    """rs.prepare loads the kernel (a lazily loading runtime loads it at the first launch, and
    that load waits for the whole device): a kernel defined now and prepared, first launched
    on one stream while a latch holds another, runs at once; the latch is still held after."""
    @cuda.jit
    def plus_three(out, x):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = x[i] + 3

    a, b = make_stream(non_blocking=True), make_stream(non_blocking=True)
    x = rng.random(1000).astype(np.float32)
    dx = rs.to_device(x, stream=b)
    out = rs.empty(1000, np.float32, stream=b)
    rs.prepare(plus_three, out, dx)
    b.synchronize()
    gate = latch().hold(a)
    plus_three[(x.size + 127) // 128, 128, b](out, dx)  # its first launch
    b.synchronize()
    assert not a.query(), "the first launch waited for the latched stream (the latch let go)"
    gate.release()
    a.synchronize()
    assert gate.released, f"latch timed out after {gate.polls} polls"
    np.testing.assert_array_equal(out.copy_to_host(stream=b), x + 3)


def test_prepare_refuses_arguments_that_do_not_fit():
    with pytest.raises(TypeError, match="nothing was launched"):
        rs.prepare(twice, 1, 2, 3)


# A kernel written inside a function, `cuda` imported there (a closure cell, not a module global):
# numba-cuda and numba-hip compile it; on cpu the simulator swaps its fake cuda module in for
# globals only, so the closure saw the real package (no ``grid``) until the cpu backend swapped it.
def _kernel_made_in_a_function():
    from rocmstreams.kernels import cuda

    @cuda.jit
    def axpb(out, x, a, b):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = a * x[i] + b

    return axpb


def test_a_kernel_made_in_a_function_with_a_local_cuda_runs(stream, rng):
    kernel = _kernel_made_in_a_function()
    n = 300
    x = rng.random(n).astype(np.float32)
    dx = rs.to_device(x, stream=stream)
    out = rs.empty_like(dx, stream=stream)
    kernel[(n + 127) // 128, 128, stream](out, dx, np.float32(2), np.float32(1))
    np.testing.assert_allclose(out.copy_to_host(stream=stream), 2 * x + 1, rtol=1e-6)


def test_a_numba_array_bound_to_a_rocmstream_names_it_in_its_cuda_array_interface(backend, cuda,
                                                                                 stream, rng):
    if backend.name == "cpu":
        pytest.skip("numba's simulator arrays have no __cuda_array_interface__")
    dn = cuda.to_device(rng.random(16).astype(np.float32), stream=stream)
    assert dn.__cuda_array_interface__["stream"] == int(stream) != 0


# numba-cuda's tests/cudadrv/test_pinned.py and test_host_alloc.py, restated on a RocmStream ----
@pytest.mark.parametrize("host", ["pinned(A)", "pinned_array", "pageable"])
def test_copies_to_and_from_pinned_and_pageable_memory_round_trip_in_stream_order(
        host, cuda, kernels, stream, latch, rng):
    x = rng.random(512).astype(np.float32)
    if host == "pinned_array":
        A = cuda.pinned_array(512, np.float32)
        A[:] = rng.random(512).astype(np.float32)
    else:
        A = rng.random(512).astype(np.float32)
    A0 = A.copy()
    dx = rs.to_device(x, stream=stream)
    with cuda.pinned(A) if host == "pinned(A)" else _nothing():
        dn = cuda.to_device(A, copy=False, stream=stream)
        stream.synchronize()
        with latch() as gate:
            gate.hold(stream)
            kernels.scale[2, 256, stream](dn, np.float32(2), dx)  # overwritten by the next copy
            dn.copy_to_device(A, stream=stream)
            timer = _release_later(gate)
            dn.copy_to_host(A, stream=stream)
            timer.join()
            stream.synchronize()
    np.testing.assert_array_equal(A, A0)


def test_a_copy_into_a_pinned_array_waits_for_the_kernel_queued_before_it(cuda, kernels, stream,
                                                                        latch):
    ary = cuda.pinned_array(256, dtype=np.float32)
    ary.fill(123)
    devary = cuda.to_device(ary, stream=stream)
    stream.synchronize()
    with latch() as gate:
        gate.hold(stream)
        kernels.scale[1, 256, stream](devary, np.float32(0), devary)  # zeros it, once released
        timer = _release_later(gate)  # (the cpu backend's copies into the host return when done)
        devary.copy_to_host(ary, stream=stream)
        timer.join()
    stream.synchronize()
    assert np.all(ary == 0), "the copy ran ahead of the kernel"


def test_a_scalar_read_of_a_bound_array_waits_for_the_write_queued_before_it(cuda, kernels,
                                                                           stream, latch):
    dn = cuda.to_device(np.zeros(8, np.float32), stream=stream)
    dn[0] = np.float32(1)  # loads numba's assignment kernel before the latch
    assert dn[0] == 1
    with latch() as gate:
        gate.hold(stream)
        dn[0] = np.float32(5)  # queued behind the latch
        timer = _release_later(gate)
        got = dn[0]  # numba copies it back on the array's stream
        timer.join()
    assert got == 5


def test_an_unbound_numba_array_copies_back_after_a_blocking_streams_work(cuda, kernels,
                                                                        make_stream, latch, rng):
    """No stream anywhere: numba copies on the legacy default stream, which waits for the work
    queued before on blocking streams (numba's own cuda.stream() is one)."""
    blocking = make_stream(non_blocking=False)
    x = rng.random(256).astype(np.float32)
    dx = rs.to_device(x, stream=blocking)
    dn = cuda.to_device(np.zeros(256, np.float32))
    blocking.synchronize()
    with latch() as gate:
        gate.hold(blocking)
        kernels.scale[1, 256, blocking](dn, np.float32(3), dx)
        timer = _release_later(gate)
        host = dn.copy_to_host()
        timer.join()
    np.testing.assert_array_equal(host, 3 * x)


@pytest.mark.parametrize("direction", ["from a numba array", "into a numba array"])
def test_rocmstreams_copies_take_numba_device_arrays_in_stream_order(direction, backend, cuda,
                                                                    kernels, stream, latch, rng):
    if backend.name == "cpu":
        pytest.skip("numba's simulator arrays are no rocmstreams copy endpoint (the next test)")
    x = rng.random(256).astype(np.float32)
    dx = rs.to_device(x, stream=stream)
    dn = cuda.to_device(np.zeros(256, np.float32), stream=stream)
    mine = rs.empty(256, np.float32, stream=stream)
    stream.synchronize()
    with latch() as gate:
        gate.hold(stream)
        if direction == "from a numba array":
            kernels.scale[1, 256, stream](dn, np.float32(3), dx)
            rs.copy_async(mine, dn, stream=stream)  # after the kernel that writes dn
        else:
            kernels.scale[1, 256, stream](mine, np.float32(3), dx)
            rs.copy_async(dn, mine, stream=stream)
        assert not stream.query()
    stream.synchronize()
    got = mine.copy_to_host(stream=stream) if direction == "from a numba array" else \
        dn.copy_to_host(stream=stream)
    np.testing.assert_array_equal(got, 3 * x)


def test_a_numba_simulator_array_in_a_rocmstreams_copy_is_refused_saying_what_to_do(backend,
                                                                                   cuda, stream):
    if backend.name != "cpu":
        pytest.skip("on a GPU numba's arrays are copy endpoints (the test above)")
    dn = cuda.to_device(np.zeros(8, np.float32), stream=stream)
    mine = rs.empty(8, np.float32, stream=stream)
    with pytest.raises(TypeError, match=r"numba's CUDA simulator.*copy_to_host\(stream=s\)"):
        rs.copy_async(mine, dn, stream=stream)
    rs.copy_async(mine, np.ones(8, np.float32), stream=stream)  # the stream is still usable
    np.testing.assert_array_equal(mine.copy_to_host(stream=stream), np.ones(8, np.float32))


def test_a_numba_array_bound_to_a_closed_rocmstream_says_so_when_copied_back(cuda, rng):
    s = rs.RocmStream()
    dn = cuda.to_device(rng.random(8).astype(np.float32), stream=s)
    s.synchronize()
    s.close()
    with pytest.raises(rs.StreamClosedError, match=r"bound to.*d\.bind\(stream\)"):
        dn.copy_to_host()
    other = rs.RocmStream()
    assert dn.copy_to_host(stream=other).shape == (8,)  # another stream still serves it
    other.close()
