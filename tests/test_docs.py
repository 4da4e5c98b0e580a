"""The API reference builds from the docstrings, warnings as errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_api_reference_builds_with_no_warning(tmp_path, backend):
    pytest.importorskip("sphinx.cmd.build")  # a whole Sphinx, not a stray package
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b",
                           "html", str(DOCS), str(tmp_path / "html")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    page = (tmp_path / "html" / "api.html").read_text()
    for name in ("RocmStream", "synchronize", "copy_async", "trace", "configure",
                 "StreamClosedError"):
        assert name in page
