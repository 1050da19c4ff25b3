#ifndef OL_PROJECT_H
#define OL_PROJECT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "consumers/runtime.h"

/* The projection of orders, after-sales and skus (consumers/project.c), and
 * through it the sale projections (consumers/sale_project.h), for orderlog
 * project and orderlog rebuild. */
const ol_rt_role_t *ol_project_role(void);

/* Bulk mode, for a replay into an empty schema (rebuild): with a bulk state
 * as the role's opaque, batches only fold into memory (rows live across
 * batches; the offsets are still stored per batch) and flush writes every
 * row at once with COPY, then refunded_amount; the tables need no index
 * meanwhile. Memory grows with the number of orders, refunds and skus. */
typedef struct ol_project_bulk_s ol_project_bulk_t;
ol_project_bulk_t *ol_project_bulk_new(void);
void ol_project_bulk_destroy(ol_project_bulk_t *bulk);
/* Past max_rows rows in memory (0: no limit) the rows are written inside
 * the current batch's transaction, on_spill(opaque, conn) makes the keys and
 * indexes the normal path needs, and the replay goes on through it. */
void ol_project_bulk_set_limit(ol_project_bulk_t *bulk, size_t max_rows,
                               ol_err_t (*on_spill)(void *opaque, PGconn *conn, char *errstr, size_t errstr_size),
                               void *opaque);
/* Whether the bulk path fills this table (orders, order_lines,
 * order_payments, refunds, skus). The others (the offsets, the sale tables)
 * take the normal path during a bulk load: they need their primary keys
 * from the start. */
bool ol_project_bulk_fills(const char *table);
/* Whether the limit was passed (keys and indexes exist already). */
bool ol_project_bulk_spilled(const ol_project_bulk_t *bulk);
/* Writes what is in memory (nothing after a spill); the tables must be
 * empty. Two connections (conn and one more from conf) write two tables at
 * once, each in a transaction; readers of the shadow see nothing until the
 * rebuild is done. */
ol_err_t ol_project_bulk_flush(ol_project_bulk_t *bulk, const ol_conf_t *conf, PGconn *conn, const char *schema,
                               char *errstr, size_t errstr_size);

#endif
