"""RocmStream as the launch stream of Numba kernels: ``kernel[blocks, threads, stream](...)``.

Installed on the backend's Numba dispatcher class when the backend is selected
(:func:`rocmstreams.backends.on_select`).
"""
from __future__ import annotations

from ...backends import on_select
from .dispatch import KernelLaunch, install, launcher_of, prepare
from .memory_manager import use_for_numba
from .numba_api import install_numba_api
from .prepared import PreparedLauncher

__all__ = ["KernelLaunch", "PreparedLauncher", "install", "install_numba_api", "launcher_of",
           "prepare", "use_for_numba"]

on_select(install)
on_select(install_numba_api)
