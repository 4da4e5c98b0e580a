"""Backend selection: one backend per process, chosen on first use.

``ROCMSTREAMS_BACKEND=cuda|hip|cpu`` picks one; otherwise the first that works of cuda (an NVIDIA
GPU), hip (an AMD GPU through hip-python) and cpu (the embedded default). Importing
``rocmstreams`` selects nothing and touches no GPU.
"""
from __future__ import annotations

import importlib
import os
import threading

from ..errors import BackendUnavailableError
from .base import LEGACY_STREAM, PER_THREAD_STREAM, Backend

__all__ = ["Backend", "backend", "LEGACY_STREAM", "PER_THREAD_STREAM", "BACKENDS"]

#: The backends a process can choose from, in the order automatic selection tries them.
BACKENDS = ("cuda", "hip", "cpu")

_lock = threading.Lock()
_active: Backend | None = None


def _load(name: str) -> Backend:
    return importlib.import_module(f"{__name__}.{name}").load()


def _choose() -> Backend:
    wanted = os.environ.get("ROCMSTREAMS_BACKEND", "").strip().lower()
    if wanted:
        if wanted not in BACKENDS:
            raise BackendUnavailableError(
                f"ROCMSTREAMS_BACKEND={wanted!r} is not a backend; use one of "
                f"{', '.join(BACKENDS)}, or unset it to choose automatically")
        return _load(wanted)
    for name in BACKENDS[:-1]:
        try:
            return _load(name)
        except BackendUnavailableError:
            continue
    return _load("cpu")


def backend() -> Backend:
    """The process's backend, selected (and Numba's launch hook installed) on first call."""
    global _active
    if _active is None:
        with _lock:
            if _active is None:
                chosen = _choose()
                from ..launch import install
                install(chosen)
                _active = chosen
    return _active
