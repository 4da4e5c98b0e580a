"""The one configuration: every tunable, validated when set.

``rocmstreams.config()`` returns the current :class:`Config` (frozen); ``rocmstreams.configure(
**changes)`` checks and applies changes and returns a context manager that restores the previous
configuration on exit, so ``with rs.configure(staging_chunk_bytes=1 << 16): ...`` scopes them.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .. import backends
from ..backends import native
from .callbacks import refuse, running

__all__ = ["Config", "config", "configure"]


@dataclass(frozen=True)
class Config:
    """The tunables of rocmstreams.

    Attributes
    ----------
    stream_pool_size : int
        Idle closed streams kept per (device, non_blocking, priority) on GPU backends, reused by
        the next RocmStream with those options (0: none). Default 16.
    staging_min_bytes : int
        Copies from pageable host memory of at least this many bytes are staged through reused
        page-locked buffers; smaller ones go to the runtime as they are. Default 1 MiB.
    staging_chunk_bytes : int
        Bytes per staged chunk, and the size of each staging buffer. Default 32 MiB.
    staging_buffers : int
        Staging buffers one copy cycles through (how far the host may run ahead). Default 4.
    staging_threads : int
        Host threads (the caller's included) sharing each chunk's host copy. Default
        ``min(8, os.cpu_count())``.
    staging_min_slice_bytes : int
        A chunk is split across threads only in slices of at least this many bytes.
    stage_device_to_host : bool
        Stage device-to-host copies into pageable memory too (default False; see
        benchmarks/README.md).
    pool_release_threshold : int or None
        Bytes each device's pool may reserve (in use included, as the runtimes count it)
        before ``synchronize()`` of a stream or an event gives its unused memory back, down to
        this; None keeps all freed memory cached (the default), 0 returns everything the
        device has finished with. A device without runtime pools keeps its cache until
        ``rocmstreams.empty_cache()`` (its free waits for the device), which returns the cache
        at once anywhere.
    cpu_devices : int or None
        How many devices the cpu backend simulates (each with its own default streams, memory
        pool and current-device rules), so that multi-device code runs, and is checked, without
        GPUs. None (the default) reads ``ROCMSTREAMS_CPU_DEVICES`` at selection, else 1. GPU
        backends report the devices they have and ignore it.
    native_calls : bool
        Make the hot runtime calls (stream query, synchronize, event record, prepared kernel
        launches) from the compiled layer where it was built (default True; False makes every
        call through the Python binding). ``ROCMSTREAMS_NATIVE_CALLS=0`` in the environment at
        import leaves the compiled layer out of the process altogether (the default is then
        False, and True cannot bring it back). ``rocmstreams.backend().native_calls`` says
        whether they are in use.
    """

    stream_pool_size: int = 16
    staging_min_bytes: int = 1 << 20
    staging_chunk_bytes: int = 32 << 20
    staging_buffers: int = 4
    staging_threads: int = min(8, os.cpu_count() or 1)
    staging_min_slice_bytes: int = 1 << 20
    stage_device_to_host: bool = False
    pool_release_threshold: int | None = None
    cpu_devices: int | None = None
    native_calls: bool = field(default_factory=native.allowed_by_environment)

    def __post_init__(self) -> None:
        minimum = {"stream_pool_size": 0, "staging_min_bytes": 0, "staging_chunk_bytes": 1,
                   "staging_buffers": 1, "staging_threads": 1, "staging_min_slice_bytes": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if value < low:
                raise ValueError(f"{name}={value} is out of range: it must be at least {low}")
        threshold = self.pool_release_threshold
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int):
                raise TypeError("pool_release_threshold must be an int number of bytes or None, "
                                f"got {type(threshold).__name__} {threshold!r}")
            if not 0 <= threshold < 1 << 64:
                raise ValueError(f"pool_release_threshold={threshold} is out of range: it must "
                                 "be 0 or more bytes (below 2**64), or None to keep everything")
        if self.cpu_devices is not None:
            _check_cpu_devices(self.cpu_devices, "cpu_devices")
        for name in ("stage_device_to_host", "native_calls"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")


def _check_cpu_devices(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int number of devices, got "
                        f"{type(value).__name__} {value!r}")
    if not 1 <= value <= 64:
        raise ValueError(f"{name}={value} is out of range: the cpu backend simulates 1 to 64 "
                         "devices")
    return value


def cpu_device_count(cfg: "Config") -> int:
    """The devices the cpu backend simulates: ``cfg.cpu_devices``, else
    ``ROCMSTREAMS_CPU_DEVICES``, else 1."""
    if cfg.cpu_devices is not None:
        return cfg.cpu_devices
    raw = os.environ.get("ROCMSTREAMS_CPU_DEVICES", "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"ROCMSTREAMS_CPU_DEVICES={raw!r} is not a number of devices; set it "
                         "to an int from 1 to 64, or unset it") from None
    return _check_cpu_devices(value, "ROCMSTREAMS_CPU_DEVICES")


_current = Config()
_lock = threading.Lock()


def config() -> Config:
    """The current configuration."""
    return _current


class _Restore:
    """What :func:`configure` returns: ``with`` it to undo the change at the block's end."""

    __slots__ = ("previous",)

    def __init__(self, previous: Config) -> None:
        self.previous = previous

    def __enter__(self) -> Config:
        return _current

    def __exit__(self, *exc_info: object) -> None:
        _apply(self.previous)


def configure(**changes: Any) -> _Restore:
    """Change tunables (see :class:`Config` for each); checked before anything changes.

    Raises
    ------
    TypeError, ValueError
        An unknown name or a bad value; the configuration is unchanged.
    """
    if running:
        refuse("rocmstreams.configure()")
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"unknown setting {', '.join(unknown)}; the settings are "
                        f"{', '.join(sorted(known))}")
    with _lock:
        previous = _current
        _apply(dataclasses.replace(previous, **changes))
    return _Restore(previous)


#: ``pool_release_threshold`` of the current configuration, read by the synchronize doors.
release_threshold: int | None = None


def trim_pool(device: int) -> None:
    """After a synchronize (and the runtime's own, which lets the runtime count the frees
    before it as passed), with a release threshold set: give the unused memory of
    ``device``'s pool back until it reserves no more than the threshold, as the runtimes'
    pools do inside their own synchronize calls (which rocmstreams leaves out for a stream
    already idle)."""
    threshold = release_threshold
    if threshold is not None:
        backends.active().pool_trim_to(device, threshold)


def _apply(new: Config) -> None:
    global _current, release_threshold
    _current = new
    release_threshold = new.pool_release_threshold
    chosen = backends.selected()
    if chosen is not None:
        _push(chosen)


def _push(backend: backends.Backend) -> None:
    backend.stream_pool_size = _current.stream_pool_size
    backend.native_calls = _current.native_calls
    threshold = _current.pool_release_threshold
    keep = (1 << 64) - 1 if threshold is None else threshold
    if getattr(backend, "release_threshold", None) != keep:
        backend.set_release_threshold(keep)
    simulate = getattr(backend, "simulate_devices", None)  # the cpu backend's devices
    if simulate is not None:
        simulate(cpu_device_count(_current))


backends.on_select(_push)
