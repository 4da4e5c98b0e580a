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

import weakref
from typing import Any, Callable, Protocol

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


class KernelLaunch(Protocol):
    """A kernel configured with a grid, a block and a stream; call it with the arguments.

    What ``kernel[blocks, threads, stream]`` returns for a RocmStream: a function (the launch
    hot path), carrying these attributes.

    Attributes
    ----------
    dispatcher : the Numba kernel
    launcher : the backend's launcher of that kernel
    griddim, blockdim : tuple of 3 ints
    sharedmem : int
        Dynamic shared memory in bytes.
    """

    dispatcher: Any
    launcher: KernelLauncher
    griddim: tuple[int, int, int]
    blockdim: tuple[int, int, int]
    sharedmem: int

    def __call__(self, *args: Any) -> None: ...


def _config(griddim: Any, blockdim: Any, sharedmem: Any) -> tuple:
    """``(gx, gy, gz, bx, by, bz, sharedmem)``, checked before anything is queued."""
    from numba.cuda.errors import normalize_kernel_dimensions
    griddim, blockdim = normalize_kernel_dimensions(griddim, blockdim)
    if isinstance(sharedmem, bool) or not isinstance(sharedmem, int) or sharedmem < 0:
        raise ValueError(f"dynamic shared memory must be a non-negative int, got {sharedmem!r}")
    return (*griddim, *blockdim, sharedmem)


def _described(launch: Callable[..., None], launcher: KernelLauncher, dispatcher: Any,
               config: tuple, where: str) -> KernelLaunch:
    """Name the configured launch (its repr and tracebacks show the kernel and configuration)
    and attach what it launches."""
    name = getattr(dispatcher, "__name__", type(dispatcher).__name__)
    launch.__qualname__ = launch.__name__ = f"{name}[{config[:3]}, {config[3:6]}, {where}]"
    launch.dispatcher, launch.launcher = dispatcher, launcher  # type: ignore[attr-defined]
    launch.griddim, launch.blockdim = config[:3], config[3:6]  # type: ignore[attr-defined]
    launch.sharedmem = config[6]  # type: ignore[attr-defined]
    return launch  # type: ignore[return-value]


def _on_stream(backend: Backend, dispatcher: Any, config: tuple,
               stream: RocmStream) -> KernelLaunch:
    """The launch of ``dispatcher[config]`` on ``stream``, configured once and kept on it."""
    stream._live()
    checked = _config(config[0], config[1], config[3] if len(config) > 3 else 0)
    with using_device(stream.device):
        launcher = backend.kernel_launcher(dispatcher)
    proxy = stream._proxy
    if proxy is None:
        proxy = stream._proxy = weakref.proxy(stream)
    launch = _described(launcher.configure(proxy, checked), launcher, dispatcher, checked,
                        f"stream {stream.handle:#x}")
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
            griddim, blockdim, stream = config
            return stream._launches[self, griddim, blockdim]
        except Exception:  # noqa: BLE001 - anything else is decided below
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
                checked = _config(config[0], config[1], config[3] if n > 3 else 0)
                launcher = backend.kernel_launcher(self)

                def launch(*args: Any) -> None:
                    _launch_and_wait(backend, launcher, checked, *args)
                return _described(launch, launcher, self, checked,
                                  "legacy default stream, synchronous")
        return original(self, config)

    cls._rocmstreams_original_getitem = original
    cls.__getitem__ = __getitem__


def _probe() -> None:  # a kernel never compiled; only its dispatcher's class is wanted
    pass
