/* uring_ops.c: io_uring operations for tests/test_uring.py, through liburing.
 *
 *   uring_ops DIR NAME TCP_PORT UDP_PORT
 *
 * chdir(DIR), then through one ring: openat(AT_FDCWD, NAME) (relative, so
 * only the kernel's resolution gives the absolute path), openat of a name
 * that does not exist, a connect to 127.0.0.1:TCP_PORT and a sendmsg of one
 * datagram to 127.0.0.1:UDP_PORT. Prints "<op> <user_data> <res>" for each
 * completion, so the test compares the records with what really happened.
 * No syscall tracepoint sees these operations: only io_uring's do.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct io_uring ring;

static int run(const char *what, unsigned long long tag)
{
    struct io_uring_cqe *cqe;
    if (io_uring_submit(&ring) != 1) {
        fprintf(stderr, "uring_ops: submit %s failed\n", what);
        exit(2);
    }
    if (io_uring_wait_cqe(&ring, &cqe) != 0) {
        fprintf(stderr, "uring_ops: wait %s failed\n", what);
        exit(2);
    }
    int res = cqe->res;
    printf("%s %llu %d\n", what, (unsigned long long)cqe->user_data, res);
    if (cqe->user_data != tag)
        exit(3);
    io_uring_cqe_seen(&ring, cqe);
    return res;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: uring_ops DIR NAME TCP_PORT UDP_PORT\n");
        return 2;
    }
    if (chdir(argv[1]) != 0 || io_uring_queue_init(8, &ring, 0) != 0) {
        perror("uring_ops");
        return 2;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_openat(sqe, AT_FDCWD, argv[2], O_RDONLY, 0);
    sqe->user_data = 101;
    int fd = run("openat", 101);

    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_openat(sqe, AT_FDCWD, "no-such-file", O_RDONLY, 0);
    sqe->user_data = 102;
    run("openat", 102);

    struct sockaddr_in tcp = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    tcp.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_connect(sqe, s, (struct sockaddr *)&tcp, sizeof(tcp));
    sqe->user_data = 103;
    run("connect", 103);

    struct sockaddr_in udp = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
    udp.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    char payload[] = "uring";
    struct iovec iov = {.iov_base = payload, .iov_len = sizeof(payload) - 1};
    struct msghdr msg = {.msg_name = &udp, .msg_namelen = sizeof(udp), .msg_iov = &iov,
                         .msg_iovlen = 1};
    sqe = io_uring_get_sqe(&ring);
    io_uring_prep_sendmsg(sqe, u, &msg, 0);
    sqe->user_data = 104;
    run("sendmsg", 104);

    printf("fds %d %d %d\n", fd, s, u);
    fflush(stdout);
    io_uring_queue_exit(&ring);
    return 0;
}
