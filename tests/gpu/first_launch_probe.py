"""Where does a kernel's first launch wait for the device? (issue 12, point 4; a GPU probe.)

With another stream held by a latch, each phase of getting a new kernel running is timed on its
own: numba's compile to PTX, loading the module (bind), the first launch of a compiled and loaded
kernel, ``rs.prepare`` as a whole, a plain first launch, and, for comparison, a device free and a
device allocation. A phase that waits for the device shows as a latch that timed out (the held
stream became idle by itself) and a time near the latch's. Printed, not asserted.

Usage: ROCMSTREAMS_BACKEND=cuda python3 tests/gpu/first_launch_probe.py
"""
from __future__ import annotations

import gc
import itertools
import time

import numpy as np

import rocmstreams as rs
from rocmstreams.kernels import Latch, cuda

_names = itertools.count()


def new_kernel():
    """A kernel no one has compiled: its source differs from every other one's."""
    k = next(_names)
    ns = {"cuda": cuda}
    exec(f"def add_{k}(a):\n    i = cuda.grid(1)\n    if i < a.size:\n        a[i] += {k}\n", ns)
    return cuda.jit(ns[f"add_{k}"])


def phase(name, setup, run, held):
    """``setup()`` unlatched (its result goes to ``run``), then ``run`` while ``held`` is held."""
    try:
        arg = setup()
    except Exception as exc:  # noqa: BLE001 - a probe reports and goes on
        print(f"{name:44s} not run: {type(exc).__name__}: {exc}"[:160])
        return
    gate = Latch()
    gate.hold(held)
    time.sleep(0.05)
    t = time.perf_counter()
    try:
        run(arg)
        what = ""
    except Exception as exc:  # noqa: BLE001 - a probe reports and goes on
        what = f" ({type(exc).__name__}: {exc})"[:160]
    dt = time.perf_counter() - t
    busy = not held.query()
    gate.release()
    held.synchronize()
    print(f"{name:44s} {dt * 1e3:9.1f} ms  held stream busy after: {busy!s:5s} "
          f"latch timed out: {gate.timed_out}{what}")


def main() -> None:
    print("backend", rs.backend().name, rs.backend().devices[0].name)
    held, other = rs.RocmStream(non_blocking=True), rs.RocmStream(non_blocking=True)
    a = rs.to_device(np.zeros(1024, np.float32), stream=other)
    other.synchronize()
    gate = Latch()  # the latch kernel itself, loaded before any phase
    gate.hold(held)
    gate.release()
    held.synchronize()
    import numba
    sig = (numba.types.Array(numba.float32, 1, "C"),)

    def compiled():
        k = new_kernel()
        k.compile(sig)
        return k

    phase("numba compile (PTX), no load", new_kernel, lambda k: k.compile(sig), held)
    phase("load the compiled module (bind)", compiled,
          lambda k: [ov.bind() for ov in k.overloads.values()], held)

    def loaded():
        k = compiled()
        for ov in k.overloads.values():
            ov.bind()
        return k

    phase("first launch, compiled and loaded", loaded, lambda k: k[4, 256, other](a), held)
    phase("rs.prepare(kernel, a)", new_kernel, lambda k: rs.prepare(k, a), held)
    phase("first launch after rs.prepare", lambda: (lambda k: (rs.prepare(k, a), k)[1])(
        new_kernel()), lambda k: k[4, 256, other](a), held)
    phase("plain first launch (compile + load + launch)", new_kernel,
          lambda k: k[4, 256, other](a), held)
    gc.disable()
    phase("plain first launch, gc disabled", new_kernel, lambda k: k[4, 256, other](a), held)
    gc.enable()
    phase("rs.empty(1 MiB)", lambda: None, lambda _: rs.empty(1 << 18, np.float32), held)

    def drop(_):
        b = rs.empty(1 << 18, np.float32, stream=other)
        del b
        gc.collect()
        rs.default_stream()  # the deferred release queue drains on later calls
        rs.empty(16, np.float32)

    phase("drop a device array (its free)", lambda: None, drop, held)
    other.synchronize()
    held.close()
    other.close()


if __name__ == "__main__":
    main()
