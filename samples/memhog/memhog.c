/*
 * memhog: grows its memory step by step, touching every byte, and prints how much it holds.
 *
 * Shows memory limits: with `resources.limits.memory` set, the runtime refuses the linear
 * memory growth that would cross the limit and the pod ends OOMKilled, while neighbour pods
 * keep running. Without a limit it grows until it is stopped (or hits MAX_MIB and holds).
 *
 *   memhog [STEP_MIB [INTERVAL_MS [MAX_MIB]]]    defaults: 1 MiB, 100 ms, 0 (= no cap)
 *
 * Growth goes through malloc (dlmalloc -> sbrk -> memory.grow). If malloc reports failure
 * instead of the runtime trapping, memhog keeps growing with memory.grow directly, one page at
 * a time, so the limit is really hit; if even that is refused without a trap it says so on
 * stderr and aborts (an `unreachable` trap).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIB (1024UL * 1024UL)
#define WASM_PAGE (64UL * 1024UL)

static unsigned long parse_arg(int argc, char **argv, int index, unsigned long fallback) {
    if (argc <= index) {
        return fallback;
    }
    char *end = NULL;
    unsigned long value = strtoul(argv[index], &end, 10);
    if (end == argv[index] || *end != '\0') {
        fprintf(stderr, "memhog: ignoring bad argument '%s'\n", argv[index]);
        return fallback;
    }
    return value;
}

static void sleep_ms(unsigned long ms) {
    if (ms == 0) {
        return;
    }
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Every block is chained from here, so the allocations stay reachable and the compiler cannot
 * drop the malloc/memset pairs as dead stores. */
static void *volatile held_blocks;

static unsigned long long memory_bytes(void) {
    return (unsigned long long)__builtin_wasm_memory_size(0) * WASM_PAGE;
}

/* Keeps growing linear memory directly; only returns if a grow is refused without a trap. */
static void grow_directly(unsigned long interval_ms) {
    for (;;) {
        size_t previous = __builtin_wasm_memory_grow(0, 1);
        if (previous == (size_t)-1) {
            fprintf(stderr, "memhog: memory.grow refused at %llu MiB of linear memory\n",
                    memory_bytes() / MIB);
            return;
        }
        /* Touch the new page so it is really backed. */
        volatile char *page = (volatile char *)(previous * WASM_PAGE);
        for (unsigned long i = 0; i < WASM_PAGE; i += 4096) {
            page[i] = 0x5a;
        }
        if ((previous + 1) % (MIB / WASM_PAGE) == 0) {
            printf("memhog: linear memory %llu MiB (memory.grow)\n", memory_bytes() / MIB);
            fflush(stdout);
            sleep_ms(interval_ms / 4);
        }
    }
}

int main(int argc, char **argv) {
    unsigned long step_mib = parse_arg(argc, argv, 1, 1);
    unsigned long interval_ms = parse_arg(argc, argv, 2, 100);
    unsigned long max_mib = parse_arg(argc, argv, 3, 0);
    if (step_mib == 0) {
        step_mib = 1;
    }
    printf("memhog: growing by %lu MiB every %lu ms%s\n", step_mib, interval_ms,
           max_mib ? "" : " until stopped");
    fflush(stdout);

    unsigned long held_mib = 0;
    for (;;) {
        if (max_mib != 0 && held_mib + step_mib > max_mib) {
            printf("memhog: holding %lu MiB (cap reached)\n", held_mib);
            fflush(stdout);
            for (;;) {
                sleep_ms(1000);
            }
        }
        char *block = malloc(step_mib * MIB);
        if (block == NULL) {
            fprintf(stderr, "memhog: malloc of %lu MiB failed while holding %lu MiB\n",
                    step_mib, held_mib);
            grow_directly(interval_ms);
            abort();
        }
        memset(block, 0xa5, step_mib * MIB);
        *(void **)block = held_blocks;
        held_blocks = block;
        held_mib += step_mib;
        printf("memhog: holding %lu MiB (linear memory %llu MiB)\n", held_mib,
               memory_bytes() / MIB);
        fflush(stdout);
        sleep_ms(interval_ms);
    }
}
