/* SPDX-License-Identifier: Apache-2.0 */
/*
 * call.bpf.c: security-relevant calls that are not file operations, one
 * record each (TH_KIND_CALL): the setuid family and capset, ptrace, mount
 * and umount2, module loading and removal, bpf, unshare and setns, signals
 * sent to another process (kill, tkill, tgkill, rt_sigqueueinfo), and
 * memfd_create.
 *
 * Two raw tracepoint programs, th_enter_call and th_exit_call, serve them
 * all, tail-called by dispatch.bpf.c from each call's slot (which has
 * checked the process is traced). At entry the first four
 * arguments and the user pointers of the strings are saved in task storage,
 * with the caller's credentials (ids and capabilities from task->real_cred,
 * at BTF offsets: only while th_enriched(), else marked unresolved); at
 * exit the record is built in the ring buffer, the strings read from the
 * saved pointers, and for the credential-changing calls the credentials
 * read again: what the kernel really set, not what was asked.
 *
 * Signals: a signal of 0 tests whether a process exists and sends nothing,
 * and a signal a process sends to itself is its own business (raise(),
 * abort()): neither is recorded. Those are decided at entry, so a skipped
 * call costs no record and no slot.
 */
#include "tracehound.h"

struct th_call_args {
    u64 args[TH_CALL_ARGS];
    u64 str[3];       /* user pointers of str0..str2, 0: none */
    u64 peek;         /* user pointer whose first 8 bytes become args[3] */
    u64 caps[TH_CALL_CAPS];
    u32 ids[TH_CALL_IDS];
    u32 flags;
    u32 op;
    u32 active;       /* set at entry, cleared at exit */
    u32 _pad0;
};

BPF_TASK_STORAGE(th_call_pending, struct th_call_args);

/* The caller's ids and capabilities from task->real_cred; the
 * TH_CALL_*_UNRESOLVED flags for what could not be read (every read is
 * checked: a failed read must not pass for uid 0). */
static __always_inline u32 th_call_creds(u32 ids[TH_CALL_IDS], u64 caps[TH_CALL_CAPS])
{
    u32 unresolved = TH_CALL_IDS_UNRESOLVED | TH_CALL_CAPS_UNRESOLVED;
#if TH_LAYOUT
    if (!th_enriched())
        return unresolved;
    u64 cred = th_kptr(th_current_task(), TH_OFF_TASK_STRUCT_REAL_CRED);
    if (!cred)
        return unresolved;
    const u32 id_offsets[TH_CALL_IDS] = {
        TH_OFF_CRED_UID, TH_OFF_CRED_EUID, TH_OFF_CRED_SUID,
        TH_OFF_CRED_GID, TH_OFF_CRED_EGID, TH_OFF_CRED_SGID,
    };
    u32 flags = 0;
#pragma unroll
    for (int i = 0; i < TH_CALL_IDS; i++) {
        if (bpf_probe_read_kernel(&ids[i], sizeof(u32), (const void *)(cred + id_offsets[i])))
            flags = TH_CALL_IDS_UNRESOLVED;
    }
#if defined(TH_HAVE_CRED_CAP_EFFECTIVE) && defined(TH_HAVE_CRED_CAP_PERMITTED) && \
    defined(TH_HAVE_CRED_CAP_INHERITABLE)
    const u32 cap_offsets[TH_CALL_CAPS] = {
        TH_OFF_CRED_CAP_EFFECTIVE, TH_OFF_CRED_CAP_PERMITTED, TH_OFF_CRED_CAP_INHERITABLE,
    };
#pragma unroll
    for (int i = 0; i < TH_CALL_CAPS; i++) {
        if (bpf_probe_read_kernel(&caps[i], sizeof(u64), (const void *)(cred + cap_offsets[i])))
            flags |= TH_CALL_CAPS_UNRESOLVED;
    }
#else
    flags |= TH_CALL_CAPS_UNRESOLVED;
#endif
    return flags;
#else
    return unresolved;
#endif
}

static __always_inline int th_call_enter(struct th_call_args *a)
{
    struct th_call_args *slot =
        th_call_pending.task_storage_get(TH_CURRENT_TASK(), 0, TH_SLOT_CREATE);
    if (!slot) {
        th_count(TH_KIND_CALL, 1); /* no memory to remember it: lost */
        return 0;
    }
    a->flags = th_call_creds(a->ids, a->caps);
    *slot = *a;
    slot->active = 1;
    return 0;
}

/* A user string into a record field, or the field empty and the flag set. */
#define TH_CALL_STR(ev, field, ptr, flag)                                     \
    do {                                                                      \
        (ev)->field[0] = 0;                                                   \
        if ((ptr) && bpf_probe_read_user_str((ev)->field, sizeof((ev)->field), \
                                             (void *)(ptr)) < 0) {            \
            (ev)->field[0] = 0;                                               \
            (ev)->flags |= (flag);                                            \
        }                                                                     \
    } while (0)

/* nr: the syscall number. */
static __always_inline int th_call_exit(struct bpf_raw_tracepoint_args *ctx, u32 nr)
{
    struct th_call_args *a = th_call_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!a || !a->active)
        return 0;
    a->active = 0;
    struct th_call_event *ev = th_events.ringbuf_reserve(sizeof(*ev));
    if (!ev) {
        th_count(TH_KIND_CALL, 1);
        return 0;
    }
    th_fill_header(&ev->h, TH_KIND_CALL);
    ev->ret = th_syscall_ret(ctx);
    ev->op = a->op;
    ev->nr = nr;
    ev->flags = a->flags;
    ev->_pad0 = 0;
#pragma unroll
    for (int i = 0; i < TH_CALL_ARGS; i++)
        ev->args[i] = a->args[i];
#pragma unroll
    for (int i = 0; i < TH_CALL_IDS; i++) {
        ev->ids_before[i] = a->ids[i];
        ev->ids_after[i] = 0;
    }
#pragma unroll
    for (int i = 0; i < TH_CALL_CAPS; i++) {
        ev->caps_before[i] = a->caps[i];
        ev->caps_after[i] = 0;
    }
    if (a->op <= TH_CALL_LAST_CREDS) {
        u32 unresolved = th_call_creds(ev->ids_after, ev->caps_after);
        ev->flags |= unresolved;
    }
    if (a->peek) {
        u64 peeked = 0;
        if (bpf_probe_read_user(&peeked, sizeof(peeked), (void *)a->peek))
            ev->flags |= TH_CALL_PEEK_UNREADABLE;
        ev->args[3] = peeked;
    }
    TH_CALL_STR(ev, str0, a->str[0], TH_CALL_STR0_UNREADABLE);
    TH_CALL_STR(ev, str1, a->str[1], TH_CALL_STR1_UNREADABLE);
    TH_CALL_STR(ev, str2, a->str[2], TH_CALL_STR2_UNREADABLE);
    th_events.ringbuf_submit(ev, th_submit_flags());
    th_count(TH_KIND_CALL, 0);
    return 0;
}

/*
 * One program per direction serves every call (each a dispatch slot of its
 * own, each its own probe): 21 syscalls would otherwise be 42 programs to
 * compile, verify and load at every start. The op comes from the syscall
 * number; which strings to read, which argument points to the 8 bytes of
 * args[3], and whether the call is worth a record, from the op.
 */
#define SELF_TGID ((u32)(bpf_get_current_pid_tgid() >> 32))
#define SELF_TID ((u32)bpf_get_current_pid_tgid())
/* Is a signal worth a record: a real one (not 0), to another process. */
#define SIGNAL_TO(target, self, sig) ((int)(sig) != 0 && (u32)(target) != (self))
/* Is a bpf(2) command one of TH_CALL_BPF_CMDS. */
#define BPF_CMD_RECORDED(cmd) ((u64)(cmd) >= 64 || ((TH_CALL_BPF_CMDS >> ((cmd) & 63)) & 1))

/* The op of each x86_64 syscall number served here (the numbers of
 * agent/capture/dispatch.py; tests/test_calls.py holds the two equal), for
 * the probes planned; 0: none (no slot of this program). umount2 is 166. */
static __always_inline u32 th_call_op(long nr)
{
    switch (nr) {
#ifdef TH_PROBE_CALL_SETUID
    case 105: return TH_CALL_SETUID;
#endif
#ifdef TH_PROBE_CALL_SETGID
    case 106: return TH_CALL_SETGID;
#endif
#ifdef TH_PROBE_CALL_SETREUID
    case 113: return TH_CALL_SETREUID;
#endif
#ifdef TH_PROBE_CALL_SETREGID
    case 114: return TH_CALL_SETREGID;
#endif
#ifdef TH_PROBE_CALL_SETRESUID
    case 117: return TH_CALL_SETRESUID;
#endif
#ifdef TH_PROBE_CALL_SETRESGID
    case 119: return TH_CALL_SETRESGID;
#endif
#ifdef TH_PROBE_CALL_CAPSET
    case 126: return TH_CALL_CAPSET;
#endif
#ifdef TH_PROBE_CALL_PTRACE
    case 101: return TH_CALL_PTRACE;
#endif
#ifdef TH_PROBE_CALL_MOUNT
    case 165: return TH_CALL_MOUNT;
#endif
#ifdef TH_PROBE_CALL_UMOUNT
    case 166: return TH_CALL_UMOUNT;
#endif
#ifdef TH_PROBE_CALL_INIT_MODULE
    case 175: return TH_CALL_INIT_MODULE;
#endif
#ifdef TH_PROBE_CALL_FINIT_MODULE
    case 313: return TH_CALL_FINIT_MODULE;
#endif
#ifdef TH_PROBE_CALL_DELETE_MODULE
    case 176: return TH_CALL_DELETE_MODULE;
#endif
#ifdef TH_PROBE_CALL_BPF
    case 321: return TH_CALL_BPF;
#endif
#ifdef TH_PROBE_CALL_UNSHARE
    case 272: return TH_CALL_UNSHARE;
#endif
#ifdef TH_PROBE_CALL_SETNS
    case 308: return TH_CALL_SETNS;
#endif
#ifdef TH_PROBE_CALL_KILL
    case 62: return TH_CALL_KILL;
#endif
#ifdef TH_PROBE_CALL_TKILL
    case 200: return TH_CALL_TKILL;
#endif
#ifdef TH_PROBE_CALL_TGKILL
    case 234: return TH_CALL_TGKILL;
#endif
#ifdef TH_PROBE_CALL_RT_SIGQUEUEINFO
    case 129: return TH_CALL_RT_SIGQUEUEINFO;
#endif
#ifdef TH_PROBE_CALL_MEMFD_CREATE
    case 319: return TH_CALL_MEMFD_CREATE;
#endif
    }
    return 0;
}

int th_enter_call(struct bpf_raw_tracepoint_args *ctx)
{
    u64 args[6];
    if (th_syscall_args(ctx, args)) {
        th_count(TH_KIND_CALL, 1);
        return 0;
    }
    u32 op = th_call_op((long)ctx->args[1]);
    if (!op)
        return 0;
    struct th_call_args a = {};
    a.op = op;
    a.args[0] = args[0];
    a.args[1] = args[1];
    a.args[2] = args[2];
    a.args[3] = args[3];
    switch (op) {
    case TH_CALL_CAPSET: /* capset(hdr, data): args[3] becomes {u32 version; s32 pid} */
        a.peek = args[0];
        break;
    case TH_CALL_BPF: /* bpf(cmd, attr, size): args[3] becomes the attr's first 8 bytes */
        if (!BPF_CMD_RECORDED((u32)args[0]))
            return 0;
        a.peek = args[1];
        break;
    case TH_CALL_MOUNT: /* mount(source, target, fstype, flags, data) */
        a.str[0] = args[0];
        a.str[1] = args[1];
        a.str[2] = args[2];
        break;
    case TH_CALL_UMOUNT: /* umount2(target, flags) */
        a.str[1] = args[0];
        break;
    case TH_CALL_INIT_MODULE: /* init_module(image, len, params) */
        a.str[1] = args[2];
        break;
    case TH_CALL_FINIT_MODULE: /* finit_module(fd, params, flags) */
        a.str[1] = args[1];
        break;
    case TH_CALL_DELETE_MODULE: /* delete_module(name, flags) */
    case TH_CALL_MEMFD_CREATE:  /* memfd_create(name, flags) */
        a.str[0] = args[0];
        break;
    case TH_CALL_KILL:            /* kill(pid, sig) */
    case TH_CALL_RT_SIGQUEUEINFO: /* rt_sigqueueinfo(tgid, sig, info) */
        if (!SIGNAL_TO(args[0], SELF_TGID, args[1]))
            return 0;
        break;
    case TH_CALL_TKILL: /* tkill(tid, sig) */
        if (!SIGNAL_TO(args[0], SELF_TID, args[1]))
            return 0;
        break;
    case TH_CALL_TGKILL: /* tgkill(tgid, tid, sig) */
        if (!SIGNAL_TO(args[0], SELF_TGID, args[2]))
            return 0;
        break;
    }
    return th_call_enter(&a);
}

int th_exit_call(struct bpf_raw_tracepoint_args *ctx)
{
    return th_call_exit(ctx, (u32)th_syscall_nr(ctx));
}
