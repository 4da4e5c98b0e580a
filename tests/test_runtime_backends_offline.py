"""The cuda and hip backends where there is no GPU: loading, the error choke point, the C shim.

Nothing here needs a GPU. Tests that import numba.cuda run in a subprocess, so that this process
keeps numba.cuda unimported for the cpu backend's tests.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rocmstreams.backends import runtime
from rocmstreams.backends.base import LEGACY_STREAM as LEGACY
from rocmstreams.backends.runtime import NumbaKernels, RuntimeAdapter, RuntimeBackend
from rocmstreams.errors import (BackendUnavailableError, CaptureError, EventNotReadyError,
                                InvalidDeviceError, OutOfMemoryError, RocmStreamsError,
                                StreamCreationError, SynchronizeError)

ROOT = Path(__file__).resolve().parents[1]
SHIM = ROOT / "tests" / "hip_on_cuda" / "hip_on_cuda.c"
BACKENDS = ROOT / "rocmstreams" / "backends"
CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))

# HIP's numbers, as the fake runtime below reports them
OK, OOM, BAD_DEVICE, BAD_HANDLE, NOT_READY, ILLEGAL_ADDRESS, CAPTURE_UNSUPPORTED = (
    0, 2, 101, 400, 600, 700, 900)
PEER_ALREADY_ENABLED = 704
NAMES = {OK: "fakeSuccess", OOM: "fakeErrorOutOfMemory", BAD_DEVICE: "fakeErrorInvalidDevice",
         BAD_HANDLE: "fakeErrorInvalidHandle", NOT_READY: "fakeErrorNotReady",
         ILLEGAL_ADDRESS: "fakeErrorIllegalAddress",
         CAPTURE_UNSUPPORTED: "fakeErrorStreamCaptureUnsupported"}


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=120)


# ---- a fake HIP-named binding -----------------------------------------------------------------
class FakeBinding:
    """Answers ``fake<Name>(*args)`` with the status programmed in ``status[Name]`` (default 0)."""

    fakeHostFn_t = int

    def __init__(self) -> None:
        self.status: dict[str, int | list[int]] = {}
        self.calls: list[tuple[str, tuple]] = []
        self.handles = iter(range(0x1000, 0x100000, 0x10))

    def _status(self, name: str) -> int:
        programmed = self.status.get(name, OK)
        if isinstance(programmed, list):
            return programmed.pop(0) if len(programmed) > 1 else programmed[0]
        return programmed

    def __getattr__(self, attr: str):
        if not attr.startswith("fake"):
            raise AttributeError(attr)
        name = attr[len("fake"):]

        def call(*args):
            self.calls.append((name, args))
            status = self._status(name)
            if name in ("GetErrorName", "GetErrorString"):
                if args[0] not in NAMES:
                    raise ValueError(f"{args[0]} is not a fakeError_t")
                text = NAMES[args[0]]
                return (OK, text.encode() if name == "GetErrorName" else f"text of {text}")
            if name == "LaunchHostFunc" and status == OK:
                stream, fn_address, key = args
                ctypes.CFUNCTYPE(None, ctypes.c_void_p)(fn_address)(key)  # the runtime runs it
            if name in ("StreamCreateWithPriority", "EventCreateWithFlags", "Malloc",
                        "HostMalloc", "StreamEndCapture", "GraphInstantiateWithFlags",
                        "MallocAsync", "DeviceGetDefaultMemPool"):
                return (status, next(self.handles) if status == OK else None)
            if name == "StreamIsCapturing":
                return (status, self.status.get("capture_status", 0))
            if name == "DeviceGetStreamPriorityRange":
                return (status, 0, -5)
            if name in ("GetDeviceCount", "GetDevice", "RuntimeGetVersion", "DriverGetVersion"):
                return (status, 60443484)
            if name == "DeviceCanAccessPeer":
                return (status, self.status.get("can_access_peer", 1))
            if name == "DeviceGetAttribute":
                return (status, self.status.get("pools_supported", 1))
            if name == "MemPoolGetAttribute":
                return (status, 4096)
            if name == "EventElapsedTime":
                return (status, 1.5)
            if name == "DeviceGetName":
                return (status, b"Fake GPU\0\0")
            if name == "Explode":
                raise RuntimeError("failed to dlsym 'fakeExplode'")
            return (status,)
        return call


def make_backend(releases_gil: bool = True, launch_host_func=None, pools: bool = False,
                 native_entry_points=None, stream_object=int
                 ) -> tuple[RuntimeBackend, FakeBinding]:
    binding = FakeBinding()
    adapter = RuntimeAdapter(
        name="fake", binding=binding, prefix="fake", packages=("pytest",),
        stream_non_blocking=1, event_disable_timing=2, host_alloc_flags=3, memcpy_default=4,
        capture_mode_global=0, capture_status_none=0, not_ready=NOT_READY, out_of_memory=OOM,
        invalid_device=BAD_DEVICE, capture_codes=frozenset(range(900, 909)), legacy_stream=1,
        host_alloc="HostMalloc", host_free="HostFree", error_enum=int,
        device_name=lambda call, ordinal: call("DeviceGetName", 256, ordinal),
        format_version=str, kernels=NumbaKernels(lambda: None), releases_gil=releases_gil,
        launch_host_func=launch_host_func, native_entry_points=native_entry_points,
        memory_pools_attribute="pools-attribute" if pools else None,
        pool_get_attribute=(lambda call, pool, name: call("MemPoolGetAttribute", pool, name))
        if pools else None,
        pool_set_attribute=(lambda call, pool, name, value: call("MemPoolSetAttribute", pool,
                                                                 name, value))
        if pools else None, peer_already_enabled=PEER_ALREADY_ENABLED,
        stream_object=stream_object)
    return RuntimeBackend(adapter), binding


# ---- the choke point ---------------------------------------------------------------------------
def test_out_of_memory_code_raises_out_of_memory_error_with_runtime_fields():
    be, binding = make_backend()
    binding.status["Malloc"] = OOM
    with pytest.raises(OutOfMemoryError) as info:
        be.malloc(1 << 40)
    err = info.value
    assert isinstance(err, MemoryError)
    assert (err.backend, err.code, err.name) == ("fake", OOM, "fakeErrorOutOfMemory")
    assert err.runtime_message == "text of fakeErrorOutOfMemory"
    assert "1099511627776 bytes" in str(err) and "fakeErrorOutOfMemory (2)" in str(err)


def test_invalid_device_code_raises_invalid_device_error():
    be, binding = make_backend()
    binding.status["SetDevice"] = BAD_DEVICE
    with pytest.raises(InvalidDeviceError) as info:
        be.set_device(7)
    assert info.value.code == BAD_DEVICE and "device 7" in str(info.value)


def test_query_is_false_only_for_the_not_ready_code():
    be, binding = make_backend()
    binding.status["StreamQuery"] = NOT_READY
    binding.status["EventQuery"] = NOT_READY
    assert be.stream_calls(0x1000).query() is False
    assert be.event_query(0x2000) is False
    binding.status["StreamQuery"] = OK
    binding.status["EventQuery"] = OK
    assert be.stream_calls(0x1000).query() is True
    assert be.event_query(0x2000) is True


@pytest.mark.parametrize("code", [BAD_HANDLE, ILLEGAL_ADDRESS, 1])
def test_query_raises_for_every_other_code(code):
    be, binding = make_backend()
    binding.status["StreamQuery"] = code
    binding.status["EventQuery"] = code
    with pytest.raises(RocmStreamsError) as info:
        be.stream_calls(0x1000).query()
    assert info.value.code == code
    with pytest.raises(RocmStreamsError):
        be.event_query(0x2000)


def test_failed_stream_create_raises_stream_creation_error():
    be, binding = make_backend()
    binding.status["StreamCreateWithPriority"] = BAD_HANDLE
    with pytest.raises(StreamCreationError, match="priority=-1"):
        be.stream_create(True, -1, 0)
    assert be.live_handles()["streams"] == 0


def test_failed_synchronize_raises_synchronize_error():
    be, binding = make_backend()
    binding.status["StreamSynchronize"] = ILLEGAL_ADDRESS
    binding.status["EventSynchronize"] = ILLEGAL_ADDRESS
    with pytest.raises(SynchronizeError) as info:
        be.stream_calls(0x1000).synchronize()
    assert info.value.name == "fakeErrorIllegalAddress"
    with pytest.raises(SynchronizeError):
        be.event_synchronize(0x2000)


def test_capture_codes_raise_capture_error():
    be, binding = make_backend()
    binding.status["StreamSynchronize"] = CAPTURE_UNSUPPORTED
    with pytest.raises(CaptureError, match="captured into a graph"):
        be.stream_calls(0x1000).synchronize()


def test_elapsed_time_of_unfinished_events_raises_event_not_ready():
    be, binding = make_backend()
    binding.status["EventElapsedTime"] = NOT_READY
    with pytest.raises(EventNotReadyError):
        be.event_elapsed_time(0x2000, 0x2010)
    binding.status["EventElapsedTime"] = OK
    assert be.event_elapsed_time(0x2000, 0x2010) == 1.5


def test_code_unknown_to_the_binding_still_raises_with_a_name():
    be, binding = make_backend()
    binding.status["StreamDestroy"] = 12345
    with pytest.raises(RocmStreamsError) as info:
        be.stream_destroy(0x1000)
    assert (info.value.code, info.value.name, info.value.runtime_message) == (
        12345, "fakeError12345", None)


def test_runtime_error_from_the_binding_becomes_our_error():
    be, _ = make_backend()
    with pytest.raises(RocmStreamsError, match="fakeExplode is not available") as info:
        be._call("Explode")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_check_returns_none_one_value_or_a_tuple():
    be, _ = make_backend()
    assert be._check((OK,), RocmStreamsError, "x") is None
    assert be._check((OK, 5), RocmStreamsError, "x") == 5
    assert be._check((OK, 0, -5), RocmStreamsError, "x") == (0, -5)
    assert be.device_get_stream_priority_range() == (0, -5)
    assert be.device_name(0) == "Fake GPU"


def test_runtime_error_pickles_with_its_fields():
    be, binding = make_backend()
    binding.status["Malloc"] = OOM
    with pytest.raises(OutOfMemoryError) as info:
        be.malloc(64)
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is OutOfMemoryError
    assert (clone.message, clone.backend, clone.code, clone.name, clone.runtime_message) == (
        info.value.message, "fake", OOM, "fakeErrorOutOfMemory", "text of fakeErrorOutOfMemory")
    assert str(clone) == str(info.value)


# ---- handles and bookkeeping -------------------------------------------------------------------
def test_live_handles_count_creates_and_destroys():
    be, _ = make_backend()
    streams = [be.stream_create(False, 0, 0) for _ in range(3)]
    event = be.event_create(True)
    ptr = be.host_malloc(16)
    assert be.live_handles() == {"streams": 3, "events": 1, "allocations": 1, "pooled_streams": 0}
    for s in streams:
        be.stream_destroy(s)
    be.event_destroy(event)
    be.host_free(ptr)
    assert be.live_handles()["streams"] == 0 and be.live_handles()["pooled_streams"] == 3


def test_flags_and_the_legacy_stream_reach_the_binding():
    be, binding = make_backend()
    be.stream_create(True, -1, 0)
    be.event_create(False)
    be.stream_calls(0).memcpy_async(0x10, 0x20, 8)
    be.stream_calls(2).event_record(0x2000)
    calls = dict(binding.calls)
    assert calls["StreamCreateWithPriority"] == (1, -1)
    assert calls["EventCreateWithFlags"] == (2,)
    assert calls["MemcpyAsync"] == (0x10, 0x20, 8, 4, 1)  # handle 0 is passed as legacy_stream
    assert calls["EventRecord"] == (0x2000, 2)


def test_host_function_runs_through_the_trampoline_with_its_key():
    be, binding = make_backend()
    ran = []
    be.stream_calls(0x1000).launch_host_func(lambda: ran.append("done"))
    name, (stream, fn, key) = binding.calls[-1]
    assert (name, stream, fn) == ("LaunchHostFunc", 0x1000, runtime._TRAMPOLINE_ADDRESS)
    assert ran == ["done"] and key not in runtime._pending


def test_adapter_host_func_launcher_replaces_the_bindings_call():
    enqueued = []

    def launch(stream: int, fn: int, key: int) -> tuple:
        enqueued.append((stream, fn, key))
        ctypes.CFUNCTYPE(None, ctypes.c_void_p)(fn)(key)
        return (OK,)

    be, binding = make_backend(launch_host_func=launch)
    ran = []
    be.stream_calls(0).launch_host_func(lambda: ran.append(1))
    assert ran == [1] and "LaunchHostFunc" not in [name for name, _ in binding.calls]
    assert enqueued[0][:2] == (1, runtime._TRAMPOLINE_ADDRESS)  # handle 0 as legacy_stream


def test_raising_host_function_warns_and_does_not_raise():
    be, _ = make_backend()

    def boom() -> None:
        raise ValueError("callback failed")

    with pytest.warns(RuntimeWarning, match="callback failed"):
        be.stream_calls(0x1000).launch_host_func(boom)


def test_host_function_that_could_not_be_enqueued_is_forgotten():
    be, binding = make_backend()
    binding.status["LaunchHostFunc"] = BAD_HANDLE
    before = dict(runtime._pending)
    with pytest.raises(RocmStreamsError):
        be.stream_calls(0x1000).launch_host_func(lambda: None)
    assert runtime._pending == before


def test_host_function_captured_into_a_graph_stays_registered():
    be, binding = make_backend()
    binding.status["capture_status"] = 1
    ran = []
    be.stream_calls(0x1000).launch_host_func(lambda: ran.append(1))
    key = binding.calls[-1][1][2]
    assert key in runtime._captured
    runtime._TRAMPOLINE(key)  # a second graph launch runs it again
    assert ran == [1, 1]
    del runtime._captured[key]


def test_without_gil_release_synchronize_polls_the_query_first():
    be, binding = make_backend(releases_gil=False)
    binding.status["StreamQuery"] = [NOT_READY, NOT_READY, OK]
    be.stream_calls(0x1000).synchronize()
    names = [name for name, _ in binding.calls]
    assert names == ["StreamQuery", "StreamQuery", "StreamQuery", "StreamSynchronize"]


# ---- loading without hardware ------------------------------------------------------------------
def _cuda_gpu_present() -> bool:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return False
    status, count = cudart.cudaGetDeviceCount()
    return int(status) == 0 and count > 0


def test_cuda_load_without_a_driver_says_what_to_install():
    pytest.importorskip("cuda.bindings.runtime")
    if _cuda_gpu_present():
        pytest.skip("an NVIDIA GPU is present")
    from rocmstreams.backends import cuda
    with pytest.raises(BackendUnavailableError) as info:
        cuda.load()
    err = info.value
    assert "pip install rocmstreams[cuda]" in str(err) and "NVIDIA driver" in str(err)
    assert err.backend == "cuda" and err.code in (35, 100) and err.name.startswith("cudaError")


def test_cuda_load_without_cuda_bindings_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    from rocmstreams.backends import cuda
    with pytest.raises(BackendUnavailableError, match=re.escape("pip install rocmstreams[cuda]")):
        cuda.load()


def test_hip_load_without_rocm_names_libamdhip64():
    hip = pytest.importorskip("rocm.bindings.hip")
    try:
        hip.hipGetDeviceCount()
    except RuntimeError:
        pass
    else:
        pytest.skip("a HIP runtime library is loadable here")
    from rocmstreams.backends import hip as hip_backend
    with pytest.raises(BackendUnavailableError) as info:
        hip_backend.load()
    message = str(info.value)
    assert "libamdhip64.so" in message and "ROCM_PATH" in message
    assert "LD_LIBRARY_PATH" in message and "install ROCm" in message


def test_hip_load_without_hip_python_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rocm.bindings", None)
    monkeypatch.setitem(sys.modules, "hip", None)
    from rocmstreams.backends import hip
    with pytest.raises(BackendUnavailableError, match=re.escape("pip install rocmstreams[rocm]")):
        hip.load()


def test_cuda_kernels_refuse_the_simulator():
    proc = run_python("""
        from rocmstreams.backends.cuda import numba_cuda
        from rocmstreams.errors import BackendUnavailableError
        try:
            numba_cuda()
        except BackendUnavailableError as exc:
            print("REFUSED", exc)
    """, NUMBA_ENABLE_CUDASIM="1")
    assert "REFUSED" in proc.stdout and "NUMBA_ENABLE_CUDASIM" in proc.stdout, proc.stderr


def test_hip_kernels_need_numba_hip_or_the_rig_setting():
    proc = run_python("""
        import os
        from rocmstreams.backends.hip import _kernel_module
        from rocmstreams.errors import BackendUnavailableError
        for choice in ("", "bogus", "numba-cuda"):
            os.environ["ROCMSTREAMS_HIP_KERNELS"] = choice
            try:
                print(repr(choice), "MODULE", _kernel_module().__name__)
            except BackendUnavailableError as exc:
                print(repr(choice), "REFUSED", exc)
    """, NUMBA_ENABLE_CUDASIM="0")
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["''"].startswith("REFUSED") and "numba-hip" in lines["''"], proc.stderr
    assert lines["'bogus'"].startswith("REFUSED") and "numba-cuda" in lines["'bogus'"]
    assert lines["'numba-cuda'"] == "MODULE numba.cuda"


# ---- the HIP-on-CUDA shim ------------------------------------------------------------------------
def _shim_enum(name: str) -> dict[str, int]:
    body = re.search(r"typedef enum %s \{(.*?)\} %s;" % (name, name), SHIM.read_text(), re.S)
    assert body, f"no enum {name} in {SHIM.name}"
    return {k: int(v, 0) for k, v in re.findall(r"(hip\w+) = (\w+),", body.group(1))}


def _shim_rows() -> list[tuple[str, str]]:
    return re.findall(r"ROW\((cuda\w+), (hip\w+)\)", SHIM.read_text())


def _hip_functions_called() -> set[str]:
    """Every hip<Name> the backend calls: _call("Name") in runtime.py, call("Name") in hip.py."""
    from rocmstreams.backends.hip import _adapter
    names = set(re.findall(r'_(?:call|fn)\("(\w+)"', (BACKENDS / "runtime.py").read_text()))
    names |= set(re.findall(r'call\("(\w+)"', (BACKENDS / "hip.py").read_text()))
    hip = pytest.importorskip("rocm.bindings.hip")
    adapter = _adapter(hip)
    return {"hip" + n for n in names | {adapter.host_alloc, adapter.host_free}}


def test_shim_error_values_are_hip_pythons():
    hip = pytest.importorskip("rocm.bindings.hip")
    shim = _shim_enum("hipError_t")
    assert shim, "the shim defines no hipError_t values"
    for name, value in shim.items():
        assert int(hip.hipError_t[name]) == value, name


def test_shim_maps_every_code_the_backend_relies_on():
    hip = pytest.importorskip("rocm.bindings.hip")
    from rocmstreams.backends.hip import _adapter
    adapter = _adapter(hip)
    shim = _shim_enum("hipError_t")
    mapped = {shim[h] for _, h in _shim_rows()}
    relied_on = ({0, adapter.not_ready, adapter.out_of_memory, adapter.invalid_device,
                  int(hip.hipError_t.hipErrorUnknown), int(hip.hipError_t.hipErrorNoDevice),
                  int(hip.hipError_t.hipErrorInsufficientDriver),
                  int(hip.hipError_t.hipErrorInvalidHandle), adapter.peer_already_enabled}
                 | adapter.capture_codes)
    assert relied_on <= mapped, sorted(relied_on - mapped)


def test_shim_table_is_one_to_one_over_real_cuda_codes():
    cudart = pytest.importorskip("cuda.bindings.runtime")
    rows = _shim_rows()
    cuda_names, hip_names = [c for c, _ in rows], [h for _, h in rows]
    assert len(set(cuda_names)) == len(cuda_names) and len(set(hip_names)) == len(hip_names)
    assert set(hip_names) <= set(_shim_enum("hipError_t"))
    for name in cuda_names:
        assert hasattr(cudart.cudaError_t, name), name
    assert ("cudaErrorNotReady", "hipErrorNotReady") in rows
    assert ("cudaErrorMemoryAllocation", "hipErrorOutOfMemory") in rows


def test_shim_flag_and_enum_values_are_hip_pythons():
    hip = pytest.importorskip("rocm.bindings.hip")
    text = SHIM.read_text()
    flags = dict(re.findall(r"(hip(?:Stream|Event|HostMalloc)\w+) = (0x[0-9a-fA-F]+),", text))
    assert {"hipStreamNonBlocking", "hipEventDisableTiming", "hipHostMallocMapped",
            "hipHostMallocPortable"} <= set(flags)
    for name, value in flags.items():
        assert int(getattr(hip, name)) == int(value, 16), name
    for enum in ("hipMemcpyKind", "hipStreamCaptureMode", "hipStreamCaptureStatus",
                 "hipMemPoolAttr", "hipDeviceAttribute_t"):
        for name, value in _shim_enum(enum).items():
            assert int(getattr(hip, enum)[name]) == value, name
    graph = dict(re.findall(r"(hipGraphInstantiateFlag\w+) = (\d+),", text))
    for name, value in graph.items():
        assert int(hip.hipGraphInstantiateFlags[name]) == int(value), name


def test_shim_defines_every_hip_function_the_backend_calls():
    defined = set(re.findall(r"HIP_API [^(]*?\b(hip\w+)\(", SHIM.read_text()))
    called = _hip_functions_called()
    assert {"hipStreamSynchronize", "hipLaunchHostFunc", "hipGetErrorName",
            "hipDeviceGetName", "hipHostMalloc", "hipGraphLaunch"} <= called
    assert called <= defined, sorted(called - defined)


def test_hip_python_releases_the_gil_in_every_call_the_backend_makes():
    hip = pytest.importorskip("rocm.bindings.hip")
    source = Path(hip.__file__).with_name("hip.pyx")
    if not source.exists():
        pytest.skip("this hip-python ships no hip.pyx")
    text = source.read_text()
    for name in sorted(_hip_functions_called()):
        body = re.search(r"\ndef %s\(.*?(?=\n@cython|\ndef |\Z)" % name, text, re.S)
        assert body and "with nogil:" in body.group(0), name


def _build_shim(tmp_path: Path) -> Path:
    if shutil.which("gcc") is None or not (CUDA_HOME / "include" / "cuda_runtime.h").exists():
        pytest.skip("gcc or the CUDA toolkit headers are missing")
    subprocess.run(["bash", str(SHIM.with_name("build.sh")), str(tmp_path)], check=True,
                   capture_output=True, text=True, env={**os.environ, "CUDA_HOME": str(CUDA_HOME)})
    return tmp_path


def test_shim_compiles_and_hip_python_loads_it(tmp_path):
    pytest.importorskip("rocm.bindings.hip")
    if _cuda_gpu_present():
        pytest.skip("a GPU is present; the GPU suite runs the shim for real")
    libdir = _build_shim(tmp_path)
    proc = run_python("""
        from rocmstreams.backends import hip
        from rocmstreams.errors import BackendUnavailableError
        try:
            hip.load()
        except BackendUnavailableError as exc:
            print("CODE", exc.code, exc.name)
        from rocm.bindings import hip as binding
        from rocmstreams.backends.runtime import RuntimeBackend
        print("RUNTIME", RuntimeBackend(hip._adapter(binding)).versions()["runtime"])
    """, LD_LIBRARY_PATH=f"{libdir}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        ROCM_PATH=str(tmp_path / "no-rocm"))
    assert "CODE 35 hipErrorInsufficientDriver" in proc.stdout, proc.stdout + proc.stderr
    header = (CUDA_HOME / "include" / "cuda_runtime_api.h").read_text()
    version = int(re.search(r"#define CUDART_VERSION\s+(\d+)", header).group(1))
    assert f"RUNTIME {version // 1000}.{version % 1000 // 10}.0" in proc.stdout, proc.stdout


# ---- the pool of idle streams ------------------------------------------------------------------
def _calls(binding, name):
    return [args for called, args in binding.calls if called == name]


def test_a_released_idle_stream_is_reused_by_the_next_stream_with_its_device_and_options():
    be, binding = make_backend()
    first = be.stream_create(True, -1, 0)
    be.stream_destroy(first)
    assert _calls(binding, "StreamDestroy") == []
    assert be.live_handles()["streams"] == 0
    assert be.stream_create(True, -1, 0) == first
    assert len(_calls(binding, "StreamCreateWithPriority")) == 1
    be.stream_destroy(first)
    others = {be.stream_create(False, -1, 0), be.stream_create(True, 0, 0),
              be.stream_create(True, -1, 1)}
    assert first not in others and len(others) == 3
    assert len(_calls(binding, "StreamCreateWithPriority")) == 4


def test_a_stream_still_running_or_failed_when_released_is_destroyed_not_kept():
    be, binding = make_backend()
    for status in (NOT_READY, ILLEGAL_ADDRESS):
        binding.status["StreamQuery"] = status
        handle = be.stream_create(True, 0, 0)
        be.stream_destroy(handle)
        assert _calls(binding, "StreamDestroy")[-1] == (handle,)
        binding.status["StreamQuery"] = OK
        assert be.stream_create(True, 0, 0) != handle


def test_the_pool_keeps_at_most_stream_pool_size_streams_per_key():
    be, binding = make_backend()
    be.stream_pool_size = 3
    handles = [be.stream_create(False, 0, 0) for _ in range(5)]
    for h in handles:
        be.stream_destroy(h)
    assert [args for args in _calls(binding, "StreamDestroy")] == [(handles[3],), (handles[4],)]
    assert sorted(be.stream_create(False, 0, 0) for _ in range(3)) == sorted(handles[:3])
    be.stream_pool_size = 0
    be.stream_destroy(handles[0])
    assert _calls(binding, "StreamDestroy")[-1] == (handles[0],)


def test_the_pools_idle_check_reuses_the_streams_one_binding_object():
    made = []
    be, binding = make_backend(stream_object=lambda handle: made.append(handle) or handle)
    handle = be.stream_create(True, 0, 0)
    be.stream_calls(handle).query()  # as a RocmStream's door does
    be.stream_destroy(handle)
    assert _calls(binding, "StreamQuery") == [(handle,), (handle,)]
    assert _calls(binding, "StreamDestroy") == [] and made == [handle]


def test_a_stream_the_backend_did_not_create_is_destroyed_not_pooled():
    be, binding = make_backend()
    be.stream_destroy(0x5000)
    assert _calls(binding, "StreamDestroy") == [(0x5000,)]
    assert be.stream_create(False, 0, 0) != 0x5000


def test_a_refused_destroy_leaves_the_stream_counted_as_live():
    be, binding = make_backend()
    handle = be.stream_create(False, 0, 0)
    binding.status["StreamQuery"] = NOT_READY  # busy: destroyed, not pooled
    binding.status["StreamDestroy"] = BAD_HANDLE
    with pytest.raises(RocmStreamsError):
        be.stream_destroy(handle)
    assert be.live_handles()["streams"] == 1
    binding.status["StreamDestroy"] = OK
    be.stream_destroy(handle)
    assert be.live_handles()["streams"] == 0


# ---- stream-ordered memory ---------------------------------------------------------------------
def test_pools_allocate_and_free_on_the_stream_with_the_threshold_set_once():
    be, binding = make_backend(pools=True)
    s = be.stream_create(True, 0, 0)
    ptr = be.malloc_async(100, s, 0)
    be.free_async(ptr, 100, s, 0)
    be.malloc_async(100, LEGACY, 0)
    assert _calls(binding, "MallocAsync") == [(100, s), (100, 1)]  # 0 is the legacy stream
    assert _calls(binding, "FreeAsync") == [(ptr, s)]
    assert [a[1:] for a in _calls(binding, "MemPoolSetAttribute")] == [
        ("AttrReleaseThreshold", runtime.KEEP_ALL)]
    assert not _calls(binding, "Malloc")
    be.set_release_threshold(0)
    assert _calls(binding, "MemPoolSetAttribute")[-1][1:] == ("AttrReleaseThreshold", 0)
    assert be.pool_usage(0) == {"reserved_bytes": 4096, "reserved_peak_bytes": 4096}
    be.pool_trim(0)
    assert len(_calls(binding, "MemPoolTrimTo")) == 1


def test_without_pools_a_block_freed_on_a_stream_is_reused_there_only():
    be, binding = make_backend(pools=True)
    binding.status["pools_supported"] = 0
    s, t = be.stream_create(True, 0, 0), be.stream_create(True, 0, 0)
    ptr = be.malloc_async(1000, s, 0)
    be.free_async(ptr, 1000, s, 0)
    assert not _calls(binding, "Free")  # cached, not freed
    assert be.malloc_async(1000, t, 0) != ptr  # another stream: not ordered after the free
    assert be.malloc_async(1000, s, 0) == ptr  # the same stream: after the free in its order
    assert len(_calls(binding, "Malloc")) == 2 and not _calls(binding, "MallocAsync")
    be.free_async(ptr, 1000, s, 0)
    be.pool_trim(0)
    assert _calls(binding, "Free") == [(ptr,)]


def test_a_held_stream_is_destroyed_by_its_last_unhold():
    be, binding = make_backend()
    be.stream_pool_size = 0
    s = be.stream_create(True, 0, 0)
    be.stream_hold(s)
    be.stream_hold(s)
    be.stream_destroy(s)
    be.stream_unhold(s)
    assert not _calls(binding, "StreamDestroy") and be.live_handles()["streams"] == 1
    be.stream_unhold(s)
    assert _calls(binding, "StreamDestroy") == [(s,)] and be.live_handles()["streams"] == 0


def test_the_memory_stream_is_made_once_and_not_counted_as_live():
    be, binding = make_backend()
    first = be.memory_stream(0)
    assert be.memory_stream(0) == first
    assert len(_calls(binding, "StreamCreateWithPriority")) == 1
    assert be.live_handles()["streams"] == 0


# ---- devices -----------------------------------------------------------------------------------
def test_the_memory_stream_of_a_device_is_made_with_that_device_current_then_the_previous():
    be, binding = make_backend()
    be.memory_stream(1)
    assert [n for n, _ in binding.calls if n != "GetDevice"] == [
        "SetDevice", "StreamCreateWithPriority", "SetDevice"]
    assert _calls(binding, "SetDevice") == [(1,), (60443484,)]  # the fake's current device


def test_the_device_count_is_asked_of_the_runtime_once():
    be, binding = make_backend()
    assert [be.get_device_count() for _ in range(3)] == [60443484] * 3
    assert len(_calls(binding, "GetDeviceCount")) == 1


def test_a_failed_device_count_is_asked_again_on_the_next_call():
    be, binding = make_backend()
    binding.status["GetDeviceCount"] = [BAD_DEVICE, OK]
    with pytest.raises(RocmStreamsError, match="could not count the GPUs"):
        be.get_device_count()
    assert be.get_device_count() == 60443484
    assert len(_calls(binding, "GetDeviceCount")) == 2


# ---- peers -------------------------------------------------------------------------------------
def _peer_calls(binding):
    return [(n, a) for n, a in binding.calls if n in ("DeviceCanAccessPeer",
                                                      "DeviceEnablePeerAccess", "SetDevice")]


def test_peer_access_is_asked_and_enabled_once_per_pair_from_its_device():
    be, binding = make_backend()
    assert all(be.peer_access(1, 0) for _ in range(3))
    assert _peer_calls(binding) == [("DeviceCanAccessPeer", (1, 0)), ("SetDevice", (1,)),
                                    ("DeviceEnablePeerAccess", (0, 0)), ("SetDevice", (60443484,))]


def test_peer_access_of_a_device_with_itself_asks_nothing():
    be, binding = make_backend()
    assert be.peer_access(1, 1) is True
    assert _peer_calls(binding) == []


def test_a_pair_that_cannot_reach_each_other_is_not_enabled():
    be, binding = make_backend()
    binding.status["can_access_peer"] = 0
    assert be.peer_access(0, 1) is False
    assert [n for n, _ in _peer_calls(binding)] == ["DeviceCanAccessPeer"]


def test_a_pair_another_library_enabled_counts_as_enabled():
    be, binding = make_backend()
    binding.status["DeviceEnablePeerAccess"] = PEER_ALREADY_ENABLED
    assert be.peer_access(0, 1) is True


def test_a_failed_peer_enable_raises_naming_both_devices():
    be, binding = make_backend()
    binding.status["DeviceEnablePeerAccess"] = BAD_DEVICE
    with pytest.raises(InvalidDeviceError, match="device 0 to device 1"):
        be.peer_access(0, 1)


def test_a_peer_copy_reaches_the_binding_with_both_devices_and_the_stream():
    be, binding = make_backend()
    stream = be.stream_create(True, 0, 0)
    be.stream_calls(stream).memcpy_peer_async(0x10, 1, 0x20, 0, 64)
    assert dict(binding.calls)["MemcpyPeerAsync"] == (0x10, 1, 0x20, 0, 64, stream)
