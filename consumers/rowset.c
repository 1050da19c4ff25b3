/* Row images of projection tables: see rowset.h. */
#include "consumers/rowset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/pg.h"
#include "common/base/time.h"

/* ---- rows ------------------------------------------------------------------ */

void ol_rowset_mem_init(ol_rowset_mem_t *m, ol_arena_t *arena, bool packed) {
    memset(m, 0, sizeof(*m));
    m->arena = arena;
    m->packed = packed;
}

void ol_rowset_mem_reset(ol_rowset_mem_t *m) {
    m->strings = NULL;
    m->strings_left = 0;
}

void ol_rowset_init(ol_rowset_t *s, const ol_rowset_table_t *t, ol_rowset_mem_t *mem) {
    s->t = t;
    s->rows = ol_map_new();
    s->mem = mem;
}

void ol_rowset_free(ol_rowset_t *s) {
    ol_map_destroy(s->rows);
    s->rows = NULL;
}

void ol_rowset_clear(ol_rowset_t *s) {
    ol_map_clear(s->rows);
}

size_t ol_rowset_count(const ol_rowset_t *s) {
    return ol_map_count(s->rows);
}

#define STRING_CHUNK ((size_t)64 * 1024)

char *ol_rowset_strdup(ol_rowset_mem_t *m, const char *v, size_t n) {
    if (!m->packed || n >= STRING_CHUNK / 16)
        return ol_arena_strndup(m->arena, v, n);
    if (m->strings_left < n + 1) {
        m->strings = ol_arena_alloc(m->arena, STRING_CHUNK);
        m->strings_left = STRING_CHUNK;
    }
    char *p = m->strings;
    memcpy(p, v, n);
    p[n] = '\0';
    m->strings += n + 1;
    m->strings_left -= n + 1;
    return p;
}

/* The map key of a row: k0, or k0 \x1f k1 (in arena). */
static const char *map_key(const ol_rowset_table_t *t, ol_arena_t *arena, const char *k0, const char *k1) {
    k0 = k0 ? k0 : "";
    k1 = k1 ? k1 : "";
    return t->nkeys == 2 ? ol_arena_sprintf(arena, "%s\x1f%s", k0, k1) : k0;
}

ol_row_t *ol_rowset_find(const ol_rowset_t *s, const char *k0, const char *k1) {
    const char *key = map_key(s->t, s->mem->arena, k0, k1);
    return ol_map_get(s->rows, key, strlen(key));
}

ol_row_t *ol_rowset_get(ol_rowset_t *s, const char *k0, const char *k1) {
    const ol_rowset_table_t *t = s->t;
    ol_rowset_mem_t *m = s->mem;
    k0 = k0 ? k0 : "";
    k1 = k1 ? k1 : "";
    const char *key = map_key(t, m->arena, k0, k1);
    ol_row_t *r = ol_map_get(s->rows, key, strlen(key));
    if (r)
        return r;
    size_t size = t->row_size ? t->row_size : sizeof(ol_row_t);
    r = ol_arena_alloc(m->arena, size);
    memset(r, 0, size);
    r->v = ol_arena_alloc(m->arena, (size_t)t->ncols * sizeof(char *));
    memset(r->v, 0, (size_t)t->ncols * sizeof(char *));
    r->v[0] = ol_rowset_strdup(m, k0, strlen(k0));
    if (t->nkeys == 2)
        r->v[1] = ol_rowset_strdup(m, k1, strlen(k1));
    ol_map_put(s->rows, key, strlen(key), r);
    return r;
}

typedef struct each_s {
    void (*fn)(void *opaque, ol_row_t *r);
    void *opaque;
} each_t;

static void each_fn(void *opaque, const char *key, size_t key_len, void *value) {
    (void)key;
    (void)key_len;
    each_t *e = opaque;
    e->fn(e->opaque, value);
}

void ol_rowset_foreach(const ol_rowset_t *s, void (*fn)(void *opaque, ol_row_t *r), void *opaque) {
    each_t e = {fn, opaque};
    ol_map_foreach(s->rows, each_fn, &e);
}

/* With packed rows a value that fits where the old one is replaces it in
 * place: the rows' arena only grows by what does not fit (a version 2
 * snapshot rewrites most columns of its order with values of the same
 * length). */
void ol_row_set_str(ol_rowset_mem_t *m, ol_row_t *r, int col, const char *v) {
    size_t n = v ? strlen(v) : 0;
    if (m->packed && v && r->v[col] && strlen(r->v[col]) >= n)
        memcpy(r->v[col], v, n + 1);
    else
        r->v[col] = v ? ol_rowset_strdup(m, v, n) : NULL;
    r->dirty = true;
    r->present = true;
}

void ol_row_set_int(ol_rowset_mem_t *m, ol_row_t *r, int col, int64_t v) {
    char num[24], *p = num + sizeof(num) - 1;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    *p = '\0';
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    ol_row_set_str(m, r, col, p);
}

void ol_row_set_time(ol_rowset_mem_t *m, ol_row_t *r, int col, int64_t ms) {
    char ts[40];
    ol_time_format(ms, ts, sizeof(ts));
    ol_row_set_str(m, r, col, ts);
}

int64_t ol_row_int(const ol_row_t *r, int col) {
    return r->v[col] ? strtoll(r->v[col], NULL, 10) : 0;
}

const char *ol_row_str(const ol_row_t *r, int col) {
    return r->v[col] ? r->v[col] : "";
}

bool ol_row_seen(const ol_rowset_table_t *t, const ol_row_t *r, int32_t partition, int64_t offset) {
    const char *part = r->v[t->last_partition], *off = r->v[t->last_offset];
    return r->present && part && off && strtol(part, NULL, 10) == partition && strtoll(off, NULL, 10) >= offset;
}

void ol_row_took(ol_rowset_t *s, ol_row_t *r, int32_t partition, int64_t offset) {
    ol_row_set_int(s->mem, r, s->t->last_partition, partition);
    ol_row_set_int(s->mem, r, s->t->last_offset, offset);
}

/* ---- keys ------------------------------------------------------------------ */

void ol_rowset_keys_init(ol_rowset_keys_t *k, ol_arena_t *arena) {
    memset(k, 0, sizeof(*k));
    k->text.arena = arena;
    ol_pgcopy_char(&k->text, '{');
}

void ol_rowset_keys_put(ol_rowset_keys_t *k, const char *s, size_t n) {
    ol_pgcopy_array_item(&k->text, s, n, k->count++ == 0);
}

const char *ol_rowset_keys_end(ol_rowset_keys_t *k) {
    ol_pgcopy_char(&k->text, '}');
    return k->text.buf;
}

static void map_keys_fn(void *opaque, const char *key, size_t key_len, void *value) {
    (void)value;
    ol_rowset_keys_put(opaque, key, key_len);
}

const char *ol_rowset_keys_of_map(const ol_map_t *map, ol_arena_t *arena) {
    ol_rowset_keys_t k;
    ol_rowset_keys_init(&k, arena);
    ol_map_foreach(map, map_keys_fn, &k);
    return ol_rowset_keys_end(&k);
}

/* The keys of the rows that want() (NULL: all), one literal per key column. */
typedef struct row_keys_s {
    ol_rowset_keys_t cols[2];
    int nkeys;
    bool (*want)(const ol_row_t *r);
} row_keys_t;

static void row_keys_fn(void *opaque, ol_row_t *r) {
    row_keys_t *k = opaque;
    if (k->want && !k->want(r))
        return;
    for (int c = 0; c < k->nkeys; c++)
        ol_rowset_keys_put(&k->cols[c], r->v[c], strlen(r->v[c]));
}

/* The keys of the rows of s that want() in params[0..nkeys); returns how
 * many. */
static size_t row_keys(const ol_rowset_t *s, bool (*want)(const ol_row_t *r), ol_arena_t *arena, const char **params) {
    row_keys_t k;
    k.nkeys = s->t->nkeys;
    k.want = want;
    for (int c = 0; c < k.nkeys; c++)
        ol_rowset_keys_init(&k.cols[c], arena);
    ol_rowset_foreach(s, row_keys_fn, &k);
    for (int c = 0; c < k.nkeys; c++)
        params[c] = ol_rowset_keys_end(&k.cols[c]);
    return k.cols[0].count;
}

char *ol_rowset_col_list(ol_arena_t *arena, const ol_rowset_table_t *t, const char *prefix) {
    size_t cap = 64 * (size_t)t->ncols, len = 0;
    char *s = ol_arena_alloc(arena, cap);
    for (int i = 0; i < t->ncols; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%s%s", i ? ", " : "", prefix, t->cols[i]);
    return s;
}

/* ---- loading --------------------------------------------------------------- */

/* "<verb> schema.table t ... where" the row's key is among the keys in $1
 * (and $2, one array per key column): verb is "select t.* from" (then join
 * ",") or "delete from" ("using"). */
static const char *by_keys(ol_arena_t *scratch, const ol_rowset_table_t *t, const char *schema, const char *verb,
                           const char *join) {
    if (t->nkeys == 1)
        return ol_arena_sprintf(scratch, "%s %s.%s t where t.%s = any($1::text[])", verb, schema, t->name, t->cols[0]);
    return ol_arena_sprintf(scratch,
                            "%s %s.%s t %s unnest($1::text[], $2::text[]) k(k0, k1) where t.%s = k.k0 and t.%s = k.k1",
                            verb, schema, t->name, join, t->cols[0], t->cols[1]);
}

ol_err_t ol_rowset_load(ol_rowset_t *s, PGconn *conn, const char *schema, ol_arena_t *scratch, char *errstr,
                        size_t errstr_size) {
    const ol_rowset_table_t *t = s->t;
    if (!ol_rowset_count(s))
        return OL_ERR_OK;
    const char *params[2];
    row_keys(s, NULL, scratch, params);
    PGresult *res;
    ol_err_t err = ol_pg_query(&res, conn, by_keys(scratch, t, schema, "select t.* from", ","), t->nkeys, params,
                               errstr, errstr_size);
    if (err)
        return err;
    /* select * returns the columns in table order: map them by name once */
    int *colmap = ol_arena_alloc(scratch, (size_t)t->ncols * sizeof(int));
    for (int c = 0; c < t->ncols; c++)
        colmap[c] = PQfnumber(res, t->cols[c]);
    for (int i = 0; i < PQntuples(res); i++) {
        ol_row_t *r =
            ol_rowset_get(s, PQgetvalue(res, i, colmap[0]), t->nkeys == 2 ? PQgetvalue(res, i, colmap[1]) : NULL);
        r->in_db = r->present = true;
        for (int c = 0; c < t->ncols; c++)
            r->v[c] =
                colmap[c] < 0 || PQgetisnull(res, i, colmap[c])
                    ? NULL
                    : ol_rowset_strdup(s->mem, PQgetvalue(res, i, colmap[c]), (size_t)PQgetlength(res, i, colmap[c]));
    }
    PQclear(res);
    return OL_ERR_OK;
}

/* ---- COPY text ------------------------------------------------------------- */

/* Rows in COPY text: kept whole (stream NULL), or streamed to a COPY
 * running on stream in chunks while they are made. */
#define STREAM_CHUNK ((size_t)1 << 20)

typedef struct copy_s {
    const ol_rowset_table_t *t;
    ol_rowset_emit_fn emit;
    ol_pgcopy_t *text;
    size_t rows;
    PGconn *stream;
    ol_err_t err; /* of the streaming */
    char *errstr;
    size_t errstr_size;
} copy_t;

static bool emit_columns(const copy_t *c, const ol_row_t *r) {
    if (!r->present || !r->dirty)
        return false;
    ol_pgcopy_row(c->text, r->v, c->t->ncols);
    return true;
}

static void copy_fn(void *opaque, ol_row_t *r) {
    copy_t *c = opaque;
    if (c->err || !(c->emit ? c->emit(r, c->text) : emit_columns(c, r)))
        return;
    c->rows++;
    if (c->stream && c->text->len >= STREAM_CHUNK)
        c->err = ol_pgcopy_send(c->stream, c->text, c->errstr, c->errstr_size);
}

size_t ol_rowset_text(const ol_rowset_t *s, ol_rowset_emit_fn emit, ol_pgcopy_t *text) {
    copy_t c = {s->t, emit, text, 0, NULL, OL_ERR_OK, NULL, 0};
    ol_rowset_foreach(s, copy_fn, &c);
    return c.rows;
}

ol_err_t ol_rowset_stream(const ol_rowset_t *s, ol_rowset_emit_fn emit, PGconn *conn, const char *schema,
                          const char *table, const char *cols, ol_arena_t *scratch, char *errstr, size_t errstr_size) {
    if (!ol_rowset_count(s))
        return OL_ERR_OK;
    ol_err_t err = ol_pgcopy_begin(conn, ol_arena_sprintf(scratch, "%s.%s", schema, table), cols, errstr, errstr_size);
    if (err)
        return err;
    ol_pgcopy_t text = {scratch, NULL, 0, 0};
    copy_t c = {s->t, emit, &text, 0, conn, OL_ERR_OK, errstr, errstr_size};
    ol_rowset_foreach(s, copy_fn, &c);
    if (!c.err)
        c.err = ol_pgcopy_send(conn, &text, errstr, errstr_size);
    return ol_pgcopy_end(conn, c.err, errstr, errstr_size);
}

/* ---- writing --------------------------------------------------------------- */

static bool gone(const ol_row_t *r) {
    return r->in_db && !r->present;
}

/* Deletes the rows that went. */
static ol_err_t delete_rows(ol_rowset_t *s, PGconn *conn, const char *schema, ol_arena_t *scratch, char *errstr,
                            size_t errstr_size) {
    const ol_rowset_table_t *t = s->t;
    const char *params[2];
    if (!row_keys(s, gone, scratch, params))
        return OL_ERR_OK;
    return ol_pg_query(NULL, conn, by_keys(scratch, t, schema, "delete from", "using"), t->nkeys, params, errstr,
                       errstr_size);
}

/* COPYs text into a staging table like schema's table (empty at commit);
 * returns its name in *stage. */
static ol_err_t stage(const char **stage_out, const ol_rowset_table_t *t, PGconn *conn, const char *schema,
                      const char *cols, const ol_pgcopy_t *text, ol_arena_t *scratch, char *errstr,
                      size_t errstr_size) {
    char *stage = ol_arena_sprintf(scratch, "ol_stage_%s", t->name);
    char *sql = ol_arena_sprintf(scratch, "create temp table if not exists %s (like %s.%s) on commit delete rows",
                                 stage, schema, t->name);
    ol_err_t err = ol_pg_exec_ok(conn, sql, errstr, errstr_size);
    if (err || (err = ol_pgcopy_in(conn, stage, cols, text, errstr, errstr_size)))
        return err;
    *stage_out = stage;
    return OL_ERR_OK;
}

/* "c = <from>.c, ...": the columns from the first after the key. */
static char *set_list(ol_arena_t *scratch, const ol_rowset_table_t *t, const char *from) {
    size_t cap = 128 * (size_t)t->ncols, len = 0;
    char *set = ol_arena_alloc(scratch, cap);
    for (int i = t->nkeys; i < t->ncols; i++)
        len += (size_t)snprintf(set + len, cap - len, "%s%s = %s.%s", i > t->nkeys ? ", " : "", t->cols[i], from,
                                t->cols[i]);
    return set;
}

/* UPSERT and INSERT_ONCE: every changed row through the staging table. */
static ol_err_t write_upsert(ol_rowset_t *s, PGconn *conn, const char *schema, ol_arena_t *scratch, char *errstr,
                             size_t errstr_size) {
    const ol_rowset_table_t *t = s->t;
    ol_pgcopy_t text = {scratch, NULL, 0, 0};
    if (!ol_rowset_text(s, NULL, &text))
        return OL_ERR_OK;
    const char *cols = ol_rowset_col_list(scratch, t, ""), *stage_name;
    ol_err_t err = stage(&stage_name, t, conn, schema, cols, &text, scratch, errstr, errstr_size);
    if (err)
        return err;
    bool once = t->write == OL_ROWSET_INSERT_ONCE;
    const char *keys = t->nkeys == 1 ? t->cols[0] : ol_arena_sprintf(scratch, "%s, %s", t->cols[0], t->cols[1]);
    char *sql = ol_arena_sprintf(scratch, "insert into %s.%s (%s) select %s from %s on conflict (%s) do %s%s", schema,
                                 t->name, cols, cols, stage_name, keys, once ? "nothing" : "update set ",
                                 once ? "" : set_list(scratch, t, "excluded"));
    return ol_pg_exec_ok(conn, sql, errstr, errstr_size);
}

/* Splits the changed rows: [0] to create, [1] to update. */
typedef struct split_s {
    copy_t c[2];
} split_t;

static void split_fn(void *opaque, ol_row_t *r) {
    split_t *sp = opaque;
    copy_fn(&sp->c[r->in_db ? 1 : 0], r);
}

/* INSERT_UPDATE: the new rows COPYed straight into the table; the others
 * COPYed into a staging table, then one UPDATE. */
static ol_err_t write_insert_update(ol_rowset_t *s, PGconn *conn, const char *schema, ol_arena_t *scratch, char *errstr,
                                    size_t errstr_size) {
    const ol_rowset_table_t *t = s->t;
    ol_pgcopy_t text[2] = {{scratch, NULL, 0, 0}, {scratch, NULL, 0, 0}};
    split_t sp = {{{t, NULL, &text[0], 0, NULL, OL_ERR_OK, NULL, 0}, {t, NULL, &text[1], 0, NULL, OL_ERR_OK, NULL, 0}}};
    ol_rowset_foreach(s, split_fn, &sp);
    const char *cols = ol_rowset_col_list(scratch, t, "");
    char *target = ol_arena_sprintf(scratch, "%s.%s", schema, t->name);
    ol_err_t err;
    if (sp.c[0].rows && (err = ol_pgcopy_in(conn, target, cols, &text[0], errstr, errstr_size))) {
        /* the batch's rows were read under the lock of its partitions'
         * offsets, so only a writer outside the group can have created one
         * since: read them again */
        return err == OL_ERR_ALREADY_APPLIED ? ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT,
                                                       "%s: created meanwhile by another writer (%s)", target, errstr)
                                             : err;
    }
    if (!sp.c[1].rows)
        return OL_ERR_OK;
    const char *stage_name;
    if ((err = stage(&stage_name, t, conn, schema, cols, &text[1], scratch, errstr, errstr_size)))
        return err;
    char *sql = ol_arena_sprintf(scratch, "update %s t set %s from %s s where t.%s = s.%s", target,
                                 set_list(scratch, t, "s"), stage_name, t->cols[0], t->cols[0]);
    return ol_pg_exec_ok(conn, sql, errstr, errstr_size);
}

ol_err_t ol_rowset_write(ol_rowset_t *s, PGconn *conn, const char *schema, ol_arena_t *scratch, char *errstr,
                         size_t errstr_size) {
    ol_err_t err = delete_rows(s, conn, schema, scratch, errstr, errstr_size);
    if (err)
        return err;
    if (s->t->write == OL_ROWSET_INSERT_UPDATE)
        return write_insert_update(s, conn, schema, scratch, errstr, errstr_size);
    return write_upsert(s, conn, schema, scratch, errstr, errstr_size);
}
