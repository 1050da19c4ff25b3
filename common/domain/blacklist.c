#include "common/domain/blacklist.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/intern.h"
#include "common/base/util.h"

/* Subjects are interned as "<type char><subject>" so IPs and users never
 * collide; until[id] is the entry of the subject, NOT_LISTED when removed.
 * A removed subject keeps its interned key: the set of subjects is bounded by
 * the compacted topic. */
#define NOT_LISTED INT64_MIN

struct ol_blacklist_s {
    ol_intern_t *keys;
    int64_t *until;
    size_t until_cap, listed;
};

ol_blacklist_t *ol_blacklist_new(void) {
    ol_blacklist_t *bl = ol_xcalloc(1, sizeof(*bl));
    bl->keys = ol_intern_new();
    return bl;
}

void ol_blacklist_destroy(ol_blacklist_t *bl) {
    if (!bl)
        return;
    ol_intern_destroy(bl->keys);
    free(bl->until);
    free(bl);
}

/* key = type char + subject, in buf when it fits, else in a new buffer the
 * caller frees (*heap). */
static const char *make_key(ol_subject_t type, const char *subject, char *buf, size_t size, size_t *len, char **heap) {
    size_t n = strlen(subject);
    char *k = n + 1 <= size ? buf : (*heap = ol_xmalloc(n + 1));
    k[0] = type == OL_SUBJECT_IP ? 'i' : 'u';
    memcpy(k + 1, subject, n);
    *len = n + 1;
    return k;
}

void ol_blacklist_apply(ol_blacklist_t *bl, ol_subject_t type, const char *subject, bool add, int64_t until_ms) {
    char buf[256], *heap = NULL;
    size_t len;
    const char *key = make_key(type, subject, buf, sizeof(buf), &len, &heap);
    uint32_t id = add ? ol_intern_add(bl->keys, key, len) : ol_intern_find(bl->keys, key, len);
    free(heap);
    if (id == OL_INTERN_NONE)
        return;
    if (id >= bl->until_cap) {
        size_t cap = bl->until_cap ? bl->until_cap * 2 : 64;
        bl->until = ol_xrealloc(bl->until, cap * sizeof(*bl->until));
        for (size_t i = bl->until_cap; i < cap; i++)
            bl->until[i] = NOT_LISTED;
        bl->until_cap = cap;
    }
    bool was = bl->until[id] != NOT_LISTED;
    bl->until[id] = add ? (until_ms < 0 ? OL_BLACKLIST_FOREVER : until_ms) : NOT_LISTED;
    if (add && !was)
        bl->listed++;
    else if (!add && was)
        bl->listed--;
}

bool ol_blacklist_has(const ol_blacklist_t *bl, ol_subject_t type, const char *subject, int64_t now_ms) {
    char buf[256], *heap = NULL;
    size_t len;
    const char *key = make_key(type, subject, buf, sizeof(buf), &len, &heap);
    uint32_t id = ol_intern_find(bl->keys, key, len);
    free(heap);
    if (id == OL_INTERN_NONE || id >= bl->until_cap)
        return false;
    int64_t until = bl->until[id];
    return until != NOT_LISTED && (until < 0 || now_ms < until);
}

size_t ol_blacklist_count(const ol_blacklist_t *bl) {
    return bl->listed;
}
