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
 * its members. Arguments are saved at entry; at exit the handler fills the
 * fixed part of the record and tail-calls th_file_resolve, which reads the
 * paths as passed from the saved pointers and resolves each one's absolute
 * path in the kernel (see th_file_resolve_one), then sends the record.
 * Every handler is a raw tracepoint program tail-called by dispatch.bpf.c,
 * which has already checked that the process is traced.
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
    u32 fd_only;      /* the op names its object by fd alone (fchmod...): path is no name */
    u32 two_paths;    /* the op takes a second path (rename's target) */
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

/*
 * The record is built in a per-CPU map value, not reserved in the ring: it
 * can be 16 KiB (two paths as passed and two resolved, 4096 bytes each) and
 * is usually ~200 bytes, so only the bytes used are sent, with
 * bpf_ringbuf_output. data holds path, path2, abs, abs2 back to back; each
 * is written at an offset masked to a power of two below which the data so
 * far must lie (4096, 8192, 16384), and the slack after the last lets the
 * verifier bound a write of TH_PATH_MAX bytes at any such offset.
 */
#define TH_FILE_DATA (5 * TH_PATH_MAX)
struct th_file_work {
    u64 path;         /* user pointers saved at entry */
    u64 path2;
    u32 stage;        /* 0: first path; 1: the rename target's */
    u32 used;         /* bytes of data filled */
    u32 fd_only;      /* th_file_args.fd_only */
    u32 two_paths;    /* th_file_args.two_paths */
    struct th_file_event ev;
    char data[TH_FILE_DATA];
};
BPF_PERCPU_ARRAY(th_file_work, struct th_file_work, 1);
/* Slot 0: th_file_resolve, the one program that walks paths. Every exit
 * handler tail-calls it (the walk is ~1,500 instructions: inlined into each
 * of the handlers it would multiply the verifier's time and the program
 * size), and it tail-calls itself once for a rename's second path. The
 * compile child fills the slot (agent/capture/probes.py TAIL_PROGRAMS). */
BPF_PROG_ARRAY(th_file_progs, 1);

/* nr: the syscall number, a constant the loader compiles in for each exit
 * handler (TH_NR_<handler>: the slot it fills), rather than a second read of
 * the registers. */
static __always_inline int th_file_exit(struct bpf_raw_tracepoint_args *ctx, u32 nr)
{
    struct th_file_args *a = th_file_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!a || !a->active)
        return 0;
    a->active = 0;
    u32 zero = 0;
    struct th_file_work *w = th_file_work.lookup(&zero);
    if (!w) {
        th_count(TH_KIND_FILE, 1);
        return 0;
    }
    struct th_file_event *ev = &w->ev;
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
    w->path = a->path;
    w->path2 = a->path2;
    w->stage = 0;
    w->used = 0;
    w->fd_only = a->fd_only;
    w->two_paths = a->two_paths;
    th_file_progs.call(ctx, 0);
    th_count(TH_KIND_FILE, 1); /* the resolver is not in its slot: lost, counted */
    return 0;
}

/* Read a path as passed from user memory into data at off (< TH_PATH_MAX);
 * its length, no NUL. */
static __always_inline u32 th_file_read_passed(struct th_file_work *w, u32 off, u64 ptr,
                                               u32 *flags)
{
    *flags = 0;
    if (!ptr)
        return 0;
    long n = bpf_probe_read_user_str(w->data + (off & (TH_PATH_MAX - 1)), TH_PATH_MAX,
                                     (const void *)ptr);
    if (n < 0) {
        *flags = TH_PASSED_UNREADABLE;
        return 0;
    }
    if (n >= TH_PATH_MAX)
        *flags = TH_PASSED_CUT;
    return n > 0 ? (u32)n - 1 : 0;
}

/* Resolve one path of the record into data at w->used: the installed
 * file for an open that succeeded, the fd's file for an fd-only op (no
 * path), nothing for an absolute name, else the base (cwd or the dirfd's
 * file), which user space joins with the name. ONE walk is inlined here. */
static __always_inline void th_file_resolve_one(struct th_file_work *w, int second)
{
    struct th_file_event *ev = &w->ev;
    u32 flags = 0, from = TH_FROM_NONE, len = 0;
    if (!TH_RESOLVE_PATHS) {
        flags = TH_PATH_OFF;
    } else if (!th_enriched()) {
        flags = TH_PATH_NO_LAYOUT;
    } else {
#if TH_LAYOUT
        s32 fd = second ? ev->dfd2 : ev->dfd;
        u64 ptr = second ? w->path2 : w->path;
        u32 plen = second ? ev->path2_len : ev->path_len;
        u32 poff = second ? ev->path_len : 0;
        int walk = 1;
        if (!second && ev->op == TH_FILE_OPEN && ev->ret >= 0) {
            fd = (s32)ev->ret;
            from = TH_FROM_FILE;
        } else if (!second && w->fd_only) {
            from = TH_FROM_FILE; /* fd-only (fchmod...): the fd is the object */
        } else if (!ptr) {
            from = TH_FROM_BASE; /* a NULL name (EFAULT): nothing to join, user space says so */
            walk = 0;
        } else if (plen && w->data[poff & (TH_PATH_MAX - 1)] == '/') {
            from = TH_FROM_NAME;
            walk = 0;
        } else {
            from = TH_FROM_BASE;
        }
        if (walk) {
            u32 zero = 0;
            struct th_path_scratch *scratch = th_path_bufs.lookup(&zero);
            struct th_path_result res = {};
            th_walk_base(fd, 0, &res);
            flags = res.flags;
            len = res.len;
            if (len > TH_PATH_MAX)
                len = TH_PATH_MAX;
            u32 off = w->used;
            if (len && (!scratch ||
                        bpf_probe_read_kernel(w->data + (off & (4 * TH_PATH_MAX - 1)), len,
                                              scratch->buf + (res.start & (TH_PATH_MAX - 1))))) {
                flags |= TH_PATH_UNREADABLE;
                len = 0;
            }
            if (!len)
                from = TH_FROM_NONE;
        }
#endif
    }
    w->used += len;
    if (second) {
        ev->abs2_len = len;
        ev->abs2_flags = flags;
        ev->abs2_from = from;
    } else {
        ev->abs_len = len;
        ev->abs_flags = flags;
        ev->abs_from = from;
    }
}

/* The record's only bytes used, to the ring. */
static __always_inline void th_file_send(struct th_file_work *w)
{
    /* At most 4095 + 4095 + 4096 + 4096 bytes: below 4 * TH_PATH_MAX, so
     * the mask (which the verifier needs to bound the size) cuts nothing. */
    u64 size = sizeof(struct th_file_event) + (w->used & (4 * TH_PATH_MAX - 1));
    if (th_events.ringbuf_output(&w->ev, size, th_submit_flags_sized(size)))
        th_count(TH_KIND_FILE, 1);
    else
        th_count(TH_KIND_FILE, 0);
}

int th_file_resolve(struct bpf_raw_tracepoint_args *ctx)
{
    u32 zero = 0;
    struct th_file_work *w = th_file_work.lookup(&zero);
    if (!w)
        return 0;
    struct th_file_event *ev = &w->ev;
    if (w->stage) {
        th_file_resolve_one(w, 1);
        th_file_send(w);
        return 0;
    }
    u32 flags = 0;
    u32 len = th_file_read_passed(w, 0, w->path, &flags);
    if (!w->path && !w->fd_only)
        flags = TH_PASSED_UNREADABLE; /* a NULL name: the call failed with EFAULT */
    ev->path_len = len;
    ev->path_flags = flags;
    len = th_file_read_passed(w, len, w->path2, &flags);
    if (w->two_paths && !w->path2)
        flags = TH_PASSED_UNREADABLE;
    ev->path2_len = len;
    ev->path2_flags = flags;
    w->used = ev->path_len + len;
    ev->abs2_len = 0;
    ev->abs2_flags = 0;
    ev->abs2_from = TH_FROM_NONE;
    th_file_resolve_one(w, 0);
    if (!w->two_paths) {
        th_file_send(w);
        return 0;
    }
    w->stage = 1;
    th_file_progs.call(ctx, 0);
    th_count(TH_KIND_FILE, 1); /* the tail call failed: lost, counted */
    return 0;
}

/*
 * TH_FILE_SYSCALL(syscall, op, dfd, path, dfd2, path2, flags, mode, owner, group)
 * defines th_enter_<syscall> and th_exit_<syscall>. The argument expressions
 * may use A(i), the syscall's i-th argument. fd-only ops (fchmod, fchown,
 * ftruncate) pass the fd as dfd and 0 as path: the fd's file is resolved
 * as the path. owner/group: -1 for ops that change neither.
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
        a.fd_only = __builtin_constant_p((u64)(PATH)) && (u64)(PATH) == 0;    \
        a.two_paths = !(__builtin_constant_p((u64)(PATH2)) && (u64)(PATH2) == 0); \
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
TH_FILE_SYSCALL(open, TH_FILE_OPEN, CWD, A(0), CWD, 0, A(1), A(2), -1, -1)
#endif
#ifdef TH_PROBE_FILE_OPENAT
TH_FILE_SYSCALL(openat, TH_FILE_OPEN, A(0), A(1), CWD, 0, A(2), A(3), -1, -1)
#endif
#ifdef TH_PROBE_FILE_CREAT
TH_FILE_SYSCALL(creat, TH_FILE_OPEN, CWD, A(0), CWD, 0, O_CREAT_WRONLY_TRUNC, A(1), -1, -1)
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
    a.owner = (u32)-1;
    a.group = (u32)-1;
    return th_file_enter(&a);
}
int th_exit_openat2(struct bpf_raw_tracepoint_args *ctx)
{
    return th_file_exit(ctx, TH_NR_th_exit_openat2);
}
#endif
#ifdef TH_PROBE_FILE_UNLINK
TH_FILE_SYSCALL(unlink, TH_FILE_UNLINK, CWD, A(0), CWD, 0, 0, 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_UNLINKAT
TH_FILE_SYSCALL(unlinkat, TH_FILE_UNLINK, A(0), A(1), CWD, 0, A(2), 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_RMDIR
TH_FILE_SYSCALL(rmdir, TH_FILE_UNLINK, CWD, A(0), CWD, 0, AT_REMOVEDIR, 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_RENAME
TH_FILE_SYSCALL(rename, TH_FILE_RENAME, CWD, A(0), CWD, A(1), 0, 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_RENAMEAT
TH_FILE_SYSCALL(renameat, TH_FILE_RENAME, A(0), A(1), A(2), A(3), 0, 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_RENAMEAT2
TH_FILE_SYSCALL(renameat2, TH_FILE_RENAME, A(0), A(1), A(2), A(3), A(4), 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_CHMOD
TH_FILE_SYSCALL(chmod, TH_FILE_CHMOD, CWD, A(0), CWD, 0, 0, A(1), -1, -1)
#endif
#ifdef TH_PROBE_FILE_FCHMODAT
TH_FILE_SYSCALL(fchmodat, TH_FILE_CHMOD, A(0), A(1), CWD, 0, 0, A(2), -1, -1)
#endif
#ifdef TH_PROBE_FILE_FCHMODAT2
TH_FILE_SYSCALL(fchmodat2, TH_FILE_CHMOD, A(0), A(1), CWD, 0, A(3), A(2), -1, -1)
#endif
#ifdef TH_PROBE_FILE_MKDIR
TH_FILE_SYSCALL(mkdir, TH_FILE_MKDIR, CWD, A(0), CWD, 0, 0, A(1), -1, -1)
#endif
#ifdef TH_PROBE_FILE_MKDIRAT
TH_FILE_SYSCALL(mkdirat, TH_FILE_MKDIR, A(0), A(1), CWD, 0, 0, A(2), -1, -1)
#endif
#define AT_SYMLINK_NOFOLLOW 0x100
#define NO_PATH 0
#ifdef TH_PROBE_FILE_FCHMOD
TH_FILE_SYSCALL(fchmod, TH_FILE_CHMOD, A(0), NO_PATH, CWD, 0, 0, A(1), -1, -1)
#endif
#ifdef TH_PROBE_FILE_LINK
TH_FILE_SYSCALL(link, TH_FILE_LINK, CWD, A(0), CWD, A(1), 0, 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_LINKAT
TH_FILE_SYSCALL(linkat, TH_FILE_LINK, A(0), A(1), A(2), A(3), A(4), 0, -1, -1)
#endif
/* A symlink's target is text stored in the link, resolved against nothing
 * when it is made: its dfd is the cwd's marker. */
#ifdef TH_PROBE_FILE_SYMLINK
TH_FILE_SYSCALL(symlink, TH_FILE_SYMLINK, CWD, A(0), CWD, A(1), 0, 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_SYMLINKAT
TH_FILE_SYSCALL(symlinkat, TH_FILE_SYMLINK, CWD, A(0), A(1), A(2), 0, 0, -1, -1)
#endif
/* The new length is not recorded (a record has no 64-bit field for it). */
#ifdef TH_PROBE_FILE_TRUNCATE
TH_FILE_SYSCALL(truncate, TH_FILE_TRUNCATE, CWD, A(0), CWD, 0, 0, 0, -1, -1)
#endif
#ifdef TH_PROBE_FILE_FTRUNCATE
TH_FILE_SYSCALL(ftruncate, TH_FILE_TRUNCATE, A(0), NO_PATH, CWD, 0, 0, 0, -1, -1)
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
