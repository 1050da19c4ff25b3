#ifndef OL_PROJECT_H
#define OL_PROJECT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/base/json.h"
#include "common/domain/schema.h"
#include "consumers/runtime.h"

/* The projection of orders, after-sales and skus (consumers/project.c), and
 * through it the sale projections (consumers/sale_project.h), for orderlog
 * project and orderlog rebuild. */
const ol_rt_role_t *ol_project_role(void);

/* Bulk mode, for a replay into an empty schema (rebuild): with a bulk state
 * as the role's opaque, batches only fold into memory (rows live across
 * batches; the offsets are still stored per batch) and flush writes every
 * row at once with COPY; the tables need no index meanwhile. A replay in
 * passes (each over keys no other pass meets) flushes after each pass, and
 * finish completes what spans passes. Memory grows with the orders, refunds
 * and skus of one pass: past max_rows (0: no limit) the batch fails with
 * OL_ERR_TOO_LARGE, which stops the runtime. Not thread-safe: the applier
 * folds, the caller flushes once the runtime stopped. */
typedef struct ol_project_bulk_s ol_project_bulk_t;
ol_project_bulk_t *ol_project_bulk_new(size_t max_rows);
void ol_project_bulk_destroy(ol_project_bulk_t *bulk);
/* The caller's own pointer, for the role's callbacks (takes_partition,
 * takes_record), which get the bulk state as their opaque. */
void ol_project_bulk_set_owner(ol_project_bulk_t *bulk, void *owner);
void *ol_project_bulk_owner(const ol_project_bulk_t *bulk);
/* Whether the bulk path fills this table (orders, order_lines,
 * order_payments, refunds, skus). The others (the offsets, the sale tables)
 * take the normal path during a bulk load: they need their primary keys
 * from the start. */
bool ol_project_bulk_fills(const char *table);
/* Rows held (orders, refunds, skus), and the bytes their images take. */
size_t ol_project_bulk_rows(const ol_project_bulk_t *bulk);
size_t ol_project_bulk_bytes(const ol_project_bulk_t *bulk);
/* Forgets every row held (a pass given up). */
void ol_project_bulk_reset(ol_project_bulk_t *bulk);
/* Appends every row held to schema's tables with COPY, then forgets them.
 * Two connections (conn2 may be NULL) write two tables at once, each in a
 * transaction of its own. The rows must be new to the tables (their keys
 * never met in an earlier flush, but see finish for refunds). */
ol_err_t ol_project_bulk_flush(ol_project_bulk_t *bulk, PGconn *conn, PGconn *conn2, const char *schema, char *errstr,
                               size_t errstr_size);
/* The rules alone, on the rows in memory (no runtime, no database: for
 * tests): applies one event of the orders, after-sales or skus topic, its
 * data as the codec's DOM, at (partition, offset) of its topic, as a batch
 * of the bulk mode would. rejected gets why the event can never apply (the
 * reason the dlq would get), else "". */
void ol_project_bulk_apply_event(ol_project_bulk_t *bulk, const ol_event_type_t *type, const ol_json_t *data,
                                 int32_t partition, int64_t offset, char *rejected, size_t rejected_size);
/* Bulk mode without a runtime (the rebuild's readers): the records a state
 * of the role folded (its state_new, fold) applied to bulk's rows, in
 * order. An event that can never apply (the live projector sent it to the
 * dlq) changes nothing and is counted in *rejected. */
void ol_project_bulk_apply_state(ol_project_bulk_t *bulk, void *state, size_t *rejected);
/* The value of column in the row of table (orders, refunds, skus) with key,
 * as text; NULL for SQL NULL or no such row. Borrowed from bulk until its
 * next change. */
const char *ol_project_bulk_value(const ol_project_bulk_t *bulk, const char *table, const char *key,
                                  const char *column);
/* After the last flush: refunded_amount of every order from its refunds,
 * and, with merge_refunds (more than one pass), one row per refund where a
 * refund was folded by two passes (its order moved to another partition):
 * the newest snapshot's, else the latest update's. */
ol_err_t ol_project_bulk_finish(PGconn *conn, const char *schema, bool merge_refunds, char *errstr, size_t errstr_size);

#endif
