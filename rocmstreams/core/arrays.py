"""The one reader of array interfaces: numpy arrays on the host, the CUDA Array Interface for
device memory (rocmstreams, Numba, CuPy and PyTorch arrays), and the size and dtype rules every
allocation and copy obeys."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ArrayInfo", "describe", "c_strides", "device_dtype", "byte_size", "shape_of"]

#: No allocation or copy may exceed this (what a signed 64-bit size holds).
MAX_BYTES = (1 << 63) - 1


@dataclass(frozen=True)
class ArrayInfo:
    """What an array endpoint is: where its memory lies and how it is laid out."""

    kind: str  # "host" or "device"
    shape: tuple[int, ...]
    dtype: np.dtype
    address: int
    strides: tuple[int, ...]  # in bytes
    contiguous: bool  # C order, no gaps
    readonly: bool
    stream: int | None = None  # the CAI's stream, if it names one

    @property
    def nbytes(self) -> int:
        return byte_size(self.shape, self.dtype)

    @property
    def size(self) -> int:
        n = 1
        for extent in self.shape:
            n *= extent
        return n


def c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The byte strides of a C-contiguous array."""
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def device_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy dtype a device can hold; raises TypeError for object dtypes (and
    structured dtypes with object fields), whose items are host pointers."""
    try:
        found = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{dtype!r} is not a dtype: {exc}") from None
    if found.hasobject:
        raise TypeError(f"dtype {found} holds Python objects, which device memory cannot hold; "
                        "convert the data to a numeric dtype first (e.g. arr.astype(np.float64))")
    return found


def shape_of(shape: Any) -> tuple[int, ...]:
    """A shape (an int or a sequence of ints) as a tuple of non-negative Python ints."""
    if type(shape) is int and shape >= 0:  # the common case
        return (shape,)
    if isinstance(shape, (bool, np.bool_)):
        raise TypeError(f"a shape is an int or a tuple of ints, got {shape!r}")
    try:
        return (_extent(shape, shape),)
    except TypeError:
        pass
    try:
        items = tuple(shape)
    except TypeError:
        raise TypeError(f"a shape is an int or a tuple of ints, got {type(shape).__name__} "
                        f"{shape!r}") from None
    return tuple(_extent(n, shape) for n in items)


def _extent(n: Any, shape: Any) -> int:
    if isinstance(n, (bool, np.bool_)):
        raise TypeError(f"a shape holds ints, got {n!r} in {shape!r}")
    try:
        value = operator.index(n)
    except TypeError:
        if not isinstance(shape, (list, tuple)):
            raise
        raise TypeError(f"a shape holds ints, got {type(n).__name__} {n!r} in {shape!r}") \
            from None
    if value < 0:
        raise ValueError(f"a shape holds non-negative ints, got {value} in {shape!r}")
    return value


def byte_size(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype``, in Python ints; refuses what cannot exist."""
    n = dtype.itemsize
    for extent in shape:
        n *= extent
    if n > MAX_BYTES:
        raise ValueError(f"an array of shape {shape} and dtype {dtype} would need {n} bytes, "
                         f"more than any device can address (at most {MAX_BYTES}); allocate "
                         "less")
    return n


def describe(obj: Any) -> ArrayInfo:
    """The :class:`ArrayInfo` of a numpy array (host) or a CUDA-Array-Interface object
    (device); TypeError for anything else or for a dtype a device cannot hold."""
    if isinstance(obj, np.ndarray):
        dtype = obj.dtype
        if dtype.hasobject:
            device_dtype(dtype)
        return ArrayInfo("host", obj.shape, dtype, obj.ctypes.data, obj.strides,
                         obj.flags.c_contiguous, not obj.flags.writeable)
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is None:
        if type(obj).__module__.startswith("numba.cuda.simulator"):
            raise TypeError(
                f"a {type(obj).__name__} is a device array of numba's CUDA simulator (numba.cuda "
                "on the cpu backend), whose memory rocmstreams' copies do not take: copy it with "
                "its own d.copy_to_host(stream=s) or d.copy_to_device(x, stream=s), or make it "
                "with rs.to_device / rs.empty, which numba kernels take as well")
        raise TypeError(f"expected a numpy array, a DeviceArray or an object with "
                        f"__cuda_array_interface__; got {type(obj).__name__}")
    shape = tuple(int(n) for n in cai["shape"])
    dtype = device_dtype(cai["typestr"])
    natural = c_strides(shape, dtype.itemsize)
    given = cai.get("strides")
    strides = natural if given is None else tuple(int(s) for s in given)
    count = 1
    for n in shape:
        count *= n
    contiguous = strides == natural or count <= 1 or all(
        s == t for s, t, n in zip(strides, natural, shape) if n > 1)
    address, readonly = cai["data"]
    return ArrayInfo("device", shape, dtype, int(address or 0), strides, contiguous,
                     bool(readonly), cai.get("stream"))
