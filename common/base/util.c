#include "common/base/util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static _Noreturn void oom(size_t size) {
    fprintf(stderr, "orderlog: out of memory allocating %zu bytes\n", size);
    abort();
}

void *ol_xmalloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

void *ol_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom(n * size);
    return p;
}

void *ol_xrealloc(void *ptr, size_t size) {
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

char *ol_xstrdup(const char *s) {
    return ol_xstrndup(s, strlen(s));
}

char *ol_xstrndup(const char *s, size_t n) {
    char *p = ol_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void ol_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "orderlog: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

long ol_utf8_invalid_at(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return (long)i;
        }
        if (i + n >= len)
            return (long)i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return (long)i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (long)i;
        i += n + 1;
    }
    return -1;
}

int ol_utf8_fit(const char *s, size_t max) {
    size_t len = strnlen(s, max);
    if (len == max) /* s[len] is the first byte left out, or the NUL */
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    return len > INT_MAX ? INT_MAX : (int)len;
}

size_t ol_utf8_trim(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = len;
    while (i > 0 && len - i < 3 && (s[i - 1] & 0xc0) == 0x80)
        i--;
    if (i == 0 || s[i - 1] < 0xc0)
        return len;
    size_t need = s[i - 1] >= 0xf0 ? 4 : s[i - 1] >= 0xe0 ? 3 : 2;
    return len - (i - 1) < need ? i - 1 : len;
}

/* xoshiro256** seeded once per thread from the kernel. */
static _Thread_local uint64_t rng_s[4];
static _Thread_local int rng_seeded;

uint64_t ol_hash_bytes(const char *s, size_t len) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (len * 0xff51afd7ed558ccdull);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ (w * 0xbf58476d1ce4e5b9ull)) * 0x94d049bb133111ebull;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    for (size_t k = 0; i < len; i++, k += 8)
        w |= (uint64_t)(unsigned char)s[i] << k;
    h = (h ^ (w * 0xbf58476d1ce4e5b9ull)) * 0x94d049bb133111ebull;
    /* final mix (splitmix64) so both halves of the hash are usable */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void) {
    if (!rng_seeded) {
        if (getrandom(rng_s, sizeof(rng_s), 0) != (ssize_t)sizeof(rng_s))
            ol_assert_fail("getrandom", __FILE__, __LINE__);
        rng_seeded = 1;
    }
    uint64_t result = rotl(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return result;
}

void ol_uuid_v4(char out[37]) {
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    uint64_t a = rng_next(), c = rng_next();
    memcpy(b, &a, 8);
    memcpy(b + 8, &c, 8);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}
