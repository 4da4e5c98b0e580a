"""Python-side cost of the hot stream calls, without a GPU: the binding's path against the
compiled layer's, over a fake runtime whose calls do nothing.

The binding's path is ``RuntimeStreamCalls`` over a HIP-named fake binding whose calls return a
ready-made ``(0,)`` (cheaper than any real binding: cuda.bindings' wrappers cost 0.3-0.5 us each,
the ``reference`` rows). The compiled path is ``NativeStreamCalls`` over C functions that return
0 (a tiny library built with gcc). ``core`` rows go through the stream core's door as
``RocmStream.query()`` and ``Event.record()`` do. What a real runtime call costs comes on top of
every row alike.

    python benchmarks/hot_calls_offline.py [--json PATH] [--smoke]
"""
from __future__ import annotations

import argparse
import ctypes
import shutil
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from rocmstreams.backends import native  # noqa: E402
from rocmstreams.backends.runtime import (NativeStreamCalls, NumbaKernels,  # noqa: E402
                                          RuntimeAdapter, RuntimeBackend, RuntimeStreamCalls)
from rocmstreams.streamcore import StreamCore  # noqa: E402

NOOPS = "int noop1(void *a) { return 0; }\nint noop2(void *a, void *b) { return 0; }\n"
STREAM, EVENT = 0x1000, 0x2000


class NoopBinding:
    """Every ``fake<Name>`` call answers ``(0,)`` at once."""

    OK = (0,)

    def __getattr__(self, attr: str) -> Callable[..., tuple]:
        ok = self.OK
        return lambda *args: ok


def _noop_library(workdir: Path) -> ctypes.CDLL | None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    src, lib = workdir / "noops.c", workdir / "libnoops.so"
    src.write_text(NOOPS)
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return ctypes.CDLL(str(lib))


def _backend(points: Callable[[], native.EntryPoints | None] | None) -> RuntimeBackend:
    adapter = RuntimeAdapter(
        name="fake", binding=NoopBinding(), prefix="fake", packages=(), stream_non_blocking=1,
        event_disable_timing=2, host_alloc_flags=0, memcpy_default=0, capture_mode_global=0,
        capture_status_none=0, not_ready=600, out_of_memory=2, invalid_device=101,
        capture_codes=frozenset(), legacy_stream=1, host_alloc="HostMalloc",
        host_free="HostFree", error_enum=int, device_name=lambda call, i: (0, b"fake"),
        format_version=str, kernels=NumbaKernels(lambda: None), native_entry_points=points)
    return RuntimeBackend(adapter)


def per_call_ns(fn: Callable[[], Any], n: int) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9


def measure(n: int) -> tuple[list[dict[str, Any]], str | None]:
    rows: list[dict[str, Any]] = []
    why = None
    with tempfile.TemporaryDirectory() as tmp:
        lib = _noop_library(Path(tmp)) if native.compiled is not None else None
        if lib is None:
            why = ("the compiled layer is not built" if not native.built()
                   else "ROCMSTREAMS_NATIVE_CALLS=0 left the compiled layer out"
                   if native.compiled is None else "no C compiler for the no-op library")
        paths: dict[str, RuntimeBackend] = {"binding": _backend(None)}
        if lib is not None:
            a1 = ctypes.cast(lib.noop1, ctypes.c_void_p).value or 0
            a2 = ctypes.cast(lib.noop2, ctypes.c_void_p).value or 0
            points = native.EntryPoints(a1, a1, a2, a1)
            paths["compiled"] = _backend(lambda: points)
        for path, be in paths.items():
            calls = be.stream_calls(STREAM)
            assert isinstance(calls, NativeStreamCalls) is (path == "compiled")
            core = StreamCore(be, STREAM, 0, owned=False)
            cases = {"calls.query()": calls.query, "calls.event_record(e)":
                     lambda: calls.event_record(EVENT), "calls.synchronize()": calls.synchronize,
                     "core.query()": core.query, "core.record(e)": lambda: core.record(EVENT)}
            for case, fn in cases.items():
                rows.append({"path": path, "call": case, "ns": per_call_ns(fn, n)})
                if path == "compiled" and case.startswith("core"):
                    native.set_enabled(False)
                    try:
                        rows.append({"path": "compiled, turned off", "call": case,
                                     "ns": per_call_ns(fn, n)})
                    finally:
                        native.set_enabled(True)
        rows += _reference(n)
    return rows, why


def _reference(n: int) -> list[dict[str, Any]]:
    """What cuda.bindings' own wrappers cost per call (here without a driver: each answers
    cudaErrorInsufficientDriver, the same work as a success)."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        return [{"path": "reference", "call": "cuda.bindings", "missing": str(exc)}]
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        pass
    else:  # a real driver would take the fake handles below as its own (a segfault on the H200)
        return [{"path": "reference", "call": "cuda.bindings",
                 "missing": "a CUDA driver is installed here: benchmarks/overhead.py measures "
                            "the real calls"}]
    s, e = runtime.cudaStream_t(STREAM), runtime.cudaEvent_t(EVENT)
    return [{"path": "reference", "call": "cuda.bindings cudaStreamQuery(s)",
             "ns": per_call_ns(lambda: runtime.cudaStreamQuery(s), n)},
            {"path": "reference", "call": "cuda.bindings cudaEventRecord(e, s)",
             "ns": per_call_ns(lambda: runtime.cudaEventRecord(e, s), n)}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--smoke", action="store_true", help="fewer calls")
    args = parser.parse_args()
    rows, why = measure(20_000 if args.smoke else 200_000)
    if why:
        rows.append({"path": "compiled", "call": "every call", "missing": why})
    _common.print_table("hot calls, Python side, ns per call (no GPU)",
                        [("path", "path", ""), ("call", "call", ""), ("ns", "ns", ".0f")], rows)
    if args.json:
        _common.write_json(args.json, {"benchmark": "hot_calls_offline", "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
