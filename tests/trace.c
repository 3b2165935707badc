/* tests/trace: see trace.h. */
#include "trace.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int read_gz(char **out, size_t *out_len, const char *path)
{
    gzFile file = gzopen(path, "rb");
    if (!file)
        return errno == ENOENT ? -ENOENT : -EIO;
    size_t len = 0, cap = 1 << 20;
    char *data = malloc(cap);
    int rc = data ? 0 : -ENOMEM;
    while (!rc) {
        if (cap - len < (1 << 16)) {
            char *grown = realloc(data, cap * 2);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            data = grown;
            cap *= 2;
        }
        int got = gzread(file, data + len, (unsigned)(cap - len));
        if (got < 0)
            rc = -EIO;
        else if (got == 0)
            break;
        else
            len += (size_t)got;
    }
    gzclose(file);
    if (rc) {
        free(data);
        return rc;
    }
    *out = data;
    *out_len = len;
    return 0;
}

static size_t count_cp(const char *s, size_t len)
{
    size_t cps = 0;
    for (size_t i = 0; i < len; i++)
        cps += ((unsigned char)s[i] & 0xC0) != 0x80;
    return cps;
}

static int fill(struct trace *trace, const cJSON *root)
{
    const cJSON *txns = cJSON_GetObjectItemCaseSensitive(root, "txns");
    const cJSON *end = cJSON_GetObjectItemCaseSensitive(root, "endContent");
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    const cJSON *agents = cJSON_GetObjectItemCaseSensitive(root, "numAgents");
    if (!cJSON_IsArray(txns) || !cJSON_IsString(end))
        return -EBADMSG;
    trace->concurrent = cJSON_IsString(kind) && strcmp(kind->valuestring, "concurrent") == 0;
    trace->agents =
        cJSON_IsNumber(agents) && agents->valuedouble >= 1 ? (size_t)agents->valuedouble : 1;
    /* Size everything first so the strings live in one block. */
    size_t n_txns = (size_t)cJSON_GetArraySize(txns), n_patches = 0, n_parents = 0;
    size_t text_bytes = strlen(end->valuestring) + 1;
    const cJSON *txn;
    cJSON_ArrayForEach(txn, txns)
    {
        const cJSON *patches = cJSON_GetObjectItemCaseSensitive(txn, "patches");
        const cJSON *parents = cJSON_GetObjectItemCaseSensitive(txn, "parents");
        if (!cJSON_IsArray(patches))
            return -EBADMSG;
        const cJSON *patch;
        cJSON_ArrayForEach(patch, patches)
        {
            const cJSON *ins = cJSON_GetArrayItem(patch, 2);
            if (!cJSON_IsArray(patch) || cJSON_GetArraySize(patch) != 3 || !cJSON_IsString(ins))
                return -EBADMSG;
            text_bytes += strlen(ins->valuestring) + 1;
            n_patches++;
        }
        if (cJSON_IsArray(parents))
            n_parents += (size_t)cJSON_GetArraySize(parents);
    }
    trace->txns = calloc(n_txns ? n_txns : 1, sizeof(*trace->txns));
    trace->patch_store = calloc(n_patches ? n_patches : 1, sizeof(*trace->patch_store));
    trace->parent_store = calloc(n_parents ? n_parents : 1, sizeof(size_t));
    trace->text_store = malloc(text_bytes);
    if (!trace->txns || !trace->patch_store || !trace->parent_store || !trace->text_store)
        return -ENOMEM;
    char *text = trace->text_store;
    size_t p = 0, q = 0, t = 0;
    cJSON_ArrayForEach(txn, txns)
    {
        struct trace_txn *out = &trace->txns[t];
        const cJSON *patches = cJSON_GetObjectItemCaseSensitive(txn, "patches");
        const cJSON *parents = cJSON_GetObjectItemCaseSensitive(txn, "parents");
        const cJSON *agent = cJSON_GetObjectItemCaseSensitive(txn, "agent");
        out->patches = &trace->patch_store[p];
        const cJSON *patch;
        cJSON_ArrayForEach(patch, patches)
        {
            const cJSON *pos = cJSON_GetArrayItem(patch, 0), *del = cJSON_GetArrayItem(patch, 1);
            const cJSON *ins = cJSON_GetArrayItem(patch, 2);
            if (!cJSON_IsNumber(pos) || !cJSON_IsNumber(del) || pos->valuedouble < 0 ||
                del->valuedouble < 0)
                return -EBADMSG;
            size_t len = strlen(ins->valuestring);
            memcpy(text, ins->valuestring, len + 1);
            trace->patch_store[p++] = (struct trace_patch){
                (size_t)pos->valuedouble, (size_t)del->valuedouble, text, len, count_cp(text, len)};
            text += len + 1;
            out->patches_len++;
        }
        out->parents = &trace->parent_store[q];
        if (cJSON_IsArray(parents)) {
            const cJSON *parent;
            cJSON_ArrayForEach(parent, parents)
            {
                if (!cJSON_IsNumber(parent) || parent->valuedouble < 0 ||
                    (size_t)parent->valuedouble >= t)
                    return -EBADMSG;
                trace->parent_store[q++] = (size_t)parent->valuedouble;
                out->parents_len++;
            }
        } else if (trace->concurrent) {
            return -EBADMSG;
        }
        out->agent = cJSON_IsNumber(agent) ? (size_t)agent->valuedouble : 0;
        if (out->agent >= trace->agents)
            return -EBADMSG;
        t++;
    }
    trace->txns_len = n_txns;
    trace->patches = n_patches;
    trace->end_len = strlen(end->valuestring);
    memcpy(text, end->valuestring, trace->end_len + 1);
    trace->end_content = text;
    return 0;
}

int trace_load(struct trace *out, const char *path)
{
    memset(out, 0, sizeof(*out));
    char *json;
    size_t len;
    int rc = read_gz(&json, &len, path);
    if (rc)
        return rc;
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    if (!root)
        return -EBADMSG;
    rc = fill(out, root);
    cJSON_Delete(root);
    if (rc)
        trace_free(out);
    return rc;
}

void trace_free(struct trace *trace)
{
    free(trace->txns);
    free(trace->patch_store);
    free(trace->parent_store);
    free(trace->text_store);
    memset(trace, 0, sizeof(*trace));
}

const char *trace_dir(const char *fallback)
{
    const char *env = getenv("WEFT_TRACES");
    return env && *env ? env : fallback;
}

int trace_replay(struct crdt_text *doc, struct crdt_clock *clock, struct crdt_text_ops *ops,
                 const struct trace *trace, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        const struct trace_txn *txn = &trace->txns[i];
        for (size_t k = 0; k < txn->patches_len; k++) {
            const struct trace_patch *p = &txn->patches[k];
            int rc = 0;
            if (p->del)
                rc = crdt_text_delete_cp(ops, doc, clock, p->pos, p->del);
            if (!rc && p->ins_len)
                rc = crdt_text_insert_cp(ops, doc, clock, p->pos, p->ins, p->ins_len);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int import(struct crdt_text *doc, struct crdt_clock *clock, struct crdt_text_ops *scratch,
                  const struct crdt_buf *update)
{
    crdt_text_ops_clear(scratch);
    int rc = crdt_text_ops_decode(scratch, update->data, update->len);
    size_t applied, pending;
    if (!rc)
        rc = crdt_text_apply(&applied, &pending, doc, clock, scratch->ops, scratch->len);
    if (!rc && pending)
        rc = -EPROTO;
    return rc;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int trace_replay_agents(struct trace_replicas *out, const struct trace *trace)
{
    memset(out, 0, sizeof(*out));
    size_t agents = trace->agents, txns = trace->txns_len;
    out->agents = agents;
    out->txns = txns;
    out->docs = calloc(agents, sizeof(*out->docs));
    out->clocks = calloc(agents, sizeof(*out->clocks));
    out->updates = calloc(txns ? txns : 1, sizeof(*out->updates));
    uint8_t *have = calloc(agents * (txns ? txns : 1), 1);
    size_t all_parents = 0;
    for (size_t i = 0; i < txns; i++)
        all_parents += trace->txns[i].parents_len;
    /* Every push is one parent edge of a txn visited at most once per round. */
    size_t *stack = malloc((all_parents + 1) * sizeof(size_t));
    size_t *need = malloc((txns + 1) * sizeof(size_t));
    size_t *seen = calloc(txns ? txns : 1, sizeof(size_t));
    struct crdt_text_ops scratch = {0}, made = {0};
    int rc = 0;
    if (!out->docs || !out->clocks || !out->updates || !have || !stack || !need || !seen)
        rc = -ENOMEM;
    for (size_t a = 0; a < agents && !rc; a++) {
        crdt_clock_init(&out->clocks[a], a + 1);
        rc = crdt_text_new(&out->docs[a]);
    }
    for (size_t i = 0; i < txns && !rc; i++) {
        const struct trace_txn *txn = &trace->txns[i];
        size_t a = txn->agent;
        uint8_t *mine = &have[a * txns];
        size_t top = 0, need_len = 0;
        for (size_t k = 0; k < txn->parents_len; k++)
            stack[top++] = txn->parents[k];
        while (top > 0) {
            size_t p = stack[--top];
            if (mine[p] || seen[p] == i + 1)
                continue;
            seen[p] = i + 1;
            need[need_len++] = p;
            for (size_t k = 0; k < trace->txns[p].parents_len; k++)
                stack[top++] = trace->txns[p].parents[k];
        }
        qsort(need, need_len, sizeof(size_t), cmp_size);
        for (size_t k = 0; k < need_len && !rc; k++) {
            rc = import(out->docs[a], &out->clocks[a], &scratch, &out->updates[need[k]]);
            mine[need[k]] = 1;
        }
        crdt_text_ops_clear(&made);
        if (!rc)
            rc = trace_replay(out->docs[a], &out->clocks[a], &made, trace, i, i + 1);
        if (!rc)
            rc = crdt_text_ops_encode(&out->updates[i], &made);
        mine[i] = 1;
    }
    crdt_text_ops_free(&scratch);
    crdt_text_ops_free(&made);
    free(have);
    free(stack);
    free(need);
    free(seen);
    if (rc)
        trace_replicas_free(out);
    return rc;
}

int trace_import_all(struct crdt_text *doc, struct crdt_clock *clock,
                     const struct trace_replicas *replicas)
{
    struct crdt_text_ops scratch = {0};
    int rc = 0;
    for (size_t i = 0; i < replicas->txns && !rc; i++)
        rc = import(doc, clock, &scratch, &replicas->updates[i]);
    crdt_text_ops_free(&scratch);
    return rc;
}

void trace_replicas_free(struct trace_replicas *replicas)
{
    for (size_t a = 0; replicas->docs && a < replicas->agents; a++)
        crdt_text_free(replicas->docs[a]);
    for (size_t i = 0; replicas->updates && i < replicas->txns; i++)
        crdt_buf_free(&replicas->updates[i]);
    free(replicas->docs);
    free(replicas->clocks);
    free(replicas->updates);
    memset(replicas, 0, sizeof(*replicas));
}
