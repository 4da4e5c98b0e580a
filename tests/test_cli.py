"""The command line: info and the demo pipeline."""
import os
import subprocess
import sys

import pytest


def _cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "rocmstreams", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


def test_info_names_the_backend_devices_and_priority_range(backend):
    out = _cli("info")
    assert out.returncode == 0, out.stderr
    assert f"backend: {backend.name}" in out.stdout
    assert "device 0:" in out.stdout and "stream priorities" in out.stdout


def test_demo_runs_the_pipeline_and_checks_it_against_numpy(backend):
    out = _cli("demo", "--n", "20000", "--chunks", "8")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "-> OK" in out.stdout and f"backend {backend.name}" in out.stdout


def test_no_command_prints_help_and_version_prints_the_version():
    out = _cli()
    assert out.returncode == 0 and "usage:" in out.stdout and "demo" in out.stdout
    assert _cli("--version").stdout.strip().startswith("rocmstreams ")


@pytest.mark.parametrize("option", ["--streams", "--chunks", "--n"])
def test_demo_options_below_one_are_refused_with_a_message_not_a_traceback(option):
    out = _cli("demo", option, "0")
    assert out.returncode == 2 and "must be at least 1" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unavailable_backend_is_one_line_that_says_what_to_install(backend):
    if backend.name == "cuda":
        pytest.skip("cuda works here")
    out = _cli("info", ROCMSTREAMS_BACKEND="cuda")
    if out.returncode == 0:
        pytest.skip("cuda works on this machine too")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "install" in out.stderr


def test_demo_writes_its_timeline_and_chrome_trace(backend, tmp_path):
    pytest.importorskip("matplotlib")
    png, trace = tmp_path / "timeline.png", tmp_path / "trace.json"
    out = _cli("demo", "--n", "4096", "--chunks", "4", "--plot", str(png), "--trace", str(trace))
    assert out.returncode == 0, out.stdout + out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json
    events = json.loads(trace.read_text())["traceEvents"]
    assert len({e["tid"] for e in events}) == 4  # one track per stream
