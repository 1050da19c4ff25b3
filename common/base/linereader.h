#ifndef OL_LINEREADER_H
#define OL_LINEREADER_H

#include <stddef.h>
#include <stdio.h>

/* Reads lines from a stream with a fixed buffer: a line longer than max_len
 * is reported as OL_LINE_TOO_LONG and skipped without being held in memory.
 * Memory: about max_len + 64 KiB, whatever the input. */
typedef struct ol_linereader_s ol_linereader_t;

typedef enum ol_linereader_status_e {
    OL_LINE_OK,       /* *line (not NUL-terminated, no '\n') valid until the next call */
    OL_LINE_TOO_LONG, /* the line numbered *lineno was skipped */
    OL_LINE_EOF,
    OL_LINE_ERROR, /* read error, errno set */
} ol_linereader_status_t;

ol_linereader_t *ol_linereader_new(FILE *fp, size_t max_len);
void ol_linereader_destroy(ol_linereader_t *lr);
ol_linereader_status_t ol_linereader_next(ol_linereader_t *lr, const char **line, size_t *len, long long *lineno);

#endif
