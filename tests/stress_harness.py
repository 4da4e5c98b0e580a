"""Stress: many streams fed by many threads, stamped operations with cross-stream dependencies
(chains and diamonds) and concurrent closes, checked against what must run before what.

Every operation is a launch of the stamp kernel, which takes the next sequence number of one
device counter and writes its tag there: after the run, the log gives the order in which the
launches ran on the device. Each thread owns some streams; it stamps on them, records events and
publishes them, makes its streams wait on events other threads published (chains) or on two at
once (diamonds), and now and then closes a stream and opens a new one in its place. Every edge
"A must run before B" (same stream program order, and event waits) is checked against the log.

``python tests/stress_harness.py --ops 100000 --streams 16 --threads 8`` prints the counts; the
test suite runs it small on every backend.
"""
from __future__ import annotations

import argparse
import random
import threading
from dataclasses import dataclass, field

import numpy as np

import rocmstreams as rs


@dataclass
class Report:
    ops: int = 0
    edges: int = 0
    violations: int = 0
    closes: int = 0
    waits: int = 0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"stress: {self.ops} stamped operations, {self.edges} ordering edges checked, "
                f"{self.waits} cross-stream waits, {self.closes} concurrent closes; "
                f"ordering violations {self.violations}, errors {len(self.errors)}")


def run(ops: int = 2000, streams: int = 16, threads: int = 8, seed: int = 0) -> Report:
    from rocmstreams.kernels import stamp

    report = Report()
    counter = rs.to_device(np.zeros(1, np.int32))
    log = rs.to_device(np.full(ops, -1, np.int32))
    rs.default_stream().synchronize()
    lock = threading.Lock()
    published: list[tuple[rs.Event, int]] = []  # (event, last tag before its record)
    # events recorded just before each close: the default stream's synchronize does not wait
    # for a closed non-blocking stream's queued work, these do
    tails: list[rs.Event] = []
    before: dict[int, list[int]] = {}  # tag -> tags that must run earlier
    next_tag = iter(range(ops))
    per_thread = max(1, streams // threads)

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        mine = [rs.RocmStream(non_blocking=True) for _ in range(per_thread)]
        last: list[int | None] = [None] * per_thread  # last tag stamped on each stream
        pending: list[list[int]] = [[] for _ in range(per_thread)]  # waited-for tags
        try:
            while True:
                with lock:
                    tag = next(next_tag, None)
                if tag is None:
                    break
                k = rng.randrange(per_thread)
                s = mine[k]
                roll = rng.random()
                if roll < 0.15 and published:  # a chain, or a diamond of two events
                    with lock:
                        picks = rng.sample(published, min(len(published), rng.choice((1, 2))))
                    for ev, upto in picks:
                        s.wait(ev)
                        pending[k].append(upto)
                        report.waits += 1
                elif roll < 0.17:  # close and replace, while other threads go on
                    tail = s.record()
                    s.close()
                    with lock:
                        tails.append(tail)
                    mine[k] = s = rs.RocmStream(non_blocking=True)
                    last[k] = None
                    pending[k] = []
                    report.closes += 1
                deps = list(pending[k]) + ([last[k]] if last[k] is not None else [])
                stamp[1, 1, s](counter, log, np.int32(tag))
                before[tag] = deps
                last[k] = tag
                pending[k] = []
                if rng.random() < 0.2:
                    ev = s.record()
                    with lock:
                        published.append((ev, tag))
                        if len(published) > 64:
                            published.pop(0)
        except BaseException as exc:  # noqa: BLE001 - counted
            report.errors.append(f"thread {index}: {type(exc).__name__}: {exc}")
        finally:
            for s in mine:
                try:
                    s.synchronize()
                    s.close()
                except BaseException as exc:  # noqa: BLE001 - counted
                    report.errors.append(f"thread {index} closing: {exc}")

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for tail in tails:  # the work queued on each closed stream before its close
        tail.synchronize()
    rs.default_stream().synchronize()
    order = log.copy_to_host()
    rs.default_stream().synchronize()
    position = {int(tag): i for i, tag in enumerate(order) if tag >= 0}
    report.ops = len(position)
    for tag, deps in before.items():
        for dep in deps:
            report.edges += 1
            if tag not in position or dep not in position or position[dep] > position[tag]:
                report.violations += 1
    if report.ops != len(before):
        report.errors.append(f"{len(before)} stamps queued, {report.ops} ran")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = run(args.ops, args.streams, args.threads, args.seed)
    print(f"backend {rs.backend().name}: {report}")
    for line in report.errors[:20]:
        print("  ", line)
    return 0 if report.violations == 0 and not report.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
