"""Graph: the work of a stream, captured once with ``stream.capture()`` and replayed on demand."""
from __future__ import annotations

import functools
import itertools
import threading
from typing import Any, Callable

from .backends import Backend, StreamCalls
from .core import lifetime
from .core.callbacks import refuse, running
from .core.lifetime import Handle
from .errors import CaptureError, DeviceMismatchError, GraphClosedError, RocmStreamsError
from .streamcore import GRAPH_LAUNCH, Capture, StreamCore, core_of

__all__ = ["Graph", "CaptureBlock"]

_CAPTURING, _READY, _CLOSED = "capturing", "ready", "closed"


def _destroy(be: Backend, graph: int, kept: list[Any], graph_exec: int) -> None:
    """Release of a graph's handles: the executable, then the graph, then what it kept."""
    try:
        if graph_exec:
            be.graph_exec_destroy(graph_exec)
    finally:
        try:
            if graph:
                be.graph_destroy(graph)
        finally:
            kept.clear()  # the captured arrays go once the graph is gone


class _Deliveries:
    """Where the callback errors of each replay go: to the stream that replay was launched on.

    Replays of one executable graph run one after another, in launch order, whichever streams
    they are launched on; but the host function that hands a replay's errors to its stream runs
    on that stream after the replay, so the next replay (on another stream) may run first. So
    each replay files its errors under its number (a node captured last in the graph), and the
    host function queued after launch number ``n`` takes the errors filed under ``n``.
    """

    __slots__ = ("errors", "ended", "launched", "filed", "lock")

    def __init__(self, errors: list[Any]) -> None:
        self.errors = errors  # what the captured callbacks append to, during one replay
        self.ended = itertools.count()  # replays ended (counted on callback threads)
        self.launched = itertools.count()  # replays launched
        self.filed: dict[int, list[Any]] = {}  # replay number -> its errors, until delivered
        self.lock = threading.Lock()  # numbers are handed out in launch order

    def replay_ended(self) -> None:
        """The graph's last node: file the errors this replay's callbacks raised."""
        number = next(self.ended)
        taken = []
        while self.errors:
            taken.append(self.errors.pop(0))
        if taken:
            self.filed[number] = taken

    def launch(self, calls: StreamCalls, graph_exec: int) -> int:
        """Queue one replay (through the door); its number."""
        with self.lock:
            calls.graph_launch(graph_exec)
            return next(self.launched)

    def deliver(self, number: int, target: list[Any]) -> None:
        """Host function after replay ``number``: hand its errors to the replay's stream."""
        target.extend(self.filed.pop(number, ()))


class Graph:
    """Work recorded from a stream, replayed as a whole with :meth:`launch`.

    Made only by :meth:`RocmStream.capture`::

        with stream.capture() as graph:
            kernel[blocks, threads, stream](d_x, np.float32(2))
            rs.copy_async(pinned_out, d_x, stream=stream)
        for _ in range(100):
            graph.launch(stream)         # queues one replay; returns at once
        stream.synchronize()

    Notes
    -----
    A replay re-runs every captured kernel, copy and host callback in captured order, on the
    memory the capture named: copies read and write it at replay time, so new data in a pinned
    input array is what the next replay sees. The graph keeps the arrays its captured kernel
    launches and copies were given alive until it is closed. ``close()`` frees the graph
    (idempotent; replays already queued still run); after it every operation raises
    :class:`~rocmstreams.errors.GraphClosedError`.
    """

    __slots__ = ("_backend", "_device", "_state", "_reason", "_kept", "_handle", "_finalizer",
                 "_capture", "_deliveries", "__weakref__")
    _backend: Backend
    _device: int
    _state: str
    _reason: str
    _kept: list[Any]  # the arguments captured work was given
    _handle: Handle | None
    _finalizer: Any
    _capture: Capture | None
    _deliveries: _Deliveries | None  # for a graph with captured host callbacks

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a Graph is made by RocmStream.capture(): "
                        "`with stream.capture() as graph: ...`")

    @classmethod
    def _capturing(cls, be: Backend, device: int) -> "Graph":
        self = object.__new__(cls)
        self._backend = be
        self._device = device
        self._state = _CAPTURING
        self._reason = ""
        self._kept = []  # the arguments captured work was given
        self._handle = None
        self._finalizer = None
        self._capture = None
        self._deliveries = None
        return self

    # state ---------------------------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` has run, or once a failed capture discarded the graph."""
        return self._state == _CLOSED

    @property
    def device(self) -> int:
        """Ordinal of the device the graph runs on."""
        return self._device

    @property
    def backend_name(self) -> str:
        """Name of the backend the graph lives on: ``cuda``, ``hip`` or ``cpu``."""
        return self._backend.name

    def _check_launchable(self) -> Handle:
        if self._state == _CAPTURING:
            raise CaptureError("this graph is still being captured; leave its "
                               "`with stream.capture()` block before launching it")
        if self._state == _CLOSED or self._handle is None:
            raise GraphClosedError(f"this Graph is {self._reason}; capture a new one with "
                                   "`with stream.capture() as graph:`")
        return self._handle

    # work ----------------------------------------------------------------------------------------
    def launch(self, stream: Any) -> None:
        """Queue one replay of the graph on ``stream``; returns at once.

        The replay runs after the work queued on ``stream`` before it, and after every earlier
        replay of this graph (on any stream). An exception a captured host callback raises is
        raised as :class:`~rocmstreams.errors.CallbackError` at ``stream``'s next synchronize.

        Parameters
        ----------
        stream : RocmStream
            An open stream of the graph's device; it need not be the stream that was captured.

        Raises
        ------
        TypeError
            ``stream`` is not a RocmStream.
        CaptureError
            The graph's capture is still open, or ``stream`` is capturing.
        GraphClosedError
            The graph was closed or discarded.
        StreamClosedError
            ``stream`` is closed.
        """
        if running:
            refuse("Graph.launch()")
        core = core_of(stream, "graph.launch()")
        handle = self._check_launchable()
        if core.device != self._device:
            raise DeviceMismatchError(
                f"this graph runs on device {self._device}; launch it on a stream of that device "
                f"(rs.RocmStream(device={self._device})), not of device {core.device}")
        deliveries = self._deliveries
        graph_exec = handle.enter()
        try:
            if deliveries is None:
                core.submit(GRAPH_LAUNCH, type(core.calls).graph_launch, graph_exec)
                return
            number = core.submit(GRAPH_LAUNCH, deliveries.launch, graph_exec)
        finally:
            handle.leave()
        core.add_callback(deliveries.deliver, (number, core.callback_errors))

    # lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the graph (replays already queued still run); idempotent.

        Raises
        ------
        CaptureError
            The capture is still open: leave the ``with`` block first.
        """
        if running:
            refuse("Graph.close()")
        if self._state == _CAPTURING:
            raise CaptureError("cannot close a graph while it is being captured; leave its "
                               "`with stream.capture()` block first")
        self._discard("closed")

    def _discard(self, reason: str) -> None:
        if self._state != _CLOSED:
            self._state, self._reason = _CLOSED, reason
        if self._handle is not None:
            self._handle.close()
            self._finalizer.detach()
        self._kept.clear()

    def _end(self, core: StreamCore, failed: bool) -> None:
        """End the capture; instantiate, or discard when the block ``failed``."""
        be = self._backend
        capture = self._capture
        if not failed and capture is not None and capture.has_callbacks:
            deliveries = _Deliveries(capture.errors)
            try:
                core.add_callback(deliveries.replay_ended, ())  # the graph's last node
            except BaseException:
                self._end(core, failed=True)
                raise
            self._deliveries = deliveries
        try:
            graph = core.end_capture()
        except RocmStreamsError as exc:
            self._discard("discarded: its capture failed")
            if failed:
                return  # the block's own exception says more
            raise CaptureError(
                "the capture failed and nothing was recorded: an operation inside the block was "
                f"refused by the runtime, which invalidated the capture ({exc.message})",
                backend=exc.backend, code=exc.code, name=exc.name,
                runtime_message=exc.runtime_message) from exc
        if failed:
            _destroy(be, graph, self._kept, 0)
            self._discard("discarded: its capture block raised")
            return
        try:
            graph_exec = be.graph_instantiate(graph)
        except BaseException:
            _destroy(be, graph, self._kept, 0)
            self._discard("discarded: it could not be instantiated")
            raise
        release: Callable[[int], None] = functools.partial(_destroy, be, graph, self._kept)
        self._handle = Handle(graph_exec, release, "Graph", GraphClosedError)
        self._finalizer = lifetime.own(self, self._handle)
        self._state = _READY

    def __reduce__(self) -> Any:
        raise TypeError("a Graph belongs to its process and cannot be pickled; "
                        "capture it again where it is needed")

    def __repr__(self) -> str:
        if self._state == _CLOSED:
            why = "" if self._reason == "closed" else f" ({self._reason})"
            return f"<Graph closed{why} backend={self._backend.name}>"
        detail = "" if self._handle is None else f" exec={self._handle.value:#x}"
        return (f"<Graph {self._state}{detail} device={self._device} "
                f"backend={self._backend.name}>")


class CaptureBlock:
    """What :meth:`RocmStream.capture` returns: ``with`` it, and its target is the Graph."""

    __slots__ = ("_core", "_graph")

    def __init__(self, core: StreamCore) -> None:
        core.check_capturable()  # refused now, before the block
        self._core = core
        self._graph: Graph | None = None

    def __enter__(self) -> Graph:
        if self._graph is not None:
            raise CaptureError("a capture() context is entered once; call stream.capture() "
                               "again for another graph")
        core = self._core
        graph = Graph._capturing(core.backend, core.device)
        graph._capture = core.begin_capture(graph._kept)
        self._graph = graph
        return graph

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        core, graph = self._core, self._graph
        if graph is None or core.capture is not graph._capture:
            return
        graph._end(core, failed=exc_type is not None)
