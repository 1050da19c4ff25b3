/* orderlog project: orders, after-sales and skus into their read models;
 * the sale-events and blacklist topics go to the sale projections
 * (sale_project.c), in the same batches and transactions.
 *
 * Fold (worker threads, per key in log order): each event is decoded and
 * kept as an op (its type and data) in the worker's list. Apply (one
 * transaction per batch): the rows every op touches are loaded in one query
 * per table, the ops run in order on those row images in memory (the rules
 * below), and the changed rows are written back through COPY into staging
 * tables and one upsert per table. Then refunded_amount and paid totals are
 * recomputed in SQL for the orders touched.
 *
 * Rules, all idempotent (a replayed event changes nothing) and order-safe:
 *  - snapshots (OrderSynced, AfterSaleSynced, SkuSynced) apply only when
 *    their version is above the stored one;
 *  - OrderPlaced / RefundRequested create the row and are ignored when it
 *    exists; OrderPaid counts once per payment_id (order_payments);
 *  - every row remembers the offset of the last event applied to it
 *    (last_offset): an event at or below it is a replay and is skipped;
 *  - an event about an order or refund that does not exist can never apply:
 *    it goes to the dlq with the reason. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/codec.h"
#include "common/base/http.h"
#include "common/base/log.h"
#include "common/base/map.h"
#include "common/base/pg.h"
#include "common/base/pgcopy.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/project.h"
#include "consumers/runtime.h"
#include "consumers/sale_project.h"

/* ---- tables ------------------------------------------------------------- */

typedef struct table_s {
    const char *name;
    const char *const *cols; /* cols[0] is the primary key */
    int ncols;
} table_t;

enum {
    O_ID,
    O_USER,
    O_SOURCE,
    O_PLATFORM,
    O_SHOP,
    O_STATUS,
    O_TOTAL,
    O_CURRENCY,
    O_PAID,
    O_REFUNDED,
    O_PAYMENT,
    O_CARRIER,
    O_TRACKING,
    O_CANCEL_REASON,
    O_PLACED_AT,
    O_PAID_AT,
    O_SHIPPED_AT,
    O_CANCELLED_AT,
    O_VERSION,
    O_UPDATED_AT,
    O_LAST_PARTITION,
    O_LAST_OFFSET,
    O_NCOLS
};
static const char *const order_cols[] = {
    "order_id",     "user_id",       "source",         "platform",        "shop_id",    "status",
    "total_amount", "currency",      "paid_amount",    "refunded_amount", "payment_id", "carrier",
    "tracking_no",  "cancel_reason", "placed_at",      "paid_at",         "shipped_at", "cancelled_at",
    "version",      "updated_at",    "last_partition", "last_offset"};

enum {
    R_ID,
    R_ORDER,
    R_USER,
    R_PLATFORM,
    R_STATUS,
    R_AMOUNT,
    R_CURRENCY,
    R_REASON,
    R_REJECT_REASON,
    R_REQUESTED_AT,
    R_APPROVED_AT,
    R_REJECTED_AT,
    R_COMPLETED_AT,
    R_VERSION,
    R_UPDATED_AT,
    R_LAST_PARTITION,
    R_LAST_OFFSET,
    R_NCOLS
};
static const char *const refund_cols[] = {
    "refund_id",    "order_id", "user_id",       "platform",       "status",      "amount",
    "currency",     "reason",   "reject_reason", "requested_at",   "approved_at", "rejected_at",
    "completed_at", "version",  "updated_at",    "last_partition", "last_offset"};

enum {
    S_ID,
    S_PLATFORM,
    S_TITLE,
    S_PRICE,
    S_CURRENCY,
    S_STOCK,
    S_VERSION,
    S_REMOVED_AT,
    S_UPDATED_AT,
    S_LAST_PARTITION,
    S_LAST_OFFSET,
    S_NCOLS
};
static const char *const sku_cols[] = {"sku",     "platform",   "title",      "price",          "currency",   "stock",
                                       "version", "removed_at", "updated_at", "last_partition", "last_offset"};

static const table_t t_orders = {"orders", order_cols, O_NCOLS};
static const table_t t_refunds = {"refunds", refund_cols, R_NCOLS};
static const table_t t_skus = {"skus", sku_cols, S_NCOLS};

/* A row image: every column as text (NULL = SQL NULL), in the apply arena. */
typedef struct row_s {
    char **v;
    bool exists; /* in the database before this batch */
    bool dirty;
    char *lines; /* orders: the order_lines COPY text to write when lines_dirty */
    bool lines_dirty;
    const char *stored_order; /* refunds: order_id in the database before this batch */
} row_t;

/* ---- fold ------------------------------------------------------------- */

typedef struct op_s {
    const ol_event_type_t *type;
    const ol_json_t *data;
    int64_t time_ms;
    int32_t partition; /* where it is in its topic */
    int64_t offset;
    size_t index; /* in the batch */
} op_t;

typedef struct fold_state_s {
    op_t *ops;
    size_t n, cap;
    ol_sale_project_fold_t *sale; /* the records of sale-events and blacklist */
} fold_state_t;

static void *state_new(void *opaque) {
    (void)opaque;
    fold_state_t *s = ol_xcalloc(1, sizeof(fold_state_t));
    s->sale = ol_sale_project_fold_new();
    return s;
}

static void state_reset(void *state) {
    fold_state_t *s = state;
    s->n = 0;
    ol_sale_project_fold_reset(s->sale);
}

static void state_destroy(void *state) {
    fold_state_t *s = state;
    ol_sale_project_fold_destroy(s->sale);
    free(s->ops);
    free(s);
}

static ol_err_t fold(void *state, const ol_rt_record_t *rec, ol_arena_t *arena, char *errstr, size_t errstr_size) {
    (void)errstr;
    (void)errstr_size;
    fold_state_t *s = state;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->ops = ol_xrealloc(s->ops, s->cap * sizeof(*s->ops));
    }
    s->ops[s->n++] = (op_t){rec->env->type,    ol_codec_to_dom(rec->env->type, rec->value, arena),
                            rec->env->time_ms, rec->partition,
                            rec->offset,       rec->index};
    return OL_ERR_OK;
}

/* ---- helpers on the data of an event -------------------------------- */

static const char *dstr_of(const ol_json_t *obj, const char *field) {
    const ol_json_t *v = ol_json_get(obj, field);
    return v && v->type == OL_JSON_STRING ? v->u.s : NULL;
}

static int64_t dint_of(const ol_json_t *obj, const char *field) {
    const ol_json_t *v = ol_json_get(obj, field);
    return v && v->type == OL_JSON_INT ? v->u.i : 0;
}

static const char *dstr(const op_t *op, const char *field) {
    return dstr_of(op->data, field);
}

static int64_t dint(const op_t *op, const char *field) {
    return dint_of(op->data, field);
}

/* ---- apply ------------------------------------------------------------ */

typedef struct apply_s {
    ol_rt_t *rt;
    PGconn *conn;
    ol_arena_t *arena;
    const char *schema;
    ol_map_t *orders, *refunds, *skus;
    ol_map_t *payments;       /* "<order_id>\x1f<payment_id>" of every payment counted */
    ol_pgcopy_t new_payments; /* COPY rows for order_payments */
    char *errstr;
    size_t errstr_size;
    ol_project_bulk_t *bulk; /* bulk mode: the rows live across batches, in its arena */
} apply_t;

static char *bulk_strdup(ol_project_bulk_t *b, const char *v, size_t n);
static ol_arena_t *bulk_arena(ol_project_bulk_t *b);

/* A copy of v that lives as long as the row: the batch's arena, or the
 * bulk state's (where rows outlive batches). */
static char *row_strdup(apply_t *a, const char *v, size_t n) {
    return a->bulk ? bulk_strdup(a->bulk, v, n) : ol_arena_strndup(a->arena, v, n);
}

/* In bulk mode a value that fits where the old one is replaces it in place:
 * the rows' arena only grows by what does not fit (a version 2 snapshot
 * rewrites most columns of its order with values of the same length). */
static void set_str(apply_t *a, row_t *r, int col, const char *v) {
    size_t n = v ? strlen(v) : 0;
    if (a->bulk && v && r->v[col] && strlen(r->v[col]) >= n)
        memcpy(r->v[col], v, n + 1);
    else
        r->v[col] = v ? row_strdup(a, v, n) : NULL;
    r->dirty = true;
}

static void set_int(apply_t *a, row_t *r, int col, int64_t v) {
    char num[24], *p = num + sizeof(num) - 1;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    *p = '\0';
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    set_str(a, r, col, p);
}

static void set_time(apply_t *a, row_t *r, int col, int64_t ms) {
    char ts[40];
    ol_time_format(ms, ts, sizeof(ts));
    set_str(a, r, col, ts);
}

static void set_dtime(apply_t *a, row_t *r, int col, const op_t *op, const char *field) {
    set_time(a, r, col, dint(op, field));
}

static int64_t get_int(const row_t *r, int col) {
    return r->v[col] ? strtoll(r->v[col], NULL, 10) : 0;
}

/* A snapshot applies when there is no row, or the row's version is lower. */
static bool newer(const row_t *r, int col, int64_t version) {
    return !r->v[col] || strtoll(r->v[col], NULL, 10) < version;
}

/* The row image of key in map, created empty (exists = false) when absent. */
static row_t *row_get(apply_t *a, ol_map_t *map, const table_t *t, const char *key) {
    row_t *r = ol_map_get(map, key, strlen(key));
    if (!r) {
        ol_arena_t *arena = a->bulk ? bulk_arena(a->bulk) : a->arena;
        r = ol_arena_alloc(arena, sizeof(*r));
        memset(r, 0, sizeof(*r));
        r->v = ol_arena_alloc(arena, (size_t)t->ncols * sizeof(char *));
        memset(r->v, 0, (size_t)t->ncols * sizeof(char *));
        r->v[0] = row_strdup(a, key, strlen(key));
        ol_map_put(map, key, strlen(key), r);
    }
    return r;
}

/* The order's lines, rendered as order_lines COPY text now: the event they
 * come from does not outlive the batch. */
static void set_lines(apply_t *a, row_t *r, const ol_json_t *lines) {
    ol_pgcopy_t t = {a->arena, NULL, 0, 0};
    for (size_t i = 0; lines && i < lines->len; i++) {
        const ol_json_t *l = &lines->u.items[i];
        char no[24], qty[24], price[24];
        snprintf(no, sizeof(no), "%zu", i + 1);
        snprintf(qty, sizeof(qty), "%lld", (long long)dint_of(l, "quantity"));
        snprintf(price, sizeof(price), "%lld", (long long)dint_of(l, "unit_price"));
        char *vals[5] = {r->v[0], no, (char *)dstr_of(l, "sku"), qty, price};
        ol_pgcopy_row(&t, vals, 5);
    }
    if (a->bulk && t.len && r->lines && strlen(r->lines) >= t.len)
        memcpy(r->lines, t.buf, t.len + 1);
    else
        r->lines = t.len ? row_strdup(a, t.buf, t.len) : NULL;
    r->lines_dirty = true;
    r->dirty = true;
}

/* A row "is" when it existed or an op of this batch created it. */
static bool row_is(const row_t *r) {
    return r->exists || r->v[1] != NULL;
}

/* The op's aggregate does not exist: it can never apply. */
static void reject_missing(apply_t *a, const op_t *op, const char *what, const char *id) {
    char reason[512];
    snprintf(reason, sizeof(reason), "%s \"%.200s\" does not exist", what, id);
    ol_rt_reject(a->rt, op->index, reason);
}

static void apply_order(apply_t *a, const op_t *op) {
    const char *name = op->type->name, *id = dstr(op, "order_id");
    row_t *r = row_get(a, a->orders, &t_orders, id);
    if (!strcmp(name, "OrderSynced")) {
        int64_t version = dint(op, "version");
        if (!newer(r, O_VERSION, version))
            return;
        if (!row_is(r)) {
            set_str(a, r, O_SOURCE, "external");
            set_int(a, r, O_PAID, 0);
            set_int(a, r, O_REFUNDED, 0);
        }
        set_str(a, r, O_USER, dstr(op, "user_id"));
        set_str(a, r, O_PLATFORM, dstr(op, "platform"));
        set_str(a, r, O_SHOP, dstr(op, "shop_id"));
        set_str(a, r, O_STATUS, dstr(op, "status"));
        set_int(a, r, O_TOTAL, dint(op, "total_amount"));
        set_str(a, r, O_CURRENCY, dstr(op, "currency"));
        set_int(a, r, O_VERSION, version);
        set_dtime(a, r, O_UPDATED_AT, op, "updated_at");
        set_lines(a, r, ol_json_get(op->data, "lines"));
        return;
    }
    if (!strcmp(name, "OrderPlaced")) {
        if (row_is(r))
            return; /* placed once */
        set_str(a, r, O_USER, dstr(op, "user_id"));
        set_str(a, r, O_SOURCE, dstr(op, "source"));
        set_str(a, r, O_STATUS, "placed");
        set_int(a, r, O_TOTAL, dint(op, "total_amount"));
        set_str(a, r, O_CURRENCY, dstr(op, "currency"));
        set_int(a, r, O_PAID, 0);
        set_int(a, r, O_REFUNDED, 0);
        set_dtime(a, r, O_PLACED_AT, op, "placed_at");
        set_dtime(a, r, O_UPDATED_AT, op, "placed_at");
        set_lines(a, r, ol_json_get(op->data, "lines"));
        return;
    }
    if (!row_is(r)) {
        reject_missing(a, op, "order", id);
        return;
    }
    if (!strcmp(name, "OrderPaid")) {
        const char *payment = dstr(op, "payment_id");
        char *pk = ol_arena_sprintf(a->arena, "%s\x1f%s", id, payment);
        if (ol_map_get(a->payments, pk, strlen(pk)))
            return; /* this payment is counted */
        ol_map_put(a->payments, pk, strlen(pk), r);
        char ts[40];
        ol_time_format(dint(op, "paid_at"), ts, sizeof(ts));
        char *vals[5] = {(char *)id, (char *)payment, ol_arena_sprintf(a->arena, "%lld", (long long)dint(op, "amount")),
                         (char *)dstr(op, "currency"), ts};
        ol_pgcopy_row(&a->new_payments, vals, 5);
        set_int(a, r, O_PAID, get_int(r, O_PAID) + dint(op, "amount"));
        set_str(a, r, O_PAYMENT, payment);
        set_dtime(a, r, O_PAID_AT, op, "paid_at");
        if (!strcmp(r->v[O_STATUS], "placed"))
            set_str(a, r, O_STATUS, "paid");
        set_dtime(a, r, O_UPDATED_AT, op, "paid_at");
    } else if (!strcmp(name, "OrderCancelled")) {
        set_str(a, r, O_STATUS, "cancelled");
        set_str(a, r, O_CANCEL_REASON, dstr(op, "reason"));
        set_dtime(a, r, O_CANCELLED_AT, op, "cancelled_at");
        set_dtime(a, r, O_UPDATED_AT, op, "cancelled_at");
    } else if (!strcmp(name, "OrderShipped")) {
        set_str(a, r, O_STATUS, "shipped");
        set_str(a, r, O_CARRIER, dstr(op, "carrier"));
        set_str(a, r, O_TRACKING, dstr(op, "tracking_no"));
        set_dtime(a, r, O_SHIPPED_AT, op, "shipped_at");
        set_dtime(a, r, O_UPDATED_AT, op, "shipped_at");
    }
}

static void apply_refund(apply_t *a, const op_t *op) {
    const char *name = op->type->name, *id = dstr(op, "refund_id");
    row_t *r = row_get(a, a->refunds, &t_refunds, id);
    if (!strcmp(name, "AfterSaleSynced")) {
        int64_t version = dint(op, "version");
        if (!newer(r, R_VERSION, version))
            return;
        set_str(a, r, R_ORDER, dstr(op, "order_id"));
        set_str(a, r, R_PLATFORM, dstr(op, "platform"));
        set_str(a, r, R_STATUS, dstr(op, "status"));
        set_int(a, r, R_AMOUNT, dint(op, "amount"));
        set_str(a, r, R_CURRENCY, dstr(op, "currency"));
        set_int(a, r, R_VERSION, version);
        set_dtime(a, r, R_UPDATED_AT, op, "updated_at");
        if (!strcmp(dstr(op, "status"), "completed") && !r->v[R_COMPLETED_AT])
            set_dtime(a, r, R_COMPLETED_AT, op, "updated_at");
        return;
    }
    if (!strcmp(name, "RefundRequested")) {
        if (row_is(r))
            return;
        set_str(a, r, R_ORDER, dstr(op, "order_id"));
        set_str(a, r, R_USER, dstr(op, "user_id"));
        set_str(a, r, R_STATUS, "requested");
        set_int(a, r, R_AMOUNT, dint(op, "amount"));
        set_str(a, r, R_CURRENCY, dstr(op, "currency"));
        set_str(a, r, R_REASON, dstr(op, "reason"));
        set_dtime(a, r, R_REQUESTED_AT, op, "requested_at");
        set_dtime(a, r, R_UPDATED_AT, op, "requested_at");
        return;
    }
    if (!row_is(r)) {
        reject_missing(a, op, "refund", id);
        return;
    }
    if (!strcmp(name, "RefundApproved")) {
        set_str(a, r, R_STATUS, "approved");
        set_dtime(a, r, R_APPROVED_AT, op, "approved_at");
        set_dtime(a, r, R_UPDATED_AT, op, "approved_at");
    } else if (!strcmp(name, "RefundRejected")) {
        set_str(a, r, R_STATUS, "rejected");
        set_str(a, r, R_REJECT_REASON, dstr(op, "reason"));
        set_dtime(a, r, R_REJECTED_AT, op, "rejected_at");
        set_dtime(a, r, R_UPDATED_AT, op, "rejected_at");
    } else if (!strcmp(name, "RefundCompleted")) {
        set_str(a, r, R_STATUS, "completed");
        set_int(a, r, R_AMOUNT, dint(op, "amount"));
        set_dtime(a, r, R_COMPLETED_AT, op, "completed_at");
        set_dtime(a, r, R_UPDATED_AT, op, "completed_at");
    }
}

static void apply_sku(apply_t *a, const op_t *op) {
    const char *name = op->type->name, *id = dstr(op, "sku");
    if (strcmp(name, "SkuSynced") && strcmp(name, "SkuRemoved") && strcmp(name, "StockAdjusted"))
        return; /* PurchasePolicySet is the decider's */
    row_t *r = row_get(a, a->skus, &t_skus, id);
    if (!strcmp(name, "SkuSynced")) {
        int64_t version = dint(op, "version");
        if (!newer(r, S_VERSION, version))
            return;
        set_str(a, r, S_PLATFORM, dstr(op, "platform"));
        set_str(a, r, S_TITLE, dstr(op, "title"));
        set_int(a, r, S_PRICE, dint(op, "price"));
        set_str(a, r, S_CURRENCY, dstr(op, "currency"));
        set_int(a, r, S_STOCK, dint(op, "stock"));
        set_int(a, r, S_VERSION, version);
        set_str(a, r, S_REMOVED_AT, NULL);
        set_dtime(a, r, S_UPDATED_AT, op, "updated_at");
        return;
    }
    if (!row_is(r)) {
        reject_missing(a, op, "sku (no SkuSynced yet)", id);
        return;
    }
    if (!strcmp(name, "SkuRemoved")) {
        set_dtime(a, r, S_REMOVED_AT, op, "removed_at");
        set_dtime(a, r, S_UPDATED_AT, op, "removed_at");
    } else {
        int64_t stock = get_int(r, S_STOCK) + dint(op, "delta");
        set_int(a, r, S_STOCK, stock < 0 ? 0 : stock);
        set_dtime(a, r, S_UPDATED_AT, op, "adjusted_at");
    }
}

/* ---- loading and writing rows ----------------------------------------- */

/* A PostgreSQL text[] literal: {"a","b"}. */
typedef struct keys_s {
    ol_pgcopy_t text;
    size_t count;
} keys_t;

static void keys_init(keys_t *k, ol_arena_t *arena) {
    memset(k, 0, sizeof(*k));
    k->text.arena = arena;
    ol_pgcopy_char(&k->text, '{');
}

static void keys_put(keys_t *k, const char *s, size_t n) {
    ol_pgcopy_array_item(&k->text, s, n, k->count++ == 0);
}

static const char *keys_end(keys_t *k) {
    ol_pgcopy_char(&k->text, '}');
    return k->text.buf;
}

static void keys_fn(void *opaque, const char *key, size_t key_len, void *value) {
    (void)value;
    keys_put(opaque, key, key_len);
}

static const char *keys_literal(apply_t *a, const ol_map_t *map) {
    keys_t k;
    keys_init(&k, a->arena);
    ol_map_foreach(map, keys_fn, &k);
    return keys_end(&k);
}

/* Fills the images of the rows that exist. */
static ol_err_t load_rows(apply_t *a, const table_t *t, ol_map_t *map) {
    if (!ol_map_count(map))
        return OL_ERR_OK;
    char *sql =
        ol_arena_sprintf(a->arena, "select * from %s.%s where %s = any($1::text[])", a->schema, t->name, t->cols[0]);
    /* select * returns the columns in table order: map them by name once */
    const char *params[] = {keys_literal(a, map)};
    PGresult *res;
    ol_err_t err = ol_pg_query(&res, a->conn, sql, 1, params, a->errstr, a->errstr_size);
    if (err)
        return err;
    int colmap[64];
    for (int c = 0; c < t->ncols; c++)
        colmap[c] = PQfnumber(res, t->cols[c]);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *key = PQgetvalue(res, i, colmap[0]);
        row_t *r = ol_map_get(map, key, strlen(key));
        if (!r)
            continue;
        r->exists = true;
        for (int c = 0; c < t->ncols; c++)
            r->v[c] =
                colmap[c] < 0 || PQgetisnull(res, i, colmap[c])
                    ? NULL
                    : ol_arena_strndup(a->arena, PQgetvalue(res, i, colmap[c]), (size_t)PQgetlength(res, i, colmap[c]));
        if (t == &t_refunds)
            r->stored_order = r->v[R_ORDER];
    }
    PQclear(res);
    return OL_ERR_OK;
}

/* Rows in COPY text: kept whole (stream NULL: sent after, by copy_in), or
 * streamed to a COPY running on stream in chunks while they are made
 * (PostgreSQL parses one chunk while the next is made; the text of a table
 * is never whole in memory). */
#define STREAM_CHUNK ((size_t)1 << 20)

typedef struct copy_s {
    const table_t *t;
    ol_pgcopy_t text;
    size_t rows;
    PGconn *stream;
    ol_err_t err; /* of the streaming */
    char *errstr;
    size_t errstr_size;
} copy_t;

static void copy_more(copy_t *c) {
    c->rows++;
    if (c->stream && !c->err && c->text.len >= STREAM_CHUNK)
        c->err = ol_pgcopy_send(c->stream, &c->text, c->errstr, c->errstr_size);
}

static void copy_row_fn(void *opaque, const char *key, size_t key_len, void *value) {
    (void)key;
    (void)key_len;
    copy_t *c = opaque;
    const row_t *r = value;
    if (!r->dirty || c->err)
        return;
    ol_pgcopy_row(&c->text, r->v, c->t->ncols);
    copy_more(c);
}

static void copy_lines_fn(void *opaque, const char *key, size_t key_len, void *value) {
    (void)key;
    (void)key_len;
    copy_t *c = opaque;
    const row_t *r = value;
    if (!r->lines_dirty || !r->lines || c->err)
        return;
    ol_pgcopy_append(&c->text, r->lines, strlen(r->lines));
    copy_more(c);
}

static void keys_dirty_lines_fn(void *opaque, const char *key, size_t key_len, void *value) {
    const row_t *r = value;
    if (r->lines_dirty && r->exists)
        keys_put(opaque, key, key_len);
}

static void collect_refund_orders_fn(void *opaque, const char *key, size_t key_len, void *value) {
    (void)key;
    (void)key_len;
    row_t *r = value;
    if (r->dirty && r->v[R_ORDER])
        ol_map_put(opaque, r->v[R_ORDER], strlen(r->v[R_ORDER]), r);
    /* a refund a newer AfterSaleSynced moved: its former order loses it */
    if (r->dirty && r->stored_order)
        ol_map_put(opaque, r->stored_order, strlen(r->stored_order), r);
}

static void collect_created_orders_fn(void *opaque, const char *key, size_t key_len, void *value) {
    const row_t *r = value;
    if (r->dirty && !r->exists)
        ol_map_put(opaque, key, key_len, value);
}

static ol_err_t copy_in(apply_t *a, const char *target, const char *cols, const copy_t *c) {
    return ol_pgcopy_in(a->conn, target, cols, &c->text, a->errstr, a->errstr_size);
}

static char *col_list(ol_arena_t *arena, const table_t *t, const char *prefix) {
    size_t cap = 64 * (size_t)t->ncols, len = 0;
    char *s = ol_arena_alloc(arena, cap);
    for (int i = 0; i < t->ncols; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s%s", i ? ", " : "", prefix, t->cols[i]);
    return s;
}

static void copy_split_fn(void *opaque, const char *key, size_t key_len, void *value) {
    copy_t *c = opaque; /* [0] rows to create, [1] rows to update */
    copy_row_fn(&c[((row_t *)value)->exists ? 1 : 0], key, key_len, value);
}

/* The changed rows: the new ones COPYed straight into the table; the
 * others COPYed into a staging table, then one UPDATE. */
static ol_err_t write_rows(apply_t *a, const table_t *t, ol_map_t *map) {
    copy_t c[2] = {{t, {a->arena, NULL, 0, 0}, 0, NULL, OL_ERR_OK, NULL, 0},
                   {t, {a->arena, NULL, 0, 0}, 0, NULL, OL_ERR_OK, NULL, 0}};
    ol_map_foreach(map, copy_split_fn, c);
    const char *cols = col_list(a->arena, t, "");
    char *target = ol_arena_sprintf(a->arena, "%s.%s", a->schema, t->name);
    ol_err_t err;
    if (c[0].rows && (err = copy_in(a, target, cols, &c[0]))) {
        /* the batch's rows were read under the lock of its partitions'
         * offsets, so only a writer outside the group can have created one
         * since: read them again */
        return err == OL_ERR_ALREADY_APPLIED
                   ? ol_errf(a->errstr, a->errstr_size, OL_ERR_TRANSIENT,
                             "%s: created meanwhile by another writer (%s)", target, a->errstr)
                   : err;
    }
    if (!c[1].rows)
        return OL_ERR_OK;
    char *stage = ol_arena_sprintf(a->arena, "ol_stage_%s", t->name);
    char *sql =
        ol_arena_sprintf(a->arena, "create temp table if not exists %s (like %s) on commit delete rows", stage, target);
    if ((err = ol_pg_exec_ok(a->conn, sql, a->errstr, a->errstr_size)) || (err = copy_in(a, stage, cols, &c[1])))
        return err;
    size_t cap = 128 * (size_t)t->ncols, len = 0;
    char *set = ol_arena_alloc(a->arena, cap);
    for (int i = 1; i < t->ncols; i++)
        len += (size_t)snprintf(set + len, cap - len, "%s%s = s.%s", i > 1 ? ", " : "", t->cols[i], t->cols[i]);
    sql = ol_arena_sprintf(a->arena, "update %s t set %s from %s s where t.%s = s.%s", target, set, stage, t->cols[0],
                           t->cols[0]);
    return ol_pg_exec_ok(a->conn, sql, a->errstr, a->errstr_size);
}

static ol_err_t write_lines(apply_t *a) {
    copy_t c = {&t_orders, {a->arena, NULL, 0, 0}, 0, NULL, OL_ERR_OK, NULL, 0};
    ol_map_foreach(a->orders, copy_lines_fn, &c);
    /* every order whose lines changed loses its old lines, even to none */
    keys_t k;
    keys_init(&k, a->arena);
    ol_map_foreach(a->orders, keys_dirty_lines_fn, &k);
    ol_err_t err = OL_ERR_OK;
    if (k.count) {
        char *sql =
            ol_arena_sprintf(a->arena, "delete from %s.order_lines where order_id = any($1::text[])", a->schema);
        const char *params[] = {keys_end(&k)};
        err = ol_pg_query(NULL, a->conn, sql, 1, params, a->errstr, a->errstr_size);
    }
    if (err || !c.rows)
        return err;
    char *target = ol_arena_sprintf(a->arena, "%s.order_lines", a->schema);
    return copy_in(a, target, "order_id, line_no, sku, quantity, unit_price", &c);
}

/* refunded_amount of every order a refund of this batch belongs to, and of
 * every order this batch created (its refunds may have come first): the sum
 * of its completed refunds. Rows whose value stays are not written again. */
static ol_err_t refresh_refunded(apply_t *a) {
    ol_map_t *ids = ol_map_new();
    ol_map_foreach(a->refunds, collect_refund_orders_fn, ids);
    ol_map_foreach(a->orders, collect_created_orders_fn, ids);
    ol_err_t err = OL_ERR_OK;
    if (ol_map_count(ids)) {
        char *sql = ol_arena_sprintf(a->arena,
                                     "update %s.orders o set refunded_amount = x.s from (select k.id, "
                                     "coalesce(sum(r.amount) filter (where r.status = 'completed'), 0) as s from "
                                     "unnest($1::text[]) k(id) left join %s.refunds r on r.order_id = k.id group by "
                                     "k.id) x where o.order_id = x.id and o.refunded_amount <> x.s",
                                     a->schema, a->schema);
        const char *params[] = {keys_literal(a, ids)};
        err = ol_pg_query(NULL, a->conn, sql, 1, params, a->errstr, a->errstr_size);
    }
    ol_map_destroy(ids);
    return err;
}

static const char *const project_topics[] = {"orders", "after-sales", "skus", "sale-events", "blacklist", NULL};

typedef void (*apply_fn)(apply_t *a, const op_t *op);

/* Runs fn for op on the row of its key unless the row has seen the op's
 * position already (a replay); the row then remembers the position.
 * last_col is the row's last_offset column, last_partition just before it. */
static void apply_once(apply_t *a, const op_t *op, apply_fn fn, ol_map_t *map, const table_t *t, const char *key_field,
                       int last_col) {
    row_t *r = row_get(a, map, t, dstr(op, key_field));
    const char *part = r->v[last_col - 1], *off = r->v[last_col];
    if (part && off && strtol(part, NULL, 10) == op->partition && strtoll(off, NULL, 10) >= op->offset)
        return;
    bool was_dirty = r->dirty;
    r->dirty = false;
    fn(a, op);
    if (r->dirty) {
        set_int(a, r, last_col - 1, op->partition);
        set_int(a, r, last_col, op->offset);
    }
    r->dirty = r->dirty || was_dirty;
}

/* The payments already counted for the orders the batch pays. */
static ol_err_t load_payments(apply_t *a, const ol_map_t *paid) {
    if (!ol_map_count(paid))
        return OL_ERR_OK;
    char *sql = ol_arena_sprintf(a->arena,
                                 "select order_id, payment_id from %s.order_payments where order_id = "
                                 "any($1::text[])",
                                 a->schema);
    const char *params[] = {keys_literal(a, paid)};
    PGresult *res;
    ol_err_t err = ol_pg_query(&res, a->conn, sql, 1, params, a->errstr, a->errstr_size);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(res); i++) {
        char *pk = ol_arena_sprintf(a->arena, "%s\x1f%s", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
        ol_map_put(a->payments, pk, strlen(pk), a);
    }
    PQclear(res);
    return OL_ERR_OK;
}

static ol_err_t write_payments(apply_t *a) {
    if (!a->new_payments.len)
        return OL_ERR_OK;
    char *target = ol_arena_sprintf(a->arena, "%s.order_payments", a->schema);
    return ol_pgcopy_in(a->conn, target, "order_id, payment_id, amount, currency, paid_at", &a->new_payments, a->errstr,
                        a->errstr_size);
}

/* One worker's ops, in order, on the row images. */
static void apply_ops(apply_t *a, const fold_state_t *st) {
    for (size_t i = 0; i < st->n; i++) {
        const op_t *op = &st->ops[i];
        if (!strcmp(op->type->topic, "orders"))
            apply_once(a, op, apply_order, a->orders, &t_orders, "order_id", O_LAST_OFFSET);
        else if (!strcmp(op->type->topic, "after-sales"))
            apply_once(a, op, apply_refund, a->refunds, &t_refunds, "refund_id", R_LAST_OFFSET);
        else
            apply_once(a, op, apply_sku, a->skus, &t_skus, "sku", S_LAST_OFFSET);
    }
}

struct ol_project_bulk_s {
    ol_map_t *orders, *refunds, *skus, *payments;
    ol_arena_t *rows; /* the rows' images: freed at once when they are written */
    char *strings;    /* the rows' values, packed (no alignment) in chunks of rows */
    size_t strings_left;
    ol_arena_t *arena;         /* the payments' COPY text */
    ol_pgcopy_t payments_text; /* in arena */
    size_t max_rows;
    void *owner;
};

void ol_project_bulk_set_owner(ol_project_bulk_t *b, void *owner) {
    b->owner = owner;
}

void *ol_project_bulk_owner(const ol_project_bulk_t *b) {
    return b->owner;
}

static ol_arena_t *bulk_arena(ol_project_bulk_t *b) {
    return b->rows;
}

#define STRING_CHUNK ((size_t)64 * 1024)

static char *bulk_strdup(ol_project_bulk_t *b, const char *v, size_t n) {
    if (n >= STRING_CHUNK / 16)
        return ol_arena_strndup(b->rows, v, n);
    if (b->strings_left < n + 1) {
        b->strings = ol_arena_alloc(b->rows, STRING_CHUNK);
        b->strings_left = STRING_CHUNK;
    }
    char *p = b->strings;
    memcpy(p, v, n);
    p[n] = '\0';
    b->strings += n + 1;
    b->strings_left -= n + 1;
    return p;
}

bool ol_project_bulk_fills(const char *table) {
    static const char *const filled[] = {"orders", "order_lines", "order_payments", "refunds", "skus", NULL};
    for (const char *const *t = filled; *t; t++)
        if (!strcmp(*t, table))
            return true;
    return false;
}

ol_project_bulk_t *ol_project_bulk_new(size_t max_rows) {
    ol_project_bulk_t *b = ol_xcalloc(1, sizeof(*b));
    b->orders = ol_map_new();
    b->refunds = ol_map_new();
    b->skus = ol_map_new();
    b->payments = ol_map_new();
    b->rows = ol_arena_new(0);
    b->arena = ol_arena_new(0);
    b->payments_text.arena = b->arena;
    b->max_rows = max_rows;
    return b;
}

size_t ol_project_bulk_rows(const ol_project_bulk_t *b) {
    return ol_map_count(b->orders) + ol_map_count(b->refunds) + ol_map_count(b->skus);
}

size_t ol_project_bulk_bytes(const ol_project_bulk_t *b) {
    return ol_arena_used(b->rows) + ol_arena_used(b->arena);
}

void ol_project_bulk_reset(ol_project_bulk_t *b) {
    ol_map_clear(b->orders);
    ol_map_clear(b->refunds);
    ol_map_clear(b->skus);
    ol_map_clear(b->payments);
    ol_arena_reset(b->rows);
    b->strings = NULL;
    b->strings_left = 0;
    ol_arena_reset(b->arena);
    memset(&b->payments_text, 0, sizeof(b->payments_text));
    b->payments_text.arena = b->arena;
}

void ol_project_bulk_destroy(ol_project_bulk_t *b) {
    if (!b)
        return;
    ol_map_destroy(b->orders);
    ol_map_destroy(b->refunds);
    ol_map_destroy(b->skus);
    ol_map_destroy(b->payments);
    ol_arena_destroy(b->rows);
    ol_arena_destroy(b->arena);
    free(b);
}

/* ---- writing the bulk rows ------------------------------------------------ */

/* COPYs what fn makes of every row of map into schema.name. */
static ol_err_t stream_table(PGconn *conn, ol_arena_t *arena, const char *schema, const char *name, const char *cols,
                             const table_t *t, ol_map_t *map,
                             void (*fn)(void *opaque, const char *key, size_t key_len, void *value), char *errstr,
                             size_t errstr_size) {
    if (!ol_map_count(map))
        return OL_ERR_OK;
    ol_err_t err = ol_pgcopy_begin(conn, ol_arena_sprintf(arena, "%s.%s", schema, name), cols, errstr, errstr_size);
    if (err)
        return err;
    copy_t c = {t, {arena, NULL, 0, 0}, 0, conn, OL_ERR_OK, errstr, errstr_size};
    ol_map_foreach(map, fn, &c);
    if (!c.err)
        c.err = ol_pgcopy_send(conn, &c.text, errstr, errstr_size);
    return ol_pgcopy_end(conn, c.err, errstr, errstr_size);
}

/* The bulk rows in two parts that go at once, on two connections, each in
 * a transaction of its own. */
typedef struct bulk_part_s {
    ol_project_bulk_t *b;
    ol_err_t (*write)(struct bulk_part_s *p);
    PGconn *conn;
    const char *schema;
    ol_arena_t *arena;
    ol_err_t err;
    char errstr[1024];
} bulk_part_t;

/* orders, skus */
static ol_err_t bulk_part_orders(bulk_part_t *p) {
    ol_err_t err = stream_table(p->conn, p->arena, p->schema, "orders", col_list(p->arena, &t_orders, ""), &t_orders,
                                p->b->orders, copy_row_fn, p->errstr, sizeof(p->errstr));
    if (!err)
        err = stream_table(p->conn, p->arena, p->schema, "skus", col_list(p->arena, &t_skus, ""), &t_skus, p->b->skus,
                           copy_row_fn, p->errstr, sizeof(p->errstr));
    return err;
}

/* order_lines, order_payments, refunds */
static ol_err_t bulk_part_lines(bulk_part_t *p) {
    ol_err_t err =
        stream_table(p->conn, p->arena, p->schema, "order_lines", "order_id, line_no, sku, quantity, unit_price",
                     &t_orders, p->b->orders, copy_lines_fn, p->errstr, sizeof(p->errstr));
    if (!err && p->b->payments_text.len)
        err = ol_pgcopy_in(p->conn, ol_arena_sprintf(p->arena, "%s.order_payments", p->schema),
                           "order_id, payment_id, amount, currency, paid_at", &p->b->payments_text, p->errstr,
                           sizeof(p->errstr));
    if (!err)
        err = stream_table(p->conn, p->arena, p->schema, "refunds", col_list(p->arena, &t_refunds, ""), &t_refunds,
                           p->b->refunds, copy_row_fn, p->errstr, sizeof(p->errstr));
    return err;
}

static void *bulk_part_main(void *arg) {
    bulk_part_t *p = arg;
    p->err = ol_pg_exec_ok(p->conn, "begin", p->errstr, sizeof(p->errstr));
    if (!p->err)
        p->err = p->write(p);
    p->err = p->err ? p->err : ol_pg_exec_ok(p->conn, "commit", p->errstr, sizeof(p->errstr));
    if (p->err && PQstatus(p->conn) == CONNECTION_OK)
        ol_pg_exec_ok(p->conn, "rollback", NULL, 0);
    return NULL;
}

ol_err_t ol_project_bulk_flush(ol_project_bulk_t *b, PGconn *conn, PGconn *conn2, const char *schema, char *errstr,
                               size_t errstr_size) {
    bulk_part_t po = {b, bulk_part_orders, conn, schema, ol_arena_new(0), OL_ERR_OK, {0}};
    bulk_part_t pl = {b, bulk_part_lines, conn2 ? conn2 : conn, schema, ol_arena_new(0), OL_ERR_OK, {0}};
    pthread_t thread;
    bool threaded = conn2 && !pthread_create(&thread, NULL, bulk_part_main, &pl);
    bulk_part_main(&po);
    if (threaded)
        pthread_join(thread, NULL);
    else if (!po.err)
        bulk_part_main(&pl);
    ol_err_t err = po.err ? po.err : pl.err;
    if (err)
        ol_errf(errstr, errstr_size, err, "%s", po.err ? po.errstr : pl.errstr);
    ol_arena_destroy(po.arena);
    ol_arena_destroy(pl.arena);
    ol_project_bulk_reset(b);
    return err;
}

ol_err_t ol_project_bulk_finish(PGconn *conn, const char *schema, bool merge_refunds, char *errstr,
                                size_t errstr_size) {
    char sql[2048];
    ol_err_t err;
    if (merge_refunds) {
        /* a refund whose order moved to another partition (a newer
         * AfterSaleSynced naming another order) was folded once per pass
         * that met it: the row with the newest snapshot, else the latest
         * update, stands for it */
        snprintf(
            sql, sizeof(sql),
            "delete from %s.refunds d using (select ctid, row_number() over (partition by refund_id order by "
            "version desc nulls last, updated_at desc, last_partition desc, last_offset desc) as n from %s.refunds "
            "where refund_id in (select refund_id from %s.refunds group by refund_id having count(*) > 1)) x "
            "where d.ctid = x.ctid and x.n > 1",
            schema, schema, schema);
        PGresult *res;
        if ((err = ol_pg_query(&res, conn, sql, 0, NULL, errstr, errstr_size)))
            return err;
        const char *n = PQcmdTuples(res);
        if (*n && strcmp(n, "0"))
            ol_log_warn("bulk load: %s refund rows folded in more than one pass (their order moved between "
                        "partitions) merged into the newest",
                        n);
        PQclear(res);
    }
    snprintf(sql, sizeof(sql),
             "update %s.orders o set refunded_amount = x.s from (select order_id, sum(amount) as s from %s.refunds "
             "where status = 'completed' group by order_id) x where o.order_id = x.order_id and o.refunded_amount <> "
             "x.s",
             schema, schema);
    return ol_pg_exec_ok(conn, sql, errstr, errstr_size);
}

/* Bulk mode: every batch folds into the rows in memory; past max_rows the
 * pass stops (the rebuild splits it into smaller ones). */
static ol_err_t bulk_check(ol_project_bulk_t *b, char *errstr, size_t errstr_size) {
    size_t rows = ol_project_bulk_rows(b);
    if (b->max_rows && rows > b->max_rows)
        return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE,
                       "bulk load: %zu rows in memory, more than the limit of %zu (rebuild.bulk.rows)", rows,
                       b->max_rows);
    return OL_ERR_OK;
}

/* The sale projections of the batch, in its transaction. */
static ol_err_t apply_sale(ol_rt_t *rt, PGconn *conn, void **states, int nstates, char *errstr, size_t errstr_size) {
    ol_sale_project_fold_t **folds = ol_xcalloc((size_t)nstates + 1, sizeof(*folds));
    for (int s = 0; s < nstates; s++)
        folds[s] = ((fold_state_t *)states[s])->sale;
    ol_err_t err = ol_sale_project_apply(rt, conn, folds, nstates, errstr, errstr_size);
    free(folds);
    return err;
}

static ol_err_t apply(ol_rt_t *rt, PGconn *conn, void **states, int nstates, char *errstr, size_t errstr_size) {
    apply_t a = {rt,           conn,         ol_arena_new(0),    ol_rt_schema(rt), ol_map_new(), ol_map_new(),
                 ol_map_new(), ol_map_new(), {NULL, NULL, 0, 0}, errstr,           errstr_size};
    a.new_payments.arena = a.arena;
    ol_project_bulk_t *bulk = ol_rt_opaque(rt);
    if (bulk) {
        /* bulk: the shadow starts empty and nothing else writes it, so the
         * rows stay in memory across batches and are written once, at the
         * end of the pass (ol_project_bulk_flush); re-running a batch is
         * harmless as every row skips what it has seen (last partition and
         * offset) */
        ol_map_destroy(a.orders);
        ol_map_destroy(a.refunds);
        ol_map_destroy(a.skus);
        ol_map_destroy(a.payments);
        a.orders = bulk->orders;
        a.refunds = bulk->refunds;
        a.skus = bulk->skus;
        a.payments = bulk->payments;
        a.new_payments = bulk->payments_text;
        a.bulk = bulk;
        for (int s = 0; s < nstates; s++)
            apply_ops(&a, states[s]);
        bulk->payments_text = a.new_payments;
        ol_arena_destroy(a.arena);
        ol_err_t err = bulk_check(bulk, errstr, errstr_size);
        /* the sale tables take the normal path (the rebuild gives them
         * their keys before the load) */
        return err ? err : apply_sale(rt, conn, states, nstates, errstr, errstr_size);
    }
    /* every statement below reads or writes rows by key: an index path is
     * always right, but the planner picks sequential scans for thousands of
     * keys while the tables grow faster than autovacuum analyzes them */
    ol_err_t err = ol_pg_exec_ok(conn, "set local enable_seqscan = off", errstr, errstr_size);
    if (err)
        goto out;
    /* every row the batch touches, loaded at once */
    ol_map_t *paid = ol_map_new();
    for (int s = 0; s < nstates; s++) {
        const fold_state_t *st = states[s];
        for (size_t i = 0; i < st->n; i++) {
            const op_t *op = &st->ops[i];
            if (!strcmp(op->type->topic, "orders")) {
                const char *id = dstr(op, "order_id");
                row_get(&a, a.orders, &t_orders, id);
                if (!strcmp(op->type->name, "OrderPaid"))
                    ol_map_put(paid, id, strlen(id), &a);
            } else if (!strcmp(op->type->topic, "after-sales"))
                row_get(&a, a.refunds, &t_refunds, dstr(op, "refund_id"));
            else
                row_get(&a, a.skus, &t_skus, dstr(op, "sku"));
        }
    }
    err = load_rows(&a, &t_orders, a.orders);
    if (!err)
        err = load_rows(&a, &t_refunds, a.refunds);
    if (!err)
        err = load_rows(&a, &t_skus, a.skus);
    if (!err)
        err = load_payments(&a, paid);
    ol_map_destroy(paid);
    if (err)
        goto out;
    /* the events, in log order per key, on the row images */
    for (int s = 0; s < nstates; s++)
        apply_ops(&a, states[s]);
    if ((err = write_rows(&a, &t_orders, a.orders)) || (err = write_lines(&a)) || (err = write_payments(&a)) ||
        (err = write_rows(&a, &t_refunds, a.refunds)) || (err = write_rows(&a, &t_skus, a.skus)) ||
        (err = refresh_refunded(&a)) || (err = apply_sale(rt, conn, states, nstates, errstr, errstr_size)))
        goto out;
out:
    ol_map_destroy(a.orders);
    ol_map_destroy(a.refunds);
    ol_map_destroy(a.skus);
    ol_map_destroy(a.payments);
    ol_arena_destroy(a.arena);
    return err;
}

static ol_err_t fold_checked(void *state, const ol_rt_record_t *rec, ol_arena_t *arena, char *errstr,
                             size_t errstr_size) {
    const char *topic = project_topics[rec->topic];
    if (strcmp(rec->env->type->topic, topic))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "%s does not belong on the %s topic (it goes to %s)",
                       rec->env->type->name, topic, rec->env->type->topic);
    if (ol_sale_project_takes(topic))
        return ol_sale_project_fold(((fold_state_t *)state)->sale, rec, arena, errstr, errstr_size);
    return fold(state, rec, arena, errstr, errstr_size);
}

static const ol_rt_role_t project_role = {
    "project", NULL, project_topics, NULL, state_new, state_reset, state_destroy, fold_checked, apply, true,
};

const ol_rt_role_t *ol_project_role(void) {
    return &project_role;
}

/* /healthz and /readyz of project: the runtime's. */
typedef struct project_obs_s {
    ol_rt_t *rt;
    int64_t stall_ms;
} project_obs_t;

static bool project_live(void *opaque, json_t *checks) {
    project_obs_t *o = opaque;
    return ol_rt_check_live(o->rt, checks, o->stall_ms);
}

static bool project_ready(void *opaque, json_t *checks) {
    return ol_rt_check_ready(((project_obs_t *)opaque)->rt, checks);
}

static int project_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[1024];
    bool until_end = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--until-end"))
            until_end = true;
        else
            return ol_cli_usage_error(&ol_cmd_project, "unknown option \"%s\"", argv[i]);
    }
    ol_rt_t *rt = ol_rt_new(conf, &project_role, errstr, sizeof(errstr));
    if (!rt) {
        fprintf(stderr, "orderlog project: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    ol_rt_handle_signals(rt);
    project_obs_t obs = {rt, ol_conf_int(conf, "health.stall.ms")};
    ol_metrics_t *reg = ol_metrics_new();
    ol_metrics_add_process(reg);
    ol_rt_observe(rt, reg);
    ol_http_t *http = NULL;
    ol_http_conf_t hc = {ol_conf_str(conf, "http.listen"), reg, project_live, project_ready, &obs};
    if (ol_http_serve(&hc, &http, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog project: %s\n", errstr);
        ol_rt_destroy(rt);
        ol_metrics_destroy(reg);
        return OL_EXIT_USAGE;
    }
    int64_t t0 = ol_time_mono_us();
    ol_err_t err = ol_rt_run(rt, until_end, errstr, sizeof(errstr));
    ol_rt_stats_t st;
    ol_rt_stats(rt, &st);
    double secs = (double)(ol_time_mono_us() - t0) / 1e6;
    ol_http_stop(http);
    ol_rt_destroy(rt);
    ol_metrics_destroy(reg);
    printf("projected %lld events in %lld batches (%lld to the dlq, %lld retries) in %.2f s, %.0f events/s "
           "(applying %.2f s, folding %.2f s, applier waiting for records %.2f s)\n",
           (long long)st.events, (long long)st.batches, (long long)st.rejected, (long long)st.retries, secs,
           secs > 0 ? (double)st.events / secs : 0.0, (double)st.apply_us / 1e6, (double)st.fold_us / 1e6,
           (double)st.idle_us / 1e6);
    if (err) {
        fprintf(stderr, "orderlog project: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    return OL_EXIT_OK;
}

const ol_cmd_t ol_cmd_project = {
    "project", project_run, "project orders, after-sales, skus and the sale into PostgreSQL (exactly-once)",
    "usage: orderlog project [--until-end]\n"
    "  Consumes the orders, after-sales, skus, sale-events and blacklist topics in the consumer group\n"
    "  <topic.prefix>project (orderlog.project; consumer.group.id sets another) and keeps the tables of\n"
    "  projection.schema up to date: orders, order_lines, order_payments, refunds, skus, and the sale's\n"
    "  buy_decisions, holds, inventory, user_sku_totals, policies, checkout_rejections and blacklist.\n"
    "  Runs until SIGTERM or SIGINT, which finish the batch in flight. With http.listen set, serves\n"
    "  /metrics, /healthz and /readyz there.\n"
    "  --until-end   stop once every assigned partition is consumed to its end\n"};
