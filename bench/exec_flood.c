/*
 * exec_flood: fork + execve("/bin/true") M times, waiting for each; the hot
 * path of the exec, fork and exit probes (argv read, /proc-free process
 * tracking, one fork, one exec and one exit event per iteration at least).
 *
 * usage: exec_flood M
 * prints one line: ops=M elapsed_ns=E ns_per_op=X
 * Only the loop is timed (CLOCK_MONOTONIC), not process start-up.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s M\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    long long m = strtoll(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || m < 1) {
        fprintf(stderr, "exec_flood: M must be a positive integer, got %s\n", argv[1]);
        return 2;
    }
    char *const child_argv[] = {"/bin/true", NULL};
    long long start = now_ns();
    for (long long i = 0; i < m; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "exec_flood: fork: %s\n", strerror(errno));
            return 1;
        }
        if (pid == 0) {
            execve("/bin/true", child_argv, environ);
            _exit(127);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) {
                fprintf(stderr, "exec_flood: waitpid: %s\n", strerror(errno));
                return 1;
            }
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "exec_flood: /bin/true failed (wait status %d)\n", status);
            return 1;
        }
    }
    long long elapsed = now_ns() - start;
    printf("ops=%lld elapsed_ns=%lld ns_per_op=%.1f\n", m, elapsed, (double)elapsed / (double)m);
    return 0;
}
