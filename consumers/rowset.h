#ifndef OL_ROWSET_H
#define OL_ROWSET_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/err.h"
#include "common/base/map.h"
#include "common/base/pgcopy.h"

/* Row images of a projection's tables (consumers/project.c,
 * consumers/sale_project.c): the rows a batch touches, loaded by key in one
 * query per table, changed in memory by the projection's rules, and the
 * changed ones written back with COPY (and a staging table for the rows
 * that exist). Every column is text (NULL = SQL NULL), as PostgreSQL prints
 * it. The rules know columns by index and never SQL; this file knows SQL
 * and no rule.
 *
 * Each table's columns are declared once, with an X-macro of
 * X(ENUM_ID, "column") entries:
 *
 *   #define SKU_COLS(X) X(S_ID, "sku") ... X(S_LAST_PARTITION, "last_partition") X(S_LAST_OFFSET, "last_offset")
 *   enum { SKU_COLS(OL_ROWSET_COL_ENUM) S_NCOLS };
 *   static const char *const sku_cols[] = {SKU_COLS(OL_ROWSET_COL_NAME)};
 *
 * Generated columns are left out. */
#define OL_ROWSET_COL_ENUM(id, name) id,
#define OL_ROWSET_COL_NAME(id, name) name,

/* How the changed rows reach the table. */
typedef enum ol_rowset_write_e {
    /* new rows COPYed straight into the table (one created meanwhile by
     * another writer is a transient error), rows that exist COPYed into a
     * staging table and then one UPDATE */
    OL_ROWSET_INSERT_UPDATE,
    /* every changed row COPYed into a staging table, then one insert ... on
     * conflict do update */
    OL_ROWSET_UPSERT,
    /* as UPSERT, but an existing row is never replaced (on conflict do
     * nothing) */
    OL_ROWSET_INSERT_ONCE,
} ol_rowset_write_t;

typedef struct ol_rowset_table_s {
    const char *name;
    const char *const *cols; /* the first nkeys columns are the primary key */
    int ncols;
    int nkeys; /* 1 or 2 */
    /* the position (partition, offset) of the last event applied to the
     * row: a replay is one at or below it (ol_row_seen) */
    int last_partition, last_offset;
    ol_rowset_write_t write;
    /* bytes of a row: sizeof(ol_row_t), or more for rules that keep more
     * per row in a struct that starts with the ol_row_t (0: the former) */
    size_t row_size;
} ol_rowset_table_t;

/* A row image. */
typedef struct ol_row_s {
    char **v;     /* ncols values, in the rowset's memory */
    bool in_db;   /* loaded: the row exists in the database */
    bool present; /* exists now: loaded or set by this batch, not deleted */
    bool dirty;   /* to be written */
} ol_row_t;

/* Where rows and their values live, shared by the rowsets of a batch (or of
 * a bulk load). Public so that callers may embed it. */
typedef struct ol_rowset_mem_s {
    ol_arena_t *arena; /* borrowed */
    /* long-lived rows (a bulk load: rows live across batches): values are
     * packed in chunks of the arena, and a value that fits where the old one
     * is replaces it in place */
    bool packed;
    char *strings;
    size_t strings_left;
} ol_rowset_mem_t;

void ol_rowset_mem_init(ol_rowset_mem_t *m, ol_arena_t *arena, bool packed);
/* Before the caller resets the arena. */
void ol_rowset_mem_reset(ol_rowset_mem_t *m);
/* A copy of v[0..n) that lives as long as the rows. */
char *ol_rowset_strdup(ol_rowset_mem_t *m, const char *v, size_t n);

/* The rows of one table, by key. Public so that callers may embed it; use
 * the functions. Not thread-safe. */
typedef struct ol_rowset_s {
    const ol_rowset_table_t *t;
    ol_map_t *rows;       /* key (k0, or k0 \x1f k1) -> ol_row_t *; owned */
    ol_rowset_mem_t *mem; /* borrowed */
} ol_rowset_t;

void ol_rowset_init(ol_rowset_t *s, const ol_rowset_table_t *t, ol_rowset_mem_t *mem);
/* Frees the map (the memory is the caller's). */
void ol_rowset_free(ol_rowset_t *s);
/* Forgets every row (the caller then resets the memory). */
void ol_rowset_clear(ol_rowset_t *s);
size_t ol_rowset_count(const ol_rowset_t *s);
/* The image of the row with key k0 (and k1 for a two-column key; NULL is
 * ""), made empty (not present) when absent. Borrowed from s. */
ol_row_t *ol_rowset_get(ol_rowset_t *s, const char *k0, const char *k1);
/* The row with key (as ol_rowset_get), or NULL. */
ol_row_t *ol_rowset_find(const ol_rowset_t *s, const char *k0, const char *k1);
void ol_rowset_foreach(const ol_rowset_t *s, void (*fn)(void *opaque, ol_row_t *r), void *opaque);

/* Setting a value marks the row present and dirty. */
void ol_row_set_str(ol_rowset_mem_t *m, ol_row_t *r, int col, const char *v);
void ol_row_set_int(ol_rowset_mem_t *m, ol_row_t *r, int col, int64_t v);
void ol_row_set_time(ol_rowset_mem_t *m, ol_row_t *r, int col, int64_t ms);
/* 0 for NULL. */
int64_t ol_row_int(const ol_row_t *r, int col);
/* "" for NULL. */
const char *ol_row_str(const ol_row_t *r, int col);
/* Whether the row has seen the position: an event at or below the last
 * one applied to it in the same partition. */
bool ol_row_seen(const ol_rowset_table_t *t, const ol_row_t *r, int32_t partition, int64_t offset);
/* The row took the event at the position: it remembers it, is present and
 * is written. */
void ol_row_took(ol_rowset_t *s, ol_row_t *r, int32_t partition, int64_t offset);

/* A PostgreSQL text[] literal, {"a","b"}, built in arena. */
typedef struct ol_rowset_keys_s {
    ol_pgcopy_t text;
    size_t count;
} ol_rowset_keys_t;
void ol_rowset_keys_init(ol_rowset_keys_t *k, ol_arena_t *arena);
void ol_rowset_keys_put(ol_rowset_keys_t *k, const char *s, size_t n);
/* The literal; borrowed from the arena. */
const char *ol_rowset_keys_end(ol_rowset_keys_t *k);
/* The keys of map as a literal in arena. */
const char *ol_rowset_keys_of_map(const ol_map_t *map, ol_arena_t *arena);

/* "c0, c1, ...": the table's columns, each after prefix, in arena. */
char *ol_rowset_col_list(ol_arena_t *arena, const ol_rowset_table_t *t, const char *prefix);

/* Fills the images of the rows of s that exist in schema's table (one
 * query on conn). SQL text goes to scratch, values to the rowset's arena. */
ol_err_t ol_rowset_load(ol_rowset_t *s, PGconn *conn, const char *schema, ol_arena_t *scratch, char *errstr,
                        size_t errstr_size);
/* Writes the changed rows (as the table's write says) and deletes the rows
 * that went (in_db, no longer present). */
ol_err_t ol_rowset_write(ol_rowset_t *s, PGconn *conn, const char *schema, ol_arena_t *scratch, char *errstr,
                         size_t errstr_size);

/* What a row adds to a COPY: its text appended to text; returns whether it
 * added a row. NULL: the row's columns when it is dirty. */
typedef bool (*ol_rowset_emit_fn)(const ol_row_t *r, ol_pgcopy_t *text);
/* The COPY text of the rows in text (its arena set by the caller); returns
 * the rows. */
size_t ol_rowset_text(const ol_rowset_t *s, ol_rowset_emit_fn emit, ol_pgcopy_t *text);
/* COPYs what emit makes of every row into schema.table (cols), streaming
 * the text in chunks while it is made (PostgreSQL parses one chunk while
 * the next is made; the text of a table is never whole in memory). */
ol_err_t ol_rowset_stream(const ol_rowset_t *s, ol_rowset_emit_fn emit, PGconn *conn, const char *schema,
                          const char *table, const char *cols, ol_arena_t *scratch, char *errstr, size_t errstr_size);

#endif
