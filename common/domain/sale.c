/* The rules engine's state (the layout: common/domain/sale_state.h), and
 * ol_sale_apply, the only way it changes. */
#include "common/domain/sale_state.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

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

/* The two lookups of a list of names: <prefix>_name and <prefix>_from_name
 * (declared in sale.h). */
#define NAME_LOOKUPS(prefix, type, names, count) \
    const char *prefix##_name(type v) {          \
        return name_of(names, count, (int)v);    \
    }                                            \
    int prefix##_from_name(const char *name) {   \
        return from_name(names, count, name);    \
    }
NAME_LOOKUPS(ol_fact_kind, ol_fact_kind_t, fact_names, OL_FACT__COUNT)
NAME_LOOKUPS(ol_reject, ol_reject_t, ol_reject_names, OL_REJECT__COUNT)
NAME_LOOKUPS(ol_release, ol_release_t, ol_release_names, OL_RELEASE__COUNT)
NAME_LOOKUPS(ol_hold_reject, ol_hold_reject_t, ol_hold_reject_names, OL_HOLD_REJECT__COUNT)
NAME_LOOKUPS(ol_hold_op, ol_hold_op_t, ol_hold_op_names, OL_HOLD_OP__COUNT)
NAME_LOOKUPS(ol_stock_cause, ol_stock_cause_t, ol_stock_cause_names, OL_STOCK__COUNT)
#undef NAME_LOOKUPS

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

uint32_t ol_sale__find_str(const ol_strtab_t *t, const char *s) {
    return ol_strtab_find(t, s, strlen(s));
}

/* Whether the string of id in t is s. */
bool ol_sale__str_is(const ol_strtab_t *t, uint32_t id, const char *s) {
    size_t len;
    const char *p = ol_strtab_str(t, id, &len);
    return strlen(s) == len && !memcmp(p, s, len);
}

const sku_t *ol_sale__find_sku(const ol_sale_t *s, const char *sku) {
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

const counter_t *ol_sale__find_counter(const ol_sale_t *s, const char *user_id, const char *sku) {
    uint32_t user = ol_sale__find_str(s->users, user_id), sk = find_id(s->sku_ids, sku);
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

/* An array of slots that grows and halves (counters, hold slots): n of cap
 * in use, upper of them in the upper half; a free slot has its owner field
 * (a uint32_t at owner_off) NONE and its link (at link_off) to the next
 * free, from free_head. */
typedef struct slots_s {
    size_t *n, *cap, *upper;
    uint32_t *free_head;
    size_t size, owner_off, link_off;
} slots_t;

static uint32_t *slot_field(const slots_t *sl, void *p, size_t i, size_t off) {
    return (uint32_t *)((char *)p + i * sl->size + off);
}

/* Once the upper half of the array p is unused and 3/4 of it free (live
 * slots in use): halved, the free slots listed lowest first (taken first).
 * The array, moved. */
static void *slots_shrink(const slots_t *sl, void *p, size_t live) {
    while (*sl->cap > 64 && !*sl->upper && live * 4 < *sl->cap) {
        size_t cap = *sl->cap / 2;
        *sl->n = *sl->n < cap ? *sl->n : cap;
        *sl->free_head = NONE;
        for (size_t i = *sl->n; i-- > 0;)
            if (*slot_field(sl, p, i, sl->owner_off) == NONE) {
                *slot_field(sl, p, i, sl->link_off) = *sl->free_head;
                *sl->free_head = (uint32_t)i;
            }
        *sl->cap = cap;
        p = ol_xrealloc(p, cap * sl->size);
        for (size_t i = cap / 2; i < *sl->n; i++)
            *sl->upper += *slot_field(sl, p, i, sl->owner_off) != NONE;
    }
    return p;
}

/* A slot to use, in *slot: the first free one, else a new one at the end.
 * The array, moved when it grew. */
static void *slots_take(const slots_t *sl, void *p, uint32_t *slot) {
    if (*sl->free_head != NONE) {
        *slot = *sl->free_head;
        *sl->free_head = *slot_field(sl, p, *slot, sl->link_off);
    } else {
        size_t cap = *sl->cap;
        p = reserve(p, sl->cap, *sl->n + 1, sl->size);
        if (*sl->cap != cap) /* doubled: nothing is in the new upper half yet */
            *sl->upper = 0;
        *slot = (uint32_t)(*sl->n)++;
    }
    *sl->upper += *slot >= *sl->cap / 2;
    return p;
}

static slots_t counter_slots(ol_sale_t *s) {
    return (slots_t){&s->ncounters,     &s->counters_cap,          &s->counters_upper,       &s->free_counter,
                     sizeof(counter_t), offsetof(counter_t, user), offsetof(counter_t, next)};
}

/* free: req NONE, linked by heap_pos (NO_SLOT at the end) */
static slots_t hold_slots(ol_sale_t *s) {
    _Static_assert(NO_SLOT == NONE, "a free list ends the same in both slot arrays");
    return (slots_t){&s->nslots,     &s->holds_cap,         &s->holds_upper,           &s->free_head,
                     sizeof(hold_t), offsetof(hold_t, req), offsetof(hold_t, heap_pos)};
}

/* The counter of (user, sku), made when new. */
static uint32_t counter_add(ol_sale_t *s, uint32_t user, uint32_t sku) {
    uint32_t c = counter_of(s, user, sku);
    if (c != NONE)
        return c;
    OL_ASSERT(s->live_counters < UINT32_MAX - 2);
    const slots_t sl = counter_slots(s);
    s->counters = slots_take(&sl, s->counters, &c);
    s->counters[c] = (counter_t){.user = user, .sku = sku, .next = s->user_head[user]};
    s->user_head[user] = c;
    s->live_counters++;
    return c;
}

static void counters_shrink(ol_sale_t *s) {
    const slots_t sl = counter_slots(s);
    s->counters = slots_shrink(&sl, s->counters, s->live_counters);
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
uint32_t ol_sale__hold_req(const ol_sale_t *s, const char *hold_id) {
    if (strncmp(hold_id, "h-", 2))
        return OL_STRTAB_NONE;
    return ol_sale__find_str(s->reqs, hold_id + 2);
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

/* Remembers a request id (len bytes) in slice k (>= base) with its state. */
uint32_t ol_sale__req_put(ol_sale_t *s, const char *request_id, size_t len, int64_t k, uint32_t state) {
    uint32_t req = ol_strtab_add(s->reqs, request_id, len, (unsigned)(k % SLICES), NULL);
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

/* Remembers a decided request id (decided at at_ms) with its state. */
static uint32_t req_add(ol_sale_t *s, const char *request_id, int64_t at_ms, uint32_t state) {
    /* a fact older than the retention (only a log that is not ours has
     * one) still gets a slice: the oldest kept */
    int64_t k = floor_div(at_ms, s->slice_ms);
    k = k < s->base ? s->base : k;
    return ol_sale__req_put(s, request_id, strlen(request_id), k, state);
}

/* ---- the expiry heap ------------------------------------------------------- */

bool ol_sale__hold_before(const ol_sale_t *s, uint32_t a, uint32_t b) {
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
        if (!ol_sale__hold_before(s, slot, s->heap[parent]))
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
        if (child + 1 < s->nheap && ol_sale__hold_before(s, s->heap[child + 1], s->heap[child]))
            child++;
        if (!ol_sale__hold_before(s, s->heap[child], slot))
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
    if (pos > 0 && ol_sale__hold_before(s, last, s->heap[(pos - 1) / 2]))
        sift_up(s, pos);
    else
        sift_down(s, pos);
}

/* ---- building blocks of a state (apply, and a snapshot's load) -------------- */

uint32_t ol_sale__sku_add(ol_sale_t *s, const char *sku) {
    return sku_add(s, sku);
}

uint32_t ol_sale__counter_add(ol_sale_t *s, const char *user_id, uint32_t sku) {
    return counter_add(s, user_add(s, user_id), sku);
}

uint32_t ol_sale__hold_slot(ol_sale_t *s) {
    uint32_t slot;
    const slots_t sl = hold_slots(s);
    s->holds = slots_take(&sl, s->holds, &slot);
    return slot;
}

void ol_sale__hold_open(ol_sale_t *s, uint32_t slot, uint32_t req, uint32_t counter, int32_t quantity,
                        int64_t expires_at) {
    s->holds[slot] = (hold_t){.expires_at = expires_at, .req = req, .counter = counter, .quantity = quantity};
    heap_push(s, slot);
    s->counters[counter].held += quantity;
    s->skus[s->counters[counter].sku].held += quantity;
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
    if (ol_sale__find_str(s->reqs, f->request_id) != OL_STRTAB_NONE)
        return invalid(errstr, errstr_size, f, "request already decided");
    const sku_t *k = ol_sale__find_sku(s, f->sku);
    if (!k || k->total - k->held - k->sold < f->quantity)
        return invalid(errstr, errstr_size, f, "not enough stock available");
    const counter_t *had = ol_sale__find_counter(s, f->user_id, f->sku);
    if (had && (int64_t)had->held + had->bought > INT32_MAX - f->quantity)
        return invalid(errstr, errstr_size, f, "the user's units of the sku would pass 2147483647");
    if (s->free_head == NO_SLOT && s->nslots >= MAX_SLOTS)
        return invalid(errstr, errstr_size, f, "too many open holds");

    advance(s, f->at_ms);
    uint32_t counter = ol_sale__counter_add(s, f->user_id, sku_add(s, f->sku));
    uint32_t slot = ol_sale__hold_slot(s);
    uint32_t req = req_add(s, f->request_id, f->at_ms, slot);
    ol_sale__hold_open(s, slot, req, counter, f->quantity, f->expires_at);
    return OL_ERR_OK;
}

static ol_err_t apply_rejected(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if (empty(f->request_id))
        return invalid(errstr, errstr_size, f, "request_id must be set");
    if (f->reject == OL_REJECT_TOO_OLD)
        return OL_ERR_OK; /* not a decision: nothing to remember */
    if (ol_sale__find_str(s->reqs, f->request_id) != OL_STRTAB_NONE)
        return invalid(errstr, errstr_size, f, "request already decided");
    advance(s, f->at_ms);
    /* a decision already older than the retention is not kept */
    if (f->at_ms >= sub_sat(s->stream, retention(s)))
        req_add(s, f->request_id, f->at_ms, REQ_REJECTED);
    return OL_ERR_OK;
}

/* As counters_shrink, for the hold slots; the heap is dense: cut to fit. */
static void holds_shrink(ol_sale_t *s) {
    s->heap = fit(s->heap, &s->heap_cap, s->nheap, sizeof(*s->heap));
    const slots_t sl = hold_slots(s);
    s->holds = slots_shrink(&sl, s->holds, s->nheap);
}

static ol_err_t apply_end(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if (empty(f->hold_id) || empty(f->user_id) || empty(f->sku))
        return invalid(errstr, errstr_size, f, "hold_id, user_id and sku must be set");
    uint32_t req = ol_sale__hold_req(s, f->hold_id);
    uint32_t state = req == OL_STRTAB_NONE ? REQ_REJECTED : s->req_state[req];
    if (!is_slot(state))
        return invalid(errstr, errstr_size, f, state == REQ_REJECTED ? "unknown hold" : "hold already ended");
    uint32_t slot = state;
    hold_t *h = &s->holds[slot];
    counter_t *c = &s->counters[h->counter];
    if (!ol_sale__str_is(s->users, c->user, f->user_id) || strcmp(ol_intern_str(s->sku_ids, c->sku, NULL), f->sku) ||
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
    const sku_t *old = ol_sale__find_sku(s, f->sku);
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
    if (ol_sale__check_policy("PolicyChanged", f->sku, &f->policy, errstr, errstr_size))
        return OL_ERR_INVALID;
    ol_level_limit_t *levels = f->policy.n_levels ? ol_xmalloc(f->policy.n_levels * sizeof(*levels)) : NULL;
    size_t n = ol_sale__normalize_levels(&f->policy, levels);
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

/* A refused checkout changes no state. */
static ol_err_t apply_nothing(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    (void)s, (void)f, (void)errstr, (void)errstr_size;
    return OL_ERR_OK;
}

/* How each kind of fact changes the state. */
static ol_err_t (*const appliers[OL_FACT__COUNT])(ol_sale_t *s, const ol_fact_t *f, char *errstr,
                                                  size_t errstr_size) = {
    [OL_FACT_BUY_ACCEPTED] = apply_accepted,     [OL_FACT_BUY_REJECTED] = apply_rejected,
    [OL_FACT_HOLD_RELEASED] = apply_end,         [OL_FACT_HOLD_CONVERTED] = apply_end,
    [OL_FACT_STOCK_CHANGED] = apply_stock,       [OL_FACT_POLICY_CHANGED] = apply_policy,
    [OL_FACT_CHECKOUT_REJECTED] = apply_nothing,
};

ol_err_t ol_sale_apply(ol_sale_t *s, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    if ((unsigned)f->kind >= OL_FACT__COUNT || !appliers[f->kind])
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "could not apply fact: unknown kind %d", (int)f->kind);
    return appliers[f->kind](s, f, errstr, errstr_size);
}
