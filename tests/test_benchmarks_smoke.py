"""The benchmarks run end to end on the selected backend, with their outputs checked."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script, tmp_path, *args, **env):
    out = tmp_path / f"{script}.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke", "--json",
                           str(out), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text()), done.stdout


def test_pipeline_smoke_reports_verified_rocmstreams_rows_and_names_missing_peers(
        backend, tmp_path):
    report, stdout = _run("pipeline.py", tmp_path)
    assert report["benchmark"] == "pipeline" and report["ok"]
    assert report["environment"]["backend"] == backend.name
    ours = [r for r in report["rows"] if r["library"] == "rocmstreams"]
    assert [r["streams"] for r in ours] == report["streams"] and len(ours) >= 2
    for r in ours:
        assert r["verified"] is True and r["max_abs_error"] < 1e-5
        assert 0 < r["time_ms"] < 60_000 and r["gbps"] > 0
        assert r["ideal_ms"] == max(r["stages_ms"].values()) > 0
        assert r["overlap"] == pytest.approx(r["ideal_ms"] / r["time_ms"])
        assert r["ceiling_ms"] > 0  # the copies alone, both ways at once
    ceiling = min(r["ceiling_ms"] for r in report["rows"] if "ceiling_ms" in r)
    for r in ours:
        assert r["of_ceiling"] == pytest.approx(ceiling / r["time_ms"])
    fresh = [r for r in report["rows"] if r["library"] == "rocmstreams (fresh arrays)"]
    assert [r["streams"] for r in fresh] == report["streams"]
    assert all(r["verified"] is True for r in fresh)
    peers = {r["library"] for r in report["rows"]} - {"rocmstreams", "rocmstreams (fresh arrays)"}
    # measured, or a row saying why not
    assert peers == {"cupy", "torch", "cupy (fresh arrays)", "torch (fresh arrays)"}
    for r in report["rows"]:
        assert "missing" in r or "error" in r or r.get("verified") is True
    assert "rocmstreams" in stdout and "overlap" in stdout


def test_staged_copies_smoke_checks_every_copy_and_the_gil_probe(backend, tmp_path):
    report, stdout = _run("staged_copies.py", tmp_path)
    assert report["benchmark"] == "staged_copies" and report["ok"]
    assert report["gil"]["releases_gil"] in (True, False)
    measured = [r for r in report["rows"] if "gbps" in r]
    kinds = {r["kind"] for r in measured}
    assert kinds == {"host", "H2D", "D2H"}
    for r in measured:
        assert r["verified"] is True and r["gbps"] > 0
    assert any("staged" in r["case"] and r["kind"] == "H2D" for r in measured)
    assert any(r["case"].startswith("numba-cuda") for r in report["rows"])  # measured or missing
    if backend.name != "cpu":
        assert report["targets"] and "target:" in stdout


def test_overhead_smoke_measures_every_rocmstreams_figure_and_names_missing_peers(
        backend, tmp_path):
    report, stdout = _run("overhead.py", tmp_path)
    assert report["benchmark"] == "overhead"
    figures = report["figures"]
    for figure in ("launch", "stream query, idle", "stream synchronize, idle", "event record",
                   "stream create + close", "graph replay per kernel", "H2D pinned",
                   "D2H pinned", "H2D pageable"):
        ours = figures[figure]["rocmstreams"]
        assert isinstance(ours, float) and ours > 0, (figure, ours)
    assert figures["host memory growth"]["rocmstreams"] < 2.0
    for figure, values in figures.items():
        for library, value in values.items():
            assert isinstance(value, float) or value.startswith("missing"), (figure, library,
                                                                             value)
    assert {row["figure"] for row in report["targets"]} >= {"launch", "H2D pageable"}
    for row in ("rocmstreams (grid changes every call)", "rocmstreams (fixed grid, as large)",
                "rocmstreams (inside rs.trace())"):
        assert isinstance(figures["launch"][row], float) and figures["launch"][row] > 0, row
    traced = next(r for r in report["targets"] if "rs.trace()" in r["target"])
    assert traced["ratio"] > 0 and "holds" not in traced  # a figure to read, no bound
    assert "targets" in stdout


def test_overheads_changing_grid_row_uses_more_grids_than_the_launch_cache_holds():
    import importlib.util

    from rocmstreams.integrations.numba import dispatch
    spec = importlib.util.spec_from_file_location("overhead", BENCHMARKS / "overhead.py")
    overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overhead)
    sizes = overhead.changing_sizes()
    grids = [(next(sizes) + 255) // 256 for _ in range(overhead.DISTINCT_GRIDS)]
    # each grid comes round again only after more others than the cache keeps: never a hit
    assert len(set(grids)) == overhead.DISTINCT_GRIDS > dispatch._MAX_KEPT


def test_hot_calls_offline_smoke_times_the_binding_and_the_compiled_paths(tmp_path):
    from rocmstreams.backends import native
    # a benchmark over a fake runtime, for machines without a GPU: on the cpu backend, so that
    # no fake handle can reach a real driver where one is installed
    report, stdout = _run("hot_calls_offline.py", tmp_path, ROCMSTREAMS_BACKEND="cpu")
    timed = {(r["path"], r["call"]) for r in report["rows"] if "ns" in r}
    assert ("binding", "core.query()") in timed and ("binding", "calls.event_record(e)") in timed
    if native.compiled is not None:
        assert ("compiled", "core.query()") in timed and ("compiled", "core.record(e)") in timed
    else:
        assert any(r["path"] == "compiled" and "missing" in r for r in report["rows"])
    assert all(r["ns"] > 0 for r in report["rows"] if "ns" in r) and "ns per call" in stdout


@pytest.mark.skipif(not any(shutil.which(cc) for cc in ("gcc", "cc")),
                    reason="no C compiler for the no-op driver library")
@pytest.mark.parametrize("path", [(), ("--python-path",)])
def test_hot_path_offline_smoke_times_the_public_calls_over_no_op_c_calls(tmp_path, path):
    from rocmstreams.backends import native
    report, stdout = _run("hot_path_offline.py", tmp_path, *path)
    figures = set(report["ns"])
    assert {"query", "synchronize", "event record", "stream record", "launch"} <= figures
    assert ("floor query" in figures) is (native.compiled is not None and not path)
    assert all(ns > 0 for ns in report["ns"].values()) and "ns per call" in stdout


def test_peer_copies_smoke_checks_every_copy_and_names_what_is_missing(backend, tmp_path):
    report, stdout = _run("peer_copies.py", tmp_path)
    assert report["benchmark"] == "peer_copies" and report["ok"]
    libraries = {r["library"] for r in report["rows"]}
    assert libraries == {"rocmstreams", "cudaMemcpyPeerAsync"}  # measured, or why not
    for r in report["rows"]:
        assert "missing" in r or (r["verified"] is True and r["gbps"] > 0), r
    if backend.name == "cpu":  # two simulated devices: our rows run, the raw one cannot
        ours = [r for r in report["rows"] if r["library"] == "rocmstreams"]
        assert len(ours) == 4 and all("missing" not in r for r in ours)
    assert "GB/s" in stdout


def test_alloc_mixed_smoke_measures_device_and_pinned_rows_and_names_missing_peers(
        backend, tmp_path):
    report, stdout = _run("alloc_mixed.py", tmp_path, "--ops", "300")
    assert report["benchmark"] == "alloc_mixed" and report["ok"] and report["ops"] == 300
    ours = [r for r in report["rows"] if r["library"] == "rocmstreams"]
    assert [r["kind"] for r in ours] == ["device", "pinned"]
    for r in ours:
        assert r["flat"] is True and r["us_per_op"] > 0
    several = [r for r in report["rows"] if r["library"].startswith("rocmstreams (")]
    assert len(several) == 1 and several[0]["kind"] == "device", several
    assert several[0]["flat"] is True and several[0]["bounded"] is True
    peers = {(r["library"], r["kind"]) for r in report["rows"]
             if not r["library"].startswith("rocmstreams")}
    # measured, or a row saying why not
    assert peers == {(p, k) for p in ("cupy", "torch") for k in ("device", "pinned")}
    for r in report["rows"]:
        assert "missing" in r or "error" in r or r["us_per_op"] > 0
    assert "alloc+free" in stdout
