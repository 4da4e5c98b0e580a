"""Work on one stream runs in the order it was queued."""
import numpy as np

import rocmstreams as rs


def test_h2d_kernel_d2h_give_exact_values(kernels, stream, rng):
    n = 4096
    x = rng.random(n, dtype=np.float32)
    y = rng.random(n, dtype=np.float32)
    a = np.float32(rng.uniform(-3, 3))
    dx, dy = rs.to_device(x, stream=stream), rs.to_device(y, stream=stream)
    dout = rs.empty(n, np.float32)
    kernels.saxpy[8, 64, stream](dout, a, dx, dy)
    out = np.full(n, np.nan, np.float32)
    dout.copy_to_host(out, stream=stream)
    stream.synchronize()
    # float32 against a float64 reference: the GPU may fuse a*x+y into one rounding
    np.testing.assert_allclose(out, a * x.astype(np.float64) + y, rtol=1e-6, atol=1e-6)


def test_pinned_round_trip_through_two_kernels_keeps_order(kernels, stream, rng):
    n = 2048
    host = rs.pinned_empty(n, np.float32)
    host[:] = rng.random(n, dtype=np.float32)
    d = rs.to_device(host, stream=stream)
    kernels.scale[4, 64, stream](d, np.float32(2), d)
    kernels.add_scalar[n // 64, 64, stream](d, np.float32(5))
    back = rs.pinned_empty(n, np.float32)
    back[:] = np.nan
    d.copy_to_host(back, stream=stream)
    stream.synchronize()
    np.testing.assert_allclose(back, host.astype(np.float64) * 2 + 5, rtol=1e-6)


def test_device_to_device_copy_on_a_stream(stream, rng):
    x = rng.integers(0, 1 << 30, 1000).astype(np.int64)
    a = rs.to_device(x, stream=stream)
    b = rs.empty_like(a)
    rs.copy_async(b, a, stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(b.copy_to_host(stream=stream), x)


def test_stamps_run_in_launch_order(stamps, stream):
    tags = np.random.default_rng().permutation(50).tolist()
    for t in tags:
        stamps.stamp(stream, t)
    assert stamps.tags(stream) == tags


def test_callbacks_run_in_order(stream):
    seen = []
    order = list(range(40))
    for i in order:
        stream.launch_host_func(seen.append, i)
    stream.synchronize()
    assert seen == order


def test_each_callback_sees_exactly_the_kernels_queued_before_it(kernels, stream):
    log = rs.pinned_empty(16, np.int32)  # host-visible, so a callback may read it
    log[:] = -1
    counter = rs.to_device(np.zeros(1, np.int32), stream=stream)
    seen = []
    for i in range(8):
        kernels.stamp[1, 1, stream](counter, rs.device_view(log), np.int32(i))
        stream.launch_host_func(lambda: seen.append(int((log >= 0).sum())))
    stream.synchronize()
    assert seen == list(range(1, 9))
    assert log[:8].tolist() == list(range(8))

