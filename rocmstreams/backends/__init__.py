"""Backend selection: one backend per process, chosen on first use.

``ROCMSTREAMS_BACKEND=cuda|hip|cpu`` picks one; otherwise the first that works of cuda (an NVIDIA
GPU), hip (an AMD GPU through hip-python) and cpu (the embedded default). Importing
``rocmstreams`` selects nothing and touches no GPU.

Layers above register what must happen at selection (the Numba launch hook, the configuration)
with :func:`on_select`; this package never imports them.
"""
from __future__ import annotations

import importlib
import os
import threading
from typing import Callable

from ..errors import BackendUnavailableError
from .base import LEGACY_STREAM, PER_THREAD_STREAM, Backend, KernelDriver, StreamCalls, on_device

__all__ = ["Backend", "StreamCalls", "KernelDriver", "active", "on_select", "selected",
           "on_device", "LEGACY_STREAM", "PER_THREAD_STREAM", "BACKENDS"]

#: The backends a process can choose from, in the order automatic selection tries them.
BACKENDS = ("cuda", "hip", "cpu")

#: Why automatic selection passed over each backend it tried before the one it took.
PROBES: dict[str, BackendUnavailableError] = {}

_lock = threading.Lock()
_active: Backend | None = None
_hooks: list[Callable[[Backend], None]] = []


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
        except Exception as exc:  # a failing probe never ends selection; its reason is kept
            PROBES[name] = exc if isinstance(exc, BackendUnavailableError) else (
                BackendUnavailableError(f"the {name} probe failed: {type(exc).__name__}: {exc}",
                                        backend=name))
    return _load("cpu")


def on_select(hook: Callable[[Backend], None]) -> None:
    """Call ``hook(backend)`` when the backend is selected (at once if it already is)."""
    with _lock:
        _hooks.append(hook)
        chosen = _active
    if chosen is not None:
        hook(chosen)


def selected() -> Backend | None:
    """The backend if one was selected, else None (selects nothing)."""
    return _active


def active() -> Backend:
    """The process's runtime backend, selected on first call (running the selection hooks)."""
    global _active
    if _active is None:
        with _lock:
            if _active is None:
                chosen = _choose()
                for hook in _hooks:
                    hook(chosen)
                _active = chosen
    return _active
