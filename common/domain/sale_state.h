#ifndef OL_SALE_STATE_H
#define OL_SALE_STATE_H

/* Inside the rules engine: the state of an ol_sale_t, shared by its files
 * and by nothing else (the API and its rules are common/domain/sale.h).
 *  - sale.c: the state, and ol_sale_apply, the only way it changes;
 *  - sale_decide.c: the decide functions, which read it and return facts;
 *  - sale_read.c: what callers read of it. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/intern.h"
#include "common/base/strtab.h"
#include "common/domain/sale.h"

/* State layout, chosen to stay compact with millions of holds (no malloc per
 * hold, user or request) and to shrink back to what is live:
 *  - skus are interned (common/base/intern.h, never removed): skus[sku id] holds
 *    stock and policy;
 *  - users and request ids are in string tables with removal
 *    (common/base/strtab.h): dense ids, given again once removed;
 *  - req_state[request id]: REQ_REJECTED, REQ_RELEASED, REQ_CONVERTED, or the
 *    slot in holds[] of its open hold. A hold id is "h-" + request id, so no
 *    table of hold ids is needed;
 *  - the request ids decided are bucketed by time: slice k holds those
 *    decided in [k * slice_ms, (k + 1) * slice_ms), chained through req_next
 *    from slice_head[k % SLICES], their strings in group k % SLICES of the
 *    table. A slice is dropped whole once the stream time (the latest time
 *    of the facts applied) has passed its end by the retention (window +
 *    OL_SALE_AHEAD_MS): its ids are forgotten, but for those of open holds,
 *    which move to the newest slice;
 *  - counters[]: held and bought units per (user, SKU), chained per user
 *    from user_head[user] (a user holds a few SKUs: finding one walks the
 *    user's). A counter whose units are all 0 (its holds ended, nothing
 *    bought) is removed, and with the user's last counter the user; the
 *    slot of a removed counter is reused (free list through next);
 *  - holds[]: open holds; the slot of an ended hold is reused (free list
 *    threaded through heap_pos), an ended hold lives on as its req_state;
 *  - heap[]: slots of the open holds, a binary min-heap by (expires_at,
 *    request id bytes), a total order independent of internal ids.
 * Everything changes only in ol_sale_apply, in the order of the facts, so a
 * restore rebuilds the same ids, slots, slices and heap; a sale loaded from
 * a snapshot (sale_snapshot.c, with the building blocks below) has the same
 * SKU ids and slices, its own user, request and hold ids. */

#define REQ_REJECTED UINT32_MAX
#define REQ_RELEASED (UINT32_MAX - 1)
#define REQ_CONVERTED (UINT32_MAX - 2)
#define MAX_SLOTS (UINT32_MAX - 3)
#define NO_SLOT UINT32_MAX
#define NONE UINT32_MAX
#define SLICES 16 /* ring of slices; SLICES - 2 of them span the retention */

enum { SKU_UNLISTED, SKU_ON_SALE, SKU_REMOVED };

typedef struct sku_s {
    int64_t total, held, sold, version;
    int32_t min_level, default_limit;
    uint32_t n_levels;
    uint8_t status;
    bool has_policy;
    ol_level_limit_t *levels; /* sorted by level, one entry per level */
} sku_t;

/* Units of a user's SKU: at most INT32_MAX held + bought (the projection's
 * user_sku_totals has the same range). next: the user's next counter, or
 * for a free one (user NONE) the next free. */
typedef struct counter_s {
    uint32_t user, sku, next;
    int32_t held, bought;
} counter_t;

typedef struct hold_s {
    int64_t expires_at;
    uint32_t req, counter;
    int32_t quantity;
    uint32_t heap_pos;
} hold_t;

struct ol_sale_s {
    int64_t ttl, window, slice_ms;
    const ol_blacklist_t *bl;
    int64_t stream; /* latest at_ms of the facts applied (0: none yet) */
    int64_t base;   /* oldest slice kept */
    bool based;     /* base was set */
    ol_intern_t *sku_ids;
    ol_strtab_t *users, *reqs;
    sku_t *skus;
    size_t skus_cap;
    uint32_t *req_state, *req_next;
    size_t req_cap;
    uint32_t slice_head[SLICES];
    int64_t slice_no[SLICES]; /* the slice a ring position holds */
    uint32_t *user_head;
    size_t user_cap;
    counter_t *counters;
    size_t ncounters, counters_cap, live_counters, counters_upper; /* upper: used in the upper half */
    uint32_t free_counter;
    hold_t *holds;
    size_t nslots, holds_cap, holds_upper;
    uint32_t free_head;
    uint32_t *heap;
    size_t nheap, heap_cap;
};

static inline bool is_slot(uint32_t state) {
    return state < MAX_SLOTS;
}

static inline int64_t sub_sat(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b > 0 ? INT64_MIN : INT64_MAX;
    return r;
}

static inline int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

static inline bool empty(const char *s) {
    return !s || !*s;
}

/* sale.c: lookups (NULL or OL_STRTAB_NONE when absent) */
uint32_t ol_sale__find_str(const ol_strtab_t *t, const char *s);
/* Whether the string of id in t is s. */
bool ol_sale__str_is(const ol_strtab_t *t, uint32_t id, const char *s);
const sku_t *ol_sale__find_sku(const ol_sale_t *s, const char *sku);
const counter_t *ol_sale__find_counter(const ol_sale_t *s, const char *user_id, const char *sku);
/* The request id of a hold id ("h-" + request id), OL_STRTAB_NONE if none. */
uint32_t ol_sale__hold_req(const ol_sale_t *s, const char *hold_id);
/* The expiry heap's order of two hold slots. */
bool ol_sale__hold_before(const ol_sale_t *s, uint32_t a, uint32_t b);

/* sale.c: the building blocks of a state, for ol_sale_apply and for the
 * load of a snapshot (sale_snapshot.c). The id of sku (made when new); the
 * counter of (user, sku), made when new, with the user; a free hold slot;
 * req (a request id whose state is slot) opened as a hold of counter,
 * counted as held by the counter and the SKU; request_id remembered in
 * slice k (>= base) with its state. */
uint32_t ol_sale__sku_add(ol_sale_t *s, const char *sku);
uint32_t ol_sale__counter_add(ol_sale_t *s, const char *user_id, uint32_t sku);
uint32_t ol_sale__hold_slot(ol_sale_t *s);
void ol_sale__hold_open(ol_sale_t *s, uint32_t slot, uint32_t req, uint32_t counter, int32_t quantity,
                        int64_t expires_at);
uint32_t ol_sale__req_put(ol_sale_t *s, const char *request_id, size_t len, int64_t k, uint32_t state);

/* sale_decide.c: a policy as commands and facts carry it */
ol_err_t ol_sale__check_policy(const char *what, const char *sku, const ol_policy_t *p, char *errstr,
                               size_t errstr_size);
/* The levels of p sorted, the last limit of a level listed twice kept, into
 * out (room for p->n_levels); returns how many. */
size_t ol_sale__normalize_levels(const ol_policy_t *p, ol_level_limit_t *out);

#endif
