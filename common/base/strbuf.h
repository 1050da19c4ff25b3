#ifndef OL_STRBUF_H
#define OL_STRBUF_H

#include <stddef.h>

/* A growable string on the heap. Starts as {0} (or OL_STRBUF_INIT); p is
 * owned by the buffer, NULL until something was added, then always
 * NUL-terminated. Take it (the caller frees p) or ol_strbuf_free it.
 * Growing aborts on allocation failure, like ol_xrealloc. Not thread-safe. */
typedef struct ol_strbuf_s {
    char *p;
    size_t len, cap;
} ol_strbuf_t;

#define OL_STRBUF_INIT \
    { NULL, 0, 0 }

/* Appends n bytes of s (which may hold NUL; n may be 0, which still makes
 * p a valid empty string). */
void ol_strbuf_put(ol_strbuf_t *b, const char *s, size_t n);
/* Appends the string s. */
void ol_strbuf_puts(ol_strbuf_t *b, const char *s);
/* Frees p and empties the buffer. */
void ol_strbuf_free(ol_strbuf_t *b);

#endif
