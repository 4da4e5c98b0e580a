"""Import order: a script that imports numba.cuda and defines its kernel before rocmstreams.

On the GPU backends the kernel launches on a RocmStream as usual. On the cpu backend numba.cuda
picks its simulator once, when it is imported, so a numba-first script cannot be switched late:
rocmstreams refuses with one error that says what to do, before any stream exists.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

NUMBA_FIRST = textwrap.dedent("""
    import numpy as np
    from numba import cuda

    @cuda.jit
    def plus_one(a):
        i = cuda.grid(1)
        if i < a.size:
            a[i] += 1

    import rocmstreams as rs
    x = np.random.default_rng().random(1000).astype(np.float32)
    s = rs.RocmStream()
    d = rs.to_device(x, stream=s)
    plus_one[(x.size + 255) // 256, 256, s](d)
    np.testing.assert_allclose(d.copy_to_host(stream=s), x + 1, rtol=1e-6)
    print("ran on", rs.backend().name)
""")


def _numba_first(backend_name: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["ROCMSTREAMS_BACKEND"] = backend_name
    return subprocess.run([sys.executable, "-c", NUMBA_FIRST], capture_output=True, text=True,
                          timeout=300, env=env)


def test_a_numba_first_script_runs_its_kernel_or_is_told_what_to_do(backend):
    done = _numba_first(backend.name)
    if backend.name != "cpu":
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"ran on {backend.name}" in done.stdout
        return
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rocmstreams.errors.BackendUnavailableError"), done.stderr[-3000:]
    assert "NUMBA_ENABLE_CUDASIM=1" in last and "before importing numba.cuda" in last
    assert "TypeError" not in done.stderr  # refused at the first stream, not at the launch


def test_a_numba_first_script_with_the_simulator_chosen_first_runs_on_cpu():
    """What the refusal tells the user to do works (on any machine: the cpu backend is forced)."""
    env = {**os.environ, "ROCMSTREAMS_BACKEND": "cpu", "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run([sys.executable, "-c", NUMBA_FIRST], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ran on cpu" in done.stdout
