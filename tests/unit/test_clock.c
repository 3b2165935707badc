/* Unit tests for crdt/clock: timestamp order, Lamport rules, version vectors. */
#include "crdt/clock.h"
#include "test.h"

#include <errno.h>
#include <stdlib.h>

static void test_ts_order(void)
{
    struct crdt_ts a = {1, 9}, b = {2, 1}, c = {2, 3};
    CHECK(crdt_ts_cmp(a, b) < 0);
    CHECK(crdt_ts_cmp(b, c) < 0);
    CHECK(crdt_ts_cmp(c, a) > 0);
    CHECK(crdt_ts_cmp(c, c) == 0);
    CHECK(crdt_ts_is_none((struct crdt_ts){0, 5}));
}

static void test_clock_tick_observe(void)
{
    struct crdt_clock clock;
    crdt_clock_init(&clock, 7);
    uint64_t seq;
    struct crdt_ts t1 = crdt_clock_tick(&clock, &seq);
    CHECK_INT(1, t1.counter);
    CHECK_INT(7, t1.replica);
    CHECK_INT(1, seq);
    crdt_clock_observe(&clock, (struct crdt_ts){10, 3});
    struct crdt_ts t2 = crdt_clock_tick(&clock, &seq);
    CHECK_INT(11, t2.counter);
    CHECK_INT(2, seq);
    crdt_clock_observe(&clock, (struct crdt_ts){4, 3});
    CHECK_INT(11, clock.counter);
    struct crdt_ts run = crdt_clock_tick_n(&clock, 5, &seq);
    CHECK_INT(12, run.counter);
    CHECK_INT(3, seq);
    CHECK_INT(16, clock.counter);
}

static void test_vv_compare_and_missing(void)
{
    struct crdt_vv a = {0}, b = {0};
    CHECK_INT(CRDT_VV_EQUAL, crdt_vv_compare(&a, &b));
    CHECK_INT(0, crdt_vv_raise(&a, 5, 3));
    CHECK_INT(0, crdt_vv_raise(&a, 2, 1));
    CHECK_INT(0, crdt_vv_raise(&a, 5, 2)); /* never lowers */
    CHECK_INT(3, crdt_vv_get(&a, 5));
    CHECK_INT(CRDT_VV_AFTER, crdt_vv_compare(&a, &b));
    CHECK_INT(CRDT_VV_BEFORE, crdt_vv_compare(&b, &a));
    CHECK_INT(0, crdt_vv_raise(&b, 9, 1));
    CHECK_INT(0, crdt_vv_raise(&b, 5, 1));
    CHECK_INT(CRDT_VV_CONCURRENT, crdt_vv_compare(&a, &b));
    CHECK(crdt_vv_includes(&a, 5, 3));
    CHECK(!crdt_vv_includes(&a, 5, 4));
    CHECK(crdt_vv_includes(&a, 77, 0));

    struct crdt_seq_range *ranges;
    size_t n;
    CHECK_INT(0, crdt_vv_missing(&ranges, &n, &a, &b));
    CHECK_INT(2, n);
    if (n == 2) {
        CHECK_INT(2, ranges[0].replica);
        CHECK_INT(1, ranges[0].first);
        CHECK_INT(1, ranges[0].last);
        CHECK_INT(5, ranges[1].replica);
        CHECK_INT(2, ranges[1].first);
        CHECK_INT(3, ranges[1].last);
    }
    free(ranges);

    struct crdt_vv both = {0};
    CHECK_INT(0, crdt_vv_copy(&both, &a));
    CHECK_INT(0, crdt_vv_meet(&both, &b));
    CHECK_INT(1, both.len);
    CHECK_INT(1, crdt_vv_get(&both, 5));

    CHECK_INT(0, crdt_vv_merge(&a, &b));
    CHECK_INT(3, a.len);
    CHECK_INT(CRDT_VV_AFTER, crdt_vv_compare(&a, &b));
    crdt_vv_free(&a);
    crdt_vv_free(&b);
    crdt_vv_free(&both);
}

static void test_vv_encoding(void)
{
    struct crdt_vv vv = {0};
    CHECK_INT(0, crdt_vv_raise(&vv, 1000, 42));
    CHECK_INT(0, crdt_vv_raise(&vv, UINT64_MAX, 1));
    CHECK_INT(0, crdt_vv_raise(&vv, 3, 70000));
    struct crdt_buf buf = {0};
    crdt_vv_encode(&buf, &vv);
    CHECK_INT(0, crdt_buf_status(&buf));
    struct crdt_reader reader;
    crdt_reader_init(&reader, buf.data, buf.len);
    struct crdt_vv back = {0};
    CHECK_INT(0, crdt_vv_decode(&reader, &back));
    CHECK_INT(CRDT_VV_EQUAL, crdt_vv_compare(&vv, &back));
    CHECK_INT(3, back.len);
    crdt_vv_free(&back);

    /* Golden bytes: count 1, replica delta 5, seq 300. */
    const uint8_t golden[] = {0x01, 0x05, 0xac, 0x02};
    crdt_reader_init(&reader, golden, sizeof(golden));
    CHECK_INT(0, crdt_vv_decode(&reader, &back));
    CHECK_INT(300, crdt_vv_get(&back, 5));
    crdt_vv_free(&back);

    const uint8_t duplicate[] = {0x02, 0x05, 0x01, 0x00, 0x01};
    crdt_reader_init(&reader, duplicate, sizeof(duplicate));
    CHECK_INT(-EBADMSG, crdt_vv_decode(&reader, &back));
    const uint8_t zero_seq[] = {0x01, 0x05, 0x00};
    crdt_reader_init(&reader, zero_seq, sizeof(zero_seq));
    CHECK_INT(-EBADMSG, crdt_vv_decode(&reader, &back));
    const uint8_t huge_count[] = {0xff, 0xff, 0xff, 0x7f};
    crdt_reader_init(&reader, huge_count, sizeof(huge_count));
    CHECK_INT(-EBADMSG, crdt_vv_decode(&reader, &back));
    crdt_buf_free(&buf);
    crdt_vv_free(&vv);
}

int main(void)
{
    test_ts_order();
    test_clock_tick_observe();
    test_vv_compare_and_missing();
    test_vv_encoding();
    return test_finish("clock");
}
