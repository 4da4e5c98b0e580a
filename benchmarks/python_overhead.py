"""rocmstreams' own Python cost of stream calls, old tree against new, with no GPU.

The cuda backend runs over a fake ``cuda.bindings.runtime``: the real module's enums and handle
types where cuda-bindings is installed (a pure-Python stand-in otherwise), and functions that
answer success at once. What is left of a call is rocmstreams' Python around the runtime call,
the part ``benchmarks/overhead.py`` cannot separate on a GPU. Figures, each the best mean over
``--repeat`` runs of ``--calls`` calls, per process; processes of the two trees alternate for
``--rounds`` rounds and each tree's figure is its best round:

- ``create + close``: ``RocmStream(non_blocking=True).close()``, the stream from the pool
- ``query``: ``s.query()`` on an idle stream
- ``synchronize``: ``s.synchronize()`` on an idle stream
- ``event record``: ``ev.record(s)``

    python benchmarks/python_overhead.py --old 595eae1 [--new .] [--rounds 4] [--json PATH]

``--old`` and ``--new`` are source trees (a folder holding ``rocmstreams/``) or git revisions of
this repository, exported to a temporary folder.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable

import _offline

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("create + close", "query", "synchronize", "event record")


# ---- the fake binding ----------------------------------------------------------------------------
def fake_runtime() -> types.ModuleType:
    """A ``cuda.bindings.runtime`` whose calls succeed at once (one device, priorities 0..-5)."""
    try:
        from cuda.bindings import runtime as real  # type: ignore[import-untyped, unused-ignore]
    except Exception:  # noqa: BLE001 - no cuda-bindings: stand-ins
        real = None
    fake = types.ModuleType("cuda.bindings.runtime")
    if real is not None:
        for name in dir(real):
            if not name.startswith("cuda") or not callable(getattr(real, name)) or \
                    isinstance(getattr(real, name), type):
                setattr(fake, name, getattr(real, name))
    else:
        import enum
        names = ["cudaSuccess", "cudaErrorMemoryAllocation", "cudaErrorInvalidDevice",
                 "cudaErrorNotReady"] + [f"cudaError{n}" for n in (
                     "StreamCaptureUnsupported", "StreamCaptureInvalidated",
                     "StreamCaptureMerge", "StreamCaptureUnmatched", "StreamCaptureUnjoined",
                     "StreamCaptureIsolation", "StreamCaptureImplicit", "CapturedEvent",
                     "StreamCaptureWrongThread")]
        values = [0, 2, 101, 600] + list(range(900, 909))
        fake.cudaError_t = enum.IntEnum("cudaError_t", dict(zip(names, values)))
        fake.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyDefault=4)
        fake.cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeGlobal=0)
        fake.cudaStreamCaptureStatus = types.SimpleNamespace(cudaStreamCaptureStatusNone=0)
        for name, value in (("cudaStreamNonBlocking", 1), ("cudaEventDisableTiming", 2),
                            ("cudaHostAllocMapped", 2), ("cudaHostAllocPortable", 1),
                            ("cudaStreamLegacy", 1)):
            setattr(fake, name, value)

        class Handle:
            __slots__ = ("value",)

            def __init__(self, value: int = 0) -> None:
                self.value = int(value)

            def __int__(self) -> int:
                return self.value

        fake.cudaStream_t = fake.cudaEvent_t = Handle
    ok = (fake.cudaError_t.cudaSuccess,)
    handles = iter(range(0x10000, 1 << 40, 0x100))

    def succeed(*args: Any) -> tuple:
        return ok

    def new_handle(*args: Any) -> tuple:
        return ok + (next(handles),)

    def error_text(code: Any) -> tuple:
        return ok + (b"fakeError",)

    calls: dict[str, Callable[..., tuple]] = {
        "cudaGetDeviceCount": lambda: ok + (1,), "cudaGetDevice": lambda: ok + (0,),
        "cudaDeviceGetStreamPriorityRange": lambda: ok + (0, -5),
        "cudaRuntimeGetVersion": lambda: ok + (12080,),
        "cudaDriverGetVersion": lambda: ok + (12080,),
        "cudaStreamCreateWithPriority": new_handle, "cudaEventCreateWithFlags": new_handle,
        "cudaGetErrorName": error_text, "cudaGetErrorString": error_text,
        "cudaStreamIsCapturing": lambda stream: ok + (0,),
    }
    for name in ("SetDevice", "StreamQuery", "StreamSynchronize", "StreamDestroy",
                 "StreamWaitEvent", "EventRecord", "EventQuery", "EventSynchronize",
                 "EventDestroy"):
        calls.setdefault("cuda" + name, succeed)
    for name, fn in calls.items():
        setattr(fake, name, fn)
    return fake


def fake_numba() -> dict[str, types.ModuleType]:
    """A ``numba.cuda`` just big enough for backend selection (no kernel is launched)."""
    numba, cuda = types.ModuleType("numba"), types.ModuleType("numba.cuda")
    numba.__path__, cuda.__path__ = [], []  # type: ignore[attr-defined]

    class Dispatcher:
        def __init__(self, fn: Callable[..., Any]) -> None:
            self.py_func = fn

        def __getitem__(self, config: Any) -> Any:
            raise NotImplementedError("the fake numba.cuda launches nothing")

    def is_available() -> bool:
        return True

    cuda.jit = Dispatcher  # type: ignore[attr-defined]
    cuda.is_available = is_available  # type: ignore[attr-defined]
    cuda.external_stream = lambda handle: ("stream", handle)  # type: ignore[attr-defined]
    cuda.legacy_default_stream = lambda: ("stream", 0)  # type: ignore[attr-defined]
    cuda.per_thread_default_stream = lambda: ("stream", 2)  # type: ignore[attr-defined]
    numba.cuda = cuda  # type: ignore[attr-defined]
    return {"numba": numba, "numba.cuda": cuda}


def install_fakes() -> None:
    runtime = fake_runtime()
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.__path__, bindings.__path__ = [], []  # type: ignore[attr-defined]
    cuda.bindings, bindings.runtime = bindings, runtime  # type: ignore[attr-defined]
    modules = {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": runtime,
               **fake_numba()}
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    sys.modules.update(modules)
    # numba-cuda's import redirector would look for the real numba.cuda behind the fake one
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not type(f).__module__.startswith("_numba_cuda_redirector")]


# ---- one process: one tree ---------------------------------------------------------------------
def per_call_us(fn: Callable[[], Any], calls: int, repeat: int) -> float:
    return _offline.best_per_call(fn, calls, repeat, unit=1e6)


def child(tree: str, calls: int, repeat: int, profile: str | None) -> None:
    os.environ["ROCMSTREAMS_BACKEND"] = "cuda"
    # the handles are fake: never hand them to a real driver (the compiled calls would, where
    # libcuda.so.1 loads); benchmarks/hot_calls_offline.py measures the compiled path
    os.environ["ROCMSTREAMS_NATIVE_CALLS"] = "0"
    install_fakes()
    sys.path.insert(0, tree)
    import rocmstreams as rs
    if not Path(rs.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"rocmstreams imported from {rs.__file__}, not from {tree}")
    s = rs.RocmStream(non_blocking=True)
    ev = rs.Event()
    figures: dict[str, Callable[[], Any]] = {
        "create + close": lambda: rs.RocmStream(non_blocking=True).close(),
        "query": s.query,
        "synchronize": s.synchronize,
        "event record": lambda: ev.record(s),
    }
    if profile:
        import cProfile
        import pstats
        fn = figures[profile]
        fn()
        with cProfile.Profile() as prof:
            for _ in range(calls):
                fn()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        return
    result = {name: per_call_us(fn, calls, repeat) for name, fn in figures.items()}
    ev.close()
    s.close()
    print(json.dumps(result))


# ---- the parent: alternate the trees ---------------------------------------------------------
def tree_of(spec: str, workdir: Path) -> str:
    """A folder holding ``rocmstreams/``: ``spec`` itself, or the git revision exported."""
    path = Path(spec)
    if (path / "rocmstreams" / "__init__.py").exists():
        return str(path.resolve())
    out = workdir / spec.replace("/", "_")
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", spec], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return str(out)


def run_child(tree: str, calls: int, repeat: int, profile: str | None = None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", tree, "--calls", str(calls),
           "--repeat", str(repeat)] + (["--profile", profile] if profile else [])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"the run of {tree} failed:\n{done.stdout}{done.stderr}")
    if profile:
        print(done.stderr)
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="595eae1", help="tree or git revision (595eae1)")
    parser.add_argument("--new", default=str(ROOT), help="tree or git revision (this tree)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--profile", choices=FIGURES,
                        help="cProfile one figure on each tree instead of timing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls, args.repeat, args.profile)
        return 0
    with tempfile.TemporaryDirectory(prefix="rocmstreams-pyoverhead-") as tmp:
        trees = {"old": tree_of(args.old, Path(tmp)), "new": tree_of(args.new, Path(tmp))}
        if args.profile:
            for label, tree in trees.items():
                print(f"==== {label}: {tree}")
                run_child(tree, args.calls, args.repeat, args.profile)
            return 0
        best: dict[str, dict[str, float]] = {label: {} for label in trees}
        for i in range(args.rounds):
            order = list(trees) if i % 2 == 0 else list(trees)[::-1]
            for label in order:
                for name, value in run_child(trees[label], args.calls, args.repeat).items():
                    best[label][name] = min(value, best[label].get(name, float("inf")))
    print(f"rocmstreams Python cost per call over a fake runtime, us (best of {args.rounds} "
          f"alternating rounds); old={args.old} new={args.new}")
    print(f"  {'figure':16s} {'old':>8s} {'new':>8s} {'new/old':>8s}")
    for name in FIGURES:
        old, new = best["old"][name], best["new"][name]
        print(f"  {name:16s} {old:8.3f} {new:8.3f} {new / old:8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "python_overhead", "old": args.old,
                                               "new": args.new, "figures": best}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
