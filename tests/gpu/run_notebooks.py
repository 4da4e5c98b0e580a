"""Execute the teaching notebooks top to bottom and write them back with their outputs.

Used on the lent GPU (tests/gpu/device_run.sh, NOTEBOOKS=1), whose image has matplotlib but no
Jupyter kernel: each code cell runs in one namespace per notebook, as a kernel would run it;
its stdout, the value of a last expression and every matplotlib figure it leaves open become the
cell's outputs (text/plain, image/png), in the nbformat 4 shape Jupyter writes. A cell that
raises is written as an error output and the notebook stops there (exit status 1).

Usage: python run_notebooks.py OUTDIR notebooks/*.ipynb
"""
from __future__ import annotations

import ast
import base64
import contextlib
import io
import json
import sys
import traceback
from pathlib import Path
from typing import Any


def _figures() -> list[Any]:
    import matplotlib.pyplot as plt
    return [plt.figure(n) for n in plt.get_fignums()]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _run_cell(source: str, ns: dict[str, Any], count: int) -> tuple[list[dict], bool]:
    """Run one cell like IPython: statements, then the last expression's value displayed."""
    import matplotlib.pyplot as plt
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    outputs: list[dict] = []
    stdout = io.StringIO()
    value = None
    ok = True
    try:
        with contextlib.redirect_stdout(stdout):
            exec(compile(tree, f"<cell {count}>", "exec"), ns)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), f"<cell {count}>", "eval"), ns)
    except BaseException as exc:  # noqa: BLE001 - written into the notebook as Jupyter does
        ok = False
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        error = {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc),
                 "traceback": tb}
    if stdout.getvalue():
        outputs.append({"output_type": "stream", "name": "stdout", "text": stdout.getvalue()})
    shown = set()
    figure_type = getattr(sys.modules.get("matplotlib.figure"), "Figure", None)
    if value is not None and figure_type is not None and isinstance(value, figure_type):
        shown.add(id(value))
        outputs.append({"output_type": "display_data", "metadata": {},
                        "data": {"image/png": _png(value), "text/plain": repr(value)}})
        value = None
    for fig in _figures():
        if id(fig) not in shown:
            outputs.append({"output_type": "display_data", "metadata": {},
                            "data": {"image/png": _png(fig), "text/plain": repr(fig)}})
    plt.close("all")
    if value is not None:
        outputs.append({"output_type": "execute_result", "execution_count": count,
                        "metadata": {}, "data": {"text/plain": repr(value)}})
    if not ok:
        outputs.append(error)
    return outputs, ok


def run(path: Path, outdir: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    book = json.loads(path.read_text())
    ns: dict[str, Any] = {"__name__": "__main__"}
    count = 0
    ok = True
    for cell in book["cells"]:
        if cell["cell_type"] != "code":
            continue
        if not ok:
            cell["outputs"], cell["execution_count"] = [], None
            continue
        count += 1
        cell["outputs"], ok = _run_cell("".join(cell["source"]), ns, count)
        cell["execution_count"] = count
    import rocmstreams as rs
    info = rs.backend()
    book.setdefault("metadata", {})["rocmstreams_executed_on"] = (
        f"backend {info.name}, {info.devices[0].name}, by tests/gpu/run_notebooks.py")
    (outdir / path.name).write_text(json.dumps(book, indent=1, ensure_ascii=False) + "\n")
    print(f"{path.name}: {'ok' if ok else 'FAILED'}, {count} cells run")
    return ok


def main(argv: list[str]) -> int:
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    results = [run(Path(p), outdir) for p in argv[1:]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
