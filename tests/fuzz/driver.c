/*
 * A stand-in for libFuzzer's main: feeds every file named on the command line
 * (a directory means every file in it) to LLVMFuzzerTestOneInput once. It lets
 * the `fuzz` suite replay seed corpora and past crashes in any build.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        return 1;
    }
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *grown = realloc(data, cap);
            if (!grown) {
                free(data);
                fclose(file);
                return 1;
            }
            data = grown;
        }
        size_t got = fread(data + len, 1, cap - len, file);
        if (got == 0)
            break;
        len += got;
    }
    fclose(file);
    LLVMFuzzerTestOneInput(data, len);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    int failures = 0, inputs = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            failures++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failures += run_file(argv[i]);
            inputs++;
            continue;
        }
        DIR *dir = opendir(argv[i]);
        if (!dir) {
            perror(argv[i]);
            failures++;
            continue;
        }
        struct dirent *entry;
        while ((entry = readdir(dir))) {
            if (entry->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[i], entry->d_name);
            failures += run_file(path);
            inputs++;
        }
        closedir(dir);
    }
    /* An empty input always runs too: the smallest malformed record. */
    LLVMFuzzerTestOneInput((const uint8_t *)"", 0);
    printf("%d inputs replayed, %d unreadable\n", inputs, failures);
    return failures ? 1 : 0;
}
