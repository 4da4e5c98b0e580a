"""The runtime backend's hot calls through the compiled layer, over the fake binding of
test_runtime_backends_offline and a fake runtime library of ctypes function pointers: success is
answered from the compiled call, every other status takes the binding's call and raises the
runtime's own error, and the switch turns the compiled calls off. Needs no GPU."""
from __future__ import annotations

import ctypes
import os
import random
import sys
import threading
import time

import pytest

import rocmstreams as rs
from rocmstreams.backends import native
from rocmstreams.backends.runtime import NativeStreamCalls, RuntimeStreamCalls
from rocmstreams.core.config import Config
from rocmstreams.errors import RocmStreamsError, SynchronizeError
from test_runtime_backends_offline import (BAD_HANDLE, ILLEGAL_ADDRESS, NOT_READY, OK,
                                           make_backend)

needs_extension = pytest.mark.skipif(native.compiled is None, reason="the compiled layer is not "
                                     "built here (pip install -e . with a C compiler), or "
                                     "ROCMSTREAMS_NATIVE_CALLS=0 left it out")
INVALID_CONTEXT = 201  # CUDA's driver status for a thread with no current context

StreamFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
PairFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
LaunchFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, *[ctypes.c_uint] * 7,
                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class FakeLibrary:
    """A runtime library's four C calls: each records its arguments and returns the status
    programmed for it in ``status`` (default 0)."""

    def __init__(self) -> None:
        self.status = {"query": OK, "sync": OK, "record": OK, "launch": OK}
        self.calls: list[tuple[str, tuple]] = []
        self._fns = {name: kind(self._recorder(name)) for name, kind in (
            ("query", StreamFn), ("sync", StreamFn), ("record", PairFn),
            ("launch", LaunchFn))}

    def _recorder(self, name):
        def call(*args):
            self.calls.append((name, args))
            return self.status[name]
        return call

    def points(self) -> native.EntryPoints:
        query, sync, record, launch = (ctypes.cast(self._fns[n], ctypes.c_void_p).value
                                       for n in ("query", "sync", "record", "launch"))
        return native.EntryPoints(query, sync, record, launch, NOT_READY)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def native_backend():
    """``(backend, binding, library)``: the fake runtime with the compiled calls over
    ``library``; the switch is on and turned back on after the test."""
    library = FakeLibrary()
    be, binding = make_backend(native_entry_points=library.points)
    native.set_enabled(True)
    yield be, binding, library
    native.set_enabled(True)


def binding_names(binding) -> list[str]:
    return [name for name, _ in binding.calls]


# ---- answered by the compiled calls ------------------------------------------------------------
@needs_extension
def test_query_is_answered_by_the_compiled_call_true_or_false(native_backend):
    be, binding, library = native_backend
    calls = be.stream_calls(0x1000)
    assert isinstance(calls, NativeStreamCalls) and be.native_calls
    assert calls.query() is True
    library.status["query"] = NOT_READY
    assert calls.query() is False
    assert library.calls == [("query", (0x1000,))] * 2 and binding.calls == []


@needs_extension
def test_the_legacy_stream_reaches_the_library_as_the_runtimes_legacy_handle(native_backend):
    be, _, library = native_backend
    be.stream_calls(0).synchronize()
    assert library.calls == [("sync", (1,))]  # the fake's legacy_stream


@needs_extension
def test_event_record_passes_the_event_then_the_stream(native_backend):
    be, binding, library = native_backend
    be.stream_calls(0x1000).event_record(0x2000)
    assert library.calls == [("record", (0x2000, 0x1000))] and binding.calls == []


# ---- every other status: the binding's call, the runtime's error -------------------------------
@needs_extension
@pytest.mark.parametrize("status", [ILLEGAL_ADDRESS, INVALID_CONTEXT, -1])
def test_a_failed_compiled_query_raises_the_bindings_error(native_backend, status):
    be, binding, library = native_backend
    library.status["query"] = status
    binding.status["StreamQuery"] = ILLEGAL_ADDRESS
    with pytest.raises(RocmStreamsError) as info:
        be.stream_calls(0x1000).query()
    assert (info.value.code, info.value.name) == (ILLEGAL_ADDRESS, "fakeErrorIllegalAddress")
    assert binding_names(binding)[0] == "StreamQuery"


@needs_extension
def test_a_compiled_call_the_binding_then_makes_succeeds_answers_as_the_binding(native_backend):
    """A thread with no current context (CUDA's driver says 201): the runtime's own call binds
    the device's context and answers."""
    be, binding, library = native_backend
    library.status.update(query=INVALID_CONTEXT, sync=INVALID_CONTEXT, record=INVALID_CONTEXT)
    calls = be.stream_calls(0x1000)
    binding.status["StreamQuery"] = NOT_READY
    assert calls.query() is False
    calls.synchronize()
    calls.event_record(0x2000)
    assert binding_names(binding) == ["StreamQuery", "StreamSynchronize", "EventRecord"]


@needs_extension
def test_a_failed_compiled_synchronize_raises_synchronize_error_with_the_runtimes_name(
        native_backend):
    be, binding, library = native_backend
    library.status["sync"] = ILLEGAL_ADDRESS
    binding.status["StreamSynchronize"] = ILLEGAL_ADDRESS
    with pytest.raises(SynchronizeError) as info:
        be.stream_calls(0x1000).synchronize()
    assert info.value.name == "fakeErrorIllegalAddress" and info.value.backend == "fake"


@needs_extension
def test_a_failed_compiled_record_raises_the_bindings_error(native_backend):
    be, binding, library = native_backend
    library.status["record"] = BAD_HANDLE
    binding.status["EventRecord"] = BAD_HANDLE
    with pytest.raises(RocmStreamsError, match="could not record event 0x2000") as info:
        be.stream_calls(0x1000).event_record(0x2000)
    assert info.value.name == "fakeErrorInvalidHandle"


# ---- the switch, and no extension --------------------------------------------------------------
@needs_extension
def test_turned_off_the_calls_go_through_the_binding(native_backend):
    be, binding, library = native_backend
    calls = be.stream_calls(0x1000)
    be.native_calls = False  # what rs.configure(native_calls=False) sets
    assert be.native_calls is False
    calls.query()
    calls.synchronize()
    calls.event_record(0x2000)
    assert library.calls == []
    assert binding_names(binding) == ["StreamQuery", "StreamSynchronize", "EventRecord"]
    be.native_calls = True
    calls.query()
    assert library.names() == ["query"]


@needs_extension
def test_configure_native_calls_turns_the_selected_backends_calls_off_for_the_block(
        native_backend, monkeypatch):
    from rocmstreams import backends
    be, binding, library = native_backend
    monkeypatch.setattr(backends, "_active", be)  # as if the fake runtime had been selected
    with rs.configure(native_calls=False):
        assert rs.config().native_calls is False and be.native_calls is False
        be.stream_calls(0x1000).query()
    assert rs.config().native_calls is True and be.native_calls is True
    be.stream_calls(0x1000).query()
    assert binding_names(binding) == ["StreamQuery"] and library.names() == ["query"]


def test_backend_info_says_whether_native_calls_are_in_use(backend):
    expected = backend.name != "cpu" and native.built()
    assert rs.backend().native_calls is expected
    with rs.configure(native_calls=False):
        assert rs.backend().native_calls is False


def test_native_calls_refuses_a_non_bool():
    with pytest.raises(TypeError, match="native_calls must be True or False"):
        rs.configure(native_calls=1)


@pytest.mark.parametrize("value, expected", [("0", False), ("off", False), ("1", True),
                                             ("", True)])
def test_the_environment_variable_sets_the_default(monkeypatch, value, expected):
    monkeypatch.setenv("ROCMSTREAMS_NATIVE_CALLS", value)
    assert Config().native_calls is expected


def test_the_cpu_backend_never_reports_native_calls():
    from rocmstreams.backends.cpu import CpuBackend
    be = CpuBackend.__new__(CpuBackend)  # no worker threads: only the property is read
    be.native_calls = True
    assert be.native_calls is False


def test_without_the_extension_the_backend_makes_the_bindings_calls(monkeypatch):
    monkeypatch.setattr(native, "compiled", None)
    library = FakeLibrary()
    assert native.entry_points(lambda: ctypes.CDLL(None), ("abs",) * 4) is None
    assert native.launch_binder(library.points()) is None
    be, binding = make_backend(native_entry_points=lambda: native.entry_points(
        lambda: ctypes.CDLL(None), ("abs",) * 4))
    calls = be.stream_calls(0x1000)
    assert type(calls) is RuntimeStreamCalls and be.native_calls is False
    assert calls.query() is True and binding_names(binding) == ["StreamQuery"]


@needs_extension
def test_entry_points_are_none_where_the_library_lacks_one_or_does_not_load():
    libc = ctypes.CDLL(None)
    assert native.entry_points(lambda: libc, ("abs", "abs", "abs", "abs")) is not None
    assert native.entry_points(lambda: libc, ("abs", "abs", "abs", "noSuchCall")) is None

    def unloadable():
        raise OSError("libnothing.so: cannot open shared object file")

    assert native.entry_points(unloadable, ("abs",) * 4) is None


def test_the_hip_on_cuda_shim_defines_every_call_the_compiled_layer_makes():
    import re
    from test_runtime_backends_offline import SHIM
    from rocmstreams.backends.hip import NATIVE_SYMBOLS
    defined = set(re.findall(r"HIP_API [^(]*?\b(hip\w+)\(", SHIM.read_text()))
    assert len(NATIVE_SYMBOLS) == 4 and set(NATIVE_SYMBOLS) <= defined


@needs_extension
def test_any_failure_finding_the_library_leaves_the_bindings_calls():
    def broken():
        raise RuntimeError("the library lookup itself failed")

    assert native.entry_points(broken, ("abs",) * 4) is None
    be, binding = make_backend(native_entry_points=lambda: native.entry_points(broken,
                                                                               ("abs",) * 4))
    assert type(be.stream_calls(0x1000)) is RuntimeStreamCalls and be.native_calls is False


@needs_extension
def test_the_environment_variable_leaves_the_extension_out_of_the_process():
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("import rocmstreams as rs; from rocmstreams.backends import native; "
            "rs.configure(native_calls=True); "
            "print(native.built(), native.compiled is None, native.enabled())")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root),
                               "ROCMSTREAMS_NATIVE_CALLS": "0"}, timeout=120)
    assert done.stdout.split() == ["True", "True", "False"], done.stderr


# ---- the compiled door: the stream core's checks and count made in C ---------------------------
def door_core(be, handle=0x1000, owned=False):
    from rocmstreams.streamcore import StreamCore
    core = StreamCore(be, handle, 0, owned=owned)
    assert type(core.door).__name__ == "StreamDoor"
    return core


def event_holder(handle=0x2000):
    from rocmstreams.core.lifetime import Handle
    return Handle(handle, None, "Event")


@needs_extension
def test_the_compiled_door_answers_query_synchronize_and_record_from_the_library(
        native_backend):
    be, binding, library = native_backend
    core, event = door_core(be), event_holder()
    assert core.door.query(core) is True
    library.status["query"] = NOT_READY
    assert core.door.query(core) is False
    library.status["query"] = OK
    core.door.synchronize(core, None)
    core.door.record_event(core, event)
    assert library.calls == [("query", (0x1000,))] * 3 + [("record", (0x2000, 0x1000))]
    assert binding.calls == [] and core.users == [] and event.users == []


@needs_extension
def test_the_compiled_door_raises_stream_closed_error_for_a_closed_stream_or_event(
        native_backend):
    from rocmstreams.errors import StreamClosedError
    be, _, library = native_backend
    core, event = door_core(be), event_holder()
    event.close()
    with pytest.raises(StreamClosedError, match="Event is closed"):
        core.door.record_event(core, event)
    core.close()
    for call in (lambda: core.door.query(core), lambda: core.door.synchronize(core),
                 lambda: core.door.record_event(core, event_holder()),
                 lambda: core.door.submit(core, "a copy", lambda calls: None)):
        with pytest.raises(StreamClosedError, match="RocmStream is closed"):
            call()
    assert library.calls == [] and core.users == []


@needs_extension
def test_a_close_during_a_compiled_call_releases_the_stream_after_the_call(native_backend):
    be, binding, library = native_backend
    be.stream_pool_size = 0
    core = door_core(be, owned=True)
    seen = []

    class CloseInTheCall(dict):
        """The status of the library's query, read while its call runs: another thread
        closes the stream then."""

        def __getitem__(self, name):
            core.close()
            seen.append((core.closed, "StreamDestroy" in binding_names(binding),
                         len(core.users)))
            return OK

    library.status = CloseInTheCall()
    assert core.door.query(core) is True
    assert seen == [(True, False, 1)]  # closed, not released while the call was in flight
    assert binding_names(binding).count("StreamDestroy") == 1 and core.users == []


@needs_extension
def test_a_failed_status_through_the_compiled_door_raises_the_bindings_error(native_backend):
    be, binding, library = native_backend
    core = door_core(be)
    library.status["record"] = BAD_HANDLE
    binding.status["EventRecord"] = BAD_HANDLE
    with pytest.raises(RocmStreamsError, match="could not record event 0x2000") as info:
        core.door.record_event(core, event_holder())
    assert info.value.name == "fakeErrorInvalidHandle" and core.users == []


@needs_extension
def test_the_compiled_door_hands_a_capture_a_callback_and_a_trace_to_the_python_door(
        native_backend):
    from rocmstreams import streamcore
    from rocmstreams.errors import CaptureError
    be, _, library = native_backend
    core = door_core(be)
    core.capture = streamcore.Capture([])
    with pytest.raises(CaptureError):
        core.door.query(core)
    core.capture = None
    from rocmstreams.core import callbacks
    callbacks.running.append(None)  # as a host callback running on this thread
    callbacks._thread.active = True
    try:
        with pytest.raises(RocmStreamsError, match="inside a host callback"):
            core.door.record_event(core, event_holder())
    finally:
        callbacks._thread.active = False
        callbacks.running.pop()

    class Tracer:
        def __init__(self):
            self.kinds = []

        def begin(self, core, kind, fn, args):
            self.kinds.append(kind)

        def end(self, core, token):
            pass

    tracer = Tracer()
    streamcore.tracers.append(tracer)
    try:
        core.door.record_event(core, event_holder())
        core.door.submit(core, streamcore.COPY, lambda calls, n: None, 1)
    finally:
        streamcore.tracers.remove(tracer)
    assert tracer.kinds == [streamcore.RECORD, streamcore.COPY]
    assert library.names() == ["record"]


@needs_extension
def test_the_compiled_submit_calls_with_the_streams_calls_and_leaves_on_an_exception(
        native_backend):
    be, _, _ = native_backend
    core = door_core(be)
    got = []
    assert core.door.submit(core, "a copy", lambda calls, *a: got.append((calls, a)) or 7,
                            *range(12)) == 7
    assert got == [(core.calls, tuple(range(12)))]

    def fails(calls):
        raise KeyError("raised by the operation")

    with pytest.raises(KeyError, match="raised by the operation"):
        core.door.submit(core, "a copy", fails)
    assert core.users == []


@needs_extension
def test_turned_off_the_compiled_door_goes_through_the_binding(native_backend):
    be, binding, library = native_backend
    core = door_core(be)
    be.native_calls = False
    assert core.door.query(core) is True
    core.door.record_event(core, event_holder())
    assert library.calls == [] and binding_names(binding) == ["StreamQuery", "EventRecord"]


@needs_extension
def test_the_compiled_door_refuses_a_core_class_whose_users_slot_is_not_its_handles(
        native_backend):
    """value and users are read in event holders (plain Handles) at the offsets found through
    the core's class: a class that shadows users with a slot of its own must be refused, not
    read out of the holder's bounds."""
    from rocmstreams.core import lifetime
    from rocmstreams.core.callbacks import running as _running
    from rocmstreams.streamcore import StreamCore, tracers
    _, _, library = native_backend
    points = library.points()

    class Shadowing(StreamCore):
        __slots__ = ("users",)

    with pytest.raises(TypeError, match="users and .value must be slots of one type"):
        native.compiled.StreamDoor(points.stream_query, points.event_record, 0x1000,
                                   NOT_READY, object(), Shadowing, _running, tracers,
                                   lifetime.release_queue())


@needs_extension
def test_the_compiled_door_answers_only_for_the_core_whose_calls_bound_it(native_backend):
    """A door calls the runtime with its own stream: handed another stream's core it must not
    call it with its handle (counted on the other core, a close of its own stream would not
    wait for the call), but leave the other core to the Python door."""
    be, _, library = native_backend
    a, b = door_core(be, 0x1000), door_core(be, 0x1010)
    a.close()
    assert a.door.query(b) is True
    a.door.synchronize(b)
    a.door.record_event(b, event_holder())
    assert a.door.submit(b, "a copy", lambda calls: calls) is b.calls
    assert library.calls == [("query", (0x1010,))] * 2 + [("record", (0x2000, 0x1010))]
    assert a.users == [] and b.users == []


# ---- a close from another thread while the compiled door calls ---------------------------------
STRESS_ROUNDS = int(os.environ.get("ROCMSTREAMS_DOOR_STRESS_ROUNDS", "1000"))


class LivenessLibrary:
    """A runtime library whose query and record note every call made with a handle already
    destroyed (``dead``); each call may hand the GIL to another thread, as a runtime call does."""

    def __init__(self) -> None:
        self.dead: set[int] = set()
        self.violations: list[tuple] = []
        self.calls = 0

        def query(stream):
            self.calls += 1
            time.sleep(0)
            if stream in self.dead:
                self.violations.append(("query", stream))
            return OK if random.random() < 0.7 else NOT_READY

        def record(event, stream):
            self.calls += 1
            time.sleep(0)
            if stream in self.dead or event in self.dead:
                self.violations.append(("record", event, stream))
            return OK

        self._fns = {"query": StreamFn(query), "sync": StreamFn(lambda stream: OK),
                     "record": PairFn(record), "launch": LaunchFn(lambda *args: OK)}

    def points(self) -> native.EntryPoints:
        query, sync, record, launch = (ctypes.cast(self._fns[n], ctypes.c_void_p).value
                                       for n in ("query", "sync", "record", "launch"))
        return native.EntryPoints(query, sync, record, launch, NOT_READY)


@needs_extension
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "turned-off"])
def test_a_close_from_another_thread_never_lets_a_call_reach_a_destroyed_handle(compiled):
    """Four threads query, synchronize, record an event on and submit work to one stream while
    a fifth closes it (and the event), round after round: every call succeeds or raises
    StreamClosedError, and no call reaches the runtime (the library or the binding) with a
    handle after its destroy. ROCMSTREAMS_DOOR_STRESS_ROUNDS sets the rounds."""
    from rocmstreams.core.lifetime import Handle
    from rocmstreams.errors import StreamClosedError
    from rocmstreams.streamcore import COPY, StreamCore
    library = LivenessLibrary()
    be, binding = make_backend(native_entry_points=library.points)
    be.stream_pool_size = 0  # every close destroys
    destroyed: list[int] = []

    def stream_destroy(stream):
        destroyed.append(stream)
        library.dead.add(stream)
        return (OK,)

    def checked(name, result):
        def call(*args):
            time.sleep(0)
            if any(isinstance(a, int) and a in library.dead for a in args):
                library.violations.append((name, *args))
            return result
        return call

    binding.fakeStreamDestroy = stream_destroy
    binding.fakeStreamQuery = checked("StreamQuery", (OK,))
    binding.fakeEventRecord = checked("EventRecord", (OK,))

    def work(calls, n):
        if calls.handle in library.dead:
            library.violations.append(("submit", calls.handle))
        time.sleep(0)
        if calls.handle in library.dead:
            library.violations.append(("submit, after a switch", calls.handle))
        return n

    counts, counting = {"ok": 0, "closed": 0}, threading.Lock()
    failures: list[str] = []
    round_state: dict[str, object] = {}
    start, end = threading.Barrier(6), threading.Barrier(6)
    stop = []

    def caller(seed):
        rnd = random.Random(seed)
        while True:
            start.wait()
            if stop:
                return
            core, event = round_state["core"], round_state["event"]
            ok = closed = 0
            for _ in range(6):
                op = rnd.randrange(4)
                try:
                    if op == 0:
                        core.door.query(core)
                    elif op == 1:
                        core.door.synchronize(core, None)
                    elif op == 2:
                        core.door.record_event(core, event)
                    else:
                        assert core.door.submit(core, COPY, work, 5) == 5
                    ok += 1
                except StreamClosedError:
                    closed += 1
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failures.append(repr(exc))
            with counting:
                counts["ok"] += ok
                counts["closed"] += closed
            end.wait()

    def closer():
        rnd = random.Random(99)
        while True:
            start.wait()
            if stop:
                return
            for _ in range(rnd.randrange(4)):
                time.sleep(0)
            round_state["core"].close()
            if rnd.random() < 0.5:
                round_state["event"].close()
            end.wait()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=closer))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    native.set_enabled(compiled)
    for t in threads:
        t.start()
    try:
        for r in range(STRESS_ROUNDS):
            handle = be.stream_create(False, 0, 0)
            core = StreamCore(be, handle, 0, owned=True)
            assert type(core.door).__name__ == "StreamDoor"
            event = Handle(0x900000 + r * 0x10, library.dead.add, "Event")
            round_state.update(core=core, event=event)
            start.wait()
            end.wait()
            assert core.closed and core.users == [] and destroyed.count(handle) == 1, r
            event.close()
            assert event.users == [] and event.value is None
    finally:
        stop.append(True)
        start.wait()
        for t in threads:
            t.join()
        sys.setswitchinterval(switch)
        native.set_enabled(True)
    print(f"{STRESS_ROUNDS} rounds: {counts['ok']} calls succeeded, {counts['closed']} raised "
          f"StreamClosedError, {library.calls} reached the library")
    assert failures == [] and library.violations == []
    assert len(destroyed) == STRESS_ROUNDS and counts["ok"] and counts["closed"]
