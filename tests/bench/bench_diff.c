/*
 * weft-bench-diff: times crdt_diff on generated text and checks each result
 * by applying it. Prints figures (or one JSON object with --json); never fails
 * on a time, only on a wrong diff.
 *
 *   weft-bench-diff [--json] [--size BYTES] [--changes N] [--seed S]
 *
 * Cases: a file of --size bytes (10 MB) of source-like lines with --changes
 * scattered edits (100); one line edited in a 100 KB file; two unrelated 1 MB
 * files (the fallback path); a 1 MB file of lines from a tiny vocabulary
 * (blank lines, braces) with scattered edits; a 1 MB file of one repeated line
 * with scattered edits; two unrelated files of --size bytes. Each time is the
 * median of several runs.
 */
#include "crdt/codec.h"
#include "crdt/diff.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rand_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t rand_below(uint64_t *state, size_t bound)
{
    return bound ? (size_t)(rand_next(state) % bound) : 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void put_str(struct crdt_buf *buf, const char *text)
{
    crdt_buf_put(buf, text, strlen(text));
}

/* One line of C-like source: indentation, a few identifiers, sometimes a brace or a blank. */
static void put_source_line(struct crdt_buf *buf, uint64_t *rng)
{
    static const char *const words[] = {
        "int",    "return", "if",     "else",  "for",   "while", "struct", "const",  "size_t",
        "buffer", "count",  "length", "error", "node",  "tree",  "text",   "offset", "replica",
        "=",      "+",      "==",     "!=",    "(",     ")",     "->",     "0",      "1",
        "NULL",   "goto",   "out",    "free",  "alloc", "crdt",  "diff",   "lines",  "edit"};
    size_t pick = rand_below(rng, 20);
    if (pick == 0) {
        put_str(buf, "\n");
        return;
    }
    if (pick == 1) {
        put_str(buf, "}\n");
        return;
    }
    size_t indent = rand_below(rng, 4);
    for (size_t i = 0; i < indent; i++)
        put_str(buf, "    ");
    size_t count = 2 + rand_below(rng, 7);
    for (size_t i = 0; i < count; i++) {
        put_str(buf, words[rand_below(rng, sizeof(words) / sizeof(words[0]))]);
        put_str(buf, i + 1 < count ? " " : "");
    }
    /* A number makes most lines unique, as in real code and prose. */
    char tail[32];
    snprintf(tail, sizeof(tail), " %zu;\n", rand_below(rng, 100000));
    put_str(buf, tail);
}

static void put_repetitive_line(struct crdt_buf *buf, uint64_t *rng)
{
    static const char *const lines[] = {"\n", "}\n", "{\n", "    }\n", "        return 0;\n"};
    put_str(buf, lines[rand_below(rng, sizeof(lines) / sizeof(lines[0]))]);
}

static void make_source(struct crdt_buf *buf, size_t size, uint64_t *rng,
                        void (*put_line)(struct crdt_buf *, uint64_t *))
{
    while (buf->len < size)
        put_line(buf, rng);
}

/* Line starts of text (count + 1 entries, the last = len). */
static size_t *line_starts(const struct crdt_buf *text, size_t *count)
{
    size_t n = 0;
    for (size_t i = 0; i < text->len; i++)
        n += text->data[i] == '\n';
    size_t *starts = malloc((n + 2) * sizeof(size_t));
    if (!starts)
        abort();
    size_t line = 0;
    starts[line++] = 0;
    for (size_t i = 0; i < text->len; i++) {
        if (text->data[i] == '\n' && i + 1 < text->len)
            starts[line++] = i + 1;
    }
    starts[line] = text->len;
    *count = line;
    return starts;
}

/*
 * Copies old into out with `changes` edits at sorted random lines: a word
 * changed in a line, a line inserted, a line deleted, a block of lines
 * replaced, a block inserted, a block moved a little further down.
 */
static void make_changed(struct crdt_buf *out, const struct crdt_buf *old, size_t changes,
                         uint64_t *rng, void (*put_line)(struct crdt_buf *, uint64_t *))
{
    size_t line_count;
    size_t *starts = line_starts(old, &line_count);
    size_t *at = malloc((changes + 1) * sizeof(size_t));
    if (!at)
        abort();
    for (size_t i = 0; i < changes; i++)
        at[i] = rand_below(rng, line_count);
    for (size_t i = 1; i < changes; i++) { /* insertion sort: changes is small */
        size_t value = at[i], j = i;
        for (; j > 0 && at[j - 1] > value; j--)
            at[j] = at[j - 1];
        at[j] = value;
    }
    size_t copied_to = 0; /* line index up to which old was copied */
    for (size_t i = 0; i < changes; i++) {
        size_t line = at[i];
        if (line < copied_to)
            continue;
        crdt_buf_put(out, old->data + starts[copied_to], starts[line] - starts[copied_to]);
        size_t line_len = starts[line + 1] - starts[line];
        switch (rand_below(rng, 6)) {
        case 0: { /* change a few bytes in the middle of the line */
            size_t cut = line_len / 2;
            crdt_buf_put(out, old->data + starts[line], cut);
            put_str(out, "changed");
            crdt_buf_put(out, old->data + starts[line] + cut, line_len - cut);
            copied_to = line + 1;
            break;
        }
        case 1:
            put_line(out, rng);
            copied_to = line;
            break;
        case 2:
            copied_to = line + 1;
            break;
        case 3: { /* replace up to 5 lines */
            size_t n = 1 + rand_below(rng, 5);
            for (size_t k = 0; k < n; k++)
                put_line(out, rng);
            copied_to = line + n < line_count ? line + n : line_count;
            break;
        }
        case 4: { /* insert up to 20 lines */
            size_t n = 1 + rand_below(rng, 20);
            for (size_t k = 0; k < n; k++)
                put_line(out, rng);
            copied_to = line;
            break;
        }
        default: { /* move up to 10 lines down past up to 30 others */
            size_t n = 1 + rand_below(rng, 10), past = 1 + rand_below(rng, 30);
            if (line + n + past > line_count) {
                copied_to = line;
                break;
            }
            crdt_buf_put(out, old->data + starts[line + n],
                         starts[line + n + past] - starts[line + n]);
            crdt_buf_put(out, old->data + starts[line], starts[line + n] - starts[line]);
            copied_to = line + n + past;
            break;
        }
        }
    }
    crdt_buf_put(out, old->data + starts[copied_to], old->len - starts[copied_to]);
    free(at);
    free(starts);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

struct timing {
    double median_ms;
    size_t edits;
    size_t edited_bytes; /* old_len + new_len summed over the edits */
    bool correct;
};

/* Diffs `runs` times, keeps the median, and checks the last result by applying it. */
static struct timing time_diff(const struct crdt_buf *old, const struct crdt_buf *new_text,
                               int runs)
{
    struct timing timing = {0};
    double samples[101];
    if (runs > 101)
        runs = 101;
    struct crdt_edit *edits = NULL;
    size_t count = 0;
    for (int i = 0; i < runs; i++) {
        free(edits);
        double start = now_ms();
        int rc =
            crdt_diff(&edits, &count, old->data, old->len, new_text->data, new_text->len, NULL);
        samples[i] = now_ms() - start;
        if (rc != 0) {
            fprintf(stderr, "crdt_diff failed: %d\n", rc);
            exit(1);
        }
    }
    qsort(samples, (size_t)runs, sizeof(double), compare_double);
    timing.median_ms = samples[runs / 2];
    timing.edits = count;
    for (size_t i = 0; i < count; i++)
        timing.edited_bytes += edits[i].old_len + edits[i].new_len;
    uint8_t *applied = NULL;
    size_t applied_len = 0;
    timing.correct = crdt_diff_apply(&applied, &applied_len, old->data, old->len, new_text->data,
                                     new_text->len, edits, count) == 0 &&
                     applied_len == new_text->len &&
                     memcmp(applied, new_text->data, applied_len) == 0;
    free(applied);
    free(edits);
    return timing;
}

static void usage(void)
{
    fprintf(stderr, "usage: weft-bench-diff [--json] [--size BYTES] [--changes N] [--seed S]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    bool json = false;
    size_t size = 10u << 20, changes = 100;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            size = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--changes") == 0 && i + 1 < argc)
            changes = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else
            usage();
    }
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 1;

    struct crdt_buf big = {0}, big_changed = {0};
    make_source(&big, size, &rng, put_source_line);
    make_changed(&big_changed, &big, changes, &rng, put_source_line);
    struct timing scattered = time_diff(&big, &big_changed, 5);

    struct crdt_buf small = {0}, small_changed = {0};
    make_source(&small, 100u << 10, &rng, put_source_line);
    make_changed(&small_changed, &small, 1, &rng, put_source_line);
    struct timing one_line = time_diff(&small, &small_changed, 101);

    struct crdt_buf unrelated_a = {0}, unrelated_b = {0};
    make_source(&unrelated_a, 1u << 20, &rng, put_source_line);
    make_source(&unrelated_b, 1u << 20, &rng, put_source_line);
    struct timing unrelated = time_diff(&unrelated_a, &unrelated_b, 5);

    struct crdt_buf repetitive = {0}, repetitive_changed = {0};
    make_source(&repetitive, 1u << 20, &rng, put_repetitive_line);
    make_changed(&repetitive_changed, &repetitive, changes, &rng, put_repetitive_line);
    struct timing repeated = time_diff(&repetitive, &repetitive_changed, 5);

    struct crdt_buf same_lines = {0}, same_lines_changed = {0};
    while (same_lines.len < 1u << 20)
        put_str(&same_lines, "    }\n");
    make_changed(&same_lines_changed, &same_lines, changes, &rng, put_repetitive_line);
    struct timing identical = time_diff(&same_lines, &same_lines_changed, 5);

    struct crdt_buf big_other = {0};
    make_source(&big_other, size, &rng, put_source_line);
    struct timing big_unrelated = time_diff(&big, &big_other, 3);

    bool correct = scattered.correct && one_line.correct && unrelated.correct && repeated.correct &&
                   identical.correct && big_unrelated.correct;
    if (json) {
        printf("{\"diff_10mb_scattered_ms\":%.3f,\"diff_100kb_one_line_ms\":%.4f,"
               "\"diff_1mb_unrelated_ms\":%.3f,\"diff_1mb_repetitive_ms\":%.3f,"
               "\"diff_1mb_identical_lines_ms\":%.3f,\"diff_10mb_unrelated_ms\":%.3f,"
               "\"size\":%zu,\"changes\":%zu,\"seed\":%llu,\"edits\":%zu,"
               "\"edited_bytes\":%zu,\"correct\":%s}\n",
               scattered.median_ms, one_line.median_ms, unrelated.median_ms, repeated.median_ms,
               identical.median_ms, big_unrelated.median_ms, size, changes,
               (unsigned long long)seed, scattered.edits, scattered.edited_bytes,
               correct ? "true" : "false");
    } else {
        printf("weft-bench-diff --size %zu --changes %zu --seed %llu\n", size, changes,
               (unsigned long long)seed);
        printf("  %-40s %9.3f ms  %zu edits, %zu bytes edited\n",
               "scattered changes, --size:", scattered.median_ms, scattered.edits,
               scattered.edited_bytes);
        printf("  %-40s %9.4f ms  %zu edits\n", "one line edited, 100 KB:", one_line.median_ms,
               one_line.edits);
        printf("  %-40s %9.3f ms  %zu edits\n", "unrelated files, 1 MB:", unrelated.median_ms,
               unrelated.edits);
        printf("  %-40s %9.3f ms  %zu edits\n", "tiny line vocabulary, 1 MB:", repeated.median_ms,
               repeated.edits);
        printf("  %-40s %9.3f ms  %zu edits\n", "one repeated line, 1 MB:", identical.median_ms,
               identical.edits);
        printf("  %-40s %9.3f ms  %zu edits\n", "unrelated files, --size:", big_unrelated.median_ms,
               big_unrelated.edits);
        printf("  results %s\n", correct ? "correct" : "WRONG");
    }
    crdt_buf_free(&big);
    crdt_buf_free(&big_changed);
    crdt_buf_free(&big_other);
    crdt_buf_free(&small);
    crdt_buf_free(&small_changed);
    crdt_buf_free(&unrelated_a);
    crdt_buf_free(&unrelated_b);
    crdt_buf_free(&repetitive);
    crdt_buf_free(&repetitive_changed);
    crdt_buf_free(&same_lines);
    crdt_buf_free(&same_lines_changed);
    return correct ? 0 : 1;
}
