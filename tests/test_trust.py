"""Trust: closing under concurrent use, no deadlock through finalizers, interruptible and
time-bounded waits, callbacks that call the runtime, and bad input refused before anything is
queued, on every backend."""
from __future__ import annotations

import gc
import os
import signal
import threading
import time

import numpy as np
import pytest

import rocmstreams as rs


def _bounded(fn, seconds=60.0):
    """Run ``fn`` on a thread; a deadlock becomes a failure instead of a hang."""
    box: list[BaseException] = []

    def body():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            box.append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} did not finish in {seconds} s (deadlock?)"
    if box:
        raise box[0]


# ---- close against concurrent use --------------------------------------------------------------
@pytest.mark.parametrize("operation", ["add_callback", "launch", "copy", "record", "query"])
def test_close_while_another_thread_queues_raises_only_stream_closed_error(
        kernels, operation):
    a = rs.empty(64, np.float32)
    host = rs.pinned_empty(64, np.float32)
    limit = 100 if operation == "launch" else 2000  # simulated kernels are slow to drain
    for _ in range(8 if operation == "launch" else 20):
        s = rs.RocmStream(non_blocking=True)
        ops = {"add_callback": lambda: s.launch_host_func(lambda: None),
               "launch": lambda: kernels.add_scalar[1, 64, s](a, np.float32(1)),
               "copy": lambda: rs.copy_async(host, a, stream=s),
               "record": lambda: s.record(),
               "query": lambda: s.query()}
        op = ops[operation]
        errors: list[BaseException] = []
        started = threading.Event()

        def hammer():
            started.set()
            try:
                for _ in range(limit):
                    op()
                while not s.is_closed:
                    time.sleep(0)
                op()
                errors.append(AssertionError(f"{operation} on a closed stream did not raise"))
            except rs.StreamClosedError:
                return
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=hammer)
        t.start()
        started.wait()
        time.sleep(0.002)
        s.close()
        t.join(30)
        assert not t.is_alive()
        assert not errors, errors


# ---- finalizers never deadlock -----------------------------------------------------------------
def test_fresh_arrays_in_a_loop_never_deadlock(kernels):
    s = rs.RocmStream(non_blocking=True)
    out = rs.empty(32, np.float32)

    def loop():
        for i in range(2500):
            d = rs.to_device(np.full(32, i, np.float32), stream=s)
            kernels.scale[1, 32, s](out, np.float32(2), d)
        s.synchronize()

    _bounded(loop, 120)
    np.testing.assert_array_equal(out.copy_to_host(stream=s), np.full(32, 2 * 2499, np.float32))
    s.synchronize()
    s.close()


def test_streams_and_arrays_in_reference_cycles_never_deadlock_the_next_stream():
    class Holder:
        def __init__(self):
            self.me = self
            self.stream = rs.RocmStream()
            self.array = rs.empty(16, np.float32)

    def loop():
        for _ in range(200):
            Holder()
            gc.collect()
            rs.RocmStream().close()

    _bounded(loop, 120)


# ---- waits ---------------------------------------------------------------------------------------
def test_synchronize_with_a_timeout_raises_wait_timeout_and_the_stream_stays_usable(
        latch, stream):
    with latch() as gate:
        gate.hold(stream)
        t0 = time.perf_counter()
        with pytest.raises(rs.WaitTimeoutError, match="still running"):
            stream.synchronize(timeout=0.2)
        assert 0.15 < time.perf_counter() - t0 < 5
        assert not stream.query()
        with pytest.raises(rs.WaitTimeoutError):
            stream.record().synchronize(timeout=0.1)
    stream.synchronize()
    assert stream.query()


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals")
@pytest.mark.parametrize("wait", ["stream", "event", "with", "pageable copy_to_host"])
def test_ctrl_c_interrupts_a_wait_within_100_ms_and_the_stream_stays_usable(latch, stream,
                                                                            wait):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    took = []
    for _ in range(3):  # every wait is interrupted; the best of three is timed (a loaded machine)
        with latch() as gate:
            gate.hold(stream)
            event = stream.record()
            sent = []
            timer = threading.Timer(0.2, lambda: (sent.append(time.perf_counter()),
                                                  os.kill(os.getpid(), signal.SIGINT)))
            timer.start()
            d = rs.empty(1024, np.float32)
            with pytest.raises(KeyboardInterrupt):
                if wait == "pageable copy_to_host":
                    d.copy_to_host(stream=stream)
                elif wait == "stream":
                    stream.synchronize()
                elif wait == "event":
                    event.synchronize()
                else:
                    with rs.RocmStream.from_external(stream):
                        pass
            took.append(time.perf_counter() - sent[0])
            assert not stream.query()
        stream.synchronize()
        if min(took) < 0.1:
            break
    assert min(took) < 0.1, f"the interrupts took {[round(t * 1e3) for t in took]} ms"
    stream.synchronize()
    assert stream.query() and event.query()


@pytest.mark.parametrize("bad", [-1, "1", float("nan"), True])
def test_a_bad_timeout_is_refused_before_waiting(stream, bad):
    with pytest.raises(ValueError, match="timeout"):
        stream.synchronize(timeout=bad)
    stream.synchronize()


# ---- callbacks -----------------------------------------------------------------------------------
def test_a_callback_that_synchronizes_gets_an_error_instead_of_a_hang(stream):
    seen: list[BaseException] = []

    def cb():
        try:
            stream.synchronize()
        except rs.RocmStreamsError as exc:
            seen.append(exc)

    stream.launch_host_func(cb)
    _bounded(stream.synchronize, 30)
    assert seen and "host callback" in str(seen[0])


def test_many_raising_callbacks_raise_once_with_the_count_of_the_others(stream):
    def boom(i):
        raise ValueError(f"callback {i}")

    for i in range(50):
        stream.launch_host_func(boom, i)
    with pytest.raises(rs.CallbackError, match=r"callback 0 .*and 49 more"):
        stream.synchronize()
    stream.synchronize()  # all delivered at once


# ---- bad input -----------------------------------------------------------------------------------
class _Seven:
    def __cuda_stream__(self):
        return 7


class _NotAStream:
    pass


def _bad_inputs(kernels, s, a):
    ev = rs.Event(timing=True)
    k = kernels.add_scalar
    one = np.float32(1)
    return {
        "negative grid": (lambda: k[-1, 1, s](a, one), ValueError, "between 1 and"),
        "grid 0": (lambda: k[0, 32, s](a, one), ValueError, "at least one block"),
        "block 0": (lambda: k[1, 0, s](a, one), ValueError, "between 1 and"),
        "block 2048": (lambda: k[1, 2048, s](a, one), ValueError, "between 1 and 1024"),
        "block 64x64": (lambda: k[1, (64, 64), s](a, one), ValueError, "more blocks"),
        "float grid": (lambda: k[2.5, 32, s](a, one), TypeError, "integer division"),
        "string stream": (lambda: k[1, 1, "notastream"](a, one), TypeError, "RocmStream"),
        "int stream": (lambda: k[1, 1, 42](a, one), TypeError, "RocmStream"),
        "object stream": (lambda: k[1, 64, object()](a, one), TypeError, "__cuda_stream__"),
        "instance stream": (lambda: k[1, 64, _NotAStream()](a, one), TypeError,
                            "a Numba stream"),
        "list stream": (lambda: k[1, 64, [1]](a, one), TypeError, "0 or None"),
        "5-tuple": (lambda: k[1, 1, s, 0, 0](a, one), TypeError, "launch configuration"),
        "object array argument": (lambda: k[1, 64, s](np.array([object()] * 64), one),
                                  TypeError, "argument 0: dtype object holds Python objects"),
        "string argument": (lambda: k[1, 64, s](a, "1"), TypeError,
                            "argument 1: a str is not a kernel argument"),
        "negative shared memory": (lambda: k[1, 1, s, -4](a, one), ValueError,
                                   "non-negative"),
        "event record on a string": (lambda: ev.record("x"), TypeError, "RocmStream"),
        "stream record of a string": (lambda: s.record("x"), TypeError, "Event"),
        "elapsed time to an int": (lambda: ev.elapsed_time(5), TypeError, "end Event"),
        "elapsed time to None": (lambda: ev.elapsed_time(None), TypeError, "end Event"),
        "empty(3.5)": (lambda: rs.empty(3.5), TypeError, "shape"),
        "empty(None)": (lambda: rs.empty(None), TypeError, "shape"),
        "empty negative": (lambda: rs.empty((4, -1)), ValueError, "non-negative"),
        "empty overflowing": (lambda: rs.empty((2**32, 2**32), np.float32), ValueError,
                              "allocate less"),
        "empty 2**63 bytes": (lambda: rs.empty(2**63, np.uint8), ValueError, "allocate less"),
        "object dtype to_device": (lambda: rs.to_device(np.array([1, "a"], dtype=object),
                                                        stream=s), TypeError, "astype"),
        "object dtype empty": (lambda: rs.empty(4, object), TypeError, "Python objects"),
        "structured with objects": (lambda: rs.empty(2, np.dtype([("a", "f4"), ("b", "O")])),
                                    TypeError, "Python objects"),
        "__cuda_stream__ returning 7": (lambda: rs.RocmStream.from_external(_Seven()),
                                        TypeError, "(version, handle)"),
        "copy onto a string stream": (lambda: rs.copy_async(a, np.ones(64, np.float32),
                                                            stream="s"), TypeError,
                                      "RocmStream"),
        "priority float": (lambda: rs.RocmStream(priority=0.5), TypeError, "priority"),
        "non_blocking int": (lambda: rs.RocmStream(non_blocking=1), TypeError, "True or False"),
        "options and keywords": (lambda: rs.RocmStream(priority=-1, options=rs.StreamOptions()),
                                 TypeError, "not both"),
        "unknown setting": (lambda: rs.configure(stream_pool=3), TypeError, "unknown setting"),
        "event timing not a bool": (lambda: rs.Event(timing=1), TypeError, "True or False"),
        "event on a missing device": (lambda: rs.Event(device=99), rs.InvalidDeviceError,
                                      "valid ordinal"),
        "stream on a string device": (lambda: rs.RocmStream(device="0"), rs.InvalidDeviceError,
                                      "int ordinal"),
        "to_device of a list": (lambda: rs.to_device([1.0, 2.0], stream=s), TypeError,
                                "numpy array"),
        "copy from a string": (lambda: rs.copy_async(a, "x", stream=s), TypeError,
                               "__cuda_array_interface__"),
        "copy of another shape": (lambda: rs.copy_async(a, np.ones(3, np.float32), stream=s),
                                  ValueError, "shape mismatch"),
        "wait on an int": (lambda: s.wait(5), TypeError, "Event or a stream"),
        "host func not callable": (lambda: s.launch_host_func(5), TypeError, "callable"),
        "pinned negative": (lambda: rs.pinned_empty(-1), ValueError, "non-negative"),
        "empty of a bad dtype": (lambda: rs.empty(4, "notadtype"), TypeError, "dtype"),
        "borrow a negative handle": (lambda: rs.RocmStream.from_external(-1), ValueError,
                                     "non-negative"),
        "borrow a string": (lambda: rs.RocmStream.from_external("x"), TypeError,
                            "__cuda_stream__"),
        "negative pool size": (lambda: rs.configure(stream_pool_size=-1), ValueError,
                               "at least 0"),
        "timeout a string": (lambda: s.synchronize(timeout="1"), ValueError, "timeout"),
        "bad setting": (lambda: rs.configure(staging_buffers=0), ValueError, "at least 1"),
    }


CASES = ["negative grid", "grid 0", "block 0", "block 2048", "block 64x64", "float grid",
         "string stream", "int stream", "object stream", "instance stream", "list stream",
         "5-tuple", "object array argument", "string argument", "negative shared memory",
         "event record on a string", "stream record of a string", "elapsed time to an int",
         "elapsed time to None", "empty(3.5)", "empty(None)", "empty negative",
         "empty overflowing", "empty 2**63 bytes", "object dtype to_device",
         "object dtype empty", "structured with objects", "__cuda_stream__ returning 7",
         "copy onto a string stream", "priority float", "non_blocking int",
         "options and keywords", "unknown setting", "bad setting", "event timing not a bool",
         "event on a missing device", "stream on a string device", "to_device of a list",
         "copy from a string", "copy of another shape", "wait on an int",
         "host func not callable", "pinned negative", "empty of a bad dtype",
         "borrow a negative handle", "borrow a string", "negative pool size",
         "timeout a string"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_with_a_clear_error_nothing_queued_and_the_stream_usable(
        kernels, stream, case):
    a = rs.to_device(np.zeros(64, np.float32), stream=stream)
    stream.synchronize()
    before = rs.backend().live_handles()
    call, error, says = _bad_inputs(kernels, stream, a)[case]
    with pytest.raises(error, match=says):
        call()
    assert stream.query(), "something was queued"
    kernels.add_scalar[1, 64, stream](a, np.float32(1))
    np.testing.assert_array_equal(a.copy_to_host(stream=stream), np.ones(64, np.float32))
    after = rs.backend().live_handles()
    assert after["allocations"] <= before["allocations"] + 1  # the copy's result only


@pytest.mark.parametrize("grid, block, says", [
    (1.0, 64, "grid"), (True, 64, "grid"), (np.float64(1.0), 64, "grid"),
    (np.bool_(True), 64, "grid"), (1, 64.0, "block")],
    ids=["float grid", "bool grid", "numpy float grid", "numpy bool grid", "float block"])
def test_a_configuration_equal_to_a_launched_one_is_still_refused(kernels, stream, grid, block,
                                                                  says):
    """1.0 == 1 and True == 1, with the same hash: the launch cache must not take them for the
    configuration [1, 64] launched before."""
    a = rs.to_device(np.zeros(64, np.float32), stream=stream)
    kernels.add_scalar[1, 64, stream](a, np.float32(1))
    with pytest.raises(TypeError, match=f"the {says} holds ints"):
        kernels.add_scalar[grid, block, stream](a, np.float32(1))
    np.testing.assert_array_equal(a.copy_to_host(stream=stream), np.ones(64, np.float32))


@pytest.mark.parametrize("grid, block, says", [
    ((1.0, 1), (64, 1), "grid"), ((1, True), (64, 1), "grid"), ((1, 1), (64.0, 1), "block")],
    ids=["float in a grid tuple", "bool in a grid tuple", "float in a block tuple"])
def test_a_tuple_configuration_equal_to_a_launched_one_is_still_refused(kernels, stream, grid,
                                                                        block, says):
    """(1.0, 1) == (1, 1), with the same hash: the launch cache must not take it for the
    configuration [(1, 1), (64, 1)] launched before."""
    a = rs.to_device(np.zeros(64, np.float32), stream=stream)
    kernels.add_scalar[(1, 1), (64, 1), stream](a, np.float32(1))
    with pytest.raises(TypeError, match=f"the {says} holds ints"):
        kernels.add_scalar[grid, block, stream](a, np.float32(1))
    np.testing.assert_array_equal(a.copy_to_host(stream=stream), np.ones(64, np.float32))


@pytest.mark.parametrize("grid, block, error", [
    ((0, 1), (8, 8), ValueError), ((1, -1), (8, 8), ValueError), ((1, 65536), (8, 8), ValueError),
    ((1, 1), (32, 64), ValueError), ((1, 1), (0, 8), ValueError), ((1, 1, 1, 1), (8, 8), ValueError),
    ((1.0, 1), (8, 8), TypeError), (-3, 64, ValueError), (2 ** 31, 64, ValueError)],
    ids=["grid 0 in a tuple", "negative in a tuple", "grid y past 65535", "block of 2048",
         "block 0 in a tuple", "grid of 4 dimensions", "float in a grid tuple", "negative grid",
         "grid past 2**31 - 1"])
def test_a_new_configuration_after_a_launch_on_that_stream_is_still_checked(kernels, stream,
                                                                           grid, block, error):
    """A grid not launched before takes a shorter path once the kernel has run on the stream
    (the kernel's launch bound to it); that path checks what the first launch's does."""
    a = rs.to_device(np.zeros(64, np.float32), stream=stream)
    kernels.add_scalar[1, 64, stream](a, np.float32(1))
    with pytest.raises(error):
        kernels.add_scalar[grid, block, stream](a, np.float32(1))
    kernels.add_scalar[2, 32, stream](a, np.float32(1))  # a new grid after it still runs
    np.testing.assert_array_equal(a.copy_to_host(stream=stream), np.full(64, 2, np.float32))


def test_numpy_integer_priorities_and_devices_are_accepted():
    s = rs.RocmStream(priority=np.int64(-1), device=np.int64(0), non_blocking=np.bool_(True))
    assert (s.priority, s.device, s.non_blocking) == (-1, 0, True)
    s.close()


def test_capture_does_not_collect_garbage(stream, kernels, monkeypatch):
    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    a = rs.empty(32, np.float32)
    with stream.capture() as graph:
        kernels.add_scalar[1, 32, stream](a, np.float32(1))
    graph.close()
    assert calls == []


# ---- threads, forks, faults ----------------------------------------------------------------------
def test_short_lived_threads_leave_no_per_thread_stream_behind(kernels):
    arrays = [rs.to_device(np.zeros(8, np.float32)) for _ in range(10)]  # one per thread: the
    legacy = rs.default_stream()  # per-thread streams of live threads run side by side
    legacy.synchronize()

    def per_thread_workers():
        return [t for t in threading.enumerate() if t.name.startswith("rocmstreams-cpu-per")]

    base = len(per_thread_workers())

    def touch(a):
        s = rs.per_thread_default_stream()
        kernels.add_scalar[1, 8, s](a, np.float32(1))
        s.synchronize()

    for _ in range(20):
        threads = [threading.Thread(target=touch, args=(a,)) for a in arrays]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    gc.collect()
    legacy.record().synchronize()  # the legacy stream reaps what ended threads left
    deadline = time.monotonic() + 10
    while len(per_thread_workers()) > base and time.monotonic() < deadline:
        time.sleep(0.05)
        legacy.record().synchronize()
    assert len(per_thread_workers()) <= base, per_thread_workers()
    for a in arrays:
        np.testing.assert_array_equal(a.copy_to_host(stream=legacy), np.full(8, 20))


_FORK_CHILD = """
import os, sys, numpy as np, rocmstreams as rs
from rocmstreams.kernels import add_scalar
s = rs.RocmStream(non_blocking=True)
a = rs.to_device(np.zeros(8, np.float32), stream=s)
s.synchronize()
pid = os.fork()
if pid == 0:
    try:
        s.query()
        print("inherited stream: no error")
    except rs.RocmStreamsError as exc:
        print("inherited stream:", exc)
    try:
        b = rs.to_device(np.arange(8, dtype=np.float32))
        rs.default_stream().synchronize()
        print("child legacy stream:", b.copy_to_host().tolist())
    except rs.RocmStreamsError as exc:
        print("child legacy stream:", exc)
    sys.stdout.flush()
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_clear_error_or_a_working_runtime():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _FORK_CHILD], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    out = done.stdout
    assert "inherited stream:" in out and "no error" not in out, out + done.stderr
    assert "spawn" in out or "parent" in out, out
    if rs.backend().name == "cpu":  # the cpu runtime starts afresh in the child
        assert "child legacy stream: [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]" in out, out


_FAULT = """
import numpy as np, rocmstreams as rs
from rocmstreams.kernels import cuda
@cuda.jit
def wild(a):
    a[1 << 40] = 1.0
s = rs.RocmStream(non_blocking=True)
a = rs.empty(4, np.float32)
wild[1, 1, s](a)
try:
    s.synchronize()
except rs.RocmStreamsError as exc:
    print("FAULT:", exc)
try:
    rs.empty(4, np.float32)  # (a new stream may come from the pool without a runtime call)
except rs.RocmStreamsError as exc:
    print("AFTER:", exc)
"""


@pytest.mark.skipif(rs.backend().name == "cpu", reason="a GPU kernel fault")
def test_a_kernel_fault_says_the_context_is_lost_and_to_restart():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _FAULT], capture_output=True, text=True,
                          timeout=120, env={**os.environ})
    out = done.stdout
    assert "FAULT:" in out and "restart the process" in out, out + done.stderr
    assert "AFTER:" in out and out.count("restart the process") >= 2, out
