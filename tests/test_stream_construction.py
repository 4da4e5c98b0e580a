"""Construction, options, identity and repr of RocmStream."""
import pickle

import numpy as np
import pytest

import rocmstreams as rs


def test_default_construction_gives_an_owned_open_blocking_stream():
    s = rs.RocmStream()
    try:
        assert not s.is_closed and s.owned
        assert s.non_blocking is False and s.priority == 0
        assert s.handle != 0
        assert s.query() is True
    finally:
        s.close()


def test_non_blocking_and_priority_are_kept(make_stream):
    least, greatest = rs.priority_range()
    s = make_stream(non_blocking=True, priority=greatest)
    assert s.non_blocking is True and s.priority == greatest


@pytest.mark.parametrize("offset", [-1, +1])
def test_priority_out_of_range_is_a_value_error_naming_the_range(offset):
    least, greatest = rs.priority_range()
    bad = greatest + offset if offset < 0 else least + offset
    before = rs.backend().live_handles()["streams"]
    with pytest.raises(ValueError, match=rf"priority={bad} is out of range \[{greatest}, {least}\]"):
        rs.RocmStream(priority=bad)
    assert rs.backend().live_handles()["streams"] == before


@pytest.mark.parametrize("kwargs", [{"priority": 1.5}, {"priority": "0"}, {"priority": True},
                                    {"non_blocking": 1}, {"non_blocking": None}])
def test_wrongly_typed_options_are_type_errors(kwargs):
    with pytest.raises(TypeError):
        rs.RocmStream(**kwargs)


def test_each_stream_has_its_own_handle(make_stream):
    a, b = make_stream(), make_stream()
    assert a.handle != b.handle
    assert a != b


def test_a_borrowed_view_of_a_stream_is_equal_and_hashes_alike(stream):
    other = rs.RocmStream.from_external(stream.handle)
    assert other == stream and hash(other) == hash(stream)
    assert {stream: 1}[other] == 1
    assert not other.owned


def test_cuda_stream_protocol_exports_version_zero_and_the_handle(stream):
    assert stream.__cuda_stream__() == (0, stream.handle)


def test_repr_names_handle_backend_flags_and_ownership(stream):
    text = repr(stream)
    assert f"{stream.handle:#x}" in text and rs.backend().name in text
    assert "non_blocking=True" in text and "owned" in text


def test_default_streams_are_never_owned_and_survive_close():
    legacy = rs.default_stream()
    per_thread = rs.per_thread_default_stream()
    assert legacy.handle == 0 and per_thread.handle == 2
    assert not legacy.owned and not per_thread.owned
    legacy.close()
    per_thread.close()
    again = rs.default_stream()
    again.synchronize()
    assert again.query()


def test_per_thread_default_stream_runs_work_in_order(kernels, rng):
    s = rs.per_thread_default_stream()
    x = rng.random(64).astype(np.float32)
    d = rs.to_device(x, stream=s)
    kernels.scale[1, 32, s](d, np.float32(3), d)
    out = d.copy_to_host(stream=s)
    s.synchronize()
    np.testing.assert_array_equal(out, x * np.float32(3))


def test_from_external_refuses_what_is_not_a_stream():
    with pytest.raises(TypeError, match="__cuda_stream__"):
        rs.RocmStream.from_external("stream")
    with pytest.raises(ValueError):
        rs.RocmStream.from_external(-5)


def test_stream_options_are_checked_before_any_runtime_call():
    with pytest.raises(TypeError):
        rs.StreamOptions(priority="high")


def test_streams_refuse_to_pickle_with_a_hint(stream):
    with pytest.raises(TypeError, match="process"):
        pickle.dumps(stream)
