"""The daemon's side of the evidence worker (see :mod:`.worker_protocol`).

One core is not enough for capture and evidence at once: the drain decodes
and folds, the aggregate profiles, and mapping, redacting, encoding,
hashing and writing every record cost several times that. So the evidence
pipeline runs in a child process (:mod:`.worker_child`), and
:class:`EvidenceWorker` stands in for it here: it forwards each batch of
the evidence stream (one msgpack encode per batch), sends the capture's
books a few times a second, and mirrors what the worker reports (depth,
failures, losses, the last seal's age) for the stats, the metrics,
``/readyz`` and the exit status. Committed records come back for the live
tail.

Backpressure is the stream's: a worker that falls behind stops reading,
the socket fills, the forwarder waits, the evidence stream fills and then
blocks or drops by its policy (``[stream] policy``), counted there as
today. Capture never waits on the worker in any other way.

The child is forked early (:func:`spawn`), before the BPF programs are
loaded and before any thread starts; it opens the log only when
:meth:`EvidenceWorker.run` sends the start.

What can go wrong:
- the log cannot be opened (locked, damaged): the worker refuses and
  :meth:`EvidenceWorker.run` raises the same one-line :class:`RunError` (or
  :class:`UsageError`) the in-process pipeline did, before capture starts;
- the worker dies mid-run (a bug, the OOM killer): :attr:`failing` says so
  (``/readyz`` 503), what the worker had not confirmed taking and every
  later event are counted lost at the stage ``evidence:worker``, and
  capture goes on (fail safe on delivery). The next start finds the log's
  unclean end and records it.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterable, Callable, Mapping
from pathlib import Path

import msgspec
import trio

from agent.capture.events import Event, event_count, kind_of
from agent.capture.ledger import DownstreamLosses, KindAccount
from agent.errors import RunError, UsageError
from agent.evidence.app_event import AppEvent
from agent.evidence.loss_books import WORKER_STAGE
from agent.evidence.pipeline import StoreOptions
from agent.evidence.types import EvidenceRecord
from agent.evidence.worker_protocol import (
    CONTROL,
    EVENTS,
    PUBLISHED,
    PUBLISHED_TYPE,
    REPORT,
    WORKER_OWN_STAGES,
    Append,
    Books,
    Extent,
    FrameReader,
    Opened,
    ProtocolError,
    Reconfigure,
    Refused,
    Reply,
    Report,
    Start,
    Status,
    encode_events,
    frame,
)
from agent.redact import Redactor
from agent.redact.events import MemoStats

__all__ = ["WORKER_COMM", "EvidenceWorker", "WorkerProcess", "spawn"]


#: Seconds a worker may take to finish once the daemon has let go of it.
CLOSE_TIMEOUT_S = 60.0
#: Seconds between the books the daemon sends (loss records are made from them).
BOOKS_INTERVAL = 0.25

_encode = msgspec.msgpack.Encoder().encode
_reports = msgspec.msgpack.Decoder(Report)
_published = msgspec.msgpack.Decoder(PUBLISHED_TYPE)


class WorkerProcess:
    """A started worker: its pid and the daemon's end of its socket."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status once the worker has exited (reaped here), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit status (None if ``timeout`` passed first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        return self.returncode

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """The daemon is done with the worker: close our end (a worker never
        started sees that before any start and exits 0; a running one
        finishes its last records first) and wait for it to exit, killing
        it only if it takes longer than ``timeout``. Idempotent."""
        self.sock.close()
        if self.wait(timeout) is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()


def spawn() -> WorkerProcess:
    """Start the worker process; it waits for :class:`Start`.

    A fork, not a new interpreter: the child has every module this process
    imported already, so it answers at once (a fresh interpreter importing
    the pipeline took 0.3-0.8 s here, before READY, now that a cached
    compile no longer hides it). Call it before any thread starts (before
    trio runs) and before the capture is loaded: the child must not hold
    the BPF programs' descriptors, which would keep them attached after the
    daemon is gone. Raises RuntimeError if another thread runs.
    """
    if threading.active_count() > 1:
        raise RuntimeError("the evidence worker must be forked before any thread starts")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker: never returns into the daemon's code
        # First of all: a Ctrl-C meant for the daemon must not end the worker.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code = 1
        try:
            ours.close()
            _name_this_process(WORKER_COMM)
            # What the daemon built before the fork lives as long as the
            # worker: out of every collection. The steady state allocates
            # tens of thousands of short-lived containers a second; a young
            # generation of 10,000 (not 700) collects them far less often,
            # with at most that many unreachable cycles waiting (bounded).
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            from agent.evidence import worker_child

            code = worker_child.serve(theirs)
        except BaseException as err:  # a bug: said in one line, like any child
            print(f"tracehound evidence worker: {err!r}", file=sys.stderr, flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # not the daemon's atexit handlers: they are its own
    theirs.close()
    return WorkerProcess(pid, ours)


#: Allocations between the worker's young-generation collections.
GC_YOUNG_THRESHOLD = 10_000

#: The worker's name in ``ps``, ``top`` and /proc/PID/comm.
WORKER_COMM = "th-evidence"
_PR_SET_NAME = 15


def _name_this_process(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


class EvidenceWorker:
    """The evidence pipeline, run by a worker process: the same surface as
    :class:`~agent.evidence.pipeline.EvidencePipeline` for the daemon.

    ``events``: the evidence stream's batches; ``books``/``sink_books``: the
    session's books and the sinks' per-kind counts, sent to the worker;
    ``losses``: the session's downstream losses, where the worker's own
    (``evidence:map``, ``evidence:store``) are mirrored, and its death counted.
    """

    def __init__(
        self,
        worker: WorkerProcess,
        events: AsyncIterable[list[Event]],
        start: Start,
        *,
        books: Callable[[], Mapping[str, KindAccount]],
        sink_books: Callable[[], Mapping[str, Mapping[str, tuple[int, int]]]],
        losses: DownstreamLosses,
    ) -> None:
        self._worker = worker
        self._events = events
        self._start = start
        self._books = books
        self._sink_books = sink_books
        self.losses = losses
        self._stream: trio.SocketStream | None = None
        self._send_lock = trio.StrictFIFOLock()
        self._reader = FrameReader()
        self._pending_frames: list[tuple[int, bytes]] = []  # read, not yet handled
        self._requests = itertools.count(1)
        self._replies: dict[int, tuple[trio.Event, list[Reply]]] = {}
        #: Per batch sent and not yet confirmed taken (a status says how many
        #: batches the worker has read): what it held, by kind, in kernel
        #: events. At most the batches a status interval carries.
        self._unconfirmed: deque[Counter[str]] = deque()
        self._sent_batches = 0
        self._mirrored: dict[str, dict[str, int]] = {}
        self._status: Status | None = None
        self._status_at = 0.0
        self._final = trio.Event()
        self._dead: str | None = None
        self._said: set[str] = set()
        self._lost_to_worker = 0
        self.capacity = 0
        self.sealed: bool | None = None
        #: Called in the trio thread with each batch once it is in the log
        #: (the API's live tail). Must not block or raise.
        self.on_published: Callable[[list[EvidenceRecord], list[int]], None] | None = None
        #: The write policy in force (a reload may change it).
        self.store_options: StoreOptions | None = start.store

    # -- what the daemon reads ------------------------------------------------
    @property
    def failing(self) -> str | None:
        """Why the log cannot be written now (None while it can)."""
        if self._dead is not None:
            return self._dead
        return None if self._status is None else self._status.failing

    failed = failing

    @property
    def depth(self) -> int:
        """Records mapped and waiting to be written, in the worker."""
        return 0 if self._status is None else self._status.depth

    @property
    def published(self) -> int:
        return 0 if self._status is None else self._status.published

    @property
    def mapped(self) -> int:
        return 0 if self._status is None else self._status.mapped

    @property
    def failures(self) -> int:
        return (0 if self._status is None else self._status.failures) + (self._dead is not None)

    @property
    def lost_to_store(self) -> int:
        """Events and records the log lost because its disk refused writes."""
        return 0 if self._status is None else self._status.lost_to_store

    @property
    def lost_to_worker(self) -> int:
        """Events the log lost because the worker died (0 while it lives)."""
        return self._lost_to_worker

    @property
    def died(self) -> str | None:
        """Why the worker is gone before its end, if it is."""
        return self._dead

    @property
    def unwritten(self) -> int:
        """Everything the log lost either way."""
        return self.lost_to_store + self._lost_to_worker

    @property
    def owes_the_log(self) -> bool:
        return self._dead is not None or (self._status is not None and self._status.owes_the_log)

    @property
    def checkpoint_age_s(self) -> float | None:
        """Seconds since the last seal (as of the last status, aged since)."""
        status = self._status
        if status is None or status.checkpoint_age_s is None or self._dead is not None:
            return None
        return status.checkpoint_age_s + (time.monotonic() - self._status_at)

    @property
    def tail_dropped(self) -> int:
        return 0 if self._status is None else self._status.tail_dropped

    def memo_stats(self) -> MemoStats | None:
        """The worker's redaction memo (a bounded cache), as last reported."""
        return None if self._status is None else self._status.memo

    # -- requests -------------------------------------------------------------
    async def extent(self) -> list[tuple[Path, int]]:
        """The log's committed extent (see :meth:`EvidenceStore.extent`);
        empty while it fails or once the worker is gone."""
        reply = await self._request(lambda n: Extent(request=n))
        if reply is None or reply.extent is None:
            return []
        return [(Path(path), size) for path, size in reply.extent]

    async def reconfigure(
        self,
        config: Mapping[str, object],
        redactor: Redactor | None = None,
        store_options: StoreOptions | None = None,
    ) -> None:
        """As :meth:`EvidencePipeline.reconfigure`, in the worker."""
        rules = None if redactor is None else [c.rule for c in redactor.rules]
        chars = 0 if redactor is None else redactor.max_field_chars
        await self._request(
            lambda n: Reconfigure(
                request=n, config=dict(config), rules=rules, max_field_chars=chars,
                store=store_options,
            )
        )  # fmt: skip
        if store_options is not None:
            self.store_options = store_options

    async def append_app(self, event: AppEvent) -> Reply | str:
        """As :meth:`EvidencePipeline.append_app`, in the worker: its reply
        (the record's id and time, or ``refused``), or why there is none
        (the worker is gone)."""
        try:
            reply = await self._request(lambda n: Append(request=n, event=event))
        except trio.BrokenResourceError:
            reply = None
        if reply is None:
            return self.failing or "the evidence worker is gone"
        return reply

    async def _request(self, make: Callable[[int], object]) -> Reply | None:
        if self._dead is not None or self._final.is_set():
            return None
        number = next(self._requests)
        done = trio.Event()
        answer: list[Reply] = []
        self._replies[number] = (done, answer)
        try:
            await self._send(CONTROL, _encode(make(number)))
            await done.wait()
        finally:
            self._replies.pop(number, None)
        return answer[0] if answer else None

    # -- the conversation -----------------------------------------------------
    async def _send(self, tag: int, payload: bytes) -> None:
        stream = self._stream
        if stream is None or self._dead is not None:
            raise trio.BrokenResourceError("the evidence worker is gone")
        async with self._send_lock:
            await stream.send_all(frame(tag, payload))

    async def _report(self) -> Report | None:
        """The next report from the worker; None at its end."""
        while True:
            frames = self._pending_frames
            while frames:
                tag, payload = frames.pop(0)
                if tag == REPORT:
                    return _reports.decode(payload)
                if tag == PUBLISHED:
                    self._publish(payload)
                    continue
                raise ProtocolError(f"a frame tagged {tag} from the worker")
            assert self._stream is not None
            try:
                data = await self._stream.receive_some(1 << 20)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return None
            self._pending_frames.extend(self._reader.feed(data))

    def _publish(self, payload: bytes) -> None:
        if self.on_published is None:
            return
        rows = _published.decode(payload)
        self.on_published(
            [EvidenceRecord(type_, id_, None, body) for _, type_, id_, body in rows],
            [seq for seq, _, _, _ in rows],
        )

    def _mirror(self, status: Status) -> None:
        """Take a status: the worker's losses into the session's books."""
        for kind, stages in status.losses.items():
            seen = self._mirrored.setdefault(kind, {})
            for stage, n in stages.items():
                if n > seen.get(stage, 0):
                    self.losses.count(kind, stage, n - seen.get(stage, 0))
                    seen[stage] = n
        confirmed = self._sent_batches - len(self._unconfirmed)
        for _ in range(min(status.taken - confirmed, len(self._unconfirmed))):
            self._unconfirmed.popleft()
        self._status, self._status_at = status, time.monotonic()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the worker's log; forward the stream until it ends; wait
        for the worker to write its last records and exit.

        Raises:
            RunError, UsageError: the worker could not open the log (one line).
        """
        sock = trio.socket.from_stdlib_socket(self._worker.sock)
        async with trio.SocketStream(sock) as stream:
            self._stream = stream
            await self._send(CONTROL, _encode(self._start))
            first = await self._report()
            if isinstance(first, Refused):
                await self._reap()
                raise (UsageError if first.usage else RunError)(first.message)
            if not isinstance(first, Opened):
                await self._reap()
                raise RunError(f"{self._start.source}: the evidence worker did not start")
            self.sealed, self.capacity = first.sealed, first.capacity
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._listen)
                books = trio.CancelScope()
                nursery.start_soon(self._send_books_periodically, books)
                await self._forward()
                books.cancel()
                await self._finish()
            await self._reap()

    async def _forward(self) -> None:
        """Each batch of the stream to the worker; once it is gone, counted."""
        async for batch in self._events:
            if self._dead is None:
                try:
                    payload = encode_events(batch)
                except Exception as err:  # no event may end the forwarding
                    self._say_once(
                        "encode", f"evidence: a batch could not be sent ({err!r}); counted"
                    )
                else:
                    held: Counter[str] = Counter()
                    for event in batch:
                        held[kind_of(event)] += event_count(event)
                    self._unconfirmed.append(held)
                    self._sent_batches += 1
                    try:
                        await self._send(EVENTS, payload)
                        continue
                    except trio.BrokenResourceError:
                        self._died("the evidence worker's socket closed")
                        continue  # counted with what it never confirmed
            for event in batch:
                self._worker_lost(kind_of(event), event_count(event))

    async def _finish(self) -> None:
        """The stream ended: the final books, then the end of what we send;
        the worker writes its last records and sends its final status."""
        if self._dead is None:
            try:
                await self._send(CONTROL, _encode(self._books_now(final=True)))
                assert self._stream is not None
                await self._stream.send_eof()
            except trio.BrokenResourceError:
                self._died("the evidence worker's socket closed")
        await self._final.wait()

    def _books_now(self, *, final: bool = False) -> Books:
        downstream = {
            kind: kept
            for kind, stages in self.losses.table().items()
            if (kept := {s: n for s, n in stages.items() if s not in WORKER_OWN_STAGES})
        }
        sinks = {name: dict(per_kind) for name, per_kind in self._sink_books().items()}
        return Books(kinds=dict(self._books()), sinks=sinks, downstream=downstream, final=final)

    async def _send_books_periodically(self, scope: trio.CancelScope) -> None:
        with scope:
            while self._dead is None:
                await trio.sleep(BOOKS_INTERVAL)
                try:
                    await self._send(CONTROL, _encode(self._books_now()))
                except trio.BrokenResourceError:
                    return

    async def _listen(self) -> None:
        """Reports until the worker's final status (or its death)."""
        try:
            while True:
                report = await self._report()
                if report is None:
                    self._died("the evidence worker exited before its last records")
                    return
                if isinstance(report, Status):
                    self._mirror(report)
                    if report.final:
                        return
                elif isinstance(report, Reply):
                    waiting = self._replies.get(report.request)
                    if waiting is not None:
                        waiting[1].append(report)
                        waiting[0].set()
                else:
                    raise ProtocolError(f"a {type(report).__name__} report mid-run")
        except (ProtocolError, msgspec.DecodeError, msgspec.ValidationError) as err:
            self._died(f"the evidence worker's reports do not decode ({err})")
        finally:
            self._final.set()
            for done, _ in self._replies.values():
                done.set()

    def _worker_lost(self, kind: str, n: int) -> None:
        self._lost_to_worker += n
        self.losses.count(kind, WORKER_STAGE, n)

    def _say_once(self, key: str, line: str) -> None:
        if key not in self._said:
            self._said.add(key)
            print(f"tracehound: {line}", file=sys.stderr, flush=True)

    def _died(self, why: str) -> None:
        """The worker is gone: what it never confirmed taking is lost here."""
        if self._dead is not None:
            return
        self._dead = why
        self._final.set()
        for held in self._unconfirmed:
            for kind, n in held.items():
                self._worker_lost(kind, n)
        self._unconfirmed.clear()
        for done, _ in self._replies.values():
            done.set()
        print(f"tracehound: evidence: {why}; capture goes on, counted", file=sys.stderr, flush=True)

    async def _reap(self) -> None:
        await trio.to_thread.run_sync(self._worker.wait, abandon_on_cancel=True)
