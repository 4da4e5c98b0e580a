"""The latch: a kernel that holds its stream busy until the host releases a flag.

Tests use it to see ``query()`` False for certain, without guessing at durations. The kernel
polls a flag in page-locked, device-mapped memory; it gives up after a bounded number of polls.
"""
from __future__ import annotations

import numpy as np

import rocmstreams as rs

from . import cuda

RELEASED, TIMED_OUT = 1, 2


@cuda.jit
def latch(cell, max_polls):
    """Spin until the host sets ``cell[0]``/``cell[2]`` or ``max_polls`` polls pass; then
    ``cell[1]`` says which: 1 released, 2 timed out.

    The host sets two words. ``cell[0]`` is read with an atomic, which a GPU must fetch from host
    memory on every poll; ``cell[2]`` with a plain load, which the CUDA simulator's atomics (a
    read-modify-write that can write back a stale 0 over the host's store) never touch.
    """
    if cuda.grid(1) == 0:
        polls = 0
        while cuda.atomic.add(cell, 0, 0) == 0 and cell[2] == 0 and polls < max_polls:
            polls += 1
        cell[1] = RELEASED if polls < max_polls else TIMED_OUT


class Latch:
    """Holds a stream busy until :meth:`release` (or ``max_polls`` polls, a safety bound).

    Use as a context manager so a failing test still releases it::

        with Latch() as gate:
            gate.hold(stream)
            assert not stream.query()
        stream.synchronize()
        assert gate.released
    """

    def __init__(self, max_polls: int = 5_000_000) -> None:
        self._cell = rs.pinned_empty(3, np.int32)
        self._cell[:] = 0
        self._view = rs.device_view(self._cell)
        self.max_polls = np.int64(max_polls)

    def hold(self, stream: "rs.RocmStream") -> "Latch":
        """Queue the latch kernel on ``stream``."""
        latch[1, 1, stream](self._view, self.max_polls)
        return self

    def release(self) -> None:
        """Let the latch kernel finish."""
        self._cell[2] = 1
        self._cell[0] = 1

    @property
    def released(self) -> bool:
        """True when the kernel ended because of :meth:`release` (read after synchronizing)."""
        return int(self._cell[1]) == RELEASED

    @property
    def timed_out(self) -> bool:
        return int(self._cell[1]) == TIMED_OUT

    def __enter__(self) -> "Latch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
