/*
 * open_flood: open("/dev/null") + close, N times; the hot path of a file
 * probe (one openat enter/exit pair per iteration, one event each).
 *
 * usage: open_flood N
 * prints one line: ops=N elapsed_ns=E ns_per_op=X
 * Only the loop is timed (CLOCK_MONOTONIC), not process start-up.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s N\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    long long n = strtoll(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || n < 1) {
        fprintf(stderr, "open_flood: N must be a positive integer, got %s\n", argv[1]);
        return 2;
    }
    long long start = now_ns();
    for (long long i = 0; i < n; i++) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0) {
            fprintf(stderr, "open_flood: open /dev/null: %s\n", strerror(errno));
            return 1;
        }
        close(fd);
    }
    long long elapsed = now_ns() - start;
    printf("ops=%lld elapsed_ns=%lld ns_per_op=%.1f\n", n, elapsed, (double)elapsed / (double)n);
    return 0;
}
