"""Prepared launches of Numba kernels: types resolved once per signature, arguments packed into a
reused buffer, the compiled function launched straight through the driver.

Numba's own launch types every argument, wraps every array, builds a launch configuration and
converts every value on every call, which costs several times the driver's launch itself. A
:class:`PreparedLauncher` serves one kernel on any stream, grid and block. The first
call with a new combination of argument types goes through Numba's own launch (which compiles the
specialization if needed); the launcher then prepares that specialization:

- the compiled function, taken from the overload Numba launched;
- a parameter buffer laid out by Numba's kernel ABI: each array expands to meminfo, parent,
  nitems, itemsize, data pointer, shape..., strides... (all pointer-sized), each scalar is one
  parameter of the kernel's own argument type, a complex number two;
- generated code that checks the arguments still match and packs them with one ``pack_into``.

Later calls with the same argument types pack and launch; anything the prepared code does not
take (an array of another type, a scalar out of range of its parameter, an argument kind it does
not prepare) goes back to Numba's launch, never to a launch with wrong arguments.

Arrays on the prepared path are rocmstreams ``DeviceArray`` and Numba device arrays. Their
address, shape and strides never change, so each array's ABI values are computed once and kept on
it. Other CUDA-Array-Interface objects (CuPy, PyTorch) go through Numba's launch, which also honours
their interface's stream synchronization.
"""
from __future__ import annotations

import ctypes
import struct
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import StreamClosedError
from .base import CLOSED_LAUNCH_STREAM, KernelLauncher

__all__ = ["KernelDriver", "PreparedLauncher", "ABI_ATTRIBUTE"]

#: Attribute an array carries its cached ``(numba type, ABI values)`` under.
ABI_ATTRIBUTE = "_rocmstreams_abi"
#: At most this many prepared specializations per combination of Python argument types.
_MAX_SPECIALIZATIONS = 8

# Scalar parameter formats, each in its own 8-byte slot: (struct code, padding bytes).
_SCALARS = {
    "int8": ("b", 7), "uint8": ("B", 7), "int16": ("h", 6), "uint16": ("H", 6),
    "int32": ("i", 4), "uint32": ("I", 4), "int64": ("q", 0), "uint64": ("Q", 0),
    "float32": ("f", 4), "float64": ("d", 0), "bool": ("?", 7),
}
_COMPLEX = {"complex64": ("f", 4), "complex128": ("d", 0)}
_SCALAR_TYPES = (int, float, bool, complex, np.integer, np.floating, np.bool_,
                 np.complexfloating)


@dataclass(frozen=True)
class KernelDriver:
    """What a runtime backend gives the prepared path.

    ``launch(function, gx, gy, gz, bx, by, bz, shared, stream, params, extra)`` is the driver's
    launch call, returning a tuple whose first item is its status; ``success`` is the status
    object of success (compared with ``is``); ``function(kernel)`` the launchable function of a
    compiled Numba kernel on the current device; ``stream(handle)`` the object ``launch`` takes
    for a stream handle; ``error(status, what)`` the exception to raise for a failed launch;
    ``array_types`` the array classes whose ABI values may be cached on them; ``extra`` the
    value passed as the launch call's ``extra`` argument.

    ``buffer_markers``, where the driver takes all parameters as one buffer through ``extra``
    (CUDA's ``CU_LAUNCH_PARAM_BUFFER_POINTER``/``_SIZE``/``_END``, in that order): the launch
    then passes no per-parameter pointers, and the driver copies one block instead of looking
    up and copying each parameter. ``param_info(function)`` gives the function's parameters as
    ``(offset, size)`` pairs (``param_info(function, count)``); a kernel whose layout is not the
    one computed here, or whose layout the driver cannot give, is launched with per-parameter
    pointers instead.
    """

    launch: Callable[..., tuple]
    success: Any
    function: Callable[[Any], Any]
    stream: Callable[[int], Any]
    error: Callable[[Any, str], BaseException]
    array_types: tuple[type, ...]
    extra: Any = 0
    buffer_markers: tuple[int, int, int] | None = None
    param_info: Callable[[Any, int], list[tuple[int, int]] | None] | None = None


class _ParamBuffer:
    """A parameter buffer and what the launch call passes for it: ``(params, extra)``.

    Per-parameter mode: 8-byte slots, ``params`` the address of the array of pointers to them.
    Buffer mode (``markers``): the parameters at their own offsets, ``params`` None and
    ``extra`` the address of ``{POINTER, buffer, SIZE, &size, END}``.
    """

    def __init__(self, nbytes: int, markers: tuple[int, int, int] | None, extra: Any) -> None:
        self.data = bytearray(max(nbytes, 8))
        raw = (ctypes.c_char * len(self.data)).from_buffer(self.data)
        base = ctypes.addressof(raw)
        if markers is None:
            nslots = nbytes // 8
            pointers = (ctypes.c_void_p * max(nslots, 1))(*(base + 8 * k
                                                            for k in range(nslots)))
            self._keep: tuple[Any, ...] = (raw, pointers)
            self.params, self.extra = ctypes.addressof(pointers), extra
        else:
            pointer, size_marker, end = markers
            size = ctypes.c_size_t(nbytes)
            options = (ctypes.c_void_p * 5)(pointer, base, size_marker, ctypes.addressof(size),
                                            end)
            self._keep = (raw, size, options)
            self.params, self.extra = None, ctypes.addressof(options)


_NOTHING = object()


def _offsets(fmt: list[str]) -> list[tuple[int, int]]:
    """``(offset, size)`` of each field of a native-aligned struct format (``fmt[0]`` is "@")."""
    found, prefix = [], fmt[0]
    for part in fmt[1:]:
        for code in part:
            size = struct.calcsize(code)
            end = struct.calcsize(prefix + code)
            found.append((end - size, size))
            prefix += code
    return found


class _Unpreparable(Exception):
    """This specialization takes an argument kind the prepared path does not pack."""


def _array_abi(array: Any, numba_type: Any) -> tuple[Any, tuple[int, ...]]:
    """``(numba type, ABI values)`` of a device array, from its CUDA Array Interface."""
    cai = array.__cuda_array_interface__
    shape = tuple(int(n) for n in cai["shape"])
    itemsize = np.dtype(cai["typestr"]).itemsize
    strides = cai.get("strides")
    if strides is None:
        strides, step = [], itemsize
        for n in reversed(shape):
            strides.append(step)
            step *= n
        strides.reverse()
    nitems = 1
    for n in shape:
        nitems *= n
    return numba_type, (0, 0, nitems, itemsize, int(cai["data"][0]), *shape,
                        *(int(s) for s in strides))


class PreparedLauncher(KernelLauncher):
    """Launches one kernel on any stream and configuration, prepared per argument signature.

    Parameters
    ----------
    dispatcher : numba dispatcher
        The ``@cuda.jit`` kernel.
    driver : KernelDriver
        The backend's driver calls.
    numba_launch : callable
        ``numba_launch(stream handle, args, config)`` launches through Numba's own path.
    """

    def __init__(self, dispatcher: Any, driver: KernelDriver,
                 numba_launch: Callable[[int, Sequence[Any], tuple], None]) -> None:
        super().__init__(numba_launch)
        self.dispatcher = dispatcher
        self._driver = driver
        self._families: dict[tuple[type, ...], list[Callable[[int, tuple, tuple], bool]]] = {}
        self._closed_families: set[tuple[type, ...]] = set()
        self._prepared: set[tuple[Any, ...]] = set()  # Numba types of prepared signatures
        self._last: Callable[[int, tuple, tuple], bool] | None = None  # tried first
        self._lock = threading.Lock()

    @property
    def specializations(self) -> int:
        """How many argument signatures have a prepared launch."""
        return sum(len(f) for f in self._families.values())

    def configure(self, stream: Any, config: tuple) -> Callable[..., None]:
        """The launch on ``stream`` with ``config``, as one function: the launch hot path.

        It is :meth:`launch_on` with the stream and configuration bound, written out so that a
        call costs one Python frame before the prepared run (a partial of ``launch_on`` costs
        two and merges its arguments).
        """
        launcher = self

        def launch(*args: Any) -> None:
            try:
                handle = stream._handle
            except ReferenceError:
                handle = None
            if handle is None:
                raise StreamClosedError(CLOSED_LAUNCH_STREAM)
            if stream._capture is not None:  # a graph keeps its launches' arrays alive
                stream._capture._keep(args)
            run = launcher._last
            if run is None or not run(handle, args, config):
                launcher(handle, args, config)

        return launch

    def launch_on(self, stream: Any, config: tuple, *args: Any) -> None:
        self.configure(stream, config)(*args)

    def __call__(self, handle: int, args: tuple, config: tuple) -> None:
        family = self._families.get(tuple(map(type, args)))
        if family is not None:
            for run in family:
                if run(handle, args, config):
                    self._last = run
                    return
        self._launch(handle, args, config)
        self._learn(args)

    # ---- preparing ---------------------------------------------------------------------------
    def _learn(self, args: tuple) -> None:
        """After Numba launched ``args``, prepare the specialization it used, if it can be."""
        key = tuple(map(type, args))
        if key in self._closed_families:
            return
        family = self._families.get(key, [])
        if len(family) >= _MAX_SPECIALIZATIONS:
            return
        try:
            observed = self._observe(args)
            if observed in self._prepared:
                return  # prepared, but these values did not fit it (e.g. an int out of range)
            run = self._prepare(args, observed)
        except _Unpreparable:
            if not family:
                self._closed_families.add(key)
            return
        self._prepared.add(observed)
        self._families[key] = family + [run]

    def _overload(self, arg_types: tuple[Any, ...]) -> Any:
        """The compiled kernel Numba launched for arguments of these types."""
        d = self.dispatcher
        if getattr(d, "_launch_config_sensitive", False):
            raise _Unpreparable("the kernel depends on its launch configuration")
        kernel = d.overloads.get(arg_types)
        if kernel is None and len(d.overloads) == 1 and not getattr(d, "_can_compile", True):
            kernel = next(iter(d.overloads.values()))  # explicit signature, converted arguments
        if kernel is None:
            raise _Unpreparable("no overload matches the argument types exactly")
        if kernel.debug or kernel.cooperative or kernel.extensions:
            raise _Unpreparable("debug, cooperative or extension-marshalled kernel")
        return kernel

    def _observe(self, args: tuple) -> tuple[Any, ...]:
        """The Numba types of ``args``, as Numba's dispatch sees them."""
        observed = []
        for a in args:
            if not isinstance(a, self._driver.array_types + _SCALAR_TYPES):
                raise _Unpreparable(f"{type(a).__name__} arguments take Numba's launch")
            observed.append(self.dispatcher.typeof_pyval(a))
        return tuple(observed)

    def _prepare(self, args: tuple,
                 observed: tuple[Any, ...]) -> Callable[[int, tuple, tuple], bool]:
        d, driver = self.dispatcher, self._driver
        kernel = self._overload(observed)
        params = list(kernel.argument_types)
        if len(params) != len(args):
            raise _Unpreparable("argument count differs from the kernel's")

        # two layouts: 8-byte slots (per-parameter pointers), and each parameter at its own
        # C-aligned offset (one buffer, where the driver takes one)
        slots, packed_fmt, values, checks, namespace = ["<"], ["@"], [], [], {}
        sizes: list[int] = []  # each kernel parameter's size, in order
        for i, (a, param, seen) in enumerate(zip(args, params, observed)):
            name = f"a{i}"
            kind = getattr(param, "name", str(param))
            if isinstance(a, driver.array_types):
                if type(param).__name__ != "Array":
                    raise _Unpreparable(f"array passed for a {param} parameter")
                ndim = param.ndim
                slots.append("qqqqQ" + "q" * (2 * ndim))
                packed_fmt.append("qqqqQ" + "q" * (2 * ndim))
                sizes += [8] * (5 + 2 * ndim)
                namespace[f"T{i}"] = seen
                checks.append(
                    f"    try:\n"
                    f"        m{i} = {name}.{ABI_ATTRIBUTE}\n"
                    f"    except AttributeError:\n"
                    f"        m{i} = None\n"
                    f"    if m{i} is None:\n"
                    f"        m{i} = abi({name})\n"
                    f"    if m{i}[0] is not T{i}:\n"
                    f"        return False\n")
                values.append(f"*m{i}[1]")
            elif kind in _SCALARS and not isinstance(a, (complex, np.complexfloating)):
                code, pad = _SCALARS[kind]
                slots.append(code + "x" * pad)
                packed_fmt.append(code)
                sizes.append(struct.calcsize(code))
                values.append(name)
            elif kind in _COMPLEX and isinstance(a, _SCALAR_TYPES):
                code, pad = _COMPLEX[kind]
                slots.append((code + "x" * pad) * 2)
                packed_fmt.append(code * 2)
                sizes += [struct.calcsize(code)] * 2
                values.append(f"{name}.real, {name}.imag")
            else:
                raise _Unpreparable(f"parameter of type {param} is not prepared")

        try:
            cufunc = driver.function(kernel)
        except Exception as exc:  # noqa: BLE001 - a compiled kernel we cannot reach
            raise _Unpreparable(f"no launchable function: {exc}") from exc
        markers = driver.buffer_markers
        packed_layout = struct.Struct("".join(packed_fmt))
        if markers is not None and _offsets(packed_fmt) == self._param_info(cufunc, sizes):
            layout = packed_layout
        else:  # per-parameter pointers: they need no agreement on offsets
            markers, layout = None, struct.Struct("".join(slots))
        streams: dict[int, Any] = {}

        def stream_of(handle: int) -> Any:
            obj = streams[handle] = driver.stream(handle)
            return obj

        # Two parameter buffers: one owned by the thread that prepared the launch, which skips
        # packing when every argument is the same as last time; one for other threads,
        # used under a lock. The driver reads a buffer during the launch call (without the GIL).
        name = getattr(d, "__name__", "kernel")
        buffers = [_ParamBuffer(layout.size, markers, driver.extra) for _ in range(2)]
        last: list[Any] = [_NOTHING] * len(args)
        namespace.update(
            abi=self._abi_maker(), pack=layout.pack_into,
            buf=buffers[0].data, params=buffers[0].params, extra=buffers[0].extra,
            buf2=buffers[1].data, params2=buffers[1].params, extra2=buffers[1].extra,
            keep=buffers, last=last, NOTHING=_NOTHING,
            owner=threading.get_ident(), get_ident=threading.get_ident, func=cufunc,
            launch=driver.launch, ok=driver.success, streams=streams, stream_of=stream_of,
            lock=self._lock, fail=driver.error, pack_errors=(struct.error, OverflowError),
            what=f"launching {name}",
            **{f"C{i}": type(a) for i, a in enumerate(args)})
        n = len(args)
        names = "".join(f"a{i}, " for i in range(n))
        packed = ", ".join(values)
        # What the skip-pack test compares: an array's cached ABI tuple (never the array: a
        # reference kept here would free the array inside some later launch, and a free
        # synchronizes the device and invalidates an open capture), a scalar itself.
        kept = [f"m{i}" if isinstance(a, driver.array_types) else f"a{i}"
                for i, a in enumerate(args)]
        same = " and ".join(f"{k} is last[{i}]" for i, k in enumerate(kept)) or "True"
        remember = "".join(f"            last[{i}] = {k}\n" for i, k in enumerate(kept))
        types_differ = " or ".join(f"type(a{i}) is not C{i}" for i in range(n))
        source = (
            "def run(handle, args, config):\n"
            + (f"    try:\n        {names}= args\n    except ValueError:\n        return False\n"
               f"    if {types_differ}:\n        return False\n" if n else
               "    if args:\n        return False\n")
            + "".join(checks) +
            "    gx, gy, gz, bx, by, bz, shm = config\n"
            "    try:\n"
            "        s = streams[handle]\n"
            "    except KeyError:\n"
            "        s = stream_of(handle)\n"
            "    if get_ident() == owner:\n"
            f"        if not ({same}):\n"
            "            try:\n"
            f"                pack(buf, 0, {packed})\n"
            "            except pack_errors:\n"
            "                last[0:] = [NOTHING] * len(last)\n"
            "                return False\n"
            + remember +
            "        status = launch(func, gx, gy, gz, bx, by, bz, shm, s, params, extra)[0]\n"
            "    else:\n"
            "        with lock:\n"
            "            try:\n"
            f"                pack(buf2, 0, {packed})\n"
            "            except pack_errors:\n"
            "                return False\n"
            "            status = launch(func, gx, gy, gz, bx, by, bz, shm, s, params2, extra2)[0]\n"
            "    if status is not ok:\n"
            "        raise fail(status, f'{what} with grid {config[:3]}, block {config[3:6]}')\n"
            "    return True\n")
        exec(compile(source, f"<rocmstreams prepared launch of {name}>", "exec"), namespace)
        return namespace["run"]

    def _param_info(self, function: Any, sizes: list[int]) -> list[tuple[int, int]] | None:
        """The driver's ``(offset, size)`` of each parameter of ``function``, or None."""
        info = self._driver.param_info
        if info is None:
            return None
        try:
            found = info(function, len(sizes))
        except Exception:  # noqa: BLE001 - a driver that cannot say: per-parameter pointers
            return None
        return None if found is None else [tuple(pair) for pair in found]

    def _abi_maker(self) -> Callable[[Any], tuple[Any, tuple[int, ...]]]:
        typeof = self.dispatcher.typeof_pyval

        def abi(array: Any) -> tuple[Any, tuple[int, ...]]:
            found = _array_abi(array, typeof(array))
            try:
                setattr(array, ABI_ATTRIBUTE, found)
            except AttributeError:
                pass
            return found

        return abi
