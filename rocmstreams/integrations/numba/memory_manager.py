"""Numba's own device allocations from rocmstreams' stream-ordered pools (opt in).

Numba allocates device memory through an External Memory Management (EMM) plugin
(``numba.cuda.set_memory_manager``; numba-cuda's ``BaseCUDAMemoryManager`` interface, version 1).
:func:`use_for_numba` installs this one, so that ``cuda.device_array``, ``cuda.to_device`` and
the temporaries Numba makes come from the same pool as ``rocmstreams.empty`` and are counted in
``rocmstreams.memory_stats()``. Environment route, read by Numba when it creates a context::

    NUMBA_CUDA_MEMORY_MANAGER=rocmstreams.integrations.numba.memory_manager

The EMM interface gives ``memalloc`` no stream, so (as RAPIDS RMM's plugin does) the memory is
allocated on, and freed on, the legacy default stream: the free waits for all work queued before
it on the legacy stream and on every blocking stream (Numba's own ``cuda.stream()`` streams and
its default stream are blocking), never for the host. Work that Numba launches on a
non-blocking stream is not seen by rocmstreams: keep such an array alive until that stream has
passed its use (synchronize it), or launch through a RocmStream. Host allocations (pinned,
mapped) stay Numba's own.
"""
from __future__ import annotations

import ctypes
import importlib
from typing import Any

from ...backends import active
from ...core.device import check_device
from ...memory import DeviceBlock, device_block
from ...streamcore import default_core

__all__ = ["use_for_numba", "plugin_class"]

_made: dict[int, type] = {}


def plugin_class(module: Any) -> type:
    """The EMM plugin class for ``module`` (``numba.cuda``, or numba-hip's mirror of it)."""
    found = _made.get(id(module))
    if found is not None:
        return found
    base, ipc, pointer = (module.HostOnlyCUDAMemoryManager, module.GetIpcHandleMixin,
                          module.MemoryPointer)

    class RocmStreamsMemoryManager(ipc, base):  # type: ignore[misc, valid-type]
        """Device memory from rocmstreams' stream-ordered pool (see the module docstring)."""

        def initialize(self) -> None:
            pass

        def memalloc(self, size: int) -> Any:
            device = check_device(self.context.device.id)
            block = device_block(max(int(size), 1), device, default_core(device))
            return pointer(self.context, ctypes.c_void_p(block.ptr), size,
                           finalizer=_Keep(block))

        def get_memory_info(self) -> Any:
            found = importlib.import_module(module.__name__ + ".cudadrv.driver")
            free, total = found.driver.cuMemGetInfo()
            return found.MemoryInfo(free=int(free), total=int(total))

        @property
        def interface_version(self) -> int:
            return 1

    _made[id(module)] = RocmStreamsMemoryManager
    return RocmStreamsMemoryManager


class _Keep:
    """A MemoryPointer's finalizer: holds the block until Numba lets the memory go; calling it
    drops the block, whose release goes through rocmstreams' release queue (it never blocks)."""

    __slots__ = ("block",)

    def __init__(self, block: DeviceBlock) -> None:
        self.block: DeviceBlock | None = block

    def __call__(self) -> None:
        self.block = None


def use_for_numba() -> bool:
    """Make Numba allocate device memory from rocmstreams' pools: in the current context (from
    now on) and in every context Numba creates later. Returns False where
    there is nothing to install: the cpu backend, whose Numba simulator allocates host memory
    of its own.
    """
    be = active()
    if be.numba_stream(0) is None:
        return False
    module = be.numba_module()
    cls = plugin_class(module)
    module.set_memory_manager(cls)
    # rocmstreams' own Numba calls may have made the current context already (with Numba's
    # default manager): it takes the plugin too; what it allocated before is freed as before
    try:
        context = module.current_context()
        if not isinstance(context.memory_manager, cls):
            manager = cls(context=context)
            manager.initialize()
            context.memory_manager = manager
    except AttributeError:  # a Numba without per-context managers: new contexts only
        pass
    return True


def __getattr__(name: str) -> Any:
    """``_numba_memory_manager``: what Numba reads from the module NUMBA_CUDA_MEMORY_MANAGER
    names."""
    if name == "_numba_memory_manager":
        return plugin_class(active().numba_module())
    raise AttributeError(name)
