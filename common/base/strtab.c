#include "common/base/strtab.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

/* Layout:
 *  - a string is a record [length: 1 byte, or 0xff + 4 bytes][bytes][NUL]
 *    in a chunk of its group; refs[id] is chunk << OFF_BITS | offset (or
 *    FREE | the next free id, the free ids forming a stack);
 *  - chunks[] describes every chunk (freed ones chained for reuse of their
 *    index); a group's chunks are chained newest first from its head;
 *  - the hash table is open addressing with linear probing: slots[i] is
 *    id + 1 (0: empty), tags[i] the hash's top byte, so most probes that
 *    miss are refused without reading the string; removal shifts the
 *    following entries back (no tombstones). */

#define OFF_BITS 18
#define CHUNK_MAX (1u << OFF_BITS) /* records start below this offset */
#define CHUNK_MIN 1024u
#define FREE 0x80000000u
#define MAX_CHUNKS (FREE >> OFF_BITS) /* chunk indexes fit below the FREE bit */
#define MAX_IDS (FREE - 1u)
#define NO_CHUNK UINT32_MAX
#define MIN_CAP 64u

typedef struct chunk_s {
    char *p;
    uint32_t size, used;
    uint32_t next; /* older chunk of the group, or next free chunk index */
    uint32_t group;
} chunk_t;

typedef struct group_s {
    uint32_t head; /* newest chunk, NO_CHUNK: none */
    uint32_t count;
    size_t live, dead; /* record bytes of held / removed strings in its chunks */
} group_t;

struct ol_strtab_s {
    uint32_t *slots;
    uint8_t *tags;
    size_t cap; /* a power of two */
    uint32_t *refs;
    uint32_t limit, refs_cap, count, free_id;
    uint32_t upper; /* ids held in the upper half of refs */
    chunk_t *chunks;
    uint32_t nchunks, chunks_cap, free_chunk;
    size_t chunk_bytes;
    unsigned ngroups;
    group_t groups[OL_STRTAB_MAX_GROUPS];
};

ol_strtab_t *ol_strtab_new(unsigned ngroups) {
    OL_ASSERT(ngroups >= 1 && ngroups <= OL_STRTAB_MAX_GROUPS);
    ol_strtab_t *t = ol_xcalloc(1, sizeof(*t));
    t->ngroups = ngroups;
    t->cap = MIN_CAP;
    t->slots = ol_xcalloc(t->cap, sizeof(*t->slots));
    t->tags = ol_xcalloc(t->cap, sizeof(*t->tags));
    t->free_id = OL_STRTAB_NONE;
    t->free_chunk = NO_CHUNK;
    for (unsigned g = 0; g < ngroups; g++)
        t->groups[g].head = NO_CHUNK;
    return t;
}

void ol_strtab_destroy(ol_strtab_t *t) {
    if (!t)
        return;
    for (uint32_t i = 0; i < t->nchunks; i++)
        free(t->chunks[i].p);
    free(t->chunks);
    free(t->refs);
    free(t->slots);
    free(t->tags);
    free(t);
}

/* ---- records --------------------------------------------------------------- */

static size_t record_size(size_t len) {
    return (len < 0xff ? 1 : 5) + len + 1;
}

static const char *record_at(const ol_strtab_t *t, uint32_t ref, size_t *len) {
    const unsigned char *p = (const unsigned char *)t->chunks[ref >> OFF_BITS].p + (ref & (CHUNK_MAX - 1));
    if (*p != 0xff) {
        *len = *p;
        return (const char *)p + 1;
    }
    uint32_t n;
    memcpy(&n, p + 1, 4);
    *len = n;
    return (const char *)p + 5;
}

static bool held(const ol_strtab_t *t, uint32_t id) {
    return id < t->limit && !(t->refs[id] & FREE);
}

static void chunk_free(ol_strtab_t *t, uint32_t c) {
    t->chunk_bytes -= t->chunks[c].size;
    free(t->chunks[c].p);
    t->chunks[c] = (chunk_t){.next = t->free_chunk, .group = UINT32_MAX};
    t->free_chunk = c;
}

/* Room for need bytes in group g: a new chunk of about hint bytes (at
 * least CHUNK_MIN, at most CHUNK_MAX), or of need alone when larger. */
static uint32_t chunk_new(ol_strtab_t *t, unsigned g, size_t need, size_t hint) {
    size_t size = CHUNK_MIN;
    while (size < CHUNK_MAX && size < hint)
        size *= 2;
    if (size < need)
        size = need;
    OL_ASSERT(size < UINT32_MAX);
    uint32_t c;
    if (t->free_chunk != NO_CHUNK) {
        c = t->free_chunk;
        t->free_chunk = t->chunks[c].next;
    } else {
        OL_ASSERT(t->nchunks < MAX_CHUNKS);
        if (t->nchunks == t->chunks_cap) {
            t->chunks_cap = t->chunks_cap ? t->chunks_cap * 2 : 8;
            t->chunks = ol_xrealloc(t->chunks, t->chunks_cap * sizeof(*t->chunks));
        }
        c = t->nchunks++;
    }
    t->chunks[c] =
        (chunk_t){.p = ol_xmalloc(size), .size = (uint32_t)size, .used = 0, .next = t->groups[g].head, .group = g};
    t->groups[g].head = c;
    t->chunk_bytes += size;
    return c;
}

/* Stores s in group g (a new chunk sized after hint when needed); returns
 * its ref. */
static uint32_t store(ol_strtab_t *t, unsigned g, const char *s, size_t len, size_t hint) {
    size_t need = record_size(len);
    group_t *gr = &t->groups[g];
    uint32_t c = gr->head;
    /* a record never starts at CHUNK_MAX or past it (the ref could not say
     * so): a record larger than that has its chunk alone */
    if (c == NO_CHUNK || t->chunks[c].used >= CHUNK_MAX || t->chunks[c].size - t->chunks[c].used < need)
        c = chunk_new(t, g, need, hint);
    chunk_t *ch = &t->chunks[c];
    uint32_t off = ch->used;
    unsigned char *p = (unsigned char *)ch->p + off;
    if (len < 0xff) {
        *p++ = (unsigned char)len;
    } else {
        uint32_t n = (uint32_t)len;
        *p++ = 0xff;
        memcpy(p, &n, 4);
        p += 4;
    }
    memcpy(p, s, len);
    p[len] = '\0';
    ch->used += (uint32_t)need;
    gr->live += need;
    gr->count++;
    return c << OFF_BITS | off;
}

static void compact(ol_strtab_t *t, unsigned g);

/* The record of ref leaves its group: accounted as dead, the group's
 * chunks freed when it holds no string any more. */
static void unstore(ol_strtab_t *t, uint32_t ref) {
    size_t len;
    record_at(t, ref, &len);
    unsigned g = t->chunks[ref >> OFF_BITS].group;
    group_t *gr = &t->groups[g];
    size_t size = record_size(len);
    gr->live -= size;
    gr->dead += size;
    if (--gr->count == 0) {
        for (uint32_t c = gr->head, next; c != NO_CHUNK; c = next) {
            next = t->chunks[c].next;
            chunk_free(t, c);
        }
        *gr = (group_t){.head = NO_CHUNK};
    } else if (t->ngroups == 1 && gr->dead > 64 * 1024 && gr->dead > gr->live / 2) {
        compact(t, g);
    }
}

/* Copies the live strings of group g into new chunks and frees the old. */
static void compact(ol_strtab_t *t, unsigned g) {
    group_t *gr = &t->groups[g];
    uint32_t old = gr->head;
    size_t live = gr->live;
    for (uint32_t c = old; c != NO_CHUNK; c = t->chunks[c].next)
        t->chunks[c].group = UINT32_MAX; /* retiring */
    *gr = (group_t){.head = NO_CHUNK};
    for (uint32_t id = 0; id < t->limit; id++) {
        if (!held(t, id) || t->chunks[t->refs[id] >> OFF_BITS].group != UINT32_MAX)
            continue;
        size_t len;
        const char *s = record_at(t, t->refs[id], &len);
        t->refs[id] = store(t, g, s, len, live - gr->live);
    }
    for (uint32_t c = old, next; c != NO_CHUNK; c = next) {
        next = t->chunks[c].next;
        chunk_free(t, c);
    }
}

/* ---- the hash table -------------------------------------------------------- */

static uint64_t hash_id(const ol_strtab_t *t, uint32_t id) {
    size_t len;
    const char *s = record_at(t, t->refs[id], &len);
    return ol_hash_bytes(s, len);
}

/* The slot holding s, or the empty slot where it would go. */
static size_t find_slot(const ol_strtab_t *t, const char *s, size_t len, uint64_t h) {
    uint8_t tag = (uint8_t)(h >> 56);
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        uint32_t v = t->slots[i];
        if (!v)
            return i;
        if (t->tags[i] == tag) {
            size_t n;
            const char *p = record_at(t, t->refs[v - 1], &n);
            if (n == len && !memcmp(p, s, len))
                return i;
        }
    }
}

static void resize(ol_strtab_t *t, size_t cap) {
    uint32_t *old = t->slots;
    uint8_t *old_tags = t->tags;
    size_t old_cap = t->cap;
    t->cap = cap;
    t->slots = ol_xcalloc(cap, sizeof(*t->slots));
    t->tags = ol_xcalloc(cap, sizeof(*t->tags));
    for (size_t i = 0; i < old_cap; i++) {
        if (!old[i])
            continue;
        uint64_t h = hash_id(t, old[i] - 1);
        size_t j = h & (cap - 1);
        while (t->slots[j])
            j = (j + 1) & (cap - 1);
        t->slots[j] = old[i];
        t->tags[j] = old_tags[i];
    }
    free(old);
    free(old_tags);
}

/* Empties slot i, shifting back the entries after it that probed past it. */
static void slot_clear(ol_strtab_t *t, size_t i) {
    size_t mask = t->cap - 1;
    for (size_t j = (i + 1) & mask; t->slots[j]; j = (j + 1) & mask) {
        size_t home = hash_id(t, t->slots[j] - 1) & mask;
        /* the entry at j may move to i when its home is not in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (stays)
            continue;
        t->slots[i] = t->slots[j];
        t->tags[i] = t->tags[j];
        i = j;
    }
    t->slots[i] = 0;
    t->tags[i] = 0;
}

/* ---- the API --------------------------------------------------------------- */

uint32_t ol_strtab_find(const ol_strtab_t *t, const char *s, size_t len) {
    uint32_t v = t->slots[find_slot(t, s, len, ol_hash_bytes(s, len))];
    return v ? v - 1 : OL_STRTAB_NONE;
}

uint32_t ol_strtab_add(ol_strtab_t *t, const char *s, size_t len, unsigned group, bool *added) {
    OL_ASSERT(group < t->ngroups && len < UINT32_MAX - 8);
    uint64_t h = ol_hash_bytes(s, len);
    size_t i = find_slot(t, s, len, h);
    if (added)
        *added = !t->slots[i];
    if (t->slots[i])
        return t->slots[i] - 1;
    OL_ASSERT(t->count < MAX_IDS);
    uint32_t id;
    if (t->free_id != OL_STRTAB_NONE) {
        id = t->free_id;
        t->free_id = t->refs[id] & ~FREE;
        if (t->free_id == MAX_IDS)
            t->free_id = OL_STRTAB_NONE;
    } else {
        if (t->limit == t->refs_cap) {
            t->refs_cap = t->refs_cap ? t->refs_cap * 2 : MIN_CAP;
            t->refs = ol_xrealloc(t->refs, (size_t)t->refs_cap * sizeof(*t->refs));
            t->upper = 0; /* nothing is in the new upper half yet */
        }
        id = t->limit++;
    }
    t->refs[id] = store(t, group, s, len, t->groups[group].live);
    t->count++;
    t->upper += id >= t->refs_cap / 2;
    if ((size_t)t->count * 4 > t->cap * 3) {
        resize(t, t->cap * 2);
        i = find_slot(t, s, len, h);
        OL_ASSERT(!t->slots[i]);
    }
    t->slots[i] = id + 1;
    t->tags[i] = (uint8_t)(h >> 56);
    return id;
}

const char *ol_strtab_str(const ol_strtab_t *t, uint32_t id, size_t *len) {
    OL_ASSERT(held(t, id));
    size_t n;
    const char *s = record_at(t, t->refs[id], &n);
    if (len)
        *len = n;
    return s;
}

unsigned ol_strtab_group(const ol_strtab_t *t, uint32_t id) {
    OL_ASSERT(held(t, id));
    return t->chunks[t->refs[id] >> OFF_BITS].group;
}

void ol_strtab_move(ol_strtab_t *t, uint32_t id, unsigned group) {
    OL_ASSERT(held(t, id) && group < t->ngroups);
    uint32_t ref = t->refs[id];
    if (t->chunks[ref >> OFF_BITS].group == group)
        return;
    size_t len;
    const char *s = record_at(t, ref, &len);
    t->refs[id] = store(t, group, s, len, t->groups[group].live); /* before unstore: it may free s */
    unstore(t, ref);
}

/* Once the upper half of refs holds no id and 3/4 of it are free: halved,
 * the free ids stacked lowest first (given first). */
static void shrink_ids(ol_strtab_t *t) {
    while (t->refs_cap > MIN_CAP && !t->upper && (size_t)t->count * 4 < t->refs_cap) {
        uint32_t cap = t->refs_cap / 2;
        t->limit = t->limit < cap ? t->limit : cap;
        t->free_id = OL_STRTAB_NONE;
        for (uint32_t id = t->limit; id-- > 0;)
            if (t->refs[id] & FREE) {
                t->refs[id] = FREE | (t->free_id == OL_STRTAB_NONE ? MAX_IDS : t->free_id);
                t->free_id = id;
            }
        t->refs_cap = cap;
        t->refs = ol_xrealloc(t->refs, (size_t)cap * sizeof(*t->refs));
        for (uint32_t id = cap / 2; id < t->limit; id++)
            t->upper += !(t->refs[id] & FREE);
    }
}

void ol_strtab_remove(ol_strtab_t *t, uint32_t id) {
    OL_ASSERT(held(t, id));
    size_t len;
    const char *s = record_at(t, t->refs[id], &len);
    size_t i = find_slot(t, s, len, ol_hash_bytes(s, len));
    OL_ASSERT(t->slots[i] == id + 1);
    slot_clear(t, i);
    uint32_t ref = t->refs[id];
    t->refs[id] = FREE | (t->free_id == OL_STRTAB_NONE ? MAX_IDS : t->free_id);
    t->free_id = id;
    t->count--;
    t->upper -= id >= t->refs_cap / 2;
    unstore(t, ref);
    if (!t->count) { /* nothing held: give everything back */
        free(t->refs);
        t->refs = NULL;
        t->limit = t->refs_cap = t->upper = 0;
        t->free_id = OL_STRTAB_NONE;
        free(t->chunks); /* every group is empty: every chunk was freed */
        t->chunks = NULL;
        t->nchunks = t->chunks_cap = 0;
        t->free_chunk = NO_CHUNK;
        if (t->cap > MIN_CAP) {
            free(t->slots);
            free(t->tags);
            t->cap = MIN_CAP;
            t->slots = ol_xcalloc(t->cap, sizeof(*t->slots));
            t->tags = ol_xcalloc(t->cap, sizeof(*t->tags));
        }
    } else {
        if (t->cap > MIN_CAP && (size_t)t->count * 8 < t->cap)
            resize(t, t->cap / 2);
        shrink_ids(t);
    }
}

uint32_t ol_strtab_count(const ol_strtab_t *t) {
    return t->count;
}

uint32_t ol_strtab_limit(const ol_strtab_t *t) {
    return t->limit;
}

size_t ol_strtab_bytes(const ol_strtab_t *t) {
    return sizeof(*t) + t->cap * (sizeof(*t->slots) + sizeof(*t->tags)) + (size_t)t->refs_cap * sizeof(*t->refs) +
           (size_t)t->chunks_cap * sizeof(*t->chunks) + t->chunk_bytes;
}
