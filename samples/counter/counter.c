/*
 * counter: runs forever, printing an increasing counter once a second.
 *
 * Shows a long-running command pod: `kubectl logs -f` streams its output and `kubectl delete`
 * stops it (the guest never exits by itself, so the runtime has to interrupt it). The sleep is
 * wasi-libc's nanosleep, i.e. a poll_oneoff on a monotonic clock: the guest is idle, not
 * spinning, between lines.
 *
 * Optional first argument: the interval in milliseconds (default 1000).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    long interval_ms = 1000;
    if (argc > 1) {
        char *end = NULL;
        long parsed = strtol(argv[1], &end, 10);
        if (end != argv[1] && *end == '\0' && parsed > 0) {
            interval_ms = parsed;
        } else {
            fprintf(stderr, "counter: ignoring bad interval '%s'\n", argv[1]);
        }
    }
    struct timespec interval = {
        .tv_sec = interval_ms / 1000,
        .tv_nsec = (interval_ms % 1000) * 1000000L,
    };
    for (unsigned long long n = 0;; n++) {
        printf("count %llu\n", n);
        fflush(stdout);
        nanosleep(&interval, NULL);
    }
}
