"""Command line: ``python -m rocmstreams info`` and ``python -m rocmstreams demo``."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

#: The environment before any backend was chosen (loading the cpu backend changes it).
_ENVIRONMENT_AT_START = dict(os.environ)


def info(requested: str | None = None) -> int:
    """Print the backend and why it was taken, why each other backend was not, the devices,
    priority range and versions. ``requested``: what forced the backend (``--backend cpu``,
    ``ROCMSTREAMS_BACKEND=cpu``), or None where selection was automatic."""
    import rocmstreams as rs
    from rocmstreams.backends import BACKENDS, PROBES

    be = rs.backend()
    print(f"backend: {be.name}")
    if requested is None:
        for name, why in PROBES.items():
            print(f"  not {name}: {why}")
        print(f"  taken: the first that loaded in the order {', '.join(BACKENDS)}")
    else:
        print(f"  taken: requested by {requested}")
        for name, reason in _probe_others([b for b in BACKENDS if b != be.name]):
            print(f"  {name}: loads here too (not requested)" if reason is None
                  else f"  not {name}: {reason}")
    for dev in be.devices:
        least, greatest = dev.priority_range
        print(f"device {dev.ordinal}: {dev.name}; "
              f"stream priorities {greatest} (highest) .. {least} (lowest)")
    for name, version in be.versions.items():
        print(f"{name}: {version}")
    print(f"native calls: {_native_calls(rs, be)}")
    print(f"rocmstreams: {rs.__version__}")
    return 0


PROBE_SECONDS = 120


def _probe_others(names: list[str]) -> list[tuple[str, str | None]]:
    """``(name, None)`` for each backend that loads, else ``(name, why not)``; each probed in a
    process of its own, side by side (a backend loaded beside the chosen one could change it:
    the cpu backend puts numba.cuda in simulator mode)."""
    # the environment as the command found it: loading the cpu backend sets
    # NUMBA_ENABLE_CUDASIM here, which would make a cuda probe see numba's simulator
    env = {k: v for k, v in _ENVIRONMENT_AT_START.items() if k != "ROCMSTREAMS_BACKEND"}
    children = [(name, subprocess.Popen(
        [sys.executable, "-c", f"from rocmstreams.__main__ import probe; probe({name!r})"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env))
        for name in names]
    found: list[tuple[str, str | None]] = []
    for name, child in children:
        try:
            out, _ = child.communicate(timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            found.append((name, f"its probe did not answer within {PROBE_SECONDS} s"))
            continue
        last = (out.strip().splitlines() or [""])[-1]
        if last == "loads":
            found.append((name, None))
        else:
            found.append((name, last.removeprefix("not: ") or
                          f"its probe ended with exit status {child.returncode}"))
    return found


def probe(name: str) -> None:
    """Print ``loads``, or ``not: <why>``: whether the backend ``name`` loads in this process
    (the child :func:`info` starts for each backend it did not take)."""
    import importlib

    from rocmstreams.errors import BackendUnavailableError
    try:
        importlib.import_module(f"rocmstreams.backends.{name}").load()
    except Exception as exc:  # noqa: BLE001 - every failure is the backend's reason
        why = str(exc) if isinstance(exc, BackendUnavailableError) else (
            f"the {name} probe failed: {type(exc).__name__}: {exc}")
        print("not: " + " ".join(why.split()))
    else:
        print("loads")


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
    sub.add_parser("info", help="backend and why it was taken, the others, devices, versions")
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
    if args.command == "demo":
        problem = _output_problem("--plot", args.plot) or _output_problem("--trace", args.trace)
        if problem:  # before anything runs: the pipeline is not run for nothing
            print(f"rocmstreams: {problem}", file=sys.stderr)
            return 2
    requested = None
    if args.backend:
        os.environ["ROCMSTREAMS_BACKEND"] = args.backend
        requested = f"--backend {args.backend}"
    elif os.environ.get("ROCMSTREAMS_BACKEND", "").strip():
        requested = f"ROCMSTREAMS_BACKEND={os.environ['ROCMSTREAMS_BACKEND'].strip()}"
    try:
        if args.command == "info":
            return info(requested)
        return demo(args.n, args.streams, args.chunks, args.plot, args.trace)
    except rs.RocmStreamsError as exc:
        print(f"rocmstreams: {exc}", file=sys.stderr)
        return 1


def _output_problem(option: str, path: str | None) -> str | None:
    """Why the demo could not write ``path`` (one line naming the option and what to do), or
    None where it can."""
    if path is None:
        return None
    if option == "--plot":
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            return (f"--plot needs matplotlib, which is not installed: pip install matplotlib "
                    f"(or rocmstreams[trace]), or leave --plot out")
    if os.path.isdir(path):
        return f"{option} {path} is a folder; give a file name in it"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        return (f"{option} {path}: the folder {folder} does not exist; create it "
                f"(mkdir -p {folder}) or give a path in an existing folder")
    if not os.path.isdir(folder):
        return (f"{option} {path}: {folder} is a file, not a folder; give a path in an "
                f"existing folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"{option} {path}: the folder {folder} is not writable; give a path in a "
                f"folder you can write to")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{option} {path}: the file is not writable; remove it or give another path"
    return None


if __name__ == "__main__":
    sys.exit(main())
