#ifndef OL_SALE_PROJECT_H
#define OL_SALE_PROJECT_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/base/arena.h"
#include "common/base/err.h"
#include "consumers/runtime.h"

/* The sale projections (consumers/sale_project.c): the decider's facts on
 * sale-events and the blacklist topic into buy_decisions, holds, inventory,
 * user_sku_totals, policies, checkout_rejections and blacklist (migrations
 * 001 and 005). Not a role of its own: `orderlog project` (project.c) reads
 * these topics with the others, hands their records to the fold below and
 * calls the apply inside each batch's transaction, so one group, one offset
 * table and one rebuild cover every projection. */

/* Whether the records of this topic (short name) belong here. */
bool ol_sale_project_takes(const char *topic);

/* A worker's facts of one batch. Not thread-safe: one per worker. */
typedef struct ol_sale_project_fold_s ol_sale_project_fold_t;
ol_sale_project_fold_t *ol_sale_project_fold_new(void);
void ol_sale_project_fold_reset(ol_sale_project_fold_t *fold);
void ol_sale_project_fold_destroy(ol_sale_project_fold_t *fold);

/* Worker thread, records of one key in log order: keeps the fact, its data
 * copied into arena (which must live until the batch is applied). An event
 * that is no sale fact is an error (the record is poison). */
ol_err_t ol_sale_project_fold(ol_sale_project_fold_t *fold, const ol_rt_record_t *rec, ol_arena_t *arena, char *errstr,
                              size_t errstr_size);

/* Inside the batch's transaction on conn: loads the rows the facts of folds
 * touch (one query per table), applies the facts in order on them, rejects
 * (ol_rt_reject) the facts that contradict the rows, and writes the rows
 * that changed (COPY and one statement per table). Changes nothing in the
 * folds, so a transient failure may run it again. */
ol_err_t ol_sale_project_apply(ol_rt_t *rt, PGconn *conn, ol_sale_project_fold_t *const *folds, int nfolds,
                               char *errstr, size_t errstr_size);

#endif
