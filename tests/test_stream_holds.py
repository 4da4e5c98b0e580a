"""Holds on streams (backends.holds), which every backend's stream_hold / stream_unhold /
stream_destroy use: a stream released while held goes with its last hold."""
from __future__ import annotations

import threading

import pytest

from rocmstreams.backends.holds import StreamHolds

S = 0x1230


@pytest.fixture
def holds():
    return StreamHolds(threading.Lock())


def test_a_stream_that_is_not_held_is_destroyed_at_once(holds):
    assert holds.defer_destroy(S) is False


def test_a_held_stream_is_destroyed_by_its_last_unhold(holds):
    holds.hold(S, {S})
    holds.hold(S, {S})
    assert holds.defer_destroy(S) is True
    assert holds.unhold(S) is False
    assert holds.unhold(S) is True


def test_the_last_unhold_of_a_stream_still_in_use_destroys_nothing(holds):
    holds.hold(S, {S})
    assert holds.unhold(S) is False
    assert holds.defer_destroy(S) is False  # no hold is left


def test_a_stream_the_backend_does_not_own_is_never_held(holds):
    holds.hold(S, set())  # a default stream, or a borrowed one
    assert holds.defer_destroy(S) is False


def test_an_unhold_without_a_hold_does_nothing(holds):
    assert holds.unhold(S) is False
    holds.hold(S, {S})
    assert holds.defer_destroy(S) is True


def test_the_backend_releases_a_held_stream_at_its_last_unhold(runtime):
    s = runtime.stream_create(True, 0, 0)
    before = runtime.live_handles()["streams"]
    runtime.stream_hold(s)
    runtime.stream_hold(s)
    runtime.stream_destroy(s)
    runtime.stream_unhold(s)
    assert runtime.live_handles()["streams"] == before
    runtime.stream_unhold(s)
    assert runtime.live_handles()["streams"] == before - 1
