"""The prepared launch path against a recording driver: the parameters it packs are Numba's kernel
ABI, value for value, and anything it cannot take goes to Numba's launch. Runs without a GPU."""
from __future__ import annotations

import ctypes
import gc
import itertools
import struct
import weakref
from dataclasses import dataclass, field

import numba
import numpy as np
import pytest
from numba.core import types

import rocmstreams as rs
from conftest import collect
from rocmstreams.backends import KernelDriver, native
from rocmstreams.integrations.numba.prepared import ABI_ATTRIBUTE, PreparedLauncher
from rocmstreams.memory import block_of

CONFIG = (4, 1, 1, 128, 1, 1, 0)
OK, FAILED = object(), object()


@dataclass
class Kernel:
    argument_types: tuple
    debug: bool = False
    cooperative: bool = False
    extensions: tuple = ()


@dataclass
class Dispatcher:
    """What the prepared path reads of a numba-cuda dispatcher."""

    overloads: dict = field(default_factory=dict)
    _can_compile: bool = True
    _launch_config_sensitive: bool = False

    def typeof_pyval(self, value):
        if isinstance(value, rs.DeviceArray):
            return types.Array(numba.from_dtype(value.dtype), value.ndim, "C")
        return numba.typeof(value)


@dataclass
class Driver:
    """Records each launch with the raw 8-byte slots its parameter pointers point at."""

    nslots: dict = field(default_factory=dict)  # function token -> parameter count
    launches: list = field(default_factory=list)
    status: object = OK

    def launch(self, func, gx, gy, gz, bx, by, bz, shm, stream, params, extra):
        if params is None:  # one buffer: extra = {POINTER, buffer, SIZE, &size, END}
            pointer, buffer, size_marker, size_at, end = (ctypes.c_void_p * 5).from_address(extra)
            assert (pointer, size_marker, end) == (1, 2, None)
            size = ctypes.c_size_t.from_address(size_at).value
            self.launches.append(((gx, gy, gz, bx, by, bz, shm), stream,
                                  ctypes.string_at(buffer, size)))
            return (self.status,)
        n = self.nslots[func]
        pointers = (ctypes.c_void_p * n).from_address(params) if n else []
        slots = [ctypes.string_at(p, 8) for p in pointers]
        self.launches.append(((gx, gy, gz, bx, by, bz, shm), stream, slots))
        return (self.status,)


def make(dispatcher, kernel_slots, layouts=None, compiled=None, bind_launch=None):
    """A launcher over the recording driver; with ``layouts`` (kernel id -> the driver's
    (offset, size) of each parameter, or None), the driver takes one parameter buffer; with
    ``compiled`` (a :class:`CompiledLaunch`), the compiled launch call launches first."""
    driver = Driver()
    numba_calls = []
    tokens = {}
    numbers = itertools.count(0xF000)

    def function(kernel):
        token = object() if compiled is None else next(numbers)  # the compiled call takes ints
        driver.nslots[token] = kernel_slots[id(kernel)]
        tokens[token] = id(kernel)
        return token

    kd = KernelDriver(launch=driver.launch, success=OK, function=function,
                      stream=lambda h: ("stream", h),
                      error=lambda status, what: RuntimeError(f"refused: {what}"),
                      buffer_markers=None if layouts is None else (1, 2, 0),
                      param_info=None if layouts is None else
                      (lambda f, count: layouts[tokens[f]]),
                      bind_launch=bind_launch if compiled is None else compiled.binder(),
                      raw_stream=lambda handle: handle or 0x1)
    if compiled is not None:
        compiled.recorded.nslots = driver.nslots
    launcher = PreparedLauncher(dispatcher, kd, (rs.DeviceArray,))
    return Launch(launcher, numba_calls), driver, numba_calls


@dataclass
class Calls:
    """A stream's bound calls, as the door hands them: Numba's launch is recorded."""

    handle: int
    numba_calls: list

    def launch_kernel(self, dispatcher, config, args, arrays):
        self.numba_calls.append((self.handle, args, config))


@dataclass
class Launch:
    """``launch(handle, args, config)``: what the door does with a configured launch."""

    launcher: PreparedLauncher
    numba_calls: list

    def __call__(self, handle, args, config):
        self.launcher.run(Calls(handle, self.numba_calls), config, *args)

    @property
    def specializations(self):
        return self.launcher.specializations


def q(v):
    return struct.pack("<q", v)


def array_abi(a):
    slots = [0, 0, a.size, a.dtype.itemsize, a.ptr, *a.shape, *a.strides]
    return [struct.pack("<Q" if i == 4 else "<q", v) for i, v in enumerate(slots)]


@pytest.fixture(autouse=True)
def no_use_tracking(monkeypatch):
    """The recording driver's streams (0x50, ...) are no runtime's: the launcher must not tell
    the memory layer of uses there, or a real runtime would later record events on them."""
    from rocmstreams.integrations.numba import prepared
    monkeypatch.setattr(prepared, "note_use", lambda block, stream: None)


@pytest.fixture
def saxpy_like():
    """A kernel ``(out: float32[:, :] C, a: float32, n: int64)`` compiled for those types."""
    sig = (types.Array(types.float32, 2, "C"), types.float32, types.int64)
    kernel = Kernel(sig)
    d = Dispatcher(overloads={sig: kernel})
    return d, kernel, 5 + 2 * 2 + 2


def test_first_call_goes_through_numba_then_launches_pack_numbas_abi(saxpy_like, rng):
    d, kernel, nslots = saxpy_like
    launcher, driver, numba_calls = make(d, {id(kernel): nslots})
    out = rs.empty((6, 7), np.float32)
    a = np.float32(rng.standard_normal())
    launcher(0x50, (out, a, 12345), CONFIG)
    assert len(numba_calls) == 1 and not driver.launches
    launcher(0x50, (out, a, -7), CONFIG)
    assert len(numba_calls) == 1
    config, stream, slots = driver.launches[-1]
    assert config == CONFIG and stream == ("stream", 0x50)
    assert slots[:9] == array_abi(out)
    assert slots[9] == struct.pack("<f", a) + bytes(4)
    assert slots[10] == q(-7)
    assert getattr(out, ABI_ATTRIBUTE)[1][4] == out.ptr


def test_each_call_packs_its_own_array(saxpy_like):
    d, kernel, nslots = saxpy_like
    launcher, driver, _ = make(d, {id(kernel): nslots})
    first, second = rs.empty((2, 3), np.float32), rs.empty((5, 4), np.float32)
    launcher(1, (first, np.float32(1), 1), CONFIG)
    launcher(1, (second, np.float32(1), 1), CONFIG)
    launcher(1, (first, np.float32(1), 1), CONFIG)
    assert [s[:9] for _, _, s in driver.launches] == [array_abi(second), array_abi(first)]


def test_the_launcher_keeps_no_launched_array_alive(saxpy_like):
    """Were it kept, the array would be freed inside some later launch, where a free waits for
    the whole device and invalidates an open graph capture."""
    d, kernel, nslots = saxpy_like
    launcher, driver, _ = make(d, {id(kernel): nslots})
    a = np.float32(1)
    launcher(1, (rs.empty((2, 3), np.float32), a, 1), CONFIG)  # through Numba
    dropped = rs.empty((2, 3), np.float32)
    launcher(1, (dropped, a, 1), CONFIG)  # prepared
    assert driver.launches[-1][2][:9] == array_abi(dropped)
    watch = weakref.ref(dropped)
    del dropped
    collect()
    assert watch() is None, "the launcher still holds the array it launched with"
    fresh = rs.empty((3, 2), np.float32)
    launcher(1, (fresh, a, 1), CONFIG)
    assert driver.launches[-1][2][:9] == array_abi(fresh)


def test_an_array_of_another_type_goes_to_numba_and_then_has_its_own_specialization(saxpy_like):
    d, kernel, nslots = saxpy_like
    sig64 = (types.Array(types.float64, 2, "C"), types.float32, types.int64)
    kernel64 = Kernel(sig64)
    d.overloads[sig64] = kernel64
    launcher, driver, numba_calls = make(d, {id(kernel): nslots, id(kernel64): nslots})
    f32, f64 = rs.empty((2, 2), np.float32), rs.empty((2, 2), np.float64)
    launcher(1, (f32, np.float32(1), 1), CONFIG)
    launcher(1, (f64, np.float32(1), 1), CONFIG)
    assert len(numba_calls) == 2 and launcher.specializations == 2
    launcher(1, (f64, np.float32(1), 1), CONFIG)
    launcher(1, (f32, np.float32(1), 1), CONFIG)
    assert len(numba_calls) == 2
    assert [s[:9] for _, _, s in driver.launches] == [array_abi(f64), array_abi(f32)]


@pytest.fixture
def uses(monkeypatch):
    """The uses the launcher tells the memory layer of, as ``(block, stream)``."""
    from rocmstreams.integrations.numba import prepared
    told = []
    monkeypatch.setattr(prepared, "note_use", lambda block, stream: told.append((block, stream)))
    return told


def _launch_twice(saxpy_like, array, handle):
    """Through Numba's launch, then the prepared one."""
    d, kernel, nslots = saxpy_like
    launcher, driver, numba_calls = make(d, {id(kernel): nslots})
    for _ in range(2):
        launcher(handle, (array, np.float32(1), 1), CONFIG)
    assert len(numba_calls) == 1 and len(driver.launches) == 1


def test_a_launch_off_a_pooled_arrays_home_stream_tells_the_memory_layer(saxpy_like, uses):
    out = rs.empty((2, 2), np.float32)
    _launch_twice(saxpy_like, out, 0x50)
    assert uses == [(block_of(out), 0x50)] * 2


def test_a_launch_on_a_pooled_arrays_home_stream_tells_the_memory_layer_nothing(saxpy_like,
                                                                               uses):
    out = rs.empty((2, 2), np.float32)
    _launch_twice(saxpy_like, out, block_of(out).home)
    assert uses == []


def test_a_launch_tells_the_memory_layer_nothing_of_memory_rocmstreams_does_not_pool(saxpy_like,
                                                                                    uses):
    host = rs.pinned_empty((2, 2), np.float32)
    view = rs.device_view(host)  # no pool block: its lifetime is the host array's
    assert block_of(view) is None
    _launch_twice(saxpy_like, view, 0x50)
    assert uses == []


def test_an_int_beyond_its_parameter_goes_to_numba_and_is_not_truncated(saxpy_like):
    d, kernel, nslots = saxpy_like
    launcher, driver, numba_calls = make(d, {id(kernel): nslots})
    out = rs.empty((1, 1), np.float32)
    launcher(1, (out, np.float32(1), 1), CONFIG)
    launcher(1, (out, np.float32(1), 2**63), CONFIG)
    assert len(numba_calls) == 2 and numba_calls[-1][1][2] == 2**63
    assert not driver.launches and launcher.specializations == 1


def test_arguments_it_does_not_prepare_always_take_numbas_launch(saxpy_like):
    d, kernel, nslots = saxpy_like
    launcher, driver, numba_calls = make(d, {id(kernel): nslots})
    host = np.zeros((2, 2), np.float32)  # a host array: Numba copies it in and out
    for _ in range(3):
        launcher(1, (host, np.float32(1), 1), CONFIG)
    assert len(numba_calls) == 3 and not driver.launches


def test_debug_kernels_are_never_prepared(saxpy_like):
    d, kernel, nslots = saxpy_like
    kernel.debug = True  # Numba checks its exception flag after every launch
    launcher, driver, numba_calls = make(d, {id(kernel): nslots})
    out = rs.empty((1, 1), np.float32)
    for _ in range(3):
        launcher(1, (out, np.float32(1), 1), CONFIG)
    assert len(numba_calls) == 3 and not driver.launches


def test_a_refused_launch_raises_and_the_next_one_launches(saxpy_like):
    d, kernel, nslots = saxpy_like
    launcher, driver, _ = make(d, {id(kernel): nslots})
    out = rs.empty((1, 1), np.float32)
    launcher(1, (out, np.float32(1), 1), CONFIG)
    driver.status = FAILED
    with pytest.raises(RuntimeError, match=r"refused: launching \w+ with grid \(4, 1, 1\)"):
        launcher(1, (out, np.float32(1), 1), CONFIG)
    driver.status = OK
    launcher(1, (out, np.float32(2), 3), CONFIG)
    assert driver.launches[-1][2][10] == q(3)


def test_complex_and_bool_parameters_take_numbas_slots():
    sig = (types.complex128, types.boolean, types.complex64)
    kernel = Kernel(sig)
    d = Dispatcher(overloads={sig: kernel})
    launcher, driver, _ = make(d, {id(kernel): 5})
    z, w = complex(1.5, -2.5), np.complex64(3 - 4j)
    launcher(1, (z, True, w), CONFIG)
    launcher(1, (z, True, w), CONFIG)
    slots = driver.launches[-1][2]
    assert slots[0] == struct.pack("<d", 1.5) and slots[1] == struct.pack("<d", -2.5)
    assert slots[2][:1] == b"\x01"
    assert slots[3][:4] == struct.pack("<f", 3) and slots[4][:4] == struct.pack("<f", -4)


# ---- one parameter buffer (CUDA's CU_LAUNCH_PARAM_BUFFER_POINTER) -------------------------------
def test_a_buffer_driver_gets_each_parameter_at_its_c_offset(saxpy_like, rng):
    d, kernel, nslots = saxpy_like
    layout = [(8 * k, 8) for k in range(9)] + [(72, 4), (80, 8)]  # float32 then an aligned int64
    launcher, driver, _ = make(d, {id(kernel): nslots}, {id(kernel): layout})
    out = rs.empty((6, 7), np.float32)
    a = np.float32(rng.standard_normal())
    launcher(0x50, (out, a, 12345), CONFIG)  # through Numba
    launcher(0x50, (out, a, -7), CONFIG)
    config, stream, buffer = driver.launches[-1]
    assert config == CONFIG and stream == ("stream", 0x50)
    values = [0, 0, out.size, 4, out.ptr, *out.shape, *out.strides]
    assert buffer == struct.pack("@qqqqQqqqqfq", *values, a, -7) and len(buffer) == 88
    other = rs.empty((2, 3), np.float32)
    launcher(0x50, (other, a, 9), CONFIG)  # every call packs its own values
    assert driver.launches[-1][2] == struct.pack(
        "@qqqqQqqqqfq", 0, 0, 6, 4, other.ptr, 2, 3, 12, 4, a, 9)


def test_small_scalars_pack_tightly_in_a_buffer():
    sig = (types.Array(types.float32, 1, "C"), types.boolean, types.int16, types.int16,
           types.complex64, types.float64)
    kernel = Kernel(sig)
    d = Dispatcher(overloads={sig: kernel})
    layout = [(8 * k, 8) for k in range(7)] + [(56, 1), (58, 2), (60, 2), (64, 4), (68, 4),
                                               (72, 8)]
    launcher, driver, _ = make(d, {id(kernel): 13}, {id(kernel): layout})
    out = rs.empty(5, np.float32)
    args = (out, True, np.int16(-3), np.int16(7), np.complex64(1.5 - 2j), 0.25)
    launcher(1, args, CONFIG)
    launcher(1, args, CONFIG)
    assert driver.launches[-1][2] == struct.pack(
        "@qqqqQqq?hhffd", 0, 0, 5, 4, out.ptr, 5, 4, True, -3, 7, 1.5, -2.0, 0.25)


@pytest.mark.parametrize("driver_layout", [None, [(8 * k, 8) for k in range(11)]],
                         ids=["unknown", "different"])
def test_a_kernel_whose_layout_the_driver_does_not_confirm_gets_per_parameter_pointers(
        saxpy_like, driver_layout):
    d, kernel, nslots = saxpy_like
    launcher, driver, _ = make(d, {id(kernel): nslots}, {id(kernel): driver_layout})
    out = rs.empty((6, 7), np.float32)
    launcher(1, (out, np.float32(2), 3), CONFIG)
    launcher(1, (out, np.float32(2), 3), CONFIG)
    slots = driver.launches[-1][2]
    assert isinstance(slots, list) and slots[:9] == array_abi(out) and slots[10] == q(3)


# ---- the compiled launch call (backends.native) ------------------------------------------------
LaunchFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, *[ctypes.c_uint] * 7,
                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
needs_extension = pytest.mark.skipif(native.compiled is None, reason="the compiled layer is not "
                                     "built here (pip install -e . with a C compiler), or "
                                     "ROCMSTREAMS_NATIVE_CALLS=0 left it out")


class CompiledLaunch:
    """The driver's C launch call for the compiled layer: a function pointer that records each
    launch as :class:`Driver` does (into ``recorded``) and returns ``status``."""

    def __init__(self, status: int = 0) -> None:
        self.recorded, self.status = Driver(), status
        self.fn = LaunchFn(self._call)

    def _call(self, func, gx, gy, gz, bx, by, bz, shm, stream, params, extra):
        self.recorded.launch(func, gx, gy, gz, bx, by, bz, shm, stream, params, extra)
        return self.status

    def binder(self):
        address = ctypes.cast(self.fn, ctypes.c_void_p).value
        return native.launch_binder(native.EntryPoints(1, 1, 1, address))


@pytest.fixture
def compiled():
    native.set_enabled(True)
    yield CompiledLaunch()
    native.set_enabled(True)


@needs_extension
def test_the_compiled_launch_gets_the_packed_parameters_and_the_raw_stream(saxpy_like, compiled):
    d, kernel, nslots = saxpy_like
    launcher, driver, numba_calls = make(d, {id(kernel): nslots}, compiled=compiled)
    out = rs.empty((6, 7), np.float32)
    launcher(0x50, (out, np.float32(2), 12345), CONFIG)  # through Numba
    launcher(0x50, (out, np.float32(2), -7), CONFIG)
    launcher(0, (out, np.float32(2), 8), CONFIG)  # the legacy stream: its raw handle
    assert len(numba_calls) == 1 and driver.launches == []
    (config, stream, slots), (_, legacy, last) = compiled.recorded.launches
    assert config == CONFIG and stream == 0x50 and legacy == 0x1
    assert slots[:9] == array_abi(out) and slots[10] == q(-7) and last[10] == q(8)


@needs_extension
def test_the_compiled_launch_gets_one_buffer_where_the_driver_takes_one(saxpy_like, compiled):
    d, kernel, nslots = saxpy_like
    layout = [(8 * k, 8) for k in range(9)] + [(72, 4), (80, 8)]
    launcher, driver, _ = make(d, {id(kernel): nslots}, {id(kernel): layout}, compiled=compiled)
    out = rs.empty((6, 7), np.float32)
    launcher(0x50, (out, np.float32(1), 1), CONFIG)
    launcher(0x50, (out, np.float32(1), -7), CONFIG)
    values = [0, 0, out.size, 4, out.ptr, *out.shape, *out.strides]
    assert compiled.recorded.launches[-1][2] == struct.pack("@qqqqQqqqqfq", *values, 1, -7)
    assert driver.launches == []


@needs_extension
def test_a_refused_compiled_launch_launches_through_the_binding_which_raises(
        saxpy_like, compiled):
    d, kernel, nslots = saxpy_like
    launcher, driver, _ = make(d, {id(kernel): nslots}, compiled=compiled)
    out = rs.empty((1, 1), np.float32)
    launcher(0x50, (out, np.float32(1), 1), CONFIG)
    compiled.status = 201  # e.g. no current context: the binding's launch recovers or raises
    launcher(0x50, (out, np.float32(1), 2), CONFIG)
    assert driver.launches[-1][1:] == (("stream", 0x50), driver.launches[-1][2])
    assert driver.launches[-1][2][10] == q(2)
    driver.status = FAILED
    with pytest.raises(RuntimeError, match=r"refused: launching \w+ with grid \(4, 1, 1\)"):
        launcher(0x50, (out, np.float32(1), 3), CONFIG)
    compiled.status, driver.status = 0, OK
    launcher(0x50, (out, np.float32(1), 4), CONFIG)
    assert compiled.recorded.launches[-1][2][10] == q(4) and len(driver.launches) == 2


@needs_extension
def test_with_the_compiled_calls_off_every_launch_goes_through_the_binding(saxpy_like, compiled):
    d, kernel, nslots = saxpy_like
    launcher, driver, _ = make(d, {id(kernel): nslots}, compiled=compiled)
    out = rs.empty((1, 1), np.float32)
    launcher(0x50, (out, np.float32(1), 1), CONFIG)
    native.set_enabled(False)
    launcher(0x50, (out, np.float32(1), 2), CONFIG)
    assert compiled.recorded.launches == [] and driver.launches[-1][2][10] == q(2)


def test_a_function_the_compiled_call_cannot_take_launches_through_the_binding(saxpy_like):
    """A driver whose launchable function is no int (or no extension): the binding's call."""
    d, kernel, nslots = saxpy_like
    launcher, driver, _ = make(d, {id(kernel): nslots},
                               bind_launch=lambda function, params, extra: int(function))
    out = rs.empty((1, 1), np.float32)
    launcher(0x50, (out, np.float32(1), 1), CONFIG)
    launcher(0x50, (out, np.float32(1), 2), CONFIG)
    assert driver.launches[-1][2][10] == q(2)
