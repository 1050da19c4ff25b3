#include "common/base/map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

typedef struct entry_s {
    char *key; /* NULL: empty slot */
    size_t key_len;
    uint64_t hash;
    void *value;
} entry_t;

struct ol_map_s {
    entry_t *slots;
    size_t cap, count;
};

static uint64_t hash_key(const char *key, size_t len) {
    uint64_t h = ol_hash_fnv1a64(OL_FNV1A64_SEED, key, len);
    return h ^ (h >> 29);
}

ol_map_t *ol_map_new(void) {
    ol_map_t *m = ol_xcalloc(1, sizeof(*m));
    m->cap = 64;
    m->slots = ol_xcalloc(m->cap, sizeof(*m->slots));
    return m;
}

void ol_map_clear(ol_map_t *m) {
    for (size_t i = 0; i < m->cap; i++) {
        free(m->slots[i].key);
        m->slots[i].key = NULL;
    }
    m->count = 0;
}

void ol_map_destroy(ol_map_t *m) {
    if (!m)
        return;
    ol_map_clear(m);
    free(m->slots);
    free(m);
}

static entry_t *find(const ol_map_t *m, const char *key, size_t len, uint64_t h) {
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        entry_t *e = &m->slots[i];
        if (!e->key || (e->hash == h && e->key_len == len && !memcmp(e->key, key, len)))
            return e;
    }
}

void *ol_map_get(const ol_map_t *m, const char *key, size_t key_len) {
    entry_t *e = find(m, key, key_len, hash_key(key, key_len));
    return e->key ? e->value : NULL;
}

static void grow(ol_map_t *m) {
    entry_t *old = m->slots;
    size_t old_cap = m->cap;
    m->cap *= 2;
    m->slots = ol_xcalloc(m->cap, sizeof(*m->slots));
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key)
            *find(m, old[i].key, old[i].key_len, old[i].hash) = old[i];
    free(old);
}

void ol_map_put(ol_map_t *m, const char *key, size_t key_len, void *value) {
    if ((m->count + 1) * 4 > m->cap * 3)
        grow(m);
    uint64_t h = hash_key(key, key_len);
    entry_t *e = find(m, key, key_len, h);
    if (!e->key) {
        e->key = ol_xstrndup(key, key_len);
        e->key_len = key_len;
        e->hash = h;
        m->count++;
    }
    e->value = value;
}

size_t ol_map_count(const ol_map_t *m) {
    return m->count;
}

void ol_map_foreach(const ol_map_t *m, void (*fn)(void *opaque, const char *key, size_t key_len, void *value),
                    void *opaque) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            fn(opaque, m->slots[i].key, m->slots[i].key_len, m->slots[i].value);
}
