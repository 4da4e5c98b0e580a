"""Numba's own allocations through rocmstreams' pools: the EMM plugin (opt in)."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import rocmstreams as rs
from conftest import needs_gpu

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full = {**os.environ, "PYTHONPATH": path, **env}
    full.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full,
                          capture_output=True, text=True, timeout=300)


def test_the_plugin_is_a_numba_emm_plugin_of_interface_version_1():
    # numba.cuda in GPU mode imports without a GPU; set_memory_manager checks the version
    proc = _run("""
        from numba import cuda
        from rocmstreams.integrations.numba.memory_manager import plugin_class
        cls = plugin_class(cuda)
        cuda.set_memory_manager(cls)
        print("OK", issubclass(cls, cuda.HostOnlyCUDAMemoryManager),
              cls(context=None).interface_version)
    """)
    assert "OK True 1" in proc.stdout, proc.stdout + proc.stderr


def test_the_module_numba_reads_from_the_environment_names_the_plugin():
    proc = _run("""
        import importlib
        from numba import cuda
        mm = importlib.import_module("rocmstreams.integrations.numba.memory_manager")
        from rocmstreams.integrations.numba.memory_manager import plugin_class
        print("SAME", mm.__getattr__("_numba_memory_manager") is plugin_class(cuda))
    """, ROCMSTREAMS_BACKEND="cuda")
    if "BackendUnavailableError" in proc.stderr:
        import pytest
        pytest.skip("no cuda backend here")
    assert "SAME True" in proc.stdout, proc.stdout + proc.stderr


def test_use_for_numba_has_nothing_to_install_on_the_cpu_simulator():
    if rs.backend().name != "cpu":
        import pytest
        pytest.skip("the cpu backend's simulator")
    assert rs.use_for_numba() is False


@needs_gpu
def test_numba_device_arrays_come_from_the_pool_when_the_plugin_is_on():
    proc = _run("""
        import gc
        import numpy as np
        import rocmstreams as rs
        assert rs.use_for_numba()
        from numba import cuda
        base = rs.memory_stats()
        a = cuda.device_array(1000, np.float32)
        grown = rs.memory_stats()
        a.copy_to_device(np.arange(1000, dtype=np.float32))
        back = a.copy_to_host()
        del a
        gc.collect()
        rs.empty_cache()
        after = rs.memory_stats()
        print("GREW", grown["allocations"] - base["allocations"],
              grown["in_use_bytes"] - base["in_use_bytes"])
        print("FREED", after["frees"] - base["frees"], after["in_use_bytes"] == base["in_use_bytes"])
        print("DATA", bool((back == np.arange(1000)).all()))
    """, ROCMSTREAMS_BACKEND=rs.backend().name)
    out = proc.stdout + proc.stderr
    assert "GREW 1 4000" in out and "FREED 1 True" in out and "DATA True" in out, out
