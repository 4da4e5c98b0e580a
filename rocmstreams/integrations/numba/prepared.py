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
import functools
import inspect
import itertools
import linecache
import struct
import threading
from typing import Any, Callable, Sequence, cast

import numpy as np

from ...backends import PER_THREAD_STREAM, KernelDriver, StreamCalls
from ...core.arrays import describe, device_dtype
from ...memory import block_of, note_use

__all__ = ["KernelLauncher", "PreparedLauncher", "ABI_ATTRIBUTE", "check_kernel_arguments"]

#: Attribute an array carries its cached ``(numba type, ABI values)`` under.
ABI_ATTRIBUTE = "__rocmstreams_abi__"
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


class _ParamBuffer:
    """A parameter buffer and what the launch call passes for it: ``(params, extra)``.

    Per-parameter mode: 8-byte slots, ``params`` the address of the array of pointers to them.
    Buffer mode (``markers``): the parameters at their own offsets, ``params`` None and
    ``extra`` the address of ``{POINTER, buffer, SIZE, &size, END}``.
    """

    params: int | None
    extra: Any

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
_NO_HOME = -1  # the home of memory rocmstreams does not pool: no stream handle is -1


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


# The prepared launch of one specialization, generated from this template (its source is
# registered with linecache, so tracebacks through it show these lines). Names it uses:
# a<i> the arguments, C<i> their Python types, T<i> an array's Numba type, m<i> its cached ABI
# (note tells the memory layer of a pooled array's use off its home stream; nothing else is told),
# pack/buf/params/extra the owner thread's parameter buffer, buf2/params2/extra2 the shared one
# (used under lock), last the arguments packed last, s the stream as the launch call takes it,
# and one of two launch calls (each a few lines, below):
_TEMPLATE = """\
def run(handle, args, config):
    # prepared launch of {name}({signature}), {mode}
{unpack}{checks}\
    gx, gy, gz, bx, by, bz, shm = config
    try:
        s = streams[handle]
    except KeyError:
        s = stream_of(handle)
    if get_ident() == owner:
        if not ({same}):
            try:
                pack(buf, 0, {packed})
            except pack_errors:
                last[0:] = [NOTHING] * len(last)
                return False
{remember}\
{launch}\
    else:
        with lock:
            try:
                pack(buf2, 0, {packed})
            except pack_errors:
                return False
{launch2}\
    return True
"""
# The binding's launch call (launch, func, ok); failed(...) launches once more where the driver
# recovered what failed (a thread with no current context), else raises.
_BINDING_LAUNCH = """\
{indent}status = launch(func, gx, gy, gz, bx, by, bz, shm, s, {params}, {extra})[0]
{indent}if status is not ok:
{indent}    failed(status, handle, config, {params}, {extra})
"""
# The compiled launch call (backends.native) bound to func and one buffer; s is the raw stream
# handle. Any status but 0 launches through the binding, which says why it failed.
_NATIVE_LAUNCH = """\
{indent}if {native}(gx, gy, gz, bx, by, bz, shm, s):
{indent}    relaunch(handle, config, {params}, {extra})
"""
_ARRAY_CHECK = """\
    try:
        m{i} = a{i}.__rocmstreams_abi__
    except AttributeError:
        m{i} = None
    if m{i} is None:
        m{i} = abi(a{i})
    if m{i}[0] is not T{i}:
        return False
    if (m{i}[2] != handle or handle == 2) and m{i}[3] is not None:  # 2: a per-thread stream
        note(m{i}[3], handle)
"""
_SOURCES = itertools.count(1)


class _Unpreparable(Exception):
    """This specialization takes an argument kind the prepared path does not pack."""


class _BindingLaunch:
    """One prepared kernel's launch through the binding, where the fast call did not launch:
    ``relaunch(handle, config, params, extra)``, and ``failed(status, ...)`` after a refusal."""

    __slots__ = ("driver", "func", "device", "what", "streams")

    def __init__(self, driver: KernelDriver, func: Any, device: int, what: str) -> None:
        self.driver, self.func, self.device, self.what = driver, func, device, what
        self.streams: dict[int, Any] = {}  # the binding's stream objects by handle

    def relaunch(self, handle: int, config: tuple, params: Any, extra: Any) -> None:
        d = self.driver
        stream = self.streams.get(handle)
        if stream is None:
            stream = self.streams[handle] = d.stream(handle)
        status = d.launch(self.func, *config, stream, params, extra)[0]
        if status is not d.success:
            self.failed(status, handle, config, params, extra)

    def failed(self, status: Any, handle: int, config: tuple, params: Any, extra: Any) -> None:
        """Launch once more where the driver recovered what failed, else raise."""
        d = self.driver
        if d.recover(status, self.device):
            status = d.launch(self.func, *config, d.stream(handle), params, extra)[0]
            if status is d.success:
                return
        raise d.error(status, f"{self.what} with grid {config[:3]}, block {config[3:6]}")


def _array_abi(array: Any, numba_type: Any) -> tuple[Any, tuple[int, ...], Any, Any]:
    """``(numba type, ABI values, home, block)`` of a device array: ABI values meminfo, parent,
    nitems, itemsize, data pointer, shape..., strides...; ``block`` the stream-ordered
    allocation it views (None for memory rocmstreams does not pool) and ``home`` the stream that
    allocated it: a launch on another stream tells the block (:func:`note_use`)."""
    info = describe(array)
    block = block_of(array)
    return numba_type, (0, 0, info.size, info.dtype.itemsize, info.address, *info.shape,
                        *info.strides), _NO_HOME if block is None else block.home, block


@functools.lru_cache(maxsize=None)
def _signature(py_func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(py_func)


def check_kernel_arguments(dispatcher: Any, args: Sequence[Any]) -> None:
    """Raise TypeError, before anything is queued, when ``args`` do not fit the kernel, or one
    is a string or an array of Python objects (no device can hold either)."""
    for i, a in enumerate(args):
        try:
            if isinstance(a, np.ndarray):
                device_dtype(a.dtype)
            elif isinstance(a, (str, bytes)):
                raise TypeError(f"a {type(a).__name__} is not a kernel argument; pass an array "
                                "of its codes (np.frombuffer(s.encode(), np.uint8)) or a number")
        except TypeError as exc:
            name = getattr(dispatcher, "__name__", "kernel")
            raise TypeError(f"kernel {name}: argument {i}: {exc}; nothing was launched") \
                from None
    py_func = getattr(dispatcher, "py_func", None)
    if py_func is None:
        return
    try:
        _signature(py_func).bind(*args)
    except TypeError as exc:
        raise TypeError(f"kernel {py_func.__name__}: {exc}; nothing was launched") from None


class KernelLauncher:
    """Launches one kernel through Numba's own launch: ``run(calls, config, *args)``.

    ``calls`` are the stream's bound runtime calls (the door passes them), ``config`` is
    ``(gx, gy, gz, bx, by, bz, sharedmem)``.
    """

    def __init__(self, dispatcher: Any) -> None:
        self.dispatcher = dispatcher

    def prepare(self, args: tuple) -> None:
        """Compile the kernel for the types of ``args`` and load it on the current device,
        without launching it."""
        check_kernel_arguments(self.dispatcher, args)
        d = self.dispatcher
        compile_for = getattr(d, "compile", None)
        if compile_for is None or not getattr(d, "_can_compile", True):
            return  # the simulator, or a kernel compiled for its declared signature already
        kernel = compile_for(tuple(d.typeof_pyval(a) for a in args))
        bind = getattr(kernel, "bind", None)
        if bind is not None:
            bind()  # loads the module into the current context

    def run(self, calls: StreamCalls, config: tuple, *args: Any) -> None:
        check_kernel_arguments(self.dispatcher, args)
        for a in args:
            block = block_of(a)
            # handle 2, the per-thread default stream, names each thread's own: a use there
            # is noted even where it is the block's home (another thread's, maybe)
            if block is not None and (block.home != calls.handle
                                      or calls.handle == PER_THREAD_STREAM):
                note_use(block, calls.handle)
        calls.launch_kernel(self.dispatcher, config, args, [
            None if isinstance(a, np.ndarray) or not hasattr(a, "__cuda_array_interface__")
            else describe(a) for a in args])


class PreparedLauncher(KernelLauncher):
    """Launches one kernel on any stream and configuration, prepared per argument signature.

    Parameters
    ----------
    dispatcher : numba dispatcher
        The ``@cuda.jit`` kernel.
    driver : KernelDriver
        The backend's driver calls.
    array_types : tuple of types
        The array classes whose ABI values may be cached on them (their address, shape and
        strides never change).
    """

    def __init__(self, dispatcher: Any, driver: KernelDriver,
                 array_types: tuple[type, ...], device: int = 0) -> None:
        super().__init__(dispatcher)
        self._driver = driver
        self._device = device
        self._array_types = array_types
        self._families: dict[tuple[type, ...], list[Callable[[int, tuple, tuple], bool]]] = {}
        self._closed_families: set[tuple[type, ...]] = set()
        self._prepared: set[tuple[Any, ...]] = set()  # Numba types of prepared signatures
        self._last: Callable[[int, tuple, tuple], bool] | None = None  # tried first
        self._lock = threading.Lock()

    @property
    def specializations(self) -> int:
        """How many argument signatures have a prepared launch."""
        return sum(len(f) for f in self._families.values())

    def run(self, calls: StreamCalls, config: tuple, *args: Any) -> None:
        """Launch ``args`` on the stream of ``calls``: the prepared launch tried last, else the
        one of the arguments' types, else Numba's launch (which then prepares the types)."""
        last = self._last
        if last is not None and last(calls.handle, args, config):
            return
        family = self._families.get(tuple(map(type, args)))
        if family is not None:
            for prepared in family:
                if prepared(calls.handle, args, config):
                    self._last = prepared
                    return
        super().run(calls, config, *args)
        self._learn(args)

    def prepare(self, args: tuple) -> None:
        """Compile and load the kernel for the types of ``args`` and prepare their launch."""
        super().prepare(args)
        self._learn(args)
        try:
            kernel = self._overload(self._observe(args))
        except _Unpreparable:
            return  # Numba's launch loads it (Numba's bind above did what it can)
        self._driver.load(self._driver.function(kernel))

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
            if not isinstance(a, self._array_types + _SCALAR_TYPES):
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
            if isinstance(a, self._array_types):
                if type(param).__name__ != "Array":
                    raise _Unpreparable(f"array passed for a {param} parameter")
                ndim = param.ndim
                slots.append("qqqqQ" + "q" * (2 * ndim))
                packed_fmt.append("qqqqQ" + "q" * (2 * ndim))
                sizes += [8] * (5 + 2 * ndim)
                namespace[f"T{i}"] = seen
                checks.append(_ARRAY_CHECK.format(i=i))
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

        # Two parameter buffers: one owned by the thread that prepared the launch, which skips
        # packing when every argument is the same as last time; one for other threads,
        # used under a lock. The driver reads a buffer during the launch call (without the GIL).
        name = getattr(d, "__name__", "kernel")
        buffers = [_ParamBuffer(layout.size, markers, driver.extra) for _ in range(2)]
        natives = self._native_launches(cufunc, buffers)
        stream_form = driver.stream if natives is None else driver.raw_stream
        streams: dict[int, Any] = {}

        def stream_of(handle: int) -> Any:
            obj = streams[handle] = stream_form(handle)
            return obj

        binding = _BindingLaunch(driver, cufunc, self._device, f"launching {name}")
        native, native2 = natives or (None, None)
        last: list[Any] = [_NOTHING] * len(args)
        namespace.update(
            abi=self._abi_maker(), pack=layout.pack_into,
            buf=buffers[0].data, params=buffers[0].params, extra=buffers[0].extra,
            buf2=buffers[1].data, params2=buffers[1].params, extra2=buffers[1].extra,
            keep=buffers, last=last, NOTHING=_NOTHING,
            owner=threading.get_ident(), get_ident=threading.get_ident, func=cufunc,
            launch=driver.launch, ok=driver.success, streams=streams, stream_of=stream_of,
            lock=self._lock, pack_errors=(struct.error, OverflowError),
            failed=binding.failed, relaunch=binding.relaunch,
            native=native, native2=native2, note=note_use,
            **{f"C{i}": type(a) for i, a in enumerate(args)})
        n = len(args)
        # What the skip-pack test compares: an array's cached ABI tuple (never the array: a
        # reference kept here would keep the array alive past its user's last use), a scalar
        # itself.
        kept = [f"m{i}" if isinstance(a, self._array_types) else f"a{i}"
                for i, a in enumerate(args)]
        unpack = (f"    try:\n        {''.join(f'a{i}, ' for i in range(n))}= args\n"
                  f"    except ValueError:\n        return False\n"
                  f"    if {' or '.join(f'type(a{i}) is not C{i}' for i in range(n))}:\n"
                  f"        return False\n") if n else "    if args:\n        return False\n"
        call = _BINDING_LAUNCH if natives is None else _NATIVE_LAUNCH
        source = _TEMPLATE.format(
            name=name, signature=", ".join(map(str, observed)) or "no arguments",
            mode=("one parameter buffer" if markers is not None else "parameter pointers")
            + ("" if natives is None else ", compiled launch call"),
            launch=call.format(indent=" " * 8, native="native", params="params", extra="extra"),
            launch2=call.format(indent=" " * 12, native="native2", params="params2",
                                extra="extra2"),
            unpack=unpack, checks="".join(checks), packed=", ".join(values),
            same=" and ".join(f"{k} is last[{i}]" for i, k in enumerate(kept)) or "True",
            remember="".join(f"            last[{i}] = {k}\n" for i, k in enumerate(kept)))
        filename = f"<rocmstreams prepared launch #{next(_SOURCES)} of {name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), namespace)
        return namespace["run"]

    def _native_launches(self, function: Any, buffers: list[_ParamBuffer]
                         ) -> tuple[Callable[..., int], Callable[..., int]] | None:
        """The compiled launch call bound to ``function`` and each buffer, or None (the
        binding's launch call then makes every launch)."""
        bind = self._driver.bind_launch
        if bind is None:
            return None
        try:
            first, second = (bind(function, b.params, b.extra) for b in buffers)
        except Exception:  # noqa: BLE001 - a function or buffer it cannot take: the binding's
            return None
        return first, second

    def _param_info(self, function: Any, sizes: list[int]) -> list[tuple[int, int]] | None:
        """The driver's ``(offset, size)`` of each parameter of ``function``, or None."""
        info = self._driver.param_info
        if info is None:
            return None
        try:
            found = info(function, len(sizes))
        except Exception:  # noqa: BLE001 - a driver that cannot say: per-parameter pointers
            return None
        return None if found is None else [cast("tuple[int, int]", tuple(pair)) for pair in found]

    def _abi_maker(self) -> Callable[[Any], tuple[Any, tuple[int, ...], Any, Any]]:
        typeof = self.dispatcher.typeof_pyval

        def abi(array: Any) -> tuple[Any, tuple[int, ...], Any, Any]:
            found = _array_abi(array, typeof(array))
            try:
                setattr(array, ABI_ATTRIBUTE, found)
            except AttributeError:
                pass
            return found

        return abi
