"""The hook on Numba's dispatcher: ``kernel[blocks, threads, stream]`` with a RocmStream.

Numba's dispatchers only take their own streams, so at selection the backend's dispatcher class
learns one thing: a configuration whose stream is a RocmStream returns a :class:`KernelLaunch`,
which submits the launch through the stream's door to the kernel's launcher (on GPU backends a
prepared launch: see ``prepared.py``). The launcher belongs to the kernel and device; grid, block
and shared memory are arguments of each launch, so a grid computed from each chunk's size costs
what a fixed one does. Every other configuration goes to Numba unchanged, except under the cpu
backend, where all simulator launches go through its single kernel engine on the legacy default
stream (the simulator runs launches synchronously and one at a time).
"""
from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from ...backends import Backend
from ...core.callbacks import refuse, running
from ...core.device import using_device
from ...errors import DeviceMismatchError
from ...memory import DeviceArray
from ...streamcore import LAUNCH, StreamCore, core_of, default_core
from .prepared import KernelLauncher, PreparedLauncher

__all__ = ["KernelLaunch", "install", "launcher_of", "launch_config", "prepare"]

_LAUNCHERS = "_rocmstreams_launchers"  # per-device launchers, kept on the dispatcher itself
_MAX_BLOCK = 1024  # threads per block on every CUDA and AMD GPU this supports
_MAX_GRID = (2 ** 31 - 1, 65535, 65535)
#: Checked configurations by grid, block, shared memory and their types (1.0 == 1 and True == 1
#: with the same hash: without the types a refused grid would find the entry of an accepted one).
_configs: dict[tuple[Any, ...], tuple[int, ...]] = {}
#: Configured launches by (kernel, grid, block, stream core, grid type, block type), so that a
#: launch in a loop costs one lookup (the types, as in ``_configs``: ``k[1.0, 64, s]`` never finds
#: the launch of ``k[1, 64, s]``; a tuple's elements are not typed here, so ``(1.0, 2)`` still
#: finds the launch of ``(1, 2)`` in the dictionary, and the hot path then refuses it); bounded
#: (cleared when full), so kernels and streams made on the fly are not kept. Each
#: is ``core.submit`` bound to the launcher and configuration; it holds the core, never the stream
#: (a dropped stream is collected and its core closed, as without launches).
_launches: dict[tuple[Any, ...], functools.partial] = {}
_MAX_KEPT = 4096
#: The same per (kernel, stream core) without a configuration: ``core.submit`` bound to the
#: launcher, for a configuration not in ``_launches`` (a grid computed from each chunk's size),
#: so that one costs a range check and one more lookup, not a new launch setup. Bounded too.
_submits: dict[tuple[Any, StreamCore], functools.partial] = {}


class KernelLaunch(functools.partial):
    """A kernel configured with a grid, a block and a stream; call it with the arguments.

    What ``kernel[blocks, threads, stream]`` returns for a RocmStream. Calling it submits the
    launch through the stream's door. It holds the stream it was configured with (a stream made
    for the launch, ``kernel[g, b, RocmStream()]``, lives as long as it), so it is made anew for
    each configuration from the cached launch of that kernel, grid, block and stream core
    (``KernelLaunch(cached)`` copies the cached partial's function and arguments: one small
    object, no argument tuple built).
    """

    # partial(core.door.submit, core, LAUNCH, launcher.run, config)
    __slots__ = ("stream",)
    stream: Any

    @property
    def launcher(self) -> KernelLauncher:
        return self.args[2].__self__

    @property
    def dispatcher(self) -> Any:
        return self.launcher.dispatcher

    @property
    def griddim(self) -> tuple[int, int, int]:
        return self.args[3][:3]

    @property
    def blockdim(self) -> tuple[int, int, int]:
        return self.args[3][3:6]

    @property
    def sharedmem(self) -> int:
        return self.args[3][6]

    @property
    def stream_core(self) -> StreamCore:
        return self.args[0]

    def __repr__(self) -> str:
        name = getattr(self.dispatcher, "__name__", "kernel")
        return (f"<KernelLaunch {name}[{self.griddim}, {self.blockdim}, "
                f"stream {self.stream_core.calls.handle:#x}] sharedmem={self.sharedmem}>")


def _dims(value: Any, what: str, limits: tuple[int, ...]) -> tuple[int, int, int]:
    if isinstance(value, (list, tuple)):
        items = tuple(value)
    else:
        items = (value,)
    if not 1 <= len(items) <= 3:
        raise ValueError(f"the {what} has 1 to 3 dimensions, got {value!r}")
    dims = []
    for n in items:
        if isinstance(n, (bool, np.bool_)):
            raise TypeError(f"the {what} holds ints, got {value!r}")
        try:
            n = operator.index(n)
        except TypeError:
            raise TypeError(f"the {what} holds ints, got {type(n).__name__} {n!r} in "
                            f"{value!r}; compute it with integer division, e.g. "
                            "(n + 255) // 256") from None
        dims.append(n)
    dims += [1] * (3 - len(dims))
    for n, limit in zip(dims, limits):
        if not 1 <= n <= limit:
            raise ValueError(f"the {what} {value!r} is out of range: each dimension must be "
                             f"between 1 and {limit}; a launch needs at least one block of "
                             "one thread")
    return dims[0], dims[1], dims[2]


def _types(dims: Any) -> Any:
    """The type of a grid or block, and of each dimension of a tuple (a key part: (1.0, 2)
    equals (1, 2))."""
    return tuple(map(type, dims)) if type(dims) is tuple else type(dims)


def launch_config(griddim: Any, blockdim: Any, sharedmem: Any = 0) -> tuple[int, ...]:
    """``(gx, gy, gz, bx, by, bz, sharedmem)``, checked before anything is queued."""
    key = (griddim, blockdim, sharedmem, _types(griddim), _types(blockdim), type(sharedmem))
    try:
        return _configs[key]
    except (KeyError, TypeError):
        pass
    grid = _dims(griddim, "grid", _MAX_GRID)
    block = _dims(blockdim, "block", (_MAX_BLOCK,) * 3)
    if block[0] * block[1] * block[2] > _MAX_BLOCK:
        raise ValueError(f"the block {blockdim!r} has {block[0] * block[1] * block[2]} threads; "
                         f"at most {_MAX_BLOCK} fit in one block: use more blocks instead")
    if isinstance(sharedmem, (bool, np.bool_)) or not isinstance(sharedmem, (int, np.integer)) \
            or sharedmem < 0:
        raise ValueError(f"dynamic shared memory must be a non-negative int of bytes, got "
                         f"{sharedmem!r}")
    config = (*grid, *block, int(sharedmem))
    try:
        if len(_configs) >= 4096:
            _configs.clear()
        _configs[key] = config
    except TypeError:  # unhashable (a list): checked anew each time
        pass
    return config


class DeviceLauncher:
    """A launcher used where there are several devices: ``run`` refuses arrays of another
    device than the stream's, naming both, and launches with the stream's device current (so
    that the kernel is loaded, and launched, there). Anything else is the launcher's."""

    __slots__ = ("launcher", "device")

    def __init__(self, launcher: KernelLauncher, device: int) -> None:
        self.launcher, self.device = launcher, device

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)

    def run(self, calls: Any, config: tuple, *args: Any) -> None:
        device = self.device
        for i, a in enumerate(args):
            if type(a) is DeviceArray and a.__rocmstreams_block__ is not None and \
                    a.device != device:
                name = getattr(self.launcher.dispatcher, "__name__", "kernel")
                raise DeviceMismatchError(
                    f"{name}: argument {i} is on device {a.device} but the launch stream is on "
                    f"device {device}; copy it to device {device} first (rs.copy_async(dst, "
                    f"src, stream=s) with dst = rs.empty_like(src, stream=s)) or launch on a "
                    f"stream of device {a.device}; nothing was launched")
        with using_device(device):
            self.launcher.run(calls, config, *args)


def launcher_of(backend: Backend, dispatcher: Any, device: int) -> KernelLauncher:
    """The launcher of ``dispatcher`` on ``device``: prepared where the backend can, made once
    and kept on the dispatcher (so it goes when the kernel does)."""
    try:
        return getattr(dispatcher, _LAUNCHERS)[device]
    except (AttributeError, KeyError):
        pass
    driver = backend.kernel_driver()
    if driver is None:
        launcher: KernelLauncher = KernelLauncher(dispatcher)
    else:
        with using_device(device):
            launcher = PreparedLauncher(dispatcher, driver, _array_types(backend), device)
    found = dispatcher.__dict__.setdefault(_LAUNCHERS, {})
    return found.setdefault(device, launcher)


def prepare(kernel: Any, *example_args: Any, device: int | None = None) -> None:
    """Compile ``kernel`` for the types of ``example_args``, load it on ``device`` (the current
    one when omitted) and prepare its launch, without launching it.

    The first launch of a kernel otherwise compiles and loads it there and then, which takes
    time and, on GPU runtimes, may wait for work running on the device; preparing it ahead
    (say, before a pipeline starts) moves that cost out of the launch. Launches with arguments
    of the same types then take the prepared path at once.

    Raises
    ------
    TypeError
        ``example_args`` do not fit the kernel's parameters; nothing was compiled.
    """
    if running:
        refuse("rocmstreams.prepare()")
    from ...backends import active
    from ...core.device import check_device
    be = active()
    ordinal = check_device(device)
    launcher = launcher_of(be, kernel, ordinal)
    with using_device(ordinal):
        launcher.prepare(example_args)


def _array_types(backend: Backend) -> tuple[type, ...]:
    types: tuple[type, ...] = (DeviceArray,)
    try:
        types += (backend.numba_module().cudadrv.devicearray.DeviceNDArray,)
    except AttributeError:
        pass
    return types


def _is_numba_stream(stream: Any) -> bool:
    return type(stream).__module__.partition(".")[0] in ("numba", "numba_cuda", "numba_hip")


def _foreign_core(stream: Any) -> StreamCore | None:
    """The core a launch on ``stream`` (not a RocmStream) takes: None for the legacy default
    stream (None, 0) and a Numba stream (Numba's launch, or the cpu engine, takes them), a
    borrowed core for any other object with ``__cuda_stream__``; TypeError for the rest, before
    anything is queued (Numba would run some of them on the legacy stream, or fail at the call)."""
    if stream is None or (type(stream) is int and stream == 0) or _is_numba_stream(stream):
        return None
    if getattr(stream, "__cuda_stream__", None) is not None:
        return core_of(stream, "a kernel launch")
    raise TypeError(f"the launch stream must be a RocmStream, a Numba stream, an object with "
                    f"__cuda_stream__ (CuPy, PyTorch, cuda.core) or 0 or None (the legacy "
                    f"default stream), got {type(stream).__name__} {stream!r}; nothing was "
                    f"launched")


def install(backend: Backend) -> None:
    """Teach the backend's Numba dispatcher class to launch on RocmStreams (idempotent)."""
    cls = type(backend.numba_module().jit(_probe))
    if getattr(cls, "_rocmstreams_original_getitem", None) is not None:
        return
    original = cls.__getitem__
    route_all = backend.name == "cpu"

    def __getitem__(self: Any, config: Any) -> Any:
        try:  # the hot path: [grid, block, RocmStream], configured before
            griddim, blockdim, stream = config
            cached = _launches.get((self, griddim, blockdim, stream.__rocmstreams_core__,
                                    griddim.__class__, blockdim.__class__))
        except Exception:  # noqa: BLE001 - anything else is decided below
            return _slow_getitem(self, config)
        if cached is None or (griddim.__class__ is tuple or blockdim.__class__ is tuple) and \
                not (_exact(griddim) and _exact(blockdim)):  # (1.0, 2) found (1, 2)'s launch
            return _slow_getitem(self, config)
        launch = KernelLaunch(cached)
        launch.stream = stream
        return launch

    def _slow_getitem(self: Any, config: Any) -> Any:
        if type(config) is tuple and len(config) == 3:  # a new grid of ints (sizes in a loop)
            griddim, blockdim, stream = config
            try:
                submit = _submits[self, stream.__rocmstreams_core__]
            except Exception:  # noqa: BLE001 - not a RocmStream, or not launched on before
                submit = None
            # (not kept in _launches: a grid that changes every call would only churn it)
            cfg = None if submit is None else _plain_config(griddim, blockdim)
            if submit is not None and cfg is not None:
                launch = KernelLaunch(submit, cfg)
                launch.stream = stream
                return launch
        if type(config) is not tuple or not 2 <= len(config) <= 4:
            raise TypeError(f"a launch configuration is kernel[grid, block], "
                            f"kernel[grid, block, stream] or kernel[grid, block, stream, "
                            f"sharedmem]; got {config!r}")
        n = len(config)
        stream = config[2] if n > 2 else None
        cfg = launch_config(config[0], config[1], config[3] if n > 3 else 0)
        core = getattr(stream, "__rocmstreams_core__", None)
        borrowed = not isinstance(core, StreamCore)
        if borrowed:
            core = _foreign_core(stream)  # borrowed for this launch: not kept in the cache
        if core is not None:
            launcher = launcher_of(backend, self, core.device)
            run = launcher.run if backend.get_device_count() == 1 else \
                DeviceLauncher(launcher, core.device).run
            submit = functools.partial(core.door.submit, core, LAUNCH, run)
            bound = functools.partial(submit, cfg)
            if n == 3 and not borrowed and _exact(config[0]) and _exact(config[1]):
                if len(_submits) >= _MAX_KEPT:
                    _submits.clear()
                _submits[self, core] = submit
                _keep(self, config[0], config[1], core, bound)
            launch = KernelLaunch(bound)
            launch.stream = stream
            return launch
        if route_all:
            legacy = default_core(backend.get_device())
            launcher = launcher_of(backend, self, legacy.device)
            return functools.partial(_launch_and_wait, legacy, launcher, cfg)
        return original(self, config)

    cls._rocmstreams_original_getitem = original
    cls.__getitem__ = __getitem__


def _keep(dispatcher: Any, griddim: Any, blockdim: Any, core: StreamCore,
          bound: functools.partial) -> None:
    """Cache the launch of an exact configuration (see ``_launches``)."""
    if len(_launches) >= _MAX_KEPT:
        _launches.clear()
    try:
        _launches[dispatcher, griddim, blockdim, core, griddim.__class__,
                  blockdim.__class__] = bound
    except TypeError:  # an unhashable grid or block (a list)
        pass


def _plain_dims(dim: Any, limits: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``dim`` as three dimensions where it is an int or a tuple of 1 to 3 ints within
    ``limits``; None for anything else (the full check, launch_config, decides then)."""
    if type(dim) is int:
        return (dim, 1, 1) if 0 < dim <= limits[0] else None
    if type(dim) is not tuple:
        return None
    if len(dim) == 2:  # the common 2-D case, unrolled
        x, y = dim
        if type(x) is int and type(y) is int and 0 < x <= limits[0] and 0 < y <= limits[1]:
            return (x, y, 1)
        return None
    if not 1 <= len(dim) <= 3:
        return None
    full = (*dim, 1, 1)[:3]
    for n, limit in zip(full, limits):
        if type(n) is not int or not 0 < n <= limit:
            return None
    return full


def _plain_config(griddim: Any, blockdim: Any) -> tuple[int, ...] | None:
    """The configuration of a grid and block of plain ints, checked (no shared memory); None
    for anything else."""
    if type(griddim) is int and type(blockdim) is int:  # the common 1-D case, first
        if 0 < griddim <= _MAX_GRID[0] and 0 < blockdim <= _MAX_BLOCK:
            return (griddim, 1, 1, blockdim, 1, 1, 0)
        return None
    grid = _plain_dims(griddim, _MAX_GRID)
    block = _plain_dims(blockdim, (_MAX_BLOCK,) * 3)
    if grid is None or block is None or block[0] * block[1] * block[2] > _MAX_BLOCK:
        return None
    return (*grid, *block, 0)


def _exact(dim: Any) -> bool:
    """A grid or block the launch cache may key on: an int or a tuple of ints. (A key equal to
    another of other types, ``(1.0, 2) == (1, 2)``, would reach the other's launch unchecked.)"""
    return type(dim) is int or (type(dim) is tuple and all(type(d) is int for d in dim))


def _launch_and_wait(core: StreamCore, launcher: KernelLauncher, config: tuple,
                     *args: Any) -> None:
    core.submit(LAUNCH, launcher.run, config, *args)
    core.synchronize()


def _probe() -> None:  # a kernel never compiled; only its dispatcher's class is wanted
    pass
