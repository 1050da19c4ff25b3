#include "common/base/intern.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

/* Layout: strings live in chunks as [u32 length][bytes][NUL]; strs[id]
 * points at the bytes. The hash table is open addressing with linear
 * probing; a slot is 0 (empty) or (upper 32 bits of the hash) << 32 | (id + 1),
 * so most probes that miss are refused without touching the string. */

#define CHUNK_SIZE (256u * 1024u)
#define MAX_IDS (UINT32_MAX - 1u) /* id + 1 must fit in 32 bits, NONE stays free */

struct ol_intern_s {
    uint64_t *slots;
    size_t cap; /* slots, a power of two */
    char **strs;
    uint32_t count, strs_cap;
    char **chunks;
    size_t nchunks, chunks_cap;
    char *cur; /* free space of the newest chunk */
    size_t cur_left;
    size_t chunk_bytes;
};

ol_intern_t *ol_intern_new(void) {
    ol_intern_t *in = ol_xcalloc(1, sizeof(*in));
    in->cap = 64;
    in->slots = ol_xcalloc(in->cap, sizeof(*in->slots));
    return in;
}

void ol_intern_destroy(ol_intern_t *in) {
    if (!in)
        return;
    for (size_t i = 0; i < in->nchunks; i++)
        free(in->chunks[i]);
    free(in->chunks);
    free(in->strs);
    free(in->slots);
    free(in);
}

static uint32_t str_len(const char *p) {
    uint32_t n;
    memcpy(&n, p - 4, 4);
    return n;
}

/* The slot holding s, or the empty slot where it would go. */
static uint64_t *find_slot(const ol_intern_t *in, const char *s, size_t len, uint64_t h) {
    uint64_t tag = h >> 32;
    for (size_t i = h & (in->cap - 1);; i = (i + 1) & (in->cap - 1)) {
        uint64_t v = in->slots[i];
        if (!v)
            return &in->slots[i];
        if (v >> 32 == tag) {
            const char *p = in->strs[(uint32_t)v - 1];
            if (str_len(p) == len && !memcmp(p, s, len))
                return &in->slots[i];
        }
    }
}

uint32_t ol_intern_find(const ol_intern_t *in, const char *s, size_t len) {
    uint64_t v = *find_slot(in, s, len, ol_hash_bytes(s, len));
    return v ? (uint32_t)v - 1 : OL_INTERN_NONE;
}

static void grow_slots(ol_intern_t *in) {
    size_t old_cap = in->cap;
    uint64_t *old = in->slots;
    in->cap *= 2;
    in->slots = ol_xcalloc(in->cap, sizeof(*in->slots));
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i])
            continue;
        const char *p = in->strs[(uint32_t)old[i] - 1];
        uint64_t h = ol_hash_bytes(p, str_len(p));
        size_t j = h & (in->cap - 1);
        while (in->slots[j])
            j = (j + 1) & (in->cap - 1);
        in->slots[j] = old[i];
    }
    free(old);
}

static char *store(ol_intern_t *in, const char *s, size_t len) {
    size_t need = 4 + len + 1;
    if (need > in->cur_left) {
        size_t size = need > CHUNK_SIZE ? need : CHUNK_SIZE;
        if (in->nchunks == in->chunks_cap) {
            in->chunks_cap = in->chunks_cap ? in->chunks_cap * 2 : 16;
            in->chunks = ol_xrealloc(in->chunks, in->chunks_cap * sizeof(*in->chunks));
        }
        in->cur = in->chunks[in->nchunks++] = ol_xmalloc(size);
        in->cur_left = size;
        in->chunk_bytes += size;
    }
    uint32_t n = (uint32_t)len;
    memcpy(in->cur, &n, 4);
    char *p = in->cur + 4;
    memcpy(p, s, len);
    p[len] = '\0';
    in->cur += need;
    in->cur_left -= need;
    return p;
}

uint32_t ol_intern_add(ol_intern_t *in, const char *s, size_t len) {
    OL_ASSERT(len < UINT32_MAX);
    uint64_t h = ol_hash_bytes(s, len);
    uint64_t *slot = find_slot(in, s, len, h);
    if (*slot)
        return (uint32_t)*slot - 1;
    OL_ASSERT(in->count < MAX_IDS);
    if ((in->count + 1ull) * 4 > in->cap * 3) {
        grow_slots(in);
        slot = find_slot(in, s, len, h);
    }
    if (in->count == in->strs_cap) {
        in->strs_cap = in->strs_cap ? (in->strs_cap > MAX_IDS / 2 ? MAX_IDS : in->strs_cap * 2) : 64;
        in->strs = ol_xrealloc(in->strs, (size_t)in->strs_cap * sizeof(*in->strs));
    }
    uint32_t id = in->count++;
    in->strs[id] = store(in, s, len);
    *slot = (h >> 32) << 32 | ((uint64_t)id + 1);
    return id;
}

const char *ol_intern_str(const ol_intern_t *in, uint32_t id, size_t *len) {
    OL_ASSERT(id < in->count);
    const char *p = in->strs[id];
    if (len)
        *len = str_len(p);
    return p;
}

uint32_t ol_intern_count(const ol_intern_t *in) {
    return in->count;
}

size_t ol_intern_bytes(const ol_intern_t *in) {
    return sizeof(*in) + in->cap * sizeof(*in->slots) + (size_t)in->strs_cap * sizeof(*in->strs) +
           in->chunks_cap * sizeof(*in->chunks) + in->chunk_bytes;
}
