"""See the streams: ``with rs.trace() as t:`` records every operation queued on RocmStreams inside
it, with its start and end as executed, and shows them as a table, a summary, a timeline plot or
a Chrome trace (which Perfetto opens).

Times come from timing events recorded on the operation's own stream just before and just after
it (on GPU backends the runtime's events; on the cpu backend the worker's clock), read against one
reference event, so they are when the work ran, not when it was queued. The reference event is
recorded on a non-blocking stream of the trace's own, idle, so entering a trace waits for no user
work; it has run before the trace opens, so every traced operation starts after it. Outside a
trace nothing is recorded and nothing is paid but one check in the stream core's door.

Its waits are interruptible: Ctrl-C ends them at once, and leaving the block by Ctrl-C waits for
nothing (the trace keeps the operations that had finished). The trace's events are destroyed once
the work that records them has run, never while the device may still write them.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from .backends import Backend, active
from .core.arrays import describe
from .core.callbacks import refuse, running
from .core.lifetime import Handle
from .streamcore import (COPY, GRAPH_LAUNCH, HOST_FUNC, LAUNCH, RECORD, WAIT, StreamCore,
                         release_when_done, tracers, wait_blocking)

__all__ = ["Trace", "TraceRecord", "trace", "range"]

_builtin_range = range  # this module's range() is the named-range context manager

_KINDS = {LAUNCH: "kernel", HOST_FUNC: "host callback", RECORD: "event record", WAIT: "wait",
          GRAPH_LAUNCH: "graph"}


@dataclass
class TraceRecord:
    """One operation as it ran: times in milliseconds from the trace's start."""

    kind: str  # "H2D", "D2H", "D2D", "kernel", "host callback", "event record", "wait", "graph"
    stream: int  # the stream handle
    device: int
    start_ms: float = 0.0
    end_ms: float = 0.0
    nbytes: int = 0
    name: str = ""  # the kernel's name, or a range's
    grid: tuple[int, ...] = ()
    block: tuple[int, ...] = ()

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


@dataclass
class _Pending:
    record: TraceRecord
    start: int
    end: int


@dataclass
class _Range:
    name: str
    host_start: float
    host_end: float = 0.0


class Trace:
    """What :func:`trace` records; read it after the ``with`` block."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._ranges: list[_Range] = []
        self.records: list[TraceRecord] = []
        self._reference = 0
        self._events: Handle | None = None  # owns the reference and, once done, all events
        self._spent: list[int] = []  # the operations' events, released with the reference
        self._host_zero = 0.0
        self._open = False

    # ---- recording (called by the stream core's door) ----------------------------------------
    def begin(self, core: StreamCore, kind: str, fn: Any, args: tuple) -> _Pending | None:
        """Before an operation is queued: its record and the event marking its start."""
        be = self._backend
        record = TraceRecord(_KINDS.get(kind, kind), core.calls.handle, core.device)
        if kind == COPY:
            dst, src = describe(args[0]), describe(args[1])
            record.kind = {("device", "host"): "H2D", ("host", "device"): "D2H"}.get(
                (dst.kind, src.kind), "D2D")
            record.nbytes = dst.nbytes
        elif kind == LAUNCH:
            config = args[0]
            record.grid, record.block = tuple(config[:3]), tuple(config[3:6])
            owner = getattr(fn, "__self__", None)
            record.name = getattr(getattr(owner, "dispatcher", None), "__name__", "kernel")
        start = be.event_create(True)
        core.calls.event_record(start)
        return _Pending(record, start, 0)

    def end(self, core: StreamCore, pending: _Pending) -> None:
        """After the operation was queued: the event marking its end."""
        pending.end = self._backend.event_create(True)
        core.calls.event_record(pending.end)
        with self._lock:
            self._pending.append(pending)

    # ---- the block ---------------------------------------------------------------------------
    def _start(self) -> None:
        if running:
            refuse("rocmstreams.trace()")
        be = self._backend
        reference = self._reference = be.event_create(True)
        self._events = events = Handle(reference, self._destroy_events, "trace's events")
        try:
            own = be.stream_create(True, 0, be.get_device())  # the current device's
            try:
                be.stream_calls(own).event_record(reference)
                wait_blocking(lambda: be.event_query(reference),
                              lambda: be.event_synchronize(reference), None, "rs.trace()",
                              events)
            finally:
                be.stream_destroy(own)  # its work (the record) still runs, as for every stream
        except BaseException:
            release_when_done(lambda: be.event_synchronize(reference), [events])
            raise
        self._host_zero = time.perf_counter()
        self._open = True
        tracers.append(self)

    def _finish(self, wait: bool) -> None:
        """Close the trace: wait for the traced work (``wait``; interruptibly) and keep the
        records of the operations that finished; the events go once their work has run."""
        tracers.remove(self)
        self._open = False
        be = self._backend
        with self._lock:
            pending, self._pending = self._pending, []
        self._spent = [event for p in pending for event in (p.start, p.end)]
        ends = [p.end for p in pending]

        def ran() -> bool:
            return all(be.event_query(end) for end in ends)

        def run() -> None:
            for end in ends:
                be.event_synchronize(end)

        events: Handle = self._events  # type: ignore[assignment]
        try:
            if wait:
                wait_blocking(ran, run, None, "leaving rs.trace()", events)
            self._read(pending)
        finally:
            if ran():
                events.close()
            else:  # left by Ctrl-C: the events go when the work that records them has run
                release_when_done(run, [events])
        for r in self._ranges:
            self.records.append(TraceRecord("range", -1, -1, (r.host_start - self._host_zero) * 1e3,
                                            (r.host_end - self._host_zero) * 1e3, name=r.name))
        self.records.sort(key=lambda rec: (rec.start_ms, rec.end_ms))

    def _read(self, pending: list[_Pending]) -> None:
        """The records of the operations that have finished, timed against the reference."""
        be = self._backend
        for p in pending:
            if be.event_query(p.end):  # its start, earlier on its stream, has run too
                p.record.start_ms = be.event_elapsed_time(self._reference, p.start)
                p.record.end_ms = max(p.record.start_ms,
                                      be.event_elapsed_time(self._reference, p.end))
                self.records.append(p.record)

    def _destroy_events(self, reference: int) -> None:
        """Destroy the reference and the operations' events (all done): each, whatever fails."""
        failed: Exception | None = None
        for event in [reference, *self._spent]:
            try:
                self._backend.event_destroy(event)
            except Exception as exc:  # noqa: BLE001 - the others are still destroyed
                failed = exc
        if failed is not None:
            raise failed

    def add_range(self, r: _Range) -> None:
        with self._lock:
            self._ranges.append(r)

    # ---- reading -----------------------------------------------------------------------------
    def table(self) -> Any:
        """The records as a pandas DataFrame where pandas is installed, else a list of dicts."""
        rows = [{**asdict(r), "duration_ms": r.duration_ms} for r in self.records]
        try:
            import pandas  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    def summary(self) -> dict[str, Any]:
        """Busy time per stream, copy GB/s per direction, the fraction of the traced time during
        which two or more streams ran at once, and the idle gaps of each stream."""
        work = [r for r in self.records if r.kind != "range" and r.duration_ms > 0]
        streams = sorted({r.stream for r in work})
        busy, gaps = {}, {}
        for s in streams:
            spans = _merge([(r.start_ms, r.end_ms) for r in work if r.stream == s])
            busy[s] = sum(b - a for a, b in spans)
            gaps[s] = sum(b[0] - a[1] for a, b in zip(spans, spans[1:]))
        gbps = {}
        for direction in ("H2D", "D2H", "D2D"):
            copies = [r for r in work if r.kind == direction]
            seconds = sum(r.duration_ms for r in copies) / 1e3
            if copies and seconds > 0:
                gbps[direction] = sum(r.nbytes for r in copies) / seconds / 1e9
        span = (max(r.end_ms for r in work) - min(r.start_ms for r in work)) if work else 0.0
        return {"streams": len(streams), "operations": len(work), "span_ms": span,
                "busy_ms": busy, "idle_gaps_ms": gaps, "copy_gbps": gbps,
                "overlap_fraction": _overlap(work, streams) / span if span else 0.0}

    def save(self, path: str) -> None:
        """Write a Chrome trace (JSON; Perfetto and chrome://tracing open it), one track per
        stream, ranges on a track of their own."""
        events: list[dict[str, Any]] = []
        for r in self.records:
            tid = "ranges" if r.kind == "range" else f"stream {r.stream:#x}"
            args: dict[str, Any] = {"bytes": r.nbytes} if r.nbytes else {}
            if r.grid:
                args.update(grid=list(r.grid), block=list(r.block))
            events.append({"name": r.name or r.kind, "cat": r.kind, "ph": "X",
                           "ts": r.start_ms * 1e3, "dur": r.duration_ms * 1e3,
                           "pid": f"device {max(r.device, 0)}", "tid": tid, "args": args})
        with open(path, "w") as fh:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, fh)

    def plot(self, ax: Any = None) -> Any:
        """A matplotlib timeline, one lane per stream, copies and kernels coloured apart; returns
        the figure (shown inline in Jupyter)."""
        import matplotlib.pyplot as plt

        colours = {"H2D": "tab:blue", "D2H": "tab:green", "D2D": "tab:cyan",
                   "kernel": "tab:orange", "graph": "tab:red", "host callback": "tab:purple"}
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(10, 1 + 0.6 * len(self.lanes())))
        lanes = self.lanes()
        for i, lane in enumerate(lanes):
            spans = [r for r in self.records if (f"stream {r.stream:#x}" if r.kind != "range"
                                                 else "ranges") == lane]
            ax.broken_barh([(r.start_ms, max(r.duration_ms, 1e-6)) for r in spans], (i, 0.8),
                           facecolors=[colours.get(r.kind, "tab:gray") for r in spans])
        ax.set_yticks([i + 0.4 for i in _builtin_range(len(lanes))])
        ax.set_yticklabels(lanes)
        ax.set_xlabel("ms from the start of the trace")
        from matplotlib.patches import Patch
        kinds = sorted({r.kind for r in self.records if r.kind in colours})
        if kinds:  # outside the axes, right of them: it never covers a bar
            ax.legend(handles=[Patch(color=colours[k], label=k) for k in kinds],
                      loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                      fontsize="small")
            if fig is not None:
                fig.tight_layout()
        return fig if fig is not None else ax.figure

    def lanes(self) -> list[str]:
        """The timeline's lanes: one per stream (and one for named ranges, if any)."""
        names = sorted({f"stream {r.stream:#x}" for r in self.records if r.kind != "range"})
        return names + (["ranges"] if any(r.kind == "range" for r in self.records) else [])

    def __enter__(self) -> "Trace":
        self._start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Ctrl-C (or a SystemExit) in the block ends it at once: no wait for the traced work
        self._finish(wait=exc_info[1] is None or isinstance(exc_info[1], Exception))

    def __repr__(self) -> str:
        return f"<Trace {len(self.records)} records on {len(self.lanes())} lanes>"


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _overlap(work: list[TraceRecord], streams: list[int]) -> float:
    """Milliseconds during which two or more streams were busy."""
    points = []
    for s in streams:
        for a, b in _merge([(r.start_ms, r.end_ms) for r in work if r.stream == s]):
            points += [(a, 1), (b, -1)]
    total, active_now, last = 0.0, 0, 0.0
    for t, step in sorted(points, key=lambda p: (p[0], p[1])):
        if active_now >= 2:
            total += t - last
        active_now += step
        last = t
    return total


def trace() -> Trace:
    """``with rs.trace() as t:`` records the operations queued on RocmStreams inside the block;
    after it, ``t.table()``, ``t.summary()``, ``t.plot()`` and ``t.save("trace.json")``."""
    return Trace(active())


_MISSING: set[str] = set()  # bindings that did not import: not searched for again


def _binding(name: str) -> Any:
    """The module ``name`` where it imports (or was put in ``sys.modules``), else None; a name
    that failed once is not searched for on ``sys.path`` again (a range costs no import)."""
    if name in _MISSING and name not in sys.modules:
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - not installed, or an install that does not import
        _MISSING.add(name)
        return None


def _profiler_ranges() -> list[tuple[Any, Any]]:
    """``(push, pop)`` of each vendor's range API whose Python binding imports here: roctx
    (hip-python's ``rocm.bindings.roctx``, which rocprof reads) and NVTX (the ``nvtx`` package,
    which Nsight Systems reads)."""
    found: list[tuple[Any, Any]] = []
    roctx = _binding("rocm.bindings.roctx")
    if roctx is not None:
        found.append((roctx.roctxRangePushA, roctx.roctxRangePop))
    nvtx = _binding("nvtx")
    if nvtx is not None:
        # hip-python-interop's ``nvtx`` is a shim over that same roctx: one range, not two
        if roctx is None or getattr(nvtx, "_roctx", None) is not roctx:
            found.append((nvtx.push_range, nvtx.pop_range))
    return found


@contextlib.contextmanager
def range(name: str) -> Iterator[None]:  # noqa: A001 - the name users expect (NVTX's)
    """A named range: in every open trace (host time), and in the vendors' profilers where their
    Python bindings are installed: rocprof through roctx (hip-python's ``rocm.bindings.roctx``),
    Nsight Systems through NVTX (the ``nvtx`` package). A profiler binding that fails is left
    out; the range still runs."""
    if not isinstance(name, str):
        raise TypeError(f"a range's name is a str, got {type(name).__name__}")
    pops = []
    for push, pop in _profiler_ranges():
        try:
            push(name)
        except Exception:  # noqa: BLE001 - a profiler's library missing at run time
            continue
        pops.append(pop)
    r = _Range(name, time.perf_counter())
    try:
        yield
    finally:
        for pop in reversed(pops):
            try:
                pop()
            except Exception:  # noqa: BLE001 - as for its push
                pass
        r.host_end = time.perf_counter()
        for t in list(tracers):
            if isinstance(t, Trace):
                t.add_range(r)
