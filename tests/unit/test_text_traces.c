/*
 * Replays the standard editing traces (../shared/traces) into crdt/text:
 * every sequential trace as local ops, ending exactly at its endContent,
 * then through its full-state encoding and as remote ops into an empty
 * replica; the concurrent trace with one replica per agent, forking and
 * merging as its parents say, every replica ending at endContent.
 * Exits 77 (skip) only when the traces folder does not exist.
 */
#include "crdt/text.h"
#include "tests/test.h"
#include "tests/trace.h"

#include <stdlib.h>
#include <sys/stat.h>

#ifndef WEFT_TRACES_DIR
#define WEFT_TRACES_DIR "../shared/traces"
#endif

static void check_content(const char *what, const char *trace, const struct crdt_text *doc,
                          const struct trace *t)
{
    char *got = NULL;
    size_t len = 0;
    test_checks++;
    if (crdt_text_content(&got, &len, doc) != 0 || len != t->end_len ||
        memcmp(got, t->end_content, len) != 0) {
        test_failures++;
        fprintf(stderr, "%s: %s: content differs from endContent (%zu bytes, want %zu)\n", trace,
                what, len, t->end_len);
    }
    free(got);
}

/* A loaded state re-encodes to the very same bytes (the format keeps everything exactly). */
static void check_reencode(const char *trace, const struct crdt_text *loaded,
                           const struct crdt_buf *state)
{
    struct crdt_buf again = {0};
    test_checks++;
    if (!loaded || crdt_text_encode_state(&again, loaded) != 0 || again.len != state->len ||
        memcmp(again.data, state->data, state->len) != 0) {
        test_failures++;
        fprintf(stderr, "%s: the loaded state re-encodes differently (%zu bytes, want %zu)\n",
                trace, again.len, state->len);
    }
    crdt_buf_free(&again);
}

static void sequential(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct trace t;
    int rc = trace_load(&t, path);
    CHECK_INT(0, rc);
    if (rc)
        return;
    CHECK(!t.concurrent);
    struct crdt_text *doc, *loaded = NULL, *remote;
    struct crdt_clock clock;
    crdt_clock_init(&clock, 42);
    CHECK_INT(0, crdt_text_new(&doc));
    CHECK_INT(0, trace_replay(doc, &clock, NULL, &t, 0, t.txns_len));
    check_content("local replay", name, doc, &t);

    struct crdt_buf state = {0}, ops = {0};
    struct crdt_vv none = {0};
    CHECK_INT(0, crdt_text_encode_state(&state, doc));
    CHECK_INT(0, crdt_text_decode_state(&loaded, state.data, state.len));
    if (loaded)
        check_content("decoded state", name, loaded, &t);
    check_reencode(name, loaded, &state);

    CHECK_INT(0, crdt_text_encode_since(&ops, doc, &none));
    struct crdt_text_ops list = {0};
    size_t applied, pending;
    CHECK_INT(0, crdt_text_new(&remote));
    CHECK_INT(0, crdt_text_ops_decode(&list, ops.data, ops.len));
    CHECK_INT(0, crdt_text_apply(&applied, &pending, remote, NULL, list.ops, list.len));
    CHECK_INT(0, pending);
    check_content("remote ops", name, remote, &t);
    printf("%s: %zu patches, state %zu bytes, ops %zu bytes, doc memory %zu bytes\n", name,
           t.patches, state.len, ops.len, crdt_text_mem(doc));

    crdt_text_ops_free(&list);
    crdt_buf_free(&state);
    crdt_buf_free(&ops);
    crdt_text_free(doc);
    crdt_text_free(loaded);
    crdt_text_free(remote);
    trace_free(&t);
}

static void concurrent(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct trace t;
    int rc = trace_load(&t, path);
    CHECK_INT(0, rc);
    if (rc)
        return;
    CHECK(t.concurrent);
    struct trace_replicas reps;
    CHECK_INT(0, trace_replay_agents(&reps, &t));
    for (size_t a = 0; a < reps.agents; a++) {
        CHECK_INT(0, trace_import_all(reps.docs[a], &reps.clocks[a], &reps));
        check_content("agent replica", name, reps.docs[a], &t);
    }
    struct crdt_text *fresh;
    struct crdt_clock clock;
    crdt_clock_init(&clock, 1000);
    CHECK_INT(0, crdt_text_new(&fresh));
    CHECK_INT(0, trace_import_all(fresh, &clock, &reps));
    check_content("fresh replica", name, fresh, &t);
    struct crdt_buf state = {0};
    struct crdt_text *loaded = NULL;
    CHECK_INT(0, crdt_text_encode_state(&state, fresh));
    CHECK_INT(0, crdt_text_decode_state(&loaded, state.data, state.len));
    if (loaded)
        check_content("decoded state", name, loaded, &t);
    check_reencode(name, loaded, &state);
    printf("%s: %zu txns, %zu agents, state %zu bytes\n", name, t.txns_len, t.agents, state.len);
    crdt_text_free(loaded);
    crdt_buf_free(&state);
    crdt_text_free(fresh);
    trace_replicas_free(&reps);
    trace_free(&t);
}

int main(int argc, char **argv)
{
    const char *dir = trace_dir(argc > 1 ? argv[1] : WEFT_TRACES_DIR);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        printf("traces folder %s absent: skipped\n", dir);
        return 77;
    }
    sequential(dir, "automerge-paper.json.gz");
    sequential(dir, "seph-blog1.json.gz");
    sequential(dir, "ascii_only/automerge-paper.json.gz");
    sequential(dir, "ascii_only/seph-blog1.json.gz");
    concurrent(dir, "concurrent/friendsforever.json.gz");
    return test_finish("text-traces");
}
