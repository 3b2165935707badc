/*
 * tests/sync/net_util.h: what the tests of sync/net and sync/relay share:
 * one lock for the state their callbacks (on loop threads) and the test's
 * thread both touch, bounded polling for a condition under that lock, and a
 * monotonic clock in milliseconds.
 */
#ifndef WEFT_TESTS_SYNC_NET_UTIL_H
#define WEFT_TESTS_SYNC_NET_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* Polls `cond` under g_lock about every millisecond for up to `ms`; `ok` says whether it held. */
#define WAIT_UNTIL(ok, cond, ms)                                                                   \
    do {                                                                                           \
        (ok) = false;                                                                              \
        for (long waited_ = 0; waited_ <= (ms) && !(ok); waited_++) {                              \
            pthread_mutex_lock(&g_lock);                                                           \
            (ok) = (cond);                                                                         \
            pthread_mutex_unlock(&g_lock);                                                         \
            if (!(ok))                                                                             \
                usleep(1000);                                                                      \
        }                                                                                          \
    } while (0)

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
