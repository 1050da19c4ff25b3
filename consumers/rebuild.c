/* orderlog rebuild: replays the topics into a fresh shadow schema and swaps
 * it in for the live projection.
 *
 *  1. shadow schema <schema>_rebuild: every table of the live schema, with
 *     its columns (generated ones too) and defaults; the tables the bulk
 *     load fills get their primary keys after it, the others (the offsets,
 *     the sale tables, which the replay upserts by primary key) before;
 *     the other indexes and constraints would slow the load;
 *  2. the projection role replays every topic from the beginning into it
 *     (its own Kafka group; offsets stored under the live group's name, so
 *     they move with the swap), showing progress;
 *  3. secondary indexes, check and foreign-key constraints and comments are
 *     added, copied from the live schema;
 *  4. in one transaction that holds the live offsets (the live projector
 *     waits, readers do not): if the live projector got further than the
 *     shadow, catch up and try again; compare every table (row count and a
 *     checksum of its rows); rename the live schema away and the shadow in.
 *     Readers see the old schema or the new one, never a partial table.
 * --verify-only stops after the comparison and drops the shadow. */
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cli.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/pg.h"
#include "common/time.h"
#include "common/util.h"
#include "consumers/project.h"
#include "consumers/runtime.h"

#define MAX_TABLES 64

typedef struct rebuild_s {
    const ol_conf_t *conf;
    PGconn *pg;
    char live[128], shadow[128], old[160];
    char group[256]; /* the live projector's group: the offsets the shadow stores */
    char tables[MAX_TABLES][64];
    char relopts[MAX_TABLES][256]; /* the live table's storage parameters (fillfactor) */
    int ntables;
    int64_t last_print_us, start_us;
    char *errstr;
    size_t errstr_size;
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

/* The secondary indexes of the live schema, on the shadow's tables. Created
 * before the load: the projector's own lookups need them (refunded_amount
 * sums the refunds of an order by refunds.order_id: without its index every
 * batch scans refunds once per order it touches, and the replay turns
 * quadratic). */
static ol_err_t add_indexes(rebuild_t *rb) {
    ol_err_t err;
    PGresult *res;
    if ((err = query1(rb, &res,
                      "select i.indexdef from pg_indexes i where i.schemaname = $1 and not exists (select 1 from "
                      "pg_constraint c join pg_namespace n on n.oid = c.connamespace where n.nspname = i.schemaname "
                      "and c.conname = i.indexname)",
                      rb->live)))
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

/* The primary keys of the tables the bulk load fills (the others have
 * theirs from the start) and the indexes. */
static ol_err_t keys_and_indexes(rebuild_t *rb) {
    ol_err_t err;
    for (int t = 0; t < rb->ntables; t++)
        if (ol_project_bulk_fills(rb->tables[t]) && (err = add_constraints(rb, rb->tables[t], "p")))
            return err;
    return add_indexes(rb);
}

/* The bulk load passed its memory limit: keys and indexes now, on the
 * replay's connection, inside its batch transaction. */
static ol_err_t on_spill(void *opaque, PGconn *conn, char *errstr, size_t errstr_size) {
    rebuild_t *rb = opaque;
    PGconn *saved = rb->pg;
    rb->pg = conn;
    ol_err_t err = keys_and_indexes(rb);
    rb->pg = saved;
    if (err)
        ol_errf(errstr, errstr_size, err, "%s", rb->errstr);
    return err;
}

/* After the load: keys and indexes (unless a spill made them), the other
 * constraints, views, comments. */
static ol_err_t finish_shadow(rebuild_t *rb, bool have_keys) {
    ol_err_t err;
    /* durable from here on: it is about to become the live projection */
    for (int t = 0; t < rb->ntables; t++)
        if ((err = execf(rb, "alter table %s.%s set logged", rb->shadow, rb->tables[t])))
            return err;
    if (!have_keys && (err = keys_and_indexes(rb)))
        return err;
    for (int t = 0; t < rb->ntables; t++)
        if ((err = add_constraints(rb, rb->tables[t], "cux")))
            return err;
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

static void progress(void *opaque, const ol_rt_t *rt) {
    rebuild_t *rb = opaque;
    int64_t now = ol_time_mono_us();
    if (now - rb->last_print_us < 1000000)
        return;
    rb->last_print_us = now;
    ol_rt_stats_t st;
    ol_rt_stats(rt, &st);
    int64_t backlog = ol_rt_backlog(rt);
    double secs = (double)(now - rb->start_us) / 1e6;
    if (backlog > 0)
        fprintf(stderr, "rebuild: %5.1f%% (%lld of %lld events), %.0f events/s\n",
                100.0 * (double)st.events / (double)backlog, (long long)st.events, (long long)backlog,
                (double)st.events / secs);
    else
        fprintf(stderr, "rebuild: %lld events, %.0f events/s\n", (long long)st.events, (double)st.events / secs);
}

static void *bulk_free_main(void *arg) {
    ol_project_bulk_destroy(arg);
    return NULL;
}

/* Replays into the shadow until every partition reached its end. */
static ol_err_t replay(rebuild_t *rb, ol_project_bulk_t *bulk, int64_t *events) {
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
    ol_err_t err = OL_ERR_OK;
    ol_rt_t *rt = ol_rt_new(conf, &role, rb->errstr, rb->errstr_size);
    if (!rt) {
        ol_conf_destroy(conf);
        return OL_ERR_UNREACHABLE;
    }
    ol_rt_handle_signals(rt);
    ol_rt_set_dlq(rt, false); /* the live projector sent them already */
    ol_rt_on_batch(rt, progress, rb);
    err = ol_rt_run(rt, true, rb->errstr, rb->errstr_size);
    ol_rt_stats_t st;
    ol_rt_stats(rt, &st);
    *events += st.events;
    ol_rt_destroy(rt);
    char kerr[512];
    if (ol_kafka_delete_group(conf, kafka_group, kerr, sizeof(kerr)))
        ol_log_warn("%s", kerr); /* harmless: the group only keeps its offsets */
    ol_conf_destroy(conf);
    return err;
}

/* Row count and checksum of schema.table ("count:md5"). */
static ol_err_t table_sum(rebuild_t *rb, const char *schema, const char *table, char *out, size_t out_size) {
    char sql[1024];
    if (!strcmp(table, "consumer_offsets"))
        snprintf(sql, sizeof(sql),
                 "select count(*) || ':' || coalesce(md5(string_agg(group_id || '/' || topic || '/' || partition || "
                 "'=' || next_offset, ',' order by group_id, topic, partition)), '') from %s.%s",
                 schema, table);
    else
        snprintf(sql, sizeof(sql),
                 "select count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' order by t::text)), '') "
                 "from %s.%s t",
                 schema, table);
    PGresult *res;
    ol_err_t err = ol_pg_query(&res, rb->pg, sql, 0, NULL, rb->errstr, rb->errstr_size);
    if (err)
        return err;
    snprintf(out, out_size, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return OL_ERR_OK;
}

/* Compares every table; prints one line per table; *equal set. */
static ol_err_t compare(rebuild_t *rb, bool *equal) {
    *equal = true;
    printf("%-20s %-44s %-44s\n", "table", "live (rows:md5)", "rebuilt (rows:md5)");
    for (int t = 0; t < rb->ntables; t++) {
        char a[128], b[128];
        ol_err_t err;
        if ((err = table_sum(rb, rb->live, rb->tables[t], a, sizeof(a))) ||
            (err = table_sum(rb, rb->shadow, rb->tables[t], b, sizeof(b))))
            return err;
        bool same = !strcmp(a, b);
        *equal = *equal && same;
        printf("%-20s %-44s %-44s %s\n", rb->tables[t], a, b, same ? "same" : "DIFFERENT");
    }
    return OL_ERR_OK;
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
    pthread_t freer;
    bool freeing = false;
    if ((err = list_tables(&rb)) || (err = create_shadow(&rb)))
        goto fail;
    fprintf(stderr, "rebuild: replaying the topics into schema %s\n", rb.shadow);
    /* the first replay fills the empty shadow in bulk: rows in memory, one
     * COPY per table at the end */
    ol_project_bulk_t *bulk = ol_project_bulk_new();
    ol_project_bulk_set_limit(bulk, (size_t)ol_conf_int(conf, "rebuild.bulk.rows"), on_spill, &rb);
    err = replay(&rb, bulk, &events);
    if (!err)
        err = ol_project_bulk_flush(bulk, conf, rb.pg, rb.shadow, errstr, sizeof(errstr));
    bool have_keys = ol_project_bulk_spilled(bulk);
    /* millions of small allocations: freed by a thread of their own while
     * PostgreSQL builds the keys and indexes */
    freeing = !pthread_create(&freer, NULL, bulk_free_main, bulk);
    if (!freeing)
        ol_project_bulk_destroy(bulk);
    if (err)
        goto fail;
    double load_secs = (double)(ol_time_mono_us() - rb.start_us) / 1e6;
    fprintf(stderr, "rebuild: %lld events replayed in %.1f s (%.0f events/s); adding constraints and views\n",
            (long long)events, load_secs, load_secs > 0 ? (double)events / load_secs : 0.0);
    if ((err = finish_shadow(&rb, have_keys)))
        goto fail;
    bool equal = false;
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
            if ((err = replay(&rb, NULL, &events)))
                goto fail;
            continue;
        }
        /* Still behind: catch up while the live projector waits on the lock.
         * Never swap in offsets behind its position: it would go on from
         * there and what lies between would never reach the projection. */
        if (ahead) {
            fprintf(stderr, "rebuild: the live projection keeps moving; catching up while it waits\n");
            if ((err = replay(&rb, NULL, &events)))
                goto fail_tx;
        }
        if ((err = compare(&rb, &equal)))
            goto fail_tx;
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
    if (freeing)
        pthread_join(freer, NULL);
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
    if (freeing)
        pthread_join(freer, NULL);
    return OL_EXIT_FAIL;
}

const ol_cmd_t ol_cmd_rebuild = {
    "rebuild", rebuild_run, "replay the topics into a fresh shadow schema, verify it, swap it in",
    "usage: orderlog rebuild [--verify-only] [--keep-old]\n"
    "  Replays orders, after-sales, skus, sale-events and blacklist from the beginning into\n"
    "  <projection.schema>_rebuild (while loading, primary keys only on the tables it upserts;\n"
    "  indexes and constraints after), catches up with the live projection, compares every table\n"
    "  (rows and checksum), and renames the schemas in one transaction: readers see the old\n"
    "  projection or the new one, never a partial table.\n"
    "  --verify-only   compare without swapping; exit 1 when they differ\n"
    "  --keep-old      keep the replaced projection as <schema>_old_<time> instead of dropping it\n"};
