"""Command line: ``python -m rocmstreams info`` and ``python -m rocmstreams demo``."""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import numpy as np


def info() -> int:
    """Print the backend, its devices, priority range and versions."""
    import rocmstreams as rs

    be = rs.backend()
    from rocmstreams.backends import PROBES
    print(f"backend: {be.name}")
    for name, why in PROBES.items():
        print(f"  not {name}: {why}")
    for dev in be.devices:
        least, greatest = dev.priority_range
        print(f"device {dev.ordinal}: {dev.name}; "
              f"stream priorities {greatest} (highest) .. {least} (lowest)")
    for name, version in be.versions.items():
        print(f"{name}: {version}")
    print(f"native calls: {_native_calls(rs, be)}")
    print(f"rocmstreams: {rs.__version__}")
    return 0


def _native_calls(rs: Any, be: Any) -> str:
    """Whether the compiled hot calls are in use, and if not, why."""
    from rocmstreams.backends import native
    if be.native_calls:
        return "in use (stream query, synchronize, event record and launches from compiled code)"
    if not native.built():
        return ("not in use: the compiled layer was not built at install (no C compiler or "
                "Python headers); every call goes through the Python binding")
    if be.name == "cpu":
        return "not in use: the cpu backend makes no runtime calls"
    if not rs.config().native_calls:
        return "off (rocmstreams.configure(native_calls=False) or ROCMSTREAMS_NATIVE_CALLS=0)"
    return "not in use: the runtime library lacks one of the calls it makes"


def demo(n: int | None, streams: int, chunks: int, plot: str | None = None,
         trace_path: str | None = None) -> int:
    """A multi-stream pipeline: H2D, saxpy, D2H per chunk, checked against numpy; with
    ``plot`` / ``trace_path``, its timeline as a PNG and a Chrome trace."""
    import contextlib

    import rocmstreams as rs
    from rocmstreams.kernels import saxpy

    be = rs.backend()
    if n is None:
        n = (1 << 16) if be.name == "cpu" else (1 << 26)
    chunk = -(-n // chunks)
    rng = np.random.default_rng()
    x = rs.pinned_empty(n, np.float32)
    y = rs.pinned_empty(n, np.float32)
    out = rs.pinned_empty(n, np.float32)
    x[:] = rng.random(n, dtype=np.float32)
    y[:] = rng.random(n, dtype=np.float32)
    out[:] = np.nan
    a = np.float32(rng.uniform(0.5, 2.0))
    pool = [rs.RocmStream(non_blocking=True) for _ in range(streams)]
    blocks, threads = (4, 32) if be.name == "cpu" else (1024, 256)
    dev = [(rs.empty(chunk, np.float32), rs.empty(chunk, np.float32), rs.empty(chunk, np.float32))
           for _ in range(streams)]
    # compile and load saxpy before the clock starts: its first launch would otherwise do it,
    # and on a GPU that load waits for every stream of the device (README: "Kernel loading
    # waits for the device")
    t0 = time.perf_counter()
    d0 = dev[0][0]
    rs.prepare(saxpy, d0, a, d0, d0)
    prepared_ms = (time.perf_counter() - t0) * 1e3
    tracing = rs.trace() if (plot or trace_path) else contextlib.nullcontext()
    start = time.perf_counter()
    with tracing as t:
        _queue(rs, saxpy, pool, dev, x, y, out, a, n, chunk, chunks, blocks, threads)
        busy = [not s.query() for s in pool]
        for s in pool:
            s.synchronize()
    elapsed = time.perf_counter() - start
    ref = a * x.astype(np.float64) + y
    err = float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-30))
    ok = bool(np.all(np.isfinite(out))) and err < 1e-6
    moved = 3 * n * 4
    print(f"backend {be.name}, device {be.device_name(pool[0].device)}")
    print(f"pipeline: {n} float32 in {chunks} chunks over {streams} streams "
          f"(H2D x2, saxpy, D2H per chunk)")
    print(f"streams busy right after queueing: {sum(busy)} of {streams}")
    link = ("simulated: the cpu backend's copies are host memcpys, not a link"
            if be.name == "cpu" else "over the link")
    print(f"saxpy compiled and loaded ahead with rs.prepare: {prepared_ms:.1f} ms (not timed)")
    print(f"time {elapsed * 1e3:.2f} ms, {moved / elapsed / 1e9:.3f} GB/s {link}")
    if t is not None:
        summary = t.summary()
        print(f"trace: {summary['operations']} operations on {summary['streams']} streams, "
              f"{summary['overlap_fraction']:.0%} of the time two or more streams ran at once")
        if trace_path:
            t.save(trace_path)
            print(f"wrote {trace_path} (Chrome trace: open it in https://ui.perfetto.dev)")
        if plot:
            import matplotlib
            matplotlib.use("Agg")
            t.plot().savefig(plot, dpi=120, bbox_inches="tight")
            print(f"wrote {plot}")
    print(f"max relative error vs numpy: {err:.2e} -> {'OK' if ok else 'MISMATCH'}")
    for s in pool:
        s.close()
    return 0 if ok else 1


def _queue(rs: Any, saxpy: Any, pool: list, dev: list, x: np.ndarray, y: np.ndarray,
           out: np.ndarray, a: np.float32, n: int, chunk: int, chunks: int, blocks: int,
           threads: int) -> None:
    for c in range(chunks):
        lo, hi = c * chunk, min(n, (c + 1) * chunk)
        if lo >= hi:
            break
        s = pool[c % len(pool)]
        dx, dy, dout = (d[:hi - lo] for d in dev[c % len(pool)])
        rs.copy_async(dx, x[lo:hi], stream=s)
        rs.copy_async(dy, y[lo:hi], stream=s)
        saxpy[blocks, threads, s](dout, a, dx, dy)
        rs.copy_async(out[lo:hi], dout, stream=s)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    import rocmstreams as rs

    parser = argparse.ArgumentParser(prog="python -m rocmstreams",
                                     description="rocmstreams: GPU streams for Numba kernels")
    parser.add_argument("--version", action="version", version=f"rocmstreams {rs.__version__}")
    parser.add_argument("--backend", choices=rs.BACKENDS,
                        help="the backend to use (else ROCMSTREAMS_BACKEND, else automatic)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="backend, devices, priority range, versions")
    d = sub.add_parser("demo", help="multi-stream H2D, kernel, D2H pipeline checked vs numpy")
    d.add_argument("--n", type=_positive, default=None, help="elements (default: by backend)")
    d.add_argument("--streams", type=_positive, default=4, help="streams (default 4)")
    d.add_argument("--chunks", type=_positive, default=16, help="chunks (default 16)")
    d.add_argument("--plot", metavar="PNG", help="write the pipeline's timeline here")
    d.add_argument("--trace", metavar="JSON", help="write its Chrome trace here")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.backend:
        os.environ["ROCMSTREAMS_BACKEND"] = args.backend
    try:
        if args.command == "info":
            return info()
        return demo(args.n, args.streams, args.chunks, args.plot, args.trace)
    except rs.RocmStreamsError as exc:
        print(f"rocmstreams: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
