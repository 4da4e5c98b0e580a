"""The shipped kernels under numba-hip 0.2.1, on a machine without an AMD GPU.

Runs only inside the environment that ``tests/numba_hip_offline/setup.sh`` makes (it exports
``ROCMSTREAMS_NUMBA_HIP_OFFLINE``); run it there on its own, without the suite's conftest (which
selects a backend)::

    bash tests/numba_hip_offline/setup.sh .numba-hip && . .numba-hip/env.sh
    python -m pytest -q --noconftest -p no:cacheprovider tests/test_numba_hip_offline.py

Each kernel's Python source (``kernels/*.py``) is loaded with ``cuda`` bound to ``numba.hip``, as
the hip backend's ``pose_as_cuda()`` does, and compiled with numba-hip's own pipeline for an
explicit architecture (``compile_hip`` + ``prepare_hip_kernel``): no device is bound and no HIP
context is needed. What Debian 12's packages allow: import, typing and lowering to numba-hip's
amdgcn-amd-amdhsa LLVM IR, which llvmlite verifies and numba-hip's bundled AMD LLVM links.
Linked, architecture-specific IR (``hip.compile_llvm_ir``) and code objects need comgr 3:
numba-hip asks comgr for each architecture's function attributes and for its HIP device library,
and Debian 12's comgr 2.4 answers neither (``AssertionError: BC`` for gfx90a, ``RuntimeError: 2``,
an unknown ISA, for gfx942); those tests skip there. They ran in a Debian sid chroot (comgr
7.0.2, libclang 21, ld.lld-21; the recipe in ``../shared/numba-hip-offline/README.md``).

Then, through rocmstreams' own code: the prepared launcher over real numba-hip dispatchers (their
overloads made without a GPU: ``get_current_device`` answers gfx90a and ``_Kernel.bind`` does
nothing) packs, parameter by parameter, the bytes numba-hip's own ``_Kernel.launch`` passes to the
driver; the dispatcher hook routes ``kernel[grid, block, stream]`` on a RocmStream core to it
(recording driver and stream calls, no runtime); and selection and the hip backend's kernel module
meet this environment's real failures (a HIP-backed ``cuda.bindings``, each missing library) with
a BackendUnavailableError that says what is missing.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import types as pytypes
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if not os.environ.get("ROCMSTREAMS_NUMBA_HIP_OFFLINE"):
    pytest.skip("not inside the offline numba-hip environment: run `bash "
                "tests/numba_hip_offline/setup.sh DIR && . DIR/env.sh` first",
                allow_module_level=True)

import llvmlite.binding as llvm  # noqa: E402
import numba.hip as hip  # noqa: E402
from numba.core import types  # noqa: E402
from numba.core.errors import TypingError  # noqa: E402
from numba.hip import compiler as hip_compiler  # noqa: E402
from numba.hip.util import llvmutils  # noqa: E402
from numba.hip import dispatcher as hip_dispatcher  # noqa: E402
from numba.hip.hipdrv import driver as hip_driver  # noqa: E402
from numba.hip.hipdrv.devicearray import DeviceNDArray  # noqa: E402

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # rocmstreams from this checkout; importing it touches no GPU
import numpy as np  # noqa: E402

import rocmstreams as rs  # noqa: E402
from rocmstreams import backends  # noqa: E402
from rocmstreams.backends import KernelDriver  # noqa: E402
from rocmstreams.integrations.numba import dispatch  # noqa: E402
from rocmstreams.integrations.numba.prepared import PreparedLauncher  # noqa: E402
from rocmstreams.streamcore import StreamCore  # noqa: E402

ARCHS = ("gfx90a", "gfx942")
PACKAGE = "_rocmstreams_kernels_on_numba_hip"

f32, i32, i64 = types.float32[::1], types.int32[::1], types.int64[::1]
#: every shipped kernel, with the argument types the suite launches it with
KERNELS = {
    "saxpy": ("elementwise", (f32, types.float32, f32, f32)),
    "scale": ("elementwise", (f32, types.float32, f32)),
    "add_scalar": ("elementwise", (f32, types.float32)),
    "stamp": ("stamp", (i32, i32, types.int32)),
    "latch": ("latch", (i32, i64, types.int64)),
}


def load_kernels() -> pytypes.ModuleType:
    """``kernels/`` as a package whose ``cuda`` is ``numba.hip`` (rocmstreams' backend selection,
    which would probe for a GPU, is not run)."""
    if PACKAGE not in sys.modules:
        package = pytypes.ModuleType(PACKAGE)
        package.__path__ = [str(ROOT / "kernels")]
        package.cuda = hip
        sys.modules[PACKAGE] = package
        for name in ("portable", "elementwise", "stamp", "latch"):
            setattr(package, name, importlib.import_module(f"{PACKAGE}.{name}"))
    return sys.modules[PACKAGE]


def lower(pyfunc, argtypes, arch: str):
    """numba-hip's kernel library for ``pyfunc``: typed, lowered and wrapped as a kernel, for
    ``arch``, as ``numba.hip.compile_llvm_ir`` does before it links."""
    cres = hip_compiler.compile_hip(pyfunc, types.void, argtypes, options={"opt": 3},
                                    amdgpu_arch=arch)
    code = pyfunc.__code__
    library, wrapper = cres.target_context.prepare_hip_kernel(
        cres.library, cres.fndesc, False, False, {"opt": 3}, code.co_filename,
        code.co_firstlineno)
    return library, wrapper


def kernel_ir(name: str, arch: str) -> tuple[list[str], str]:
    module, argtypes = KERNELS[name]
    dispatcher = getattr(getattr(load_kernels(), module), name)
    library, wrapper = lower(dispatcher.py_func, argtypes, arch)
    return [str(m) for m in library.modules], wrapper.name


#: ELF e_flags' EF_AMDGPU_MACH byte of each architecture (LLVM's ELF.h)
ELF_MACH = {"gfx90a": 0x3F, "gfx942": 0x4C}
LLD = next((shutil.which(n) for n in ("ld.lld", "ld.lld-23", "ld.lld-22", "ld.lld-21")
            if shutil.which(n)), None)


def comgr_major() -> int | None:
    """The major version of the comgr that ROCM_PATH holds, from its file name, if it says."""
    path = os.path.realpath(os.path.join(os.environ.get("ROCM_PATH", "/opt/rocm"), "lib",
                                         "libamd_comgr.so"))
    found = re.search(r"libamd_comgr\.so\.(\d+)", path)
    return int(found.group(1)) if found else None


def test_numba_hip_imports_without_nvidias_cuda_bindings():
    assert importlib.metadata.version("numba-hip") == "0.2.1"
    major, minor = map(int, importlib.metadata.version("numba").split(".")[:2])
    assert (0, 58) <= (major, minor) < (0, 64)
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("cuda-bindings")  # its cuda.bindings would shadow the HIP one
    assert callable(hip.jit) and callable(hip.grid) and callable(hip.pose_as_cuda)


def test_the_kernels_see_the_numba_hip_dialect():
    portable = load_kernels().portable
    assert portable.dialect(hip) == "numba-hip"
    assert type(portable.atomic_add).__name__ == "_Intrinsic"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_shipped_kernel_lowers_to_amdgpu_llvm_ir(name, arch):
    modules, entry = kernel_ir(name, arch)
    ir = "\n".join(modules)
    assert 'target triple = "amdgcn-amd-amdhsa"' in ir
    assert re.search(rf'^define void @"?{re.escape(entry)}"?\(', ir, re.M), entry
    for text in modules:  # well-formed LLVM IR, each module on its own
        parsed = llvm.parse_assembly(text)
        parsed.verify()


@pytest.mark.parametrize("name", ["stamp", "latch"])
def test_stamp_and_latch_use_an_atomic_read_modify_write(name):
    ir = "\n".join(kernel_ir(name, "gfx90a")[0])
    assert re.search(r"atomicrmw add i32\* %\S+, i32 %\S+ monotonic", ir), name


def test_lowered_kernels_link_in_numba_hips_bundled_llvm():
    for name in sorted(KERNELS):
        modules, entry = kernel_ir(name, "gfx942")
        linked = llvmutils.link_modules(modules, False).decode()
        assert entry in linked and "amdgcn-amd-amdhsa" in linked, name


@pytest.mark.parametrize("dtype, index, op", [
    (types.float32[:, ::1], "(1, 2)", "fadd float"),
    (types.float64[::1], "-1", "fadd double"),
    (types.int64[:, :], "(0, 1)", "add i64"),
    (types.uint32[::1], "3", "add i32"),
])
def test_portable_atomic_add_on_each_type_and_index_form(dtype, index, op):
    atomic_add = load_kernels().portable.atomic_add
    namespace = {"atomic_add": atomic_add}
    exec(f"def kernel(a, old, v):\n    old[0] = atomic_add(a, {index}, v)\n", namespace)
    library, _ = lower(namespace["kernel"], (dtype, dtype.dtype[::1], types.float64), "gfx90a")
    ir = "\n".join(str(m) for m in library.modules)
    assert f"atomicrmw {op}" in ir


def test_portable_atomic_add_refuses_what_cuda_atomic_add_refuses():
    atomic_add = load_kernels().portable.atomic_add

    def kernel(a, v):
        atomic_add(a, 0, v)

    with pytest.raises(TypingError):
        lower(kernel, (types.int16[::1], types.int16), "gfx90a")


needs_comgr3 = pytest.mark.skipif(
    (comgr_major() or 3) < 3,
    reason=f"linked IR needs comgr 3; ROCM_PATH holds comgr {comgr_major()} (Debian 12's 2.4)")


@needs_comgr3
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_shipped_kernel_links_to_amdgpu_ir_for_its_architecture(name, arch):
    module, argtypes = KERNELS[name]
    dispatcher = getattr(getattr(load_kernels(), module), name)
    ir, _ = hip.compile_llvm_ir(dispatcher.py_func, argtypes, amdgpu_arch=arch)
    assert "amdgpu_kernel" in ir and f'"target-cpu"="{arch}"' in ir


@pytest.mark.skipif(LLD is None, reason="no ld.lld to link the relocatable object")
@needs_comgr3
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_shipped_kernel_makes_a_code_object(name, arch, tmp_path):
    """numba-hip's linked bitcode, O3 and AMDGPU codegen in its bundled LLVM, ``ld.lld -shared``:
    what comgr's codegen and link actions do (numba-hip's own ``get_codeobj()`` hands LLVM 23
    bitcode to comgr, whose older LLVM cannot read it)."""
    from rocm.bindings.llvm.c.core import LLVMContextCreate
    from rocm.bindings.llvm.c.target import LLVMInitializeAllAsmPrinters
    from rocm.bindings.llvm.c.targetmachine import (LLVMCodeGenFileType,
                                                    LLVMTargetMachineEmitToFile)
    from numba.hip import amdgcn

    module, argtypes = KERNELS[name]
    dispatcher = getattr(getattr(load_kernels(), module), name)
    library, wrapper = lower(dispatcher.py_func, argtypes, arch)
    bitcode = library.get_linked_llvm_ir(amdgpu_arch=arch, to_bc=True, link_in_hipdevicelib=True)
    machine = amdgcn.AMDGPUTargetMachine(arch)
    LLVMInitializeAllAsmPrinters()  # numba-hip initialises the targets, not their printers
    bitcode = machine.optimize_module(bitcode, passes="default<O3>", to_bc=True)
    (llvm_module,) = llvmutils._get_module_in_context(LLVMContextCreate(), bitcode)
    obj, code_object = tmp_path / f"{name}.o", tmp_path / f"{name}.co"
    error = ctypes.c_char_p()
    assert LLVMTargetMachineEmitToFile(machine._target_machine, llvm_module, str(obj).encode(),
                                       LLVMCodeGenFileType.LLVMObjectFile,
                                       ctypes.addressof(error)) == 0, error.value
    subprocess.run([LLD, "-shared", "--no-undefined", str(obj), "-o", str(code_object)],
                   check=True)
    elf = code_object.read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[7] == 64  # ELFOSABI_AMDGPU_HSA
    assert int.from_bytes(elf[18:20], "little") == 224  # EM_AMDGPU
    assert int.from_bytes(elf[48:52], "little") & 0xFF == ELF_MACH[arch]  # e_flags
    assert wrapper.name.encode() in elf



# ---- prepared launches over real numba-hip dispatchers -------------------------------------------
OK = object()  # the recording driver's success status
HANDLE = 0x5EED  # the stream handle the launches are made on
FUNCTION = "hipFunction_t"  # what numba-hip's launch is given as the compiled function


@pytest.fixture(scope="module")
def without_a_gpu():
    """numba-hip dispatchers compile their overloads for gfx90a and bind nothing: what
    ``dispatcher.compile(signature)`` needs a device for."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hip_dispatcher, "get_current_device",
                   lambda: pytypes.SimpleNamespace(amdgpu_arch="gfx90a"))
        mp.setattr(hip_dispatcher._Kernel, "bind", lambda self: None)
        yield


def compiled(pyfunc, args):
    """A real numba-hip dispatcher of ``pyfunc`` with the overload its launch with ``args`` would
    compile, and that overload (a ``numba.hip.dispatcher._Kernel``)."""
    dispatcher = hip.jit(pyfunc)
    argtypes = tuple(dispatcher.typeof_pyval(a) for a in args)
    return dispatcher, dispatcher.compile(argtypes)


def device_array(shape, dtype, address, order="C", step=1):
    """A numba-hip device array over ``address`` (never read: nothing runs), C or F ordered, or
    taking every ``step``-th element of its last axis (neither: layout A)."""
    dtype = np.dtype(dtype)
    full = np.empty(shape[:-1] + (shape[-1] * step,), dtype, order=order)
    strides = full[..., ::step].strides
    span = full.size * dtype.itemsize
    gpu_data = pytypes.SimpleNamespace(device_ctypes_pointer=address, _cuda_memsize_=span)
    return DeviceNDArray(shape, strides, dtype, gpu_data=gpu_data)


def declared_parameters(kernel) -> list[int]:
    """The size in bytes of each parameter the compiled kernel declares: its entry's LLVM
    signature, which is what the GPU reads."""
    ir = "\n".join(str(m) for m in kernel._codelibrary.modules)
    define = re.search(rf'^define void @"?{re.escape(kernel.entry_name)}"?\((.*)\)', ir, re.M)
    assert define, f"no definition of {kernel.entry_name}"
    sizes = []
    for llvm_type in re.split(r' %"?\.?\w+"?(?:, |$)', define.group(1))[:-1]:
        integer = re.fullmatch(r"i(\d+)", llvm_type)
        if llvm_type.endswith("*"):
            sizes.append(8)
        elif integer:
            sizes.append(max(1, int(integer.group(1)) // 8))
        else:
            sizes.append({"half": 2, "float": 4, "double": 8}[llvm_type])
    return sizes


def numba_hip_parameters(kernel, args, config=(1, 1, 1, 64, 1, 1, 0)) -> list[bytes]:
    """What numba-hip's own launch of ``kernel`` passes: ``_Kernel.launch`` runs
    ``_prepare_args`` for every argument and hands the ctypes values to
    ``driver.launch_kernel``, which passes their addresses to ``hipModuleLaunchKernel``; the
    bytes of each value, in order."""
    seen = []

    def launch_kernel(function, gx, gy, gz, bx, by, bz, sharedmem, stream, kernelargs,
                      cooperative=False):
        assert function == FUNCTION and (gx, gy, gz, bx, by, bz, sharedmem) == config
        seen.append([ctypes.string_at(ctypes.addressof(v), ctypes.sizeof(v)) for v in kernelargs])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hip_driver, "launch_kernel", launch_kernel)
        mp.setattr(kernel._codelibrary, "get_hipfunc",
                   lambda: pytypes.SimpleNamespace(handle=FUNCTION))
        kernel.launch(args, config[:3], config[3:6], 0, config[6])
    (parameters,) = seen
    return parameters


class RecordingDriver:
    """The prepared launcher's driver: each launch is recorded with the bytes the GPU would read,
    each parameter the compiled function declares, at its parameter pointer."""

    def __init__(self):
        self.declared = {}  # function token -> parameter sizes
        self.launches = []  # (function, config, stream, [bytes of each parameter], extra)

    def kernel_driver(self) -> KernelDriver:
        return KernelDriver(launch=self.launch, success=OK, function=self.function,
                            stream=lambda handle: ("hip stream", handle),
                            error=lambda status, what: AssertionError(f"{status}: {what}"),
                            extra=None)

    def function(self, kernel):
        token = ("function of", kernel.entry_name)
        self.declared[token] = declared_parameters(kernel)
        return token

    def launch(self, function, gx, gy, gz, bx, by, bz, sharedmem, stream, params, extra):
        sizes = self.declared[function]
        pointers = (ctypes.c_void_p * len(sizes)).from_address(params)
        self.launches.append((function, (gx, gy, gz, bx, by, bz, sharedmem), stream,
                              [ctypes.string_at(p, n) for p, n in zip(pointers, sizes)], extra))
        return (OK,)


class NumbaPath:
    """A stream's bound calls as the door hands them: Numba's launch path, recorded."""

    def __init__(self, handle, launches):
        self.handle, self.launches = handle, launches

    def launch_kernel(self, dispatcher, config, args, arrays):
        self.launches.append((dispatcher, config, args))


def prepared_parameters(dispatcher, args, config=(1, 1, 1, 64, 1, 1, 0)) -> list[bytes]:
    """The parameters rocmstreams' PreparedLauncher passes for ``args``: its first launch takes
    Numba's path (recorded, not run) and prepares the overload; the second is prepared."""
    driver, numba_launches = RecordingDriver(), []
    launcher = PreparedLauncher(dispatcher, driver.kernel_driver(),
                                (rs.DeviceArray, DeviceNDArray))
    calls = NumbaPath(HANDLE, numba_launches)
    launcher.run(calls, config, *args)
    launcher.run(calls, config, *args)
    assert len(numba_launches) == 1 and len(driver.launches) == 1, "the second launch was not " \
        "prepared"
    return driver.launches[0][3]


def fill_1d(a):
    a[0] = 1


def fill_2d(a):
    a[0, 0] = 1


def fill_3d(a):
    a[0, 0, 0] = 1


FILLS = {1: fill_1d, 2: fill_2d, 3: fill_3d}
ARRAYS = {  # id: (shape, dtype, order, step, numba-hip's layout)
    "1d-float32-C": ((1000,), np.float32, "C", 1, "C"),
    "1d-int64-every-3rd": ((17,), np.int64, "C", 3, "A"),
    "2d-float64-C": ((6, 7), np.float64, "C", 1, "C"),
    "2d-int16-F": ((5, 9), np.int16, "F", 1, "F"),
    "3d-complex64-C": ((2, 3, 4), np.complex64, "C", 1, "C"),
    "3d-uint8-every-2nd": ((3, 4, 5), np.uint8, "C", 2, "A"),
}


@pytest.mark.parametrize("case", sorted(ARRAYS))
def test_prepared_arrays_pack_as_numba_hip_packs_them(case, without_a_gpu):
    shape, dtype, order, step, layout = ARRAYS[case]
    array = device_array(shape, dtype, 0x7F00_1234_5000, order, step)
    dispatcher, kernel = compiled(FILLS[len(shape)], (array,))
    assert kernel.argument_types[0].layout == layout and kernel.argument_types[0].ndim == len(shape)
    assert prepared_parameters(dispatcher, (array,)) == numba_hip_parameters(kernel, (array,))


def store(out, x):
    out[0] = x


SCALARS = {  # every scalar kind, each at a value that fills its width
    "int8": np.int8(-128), "int16": np.int16(-12345), "int32": np.int32(-2_000_000_001),
    "int64": np.int64(-(2**62) - 3), "uint8": np.uint8(250), "uint16": np.uint16(65_000),
    "uint32": np.uint32(4_000_000_001), "uint64": np.uint64(2**64 - 5),
    "float32": np.float32(-1.2345e-3), "float64": np.float64(6.02214076e23),
    "bool": np.bool_(True), "complex64": np.complex64(1.5 - 2.25j),
    "complex128": np.complex128(-3.5e100 + 7.25e-100j),
}


@pytest.mark.parametrize("kind", list(SCALARS))
def test_prepared_scalars_pack_as_numba_hip_packs_them(kind, without_a_gpu):
    value = SCALARS[kind]
    out = device_array((5,), value.dtype, 0x7F00_0000_1000)
    dispatcher, kernel = compiled(store, (out, value))
    assert kernel.argument_types[1] == getattr(types, "boolean" if kind == "bool" else kind)
    assert prepared_parameters(dispatcher, (out, value)) == numba_hip_parameters(kernel,
                                                                                 (out, value))


PYTHON_SCALARS = {"int": (-(2**40) - 1, "int64"), "float": (-0.1, "float64"),
                  "bool": (True, "boolean"), "complex": (2.5 - 1e-300j, "complex128")}


@pytest.mark.parametrize("kind", list(PYTHON_SCALARS))
def test_prepared_python_scalars_pack_as_numba_hip_packs_them(kind, without_a_gpu):
    value, numba_type = PYTHON_SCALARS[kind]
    out = device_array((5,), {"boolean": np.bool_}.get(numba_type, numba_type), 0x7F00_0000_1000)
    dispatcher, kernel = compiled(store, (out, value))
    assert kernel.argument_types[1] == getattr(types, numba_type)
    assert prepared_parameters(dispatcher, (out, value)) == numba_hip_parameters(kernel,
                                                                                 (out, value))


def every_kind(a1, a2, a3, i8, i16, i32, i64, u8, u16, u32, u64, f32, f64, flag, c64, c128):
    i, j = hip.grid(2)
    if i < a2.shape[0] and j < a2.shape[1]:
        a1[i] = i8 + i16 + i32 + i64 + u8 + u16 + u32 + f32 + f64 + flag
        a2[i, j] = u64
        a3[i, j, 0] = c64 + c128


def every_kind_args():
    return (device_array((9,), np.float64, 0x7F00_0000_9000),
            device_array((6, 7), np.uint64, 0x7F00_0001_0000, "F"),
            device_array((6, 7, 2), np.complex128, 0x7F00_0002_0000),
            *SCALARS.values())


def test_a_kernel_taking_every_kind_at_once_packs_as_numba_hip_packs_it(without_a_gpu):
    args = every_kind_args()
    dispatcher, kernel = compiled(every_kind, args)
    assert prepared_parameters(dispatcher, args) == numba_hip_parameters(kernel, args)


def test_numba_hips_own_packing_is_what_the_compiled_kernel_declares(without_a_gpu):
    """The reference the tests above compare with: numba-hip passes one value per declared
    parameter, each of its declared size (arrays 5 + 2 * ndim pointer-sized values, complex two)."""
    args = every_kind_args()
    _, kernel = compiled(every_kind, args)
    declared = declared_parameters(kernel)
    assert declared == [8] * (7 + 9 + 11) + [1, 2, 4, 8, 1, 2, 4, 8, 4, 8, 1, 4, 4, 8, 8]
    assert [len(p) for p in numba_hip_parameters(kernel, args)] == declared


# ---- the dispatcher hook: kernel[grid, block, stream] on a RocmStream core -----------------------
class FakeHipBackend:
    """What the hook and the stream core use of the hip backend: numba-hip's module, a recording
    kernel driver, device 0 and stream calls that record Numba's launch path."""

    name = "hip"

    def __init__(self):
        self.reset()

    def reset(self):
        self.driver, self.numba_launches = RecordingDriver(), []

    def numba_module(self):
        return hip

    def kernel_driver(self):
        return self.driver.kernel_driver()

    def get_device(self):
        return 0

    def get_device_count(self):
        return 1

    def set_device(self, ordinal):
        assert ordinal == 0

    def stream_calls(self, handle):
        return NumbaPath(handle, self.numba_launches)


class Stream:
    """A stream as the hook sees it: an object carrying its core."""

    def __init__(self, core):
        self.__rocmstreams_core__ = core


@pytest.fixture(scope="module")
def hooked_backend(without_a_gpu):
    """The fake hip backend, selected, with the hook installed on numba-hip's dispatcher class
    (taken off again after the module)."""
    fake = FakeHipBackend()
    cls = type(hip.jit(fill_1d))
    had_getitem = "__getitem__" in cls.__dict__
    original = cls.__getitem__
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "_active", fake)
        try:
            dispatch.install(fake)
            assert cls.__getitem__ is not original, "the hook was installed before this module"
            yield fake
        finally:
            if "_rocmstreams_original_getitem" in cls.__dict__:
                del cls._rocmstreams_original_getitem
            if had_getitem:
                cls.__getitem__ = original
            else:
                del cls.__getitem__


@pytest.fixture
def hip_backend(hooked_backend):
    hooked_backend.reset()
    return hooked_backend


@pytest.fixture
def stream(hip_backend):
    return Stream(StreamCore(hip_backend, HANDLE, 0, owned=False))


GRID, BLOCK = (2, 3), (32, 4)
CONFIG = (2, 3, 1, 32, 4, 1, 0)


def test_the_hook_gives_a_rocmstream_launch_the_kernels_prepared_launcher(stream):
    dispatcher, _ = compiled(every_kind, every_kind_args())
    launch = dispatcher[GRID, BLOCK, stream]
    assert isinstance(launch, dispatch.KernelLaunch)
    assert isinstance(launch.launcher, PreparedLauncher) and launch.dispatcher is dispatcher
    assert launch.stream_core is stream.__rocmstreams_core__
    assert (launch.griddim, launch.blockdim, launch.sharedmem) == ((2, 3, 1), (32, 4, 1), 0)


def test_the_first_hooked_launch_takes_numbas_path_on_the_stream(hip_backend, stream):
    args = every_kind_args()
    dispatcher, _ = compiled(every_kind, args)
    dispatcher[GRID, BLOCK, stream](*args)
    assert [(d, c, a) for d, c, a in hip_backend.numba_launches] == [(dispatcher, CONFIG, args)]
    assert not hip_backend.driver.launches


def test_the_next_hooked_launch_goes_through_the_driver_with_numba_hips_bytes(hip_backend,
                                                                              stream):
    args = every_kind_args()
    dispatcher, kernel = compiled(every_kind, args)
    dispatcher[GRID, BLOCK, stream](*args)
    dispatcher[GRID, BLOCK, stream](*args)
    assert len(hip_backend.numba_launches) == 1
    ((function, config, on, parameters, extra),) = hip_backend.driver.launches
    assert function == ("function of", kernel.entry_name)
    assert config == CONFIG and on == ("hip stream", HANDLE) and extra is None
    assert parameters == numba_hip_parameters(kernel, args, CONFIG)


def test_dynamic_shared_memory_reaches_the_driver(hip_backend, stream):
    array = device_array((8,), np.float32, 0x7F00_0000_1000)
    dispatcher, _ = compiled(fill_1d, (array,))
    for _ in range(2):
        dispatcher[4, 64, stream, 1024](array)
    assert hip_backend.numba_launches[0][1] == (4, 1, 1, 64, 1, 1, 1024)
    assert hip_backend.driver.launches[0][1] == (4, 1, 1, 64, 1, 1, 1024)


def test_a_closed_stream_refuses_the_launch_before_the_driver_is_called(hip_backend, stream):
    args = every_kind_args()
    dispatcher, _ = compiled(every_kind, args)
    dispatcher[GRID, BLOCK, stream](*args)
    dispatcher[GRID, BLOCK, stream](*args)  # prepared: the next one would reach the driver
    stream.__rocmstreams_core__.close()
    with pytest.raises(rs.StreamClosedError):
        dispatcher[GRID, BLOCK, stream](*args)
    assert len(hip_backend.driver.launches) == 1 and len(hip_backend.numba_launches) == 1


@pytest.mark.filterwarnings("ignore:Grid size 4 will likely result in GPU under-utilization")
def test_a_launch_without_a_rocmstream_is_numba_hips_own(hip_backend):
    array = device_array((8,), np.float32, 0x7F00_0000_1000)
    dispatcher, _ = compiled(fill_1d, (array,))
    configured = dispatcher[4, 64]
    assert not isinstance(configured, dispatch.KernelLaunch)
    assert configured.dispatcher is dispatcher and tuple(configured.griddim) == (4, 1, 1)


# ---- issue 11, points 2 and 3, against this environment's real failures --------------------------
def run_python(args, tmp_path, **env):
    """``python args...`` in a fresh process from ``tmp_path``, rocmstreams from this checkout,
    no backend or kernel compiler chosen; ``env`` values replace (None: remove) variables."""
    full = {k: v for k, v in os.environ.items()
            if k not in ("ROCMSTREAMS_BACKEND", "ROCMSTREAMS_HIP_KERNELS")}
    full["PYTHONPATH"] = str(ROOT)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=full, capture_output=True,
                          text=True, timeout=120)


def test_automatic_selection_passes_over_the_hip_backed_cuda_bindings_and_takes_cpu(tmp_path):
    """This environment holds hip-python-interop's HIP-backed ``cuda.bindings.runtime`` (which
    made ``rs.backend()`` raise ``AttributeError: ... cudaStreamLegacy``) and no AMD GPU."""
    proc = run_python(["-m", "rocmstreams", "info"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "backend: cpu"
    assert lines[1].startswith("  not cuda: cuda.bindings.runtime here (") and \
        "is not NVIDIA's: hip-python-interop" in lines[1]
    assert lines[2].startswith("  not hip: ")


KERNEL_MODULE = """
from rocmstreams.backends.hip import _kernel_module
from rocmstreams.errors import BackendUnavailableError
try:
    print("MODULE", _kernel_module().__name__)
except BackendUnavailableError as exc:
    print("REFUSED", type(exc.__cause__).__name__, exc)
"""


def broken_rocm_tree(tmp_path, missing):
    """A copy of this environment's ROCM_PATH tree without ``missing``."""
    tree = tmp_path / "rocm"
    shutil.copytree(os.environ["ROCM_PATH"], tree, symlinks=True)
    os.unlink(tree / missing)
    return {"ROCM_PATH": str(tree), "NUMBA_HIP_LIBCLANG_FILE": str(tree / "llvm/lib/libclang.so")}


def nvidia_cuda_bindings_first(tmp_path):
    """NVIDIA's ``cuda.bindings`` (numba-cuda brings it) ahead of hip-python-interop's: a
    runtime module with NVIDIA's names, none of the HIP-backed ones numba-hip reads."""
    package = tmp_path / "nvidia" / "cuda" / "bindings"
    package.mkdir(parents=True)
    for init in (package.parent / "__init__.py", package / "__init__.py"):
        init.write_text("")
    (package / "runtime.py").write_text("cudaStreamLegacy = 1\ncudaError_t = int\n")
    (package / "driver.py").write_text("CUresult = int\n")
    return {"PYTHONPATH": f"{package.parent.parent}{os.pathsep}{ROOT}"}


NUMBA_HIP_FAILURES = {  # id: (how the environment is broken, exception, what the advice names)
    "nvidia-cuda-bindings": (nvidia_cuda_bindings_first, "AttributeError",
                             "NVIDIA's cuda-bindings (numba-cuda brings it) overwrote"),
    "no-libclang": (lambda tmp: {"NUMBA_HIP_LIBCLANG_FILE": str(tmp / "libclang.so")},
                    "LibclangError", "set NUMBA_HIP_LIBCLANG_FILE"),
    "no-clang-headers": (lambda tmp: broken_rocm_tree(tmp, "llvm/lib/clang/22"),
                         "FileNotFoundError", "(Debian: libclang-common-<version>-dev)"),
    "no-hiprtc-builtins": (lambda tmp: broken_rocm_tree(tmp, "lib/libhiprtc-builtins.so"),
                           "RuntimeError", "libhiprtc-builtins.so under $ROCM_PATH/lib"),
    "no-comgr": (lambda tmp: broken_rocm_tree(tmp, "lib/libamd_comgr.so"), "RuntimeError",
                 "code-object manager, $ROCM_PATH/lib/libamd_comgr.so"),
    "no-sysdeps-shims": (lambda tmp: {"LD_LIBRARY_PATH": ""}, "ImportError",
                         "librocm_sysdeps_z/zstd.so.1"),
}


def test_the_hip_backends_kernel_module_is_numba_hip_here(tmp_path):
    proc = run_python(["-c", KERNEL_MODULE], tmp_path)
    assert proc.stdout.strip() == "MODULE numba.hip", proc.stderr


@pytest.mark.parametrize("failure", list(NUMBA_HIP_FAILURES))
def test_each_real_numba_hip_import_failure_says_what_is_missing(failure, tmp_path):
    breaks, exception, advice = NUMBA_HIP_FAILURES[failure]
    proc = run_python(["-c", KERNEL_MODULE], tmp_path, **breaks(tmp_path))
    assert proc.stdout.startswith(f"REFUSED {exception} kernels on the hip backend need "
                                  "numba-hip, which did not import"), proc.stdout + proc.stderr
    assert advice in proc.stdout


# ---- rocmstreams' own DeviceArray under numba-hip (issue point 5) ------------------------------
def _device_array_of_rocmstreams(shape, dtype, address):
    return rs.DeviceArray._wrap(address, shape, np.dtype(dtype), 0, None)


def test_a_rocmstreams_device_array_types_without_a_hip_context():
    from rocmstreams.integrations.numba.numba_api import register_device_array_type
    register_device_array_type()
    dispatcher = hip.jit(fill_2d)
    ty = dispatcher.typeof_pyval(_device_array_of_rocmstreams((6, 7), np.float64, 0x7F00_0000_0000))
    assert (str(ty.dtype), ty.ndim, ty.layout) == ("float64", 2, "C")


@pytest.mark.parametrize("shape, dtype", [((1000,), np.float32), ((6, 7), np.float64),
                                          ((2, 3, 4), np.complex64)])
def test_a_rocmstreams_device_array_packs_as_numba_hip_packs_the_same_memory(shape, dtype,
                                                                           without_a_gpu):
    from rocmstreams.integrations.numba.numba_api import register_device_array_type
    register_device_array_type()
    address = 0x7F00_1234_5000
    ours = _device_array_of_rocmstreams(shape, dtype, address)
    theirs = device_array(shape, dtype, address)
    dispatcher, kernel = compiled(FILLS[len(shape)], (ours,))
    assert prepared_parameters(dispatcher, (ours,)) == numba_hip_parameters(kernel, (theirs,))
