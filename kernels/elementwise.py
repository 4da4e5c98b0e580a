"""Elementwise kernels: one thread per element, grid-stride so any grid covers any size."""
from __future__ import annotations

from . import cuda


@cuda.jit
def saxpy(out, a, x, y):
    """``out[i] = a * x[i] + y[i]``."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.size, step):
        out[i] = a * x[i] + y[i]


@cuda.jit
def scale(out, a, x):
    """``out[i] = a * x[i]``."""
    start, step = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.size, step):
        out[i] = a * x[i]


@cuda.jit
def add_scalar(a, value):
    """``a[i] += value``: one device array, one scalar (the launch benchmark's kernel)."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] += value
