"""The latch: a kernel that holds its stream busy until the host releases a flag.

Tests use it to see ``query()`` False for certain, without guessing at durations. The kernel
polls a flag in device memory; the host releases it with a copy on the latch's own non-blocking
stream, which nothing else waits behind. The kernel gives up after a bounded number of polls.

Why not poll page-locked host memory directly: Numba's atomics are device-scope, and on an H100
a latch polling mapped host memory sometimes never saw the host's store (seen in our GPU runs,
2026-11-24); a copy lands in device memory, where a device-scope atomic always sees it.
"""
from __future__ import annotations

import numpy as np

import rocmstreams as rs

from . import cuda
from .portable import atomic_add

RELEASED, TIMED_OUT = 1, 2
FLAG_GAP = 32  # words between the two flags: separate 128-byte lines


@cuda.jit
def latch(flags, status, max_polls):
    """Spin until the host sets ``flags[0]``/``flags[FLAG_GAP]`` or ``max_polls`` polls pass;
    then ``status`` holds (1 released or 2 timed out, polls made).

    The release sets two words. ``flags[0]`` is read with an atomic, which a GPU cannot serve
    from a stale cache; ``flags[FLAG_GAP]`` with a plain load, which the CUDA simulator's atomics
    (a read-modify-write that can write back a stale 0 over the release) never touch.
    """
    if cuda.grid(1) == 0:
        polls = 0
        while atomic_add(flags, 0, 0) == 0 and flags[FLAG_GAP] == 0 and polls < max_polls:
            polls += 1
        status[1] = polls
        status[0] = RELEASED if polls < max_polls else TIMED_OUT


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
        self._stream = rs.RocmStream(non_blocking=True)
        self._flags = rs.to_device(np.zeros(2 * FLAG_GAP, np.int32), stream=self._stream)
        self._status = rs.to_device(np.zeros(2, np.int64), stream=self._stream)
        self._ones = np.ones(2 * FLAG_GAP, np.int32)
        self._stream.synchronize()
        self._released = False
        self.max_polls = np.int64(max_polls)

    def hold(self, stream: "rs.RocmStream") -> "Latch":
        """Queue the latch kernel on ``stream``."""
        latch[1, 1, stream](self._flags, self._status, self.max_polls)
        return self

    def release(self) -> None:
        """Let the latch kernel finish."""
        if not self._released:
            self._released = True
            rs.copy_async(self._flags, self._ones, stream=self._stream)

    @property
    def released(self) -> bool:
        """True when the kernel ended because of :meth:`release` (read after synchronizing)."""
        return int(self._read_status()[0]) == RELEASED

    @property
    def timed_out(self) -> bool:
        return int(self._read_status()[0]) == TIMED_OUT

    @property
    def polls(self) -> int:
        """How many times the kernel polled before it ended (read after synchronizing)."""
        return int(self._read_status()[1])

    def _read_status(self) -> np.ndarray:
        return self._status.copy_to_host(stream=self._stream)

    def __enter__(self) -> "Latch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
