/* orderlog decide through broker faults, mid-sale: the broker killed
 * (SIGKILL) and kept down longer than the old 10 s transaction timeout, then
 * stopped cleanly; restarted each time with ops/stack. decide (with project
 * beside it) must never exit and need no restart; every request gets exactly
 * one decision (loadgen's own matching), the projection passes ops/oracle
 * and `rebuild --verify-only`. The recovery time (last decision before the
 * fault, first decision after the broker is back, by the records' times in
 * sale-events) is printed and bounded.
 *
 * This stops the stack's broker (ops/stack kafka-stop / kafka-start): every
 * other test using it would fail meanwhile, so ctest runs it alone
 * (RUN_SERIAL, "_serial_" in the name). The teardown starts the broker again
 * whatever happened. Skipped when the tests use another broker than the
 * stack's (ORDERLOG_KAFKA_BOOTSTRAP_SERVERS). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define REQUESTS 20000
#define RATE 1000
#define DOWN_MS 15000     /* longer than the old transaction.timeout.ms (10 s) */
#define RECOVERY_MS 60000 /* bound: first decision at most this long after the broker is back */

static char dir[512], prefix[128], db[512], group[160];
static bool broker_stopped;
static long long fault_at, back_at; /* wall clock, ms */
static ol_test_bg_t *decide, *project;

/* ops/stack <args> of the source tree under test; its exit status. */
static int stack(const char *args, char **out) {
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    char *script;
    cr_assert(asprintf(&script, "%s/ops/stack", src && *src ? src : ".") >= 0);
    char *q = ol_test_shell_quote(script);
    int rc = ol_test_runf(out, NULL, "%s %s 2>&1", q, args);
    free(q);
    free(script);
    return rc;
}

/* True when the tests run against the stack's broker (the one ops/stack restarts). */
static bool stack_kafka_under_test(void) {
    char *out = NULL;
    if (stack("env", &out)) {
        free(out);
        return false;
    }
    const char *key = "ORDERLOG_KAFKA_BOOTSTRAP_SERVERS=", *p = strstr(out, key);
    bool same = false;
    if (p) {
        p += strlen(key);
        size_t n = strcspn(p, "\n");
        same = strlen(ol_test_kafka_bootstrap()) == n && !strncmp(p, ol_test_kafka_bootstrap(), n);
    }
    free(out);
    return same;
}

static void broker_start(void) {
    char *out = NULL;
    int rc = stack("kafka-start", &out);
    cr_assert_eq(rc, 0, "ops/stack kafka-start: exit %d\n%s", rc, out);
    free(out);
    broker_stopped = false;
}

static void stop_bg(ol_test_bg_t **bg) {
    if (!*bg)
        return;
    ol_test_bg_signal(*bg, SIGTERM);
    ol_test_bg_wait(*bg, 40000);
    ol_test_bg_free(*bg);
    *bg = NULL;
}

static void setup(void) {
    static int n;
    ol_test_tmpdir(dir, sizeof(dir));
    snprintf(prefix, sizeof(prefix), "it_faults_%ld_%d_", (long)getpid(), n++);
    snprintf(group, sizeof(group), "%sproject", prefix);
    *db = '\0';
}

static void teardown(void) {
    if (broker_stopped) {
        char *out = NULL;
        int rc = stack("kafka-start", &out);
        cr_expect_eq(rc, 0, "ops/stack kafka-start: exit %d\n%s", rc, out);
        free(out);
        broker_stopped = false;
    }
    stop_bg(&decide);
    stop_bg(&project);
    char groups[3][200];
    snprintf(groups[0], sizeof(groups[0]), "%sdecide", prefix);
    snprintf(groups[1], sizeof(groups[1]), "%sdecide-restore", prefix);
    snprintf(groups[2], sizeof(groups[2]), "%s", group);
    const char *g[] = {groups[0], groups[1], groups[2]};
    ol_test_kafka_delete_groups(g, 3);
    ol_test_orderlogf(NULL, NULL, NULL, "-X topic.prefix=%s topics delete", prefix);
    if (*db)
        ol_test_pg_drop_db(db);
    if (*dir)
        ol_test_rmtree(dir);
}

TestSuite(faults_decide, .init = setup, .fini = teardown, .timeout = 440);

/* The options of every orderlog run here: the test's prefix, partitions and database. */
static const char *fixed_args(void) {
    static char args[4096];
    char *ci = ol_test_shell_quote(*db ? db : ol_test_pg_conninfo());
    snprintf(args, sizeof(args), "-X topic.prefix=%s -X topic.partitions=3 -X pg.conninfo=%s", prefix, ci);
    free(ci);
    return args;
}

static ol_test_bg_t *orderlog_bg(const char *args) {
    char *bin = ol_test_shell_quote(ol_test_bin()), *cmd;
    cr_assert(asprintf(&cmd, "exec %s %s %s", bin, fixed_args(), args) >= 0);
    ol_test_bg_t *bg = ol_test_bg_start(cmd);
    free(cmd);
    free(bin);
    return bg;
}

/* The last 6000 bytes of a role's own log lines (not librdkafka's), for
 * messages; one buffer per slot (0..2). */
static const char *tail_of(const char *s, int slot) {
    static char bufs[3][6001];
    char *buf = bufs[slot];
    size_t len = 0;
    *buf = '\0';
    for (const char *line = s; *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) + 1 : strlen(line);
        if (!strstr(line, "\"msg\":\"kafka ") || (size_t)(strstr(line, "\"msg\":\"kafka ") - line) > n) {
            if (n > 6000)
                n = 6000;
            if (len + n > 6000) { /* keep the end */
                size_t drop = len + n - 6000;
                memmove(buf, buf + drop, len - drop);
                len -= drop;
            }
            memcpy(buf + len, line, n);
            len += n;
            buf[len] = '\0';
        }
        line += end ? (size_t)(end - line) + 1 : strlen(line);
    }
    return buf;
}

/* Wall clock, milliseconds since the epoch. */
static long long wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* "2026-01-02T03:04:05.678Z" as milliseconds since the epoch; -1 when it is not that. */
static long long parse_time(const char *s) {
    struct tm tm = {0};
    int ms = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000 + ms;
}

/* The record times of the decisions in sale-events: the last one before
 * `before` and the first one at or after `after`. */
static void decision_times(long long before, long long after, long long *last_before, long long *first_after) {
    char *out = NULL, *err = NULL;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "tail sale-events --from beginning");
    cr_assert_eq(rc, 0, "orderlog tail sale-events: exit %d\n%s", rc, err);
    *last_before = -1;
    *first_after = -1;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        cr_assert(j, "tail printed a line that is not JSON: %s", line);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type && (!strcmp(type, "BuyAccepted") || !strcmp(type, "BuyRejected"))) {
            long long t = parse_time(json_string_value(json_object_get(j, "timestamp")));
            cr_assert(t > 0, "no record time in %s", line);
            if (t < before && t > *last_before)
                *last_before = t;
            if (t >= after && (*first_after < 0 || t < *first_after))
                *first_after = t;
        }
        json_decref(j);
    }
    free(out);
    free(err);
}

/* A sale of REQUESTS buys at RATE/s with decide and project running; the
 * broker is stopped (kill: SIGKILL, else SIGTERM) once decisions flow, kept
 * down DOWN_MS and started again. */
static void sale_through_a_broker_fault(bool kill, const char *tag) {
    if (!stack_kafka_under_test())
        cr_skip_test("the tests do not use the broker of ops/stack (%s): not restarting it", ol_test_kafka_bootstrap());
    ol_test_pg_scratch_db("faults", db, sizeof(db));
    free(ol_test_orderlogf_ok(fixed_args(), "topics create"));
    free(ol_test_orderlogf_ok(fixed_args(), "migrate"));
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    char *bin = ol_test_shell_quote(ol_test_bin());
    char *out = NULL, *err = NULL;
    int rc =
        ol_test_runf(&out, &err, "%s/ops/sample-events catalog | %s %s publish", src ? src : ".", bin, fixed_args());
    cr_assert_eq(rc, 0, "publishing the catalog: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
    free(bin);

    decide = orderlog_bg("-X decide.workers=2 decide");
    char pargs[512];
    snprintf(pargs, sizeof(pargs), "-X consumer.group.id=%s project", group);
    project = orderlog_bg(pargs);
    cr_assert_eq(ol_test_bg_wait_stderr(decide, "restored", 2, 120000), 2, "decide did not take its partitions\n%s",
                 tail_of(ol_test_bg_stderr(decide), 1));

    char requests[700];
    snprintf(requests, sizeof(requests), "%s/requests.jsonl", dir);
    char *qreq = ol_test_shell_quote(requests), lgargs[1200];
    snprintf(lgargs, sizeof(lgargs),
             "loadgen --count %d --rate %d --hot-sku HOT-0001 --hot-share 0.5 --users 20000 --max-quantity 2 "
             "--seed 7 --out %s --wait-ms 180000 --json",
             REQUESTS, RATE, qreq);
    ol_test_bg_t *loadgen = orderlog_bg(lgargs);

    /* the fault, once decisions flow */
    long long deadline = ol_test_now_ms() + 120000, decided = 0;
    while (decided < 2000 && ol_test_now_ms() < deadline) {
        cr_assert_eq(ol_test_bg_wait(decide, 200), -1, "decide exited before the fault\n%s",
                     tail_of(ol_test_bg_stderr(decide), 1));
        ol_test_pg_try_query_int(db, "select count(*) from orderlog.buy_decisions", &decided);
    }
    cr_assert(decided >= 2000, "only %lld decisions projected within 120 s\n%s", decided,
              tail_of(ol_test_bg_stderr(decide), 1));
    broker_stopped = true;
    fault_at = wall_ms();
    rc = stack(kill ? "kafka-stop kill" : "kafka-stop", &out);
    cr_assert_eq(rc, 0, "ops/stack kafka-stop: exit %d\n%s", rc, out);
    free(out);
    /* down DOWN_MS: decide waits, it must not exit */
    rc = ol_test_bg_wait(decide, DOWN_MS);
    cr_assert_eq(rc, -1, "decide exited (%d) while the broker was down\n%s", rc, tail_of(ol_test_bg_stderr(decide), 1));
    long long start_t0 = wall_ms();
    broker_start();
    back_at = wall_ms();
    printf("faults_decide %s: broker stopped at %lld, back at %lld (ms since the epoch)\n", tag, fault_at, back_at);
    fflush(stdout);

    rc = ol_test_bg_wait(loadgen, 240000);
    const char *lgout = ol_test_bg_stdout(loadgen);
    cr_assert_eq(rc, 0, "loadgen: exit %d\n%s%s\ndecide:\n%s\nproject:\n%s", rc, lgout,
                 tail_of(ol_test_bg_stderr(loadgen), 0), tail_of(ol_test_bg_stderr(decide), 1),
                 tail_of(ol_test_bg_stderr(project), 2));
    char want[128];
    snprintf(want, sizeof(want), "decided %d of %d: 0 without a decision, 0 with more than one", REQUESTS, REQUESTS);
    cr_assert(strstr(lgout, want), "%s", lgout);
    ol_test_bg_free(loadgen);
    cr_assert_eq(ol_test_bg_wait(decide, 0), -1, "decide exited\n%s", tail_of(ol_test_bg_stderr(decide), 1));

    /* the projection catches up, passes the oracle and equals a replay */
    long long projected = 0;
    deadline = ol_test_now_ms() + 120000;
    while (projected < REQUESTS && ol_test_now_ms() < deadline) {
        cr_assert_eq(ol_test_bg_wait(project, 300), -1, "project exited\n%s", tail_of(ol_test_bg_stderr(project), 2));
        ol_test_pg_try_query_int(db, "select count(*) from orderlog.buy_decisions", &projected);
    }
    cr_assert_eq(projected, REQUESTS, "%lld of %d decisions projected within 120 s\n%s", projected, REQUESTS,
                 tail_of(ol_test_bg_stderr(project), 2));
    char *qdb = ol_test_shell_quote(db);
    rc = ol_test_runf(&out, NULL, "%s/ops/oracle --conninfo %s --requests %s 2>&1", src ? src : ".", qdb, qreq);
    free(qdb);
    cr_assert_eq(rc, 0, "the oracle failed after the fault:\n%s", out);
    cr_expect(strstr(out, "oracle: all 9 check(s) passed"), "%s", out);
    free(out);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X consumer.group.id=%s rebuild --verify-only", group);
    cr_assert_eq(rc, 0, "rebuild --verify-only: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);

    /* decide stayed up all along and stops cleanly */
    cr_assert_eq(ol_test_bg_wait(decide, 0), -1, "decide exited\n%s", tail_of(ol_test_bg_stderr(decide), 1));
    long long last_before, first_after;
    decision_times(fault_at, back_at, &last_before, &first_after);
    cr_assert(last_before > 0 && first_after > 0, "no decision before the fault or after the broker was back");
    printf("faults_decide %s: broker down %.1f s (restart took %.1f s); last decision %.1f s before the fault, first "
           "%.1f s after the broker was back: %.1f s without decisions\n",
           tag, (double)(back_at - fault_at) / 1e3, (double)(back_at - start_t0) / 1e3,
           (double)(fault_at - last_before) / 1e3, (double)(first_after - back_at) / 1e3,
           (double)(first_after - last_before) / 1e3);
    fflush(stdout);
    cr_expect(first_after - back_at <= RECOVERY_MS, "first decision %.1f s after the broker was back (bound %d s)",
              (double)(first_after - back_at) / 1e3, RECOVERY_MS / 1000);
    ol_test_bg_signal(decide, SIGTERM);
    rc = ol_test_bg_wait(decide, 60000);
    cr_assert_eq(rc, 0, "decide: exit %d on SIGTERM\n%s", rc, tail_of(ol_test_bg_stderr(decide), 1));
    cr_expect(strstr(ol_test_bg_stdout(decide), "decided "), "%s", ol_test_bg_stdout(decide));
    free(qreq);
}

Test(faults_decide, broker_killed_mid_sale_decide_resumes_alone_exactly_once) {
    sale_through_a_broker_fault(true, "kill -9");
}

Test(faults_decide, broker_stopped_cleanly_mid_sale_decide_resumes_alone_exactly_once) {
    sale_through_a_broker_fault(false, "clean stop");
}
