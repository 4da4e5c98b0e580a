"""The hip backend: AMD GPUs through hip-python (``rocm.bindings.hip``), kernels through numba-hip.

Every hip-python call returns a tuple whose first item is a ``hipError_t``, as cuda.bindings does,
so the shared :class:`~rocmstreams.backends.runtime.RuntimeBackend` runs it. Kernels:
``ROCMSTREAMS_HIP_KERNELS=numba-cuda`` selects ``numba.cuda`` (our HIP-on-CUDA test rig, where
hip stream handles are CUDA streams underneath), ``=numba-hip`` forces numba-hip, and unset means
numba-hip when it imports.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any, Callable

from ..errors import BackendUnavailableError, RocmStreamsError
from . import native
from .cuda import numba_cuda
from .base import KernelDriver
from .runtime import NumbaKernels, RuntimeAdapter, RuntimeBackend, capture_codes

__all__ = ["load"]

_INSTALL = "install the [rocm] extra (`pip install rocmstreams[rocm]`) on a machine with ROCm"
_GET_ROCM = ("install ROCm (https://rocm.docs.amd.com) and set ROCM_PATH to its root (the "
             "library is $ROCM_PATH/lib/libamdhip64.so), or add the directory holding "
             "libamdhip64.so to LD_LIBRARY_PATH")


def _numba_hip() -> Any:
    # The numba-hip glue: the one part of rocmstreams no test machine of ours can run (numba-hip
    # needs ROCm and an AMD GPU), so it stays this small. numba.hip mirrors numba.cuda's API
    # (jit, configure, external_stream, legacy/per_thread_default_stream); pose_as_cuda() makes
    # `from numba import cuda` give numba.hip, so code written for numba.cuda runs unchanged.
    # numba.hip comes from numba-hip (often not installed), so mypy may not see it
    from numba import hip  # type: ignore[attr-defined, unused-ignore]
    numba_hip: Any = hip
    if sys.modules.get("numba.cuda") is not numba_hip:
        numba_hip.pose_as_cuda()
    return numba_hip


def _kernel_module() -> Any:
    choice = os.environ.get("ROCMSTREAMS_HIP_KERNELS", "").strip().lower()
    if choice == "numba-cuda":
        return numba_cuda()
    if choice not in ("", "numba-hip"):
        raise BackendUnavailableError(
            f"ROCMSTREAMS_HIP_KERNELS={choice!r} is not a kernel compiler; use numba-hip or "
            "numba-cuda (the HIP-on-CUDA test rig), or unset it")
    try:
        return _numba_hip()
    except Exception as exc:  # numba-hip 0.2.1's import fails in each of the ways below
        raise BackendUnavailableError(
            f"kernels on the hip backend need numba-hip, which did not import "
            f"({type(exc).__name__}: {exc}): {_numba_hip_missing(exc)}") from exc


def _numba_hip_missing(exc: Exception) -> str:
    """What to install or set, for each way numba-hip 0.2.1's import was seen to fail."""
    text = str(exc)
    if isinstance(exc, AttributeError) and "cuda.bindings" in text:
        return ("NVIDIA's cuda-bindings (numba-cuda brings it) overwrote hip-python-interop's "
                "HIP-backed cuda.bindings; install rocmstreams[rocm] into a virtual environment "
                "without cuda-bindings or numba-cuda")
    if type(exc).__name__ == "LibclangError":
        return ("numba-hip parses HIP headers with libclang (22 works, 15 does not): set "
                "NUMBA_HIP_LIBCLANG_FILE to it, or provide $ROCM_PATH/llvm/lib/libclang.so")
    if isinstance(exc, FileNotFoundError) and "clang" in text:
        return ("libclang needs its resource headers: $ROCM_PATH/llvm/lib/clang/<version> "
                "(Debian: libclang-common-<version>-dev)")
    if "hiprtc" in text:
        return "numba-hip needs ROCm's libhiprtc-builtins.so under $ROCM_PATH/lib"
    if "comgr" in text:
        return "numba-hip needs ROCm's code-object manager, $ROCM_PATH/lib/libamd_comgr.so"
    if "librocm_sysdeps" in text:
        return ("numba-hip's LLVM needs ROCm's librocm_sysdeps_z/zstd.so.1 (in "
                "$ROCM_PATH/lib/rocm_sysdeps/lib, on LD_LIBRARY_PATH)")
    return "`pip install rocmstreams[rocm]` on a machine with ROCm, with ROCM_PATH set to it"


def _kernel_driver(backend: RuntimeBackend) -> KernelDriver:
    """Prepared launches through hipModuleLaunchKernel, with the parameter buffer's address.

    The launchable function is the compiled kernel's module function (numba-hip mirrors
    numba-cuda's ``_codelibrary.get_cufunc()``; on the HIP-on-CUDA rig it is a CUDA driver
    handle the shim launches). A kernel whose function cannot be reached takes Numba's launch.
    """
    from rocm.bindings import hip

    def function(kernel: Any) -> Any:
        return int(kernel._codelibrary.get_cufunc().handle)

    def stream(handle: int) -> Any:
        return hip.ihipStream_t.fromObj(handle)

    def load(function: Any) -> None:
        """An attribute query loads the function (on the HIP-on-CUDA rig, out of the CUDA
        driver's lazy loading)."""
        status, _ = hip.hipFuncGetAttribute(
            hip.hipFunction_attribute.HIP_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, function)
        if status != hip.hipError_t.hipSuccess:
            raise error(status, "could not load the kernel on the device")

    def error(status: Any, what: str) -> BaseException:
        return backend.error(int(status), what)

    invalid_context = int(hip.hipError_t.hipErrorInvalidContext)

    def recover(status: Any, device: int) -> bool:
        """A thread with no current context: make ``device`` current and launch once more."""
        if int(status) != invalid_context:
            return False
        backend.set_device(device)
        return True

    return KernelDriver(launch=hip.hipModuleLaunchKernel, success=hip.hipError_t.hipSuccess,
                        function=function, stream=stream, error=error, extra=None,
                        recover=recover, load=load,
                        bind_launch=native.launch_binder(backend.native_entry_points()))


#: The HIP calls the compiled hot calls make (the HIP-on-CUDA shim defines each).
NATIVE_SYMBOLS = ("hipStreamQuery", "hipStreamSynchronize", "hipEventRecord",
                  "hipModuleLaunchKernel")


def _hip_library() -> ctypes.CDLL:
    """The libamdhip64 hip-python loaded (RTLD_NOLOAD: never load another); OSError if none."""
    try:
        from rocm.bindings.util.paths import get_library_path
        path = os.fsdecode(get_library_path("amdhip64"))
    except ImportError:  # hip-python before rocm.bindings
        path = "libamdhip64.so"
    return ctypes.CDLL(path, mode=os.RTLD_NOLOAD)


def _native_entry_points() -> native.EntryPoints | None:
    return native.entry_points(_hip_library, NATIVE_SYMBOLS)


def _version(value: int) -> str:
    """HIP encodes versions as 10_000_000 * major + 100_000 * minor + patch."""
    return f"{value // 10_000_000}.{value // 100_000 % 100}.{value % 100_000}"


def _device_name(call: Any, ordinal: int) -> tuple:
    return call("DeviceGetName", 256, ordinal)


def _pool_attributes(hip: Any) -> tuple[Callable[..., tuple], Callable[..., tuple]]:
    """hipMemPoolGetAttribute / SetAttribute for the uint64 attributes: hip-python passes the
    value as a ``void *``, so it lives in a ctypes integer for the call."""
    attrs = hip.hipMemPoolAttr

    def get(call: Callable[..., tuple], pool: Any, name: str) -> tuple:
        value = ctypes.c_uint64(0)
        status = call("MemPoolGetAttribute", pool, getattr(attrs, "hipMemPool" + name),
                      ctypes.addressof(value))[0]
        return status, value.value

    def set_(call: Callable[..., tuple], pool: Any, name: str, value: int) -> tuple:
        box = ctypes.c_uint64(value)
        return call("MemPoolSetAttribute", pool, getattr(attrs, "hipMemPool" + name),
                    ctypes.addressof(box))

    return get, set_


def _adapter(hip: Any) -> RuntimeAdapter:
    err = hip.hipError_t
    pool_get, pool_set = _pool_attributes(hip)
    return RuntimeAdapter(
        name="hip", binding=hip, prefix="hip", packages=("rocm-bindings-hip", "hip-python"),
        stream_non_blocking=int(hip.hipStreamNonBlocking),
        event_disable_timing=int(hip.hipEventDisableTiming),
        host_alloc_flags=int(hip.hipHostMallocMapped) | int(hip.hipHostMallocPortable),
        memcpy_default=hip.hipMemcpyKind.hipMemcpyDefault,
        capture_mode_global=hip.hipStreamCaptureMode.hipStreamCaptureModeGlobal,
        capture_status_none=int(hip.hipStreamCaptureStatus.hipStreamCaptureStatusNone),
        not_ready=int(err.hipErrorNotReady), out_of_memory=int(err.hipErrorOutOfMemory),
        invalid_device=int(err.hipErrorInvalidDevice), capture_codes=capture_codes(err, "hip"),
        legacy_stream=0, host_alloc="HostMalloc", host_free="HostFree", error_enum=err,
        device_name=_device_name, format_version=_version, kernels=NumbaKernels(_kernel_module),
        kernel_driver=_kernel_driver, native_entry_points=_native_entry_points,
        memory_pools_attribute=hip.hipDeviceAttribute_t.hipDeviceAttributeMemoryPoolsSupported,
        pool_get_attribute=pool_get, pool_set_attribute=pool_set,
        peer_already_enabled=int(err.hipErrorPeerAccessAlreadyEnabled),
        # `with nogil` around every call came with the same hip-python release as has_symbol
        releases_gil=hasattr(hip, "has_symbol"))


def load() -> RuntimeBackend:
    """The hip backend, or BackendUnavailableError saying what is missing and how to get it."""
    try:
        from rocm.bindings import hip
    except ImportError:
        try:  # hip-python before its rocm.bindings layout (ROCm 6.x)
            from hip import hip
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the hip backend needs hip-python, which did not import ({exc}); {_INSTALL}"
            ) from exc
    try:
        hip.hipGetDeviceCount()  # the first call loads libamdhip64.so
    except RuntimeError as exc:
        raise BackendUnavailableError(
            f"hip-python could not load libamdhip64.so, the HIP runtime library ({exc}); "
            f"{_GET_ROCM}") from exc
    backend = RuntimeBackend(_adapter(hip))
    try:
        count = backend.get_device_count()
    except RocmStreamsError as exc:
        raise BackendUnavailableError(
            "the HIP runtime found no usable AMD GPU; check that the amdgpu driver is loaded and "
            "that this user may open /dev/kfd and /dev/dri (groups video and render)",
            backend="hip", code=exc.code, name=exc.name,
            runtime_message=exc.runtime_message) from exc
    if count == 0:
        raise BackendUnavailableError("the HIP runtime sees no GPU", backend="hip")
    return backend
