/*
 * Unit tests of crdt/text: local edits by bytes and code points, FugueMax's
 * non-interleaving, a seeded convergence property test over random delivery,
 * encodings (round trips, golden bytes, malformed input), edit lists and
 * compaction. The editing traces are replayed by test_text_traces.c.
 *
 * WEFT_TEXT_SEED=N runs only scenario N of the property test;
 * WEFT_TEXT_SCENARIOS=N changes how many run (default 10000).
 */
#include "crdt/text.h"
#include "tests/test.h"

#include <errno.h>
#include <stdlib.h>

struct peer {
    struct crdt_text *doc;
    struct crdt_clock clock;
};

static void peer_init(struct peer *peer, uint64_t replica)
{
    CHECK_INT(0, crdt_text_new(&peer->doc));
    crdt_clock_init(&peer->clock, replica);
}

static char *content(const struct crdt_text *doc)
{
    char *text = NULL;
    size_t len;
    if (crdt_text_content(&text, &len, doc) != 0)
        return NULL;
    return text;
}

#define CHECK_TEXT(expected, doc)                                                                  \
    do {                                                                                           \
        char *got_text_ = content(doc);                                                            \
        CHECK_STR(expected, got_text_);                                                            \
        free(got_text_);                                                                           \
    } while (0)

/* Applies every op of `ops` to `peer`; returns ops still pending. */
static size_t deliver(struct peer *peer, const struct crdt_text_ops *ops)
{
    size_t applied, pending;
    CHECK_INT(0, crdt_text_apply(&applied, &pending, peer->doc, &peer->clock, ops->ops, ops->len));
    return pending;
}

static void test_local_edits(void)
{
    struct peer p;
    peer_init(&p, 1);
    struct crdt_text_ops ops = {0};
    CHECK_INT(0, crdt_text_insert(&ops, p.doc, &p.clock, 0, "hello", 5));
    CHECK_INT(0, crdt_text_insert(&ops, p.doc, &p.clock, 5, " world", 6));
    CHECK_INT(0, crdt_text_insert_cp(&ops, p.doc, &p.clock, 0, ">", 1));
    CHECK_TEXT(">hello world", p.doc);
    CHECK_INT(0, crdt_text_delete_cp(&ops, p.doc, &p.clock, 0, 1));
    CHECK_INT(0, crdt_text_delete(&ops, p.doc, &p.clock, 5, 6));
    CHECK_TEXT("hello", p.doc);
    CHECK_INT(5, crdt_text_len_bytes(p.doc));
    CHECK_INT(-EINVAL, crdt_text_insert(&ops, p.doc, &p.clock, 6, "x", 1));
    CHECK_INT(-EINVAL, crdt_text_delete(&ops, p.doc, &p.clock, 3, 3));
    CHECK_INT(-EINVAL, crdt_text_delete_cp(&ops, p.doc, &p.clock, 6, 0));
    /* A typed run of one replica is one insert op each keystroke, one item in the doc. */
    CHECK_INT(5, ops.len);
    CHECK_INT(CRDT_TEXT_INSERT, ops.ops[0].kind);
    CHECK_INT(5, ops.ops[0].len);
    CHECK_INT(CRDT_TEXT_DELETE, ops.ops[4].kind);
    CHECK_INT(1, ops.ops[4].targets_len);
    CHECK_INT(6, ops.ops[4].targets[0].len);
    /* Empty edits make no op. */
    CHECK_INT(0, crdt_text_insert(&ops, p.doc, &p.clock, 2, "", 0));
    CHECK_INT(0, crdt_text_delete(&ops, p.doc, &p.clock, 2, 0));
    CHECK_INT(5, ops.len);
    /* A clock behind its own ids is refused. */
    struct crdt_clock stale;
    crdt_clock_init(&stale, 1);
    CHECK_INT(-EINVAL, crdt_text_insert(&ops, p.doc, &stale, 0, "x", 1));
    char part[3] = {0};
    CHECK_INT(0, crdt_text_read(part, p.doc, 1, 2));
    CHECK_STR("el", part);
    CHECK_INT(-EINVAL, crdt_text_read(part, p.doc, 4, 2));
    crdt_text_ops_free(&ops);
    crdt_text_free(p.doc);
    crdt_text_free(NULL);
}

static void test_utf8(void)
{
    struct peer p;
    peer_init(&p, 1);
    /* "aé€😀b": widths 1, 2, 3, 4, 1 */
    const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                    "b";
    CHECK_INT(0, crdt_text_insert(NULL, p.doc, &p.clock, 0, s, strlen(s)));
    CHECK_INT(11, crdt_text_len_bytes(p.doc));
    CHECK_INT(5, crdt_text_len_cp(p.doc));
    /* Byte offsets inside a code point are refused, for inserts and both ends of deletes. */
    for (size_t pos = 0; pos <= 11; pos++) {
        bool boundary = pos == 0 || pos == 1 || pos == 3 || pos == 6 || pos == 10 || pos == 11;
        int rc = crdt_text_insert(NULL, p.doc, &p.clock, pos, "", 0);
        CHECK_INT(boundary ? 0 : -EINVAL, rc);
        CHECK_INT(boundary ? 0 : -EINVAL, crdt_text_delete(NULL, p.doc, &p.clock, pos, 0));
        if (!boundary)
            CHECK_INT(-EINVAL, crdt_text_delete(NULL, p.doc, &p.clock, 0, pos));
    }
    CHECK_INT(-EINVAL, crdt_text_delete(NULL, p.doc, &p.clock, 1, 1));
    CHECK_INT(-EINVAL, crdt_text_delete(NULL, p.doc, &p.clock, 2, 2));
    /* Invalid UTF-8 is refused: stray continuation, overlong, surrogate, truncated, > U+10FFFF. */
    const char *bad[] = {"\x80",     "\xc0\xaf",         "\xed\xa0\x80",
                         "\xe2\x82", "\xf4\x90\x80\x80", "\xff"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(-EINVAL, crdt_text_insert(NULL, p.doc, &p.clock, 0, bad[i], strlen(bad[i])));
        CHECK_INT(-EINVAL, crdt_text_insert_cp(NULL, p.doc, &p.clock, 0, bad[i], strlen(bad[i])));
    }
    /* Code-point offsets on multi-byte text. */
    CHECK_INT(0, crdt_text_insert_cp(NULL, p.doc, &p.clock, 3, "|", 1));
    CHECK_TEXT("a\xc3\xa9\xe2\x82\xac|\xf0\x9f\x98\x80"
               "b",
               p.doc);
    CHECK_INT(0, crdt_text_delete_cp(NULL, p.doc, &p.clock, 1, 2));
    CHECK_TEXT("a|\xf0\x9f\x98\x80"
               "b",
               p.doc);
    CHECK_INT(0, crdt_text_delete(NULL, p.doc, &p.clock, 2, 4));
    CHECK_TEXT("a|b", p.doc);
    size_t byte;
    CHECK_INT(0, crdt_text_insert_cp(NULL, p.doc, &p.clock, 1, "\xc3\xa9", 2));
    CHECK_INT(0, crdt_text_cp_to_byte(&byte, p.doc, 2));
    CHECK_INT(3, byte);
    CHECK_INT(0, crdt_text_cp_to_byte(&byte, p.doc, 4));
    CHECK_INT(5, byte);
    CHECK_INT(-EINVAL, crdt_text_cp_to_byte(&byte, p.doc, 5));
    crdt_text_free(p.doc);
}

/* Types `s` at cp position `pos` one char at a time, forwards or backwards. */
static void type(struct crdt_text_ops *ops, struct peer *p, size_t pos, const char *s,
                 bool backwards)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++) {
        if (backwards)
            CHECK_INT(0, crdt_text_insert_cp(ops, p->doc, &p->clock, pos, &s[n - 1 - i], 1));
        else
            CHECK_INT(0, crdt_text_insert_cp(ops, p->doc, &p->clock, pos + i, &s[i], 1));
    }
}

static bool is_one_of(const char *got, const char *const *options, size_t n)
{
    for (size_t i = 0; got && i < n; i++)
        if (strcmp(got, options[i]) == 0)
            return true;
    return false;
}

static void check_one_of(const struct crdt_text *doc, const char *const *options, size_t n,
                         const char *what)
{
    char *got = content(doc);
    test_checks++;
    if (!is_one_of(got, options, n)) {
        test_failures++;
        fprintf(stderr, "%s: interleaved: got \"%s\"\n", what, got ? got : "(null)");
    }
    free(got);
}

static void test_interleaving(void)
{
    for (int mode = 0; mode < 4; mode++) {
        bool back_a = mode & 1, back_b = mode & 2;
        struct peer a, b;
        peer_init(&a, 1);
        peer_init(&b, 2);
        struct crdt_text_ops base = {0}, ops_a = {0}, ops_b = {0};
        type(&base, &a, 0, "[]", false);
        CHECK_INT(0, deliver(&b, &base));
        type(&ops_a, &a, 1, "abc", back_a);
        type(&ops_b, &b, 1, "xyz", back_b);
        CHECK_INT(0, deliver(&a, &ops_b));
        CHECK_INT(0, deliver(&b, &ops_a));
        const char *ok[] = {"[abcxyz]", "[xyzabc]"};
        check_one_of(a.doc, ok, 2, "two replicas");
        char *ta = content(a.doc), *tb = content(b.doc);
        CHECK_STR(ta, tb);
        free(ta);
        free(tb);
        crdt_text_ops_free(&base);
        crdt_text_ops_free(&ops_a);
        crdt_text_ops_free(&ops_b);
        crdt_text_free(a.doc);
        crdt_text_free(b.doc);
    }
    /* Three replicas, each typing its own run (some backwards) at the same place. */
    for (int mode = 0; mode < 8; mode++) {
        struct peer p[3];
        struct crdt_text_ops ops[3] = {{0}};
        const char *runs[3] = {"abc", "xyz", "123"};
        for (int i = 0; i < 3; i++)
            peer_init(&p[i], (uint64_t)(10 + i));
        for (int i = 0; i < 3; i++)
            type(&ops[i], &p[i], 0, runs[i], mode >> i & 1);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                if (i != j)
                    CHECK_INT(0, deliver(&p[i], &ops[j]));
        const char *ok[] = {"abcxyz123", "abc123xyz", "xyzabc123",
                            "xyz123abc", "123abcxyz", "123xyzabc"};
        for (int i = 0; i < 3; i++)
            check_one_of(p[i].doc, ok, 6, "three replicas");
        /* Then one inserts between two runs while another types after all, concurrently. */
        struct crdt_text_ops more[2] = {{0}};
        type(&more[0], &p[0], 3, "--", mode & 1);
        type(&more[1], &p[1], 9, "!!", mode & 2);
        CHECK_INT(0, deliver(&p[1], &more[0]));
        CHECK_INT(0, deliver(&p[0], &more[1]));
        CHECK_INT(0, deliver(&p[2], &more[0]));
        CHECK_INT(0, deliver(&p[2], &more[1]));
        char *t0 = content(p[0].doc), *t1 = content(p[1].doc), *t2 = content(p[2].doc);
        CHECK_STR(t0, t1);
        CHECK_STR(t0, t2);
        CHECK(t0 && strstr(t0, "--") && strstr(t0, "!!"));
        free(t0);
        free(t1);
        free(t2);
        for (int i = 0; i < 3; i++) {
            crdt_text_ops_free(&ops[i]);
            crdt_text_free(p[i].doc);
        }
        crdt_text_ops_free(&more[0]);
        crdt_text_ops_free(&more[1]);
    }
    /* Deletes around concurrent runs: A deletes the context while B types inside it. */
    {
        struct peer a, b;
        peer_init(&a, 1);
        peer_init(&b, 2);
        struct crdt_text_ops base = {0}, ops_a = {0}, ops_b = {0};
        type(&base, &a, 0, "hello world", false);
        CHECK_INT(0, deliver(&b, &base));
        CHECK_INT(0, crdt_text_delete_cp(&ops_a, a.doc, &a.clock, 3, 6));
        type(&ops_a, &a, 3, "ABC", true);
        type(&ops_b, &b, 5, "xyz", false);
        CHECK_INT(0, crdt_text_delete_cp(&ops_b, b.doc, &b.clock, 0, 1));
        CHECK_INT(0, deliver(&a, &ops_b));
        CHECK_INT(0, deliver(&b, &ops_a));
        const char *ok[] = {"elABCxyzld", "elxyzABCld"};
        check_one_of(a.doc, ok, 2, "deletes around runs");
        check_one_of(b.doc, ok, 2, "deletes around runs");
        crdt_text_ops_free(&base);
        crdt_text_ops_free(&ops_a);
        crdt_text_ops_free(&ops_b);
        crdt_text_free(a.doc);
        crdt_text_free(b.doc);
    }
}

/* ------------------------------------------------------------ property test */

static const char *const glyphs[] = {"a",
                                     "b",
                                     "z",
                                     "\n",
                                     "\xc3\xa9",
                                     "\xd0\x96",
                                     "\xe2\x82\xac",
                                     "\xe6\x97\xa5",
                                     "\xf0\x9f\x98\x80",
                                     "\xf0\x90\x8d\x88"};

static void random_text(char *out, size_t *out_len, uint64_t *rng, size_t cps)
{
    size_t len = 0;
    for (size_t i = 0; i < cps; i++) {
        const char *g = glyphs[test_rand_below(rng, sizeof(glyphs) / sizeof(glyphs[0]))];
        memcpy(out + len, g, strlen(g));
        len += strlen(g);
    }
    *out_len = len;
}

/* Forward deletes or backspaces (one op per key, as an editor makes them) of up to 6 chars. */
static int random_keys(struct crdt_text_ops *all, struct peer *p, uint64_t *rng)
{
    size_t cps = crdt_text_len_cp(p->doc);
    size_t pos = test_rand_below(rng, cps + 1), keys = 2 + test_rand_below(rng, 5);
    bool backspace = test_rand_below(rng, 2);
    for (size_t k = 0; k < keys; k++) {
        if (backspace ? pos == 0 : pos >= crdt_text_len_cp(p->doc))
            break;
        if (backspace)
            pos--;
        int rc = crdt_text_delete_cp(all, p->doc, &p->clock, pos, 1);
        if (rc)
            return rc;
    }
    return 0;
}

static int random_edit(struct crdt_text_ops *all, struct peer *p, uint64_t *rng)
{
    size_t cps = crdt_text_len_cp(p->doc), bytes = crdt_text_len_bytes(p->doc);
    bool by_bytes = test_rand_below(rng, 2);
    if (cps > 0 && test_rand_below(rng, 4) == 0)
        return random_keys(all, p, rng);
    if (cps == 0 || test_rand_below(rng, 3) != 0) {
        char buf[64];
        size_t len;
        random_text(buf, &len, rng, 1 + test_rand_below(rng, 4));
        size_t pos = test_rand_below(rng, cps + 1);
        if (by_bytes) {
            size_t byte;
            if (crdt_text_cp_to_byte(&byte, p->doc, pos))
                return -1;
            return crdt_text_insert(all, p->doc, &p->clock, byte, buf, len);
        }
        return crdt_text_insert_cp(all, p->doc, &p->clock, pos, buf, len);
    }
    size_t pos = test_rand_below(rng, cps);
    size_t len = 1 + test_rand_below(rng, cps - pos < 5 ? cps - pos : 5);
    if (by_bytes) {
        size_t from, to;
        if (crdt_text_cp_to_byte(&from, p->doc, pos) ||
            crdt_text_cp_to_byte(&to, p->doc, pos + len) || to > bytes)
            return -1;
        return crdt_text_delete(all, p->doc, &p->clock, from, to - from);
    }
    return crdt_text_delete_cp(all, p->doc, &p->clock, pos, len);
}

/* Delivers a random subset of `all` (shuffled, some twice) to p, in one or more batches. */
static int deliver_random(struct peer *p, const struct crdt_text_ops *all, uint64_t *rng,
                          bool everything)
{
    size_t n = all->len;
    struct crdt_text_op *batch = malloc((2 * n + 1) * sizeof(*batch));
    if (!batch)
        return -ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (everything || test_rand_below(rng, 2))
            batch[len++] = all->ops[i];
        if (test_rand_below(rng, 8) == 0)
            batch[len++] = all->ops[i];
    }
    for (size_t i = len; i > 1; i--) {
        size_t j = test_rand_below(rng, i);
        struct crdt_text_op t = batch[i - 1];
        batch[i - 1] = batch[j];
        batch[j] = t;
    }
    int rc = 0;
    size_t at = 0;
    while (at < len && !rc) {
        size_t chunk = 1 + test_rand_below(rng, len - at);
        size_t applied, pending;
        rc = crdt_text_apply(&applied, &pending, p->doc, &p->clock, batch + at, chunk);
        at += chunk;
    }
    free(batch);
    return rc;
}

/* Brings `to` up to date with `from` through an encoded ops-since-version list. */
static int sync_since(struct peer *to, const struct peer *from)
{
    struct crdt_vv vv = {0};
    struct crdt_buf buf = {0};
    struct crdt_text_ops ops = {0};
    int rc = crdt_text_version(&vv, to->doc);
    if (!rc)
        rc = crdt_text_encode_since(&buf, from->doc, &vv);
    if (!rc)
        rc = crdt_text_ops_decode(&ops, buf.data, buf.len);
    size_t applied, pending;
    if (!rc)
        rc = crdt_text_apply(&applied, &pending, to->doc, &to->clock, ops.ops, ops.len);
    crdt_text_ops_free(&ops);
    crdt_buf_free(&buf);
    crdt_vv_free(&vv);
    return rc;
}

static bool same_state(const struct crdt_text *a, const struct crdt_text *b)
{
    char *ta = content(a), *tb = content(b);
    bool same = ta && tb && strcmp(ta, tb) == 0;
    struct crdt_vv va = {0}, vb = {0};
    same = same && crdt_text_version(&va, a) == 0 && crdt_text_version(&vb, b) == 0 &&
           crdt_vv_compare(&va, &vb) == CRDT_VV_EQUAL;
    crdt_vv_free(&va);
    crdt_vv_free(&vb);
    free(ta);
    free(tb);
    return same;
}

/*
 * Delivers, as deliver_random does, the ops `from` holds since the version of
 * a third peer (or nothing): delete runs among them then arrive early, late,
 * twice, in part held already or waiting for their targets.
 */
static int relay_since(struct peer *to, const struct peer *from, const struct peer *third,
                       uint64_t *rng)
{
    struct crdt_vv vv = {0};
    struct crdt_text_ops ops = {0};
    int rc = third ? crdt_text_version(&vv, third->doc) : 0;
    if (!rc)
        rc = crdt_text_since(&ops, from->doc, &vv);
    if (!rc)
        rc = deliver_random(to, &ops, rng, false);
    crdt_text_ops_free(&ops);
    crdt_vv_free(&vv);
    return rc;
}

/* Whether both documents give the same encoded ops since `since`. */
static bool same_since(const struct crdt_text *a, const struct crdt_text *b,
                       const struct crdt_vv *since)
{
    struct crdt_buf ea = {0}, eb = {0};
    bool same = crdt_text_encode_since(&ea, a, since) == 0 &&
                crdt_text_encode_since(&eb, b, since) == 0 && ea.len == eb.len &&
                memcmp(ea.data, eb.data, ea.len) == 0;
    crdt_buf_free(&ea);
    crdt_buf_free(&eb);
    return same;
}

/* One scenario; returns a description of the first failure, or NULL. */
static const char *scenario(uint64_t seed)
{
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 1;
    size_t n = 3 + test_rand_below(&rng, 3);
    struct peer peers[5];
    struct crdt_text_ops all = {0};
    const char *fail = NULL;
    for (size_t i = 0; i < n; i++) {
        crdt_clock_init(&peers[i].clock, 1 + test_rand_below(&rng, 1000) * 8 + i);
        if (crdt_text_new(&peers[i].doc))
            return "new";
    }
    /* Mostly small scenarios; every 50th is long enough to split leaves and inner nodes. */
    size_t steps =
        seed % 50 == 49 ? 300 + test_rand_below(&rng, 300) : 6 + test_rand_below(&rng, 20);
    for (size_t s = 0; s < steps && !fail; s++) {
        size_t who = test_rand_below(&rng, n);
        uint64_t what = test_rand_below(&rng, 10);
        if (what < 6) {
            if (random_edit(&all, &peers[who], &rng))
                fail = "local edit";
        } else if (what < 8) {
            if (deliver_random(&peers[who], &all, &rng, false))
                fail = "deliver";
        } else if (what < 9) {
            size_t third = test_rand_below(&rng, n + 1);
            if (relay_since(&peers[who], &peers[test_rand_below(&rng, n)],
                            third < n ? &peers[third] : NULL, &rng))
                fail = "relay since";
        } else {
            if (sync_since(&peers[who], &peers[test_rand_below(&rng, n)]))
                fail = "sync since";
        }
    }
    for (size_t i = 0; i < n && !fail; i++)
        if (deliver_random(&peers[i], &all, &rng, true))
            fail = "final delivery";
    for (size_t i = 1; i < n && !fail; i++)
        if (!same_state(peers[0].doc, peers[i].doc))
            fail = "replicas differ";
    /* The full state round-trips, and a fresh replica catches up from ops since nothing. */
    struct crdt_buf buf = {0}, again = {0};
    struct crdt_text *loaded = NULL;
    if (!fail && crdt_text_encode_state(&buf, peers[n - 1].doc))
        fail = "encode state";
    if (!fail && crdt_text_decode_state(&loaded, buf.data, buf.len))
        fail = "decode state";
    if (!fail && !same_state(loaded, peers[0].doc))
        fail = "decoded state differs";
    if (!fail && crdt_text_encode_state(&again, loaded))
        fail = "re-encode state";
    /* The state holds entries, origins and deletes exactly, so it re-encodes to the same
     * bytes, and the loaded document hands out the same ops (origins included). */
    if (!fail && (again.len != buf.len || memcmp(again.data, buf.data, buf.len) != 0))
        fail = "re-encoded state differs";
    struct crdt_vv none = {0};
    if (!fail && !same_since(loaded, peers[n - 1].doc, &none))
        fail = "ops since nothing differ after a load";
    if (!fail) {
        struct peer fresh = {0};
        crdt_clock_init(&fresh.clock, 999999);
        if (crdt_text_new(&fresh.doc) || sync_since(&fresh, &peers[1]) ||
            !same_state(fresh.doc, peers[0].doc))
            fail = "fresh replica from ops since nothing";
        /* Editing after a load continues where the original would. */
        if (!fail && (random_edit(NULL, &fresh, &rng) || sync_since(&peers[0], &fresh) ||
                      !same_state(fresh.doc, peers[0].doc)))
            fail = "edit after load";
        crdt_text_free(fresh.doc);
    }
    /* Compacted (every replica holds every op by now), the state still round-trips. */
    struct crdt_vv stable = {0};
    struct crdt_text *reloaded = NULL;
    struct crdt_buf compacted = {0}, compacted_again = {0};
    if (!fail && (crdt_text_version(&stable, peers[n - 1].doc) ||
                  crdt_text_compact(peers[n - 1].doc, &stable) ||
                  crdt_text_encode_state(&compacted, peers[n - 1].doc) ||
                  crdt_text_decode_state(&reloaded, compacted.data, compacted.len) ||
                  crdt_text_encode_state(&compacted_again, reloaded)))
        fail = "compacted state";
    if (!fail && (!same_state(reloaded, peers[n - 1].doc) || compacted.len != compacted_again.len ||
                  memcmp(compacted.data, compacted_again.data, compacted.len) != 0))
        fail = "compacted state differs after a load";
    crdt_text_free(reloaded);
    crdt_buf_free(&compacted);
    crdt_buf_free(&compacted_again);
    crdt_vv_free(&stable);
    crdt_text_free(loaded);
    crdt_buf_free(&buf);
    crdt_buf_free(&again);
    for (size_t i = 0; i < n; i++)
        crdt_text_free(peers[i].doc);
    crdt_text_ops_free(&all);
    return fail;
}

static void test_convergence(void)
{
    const char *one = getenv("WEFT_TEXT_SEED");
    const char *count_env = getenv("WEFT_TEXT_SCENARIOS");
    uint64_t first = 0, count = count_env ? strtoull(count_env, NULL, 10) : 10000;
    if (one) {
        first = strtoull(one, NULL, 10);
        count = 1;
    }
    int failed = 0;
    for (uint64_t seed = first; seed < first + count && failed < 5; seed++) {
        const char *fail = scenario(seed);
        test_checks++;
        if (fail) {
            test_failures++;
            failed++;
            fprintf(stderr, "convergence: seed %llu: %s (rerun: WEFT_TEXT_SEED=%llu)\n",
                    (unsigned long long)seed, fail, (unsigned long long)seed);
        }
    }
}

/* ------------------------------------------------------------ encodings */

static void build_small(struct peer *a, struct peer *b)
{
    peer_init(a, 1);
    peer_init(b, 2);
    struct crdt_text_ops ops_a = {0}, ops_b = {0};
    CHECK_INT(0, crdt_text_insert(&ops_a, a->doc, &a->clock, 0, "h\xc3\xa9llo", 6));
    CHECK_INT(0, deliver(b, &ops_a));
    CHECK_INT(0, crdt_text_insert(&ops_b, b->doc, &b->clock, 6, "!", 1));
    CHECK_INT(0, crdt_text_delete(&ops_a, a->doc, &a->clock, 0, 1));
    CHECK_INT(0, crdt_text_insert(&ops_a, a->doc, &a->clock, 0, "H", 1));
    CHECK_INT(0, deliver(a, &ops_b));
    CHECK_INT(0, deliver(b, &ops_a));
    crdt_text_ops_free(&ops_a);
    crdt_text_ops_free(&ops_b);
}

static void hexdump(const char *what, const struct crdt_buf *buf)
{
    fprintf(stderr, "%s (%zu bytes):", what, buf->len);
    for (size_t i = 0; i < buf->len; i++)
        fprintf(stderr, " 0x%02x,", buf->data[i]);
    fprintf(stderr, "\n");
}

static void test_golden(void)
{
    struct peer a, b;
    build_small(&a, &b);
    CHECK_TEXT("H\xc3\xa9llo!", a.doc);
    CHECK_TEXT("H\xc3\xa9llo!", b.doc);
    struct crdt_buf state = {0}, ops = {0};
    struct crdt_vv none = {0};
    CHECK_INT(0, crdt_text_encode_state(&state, a.doc));
    CHECK_INT(0, crdt_text_encode_since(&ops, a.doc, &none));
    /* Frozen: a change here is a format change (bump the version byte, keep a decoder). */
    static const uint8_t want_state[] = {
        0x02, 0x02, 0x01, 0x01,                          /* version 2; replicas 1, 2 (deltas) */
        0x03, 0x01,                                      /* 3 inserts, 1 delete record: */
        0x2c, 0x00, 0x02, 0x00,                          /* insert 5, r1 c1, at the start */
        0x09, 0x07,                                      /* delete (r1 c6) lv 0: cursor 4 - 4 */
        0x08, 0x00,                                      /* insert 1 (r1 c7), at the start */
        0x0c, 0x01, 0x0c, 0x01,                          /* insert 1, r2 c6, after lv 5 - 1 */
        0x00, 0x00,                                      /* nothing compacted, no exceptions */
        0x08, 'h',  0xc3, 0xa9, 'l', 'l', 'o', 'H', '!', /* content */
    };
    test_checks++;
    if (state.len != sizeof(want_state) || memcmp(state.data, want_state, state.len) != 0) {
        test_failures++;
        hexdump("golden state: got", &state);
    }
    /* The same document in version 1 (frozen when it was current) still loads, whole. */
    static const uint8_t v1_state[] = {
        0x01, 0x02, 0x01, 0x01,                           /* replicas 1, 2 (deltas) */
        0x03,                                             /* 3 insert runs: */
        0x00, 0x02, 0x0a, 0x00, 0x00,                     /* r1 c1 len 5, no origins */
        0x00, 0x02, 0x02, 0x00, 0x05,                     /* r1 c7 len 1, right origin lv 0 */
        0x01, 0x0c, 0x02, 0x02, 0x00,                     /* r2 c6 len 1, left origin lv 4 */
        0x08, 'h',  0xc3, 0xa9, 'l',  'l', 'o', 'H', '!', /* content */
        0x01, 0x00, 0x0c, 0x00, 0x04,                     /* 1 delete: r1 c6 of lv 0 */
        0x04, 0x0a, 0x02, 0x0b, 0x03,                     /* 4 runs: lv 5 "H", lv 0 deleted, */
        0x00, 0x08, 0x02, 0x02,                           /* lv 1-4 "éllo", lv 6 "!" */
    };
    struct crdt_text *old = NULL;
    struct crdt_buf again = {0};
    CHECK_INT(0, crdt_text_decode_state(&old, v1_state, sizeof(v1_state)));
    if (old) {
        CHECK_TEXT("H\xc3\xa9llo!", old);
        CHECK_INT(0, crdt_text_encode_state(&again, old));
        CHECK(again.len == sizeof(want_state) && memcmp(again.data, want_state, again.len) == 0);
    }
    crdt_text_free(old);
    crdt_buf_free(&again);
    static const uint8_t want_ops[] = {
        0x02, 0x02, 0x01, 0x01, 0x04,                   /* version 2; replicas 1, 2; 4 ops */
        0x01, 0x01, 0x00, 0x05, 0x00, 0x00,             /* insert r1 c1 len 5, no origins */
        0x06, 'h',  0xc3, 0xa9, 'l',  'l',  'o',        /* "héllo" */
        0x01, 0x07, 0x00, 0x01, 0x00, 0x01, 0x00,       /* insert r1 c7 len 1 before r1 c1 */
        0x01, 'H',                                      /**/
        0x01, 0x06, 0x01, 0x01, 0x05, 0x00, 0x00, 0x01, /* insert r2 c6 after r1 c5 */
        '!',                                            /**/
        0x02, 0x06, 0x00, 0x01, 0x01, 0x00, 0x01,       /* delete r1 c6 of r1 c1 */
    };
    test_checks++;
    if (ops.len != sizeof(want_ops) || memcmp(ops.data, want_ops, ops.len) != 0) {
        test_failures++;
        hexdump("golden ops: got", &ops);
    }
    /* The same ops in version 1 (frozen when it was current) still decode, to the same ops. */
    uint8_t v1_ops[sizeof(want_ops)];
    memcpy(v1_ops, want_ops, sizeof(want_ops));
    v1_ops[0] = 0x01;
    struct crdt_text_ops list = {0};
    struct crdt_buf reencoded = {0};
    CHECK_INT(0, crdt_text_ops_decode(&list, v1_ops, sizeof(v1_ops)));
    CHECK_INT(4, list.len);
    CHECK_INT(0, crdt_text_ops_encode(&reencoded, &list));
    CHECK(reencoded.len == sizeof(want_ops) &&
          memcmp(reencoded.data, want_ops, reencoded.len) == 0);
    crdt_buf_free(&reencoded);
    crdt_text_ops_free(&list);
    crdt_buf_free(&state);
    crdt_buf_free(&ops);
    crdt_text_free(a.doc);
    crdt_text_free(b.doc);
}

/* A concurrent insert placed away from its left origin (an origin exception) and a
 * compacted entry, frozen. */
static void test_golden_exceptions(void)
{
    struct peer a, b;
    peer_init(&a, 1);
    peer_init(&b, 2);
    struct crdt_text_ops ops_a = {0}, ops_b = {0};
    CHECK_INT(0, crdt_text_insert(&ops_a, a.doc, &a.clock, 0, "ab", 2));
    CHECK_INT(0, deliver(&b, &ops_a));
    crdt_text_ops_clear(&ops_a);
    /* Both type after "b": x (replica 1) goes first, y lands after it, not after "b". */
    CHECK_INT(0, crdt_text_insert(&ops_a, a.doc, &a.clock, 2, "x", 1));
    CHECK_INT(0, crdt_text_insert(&ops_b, b.doc, &b.clock, 2, "y", 1));
    CHECK_INT(0, deliver(&a, &ops_b));
    CHECK_INT(0, deliver(&b, &ops_a));
    crdt_text_ops_clear(&ops_a);
    /* "Q" typed and deleted, then compacted away once both replicas hold it. */
    CHECK_INT(0, crdt_text_insert(&ops_a, a.doc, &a.clock, 1, "Q", 1));
    CHECK_INT(0, crdt_text_delete(&ops_a, a.doc, &a.clock, 1, 1));
    CHECK_INT(0, deliver(&b, &ops_a));
    struct crdt_vv stable = {0};
    CHECK_INT(0, crdt_text_version(&stable, a.doc));
    CHECK_INT(0, crdt_text_compact(a.doc, &stable));
    CHECK_TEXT("abxy", a.doc);
    CHECK_TEXT("abxy", b.doc);
    struct crdt_buf state = {0}, again = {0};
    CHECK_INT(0, crdt_text_encode_state(&state, a.doc));
    static const uint8_t want_state[] = {
        0x02, 0x02, 0x01, 0x01,      /* version 2; replicas 1, 2 */
        0x03, 0x01,                  /* 3 inserts, 1 delete record: */
        0x1c, 0x00, 0x02, 0x00,      /* insert 3 ("abx"), r1 c1, at the start */
        0x0c, 0x01, 0x06, 0x00,      /* insert 1 ("y"), r2 c3, after lv 2 (the cursor) */
        0x0c, 0x00, 0x00, 0x05,      /* insert 1 ("Q"), r1 c4, after lv 0: cursor 3 - 3 */
        0x09, 0x00,                  /* delete (r1 c5) lv 4: the cursor */
        0x01, 0x02,                  /* 1 compacted entry: index 2 */
        0x01, 0x01, 0x02, 0x00,      /* 1 exception: index 1, left origin lv 1, right none */
        0x04, 'a',  'b',  'x',  'y', /* content, "Q" compacted away */
    };
    test_checks++;
    if (state.len != sizeof(want_state) || memcmp(state.data, want_state, state.len) != 0) {
        test_failures++;
        hexdump("golden state with exceptions: got", &state);
    }
    struct crdt_text *loaded = NULL;
    CHECK_INT(0, crdt_text_decode_state(&loaded, state.data, state.len));
    if (loaded) {
        CHECK_TEXT("abxy", loaded);
        /* Replica 2's insert, with its origins, as the original hands it out. */
        struct crdt_vv only_a = {0};
        CHECK_INT(0, crdt_vv_raise(&only_a, 1, 5));
        CHECK(same_since(loaded, a.doc, &only_a));
        crdt_vv_free(&only_a);
        CHECK_INT(0, crdt_text_encode_state(&again, loaded));
        CHECK(again.len == state.len && memcmp(again.data, state.data, state.len) == 0);
    }
    crdt_text_free(loaded);
    crdt_buf_free(&again);
    crdt_buf_free(&state);
    crdt_vv_free(&stable);
    crdt_text_ops_free(&ops_a);
    crdt_text_ops_free(&ops_b);
    crdt_text_free(a.doc);
    crdt_text_free(b.doc);
}

/*
 * "abc" typed by replica 1, "def" typed after it by replica 2, then replica 1
 * forward-deletes b, c, d (one op per key) and backspaces f, e: two delete
 * runs, one of them over both replicas' characters. Returns replica 1's doc in
 * *a, every op made (one per key) in *parts.
 */
static void build_runs(struct peer *a, struct crdt_text_ops *parts)
{
    struct peer b;
    peer_init(a, 1);
    peer_init(&b, 2);
    CHECK_INT(0, crdt_text_insert_cp(parts, a->doc, &a->clock, 0, "abc", 3));
    CHECK_INT(0, deliver(&b, parts));
    size_t from = parts->len;
    CHECK_INT(0, crdt_text_insert_cp(parts, b.doc, &b.clock, 3, "def", 3));
    struct crdt_text_ops def = {.ops = parts->ops + from, .len = parts->len - from};
    CHECK_INT(0, deliver(a, &def));
    for (int k = 0; k < 3; k++)
        CHECK_INT(0, crdt_text_delete_cp(parts, a->doc, &a->clock, 1, 1));
    for (size_t pos = 3; pos-- > 1;)
        CHECK_INT(0, crdt_text_delete_cp(parts, a->doc, &a->clock, pos, 1));
    CHECK_TEXT("a", a->doc);
    CHECK_INT(7, parts->len);
    crdt_text_free(b.doc);
}

static void test_golden_runs(void)
{
    struct peer a;
    struct crdt_text_ops parts = {0};
    build_runs(&a, &parts);
    struct crdt_buf ops = {0};
    struct crdt_vv none = {0};
    CHECK_INT(0, crdt_text_encode_since(&ops, a.doc, &none));
    /* Frozen: a change here is a format change (bump the version byte, keep a decoder). */
    static const uint8_t want_ops[] = {
        0x02, 0x02, 0x01, 0x01, 0x04,       /* version 2; replicas 1, 2; 4 ops */
        0x01, 0x01, 0x00, 0x03, 0x00, 0x00, /* insert r1 c1 len 3, no origins */
        0x03, 'a',  'b',  'c',              /**/
        0x01, 0x04, 0x01, 0x03, 0x03, 0x00, /* insert r2 c4 len 3 after r1 c3 */
        0x00, 0x03, 'd',  'e',  'f',        /**/
        0x03, 0x07, 0x00, 0x03, 0x02,       /* delete run r1 c7-9, 2 targets: */
        0x02, 0x00, 0x02, 0x04, 0x01, 0x01, /* r1 c2-3, r2 c4: b, c, d */
        0x04, 0x0a, 0x00, 0x02, 0x01,       /* delete run backward r1 c10-11, 1 target: */
        0x05, 0x01, 0x02,                   /* r2 c5-6, from the end: f, e */
    };
    test_checks++;
    if (ops.len != sizeof(want_ops) || memcmp(ops.data, want_ops, ops.len) != 0) {
        test_failures++;
        hexdump("golden ops with runs: got", &ops);
    }
    struct crdt_text_ops list = {0};
    CHECK_INT(0, crdt_text_ops_decode(&list, ops.data, ops.len));
    CHECK_INT(4, list.len);
    if (list.len == 4) {
        CHECK_INT(3, list.ops[2].len);
        CHECK(!list.ops[2].backward);
        CHECK_INT(2, list.ops[3].len);
        CHECK(list.ops[3].backward);
    }
    /* Version 1 has no runs; a run of one op or of more ops than its targets hold is refused. */
    uint8_t bad[sizeof(want_ops)];
    memcpy(bad, want_ops, sizeof(want_ops));
    bad[0] = 0x01;
    CHECK_INT(-EBADMSG, crdt_text_ops_decode(&list, bad, sizeof(bad)));
    memcpy(bad, want_ops, sizeof(want_ops));
    bad[44] = 0x01; /* the backward run's n */
    CHECK_INT(-EBADMSG, crdt_text_ops_decode(&list, bad, sizeof(bad)));
    memcpy(bad, want_ops, sizeof(want_ops));
    bad[44] = 0x03;
    CHECK_INT(-EBADMSG, crdt_text_ops_decode(&list, bad, sizeof(bad)));
    bad[44] = 0x02;
    bad[41] = 0x05; /* an unknown kind */
    CHECK_INT(-EBADMSG, crdt_text_ops_decode(&list, bad, sizeof(bad)));
    CHECK_INT(4, list.len);
    crdt_text_ops_free(&list);
    crdt_buf_free(&ops);
    crdt_text_ops_free(&parts);
    crdt_text_free(a.doc);
}

static bool same_bytes(const struct crdt_buf *x, const struct crdt_buf *y)
{
    return x->len == y->len && memcmp(x->data, y->data, x->len) == 0;
}

/* Whether two documents hold the same state, byte for byte (delete records included). */
static bool same_encoding(const struct crdt_text *x, const struct crdt_text *y)
{
    struct crdt_buf ex = {0}, ey = {0};
    bool same = crdt_text_encode_state(&ex, x) == 0 && crdt_text_encode_state(&ey, y) == 0 &&
                same_bytes(&ex, &ey);
    crdt_buf_free(&ex);
    crdt_buf_free(&ey);
    return same;
}

/* A delete run applies exactly as the ops it holds would, one by one: whole, in part held
 * already, in part waiting for its targets. */
static void test_delete_runs(void)
{
    struct peer a;
    struct crdt_text_ops parts = {0}, runs = {0};
    build_runs(&a, &parts);
    struct crdt_vv none = {0};
    CHECK_INT(0, crdt_text_since(&runs, a.doc, &none));
    CHECK_INT(4, runs.len);
    size_t applied, pending;
    /* Whole: the same state, byte for byte, the same counts and clock. */
    struct peer by_parts, by_runs;
    peer_init(&by_parts, 3);
    peer_init(&by_runs, 3);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, by_parts.doc, &by_parts.clock, parts.ops,
                                 parts.len));
    CHECK_INT(7, applied);
    CHECK_INT(0,
              crdt_text_apply(&applied, &pending, by_runs.doc, &by_runs.clock, runs.ops, runs.len));
    CHECK_INT(7, applied);
    CHECK_INT(0, pending);
    CHECK_INT(11, by_runs.clock.counter);
    CHECK_TEXT("a", by_runs.doc);
    CHECK(same_encoding(by_parts.doc, by_runs.doc));
    CHECK(same_encoding(a.doc, by_runs.doc));
    /* Again: every op a duplicate. */
    CHECK_INT(0, crdt_text_apply(&applied, &pending, by_runs.doc, NULL, runs.ops, runs.len));
    CHECK_INT(0, applied);
    CHECK(same_encoding(by_parts.doc, by_runs.doc));
    /* In part held: the inserts and the 2nd and 4th deletes came one by one before. */
    struct peer mixed;
    peer_init(&mixed, 3);
    const struct crdt_text_op early[] = {parts.ops[0], parts.ops[1], parts.ops[3], parts.ops[5]};
    CHECK_INT(0, crdt_text_apply(&applied, &pending, mixed.doc, NULL, early, 4));
    CHECK_INT(4, applied);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, mixed.doc, &mixed.clock, runs.ops, runs.len));
    CHECK_INT(3, applied);
    CHECK_INT(0, pending);
    CHECK_INT(11, mixed.clock.counter);
    CHECK_TEXT("a", mixed.doc);
    CHECK(same_state(by_parts.doc, mixed.doc));
    /* Waiting: replica 2's "def" has not come. The first run deletes b and c, its last op
     * (d) waits alone; the backward run waits whole. Then "def" comes, and all applies. */
    struct peer late;
    peer_init(&late, 3);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, late.doc, NULL, runs.ops, 1));
    CHECK_INT(0, crdt_text_apply(&applied, &pending, late.doc, &late.clock, runs.ops + 2, 2));
    CHECK_INT(2, applied);
    CHECK_INT(3, pending);
    CHECK_INT(8, late.clock.counter);
    CHECK_TEXT("a", late.doc);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, late.doc, &late.clock, runs.ops + 1, 1));
    CHECK_INT(4, applied);
    CHECK_INT(0, pending);
    CHECK_INT(11, late.clock.counter);
    CHECK(same_state(by_parts.doc, late.doc));
    /* Held in part and waiting in part, nothing to apply: the held ops are dropped, the rest
     * waits as a run of its own (here one op: d). */
    struct peer split;
    peer_init(&split, 3);
    const struct crdt_text_op first[] = {parts.ops[0], parts.ops[2], parts.ops[3]};
    CHECK_INT(0, crdt_text_apply(&applied, &pending, split.doc, NULL, first, 3));
    CHECK_INT(3, applied);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, split.doc, NULL, runs.ops + 2, 1));
    CHECK_INT(0, applied);
    CHECK_INT(1, pending);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, split.doc, NULL, runs.ops + 2, 2));
    CHECK_INT(0, applied);
    CHECK_INT(3, pending);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, split.doc, NULL, runs.ops + 1, 1));
    CHECK_INT(4, applied);
    CHECK_INT(0, pending);
    CHECK(same_state(by_parts.doc, split.doc));
    /* A peer that has the first part of a run is handed the rest as a run. */
    struct crdt_vv vv = {0};
    struct crdt_text_ops rest = {0};
    CHECK_INT(0, crdt_vv_raise(&vv, 1, 7));
    CHECK_INT(0, crdt_vv_raise(&vv, 2, 6));
    crdt_text_free(split.doc);
    CHECK_INT(0, crdt_text_since(&rest, a.doc, &vv));
    CHECK_INT(2, rest.len);
    if (rest.len == 2) {
        CHECK_INT(2, rest.ops[0].len);
        CHECK_INT(8, rest.ops[0].id.counter);
        CHECK_INT(2, rest.ops[0].targets_len);
    }
    crdt_text_ops_free(&rest);
    crdt_vv_free(&vv);
    /* A state may hold a step record whose last op deletes more (the record after it shares
     * its counter): that op is no part of a run, and takes both targets along. */
    static const uint8_t state[] = {
        0x02, 0x01, 0x01, 0x01, 0x02, /* version 2; replica 1; 1 insert, 2 delete records */
        0x24, 0x02, 0x00,             /* insert 4, r1 c1, at the start */
        0x12, 0x05,                   /* step 1: c5 deletes lv 0, c6 lv 1 */
        0x0d, 0x01, 0x08,             /* c6 deletes lv 3 too */
        0x00, 0x00, 0x04, 'a',  'b',  'c', 'd',
    };
    struct crdt_text *stepped = NULL, *fresh = NULL;
    struct crdt_text_ops handed = {0};
    CHECK_INT(0, crdt_text_decode_state(&stepped, state, sizeof(state)));
    CHECK_INT(0, crdt_text_new(&fresh));
    if (stepped && fresh) {
        CHECK_TEXT("c", stepped);
        CHECK_INT(0, crdt_text_since(&handed, stepped, &none));
        CHECK_INT(3, handed.len);
        if (handed.len == 3) {
            CHECK_INT(0, handed.ops[1].len);
            CHECK_INT(2, handed.ops[2].targets_len);
        }
        CHECK_INT(0, crdt_text_apply(&applied, &pending, fresh, NULL, handed.ops, handed.len));
        CHECK_TEXT("c", fresh);
        CHECK(same_state(stepped, fresh));
    }
    crdt_text_ops_free(&handed);
    crdt_text_free(stepped);
    crdt_text_free(fresh);
    crdt_text_free(by_parts.doc);
    crdt_text_free(by_runs.doc);
    crdt_text_free(mixed.doc);
    crdt_text_free(late.doc);
    crdt_text_ops_free(&parts);
    crdt_text_ops_free(&runs);
    crdt_text_free(a.doc);
}

static void test_malformed(void)
{
    struct peer a, b;
    build_small(&a, &b);
    struct crdt_buf state = {0}, ops = {0};
    struct crdt_vv none = {0};
    CHECK_INT(0, crdt_text_encode_state(&state, a.doc));
    CHECK_INT(0, crdt_text_encode_since(&ops, a.doc, &none));
    struct crdt_text *doc = NULL;
    struct crdt_text_ops list = {0};
    CHECK_INT(0, crdt_text_decode_state(&doc, state.data, state.len));
    CHECK_TEXT("H\xc3\xa9llo!", doc);
    crdt_text_free(doc);
    CHECK_INT(0, crdt_text_ops_decode(&list, ops.data, ops.len));
    CHECK_INT(4, list.len);
    crdt_text_ops_clear(&list);
    /* Every truncation fails cleanly. */
    for (size_t len = 0; len < state.len; len++) {
        doc = NULL;
        CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, state.data, len));
        CHECK(doc == NULL);
    }
    for (size_t len = 0; len < ops.len; len++) {
        CHECK_INT(-EBADMSG, crdt_text_ops_decode(&list, ops.data, len));
        CHECK_INT(0, list.len);
    }
    /* Every byte flipped to a few values: never a crash; what decodes is usable. The ops
     * with delete runs too. */
    struct peer with_runs;
    struct crdt_text_ops run_parts = {0};
    struct crdt_buf run_ops = {0};
    build_runs(&with_runs, &run_parts);
    CHECK_INT(0, crdt_text_encode_since(&run_ops, with_runs.doc, &none));
    crdt_text_free(with_runs.doc);
    crdt_text_ops_free(&run_parts);
    static const uint8_t values[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    for (int which = 0; which < 3; which++) {
        struct crdt_buf *enc = which == 0 ? &state : which == 1 ? &ops : &run_ops;
        uint8_t *copy = malloc(enc->len);
        for (size_t i = 0; i < enc->len; i++) {
            for (size_t v = 0; v < sizeof(values); v++) {
                memcpy(copy, enc->data, enc->len);
                copy[i] = values[v] == copy[i] ? (uint8_t)~copy[i] : values[v];
                int rc;
                if (which == 0) {
                    doc = NULL;
                    rc = crdt_text_decode_state(&doc, copy, enc->len);
                    if (rc == 0) {
                        struct crdt_buf re = {0};
                        char *t = content(doc);
                        CHECK(t != NULL);
                        free(t);
                        CHECK_INT(0, crdt_text_encode_state(&re, doc));
                        crdt_buf_free(&re);
                        crdt_text_free(doc);
                    }
                } else {
                    crdt_text_ops_clear(&list);
                    rc = crdt_text_ops_decode(&list, copy, enc->len);
                    if (rc == 0) {
                        struct crdt_text *target;
                        size_t applied, pending;
                        CHECK_INT(0, crdt_text_new(&target));
                        CHECK_INT(0, crdt_text_apply(&applied, &pending, target, NULL, list.ops,
                                                     list.len));
                        crdt_text_free(target);
                    }
                }
                CHECK(rc == 0 || rc == -EBADMSG);
            }
        }
        free(copy);
    }
    /* Counts that promise more than the input holds are refused before allocating. */
    static const uint8_t huge_ops[] = {0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f};
    CHECK_INT(-EBADMSG, crdt_text_ops_decode(&list, huge_ops, sizeof(huge_ops)));
    static const uint8_t huge_state[] = {0x02, 0xff, 0xff, 0xff, 0xff, 0x0f};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, huge_state, sizeof(huge_state)));
    static const uint8_t huge_records[] = {0x02, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, huge_records, sizeof(huge_records)));
    static const uint8_t huge_v1[] = {0x01, 0xff, 0xff, 0xff, 0xff, 0x0f};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, huge_v1, sizeof(huge_v1)));
    static const uint8_t bad_version[] = {0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, bad_version, sizeof(bad_version)));
    static const uint8_t no_version[] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, no_version, sizeof(no_version)));
    /* A delete record past the lvs, a record with no replica table, trailing bytes. */
    static const uint8_t del_past[] = {0x02, 0x01, 0x01, 0x01, 0x01, 0x0c, 0x02,
                                       0x00, 0x09, 0x02, 0x00, 0x00, 0x01, 'a'};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, del_past, sizeof(del_past)));
    static const uint8_t no_replica[] = {0x02, 0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x01, 'a'};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, no_replica, sizeof(no_replica)));
    static const uint8_t trailing[] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    CHECK_INT(-EBADMSG, crdt_text_decode_state(&doc, trailing, sizeof(trailing)));
    static const uint8_t empty_state[] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    CHECK_INT(0, crdt_text_decode_state(&doc, empty_state, sizeof(empty_state)));
    CHECK_INT(0, crdt_text_len_bytes(doc));
    crdt_text_free(doc);
    static const uint8_t empty_v1[] = {0x01, 0x00, 0x00, 0x00, 0x00, 0x00};
    CHECK_INT(0, crdt_text_decode_state(&doc, empty_v1, sizeof(empty_v1)));
    CHECK_INT(0, crdt_text_len_bytes(doc));
    crdt_text_free(doc);
    crdt_text_ops_free(&list);
    crdt_buf_free(&state);
    crdt_buf_free(&ops);
    crdt_buf_free(&run_ops);
    crdt_text_free(a.doc);
    crdt_text_free(b.doc);
}

static void test_remote_details(void)
{
    struct peer a, b;
    peer_init(&a, 1);
    peer_init(&b, 2);
    struct crdt_text_ops ops = {0};
    type(&ops, &a, 0, "abcdef", false);
    CHECK_INT(0, crdt_text_delete_cp(&ops, a.doc, &a.clock, 1, 2));
    /* Reverse order: everything waits until the first insert arrives. */
    size_t applied, pending;
    for (size_t i = ops.len; i-- > 1;) {
        CHECK_INT(0, crdt_text_apply(&applied, &pending, b.doc, NULL, &ops.ops[i], 1));
        CHECK_INT(0, applied);
    }
    CHECK_INT(6, pending);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, b.doc, &b.clock, ops.ops, 1));
    CHECK_INT(7, applied);
    CHECK_INT(0, pending);
    CHECK_TEXT("adef", b.doc);
    CHECK_INT(7, b.clock.counter);
    /* Duplicates are applied once. */
    CHECK_INT(0, crdt_text_apply(&applied, &pending, b.doc, NULL, ops.ops, ops.len));
    CHECK_INT(0, applied);
    CHECK_TEXT("adef", b.doc);
    /* An op overlapping held ids applies only its new part. */
    struct crdt_text_ops xy = {0}, z = {0};
    CHECK_INT(0, crdt_text_insert_cp(&xy, a.doc, &a.clock, 4, "xy", 2));
    CHECK_INT(0, crdt_text_insert_cp(&z, a.doc, &a.clock, 6, "z", 1));
    CHECK_INT(0, deliver(&b, &xy));
    struct crdt_text_op merged = xy.ops[0];
    merged.bytes = (const uint8_t *)"xyz";
    merged.bytes_len = merged.len = 3;
    CHECK_INT(0, crdt_text_apply(&applied, &pending, b.doc, NULL, &merged, 1));
    CHECK_INT(1, applied);
    CHECK_TEXT("adefxyz", b.doc);
    CHECK_TEXT("adefxyz", a.doc);
    CHECK_INT(0, crdt_text_apply(&applied, &pending, b.doc, NULL, z.ops, 1));
    CHECK_INT(0, applied);
    crdt_text_ops_free(&xy);
    crdt_text_ops_free(&z);
    /* Malformed ops are refused as a batch. */
    struct crdt_text_op bad = merged;
    bad.len = 7;
    CHECK_INT(-EINVAL, crdt_text_apply(&applied, &pending, b.doc, NULL, &bad, 1));
    bad = merged;
    bad.origin_left = (struct crdt_ts){merged.id.counter + 1, merged.id.replica};
    CHECK_INT(-EINVAL, crdt_text_apply(&applied, &pending, b.doc, NULL, &bad, 1));
    struct crdt_vv vv = {0};
    CHECK_INT(0, crdt_text_version(&vv, b.doc));
    CHECK_INT(1, vv.len);
    CHECK_INT(10, crdt_vv_get(&vv, 1));
    crdt_vv_free(&vv);
    crdt_text_ops_free(&ops);
    crdt_text_free(a.doc);
    crdt_text_free(b.doc);
}

static void test_apply_edits(void)
{
    struct peer p;
    peer_init(&p, 1);
    CHECK_INT(0, crdt_text_insert(NULL, p.doc, &p.clock, 0, "one two three", 13));
    struct crdt_text_edit edits[] = {
        {0, 3, "1", 1},
        {4, 0, "+", 1},
        {8, 5, "3\xc3\xa9", 3},
    };
    struct crdt_text_ops ops = {0};
    CHECK_INT(0, crdt_text_apply_edits(&ops, p.doc, &p.clock, edits, 3));
    CHECK_TEXT("1 +two 3\xc3\xa9", p.doc);
    CHECK_INT(5, ops.len);
    struct crdt_text_edit overlap[] = {{0, 3, "", 0}, {2, 1, "", 0}};
    CHECK_INT(-EINVAL, crdt_text_apply_edits(&ops, p.doc, &p.clock, overlap, 2));
    struct crdt_text_edit split[] = {{0, 1, "", 0}, {9, 1, "", 0}};
    CHECK_INT(-EINVAL, crdt_text_apply_edits(&ops, p.doc, &p.clock, split, 2));
    CHECK_TEXT("1 +two 3\xc3\xa9", p.doc);
    crdt_text_ops_free(&ops);
    crdt_text_free(p.doc);
}

/* Deletes that never merge into runs, all inside one insert run: the state stays loadable. */
static void test_scattered_deletes(void)
{
    struct peer p;
    peer_init(&p, 5);
    CHECK_INT(0, crdt_text_insert(NULL, p.doc, &p.clock, 0, "abcdefghijklmnopqrstuvwxyz", 26));
    for (size_t i = 0; i < 13; i++)
        CHECK_INT(0, crdt_text_delete_cp(NULL, p.doc, &p.clock, i, 1));
    for (size_t i = 13; i-- > 0;)
        CHECK_INT(0, crdt_text_delete_cp(NULL, p.doc, &p.clock, (i * 7) % (i + 1), 1));
    CHECK_INT(0, crdt_text_len_cp(p.doc));
    struct crdt_buf buf = {0};
    struct crdt_text *loaded = NULL;
    CHECK_INT(0, crdt_text_encode_state(&buf, p.doc));
    CHECK_INT(0, crdt_text_decode_state(&loaded, buf.data, buf.len));
    if (loaded)
        CHECK_INT(0, crdt_text_len_cp(loaded));
    crdt_text_free(loaded);
    crdt_buf_free(&buf);
    crdt_text_free(p.doc);
}

static void test_compact(void)
{
    struct peer a, b;
    peer_init(&a, 1);
    peer_init(&b, 2);
    struct crdt_text_ops ops = {0};
    type(&ops, &a, 0, "keep", false);
    CHECK_INT(0, crdt_text_insert_cp(&ops, a.doc, &a.clock, 2, "GONE", 4));
    CHECK_INT(0, crdt_text_delete_cp(&ops, a.doc, &a.clock, 2, 4));
    CHECK_INT(0, deliver(&b, &ops));
    struct crdt_vv stable = {0};
    CHECK_INT(0, crdt_text_version(&stable, a.doc));
    CHECK_INT(0, crdt_text_compact(a.doc, &stable));
    CHECK_TEXT("keep", a.doc);
    /* Still merges with a replica that kept the history. */
    struct crdt_text_ops more = {0};
    CHECK_INT(0, crdt_text_insert_cp(&more, b.doc, &b.clock, 2, "-", 1));
    CHECK_INT(0, deliver(&a, &more));
    CHECK_TEXT("ke-ep", a.doc);
    struct crdt_buf buf = {0};
    CHECK_INT(0, crdt_text_encode_state(&buf, a.doc));
    struct crdt_text *loaded;
    CHECK_INT(0, crdt_text_decode_state(&loaded, buf.data, buf.len));
    CHECK_TEXT("ke-ep", loaded);
    struct crdt_text_ops since = {0};
    struct crdt_vv none = {0};
    CHECK_INT(-ESTALE, crdt_text_since(&since, loaded, &none));
    crdt_text_ops_clear(&since);
    CHECK_INT(0, crdt_text_since(&since, loaded, &stable));
    CHECK_INT(1, since.len);
    crdt_text_ops_free(&since);
    crdt_text_free(loaded);
    crdt_buf_free(&buf);
    crdt_vv_free(&stable);
    crdt_text_ops_free(&ops);
    crdt_text_ops_free(&more);
    crdt_text_free(a.doc);
    crdt_text_free(b.doc);
}

int main(void)
{
    test_local_edits();
    test_utf8();
    test_interleaving();
    test_remote_details();
    test_apply_edits();
    test_golden();
    test_golden_exceptions();
    test_golden_runs();
    test_delete_runs();
    test_malformed();
    test_scattered_deletes();
    test_compact();
    test_convergence();
    return test_finish("text");
}
