"""Copies between two devices: rocmstreams' peer copies beside the raw ``cudaMemcpyPeerAsync``.

Rows, each the best of ``--repeat`` (host ``time.perf_counter`` from the call to the end of a
synchronize of the stream), in GB/s of the bytes copied:

- rocmstreams ``copy_async(dst_on_1, src_on_0, stream=s)`` with ``s`` on the destination device
  and on the source device, and both directions (direct where the devices reach each other: peer
  access enabled once per pair);
- rocmstreams staged through page-locked host buffers (the path taken where the devices cannot
  reach each other, forced here so it is measured beside the link);
- raw ``cudaMemcpyPeerAsync`` from ``cuda.bindings`` on a stream of the destination device, on
  the same memory (the link's ceiling through the runtime); cuda backend only.

Every copy's result is checked against the source. With fewer than two devices every row says
so (a ``missing`` row with the reason). On the cpu backend the two devices are simulated
(``configure(cpu_devices=2)``): the rows check the code, their GB/s mean nothing.

Usage: ``python benchmarks/peer_copies.py [--size-mib 256] [--repeat 5] [--json PATH]
[--smoke]``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Callable, Iterator

import numpy as np

import _common


@contextlib.contextmanager
def _staged() -> Iterator[None]:
    """Take the host-staged path, as for devices that cannot reach each other."""
    from rocmstreams.backends import active
    be = active()
    original = be.peer_access
    be.peer_access = lambda device, peer: device == peer  # type: ignore[method-assign]
    try:
        yield
    finally:
        be.peer_access = original  # type: ignore[method-assign]


def _measure(copy: Callable[[], None], check: Callable[[], bool], nbytes: int,
             repeat: int) -> dict[str, Any]:
    copy()  # warm: peer access enabled, buffers and streams made
    times = _common.time_call(copy, repeat)
    found = _common.summary(times)
    return {**found, "gbps": nbytes / (found["best_ms"] / 1e3) / 1e9, "verified": check()}


def ours(nbytes: int, repeat: int) -> list[dict[str, Any]]:
    import rocmstreams as rs
    rows = []
    x = np.random.default_rng().integers(0, 255, nbytes, dtype=np.uint8)
    src = {0: rs.to_device(x, device=0), 1: rs.to_device(x, device=1)}
    for d in (0, 1):
        rs.default_stream(device=d).synchronize()
    streams = {d: rs.RocmStream(non_blocking=True, device=d) for d in (0, 1)}
    dst = {d: rs.empty(nbytes, np.uint8, stream=streams[d]) for d in (0, 1)}
    cases = [("0 -> 1, stream on 1", 0, 1, 1, False), ("0 -> 1, stream on 0", 0, 1, 0, False),
             ("1 -> 0, stream on 0", 1, 0, 0, False), ("0 -> 1 staged, stream on 1", 0, 1, 1,
                                                        True)]
    for case, a, b, on, staged in _common.progress(cases, f"peer copies, best of {repeat}"):
        s = streams[on]

        def copy(a: int = a, b: int = b, s: Any = s) -> None:
            rs.copy_async(dst[b], src[a], stream=s)
            s.synchronize()

        def check(b: int = b) -> bool:
            return bool(np.array_equal(dst[b].copy_to_host(stream=streams[b]), x))

        rs.copy_async(dst[b], np.zeros(nbytes, np.uint8), stream=streams[b])
        streams[b].synchronize()
        s.wait(streams[b])
        with _staged() if staged else contextlib.nullcontext():
            rows.append({"library": "rocmstreams", "case": case,
                         **_measure(copy, check, nbytes, repeat)})
    for s in streams.values():
        s.synchronize()
        s.close()
    return rows


def raw(nbytes: int, repeat: int, backend: str) -> dict[str, Any]:
    case = "0 -> 1, stream on 1"
    if backend != "cuda":
        return _common.missing_row("cudaMemcpyPeerAsync", f"needs the cuda backend (this is "
                                   f"{backend})", case=case)
    cudart, why = _common.import_peer("cuda.bindings.runtime")
    if cudart is None:
        return _common.missing_row("cudaMemcpyPeerAsync", str(why), case=case)
    import rocmstreams as rs
    x = np.random.default_rng().integers(0, 255, nbytes, dtype=np.uint8)
    src = rs.to_device(x, device=0)
    rs.default_stream(device=0).synchronize()
    holder = rs.RocmStream(non_blocking=True, device=1)
    dst = rs.empty(nbytes, np.uint8, stream=holder)
    holder.synchronize()
    cudart.cudaSetDevice(1)  # the raw stream belongs to the destination device
    status, stream = cudart.cudaStreamCreate()
    if int(status) != 0:
        return _common.missing_row("cudaMemcpyPeerAsync", f"cudaStreamCreate failed: {status}",
                                   case=case)

    def copy() -> None:
        cudart.cudaMemcpyPeerAsync(dst.ptr, 1, src.ptr, 0, nbytes, stream)
        cudart.cudaStreamSynchronize(stream)

    def check() -> bool:
        return bool(np.array_equal(dst.copy_to_host(stream=holder), x))

    try:
        return {"library": "cudaMemcpyPeerAsync", "case": case,
                **_measure(copy, check, nbytes, repeat)}
    finally:
        cudart.cudaStreamDestroy(stream)
        cudart.cudaSetDevice(0)
        holder.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=float, default=None,
                        help="MiB per copy (default 256; 8 on cpu; 1 smoke)")
    parser.add_argument("--repeat", type=int, default=None, help="default 5; 2 smoke")
    parser.add_argument("--json", default=None, help="write the report here")
    parser.add_argument("--smoke", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    import rocmstreams as rs
    on_cpu = rs.backend().name == "cpu"
    if on_cpu:
        rs.configure(cpu_devices=max(2, rs.device_count()))
    env = _common.environment()
    nbytes = int((args.size_mib or (1 if args.smoke else 8 if on_cpu else 256)) * (1 << 20))
    repeat = args.repeat or (2 if args.smoke else 5)
    count = rs.device_count()
    if count < 2:
        reason = f"needs two devices; the {env['backend']} backend has {count}"
        rows = [_common.missing_row("rocmstreams", reason, case="peer copies"),
                _common.missing_row("cudaMemcpyPeerAsync", reason, case="0 -> 1, stream on 1")]
    else:
        rows = ours(nbytes, repeat) + [raw(nbytes, repeat, env["backend"])]
    ok = all(r.get("verified") is True for r in rows if "missing" not in r)
    title = (f"peer copies, {nbytes / (1 << 20):g} MiB, best of {repeat} ({env['backend']}, "
             f"{count} devices{', simulated: GB/s mean nothing' if on_cpu else ''})")
    _common.print_table(title, [("library", "library", ""), ("case", "case", ""),
                                ("gbps", "GB/s", ".2f"), ("best_ms", "best ms", ".3f"),
                                ("verified", "exact", "")], rows)
    if args.json:
        _common.write_json(args.json, {"benchmark": "peer_copies", "environment": env,
                                       "devices": count, "nbytes": nbytes, "rows": rows,
                                       "ok": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
