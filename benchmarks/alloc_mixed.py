"""Mixed-size allocations and frees: rocmstreams' pools beside CuPy's and torch's caching
allocators, for device memory and for page-locked host memory.

One fixed-seed schedule of ``--ops`` allocations (sizes log-uniform from 256 B to 16 MiB, in
multiples of 256 B); after each allocation the array is dropped at once, except that with
probability 1/16 it replaces a random one of ``--alive`` slots kept alive (the array it pushes
out is dropped then). Every library runs the same schedule:

- device: ``rs.empty(n, np.uint8, stream=s)`` on a non-blocking RocmStream; ``cupy.empty`` on a
  non-blocking ``cupy.cuda.Stream`` (its default memory pool); ``torch.empty(device="cuda")``
  under ``torch.cuda.stream`` (its caching allocator);
- pinned: ``rs.pinned_empty``; ``cupyx.empty_pinned`` (CuPy's pinned memory pool);
  ``torch.empty(pin_memory=True)`` (torch's CachingHostAllocator).

The contenders of a kind run in ``--rounds`` alternating rounds, each over the whole schedule;
the figure is the best round's µs per allocation + free, and each peer's ratio is rocmstreams'
figure over the peer's, measured in the same run. rocmstreams' rows also check that the bytes
in use return to where they were once the schedule's arrays are gone (``flat``), and report how
much the pool / the pinned cache grew. Peers are imported only where present; on the cpu
backend only rocmstreams runs (its figures check the code, their µs mean little).

A last rocmstreams row runs the schedule once more over ``--streams`` streams (allocation ``i`` on
stream ``i % streams``) with ``pool_release_threshold`` set to ``--threshold-mib``: in use back
to the start (``flat``), and after the synchronize no more reserved than the threshold beyond
what is in use, give or take one chunk of 16 MiB (``<= threshold``); the reserved bytes then
are reported beside.

Usage: ``python benchmarks/alloc_mixed.py [--ops 1000000] [--rounds 3] [--alive 16]
[--streams 4] [--threshold-mib 64] [--json PATH] [--smoke]``.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import numpy as np

import _common

MIN_BYTES, MAX_BYTES = 256, 16 << 20
KEEP_ONE_IN = 16
SEED = 20260101


def schedule(ops: int, alive: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes, slots)``: the bytes of each allocation, and the slot it is kept in (-1: dropped
    at once)."""
    rng = np.random.default_rng(seed)
    logs = rng.uniform(np.log2(MIN_BYTES), np.log2(MAX_BYTES), ops)
    sizes = np.maximum((np.exp2(logs) // 256).astype(np.int64) * 256, MIN_BYTES)
    keep = rng.integers(0, KEEP_ONE_IN, ops) == 0
    slots = np.where(keep, rng.integers(0, alive, ops), -1)
    return sizes, slots


def run_schedule(alloc: Callable[[int], Any], sizes: list[int], slots: list[int],
                 alive: int, finish: Callable[[], None]) -> float:
    """Seconds for the whole schedule, ending with the kept arrays dropped and ``finish()``."""
    kept: list[Any] = [None] * alive
    start = time.perf_counter()
    for n, slot in zip(sizes, slots):
        a = alloc(n)
        if slot >= 0:
            kept[slot] = a
        del a
    kept = [None] * alive
    finish()
    return time.perf_counter() - start


def _rocmstreams(kind: str) -> tuple[Callable[[int], Any], Callable[[], None], Callable[[], dict]]:
    import rocmstreams as rs
    if kind == "device":
        s = rs.RocmStream(non_blocking=True)

        def alloc(n: int) -> Any:
            return rs.empty(n, np.uint8, stream=s)
        finish = s.synchronize
    else:
        def alloc(n: int) -> Any:
            return rs.pinned_empty(n, np.uint8)

        def finish() -> None:
            pass

    def stats() -> dict:
        import gc
        gc.collect()
        rs.default_stream().synchronize()  # drains the release queue
        return rs.memory_stats()
    return alloc, finish, stats


def _cupy(kind: str) -> tuple[Callable[[int], Any], Callable[[], None]] | str:
    cupy, why = _common.import_peer("cupy")
    if cupy is None:
        return why or "cupy is missing"
    if kind == "device":
        s = cupy.cuda.Stream(non_blocking=True)

        def alloc(n: int) -> Any:
            with s:
                return cupy.empty(n, cupy.uint8)
        return alloc, s.synchronize
    cupyx, why = _common.import_peer("cupyx")
    if cupyx is None:
        return why or "cupyx is missing"

    def alloc_pinned(n: int) -> Any:
        return cupyx.empty_pinned((n,), np.uint8)
    return alloc_pinned, lambda: None


def _torch(kind: str) -> tuple[Callable[[int], Any], Callable[[], None]] | str:
    torch, why = _common.import_peer("torch")
    if torch is None:
        return why or "torch is missing"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if kind == "device":
        s = torch.cuda.Stream()

        def alloc(n: int) -> Any:
            with torch.cuda.stream(s):
                return torch.empty(n, dtype=torch.uint8, device="cuda")
        return alloc, s.synchronize

    def alloc_pinned(n: int) -> Any:
        return torch.empty(n, dtype=torch.uint8, pin_memory=True)
    return alloc_pinned, lambda: None


def several_streams(sizes: list[int], slots: list[int], alive: int, streams: int,
                    threshold: int) -> dict[str, Any]:
    """rocmstreams alone, the same schedule with allocation ``i`` on stream ``i % streams``
    (arrays kept alive are dropped from whichever stream's turn it is) under
    ``rs.configure(pool_release_threshold=threshold)``: the bytes in use must come back to where
    they were (``flat``), and once the streams are synchronized the pool must hold no more than
    the threshold (in use included) and one chunk of the largest allocation's size (``bounded``:
    the pool gives the rest back at the synchronize)."""
    import gc

    import rocmstreams as rs
    label = f"rocmstreams ({streams} streams, threshold {threshold >> 20} MiB)"
    with rs.configure(pool_release_threshold=threshold):
        ss = [rs.RocmStream(non_blocking=True) for _ in range(streams)]
        turn = [0]

        def alloc(n: int) -> Any:
            i = turn[0]
            turn[0] = (i + 1) % streams
            return rs.empty(n, np.uint8, stream=ss[i])

        def finish() -> None:
            for s in ss:
                s.synchronize()

        def stats() -> dict:
            gc.collect()
            rs.default_stream().synchronize()  # drains the release queue: frees are queued
            finish()  # the streams run the frees; the pool trims at these synchronizes
            return rs.memory_stats()
        before = stats()
        seconds = run_schedule(alloc, sizes, slots, alive, finish)
        after = stats()
        for s in ss:
            s.close()
    return {"library": label, "kind": "device", "ops": len(sizes),
            "us_per_op": seconds / len(sizes) * 1e6,
            "flat": after["in_use_bytes"] == before["in_use_bytes"],
            "cache_growth_mib": (after["reserved_bytes"] - before["reserved_bytes"]) / (1 << 20),
            "reserved_mib": after["reserved_bytes"] / (1 << 20),
            # the pools reserve in chunks: one a live block sits in stays (up to the largest
            # allocation's size is allowed for it)
            "bounded": after["reserved_bytes"] <= threshold + MAX_BYTES + after["in_use_bytes"]}


def measure(kind: str, sizes: list[int], slots: list[int], alive: int, rounds: int,
            peers: bool) -> list[dict[str, Any]]:
    """The rows of one kind (``device`` or ``pinned``): rocmstreams first, then each peer."""
    ops = len(sizes)
    alloc, finish, stats = _rocmstreams(kind)
    contenders: dict[str, tuple[Callable[[int], Any], Callable[[], None]]] = {
        "rocmstreams": (alloc, finish)}
    rows: dict[str, dict[str, Any]] = {}
    for name, make in (("cupy", _cupy), ("torch", _torch)):
        if not peers:
            rows[name] = _common.missing_row(name, "peers run on a CUDA GPU only (this backend "
                                                   "is cpu)", kind=kind)
            continue
        try:
            found = make(kind)
        except Exception as exc:  # noqa: BLE001 - a broken peer is a row, not a crash
            found = f"{type(exc).__name__}: {exc}"
        if isinstance(found, str):
            rows[name] = _common.missing_row(name, found, kind=kind)
        else:
            contenders[name] = found
    best: dict[str, float] = {}
    before = stats()
    steps = [(r, name) for r in range(rounds) for name in contenders]
    for _, name in _common.progress(steps, f"{kind} alloc+free"):
        if name in rows:
            continue  # failed in an earlier round
        fn, fin = contenders[name]
        try:
            seconds = run_schedule(fn, sizes, slots, alive, fin)
        except Exception as exc:  # noqa: BLE001
            rows[name] = {"library": name, "kind": kind, "error": f"{type(exc).__name__}: {exc}"}
            continue
        best[name] = min(best.get(name, seconds), seconds)
    after = stats()
    prefix = "" if kind == "device" else "pinned_"
    ours = best.get("rocmstreams")
    out = []
    for name in contenders:
        if name in rows:
            continue
        row: dict[str, Any] = {"library": name, "kind": kind, "ops": ops,
                               "us_per_op": best[name] / ops * 1e6}
        if name == "rocmstreams":
            row["flat"] = after[f"{prefix}in_use_bytes"] == before[f"{prefix}in_use_bytes"]
            grown = (after["reserved_bytes"] - before["reserved_bytes"] if kind == "device"
                     else after["pinned_cached_bytes"] - before["pinned_cached_bytes"])
            row["cache_growth_mib"] = grown / (1 << 20)
        elif ours is not None:
            row["ratio"] = ours / best[name]  # rocmstreams' time over the peer's
        out.append(row)
    return out + [rows[name] for name in ("cupy", "torch") if name in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=None,
                        help="allocations per round (default 10**6; 2000 smoke)")
    parser.add_argument("--rounds", type=int, default=None, help="default 3; 1 smoke")
    parser.add_argument("--alive", type=int, default=16, help="slots of arrays kept alive")
    parser.add_argument("--kinds", default="device,pinned", help="device, pinned or both")
    parser.add_argument("--streams", type=int, default=4,
                        help="streams of the rocmstreams row with a release threshold")
    parser.add_argument("--threshold-mib", type=int, default=64,
                        help="that row's pool_release_threshold, MiB")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--smoke", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    ops = args.ops or (2000 if args.smoke else 10 ** 6)
    rounds = args.rounds or (1 if args.smoke else 3)
    env = _common.environment()
    sizes, slots = schedule(ops, args.alive)
    size_list, slot_list = sizes.tolist(), slots.tolist()
    rows: list[dict[str, Any]] = []
    for kind in args.kinds.split(","):
        rows += measure(kind, size_list, slot_list, args.alive, rounds,
                        peers=env["backend"] != "cpu")
        if kind == "device":
            rows.append(several_streams(size_list, slot_list, args.alive, args.streams,
                                        args.threshold_mib << 20))
    ok = all("error" not in r for r in rows) and all(
        r["flat"] and r.get("bounded", True) for r in rows
        if r["library"].startswith("rocmstreams"))
    title = (f"mixed alloc+free, {ops} ops of 256 B..16 MiB ({int(np.median(sizes))} B median), "
             f"{args.alive} kept alive, best of {rounds} ({env['backend']}); ratio = "
             "rocmstreams / peer")
    _common.print_table(title, [("library", "library", ""), ("kind", "kind", ""),
                                ("us_per_op", "us/op", ".2f"), ("ratio", "ratio", ".2f"),
                                ("flat", "flat", ""),
                                ("cache_growth_mib", "cache grew MiB", ".1f"),
                                ("bounded", "<= threshold", ""),
                                ("reserved_mib", "reserved after MiB", ".1f")], rows)
    if args.json:
        _common.write_json(args.json, {
            "benchmark": "alloc_mixed", "environment": env, "ops": ops, "rounds": rounds,
            "alive": args.alive, "seed": SEED, "min_bytes": MIN_BYTES, "max_bytes": MAX_BYTES,
            "rows": rows, "ok": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
