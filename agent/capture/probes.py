"""The probe table: every probe tracehound can attach, and what it needs.

A probe is one concern's handlers for one syscall or kernel event: the
tracepoints it attaches to and the C functions (in bpf/) that serve them. The
loader includes a probe's C code only when all of its tracepoints exist
(``TH_PROBE_<NAME>`` is defined), attaches it, and reports for each probe
whether it attached and why not. A missing probe disables only its events.

A ``syscalls:sys_enter_X`` / ``sys_exit_X`` pair is not attached as that
perf tracepoint: its handler goes in slot nr(X) of a dispatch table, reached
from one raw tracepoint program per direction (:mod:`agent.capture.dispatch`);
the tracefs event only tells whether the syscall exists. "Attached" then
means its slots were filled and its dispatchers attached.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.capture.dispatch import SYS_ENTER


@dataclass(frozen=True)
class Probe:
    """``name`` is ``concern.what`` (``file.openat``); ``attach`` pairs each
    tracepoint (``category:event``) with the C function that serves it
    (a syscall's tracepoint names a dispatch slot instead, see above).
    ``raw``: attach as raw tracepoints (by event name), which skip building
    the argument record: cheaper, for handlers that need only raw args."""

    name: str
    kind: str
    attach: tuple[tuple[str, str], ...]
    raw: bool = False
    requires: tuple[str, ...] = ()  # probes whose C code this one extends
    #: Dispatched by number even when tracefs has no event for the syscall:
    #: a syscall compiled out of the kernel (init_module without
    #: CONFIG_MODULES) still enters and leaves through the raw tracepoints,
    #: failing with ENOSYS, and an attempt to load a module is worth a record.
    absent_ok: bool = False

    @property
    def macro(self) -> str:
        return "TH_PROBE_" + self.name.replace(".", "_").upper()

    @property
    def concern(self) -> str:
        return self.name.split(".", 1)[0]


def _syscall(
    concern: str, kind: str, syscall: str, *, absent_ok: bool = False, handler: str = ""
) -> Probe:
    """A syscall's probe; ``handler``: the name of the pair of C functions
    that serve it when they serve several syscalls (``th_enter_<handler>``),
    else the syscall's own (``th_enter_<syscall>``)."""
    name = handler or syscall
    return Probe(
        name=f"{concern}.{syscall}",
        kind=kind,
        attach=(
            (f"syscalls:sys_enter_{syscall}", f"th_enter_{name}"),
            (f"syscalls:sys_exit_{syscall}", f"th_exit_{name}"),
        ),
        absent_ok=absent_ok,
    )


# x86_64 glibc still calls the legacy ones (rename(), mkdir(), chmod()...).
FILE_SYSCALLS = (
    *("open", "openat", "openat2", "creat"),
    *("unlink", "unlinkat", "rmdir"),
    *("rename", "renameat", "renameat2"),
    *("chmod", "fchmodat", "fchmodat2", "fchmod"),
    *("mkdir", "mkdirat"),
    *("link", "linkat", "symlink", "symlinkat", "truncate", "ftruncate"),
    *("chown", "lchown", "fchownat", "fchown"),
)

#: The security-relevant calls that are not file operations (bpf/call.bpf.c).
CALL_SYSCALLS = (
    *("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "capset"),
    *("ptrace", "mount", "umount", "bpf", "unshare", "setns"),  # umount: umount2(2)
    *("kill", "tkill", "tgkill", "rt_sigqueueinfo", "memfd_create"),
)
#: Module loading: often compiled out (CONFIG_MODULES off), then every call
#: fails with ENOSYS: still traced (see Probe.absent_ok).
MODULE_SYSCALLS = ("init_module", "finit_module", "delete_module")

PROBES: tuple[Probe, ...] = (
    _syscall("exec", "exec", "execve"),
    _syscall("exec", "exec", "execveat"),
    # Where a successful exec is recorded: the new image's filename and argv
    # are resident there (see bpf/exec.bpf.c); the syscall probes keep the
    # attempt from entry to exit and record the failures.
    Probe(
        "exec.image",
        "exec",
        (("sched:sched_process_exec", "th_sched_exec"),),
        requires=("exec.execve",),
    ),
    Probe("exec.fork", "fork", (("task:task_newtask", "th_task_newtask"),)),
    Probe(
        "exec.exit",
        "exit",
        (
            ("sched:sched_process_exit", "th_sched_exit"),
            ("syscalls:sys_enter_exit_group", "th_enter_exit_group"),
            ("syscalls:sys_enter_exit", "th_enter_exit"),
            ("signal:signal_generate", "th_signal_generate"),
            ("signal:signal_deliver", "th_signal_deliver"),
        ),
    ),
    *(_syscall("file", "file", name) for name in FILE_SYSCALLS),
    *(_syscall("net", "net", name) for name in ("connect", "accept", "accept4", "bind", "listen")),
    # UDP destinations (net.bpf.c keeps to UDP sockets; send() is sendto).
    *(_syscall("net", "net", name) for name in ("sendto", "sendmsg", "sendmmsg")),
    # One pair of programs serves every call (bpf/call.bpf.c), a slot each.
    *(_syscall("call", "call", name, handler="call") for name in CALL_SYSCALLS),
    *(_syscall("call", "call", name, absent_ok=True, handler="call") for name in MODULE_SYSCALLS),
    Probe(
        "net.listen_addr",
        "net",
        (("sock:inet_sock_set_state", "th_sock_set_state"),),
        requires=("net.listen",),
    ),
    # How a non-blocking connect ended (established, refused): SYN_SENT's ends.
    Probe(
        "net.connect_result",
        "net",
        (("sock:inet_sock_set_state", "th_sock_connect_state"),),
        raw=True,
        requires=("net.connect",),
    ),
    # io_uring requests: no syscall tracepoint sees them (bpf/uring.bpf.c).
    Probe(
        "uring.ops",
        "uring",
        (
            ("io_uring:io_uring_submit_req", "th_uring_submit"),
            ("io_uring:io_uring_complete", "th_uring_complete"),
        ),
    ),
    # Counted by the sys_enter dispatcher itself (bpf/dispatch.bpf.c), which
    # every syscall runs through anyway: this probe attaches that program.
    Probe("syscalls.count", "syscall", (SYS_ENTER,), raw=True),
)

#: The C source file of each concern, in bpf/.
SOURCES: dict[str, str] = {
    "call": "call.bpf.c",
    "exec": "exec.bpf.c",
    "file": "file.bpf.c",
    "net": "net.bpf.c",
    "syscalls": "syscalls.bpf.c",
    "uring": "uring.bpf.c",
}
#: Programs a concern's handlers tail-call, per concern: (program array,
#: slot, C function). The compile child loads each and fills its slot
#: before anything is enabled; the program cache keeps the slots.
TAIL_PROGRAMS: dict[str, tuple[tuple[str, int, str], ...]] = {
    "file": (("th_file_progs", 0, "th_file_resolve"),),
}
#: The syscall dispatchers (:mod:`agent.capture.dispatch`), in every program.
DISPATCH_SOURCE = "dispatch.bpf.c"
#: Kernel struct readers and the path walk, for every concern's use.
LIBRARY_SOURCES = ("path.bpf.c",)
#: The start-up self-check of the struct offsets (:mod:`agent.capture.layout_check`).
SELFCHECK_SOURCE = "layout.bpf.c"


def probe_named(name: str) -> Probe:
    for probe in PROBES:
        if probe.name == name:
            return probe
    raise KeyError(name)


def with_tracepoint_overrides(overrides: dict[str, str]) -> tuple[Probe, ...]:
    """The probe table with some probes' first tracepoint renamed.

    This is how configuration points a probe at another tracepoint (and how
    tests point one at a tracepoint that does not exist).
    Raises KeyError for an unknown probe name.
    """
    probes = list(PROBES)
    for name, tracepoint in overrides.items():
        probe = probe_named(name)
        first_fn = probe.attach[0][1]
        renamed = Probe(
            probe.name,
            probe.kind,
            ((tracepoint, first_fn), *probe.attach[1:]),
            probe.raw,
            probe.requires,
            probe.absent_ok,
        )
        probes[probes.index(probe)] = renamed
    return tuple(probes)
