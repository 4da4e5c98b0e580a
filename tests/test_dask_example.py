"""The Dask example runs on a local cluster of one worker per (simulated) device, each task a
rocmstreams pipeline on its worker's device, every result checked against numpy."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rocmstreams as rs

pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "dask_devices.py"


def _example():
    spec = importlib.util.spec_from_file_location("dask_devices", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dask_devices"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def two_devices():
    with rs.configure(cpu_devices=2):
        if rs.device_count() < 2:
            pytest.skip(f"needs two devices, {rs.device_count()} here")
        yield


def test_each_worker_runs_its_tasks_on_its_own_device(two_devices):
    results = _example().run(tasks=4, size=1024, processes=False)
    assert len(results) == 4
    assert {r["device"] for r in results} == {0, 1}  # run() checked each against numpy


@pytest.mark.skipif(rs.backend().name != "cpu", reason="the subprocess simulates its devices")
def test_the_example_runs_with_worker_processes_on_the_cpu_backend():
    done = subprocess.run([sys.executable, str(EXAMPLE), "--tasks", "4", "--size", "1024"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "ROCMSTREAMS_BACKEND": "cpu", "ROCMSTREAMS_CPU_DEVICES": "2"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on devices [0, 1]" in done.stdout and "all match numpy" in done.stdout
