#ifndef OL_PGCOPY_H
#define OL_PGCOPY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/base/arena.h"
#include "common/base/err.h"

/* Text for PostgreSQL built in an arena: rows in COPY text format (and, in
 * the same buffer, text[] literals for = any($1::text[])), then sent with
 * COPY ... FROM STDIN. Not thread-safe: one buffer per thread, like its
 * arena. */

/* Starts as {arena, NULL, 0, 0}. buf lives in arena (borrowed, must outlive
 * the buffer) and is NUL-terminated once anything was added; resetting the
 * arena invalidates it. */
typedef struct ol_pgcopy_s {
    ol_arena_t *arena;
    char *buf;
    size_t len, cap;
} ol_pgcopy_t;

/* Makes room for n more bytes (and the NUL) at buf + len. */
void ol_pgcopy_reserve(ol_pgcopy_t *t, size_t n);
void ol_pgcopy_char(ol_pgcopy_t *t, char c);
/* n bytes as they are (text already in COPY format). */
void ol_pgcopy_append(ol_pgcopy_t *t, const char *s, size_t n);
/* One value in COPY text format: backslash, tab, newline and carriage
 * return escaped; NULL (SQL NULL) as \N. */
void ol_pgcopy_value(ol_pgcopy_t *t, const char *v);
/* One row: the n values separated by tabs, then a newline. */
void ol_pgcopy_row(ol_pgcopy_t *t, char *const *vals, int n);
/* One element of a text[] literal ({"a","b"}), the n bytes of s quoted and
 * escaped, preceded by a comma unless first; the braces are the caller's. */
void ol_pgcopy_array_item(ol_pgcopy_t *t, const char *s, size_t n, bool first);

/* Runs `copy <target> (<cols>) from stdin` on conn and sends the rows of
 * text (len bytes, whole rows). Returns ol_pg_err of the failure with errstr
 * holding ol_pg_msg; a failure to send is OL_ERR_TRANSIENT. */
ol_err_t ol_pgcopy_in(PGconn *conn, const char *target, const char *cols, const ol_pgcopy_t *text, char *errstr,
                      size_t errstr_size);

/* The same in steps, for rows streamed while they are made: begin, then
 * send whenever t holds enough (t is emptied, its buffer kept), then end.
 * end with failed set (a send failed) aborts the COPY and returns failed. */
ol_err_t ol_pgcopy_begin(PGconn *conn, const char *target, const char *cols, char *errstr, size_t errstr_size);
ol_err_t ol_pgcopy_send(PGconn *conn, ol_pgcopy_t *t, char *errstr, size_t errstr_size);
ol_err_t ol_pgcopy_end(PGconn *conn, ol_err_t failed, char *errstr, size_t errstr_size);

#endif
