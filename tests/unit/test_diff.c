/*
 * Unit tests for crdt/diff: exact edits for small cases, natural hunks on a
 * 1,000-line file, budget fallbacks, edit-list validation, and a seeded
 * property test (apply(old, diff(old, new)) == new, sorted, separated, on code
 * point boundaries).
 *
 * Property test: WEFT_DIFF_SEED=S runs only case S and prints it;
 * WEFT_DIFF_CASES=N changes the number of cases.
 */
#include "crdt/codec.h"
#include "crdt/diff.h"
#include "test.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define S(literal) (const uint8_t *)(literal), sizeof(literal) - 1

static const struct crdt_diff_options *default_options = NULL;

/* --- helpers ------------------------------------------------------------ */

static bool is_boundary(const uint8_t *bytes, size_t len, size_t pos)
{
    return pos >= len || (bytes[pos] & 0xC0) != 0x80;
}

static bool is_valid_utf8(const uint8_t *bytes, size_t len)
{
    for (size_t i = 0; i < len;) {
        uint8_t lead = bytes[i];
        size_t n = lead < 0x80   ? 1
                   : lead < 0xC2 ? 0
                   : lead < 0xE0 ? 2
                   : lead < 0xF0 ? 3
                   : lead < 0xF5 ? 4
                                 : 0;
        if (n == 0 || n > len - i)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((bytes[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += n;
    }
    return true;
}

/*
 * Everything crdt_diff promises about one result; NULL if it holds, else what
 * broke (a static string).
 */
static const char *edits_problem(const uint8_t *old_bytes, size_t old_len, const uint8_t *new_bytes,
                                 size_t new_len, const struct crdt_edit *edits, size_t count)
{
    if (crdt_diff_validate(edits, count, old_len, new_len) != 0)
        return "edit list does not validate";
    for (size_t i = 0; i + 1 < count; i++) {
        if (edits[i].old_pos + edits[i].old_len >= edits[i + 1].old_pos)
            return "edits touch or overlap";
    }
    uint8_t *result = NULL;
    size_t result_len = 0;
    if (crdt_diff_apply(&result, &result_len, old_bytes, old_len, new_bytes, new_len, edits,
                        count) != 0)
        return "apply failed";
    bool same = result_len == new_len && (new_len == 0 || memcmp(result, new_bytes, new_len) == 0);
    free(result);
    if (!same)
        return "apply(old, edits) != new";
    if (is_valid_utf8(old_bytes, old_len) && is_valid_utf8(new_bytes, new_len)) {
        for (size_t i = 0; i < count; i++) {
            const struct crdt_edit *e = &edits[i];
            if (!is_boundary(old_bytes, old_len, e->old_pos) ||
                !is_boundary(old_bytes, old_len, e->old_pos + e->old_len) ||
                !is_boundary(new_bytes, new_len, e->new_pos) ||
                !is_boundary(new_bytes, new_len, e->new_pos + e->new_len))
                return "edit splits a code point";
        }
    }
    return NULL;
}

static void print_edits(const struct crdt_edit *edits, size_t count)
{
    for (size_t i = 0; i < count; i++)
        fprintf(stderr, "    {%zu, %zu, %zu, %zu}\n", edits[i].old_pos, edits[i].old_len,
                edits[i].new_pos, edits[i].new_len);
}

/* Diffs, checks the general promises, and compares with the expected edits. */
static void expect_edits(int line, const uint8_t *old_bytes, size_t old_len,
                         const uint8_t *new_bytes, size_t new_len, const struct crdt_edit *expected,
                         size_t expected_count)
{
    struct crdt_edit *edits = NULL;
    size_t count = 0;
    test_checks++;
    int rc = crdt_diff(&edits, &count, old_bytes, old_len, new_bytes, new_len, default_options);
    const char *problem = rc ? "crdt_diff failed"
                             : edits_problem(old_bytes, old_len, new_bytes, new_len, edits, count);
    bool same = !problem && count == expected_count;
    for (size_t i = 0; same && i < count; i++)
        same = memcmp(&edits[i], &expected[i], sizeof(edits[i])) == 0;
    if (!same) {
        test_failures++;
        fprintf(stderr, "%s:%d: \"%.*s\" -> \"%.*s\": %s; expected %zu edits:\n", __FILE__, line,
                (int)old_len, (const char *)old_bytes, (int)new_len, (const char *)new_bytes,
                problem ? problem : "wrong edits", expected_count);
        print_edits(expected, expected_count);
        fprintf(stderr, "  got %zu:\n", count);
        print_edits(edits, count);
    }
    free(edits);
}

#define EXPECT(old_literal, new_literal, ...)                                                      \
    do {                                                                                           \
        const struct crdt_edit expected_[] = {__VA_ARGS__};                                        \
        expect_edits(__LINE__, S(old_literal), S(new_literal), expected_,                          \
                     sizeof(expected_) / sizeof(expected_[0]));                                    \
    } while (0)

#define EXPECT_NONE(old_literal, new_literal)                                                      \
    expect_edits(__LINE__, S(old_literal), S(new_literal), NULL, 0)

/* Diffs and checks the general promises; returns the edits (caller frees). */
static struct crdt_edit *diff_checked(int line, const uint8_t *old_bytes, size_t old_len,
                                      const uint8_t *new_bytes, size_t new_len,
                                      const struct crdt_diff_options *options, size_t *count)
{
    struct crdt_edit *edits = NULL;
    *count = 0;
    int rc = crdt_diff(&edits, count, old_bytes, old_len, new_bytes, new_len, options);
    test_checks++;
    const char *problem = rc ? "crdt_diff failed"
                             : edits_problem(old_bytes, old_len, new_bytes, new_len, edits, *count);
    if (problem) {
        test_failures++;
        fprintf(stderr, "%s:%d: %s (rc %d)\n", __FILE__, line, problem, rc);
    }
    return edits;
}

/* --- exact small cases ---------------------------------------------------- */

static void test_trivial(void)
{
    EXPECT_NONE("", "");
    EXPECT_NONE("same text\n", "same text\n");
    EXPECT("", "hello", {0, 0, 0, 5});
    EXPECT("hello", "", {0, 5, 0, 0});
    EXPECT("abcdef", "abXYef", {2, 2, 2, 2});
    EXPECT("abc", "axc", {1, 1, 1, 1});
    EXPECT("abc", "abcd", {3, 0, 3, 1});
    EXPECT("abc", "zabc", {0, 0, 0, 1});

    /* NULL is fine for an empty side. */
    struct crdt_edit *edits = NULL;
    size_t count = 9;
    CHECK_INT(0, crdt_diff(&edits, &count, NULL, 0, NULL, 0, NULL));
    CHECK_INT(0, count);
    CHECK(edits == NULL);
    CHECK_INT(0, crdt_diff(&edits, &count, NULL, 0, S("x"), NULL));
    CHECK_INT(1, count);
    free(edits);
    CHECK_INT(-EINVAL, crdt_diff(&edits, &count, NULL, 3, S("x"), NULL));
    CHECK_INT(-EINVAL, crdt_diff(NULL, &count, S("a"), S("b"), NULL));
}

static void test_natural_words(void)
{
    EXPECT("the cat", "the black cat", {4, 0, 4, 6});
    EXPECT("the black cat", "the cat", {4, 6, 4, 0});
    EXPECT("hello world", "hello big world", {6, 0, 6, 4});
    EXPECT("The quick brown fox", "The slow brown fox", {4, 5, 4, 4});
    /* A transposition is one replace, not two scattered one-letter edits; a
     * replace that leaves a one-letter sliver of the word takes the word. */
    EXPECT("teh end", "the end", {0, 3, 0, 3});
    EXPECT("a recieve b", "a receive b", {5, 2, 5, 2});
    /* Inside a word, "f|re|e" -> "|re|leas|e" is the word replaced. */
    EXPECT("x = free(p);", "x = release(p);", {4, 4, 4, 7});
    /* Removing accents keeps the letters around them. */
    EXPECT("r\xC3\xA9sum\xC3\xA9", "resume", {1, 2, 1, 1}, {6, 2, 5, 1});
    /* Deleting the end of a word is a delete, not a replace of a tie Myers broke oddly. */
    EXPECT("free(buffer);", "free(buf);", {8, 3, 8, 0});
    /* Two words changed far apart stay two edits. */
    EXPECT("alpha beta gamma delta epsilon", "alpha BETA gamma delta EPSILON", {6, 4, 6, 4},
           {23, 7, 23, 7});
    /* Unrelated words share letters; still one replace per word. */
    EXPECT("say hello there", "say world there", {4, 5, 4, 5});
}

static void test_lines(void)
{
    EXPECT("a\nb\nc\n", "a\nB\nc\n", {2, 1, 2, 1});
    /* Whole lines are inserted and deleted at line starts, not shifted by a byte. */
    EXPECT("a\nc\n", "a\nb\nc\n", {2, 0, 2, 2});
    EXPECT("a\nb\nc\n", "a\nc\n", {2, 2, 2, 0});
    EXPECT("foo\nbar\n", "foo\nbaz\nbar\n", {4, 0, 4, 4});
    /* A paragraph goes after a blank line, taking its own blank line with it. */
    EXPECT("a\n\nb\n", "a\n\nx\n\nb\n", {3, 0, 3, 3});
    EXPECT("}\n\nint f(void)\n{\n}\n", "}\n\nint g(void)\n{\n}\n\nint f(void)\n{\n}\n",
           {3, 0, 3, 17});
    /* No trailing newline on either side. */
    EXPECT("one\ntwo", "one\nthree", {4, 3, 4, 5});
    /* A changed line and an inserted one are two edits, not one across both lines. */
    EXPECT("int main(void)\n{\n    return 0;\n}\n",
           "int main(int argc, char **argv)\n{\n    (void)argc;\n    return 0;\n}\n", {9, 4, 9, 21},
           {17, 0, 34, 16});
}

static void test_utf8_boundaries(void)
{
    /* é = C3 A9 and è = C3 A8 share their lead byte: the edit takes the whole code point. */
    EXPECT("\xC3\xA9", "\xC3\xA8", {0, 2, 0, 2});
    EXPECT("a\xC3\xA9 b", "a\xC3\xA8 b", {1, 2, 1, 2});
    /* é = C3 A9 and © = C2 A9 share their last byte. */
    EXPECT("x\xC3\xA9y", "x\xC2\xA9y", {1, 2, 1, 2});
    /* € = E2 82 AC, ₭ = E2 82 AD: two shared leading bytes. */
    EXPECT("1 \xE2\x82\xAC", "1 \xE2\x82\xAD", {2, 3, 2, 3});
    /* 😀 = F0 9F 98 80 and 😁 = F0 9F 98 81. */
    EXPECT("\xF0\x9F\x98\x80!", "\xF0\x9F\x98\x81!", {0, 4, 0, 4});
    /* Insert a code point before one with the same lead byte. */
    EXPECT("\xC3\xA9t\xC3\xA9", "\xC3\xA9t\xC3\xA8\xC3\xA9", {3, 0, 3, 2});
    /* Inside a word of multi-byte letters: the edit is whole code points. */
    EXPECT("\xD0\xBA\xD0\xBE\xD1\x82", "\xD0\xBA\xD0\xB8\xD1\x82", {2, 2, 2, 2});
    /* Invalid UTF-8 still round-trips (byte-level units). */
    EXPECT("\xC3\xC3\xA9\x80", "\xC3\xA9\x80\xFF", {0, 1, 0, 0}, {4, 0, 3, 1});

    size_t len = 0;
    CHECK_INT(5, crdt_diff_count_code_points((const uint8_t *)"a\xC3\xA9\xE2\x82\xAC\xF0\x9F"
                                                              "\x98\x80z",
                                             len = 11));
    CHECK_INT(0, crdt_diff_count_code_points(NULL, 0));
}

/* --- a 1,000-line file ------------------------------------------------------ */

static void put_line(struct crdt_buf *buf, int number, const char *text)
{
    char line[96];
    int len = snprintf(line, sizeof(line), "line %04d: %s\n", number, text);
    crdt_buf_put(buf, line, (size_t)len);
}

static void test_thousand_lines(void)
{
    struct crdt_buf old_buf = {0}, new_buf = {0};
    size_t line_start[1001];
    for (int i = 0; i < 1000; i++) {
        line_start[i] = old_buf.len;
        put_line(&old_buf, i, "the quick brown fox jumps over the lazy dog");
    }
    line_start[1000] = old_buf.len;
    size_t inserted_len = 0;
    for (int i = 0; i < 1000; i++) {
        if (i == 100)
            put_line(&new_buf, i, "the slow brown fox jumps over the lazy dog");
        else if (i >= 300 && i <= 302)
            continue;
        else if (i == 999)
            put_line(&new_buf, i, "the quick brown fox jumps over the lazy cat");
        else
            put_line(&new_buf, i, "the quick brown fox jumps over the lazy dog");
        if (i == 700) {
            size_t before = new_buf.len;
            crdt_buf_put(&new_buf, "an inserted line\nand another one\n", 33);
            inserted_len = new_buf.len - before;
        }
    }
    CHECK_INT(0, crdt_buf_status(&old_buf));
    CHECK_INT(0, crdt_buf_status(&new_buf));

    size_t count;
    struct crdt_edit *edits =
        diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data, new_buf.len, NULL, &count);
    CHECK_INT(4, count);
    if (count == 4) {
        /* "quick" -> "slow" in line 100. */
        CHECK_INT(line_start[100] + 15, edits[0].old_pos);
        CHECK_INT(5, edits[0].old_len);
        CHECK_INT(4, edits[0].new_len);
        /* Lines 300-302 deleted, exactly. */
        CHECK_INT(line_start[300], edits[1].old_pos);
        CHECK_INT(line_start[303] - line_start[300], edits[1].old_len);
        CHECK_INT(0, edits[1].new_len);
        /* Two lines inserted at the start of line 701. */
        CHECK_INT(line_start[701], edits[2].old_pos);
        CHECK_INT(0, edits[2].old_len);
        CHECK_INT(inserted_len, edits[2].new_len);
        /* "dog" -> "cat" at the end of line 999. */
        CHECK_INT(line_start[1000] - 4, edits[3].old_pos);
        CHECK_INT(3, edits[3].old_len);
        CHECK_INT(3, edits[3].new_len);
    } else {
        print_edits(edits, count);
    }
    free(edits);
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
}

/* --- large inputs: sampled anchors, rewrites, chunks ------------------------ */

static void put_numbered_line(struct crdt_buf *buf, size_t number, const char *tag)
{
    char line[96];
    int len = snprintf(line, sizeof(line), "%s %06zu: some words that repeat\n", tag, number);
    crdt_buf_put(buf, line, (size_t)len);
}

/*
 * 100,000 lines: anchoring looks at a sample of the lines first. A word
 * changed in two lines, three lines deleted, five lines moved down past
 * thirty-five, two lines inserted: six edits, at those lines.
 */
static void test_large_file(void)
{
    enum { LINES = 100000 };
    struct crdt_buf old_buf = {0}, new_buf = {0};
    size_t *start = malloc((LINES + 1) * sizeof(size_t));
    CHECK(start != NULL);
    if (!start)
        return;
    for (size_t i = 0; i < LINES; i++) {
        start[i] = old_buf.len;
        put_numbered_line(&old_buf, i, "line");
    }
    start[LINES] = old_buf.len;
    for (size_t i = 0; i < LINES; i++) {
        if (i == 10000 || i == 50000) {
            put_numbered_line(&new_buf, i, "LINE");
        } else if (i >= 70000 && i < 70003) {
            continue;
        } else if (i >= 80000 && i < 80040) {
            size_t from = i < 80035 ? i + 5 : i - 35; /* 80005..80039, then 80000..80004 */
            crdt_buf_put(&new_buf, old_buf.data + start[from], start[from + 1] - start[from]);
        } else {
            put_numbered_line(&new_buf, i, "line");
        }
        if (i == 95000)
            crdt_buf_put(&new_buf, "new one\nnew two\n", 16);
    }
    size_t count;
    struct crdt_edit *edits =
        diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data, new_buf.len, NULL, &count);
    CHECK_INT(6, count);
    if (count == 6) {
        CHECK_INT(start[10000], edits[0].old_pos);
        CHECK_INT(4, edits[0].old_len);
        CHECK_INT(start[50000], edits[1].old_pos);
        CHECK_INT(start[70000], edits[2].old_pos);
        CHECK_INT(start[70003] - start[70000], edits[2].old_len);
        CHECK_INT(0, edits[2].new_len);
        /* The five lines move (a delete, then an insert of the same bytes); the 35 stay. */
        CHECK_INT(start[80000], edits[3].old_pos);
        CHECK_INT(start[80005] - start[80000], edits[3].old_len);
        CHECK_INT(0, edits[3].new_len);
        CHECK_INT(start[80040], edits[4].old_pos);
        CHECK_INT(start[80005] - start[80000], edits[4].new_len);
        CHECK_INT(start[95001], edits[5].old_pos);
        CHECK_INT(16, edits[5].new_len);
    } else {
        print_edits(edits, count);
    }
    free(edits);

    /* Against 40,000 unrelated lines (sharing only blank lines): one replace. */
    crdt_buf_free(&new_buf);
    for (size_t i = 0; i < 40000; i++) {
        if (i % 10 == 0)
            crdt_buf_put_u8(&new_buf, '\n');
        else
            put_numbered_line(&new_buf, i * 7 + 3, "other");
    }
    edits =
        diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data, new_buf.len, NULL, &count);
    CHECK_INT(1, count);
    free(edits);
    free(start);
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
}

/* One 300 KB line (minified code, say): twenty words changed are twenty edits. */
static void test_long_line(void)
{
    struct crdt_buf old_buf = {0}, new_buf = {0};
    uint64_t rng = 4242;
    static const char *const words[] = {"var", "function", "return", "x", "y", "=",
                                        ";",   "{",        "}",      "(", ")", "\xC3\xA9"};
    size_t changed[20], changed_count = 0;
    while (old_buf.len < 300000) {
        bool change = changed_count < 20 && test_rand_below(&rng, 3000) == 0;
        if (change)
            changed[changed_count++] = old_buf.len;
        const char *word = change ? "alpha" : words[test_rand_below(&rng, 12)];
        crdt_buf_put(&old_buf, word, strlen(word));
        crdt_buf_put(&new_buf, change ? "OMEGA" : word, strlen(word));
        crdt_buf_put_u8(&old_buf, ' ');
        crdt_buf_put_u8(&new_buf, ' ');
    }
    size_t count;
    struct crdt_edit *edits =
        diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data, new_buf.len, NULL, &count);
    CHECK_INT(changed_count, count);
    for (size_t i = 0; i < count && i < changed_count; i++) {
        CHECK_INT(changed[i], edits[i].old_pos);
        CHECK_INT(5, edits[i].old_len);
        CHECK_INT(5, edits[i].new_len);
    }
    free(edits);
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
}

/*
 * Every line of a 3,000-line file edited in place: re-indented, line endings
 * converted. One small edit per line, not one replace of the file (which would
 * delete text another replica may be editing). And a list of similar lines
 * shifted by an insert at the top: an insert and a delete, not a replace per
 * line.
 */
static void test_every_line_edited(void)
{
    struct crdt_buf old_buf = {0}, indented = {0}, crlf = {0}, shifted = {0};
    uint64_t rng = 31;
    static const char *const words[] = {"alpha", "beta", "count", "buffer", "x", "y", "return"};
    for (int i = 0; i < 3000; i++) {
        struct crdt_buf line = {0};
        size_t indent = (size_t)test_rand_below(&rng, 3);
        for (size_t k = 0; k < indent; k++)
            crdt_buf_put(&line, "    ", 4);
        size_t count = 2 + (size_t)test_rand_below(&rng, 6);
        for (size_t k = 0; k < count; k++) {
            const char *word = words[test_rand_below(&rng, 7)];
            crdt_buf_put(&line, word, strlen(word));
            crdt_buf_put_u8(&line, k + 1 < count ? ' ' : ';');
        }
        crdt_buf_put(&old_buf, line.data, line.len);
        crdt_buf_put_u8(&old_buf, '\n');
        crdt_buf_put(&indented, "    ", 4);
        crdt_buf_put(&indented, line.data, line.len);
        crdt_buf_put_u8(&indented, '\n');
        crdt_buf_put(&crlf, line.data, line.len);
        crdt_buf_put(&crlf, "\r\n", 2);
        crdt_buf_free(&line);
    }
    size_t count;
    struct crdt_edit *edits = diff_checked(__LINE__, old_buf.data, old_buf.len, indented.data,
                                           indented.len, NULL, &count);
    CHECK_INT(3000, count);
    bool all_indents = true;
    for (size_t i = 0; i < count; i++)
        all_indents &= edits[i].old_len == 0 && edits[i].new_len == 4;
    CHECK(all_indents);
    free(edits);
    edits = diff_checked(__LINE__, old_buf.data, old_buf.len, crlf.data, crlf.len, NULL, &count);
    CHECK_INT(3000, count);
    bool all_cr = true;
    for (size_t i = 0; i < count; i++)
        all_cr &=
            edits[i].old_len == 0 && edits[i].new_len == 1 && crlf.data[edits[i].new_pos] == '\r';
    CHECK(all_cr);
    free(edits);

    crdt_buf_free(&old_buf);
    crdt_buf_put(&shifted, "x = -1;\n", 8);
    for (int i = 0; i < 5000; i++) {
        char line[32];
        int len = snprintf(line, sizeof(line), "x = %d;\n", i);
        crdt_buf_put(&old_buf, line, (size_t)len);
        if (i < 4999)
            crdt_buf_put(&shifted, line, (size_t)len);
    }
    edits =
        diff_checked(__LINE__, old_buf.data, old_buf.len, shifted.data, shifted.len, NULL, &count);
    CHECK_INT(2, count);
    if (count == 2) {
        CHECK_INT(0, edits[0].old_pos);
        CHECK_INT(8, edits[0].new_len);
        CHECK_INT(0, edits[1].new_len);
        CHECK_INT(old_buf.len - 10, edits[1].old_pos); /* "x = 4999;\n" */
    }
    free(edits);
    crdt_buf_free(&old_buf);
    crdt_buf_free(&indented);
    crdt_buf_free(&crlf);
    crdt_buf_free(&shifted);
}

/* --- budgets ---------------------------------------------------------------- */

static void random_line(struct crdt_buf *buf, uint64_t *rng)
{
    static const char *const words[] = {"alpha", "beta", "gamma", "delta", "if",  "x",
                                        "(y)",   "{",    "=",     "zeta",  "eta", "return"};
    size_t count = (size_t)test_rand_below(rng, 8);
    for (size_t i = 0; i < count; i++) {
        const char *word = words[test_rand_below(rng, sizeof(words) / sizeof(words[0]))];
        crdt_buf_put(buf, word, strlen(word));
        crdt_buf_put_u8(buf, i + 1 < count ? ' ' : '\n');
    }
    if (count == 0)
        crdt_buf_put_u8(buf, '\n');
}

/* Two unrelated 3,000-line files that share only braces and blank lines. */
static void make_unrelated(struct crdt_buf *old_buf, struct crdt_buf *new_buf, uint64_t seed)
{
    uint64_t rng = seed;
    for (int i = 0; i < 3000; i++) {
        struct crdt_buf *buf = i % 2 ? new_buf : old_buf;
        for (int k = 0; k < 2; k++) {
            uint64_t pick = test_rand_below(&rng, 4);
            if (pick == 0)
                crdt_buf_put(buf, "}\n", 2);
            else if (pick == 1)
                crdt_buf_put_u8(buf, '\n');
            else
                random_line(buf, &rng);
        }
    }
}

static void test_budget_fallback(void)
{
    struct crdt_buf old_buf = {0}, new_buf = {0};
    make_unrelated(&old_buf, &new_buf, 0x5eed);
    CHECK_INT(0, crdt_buf_status(&old_buf));
    CHECK_INT(0, crdt_buf_status(&new_buf));

    size_t fine_count, mid_count, coarse_count;
    struct crdt_edit *fine = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data,
                                          new_buf.len, NULL, &fine_count);

    struct crdt_diff_options small = {
        .run_work = 2000, .run_work_per_unit = 0, .total_work = 200000, .total_work_per_byte = 0};
    struct crdt_edit *mid = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data,
                                         new_buf.len, &small, &mid_count);

    /* No budget at all: one replace of everything between the common ends. */
    struct crdt_diff_options none = {0};
    struct crdt_edit *coarse = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data,
                                            new_buf.len, &none, &coarse_count);
    CHECK_INT(1, coarse_count);
    CHECK(mid_count >= 1);
    CHECK(fine_count > coarse_count);
    free(fine);
    free(mid);
    free(coarse);

    /* One long line, no newline: the fallback happens at the code point level. */
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
    uint64_t rng = 77;
    for (int i = 0; i < 20000; i++) {
        crdt_buf_put_u8(&old_buf, (uint8_t)('a' + test_rand_below(&rng, 26)));
        crdt_buf_put_u8(&new_buf, (uint8_t)('a' + test_rand_below(&rng, 26)));
    }
    struct crdt_edit *line = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data,
                                          new_buf.len, NULL, &fine_count);
    free(line);
    line = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data, new_buf.len, &small,
                        &coarse_count);
    CHECK_INT(1, coarse_count);
    free(line);

    /* 20,000 identical lines with scattered changes: every diagonal matches everywhere. */
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
    rng = 99;
    for (int i = 0; i < 20000; i++) {
        crdt_buf_put(&old_buf, "}\n", 2);
        uint64_t pick = test_rand_below(&rng, 100);
        if (pick == 0)
            crdt_buf_put(&new_buf, "} else {\n", 9);
        else if (pick == 1)
            continue;
        else if (pick == 2)
            crdt_buf_put(&new_buf, "}\n}\n", 4);
        else
            crdt_buf_put(&new_buf, "}\n", 2);
    }
    struct crdt_edit *same = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data,
                                          new_buf.len, NULL, &fine_count);
    free(same);
    same = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data, new_buf.len, &small,
                        &mid_count);
    free(same);
    same = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data, new_buf.len, &none,
                        &coarse_count);
    CHECK_INT(1, coarse_count);
    free(same);
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
}

static void test_deterministic(void)
{
    struct crdt_buf old_buf = {0}, new_buf = {0};
    make_unrelated(&old_buf, &new_buf, 0xd00d);
    struct crdt_diff_options defaults;
    crdt_diff_options_init(&defaults);
    size_t count_a, count_b;
    struct crdt_edit *first = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data,
                                           new_buf.len, NULL, &count_a);
    struct crdt_edit *second = diff_checked(__LINE__, old_buf.data, old_buf.len, new_buf.data,
                                            new_buf.len, &defaults, &count_b);
    CHECK_INT(count_a, count_b);
    CHECK(count_a == count_b && memcmp(first, second, count_a * sizeof(*first)) == 0);
    free(first);
    free(second);
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
}

/* --- validation --------------------------------------------------------------- */

static void test_validate_and_apply(void)
{
    const uint8_t *old_bytes = (const uint8_t *)"abcdef";
    const uint8_t *new_bytes = (const uint8_t *)"aXcdYYf";
    const struct crdt_edit good[] = {{1, 1, 1, 1}, {4, 1, 4, 2}};
    uint8_t *out = NULL;
    size_t out_len = 0;
    CHECK_INT(0, crdt_diff_apply(&out, &out_len, old_bytes, 6, new_bytes, 7, good, 2));
    CHECK_INT(7, out_len);
    CHECK(out && memcmp(out, new_bytes, 7) == 0);
    free(out);

    const struct crdt_edit unsorted[] = {{4, 1, 4, 2}, {1, 1, 1, 1}};
    const struct crdt_edit overlapping[] = {{1, 2, 1, 2}, {2, 1, 2, 1}};
    const struct crdt_edit past_old[] = {{5, 2, 5, 3}};
    const struct crdt_edit past_new[] = {{4, 2, 4, 4}};
    const struct crdt_edit empty[] = {{1, 0, 1, 0}};
    const struct crdt_edit misaligned[] = {{1, 1, 2, 1}};
    const struct crdt_edit short_tail[] = {{1, 1, 1, 1}};
    CHECK_INT(-EINVAL, crdt_diff_apply(&out, &out_len, old_bytes, 6, new_bytes, 7, unsorted, 2));
    CHECK_INT(-EINVAL, crdt_diff_validate(overlapping, 2, 6, 6));
    CHECK_INT(-EINVAL, crdt_diff_validate(past_old, 1, 6, 7));
    CHECK_INT(-EINVAL, crdt_diff_validate(past_new, 1, 6, 7));
    CHECK_INT(-EINVAL, crdt_diff_validate(empty, 1, 6, 6));
    CHECK_INT(-EINVAL, crdt_diff_validate(misaligned, 1, 6, 6));
    CHECK_INT(-EINVAL, crdt_diff_validate(short_tail, 1, 6, 7));
    CHECK_INT(-EINVAL, crdt_diff_validate(NULL, 1, 6, 6));
    CHECK_INT(0, crdt_diff_validate(NULL, 0, 6, 6));
    CHECK_INT(-EINVAL, crdt_diff_validate(NULL, 0, 6, 7));

    CHECK_INT(0, crdt_diff_apply(&out, &out_len, NULL, 0, NULL, 0, NULL, 0));
    CHECK(out != NULL);
    CHECK_INT(0, out_len);
    free(out);
}

/* --- property test ------------------------------------------------------------- */

enum text_mode {
    MODE_ASCII,     /* words, spaces, punctuation, lines */
    MODE_TINY,      /* a three-letter alphabet: coincidental matches everywhere */
    MODE_UTF8,      /* 1- to 4-byte code points, many sharing lead or last bytes */
    MODE_REPEATED,  /* lines from a handful: blank, braces, the same statement */
    MODE_LONG_LINE, /* words and multi-byte letters, no newline: the chunk path */
    MODE_INVALID,   /* arbitrary bytes */
    MODE_COUNT,
};

static const char *const mode_names[] = {"ascii",    "tiny",      "utf8",
                                         "repeated", "long-line", "invalid"};

static void put_unit(struct crdt_buf *buf, enum text_mode mode, uint64_t *rng)
{
    /* é è © € ₭ 中 😀 😁: pairs sharing a lead byte (é è, € ₭, 😀 😁) or the last (é ©). */
    static const char *const utf8[] = {"\xC3\xA9",
                                       "\xC3\xA8",
                                       "\xC2\xA9",
                                       "\xE2\x82\xAC",
                                       "\xE2\x82\xAD",
                                       "\xE4\xB8\xAD",
                                       "\xF0\x9F\x98\x80",
                                       "\xF0\x9F\x98\x81",
                                       "a",
                                       "e",
                                       " ",
                                       "\n"};
    static const char *const lines[] = {"\n", "}\n", "{\n", "    return 0;\n", "\t}\n"};
    switch (mode) {
    case MODE_ASCII: {
        uint64_t pick = test_rand_below(rng, 40);
        uint8_t c = pick < 26   ? (uint8_t)('a' + pick)
                    : pick < 32 ? ' '
                    : pick < 35 ? '\n'
                                : (uint8_t) ".,;(){}"[pick - 35];
        crdt_buf_put_u8(buf, c);
        break;
    }
    case MODE_TINY:
        crdt_buf_put_u8(buf, (uint8_t) "ab\n"[test_rand_below(rng, 3)]);
        break;
    case MODE_UTF8: {
        const char *unit = utf8[test_rand_below(rng, sizeof(utf8) / sizeof(utf8[0]))];
        crdt_buf_put(buf, unit, strlen(unit));
        break;
    }
    case MODE_LONG_LINE: {
        static const char *const words[] = {
            "alpha ", "beta ", "gamma ", "\xC3\xA9t\xC3\xA9 ", "\xE2\x82\xAC ", "x", "y", ", ",
            "; ",     "{",     "}"};
        const char *word = words[test_rand_below(rng, sizeof(words) / sizeof(words[0]))];
        crdt_buf_put(buf, word, strlen(word));
        break;
    }
    case MODE_REPEATED: {
        if (test_rand_below(rng, 8) == 0) {
            char line[32];
            int len = snprintf(line, sizeof(line), "x = %u;\n", (unsigned)test_rand_below(rng, 50));
            crdt_buf_put(buf, line, (size_t)len);
        } else {
            const char *line = lines[test_rand_below(rng, sizeof(lines) / sizeof(lines[0]))];
            crdt_buf_put(buf, line, strlen(line));
        }
        break;
    }
    default:
        crdt_buf_put_u8(buf, (uint8_t)test_rand(rng));
        break;
    }
}

static void put_units(struct crdt_buf *buf, enum text_mode mode, size_t count, uint64_t *rng)
{
    for (size_t i = 0; i < count; i++)
        put_unit(buf, mode, rng);
}

enum mutation_kind {
    MUT_INSERT,
    MUT_DELETE,
    MUT_REPLACE,
    MUT_INSERT_LINES,
    MUT_DELETE_LINES,
    MUT_MOVE_BLOCK,
    MUT_DUPLICATE_BLOCK,
    MUT_COUNT,
};

static const char *const mutation_names[] = {"insert",       "delete", "replace",  "insert-lines",
                                             "delete-lines", "move",   "duplicate"};

struct mutation {
    enum mutation_kind kind;
    uint64_t where;   /* a position, taken modulo the text's length at the time */
    uint64_t size;    /* a length, likewise bounded */
    uint64_t content; /* seed of inserted text */
};

enum { MUTATIONS_MAX = 8 };

struct prop_case {
    uint64_t seed;
    enum text_mode mode;
    size_t base_units;
    uint64_t base_seed;
    struct mutation mutations[MUTATIONS_MAX];
    size_t mutation_count;
    bool enabled[MUTATIONS_MAX];
    bool small_budget;
    bool unrelated; /* new is a fresh text, not a mutation of old */
    struct crdt_diff_options options;
};

/* A position in text, moved back to a code point start (or to a line start). */
static size_t pick_position(const struct crdt_buf *text, uint64_t where, bool line_start)
{
    size_t pos = (size_t)(where % (text->len + 1));
    if (line_start) {
        while (pos > 0 && text->data[pos - 1] != '\n')
            pos--;
    }
    while (pos > 0 && pos < text->len && (text->data[pos] & 0xC0) == 0x80)
        pos--;
    return pos;
}

/* The end of a range starting at pos, about `size` bytes on, on a boundary. */
static size_t pick_end(const struct crdt_buf *text, size_t pos, uint64_t size, bool line_end)
{
    size_t end = pos + (size_t)(size % (text->len - pos + 1));
    if (line_end) {
        while (end < text->len && (end == pos || text->data[end - 1] != '\n'))
            end++;
    }
    while (end < text->len && (text->data[end] & 0xC0) == 0x80)
        end++;
    return end;
}

/* Replaces text[pos, end) by bytes[0, len). */
static void splice(struct crdt_buf *text, size_t pos, size_t end, const uint8_t *bytes, size_t len)
{
    struct crdt_buf out = {0};
    crdt_buf_put(&out, text->data, pos);
    crdt_buf_put(&out, bytes, len);
    crdt_buf_put(&out, text->data + end, text->len - end);
    crdt_buf_free(text);
    *text = out;
}

static void mutate(struct crdt_buf *text, const struct mutation *mutation, enum text_mode mode,
                   struct crdt_buf *inserted)
{
    uint64_t rng = mutation->content | 1;
    struct crdt_buf fresh = {0};
    bool lines = mutation->kind == MUT_INSERT_LINES || mutation->kind == MUT_DELETE_LINES ||
                 mutation->kind == MUT_MOVE_BLOCK || mutation->kind == MUT_DUPLICATE_BLOCK;
    size_t pos = pick_position(text, mutation->where, lines);
    switch (mutation->kind) {
    case MUT_INSERT:
    case MUT_INSERT_LINES:
        put_units(&fresh, mode, 1 + (size_t)(mutation->size % 40), &rng);
        if (mutation->kind == MUT_INSERT_LINES)
            crdt_buf_put_u8(&fresh, '\n');
        splice(text, pos, pos, fresh.data, fresh.len);
        crdt_buf_put(inserted, fresh.data, fresh.len);
        break;
    case MUT_DELETE:
    case MUT_DELETE_LINES: {
        size_t end = pick_end(text, pos, mutation->size % 64, lines);
        splice(text, pos, end, NULL, 0);
        break;
    }
    case MUT_REPLACE: {
        size_t end = pick_end(text, pos, mutation->size % 16, false);
        put_units(&fresh, mode, 1 + (size_t)(mutation->size % 13), &rng);
        splice(text, pos, end, fresh.data, fresh.len);
        break;
    }
    case MUT_MOVE_BLOCK:
    case MUT_DUPLICATE_BLOCK: {
        size_t end = pick_end(text, pos, mutation->size % 200, true);
        crdt_buf_put(&fresh, text->data + pos, end - pos);
        if (mutation->kind == MUT_MOVE_BLOCK)
            splice(text, pos, end, NULL, 0);
        size_t to = pick_position(text, mutation->content, true);
        splice(text, to, to, fresh.data, fresh.len);
        break;
    }
    default:
        break;
    }
    crdt_buf_free(&fresh);
}

static void prop_case_make(struct prop_case *pc, uint64_t seed)
{
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    memset(pc, 0, sizeof(*pc));
    pc->seed = seed;
    pc->mode = (enum text_mode)test_rand_below(&rng, MODE_COUNT);
    uint64_t size_pick = test_rand_below(&rng, 100);
    pc->base_units = size_pick < 70   ? (size_t)test_rand_below(&rng, 200)
                     : size_pick < 96 ? (size_t)test_rand_below(&rng, 2000)
                                      : (size_t)test_rand_below(&rng, 20000);
    if (pc->mode == MODE_LONG_LINE && size_pick >= 90)
        pc->base_units = 10000 + (size_t)test_rand_below(&rng, 30000); /* past REFINE_DIRECT_MAX */
    pc->base_seed = test_rand(&rng) | 1;
    pc->mutation_count = 1 + (size_t)test_rand_below(&rng, MUTATIONS_MAX);
    if (test_rand_below(&rng, 5) == 0)
        pc->mutation_count = 1; /* one plain insert or delete is checked for minimality */
    for (size_t i = 0; i < pc->mutation_count; i++) {
        pc->mutations[i] = (struct mutation){
            .kind = (enum mutation_kind)test_rand_below(&rng, MUT_COUNT),
            .where = test_rand(&rng),
            .size = test_rand(&rng),
            .content = test_rand(&rng),
        };
        pc->enabled[i] = true;
    }
    pc->unrelated = test_rand_below(&rng, 20) == 0;
    crdt_diff_options_init(&pc->options);
    pc->small_budget = test_rand_below(&rng, 8) == 0;
    if (pc->small_budget) {
        pc->options.run_work = test_rand_below(&rng, 300);
        pc->options.run_work_per_unit = test_rand_below(&rng, 3);
        pc->options.total_work = test_rand_below(&rng, 3000);
        pc->options.total_work_per_byte = test_rand_below(&rng, 2);
    }
}

/* Runs a case with its enabled mutations; NULL if every promise holds. */
static const char *prop_case_run(const struct prop_case *pc, bool verbose)
{
    struct crdt_buf old_buf = {0}, new_buf = {0}, inserted = {0};
    uint64_t rng = pc->base_seed;
    put_units(&old_buf, pc->mode, pc->base_units, &rng);
    if (pc->unrelated)
        put_units(&new_buf, pc->mode, pc->base_units, &rng);
    else
        crdt_buf_put(&new_buf, old_buf.data, old_buf.len);
    size_t enabled = 0;
    enum mutation_kind only = MUT_COUNT;
    for (size_t i = 0; i < pc->mutation_count; i++) {
        if (!pc->enabled[i])
            continue;
        enabled++;
        only = pc->mutations[i].kind;
        mutate(&new_buf, &pc->mutations[i], pc->mode, &inserted);
    }
    const char *problem = NULL;
    if (crdt_buf_status(&old_buf) || crdt_buf_status(&new_buf) || crdt_buf_status(&inserted)) {
        problem = "out of memory building the case";
        goto out;
    }
    struct crdt_edit *edits = NULL;
    size_t count = 0;
    if (crdt_diff(&edits, &count, old_buf.data, old_buf.len, new_buf.data, new_buf.len,
                  &pc->options) != 0) {
        problem = "crdt_diff failed";
        goto out;
    }
    problem = edits_problem(old_buf.data, old_buf.len, new_buf.data, new_buf.len, edits, count);
    /*
     * One insert (or one delete) of n bytes must come out as exactly that,
     * wherever it slid. Not for invalid UTF-8: there the cut backs off from
     * stray continuation bytes and may take a neighbouring byte along.
     */
    bool minimal = enabled == 1 && pc->mode != MODE_INVALID && !pc->unrelated;
    if (!problem && minimal && (only == MUT_INSERT || only == MUT_INSERT_LINES)) {
        if (count != 1 || edits[0].old_len != 0 || edits[0].new_len != inserted.len)
            problem = "a single insert is not one insert of its length";
    }
    if (!problem && minimal && (only == MUT_DELETE || only == MUT_DELETE_LINES)) {
        if (new_buf.len < old_buf.len &&
            (count != 1 || edits[0].new_len != 0 || edits[0].old_len != old_buf.len - new_buf.len))
            problem = "a single delete is not one delete of its length";
    }
    if (verbose) {
        printf("seed %llu: mode %s, old %zu bytes, new %zu bytes, %zu edits%s%s\n",
               (unsigned long long)pc->seed, mode_names[pc->mode], old_buf.len, new_buf.len, count,
               pc->small_budget ? " (small budget)" : "", pc->unrelated ? " (unrelated)" : "");
        for (size_t i = 0; i < count && i < 50; i++)
            printf("  {%zu, %zu, %zu, %zu}\n", edits[i].old_pos, edits[i].old_len, edits[i].new_pos,
                   edits[i].new_len);
    }
    free(edits);
out:
    crdt_buf_free(&old_buf);
    crdt_buf_free(&new_buf);
    crdt_buf_free(&inserted);
    return problem;
}

/* Drops every mutation the failure does not need, and prints what is left. */
static void prop_case_report(struct prop_case *pc, const char *problem)
{
    for (size_t i = 0; i < pc->mutation_count; i++) {
        pc->enabled[i] = false;
        if (!prop_case_run(pc, false))
            pc->enabled[i] = true;
    }
    fprintf(stderr,
            "%s:%d: property failed for seed %llu (%s): %s\n"
            "  rerun: WEFT_DIFF_SEED=%llu test-diff\n  mode %s, %zu base units%s%s; "
            "mutations needed:\n",
            __FILE__, __LINE__, (unsigned long long)pc->seed, mode_names[pc->mode], problem,
            (unsigned long long)pc->seed, mode_names[pc->mode], pc->base_units,
            pc->small_budget ? ", small budget" : "", pc->unrelated ? ", unrelated new text" : "");
    for (size_t i = 0; i < pc->mutation_count; i++) {
        if (pc->enabled[i])
            fprintf(stderr, "    %s where %llu size %llu\n", mutation_names[pc->mutations[i].kind],
                    (unsigned long long)pc->mutations[i].where,
                    (unsigned long long)pc->mutations[i].size);
    }
}

static void test_property(void)
{
    const char *one = getenv("WEFT_DIFF_SEED");
    const char *cases_env = getenv("WEFT_DIFF_CASES");
    uint64_t first = 1, cases = cases_env ? strtoull(cases_env, NULL, 10) : 20000;
    if (one) {
        first = strtoull(one, NULL, 10);
        cases = 1;
    }
    int failures = 0;
    for (uint64_t seed = first; seed < first + cases; seed++) {
        struct prop_case pc;
        prop_case_make(&pc, seed);
        test_checks++;
        const char *problem = prop_case_run(&pc, one != NULL);
        if (problem) {
            test_failures++;
            if (failures++ < 5)
                prop_case_report(&pc, problem);
        }
    }
    printf("property: %llu cases from seed %llu, %d failed\n", (unsigned long long)cases,
           (unsigned long long)first, failures);
}

int main(void)
{
    test_trivial();
    test_natural_words();
    test_lines();
    test_utf8_boundaries();
    test_thousand_lines();
    test_large_file();
    test_long_line();
    test_every_line_edited();
    test_budget_fallback();
    test_deterministic();
    test_validate_and_apply();
    test_property();
    return test_finish("diff");
}
