/* orderlog rebuild against the real broker and PostgreSQL. Every test works
 * under a topic prefix of its own (it_rebuild_<tag>_<pid>_, 3 partitions), a
 * consumer group of its own and scratch databases migrated for it, so tests
 * can run next to others. The binary runs as a subprocess, as operators run
 * it; the data comes from ops/sample-events (orders and after-sales events,
 * plus the catalog for skus).
 *
 * What a projection must hold is never taken from the rebuild's own report:
 * tables are checksummed here (count and md5 of every row as text), and a
 * "clean" projection of the same topics into another database is the
 * reference for what the topics say. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static char prefix[128]; /* this test's topic prefix, once it has one */
static char db[1024];    /* the live database */
static char db2[1024];   /* a second database: clean projections */
static char dir[512];    /* scratch files */
static int files;        /* sample files written so far */

static void setup(void) {
    ol_test_tmpdir(dir, sizeof(dir));
}

/* The options of every orderlog run here: the test's prefix, partitions and
 * group, on the database conninfo names. */
static const char *fixed_args(const char *conninfo) {
    static char args[4096];
    char *ci = ol_test_shell_quote(conninfo);
    snprintf(args, sizeof(args),
             "-X topic.prefix=%s -X topic.partitions=3 -X consumer.group.id=%sproject -X pg.conninfo=%s", prefix,
             prefix, ci);
    free(ci);
    return args;
}

static void teardown(void) {
    ol_test_cleanup(fixed_args(db), prefix, NULL, db, dir);
    ol_test_pg_drop_db(db2);
}

TestSuite(rebuild, .init = setup, .fini = teardown, .timeout = 600);

/* ---- running orderlog ----------------------------------------------------- */

/* orderlog as a background process (exec'd: signals reach it). */
static ol_test_bg_t *orderlog_bg(const char *conninfo, const char *args) {
    return ol_test_orderlog_bg("%s %s", fixed_args(conninfo), args);
}

/* A scratch database, migrated unless told otherwise. */
static void new_db(char *conninfo, size_t size, int migrate) {
    ol_test_pg_scratch_db("rebuild", conninfo, size);
    if (!migrate)
        return;
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(conninfo), "migrate");
    cr_assert_eq(rc, 0, "migrate: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
}

/* Takes the prefix it_rebuild_<tag>_<pid>_, creates its topics and the live
 * database (migrated unless told otherwise). */
static void start(const char *tag, int migrate) {
    snprintf(prefix, sizeof(prefix), "it_rebuild_%s_%ld_", tag, (long)getpid());
    new_db(db, sizeof(db), migrate);
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(db), "topics create");
    cr_assert_eq(rc, 0, "topics create: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    free(out);
    free(err);
}

static const char *source_dir(void) {
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    return src && *src ? src : ".";
}

/* Publishes `ops/sample-events <what>`; returns the number of events on the
 * topics `orderlog project` reads (every one but the shoppers' commands). */
static long long publish_sample(const char *what) {
    char path[1024], *out, *err;
    snprintf(path, sizeof(path), "%s/sample-%d.jsonl", dir, ++files);
    char *src = ol_test_shell_quote(source_dir()), *qpath = ol_test_shell_quote(path);
    int rc = ol_test_runf(NULL, &err, "%s/ops/sample-events %s >%s", src, what, qpath);
    cr_assert_eq(rc, 0, "ops/sample-events %s: exit %d\n%s", what, rc, err);
    free(err);
    char *text = ol_test_read_file(path);
    cr_assert(text);
    long long events = 0, other = 0;
    for (const char *p = text; *p; p++)
        events += *p == '\n';
    for (const char *p = text; (p = strstr(p, "\"type\":\"BuyRequested\"")); p++)
        other++;
    free(text);
    rc = ol_test_orderlogf(&out, &err, fixed_args(db), "publish %s", qpath);
    char expect[128];
    snprintf(expect, sizeof(expect), "published %lld, rejected 0, failed 0", events);
    cr_assert(rc == 0 && strstr(out, expect), "publish %s: exit %d, expected \"%s\":\n%s%s", what, rc, expect, out,
              err);
    free(out);
    free(err);
    free(src);
    free(qpath);
    return events - other;
}

/* `ops/sample-events orders n seed`: ~1.2 n order and after-sales events. */
static long long publish_orders(int n, int seed) {
    char what[64];
    snprintf(what, sizeof(what), "orders %d %d", n, seed);
    return publish_sample(what);
}

/* `orderlog project --until-end` into conninfo; returns the events it projected. */
static long long project(const char *conninfo) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(conninfo), "project --until-end");
    long long events = -1, dlq = -1;
    const char *line = strstr(out, "projected ");
    if (line)
        sscanf(line, "projected %lld events in %*d batches (%lld to the dlq", &events, &dlq);
    cr_assert(rc == 0 && events >= 0, "project --until-end: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    free(out);
    free(err);
    return events;
}

/* `orderlog rebuild <args>`; the exit status, its output in *out and *err. */
static int rebuild(const char *args, char **out, char **err) {
    return ol_test_orderlogf(out, err, fixed_args(db), "rebuild %s", args);
}

/* ---- what a projection holds -------------------------------------------- */

static const char *const tables[] = {"orders", "order_lines", "refunds", "skus", "consumer_offsets"};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))

/* "<table> <rows> <md5>" per table of schema, one a line, as a new string;
 * consumer_offsets without updated_at. */
static char *checksums_of(const char *conninfo, const char *schema) {
    char *all = calloc(1, 1);
    for (size_t i = 0; i < NTABLES; i++) {
        char sql[512];
        if (!strcmp(tables[i], "consumer_offsets"))
            snprintf(sql, sizeof(sql),
                     "select '%s', count(*), coalesce(md5(string_agg(r::text, E'\\n' order by r::text)), '-') from "
                     "(select group_id, topic, partition, next_offset from %s.consumer_offsets) r",
                     tables[i], schema);
        else
            snprintf(sql, sizeof(sql),
                     "select '%s', count(*), coalesce(md5(string_agg(t::text, E'\\n' order by t::text)), '-') from "
                     "%s.%s t",
                     tables[i], schema, tables[i]);
        ol_test_pg_append_rows(&all, conninfo, sql);
    }
    return all;
}

static char *checksums(const char *conninfo) {
    return checksums_of(conninfo, "orderlog");
}

/* The rows of every view (without the columns that follow now()). */
static char *views_of(const char *conninfo) {
    return ol_test_pg_query_rows(
        conninfo,
        "select 'revenue_per_sku_day', count(*), md5(string_agg(v::text, E'\\n' order by v::text)) "
        "  from orderlog.revenue_per_sku_day v union all "
        "select 'open_refunds', count(*), md5(string_agg((refund_id, order_id, user_id, status, amount, currency, "
        "  reason, requested_at, approved_at)::text, E'\\n' order by refund_id)) from orderlog.open_refunds union all "
        "select 'user_orders', count(*), md5(string_agg(v::text, E'\\n' order by v::text)) "
        "  from orderlog.user_orders v union all "
        "select 'stale_skus', count(*), md5(string_agg((sku, title, platform, stock, version, updated_at)::text, "
        "  E'\\n' order by sku)) from orderlog.stale_skus");
}

/* Everything around the rows: columns, constraints, indexes, views, comments. */
static char *definitions_of(const char *conninfo) {
    char *parts[5];
    parts[0] = ol_test_pg_query_rows(conninfo, "select 'column', table_name, column_name, data_type, is_nullable, "
                                               "column_default from information_schema.columns where table_schema = "
                                               "'orderlog' order by table_name, ordinal_position");
    parts[1] = ol_test_pg_query_rows(
        conninfo, "select 'constraint', r.relname, c.conname, c.contype, pg_get_constraintdef(c.oid), c.convalidated "
                  "from pg_constraint c join pg_class r on r.oid = c.conrelid join pg_namespace n on n.oid = "
                  "r.relnamespace where n.nspname = 'orderlog' order by r.relname, c.conname");
    parts[2] = ol_test_pg_query_rows(conninfo, "select 'index', tablename, indexname, indexdef from pg_indexes where "
                                               "schemaname = 'orderlog' order by tablename, indexname");
    parts[3] = ol_test_pg_query_rows(conninfo, "select 'view', viewname, definition from pg_views where schemaname = "
                                               "'orderlog' order by viewname");
    parts[4] = ol_test_pg_query_rows(
        conninfo, "select 'comment', c.relname, coalesce(a.attname, '(table)'), d.description from pg_description d "
                  "join pg_class c on c.oid = d.objoid and d.classoid = 'pg_class'::regclass join pg_namespace n on "
                  "n.oid = c.relnamespace left join pg_attribute a on a.attrelid = c.oid and a.attnum = d.objsubid "
                  "and d.objsubid > 0 where n.nspname = 'orderlog' order by 2, 3");
    char *all;
    cr_assert(asprintf(&all, "%s%s%s%s%s", parts[0], parts[1], parts[2], parts[3], parts[4]) >= 0);
    for (int i = 0; i < 5; i++)
        free(parts[i]);
    return all;
}

/* The lines of a not in b, as a new string ("" when none). */
static char *lines_missing(const char *a, const char *b) {
    char *out = calloc(1, 1);
    size_t len = 0;
    for (const char *line = a; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) + 1 : strlen(line);
        int found = 0;
        for (const char *p = b; *p && !found;) {
            const char *q = strchr(p, '\n');
            size_t m = q ? (size_t)(q - p) + 1 : strlen(p);
            found = m == n && !memcmp(p, line, n);
            p += m;
        }
        if (!found) {
            out = realloc(out, len + n + 1);
            memcpy(out + len, line, n);
            len += n;
            out[len] = '\0';
        }
        line += n;
    }
    return out;
}

/* Expects before == after, showing the lines that went and came. */
static void expect_same(const char *what, const char *before, const char *after) {
    if (!strcmp(before, after))
        return;
    char *gone = lines_missing(before, after), *came = lines_missing(after, before);
    cr_expect_fail("%s changed.\nonly before:\n%sonly after:\n%s", what, gone, came);
    free(gone);
    free(came);
}

static long long schemas_like(const char *conninfo, const char *pattern) {
    char sql[256];
    snprintf(sql, sizeof(sql), "select count(*) from pg_namespace where nspname like '%s'", pattern);
    return ol_test_pg_query_int(conninfo, sql);
}

/* The line of the rebuild's comparison about table (it starts with the name). */
static char *table_line(const char *out, const char *table) {
    size_t n = strlen(table);
    for (const char *line = out; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len > n && !strncmp(line, table, n) && line[n] == ' ')
            return strndup(line, len);
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* Expects the comparison line of table to end with verdict ("same", "DIFFERENT"). */
static void expect_verdict(const char *out, const char *table, const char *verdict) {
    char *line = table_line(out, table);
    cr_expect(line, "no comparison line for %s in:\n%s", table, out);
    if (!line)
        return;
    size_t n = strlen(line), v = strlen(verdict);
    cr_expect(n >= v && !strcmp(line + n - v, verdict) && (n == v || line[n - v - 1] == ' '),
              "%s: expected \"%s\", got: %s", table, verdict, line);
    free(line);
}

/* Every table "same" in what rebuild printed. */
static void expect_tables_same(const char *out) {
    for (size_t i = 0; i < NTABLES; i++)
        expect_verdict(out, tables[i], "same");
}

/* The projection in db has the checksums sums (taken before; freed here). */
static void expect_sums_unchanged(char *sums) {
    char *new_sums = checksums(db);
    expect_same("the rebuilt projection", sums, new_sums);
    free(sums);
    free(new_sums);
}

/* Publishes the file at path, failing the test unless all its n lines are published. */
static void publish_path(const char *path, int n) {
    char *q = ol_test_shell_quote(path), *out, *err, want[64];
    snprintf(want, sizeof(want), "published %d, rejected 0, failed 0", n);
    int rc = ol_test_orderlogf(&out, &err, fixed_args(db), "publish %s", q);
    cr_assert(rc == 0 && strstr(out, want), "publish: %s%s", out, err);
    free(q);
    free(out);
    free(err);
}

/* Live data: ~19,200 order and after-sales events and the catalog, projected. */
static void live_projection(void) {
    long long events = publish_orders(16000, 1) + publish_sample("catalog");
    long long projected = project(db);
    cr_assert_eq(projected, events, "the live projection took %lld of %lld events", projected, events);
    cr_assert(ol_test_pg_query_int(db, "select count(*) from orderlog.orders") >= 4000);
    cr_assert(ol_test_pg_query_int(db, "select count(*) from orderlog.skus") >= 1000);
}

/* ---- the tests ------------------------------------------------------------ */

Test(rebuild, rebuild_produces_exactly_the_live_projection) {
    start("exact", 1);
    live_projection();
    /* The rebuild copies whatever the live schema has. Migration 003 dropped
     * the only foreign key (order_lines -> orders): one of the test's own
     * stands in for it (as an operator could add), with an index and a
     * column comment, so that every kind of object goes through the copy. */
    if (!ol_test_pg_query_int(db, "select count(*) from pg_constraint where contype = 'f' and conrelid = "
                                  "'orderlog.order_lines'::regclass"))
        ol_test_pg_exec(db, "alter table orderlog.order_lines add constraint it_order_lines_order_fk foreign key "
                            "(order_id) references orderlog.orders (order_id) on delete cascade");
    ol_test_pg_exec(db, "create index it_order_lines_sku_idx on orderlog.order_lines (sku, order_id); "
                        "comment on column orderlog.order_lines.sku is 'it: a column comment'");
    char *sums = checksums(db), *views = views_of(db), *defs = definitions_of(db);
    long long fks = ol_test_pg_query_int(db, "select count(*) from pg_constraint c join pg_namespace n on n.oid = "
                                             "c.connamespace where n.nspname = 'orderlog' and c.contype = 'f'");
    long long checks = ol_test_pg_query_int(db, "select count(*) from pg_constraint c join pg_namespace n on n.oid = "
                                                "c.connamespace where n.nspname = 'orderlog' and c.contype = 'c'");
    long long schema_oid = ol_test_pg_query_int(db, "select 'orderlog'::regnamespace::oid::bigint");

    char *out, *err;
    long long t0 = ol_test_now_ms();
    int rc = rebuild("", &out, &err);
    cr_log_info("rebuild took %lld ms", ol_test_now_ms() - t0);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    expect_tables_same(out);
    cr_expect(!strstr(out, "DIFFERENT"), "a table differs:\n%s", out);
    cr_expect(strstr(out, "swapped: orderlog is now the rebuilt projection"), "no swap reported:\n%s", out);
    cr_expect(strstr(err, " events replayed in "), "no replay rate on stderr:\n%s", err);

    /* swapped: a new schema, with the same rows */
    cr_expect_neq(ol_test_pg_query_int(db, "select 'orderlog'::regnamespace::oid::bigint"), schema_oid,
                  "schema orderlog is the same object as before: nothing was swapped");
    char *sums2 = checksums(db), *views2 = views_of(db), *defs2 = definitions_of(db);
    expect_same("the tables' rows", sums, sums2);
    expect_same("the views' rows", views, views2);
    expect_same("the definitions (columns, constraints, indexes, views, comments)", defs, defs2);

    /* indexes and constraints, on the new tables */
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from pg_indexes where schemaname = 'orderlog' and "
                                          "indexname in ('orders_user_id_idx', 'refunds_order_id_idx', "
                                          "'holds_sku_status_idx', 'it_order_lines_sku_idx')"),
                 4);
    cr_expect_geq(fks, 1);
    cr_expect_eq(ol_test_pg_query_int(db,
                                      "select count(*) from pg_constraint where contype = 'f' and conrelid = "
                                      "'orderlog.order_lines'::regclass and confrelid = 'orderlog.orders'::regclass "
                                      "and convalidated"),
                 fks, "the foreign key of order_lines is not back on the new tables (or refers elsewhere)");
    cr_expect_geq(checks, 20);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from pg_constraint c join pg_namespace n on n.oid = "
                                          "c.connamespace where n.nspname = 'orderlog' and c.contype = 'c' and "
                                          "c.convalidated"),
                 checks, "the check constraints are not back");
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from pg_views where schemaname = 'orderlog' and viewname "
                                          "in ('revenue_per_sku_day', 'open_refunds', 'user_orders', 'stale_skus')"),
                 4);
    /* and they hold */
    char msg[512];
    cr_expect_eq(ol_test_pg_try_exec(db, "insert into orderlog.order_lines values ('no-such-order', 1, 'SKU-1', 1, 1)",
                                     msg, sizeof(msg)),
                 -1, "a line of a missing order was accepted");
    cr_expect(strstr(msg, "foreign key"), "%s", msg);
    cr_expect_eq(ol_test_pg_try_exec(db,
                                     "update orderlog.orders set currency = 'cny' where order_id = (select "
                                     "min(order_id) from orderlog.orders)",
                                     msg, sizeof(msg)),
                 -1, "a bad currency was accepted");
    cr_expect(strstr(msg, "orders_currency_check"), "%s", msg);

    cr_expect_eq(schemas_like(db, "orderlog\\_rebuild"), 0, "the shadow schema was left behind");
    cr_expect_eq(schemas_like(db, "orderlog\\_old\\_%"), 0, "the old schema was left behind");
    free(sums);
    free(views);
    free(defs);
    free(sums2);
    free(views2);
    free(defs2);
    free(out);
    free(err);
}

Test(rebuild, keep_old_keeps_the_replaced_projection) {
    start("keep", 1);
    live_projection();
    char *sums = checksums(db);
    long long table_oid = ol_test_pg_query_int(db, "select 'orderlog.orders'::regclass::oid::bigint");
    char *out, *err;
    int rc = rebuild("--keep-old", &out, &err);
    cr_assert_eq(rc, 0, "rebuild --keep-old: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    const char *kept = strstr(out, "the old projection is kept as schema ");
    cr_assert(kept, "no word on the old schema:\n%s", out);
    char old[128] = "";
    sscanf(kept, "the old projection is kept as schema %127[a-z0-9_]", old);
    cr_assert(!strncmp(old, "orderlog_old_", 13), "kept as \"%s\"", old);
    cr_expect_eq(schemas_like(db, old), 1, "schema %s does not exist", old);
    cr_expect_eq(schemas_like(db, "orderlog\\_rebuild"), 0, "the shadow schema was left behind");
    char *old_sums = checksums_of(db, old), *new_sums = checksums(db);
    expect_same("the old projection", sums, old_sums);
    expect_same("the rebuilt projection", sums, new_sums);
    char sql[256];
    snprintf(sql, sizeof(sql), "select '%s.orders'::regclass::oid::bigint", old);
    cr_expect_eq(ol_test_pg_query_int(db, sql), table_oid, "the old schema does not hold the old tables");
    cr_expect_neq(ol_test_pg_query_int(db, "select 'orderlog.orders'::regclass::oid::bigint"), table_oid);
    free(sums);
    free(old_sums);
    free(new_sums);
    free(out);
    free(err);
}

/* The number of passes the rebuild reports ("... in N passes (M given up)"). */
static int passes_of(const char *err, int *given_up) {
    const char *line = strstr(err, " events replayed in ");
    int passes = -1;
    *given_up = -1;
    if (line && (line = strstr(line, "/s) in ")))
        sscanf(line, "/s) in %d passes (%d given up)", &passes, given_up);
    return passes;
}

/* Whether a line "rebuild: pass N over partitions ..." names two shares
 * of the keys of one partition ("0 (keys 2 of 4), 0 (keys 3 of 4)"). */
static bool pass_with_two_shares_of_a_partition(const char *err) {
    for (const char *line = strstr(err, "rebuild: pass "); line; line = strstr(line + 1, "rebuild: pass ")) {
        const char *end = strchr(line, '\n'), *at = strstr(line, " over partitions ");
        if (!at || (end && at > end))
            continue;
        int parts[64], n = 0;
        for (const char *p = at + strlen(" over partitions "); p && (!end || p < end) && n < 64;) {
            int part, used = 0;
            if (sscanf(p, "%d (keys%n", &part, &used) == 1 && used > 0) {
                for (int i = 0; i < n; i++)
                    if (parts[i] == part)
                        return true;
                parts[n++] = part;
            }
            p = strstr(p, "), ");
            p = p ? p + 3 : NULL;
        }
    }
    return false;
}

/* rebuild.bulk.rows bounds the rows a pass folds: the log is replayed in
 * passes over a few partitions, and a partition alone over the limit in
 * passes over shares of its keys; the result is the same. The first pass
 * is planned for more rows per event (one per two events) than this data
 * makes (about one per four), so the shares
 * after it are smaller than planned and a pass takes two of one partition
 * (regression: their offsets were inserted twice, and the rebuild failed
 * on the key of consumer_offsets). */
Test(rebuild, passes_of_at_most_bulk_rows_give_the_same_projection) {
    start("passes", 1);
    live_projection();
    char *sums = checksums(db);
    char *out, *err;
    int rc =
        rebuild("-X rebuild.bulk.rows=1000 -X rebuild.plan.events.per.row=2 -X consumer.batch.events=300", &out, &err);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    int given_up, passes = passes_of(err, &given_up);
    /* ~5,000 rows over 3 partitions: at least 5 passes, over shares of keys */
    cr_expect_geq(passes, 5, "%d passes:\n%s", passes, err);
    cr_expect(strstr(err, " (keys 1 of "), "no partition was split by its keys:\n%s", err);
    cr_expect(pass_with_two_shares_of_a_partition(err), "no pass took two shares of one partition:\n%s", err);
    const char *at = strstr(err, "at most ");
    long long held = -1;
    if (at)
        sscanf(at, "at most %lld rows", &held);
    cr_expect(held > 0 && held <= 1000, "a pass held %lld rows, the limit is 1000:\n%s", held, err);
    expect_tables_same(out);
    expect_sums_unchanged(sums);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from pg_indexes where schemaname = 'orderlog' and "
                                          "indexname = 'orders_pkey'"),
                 1, "the primary key of orders is missing");
    free(out);
    free(err);
}

/* Entries of directory path whose names start with name_prefix (0 when it
 * does not exist); the path of the first into first (first_size > 0). */
static int entries_with(const char *path, const char *name_prefix, char *first, size_t first_size) {
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            !strncmp(e->d_name, name_prefix, strlen(name_prefix)) && n++ == 0 && first_size)
            snprintf(first, first_size, "%s/%s", path, e->d_name);
    closedir(d);
    return n;
}

/* Entries of directory path (0 when it does not exist). */
static int entries_of(const char *path) {
    return entries_with(path, "", NULL, 0);
}

/* A number after needle in the last line holding it (-1: none). */
static long long number_after(const char *text, const char *needle) {
    long long v = -1;
    for (const char *at = strstr(text, needle); at; at = strstr(at + 1, needle))
        sscanf(at + strlen(needle), "%lld", &v);
    return v;
}

/* A partition split in shares is read from Kafka once: its first pass
 * keeps the records of the other shares in files under TMPDIR, which the
 * passes over those shares read instead; the result is the same, and the
 * files are gone afterwards. */
Test(rebuild, shares_of_a_split_partition_are_read_once_from_kafka_then_from_spill_files) {
    start("spill", 1);
    live_projection();
    /* of the bulk topics (the sale topics take the runtime's path) */
    long long events = ol_test_pg_query_int(db, "select sum(next_offset) from orderlog.consumer_offsets where topic "
                                                "not like '%sale-events' and topic not like '%blacklist'");
    char *sums = checksums(db);
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    cr_assert_eq(mkdir(tmp, 0700), 0);
    setenv("TMPDIR", tmp, 1);
    char *out, *err;
    int rc = rebuild("-X rebuild.bulk.rows=500 -X consumer.batch.events=300", &out, &err);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    int given_up, passes = passes_of(err, &given_up);
    /* ~5,000 rows over 3 partitions, 500 a pass: every partition in shares */
    cr_expect_geq(passes, 9, "%d passes:\n%s", passes, err);
    cr_expect(strstr(err, " (keys 3 of "), "no partition was split in three shares or more:\n%s", err);
    /* every record read from Kafka once; the other shares' from the files */
    long long from_kafka = number_after(err, "in memory; records read from Kafka ");
    long long from_files = number_after(err, ", from spill files ");
    cr_expect_eq(from_kafka, events, "%lld records read from Kafka for %lld events:\n%s", from_kafka, events, err);
    cr_expect_gt(from_files, events / 2, "%lld records read from spill files for %lld events:\n%s", from_files, events,
                 err);
    cr_expect(strstr(err, "records read from Kafka 0, from spill files "), "no pass read from spill files only:\n%s",
              err);
    expect_tables_same(out);
    expect_sums_unchanged(sums);
    cr_expect_eq(entries_of(tmp), 0, "the rebuild left %d entries in TMPDIR", entries_of(tmp));
    free(out);
    free(err);
}

/* A rebuild stopped while it has spill files removes them too. */
Test(rebuild, a_rebuild_stopped_leaves_no_spill_files) {
    start("spillstop", 1);
    live_projection();
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    cr_assert_eq(mkdir(tmp, 0700), 0);
    setenv("TMPDIR", tmp, 1);
    ol_test_bg_t *rb = orderlog_bg(db, "rebuild -X rebuild.bulk.rows=300 -X consumer.batch.events=300");
    int seen = ol_test_bg_wait_stderr(rb, "rebuild: pass ", 1, 120000);
    ol_test_bg_signal(rb, SIGSTOP);
    cr_assert_geq(seen, 1, "the rebuild never finished a pass:\n%s", ol_test_bg_stderr(rb));
    bool replaying = !strstr(ol_test_bg_stderr(rb), " events replayed in ");
    /* while it replays, its directory is there */
    if (replaying)
        cr_expect_eq(entries_of(tmp), 1, "no spill directory under TMPDIR during the replay:\n%s",
                     ol_test_bg_stderr(rb));
    ol_test_bg_signal(rb, SIGTERM);
    ol_test_bg_signal(rb, SIGCONT);
    int rc = ol_test_bg_wait(rb, 60000);
    if (replaying)
        cr_expect_eq(rc, 1, "rebuild after SIGTERM: exit %d\n%s", rc, ol_test_bg_stderr(rb));
    cr_expect_eq(entries_of(tmp), 0, "the rebuild left %d entries in TMPDIR:\n%s", entries_of(tmp),
                 ol_test_bg_stderr(rb));
    ol_test_bg_free(rb);
}

/* A directory named as a rebuild's spill directory, holding one file. */
static void make_spill_dir(const char *path) {
    cr_assert_eq(mkdir(path, 0700), 0, "%s", path);
    char file[1200];
    snprintf(file, sizeof(file), "%s/0-0-2-0-0", path);
    FILE *f = fopen(file, "w");
    cr_assert(f);
    fputs("records", f);
    fclose(f);
}

/* A rebuild killed with kill -9 cannot remove its spill files (up to
 * hundreds of MB at 10M events): the next rebuild on the host removes the
 * directories whose process no longer exists, and only those. */
Test(rebuild, the_spill_files_of_a_killed_rebuild_are_removed_by_the_next) {
    start("spillkill", 1);
    live_projection();
    char *sums = checksums(db);
    char tmp[600], host[256], mine[400];
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    cr_assert_eq(mkdir(tmp, 0700), 0);
    setenv("TMPDIR", tmp, 1);
    cr_assert_eq(gethostname(host, sizeof(host)), 0);
    snprintf(mine, sizeof(mine), "orderlog-rebuild-%s-", host);
    ol_test_bg_t *rb = orderlog_bg(db, "rebuild -X rebuild.bulk.rows=300 -X consumer.batch.events=300");
    ol_test_bg_wait_stderr(rb, "rebuild: pass ", 1, 120000);
    ol_test_bg_signal(rb, SIGSTOP);
    char left[1200];
    bool replaying = !strstr(ol_test_bg_stderr(rb), " events replayed in ");
    cr_assert(replaying, "the rebuild replayed everything before it could be stopped:\n%s", ol_test_bg_stderr(rb));
    cr_assert(entries_with(tmp, mine, left, sizeof(left)) == 1,
              "no spill directory %s* under TMPDIR during the replay:\n%s", mine, ol_test_bg_stderr(rb));
    ol_test_bg_signal(rb, SIGKILL);
    ol_test_bg_wait(rb, 60000);
    ol_test_bg_free(rb);
    struct stat st;
    cr_assert_eq(stat(left, &st), 0, "the killed rebuild's directory %s is gone already", left);
    /* kept: one of a process alive (this test's), one of another host */
    char alive[1200], other[1200];
    snprintf(alive, sizeof(alive), "%s/%s%d-aaaaaa", tmp, mine, (int)getpid());
    snprintf(other, sizeof(other), "%s/orderlog-rebuild-another-host-%s-1-bbbbbb", tmp, host);
    make_spill_dir(alive);
    make_spill_dir(other);
    char *out, *err;
    int rc = rebuild("", &out, &err);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    cr_expect_neq(stat(left, &st), 0, "the killed rebuild's directory %s is still there:\n%s", left, err);
    cr_expect(strstr(err, "left by a rebuild (pid ") && strstr(err, left), "no word of the directory removed:\n%s",
              err);
    cr_expect_eq(stat(alive, &st), 0, "the directory of a process alive was removed:\n%s", err);
    cr_expect_eq(stat(other, &st), 0, "the directory of another host was removed:\n%s", err);
    expect_tables_same(out);
    expect_sums_unchanged(sums);
    free(out);
    free(err);
}

/* A log where every event makes a row (OrderPlaced only) holds more rows
 * per event than the first pass is planned for: that pass passes
 * rebuild.bulk.rows, is given up (what it folded is forgotten, its offsets
 * too) and split; the passes after it are planned from what it saw. */
Test(rebuild, a_pass_past_the_limit_is_given_up_and_split) {
    start("giveup", 1);
    char path[1024];
    FILE *f = ol_test_scratch_open(dir, "placed.jsonl", path, sizeof(path));
    for (int i = 0; i < 3000; i++)
        fprintf(f,
                "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"P-%05d\",\"user_id\":\"u-%d\",\"source\":"
                "\"flash_sale\",\"lines\":[{\"sku\":\"SKU-1\",\"quantity\":1,\"unit_price\":%d}],\"total_amount\":%d,"
                "\"currency\":\"CNY\",\"placed_at\":\"2026-11-11T00:10:00Z\"}}\n",
                i, i % 97, 100 + i, 100 + i);
    fclose(f);
    publish_path(path, 3000);
    char *out, *err;
    cr_assert_eq(project(db), 3000);
    char *sums = checksums(db);
    int rc = rebuild("-X rebuild.bulk.rows=400", &out, &err);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    int given_up, passes = passes_of(err, &given_up);
    cr_expect_geq(given_up, 1, "no pass was given up (%d passes):\n%s", passes, err);
    cr_expect(strstr(err, "held more than 400 rows"), "no word on the pass given up:\n%s", err);
    cr_expect(strstr(err, "rebuild: 3000 events replayed in "), "the events of a pass given up counted twice:\n%s",
              err);
    expect_tables_same(out);
    expect_sums_unchanged(sums);
    free(out);
    free(err);
}

/* A refund whose newer AfterSaleSynced names another order has events
 * under two keys, so possibly on two partitions, folded by two passes: the
 * rebuild merges its rows into the newest snapshot's, which is what the
 * live projection holds whatever order it read the partitions in. */
Test(rebuild, a_refund_moved_to_an_order_on_another_partition_is_one_row) {
    start("moved", 1);
    char path[1024];
    FILE *f = ol_test_scratch_open(dir, "moved.jsonl", path, sizeof(path));
    for (int v = 1; v <= 2; v++)
        for (int i = 0; i < 30; i++)
            fprintf(f,
                    "{\"type\":\"AfterSaleSynced\",\"data\":{\"refund_id\":\"RM-%02d\",\"order_id\":\"M%c-%02d\","
                    "\"platform\":\"tmall\",\"status\":\"%s\",\"lines\":[],\"amount\":%d,\"currency\":\"CNY\","
                    "\"version\":%d,\"updated_at\":\"2026-03-0%dT08:00:00Z\"}}\n",
                    i, v == 1 ? 'A' : 'B', i, v == 1 ? "requested" : "completed", 100 + i, v, v);
    fclose(f);
    publish_path(path, 60);
    char *out, *err;
    cr_assert_eq(project(db), 60);
    char *sums = checksums(db);
    int rc = rebuild("-X rebuild.bulk.rows=10 -X consumer.batch.events=5", &out, &err);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    cr_expect(strstr(err, "folded in more than one pass"), "no refund was folded by two passes:\n%s", err);
    expect_tables_same(out);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from orderlog.refunds"), 30);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from orderlog.refunds where order_id like 'MB-%' and "
                                          "version = 2 and status = 'completed'"),
                 30);
    expect_sums_unchanged(sums);
    free(out);
    free(err);
}

/* SIGTERM between or during passes stops the rebuild: exit 1, the shadow
 * dropped, the live projection untouched. */
Test(rebuild, sigterm_stops_the_rebuild_and_leaves_the_live_projection) {
    start("sigterm", 1);
    live_projection();
    char *sums = checksums(db);
    long long schema_oid = ol_test_pg_query_int(db, "select 'orderlog'::regnamespace::oid::bigint");
    ol_test_bg_t *rb = orderlog_bg(db, "rebuild -X rebuild.bulk.rows=500 -X consumer.batch.events=300");
    int seen = ol_test_bg_wait_stderr(rb, "rebuild: pass ", 2, 120000);
    cr_assert_geq(seen, 2, "the rebuild never finished two passes:\n%s", ol_test_bg_stderr(rb));
    ol_test_bg_signal(rb, SIGTERM);
    int rc = ol_test_bg_wait(rb, 60000);
    cr_expect_eq(rc, 1, "rebuild after SIGTERM: exit %d\nstdout:\n%s\nstderr:\n%s", rc, ol_test_bg_stdout(rb),
                 ol_test_bg_stderr(rb));
    cr_expect(strstr(ol_test_bg_stderr(rb), "stopped by a signal"), "no word on the stop:\n%s", ol_test_bg_stderr(rb));
    cr_expect(!strstr(ol_test_bg_stdout(rb), "swapped"), "swapped after SIGTERM:\n%s", ol_test_bg_stdout(rb));
    ol_test_bg_free(rb);
    cr_expect_eq(schemas_like(db, "orderlog\\_rebuild"), 0, "the shadow schema was left behind");
    cr_expect_eq(ol_test_pg_query_int(db, "select 'orderlog'::regnamespace::oid::bigint"), schema_oid,
                 "the live schema was replaced");
    char *after = checksums(db);
    expect_same("the live projection", sums, after);
    free(sums);
    free(after);
}

Test(rebuild, verify_only_detects_a_tampered_projection) {
    start("verify", 1);
    live_projection();
    char *sums = checksums(db), *defs = definitions_of(db);
    long long table_oid = ol_test_pg_query_int(db, "select 'orderlog.orders'::regclass::oid::bigint");

    /* untouched: verified */
    char *out, *err;
    int rc = rebuild("--verify-only", &out, &err);
    cr_assert_eq(rc, 0, "rebuild --verify-only: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    expect_tables_same(out);
    cr_expect(strstr(out, "verified"), "got:\n%s", out);
    cr_expect(!strstr(out, "swapped"), "--verify-only swapped:\n%s", out);
    cr_expect_eq(ol_test_pg_query_int(db, "select 'orderlog.orders'::regclass::oid::bigint"), table_oid,
                 "--verify-only replaced the live tables");
    cr_expect_eq(schemas_like(db, "orderlog\\_%"), 0, "a shadow or old schema was left behind");
    char *sums2 = checksums(db), *defs2 = definitions_of(db);
    expect_same("the live projection after --verify-only", sums, sums2);
    expect_same("the live definitions after --verify-only", defs, defs2);
    free(out);
    free(err);

    /* one order tampered with: the orders table differs, nothing else */
    const char *total_sql = "select total_amount from orderlog.orders where order_id = (select min(order_id) from "
                            "orderlog.orders)";
    long long total = ol_test_pg_query_int(db, total_sql);
    ol_test_pg_exec(db, "update orderlog.orders set total_amount = total_amount + 1 where order_id = (select "
                        "min(order_id) from orderlog.orders)");
    char *tampered = checksums(db);
    rc = rebuild("--verify-only", &out, &err);
    cr_expect_eq(rc, 1, "rebuild --verify-only of a tampered projection: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out,
                 err);
    expect_verdict(out, "orders", "DIFFERENT");
    for (size_t i = 1; i < NTABLES; i++)
        expect_verdict(out, tables[i], "same");
    cr_expect(strstr(out, "MISMATCH"), "got:\n%s", out);
    cr_expect(!strstr(out, "swapped"), "--verify-only swapped:\n%s", out);
    cr_expect_eq(ol_test_pg_query_int(db, "select 'orderlog.orders'::regclass::oid::bigint"), table_oid,
                 "--verify-only replaced the live tables");
    char *sums3 = checksums(db);
    expect_same("the tampered live projection after --verify-only", tampered, sums3);
    cr_expect_eq(ol_test_pg_query_int(db, total_sql), total + 1, "the tampered value is gone");
    cr_expect_eq(schemas_like(db, "orderlog\\_%"), 0, "a shadow or old schema was left behind");
    free(sums);
    free(sums2);
    free(sums3);
    free(defs);
    free(defs2);
    free(tampered);
    free(out);
    free(err);
}

Test(rebuild, projector_keeps_working_after_a_swap) {
    start("after", 1);
    live_projection();
    char *out, *err;
    int rc = rebuild("", &out, &err);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    free(out);
    free(err);

    /* the projector goes on from the offsets that came with the swap */
    long long more = publish_orders(4000, 2);
    long long projected = project(db);
    cr_expect_eq(projected, more, "after the swap the projector took %lld events, %lld were new", projected, more);

    /* and the result is what a clean projection of everything says */
    new_db(db2, sizeof(db2), 1);
    project(db2);
    char *live = checksums(db), *clean = checksums(db2);
    expect_same("the projection (rebuilt, then projected on) against a clean projection", clean, live);
    free(live);
    free(clean);
}

/* Holds an ACCESS SHARE lock on <schema>_rebuild.blacklist once it exists:
 * the rebuild replays (its writes to blacklist do not conflict with the
 * lock) but cannot add its constraints until released, so the live projector gets ahead of
 * the shadow meanwhile and the rebuild must catch up. */
typedef struct blocker_s {
    PGconn *conn;
    int held;             /* got the lock once */
    long long release_at; /* 0: not yet known */
} blocker_t;

static void blocker_step(blocker_t *b, ol_test_bg_t *rb, int hold_ms) {
    /* only once the shadow is complete (its primary key added: the lock
     * would hold that back) and the replay started */
    if (!b->held && strstr(ol_test_bg_stderr(rb), "rebuild: replaying the topics")) {
        PGconn *conn = PQconnectdb(db);
        cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
        PGresult *res = PQexec(conn, "select to_regclass('orderlog_rebuild.blacklist') is not null");
        int exists = PQresultStatus(res) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(res, 0, 0), "t");
        PQclear(res);
        if (exists) {
            res = PQexec(conn, "begin; lock table orderlog_rebuild.blacklist in access share mode");
            if (PQresultStatus(res) == PGRES_COMMAND_OK) {
                b->conn = conn;
                b->held = 1;
                b->release_at = ol_test_now_ms() + 60000; /* at the latest */
                conn = NULL;
            }
            PQclear(res);
        }
        PQfinish(conn);
    } else if (b->conn && strstr(ol_test_bg_stderr(rb), " events replayed in ") &&
               b->release_at > ol_test_now_ms() + hold_ms) {
        b->release_at = ol_test_now_ms() + hold_ms;
    } else if (b->conn && ol_test_now_ms() >= b->release_at) {
        PQclear(PQexec(b->conn, "commit"));
        PQfinish(b->conn);
        b->conn = NULL;
    }
}

Test(rebuild, projector_running_during_the_rebuild_ends_consistent) {
    start("during", 1);
    live_projection();
    ol_test_bg_t *live = orderlog_bg(db, "project");
    ol_test_bg_t *rb = orderlog_bg(db, "rebuild");
    /* events keep coming while the rebuild runs, slower than it replays
     * them (so that it gets to their end) but all along; the rebuild is held
     * for 3 s after its replay (see blocker_t) while the live projector goes
     * on: it has to catch up, and it swaps with the live projector running */
    blocker_t blocker = {NULL, 0, 0};
    int chunks = 0, rc;
    long long deadline = ol_test_now_ms() + 240000;
    while ((rc = ol_test_bg_wait(rb, 0)) < 0 && ol_test_now_ms() < deadline) {
        blocker_step(&blocker, rb, 3000);
        publish_orders(400, 100 + chunks++);
        blocker_step(&blocker, rb, 3000);
        usleep(200 * 1000);
    }
    if (blocker.conn)
        PQfinish(blocker.conn);
    if (rc < 0)
        rc = ol_test_bg_wait(rb, 240000);
    int rounds = ol_test_count_lines(ol_test_bg_stderr(rb), "rebuild: the live projection moved on");
    cr_log_info("%d chunks of 480 events published during the rebuild; %d catch-up rounds; rebuild stderr:\n%s", chunks,
                rounds, ol_test_bg_stderr(rb));
    cr_expect_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, ol_test_bg_stdout(rb), ol_test_bg_stderr(rb));
    cr_expect(blocker.held, "the shadow schema was never seen: the rebuild was not held back");
    cr_expect_gt(rounds, 0, "the live projector never got ahead of the rebuild: the catch-up was not exercised");
    cr_expect(strstr(ol_test_bg_stdout(rb), "swapped"), "no swap:\n%s", ol_test_bg_stdout(rb));
    /* a little more after it, then the live projector stops (SIGTERM: drains) */
    publish_orders(2000, 99);
    usleep(1500 * 1000);
    ol_test_bg_signal(live, SIGTERM);
    int live_rc = ol_test_bg_wait(live, 60000);
    cr_expect_eq(live_rc, 0, "the live projector: exit %d\nstdout:\n%s\nstderr:\n%s", live_rc, ol_test_bg_stdout(live),
                 ol_test_bg_stderr(live));
    project(db);

    new_db(db2, sizeof(db2), 1);
    project(db2);
    char *sums = checksums(db), *clean = checksums(db2);
    expect_same("the projection (projector running during the rebuild) against a clean projection", clean, sums);
    cr_expect_eq(schemas_like(db, "orderlog\\_%"), 0, "a shadow or old schema was left behind");
    free(sums);
    free(clean);
    ol_test_bg_free(rb);
    ol_test_bg_free(live);
}

Test(rebuild, offsets_of_another_group_do_not_hold_the_rebuild_back) {
    start("othergroup", 1);
    live_projection();
    /* another consumer's offsets in the same table: the shadow never has
     * them, so they must not count as "the live projector got ahead" */
    char sql[512];
    snprintf(sql, sizeof(sql),
             "insert into orderlog.consumer_offsets (group_id, topic, partition, next_offset) values "
             "('%sother', '%ssale-events', 0, 1000000)",
             prefix, prefix);
    ol_test_pg_exec(db, sql);
    char *out, *err;
    long long t0 = ol_test_now_ms();
    int rc = rebuild("", &out, &err);
    cr_log_info("rebuild took %lld ms", ol_test_now_ms() - t0);
    cr_expect_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    cr_expect_eq(ol_test_count_lines(err, "rebuild: the live projection moved on"), 0,
                 "catch-up rounds for offsets the rebuild never replays:\n%s", err);
    for (size_t i = 0; i < NTABLES - 1; i++)
        expect_verdict(out, tables[i], "same");
    free(out);
    free(err);
}

/* ---- readers during the swap ---- */

enum { READ_SIMPLE, READ_PREPARED, READ_RECONNECT, READ_VIEW, NREADERS };
static const char *const reader_names[] = {"simple queries", "prepared statements", "a connection per query",
                                           "the user_orders view"};

typedef struct reader_s {
    pthread_t thread;
    int mode;
    const char *conninfo;
    atomic_int *stop;
    char expect_orders[128], expect_lines[64]; /* what every answer must be */
    long queries, errors, wrong;
    char first_error[512], first_wrong[512];
} reader_t;

/* The first row of a result as "a|b|...". */
static void row_text(PGresult *res, char *out, size_t size) {
    size_t len = 0;
    out[0] = '\0';
    for (int f = 0; f < PQnfields(res) && len < size; f++)
        len += (size_t)snprintf(out + len, size - len, "%s%s", f ? "|" : "",
                                PQgetisnull(res, 0, f) ? "NULL" : PQgetvalue(res, 0, f));
}

static const char *reader_sql(int mode, int which) {
    if (mode == READ_VIEW)
        return which ? "select sum(lines) from orderlog.user_orders"
                     : "select count(*), sum(total_amount) from orderlog.user_orders";
    return which ? "select count(*) from orderlog.order_lines"
                 : "select count(*), sum(total_amount) from orderlog.orders";
}

static void reader_check(reader_t *r, PGconn *conn, int which) {
    PGresult *res;
    if (r->mode == READ_PREPARED)
        res = PQexecPrepared(conn, which ? "lines" : "orders", 0, NULL, NULL, NULL, 0);
    else
        res = PQexec(conn, reader_sql(r->mode, which));
    r->queries++;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        if (!r->errors++)
            snprintf(r->first_error, sizeof(r->first_error), "%s: %s", reader_sql(r->mode, which),
                     PQresultErrorMessage(res));
    } else {
        char got[256];
        row_text(res, got, sizeof(got));
        const char *expect = which ? r->expect_lines : r->expect_orders;
        if (strcmp(got, expect) && !r->wrong++)
            snprintf(r->first_wrong, sizeof(r->first_wrong), "%s: got %s, expected %s", reader_sql(r->mode, which), got,
                     expect);
    }
    PQclear(res);
}

static PGconn *reader_connect(reader_t *r) {
    PGconn *conn = PQconnectdb(r->conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        if (!r->errors++)
            snprintf(r->first_error, sizeof(r->first_error), "connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    if (r->mode == READ_PREPARED) {
        PQclear(PQprepare(conn, "orders", reader_sql(r->mode, 0), 0, NULL));
        PQclear(PQprepare(conn, "lines", reader_sql(r->mode, 1), 0, NULL));
    }
    return conn;
}

static void *reader_main(void *arg) {
    reader_t *r = arg;
    PGconn *conn = NULL;
    while (!atomic_load(r->stop)) {
        if (!conn && !(conn = reader_connect(r))) {
            usleep(10000);
            continue;
        }
        /* autocommit: each query is a transaction of its own */
        reader_check(r, conn, 0);
        reader_check(r, conn, 1);
        if (r->mode == READ_RECONNECT || PQstatus(conn) != CONNECTION_OK) {
            PQfinish(conn);
            conn = NULL;
        }
    }
    PQfinish(conn);
    return NULL;
}

Test(rebuild, readers_never_see_an_empty_or_partial_table_during_the_swap) {
    start("readers", 1);
    live_projection();
    atomic_int stop = 0;
    reader_t readers[NREADERS];
    memset(readers, 0, sizeof(readers));
    for (int i = 0; i < NREADERS; i++) {
        reader_t *r = &readers[i];
        r->mode = i;
        r->conninfo = db;
        r->stop = &stop;
        char *orders = ol_test_pg_query_rows(db, reader_sql(i, 0)),
             *lines = ol_test_pg_query_rows(db, reader_sql(i, 1));
        orders[strcspn(orders, "\n")] = '\0';
        lines[strcspn(lines, "\n")] = '\0';
        snprintf(r->expect_orders, sizeof(r->expect_orders), "%s", orders);
        snprintf(r->expect_lines, sizeof(r->expect_lines), "%s", lines);
        cr_assert(strncmp(orders, "0|", 2) && strcmp(lines, "0"), "nothing projected: %s / %s", orders, lines);
        free(orders);
        free(lines);
    }
    for (int i = 0; i < NREADERS; i++)
        cr_assert_eq(pthread_create(&readers[i].thread, NULL, reader_main, &readers[i]), 0);
    usleep(300 * 1000);
    /* two rebuilds in a row: two swaps under the readers */
    char *out[2] = {NULL, NULL}, *err[2] = {NULL, NULL};
    int rc[2];
    for (int k = 0; k < 2; k++)
        rc[k] = rebuild("", &out[k], &err[k]);
    usleep(300 * 1000);
    atomic_store(&stop, 1);
    for (int i = 0; i < NREADERS; i++)
        pthread_join(readers[i].thread, NULL);
    for (int k = 0; k < 2; k++) {
        cr_expect_eq(rc[k], 0, "rebuild %d: exit %d\nstdout:\n%s\nstderr:\n%s", k + 1, rc[k], out[k], err[k]);
        cr_expect(strstr(out[k], "swapped"), "rebuild %d did not swap:\n%s", k + 1, out[k]);
        free(out[k]);
        free(err[k]);
    }
    for (int i = 0; i < NREADERS; i++) {
        reader_t *r = &readers[i];
        cr_log_info("reader (%s): %ld queries, %ld errors, %ld wrong answers", reader_names[i], r->queries, r->errors,
                    r->wrong);
        cr_expect_gt(r->queries, 20, "reader (%s) hardly ran: %ld queries", reader_names[i], r->queries);
        cr_expect_eq(r->errors, 0, "reader (%s): %ld of %ld queries failed; the first: %s", reader_names[i], r->errors,
                     r->queries, r->first_error);
        cr_expect_eq(r->wrong, 0, "reader (%s): %ld of %ld answers wrong; the first: %s", reader_names[i], r->wrong,
                     r->queries, r->first_wrong);
    }
}

Test(rebuild, rebuild_fails_cleanly_without_migrations) {
    start("nomigr", 0);
    publish_orders(400, 1);
    char *out, *err;
    int rc = rebuild("", &out, &err);
    cr_expect_eq(rc, 1, "rebuild without migrations: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    cr_expect(strstr(err, "orderlog migrate"), "the error does not say to run `orderlog migrate`:\n%s", err);
    cr_expect_eq(schemas_like(db, "orderlog%"), 0, "rebuild left a schema behind in an unmigrated database");
    free(out);
    free(err);
    rc = rebuild("--verify-only", &out, &err);
    cr_expect_eq(rc, 1, "rebuild --verify-only without migrations: exit %d\n%s", rc, err);
    cr_expect(strstr(err, "orderlog migrate"), "%s", err);
    free(out);
    free(err);
}
