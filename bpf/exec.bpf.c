/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exec.bpf.c: process lifecycle. execve/execveat (argv read at entry, one
 * record once the result is known, failures kept), fork (how ppid is known),
 * exit (once per process, with the exit status or the fatal signal).
 *
 * Each handler sits behind its probe's TH_PROBE_* macro, which the loader
 * defines only when every tracepoint that probe needs exists. The syscall
 * handlers (th_enter_* / th_exit_*) are raw tracepoint programs tail-called
 * by dispatch.bpf.c, which has already checked that the process is traced.
 */
#include "tracehound.h"

#ifdef TH_PROBE_EXEC_EXIT
struct th_exit_status {
    s32 code;
    s32 signal;
    u32 flags;
};
/* Not on the wire: the status came from exit_group(), which then kills the
 * other threads with SIGKILL; those deliveries must not replace it. */
#define TH_EXIT_BY_GROUP 0x100
/* What each process said it would exit with, until its last thread exits. */
BPF_HASH(th_exit_pending, u32, struct th_exit_status, TH_PENDING_MAX);

/* Signals whose default action ends the process (signal(7)); 32-64 too. */
#define TH_FATAL_SIGNALS                                                      \
    ((1ULL << 1) | (1ULL << 2) | (1ULL << 3) | (1ULL << 4) | (1ULL << 5) |     \
     (1ULL << 6) | (1ULL << 7) | (1ULL << 8) | (1ULL << 9) | (1ULL << 10) |    \
     (1ULL << 11) | (1ULL << 12) | (1ULL << 13) | (1ULL << 14) |               \
     (1ULL << 15) | (1ULL << 16) | (1ULL << 24) | (1ULL << 25) |               \
     (1ULL << 26) | (1ULL << 27) | (1ULL << 29) | (1ULL << 30) | (1ULL << 31))
#endif

#if defined(TH_PROBE_EXEC_EXECVE) || defined(TH_PROBE_EXEC_EXECVEAT)
/* The exec being attempted by each task, from entry to exit, built in place:
 * a th_exec_event is far larger than the 512-byte stack. It is the same
 * task_struct before and after exec, even when a non-leader thread execs
 * and takes over the leader's pid, so the slot follows the exec. */
struct th_exec_slot {
    u32 active;
    u32 _pad0;
    struct th_exec_event ev;
};
BPF_TASK_STORAGE(th_exec_pending, struct th_exec_slot);

static __always_inline int th_exec_enter(const char *filename,
                                         const char *const *argv, u32 at)
{
    struct th_exec_slot *slot =
        th_exec_pending.task_storage_get(TH_CURRENT_TASK(), 0, TH_SLOT_CREATE);
    if (!slot) {
        th_count(TH_KIND_EXEC, 1); /* no memory to remember it: lost */
        return 0;
    }
    struct th_exec_event *ev = &slot->ev;
    ev->ret = 0;
    ev->argc = 0;
    ev->flags = 0;
    ev->at = at;
    bpf_probe_read_user_str(ev->filename, sizeof(ev->filename), filename);
    for (u32 i = 0; i < TH_ARGV_MAX; i++) {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
            break;
        int n = bpf_probe_read_user_str(ev->argv[i], TH_ARG_LEN, arg);
        if (n >= TH_ARG_LEN)
            ev->flags |= TH_EXEC_ARG_TRUNCATED;
        ev->argc = i + 1;
    }
    if (ev->argc == TH_ARGV_MAX) {
        const char *more = NULL;
        bpf_probe_read_user(&more, sizeof(more), &argv[TH_ARGV_MAX]);
        if (more)
            ev->flags |= TH_EXEC_ARGV_TRUNCATED;
    }
    slot->active = 1;
    return 0;
}

static __always_inline int th_exec_exit(long ret)
{
    struct th_exec_slot *slot = th_exec_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!slot || !slot->active)
        return 0;
    slot->active = 0;
    struct th_exec_event *ev = &slot->ev;
    /* After a successful exec the header (comm, uid) is the new image's. */
    th_fill_header(&ev->h, TH_KIND_EXEC);
    ev->ret = (s32)ret;
#ifdef TH_PROBE_EXEC_EXIT
    if (ret == 0) {
        /* exec killed the process's other threads with SIGKILL: that is not
         * how the process will end. */
        u32 pid = ev->h.pid;
        th_exit_pending.delete(&pid);
    }
#endif
    th_count(TH_KIND_EXEC, th_events.ringbuf_output(ev, sizeof(*ev), th_submit_flags()) != 0);
    return 0;
}
#endif

#ifdef TH_PROBE_EXEC_EXECVE
int th_enter_execve(struct bpf_raw_tracepoint_args *ctx)
{
    u64 args[6];
    if (th_syscall_args(ctx, args)) {
        th_count(TH_KIND_EXEC, 1);
        return 0;
    }
    return th_exec_enter((const char *)args[0], (const char *const *)args[1], 0);
}

/* Also reached when the exec switched the process to 32-bit (TS_COMPAT is
 * set from then on): the exit dispatcher does not filter ia32 syscalls, as
 * this slot is only active after a 64-bit execve's entry. */
int th_exit_execve(struct bpf_raw_tracepoint_args *ctx)
{
    return th_exec_exit(th_syscall_ret(ctx));
}
#endif

#ifdef TH_PROBE_EXEC_EXECVEAT
int th_enter_execveat(struct bpf_raw_tracepoint_args *ctx)
{
    u64 args[6];
    if (th_syscall_args(ctx, args)) {
        th_count(TH_KIND_EXEC, 1);
        return 0;
    }
    return th_exec_enter((const char *)args[1], (const char *const *)args[2], 1);
}

int th_exit_execveat(struct bpf_raw_tracepoint_args *ctx)
{
    return th_exec_exit(th_syscall_ret(ctx));
}
#endif

#ifdef TH_PROBE_EXEC_FORK
/* task_newtask runs in the parent, before the child can run: the child is in
 * scope before its first instruction. Threads (CLONE_THREAD) are not new
 * processes and are not reported. */
int th_task_newtask(struct tracepoint__task__task_newtask *args)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 parent = pid_tgid >> 32;
    if (args->clone_flags & 0x00010000 /* CLONE_THREAD */)
        return 0;
    if (!th_traced(parent))
        return 0;
    u32 child = args->pid;
    if (TH_SCOPED) {
        u8 one = 1;
        if (th_scope.update(&child, &one))
            th_error(TH_ERR_SCOPE_FULL); /* the child's subtree goes untraced */
    }
    struct th_fork_event *ev = th_events.ringbuf_reserve(sizeof(*ev));
    if (!ev) {
        th_count(TH_KIND_FORK, 1);
        return 0;
    }
    th_fill_header(&ev->h, TH_KIND_FORK);
    ev->child_pid = child;
    ev->_pad0 = 0;
    ev->clone_flags = args->clone_flags;
    th_events.ringbuf_submit(ev, th_submit_flags());
    th_count(TH_KIND_FORK, 0);
    return 0;
}
#endif

#ifdef TH_PROBE_EXEC_EXIT

/* The last default-fatal signal sent to each task (by the pid the sender
 * named). A fatal signal sent to a process is usually turned by the kernel
 * into a group exit in which every thread is delivered SIGKILL: only the
 * sender's side (signal_generate) still knows it was, say, SIGTERM. */
BPF_TABLE("lru_hash", u32, s32, th_signal_sent, TH_PENDING_MAX);

static __always_inline int th_is_fatal_by_default(int sig)
{
    if (sig <= 0 || sig > 64)
        return 0;
    return sig >= 32 || ((TH_FATAL_SIGNALS >> sig) & 1);
}

/* From a syscall handler: the dispatcher checked th_traced. */
static __always_inline int th_note_exit_code(long code, u32 flags)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct th_exit_status *old = th_exit_pending.lookup(&pid);
    if (old && (old->flags & TH_EXIT_BY_GROUP))
        return 0; /* a thread's exit() racing exit_group(): the group's code wins */
    struct th_exit_status st = {};
    st.code = code & 0xff;
    st.flags = TH_EXIT_HAVE_CODE | flags;
    if (th_exit_pending.update(&pid, &st))
        th_error(TH_ERR_EXIT_STATUS_FULL);
    return 0;
}

int th_enter_exit_group(struct bpf_raw_tracepoint_args *ctx)
{
    u64 args[6];
    if (th_syscall_args(ctx, args))
        return 0; /* the exit record still comes, without the code */
    return th_note_exit_code(args[0], TH_EXIT_BY_GROUP);
}

int th_enter_exit(struct bpf_raw_tracepoint_args *ctx)
{
    /* exit() ends one thread; its code is the process's only if this is the
     * last thread, which sched_process_exit tells below. */
    u64 args[6];
    if (th_syscall_args(ctx, args))
        return 0;
    return th_note_exit_code(args[0], 0);
}

int th_signal_generate(struct tracepoint__signal__signal_generate *args)
{
    if (args->result != 0 /* TRACE_SIGNAL_DELIVERED */ || !th_is_fatal_by_default(args->sig))
        return 0;
    u32 target = args->pid;
    s32 sig = args->sig;
    th_signal_sent.update(&target, &sig);
    return 0;
}

int th_signal_deliver(struct tracepoint__signal__signal_deliver *args)
{
    int sig = args->sig;
    if (args->sa_handler != 0 /* SIG_DFL */ || !th_is_fatal_by_default(sig))
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 pid = pid_tgid >> 32, tid = (u32)pid_tgid;
    if (!th_traced(pid))
        return 0;
    struct th_exit_status *old = th_exit_pending.lookup(&pid);
    if (old && (old->flags & (TH_EXIT_HAVE_SIGNAL | TH_EXIT_BY_GROUP)))
        return 0; /* the first fatal signal decides; exit_group's SIGKILLs don't */
    if (sig == 9) {
        /* SIGKILL here is most often the kernel's group exit for the signal
         * really sent: look it up, by process, then by thread. */
        s32 *sent = th_signal_sent.lookup(&pid);
        if (!sent)
            sent = th_signal_sent.lookup(&tid);
        if (sent)
            sig = *sent;
    }
    struct th_exit_status st = {};
    st.signal = sig;
    st.flags = TH_EXIT_HAVE_SIGNAL;
    if (th_exit_pending.update(&pid, &st))
        th_error(TH_ERR_EXIT_STATUS_FULL);
    return 0;
}

int th_sched_exit(struct tracepoint__sched__sched_process_exit *args)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 pid = pid_tgid >> 32;
#ifdef TH_HAVE_GROUP_DEAD
    if (!args->group_dead)
        return 0; /* a thread, not the process */
#else
    /* Kernels before group_dead (6.1): the leader's exit stands for the
     * process. A leader that exits before its threads ends it early. */
    if ((u32)pid_tgid != pid)
        return 0;
#endif
    if (!th_traced(pid)) {
        th_exit_pending.delete(&pid);
        return 0;
    }
    struct th_exit_event *ev = th_events.ringbuf_reserve(sizeof(*ev));
    if (!ev) {
        th_count(TH_KIND_EXIT, 1);
    } else {
        th_fill_header(&ev->h, TH_KIND_EXIT);
        struct th_exit_status *st = th_exit_pending.lookup(&pid);
        ev->exit_code = st ? st->code : 0;
        ev->signal = st ? st->signal : 0;
        ev->flags = st ? st->flags & (TH_EXIT_HAVE_CODE | TH_EXIT_HAVE_SIGNAL) : 0;
        ev->_pad0 = 0;
        th_events.ringbuf_submit(ev, th_submit_flags());
        th_count(TH_KIND_EXIT, 0);
    }
    th_exit_pending.delete(&pid);
    th_signal_sent.delete(&pid);
    th_scope.delete(&pid);
    return 0;
}
#endif
