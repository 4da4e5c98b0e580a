"""The public hot path without a GPU: ``s.query()``, ``s.synchronize()``, ``ev.record(s)``,
``s.record(ev)`` and ``kernel[grid, block, s](array, scalar)``, through the compiled calls into C
functions that do nothing.

The cuda backend is selected over the fake ``cuda.bindings.runtime`` and ``numba.cuda`` of
``python_overhead.py``; the driver library the compiled layer takes its entry points from is a
tiny library of no-op ``cuStreamQuery``, ``cuStreamSynchronize``, ``cuEventRecord`` and
``cuLaunchKernel`` built here with gcc (so no fake handle ever reaches a real driver). A launch
takes the prepared path: a fake Numba kernel of one float32 array and one float32 scalar, its
driver function a made-up handle. What is left of each call is rocmstreams' Python between the
user's call and the C call; the ``floor`` rows are the compiled call alone (one C call that does
nothing, the GIL released and taken back), what no Python around it can go under.

    python benchmarks/hot_path_offline.py [--calls N] [--repeat R] [--json PATH]
                                          [--profile FIGURE] [--python-path] [--smoke]

Each figure is the best mean of ``--repeat`` loops of ``--calls`` calls. ``--python-path`` runs
with ``ROCMSTREAMS_NATIVE_CALLS=0`` (the extension left out: every call through the binding).
"""
from __future__ import annotations

import ctypes
import os
import sys
import types
from pathlib import Path
from typing import Any, Callable

import _offline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

NOOPS = """\
int cuStreamQuery(void *s) { return 0; }
int cuStreamSynchronize(void *s) { return 0; }
int cuEventRecord(void *e, void *s) { return 0; }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                   unsigned bz, unsigned shm, void *s, void **params, void **extra) { return 0; }
"""
FIGURES = ("query", "synchronize", "event record", "stream record", "launch", "launch, new grid",
           "launch, new 2-D grid", "floor query",
           "floor launch")


def noop_library(workdir: Path) -> Path:
    return _offline.build_library(workdir, NOOPS)


# ---- a fake Numba kernel the prepared path takes ----------------------------------------------
class ArrayType:
    """What the prepared path reads of a Numba array type."""

    ndim = 1


Array = type("Array", (ArrayType,), {})  # the prepared path reads the type's name


class Float32:
    name = "float32"


FLOAT32 = Float32()
ARRAY_1D = Array()


class FakeDeviceArray:
    """A device array as numba.cuda's ``DeviceNDArray``: its interface, and room for the ABI
    values the prepared path caches on it."""

    def __init__(self, address: int, n: int) -> None:
        self.__cuda_array_interface__ = {"shape": (n,), "strides": None, "typestr": "<f4",
                                         "data": (address, False), "version": 3, "stream": None}


class Kernel:
    argument_types = (ARRAY_1D, FLOAT32)
    debug = cooperative = False
    extensions = ()


def fake_numba_for_launches(numba_cuda: types.ModuleType) -> None:
    """Give python_overhead's fake ``numba.cuda`` what a prepared launch reads."""
    kernel = Kernel()

    class Dispatcher:
        _can_compile = True
        _launch_config_sensitive = False

        def __init__(self, fn: Callable[..., Any]) -> None:
            self.py_func = fn
            self.__name__ = fn.__name__
            self.overloads = {(ARRAY_1D, FLOAT32): kernel}

        def typeof_pyval(self, value: Any) -> Any:
            return ARRAY_1D if isinstance(value, FakeDeviceArray) else FLOAT32

        def configure(self, grid: Any, block: Any, stream: Any, shared: int) -> Any:
            return lambda *args: None  # Numba's own launch: the first launch only

        def __getitem__(self, config: Any) -> Any:
            raise NotImplementedError("the fake numba.cuda launches only on RocmStreams")

    numba_cuda.jit = Dispatcher  # type: ignore[attr-defined]
    numba_cuda.cudadrv = types.SimpleNamespace(  # type: ignore[attr-defined]
        devicearray=types.SimpleNamespace(DeviceNDArray=FakeDeviceArray))


def kernel_driver_factory(native: Any, KernelDriver: type) -> Callable[[Any], Any]:
    def make(backend: Any) -> Any:
        ok = backend._success  # the fake binding's success (never called: bind_launch launches)
        return KernelDriver(launch=lambda *args: (ok,), success=ok,
                            function=lambda kernel: 0xF000, stream=lambda handle: handle,
                            error=lambda status, what: RuntimeError(what),
                            bind_launch=native.launch_binder(backend.native_entry_points()),
                            raw_stream=lambda handle: handle or 1)
    return make


def varying_grid_launch(kernel: Any, s: Any, a: Any, x: float,
                        two_d: bool = False) -> Callable[[], None]:
    """A launch whose grid is computed from each chunk's size, 5000 sizes in turn: more grids
    than the launch cache keeps (4096), so every launch takes the uncached path (``two_d``: a
    2-D grid of a 16 x 16 block, as an image kernel computes it)."""
    if two_d:
        grids: list[Any] = [((w + 15) // 16, 8) for w in range(16, 16 * 5001, 16)]
        block: Any = (16, 16)
    else:
        grids, block = [(n + 255) // 256 for n in range(256, 256 * 5001, 256)], 256
    at = [0]

    def launch() -> None:
        i = at[0] = (at[0] + 1) % 5000
        kernel[grids[i], block, s](a, x)
    return launch


# ---- one process --------------------------------------------------------------------------------
def setup(lib: Path) -> dict[str, Callable[[], Any]]:
    os.environ["ROCMSTREAMS_BACKEND"] = "cuda"
    import python_overhead
    python_overhead.install_fakes()
    fake_numba_for_launches(sys.modules["numba.cuda"])
    import rocmstreams as rs
    from rocmstreams.backends import KernelDriver, active, cuda, native
    # the compiled calls' entry points come from the no-op library, never from libcuda
    cuda._driver_library = lambda: ctypes.CDLL(str(lib))
    cuda._kernel_driver = kernel_driver_factory(native, KernelDriver)
    be = active()
    if not native.allowed_by_environment():
        assert not be.native_calls
    elif native.built():
        assert be.native_calls, "the compiled calls are not in use"
    s = rs.RocmStream(non_blocking=True)
    ev = rs.Event()
    kernel = sys.modules["numba.cuda"].jit(lambda a, x: None)
    kernel.__name__ = "axpy"
    a = FakeDeviceArray(0x7000_0000, 1024)
    x = 2.0
    kernel[4, 256, s](a, x)  # Numba's launch, which prepares the signature
    figures: dict[str, Callable[[], Any]] = {
        "query": s.query, "synchronize": s.synchronize,
        "event record": lambda: ev.record(s), "stream record": lambda: s.record(ev),
        "launch": lambda: kernel[4, 256, s](a, x),
        "launch, new grid": varying_grid_launch(kernel, s, a, x),
        "launch, new 2-D grid": varying_grid_launch(kernel, s, a, x, two_d=True),
    }
    if native.compiled is not None:
        no_op = ctypes.CDLL(str(lib))
        query = native.handle_call(ctypes.cast(no_op.cuStreamQuery, ctypes.c_void_p).value,
                                   0x1000)
        launch = native.compiled.KernelLaunch(
            ctypes.cast(no_op.cuLaunchKernel, ctypes.c_void_p).value, 0xF000, 0, 0)
        figures["floor query"] = query
        figures["floor launch"] = lambda: launch(4, 1, 1, 256, 1, 1, 0, 0x1000)
    return figures


def main() -> int:
    args = _offline.arguments(__doc__.splitlines()[0], FIGURES, 200_000)
    result = _offline.measure(args, "rocmstreams-hotpath-", noop_library, setup)
    if result is None:
        return 0
    path = "pure Python (ROCMSTREAMS_NATIVE_CALLS=0)" if args.python_path else "compiled calls"
    print(f"hot path over no-op C calls, {path}: ns per call, best of {args.repeat} x "
          f"{args.calls}")
    for name, ns in result.items():
        print(f"  {name:16s} {ns:8.1f}")
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({"benchmark": "hot_path_offline", "path": path,
                                               "ns": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
