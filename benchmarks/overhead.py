"""Host cost of rocmstreams' launches, stream and event calls, graphs and copies, beside its peers.

One run measures every figure of issue 4 for rocmstreams and, in the same process on the same GPU,
for raw cuda.bindings, cuda.core, numba-cuda, CuPy, torch and the C++ floor (``floor.cu``, built
with nvcc). It prints one table per figure with the ratio the target names, and writes the same as
JSON (``--json PATH``). A peer this machine lacks is reported as missing, with the reason. The
launch figure also has rocmstreams' launch with a grid that changes every call (the uncached
path) and its launch inside an open ``rs.trace()``, beside the headline launch with none open.

    python benchmarks/overhead.py [--json PATH] [--quick]

On the cpu backend (no GPU) the rocmstreams figures are measured at small sizes (20 launches a
round, 8 threads per block: the simulator runs each thread in Python) and every GPU peer is
reported missing: a smoke run of about 2 s, no targets.
"""
from __future__ import annotations

import argparse
import itertools
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
from typing import Any, Callable, Iterator

import numpy as np

if not hasattr(np, "row_stack"):  # numba 0.68 still names it; numpy 2.5 dropped it
    np.row_stack = np.vstack

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import rocmstreams as rs  # noqa: E402

HERE = Path(__file__).resolve().parent
LAUNCH_BURST = 200  # launches per timed burst: well under what a stream's queue holds
#: Distinct grids the "grid changes every call" row cycles through: more than the launch cache
#: holds (4096 configurations, rocmstreams/integrations/numba/dispatch.py), so that no grid is
#: still cached when it comes round again and the row times the uncached path
DISTINCT_GRIDS = 5000
#: Threads per block on the cpu backend, whose simulator runs each thread in Python (256 made a
#: smoke run spend most of its minute running kernels, not timing the host)
SIM_THREADS = 8
NOOP_SOURCE = ('extern "C" __global__ void noop(float* a, int n) '
               '{ int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) a[i] += 1.0f; }')


def changing_sizes() -> Iterator[int]:
    """Chunk sizes, DISTINCT_GRIDS of them in turn, whose grids ``(n + 255) // 256`` all differ."""
    return itertools.cycle(range(1000, 1000 + 257 * DISTINCT_GRIDS, 257))


def mean_changing_grid(launches: int = DISTINCT_GRIDS) -> int:
    """The mean of the grids :func:`changing_sizes` gives in its first ``launches`` launches
    (all of them once that many are made), rounded: a fixed grid as large."""
    sizes = range(1000, 1000 + 257 * min(max(launches, 1), DISTINCT_GRIDS), 257)
    return round(sum((n + 255) // 256 for n in sizes) / len(sizes))


def per_call_us(fn: Callable[[], Any], n: int, repeat: int = 3,
                after: Callable[[], Any] | None = None, burst: int | None = None) -> float:
    """Best over ``repeat`` runs of the mean host time of ``n`` calls, in microseconds.

    With ``burst``, the calls are timed in bursts of that many, each after an untimed
    ``after()`` (a synchronize): launches then measure what the host spends queueing them, not
    how fast the GPU drains a queue that thousands of back-to-back launches fill.
    """
    fn()
    if after:
        after()
    best = float("inf")
    for _ in range(repeat):
        if burst is None:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n * 1e6)
            if after:
                after()
            continue
        spent, bursts = 0.0, max(n // burst, 1)
        for _ in range(bursts):
            if after:
                after()
            t0 = time.perf_counter()
            for _ in range(burst):
                fn()
            spent += time.perf_counter() - t0
        best = min(best, spent / (bursts * burst) * 1e6)
    if after:
        after()
    return best


class Race:
    """Contenders of one figure, timed in alternating rounds so that drift (clocks, other load,
    the GPU's queue) falls on all of them alike; each one's figure is its best round.

    ``add(library, call, after=None)`` registers a contender whose round is the mean host time of
    ``n`` calls of ``call()`` (then ``after()``, untimed); ``add_once(library, measure)`` one whose
    round is whatever ``measure()`` returns (already a per-call figure or a rate)."""

    def __init__(self, figures: "Figures", figure: str, unit: str, n: int, rounds: int = 5,
                 best: Callable[[list[float]], float] = min, burst: int | None = None) -> None:
        self.f, self.figure, self.unit, self.n, self.rounds = figures, figure, unit, n, rounds
        self.best, self.burst = best, burst
        self.contenders: list[tuple[str, Callable[[], float]]] = []

    def add(self, library: str, call: Callable[[], Any],
            after: Callable[[], Any] | None = None, native: bool = True) -> None:
        """``native=False``: each round with rocmstreams' compiled calls turned off, so that
        every call goes through the Python binding (after the compiled call's refusal)."""
        def measure() -> float:
            return per_call_us(call, self.n, repeat=1, after=after, burst=self.burst)

        if native:
            self.add_once(library, measure)
        else:
            self.add_once(library, lambda: _native_off(measure))

    def add_once(self, library: str, measure: Callable[[], float]) -> None:
        self.contenders.append((library, measure))

    def run(self) -> None:
        rounds: dict[str, list[float]] = {lib: [] for lib, _ in self.contenders}
        failed: dict[str, str] = {}
        steps = [(lib, measure) for _ in range(self.rounds) for lib, measure in self.contenders]
        for lib, measure in _common.progress(
                steps, f"{self.figure}: {self.rounds} rounds x {len(self.contenders)} contenders"):
            if lib in failed:
                continue
            try:
                rounds[lib].append(measure())
            except Exception as exc:  # noqa: BLE001 - one failed peer is one reported row
                failed[lib] = f"error: {type(exc).__name__}: {exc}"[:200]
        for lib, _ in self.contenders:
            self.f.record(self.figure, lib, failed.get(lib) or self.best(rounds[lib]), self.unit)


class Figures:
    """Collects ``figure -> {library: value or missing reason}`` and the targets."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.units: dict[str, str] = {}

    def add(self, figure: str, library: str, measure: Callable[[], float], unit: str) -> None:
        try:
            value: float | str = measure()
        except Exception as exc:  # noqa: BLE001 - one failed peer is one reported row
            value = f"error: {type(exc).__name__}: {exc}"[:200]
        self.record(figure, library, value, unit)

    def record(self, figure: str, library: str, value: float | str, unit: str) -> None:
        self.units[figure] = unit
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
    from cuda.bindings import runtime
    _, device = runtime.cudaGetDevice()
    _, major = runtime.cudaDeviceGetAttribute(
        runtime.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device)
    _, minor = runtime.cudaDeviceGetAttribute(
        runtime.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device)
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
    rounds = 5 if on_gpu else 2
    threads = 256 if on_gpu else SIM_THREADS
    s = rs.RocmStream(non_blocking=True)
    a = rs.to_device(np.zeros(1024, np.float32), stream=s)
    one = np.float32(1.0)
    workdir = Path(tempfile.mkdtemp(prefix="rocmstreams-bench-"))

    floor, cubin, floor_missing = build_floor(workdir) if on_gpu else (None, None, "no GPU")
    if floor is None:
        for fig in ("launch", "stream query, idle", "stream synchronize, idle", "event record",
                    "graph replay per kernel"):
            f.missing(fig, "C++ floor", floor_missing or "not built")
    else:
        for fig, key in (("launch", "launch"), ("stream query, idle", "query"),
                         ("stream synchronize, idle", "idle_sync"),
                         ("event record", "event_record"),
                         ("graph replay per kernel", "graph_per_kernel")):
            f.values.setdefault(fig, {})["C++ floor"] = floor[key]

    # -- launch of a Numba kernel: one device array, one scalar; rounds alternate with peers --
    print("launch (one device array, one scalar), host us per launch", flush=True)
    # bursts of LAUNCH_BURST launches, synchronized between (untimed): the host's cost, which a
    # long back-to-back loop hides behind the GPU's own time per kernel (about as long)
    race = Race(f, "launch", "us", n_launch, rounds, burst=LAUNCH_BURST if on_gpu else None)
    race.add("rocmstreams", lambda: add_scalar[1, threads, s](a, one), after=s.synchronize)
    configured = add_scalar[1, threads, s]
    race.add("rocmstreams (configured)", lambda: configured(a, one), after=s.synchronize)
    race.add("rocmstreams (native off)", lambda: add_scalar[1, threads, s](a, one),
             after=s.synchronize, native=False)
    # the grid computed from each chunk's size, as users write it: DISTINCT_GRIDS sizes in turn,
    # so each launch's configuration is one the launch cache no longer holds
    sizes = changing_sizes()
    race.add("rocmstreams (grid changes every call)",
             lambda: add_scalar[(next(sizes) + 255) // 256, threads, s](a, one),
             after=s.synchronize)
    # the fixed-grid launch of a grid as large as those on average: the GPU's own time per
    # kernel grows with the grid, and within a burst it can hold up the host's launches, so the
    # changing grid's cost is read against this row (the headline row launches one block)
    large = mean_changing_grid((n_launch + 1) * rounds)  # what the changing row launches
    race.add("rocmstreams (fixed grid, as large)",
             lambda: add_scalar[large, threads, s](a, one), after=s.synchronize)
    # the same launch inside an open rs.trace() (each round a trace of its own): what a trace
    # costs per launch; the headline row, in the same rounds, is the launch with no trace open
    race.add_once("rocmstreams (inside rs.trace())", lambda: _traced(
        lambda: per_call_us(lambda: add_scalar[1, threads, s](a, one), race.n, repeat=1,
                            after=s.synchronize, burst=race.burst)))
    ours_rows = 6  # the rocmstreams rows above, each adding one to a[:threads] per launch
    closers = peers_launch(f, race, s, cubin) if on_gpu else []
    if not on_gpu:
        for peer in ("cuda.bindings", "cuda.core", "numba-cuda", "CuPy", "torch"):
            f.missing("launch", peer, "peers are measured on the cuda backend")
    race.run()
    for close in closers:
        close()
    got = a.copy_to_host(stream=s)
    s.synchronize()
    timed = n_launch if race.burst is None else max(n_launch // race.burst, 1) * race.burst
    ours = ours_rows * rounds * (timed + 1)  # each launch adds one; one untimed per round
    if not np.all(got[:threads] == ours):
        raise AssertionError(f"launches lost: a[0] = {got[0]}, expected {ours}")

    # -- stream query / synchronize / event record / create + close --
    print("stream and event calls, host us per call", flush=True)
    s.synchronize()
    ev = rs.Event()
    races = {fig: Race(f, fig, "us", n, rounds) for fig, n in (
        ("stream query, idle", n_calls), ("stream synchronize, idle", n_calls),
        ("event record", n_calls), ("stream create + close", max(n_calls // 10, 200)))}
    races["stream query, idle"].add("rocmstreams", s.query)
    races["stream synchronize, idle"].add("rocmstreams", s.synchronize)
    races["event record"].add("rocmstreams", lambda: ev.record(s), after=s.synchronize)
    races["stream query, idle"].add("rocmstreams (native off)", s.query, native=False)
    races["stream synchronize, idle"].add("rocmstreams (native off)", s.synchronize,
                                          native=False)
    races["event record"].add("rocmstreams (native off)", lambda: ev.record(s),
                              after=s.synchronize, native=False)
    races["stream create + close"].add("rocmstreams",
                                       lambda: rs.RocmStream(non_blocking=True).close())
    races["stream create + close"].add("rocmstreams (pool off)", _unpooled_create_close)
    closers = peers_stream_calls(f, races) if on_gpu else []
    if not on_gpu:
        for fig in races:
            for peer in ("cuda.bindings", "cuda.core", "numba-cuda"):
                f.missing(fig, peer, "peers are measured on the cuda backend")
    for race in races.values():
        race.run()
    for close in closers:
        close()

    # -- device memory: alloc + free of 4 MiB on a stream (the pools' cost) --
    print("alloc + free of 4 MiB on a stream, host us per pair", flush=True)
    mem = Race(f, "alloc + free 4 MiB", "us", n_calls, rounds)
    mem.add("rocmstreams", lambda: rs.empty(1 << 20, np.float32, stream=s))
    closers = peers_alloc_free(f, mem) if on_gpu else []
    if not on_gpu:
        for peer in ("CuPy", "torch"):
            f.missing("alloc + free 4 MiB", peer, "peers are measured on the cuda backend")
    mem.run()
    for close in closers:
        close()
    s.synchronize()

    # -- graph replay --
    print("graph replay, device us per kernel of a 100-kernel graph", flush=True)
    f.add("graph replay per kernel", "rocmstreams",
          lambda: min(graph_replay(s, a, add_scalar, 200 if on_gpu else 2, threads)
                      for _ in _common.progress(range(rounds), "graph replay, rounds")), "us")

    # -- copies --
    nbytes = (256 << 20) if on_gpu and not quick else (1 << 20)
    print(f"copies of {nbytes >> 20} MiB, GB/s (best single copy over alternating rounds)",
          flush=True)
    copies(f, s, nbytes, on_gpu, rounds=7 if on_gpu else 2)

    # -- memory over many launches --
    launches = (10**6 if on_gpu and not quick else 10**5) if on_gpu else 50
    print(f"memory over {launches} launches", flush=True)
    memory_flat(f, s, a, add_scalar, launches, threads)
    s.synchronize()
    s.close()
    return f


def _native_off(measure: Callable[[], float]) -> float:
    with rs.configure(native_calls=False):
        return measure()


def _traced(measure: Callable[[], float]) -> float:
    with rs.trace():
        return measure()


def peers_alloc_free(f: Figures, race: Race) -> list[Callable[[], None]]:
    """CuPy's and torch's alloc + free of 4 MiB on a stream of their own (their pools)."""
    closers: list[Callable[[], None]] = []
    try:
        import cupy as cp
    except Exception as exc:  # noqa: BLE001 - a missing peer is a row, not a failure
        f.missing("alloc + free 4 MiB", "CuPy", f"{type(exc).__name__}: {exc}")
    else:
        cs = cp.cuda.Stream(non_blocking=True)

        def cupy_pair() -> None:
            with cs:
                cp.empty(1 << 20, cp.float32)
        race.add("CuPy", cupy_pair)
        closers.append(cs.synchronize)
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
    except Exception as exc:  # noqa: BLE001
        f.missing("alloc + free 4 MiB", "torch", f"{type(exc).__name__}: {exc}")
    else:
        ts = torch.cuda.Stream()

        def torch_pair() -> None:
            with torch.cuda.stream(ts):
                torch.empty(1 << 20, dtype=torch.float32, device="cuda")
        race.add("torch", torch_pair)
        closers.append(ts.synchronize)
    return closers


def _unpooled_create_close() -> None:
    """Create + close with the stream pool off: a runtime create and destroy every time."""
    with rs.configure(stream_pool_size=0):
        rs.RocmStream(non_blocking=True).close()


def peers_launch(f: Figures, race: Race, s: rs.RocmStream,
                 cubin: Path | None) -> list[Callable[[], None]]:
    """Adds each peer's launch to ``race``; returns what closes their streams afterwards."""
    from cuda.bindings import driver

    from rocmstreams.kernels import add_scalar, cuda

    closers: list[Callable[[], None]] = []
    buf = rs.empty(1024, np.float32)
    nval = ctypes.c_int(1024)
    if cubin is not None:
        _, mod = driver.cuModuleLoad(str(cubin).encode())
        _, fn = driver.cuModuleGetFunction(mod, b"noop")
        ptr = ctypes.c_void_p(buf.ptr)
        packed = (ctypes.c_void_p * 2)(ctypes.addressof(ptr), ctypes.addressof(nval))
        addr, cs = ctypes.addressof(packed), driver.CUstream(s.handle)
        # (the parameter memory is a default argument: it must outlive the race)
        race.add("cuda.bindings", lambda keep=(ptr, nval, packed): driver.cuLaunchKernel(
            fn, 1, 1, 1, 256, 1, 1, 0, cs, addr, 0), after=s.synchronize)
        # The same raw call launching Numba's compiled add_scalar, its parameters packed by hand
        # in Numba's ABI: what the driver itself costs for the kernel rocmstreams launches.
        other = rs.empty(1024, np.float32)
        add_scalar[1, 256, s](other, np.float32(1.0))  # compiled before the race
        s.synchronize()
        compiled = next(iter(add_scalar.overloads.values()))
        numba_fn = driver.CUfunction(int(compiled._codelibrary.get_cufunc().handle))
        abi = [ctypes.c_int64(0), ctypes.c_int64(0), ctypes.c_int64(1024), ctypes.c_int64(4),
               ctypes.c_uint64(other.ptr), ctypes.c_int64(1024), ctypes.c_int64(4),
               ctypes.c_float(1.0)]
        abi_ptrs = (ctypes.c_void_p * len(abi))(*(ctypes.addressof(v) for v in abi))
        abi_addr = ctypes.addressof(abi_ptrs)
        race.add("cuda.bindings (Numba's kernel)",
                 lambda keep=(other, abi, abi_ptrs): driver.cuLaunchKernel(
                     numba_fn, 1, 1, 1, 256, 1, 1, 0, cs, abi_addr, 0), after=s.synchronize)
        try:
            from cuda.core import Device, LaunchConfig, ObjectCode, launch
            dev = Device()
            dev.set_current()
            kernel = ObjectCode.from_cubin(str(cubin)).get_kernel("noop")
            core_stream = dev.create_stream()
            mem = dev.allocate(4096, stream=core_stream)
            cfg, n32 = LaunchConfig(grid=1, block=256), np.int32(1024)
            race.add("cuda.core", lambda: launch(core_stream, cfg, kernel, mem, n32),
                     after=core_stream.sync)
            closers.append(lambda: (core_stream.sync(), core_stream.close()))
        except Exception as exc:  # noqa: BLE001 - reported as the peer's row
            f.record("launch", "cuda.core", f"error: {type(exc).__name__}: {exc}"[:200], "us")
    else:
        f.missing("launch", "cuda.bindings", "no cubin: nvcc missing")
        f.missing("launch", "cuda.core", "no cubin: nvcc missing")

    ns = cuda.stream()
    da = cuda.to_device(np.zeros(1024, np.float32))
    one = np.float32(1.0)
    race.add("numba-cuda", lambda: add_scalar[1, 256, ns](da, one), after=ns.synchronize)

    cp, why = _common.import_peer("cupy")
    if cp is None:
        f.missing("launch", "CuPy", why or "")
    else:
        k = cp.RawKernel(NOOP_SOURCE, "noop")
        x = cp.zeros(1024, cp.float32)
        cps = cp.cuda.Stream(non_blocking=True)
        n32 = np.int32(1024)
        def cupy_round() -> float:
            with cps:
                return per_call_us(lambda: k((1,), (256,), (x, n32)), race.n, repeat=1,
                                   after=cps.synchronize, burst=race.burst)
        race.add_once("CuPy", cupy_round)
    torch, why = _common.import_peer("torch")
    if torch is None:
        f.missing("launch", "torch", why or "")
    else:
        ts = torch.cuda.Stream()
        with torch.cuda.stream(ts):
            tx = torch.zeros(1024, device="cuda")
        ts.synchronize()

        def torch_round() -> float:
            with torch.cuda.stream(ts):
                return per_call_us(lambda: tx.add_(1.0), race.n, repeat=1, after=ts.synchronize,
                                   burst=race.burst)
        race.add_once("torch", torch_round)
    return closers


def peers_stream_calls(f: Figures, races: dict[str, Race]) -> list[Callable[[], None]]:
    """Adds each peer to the stream-call races; returns what frees their handles afterwards."""
    from cuda.bindings import driver, runtime

    closers: list[Callable[[], None]] = []
    _, raw_stream = runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking)
    _, raw_event = runtime.cudaEventCreateWithFlags(runtime.cudaEventDisableTiming)
    closers.append(lambda: (runtime.cudaStreamDestroy(raw_stream),
                            runtime.cudaEventDestroy(raw_event)))
    ds, de = driver.CUstream(int(raw_stream)), driver.CUevent(int(raw_event))
    q, sy, rec = (races["stream query, idle"], races["stream synchronize, idle"],
                  races["event record"])
    cc = races["stream create + close"]
    q.add("cuda.bindings", lambda: runtime.cudaStreamQuery(raw_stream))
    q.add("cuda.bindings driver", lambda: driver.cuStreamQuery(ds))
    sy.add("cuda.bindings", lambda: runtime.cudaStreamSynchronize(raw_stream))
    sy.add("cuda.bindings driver", lambda: driver.cuStreamSynchronize(ds))
    rec.add("cuda.bindings", lambda: runtime.cudaEventRecord(raw_event, raw_stream),
            after=lambda: runtime.cudaStreamSynchronize(raw_stream))
    rec.add("cuda.bindings driver", lambda: driver.cuEventRecord(de, ds),
            after=lambda: runtime.cudaStreamSynchronize(raw_stream))

    def runtime_create_close() -> None:
        _, h = runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking)
        runtime.cudaStreamDestroy(h)

    def driver_create_close() -> None:
        _, h = driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING)
        driver.cuStreamDestroy(h)
    cc.add("cuda.bindings", runtime_create_close)
    cc.add("cuda.bindings driver", driver_create_close)

    core, why = _common.import_peer("cuda.core")
    if core is None:
        for fig in ("stream synchronize, idle", "event record", "stream create + close"):
            f.missing(fig, "cuda.core", why or "")
    else:
        dev = core.Device()
        dev.set_current()
        cs = dev.create_stream()
        cev = cs.record()
        sy.add("cuda.core", cs.sync)
        rec.add("cuda.core", lambda: cs.record(cev), after=cs.sync)
        cc.add("cuda.core", lambda: dev.create_stream().close())
        closers.append(cs.close)
        f.missing("stream query, idle", "cuda.core", "cuda.core 1.2 Stream has no query")

    cp, why = _common.import_peer("cupy")
    if cp is None:
        f.missing("stream query, idle", "CuPy", why or "")
    else:
        cps = cp.cuda.Stream(non_blocking=True)
        q.add("CuPy", lambda: cps.done)
    torch, why = _common.import_peer("torch")
    if torch is None:
        f.missing("stream query, idle", "torch", why or "")
    else:
        ts = torch.cuda.Stream()
        q.add("torch", ts.query)

    from rocmstreams.kernels import cuda
    ns = cuda.stream()
    f.missing("stream query, idle", "numba-cuda", "numba-cuda streams have no query")
    sy.add("numba-cuda", ns.synchronize)
    nev = cuda.event(timing=False)
    rec.add("numba-cuda", lambda: nev.record(ns), after=ns.synchronize)
    cc.add("numba-cuda", lambda: cuda.stream())
    return closers


def graph_replay(s: rs.RocmStream, a: Any, kernel: Any, replays: int, threads: int) -> float:
    """Device time per kernel of a captured 100-launch graph, replayed ``replays`` times."""
    if not hasattr(s, "capture"):
        raise RuntimeError("this rocmstreams has no graph capture")
    one = np.float32(1.0)
    before = a.copy_to_host(stream=s)
    s.synchronize()
    with s.capture() as graph:
        for _ in range(100):
            kernel[1, threads, s](a, one)
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
    added = after - before  # the kernel's one block adds to a[:threads] only
    if not (np.all(added[:threads] == 100 * (replays + 1)) and not np.any(added[threads:])):
        raise AssertionError(f"graph replays did not add 100 per replay to a[:{threads}] alone")
    return per_kernel


def copies(f: Figures, s: rs.RocmStream, nbytes: int, on_gpu: bool, rounds: int) -> None:
    """Each figure: the best single copy (host time from the call to the end of its stream's
    synchronize), over rounds that alternate rocmstreams and its peer."""
    count = nbytes // 4
    pinned = rs.pinned_empty(count, np.float32)
    pinned[:] = np.random.default_rng().standard_normal(count, dtype=np.float32)
    back = rs.pinned_empty(count, np.float32)
    pageable = np.random.default_rng().standard_normal(count, dtype=np.float32)
    d = rs.empty(count, np.float32)

    def rate(call: Callable[[], Any], sync: Callable[[], Any]) -> Callable[[], float]:
        def one() -> float:
            sync()
            t0 = time.perf_counter()
            call()
            sync()
            return nbytes / (time.perf_counter() - t0) / 1e9
        return one

    races = {fig: Race(f, fig, "GB/s", 1, rounds, best=max)
             for fig in ("H2D pinned", "D2H pinned", "H2D pageable")}
    races["H2D pinned"].add_once("rocmstreams", rate(lambda: rs.copy_async(d, pinned, stream=s),
                                                     s.synchronize))
    races["D2H pinned"].add_once("rocmstreams", rate(lambda: rs.copy_async(back, d, stream=s),
                                                     s.synchronize))
    races["H2D pageable"].add_once("rocmstreams",
                                   rate(lambda: rs.copy_async(d, pageable, stream=s),
                                        s.synchronize))
    if on_gpu:
        from cuda.bindings import runtime
        hs = runtime.cudaStream_t(s.handle)
        h2d, d2h = runtime.cudaMemcpyKind.cudaMemcpyHostToDevice, \
            runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hp, bp = pinned.ctypes.data, back.ctypes.data
        races["H2D pinned"].add_once("cuda.bindings", rate(
            lambda: runtime.cudaMemcpyAsync(d.ptr, hp, nbytes, h2d, hs), s.synchronize))
        races["D2H pinned"].add_once("cuda.bindings", rate(
            lambda: runtime.cudaMemcpyAsync(bp, d.ptr, nbytes, d2h, hs), s.synchronize))
        from rocmstreams.kernels import cuda
        nd = cuda.device_array(count, np.float32)
        ns = cuda.stream()
        races["H2D pageable"].add_once("numba-cuda", rate(
            lambda: cuda.to_device(pageable, stream=ns, to=nd), ns.synchronize))
    else:
        for fig in races:
            f.missing(fig, "cuda.bindings" if "pinned" in fig else "numba-cuda",
                      "peers are measured on the cuda backend")
    for fig in ("H2D pinned", "D2H pinned"):
        races[fig].run()
    if not np.array_equal(back, pinned):
        raise AssertionError("pinned round trip changed the data")
    races["H2D pageable"].run()
    check = d.copy_to_host(stream=s)
    s.synchronize()
    if not np.array_equal(check, pageable):
        raise AssertionError("pageable H2D changed the data")


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_flat(f: Figures, s: rs.RocmStream, a: Any, kernel: Any, launches: int,
                threads: int) -> None:
    one = np.float32(1.0)
    for _ in range(1000 if launches >= 1000 else 5):  # warm: caches filled before the first read
        kernel[1, threads, s](a, one)
    s.synchronize()
    gc.collect()
    device_free = _device_free()
    host0, dev0 = _rss_mib(), device_free()
    step = max(launches // 10, 1)
    for first in _common.progress(range(0, launches, step), f"{launches} launches, by {step}"):
        for i in range(first, min(first + step, launches)):
            kernel[1, threads, s](a, one)
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
    ("launch", "rocmstreams (grid changes every call)", ("rocmstreams (fixed grid, as large)",),
     "ratio<=", 1.1, "grid changing every call <= 1.1x the fixed-grid launch as large"),
    ("launch", "rocmstreams (grid changes every call)", ("rocmstreams",), "report", 0.0,
     "grid changing every call / fixed launch of one block (the GPU's time in it too)"),
    ("launch", "rocmstreams (inside rs.trace())", ("rocmstreams",), "report", 0.0,
     "inside an open rs.trace() / no trace open: the trace's cost, paid only inside one"),
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
            if kind != "report":  # a report is a figure to read, with no bound to hold
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
    parser.add_argument("--quick", "--smoke", action="store_true",
                        help="fewer calls, smaller copies (a smoke run on any backend)")
    args = parser.parse_args()
    env = _common.environment()
    on_gpu = env["backend"] == "cuda"
    print(f"rocmstreams overhead on {env['backend']} ({env['device']}), {env['versions']}, "
          f"native calls {'in use' if env['native_calls'] else 'not in use'}")
    if env["backend"] == "hip":
        print("  the hip backend is measured as rocmstreams only; the peers are CUDA's")
    f = measure(args.quick, on_gpu)
    libraries = ["rocmstreams", "rocmstreams (configured)", "rocmstreams (grid changes every call)",
                 "rocmstreams (inside rs.trace())", "rocmstreams (pool off)", "rocmstreams (native off)", "C++ floor",
                 "cuda.bindings", "cuda.bindings (Numba's kernel)",
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
