"""Graph: the work of a stream, captured once with ``stream.capture()`` and replayed on demand."""
from __future__ import annotations

import functools
import gc
import warnings
import weakref
from typing import Any, Callable

from .backends import LEGACY_STREAM, Backend
from .errors import CaptureError, GraphClosedError, RocmStreamsError
from .stream import RocmStream

__all__ = ["Graph"]

_CAPTURING, _READY, _CLOSED = "capturing", "ready", "closed"


class _Handles:
    """The raw graph and executable-graph handles of one Graph; released once."""

    __slots__ = ("graph", "graph_exec", "kept")

    def __init__(self) -> None:
        self.graph: int | None = None
        self.graph_exec: int | None = None
        self.kept: list[Any] = []  # the arrays and scalars captured work was given


def _release(be: Backend, handles: _Handles) -> None:
    """Finalizer of graphs: destroys what was made, executable first; warns, never raises."""
    graph_exec, handles.graph_exec = handles.graph_exec, None
    graph, handles.graph = handles.graph, None
    kept, handles.kept = handles.kept, []
    for destroy, handle, what in ((be.graph_exec_destroy, graph_exec, "executable graph"),
                                  (be.graph_destroy, graph, "graph")):
        if handle is None:
            continue
        try:
            destroy(handle)
        except Exception as exc:  # noqa: BLE001 - cleanup must not raise
            warnings.warn(f"rocmstreams: destroying {what} {handle:#x} failed: {exc}",
                          ResourceWarning, stacklevel=2)
    del kept  # the captured arrays go once the graph is gone (a free waits for queued replays)


def _deliver(source: list[Any], target: list[Any]) -> None:
    """Host function after a replay: hand the replay's callback errors to the replay stream."""
    while True:
        try:
            item = source.pop(0)
        except IndexError:
            return
        target.append(item)


def _capturable(stream: RocmStream) -> int:
    """The handle of ``stream`` if a capture may begin on it; raises before any runtime call."""
    handle = stream._live()
    if handle == LEGACY_STREAM:
        raise CaptureError("the legacy default stream (handle 0) cannot be captured; capture a "
                           "stream you created, e.g. RocmStream(non_blocking=True)")
    if stream._capture is not None:
        raise CaptureError("this stream is already capturing a graph and captures do not nest; "
                           "end the open capture (leave its `with stream.capture()` block) first")
    return handle


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
    launches and copies were given alive until it is closed. ``close()`` frees the graph (idempotent; replays already queued still run); after
    it every operation raises :class:`~rocmstreams.errors.GraphClosedError`.
    """

    __slots__ = ("_backend", "_device", "_state", "_reason", "_handles", "_finalizer",
                 "_callback_errors", "_has_callbacks", "__weakref__")

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
        self._handles = _Handles()
        self._finalizer = weakref.finalize(self, _release, be, self._handles)
        self._callback_errors: list[tuple[Callable[..., Any], BaseException]] = []
        self._has_callbacks = False
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

    def _executable(self) -> int:
        state = self._state
        if state == _CAPTURING:
            raise CaptureError("this graph is still being captured; leave its "
                               "`with stream.capture()` block before launching it")
        if state == _CLOSED:
            raise GraphClosedError(f"this Graph is {self._reason}; capture a new one with "
                                   "`with stream.capture() as graph:`")
        return self._handles.graph_exec  # type: ignore[return-value]

    def _keep(self, objects: tuple) -> None:
        """Keep what captured work was given (its arrays) alive as long as the graph."""
        self._handles.kept.append(objects)

    def _errors_for_callback(self) -> list[tuple[Callable[..., Any], BaseException]]:
        """Where a host callback captured into this graph puts its exception."""
        self._has_callbacks = True
        return self._callback_errors

    # work ----------------------------------------------------------------------------------------
    def launch(self, stream: RocmStream) -> None:
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
        if not isinstance(stream, RocmStream):
            raise TypeError(f"graph.launch() takes a RocmStream, got {type(stream).__name__}; "
                            "wrap foreign streams with RocmStream.from_external")
        graph_exec = self._executable()
        handle = stream._live()
        if stream._capture is not None:
            raise CaptureError("graph.launch() on a stream that is capturing is not supported; "
                               "launch the graph before the capture begins or after it ends")
        if stream.device != self._device:
            raise ValueError(f"this graph runs on device {self._device}; launch it on a stream "
                             f"of that device, not of device {stream.device}")
        self._backend.graph_launch(graph_exec, handle)
        if self._has_callbacks:
            self._backend.launch_host_func(
                handle, functools.partial(_deliver, self._callback_errors, stream._callback_errors))

    # lifetime ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the graph (replays already queued still run); idempotent.

        Raises
        ------
        CaptureError
            The capture is still open: leave the ``with`` block first.
        """
        if self._state == _CAPTURING:
            raise CaptureError("cannot close a graph while it is being captured; leave its "
                               "`with stream.capture()` block first")
        self._discard("closed")

    def _discard(self, reason: str) -> None:
        if self._state != _CLOSED:
            self._state, self._reason = _CLOSED, reason
        self._finalizer()

    def _end(self, handle: int, failed: bool) -> None:
        """End the capture on ``handle``; instantiate, or discard when the block ``failed``."""
        be = self._backend
        try:
            self._handles.graph = be.stream_end_capture(handle)
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
            self._discard("discarded: its capture block raised")
            return
        try:
            self._handles.graph_exec = be.graph_instantiate(self._handles.graph)
        except BaseException:
            self._discard("discarded: it could not be instantiated")
            raise
        self._state = _READY

    def __reduce__(self) -> Any:
        raise TypeError("a Graph belongs to its process and cannot be pickled; "
                        "capture it again where it is needed")

    def __repr__(self) -> str:
        if self._state == _CLOSED:
            why = "" if self._reason == "closed" else f" ({self._reason})"
            return f"<Graph closed{why} backend={self._backend.name}>"
        detail = "" if self._state == _CAPTURING else f" exec={self._handles.graph_exec:#x}"
        return (f"<Graph {self._state}{detail} device={self._device} "
                f"backend={self._backend.name}>")


class _Capture:
    """The context manager :meth:`RocmStream.capture` returns; its ``as`` target is the Graph."""

    __slots__ = ("_stream", "_graph")

    def __init__(self, stream: RocmStream) -> None:
        _capturable(stream)
        self._stream = stream
        self._graph: Graph | None = None

    def __enter__(self) -> Graph:
        if self._graph is not None:
            raise CaptureError("a capture() context is entered once; call stream.capture() "
                               "again for another graph")
        stream = self._stream
        handle = _capturable(stream)
        graph = Graph._capturing(stream._backend, stream.device)
        # A finalizer that frees memory while the capture is open would make the runtime
        # refuse the free and invalidate the capture; collect what is already garbage first.
        gc.collect()
        stream._backend.stream_begin_capture(handle)
        stream._capture = graph
        self._graph = graph
        return graph

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        stream, graph = self._stream, self._graph
        if graph is None or stream._capture is not graph:
            return
        stream._capture = None
        graph._end(stream._handle, failed=exc_type is not None)  # type: ignore[arg-type]
