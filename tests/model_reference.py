"""Reference model for tests/test_model_based.py: which operations must finish before which.

Pure Python, no rocmstreams: the state machine in test_model_based.py tells the model every
operation it queues, and the model keeps, for each one, the set of operations that must have
finished before it starts (its ancestors, as a bit set). The edges are the documented rules:

- program order on one stream (and on a replay: the captured order);
- ``stream.wait(event)``: after the operation the event's *latest* record marks; a never recorded
  event adds nothing (not even the legacy default stream's rules: the cpu backend queues
  nothing for it, a GPU runtime may queue a wait that takes part in them);
- ``stream.wait(other)``: a record on ``other``, then a wait on it;
- the legacy default stream: its work waits for earlier work on every open blocking stream (the
  per-thread default stream is blocking), and work on a blocking stream waits for earlier legacy
  work; non-blocking streams take part in neither;
- ``graph.launch(stream)``: the replay runs after the stream's earlier work and after the
  previous replay of the same graph, on whatever stream that ran.

Nothing more is claimed: two operations without a path between them may run in either order.

What is observed (see :class:`Observation`):

- a *stamp* kernel takes the next sequence number of a device counter and writes its tag at that
  slot of a page-locked log, so the log lists finished stamps by the order they started;
- a *copy* copies the device counter into its own page-locked slot: how many stamps had started;
- a *callback* snapshots the log and the copy slots when it starts and when it ends, and takes a
  number from a host clock at both points.

For an edge A -> B (A finished before B started) that gives one check per pair of kinds; see
:meth:`Model.order_violations`. Each check is a consequence of A-before-B that holds however the
GPU overlaps independent work, so a failed check is a real ordering violation, never noise.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

STAMP, COPY, CALLBACK, MARK = "stamp", "copy", "callback", "mark"
NON_BLOCKING, BLOCKING, LEGACY, PER_THREAD = "non-blocking", "blocking", "legacy", "per-thread"
BLOCKING_KINDS = (BLOCKING, PER_THREAD)
EMPTY = -1  # what unwritten log and copy slots hold


class ModelViolation(AssertionError):
    """What the library did is not something the reference model allows."""


@dataclass
class Node:
    id: int
    kind: str
    stream: str
    what: str
    tag: int | None = None       # stamps
    key: int | None = None       # callbacks
    instance: int = 0            # stamps and callbacks: which run of the tag / key (replays)
    slot: int | None = None      # copies
    preds: dict[int, str] = field(default_factory=dict)  # direct predecessors and why

    def __str__(self) -> str:
        return f"#{self.id} {self.what} on {self.stream}"


@dataclass
class StreamState:
    label: str
    kind: str
    last: int | None = None
    open: bool = True


@dataclass
class Invocation:
    """One run of a host callback: host clock and snapshots when it started and ended."""
    start: int
    start_log: np.ndarray
    start_slots: np.ndarray
    end: int | None = None
    end_log: np.ndarray | None = None
    end_slots: np.ndarray | None = None


@dataclass
class Observation:
    log: np.ndarray                       # tags by sequence number, EMPTY where unwritten
    slots: np.ndarray                     # counter values the copies saw, EMPTY where unwritten
    invocations: dict[int, list[Invocation]]
    counter: int | None = None            # the device counter (stamps started), when read


class Model:
    """The partial order of everything queued so far, and what is known about it."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.anc: list[int] = []             # bit set of each node's ancestors
        self.streams: dict[str, StreamState] = {}
        self.held = 0                        # latch nodes not released yet
        self.done = 0                        # nodes the host has seen finish (synchronized)
        self.expected_tags: dict[int, str] = {}   # every tag handed out, and what it is
        self.expected_keys: dict[int, str] = {}   # every callback key handed out
        self._instances: collections.Counter[tuple[str, int]] = collections.Counter()
        self._next_tag = 0
        self._next_key = 0
        self._next_slot = 0

    # building ------------------------------------------------------------------------------------
    def add_stream(self, label: str, kind: str) -> StreamState:
        assert label not in self.streams and kind in (NON_BLOCKING, BLOCKING, LEGACY, PER_THREAD)
        st = self.streams[label] = StreamState(label, kind)
        return st

    def close_stream(self, label: str) -> None:
        """A closed (or dropped) stream: its queued work still runs, and it orders nothing new."""
        self.streams[label].open = False

    def new_tag(self, what: str) -> int:
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        self.expected_tags[tag] = what
        return tag

    def new_key(self, what: str) -> int:
        key, self._next_key = self._next_key, self._next_key + 1
        self.expected_keys[key] = what
        return key

    def new_slot(self) -> int:
        slot, self._next_slot = self._next_slot, self._next_slot + 1
        return slot

    @property
    def slots_used(self) -> int:
        return self._next_slot

    def stamp_instances(self) -> int:
        return sum(n for (kind, _), n in self._instances.items() if kind == STAMP)

    def last(self, label: str) -> int | None:
        return self.streams[label].last

    def add(self, label: str, kind: str, what: str, *, tag: int | None = None,
            key: int | None = None, slot: int | None = None,
            extra: Iterable[tuple[int | None, str]] = (), legacy_rules: bool = True) -> int:
        """Queue one operation on stream ``label``; returns its node id. ``legacy_rules=False``
        for an operation that may or may not take part in the legacy default stream's implicit
        synchronization (it then claims program order only)."""
        st = self.streams[label]
        assert st.open, f"model: {label} is closed"
        preds: dict[int, str] = {}
        if st.last is not None:
            preds[st.last] = f"program order on {label}"
        if not legacy_rules:
            pass
        elif st.kind == LEGACY:
            for other in self.streams.values():
                if other.open and other.kind in BLOCKING_KINDS and other.last is not None:
                    preds.setdefault(other.last, "legacy default stream work waits for earlier "
                                                 f"work on blocking stream {other.label}")
        elif st.kind in BLOCKING_KINDS:
            for other in self.streams.values():
                if other.kind == LEGACY and other.last is not None:
                    preds.setdefault(other.last, f"work on blocking stream {label} waits for "
                                                 "earlier legacy default stream work")
        for pred, why in extra:
            if pred is not None:
                preds.setdefault(pred, why)
        instance = 0
        if kind == STAMP:
            assert tag in self.expected_tags
            instance = self._instances[(STAMP, tag)]
            self._instances[(STAMP, tag)] += 1
        elif kind == CALLBACK:
            assert key in self.expected_keys
            instance = self._instances[(CALLBACK, key)]
            self._instances[(CALLBACK, key)] += 1
        node = Node(len(self.nodes), kind, label, what, tag, key, instance, slot, preds)
        anc = 0
        for pred in preds:
            anc |= self.anc[pred] | (1 << pred)
        self.nodes.append(node)
        self.anc.append(anc)
        st.last = node.id
        return node.id

    # questions -----------------------------------------------------------------------------------
    def closure(self, node: int | None) -> int:
        """The node and everything that must finish before it (0 for None)."""
        return 0 if node is None else self.anc[node] | (1 << node)

    def all_nodes(self) -> int:
        return (1 << len(self.nodes)) - 1

    def must_be_busy(self, node: int | None) -> bool:
        """True when ``node`` waits (transitively) for a latch that is still held."""
        return bool(self.closure(node) & self.held)

    def query_also(self, label: str, closed: bool = False) -> list[int]:
        """What a query of stream ``label`` may wait for besides its own work. On the legacy
        default stream: the latest work of every open blocking stream, since CUDA answers there
        as for an operation queued now, which waits for that work (seen on an H200: the legacy
        stream's query False after its own work finished, a blocking stream still busy).
        ``closed``: the closed blocking streams' too (their queued work still runs, and a
        synchronize of the legacy stream may wait for it)."""
        if self.streams[label].kind != LEGACY:
            return []
        return [o.last for o in self.streams.values()
                if (o.open or closed) and o.kind in BLOCKING_KINDS and o.last is not None]

    def known_done(self, node: int | None) -> bool:
        return node is None or bool(self.done >> node & 1)

    def members(self, mask: int) -> list[Node]:
        return [n for n in self.nodes if mask >> n.id & 1]

    def why(self, before: int, after: int) -> str:
        """The chain of edges that puts ``before`` ahead of ``after`` (for messages)."""
        parents: dict[int, tuple[int, str] | None] = {after: None}
        queue = collections.deque([after])
        while queue and before not in parents:
            n = queue.popleft()
            for p, reason in self.nodes[n].preds.items():
                if p not in parents:
                    parents[p] = (n, reason)
                    queue.append(p)
        if before not in parents:
            return "(no path)"
        chain, n = [str(self.nodes[before])], before
        while n != after:
            child, reason = parents[n]  # type: ignore[misc]
            chain.append(f"--[{reason}]--> {self.nodes[child]}")
            n = child
        return " ".join(chain)

    def describe(self) -> str:
        """Every queued operation with its direct predecessors (for failure messages)."""
        lines = []
        for n in self.nodes:
            deps = ", ".join(f"#{p}" for p in n.preds) or "-"
            lines.append(f"  {n}  after {deps}")
        return "\n".join(lines)

    # checking ------------------------------------------------------------------------------------
    def unfinished(self, mask: int, obs: Observation) -> list[str]:
        """The observable nodes in ``mask`` with no trace of having finished in ``obs``."""
        counts = collections.Counter(int(t) for t in obs.log if t != EMPTY)
        missing = []
        for n in self.members(mask):
            if n.kind == STAMP and counts[n.tag] <= n.instance:
                missing.append(f"{n} (tag {n.tag}: {counts[n.tag]} run(s) in the log)")
            elif n.kind == COPY and obs.slots[n.slot] == EMPTY:
                missing.append(f"{n} (slot {n.slot} never written)")
            elif n.kind == CALLBACK:
                runs = obs.invocations.get(n.key, [])
                if len(runs) <= n.instance or runs[n.instance].end is None:
                    missing.append(f"{n} (callback {n.key}: {len(runs)} run(s) begun)")
        return missing

    def count_violations(self, obs: Observation) -> list[str]:
        """After everything finished: each operation ran exactly as often as it was queued."""
        problems = []
        counts = collections.Counter(int(t) for t in obs.log if t != EMPTY)
        for tag, n in sorted(counts.items()):
            if tag not in self.expected_tags:
                problems.append(f"the log holds tag {tag}, which no operation was given")
        for tag, what in self.expected_tags.items():
            want = self._instances[(STAMP, tag)]
            if counts[tag] != want:
                problems.append(f"stamp tag {tag} ({what}) ran {counts[tag]} time(s); "
                                f"{want} queued")
        for key, what in self.expected_keys.items():
            want = self._instances[(CALLBACK, key)]
            runs = obs.invocations.get(key, [])
            if len(runs) != want:
                problems.append(f"callback {key} ({what}) ran {len(runs)} time(s); {want} queued")
            elif any(r.end is None for r in runs):
                problems.append(f"callback {key} ({what}) began but never returned")
        copy_slots = {n.slot for n in self.nodes if n.kind == COPY}
        for slot in range(len(obs.slots)):
            if obs.slots[slot] != EMPTY and slot not in copy_slots:
                problems.append(f"copy slot {slot} was written, but no queued copy owns it")
        started = sum(counts.values())
        if obs.counter is not None and obs.counter != self.stamp_instances():
            problems.append(f"the device counter says {obs.counter} stamps started; "
                            f"{self.stamp_instances()} queued")
        if started != self.stamp_instances():
            problems.append(f"the log holds {started} stamps; {self.stamp_instances()} queued")
        return problems

    def order_violations(self, obs: Observation, limit: int = 12) -> list[str]:
        """Every required edge A -> B (transitively) checked against what was seen.

        A stamp's position ``p`` is its sequence number; a copy's value ``v`` is how many stamps
        had started when it ran; a callback has host clock readings and snapshots at its start
        and end. A before B means:

        - stamp A, stamp B: p(A) < p(B)
        - stamp A, copy B: v(B) > p(A)          copy A, stamp B: p(B) >= v(A)
        - copy A, copy B: v(A) <= v(B)
        - stamp or copy A, callback B: A is in B's start snapshot
        - callback A, stamp or copy B: B is not in A's end snapshot
        - callback A, callback B: end(A) < start(B)
        """
        positions: dict[int, list[int]] = collections.defaultdict(list)
        for p, t in enumerate(obs.log):
            if t != EMPTY:
                positions[int(t)].append(p)
        seen: dict[int, tuple] = {}
        for n in self.nodes:
            if n.kind == STAMP:
                ps = positions.get(n.tag, [])
                if n.instance < len(ps):
                    seen[n.id] = (ps[n.instance],)
            elif n.kind == COPY and obs.slots[n.slot] != EMPTY:
                seen[n.id] = (int(obs.slots[n.slot]),)
            elif n.kind == CALLBACK:
                runs = obs.invocations.get(n.key, [])
                if n.instance < len(runs) and runs[n.instance].end is not None:
                    seen[n.id] = (runs[n.instance],)

        def present(a: Node, log: np.ndarray, slots: np.ndarray) -> bool:
            if a.kind == STAMP:
                return bool(log[seen[a.id][0]] == a.tag)
            return bool(slots[a.slot] != EMPTY)

        problems: list[str] = []
        observed = [n for n in self.nodes if n.id in seen]
        for b in observed:
            anc = self.anc[b.id]
            for a in observed:
                if not anc >> a.id & 1:
                    continue
                (x,), (y,) = seen[a.id], seen[b.id]
                bad = None
                if a.kind == STAMP and b.kind == STAMP and not x < y:
                    bad = f"stamp sequence numbers {x} and {y}"
                elif a.kind == STAMP and b.kind == COPY and not y > x:
                    bad = f"stamp sequence number {x}, yet the copy saw the counter at {y}"
                elif a.kind == COPY and b.kind == STAMP and not y >= x:
                    bad = f"the copy saw the counter at {x}, yet the stamp took number {y}"
                elif a.kind == COPY and b.kind == COPY and not x <= y:
                    bad = f"the copies saw the counter at {x} and then {y}"
                elif a.kind in (STAMP, COPY) and b.kind == CALLBACK and \
                        not present(a, y.start_log, y.start_slots):
                    bad = "the callback's start snapshot does not hold it"
                elif a.kind == CALLBACK and b.kind in (STAMP, COPY) and \
                        present(b, x.end_log, x.end_slots):
                    bad = "it is already in the first callback's end snapshot"
                elif a.kind == CALLBACK and b.kind == CALLBACK and not x.end < y.start:
                    bad = f"host clock: the first ended at {x.end}, the second began at {y.start}"
                if bad is not None:
                    problems.append(f"{b} ran before {a} had finished ({bad}); required by: "
                                    f"{self.why(a.id, b.id)}")
                    if len(problems) >= limit:
                        return problems
        return problems
