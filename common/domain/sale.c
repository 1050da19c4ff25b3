#include "common/domain/sale.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/intern.h"
#include "common/base/strtab.h"
#include "common/base/util.h"

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
 * restore rebuilds the same ids, slots, slices and heap. */

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

/* ---- names ----------------------------------------------------------------- */

#define NAME_STR(name, str) str,
static const char *const fact_names[] = {OL_FACT_KINDS(NAME_STR)};
const char *const ol_reject_names[] = {OL_REJECTS(NAME_STR)};
const char *const ol_release_names[] = {OL_RELEASES(NAME_STR)};
const char *const ol_hold_reject_names[] = {OL_HOLD_REJECTS(NAME_STR)};
const char *const ol_hold_op_names[] = {OL_HOLD_OPS(NAME_STR)};
const char *const ol_stock_cause_names[] = {OL_STOCK_CAUSES(NAME_STR)};
#undef NAME_STR

static const char *name_of(const char *const *names, int count, int v) {
    return v >= 0 && v < count ? names[v] : "?";
}

static int from_name(const char *const *names, int count, const char *name) {
    for (int i = 0; name && i < count; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

const char *ol_fact_kind_name(ol_fact_kind_t v) {
    return name_of(fact_names, OL_FACT__COUNT, (int)v);
}
const char *ol_reject_name(ol_reject_t v) {
    return name_of(ol_reject_names, OL_REJECT__COUNT, (int)v);
}
const char *ol_release_name(ol_release_t v) {
    return name_of(ol_release_names, OL_RELEASE__COUNT, (int)v);
}
const char *ol_hold_reject_name(ol_hold_reject_t v) {
    return name_of(ol_hold_reject_names, OL_HOLD_REJECT__COUNT, (int)v);
}
const char *ol_hold_op_name(ol_hold_op_t v) {
    return name_of(ol_hold_op_names, OL_HOLD_OP__COUNT, (int)v);
}
const char *ol_stock_cause_name(ol_stock_cause_t v) {
    return name_of(ol_stock_cause_names, OL_STOCK__COUNT, (int)v);
}
int ol_fact_kind_from_name(const char *name) {
    return from_name(fact_names, OL_FACT__COUNT, name);
}
int ol_reject_from_name(const char *name) {
    return from_name(ol_reject_names, OL_REJECT__COUNT, name);
}
int ol_release_from_name(const char *name) {
    return from_name(ol_release_names, OL_RELEASE__COUNT, name);
}
int ol_hold_reject_from_name(const char *name) {
    return from_name(ol_hold_reject_names, OL_HOLD_REJECT__COUNT, name);
}
int ol_hold_op_from_name(const char *name) {
    return from_name(ol_hold_op_names, OL_HOLD_OP__COUNT, name);
}
int ol_stock_cause_from_name(const char *name) {
    return from_name(ol_stock_cause_names, OL_STOCK__COUNT, name);
}

/* ---- life ------------------------------------------------------------------ */

ol_sale_t *ol_sale_new(int64_t hold_ttl_ms, int64_t window_ms, const ol_blacklist_t *bl) {
    OL_ASSERT(hold_ttl_ms > 0 && window_ms > 0 && window_ms <= INT64_MAX / 4);
    ol_sale_t *s = ol_xcalloc(1, sizeof(*s));
    s->ttl = hold_ttl_ms;
    s->window = window_ms;
    /* SLICES - 2 slices span the retention: the ring holds the slices from
     * the oldest kept to the one of the stream time */
    int64_t keep = window_ms + OL_SALE_AHEAD_MS;
    s->slice_ms = (keep + SLICES - 3) / (SLICES - 2);
    s->bl = bl;
    s->sku_ids = ol_intern_new();
    s->users = ol_strtab_new(1);
    s->reqs = ol_strtab_new(SLICES);
    for (int i = 0; i < SLICES; i++)
        s->slice_head[i] = NONE;
    s->free_head = NO_SLOT;
    s->free_counter = NONE;
    return s;
}

void ol_sale_destroy(ol_sale_t *s) {
    if (!s)
        return;
    for (uint32_t i = 0; i < ol_intern_count(s->sku_ids); i++)
        free(s->skus[i].levels);
    free(s->skus);
    free(s->req_state);
    free(s->req_next);
    free(s->user_head);
    free(s->counters);
    free(s->holds);
    free(s->heap);
    ol_intern_destroy(s->sku_ids);
    ol_strtab_destroy(s->users);
    ol_strtab_destroy(s->reqs);
    free(s);
}

/* p with room for need elements of size elem (capacity *cap, doubled). */
static void *reserve(void *p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    *cap = n;
    return ol_xrealloc(p, n * elem);
}

/* An array of *cap elements of which need are used, cut down when it is
 * more than twice as large (at least 64 kept). */
static void *fit(void *p, size_t *cap, size_t need, size_t elem) {
    if (*cap <= 64 || need * 2 > *cap)
        return p;
    size_t n = 64;
    while (n < need)
        n *= 2;
    *cap = n;
    return ol_xrealloc(p, n * elem);
}

/* ---- lookups --------------------------------------------------------------- */

static uint32_t find_id(const ol_intern_t *in, const char *s) {
    return ol_intern_find(in, s, strlen(s));
}

static uint32_t find_str(const ol_strtab_t *t, const char *s) {
    return ol_strtab_find(t, s, strlen(s));
}

/* Whether the string of id in t is s. */
static bool str_is(const ol_strtab_t *t, uint32_t id, const char *s) {
    size_t len;
    const char *p = ol_strtab_str(t, id, &len);
    return strlen(s) == len && !memcmp(p, s, len);
}

static const sku_t *find_sku(const ol_sale_t *s, const char *sku) {
    uint32_t id = find_id(s->sku_ids, sku);
    return id == OL_INTERN_NONE ? NULL : &s->skus[id];
}

static uint32_t sku_add(ol_sale_t *s, const char *sku) {
    uint32_t n = ol_intern_count(s->sku_ids);
    uint32_t id = ol_intern_add(s->sku_ids, sku, strlen(sku));
    if (id == n) {
        s->skus = reserve(s->skus, &s->skus_cap, (size_t)n + 1, sizeof(*s->skus));
        s->skus[id] = (sku_t){.version = -1, .status = SKU_UNLISTED};
    }
    return id;
}

/* ---- counters -------------------------------------------------------------- */

static uint32_t counter_of(const ol_sale_t *s, uint32_t user, uint32_t sku) {
    uint32_t c = s->user_head[user];
    while (c != NONE && s->counters[c].sku != sku)
        c = s->counters[c].next;
    return c;
}

static const counter_t *find_counter(const ol_sale_t *s, const char *user_id, const char *sku) {
    uint32_t user = find_str(s->users, user_id), sk = find_id(s->sku_ids, sku);
    if (user == OL_STRTAB_NONE || sk == OL_INTERN_NONE)
        return NULL;
    uint32_t c = counter_of(s, user, sk);
    return c == NONE ? NULL : &s->counters[c];
}

static uint32_t user_add(ol_sale_t *s, const char *user_id) {
    uint32_t user = ol_strtab_add(s->users, user_id, strlen(user_id), 0, NULL);
    size_t old = s->user_cap;
    s->user_head = reserve(s->user_head, &s->user_cap, (size_t)ol_strtab_limit(s->users), sizeof(*s->user_head));
    if (s->user_cap > old) /* NONE: no counter */
        memset(s->user_head + old, 0xff, (s->user_cap - old) * sizeof(*s->user_head));
    return user;
}

/* The counter of (user, sku), made when new. */
static uint32_t counter_add(ol_sale_t *s, uint32_t user, uint32_t sku) {
    uint32_t c = counter_of(s, user, sku);
    if (c != NONE)
        return c;
    OL_ASSERT(s->live_counters < UINT32_MAX - 2);
    if (s->free_counter != NONE) {
        c = s->free_counter;
        s->free_counter = s->counters[c].next;
    } else {
        size_t cap = s->counters_cap;
        s->counters = reserve(s->counters, &s->counters_cap, s->ncounters + 1, sizeof(*s->counters));
        if (s->counters_cap != cap) /* doubled: nothing is in the new upper half yet */
            s->counters_upper = 0;
        c = (uint32_t)s->ncounters++;
    }
    s->counters[c] = (counter_t){.user = user, .sku = sku, .next = s->user_head[user]};
    s->user_head[user] = c;
    s->live_counters++;
    s->counters_upper += c >= s->counters_cap / 2;
    return c;
}

/* Once the upper half of the array is unused and 3/4 of it free: halved,
 * the free slots listed lowest first (taken first). */
static void counters_shrink(ol_sale_t *s) {
    while (s->counters_cap > 64 && !s->counters_upper && s->live_counters * 4 < s->counters_cap) {
        size_t cap = s->counters_cap / 2;
        s->ncounters = s->ncounters < cap ? s->ncounters : cap;
        s->free_counter = NONE;
        for (size_t c = s->ncounters; c-- > 0;)
            if (s->counters[c].user == NONE) {
                s->counters[c].next = s->free_counter;
                s->free_counter = (uint32_t)c;
            }
        s->counters_cap = cap;
        s->counters = ol_xrealloc(s->counters, cap * sizeof(*s->counters));
        for (size_t c = cap / 2; c < s->ncounters; c++)
            s->counters_upper += s->counters[c].user != NONE;
    }
}

/* Removes counter c when it counts nothing any more, and its user with
 * the user's last counter. */
static void counter_settle(ol_sale_t *s, uint32_t c) {
    counter_t *k = &s->counters[c];
    if (k->held || k->bought)
        return;
    uint32_t user = k->user, *link = &s->user_head[user];
    while (*link != c)
        link = &s->counters[*link].next;
    *link = k->next;
    *k = (counter_t){.user = NONE, .next = s->free_counter};
    s->free_counter = c;
    s->counters_upper -= c >= s->counters_cap / 2;
    if (--s->live_counters == 0) { /* none left: give the array back */
        free(s->counters);
        s->counters = NULL;
        s->ncounters = s->counters_cap = s->counters_upper = 0;
        s->free_counter = NONE;
    } else {
        counters_shrink(s);
    }
    if (s->user_head[user] == NONE) {
        ol_strtab_remove(s->users, user);
        if (!ol_strtab_count(s->users)) {
            free(s->user_head);
            s->user_head = NULL;
            s->user_cap = 0;
        } else {
            s->user_head = fit(s->user_head, &s->user_cap, ol_strtab_limit(s->users), sizeof(*s->user_head));
        }
    }
}

/* ---- request ids and their slices ------------------------------------------ */

/* The request id of a hold id ("h-" + request id), OL_STRTAB_NONE if none. */
static uint32_t hold_req(const ol_sale_t *s, const char *hold_id) {
    if (strncmp(hold_id, "h-", 2))
        return OL_STRTAB_NONE;
    return find_str(s->reqs, hold_id + 2);
}

static bool is_slot(uint32_t state) {
    return state < MAX_SLOTS;
}

static int64_t sub_sat(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b > 0 ? INT64_MIN : INT64_MAX;
    return r;
}

static int64_t floor_div(int64_t a, int64_t b) {
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* How long a decided request id is kept past its time. */
static int64_t retention(const ol_sale_t *s) {
    return s->window + OL_SALE_AHEAD_MS;
}

/* Chains req into slice k (the ring holds it) with its string. */
static void slice_put(ol_sale_t *s, uint32_t req, int64_t k) {
    int pos = (int)(k % SLICES);
    OL_ASSERT(s->slice_head[pos] == NONE || s->slice_no[pos] == k);
    s->slice_no[pos] = k;
    s->req_next[req] = s->slice_head[pos];
    s->slice_head[pos] = req;
    ol_strtab_move(s->reqs, req, (unsigned)pos);
}

/* The stream time moves to at_ms if later: the slices it leaves past the
 * retention are dropped, their ids forgotten but for open holds', which
 * move to the slice of the stream time. */
static void advance(ol_sale_t *s, int64_t at_ms) {
    if (at_ms <= s->stream && s->based)
        return;
    if (at_ms > s->stream)
        s->stream = at_ms;
    int64_t base = floor_div(sub_sat(s->stream, retention(s)), s->slice_ms);
    if (!s->based) {
        s->base = base;
        s->based = true;
        return;
    }
    if (base <= s->base)
        return;
    /* detach the dropped slices first: the slice of the stream time may
     * take a ring position they held */
    uint32_t dropped = NONE;
    for (int pos = 0; pos < SLICES; pos++) {
        if (s->slice_head[pos] == NONE || s->slice_no[pos] >= base)
            continue;
        uint32_t last = s->slice_head[pos];
        while (s->req_next[last] != NONE)
            last = s->req_next[last];
        s->req_next[last] = dropped;
        dropped = s->slice_head[pos];
        s->slice_head[pos] = NONE;
    }
    s->base = base;
    int64_t newest = floor_div(s->stream, s->slice_ms);
    for (uint32_t req = dropped, next; req != NONE; req = next) {
        next = s->req_next[req];
        if (is_slot(s->req_state[req]))
            slice_put(s, req, newest);
        else
            ol_strtab_remove(s->reqs, req);
    }
    if (!ol_strtab_count(s->reqs)) { /* none left: give the arrays back */
        free(s->req_state);
        free(s->req_next);
        s->req_state = s->req_next = NULL;
        s->req_cap = 0;
    } else {
        size_t cap = s->req_cap, need = ol_strtab_limit(s->reqs);
        s->req_state = fit(s->req_state, &cap, need, sizeof(*s->req_state));
        s->req_next = fit(s->req_next, &s->req_cap, need, sizeof(*s->req_next));
    }
}

/* Remembers a decided request id (decided at at_ms) with its state. */
static uint32_t req_add(ol_sale_t *s, const char *request_id, int64_t at_ms, uint32_t state) {
    /* a fact older than the retention (only a log that is not ours has
     * one) still gets a slice: the oldest kept */
    int64_t k = floor_div(at_ms, s->slice_ms);
    k = k < s->base ? s->base : k;
    uint32_t req = ol_strtab_add(s->reqs, request_id, strlen(request_id), (unsigned)(k % SLICES), NULL);
    size_t need = ol_strtab_limit(s->reqs);
    if (need > s->req_cap) {
        size_t cap = s->req_cap;
        s->req_state = reserve(s->req_state, &cap, need, sizeof(*s->req_state));
        s->req_next = ol_xrealloc(s->req_next, cap * sizeof(*s->req_next));
        s->req_cap = cap;
    }
    s->req_state[req] = state;
    slice_put(s, req, k);
    return req;
}

/* ---- the expiry heap ------------------------------------------------------- */

static bool hold_before(const ol_sale_t *s, uint32_t a, uint32_t b) {
    const hold_t *x = &s->holds[a], *y = &s->holds[b];
    if (x->expires_at != y->expires_at)
        return x->expires_at < y->expires_at;
    size_t la, lb;
    const char *ra = ol_strtab_str(s->reqs, x->req, &la), *rb = ol_strtab_str(s->reqs, y->req, &lb);
    int c = memcmp(ra, rb, la < lb ? la : lb);
    return c < 0 || (c == 0 && la < lb);
}

static void heap_set(ol_sale_t *s, size_t pos, uint32_t slot) {
    s->heap[pos] = slot;
    s->holds[slot].heap_pos = (uint32_t)pos;
}

static void sift_up(ol_sale_t *s, size_t pos) {
    uint32_t slot = s->heap[pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!hold_before(s, slot, s->heap[parent]))
            break;
        heap_set(s, pos, s->heap[parent]);
        pos = parent;
    }
    heap_set(s, pos, slot);
}

static void sift_down(ol_sale_t *s, size_t pos) {
    uint32_t slot = s->heap[pos];
    for (;;) {
        size_t child = 2 * pos + 1;
        if (child >= s->nheap)
            break;
        if (child + 1 < s->nheap && hold_before(s, s->heap[child + 1], s->heap[child]))
            child++;
        if (!hold_before(s, s->heap[child], slot))
            break;
        heap_set(s, pos, s->heap[child]);
        pos = child;
    }
    heap_set(s, pos, slot);
}

static void heap_push(ol_sale_t *s, uint32_t slot) {
    s->heap = reserve(s->heap, &s->heap_cap, s->nheap + 1, sizeof(*s->heap));
    s->heap[s->nheap++] = slot;
    sift_up(s, s->nheap - 1);
}

static void heap_remove(ol_sale_t *s, size_t pos) {
    uint32_t last = s->heap[--s->nheap];
    if (pos == s->nheap)
        return;
    heap_set(s, pos, last);
    if (pos > 0 && hold_before(s, last, s->heap[(pos - 1) / 2]))
        sift_up(s, pos);
    else
        sift_down(s, pos);
}

/* ---- deciding -------------------------------------------------------------- */

static bool empty(const char *s) {
    return !s || !*s;
}

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

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
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
    if (find_str(s->reqs, cmd->request_id) != OL_STRTAB_NONE)
        return 0; /* decided already: a retry gets no second decision */

    if (s->bl && ((*cmd->client_ip && ol_blacklist_has(s->bl, OL_SUBJECT_IP, cmd->client_ip, cmd->at_ms)) ||
                  ol_blacklist_has(s->bl, OL_SUBJECT_USER, cmd->user_id, cmd->at_ms)))
        return reject_buy(cmd, OL_REJECT_BLACKLISTED, OL_SALE_MSG_BLACKLISTED, out);

    const sku_t *k = find_sku(s, cmd->sku);
    if (k && k->has_policy && cmd->user_level < k->min_level)
        return reject_buy(cmd, OL_REJECT_LEVEL, OL_SALE_MSG_NOT_ALLOWED, out);
    int32_t limit = level_limit(k, cmd->user_level);
    const counter_t *c = find_counter(s, cmd->user_id, cmd->sku);
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
    uint32_t req = hold_req(s, cmd->hold_id);
    uint32_t state = req == OL_STRTAB_NONE ? REQ_REJECTED : s->req_state[req];
    const hold_t *h = is_slot(state) ? &s->holds[state] : NULL;
    const counter_t *c = h ? &s->counters[h->counter] : NULL;
    if (state == REQ_REJECTED || (c && strcmp(ol_intern_str(s->sku_ids, c->sku, NULL), cmd->sku)))
        why = OL_HOLD_REJECT_UNKNOWN_HOLD;
    else if (state == REQ_RELEASED)
        why = OL_HOLD_REJECT_RELEASED;
    else if (state == REQ_CONVERTED)
        why = OL_HOLD_REJECT_CONVERTED;
    else if (!str_is(s->users, c->user, cmd->user_id))
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
    const sku_t *k = find_sku(s, cmd->sku);
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
    const sku_t *k = find_sku(s, cmd->sku);
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
    const sku_t *k = find_sku(s, cmd->sku);
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

static ol_err_t check_policy(const char *what, const char *sku, const ol_policy_t *p, char *errstr,
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
static size_t normalize_levels(const ol_policy_t *p, ol_level_limit_t *out) {
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
    if (check_policy("PurchasePolicySet", cmd->sku, &cmd->policy, errstr, errstr_size))
        return -1;
    ol_level_limit_t *levels = ol_arena_alloc(arena, cmd->policy.n_levels * sizeof(*levels));
    *out = (ol_fact_t){.kind = OL_FACT_POLICY_CHANGED, .sku = cmd->sku, .at_ms = cmd->at_ms};
    out->policy = cmd->policy;
    out->policy.levels = levels;
    out->policy.n_levels = normalize_levels(&cmd->policy, levels);
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
#define CAND_BEFORE(i, j) hold_before(s, s->heap[cand[i]], s->heap[cand[j]])
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

/* ---- applying -------------------------------------------------------------- */

static ol_err_t invalid(char *errstr, size_t errstr_size, const ol_fact_t *f, const char *why) {
    return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "could not apply %s %s: %s", ol_fact_kind_name(f->kind),
                   f->hold_id      ? f->hold_id
                   : f->request_id ? f->request_id
                   : f->sku        ? f->sku
                                   : "",
                   why);
}

static ol_err_t apply_accepted(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if (empty(f->request_id) || empty(f->user_id) || empty(f->sku) || empty(f->hold_id) || f->quantity < 1)
        return invalid(errstr, errstr_size, f, "request_id, hold_id, user_id, sku and quantity must be set");
    if (strncmp(f->hold_id, "h-", 2) || strcmp(f->hold_id + 2, f->request_id))
        return invalid(errstr, errstr_size, f, "hold id is not \"h-\" + request id");
    if (find_str(s->reqs, f->request_id) != OL_STRTAB_NONE)
        return invalid(errstr, errstr_size, f, "request already decided");
    const sku_t *k = find_sku(s, f->sku);
    if (!k || k->total - k->held - k->sold < f->quantity)
        return invalid(errstr, errstr_size, f, "not enough stock available");
    const counter_t *had = find_counter(s, f->user_id, f->sku);
    if (had && (int64_t)had->held + had->bought > INT32_MAX - f->quantity)
        return invalid(errstr, errstr_size, f, "the user's units of the sku would pass 2147483647");
    if (s->free_head == NO_SLOT && s->nslots >= MAX_SLOTS)
        return invalid(errstr, errstr_size, f, "too many open holds");

    advance(s, f->at_ms);
    uint32_t sku = sku_add(s, f->sku);
    uint32_t user = user_add(s, f->user_id);
    uint32_t counter = counter_add(s, user, sku);
    uint32_t slot;
    if (s->free_head != NO_SLOT) {
        slot = s->free_head;
        s->free_head = s->holds[slot].heap_pos;
    } else {
        size_t cap = s->holds_cap;
        s->holds = reserve(s->holds, &s->holds_cap, s->nslots + 1, sizeof(*s->holds));
        if (s->holds_cap != cap) /* doubled: nothing is in the new upper half yet */
            s->holds_upper = 0;
        slot = (uint32_t)s->nslots++;
    }
    s->holds_upper += slot >= s->holds_cap / 2;
    uint32_t req = req_add(s, f->request_id, f->at_ms, slot);
    s->holds[slot] = (hold_t){.expires_at = f->expires_at, .req = req, .counter = counter, .quantity = f->quantity};
    heap_push(s, slot);
    s->counters[counter].held += f->quantity;
    s->skus[sku].held += f->quantity;
    return OL_ERR_OK;
}

static ol_err_t apply_rejected(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if (empty(f->request_id))
        return invalid(errstr, errstr_size, f, "request_id must be set");
    if (f->reject == OL_REJECT_TOO_OLD)
        return OL_ERR_OK; /* not a decision: nothing to remember */
    if (find_str(s->reqs, f->request_id) != OL_STRTAB_NONE)
        return invalid(errstr, errstr_size, f, "request already decided");
    advance(s, f->at_ms);
    /* a decision already older than the retention is not kept */
    if (f->at_ms >= sub_sat(s->stream, retention(s)))
        req_add(s, f->request_id, f->at_ms, REQ_REJECTED);
    return OL_ERR_OK;
}

/* As counters_shrink, for the hold slots (the heap is dense: cut to fit). */
static void holds_shrink(ol_sale_t *s) {
    s->heap = fit(s->heap, &s->heap_cap, s->nheap, sizeof(*s->heap));
    while (s->holds_cap > 64 && !s->holds_upper && s->nheap * 4 < s->holds_cap) {
        size_t cap = s->holds_cap / 2;
        s->nslots = s->nslots < cap ? s->nslots : cap;
        s->free_head = NO_SLOT;
        for (size_t i = s->nslots; i-- > 0;)
            if (s->holds[i].req == NONE) {
                s->holds[i].heap_pos = s->free_head;
                s->free_head = (uint32_t)i;
            }
        s->holds_cap = cap;
        s->holds = ol_xrealloc(s->holds, cap * sizeof(*s->holds));
        for (size_t i = cap / 2; i < s->nslots; i++)
            s->holds_upper += s->holds[i].req != NONE;
    }
}

static ol_err_t apply_end(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if (empty(f->hold_id) || empty(f->user_id) || empty(f->sku))
        return invalid(errstr, errstr_size, f, "hold_id, user_id and sku must be set");
    uint32_t req = hold_req(s, f->hold_id);
    uint32_t state = req == OL_STRTAB_NONE ? REQ_REJECTED : s->req_state[req];
    if (!is_slot(state))
        return invalid(errstr, errstr_size, f, state == REQ_REJECTED ? "unknown hold" : "hold already ended");
    uint32_t slot = state;
    hold_t *h = &s->holds[slot];
    counter_t *c = &s->counters[h->counter];
    if (!str_is(s->users, c->user, f->user_id) || strcmp(ol_intern_str(s->sku_ids, c->sku, NULL), f->sku) ||
        h->quantity != f->quantity)
        return invalid(errstr, errstr_size, f, "user, sku or quantity differ from the hold's");

    bool converted = f->kind == OL_FACT_HOLD_CONVERTED;
    sku_t *k = &s->skus[c->sku];
    uint32_t counter = h->counter;
    c->held -= h->quantity;
    k->held -= h->quantity;
    if (converted) {
        c->bought += h->quantity;
        k->sold += h->quantity;
    }
    heap_remove(s, h->heap_pos);
    h->heap_pos = s->free_head;
    h->req = NONE; /* free */
    s->free_head = slot;
    s->holds_upper -= slot >= s->holds_cap / 2;
    s->req_state[req] = converted ? REQ_CONVERTED : REQ_RELEASED;
    if (!s->nheap) { /* no open hold: give the arrays back */
        free(s->holds);
        free(s->heap);
        s->holds = NULL;
        s->heap = NULL;
        s->nslots = s->holds_cap = s->heap_cap = s->holds_upper = 0;
        s->free_head = NO_SLOT;
    } else {
        holds_shrink(s);
    }
    counter_settle(s, counter);
    advance(s, f->at_ms);
    return OL_ERR_OK;
}

static ol_err_t apply_stock(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if (empty(f->sku) || (unsigned)f->cause >= OL_STOCK__COUNT)
        return invalid(errstr, errstr_size, f, "sku and cause must be set");
    const sku_t *old = find_sku(s, f->sku);
    if (f->total < 0 || (old && f->total < old->held + old->sold))
        return invalid(errstr, errstr_size, f, "total under the units held and sold");
    uint32_t id = sku_add(s, f->sku); /* may move skus */
    sku_t *k = &s->skus[id];
    k->total = f->total;
    k->version = max64(k->version, f->version);
    if (f->cause == OL_STOCK_SYNCED)
        k->status = SKU_ON_SALE;
    else if (f->cause == OL_STOCK_REMOVED)
        k->status = SKU_REMOVED;
    advance(s, f->at_ms);
    return OL_ERR_OK;
}

static ol_err_t apply_policy(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if (check_policy("PolicyChanged", f->sku, &f->policy, errstr, errstr_size))
        return OL_ERR_INVALID;
    ol_level_limit_t *levels = f->policy.n_levels ? ol_xmalloc(f->policy.n_levels * sizeof(*levels)) : NULL;
    size_t n = normalize_levels(&f->policy, levels);
    uint32_t id = sku_add(s, f->sku); /* may move skus */
    sku_t *k = &s->skus[id];
    free(k->levels);
    k->levels = levels;
    k->n_levels = (uint32_t)n;
    k->min_level = f->policy.min_level;
    k->default_limit = f->policy.default_limit;
    k->has_policy = true;
    advance(s, f->at_ms);
    return OL_ERR_OK;
}

ol_err_t ol_sale_apply(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    switch (f->kind) {
    case OL_FACT_BUY_ACCEPTED:
        return apply_accepted(s, f, errstr, errstr_size);
    case OL_FACT_BUY_REJECTED:
        return apply_rejected(s, f, errstr, errstr_size);
    case OL_FACT_HOLD_RELEASED:
    case OL_FACT_HOLD_CONVERTED:
        return apply_end(s, f, errstr, errstr_size);
    case OL_FACT_STOCK_CHANGED:
        return apply_stock(s, f, errstr, errstr_size);
    case OL_FACT_POLICY_CHANGED:
        return apply_policy(s, f, errstr, errstr_size);
    case OL_FACT_CHECKOUT_REJECTED:
        return OL_ERR_OK;
    default:
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "could not apply fact: unknown kind %d", (int)f->kind);
    }
}

/* ---- reading --------------------------------------------------------------- */

static void fill_stock(const sku_t *k, ol_stock_t *out) {
    *out = (ol_stock_t){.total = k->total,
                        .held = k->held,
                        .sold = k->sold,
                        .available = k->total - k->held - k->sold,
                        .version = k->version,
                        .on_sale = k->status == SKU_ON_SALE,
                        .removed = k->status == SKU_REMOVED};
}

bool ol_sale_stock(const ol_sale_t *s, const char *sku, ol_stock_t *out) {
    const sku_t *k = find_sku(s, sku);
    if (!k) {
        *out = (ol_stock_t){.version = -1};
        return false;
    }
    fill_stock(k, out);
    return true;
}

ol_units_t ol_sale_units(const ol_sale_t *s, const char *user_id, const char *sku) {
    const counter_t *c = find_counter(s, user_id, sku);
    return c ? (ol_units_t){c->held, c->bought} : (ol_units_t){0, 0};
}

ol_hold_state_t ol_sale_hold(const ol_sale_t *s, const char *hold_id, ol_hold_info_t *out) {
    uint32_t req = hold_req(s, hold_id);
    uint32_t state = req == OL_STRTAB_NONE ? REQ_REJECTED : s->req_state[req];
    switch (state) {
    case REQ_REJECTED:
        return OL_HOLD_NONE;
    case REQ_RELEASED:
        return OL_HOLD_RELEASED;
    case REQ_CONVERTED:
        return OL_HOLD_CONVERTED;
    default:
        break;
    }
    if (out) {
        const hold_t *h = &s->holds[state];
        const counter_t *c = &s->counters[h->counter];
        *out = (ol_hold_info_t){.user_id = ol_strtab_str(s->users, c->user, NULL),
                                .sku = ol_intern_str(s->sku_ids, c->sku, NULL),
                                .quantity = h->quantity,
                                .expires_at = h->expires_at};
    }
    return OL_HOLD_OPEN;
}

bool ol_sale_decided(const ol_sale_t *s, const char *request_id) {
    return find_str(s->reqs, request_id) != OL_STRTAB_NONE;
}

size_t ol_sale_remembered(const ol_sale_t *s) {
    return ol_strtab_count(s->reqs);
}

int64_t ol_sale_stream_time(const ol_sale_t *s) {
    return s->stream;
}

bool ol_sale_policy(const ol_sale_t *s, const char *sku, ol_policy_t *out) {
    const sku_t *k = find_sku(s, sku);
    if (!k || !k->has_policy)
        return false;
    *out = (ol_policy_t){k->min_level, k->default_limit, k->n_levels, k->levels};
    return true;
}

size_t ol_sale_open_holds(const ol_sale_t *s) {
    return s->nheap;
}

int64_t ol_sale_next_expiry(const ol_sale_t *s) {
    return s->nheap ? s->holds[s->heap[0]].expires_at : INT64_MAX;
}

void ol_sale_foreach_stock(const ol_sale_t *s, void (*fn)(void *opaque, const char *sku, const ol_stock_t *stock),
                           void *opaque) {
    for (uint32_t i = 0; i < ol_intern_count(s->sku_ids); i++) {
        ol_stock_t st;
        fill_stock(&s->skus[i], &st);
        fn(opaque, ol_intern_str(s->sku_ids, i, NULL), &st);
    }
}

void ol_sale_foreach_units(const ol_sale_t *s,
                           void (*fn)(void *opaque, const char *user_id, const char *sku, ol_units_t units),
                           void *opaque) {
    for (size_t i = 0; i < s->ncounters; i++) {
        const counter_t *c = &s->counters[i];
        if (c->user == NONE)
            continue;
        fn(opaque, ol_strtab_str(s->users, c->user, NULL), ol_intern_str(s->sku_ids, c->sku, NULL),
           (ol_units_t){c->held, c->bought});
    }
}

size_t ol_sale_bytes(const ol_sale_t *s) {
    size_t n = sizeof(*s) + ol_intern_bytes(s->sku_ids) + ol_strtab_bytes(s->users) + ol_strtab_bytes(s->reqs);
    n += s->skus_cap * sizeof(*s->skus) + s->req_cap * (sizeof(*s->req_state) + sizeof(*s->req_next));
    n += s->user_cap * sizeof(*s->user_head) + s->counters_cap * sizeof(*s->counters);
    n += s->holds_cap * sizeof(*s->holds) + s->heap_cap * sizeof(*s->heap);
    for (uint32_t i = 0; i < ol_intern_count(s->sku_ids); i++)
        n += s->skus[i].n_levels * sizeof(ol_level_limit_t);
    return n;
}
