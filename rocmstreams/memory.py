"""Device arrays, page-locked host arrays, and async copies between them on a stream.

Endpoints are numpy arrays (host), :class:`DeviceArray`, or any object exporting the CUDA Array
Interface (CuPy, PyTorch, Numba device arrays). Every copy is checked (shape, dtype, contiguity,
size) before anything is queued.
"""
from __future__ import annotations

import ctypes
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from . import staging
from .backends import LEGACY_STREAM, backend
from .device import check_device, using_device
from .errors import CaptureError

if TYPE_CHECKING:
    from .stream import RocmStream

__all__ = ["DeviceArray", "empty", "empty_like", "to_device", "pinned_empty", "device_view",
           "copy_async", "is_pinned"]


def _release(free: Callable[[int], None], ptr: int, what: str) -> None:
    try:
        free(ptr)
    except Exception as exc:  # noqa: BLE001 - cleanup must not raise
        warnings.warn(f"rocmstreams: freeing {what} {ptr:#x} failed: {exc}", ResourceWarning,
                      stacklevel=2)


def _shape_of(shape: int | tuple[int, ...]) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(not isinstance(n, (int, np.integer)) or n < 0 for n in shape):
        raise ValueError(f"shape must hold non-negative ints, got {shape}")
    return tuple(int(n) for n in shape)


class _Allocation:
    """Owns one device allocation; freed once, by ``close()`` or the finalizer."""

    __slots__ = ("ptr", "nbytes", "device", "_finalizer", "__weakref__")

    def __init__(self, nbytes: int, device: int) -> None:
        be = backend()
        with using_device(device):
            self.ptr = be.malloc(nbytes)
        self.nbytes = nbytes
        self.device = device
        self._finalizer = weakref.finalize(self, _release, be.free, self.ptr, "device memory")


class DeviceArray:
    """A C-contiguous array in device memory; a Numba kernel argument and copy endpoint.

    Build one with :func:`empty`, :func:`empty_like`, :func:`to_device` or :func:`device_view`.
    It exports ``__cuda_array_interface__`` (version 3, no stream: ordering is the caller's, through
    the streams the work is queued on).
    """

    # _rocmstreams_abi: the launch values prepared kernel launches cache on the array
    __slots__ = ("_ptr", "_shape", "_dtype", "_device", "_keepalive", "_rocmstreams_abi",
                 "__weakref__")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("use rocmstreams.empty, empty_like, to_device or device_view")

    @classmethod
    def _wrap(cls, ptr: int, shape: tuple[int, ...], dtype: np.dtype, device: int,
              keepalive: object) -> "DeviceArray":
        self = object.__new__(cls)
        self._ptr, self._shape, self._dtype = ptr, shape, dtype
        self._device, self._keepalive = device, keepalive
        self._rocmstreams_abi = None
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self._dtype.itemsize

    @property
    def strides(self) -> tuple[int, ...]:
        return _c_strides(self._shape, self._dtype.itemsize)

    @property
    def ptr(self) -> int:
        """Device address of the first element."""
        return self._ptr

    @property
    def device(self) -> int:
        return self._device

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self._shape[0]

    def __getitem__(self, key: slice) -> "DeviceArray":
        """A view of a contiguous range of rows: ``d[lo:hi]`` (step 1 only)."""
        if not isinstance(key, slice) or not self._shape:
            raise TypeError("DeviceArray supports only d[lo:hi] views along the first axis")
        lo, hi, step = key.indices(self._shape[0])
        if step != 1:
            raise ValueError("DeviceArray views must be contiguous (step 1)")
        hi = max(hi, lo)
        row = self.strides[0] if self._shape else self._dtype.itemsize
        return DeviceArray._wrap(self._ptr + lo * row, (hi - lo,) + self._shape[1:], self._dtype,
                                 self._device, self)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self._shape, "typestr": self._dtype.str, "data": (self._ptr, False),
                "strides": None, "version": 3, "stream": None}

    def copy_to_host(self, out: np.ndarray | None = None, *,
                     stream: "RocmStream | None" = None) -> np.ndarray:
        """Queue a copy into ``out`` (a new host array when omitted) on ``stream``; returns it.

        The host array holds the data once the stream has passed the copy.
        """
        if out is None:
            out = np.empty(self._shape, self._dtype)
        copy_async(out, self, stream=stream)
        return out

    def copy_from(self, src: Any, *, stream: "RocmStream | None" = None) -> "DeviceArray":
        """Queue a copy from ``src`` (host array or device array) into this array."""
        copy_async(self, src, stream=stream)
        return self

    def __repr__(self) -> str:
        return (f"<DeviceArray shape={self._shape} dtype={self._dtype} ptr={self._ptr:#x} "
                f"device={self._device}>")


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


def empty(shape: int | tuple[int, ...], dtype: Any = np.float64, *,
          device: int | None = None) -> DeviceArray:
    """An uninitialised device array.

    Raises
    ------
    OutOfMemoryError
        The device cannot hold it; streams stay usable.
    """
    shape, dtype = _shape_of(shape), np.dtype(dtype)
    ordinal = check_device(device)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    alloc = _Allocation(nbytes, ordinal)
    return DeviceArray._wrap(alloc.ptr, shape, dtype, ordinal, alloc)


def empty_like(ary: Any, *, device: int | None = None) -> DeviceArray:
    """An uninitialised device array with ``ary``'s shape and dtype."""
    shape, dtype = _describe(ary)[1:3]
    return empty(shape, dtype, device=device)


def to_device(ary: np.ndarray, *, stream: "RocmStream | None" = None,
              device: int | None = None) -> DeviceArray:
    """A new device array, filled from host array ``ary`` by an async copy on ``stream``.

    From pageable memory the call returns once ``ary`` has been read (see :func:`copy_async`).
    """
    if not isinstance(ary, np.ndarray):
        raise TypeError(f"to_device takes a numpy array, got {type(ary).__name__}")
    out = empty(ary.shape, ary.dtype, device=device)
    copy_async(out, ary, stream=stream)
    return out


class _HostAllocation:
    __slots__ = ("ptr", "nbytes", "_finalizer", "__weakref__")

    def __init__(self, nbytes: int) -> None:
        be = backend()
        self.ptr = be.host_malloc(nbytes)
        self.nbytes = nbytes
        self._finalizer = weakref.finalize(self, _release, be.host_free, self.ptr,
                                           "page-locked memory")


def pinned_empty(shape: int | tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    """An uninitialised numpy array in page-locked host memory, mapped for the device.

    Copies from and to it run asynchronously at full link speed; the memory is freed when the
    last array viewing it is gone.
    """
    shape, dtype = _shape_of(shape), np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    alloc = _HostAllocation(nbytes)
    raw = (ctypes.c_byte * max(nbytes, 1)).from_address(alloc.ptr)
    raw._rocmstreams_allocation = alloc  # type: ignore[attr-defined]  # raw keeps it alive
    return np.frombuffer(raw, np.uint8, count=nbytes).view(dtype).reshape(shape)


def _pinned_owner(ary: np.ndarray) -> "_HostAllocation | None":
    base: Any = ary
    while base is not None:
        alloc = getattr(base, "_rocmstreams_allocation", None)
        if alloc is not None:
            return alloc
        nxt = getattr(base, "base", None)
        base = getattr(base, "obj", None) if nxt is None else nxt
    return None


def is_pinned(ary: np.ndarray) -> bool:
    """Whether ``ary`` lies in page-locked memory from :func:`pinned_empty`."""
    return _pinned_owner(ary) is not None


def device_view(ary: np.ndarray) -> DeviceArray:
    """The device's view of a page-locked array from :func:`pinned_empty` (no copy).

    Kernels reading it see host writes as they happen, e.g. a flag the host sets.
    """
    owner = _pinned_owner(ary)
    if owner is None:
        raise ValueError("device_view needs an array from rocmstreams.pinned_empty")
    if not ary.flags.c_contiguous:
        raise ValueError("device_view needs a C-contiguous array")
    return DeviceArray._wrap(ary.ctypes.data, ary.shape, ary.dtype, backend().get_device(),
                             ary)


def _describe(obj: Any) -> tuple[str, tuple[int, ...], np.dtype, int, bool]:
    """(kind, shape, dtype, address, contiguous) of a copy endpoint; kind 'host' or 'device'."""
    if isinstance(obj, np.ndarray):
        return "host", obj.shape, obj.dtype, obj.ctypes.data, obj.flags.c_contiguous
    if isinstance(obj, DeviceArray):
        return "device", obj.shape, obj.dtype, obj.ptr, True
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is None:
        raise TypeError(f"a copy endpoint is a numpy array, a DeviceArray or an object with "
                        f"__cuda_array_interface__; got {type(obj).__name__}")
    shape, dtype = tuple(cai["shape"]), np.dtype(cai["typestr"])
    strides = cai.get("strides")
    contiguous = strides is None or tuple(strides) == _c_strides(shape, dtype.itemsize) or \
        int(np.prod(shape, dtype=np.int64)) <= 1
    return "device", shape, dtype, int(cai["data"][0]), contiguous


def _stream_handle(stream: "RocmStream | None") -> int:
    from .stream import RocmStream
    if stream is None:
        return LEGACY_STREAM
    if not isinstance(stream, RocmStream):
        raise TypeError(f"stream must be a RocmStream or None, got {type(stream).__name__}; "
                        "wrap foreign streams with RocmStream.from_external")
    return stream.handle


def copy_async(dst: Any, src: Any, *, stream: "RocmStream | None" = None) -> None:
    """Queue a copy of ``src`` into ``dst`` on ``stream`` (legacy default stream when omitted).

    Host-to-device, device-to-host and device-to-device, decided by the endpoints' kinds. Both
    must be C-contiguous with the same shape and dtype; anything else is refused before
    anything is queued.

    A host endpoint in page-locked memory (:func:`pinned_empty`) is copied asynchronously. One in
    pageable memory follows CUDA's rules for pageable copies: from it, the call returns once the
    source has been read, so it may be overwritten at once (the device data is ready when the
    stream passes the copy); into it, the call returns once the data is there. Pageable sources
    of at least :data:`rocmstreams.staging.MIN_STAGED_BYTES` are copied in chunks through reused
    page-locked buffers, the host filling one while the device empties another (see
    :mod:`rocmstreams.staging`).

    Raises
    ------
    ValueError, TypeError
        Endpoints that do not match or cannot be copied; nothing was queued.
    CaptureError
        A pageable host endpoint while ``stream`` is capturing a graph; nothing was queued.
    """
    handle = _stream_handle(stream)
    dkind, dshape, ddtype, daddr, dcontig = _describe(dst)
    skind, sshape, sdtype, saddr, scontig = _describe(src)
    if dkind == "host" and skind == "host":
        raise ValueError("both endpoints are host arrays; use numpy to copy between them")
    if ddtype != sdtype:
        raise ValueError(f"dtype mismatch: destination {ddtype}, source {sdtype}")
    if tuple(dshape) != tuple(sshape):
        raise ValueError(f"shape mismatch: destination {tuple(dshape)}, source {tuple(sshape)}")
    if not (dcontig and scontig):
        side = "destination" if not dcontig else "source"
        raise ValueError(f"the {side} is not C-contiguous; copy it to a contiguous array "
                         "first (np.ascontiguousarray or .copy())")
    if dkind == "host" and not dst.flags.writeable:
        raise ValueError("the destination host array is read-only")
    nbytes = int(np.prod(dshape, dtype=np.int64)) * ddtype.itemsize
    host = dst if dkind == "host" else src if skind == "host" else None
    pageable = host is not None and _pinned_owner(host) is None
    if pageable and getattr(stream, "is_capturing", False):
        raise CaptureError(
            "a copy to or from pageable host memory cannot be captured into a graph: it reads "
            "(or fills) the host array during the call, with host waits a graph cannot record; "
            "copy through a page-locked array from rocmstreams.pinned_empty, or end the capture")
    if not nbytes:
        return
    if stream is not None and stream._capture is not None:  # the graph keeps both ends alive
        stream._capture._keep((dst, src))
    be = backend()
    if pageable and nbytes >= staging.MIN_STAGED_BYTES:
        device = be.get_device() if stream is None else stream.device
        if skind == "host":
            staging.copy_to_device(be, daddr, src, handle, device)
            return
        if staging.STAGE_D2H:
            staging.copy_to_host(be, dst, saddr, handle, device)
            return
    be.memcpy_async(daddr, saddr, nbytes, handle)
