/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net.bpf.c: connect, accept/accept4, bind and listen, whatever the address
 * family. The sockaddr is copied raw (up to TH_SOCKADDR_LEN bytes) at exit,
 * from the pointer saved at entry; user space decodes AF_INET, AF_INET6 and
 * AF_UNIX. accept's peer is only known when the caller passed a buffer for
 * it; its true length is read back from the caller's addrlen at exit.
 * Every syscall handler is a raw tracepoint program tail-called by
 * dispatch.bpf.c, which has already checked that the process is traced.
 *
 * UDP (sendto, sendmsg, sendmmsg): the destination of each send on a UDP
 * socket. The address the caller passed is read at exit (the pointer saved
 * at entry); a send with no address goes to the connected socket's peer,
 * read from the struct sock. Whether the fd is a UDP socket is checked
 * through fd -> file -> private_data (struct socket, whose back pointer
 * must be that file) -> type SOCK_DGRAM, sk -> sk_protocol UDP/UDP-Lite.
 * Without enrichment none of that can be read: sends that name an IPv4 or
 * IPv6 address are recorded with TH_NETF_UNCHECKED (a TCP or raw socket's
 * sendto may name one too), sends without one are not recorded (their peer
 * is unknown, and they are mostly TCP and UNIX stream traffic), nor are
 * those naming another family's address (not UDP's).
 *
 * TCP outcome (connect_result): a non-blocking connect returns EINPROGRESS
 * and the handshake ends later, in softirq, where the current task is
 * anybody. inet_sock_set_state CLOSE -> SYN_SENT fires inside the
 * connect call, in the connecting task: its header is kept in th_connects by
 * the sock pointer; SYN_SENT -> ESTABLISHED or -> CLOSE later names the
 * outcome. The record is emitted by whichever of (connect returned
 * EINPROGRESS, outcome known) comes second, decided by an atomic or on the
 * entry's state (on loopback the handshake often ends before connect
 * returns); a connect that returned anything else reported its own outcome
 * and its entry is dropped. A full th_connects is counted
 * (TH_ERR_CONNECTS_FULL): that connect gets no connect_result.
 */
#include "tracehound.h"

#define TH_EBADF 9
#define TH_EINTR 4
#define TH_ENOTSOCK 88
#define TH_EINPROGRESS 115
#define TH_ERESTARTSYS 512   /* seen at sys_exit before the signal code turns it into EINTR */
#define TH_SOCK_DGRAM 2
#define TH_IPPROTO_TCP 6
#define TH_IPPROTO_UDP 17
#define TH_IPPROTO_UDPLITE 136
#define TH_AF_INET 2
#define TH_AF_INET6 10
#define TH_TCP_ESTABLISHED 1
#define TH_TCP_SYN_SENT 2
#define TH_TCP_CLOSE 7
/* The destination window of a send: a sockaddr_in6, the largest UDP's. */
#define TH_UDP_ADDR 28
/* struct user_msghdr: msg_name at 0, msg_namelen (int) at 8; struct mmsghdr
 * is a user_msghdr (56 bytes) and a u32, padded to 64. A fixed UAPI. */
#define TH_MSGHDR_NAMELEN 8
#define TH_MMSGHDR_SIZE 64

/* Whether sockets can be looked into: every member net.bpf.c reads. */
#if TH_LAYOUT && defined(TH_HAVE_SOCKET_TYPE) && defined(TH_HAVE_SOCKET_FILE) &&                  \
    defined(TH_HAVE_SOCKET_SK) && defined(TH_HAVE_SOCK_SK_PROTOCOL) &&                            \
    defined(TH_HAVE_SOCK___SK_COMMON_SKC_FAMILY) && defined(TH_HAVE_SOCK___SK_COMMON_SKC_DPORT) && \
    defined(TH_HAVE_SOCK___SK_COMMON_SKC_DADDR) && defined(TH_HAVE_FILE_PRIVATE_DATA)
#define TH_SOCK_LAYOUT 1
#else
#define TH_SOCK_LAYOUT 0
#endif

#if TH_SOCK_LAYOUT
static __always_inline u16 th_ku16(u64 base, u32 offset)
{
    u16 value = 0;
    if (base)
        bpf_probe_read_kernel(&value, sizeof(value), (const void *)(base + offset));
    return value;
}

/* The struct sock of the socket at fd in the current task, 0 if fd is not
 * (or no longer) a socket; *type its SOCK_* type. A file whose
 * private_data is a struct socket is a socket's when the socket points back
 * at it (private_data means something else in every other file). */
static __always_inline u64 th_fd_sock(s32 fd, u16 *type)
{
    u64 file = th_current_fd_file(fd);
    u64 sock = th_kptr(file, TH_OFF_FILE_PRIVATE_DATA);
    if (!sock || th_kptr(sock, TH_OFF_SOCKET_FILE) != file)
        return 0;
    *type = th_ku16(sock, TH_OFF_SOCKET_TYPE);
    return th_kptr(sock, TH_OFF_SOCKET_SK);
}

/* The connected peer of an inet sock into out[0..28) as a sockaddr_in or
 * sockaddr_in6; its length, 0 if it has none (no destination port). */
static __always_inline u32 th_sock_peer(u64 sk, u8 out[TH_UDP_ADDR])
{
    u16 family = th_ku16(sk, TH_OFF_SOCK___SK_COMMON_SKC_FAMILY);
    u16 port = th_ku16(sk, TH_OFF_SOCK___SK_COMMON_SKC_DPORT); /* network order */
    if (!port)
        return 0;
    __builtin_memcpy(&out[0], &family, 2);
    __builtin_memcpy(&out[2], &port, 2);
    if (family == TH_AF_INET) {
        u32 addr = th_ku32(sk, TH_OFF_SOCK___SK_COMMON_SKC_DADDR);
        __builtin_memcpy(&out[4], &addr, 4);
        return 16;
    }
#ifdef TH_HAVE_SOCK___SK_COMMON_SKC_V6_DADDR
    if (family == TH_AF_INET6) {
        bpf_probe_read_kernel(&out[8], 16, (const void *)(sk + TH_OFF_SOCK___SK_COMMON_SKC_V6_DADDR));
        return 28;
    }
#endif
    return 0;
}
#endif /* TH_SOCK_LAYOUT */

/* The IPPROTO_* of the socket at fd (0: not known or not a socket). */
static __always_inline u16 th_fd_proto(s32 fd)
{
#if TH_SOCK_LAYOUT
    if (!th_enriched())
        return 0;
    u16 type = 0;
    return th_ku16(th_fd_sock(fd, &type), TH_OFF_SOCK_SK_PROTOCOL);
#else
    return 0;
#endif
}

struct th_net_args {
    u64 addr;         /* struct sockaddr __user * */
    u64 addrlen_ptr;  /* accept: int __user * */
    u32 addrlen;      /* connect/bind: the length passed in */
    u32 op;
    s32 fd;
    u32 backlog;
    u32 local_len;    /* listen: bytes of local[] filled by th_sock_set_state */
    u8 local[28];     /* listen: the address the socket really listens on */
    u32 active;       /* set at entry, cleared at exit */
    u32 vlen;         /* sendmmsg: messages passed */
    u64 msg;          /* sendmsg: struct user_msghdr __user *; sendmmsg: struct mmsghdr __user * */
    u64 sk;           /* connect: the sock that went to SYN_SENT in this call (connect_result) */
};

BPF_TASK_STORAGE(th_net_pending, struct th_net_args);

static __always_inline int th_net_enter(struct th_net_args *a)
{
    struct th_net_args *slot =
        th_net_pending.task_storage_get(TH_CURRENT_TASK(), 0, TH_SLOT_CREATE);
    if (!slot) {
        th_count(TH_KIND_NET, 1); /* no memory to remember it: lost */
        return 0;
    }
    *slot = *a;
    slot->active = 1;
    return 0;
}

#ifdef TH_PROBE_NET_CONNECT_RESULT
/* A connect waiting for its outcome, by struct sock pointer. */
struct th_connect_pending {
    struct th_header h;  /* the connecting thread's, at SYN_SENT; ts_ns: the outcome's */
    u64 state;           /* TH_CONN_* bits, set with an atomic or (64-bit: BPF's) */
    s32 fd;
    u32 established;
    u32 err;             /* sk_err when it failed (0: none, or not readable) */
    u32 flags;           /* TH_NETF_* */
    u32 addrlen;
    u8 addr[TH_UDP_ADDR]; /* the address connect() was passed */
};
#define TH_CONN_RETURNED 1 /* connect returned EINPROGRESS (or was interrupted) */
#define TH_CONN_DONE 2     /* the handshake ended */
BPF_HASH(th_connects, u64, struct th_connect_pending, TH_CONNECTS_MAX);

static __always_inline void th_connect_emit(u64 sk, struct th_connect_pending *p)
{
    struct th_net_event *ev = th_events.ringbuf_reserve(sizeof(*ev));
    if (!ev) {
        th_count(TH_KIND_NET, 1);
    } else {
        __builtin_memcpy(&ev->h, &p->h, sizeof(ev->h));
        ev->ret = p->established ? 0 : -(s64)p->err;
        ev->op = TH_NET_CONNECT_RESULT;
        ev->fd = p->fd;
        ev->addrlen = p->addrlen;
        ev->backlog = 0;
        ev->msgs = 0;
        ev->proto = TH_IPPROTO_TCP;
        ev->flags = p->flags;
        __builtin_memset(ev->sockaddr, 0, sizeof(ev->sockaddr));
        __builtin_memcpy(ev->sockaddr, p->addr, sizeof(p->addr));
        th_events.ringbuf_submit(ev, th_submit_flags());
        th_count(TH_KIND_NET, 0);
    }
    th_connects.delete(&sk);
}

/* At connect's exit, after its own record: still pending, or done with. */
static __always_inline void th_connect_returned(u64 sk, long ret)
{
    struct th_connect_pending *p = th_connects.lookup(&sk);
    if (!p)
        return;
    if (ret != -TH_EINPROGRESS && ret != -TH_EINTR && ret != -TH_ERESTARTSYS) {
        th_connects.delete(&sk); /* a blocking connect: its result is the outcome */
        return;
    }
    u64 old = __sync_fetch_and_or(&p->state, TH_CONN_RETURNED);
    if (old & TH_CONN_DONE)
        th_connect_emit(sk, p);
}
#endif

static __always_inline int th_net_exit(struct bpf_raw_tracepoint_args *ctx)
{
    struct th_net_args *a = th_net_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!a || !a->active)
        return 0;
    a->active = 0;
    struct th_net_event *ev = th_events.ringbuf_reserve(sizeof(*ev));
    if (!ev) {
        th_count(TH_KIND_NET, 1);
#ifdef TH_PROBE_NET_CONNECT_RESULT
        if (a->op == TH_NET_CONNECT && a->sk)
            th_connect_returned(a->sk, th_syscall_ret(ctx));
#endif
        return 0;
    }
    th_fill_header(&ev->h, TH_KIND_NET);
    long ret = th_syscall_ret(ctx);
    ev->ret = ret;
    ev->op = a->op;
    ev->fd = a->fd;
    ev->backlog = a->backlog;
    u32 len = a->addrlen;
    if (a->addrlen_ptr) {
        int got = 0;
        bpf_probe_read_user(&got, sizeof(got), (void *)a->addrlen_ptr);
        len = got < 0 ? 0 : (u32)got;
    }
    if (len > TH_SOCKADDR_LEN)
        len = TH_SOCKADDR_LEN;
    ev->addrlen = 0;
    __builtin_memset(ev->sockaddr, 0, sizeof(ev->sockaddr));
    if (a->op == TH_NET_LISTEN) {
        if (a->local_len) {
            __builtin_memcpy(ev->sockaddr, a->local, sizeof(a->local));
            ev->addrlen = a->local_len;
        }
        len = 0; /* listen has no address argument */
    }
    /* A failed connect or bind still names the address it tried; a failed
     * accept has no peer. */
    int wanted = a->op == TH_NET_ACCEPT ? ret >= 0 : 1;
    if (a->addr && len > 0 && wanted) {
        /* bpf_probe_read_user needs a constant size here: read the whole
         * window and report how much of it is valid. */
        if (bpf_probe_read_user(ev->sockaddr, sizeof(ev->sockaddr), (void *)a->addr) == 0)
            ev->addrlen = len;
        else if (bpf_probe_read_user(ev->sockaddr, 28, (void *)a->addr) == 0)
            ev->addrlen = len < 28 ? len : 28; /* the buffer ends near a page edge */
    }
    ev->msgs = 0;
    ev->proto = th_fd_proto(a->fd);
    ev->flags = 0;
    th_events.ringbuf_submit(ev, th_submit_flags());
    th_count(TH_KIND_NET, 0);
#ifdef TH_PROBE_NET_CONNECT_RESULT
    if (a->op == TH_NET_CONNECT && a->sk)
        th_connect_returned(a->sk, ret);
#endif
    return 0;
}

#define A(i) (args[i])
/* The syscall's arguments into args[], or the record counted lost. */
#define TH_NET_ARGS()                                                         \
    u64 args[6];                                                              \
    if (th_syscall_args(ctx, args)) {                                         \
        th_count(TH_KIND_NET, 1);                                             \
        return 0;                                                             \
    }

#ifdef TH_PROBE_NET_CONNECT
int th_enter_connect(struct bpf_raw_tracepoint_args *ctx)
{
    TH_NET_ARGS();
    struct th_net_args a = {};
    a.op = TH_NET_CONNECT;
    a.fd = (s32)A(0);
    a.addr = A(1);
    a.addrlen = (u32)A(2);
    return th_net_enter(&a);
}
int th_exit_connect(struct bpf_raw_tracepoint_args *ctx) { return th_net_exit(ctx); }
#endif

#ifdef TH_PROBE_NET_BIND
int th_enter_bind(struct bpf_raw_tracepoint_args *ctx)
{
    TH_NET_ARGS();
    struct th_net_args a = {};
    a.op = TH_NET_BIND;
    a.fd = (s32)A(0);
    a.addr = A(1);
    a.addrlen = (u32)A(2);
    return th_net_enter(&a);
}
int th_exit_bind(struct bpf_raw_tracepoint_args *ctx) { return th_net_exit(ctx); }
#endif

#if defined(TH_PROBE_NET_ACCEPT) || defined(TH_PROBE_NET_ACCEPT4)
static __always_inline int th_accept_enter(struct bpf_raw_tracepoint_args *ctx)
{
    TH_NET_ARGS();
    struct th_net_args a = {};
    a.op = TH_NET_ACCEPT;
    a.fd = (s32)A(0);
    a.addr = A(1);
    a.addrlen_ptr = A(1) ? A(2) : 0;
    return th_net_enter(&a);
}
#endif
#ifdef TH_PROBE_NET_ACCEPT
int th_enter_accept(struct bpf_raw_tracepoint_args *ctx) { return th_accept_enter(ctx); }
int th_exit_accept(struct bpf_raw_tracepoint_args *ctx) { return th_net_exit(ctx); }
#endif
#ifdef TH_PROBE_NET_ACCEPT4
int th_enter_accept4(struct bpf_raw_tracepoint_args *ctx) { return th_accept_enter(ctx); }
int th_exit_accept4(struct bpf_raw_tracepoint_args *ctx) { return th_net_exit(ctx); }
#endif

#ifdef TH_PROBE_NET_LISTEN
int th_enter_listen(struct bpf_raw_tracepoint_args *ctx)
{
    TH_NET_ARGS();
    struct th_net_args a = {};
    a.op = TH_NET_LISTEN;
    a.fd = (s32)A(0);
    a.backlog = (u32)A(1);
    return th_net_enter(&a);
}
int th_exit_listen(struct bpf_raw_tracepoint_args *ctx) { return th_net_exit(ctx); }
#endif

#if defined(TH_PROBE_NET_LISTEN) && defined(TH_PROBE_NET_LISTEN_ADDR)
/* listen() puts a TCP socket in TCP_LISTEN, and this tracepoint fires inside
 * that call, in the listening task, with the real local address: the port
 * the kernel chose for a bind to port 0 included. It fills in the pending
 * listen record of the same thread. */
int th_sock_set_state(struct tracepoint__sock__inet_sock_set_state *args)
{
    if (args->newstate != 10 /* TCP_LISTEN */)
        return 0;
    struct th_net_args *a = th_net_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!a || !a->active || a->op != TH_NET_LISTEN)
        return 0;
    u16 family = args->family;
    u16 port = __builtin_bswap16(args->sport); /* to network order, as in a sockaddr */
    __builtin_memset(a->local, 0, sizeof(a->local));
    __builtin_memcpy(&a->local[0], &family, 2);
    __builtin_memcpy(&a->local[2], &port, 2);
    if (family == 2 /* AF_INET */) {
        bpf_probe_read_kernel(&a->local[4], 4, args->saddr);
        a->local_len = 16;
    } else if (family == 10 /* AF_INET6 */) {
        bpf_probe_read_kernel(&a->local[8], 16, args->saddr_v6);
        a->local_len = 28;
    }
    return 0;
}
#endif

#ifdef TH_PROBE_NET_CONNECT_RESULT
/* Every TCP state change of the host, as a raw tracepoint (sk, oldstate,
 * newstate): all but SYN_SENT's two ends leave at once. CLOSE -> SYN_SENT
 * runs in the connecting task, inside connect(), where the address it
 * passed is read again (the kernel has just copied it: the page is there);
 * the other ends run wherever the handshake ends (softirq, a timer). Raw:
 * sock:inet_sock_set_state's argument record is net.listen_addr's already
 * (bcc defines it once per program), and nothing here needs it. */
int th_sock_connect_state(struct bpf_raw_tracepoint_args *ctx)
{
    u64 sk = ctx->args[0];
    int oldstate = (int)ctx->args[1];
    int newstate = (int)ctx->args[2];
    if (newstate == TH_TCP_SYN_SENT) {
        struct th_net_args *a = th_net_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
        if (!a || !a->active || a->op != TH_NET_CONNECT)
            return 0; /* not a traced connect() (TCP fast open, io_uring, untraced) */
        struct th_connect_pending p = {};
        th_fill_header(&p.h, TH_KIND_NET);
        p.fd = a->fd;
        u32 len = a->addrlen < TH_UDP_ADDR ? a->addrlen : TH_UDP_ADDR;
        if (a->addr && len && bpf_probe_read_user(p.addr, sizeof(p.addr), (void *)a->addr) == 0)
            p.addrlen = len;
        if (len < 16)
            __builtin_memset(&p.addr[8], 0, 8);
        if (len < TH_UDP_ADDR)
            __builtin_memset(&p.addr[16], 0, TH_UDP_ADDR - 16);
        if (th_connects.update(&sk, &p)) {
            th_error(TH_ERR_CONNECTS_FULL);
            return 0;
        }
        a->sk = sk;
        return 0;
    }
    if (oldstate != TH_TCP_SYN_SENT)
        return 0;
    struct th_connect_pending *p = th_connects.lookup(&sk);
    if (!p)
        return 0;
    p->h.ts_ns = bpf_ktime_get_boot_ns();
    p->established = newstate == TH_TCP_ESTABLISHED;
    p->err = 0;
    p->flags = 0;
    if (!p->established) {
        p->flags |= TH_NETF_FAILED;
#if TH_LAYOUT && defined(TH_HAVE_SOCK_SK_ERR)
        if (th_enriched())
            p->err = th_ku32(sk, TH_OFF_SOCK_SK_ERR);
        else
            p->flags |= TH_NETF_UNCHECKED;
#else
        p->flags |= TH_NETF_UNCHECKED;
#endif
    }
    u64 old = __sync_fetch_and_or(&p->state, TH_CONN_DONE);
    if (old & TH_CONN_RETURNED)
        th_connect_emit(sk, p);
    return 0;
}
#endif

#if defined(TH_PROBE_NET_SENDTO) || defined(TH_PROBE_NET_SENDMSG) || defined(TH_PROBE_NET_SENDMMSG)
/* The destination at user address addr (len bytes) into out[0..28), bytes
 * past len zeroed (the fold key holds them); its length, 0 if unreadable. */
static __always_inline u32 th_user_addr(u64 addr, u32 len, u8 out[TH_UDP_ADDR])
{
    __builtin_memset(out, 0, TH_UDP_ADDR);
    if (!addr || !len)
        return 0;
    if (len > TH_UDP_ADDR)
        len = TH_UDP_ADDR;
    if (bpf_probe_read_user(out, TH_UDP_ADDR, (void *)addr)) {
        if (bpf_probe_read_user(out, 16, (void *)addr)) /* near a page edge */
            return 0;
        if (len > 16)
            len = 16;
    }
    /* Zero what lies past the address (a sockaddr_in is 16 bytes, an old
     * sockaddr_in6 24); shorter is no IP address (the kernel says EINVAL). */
    if (len < 16)
        __builtin_memset(&out[4], 0, 12);
    if (len <= 16)
        __builtin_memset(&out[16], 0, TH_UDP_ADDR - 16);
    else if (len < TH_UDP_ADDR)
        __builtin_memset(&out[24], 0, TH_UDP_ADDR - 24);
    return len;
}

/* A send's records are built here, not on the ring: one call can make
 * several (sendmmsg), which differ only in destination and count, so the
 * header is filled once and each goes out with one bpf_ringbuf_output. */
struct th_send_scratch {
    struct th_net_event ev;
    u8 dest[TH_UDP_ADDR];
    u8 peer[TH_UDP_ADDR];
    u32 peer_len;
    u32 n;            /* sendmmsg: messages to look at */
    u32 run;          /* messages to the destination of the record being built */
    u32 dest_len;
    u16 base_flags;
    u16 dest_flags;
    u32 _pad0;
};
BPF_PERCPU_ARRAY(th_send_bufs, struct th_send_scratch, 1);

/* Whether a destination is an IPv4 or IPv6 one: what a UDP send names.
 * Without enrichment it is the only check there is (a UNIX datagram names a
 * path, and would not even fit the window). */
static __always_inline int th_ip_dest(u8 addr[TH_UDP_ADDR])
{
    u16 family = addr[0] | (u16)addr[1] << 8;
    return family == TH_AF_INET || family == TH_AF_INET6;
}

/* Whether dest holds the destination of the record being built (no memcmp
 * in BPF: four loads a side). */
static __always_inline int th_same_dest(struct th_send_scratch *s)
{
    u64 a[4] = {}, b[4] = {};
    __builtin_memcpy(a, s->dest, TH_UDP_ADDR);
    __builtin_memcpy(b, s->ev.sockaddr, TH_UDP_ADDR);
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

static __always_inline void th_send_output(struct th_send_scratch *s, u32 msgs)
{
    s->ev.msgs = msgs;
    th_count(TH_KIND_NET, th_events.ringbuf_output(&s->ev, sizeof(s->ev), th_submit_flags()) != 0);
}

/* One message of a sendmmsg (its struct mmsghdr at user address hdr_at):
 * the same destination as the record being built adds to its run, another
 * sends that record and starts the next. */
static __always_inline void th_mmsg_step(struct th_send_scratch *s, u64 hdr_at)
{
    u64 hdr[2] = {};
    bpf_probe_read_user(hdr, sizeof(hdr), (void *)hdr_at);
    s->dest_flags = s->base_flags;
    if (hdr[0] && (u32)hdr[1]) {
        s->dest_len = th_user_addr(hdr[0], (u32)hdr[1], s->dest);
        if ((s->base_flags & TH_NETF_UNCHECKED) && !th_ip_dest(s->dest))
            return; /* not UDP's */
    } else if (s->peer_len) {
        __builtin_memcpy(s->dest, s->peer, TH_UDP_ADDR);
        s->dest_len = s->peer_len;
        s->dest_flags |= TH_NETF_PEER;
    } else {
        return; /* connected, and the peer cannot be read */
    }
    if (s->run && s->dest_len == s->ev.addrlen && s->dest_flags == s->ev.flags && th_same_dest(s)) {
        s->run++;
        return;
    }
    if (s->run)
        th_send_output(s, s->run);
    __builtin_memcpy(s->ev.sockaddr, s->dest, TH_UDP_ADDR);
    s->ev.addrlen = s->dest_len;
    s->ev.flags = s->dest_flags;
    s->run = 1;
}

/* op: TH_NET_SENDTO, SENDMSG or SENDMMSG, a constant (each handler keeps
 * only its own branch: one function for all three was too many paths for
 * the verifier). */
static __always_inline int th_send_exit(struct bpf_raw_tracepoint_args *ctx, u32 op)
{
    struct th_net_args *a = th_net_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!a || !a->active)
        return 0;
    a->active = 0;
    long ret = th_syscall_ret(ctx);
    if (ret == -TH_EBADF || ret == -TH_ENOTSOCK)
        return 0; /* no socket was reached */
    u32 zero = 0;
    struct th_send_scratch *s = th_send_bufs.lookup(&zero);
    if (!s)
        return 0;
    u16 proto = 0;
    u16 flags = 0;
    s->peer_len = 0;
#if TH_SOCK_LAYOUT
    if (th_enriched()) {
        u16 type = 0;
        u64 sk = th_fd_sock(a->fd, &type);
        if (sk) {
            proto = th_ku16(sk, TH_OFF_SOCK_SK_PROTOCOL);
            if (type != TH_SOCK_DGRAM || (proto != TH_IPPROTO_UDP && proto != TH_IPPROTO_UDPLITE))
                return 0; /* not UDP */
            __builtin_memset(s->peer, 0, sizeof(s->peer));
            s->peer_len = th_sock_peer(sk, s->peer);
        } else {
            flags |= TH_NETF_UNCHECKED; /* closed by another thread meanwhile */
        }
    } else {
        flags |= TH_NETF_UNCHECKED;
    }
#else
    flags |= TH_NETF_UNCHECKED;
#endif
    th_fill_header(&s->ev.h, TH_KIND_NET);
    s->ev.ret = ret;
    s->ev.op = op;
    s->ev.fd = a->fd;
    s->ev.backlog = 0;
    s->ev.proto = proto;
    __builtin_memset(s->ev.sockaddr, 0, sizeof(s->ev.sockaddr));
    if (op != TH_NET_SENDMMSG) {
        u64 name = a->addr;
        u32 namelen = a->addrlen;
        if (op == TH_NET_SENDMSG) {
            u64 hdr[2] = {};
            bpf_probe_read_user(hdr, sizeof(hdr), (void *)a->msg);
            name = hdr[0];
            namelen = (u32)hdr[1]; /* msg_namelen: an int at byte 8 */
        }
        if (name && namelen) {
            s->ev.addrlen = th_user_addr(name, namelen, s->dest);
            if ((flags & TH_NETF_UNCHECKED) && !th_ip_dest(s->dest))
                return 0; /* not UDP's */
        } else if (s->peer_len) {
            __builtin_memcpy(s->dest, s->peer, TH_UDP_ADDR);
            s->ev.addrlen = s->peer_len;
            flags |= TH_NETF_PEER;
        } else {
            return 0; /* connected, and the peer cannot be read: see the top */
        }
        __builtin_memcpy(s->ev.sockaddr, s->dest, TH_UDP_ADDR);
        s->ev.flags = flags;
        th_send_output(s, 1);
        return 0;
    }
    /* sendmmsg: one record per run of messages to one destination, among
     * the first TH_MMSG_MAX sent (a failed call: its first message's). The
     * loop's state is in the map value, not in registers: the verifier then
     * sees the same unknowns at the top of every step and prunes (tracked
     * in registers, the runs made too many paths). */
    u32 n = ret > 0 ? (u32)ret : 1;
    if (n > a->vlen)
        n = a->vlen;
    if (n > TH_MMSG_MAX) {
        n = TH_MMSG_MAX;
        flags |= TH_NETF_MORE;
    }
    s->n = n;
    s->run = 0;
    s->base_flags = flags;
    u64 msg = a->msg;
    for (int i = 0; i < TH_MMSG_MAX; i++) {
        if (i >= s->n)
            break;
        th_mmsg_step(s, msg + i * TH_MMSGHDR_SIZE);
    }
    if (s->run)
        th_send_output(s, s->run);
    return 0;
}
#endif

#ifdef TH_PROBE_NET_SENDTO
/* sendto(fd, buf, len, flags, addr, addrlen); send() is sendto with no address. */
int th_enter_sendto(struct bpf_raw_tracepoint_args *ctx)
{
    TH_NET_ARGS();
    struct th_net_args a = {};
    a.op = TH_NET_SENDTO;
    a.fd = (s32)A(0);
    a.addr = A(4);
    a.addrlen = (u32)A(5);
    return th_net_enter(&a);
}
int th_exit_sendto(struct bpf_raw_tracepoint_args *ctx) { return th_send_exit(ctx, TH_NET_SENDTO); }
#endif

#ifdef TH_PROBE_NET_SENDMSG
int th_enter_sendmsg(struct bpf_raw_tracepoint_args *ctx)
{
    TH_NET_ARGS();
    struct th_net_args a = {};
    a.op = TH_NET_SENDMSG;
    a.fd = (s32)A(0);
    a.msg = A(1);
    return th_net_enter(&a);
}
int th_exit_sendmsg(struct bpf_raw_tracepoint_args *ctx) { return th_send_exit(ctx, TH_NET_SENDMSG); }
#endif

#ifdef TH_PROBE_NET_SENDMMSG
int th_enter_sendmmsg(struct bpf_raw_tracepoint_args *ctx)
{
    TH_NET_ARGS();
    struct th_net_args a = {};
    a.op = TH_NET_SENDMMSG;
    a.fd = (s32)A(0);
    a.msg = A(1);
    a.vlen = (u32)A(2);
    return th_net_enter(&a);
}
int th_exit_sendmmsg(struct bpf_raw_tracepoint_args *ctx) { return th_send_exit(ctx, TH_NET_SENDMMSG); }
#endif
