/* SPDX-License-Identifier: Apache-2.0 */
/*
 * path.bpf.c: reading kernel structs at BTF offsets, and the path walk.
 *
 * Every offset is a TH_OFF_* constant the loader took from the running
 * kernel's BTF (agent/capture/kernel_layout.py); with TH_LAYOUT 0 none of
 * this is compiled and callers mark what they would have filled as not
 * resolved (TH_PATH_NO_LAYOUT). Reads go through bpf_probe_read_kernel: a
 * bad pointer fails the read (the walk marks TH_PATH_UNREADABLE), it never
 * faults.
 *
 * The walk is d_path()'s, from a (dentry, vfsmount) pair up to the
 * process's root: names are written right to left into a scratch buffer,
 * from d_name up the d_parent chain; at a mount's root it crosses to the
 * mountpoint in the parent mount. It takes no rename lock: a rename racing
 * the walk can give a torn path (as Tetragon's walk can). How it ended is in
 * the TH_PATH_* flags, never hidden.
 */
#include "tracehound.h"

/* Bytes of scratch a walk writes into: names land right to left in the
 * first TH_PATH_MAX bytes; the second half is slack that lets the verifier
 * bound a write of up to NAME_MAX bytes at any offset of the first. */
#define TH_PATH_SCRATCH (2 * TH_PATH_MAX)
#define TH_NAME_MAX 255

/* The state of one walk, kept in the map value rather than on the stack:
 * each step reloads it, so the verifier sees the same unknown values at the
 * top of every step and prunes, where values tracked in registers made an
 * unrolled walk of 16 steps exceed its budget (bcc cannot compile the
 * bpf_loop callback that would avoid it: it emits no function relocation). */
struct th_walk {
    u64 dentry;
    u64 vfsmnt;
    u64 mnt;          /* container_of(vfsmnt, struct mount, mnt) */
    u64 root_dentry;
    u64 root_mnt;
    u64 mnt_root;     /* vfsmnt->mnt_root, read once per mount the walk is in */
    u32 pos;          /* the next name ends here, in buf */
    u32 flags;
    u32 done;
    u32 _pad0;
};

struct th_path_scratch {
    struct th_walk w;
    char buf[TH_PATH_SCRATCH];
};
/* One per CPU: a walk runs to completion without sleeping. Programs that
 * walk two paths per record (renames) use slots 0 and 1. */
BPF_PERCPU_ARRAY(th_path_bufs, struct th_path_scratch, 2);

/* Where a walk's result is: th_path_bufs[slot].buf[start .. start + len),
 * no NUL. */
struct th_path_result {
    u32 start;
    u32 len;
    u32 flags; /* TH_PATH_* */
};

#if TH_LAYOUT
static __always_inline u64 th_kptr(u64 base, u32 offset)
{
    u64 value = 0;
    if (base)
        bpf_probe_read_kernel(&value, sizeof(value), (const void *)(base + offset));
    return value;
}

static __always_inline u32 th_ku32(u64 base, u32 offset)
{
    u32 value = 0;
    if (base)
        bpf_probe_read_kernel(&value, sizeof(value), (const void *)(base + offset));
    return value;
}

static __always_inline u64 th_current_task(void)
{
    return (u64)bpf_get_current_task();
}

/* The tgid of the task's real parent (who forked it, or its reaper). */
static __always_inline u32 th_task_ppid(u64 task)
{
    return th_ku32(th_kptr(task, TH_OFF_TASK_STRUCT_REAL_PARENT), TH_OFF_TASK_STRUCT_TGID);
}

#if TH_TYPED
/* The current task as the kernel's BTF types it. A load through it, or
 * through a struct pointer such a load gave, is one instruction the
 * verifier checks against BTF at load time (and a fault reads 0), not a
 * helper call: the fixed chains (task -> files -> fdtable, task -> fs)
 * cost nothing next to the ~35 ns of each bpf_probe_read_kernel. Off
 * (TH_TYPED 0) under the layout test hook, whose deliberately wrong
 * offsets the verifier would refuse before the self-check could. */
#define TH_TLOAD(type, base, off) (*(const type *)((const char *)(base) + (off)))
static __always_inline const char *th_current_typed(void)
{
    return (const char *)bpf_get_current_task_btf();
}
#endif

/* The current task's fs_struct, 0 if none. */
static __always_inline u64 th_current_fs(void)
{
#if TH_TYPED
    return (u64)TH_TLOAD(char *, th_current_typed(), TH_OFF_TASK_STRUCT_FS);
#else
    return th_kptr(th_current_task(), TH_OFF_TASK_STRUCT_FS);
#endif
}

/* The struct file installed at fd in the current task's table, 0 if
 * none. Untyped, the table's bound and array are one 16-byte read where
 * they are its first two words (struct fdtable {max_fds; fd;} on every
 * kernel seen). The array's slot is always a read: BTF types it as a
 * pointer to pointers, which the verifier loads as a number. */
static __always_inline u64 th_current_fd_file(s32 fd)
{
    if (fd < 0)
        return 0;
#if TH_TYPED
    const char *files = TH_TLOAD(char *, th_current_typed(), TH_OFF_TASK_STRUCT_FILES);
    if (!files)
        return 0;
    const char *fdt = TH_TLOAD(char *, files, TH_OFF_FILES_STRUCT_FDT);
    if (!fdt)
        return 0;
    u32 max_fds = TH_TLOAD(u32, fdt, TH_OFF_FDTABLE_MAX_FDS);
    u64 array = TH_TLOAD(u64, fdt, TH_OFF_FDTABLE_FD);
#else
    u64 fdt = th_kptr(th_kptr(th_current_task(), TH_OFF_TASK_STRUCT_FILES), TH_OFF_FILES_STRUCT_FDT);
    if (!fdt)
        return 0;
#if TH_OFF_FDTABLE_MAX_FDS == 0 && TH_OFF_FDTABLE_FD == 8
    u64 table[2] = {};
    if (bpf_probe_read_kernel(table, sizeof(table), (const void *)fdt))
        return 0;
    u32 max_fds = (u32)table[0];
    u64 array = table[1];
#else
    u32 max_fds = th_ku32(fdt, TH_OFF_FDTABLE_MAX_FDS);
    u64 array = th_kptr(fdt, TH_OFF_FDTABLE_FD);
#endif
#endif
    if ((u32)fd >= max_fds)
        return 0;
    return th_kptr(array, (u32)fd * 8);
}

/* A dentry's parent and name: one read of the 32 bytes from d_parent when
 * d_name's length and pointer lie in them (they do on every kernel seen:
 * d_parent, then d_name), else three reads. A walk step makes two reads
 * instead of four. */
#define TH_DENTRY_SPAN(off, size) ((off) >= TH_OFF_DENTRY_D_PARENT && (off) + (size) <= TH_OFF_DENTRY_D_PARENT + 32)
#if TH_DENTRY_SPAN(TH_OFF_DENTRY_D_NAME_LEN, 4) && TH_DENTRY_SPAN(TH_OFF_DENTRY_D_NAME_NAME, 8)
static __always_inline int th_dentry_parent_name(u64 dentry, u64 *parent, u32 *len, u64 *name)
{
    u8 window[32] = {};
    if (bpf_probe_read_kernel(window, sizeof(window), (const void *)(dentry + TH_OFF_DENTRY_D_PARENT)))
        return -1;
    __builtin_memcpy(parent, window, 8);
    __builtin_memcpy(len, window + (TH_OFF_DENTRY_D_NAME_LEN - TH_OFF_DENTRY_D_PARENT), 4);
    __builtin_memcpy(name, window + (TH_OFF_DENTRY_D_NAME_NAME - TH_OFF_DENTRY_D_PARENT), 8);
    return 0;
}
#else
static __always_inline int th_dentry_parent_name(u64 dentry, u64 *parent, u32 *len, u64 *name)
{
    *parent = th_kptr(dentry, TH_OFF_DENTRY_D_PARENT);
    *len = th_ku32(dentry, TH_OFF_DENTRY_D_NAME_LEN);
    *name = th_kptr(dentry, TH_OFF_DENTRY_D_NAME_NAME);
    return 0;
}
#endif

/* A mount's parent mount and the dentry it is mounted on: one 16-byte
 * read where they are adjacent (struct mount {...; mnt_parent;
 * mnt_mountpoint; ...} on every kernel seen), else two. */
static __always_inline void th_mount_parent(u64 mnt, u64 *parent, u64 *mountpoint)
{
#if TH_OFF_MOUNT_MNT_MOUNTPOINT == TH_OFF_MOUNT_MNT_PARENT + 8
    u64 both[2] = {};
    if (mnt)
        bpf_probe_read_kernel(both, sizeof(both), (const void *)(mnt + TH_OFF_MOUNT_MNT_PARENT));
    *parent = both[0];
    *mountpoint = both[1];
#else
    *parent = th_kptr(mnt, TH_OFF_MOUNT_MNT_PARENT);
    *mountpoint = th_kptr(mnt, TH_OFF_MOUNT_MNT_MOUNTPOINT);
#endif
}

/* One step of the walk: one name, or one mount crossed. 1: the walk ended. */
static __always_inline int th_walk_step(struct th_path_scratch *scratch)
{
    struct th_walk *w = &scratch->w;
    if (w->dentry == w->root_dentry && w->vfsmnt == w->root_mnt) {
        w->done = 1;
        return 1;
    }
    if (w->dentry == w->mnt_root) {
        /* The root of this mount: go on from where it is mounted. */
        u64 parent = 0, mountpoint = 0;
        th_mount_parent(w->mnt, &parent, &mountpoint);
        if (!parent) {
            w->flags |= TH_PATH_UNREADABLE;
        } else if (parent == w->mnt) {
            /* The top of the mount tree without meeting the root: the
             * process is chrooted elsewhere, or it is another namespace's. */
            if (w->root_dentry)
                w->flags |= TH_PATH_UNREACHABLE;
        } else {
            w->dentry = mountpoint;
            w->mnt = parent;
            w->vfsmnt = parent + TH_OFF_MOUNT_MNT;
            w->mnt_root = th_kptr(w->vfsmnt, TH_OFF_VFSMOUNT_MNT_ROOT);
            return 0;
        }
        w->done = 1;
        return 1;
    }
    u64 parent = 0, name = 0;
    u32 len = 0;
    if (th_dentry_parent_name(w->dentry, &parent, &len, &name))
        parent = 0;
    if (!parent || parent == w->dentry) {
        /* No parent: unreadable; its own parent: a filesystem root that is
         * no mount's root (a pseudo fs such as pipe:, or a detached tree). */
        w->flags |= parent ? TH_PATH_UNREACHABLE : TH_PATH_UNREADABLE;
        w->done = 1;
        return 1;
    }
    if (len > TH_NAME_MAX || !name) {
        w->flags |= TH_PATH_UNREADABLE;
        w->done = 1;
        return 1;
    }
    u32 pos = w->pos;
    if (len + 1 > pos || pos > TH_PATH_MAX) {
        w->flags |= TH_PATH_CUT;
        w->done = 1;
        return 1;
    }
    pos -= len;
    if (bpf_probe_read_kernel(scratch->buf + (pos & (TH_PATH_MAX - 1)), len & TH_NAME_MAX,
                              (const void *)name)) {
        w->flags |= TH_PATH_UNREADABLE;
        w->done = 1;
        return 1;
    }
    pos -= 1;
    scratch->buf[pos & (TH_PATH_MAX - 1)] = '/';
    w->pos = pos;
    w->dentry = parent;
    return 0;
}

/* Walk (dentry, vfsmnt) up to (root_dentry, root_mnt), the process's root,
 * into th_path_bufs[slot]. The result is absolute ("/" at least). */
static __always_inline void th_path_walk(u64 dentry, u64 vfsmnt, u64 root_dentry, u64 root_mnt,
                                         u32 slot, struct th_path_result *out)
{
    out->start = TH_PATH_MAX;
    out->len = 0;
    out->flags = TH_PATH_UNREADABLE;
    struct th_path_scratch *scratch = th_path_bufs.lookup(&slot);
    if (!scratch)
        return;
    struct th_walk *w = &scratch->w;
    w->dentry = dentry;
    w->vfsmnt = vfsmnt;
    w->mnt = vfsmnt - TH_OFF_MOUNT_MNT;
    w->root_dentry = root_dentry;
    w->root_mnt = root_mnt;
    w->mnt_root = th_kptr(vfsmnt, TH_OFF_VFSMOUNT_MNT_ROOT);
    w->pos = TH_PATH_MAX;
    w->flags = 0;
    w->done = 0;
    if (!dentry || !vfsmnt) {
        w->flags = TH_PATH_UNREADABLE;
        w->done = 1;
    }
#pragma unroll
    for (int i = 0; i < TH_PATH_DEPTH; i++) {
        if (w->done || th_walk_step(scratch))
            break;
    }
    if (!w->done)
        w->flags |= TH_PATH_CUT; /* deeper than TH_PATH_DEPTH */
    u32 pos = w->pos;
    if (pos >= TH_PATH_MAX) {
        pos = TH_PATH_MAX - 1;
        scratch->buf[TH_PATH_MAX - 1] = '/';
    }
    out->start = pos;
    out->len = TH_PATH_MAX - pos;
    out->flags = w->flags;
}

/* A struct path's (mnt, dentry): one 16-byte read when they are its two
 * words (struct path {vfsmount *mnt; dentry *dentry;} on every kernel
 * seen), else two. Zeros if unreadable. */
static __always_inline void th_struct_path(u64 path, u64 *mnt, u64 *dentry)
{
#if TH_OFF_PATH_MNT == 0 && TH_OFF_PATH_DENTRY == 8
    u64 both[2] = {};
    if (path)
        bpf_probe_read_kernel(both, sizeof(both), (const void *)path);
    *mnt = both[0];
    *dentry = both[1];
#else
    *mnt = th_kptr(path, TH_OFF_PATH_MNT);
    *dentry = th_kptr(path, TH_OFF_PATH_DENTRY);
#endif
}

/* The task's root and working directory, from its fs_struct: one 32-byte
 * read where pwd follows root (struct fs_struct {...; root; pwd;} on every
 * kernel seen), else two struct path reads. want_pwd 0 skips pwd. */
static __always_inline void th_fs_paths(u64 fs, u64 *root_mnt, u64 *root_dentry, u64 *pwd_mnt,
                                        u64 *pwd_dentry, int want_pwd)
{
#if TH_TYPED
    /* fs came from a typed load (th_current_fs): its paths are loads too. */
    const char *typed = (const char *)fs;
    *root_mnt = TH_TLOAD(u64, typed, TH_OFF_FS_STRUCT_ROOT + TH_OFF_PATH_MNT);
    *root_dentry = TH_TLOAD(u64, typed, TH_OFF_FS_STRUCT_ROOT + TH_OFF_PATH_DENTRY);
    if (want_pwd) {
        *pwd_mnt = TH_TLOAD(u64, typed, TH_OFF_FS_STRUCT_PWD + TH_OFF_PATH_MNT);
        *pwd_dentry = TH_TLOAD(u64, typed, TH_OFF_FS_STRUCT_PWD + TH_OFF_PATH_DENTRY);
    }
#else
#if TH_OFF_PATH_MNT == 0 && TH_OFF_PATH_DENTRY == 8 && TH_OFF_FS_STRUCT_PWD == TH_OFF_FS_STRUCT_ROOT + 16
    if (want_pwd) {
        u64 both[4] = {};
        if (fs)
            bpf_probe_read_kernel(both, sizeof(both), (const void *)(fs + TH_OFF_FS_STRUCT_ROOT));
        *root_mnt = both[0];
        *root_dentry = both[1];
        *pwd_mnt = both[2];
        *pwd_dentry = both[3];
        return;
    }
#endif
    th_struct_path(fs ? fs + TH_OFF_FS_STRUCT_ROOT : 0, root_mnt, root_dentry);
    if (want_pwd)
        th_struct_path(fs ? fs + TH_OFF_FS_STRUCT_PWD : 0, pwd_mnt, pwd_dentry);
#endif
}

static __always_inline void th_walk_none(struct th_path_result *out, u32 flags)
{
    out->start = TH_PATH_MAX;
    out->len = 0;
    out->flags = flags;
}

/* Walk a struct path (a file's f_path) up to the current task's root. */
static __always_inline void th_walk_struct_path(u64 path, u32 slot, struct th_path_result *out)
{
    u64 fs = th_current_fs();
    if (!fs) {
        th_walk_none(out, TH_PATH_NO_BASE);
        return;
    }
    u64 root_mnt = 0, root_dentry = 0, unused_mnt = 0, unused_dentry = 0, mnt = 0, dentry = 0;
    th_fs_paths(fs, &root_mnt, &root_dentry, &unused_mnt, &unused_dentry, 0);
    th_struct_path(path, &mnt, &dentry);
    th_path_walk(dentry, mnt, root_dentry, root_mnt, slot, out);
}

/* The base a name given relative to dfd is resolved from, walked: the
 * current task's working directory for AT_FDCWD, else the file open at
 * dfd (for an fd-only op, or an open that installed one, the object
 * itself). TH_PATH_NO_BASE when there is none (no fs, no such fd). */
static __always_inline void th_walk_base(s32 dfd, u32 slot, struct th_path_result *out)
{
    u64 fs = th_current_fs();
    if (!fs) {
        th_walk_none(out, TH_PATH_NO_BASE);
        return;
    }
    u64 root_mnt = 0, root_dentry = 0, mnt = 0, dentry = 0;
    if (dfd == TH_AT_FDCWD) {
        th_fs_paths(fs, &root_mnt, &root_dentry, &mnt, &dentry, 1);
    } else {
        u64 file = th_current_fd_file(dfd);
        if (!file) {
            th_walk_none(out, TH_PATH_NO_BASE);
            return;
        }
        u64 unused_mnt = 0, unused_dentry = 0;
        th_fs_paths(fs, &root_mnt, &root_dentry, &unused_mnt, &unused_dentry, 0);
        th_struct_path(file + TH_OFF_FILE_F_PATH, &mnt, &dentry);
    }
    th_path_walk(dentry, mnt, root_dentry, root_mnt, slot, out);
}

/* The current task's working directory. */
static __always_inline void th_walk_cwd(u32 slot, struct th_path_result *out)
{
    th_walk_base(TH_AT_FDCWD, slot, out);
}

/* The file open at fd in the current task. */
static __always_inline void th_walk_fd(s32 fd, u32 slot, struct th_path_result *out)
{
    if (fd < 0) {
        th_walk_none(out, TH_PATH_NO_BASE);
        return;
    }
    th_walk_base(fd, slot, out);
}
#endif /* TH_LAYOUT */
