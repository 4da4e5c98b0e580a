"""The compiled hot calls (rocmstreams.backends.native_calls) over C function pointers that stand
in for the runtime: ctypes callbacks that record what arrives, and libc's usleep for a call that
blocks. Needs no GPU; skipped where the extension was not built (no C compiler or headers)."""
from __future__ import annotations

import ctypes
import sys
import threading
import time

import pytest

from rocmstreams.backends import native

pytestmark = pytest.mark.skipif(not native.built(), reason="the compiled layer is not built "
                                "here (pip install -e . with a C compiler and Python headers)")

StreamFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
PairFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
LaunchFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, *[ctypes.c_uint] * 7,
                            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


def address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


@pytest.fixture
def compiled():
    from rocmstreams.backends import native_calls
    native_calls.set_enabled(True)
    yield native_calls
    native_calls.set_enabled(True)


class Recorder:
    """A C function that records its arguments and returns ``status``."""

    def __init__(self, kind, status: int = 0) -> None:
        self.status, self.calls = status, []
        self.fn = kind(self._call)

    def _call(self, *args):
        self.calls.append(args)
        return self.status

    @property
    def address(self) -> int:
        return address(self.fn)


@pytest.mark.parametrize("handle", [0x1, 0x7F00DEAD0000, 0])
@pytest.mark.parametrize("status", [0, 600, 700, 201])
def test_handle_call_passes_its_handle_and_returns_the_status(compiled, handle, status):
    fake = Recorder(StreamFn, status)
    call = compiled.HandleCall(fake.address, handle)
    assert call() == status and call() == status
    assert fake.calls == [(handle or None,)] * 2  # ctypes reads a NULL c_void_p as None


def test_handle_pair_call_passes_the_argument_first_and_the_bound_handle_second(compiled):
    fake = Recorder(PairFn, 400)
    record = compiled.HandlePairCall(fake.address, 0x5000)
    assert record(0x2000) == 400
    assert fake.calls == [(0x2000, 0x5000)]


def test_kernel_launch_passes_every_argument_in_cu_launch_kernel_order(compiled):
    fake = Recorder(LaunchFn, 0)
    launch = compiled.KernelLaunch(fake.address, 0xF00, 0xA000, 0xB000)
    assert launch(7, 2, 1, 256, 1, 1, 1024, 0x5000) == 0
    assert fake.calls == [(0xF00, 7, 2, 1, 256, 1, 1, 1024, 0x5000, 0xA000, 0xB000)]


def test_kernel_launch_takes_index_ints_and_a_null_params_or_extra(compiled):
    np = pytest.importorskip("numpy")
    fake = Recorder(LaunchFn, 0)
    launch = compiled.KernelLaunch(fake.address, 0xF00, 0, 0)
    launch(np.int64(3), 1, 1, 32, 1, 1, 0, np.uint64(1))
    assert fake.calls == [(0xF00, 3, 1, 1, 32, 1, 1, 0, 1, None, None)]


@pytest.mark.parametrize("bad", [-1, 1 << 32, 2.0, "1"])
def test_kernel_launch_refuses_a_value_out_of_range_without_calling(compiled, bad):
    fake = Recorder(LaunchFn, 0)
    launch = compiled.KernelLaunch(fake.address, 0xF00, 0, 0)
    with pytest.raises((OverflowError, TypeError)):
        launch(bad, 1, 1, 32, 1, 1, 0, 0)
    assert fake.calls == []


def test_calls_with_the_wrong_arguments_raise_type_error(compiled):
    stream = compiled.HandleCall(Recorder(StreamFn).address, 1)
    pair = compiled.HandlePairCall(Recorder(PairFn).address, 1)
    launch = compiled.KernelLaunch(Recorder(LaunchFn).address, 1, 0, 0)
    for call in (lambda: stream(1), lambda: pair(), lambda: pair(1, 2),
                 lambda: pair(first=1), lambda: launch(1, 1, 1, 1, 1, 1, 0)):
        with pytest.raises(TypeError):
            call()


def test_a_zero_function_address_is_refused(compiled):
    with pytest.raises(ValueError, match="address is 0"):
        compiled.HandleCall(0, 1)
    with pytest.raises(ValueError, match="address is 0"):
        compiled.KernelLaunch(0, 1, 0, 0)


def test_turned_off_every_call_returns_not_called_without_calling(compiled):
    stream, pair, launch = Recorder(StreamFn), Recorder(PairFn), Recorder(LaunchFn)
    calls = (lambda: compiled.HandleCall(stream.address, 1)(),
             lambda: compiled.HandlePairCall(pair.address, 1)(2),
             lambda: compiled.KernelLaunch(launch.address, 1, 0, 0)(1, 1, 1, 1, 1, 1, 0, 0))
    native.set_enabled(False)
    assert not native.enabled() and not compiled.enabled()
    assert [call() for call in calls] == [compiled.NOT_CALLED] * 3
    assert stream.calls == pair.calls == launch.calls == []
    native.set_enabled(True)
    assert [call() for call in calls] == [0, 0, 0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libc's usleep")
def test_a_blocking_call_releases_the_gil():
    """usleep(handle) stands in for a synchronize: while it blocks in C, another Python thread
    runs Python code (it cannot while the caller holds the GIL)."""
    from rocmstreams.backends import native_calls
    usleep = address(ctypes.CDLL(None).usleep)
    seen: list[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            seen.append(time.perf_counter())
            time.sleep(0.002)

    ticker = threading.Thread(target=tick)
    ticker.start()
    while not seen:
        time.sleep(0.001)
    blocking = native_calls.HandleCall(usleep, 300_000)  # 300 ms
    t0 = time.perf_counter()
    assert blocking() == 0
    t1 = time.perf_counter()
    stop.set()
    ticker.join()
    assert t1 - t0 >= 0.29
    inside = [t for t in seen if t0 + 0.05 < t < t1 - 0.05]
    assert len(inside) >= 10, f"the other thread ran {len(inside)} times in the 300 ms call"


def test_the_stub_names_what_the_extension_defines(compiled):
    from pathlib import Path
    stub = Path(native.__file__).with_name("native_calls.pyi").read_text()
    for name in ("HandleCall", "HandlePairCall", "KernelLaunch", "set_enabled", "enabled",
                 "NOT_CALLED"):
        assert hasattr(compiled, name) and name in stub, name
