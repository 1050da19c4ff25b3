/* The state of a sale as bytes, and back (ol_sale_snapshot, ol_sale_load):
 * what deciding needs, not how the state is laid out.
 *
 * Format 1, every integer a varint (LEB128; signed ones zigzag), a string
 * its length then its bytes:
 *   "OLS1" window stream base based
 *   nskus, per SKU in the order the sale heard of them (its id):
 *     name total sold version status has_policy
 *     [min_level default_limit n_levels (level limit)*]
 *   ncounters, per (user, SKU) counter with units bought: user sku-id bought
 *   nslices, per slice of remembered request ids, oldest first:
 *     k nreqs, per request id: id state (0 rejected, 1 released, 2 converted,
 *     3 open hold: user sku-id quantity expires_at)
 * Units held are not written: the open holds make them again. */
#include "common/domain/sale_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

#define MAGIC "OLS1"
enum { ST_REJECTED, ST_RELEASED, ST_CONVERTED, ST_HOLD };

/* ---- writing --------------------------------------------------------------- */

static void put_u(ol_strbuf_t *b, uint64_t v) {
    char tmp[10];
    size_t n = 0;
    do {
        uint8_t byte = v & 0x7f;
        v >>= 7;
        tmp[n++] = (char)(byte | (v ? 0x80 : 0));
    } while (v);
    ol_strbuf_put(b, tmp, n);
}

static void put_s(ol_strbuf_t *b, int64_t v) {
    put_u(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static void put_str(ol_strbuf_t *b, const char *s, size_t len) {
    put_u(b, len);
    ol_strbuf_put(b, s, len);
}

void ol_sale_snapshot(const ol_sale_t *s, ol_strbuf_t *out) {
    ol_strbuf_put(out, MAGIC, 4);
    put_s(out, s->window);
    put_s(out, s->stream);
    put_s(out, s->base);
    put_u(out, s->based);
    uint32_t nskus = ol_intern_count(s->sku_ids);
    put_u(out, nskus);
    for (uint32_t i = 0; i < nskus; i++) {
        const sku_t *k = &s->skus[i];
        size_t len;
        const char *name = ol_intern_str(s->sku_ids, i, &len);
        put_str(out, name, len);
        put_s(out, k->total);
        put_s(out, k->sold);
        put_s(out, k->version);
        put_u(out, k->status);
        put_u(out, k->has_policy);
        if (!k->has_policy)
            continue;
        put_s(out, k->min_level);
        put_s(out, k->default_limit);
        put_u(out, k->n_levels);
        for (uint32_t l = 0; l < k->n_levels; l++) {
            put_s(out, k->levels[l].level);
            put_s(out, k->levels[l].limit);
        }
    }
    size_t nbought = 0;
    for (size_t c = 0; c < s->ncounters; c++)
        nbought += s->counters[c].user != NONE && s->counters[c].bought;
    put_u(out, nbought);
    for (size_t c = 0; c < s->ncounters; c++) {
        const counter_t *k = &s->counters[c];
        if (k->user == NONE || !k->bought)
            continue;
        size_t len;
        const char *user = ol_strtab_str(s->users, k->user, &len);
        put_str(out, user, len);
        put_u(out, k->sku);
        put_s(out, k->bought);
    }
    /* the slices in the ring, oldest first */
    int order[SLICES], nslices = 0;
    for (int pos = 0; pos < SLICES; pos++) {
        if (s->slice_head[pos] == NONE)
            continue;
        int i = nslices++;
        while (i > 0 && s->slice_no[order[i - 1]] > s->slice_no[pos]) {
            order[i] = order[i - 1];
            i--;
        }
        order[i] = pos;
    }
    put_u(out, (uint64_t)nslices);
    for (int i = 0; i < nslices; i++) {
        int pos = order[i];
        size_t n = 0;
        for (uint32_t r = s->slice_head[pos]; r != NONE; r = s->req_next[r])
            n++;
        put_s(out, s->slice_no[pos]);
        put_u(out, n);
        for (uint32_t r = s->slice_head[pos]; r != NONE; r = s->req_next[r]) {
            size_t len;
            const char *id = ol_strtab_str(s->reqs, r, &len);
            put_str(out, id, len);
            uint32_t state = s->req_state[r];
            if (!is_slot(state)) {
                put_u(out, state == REQ_REJECTED ? ST_REJECTED : state == REQ_RELEASED ? ST_RELEASED : ST_CONVERTED);
                continue;
            }
            const hold_t *h = &s->holds[state];
            const counter_t *c = &s->counters[h->counter];
            put_u(out, ST_HOLD);
            const char *user = ol_strtab_str(s->users, c->user, &len);
            put_str(out, user, len);
            put_u(out, c->sku);
            put_s(out, h->quantity);
            put_s(out, h->expires_at);
        }
    }
}

/* ---- reading --------------------------------------------------------------- */

typedef struct reader_s {
    const uint8_t *p, *end;
    bool bad;
} reader_t;

static uint64_t get_u(reader_t *r) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            break;
        uint8_t byte = *r->p++;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return v;
    }
    r->bad = true;
    return 0;
}

static int64_t get_s(reader_t *r) {
    uint64_t v = get_u(r);
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* A string of the data (not NUL-terminated), its length in *len. */
static const char *get_str(reader_t *r, size_t *len) {
    uint64_t n = get_u(r);
    if (r->bad || n == 0 || n > (uint64_t)(r->end - r->p)) {
        r->bad = true;
        *len = 0;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += n;
    *len = (size_t)n;
    return s;
}

/* A string of the data copied into buf (NUL-terminated); bad when longer. */
static const char *get_cstr(reader_t *r, char *buf, size_t size) {
    size_t len;
    const char *s = get_str(r, &len);
    if (len >= size) {
        r->bad = true;
        len = 0;
    }
    memcpy(buf, s, len);
    buf[len] = 0;
    return buf;
}

static bool in_range(int64_t v, int64_t lo, int64_t hi) {
    return v >= lo && v <= hi;
}

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (r.bad || !(cond)) {                                                     \
            ol_errf(errstr, errstr_size, OL_ERR_INVALID, "snapshot: " __VA_ARGS__); \
            goto fail;                                                              \
        }                                                                           \
    } while (0)

ol_sale_t *ol_sale_load(const void *data, size_t len, int64_t hold_ttl_ms, int64_t window_ms, const ol_blacklist_t *bl,
                        char *errstr, size_t errstr_size) {
    reader_t r = {data, (const uint8_t *)data + len, false};
    char str[1024];
    ol_sale_t *s = ol_sale_new(hold_ttl_ms, window_ms, bl);
    CHECK(len >= 4 && !memcmp(data, MAGIC, 4), "not of format 1");
    r.p += 4;
    int64_t window = get_s(&r);
    CHECK(window == window_ms, "made with an idempotency window of %lld ms, not %lld", (long long)window,
          (long long)window_ms);
    s->stream = get_s(&r);
    s->base = get_s(&r);
    s->based = get_u(&r) != 0;
    uint64_t nskus = get_u(&r);
    CHECK(nskus < UINT32_MAX / 2, "too many skus");
    for (uint64_t i = 0; i < nskus; i++) {
        get_cstr(&r, str, sizeof(str));
        CHECK(ol_intern_find(s->sku_ids, str, strlen(str)) == OL_INTERN_NONE, "sku %s twice", str);
        uint32_t id = ol_sale__sku_add(s, str); /* may move skus */
        sku_t *k = &s->skus[id];
        k->total = get_s(&r);
        k->sold = get_s(&r);
        k->version = get_s(&r);
        uint64_t status = get_u(&r);
        k->status = (uint8_t)status;
        k->has_policy = get_u(&r) != 0;
        CHECK(k->total >= 0 && in_range(k->sold, 0, k->total) && status <= SKU_REMOVED, "sku %s: bad stock", str);
        if (!k->has_policy)
            continue;
        int64_t min_level = get_s(&r), default_limit = get_s(&r);
        uint64_t n = get_u(&r);
        CHECK(in_range(min_level, 0, INT32_MAX) && in_range(default_limit, 0, INT32_MAX) && n < 65536,
              "sku %s: bad policy", str);
        k->min_level = (int32_t)min_level;
        k->default_limit = (int32_t)default_limit;
        k->levels = n ? ol_xcalloc(n, sizeof(*k->levels)) : NULL;
        k->n_levels = (uint32_t)n;
        for (uint64_t l = 0; l < n; l++) {
            int64_t level = get_s(&r), limit = get_s(&r);
            CHECK(in_range(level, 0, INT32_MAX) && in_range(limit, 0, INT32_MAX), "sku %s: bad policy", str);
            k->levels[l] = (ol_level_limit_t){(int32_t)level, (int32_t)limit};
        }
    }
    uint64_t ncounters = get_u(&r);
    CHECK(ncounters < UINT32_MAX / 2, "too many counters");
    for (uint64_t i = 0; i < ncounters; i++) {
        get_cstr(&r, str, sizeof(str));
        uint64_t sku = get_u(&r);
        int64_t bought = get_s(&r);
        CHECK(sku < nskus && in_range(bought, 1, INT32_MAX), "bad counter of %s", str);
        uint32_t counter = ol_sale__counter_add(s, str, (uint32_t)sku); /* may move counters */
        counter_t *c = &s->counters[counter];
        CHECK(!c->bought, "counter of %s twice", str);
        c->bought = (int32_t)bought;
    }
    uint64_t nslices = get_u(&r);
    CHECK(nslices <= SLICES, "too many slices");
    int64_t last = INT64_MIN;
    for (uint64_t i = 0; i < nslices; i++) {
        int64_t k = get_s(&r);
        uint64_t n = get_u(&r);
        CHECK(k > last && k >= s->base && k - s->base < SLICES && n > 0 && n < UINT32_MAX / 2, "bad slice");
        last = k;
        for (uint64_t j = 0; j < n; j++) {
            size_t idlen;
            const char *id = get_str(&r, &idlen);
            uint64_t state = get_u(&r);
            CHECK(state <= ST_HOLD, "bad request state");
            CHECK(ol_strtab_find(s->reqs, id, idlen) == OL_STRTAB_NONE, "a request id twice");
            if (state != ST_HOLD) {
                ol_sale__req_put(s, id, idlen, k,
                                 state == ST_REJECTED   ? REQ_REJECTED
                                 : state == ST_RELEASED ? REQ_RELEASED
                                                        : REQ_CONVERTED);
                continue;
            }
            get_cstr(&r, str, sizeof(str));
            uint64_t sku = get_u(&r);
            int64_t quantity = get_s(&r), expires_at = get_s(&r);
            CHECK(sku < nskus && in_range(quantity, 1, INT32_MAX), "bad hold");
            uint32_t counter = ol_sale__counter_add(s, str, (uint32_t)sku);
            const counter_t *c = &s->counters[counter];
            CHECK((int64_t)c->held + c->bought <= INT32_MAX - quantity, "a user's units past 2147483647");
            uint32_t slot = ol_sale__hold_slot(s);
            uint32_t req = ol_sale__req_put(s, id, idlen, k, slot);
            ol_sale__hold_open(s, slot, req, counter, (int32_t)quantity, expires_at);
        }
    }
    CHECK(r.p == r.end, "%zu bytes after its end", (size_t)(r.end - r.p));
    for (uint32_t i = 0; i < ol_intern_count(s->sku_ids); i++)
        CHECK(s->skus[i].held + s->skus[i].sold <= s->skus[i].total, "sku %u: held + sold above its total", i);
    return s;
fail:
    ol_sale_destroy(s);
    return NULL;
}
