/*
 * crash: prints a line to stdout and a message to stderr, then exits with status 1.
 *
 * Shows failure handling: with restartPolicy Always the pod goes into CrashLoopBackOff with a
 * growing back-off, the restart count rises, and lastState.terminated carries exit code 1.
 * Optional first argument: the exit code to use instead of 1.
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int code = 1;
    if (argc > 1) {
        code = atoi(argv[1]);
    }
    printf("crash: starting, about to fail\n");
    fprintf(stderr, "crash: something went wrong, exiting with status %d\n", code);
    return code;
}
