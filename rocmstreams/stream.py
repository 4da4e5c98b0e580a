"""RocmStream: an owned or borrowed GPU stream, usable wherever a Numba launch stream goes."""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .backends import LEGACY_STREAM, PER_THREAD_STREAM, Backend, backend
from .device import _priority_range, check_device, using_device
from .errors import CallbackError, StreamClosedError

if TYPE_CHECKING:
    from .event import Event

__all__ = ["RocmStream", "StreamOptions", "default_stream", "per_thread_default_stream"]


@dataclass(frozen=True)
class StreamOptions:
    """How a new stream is made; checked before any runtime call.

    Parameters
    ----------
    non_blocking : bool
        True: the stream does not synchronize with the legacy default stream.
    priority : int
        Lower numbers run first; must lie in the device's range (see
        :func:`rocmstreams.priority_range`).
    """

    non_blocking: bool = False
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.non_blocking, bool):
            raise TypeError(f"non_blocking must be True or False, got {self.non_blocking!r}")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError(f"priority must be an int, got {self.priority!r}")


_OPTIONS: dict[tuple[bool, int], StreamOptions] = {}


def _options(non_blocking: bool, priority: int) -> StreamOptions:
    """The (immutable, shared) options for these values, checked once per distinct pair."""
    try:
        found = _OPTIONS.get((non_blocking, priority))
    except TypeError:  # unhashable: StreamOptions says what is wrong
        found = None
    if found is None or type(non_blocking) is not bool or type(priority) is not int:
        found = StreamOptions(non_blocking, priority)
        if len(_OPTIONS) < 64:
            _OPTIONS[(non_blocking, priority)] = found
    return found


def _destroy(be: Backend, handle: int) -> None:
    """Finalizer of owned streams: cleanup warns, never raises."""
    try:
        be.stream_destroy(handle)
    except Exception as exc:  # noqa: BLE001 - cleanup must not raise
        warnings.warn(f"rocmstreams: destroying stream {handle:#x} failed: {exc}",
                      ResourceWarning, stacklevel=2)


class RocmStream:
    """A stream of GPU work: kernels, copies, host callbacks and event records run in order.

    Create one with ``RocmStream(non_blocking=..., priority=..., device=...)``; wrap a stream
    someone else owns with :meth:`from_external`; get the default streams from
    :func:`default_stream` and :func:`per_thread_default_stream`. Pass it as the stream of a Numba
    launch, ``kernel[blocks, threads, stream](...)``, and of rocmstreams' copies.

    Parameters
    ----------
    non_blocking : bool, default False
        Do not synchronize with the legacy default stream.
    priority : int, default 0
        Stream priority; out of the device's range is a ValueError naming the range.
    device : int, optional
        Device ordinal; the current device when omitted.

    Notes
    -----
    ``close()`` destroys an owned stream (idempotent); after it, every operation raises
    :class:`~rocmstreams.errors.StreamClosedError`. ``with stream:`` synchronizes, then closes.
    Borrowed and default streams are never destroyed by rocmstreams.
    """

    __slots__ = ("_backend", "_handle", "_device", "_options", "_owner", "_finalizer",
                 "_key", "_callback_errors", "_launches", "_proxy", "__weakref__")

    def __init__(self, *, non_blocking: bool = False, priority: int = 0,
                 device: int | None = None) -> None:
        options = _options(non_blocking, priority)
        be = backend()
        current = be.get_device()
        ordinal = current if device is None else check_device(device)
        least, greatest = _priority_range(ordinal)
        if not greatest <= priority <= least:
            raise ValueError(f"priority={priority} is out of range [{greatest}, {least}] "
                             f"for device {ordinal} (lower numbers are higher priority)")
        if ordinal == current:
            handle = be.stream_create(non_blocking, priority)
        else:
            with using_device(ordinal):
                handle = be.stream_create(non_blocking, priority)
        self._setup(be, handle, ordinal, options, owner=None)
        self._finalizer = weakref.finalize(self, _destroy, be, handle)

    def _setup(self, be: Backend, handle: int, device: int, options: StreamOptions | None,
               owner: object) -> None:
        self._backend = be
        self._handle: int | None = handle
        self._device = device
        self._options = options
        self._owner = owner
        self._finalizer = None
        self._key = (be.name, device, handle)
        self._callback_errors: list[tuple[Callable[..., Any], BaseException]] = []
        self._launches: dict[tuple, Any] = {}  # kernel launches configured on this stream
        self._proxy: Any = None  # the weak proxy those launches hold

    @classmethod
    def _borrow(cls, handle: int, owner: object, device: int | None = None) -> "RocmStream":
        self = cls.__new__(cls)
        self._setup(backend(), handle, check_device(device), None, owner)
        return self

    @classmethod
    def from_external(cls, obj: Any, *, device: int | None = None) -> "RocmStream":
        """Borrow a stream someone else owns; it is never destroyed by rocmstreams.

        Parameters
        ----------
        obj : object with ``__cuda_stream__``, or int
            A CuPy, PyTorch or cuda.core stream (anything exporting ``__cuda_stream__()``), or a
            raw stream handle. The owner object is kept alive as long as this RocmStream.
        device : int, optional
            The device the stream belongs to; the current device when omitted.
        """
        if isinstance(obj, RocmStream):
            return cls._borrow(obj.handle, obj, obj.device)
        protocol = getattr(obj, "__cuda_stream__", None)
        if protocol is not None:
            version, handle = protocol() if callable(protocol) else protocol
            if version != 0:
                raise ValueError(f"unsupported __cuda_stream__ version {version}; expected 0")
            return cls._borrow(int(handle), obj, device)
        if isinstance(obj, int) and not isinstance(obj, bool):
            if obj < 0:
                raise ValueError(f"a stream handle is a non-negative address, got {obj}")
            return cls._borrow(obj, None, device)
        raise TypeError(f"cannot borrow a stream from {type(obj).__name__}: pass an object "
                        "with __cuda_stream__ (CuPy, PyTorch, cuda.core) or an int handle")

    # identity --------------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._handle is None

    def _live(self) -> int:
        handle = self._handle
        if handle is None:
            raise StreamClosedError("this RocmStream is closed; create a new RocmStream")
        return handle

    @property
    def handle(self) -> int:
        """The raw ``hipStream_t`` / ``cudaStream_t`` address (0 for the legacy default)."""
        return self._live()

    @property
    def device(self) -> int:
        """Ordinal of the device the stream belongs to."""
        return self._device

    @property
    def owned(self) -> bool:
        """True when rocmstreams created the stream and destroys it on close."""
        return self._finalizer is not None

    @property
    def non_blocking(self) -> bool | None:
        """The flag the stream was made with (None for a borrowed stream)."""
        return None if self._options is None else self._options.non_blocking

    @property
    def priority(self) -> int | None:
        """The priority the stream was made with (None for a borrowed stream)."""
        return None if self._options is None else self._options.priority

    @property
    def backend_name(self) -> str:
        """Name of the backend the stream lives on: ``cuda``, ``hip`` or ``cpu``."""
        return self._backend.name

    def __cuda_stream__(self) -> tuple[int, int]:
        """The CUDA stream protocol: ``(version, handle)``."""
        return (0, self._live())

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, RocmStream) or self.is_closed or other.is_closed:
            return False
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __reduce__(self) -> Any:
        raise TypeError("a RocmStream belongs to its process and cannot be pickled; "
                        "send its .handle and borrow it with RocmStream.from_external")

    def __repr__(self) -> str:
        if self._handle is None:
            return f"<RocmStream closed backend={self._backend.name}>"
        kind = "owned" if self.owned else "borrowed"
        opts = ("" if self._options is None else
                f" non_blocking={self._options.non_blocking} priority={self._options.priority}")
        return (f"<RocmStream handle={self._handle:#x} device={self._device}{opts} "
                f"backend={self._backend.name} {kind}>")

    # work --------------------------------------------------------------------------------------
    def query(self) -> bool:
        """True when all work queued on the stream has finished, False while any runs.

        Only the runtime's not-ready answer maps to False; any other failure raises.
        """
        handle = self._handle
        if handle is None:
            self._live()
        return self._backend.stream_query(handle)

    def synchronize(self) -> None:
        """Block until all work queued on the stream has finished.

        Raises
        ------
        CallbackError
            A host callback queued with :meth:`add_callback` raised; its exception is the cause.
        SynchronizeError
            Work on the stream failed.
        """
        handle = self._handle
        if handle is None:
            self._live()
        self._backend.stream_synchronize(handle)
        if self._callback_errors:
            self._raise_callback_error()

    def _raise_callback_error(self) -> None:
        if self._callback_errors:
            fn, exc = self._callback_errors.pop(0)
            name = getattr(fn, "__qualname__", repr(fn))
            raise CallbackError(f"host callback {name} raised {type(exc).__name__}: {exc}") \
                from exc

    def record(self, event: "Event | None" = None, *, timing: bool = False) -> "Event":
        """Record an event after the work queued so far; returns it.

        Parameters
        ----------
        event : Event, optional
            Re-record this event; a new one is created when omitted.
        timing : bool, default False
            For a new event: whether it can measure elapsed time.
        """
        from .event import Event
        self._live()
        if event is None:
            event = Event(timing=timing, device=self._device)
        return event.record(self)

    def wait(self, other: "Event | RocmStream | Any") -> None:
        """Make later work on this stream wait for ``other``: an event, or all work now queued
        on another stream (a RocmStream or any ``__cuda_stream__`` object). The host does not
        block."""
        from .event import Event
        handle = self._live()
        if isinstance(other, Event):
            self._backend.stream_wait_event(handle, other._live())
            return
        if not isinstance(other, RocmStream):
            if getattr(other, "__cuda_stream__", None) is None:
                raise TypeError(f"wait() takes an Event or a stream, got {type(other).__name__}")
            other = RocmStream.from_external(other, device=self._device)
        marker = other.record()
        try:
            self._backend.stream_wait_event(handle, marker._live())
        finally:
            marker.close()

    def add_callback(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a host thread after all earlier work on the stream.

        Later work waits for it. ``fn`` must not call the GPU runtime; an exception it raises is
        raised as :class:`~rocmstreams.errors.CallbackError` at the next :meth:`synchronize`.
        """
        if not callable(fn):
            raise TypeError(f"add_callback needs a callable, got {type(fn).__name__}")
        handle = self._live()
        errors = self._callback_errors

        def call() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - delivered at synchronize()
                errors.append((fn, exc))

        self._backend.launch_host_func(handle, call)

    # lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Destroy an owned stream (queued work still completes); idempotent.

        Borrowed and default streams are only detached, never destroyed.
        """
        if self._handle is None:
            return
        self._handle = None
        self._owner = None
        self._launches.clear()
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> "RocmStream":
        self._live()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if not self.is_closed:
                self.synchronize()
        finally:
            self.close()


def default_stream(device: int | None = None) -> RocmStream:
    """The legacy default (NULL) stream of ``device``; never destroyed."""
    return RocmStream._borrow(LEGACY_STREAM, None, device)



def per_thread_default_stream(device: int | None = None) -> RocmStream:
    """The calling thread's per-thread default stream; never destroyed."""
    return RocmStream._borrow(PER_THREAD_STREAM, None, device)
