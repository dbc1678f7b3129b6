/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tracehound.h: the single definition of every record tracehound's BPF
 * programs put on the wire, and of the maps they share.
 *
 * Rules for everything under bpf/ (see CONTRIBUTING.md):
 *   - tracepoints and BPF helpers; no kernel header is included (bcc
 *     compiles against an empty stub source directory). A kernel struct is
 *     read only at an offset the loader took from the running kernel's BTF
 *     and passed as TH_OFF_<STRUCT>_<MEMBER> (agent/capture/kernel_layout.py
 *     lists every one), only when TH_LAYOUT is 1, and only while the
 *     start-up self-check (layout.bpf.c) found the offsets right
 *     (th_enriched()). Two fixed layouts are read besides, each checked
 *     against BTF by a test: x86_64 struct pt_regs (the UAPI layout,
 *     TH_REGS_*) and thread_info.status (a typed load the verifier checks);
 *   - syscall handlers are not attached one tracepoint each: one raw
 *     tracepoint program on sys_enter and one on sys_exit (dispatch.bpf.c)
 *     tail-call them by syscall number; they read the syscall's arguments
 *     from the saved registers (th_syscall_args) and its result from the
 *     raw tracepoint's args[1] (th_syscall_ret);
 *   - syscall arguments are carried from entry to exit in task-local
 *     storage (TH_CURRENT_TASK), one slot per task and concern;
 *   - user strings are read at syscall exit from a pointer saved at entry
 *     (the page may not be resident at entry); a successful exec's filename
 *     and argv are read at sched_process_exec, where the kernel has just
 *     copied them (the tracepoint's filename, the new mm's argument area);
 *   - every record that the kernel decides to emit bumps th_generated[kind];
 *     every record that then cannot be delivered bumps th_lost[kind]. User
 *     space checks that generated == delivered + lost, per kind.
 *
 * agent/capture/wire.py decodes these layouts; tests/test_wire_layout.py
 * compiles this header with gcc and checks every size and offset against it.
 */
#ifndef TRACEHOUND_H
#define TRACEHOUND_H

/* Bounds the loader may override with -D (see agent/capture/loader.py). */
#ifndef TH_ARGV_MAX
#define TH_ARGV_MAX 16          /* argv entries captured per exec */
#endif
#ifndef TH_ARG_LEN
#define TH_ARG_LEN 128          /* bytes per argv entry, NUL included */
#endif
/* Bytes of the argument area (the NUL-separated argv) an exec record holds:
 * the loader passes min(TH_ARGV_MAX * TH_ARG_LEN, TH_ARGV_BYTES_MAX). */
#define TH_ARGV_BYTES_MAX 16384
#ifndef TH_ARGV_BYTES
#define TH_ARGV_BYTES (TH_ARGV_MAX * TH_ARG_LEN < TH_ARGV_BYTES_MAX ? TH_ARGV_MAX * TH_ARG_LEN : TH_ARGV_BYTES_MAX)
#endif
#ifndef TH_RINGBUF_PAGES
#define TH_RINGBUF_PAGES 1024   /* ring buffer size in pages, a power of two */
#endif
#ifndef TH_PENDING_MAX
#define TH_PENDING_MAX 10240    /* processes with an exit status pending */
#endif
#ifndef TH_SCOPE_MAX
#define TH_SCOPE_MAX 65536      /* processes in a profile's scope */
#endif
/* Whether capture is scoped to the process trees in th_scope (profile): a
 * constant compiled in by the loader, because every handler asks on every
 * call. (Who the agent is comes from th_enabled: see struct th_control.) */
#ifndef TH_SCOPED
#define TH_SCOPED 0
#endif
#ifndef TH_TYPED
#define TH_TYPED 0              /* 1: the fixed struct chains by typed loads (bpf/path.bpf.c) */
#endif

#ifndef TH_WAKEUP_EVERY
#define TH_WAKEUP_EVERY 512     /* records per CPU between consumer wakeups */
#endif
#ifndef TH_URING_PENDING_MAX
#define TH_URING_PENDING_MAX 4096 /* io_uring requests between submit and completion */
#endif
#ifndef TH_WAKEUP_UNIT
#define TH_WAKEUP_UNIT 2928     /* bytes a record counts as one of TH_WAKEUP_EVERY (loader.wakeup_unit) */
#endif
#ifndef TH_SYSCALL_KEYS_MAX
#define TH_SYSCALL_KEYS_MAX 65536 /* (process, syscall) counters */
#endif
#ifndef TH_CONNECTS_MAX
#define TH_CONNECTS_MAX 4096    /* non-blocking connects waiting for their outcome */
#endif

/* x86_64 struct pt_regs, as the raw sys_enter/sys_exit tracepoints pass it
 * (args[0]): the byte offsets of the registers a syscall's number and
 * arguments arrive in. They are the UAPI layout (arch/x86/include/uapi/asm/
 * ptrace.h: r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ...,
 * 8 bytes each), a fixed ABI that ptrace(PTRACE_GETREGS) hands out too;
 * tests/test_syscall_dispatch.py checks them against the running kernel's
 * BTF. The syscall ABI puts arguments 0-5 in di, si, dx, r10, r8, r9. */
#define TH_REGS_R10 56
#define TH_REGS_R9 64
#define TH_REGS_R8 72
#define TH_REGS_DX 96
#define TH_REGS_SI 104
#define TH_REGS_DI 112
#define TH_REGS_ORIG_AX 120
/* Slots of each syscall dispatch table, indexed by x86_64 syscall number:
 * every number tracehound traces is below it (the highest, fchmodat2, is
 * 452); x32 numbers (bit 30 set) fall outside and are never dispatched. */
#define TH_SYSCALL_SLOTS 512
/* Where the 32-bit syscall flag is: task_struct starts with its thread_info
 * (x86 CONFIG_THREAD_INFO_IN_TASK) = {flags, syscall_work, status, cpu}, so
 * thread_info.status is at byte 16 on every kernel that has syscall_work
 * and BPF task storage (5.11 on: the only kernels tracehound loads on).
 * TS_COMPAT in it marks an ia32 syscall (int 0x80, or a 32-bit process):
 * its number and registers follow another table and ABI. The load goes
 * through bpf_get_current_task_btf(), so the verifier checks it against the
 * kernel's BTF; tests/test_syscall_dispatch.py checks the offset too. */
#define TH_TASK_STATUS_OFFSET 16
#define TH_TS_COMPAT 0x0002

#ifndef TH_RESOLVE_PATHS
#define TH_RESOLVE_PATHS 1      /* resolve file events' absolute paths ([capture] resolve_paths) */
#endif
#ifndef TH_LAYOUT
#define TH_LAYOUT 0             /* kernel struct offsets from BTF compiled in */
#endif

#define TH_COMM_LEN 16
#define TH_PATH_LEN 256
/* An absolute path the kernel resolved: PATH_MAX bytes, NUL included. */
#define TH_PATH_MAX 4096
/* Components a path walk follows before it gives up and marks the path cut. */
#ifndef TH_PATH_DEPTH
#define TH_PATH_DEPTH 48
#endif
#define TH_SOCKADDR_LEN 112     /* sizeof(struct sockaddr_un) rounded up to 8 */
#define TH_AT_FDCWD -100

/* Record kinds. TH_KIND_SYSCALL has no ring-buffer record: its counts live in
 * th_syscall_counts, and its generated/lost slots count syscalls seen and
 * syscalls that found the counter map full. */
#define TH_KIND_EXEC 1
#define TH_KIND_FORK 2
#define TH_KIND_EXIT 3
#define TH_KIND_FILE 4
#define TH_KIND_NET 5
#define TH_KIND_SYSCALL 6
#define TH_KIND_CALL 7          /* security-relevant calls that are not file ops (call.bpf.c) */
#define TH_KIND_URING 8
#define TH_NR_KINDS 9

/* th_errors slots. */
#define TH_ERR_SCOPE_FULL 0
#define TH_ERR_EXIT_STATUS_FULL 1
#define TH_ERR_CONNECTS_FULL 2 /* a non-blocking connect whose outcome found no room in th_connects */
#define TH_ERR_URING_PENDING_FULL 3 /* an io_uring submission found no room in th_uring_pending */
#define TH_NR_ERRORS 4

/* File operations (th_file_event.op). */
#define TH_FILE_OPEN 1
#define TH_FILE_UNLINK 2
#define TH_FILE_RENAME 3
#define TH_FILE_CHMOD 4
#define TH_FILE_MKDIR 5
#define TH_FILE_LINK 6          /* path: the existing file, path2: the new name */
#define TH_FILE_SYMLINK 7       /* path: the link's text (its target), path2: the new link */
#define TH_FILE_TRUNCATE 8      /* truncate (path), ftruncate (dfd: the fd, no path) */
#define TH_FILE_CHOWN 9         /* owner/group: the ids asked for (-1: unchanged) */

/* Network operations (th_net_event.op). */
#define TH_NET_CONNECT 1
#define TH_NET_ACCEPT 2
#define TH_NET_BIND 3
#define TH_NET_LISTEN 4
#define TH_NET_SENDTO 5         /* UDP datagrams, and the three send syscalls' destinations */
#define TH_NET_SENDMSG 6
#define TH_NET_SENDMMSG 7
#define TH_NET_CONNECT_RESULT 8 /* how a connect that returned EINPROGRESS ended */

/* th_net_event.flags (TH_NETF_*, not TH_NET_*: those are the operations). */
#define TH_NETF_PEER 1          /* no address was passed: the destination is the connected socket's peer */
#define TH_NETF_UNCHECKED 2     /* enrichment off: the socket was not checked to be UDP, nor the error read */
#define TH_NETF_MORE 4          /* sendmmsg sent more messages than TH_MMSG_MAX: the rest were not looked at */
#define TH_NETF_FAILED 8        /* connect_result: the connection was not established (ret: -sk_err, 0 unknown) */
/* Messages of one sendmmsg whose destinations are looked at. */
#define TH_MMSG_MAX 8

/* th_exec_event.flags */
#define TH_EXEC_ARGV_TRUNCATED 1   /* more argv than captured: more than TH_ARGV_MAX entries, or an area longer than TH_ARGV_BYTES */
#define TH_EXEC_ARG_TRUNCATED 2    /* an argument read at entry filled TH_ARG_LEN - 1 bytes */
#define TH_EXEC_FILENAME_CUT 4     /* the filename was longer than TH_PATH_MAX - 1 bytes */
#define TH_EXEC_FILENAME_UNREADABLE 8 /* the filename could not be read */
#define TH_EXEC_ARGV_UNREADABLE 16 /* (part of) argv could not be read: what is there is what was */
#define TH_EXEC_ARGV_AT_ENTRY 32   /* argv read at syscall entry (enrichment off): pages not yet touched read as unreadable */
#define TH_EXEC_NO_LAYOUT 64       /* enrichment off: ppid, euid, egid, loginuid, cwd and exe not resolved */
#define TH_EXEC_NO_IMAGE 128       /* exec succeeded but the image probe did not run: filename and argv unknown */
#define TH_EXEC_FAILED_NO_PATHS 256 /* a failed exec: cwd and exe are not resolved */
#define TH_EXEC_EXE_UNLINKED 512   /* the executable has no link on any filesystem (memfd, O_TMPFILE, deleted) */
#define TH_EXEC_EXE_MEMFD 1024     /* the executable is a memfd (its name starts "memfd:") */
#define TH_EXEC_ARGV_SLOTS 2048    /* argv read from pointers: entry i in bytes [i * TH_ARG_LEN, (i + 1) * TH_ARG_LEN) */

/* th_exit_event.flags */
#define TH_EXIT_HAVE_CODE 1   /* exit_group()/exit() was seen: exit_code is valid */
#define TH_EXIT_HAVE_SIGNAL 2 /* a fatal signal with the default action was delivered */

/* Every record starts with this header. 56 bytes. */
struct th_header {
    __u32 kind;
    __u32 pid;        /* thread group id: the process */
    __u64 ts_ns;      /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME */
    __u32 tid;
    __u32 uid;
    __u32 gid;
    __u32 _pad0;
    __u64 cgroup_id;
    char comm[TH_COMM_LEN];
};

/* Bytes of an exec record's variable part: the filename (up to TH_PATH_MAX
 * - 1), the argument area (TH_ARGV_BYTES), the cwd and the executable's
 * path (TH_PATH_MAX each), in that order, without NULs between them (the
 * argument area keeps its own). */
#define TH_EXEC_DATA (3 * TH_PATH_MAX + TH_ARGV_BYTES)

/* Variable-length: the fixed part, then data[0 .. filename_len + argv_len +
 * cwd_len + exe_len); only that much is sent. */
struct th_exec_event {
    struct th_header h;
    __s32 ret;          /* 0, or -errno for a failed exec */
    __u32 flags;        /* TH_EXEC_* */
    __u32 at;           /* 0: execve, 1: execveat */
    __u32 ppid;         /* the real parent's tgid (0 with TH_EXEC_NO_LAYOUT) */
    __u32 euid;         /* effective ids after the exec (real_cred) */
    __u32 egid;
    __u32 loginuid;     /* audit login uid; 4294967295: unset */
    __u32 filename_len; /* bytes, no NUL */
    __u32 argv_len;     /* bytes of the argument area: NUL-terminated entries (TH_EXEC_ARGV_SLOTS: one per slot) */
    __u32 cwd_len;
    __u32 exe_len;
    __u32 cwd_flags;    /* TH_PATH_* */
    __u32 exe_flags;    /* TH_PATH_* */
    __u32 _pad0;
    char data[TH_EXEC_DATA];
};

struct th_fork_event {
    struct th_header h; /* the parent */
    __u32 child_pid;
    __u32 _pad0;
    __u64 clone_flags;
};

struct th_exit_event {
    struct th_header h;
    __s32 exit_code;  /* the status passed to exit_group(), 0..255 */
    __s32 signal;     /* the fatal signal, 0 if none */
    __u32 flags;      /* TH_EXIT_* */
    __u32 _pad0;
};

/* A file operation. Variable length: the fixed part below is followed by
 * data: the path as passed (path_len bytes), the rename target as passed
 * (path2_len), then the absolute path the kernel resolved for each
 * (abs_len, abs2_len), back to back, no NULs. Only the bytes used are sent
 * (bpf_ringbuf_output of sizeof + the four lengths). */
struct th_file_event {
    struct th_header h;
    __s64 ret;        /* fd or 0 on success, -errno on failure */
    __u32 op;         /* TH_FILE_* */
    __u32 nr;         /* the syscall number, to tell open from openat2 */
    __s32 dfd;        /* directory fd of path (TH_AT_FDCWD: the cwd); the fd of fd-only ops */
    __s32 dfd2;       /* directory fd of path2 (renames) */
    __u32 flags;      /* open flags, unlinkat/renameat2/fchmodat2 flags */
    __u32 mode;       /* open/mkdir/chmod mode */
    __u32 owner;      /* chown family: the new uid, (u32)-1 unchanged or not a chown */
    __u32 group;      /* chown family: the new gid, (u32)-1 unchanged or not a chown */
    __u32 path_len;   /* bytes of path in data, no NUL */
    __u32 path2_len;
    __u32 abs_len;    /* bytes of the absolute path (or base directory) of path */
    __u32 abs2_len;
    __u32 path_flags; /* TH_PASSED_*: how reading path from user memory went */
    __u32 path2_flags;
    __u32 abs_flags;  /* TH_PATH_*: how the walk ended */
    __u32 abs2_flags;
    __u32 abs_from;   /* TH_FROM_*: what the absolute path is */
    __u32 abs2_from;
};

/* th_file_event.path_flags: the path as passed, read from user memory. */
#define TH_PASSED_CUT 1        /* filled the TH_PATH_MAX buffer: may be cut (or exactly 4095 bytes) */
#define TH_PASSED_UNREADABLE 2 /* the pointer could not be read (EFAULT): no path */
/* th_file_event.abs_from: what the absolute path bytes are. */
#define TH_FROM_NONE 0  /* nothing was resolved: abs_flags says why */
#define TH_FROM_FILE 1  /* the path of the file itself (the fd an open installed, an fd-only op's fd) */
#define TH_FROM_BASE 2  /* the base directory (cwd or the dirfd's file): user space joins the name */
#define TH_FROM_NAME 3  /* the name was absolute: no base walked, user space normalises it */

struct th_net_event {
    struct th_header h;
    __s64 ret;        /* connect/bind/listen: 0 or -errno; accept: new fd or -errno;
                       * sends: bytes (sendmmsg: messages) sent or -errno;
                       * connect_result: 0 established, else -sk_err (0: not known) */
    __u32 op;         /* TH_NET_* */
    __s32 fd;
    __u32 addrlen;    /* bytes of sockaddr that are valid */
    __u32 backlog;    /* listen only */
    __u32 msgs;       /* sends: datagrams to this destination (sendmmsg: of its first TH_MMSG_MAX) */
    __u16 proto;      /* the socket's IPPROTO_* (6 TCP, 17 UDP, 136 UDP-Lite); 0: not known */
    __u16 flags;      /* TH_NETF_* */
    __u8 sockaddr[TH_SOCKADDR_LEN];
};

/* th_uring_event.flags */
#define TH_URING_UNPAIRED 1    /* no submit seen (failed before submit, submitted before capture, or
                                * no room to remember it): the header is the completing task's and
                                * only the completion's facts are known */
#define TH_URING_SQPOLL 2      /* submitted by the ring's SQPOLL kernel thread */
#define TH_URING_FIXED_FILE 4  /* fd is an index into the ring's registered files */
#define TH_URING_DIRECT 8      /* openat/accept into a registered-file slot: res is no process fd */
#define TH_URING_NO_LAYOUT 16  /* enrichment off: fd, dfd, paths, flags, sockaddr were not read */

/* io_uring opcodes the programs look into (include/uapi/linux/io_uring.h). */
#define TH_IORING_OP_SENDMSG 9
#define TH_IORING_OP_CONNECT 16
#define TH_IORING_OP_OPENAT 18
#define TH_IORING_OP_SEND 26
#define TH_IORING_OP_OPENAT2 28
#define TH_IORING_OP_RENAMEAT 35
#define TH_IORING_OP_UNLINKAT 36
#define TH_IORING_OP_MKDIRAT 37
#define TH_IORING_OP_SYMLINKAT 38
#define TH_IORING_OP_LINKAT 39
#define TH_IORING_OP_SEND_ZC 47
#define TH_IORING_OP_SENDMSG_ZC 48
#define TH_IORING_CQE_F_MORE 2 /* the request posts more completions (multishot) */

/* One io_uring request's completion, with what its submission said: one
 * record per completion (a multishot request makes several). Variable
 * length: abs_len bytes of the absolute path (no NUL) follow the struct.
 * 760 bytes + the path. */
struct th_uring_event {
    struct th_header h; /* the submitter's, at submission (unless TH_URING_UNPAIRED) */
    __s64 res;        /* the completion's result: an fd, a byte count, 0, or -errno */
    __u64 user_data;  /* the submitter's tag for the request */
    __u64 complete_ns; /* bpf_ktime_get_boot_ns() at completion */
    __u64 op_flags;   /* openat/openat2: open flags; unlinkat/renameat/linkat: their flags */
    __u32 opcode;     /* IORING_OP_* */
    __u32 flags;      /* TH_URING_* */
    __s32 fd;         /* the request's fd (sqe->fd) */
    __s32 dfd;        /* path ops: the directory fd of path (TH_AT_FDCWD: the cwd) */
    __s32 dfd2;       /* renameat/linkat/symlinkat: of path2 */
    __u32 cflags;     /* IORING_CQE_F_* */
    __u32 mode;       /* openat/mkdirat mode */
    __u32 addrlen;    /* bytes of sockaddr that are valid (connect, send with a destination) */
    __u32 abs_flags;  /* TH_PATH_* of the absolute path (openat: the installed file) */
    __u32 abs_len;    /* bytes of absolute path after the record; 0 if none */
    __u8 sockaddr[TH_SOCKADDR_LEN];
    char path[TH_PATH_LEN];  /* as passed (the kernel's copy, taken at submission) */
    char path2[TH_PATH_LEN]; /* renameat/linkat: the new name; symlinkat: the link */
};

/* Security-relevant calls (th_call_event.op). 1-7 change credentials: their
 * records carry the ids (and capabilities) after the call too. */
#define TH_CALL_SETUID 1
#define TH_CALL_SETGID 2
#define TH_CALL_SETREUID 3
#define TH_CALL_SETREGID 4
#define TH_CALL_SETRESUID 5
#define TH_CALL_SETRESGID 6
#define TH_CALL_CAPSET 7
#define TH_CALL_PTRACE 8
#define TH_CALL_MOUNT 9
#define TH_CALL_UMOUNT 10
#define TH_CALL_INIT_MODULE 11
#define TH_CALL_FINIT_MODULE 12
#define TH_CALL_DELETE_MODULE 13
#define TH_CALL_BPF 14
#define TH_CALL_UNSHARE 15
#define TH_CALL_SETNS 16
#define TH_CALL_KILL 17
#define TH_CALL_TKILL 18
#define TH_CALL_TGKILL 19
#define TH_CALL_RT_SIGQUEUEINFO 20
#define TH_CALL_MEMFD_CREATE 21
#define TH_CALL_LAST_CREDS TH_CALL_CAPSET

/* th_call_event.flags: what could not be resolved. */
#define TH_CALL_IDS_UNRESOLVED 1   /* enrichment off, or the cred read failed: ids_* are 0, not ids */
#define TH_CALL_CAPS_UNRESOLVED 2  /* the same for caps_* (or the kernel's cred has no cap fields) */
#define TH_CALL_PEEK_UNREADABLE 4  /* args[3]'s user memory (bpf attr, capset header) unreadable */
#define TH_CALL_STR0_UNREADABLE 8  /* str0's user pointer could not be read */
#define TH_CALL_STR1_UNREADABLE 16
#define TH_CALL_STR2_UNREADABLE 32

#define TH_CALL_ARGS 4
#define TH_CALL_IDS 6           /* uid euid suid gid egid sgid, in that order */
#define TH_CALL_CAPS 3          /* effective permitted inheritable */
#define TH_CALL_SHORT_LEN 64    /* str2: a file system type */
/* The bpf(2) commands recorded, bit cmd set (cmds from 64 on: all): those
 * that create, load, attach, pin or open pinned BPF objects. Map element
 * reads and writes, id walks, fds by id, info and test-run queries are left
 * out: a BPF tool listing the host's objects (bpftool prog show) makes
 * hundreds a second, and they act only on objects whose making was seen. */
#define TH_CALL_BPF_CMDS 0x1f304603e1ULL

/* A security-relevant call, once its result is known. args[0..3] are the
 * syscall's first four arguments as passed; for bpf and capset args[3] is
 * instead the first 8 bytes their second/first argument points to (the
 * attr's prog/map type, capset's header), read at exit. The ids and caps
 * are the caller's real_cred's before the call (read at entry) and, for
 * the credential-changing ops, after it (read at exit). Strings are read at
 * exit from pointers saved at entry: mount (source, target, fstype),
 * umount2 (target), init/finit_module (params in str1), delete_module and
 * memfd_create (name). */
struct th_call_event {
    struct th_header h;
    __s64 ret;        /* the syscall's result: 0, an fd, or -errno */
    __u32 op;         /* TH_CALL_* */
    __u32 nr;         /* the syscall number */
    __u32 flags;      /* TH_CALL_*_UNRESOLVED / _UNREADABLE */
    __u32 _pad0;
    __u64 args[TH_CALL_ARGS];
    __u32 ids_before[TH_CALL_IDS];
    __u32 ids_after[TH_CALL_IDS];
    __u64 caps_before[TH_CALL_CAPS];
    __u64 caps_after[TH_CALL_CAPS];
    char str0[TH_PATH_LEN];
    char str1[TH_PATH_LEN];
    char str2[TH_CALL_SHORT_LEN];
};

/* How a path walk ended (th_path_walk's flags; carried on the wire beside
 * every resolved path). 0: whole and absolute. */
#define TH_PATH_CUT 1          /* longer than TH_PATH_MAX or TH_PATH_DEPTH: the leading part is missing */
#define TH_PATH_UNREADABLE 2   /* a kernel read failed mid-walk: the rest is unknown */
#define TH_PATH_UNREACHABLE 4  /* not below the process's root (another mount namespace, a pseudo fs) */
#define TH_PATH_NO_LAYOUT 8    /* enrichment is off (no BTF, or the self-check failed): not resolved */
#define TH_PATH_NO_BASE 16     /* the base (cwd or the dirfd's file) could not be found */
#define TH_PATH_OFF 32         /* path resolution is turned off ([capture] resolve_paths = false) */
/* 64 and up are user space's (agent/capture/kinds.py PATH_*): how the name
 * was joined to its base. */

/* The start-up self-check's findings (layout.bpf.c), in th_layout_check[0]:
 * the calling process's facts read through the BTF offsets, for user space
 * to compare with /proc (agent/capture/layout_check.py). */
struct th_layout_check {
    __u32 ran;            /* 1 once the check program ran */
    __u32 compiled;       /* TH_LAYOUT */
    __u32 tgid;           /* task->tgid */
    __u32 ppid;           /* task->real_parent->tgid */
    __u64 cgroup_id;      /* task->cgroups->dfl_cgrp->kn->id */
    __u64 cgroup_helper;  /* bpf_get_current_cgroup_id(), what it must equal */
    __u32 uid;            /* task->real_cred->uid */
    __u32 cwd_flags;      /* TH_PATH_* */
    __u32 cwd_len;        /* bytes of cwd, no NUL */
    __u32 _pad0;
    char cwd[TH_PATH_MAX];
};

struct th_syscall_key {
    __u32 pid;
    __u32 nr;
};

/* What user space tells every handler, in th_enabled[0]: capture is on while
 * enabled is 1, and the agent's own process (agent_pid) is never traced. A
 * map value, not compiled-in constants, so one compiled program serves every
 * run (the loader's program cache); handlers read it with the one lookup
 * they make anyway. The loader writes it before attaching. */
struct th_control {
    __u32 enabled;
    __u32 agent_pid;
    __u32 enriched;   /* 1: the self-check passed, struct reads are trusted */
    __u32 _pad0;
};

#ifdef TH_BCC
/* ---------------------------------------------------------------------
 * Maps and helpers shared by every program. Only compiled by bcc (the loader defines TH_BCC).
 */
BPF_RINGBUF_OUTPUT(th_events, TH_RINGBUF_PAGES);
BPF_HASH(th_scope, __u32, __u8, TH_SCOPE_MAX);
BPF_PERCPU_ARRAY(th_generated, __u64, TH_NR_KINDS);
BPF_PERCPU_ARRAY(th_lost, __u64, TH_NR_KINDS);
BPF_PERCPU_ARRAY(th_since_wakeup, __u64, 1);
/* Capture is on while th_enabled[0].enabled is 1. Stopping clears it first:
 * every handler stops at once, where detaching 50 tracepoints one by one
 * takes seconds (an RCU grace period each) with some kinds still attached. */
BPF_ARRAY(th_enabled, struct th_control, 1);
/* Problems that are not a record's loss: TH_ERR_SCOPE_FULL counts children
 * that could not be put in a profile's scope (their whole subtree goes
 * untraced), TH_ERR_EXIT_STATUS_FULL exit statuses that found no room. */
BPF_PERCPU_ARRAY(th_errors, __u64, TH_NR_ERRORS);

/* The syscall's arguments 0-5, from the registers saved at syscall entry:
 * ctx is the raw sys_enter tracepoint's (struct pt_regs *regs, long id).
 * One read of the window r10..di covers all six. 0, or -1 if the registers
 * could not be read (never seen: they are the current task's, in kernel
 * memory). */
#define TH_REG(window, off) (window)[((off) - TH_REGS_R10) / 8]
static __always_inline int th_syscall_args(struct bpf_raw_tracepoint_args *ctx, u64 args[6])
{
    u64 window[(TH_REGS_DI - TH_REGS_R10) / 8 + 1];
    if (bpf_probe_read_kernel(window, sizeof(window), (void *)(ctx->args[0] + TH_REGS_R10)))
        return -1;
    args[0] = TH_REG(window, TH_REGS_DI);
    args[1] = TH_REG(window, TH_REGS_SI);
    args[2] = TH_REG(window, TH_REGS_DX);
    args[3] = TH_REG(window, TH_REGS_R10);
    args[4] = TH_REG(window, TH_REGS_R8);
    args[5] = TH_REG(window, TH_REGS_R9);
    return 0;
}

/* The syscall number, from regs->orig_ax (valid at entry and at exit); -1
 * if it could not be read. */
static __always_inline long th_syscall_nr(struct bpf_raw_tracepoint_args *ctx)
{
    long nr = -1;
    if (bpf_probe_read_kernel(&nr, sizeof(nr), (void *)(ctx->args[0] + TH_REGS_ORIG_AX)))
        return -1;
    return nr;
}

/* The syscall's result: the raw sys_exit tracepoint's (regs, long ret). */
static __always_inline long th_syscall_ret(struct bpf_raw_tracepoint_args *ctx)
{
    return (long)ctx->args[1];
}

/* Is the current syscall an ia32 one (TS_COMPAT)? A typed load, checked by
 * the verifier against the kernel's BTF (see TH_TASK_STATUS_OFFSET). */
static __always_inline int th_compat_syscall(void)
{
    const char *task = (const char *)bpf_get_current_task_btf();
    return (*(const u32 *)(task + TH_TASK_STATUS_OFFSET) & TH_TS_COMPAT) != 0;
}

/* x = min(x, max), in the very register later used as an offset or size:
 * clang otherwise tests a copy and uses the original, which the verifier
 * then sees unbounded. x must be a u64 variable; max a constant. */
#define TH_BOUND(x, max)                                                      \
    asm volatile("if %[v] <= %[m] goto +1\n\t%[v] = %[m]\n\t"                \
                 : [v] "+r"(x)                                                \
                 : [m] "i"(max))

static __always_inline void th_count(u32 kind, int lost)
{
    u64 *slot = th_generated.lookup(&kind);
    if (slot)
        (*slot)++;
    if (lost) {
        slot = th_lost.lookup(&kind);
        if (slot)
            (*slot)++;
    }
}

static __always_inline void th_error(u32 slot)
{
    u64 *count = th_errors.lookup(&slot);
    if (count)
        (*count)++;
}

/* Is this process traced? Nothing is while capture is off; the agent never
 * is; in scoped mode (profile) only processes in th_scope are. */
static __always_inline int th_traced(u32 pid)
{
    u32 zero = 0;
    struct th_control *control = th_enabled.lookup(&zero);
    if (!control || !control->enabled)
        return 0;
    if (pid == control->agent_pid)
        return 0;
    if (TH_SCOPED && !th_scope.lookup(&pid))
        return 0;
    return 1;
}

/* Whether struct-based enrichment is on: the offsets are compiled in and the
 * start-up self-check found them right. Off, every field it would fill is
 * marked unresolved instead (TH_PATH_NO_LAYOUT and the like). */
static __always_inline int th_enriched(void)
{
    if (!TH_LAYOUT)
        return 0;
    u32 zero = 0;
    struct th_control *control = th_enabled.lookup(&zero);
    return control && control->enriched;
}

/* Syscall arguments are kept from entry to exit in task-local storage: a
 * slot that lives in the task itself, found without hashing or locking, and
 * freed with the task. (A tid-keyed hash cost ~3x more per syscall here.)
 * The pointer is only handed to the storage helper, never dereferenced. */
#define TH_CURRENT_TASK() ((struct task_struct *)bpf_get_current_task_btf())
#define TH_SLOT_CREATE BPF_LOCAL_STORAGE_GET_F_CREATE

/* Submit flags for the next record. By default the kernel wakes the
 * consumer (an irq_work: a self-IPI, ~3.6 us in a VM here) for every record
 * committed while the consumer is caught up, and a fast consumer is caught
 * up most of the time: that made an open() flood ~3x slower. So records go
 * in silently, one in TH_WAKEUP_EVERY per CPU forces a wakeup (a burst is
 * drained before the buffer fills), and user space also polls on a timer
 * (a trickle is read within one poll interval). */
static __always_inline u64 th_submit_flags(void)
{
    u32 zero = 0;
    u64 *since = th_since_wakeup.lookup(&zero);
    if (since && ++(*since) >= TH_WAKEUP_EVERY) {
        *since = 0;
        return BPF_RB_FORCE_WAKEUP;
    }
    return BPF_RB_NO_WAKEUP;
}

/* The same for a variable-length record of size bytes: it counts as one
 * record per TH_WAKEUP_UNIT bytes (the largest fixed record's size, from
 * which the loader sized TH_WAKEUP_EVERY), so a burst of 16 KiB file
 * records wakes the consumer before it fills the ring, as fixed ones do. */
static __always_inline u64 th_submit_flags_sized(u64 size)
{
    u32 zero = 0;
    u64 *since = th_since_wakeup.lookup(&zero);
    if (since) {
        *since += 1 + size / TH_WAKEUP_UNIT;
        if (*since >= TH_WAKEUP_EVERY) {
            *since = 0;
            return BPF_RB_FORCE_WAKEUP;
        }
    }
    return BPF_RB_NO_WAKEUP;
}

static __always_inline void th_fill_header(struct th_header *h, u32 kind)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 uid_gid = bpf_get_current_uid_gid();
    h->kind = kind;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->ts_ns = bpf_ktime_get_boot_ns();
    h->uid = (u32)uid_gid;
    h->gid = uid_gid >> 32;
    h->_pad0 = 0;
    h->cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}
#endif /* TH_BCC */

#endif /* TRACEHOUND_H */
