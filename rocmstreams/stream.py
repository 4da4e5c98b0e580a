"""RocmStream: an owned or borrowed GPU stream, usable wherever a Numba launch stream goes."""
from __future__ import annotations

import warnings
import weakref
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .backends import LEGACY_STREAM, PER_THREAD_STREAM, Backend, backend
from .device import _priority_range, check_device, using_device
from .errors import CallbackError, CaptureError, StreamClosedError

if TYPE_CHECKING:
    from .event import Event
    from .graph import Graph

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


#: Options already checked against a device's priority range, by (backend, ordinal, values).
_CHECKED: dict[tuple[Any, int, bool, int], StreamOptions] = {}


def _checked_options(be: Backend, ordinal: int, non_blocking: bool,
                     priority: int) -> StreamOptions:
    """Check the options (types, then the device's priority range) and keep them for reuse."""
    options = StreamOptions(non_blocking, priority)
    least, greatest = _priority_range(ordinal)
    if not greatest <= priority <= least:
        raise ValueError(f"priority={priority} is out of range [{greatest}, {least}] "
                         f"for device {ordinal} (lower numbers are higher priority)")
    if len(_CHECKED) < 256:
        _CHECKED[(be, ordinal, non_blocking, priority)] = options
    return options


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
    ``close()`` releases an owned stream (idempotent); after it, every operation raises
    :class:`~rocmstreams.errors.StreamClosedError`. ``with stream:`` synchronizes, then closes.
    Borrowed and default streams are never destroyed by rocmstreams. ``with stream.capture() as
    graph:`` records the stream's work into a :class:`~rocmstreams.Graph` (see :meth:`capture`).
    """

    __slots__ = ("_backend", "_handle", "_device", "_options", "_owner", "_finalizer",
                 "_key", "_callback_errors", "_launches", "_proxy", "_capture", "_query",
                 "_sync", "_stream_obj", "_ok", "__weakref__")

    def __init__(self, *, non_blocking: bool = False, priority: int = 0,
                 device: int | None = None) -> None:
        be = backend()
        current = be.get_device()
        ordinal = current if device is None else check_device(device)
        options = None
        if type(non_blocking) is bool and type(priority) is int:  # the common case: one lookup
            options = _CHECKED.get((be, ordinal, non_blocking, priority))
        if options is None:
            options = _checked_options(be, ordinal, non_blocking, priority)
        if ordinal == current:
            handle = be.stream_create(non_blocking, priority, ordinal)
        else:
            with using_device(ordinal):
                handle = be.stream_create(non_blocking, priority, ordinal)
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
        self._launches: dict[tuple, Any] | None = None  # kernel launches configured on it
        self._proxy: Any = None  # the weak proxy those launches hold
        self._capture: Graph | None = None  # the graph a `with self.capture()` block records
        # the runtime's query, synchronize and stream object bound to this stream, on first use
        # (see _bind): the hot paths call them
        self._query: Callable[[], tuple] | None = None
        self._sync: Callable[[], tuple] | None = None
        self._stream_obj: Any = None
        self._ok = be.success

    def _bind(self) -> tuple[Callable[[], tuple], Callable[[], tuple], Any]:
        """Bind the runtime's query, synchronize and stream object to the handle, once; raises
        StreamClosedError on a closed stream."""
        handle = self._live()
        be = self._backend
        self._query, self._sync = be.bind_stream(handle)
        self._stream_obj = be.stream_object(handle)
        return self._query, self._sync, self._stream_obj

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
    def is_capturing(self) -> bool:
        """True inside a ``with stream.capture()`` block of this RocmStream.

        Work queued then is recorded into the graph, not run; queries, synchronizes, events and
        copies from pageable host memory are refused.
        """
        return self._capture is not None

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

        Raises
        ------
        CaptureError
            The stream is capturing a graph; the capture goes on.
        """
        query = self._query
        if query is None:
            query = self._bind()[0]
        if self._capture is not None:
            raise _capturing("query()")
        result = query()
        if result[0] is self._ok:
            return True
        return self._backend.stream_query_result(result, self._handle)

    def synchronize(self) -> None:
        """Block until all work queued on the stream has finished.

        Raises
        ------
        CallbackError
            A host callback queued with :meth:`add_callback` raised; its exception is the cause.
        SynchronizeError
            Work on the stream failed.
        CaptureError
            The stream is capturing a graph; the capture goes on.
        """
        sync = self._sync
        if sync is None:
            sync = self._bind()[1]
        if self._capture is not None:
            raise _capturing("synchronize()")
        result = sync()
        if result[0] is not self._ok:
            self._backend.stream_synchronize_result(result, self._handle)
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

        Raises
        ------
        CaptureError
            The stream is capturing a graph (events inside a capture are not supported).
        """
        from .event import Event
        self._live()
        if self._capture is not None:
            raise _event_in_capture()
        if event is None:
            event = Event(timing=timing, device=self._device)
        return event.record(self)

    def wait(self, other: "Event | RocmStream | Any") -> None:
        """Make later work on this stream wait for ``other``: an event, or all work now queued
        on another stream (a RocmStream or any ``__cuda_stream__`` object). The host does not
        block.

        Raises
        ------
        CaptureError
            This stream or ``other`` is capturing a graph (events inside a capture are not
            supported).
        """
        from .event import Event
        handle = self._live()
        if self._capture is not None:
            raise _event_in_capture()
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
        Inside a capture, ``fn`` runs once per replay of the graph, and its exception is raised
        at the next synchronize of the stream the graph was launched on.
        """
        if not callable(fn):
            raise TypeError(f"add_callback needs a callable, got {type(fn).__name__}")
        handle = self._live()
        capture = self._capture
        errors = self._callback_errors if capture is None else capture._errors_for_callback()

        def call() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - delivered at synchronize()
                errors.append((fn, exc))

        self._backend.launch_host_func(handle, call)

    def capture(self) -> "AbstractContextManager[Graph]":
        """Record the work queued on this stream into a :class:`~rocmstreams.Graph`.

        ``with stream.capture() as graph:`` records, instead of running, the kernels launched,
        the copies queued (between device and page-locked memory) and the host callbacks added
        on the stream inside the block. When the block ends normally the graph is ready:
        ``graph.launch(stream)`` replays it. When the block raises, the partial graph is
        discarded and the exception goes on; the stream is usable either way.

        Raises
        ------
        StreamClosedError
            The stream is closed.
        CaptureError
            The stream is the legacy default stream, or is already capturing. Inside the block:
            :meth:`query`, :meth:`synchronize`, :meth:`record`, :meth:`wait` and
            :meth:`close` on this stream, and ``Event.record(stream)``; each is refused before
            the runtime sees it, and the capture goes on.

        Notes
        -----
        Captures run in the runtime's global mode: inside the block, do only stream work on the
        capturing stream (allocate arrays, compile kernels and create events before it), and keep
        every array the block names alive as long as the graph. On the cuda and hip backends a
        host callback captured into a graph stays registered for the life of the process.
        """
        from .graph import _Capture
        return _Capture(self)

    # lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release an owned stream (queued work still completes); idempotent.

        On GPU backends a stream that is idle when closed goes back to a small pool of its
        device and options, and the next RocmStream made with them reuses it without a runtime
        call (``rocmstreams.backends.runtime.STREAM_POOL_SIZE``); a stream still running work is
        destroyed. Borrowed and default streams are only detached, never destroyed.

        Raises
        ------
        CaptureError
            The stream is capturing a graph; it stays open and the capture goes on.
        """
        if self._handle is None:
            return
        if self._capture is not None:
            raise CaptureError("cannot close a stream while it is capturing a graph; leave the "
                               "`with stream.capture()` block first")
        self._handle = None
        self._query = self._sync = self._stream_obj = None
        self._owner = None
        self._launches = None
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


def _capturing(what: str) -> CaptureError:
    return CaptureError(f"{what} is not allowed while the stream is capturing a graph: its work "
                        "is being recorded, not run; end the capture (leave the "
                        "`with stream.capture()` block) first")


def _event_in_capture() -> CaptureError:
    return CaptureError("events inside a graph capture are not supported: record events and "
                        "wait on streams or events before `with stream.capture()` or after it")


def default_stream(device: int | None = None) -> RocmStream:
    """The legacy default (NULL) stream of ``device``; never destroyed."""
    return RocmStream._borrow(LEGACY_STREAM, None, device)



def per_thread_default_stream(device: int | None = None) -> RocmStream:
    """The calling thread's per-thread default stream; never destroyed."""
    return RocmStream._borrow(PER_THREAD_STREAM, None, device)
