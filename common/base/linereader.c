#include "common/base/linereader.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

struct ol_linereader_s {
    FILE *fp;
    char *buf;
    size_t cap, start, end, max_len;
    long long lineno;
    int eof;
};

ol_linereader_t *ol_linereader_new(FILE *fp, size_t max_len) {
    ol_linereader_t *lr = ol_xcalloc(1, sizeof(*lr));
    lr->fp = fp;
    lr->max_len = max_len;
    lr->cap = max_len + 64 * 1024;
    lr->buf = ol_xmalloc(lr->cap);
    return lr;
}

void ol_linereader_destroy(ol_linereader_t *lr) {
    if (!lr)
        return;
    free(lr->buf);
    free(lr);
}

/* Reads more into the buffer after moving the unread part to the front. */
static int fill(ol_linereader_t *lr) {
    if (lr->start > 0) {
        memmove(lr->buf, lr->buf + lr->start, lr->end - lr->start);
        lr->end -= lr->start;
        lr->start = 0;
    }
    size_t n = fread(lr->buf + lr->end, 1, lr->cap - lr->end, lr->fp);
    lr->end += n;
    if (n == 0) {
        if (ferror(lr->fp))
            return -1;
        lr->eof = 1;
    }
    return 0;
}

ol_linereader_status_t ol_linereader_next(ol_linereader_t *lr, const char **line, size_t *len, long long *lineno) {
    size_t scanned = 0; /* bytes of the current line already searched */
    int skipping = 0;
    for (;;) {
        char *nl = memchr(lr->buf + lr->start + scanned, '\n', lr->end - lr->start - scanned);
        if (nl) {
            size_t n = (size_t)(nl - (lr->buf + lr->start));
            *lineno = ++lr->lineno;
            if (skipping || n > lr->max_len) {
                lr->start += n + 1;
                return OL_LINE_TOO_LONG;
            }
            *line = lr->buf + lr->start;
            *len = n;
            lr->start += n + 1;
            return OL_LINE_OK;
        }
        scanned = lr->end - lr->start;
        if (scanned > lr->max_len) {
            /* too long: drop what we have and keep looking for its end */
            skipping = 1;
            lr->start = lr->end = 0;
            scanned = 0;
        }
        if (lr->eof) {
            if (lr->end == lr->start && !skipping)
                return OL_LINE_EOF;
            *lineno = ++lr->lineno;
            *line = lr->buf + lr->start;
            *len = lr->end - lr->start;
            lr->start = lr->end;
            return skipping ? OL_LINE_TOO_LONG : OL_LINE_OK;
        }
        if (fill(lr))
            return OL_LINE_ERROR;
    }
}
