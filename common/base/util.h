#ifndef OL_UTIL_H
#define OL_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Allocation failure is not an error we handle: these abort instead. */
void *ol_xmalloc(size_t size);
void *ol_xcalloc(size_t n, size_t size);
void *ol_xrealloc(void *ptr, size_t size);
char *ol_xstrdup(const char *s);
char *ol_xstrndup(const char *s, size_t n);

/* Programming errors: log and abort, in every build type. */
#define OL_ASSERT(cond) ((cond) ? (void)0 : ol_assert_fail(#cond, __FILE__, __LINE__))
_Noreturn void ol_assert_fail(const char *expr, const char *file, int line);

/* Returns the byte offset of the first invalid UTF-8 sequence, or -1 when
 * all len bytes are valid (overlongs, surrogates and > U+10FFFF refused). */
long ol_utf8_invalid_at(const char *s, size_t len);

/* Cutting valid UTF-8 text without splitting a character (messages quote
 * input, and they end up in JSON answers, logs and headers, which must stay
 * UTF-8). ol_utf8_fit: how many bytes of the string s to print when at most
 * max fit, as an int for "%.*s". ol_utf8_trim: the length of s[0..len)
 * without the incomplete sequence a cut left at its end, if any. */
int ol_utf8_fit(const char *s, size_t max);
size_t ol_utf8_trim(const char *s, size_t len);

/* A 64-bit hash of len bytes (both halves usable: the table index from the
 * low bits, a tag from the high ones). Not keyed: fine for tables whose
 * worst case is a slower probe, not for anything an attacker must not steer. */
uint64_t ol_hash_bytes(const char *s, size_t len);

/* 32-bit FNV-1a of len bytes: small tables, dispatch by key. Not keyed
 * either; the same value on every host and run. Both FNV functions are
 * inline: the maps hash every key they look up, and a call per key cost
 * the projections and decide about 1% of their instructions. */
static inline uint32_t ol_hash_fnv1a32(const void *p, size_t len) {
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}
/* 64-bit FNV-1a of len bytes, continuing from h: OL_FNV1A64_SEED to start
 * (this project's seed, kept so that hashes stay what they were), or the
 * result of a previous call to hash several pieces as one. The low bits
 * mix poorly: callers that index by them add a finalizer. */
#define OL_FNV1A64_SEED 1469598103934665603ull
/* FNV-1a 64's own offset basis, for hashes that others may check (the
 * decider's snapshots). */
#define OL_FNV1A64_BASIS 14695981039346656037ull
static inline uint64_t ol_hash_fnv1a64(uint64_t h, const void *p, size_t len) {
    const unsigned char *s = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

/* Random UUID v4 as 36 chars + NUL, from a per-thread generator seeded by
 * getrandom(2). Thread-safe. */
void ol_uuid_v4(char out[37]);

#endif
