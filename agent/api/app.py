"""What each endpoint of the local API answers, from the running daemon's state.

The server (:mod:`agent.api.server`) hands each routed request here. Every
handler only reads: the aggregating sink's snapshot, the capture's books,
the evidence log on disk (in a worker thread, so a large log never stalls
the event loop, let alone the drain). The evidence endpoints answer 503
when the daemon runs without an evidence log, saying how to turn it on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import CollectorRegistry

from agent.api.http import HttpError
from agent.api.live import LiveTail, record_event
from agent.api.peer_process import GONE
from agent.api.produce import parse_produced
from agent.api.routes import Route
from agent.api.server import ApiServerStats, Peer, Reply, Send, StreamReply
from agent.api.sse import sse_comment, sse_event
from agent.capture.container_id import matches_container
from agent.capture.session import CaptureSession
from agent.child_command import child_command
from agent.evidence.app_event import AppEvent
from agent.evidence.log_reader import events_after
from agent.evidence.record_types import TYPE_APP
from agent.evidence.verify import VerifyReport
from agent.evidence.verify_child import decode_report
from agent.evidence.worker import EvidenceWorker
from agent.memory import release_free_memory
from agent.metrics import CONTENT_TYPE, QueueSample, render
from agent.query.filter import EventFilter, cursor_after
from agent.query.scan import find, newest, search
from agent.redact.events import MemoStats
from agent.safetext import json_bytes, terminal_safe_json
from agent.sinks.aggregating import AggregatingSink
from agent.sinks.profile import ProcessProfile, Profile, encode_profile, subtree_indexes

__all__ = ["DaemonApi", "VerifyResult", "filter_profile"]

#: Records per page when a reconnecting client is caught up from the log.
RESUME_PAGE = 500
#: A comment this often keeps a quiet stream open through proxies and shows
#: a dead client as a write error.
KEEPALIVE_S = 15.0
_NO_EVIDENCE = (
    "the evidence log is off; enable it with [evidence] enabled = true or run --evidence DIR"
)


class VerifyResult(msgspec.Struct, frozen=True):
    """The last verification of the live log (for /v1/verify and the metrics)."""

    ok: bool
    at: float  # wall-clock seconds
    records: int
    summary: str


def filter_profile(
    profile: Profile,
    *,
    pid: int | None,
    comm: str | None,
    cgroup: int | None,
    container: str | None = None,
    tree: int | None = None,
) -> Profile:
    """Only the processes matching every filter given. Pure. ``container``
    is an id prefix (checked by the route): a process whose cgroup names no
    container, or is unresolved, never matches it. ``tree`` keeps the
    process(es) with that pid and all their descendants, by the profile's
    parent links (:func:`agent.sinks.profile.subtree_indexes`): found over
    the whole profile, then ANDed with the other filters."""

    def keep(process: ProcessProfile) -> bool:
        return (
            (pid is None or process.pid == pid)
            and (comm is None or process.comm == comm)
            and (cgroup is None or process.cgroup_id == cgroup)
            and (container is None or matches_container(process.container, container))
        )

    if pid is None and comm is None and cgroup is None and container is None and tree is None:
        return profile
    processes = profile.processes
    if tree is not None:
        in_tree = subtree_indexes(processes, tree)
        processes = [p for i, p in enumerate(processes) if i in in_tree]
    return msgspec.structs.replace(profile, processes=[p for p in processes if keep(p)])


def _json(value: object, status: int = 200) -> Reply:
    """A JSON answer; host text that is not UTF-8 (a config path, say) in
    escape form, as in every output (agent.safetext)."""
    return Reply(status, json_bytes(value, msgspec.json.encode, msgspec.to_builtins) + b"\n")


async def _verify_in_child(extent: list[tuple[Path, int]]) -> VerifyReport:
    """Verify ``extent`` in a child process (:mod:`agent.evidence.verify_child`):
    a verify in a thread would hold the GIL against the drain for its whole
    run. Raises :class:`HttpError` 503 when the log could not be read (a
    segment pruned meanwhile: not a broken chain, try again)."""
    listing = msgspec.json.encode([(str(path), size) for path, size in extent])
    result = await trio.run_process(
        child_command("agent.evidence.verify_child"),
        stdin=listing,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip().splitlines()
        raise HttpError(503, why[-1] if why else f"the verifier exited {result.returncode}")
    try:
        return decode_report(result.stdout)
    except msgspec.ValidationError as err:
        raise HttpError(503, f"the verifier's answer is not a report: {err}") from None


class DaemonApi:
    """The handlers, over the daemon's live objects.

    ``ready`` is set by the daemon once its probes are attached and the drain
    runs; ``/readyz`` answers 503 until then (and again while stopping).
    """

    def __init__(
        self,
        *,
        aggregate: AggregatingSink,
        session: CaptureSession,
        pipeline: EvidenceWorker | None,
        state_dir: Path | None,
        tail: LiveTail,
        registry: CollectorRegistry | None,
        server_stats: ApiServerStats,
        sse_buffer: int,
        queues: Callable[[], list[QueueSample | None]],
        config_info: Callable[[], dict[str, Any]],
        present: Callable[[Profile], Profile],
        caches: Callable[[], Mapping[str, MemoStats]] = dict,
    ) -> None:
        self.aggregate = aggregate
        self.session = session
        self.pipeline = pipeline
        self.state_dir = state_dir
        self.tail = tail
        self.registry = registry
        self.server_stats = server_stats
        self.sse_buffer = sse_buffer
        self.queues = queues
        self.config_info = config_info
        #: Redacts a profile before it is served (never raw over the API).
        self.present = present
        #: Every bounded cache (redaction memos) by name, for /v1/stats.
        self.caches = caches
        self._presenting = trio.Lock()
        self.ready = False
        self.last_verify: VerifyResult | None = None
        self._verifying = trio.Lock()

    async def __call__(self, route: Route, peer: Peer) -> Reply | StreamReply:
        params = route.params
        match route.name:
            case "healthz":
                return _json({"status": "ok"})
            case "readyz":
                if not self.ready:
                    return _json({"status": "not ready", "detail": "probes not attached yet"}, 503)
                failing = self.pipeline.failing if self.pipeline is not None else None
                if failing is not None:
                    detail = f"the evidence log cannot be written: {failing}"
                    return _json({"status": "not ready", "detail": detail}, 503)
                return _json({"status": "ready"})
            case "snapshot":
                return await self._snapshot(params)
            case "stats":
                return _json(self.stats())
            case "events":
                return await self._events(route)
            case "event":
                state_dir = self._need_evidence()
                wanted = str(params["id"])
                event = await trio.to_thread.run_sync(find, state_dir, wanted)
                if event is None:
                    raise HttpError(404, f"no event {wanted} in the log (pruned, or never there)")
                return Reply(200, terminal_safe_json(event.raw + b"\n"))
            case "stream":
                self._need_evidence()
                last = params.get("last_event_id")
                return StreamReply(run=lambda send: self._stream(send, _str(last)))
            case "verify":
                result = await self.verify()
                return _json(result, 200)
            case "produce":
                return await self._produce(route.body, peer)
            case "metrics":
                if self.registry is None:
                    raise HttpError(503, "metrics are off ([metrics] enabled = false)")
                return Reply(200, render(self.registry), CONTENT_TYPE)
        raise HttpError(404, "no such endpoint")  # pragma: no cover (routes are exhaustive)

    async def _events(self, route: Route) -> Reply:
        """A page of the records matching the route's filter, in log order,
        and the cursor of the next page (``null``: that was all); with
        ``last``, the newest N instead (and the cursor after the newest, to
        follow on from). Searched in a worker thread: a scan of a large log
        must not stall the event loop."""
        state_dir = self._need_evidence()
        params = route.params
        flt = route.filter if route.filter is not None else EventFilter()
        limit = int(params["limit"])
        if "last" in params:
            last = int(params["last"])
            found = await trio.to_thread.run_sync(lambda: newest(state_dir, flt, limit=last))
            following = cursor_after(found[-1].seq) if found else None
        else:
            after = int(params.get("after_seq", -1))
            page = await trio.to_thread.run_sync(
                lambda: search(state_dir, flt, after_seq=after, limit=limit)
            )
            found, following = page.events, page.next_cursor
        # The records' bytes as the log holds them, not encoded again.
        listing = b'{"events":[' + b",".join(e.raw for e in found) + b'],"next":'
        listing += msgspec.json.encode(following) + b"}\n"
        return Reply(200, terminal_safe_json(listing))

    async def _produce(self, body: bytes, peer: Peer) -> Reply:
        """A producer's event into the log (``POST /v1/events``): 202 with
        the record's id and time once it is mapped and queued (written
        within the batch after; ``GET /v1/events/{id}`` finds it then).
        The server has checked who may send it and how often; here its
        body is checked (400 naming what is wrong) and every outcome counted."""
        counts = self.server_stats.produced
        try:
            produced = parse_produced(body)
        except HttpError:
            counts["malformed"] += 1
            raise
        if self.pipeline is None:
            counts["unwritten"] += 1
            raise HttpError(503, _NO_EVIDENCE)
        process = peer.process if peer.process is not None else GONE
        event = AppEvent(
            pid=peer.pid,
            uid=peer.uid,
            gid=peer.gid,
            exe=process.exe,
            comm=process.comm,
            cgroup_id=process.cgroup_id,
            peer_gone=process.gone,
            kind=produced.kind,
            message=produced.message,
            data=produced.data,
            ts_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        )
        done = await self.pipeline.append_app(event)
        if isinstance(done, str) or done.refused is not None or done.record_id is None:
            counts["unwritten"] += 1
            why = done if isinstance(done, str) else done.refused or "no record"
            raise HttpError(503, f"the event was not recorded: {why}")
        counts["accepted"] += 1
        answer = {"id": done.record_id, "type": TYPE_APP, "time": done.time}
        return _json(answer, 202)

    def _need_evidence(self) -> Path:
        if self.state_dir is None or self.pipeline is None:
            raise HttpError(503, _NO_EVIDENCE)
        return self.state_dir

    async def _snapshot(self, params: dict[str, int | str]) -> Reply:
        """The profile so far, redacted in a worker thread (one at a time:
        the redaction memo is not thread-safe). The comm filter applies to
        the redacted names, so it cannot probe for a secret."""
        profile = filter_profile(
            self.aggregate.snapshot(),
            pid=_int(params.get("pid")),
            comm=None,
            cgroup=_int(params.get("cgroup")),
            container=_str(params.get("container")),
            tree=_int(params.get("tree")),
        )
        comm = _str(params.get("comm"))

        def render() -> bytes:
            shown = filter_profile(self.present(profile), pid=None, comm=comm, cgroup=None)
            body = encode_profile(shown)
            del shown
            release_free_memory()  # the snapshot's copies are a peak, not a need
            return body

        async with self._presenting:
            body = await trio.to_thread.run_sync(render)
        return Reply(200, body)

    def stats(self) -> dict[str, Any]:
        """What /v1/stats answers: the capture's books, every queue, what the
        snapshot's aggregate holds and evicted, the API, evidence."""
        pipeline = self.pipeline
        evidence: dict[str, Any] | None = None
        if pipeline is not None:
            evidence = {
                "records": pipeline.published,
                "unwritten": pipeline.unwritten,
                "failed": pipeline.failed,
                "store_failures": pipeline.failures,
                "checkpoint_age_s": pipeline.checkpoint_age_s,
                "last_verify": self.last_verify,
                # Committed records the worker could not send back to the live tail.
                "tail_dropped": pipeline.tail_dropped,
            }
        return {
            "capture": self.session.stats(),
            "queues": [
                {"queue": q[0], "depth": q[1], "capacity": q[2]}
                for q in self.queues()
                if q is not None
            ],
            "aggregate": self.aggregate.status(),
            "cgroups": None if self.aggregate.cgroups is None else self.aggregate.cgroups.stats(),
            "caches": dict(self.caches()),
            "evidence": evidence,
            "api": {**self.server_stats.as_dict(), "sse_dropped": self.tail.dropped},
            "config": self.config_info(),
        }

    async def verify(self) -> VerifyResult:
        """Verify the log as written so far (chain and structure; the seals
        need the verification key, which the host does not keep)."""
        self._need_evidence()
        pipeline = self.pipeline
        assert pipeline is not None
        async with self._verifying:  # one at a time: it reads the whole log
            extent = await pipeline.extent()
            if not extent:
                raise HttpError(503, "the evidence log is closed or its store failed")
            report = await _verify_in_child(extent)
            self.last_verify = VerifyResult(
                ok=report.ok, at=time.time(), records=report.records, summary=report.summary()
            )
            return self.last_verify

    async def _stream(self, send: Send, last_event_id: str | None) -> None:
        """Live records; after ``last_event_id`` first, from the log.

        The client subscribes before the log is read, so nothing published
        meanwhile is missed; a record both read from the log after
        subscribing and queued live is sent once (by its chain seq, which
        orders the log and the live queue alike).
        """
        client = self.tail.subscribe(self.sse_buffer)
        try:
            await send(sse_comment("tracehound live tail"))
            sent_up_to = -1  # chain seq of the last record sent from the log
            if last_event_id is not None:
                sent_up_to = await self._resume(send, last_event_id)
            while True:
                await client.wait(KEEPALIVE_S)
                data = client.take(after_seq=sent_up_to)
                if data:
                    await send(data)
                elif client.closed:
                    return
                else:
                    await send(sse_comment())
        finally:
            self.tail.unsubscribe(client)

    async def _resume(self, send: Send, last_event_id: str) -> int:
        """Send every logged record after ``last_event_id``; the chain seq of
        the last one sent (-1 if none)."""
        assert self.state_dir is not None
        state_dir = self.state_dir
        sent_up_to = -1
        cursor = last_event_id
        while True:
            page = await trio.to_thread.run_sync(
                functools.partial(events_after, state_dir, cursor, max_events=RESUME_PAGE)
            )
            if page is None:
                detail = msgspec.json.encode(
                    {
                        "last_event_id": last_event_id,
                        "detail": "not in the log (pruned, or from another host); "
                        "live records follow, earlier ones may be missing",
                    }
                ).decode()
                await send(sse_event(detail, event="gap"))
                return sent_up_to
            if page:
                await send(
                    b"".join(
                        record_event(e.raw, str(e.event["type"]), str(e.event["id"])) for e in page
                    )
                )
                sent_up_to = page[-1].seq
                cursor = str(page[-1].event["id"])
            if len(page) < RESUME_PAGE:
                return sent_up_to


def _int(value: int | str | None) -> int | None:
    return None if value is None else int(value)


def _str(value: int | str | None) -> str | None:
    return None if value is None else str(value)
