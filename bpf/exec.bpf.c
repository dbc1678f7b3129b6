/* SPDX-License-Identifier: Apache-2.0 */
/*
 * exec.bpf.c: process lifecycle. execve/execveat (one record per attempt: a
 * success recorded at sched_process_exec from the new image, with ppid, ids,
 * cwd and the executable's path; a failure at the syscall's exit from the old
 * image), fork (how ppid is known), exit (once per process, with the exit
 * status or the fatal signal).
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
/* The exec being attempted by each task, from entry to its record. It is
 * the same task_struct before and after exec, even when a non-leader thread
 * execs and takes over the leader's pid, so the slot follows the exec.
 *
 * Only the user pointers are kept: a successful exec's filename and argv
 * are read at sched_process_exec from where the kernel has just put them
 * (reading them at entry found pages a freshly forked child had not
 * touched yet: an execl of string literals came out empty). args[] holds
 * argv read at entry only while enrichment is off (the new mm cannot be
 * found without the BTF offsets), marked TH_EXEC_ARGV_AT_ENTRY. */
struct th_exec_slot {
    u32 active;       /* TH_EXEC_PENDING from entry, TH_EXEC_SENT once recorded */
    u32 at;
    u32 flags;        /* TH_EXEC_* found at entry */
    u32 argv_len;     /* bytes of args[] read at entry */
    u64 filename;     /* user pointers, as passed to the syscall */
    u64 argv;
    char args[TH_ARGV_BYTES];
};
#define TH_EXEC_PENDING 1
#define TH_EXEC_SENT 2
BPF_TASK_STORAGE(th_exec_pending, struct th_exec_slot);
/* Each record is built here (it is far larger than the 512-byte stack) and
 * only its used bytes are sent. */
BPF_PERCPU_ARRAY(th_exec_scratch, struct th_exec_event, 1);

#define TH_EXEC_FIXED (sizeof(struct th_exec_event) - TH_EXEC_DATA)

/* Slots th_exec_read_argv fills: TH_ARGV_MAX, as many as TH_ARGV_BYTES holds. */
#define TH_ARGV_SLOTS                                                         \
    (TH_ARGV_MAX < TH_ARGV_BYTES / TH_ARG_LEN ? TH_ARGV_MAX : TH_ARGV_BYTES / TH_ARG_LEN)

/* argv from user memory, entry by entry, into dst (TH_ARGV_BYTES bytes of a
 * map value): entry i in the TH_ARG_LEN-byte slot i, NUL-terminated
 * (TH_EXEC_ARGV_SLOTS; constant offsets keep the verifier's work small). A
 * pointer or string that cannot be read (a page not resident) stops it,
 * marked. Returns the bytes of the slots filled. */
static __always_inline u32 th_exec_read_argv(char *dst, const char *const *argv, u32 *flags)
{
    *flags |= TH_EXEC_ARGV_SLOTS;
    u32 i = 0;
#pragma unroll
    for (; i < TH_ARGV_SLOTS; i++) {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i])) {
            *flags |= TH_EXEC_ARGV_UNREADABLE;
            return i * TH_ARG_LEN;
        }
        if (!arg)
            return i * TH_ARG_LEN;
        long n = bpf_probe_read_user_str(dst + i * TH_ARG_LEN, TH_ARG_LEN, arg);
        if (n <= 0) {
            *flags |= TH_EXEC_ARGV_UNREADABLE;
            return i * TH_ARG_LEN;
        }
        if (n >= TH_ARG_LEN)
            *flags |= TH_EXEC_ARG_TRUNCATED;
    }
    const char *more = NULL;
    bpf_probe_read_user(&more, sizeof(more), &argv[TH_ARGV_SLOTS]);
    if (more)
        *flags |= TH_EXEC_ARGV_TRUNCATED;
    return TH_ARGV_SLOTS * TH_ARG_LEN;
}

/* The scratch record with its fixed part zeroed and the header filled. */
static __always_inline struct th_exec_event *th_exec_begin(u32 at, s32 ret, u32 flags)
{
    u32 zero = 0;
    struct th_exec_event *ev = th_exec_scratch.lookup(&zero);
    if (!ev)
        return NULL;
    th_fill_header(&ev->h, TH_KIND_EXEC);
    ev->ret = ret;
    ev->flags = flags;
    ev->at = at;
    ev->ppid = 0;
    ev->euid = 0;
    ev->egid = 0;
    ev->loginuid = 0;
    ev->filename_len = 0;
    ev->argv_len = 0;
    ev->cwd_len = 0;
    ev->exe_len = 0;
    ev->cwd_flags = TH_PATH_NO_LAYOUT;
    ev->exe_flags = TH_PATH_NO_LAYOUT;
    ev->_pad0 = 0;
    return ev;
}

/* Who the task is, through the BTF offsets: parent, effective ids, login
 * uid. Returns the task (0 with enrichment off: nothing read, marked). */
static __always_inline u64 th_exec_identity(struct th_exec_event *ev)
{
#if TH_LAYOUT
    if (th_enriched()) {
        u64 task = th_current_task();
        u64 cred = th_kptr(task, TH_OFF_TASK_STRUCT_REAL_CRED);
        ev->ppid = th_task_ppid(task);
        ev->euid = th_ku32(cred, TH_OFF_CRED_EUID);
        ev->egid = th_ku32(cred, TH_OFF_CRED_EGID);
        ev->loginuid = th_ku32(task, TH_OFF_TASK_STRUCT_LOGINUID);
        /* Until a walk fills them (a failed exec has none). */
        ev->cwd_flags = TH_PATH_NO_BASE;
        ev->exe_flags = TH_PATH_NO_BASE;
        return task;
    }
#endif
    ev->flags |= TH_EXEC_NO_LAYOUT;
    return 0;
}

/* Send the record: its fixed part and the used part of data. */
static __always_inline void th_exec_send(struct th_exec_event *ev)
{
    u64 used = (u64)ev->argv_len + ev->filename_len + ev->cwd_len + ev->exe_len;
    TH_BOUND(used, TH_EXEC_DATA);
    th_count(TH_KIND_EXEC,
             th_events.ringbuf_output(ev, TH_EXEC_FIXED + used, th_submit_flags()) != 0);
}

/* The filename from user memory (a failed exec: the old image is still
 * there, and the kernel has read it), after argv. */
static __always_inline void th_exec_user_filename(struct th_exec_event *ev, u64 filename)
{
    u64 pos = ev->argv_len;
    TH_BOUND(pos, TH_ARGV_BYTES);
    int n = bpf_probe_read_user_str(ev->data + pos, TH_PATH_MAX, (const void *)filename);
    if (n <= 0) {
        ev->flags |= TH_EXEC_FILENAME_UNREADABLE;
        return;
    }
    if (n >= TH_PATH_MAX)
        ev->flags |= TH_EXEC_FILENAME_CUT;
    ev->filename_len = (n - 1) & (TH_PATH_MAX - 1);
}

static __always_inline int th_exec_enter(const char *filename,
                                         const char *const *argv, u32 at)
{
    struct th_exec_slot *slot =
        th_exec_pending.task_storage_get(TH_CURRENT_TASK(), 0, TH_SLOT_CREATE);
    if (!slot) {
        th_count(TH_KIND_EXEC, 1); /* no memory to remember it: lost */
        return 0;
    }
    slot->at = at;
    slot->flags = 0;
    slot->argv_len = 0;
    slot->filename = (u64)filename;
    slot->argv = (u64)argv;
    if (!th_enriched()) {
        /* The new image's argument area will be out of reach: read argv
         * now, as well as it can be read. */
        slot->flags = TH_EXEC_ARGV_AT_ENTRY;
        slot->argv_len = th_exec_read_argv(slot->args, argv, &slot->flags);
    }
    slot->active = TH_EXEC_PENDING;
    return 0;
}

static __always_inline int th_exec_exit(long ret)
{
    struct th_exec_slot *slot = th_exec_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!slot || !slot->active)
        return 0;
    u32 state = slot->active;
    slot->active = 0;
#ifdef TH_PROBE_EXEC_EXIT
    if (ret == 0) {
        /* exec killed the process's other threads with SIGKILL: that is not
         * how the process will end. */
        u32 pid = bpf_get_current_pid_tgid() >> 32;
        th_exit_pending.delete(&pid);
    }
#endif
    if (state == TH_EXEC_SENT)
        return 0; /* sched_process_exec recorded it */
    if (ret == 0) {
        /* Succeeded, yet the image probe did not see it (not attached):
         * the old image's strings are gone. Recorded, marked. */
        struct th_exec_event *ev = th_exec_begin(slot->at, 0, TH_EXEC_NO_IMAGE);
        if (!ev) {
            th_count(TH_KIND_EXEC, 1);
            return 0;
        }
        th_exec_identity(ev);
        th_exec_send(ev);
        return 0;
    }
    /* A failed exec: the old image is still there, read it now. */
    struct th_exec_event *ev =
        th_exec_begin(slot->at, (s32)ret, (slot->flags & ~TH_EXEC_ARGV_AT_ENTRY) |
                                              TH_EXEC_FAILED_NO_PATHS);
    if (!ev) {
        th_count(TH_KIND_EXEC, 1);
        return 0;
    }
    th_exec_identity(ev);
    if (slot->flags & TH_EXEC_ARGV_AT_ENTRY) {
        u64 len = slot->argv_len;
        TH_BOUND(len, TH_ARGV_BYTES);
        bpf_probe_read_kernel(ev->data, len, slot->args);
        ev->argv_len = len;
    } else {
        ev->argv_len = th_exec_read_argv(ev->data, (const char *const *)slot->argv, &ev->flags);
    }
    th_exec_user_filename(ev, slot->filename);
    th_exec_send(ev);
    return 0;
}
#endif

#if defined(TH_PROBE_EXEC_IMAGE)
#if TH_LAYOUT
/* Copy a walk's result to data[pos ..), its length into *len. */
static __always_inline void th_exec_put_path(struct th_exec_event *ev, u64 pos, u32 slot,
                                             struct th_path_result *res, u32 *len)
{
    *len = 0;
    struct th_path_scratch *scratch = th_path_bufs.lookup(&slot);
    if (!scratch)
        return;
    u64 n = res->len;
    u64 start = res->start & (TH_PATH_MAX - 1);
    TH_BOUND(n, TH_PATH_MAX);
    if (pos > TH_ARGV_BYTES + 2 * TH_PATH_MAX)
        return;
    TH_BOUND(pos, TH_ARGV_BYTES + 2 * TH_PATH_MAX);
    if (bpf_probe_read_kernel(ev->data + pos, n, scratch->buf + start))
        return;
    *len = n;
}

/* The executable's path, and whether it has a name on any filesystem.
 * Everything but the walk comes first: code after a walk is verified once
 * per way the walk can end. */
static __always_inline void th_exec_exe(struct th_exec_event *ev, u64 task)
{
    u64 exe = th_kptr(th_kptr(task, TH_OFF_TASK_STRUCT_MM), TH_OFF_MM_STRUCT_EXE_FILE);
    if (!exe) {
        ev->exe_flags = TH_PATH_NO_BASE;
        return;
    }
#ifdef TH_HAVE_INODE_I_NLINK
    u64 inode = th_kptr(exe, TH_OFF_FILE_F_INODE);
    if (inode && th_ku32(inode, TH_OFF_INODE_I_NLINK) == 0)
        ev->flags |= TH_EXEC_EXE_UNLINKED;
#endif
    char name[6] = {};
    u64 dentry = th_kptr(exe + TH_OFF_FILE_F_PATH, TH_OFF_PATH_DENTRY);
    u64 text = th_kptr(dentry, TH_OFF_DENTRY_D_NAME_NAME);
    if (text && !bpf_probe_read_kernel(name, sizeof(name), (const void *)text) &&
        name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 'f' &&
        name[4] == 'd' && name[5] == ':') {
        /* A memfd is on no mount a process can reach: a walk would end at
         * once, at "/". Its own name ("memfd:<name>") says more; the flag
         * says it is no path. */
        ev->flags |= TH_EXEC_EXE_MEMFD;
        ev->exe_flags = TH_PATH_UNREACHABLE;
        u64 pos = ev->argv_len + ev->filename_len + ev->cwd_len;
        TH_BOUND(pos, TH_ARGV_BYTES + 2 * TH_PATH_MAX);
        long n = bpf_probe_read_kernel_str(ev->data + pos, TH_NAME_MAX + 1, (const void *)text);
        if (n > 1)
            ev->exe_len = (n - 1) & TH_NAME_MAX;
        return;
    }
    struct th_path_result res = {};
    th_walk_struct_path(exe + TH_OFF_FILE_F_PATH, 1, &res);
    ev->exe_flags = res.flags;
    th_exec_put_path(ev, ev->argv_len + ev->filename_len + ev->cwd_len, 1, &res, &ev->exe_len);
}
#endif

/* The new image is in place: the filename the kernel used (the tracepoint's)
 * and the argument area the kernel has just copied into the new mm are
 * resident, whatever the old image had touched. The record of the exec is
 * sent from here; the syscall's exit only clears the slot. */
int th_sched_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct th_exec_slot *slot = th_exec_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!slot || slot->active != TH_EXEC_PENDING)
        return 0; /* not an exec a traced syscall started */
    slot->active = TH_EXEC_SENT;
    struct th_exec_event *ev = th_exec_begin(slot->at, 0, slot->flags);
    if (!ev) {
        th_count(TH_KIND_EXEC, 1);
        return 0;
    }
    u64 task = th_exec_identity(ev);
    (void)task;
    if (slot->flags & TH_EXEC_ARGV_AT_ENTRY) {
        u64 len = slot->argv_len;
        TH_BOUND(len, TH_ARGV_BYTES);
        bpf_probe_read_kernel(ev->data, len, slot->args);
        ev->argv_len = len;
    }
#if TH_LAYOUT
    if (task) {
        u64 mm = th_kptr(task, TH_OFF_TASK_STRUCT_MM);
        u64 start = th_kptr(mm, TH_OFF_MM_STRUCT_ARG_START);
        u64 end = th_kptr(mm, TH_OFF_MM_STRUCT_ARG_END);
        u64 n = end > start ? end - start : 0;
        if (n > TH_ARGV_BYTES)
            ev->flags |= TH_EXEC_ARGV_TRUNCATED;
        TH_BOUND(n, TH_ARGV_BYTES);
        if (!mm || bpf_probe_read_user(ev->data, n, (const void *)start)) {
            ev->flags |= TH_EXEC_ARGV_UNREADABLE;
            n = 0;
        }
        ev->argv_len = n;
    }
#endif
    /* The filename, after argv: __data_loc is (length << 16 | offset). */
    u32 loc = args->data_loc_filename;
    u64 pos = ev->argv_len;
    TH_BOUND(pos, TH_ARGV_BYTES);
    int n = bpf_probe_read_kernel_str(ev->data + pos, TH_PATH_MAX,
                                      (const char *)args + (loc & 0xffff));
    if (n <= 0) {
        ev->flags |= TH_EXEC_FILENAME_UNREADABLE;
    } else {
        if ((loc >> 16) > TH_PATH_MAX)
            ev->flags |= TH_EXEC_FILENAME_CUT;
        ev->filename_len = (n - 1) & (TH_PATH_MAX - 1);
    }
#if TH_LAYOUT
    if (task) {
        struct th_path_result cwd = {};
        th_walk_cwd(0, &cwd);
        ev->cwd_flags = cwd.flags;
        th_exec_put_path(ev, ev->argv_len + ev->filename_len, 0, &cwd, &ev->cwd_len);
        th_exec_exe(ev, task);
    }
#endif
    th_exec_send(ev);
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
