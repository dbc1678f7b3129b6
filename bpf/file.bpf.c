/* SPDX-License-Identifier: Apache-2.0 */
/*
 * file.bpf.c: file operations. open/openat/openat2/creat, unlink/unlinkat/
 * rmdir, rename/renameat/renameat2, chmod/fchmodat/fchmodat2/fchmod, mkdir/
 * mkdirat, link/linkat, symlink/symlinkat, truncate/ftruncate, chown/lchown/
 * fchownat/fchown. An operation on an open file (fchmod, ftruncate, fchown)
 * has no path: its fd is in dfd.
 *
 * x86_64 glibc still issues the legacy syscalls (rename(), mkdir(), chmod(),
 * unlink() and creat() each have their own), so each family traces all of
 * its members. Arguments are saved at entry; paths are read at exit from the
 * saved pointers, into the ring-buffer record itself. Every handler is a raw
 * tracepoint program tail-called by dispatch.bpf.c, which has already
 * checked that the process is traced.
 */
#include "tracehound.h"

struct th_file_args {
    u64 path;
    u64 path2;
    s32 dfd;
    s32 dfd2;
    u32 flags;
    u32 mode;
    u32 owner;
    u32 group;
    u32 op;
    u32 active;       /* set at entry, cleared at exit */
};

BPF_TASK_STORAGE(th_file_pending, struct th_file_args);

static __always_inline int th_file_enter(struct th_file_args *a)
{
    struct th_file_args *slot =
        th_file_pending.task_storage_get(TH_CURRENT_TASK(), 0, TH_SLOT_CREATE);
    if (!slot) {
        th_count(TH_KIND_FILE, 1); /* no memory to remember it: lost */
        return 0;
    }
    *slot = *a;
    slot->active = 1;
    return 0;
}

/* nr: the syscall number, a constant the loader compiles in for each exit
 * handler (TH_NR_<handler>: the slot it fills), rather than a second read of
 * the registers. */
static __always_inline int th_file_exit(struct bpf_raw_tracepoint_args *ctx, u32 nr)
{
    struct th_file_args *a = th_file_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!a || !a->active)
        return 0;
    a->active = 0;
    struct th_file_event *ev = th_events.ringbuf_reserve(sizeof(*ev));
    if (!ev) {
        th_count(TH_KIND_FILE, 1);
        return 0;
    }
    th_fill_header(&ev->h, TH_KIND_FILE);
    ev->ret = th_syscall_ret(ctx);
    ev->op = a->op;
    ev->nr = nr;
    ev->dfd = a->dfd;
    ev->dfd2 = a->dfd2;
    ev->flags = a->flags;
    ev->mode = a->mode;
    ev->owner = a->owner;
    ev->group = a->group;
    ev->path[0] = 0;
    ev->path2[0] = 0;
    if (a->path)
        bpf_probe_read_user_str(ev->path, sizeof(ev->path), (void *)a->path);
    if (a->path2)
        bpf_probe_read_user_str(ev->path2, sizeof(ev->path2), (void *)a->path2);
    th_events.ringbuf_submit(ev, th_submit_flags());
    th_count(TH_KIND_FILE, 0);
    return 0;
}

/*
 * TH_FILE_SYSCALL(syscall, op, dfd, path, dfd2, path2, flags, mode, owner, group)
 * defines th_enter_<syscall> and th_exit_<syscall>. The argument expressions
 * may use A(i), the syscall's i-th argument.
 */
#define A(i) (args[i])
/* The syscall's arguments into args[], or the record counted lost. */
#define TH_FILE_ARGS()                                                        \
    u64 args[6];                                                              \
    if (th_syscall_args(ctx, args)) {                                         \
        th_count(TH_KIND_FILE, 1);                                            \
        return 0;                                                             \
    }
#define TH_FILE_SYSCALL(name, OP, DFD, PATH, DFD2, PATH2, FLAGS, MODE, OWNER, GROUP) \
    int th_enter_##name(struct bpf_raw_tracepoint_args *ctx)                  \
    {                                                                         \
        TH_FILE_ARGS();                                                       \
        struct th_file_args a = {};                                           \
        a.op = OP;                                                            \
        a.dfd = (s32)(DFD);                                                   \
        a.path = (u64)(PATH);                                                 \
        a.dfd2 = (s32)(DFD2);                                                 \
        a.path2 = (u64)(PATH2);                                               \
        a.flags = (u32)(FLAGS);                                               \
        a.mode = (u32)(MODE);                                                 \
        a.owner = (u32)(OWNER);                                               \
        a.group = (u32)(GROUP);                                               \
        return th_file_enter(&a);                                             \
    }                                                                         \
    int th_exit_##name(struct bpf_raw_tracepoint_args *ctx)                   \
    {                                                                         \
        return th_file_exit(ctx, TH_NR_th_exit_##name);                       \
    }

#define CWD TH_AT_FDCWD
#define O_CREAT_WRONLY_TRUNC (0100 | 01 | 01000)
#define AT_REMOVEDIR 0x200

#ifdef TH_PROBE_FILE_OPEN
TH_FILE_SYSCALL(open, TH_FILE_OPEN, CWD, A(0), CWD, 0, A(1), A(2), 0, 0)
#endif
#ifdef TH_PROBE_FILE_OPENAT
TH_FILE_SYSCALL(openat, TH_FILE_OPEN, A(0), A(1), CWD, 0, A(2), A(3), 0, 0)
#endif
#ifdef TH_PROBE_FILE_CREAT
TH_FILE_SYSCALL(creat, TH_FILE_OPEN, CWD, A(0), CWD, 0, O_CREAT_WRONLY_TRUNC, A(1), 0, 0)
#endif
#ifdef TH_PROBE_FILE_OPENAT2
/* openat2(dfd, path, struct open_how *how, size): flags and mode are the
 * first two u64s of open_how, read from user memory at entry. */
int th_enter_openat2(struct bpf_raw_tracepoint_args *ctx)
{
    TH_FILE_ARGS();
    struct th_file_args a = {};
    u64 how[2] = {};
    bpf_probe_read_user(&how, sizeof(how), (void *)A(2));
    a.op = TH_FILE_OPEN;
    a.dfd = (s32)A(0);
    a.path = A(1);
    a.dfd2 = CWD;
    a.flags = (u32)how[0];
    a.mode = (u32)how[1];
    return th_file_enter(&a);
}
int th_exit_openat2(struct bpf_raw_tracepoint_args *ctx)
{
    return th_file_exit(ctx, TH_NR_th_exit_openat2);
}
#endif
#ifdef TH_PROBE_FILE_UNLINK
TH_FILE_SYSCALL(unlink, TH_FILE_UNLINK, CWD, A(0), CWD, 0, 0, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_UNLINKAT
TH_FILE_SYSCALL(unlinkat, TH_FILE_UNLINK, A(0), A(1), CWD, 0, A(2), 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_RMDIR
TH_FILE_SYSCALL(rmdir, TH_FILE_UNLINK, CWD, A(0), CWD, 0, AT_REMOVEDIR, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_RENAME
TH_FILE_SYSCALL(rename, TH_FILE_RENAME, CWD, A(0), CWD, A(1), 0, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_RENAMEAT
TH_FILE_SYSCALL(renameat, TH_FILE_RENAME, A(0), A(1), A(2), A(3), 0, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_RENAMEAT2
TH_FILE_SYSCALL(renameat2, TH_FILE_RENAME, A(0), A(1), A(2), A(3), A(4), 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_CHMOD
TH_FILE_SYSCALL(chmod, TH_FILE_CHMOD, CWD, A(0), CWD, 0, 0, A(1), 0, 0)
#endif
#ifdef TH_PROBE_FILE_FCHMODAT
TH_FILE_SYSCALL(fchmodat, TH_FILE_CHMOD, A(0), A(1), CWD, 0, 0, A(2), 0, 0)
#endif
#ifdef TH_PROBE_FILE_FCHMODAT2
TH_FILE_SYSCALL(fchmodat2, TH_FILE_CHMOD, A(0), A(1), CWD, 0, A(3), A(2), 0, 0)
#endif
#ifdef TH_PROBE_FILE_MKDIR
TH_FILE_SYSCALL(mkdir, TH_FILE_MKDIR, CWD, A(0), CWD, 0, 0, A(1), 0, 0)
#endif
#ifdef TH_PROBE_FILE_MKDIRAT
TH_FILE_SYSCALL(mkdirat, TH_FILE_MKDIR, A(0), A(1), CWD, 0, 0, A(2), 0, 0)
#endif
#define AT_SYMLINK_NOFOLLOW 0x100
#define NO_PATH 0
#ifdef TH_PROBE_FILE_FCHMOD
TH_FILE_SYSCALL(fchmod, TH_FILE_CHMOD, A(0), NO_PATH, CWD, 0, 0, A(1), 0, 0)
#endif
#ifdef TH_PROBE_FILE_LINK
TH_FILE_SYSCALL(link, TH_FILE_LINK, CWD, A(0), CWD, A(1), 0, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_LINKAT
TH_FILE_SYSCALL(linkat, TH_FILE_LINK, A(0), A(1), A(2), A(3), A(4), 0, 0, 0)
#endif
/* A symlink's target is text stored in the link, resolved against nothing
 * when it is made: its dfd is the cwd's marker. */
#ifdef TH_PROBE_FILE_SYMLINK
TH_FILE_SYSCALL(symlink, TH_FILE_SYMLINK, CWD, A(0), CWD, A(1), 0, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_SYMLINKAT
TH_FILE_SYSCALL(symlinkat, TH_FILE_SYMLINK, CWD, A(0), A(1), A(2), 0, 0, 0, 0)
#endif
/* The new length is not recorded (a record has no 64-bit field for it). */
#ifdef TH_PROBE_FILE_TRUNCATE
TH_FILE_SYSCALL(truncate, TH_FILE_TRUNCATE, CWD, A(0), CWD, 0, 0, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_FTRUNCATE
TH_FILE_SYSCALL(ftruncate, TH_FILE_TRUNCATE, A(0), NO_PATH, CWD, 0, 0, 0, 0, 0)
#endif
#ifdef TH_PROBE_FILE_CHOWN
TH_FILE_SYSCALL(chown, TH_FILE_CHOWN, CWD, A(0), CWD, 0, 0, 0, A(1), A(2))
#endif
#ifdef TH_PROBE_FILE_LCHOWN
TH_FILE_SYSCALL(lchown, TH_FILE_CHOWN, CWD, A(0), CWD, 0, AT_SYMLINK_NOFOLLOW, 0, A(1), A(2))
#endif
#ifdef TH_PROBE_FILE_FCHOWNAT
TH_FILE_SYSCALL(fchownat, TH_FILE_CHOWN, A(0), A(1), CWD, 0, A(4), 0, A(2), A(3))
#endif
#ifdef TH_PROBE_FILE_FCHOWN
TH_FILE_SYSCALL(fchown, TH_FILE_CHOWN, A(0), NO_PATH, CWD, 0, 0, 0, A(1), A(2))
#endif
