/*
 * spin: a busy guest that never waits. It works in rounds of a fixed amount of arithmetic and,
 * every REPORT_MS milliseconds of wall-clock time, prints how many rounds it has done so far:
 *
 *     spin <rounds> <elapsed_ms>
 *
 * Shows CPU limits: with `resources.limits.cpu: 100m` the agent lets it run 10 ms of every
 * 100 ms (a CFS quota), so it does about a tenth of the rounds an unlimited spinner does, and
 * many of them on one node leave the control plane responsive. The rate of rounds (rounds per
 * elapsed millisecond) is its share of a core, measured by the guest itself.
 *
 * Optional first argument: the report interval in milliseconds (default 1000).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* xorshift steps per round: some tens of microseconds of work. */
#define STEPS_PER_ROUND 20000

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv) {
    long report_ms = 1000;
    if (argc > 1) {
        char *end = NULL;
        long parsed = strtol(argv[1], &end, 10);
        if (end != argv[1] && *end == '\0' && parsed > 0) {
            report_ms = parsed;
        } else {
            fprintf(stderr, "spin: ignoring bad report interval '%s'\n", argv[1]);
        }
    }
    uint64_t start = now_ms();
    uint64_t next = start + (uint64_t)report_ms;
    unsigned long long rounds = 0;
    volatile uint32_t state = 0x9e3779b9u;
    for (;;) {
        uint32_t x = state;
        for (int i = 0; i < STEPS_PER_ROUND; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
        }
        state = x;
        rounds++;
        uint64_t now = now_ms();
        if (now >= next) {
            printf("spin %llu %llu\n", rounds, (unsigned long long)(now - start));
            fflush(stdout);
            next = now + (uint64_t)report_ms;
        }
    }
}
