"""Host cost of rocmstreams' launches, stream and event calls, graphs and copies, beside its peers.

One run measures every figure of issue 4 for rocmstreams and, in the same process on the same GPU,
for raw cuda.bindings, cuda.core, numba-cuda, CuPy, torch and the C++ floor (``floor.cu``, built
with nvcc). It prints one table per figure with the ratio the target names, and writes the same as
JSON (``--json PATH``). A peer this machine lacks is reported as missing, with the reason.

    python benchmarks/overhead.py [--json PATH] [--quick]

On the cpu backend (no GPU) the rocmstreams figures are measured at small sizes and every GPU peer
is reported missing: a smoke run, no targets.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

if not hasattr(np, "row_stack"):  # numba 0.68 still names it; numpy 2.5 dropped it
    np.row_stack = np.vstack

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import rocmstreams as rs  # noqa: E402

HERE = Path(__file__).resolve().parent
NOOP_SOURCE = ('extern "C" __global__ void noop(float* a, int n) '
               '{ int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] += 1.0f; }')


def per_call_us(fn: Callable[[], Any], n: int, repeat: int = 3,
                after: Callable[[], Any] | None = None) -> float:
    """Best over ``repeat`` runs of the mean host time of ``n`` calls, in microseconds."""
    fn()
    if after:
        after()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
        if after:
            after()
    return best


class Figures:
    """Collects ``figure -> {library: value or missing reason}`` and the targets."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.units: dict[str, str] = {}

    def add(self, figure: str, library: str, measure: Callable[[], float], unit: str) -> None:
        self.units[figure] = unit
        try:
            value = measure()
        except Exception as exc:  # noqa: BLE001 - one failed peer is one reported row
            value = f"error: {type(exc).__name__}: {exc}"[:200]
        self.values.setdefault(figure, {})[library] = value
        shown = f"{value:.3f} {unit}" if isinstance(value, float) else value
        print(f"  {figure:28s} {library:22s} {shown}", flush=True)

    def missing(self, figure: str, library: str, reason: str) -> None:
        self.values.setdefault(figure, {})[library] = f"missing: {reason}"

    def get(self, figure: str, library: str) -> float | None:
        v = self.values.get(figure, {}).get(library)
        return v if isinstance(v, float) else None


# ---- the peers' pieces ---------------------------------------------------------------------
def build_floor(workdir: Path) -> tuple[dict[str, float] | None, Path | None, str | None]:
    """Run the C++ floor and build the noop cubin; ``(floor figures, cubin, why missing)``."""
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc"
                                    if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        return None, None, "nvcc is not on this machine"
    src = HERE / "floor.cu"
    exe, cubin = workdir / "floor", workdir / "noop.cubin"
    be = rs.backend()
    from cuda.bindings import runtime
    _, major = runtime.cudaDeviceGetAttribute(
        runtime.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, be.get_device())
    _, minor = runtime.cudaDeviceGetAttribute(
        runtime.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, be.get_device())
    arch = f"sm_{major}{minor}"
    subprocess.run([nvcc, "-O2", "-o", str(exe), str(src)], check=True)
    subprocess.run([nvcc, "-cubin", f"-arch={arch}", "-o", str(cubin), str(src)], check=True)
    line = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    print("  floor.cu:", line.strip(), flush=True)
    return {k: float(v) for k, v in re.findall(r"(\w+)_us=([\d.]+)", line)}, cubin, None


# ---- measurements -------------------------------------------------------------------------
def measure(quick: bool, on_gpu: bool) -> Figures:
    from rocmstreams.kernels import add_scalar

    f = Figures()
    n_calls = 2000 if quick or not on_gpu else 20000
    n_launch = 20 if not on_gpu else (2000 if quick else 20000)
    s = rs.RocmStream(non_blocking=True)
    a = rs.to_device(np.zeros(1024, np.float32), stream=s)
    one = np.float32(1.0)
    workdir = Path(tempfile.mkdtemp(prefix="rocmstreams-bench-"))

    floor, cubin, floor_missing = build_floor(workdir) if on_gpu else (None, None, "no GPU")
    if floor is None:
        for fig in ("launch", "stream query, idle", "stream synchronize, idle", "event record",
                    "graph replay per kernel"):
            f.missing(fig, "C++ floor", floor_missing or "not built")

    # -- launch of a Numba kernel: one device array, one scalar --
    print("launch (one device array, one scalar), host us per launch", flush=True)
    f.add("launch", "rocmstreams", lambda: per_call_us(lambda: add_scalar[1, 256, s](a, one),
                                                        n_launch, after=s.synchronize), "us")
    configured = add_scalar[1, 256, s]
    f.add("launch", "rocmstreams (configured)",
          lambda: per_call_us(lambda: configured(a, one), n_launch, after=s.synchronize), "us")
    got = a.copy_to_host(stream=s)
    s.synchronize()
    if not np.all(got[:256] == 2 * (3 * n_launch + 1)):  # each launch adds one to a[:256]
        raise AssertionError(f"launches lost: a[0] = {got[0]} after {2 * (3 * n_launch + 1)}")
    if floor:
        f.values.setdefault("launch", {})["C++ floor"] = floor["launch"]
        f.values.setdefault("stream query, idle", {})["C++ floor"] = floor["query"]
        f.values.setdefault("stream synchronize, idle", {})["C++ floor"] = floor["idle_sync"]
        f.values.setdefault("event record", {})["C++ floor"] = floor["event_record"]
        f.values.setdefault("graph replay per kernel", {})["C++ floor"] = \
            floor["graph_per_kernel"]
    if on_gpu:
        peers_launch(f, s, cubin, n_launch)
    else:
        for peer in ("cuda.bindings", "cuda.core", "numba-cuda", "CuPy", "torch"):
            f.missing("launch", peer, "peers are measured on the cuda backend")

    # -- stream query / synchronize / event record / create + close --
    print("stream and event calls, host us per call", flush=True)
    s.synchronize()
    f.add("stream query, idle", "rocmstreams", lambda: per_call_us(s.query, n_calls), "us")
    f.add("stream synchronize, idle", "rocmstreams",
          lambda: per_call_us(s.synchronize, n_calls), "us")
    ev = rs.Event()
    f.add("event record", "rocmstreams", lambda: per_call_us(lambda: ev.record(s), n_calls,
                                                              after=s.synchronize), "us")
    f.add("stream create + close", "rocmstreams",
          lambda: per_call_us(lambda: rs.RocmStream(non_blocking=True).close(),
                              max(n_calls // 10, 200)), "us")
    if on_gpu:
        peers_stream_calls(f, s, n_calls)
    else:
        for fig in ("stream query, idle", "stream synchronize, idle", "event record",
                    "stream create + close"):
            for peer in ("cuda.bindings", "cuda.core", "numba-cuda"):
                f.missing(fig, peer, "peers are measured on the cuda backend")

    # -- graph replay --
    print("graph replay, device us per kernel of a 100-kernel graph", flush=True)
    f.add("graph replay per kernel", "rocmstreams",
          lambda: graph_replay(s, a, add_scalar, 200 if on_gpu else 2), "us")

    # -- copies --
    nbytes = (256 << 20) if on_gpu and not quick else (1 << 20)
    print(f"copies of {nbytes >> 20} MiB, GB/s", flush=True)
    copies(f, s, nbytes, on_gpu)

    # -- memory over many launches --
    launches = (10**6 if on_gpu and not quick else 10**5) if on_gpu else 50
    print(f"memory over {launches} launches", flush=True)
    memory_flat(f, s, a, add_scalar, launches)
    s.synchronize()
    s.close()
    return f


def peers_launch(f: Figures, s: rs.RocmStream, cubin: Path | None, n: int) -> None:
    from cuda.bindings import driver

    buf = rs.empty(1024, np.float32)
    nval = ctypes.c_int(1024)
    if cubin is not None:
        def raw() -> float:
            _, mod = driver.cuModuleLoad(str(cubin).encode())
            _, fn = driver.cuModuleGetFunction(mod, b"noop")
            ptr = ctypes.c_void_p(buf.ptr)
            packed = (ctypes.c_void_p * 2)(ctypes.addressof(ptr), ctypes.addressof(nval))
            addr, cs = ctypes.addressof(packed), driver.CUstream(s.handle)
            return per_call_us(lambda: driver.cuLaunchKernel(fn, 1, 1, 1, 256, 1, 1, 0, cs,
                                                             addr, 0), n, after=s.synchronize)
        f.add("launch", "cuda.bindings", raw, "us")

        def core() -> float:
            from cuda.core import Device, LaunchConfig, ObjectCode, launch
            dev = Device()
            dev.set_current()
            kernel = ObjectCode.from_cubin(str(cubin)).get_kernel("noop")
            cs = dev.create_stream()
            mem = dev.allocate(4096, stream=cs)
            cfg, n32 = LaunchConfig(grid=1, block=256), np.int32(1024)
            try:
                return per_call_us(lambda: launch(cs, cfg, kernel, mem, n32), n,
                                   after=cs.sync)
            finally:
                cs.sync()
                cs.close()
        f.add("launch", "cuda.core", core, "us")
    else:
        f.missing("launch", "cuda.bindings", "no cubin: nvcc missing")
        f.missing("launch", "cuda.core", "no cubin: nvcc missing")

    def numba_own() -> float:
        from rocmstreams.kernels import add_scalar, cuda
        ns = cuda.stream()
        da = cuda.to_device(np.zeros(1024, np.float32))
        one = np.float32(1.0)
        return per_call_us(lambda: add_scalar[1, 256, ns](da, one), n, after=ns.synchronize)
    f.add("launch", "numba-cuda", numba_own, "us")

    cp, why = _common.import_peer("cupy")
    if cp is None:
        f.missing("launch", "CuPy", why or "")
    else:
        def cupy_raw() -> float:
            k = cp.RawKernel(NOOP_SOURCE, "noop")
            x = cp.zeros(1024, cp.float32)
            cs = cp.cuda.Stream(non_blocking=True)
            n32 = np.int32(1024)
            with cs:
                return per_call_us(lambda: k((1,), (256,), (x, n32)), n, after=cs.synchronize)
        f.add("launch", "CuPy", cupy_raw, "us")
    torch, why = _common.import_peer("torch")
    if torch is None:
        f.missing("launch", "torch", why or "")
    else:
        def torch_add() -> float:
            ts = torch.cuda.Stream()
            x = torch.zeros(1024, device="cuda")
            with torch.cuda.stream(ts):
                return per_call_us(lambda: x.add_(1.0), n, after=ts.synchronize)
        f.add("launch", "torch", torch_add, "us")


def peers_stream_calls(f: Figures, s: rs.RocmStream, n: int) -> None:
    from cuda.bindings import driver, runtime

    _, raw_stream = runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking)
    _, raw_event = runtime.cudaEventCreateWithFlags(runtime.cudaEventDisableTiming)
    ds = driver.CUstream(int(raw_stream))
    f.add("stream query, idle", "cuda.bindings",
          lambda: per_call_us(lambda: runtime.cudaStreamQuery(raw_stream), n), "us")
    f.add("stream query, idle", "cuda.bindings driver",
          lambda: per_call_us(lambda: driver.cuStreamQuery(ds), n), "us")
    f.add("stream synchronize, idle", "cuda.bindings",
          lambda: per_call_us(lambda: runtime.cudaStreamSynchronize(raw_stream), n), "us")
    f.add("stream synchronize, idle", "cuda.bindings driver",
          lambda: per_call_us(lambda: driver.cuStreamSynchronize(ds), n), "us")
    f.add("event record", "cuda.bindings",
          lambda: per_call_us(lambda: runtime.cudaEventRecord(raw_event, raw_stream), n), "us")
    f.add("event record", "cuda.bindings driver",
          lambda: per_call_us(lambda: driver.cuEventRecord(driver.CUevent(int(raw_event)), ds),
                              n), "us")

    def create_close_raw() -> float:
        def one() -> None:
            _, h = runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking)
            runtime.cudaStreamDestroy(h)
        return per_call_us(one, n // 10)
    f.add("stream create + close", "cuda.bindings", create_close_raw, "us")

    core, why = _common.import_peer("cuda.core")
    if core is None:
        for fig in ("stream synchronize, idle", "event record", "stream create + close"):
            f.missing(fig, "cuda.core", why or "")
    else:
        dev = core.Device()
        dev.set_current()
        cs = dev.create_stream()
        f.add("stream synchronize, idle", "cuda.core", lambda: per_call_us(cs.sync, n), "us")
        cev = cs.record()
        f.add("event record", "cuda.core", lambda: per_call_us(lambda: cs.record(cev), n), "us")
        f.add("stream create + close", "cuda.core",
              lambda: per_call_us(lambda: dev.create_stream().close(), n // 10), "us")
        f.missing("stream query, idle", "cuda.core", "cuda.core 1.2 Stream has no query")

    cp, why = _common.import_peer("cupy")
    if cp is None:
        f.missing("stream query, idle", "CuPy", why or "")
    else:
        cps = cp.cuda.Stream(non_blocking=True)
        f.add("stream query, idle", "CuPy", lambda: per_call_us(lambda: cps.done, n), "us")
    torch, why = _common.import_peer("torch")
    if torch is None:
        f.missing("stream query, idle", "torch", why or "")
    else:
        ts = torch.cuda.Stream()
        f.add("stream query, idle", "torch", lambda: per_call_us(ts.query, n), "us")

    from rocmstreams.kernels import cuda
    ns = cuda.stream()
    f.missing("stream query, idle", "numba-cuda", "numba-cuda streams have no query")
    f.add("stream synchronize, idle", "numba-cuda", lambda: per_call_us(ns.synchronize, n), "us")
    nev = cuda.event(timing=False)
    f.add("event record", "numba-cuda", lambda: per_call_us(lambda: nev.record(ns), n), "us")
    f.add("stream create + close", "numba-cuda",
          lambda: per_call_us(lambda: cuda.stream(), n // 10), "us")
    runtime.cudaStreamDestroy(raw_stream)
    runtime.cudaEventDestroy(raw_event)


def graph_replay(s: rs.RocmStream, a: Any, kernel: Any, replays: int) -> float:
    """Device time per kernel of a captured 100-launch graph, replayed ``replays`` times."""
    if not hasattr(s, "capture"):
        raise RuntimeError("this rocmstreams has no graph capture")
    one = np.float32(1.0)
    before = a.copy_to_host(stream=s)
    s.synchronize()
    with s.capture() as graph:
        for _ in range(100):
            kernel[1, 256, s](a, one)
    graph.launch(s)
    s.synchronize()
    t0 = time.perf_counter()
    for _ in range(replays):
        graph.launch(s)
    s.synchronize()
    per_kernel = (time.perf_counter() - t0) / (replays * 100) * 1e6
    after = a.copy_to_host(stream=s)
    s.synchronize()
    graph.close()
    if not np.array_equal(after - before, np.full_like(before, 100 * (replays + 1))):
        raise AssertionError("graph replays did not add 100 per replay")
    return per_kernel


def copies(f: Figures, s: rs.RocmStream, nbytes: int, on_gpu: bool) -> None:
    reps = 10 if on_gpu else 3
    count = nbytes // 4
    pinned = rs.pinned_empty(count, np.float32)
    pinned[:] = np.random.default_rng().standard_normal(count, dtype=np.float32)
    d = rs.empty(count, np.float32)

    def rate(fn: Callable[[], None]) -> float:
        fn()
        s.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        s.synchronize()
        return reps * nbytes / (time.perf_counter() - t0) / 1e9

    f.add("H2D pinned", "rocmstreams", lambda: rate(lambda: rs.copy_async(d, pinned, stream=s)),
          "GB/s")
    back = rs.pinned_empty(count, np.float32)
    f.add("D2H pinned", "rocmstreams", lambda: rate(lambda: rs.copy_async(back, d, stream=s)),
          "GB/s")
    if not np.array_equal(back, pinned):
        raise AssertionError("pinned round trip changed the data")
    pageable = np.random.default_rng().standard_normal(count, dtype=np.float32)
    f.add("H2D pageable", "rocmstreams",
          lambda: rate(lambda: rs.copy_async(d, pageable, stream=s)), "GB/s")
    check = d.copy_to_host(stream=s)
    s.synchronize()
    if not np.array_equal(check, pageable):
        raise AssertionError("pageable H2D changed the data")
    if not on_gpu:
        for fig in ("H2D pinned", "D2H pinned", "H2D pageable"):
            f.missing(fig, "cuda.bindings" if "pinned" in fig else "numba-cuda",
                      "peers are measured on the cuda backend")
        return
    from cuda.bindings import runtime
    hs = runtime.cudaStream_t(s.handle)
    h2d, d2h = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice, \
        runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
    hp, bp = pinned.ctypes.data, back.ctypes.data
    f.add("H2D pinned", "cuda.bindings",
          lambda: rate(lambda: runtime.cudaMemcpyAsync(d.ptr, hp, nbytes, h2d, hs)), "GB/s")
    f.add("D2H pinned", "cuda.bindings",
          lambda: rate(lambda: runtime.cudaMemcpyAsync(bp, d.ptr, nbytes, d2h, hs)), "GB/s")
    from rocmstreams.kernels import cuda
    nd = cuda.device_array(count, np.float32)
    ns = cuda.stream()

    def numba_rate() -> float:
        cuda.to_device(pageable, stream=ns, to=nd)
        ns.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            cuda.to_device(pageable, stream=ns, to=nd)
        ns.synchronize()
        return reps * nbytes / (time.perf_counter() - t0) / 1e9
    f.add("H2D pageable", "numba-cuda", numba_rate, "GB/s")


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_flat(f: Figures, s: rs.RocmStream, a: Any, kernel: Any, launches: int) -> None:
    one = np.float32(1.0)
    for _ in range(1000 if launches >= 1000 else 5):  # warm: caches filled before the first read
        kernel[1, 256, s](a, one)
    s.synchronize()
    gc.collect()
    device_free = _device_free()
    host0, dev0 = _rss_mib(), device_free()
    for i in range(launches):
        kernel[1, 256, s](a, one)
        if i % 10000 == 9999:
            s.synchronize()
    s.synchronize()
    gc.collect()
    host1, dev1 = _rss_mib(), device_free()
    f.values["host memory growth"] = {"rocmstreams": host1 - host0}
    f.units["host memory growth"] = f"MiB over {launches} launches"
    f.values["device memory growth"] = {"rocmstreams": (dev0 - dev1) if dev0 is not None
                                        else "missing: no device memory query on this backend"}
    f.units["device memory growth"] = f"MiB over {launches} launches"
    print(f"  host RSS {host0:.1f} -> {host1:.1f} MiB; device free "
          f"{dev0} -> {dev1} MiB", flush=True)


def _device_free() -> Callable[[], float | None]:
    if rs.backend().name != "cuda":
        return lambda: None
    from cuda.bindings import runtime
    return lambda: runtime.cudaMemGetInfo()[1] / 2**20


# ---- targets ---------------------------------------------------------------------------------
def _best(values: dict[str, Any], *names: str) -> float | None:
    found = [values.get(n) for n in names]
    found = [v for v in found if isinstance(v, float)]
    return min(found) if found else None


TARGETS = [
    # figure, ours, reference peers, kind, bound, text
    ("launch", "rocmstreams", ("cuda.core",), "ratio<=", 1.25, "<= 1.25x cuda.core"),
    ("launch", "rocmstreams", ("numba-cuda",), "faster>=", 3.5, ">= 3.5x faster than numba-cuda"),
    ("stream query, idle", "rocmstreams", ("cuda.bindings", "cuda.bindings driver"), "ratio<=",
     1.2, "<= 1.2x raw cuda.bindings (best of runtime, driver)"),
    ("stream synchronize, idle", "rocmstreams", ("cuda.bindings", "cuda.bindings driver"),
     "ratio<=", 1.2, "<= 1.2x raw cuda.bindings (best of runtime, driver)"),
    ("event record", "rocmstreams", ("cuda.bindings", "cuda.bindings driver"), "ratio<=", 1.5,
     "<= 1.5x raw cuda.bindings (best of runtime, driver)"),
    ("stream create + close", "rocmstreams", ("cuda.core",), "ratio<=", 1.2, "<= 1.2x cuda.core"),
    ("graph replay per kernel", "rocmstreams", ("C++ floor",), "ratio<=", 1.25,
     "<= 1.25x the C++ floor"),
    ("H2D pinned", "rocmstreams", ("cuda.bindings",), "ratio>=", 0.95,
     ">= 0.95x raw cudaMemcpyAsync"),
    ("D2H pinned", "rocmstreams", ("cuda.bindings",), "ratio>=", 0.95,
     ">= 0.95x raw cudaMemcpyAsync"),
    ("H2D pageable", "rocmstreams", ("numba-cuda",), "ratio>=", 2.0,
     ">= 2x numba-cuda's to_device"),
]


def verdicts(f: Figures) -> list[dict[str, Any]]:
    rows = []
    for figure, ours_name, refs, kind, bound, text in TARGETS:
        ours = f.get(figure, ours_name)
        ref = _best(f.values.get(figure, {}), *refs)
        row: dict[str, Any] = {"figure": figure, "target": text}
        if ours is None or ref is None:
            row["missing"] = "a figure it needs was not measured"
        else:
            ratio = ref / ours if kind == "faster>=" else ours / ref
            row["ratio"] = round(ratio, 3)
            row["holds"] = ratio <= bound if kind == "ratio<=" else ratio >= bound
        rows.append(row)
    for figure in ("host memory growth", "device memory growth"):
        v = f.get(figure, "rocmstreams")
        row = {"figure": figure, "target": "flat (< 2 MiB)"}
        if v is None:
            row["missing"] = str(f.values.get(figure, {}).get("rocmstreams"))
        else:
            row["ratio"] = round(v, 3)
            row["holds"] = abs(v) < 2.0
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures and verdicts here")
    parser.add_argument("--quick", action="store_true", help="fewer calls, smaller copies")
    args = parser.parse_args()
    env = _common.environment()
    on_gpu = env["backend"] == "cuda"
    print(f"rocmstreams overhead on {env['backend']} ({env['device']}), {env['versions']}")
    if env["backend"] == "hip":
        print("  the hip backend is measured as rocmstreams only; the peers are CUDA's")
    f = measure(args.quick, on_gpu)
    libraries = ["rocmstreams", "rocmstreams (configured)", "C++ floor", "cuda.bindings",
                 "cuda.bindings driver", "cuda.core", "numba-cuda", "CuPy", "torch"]
    print()
    for figure, values in f.values.items():
        rows = []
        for lib in libraries:
            if lib not in values:
                continue
            v = values[lib]
            if isinstance(v, float):
                rows.append({"library": lib, "value": v})
            else:
                key = "missing" if v.startswith("missing") else "error"
                rows.append({"library": lib, "value": None, key: v.split(": ", 1)[-1]})
        _common.print_table(f"{figure} ({f.units.get(figure, '')})",
                            [("library", "library", ""), ("value", "value", ".3f")], rows)
    rows = verdicts(f)
    print()
    _common.print_table("targets" + ("" if on_gpu else " (cpu backend: figures only)"),
                        [("figure", "figure", ""), ("target", "target", ""),
                         ("ratio", "ours / peer", ".3f"), ("holds", "holds", "")], rows)
    if args.json:
        _common.write_json(args.json, {"benchmark": "overhead", "environment": env,
                                       "units": f.units, "figures": f.values,
                                       "targets": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
