"""A workload of security-relevant calls, each made once, for tests/test_calls_kernel.py.

Run by Debian's python3 as root: ``calls.py FACTS WORKDIR``. It makes each
call family's calls with values the test can recognise, and writes what it
did (pids, fds, paths, results) to FACTS as JSON. Every call goes straight
to the kernel (os.* or ctypes' syscall()), so the record the capture makes
can be compared with what was asked and what the kernel answered.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
LIBC.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]

NR = {
    "ptrace": 101,
    "capget": 125,
    "capset": 126,
    "mount": 165,
    "umount2": 166,
    "init_module": 175,
    "delete_module": 176,
    "tkill": 200,
    "tgkill": 234,
    "unshare": 272,
    "setns": 308,
    "finit_module": 313,
    "memfd_create": 319,
    "bpf": 321,
}
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
CLONE_NEWNS, CLONE_NEWUTS = 0x00020000, 0x04000000
BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_TYPE_ARRAY = 0, 1, 2
MNT_DETACH = 2
MS_NOSUID, MS_NODEV = 2, 4


def syscall(name: str, *args: Any) -> tuple[int, int]:
    """(result, errno) of a raw syscall."""
    ret = LIBC.syscall(ctypes.c_long(NR[name]), *args)
    return int(ret), ctypes.get_errno() if ret < 0 else 0


def in_child(body: Any) -> int:
    """Run ``body`` in a forked child; its pid once it has exited 0."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        except BaseException as err:  # the test reads the exit status
            print(f"child failed: {err!r}", file=sys.stderr)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"child {pid} failed"
    return pid


def main(facts_path: str, work: str) -> None:
    facts: dict[str, Any] = {"pid": os.getpid()}

    # Credentials: a child drops to nobody with setresuid (and its group first).
    def drop() -> None:
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        # An unprivileged setuid(0) after the drop fails with EPERM.
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise AssertionError("setuid(0) after the drop succeeded")

    facts["drop_pid"] = in_child(drop)

    # capset: this process sets its own sets to what they are (v3 header).
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    assert syscall("capget", header, data)[0] == 0
    facts["capset"] = syscall("capset", header, data)
    facts["cap_effective"] = data[0] | (data[3] << 32)

    # Signals: SIGTERM to a sleeping child; kill(self, 0) and a signal to
    # oneself are not recorded.
    sleeper = os.fork()
    if sleeper == 0:
        time.sleep(30)
        os._exit(0)
    os.kill(os.getpid(), 0)
    signal.signal(signal.SIGUSR1, lambda *_: None)
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # tgkill to oneself
    os.kill(sleeper, 0)
    # The other ways to send one, each SIGCONT (harmless) to the sleeper.
    assert syscall("tkill", sleeper, signal.SIGCONT)[0] == 0
    assert syscall("tgkill", sleeper, sleeper, signal.SIGCONT)[0] == 0
    assert LIBC.sigqueue(sleeper, signal.SIGCONT, ctypes.c_void_p(0)) == 0  # rt_sigqueueinfo
    # ptrace: attach to the sleeper, detach again.
    long = ctypes.c_long
    facts["ptrace_attach"] = syscall("ptrace", long(PTRACE_ATTACH), long(sleeper), None, None)
    os.waitpid(sleeper, 0)  # stopped
    facts["ptrace_detach"] = syscall("ptrace", long(PTRACE_DETACH), long(sleeper), None, None)
    os.kill(sleeper, signal.SIGTERM)
    os.waitpid(sleeper, 0)
    facts["sleeper_pid"] = sleeper

    # Namespaces and mounts, in a child of their own: unshare a mount and a
    # UTS namespace, mount a tmpfs, unmount it; setns back into our UTS one.
    target = os.path.join(work, "mnt")
    os.mkdir(target)
    uts = os.open(f"/proc/{os.getpid()}/ns/uts", os.O_RDONLY)

    def namespaces() -> None:
        assert syscall("unshare", ctypes.c_ulong(CLONE_NEWNS | CLONE_NEWUTS))[0] == 0
        # Nothing we mount may reach the host's namespace.
        assert syscall("mount", None, b"/", None, ctypes.c_ulong(0x40000 | 0x4000), None)[0] == 0
        ret = syscall(
            "mount",
            b"th-tmpfs",
            target.encode(),
            b"tmpfs",
            ctypes.c_ulong(MS_NOSUID | MS_NODEV),
            b"size=1m",
        )
        assert ret[0] == 0, ret
        assert syscall("umount2", target.encode(), MNT_DETACH)[0] == 0
        assert syscall("setns", uts, CLONE_NEWUTS)[0] == 0

    facts["ns_pid"] = in_child(namespaces)
    facts["mount_target"] = target
    facts["uts_fd"] = uts

    # Modules: on a kernel without them each fails with ENOSYS; anywhere a
    # module that does not exist cannot be removed, and an empty image
    # cannot be loaded.
    facts["init_module"] = syscall("init_module", None, ctypes.c_ulong(0), b"th_param=1")
    facts["delete_module"] = syscall("delete_module", b"th_no_such_module", 0)

    # bpf: an array map, made and closed.
    attr = (ctypes.c_uint32 * 30)()
    attr[0], attr[1], attr[2], attr[3] = BPF_MAP_TYPE_ARRAY, 4, 8, 1
    fd, err = syscall("bpf", BPF_MAP_CREATE, attr, ctypes.sizeof(attr))
    assert fd >= 0, err
    # A lookup in it: a map element operation, which the capture leaves out.
    key, value = ctypes.c_uint32(0), ctypes.c_uint64(0)
    lookup = (ctypes.c_uint64 * 4)(fd, ctypes.addressof(key), ctypes.addressof(value), 0)
    assert syscall("bpf", BPF_MAP_LOOKUP_ELEM, lookup, ctypes.sizeof(lookup))[0] == 0
    os.close(fd)

    # memfd_create, then exec of the memfd: fileless.
    memfd = os.memfd_create("th-fileless", 0)
    with open("/bin/true", "rb") as exe:
        os.write(memfd, exe.read())
    facts["memfd"] = memfd

    def run_memfd() -> None:
        os.execv(f"/proc/self/fd/{memfd}", ["th-fileless"])

    pid = os.fork()
    if pid == 0:
        run_memfd()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    facts["memfd_exec_pid"] = pid
    os.close(memfd)

    # File-like calls: links, truncation, owners and modes.
    base = os.path.join(work, "f")
    with open(base, "w") as f:
        f.write("x" * 100)
    hard, soft = base + ".hard", base + ".soft"
    os.link(base, hard)
    os.symlink("f", soft)
    os.truncate(base, 10)
    os.chown(base, 1234, -1)
    os.lchown(soft, 1234, 5678)
    fd = os.open(base, os.O_RDWR)
    os.ftruncate(fd, 5)
    os.fchmod(fd, 0o640)
    os.fchown(fd, -1, 4321)
    os.close(fd)
    facts["file_fd"] = fd
    facts.update(base=base, hard=hard, soft=soft)

    with open(facts_path, "w") as out:
        json.dump(facts, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
