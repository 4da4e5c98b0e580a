"""The embedded cpu backend: a worker thread per stream, kernels through Numba's CUDA simulator.

Queued work is truly asynchronous: each stream's thread runs its operations in order, so
``stream_query`` is False while anything is queued or running. Events are markers in a stream's
sequence, and waits are real cross-thread dependencies. The legacy default stream keeps its GPU
rules: its work waits for all earlier work on blocking streams, and work on a blocking stream
waits for earlier work on it. Non-blocking streams take part in neither.

The simulator runs one kernel at a time (it keeps one process-wide kernel context), so kernels
from all streams share one execution engine, like a GPU with a single kernel slot; copies and host
functions run concurrently on their streams' threads.

Several devices: ``simulate_devices(n)`` (the configuration's ``cpu_devices``, also
``ROCMSTREAMS_CPU_DEVICES``) makes the backend report ``n`` devices. Each has its own legacy
default stream, per-thread default streams, memory stream and memory pool; the current device
is the calling thread's, as in CUDA. The runtime's device rules are kept, so that the device
logic above is checked without GPUs: an event records only on a stream of its device; memory is
allocated on a stream of its device; a kernel or copy touching another device's memory on a
stream is refused (copies between devices go through ``memcpy_peer_async``); a stream waits for
an event of any device.

Graph capture: while a stream captures, the operations submitted for it are appended to the
capture's node list instead of being queued. A graph is that list; launching its executable
submits the nodes, in order, onto the target stream like any other work there, behind the
previous launch of the same executable (as ``cudaGraphLaunch`` orders launches). Nodes are the
same closures a direct submission would queue, so copies and kernels touch memory when they run.
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import ctypes
import itertools
import os
import platform
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import (BackendUnavailableError, CaptureError, EventNotReadyError,
                      InvalidDeviceError, OutOfMemoryError, RocmStreamsError, SynchronizeError)
from .base import LEGACY_STREAM, PER_THREAD_STREAM, KernelDriver
from .holds import StreamHolds
from .host_bytes import host_bytes

# Status codes, numbered as hipError_t so that errors read the same on every backend.
_SUCCESS, _OUT_OF_MEMORY, _INVALID_DEVICE, _INVALID_HANDLE, _NOT_READY, _LAUNCH_FAILURE = (
    0, 2, 101, 400, 600, 719)
_CAPTURE_UNSUPPORTED, _CAPTURE_INVALIDATED, _CAPTURE_UNMATCHED = 900, 901, 903
_NAMES = {_OUT_OF_MEMORY: "cpuErrorOutOfMemory", _INVALID_DEVICE: "cpuErrorInvalidDevice",
          _INVALID_HANDLE: "cpuErrorInvalidResourceHandle", _NOT_READY: "cpuErrorNotReady",
          _LAUNCH_FAILURE: "cpuErrorLaunchFailure",
          _CAPTURE_UNSUPPORTED: "cpuErrorStreamCaptureUnsupported",
          _CAPTURE_INVALIDATED: "cpuErrorStreamCaptureInvalidated",
          _CAPTURE_UNMATCHED: "cpuErrorStreamCaptureUnmatched"}
_PRIORITY_RANGE = (0, -1)  # (least, greatest), as a GPU reports it


def _size_class(nbytes: int) -> int:
    """The bytes a pool block of ``nbytes`` takes: at least 512, else the next of four sizes per
    power of two, so that mixed sizes find freed blocks to reuse (as the GPU pools do)."""
    if nbytes <= 512:
        return 512
    step = 1 << max((nbytes - 1).bit_length() - 3, 0)
    return -(-nbytes // step) * step


def _fail(cls: type[RocmStreamsError], what: str, code: int, detail: str = "") -> RocmStreamsError:
    """The cpu backend's one error-construction point (``CpuBackend.error`` is this)."""
    return cls(what, backend="cpu", code=code, name=_NAMES.get(code, "cpuErrorUnknown"),
               runtime_message=detail or None)


@dataclass
class _Op:
    fn: Callable[[], None]
    after: list[tuple["_Worker", int]] = field(default_factory=list)


class _Worker:
    """One stream: a thread running queued operations in order, and its progress counters."""

    def __init__(self, name: str, blocking: bool, device: int = 0) -> None:
        self.blocking = blocking
        self.device = device
        self.enqueued = 0
        self.completed = 0
        self.error: BaseException | None = None
        self.stopped = False
        self._cond = threading.Condition()
        self._queue: collections.deque[_Op | None] = collections.deque()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: _Op) -> int:
        with self._cond:
            self._queue.append(op)
            self.enqueued += 1
            self._cond.notify_all()
            return self.enqueued

    def done_through(self, seq: int) -> bool:
        return self.completed >= seq

    def wait_for(self, seq: int) -> None:
        with self._cond:
            while self.completed < seq:
                self._cond.wait()

    def stop(self) -> None:
        self.stopped = True
        with self._cond:
            self._queue.append(None)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                op = self._queue.popleft()
            if op is None:
                return
            for worker, seq in op.after:
                worker.wait_for(seq)
            try:
                op.fn()
            except BaseException as exc:  # kept, raised at the next synchronize
                with self._cond:
                    self.error = self.error or exc
            del op  # what it held goes now, outside the lock (its finalizers defer anyway)
            with self._cond:
                self.completed += 1
                self._cond.notify_all()


@dataclass
class _Record:
    worker: _Worker
    seq: int
    time: float | None = None


@dataclass
class _Event:
    timing: bool
    device: int = 0
    record: _Record | None = None


@dataclass
class _Capture:
    """A stream's open capture: the operations recorded so far, and whether it still holds."""
    nodes: list[Callable[[], None]] = field(default_factory=list)
    invalidated: str | None = None


@dataclass
class _Exec:
    """An instantiated graph: its nodes, and where the previous launch of it ends."""
    nodes: tuple[Callable[[], None], ...]
    last: tuple[_Worker, int] | None = None


def _nothing() -> None:
    pass


_ENGINE = threading.Lock()  # the simulator's single kernel slot


class _KernelContextCuda:
    """Stands in for ``numba.cuda`` in a kernel's closure while the simulator runs it: every
    attribute comes from the simulator's current kernel context (its fake cuda module, with
    ``grid``, ``threadIdx``, ...), as the simulator's own swap gives the kernel's globals."""

    def __getattr__(self, name: str) -> Any:
        from numba.cuda.simulator import kernel as simulated
        context = simulated._get_kernel_context()
        if context is None:
            raise AttributeError(name)
        return getattr(context, name)


_CLOSURE_CUDA = _KernelContextCuda()


@contextlib.contextmanager
def _closure_cuda_swapped(fn: Any) -> Iterator[None]:
    """The simulator swaps its fake ``cuda`` module in for a kernel's *globals* only: a kernel
    written inside a function that imported ``cuda`` there (a closure cell) would see the real
    simulator package, which has no ``grid``. Its cells holding ``numba.cuda`` are swapped too,
    for the launch (under the engine lock: one kernel at a time)."""
    from numba import cuda
    cells = [c for c in (getattr(fn, "__closure__", None) or ())
             if _cell_holds(c, cuda)]
    for c in cells:
        c.cell_contents = _CLOSURE_CUDA
    try:
        yield
    finally:
        for c in cells:
            c.cell_contents = cuda


def _cell_holds(cell: Any, value: Any) -> bool:
    try:
        return cell.cell_contents is value
    except ValueError:  # an empty cell
        return False


class _ThreadMarker:
    """Lives in a thread's local storage: collected when the thread ends."""


class CpuBackend:
    """The :class:`~rocmstreams.backends.base.Backend` of the embedded cpu runtime."""

    name = "cpu"
    stream_pool_size = 0  # a cpu stream is a thread: none are kept

    @property
    def native_calls(self) -> bool:
        """Always False: the cpu runtime is Python, with no C calls to make."""
        return False

    @native_calls.setter
    def native_calls(self, on: bool) -> None:
        pass

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(0x1000, 0x10)
        self._streams: dict[int, _Worker] = {}
        self._events: dict[int, _Event] = {}
        self._memory: dict[int, np.ndarray] = {}
        self._starts: list[int] = []
        self._count = 1  # simulated devices (simulate_devices)
        self._legacies: dict[int, _Worker] = {0: _Worker("rocmstreams-cpu-legacy", True)}
        self._per_thread = threading.local()
        self._blocking: list[_Worker] = []  # every blocking stream, per-thread defaults included
        self._current = threading.local()  # the calling thread's current device (.device)
        self._owners: dict[int, int] = {}  # device allocation -> its device
        self._peers: set[tuple[int, int]] = set()  # (device, peer) pairs with access enabled
        #: Whether simulated devices can reach each other's memory (tests turn it off to take
        #: the host-staged path of copies between devices).
        self.peer_capable = True
        self._captures: dict[_Worker, _Capture] = {}
        self._graphs: dict[int, list[Callable[[], None]]] = {}
        self._execs: dict[int, _Exec] = {}
        # per-thread default streams of threads that ended (appended by a finalizer: no lock)
        self._ended: list[_Worker] = []
        self._inherited: set[int] = set()  # handles of a parent process, after a fork
        self._memory_handles: dict[int, int] = {}
        self._start_memory_stream(0)
        # stream-ordered memory: freed buffers by rounded size, put back by the freeing stream's
        # worker once the stream passed the free (so they are free for any stream), the bytes
        # each device's pool holds [reserved, peak], and holds on streams a queued free still
        # needs; keyed by (device, size), and by (freeing stream's worker, size)
        self._cached: dict[tuple[int, int], list[np.ndarray]] = {}
        self._ordered: dict[tuple[_Worker, int], list[np.ndarray]] = {}  # freed, not yet run
        self._pool_bytes: dict[int, list[int]] = {}
        self._holds = StreamHolds(self._lock)
        self.release_threshold = (1 << 64) - 1
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child the worker threads are gone: start afresh. Streams and events
        inherited from the parent are unknown here (using one raises a clear error)."""
        self._lock = threading.RLock()
        self._inherited = self._inherited | set(self._streams) | set(self._events)
        self._streams, self._events, self._captures = {}, {}, {}
        self._graphs, self._execs = {}, {}
        self._legacies = {0: _Worker("rocmstreams-cpu-legacy", True)}
        self._per_thread = threading.local()
        self._current = threading.local()
        self._blocking, self._ended = [], []
        self._memory_handles = {}
        self._start_memory_stream(0)
        self._holds = StreamHolds(self._lock)

    def _start_memory_stream(self, device: int) -> int:
        """The stream of ``device`` for memory allocated without one; device 0's is started
        with the backend (so that its thread is there before any test counts threads)."""
        with self._lock:
            handle = self._memory_handles.get(device)
            if handle is None:
                handle = next(self._ids)
                self._streams[handle] = _Worker(f"rocmstreams-cpu-memory-{handle:#x}", False,
                                                device)
                self._memory_handles[device] = handle
            return handle

    def memory_stream(self, device: int) -> int:
        return self._memory_handles.get(device) or self._start_memory_stream(device)

    def error(self, code: int, what: str, *, name: str | None = None,
              message: str | None = None,
              error_class: type[RocmStreamsError] = RocmStreamsError) -> RocmStreamsError:
        return _fail(error_class, what, code, message or "")

    # devices -------------------------------------------------------------------------------
    def simulate_devices(self, count: int) -> None:
        """Report ``count`` devices from now on (the configuration's ``cpu_devices``)."""
        self._count = count

    def get_device_count(self) -> int:
        return self._count

    def get_device(self) -> int:
        return getattr(self._current, "device", 0)

    def set_device(self, ordinal: int) -> None:
        if not 0 <= ordinal < self._count:
            raise _fail(InvalidDeviceError, f"device {ordinal} does not exist", _INVALID_DEVICE)
        self._current.device = ordinal

    def _legacy_of(self, device: int) -> _Worker:
        worker = self._legacies.get(device)
        if worker is None:
            with self._lock:
                worker = self._legacies.get(device)
                if worker is None:
                    worker = self._legacies[device] = _Worker(
                        f"rocmstreams-cpu-legacy-{device}", True, device)
        return worker

    def device_name(self, ordinal: int) -> str:
        return f"CPU ({platform.processor() or platform.machine()}, Numba CUDA simulator)"

    def device_get_stream_priority_range(self) -> tuple[int, int]:
        return _PRIORITY_RANGE

    def versions(self) -> dict[str, str]:
        import numba
        return {"runtime": "rocmstreams cpu worker threads", "numba": numba.__version__,
                "python": sys.version.split()[0]}

    # streams -------------------------------------------------------------------------------
    def _worker(self, stream: int) -> _Worker:
        if stream == LEGACY_STREAM:
            return self._legacy_of(self.get_device())
        if stream == PER_THREAD_STREAM:
            device = self.get_device()
            workers = getattr(self._per_thread, "workers", None)
            if workers is None:
                workers = self._per_thread.workers = {}
                # the thread-local dict, and so this marker, goes when the thread ends
                self._per_thread.marker = marker = _ThreadMarker()
                weakref.finalize(marker, self._ended.extend, workers.values())
            worker = workers.get(device)
            if worker is None:
                worker = workers[device] = _Worker(
                    f"rocmstreams-cpu-per-thread-{threading.get_ident()}-{device}", True, device)
                with self._lock:
                    self._blocking.append(worker)
            return worker
        try:
            return self._streams[stream]
        except KeyError:
            if stream in self._inherited:
                raise _fail(RocmStreamsError, f"stream {stream:#x} belongs to the parent of this "
                            "forked process; create streams in the child, or start workers "
                            "with the 'spawn' method (multiprocessing.set_start_method('spawn'))",
                            _INVALID_HANDLE) from None
            raise _fail(RocmStreamsError, f"no live stream has handle {stream:#x}",
                        _INVALID_HANDLE) from None

    def _reap_ended(self) -> None:
        """Stop the per-thread default streams of ended threads once their work is done
        (under the backend lock)."""
        while self._ended:
            self._ended.pop().stop()
        if any(w.stopped and w.completed == w.enqueued for w in self._blocking):
            self._blocking[:] = [w for w in self._blocking
                                 if not (w.stopped and w.completed == w.enqueued)]

    def _submit(self, stream: int, fn: Callable[[], None],
                after: Sequence[tuple[_Worker, int]] = ()) -> int:
        """Queue ``fn`` on ``stream`` behind the legacy default stream's implicit ordering.

        On a capturing stream, ``fn`` is recorded instead (and 0 returned): cross-stream
        dependencies (``after``) cannot be recorded and are refused.
        """
        with self._lock:
            worker = self._worker(stream)
            if self._captures:
                capture = self._captures.get(worker)
                if capture is not None:
                    if after:
                        raise _fail(CaptureError, f"stream {stream:#x} is capturing a graph: the "
                                    "cpu backend cannot record waits on events in a capture",
                                    _CAPTURE_UNSUPPORTED)
                    capture.nodes.append(fn)
                    return 0
            deps = list(after)
            legacy = self._legacy_of(worker.device)
            if worker is legacy:
                if self._ended or len(self._blocking) > 8:
                    self._reap_ended()
                deps += [(w, w.enqueued) for w in self._blocking
                         if w is not worker and w.device == worker.device and
                         w.completed < w.enqueued]
            elif worker.blocking:
                deps.append((legacy, legacy.enqueued))
            return worker.submit(_Op(fn, deps))

    def stream_create(self, non_blocking: bool, priority: int, device: int | None = None) -> int:
        with self._lock:
            handle = next(self._ids)
            worker = _Worker(f"rocmstreams-cpu-stream-{handle:#x}", not non_blocking,
                             self.get_device() if device is None else device)
            self._streams[handle] = worker
            if worker.blocking:
                self._blocking.append(worker)
            return handle

    def _refuse_if_capturing(self, worker: _Worker, stream: int, what: str) -> None:
        """As the GPU runtimes do: refuse ``what`` on a capturing stream, invalidating it."""
        with self._lock:
            capture = self._captures.get(worker)
            if capture is None:
                return
            capture.invalidated = capture.invalidated or what
        raise _fail(CaptureError, f"{what} of stream {stream:#x} is not allowed while it is "
                    "capturing a graph; the capture is invalidated", _CAPTURE_UNSUPPORTED)

    def stream_calls(self, stream: int) -> "CpuStreamCalls":
        return CpuStreamCalls(self, stream)

    def _stream_query(self, stream: int) -> bool:
        worker = self._worker(stream)
        if self._captures:
            self._refuse_if_capturing(worker, stream, "a query")
        if not worker.done_through(worker.enqueued):
            return False
        if worker.error is not None:  # as a GPU's query reports a fault of finished work
            self._raise_pending(worker)
        return True

    def _stream_synchronize(self, stream: int) -> None:
        worker = self._worker(stream)
        if self._captures:
            self._refuse_if_capturing(worker, stream, "a synchronize")
        worker.wait_for(worker.enqueued)
        self._raise_pending(worker)

    def _raise_pending(self, worker: _Worker) -> None:
        with worker._cond:
            exc, worker.error = worker.error, None
        if exc is not None:
            raise _fail(SynchronizeError, "work queued on the stream failed", _LAUNCH_FAILURE,
                        f"{type(exc).__name__}: {exc}") from exc

    def stream_destroy(self, stream: int) -> None:
        with self._lock:
            if self._holds.defer_destroy(stream):
                return  # stopped by the last stream_unhold
            worker = self._streams.pop(stream, None)
            if worker is None:
                raise _fail(RocmStreamsError, f"no live stream has handle {stream:#x}",
                            _INVALID_HANDLE)
            if worker in self._blocking:
                self._blocking.remove(worker)
            self._captures.pop(worker, None)
        worker.stop()  # queued work still runs, as cudaStreamDestroy lets it

    def _idle(self, worker: _Worker) -> bool:
        """Whether an operation queued on ``worker`` now would wait for nothing (under the
        backend lock): its own queue ran, and by the legacy default stream's rules, for the
        legacy stream every blocking stream's, for a blocking stream the legacy stream's."""
        return worker.completed == worker.enqueued and self._waits_for_nothing_else(worker)

    def _waits_for_nothing_else(self, worker: _Worker) -> bool:
        """Whether the legacy default stream's rules add no wait to an operation queued on
        ``worker`` now (under the backend lock)."""
        legacy = self._legacy_of(worker.device)
        if worker is legacy:
            return not any(w.completed < w.enqueued and w.device == worker.device
                           for w in self._blocking)
        return not worker.blocking or legacy.completed == legacy.enqueued

    def _stream_wait_event(self, stream: int, event: int) -> None:
        record = self._event(event).record
        if record is None:
            return
        with self._lock:
            worker = self._worker(stream)
            if record.worker.done_through(record.seq) and not self._captures and \
                    self._waits_for_nothing_else(worker):
                return  # the wait would wait for nothing
            self._submit(stream, _nothing, [(record.worker, record.seq)])

    # events --------------------------------------------------------------------------------
    def _event(self, event: int) -> _Event:
        try:
            return self._events[event]
        except KeyError:
            raise _fail(RocmStreamsError, f"no live event has handle {event:#x}",
                        _INVALID_HANDLE) from None

    def event_create(self, timing: bool) -> int:
        with self._lock:
            handle = next(self._ids)
            self._events[handle] = _Event(timing, self.get_device())
            return handle

    def _event_record(self, event: int, stream: int) -> None:
        ev = self._event(event)
        with self._lock:
            worker = self._worker(stream)
            if worker.device != ev.device:  # as cudaEventRecord refuses it
                raise _fail(RocmStreamsError, f"event {event:#x} of device {ev.device} cannot "
                            f"be recorded on stream {stream:#x} of device {worker.device}",
                            _INVALID_HANDLE)
            if worker in self._captures:
                raise _fail(CaptureError, f"stream {stream:#x} is capturing a graph: the cpu "
                            "backend cannot record events in a capture", _CAPTURE_UNSUPPORTED)
            if worker is self._legacies.get(worker.device) and (self._ended or len(self._blocking) > 8):
                self._reap_ended()  # as a legacy submit does
            if self._idle(worker):
                # nothing it would wait for: the event is complete at once, as a GPU's would be
                ev.record = _Record(worker, worker.enqueued, time.perf_counter())
                return
            record = _Record(worker, 0)

            def mark() -> None:
                record.time = time.perf_counter()

            record.seq = self._submit(stream, mark)
            ev.record = record

    def event_query(self, event: int) -> bool:
        record = self._event(event).record
        return record is None or record.worker.done_through(record.seq)

    def event_synchronize(self, event: int) -> None:
        record = self._event(event).record
        if record is not None:
            record.worker.wait_for(record.seq)

    def event_elapsed_time(self, start: int, end: int) -> float:
        a, b = self._event(start).record, self._event(end).record
        if a is None or b is None or a.time is None or b.time is None:
            raise _fail(EventNotReadyError, "the work before an event has not finished",
                        _NOT_READY)
        return (b.time - a.time) * 1e3

    def event_destroy(self, event: int) -> None:
        with self._lock:
            if self._events.pop(event, None) is None:
                raise _fail(RocmStreamsError, f"no live event has handle {event:#x}",
                            _INVALID_HANDLE)

    # memory --------------------------------------------------------------------------------
    # Device and page-locked memory are both host buffers here; a queued operation holds the
    # buffers it touches, so a free never pulls memory from under queued work. Pageable memory
    # follows CUDA's rules: a copy from it is staged at once, a copy into it returns when done.
    def _allocate(self, nbytes: int, device: int | None = None) -> int:
        try:
            buf = np.empty(max(nbytes, 1) + 256, np.uint8)
        except (MemoryError, ValueError) as exc:
            raise _fail(OutOfMemoryError, f"cannot allocate {nbytes} bytes; free memory (or "
                        "allocate less) and try again", _OUT_OF_MEMORY,
                        str(exc)) from None
        ptr = (buf.ctypes.data + 255) & ~255
        with self._lock:
            self._memory[ptr] = buf
            bisect.insort(self._starts, ptr)
            if device is not None:
                self._owners[ptr] = device
        return ptr

    def _release(self, ptr: int) -> None:
        with self._lock:
            if self._memory.pop(ptr, None) is None:
                raise _fail(RocmStreamsError, f"{ptr:#x} is not an allocation", _INVALID_HANDLE)
            del self._starts[bisect.bisect_left(self._starts, ptr)]
            self._owners.pop(ptr, None)

    def malloc(self, nbytes: int) -> int:
        return self._allocate(nbytes, self.get_device())

    host_malloc = _allocate
    free = host_free = _release

    def device_synchronize(self, device: int) -> None:
        with self._lock:
            workers = {*self._streams.values(), *self._blocking, *self._legacies.values()}
        for worker in workers:
            if worker.device == device:
                worker.wait_for(worker.enqueued)  # its errors stay for its own synchronize

    # stream-ordered memory: the same rules as the GPU runtimes' pools, over host buffers. A
    # free is an operation on its stream; only when the stream runs it does the buffer go back
    # to the pool, so memory is never handed out again before the work queued ahead of the free
    # (and whatever that work waited for) has run.
    def malloc_async(self, nbytes: int, stream: int, device: int) -> int:
        size = _size_class(nbytes)
        buf = None
        with self._lock:
            worker = self._worker(stream)  # a bad stream is refused before anything is allocated
            self._same_device(worker, stream, device, "allocate memory of")
            for found in (self._ordered.get((worker, size)), self._cached.get((device, size))):
                if found:
                    buf = found.pop()
                    break
        if buf is None:
            ptr = self._allocate(size, device)
            with self._lock:
                usage = self._pool_bytes.setdefault(device, [0, 0])
                usage[0] += size
                usage[1] = max(usage)
            return ptr
        ptr = (buf.ctypes.data + 255) & ~255
        with self._lock:
            self._memory[ptr] = buf
            bisect.insort(self._starts, ptr)
            self._owners[ptr] = device
        return ptr

    @staticmethod
    def _same_device(worker: _Worker, stream: int, device: int, what: str) -> None:
        if worker.device != device:
            raise _fail(RocmStreamsError, f"cannot {what} device {device} on stream "
                        f"{stream:#x} of device {worker.device}", _INVALID_HANDLE)

    def free_async(self, ptr: int, nbytes: int, stream: int, device: int) -> None:
        with self._lock:
            buf = self._memory.get(ptr)
            if buf is None:
                raise _fail(RocmStreamsError, f"{ptr:#x} is not an allocation", _INVALID_HANDLE)
            self._release(ptr)
        size = _size_class(nbytes)
        with self._lock:
            worker = self._worker(stream)
        self._same_device(worker, stream, device, "free memory of")
        cached, ordered, key = self._cached, self._ordered, (worker, size)

        def give_back() -> None:
            with self._lock:
                waiting = ordered.get(key, [])
                for i, b in enumerate(waiting):
                    if b is buf:  # not taken by an allocation on the stream meanwhile
                        del waiting[i]
                        cached.setdefault((device, size), []).append(buf)
                        return

        with self._lock:
            if self._idle(worker):
                cached.setdefault((device, size), []).append(buf)  # the stream ran everything: free now
                return
            # until the stream runs the free, only allocations on that stream may take it (their
            # work comes after the free in the stream's order), as the GPU pools do
            ordered.setdefault(key, []).append(buf)
            self._submit(stream, give_back)

    def pool_trim(self, device: int) -> None:
        self.pool_trim_to(device, 0)

    def pool_trim_to(self, device: int, keep: int) -> None:
        with self._lock:
            usage = self._pool_bytes.setdefault(device, [0, 0])
            for (owner, size), bufs in list(self._cached.items()):
                while owner == device and bufs and usage[0] > keep:
                    bufs.pop()
                    usage[0] -= size

    def pool_usage(self, device: int) -> dict[str, int]:
        with self._lock:
            reserved, peak = self._pool_bytes.get(device, [0, 0])
            return {"reserved_bytes": reserved, "reserved_peak_bytes": peak}

    def set_release_threshold(self, nbytes: int) -> None:
        self.release_threshold = nbytes

    def memory_pools(self, device: int) -> bool:
        return True

    def stream_hold(self, stream: int) -> None:
        self._holds.hold(stream, self._streams)

    def stream_unhold(self, stream: int) -> None:
        if self._holds.unhold(stream):
            self.stream_destroy(stream)

    def _buffer_at(self, addr: int) -> np.ndarray | None:
        """The allocation holding ``addr``, or None for pageable host memory."""
        return self._allocation_at(addr)[0]

    def _allocation_at(self, addr: int) -> tuple[np.ndarray | None, int | None]:
        """The allocation holding ``addr`` and its device (None: host memory)."""
        with self._lock:
            i = bisect.bisect_right(self._starts, addr) - 1
            if i < 0:
                return None, None
            start = self._starts[i]
            buf = self._memory[start]
            if addr >= buf.ctypes.data + buf.nbytes:
                return None, None
            return buf, self._owners.get(start)

    def _refuse_other_device(self, stream: int, addrs: Sequence[int]) -> None:
        """As a GPU faults on memory it cannot reach: a kernel touching device memory of
        another device than its stream's is refused before it is queued."""
        if self._count == 1:
            return
        with self._lock:
            device = self._worker(stream).device
        for addr in addrs:
            owner = self._allocation_at(addr)[1]
            if owner is not None and owner != device:
                raise _fail(RocmStreamsError, f"a kernel on stream {stream:#x} of device "
                            f"{device} touches memory of device {owner} at {addr:#x}",
                            _INVALID_HANDLE)

    def _refuse_between_devices(self, dst: int, src: int) -> None:
        """Stricter than a runtime under unified addressing: a plain copy between the memory
        of two devices is refused, so that copies between devices take memcpy_peer_async."""
        if self._count == 1:
            return
        a, b = self._allocation_at(dst)[1], self._allocation_at(src)[1]
        if a is not None and b is not None and a != b:
            raise _fail(RocmStreamsError, f"memcpy_async from device {b} at {src:#x} to device "
                        f"{a} at {dst:#x}: copy between devices with memcpy_peer_async",
                        _INVALID_HANDLE)

    # peers ---------------------------------------------------------------------------------
    def peer_access(self, device: int, peer: int) -> bool:
        """Whether ``device`` reaches ``peer``'s memory directly, enabling it once per pair."""
        if device == peer:
            return True
        if not self.peer_capable:
            return False
        with self._lock:
            self._peers.add((device, peer))
        return True

    def peers_enabled(self) -> frozenset[tuple[int, int]]:
        """The (device, peer) pairs whose access was enabled."""
        with self._lock:
            return frozenset(self._peers)

    def _memcpy_peer_async(self, dst: int, dst_device: int, src: int, src_device: int,
                           nbytes: int, stream: int) -> None:
        dst_buf, dst_owner = self._allocation_at(dst)
        src_buf, src_owner = self._allocation_at(src)
        if dst_owner != dst_device or src_owner != src_device:
            raise _fail(RocmStreamsError, f"a peer copy needs device memory of device "
                        f"{src_device} at {src:#x} and of device {dst_device} at {dst:#x}",
                        _INVALID_HANDLE)

        def copy(_held: tuple[Any, ...] = (dst_buf, src_buf)) -> None:
            ctypes.memmove(dst, src, nbytes)

        self._submit(stream, copy)

    def _memcpy_async(self, dst: int, src: int, nbytes: int, stream: int) -> None:
        src_buf: np.ndarray | ctypes.Array[ctypes.c_char] | None
        self._refuse_between_devices(dst, src)
        dst_buf, src_buf = self._buffer_at(dst), self._buffer_at(src)
        if (dst_buf is None or src_buf is None) and self._captures and \
                self._worker(stream) in self._captures:
            raise _fail(CaptureError, f"a copy to or from pageable host memory cannot be captured "
                        f"on stream {stream:#x}: use page-locked memory (pinned_empty)",
                        _CAPTURE_UNSUPPORTED)
        if src_buf is None:  # pageable source: staged now
            staged = ctypes.create_string_buffer(ctypes.string_at(src, nbytes), nbytes)
            src, src_buf = ctypes.addressof(staged), staged

        def copy(_held: tuple[Any, ...] = (dst_buf, src_buf)) -> None:
            ctypes.memmove(dst, src, nbytes)

        seq = self._submit(stream, copy)
        if dst_buf is None:  # pageable destination: the call returns once the copy is done
            self._worker(stream).wait_for(seq)

    # graph capture -------------------------------------------------------------------------
    def _begin_capture(self, stream: int) -> None:
        if stream == LEGACY_STREAM:
            raise _fail(CaptureError, "the legacy default stream cannot be captured",
                        _CAPTURE_UNSUPPORTED)
        with self._lock:
            worker = self._worker(stream)
            if worker in self._captures:
                raise _fail(CaptureError, f"stream {stream:#x} is already capturing",
                            _CAPTURE_UNSUPPORTED)
            self._captures[worker] = _Capture()

    def _end_capture(self, stream: int) -> int:
        with self._lock:
            capture = self._captures.pop(self._worker(stream), None)
            if capture is None:
                raise _fail(CaptureError, f"stream {stream:#x} is not capturing",
                            _CAPTURE_UNMATCHED)
            if capture.invalidated is not None:
                raise _fail(CaptureError, f"the capture of stream {stream:#x} was invalidated "
                            f"by {capture.invalidated} during it", _CAPTURE_INVALIDATED)
            handle = next(self._ids)
            self._graphs[handle] = capture.nodes
            return handle


    def graph_instantiate(self, graph: int) -> int:
        with self._lock:
            nodes = self._graphs.get(graph)
            if nodes is None:
                raise _fail(RocmStreamsError, f"no live graph has handle {graph:#x}",
                            _INVALID_HANDLE)
            handle = next(self._ids)
            self._execs[handle] = _Exec(tuple(nodes) or (_nothing,))
            return handle

    def _graph_launch(self, graph_exec: int, stream: int) -> None:
        with self._lock:  # the nodes go onto the stream together, nothing in between
            ex = self._execs.get(graph_exec)
            if ex is None:
                raise _fail(RocmStreamsError, f"no live executable graph has handle "
                            f"{graph_exec:#x}", _INVALID_HANDLE)
            worker = self._worker(stream)
            if worker in self._captures:
                for fn in ex.nodes:
                    self._submit(stream, fn)
                return
            after = [] if ex.last is None else [ex.last]
            for fn in ex.nodes:
                seq = self._submit(stream, fn, after)
                after = []
            ex.last = (worker, seq)

    def graph_exec_destroy(self, graph_exec: int) -> None:
        with self._lock:
            if self._execs.pop(graph_exec, None) is None:
                raise _fail(RocmStreamsError, f"no live executable graph has handle "
                            f"{graph_exec:#x}", _INVALID_HANDLE)

    def graph_destroy(self, graph: int) -> None:
        with self._lock:
            if self._graphs.pop(graph, None) is None:
                raise _fail(RocmStreamsError, f"no live graph has handle {graph:#x}",
                            _INVALID_HANDLE)

    # kernels -------------------------------------------------------------------------------
    def numba_module(self) -> Any:
        from numba import cuda
        return cuda

    def numba_stream(self, stream: int) -> Any:
        return None  # the simulator's streams order nothing: numba calls are queued instead

    def kernel_driver(self) -> KernelDriver | None:
        return None  # the simulator has no launch to prepare

    def _launch_kernel(self, dispatcher: Any, config: tuple, stream: int,
                       args: Sequence[Any], arrays: Sequence[Any]) -> None:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        griddim, blockdim, sharedmem = config[:3], config[3:6], config[6]
        self._refuse_other_device(stream, [info.address for info in arrays if info is not None])
        fake = [FakeCUDAArray(a) if isinstance(a, np.ndarray) else a
                for a in (a if info is None else _host_view(info)
                          for a, info in zip(args, arrays))]

        def run(_held: tuple[Any, ...] = tuple(args)) -> None:  # args live until it ran
            with _ENGINE:  # the simulator's kernel configuration lives on the dispatcher
                dispatcher.grid_dim, dispatcher.block_dim = griddim, blockdim
                dispatcher.dynshared_size = sharedmem
                with _closure_cuda_swapped(getattr(dispatcher, "fn", None)):
                    dispatcher(*fake)

        self._submit(stream, run)

    # bookkeeping ---------------------------------------------------------------------------
    def live_handles(self) -> dict[str, int]:
        with self._lock:
            return {"streams": len(self._streams) - len(self._memory_handles), "events": len(self._events),
                    "allocations": len(self._memory), "pooled_streams": 0}


class CpuStreamCalls:
    """The cpu runtime's calls bound to one stream handle (see base.StreamCalls)."""

    __slots__ = ("handle", "_be")

    def __init__(self, backend: CpuBackend, handle: int) -> None:
        self.handle, self._be = handle, backend

    def query(self) -> bool:
        return self._be._stream_query(self.handle)

    def synchronize(self) -> None:
        self._be._stream_synchronize(self.handle)

    def event_record(self, event: int) -> None:
        self._be._event_record(event, self.handle)

    def wait_event(self, event: int) -> None:
        self._be._stream_wait_event(self.handle, event)

    def memcpy_async(self, dst: int, src: int, nbytes: int) -> None:
        self._be._memcpy_async(dst, src, nbytes, self.handle)

    def memcpy_peer_async(self, dst: int, dst_device: int, src: int, src_device: int,
                          nbytes: int) -> None:
        self._be._memcpy_peer_async(dst, dst_device, src, src_device, nbytes, self.handle)

    def launch_host_func(self, fn: Callable[[], None]) -> None:
        self._be._submit(self.handle, fn)

    def launch_kernel(self, dispatcher: Any, config: tuple, args: Sequence[Any],
                      arrays: Sequence[Any]) -> None:
        self._be._launch_kernel(dispatcher, config, self.handle, args, arrays)

    def begin_capture(self) -> None:
        self._be._begin_capture(self.handle)

    def end_capture(self) -> int:
        return self._be._end_capture(self.handle)

    def graph_launch(self, graph_exec: int) -> None:
        self._be._graph_launch(graph_exec, self.handle)


def _host_view(info: Any) -> np.ndarray:
    """A numpy view over device memory (host memory here) described by ``info``: its
    ``shape``, ``dtype``, ``address`` and byte ``strides`` (zero-copy)."""
    shape, dtype, strides = info.shape, info.dtype, info.strides
    count = 1
    for n in shape:
        count *= n
    span = sum((n - 1) * s for n, s in zip(shape, strides)) + dtype.itemsize if count else 0
    raw = host_bytes(info.address, max(span, 1)) if info.address else bytearray(1)
    return np.ndarray(shape, dtype, buffer=raw, strides=strides)


def _numba_cuda_in_gpu_mode() -> bool:
    """True when ``numba.cuda`` was imported as the GPU target, not as its simulator (which it
    picks once, at import; numba-cuda imports its simulator package in both modes)."""
    cuda = sys.modules.get("numba.cuda")
    probe = getattr(cuda, "is_available", None)
    return probe is not None and not getattr(probe, "__module__", "").startswith(
        "numba.cuda.simulator")


def load() -> CpuBackend:
    """Put ``numba.cuda`` in simulator mode and start the cpu runtime."""
    if _numba_cuda_in_gpu_mode():
        raise BackendUnavailableError(
            "numba.cuda was imported in GPU mode before rocmstreams chose the cpu backend; "
            "set NUMBA_ENABLE_CUDASIM=1 in the environment, or import rocmstreams.kernels "
            "(or call rocmstreams.backend()) before importing numba.cuda")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    from numba.core import config
    config.reload_config()
    return CpuBackend()

