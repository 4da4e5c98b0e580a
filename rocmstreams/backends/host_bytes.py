"""Host memory at an address as a numpy array of bytes, without a copy.

numpy takes it through the array interface of a small holder, which is the array's ``base``: a
ctypes array (``(ctypes.c_byte * n).from_address(ptr)``) would make a new ctypes type for every
length, about 6 us each, paid by every page-locked allocation and every cpu-backend kernel
argument of a new size.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["HostBytes", "host_bytes"]


class HostBytes:
    """The base of a :func:`host_bytes` array: the memory's array interface, and ``owner``
    (kept alive while any array views the memory; ``rocmstreams.memory`` finds a page-locked
    array's lease there as ``_rocmstreams_block``)."""

    __slots__ = ("__array_interface__", "_rocmstreams_block")

    def __init__(self, address: int, nbytes: int, owner: Any = None) -> None:
        self.__array_interface__ = {"data": (address, False), "shape": (nbytes,),
                                    "typestr": "|u1", "version": 3}
        self._rocmstreams_block = owner


def host_bytes(address: int, nbytes: int, owner: Any = None) -> np.ndarray:
    """A writable uint8 array over ``nbytes`` at ``address`` (not 0), keeping ``owner``
    alive."""
    return np.asarray(HostBytes(address, nbytes, owner))
