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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "common/base/http.h"
#include "common/base/log.h"
#include "common/base/map.h"
#include "common/base/pg.h"
#include "common/base/pgcopy.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/codec.h"
#include "consumers/project.h"
#include "consumers/project_tables.h"
#include "consumers/rowset.h"
#include "consumers/runtime.h"
#include "consumers/sale_project.h"
#include "ops/admin/commands.h"

/* ---- tables ------------------------------------------------------------- */

static const char *const order_cols[] = {ORDER_COLS(OL_ROWSET_COL_NAME)};
static const char *const refund_cols[] = {REFUND_COLS(OL_ROWSET_COL_NAME)};
static const char *const sku_cols[] = {SKU_COLS(OL_ROWSET_COL_NAME)};

const ol_rowset_table_t ol_project__orders = {"orders",
                                              order_cols,
                                              O_NCOLS,
                                              1,
                                              O_LAST_PARTITION,
                                              O_LAST_OFFSET,
                                              OL_ROWSET_INSERT_UPDATE,
                                              sizeof(ol_project__order_row_t)};
const ol_rowset_table_t ol_project__refunds = {"refunds",
                                               refund_cols,
                                               R_NCOLS,
                                               1,
                                               R_LAST_PARTITION,
                                               R_LAST_OFFSET,
                                               OL_ROWSET_INSERT_UPDATE,
                                               sizeof(ol_project__refund_row_t)};
const ol_rowset_table_t ol_project__skus = {
    "skus", sku_cols, S_NCOLS, 1, S_LAST_PARTITION, S_LAST_OFFSET, OL_ROWSET_INSERT_UPDATE, 0};

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

/* What the rules work on: the row images of a batch (or of a bulk pass). */
typedef struct apply_s {
    ol_rowset_mem_t *mem; /* of the rows */
    ol_rowset_t *orders, *refunds, *skus;
    ol_map_t *payments;       /* "<order_id>\x1f<payment_id>" of every payment counted */
    ol_pgcopy_t new_payments; /* COPY rows for order_payments */
    ol_arena_t *arena;        /* the batch's */
    /* an op that can never apply: ol_rt_reject, or a test's */
    void (*reject)(void *opaque, size_t index, const char *reason);
    void *reject_opaque;
} apply_t;

static void set_str(apply_t *a, ol_row_t *r, int col, const char *v) {
    ol_row_set_str(a->mem, r, col, v);
}

static void set_int(apply_t *a, ol_row_t *r, int col, int64_t v) {
    ol_row_set_int(a->mem, r, col, v);
}

static void set_dtime(apply_t *a, ol_row_t *r, int col, const op_t *op, const char *field) {
    ol_row_set_time(a->mem, r, col, dint(op, field));
}

static int64_t get_int(const ol_row_t *r, int col) {
    return ol_row_int(r, col);
}

/* A row "is" when it existed or an op of this batch created it. */
static bool row_is(const ol_row_t *r) {
    return r->present;
}

/* A snapshot applies when there is no row, or the row's version is lower. */
static bool newer(const ol_row_t *r, int col, int64_t version) {
    return !r->v[col] || strtoll(r->v[col], NULL, 10) < version;
}

/* The order's lines, rendered as order_lines COPY text now: the event they
 * come from does not outlive the batch. */
static void set_lines(apply_t *a, ol_row_t *row, const ol_json_t *lines) {
    ol_project__order_row_t *r = (ol_project__order_row_t *)row;
    ol_pgcopy_t t = {a->arena, NULL, 0, 0};
    for (size_t i = 0; lines && i < lines->len; i++) {
        const ol_json_t *l = &lines->u.items[i];
        char no[24], qty[24], price[24];
        snprintf(no, sizeof(no), "%zu", i + 1);
        snprintf(qty, sizeof(qty), "%lld", (long long)dint_of(l, "quantity"));
        snprintf(price, sizeof(price), "%lld", (long long)dint_of(l, "unit_price"));
        char *vals[5] = {row->v[0], no, (char *)dstr_of(l, "sku"), qty, price};
        ol_pgcopy_row(&t, vals, 5);
    }
    if (a->mem->packed && t.len && r->lines && strlen(r->lines) >= t.len)
        memcpy(r->lines, t.buf, t.len + 1);
    else
        r->lines = t.len ? ol_rowset_strdup(a->mem, t.buf, t.len) : NULL;
    r->lines_dirty = true;
    row->dirty = row->present = true;
}

/* The op's aggregate does not exist: it can never apply. */
static void reject_missing(apply_t *a, const op_t *op, const char *what, const char *id) {
    char reason[512];
    snprintf(reason, sizeof(reason), "%s \"%.200s\" does not exist", what, id);
    a->reject(a->reject_opaque, op->index, reason);
}

/* ---- the rules ---------------------------------------------------------- */

/* A column set by an event: from a field of its data, a string (S), an
 * integer (I) or a time (T); or to a constant: the string `field` (=, NULL
 * for none) or 0 (0). A list of them ends with kind 0. */
typedef struct copy_s {
    int col;
    char kind;
    const char *field;
} copy_t;

/* Sets the columns of r as cols say, in their order. */
static void copy_cols(apply_t *a, ol_row_t *r, const op_t *op, const copy_t *cols) {
    for (const copy_t *c = cols; c->kind; c++) {
        if (c->kind == 'S')
            set_str(a, r, c->col, dstr(op, c->field));
        else if (c->kind == 'I')
            set_int(a, r, c->col, dint(op, c->field));
        else if (c->kind == 'T')
            set_dtime(a, r, c->col, op, c->field);
        else if (c->kind == '=')
            set_str(a, r, c->col, c->field);
        else
            set_int(a, r, c->col, 0);
    }
}

/* A snapshot (OrderSynced, AfterSaleSynced, SkuSynced): cols set when its
 * version is above the row's (version_col); whether they were. */
static bool snapshot(apply_t *a, ol_row_t *r, const op_t *op, int version_col, const copy_t *cols) {
    if (!newer(r, version_col, dint(op, "version")))
        return false;
    copy_cols(a, r, op, cols);
    return true;
}

/* Whether the row of an op that changes an aggregate exists; the op is
 * rejected when not (what: the aggregate, id: its key). */
static bool exists(apply_t *a, const ol_row_t *r, const op_t *op, const char *what, const char *id) {
    if (row_is(r))
        return true;
    reject_missing(a, op, what, id);
    return false;
}

static const copy_t order_external[] = {{O_SOURCE, '=', "external"}, {O_PAID, '0', NULL}, {O_REFUNDED, '0', NULL}, {0}};
static const copy_t order_synced[] = {
    {O_USER, 'S', "user_id"},    {O_PLATFORM, 'S', "platform"},     {O_SHOP, 'S', "shop_id"},
    {O_STATUS, 'S', "status"},   {O_TOTAL, 'I', "total_amount"},    {O_CURRENCY, 'S', "currency"},
    {O_VERSION, 'I', "version"}, {O_UPDATED_AT, 'T', "updated_at"}, {0}};
static const copy_t order_placed[] = {{O_USER, 'S', "user_id"},         {O_SOURCE, 'S', "source"},
                                      {O_STATUS, '=', "placed"},        {O_TOTAL, 'I', "total_amount"},
                                      {O_CURRENCY, 'S', "currency"},    {O_PAID, '0', NULL},
                                      {O_REFUNDED, '0', NULL},          {O_PLACED_AT, 'T', "placed_at"},
                                      {O_UPDATED_AT, 'T', "placed_at"}, {0}};
static const copy_t order_cancelled[] = {{O_STATUS, '=', "cancelled"},
                                         {O_CANCEL_REASON, 'S', "reason"},
                                         {O_CANCELLED_AT, 'T', "cancelled_at"},
                                         {O_UPDATED_AT, 'T', "cancelled_at"},
                                         {0}};
static const copy_t order_shipped[] = {{O_STATUS, '=', "shipped"},        {O_CARRIER, 'S', "carrier"},
                                       {O_TRACKING, 'S', "tracking_no"},  {O_SHIPPED_AT, 'T', "shipped_at"},
                                       {O_UPDATED_AT, 'T', "shipped_at"}, {0}};

static void apply_order(apply_t *a, const op_t *op) {
    const char *name = op->type->name, *id = dstr(op, "order_id");
    ol_row_t *r = ol_rowset_get(a->orders, id, NULL);
    if (!strcmp(name, "OrderSynced")) {
        bool existed = row_is(r);
        if (snapshot(a, r, op, O_VERSION, order_synced)) {
            if (!existed)
                copy_cols(a, r, op, order_external);
            set_lines(a, r, ol_json_get(op->data, "lines"));
        }
        return;
    }
    if (!strcmp(name, "OrderPlaced")) {
        if (row_is(r))
            return; /* placed once */
        copy_cols(a, r, op, order_placed);
        set_lines(a, r, ol_json_get(op->data, "lines"));
        return;
    }
    if (!exists(a, r, op, "order", id))
        return;
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
        copy_cols(a, r, op, order_cancelled);
    } else if (!strcmp(name, "OrderShipped")) {
        copy_cols(a, r, op, order_shipped);
    }
}

static const copy_t refund_synced[] = {{R_ORDER, 'S', "order_id"},        {R_PLATFORM, 'S', "platform"},
                                       {R_STATUS, 'S', "status"},         {R_AMOUNT, 'I', "amount"},
                                       {R_CURRENCY, 'S', "currency"},     {R_VERSION, 'I', "version"},
                                       {R_UPDATED_AT, 'T', "updated_at"}, {0}};
static const copy_t refund_requested[] = {{R_ORDER, 'S', "order_id"},
                                          {R_USER, 'S', "user_id"},
                                          {R_STATUS, '=', "requested"},
                                          {R_AMOUNT, 'I', "amount"},
                                          {R_CURRENCY, 'S', "currency"},
                                          {R_REASON, 'S', "reason"},
                                          {R_REQUESTED_AT, 'T', "requested_at"},
                                          {R_UPDATED_AT, 'T', "requested_at"},
                                          {0}};
static const copy_t refund_approved[] = {
    {R_STATUS, '=', "approved"}, {R_APPROVED_AT, 'T', "approved_at"}, {R_UPDATED_AT, 'T', "approved_at"}, {0}};
static const copy_t refund_rejected[] = {{R_STATUS, '=', "rejected"},
                                         {R_REJECT_REASON, 'S', "reason"},
                                         {R_REJECTED_AT, 'T', "rejected_at"},
                                         {R_UPDATED_AT, 'T', "rejected_at"},
                                         {0}};
static const copy_t refund_completed[] = {{R_STATUS, '=', "completed"},
                                          {R_AMOUNT, 'I', "amount"},
                                          {R_COMPLETED_AT, 'T', "completed_at"},
                                          {R_UPDATED_AT, 'T', "completed_at"},
                                          {0}};

static void apply_refund(apply_t *a, const op_t *op) {
    const char *name = op->type->name, *id = dstr(op, "refund_id");
    ol_row_t *r = ol_rowset_get(a->refunds, id, NULL);
    if (!strcmp(name, "AfterSaleSynced")) {
        if (snapshot(a, r, op, R_VERSION, refund_synced) && !strcmp(dstr(op, "status"), "completed") &&
            !r->v[R_COMPLETED_AT])
            set_dtime(a, r, R_COMPLETED_AT, op, "updated_at");
        return;
    }
    if (!strcmp(name, "RefundRequested")) {
        if (row_is(r))
            return;
        copy_cols(a, r, op, refund_requested);
        return;
    }
    if (!exists(a, r, op, "refund", id))
        return;
    if (!strcmp(name, "RefundApproved"))
        copy_cols(a, r, op, refund_approved);
    else if (!strcmp(name, "RefundRejected"))
        copy_cols(a, r, op, refund_rejected);
    else if (!strcmp(name, "RefundCompleted"))
        copy_cols(a, r, op, refund_completed);
}

static const copy_t sku_synced[] = {
    {S_PLATFORM, 'S', "platform"}, {S_TITLE, 'S', "title"},           {S_PRICE, 'I', "price"},
    {S_CURRENCY, 'S', "currency"}, {S_STOCK, 'I', "stock"},           {S_VERSION, 'I', "version"},
    {S_REMOVED_AT, '=', NULL},     {S_UPDATED_AT, 'T', "updated_at"}, {0}};
static const copy_t sku_removed[] = {{S_REMOVED_AT, 'T', "removed_at"}, {S_UPDATED_AT, 'T', "removed_at"}, {0}};

static void apply_sku(apply_t *a, const op_t *op) {
    const char *name = op->type->name, *id = dstr(op, "sku");
    if (strcmp(name, "SkuSynced") && strcmp(name, "SkuRemoved") && strcmp(name, "StockAdjusted"))
        return; /* PurchasePolicySet is the decider's */
    ol_row_t *r = ol_rowset_get(a->skus, id, NULL);
    if (!strcmp(name, "SkuSynced")) {
        snapshot(a, r, op, S_VERSION, sku_synced);
        return;
    }
    if (!exists(a, r, op, "sku (no SkuSynced yet)", id))
        return;
    if (!strcmp(name, "SkuRemoved")) {
        copy_cols(a, r, op, sku_removed);
    } else {
        int64_t stock = get_int(r, S_STOCK) + dint(op, "delta");
        set_int(a, r, S_STOCK, stock < 0 ? 0 : stock);
        set_dtime(a, r, S_UPDATED_AT, op, "adjusted_at");
    }
}

typedef void (*apply_fn)(apply_t *a, const op_t *op);

/* Runs fn for op on the row of its key unless the row has seen the op's
 * position already (a replay); the row then remembers the position. */
static void apply_unless_replayed(apply_t *a, const op_t *op, apply_fn fn, ol_rowset_t *s, const char *key_field) {
    ol_row_t *r = ol_rowset_get(s, dstr(op, key_field), NULL);
    if (ol_row_seen(s->t, r, op->partition, op->offset))
        return;
    bool was_dirty = r->dirty;
    r->dirty = false;
    fn(a, op);
    if (r->dirty)
        ol_row_took(s, r, op->partition, op->offset);
    r->dirty = r->dirty || was_dirty;
}

/* One worker's ops, in order, on the row images. */
static void apply_ops(apply_t *a, const fold_state_t *st) {
    for (size_t i = 0; i < st->n; i++) {
        const op_t *op = &st->ops[i];
        if (!strcmp(op->type->topic, "orders"))
            apply_unless_replayed(a, op, apply_order, a->orders, "order_id");
        else if (!strcmp(op->type->topic, "after-sales"))
            apply_unless_replayed(a, op, apply_refund, a->refunds, "refund_id");
        else
            apply_unless_replayed(a, op, apply_sku, a->skus, "sku");
    }
}

/* ---- a batch: loading and writing rows ------------------------------------ */

/* A batch's rows and where they go. */
typedef struct batch_s {
    apply_t a;
    ol_rowset_mem_t mem;
    ol_rowset_t orders, refunds, skus;
    PGconn *conn;
    const char *schema;
    char *errstr;
    size_t errstr_size;
} batch_t;

static void stored_order_fn(void *opaque, ol_row_t *r) {
    (void)opaque;
    if (r->in_db)
        ((ol_project__refund_row_t *)r)->stored_order = r->v[R_ORDER];
}

/* The payments already counted for the orders the batch pays. */
static ol_err_t load_payments(batch_t *b, const ol_map_t *paid) {
    if (!ol_map_count(paid))
        return OL_ERR_OK;
    char *sql = ol_arena_sprintf(b->a.arena,
                                 "select order_id, payment_id from %s.order_payments where order_id = "
                                 "any($1::text[])",
                                 b->schema);
    const char *params[] = {ol_rowset_keys_of_map(paid, b->a.arena)};
    PGresult *res;
    ol_err_t err = ol_pg_query(&res, b->conn, sql, 1, params, b->errstr, b->errstr_size);
    if (err)
        return err;
    for (int i = 0; i < PQntuples(res); i++) {
        char *pk = ol_arena_sprintf(b->a.arena, "%s\x1f%s", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
        ol_map_put(b->a.payments, pk, strlen(pk), b);
    }
    PQclear(res);
    return OL_ERR_OK;
}

/* Every row the batch touches, loaded at once. */
static ol_err_t load_batch(batch_t *b, void **states, int nstates) {
    apply_t *a = &b->a;
    ol_map_t *paid = ol_map_new();
    for (int s = 0; s < nstates; s++) {
        const fold_state_t *st = states[s];
        for (size_t i = 0; i < st->n; i++) {
            const op_t *op = &st->ops[i];
            if (!strcmp(op->type->topic, "orders")) {
                const char *id = dstr(op, "order_id");
                ol_rowset_get(a->orders, id, NULL);
                if (!strcmp(op->type->name, "OrderPaid"))
                    ol_map_put(paid, id, strlen(id), a);
            } else if (!strcmp(op->type->topic, "after-sales"))
                ol_rowset_get(a->refunds, dstr(op, "refund_id"), NULL);
            else
                ol_rowset_get(a->skus, dstr(op, "sku"), NULL);
        }
    }
    ol_err_t err;
    ol_rowset_t *sets[] = {a->orders, a->refunds, a->skus};
    for (size_t i = 0; i < 3; i++)
        if ((err = ol_rowset_load(sets[i], b->conn, b->schema, a->arena, b->errstr, b->errstr_size)))
            goto out;
    ol_rowset_foreach(a->refunds, stored_order_fn, NULL);
    err = load_payments(b, paid);
out:
    ol_map_destroy(paid);
    return err;
}

bool ol_project__emit_lines(const ol_row_t *row, ol_pgcopy_t *text) {
    const ol_project__order_row_t *r = (const ol_project__order_row_t *)row;
    if (!r->lines_dirty || !r->lines)
        return false;
    ol_pgcopy_append(text, r->lines, strlen(r->lines));
    return true;
}

static void keys_dirty_lines_fn(void *opaque, ol_row_t *r) {
    if (((ol_project__order_row_t *)r)->lines_dirty && r->in_db)
        ol_rowset_keys_put(opaque, r->v[0], strlen(r->v[0]));
}

static ol_err_t write_lines(batch_t *b) {
    ol_pgcopy_t text = {b->a.arena, NULL, 0, 0};
    size_t rows = ol_rowset_text(b->a.orders, ol_project__emit_lines, &text);
    /* every order whose lines changed loses its old lines, even to none */
    ol_rowset_keys_t k;
    ol_rowset_keys_init(&k, b->a.arena);
    ol_rowset_foreach(b->a.orders, keys_dirty_lines_fn, &k);
    ol_err_t err = OL_ERR_OK;
    if (k.count) {
        char *sql =
            ol_arena_sprintf(b->a.arena, "delete from %s.order_lines where order_id = any($1::text[])", b->schema);
        const char *params[] = {ol_rowset_keys_end(&k)};
        err = ol_pg_query(NULL, b->conn, sql, 1, params, b->errstr, b->errstr_size);
    }
    if (err || !rows)
        return err;
    char *target = ol_arena_sprintf(b->a.arena, "%s.order_lines", b->schema);
    return ol_pgcopy_in(b->conn, target, OL_PROJECT__LINE_COLS, &text, b->errstr, b->errstr_size);
}

static ol_err_t write_payments(batch_t *b) {
    if (!b->a.new_payments.len)
        return OL_ERR_OK;
    char *target = ol_arena_sprintf(b->a.arena, "%s.order_payments", b->schema);
    return ol_pgcopy_in(b->conn, target, OL_PROJECT__PAYMENT_COLS, &b->a.new_payments, b->errstr, b->errstr_size);
}

static void collect_refund_orders_fn(void *opaque, ol_row_t *r) {
    const char *stored = ((ol_project__refund_row_t *)r)->stored_order;
    if (r->dirty && r->v[R_ORDER])
        ol_map_put(opaque, r->v[R_ORDER], strlen(r->v[R_ORDER]), r);
    /* a refund a newer AfterSaleSynced moved: its former order loses it */
    if (r->dirty && stored)
        ol_map_put(opaque, stored, strlen(stored), r);
}

static void collect_created_orders_fn(void *opaque, ol_row_t *r) {
    if (r->dirty && !r->in_db)
        ol_map_put(opaque, r->v[0], strlen(r->v[0]), r);
}

/* refunded_amount of every order a refund of this batch belongs to, and of
 * every order this batch created (its refunds may have come first): the sum
 * of its completed refunds. Rows whose value stays are not written again. */
static ol_err_t refresh_refunded(batch_t *b) {
    ol_map_t *ids = ol_map_new();
    ol_rowset_foreach(b->a.refunds, collect_refund_orders_fn, ids);
    ol_rowset_foreach(b->a.orders, collect_created_orders_fn, ids);
    ol_err_t err = OL_ERR_OK;
    if (ol_map_count(ids)) {
        char *sql = ol_arena_sprintf(b->a.arena,
                                     "update %s.orders o set refunded_amount = x.s from (select k.id, "
                                     "coalesce(sum(r.amount) filter (where r.status = 'completed'), 0) as s from "
                                     "unnest($1::text[]) k(id) left join %s.refunds r on r.order_id = k.id group by "
                                     "k.id) x where o.order_id = x.id and o.refunded_amount <> x.s",
                                     b->schema, b->schema);
        const char *params[] = {ol_rowset_keys_of_map(ids, b->a.arena)};
        err = ol_pg_query(NULL, b->conn, sql, 1, params, b->errstr, b->errstr_size);
    }
    ol_map_destroy(ids);
    return err;
}

static ol_err_t write_batch(batch_t *b) {
    ol_err_t err;
    if ((err = ol_rowset_write(&b->orders, b->conn, b->schema, b->a.arena, b->errstr, b->errstr_size)) ||
        (err = write_lines(b)) || (err = write_payments(b)) ||
        (err = ol_rowset_write(&b->refunds, b->conn, b->schema, b->a.arena, b->errstr, b->errstr_size)) ||
        (err = ol_rowset_write(&b->skus, b->conn, b->schema, b->a.arena, b->errstr, b->errstr_size)))
        return err;
    return refresh_refunded(b);
}

static const char *const project_topics[] = {"orders", "after-sales", "skus", "sale-events", "blacklist", NULL};

static void rt_reject(void *rt, size_t index, const char *reason) {
    ol_rt_reject(rt, index, reason);
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

/* Bulk mode: the ops on the bulk state's rows, which live across batches. */
static void apply_bulk(ol_project_bulk_t *bulk, void **states, int nstates,
                       void (*reject)(void *opaque, size_t index, const char *reason), void *reject_opaque) {
    apply_t a = {&bulk->mem,          &bulk->orders,   &bulk->refunds, &bulk->skus,  bulk->payments,
                 bulk->payments_text, ol_arena_new(0), reject,         reject_opaque};
    for (int s = 0; s < nstates; s++)
        apply_ops(&a, states[s]);
    bulk->payments_text = a.new_payments;
    ol_arena_destroy(a.arena);
}

static ol_err_t apply(ol_rt_t *rt, PGconn *conn, void **states, int nstates, char *errstr, size_t errstr_size) {
    ol_project_bulk_t *bulk = ol_rt_opaque(rt);
    if (bulk) {
        /* bulk: the shadow starts empty and nothing else writes it, so the
         * rows stay in memory across batches and are written once, at the
         * end of the pass (ol_project_bulk_flush); re-running a batch is
         * harmless as every row skips what it has seen (last partition and
         * offset) */
        apply_bulk(bulk, states, nstates, rt_reject, rt);
        ol_err_t err = ol_project__bulk_check(bulk, errstr, errstr_size);
        /* the sale tables take the normal path (the rebuild gives them
         * their keys before the load) */
        return err ? err : apply_sale(rt, conn, states, nstates, errstr, errstr_size);
    }
    batch_t b;
    memset(&b, 0, sizeof(b));
    b.a.arena = ol_arena_new(0);
    ol_rowset_mem_init(&b.mem, b.a.arena, false);
    ol_rowset_init(&b.orders, &ol_project__orders, &b.mem);
    ol_rowset_init(&b.refunds, &ol_project__refunds, &b.mem);
    ol_rowset_init(&b.skus, &ol_project__skus, &b.mem);
    b.a.mem = &b.mem;
    b.a.orders = &b.orders;
    b.a.refunds = &b.refunds;
    b.a.skus = &b.skus;
    b.a.payments = ol_map_new();
    b.a.new_payments.arena = b.a.arena;
    b.a.reject = rt_reject;
    b.a.reject_opaque = rt;
    b.conn = conn;
    b.schema = ol_rt_schema(rt);
    b.errstr = errstr;
    b.errstr_size = errstr_size;
    /* every statement below reads or writes rows by key: an index path is
     * always right, but the planner picks sequential scans for thousands of
     * keys while the tables grow faster than autovacuum analyzes them */
    ol_err_t err = ol_pg_exec_ok(conn, "set local enable_seqscan = off", errstr, errstr_size);
    if (err || (err = load_batch(&b, states, nstates)))
        goto out;
    /* the events, in log order per key, on the row images */
    for (int s = 0; s < nstates; s++)
        apply_ops(&b.a, states[s]);
    if ((err = write_batch(&b)) || (err = apply_sale(rt, conn, states, nstates, errstr, errstr_size)))
        goto out;
out:
    ol_rowset_free(&b.orders);
    ol_rowset_free(&b.refunds);
    ol_rowset_free(&b.skus);
    ol_map_destroy(b.a.payments);
    ol_arena_destroy(b.a.arena);
    return err;
}

/* ---- the rules on in-memory rows (tests) ------------------------------------ */

typedef struct test_reject_s {
    char *out;
    size_t size;
} test_reject_t;

static void test_reject(void *opaque, size_t index, const char *reason) {
    (void)index;
    test_reject_t *t = opaque;
    snprintf(t->out, t->size, "%s", reason);
}

void ol_project_bulk_apply_event(ol_project_bulk_t *bulk, const ol_event_type_t *type, const ol_json_t *data,
                                 int32_t partition, int64_t offset, char *rejected, size_t rejected_size) {
    op_t op = {type, data, 0, partition, offset, 0};
    fold_state_t st = {&op, 1, 1, NULL};
    void *states[] = {&st};
    test_reject_t t = {rejected, rejected_size};
    if (rejected_size)
        rejected[0] = '\0';
    apply_bulk(bulk, states, 1, test_reject, &t);
}

static void count_reject(void *opaque, size_t index, const char *reason) {
    (void)index;
    (void)reason;
    ++*(size_t *)opaque;
}

void ol_project_bulk_apply_state(ol_project_bulk_t *bulk, void *state, size_t *rejected) {
    apply_bulk(bulk, &state, 1, count_reject, rejected);
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
    if (ol_cli_flag_only(&ol_cmd_project, argc, argv, "--until-end", &until_end))
        return OL_EXIT_USAGE;
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
