/*
 * paced_open: open() distinct paths that do not exist, at a fixed rate, for a
 * fixed time: a flood of *distinct* file events (no two alike, so nothing can
 * be folded) at a rate the bench chooses, instead of as fast as possible.
 *
 * usage: paced_open RATE SECONDS PREFIX
 *   opens PREFIX0, PREFIX1, ... (PREFIX should name a directory that does not
 *   exist, e.g. /thbench-absent-1234/f: the lookup fails at the first
 *   component, so the kernel makes no new dentry per path), RATE per second
 *   for SECONDS, in steps of 1 ms (RATE/1000 opens each; when it falls behind
 *   it catches up at once, without sleeping).
 * prints one line:
 *   ops=N elapsed_ns=E ns_per_op=X rate=R lag_max_ns=L unexpected=U
 *   R is the rate achieved over the whole run, L the furthest the loop fell
 *   behind its schedule, U opens that did not fail with ENOENT (counted,
 *   closed if they succeeded).
 * exit status 2 for bad arguments, 0 otherwise.
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

static void sleep_until(long long deadline_ns)
{
    struct timespec ts = {
        .tv_sec = deadline_ns / 1000000000LL,
        .tv_nsec = deadline_ns % 1000000000LL,
    };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static int parse_positive(const char *text, const char *what, double *out)
{
    char *end = NULL;
    double value = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || !(value > 0) || value > 1e9) {
        fprintf(stderr, "paced_open: %s must be a number above 0, got %s\n", what, text);
        return -1;
    }
    *out = value;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s RATE SECONDS PREFIX\n", argv[0]);
        return 2;
    }
    double rate = 0, seconds = 0;
    if (parse_positive(argv[1], "RATE", &rate) < 0 || parse_positive(argv[2], "SECONDS", &seconds) < 0)
        return 2;
    const char *prefix = argv[3];
    if (strlen(prefix) == 0 || strlen(prefix) > 200) {
        fprintf(stderr, "paced_open: PREFIX must be 1 to 200 bytes\n");
        return 2;
    }
    long long total = (long long)(rate * seconds + 0.5);
    if (total < 1)
        total = 1;
    char path[256];
    long long done = 0, unexpected = 0, lag_max = 0;
    const long long step_ns = 1000000LL;
    long long start = now_ns();
    long long tick = start;
    while (done < total) {
        long long now = now_ns();
        /* How many opens the schedule asks for by now (capped at the total). */
        long long due = (long long)((double)(now - start) * rate / 1e9) + 1;
        if (due > total)
            due = total;
        if (done < due) {
            /* Behind by: now minus the scheduled time of the next open. */
            long long scheduled = start + (long long)((double)done * 1e9 / rate);
            if (now - scheduled > lag_max)
                lag_max = now - scheduled;
        }
        for (; done < due; done++) {
            snprintf(path, sizeof path, "%s%lld", prefix, done);
            int fd = open(path, O_RDONLY);
            if (fd >= 0) {
                close(fd);
                unexpected++;
            } else if (errno != ENOENT) {
                unexpected++;
            }
        }
        if (done < total) {
            tick += step_ns;
            if (tick > now_ns())
                sleep_until(tick);
            else
                tick = now_ns();
        }
    }
    long long elapsed = now_ns() - start;
    printf("ops=%lld elapsed_ns=%lld ns_per_op=%.1f rate=%.0f lag_max_ns=%lld unexpected=%lld\n",
           done, elapsed, (double)elapsed / (double)done, (double)done * 1e9 / (double)elapsed,
           lag_max, unexpected);
    return 0;
}
