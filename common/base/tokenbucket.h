#ifndef OL_TOKENBUCKET_H
#define OL_TOKENBUCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Token buckets by key: each key (a client IP, or "" for a whole process)
 * earns `rate` tokens per second up to `burst`, and every admitted request
 * spends one. A key seen for the first time starts with a full bucket.
 *
 * Memory is bounded: at most max_keys buckets are kept; past it the least
 * recently used key is forgotten (and starts full again when it comes back,
 * which is the price of the bound). Thread-safe: the table is split into
 * shards, each under its own lock. */
typedef struct ol_tokenbucket_s ol_tokenbucket_t;

/* rate 0 means no limit (every take succeeds, nothing is stored). */
ol_tokenbucket_t *ol_tokenbucket_new(double rate, double burst, size_t max_keys);
void ol_tokenbucket_destroy(ol_tokenbucket_t *rl);

/* Spends one token of key's bucket at now_us (a monotonic clock); false
 * when the bucket is empty (the request is to be throttled). Keys longer
 * than OL_TOKENBUCKET_KEY_MAX bytes are cut to it. */
#define OL_TOKENBUCKET_KEY_MAX 64
bool ol_tokenbucket_take(ol_tokenbucket_t *rl, const char *key, size_t key_len, int64_t now_us);

/* Buckets currently stored. */
size_t ol_tokenbucket_count(ol_tokenbucket_t *rl);

#endif
