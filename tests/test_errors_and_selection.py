"""The error hierarchy, backend selection, and an import that touches no GPU."""
import os
import pickle
import subprocess
import sys

import pytest

import rocmstreams as rs


def _run(code, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=300)


def test_errors_carry_backend_code_name_and_message_and_pickle():
    err = rs.OutOfMemoryError("no room", backend="hip", code=2, name="hipErrorOutOfMemory",
                              runtime_message="out of memory")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is rs.OutOfMemoryError
    assert (back.backend, back.code, back.name, back.runtime_message) == (
        "hip", 2, "hipErrorOutOfMemory", "out of memory")
    assert "hipErrorOutOfMemory (2)" in str(back) and "no room" in str(back)


@pytest.mark.parametrize("cls", [rs.BackendUnavailableError, rs.InvalidDeviceError,
                                 rs.StreamCreationError, rs.StreamClosedError,
                                 rs.SynchronizeError, rs.OutOfMemoryError, rs.EventError,
                                 rs.CallbackError, rs.CaptureError])
def test_every_error_derives_from_the_one_base(cls):
    assert issubclass(cls, rs.RocmStreamsError)


def test_importing_rocmstreams_selects_no_backend_and_loads_no_gpu_module():
    out = _run("import sys, rocmstreams, rocmstreams.backends as b; "
               "print(b._active is None, 'numba.cuda' in sys.modules, "
               "'cuda.bindings.runtime' in sys.modules, 'rocm.bindings.hip' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False", "False"]


def test_an_unknown_backend_name_is_refused_naming_the_choices():
    out = _run("import rocmstreams as rs; rs.backend()", ROCMSTREAMS_BACKEND="opencl")
    assert out.returncode != 0
    assert "BackendUnavailableError" in out.stderr and "cuda, hip, cpu" in out.stderr


def test_the_process_backend_matches_the_environment(backend):
    wanted = os.environ.get("ROCMSTREAMS_BACKEND")
    if wanted:
        assert backend.name == wanted
    assert backend.name in rs.BACKENDS
