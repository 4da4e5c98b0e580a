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


def test_empty_on_a_stream_is_usable_by_work_queued_on_it(kernels, stream, rng):
    x = rng.random(64).astype(np.float32)
    d = rs.empty(64, np.float32, stream=stream)
    rs.copy_async(d, x, stream=stream)
    e = rs.empty_like(d, stream=stream)
    kernels.scale[1, 64, stream](e, np.float32(2), d)
    np.testing.assert_array_equal(e.copy_to_host(stream=stream), 2 * x)
    assert d.device == stream.device


def test_empty_on_a_closed_stream_is_refused_before_allocating():
    s = rs.RocmStream()
    s.close()
    before = rs.memory_stats()["allocations"]
    with pytest.raises(rs.StreamClosedError):
        rs.empty(16, np.float32, stream=s)
    assert rs.memory_stats()["allocations"] == before


def test_memory_stats_count_what_is_allocated_and_freed():
    from conftest import collect
    collect()
    base = rs.memory_stats()
    arrays = [rs.empty(1000, np.uint8) for _ in range(5)]
    grown = rs.memory_stats()
    assert grown["in_use_bytes"] - base["in_use_bytes"] == 5000
    assert grown["allocations"] - base["allocations"] == 5
    assert grown["peak_bytes"] >= grown["in_use_bytes"]
    del arrays
    rs.empty_cache()
    after = rs.memory_stats()
    assert after["in_use_bytes"] == base["in_use_bytes"]
    assert after["frees"] - base["frees"] == 5 and after["pending_releases"] == 0


def test_out_of_memory_first_releases_what_was_dropped_and_cached_then_retries(runtime,
                                                                               monkeypatch):
    from rocmstreams.core import lifetime
    real = runtime.malloc_async
    calls, events = [], []

    class Dropped:  # an array another thread dropped while this one allocated
        def close(self):
            events.append("released")

    def tight(nbytes, stream, device):
        calls.append(nbytes)
        if len(calls) == 1:
            lifetime.defer(Dropped())
            raise rs.OutOfMemoryError("no room", backend=runtime.name, code=2, name="oom")
        return real(nbytes, stream, device)

    real_trim = runtime.pool_trim
    before = rs.memory_stats()["retries_after_release"]
    monkeypatch.setattr(runtime, "malloc_async", tight)
    monkeypatch.setattr(runtime, "pool_trim",
                        lambda device: (events.append("trimmed"), real_trim(device)))
    d = rs.empty(128, np.uint8)
    assert len(calls) == 2 and d.nbytes == 128
    assert events == ["released", "trimmed"]  # both before the second try
    assert rs.memory_stats()["retries_after_release"] == before + 1


def test_out_of_memory_names_the_bytes_asked_and_held_and_says_what_to_do():
    from conftest import collect
    collect()
    with pytest.raises(rs.OutOfMemoryError, match=r"asked for \d+ bytes while rocmstreams holds "
                                                 r"\d+ bytes.*allocate less"):
        rs.empty(1 << 62, np.uint8)
