#ifndef OL_INTERN_H
#define OL_INTERN_H

#include <stddef.h>
#include <stdint.h>

/* A string pool that gives every distinct string a dense id (0, 1, 2, … in
 * the order strings were first added), for tables that must stay small with
 * millions of keys: a string costs its bytes + 5 (length, NUL) + 8 (id →
 * string) + 8 to 16 (hash slot), and no malloc of its own.
 *
 * Strings are copied, may hold any bytes (NUL included) and are never moved
 * or freed before ol_intern_destroy: the pointers ol_intern_str returns stay
 * valid that long, whatever is added meanwhile. Nothing is ever removed.
 * Deterministic: the same sequence of adds gives the same ids.
 * Not thread-safe; concurrent finds are safe while nothing is added. */
typedef struct ol_intern_s ol_intern_t;

#define OL_INTERN_NONE UINT32_MAX

ol_intern_t *ol_intern_new(void);
void ol_intern_destroy(ol_intern_t *in);

/* The id of s, added when new (a new id equals ol_intern_count before the
 * call). Aborts past 2^32 - 2 strings or a string of 4 GiB. */
uint32_t ol_intern_add(ol_intern_t *in, const char *s, size_t len);
/* The id of s, or OL_INTERN_NONE when it was never added. */
uint32_t ol_intern_find(const ol_intern_t *in, const char *s, size_t len);
/* The string of id (NUL-terminated, borrowed: valid until destroy); id must
 * be < ol_intern_count. len may be NULL. */
const char *ol_intern_str(const ol_intern_t *in, uint32_t id, size_t *len);
uint32_t ol_intern_count(const ol_intern_t *in);
/* Bytes allocated for the pool (its capacity, not only what is used). */
size_t ol_intern_bytes(const ol_intern_t *in);

#endif
