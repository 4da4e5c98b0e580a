"""RocmStream: an owned or borrowed GPU stream, usable wherever a Numba launch stream goes."""
from __future__ import annotations

import asyncio
import contextlib
import operator
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator

import numpy as np

from .backends import LEGACY_STREAM, PER_THREAD_STREAM, Backend, active
from .core import config as configuration
from .core import lifetime
from .core.callbacks import refuse, running
from .core.device import check_device, checked_priority_range, using_device
from .event import Event
from .graph import CaptureBlock
from .streamcore import RECORD, WAIT, StreamCore

__all__ = ["RocmStream", "StreamOptions", "default_stream", "per_thread_default_stream"]


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def _int(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


@dataclass(frozen=True)
class StreamOptions:
    """How a new stream is made; checked before any runtime call.

    Pass it as ``RocmStream(options=...)``, or give the same fields as keywords.

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
        object.__setattr__(self, "non_blocking", _flag("non_blocking", self.non_blocking))
        object.__setattr__(self, "priority", _int("priority", self.priority))


#: Options already checked against a device's priority range, by (backend, ordinal, values).
_CHECKED: dict[tuple[Any, int, bool, int], StreamOptions] = {}


def _checked_options(be: Backend, ordinal: int, non_blocking: Any, priority: Any,
                     options: StreamOptions | None) -> StreamOptions:
    """The options, checked (types, then the device's priority range) and kept for reuse (the
    constructor looks the common case up in ``_CHECKED`` itself)."""
    if options is None:
        options = StreamOptions(non_blocking, priority)
    elif not isinstance(options, StreamOptions):
        raise TypeError(f"options must be a StreamOptions, got {type(options).__name__}")
    least, greatest = checked_priority_range(ordinal)
    if not greatest <= options.priority <= least:
        raise ValueError(f"priority={options.priority} is out of range [{greatest}, {least}] "
                         f"for device {ordinal} (lower numbers are higher priority)")
    if len(_CHECKED) < 256:
        _CHECKED[(be, ordinal, options.non_blocking, options.priority)] = options
    return options


class RocmStream:
    """A stream of GPU work: kernels, copies, host callbacks and event records run in order.

    Create one with ``RocmStream(non_blocking=..., priority=..., device=...)`` (or
    ``RocmStream(options=StreamOptions(...))``); wrap a stream someone else owns with
    :meth:`from_external`; get the default streams from :func:`default_stream` and
    :func:`per_thread_default_stream`. Pass it as the stream of a Numba launch,
    ``kernel[blocks, threads, stream](...)``, and of rocmstreams' copies.

    Parameters
    ----------
    non_blocking : bool, default False
        Do not synchronize with the legacy default stream.
    priority : int, default 0
        Stream priority; out of the device's range is a ValueError naming the range.
    device : int, optional
        Device ordinal; the current device when omitted.
    options : StreamOptions, optional
        The options as one object, instead of ``non_blocking`` and ``priority``.

    Notes
    -----
    ``close()`` releases an owned stream (idempotent); after it, every operation raises
    :class:`~rocmstreams.errors.StreamClosedError`, and an operation already in flight in
    another thread finishes first. ``with stream:`` synchronizes, then closes. Borrowed and
    default streams are never destroyed by rocmstreams. ``with stream.capture() as graph:``
    records the stream's work into a :class:`~rocmstreams.Graph` (see :meth:`capture`).
    ``__rocmstreams_core__`` is the stream's core, through which every operation passes.
    """

    __slots__ = ("__rocmstreams_core__", "_options", "_finalizer", "_key", "__weakref__")
    __rocmstreams_core__: StreamCore
    _options: StreamOptions | None
    _finalizer: lifetime.Finalizer | None
    _key: tuple[str, int, int | None]

    def __init__(self, *, non_blocking: bool = False, priority: int = 0,
                 device: int | None = None, options: StreamOptions | None = None) -> None:
        if running:
            refuse("RocmStream()")
        be = active()
        if options is not None and (non_blocking is not False or priority != 0):
            raise TypeError("give the stream's options either as options=StreamOptions(...) "
                            "or as non_blocking=/priority= keywords, not both")
        current = be.get_device()
        ordinal = current if device is None else check_device(device)
        checked = None
        if options is None and type(non_blocking) is bool and type(priority) is int:
            checked = _CHECKED.get((be, ordinal, non_blocking, priority))  # the common case
        if checked is None:
            checked = _checked_options(be, ordinal, non_blocking, priority, options)
        lifetime.drain()
        if ordinal == current:
            handle = be.stream_create(checked.non_blocking, checked.priority, ordinal)
        else:
            with using_device(ordinal):
                handle = be.stream_create(checked.non_blocking, checked.priority, ordinal)
        core = StreamCore(be, handle, ordinal, True)
        self.__rocmstreams_core__ = core
        self._options = checked
        self._key = (be.name, ordinal, handle)
        self._finalizer = lifetime.own(self, core)

    def _setup(self, core: StreamCore, options: StreamOptions | None) -> None:
        self.__rocmstreams_core__ = core
        self._options = options
        self._finalizer = None
        self._key = (core.backend.name, core.device, core.value)

    @classmethod
    def _borrow(cls, handle: int, owner: object, device: int | None = None) -> "RocmStream":
        self = cls.__new__(cls)
        self._setup(StreamCore(active(), handle, check_device(device), owned=False,
                               owner=owner), None)
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
            found = protocol() if callable(protocol) else protocol
            if not (isinstance(found, tuple) and len(found) == 2):
                raise TypeError(f"{type(obj).__name__}.__cuda_stream__() must return a "
                                f"(version, handle) tuple, got {found!r}")
            version, handle = found
            if version != 0:
                raise ValueError(f"unsupported __cuda_stream__ version {version}; expected 0")
            return cls._borrow(_int("the stream handle", handle), obj, device)
        if isinstance(obj, (int, np.integer)) and not isinstance(obj, (bool, np.bool_)):
            if obj < 0:
                raise ValueError(f"a stream handle is a non-negative address, got {obj}")
            return cls._borrow(int(obj), None, device)
        raise TypeError(f"cannot borrow a stream from {type(obj).__name__}: pass an object "
                        "with __cuda_stream__ (CuPy, PyTorch, cuda.core) or an int handle")

    # identity --------------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self.__rocmstreams_core__.value is None

    @property
    def is_capturing(self) -> bool:
        """True inside a ``with stream.capture()`` block of this RocmStream.

        Work queued then is recorded into the graph, not run; queries, synchronizes, events and
        copies from pageable host memory are refused.
        """
        return self.__rocmstreams_core__.capture is not None

    @property
    def handle(self) -> int:
        """The raw ``hipStream_t`` / ``cudaStream_t`` address (0 for the legacy default)."""
        core = self.__rocmstreams_core__
        core.enter()
        core.leave()
        return core.calls.handle

    @property
    def device(self) -> int:
        """Ordinal of the device the stream belongs to."""
        return self.__rocmstreams_core__.device

    @property
    def owned(self) -> bool:
        """True when rocmstreams created the stream and releases it on close."""
        return self.__rocmstreams_core__.owned

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
        return self.__rocmstreams_core__.backend.name

    def __cuda_stream__(self) -> tuple[int, int]:
        """The CUDA stream protocol: ``(version, handle)``."""
        return (0, self.handle)

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
        core = self.__rocmstreams_core__
        if core.value is None:
            return f"<RocmStream closed backend={core.backend.name}>"
        kind = "owned" if core.owned else "borrowed"
        opts = ("" if self._options is None else
                f" non_blocking={self._options.non_blocking} priority={self._options.priority}")
        return (f"<RocmStream handle={core.value:#x} device={core.device}{opts} "
                f"backend={core.backend.name} {kind}>")

    # work --------------------------------------------------------------------------------------
    def query(self) -> bool:
        """True when all work queued on the stream has finished, False while any runs.

        Only the runtime's not-ready answer maps to False; any other failure raises.

        Raises
        ------
        CaptureError
            The stream is capturing a graph; the capture goes on.
        """
        core = self.__rocmstreams_core__
        return core.door.query(core)

    def synchronize(self, timeout: float | None = None) -> None:
        """Block until all work queued on the stream has finished.

        Interruptible: Ctrl-C (SIGINT) raises KeyboardInterrupt at once, and the stream stays
        usable; its work goes on.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; then :class:`~rocmstreams.errors.WaitTimeoutError`.

        Raises
        ------
        CallbackError
            A host callback queued with :meth:`add_callback` raised; its exception is the
            cause, and the message counts the others that raised since.
        SynchronizeError
            Work on the stream failed.
        CaptureError
            The stream is capturing a graph; the capture goes on.
        """
        core = self.__rocmstreams_core__
        core.door.synchronize(core, timeout)
        if configuration.release_threshold is not None:  # see Config.pool_release_threshold
            core.calls.synchronize()  # idle now: the runtime sees the frees before it passed
            configuration.trim_pool(core.device)

    def record(self, event: Event | None = None, *, timing: bool = False) -> Event:
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
        core = self.__rocmstreams_core__
        if event is not None and not isinstance(event, Event):
            raise TypeError(f"record() takes an Event or nothing, got {type(event).__name__}")
        if event is None:
            core.check(RECORD)  # before an event is made for it
            event = Event(timing=timing, device=core.device)
        return event.record(self)

    def wait(self, other: Any) -> None:
        """Make later work on this stream wait for ``other``: an event, or all work now queued
        on another stream (a RocmStream or any ``__cuda_stream__`` object). The host does not
        block.

        Raises
        ------
        TypeError
            ``other`` is neither an Event nor a stream.
        CaptureError
            This stream or ``other`` is capturing a graph (events inside a capture are not
            supported).
        """
        core = self.__rocmstreams_core__
        if isinstance(other, Event):
            other.wait_on(core)
            return
        if not isinstance(other, RocmStream):
            if getattr(other, "__cuda_stream__", None) is None:
                raise TypeError(f"wait() takes an Event or a stream, got {type(other).__name__}")
            other = RocmStream.from_external(other, device=core.device)
        core.check(WAIT)  # before a marker is recorded on the other stream
        marker = other.record()
        try:
            marker.wait_on(core)
        finally:
            marker.close()

    def launch_host_func(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a host thread after all earlier work on the stream (CuPy's name).

        Later work waits for it. ``fn`` must not call the GPU runtime: every rocmstreams call
        that would (allocating, creating, querying, waiting for or closing a stream, event or
        graph, queuing work) raises instead, and what ``fn`` drops is released after it, from
        another thread. An exception it raises is raised as
        :class:`~rocmstreams.errors.CallbackError` at the next :meth:`synchronize`. Inside a
        capture, ``fn`` runs once per replay of the graph, and its exception is raised at the
        next synchronize of the stream the graph was launched on.
        """
        if not callable(fn):
            raise TypeError(f"launch_host_func needs a callable, got {type(fn).__name__}")
        self.__rocmstreams_core__.add_callback(fn, args)

    def add_callback(self, callback: Callable[[Any, int, Any], Any], arg: Any = None) -> None:
        """Numba's form: run ``callback(stream, status, arg)`` after all earlier work, where
        ``stream`` is this RocmStream and ``status`` 0 (success), as numba-cuda and CuPy call it.

        Otherwise as :meth:`launch_host_func` (which calls ``fn(*args)``).
        """
        if not callable(callback):
            raise TypeError(f"add_callback needs a callable, got {type(callback).__name__}")
        self.__rocmstreams_core__.add_callback(callback, (self, 0, arg))

    # numba Stream's surface ------------------------------------------------------------------
    def __int__(self) -> int:
        """The raw handle, as ``int(numba_stream)`` gives it."""
        return self.handle

    def __bool__(self) -> bool:
        """Always True: a RocmStream (the legacy default one too) is a stream to queue on."""
        return True

    @property
    def external(self) -> bool:
        """True for a borrowed stream (numba's name): rocmstreams does not own it."""
        return not self.owned

    @contextlib.contextmanager
    def auto_synchronize(self) -> Iterator["RocmStream"]:
        """``with stream.auto_synchronize():`` synchronizes the stream when the block ends
        (numba's name); unlike ``with stream:``, the stream stays open."""
        yield self
        self.synchronize()

    def async_done(self) -> "asyncio.Future[None]":
        """A future of the running asyncio loop, done once the work queued so far has finished.

        ``await stream.async_done()`` (or ``await stream``) waits without blocking the loop and
        without polling: a host callback on the stream resolves the future. Works inside
        Jupyter's running loop.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def done() -> None:
            loop.call_soon_threadsafe(resolve)

        self.__rocmstreams_core__.add_callback(done, ())
        return future

    def __await__(self) -> Generator[Any, None, None]:
        return self.async_done().__await__()

    def capture(self) -> CaptureBlock:
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
        capturing stream (allocate arrays, compile kernels and create events before it). Memory
        released meanwhile is freed after the block. On the cuda and hip backends a host
        callback captured into a graph stays registered for the life of the process.
        """
        return CaptureBlock(self.__rocmstreams_core__)

    # lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release an owned stream (queued work still completes); idempotent.

        An operation in flight in another thread finishes first; every later one raises
        StreamClosedError. On GPU backends a stream that is idle when released goes back to a
        small pool of its device and options, and the next RocmStream made with them reuses it
        without a runtime call (``rocmstreams.configure(stream_pool_size=...)``); a stream still
        running work is destroyed. Borrowed and default streams are only detached.

        Raises
        ------
        CaptureError
            The stream is capturing a graph; it stays open and the capture goes on.
        RocmStreamsError
            Called from a host callback (a stream dropped there is released after it).
        """
        if running:
            refuse("RocmStream.close()")
        self.__rocmstreams_core__.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        lifetime.drain()

    def __enter__(self) -> "RocmStream":
        core = self.__rocmstreams_core__
        core.enter()
        core.leave()
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

