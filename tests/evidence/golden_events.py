"""A fixed capture for the golden-log test: the same events must always give
the same log bytes.

``golden_events()`` is deterministic (a seeded generator, no clock): every
kind of event, hostile bytes (text that is not UTF-8, control characters,
bidi marks, long values the capture cut), secrets the built-in rules redact,
and every ``capture.*`` record. ``tests/evidence/golden/evidence.ndjson`` is
what the data path made of it when the golden file was checked in
(regenerate only on purpose: ``python -m tests.evidence.golden_events``),
and :mod:`tests.evidence.test_golden_log` holds today's data path to it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import msgspec

from agent.capture import kinds
from agent.capture.cgroups import UNRESOLVED, CgroupInfo
from agent.capture.container_id import Container, parse_container
from agent.capture.events import (
    Endpoint,
    Event,
    ExecEvent,
    ExitEvent,
    FileEvent,
    ForkEvent,
    NetEvent,
    ProcessSeen,
    SyscallCounts,
)
from agent.capture.kinds import AT_REMOVEDIR
from agent.capture.loader import ProbeStatus
from agent.evidence.types import Anchor

GOLDEN = Path(__file__).parent / "golden" / "evidence.ndjson"
_CONTAINER_PATH = (
    "/kubepods.slice/kubepods-burstable.slice/"
    "kubepods-burstable-pod2b1c8a3e_7d4f_4e21_9a0b_5c6d7e8f9a0b.slice/"
    "cri-containerd-" + "0123456789abcdef" * 4 + ".scope"
)
#: What the golden capture's cgroup ids resolve to: the root, a Kubernetes
#: container (with its pod), and one unresolved (removed before the look-up).
CGROUPS: dict[int, CgroupInfo] = {
    1: CgroupInfo(path="/"),
    4242: CgroupInfo(path=_CONTAINER_PATH, container=parse_container(_CONTAINER_PATH)),
    2**64 - 1: UNRESOLVED,
}
assert isinstance(CGROUPS[4242].container, Container)
ANCHOR = Anchor(
    boot_id="b0a7e2c4-1111-4222-8333-944455556666",
    wall_ns=1_764_000_000_123_456_789,
    boottime_ns=42_000_000_000,
)
HOST = "golden-host"
VERSION = "golden"
SEAL_KEY = bytes(range(32))
CLOCK_NS = 1_764_000_000_000_000_000
CHECKPOINT_EVERY = 50
COMMIT_EVERY = 64

# Text as the wire decoder hands it over: bytes that are not UTF-8 arrive as
# lone surrogates (surrogateescape).
_HOSTILE = [
    b"/tmp/x\xff".decode("utf-8", "surrogateescape"),
    "/tmp/line\nfile open(read) /etc/shadow",
    "\x1b[31mred\x1b[0m",
    "caf\u00e9 \u202eevil\u202c \u2028",
    "a" * 300,
    "",
    'quote"back\\slash\ttab\x7f\x00nul',
]
_SECRETS = [
    "--password=hunter2",
    "sk_live_51QwErTyUiOpAsDfGhJkL",
    "ghp_Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2",
    "AKIAIOSFODNN7EXAMPLE",
    "postgres://app:s3cr3t@db:5432/x",
    "-pS3cretPass",
]
_PATHS = [
    "/etc/passwd",
    "lib/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libm.so.6",
    ".",
    "/proc/self/fd/3",
]
_FILE_OPS = [
    ("open", "openat"),
    ("open", "open"),
    ("unlink", "unlinkat"),
    ("unlink", "rmdir"),
    ("rename", "renameat2"),
    ("chmod", "fchmodat"),
    ("mkdir", "mkdirat"),
    ("other", "truncate"),
]


def _as_probed(syscall: str, flags: int) -> int:
    """The flags a probe records: rmdir(2) always carries AT_REMOVEDIR
    (bpf/file.bpf.c passes it, as unlinkat(2) does for a directory)."""
    return flags | AT_REMOVEDIR if syscall == "rmdir" else flags


def _text(rng: random.Random) -> str:
    pool = rng.choice([_HOSTILE, _SECRETS, _PATHS])
    return rng.choice(pool)


def _resolved(path: str, case: int) -> tuple[str, int]:
    """An absolute path as the kernel would have resolved ``path``, each way
    it can go by ``case`` (no random draw: the other events stay as they were)."""
    if case == 0:
        return (path if path.startswith("/") else "/srv/w/" + path), kinds.PATH_JOINED
    if case == 1:
        return (path if path.startswith("/") else "/home/u/" + path), 0
    if case == 2:
        return "", kinds.PATH_NO_LAYOUT
    return "/tail/" + path.rsplit("/", 1)[-1], kinds.PATH_CUT


def golden_events(n: int = 400, seed: int = 20261201) -> Iterator[Event]:
    """``n`` events of every kind, in kernel-time order."""
    rng = random.Random(seed)
    ts = ANCHOR.boottime_ns + 1_000
    for i in range(n):
        ts += rng.randrange(1, 5_000_000)
        pid = 1000 + rng.randrange(50)
        header = {
            "pid": pid,
            "tid": pid + rng.randrange(3),
            "ts_ns": ts,
            "uid": rng.choice([0, 1000, 65534, 2**32 - 1]),
            "gid": rng.choice([0, 1000, 65534]),
            "cgroup_id": rng.choice([1, 4242, 2**64 - 1]),
            "comm": rng.choice(
                [
                    "bash",
                    "curl",
                    "sk_live_51QwErT",
                    "x\xff".encode("latin-1").decode("utf-8", "surrogateescape"),
                    "a\nb",
                    "python3",
                ]
            ),
        }
        choice = i % 9
        if choice in (0, 1, 2):
            op, syscall = rng.choice(_FILE_OPS)
            event = FileEvent(
                **header,
                op=op,
                syscall=syscall,
                ret=rng.choice([0, 3, -2, -13]),
                dfd=rng.choice([-100, 3, 7]),
                path=_text(rng),
                dfd2=rng.choice([-100, 4]),
                path2=_text(rng) if op == "rename" else "",
                flags=_as_probed(syscall, rng.choice([0, 0o100, 0o2000000, 0x200])),
                mode=rng.choice([0, 0o644, 0o4755]),
                path_cut=rng.random() < 0.1,
                path2_cut=op == "rename" and rng.random() < 0.1,
            )
            abs_path, abs_flags = _resolved(event.path, i % 4)
            abs_path2, abs2_flags = _resolved(event.path2, (i + 1) % 4) if event.path2 else ("", 0)
            yield msgspec.structs.replace(
                event, abs_path=abs_path, abs_flags=abs_flags, abs_path2=abs_path2,
                abs2_flags=abs2_flags,
            )  # fmt: skip
        elif choice == 3:
            argv = tuple(_text(rng) for _ in range(rng.randrange(0, 6)))
            cut = tuple(k for k in range(len(argv)) if rng.random() < 0.1)
            ret = rng.choice([0, -2, -13])
            filename = rng.choice(["/usr/bin/curl", "/bin/sh", _text(rng)])
            # What the kernel resolved, derived without drawing from rng (the
            # other records stay what they were): enrichment off for every
            # fifth pid, a memfd for /bin/sh, no paths for a failure.
            resolved = pid % 5 != 0
            paths = resolved and ret == 0
            yield ExecEvent(
                **header,
                ret=ret,
                filename=filename,
                argv=argv,
                argv_truncated=bool(cut) or rng.random() < 0.1,
                at=rng.random() < 0.2,
                filename_cut=rng.random() < 0.05,
                args_cut=cut,
                argv_more=rng.random() < 0.05,
                ppid=pid // 2 if resolved else None,
                euid=0 if resolved else None,
                egid=0 if resolved else None,
                loginuid=(1000 if pid % 2 else 4294967295) if resolved else None,
                cwd="/srv/golden/" + filename.rpartition("/")[2] if paths else "",
                cwd_flags=0 if paths else (16 if resolved else 8),
                exe=("/" if filename == "/bin/sh" else filename) if paths else "",
                exe_flags=(4 if filename == "/bin/sh" else 0) if paths else (16 if resolved else 8),
                fileless=paths and filename == "/bin/sh",
                exe_memfd=paths and filename == "/bin/sh",
                unresolved=() if paths else (("cwd", "exe") if resolved else ("ids", "cwd", "exe")),
            )
        elif choice == 4:
            yield ForkEvent(
                **header, child_pid=pid + 100, clone_flags=rng.choice([0x11, 2**63 + 17])
            )
        elif choice == 5:
            code = rng.random() < 0.7
            yield ExitEvent(
                **header,
                exit_code=rng.choice([0, 1, 255]) if code else 0,
                signal=0 if code else rng.choice([9, 11, 15]),
                have_code=code,
                have_signal=not code and rng.random() < 0.9,
            )
        elif choice == 6:
            op = rng.choice(["connect", "accept", "bind", "listen", "shutdown"])
            endpoint = rng.choice(
                [
                    Endpoint("ipv4", "10.1.2.3", 443),
                    Endpoint("ipv6", "fe80::1", 22),
                    Endpoint("unix", _text(rng)),
                    Endpoint("unix", "@abstract\x01"),
                    Endpoint("other", "af=38"),
                    None,
                ]
            )
            yield NetEvent(
                **header,
                op=op,
                ret=rng.choice([0, -111]),
                fd=rng.randrange(3, 40),
                endpoint=None if op == "listen" else endpoint,
                backlog=128 if op == "listen" else 0,
            )
        elif choice == 7:
            yield SyscallCounts(
                pid=pid,
                counts={
                    "read": rng.randrange(1000),
                    "openat": 2**60 + rng.randrange(9),
                    "close": 1,
                },
                final=rng.random() < 0.5,
            )
        else:
            yield ProcessSeen(
                pid=pid,
                ppid=1,
                comm=header["comm"],
                exe=rng.choice(["/usr/bin/sshd", _text(rng)]),
                cmdline=tuple(_text(rng) for _ in range(rng.randrange(0, 4))),
                uid=header["uid"],
                user=rng.choice(["root", "", "n\xe9"]),
                start_time=1_764_000_000.01 + i / 7,
                preexisting=rng.random() < 0.5,
            )


PROBES = [
    ProbeStatus("sys_enter_execve", "tracepoint", True),
    ProbeStatus("sys_exit_openat", "tracepoint", False, "no such tracepoint"),
]
START_CONFIG = {
    "probes": ["exec", "file", "net"],
    "ring_buffer_pages": 1024,
    "redact": {"rules": 112},
}
LOSS = {"file": {"lost_kernel": 3, "evidence:map": 0}, "exec": {"lost_kernel": 0}}
RECOVERED = {"last_seq": 77, "torn": {"segment": "0000000000000000.ndjson", "bytes": 12}}
