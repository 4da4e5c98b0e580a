"""RocmStream as the launch stream of Numba kernels: ``kernel[blocks, threads, stream](...)``.

Numba's dispatchers only take their own streams, so on selection the backend's dispatcher class
learns one thing: a configuration whose stream is a RocmStream returns a :class:`KernelLaunch`,
which hands the launch to the backend. Every other configuration goes to Numba unchanged, except
under the cpu backend, where all simulator launches go through its single kernel engine on the
legacy default stream (the simulator runs launches synchronously and one at a time).
"""
from __future__ import annotations

from typing import Any

from .backends import LEGACY_STREAM, Backend
from .stream import RocmStream

__all__ = ["KernelLaunch", "install"]


class KernelLaunch:
    """A kernel configured with a grid, a block and a RocmStream; call it with the arguments."""

    __slots__ = ("dispatcher", "griddim", "blockdim", "stream", "sharedmem", "_backend",
                 "_synchronous")

    def __init__(self, backend: Backend, dispatcher: Any, griddim: Any, blockdim: Any,
                 stream: RocmStream | None, sharedmem: int = 0, synchronous: bool = False) -> None:
        from numba.cuda.errors import normalize_kernel_dimensions
        self.griddim, self.blockdim = normalize_kernel_dimensions(griddim, blockdim)
        if isinstance(sharedmem, bool) or not isinstance(sharedmem, int) or sharedmem < 0:
            raise ValueError(f"dynamic shared memory must be a non-negative int, got {sharedmem!r}")
        self.dispatcher = dispatcher
        self.stream = stream
        self.sharedmem = sharedmem
        self._backend = backend
        self._synchronous = synchronous

    def __call__(self, *args: Any) -> None:
        handle = LEGACY_STREAM if self.stream is None else self.stream.handle
        self._backend.launch_kernel(self.dispatcher, self.griddim, self.blockdim, handle,
                                    self.sharedmem, args)
        if self._synchronous:
            self._backend.stream_synchronize(handle)

    def __repr__(self) -> str:
        name = getattr(self.dispatcher, "__name__", type(self.dispatcher).__name__)
        return f"<KernelLaunch {name}[{self.griddim}, {self.blockdim}, {self.stream!r}]>"


def _probe() -> None:  # a kernel never compiled; only its dispatcher's class is wanted
    pass


def install(backend: Backend) -> None:
    """Teach the backend's Numba dispatcher class to launch on RocmStreams (idempotent)."""
    cls = type(backend.numba_module().jit(_probe))
    if getattr(cls, "_rocmstreams_original_getitem", None) is not None:
        return
    original = cls.__getitem__
    route_all = backend.name == "cpu"

    def __getitem__(self: Any, config: Any) -> Any:
        if isinstance(config, tuple) and 2 <= len(config) <= 4:
            stream = config[2] if len(config) > 2 else None
            shared = config[3] if len(config) > 3 else 0
            if isinstance(stream, RocmStream):
                return KernelLaunch(backend, self, config[0], config[1], stream, shared)
            if route_all:
                return KernelLaunch(backend, self, config[0], config[1], None, shared,
                                    synchronous=True)
        return original(self, config)

    cls._rocmstreams_original_getitem = original
    cls.__getitem__ = __getitem__
