/* orderlog rebuild: replays the topics into a fresh shadow schema and swaps
 * it in for the live projection.
 *
 *  1. shadow schema <schema>_rebuild: every table of the live schema, with
 *     its columns (generated ones too) and defaults, unlogged; the tables
 *     the bulk load fills get their primary keys after it, the others (the
 *     offsets, the sale tables, which the replay upserts by primary key)
 *     before; the other indexes and constraints would slow the load;
 *  2. the projection role replays every topic from the beginning into it,
 *     in passes over a few partitions or a share of one partition's keys,
 *     each folded in memory (at most rebuild.bulk.rows rows) and written
 *     with COPY when it ends (its own Kafka group; offsets stored under the
 *     live group's name, so they move with the swap), showing progress:
 *     the design is in consumers/README.md, "Rebuild in passes";
 *  3. made logged; keys, secondary indexes, check and foreign-key
 *     constraints and comments are added, copied from the live schema;
 *  4. in one transaction that holds the live offsets (the live projector
 *     waits, readers do not): if the live projector got further than the
 *     shadow, catch up and try again; compare every table (row count and a
 *     sum of row hashes, both schemas at once); rename the live schema away
 *     and the shadow in. Readers see the old schema or the new one, never a
 *     partial table.
 * --verify-only stops after the comparison and drops the shadow. */
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/pg.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/project.h"
#include "consumers/runtime.h"
#include "consumers/sale_project.h"

#define MAX_TABLES 64
#define MAX_TOPICS 8
#define MAX_PARTS 1024
#define MAX_PASS_UNITS 256

/* A share of the log that one pass folds: the keys of partition p of the
 * bulk topics (orders, after-sales, skus) whose class hash modulo k is j. */
typedef struct unit_s {
    int32_t partition;
    uint32_t k, j;
} unit_t;

typedef struct rebuild_s {
    const ol_conf_t *conf;
    PGconn *pg;
    char live[128], shadow[128], old[160];
    char group[256]; /* the live projector's group: the offsets the shadow stores */
    char tables[MAX_TABLES][64];
    char relopts[MAX_TABLES][256]; /* the live table's storage parameters (fillfactor) */
    bool text_sum[MAX_TABLES];     /* compared by the md5 of the rows' text (table_sum) */
    int ntables;
    int64_t last_print_us, start_us;
    char *errstr;
    size_t errstr_size;
    PGconn *pg2; /* a second connection: two tables written, indexed or summed at once */
    /* the passes (see README.md here: "Rebuild in passes") */
    const char *const *topics; /* the role's */
    bool bulk_topic[MAX_TOPICS];
    char topic_names[MAX_TOPICS][256];
    int ntopics;
    int32_t nparts;                                /* the most partitions of a bulk topic */
    int64_t ends[MAX_TOPICS][MAX_PARTS];           /* high watermarks at the start: where the passes stop */
    int64_t part_events[MAX_PARTS];                /* events of the bulk topics per partition number */
    atomic_llong last_seen[MAX_TOPICS][MAX_PARTS]; /* the last offset before the end a pass saw */
    int64_t log_events;                            /* of every topic replayed, at the start */
    unit_t *queue;                                 /* what is left, in order */
    size_t nqueue, queue_cap;
    unit_t pass[MAX_PASS_UNITS];
    int npass;
    bool sale_done;                /* the sale topics are replayed (by the first pass that completed) */
    double rows_per_event;         /* learned from the passes so far */
    int64_t events_done;           /* replayed by the completed passes */
    atomic_llong pass_sale_events; /* of the sale topics, in the pass running */
    int passes, passes_given_up;
    size_t peak_rows, peak_bytes;
} rebuild_t;

static ol_err_t exec(rebuild_t *rb, const char *sql) {
    return ol_pg_exec_ok(rb->pg, sql, rb->errstr, rb->errstr_size);
}

static ol_err_t execf(rebuild_t *rb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ol_err_t execf(rebuild_t *rb, const char *fmt, ...) {
    char sql[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return exec(rb, sql);
}

/* Drops the old projection once swapped out. Readers that began on it may
 * still hold some of its tables while wanting others: the drop, which locks
 * them one by one, can then be chosen as a deadlock's victim. It is tried
 * again a few times; if readers keep it, the swap still stands (the old
 * schema is only garbage) and the command says how to drop it later. */
static void drop_old(rebuild_t *rb) {
    for (int attempt = 1;; attempt++) {
        ol_err_t err = execf(rb, "drop schema %s cascade", rb->old);
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
static ol_err_t query1(rebuild_t *rb, PGresult **out, const char *sql, const char *param) {
    const char *params[] = {param};
    return ol_pg_query(out, rb->pg, sql, 1, params, rb->errstr, rb->errstr_size);
}

static ol_err_t list_tables(rebuild_t *rb) {
    PGresult *res;
    ol_err_t err = query1(rb, &res,
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
    ol_err_t err = execf(rb, "set search_path to %s", rb->live);
    if (err)
        return err;
    snprintf(sql, sizeof(sql),
             "select conname, pg_get_constraintdef(oid) from pg_constraint where conrelid = $1::regclass and "
             "strpos('%s', contype::text) > 0 order by strpos('%s', contype::text), conname",
             types, types);
    char rel[256];
    snprintf(rel, sizeof(rel), "%s.%s", rb->live, table);
    err = query1(rb, out, sql, rel);
    exec(rb, "reset search_path");
    return err;
}

static ol_err_t add_constraints(rebuild_t *rb, const char *table, const char *types) {
    PGresult *res;
    ol_err_t err = constraints(rb, table, types, &res);
    if (err)
        return err;
    /* foreign keys name their target unqualified: resolve it in the shadow */
    if (!(err = execf(rb, "set search_path to %s", rb->shadow))) {
        for (int i = 0; i < PQntuples(res) && !err; i++)
            err = execf(rb, "alter table %s.%s add constraint %s %s", rb->shadow, table, PQgetvalue(res, i, 0),
                        PQgetvalue(res, i, 1));
        exec(rb, "reset search_path");
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
        err = execf(rb, "%.*s ON %s.%s", (int)(at - def), def, rb->shadow, at + strlen(on));
    }
    PQclear(res);
    return err;
}

static ol_err_t create_shadow(rebuild_t *rb) {
    ol_err_t err;
    if ((err = execf(rb, "drop schema if exists %s cascade", rb->shadow)) ||
        (err = execf(rb, "create schema %s", rb->shadow)))
        return err;
    for (int t = 0; t < rb->ntables; t++) {
        /* unlogged while loading: a failed rebuild drops the shadow anyway */
        if ((err = execf(rb, "create unlogged table %s.%s (like %s.%s including defaults including generated)",
                         rb->shadow, rb->tables[t], rb->live, rb->tables[t])))
            return err;
        /* like copies no storage parameters: the pages keep their room for
         * updates (migration 006) */
        if (*rb->relopts[t] &&
            (err = execf(rb, "alter table %s.%s set (%s)", rb->shadow, rb->tables[t], rb->relopts[t])))
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
    if ((err = query1(rb, &res, "select pg_relation_size($1::regclass) / 1048576", rel)))
        return err;
    long long mb = atoll(PQgetvalue(res, 0, 0)) + 64, most = ol_conf_int(rb->conf, "rebuild.maintenance.work.mem.mb");
    PQclear(res);
    if ((err = execf(rb, "set maintenance_work_mem = '%lldMB'", mb < most ? mb : most)))
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
    if (!(err = execf(rb, "set search_path to %s", rb->shadow))) {
        err = exec(rb, sql);
        exec(rb, "reset search_path");
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
    if ((err = execf(r->rb, "set max_parallel_maintenance_workers = %lld",
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
    ol_err_t err = query1(rb, &res,
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
static ol_err_t finish_shadow(rebuild_t *rb) {
    ol_err_t err;
    if ((err = tables_ready(rb)))
        return err;
    /* foreign keys once every table has its keys */
    for (int t = 0; t < rb->ntables; t++)
        if ((err = add_constraints(rb, rb->tables[t], "f")))
            return err;
    PGresult *res;
    /* views, defined on the shadow's tables (their text names them unqualified) */
    if ((err = execf(rb, "set search_path to %s", rb->live)))
        return err;
    err = query1(rb, &res,
                 "select viewname, pg_get_viewdef(format('%I.%I', schemaname, viewname)::regclass) "
                 "from pg_views where schemaname = $1 order by viewname",
                 rb->live);
    exec(rb, "reset search_path");
    if (err)
        return err;
    if (!(err = execf(rb, "set search_path to %s", rb->shadow))) {
        for (int i = 0; i < PQntuples(res) && !err; i++)
            err = execf(rb, "create view %s.%s as %s", rb->shadow, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
        exec(rb, "reset search_path");
    }
    PQclear(res);
    if (err)
        return err;
    /* comments, so that people reading the tables keep their documentation:
     * a table's own (attname NULL) and its columns' */
    if ((err = query1(rb, &res,
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
            err = execf(rb, "comment on %s %s.%s is %s", *PQgetvalue(res, i, 3) == 'v' ? "view" : "table", rb->shadow,
                        PQgetvalue(res, i, 0), lit);
        else
            err = execf(rb, "comment on column %s.%s.%s is %s", rb->shadow, PQgetvalue(res, i, 0),
                        PQgetvalue(res, i, 1), lit);
        PQfreemem(lit);
    }
    PQclear(res);
    return err;
}

/* SIGTERM, SIGINT: the rebuild stops (the replay running ends after its
 * batch) and drops the shadow; the live projection stays as it was. */
static volatile sig_atomic_t stopping;
static ol_rt_t *volatile replaying;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
    if (replaying)
        ol_rt_stop(replaying);
}

static ol_err_t check_stop(rebuild_t *rb) {
    return stopping ? ol_errf(rb->errstr, rb->errstr_size, OL_ERR_INVALID, "stopped by a signal: nothing swapped")
                    : OL_ERR_OK;
}

static bool pass_takes_partition(void *opaque, int topic, int32_t partition);
static bool pass_takes_record(void *opaque, int topic, int32_t partition, int64_t offset, const void *key,
                              size_t key_len);

static void queue_push(rebuild_t *rb, unit_t u) {
    if (rb->nqueue == rb->queue_cap) {
        rb->queue_cap = rb->queue_cap ? rb->queue_cap * 2 : 64;
        rb->queue = ol_xrealloc(rb->queue, rb->queue_cap * sizeof(*rb->queue));
    }
    rb->queue[rb->nqueue++] = u;
}

static void progress(void *opaque, const ol_rt_t *rt) {
    rebuild_t *rb = opaque;
    int64_t now = ol_time_mono_us();
    if (now - rb->last_print_us < 1000000)
        return;
    rb->last_print_us = now;
    ol_rt_stats_t st;
    ol_rt_stats(rt, &st);
    int64_t done = rb->events_done + st.events;
    double secs = (double)(now - rb->start_us) / 1e6;
    if (rb->log_events > 0)
        fprintf(stderr, "rebuild: %5.1f%% (%lld of %lld events, pass %d), %.0f events/s\n",
                100.0 * (double)done / (double)rb->log_events, (long long)done, (long long)rb->log_events,
                rb->passes + 1, (double)done / secs);
    else
        fprintf(stderr, "rebuild: %lld events, %.0f events/s\n", (long long)done, (double)done / secs);
}

/* Replays into the shadow: with bulk, the share of the log the current
 * pass takes, to the ends planned; without, every partition from its
 * stored offset until each reached its end (the catch-up). */
static ol_err_t replay(rebuild_t *rb, ol_project_bulk_t *bulk, ol_rt_stats_t *stats) {
    ol_conf_t *conf = ol_conf_dup(rb->conf);
    char kafka_group[256];
    snprintf(kafka_group, sizeof(kafka_group), "%.200srebuild-%d", ol_conf_str(rb->conf, "topic.prefix"),
             (int)getpid());
    ol_conf_set(conf, "projection.schema", rb->shadow, NULL, 0);
    ol_conf_set(conf, "consumer.synchronous.commit", "false", NULL, 0); /* unlogged tables: nothing to wait for */
    ol_conf_set(conf, "consumer.group.id", rb->group, NULL, 0);
    ol_rt_role_t role = *ol_project_role();
    role.kafka_group = kafka_group;
    role.opaque = bulk;
    role.parallel_apply = !bulk; /* the bulk rows are one state */
    if (bulk) {
        role.takes_partition = pass_takes_partition;
        role.takes_record = pass_takes_record;
    }
    ol_err_t err = OL_ERR_OK;
    ol_rt_t *rt = ol_rt_new(conf, &role, rb->errstr, rb->errstr_size);
    if (!rt) {
        ol_conf_destroy(conf);
        return OL_ERR_UNREACHABLE;
    }
    replaying = rt;
    ol_rt_set_dlq(rt, false); /* the live projector sent them already */
    ol_rt_on_batch(rt, progress, rb);
    err = stopping ? OL_ERR_OK : ol_rt_run(rt, true, rb->errstr, rb->errstr_size);
    replaying = NULL;
    ol_rt_stats(rt, stats);
    ol_rt_destroy(rt);
    char kerr[512];
    if (ol_kafka_delete_group(conf, kafka_group, kerr, sizeof(kerr)))
        ol_log_warn("%s", kerr); /* harmless: the group only keeps its offsets */
    ol_conf_destroy(conf);
    return err ? err : check_stop(rb);
}

/* ---- the passes ----------------------------------------------------------- */

/* The class of a key: a hash of its own (not murmur2, which placed the key
 * on its partition, nor the runtime's, which picks its worker), so that
 * the classes of a partition are of about even size and each folds on
 * every worker. */
static uint32_t key_class_hash(const void *key, size_t len) {
    const unsigned char *p = key;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t)h;
}

/* The runtime's callbacks (takes_partition, takes_record) during a pass:
 * the bulk topics' partitions of the pass's units, the sale topics until a
 * pass replayed them. */
static bool pass_takes_partition(void *opaque, int topic, int32_t partition) {
    rebuild_t *rb = ol_project_bulk_owner(opaque);
    if (topic < 0 || topic >= rb->ntopics)
        return false;
    if (!rb->bulk_topic[topic])
        return !rb->sale_done;
    for (int i = 0; i < rb->npass; i++)
        if (rb->pass[i].partition == partition)
            return true;
    return false;
}

/* The poll thread, as records arrive (the progress line reads the atomics
 * from the applier). */
static bool pass_takes_record(void *opaque, int topic, int32_t partition, int64_t offset, const void *key,
                              size_t key_len) {
    rebuild_t *rb = ol_project_bulk_owner(opaque);
    if (topic < 0 || topic >= rb->ntopics)
        return true;
    if (!rb->bulk_topic[topic]) {
        atomic_fetch_add(&rb->pass_sale_events, 1);
        return true;
    }
    /* past the end planned: the catch-up's (the passes over one partition
     * must all stop at the same record) */
    if (partition < 0 || partition >= MAX_PARTS || offset >= rb->ends[topic][partition])
        return false;
    atomic_llong *last = &rb->last_seen[topic][partition];
    for (long long seen = atomic_load(last); offset > seen && !atomic_compare_exchange_weak(last, &seen, offset);)
        ;
    uint32_t h = key_class_hash(key, key_len);
    for (int i = 0; i < rb->npass; i++) {
        const unit_t *u = &rb->pass[i];
        if (u->partition == partition && h % u->k == u->j)
            return true;
    }
    return false;
}

/* The watermarks of every partition replayed: where the passes stop, and
 * how many events each partition number holds. */
static ol_err_t plan(rebuild_t *rb) {
    rd_kafka_t *rk = ol_kafka_new(rb->conf, OL_KAFKA_ADMIN, "orderlog-rebuild", NULL, rb->errstr, rb->errstr_size);
    if (!rk)
        return OL_ERR_CONFIG;
    ol_err_t err = OL_ERR_OK;
    int64_t deadline = ol_time_mono_us() + ol_conf_int(rb->conf, "broker.wait.ms") * 1000;
    for (rb->ntopics = 0; rb->topics[rb->ntopics] && rb->ntopics < MAX_TOPICS && !err; rb->ntopics++) {
        int t = rb->ntopics;
        char *name = rb->topic_names[t];
        ol_kafka_topic_name(rb->conf, rb->topics[t], name, sizeof(rb->topic_names[0]));
        rb->bulk_topic[t] = !ol_sale_project_takes(rb->topics[t]);
        int32_t n = ol_kafka_partition_count(rk, rb->conf, name);
        if (n > MAX_PARTS) {
            err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_UNSUPPORTED, "topic %s has %d partitions, more than %d",
                          name, (int)n, MAX_PARTS);
            break;
        }
        for (int32_t p = 0; p < n; p++) {
            int64_t lo = 0, hi = 0;
            rd_kafka_resp_err_t kerr = ol_kafka_watermarks(rk, name, p, 5000, deadline, &lo, &hi);
            if (kerr) {
                err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_KAFKA, "could not read the end of %s[%d]: %s", name,
                              (int)p, rd_kafka_err2str(kerr));
                break;
            }
            rb->log_events += hi - lo;
            if (!rb->bulk_topic[t])
                continue;
            rb->ends[t][p] = hi;
            rb->part_events[p] += hi - lo;
            if (p + 1 > rb->nparts)
                rb->nparts = p + 1;
        }
    }
    rd_kafka_destroy(rk);
    /* the queue is a stack: its last unit goes first */
    for (int32_t p = rb->nparts - 1; p >= 0 && !err; p--)
        if (rb->part_events[p] > 0)
            queue_push(rb, (unit_t){p, 1, 0});
    return err;
}

/* Rows a unit is expected to fold, from what the passes so far held per
 * event (with a margin: keys are not spread quite evenly). */
static double unit_rows(const rebuild_t *rb, const unit_t *u) {
    return (double)rb->part_events[u->partition] / u->k * rb->rows_per_event * 1.15;
}

/* The next pass: units from the queue while their rows fit in max_rows
 * (0: everything). A partition alone over it goes in classes of its keys. */
static void next_pass(rebuild_t *rb, size_t max_rows) {
    double rows = 0;
    rb->npass = 0;
    while (rb->nqueue && rb->npass < MAX_PASS_UNITS) {
        unit_t u = rb->queue[rb->nqueue - 1];
        double r = unit_rows(rb, &u);
        if (max_rows && rb->npass == 0 && u.k == 1 && r > (double)max_rows) {
            uint32_t k = (uint32_t)ceil(r / (double)max_rows);
            rb->nqueue--;
            for (uint32_t j = k; j-- > 0;)
                queue_push(rb, (unit_t){u.partition, k, j});
            continue;
        }
        if (max_rows && rb->npass > 0 && rows + r > (double)max_rows)
            break;
        rb->pass[rb->npass++] = u;
        rb->nqueue--;
        rows += r;
    }
}

/* The shadow's offsets of the pass's partitions of the bulk topics: with
 * seen, where the pass stopped (the last record before the end planned,
 * plus one: what the live projector stores once it applied that record);
 * without, none (a pass over a share of the keys reads the partition from
 * its start). */
static ol_err_t pass_offsets(rebuild_t *rb, bool seen) {
    char *group = PQescapeLiteral(rb->pg, rb->group, strlen(rb->group));
    ol_err_t err = OL_ERR_OK;
    for (int t = 0; t < rb->ntopics && !err; t++) {
        if (!rb->bulk_topic[t])
            continue;
        char *topic = PQescapeLiteral(rb->pg, rb->topic_names[t], strlen(rb->topic_names[t]));
        for (int i = 0; i < rb->npass && !err; i++) {
            int32_t p = rb->pass[i].partition;
            long long last = atomic_load(&rb->last_seen[t][p]);
            err = execf(rb, "delete from %s.consumer_offsets where group_id = %s and topic = %s and partition = %d",
                        rb->shadow, group, topic, (int)p);
            if (!err && seen && last >= 0)
                err = execf(rb,
                            "insert into %s.consumer_offsets (group_id, topic, partition, next_offset) values (%s, %s, "
                            "%d, %lld)",
                            rb->shadow, group, topic, (int)p, last + 1);
        }
        PQfreemem(topic);
    }
    PQfreemem(group);
    return err;
}

/* The process's resident memory now, in MB (0 where /proc has none). */
static long rss_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

static void describe_pass(const rebuild_t *rb, char *out, size_t out_size) {
    size_t len = 0;
    for (int i = 0; i < rb->npass && len + 64 < out_size; i++) {
        const unit_t *u = &rb->pass[i];
        if (u->k == 1)
            len += (size_t)snprintf(out + len, out_size - len, "%s%d", i ? ", " : "", (int)u->partition);
        else
            len += (size_t)snprintf(out + len, out_size - len, "%s%d (keys %u of %u)", i ? ", " : "", (int)u->partition,
                                    u->j + 1, u->k);
    }
}

/* The rows of a pass, written while the next pass folds (on connections
 * of their own): the next one only holds what it folded meanwhile, and a
 * pass's rows go out once the flush before has ended. */
typedef struct flusher_s {
    rebuild_t *rb;
    PGconn *pg[2];
    pthread_t thread;
    bool running;
    ol_project_bulk_t *bulk;
    int pass;
    double secs;
    ol_err_t err;
    char errstr[1024];
} flusher_t;

static void *flusher_main(void *arg) {
    flusher_t *f = arg;
    int64_t t0 = ol_time_mono_us();
    f->err = ol_project_bulk_flush(f->bulk, f->pg[0], f->pg[1], f->rb->shadow, f->errstr, sizeof(f->errstr));
    malloc_trim(0); /* the pass's rows, back to the system */
    f->secs = (double)(ol_time_mono_us() - t0) / 1e6;
    return NULL;
}

/* What a flush that ended says: its error, or its time. */
static ol_err_t flusher_done(flusher_t *f) {
    if (f->err)
        return ol_errf(f->rb->errstr, f->rb->errstr_size, f->err, "%s", f->errstr);
    fprintf(stderr, "rebuild: pass %d written in %.1f s\n", f->pass, f->secs);
    return OL_ERR_OK;
}

/* Waits for the flush running, if any. */
static ol_err_t flusher_wait(flusher_t *f) {
    if (!f->running)
        return OL_ERR_OK;
    pthread_join(f->thread, NULL);
    f->running = false;
    return flusher_done(f);
}

/* Writes bulk's rows once the flush before has ended; returns at once. */
static ol_err_t flusher_start(flusher_t *f, ol_project_bulk_t *bulk, int pass) {
    ol_err_t err = flusher_wait(f);
    if (err)
        return err;
    f->bulk = bulk;
    f->pass = pass;
    if (pthread_create(&f->thread, NULL, flusher_main, f)) {
        flusher_main(f); /* no thread: here and now */
        return flusher_done(f);
    }
    f->running = true;
    return OL_ERR_OK;
}

/* Every pass, each written out with COPY once it ends, while the next one
 * runs. A pass that passes rebuild.bulk.rows is given up and its units
 * split in two. */
static ol_err_t replay_passes(rebuild_t *rb, ol_project_bulk_t *bulks[2], size_t max_rows) {
    bool learned = false;
    int cur = 0;
    flusher_t f = {.rb = rb};
    ol_err_t err = OL_ERR_OK;
    for (int i = 0; i < 2; i++)
        if (!(f.pg[i] = ol_pg_connect(rb->conf, rb->errstr, rb->errstr_size)))
            err = OL_ERR_UNREACHABLE;
    while (rb->nqueue && !err) {
        ol_project_bulk_t *bulk = bulks[cur];
        next_pass(rb, max_rows);
        for (int t = 0; t < MAX_TOPICS; t++)
            for (int i = 0; i < rb->npass; i++)
                atomic_store(&rb->last_seen[t][rb->pass[i].partition], -1);
        atomic_store(&rb->pass_sale_events, 0);
        if ((err = pass_offsets(rb, false)))
            break;
        char what[2048];
        describe_pass(rb, what, sizeof(what));
        int64_t t0 = ol_time_mono_us();
        ol_rt_stats_t st;
        err = replay(rb, bulk, &st);
        int64_t bulk_events = st.events - atomic_load(&rb->pass_sale_events);
        size_t rows = ol_project_bulk_rows(bulk), bytes = ol_project_bulk_bytes(bulk);
        rb->peak_rows = rows > rb->peak_rows ? rows : rb->peak_rows;
        rb->peak_bytes = bytes > rb->peak_bytes ? bytes : rb->peak_bytes;
        if (err == OL_ERR_TOO_LARGE) {
            /* given up: what it folded is forgotten, its units split */
            fprintf(stderr,
                    "rebuild: pass over partitions %s held more than %zu rows after %lld events: splitting it\n", what,
                    max_rows, (long long)bulk_events);
            err = OL_ERR_OK;
            ol_project_bulk_reset(bulk);
            if (rb->pass_sale_events > 0 && !rb->sale_done)
                rb->events_done += atomic_load(&rb->pass_sale_events);
            double seen_rate = bulk_events > 0 ? (double)rows / (double)bulk_events : 1.0;
            if (seen_rate > rb->rows_per_event)
                rb->rows_per_event = seen_rate;
            rb->passes_given_up++;
            for (int i = rb->npass; i-- > 0 && !err;) {
                unit_t u = rb->pass[i];
                if (u.k >= (1u << 20))
                    err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_TOO_LARGE,
                                  "partition %d: a millionth of its keys holds more than %zu rows (rebuild.bulk.rows)",
                                  (int)u.partition, max_rows);
                queue_push(rb, (unit_t){u.partition, u.k * 2, u.j + u.k});
                queue_push(rb, (unit_t){u.partition, u.k * 2, u.j});
            }
            continue;
        }
        /* its offsets now: nothing reads the shadow's before the last flush
         * has ended */
        if (err || (err = pass_offsets(rb, true)))
            break;
        long rss = rss_mb();
        rb->passes++;
        rb->events_done += st.events;
        rb->sale_done = true;
        if (bulk_events > 0) {
            double rate = (double)rows / (double)bulk_events;
            rb->rows_per_event = learned && rb->rows_per_event > rate ? rb->rows_per_event : rate;
            learned = true;
        }
        fprintf(stderr,
                "rebuild: pass %d over partitions %s: %lld events, %zu rows (%zu MB) folded in %.1f s (applying "
                "%.1f s, decoding %.1f s, waiting for records %.1f s); process RSS %ld MB\n",
                rb->passes, what, (long long)st.events, rows, bytes >> 20, (double)(ol_time_mono_us() - t0) / 1e6,
                (double)st.apply_us / 1e6, (double)st.fold_us / 1e6, (double)st.idle_us / 1e6, rss);
        if ((err = flusher_start(&f, bulk, rb->passes)))
            break;
        cur = 1 - cur;
    }
    ol_err_t ferr = flusher_wait(&f);
    for (int i = 0; i < 2; i++)
        if (f.pg[i])
            PQfinish(f.pg[i]);
    return err ? err : ferr;
}

/* Row count and checksum of schema.table ("count:md5"): a 64-bit hash of
 * every row summed over the rows (exactly, as numeric), so no sort and
 * PostgreSQL may scan with parallel workers; the sum hashed once more for
 * the print. The same rows give the same sum in any order; two tables of
 * the same count that differ give the same sum with odds of about 2^-64. The hash is
 * hash_record_extended, which hashes each column's value with its type's
 * hash function (no text output: about 4 times faster than the md5 of each
 * row's text), so equal values count as equal (1.0 = 1.00 as numeric); a
 * table with a column of a type without one (text_sum) hashes the rows'
 * text with md5 instead. */
static ol_err_t table_sum(PGconn *pg, const char *schema, const char *table, bool text_sum, char *out, size_t out_size,
                          char *errstr, size_t errstr_size) {
    char sql[1024];
    if (!strcmp(table, "consumer_offsets")) /* updated_at differs by nature */
        snprintf(sql, sizeof(sql),
                 "select count(*) || ':' || md5(coalesce(sum(hashtextextended(group_id || '/' || topic || '/' || "
                 "partition || '=' || next_offset, 0)), 0)::text) from %s.%s",
                 schema, table);
    else if (text_sum)
        snprintf(sql, sizeof(sql),
                 "select count(*) || ':' || md5(coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0) || '/' "
                 "|| coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)) from (select md5(t::text) as h "
                 "from %s.%s t) x",
                 schema, table);
    else
        snprintf(sql, sizeof(sql),
                 "select count(*) || ':' || md5(coalesce(sum(hash_record_extended(t, 0)), 0)::text) from %s.%s t",
                 schema, table);
    PGresult *res;
    ol_err_t err = ol_pg_query(&res, pg, sql, 0, NULL, errstr, errstr_size);
    if (err)
        return err;
    snprintf(out, out_size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return OL_ERR_OK;
}

/* Which tables have a column whose type cannot be hashed (table_sum):
 * asked of a row of each live table, before the comparison's transaction
 * (where the failure would end it). */
static void probe_sums(rebuild_t *rb) {
    for (int t = 0; t < rb->ntables; t++) {
        char sql[512];
        snprintf(sql, sizeof(sql), "select hash_record_extended(t, 0) from %s.%s t limit 1", rb->live, rb->tables[t]);
        char errstr[512];
        rb->text_sum[t] =
            ol_pg_query(NULL, rb->pg2 ? rb->pg2 : rb->pg, sql, 0, NULL, errstr, sizeof(errstr)) != OL_ERR_OK;
        if (rb->text_sum[t])
            ol_log_info("table %s is compared by the md5 of its rows' text: %s", rb->tables[t], errstr);
    }
}

/* The sums of every table of one schema, on a connection of its own. */
typedef struct sums_s {
    rebuild_t *rb;
    PGconn *pg;
    const char *schema;
    char (*out)[128];
    ol_err_t err;
    char errstr[1024];
} sums_t;

static void *sums_main(void *arg) {
    sums_t *s = arg;
    for (int t = 0; t < s->rb->ntables && !s->err; t++)
        s->err = table_sum(s->pg, s->schema, s->rb->tables[t], s->rb->text_sum[t], s->out[t], sizeof(s->out[0]),
                           s->errstr, sizeof(s->errstr));
    return NULL;
}

/* Compares every table; prints one line per table; *equal set. The live
 * schema is summed in the caller's transaction (which holds the live
 * offsets, so the live projector waits), the shadow, which only this
 * rebuild writes, at the same time on the second connection. */
static ol_err_t compare(rebuild_t *rb, bool *equal) {
    *equal = true;
    char(*a)[128] = ol_xcalloc(MAX_TABLES, sizeof(*a)), (*b)[128] = ol_xcalloc(MAX_TABLES, sizeof(*b));
    sums_t live = {rb, rb->pg, rb->live, a, OL_ERR_OK, {0}}, shadow = {rb, rb->pg2, rb->shadow, b, OL_ERR_OK, {0}};
    pthread_t thread;
    bool threaded = rb->pg2 && !pthread_create(&thread, NULL, sums_main, &shadow);
    sums_main(&live);
    if (threaded)
        pthread_join(thread, NULL);
    else
        shadow.pg = rb->pg, sums_main(&shadow);
    ol_err_t err = live.err ? live.err : shadow.err;
    if (err) {
        ol_errf(rb->errstr, rb->errstr_size, err, "%s", live.err ? live.errstr : shadow.errstr);
    } else {
        printf("%-20s %-44s %-44s\n", "table", "live (rows:md5)", "rebuilt (rows:md5)");
        for (int t = 0; t < rb->ntables; t++) {
            bool same = !strcmp(a[t], b[t]);
            *equal = *equal && same;
            printf("%-20s %-44s %-44s %s\n", rb->tables[t], a[t], b[t], same ? "same" : "DIFFERENT");
        }
    }
    free(a);
    free(b);
    return err;
}

/* Whether the live projector stored an offset beyond the shadow's (then the
 * shadow must catch up before it can replace the live schema). Only its
 * group: the shadow never holds another's. */
static ol_err_t live_ahead(rebuild_t *rb, bool *ahead) {
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "select count(*) from %s.consumer_offsets l left join %s.consumer_offsets s using (group_id, topic, "
             "partition) where l.group_id = $1 and l.next_offset > coalesce(s.next_offset, -1)",
             rb->live, rb->shadow);
    PGresult *res;
    ol_err_t err = query1(rb, &res, sql, rb->group);
    if (err)
        return err;
    *ahead = atoi(PQgetvalue(res, 0, 0)) > 0;
    PQclear(res);
    return OL_ERR_OK;
}

/* Events the shadow holds that the live projection has not applied yet
 * (the live projector is behind the topics): then they cannot be equal. */
static ol_err_t live_behind(rebuild_t *rb, long long *behind) {
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "select coalesce(sum(s.next_offset - coalesce(l.next_offset, 0)), 0) from %s.consumer_offsets s left "
             "join %s.consumer_offsets l using (group_id, topic, partition) where s.group_id = $1 and "
             "s.next_offset > coalesce(l.next_offset, 0)",
             rb->shadow, rb->live);
    PGresult *res;
    ol_err_t err = query1(rb, &res, sql, rb->group);
    if (err)
        return err;
    *behind = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return OL_ERR_OK;
}

static int rebuild_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[1024];
    bool verify_only = false, keep_old = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--verify-only"))
            verify_only = true;
        else if (!strcmp(argv[i], "--keep-old"))
            keep_old = true;
        else
            return ol_cli_usage_error(&ol_cmd_rebuild, "unknown option \"%s\"", argv[i]);
    }
    /* few malloc arenas: the threads' arenas otherwise each keep what a pass
     * freed (about 100 MB more at the peak, for no gain in speed here) */
    mallopt(M_ARENA_MAX, 2);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    rebuild_t rb = {.conf = conf, .errstr = errstr, .errstr_size = sizeof(errstr)};
    snprintf(rb.live, sizeof(rb.live), "%s", ol_conf_str(conf, "projection.schema"));
    snprintf(rb.shadow, sizeof(rb.shadow), "%.100s_rebuild", rb.live);
    snprintf(rb.old, sizeof(rb.old), "%.100s_old_%lld", rb.live, (long long)(ol_time_now_ms() / 1000));
    ol_rt_group_name(conf, ol_project_role()->name, rb.group, sizeof(rb.group));
    int rc = OL_EXIT_FAIL;
    ol_err_t err;
    if (!(rb.pg = ol_pg_connect_waiting(conf, errstr, sizeof(errstr)))) {
        fprintf(stderr, "orderlog rebuild: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    if (ol_kafka_check_replayable_topics(conf, ol_project_role()->topics, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog rebuild: %s\n", errstr);
        PQfinish(rb.pg);
        return OL_EXIT_FAIL;
    }
    rb.start_us = ol_time_mono_us();
    int64_t events = 0;
    rb.topics = ol_project_role()->topics;
    rb.rows_per_event = 1.0 / (double)ol_conf_int(conf, "rebuild.plan.events.per.row"); /* until a pass tells */
    if ((err = list_tables(&rb)) || (err = create_shadow(&rb)) || (err = plan(&rb)))
        goto fail;
    if (!(rb.pg2 = ol_pg_connect(conf, errstr, sizeof(errstr)))) {
        err = OL_ERR_UNREACHABLE;
        goto fail;
    }
    fprintf(stderr, "rebuild: replaying the topics (%lld events) into schema %s\n", (long long)rb.log_events,
            rb.shadow);
    /* rows in memory, pass by pass; one COPY per table after each */
    size_t max_rows = (size_t)ol_conf_int(conf, "rebuild.bulk.rows");
    ol_project_bulk_t *bulks[2] = {ol_project_bulk_new(max_rows), ol_project_bulk_new(max_rows)};
    ol_project_bulk_set_owner(bulks[0], &rb);
    ol_project_bulk_set_owner(bulks[1], &rb);
    err = replay_passes(&rb, bulks, max_rows);
    ol_project_bulk_destroy(bulks[0]);
    ol_project_bulk_destroy(bulks[1]);
    if (!err)
        err = ol_project_bulk_finish(rb.pg, rb.shadow, rb.passes > 1, errstr, sizeof(errstr));
    if (err)
        goto fail;
    events = rb.events_done;
    double load_secs = (double)(ol_time_mono_us() - rb.start_us) / 1e6;
    fprintf(stderr,
            "rebuild: %lld events replayed in %.1f s (%.0f events/s) in %d passes (%d given up), at most %zu rows "
            "(%zu MB) in memory; adding constraints and views\n",
            (long long)events, load_secs, load_secs > 0 ? (double)events / load_secs : 0.0, rb.passes,
            rb.passes_given_up, rb.peak_rows, rb.peak_bytes >> 20);
    int64_t phase = ol_time_mono_us();
    if ((err = finish_shadow(&rb)) || (err = check_stop(&rb)))
        goto fail;
    fprintf(stderr, "rebuild: keys, indexes, constraints, views and comments in %.1f s\n",
            (double)(ol_time_mono_us() - phase) / 1e6);
    bool equal = false;
    probe_sums(&rb);
    for (int round = 0;; round++) {
        /* hold the live offsets: the live projector waits, readers do not */
        bool ahead;
        if ((err = exec(&rb, "begin")) ||
            (err = execf(&rb, "lock table %s.consumer_offsets in exclusive mode", rb.live)) ||
            (err = live_ahead(&rb, &ahead)))
            goto fail_tx;
        if (ahead && round < 5) {
            exec(&rb, "rollback");
            fprintf(stderr, "rebuild: the live projection moved on meanwhile; catching up\n");
            ol_rt_stats_t st;
            err = replay(&rb, NULL, &st);
            events += st.events;
            if (err)
                goto fail;
            continue;
        }
        /* Still behind: catch up while the live projector waits on the lock.
         * Never swap in offsets behind its position: it would go on from
         * there and what lies between would never reach the projection. */
        if (ahead) {
            fprintf(stderr, "rebuild: the live projection keeps moving; catching up while it waits\n");
            ol_rt_stats_t st;
            err = replay(&rb, NULL, &st);
            events += st.events;
            if (err)
                goto fail_tx;
        }
        int64_t c0 = ol_time_mono_us();
        if ((err = compare(&rb, &equal)))
            goto fail_tx;
        fprintf(stderr, "rebuild: compared in %.1f s\n", (double)(ol_time_mono_us() - c0) / 1e6);
        long long behind = 0;
        if (!equal && (err = live_behind(&rb, &behind)))
            goto fail_tx;
        if (behind > 0)
            printf("note: the live projection is %lld events behind the topics (its projector has not consumed "
                   "them yet), so differences are expected; verify again once it has caught up\n",
                   behind);
        if (verify_only) {
            exec(&rb, "rollback");
            break;
        }
        if (!equal)
            fprintf(stderr, "rebuild: the rebuilt projection differs from the live one (see above); the rebuilt one "
                            "is what the topics say: swapping it in\n");
        if ((err = execf(&rb, "alter schema %s rename to %s", rb.live, rb.old)) ||
            (err = execf(&rb, "alter schema %s rename to %s", rb.shadow, rb.live)) || (err = exec(&rb, "commit")))
            goto fail_tx;
        printf("swapped: %s is now the rebuilt projection (%lld events)%s\n", rb.live, (long long)events,
               keep_old ? "" : "; dropping the old one");
        if (!keep_old)
            drop_old(&rb);
        if (keep_old)
            printf("the old projection is kept as schema %s\n", rb.old);
        break;
    }
    if (verify_only) {
        execf(&rb, "drop schema if exists %s cascade", rb.shadow);
        printf("%s\n", equal ? "verified: the live projection equals a rebuild from the topics"
                             : "MISMATCH: the live projection differs from a rebuild from the topics");
        rc = equal ? OL_EXIT_OK : OL_EXIT_FAIL;
    } else {
        rc = OL_EXIT_OK;
    }
    PQfinish(rb.pg);
    if (rb.pg2)
        PQfinish(rb.pg2);
    free(rb.queue);
    return rc;
fail_tx:
    exec(&rb, "rollback");
fail:
    fprintf(stderr, "orderlog rebuild: %s\n", errstr);
    if (rb.pg && PQstatus(rb.pg) == CONNECTION_OK) {
        char keep[1024];
        snprintf(keep, sizeof(keep), "%s", errstr);
        execf(&rb, "drop schema if exists %s cascade", rb.shadow);
        snprintf(errstr, sizeof(errstr), "%s", keep);
    }
    PQfinish(rb.pg);
    if (rb.pg2)
        PQfinish(rb.pg2);
    free(rb.queue);
    return OL_EXIT_FAIL;
}

const ol_cmd_t ol_cmd_rebuild = {
    "rebuild", rebuild_run, "replay the topics into a fresh shadow schema, verify it, swap it in",
    "usage: orderlog rebuild [--verify-only] [--keep-old]\n"
    "  Replays orders, after-sales, skus, sale-events and blacklist from the beginning into\n"
    "  <projection.schema>_rebuild, in passes of at most rebuild.bulk.rows rows in memory (while\n"
    "  loading, primary keys only on the tables it upserts; indexes and constraints after), catches\n"
    "  up with the live projection, compares every table (rows and checksum), and renames the\n"
    "  schemas in one transaction: readers see the old projection or the new one, never a partial\n"
    "  table. SIGTERM or SIGINT stops it (the shadow dropped, nothing swapped; exit 1).\n"
    "  --verify-only   compare without swapping; exit 1 when they differ\n"
    "  --keep-old      keep the replaced projection as <schema>_old_<time> instead of dropping it\n"};
