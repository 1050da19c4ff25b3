#include "common/base/strbuf.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

void ol_strbuf_put(ol_strbuf_t *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        b->p = ol_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void ol_strbuf_puts(ol_strbuf_t *b, const char *s) {
    ol_strbuf_put(b, s, strlen(s));
}

void ol_strbuf_free(ol_strbuf_t *b) {
    free(b->p);
    *b = (ol_strbuf_t)OL_STRBUF_INIT;
}
