"""Compile tracehound's BPF programs with bcc, attach them, report on each.

This is the only module that talks to bcc. It never lets a missing
tracepoint crash the agent: a probe whose tracepoints are not all present is
left out of the compiled program and reported as missing; a probe that fails
to attach is detached again and reported with the kernel's reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from agent.capture import kinds, wire
from agent.capture.probes import PROBES, SOURCES, Probe
from agent.capture.ringbuf import MappedRing
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


class LoadedCapture:
    """A compiled, attached capture program. Use :func:`load` to make one.

    Call :meth:`detach` to stop new events (then drain what is left), and
    :meth:`close` to release everything. Not thread-safe: use it from the
    trio thread.
    """

    def __init__(self, bpf: Any, options: LoadOptions, statuses: list[ProbeStatus]) -> None:
        self._bpf = bpf
        self.options = options
        self.statuses = sorted(statuses)
        self._attached: list[tuple[Probe, str]] = [
            (probe, tp)
            for status in self.statuses
            if status.attached
            for probe in options.probes
            if probe.name == status.name
            for tp, _ in probe.attach
        ]
        self._closed = False
        self.decoder = wire.WireDecoder(options.argv_max, options.arg_len, _syscall_names())

    # -- scope -------------------------------------------------------------
    def add_to_scope(self, pid: int) -> None:
        """Trace ``pid`` and, from now on, every process it forks."""
        scope = self._bpf[b"th_scope"]
        scope[scope.Key(pid)] = scope.Leaf(1)

    def scope_size(self) -> int:
        """Processes in scope now (they leave it when they exit)."""
        return sum(1 for _ in self._bpf[b"th_scope"])

    # -- the ring buffer -----------------------------------------------------
    def mapped_ring(self) -> MappedRing:
        """The ring buffer, mapped for reading in this process. Its ``fd``
        polls readable when records are waiting."""
        table = self._bpf[b"th_events"]
        return MappedRing(int(table.map_fd), self.options.ringbuf_pages * RING_PAGE_SIZE)

    # -- on and off ----------------------------------------------------------
    def enable(self) -> None:
        self._set_enabled(1)

    def disable(self) -> None:
        """Stop every handler at once (records already in flight still land:
        give them a moment before the last drain). Detaching comes later."""
        self._set_enabled(0)

    def _set_enabled(self, value: int) -> None:
        table = self._bpf[b"th_enabled"]
        table[table.Key(0)] = table.Leaf(value)

    # -- counters ----------------------------------------------------------
    def kernel_errors(self) -> dict[str, int]:
        """Problems counted in the kernel that are not a record's loss."""
        table = self._bpf[b"th_errors"]
        return {
            name: int(table.sum(table.Key(slot)).value)
            for slot, name in enumerate(("scope_full", "exit_status_full"))
        }

    def kernel_counters(self) -> dict[str, tuple[int, int]]:
        """Per kind: (generated, lost) summed over CPUs, as the kernel counts."""
        gen = self._bpf[b"th_generated"]
        lost = self._bpf[b"th_lost"]
        out: dict[str, tuple[int, int]] = {}
        for number, name in kinds.KIND_NAMES.items():
            key = gen.Key(number)
            out[name] = (int(gen.sum(key).value), int(lost.sum(key).value))
        return out

    def syscall_counts(self) -> Iterator[tuple[int, int, int]]:
        """(pid, syscall number, count) for every counter in the kernel map.

        One batched lookup syscall per few hundred entries (a host-wide map
        can hold tens of thousands); per-key iteration only if the kernel
        refuses batch operations.
        """
        if not self._has_table(b"th_syscall_counts"):
            return
        table = self._bpf[b"th_syscall_counts"]
        try:
            items = list(table.items_lookup_batch())
        except Exception:  # fall back to the slow, sure way
            items = list(table.items())
        for key, value in items:
            yield int(key.pid), int(key.nr), int(getattr(value, "value", value))

    def pop_syscall_counts(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], int]:
        """Delete counters ``(pid, nr)`` of processes that have exited, and
        return each one's count at the moment it was deleted.

        One ``BPF_MAP_LOOKUP_AND_DELETE_ELEM`` per key, so nothing counted
        between the last reading and the delete is lost: it is in the value
        returned (if the pid was reused meanwhile, the newcomer's first
        syscalls are counted to the process that had the pid, never lost).
        A key already gone is left out.
        """
        import ctypes

        from bcc.libbcc import lib

        table = self._bpf[b"th_syscall_counts"]
        popped: dict[tuple[int, int], int] = {}
        for pid, nr in keys:
            key, leaf = table.Key(pid, nr), table.Leaf()
            if lib.bpf_lookup_and_delete(table.map_fd, ctypes.byref(key), ctypes.byref(leaf)) == 0:
                popped[(pid, nr)] = int(getattr(leaf, "value", leaf))
            elif ctypes.get_errno() not in (errno.ENOENT, 0):
                # A kernel without lookup-and-delete on hash maps (before
                # 5.14): read, then delete; a count in between is the risk.
                with contextlib.suppress(KeyError):
                    popped[(pid, nr)] = int(table[key].value)
                    del table[key]
        return popped

    def _has_table(self, name: bytes) -> bool:
        try:
            self._bpf[name]
        except KeyError:
            return False
        return True

    # -- teardown ------------------------------------------------------------
    def detach(self) -> None:
        """Detach every tracepoint: no new record is made after this."""
        for probe, tp in self._attached:
            with contextlib.suppress(Exception):
                _detach(self._bpf, probe, tp)
        self._attached = []

    def close(self) -> None:
        """Detach and free everything. Slow (each tracepoint detach waits for
        an RCU grace period, ~70 ms here), so callers write their results
        first. SIGINT/SIGTERM are held off meanwhile: an interrupt inside
        bcc's detach would leave a half-closed fd behind."""
        if self._closed:
            return
        self._closed = True
        held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.detach()
            self._bpf.cleanup()
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)


def _syscall_names() -> dict[int, str]:
    from bcc import syscall as bcc_syscall

    return {
        int(nr): (name.decode() if isinstance(name, bytes) else str(name))
        for nr, name in bcc_syscall.syscalls.items()
    }


def _attach(bpf: Any, probe: Probe, tracepoint: str, fn_name: str) -> None:
    if probe.raw:
        event = tracepoint.partition(":")[2]
        bpf.attach_raw_tracepoint(tp=event.encode(), fn_name=fn_name.encode())
    else:
        bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=fn_name.encode())


def _detach(bpf: Any, probe: Probe, tracepoint: str) -> None:
    if probe.raw:
        bpf.detach_raw_tracepoint(tp=tracepoint.partition(":")[2].encode())
    else:
        bpf.detach_tracepoint(tp=tracepoint.encode())


def check_privileges() -> None:
    """Refuse early, with what to do, when capture cannot possibly work."""
    if os.geteuid() != 0:
        raise CaptureError("tracehound needs root to load BPF programs: run it with sudo")
    if not (TRACEFS / "events").is_dir():
        raise CaptureError(
            f"tracefs is not mounted at {TRACEFS}: run `mount -t tracefs nodev {TRACEFS}`"
            " (or `sudo make run`, which does it)"
        )


def load(options: LoadOptions) -> LoadedCapture:
    """Compile and attach. Raises CaptureError when nothing can work; a
    missing or failing probe only shows in the returned statuses."""
    options.validate()
    check_privileges()
    try:
        from bcc import BPF
    except ImportError as err:
        raise CaptureError(
            "the bcc Python bindings are missing: install Debian's python3-bpfcc"
            " (sudo make run does), and use a venv made with --system-site-packages"
        ) from err

    present, statuses = plan_probes(options.probes)
    if not present:
        raise CaptureError("none of the configured probes' tracepoints exist on this kernel")
    try:
        bpf = BPF(text=program_text(present).encode(), cflags=compile_flags(options, present))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CaptureError(f"compiling the BPF programs failed: {first}") from err

    for probe in present:
        done: list[str] = []
        try:
            for tracepoint, fn_name in probe.attach:
                _attach(bpf, probe, tracepoint, fn_name)
                done.append(tracepoint)
        except Exception as err:
            for tracepoint in done:
                with contextlib.suppress(Exception):
                    _detach(bpf, probe, tracepoint)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            statuses.append(ProbeStatus(probe.name, probe.kind, False, f"attach failed: {reason}"))
        else:
            statuses.append(ProbeStatus(probe.name, probe.kind, True))
    capture = LoadedCapture(bpf, options, statuses)
    capture.enable()
    return capture
