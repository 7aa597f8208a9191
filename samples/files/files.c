/*
 * files: shows that pod volumes and env reach the guest.
 *
 *   /config   a configMap volume   (every file is printed)
 *   /secret   a secret volume      (every file is printed)
 *   /podinfo  a downwardAPI volume (every file is printed)
 *   /data     an emptyDir volume   (a line is appended to /data/runs.log and read back)
 *
 * Then it prints the environment (sorted) and exits 0. Directories that are not mounted are
 * reported as such and skipped; a mounted directory that cannot be read, or an emptyDir that
 * cannot be written and read back, makes it exit 1. Entries whose names start with '.' are
 * skipped, like the `..data` links of Kubernetes' atomic volume writer. Since the emptyDir
 * outlives container restarts, runs.log counts the runs of the pod.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

extern char **environ;

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int print_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "files: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    printf("==> %s <==\n", path);
    char buf[4096];
    size_t n;
    int last = '\n';
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        fwrite(buf, 1, n, stdout);
        last = buf[n - 1];
    }
    int failed = ferror(f);
    fclose(f);
    if (last != '\n') {
        putchar('\n');
    }
    if (failed) {
        fprintf(stderr, "files: error reading %s\n", path);
        return -1;
    }
    return 0;
}

/* Prints every regular file under dir (sorted, recursing into subdirectories). */
static int print_tree(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "files: cannot list %s: %s\n", dir, strerror(errno));
        return -1;
    }
    size_t count = 0, capacity = 16;
    char **names = malloc(capacity * sizeof(char *));
    struct dirent *entry;
    while (names != NULL && (entry = readdir(d)) != NULL) {
        if (entry->d_name[0] == '.') {
            continue;
        }
        if (count == capacity) {
            capacity *= 2;
            char **grown = realloc(names, capacity * sizeof(char *));
            if (grown == NULL) {
                break;
            }
            names = grown;
        }
        names[count++] = strdup(entry->d_name);
    }
    closedir(d);
    if (names == NULL) {
        return -1;
    }
    qsort(names, count, sizeof(char *), compare_strings);
    int result = 0;
    for (size_t i = 0; i < count; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) != 0) {
            fprintf(stderr, "files: cannot stat %s: %s\n", path, strerror(errno));
            result = -1;
        } else if (S_ISDIR(st.st_mode) && depth < 4) {
            result |= print_tree(path, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            result |= print_file(path);
        }
        free(names[i]);
    }
    free(names);
    return result;
}

static int show_volume(const char *dir, const char *what) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("%s: %s is not mounted\n", what, dir);
        return 0;
    }
    printf("%s: %s\n", what, dir);
    return print_tree(dir, 0);
}

static int use_empty_dir(const char *dir) {
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("emptyDir: %s is not mounted\n", dir);
        return 0;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/runs.log", dir);
    FILE *f = fopen(path, "a");
    if (f == NULL || fputs("run\n", f) == EOF || fclose(f) != 0) {
        fprintf(stderr, "files: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "files: cannot read back %s: %s\n", path, strerror(errno));
        return -1;
    }
    int runs = 0;
    char line[64];
    while (fgets(line, sizeof line, f) != NULL) {
        if (strcmp(line, "run\n") == 0) {
            runs++;
        }
    }
    fclose(f);
    if (runs < 1) {
        fprintf(stderr, "files: %s does not hold what was written\n", path);
        return -1;
    }
    printf("emptyDir: wrote and read back %s (%d run%s)\n", path, runs, runs == 1 ? "" : "s");
    return 0;
}

static void print_env(void) {
    size_t count = 0;
    while (environ != NULL && environ[count] != NULL) {
        count++;
    }
    char **sorted = calloc(count + 1, sizeof(char *));
    if (sorted == NULL) {
        return;
    }
    memcpy(sorted, environ, count * sizeof(char *));
    qsort(sorted, count, sizeof(char *), compare_strings);
    for (size_t i = 0; i < count; i++) {
        printf("env %s\n", sorted[i]);
    }
    free(sorted);
}

int main(void) {
    int result = 0;
    result |= show_volume("/config", "configMap");
    result |= show_volume("/secret", "secret");
    result |= show_volume("/podinfo", "downwardAPI");
    result |= use_empty_dir("/data");
    print_env();
    printf("files: %s\n", result == 0 ? "done" : "FAILED");
    return result == 0 ? 0 : 1;
}
