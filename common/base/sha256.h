#ifndef OL_SHA256_H
#define OL_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* SHA-256 (FIPS 180-4), for checksums such as those of migrations; not a
 * constant-time implementation, so not for secrets. A context is a plain
 * value: no allocation, no destroy, one context per thread. */

#define OL_SHA256_SIZE 32
#define OL_SHA256_HEX_SIZE 65 /* 64 lower-case hex digits + NUL */

typedef struct ol_sha256_s {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    uint8_t buf[64];
    size_t buf_len;
} ol_sha256_t;

void ol_sha256_init(ol_sha256_t *ctx);
void ol_sha256_update(ol_sha256_t *ctx, const void *data, size_t len);
/* Writes the digest; ctx must be initialised again before reuse. */
void ol_sha256_final(ol_sha256_t *ctx, uint8_t out[OL_SHA256_SIZE]);

/* One-shot digest of len bytes, as lower-case hex (what `sha256sum` prints). */
void ol_sha256_hex(const void *data, size_t len, char out[OL_SHA256_HEX_SIZE]);

#endif
