/* orderlog project, bulk mode (see project.h): the rows of a pass held in
 * memory across batches, then written at once with COPY. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/log.h"
#include "common/base/pg.h"
#include "common/base/pgcopy.h"
#include "common/base/util.h"
#include "consumers/project.h"
#include "consumers/project_tables.h"
#include "consumers/rowset.h"

void ol_project_bulk_set_owner(ol_project_bulk_t *b, void *owner) {
    b->owner = owner;
}

void *ol_project_bulk_owner(const ol_project_bulk_t *b) {
    return b->owner;
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
    b->rows = ol_arena_new(0);
    ol_rowset_mem_init(&b->mem, b->rows, true);
    ol_rowset_init(&b->orders, &ol_project__orders, &b->mem);
    ol_rowset_init(&b->refunds, &ol_project__refunds, &b->mem);
    ol_rowset_init(&b->skus, &ol_project__skus, &b->mem);
    b->payments = ol_map_new();
    b->arena = ol_arena_new(0);
    b->payments_text.arena = b->arena;
    b->max_rows = max_rows;
    return b;
}

size_t ol_project_bulk_rows(const ol_project_bulk_t *b) {
    return ol_rowset_count(&b->orders) + ol_rowset_count(&b->refunds) + ol_rowset_count(&b->skus);
}

size_t ol_project_bulk_bytes(const ol_project_bulk_t *b) {
    return ol_arena_used(b->rows) + ol_arena_used(b->arena);
}

void ol_project_bulk_reset(ol_project_bulk_t *b) {
    ol_rowset_clear(&b->orders);
    ol_rowset_clear(&b->refunds);
    ol_rowset_clear(&b->skus);
    ol_map_clear(b->payments);
    ol_rowset_mem_reset(&b->mem);
    ol_arena_reset(b->rows);
    ol_arena_reset(b->arena);
    memset(&b->payments_text, 0, sizeof(b->payments_text));
    b->payments_text.arena = b->arena;
}

void ol_project_bulk_destroy(ol_project_bulk_t *b) {
    if (!b)
        return;
    ol_rowset_t *sets[] = {&b->orders, &b->refunds, &b->skus};
    for (size_t i = 0; i < 3; i++)
        ol_rowset_free(sets[i]);
    ol_map_destroy(b->payments);
    ol_arena_destroy(b->rows);
    ol_arena_destroy(b->arena);
    free(b);
}

/* Bulk mode: every batch folds into the rows in memory; past max_rows the
 * pass stops (the rebuild splits it into smaller ones). */
ol_err_t ol_project__bulk_check(ol_project_bulk_t *b, char *errstr, size_t errstr_size) {
    size_t rows = ol_project_bulk_rows(b);
    if (b->max_rows && rows > b->max_rows)
        return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE,
                       "bulk load: %zu rows in memory, more than the limit of %zu (rebuild.bulk.rows)", rows,
                       b->max_rows);
    return OL_ERR_OK;
}

const char *ol_project_bulk_value(const ol_project_bulk_t *b, const char *table, const char *key, const char *column) {
    const ol_rowset_t *s = !strcmp(table, "orders")    ? &b->orders
                           : !strcmp(table, "refunds") ? &b->refunds
                           : !strcmp(table, "skus")    ? &b->skus
                                                       : NULL;
    const ol_row_t *r = s ? ol_rowset_find(s, key, NULL) : NULL;
    for (int c = 0; r && r->present && c < s->t->ncols; c++)
        if (!strcmp(s->t->cols[c], column))
            return r->v[c];
    return NULL;
}

/* ---- writing the bulk rows ------------------------------------------------ */

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

static ol_err_t stream_rows(bulk_part_t *p, const ol_rowset_t *s) {
    return ol_rowset_stream(s, NULL, p->conn, p->schema, s->t->name, ol_rowset_col_list(p->arena, s->t, ""), p->arena,
                            p->errstr, sizeof(p->errstr));
}

/* orders, skus */
static ol_err_t bulk_part_orders(bulk_part_t *p) {
    ol_err_t err = stream_rows(p, &p->b->orders);
    return err ? err : stream_rows(p, &p->b->skus);
}

/* order_lines, order_payments, refunds */
static ol_err_t bulk_part_lines(bulk_part_t *p) {
    ol_err_t err = ol_rowset_stream(&p->b->orders, ol_project__emit_lines, p->conn, p->schema, "order_lines",
                                    OL_PROJECT__LINE_COLS, p->arena, p->errstr, sizeof(p->errstr));
    if (!err && p->b->payments_text.len)
        err = ol_pgcopy_in(p->conn, ol_arena_sprintf(p->arena, "%s.order_payments", p->schema),
                           OL_PROJECT__PAYMENT_COLS, &p->b->payments_text, p->errstr, sizeof(p->errstr));
    return err ? err : stream_rows(p, &p->b->refunds);
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
