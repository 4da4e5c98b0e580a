"""CuPy and PyTorch streams and arrays work with rocmstreams (skipped where not installed)."""
import numpy as np
import pytest

import rocmstreams as rs
from conftest import needs_gpu

pytestmark = needs_gpu


def test_a_cupy_stream_is_borrowed_and_survives_our_close(kernels, rng):
    cp = pytest.importorskip("cupy")
    cs = cp.cuda.Stream(non_blocking=True)
    s = rs.RocmStream.from_external(cs)
    assert s.handle == cs.ptr
    host = rng.random(1000, dtype=np.float32)
    x = cp.asarray(host)
    cs.synchronize()
    kernels.scale[4, 256, s](x, np.float32(3), x)
    s.close()
    cs.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(x), host * np.float32(3))


def test_cupy_arrays_are_kernel_arguments_and_copy_endpoints(kernels, stream, rng):
    cp = pytest.importorskip("cupy")
    x = rng.random(4096, dtype=np.float32)
    dx = cp.empty(4096, cp.float32)
    rs.copy_async(dx, x, stream=stream)
    kernels.scale[16, 256, stream](dx, np.float32(2), dx)
    out = rs.pinned_empty(4096, np.float32)
    rs.copy_async(out, dx, stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(out, 2 * x)


def test_a_torch_stream_is_borrowed_and_orders_work(kernels, rng):
    torch = pytest.importorskip("torch")
    ts = torch.cuda.Stream()
    s = rs.RocmStream.from_external(ts)
    assert s.handle == ts.cuda_stream
    x = rng.random(2048, dtype=np.float32)
    t = torch.empty(2048, dtype=torch.float32, device="cuda")
    rs.copy_async(t, x, stream=s)
    kernels.add_scalar[8, 256, s](t, np.float32(1.5))
    out = np.empty_like(x)
    rs.copy_async(out, t, stream=s)
    s.synchronize()
    s.close()
    ts.synchronize()
    np.testing.assert_array_equal(out, x + np.float32(1.5))


def test_a_cuda_core_stream_is_borrowed(rng):
    core = pytest.importorskip("cuda.core")
    if rs.backend().name != "cuda":
        pytest.skip("cuda.core streams are CUDA streams")
    dev = core.Device()
    dev.set_current()
    cs = dev.create_stream()
    s = rs.RocmStream.from_external(cs)
    assert s.handle == int(cs.handle)
    s.synchronize()
    s.close()
    cs.sync()


def test_a_non_contiguous_torch_tensor_is_refused(stream):
    torch = pytest.importorskip("torch")
    t = torch.zeros((8, 8), device="cuda").t()
    with pytest.raises(ValueError, match="C-contiguous"):
        rs.copy_async(np.zeros((8, 8), np.float32), t, stream=stream)
