/*
 * hello: prints its arguments and its environment (sorted by name), then exits 0.
 *
 * The smallest WASI preview1 command: shows that args (the container's command/args) and env
 * (the container's env and the pod's downward values) reach the guest, and that stdout ends up
 * in `kubectl logs`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    printf("hello from wasm\n");
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) {
        printf("arg[%d]=%s\n", i, argv[i]);
    }

    size_t count = 0;
    while (environ != NULL && environ[count] != NULL) {
        count++;
    }
    char **sorted = calloc(count + 1, sizeof(char *));
    if (sorted == NULL && count > 0) {
        fprintf(stderr, "hello: out of memory\n");
        return 2;
    }
    for (size_t i = 0; i < count; i++) {
        sorted[i] = environ[i];
    }
    qsort(sorted, count, sizeof(char *), compare_strings);
    printf("env count=%zu\n", count);
    for (size_t i = 0; i < count; i++) {
        printf("env %s\n", sorted[i]);
    }
    free(sorted);
    printf("bye\n");
    return 0;
}
