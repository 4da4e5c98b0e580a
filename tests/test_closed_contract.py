"""Every operation on a closed stream raises StreamClosedError before reaching the runtime."""
import numpy as np
import pytest

import rocmstreams as rs


@pytest.fixture
def closed():
    s = rs.RocmStream(non_blocking=True)
    s.close()
    return s


OPERATIONS = {
    "query": lambda s, k: s.query(),
    "synchronize": lambda s, k: s.synchronize(),
    "record": lambda s, k: s.record(),
    "wait_event": lambda s, k: s.wait(rs.Event()),
    "add_callback": lambda s, k: s.add_callback(print),
    "launch_host_func": lambda s, k: s.launch_host_func(print),
    "handle": lambda s, k: s.handle,
    "cuda_stream": lambda s, k: s.__cuda_stream__(),
    "launch": lambda s, k: k.add_scalar[1, 32, s](rs.empty(32, np.float32), np.float32(1)),
    "h2d": lambda s, k: rs.to_device(np.zeros(4), stream=s),
    "d2h": lambda s, k: rs.empty(4).copy_to_host(stream=s),
    "event_record_on": lambda s, k: rs.Event().record(s),
    "enter": lambda s, k: s.__enter__(),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operation_on_a_closed_stream_raises_the_closed_error(name, closed, kernels):
    with pytest.raises(rs.StreamClosedError, match="closed"):
        OPERATIONS[name](closed, kernels)


def test_another_stream_cannot_wait_on_a_closed_one(closed, stream):
    with pytest.raises(rs.StreamClosedError):
        stream.wait(closed)
    assert stream.query()


def test_close_is_idempotent_and_repr_stays_safe():
    s = rs.RocmStream()
    before = rs.backend().live_handles()["streams"]
    s.close()
    s.close()
    assert s.is_closed
    assert "closed" in repr(s) and "closed" in repr(s)
    assert rs.backend().live_handles()["streams"] == before - 1


def test_with_block_synchronizes_then_closes(kernels, rng):
    x = rng.random(256, dtype=np.float32)
    with rs.RocmStream() as s:
        d = rs.to_device(x, stream=s)
        kernels.scale[2, 64, s](d, np.float32(4), d)
        out = rs.pinned_empty(256, np.float32)
        d.copy_to_host(out, stream=s)
    assert s.is_closed
    np.testing.assert_array_equal(out, x * np.float32(4))


def test_a_closed_stream_equals_only_itself(closed):
    assert closed == closed
    assert closed != rs.default_stream()
