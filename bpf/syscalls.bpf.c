/* SPDX-License-Identifier: Apache-2.0 */
/*
 * syscalls.bpf.c: per-process, per-syscall counts, aggregated here in the
 * kernel: no ring-buffer record per syscall. User space reads the map
 * periodically and removes a process's counters once it has exited.
 */
#include "tracehound.h"

#ifdef TH_PROBE_SYSCALLS_COUNT
BPF_HASH(th_syscall_counts, struct th_syscall_key, u64, TH_SYSCALL_KEYS_MAX);

/* A raw tracepoint: no argument record is built for it, which halves its
 * cost per syscall here. args[1] is the syscall number (the raw tracepoint
 * passes (struct pt_regs *, long id); the regs are never touched). */
int th_raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    long id = (long)ctx->args[1];
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (id < 0 || !th_traced(pid))
        return 0;
    struct th_syscall_key key = {.pid = pid, .nr = (u32)id};
    u64 *count = th_syscall_counts.lookup(&key);
    if (count) {
        __sync_fetch_and_add(count, 1);
        th_count(TH_KIND_SYSCALL, 0);
        return 0;
    }
    u64 one = 1;
    /* BPF_NOEXIST: two CPUs may race to create the key; the loser adds. */
    if (th_syscall_counts.insert(&key, &one)) {
        count = th_syscall_counts.lookup(&key);
        if (count) {
            __sync_fetch_and_add(count, 1);
            th_count(TH_KIND_SYSCALL, 0);
        } else {
            th_count(TH_KIND_SYSCALL, 1); /* map full: counted as lost */
        }
        return 0;
    }
    th_count(TH_KIND_SYSCALL, 0);
    return 0;
}
#endif
