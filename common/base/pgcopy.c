#include "common/base/pgcopy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/pg.h"
#include "common/base/util.h"

void ol_pgcopy_reserve(ol_pgcopy_t *t, size_t n) {
    if (t->len + n + 1 <= t->cap)
        return;
    size_t cap = (t->cap + n + 1) * 2;
    char *bigger = ol_arena_alloc(t->arena, cap);
    if (t->len)
        memcpy(bigger, t->buf, t->len);
    t->buf = bigger;
    t->cap = cap;
}

void ol_pgcopy_char(ol_pgcopy_t *t, char c) {
    ol_pgcopy_reserve(t, 1);
    t->buf[t->len++] = c;
    t->buf[t->len] = '\0';
}

void ol_pgcopy_append(ol_pgcopy_t *t, const char *s, size_t n) {
    ol_pgcopy_reserve(t, n);
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

void ol_pgcopy_value(ol_pgcopy_t *t, const char *v) {
    if (!v) {
        ol_pgcopy_append(t, "\\N", 2);
        return;
    }
    size_t n = strlen(v);
    ol_pgcopy_reserve(t, 2 * n);
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            t->buf[t->len++] = '\\';
            c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
        }
        t->buf[t->len++] = c;
    }
    t->buf[t->len] = '\0';
}

void ol_pgcopy_row(ol_pgcopy_t *t, char *const *vals, int n) {
    for (int k = 0; k < n; k++) {
        if (k)
            ol_pgcopy_char(t, '\t');
        ol_pgcopy_value(t, vals[k]);
    }
    ol_pgcopy_char(t, '\n');
}

void ol_pgcopy_array_item(ol_pgcopy_t *t, const char *s, size_t n, bool first) {
    ol_pgcopy_reserve(t, 2 * n + 4);
    if (!first)
        t->buf[t->len++] = ',';
    t->buf[t->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            t->buf[t->len++] = '\\';
        t->buf[t->len++] = s[i];
    }
    t->buf[t->len++] = '"';
    t->buf[t->len] = '\0';
}

ol_err_t ol_pgcopy_begin(PGconn *conn, const char *target, const char *cols, char *errstr, size_t errstr_size) {
    size_t size = strlen(target) + strlen(cols) + 32;
    char *sql = ol_xmalloc(size);
    snprintf(sql, size, "copy %s (%s) from stdin", target, cols);
    PGresult *res = PQexec(conn, sql);
    free(sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        ol_err_t err = ol_pg_err(res);
        ol_pg_msg(res, conn, errstr, errstr_size);
        PQclear(res);
        return err ? err : OL_ERR_PG;
    }
    PQclear(res);
    return OL_ERR_OK;
}

ol_err_t ol_pgcopy_send(PGconn *conn, ol_pgcopy_t *t, char *errstr, size_t errstr_size) {
    if (t->len && PQputCopyData(conn, t->buf, (int)t->len) != 1) {
        ol_pg_msg(NULL, conn, errstr, errstr_size);
        return OL_ERR_TRANSIENT;
    }
    t->len = 0;
    return OL_ERR_OK;
}

ol_err_t ol_pgcopy_end(PGconn *conn, ol_err_t failed, char *errstr, size_t errstr_size) {
    if (PQputCopyEnd(conn, failed ? "the sender failed" : NULL) != 1) {
        if (!failed)
            ol_pg_msg(NULL, conn, errstr, errstr_size);
        failed = failed ? failed : OL_ERR_TRANSIENT;
    }
    PGresult *res = PQgetResult(conn);
    ol_err_t err = ol_pg_err(res);
    if (err && !failed)
        ol_pg_msg(res, conn, errstr, errstr_size);
    PQclear(res);
    while ((res = PQgetResult(conn)))
        PQclear(res);
    return failed ? failed : err;
}

ol_err_t ol_pgcopy_in(PGconn *conn, const char *target, const char *cols, const ol_pgcopy_t *text, char *errstr,
                      size_t errstr_size) {
    ol_err_t err = ol_pgcopy_begin(conn, target, cols, errstr, errstr_size);
    if (err)
        return err;
    ol_pgcopy_t whole = *text; /* send empties it: the caller's stays */
    return ol_pgcopy_end(conn, ol_pgcopy_send(conn, &whole, errstr, errstr_size), errstr, errstr_size);
}
