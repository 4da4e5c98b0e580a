"""Device and page-locked memory; bad copies are refused with nothing queued."""
import numpy as np
import pytest

import rocmstreams as rs


def test_out_of_memory_is_reported_and_the_stream_still_works(kernels, stream, rng):
    with pytest.raises(rs.OutOfMemoryError) as info:
        rs.empty(1 << 50, np.uint8)
    assert isinstance(info.value, MemoryError) and info.value.code is not None
    x = rng.random(256, dtype=np.float32)
    d = rs.to_device(x, stream=stream)
    kernels.add_scalar[4, 64, stream](d, np.float32(1))
    out = d.copy_to_host(stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(out, x + np.float32(1))


def test_pinned_arrays_are_numpy_arrays_in_page_locked_memory():
    a = rs.pinned_empty((4, 8), np.int16)
    assert isinstance(a, np.ndarray) and a.shape == (4, 8) and a.dtype == np.int16
    assert rs.is_pinned(a) and rs.is_pinned(a[1:])
    assert not rs.is_pinned(np.empty(4))


def test_device_array_exports_the_cuda_array_interface():
    d = rs.empty((3, 5), np.float32)
    cai = d.__cuda_array_interface__
    assert cai["shape"] == (3, 5) and cai["typestr"] == np.dtype(np.float32).str
    assert cai["data"] == (d.ptr, False) and cai["version"] == 3
    assert d.nbytes == 60 and d.strides == (20, 4) and len(d) == 3


def test_device_array_row_views_copy_the_right_bytes(stream, rng):
    x = rng.random((6, 4))
    d = rs.to_device(x, stream=stream)
    out = d[2:5].copy_to_host(stream=stream)
    stream.synchronize()
    np.testing.assert_array_equal(out, x[2:5])


def test_device_arrays_cannot_be_built_directly():
    with pytest.raises(TypeError, match="rocmstreams.empty"):
        rs.DeviceArray()


@pytest.mark.parametrize("case", ["shape", "dtype", "non_contiguous_src", "non_contiguous_dst",
                                  "not_an_array", "host_to_host", "read_only", "bad_stream"])
def test_bad_copy_arguments_are_refused_with_nothing_queued(case, latch, stream, rng):
    d = rs.empty(16, np.float32)
    host = rs.pinned_empty(16, np.float32)
    host[:] = rng.random(16, dtype=np.float32)
    poison = np.full(16, -7.0, np.float32)
    rs.copy_async(d, poison, stream=stream)
    stream.synchronize()
    gate = latch().hold(stream)  # anything queued now would show as not-yet-run work
    calls = {
        "shape": lambda: rs.copy_async(d, np.zeros(8, np.float32), stream=stream),
        "dtype": lambda: rs.copy_async(d, np.zeros(16, np.float64), stream=stream),
        "non_contiguous_src": lambda: rs.copy_async(d, np.zeros(32, np.float32)[::2],
                                                    stream=stream),
        "non_contiguous_dst": lambda: rs.copy_async(np.zeros(32, np.float32)[::2], d,
                                                    stream=stream),
        "not_an_array": lambda: rs.copy_async(d, [1.0] * 16, stream=stream),
        "host_to_host": lambda: rs.copy_async(host, np.zeros(16, np.float32), stream=stream),
        "read_only": lambda: rs.copy_async(np.frombuffer(bytes(64), np.float32), d,
                                           stream=stream),
        "bad_stream": lambda: rs.copy_async(d, host, stream="s1"),
    }
    with pytest.raises((ValueError, TypeError)):
        calls[case]()
    gate.release()
    stream.synchronize()
    np.testing.assert_array_equal(d.copy_to_host(stream=stream), poison)
    rs.copy_async(d, host, stream=stream)  # the stream is still usable
    np.testing.assert_array_equal(d.copy_to_host(stream=stream), host)


def test_device_view_shares_page_locked_memory_with_kernels(kernels, stream):
    host = rs.pinned_empty(64, np.float32)
    host[:] = 1.0
    kernels.add_scalar[1, 64, stream](rs.device_view(host), np.float32(2))
    stream.synchronize()
    np.testing.assert_array_equal(host, np.full(64, 3.0, np.float32))


def test_device_view_refuses_pageable_memory():
    with pytest.raises(ValueError, match="pinned_empty"):
        rs.device_view(np.zeros(4))
