"""The short-lived process that compiles, loads and attaches with bcc.

bcc compiles C with libclang and libLLVM: importing it maps ~80 MiB of
libraries and leaves the compiler's heap behind, which a daemon would carry
for its whole life to do a few map reads afterwards. So the daemon starts
this module in a child (:func:`agent.capture.loader.load` does), sends it
the :class:`~agent.capture.loader.LoadOptions`, and gets back over the
socketpair the descriptors it needs (the maps it reads, the syscall dispatch
tables, and the attachment of every tracepoint: perf-event fds and
raw-tracepoint fds, which keep the programs attached for as long as someone
holds them) with a
:class:`~agent.capture.loader.Manifest` that says what each one is.

The child then leaves with ``os._exit``: bcc's atexit cleanup would
``PERF_EVENT_IOC_DISABLE`` and close the very attachments just handed over.

What can go wrong: anything that stops the capture (no bcc, a compile
error) is sent back as the manifest's one-line ``error`` for the daemon to
report; a probe that does not attach is a status, as before. If the daemon
is gone (the socket is closed) the child just exits, and its descriptors
with it.

Given a cache directory, the child also stores what it gave the kernel in
the program cache (:func:`cache_entry`, read back from the kernel by fd
where it can be: :mod:`agent.capture.bpf_info`), so the next start loads it
without compiling. It does not store a compile in which a probe failed to
attach (that start is degraded; the next one tries again), nor one it
cannot describe whole (a program or reference a replay could not
reproduce): the manifest's ``cache`` says which, and the capture goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from agent.capture import bpf_info, dispatch, handoff, kernel_layout, layout_check
from agent.capture.bpf_syscall import BpfError, BpfMap
from agent.capture.cache_store import CacheDir, CacheFileError
from agent.capture.loader import (
    KERNEL_STUB,
    MAPS_HANDED_OVER,
    CaptureError,
    CompileRequest,
    LoadOptions,
    Manifest,
    ProbeStatus,
    compile_flags,
    plan_probes,
    program_key,
    program_text,
    write_control,
)
from agent.capture.probes import TAIL_PROGRAMS, Probe
from agent.capture.program_cache import (
    BPF_MAP_TYPE_PROG_ARRAY,
    AttachKind,
    Attachment,
    CachedMap,
    CachedProgram,
    CacheEntry,
    CacheFormatError,
    MapReference,
    ProgSlot,
    map_references,
)

#: Program types a replay reproduces: BPF_PROG_TYPE_TRACEPOINT and
#: BPF_PROG_TYPE_RAW_TRACEPOINT (expected_attach_type 0, no attach BTF).
_REPLAYABLE_TYPES = frozenset({5, 17})
#: What BPF_TASK_FD_QUERY's fd_type says an attachment is.
_ATTACH_KIND: dict[int, AttachKind] = {
    bpf_info.FD_TYPE_TRACEPOINT: "tracepoint",
    bpf_info.FD_TYPE_RAW_TRACEPOINT: "raw_tracepoint",
}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _Attacher:
    """Attaches probes on one compiled ``BPF`` object, and keeps the fds.

    A syscall's (tracepoint, handler) pair fills a dispatch slot (the
    handler loaded as a raw tracepoint program, put in its program array)
    and needs its direction's dispatcher; the dispatchers and other raw
    tracepoints attach once each, whoever asks first (the syscall counter
    shares the sys_enter dispatcher); other pairs are perf tracepoints.
    """

    def __init__(self, bpf: Any) -> None:
        self.bpf = bpf
        self.fds: list[int] = []
        self.attachments: list[str] = []
        self._raw: dict[tuple[str, str], int | Exception] = {}

    def _raw_attach(self, tracepoint: str, fn_name: str) -> None:
        """Attach a raw tracepoint, once; raises the first attempt's error again."""
        key = (tracepoint, fn_name)
        if key not in self._raw:
            event = tracepoint.partition(":")[2].encode()
            try:
                self.bpf.attach_raw_tracepoint(tp=event, fn_name=fn_name.encode())
            except Exception as err:
                self._raw[key] = err
            else:
                fd = int(self.bpf.raw_tracepoint_fds[event])
                self._raw[key] = fd
                self.fds.append(fd)
                self.attachments.append(tracepoint)
        outcome = self._raw[key]
        if isinstance(outcome, Exception):
            raise outcome

    def _fill(self, slot: dispatch.Slot) -> None:
        from bcc import BPF

        self._raw_attach(*(dispatch.SYS_ENTER if slot.direction == "enter" else dispatch.SYS_EXIT))
        program = self.bpf.load_func(slot.fn.encode(), BPF.RAW_TRACEPOINT)
        self.bpf[slot.table.encode()][ctypes.c_int(slot.nr)] = ctypes.c_int(program.fd)

    def _clear(self, slot: dispatch.Slot) -> None:
        with contextlib.suppress(Exception):
            del self.bpf[slot.table.encode()][ctypes.c_int(slot.nr)]

    def attach(self, probe: Probe) -> ProbeStatus:
        """Attach every pair of a probe, or none of them: its status."""
        perf: list[tuple[str, int]] = []
        slots: list[dispatch.Slot] = []
        try:
            for tracepoint, fn_name in probe.attach:
                slot = dispatch.slot_for(tracepoint, fn_name)
                if slot is not None:
                    self._fill(slot)
                    slots.append(slot)
                elif probe.raw:
                    self._raw_attach(tracepoint, fn_name)
                else:
                    self.bpf.attach_tracepoint(tp=tracepoint.encode(), fn_name=fn_name.encode())
                    perf.append((tracepoint, int(self.bpf.tracepoint_fds[tracepoint.encode()])))
        except Exception as err:
            for slot in slots:
                self._clear(slot)
            for _, fd in perf:  # nobody else holds these: closing detaches
                with contextlib.suppress(OSError):
                    os.close(fd)
            return ProbeStatus(probe.name, probe.kind, False, f"attach failed: {_first_line(err)}")
        for tracepoint, fd in perf:
            self.fds.append(fd)
            self.attachments.append(tracepoint)
        return ProbeStatus(probe.name, probe.kind, True)


def _syscall_names() -> dict[int, str]:
    """bcc's table, completed with the numbers the dispatch knows (bcc 0.26
    stops at 334)."""
    from bcc import syscall as bcc_syscall

    names = {
        int(nr): (name.decode() if isinstance(name, bytes) else str(name))
        for nr, name in bcc_syscall.syscalls.items()
    }
    for name, nr in dispatch.SYSCALL_NUMBERS.items():
        names.setdefault(nr, name)
    return names


class Uncacheable(Exception):
    """This compile cannot be stored in the program cache; one line why."""


def _tables(bpf: Any) -> list[tuple[str, int]]:
    """(bcc's full table name, fd) of every map the module made."""
    from bcc.libbcc import lib

    lib.bpf_num_tables.restype = ctypes.c_ulonglong
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    lib.bpf_table_fd_id.restype = ctypes.c_int
    lib.bpf_table_fd_id.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
    found = []
    for i in range(int(lib.bpf_num_tables(bpf.module))):
        name = lib.bpf_table_name(bpf.module, i).decode()
        found.append((name, int(lib.bpf_table_fd_id(bpf.module, i))))
    return found


def _instructions(bpf: Any, name: bytes) -> bytes:
    from bcc.libbcc import lib

    start = lib.bpf_function_start(bpf.module, name)
    size = int(lib.bpf_function_size(bpf.module, name))
    if not start or size <= 0:
        raise Uncacheable(f"program {name.decode()}: no instructions")
    return ctypes.string_at(start, size)


def cache_entry(
    bpf: Any, attachments: list[tuple[str, int]], syscall_names: dict[int, str]
) -> CacheEntry:
    """What this compile gave the kernel, as a program cache entry.

    ``attachments``: (tracepoint, fd) of every attachment handed over, in
    order. Map definitions, BTF, prog array contents and which program each
    attachment runs are read back from the kernel. Raises Uncacheable.
    """
    from bcc.libbcc import lib

    maps: list[CachedMap] = []
    map_fds: list[int] = []
    index_of_fd: dict[int, int] = {}
    btf_ids: list[int] = []
    for name, fd in _tables(bpf):
        info = bpf_info.map_info(fd)
        btf = -1
        if info.btf_id:
            if info.btf_id not in btf_ids:
                btf_ids.append(info.btf_id)
            btf = btf_ids.index(info.btf_id)
        index_of_fd[fd] = len(maps)
        map_fds.append(fd)
        maps.append(
            CachedMap(
                name=name,
                map_type=info.map_type,
                key_size=info.key_size,
                value_size=info.value_size,
                max_entries=info.max_entries,
                map_flags=info.map_flags,
                btf=btf,
                btf_key_type_id=info.btf_key_type_id,
                btf_value_type_id=info.btf_value_type_id,
                btf_vmlinux_value_type_id=info.btf_vmlinux_value_type_id,
                map_extra=info.map_extra,
            )
        )
    programs: list[CachedProgram] = []
    index_of_prog: dict[int, int] = {}
    for fn_name, function in bpf.funcs.items():
        name = fn_name.decode() if isinstance(fn_name, bytes) else str(fn_name)
        prog_type, prog_id = bpf_info.prog_type_and_id(int(function.fd))
        if prog_type not in _REPLAYABLE_TYPES:
            raise Uncacheable(f"program {name}: type {prog_type} is not replayed")
        insns = _instructions(bpf, name.encode())
        try:
            refs = map_references(insns)
        except CacheFormatError as err:
            raise Uncacheable(f"program {name}: {err}") from None
        if any(fd not in index_of_fd for _, fd in refs):
            raise Uncacheable(f"program {name}: references a map bcc does not list")
        index_of_prog[prog_id] = len(programs)
        programs.append(
            CachedProgram(
                name=name,
                prog_type=prog_type,
                insns=insns,
                maps=[MapReference(insn, index_of_fd[fd]) for insn, fd in refs],
            )
        )
    attached: list[Attachment] = []
    for tracepoint, fd in attachments:
        query = bpf_info.fd_query(fd)
        event = tracepoint.partition(":")[2]
        kind = _ATTACH_KIND.get(query.fd_type)
        if kind is None or query.name != event or query.prog_id not in index_of_prog:
            raise Uncacheable(
                f"attachment to {tracepoint}: not a tracepoint program of this compile"
            )
        attached.append(Attachment(index_of_prog[query.prog_id], kind, tracepoint))
    slots: list[ProgSlot] = []
    for number, table in enumerate(maps):
        if table.map_type != BPF_MAP_TYPE_PROG_ARRAY:
            continue
        contents = bpf_info.prog_array_slots(BpfMap(map_fds[number], table.name))
        for slot, prog_id in sorted(contents.items()):
            if prog_id not in index_of_prog:
                raise Uncacheable(f"prog array {table.name}: slot {slot} holds a foreign program")
            slots.append(ProgSlot(number, slot, index_of_prog[prog_id]))
    return CacheEntry(
        license=lib.bpf_module_license(bpf.module).decode(),
        btfs=[bpf_info.btf_blob(btf_id) for btf_id in btf_ids],
        maps=maps,
        programs=programs,
        attachments=attached,
        prog_slots=slots,
        syscall_names=syscall_names,
    )


def _store(
    cache_dir: str,
    options: LoadOptions,
    present: list[Probe],
    statuses: list[ProbeStatus],
    bpf: Any,
    attachments: list[tuple[str, int]],
    syscall_names: dict[int, str],
) -> str:
    """Store this compile in the program cache; what became of it, one line."""
    planned = {probe.name for probe in present}
    failed = [s.name for s in statuses if s.name in planned and not s.attached]
    if failed:
        return f"not stored: probe {failed[0]} failed to attach"
    try:
        entry = cache_entry(bpf, attachments, syscall_names)
        with CacheDir(Path(cache_dir)) as directory:
            directory.write(program_key(options, present), entry)
    except (Uncacheable, BpfError, CacheFileError, CacheFormatError) as err:
        return f"not stored: {_first_line(err)}"
    return "stored"


def compile_and_attach(options: LoadOptions, cache_dir: str = "") -> tuple[Manifest, list[int]]:
    """Compile, load, attach; the manifest and the fds it describes (maps
    first, then attachments). Raises CaptureError when nothing can work.
    With ``cache_dir``, also store the compile in the program cache there."""
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
        layout = kernel_layout.running_kernel_layout()
    except ValueError as err:  # a test skew that does not parse: fail closed
        raise CaptureError(str(err)) from None
    # No kernel headers: every struct offset comes from BTF (the stub has
    # only what bcc's own headers need).
    os.environ["BCC_KERNEL_SOURCE"] = str(KERNEL_STUB)
    try:
        flags = compile_flags(options, present, layout=layout)
        bpf = BPF(text=program_text(present).encode(), cflags=flags)
    except Exception as err:
        raise CaptureError(f"compiling the BPF programs failed: {_first_line(err)}") from err

    # Whose events the handlers skip, before any can run (capture is off
    # until the daemon turns it on).
    control = BpfMap(int(bpf[b"th_enabled"].map_fd), "th_enabled")
    write_control(control, enabled=False, agent_pid=options.agent_pid)
    layout_problem = _layout_check(bpf) if layout.usable else layout.problem

    try:
        _fill_tail_programs(bpf, present)
    except Exception as err:
        raise CaptureError(
            f"loading the BPF tail-called programs failed: {_first_line(err)}"
        ) from err

    attacher = _Attacher(bpf)
    statuses.extend(attacher.attach(probe) for probe in present)
    attached, fds = attacher.attachments, attacher.fds

    maps: list[str] = []
    map_fds: list[int] = []
    for name in MAPS_HANDED_OVER:
        try:
            table = bpf[name.encode()]
        except KeyError:
            continue
        maps.append(name)
        map_fds.append(int(table.map_fd))
    syscall_names = _syscall_names()
    stored = ""
    if cache_dir and len(attached) != len(fds):
        stored = f"not stored: {len(fds)} attachments for {len(attached)} tracepoints"
    elif cache_dir:
        pairs = list(zip(attached, fds, strict=True))
        stored = _store(cache_dir, options, present, statuses, bpf, pairs, syscall_names)
    manifest = Manifest(
        maps=maps,
        attachments=attached,
        statuses=sorted(statuses),
        syscall_names=syscall_names,
        cache=stored,
        layout=layout_problem,
    )
    return manifest, map_fds + fds


def _fill_tail_programs(bpf: Any, present: list[Probe]) -> None:
    """Load the programs the planned concerns' handlers tail-call
    (:data:`~agent.capture.probes.TAIL_PROGRAMS`) and put each in its slot,
    before any handler is attached. Raises what bcc raises (a verifier
    refusal): without them every record of the concern would be lost."""
    from bcc import BPF

    for concern in sorted({probe.concern for probe in present}):
        for table, slot, fn in TAIL_PROGRAMS.get(concern, ()):
            program = bpf.load_func(fn.encode(), BPF.RAW_TRACEPOINT)
            bpf[table.encode()][ctypes.c_int(slot)] = ctypes.c_int(program.fd)


def _layout_check(bpf: Any) -> str:
    """Run the layout self-check here (the daemon's child: its cwd, its
    cgroup); "" when the offsets read this process right."""
    from bcc import BPF

    try:
        program = bpf.load_func(layout_check.PROGRAM.encode(), BPF.RAW_TRACEPOINT)
    except Exception as err:
        return f"the layout self-check did not load: {_first_line(err)}"
    results = int(bpf[layout_check.RESULT_MAP.encode()].map_fd)
    return layout_check.run_by_fd(int(program.fd), results)


def serve(sock: socket.socket) -> None:
    """Read the options, compile, send the manifest and the fds."""
    request, _, _, _ = sock.recvmsg(handoff.MAX_PAYLOAD)
    if not request:
        return  # the daemon went away before asking
    try:
        asked = msgspec.json.decode(request, type=CompileRequest)
        manifest, fds = compile_and_attach(asked.options, asked.cache_dir)
    except (CaptureError, msgspec.ValidationError, msgspec.DecodeError) as err:
        manifest, fds = Manifest(error=_first_line(err)), []
    handoff.send(sock, msgspec.json.encode(manifest), fds)


def main(argv: Sequence[str]) -> None:
    """``argv``: the socket's fd number. Never returns: ``os._exit``."""
    code = 0
    try:
        with socket.socket(fileno=int(argv[0])) as sock:
            serve(sock)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the daemon says it
        code = 130
    except BaseException as err:  # a bug or a vanished daemon: say so, exit non-zero
        print(f"tracehound compile child: {_first_line(err)}", file=sys.stderr)
        code = 1
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)  # not sys.exit: bcc's atexit cleanup would detach everything
