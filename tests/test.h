/*
 * tests/test.h: the few macros every C test uses. A failed check prints what
 * was expected and what came, with file and line, and the test goes on so one
 * run shows every failure; main returns test_finish().
 */
#ifndef WEFT_TESTS_TEST_H
#define WEFT_TESTS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        test_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_INT(expected, got)                                                                   \
    do {                                                                                           \
        long long expected_ = (long long)(expected), got_ = (long long)(got);                      \
        test_checks++;                                                                             \
        if (expected_ != got_) {                                                                   \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: %s: expected %lld, got %lld\n", __FILE__, __LINE__, #got,      \
                    expected_, got_);                                                              \
        }                                                                                          \
    } while (0)

#define CHECK_STR(expected, got)                                                                   \
    do {                                                                                           \
        const char *expected_ = (expected), *got_ = (got);                                         \
        test_checks++;                                                                             \
        if (!got_ || strcmp(expected_, got_) != 0) {                                               \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: %s: expected \"%s\", got \"%s\"\n", __FILE__, __LINE__, #got,  \
                    expected_, got_ ? got_ : "(null)");                                            \
        }                                                                                          \
    } while (0)

/* Prints the summary line and gives main's exit code. */
static inline int test_finish(const char *name)
{
    printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

/* xorshift64*: the seeded generator of every property test (same seed, same run). */
static inline uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* A value in [0, bound). */
static inline uint64_t test_rand_below(uint64_t *state, uint64_t bound)
{
    return bound ? test_rand(state) % bound : 0;
}

#endif
