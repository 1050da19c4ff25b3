/* The decide functions of the rules engine: they read the state and return
 * facts, never changing it (common/domain/sale.h). */
#include "common/domain/sale_state.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

/* ---- deciding -------------------------------------------------------------- */

static char *concat(ol_arena_t *arena, const char *prefix, const char *s) {
    size_t a = strlen(prefix), b = strlen(s);
    char *p = ol_arena_alloc(arena, a + b + 1);
    memcpy(p, prefix, a);
    memcpy(p + a, s, b + 1);
    return p;
}

static int64_t add_sat(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* The limit of a user level under sku's policy; 0 = no limit. */
static int32_t level_limit(const sku_t *k, int32_t level) {
    if (!k || !k->has_policy)
        return 0;
    size_t lo = 0, hi = k->n_levels;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (k->levels[mid].level < level)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < k->n_levels && k->levels[lo].level == level ? k->levels[lo].limit : k->default_limit;
}

static int reject_buy(const ol_buy_cmd_t *cmd, ol_reject_t reason, const char *message, ol_fact_t *out) {
    *out = (ol_fact_t){.kind = OL_FACT_BUY_REJECTED,
                       .request_id = cmd->request_id,
                       .user_id = cmd->user_id,
                       .sku = cmd->sku,
                       .quantity = cmd->quantity,
                       .reject = reason,
                       .message = message,
                       .at_ms = cmd->at_ms};
    return 1;
}

int ol_sale_buy(const ol_sale_t *s, const ol_buy_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out, char *errstr,
                size_t errstr_size) {
    if (empty(cmd->request_id) || empty(cmd->user_id) || empty(cmd->sku) || !cmd->client_ip) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid BuyRequested: request_id, user_id and sku must be set");
        return -1;
    }
    if (cmd->quantity < 1 || cmd->user_level < 0) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid BuyRequested %s: quantity %d, user_level %d",
                cmd->request_id, (int)cmd->quantity, (int)cmd->user_level);
        return -1;
    }
    /* older than the window: it may have been decided and forgotten */
    if (cmd->at_ms < sub_sat(s->stream, s->window))
        return reject_buy(cmd, OL_REJECT_TOO_OLD, OL_SALE_MSG_TOO_OLD, out);
    if (ol_sale__find_str(s->reqs, cmd->request_id) != OL_STRTAB_NONE)
        return 0; /* decided already: a retry gets no second decision */

    if (s->bl && ((*cmd->client_ip && ol_blacklist_has(s->bl, OL_SUBJECT_IP, cmd->client_ip, cmd->at_ms)) ||
                  ol_blacklist_has(s->bl, OL_SUBJECT_USER, cmd->user_id, cmd->at_ms)))
        return reject_buy(cmd, OL_REJECT_BLACKLISTED, OL_SALE_MSG_BLACKLISTED, out);

    const sku_t *k = ol_sale__find_sku(s, cmd->sku);
    if (k && k->has_policy && cmd->user_level < k->min_level)
        return reject_buy(cmd, OL_REJECT_LEVEL, OL_SALE_MSG_NOT_ALLOWED, out);
    int32_t limit = level_limit(k, cmd->user_level);
    const counter_t *c = ol_sale__find_counter(s, cmd->user_id, cmd->sku);
    int64_t has = c ? (int64_t)c->held + c->bought : 0;
    /* no limit still stops at what a counter holds */
    if (has > (limit > 0 ? (int64_t)limit : INT32_MAX) - cmd->quantity)
        return reject_buy(cmd, OL_REJECT_LIMIT, OL_SALE_MSG_NOT_ALLOWED, out);

    if (!k || k->status != SKU_ON_SALE)
        return reject_buy(cmd, OL_REJECT_UNKNOWN_SKU, OL_SALE_MSG_SOLD_OUT, out);
    if (k->total - k->held - k->sold < cmd->quantity)
        return reject_buy(cmd, OL_REJECT_SOLD_OUT, OL_SALE_MSG_SOLD_OUT, out);

    *out = (ol_fact_t){.kind = OL_FACT_BUY_ACCEPTED,
                       .request_id = cmd->request_id,
                       .hold_id = concat(arena, "h-", cmd->request_id),
                       .user_id = cmd->user_id,
                       .sku = cmd->sku,
                       .quantity = cmd->quantity,
                       .expires_at = add_sat(cmd->at_ms, s->ttl),
                       .message = OL_SALE_MSG_ACCEPTED,
                       .at_ms = cmd->at_ms};
    return 1;
}

/* Checkout and cancel: the open hold cmd names, or why not. */
static int decide_hold(const ol_sale_t *s, const ol_hold_cmd_t *cmd, ol_hold_op_t op, ol_arena_t *arena, ol_fact_t *out,
                       char *errstr, size_t errstr_size) {
    if (empty(cmd->request_id) || empty(cmd->hold_id) || empty(cmd->user_id) || empty(cmd->sku)) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid %s: request_id, hold_id, user_id and sku must be set",
                op == OL_HOLD_OP_CHECKOUT ? "CheckoutRequested" : "HoldCancelled");
        return -1;
    }
    ol_hold_reject_t why;
    uint32_t req = ol_sale__hold_req(s, cmd->hold_id);
    uint32_t state = req == OL_STRTAB_NONE ? REQ_REJECTED : s->req_state[req];
    const hold_t *h = is_slot(state) ? &s->holds[state] : NULL;
    const counter_t *c = h ? &s->counters[h->counter] : NULL;
    if (state == REQ_REJECTED || (c && strcmp(ol_intern_str(s->sku_ids, c->sku, NULL), cmd->sku)))
        why = OL_HOLD_REJECT_UNKNOWN_HOLD;
    else if (state == REQ_RELEASED)
        why = OL_HOLD_REJECT_RELEASED;
    else if (state == REQ_CONVERTED)
        why = OL_HOLD_REJECT_CONVERTED;
    else if (!ol_sale__str_is(s->users, c->user, cmd->user_id))
        why = OL_HOLD_REJECT_NOT_OWNER;
    else if (cmd->at_ms >= h->expires_at)
        why = OL_HOLD_REJECT_EXPIRED;
    else {
        *out = (ol_fact_t){.hold_id = cmd->hold_id,
                           .user_id = cmd->user_id,
                           .sku = cmd->sku,
                           .quantity = h->quantity,
                           .at_ms = cmd->at_ms};
        if (op == OL_HOLD_OP_CHECKOUT) {
            out->kind = OL_FACT_HOLD_CONVERTED;
            out->order_id = concat(arena, "o-", cmd->hold_id);
        } else {
            out->kind = OL_FACT_HOLD_RELEASED;
            out->release = OL_RELEASE_CANCELLED;
        }
        return 1;
    }
    *out = (ol_fact_t){.kind = OL_FACT_CHECKOUT_REJECTED,
                       .request_id = cmd->request_id,
                       .hold_id = cmd->hold_id,
                       .user_id = cmd->user_id,
                       .sku = cmd->sku,
                       .op = op,
                       .hold_reject = why,
                       .at_ms = cmd->at_ms};
    return 1;
}

int ol_sale_checkout(const ol_sale_t *s, const ol_hold_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out, char *errstr,
                     size_t errstr_size) {
    return decide_hold(s, cmd, OL_HOLD_OP_CHECKOUT, arena, out, errstr, errstr_size);
}

int ol_sale_cancel(const ol_sale_t *s, const ol_hold_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out, char *errstr,
                   size_t errstr_size) {
    return decide_hold(s, cmd, OL_HOLD_OP_CANCEL, arena, out, errstr, errstr_size);
}

static int stock_changed(const char *sku, const sku_t *k, int64_t total, ol_stock_cause_t cause, int64_t version,
                         int64_t at_ms, ol_fact_t *out) {
    int64_t floor = k ? k->held + k->sold : 0;
    *out = (ol_fact_t){.kind = OL_FACT_STOCK_CHANGED,
                       .sku = sku,
                       .total = max64(total, floor),
                       .cause = cause,
                       .version = version,
                       .at_ms = at_ms};
    return 1;
}

int ol_sale_sku_synced(const ol_sale_t *s, const ol_sku_synced_cmd_t *cmd, ol_fact_t *out, char *errstr,
                       size_t errstr_size) {
    if (empty(cmd->sku) || cmd->stock < 0 || cmd->version < 0) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid SkuSynced %s: stock %lld, version %lld",
                cmd->sku ? cmd->sku : "(null)", (long long)cmd->stock, (long long)cmd->version);
        return -1;
    }
    const sku_t *k = ol_sale__find_sku(s, cmd->sku);
    if (k && cmd->version <= k->version)
        return 0;
    return stock_changed(cmd->sku, k, cmd->stock, OL_STOCK_SYNCED, cmd->version, cmd->at_ms, out);
}

int ol_sale_sku_removed(const ol_sale_t *s, const ol_sku_removed_cmd_t *cmd, ol_fact_t *out, char *errstr,
                        size_t errstr_size) {
    if (empty(cmd->sku)) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid SkuRemoved: sku must be set");
        return -1;
    }
    const sku_t *k = ol_sale__find_sku(s, cmd->sku);
    if (!k || k->status != SKU_ON_SALE)
        return 0;
    return stock_changed(cmd->sku, k, 0, OL_STOCK_REMOVED, k->version, cmd->at_ms, out);
}

int ol_sale_stock_adjusted(const ol_sale_t *s, const ol_stock_adjusted_cmd_t *cmd, ol_fact_t *out, char *errstr,
                           size_t errstr_size) {
    if (empty(cmd->sku)) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid StockAdjusted: sku must be set");
        return -1;
    }
    const sku_t *k = ol_sale__find_sku(s, cmd->sku);
    if (!k || k->status != SKU_ON_SALE)
        return 0;
    return stock_changed(cmd->sku, k, add_sat(k->total, cmd->delta), OL_STOCK_ADJUSTED, k->version, cmd->at_ms, out);
}

typedef struct level_at_s {
    ol_level_limit_t ll;
    size_t index;
} level_at_t;

static int cmp_level_at(const void *a, const void *b) {
    const level_at_t *x = a, *y = b;
    if (x->ll.level != y->ll.level)
        return x->ll.level < y->ll.level ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

ol_err_t ol_sale__check_policy(const char *what, const char *sku, const ol_policy_t *p, char *errstr,
                               size_t errstr_size) {
    if (empty(sku))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid %s: sku must be set", what);
    if (p->min_level < 0 || p->default_limit < 0 || (p->n_levels && !p->levels) || p->n_levels > INT32_MAX)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid %s %s: min_level %d, default_limit %d", what, sku,
                       (int)p->min_level, (int)p->default_limit);
    for (size_t i = 0; i < p->n_levels; i++)
        if (p->levels[i].level < 0 || p->levels[i].limit < 0)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid %s %s: level_limits[%zu] = {%d, %d}", what,
                           sku, i, (int)p->levels[i].level, (int)p->levels[i].limit);
    return OL_ERR_OK;
}

/* The levels of p sorted, the last limit of a level listed twice kept, into
 * out (room for p->n_levels); returns how many. */
size_t ol_sale__normalize_levels(const ol_policy_t *p, ol_level_limit_t *out) {
    if (!p->n_levels)
        return 0;
    level_at_t *tmp = ol_xmalloc(p->n_levels * sizeof(*tmp));
    for (size_t i = 0; i < p->n_levels; i++)
        tmp[i] = (level_at_t){p->levels[i], i};
    qsort(tmp, p->n_levels, sizeof(*tmp), cmp_level_at);
    size_t n = 0;
    for (size_t i = 0; i < p->n_levels; i++) {
        if (i + 1 < p->n_levels && tmp[i + 1].ll.level == tmp[i].ll.level)
            continue;
        out[n++] = tmp[i].ll;
    }
    free(tmp);
    return n;
}

int ol_sale_policy_set(const ol_sale_t *s, const ol_policy_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out, char *errstr,
                       size_t errstr_size) {
    (void)s;
    if (ol_sale__check_policy("PurchasePolicySet", cmd->sku, &cmd->policy, errstr, errstr_size))
        return -1;
    ol_level_limit_t *levels = ol_arena_alloc(arena, cmd->policy.n_levels * sizeof(*levels));
    *out = (ol_fact_t){.kind = OL_FACT_POLICY_CHANGED, .sku = cmd->sku, .at_ms = cmd->at_ms};
    out->policy = cmd->policy;
    out->policy.levels = levels;
    out->policy.n_levels = ol_sale__normalize_levels(&cmd->policy, levels);
    return 1;
}

/* Best-first walk of the heap: the open holds due by now_ms in heap order,
 * without changing the heap. Candidates (heap positions) are kept in a small
 * min-heap of their own, in the arena. */
size_t ol_sale_expire(const ol_sale_t *s, int64_t now_ms, ol_arena_t *arena, ol_fact_t *out, size_t max) {
    if (!max || !s->nheap || s->holds[s->heap[0]].expires_at > now_ms)
        return 0;
    size_t cap = (max < s->nheap ? max : s->nheap) + 1;
    size_t *cand = ol_arena_alloc(arena, cap * sizeof(*cand));
    size_t ncand = 0, n = 0;
    cand[ncand++] = 0;
#define CAND_BEFORE(i, j) ol_sale__hold_before(s, s->heap[cand[i]], s->heap[cand[j]])
    while (ncand && n < max) {
        size_t pos = cand[0];
        cand[0] = cand[--ncand];
        for (size_t i = 0;;) { /* sift down the moved candidate */
            size_t c = 2 * i + 1;
            if (c >= ncand)
                break;
            if (c + 1 < ncand && CAND_BEFORE(c + 1, c))
                c++;
            if (!CAND_BEFORE(c, i))
                break;
            size_t t = cand[c];
            cand[c] = cand[i];
            cand[i] = t;
            i = c;
        }
        const hold_t *h = &s->holds[s->heap[pos]];
        const counter_t *c = &s->counters[h->counter];
        /* copied: applying an earlier fact may move the sale's strings */
        size_t ulen;
        const char *user = ol_strtab_str(s->users, c->user, &ulen);
        out[n++] = (ol_fact_t){.kind = OL_FACT_HOLD_RELEASED,
                               .hold_id = concat(arena, "h-", ol_strtab_str(s->reqs, h->req, NULL)),
                               .user_id = ol_arena_strndup(arena, user, ulen),
                               .sku = ol_intern_str(s->sku_ids, c->sku, NULL),
                               .quantity = h->quantity,
                               .release = OL_RELEASE_EXPIRED,
                               .at_ms = now_ms};
        for (size_t child = 2 * pos + 1; child <= 2 * pos + 2 && child < s->nheap; child++) {
            if (s->holds[s->heap[child]].expires_at > now_ms)
                continue;
            OL_ASSERT(ncand < cap);
            size_t i = ncand;
            cand[ncand++] = child;
            while (i > 0 && CAND_BEFORE(i, (i - 1) / 2)) { /* sift up */
                size_t t = cand[i];
                cand[i] = cand[(i - 1) / 2];
                cand[(i - 1) / 2] = t;
                i = (i - 1) / 2;
            }
        }
    }
#undef CAND_BEFORE
    return n;
}
