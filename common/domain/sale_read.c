/* What callers read of a sale's state. */
#include "common/domain/sale_state.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

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
    const sku_t *k = ol_sale__find_sku(s, sku);
    if (!k) {
        *out = (ol_stock_t){.version = -1};
        return false;
    }
    fill_stock(k, out);
    return true;
}

ol_units_t ol_sale_units(const ol_sale_t *s, const char *user_id, const char *sku) {
    const counter_t *c = ol_sale__find_counter(s, user_id, sku);
    return c ? (ol_units_t){c->held, c->bought} : (ol_units_t){0, 0};
}

ol_hold_state_t ol_sale_hold(const ol_sale_t *s, const char *hold_id, ol_hold_info_t *out) {
    uint32_t req = ol_sale__hold_req(s, hold_id);
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
    return ol_sale__find_str(s->reqs, request_id) != OL_STRTAB_NONE;
}

size_t ol_sale_remembered(const ol_sale_t *s) {
    return ol_strtab_count(s->reqs);
}

int64_t ol_sale_stream_time(const ol_sale_t *s) {
    return s->stream;
}

bool ol_sale_policy(const ol_sale_t *s, const char *sku, ol_policy_t *out) {
    const sku_t *k = ol_sale__find_sku(s, sku);
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
