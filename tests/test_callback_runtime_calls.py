"""A host callback that calls the runtime gets an error instead of a hang.

The runtimes forbid runtime calls inside a host function (CUDA: it may deadlock, or fail with
cudaErrorNotPermitted; a device-wide free there waits for the callback itself). Every public
call that reaches the runtime refuses a callback's thread, naming itself and what to do, before
anything reaches the backend, on every backend (the cpu backend's stream workers run callbacks
too). Found by a tester: allocations, stream and event creation, query(), close() and
empty_cache() went through while stream work and waits were refused.
"""
import inspect

import numpy as np
import pytest

import rocmstreams as rs
from rocmstreams.core import callbacks


class Things:
    """What the calls act on, made on the test's thread before the callback runs."""

    def __init__(self, make_stream, kernels, runtime):
        self.kernels = kernels
        self.other = make_stream(non_blocking=True)
        self.device = rs.empty(16, np.float32, stream=self.other)
        self.host = rs.pinned_empty(16, np.float32)
        self.start = self.other.record(timing=True)
        self.end = self.other.record(timing=True)
        with self.other.capture() as graph:
            kernels.add_scalar[1, 16, self.other](self.device, np.float32(1))
        self.graph = graph
        self.numba = runtime.numba_module()
        self.numba_event = self.numba.event()
        self.other.synchronize()


def _trace(t):
    with rs.trace():
        pass


CALLS = {
    "rs.empty": lambda t: rs.empty(16, np.float32),
    "rs.empty on a stream": lambda t: rs.empty(16, np.float32, stream=t.other),
    "rs.empty_like": lambda t: rs.empty_like(t.device),
    "rs.to_device": lambda t: rs.to_device(np.zeros(4, np.float32), stream=t.other),
    "rs.pinned_empty": lambda t: rs.pinned_empty(16, np.float32),
    "rs.copy_async": lambda t: rs.copy_async(t.host, t.device, stream=t.other),
    "rs.memory_stats": lambda t: rs.memory_stats(),
    "rs.empty_cache": lambda t: rs.empty_cache(),
    "rs.configure": lambda t: rs.configure(stream_pool_size=rs.config().stream_pool_size),
    "rs.trace": _trace,
    "RocmStream()": lambda t: rs.RocmStream(non_blocking=True),
    "stream.query": lambda t: t.other.query(),
    "stream.synchronize": lambda t: t.other.synchronize(),
    "stream.record": lambda t: t.other.record(),
    "stream.wait": lambda t: t.other.wait(t.start),
    "stream.launch_host_func": lambda t: t.other.launch_host_func(int),
    "stream.capture": lambda t: t.other.capture(),
    "stream.close": lambda t: t.other.close(),
    "Event()": lambda t: rs.Event(),
    "event.record": lambda t: t.start.record(t.other),
    "event.query": lambda t: t.start.query(),
    "event.synchronize": lambda t: t.start.synchronize(),
    "event.elapsed_time": lambda t: t.start.elapsed_time(t.end),
    "event.close": lambda t: t.start.close(),
    "graph.launch": lambda t: t.graph.launch(t.other),
    "graph.close": lambda t: t.graph.close(),
    "kernel launch": lambda t: t.kernels.add_scalar[1, 16, t.other](t.device, np.float32(1)),
    "rs.prepare": lambda t: rs.prepare(t.kernels.add_scalar, t.device, np.float32(1)),
    "numba to_device on a RocmStream": lambda t: t.numba.to_device(np.zeros(4, np.float32),
                                                                   stream=t.other),
    "numba event record on a RocmStream": lambda t: t.numba_event.record(t.other),
}


@pytest.fixture
def things(make_stream, kernels, runtime):
    return Things(make_stream, kernels, runtime)


@pytest.fixture
def backend_calls_in_callbacks(runtime, monkeypatch):
    """The names of the backend calls made on a callback's thread while the test runs."""
    made = []

    def spy(name, original):
        def call(*args, **kwargs):
            if callbacks.on_callback_thread():
                made.append(name)
            return original(*args, **kwargs)
        return call

    for name, value in inspect.getmembers(runtime, inspect.ismethod):
        if not name.startswith("_"):
            monkeypatch.setattr(runtime, name, spy(name, value))
    cls = type(runtime.stream_calls(0))
    for name, value in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("_"):
            monkeypatch.setattr(cls, name, spy(f"stream calls' {name}", value))
    return made


def _in_a_callback(stream, fn):
    """Run ``fn()`` in a host callback of ``stream``; the error it raised there (None: none)."""
    seen = []

    def callback():
        try:
            fn()
        except rs.RocmStreamsError as exc:
            seen.append(exc)
            return
        seen.append(None)

    stream.launch_host_func(callback)
    stream.synchronize(timeout=30)
    assert seen, "the callback did not run"
    return seen[0]


@pytest.mark.parametrize("call", list(CALLS))
def test_a_runtime_call_inside_a_host_callback_is_refused_saying_what_to_do(stream, things,
                                                                            call):
    error = _in_a_callback(stream, lambda: CALLS[call](things))
    assert error is not None, f"{call} went through inside a host callback"
    assert "inside a host callback" in str(error)
    assert "on the thread that queued the callback, after the stream passes it" in str(error)


@pytest.mark.parametrize("call", list(CALLS))
def test_a_call_refused_in_a_host_callback_reaches_no_backend_call(stream, things,
                                                                   backend_calls_in_callbacks,
                                                                   call):
    _in_a_callback(stream, lambda: CALLS[call](things))
    assert backend_calls_in_callbacks == []


def test_an_uncaught_refusal_is_raised_as_the_callback_error_at_synchronize(stream):
    stream.launch_host_func(rs.Event)
    with pytest.raises(rs.CallbackError, match=r"Event\(\) was called from inside "
                                               r"a host callback") as info:
        stream.synchronize(timeout=30)
    assert isinstance(info.value.__cause__, rs.RocmStreamsError)


def test_a_stream_whose_close_was_refused_in_a_callback_stays_open_and_usable(stream, things):
    _in_a_callback(stream, things.other.close)
    assert not things.other.is_closed
    things.other.launch_host_func(int)
    things.other.synchronize()


def test_the_same_calls_outside_a_callback_are_not_refused(things):
    for call in ("RocmStream()", "Event()", "stream.query", "event.query"):
        CALLS[call](things)
