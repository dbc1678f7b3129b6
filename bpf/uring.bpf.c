/* SPDX-License-Identifier: Apache-2.0 */
/*
 * uring.bpf.c: io_uring requests. io_uring operations fire no syscall
 * tracepoints (the ring is shared memory; io_uring_enter only says "go"), so
 * an openat or a connect made through a ring is invisible to file.bpf.c and
 * net.bpf.c. Two io_uring tracepoints see them instead:
 *
 *   - io_uring:io_uring_submit_req fires once the request is prepared (its
 *     sqe copied into the io_kiocb, an openat's name already copied into
 *     kernel memory by getname(), a connect's address already copied by
 *     move_addr_to_kernel()): what was asked is read here, from kernel
 *     memory the submitter can no longer change, and kept in th_uring_pending
 *     keyed by the request pointer;
 *   - io_uring:io_uring_complete fires when the result is posted: one record
 *     per completion, the submission's facts plus the result. An openat's
 *     name is freed by then (putname()), which is why it is copied at
 *     submission; the fd it installed is resolved to an absolute path here.
 *
 * The completing task is the submitter, one of its io-wq workers or its
 * SQPOLL thread (all share its file table), or, while the process exits, a
 * kworker (which does not): the fd is only walked when the completing task's
 * file table is the submitter's, else the path is marked TH_PATH_NO_BASE.
 *
 * A completion whose submission was not seen (it failed before the submit
 * tracepoint, e.g. EFAULT copying its name; it was submitted before capture
 * started; or th_uring_pending was full, counted in TH_ERR_URING_PENDING_FULL)
 * is still recorded, marked TH_URING_UNPAIRED, with the completing task's
 * header. So a full table degrades records, it never loses them.
 *
 * Every io_kiocb read is guarded by its TH_HAVE_ (the layout changes often,
 * kernel_layout.URING_FIELDS): a member this kernel lacks leaves that part
 * unread, and with enrichment off (th_enriched()) nothing is read from the
 * request at all (TH_URING_NO_LAYOUT).
 */
#include "tracehound.h"

/* What a submission left for its completion. files: the submitter's file
 * table (task->files), compared, never dereferenced, at completion. */
struct th_uring_pending_op {
    u64 files;
    struct th_uring_event ev;
};

/* A record being built: the struct, then room for the absolute path. */
struct th_uring_scratch {
    struct th_uring_pending_op op;
    char abs[TH_PATH_MAX];
};

/* Opcodes whose request carries an fd (io_uring's opdef needs_file), bit
 * per opcode: readv writev fsync read_fixed write_fixed poll_add
 * sync_file_range sendmsg recvmsg accept connect fallocate read write
 * fadvise send recv epoll_ctl splice tee shutdown msg_ring fsetxattr
 * fgetxattr uring_cmd send_zc sendmsg_zc read_multishot fixed_fd_install
 * ftruncate bind listen. */
#define TH_URING_FILE_OPS                                                     \
    ((1ULL << 1) | (1ULL << 2) | (1ULL << 3) | (1ULL << 4) | (1ULL << 5) |     \
     (1ULL << 6) | (1ULL << 8) | (1ULL << 9) | (1ULL << 10) | (1ULL << 13) |   \
     (1ULL << 16) | (1ULL << 17) | (1ULL << 22) | (1ULL << 23) |               \
     (1ULL << 24) | (1ULL << 26) | (1ULL << 27) | (1ULL << 29) |               \
     (1ULL << 30) | (1ULL << 33) | (1ULL << 34) | (1ULL << 40) |               \
     (1ULL << 41) | (1ULL << 43) | (1ULL << 46) | (1ULL << 47) |               \
     (1ULL << 48) | (1ULL << 49) | (1ULL << 54) | (1ULL << 55) |               \
     (1ULL << 56) | (1ULL << 57))

BPF_HASH(th_uring_pending, u64, struct th_uring_pending_op, TH_URING_PENDING_MAX);
BPF_PERCPU_ARRAY(th_uring_bufs, struct th_uring_scratch, 1);

#if TH_LAYOUT && defined(TH_HAVE_IO_KIOCB_CMD)
/* The op struct lives in the request's first 64 bytes (io_kiocb_to_cmd;
 * the kernel's BUILD_BUG_ONs keep every op's struct within them): one read
 * of that window, then fields out of it at their BTF offsets, instead of a
 * kernel read per field. The masks keep each within the window, aligned. */
#define TH_URING_CMD_BYTES 64
static __always_inline u32 th_win_u32(const u64 *win, u32 off)
{
    u32 value;
    __builtin_memcpy(&value, (const u8 *)win + (off & 60), sizeof(value));
    return value;
}
static __always_inline u64 th_win_u64(const u64 *win, u32 off)
{
    u64 value;
    __builtin_memcpy(&value, (const u8 *)win + (off & 56), sizeof(value));
    return value;
}
#endif

#if TH_LAYOUT && defined(TH_HAVE_IO_KIOCB_CMD) && defined(TH_HAVE_FILENAME_NAME)
/* A struct filename * (getname()'s copy, kernel memory): its name into dst. */
static __always_inline void th_uring_name(u64 filename, char *dst)
{
    u64 name = th_kptr(filename, TH_OFF_FILENAME_NAME);
    if (name)
        bpf_probe_read_kernel_str(dst, TH_PATH_LEN, (const void *)name);
}
#endif

#if TH_LAYOUT
/* What the prepared request says, by opcode. */
static __always_inline void th_uring_read_req(struct th_uring_event *ev, u64 req)
{
#ifdef TH_HAVE_IO_KIOCB_CQE_FD
    /* The request's fd is only stored (in cqe.fd) for opcodes that need a
     * file; for the others that slot holds whatever the recycled request
     * held last, so it is not read. */
    if (ev->opcode < 64 && ((TH_URING_FILE_OPS >> ev->opcode) & 1))
        ev->fd = (s32)th_ku32(req, TH_OFF_IO_KIOCB_CQE_FD);
#endif
#ifdef TH_HAVE_IO_KIOCB_CMD
    u32 op = ev->opcode;
    u64 win[TH_URING_CMD_BYTES / 8] = {};
    if (op == TH_IORING_OP_OPENAT || op == TH_IORING_OP_OPENAT2 || op == TH_IORING_OP_CONNECT ||
        (op >= TH_IORING_OP_RENAMEAT && op <= TH_IORING_OP_LINKAT))
        bpf_probe_read_kernel(win, sizeof(win), (const void *)(req + TH_OFF_IO_KIOCB_CMD));
    if (op == TH_IORING_OP_OPENAT || op == TH_IORING_OP_OPENAT2) {
#ifdef TH_HAVE_IO_OPEN_DFD
        ev->dfd = (s32)th_win_u32(win, TH_OFF_IO_OPEN_DFD);
#endif
#ifdef TH_HAVE_IO_OPEN_HOW_FLAGS
        ev->op_flags = th_win_u64(win, TH_OFF_IO_OPEN_HOW_FLAGS);
#endif
#ifdef TH_HAVE_IO_OPEN_HOW_MODE
        ev->mode = (u32)th_win_u64(win, TH_OFF_IO_OPEN_HOW_MODE);
#endif
#ifdef TH_HAVE_IO_OPEN_FILE_SLOT
        if (th_win_u32(win, TH_OFF_IO_OPEN_FILE_SLOT))
            ev->flags |= TH_URING_DIRECT;
#endif
#if defined(TH_HAVE_IO_OPEN_FILENAME) && defined(TH_HAVE_FILENAME_NAME)
        th_uring_name(th_win_u64(win, TH_OFF_IO_OPEN_FILENAME), ev->path);
#endif
    } else if (op == TH_IORING_OP_UNLINKAT) {
#ifdef TH_HAVE_IO_UNLINK_DFD
        ev->dfd = (s32)th_win_u32(win, TH_OFF_IO_UNLINK_DFD);
#endif
#ifdef TH_HAVE_IO_UNLINK_FLAGS
        ev->op_flags = th_win_u32(win, TH_OFF_IO_UNLINK_FLAGS);
#endif
#if defined(TH_HAVE_IO_UNLINK_FILENAME) && defined(TH_HAVE_FILENAME_NAME)
        th_uring_name(th_win_u64(win, TH_OFF_IO_UNLINK_FILENAME), ev->path);
#endif
    } else if (op == TH_IORING_OP_MKDIRAT) {
#ifdef TH_HAVE_IO_MKDIR_DFD
        ev->dfd = (s32)th_win_u32(win, TH_OFF_IO_MKDIR_DFD);
#endif
#ifdef TH_HAVE_IO_MKDIR_MODE
        ev->mode = th_win_u32(win, TH_OFF_IO_MKDIR_MODE) & 0xffff;
#endif
#if defined(TH_HAVE_IO_MKDIR_FILENAME) && defined(TH_HAVE_FILENAME_NAME)
        th_uring_name(th_win_u64(win, TH_OFF_IO_MKDIR_FILENAME), ev->path);
#endif
    } else if (op == TH_IORING_OP_RENAMEAT) {
#ifdef TH_HAVE_IO_RENAME_OLD_DFD
        ev->dfd = (s32)th_win_u32(win, TH_OFF_IO_RENAME_OLD_DFD);
#endif
#ifdef TH_HAVE_IO_RENAME_NEW_DFD
        ev->dfd2 = (s32)th_win_u32(win, TH_OFF_IO_RENAME_NEW_DFD);
#endif
#ifdef TH_HAVE_IO_RENAME_FLAGS
        ev->op_flags = th_win_u32(win, TH_OFF_IO_RENAME_FLAGS);
#endif
#if defined(TH_HAVE_IO_RENAME_OLDPATH) && defined(TH_HAVE_FILENAME_NAME)
        th_uring_name(th_win_u64(win, TH_OFF_IO_RENAME_OLDPATH), ev->path);
#endif
#if defined(TH_HAVE_IO_RENAME_NEWPATH) && defined(TH_HAVE_FILENAME_NAME)
        th_uring_name(th_win_u64(win, TH_OFF_IO_RENAME_NEWPATH), ev->path2);
#endif
    } else if (op == TH_IORING_OP_LINKAT || op == TH_IORING_OP_SYMLINKAT) {
#ifdef TH_HAVE_IO_LINK_OLD_DFD
        ev->dfd = (s32)th_win_u32(win, TH_OFF_IO_LINK_OLD_DFD);
#endif
#ifdef TH_HAVE_IO_LINK_NEW_DFD
        ev->dfd2 = (s32)th_win_u32(win, TH_OFF_IO_LINK_NEW_DFD);
#endif
#ifdef TH_HAVE_IO_LINK_FLAGS
        ev->op_flags = th_win_u32(win, TH_OFF_IO_LINK_FLAGS);
#endif
#if defined(TH_HAVE_IO_LINK_OLDPATH) && defined(TH_HAVE_FILENAME_NAME)
        th_uring_name(th_win_u64(win, TH_OFF_IO_LINK_OLDPATH), ev->path);
#endif
#if defined(TH_HAVE_IO_LINK_NEWPATH) && defined(TH_HAVE_FILENAME_NAME)
        th_uring_name(th_win_u64(win, TH_OFF_IO_LINK_NEWPATH), ev->path2);
#endif
    }
#if defined(TH_HAVE_IO_CONNECT_ADDR) && defined(TH_HAVE_IO_CONNECT_ADDR_LEN)
    /* A connect's address: prep's kernel copy sits in the async data, but
     * where in it changed within stable kernels (a msghdr's addr, then a
     * bare sockaddr_storage) without BTF telling, so it is read from the
     * caller's buffer instead, as net.bpf.c reads connect(2)'s (the
     * submitting task is the caller, or its SQPOLL thread, same mm). */
    if (op == TH_IORING_OP_CONNECT) {
        u64 uaddr = th_win_u64(win, TH_OFF_IO_CONNECT_ADDR);
        u32 ulen = th_win_u32(win, TH_OFF_IO_CONNECT_ADDR_LEN);
        if (ulen > TH_SOCKADDR_LEN)
            ulen = TH_SOCKADDR_LEN;
        if (uaddr && ulen) {
            if (bpf_probe_read_user(ev->sockaddr, sizeof(ev->sockaddr), (void *)uaddr) == 0)
                ev->addrlen = ulen;
            else if (bpf_probe_read_user(ev->sockaddr, 28, (void *)uaddr) == 0)
                ev->addrlen = ulen < 28 ? ulen : 28;
        }
    }
#endif
#if defined(TH_HAVE_IO_KIOCB_ASYNC_DATA) && defined(TH_HAVE_IO_ASYNC_MSGHDR_ADDR)
    /* A send's destination, as prep copied it into the request's async
     * data: only when the msghdr's name points at that copy (else it names
     * none). */
    u32 len = 0;
    u64 async = 0;
#if defined(TH_HAVE_IO_ASYNC_MSGHDR_MSG_MSG_NAME) && defined(TH_HAVE_IO_ASYNC_MSGHDR_MSG_MSG_NAMELEN)
    if (op == TH_IORING_OP_SENDMSG || op == TH_IORING_OP_SEND || op == TH_IORING_OP_SEND_ZC ||
        op == TH_IORING_OP_SENDMSG_ZC) {
        u64 msg_async = th_kptr(req, TH_OFF_IO_KIOCB_ASYNC_DATA);
        if (msg_async &&
            th_kptr(msg_async, TH_OFF_IO_ASYNC_MSGHDR_MSG_MSG_NAME) ==
                msg_async + TH_OFF_IO_ASYNC_MSGHDR_ADDR) {
            async = msg_async;
            len = th_ku32(msg_async, TH_OFF_IO_ASYNC_MSGHDR_MSG_MSG_NAMELEN);
        }
    }
#endif
    if (async && len) {
        if (len > TH_SOCKADDR_LEN)
            len = TH_SOCKADDR_LEN;
        if (bpf_probe_read_kernel(ev->sockaddr, sizeof(ev->sockaddr),
                                  (const void *)(async + TH_OFF_IO_ASYNC_MSGHDR_ADDR)) == 0)
            ev->addrlen = len;
    }
#endif
#endif /* TH_HAVE_IO_KIOCB_CMD */
}
#endif /* TH_LAYOUT */

static __always_inline void th_uring_blank(struct th_uring_event *ev)
{
    ev->res = 0;
    ev->complete_ns = 0;
    ev->op_flags = 0;
    ev->fd = -1;
    ev->dfd = TH_AT_FDCWD;
    ev->dfd2 = TH_AT_FDCWD;
    ev->cflags = 0;
    ev->mode = 0;
    ev->addrlen = 0;
    ev->abs_flags = 0;
    ev->abs_len = 0;
    __builtin_memset(ev->sockaddr, 0, sizeof(ev->sockaddr));
    ev->path[0] = 0;
    ev->path2[0] = 0;
}

#ifdef TH_PROBE_URING_OPS
int th_uring_submit(struct tracepoint__io_uring__io_uring_submit_req *args)
{
    if (!th_traced(bpf_get_current_pid_tgid() >> 32))
        return 0;
    u32 zero = 0;
    struct th_uring_scratch *s = th_uring_bufs.lookup(&zero);
    if (!s)
        return 0; /* never: a per-CPU array slot; the completion is still recorded, unpaired */
    struct th_uring_event *ev = &s->op.ev;
    th_fill_header(&ev->h, TH_KIND_URING);
    th_uring_blank(ev);
    ev->user_data = args->user_data;
    ev->opcode = args->opcode;
    ev->flags = args->sq_thread ? TH_URING_SQPOLL : 0;
    if (args->flags & 1 /* REQ_F_FIXED_FILE, = IOSQE_FIXED_FILE */)
        ev->flags |= TH_URING_FIXED_FILE;
    s->op.files = 0;
#if TH_LAYOUT
    if (th_enriched()) {
        th_uring_read_req(ev, (u64)args->req);
        if (ev->opcode == TH_IORING_OP_OPENAT || ev->opcode == TH_IORING_OP_OPENAT2)
            s->op.files = th_kptr(th_current_task(), TH_OFF_TASK_STRUCT_FILES);
    } else {
        ev->flags |= TH_URING_NO_LAYOUT;
    }
#else
    ev->flags |= TH_URING_NO_LAYOUT;
#endif
    u64 req = (u64)args->req;
    if (th_uring_pending.update(&req, &s->op))
        th_error(TH_ERR_URING_PENDING_FULL);
    return 0;
}

int th_uring_complete(struct tracepoint__io_uring__io_uring_complete *args)
{
    u64 req = (u64)args->req;
    u32 zero = 0;
    struct th_uring_scratch *s = th_uring_bufs.lookup(&zero);
    if (!s)
        return 0;
    struct th_uring_event *ev = &s->op.ev;
    struct th_uring_pending_op *pending = th_uring_pending.lookup(&req);
    if (pending) {
        if (bpf_probe_read_kernel(&s->op, sizeof(s->op), pending)) {
            th_uring_pending.delete(&req);
            return 0;
        }
        if (!(args->cflags & TH_IORING_CQE_F_MORE))
            th_uring_pending.delete(&req);
        if (!th_traced(ev->h.pid))
            return 0;
    } else {
        if (!th_traced(bpf_get_current_pid_tgid() >> 32))
            return 0;
        th_fill_header(&ev->h, TH_KIND_URING);
        th_uring_blank(ev);
        s->op.files = 0;
        ev->user_data = args->user_data;
        ev->flags = TH_URING_UNPAIRED;
        ev->opcode = 0xffffffff; /* unknown */
#if TH_LAYOUT && defined(TH_HAVE_IO_KIOCB_OPCODE)
        if (th_enriched()) {
            u8 opcode = 0;
            if (bpf_probe_read_kernel(&opcode, 1, (const void *)(req + TH_OFF_IO_KIOCB_OPCODE)) == 0)
                ev->opcode = opcode;
        } else {
            ev->flags |= TH_URING_NO_LAYOUT;
        }
#else
        ev->flags |= TH_URING_NO_LAYOUT;
#endif
    }
    ev->res = args->res;
    ev->cflags = args->cflags;
    ev->complete_ns = bpf_ktime_get_boot_ns();
    ev->abs_flags = 0;
    ev->abs_len = 0;
    u32 len = 0;
    if ((ev->opcode == TH_IORING_OP_OPENAT || ev->opcode == TH_IORING_OP_OPENAT2) && ev->res >= 0 &&
        !(ev->flags & TH_URING_DIRECT)) {
#if TH_LAYOUT
        u64 task = th_current_task();
        if (!th_enriched() || (ev->flags & TH_URING_NO_LAYOUT)) {
            ev->abs_flags = TH_PATH_NO_LAYOUT;
        } else if (!s->op.files || th_kptr(task, TH_OFF_TASK_STRUCT_FILES) != s->op.files) {
            ev->abs_flags = TH_PATH_NO_BASE; /* unpaired, or not the submitter's file table */
        } else {
            struct th_path_result res = {};
            th_walk_fd((s32)ev->res, 0, &res);
            ev->abs_flags = res.flags;
            u32 n = res.len;
            u32 start = res.start;
            struct th_path_scratch *walked = th_path_bufs.lookup(&zero);
            if (walked && n > 0 && n <= TH_PATH_MAX && start < TH_PATH_MAX) {
                if (bpf_probe_read_kernel(s->abs, n & (TH_PATH_MAX * 2 - 1),
                                          walked->buf + (start & (TH_PATH_MAX - 1))) == 0)
                    len = n;
                else
                    ev->abs_flags |= TH_PATH_UNREADABLE;
            }
        }
#else
        ev->abs_flags = TH_PATH_NO_LAYOUT;
#endif
    }
    if (len > TH_PATH_MAX)
        len = TH_PATH_MAX;
    ev->abs_len = len;
    int failed = th_events.ringbuf_output(ev, sizeof(*ev) + len, th_submit_flags());
    th_count(TH_KIND_URING, failed != 0);
    return 0;
}
#endif
