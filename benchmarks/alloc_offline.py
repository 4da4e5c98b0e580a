"""The stream-ordered allocation path without a GPU: ``rs.empty(n, np.float32, stream=s)`` and
``rs.to_device(small, stream=s)``, each dropped at once (the next call's drain frees it), through
the cuda backend over a fake runtime whose calls do nothing.

The cuda backend is selected over the fake ``cuda.bindings.runtime`` of ``python_overhead.py``,
given a memory pool: ``cudaMallocAsync`` hands out a fresh address, ``cudaFreeAsync`` and
``cudaMemcpyAsync`` succeed at once. The compiled calls take their entry points from a tiny library
of no-op driver calls built here with gcc (as in ``hot_path_offline.py``; no fake handle ever
reaches a real driver), ``cuMemAllocAsync`` and ``cuMemFreeAsync`` among them. What is left of
each figure is rocmstreams' Python between the user's call and the runtime's calls:

- ``empty + drop``: ``rs.empty(1 << 20, np.float32, stream=s)``, dropped; its free is queued
  by the finalizer and made by the next call's drain
- ``to_device + drop``: ``rs.to_device(np.ones(16, np.float32), stream=s)``, dropped
- ``floor``: the pool calls alone, one allocation and its free as the backend makes them (the
  compiled calls where they are in use, else the fake binding's calls)

    python benchmarks/alloc_offline.py [--calls N] [--repeat R] [--json PATH]
                                       [--profile FIGURE] [--python-path] [--smoke]

Each figure is the best mean of ``--repeat`` loops of ``--calls`` calls. ``--python-path`` runs
with ``ROCMSTREAMS_NATIVE_CALLS=0`` (the extension left out: every call through the binding).
"""
from __future__ import annotations

import ctypes
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import _offline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

NOOPS = """\
#include <stddef.h>
static unsigned long long next = 0x7f0000000000ULL;
int cuStreamQuery(void *s) { return 0; }
int cuStreamSynchronize(void *s) { return 0; }
int cuEventRecord(void *e, void *s) { return 0; }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shm, void *s, void **params, void **extra) { return 0; }
int cuMemAllocAsync(unsigned long long *p, size_t n, void *s) { *p = next; next += 256; return 0; }
int cuMemFreeAsync(unsigned long long p, void *s) { return 0; }
"""
FIGURES = ("empty + drop", "to_device + drop", "floor")
N = 1 << 20


def noop_library(workdir: Path) -> Path:
    return _offline.build_library(workdir, NOOPS)


def give_pools(runtime: Any) -> None:
    """Stream-ordered memory on the fake runtime: a pool per device, fresh addresses."""
    ok = (runtime.cudaError_t.cudaSuccess,)
    addresses = itertools.count(0x7e00_0000_0000, 256)
    calls: dict[str, Callable[..., tuple]] = {
        "cudaDeviceGetAttribute": lambda attr, device: ok + (1,),
        "cudaDeviceGetDefaultMemPool": lambda device: ok + (0x5000,),
        "cudaMemPoolSetAttribute": lambda pool, attr, value: ok,
        "cudaMemPoolGetAttribute": lambda pool, attr: ok + (0,),
        "cudaMemPoolTrimTo": lambda pool, keep: ok,
        "cudaMallocAsync": lambda nbytes, stream: ok + (next(addresses),),
        "cudaFreeAsync": lambda ptr, stream: ok,
        "cudaMemcpyAsync": lambda dst, src, nbytes, kind, stream: ok,
    }
    for name, fn in calls.items():
        setattr(runtime, name, fn)


def setup(lib: Path) -> dict[str, Callable[[], Any]]:
    os.environ["ROCMSTREAMS_BACKEND"] = "cuda"
    import python_overhead
    python_overhead.install_fakes()
    give_pools(sys.modules["cuda.bindings.runtime"])
    import numpy as np

    import rocmstreams as rs
    from rocmstreams.backends import active, cuda, native
    # the compiled calls' entry points come from the no-op library, never from libcuda
    cuda._driver_library = lambda: ctypes.CDLL(str(lib))
    be = active()
    if not native.allowed_by_environment():
        assert not be.native_calls
    elif native.built():
        assert be.native_calls, "the compiled calls are not in use"
    s = rs.RocmStream(non_blocking=True)
    small = np.ones(16, np.float32)
    handle = s.handle

    def empty() -> None:
        rs.empty(N, np.float32, stream=s)

    def to_device() -> None:
        rs.to_device(small, stream=s)

    def floor() -> None:
        be.free_async(be.malloc_async(N * 4, handle, 0), N * 4, handle, 0)

    rs.empty(N, np.float32, stream=s)
    assert rs.memory_stats()["allocations"] == 1
    return {"empty + drop": empty, "to_device + drop": to_device, "floor": floor}


def _all_freed() -> None:
    import rocmstreams as rs
    stats = rs.memory_stats()
    if stats["allocations"] - stats["frees"] > 1 or stats["pending_releases"] > 1:
        raise SystemExit(f"allocations were not freed: {stats}")


def main() -> int:
    args = _offline.arguments(__doc__.splitlines()[0], FIGURES, 100_000)
    result = _offline.measure(args, "rocmstreams-alloc-", noop_library, setup, _all_freed, 25)
    if result is None:
        return 0
    path = "pure Python (ROCMSTREAMS_NATIVE_CALLS=0)" if args.python_path else "compiled calls"
    print(f"allocation path over a no-op pool, {path}: ns per call, best of {args.repeat} x "
          f"{args.calls}")
    for name, ns in result.items():
        print(f"  {name:18s} {ns:8.1f}")
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({"benchmark": "alloc_offline", "path": path,
                                               "ns": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
