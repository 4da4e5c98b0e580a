"""Chunked H2D, kernel, D2H over 1..8 streams: rocmstreams beside CuPy and PyTorch streams.

Each library runs the same pipeline: arrays ``x``, ``y`` and ``out`` (float32, ``--size-mib``
each) in page-locked host memory, cut into ``--chunks`` chunks; chunk ``c`` goes to stream
``c % streams``: copy its ``x`` and ``y`` to the device, ``out = a * x + y`` (saxpy: a numba
kernel on a RocmStream, a ``cp.ElementwiseKernel`` under ``with stream``, ``torch.add(..., alpha)``
under ``torch.cuda.stream``), copy its ``out`` back. Every library's output is checked against
numpy; a mismatch is reported and makes the exit status 1.

Figures (best of ``--repeat`` runs, host ``time.perf_counter`` from queueing the first chunk to
the end of the synchronize of every stream, the same for every library):

- ``time ms``: the pipeline;
- ``GB/s``: bytes over the link (H2D ``x`` and ``y``, D2H ``out``) per second of pipeline;
- ``ideal ms``: the longest of the three stages run alone, serially on one stream, for the same
  chunks (all H2D copies, then all kernels, then all D2H copies, each timed on its own);
- ``overlap``: ideal / time; 1.0 means the other two stages hid completely behind the longest;
- ``ceiling ms``: what the link gives both ways at once: every chunk's H2D of ``x`` and ``y`` on
  one stream while every chunk's D2H of ``out`` runs on another, no kernels (each library with
  its own copies); ``of ceiling``: the machine's ceiling (the fastest library's) / time.

Usage: ``python benchmarks/pipeline.py [--size-mib 256] [--chunks 32] [--streams 1,2,4,8]
[--repeat 5] [--json PATH] [--smoke]``. On the cpu backend the defaults are small (the kernels
run in Numba's simulator) and no target is judged.
"""
from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, Callable

import numpy as np

import _common

TARGET_STREAMS, TARGET_OVERLAP, TARGET_CEILING = 4, 0.9, 0.97
STAGES = ("h2d", "kernel", "d2h")


class _Pipeline:
    """What the libraries' pipelines share: a stream synchronizes with ``synchronize()``, and
    streams are freed with their objects unless a pipeline says otherwise."""

    @staticmethod
    def synchronize(s: Any) -> None:
        s.synchronize()

    @staticmethod
    def close_streams(streams: list[Any]) -> None:
        pass


class RocmstreamsPipeline(_Pipeline):
    """rocmstreams: pinned_empty host arrays, DeviceArrays, RocmStreams, a numba saxpy."""

    name = "rocmstreams"

    def __init__(self, x: np.ndarray, y: np.ndarray, a: np.float32) -> None:
        import rocmstreams as rs
        from rocmstreams.kernels import saxpy
        self._rs, self._saxpy, self._a = rs, saxpy, a
        self._host = [rs.pinned_empty(x.size, np.float32) for _ in range(3)]
        self._host[0][:], self._host[1][:] = x, y
        self._dev = [rs.empty(x.size, np.float32) for _ in range(3)]
        self._threads = 32 if rs.backend().name == "cpu" else 256
        self._max_blocks = 4 if rs.backend().name == "cpu" else 4096

    def streams(self, count: int) -> list[Any]:
        return [self._rs.RocmStream(non_blocking=True) for _ in range(count)]

    def h2d(self, lo: int, hi: int, s: Any) -> None:
        for h, d in zip(self._host[:2], self._dev[:2]):
            self._rs.copy_async(d[lo:hi], h[lo:hi], stream=s)

    def kernel(self, lo: int, hi: int, s: Any) -> None:
        dx, dy, dout = (d[lo:hi] for d in self._dev)
        blocks = min(self._max_blocks, -(-(hi - lo) // self._threads))
        self._saxpy[blocks, self._threads, s](dout, self._a, dx, dy)

    def d2h(self, lo: int, hi: int, s: Any) -> None:
        self._rs.copy_async(self._host[2][lo:hi], self._dev[2][lo:hi], stream=s)

    @staticmethod
    def close_streams(streams: list[Any]) -> None:
        for s in streams:
            s.close()

    def output(self) -> np.ndarray:
        return self._host[2]


class CupyPipeline(_Pipeline):
    """CuPy: cupyx.empty_pinned host arrays, set/get(blocking=False), an ElementwiseKernel."""

    name = "cupy"

    def __init__(self, x: np.ndarray, y: np.ndarray, a: np.float32) -> None:
        import cupy as cp
        import cupyx
        self._cp, self._a = cp, a
        self._host = [cupyx.empty_pinned(x.size, np.float32) for _ in range(3)]
        self._host[0][:], self._host[1][:] = x, y
        self._dev = [cp.empty(x.size, np.float32) for _ in range(3)]
        self._saxpy = cp.ElementwiseKernel("float32 a, float32 x, float32 y", "float32 out",
                                           "out = a * x + y", "pipeline_saxpy")

    def streams(self, count: int) -> list[Any]:
        return [self._cp.cuda.Stream(non_blocking=True) for _ in range(count)]

    def h2d(self, lo: int, hi: int, s: Any) -> None:
        for h, d in zip(self._host[:2], self._dev[:2]):
            d[lo:hi].set(h[lo:hi], stream=s)

    def kernel(self, lo: int, hi: int, s: Any) -> None:
        dx, dy, dout = (d[lo:hi] for d in self._dev)
        with s:
            self._saxpy(self._a, dx, dy, dout)

    def d2h(self, lo: int, hi: int, s: Any) -> None:
        self._dev[2][lo:hi].get(stream=s, out=self._host[2][lo:hi], blocking=False)

    def output(self) -> np.ndarray:
        return self._host[2]

    def close(self) -> None:
        del self._dev
        gc.collect()
        self._cp.get_default_memory_pool().free_all_blocks()


class TorchPipeline(_Pipeline):
    """PyTorch: pin_memory() host tensors, copy_(non_blocking=True), torch.add(alpha=a)."""

    name = "torch"

    def __init__(self, x: np.ndarray, y: np.ndarray, a: np.float32) -> None:
        import torch
        if not torch.cuda.is_available():
            raise _Missing("torch sees no CUDA device")
        self._torch, self._a = torch, float(a)
        self._host = [torch.empty(x.size, dtype=torch.float32).pin_memory() for _ in range(3)]
        self._host[0].numpy()[:], self._host[1].numpy()[:] = x, y
        self._dev = [torch.empty(x.size, dtype=torch.float32, device="cuda") for _ in range(3)]

    def streams(self, count: int) -> list[Any]:
        return [self._torch.cuda.Stream() for _ in range(count)]

    def h2d(self, lo: int, hi: int, s: Any) -> None:
        with self._torch.cuda.stream(s):
            for h, d in zip(self._host[:2], self._dev[:2]):
                d[lo:hi].copy_(h[lo:hi], non_blocking=True)

    def kernel(self, lo: int, hi: int, s: Any) -> None:
        dx, dy, dout = (d[lo:hi] for d in self._dev)
        with self._torch.cuda.stream(s):
            self._torch.add(dy, dx, alpha=self._a, out=dout)

    def d2h(self, lo: int, hi: int, s: Any) -> None:
        with self._torch.cuda.stream(s):
            self._host[2][lo:hi].copy_(self._dev[2][lo:hi], non_blocking=True)

    def output(self) -> np.ndarray:
        return self._host[2].numpy()

    def close(self) -> None:
        del self._dev
        gc.collect()
        self._torch.cuda.empty_cache()


class _FreshArrays:
    """The same pipeline written as users write it: per chunk, fresh device arrays (x and y
    copied in, out allocated) on the chunk's stream, dropped once the chunk's copy back is
    queued."""

    def _chunk(self, lo: int, hi: int, s: Any) -> list[Any]:
        found = self._chunks.get(lo)  # type: ignore[attr-defined]
        if found is None:
            found = self._chunks[lo] = self._fresh(lo, hi, s)  # type: ignore[attr-defined]
        return found

    def h2d(self, lo: int, hi: int, s: Any) -> None:
        self._chunks[lo] = self._fresh(lo, hi, s)  # type: ignore[attr-defined]

    def kernel(self, lo: int, hi: int, s: Any) -> None:
        dx, dy, dout = self._chunk(lo, hi, s)
        self._launch(dout, dx, dy, hi - lo, s)  # type: ignore[attr-defined]

    def d2h(self, lo: int, hi: int, s: Any) -> None:
        dout = self._chunk(lo, hi, s)[2]
        self._copy_back(dout, lo, hi, s)  # type: ignore[attr-defined]
        del self._chunks[lo]  # type: ignore[attr-defined]


class RocmstreamsFreshPipeline(_FreshArrays, RocmstreamsPipeline):
    name = "rocmstreams (fresh arrays)"

    def __init__(self, x: np.ndarray, y: np.ndarray, a: np.float32) -> None:
        super().__init__(x, y, a)
        self._dev = []
        self._chunks: dict[int, list[Any]] = {}

    def _fresh(self, lo: int, hi: int, s: Any) -> list[Any]:
        rs = self._rs
        return [rs.to_device(self._host[0][lo:hi], stream=s),
                rs.to_device(self._host[1][lo:hi], stream=s),
                rs.empty(hi - lo, np.float32, stream=s)]

    def _launch(self, dout: Any, dx: Any, dy: Any, n: int, s: Any) -> None:
        blocks = min(self._max_blocks, -(-n // self._threads))
        self._saxpy[blocks, self._threads, s](dout, self._a, dx, dy)

    def _copy_back(self, dout: Any, lo: int, hi: int, s: Any) -> None:
        self._rs.copy_async(self._host[2][lo:hi], dout, stream=s)


class CupyFreshPipeline(_FreshArrays, CupyPipeline):
    name = "cupy (fresh arrays)"

    def __init__(self, x: np.ndarray, y: np.ndarray, a: np.float32) -> None:
        super().__init__(x, y, a)
        self._dev = []
        self._chunks: dict[int, list[Any]] = {}

    def _fresh(self, lo: int, hi: int, s: Any) -> list[Any]:
        cp = self._cp
        with s:
            dx, dy, dout = (cp.empty(hi - lo, np.float32) for _ in range(3))
        dx.set(self._host[0][lo:hi], stream=s)
        dy.set(self._host[1][lo:hi], stream=s)
        return [dx, dy, dout]

    def _launch(self, dout: Any, dx: Any, dy: Any, n: int, s: Any) -> None:
        with s:
            self._saxpy(self._a, dx, dy, dout)

    def _copy_back(self, dout: Any, lo: int, hi: int, s: Any) -> None:
        dout.get(stream=s, out=self._host[2][lo:hi], blocking=False)


class TorchFreshPipeline(_FreshArrays, TorchPipeline):
    name = "torch (fresh arrays)"

    def __init__(self, x: np.ndarray, y: np.ndarray, a: np.float32) -> None:
        super().__init__(x, y, a)
        self._dev = []
        self._chunks: dict[int, list[Any]] = {}

    def _fresh(self, lo: int, hi: int, s: Any) -> list[Any]:
        torch = self._torch
        with torch.cuda.stream(s):
            return [self._host[0][lo:hi].to("cuda", non_blocking=True),
                    self._host[1][lo:hi].to("cuda", non_blocking=True),
                    torch.empty(hi - lo, dtype=torch.float32, device="cuda")]

    def _launch(self, dout: Any, dx: Any, dy: Any, n: int, s: Any) -> None:
        with self._torch.cuda.stream(s):
            self._torch.add(dy, dx, alpha=self._a, out=dout)

    def _copy_back(self, dout: Any, lo: int, hi: int, s: Any) -> None:
        with self._torch.cuda.stream(s):
            self._host[2][lo:hi].copy_(dout, non_blocking=True)


class _Missing(Exception):
    """The peer imports but cannot run here; becomes a ``missing`` row."""


PEERS: list[tuple[str, str, Callable[..., Any]]] = [
    ("rocmstreams", "rocmstreams", RocmstreamsPipeline),
    ("cupy", "cupy", CupyPipeline),
    ("torch", "torch", TorchPipeline),
    ("rocmstreams (fresh arrays)", "rocmstreams", RocmstreamsFreshPipeline),
    ("cupy (fresh arrays)", "cupy", CupyFreshPipeline),
    ("torch (fresh arrays)", "torch", TorchFreshPipeline),
]


def _bounds(n: int, chunks: int) -> list[tuple[int, int]]:
    step = -(-n // chunks)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _run_pipeline(p: Any, streams: list[Any], bounds: list[tuple[int, int]]) -> None:
    for c, (lo, hi) in enumerate(bounds):
        s = streams[c % len(streams)]
        p.h2d(lo, hi, s)
        p.kernel(lo, hi, s)
        p.d2h(lo, hi, s)
    for s in streams:
        p.synchronize(s)


def _run_stage(p: Any, stage: str, s: Any, bounds: list[tuple[int, int]]) -> None:
    step = getattr(p, stage)
    for lo, hi in bounds:
        step(lo, hi, s)
    p.synchronize(s)


def _run_ceiling(p: Any, streams: list[Any], bounds: list[tuple[int, int]]) -> None:
    """The copies of the pipeline without its kernels: H2D on one stream, D2H on the other."""
    up, down = streams
    for lo, hi in bounds:
        p.h2d(lo, hi, up)
        p.d2h(lo, hi, down)
    for s in streams:
        p.synchronize(s)


def _check(p: Any, reference: np.ndarray) -> tuple[bool, float]:
    out = p.output()
    ok = bool(np.allclose(out, reference, rtol=1e-6, atol=1e-6))
    err = float(np.max(np.abs(out.astype(np.float64) - reference))) if out.size else 0.0
    return ok, err


def measure(p: Any, x: np.ndarray, reference: np.ndarray, bounds: list[tuple[int, int]],
            stream_counts: list[int], repeat: int) -> list[dict[str, Any]]:
    """One library's rows: stages alone (for the ideal), then the pipeline per stream count."""
    one = p.streams(1)
    _run_pipeline(p, one, bounds)  # warm-up: kernels compiled, first copies made
    stages = {}
    for stage in _common.progress(STAGES, f"{p.name}: stages alone, best of {repeat}"):
        stages[stage] = _common.summary(
            _common.time_call(lambda: _run_stage(p, stage, one[0], bounds), repeat))["best_ms"]
    p.close_streams(one)
    ideal = max(stages.values())
    two = p.streams(2)
    _run_ceiling(p, two, bounds)
    ceiling = _common.summary(
        _common.time_call(lambda: _run_ceiling(p, two, bounds), repeat))["best_ms"]
    p.close_streams(two)
    rows = []
    for count in _common.progress(stream_counts, f"{p.name}: stream counts, best of {repeat}"):
        streams = p.streams(count)
        _run_pipeline(p, streams, bounds)  # warm-up of these streams
        times = []
        for _ in range(repeat):
            p.output()[:] = np.nan
            times += _common.time_call(lambda: _run_pipeline(p, streams, bounds), 1)
        p.close_streams(streams)
        ok, err = _check(p, reference)
        t = _common.summary(times)
        moved = 3 * x.nbytes
        rows.append({"library": p.name, "streams": count, "time_ms": t["best_ms"],
                     "median_ms": t["median_ms"], "gbps": moved / (t["best_ms"] * 1e-3) / 1e9,
                     "overlap": ideal / t["best_ms"], "ideal_ms": ideal, "stages_ms": stages,
                     "ceiling_ms": ceiling,
                     "verified": ok, "max_abs_error": err})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=float, default=None,
                        help="MiB of each of x, y, out (default 256; 0.25 on cpu; 4 smoke)")
    parser.add_argument("--chunks", type=int, default=None,
                        help="chunks (default 32; 4 on cpu and smoke)")
    parser.add_argument("--streams", default=None, help="stream counts (default 1,2,4,8)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed runs per figure, best reported (default 5; 1 smoke)")
    parser.add_argument("--libraries", default="rocmstreams,cupy,torch,rocmstreams (fresh "
                        "arrays),cupy (fresh arrays),torch (fresh arrays)",
                        help="comma-separated; the '(fresh arrays)' rows allocate per chunk")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a quick check")
    args = parser.parse_args(argv)

    env = _common.environment()
    on_cpu = env["backend"] == "cpu"
    size = args.size_mib if args.size_mib is not None else (
        0.0625 if args.smoke and on_cpu else 4 if args.smoke else 0.25 if on_cpu else 256)
    chunks = args.chunks or (4 if args.smoke or on_cpu else 32)
    stream_counts = [int(c) for c in (args.streams or ("1,2" if args.smoke and on_cpu else
                                                       "1,2,4,8")).split(",")]
    repeat = args.repeat or (1 if args.smoke else 5)
    n = max(1, int(size * (1 << 20)) // 4)

    rng = np.random.default_rng()
    x = rng.random(n, dtype=np.float32)
    y = rng.random(n, dtype=np.float32)
    a = np.float32(rng.uniform(0.5, 2.0))
    reference = a * x.astype(np.float64) + y
    bounds = _bounds(n, chunks)

    rows: list[dict[str, Any]] = []
    wanted = args.libraries.split(",")
    for library, module, build in PEERS:
        if library not in wanted:
            continue
        if not library.startswith("rocmstreams") and on_cpu:
            rows.append(_common.missing_row(library, "peers run on a GPU; the backend is cpu"))
            continue
        _, reason = _common.import_peer(module)
        if reason:
            rows.append(_common.missing_row(library, reason))
            continue
        p = None
        try:
            p = build(x, y, a)
            rows += measure(p, x, reference, bounds, stream_counts, repeat)
        except _Missing as exc:
            rows.append(_common.missing_row(library, str(exc)))
        except Exception as exc:  # noqa: BLE001 - one peer failing must not hide the others
            rows.append({"library": library, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            if p is not None and hasattr(p, "close"):
                p.close()
            del p
            gc.collect()

    ceilings = [r["ceiling_ms"] for r in rows if "ceiling_ms" in r]
    for r in rows:
        if ceilings and "time_ms" in r:
            r["of_ceiling"] = min(ceilings) / r["time_ms"]
    targets = []
    if not on_cpu:
        row = next((r for r in rows if r["library"] == "rocmstreams"
                    and r.get("streams") == TARGET_STREAMS), None)
        targets.append({"name": f"rocmstreams {TARGET_STREAMS}-stream overlap efficiency",
                        "threshold": TARGET_OVERLAP,
                        "value": None if row is None else row["overlap"],
                        "met": row is not None and row["overlap"] >= TARGET_OVERLAP})
        targets.append({"name": f"rocmstreams {TARGET_STREAMS}-stream pipeline / the link's "
                                "ceiling (both ways at once, no kernels)",
                        "threshold": TARGET_CEILING,
                        "value": None if row is None else row["of_ceiling"],
                        "met": row is not None and row["of_ceiling"] >= TARGET_CEILING})
    failures = [r for r in rows if r.get("error") or r.get("verified") is False]

    print(f"backend {env['backend']}, device {env['device']}, numpy {env['numpy']}")
    print(f"pipeline: x, y, out float32 of {size:g} MiB each in {len(bounds)} chunks; per chunk "
          f"H2D x and y, saxpy, D2H out; best of {repeat} (host perf_counter around the "
          "queueing and the synchronize of every stream)")
    _common.print_table("", [("library", "library", ""), ("streams", "streams", ""),
                             ("time_ms", "time ms", ".3f"), ("gbps", "GB/s", ".2f"),
                             ("overlap", "overlap", ".3f"), ("ideal_ms", "ideal ms", ".3f"),
                             ("ceiling_ms", "ceiling ms", ".3f"),
                             ("of_ceiling", "of ceiling", ".3f"),
                             ("verified", "output ok", "")], rows)
    for t in targets:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        print(f"target: {t['name']} >= {t['threshold']}: {value} -> "
              f"{'MET' if t['met'] else 'NOT MET'}")
    for r in failures:
        why = r.get("error") or f"output differs from numpy (max abs error {r['max_abs_error']:g})"
        print(f"FAILURE: {r['library']} streams={r.get('streams')}: {why}", file=sys.stderr)
    if args.json:
        _common.write_json(args.json, {
            "benchmark": "pipeline", "environment": env, "size_mib": size, "chunks": len(bounds),
            "streams": stream_counts, "repeat": repeat, "statistic": "best",
            "timing": "host time.perf_counter around queueing and synchronize",
            "rows": rows, "targets": targets, "ok": not failures})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
