"""Numba kernels shipped with rocmstreams (installed as ``rocmstreams.kernels``).

Written once in Numba's CUDA dialect; compiled by numba-cuda (cuda backend), Numba's CUDA
simulator (cpu backend) or numba-hip (hip backend); where the dialects differ (atomics on
arrays), the kernels call :mod:`.portable`. Importing this module selects the backend.
"""
from __future__ import annotations

from typing import Any

from rocmstreams.backends import active as _active

cuda: Any = _active().numba_module()  # numba.cuda, its simulator or numba.hip

from .latch import Latch, latch  # noqa: E402
from .elementwise import add_scalar, saxpy, scale  # noqa: E402
from .stamp import stamp  # noqa: E402

__all__ = ["cuda", "saxpy", "scale", "add_scalar", "stamp", "latch", "Latch"]
