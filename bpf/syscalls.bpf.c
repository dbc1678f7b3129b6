/* SPDX-License-Identifier: Apache-2.0 */
/*
 * syscalls.bpf.c: per-process, per-syscall counts, aggregated here in the
 * kernel: no ring-buffer record per syscall. User space reads the map
 * periodically and removes a process's counters once it has exited.
 *
 * The count is taken by the sys_enter dispatcher (dispatch.bpf.c), for
 * every syscall of a traced process, before it hands the syscall to a
 * concern's handler: one raw tracepoint program per syscall, not two.
 */
#include "tracehound.h"

#ifdef TH_PROBE_SYSCALLS_COUNT
BPF_HASH(th_syscall_counts, struct th_syscall_key, u64, TH_SYSCALL_KEYS_MAX);

static __always_inline void th_count_syscall(u32 pid, long id)
{
    struct th_syscall_key key = {.pid = pid, .nr = (u32)id};
    u64 *count = th_syscall_counts.lookup(&key);
    if (count) {
        __sync_fetch_and_add(count, 1);
        th_count(TH_KIND_SYSCALL, 0);
        return;
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
        return;
    }
    th_count(TH_KIND_SYSCALL, 0);
}
#endif
