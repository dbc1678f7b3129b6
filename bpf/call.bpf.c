/* SPDX-License-Identifier: Apache-2.0 */
/*
 * call.bpf.c: security-relevant calls that are not file operations, one
 * record each (TH_KIND_CALL): the setuid family and capset, ptrace, mount
 * and umount2, module loading and removal, bpf, unshare and setns, signals
 * sent to another process (kill, tkill, tgkill, rt_sigqueueinfo), and
 * memfd_create.
 *
 * Each handler is a raw tracepoint program tail-called by dispatch.bpf.c
 * (which has checked the process is traced). At entry the first four
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

/* nr: the syscall number, compiled in per exit handler (TH_NR_<handler>). */
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
 * TH_CALL_SYSCALL(syscall, op, str0, str1, str2, peek, keep) defines
 * th_enter_<syscall> and th_exit_<syscall>. The expressions may use A(i),
 * the syscall's i-th argument, and SELF_TGID / SELF_TID; the call is
 * recorded only when keep is true.
 */
#define A(i) (args[i])
#define SELF_TGID ((u32)(bpf_get_current_pid_tgid() >> 32))
#define SELF_TID ((u32)bpf_get_current_pid_tgid())
#define TH_CALL_SYSCALL(name, OP, STR0, STR1, STR2, PEEK, KEEP)                \
    int th_enter_##name(struct bpf_raw_tracepoint_args *ctx)                  \
    {                                                                         \
        u64 args[6];                                                          \
        if (th_syscall_args(ctx, args)) {                                     \
            th_count(TH_KIND_CALL, 1);                                        \
            return 0;                                                         \
        }                                                                     \
        if (!(KEEP))                                                          \
            return 0;                                                         \
        struct th_call_args a = {};                                           \
        a.op = OP;                                                            \
        a.args[0] = A(0);                                                     \
        a.args[1] = A(1);                                                     \
        a.args[2] = A(2);                                                     \
        a.args[3] = A(3);                                                     \
        a.str[0] = (u64)(STR0);                                               \
        a.str[1] = (u64)(STR1);                                               \
        a.str[2] = (u64)(STR2);                                               \
        a.peek = (u64)(PEEK);                                                 \
        return th_call_enter(&a);                                             \
    }                                                                         \
    int th_exit_##name(struct bpf_raw_tracepoint_args *ctx)                   \
    {                                                                         \
        return th_call_exit(ctx, TH_NR_th_exit_##name);                       \
    }

/* Is a signal worth a record: a real one (not 0), to another process. */
#define SIGNAL_TO(target, self, sig) ((int)(sig) != 0 && (u32)(target) != (self))

#ifdef TH_PROBE_CALL_SETUID
TH_CALL_SYSCALL(setuid, TH_CALL_SETUID, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_SETGID
TH_CALL_SYSCALL(setgid, TH_CALL_SETGID, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_SETREUID
TH_CALL_SYSCALL(setreuid, TH_CALL_SETREUID, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_SETREGID
TH_CALL_SYSCALL(setregid, TH_CALL_SETREGID, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_SETRESUID
TH_CALL_SYSCALL(setresuid, TH_CALL_SETRESUID, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_SETRESGID
TH_CALL_SYSCALL(setresgid, TH_CALL_SETRESGID, 0, 0, 0, 0, 1)
#endif
/* capset(hdr, data): args[3] becomes the header {u32 version; s32 pid}. */
#ifdef TH_PROBE_CALL_CAPSET
TH_CALL_SYSCALL(capset, TH_CALL_CAPSET, 0, 0, 0, A(0), 1)
#endif
#ifdef TH_PROBE_CALL_PTRACE
TH_CALL_SYSCALL(ptrace, TH_CALL_PTRACE, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_MOUNT
TH_CALL_SYSCALL(mount, TH_CALL_MOUNT, A(0), A(1), A(2), 0, 1)
#endif
/* umount2(2): SYSCALL_DEFINE2(umount, ...), its tracefs events are umount's. */
#ifdef TH_PROBE_CALL_UMOUNT
TH_CALL_SYSCALL(umount, TH_CALL_UMOUNT, 0, A(0), 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_INIT_MODULE
TH_CALL_SYSCALL(init_module, TH_CALL_INIT_MODULE, 0, A(2), 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_FINIT_MODULE
TH_CALL_SYSCALL(finit_module, TH_CALL_FINIT_MODULE, 0, A(1), 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_DELETE_MODULE
TH_CALL_SYSCALL(delete_module, TH_CALL_DELETE_MODULE, A(0), 0, 0, 0, 1)
#endif
/* bpf(cmd, attr, size): args[3] becomes the attr's first 8 bytes (a
 * BPF_PROG_LOAD's prog_type, a BPF_MAP_CREATE's map_type, in the low half).
 * Only the commands of TH_CALL_BPF_CMDS. */
#define BPF_CMD_RECORDED(cmd) ((u64)(cmd) >= 64 || ((TH_CALL_BPF_CMDS >> ((cmd) & 63)) & 1))
#ifdef TH_PROBE_CALL_BPF
TH_CALL_SYSCALL(bpf, TH_CALL_BPF, 0, 0, 0, A(1), BPF_CMD_RECORDED((u32)A(0)))
#endif
#ifdef TH_PROBE_CALL_UNSHARE
TH_CALL_SYSCALL(unshare, TH_CALL_UNSHARE, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_SETNS
TH_CALL_SYSCALL(setns, TH_CALL_SETNS, 0, 0, 0, 0, 1)
#endif
#ifdef TH_PROBE_CALL_KILL
TH_CALL_SYSCALL(kill, TH_CALL_KILL, 0, 0, 0, 0, SIGNAL_TO(A(0), SELF_TGID, A(1)))
#endif
#ifdef TH_PROBE_CALL_TKILL
TH_CALL_SYSCALL(tkill, TH_CALL_TKILL, 0, 0, 0, 0, SIGNAL_TO(A(0), SELF_TID, A(1)))
#endif
#ifdef TH_PROBE_CALL_TGKILL
TH_CALL_SYSCALL(tgkill, TH_CALL_TGKILL, 0, 0, 0, 0, SIGNAL_TO(A(0), SELF_TGID, A(2)))
#endif
#ifdef TH_PROBE_CALL_RT_SIGQUEUEINFO
TH_CALL_SYSCALL(rt_sigqueueinfo, TH_CALL_RT_SIGQUEUEINFO, 0, 0, 0, 0,
                SIGNAL_TO(A(0), SELF_TGID, A(1)))
#endif
#ifdef TH_PROBE_CALL_MEMFD_CREATE
TH_CALL_SYSCALL(memfd_create, TH_CALL_MEMFD_CREATE, A(0), 0, 0, 0, 1)
#endif
