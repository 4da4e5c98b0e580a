"""What each install of rocmstreams resolves to (``pip install --dry-run --report``).

``.`` is the cpu backend (numba's own CUDA simulator), ``.[cuda]`` adds numba-cuda and NVIDIA's
bindings, ``.[rocm]`` adds numba-hip and must hold no NVIDIA package: hip-python-interop, which
numba-hip needs, installs a HIP-backed ``cuda.bindings`` that NVIDIA's cuda-bindings would
overwrite. Needs the package index; skipped when it cannot be reached.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from packaging.version import Version  # pytest's own dependency

ROOT = Path(__file__).resolve().parents[1]


def _index_url() -> str:
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        found = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                               capture_output=True, text=True)
        url = found.stdout.strip() if found.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


@pytest.fixture(scope="module")
def index() -> str:
    url = _index_url()
    try:
        with urllib.request.urlopen(f"{url}/numba-hip/", timeout=15):
            pass
    except Exception as exc:  # offline, proxy refused, DNS: nothing to resolve against
        pytest.skip(f"the package index {url} is unreachable ({exc}); these tests resolve "
                    "rocmstreams' dependencies with pip against it")
    return url


def resolve(target: str, tmp_path: Path) -> dict[str, str]:
    """``{name: version}`` that ``pip install target`` would install into an empty environment."""
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), target],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"pip could not resolve {target}:\n{done.stderr[-3000:]}"
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


def nvidia_packages(names: dict[str, str]) -> list[str]:
    """NVIDIA's CUDA packages: cuda-python's family (cuda-bindings, cuda-core, cuda-pathfinder,
    cuda-toolkit, ...), nvidia-* and numba-cuda."""
    return sorted(n for n in names
                  if n.startswith(("cuda-", "nvidia-")) or n in ("cuda-python", "numba-cuda"))


def test_plain_install_is_numpy_and_numba_only(index, tmp_path):
    found = resolve(".", tmp_path)
    assert {"numpy", "numba", "rocmstreams"} <= set(found)
    assert nvidia_packages(found) == []
    assert not any(n.startswith(("rocm-", "hip-", "numba-hip")) for n in found), sorted(found)


def test_cuda_extra_brings_numba_cuda(index, tmp_path):
    found = resolve(".[cuda]", tmp_path)
    assert found["numba-cuda"] == "0.30.4"
    assert {"cuda-bindings", "cuda-core"} <= set(found)
    assert not any(n.startswith(("rocm-", "hip-python", "numba-hip")) for n in found)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="numba-hip is Linux-only")
def test_rocm_extra_resolves_without_any_nvidia_package(index, tmp_path):
    found = resolve(".[rocm]", tmp_path)
    assert nvidia_packages(found) == [], f"NVIDIA packages in .[rocm]: {nvidia_packages(found)}"
    assert found["numba-hip"] == "0.2.1"
    assert Version("0.58") <= Version(found["numba"]) < Version("0.64"), found["numba"]
    for name in ("rocm-bindings-hip", "rocm-bindings-compiler", "hip-python-interop"):
        assert Version(found[name]) >= Version("7.2.3"), (name, found[name])
