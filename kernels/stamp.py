"""The stamp kernel: makes the order in which launches ran visible."""
from __future__ import annotations

from . import cuda
from .portable import atomic_add


@cuda.jit
def stamp(counter, log, tag):
    """Take the next sequence number from ``counter[0]`` and write ``tag`` at that slot of
    ``log``; after N launches ``log[:N]`` lists the tags in the order the launches ran."""
    if cuda.grid(1) == 0:
        seq = atomic_add(counter, 0, 1)
        if seq < log.size:
            log[seq] = tag
