"""Plan, compile and attach tracehound's BPF programs; report on each probe.

The compiling is done by bcc in a short-lived child process
(:mod:`agent.capture.compile_child`, the only module that imports bcc); this
process keeps the file descriptors it hands over and reads the maps with
plain bpf(2) calls (:mod:`agent.capture.bpf_syscall`), so the daemon never
maps libLLVM and libclang. A missing tracepoint never crashes the agent: a
probe whose tracepoints are not all present is left out of the compiled
program and reported as missing; a probe that fails to attach is detached
again and reported with the kernel's reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from agent.capture import bpf_syscall, handoff, kinds, wire
from agent.capture.probes import PROBES, SOURCES, Probe
from agent.capture.ringbuf import MappedRing
from agent.child_command import child_command
from agent.limits import MAX_ARGV, MAX_RINGBUF_PAGES

TRACEFS = Path("/sys/kernel/tracing")
BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"

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
    largest records, so a burst never fills the ring between wakeups."""
    if options.wakeup_every is not None:
        return options.wakeup_every
    largest = wire.WireDecoder(options.argv_max, options.arg_len).exec_size
    ring = options.ringbuf_pages * RING_PAGE_SIZE
    return max(1, min(512, ring // 4 // largest))


def tracepoint_exists(tracepoint: str, tracefs: Path = TRACEFS) -> bool:
    category, _, event = tracepoint.partition(":")
    if not category or not event or "/" in tracepoint or ".." in tracepoint:
        return False
    return (tracefs / "events" / category / event / "format").exists()


def plan_probes(
    probes: Iterable[Probe], exists: Callable[[str], bool] = tracepoint_exists
) -> tuple[list[Probe], list[ProbeStatus]]:
    """Split probes into those to compile and those missing a tracepoint. Pure."""
    present: list[Probe] = []
    missing: list[ProbeStatus] = []
    for probe in probes:
        absent = [tp for tp, _ in probe.attach if not exists(tp)]
        if absent:
            reason = "tracepoint not found: " + ", ".join(absent)
            missing.append(ProbeStatus(probe.name, probe.kind, False, reason))
        else:
            present.append(probe)
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
    file. ``#line`` keeps compiler messages pointing at the real file.
    """
    concerns = sorted({probe.concern for probe in probes})
    parts = ["tracehound.h", *(SOURCES[c] for c in concerns)]
    return "".join(f'#line 1 "{name}"\n' + (bpf_dir / name).read_text() + "\n" for name in parts)


def compile_flags(options: LoadOptions, probes: Iterable[Probe]) -> list[str]:
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
        f"-DTH_AGENT_PID={options.agent_pid}",
        f"-DTH_SCOPED={1 if options.scoped else 0}",
    ]
    flags += [f"-D{probe.macro}" for probe in probes]
    flags += [
        f"-D{macro}"
        for macro, (tracepoint, field) in sorted(FIELD_FEATURES.items())
        if tracepoint_has_field(tracepoint, field)
    ]
    return flags


#: The maps the daemon reads or writes after loading, handed over by fd.
MAPS_HANDED_OVER: tuple[str, ...] = (
    "th_events",
    "th_scope",
    "th_enabled",
    "th_generated",
    "th_lost",
    "th_errors",
    "th_syscall_counts",
)
#: (type, key size, value size) each map must have, checked against the
#: kernel's own description of the fd: a mismatch refuses to start.
_MAP_SHAPES: dict[str, tuple[int, int, int]] = {
    "th_events": (bpf_syscall.BPF_MAP_TYPE_RINGBUF, 0, 0),
    "th_scope": (bpf_syscall.BPF_MAP_TYPE_HASH, 4, 1),
    "th_enabled": (bpf_syscall.BPF_MAP_TYPE_ARRAY, 4, 4),
    "th_generated": (bpf_syscall.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8),
    "th_lost": (bpf_syscall.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8),
    "th_errors": (bpf_syscall.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 8),
    "th_syscall_counts": (bpf_syscall.BPF_MAP_TYPE_HASH, 8, 8),
}
_OPTIONAL_MAPS = frozenset({"th_syscall_counts"})  # only with the syscalls.count probe

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SYSCALL_KEY = struct.Struct("<II")  # struct th_syscall_key {u32 pid; u32 nr;}
_ERROR_SLOTS = ("scope_full", "exit_status_full")


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
    ) -> None:
        self._maps = maps
        self._attachments = attachments
        self._detaching: list[threading.Thread] = []
        self.options = options
        self.statuses = sorted(statuses)
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
        self._maps["th_enabled"].update(_U32.pack(0), _U32.pack(value))

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

    # -- teardown ------------------------------------------------------------
    def start_detach(self) -> None:
        """Begin detaching every tracepoint, in the background; returns at once.

        Releasing a tracepoint's last perf event waits for RCU grace periods
        in the kernel (~70 ms each here, 50 tracepoints): closing them from
        one thread each lets those waits overlap, and the caller drains and
        writes meanwhile. Call :meth:`disable` first so no handler runs
        half-detached; the maps stay readable until :meth:`close`.
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
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def check_privileges() -> None:
    """Refuse early, with what to do, when capture cannot possibly work."""
    if os.geteuid() != 0:
        raise CaptureError("tracehound needs root to load BPF programs: run it with sudo")
    if not (TRACEFS / "events").is_dir():
        raise CaptureError(
            f"tracefs is not mounted at {TRACEFS}: run `mount -t tracefs nodev {TRACEFS}`"
            " (or `sudo make run`, which does it)"
        )


def _spawn_child(options: LoadOptions) -> tuple[Manifest, list[int]]:
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
                ours.sendmsg([msgspec.json.encode(options)])
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


def _open_maps(manifest: Manifest, fds: list[int]) -> dict[str, bpf_syscall.BpfMap]:
    """The handed-over maps, each checked against the shape the daemon reads."""
    maps: dict[str, bpf_syscall.BpfMap] = {}
    for name, fd in zip(manifest.maps, fds, strict=False):
        table = bpf_syscall.BpfMap(fd, name)
        maps[name] = table
        expected = _MAP_SHAPES.get(name)
        if expected is None:
            raise CaptureError(f"the BPF compile child handed over an unknown map {name!r}")
        if (table.map_type, table.key_size, table.value_size) != expected:
            raise CaptureError(
                f"BPF map {name}: type/key/value {table.map_type}/{table.key_size}/"
                f"{table.value_size}, expected {'/'.join(map(str, expected))}"
            )
    missing = set(_MAP_SHAPES) - _OPTIONAL_MAPS - set(maps)
    if missing:
        raise CaptureError(f"the BPF compile child did not hand over {', '.join(sorted(missing))}")
    return maps


def load(options: LoadOptions) -> LoadedCapture:
    """Compile and attach, in a child process (:mod:`agent.capture.compile_child`).

    Raises CaptureError when nothing can work; a missing or failing probe
    only shows in the returned statuses. This process never imports bcc.
    """
    options.validate()
    check_privileges()
    manifest, fds = _spawn_child(options)
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
        maps = _open_maps(manifest, fds)
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    capture = LoadedCapture(maps, attachments, options, manifest.statuses, manifest.syscall_names)
    capture.enable()
    return capture
