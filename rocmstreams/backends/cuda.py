"""The cuda backend: NVIDIA GPUs through ``cuda.bindings.runtime``, kernels through numba-cuda."""
from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any, Callable

from ..errors import BackendUnavailableError, RocmStreamsError
from . import native
from .base import KernelDriver
from .runtime import NumbaKernels, RuntimeAdapter, RuntimeBackend, capture_codes

__all__ = ["load", "numba_cuda"]

_INSTALL = ("install the [cuda] extra (`pip install rocmstreams[cuda]`) and an NVIDIA driver "
            "that supports the CUDA major version of cuda-bindings")


def numba_cuda() -> Any:
    """``numba.cuda`` in GPU mode, or BackendUnavailableError when it is the CPU simulator."""
    try:
        from numba import cuda
    except ImportError as exc:
        raise BackendUnavailableError(
            f"kernels need numba-cuda, which did not import ({exc}); {_INSTALL}") from exc
    if getattr(cuda.is_available, "__module__", "").startswith("numba.cuda.simulator"):
        raise BackendUnavailableError(
            "numba.cuda imported as its CPU simulator because NUMBA_ENABLE_CUDASIM is set; unset "
            "NUMBA_ENABLE_CUDASIM (before numba is imported) to run kernels on the GPU, or choose "
            "the cpu backend with ROCMSTREAMS_BACKEND=cpu")
    return cuda


def _version(value: int) -> str:
    """CUDA encodes versions as 1000 * major + 10 * minor."""
    return f"{value // 1000}.{value % 1000 // 10}"


def _device_name(call: Any, ordinal: int) -> tuple:
    status, props = call("GetDeviceProperties", ordinal)
    return status, None if props is None else props.name


@functools.lru_cache(maxsize=None)
def _driver_library() -> ctypes.CDLL:
    """The CUDA driver library (the one cuda.bindings loaded: a process has one); OSError if
    it does not load."""
    return ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")


def _native_entry_points() -> native.EntryPoints | None:
    """The driver's calls for the compiled hot calls. Runtime stream and event handles are
    driver handles, and the statuses these calls answer with on success and not-ready are the
    runtime's (0, 600); any other status takes the runtime's call, which names it."""
    return native.entry_points(_driver_library, ("cuStreamQuery", "cuStreamSynchronize",
                                                 "cuEventRecord", "cuLaunchKernel"))


def _driver_launch_host_func(runtime: Any) -> Callable[[int, int, int], tuple]:
    """cuLaunchHostFunc from the driver library, through ctypes (which releases the GIL).

    cuda.bindings' cudaLaunchHostFunc frees its callback record after the first call, so a host
    function captured into a graph runs freed memory on the second launch (NVIDIA/cuda-python
    issue 790). The driver call takes our trampoline as it is. Runtime stream handles are driver
    handles (cudaStreamLegacy/PerThread are CU_STREAM_LEGACY/PER_THREAD); CUresult codes are the
    cudaError_t numbers for every status this call returns but 201, which names no current context:
    then the runtime binds the device's primary context to this thread and the call is retried.
    """
    found: list[Any] = []

    def launch(stream: int, fn: int, key: int) -> tuple:
        if not found:
            try:
                lib = _driver_library()
            except OSError as exc:
                raise RocmStreamsError(f"could not load the CUDA driver library: {exc}",
                                       backend="cuda") from exc
            func = lib.cuLaunchHostFunc
            func.argtypes, func.restype = [ctypes.c_void_p] * 3, ctypes.c_int
            found.append(func)
        status = found[0](stream, fn, key)
        if status == 201:  # CUDA_ERROR_INVALID_CONTEXT
            current = runtime.cudaGetDevice()
            if int(current[0]) == 0 and int(runtime.cudaSetDevice(current[1])[0]) == 0:
                status = found[0](stream, fn, key)
        return (status,)

    return launch


def _kernel_driver(backend: RuntimeBackend) -> KernelDriver:
    """Prepared launches through the driver's cuLaunchKernel (cuda.bindings.driver).

    numba-cuda loads kernels through cuda.core, whose handle (a CUkernel or CUfunction) the
    driver launches as a CUfunction (a CUkernel's context is taken from the stream). Runtime
    stream handles are driver handles; the legacy default stream is CU_STREAM_LEGACY. The
    parameters go as one buffer (CU_LAUNCH_PARAM_BUFFER_POINTER = 1, _SIZE = 2, _END = 0 in
    cuda.h) where the driver's parameter offsets agree with the prepared layout.
    """
    from cuda.bindings import driver  # type: ignore[import-untyped, unused-ignore]  # no py.typed

    success = driver.CUresult.CUDA_SUCCESS
    legacy = int(driver.CU_STREAM_LEGACY)
    libraries: dict[int, bool] = {}  # function handle -> whether it is a CUkernel

    def function(kernel: Any) -> Any:
        handle = kernel._codelibrary.get_cufunc().handle
        libraries[int(handle)] = isinstance(handle, driver.CUkernel)
        return driver.CUfunction(int(handle))

    def param_info(function: Any, count: int) -> list[tuple[int, int]] | None:
        """The (offset, size) of each of the ``count`` parameters; None unless exactly that
        many (cuKernelGetParamInfo / cuFuncGetParamInfo, CUDA 12.4+)."""
        handle = int(function)
        if libraries.get(handle):
            query, target = driver.cuKernelGetParamInfo, driver.CUkernel(handle)
        else:
            query, target = driver.cuFuncGetParamInfo, function
        found: list[tuple[int, int]] = []
        for index in range(count + 1):
            status, offset, size = query(target, index)
            if status != success:
                return found if index == count else None
            found.append((int(offset), int(size)))
        return None  # more parameters than the prepared signature has

    def stream(handle: int) -> Any:
        return driver.CUstream(handle or legacy)

    def load(function: Any) -> None:
        """Under lazy loading (CUDA_MODULE_LOADING=LAZY, the default) a kernel is loaded into
        the context at its first launch: getting a CUkernel's function for the context, or
        querying an attribute, loads it now."""
        handle = int(function)
        if libraries.get(handle):
            status, function = driver.cuKernelGetFunction(driver.CUkernel(handle))
            if status != success:
                raise error(status, "could not load the kernel in the current context")
        status, _ = driver.cuFuncGetAttribute(
            driver.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, function)
        if status != success:
            raise error(status, "could not load the kernel in the current context")

    def error(status: Any, what: str) -> BaseException:
        _, name = driver.cuGetErrorName(status)
        _, message = driver.cuGetErrorString(status)
        return backend.error(int(status), what + " in the driver",
                             name=name.decode() if name else None,
                             message=message.decode() if message else None)

    def recover(status: Any, device: int) -> bool:
        """A thread that never used the runtime has no current context (201): binding the
        device's primary context to it, as the runtime does on first use, lets it launch."""
        if int(status) != 201:  # CUDA_ERROR_INVALID_CONTEXT
            return False
        backend.set_device(device)
        return True

    return KernelDriver(launch=driver.cuLaunchKernel, success=success, function=function,
                        stream=stream, error=error, buffer_markers=(1, 2, 0),
                        param_info=param_info, recover=recover, load=load,
                        bind_launch=native.launch_binder(backend.native_entry_points()),
                        raw_stream=lambda handle: handle or legacy)


def _pool_attributes(runtime: Any) -> tuple[Callable[..., tuple], Callable[..., tuple]]:
    """cudaMemPoolGetAttribute / SetAttribute for the uint64 attributes (the threshold, the
    reserved and used counters), whose values cuda.bindings takes as a driver ``cuuint64_t``."""
    from cuda.bindings import driver  # type: ignore[import-untyped, unused-ignore]  # no py.typed
    attrs = runtime.cudaMemPoolAttr

    def get(call: Callable[..., tuple], pool: Any, name: str) -> tuple:
        status, value = call("MemPoolGetAttribute", pool, getattr(attrs, "cudaMemPool" + name))
        return status, 0 if value is None else int(value)

    def set_(call: Callable[..., tuple], pool: Any, name: str, value: int) -> tuple:
        return call("MemPoolSetAttribute", pool, getattr(attrs, "cudaMemPool" + name),
                    driver.cuuint64_t(value))

    return get, set_


def _adapter(runtime: Any) -> RuntimeAdapter:
    err = runtime.cudaError_t
    pool_get, pool_set = _pool_attributes(runtime)
    return RuntimeAdapter(
        name="cuda", binding=runtime, prefix="cuda", packages=("cuda-bindings", "cuda-python"),
        stream_non_blocking=int(runtime.cudaStreamNonBlocking),
        event_disable_timing=int(runtime.cudaEventDisableTiming),
        host_alloc_flags=int(runtime.cudaHostAllocMapped) | int(runtime.cudaHostAllocPortable),
        memcpy_default=runtime.cudaMemcpyKind.cudaMemcpyDefault,
        capture_mode_global=runtime.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal,
        capture_status_none=int(runtime.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone),
        not_ready=int(err.cudaErrorNotReady), out_of_memory=int(err.cudaErrorMemoryAllocation),
        invalid_device=int(err.cudaErrorInvalidDevice), capture_codes=capture_codes(err, "cuda"),
        # handle 0 is the legacy stream even where cuda.bindings runs per-thread-default-stream
        legacy_stream=int(runtime.cudaStreamLegacy),
        host_alloc="HostAlloc", host_free="FreeHost", error_enum=err, device_name=_device_name,
        format_version=_version, kernels=NumbaKernels(numba_cuda),
        launch_host_func=_driver_launch_host_func(runtime), kernel_driver=_kernel_driver,
        stream_object=runtime.cudaStream_t, event_object=runtime.cudaEvent_t,
        native_entry_points=_native_entry_points,
        memory_pools_attribute=runtime.cudaDeviceAttr.cudaDevAttrMemoryPoolsSupported,
        peer_already_enabled=int(err.cudaErrorPeerAccessAlreadyEnabled),
        pool_get_attribute=pool_get, pool_set_attribute=pool_set)


def load() -> RuntimeBackend:
    """The cuda backend, or BackendUnavailableError saying what is missing."""
    try:
        from cuda.bindings import runtime
    except (ImportError, OSError) as exc:
        raise BackendUnavailableError(
            f"the cuda backend needs cuda-python's cuda.bindings, which did not import ({exc}); "
            f"{_INSTALL}") from exc
    if not hasattr(runtime, "cudaStreamLegacy"):  # hip-python-interop's HIP-backed module
        raise BackendUnavailableError(
            f"cuda.bindings.runtime here ({runtime.__file__}) is not NVIDIA's: hip-python-interop "
            "(which numba-hip needs) installs a HIP-backed module under that name. Use the hip "
            "backend in this environment, or another virtual environment with the [cuda] extra",
            backend="cuda")
    backend = RuntimeBackend(_adapter(runtime))
    try:
        count = backend.get_device_count()
    except RocmStreamsError as exc:
        raise BackendUnavailableError(
            f"the CUDA runtime found no usable NVIDIA GPU; {_INSTALL}", backend="cuda",
            code=exc.code, name=exc.name, runtime_message=exc.runtime_message) from exc
    if count == 0:
        raise BackendUnavailableError(f"the CUDA runtime sees no GPU; {_INSTALL}", backend="cuda")
    return backend
