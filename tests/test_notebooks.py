"""The teaching notebooks run top to bottom with no error cell (a real Jupyter kernel)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs_with_no_error_cell(path, backend):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    book = nbformat.read(path, as_version=4)
    os.environ.setdefault("ROCMSTREAMS_BACKEND", backend.name)
    client = nbclient.NotebookClient(book, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_committed_notebook_carries_its_gpu_run_with_every_output(path):
    """Committed executed on a GPU (tests/gpu/run_notebooks.py stamps the metadata): every code
    cell ran, in order, none with an error, and a notebook that plots carries the picture."""
    import json
    book = json.loads(path.read_text())
    ran_on = book["metadata"].get("rocmstreams_executed_on", "")
    assert "cpu" not in ran_on.split(",")[0] and ran_on.startswith("backend "), ran_on
    code = [c for c in book["cells"] if c["cell_type"] == "code"]
    assert [c.get("execution_count") for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert outputs, "no cell printed anything"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if any(".plot(" in "".join(c["source"]) for c in code):
        assert any("image/png" in o.get("data", {}) for o in outputs), "its plot is missing"


def test_the_overlap_notebook_closes_with_the_speed_up_and_overlap_its_gpu_run_printed():
    import json
    import re
    path = next(p for p in NOTEBOOKS if p.stem == "02-overlap")
    cells = json.loads(path.read_text())["cells"]
    printed = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    found = re.search(r"speed-up (\d+\.\d+)x; overlap (\d+)%", printed)
    assert found, f"the timing cell printed no speed-up and overlap: {printed!r}"
    closing = cells[-1]
    assert closing["cell_type"] == "markdown"
    note = "".join(closing["source"])
    assert f"speed-up {found[1]}x" in note and f"overlap {found[2]}%" in note, note
