/*
 * tests/trace: loads a text-CRDT editing trace (../shared/traces/README.md):
 * a gzipped JSON file of transactions of [position, deleted, inserted]
 * patches, positions in code points; concurrent traces add each txn's
 * parents and agent. Used by the text tests and benchmark only.
 */
#ifndef WEFT_TESTS_TRACE_H
#define WEFT_TESTS_TRACE_H

#include "crdt/text.h"

#include <stdbool.h>
#include <stddef.h>

struct trace_patch {
    size_t pos;      /* code points */
    size_t del;      /* code points */
    const char *ins; /* UTF-8, owned by the trace */
    size_t ins_len;  /* bytes */
    size_t ins_cp;   /* code points */
};

struct trace_txn {
    struct trace_patch *patches;
    size_t patches_len;
    size_t *parents; /* concurrent traces: earlier txn indexes */
    size_t parents_len;
    size_t agent;
};

struct trace {
    bool concurrent;
    size_t agents; /* 1 for a sequential trace */
    struct trace_txn *txns;
    size_t txns_len;
    size_t patches; /* in all txns */
    char *end_content;
    size_t end_len; /* bytes */
    /* storage the pointers above point into */
    struct trace_patch *patch_store;
    size_t *parent_store;
    char *text_store;
};

/* Loads a .json or .json.gz trace into *out (trace_free it); 0, -ENOENT, -EIO, -EBADMSG,
 * -ENOMEM. */
int trace_load(struct trace *out, const char *path);
/* Frees what trace_load allocated; accepts a zeroed trace. */
void trace_free(struct trace *trace);
/* The traces folder: $WEFT_TRACES if set, else `fallback`. */
const char *trace_dir(const char *fallback);

/*
 * Replays txns [from, to) as local edits of `doc` (one delete and/or one
 * insert op per patch), appending the ops to `ops` if not NULL.
 */
int trace_replay(struct crdt_text *doc, struct crdt_clock *clock, struct crdt_text_ops *ops,
                 const struct trace *trace, size_t from, size_t to);

/* A concurrent trace replayed with one replica per agent. */
struct trace_replicas {
    struct crdt_text **docs; /* per agent */
    struct crdt_clock *clocks;
    struct crdt_buf *updates; /* per txn: its ops, encoded (crdt_text_ops_encode) */
    size_t agents, txns;
};

/*
 * Replays a concurrent trace as its README says: before each txn its agent's
 * replica imports (as encoded updates) exactly the txns of its causal past it
 * lacks, then makes the txn's patches as local edits. The caller frees *out.
 */
int trace_replay_agents(struct trace_replicas *out, const struct trace *trace);
/* Applies every txn's update, in order, to doc. */
int trace_import_all(struct crdt_text *doc, struct crdt_clock *clock,
                     const struct trace_replicas *replicas);
/* Frees what trace_replay_agents allocated. */
void trace_replicas_free(struct trace_replicas *replicas);

#endif
