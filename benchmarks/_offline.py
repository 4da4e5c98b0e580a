"""What the offline benchmarks share (``hot_path_offline.py``, ``alloc_offline.py``): the best
per-call time of a loop, and the command line that times (or profiles) a set of figures made
over a no-op C library, with no GPU."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

Figures = dict[str, Callable[[], Any]]


def build_library(workdir: Path, source: str) -> Path:
    """``source`` (C: no-op driver functions) built into a shared library in ``workdir``."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("no C compiler (gcc or cc) for the no-op driver library")
    src, lib = workdir / "noop_driver.c", workdir / "libnoop_driver.so"
    src.write_text(source)
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def best_per_call(fn: Callable[[], Any], calls: int, repeat: int, unit: float = 1e9) -> float:
    """The best over ``repeat`` loops of ``calls`` calls of ``fn``, per call, in seconds times
    ``unit`` (1e9: ns); one call first, outside the timing."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls * unit)
    return best


def arguments(description: str, figures: tuple[str, ...], calls: int) -> argparse.Namespace:
    """The offline benchmarks' shared options (``--calls``, ``--repeat``, ``--json``,
    ``--profile FIGURE``, ``--smoke``, ``--python-path``); ``--python-path`` sets
    ROCMSTREAMS_NATIVE_CALLS=0 before rocmstreams is imported."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--calls", type=int, default=calls)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--profile", choices=figures, help="cProfile one figure instead")
    parser.add_argument("--smoke", action="store_true", help="few calls (a check that it runs)")
    parser.add_argument("--python-path", action="store_true",
                        help="ROCMSTREAMS_NATIVE_CALLS=0: the binding makes every call")
    args = parser.parse_args()
    if args.python_path:
        os.environ["ROCMSTREAMS_NATIVE_CALLS"] = "0"
    if args.smoke:
        args.calls, args.repeat = 2000, 1
    return args


def measure(args: argparse.Namespace, prefix: str, library: Callable[[Path], Path],
            setup: Callable[[Path], Figures], after: Callable[[], None] | None = None,
            lines: int = 20) -> dict[str, float] | None:
    """Build the no-op ``library`` in a temporary directory, make the figures over it, and
    time each (ns per call); with ``--profile``, print a cProfile of that one figure and return
    None. ``after`` runs while the library is still loaded (checks on what the figures did)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        figures = setup(library(Path(tmp)))
        if args.profile:
            import cProfile
            import pstats
            fn = figures[args.profile]
            with cProfile.Profile() as prof:
                for _ in range(args.calls):
                    fn()
            pstats.Stats(prof).sort_stats("tottime").print_stats(lines)
            return None
        result = {name: best_per_call(fn, args.calls, args.repeat)
                  for name, fn in figures.items()}
        if after is not None:
            after()
        return result
