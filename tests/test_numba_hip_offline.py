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

ROOT = Path(__file__).resolve().parents[1]
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
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))  # latch.py imports rocmstreams, which touches no GPU
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
