"""The README's Python examples run as written and print what they did."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
          if "import rocmstreams" in b]


@pytest.mark.parametrize("code", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_the_readme_example_runs(code, backend):
    import os
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ROCMSTREAMS_BACKEND": backend.name})
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_first_example_prints_what_it_did(backend):
    import os
    done = subprocess.run([sys.executable, "-c", BLOCKS[0]], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "ROCMSTREAMS_BACKEND": backend.name})
    assert done.returncode == 0, done.stdout + done.stderr
    printed = done.stdout.strip().splitlines()
    assert printed, "the first example printed nothing"
    assert printed[-1].endswith("out == 3 * x: True"), done.stdout
