"""Two sets of benchmarks/overhead.py results side by side: ``compare_overhead.py OLD.json...
-- NEW.json...``; the best (lowest for times, highest for GB/s) of each side's runs per figure,
rocmstreams' own rows only."""
from __future__ import annotations

import json
import sys

FIGURES = ("launch", "stream query, idle", "stream synchronize, idle", "event record",
           "stream create + close", "graph replay per kernel", "H2D pinned", "H2D pageable")


def _best(paths: list[str], figure: str, library: str, higher: bool) -> float | None:
    found = []
    for path in paths:
        with open(path) as fh:
            value = json.load(fh)["figures"].get(figure, {}).get(library)
        if isinstance(value, (int, float)):
            found.append(float(value))
    if not found:
        return None
    return max(found) if higher else min(found)


def main(argv: list[str]) -> int:
    cut = argv.index("--")
    old, new = argv[:cut], argv[cut + 1:]
    with open(new[0]) as fh:
        units = json.load(fh)["units"]
    print(f"{'figure':28} {'library':26} {'old':>9} {'new':>9} {'new/old':>8}")
    for figure in FIGURES:
        higher = "GB/s" in units.get(figure, "")
        for library in ("rocmstreams", "rocmstreams (configured)", "rocmstreams (native off)",
                        "C++ floor"):
            a, b = _best(old, figure, library, higher), _best(new, figure, library, higher)
            if a is None and b is None:
                continue
            ratio = f"{b / a:8.3f}" if a and b else "       -"
            print(f"{figure:28} {library:26} {a if a is not None else float('nan'):9.3f} "
                  f"{b if b is not None else float('nan'):9.3f} {ratio}  {units.get(figure, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
