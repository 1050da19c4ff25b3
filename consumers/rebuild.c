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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/pg.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/project.h"
#include "consumers/rebuild.h"
#include "consumers/runtime.h"
#include "ops/admin/commands.h"

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

/* The number a query with the live group as its one parameter returns. */
static ol_err_t group_number(rebuild_t *rb, const char *sql, long long *out) {
    PGresult *res;
    ol_err_t err = ol_rebuild__query1(rb, &res, sql, rb->group);
    if (err)
        return err;
    *out = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
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
    long long n = 0;
    ol_err_t err = group_number(rb, sql, &n);
    *ahead = n > 0;
    return err;
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
    return group_number(rb, sql, behind);
}

/* The load: every topic replayed into the shadow in passes, then the
 * shadow made ready. *events: how many were replayed. */
static ol_err_t load(rebuild_t *rb, int64_t *events) {
    ol_err_t err;
    if ((err = ol_rebuild__list_tables(rb)) || (err = ol_rebuild__create_shadow(rb)) || (err = ol_rebuild__plan(rb)))
        return err;
    if (!(rb->pg2 = ol_pg_connect(rb->conf, rb->errstr, rb->errstr_size)))
        return OL_ERR_UNREACHABLE;
    fprintf(stderr, "rebuild: replaying the topics (%lld events) into schema %s\n", (long long)rb->log_events,
            rb->shadow);
    /* rows in memory, pass by pass; one COPY per table after each */
    size_t max_rows = (size_t)ol_conf_int(rb->conf, "rebuild.bulk.rows");
    /* a set of rows per reader thread, two sets: one folds while the
     * other is written */
    int nreaders = (int)ol_conf_int(rb->conf, "consumer.workers");
    nreaders = nreaders < 1 ? 1 : nreaders > MAX_READERS ? MAX_READERS : nreaders;
    ol_project_bulk_t *bulks[2][MAX_READERS] = {{NULL}};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < nreaders; i++) {
            bulks[s][i] = ol_project_bulk_new(max_rows);
            ol_project_bulk_set_owner(bulks[s][i], rb);
        }
    err = ol_rebuild__replay_passes(rb, bulks, nreaders, max_rows);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < nreaders; i++)
            ol_project_bulk_destroy(bulks[s][i]);
    /* a refund whose order moved between partitions may have a row from
     * two passes or two readers */
    if (!err)
        err = ol_project_bulk_finish(rb->pg, rb->shadow, rb->passes > 1 || nreaders > 1, rb->errstr, rb->errstr_size);
    if (err)
        return err;
    *events = rb->events_done;
    double load_secs = (double)(ol_time_mono_us() - rb->start_us) / 1e6;
    fprintf(stderr,
            "rebuild: %lld events replayed in %.1f s (%.0f events/s) in %d passes (%d given up), at most %zu rows "
            "(%zu MB) in memory; records read from Kafka %lld, from spill files %lld (spilled %lld, %lld MB, at most "
            "%lld MB on disk at once); adding "
            "constraints and views\n",
            (long long)*events, load_secs, load_secs > 0 ? (double)*events / load_secs : 0.0, rb->passes,
            rb->passes_given_up, rb->peak_rows, rb->peak_bytes >> 20, (long long)rb->kafka_read,
            (long long)rb->files_read, (long long)rb->spilled, (long long)(rb->spilled_bytes >> 20),
            (long long)(rb->spill_peak_bytes >> 20));
    int64_t phase = ol_time_mono_us();
    if ((err = ol_rebuild__finish_shadow(rb)) || (err = ol_rebuild__check_stop(rb)))
        return err;
    fprintf(stderr, "rebuild: keys, indexes, constraints, views and comments in %.1f s\n",
            (double)(ol_time_mono_us() - phase) / 1e6);
    return OL_ERR_OK;
}

/* The comparison and the swap, in one transaction that holds the live
 * offsets; with verify_only, the comparison only. *equal: what it found.
 * On an error the transaction is rolled back. */
static ol_err_t verify_and_swap(rebuild_t *rb, bool verify_only, bool keep_old, int64_t *events, bool *equal) {
    ol_err_t err;
    probe_sums(rb);
    for (int round = 0;; round++) {
        /* hold the live offsets: the live projector waits, readers do not */
        bool ahead;
        if ((err = ol_rebuild__exec(rb, "begin")) ||
            (err = ol_rebuild__execf(rb, "lock table %s.consumer_offsets in exclusive mode", rb->live)) ||
            (err = live_ahead(rb, &ahead)))
            goto rollback;
        if (ahead && round < 5) {
            ol_rebuild__exec(rb, "rollback");
            fprintf(stderr, "rebuild: the live projection moved on meanwhile; catching up\n");
            ol_rt_stats_t st;
            err = ol_rebuild__replay(rb, NULL, &st);
            *events += st.events;
            if (err)
                return err;
            continue;
        }
        /* Still behind: catch up while the live projector waits on the lock.
         * Never swap in offsets behind its position: it would go on from
         * there and what lies between would never reach the projection. */
        if (ahead) {
            fprintf(stderr, "rebuild: the live projection keeps moving; catching up while it waits\n");
            ol_rt_stats_t st;
            err = ol_rebuild__replay(rb, NULL, &st);
            *events += st.events;
            if (err)
                goto rollback;
        }
        int64_t c0 = ol_time_mono_us();
        if ((err = compare(rb, equal)))
            goto rollback;
        fprintf(stderr, "rebuild: compared in %.1f s\n", (double)(ol_time_mono_us() - c0) / 1e6);
        long long behind = 0;
        if (!*equal && (err = live_behind(rb, &behind)))
            goto rollback;
        if (behind > 0)
            printf("note: the live projection is %lld events behind the topics (its projector has not consumed "
                   "them yet), so differences are expected; verify again once it has caught up\n",
                   behind);
        if (verify_only) {
            ol_rebuild__exec(rb, "rollback");
            return OL_ERR_OK;
        }
        if (!*equal)
            fprintf(stderr, "rebuild: the rebuilt projection differs from the live one (see above); the rebuilt one "
                            "is what the topics say: swapping it in\n");
        if ((err = ol_rebuild__execf(rb, "alter schema %s rename to %s", rb->live, rb->old)) ||
            (err = ol_rebuild__execf(rb, "alter schema %s rename to %s", rb->shadow, rb->live)) ||
            (err = ol_rebuild__exec(rb, "commit")))
            goto rollback;
        printf("swapped: %s is now the rebuilt projection (%lld events)%s\n", rb->live, (long long)*events,
               keep_old ? "" : "; dropping the old one");
        if (!keep_old)
            ol_rebuild__drop_old(rb);
        if (keep_old)
            printf("the old projection is kept as schema %s\n", rb->old);
        return OL_ERR_OK;
    }
rollback:
    ol_rebuild__exec(rb, "rollback");
    return err;
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
    sa.sa_handler = ol_rebuild__on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    rebuild_t rb = {.conf = conf, .errstr = errstr, .errstr_size = sizeof(errstr)};
    snprintf(rb.live, sizeof(rb.live), "%s", ol_conf_str(conf, "projection.schema"));
    snprintf(rb.shadow, sizeof(rb.shadow), "%.100s_rebuild", rb.live);
    snprintf(rb.old, sizeof(rb.old), "%.100s_old_%lld", rb.live, (long long)(ol_time_now_ms() / 1000));
    ol_rt_group_name(conf, ol_project_role()->name, rb.group, sizeof(rb.group));
    int rc = OL_EXIT_FAIL;
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
    bool equal = false;
    if (load(&rb, &events) || verify_and_swap(&rb, verify_only, keep_old, &events, &equal)) {
        fprintf(stderr, "orderlog rebuild: %s\n", errstr);
        if (rb.pg && PQstatus(rb.pg) == CONNECTION_OK) {
            char keep[1024];
            snprintf(keep, sizeof(keep), "%s", errstr);
            ol_rebuild__execf(&rb, "drop schema if exists %s cascade", rb.shadow);
            snprintf(errstr, sizeof(errstr), "%s", keep);
        }
        goto out;
    }
    if (verify_only) {
        ol_rebuild__execf(&rb, "drop schema if exists %s cascade", rb.shadow);
        printf("%s\n", equal ? "verified: the live projection equals a rebuild from the topics"
                             : "MISMATCH: the live projection differs from a rebuild from the topics");
        rc = equal ? OL_EXIT_OK : OL_EXIT_FAIL;
    } else {
        rc = OL_EXIT_OK;
    }
out:
    PQfinish(rb.pg);
    if (rb.pg2)
        PQfinish(rb.pg2);
    free(rb.queue);
    return rc;
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
