"""One Dask worker per device, each task a rocmstreams pipeline on its worker's device.

As dask-cuda arranges GPUs (one worker per GPU, each pinned to its own), a worker plugin pins
each worker of a ``LocalCluster`` to one device: worker ``i`` gets device ``i % device_count``.
A task asks its worker's device (:func:`worker_device`) and runs its pipeline there on streams of
its own: the input is copied in on a copy stream, a kernel on a compute stream waits for that
copy through an event, and the result comes back to the host. The client gathers the results
and checks each against numpy.

Under dask-cuda's ``LocalCUDACluster`` instead, each worker sees its GPU as device 0
(``CUDA_VISIBLE_DEVICES``); :func:`worker_device` then returns 0 on every worker, and the tasks
run unchanged.

Run: ``python examples/dask_devices.py [--tasks 8] [--size 1000000] [--threads]``. On the cpu
backend two devices are simulated (``ROCMSTREAMS_CPU_DEVICES=2``), so the same runs in CI.
Needs the ``dask`` extra (``pip install rocmstreams[dask]``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np
from distributed import WorkerPlugin

#: The worker attribute the plugin pins the device on.
_ATTRIBUTE = "rocmstreams_device"


class PinDevice(WorkerPlugin):
    """A Dask worker plugin: worker ``i`` of the cluster gets device ``i % count``."""

    name = "rocmstreams-pin-device"

    def __init__(self, count: int) -> None:
        self.count = count

    def setup(self, worker: Any) -> None:
        try:
            index = int(worker.name)  # LocalCluster names its workers 0, 1, ...
        except (TypeError, ValueError):
            index = 0
        setattr(worker, _ATTRIBUTE, index % self.count)


def worker_device() -> int:
    """The device of the worker running this task (0 outside a pinned worker)."""
    from distributed import get_worker
    try:
        return int(getattr(get_worker(), _ATTRIBUTE, 0))
    except ValueError:  # not inside a worker
        return 0


def expected(seed: int, size: int) -> np.ndarray:
    """What :func:`pipeline` computes, by numpy."""
    x = np.random.default_rng(seed).standard_normal(size).astype(np.float32)
    return np.float32(2) * x + x


def pipeline(seed: int, size: int) -> dict[str, Any]:
    """``2 * x + x`` for ``x`` drawn from ``seed``, on this worker's device, on its own streams."""
    import rocmstreams as rs
    from rocmstreams.kernels import saxpy

    device = worker_device()
    x = np.random.default_rng(seed).standard_normal(size).astype(np.float32)
    host = rs.pinned_empty(size, np.float32)
    host[:] = x
    with rs.RocmStream(non_blocking=True, device=device) as copies, \
            rs.RocmStream(non_blocking=True, device=device) as compute:
        a = rs.empty(size, np.float32, stream=copies)
        rs.copy_async(a, host, stream=copies)
        compute.wait(copies.record())  # the kernel starts once the input is there
        out = rs.empty(size, np.float32, stream=compute)
        saxpy[max(1, min(1024, -(-size // 256))), 256, compute](out, np.float32(2), a, a)
        result = out.copy_to_host(stream=compute)  # pageable: returns once it is there
        copies.wait(compute.record())  # `a` is dropped on its own stream after the kernel
    return {"seed": seed, "device": device, "stream_devices": (copies.device, compute.device),
            "result": result}


def run(tasks: int = 8, size: int = 100_000, processes: bool = False,
        devices: int | None = None) -> list[dict[str, Any]]:
    """Run ``tasks`` pipelines over one worker per device; each result checked against numpy
    (AssertionError otherwise). Returns the results."""
    import cloudpickle
    from distributed import Client, LocalCluster

    import rocmstreams as rs
    if __name__ != "__main__":  # imported (as by the test): send the tasks by value
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    count = devices or rs.device_count()
    env = {"ROCMSTREAMS_CPU_DEVICES": str(count)} if rs.backend().name == "cpu" else {}
    if processes:
        env.update({k: v for k, v in os.environ.items() if k.startswith("ROCMSTREAMS_")})
    extra = {"env": env} if processes else {}  # threads share this process's configuration
    with LocalCluster(n_workers=count, threads_per_worker=1, processes=processes,
                      dashboard_address=None, **extra) as cluster, Client(cluster) as client:
        client.register_plugin(PinDevice(count))
        futures = client.map(pipeline, range(tasks), [size] * tasks, pure=False)
        results = client.gather(futures)
    for r in results:
        want = expected(r["seed"], size)
        np.testing.assert_allclose(r["result"], want, rtol=1e-6, atol=1e-6)
        assert r["stream_devices"] == (r["device"], r["device"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--threads", action="store_true",
                        help="workers as threads of this process (default: processes)")
    args = parser.parse_args(argv)
    import rocmstreams as rs
    if rs.backend().name == "cpu" and rs.device_count() < 2:
        rs.configure(cpu_devices=2)
    results = run(args.tasks, args.size, processes=not args.threads)
    used = sorted({r["device"] for r in results})
    print(f"{len(results)} pipelines of {args.size} elements on devices {used} "
          f"({rs.backend().name}): all match numpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
