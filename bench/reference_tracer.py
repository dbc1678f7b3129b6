"""The floor: the least any tracer must do to record each open() with its path.

This is the yardstick the bench measures tracehound against, side by side:
an openat enter/exit tracepoint pair, arguments carried in task storage,
one ring-buffer record per open holding the standard header (pid, tid, uid,
gid, cgroup, comm, boot timestamp) and the path read at exit, drained by a
thread that discards it. No filtering, no syscall counts, no decoding. What
tracehound costs above this is its own; what this costs is the kernel's.
"""

from __future__ import annotations

import mmap
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PROGRAM = r"""
BPF_RINGBUF_OUTPUT(events, 1024);
struct args { u64 path; u32 active; };
BPF_TASK_STORAGE(pending, struct args);
struct record {
    u32 kind, pid; u64 ts; u32 tid, uid, gid, pad; u64 cgroup; char comm[16];
    s64 ret; char path[256];
};
int floor_enter(struct { u64 common; long nr; u64 args[6]; } *ctx) {
    struct args *a = pending.task_storage_get(
        (struct task_struct *)bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!a) return 0;
    a->path = ctx->args[1];
    a->active = 1;
    return 0;
}
int floor_exit(struct { u64 common; long nr; s64 ret; } *ctx) {
    struct args *a = pending.task_storage_get(
        (struct task_struct *)bpf_get_current_task_btf(), 0, 0);
    if (!a || !a->active) return 0;
    a->active = 0;
    struct record *r = events.ringbuf_reserve(sizeof(*r));
    if (!r) return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid(), uid_gid = bpf_get_current_uid_gid();
    r->kind = 4; r->pid = pid_tgid >> 32; r->tid = pid_tgid; r->ts = bpf_ktime_get_boot_ns();
    r->uid = uid_gid; r->gid = uid_gid >> 32; r->cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&r->comm, sizeof(r->comm));
    r->ret = ctx->ret;
    bpf_probe_read_user_str(r->path, sizeof(r->path), (void *)a->path);
    events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
    return 0;
}
"""


@contextmanager
def reference_tracer() -> Iterator[None]:
    """Attach the floor tracer for the duration of the block."""
    from bcc import BPF

    bpf: Any = BPF(text=PROGRAM)
    bpf.attach_tracepoint(tp=b"syscalls:sys_enter_openat", fn_name=b"floor_enter")
    bpf.attach_tracepoint(tp=b"syscalls:sys_exit_openat", fn_name=b"floor_exit")
    fd = int(bpf[b"events"].map_fd)
    page = mmap.PAGESIZE
    consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
    producer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    stop = threading.Event()

    def discard() -> None:  # hand every record back unread, every 2 ms
        while not stop.is_set():
            struct.pack_into("<Q", consumer, 0, struct.unpack_from("<Q", producer, 0)[0])
            time.sleep(0.002)

    drainer = threading.Thread(target=discard, daemon=True)
    drainer.start()
    try:
        yield
    finally:
        stop.set()
        drainer.join()
        consumer.close()
        producer.close()
        bpf.cleanup()
