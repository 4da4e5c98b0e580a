"""What every benchmark script shares: peers that may be missing, timing, the table, the JSON.

A benchmark builds a list of row dicts. A row that could not be measured carries ``missing``
(the peer is not on this machine, or cannot run on this backend) or ``error`` (it ran and
failed); :func:`print_table` prints those as one line with the reason, never drops them.
:func:`write_json` writes ``{"benchmark", "environment", "rows", ...}`` for tools to read.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["import_peer", "missing_row", "time_call", "summary", "environment", "print_table",
           "write_json", "progress"]


def import_peer(module: str) -> tuple[Any, str | None]:
    """``(module, None)``, or ``(None, reason)`` when it does not import here."""
    try:
        return importlib.import_module(module), None
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install
        return None, f"{module} does not import here ({type(exc).__name__}: {exc})"


def progress(items: Sequence[Any], what: str) -> Any:
    """``items`` with a progress bar on stderr (tqdm where it is installed, else one line per
    step), so that long sections never run silent; ``BENCH_PROGRESS=0`` turns it off."""
    if os.environ.get("BENCH_PROGRESS", "1") == "0":
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items, what)
    return tqdm(items, desc=what, file=sys.stderr, leave=False, mininterval=0.5)


def _plain_progress(items: Sequence[Any], what: str) -> Any:
    total = len(items)
    for i, item in enumerate(items, start=1):
        print(f"  {what}: {i}/{total}", file=sys.stderr, flush=True)
        yield item


def missing_row(library: str, reason: str, **fields: Any) -> dict[str, Any]:
    return {"library": library, **fields, "missing": reason}


def time_call(fn: Callable[[], None], repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls of ``fn`` (which must synchronize before it returns),
    each timed on its own with ``time.perf_counter``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    """Best (the figure reported) and median of a run's times, in milliseconds."""
    return {"best_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3}


def environment() -> dict[str, Any]:
    """Backend, device and versions, for the table's heading and the JSON."""
    import rocmstreams as rs
    be = rs.backend()
    return {"backend": be.name, "device": be.devices[0].name,
            "versions": dict(be.versions), "numpy": np.__version__,
            "python": sys.version.split()[0], "host": platform.node(),
            "cpus": os.cpu_count(), "native_calls": be.native_calls}


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, fmt) if fmt else str(value)


def print_table(title: str, columns: Sequence[tuple[str, str, str]],
                rows: Sequence[dict[str, Any]]) -> None:
    """Print ``rows`` under ``columns`` of ``(key, heading, format spec)``.

    Rows with ``missing`` or ``error`` print their first two columns and then the reason.
    """
    cells = [[heading for _, heading, _ in columns]]
    notes = {}
    for i, row in enumerate(rows, start=1):
        cells.append([_cell(row.get(key), fmt) for key, _, fmt in columns])
        for kind in ("missing", "error"):
            if row.get(kind):
                notes[i] = f"{kind}: {row[kind]}"
    widths = [max(len(r[c]) for r in cells) for c in range(len(columns))]
    if title:
        print(title)
    for i, r in enumerate(cells):
        if i in notes:
            print("  " + "  ".join(r[c].ljust(widths[c]) for c in range(2)) + "  " + notes[i])
        else:
            print("  " + "  ".join(r[c].rjust(widths[c]) if c >= 2 else r[c].ljust(widths[c])
                                   for c in range(len(columns))))


def write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
