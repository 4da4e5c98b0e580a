"""Kernel launches on a RocmStream: the same results as Numba's own launch, for every argument kind.

On GPU backends these launches take the prepared path (types resolved once per signature,
arguments packed into a reused buffer); whatever it does not take goes through Numba's launch.
"""
from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

import rocmstreams as rs
from rocmstreams.errors import StreamClosedError
from rocmstreams.integrations.numba import PreparedLauncher
from rocmstreams.kernels import cuda


@cuda.jit
def affine(out, x, a, b):
    """``out[i] = a * x[i] + b`` (grid-stride)."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.size, step):
        out[i] = a * x[i] + b


@cuda.jit
def rows_times_column(out, m, v):
    """``out[i, j] = m[i, j] * v[i]`` for a 2-D ``m``: shapes and strides of two ranks."""
    i, j = cuda.grid(2)
    if i < out.shape[0] and j < out.shape[1]:
        out[i, j] = m[i, j] * v[i]


@cuda.jit
def mixed(out, flag, k, z, h):
    """Every scalar kind the prepared path packs: bool, int, complex, small int."""
    i = cuda.grid(1)
    if i < out.size:
        base = (z * (i + 1)).real + (z * (i + 1)).imag
        out[i] = base + k + h if flag else base - k - h


@cuda.jit("void(float32[:], float32[:], float32)")
def scale_declared(out, x, a):
    """Declared signature: Numba converts a Python float to float32 for it."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = x[i] * a


@cuda.jit
def add_big(out, x, k):
    """``out[i] = x[i] + k`` with an integer ``k`` of any size."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = x[i] + k


def _launcher(stream, kernel, grid, block):
    """The backend launcher behind ``kernel[grid, block, stream]``."""
    return kernel[grid, block, stream].launcher


def test_results_match_numbas_own_launch_on_fresh_data(stream, rng):
    x = rng.standard_normal(10_000).astype(np.float32)
    dx = rs.to_device(x, stream=stream)
    ours, theirs = rs.empty_like(x), rs.empty_like(x)
    for _ in range(3):  # the first call goes through Numba, later ones are prepared
        affine[8, 128, stream](ours, dx, np.float32(1.5), np.float32(-2.0))
    stream.synchronize()
    affine[8, 128](theirs, dx, np.float32(1.5), np.float32(-2.0))  # Numba's own launch
    rs.default_stream().synchronize()
    got, want = ours.copy_to_host(stream=stream), theirs.copy_to_host(stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, 1.5 * x.astype(np.float64) - 2.0, rtol=1e-6, atol=1e-6)


def test_every_launch_uses_the_arguments_of_that_call(stream, rng):
    xs = [rng.standard_normal(777).astype(np.float32) for _ in range(4)]
    outs = [rs.empty(777, np.float32) for _ in xs]
    for i, (x, out) in enumerate(zip(xs, outs)):
        affine[4, 64, stream](out, rs.to_device(x, stream=stream), np.float32(i), np.float32(i))
    hosts = [o.copy_to_host(stream=stream) for o in outs]
    stream.synchronize()
    for i, (x, h) in enumerate(zip(xs, hosts)):
        np.testing.assert_allclose(h, i * x.astype(np.float64) + i, rtol=1e-6, atol=1e-6)


def test_new_argument_types_compile_a_new_specialization(stream, rng, backend):
    for dtype in (np.float32, np.float64, np.float32, np.float64):
        x = rng.standard_normal(500).astype(dtype)
        out = rs.empty_like(x)
        affine[2, 256, stream](out, rs.to_device(x, stream=stream), dtype(3), dtype(1))
        got = out.copy_to_host(stream=stream)
        stream.synchronize()
        tol = 1e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, 3 * x.astype(np.float64) + 1, rtol=tol, atol=tol)
    launcher = _launcher(stream, affine, 2, 256)
    if isinstance(launcher, PreparedLauncher):
        assert launcher.specializations == 2


def test_two_dimensional_arrays_and_views(stream, rng):
    m = rng.standard_normal((37, 53))
    v = rng.standard_normal(80)
    dm, dv = rs.to_device(m, stream=stream), rs.to_device(v, stream=stream)
    out = rs.empty_like(m)
    for _ in range(2):
        rows_times_column[(3, 4), (16, 16), stream](out, dm, dv[10:47])
    got = out.copy_to_host(stream=stream)
    stream.synchronize()
    np.testing.assert_allclose(got, m * v[10:47, None], rtol=1e-12)


def test_bool_int_complex_and_small_int_scalars(stream, rng):
    z = complex(*rng.standard_normal(2))
    k = int(rng.integers(-1000, 1000))
    h = np.int16(rng.integers(-100, 100))
    i = np.arange(1, 301, dtype=np.float64)
    for flag in (True, False, True):
        out = rs.empty(300, np.float64)
        mixed[2, 256, stream](out, flag, k, z, h)
        got = out.copy_to_host(stream=stream)
        stream.synchronize()
        base = (z * i).real + (z * i).imag
        want = base + k + int(h) if flag else base - k - int(h)
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_declared_signature_converts_python_floats(stream, rng):
    x = rng.standard_normal(1000).astype(np.float32)
    dx, out = rs.to_device(x, stream=stream), rs.empty(1000, np.float32)
    for a in (0.5, 2.25, -3.0):
        scale_declared[4, 256, stream](out, dx, a)
        got = out.copy_to_host(stream=stream)
        stream.synchronize()
        np.testing.assert_allclose(got, x * np.float32(a), rtol=1e-6, atol=1e-6)


def test_int_beyond_int64_is_launched_by_numba_not_truncated(stream):
    x = np.arange(64, dtype=np.uint64)
    dx, out = rs.to_device(x, stream=stream), rs.empty(64, np.uint64)
    add_big[1, 64, stream](out, dx, 5)  # prepares the int64 specialization
    add_big[1, 64, stream](out, dx, 2**63 + 5)  # does not fit int64
    got = out.copy_to_host(stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(got, x + np.uint64(2**63 + 5))


@cuda.jit
def add_pair(out, x, pair):
    """``out[i] = x[i] + pair[0] * pair[1]``: a tuple argument."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = x[i] + pair[0] * pair[1]


def test_arguments_it_does_not_prepare_take_numbas_launch(stream, rng):
    """A tuple is not a prepared kind: every launch goes through Numba's own, correctly."""
    x = rng.standard_normal(256)
    dx, out = rs.to_device(x, stream=stream), rs.empty(256, np.float64)
    for k in (1.5, -2.0, 3.25):
        add_pair[1, 256, stream](out, dx, (k, 2.0))
        got = out.copy_to_host(stream=stream)
        stream.synchronize()
        np.testing.assert_allclose(got, x + 2 * k, rtol=1e-12)
    launcher = _launcher(stream, add_pair, 1, 256)
    if isinstance(launcher, PreparedLauncher):
        assert launcher.specializations == 0


def test_numba_device_arrays_are_launch_arguments(stream, rng):
    x = rng.standard_normal(512)
    dx = cuda.to_device(x)
    out = cuda.device_array(512, np.float64)
    for _ in range(2):
        affine[2, 256, stream](out, dx, -1.0, 4.0)
    stream.synchronize()
    np.testing.assert_allclose(out.copy_to_host(), 4.0 - x, rtol=1e-12)


def test_wrong_argument_count_raises_and_the_stream_stays_usable(stream, rng):
    x = rng.standard_normal(64)
    out, dx = rs.empty(64, np.float64), rs.to_device(x, stream=stream)
    affine[1, 64, stream](out, dx, 1.0, 1.0)
    with pytest.raises(TypeError):
        affine[1, 64, stream](out, dx, 1.0)
    affine[1, 64, stream](out, dx, 2.0, 0.0)
    got = out.copy_to_host(stream=stream)
    stream.synchronize()
    np.testing.assert_allclose(got, 2 * x, rtol=1e-12)


def test_a_kept_launch_refuses_once_its_stream_is_closed(make_stream):
    s = make_stream(non_blocking=True)
    out = rs.empty(8, np.float64)
    launch = affine[1, 8, s]
    launch(out, out, 1.0, 0.0)
    s.synchronize()
    s.close()
    with pytest.raises(StreamClosedError):
        launch(out, out, 1.0, 0.0)
    with pytest.raises(StreamClosedError):
        affine[1, 8, s](out, out, 1.0, 0.0)


def test_a_launch_on_a_stream_made_for_it_runs(rng):
    """``kernel[g, b, RocmStream()](...)``: the launch holds the stream it was configured with,
    so the stream is not closed under it by a rocmstreams call in the argument list."""
    x = rng.standard_normal(64)
    dx, out = rs.to_device(x), rs.to_device(np.zeros(64))
    rs.default_stream().synchronize()
    affine[1, 64, rs.RocmStream()](rs.empty_like(dx), dx, 1.0, 0.0)  # an rs call in the args
    affine[1, 64, rs.RocmStream()](out, dx, 3.0, float(rs.empty(1).size))
    deadline = time.monotonic() + 30  # the stream is gone: poll the result, a bounded time
    while not np.allclose(out.copy_to_host(), 3 * x + 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    np.testing.assert_allclose(out.copy_to_host(), 3 * x + 1, rtol=1e-12)


def test_a_configured_launch_holds_its_stream_until_it_is_dropped(rng):
    launch = affine[1, 8, rs.RocmStream(non_blocking=True)]
    held = weakref.ref(launch.stream)
    rs.empty(1)  # runs the releases queued so far
    assert held() is not None and not held().is_closed
    out = rs.to_device(np.zeros(8), stream=held())
    launch(out, out, 1.0, 5.0)
    held().synchronize()
    np.testing.assert_array_equal(out.copy_to_host(stream=held()), np.full(8, 5.0))
    del launch
    gc.collect()
    assert held() is None


def test_a_dropped_stream_is_collected_after_its_launches():
    """The launch cache keeps no stream alive: a stream dropped after its launches is
    collected at once, and its core closed."""
    s = rs.RocmStream(non_blocking=True)
    out = rs.empty(8, np.float64, stream=s)
    for _ in range(2):  # the second from the launch cache
        affine[1, 8, s](out, out, 1.0, 0.0)
    s.synchronize()
    held, core = weakref.ref(s), s.__rocmstreams_core__
    del s
    assert held() is None, "something keeps the stream alive (not a reference cycle)"
    rs.empty(1)  # runs the queued release
    assert core.value is None


def test_a_configured_launch_names_its_kernel_grid_block_and_stream(make_stream):
    s, t = make_stream(non_blocking=True), make_stream(non_blocking=True)
    launch = affine[(3, 2), 32, s]
    assert (launch.griddim, launch.blockdim, launch.sharedmem) == ((3, 2, 1), (32, 1, 1), 0)
    assert launch.dispatcher is affine
    assert launch.launcher is affine[1, 64, t].launcher  # one launcher per kernel and device
    assert "affine" in repr(launch) and f"{s.handle:#x}" in repr(launch)


def test_launches_from_many_threads_keep_their_own_arguments(make_stream, rng):
    n, per_thread = 512, 10
    x = rng.standard_normal(n)
    dx = rs.to_device(x)
    rs.default_stream().synchronize()
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(t: int, s: rs.RocmStream) -> None:
        try:
            outs = [rs.empty(n, np.float64) for _ in range(per_thread)]
            for j, out in enumerate(outs):
                affine[2, 256, s](out, dx, float(t), float(j))
            hosts = [o.copy_to_host(stream=s) for o in outs]
            s.synchronize()
            for j, h in enumerate(hosts):
                results[t * 1000 + j] = h
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    streams = [make_stream(non_blocking=True) for _ in range(2)]  # two threads on each
    threads = [threading.Thread(target=work, args=(t, streams[t % 2])) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for key, h in results.items():
        t, j = divmod(key, 1000)
        np.testing.assert_allclose(h, t * x + j, rtol=1e-12, atol=1e-14)  # a GPU fuses a*x+b
    assert len(results) == 4 * per_thread


@pytest.mark.skipif(rs.backend().name != "cuda", reason="the cuda driver takes one buffer")
def test_on_cuda_the_parameters_go_as_one_buffer_and_the_results_are_right(stream, rng):
    x = rng.standard_normal(300).astype(np.float32)
    out, d = rs.empty_like(x), rs.to_device(x, stream=stream)
    for _ in range(2):  # the first through Numba, the second prepared
        affine[2, 256, stream](out, d, np.float32(3), np.float32(-1))
    run = _launcher(stream, affine, 2, 256)._last
    assert run.__globals__["params"] is None and run.__globals__["extra"]
    np.testing.assert_allclose(out.copy_to_host(stream=stream), 3 * x.astype(np.float64) - 1,
                               rtol=1e-6, atol=1e-6)


def test_two_dimensional_grids_computed_from_each_shape_give_numpys_result(stream, rng):
    """Grids ``((rows + 7) // 8, (cols + 7) // 8)`` of 8 x 8 blocks for shapes that change: each
    new grid after the first takes the launch bound to the kernel and stream."""
    for rows, cols in rng.integers(1, 40, size=(6, 2)):
        m = rng.random((int(rows), int(cols))).astype(np.float32)
        v = rng.random(int(rows)).astype(np.float32)
        dm, dv = rs.to_device(m, stream=stream), rs.to_device(v, stream=stream)
        out = rs.empty(m.shape, np.float32, stream=stream)
        rows_times_column[((int(rows) + 7) // 8, (int(cols) + 7) // 8), (8, 8), stream](out, dm,
                                                                                          dv)
        np.testing.assert_allclose(out.copy_to_host(stream=stream), m * v[:, None], rtol=1e-6)
