/* orderlog rebuild, the shadow schema: made like the live one for the load,
 * then made ready (logged, keyed, indexed, constrained, with views and
 * comments) after it. See rebuild.c. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/log.h"
#include "common/base/pg.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/project.h"
#include "consumers/rebuild.h"
#include "consumers/runtime.h"

ol_err_t ol_rebuild__exec(rebuild_t *rb, const char *sql) {
    return ol_pg_exec_ok(rb->pg, sql, rb->errstr, rb->errstr_size);
}

ol_err_t ol_rebuild__execf(rebuild_t *rb, const char *fmt, ...) {
    char sql[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return ol_rebuild__exec(rb, sql);
}

/* Drops the old projection once swapped out. Readers that began on it may
 * still hold some of its tables while wanting others: the drop, which locks
 * them one by one, can then be chosen as a deadlock's victim. It is tried
 * again a few times; if readers keep it, the swap still stands (the old
 * schema is only garbage) and the command says how to drop it later. */
void ol_rebuild__drop_old(rebuild_t *rb) {
    for (int attempt = 1;; attempt++) {
        ol_err_t err = ol_rebuild__execf(rb, "drop schema %s cascade", rb->old);
        if (!err)
            return;
        if (err != OL_ERR_TRANSIENT || attempt == 10) {
            fprintf(stderr,
                    "rebuild: warning: the old projection could not be dropped (%s); the swap stands: drop it later "
                    "with `drop schema %s cascade`\n",
                    rb->errstr, rb->old);
            return;
        }
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* The rows of a query with one text parameter; PQclear the result. */
ol_err_t ol_rebuild__query1(rebuild_t *rb, PGresult **out, const char *sql, const char *param) {
    const char *params[] = {param};
    return ol_pg_query(out, rb->pg, sql, 1, params, rb->errstr, rb->errstr_size);
}

ol_err_t ol_rebuild__list_tables(rebuild_t *rb) {
    PGresult *res;
    ol_err_t err =
        ol_rebuild__query1(rb, &res,
                           "select c.relname, coalesce(array_to_string(c.reloptions, ', '), '') from pg_class c "
                           "join pg_namespace n on n.oid = c.relnamespace "
                           "where n.nspname = $1 and c.relkind = 'r' order by c.relname",
                           rb->live);
    if (err)
        return err;
    rb->ntables = 0;
    for (int i = 0; i < PQntuples(res) && rb->ntables < MAX_TABLES; i++) {
        snprintf(rb->tables[rb->ntables], sizeof(rb->tables[0]), "%s", PQgetvalue(res, i, 0));
        snprintf(rb->relopts[rb->ntables++], sizeof(rb->relopts[0]), "%s", PQgetvalue(res, i, 1));
    }
    PQclear(res);
    if (!rb->ntables)
        return ol_errf(rb->errstr, rb->errstr_size, OL_ERR_NOT_FOUND,
                       "schema %s has no tables: run `orderlog migrate` first", rb->live);
    return OL_ERR_OK;
}

/* Constraints of live.table whose type is in types, as (name, definition)
 * printed while search_path is the live schema (so unqualified). */
static ol_err_t constraints(rebuild_t *rb, const char *table, const char *types, PGresult **out) {
    char sql[1024];
    ol_err_t err = ol_rebuild__execf(rb, "set search_path to %s", rb->live);
    if (err)
        return err;
    snprintf(sql, sizeof(sql),
             "select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid = $1::regclass and "
             "strpos('%s', contype::text) > 0 order by strpos('%s', contype::text), conname",
             types, types);
    char rel[256];
    snprintf(rel, sizeof(rel), "%s.%s", rb->live, table);
    err = ol_rebuild__query1(rb, out, sql, rel);
    ol_rebuild__exec(rb, "reset search_path");
    return err;
}

static ol_err_t add_constraints(rebuild_t *rb, const char *table, const char *types) {
    PGresult *res;
    ol_err_t err = constraints(rb, table, types, &res);
    if (err)
        return err;
    /* foreign keys name their target unqualified: resolve it in the shadow */
    if (!(err = ol_rebuild__execf(rb, "set search_path to %s", rb->shadow))) {
        for (int i = 0; i < PQntuples(res) && !err; i++)
            err = ol_rebuild__execf(rb, "alter table %s.%s add constraint %s %s", rb->shadow, table,
                                    PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
        ol_rebuild__exec(rb, "reset search_path");
    }
    PQclear(res);
    return err;
}

/* The secondary indexes of live.table, on the shadow's table. */
static ol_err_t add_indexes(rebuild_t *rb, const char *table) {
    ol_err_t err;
    PGresult *res;
    const char *params[] = {rb->live, table};
    if ((err = ol_pg_query(&res, rb->pg,
                           "select i.indexdef from pg_indexes i where i.schemaname = $1 and i.tablename = $2 and not "
                           "exists (select 1 from pg_constraint c join pg_namespace n on n.oid = c.connamespace where "
                           "n.nspname = i.schemaname and c.conname = i.indexname)",
                           2, params, rb->errstr, rb->errstr_size)))
        return err;
    char on[200];
    snprintf(on, sizeof(on), " ON %s.", rb->live);
    for (int i = 0; i < PQntuples(res) && !err; i++) {
        const char *def = PQgetvalue(res, i, 0), *at = strstr(def, on);
        if (!at)
            continue;
        err = ol_rebuild__execf(rb, "%.*s ON %s.%s", (int)(at - def), def, rb->shadow, at + strlen(on));
    }
    PQclear(res);
    return err;
}

ol_err_t ol_rebuild__create_shadow(rebuild_t *rb) {
    ol_err_t err;
    if ((err = ol_rebuild__execf(rb, "drop schema if exists %s cascade", rb->shadow)) ||
        (err = ol_rebuild__execf(rb, "create schema %s", rb->shadow)))
        return err;
    for (int t = 0; t < rb->ntables; t++) {
        /* unlogged while loading: a failed rebuild drops the shadow anyway */
        if ((err = ol_rebuild__execf(rb,
                                     "create unlogged table %s.%s (like %s.%s including defaults including generated)",
                                     rb->shadow, rb->tables[t], rb->live, rb->tables[t])))
            return err;
        /* like copies no storage parameters: the pages keep their room for
         * updates (migration 006) */
        if (*rb->relopts[t] &&
            (err = ol_rebuild__execf(rb, "alter table %s.%s set (%s)", rb->shadow, rb->tables[t], rb->relopts[t])))
            return err;
        /* the bulk load reads nothing back: only the tables upserted per
         * batch (the offsets, the sale tables) need their key while loading */
        if (!ol_project_bulk_fills(rb->tables[t]) && (err = add_constraints(rb, rb->tables[t], "p")))
            return err;
    }
    return OL_ERR_OK;
}

/* One table of the shadow made ready, on rb->pg: in one ALTER TABLE, made
 * logged (durable from here on: it is about to become the live
 * projection), its primary key (unless it had it for the load) and its
 * check, unique and exclusion constraints, so that the rewrite that makes
 * it logged checks them all in its one scan; then its secondary indexes.
 * us[2]: where the time went. */
static ol_err_t table_ready(rebuild_t *rb, int t, int64_t us[2]) {
    ol_err_t err;
    int64_t t0 = ol_time_mono_us();
    PGresult *res;
    /* memory for its index builds: about the table's size (the sort of a key
     * holds its values and a header per row), so that they sort in memory,
     * within rebuild.maintenance.work.mem.mb */
    char rel[300];
    snprintf(rel, sizeof(rel), "%s.%s", rb->shadow, rb->tables[t]);
    if ((err = ol_rebuild__query1(rb, &res, "select pg_relation_size($1::regclass) / 1048576", rel)))
        return err;
    long long mb = atoll(PQgetvalue(res, 0, 0)) + 64, most = ol_conf_int(rb->conf, "rebuild.maintenance.work.mem.mb");
    PQclear(res);
    if ((err = ol_rebuild__execf(rb, "set maintenance_work_mem = '%lldMB'", mb < most ? mb : most)))
        return err;
    if ((err = constraints(rb, rb->tables[t], ol_project_bulk_fills(rb->tables[t]) ? "pcux" : "cux", &res)))
        return err;
    size_t cap = 512, len = 0;
    for (int i = 0; i < PQntuples(res); i++)
        cap += 32 + (size_t)PQgetlength(res, i, 0) + (size_t)PQgetlength(res, i, 1);
    char *sql = ol_xmalloc(cap);
    len += (size_t)snprintf(sql + len, cap - len, "alter table %s.%s set logged", rb->shadow, rb->tables[t]);
    for (int i = 0; i < PQntuples(res); i++)
        len += (size_t)snprintf(sql + len, cap - len, ", add constraint %s %s", PQgetvalue(res, i, 0),
                                PQgetvalue(res, i, 1));
    PQclear(res);
    /* names in the definitions resolve in the shadow */
    if (!(err = ol_rebuild__execf(rb, "set search_path to %s", rb->shadow))) {
        err = ol_rebuild__exec(rb, sql);
        ol_rebuild__exec(rb, "reset search_path");
    }
    free(sql);
    if (err)
        return err;
    int64_t t1 = ol_time_mono_us();
    err = add_indexes(rb, rb->tables[t]);
    us[0] += t1 - t0;
    us[1] += ol_time_mono_us() - t1;
    return err;
}

/* The tables made ready by two connections at once, the largest first. */
typedef struct readier_s {
    rebuild_t *rb; /* a copy of the rebuild's, on this connection and with this errstr */
    const int *order;
    atomic_int *next;
    int64_t us[2];
    ol_err_t err;
    char errstr[1024];
} readier_t;

static void *readier_main(void *arg) {
    readier_t *r = arg;
    ol_err_t err = OL_ERR_OK;
    /* the session's memory and workers for index builds */
    if ((err = ol_rebuild__execf(r->rb, "set max_parallel_maintenance_workers = %lld",
                                 (long long)ol_conf_int(r->rb->conf, "rebuild.maintenance.workers")))) {
        r->err = err;
        return NULL;
    }
    for (int i; !err && (i = atomic_fetch_add(r->next, 1)) < r->rb->ntables;)
        err = table_ready(r->rb, r->order[i], r->us);
    r->err = err;
    return NULL;
}

static ol_err_t tables_ready(rebuild_t *rb) {
    int order[MAX_TABLES];
    PGresult *res;
    ol_err_t err =
        ol_rebuild__query1(rb, &res,
                           "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where "
                           "n.nspname = $1 and c.relkind = 'r' order by pg_relation_size(c.oid) desc, c.relname",
                           rb->shadow);
    if (err)
        return err;
    int n = 0;
    for (int i = 0; i < PQntuples(res); i++)
        for (int t = 0; t < rb->ntables; t++)
            if (!strcmp(rb->tables[t], PQgetvalue(res, i, 0)) && n < MAX_TABLES)
                order[n++] = t;
    PQclear(res);
    if (n != rb->ntables)
        return ol_errf(rb->errstr, rb->errstr_size, OL_ERR_NOT_FOUND, "schema %s lacks tables of %s", rb->shadow,
                       rb->live);
    atomic_int next = 0;
    readier_t r[2] = {{ol_xmalloc(sizeof(rebuild_t)), order, &next, {0, 0}, OL_ERR_OK, {0}},
                      {ol_xmalloc(sizeof(rebuild_t)), order, &next, {0, 0}, OL_ERR_OK, {0}}};
    for (int i = 0; i < 2; i++) {
        memcpy(r[i].rb, rb, sizeof(*rb));
        r[i].rb->pg = i ? rb->pg2 : rb->pg;
        r[i].rb->errstr = r[i].errstr;
        r[i].rb->errstr_size = sizeof(r[i].errstr);
    }
    int64_t t0 = ol_time_mono_us();
    pthread_t thread;
    bool threaded = rb->pg2 && !pthread_create(&thread, NULL, readier_main, &r[1]);
    readier_main(&r[0]);
    if (threaded)
        pthread_join(thread, NULL);
    err = r[0].err ? r[0].err : r[1].err;
    if (err)
        ol_errf(rb->errstr, rb->errstr_size, err, "%s", r[0].err ? r[0].errstr : r[1].errstr);
    else
        fprintf(stderr,
                "rebuild: tables made logged, keyed, indexed and constrained in %.1f s on %d connections (made "
                "logged with their keys and checks %.1f s, secondary indexes %.1f s of work)\n",
                (double)(ol_time_mono_us() - t0) / 1e6, threaded ? 2 : 1, (double)(r[0].us[0] + r[1].us[0]) / 1e6,
                (double)(r[0].us[1] + r[1].us[1]) / 1e6);
    free(r[0].rb);
    free(r[1].rb);
    return err;
}

/* After the load: logged tables, keys and indexes, constraints, views,
 * comments. */
ol_err_t ol_rebuild__finish_shadow(rebuild_t *rb) {
    ol_err_t err;
    if ((err = tables_ready(rb)))
        return err;
    /* foreign keys once every table has its keys */
    for (int t = 0; t < rb->ntables; t++)
        if ((err = add_constraints(rb, rb->tables[t], "f")))
            return err;
    PGresult *res;
    /* views, defined on the shadow's tables (their text names them unqualified) */
    if ((err = ol_rebuild__execf(rb, "set search_path to %s", rb->live)))
        return err;
    err = ol_rebuild__query1(rb, &res,
                             "select viewname, pg_get_viewdef(format('%I.%I', schemaname, viewname)::regclass) "
                             "from pg_views where schemaname = $1 order by viewname",
                             rb->live);
    ol_rebuild__exec(rb, "reset search_path");
    if (err)
        return err;
    if (!(err = ol_rebuild__execf(rb, "set search_path to %s", rb->shadow))) {
        for (int i = 0; i < PQntuples(res) && !err; i++)
            err = ol_rebuild__execf(rb, "create view %s.%s as %s", rb->shadow, PQgetvalue(res, i, 0),
                                    PQgetvalue(res, i, 1));
        ol_rebuild__exec(rb, "reset search_path");
    }
    PQclear(res);
    if (err)
        return err;
    /* comments, so that people reading the tables keep their documentation:
     * a table's own (attname NULL) and its columns' */
    if ((err = ol_rebuild__query1(
             rb, &res,
             "select c.relname, null::name, obj_description(c.oid, 'pg_class'), c.relkind from pg_class c "
             "join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relkind in ('r', 'v') "
             "and obj_description(c.oid, 'pg_class') is not null union all "
             "select c.relname, a.attname, col_description(c.oid, a.attnum), c.relkind from pg_class c join "
             "pg_namespace n on n.oid = c.relnamespace join pg_attribute a on a.attrelid = c.oid and "
             "a.attnum > 0 and not a.attisdropped where n.nspname = $1 and c.relkind in ('r', 'v') and "
             "col_description(c.oid, a.attnum) is not null",
             rb->live)))
        return err;
    for (int i = 0; i < PQntuples(res) && !err; i++) {
        char *lit = PQescapeLiteral(rb->pg, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2));
        if (PQgetisnull(res, i, 1))
            err = ol_rebuild__execf(rb, "comment on %s %s.%s is %s", *PQgetvalue(res, i, 3) == 'v' ? "view" : "table",
                                    rb->shadow, PQgetvalue(res, i, 0), lit);
        else
            err = ol_rebuild__execf(rb, "comment on column %s.%s.%s is %s", rb->shadow, PQgetvalue(res, i, 0),
                                    PQgetvalue(res, i, 1), lit);
        PQfreemem(lit);
    }
    PQclear(res);
    return err;
}
