"""Evidence bench: how fast the mapper and the publisher run, in records per second.

Everything ``tracehound run --evidence DIR`` does after the drain hands over an
event is measured here, on a synthetic but realistic mix of native events
(:mod:`agent.capture.events`), deterministic from ``--seed``:

* 60% ``FileEvent`` (open, with library, config, /proc and home paths);
* 10% ``ExecEvent`` (a few argv entries; about one in twenty carries a
  password flag or a ``*_TOKEN=`` entry, so redaction fires now and then);
* 10% ``ForkEvent``, 10% ``ExitEvent`` (a few by signal);
* 5% ``NetEvent`` (connect/accept/bind/listen, IPv4, IPv6 and UNIX);
* 5% ``SyscallCounts`` (8 to 16 syscall names each).

The kinds are laid out in those exact proportions and shuffled, so every run
with the same ``--events`` and ``--seed`` maps exactly the same stream. Three
stages (and a floor) are measured, each ``--rounds`` times, and the median is reported:

1. **mapper**: ``Mapper.map`` of every event (it returns the record with its
   canonical bytes, encoded once) (the anchor record
   first, as a stream must start), in one thread, nothing else. This is the
   CPU cost of turning an event into canonical CloudEvents bytes:
   redaction, canonical JSON, two blake3 hashes.
2. **publisher**: appending already-mapped records to an
   :class:`~agent.evidence.store.EvidenceStore` in a fresh directory, the way
   ``EvidencePipeline`` does it (``store.append_bodies(batch, seqs)``: the
   records' bytes as the mapper made them, 512 at a time, the pipeline's
   batch size, a ``commit`` after each), timed from the first append through ``close()``
   (final checkpoint and fsync). Six variants: fsync ``never``, ``batch`` and
   ``always``, each unsealed (no key file: chain only) and sealed (``keygen``
   first, untimed: a seal a second after the last, riding on a commit, and
   at close; each one also fsyncs the ratcheted key file). ``always`` fsyncs every record,
   so it runs on the first ``--always-records`` records only (default 2,000).
3. **pipeline**: the whole ``EvidencePipeline`` under trio, the mapper and
   publisher tasks together (the publisher's writes in a worker thread), as
   the agent runs it: fsync ``batch``, sealed, store defaults. A memory
   channel is filled with every event and closed before the clock starts, so
   no producer is timed; the clock stops when ``run()`` returns (stop record
   written, store closed). Records counted are all the pipeline published:
   the events plus its own anchor, start, degraded and stop records.

Every log written, in every stage, is then checked with
:func:`agent.evidence.verify.verify_store` (with the verification key when
sealed); the tables say OK or BROKEN. Verification is not timed.

Why these three: the mapper alone is the ceiling of the CPU work per event;
the publisher alone shows what durability and sealing cost on this disk; the
pipeline shows what is left when both share one process and one GIL, which
is the figure to compare with the capture's event rates. Disk figures depend
on the filesystem of ``--dir`` (default: the system temp directory), which
the bench prints: on tmpfs an fsync costs nothing.

Run it from the repository root (no root needed)::

    .venv/bin/python bench/evidence_bench.py [--events N] [--rounds R]
        [--always-records M] [--seed S] [--dir DIR] [--json FILE]

No target is asserted: the exit status is 0 whenever the bench ran and
every log verified, 1 if a log did not verify or the bench failed.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import blake3
import index_bench
import msgspec
import trio
from bench_args import positive_int

from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    SyscallCounts,
)
from agent.evidence.keys import create_key
from agent.evidence.mapper import Mapper
from agent.evidence.pipeline import EvidencePipeline
from agent.evidence.seal import decode_key
from agent.evidence.store import EvidenceStore, FsyncPolicy
from agent.evidence.types import Anchor, EvidenceRecord
from agent.evidence.verify import VerifyReport, verify_store

BATCH = 512  # records per commit: EvidencePipeline's default batch_max
DRAIN_BATCH = 4096  # events per hand-off: the drain's DEFAULT_BATCH_MAX
HOST = "bench-host"
ANCHOR = Anchor(
    boot_id="6f1c2f0e-3a7b-4c55-9d2e-8b1a0c4d5e6f",
    wall_ns=1_767_225_600_000_000_000,  # 2026-01-01T00:00:00Z
    boottime_ns=3_600_000_000_000,  # an hour after boot
)

# Kind, share of the stream. The shares add up to 1.
MIX: tuple[tuple[str, float], ...] = (
    ("file", 0.60),
    ("exec", 0.10),
    ("fork", 0.10),
    ("exit", 0.10),
    ("net", 0.05),
    ("syscalls", 0.05),
)
MIX_TEXT = ", ".join(f"{round(share * 100)}% {kind}" for kind, share in MIX)

Stage = Literal["mapper", "publisher", "pipeline"]


class BenchError(Exception):
    """A failure of the bench itself (not a disappointing figure)."""


# --------------------------------------------------------------------------
# The synthetic event stream

_COMMS = ("bash", "python3", "git", "node", "nginx", "postgres", "sshd", "cron", "make", "cc1")
_PATHS = (
    "/etc/ld.so.cache",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libpthread.so.0",
    "/usr/lib/locale/locale-archive",
    "/etc/passwd",
    "/etc/nsswitch.conf",
    "/etc/resolv.conf",
    "/dev/null",
    "/dev/urandom",
    "/proc/self/stat",
    "/proc/meminfo",
    "/sys/fs/cgroup/cpu.max",
    "/usr/share/zoneinfo/UTC",
    "/var/log/nginx/access.log",
    "/var/lib/postgresql/15/main/base/16384/2619",
)
_HOME_FILES = ("src/main.py", ".cache/pip/http/a/b/c", ".gitconfig", "notes.txt", ".bashrc")
_RELATIVE = ("Makefile", "build/obj/main.o", "node_modules/.package-lock.json", ".git/HEAD")
_OPEN_SYSCALLS = ("openat", "openat", "openat", "open")
_PROGRAMS: tuple[tuple[str, ...], ...] = (
    ("/usr/bin/git", "status", "--porcelain"),
    ("/usr/bin/git", "log", "--oneline", "-n", "20"),
    ("/bin/ls", "-la", "/var/log"),
    ("/usr/bin/python3", "-m", "pytest", "-q", "tests/"),
    ("/bin/sh", "-c", "make -j2 all"),
    ("/usr/bin/cc", "-O2", "-c", "main.c", "-o", "main.o"),
    ("/usr/bin/curl", "-sS", "https://example.com/health"),
    ("/bin/cat", "/etc/os-release"),
    ("/usr/bin/env", "node", "server.js", "--port", "8080"),
)
_SECRET_PROGRAMS: tuple[tuple[str, ...], ...] = (
    ("/usr/bin/mysql", "-u", "app", "--password", "hunter2-s3cret", "appdb"),
    ("/usr/bin/env", "GITHUB_TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345", "gh", "pr", "list"),
)
_SYSCALLS = (
    "read", "write", "openat", "close", "fstat", "mmap", "mprotect", "munmap", "brk",
    "rt_sigaction", "ioctl", "pread64", "access", "pipe2", "select", "futex", "epoll_wait",
    "clone3", "execve", "wait4", "getdents64", "newfstatat", "recvfrom", "sendto", "connect",
)  # fmt: skip


def kind_sequence(total: int, rng: random.Random) -> list[str]:
    """``total`` kinds in the exact proportions of :data:`MIX`, shuffled."""
    counts = [math.floor(total * share) for _, share in MIX]
    counts[0] += total - sum(counts)  # rounding remainder goes to the commonest kind
    kinds = [kind for (kind, _), count in zip(MIX, counts, strict=True) for _ in range(count)]
    rng.shuffle(kinds)
    return kinds


def make_events(total: int, seed: int) -> list[Event]:
    """The synthetic stream: ``total`` native events, the same for the same seed."""
    rng = random.Random(seed)
    pids = [rng.randrange(1_000, 400_000) for _ in range(64)]
    ts = ANCHOR.boottime_ns
    events: list[Event] = []
    for kind in kind_sequence(total, rng):
        ts += rng.randrange(1_000, 200_000)  # 1 us .. 200 us apart
        pid = rng.choice(pids)
        head: dict[str, Any] = {
            "pid": pid,
            "tid": pid if rng.random() < 0.8 else pid + rng.randrange(1, 50),
            "ts_ns": ts,
            "uid": rng.choice((0, 0, 1000, 33, 999)),
            "gid": rng.choice((0, 1000, 33)),
            "cgroup_id": rng.choice((1, 4321, 98_765_432_101_234)),
            "comm": rng.choice(_COMMS),
        }
        events.append(_event(kind, head, rng, pids))
    return events


def _event(kind: str, head: dict[str, Any], rng: random.Random, pids: list[int]) -> Event:
    if kind == "file":
        roll = rng.random()
        if roll < 0.7:
            path = rng.choice(_PATHS)
        elif roll < 0.9:
            path = f"/home/user{rng.randrange(1, 5)}/{rng.choice(_HOME_FILES)}"
        else:
            path = rng.choice(_RELATIVE)
        ok = rng.random() < 0.9
        return FileEvent(
            **head,
            op="open",
            syscall=rng.choice(_OPEN_SYSCALLS),
            ret=rng.randrange(3, 64) if ok else -2,
            dfd=-100,
            path=path,
            dfd2=0,
            path2="",
            flags=rng.choice((0o0, 0o2000000, 0o101, 0o1101, 0o2)),
            mode=rng.choice((0, 0o644, 0o600)),
        )
    if kind == "exec":
        argv = rng.choice(_SECRET_PROGRAMS) if rng.random() < 0.05 else rng.choice(_PROGRAMS)
        return ExecEvent(
            **head,
            ret=0 if rng.random() < 0.97 else -2,
            filename=argv[0],
            argv=argv,
            argv_truncated=False,
            at=False,
        )
    if kind == "fork":
        child = rng.randrange(1_000, 400_000)
        pids[rng.randrange(len(pids))] = child  # the child may show up later
        return ForkEvent(**head, child_pid=child, clone_flags=rng.choice((0x1200011, 0x3D0F00)))
    if kind == "exit":
        signalled = rng.random() < 0.05
        return ExitEvent(
            **head,
            exit_code=0 if rng.random() < 0.9 else rng.randrange(1, 3),
            signal=rng.choice((9, 15)) if signalled else 0,
            have_code=not signalled,
            have_signal=signalled,
        )
    if kind == "net":
        op = rng.choice(("connect", "connect", "connect", "accept", "bind", "listen"))
        family = rng.choice(("ipv4", "ipv4", "ipv6", "unix"))
        endpoint: Endpoint | None
        if op == "listen":
            endpoint = None
        elif family == "ipv4":
            endpoint = Endpoint("ipv4", f"10.0.{rng.randrange(256)}.{rng.randrange(256)}", 443)
        elif family == "ipv6":
            endpoint = Endpoint("ipv6", f"2001:db8::{rng.randrange(1, 0xFFFF):x}", 5432)
        else:
            endpoint = Endpoint("unix", rng.choice(("/run/dbus/system_bus_socket", "@/tmp/.X11")))
        return NetEvent(
            **head,
            op=op,
            ret=0 if rng.random() < 0.9 else -111,
            fd=rng.randrange(3, 100),
            endpoint=endpoint,
            backlog=511 if op == "listen" else 0,
        )
    names = rng.sample(_SYSCALLS, rng.randrange(8, 17))
    return SyscallCounts(
        pid=head["pid"],
        counts={name: rng.randrange(1, 100_000) for name in names},
        final=rng.random() < 0.2,
    )


# --------------------------------------------------------------------------
# Measurements


@dataclass
class Result:
    """One stage or variant, all its rounds."""

    key: str
    stage: Stage
    title: str
    records: int  # records per run
    seconds: list[float] = field(default_factory=list)
    log_bytes: list[int] = field(default_factory=list)  # publisher/pipeline: log size
    verified: list[bool] = field(default_factory=list)  # publisher/pipeline only
    note: str = ""

    @property
    def rates(self) -> list[float]:
        return [self.records / s for s in self.seconds]

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def us_per_record(self) -> float:
        return 1e6 / self.median_rate

    @property
    def bytes_per_record(self) -> float | None:
        return statistics.median(self.log_bytes) / self.records if self.log_bytes else None

    @property
    def verdict(self) -> str:
        if not self.verified:
            return "n/a"
        return "OK" if all(self.verified) else "BROKEN"


def _timed(fn: Callable[[], None]) -> float:
    """Seconds ``fn`` takes, with the cyclic GC collected before and off during."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def map_all(events: Sequence[Event]) -> list[EvidenceRecord]:
    """The records a fresh mapper makes of ``events``, anchor record first."""
    mapper = Mapper(host=HOST, anchor=ANCHOR)
    return [mapper.anchor_record(), *(mapper.map(e) for e in events)]


def run_mapper(events: Sequence[Event]) -> float:
    sink: list[bytes] = []

    def work() -> None:
        mapper = Mapper(host=HOST, anchor=ANCHOR)
        append = sink.append
        append(mapper.anchor_record().body)
        for event in events:
            append(mapper.map(event).body)  # the record comes with its bytes

    seconds = _timed(work)
    if len(sink) != len(events) + 1:
        raise BenchError(f"mapper made {len(sink)} records of {len(events)} events")
    return seconds


def _log_size(state: Path) -> int:
    return sum(p.stat().st_size for p in (state / "segments").iterdir() if p.is_file())


def _verify(state: Path, key: bytes | None) -> VerifyReport:
    return verify_store(state, key=key)


def _fresh_state(base: Path, name: str, sealed: bool) -> tuple[Path, bytes | None]:
    state = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    key = decode_key(create_key(state)) if sealed else None
    return state, key


def run_floor(records: Sequence[EvidenceRecord], base: Path) -> tuple[float, int, VerifyReport]:
    """The least the per-record work can cost: encode the typed payload, hash
    it, chain and append the record (fsync=batch, sealed), nothing else (no
    redaction, no mapping, no trio): the floor beside the pipeline."""
    state, key = _fresh_state(base, "floor", True)
    try:
        store = EvidenceStore(state, fsync="batch")
        encode = msgspec.json.Encoder(order="sorted").encode

        # The typed payloads, untimed: a record decodes its own from its bytes.
        payloads = [record.payload for record in records]

        def work() -> None:
            for start in range(0, len(records), BATCH):
                batch = records[start : start + BATCH]
                for payload in payloads[start : start + BATCH]:
                    blake3.blake3(encode(payload)).hexdigest()
                store.append_bodies(batch, [])
                store.commit()
            store.close()

        seconds = _timed(work)
        return seconds, _log_size(state), _verify(state, key)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run_publisher(
    records: Sequence[EvidenceRecord], fsync: FsyncPolicy, sealed: bool, base: Path
) -> tuple[float, int, VerifyReport]:
    state, key = _fresh_state(base, f"pub-{fsync}", sealed)
    try:
        store = EvidenceStore(state, fsync=fsync)
        if store.sealed != sealed:
            raise BenchError(f"{state}: store sealed={store.sealed}, wanted {sealed}")

        def work() -> None:
            for start in range(0, len(records), BATCH):
                store.append_bodies(records[start : start + BATCH], [])
                if fsync != "always":  # "always" committed every record already
                    store.commit()
            store.close()

        seconds = _timed(work)
        return seconds, _log_size(state), _verify(state, key)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run_pipeline(
    events: Sequence[Event], fsync: FsyncPolicy, sealed: bool, base: Path, *, index: bool = False
) -> tuple[float, int, int, VerifyReport]:
    """Seconds, records published, log bytes, and the verification of the log;
    with ``index``, the index follower runs beside it, as in the daemon."""
    state, key = _fresh_state(base, f"pipe-{fsync}", sealed)
    follower = None
    try:
        store = EvidenceStore(state, fsync=fsync)
        mapper = Mapper(host=HOST, anchor=ANCHOR)
        # The drain's batches: as many events as it reads off the ring at once.
        send, receive = trio.open_memory_channel[list[Event]](math.inf)
        for start in range(0, len(events), DRAIN_BATCH):
            send.send_nowait(list(events[start : start + DRAIN_BATCH]))
        send.close()
        pipeline = EvidencePipeline(
            receive, mapper, store, books=lambda: {}, probes=[], config={"bench": "evidence"}
        )
        if index:
            follower = index_bench.start_follower(state)
            time.sleep(1.0)  # its start (imports, an empty index made) is not timed

        async def timed_run() -> float:
            start = time.perf_counter()
            await pipeline.run()
            return time.perf_counter() - start

        gc.collect()
        gc.disable()
        try:
            seconds = trio.run(timed_run)
        finally:
            gc.enable()
        if pipeline.mapped != len(events):
            raise BenchError(f"pipeline mapped {pipeline.mapped} of {len(events)} events")
        return seconds, pipeline.published, _log_size(state), _verify(state, key)
    finally:
        if follower is not None:
            index_bench.stop_follower(follower)
        shutil.rmtree(state, ignore_errors=True)


PUBLISHER_VARIANTS: tuple[tuple[FsyncPolicy, bool], ...] = (
    ("never", False),
    ("never", True),
    ("batch", False),
    ("batch", True),
    ("always", False),
    ("always", True),
)
PIPELINE_FSYNC: FsyncPolicy = "batch"
PIPELINE_SEALED = True


def _seal_text(sealed: bool) -> str:
    return "sealed" if sealed else "unsealed"


def measure(
    events: Sequence[Event], rounds: int, always_records: int, base: Path, out: Any
) -> tuple[list[Result], list[str]]:
    """All stages, ``rounds`` times each, interleaved round by round."""
    records = map_all(events)
    mapper = Result("mapper", "mapper", "mapper: map + redact + encode", len(events) + 1)
    floor = Result(
        "floor",
        "floor",
        "floor: encode + hash + append, fsync=batch, sealed",
        len(records),
        note="no redaction, no mapping, no trio",
    )
    publishers: list[Result] = []
    for fsync, sealed in PUBLISHER_VARIANTS:
        count = min(always_records, len(records)) if fsync == "always" else len(records)
        commit = "every record" if fsync == "always" else f"every {BATCH}"
        publishers.append(
            Result(
                f"publisher_{fsync}_{_seal_text(sealed)}",
                "publisher",
                f"publisher: fsync={fsync}, {_seal_text(sealed)}",
                count,
                note=f"commit {commit}",
            )
        )
    pipeline = Result(
        "pipeline",
        "pipeline",
        f"pipeline: fsync={PIPELINE_FSYNC}, {_seal_text(PIPELINE_SEALED)}",
        0,  # set from what it published
        note="trio, mapper + publisher tasks",
    )
    failures: list[str] = []
    for r in range(1, rounds + 1):
        out.write(f"round {r}/{rounds}: mapper")
        out.flush()
        mapper.seconds.append(run_mapper(events))
        out.write(", floor")
        out.flush()
        seconds, size, report = run_floor(records, base)
        floor.seconds.append(seconds)
        floor.log_bytes.append(size)
        floor.verified.append(report.ok and report.seals_checked)
        if not floor.verified[-1]:
            failures.append(f"{floor.title}, round {r}: {report.summary()}")
        for (fsync, sealed), result in zip(PUBLISHER_VARIANTS, publishers, strict=True):
            out.write(f", {fsync}/{_seal_text(sealed)}")
            out.flush()
            seconds, size, report = run_publisher(records[: result.records], fsync, sealed, base)
            result.seconds.append(seconds)
            result.log_bytes.append(size)
            result.verified.append(report.ok and report.seals_checked == sealed)
            if not result.verified[-1]:
                failures.append(f"{result.title}, round {r}: {report.summary()}")
        out.write(", pipeline")
        out.flush()
        seconds, published, size, report = run_pipeline(
            events, PIPELINE_FSYNC, PIPELINE_SEALED, base
        )
        if pipeline.records and published != pipeline.records:
            raise BenchError(f"pipeline published {published}, earlier {pipeline.records}")
        pipeline.records = published
        pipeline.seconds.append(seconds)
        pipeline.log_bytes.append(size)
        pipeline.verified.append(report.ok and report.seals_checked == PIPELINE_SEALED)
        if not pipeline.verified[-1]:
            failures.append(f"{pipeline.title}, round {r}: {report.summary()}")
        pipeline_report = report.summary().splitlines()[0]
        out.write(f" ({pipeline_report})\n")
        out.flush()
    return [mapper, floor, *publishers, pipeline], failures


# --------------------------------------------------------------------------
# Reporting


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_bytes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _table(rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def results_table(results: Sequence[Result]) -> str:
    rows = [
        [
            "stage",
            "records/run",
            "records/s (median)",
            "min",
            "max",
            "us/record",
            "log bytes/record",
            "log verifies",
        ]
    ]
    for r in results:
        rows.append(
            [
                r.title,
                f"{r.records:,}",
                _fmt_rate(r.median_rate),
                _fmt_rate(min(r.rates)),
                _fmt_rate(max(r.rates)),
                f"{r.us_per_record:.1f}",
                _fmt_bytes(r.bytes_per_record),
                r.verdict,
            ]
        )
    return _table(rows)


def filesystem_of(path: Path) -> str:
    """The filesystem type ``path`` lives on, from /proc/self/mounts (longest mount prefix)."""
    best, fstype = "", "unknown"
    target = str(path.resolve())
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, parts[2]
    return fstype


def host_line() -> str:
    return (
        f"Linux {platform.release()}, {os.cpu_count()} CPUs"
        f" ({platform.processor() or platform.machine()}),"
        f" Python {platform.python_version()}"
    )


def markdown(results: Sequence[Result], args: argparse.Namespace, base: Path, fstype: str) -> str:
    today = datetime.date.today().isoformat()
    always = min(args.always_records, args.events + 1)
    rounds = f"{args.rounds} round" + ("" if args.rounds == 1 else "s")
    lines = [
        "## Evidence bench figures",
        "",
        f"`.venv/bin/python bench/evidence_bench.py`, {today}, {host_line()};"
        f" logs written to {fstype} ({base}). {args.events:,} synthetic events"
        f" (seed {args.seed}: {MIX_TEXT}), median of {rounds}.",
        "",
        "| stage | records/run | records/s | µs/record | log bytes/record | log verifies |",
        "|---|--:|--:|--:|--:|:-:|",
    ]
    for r in results:
        lines.append(
            f"| {r.title} | {r.records:,} | {_fmt_rate(r.median_rate)}"
            f" | {r.us_per_record:.1f} | {_fmt_bytes(r.bytes_per_record)} | {r.verdict} |"
        )
    lines += [
        "",
        "Mapper: `Mapper.map` (redaction through its memo, the payload's canonical bytes"
        " made once, the envelope composed around them, two blake3), anchor record first."
        " Floor: the"
        " least per-record work (encode the payload, blake3 it, chain and append the"
        " record's bytes), fsync=batch, sealed. Publisher: `EvidenceStore.append_bodies` of"
        f" pre-mapped records as the pipeline does it, a commit every {BATCH}, timed through"
        " `close()`; sealed = a seal a second after the last, riding on a commit;"
        f" fsync=always on the first {always:,} records only. Pipeline: `EvidencePipeline`"
        " under trio, fed from a pre-filled channel in the drain's batches, timed until"
        " `run()` returns (store closed); its records include its anchor, start, degraded"
        " and stop records. Every log checked with `verify_store`"
        " (with the key when sealed).",
    ]
    return "\n".join(lines)


def as_json(
    results: Sequence[Result], args: argparse.Namespace, base: Path, fstype: str
) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "dir": str(base),
        "filesystem": fstype,
        "events": args.events,
        "seed": args.seed,
        "mix": dict(MIX),
        "rounds": args.rounds,
        "batch": BATCH,
        "results": {
            r.key: {
                "stage": r.stage,
                "title": r.title,
                "note": r.note,
                "records_per_run": r.records,
                "seconds": r.seconds,
                "records_per_s": r.rates,
                "median_records_per_s": r.median_rate,
                "us_per_record": r.us_per_record,
                "log_bytes": r.log_bytes,
                "log_bytes_per_record": r.bytes_per_record,
                "verified": r.verified,
                "verdict": r.verdict,
            }
            for r in results
        },
    }


# --------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evidence_bench.py",
        description="Records per second of the evidence mapper, publisher (store) and "
        "whole pipeline, on a synthetic event mix.",
    )
    parser.add_argument("--events", type=positive_int, default=50_000, metavar="N",
                        help="synthetic events per run (default 50000)")  # fmt: skip
    parser.add_argument("--rounds", type=positive_int, default=3, metavar="R",
                        help="runs of every stage; medians are reported (default 3)")  # fmt: skip
    parser.add_argument("--always-records", type=positive_int, default=2_000, metavar="M",
                        help="records for the fsync=always publisher runs (default 2000)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, metavar="S",
                        help="seed of the synthetic event stream (default 1)")  # fmt: skip
    parser.add_argument("--dir", type=Path, default=None, metavar="DIR",
                        help="where to write the logs (default: the system temp directory)")  # fmt: skip
    parser.add_argument("--index-log-mb", type=int, default=1024, metavar="MB",
                        help="size of the log the index queries are timed on (0: no index"
                             " figures; default 1024)")  # fmt: skip
    parser.add_argument("--index-cache", type=Path, default=Path("/var/tmp/tracehound-index-bench"),
                        metavar="DIR", help="where that log is kept between runs")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", type=Path,
                        help="also write the figures as JSON to FILE")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base_parent = args.dir if args.dir is not None else Path(tempfile.gettempdir())
    if not base_parent.is_dir():
        print(f"evidence_bench: {base_parent}: not a directory", file=sys.stderr)
        return 2
    fstype = filesystem_of(base_parent)
    out = sys.stdout
    out.write(f"tracehound evidence bench: {host_line()}\n")
    out.write(f"logs in {base_parent} ({fstype}); {args.rounds} rounds, medians reported\n")
    out.write(f"generating {args.events:,} events (seed {args.seed}: {MIX_TEXT})\n")
    out.flush()
    started = time.monotonic()
    events = make_events(args.events, args.seed)
    try:
        with tempfile.TemporaryDirectory(prefix="tracehound-evbench-", dir=base_parent) as tmp:
            results, failures = measure(events, args.rounds, args.always_records, Path(tmp), out)
    except BenchError as err:
        print(f"evidence_bench: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("evidence_bench: interrupted", file=sys.stderr)
        return 130

    out.write("\nresults (records/s: median, min and max over the rounds):\n")
    out.write(results_table(results) + "\n")
    if args.index_log_mb > 0:
        out.write("index: pipeline with the follower beside it, then the big log\n")
        out.flush()
        with tempfile.TemporaryDirectory(prefix="tracehound-evbench-", dir=base_parent) as tmp:
            rates = {}
            for index in (False, True, False, True):
                seconds, published, _, _ = run_pipeline(
                    events, PIPELINE_FSYNC, PIPELINE_SEALED, Path(tmp), index=index
                )
                rates.setdefault(index, []).append(published / seconds)
        out.write(
            f"  pipeline records/s without the index {statistics.median(rates[False]):,.0f},"
            f" with {statistics.median(rates[True]):,.0f}\n"
        )
        out.flush()
        figures = index_bench.big_log_figures(
            args.index_cache, args.index_log_mb, args.seed, make_events, HOST, ANCHOR
        )
        out.write(
            index_bench.report(
                figures, statistics.median(rates[True]), statistics.median(rates[False])
            )
            + "\n"
        )
    for failure in failures:
        out.write(f"BROKEN: {failure}\n")
    out.write(f"bench took {time.monotonic() - started:.0f} s\n\n")
    out.write("--- markdown for README.md ---\n")
    out.write(markdown(results, args, base_parent, fstype) + "\n")
    out.write("--- end ---\n")
    if args.json is not None:
        try:
            payload = as_json(results, args, base_parent, fstype)
            args.json.write_text(json.dumps(payload, indent=2) + "\n")
        except OSError as err:
            print(f"evidence_bench: cannot write {args.json}: {err}", file=sys.stderr)
            return 1
        out.write(f"figures written to {args.json}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
