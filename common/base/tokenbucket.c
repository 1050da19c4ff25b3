#include "common/base/tokenbucket.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/list.h"
#include "common/base/util.h"

#define SHARDS 32

typedef struct bucket_s {
    struct bucket_s *hnext;            /* hash chain */
    OL_LIST_LINK(struct bucket_s) lru; /* recency list, most recent first */
    double tokens;
    int64_t last_us;
    uint32_t hash;
    uint8_t key_len;
    char key[OL_TOKENBUCKET_KEY_MAX];
} bucket_t;

typedef struct shard_s {
    pthread_mutex_t lock;
    bucket_t **table; /* nbuckets chains */
    size_t nbuckets, count, max;
    OL_LIST(bucket_t) lru;
} shard_t;

struct ol_tokenbucket_s {
    double rate, burst;
    size_t nshards;
    shard_t shards[SHARDS];
};

static uint32_t hash_key(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

ol_tokenbucket_t *ol_tokenbucket_new(double rate, double burst, size_t max_keys) {
    ol_tokenbucket_t *rl = ol_xcalloc(1, sizeof(*rl));
    rl->rate = rate;
    rl->burst = burst < 1 ? 1 : burst;
    if (max_keys < 1)
        max_keys = 1;
    rl->nshards = max_keys < SHARDS * 4 ? 1 : SHARDS;
    for (size_t i = 0; i < rl->nshards; i++) {
        shard_t *s = &rl->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->max = (max_keys + rl->nshards - 1) / rl->nshards;
        s->nbuckets = 16;
        while (s->nbuckets < s->max)
            s->nbuckets *= 2;
        s->table = ol_xcalloc(s->nbuckets, sizeof(*s->table));
    }
    return rl;
}

void ol_tokenbucket_destroy(ol_tokenbucket_t *rl) {
    if (!rl)
        return;
    for (size_t i = 0; i < rl->nshards; i++) {
        shard_t *s = &rl->shards[i];
        for (bucket_t *b = s->lru.head, *next; b; b = next) {
            next = b->lru.next;
            free(b);
        }
        free(s->table);
        pthread_mutex_destroy(&s->lock);
    }
    free(rl);
}

static void table_remove(shard_t *s, bucket_t *b) {
    bucket_t **pp = &s->table[b->hash & (s->nbuckets - 1)];
    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
}

bool ol_tokenbucket_take(ol_tokenbucket_t *rl, const char *key, size_t key_len, int64_t now_us) {
    if (rl->rate <= 0)
        return true;
    if (key_len > OL_TOKENBUCKET_KEY_MAX)
        key_len = OL_TOKENBUCKET_KEY_MAX;
    uint32_t h = hash_key(key, key_len);
    shard_t *s = &rl->shards[rl->nshards == 1 ? 0 : (h >> 27) % rl->nshards];
    pthread_mutex_lock(&s->lock);
    bucket_t *b = s->table[h & (s->nbuckets - 1)];
    while (b && !(b->hash == h && b->key_len == key_len && !memcmp(b->key, key, key_len)))
        b = b->hnext;
    if (b) {
        double t = b->tokens + (double)(now_us - b->last_us) * rl->rate / 1e6;
        b->tokens = t > rl->burst ? rl->burst : t;
        b->last_us = now_us;
        if (b != s->lru.head) {
            OL_LIST_REMOVE(&s->lru, b, lru);
            OL_LIST_PUSH_FRONT(&s->lru, b, lru);
        }
    } else {
        if (s->count >= s->max) {
            b = s->lru.tail; /* forget the least recently seen key, reuse its memory */
            OL_LIST_REMOVE(&s->lru, b, lru);
            table_remove(s, b);
            s->count--;
        } else {
            b = ol_xmalloc(sizeof(*b));
        }
        b->hash = h;
        b->key_len = (uint8_t)key_len;
        memcpy(b->key, key, key_len);
        b->tokens = rl->burst;
        b->last_us = now_us;
        b->hnext = s->table[h & (s->nbuckets - 1)];
        s->table[h & (s->nbuckets - 1)] = b;
        OL_LIST_PUSH_FRONT(&s->lru, b, lru);
        s->count++;
    }
    bool ok = b->tokens >= 1.0;
    if (ok)
        b->tokens -= 1.0;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

size_t ol_tokenbucket_count(ol_tokenbucket_t *rl) {
    size_t n = 0;
    for (size_t i = 0; i < rl->nshards; i++) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += rl->shards[i].count;
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}
