"""Borrowed streams are never destroyed by rocmstreams and keep their owner alive."""
import gc
import weakref

import numpy as np
import pytest

import rocmstreams as rs
from conftest import collect


class ForeignStream:
    """Any object exporting __cuda_stream__, like a CuPy, torch or cuda.core stream."""

    def __init__(self, handle):
        self._handle = handle

    def __cuda_stream__(self):
        return (0, self._handle)


def test_a_borrowed_stream_survives_our_close(kernels, stream, rng):
    borrowed = rs.RocmStream.from_external(ForeignStream(stream.handle))
    assert not borrowed.owned and borrowed == stream
    borrowed.close()
    assert borrowed.is_closed and not stream.is_closed
    x = rng.random(128, dtype=np.float32)
    d = rs.to_device(x, stream=stream)
    kernels.scale[1, 128, stream](d, np.float32(2), d)
    stream.synchronize()
    np.testing.assert_array_equal(d.copy_to_host(stream=stream), 2 * x)


def test_borrowing_an_int_handle_does_not_destroy_it(stream):
    collect()  # streams of earlier tests, already garbage, are not counted
    before = rs.backend().live_handles()["streams"]
    borrowed = rs.RocmStream.from_external(stream.handle)
    del borrowed
    collect()
    assert rs.backend().live_handles()["streams"] == before
    assert stream.query()


def test_a_borrowed_stream_keeps_its_owner_alive(stream):
    owner = ForeignStream(stream.handle)
    watch = weakref.ref(owner)
    borrowed = rs.RocmStream.from_external(owner)
    del owner
    collect()
    assert watch() is not None
    borrowed.synchronize()
    del borrowed
    collect()
    assert watch() is None


def test_work_on_a_borrowed_stream_lands_on_the_owner(latch, stream):
    borrowed = rs.RocmStream.from_external(ForeignStream(stream.handle))
    gate = latch().hold(borrowed)
    assert not stream.query()
    gate.release()
    stream.synchronize()
    assert borrowed.query()


def test_an_unsupported_protocol_version_is_refused():
    class Future:
        def __cuda_stream__(self):
            return (7, 1234)
    with pytest.raises(ValueError, match="version 7"):
        rs.RocmStream.from_external(Future())
