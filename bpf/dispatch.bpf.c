/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dispatch.bpf.c: the two programs every syscall runs through. One raw
 * tracepoint program on sys_enter and one on sys_exit hand each syscall
 * tracehound traces to its handler with a tail call into a program array
 * indexed by syscall number (th_enter_progs, th_exit_progs); user space
 * fills the slots of the probes that attached.
 *
 * Why not one syscalls:sys_enter_X / sys_exit_X tracepoint per handler, as
 * before: each is a perf event whose release waits for an RCU grace period
 * under a global mutex (~73 ms here, ~50 of them: seconds at stop), and each
 * builds an argument record. A raw tracepoint is released without waiting
 * and passes the registers as they are.
 *
 * The loader compiles in which syscall numbers have a handler, per
 * direction, as 64-bit mask words TH_ENTER_MASK_<w> / TH_EXIT_MASK_<w> (bit
 * nr % 64 of word nr / 64): a syscall nobody traces leaves before any map is
 * touched. A tail call into an empty slot (a probe that failed to attach)
 * falls through. Slots must be filled before capture is enabled.
 * TH_COMPAT_EXEC_EXIT_NR, when defined, is the slot of an exec exit handler
 * (execve's or execveat's: they do the same). ia32 syscalls are not traced
 * (as the per-syscall tracepoints never fired for them either).
 */
#include "tracehound.h"

#ifndef TH_ENTER_MASK_0
#define TH_ENTER_MASK_0 0
#endif
#ifndef TH_ENTER_MASK_1
#define TH_ENTER_MASK_1 0
#endif
#ifndef TH_ENTER_MASK_2
#define TH_ENTER_MASK_2 0
#endif
#ifndef TH_ENTER_MASK_3
#define TH_ENTER_MASK_3 0
#endif
#ifndef TH_ENTER_MASK_4
#define TH_ENTER_MASK_4 0
#endif
#ifndef TH_ENTER_MASK_5
#define TH_ENTER_MASK_5 0
#endif
#ifndef TH_ENTER_MASK_6
#define TH_ENTER_MASK_6 0
#endif
#ifndef TH_ENTER_MASK_7
#define TH_ENTER_MASK_7 0
#endif
#ifndef TH_EXIT_MASK_0
#define TH_EXIT_MASK_0 0
#endif
#ifndef TH_EXIT_MASK_1
#define TH_EXIT_MASK_1 0
#endif
#ifndef TH_EXIT_MASK_2
#define TH_EXIT_MASK_2 0
#endif
#ifndef TH_EXIT_MASK_3
#define TH_EXIT_MASK_3 0
#endif
#ifndef TH_EXIT_MASK_4
#define TH_EXIT_MASK_4 0
#endif
#ifndef TH_EXIT_MASK_5
#define TH_EXIT_MASK_5 0
#endif
#ifndef TH_EXIT_MASK_6
#define TH_EXIT_MASK_6 0
#endif
#ifndef TH_EXIT_MASK_7
#define TH_EXIT_MASK_7 0
#endif

BPF_PROG_ARRAY(th_enter_progs, TH_SYSCALL_SLOTS);
BPF_PROG_ARRAY(th_exit_progs, TH_SYSCALL_SLOTS);

/* Is bit nr of the mask P0..P7 set? Compares against constants only. */
#define TH_NR_IN(nr, P)                                                       \
    ((u64)(nr) < TH_SYSCALL_SLOTS &&                                          \
     (((((nr) >> 6) == 0 ? P##0 : ((nr) >> 6) == 1 ? P##1 :                   \
        ((nr) >> 6) == 2 ? P##2 : ((nr) >> 6) == 3 ? P##3 :                   \
        ((nr) >> 6) == 4 ? P##4 : ((nr) >> 6) == 5 ? P##5 :                   \
        ((nr) >> 6) == 6 ? P##6 : P##7) >> ((nr) & 63)) & 1))

/* Every syscall of the host enters here. The syscall counter (syscalls.
 * bpf.c) runs in this program, not in a second one on the same tracepoint. */
int th_raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    long id = (long)ctx->args[1];
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (id < 0 || !th_traced(pid))
        return 0;
#ifdef TH_PROBE_SYSCALLS_COUNT
    th_count_syscall(pid, id);
#endif
    if (!TH_NR_IN(id, TH_ENTER_MASK_))
        return 0;
    /* An ia32 syscall's number is from another table (ia32 83 is symlink,
     * x86_64 83 mkdir) and its arguments are in other registers: the old
     * per-syscall tracepoints never fired for it, nor does a handler here. */
    if (th_compat_syscall())
        return 0;
    th_enter_progs.call(ctx, id);
    return 0;
}

/* Every syscall of the host leaves here: the number is read from the saved
 * registers, and all but the traced ones return at once (ia32 ones too,
 * although their exit handlers would find no entry saved: a task slot is
 * only active between a 64-bit entry and its exit). One exception: an
 * execve that loaded a 32-bit program leaves as an ia32 syscall, its
 * orig_ax rewritten to the ia32 execve number (__set_personality_ia32);
 * the exec handler takes it, or its 64-bit entry would stay pending. */
#define TH_IA32_EXECVE 11 /* arch/x86/entry/syscalls/syscall_32.tbl */
int th_raw_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
    long nr = th_syscall_nr(ctx);
    if (!TH_NR_IN(nr, TH_EXIT_MASK_)) {
#ifdef TH_COMPAT_EXEC_EXIT_NR
        /* 11 is munmap for a 64-bit syscall: only that one pays the check. */
        if (nr != TH_IA32_EXECVE || !th_compat_syscall())
            return 0;
        th_exit_progs.call(ctx, TH_COMPAT_EXEC_EXIT_NR);
#endif
        return 0;
    }
    if (th_compat_syscall())
        return 0;
    th_exit_progs.call(ctx, nr);
    return 0;
}
