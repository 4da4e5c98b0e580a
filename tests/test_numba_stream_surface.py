"""A RocmStream offers numba Stream's surface with numba's semantics, and asyncio waits."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import rocmstreams as rs


def test_add_callback_calls_back_numbas_way_with_stream_status_and_arg(stream):
    seen = []
    stream.add_callback(lambda s, status, arg: seen.append((s, status, arg)), "payload")
    stream.add_callback(lambda s, status, arg: seen.append(arg))  # arg defaults to None
    stream.synchronize()
    assert seen == [(stream, 0, "payload"), None]


def test_a_numba_style_callback_runs_after_the_work_queued_before_it(stream, latch):
    seen = []
    with latch() as gate:
        gate.hold(stream)
        stream.add_callback(lambda s, status, arg: seen.append(arg), "after the latch")
        assert seen == [] and not stream.query()
    stream.synchronize()
    assert seen == ["after the latch"]


def test_launch_host_func_calls_fn_with_its_arguments(stream):
    seen = []
    stream.launch_host_func(lambda *a: seen.append(a), 1, "two")
    stream.synchronize()
    assert seen == [(1, "two")]


def test_int_bool_handle_and_external_read_as_numba_streams_do(stream):
    assert int(stream) == stream.handle and bool(stream) is True
    assert stream.external is False
    borrowed = rs.RocmStream.from_external(stream)
    assert borrowed.external is True and int(borrowed) == int(stream)
    assert bool(rs.default_stream()) is True and int(rs.default_stream()) == 0


def test_auto_synchronize_waits_at_the_end_of_the_block_and_keeps_the_stream_open(stream,
                                                                                 latch):
    with latch() as gate:
        with stream.auto_synchronize() as s:
            assert s is stream
            gate.hold(stream)
            assert not stream.query()
            timer = threading.Timer(0.3, gate.release)  # released while the block ends
            timer.start()
        assert stream.query()  # the end of the block waited for the latch
        timer.join()
    assert gate.released and not stream.is_closed


def test_await_the_stream_and_an_event_inside_a_running_loop(stream, latch):
    gate = latch()

    async def main():
        gate.hold(stream)
        ev = stream.record()
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, gate.release)  # the loop keeps running while we wait
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        await stream
        assert ev.query()  # the work queued before the await has finished
        await ev
        await stream.async_done()
        t.cancel()
        return ticks

    ticks = asyncio.run(asyncio.wait_for(main(), 30))
    assert ticks >= 5, "the loop was blocked while waiting"
    assert gate.released


def test_async_done_outside_a_running_loop_is_a_clear_error(stream):
    with pytest.raises(RuntimeError, match="no running event loop"):
        stream.async_done()
