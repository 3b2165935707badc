/*
 * weft-bench-text: replays an editing trace into crdt/text and measures what
 * ../shared/bench/text/bench.js measures for Yjs, Automerge and Loro:
 *
 *   replay       median of --runs replays into a fresh document, one local op
 *                per patch (ops collected per txn, as a commit would)
 *   memory       bytes the finished document holds (crdt_text_mem: exact
 *                allocation sizes)
 *   encoded      full state with history (crdt_text_encode_state)
 *   load         median time to decode that state and read the text back
 *   remote merge an empty replica imports the whole history as ops (decode +
 *                apply + read the text)
 *   conc. merge  two replicas share the first half of the trace; each then
 *                replays the second half on its own; then each exports the ops
 *                since the fork and the other imports them. Reported as
 *                bench.js does: export time / 2 + import time, median over both
 *                directions of up to 3 runs; plus convergence and the expected
 *                merged length (endContent + surviving second-half inserts).
 *
 * A concurrent trace is replayed with one replica per agent (README of the
 * traces); replay is the whole per-agent replay including the per-txn
 * export/import, merge-all a fresh replica importing every txn's update.
 *
 * Usage: weft-bench-text TRACE [--json] [--runs N]
 */
#include "crdt/text.h"
#include "tests/trace.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *values, size_t n)
{
    qsort(values, n, sizeof(double), cmp_double);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

static bool equals_end(const struct crdt_text *doc, const struct trace *t)
{
    char *text;
    size_t len;
    if (crdt_text_content(&text, &len, doc))
        return false;
    bool same = len == t->end_len && memcmp(text, t->end_content, len) == 0;
    free(text);
    return same;
}

/* Replays txns [from, to), one op list per txn, as an editor's commits would hand them out. */
static int replay(struct crdt_text *doc, struct crdt_clock *clock, const struct trace *t,
                  size_t from, size_t to)
{
    struct crdt_text_ops ops = {0};
    int rc = 0;
    for (size_t i = from; i < to && !rc; i++) {
        crdt_text_ops_clear(&ops);
        rc = trace_replay(doc, clock, &ops, t, i, i + 1);
    }
    crdt_text_ops_free(&ops);
    return rc;
}

struct results {
    double replay_ms, replay_min_ms, load_ms, remote_ms, conc_ms, merge_all_ms;
    size_t mem, encoded, remote_bytes, conc_bytes, conc_len, conc_expect;
    bool ok, load_ok, remote_ok, conc_converged, conc_len_ok;
};

/* Characters inserted in txns [mid, end) still there at the end: replay with '0' for the first
 * half's text and '1' for the second's, count the '1's. */
static int surviving_inserts(size_t *out, const struct trace *t, size_t mid)
{
    struct crdt_text *doc;
    struct crdt_clock clock;
    crdt_clock_init(&clock, 1);
    int rc = crdt_text_new(&doc);
    if (rc)
        return rc;
    char *fill = malloc(t->end_len + 65536);
    size_t fill_cap = t->end_len + 65536;
    for (size_t i = 0; i < t->txns_len && !rc && fill; i++) {
        for (size_t k = 0; k < t->txns[i].patches_len && !rc; k++) {
            const struct trace_patch *p = &t->txns[i].patches[k];
            if (p->del)
                rc = crdt_text_delete_cp(NULL, doc, &clock, p->pos, p->del);
            if (rc || !p->ins_cp)
                continue;
            if (p->ins_cp > fill_cap) {
                rc = -ENOMEM;
                break;
            }
            memset(fill, i >= mid ? '1' : '0', p->ins_cp);
            rc = crdt_text_insert_cp(NULL, doc, &clock, p->pos, fill, p->ins_cp);
        }
    }
    char *text;
    size_t len, count = 0;
    if (!rc && fill && !(rc = crdt_text_content(&text, &len, doc))) {
        for (size_t i = 0; i < len; i++)
            count += text[i] == '1';
        free(text);
    }
    free(fill);
    crdt_text_free(doc);
    *out = count;
    return fill ? rc : -ENOMEM;
}

static int fork_doc(struct crdt_text **out, const struct crdt_text *doc)
{
    struct crdt_buf buf = {0};
    int rc = crdt_text_encode_state(&buf, doc);
    if (!rc)
        rc = crdt_text_decode_state(out, buf.data, buf.len);
    crdt_buf_free(&buf);
    return rc;
}

static int import(struct crdt_text *doc, struct crdt_clock *clock, const struct crdt_buf *buf)
{
    struct crdt_text_ops ops = {0};
    size_t applied, pending;
    int rc = crdt_text_ops_decode(&ops, buf->data, buf->len);
    if (!rc)
        rc = crdt_text_apply(&applied, &pending, doc, clock, ops.ops, ops.len);
    crdt_text_ops_free(&ops);
    return rc;
}

static int bench_sequential(struct results *r, const struct trace *t, size_t runs)
{
    double *times = calloc(runs * 2 + 2, sizeof(double));
    struct crdt_text *doc = NULL;
    struct crdt_clock clock;
    int rc = times ? 0 : -ENOMEM;
    for (size_t run = 0; run < runs && !rc; run++) {
        crdt_text_free(doc);
        crdt_clock_init(&clock, 1);
        rc = crdt_text_new(&doc);
        double t0 = now_ms();
        if (!rc)
            rc = replay(doc, &clock, t, 0, t->txns_len);
        times[run] = now_ms() - t0;
    }
    if (rc)
        goto out;
    r->ok = equals_end(doc, t);
    r->mem = crdt_text_mem(doc);
    r->replay_min_ms = times[0];
    for (size_t i = 1; i < runs; i++)
        if (times[i] < r->replay_min_ms)
            r->replay_min_ms = times[i];
    r->replay_ms = median(times, runs);

    struct crdt_buf state = {0}, all = {0};
    rc = crdt_text_encode_state(&state, doc);
    r->encoded = state.len;
    r->load_ok = true;
    for (size_t run = 0; run < runs && !rc; run++) {
        struct crdt_text *loaded = NULL;
        double t0 = now_ms();
        rc = crdt_text_decode_state(&loaded, state.data, state.len);
        char *text = NULL;
        size_t len;
        if (!rc)
            rc = crdt_text_content(&text, &len, loaded);
        times[run] = now_ms() - t0;
        r->load_ok = r->load_ok && !rc && len == t->end_len && !memcmp(text, t->end_content, len);
        free(text);
        crdt_text_free(loaded);
    }
    r->load_ms = median(times, runs);

    struct crdt_vv none = {0};
    if (!rc)
        rc = crdt_text_encode_since(&all, doc, &none);
    r->remote_bytes = all.len;
    r->remote_ok = true;
    for (size_t run = 0; run < runs && !rc; run++) {
        struct crdt_text *fresh;
        struct crdt_clock fresh_clock;
        crdt_clock_init(&fresh_clock, 7);
        rc = crdt_text_new(&fresh);
        double t0 = now_ms();
        char *text = NULL;
        size_t len;
        if (!rc)
            rc = import(fresh, &fresh_clock, &all);
        if (!rc)
            rc = crdt_text_content(&text, &len, fresh);
        times[run] = now_ms() - t0;
        r->remote_ok =
            r->remote_ok && !rc && len == t->end_len && !memcmp(text, t->end_content, len);
        free(text);
        crdt_text_free(fresh);
    }
    r->remote_ms = median(times, runs);
    crdt_buf_free(&state);
    crdt_buf_free(&all);
    crdt_text_free(doc);
    doc = NULL;

    /* Concurrent merge, as bench.js defines it. */
    size_t mid = t->txns_len / 2, conc_runs = runs < 3 ? runs : 3, samples = 0;
    size_t surviving = 0;
    if (!rc)
        rc = surviving_inserts(&surviving, t, mid);
    size_t end_cp = 0;
    for (size_t i = 0; i < t->end_len; i++)
        end_cp += ((unsigned char)t->end_content[i] & 0xC0) != 0x80;
    r->conc_expect = end_cp + surviving;
    r->conc_converged = r->conc_len_ok = true;
    for (size_t run = 0; run < conc_runs && !rc; run++) {
        struct crdt_text *a = NULL, *b = NULL;
        struct crdt_clock ca, cb;
        struct crdt_vv va = {0}, vb = {0};
        struct crdt_buf ua = {0}, ub = {0};
        crdt_clock_init(&ca, 11);
        crdt_clock_init(&cb, 22);
        rc = crdt_text_new(&a);
        if (!rc)
            rc = replay(a, &ca, t, 0, mid);
        if (!rc)
            rc = fork_doc(&b, a);
        cb.counter = ca.counter;
        if (!rc)
            rc = crdt_text_version(&va, a);
        if (!rc)
            rc = crdt_text_version(&vb, b);
        if (!rc)
            rc = replay(a, &ca, t, mid, t->txns_len);
        if (!rc)
            rc = replay(b, &cb, t, mid, t->txns_len);
        double t0 = now_ms();
        if (!rc)
            rc = crdt_text_encode_since(&ua, a, &va);
        if (!rc)
            rc = crdt_text_encode_since(&ub, b, &vb);
        double t1 = now_ms();
        if (!rc)
            rc = import(a, &ca, &ub);
        double t2 = now_ms();
        if (!rc)
            rc = import(b, &cb, &ua);
        double t3 = now_ms();
        times[samples++] = (t1 - t0) / 2 + (t2 - t1);
        times[samples++] = (t1 - t0) / 2 + (t3 - t2);
        if (!rc) {
            char *ta, *tb;
            size_t la, lb;
            rc = crdt_text_content(&ta, &la, a);
            if (!rc && !(rc = crdt_text_content(&tb, &lb, b))) {
                r->conc_converged = r->conc_converged && la == lb && !memcmp(ta, tb, la);
                r->conc_len = crdt_text_len_cp(a);
                r->conc_len_ok = r->conc_len_ok && r->conc_len == r->conc_expect;
                free(tb);
            }
            if (!rc)
                free(ta);
        }
        r->conc_bytes = ua.len;
        crdt_buf_free(&ua);
        crdt_buf_free(&ub);
        crdt_vv_free(&va);
        crdt_vv_free(&vb);
        crdt_text_free(a);
        crdt_text_free(b);
    }
    if (samples)
        r->conc_ms = median(times, samples);
out:
    crdt_text_free(doc);
    free(times);
    return rc;
}

static int bench_concurrent(struct results *r, const struct trace *t, size_t runs)
{
    double *times = calloc(runs + 1, sizeof(double)), *merges = calloc(runs + 1, sizeof(double));
    int rc = times && merges ? 0 : -ENOMEM;
    r->ok = true;
    for (size_t run = 0; run < runs && !rc; run++) {
        struct trace_replicas reps;
        double t0 = now_ms();
        rc = trace_replay_agents(&reps, t);
        times[run] = now_ms() - t0;
        if (rc)
            break;
        struct crdt_text *all;
        struct crdt_clock clock;
        crdt_clock_init(&clock, reps.agents + 1);
        rc = crdt_text_new(&all);
        t0 = now_ms();
        if (!rc)
            rc = trace_import_all(all, &clock, &reps);
        merges[run] = now_ms() - t0;
        if (!rc) {
            r->ok = r->ok && equals_end(all, t);
            r->mem = crdt_text_mem(all);
            struct crdt_buf state = {0};
            rc = crdt_text_encode_state(&state, all);
            r->encoded = state.len;
            struct crdt_text *loaded = NULL;
            t0 = now_ms();
            if (!rc)
                rc = crdt_text_decode_state(&loaded, state.data, state.len);
            r->load_ms = now_ms() - t0;
            r->load_ok = !rc && equals_end(loaded, t);
            crdt_text_free(loaded);
            crdt_buf_free(&state);
        }
        crdt_text_free(all);
        trace_replicas_free(&reps);
    }
    if (!rc) {
        r->replay_min_ms = times[0];
        for (size_t i = 1; i < runs; i++)
            if (times[i] < r->replay_min_ms)
                r->replay_min_ms = times[i];
        r->replay_ms = median(times, runs);
        r->merge_all_ms = median(merges, runs);
    }
    free(times);
    free(merges);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool json = false;
    size_t runs = 5;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = strtoul(argv[++i], NULL, 10);
            if (runs < 1)
                runs = 1;
        } else if (!path && argv[i][0] != '-') {
            path = argv[i];
        } else {
            fprintf(stderr, "usage: %s TRACE [--json] [--runs N]\n", argv[0]);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: %s TRACE [--json] [--runs N]\n", argv[0]);
        return 2;
    }
    struct trace t;
    int rc = trace_load(&t, path);
    if (rc) {
        fprintf(stderr, "%s: cannot load %s: %s\n", argv[0], path, strerror(-rc));
        return 1;
    }
    struct results r = {0};
    rc = t.concurrent ? bench_concurrent(&r, &t, runs) : bench_sequential(&r, &t, runs);
    if (rc) {
        fprintf(stderr, "%s: replay failed: %s\n", argv[0], strerror(-rc));
        trace_free(&t);
        return 1;
    }
    if (json) {
        printf("{\"trace\": \"%s\", \"kind\": \"%s\", \"txns\": %zu, \"patches\": %zu, "
               "\"runs\": %zu, \"replay_ms\": %.3f, \"replay_min_ms\": %.3f, "
               "\"mem_bytes\": %zu, \"encoded_bytes\": %zu, \"load_ms\": %.3f, "
               "\"load_ok\": %s, \"end_content_ok\": %s",
               path, t.concurrent ? "concurrent" : "sequential", t.txns_len, t.patches, runs,
               r.replay_ms, r.replay_min_ms, r.mem, r.encoded, r.load_ms,
               r.load_ok ? "true" : "false", r.ok ? "true" : "false");
        if (t.concurrent)
            printf(
                ", \"merge_all_ms\": %.3f, \"remote_merge_ms\": null, \"conc_merge_ms\": null}\n",
                r.merge_all_ms);
        else
            printf(", \"remote_merge_ms\": %.3f, \"remote_bytes\": %zu, \"remote_ok\": %s, "
                   "\"conc_merge_ms\": %.3f, \"conc_update_bytes\": %zu, "
                   "\"conc_converged\": %s, \"conc_len\": %zu, \"conc_expect_len\": %zu, "
                   "\"conc_len_ok\": %s}\n",
                   r.remote_ms, r.remote_bytes, r.remote_ok ? "true" : "false", r.conc_ms,
                   r.conc_bytes, r.conc_converged ? "true" : "false", r.conc_len, r.conc_expect,
                   r.conc_len_ok ? "true" : "false");
    } else {
        printf("trace %s (%s, %zu txns, %zu patches), %zu runs\n", path,
               t.concurrent ? "concurrent" : "sequential", t.txns_len, t.patches, runs);
        printf("  replay        %9.2f ms median (min %.2f)%s\n", r.replay_ms, r.replay_min_ms,
               t.concurrent ? ", one replica per agent, per-txn export/import" : "");
        printf("  memory        %9zu bytes held by the document\n", r.mem);
        printf("  final text    %s endContent\n", r.ok ? "equals" : "DIFFERS FROM");
        printf("  encoded       %9zu bytes (full state, history included)\n", r.encoded);
        printf("  load          %9.2f ms (decode + read text), text ok: %s\n", r.load_ms,
               r.load_ok ? "yes" : "NO");
        if (t.concurrent) {
            printf("  merge all     %9.2f ms (a fresh replica imports every txn's update)\n",
                   r.merge_all_ms);
        } else {
            printf("  remote merge  %9.2f ms (empty replica imports %zu bytes of ops), ok: %s\n",
                   r.remote_ms, r.remote_bytes, r.remote_ok ? "yes" : "NO");
            printf("  conc. merge   %9.2f ms (export+import of %zu bytes), converged: %s, "
                   "length %zu (expected %zu): %s\n",
                   r.conc_ms, r.conc_bytes, r.conc_converged ? "yes" : "NO", r.conc_len,
                   r.conc_expect, r.conc_len_ok ? "ok" : "MISMATCH");
        }
        printf("reproduce: %s %s --runs %zu\n", argv[0], path, runs);
    }
    trace_free(&t);
    return 0;
}
