"""What :func:`rocmstreams.backend` tells: a read-only description of the selected backend."""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from .. import backends
from .device import checked_priority_range

__all__ = ["BackendInfo", "DeviceInfo", "backend"]


@dataclass(frozen=True)
class DeviceInfo:
    """One device: its ordinal, name and stream priority range ``(least, greatest)``."""

    ordinal: int
    name: str
    priority_range: tuple[int, int]


@dataclass(frozen=True)
class BackendInfo:
    """The selected backend: its name, devices and versions (read-only).

    The runtime itself stays inside rocmstreams; :meth:`live_handles` reads its bookkeeping.
    """

    name: str
    devices: tuple[DeviceInfo, ...]
    versions: Mapping[str, str]

    def device_name(self, ordinal: int) -> str:
        """The name of device ``ordinal``."""
        return self.devices[ordinal].name

    def live_handles(self) -> dict[str, int]:
        """How many streams (in use), events and allocations rocmstreams holds now, and how
        many idle streams it keeps pooled; for leak checks."""
        return backends.active().live_handles()

    @property
    def native_calls(self) -> bool:
        """Whether the hot runtime calls (stream query, synchronize, event record, prepared
        kernel launches) are made from the compiled layer now: built at install, not turned
        off (``rocmstreams.configure(native_calls=False)``), on a GPU backend."""
        return backends.active().native_calls


_info: BackendInfo | None = None


def backend() -> BackendInfo:
    """The backend this process uses (selected on first call), described."""
    global _info
    be = backends.active()
    if _info is None or _info.name != be.name or len(_info.devices) != be.get_device_count():
        devices = []
        for ordinal in range(be.get_device_count()):
            devices.append(DeviceInfo(ordinal, be.device_name(ordinal),
                                      checked_priority_range(ordinal)))
        _info = BackendInfo(be.name, tuple(devices), MappingProxyType(dict(be.versions())))
    return _info
