"""RocmStream as the launch stream of Numba kernels: ``kernel[blocks, threads, stream](...)``.

Numba's dispatchers only take their own streams, so on selection the backend's dispatcher class
learns one thing: a configuration whose stream is a RocmStream returns a :class:`KernelLaunch`,
which hands the launch to the backend's launcher for that kernel and configuration (on GPU
backends a prepared launch: see ``backends/prepared.py``). A stream keeps the launches configured
on it, so a launch in a loop costs one dictionary lookup before the launcher runs. Every other
configuration goes to Numba unchanged, except under the cpu backend, where all simulator launches
go through its single kernel engine on the legacy default stream (the simulator runs launches
synchronously and one at a time).
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

from .backends import LEGACY_STREAM, Backend
from .backends.base import KernelLauncher
from .device import using_device
from .stream import RocmStream

__all__ = ["KernelLaunch", "install"]

#: A stream keeps at most this many configured launches (grids that vary call after call would
#: otherwise pile up); past it, the oldest half is dropped.
_KEPT_LAUNCHES = 256


class _LegacyStream:
    """The legacy default stream, as launchers read a stream."""

    _handle = LEGACY_STREAM
    _capture = None


def _launch_and_wait(backend: Backend, launcher: KernelLauncher, config: tuple,
                     *args: Any) -> None:
    launcher.launch_on(_LegacyStream, config, *args)
    backend.stream_synchronize(LEGACY_STREAM)


class KernelLaunch(functools.partial):
    """A kernel configured with a grid, a block and a RocmStream; call it with the arguments.

    Attributes
    ----------
    dispatcher : the Numba kernel
    griddim, blockdim : tuple of 3 ints
    sharedmem : int
        Dynamic shared memory in bytes.
    """

    dispatcher: Any
    griddim: tuple[int, int, int]
    blockdim: tuple[int, int, int]
    sharedmem: int

    def __repr__(self) -> str:
        name = getattr(self.dispatcher, "__name__", type(self.dispatcher).__name__)
        stream = self.args[0] if self.func is not _launch_and_wait else None
        try:
            shown = (repr(stream) if self.func is not _launch_and_wait
                     else "legacy default stream, synchronous")
        except ReferenceError:
            shown = "<collected RocmStream>"
        return f"<KernelLaunch {name}[{self.griddim}, {self.blockdim}, {shown}]>"


def _kernel_launch(fn: Callable[..., None], bound: tuple, dispatcher: Any, griddim: Any,
                   blockdim: Any, sharedmem: Any) -> KernelLaunch:
    """Check the configuration (before anything is queued) and bind it to its launcher."""
    from numba.cuda.errors import normalize_kernel_dimensions
    griddim, blockdim = normalize_kernel_dimensions(griddim, blockdim)
    if isinstance(sharedmem, bool) or not isinstance(sharedmem, int) or sharedmem < 0:
        raise ValueError(f"dynamic shared memory must be a non-negative int, got {sharedmem!r}")
    launch = KernelLaunch(fn, *bound, (*griddim, *blockdim, sharedmem))
    launch.dispatcher, launch.griddim, launch.blockdim = dispatcher, griddim, blockdim
    launch.sharedmem = sharedmem
    return launch


def _on_stream(backend: Backend, dispatcher: Any, config: tuple,
               stream: RocmStream) -> KernelLaunch:
    """The launch of ``dispatcher[config]`` on ``stream``, configured once and kept on it."""
    stream._live()
    shared = config[3] if len(config) > 3 else 0
    with using_device(stream.device):
        launcher = backend.kernel_launcher(dispatcher)
    proxy = stream._proxy
    if proxy is None:
        proxy = stream._proxy = weakref.proxy(stream)
    launch = _kernel_launch(launcher.launch_on, (proxy,), dispatcher, config[0], config[1],
                            shared)
    kept = stream._launches
    if kept is None:
        kept = stream._launches = {}
    elif len(kept) >= _KEPT_LAUNCHES:
        for key in list(kept)[:_KEPT_LAUNCHES // 2]:
            del kept[key]
    try:
        kept[(dispatcher, *config[:2], *config[3:])] = launch
    except TypeError:  # an unhashable grid or block (a list): configured anew each time
        pass
    return launch


def install(backend: Backend) -> None:
    """Teach the backend's Numba dispatcher class to launch on RocmStreams (idempotent)."""
    cls = type(backend.numba_module().jit(_probe))
    if getattr(cls, "_rocmstreams_original_getitem", None) is not None:
        return
    original = cls.__getitem__
    route_all = backend.name == "cpu"

    def __getitem__(self: Any, config: Any) -> Any:
        try:  # the hot path: a launch configured on this stream before
            if len(config) == 3 and type(config) is tuple:
                return config[2]._launches[self, config[0], config[1]]
        except (AttributeError, KeyError, TypeError):
            pass
        if type(config) is tuple and 2 <= len(config) <= 4:
            n = len(config)
            stream = config[2] if n > 2 else None
            if isinstance(stream, RocmStream):
                if n == 4:
                    try:
                        return stream._launches[self, *config[:2], config[3]]
                    except (KeyError, TypeError):
                        pass
                return _on_stream(backend, self, config, stream)
            if route_all:
                return _kernel_launch(_launch_and_wait, (backend, backend.kernel_launcher(self)),
                                      self, config[0], config[1], config[3] if n > 3 else 0)
        return original(self, config)

    cls._rocmstreams_original_getitem = original
    cls.__getitem__ = __getitem__


def _probe() -> None:  # a kernel never compiled; only its dispatcher's class is wanted
    pass
