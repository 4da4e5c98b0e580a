"""Host callbacks: in order, no GIL deadlock, exceptions delivered at synchronize(), and no
runtime call made on a callback's thread (releases due there wait for the next drain)."""
import gc
import threading

import numpy as np
import pytest

import rocmstreams as rs
from rocmstreams.core import lifetime


def test_a_callback_gets_its_arguments(stream):
    got = []
    stream.launch_host_func(lambda *a: got.append(a), 1, "two", None)
    stream.synchronize()
    assert got == [(1, "two", None)]


def test_an_exception_in_a_callback_is_raised_at_the_next_synchronize(stream):
    def boom():
        raise KeyError("lost key")

    stream.launch_host_func(boom)
    with pytest.raises(rs.CallbackError, match="boom raised KeyError") as info:
        stream.synchronize()
    assert isinstance(info.value.__cause__, KeyError)
    stream.synchronize()  # delivered once; the stream goes on
    ran = []
    stream.launch_host_func(ran.append, 1)
    stream.synchronize()
    assert ran == [1]


def test_work_after_a_failing_callback_still_runs_in_order(stream):
    seen = []
    stream.launch_host_func(seen.append, 1)
    stream.launch_host_func(lambda: 1 / 0)
    stream.launch_host_func(seen.append, 2)
    with pytest.raises(rs.CallbackError):
        stream.synchronize()
    assert seen == [1, 2]


def test_callbacks_that_need_the_gil_do_not_deadlock_a_synchronizing_host(stream):
    # Each callback does real Python work (needs the GIL) while the main thread sits in
    # synchronize(); a binding that kept the GIL there would hang (numba-cuda issue 317).
    total = []
    for i in range(50):
        stream.launch_host_func(lambda i=i: total.append(sum(range(1000)) + i))
    done = threading.Event()
    result = {}

    def sync():
        try:
            stream.synchronize()
            result["ok"] = True
        finally:
            done.set()

    t = threading.Thread(target=sync, daemon=True)
    t.start()
    assert done.wait(60), "synchronize() did not return: callback deadlock"
    assert result == {"ok": True} and len(total) == 50


def test_add_callback_refuses_what_cannot_be_called(stream):
    with pytest.raises(TypeError, match="callable"):
        stream.launch_host_func("not callable")
    assert stream.query()


# ---- releases due on a callback's thread wait for another thread ---------------------------------
class _Recorded:
    """A queued release that notes the thread it ran on."""

    def __init__(self, threads):
        self.threads = threads

    def close(self):
        self.threads.append(threading.current_thread())


def test_a_drain_on_a_callback_thread_runs_no_release(stream):
    ran, seen_in_callback = [], []

    def callback():
        lifetime.defer(_Recorded(ran))
        lifetime.drain()
        seen_in_callback.extend(ran)

    stream.launch_host_func(callback)
    stream.synchronize()
    lifetime.drain()
    assert seen_in_callback == [] and ran == [threading.current_thread()]


def test_a_handle_closed_on_a_callback_thread_is_released_at_the_next_drain_elsewhere(stream):
    ran = []
    handle = lifetime.Handle(0x1234, lambda value: ran.append(threading.current_thread()),
                             "test handle")
    stream.launch_host_func(handle.close)
    stream.synchronize()
    assert handle.closed and ran == []
    lifetime.drain()
    assert ran == [threading.current_thread()]


def test_objects_collected_inside_a_callback_are_released_after_it_without_an_error(stream,
                                                                                 backend):
    from conftest import collect
    collect()
    counted = ("streams", "events", "allocations")
    before = {k: backend.live_handles()[k] for k in counted}
    held = [rs.RocmStream(non_blocking=True), rs.Event(), rs.empty(16, np.float32),
            rs.pinned_empty(16, np.float32)]

    def drop():
        held.clear()
        gc.collect()

    stream.launch_host_func(drop)
    stream.synchronize()  # no CallbackError: the finalizers queued the releases
    collect()
    assert {k: backend.live_handles()[k] for k in counted} == before
