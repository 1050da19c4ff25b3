/* orderlog migrate against the real PostgreSQL: each test gets a database
 * of its own (and a scratch directory when it needs one), so tests can run
 * in parallel. The binary runs as a subprocess, as operators run it. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/domain/embedded.h"
#include "common/base/sha256.h"
#include "common/base/util.h"
#include "helpers.h"

static char db[1024]; /* conninfo of this test's database */
static char dir[512]; /* this test's scratch directory, when it has one */

static void setup(void) {
    ol_test_pg_scratch_db("migrate", db, sizeof(db));
}

static void teardown(void) {
    ol_test_pg_drop_db(db);
    ol_test_rmtree(dir);
}

TestSuite(migrate, .init = setup, .fini = teardown, .timeout = 120);

/* orderlog -X pg.conninfo=<conninfo> migrate <args>; returns the exit status. */
static int run_migrate_on(const char *conninfo, const char *args, char **out, char **err) {
    char *bin = ol_test_shell_quote(ol_test_bin()), *ci = ol_test_shell_quote(conninfo);
    int rc = ol_test_runf(out, err, "%s -X pg.conninfo=%s migrate %s", bin, ci, args);
    free(bin);
    free(ci);
    return rc;
}

static int run_migrate(const char *args, char **out, char **err) {
    return run_migrate_on(db, args, out, err);
}

/* "--dir '<dir>'" plus more arguments. */
static char *dir_args(const char *more) {
    char *q = ol_test_shell_quote(dir), *s;
    cr_assert(asprintf(&s, "--dir %s %s", q, more) >= 0);
    free(q);
    return s;
}

static size_t embedded_count(void) {
    size_t n = 0;
    while (ol_embedded_migrations[n].path)
        n++;
    return n;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* A scratch directory holding a copy of every compiled-in migration. */
static void dir_with_embedded(void) {
    ol_test_tmpdir(dir, sizeof(dir));
    for (const ol_embedded_t *e = ol_embedded_migrations; e->path; e++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, base_name(e->path));
        ol_test_write_file(path, e->data, e->len);
    }
}

static void dir_file(const char *name, const char *content) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ol_test_write_file(path, content, strlen(content));
}

static long long recorded(void) {
    return ol_test_pg_query_int(db, "select count(*) from public.schema_migrations");
}

static int table_exists(const char *qualified) {
    char sql[256];
    snprintf(sql, sizeof(sql), "select (to_regclass('%s') is not null)::int", qualified);
    return (int)ol_test_pg_query_int(db, sql);
}

/* Everything in schema_migrations, applied_at included, as one string. */
static char *migrations_snapshot(void) {
    return ol_test_pg_query_str(db, "select string_agg(version || '|' || name || '|' || checksum || '|' || "
                                    "applied_at, ';' order by version) from public.schema_migrations");
}

static int matches(const char *text, const char *pattern) {
    regex_t re;
    cr_assert(!regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE | REG_NOSUB), "bad pattern %s", pattern);
    int ok = !regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    return ok;
}

/* The read models of EVENTS.md with their minimum columns. */
static const struct {
    const char *table;
    const char *columns; /* a text[] literal */
} read_models[] = {
    {"orders", "{order_id,user_id,source,platform,status,total_amount,currency,paid_amount,refunded_amount,"
               "placed_at,updated_at,version}"},
    {"order_lines", "{order_id,line_no,sku,quantity,unit_price}"},
    {"refunds", "{refund_id,order_id,status,amount,currency,requested_at,completed_at,version}"},
    {"skus", "{sku,platform,title,price,currency,stock,version,updated_at}"},
    {"inventory", "{sku,total,held,sold,available}"},
    {"holds", "{hold_id,user_id,sku,quantity,status,expires_at}"},
    {"buy_decisions", "{request_id,user_id,sku,quantity,outcome,reason,decided_at}"},
    {"user_sku_totals", "{user_id,sku,held,bought}"},
    {"blacklist", "{subject_type,subject,reason,until}"},
    {"consumer_offsets", "{group_id,topic,partition,next_offset,updated_at}"},
};

Test(migrate, applies_every_embedded_migration_and_creates_the_read_models) {
    char *out, *err;
    size_t n = embedded_count();
    cr_assert(n >= 1, "no migration compiled in");
    int rc = run_migrate("", &out, &err);
    cr_assert_eq(rc, 0, "migrate failed (%d): %s", rc, err);
    cr_expect_eq(ol_test_count_lines(out, "applied "), (int)n, "one line per migration expected:\n%s", out);
    cr_expect(strstr(out, "applied 001_init.sql in "), "got:\n%s", out);
    char summary[64];
    snprintf(summary, sizeof(summary), "%zu applied, 0 already up to date", n);
    cr_expect(strstr(out, summary), "expected \"%s\" in:\n%s", summary, out);
    cr_expect_eq(recorded(), (long long)n);

    /* recorded with the sha256 of the file bytes */
    for (const ol_embedded_t *e = ol_embedded_migrations; e->path; e++) {
        char hex[OL_SHA256_HEX_SIZE], sql[512];
        ol_sha256_hex(e->data, e->len, hex);
        snprintf(sql, sizeof(sql),
                 "select count(*) from public.schema_migrations where name = '%s' and checksum = '%s'",
                 base_name(e->path), hex);
        cr_expect_eq(ol_test_pg_query_int(db, sql), 1, "%s not recorded with checksum %s", e->path, hex);
    }

    for (size_t i = 0; i < sizeof(read_models) / sizeof(read_models[0]); i++) {
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "select array_to_string(array(select c from unnest('%s'::text[]) c except "
                 "select column_name from information_schema.columns where table_schema = 'orderlog' "
                 "and table_name = '%s'), ',')",
                 read_models[i].columns, read_models[i].table);
        char *missing = ol_test_pg_query_str(db, sql);
        cr_expect(missing && !*missing, "orderlog.%s lacks columns: %s", read_models[i].table, missing);
        free(missing);
        snprintf(sql, sizeof(sql), "select (obj_description('orderlog.%s'::regclass, 'pg_class') is not null)::int",
                 read_models[i].table);
        cr_expect_eq(ol_test_pg_query_int(db, sql), 1, "orderlog.%s has no comment", read_models[i].table);
    }

    static const ol_test_case_t pks[] = {
        {"orders", "order_id"},
        {"order_lines", "order_id,line_no"},
        {"user_sku_totals", "user_id,sku"},
        {"blacklist", "subject_type,subject"},
        {"consumer_offsets", "group_id,topic,partition"},
    };
    for (size_t i = 0; i < sizeof(pks) / sizeof(pks[0]); i++) {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "select string_agg(a.attname, ',' order by k.ord) from pg_index i, "
                 "unnest(i.indkey) with ordinality k(attnum, ord), pg_attribute a "
                 "where i.indrelid = 'orderlog.%s'::regclass and i.indisprimary "
                 "and a.attrelid = i.indrelid and a.attnum = k.attnum",
                 pks[i].in);
        char *pk = ol_test_pg_query_str(db, sql);
        cr_expect(pk && !strcmp(pk, pks[i].want), "primary key of orderlog.%s: got (%s), want (%s)", pks[i].in, pk,
                  pks[i].want);
        free(pk);
    }
    free(out);
    free(err);
}

Test(migrate, read_models_refuse_invalid_rows) {
    cr_assert_eq(run_migrate("", NULL, NULL), 0);
    char msg[512];
    ol_test_pg_exec(db,
                    "insert into orderlog.orders (order_id, user_id, source, status, total_amount, currency, "
                    "placed_at, updated_at) values ('o1', 'u1', 'flash_sale', 'placed', 1999, 'EUR', now(), now())");
    static const char *const bad[] = {
        "insert into orderlog.orders (order_id, user_id, source, status, total_amount, currency, updated_at) "
        "values ('o2', 'u1', 'flash_sale', 'lost', 1, 'EUR', now())",
        "insert into orderlog.orders (order_id, user_id, source, status, total_amount, currency, updated_at) "
        "values ('o3', 'u1', 'flash_sale', 'placed', -1, 'EUR', now())",
        "insert into orderlog.order_lines values ('o1', 1, 'A1', 0, 100)",
        "insert into orderlog.buy_decisions (request_id, user_id, sku, quantity, outcome, reason, decided_at) "
        "values ('r1', 'u1', 'A1', 1, 'rejected', null, now())",
        "insert into orderlog.buy_decisions (request_id, user_id, sku, quantity, outcome, reason, decided_at) "
        "values ('r2', 'u1', 'A1', 1, 'rejected', 'too_late', now())",
        "insert into orderlog.holds (hold_id, user_id, sku, quantity, status, expires_at, placed_at, updated_at) "
        "values ('h1', 'u1', 'A1', 1, 'frozen', now(), now(), now())",
        "insert into orderlog.blacklist (subject_type, subject, reason, until, changed_at) values ('mac', 'x', "
        "'manual', null, now())",
        "insert into orderlog.consumer_offsets (group_id, topic, partition, next_offset) values ('g', 't', 0, -5)",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_neq(ol_test_pg_try_exec(db, bad[i], msg, sizeof(msg)), 0, "accepted: %s", bad[i]);
    ol_test_pg_exec(db, "insert into orderlog.order_lines values ('o1', 1, 'A1', 2, 100)");
    ol_test_pg_exec(db, "insert into orderlog.buy_decisions (request_id, user_id, sku, quantity, outcome, reason, "
                        "decided_at) values ('r3', 'u1', 'A1', 1, 'rejected', 'sold_out', now())");
    cr_expect_neq(
        ol_test_pg_try_exec(db, "insert into orderlog.order_lines values ('o1', 1, 'A2', 1, 5)", msg, sizeof(msg)), 0,
        "(order_id, line_no) must be unique");
}

Test(migrate, second_run_changes_nothing) {
    char *out, *err;
    cr_assert_eq(run_migrate("", NULL, NULL), 0);
    char *before = migrations_snapshot();
    int rc = run_migrate("", &out, &err);
    cr_assert_eq(rc, 0, "second run failed (%d): %s", rc, err);
    cr_expect(strstr(out, "nothing to do"), "got:\n%s", out);
    cr_expect_eq(ol_test_count_lines(out, "applied "), 0, "nothing may be applied twice:\n%s", out);
    char *after = migrations_snapshot();
    cr_expect_str_eq(after, before, "schema_migrations changed");
    free(before);
    free(after);
    free(out);
    free(err);
}

Test(migrate, refuses_to_run_when_an_applied_migration_changed) {
    char *out, *err, *args;
    dir_with_embedded();
    args = dir_args("");
    cr_assert_eq(run_migrate(args, NULL, NULL), 0);
    long long before = recorded();
    char *snapshot = migrations_snapshot();

    char path[1024];
    snprintf(path, sizeof(path), "%s/001_init.sql", dir);
    ol_test_append_file(path, "-- an innocent-looking edit\n");
    dir_file("900_added_meanwhile.sql", "create table orderlog.added_meanwhile (id int);\n");
    int rc = run_migrate(args, &out, &err);
    cr_expect_eq(rc, 1, "exit status %d, stderr: %s", rc, err);
    char *line = ol_test_find_line(err, "001_init.sql", "changed", NULL);
    cr_expect(line, "stderr must name the file and say it changed:\n%s", err);
    free(line);
    cr_expect_eq(recorded(), before, "nothing may be applied");
    cr_expect_not(table_exists("orderlog.added_meanwhile"), "900 must not run");
    char *after = migrations_snapshot();
    cr_expect_str_eq(after, snapshot);
    free(after);
    free(out);
    free(err);

    /* --status shows it, and fails too */
    free(args);
    args = dir_args("--status");
    rc = run_migrate(args, &out, &err);
    cr_expect_eq(rc, 1);
    ol_test_expect_line(out, "001_init.sql", "CHANGED", NULL);
    ol_test_expect_line(out, "900_added_meanwhile.sql", "pending", NULL);
    free(snapshot);
    free(args);
    free(out);
    free(err);
}

Test(migrate, rolls_back_a_failing_migration_and_names_its_line) {
    char *out, *err, *args;
    dir_with_embedded();
    dir_file("900_bad.sql", "create table orderlog.partial_a (id int);\n"
                            "\n"
                            "create table orderlog.partial_b (id int primary key,\n"
                            "    oops notatype);\n");
    dir_file("901_after.sql", "create table orderlog.after_bad (id int);\n");
    args = dir_args("");
    int rc = run_migrate(args, &out, &err);
    cr_expect_eq(rc, 1, "exit status %d", rc);
    char *line = ol_test_find_line(err, "900_bad.sql", "line 4", "notatype", NULL);
    cr_expect(line, "stderr must name the file, the line and the reason:\n%s", err);
    free(line);
    cr_expect_eq(recorded(), (long long)embedded_count(), "the migrations before the bad one stay applied");
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from public.schema_migrations where version >= 900"), 0);
    cr_expect_not(table_exists("orderlog.partial_a"), "the failed migration's first statement must be rolled back");
    cr_expect_not(table_exists("orderlog.after_bad"), "nothing runs after a failure");
    cr_expect(table_exists("orderlog.orders"));
    free(args);
    free(out);
    free(err);
}

/* A failure without a position in the statement: the line is where the
 * failing statement starts, counted past comments, strings and dollar
 * quotes holding semicolons. */
Test(migrate, names_the_statement_line_of_a_runtime_failure) {
    char *err, *args;
    dir_with_embedded();
    dir_file("900_dup.sql", "-- a comment; with a 'quote\n"
                            "create table orderlog.dup (id int, note text default 'a;b');\n"
                            "create function orderlog.f() returns int language sql as $$ select 1; $$;\n"
                            "/* nested /* comment; */ ; */\n"
                            "insert into orderlog.dup values (1), (1);\n"
                            "\n"
                            "create unique index\n"
                            "  on orderlog.dup (id);\n");
    args = dir_args("");
    int rc = run_migrate(args, NULL, &err);
    cr_expect_eq(rc, 1);
    ol_test_expect_line(err, "900_dup.sql", "failed at line 7", "unique", NULL);
    cr_expect_not(table_exists("orderlog.dup"));
    free(args);
    free(err);
}

Test(migrate, refuses_transaction_control_before_touching_the_database) {
    char *err, *args;
    dir_with_embedded();
    dir_file("900_commit.sql", "create table orderlog.tc (id int);\ncommit;\n");
    args = dir_args("");
    int rc = run_migrate(args, NULL, &err);
    cr_expect_eq(rc, 1);
    ol_test_expect_line(err, "900_commit.sql", "line 2", "commit", NULL);
    cr_expect_not(table_exists("public.schema_migrations"), "nothing may be applied, not even 001");
    free(args);
    free(err);
}

/* The first line of err holding both needles, or an empty string (so a
 * failed expectation can print it). Free it. */
static char *line_with(const char *err, const char *a, const char *b) {
    char *line = ol_test_find_line(err, a, b, NULL);
    return line ? line : ol_xstrdup("");
}

Test(migrate, refuses_badly_named_or_ordered_files) {
    static const struct {
        const char *first, *second; /* the two files of the directory */
        const char *a, *b;          /* the needles of the line of err refusing them */
        const char *what;
    } cases[] = {
        {"9_a.sql", "10_b.sql", "10_b.sql", "9_a.sql", "versions out of name order"},
        {"001_a.sql", "001_b.sql", "001_a.sql", "same version", "duplicate versions"},
        {"001_a.sql", "init.sql", "init.sql", "NNN_description.sql", "a badly named file"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (i)
            ol_test_rmtree(dir);
        ol_test_tmpdir(dir, sizeof(dir));
        dir_file(cases[i].first, "select 1;\n");
        dir_file(cases[i].second, "select 1;\n");
        char *err, *args = dir_args("");
        cr_expect_eq(run_migrate(args, NULL, &err), 1, "%s", cases[i].what);
        char *line = line_with(err, cases[i].a, cases[i].b);
        cr_expect(*line, "%s must be refused:\n%s", cases[i].what, err);
        free(line);
        free(err);
        free(args);
    }
    cr_expect_not(table_exists("public.schema_migrations"), "nothing may be applied");
}

Test(migrate, status_lists_pending_applied_and_unknown_migrations) {
    char *out, *err;
    int rc = run_migrate("--status", &out, &err);
    cr_expect_eq(rc, 0, "status on a fresh database: %d %s", rc, err);
    ol_test_expect_line(out, "001_init.sql", "pending", NULL);
    cr_expect_not(table_exists("public.schema_migrations"), "--status must not write");
    free(out);
    free(err);

    cr_assert_eq(run_migrate("", NULL, NULL), 0);
    rc = run_migrate("--status", &out, &err);
    cr_expect_eq(rc, 0);
    cr_expect(matches(out, "^ +1 +001_init\\.sql +applied [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"),
              "got:\n%s", out);
    free(out);
    free(err);

    /* a version applied by a newer orderlog: listed, warned about, not fatal */
    ol_test_pg_exec(db, "insert into public.schema_migrations (version, name, checksum) "
                        "values (99999, '99999_from_the_future.sql', 'abc')");
    rc = run_migrate("--status", &out, &err);
    cr_expect_eq(rc, 0);
    ol_test_expect_line(out, "99999", "99999_from_the_future.sql", "unknown file", NULL);
    free(out);
    free(err);
    rc = run_migrate("", &out, &err);
    cr_expect_eq(rc, 0, "an unknown applied version must not fail migrate: %s", err);
    cr_expect(strstr(out, "nothing to do"), "got:\n%s", out);
    char *line = ol_test_find_line(err, "warning", "99999", NULL);
    cr_expect(line, "expected a warning about version 99999:\n%s", err);
    free(line);
    free(out);
    free(err);
}

/* Concurrent runs on a fresh database: all succeed, each migration is
 * applied by exactly one of them. A slow migration makes the others wait
 * on the lock for sure. */
static void run_concurrently(int nprocs, const char *args) {
    char outdir[600], *bin = ol_test_shell_quote(ol_test_bin()), *ci = ol_test_shell_quote(db), *err;
    snprintf(outdir, sizeof(outdir), "%s/run", dir);
    char *qout = ol_test_shell_quote(outdir);
    int rc = ol_test_runf(NULL, &err,
                          "mkdir -p %s && cd %s && for i in $(seq %d); do "
                          "(%s -X pg.conninfo=%s migrate %s >out$i 2>err$i; echo $? >rc$i) & done; wait",
                          qout, qout, nprocs, bin, ci, args);
    cr_assert_eq(rc, 0, "%s", err);
    free(err);
    free(bin);
    free(ci);
    free(qout);
}

static char *run_file(const char *name, int i) {
    char path[700];
    snprintf(path, sizeof(path), "%s/run/%s%d", dir, name, i);
    char *s = ol_test_read_file(path);
    cr_assert(s, "cannot read %s", path);
    return s;
}

Test(migrate, concurrent_runs_wait_for_each_other) {
    enum { NPROCS = 3 };
    dir_with_embedded();
    dir_file("900_slow.sql", "select pg_sleep(1.5);\ncreate table orderlog.slow (id int);\n");
    char *args = dir_args("");
    run_concurrently(NPROCS, args);
    int applied_lines = 0, applied_runs = 0, waited = 0;
    for (int i = 1; i <= NPROCS; i++) {
        char *rc = run_file("rc", i), *out = run_file("out", i), *err = run_file("err", i);
        cr_expect_str_eq(rc, "0\n", "run %d failed: %s", i, err);
        applied_lines += ol_test_count_lines(out, "applied ");
        applied_runs += ol_test_count_lines(out, "applied ") > 0;
        waited += strstr(err, "waiting for another") != NULL;
        free(rc);
        free(out);
        free(err);
    }
    cr_expect_eq(applied_lines, (int)embedded_count() + 1, "each migration applied by exactly one run");
    cr_expect_eq(applied_runs, 1, "the first run applies everything, the others find it done");
    cr_expect_geq(waited, 1, "the others must have waited for the lock");
    cr_expect_eq(recorded(), (long long)embedded_count() + 1);
    free(args);
}

Test(migrate, concurrent_runs_on_a_fresh_database_all_succeed) {
    enum { NPROCS = 4 };
    ol_test_tmpdir(dir, sizeof(dir));
    run_concurrently(NPROCS, "");
    int applied_lines = 0;
    for (int i = 1; i <= NPROCS; i++) {
        char *rc = run_file("rc", i), *out = run_file("out", i), *err = run_file("err", i);
        cr_expect_str_eq(rc, "0\n", "run %d failed: %s", i, err);
        applied_lines += ol_test_count_lines(out, "applied ");
        free(rc);
        free(out);
        free(err);
    }
    cr_expect_eq(applied_lines, (int)embedded_count());
    cr_expect_eq(recorded(), (long long)embedded_count());
}

Test(migrate, unreachable_server_fails_fast_naming_host_and_port) {
    static const char *const conninfos[] = {"host=127.0.0.1 port=1 dbname=x user=postgres",
                                            "postgresql://postgres@127.0.0.1:1/x"};
    for (size_t i = 0; i < 2; i++) {
        char *out, *err;
        time_t t0 = time(NULL);
        int rc = run_migrate_on(conninfos[i], "", &out, &err);
        cr_expect_eq(rc, 1, "%s: exit status %d", conninfos[i], rc);
        char *line = ol_test_find_line(err, "127.0.0.1:1", "ops/stack start", NULL);
        cr_expect(line, "%s: got:\n%s", conninfos[i], err);
        free(line);
        cr_expect_lt(time(NULL) - t0, 15, "must give up in bounded time");
        free(out);
        free(err);
    }
}

/* A server that accepts connections and never answers: connecting gives up
 * after the default connect_timeout (10 s), or the conninfo's own. */
Test(migrate, silent_server_times_out_in_bounded_time) {
    unsetenv("PGCONNECT_TIMEOUT"); /* it would replace the default; each test is a process of its own */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    cr_assert(fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) && !listen(fd, 8) &&
              !getsockname(fd, (struct sockaddr *)&sa, &salen));
    int port = ntohs(sa.sin_port);
    char conninfo[128], *err;
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=x user=postgres", port);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = run_migrate_on(conninfo, "", NULL, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect_eq(rc, 1);
    cr_expect(strstr(err, "timeout") && strstr(err, "127.0.0.1:"), "got: %s", err);
    cr_expect(secs >= 8 && secs < 20, "default connect timeout is 10 s, took %.1f s", secs);
    free(err);

    snprintf(conninfo, sizeof(conninfo), "postgresql://postgres@127.0.0.1:%d/x?connect_timeout=2", port);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = run_migrate_on(conninfo, "", NULL, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect_eq(rc, 1);
    cr_expect(secs < 6, "the conninfo's connect_timeout=2 must win, took %.1f s", secs);
    free(err);
    close(fd);
}

Test(migrate, rejects_unknown_options) {
    char *err;
    cr_expect_eq(run_migrate("--frobnicate", NULL, &err), 2);
    cr_expect(strstr(err, "--frobnicate"), "got: %s", err);
    free(err);
}
