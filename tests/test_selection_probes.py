"""Issue 11, points 2 and 3, kept fixed without ROCm or numba-hip: automatic selection survives
every probe failure and says why each backend was passed over, and every way numba-hip's import
fails becomes a BackendUnavailableError that says what is missing.

``tests/test_numba_hip_offline.py`` meets the same failures for real, in the offline numba-hip
environment; these run in the main suite's environment with stand-ins.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import rocmstreams as rs
from rocmstreams import backends
from rocmstreams.backends import hip as hip_backend

ROOT = Path(__file__).resolve().parents[1]

# Started before anything else in the child (``sitecustomize`` on PYTHONPATH): hip-python-
# interop's HIP-backed ``cuda.bindings.runtime`` in miniature (NVIDIA's module, where installed,
# less ``cudaStreamLegacy``, so that numba-cuda's simulator still imports beside it), and a
# ``rocm.bindings.hip`` whose first call fails as HIP_FAILURE says.
SITECUSTOMIZE = """
import sys, types
try:
    import cuda.bindings.runtime as nvidia
except ImportError:
    nvidia = None


class HipBackedRuntime(types.ModuleType):
    def __getattr__(self, name):
        if name == "cudaStreamLegacy" or nvidia is None:
            raise AttributeError(f"module 'cuda.bindings.runtime' has no attribute {{name!r}}")
        return getattr(nvidia, name)


runtime = HipBackedRuntime("cuda.bindings.runtime")
runtime.__file__ = "site-packages/cuda/bindings/runtime.py, hip-python-interop's"
sys.modules["cuda.bindings.runtime"] = runtime
if nvidia is not None:
    sys.modules["cuda.bindings"].runtime = runtime

rocm, bindings, hip = map(types.ModuleType, ("rocm", "rocm.bindings", "rocm.bindings.hip"))


def hipGetDeviceCount():
    raise {hip_failure}


hip.hipGetDeviceCount = hipGetDeviceCount
rocm.bindings, bindings.hip = bindings, hip
sys.modules.update({{"rocm": rocm, "rocm.bindings": bindings, "rocm.bindings.hip": hip}})
"""


def info_with_stand_ins(tmp_path, hip_failure: str) -> subprocess.CompletedProcess:
    """``python -m rocmstreams info`` with ROCMSTREAMS_BACKEND unset, the HIP-backed
    ``cuda.bindings.runtime`` and a hip-python whose first call raises ``hip_failure``."""
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE.format(hip_failure=hip_failure))
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROCMSTREAMS_BACKEND", "ROCMSTREAMS_HIP_KERNELS")}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{ROOT}"
    return subprocess.run([sys.executable, "-m", "rocmstreams", "info"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_info_passes_over_a_hip_backed_cuda_bindings_runtime_and_says_why(tmp_path):
    proc = info_with_stand_ins(tmp_path, 'RuntimeError("failed to dlopen libamdhip64.so")')
    assert proc.returncode == 0, proc.stderr
    backend, not_cuda, not_hip = proc.stdout.splitlines()[:3]
    assert backend == "backend: cpu"
    assert not_cuda == (
        "  not cuda: cuda.bindings.runtime here (site-packages/cuda/bindings/runtime.py, "
        "hip-python-interop's) is not NVIDIA's: hip-python-interop (which numba-hip needs) "
        "installs a HIP-backed module under that name. Use the hip backend in this environment, "
        "or another virtual environment with the [cuda] extra")
    assert not_hip.startswith("  not hip: hip-python could not load libamdhip64.so")


def test_info_passes_over_a_probe_that_raises_something_unexpected(tmp_path):
    proc = info_with_stand_ins(tmp_path, 'ValueError("nothing any probe expects")')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "backend: cpu"
    assert "  not hip: the hip probe failed: ValueError: nothing any probe expects" in lines


def test_selection_keeps_each_failed_probes_reason_and_takes_the_next(monkeypatch):
    unavailable = rs.BackendUnavailableError("no NVIDIA GPU", backend="cuda")
    cpu = object()

    def load(name):
        if name == "cuda":
            raise unavailable
        if name == "hip":
            raise KeyError("hipDeviceAttribute")
        return cpu

    monkeypatch.delenv("ROCMSTREAMS_BACKEND", raising=False)
    monkeypatch.setattr(backends, "_load", load)
    monkeypatch.setattr(backends, "PROBES", {})
    assert backends._choose() is cpu
    assert list(backends.PROBES) == ["cuda", "hip"]
    assert backends.PROBES["cuda"] is unavailable
    hip_reason = backends.PROBES["hip"]
    assert isinstance(hip_reason, rs.BackendUnavailableError) and hip_reason.backend == "hip"
    assert "the hip probe failed: KeyError: 'hipDeviceAttribute'" in str(hip_reason)


class LibclangError(Exception):
    """Named as numba-hip's libclang bindings name theirs (``clang.cindex.LibclangError``)."""


NUMBA_HIP_FAILURES = {  # id: (what numba-hip 0.2.1's import raised, what the advice names)
    "nvidia-cuda-bindings": (
        AttributeError("module 'cuda.bindings.runtime' has no attribute 'CUjitInputType'"),
        "NVIDIA's cuda-bindings (numba-cuda brings it) overwrote hip-python-interop's "
        "HIP-backed cuda.bindings; install rocmstreams[rocm] into a virtual environment "
        "without cuda-bindings or numba-cuda"),
    "libclang": (
        LibclangError("libclang.so: cannot open shared object file"),
        "numba-hip parses HIP headers with libclang (22 works, 15 does not): set "
        "NUMBA_HIP_LIBCLANG_FILE to it, or provide $ROCM_PATH/llvm/lib/libclang.so"),
    "clang-headers": (
        FileNotFoundError("no clang resource directory found for libclang "
                          "'/opt/rocm/llvm/lib/libclang.so'"),
        "libclang needs its resource headers: $ROCM_PATH/llvm/lib/clang/<version> "
        "(Debian: libclang-common-<version>-dev)"),
    "hiprtc": (
        RuntimeError("could not locate the hiprtc-builtins library"),
        "numba-hip needs ROCm's libhiprtc-builtins.so under $ROCM_PATH/lib"),
    "comgr": (
        RuntimeError("failed to dlopen 'libamd_comgr.so'"),
        "numba-hip needs ROCm's code-object manager, $ROCM_PATH/lib/libamd_comgr.so"),
    "sysdeps": (
        ImportError("librocm_sysdeps_z.so.1: cannot open shared object file"),
        "numba-hip's LLVM needs ROCm's librocm_sysdeps_z/zstd.so.1 (in "
        "$ROCM_PATH/lib/rocm_sysdeps/lib, on LD_LIBRARY_PATH)"),
    "anything-else": (
        ModuleNotFoundError("No module named 'numba.hip'"),
        "`pip install rocmstreams[rocm]` on a machine with ROCm, with ROCM_PATH set to it"),
}


@pytest.mark.parametrize("failure", list(NUMBA_HIP_FAILURES))
def test_each_numba_hip_import_failure_becomes_backend_unavailable_with_its_advice(
        failure, monkeypatch):
    raised, advice = NUMBA_HIP_FAILURES[failure]

    def numba_hip():
        raise raised

    monkeypatch.delenv("ROCMSTREAMS_HIP_KERNELS", raising=False)
    monkeypatch.setattr(hip_backend, "_numba_hip", numba_hip)
    with pytest.raises(rs.BackendUnavailableError) as info:
        hip_backend._kernel_module()
    assert str(info.value) == (
        f"kernels on the hip backend need numba-hip, which did not import "
        f"({type(raised).__name__}: {raised}): {advice}")
    assert info.value.__cause__ is raised

