"""Plan, compile and attach tracehound's BPF programs; report on each probe.

The compiling is done by bcc in a short-lived child process
(:mod:`agent.capture.compile_child`, the only module that imports bcc); this
process keeps the file descriptors it hands over and reads the maps with
plain bpf(2) calls (:mod:`agent.capture.bpf_syscall`), so the daemon never
maps libLLVM and libclang. A missing tracepoint never crashes the agent: a
probe whose tracepoints are not all present is left out of the compiled
program and reported as missing; a probe that fails to attach is detached
again and reported with the kernel's reason.

A compile takes 1.4-1.8 s, so the child also stores what it gave the kernel
in the program cache (:mod:`agent.capture.program_cache`, on disk by
:mod:`agent.capture.cache_store`), and the next start with the same key
(program text, flags, bcc, kernel, BTF, tracehound) loads that itself
(:mod:`agent.capture.replay`): no child, no bcc. A cache file refused or a
replay the kernel refuses is reported in one line and the start compiles, as
without a cache. :attr:`LoadedCapture.cache` says which way it went.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from agent.capture import (
    bpf_syscall,
    dispatch,
    handoff,
    kernel_layout,
    kinds,
    layout_check,
    replay,
    wire,
)
from agent.capture.cache_store import CacheDir, CacheFileError, cache_dir_setting, key_inputs
from agent.capture.probes import (
    DISPATCH_SOURCE,
    LIBRARY_SOURCES,
    PROBES,
    SELFCHECK_SOURCE,
    SOURCES,
    TAIL_PROGRAMS,
    Probe,
)
from agent.capture.program_cache import CacheEntry, cache_key
from agent.capture.ringbuf import MappedRing
from agent.child_command import child_command
from agent.limits import MAX_ARGV, MAX_RINGBUF_PAGES

TRACEFS = Path("/sys/kernel/tracing")
BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
#: What bcc is pointed at instead of kernel headers (bpf/kernel-stub/README.md).
KERNEL_STUB = BPF_DIR / "kernel-stub"

RING_PAGE_SIZE = 4096  # the ring buffer's size is counted in 4 KiB pages


class CaptureError(RuntimeError):
    """The capture could not start at all (no root, no bcc, no compiler)."""


class ProbeStatus(msgspec.Struct, frozen=True, order=True):
    """Whether a probe attached. ``reason`` says why not, else is empty."""

    name: str
    kind: str
    attached: bool
    reason: str = ""


@dataclass(frozen=True)
class LoadOptions:
    """What the compiled program looks like. Defaults are the built-in ones."""

    probes: tuple[Probe, ...] = PROBES
    argv_max: int = wire.DEFAULT_ARGV_MAX
    arg_len: int = wire.DEFAULT_ARG_LEN
    ringbuf_pages: int = 1024  # 4 MiB
    pending_max: int = 10240
    scope_max: int = 65536
    syscall_keys_max: int = 65536
    wakeup_every: int | None = None  # records per CPU between wakeups; None: sized to the ring
    scoped: bool = False
    #: Resolve every file event's absolute path in the kernel
    #: (``[capture] resolve_paths``); off, records carry the path as passed
    #: only, their absolute path empty and flagged ``off``.
    resolve_paths: bool = True
    agent_pid: int = field(default_factory=os.getpid)

    def validate(self) -> None:
        pages = self.ringbuf_pages
        if not 1 <= pages <= MAX_RINGBUF_PAGES or pages & (pages - 1):
            raise CaptureError(
                f"ringbuf_pages must be a power of two up to {MAX_RINGBUF_PAGES}, got {pages}"
            )
        if not 1 <= self.argv_max <= MAX_ARGV:
            raise CaptureError(f"argv_max must be between 1 and {MAX_ARGV}, got {self.argv_max}")
        if not 16 <= self.arg_len <= 4096:
            raise CaptureError(f"arg_len must be between 16 and 4096, got {self.arg_len}")


#: Macros defined when the running kernel's tracepoint has a field that
#: older kernels lack: the C code falls back without it.
FIELD_FEATURES: dict[str, tuple[str, str]] = {
    "TH_HAVE_GROUP_DEAD": ("sched:sched_process_exit", "group_dead"),
}


def tracepoint_has_field(tracepoint: str, field: str, tracefs: Path = TRACEFS) -> bool:
    category, _, event = tracepoint.partition(":")
    try:
        text = (tracefs / "events" / category / event / "format").read_text()
    except OSError:
        return False
    return any(
        line.strip().startswith("field:") and line.split(";")[0].rstrip().endswith(f" {field}")
        for line in text.splitlines()
    )


def wakeup_every(options: LoadOptions) -> int:
    """Records per CPU between forced wakeups: a quarter of the ring in the
    largest records, so a burst never fills the ring between wakeups.

    An exec record is variable-length, up to three 4096-byte paths: it is
    counted here with its whole argument area and paths of 256 bytes each
    (the size of a file record's), as sizing for the rare 12 KiB record
    would wake the consumer five times as often on every flood. A burst of
    execs with very long paths can fill the ring sooner: counted as lost in
    the kernel, as any record the ring had no room for."""
    if options.wakeup_every is not None:
        return options.wakeup_every
    ring = options.ringbuf_pages * RING_PAGE_SIZE
    return max(1, min(512, ring // 4 // wakeup_unit(options)))


def wakeup_unit(options: LoadOptions) -> int:
    """The bytes one record stands for in :func:`wakeup_every`'s budget
    (TH_WAKEUP_UNIT): an exec record with its whole argument area and
    paths of 256 bytes each (see there). A variable-length record (file,
    exec) counts as 1 + its size / this many."""
    decoder = wire.WireDecoder(options.argv_max, options.arg_len)
    return (
        decoder.exec_fixed + wire.argv_bytes(options.argv_max, options.arg_len) + 3 * wire.PATH_LEN
    )


def tracepoint_exists(tracepoint: str, tracefs: Path = TRACEFS) -> bool:
    category, _, event = tracepoint.partition(":")
    if not category or not event or "/" in tracepoint or ".." in tracepoint:
        return False
    return (tracefs / "events" / category / event / "format").exists()


def plan_probes(
    probes: Iterable[Probe], exists: Callable[[str], bool] = tracepoint_exists
) -> tuple[list[Probe], list[ProbeStatus]]:
    """Split probes into those to compile and those missing a tracepoint
    (or a syscall slot: unknown number, or taken by an earlier probe). Pure."""
    present: list[Probe] = []
    missing: list[ProbeStatus] = []
    taken: dict[tuple[str, int], str] = {}  # dispatch slot -> the probe filling it
    # A syscall compiled out still reaches the raw dispatchers (Probe.absent_ok).
    raw_dispatch = all(exists(tp) for tp, _ in (dispatch.SYS_ENTER, dispatch.SYS_EXIT))
    for probe in probes:
        absent = [
            tp
            for tp, _ in probe.attach
            if not (probe.absent_ok and dispatch.syscall_of(tp) and raw_dispatch) and not exists(tp)
        ]
        problems = [p for tp, _ in probe.attach if (p := dispatch.slot_problem(tp))]
        slots = [] if absent or problems else list(dispatch.slots_of(probe))
        clashes = [taken[(s.direction, s.nr)] for s in slots if (s.direction, s.nr) in taken]
        if absent:
            reason = "tracepoint not found: " + ", ".join(absent)
        elif problems:
            reason = "; ".join(problems)
        elif clashes:
            reason = "syscall slot already taken by probe " + ", ".join(sorted(set(clashes)))
        else:
            present.append(probe)
            taken.update({(s.direction, s.nr): probe.name for s in slots})
            continue
        missing.append(ProbeStatus(probe.name, probe.kind, False, reason))
    # A probe that extends another's C code goes when that one is absent.
    while True:
        names = {p.name for p in present}
        orphans = [p for p in present if any(r not in names for r in p.requires)]
        if not orphans:
            return present, missing
        for probe in orphans:
            present.remove(probe)
            needed = ", ".join(r for r in probe.requires if r not in names)
            missing.append(ProbeStatus(probe.name, probe.kind, False, f"needs probe {needed}"))


def program_text(probes: Iterable[Probe], bpf_dir: Path = BPF_DIR) -> str:
    """The translation unit bcc compiles: the shared header, then the concern
    files those probes need.

    The files are pasted in rather than #included because bcc rewrites map
    method calls and generates tracepoint argument structs only in its main
    file. ``#line`` keeps compiler messages pointing at the real file. The
    struct readers and path walk (path.bpf.c) come first, for every concern;
    the layout self-check and the syscall dispatchers come last (they call
    into the syscall counter).
    """
    concerns = sorted({probe.concern for probe in probes})
    parts = [
        "tracehound.h",
        *LIBRARY_SOURCES,
        *(SOURCES[c] for c in concerns),
        SELFCHECK_SOURCE,
        DISPATCH_SOURCE,
    ]
    return "".join(f'#line 1 "{name}"\n' + (bpf_dir / name).read_text() + "\n" for name in parts)


def compile_flags(
    options: LoadOptions,
    probes: Iterable[Probe],
    *,
    probe_fields: bool = True,
    layout: kernel_layout.Layout | None = None,
) -> list[str]:
    """bcc's flags for compiling ``probes``. ``probe_fields=False`` leaves
    out the :data:`FIELD_FEATURES` macros, which need a tracefs format file
    read each (see :func:`program_key`). ``layout``: the kernel struct
    offsets to compile in; None puts in their place what they are derived
    from besides the kernel's BTF (for the cache key: no BTF parse)."""
    flags = [
        f"-I{BPF_DIR}",
        "-DTH_BCC",
        f"-DTH_ARGV_MAX={options.argv_max}",
        f"-DTH_ARG_LEN={options.arg_len}",
        f"-DTH_RINGBUF_PAGES={options.ringbuf_pages}",
        f"-DTH_PENDING_MAX={options.pending_max}",
        f"-DTH_SCOPE_MAX={options.scope_max}",
        f"-DTH_SYSCALL_KEYS_MAX={options.syscall_keys_max}",
        f"-DTH_WAKEUP_EVERY={wakeup_every(options)}",
        f"-DTH_WAKEUP_UNIT={wakeup_unit(options)}",
        f"-DTH_SCOPED={1 if options.scoped else 0}",
        f"-DTH_RESOLVE_PATHS={1 if options.resolve_paths else 0}",
    ]
    probes = list(probes)
    flags += [f"-D{probe.macro}" for probe in probes]
    flags += dispatch.mask_flags(probes)
    flags += dispatch.compat_exec_flags(probes)
    flags += dispatch.number_flags(probes)
    if layout is None:
        flags.append(f"-DTH_LAYOUT_SPEC={kernel_layout.spec_digest()}")
    else:
        flags += layout.flags()
    if probe_fields:
        flags += [
            f"-D{macro}"
            for macro, (tracepoint, field) in sorted(FIELD_FEATURES.items())
            if tracepoint_has_field(tracepoint, field)
        ]
    return flags


def program_key(options: LoadOptions, probes: list[Probe]) -> bytes:
    """The program cache's key for compiling ``probes`` with ``options`` on
    this host (see :class:`~agent.capture.program_cache.KeyInputs`).

    The flags in it leave out the tracepoint field probes: a tracepoint's
    format is the kernel's, whose build and BTF are in the key already, and
    reading a format file waits for tracefs's event_mutex, which another
    process detaching its tracepoints holds for ~70 ms per tracepoint
    (measured: 1 s for one read, while a start takes 40 ms without it).
    """
    attach = [(tp, fn, probe.raw) for probe in probes for tp, fn in probe.attach]
    flags = compile_flags(options, probes, probe_fields=False)
    return cache_key(key_inputs(program_text(probes), flags, attach))


#: The maps the daemon reads or writes after loading, handed over by fd.
MAPS_HANDED_OVER: tuple[str, ...] = (
    "th_events",
    "th_scope",
    "th_enabled",
    "th_generated",
    "th_lost",
    "th_errors",
    "th_syscall_counts",
    # The dispatch tables: the kernel empties a program array when the last
    # user-space reference to it goes, so the daemon holds them to the end.
    *dispatch.PROG_ARRAYS.values(),
    # The file handlers' tail call into the path resolver (probes.TAIL_PROGRAMS).
    *(table for programs in TAIL_PROGRAMS.values() for table, _, _ in programs),
)
#: (type, key size, value size) each map must have, checked against the
#: kernel's own description of the fd: a mismatch refuses to start.
_MAP_SHAPES: dict[str, tuple[int, int, int]] = {
    "th_events": (bpf_syscall.BPF_MAP_TYPE_RINGBUF, 0, 0),
    "th_scope": (bpf_syscall.BPF_MAP_TYPE_HASH, 4, 1),
    "th_enabled": (bpf_syscall.BPF_MAP_TYPE_ARRAY, 4, 16),  # struct th_control (CONTROL)
    "th_generated": (bpf_syscall.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8),
    "th_lost": (bpf_syscall.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8),
    "th_errors": (bpf_syscall.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8),
    "th_syscall_counts": (bpf_syscall.BPF_MAP_TYPE_HASH, 8, 8),
    **{name: (bpf_syscall.BPF_MAP_TYPE_PROG_ARRAY, 4, 4) for name in dispatch.PROG_ARRAYS.values()},
    **{
        table: (bpf_syscall.BPF_MAP_TYPE_PROG_ARRAY, 4, 4)
        for programs in TAIL_PROGRAMS.values()
        for table, _, _ in programs
    },
}
#: Maps only some programs have: the syscall counter's (the syscalls.count
#: probe), the tail-call tables (their concern's probes).
_OPTIONAL_MAPS = frozenset(
    {"th_syscall_counts"}
    | {table for programs in TAIL_PROGRAMS.values() for table, _, _ in programs}
)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
#: struct th_control {u32 enabled; u32 agent_pid; u32 enriched; u32 _pad0;}:
#: th_enabled's one value.
CONTROL = struct.Struct("<IIII")
_SYSCALL_KEY = struct.Struct("<II")  # struct th_syscall_key {u32 pid; u32 nr;}
_ERROR_SLOTS = ("scope_full", "exit_status_full", "connects_full", "uring_pending_full")  # TH_ERR_*


class Manifest(msgspec.Struct, frozen=True):
    """What the compile child hands over with the fds: ``maps`` names the
    first fds, ``attachments`` the tracepoint of each one after them."""

    maps: list[str] = []
    attachments: list[str] = []
    statuses: list[ProbeStatus] = []
    #: Syscall numbers to names, from bcc's table (the daemon has no bcc).
    syscall_names: dict[int, str] = {}
    #: Set when nothing could be loaded: the one-line reason, and no fds.
    error: str = ""
    #: What became of storing the compile in the program cache: "stored",
    #: "not stored: <why>", or empty when no cache directory was given.
    cache: str = ""
    #: Why struct-based enrichment is off ("" when the self-check passed).
    layout: str = ""


class CompileRequest(msgspec.Struct, frozen=True):
    """What the daemon asks of the compile child: the options, and the
    program cache directory to store the compile in ("" for none)."""

    options: LoadOptions
    cache_dir: str = ""


class CacheReport(msgspec.Struct, frozen=True):
    """How this start got its programs. ``state``: ``hit`` (loaded from the
    program cache, no compile), ``miss`` (compiled; ``reason`` says why,
    ``stored`` what became of storing it) or ``off`` (no cache directory)."""

    state: Literal["hit", "miss", "off"]
    reason: str = ""
    stored: str = ""


def write_control(
    table: bpf_syscall.BpfMap, *, enabled: bool, agent_pid: int, enriched: bool = False
) -> None:
    """Set th_enabled's value: whether handlers run, whose events they skip,
    and whether they may read kernel structs (the layout self-check passed)."""
    table.update(_U32.pack(0), CONTROL.pack(int(enabled), agent_pid, int(enriched), 0))


def layout_status(problem: str) -> ProbeStatus:
    """The layout self-check, reported like a probe: "attached" when struct
    reads are trusted, else why not."""
    reason = f"{problem}; struct-based enrichment is off" if problem else ""
    return ProbeStatus(layout_check.PROBE_NAME, layout_check.PROBE_KIND, not problem, reason)


class LoadedCapture:
    """A compiled, attached capture program, held by file descriptors only.
    Use :func:`load` to make one.

    Call :meth:`disable` to stop every handler, :meth:`start_detach` to
    begin releasing the attachments (in the background), and :meth:`close`
    to finish that and release everything. Map operations are not
    thread-safe: use them from the trio thread.
    """

    def __init__(
        self,
        maps: dict[str, bpf_syscall.BpfMap],
        attachments: list[int],
        options: LoadOptions,
        statuses: list[ProbeStatus],
        syscall_names: dict[int, str],
        *,
        held: Iterable[int] = (),
        cache: CacheReport | None = None,
        layout: str = "",
    ) -> None:
        self._maps = maps
        #: Why struct-based enrichment is off, "" when it is on.
        self.layout_problem = layout
        self._attachments = attachments
        #: Map fds kept open only so the maps live as long as the capture
        #: (a prog array is emptied when its last fd is closed).
        self._held = list(held)
        self.cache = cache if cache is not None else CacheReport("off")
        self._detaching: list[threading.Thread] = []
        self.options = options
        self.statuses = sorted([*statuses, layout_status(layout)])
        self._closed = False
        self.decoder = wire.WireDecoder(options.argv_max, options.arg_len, syscall_names)

    # -- scope -------------------------------------------------------------
    def add_to_scope(self, pid: int) -> None:
        """Trace ``pid`` and, from now on, every process it forks."""
        self._maps["th_scope"].update(_U32.pack(pid), b"\x01")

    def scope_size(self) -> int:
        """Processes in scope now (they leave it when they exit)."""
        return sum(1 for _ in self._maps["th_scope"])

    # -- the ring buffer -----------------------------------------------------
    def mapped_ring(self) -> MappedRing:
        """The ring buffer, mapped for reading in this process. Its ``fd``
        polls readable when records are waiting."""
        return MappedRing(self._maps["th_events"].fd, self.options.ringbuf_pages * RING_PAGE_SIZE)

    # -- on and off ----------------------------------------------------------
    def enable(self) -> None:
        self._set_enabled(1)

    def disable(self) -> None:
        """Stop every handler at once (records already in flight still land:
        give them a moment before the last drain). Detaching comes later."""
        self._set_enabled(0)

    def _set_enabled(self, value: int) -> None:
        write_control(
            self._maps["th_enabled"],
            enabled=bool(value),
            agent_pid=self.options.agent_pid,
            enriched=not self.layout_problem,
        )

    # -- counters ----------------------------------------------------------
    def _per_cpu_sum(self, name: str, slot: int) -> int:
        table = self._maps[name]
        value = table.lookup(_U32.pack(slot))
        if value is None:
            return 0
        return sum(_U64.unpack(cpu)[0] for cpu in table.per_cpu_values(value))

    def kernel_errors(self) -> dict[str, int]:
        """Problems counted in the kernel that are not a record's loss."""
        return {name: self._per_cpu_sum("th_errors", i) for i, name in enumerate(_ERROR_SLOTS)}

    def kernel_counters(self) -> dict[str, tuple[int, int]]:
        """Per kind: (generated, lost) summed over CPUs, as the kernel counts."""
        return {
            name: (self._per_cpu_sum("th_generated", number), self._per_cpu_sum("th_lost", number))
            for number, name in kinds.KIND_NAMES.items()
        }

    def syscall_counts(self) -> Iterator[tuple[int, int, int]]:
        """(pid, syscall number, count) for every counter in the kernel map.

        One batched lookup syscall per few hundred entries (a host-wide map
        can hold tens of thousands); per-key iteration only if the kernel
        refuses batch operations.
        """
        table = self._maps.get("th_syscall_counts")
        if table is None:
            return
        try:
            items = table.lookup_batch()
        except bpf_syscall.BatchUnsupported:  # fall back to the slow, sure way
            items = list(table.items())
        for key, value in items:
            pid, nr = _SYSCALL_KEY.unpack(key)
            yield pid, nr, _U64.unpack(value)[0]

    def pop_syscall_counts(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """Delete counters ``(pid, nr)`` of processes that have exited, and
        return each one's count at the moment it was deleted.

        One ``BPF_MAP_LOOKUP_AND_DELETE_ELEM`` per key, so nothing counted
        between the last reading and the delete is lost: it is in the value
        returned (if the pid was reused meanwhile, the newcomer's first
        syscalls are counted to the process that had the pid, never lost).
        A key already gone is left out.
        """
        table = self._maps.get("th_syscall_counts")
        popped: dict[tuple[int, int], int] = {}
        if table is None:
            return popped
        for pid, nr in keys:
            key = _SYSCALL_KEY.pack(pid, nr)
            try:
                value = table.lookup_and_delete(key)
            except bpf_syscall.BpfError:
                # A kernel without lookup-and-delete on hash maps (before
                # 5.14): read, then delete; a count in between is the risk.
                value = table.lookup(key)
                if value is not None:
                    table.delete(key)
            if value is not None:
                popped[(pid, nr)] = _U64.unpack(value)[0]
        return popped

    def dispatch_slots(self) -> dict[str, list[int]]:
        """Per direction (``enter``, ``exit``), the syscall numbers whose
        handler the kernel's dispatch table holds now: read back, so a table
        the kernel emptied (its last reference gone) shows as empty."""
        slots: dict[str, list[int]] = {}
        for direction, name in dispatch.PROG_ARRAYS.items():
            table = self._maps[name]
            slots[direction] = [
                nr for nr in range(table.max_entries) if table.lookup(_U32.pack(nr)) is not None
            ]
        return slots

    # -- teardown ------------------------------------------------------------
    def start_detach(self) -> None:
        """Begin detaching every tracepoint, in the background; returns at once.

        The syscall dispatchers are raw tracepoints, released at once; each
        remaining perf-event tracepoint (fork, exit, signals, listen address)
        waits for RCU grace periods in the kernel (~70 ms each here, under a
        global mutex): closing them from one thread each let those waits
        overlap (5 of them: ~0.22 s, against ~0.39 s one after another), and
        the caller drains and writes meanwhile. Call :meth:`disable` first so
        no handler runs half-detached; the maps (the dispatch tables among
        them) stay readable until :meth:`close`.
        """
        attachments, self._attachments = self._attachments, []
        for fd in attachments:
            thread = threading.Thread(target=_close_quietly, args=(fd,), name="th-detach")
            thread.start()
            self._detaching.append(thread)

    def detach(self) -> None:
        """Detach every tracepoint: no new record is made after this returns."""
        self.start_detach()
        threads, self._detaching = self._detaching, []
        for thread in threads:
            thread.join()

    def close(self) -> None:
        """Detach and free everything. SIGINT/SIGTERM are held off meanwhile
        (from the main thread) so an interrupt cannot cut the release short."""
        if self._closed:
            return
        self._closed = True
        main = threading.current_thread() is threading.main_thread()
        held = (
            {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            if main
            else {}
        )
        try:
            self.detach()
            for table in self._maps.values():
                table.close()
            extra, self._held = self._held, []
            for fd in extra:
                _close_quietly(fd)
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def check_privileges() -> None:
    """Refuse early, with what to do, when capture cannot possibly work."""
    if os.geteuid() != 0:
        raise CaptureError("needs root to load BPF programs: run it with sudo")
    machine = platform.machine()
    if machine != "x86_64":  # the syscall dispatch reads x86_64 registers and numbers
        raise CaptureError(f"the BPF programs support x86_64 only, this machine is {machine}")
    if not (TRACEFS / "events").is_dir():
        raise CaptureError(
            f"tracefs is not mounted at {TRACEFS}: run `mount -t tracefs nodev {TRACEFS}`"
            " (or `sudo make run`, which does it)"
        )


def _spawn_child(options: LoadOptions, cache_dir: str = "") -> tuple[Manifest, list[int]]:
    """Run the compile child and take what it hands over."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with ours:
            try:
                child = subprocess.Popen(
                    child_command("agent.capture.compile_child", str(theirs.fileno())),
                    stdin=subprocess.DEVNULL,
                    stdout=2,  # bcc's chatter never into a profile written to stdout
                    pass_fds=(theirs.fileno(),),
                )
            except OSError as err:
                raise CaptureError(f"could not start the BPF compile child: {err}") from err
            finally:
                theirs.close()
            try:
                ours.sendmsg([msgspec.json.encode(CompileRequest(options, cache_dir))])
                payload, fds = handoff.receive(ours)
            except (handoff.HandoffError, OSError) as err:
                child.kill()
                status = child.wait()
                raise CaptureError(
                    f"the BPF compile child failed (exit status {status}): {err}"
                ) from None
            except BaseException:
                child.kill()
                child.wait()
                raise
            child.wait()
    finally:
        theirs.close()
    try:
        manifest = msgspec.json.decode(payload, type=Manifest)
    except msgspec.DecodeError as err:
        for fd in fds:
            os.close(fd)
        raise CaptureError(f"the BPF compile child sent a bad manifest: {err}") from None
    return manifest, fds


def _open_maps(
    names: list[str], fds: list[int], source: str = "the BPF compile child"
) -> dict[str, bpf_syscall.BpfMap]:
    """The handed-over maps, each checked against the shape the daemon reads."""
    maps: dict[str, bpf_syscall.BpfMap] = {}
    for name, fd in zip(names, fds, strict=False):
        table = bpf_syscall.BpfMap(fd, name)
        maps[name] = table
        expected = _MAP_SHAPES.get(name)
        if expected is None:
            raise CaptureError(f"{source} handed over an unknown map {name!r}")
        if (table.map_type, table.key_size, table.value_size) != expected:
            raise CaptureError(
                f"BPF map {name}: type/key/value {table.map_type}/{table.key_size}/"
                f"{table.value_size}, expected {'/'.join(map(str, expected))}"
            )
    missing = set(_MAP_SHAPES) - _OPTIONAL_MAPS - set(maps)
    if missing:
        raise CaptureError(f"{source} did not hand over {', '.join(sorted(missing))}")
    return maps


def _report(line: str) -> None:
    print(f"tracehound: {line}", file=sys.stderr, flush=True)


def _replay(
    entry: CacheEntry, options: LoadOptions, present: list[Probe], missing: list[ProbeStatus]
) -> LoadedCapture:
    """Load and attach a cached compile in this process. Raises
    replay.ReplayError (or CaptureError for maps of the wrong shape) with
    nothing left loaded."""
    loaded = replay.load_entry(entry)
    maps: dict[str, bpf_syscall.BpfMap] = {}
    try:
        names = [name for name in MAPS_HANDED_OVER if name in loaded.maps]
        maps = _open_maps(names, [loaded.maps[n] for n in names], "the program cache")
        # Before the first handler can run: whose events are skipped.
        write_control(maps["th_enabled"], enabled=False, agent_pid=options.agent_pid)
        layout = _replayed_layout_check(entry, loaded)
        attachments = replay.attach(entry, loaded, TRACEFS)
    except BaseException:
        loaded.close()  # the maps' fds among them
        raise
    loaded.close_programs()  # attached or in a prog array: they stay loaded
    held = [fd for name, fd in loaded.maps.items() if name not in maps]
    statuses = [*missing, *(ProbeStatus(p.name, p.kind, True) for p in present)]
    return LoadedCapture(
        maps, attachments, options, statuses, entry.syscall_names, held=held,
        cache=CacheReport("hit"), layout=layout,
    )  # fmt: skip


def _replayed_layout_check(entry: CacheEntry, loaded: replay.Loaded) -> str:
    """Run the cached compile's layout self-check in this process: "" if
    the offsets it has compiled in read this process right, else why not."""
    names = [prog.name for prog in entry.programs]
    if layout_check.PROGRAM not in names or layout_check.RESULT_MAP not in loaded.maps:
        return "the cached programs have no layout self-check"
    problem = layout_check.run_by_fd(
        loaded.programs[names.index(layout_check.PROGRAM)], loaded.maps[layout_check.RESULT_MAP]
    )
    if problem == layout_check.NOT_COMPILED:
        # Compiled without offsets: say why, as the compile that did it said.
        problem = kernel_layout.running_kernel_layout().problem or problem
    return problem


def _from_cache(
    options: LoadOptions, cache_dir: Path, report: Callable[[str], None]
) -> tuple[LoadedCapture | None, str, str]:
    """(the capture, None on a miss; why it missed; the directory to store
    a compile in, "" when it cannot be used)."""
    try:
        directory = CacheDir(cache_dir)
    except CacheFileError as err:
        report(f"{err}; compiling without the program cache")
        return None, f"no cache directory: {err}", ""
    with directory:
        present, missing = plan_probes(options.probes)
        if not present:
            return None, "no probe to load", str(cache_dir)
        key = program_key(options, present)
        try:
            entry = directory.read(key)
        except CacheFileError as err:
            report(f"program cache: {err}; ignored, compiling")
            directory.remove(key)  # refused once, not at every start
            return None, f"refused: {err}", str(cache_dir)
    if entry is None:
        return None, "no entry", str(cache_dir)
    try:
        return _replay(entry, options, present, missing), "", str(cache_dir)
    except (replay.ReplayError, CaptureError, bpf_syscall.BpfError) as err:
        report(f"program cache: loading the cached programs failed: {err}; compiling")
        return None, f"replay failed: {err}", str(cache_dir)


def load(
    options: LoadOptions,
    *,
    cache_dir: Path | Literal["default"] | None = "default",
    report: Callable[[str], None] = _report,
) -> LoadedCapture:
    """Load and attach: from the program cache when it holds this very
    compile, else by compiling in a child process
    (:mod:`agent.capture.compile_child`), which then stores it there.

    ``cache_dir``: the program cache's directory, None for none, by default
    what :func:`~agent.capture.cache_store.cache_dir_setting` says.
    ``report``: where one-line warnings go (a refused cache file, a
    replay the kernel refused), by default stderr.

    Raises CaptureError when nothing can work; a missing or failing probe
    only shows in the returned statuses. This process never imports bcc.
    """
    options.validate()
    check_privileges()
    try:
        kernel_layout.skew_setting()  # the test hook: refused whole if it does not parse
    except ValueError as err:
        raise CaptureError(str(err)) from None
    directory = cache_dir_setting() if cache_dir == "default" else cache_dir
    reason, store_in = "", ""
    if directory is not None:
        capture, reason, store_in = _from_cache(options, directory, report)
        if capture is not None:
            capture.enable()
            return capture
    manifest, fds = _spawn_child(options, store_in)
    if manifest.error:
        for fd in fds:
            os.close(fd)
        raise CaptureError(manifest.error)
    if len(fds) != len(manifest.maps) + len(manifest.attachments):
        for fd in fds:
            os.close(fd)
        raise CaptureError(
            f"the BPF compile child sent {len(fds)} descriptors for"
            f" {len(manifest.maps)} maps and {len(manifest.attachments)} attachments"
        )
    attachments = fds[len(manifest.maps) :]
    try:
        maps = _open_maps(manifest.maps, fds)
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    if manifest.cache.startswith("not stored"):
        report(f"program cache: {manifest.cache}")
    report_cache = (
        CacheReport("miss", reason, manifest.cache) if directory is not None else CacheReport("off")
    )
    capture = LoadedCapture(
        maps,
        attachments,
        options,
        manifest.statuses,
        manifest.syscall_names,
        cache=report_cache,
        layout=manifest.layout,
    )
    capture.enable()
    return capture
