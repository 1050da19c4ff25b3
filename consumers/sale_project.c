/* orderlog project, the sale part: the decider's facts (sale-events) and the
 * blacklist into their read models (see sale_project.h, migration 005).
 *
 * Fold (worker threads, per key in log order): each fact is kept with its
 * fields and its position (partition, offset). Apply (in the batch's
 * transaction): the rows every fact touches are loaded in one query per
 * table, the facts run in order on those row images in memory, and the rows
 * that changed are written back through COPY into a staging table and one
 * upsert per table (blacklist removals: one delete).
 *
 * Rules (what a fact does is in migration 005's comments):
 *  - replays change nothing: every row remembers the position of the last
 *    fact applied to it (last_partition, last_offset). A fact touches rows of
 *    one SKU only (or one blacklist key), all in the partition of its key,
 *    so when any row it touches has seen its position, it was applied (to
 *    all of them, in one transaction) and is skipped;
 *  - a fact that contradicts the rows is rejected (dlq) and changes nothing,
 *    as the decider's state refuses it (ol_sale_apply): a second decision
 *    for a request, a hold that exists already, or that is unknown, ended or
 *    of another user, SKU or quantity, a BuyAccepted for a SKU without the
 *    stock, a StockChanged under held + sold. So held + sold <= total holds
 *    after every fact applied, whatever the log holds;
 *  - CheckoutRejected: the first per request id is kept (a retried command
 *    refused again is no contradiction); so is a BuyRejected{too_old} (a
 *    refusal of a request older than decide's window, no decision): it
 *    never replaces a decision, and a decision replaces it;
 *  - BlacklistChanged add replaces the row of its subject, remove deletes it.
 *
 * Row images hold every column as text (NULL = SQL NULL) in the apply arena,
 * as PostgreSQL prints them when loaded. */
#include "consumers/sale_project.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/domain/codec.h"
#include "common/base/map.h"
#include "common/base/pg.h"
#include "common/base/pgcopy.h"
#include "common/domain/sale.h"
#include "common/domain/sale_events.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/rowset.h"

bool ol_sale_project_takes(const char *topic) {
    return !strcmp(topic, "sale-events") || !strcmp(topic, "blacklist");
}

/* ---- facts ---------------------------------------------------------------- */

/* The sale-events fact kinds (common/domain/sale.h), then the blacklist's. */
typedef enum kind_e {
    K_ACCEPTED = OL_FACT_BUY_ACCEPTED,
    K_REJECTED = OL_FACT_BUY_REJECTED,
    K_RELEASED = OL_FACT_HOLD_RELEASED,
    K_CONVERTED = OL_FACT_HOLD_CONVERTED,
    K_STOCK = OL_FACT_STOCK_CHANGED,
    K_POLICY = OL_FACT_POLICY_CHANGED,
    K_CHECKOUT_REJECTED = OL_FACT_CHECKOUT_REJECTED,
    K_BLACKLIST = OL_FACT__COUNT,
    K_COUNT
} kind_t;

/* One fact; strings in the fold's arena. Fields a kind has not are NULL / 0. */
typedef struct fact_s {
    kind_t kind;
    const char *request_id, *hold_id, *order_id, *user_id, *sku;
    const char *reason, *message, *op, *cause;
    const char *subject_type, *subject;
    const char *level_limits; /* PolicyChanged: as JSON text */
    bool add;                 /* BlacklistChanged: add (else remove) */
    bool has_until;
    int64_t quantity, total, version, min_level, default_limit;
    int64_t at_ms, expires_at, until_ms;
    int32_t partition;
    int64_t offset;
    size_t index; /* in the batch */
} fact_t;

struct ol_sale_project_fold_s {
    fact_t *facts;
    size_t n, cap;
};

ol_sale_project_fold_t *ol_sale_project_fold_new(void) {
    return ol_xcalloc(1, sizeof(ol_sale_project_fold_t));
}

void ol_sale_project_fold_reset(ol_sale_project_fold_t *fold) {
    fold->n = 0;
}

void ol_sale_project_fold_destroy(ol_sale_project_fold_t *fold) {
    if (!fold)
        return;
    free(fold->facts);
    free(fold);
}

/* PolicyChanged.level_limits as the jsonb text of the policies table. */
static const char *level_limits_json(const ol_policy_t *p, ol_arena_t *arena) {
    size_t cap = 4 + p->n_levels * 64, len = 0;
    char *s = ol_arena_alloc(arena, cap);
    len += (size_t)snprintf(s + len, cap - len, "[");
    for (size_t i = 0; i < p->n_levels; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s{\"level\": %lld, \"limit\": %lld}", i ? ", " : "",
                                (long long)p->levels[i].level, (long long)p->levels[i].limit);
    snprintf(s + len, cap - len, "]");
    return s;
}

/* The projection's view of a sale-events fact (decoded by
 * common/domain/sale_events.h): its enums as the names the tables hold. */
static void fact_of_sale(fact_t *f, const ol_fact_t *sf, ol_arena_t *arena) {
    f->kind = (kind_t)sf->kind;
    f->request_id = sf->request_id;
    f->hold_id = sf->hold_id;
    f->order_id = sf->order_id;
    f->user_id = sf->user_id;
    f->sku = sf->sku;
    f->reason = sf->kind == OL_FACT_BUY_REJECTED        ? ol_reject_name(sf->reject)
                : sf->kind == OL_FACT_HOLD_RELEASED     ? ol_release_name(sf->release)
                : sf->kind == OL_FACT_CHECKOUT_REJECTED ? ol_hold_reject_name(sf->hold_reject)
                                                        : NULL;
    f->message = sf->kind == OL_FACT_BUY_REJECTED ? sf->message : NULL;
    f->op = sf->kind == OL_FACT_CHECKOUT_REJECTED ? ol_hold_op_name(sf->op) : NULL;
    f->cause = sf->kind == OL_FACT_STOCK_CHANGED ? ol_stock_cause_name(sf->cause) : NULL;
    f->quantity = sf->quantity;
    f->total = sf->total;
    f->version = sf->version;
    f->min_level = sf->policy.min_level;
    f->default_limit = sf->policy.default_limit;
    f->expires_at = sf->expires_at;
    f->at_ms = sf->at_ms;
    if (sf->kind == OL_FACT_POLICY_CHANGED)
        f->level_limits = level_limits_json(&sf->policy, arena);
}

/* A BlacklistChanged. */
static void fact_of_blacklist(fact_t *f, const ol_json_t *d) {
    f->kind = K_BLACKLIST;
    f->reason = ol_json_get_str(d, "reason", NULL);
    f->subject_type = ol_json_get_str(d, "subject_type", NULL);
    f->subject = ol_json_get_str(d, "subject", NULL);
    const char *action = ol_json_get_str(d, "action", NULL);
    f->add = action && !strcmp(action, "add");
    const ol_json_t *until = ol_json_get(d, "until");
    f->has_until = until && until->type == OL_JSON_INT;
    f->until_ms = f->has_until ? until->u.i : 0;
    f->at_ms = ol_json_get_int(d, "changed_at", 0);
}

ol_err_t ol_sale_project_fold(ol_sale_project_fold_t *fold, const ol_rt_record_t *rec, ol_arena_t *arena, char *errstr,
                              size_t errstr_size) {
    const char *name = rec->env->type->name;
    bool blacklist = !strcmp(name, "BlacklistChanged");
    if (!blacklist && ol_fact_kind_from_name(name) < 0)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "%s is not a fact of the sale projections", name);
    const ol_json_t *d = ol_codec_to_dom(rec->env->type, rec->value, arena);
    fact_t f;
    memset(&f, 0, sizeof(f));
    ol_fact_t sf;
    if (blacklist)
        fact_of_blacklist(&f, d);
    else if (ol_sale_events_decode(name, d, arena, &sf, NULL))
        fact_of_sale(&f, &sf, arena);
    f.partition = rec->partition;
    f.offset = rec->offset;
    f.index = rec->index;
    if (fold->n == fold->cap) {
        fold->cap = fold->cap ? fold->cap * 2 : 256;
        fold->facts = ol_xrealloc(fold->facts, fold->cap * sizeof(*fold->facts));
    }
    fold->facts[fold->n++] = f;
    return OL_ERR_OK;
}

/* ---- tables --------------------------------------------------------------- */

/* Every table ends with its position columns; the first nkeys columns are
 * its primary key. Generated columns (inventory.available) are left out.
 * One line per table's columns. */
/* clang-format off */
#define TOTALS_COLS(X) X(U_USER, "user_id") X(U_SKU, "sku") X(U_HELD, "held") X(U_BOUGHT, "bought") X(U_UPDATED_AT, "updated_at") X(U_LAST_PARTITION, "last_partition") X(U_LAST_OFFSET, "last_offset")
enum { TOTALS_COLS(OL_ROWSET_COL_ENUM) U_NCOLS };
static const char *const totals_cols[] = {TOTALS_COLS(OL_ROWSET_COL_NAME)};

#define INVENTORY_COLS(X) X(I_SKU, "sku") X(I_TOTAL, "total") X(I_HELD, "held") X(I_SOLD, "sold") X(I_VERSION, "version") X(I_CAUSE, "cause") X(I_UPDATED_AT, "updated_at") X(I_LAST_PARTITION, "last_partition") X(I_LAST_OFFSET, "last_offset")
enum { INVENTORY_COLS(OL_ROWSET_COL_ENUM) I_NCOLS };
static const char *const inventory_cols[] = {INVENTORY_COLS(OL_ROWSET_COL_NAME)};

#define DECISION_COLS(X) X(D_REQUEST, "request_id") X(D_USER, "user_id") X(D_SKU, "sku") X(D_QUANTITY, "quantity") X(D_OUTCOME, "outcome") X(D_REASON, "reason") X(D_MESSAGE, "message") X(D_HOLD, "hold_id") X(D_EXPIRES_AT, "expires_at") X(D_DECIDED_AT, "decided_at") X(D_LAST_PARTITION, "last_partition") X(D_LAST_OFFSET, "last_offset")
enum { DECISION_COLS(OL_ROWSET_COL_ENUM) D_NCOLS };
static const char *const decision_cols[] = {DECISION_COLS(OL_ROWSET_COL_NAME)};

#define POLICY_COLS(X) X(P_SKU, "sku") X(P_MIN_LEVEL, "min_level") X(P_DEFAULT_LIMIT, "default_limit") X(P_LEVEL_LIMITS, "level_limits") X(P_SET_AT, "set_at") X(P_LAST_PARTITION, "last_partition") X(P_LAST_OFFSET, "last_offset")
enum { POLICY_COLS(OL_ROWSET_COL_ENUM) P_NCOLS };
static const char *const policy_cols[] = {POLICY_COLS(OL_ROWSET_COL_NAME)};

#define BLACKLIST_COLS(X) X(B_TYPE, "subject_type") X(B_SUBJECT, "subject") X(B_REASON, "reason") X(B_UNTIL, "until") X(B_CHANGED_AT, "changed_at") X(B_LAST_PARTITION, "last_partition") X(B_LAST_OFFSET, "last_offset")
enum { BLACKLIST_COLS(OL_ROWSET_COL_ENUM) B_NCOLS };
static const char *const blacklist_cols[] = {BLACKLIST_COLS(OL_ROWSET_COL_NAME)};

#define HOLD_COLS(X) X(H_HOLD, "hold_id") X(H_REQUEST, "request_id") X(H_USER, "user_id") X(H_SKU, "sku") X(H_QUANTITY, "quantity") X(H_STATUS, "status") X(H_RELEASE_REASON, "release_reason") X(H_ORDER, "order_id") X(H_EXPIRES_AT, "expires_at") X(H_PLACED_AT, "placed_at") X(H_ENDED_AT, "ended_at") X(H_UPDATED_AT, "updated_at") X(H_LAST_PARTITION, "last_partition") X(H_LAST_OFFSET, "last_offset")
enum { HOLD_COLS(OL_ROWSET_COL_ENUM) H_NCOLS };
static const char *const hold_cols[] = {HOLD_COLS(OL_ROWSET_COL_NAME)};

#define CHECKOUT_COLS(X) X(C_REQUEST, "request_id") X(C_HOLD, "hold_id") X(C_USER, "user_id") X(C_SKU, "sku") X(C_OP, "op") X(C_REASON, "reason") X(C_DECIDED_AT, "decided_at") X(C_LAST_PARTITION, "last_partition") X(C_LAST_OFFSET, "last_offset")
enum { CHECKOUT_COLS(OL_ROWSET_COL_ENUM) C_NCOLS };
static const char *const checkout_cols[] = {CHECKOUT_COLS(OL_ROWSET_COL_NAME)};
/* clang-format on */

enum { T_DECISIONS, T_HOLDS, T_INVENTORY, T_TOTALS, T_POLICIES, T_CHECKOUTS, T_BLACKLIST, T_COUNT };
/* insert once: an existing row is never replaced */
static const ol_rowset_table_t tables[T_COUNT] = {
    {"buy_decisions", decision_cols, D_NCOLS, 1, D_LAST_PARTITION, D_LAST_OFFSET, OL_ROWSET_INSERT_ONCE, 0},
    {"holds", hold_cols, H_NCOLS, 1, H_LAST_PARTITION, H_LAST_OFFSET, OL_ROWSET_UPSERT, 0},
    {"inventory", inventory_cols, I_NCOLS, 1, I_LAST_PARTITION, I_LAST_OFFSET, OL_ROWSET_UPSERT, 0},
    {"user_sku_totals", totals_cols, U_NCOLS, 2, U_LAST_PARTITION, U_LAST_OFFSET, OL_ROWSET_UPSERT, 0},
    {"policies", policy_cols, P_NCOLS, 1, P_LAST_PARTITION, P_LAST_OFFSET, OL_ROWSET_UPSERT, 0},
    {"checkout_rejections", checkout_cols, C_NCOLS, 1, C_LAST_PARTITION, C_LAST_OFFSET, OL_ROWSET_INSERT_ONCE, 0},
    {"blacklist", blacklist_cols, B_NCOLS, 2, B_LAST_PARTITION, B_LAST_OFFSET, OL_ROWSET_UPSERT, 0},
};

/* ---- apply: row images ------------------------------------------------------ */

typedef struct apply_s {
    ol_rt_t *rt;
    ol_rowset_mem_t mem;
    ol_rowset_t rows[T_COUNT];
} apply_t;

/* The image of the row of table t with key k0 (and k1 for two-column keys),
 * made empty (not present) when absent. */
static ol_row_t *row_get(apply_t *a, int t, const char *k0, const char *k1) {
    return ol_rowset_get(&a->rows[t], k0, k1);
}

static void set_str(apply_t *a, ol_row_t *r, int col, const char *v) {
    ol_row_set_str(&a->mem, r, col, v);
}

static void set_int(apply_t *a, ol_row_t *r, int col, int64_t v) {
    ol_row_set_int(&a->mem, r, col, v);
}

static void set_time(apply_t *a, ol_row_t *r, int col, int64_t ms) {
    ol_row_set_time(&a->mem, r, col, ms);
}

static int64_t get_int(const ol_row_t *r, int col) {
    return ol_row_int(r, col);
}

static const char *get_str(const ol_row_t *r, int col) {
    return ol_row_str(r, col);
}

/* Whether the row has seen the fact's position: the fact was applied. */
static bool seen(const ol_row_t *r, int t, const fact_t *f) {
    return ol_row_seen(&tables[t], r, f->partition, f->offset);
}

/* The row took the fact at its time (at_col is set to it): it remembers
 * the fact's position and is written. */
static void took_at(apply_t *a, ol_row_t *r, int t, int at_col, const fact_t *f) {
    set_time(a, r, at_col, f->at_ms);
    ol_row_took(&a->rows[t], r, f->partition, f->offset);
}

/* The fact can never apply: dlq, with why. */
__attribute__((format(printf, 3, 4))) static void reject(apply_t *a, const fact_t *f, const char *fmt, ...) {
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    ol_rt_reject(a->rt, f->index, why);
}

/* The rows a fact touches, made (not loaded yet) so that the load finds them. */
static void touch(apply_t *a, const fact_t *f) {
    kind_t k = f->kind;
    if (k == K_ACCEPTED || k == K_REJECTED)
        row_get(a, T_DECISIONS, f->request_id, NULL);
    if (k == K_ACCEPTED || k == K_RELEASED || k == K_CONVERTED) {
        row_get(a, T_HOLDS, f->hold_id, NULL);
        row_get(a, T_INVENTORY, f->sku, NULL);
        row_get(a, T_TOTALS, f->user_id, f->sku);
    } else if (k == K_STOCK) {
        row_get(a, T_INVENTORY, f->sku, NULL);
    } else if (k == K_POLICY) {
        row_get(a, T_POLICIES, f->sku, NULL);
    } else if (k == K_CHECKOUT_REJECTED) {
        row_get(a, T_CHECKOUTS, f->request_id, NULL);
    } else if (k == K_BLACKLIST) {
        row_get(a, T_BLACKLIST, f->subject_type, f->subject);
    }
}

/* ---- apply: the rules -------------------------------------------------------- */

static void apply_decision(apply_t *a, const fact_t *f) {
    bool accepted = f->kind == K_ACCEPTED;
    ol_row_t *d = row_get(a, T_DECISIONS, f->request_id, NULL);
    ol_row_t *h = NULL, *inv = NULL, *u = NULL;
    if (accepted) {
        h = row_get(a, T_HOLDS, f->hold_id, NULL);
        inv = row_get(a, T_INVENTORY, f->sku, NULL);
        u = row_get(a, T_TOTALS, f->user_id, f->sku);
        if (seen(h, T_HOLDS, f) || seen(inv, T_INVENTORY, f) || seen(u, T_TOTALS, f))
            return;
    }
    if (seen(d, T_DECISIONS, f))
        return;
    /* too_old is no decision: it never replaces a row, and a decision
     * replaces a too_old row */
    bool too_old = !accepted && !strcmp(f->reason ? f->reason : "", "too_old");
    if (d->present && too_old)
        return;
    if (d->present && strcmp(get_str(d, D_REASON), "too_old")) {
        reject(a, f, "request \"%.200s\" was decided already (%s)", f->request_id, get_str(d, D_OUTCOME));
        return;
    }
    if (accepted) {
        if (h->present) {
            reject(a, f, "hold \"%.200s\" exists already", f->hold_id);
            return;
        }
        if (!inv->present) {
            reject(a, f, "sku \"%.200s\" has no stock: no StockChanged came before this BuyAccepted", f->sku);
            return;
        }
        int64_t available = get_int(inv, I_TOTAL) - get_int(inv, I_HELD) - get_int(inv, I_SOLD);
        if (available < f->quantity) {
            reject(a, f, "sku \"%.200s\" has %lld units available, the hold takes %lld", f->sku, (long long)available,
                   (long long)f->quantity);
            return;
        }
    }
    set_str(a, d, D_USER, f->user_id);
    set_str(a, d, D_SKU, f->sku);
    set_int(a, d, D_QUANTITY, f->quantity);
    set_str(a, d, D_OUTCOME, accepted ? "accepted" : "rejected");
    set_str(a, d, D_REASON, accepted ? NULL : f->reason);
    set_str(a, d, D_MESSAGE, accepted ? OL_SALE_MSG_ACCEPTED : f->message);
    set_str(a, d, D_HOLD, accepted ? f->hold_id : NULL);
    if (accepted)
        set_time(a, d, D_EXPIRES_AT, f->expires_at);
    took_at(a, d, T_DECISIONS, D_DECIDED_AT, f);
    if (!accepted)
        return;
    set_str(a, h, H_REQUEST, f->request_id);
    set_str(a, h, H_USER, f->user_id);
    set_str(a, h, H_SKU, f->sku);
    set_int(a, h, H_QUANTITY, f->quantity);
    set_str(a, h, H_STATUS, "held");
    set_time(a, h, H_EXPIRES_AT, f->expires_at);
    set_time(a, h, H_PLACED_AT, f->at_ms);
    took_at(a, h, T_HOLDS, H_UPDATED_AT, f);
    set_int(a, inv, I_HELD, get_int(inv, I_HELD) + f->quantity);
    took_at(a, inv, T_INVENTORY, I_UPDATED_AT, f);
    if (!u->present) {
        set_int(a, u, U_HELD, 0);
        set_int(a, u, U_BOUGHT, 0);
    }
    set_int(a, u, U_HELD, get_int(u, U_HELD) + f->quantity);
    took_at(a, u, T_TOTALS, U_UPDATED_AT, f);
}

/* HoldReleased and HoldConverted. */
static void apply_hold_end(apply_t *a, const fact_t *f) {
    bool converted = f->kind == K_CONVERTED;
    ol_row_t *h = row_get(a, T_HOLDS, f->hold_id, NULL), *inv = row_get(a, T_INVENTORY, f->sku, NULL),
             *u = row_get(a, T_TOTALS, f->user_id, f->sku);
    if (seen(h, T_HOLDS, f) || seen(inv, T_INVENTORY, f) || seen(u, T_TOTALS, f))
        return;
    if (!h->present) {
        reject(a, f, "hold \"%.200s\" does not exist", f->hold_id);
        return;
    }
    if (strcmp(get_str(h, H_STATUS), "held")) {
        reject(a, f, "hold \"%.200s\" is %s already", f->hold_id, get_str(h, H_STATUS));
        return;
    }
    if (strcmp(get_str(h, H_USER), f->user_id) || strcmp(get_str(h, H_SKU), f->sku) ||
        get_int(h, H_QUANTITY) != f->quantity) {
        reject(a, f,
               "hold \"%.200s\" is %lld units of sku \"%.100s\" for user \"%.100s\", not %lld of \"%.100s\" for "
               "\"%.100s\"",
               f->hold_id, (long long)get_int(h, H_QUANTITY), get_str(h, H_SKU), get_str(h, H_USER),
               (long long)f->quantity, f->sku, f->user_id);
        return;
    }
    if (!inv->present || get_int(inv, I_HELD) < f->quantity || !u->present || get_int(u, U_HELD) < f->quantity) {
        reject(a, f, "the %lld units of hold \"%.200s\" are not held in inventory or user_sku_totals",
               (long long)f->quantity, f->hold_id);
        return;
    }
    set_str(a, h, H_STATUS, converted ? "converted" : "released");
    if (converted)
        set_str(a, h, H_ORDER, f->order_id);
    else
        set_str(a, h, H_RELEASE_REASON, f->reason);
    set_time(a, h, H_ENDED_AT, f->at_ms);
    took_at(a, h, T_HOLDS, H_UPDATED_AT, f);
    set_int(a, inv, I_HELD, get_int(inv, I_HELD) - f->quantity);
    if (converted)
        set_int(a, inv, I_SOLD, get_int(inv, I_SOLD) + f->quantity);
    took_at(a, inv, T_INVENTORY, I_UPDATED_AT, f);
    set_int(a, u, U_HELD, get_int(u, U_HELD) - f->quantity);
    if (converted)
        set_int(a, u, U_BOUGHT, get_int(u, U_BOUGHT) + f->quantity);
    took_at(a, u, T_TOTALS, U_UPDATED_AT, f);
}

static void apply_stock(apply_t *a, const fact_t *f) {
    ol_row_t *inv = row_get(a, T_INVENTORY, f->sku, NULL);
    if (seen(inv, T_INVENTORY, f))
        return;
    int64_t taken = get_int(inv, I_HELD) + get_int(inv, I_SOLD);
    if (f->total < taken) {
        reject(a, f, "sku \"%.200s\": a total of %lld is under the %lld units held and sold", f->sku,
               (long long)f->total, (long long)taken);
        return;
    }
    if (!inv->present) {
        set_int(a, inv, I_HELD, 0);
        set_int(a, inv, I_SOLD, 0);
    }
    set_int(a, inv, I_TOTAL, f->total);
    set_int(a, inv, I_VERSION, f->version);
    set_str(a, inv, I_CAUSE, f->cause);
    took_at(a, inv, T_INVENTORY, I_UPDATED_AT, f);
}

static void apply_policy(apply_t *a, const fact_t *f) {
    ol_row_t *p = row_get(a, T_POLICIES, f->sku, NULL);
    if (seen(p, T_POLICIES, f))
        return;
    set_int(a, p, P_MIN_LEVEL, f->min_level);
    set_int(a, p, P_DEFAULT_LIMIT, f->default_limit);
    set_str(a, p, P_LEVEL_LIMITS, f->level_limits);
    took_at(a, p, T_POLICIES, P_SET_AT, f);
}

static void apply_checkout_rejected(apply_t *a, const fact_t *f) {
    ol_row_t *c = row_get(a, T_CHECKOUTS, f->request_id, NULL);
    if (c->present)
        return; /* this fact again, or the same request refused again: the first is kept */
    set_str(a, c, C_HOLD, f->hold_id);
    set_str(a, c, C_USER, f->user_id);
    set_str(a, c, C_SKU, f->sku);
    set_str(a, c, C_OP, f->op);
    set_str(a, c, C_REASON, f->reason);
    took_at(a, c, T_CHECKOUTS, C_DECIDED_AT, f);
}

static void apply_blacklist(apply_t *a, const fact_t *f) {
    ol_row_t *b = row_get(a, T_BLACKLIST, f->subject_type, f->subject);
    if (seen(b, T_BLACKLIST, f))
        return;
    if (!f->add) {
        b->present = false; /* deleted when it is in the database */
        b->dirty = false;
        return;
    }
    set_str(a, b, B_REASON, f->reason);
    if (f->has_until)
        set_time(a, b, B_UNTIL, f->until_ms);
    else
        set_str(a, b, B_UNTIL, NULL);
    took_at(a, b, T_BLACKLIST, B_CHANGED_AT, f);
}

/* The rules of each kind of fact. */
static void (*const apply_kind[K_COUNT])(apply_t *a, const fact_t *f) = {
    [K_ACCEPTED] = apply_decision,
    [K_REJECTED] = apply_decision,
    [K_RELEASED] = apply_hold_end,
    [K_CONVERTED] = apply_hold_end,
    [K_STOCK] = apply_stock,
    [K_POLICY] = apply_policy,
    [K_CHECKOUT_REJECTED] = apply_checkout_rejected,
    [K_BLACKLIST] = apply_blacklist,
};

static void apply_fact(apply_t *a, const fact_t *f) {
    if (f->kind < K_COUNT && apply_kind[f->kind])
        apply_kind[f->kind](a, f);
}

ol_err_t ol_sale_project_apply(ol_rt_t *rt, PGconn *conn, ol_sale_project_fold_t *const *folds, int nfolds,
                               char *errstr, size_t errstr_size) {
    size_t facts = 0;
    for (int s = 0; s < nfolds; s++)
        facts += folds[s]->n;
    if (!facts)
        return OL_ERR_OK;
    ol_arena_t *arena = ol_arena_new(0);
    const char *schema = ol_rt_schema(rt);
    apply_t a;
    a.rt = rt;
    ol_rowset_mem_init(&a.mem, arena, false);
    for (int t = 0; t < T_COUNT; t++)
        ol_rowset_init(&a.rows[t], &tables[t], &a.mem);
    /* rows are read and written by key: an index path is always right (the
     * planner may think otherwise of tables that grew since their last
     * analyze, or never had one, as in a rebuild's shadow) */
    ol_err_t err = ol_pg_exec_ok(conn, "set local enable_seqscan = off", errstr, errstr_size);
    for (int s = 0; s < nfolds; s++)
        for (size_t i = 0; i < folds[s]->n; i++)
            touch(&a, &folds[s]->facts[i]);
    for (int t = 0; t < T_COUNT && !err; t++)
        err = ol_rowset_load(&a.rows[t], conn, schema, arena, errstr, errstr_size);
    if (!err) {
        /* per worker, its keys' facts in log order */
        for (int s = 0; s < nfolds; s++)
            for (size_t i = 0; i < folds[s]->n; i++)
                apply_fact(&a, &folds[s]->facts[i]);
        for (int t = 0; t < T_COUNT && !err; t++)
            err = ol_rowset_write(&a.rows[t], conn, schema, arena, errstr, errstr_size);
    }
    for (int t = 0; t < T_COUNT; t++)
        ol_rowset_free(&a.rows[t]);
    ol_arena_destroy(arena);
    return err;
}
