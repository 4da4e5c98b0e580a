"""Command line: ``python -m rocmstreams info`` and ``python -m rocmstreams demo``."""
from __future__ import annotations

import argparse
import sys
import time

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
    print(f"rocmstreams: {rs.__version__}")
    return 0


def demo(n: int | None, streams: int, chunks: int) -> int:
    """A multi-stream pipeline: H2D, saxpy, D2H per chunk, checked against numpy."""
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
    start = time.perf_counter()
    for c in range(chunks):
        lo, hi = c * chunk, min(n, (c + 1) * chunk)
        if lo >= hi:
            break
        s = pool[c % streams]
        dx, dy, dout = (d[:hi - lo] for d in dev[c % streams])
        rs.copy_async(dx, x[lo:hi], stream=s)
        rs.copy_async(dy, y[lo:hi], stream=s)
        saxpy[blocks, threads, s](dout, a, dx, dy)
        rs.copy_async(out[lo:hi], dout, stream=s)
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
    print(f"time {elapsed * 1e3:.2f} ms, {moved / elapsed / 1e9:.3f} GB/s over the link")
    print(f"max relative error vs numpy: {err:.2e} -> {'OK' if ok else 'MISMATCH'}")
    for s in pool:
        s.close()
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rocmstreams")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="backend, devices, priority range, versions")
    d = sub.add_parser("demo", help="multi-stream H2D, kernel, D2H pipeline checked vs numpy")
    d.add_argument("--n", type=int, default=None, help="elements (default: by backend)")
    d.add_argument("--streams", type=int, default=4)
    d.add_argument("--chunks", type=int, default=16)
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    return demo(args.n, args.streams, args.chunks)


if __name__ == "__main__":
    sys.exit(main())
