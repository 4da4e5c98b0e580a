"""The command line: info and the demo pipeline."""
import os
import subprocess
import sys


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rocmstreams", *args], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ))


def test_info_names_the_backend_devices_and_priority_range(backend):
    out = _cli("info")
    assert out.returncode == 0, out.stderr
    assert f"backend: {backend.name}" in out.stdout
    assert "device 0:" in out.stdout and "stream priorities" in out.stdout


def test_demo_runs_the_pipeline_and_checks_it_against_numpy(backend):
    out = _cli("demo", "--n", "20000", "--chunks", "8")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "-> OK" in out.stdout and f"backend {backend.name}" in out.stdout
