#ifndef OL_PROJECT_TABLES_H
#define OL_PROJECT_TABLES_H

/* The tables of the projection of orders, after-sales and skus, each
 * declared once, and the bulk state; internal to project.c (the rules and
 * the batches) and project_bulk.c (the bulk load). */
#include "consumers/project.h"
#include "consumers/rowset.h"

#define ORDER_COLS(X)                     \
    X(O_ID, "order_id")                   \
    X(O_USER, "user_id")                  \
    X(O_SOURCE, "source")                 \
    X(O_PLATFORM, "platform")             \
    X(O_SHOP, "shop_id")                  \
    X(O_STATUS, "status")                 \
    X(O_TOTAL, "total_amount")            \
    X(O_CURRENCY, "currency")             \
    X(O_PAID, "paid_amount")              \
    X(O_REFUNDED, "refunded_amount")      \
    X(O_PAYMENT, "payment_id")            \
    X(O_CARRIER, "carrier")               \
    X(O_TRACKING, "tracking_no")          \
    X(O_CANCEL_REASON, "cancel_reason")   \
    X(O_PLACED_AT, "placed_at")           \
    X(O_PAID_AT, "paid_at")               \
    X(O_SHIPPED_AT, "shipped_at")         \
    X(O_CANCELLED_AT, "cancelled_at")     \
    X(O_VERSION, "version")               \
    X(O_UPDATED_AT, "updated_at")         \
    X(O_LAST_PARTITION, "last_partition") \
    X(O_LAST_OFFSET, "last_offset")
enum { ORDER_COLS(OL_ROWSET_COL_ENUM) O_NCOLS };

#define REFUND_COLS(X)                    \
    X(R_ID, "refund_id")                  \
    X(R_ORDER, "order_id")                \
    X(R_USER, "user_id")                  \
    X(R_PLATFORM, "platform")             \
    X(R_STATUS, "status")                 \
    X(R_AMOUNT, "amount")                 \
    X(R_CURRENCY, "currency")             \
    X(R_REASON, "reason")                 \
    X(R_REJECT_REASON, "reject_reason")   \
    X(R_REQUESTED_AT, "requested_at")     \
    X(R_APPROVED_AT, "approved_at")       \
    X(R_REJECTED_AT, "rejected_at")       \
    X(R_COMPLETED_AT, "completed_at")     \
    X(R_VERSION, "version")               \
    X(R_UPDATED_AT, "updated_at")         \
    X(R_LAST_PARTITION, "last_partition") \
    X(R_LAST_OFFSET, "last_offset")
enum { REFUND_COLS(OL_ROWSET_COL_ENUM) R_NCOLS };

#define SKU_COLS(X)                       \
    X(S_ID, "sku")                        \
    X(S_PLATFORM, "platform")             \
    X(S_TITLE, "title")                   \
    X(S_PRICE, "price")                   \
    X(S_CURRENCY, "currency")             \
    X(S_STOCK, "stock")                   \
    X(S_VERSION, "version")               \
    X(S_REMOVED_AT, "removed_at")         \
    X(S_UPDATED_AT, "updated_at")         \
    X(S_LAST_PARTITION, "last_partition") \
    X(S_LAST_OFFSET, "last_offset")
enum { SKU_COLS(OL_ROWSET_COL_ENUM) S_NCOLS };

extern const ol_rowset_table_t ol_project__orders, ol_project__refunds, ol_project__skus;

/* An order's row: its lines too. */
typedef struct ol_project__order_row_s {
    ol_row_t row;
    char *lines; /* the order_lines COPY text to write when lines_dirty */
    bool lines_dirty;
} ol_project__order_row_t;

/* An order's lines to write (an ol_rowset_emit_fn). */
bool ol_project__emit_lines(const ol_row_t *row, ol_pgcopy_t *text);

/* A refund's row: where it was. */
typedef struct ol_project__refund_row_s {
    ol_row_t row;
    const char *stored_order; /* order_id in the database before this batch */
} ol_project__refund_row_t;

/* The bulk mode's rows, which live across batches (see project.h). */
struct ol_project_bulk_s {
    ol_rowset_mem_t mem;               /* packed, in rows */
    ol_rowset_t orders, refunds, skus; /* in mem */
    ol_map_t *payments;                /* "<order_id>\x1f<payment_id>" of every payment counted */
    ol_arena_t *rows;                  /* the rows' images: freed at once when they are written */
    ol_arena_t *arena;                 /* the payments' COPY text */
    ol_pgcopy_t payments_text;         /* in arena */
    size_t max_rows;
    void *owner;
};

/* Past max_rows: OL_ERR_TOO_LARGE (the rebuild splits the pass). */
ol_err_t ol_project__bulk_check(ol_project_bulk_t *bulk, char *errstr, size_t errstr_size);

/* The order_lines columns, and order_payments'. */
#define OL_PROJECT__LINE_COLS "order_id, line_no, sku, quantity, unit_price"
#define OL_PROJECT__PAYMENT_COLS "order_id, payment_id, amount, currency, paid_at"

#endif
