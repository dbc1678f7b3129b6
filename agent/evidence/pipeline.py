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
own policy then blocks or drops, and drops are counted and reported. A
record that fails, or a disk that refuses writes, costs what it costs,
counted: never the pipeline (see :class:`EvidencePipeline`).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import AsyncIterable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import trio

from agent.capture.cgroups import CgroupInfo
from agent.capture.events import Event, event_count, kind_of
from agent.capture.ledger import DownstreamLosses, KindAccount
from agent.capture.loader import ProbeStatus
from agent.evidence.app_event import AppEvent
from agent.evidence.canonical import CanonicalError
from agent.evidence.last_run import last_segments, previous_run
from agent.evidence.loss_books import (
    MAP_STAGE,
    STORE_STAGE,
    kind_of_record,
    loss_counts,
    loss_delta,
)
from agent.evidence.loss_slot import LossSlot, PendingLoss
from agent.evidence.mapper import Mapper
from agent.evidence.record_types import CAPTURE_TYPES, TYPE_LOSS
from agent.evidence.store import EvidenceStore, FsyncPolicy
from agent.evidence.types import Anchor, EvidenceRecord, format_rfc3339_ns
from agent.failpoints import Failpoints
from agent.redact import Redactor

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

WRITE_MAX: Final = 8192
"""Most records the publisher writes (and fsyncs) at once: the mapper's
pieces that wait are joined up to this many."""


def read_anchor() -> Anchor:
    """Read the wall clock and the boot clock back to back, once."""
    with open(BOOT_ID_PATH) as f:
        boot_id = f.read().strip()
    wall_ns = time.time_ns()
    boot_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return Anchor(boot_id=boot_id, wall_ns=wall_ns, boottime_ns=boot_ns)


HELD_TYPES: Final = CAPTURE_TYPES - {TYPE_LOSS}
"""Records about the capture itself: delayed while the store cannot write,
never counted lost (unless more than :data:`HELD_MAX` wait)."""
HELD_MAX: Final = 256

#: Seconds between attempts to reopen a failing store: doubling up to the last.
RETRY_FIRST_S: Final = 0.5
RETRY_MAX_S: Final = 10.0


class _Written(msgspec.Struct, frozen=True):
    """What one :meth:`EvidencePipeline._write` did: the records now in the
    log (and their chain seqs), those the store refused, those lost with an
    error, and the error."""

    records: list[EvidenceRecord]
    seqs: list[int]
    refused: list[EvidenceRecord]
    lost: list[EvidenceRecord]
    error: OSError | None


class EvidencePipeline:
    """Maps ``events`` and publishes them to ``store``.

    ``books`` returns the capture's current per-kind accounting (the
    session's stats); ``probes`` are the capture's probe statuses;
    ``losses`` is where events lost after the stream delivered them are
    counted (the session's ledger), so they reach the stats, the metrics
    and the ``capture.loss`` records. ``reopen`` makes a new store for the
    same directory (after a failure; None: never retry). ``store`` is None
    when it could not be opened (``failing`` then says why).

    What no record can do: end the pipeline. An event the mapper cannot
    map is counted (``evidence:map``) and skipped; a record the store
    refuses (``evidence:store``) likewise. What the disk can do: refuse
    writes (ENOSPC, EIO, a filesystem gone read-only). Then the pipeline
    fails safe: capture goes on, ``failing`` says why (``/readyz`` answers
    503 with it), every event meanwhile is counted per kind at
    ``evidence:store``, the count is kept in a pre-allocated slot on disk
    (:mod:`.loss_slot`), and the store is reopened with backoff. The first
    records written after that are the records about the capture itself
    that waited (anchor, start, config: delayed, never dropped, up to
    :data:`HELD_MAX`) and a ``capture.loss`` record with the counts and the
    cause. Loss reports are never counted as lost: the next one covers
    their window. If the run ends first, the next start writes the counts.
    :attr:`lost_to_store` > 0 makes ``tracehound run`` exit non-zero.
    """

    def __init__(
        self,
        events: AsyncIterable[list[Event]],
        mapper: Mapper,
        store: EvidenceStore | None,
        *,
        books: Callable[[], Mapping[str, KindAccount]],
        probes: list[ProbeStatus],
        config: Mapping[str, Any],
        sink_books: Callable[[], Mapping[str, Mapping[str, tuple[int, int]]]] | None = None,
        losses: DownstreamLosses | None = None,
        reopen: Callable[[], EvidenceStore] | None = None,
        slot: LossSlot | None = None,
        failpoints: Failpoints | None = None,
        failing: str | None = None,
        queue_capacity: int = 4096,
        batch_max: int = 512,
        loss_interval: float = 5.0,
        tick_interval: float = 1.0,
    ) -> None:
        if store is None and failing is None:
            raise ValueError("a pipeline without a store needs the reason (failing)")
        self.events = events
        self.mapper = mapper
        self._store = store
        self.books = books
        self.sink_books = sink_books
        self.losses = losses if losses is not None else DownstreamLosses()
        self.probes = probes
        self.config = dict(config)
        self.batch_max = batch_max
        self.loss_interval = loss_interval
        self.tick_interval = tick_interval
        self.capacity = queue_capacity
        self._reopen = reopen
        self._slot = slot
        self._failpoints = failpoints or Failpoints()
        # Batches of records, bounded in records: at most capacity // batch_max
        # batches of at most batch_max records each wait for the publisher.
        self._send, self._receive = trio.open_memory_channel[list[EvidenceRecord]](
            max(1, queue_capacity // batch_max)
        )
        self._depth = 0
        self._store_lock = trio.Lock()
        # Loss reports: what the last report queued covered (_reported, from
        # _window_start on), and what the last one *in the log* covered
        # (_confirmed): after a failure, reporting starts again from there.
        self._reported: dict[str, dict[str, int]] = {}
        self._window_start = mapper.anchor.boottime_ns
        self._confirmed: tuple[dict[str, dict[str, int]], int] = ({}, self._window_start)
        self._after_commit: dict[str, Callable[[], None]] = {}
        # Loss reports not yet written, by id, with the outage count when they
        # were made: one made before an outage is stale after it (the report
        # written on recovery covers its window), so it is never written.
        self._outages = 0
        self._report_outage: dict[str, int] = {}
        # Records about the capture itself that met a failing store: written
        # first once it can write again.
        self._held: list[EvidenceRecord] = []
        self.mapped = 0
        self.published = 0
        #: Set by open_pipeline when the log's last run never stopped.
        self.unclean_previous_run: dict[str, Any] | None = None
        #: What a previous run could not write (set by open_pipeline); None
        #: once this run's record of it is in the log.
        self.previous_pending: PendingLoss | None = None
        self._previous_id: str | None = None
        self._previous_done = False
        #: Why the store cannot write now (None while it can).
        self.failing: str | None = failing
        #: Times the store failed, and events/records the log lost that way.
        self.failures = 0 if failing is None else 1
        self.lost_to_store = 0
        self._first_sealed = False
        #: Called in the trio thread with each batch once it is in the log
        #: (the API's live tail). Must not block or raise.
        self.on_published: Callable[[list[EvidenceRecord], list[int]], None] | None = None
        self._closed = False
        #: Whether the end of ``events`` is the end of the capture. False
        #: when what fed them died (the daemon of an evidence worker): then
        #: no ``capture.stop`` is written, and the next start records the
        #: unclean end as it would after a crash of the pipeline itself.
        self.capture_stopped = True
        self._ending = False
        self._nursery: trio.Nursery | None = None
        self._said: set[str] = set()
        self._retrying = False
        self._say: Callable[[str], None] = lambda line: print(
            f"tracehound: {line}", file=sys.stderr, flush=True
        )

    #: The write policy in force (a reload may change it); a reopened store gets it.
    store_options: StoreOptions | None = None

    @property
    def store(self) -> EvidenceStore:
        """The store being written; only while :attr:`failing` is None."""
        if self._store is None:
            raise RuntimeError("the evidence store is not open")
        return self._store

    @property
    def sealed(self) -> bool | None:
        """Whether the log is sealed (has a key); None while no store is open."""
        return None if self._store is None else self._store.sealed

    @property
    def owes_the_log(self) -> bool:
        """Are there counts the log does not hold yet (the next start writes
        them from the slot)? False once everything lost is in a loss record."""
        if self.previous_pending is not None:
            return True
        return bool(loss_delta(self._current_losses(), self._confirmed[0]))

    @property
    def failed(self) -> str | None:
        """Why the store cannot write now, if it cannot (see :attr:`failing`)."""
        return self.failing

    @property
    def unwritten(self) -> int:
        """Events and records the log lost because the store could not write."""
        return self.lost_to_store

    async def extent(self) -> list[tuple[Path, int]]:
        """The log's committed extent (see :meth:`EvidenceStore.extent`),
        taken between batches; empty while the store fails or once closed."""
        async with self._store_lock:
            if self.failing is not None or self._closed:
                return []
            return self.store.extent()

    @property
    def checkpoint_age_s(self) -> float | None:
        """Seconds since the last checkpoint; None while the store is gone."""
        return None if self.failing is not None or self._closed else self.store.checkpoint_age_s

    def _published(self, batch: list[EvidenceRecord], seqs: list[int]) -> None:
        self.published += len(batch)
        pending = self._after_commit  # a few records about the capture, most batches none
        for record in batch if pending else ():
            action = pending.pop(record.id, None)
            if action is not None:
                action()
        if self.on_published is not None:
            self.on_published(batch, seqs)

    @property
    def depth(self) -> int:
        """Records mapped and waiting for the publisher."""
        return self._depth

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until the event stream ends (the streaming sink finished),
        then writes the last loss and stop records and closes the store."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._publisher)
            if self.failing is not None and self._reopen is not None:
                self._say(f"evidence: the log cannot be opened ({self.failing}); capture goes on")
                nursery.start_soon(self._retry)
            async with self._send:
                first = [self.mapper.anchor_record()]
                if self.unclean_previous_run is not None:
                    first.append(self.mapper.capture_recovered(self.unclean_previous_run))
                if self.previous_pending is not None:
                    first.append(self._previous_record(self.previous_pending))
                first.append(self.mapper.capture_start(self.config))
                first.append(self.mapper.capture_degraded(self.probes))
                await self._put_many(first)
                task_status.started()
                async with trio.open_nursery() as periodic:
                    periodic.start_soon(self._report_losses_periodically)
                    periodic.start_soon(self._tick_periodically)
                    async for batch in self.events:
                        await self._map_batch(batch)
                    periodic.cancel_scope.cancel()
                self._ending = True
                if self.failing is not None:
                    await self._retry_once()  # the disk may have room again by now
                await self._report_losses()
                if self.capture_stopped:
                    summary = {
                        "mapped": self.mapped,
                        "redaction": msgspec.to_builtins(self.mapper.redaction_stats),
                    }
                    await self._put(self.mapper.capture_stop(summary))

    async def _map_batch(self, events: list[Event]) -> None:
        """Map a batch and queue its records, ``batch_max`` at a time (one
        hand-off each, which is also where the publisher and the live tail
        get their turn: a drain batch of 4096 must not hold the loop for its
        whole mapping); whatever goes wrong with one event costs that event
        only, counted by kind and stage."""
        if self.failing is not None:
            for event in events:
                self._lost(kind_of(event), event_count(event))
            return
        mapper_map = self.mapper.map
        failpoints = self._failpoints
        armed = bool(failpoints)
        step = self.batch_max
        for start in range(0, len(events), step):
            records: list[EvidenceRecord] = []
            keep = records.append
            for event in events[start : start + step]:
                try:
                    if armed:
                        failpoints.check("evidence.map", getattr(event, "comm", None))
                    keep(mapper_map(event))
                except Exception as err:  # one record must never end the pipeline
                    self.losses.count(kind_of(event), MAP_STAGE, event_count(event))
                    self._say_once(
                        "map", f"evidence: an event could not be mapped ({err!r}); counted"
                    )
            self.mapped += len(records)
            await self._put_many(records)

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
        if store_options is not None:
            self.store_options = store_options
            async with self._store_lock:
                if self.failing is None and not self._closed:
                    self.store.configure(**msgspec.structs.asdict(store_options))

    async def append_app(self, event: AppEvent) -> EvidenceRecord | str:
        """Map a producer's event (:meth:`Mapper.app_event`) and queue its
        record after what was mapped so far; the record, or why not (one
        line: the log cannot be written now, or the event has no record).

        Refused while the store fails rather than counted lost: the
        producer is told (503) and can send it again; nothing of it is
        in the log, so nothing is owed to it. Waits while the queue is
        full, as a kernel batch does.
        """
        if self.failing is not None:
            return f"the evidence log cannot be written now: {self.failing}"
        if self._closed or self._ending:
            return "the evidence log is closing"
        try:
            record = self.mapper.app_event(event)
        except (CanonicalError, ValueError) as err:
            return f"the event has no record: {err}"
        await self._put(record)
        return record

    async def _put(self, record: EvidenceRecord) -> None:
        await self._put_many([record])

    async def _put_many(self, records: list[EvidenceRecord]) -> None:
        """Queue ``records`` for the publisher, in pieces of at most
        ``batch_max``; waits while the queue is full (backpressure)."""
        step = self.batch_max
        for start in range(0, len(records), step):
            piece = records[start : start + step]
            if self.failing is not None:
                for record in piece:
                    self._record_lost(record)
                continue
            self._depth += len(piece)
            try:
                await self._send.send(piece)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._depth -= len(piece)
                for record in piece:
                    self._record_lost(record)
            except trio.Cancelled:
                self._depth -= len(piece)
                raise

    def _lost(self, kind: str, n: int = 1) -> None:
        """``n`` events or records of ``kind`` the log did not get: the store failed."""
        self.lost_to_store += n
        self.losses.count(kind, STORE_STAGE, n)

    def _record_lost(self, record: EvidenceRecord) -> None:
        """A record met a store that cannot write. A loss report is dropped
        (the next one covers its window); a record about the capture itself
        waits for the store; any other record is a counted loss."""
        self._after_commit.pop(record.id, None)
        if record.type == TYPE_LOSS and record.id != self._previous_id:
            self._report_outage.pop(record.id, None)
            return
        held = record.type in HELD_TYPES or record.id == self._previous_id
        if held and len(self._held) < HELD_MAX:
            self._held.append(record)
            return
        self._lost(kind_of_record(record.type), _events_in(record))

    def _current_losses(self) -> dict[str, dict[str, int]]:
        return loss_counts(
            self.books(),
            self.sink_books() if self.sink_books else None,
            self.losses.table(),
        )

    def _loss_record(self, cause: Mapping[str, Any] | None = None) -> EvidenceRecord | None:
        """The next ``capture.loss`` record (None if nothing was lost since
        the last report that reached the log); it counts as reported once
        it is committed."""
        now = self._current_losses()
        delta = loss_delta(now, self._reported)
        end = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if not delta:
            self._reported, self._window_start = now, end
            return None
        record = self.mapper.capture_loss(delta, self._window_start, end, cause=cause)
        self._reported, self._window_start = now, end
        self._report_outage[record.id] = self._outages

        def confirmed() -> None:
            self._confirmed = (now, end)

        self._after_commit[record.id] = confirmed
        return record

    async def _report_losses(self) -> None:
        if self.failing is not None:
            return  # nothing reaches the log now; the report after recovery covers it
        record = self._loss_record()
        if record is not None:
            await self._put(record)

    async def _report_losses_periodically(self) -> None:
        while True:
            await trio.sleep(self.loss_interval)
            await self._report_losses()

    async def _tick_periodically(self) -> None:
        while True:
            await trio.sleep(self.tick_interval)
            async with self._store_lock:
                if self.failing is not None or self._closed:
                    continue
                try:
                    await trio.to_thread.run_sync(self.store.tick)
                except OSError as err:
                    self._start_failing(err, [])

    def _write(self, batch: list[EvidenceRecord]) -> _Written:
        """Append and commit ``batch`` (in a worker thread).

        A record the store refuses (it has no canonical form) is left out;
        an OSError (disk full, EIO) stops the batch, and then only what the
        store says reached the file counts as written: nothing is reported
        lost that is in the log, or written that is not.
        """
        store = self.store
        seqs: list[int] = []  # per record of the batch, as far as it got: its seq, -1 refused
        error: OSError | None = None
        try:
            if self._failpoints:
                self._append_checked(batch, seqs)
            else:
                while len(seqs) < len(batch):
                    done = len(seqs)
                    try:
                        store.append_bodies(batch[done:] if done else batch, seqs)
                    except OSError:
                        raise
                    except Exception:
                        if len(seqs) == done:  # not one record's doing (a closed store)
                            raise
                        seqs[-1] = -1  # raised once it was chained: refused all the same
            store.commit()
        except OSError as err:
            error = err
        durable = store.written_seq
        if error is None and -1 not in seqs:  # the usual batch: every record is in
            return _Written(records=batch, seqs=seqs, refused=[], lost=[], error=None)
        last = -1 if durable is None else durable
        written = [(r, seq) for r, seq in zip(batch, seqs, strict=False) if 0 <= seq <= last]
        refused = [r for r, seq in zip(batch, seqs, strict=False) if seq < 0]
        lost = [r for r, seq in zip(batch, seqs, strict=False) if seq > last]
        lost += batch[len(seqs) :]  # never reached
        return _Written(
            records=[r for r, _ in written],
            seqs=[seq for _, seq in written],
            refused=refused,
            lost=lost,
            error=error,
        )

    def _append_checked(self, batch: list[EvidenceRecord], seqs: list[int]) -> None:
        """Append ``batch`` one record at a time, each through the
        ``evidence.store`` failpoint first (tests make a record fail there)."""
        store = self.store
        for record in batch:
            comm = getattr(record.payload, "comm", None)
            try:
                self._failpoints.check("evidence.store", comm if isinstance(comm, str) else None)
            except OSError:
                head = store.head  # the seq this record would have had: it is lost
                seqs.append(head[0] + 1 if head is not None else 0)
                raise
            except Exception:
                seqs.append(-1)
                continue
            store.append_bodies([record], seqs)

    async def _publisher(self) -> None:
        """Write batches until the mapper's end closes the channel.

        On a store error (disk full, EIO) capture is never stopped: see
        :meth:`_start_failing`. When cancelled, what is still queued was
        mapped: it is written too.
        """
        batch: list[EvidenceRecord] = []
        try:
            async with self._receive:
                async for piece in self._receive:
                    # Group commit: with the pieces already waiting, one write
                    # and one fsync for all of them (up to WRITE_MAX records).
                    batch = piece  # ours alone: the mapper made it for this hand-off
                    while len(batch) < WRITE_MAX:
                        try:
                            batch.extend(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    self._depth -= len(batch)
                    if self.failing is not None:
                        for record in batch:
                            self._record_lost(record)
                    else:
                        await self._write_batch(batch)
                    batch = []
        finally:
            while True:
                try:
                    piece = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                self._depth -= len(piece)
                batch.extend(piece)
            with trio.CancelScope(shield=True):
                if batch:
                    await self._write_batch(batch)
                async with self._store_lock:
                    if self.failing is None:
                        try:
                            await trio.to_thread.run_sync(self.store.close)
                        except OSError as err:  # the last seal; the records are in
                            self.store.discard()
                            self._say(f"evidence: closing the log failed ({err.strerror})")
                    else:
                        # What waited for the store is lost now; the next
                        # start learns of it from the slot.
                        if self._held:
                            self._lost("capture", len(self._held))
                            self._held.clear()
                        await self._save_pending(stopped=True)
                    self._closed = True
                if self._nursery is not None:
                    self._nursery.cancel_scope.cancel()  # the retry task, if any

    def _fresh(self, batch: list[EvidenceRecord]) -> list[EvidenceRecord]:
        """``batch`` without loss reports made before the last outage: what
        they counted is in the report written since (or still to come)."""
        if not self._report_outage:
            return batch
        kept = []
        for record in batch:
            made = self._report_outage.pop(record.id, None)
            if made is None or made == self._outages:
                kept.append(record)
        return kept

    async def _write_batch(self, batch: list[EvidenceRecord]) -> None:
        batch = self._fresh(batch)
        if not batch:
            return
        async with self._store_lock:
            if self.failing is not None:  # it failed, maybe while this batch waited
                for record in batch:
                    self._record_lost(record)
                return
            result = await trio.to_thread.run_sync(self._write, batch)
            error = result.error
            if error is None and not self._first_sealed and self.store.sealed:
                # Seal at once: the key on disk is the verification key
                # until the first seal ratchets it away.
                try:
                    await trio.to_thread.run_sync(self.store.checkpoint)
                    self._first_sealed = True
                except OSError as err:
                    error = err
            await self._settle(result, error)

    async def _settle(self, result: _Written, error: OSError | None) -> None:
        """Publish what was written, count what was refused, and fail on
        ``error``; once the previous run's counts are in the log, the slot is
        cleared. Called with the store lock held."""
        for record in result.refused:
            self.losses.count(kind_of_record(record.type), STORE_STAGE, _events_in(record))
        if result.records:
            self._published(result.records, result.seqs)
        if error is not None:
            self._start_failing(error, result.lost)
        elif self._previous_done:
            self._previous_done = False
            await self._clear_pending()

    def _start_failing(self, err: OSError, lost: list[EvidenceRecord]) -> None:
        """The store could not write: count ``lost`` records, forget the loss
        reports that never reached the disk, and retry (once per outage)."""
        first = self.failing is None and not self._retrying
        self.failing = f"{err.strerror or err}"
        self._outages += 1
        if first:
            self.failures += 1
        if self._store is not None:
            self._store.discard()
        for record in lost:
            self._record_lost(record)
        # Reports lost with the batch (or still queued) never reached the
        # log: the next report covers everything since the last one that did.
        self._after_commit.clear()
        self._reported, self._window_start = self._confirmed
        if not first:
            return
        self._say(
            f"evidence: the log cannot be written ({self.failing}); capture goes on, what the log"
            " misses is counted and will be written into it once the store can write again"
        )
        if self._nursery is not None and self._reopen is not None and not self._ending:
            self._nursery.start_soon(self._retry)

    async def _retry(self) -> None:
        self._retrying = True
        try:
            delay = RETRY_FIRST_S
            async with self._store_lock:
                await self._save_pending()
            while self.failing is not None and not self._ending:
                await trio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                await self._retry_once()
        finally:
            self._retrying = False

    async def _retry_once(self) -> None:
        """Reopen the store and write what waited, then the loss report; on
        success the pipeline writes normally again."""
        if self._reopen is None:
            return
        async with self._store_lock:
            if self.failing is None or self._closed:
                return
            try:
                store = await trio.to_thread.run_sync(self._reopen)
            except Exception as err:  # ENOSPC, EIO, a read-only fs: still failing
                self.failing = f"{getattr(err, 'strerror', None) or err}"
                await self._save_pending()
                return
            self._store = store
            reason = self.failing
            self.failing = None
            self._first_sealed = False  # seal the reopened store's head at once
            batch, self._held = self._held, []
            if self.previous_pending is not None and self._previous_id not in {r.id for r in batch}:
                batch.append(self._previous_record(self.previous_pending))
            loss = self._loss_record({"store_failed": reason, "failures": self.failures})
            if loss is not None:
                batch.append(loss)
            result = await trio.to_thread.run_sync(self._write, batch)
            await self._settle(result, result.error)
            if result.error is not None:
                await self._save_pending()
            elif self.previous_pending is None:
                await self._clear_pending()  # everything the slot held is in the log
            else:
                await self._save_pending()
        if result.error is None:
            self._say("evidence: the log can be written again; the loss record is in it")

    def _pending(self, *, stopped: bool) -> PendingLoss:
        """What the log misses now: everything since the last report in it,
        plus what a previous run left that is not in the log yet."""
        before, start = self._confirmed
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        counts = loss_delta(self._current_losses(), before)
        window_start = format_rfc3339_ns(self.mapper.wall_ns(start))
        reason = self.failing or ""
        previous = self.previous_pending
        if previous is not None:
            for kind, stages in previous.counts.items():
                row = counts.setdefault(kind, {})
                for stage, n in stages.items():
                    row[stage] = row.get(stage, 0) + n
            window_start = previous.window_start
            reason = reason or previous.reason
        return PendingLoss(
            reason=reason,
            boot_id=self.mapper.anchor.boot_id,
            window_start=window_start,
            window_end=format_rfc3339_ns(self.mapper.wall_ns(now)),
            counts=counts,
            stopped=stopped,
        )

    async def _save_pending(self, *, stopped: bool = False) -> None:
        """Keep what the log misses in the slot (call with the store lock held)."""
        if self._slot is None:
            return
        pending = self._pending(stopped=stopped)
        try:
            await trio.to_thread.run_sync(self._slot.write, pending)
        except OSError as err:
            self._say_once(
                "slot", f"evidence: cannot keep the loss count on disk either ({err.strerror})"
            )

    async def _clear_pending(self) -> None:
        if self._slot is None:
            return
        try:
            await trio.to_thread.run_sync(self._slot.clear)
        except OSError as err:
            self._say(f"evidence: cannot clear {self._slot.path} ({err.strerror})")

    def _previous_record(self, pending: PendingLoss) -> EvidenceRecord:
        """What the previous run could not write, as a loss record of this
        run (made once: the same record if the store fails before it is in);
        the slot is cleared once it is in the log."""
        cause = {
            "store_failed": pending.reason,
            "previous_run": True,
            "boot_id": pending.boot_id,
            "window_start": pending.window_start,
            "window_end": pending.window_end,
            "stopped": pending.stopped,
        }
        at = self.mapper.anchor.boottime_ns
        if self._previous_record_made is None:
            self._previous_record_made = self.mapper.capture_loss(
                pending.counts, at, at, cause=cause
            )
        record = self._previous_record_made
        self._previous_id = record.id

        def done() -> None:
            self.previous_pending = None
            self._previous_done = True

        self._after_commit[record.id] = done
        return record

    _previous_record_made: EvidenceRecord | None = None

    def _say_once(self, key: str, line: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._say(line)


def _events_in(record: EvidenceRecord) -> int:
    """The kernel events a record stands for (a folded one's ``count``), so a
    lost record is counted as what it held."""
    count = getattr(record.payload, "count", 1)
    return count if isinstance(count, int) else 1


class StoreOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the sealed log is written (EvidenceStore's settings)."""

    fsync: FsyncPolicy = "batch"
    segment_max_bytes: int = 64 * 2**20
    segment_max_age_s: float = 24 * 3600
    retain_max_bytes: int = 2**30
    checkpoint_every_records: int = 0


def open_pipeline(
    state_dir: str | os.PathLike[str],
    events: AsyncIterable[list[Event]],
    *,
    books: Callable[[], Mapping[str, KindAccount]],
    probes: list[ProbeStatus],
    config: Mapping[str, Any],
    redactor: Redactor | None = None,
    store_options: StoreOptions | None = None,
    sink_books: Callable[[], Mapping[str, Mapping[str, tuple[int, int]]]] | None = None,
    losses: DownstreamLosses | None = None,
    failpoints: Failpoints | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    say: Callable[[str], None] | None = None,
    group: int | None = None,
    cgroups: Callable[[int], CgroupInfo] | None = None,
) -> EvidencePipeline:
    """The pipeline for a state directory, with this host's anchor.

    Reads what a previous run left: whether it stopped cleanly, and the
    pending-loss slot (what it could not write). ``group``: the gid that may
    read the log (see :class:`EvidenceStore`); ``cgroups``: the mapper's
    cgroup look-up (see :class:`~agent.evidence.mapper.Mapper`). Raises what
    :class:`EvidenceStore` raises when the store cannot be opened.
    """
    opts = store_options or StoreOptions()
    holder: list[StoreOptions] = [opts]

    def reopen() -> EvidenceStore:
        return EvidenceStore(Path(state_dir), **msgspec.structs.asdict(holder[0]), group=group)

    notices: list[str] = []
    failing: str | None = None
    store: EvidenceStore | None
    try:
        store = reopen()
    except OSError as err:
        # A full or failing disk at start: capture runs, the store is retried.
        # (A locked or damaged log is refused: that takes an operator.)
        store, failing = None, f"{err.strerror or err}"
    slot = LossSlot(Path(state_dir))
    try:
        previous_pending = slot.read()
    except ValueError as err:
        notices.append(f"evidence: {err}; ignored")
        previous_pending = None
    if previous_pending is not None and not previous_pending.counts:
        previous_pending = None  # the outage ended with everything in the log
    try:
        slot.prepare()
    except OSError as err:
        notices.append(f"evidence: cannot allocate {slot.path} ({err.strerror})")
    mapper = Mapper(
        host=socket.gethostname(),
        anchor=read_anchor(),
        redactor=redactor,
        traceparent=traceparent,
        tracestate=tracestate,
        cgroups=cgroups,
    )
    pipeline = EvidencePipeline(
        events,
        mapper,
        store,
        books=books,
        probes=probes,
        config=config,
        sink_books=sink_books,
        losses=losses,
        reopen=lambda: reopen_with(pipeline.store_options),
        slot=slot,
        failpoints=failpoints,
        failing=failing,
    )

    def reopen_with(options: StoreOptions | None) -> EvidenceStore:
        if options is not None:
            holder[0] = options
        return reopen()

    if say is not None:
        pipeline._say = say
    for line in notices:
        pipeline._say(line)
    pipeline.store_options = opts
    pipeline.previous_pending = previous_pending
    unclean = previous_run(last_segments(state_dir))
    if unclean is not None and previous_pending is not None:
        unclean["store_failed"] = previous_pending.reason
    pipeline.unclean_previous_run = unclean
    return pipeline
