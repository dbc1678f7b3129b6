"""The evidence pipeline: a mapper task and an audit publisher task.

Both live off the capture hot path, in the capture's nursery:

    drain -> StreamingSink --(bounded)--> mapper task --(bounded)--> publisher task -> store

The mapper turns native events into CloudEvents (pure, in the trio
thread). The publisher appends them to the sealed log in batches, in a
worker thread (hashing, writing and fsync must not stall the drain), one
batch at a time under a lock, so the store is never used by two threads.

Gaps are evidence: at start the anchor, a ``capture.start`` and a
``capture.degraded`` record (missing probes); every ``loss_interval`` the
losses since the last report, by kind and stage, become a
``capture.loss`` record; at the end a last loss record and
``capture.stop``. A queue that is full pushes back on the stream, whose
own policy then blocks or drops, and drops are counted and reported.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio

from agent.capture.events import Event
from agent.capture.ledger import KindAccount
from agent.capture.loader import ProbeStatus
from agent.evidence.mapper import TYPE_START, TYPE_STOP, Mapper
from agent.evidence.store import RECOVERED, EvidenceStore, FsyncPolicy, segment_files
from agent.evidence.types import TYPE_PREFIX, Anchor, CloudEvent
from agent.redact import Redactor

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def previous_run(lines: Iterable[bytes]) -> dict[str, Any] | None:
    """How the previous run in a log ended, from its records in order. Pure.

    Clean when the last evidence record (the store's own segment headers and
    checkpoints aside) is ``capture.stop``; then None.
    Otherwise what was found: where that run started (None if its start has
    scrolled out of the segments read), the last record it wrote, and the
    torn tails the store set aside when it reopened the log.
    """
    start_seq: int | None = None
    last_capture: str | None = None
    last_seq: int | None = None
    torn: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = msgspec.json.decode(line, type=_TailRecord)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the verifier's business, not this summary's
        last_seq = record.seq
        if record.type.startswith(TYPE_PREFIX):
            last_capture = record.type  # the store's own records don't count
        if record.type == TYPE_START:
            start_seq, torn = record.seq, []
        elif record.type == RECOVERED and isinstance(record.body, dict):
            torn.append({"seq": record.seq, **record.body})
    if last_capture is None or last_capture == TYPE_STOP:
        return None
    return {"previous_start_seq": start_seq, "last_seq": last_seq, "torn_tails": torn}


class _TailRecord(msgspec.Struct):
    seq: int
    type: str
    body: Any = None


def last_segment_lines(state_dir: str | os.PathLike[str]) -> list[bytes]:
    """Lines of the two newest segments: enough to see how the last run ended
    (a run that spans more segments started long ago and the scan says so
    only if its start is still in view; the chain keeps the rest)."""
    segments = segment_files(Path(state_dir) / "segments")
    lines: list[bytes] = []
    for _, path in segments[-2:]:
        with open(path, "rb") as f:
            lines.extend(line for line in f if line.endswith(b"\n"))
    return lines


def read_anchor() -> Anchor:
    """Read the wall clock and the boot clock back to back, once."""
    with open(BOOT_ID_PATH) as f:
        boot_id = f.read().strip()
    wall_ns = time.time_ns()
    boot_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return Anchor(boot_id=boot_id, wall_ns=wall_ns, boottime_ns=boot_ns)


def loss_counts(
    kinds: Mapping[str, KindAccount],
    sinks: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
) -> dict[str, dict[str, int]]:
    """Cumulative losses per kind and stage: kernel, decode, each sink. Pure.

    The ledger counts ``syscall`` in syscalls (not in readings) and has no
    books for /proc ``process`` records, so for those kinds each sink's own
    count of dropped records is used (``sinks``: name -> kind -> (delivered,
    dropped)); a dropped reading or seed record is then on the record too.
    """
    out: dict[str, dict[str, int]] = {}
    for kind, books in kinds.items():
        row = {"kernel": books.lost_kernel, "decode": books.decode_errors}
        for sink, account in books.sinks.items():
            row[f"sink:{sink}"] = account.dropped
        out[kind] = row
    for name, per_kind in (sinks or {}).items():
        for kind in ("syscall", "process"):
            if kind in per_kind:
                out.setdefault(kind, {})[f"sink:{name}"] = per_kind[kind][1]
    return out


def loss_delta(
    now: Mapping[str, Mapping[str, int]], before: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """What was lost since ``before``, only kinds with a loss. Pure."""
    delta: dict[str, dict[str, int]] = {}
    for kind, stages in now.items():
        row = {
            stage: count - before.get(kind, {}).get(stage, 0)
            for stage, count in stages.items()
            if count - before.get(kind, {}).get(stage, 0) > 0
        }
        if row:
            delta[kind] = row
    return delta


class EvidencePipeline:
    """Maps ``events`` and publishes them to ``store``.

    ``books`` returns the capture's current per-kind accounting (the
    session's stats); ``probes`` are the capture's probe statuses.
    """

    def __init__(
        self,
        events: trio.MemoryReceiveChannel[Event],
        mapper: Mapper,
        store: EvidenceStore,
        *,
        books: Callable[[], Mapping[str, KindAccount]],
        probes: list[ProbeStatus],
        config: Mapping[str, Any],
        sink_books: Callable[[], Mapping[str, Mapping[str, tuple[int, int]]]] | None = None,
        queue_capacity: int = 4096,
        batch_max: int = 512,
        loss_interval: float = 5.0,
        tick_interval: float = 1.0,
    ) -> None:
        self.events = events
        self.mapper = mapper
        self.store = store
        self.books = books
        self.sink_books = sink_books
        self.probes = probes
        self.config = dict(config)
        self.batch_max = batch_max
        self.loss_interval = loss_interval
        self.tick_interval = tick_interval
        self.capacity = queue_capacity
        self._send, self._receive = trio.open_memory_channel[CloudEvent](queue_capacity)
        self._store_lock = trio.Lock()
        self._reported: dict[str, dict[str, int]] = {}
        self._window_start = mapper.anchor.boottime_ns
        self.mapped = 0
        self.published = 0
        #: Set by open_pipeline when the log's last run never stopped.
        self.unclean_previous_run: dict[str, Any] | None = None
        #: Why the store failed, if it did; records mapped but never written.
        self.failed: str | None = None
        self.unwritten = 0
        self._first_sealed = False
        #: Called in the trio thread with each batch once it is in the log
        #: (the API's live tail). Must not block or raise.
        self.on_published: Callable[[list[CloudEvent], list[int]], None] | None = None
        self._closed = False
        self._say: Callable[[str], None] = lambda line: print(
            f"tracehound: {line}", file=sys.stderr
        )

    async def extent(self) -> list[tuple[Path, int]]:
        """The log's committed extent (see :meth:`EvidenceStore.extent`),
        taken between batches; empty once the store failed or closed."""
        async with self._store_lock:
            if self.failed is not None or self._closed:
                return []
            return self.store.extent()

    @property
    def checkpoint_age_s(self) -> float | None:
        """Seconds since the last checkpoint; None once the store is gone."""
        return None if self.failed is not None or self._closed else self.store.checkpoint_age_s

    def _published(self, batch: list[CloudEvent], seqs: list[int]) -> None:
        self.published += len(batch)
        if self.on_published is not None:
            self.on_published(batch, seqs)

    @property
    def depth(self) -> int:
        """Records mapped and waiting for the publisher."""
        return self._send.statistics().current_buffer_used

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until the event stream ends (the streaming sink finished),
        then writes the last loss and stop records and closes the store."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publisher)
            async with self._send:
                await self._put(self.mapper.anchor_record())
                if self.unclean_previous_run is not None:
                    await self._put(self.mapper.capture_recovered(self.unclean_previous_run))
                await self._put(self.mapper.capture_start(self.config))
                await self._put(self.mapper.capture_degraded(self.probes))
                task_status.started()
                async with trio.open_nursery() as periodic:
                    periodic.start_soon(self._report_losses_periodically)
                    periodic.start_soon(self._tick_periodically)
                    async for event in self.events:
                        if self.failed is not None:
                            # Stop consuming: the stream counts the rest as dropped.
                            await self.events.aclose()
                            break
                        await self._put(self.mapper.map(event))
                        self.mapped += 1
                    periodic.cancel_scope.cancel()
                await self._report_losses()
                summary = {
                    "mapped": self.mapped,
                    "redaction": msgspec.to_builtins(self.mapper.redaction_stats),
                }
                await self._put(self.mapper.capture_stop(summary))

    async def reconfigure(
        self,
        config: Mapping[str, Any],
        redactor: Redactor | None = None,
        store_options: StoreOptions | None = None,
    ) -> None:
        """Record a configuration change, then apply ``redactor`` to every
        event mapped after that record and ``store_options`` to the log's
        writing (None: keep what runs).

        The record carries the redaction counters of the rules it replaces,
        so none of their work drops out of the evidence.
        """
        change = {
            **config,
            "redaction_before": msgspec.to_builtins(self.mapper.redaction_stats),
        }
        await self._put(self.mapper.capture_config(change))
        if redactor is not None:
            self.mapper.set_redactor(redactor)
        if store_options is not None and self.failed is None and not self._closed:
            async with self._store_lock:
                options = msgspec.structs.asdict(store_options)
                del options["checkpoint_every_s"]  # not configurable
                self.store.configure(**options)

    async def _put(self, record: CloudEvent) -> None:
        if self.failed is not None:
            self.unwritten += 1
            return
        try:
            await self._send.send(record)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.unwritten += 1  # the publisher stopped: failed is set

    async def _report_losses(self) -> None:
        now = loss_counts(self.books(), self.sink_books() if self.sink_books else None)
        delta = loss_delta(now, self._reported)
        end = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if delta:
            await self._put(self.mapper.capture_loss(delta, self._window_start, end))
        self._reported = now
        self._window_start = end

    async def _report_losses_periodically(self) -> None:
        while True:
            await trio.sleep(self.loss_interval)
            await self._report_losses()

    async def _tick_periodically(self) -> None:
        while self.failed is None:
            await trio.sleep(self.tick_interval)
            async with self._store_lock:
                if self.failed is not None:
                    return
                try:
                    await trio.to_thread.run_sync(self.store.tick)
                except OSError as err:  # the publisher reports it; stop ticking
                    self.failed = f"{err.strerror or err}"
                    return

    def _write(self, batch: list[CloudEvent]) -> list[int]:
        """Append and commit ``batch``; the chain seq of each record."""
        seqs = [self.store.append(r.type, msgspec.to_builtins(r)).seq for r in batch]
        self.store.commit()
        return seqs

    async def _publisher(self) -> None:
        """Write batches; on a store error, fail safe.

        A write error (disk full, EIO) stops the publisher, never the
        capture: the store has already cut its file back to the last good
        record, the batch is not replayed, and closing this end makes the
        mapper stop, whereupon the evidence stream counts every later event
        as dropped. What was mapped and never written is counted in
        ``unwritten``, and the failure is said once.
        """
        batch: list[CloudEvent] = []
        try:
            async with self._receive:
                async for record in self._receive:
                    batch.append(record)
                    if len(batch) >= self.batch_max or not self.depth:
                        await self._write_batch(batch)
                        batch = []
        except OSError as err:
            self.failed = f"{err.strerror or err}"
            self.unwritten += len(batch)
            self._say(f"--evidence: writing the log failed ({self.failed}); capture goes on,"
                      " later events are counted as dropped")  # fmt: skip
            return
        finally:
            # Cancelled: what is still queued was mapped; write it too.
            while self.failed is None:
                try:
                    batch.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            with trio.CancelScope(shield=True):
                async with self._store_lock:
                    if batch and self.failed is None:
                        seqs = await trio.to_thread.run_sync(self._write, batch)
                        self._published(batch, seqs)
                    if self.failed is None:
                        await trio.to_thread.run_sync(self.store.close)
                    self._closed = True

    async def _write_batch(self, batch: list[CloudEvent]) -> None:
        async with self._store_lock:
            seqs = await trio.to_thread.run_sync(self._write, batch)
            if not self._first_sealed and self.store.sealed:
                # Seal at once: the key on disk is the verification key until
                # the first seal ratchets it away.
                await trio.to_thread.run_sync(self.store.checkpoint)
                self._first_sealed = True
        self._published(batch, seqs)


class StoreOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the sealed log is written (EvidenceStore's settings)."""

    fsync: FsyncPolicy = "batch"
    segment_max_bytes: int = 64 * 2**20
    segment_max_age_s: float = 24 * 3600
    retain_max_bytes: int = 2**30
    checkpoint_every_records: int = 1000
    checkpoint_every_s: float = 900


def open_pipeline(
    state_dir: str | os.PathLike[str],
    events: trio.MemoryReceiveChannel[Event],
    *,
    books: Callable[[], Mapping[str, KindAccount]],
    probes: list[ProbeStatus],
    config: Mapping[str, Any],
    redactor: Redactor | None = None,
    store_options: StoreOptions | None = None,
    sink_books: Callable[[], Mapping[str, Mapping[str, tuple[int, int]]]] | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    group: int | None = None,
) -> EvidencePipeline:
    """The pipeline for a state directory, with this host's anchor.

    ``group``: the gid that may read the log (see :class:`EvidenceStore`).
    """
    opts = store_options or StoreOptions()
    store = EvidenceStore(Path(state_dir), **msgspec.structs.asdict(opts), group=group)
    mapper = Mapper(
        host=socket.gethostname(),
        anchor=read_anchor(),
        redactor=redactor,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    pipeline = EvidencePipeline(
        events, mapper, store, books=books, probes=probes, config=config, sink_books=sink_books
    )
    pipeline.unclean_previous_run = previous_run(last_segment_lines(state_dir))
    return pipeline
