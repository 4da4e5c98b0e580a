"""Copies from and to pageable memory: rocmstreams' staged copies beside numba-cuda's.

Target (issue 4): H2D from a pageable array at least 2x numba-cuda's ``cuda.to_device`` from the
same array (8.1 GB/s for 256 MiB on an H100, where page-locked memory reaches ~50 GB/s).

Rows, each the best of ``--repeat`` (host ``time.perf_counter`` from the call to the end of a
synchronize; ``call ms`` is until the call returned, when the caller may reuse the source):

- numba-cuda ``cuda.to_device(a)`` and ``d.copy_to_device(a, stream=s)``; ``d.copy_to_host(a)``;
- rocmstreams staged (the defaults in ``rocmstreams.staging``), direct (staging off: the
  runtime's own pageable copy) and from/to ``pinned_empty`` memory (the link's ceiling);
- a sweep of chunk size x host threads for the staged copies, to pick the defaults;
- whether ``np.copyto`` releases the GIL here, and host copy speed into page-locked memory by
  thread count (the staged copy's other half).

Every copy's result is checked against the source. Usage: ``python benchmarks/staged_copies.py
[--size-mib 256] [--repeat 5] [--no-sweep] [--json PATH] [--smoke]``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

import _common

TARGET_RATIO = 2.0


_NAMES = {"THREADS": "staging_threads", "CHUNK_BYTES": "staging_chunk_bytes",
          "MIN_STAGED_BYTES": "staging_min_bytes", "STAGE_D2H": "stage_device_to_host"}


@contextlib.contextmanager
def _staging(**values: Any) -> Iterator[None]:
    import rocmstreams as rs
    with rs.configure(**{_NAMES[k]: v for k, v in values.items()}):
        yield


def gil_probe(nbytes: int) -> dict[str, float]:
    """How fast a pure-Python thread counts while the main thread runs np.copyto, relative to
    while it sleeps: near 1 means copyto releases the GIL, near 0 that it holds it."""
    src, dst = np.ones(nbytes, np.uint8), np.zeros(nbytes, np.uint8)

    def rate(work: Callable[[], None]) -> float:
        count, stop = [0], [False]

        def spin() -> None:
            while not stop[0]:
                count[0] += 1

        t = threading.Thread(target=spin)
        t.start()
        time.sleep(0.02)
        c0, t0 = count[0], time.perf_counter()
        work()
        c1, t1 = count[0], time.perf_counter()
        stop[0] = True
        t.join()
        return (c1 - c0) / (t1 - t0)

    copies = max(1, (1 << 30) // max(nbytes, 1))
    busy = rate(lambda: [np.copyto(dst, src) for _ in range(copies)])
    idle = rate(lambda: time.sleep(0.2))
    return {"spin_rate_ratio": busy / idle, "releases_gil": busy / idle > 0.5}


def host_copy_rows(nbytes: int, repeat: int) -> list[dict[str, Any]]:
    """Pageable -> page-locked numpy copies, split over 1..8 threads as staging splits them."""
    import rocmstreams as rs
    from rocmstreams import staging
    src = np.ones(nbytes, np.uint8)
    dst = rs.pinned_empty(nbytes, np.uint8)
    rows = []
    for threads in (1, 2, 4, 8):
        with _staging(THREADS=threads):
            cfg = rs.config()
            t = _common.summary(_common.time_call(lambda: staging.host_copy(dst, src, cfg),
                                                  repeat))
        rows.append({"case": f"host copy, {threads} thread(s)", "kind": "host",
                     "gbps": nbytes / t["best_ms"] / 1e6, "time_ms": t["best_ms"],
                     "verified": bool(np.array_equal(dst[:: 4099], src[:: 4099]))})
    return rows


def _row(case: str, kind: str, nbytes: int, totals: list[float], calls: list[float],
         ok: bool, **extra: Any) -> dict[str, Any]:
    t = _common.summary(totals)
    return {"case": case, "kind": kind, "gbps": nbytes / t["best_ms"] / 1e6,
            "time_ms": t["best_ms"], "median_ms": t["median_ms"],
            "call_ms": min(calls) * 1e3 if calls else None, "verified": ok, **extra}


def _timed(call: Callable[[], Any], sync: Callable[[], None], repeat: int
           ) -> tuple[list[float], list[float]]:
    call()
    sync()  # warm-up: staging buffers, device memory pools
    totals, calls = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        calls.append(t1 - t0)
        totals.append(t2 - t0)
    return totals, calls


def rocmstreams_rows(host: np.ndarray, repeat: int, sweep: bool) -> list[dict[str, Any]]:
    import rocmstreams as rs
    from rocmstreams import staging
    s = rs.RocmStream(non_blocking=True)
    d = rs.empty(host.shape, host.dtype)
    pinned = rs.pinned_empty(host.shape, host.dtype)
    back = rs.pinned_empty(host.shape, host.dtype)
    out = np.zeros_like(host)
    nbytes = host.nbytes

    def arrived(dev: Any) -> bool:
        back[:] = 0
        rs.copy_async(back, dev, stream=s)
        s.synchronize()
        return bool(np.array_equal(back, host))

    def h2d(case: str, call: Callable[[], Any], **extra: Any) -> dict[str, Any]:
        result: list[Any] = []
        totals, calls = _timed(lambda: result.append(call()), s.synchronize, repeat)
        dev = d if result[-1] is None else result[-1]
        return _row(case, "H2D", nbytes, totals, calls, arrived(dev), **extra)

    def d2h(case: str, dst: np.ndarray, **extra: Any) -> dict[str, Any]:
        dst[:] = 0
        totals, calls = _timed(lambda: rs.copy_async(dst, d, stream=s), s.synchronize, repeat)
        return _row(case, "D2H", nbytes, totals, calls, bool(np.array_equal(dst, host)),
                    **extra)

    cfg = (f"chunk {rs.config().staging_chunk_bytes / (1 << 20):g} MiB, "
           f"{rs.config().staging_threads} threads")
    rows = [h2d(f"rocmstreams to_device, staged ({cfg})",
                lambda: rs.to_device(host, stream=s), target="staged_to_device"),
            h2d(f"rocmstreams copy_async, staged ({cfg})", lambda: rs.copy_async(d, host,
                                                                                stream=s))]
    with _staging(MIN_STAGED_BYTES=1 << 62):
        rows.append(h2d("rocmstreams copy_async, direct (runtime's pageable copy)",
                        lambda: rs.copy_async(d, host, stream=s)))
    pinned[:] = host
    rows.append(h2d("rocmstreams copy_async from pinned_empty", lambda: rs.copy_async(
        d, pinned, stream=s)))
    if sweep:
        for chunk in _common.progress((2, 4, 8, 16, 32), "H2D sweep, chunk sizes"):
            for threads in (1, 2, 4, 8):
                with _staging(CHUNK_BYTES=chunk << 20, THREADS=threads):
                    rows.append(h2d(f"  sweep: staged, chunk {chunk} MiB, {threads} threads",
                                    lambda: rs.copy_async(d, host, stream=s),
                                    chunk_mib=chunk, threads=threads))
    rs.copy_async(d, pinned, stream=s)
    s.synchronize()
    rows.append(d2h("rocmstreams copy_async to pageable, direct", out))
    with _staging(STAGE_D2H=True):
        rows.append(d2h(f"rocmstreams copy_async to pageable, staged ({cfg})", out))
        if sweep:
            for chunk in _common.progress((4, 8, 16), "D2H sweep, chunk sizes"):
                for threads in (1, 2, 4, 8):
                    with _staging(CHUNK_BYTES=chunk << 20, THREADS=threads):
                        rows.append(d2h(f"  sweep: staged D2H, chunk {chunk} MiB, "
                                        f"{threads} threads", out, chunk_mib=chunk,
                                        threads=threads))
    rows.append(d2h("rocmstreams copy_async to pinned_empty", back))
    s.close()
    staging.free_buffers()
    return rows


def numba_rows(host: np.ndarray, repeat: int) -> list[dict[str, Any]]:
    from numba import cuda
    s = cuda.stream()
    d = cuda.device_array(host.shape, host.dtype)
    out = np.zeros_like(host)
    nbytes = host.nbytes
    result: list[Any] = []
    totals, calls = _timed(lambda: result.append(cuda.to_device(host)), cuda.synchronize,
                           repeat)
    rows = [_row("numba-cuda cuda.to_device", "H2D", nbytes, totals, calls,
                 bool(np.array_equal(result[-1].copy_to_host(), host)), target="numba_to_device")]
    result.clear()
    totals, calls = _timed(lambda: d.copy_to_device(host, stream=s), s.synchronize, repeat)
    rows.append(_row("numba-cuda copy_to_device(stream=s)", "H2D", nbytes, totals, calls,
                     bool(np.array_equal(d.copy_to_host(), host))))
    totals, calls = _timed(lambda: d.copy_to_host(out), cuda.synchronize, repeat)
    rows.append(_row("numba-cuda copy_to_host to pageable", "D2H", nbytes, totals, calls,
                     bool(np.array_equal(out, host))))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=float, default=None,
                        help="MiB per copy (default 256; 16 on cpu; 4 smoke)")
    parser.add_argument("--repeat", type=int, default=None, help="default 5; 2 smoke")
    parser.add_argument("--no-sweep", action="store_true", help="skip the chunk x thread sweep")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--smoke", action="store_true", help="small sizes, no sweep")
    args = parser.parse_args(argv)

    import rocmstreams as rs
    env = _common.environment()
    on_cpu = env["backend"] == "cpu"
    size = args.size_mib if args.size_mib is not None else (
        4 if args.smoke else 16 if on_cpu else 256)
    repeat = args.repeat or (2 if args.smoke else 5)
    sweep = not (args.no_sweep or args.smoke or on_cpu)
    nbytes = int(size * (1 << 20)) // 8 * 8
    if args.smoke:  # several chunks even for a small copy
        rs.configure(staging_chunk_bytes=max(nbytes // 6, 4096))
    host = np.random.default_rng().standard_normal(nbytes // 8)  # pageable, pages touched

    gil = gil_probe(min(nbytes, 64 << 20))
    rows = host_copy_rows(min(nbytes, 64 << 20), repeat)
    rows += rocmstreams_rows(host, repeat, sweep)
    if on_cpu:
        rows.append(_common.missing_row("numba-cuda", "numba.cuda is the CPU simulator on the "
                                        "cpu backend", case="numba-cuda"))
    else:
        _, reason = _common.import_peer("numba.cuda")
        try:
            rows += numba_rows(host, repeat) if reason is None else [
                _common.missing_row("numba-cuda", reason, case="numba-cuda")]
        except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
            rows.append({"case": "numba-cuda", "error": f"{type(exc).__name__}: {exc}"})

    by_target = {r.get("target"): r for r in rows if r.get("target")}
    targets = []
    if not on_cpu and {"staged_to_device", "numba_to_device"} <= by_target.keys():
        ours, theirs = by_target["staged_to_device"], by_target["numba_to_device"]
        ratio = ours["gbps"] / theirs["gbps"]
        targets.append({"name": "staged to_device vs numba-cuda to_device, pageable",
                        "threshold": TARGET_RATIO, "value": ratio, "met": ratio >= TARGET_RATIO})
    failures = [r for r in rows if r.get("error") or r.get("verified") is False]

    print(f"backend {env['backend']}, device {env['device']}, numpy {env['numpy']}, "
          f"{env['cpus']} cpus")
    print(f"np.copyto releases the GIL: {'yes' if gil['releases_gil'] else 'NO'} (a Python "
          f"thread ran at {gil['spin_rate_ratio']:.0%} of its idle speed during copies)")
    print(f"copies of {nbytes / (1 << 20):g} MiB from/to a pageable numpy array; best of "
          f"{repeat}; call ms = until the call returned, ms = until synchronized")
    _common.print_table("", [("case", "case", ""), ("kind", "", ""), ("gbps", "GB/s", ".2f"),
                             ("time_ms", "ms", ".3f"), ("call_ms", "call ms", ".3f"),
                             ("verified", "ok", "")], rows)
    for t in targets:
        print(f"target: {t['name']} >= {t['threshold']}x: {t['value']:.2f}x -> "
              f"{'MET' if t['met'] else 'NOT MET'}")
    for r in failures:
        print(f"FAILURE: {r['case']}: {r.get('error') or 'result does not match the source'}",
              file=sys.stderr)
    if args.json:
        _common.write_json(args.json, {
            "benchmark": "staged_copies", "environment": env, "size_mib": size,
            "repeat": repeat, "statistic": "best", "gil": gil,
            "defaults": dataclasses.asdict(rs.config()),
            "rows": rows, "targets": targets, "ok": not failures})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
