"""Model-based tests: random sequences of stream work checked against a reference model.

A hypothesis state machine (:class:`StreamsMachine`) queues random work on several streams (two
non-blocking, one blocking, the legacy default and the per-thread default stream, and more made
on the way): stamp kernels, copies, host callbacks (some slow, some raising), event records,
waits, queries and synchronizes, waits on other streams, graph captures and replays, closes (also
from another thread), and drops of streams, events and graphs. Every operation is told to the
reference model (tests/model_reference.py), which keeps what must finish before what. Latches
(rocmstreams.kernels.Latch) hold streams so that work that wrongly does not wait runs first, for
certain; they are released before any host wait that needs them and at the end of every sequence.

Checked on the way: query() and Event.query() answers (False while the work waits for a held
latch, True once synchronized, and when True, everything before it has finished), synchronize()
(everything before it finished; a raising callback's CallbackError comes at the next
synchronize of its stream, once), and closed streams and events refusing work. Checked at the end
(and at random check points): every operation ran exactly as often as queued, and the order the
work ran in is one the model allows (model_reference.Model.order_violations says how each kind of
operation shows when it ran).

Environment:

- ``ROCMSTREAMS_MODEL_REPRODUCE=version:blob`` runs the one sequence a failure printed;
- ``ROCMSTREAMS_MODEL_RACING_UNPACED`` (default 200): callbacks the thread racing a close()
  queues before it paces itself (see RACING_UNPACED);
- ``ROCMSTREAMS_MODEL_EXAMPLES`` (default 25) and ``ROCMSTREAMS_MODEL_STEPS`` (default 30):
  hypothesis examples and steps per example. The defaults keep the cpu backend in CI fast; the
  GPU runs set more.
- ``ROCMSTREAMS_MODEL_SHRINK`` (default 1): ``0`` reports a failing sequence unshrunk.
- ``ROCMSTREAMS_MODEL_FULL`` (default 1): the rules for three former defects (arrays dropped
  while queued work holds them, reference cycles, closes racing other threads; the "known
  defects" rules of StreamsMachine, written when they deadlocked or crashed and kept since they
  were fixed); ``0`` leaves them out, a comma list (``arrays``, ``cycles``, ``close-race``)
  keeps some. A rule that deadlocks the backend fails its test with Hang, later tests of this
  module fail at once, and the process exits (status 1) without running the finalizers that
  would wait on the deadlocked lock.
"""
from __future__ import annotations

import atexit
import functools
import gc
import itertools
import os
import sys
import threading
import time
import weakref
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure, FlakyStrategyDefinition
from hypothesis.stateful import (RuleBasedStateMachine, precondition, rule,
                                 run_state_machine_as_test)

import rocmstreams as rs
from model_reference import (BLOCKING, CALLBACK, COPY, EMPTY, LEGACY, MARK, NON_BLOCKING,
                             PER_THREAD, STAMP, Invocation, Model, ModelViolation, Observation)

#: The arrays rule adds to uninitialised memory (rs.empty), now and then NaN; since the rule waits for
#: its launches, the simulator's warning about it comes while the test runs.
pytestmark = pytest.mark.filterwarnings(
    "ignore:invalid value encountered in scalar add:RuntimeWarning")

#: The rules for what were defects (arrays dropped while queued work holds them, objects in
#: reference cycles, closes racing other threads' work), fixed since: drawn by default;
#: ROCMSTREAMS_MODEL_FULL=0 leaves them out, a comma list keeps some of them.
DEFECTS = ("arrays", "cycles", "close-race")
_FULL = os.environ.get("ROCMSTREAMS_MODEL_FULL", "1").strip()
_FULL = "" if _FULL == "0" else _FULL
FULL = set(DEFECTS) if _FULL == "1" else {d.strip() for d in _FULL.split(",") if d.strip()}
assert FULL <= set(DEFECTS), f"ROCMSTREAMS_MODEL_FULL: 1, or some of {', '.join(DEFECTS)}"
EXAMPLES = int(os.environ.get("ROCMSTREAMS_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("ROCMSTREAMS_MODEL_STEPS", "30"))

LOG_SIZE, SLOT_COUNT = 4096, 1024  # stamps and copies one sequence can observe
MAX_STREAMS, MAX_EVENTS, MAX_GRAPHS, LATCHES = 8, 6, 3, 3  # per sequence
SLOW_S = 0.003                     # a slow callback's sleep
RUN_AHEAD_S = 0.005                # the pause before a latch is released (see _run_ahead)
WAIT_S, GRACE_S = 15.0, 10.0       # a host wait past WAIT_S is stuck; past +GRACE_S, deadlocked
#: (so a rule that queues bulk work waits for it: a backlog must not outlast WAIT_S)
# The thread that races a close() queues this many callbacks at full speed, then one per
# RACING_PACE_S: a GPU runtime's stream queue is bounded, and a stream held by a latch fills it,
# after which the next launch blocks until the latch ends (and the close behind it with it);
# ROCMSTREAMS_MODEL_RACING_UNPACED sets the count (e.g. 10**9: unpaced, as before)
RACING_UNPACED = int(os.environ.get("ROCMSTREAMS_MODEL_RACING_UNPACED", "200"))
RACING_PACE_S = 0.0002
PICK = st.integers(0, 63)          # picks an object from a list that changes size: index mod len
OPEN, CLOSED, DROPPED = "open", "closed", "dropped"
OWNED = (NON_BLOCKING, BLOCKING)


def _work(weight: int, name: str, *args: st.SearchStrategy) -> list[st.SearchStrategy]:
    return [st.tuples(st.just(name), *args) for _ in range(weight)]  # distinct: each counts


#: The work operations of StreamsMachine.queue_work: (method name, its arguments), weighted.
#: Callbacks and copies weigh most: on cpu they are what runs while a latch holds the
#: simulator's one kernel engine, so they are what shows work that did not wait.
WORK = st.one_of(
    *_work(2, "stamp", PICK),
    *_work(2, "copy", PICK),
    *_work(3, "callback", PICK, st.booleans(), st.booleans()),
    *_work(2, "hold", PICK),
    *_work(1, "release", PICK),
    *_work(2, "record", PICK, PICK, st.sampled_from(["stream.record", "event.record"]),
           st.booleans()),
    *_work(1, "unrecorded_event"),
    *_work(2, "wait_event", PICK, PICK),
    *_work(2, "wait_stream", PICK, PICK),
    *_work(1, "query_stream", PICK),
    *_work(1, "query_event", PICK),
)

#: ROCMSTREAMS_MODEL_SHRINK=0: report the first failing sequence as found, unshrunk (on a GPU a
#: shrink replays sequences whose latches time out, and can outlast the run's time limit).
SHRINK = os.environ.get("ROCMSTREAMS_MODEL_SHRINK", "1") != "0"
MODEL_SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          database=None, print_blob=True,
                          phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse,
                                                              Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much])

#: Set when a host wait deadlocked: the backend's locks may be held for good, so later tests in
#: this module fail at once instead of hanging.
_POISONED: list[str] = []
#: What a deadlocked sequence held: kept alive, since dropping it would run finalizers that
#: take the stuck locks.
_STUCK: list[Any] = []


class Hang(BaseException):
    """A host wait that never returned. A BaseException so hypothesis stops at once rather
    than shrinking (rerunning) against a backend whose locks may be held for good."""


class ModelCallbackFailure(Exception):
    """Raised on purpose by the model's raising callbacks."""


def _runtime():
    """The backend runtime object whose methods the streams call."""
    import rocmstreams.backends as b
    return b.active() if hasattr(b, "active") else rs.backend()


def _refuse_if_poisoned() -> None:
    if _POISONED:
        pytest.fail(f"an earlier model test deadlocked the backend ({_POISONED[0]}); "
                    "not running more work on it")


def _noop() -> None:
    pass


def _exit_without_finalizers_at_exit() -> None:
    """After a deadlock, end the process at exit before weakref.finalize's exit hook runs the
    remaining finalizers: they take the deadlocked backend lock, and exit would hang. (atexit
    runs the newest registration first; the finalize hook was registered long before.)"""
    if not getattr(_exit_without_finalizers_at_exit, "armed", False):
        _exit_without_finalizers_at_exit.armed = True  # type: ignore[attr-defined]

        def leave() -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        atexit.register(leave)


# observation -------------------------------------------------------------------------------------
class Recorder:
    """The device counter and page-locked log the stamps write, the copy slots, and the host
    callbacks' runs (host clock and snapshots at start and end)."""

    def __init__(self) -> None:
        with rs.RocmStream(non_blocking=True) as setup:
            self.counter = rs.to_device(np.zeros(1, np.int32), stream=setup)
        self.log = rs.pinned_empty(LOG_SIZE, np.int32)
        self.log[:] = EMPTY
        self.log_dev = rs.device_view(self.log)
        self.slots = rs.pinned_empty(SLOT_COUNT, np.int32)
        self.slots[:] = EMPTY
        self.invocations: dict[int, list[Invocation]] = {}
        self._lock = threading.Lock()
        self._clock = itertools.count()

    def callback(self, key: int, slow: bool, raising: bool) -> Callable[[], None]:
        def model_callback() -> None:
            with self._lock:
                run = Invocation(next(self._clock), None, None)  # type: ignore[arg-type]
                self.invocations.setdefault(key, []).append(run)
            run.start_log, run.start_slots = self.log.copy(), self.slots.copy()
            try:
                if slow:
                    time.sleep(SLOW_S)
            finally:
                run.end_log, run.end_slots = self.log.copy(), self.slots.copy()
                with self._lock:
                    run.end = next(self._clock)
            if raising:
                raise ModelCallbackFailure(f"model callback {key} raised on purpose")
        model_callback.__qualname__ = f"model_callback_{key}"
        return model_callback

    def observe(self, counter: bool = False) -> Observation:
        with self._lock:
            runs = {k: list(v) for k, v in self.invocations.items()}
        value = None
        if counter:
            with rs.RocmStream(non_blocking=True) as t:
                value = int(self.counter.copy_to_host(stream=t)[0])
        return Observation(self.log.copy(), self.slots.copy(), runs, value)


@dataclass
class StreamRef:
    label: str
    kind: str
    obj: Any
    state: str = OPEN
    pending: int = 0  # raising callbacks whose CallbackError synchronize() has still to raise


@dataclass
class EventRef:
    label: str
    obj: Any
    node: int | None = None  # the model node of the latest record
    state: str = OPEN


@dataclass
class GraphRef:
    label: str
    obj: Any
    templates: list[tuple[str, int, bool]]  # (STAMP, tag, False) or (CALLBACK, key, raising)
    last: int | None = None  # the model node ending the latest replay
    state: str = OPEN


@dataclass
class Hold:
    gate: Any
    node: int
    released: bool = False
    at: float = dataclasses.field(default_factory=time.monotonic)  # when it was queued


def _step(fn: Callable[..., None]) -> Callable[..., None]:
    """A rule body: any exception marks the sequence broken (teardown then only cleans up)."""
    @functools.wraps(fn)
    def run(self: "StreamsMachine", **kwargs: Any) -> None:
        self.steps.append(f"{fn.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
        start = time.monotonic()
        try:
            fn(self, **kwargs)
        except BaseException:
            self._broken = True
            raise
        finally:
            self.step_times.append((start, time.monotonic() - start))
    return run


class StreamsMachine(RuleBasedStateMachine):
    """Random stream work, told to the reference model and checked against it."""

    def __init__(self) -> None:
        super().__init__()
        from rocmstreams import kernels
        self.k = kernels
        self.cpu = rs.backend().name == "cpu"
        self.model = Model()
        self.rec = Recorder()
        self.streams: list[StreamRef] = []
        self.events: list[EventRef] = []
        self.graphs: list[GraphRef] = []
        # made before anything is held (allocating is no business of a held GPU)
        # on cpu a held latch slows every step (all kernels share the simulator's engine), so a
        # sequence's holds last longer there: the latch gets more polls before it times out
        # (on a GPU 5,000,000 polls last about 0.9 s, as long as the fixed wait sequence gives
        # work that wrongly does not wait to run ahead; 25,000,000 about 4.5 s, below WAIT_S)
        polls = 20_000_000 if rs.backend().name == "cpu" else 25_000_000
        self.spare_latches = [kernels.Latch(max_polls=polls) for _ in range(LATCHES)]
        self.holds: list[Hold] = []
        self.tails: list[tuple[Any, str]] = []  # events recorded just before closes and drops
        self.racing: list[tuple[list[int], list[int], str]] = []  # FULL: (queued, ran, what)
        self._names = itertools.count()
        self.steps: list[str] = []  # the rules run so far (a Hang stops hypothesis's report)
        self.step_times: list[tuple[float, float]] = []  # (start, seconds) of each rule run
        self._broken = self._hung = self._disposed = False
        self._checked_at = 0  # model size at the last check point
        for kind in (NON_BLOCKING, NON_BLOCKING, BLOCKING, LEGACY, PER_THREAD):
            self._add_stream(kind)

    # helpers -------------------------------------------------------------------------------------
    def _add_stream(self, kind: str, priority: int = 0) -> StreamRef:
        if kind == LEGACY:
            obj, label = rs.default_stream(), "legacy"
        elif kind == PER_THREAD:
            obj, label = rs.per_thread_default_stream(), "per-thread"
        else:
            obj = rs.RocmStream(non_blocking=kind == NON_BLOCKING, priority=priority)
            label = f"{'nb' if kind == NON_BLOCKING else 'b'}{next(self._names)}"
        self.model.add_stream(label, kind)
        ref = StreamRef(label, kind, obj)
        self.streams.append(ref)
        return ref

    def _open(self, pick: int, owned: bool = False) -> StreamRef | None:
        found = [s for s in self.streams if s.state == OPEN and (not owned or s.kind in OWNED)]
        return found[pick % len(found)] if found else None

    def _closed(self, pick: int) -> StreamRef | None:
        found = [s for s in self.streams if s.state == CLOSED]
        return found[pick % len(found)] if found else None

    def _event(self, pick: int, state: str = OPEN) -> EventRef | None:
        found = [e for e in self.events if e.state == state]
        return found[pick % len(found)] if found else None

    def _graph(self, pick: int) -> GraphRef | None:
        found = [g for g in self.graphs if g.state == OPEN]
        return found[pick % len(found)] if found else None

    #: The first violations raised (the mutation search reads them).
    violations_seen: list[str] = []

    def _violation(self, message: str) -> ModelViolation:
        if len(self.violations_seen) < 50:
            self.violations_seen.append(message)
        return ModelViolation(f"{message}\noperations queued (with their direct predecessors):\n"
                              f"{self.model.describe()}")

    def _room(self, stamps: int = 1, slots: int = 0) -> bool:
        return (self.model.stamp_instances() + stamps < LOG_SIZE and
                self.model.slots_used + slots < SLOT_COUNT)

    def _run_ahead(self) -> None:
        """Just before a latch is released: a moment for queued work that wrongly does not wait
        for it to run first, where the checks see it."""
        time.sleep(RUN_AHEAD_S)

    def _release_all(self) -> int:
        released = 0
        if any(not hold.released for hold in self.holds):
            self._run_ahead()
        for hold in self.holds:
            if not hold.released:
                hold.gate.release()
                hold.released = True
                self.model.held &= ~(1 << hold.node)
                released += 1
        return released

    def _release_for(self, node: int | None, also: list[int] = []) -> None:  # noqa: B006
        """Before a host wait on ``node``: on cpu release every latch (kernels of all streams
        share the simulator's one engine there, so a held latch stalls every stamp); on a GPU
        release only the latches ``node`` waits for (and those of ``also``: work the wait may
        wait for besides, see Model.query_also), so the wait also shows it waits for no
        other."""
        if self.cpu:
            self._release_all()
            return
        mask = self.model.closure(node)
        for other in also:
            mask |= self.model.closure(other)
        if any(not hold.released and mask >> hold.node & 1 for hold in self.holds):
            self._run_ahead()
        for hold in self.holds:
            if not hold.released and mask >> hold.node & 1:
                hold.gate.release()
                hold.released = True
                self.model.held &= ~(1 << hold.node)

    def _bounded(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run a host wait on a helper thread: past WAIT_S it is stuck (release every latch and
        fail: it waited for work the model says it does not wait for); past GRACE_S more, it is
        deadlocked (Hang)."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box["error"] = exc

        t = threading.Thread(target=run, name=f"model: {what}", daemon=True)
        t.start()
        t.join(WAIT_S)
        if t.is_alive():
            released = self._release_all()
            t.join(GRACE_S)
            if t.is_alive():
                self._hung = True
                _POISONED.append(what)
                _exit_without_finalizers_at_exit()
                steps = "\n  ".join(self.steps[-12:])
                raise Hang(f"{what} did not return within {WAIT_S + GRACE_S:.0f} s, even with "
                           f"every latch released: a deadlock. The last steps:\n  {steps}")
            raise self._violation(f"{what} returned only after {released} latch(es) it does "
                                  f"not wait for were released ({WAIT_S:.0f} s stuck)")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _synchronize(self, s: StreamRef, what: str) -> None:
        """``s.obj.synchronize()``, bounded. The per-thread default stream is the calling
        thread's own, so it is synchronized here, after a bounded wait on an event recorded on
        it (which leaves its synchronize nothing to wait for)."""
        if s.kind == PER_THREAD:
            marker = s.obj.record()
            try:
                self._bounded(what, marker.synchronize)
            finally:
                marker.close()
            s.obj.synchronize()
        else:
            self._bounded(what, s.obj.synchronize)

    def _synchronize_checked(self, s: StreamRef, what: str) -> None:
        """One synchronize of ``s``: one CallbackError exactly when raising callbacks are
        pending (the first, counting the others), everything before it finished, and query()
        True afterwards."""
        if s.kind == PER_THREAD:  # _synchronize records a marker on it: the model learns it
            self.model.add(s.label, MARK, "record (marker before its synchronize)")
        last = self.model.last(s.label)
        # the GPU runtimes' legacy default stream may wait for blocking streams' later work too
        # (seen on the H200 through HIP-on-CUDA: its synchronize waited out a latch held on the
        # per-thread default stream after its own last work), as its query may answer for it
        self._release_for(last, [] if self.cpu else self.model.query_also(s.label, closed=True))
        try:
            self._synchronize(s, what)
        except rs.CallbackError as exc:
            if not s.pending:
                raise self._violation(f"{what} raised {exc!r}, but no raising callback is "
                                      "pending on the stream") from exc
            if not isinstance(exc.__cause__, ModelCallbackFailure):
                raise self._violation(f"{what} raised a CallbackError whose cause is "
                                      f"{exc.__cause__!r}, not the callback's exception") from exc
            # one CallbackError delivers every pending one: the first, counting the others
            if s.pending > 1 and f"and {s.pending - 1} more" not in str(exc):
                raise self._violation(f"{what} raised {exc!r} for {s.pending} raising "
                                      "callbacks without counting the others") from exc
            s.pending = 0
        else:
            if s.pending:
                raise self._violation(f"{what} returned, but {s.pending} raising callback(s) "
                                      "are pending: a CallbackError was due")
        self._assert_finished(self.model.closure(last), f"after {what}")
        if s.obj.query() is not True:
            raise self._violation(f"{s.label}.query() is not True right after {what}")

    def _assert_finished(self, mask: int, why: str) -> None:
        missing = self.model.unfinished(mask, self.rec.observe())
        if missing:
            raise self._violation(f"{why}, work it waits for has not finished:\n  " +
                                  "\n  ".join(missing))
        self.model.done |= mask

    def _check_query(self, answer: Any, node: int | None, what: str,
                     also: list[int] = []) -> None:  # noqa: B006 - never changed
        """``also``: work the query may wait for besides ``node``'s (see Model.query_also):
        a False answer is wrong only once that too was seen to finish."""
        if answer is not True and answer is not False:
            raise self._violation(f"{what} returned {answer!r}, not a bool")
        if answer and self.model.must_be_busy(node):
            self._refuse_timed_out_latches(self.model.closure(node))
            raise self._violation(f"{what} is True, but the work waits for a latch still held")
        if not answer and all(self.model.known_done(n) for n in [node, *also]):
            raise self._violation(f"{what} is False, but all its work was seen to finish")
        if answer:
            self._assert_finished(self.model.closure(node), f"{what} is True, yet")

    def _tail(self, s: StreamRef, why: str) -> None:
        """Record an event on ``s`` before it goes, so the end of the sequence can wait for its
        queued work (which a close lets finish)."""
        self.model.add(s.label, MARK, f"record (before {why})")
        self.tails.append((s.obj.record(), f"{s.label} before {why}"))

    def _collect(self) -> None:
        """gc.collect(); on a GPU first release the latches: a free the collection runs would
        wait for the device (cudaFree synchronizes), and so for a held latch."""
        if not self.cpu:
            self._release_all()
        gc.collect()

    # streams -------------------------------------------------------------------------------------
    @precondition(lambda self: len(self.streams) < MAX_STREAMS)
    @rule(blocking=st.booleans(), highest_priority=st.booleans())
    @_step
    def new_stream(self, blocking: bool, highest_priority: bool) -> None:
        priority = rs.priority_range()[1] if highest_priority else 0
        self._add_stream(BLOCKING if blocking else NON_BLOCKING, priority)

    # work: the operations queue_work draws (plain methods, so a test can also call them) -------
    def stamp(self, stream: int) -> None:
        if not self._room(stamps=1):
            return
        s = self._open(stream)
        tag = self.model.new_tag(f"stamp on {s.label}")
        self.model.add(s.label, STAMP, f"stamp {tag}", tag=tag)
        self.k.stamp[1, 1, s.obj](self.rec.counter, self.rec.log_dev, np.int32(tag))

    def copy(self, stream: int) -> None:
        if not self._room(stamps=0, slots=1):
            return
        s = self._open(stream)
        slot = self.model.new_slot()
        self.model.add(s.label, COPY, f"copy of the counter into slot {slot}", slot=slot)
        rs.copy_async(self.rec.slots[slot:slot + 1], self.rec.counter, stream=s.obj)

    def callback(self, stream: int, slow: bool, raising: bool) -> None:
        s = self._open(stream)
        kind = "raising " if raising else "slow " if slow else ""
        key = self.model.new_key(f"{kind}callback on {s.label}")
        self.model.add(s.label, CALLBACK, f"{kind}callback {key}", key=key)
        s.obj.launch_host_func(self.rec.callback(key, slow, raising))
        s.pending += raising

    def hold(self, stream: int) -> None:
        if not self.spare_latches:
            return
        s = self._open(stream)
        gate = self.spare_latches.pop()
        node = self.model.add(s.label, MARK, "latch (held)")
        gate.hold(s.obj)
        self.holds.append(Hold(gate, node))
        self.model.held |= 1 << node

    def release(self, latch: int) -> None:
        held = [h for h in self.holds if not h.released]
        if not held:
            return
        hold = held[latch % len(held)]
        self._run_ahead()
        hold.gate.release()
        hold.released = True
        self.model.held &= ~(1 << hold.node)

    # events and waits ----------------------------------------------------------------------------
    def record(self, stream: int, event: int, how: str, timing: bool) -> None:
        """Record a new event (``event`` picks one past the open ones), or re-record (move) an
        open one. ``event.record`` on the legacy stream is ``Event.record()``, no stream."""
        s = self._open(stream)
        live = [e for e in self.events if e.state == OPEN]
        pick = event % (len(live) + 1)
        if pick == len(live) and len(self.events) >= MAX_EVENTS:
            if not live:
                return
            pick = event % len(live)
        target = None if s.kind == LEGACY and how == "event.record" else s.obj
        if pick == len(live):
            e = EventRef(f"E{next(self._names)}", None)
            e.node = self.model.add(s.label, MARK, f"record {e.label} (new)")
            e.obj = s.obj.record(timing=timing) if how == "stream.record" else \
                rs.Event(timing=timing).record(target)
            self.events.append(e)
        else:
            e = live[pick]
            e.node = self.model.add(s.label, MARK, f"record {e.label} (again)")
            if how == "stream.record":
                s.obj.record(e.obj)
            else:
                e.obj.record(target)
        if not e.obj.is_recorded:
            raise self._violation(f"{e.label}.is_recorded is False after a record")

    def unrecorded_event(self) -> None:
        """An event never recorded: waits on it add nothing, and it queries True."""
        if len(self.events) >= MAX_EVENTS:
            return
        self.events.append(EventRef(f"E{next(self._names)}", rs.Event()))

    def wait_event(self, stream: int, event: int) -> None:
        s, e = self._open(stream), self._event(event)
        if e is None:
            return
        if e.node is not None:
            self.model.add(s.label, MARK, f"wait {e.label}",
                           extra=[(e.node, f"wait on {e.label} (its latest record)")])
        else:
            # A wait on a never recorded event: the cpu backend queues nothing; a GPU runtime
            # may queue a wait that takes part in the legacy default stream's implicit
            # synchronization. The model allows both: program order only, no legacy rules.
            self.model.add(s.label, MARK, f"wait {e.label} (never recorded)",
                           legacy_rules=False)
        s.obj.wait(e.obj)

    def wait_stream(self, stream: int, other: int) -> None:
        s, o = self._open(stream), self._open(other)
        marker = self.model.add(o.label, MARK, f"record (marker for {s.label}.wait({o.label}))")
        self.model.add(s.label, MARK, f"wait {o.label}",
                       extra=[(marker, f"{s.label}.wait({o.label})")])
        s.obj.wait(o.obj)

    def query_stream(self, stream: int) -> None:
        s = self._open(stream)
        # the GPU runtimes' legacy default stream may answer for blocking streams' work too;
        # the cpu backend answers for its own work, and is held to that
        also = [] if rs.backend().name == "cpu" else self.model.query_also(s.label)
        self._check_query(s.obj.query(), self.model.last(s.label), f"{s.label}.query()",
                          also=also)

    def query_event(self, event: int) -> None:
        e = self._event(event)
        if e is None:
            return
        self._check_query(e.obj.query(), e.node, f"{e.label}.query()")

    @rule(ops=st.lists(WORK, min_size=1, max_size=8))
    @_step
    def queue_work(self, ops: list[tuple]) -> None:
        """A batch of work operations, in order: work in batches, and in two rules, so that
        hypothesis (which draws among rules evenly) queues work far more often than it closes,
        drops or captures."""
        for name, *args in ops:
            getattr(self, name)(*args)

    @rule(ops=st.lists(WORK, min_size=1, max_size=8))
    @_step
    def queue_more_work(self, ops: list[tuple]) -> None:
        self.queue_work.__wrapped__(self, ops=ops)

    @rule(stream=PICK)
    @_step
    def synchronize_stream(self, stream: int) -> None:
        s = self._open(stream)
        self._synchronize_checked(s, f"{s.label}.synchronize()")

    @precondition(lambda self: any(e.state == OPEN for e in self.events))
    @rule(event=PICK)
    @_step
    def synchronize_event(self, event: int) -> None:
        e = self._event(event)
        self._release_for(e.node)
        self._bounded(f"{e.label}.synchronize()", e.obj.synchronize)
        self._assert_finished(self.model.closure(e.node), f"after {e.label}.synchronize()")
        if e.obj.query() is not True:
            raise self._violation(f"{e.label}.query() is not True right after its synchronize")

    @precondition(lambda self: any(e.state == OPEN for e in self.events))
    @rule(event=PICK)
    @_step
    def close_event(self, event: int) -> None:
        e = self._event(event)
        e.obj.close()
        e.obj.close()  # idempotent
        e.state = CLOSED
        if not e.obj.is_closed:
            raise self._violation(f"{e.label}.is_closed is False after close()")

    @precondition(lambda self: any(e.state == CLOSED for e in self.events))
    @rule(event=PICK, stream=PICK,
          op=st.sampled_from(["query", "synchronize", "event.record", "stream.record",
                              "stream.wait"]))
    @_step
    def closed_event_refuses_work(self, event: int, stream: int, op: str) -> None:
        e, s = self._event(event, CLOSED), self._open(stream)
        call = {"query": e.obj.query, "synchronize": e.obj.synchronize,
                "event.record": lambda: e.obj.record(s.obj),
                "stream.record": lambda: s.obj.record(e.obj),
                "stream.wait": lambda: s.obj.wait(e.obj)}[op]
        self._expect_closed(call, f"{op} with closed event {e.label}")

    def _expect_closed(self, call: Callable[[], Any], what: str) -> None:
        try:
            call()
        except rs.StreamClosedError:
            return
        except Exception as exc:
            raise self._violation(f"{what} raised {exc!r}, not StreamClosedError") from exc
        raise self._violation(f"{what} did not raise StreamClosedError")

    # graphs --------------------------------------------------------------------------------------
    @precondition(lambda self: len(self.graphs) < MAX_GRAPHS and
                  any(s.state == OPEN and s.kind in OWNED for s in self.streams))
    @rule(stream=PICK, items=st.lists(st.tuples(st.sampled_from([STAMP, CALLBACK]),
                                                st.booleans(), st.booleans()), max_size=3))
    @_step
    def capture(self, stream: int, items: list[tuple[str, bool, bool]]) -> None:
        """Capture stamps and callbacks on an owned stream (nothing runs now)."""
        s = self._open(stream, owned=True)
        label = f"G{next(self._names)}"
        templates: list[tuple[str, int, bool]] = []
        with s.obj.capture() as graph:
            for kind, slow, raising in items:
                if kind == STAMP:
                    tag = self.model.new_tag(f"stamp captured into {label}")
                    self.k.stamp[1, 1, s.obj](self.rec.counter, self.rec.log_dev, np.int32(tag))
                    templates.append((STAMP, tag, False))
                else:
                    what = "raising " if raising else "slow " if slow else ""
                    key = self.model.new_key(f"{what}callback captured into {label}")
                    s.obj.launch_host_func(self.rec.callback(key, slow, raising))
                    templates.append((CALLBACK, key, raising))
            if not s.obj.is_capturing:
                raise self._violation(f"{s.label}.is_capturing is False inside its capture")
        self.graphs.append(GraphRef(label, graph, templates))

    @precondition(lambda self: any(g.state == OPEN for g in self.graphs))
    @rule(graph=PICK, stream=PICK)
    @_step
    def replay(self, graph: int, stream: int) -> None:
        g, s = self._graph(graph), self._open(stream)
        if not self._room(stamps=len(g.templates)):
            return
        after = [(g.last, f"replay of {g.label} after its previous replay")]
        node = None
        for kind, x, raising in g.templates:
            if kind == STAMP:
                node = self.model.add(s.label, STAMP, f"stamp {x} (replay of {g.label})",
                                      tag=x, extra=after)
            else:
                node = self.model.add(s.label, CALLBACK, f"callback {x} (replay of {g.label})",
                                      key=x, extra=after)
            after = []
        if node is None:
            node = self.model.add(s.label, MARK, f"replay of empty {g.label}", extra=after)
        g.last = node
        g.obj.launch(s.obj)
        s.pending += sum(raising for kind, _, raising in g.templates if kind == CALLBACK)

    # closing and dropping ------------------------------------------------------------------------
    @precondition(lambda self: any(s.state == OPEN and s.kind in OWNED for s in self.streams))
    @rule(stream=PICK, how=st.sampled_from(["here", "another thread", "with block"]))
    @_step
    def close_stream(self, stream: int, how: str) -> None:
        s = self._open(stream, owned=True)
        pending, last, raised = s.pending, None, None
        try:
            if how == "with block":  # synchronizes, then closes
                last = self.model.last(s.label)
                self._release_for(last)

                def with_block() -> None:
                    with s.obj:
                        pass
                try:
                    self._bounded(f"`with {s.label}:`", with_block)
                except rs.CallbackError as exc:
                    raised = exc
            else:
                self._tail(s, "its close")
                if how == "here":
                    s.obj.close()
                else:  # a close must not wait for queued work: no latch is released for it
                    self._bounded(f"{s.label}.close() from another thread", s.obj.close)
        finally:
            if s.obj.is_closed:
                s.state, s.pending = CLOSED, 0
                self.model.close_stream(s.label)
        if s.state != CLOSED:
            raise self._violation(f"{s.label}.is_closed is False after close() ({how})")
        s.obj.close()  # idempotent
        if how == "with block":
            if raised is not None and not pending:
                raise self._violation(f"`with {s.label}:` raised {raised!r}, but no raising "
                                      "callback was pending") from raised
            if raised is None and pending:
                raise self._violation(f"`with {s.label}:` synchronized without raising the "
                                      f"CallbackError of {pending} raising callback(s)")
            self._assert_finished(self.model.closure(last), f"after `with {s.label}:`")

    @precondition(lambda self: any(s.state == CLOSED for s in self.streams))
    @rule(stream=PICK, other=PICK, op=st.sampled_from([
        "query", "synchronize", "record", "wait(event)", "other.wait(closed)", "add_callback",
        "stamp", "copy", "capture", "graph.launch", "Event.record(closed)", "handle"]))
    @_step
    def closed_stream_refuses_work(self, stream: int, other: int, op: str) -> None:
        s, o = self._closed(stream), self._open(other)
        g = self._graph(0)
        if op == "graph.launch" and g is None:
            op = "query"
        call = {
            "query": s.obj.query, "synchronize": s.obj.synchronize, "record": s.obj.record,
            "wait(event)": lambda: s.obj.wait(rs.Event()),
            "other.wait(closed)": lambda: o.obj.wait(s.obj),
            "add_callback": lambda: s.obj.launch_host_func(_noop),
            "stamp": lambda: self.k.stamp[1, 1, s.obj](self.rec.counter, self.rec.log_dev,
                                                       np.int32(LOG_SIZE + 1)),
            "copy": lambda: rs.copy_async(self.rec.slots[-1:], self.rec.counter, stream=s.obj),
            "capture": s.obj.capture,
            "graph.launch": lambda: g.obj.launch(s.obj),
            "Event.record(closed)": lambda: rs.Event().record(s.obj),
            "handle": lambda: s.obj.handle,
        }[op]
        self._expect_closed(call, f"{op} on closed stream {s.label}")

    @precondition(lambda self: any(s.state == OPEN and s.kind in OWNED for s in self.streams))
    @rule(stream=PICK)
    @_step
    def drop_stream(self, stream: int) -> None:
        """Drop the last reference to a stream with work queued; it must be collected."""
        s = self._open(stream, owned=True)
        self._tail(s, "it was dropped")
        watch = weakref.ref(s.obj)
        s.obj, s.state, s.pending = None, DROPPED, 0
        self.model.close_stream(s.label)
        self._collect()
        if watch() is not None:
            raise self._violation(f"dropped stream {s.label} was not collected")

    @precondition(lambda self: any(e.state == OPEN for e in self.events))
    @rule(event=PICK)
    @_step
    def drop_event(self, event: int) -> None:
        """Drop an event (waits already queued on it still hold); it must be collected."""
        e = self._event(event)
        watch = weakref.ref(e.obj)
        e.obj, e.state = None, DROPPED
        self._collect()
        if watch() is not None:
            raise self._violation(f"dropped event {e.label} was not collected")

    @precondition(lambda self: any(g.state == OPEN for g in self.graphs))
    @rule(graph=PICK, close=st.booleans())
    @_step
    def drop_graph(self, graph: int, close: bool) -> None:
        """Close or drop a graph (replays already queued still run)."""
        g = self._graph(graph)
        if close:
            g.obj.close()
            g.state = CLOSED
            self._expect_closed(lambda: g.obj.launch(self._open(0).obj),
                                f"launch of closed graph {g.label}")
            return
        watch = weakref.ref(g.obj)
        g.obj, g.state = None, DROPPED
        self._collect()
        if watch() is not None:
            raise self._violation(f"dropped graph {g.label} was not collected")

    @precondition(lambda self: len(self.model.nodes) >= self._checked_at + 12)
    @rule()
    @_step
    def check_point(self) -> None:
        """Wait for everything, and check the whole run so far."""
        self._settle("at a check point")
        self._verify("at a check point")
        self._checked_at = len(self.model.nodes)

    # known defects (ROCMSTREAMS_MODEL_FULL=1) ----------------------------------------------------
    @precondition(lambda self: "arrays" in FULL and any(s.state == OPEN and s.kind in OWNED
                                                        for s in self.streams))
    @rule(stream=PICK)
    @_step
    def drop_arrays_while_queued_work_holds_them(self, stream: int) -> None:
        """Known defect (cpu): an array whose last reference is queued work is freed on the
        stream's worker thread, whose finalizer takes the backend lock while holding the
        worker's; a submit to that stream at the time takes them the other way round.

        The step then waits for its launches. On cpu each one is a simulator block of 32 Python
        threads (several milliseconds), so steps that left them queued piled up: 30 in one
        sequence were 6,000 launches for the next host wait to drain, past WAIT_S + GRACE_S,
        and that wait failed as a deadlock (Hang) while the work was still running."""
        s = self._open(stream, owned=True)
        if not self.cpu:
            self._release_all()  # a free waits for the whole device on a GPU
        what = f"200 launches on {s.label} on arrays dropped at once"
        self.model.add(s.label, MARK, "200 launches on arrays dropped at once")

        def churn() -> None:
            old = sys.getswitchinterval()
            sys.setswitchinterval(1e-6)  # many thread switches: the lock window is small
            try:
                for _ in range(200):
                    d = rs.empty(32, np.float32)
                    self.k.add_scalar[1, 32, s.obj](d, np.float32(1))
                    del d
                    s.obj.launch_host_func(_noop)
            finally:
                sys.setswitchinterval(old)
        self._bounded(what, churn)
        node = self.model.add(s.label, MARK, "record (after its 200 launches)")
        self._release_for(node)  # on cpu a held latch stalls every kernel
        marker = s.obj.record()
        try:
            self._bounded(f"the wait for {what}", marker.synchronize)
        finally:
            marker.close()
        self._assert_finished(self.model.closure(node), f"after the wait for {what}")

    @precondition(lambda self: "cycles" in FULL)
    @rule()
    @_step
    def streams_in_reference_cycles_then_new_streams(self) -> None:
        """Known defect (cpu): a RocmStream in a reference cycle is finalized by whichever
        thread's allocation starts a collection, possibly a new stream's worker thread while
        RocmStream() holds the backend lock."""
        def churn() -> None:
            for _ in range(100):
                s = rs.RocmStream(non_blocking=True)
                s.launch_host_func(_noop)
                cycle: list[Any] = [s]
                cycle.append(cycle)
                del s, cycle
                rs.RocmStream(non_blocking=True).close()
            gc.collect()
        if not self.cpu:
            self._release_all()
        self._bounded("RocmStream() after streams were left in reference cycles", churn)

    @precondition(lambda self: "close-race" in FULL and any(s.state == OPEN and s.kind in OWNED
                                                            for s in self.streams))
    @rule(stream=PICK)
    @_step
    def close_while_another_thread_queues(self, stream: int) -> None:
        """Known defect: add_callback racing a close() should raise StreamClosedError; the
        current code can raise a generic RocmStreamsError (the handle is gone from the
        backend after the stream's own closed check)."""
        s = self._open(stream, owned=True)
        queued, ran, failure = [0], [0], []
        started = threading.Event()

        def counted() -> None:
            ran[0] += 1  # only this stream's worker runs these: no race on the count

        def queue() -> None:
            started.set()
            while True:
                try:
                    s.obj.launch_host_func(counted)
                except BaseException as exc:  # noqa: BLE001 - checked below
                    failure.append(exc)
                    return
                queued[0] += 1
                if queued[0] > RACING_UNPACED:  # see RACING_UNPACED
                    time.sleep(RACING_PACE_S)

        t = threading.Thread(target=queue, name="model: queue while closing", daemon=True)
        t.start()
        started.wait(5)
        time.sleep(0.001)
        self._tail(s, "its close while another thread queued")
        s.obj.close()
        t.join(WAIT_S)
        s.state, s.pending = CLOSED, 0
        self.model.close_stream(s.label)
        if t.is_alive():
            raise self._violation("add_callback kept succeeding on a closed stream")
        self.racing.append((queued, ran, s.label))
        if not isinstance(failure[0], rs.StreamClosedError):
            raise self._violation(f"add_callback on {s.label} racing its close() raised "
                                  f"{failure[0]!r}, not StreamClosedError")

    # end of a sequence ---------------------------------------------------------------------------
    def _settle(self, why: str) -> None:
        """Release every latch and wait for all work, checking each synchronize on the way."""
        self._release_all()
        for s in self.streams:
            if s.state == OPEN:
                for _ in range(s.pending + 1):
                    self._synchronize_checked(s, f"{s.label}.synchronize() {why}")
        for event, what in self.tails:
            self._bounded(f"synchronize of the event recorded on {what}", event.synchronize)
        for e in self.events:
            if e.state == OPEN and e.node is not None:
                self._bounded(f"{e.label}.synchronize() {why}", e.obj.synchronize)
        for queued, ran, label in self.racing:
            end = time.monotonic() + WAIT_S
            while ran[0] < queued[0] and time.monotonic() < end:
                time.sleep(0.001)
            if ran[0] != queued[0]:
                raise self._violation(f"{queued[0]} callbacks were queued on {label} before "
                                      f"it closed, {ran[0]} ran")
        for hold in self.holds:
            if not hold.gate.released:
                raise self._timed_out(hold, "instead of being released")
        self.model.done = self.model.all_nodes()

    def _refuse_timed_out_latches(self, mask: int) -> None:
        """A held latch of ``mask`` that ended by its poll bound (the work behind it ran, so a
        check that it is busy means nothing): name it and where the sequence spent its time."""
        for hold in self.holds:
            if not hold.released and mask >> hold.node & 1 and hold.gate.timed_out:
                raise self._timed_out(hold, "while held")

    def _timed_out(self, hold: Hold, how: str) -> ModelViolation:
        """The violation of a latch that ended by its poll bound, ``how`` (while held, instead
        of being released), with where the sequence spent its time since it was queued."""
        return self._violation(f"a latch ({self.model.nodes[hold.node]}) timed out {how}: the "
                               "sequence held it too long for its checks to mean anything; the "
                               "steps since it was queued took:\n  " + self._times_since(hold.at))

    def _times_since(self, at: float) -> str:
        """The rules run since ``at`` (a latch's queueing), each with the seconds it took: where
        a sequence spent a latch's time (a host call that waited for the device shows here)."""
        rows = [f"{step}: {took:.3f} s" for step, (start, took) in
                zip(self.steps, self.step_times) if start + took >= at]
        return "\n  ".join(rows) or "(none)"

    def _verify(self, why: str) -> None:
        obs = self.rec.observe(counter=True)
        problems = (self.model.unfinished(self.model.all_nodes(), obs) +
                    self.model.count_violations(obs) + self.model.order_violations(obs))
        if problems:
            raise self._violation(f"{why}: {len(problems)} problem(s):\n  " +
                                  "\n  ".join(problems))

    def teardown(self) -> None:
        if self._disposed:
            return
        if self._hung:  # the backend may be deadlocked: touch nothing, drop nothing
            _STUCK.append(self.__dict__.copy())
            self._disposed = True
            return
        checked = False
        try:
            if self._broken:
                self._release_all()
            else:
                self._settle("at the end of the sequence")
                self._verify("at the end of the sequence")
                checked = True
        finally:
            # a failure to clean up is reported only when nothing failed before it
            self._dispose(report=checked)

    def _dispose(self, report: bool) -> None:
        """Close and drop everything, in this thread. Each open stream first runs a no-op
        callback, so that no worker keeps finished work (and the arrays it names) queued."""
        self._disposed = True
        self._release_all()
        errors: list[BaseException] = []

        def attempt(fn: Callable[[], Any]) -> None:
            try:
                fn()
            except Hang:
                raise
            except BaseException as exc:  # noqa: BLE001 - clean up the rest, then report
                errors.append(exc)

        for g in self.graphs:
            if g.state == OPEN:
                attempt(g.obj.close)
        for s in self.streams:
            if s.state != OPEN or s.obj.is_closed:
                continue

            def finish(s: StreamRef = s) -> None:
                s.obj.launch_host_func(_noop)
                for _ in range(s.pending + 1):
                    try:
                        self._synchronize(s, f"{s.label}.synchronize() while cleaning up")
                        break
                    except rs.CallbackError:
                        continue
                self._synchronize(s, f"{s.label}.synchronize() while cleaning up")
                s.obj.close()
            attempt(finish)
        for event, what in self.tails:
            attempt(functools.partial(self._bounded, f"synchronize of the event recorded on "
                                                     f"{what}", event.synchronize))
            event.close()
        for e in self.events:
            if e.state != DROPPED:
                e.obj.close()
        self.streams, self.events, self.graphs, self.tails = [], [], [], []
        self.holds, self.spare_latches = [], []
        self.rec = None  # type: ignore[assignment]
        gc.collect()
        if errors and report:
            raise errors[0]


# tests -------------------------------------------------------------------------------------------
def test_random_stream_work_runs_in_an_order_the_reference_model_allows(kernels):
    _refuse_if_poisoned()
    machine: Any = StreamsMachine
    blob = os.environ.get("ROCMSTREAMS_MODEL_REPRODUCE")  # "version:blob" from a failure's report
    if blob:  # run that one sequence again (hypothesis copies the mark from the factory)
        from hypothesis import reproduce_failure
        version, _, data = blob.partition(":")
        machine = reproduce_failure(version, data.encode())(lambda: StreamsMachine())
    run_state_machine_as_test(machine, settings=MODEL_SETTINGS)


def _fixed_wait_sequence(m: StreamsMachine) -> None:
    """nb0 held by a latch: stamp, record E; nb1 waits on E, then a callback, a stamp and a copy;
    the blocking stream waits on nb0 (a record and an event wait inside), then a callback. With
    the latch held, anything on nb1 or b2 that does not wait runs first, for certain."""
    nb0, nb1, b2 = 0, 1, 2
    m.hold(stream=nb0)
    m.stamp(stream=nb0)
    m.record(stream=nb0, event=0, how="stream.record", timing=False)
    m.wait_event(stream=nb1, event=0)
    m.callback(stream=nb1, slow=False, raising=False)
    m.stamp(stream=nb1)
    m.copy(stream=nb1)
    m.wait_stream(stream=b2, other=nb0)
    m.callback(stream=b2, slow=True, raising=False)
    # Give work that does not wait the time to run ahead: up to a second for both callbacks to
    # have run (they never do while nb0 is held, unless their waits were dropped).
    end = time.monotonic() + 1.0
    while time.monotonic() < end and not all(m.rec.invocations.get(k) and
                                             m.rec.invocations[k][0].end is not None
                                             for k in (0, 1)):
        time.sleep(0.002)
    m.query_stream(stream=nb1)
    m.query_stream(stream=b2)


def _run_fixed_wait_sequence() -> None:
    m = StreamsMachine()
    try:
        _fixed_wait_sequence(m)
    except BaseException:
        m._broken = True
        raise
    finally:
        m.teardown()  # checks the run unless a step already failed; always releases and closes


def test_the_fixed_wait_sequence_passes_on_the_unmutated_backend(kernels):
    _refuse_if_poisoned()
    _run_fixed_wait_sequence()


def test_an_array_drop_step_leaves_none_of_its_launches_queued(kernels):
    """The arrays rule waits for its 200 launches before the next step: left queued, thirty
    steps of it (6,000 simulator launches on cpu) outlasted the end-of-sequence synchronize's
    bound and failed as a deadlock. A latch is held first: on cpu it stalls every kernel, so
    launches the step does not wait for are still queued when it returns, for certain."""
    _refuse_if_poisoned()
    if "arrays" not in FULL:
        pytest.skip("ROCMSTREAMS_MODEL_FULL leaves out the arrays rule")
    m = StreamsMachine()
    try:
        m.hold(stream=0)
        m.drop_arrays_while_queued_work_holds_them(stream=0)
        assert m.streams[0].obj.query() is True, "the step returned with its launches queued"
    except BaseException:
        m._broken = True
        raise
    finally:
        m.teardown()


@pytest.fixture
def dropped_event_wait(monkeypatch):
    """A mutated backend: a stream's wait_event does nothing (a dropped event wait). Yields the
    calls it swallowed."""
    runtime = _runtime()
    swallowed: list[tuple[Any, Any]] = []

    def dropped(calls: Any, event: Any) -> None:
        # counted: the waits stream.wait() makes (not those that order the frees of dropped
        # arrays after their use on other streams, which rocmstreams.memory makes)
        if sys._getframe(1).f_globals.get("__name__") != "rocmstreams.memory":
            swallowed.append((calls.handle, event))

    monkeypatch.setattr(type(runtime.stream_calls(0)), "wait_event", dropped)
    return swallowed


def test_a_dropped_event_wait_is_reported_as_an_ordering_violation(kernels, dropped_event_wait):
    _refuse_if_poisoned()
    with pytest.raises(ModelViolation, match="waits for a latch still held|ran before"):
        _run_fixed_wait_sequence()
    assert len(dropped_event_wait) == 2, "the mutation was not on the path stream.wait() takes"


def test_random_sequences_find_a_dropped_event_wait(kernels, dropped_event_wait, monkeypatch):
    """The random search, not a hand-written sequence, finds the dropped wait. On the mutated
    backend the failing step depends on timing, so hypothesis's replay of the failing example
    may fail elsewhere or not at all and end in one of its Flaky errors; what counts is that
    the checker raised ModelViolation during the search."""
    _refuse_if_poisoned()
    seen: list[str] = []
    monkeypatch.setattr(StreamsMachine, "violations_seen", seen)
    search = settings(MODEL_SETTINGS, max_examples=max(EXAMPLES, 300), phases=[Phase.generate],
                      report_multiple_bugs=False, print_blob=False)
    try:
        run_state_machine_as_test(StreamsMachine, settings=search)
    except (ModelViolation, FlakyFailure, FlakyStrategyDefinition):
        pass
    else:
        pytest.fail(f"{search.max_examples} random sequences ran on a backend that drops event "
                    "waits, and the checker reported nothing")
    assert dropped_event_wait, "the mutation was not on the path stream.wait() takes"
    # Any violation: the unmutated backend passes these checks. (They show as work that ran
    # before what it waits for, or as a query or synchronize answer that cannot be right.)
    assert seen, "hypothesis failed, but not through the checker"


# the checker itself, on made-up observations ----------------------------------------------------
def _two_stream_model() -> tuple[Model, dict[str, int]]:
    """a: stamp s, record; b: wait, stamp t, copy, callback."""
    m = Model()
    m.add_stream("a", NON_BLOCKING)
    m.add_stream("b", NON_BLOCKING)
    ids = {}
    ids["s"] = m.add("a", STAMP, "stamp s", tag=m.new_tag("s"))
    ids["rec"] = m.add("a", MARK, "record")
    m.add("b", MARK, "wait", extra=[(ids["rec"], "wait on the event")])
    ids["t"] = m.add("b", STAMP, "stamp t", tag=m.new_tag("t"))
    ids["copy"] = m.add("b", COPY, "copy", slot=m.new_slot())
    ids["cb"] = m.add("b", CALLBACK, "callback", key=m.new_key("cb"))
    return m, ids


def _observation(log: list[int], copy_value: int, cb_sees: list[int]) -> Observation:
    full = np.full(8, EMPTY, np.int32)
    full[:len(log)] = log
    seen = np.full(8, EMPTY, np.int32)
    for p in cb_sees:
        seen[p] = full[p]
    slots = np.full(4, EMPTY, np.int32)
    slots[0] = copy_value
    run = Invocation(0, seen, slots.copy(), 1, seen.copy(), slots.copy())
    return Observation(full, slots, {0: [run]}, counter=len(log))


def test_the_checker_accepts_a_run_that_follows_every_edge():
    m, _ = _two_stream_model()
    obs = _observation([0, 1], copy_value=2, cb_sees=[0, 1])
    assert m.count_violations(obs) == [] and m.order_violations(obs) == []


def test_the_checker_reports_a_stamp_that_ran_before_the_event_it_waits_for():
    m, _ = _two_stream_model()
    obs = _observation([1, 0], copy_value=2, cb_sees=[0, 1])  # t took number 0, s number 1
    problems = m.order_violations(obs)
    assert len(problems) == 1 and "#3 stamp t on b ran before #0 stamp s on a" in problems[0]
    assert "--[wait on the event]--> #2 wait on b" in problems[0]


def test_the_checker_reports_a_callback_that_did_not_see_a_stamp_it_waits_for():
    m, _ = _two_stream_model()
    obs = _observation([0, 1], copy_value=2, cb_sees=[1])  # started before stamp s was written
    problems = m.order_violations(obs)
    assert len(problems) == 1 and "callback on b ran before #0 stamp s on a" in problems[0]


def test_the_checker_reports_a_copy_that_ran_before_a_stamp_it_follows():
    m, _ = _two_stream_model()
    obs = _observation([0, 1], copy_value=1, cb_sees=[0, 1])  # saw one stamp, two came before
    problems = m.order_violations(obs)
    assert len(problems) == 1 and "copy on b ran before #3 stamp t on b" in problems[0]


def test_the_checker_reports_work_that_ran_twice_or_not_at_all():
    m, _ = _two_stream_model()
    problems = m.count_violations(_observation([0, 0], copy_value=2, cb_sees=[0, 1]))
    assert any("tag 0 (s) ran 2 time(s); 1 queued" in p for p in problems)
    assert any("tag 1 (t) ran 0 time(s); 1 queued" in p for p in problems)


def test_the_model_orders_blocking_streams_through_the_legacy_default_stream_only():
    m = Model()
    for label, kind in (("nb", NON_BLOCKING), ("b", BLOCKING), ("legacy", LEGACY),
                        ("ptds", PER_THREAD)):
        m.add_stream(label, kind)
    on_b = m.add("b", MARK, "b work")
    on_nb = m.add("nb", MARK, "nb work")
    on_legacy = m.add("legacy", MARK, "legacy work")
    on_ptds = m.add("ptds", MARK, "ptds work")
    assert m.anc[on_legacy] >> on_b & 1 and not m.anc[on_legacy] >> on_nb & 1
    assert m.anc[on_ptds] >> on_legacy & 1 and m.anc[on_ptds] >> on_b & 1
    later_b = m.add("b", MARK, "more b work")
    assert m.anc[later_b] >> on_legacy & 1 and not m.anc[later_b] >> on_ptds & 1
