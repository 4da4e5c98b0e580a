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


def _auto(*args):
    """The CLI with ROCMSTREAMS_BACKEND unset: automatic selection."""
    env = {k: v for k, v in os.environ.items() if k != "ROCMSTREAMS_BACKEND"}
    return subprocess.run([sys.executable, "-m", "rocmstreams", *args], capture_output=True,
                          text=True, timeout=600, env=env)


def test_backend_cpu_info_says_the_backend_was_requested():
    out = _auto("--backend", "cpu", "info")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["backend: cpu", "  taken: requested by --backend cpu"]


def test_info_says_what_requested_the_backend_through_the_environment(backend):
    out = _cli("info", ROCMSTREAMS_BACKEND=backend.name)
    assert out.returncode == 0, out.stderr
    assert f"  taken: requested by ROCMSTREAMS_BACKEND={backend.name}" in out.stdout.splitlines()


def test_a_requested_backend_still_says_for_each_other_whether_it_loads_and_why_not():
    env = {k: v for k, v in os.environ.items()
           if k not in ("ROCMSTREAMS_BACKEND", "NUMBA_ENABLE_CUDASIM")}
    out = subprocess.run([sys.executable, "-m", "rocmstreams", "--backend", "cpu", "info"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for name in ("cuda", "hip"):
        said = [line for line in lines if line == f"  {name}: loads here too (not requested)"
                or line.startswith(f"  not {name}: ")]
        assert len(said) == 1, (name, out.stdout)
        assert said[0].endswith("(not requested)") or len(said[0]) > len(f"  not {name}: ") + 10
        # the cpu backend, loaded for the command, switches numba to its simulator there; the
        # probe of each other backend sees the environment as the command found it
        assert "NUMBA_ENABLE_CUDASIM" not in said[0], said[0]


def test_automatic_selection_says_why_it_passed_over_each_backend_before_the_one_it_took():
    out = _auto("info")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    taken = lines[0].removeprefix("backend: ")
    order = ["cuda", "hip", "cpu"]
    passed_over = order[:order.index(taken)]
    assert [line.split(":")[0] for line in lines[1:1 + len(passed_over)]] == [
        f"  not {name}" for name in passed_over]
    assert lines[1 + len(passed_over)] == "  taken: the first that loaded in the order cuda, hip, cpu"


def test_the_demo_on_the_cpu_backend_labels_its_gb_s_as_simulated():
    out = _auto("--backend", "cpu", "demo", "--n", "4096", "--chunks", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    rate = next(line for line in out.stdout.splitlines() if "GB/s" in line)
    assert "GB/s simulated: the cpu backend's copies are host memcpys, not a link" in rate


@pytest.mark.parametrize("option", ["--plot", "--trace"])
@pytest.mark.parametrize("where", ["missing folder", "file as folder", "a folder"])
def test_demo_refuses_an_output_path_it_cannot_write_before_running_anything(option, where,
                                                                          tmp_path):
    (tmp_path / "a-file").write_text("")
    path = {"missing folder": tmp_path / "no-such-folder" / "out",
            "file as folder": tmp_path / "a-file" / "out", "a folder": tmp_path}[where]
    out = _auto("--backend", "cpu", "demo", option, str(path))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""  # nothing ran
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith(f"rocmstreams: {option} {path}")
    assert {"missing folder": "does not exist; create it", "file as folder": "is a file",
            "a folder": "is a folder"}[where] in lines[0]


def test_the_probes_of_other_backends_get_the_environment_as_the_command_found_it(monkeypatch):
    """Loading the cpu backend sets NUMBA_ENABLE_CUDASIM in this process; a probe that inherited
    it would report cuda as numba's simulator on a machine where cuda works."""
    import rocmstreams.__main__ as cli
    monkeypatch.setattr(cli, "_ENVIRONMENT_AT_START", {"PATH": os.environ.get("PATH", "")})
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    seen = []

    class Probe:
        def __init__(self, *args, env=None, **kwargs):
            seen.append(env)

        def communicate(self, timeout=None):
            return "", ""

        def kill(self):
            pass

        returncode = 0

    monkeypatch.setattr(cli.subprocess, "Popen", Probe)
    cli._probe_others(["cuda"])
    assert seen and all("NUMBA_ENABLE_CUDASIM" not in env for env in seen)
