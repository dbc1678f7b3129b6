/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net.bpf.c: connect, accept/accept4, bind and listen, whatever the address
 * family. The sockaddr is copied raw (up to TH_SOCKADDR_LEN bytes) at exit,
 * from the pointer saved at entry; user space decodes AF_INET, AF_INET6 and
 * AF_UNIX. accept's peer is only known when the caller passed a buffer for
 * it; its true length is read back from the caller's addrlen at exit.
 * Every syscall handler is a raw tracepoint program tail-called by
 * dispatch.bpf.c, which has already checked that the process is traced.
 */
#include "tracehound.h"

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

static __always_inline int th_net_exit(struct bpf_raw_tracepoint_args *ctx)
{
    struct th_net_args *a = th_net_pending.task_storage_get(TH_CURRENT_TASK(), 0, 0);
    if (!a || !a->active)
        return 0;
    a->active = 0;
    struct th_net_event *ev = th_events.ringbuf_reserve(sizeof(*ev));
    if (!ev) {
        th_count(TH_KIND_NET, 1);
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
    th_events.ringbuf_submit(ev, th_submit_flags());
    th_count(TH_KIND_NET, 0);
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
