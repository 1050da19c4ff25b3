/* Every long-running role through broker faults, mid-sale: the broker
 * killed (SIGKILL) and kept down longer than the old 10 s transaction
 * timeout, then stopped cleanly; restarted each time with ops/stack. decide,
 * project, guard and gate run side by side under load (loadgen straight onto
 * Kafka, and a steady stream of POST /buy through the gate with curl); none
 * of them may exit or need a restart. Every request gets exactly one
 * decision (loadgen's own matching, and the gate's requests in ops/oracle),
 * every POST /buy is answered 200 or 202 (never 503, never unanswered), the
 * gate is unready while the broker is away, guard bans a bot that comes
 * after the broker is back, and the projection passes ops/oracle and
 * `rebuild --verify-only`. The recovery time of each role (its first piece
 * of work after the broker is back) is printed and bounded.
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
static ol_test_bg_t *decide, *project, *guard, *gate, *gate_load;

/* True when the tests run against the stack's broker (the one ops/stack restarts). */
static bool stack_kafka_under_test(void) {
    return ol_test_stack_serves("ORDERLOG_KAFKA_BOOTSTRAP_SERVERS=", ol_test_kafka_bootstrap(), "\n");
}

static void broker_start(void) {
    ol_test_stack_ok("kafka-start");
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
    ol_test_fresh(dir, sizeof(dir), prefix, sizeof(prefix), "it_faults_");
    snprintf(group, sizeof(group), "%sproject", prefix);
    *db = '\0';
}

static void teardown(void) {
    ol_test_stack_restore(&broker_stopped, "kafka-start");
    if (gate_load) {
        char stop[700];
        snprintf(stop, sizeof(stop), "%s/gate-load.stop", dir);
        ol_test_write_file(stop, "", 0);
        ol_test_bg_wait(gate_load, 70000);
        ol_test_bg_free(gate_load);
        gate_load = NULL;
    }
    stop_bg(&gate);
    stop_bg(&guard);
    stop_bg(&decide);
    stop_bg(&project);
    const char *groups[] = {"decide", "decide-restore", "project", "guard", NULL};
    ol_test_cleanup(ol_test_topic_args(prefix, "", 3), prefix, groups, db, dir);
}

TestSuite(faults_decide, .init = setup, .fini = teardown, .timeout = 480);

/* The options of every orderlog run here: the test's prefix, partitions and database. */
static const char *fixed_args(void) {
    return ol_test_pg_args(prefix, 3, db);
}

static ol_test_bg_t *orderlog_bg(const char *args) {
    return ol_test_orderlog_bg("%s %s", fixed_args(), args);
}

/* The last 6000 bytes of a role's own log lines (not librdkafka's), for
 * messages; one buffer per slot (0..3). */
static const char *tail_of(const char *s, int slot) {
    static char bufs[4][6001];
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
            long long t = ol_test_parse_time(json_string_value(json_object_get(j, "timestamp")));
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

/* Starts a role serving HTTP and reads the address it printed ("... listening
 * on http://HOST:PORT"). */
static ol_test_bg_t *http_role_bg(const char *args, const char *printed, char *addr, size_t size) {
    ol_test_bg_t *bg = orderlog_bg(args);
    int lines = ol_test_bg_wait_lines(bg, 1, 120000);
    const char *out = ol_test_bg_stdout(bg), *at = strstr(out, printed);
    cr_assert(lines == 1 && at, "%s did not print its address\nstdout:\n%s\nstderr:\n%s", args, out,
              tail_of(ol_test_bg_stderr(bg), 0));
    at += strlen(printed);
    snprintf(addr, size, "%.*s", (int)strcspn(at, "\r\n"), at);
    return bg;
}

/* The status of GET http://addr/path (0: no answer within 2 s). */
static int http_status(const char *addr, const char *path) {
    char *out = NULL;
    ol_test_runf(&out, NULL, "curl -s -m 2 -o /dev/null -w '%%{http_code}' 'http://%s%s'", addr, path);
    int code = atoi(out ? out : "0");
    free(out);
    return code;
}

/* A sample's value in a role's /metrics; -1 when it does not answer or lacks it. */
static double metric(const char *addr, const char *name) {
    char *out = NULL;
    ol_test_runf(&out, NULL, "curl -s -m 2 'http://%s/metrics'", addr);
    double v = -1;
    size_t n = strlen(name);
    for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ')
            v = atof(p + n + 1);
    free(out);
    return v;
}

/* A steady stream of POST /buy to the gate, GATE_RATE a second, each in a
 * curl of its own (so one held through the outage does not hold the
 * others), until <dir>/gate-load.stop exists. Each request is written first
 * to <dir>/gate-requests.jsonl as a publish line (for ops/oracle), then its
 * answer to <dir>/gate-answers: "<requestID> <sent ms> <status> <answered ms>". */
#define GATE_RATE 20
static ol_test_bg_t *gate_load_bg(const char *addr) {
    char script[700];
    snprintf(script, sizeof(script), "%s/gate-load.sh", dir);
    char *text;
    cr_assert(
        asprintf(
            &text,
            "set -u\n"
            "cd '%s'\n"
            "i=0\n"
            "while [ ! -e gate-load.stop ]; do\n"
            "  i=$((i+1)); id=gate-$i; u=$(printf 'GATEU%%06d' $i); sku=$(printf 'SKU-%%05d' $((1 + i %% 20)))\n"
            "  printf '{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"%%s\",\"session_id\":\"gs-%%s\","
            "\"client_ip\":\"192.0.2.10\",\"user_id\":\"%%s\",\"user_level\":5,\"sku\":\"%%s\",\"quantity\":1}}\\n' "
            "$id $i $u $sku >> gate-requests.jsonl\n"
            "  body=$(printf '{\"sessionID\":\"gs-%%s\",\"clientIP\":\"192.0.2.10\",\"userID\":\"%%s\","
            "\"userLevel\":5,\"goodsSKU\":\"%%s\",\"goodsQuantity\":1,\"requestID\":\"%%s\"}' $i $u $sku $id)\n"
            "  ( s=$(date +%%s%%3N); n=0\n"
            "    while :; do\n"
            "      n=$((n+1)); a=$(date +%%s%%3N)\n"
            "      c=$(curl -s -m 90 -o /dev/null -w '%%{http_code}' -H 'Content-Type: application/json' "
            "--data-binary \"$body\" 'http://%s/buy')\n"
            "      echo \"$id $a ${c:-000} $(date +%%s%%3N)\" >> gate-tries\n"
            "      case \"$c\" in 200|202) break ;; esac\n"
            "      [ $n -lt 10 ] || break\n"
            "      sleep 1\n"
            "    done\n"
            "    echo \"$id $s ${c:-000} $(date +%%s%%3N) $n\" >> gate-answers ) &\n"
            "  sleep %.3f\n"
            "done\n"
            "wait\n",
            dir, addr, 1.0 / GATE_RATE) >= 0);
    ol_test_write_file(script, text, strlen(text));
    free(text);
    char *q = ol_test_shell_quote(script), *cmd;
    cr_assert(asprintf(&cmd, "exec bash %s", q) >= 0);
    ol_test_bg_t *bg = ol_test_bg_start(cmd);
    free(cmd);
    free(q);
    return bg;
}

/* Every role still running. */
static void expect_all_up(const char *when) {
    const struct {
        const char *name;
        ol_test_bg_t *bg;
    } roles[] = {{"decide", decide}, {"project", project}, {"guard", guard}, {"gate", gate}};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        int rc = ol_test_bg_wait(roles[i].bg, 0);
        cr_assert_eq(rc, -1, "%s exited (%d) %s\n%s", roles[i].name, rc, when,
                     tail_of(ol_test_bg_stderr(roles[i].bg), 1));
    }
}

/* A sale of REQUESTS buys at RATE/s with decide, project, guard and gate
 * running and buys through the gate; the broker is stopped (kill: SIGKILL,
 * else SIGTERM) once decisions flow, kept down DOWN_MS and started again. */
static void sale_through_a_broker_fault(bool kill, const char *tag) {
    if (!stack_kafka_under_test())
        cr_skip_test("the tests do not use the broker of ops/stack (%s): not restarting it", ol_test_kafka_bootstrap());
    if (ol_test_run("command -v curl >/dev/null 2>&1", NULL, NULL))
        cr_skip_test("curl not installed");
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

    decide = orderlog_bg("-X decide.workers=2 decide");
    char pargs[512];
    snprintf(pargs, sizeof(pargs), "-X consumer.group.id=%s project", group);
    project = orderlog_bg(pargs);
    char guard_addr[128], gate_addr[128];
    /* the gate's requests all come from this machine: never banned here */
    guard = http_role_bg("-X http.listen=127.0.0.1:0 -X guard.ignore=ip:127.0.0.1,ip:192.0.2.10 guard",
                         "http listening on http://", guard_addr, sizeof(guard_addr));
    gate = http_role_bg("-X gate.listen=127.0.0.1:0 -X gate.rate.per.second=100000 -X gate.rate.burst=100000 "
                        "-X gate.ip.rate.per.second=100000 -X gate.ip.burst=100000 gate",
                        "gate listening on http://", gate_addr, sizeof(gate_addr));
    cr_assert_eq(ol_test_bg_wait_stderr(decide, "restored", 2, 120000), 2, "decide did not take its partitions\n%s",
                 tail_of(ol_test_bg_stderr(decide), 1));

    char requests[700], gate_requests[700], gate_answers[700], bot_requests[700];
    snprintf(requests, sizeof(requests), "%s/requests.jsonl", dir);
    snprintf(gate_requests, sizeof(gate_requests), "%s/gate-requests.jsonl", dir);
    snprintf(gate_answers, sizeof(gate_answers), "%s/gate-answers", dir);
    snprintf(bot_requests, sizeof(bot_requests), "%s/bot-requests.jsonl", dir);
    char *qreq = ol_test_shell_quote(requests), lgargs[1200];
    snprintf(lgargs, sizeof(lgargs),
             "loadgen --count %d --rate %d --hot-sku HOT-0001 --hot-share 0.5 --users 20000 --max-quantity 2 "
             "--seed 7 --out %s --wait-ms 180000 --json",
             REQUESTS, RATE, qreq);
    ol_test_bg_t *loadgen = orderlog_bg(lgargs);
    gate_load = gate_load_bg(gate_addr);

    /* the fault, once decisions flow */
    long long deadline = ol_test_now_ms() + 120000, decided = 0;
    while (decided < 2000 && ol_test_now_ms() < deadline) {
        expect_all_up("before the fault");
        ol_test_bg_wait(decide, 200);
        ol_test_pg_try_query_int(db, "select count(*) from orderlog.buy_decisions", &decided);
    }
    cr_assert(decided >= 2000, "only %lld decisions projected within 120 s\n%s", decided,
              tail_of(ol_test_bg_stderr(decide), 1));
    cr_assert_eq(http_status(gate_addr, "/readyz"), 200, "the gate is not ready before the fault");
    broker_stopped = true;
    fault_at = ol_test_wall_ms();
    rc = ol_test_stack(NULL, kill ? "kafka-stop kill" : "kafka-stop", &out);
    cr_assert_eq(rc, 0, "ops/stack kafka-stop: exit %d\n%s", rc, out);
    free(out);
    /* down DOWN_MS: every role waits, none may exit; the gate says it is not ready */
    int gate_unready = 0, guard_unready = 0;
    for (long long until = ol_test_now_ms() + DOWN_MS; ol_test_now_ms() < until;) {
        expect_all_up("while the broker was down");
        gate_unready += http_status(gate_addr, "/readyz") == 503;
        guard_unready += http_status(guard_addr, "/readyz") == 503;
        ol_test_bg_wait(decide, 500);
    }
    printf("faults_decide %s: /readyz answered 503 %d times by the gate and %d times by guard while the broker was "
           "down\n",
           tag, gate_unready, guard_unready);
    cr_expect_gt(gate_unready, 0, "the gate stayed ready while the broker was down");
    long long start_t0 = ol_test_wall_ms();
    double guard_judged = metric(guard_addr, "orderlog_guard_requests_total");
    long long projected_before = -1;
    ol_test_pg_try_query_int(db, "select count(*) from orderlog.buy_decisions", &projected_before);
    broker_start();
    back_at = ol_test_wall_ms();
    printf("faults_decide %s: broker stopped at %lld, back at %lld (ms since the epoch)\n", tag, fault_at, back_at);
    fflush(stdout);

    /* the sale goes on: the first work of guard and project after the broker is back */
    long long guard_back = -1, project_back = -1;
    deadline = ol_test_now_ms() + 240000;
    rc = -1;
    while ((rc == -1 || ((guard_back < 0 || project_back < 0) && ol_test_wall_ms() < back_at + RECOVERY_MS)) &&
           ol_test_now_ms() < deadline) {
        if (rc == -1)
            rc = ol_test_bg_wait(loadgen, 250);
        else
            usleep(250000);
        expect_all_up("after the broker was back");
        if (guard_back < 0 && metric(guard_addr, "orderlog_guard_requests_total") > guard_judged)
            guard_back = ol_test_wall_ms();
        long long n = -1;
        if (project_back < 0 && !ol_test_pg_try_query_int(db, "select count(*) from orderlog.buy_decisions", &n) &&
            n > projected_before)
            project_back = ol_test_wall_ms();
    }
    const char *lgout = ol_test_bg_stdout(loadgen);
    cr_assert_eq(rc, 0, "loadgen: exit %d\n%s%s\ndecide:\n%s\nproject:\n%s", rc, lgout,
                 tail_of(ol_test_bg_stderr(loadgen), 0), tail_of(ol_test_bg_stderr(decide), 1),
                 tail_of(ol_test_bg_stderr(project), 2));
    char want[128];
    snprintf(want, sizeof(want), "decided %d of %d: 0 without a decision, 0 with more than one", REQUESTS, REQUESTS);
    cr_assert(strstr(lgout, want), "%s", lgout);
    ol_test_bg_free(loadgen);

    /* a bot after the broker is back: guard bans its address */
    FILE *f = fopen(bot_requests, "w");
    cr_assert(f);
    for (int i = 1; i <= 150; i++)
        fprintf(f,
                "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"bot-%d\",\"session_id\":\"bs-%d\","
                "\"client_ip\":\"198.51.100.77\",\"user_id\":\"BOTU%04d\",\"user_level\":5,\"sku\":\"SKU-00030\","
                "\"quantity\":1}}\n",
                i, i, i);
    fclose(f);
    char *qbot = ol_test_shell_quote(bot_requests);
    rc = ol_test_runf(&out, &err, "%s %s publish %s", bin, fixed_args(), qbot);
    cr_assert_eq(rc, 0, "publishing the bot's requests: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
    long long banned = 0;
    deadline = ol_test_now_ms() + 60000;
    while (banned < 1 && ol_test_now_ms() < deadline) {
        expect_all_up("after the bot");
        ol_test_bg_wait(guard, 300);
        ol_test_pg_try_query_int(db, "select count(*) from orderlog.blacklist where subject = '198.51.100.77'",
                                 &banned);
    }
    cr_assert_eq(banned, 1, "guard did not ban the bot's address after the broker was back\n%s",
                 tail_of(ol_test_bg_stderr(guard), 3));

    /* the gate's buys: every one answered 200 or 202, never 503 nor unanswered */
    char stop[700];
    snprintf(stop, sizeof(stop), "%s/gate-load.stop", dir);
    ol_test_write_file(stop, "", 0);
    rc = ol_test_bg_wait(gate_load, 90000);
    cr_assert_eq(rc, 0, "the gate's load did not end: %d", rc);
    ol_test_bg_free(gate_load);
    gate_load = NULL;
    /* each try: 200 or 202, or a 503 only once Kafka had it longer than
     * gate.delivery.timeout.ms (30 s), never an error at once */
    char tries_path[700], *text;
    snprintf(tries_path, sizeof(tries_path), "%s/gate-tries", dir);
    text = ol_test_read_file(tries_path);
    cr_assert(text, "no answers from the gate");
    int ntries = 0, by_code[3] = {0}; /* 200, 202, 503 */
    long long gate_back = -1, held_longest = 0;
    char bad[2048] = "";
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char id[64];
        long long sent_ms, answered_ms;
        int code;
        cr_assert_eq(sscanf(line, "%63s %lld %d %lld", id, &sent_ms, &code, &answered_ms), 4, "try line: %s", line);
        ntries++;
        bool ok = code == 200 || code == 202 || (code == 503 && answered_ms - sent_ms >= 29000);
        if (code == 200 || code == 202 || code == 503)
            by_code[code == 200 ? 0 : code == 202 ? 1 : 2]++;
        if (!ok && strlen(bad) < sizeof(bad) - 100)
            snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), "%s: %d after %.1f s\n", id, code,
                     (double)(answered_ms - sent_ms) / 1e3);
        if (code == 200 && sent_ms >= back_at && (gate_back < 0 || answered_ms < gate_back))
            gate_back = answered_ms;
        if (answered_ms - sent_ms > held_longest)
            held_longest = answered_ms - sent_ms;
    }
    free(text);
    cr_assert_str_empty(bad, "POST /buy answered other than 200, 202 or a 503 after the delivery timeout:\n%s", bad);
    /* and every request ends accepted by Kafka (200 or 202), sent again when told so */
    text = ol_test_read_file(gate_answers);
    cr_assert(text, "no answers from the gate");
    int sent = 0, retried = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char id[64];
        long long sent_ms, answered_ms;
        int code, n;
        cr_assert_eq(sscanf(line, "%63s %lld %d %lld %d", id, &sent_ms, &code, &answered_ms, &n), 5, "answer line: %s",
                     line);
        sent++;
        retried += n > 1;
        cr_assert(code == 200 || code == 202, "%s: finally answered %d after %d tries", id, code, n);
    }
    free(text);
    printf("faults_decide %s: the gate answered %d POST /buy (%d tries: %d 200, %d 202, %d 503 after the delivery "
           "timeout); %d requests sent again after a 503; longest held %.1f s\n",
           tag, sent, ntries, by_code[0], by_code[1], by_code[2], retried, (double)held_longest / 1e3);
    cr_assert_gt(sent, 200, "only %d requests through the gate", sent);

    /* the projection catches up, passes the oracle and equals a replay */
    long long total = REQUESTS + sent + 150, projected = 0;
    deadline = ol_test_now_ms() + 120000;
    while (projected < total && ol_test_now_ms() < deadline) {
        expect_all_up("while the projection caught up");
        ol_test_bg_wait(project, 300);
        ol_test_pg_try_query_int(db, "select count(*) from orderlog.buy_decisions", &projected);
    }
    cr_assert_eq(projected, total, "%lld of %lld decisions projected within 120 s\n%s", projected, total,
                 tail_of(ol_test_bg_stderr(project), 2));
    char *qdb = ol_test_shell_quote(db), *qgate = ol_test_shell_quote(gate_requests);
    rc = ol_test_runf(&out, NULL, "%s/ops/oracle --conninfo %s --requests %s --requests %s --requests %s 2>&1",
                      src ? src : ".", qdb, qreq, qgate, qbot);
    free(qdb);
    free(qgate);
    free(qbot);
    cr_assert_eq(rc, 0, "the oracle failed after the fault:\n%s", out);
    cr_expect(strstr(out, "oracle: all 9 check(s) passed"), "%s", out);
    free(out);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X consumer.group.id=%s rebuild --verify-only", group);
    cr_assert_eq(rc, 0, "rebuild --verify-only: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);

    /* every role stayed up all along, is healthy and ready again, and stops cleanly */
    expect_all_up("at the end");
    /* ready again (the gate counts a delivery failure for 10 s) */
    int gate_ready = 0, guard_ready = 0;
    for (deadline = ol_test_now_ms() + 30000; (gate_ready != 200 || guard_ready != 200) && ol_test_now_ms() < deadline;
         usleep(200000)) {
        gate_ready = http_status(gate_addr, "/readyz");
        guard_ready = http_status(guard_addr, "/readyz");
    }
    cr_expect_eq(gate_ready, 200, "the gate is not ready again");
    cr_expect_eq(guard_ready, 200, "guard is not ready again");
    long long last_before, first_after;
    decision_times(fault_at, back_at, &last_before, &first_after);
    cr_assert(last_before > 0 && first_after > 0, "no decision before the fault or after the broker was back");
    printf("faults_decide %s: broker down %.1f s (restart took %.1f s); last decision %.1f s before the fault, first "
           "%.1f s after the broker was back: %.1f s without decisions\n",
           tag, (double)(back_at - fault_at) / 1e3, (double)(back_at - start_t0) / 1e3,
           (double)(fault_at - last_before) / 1e3, (double)(first_after - back_at) / 1e3,
           (double)(first_after - last_before) / 1e3);
    printf("faults_decide %s: after the broker was back: decide %.1f s, guard %.1f s, project %.1f s, gate %.1f s "
           "(first decision, request judged, decision projected, POST /buy answered 200)\n",
           tag, (double)(first_after - back_at) / 1e3, guard_back < 0 ? -1.0 : (double)(guard_back - back_at) / 1e3,
           project_back < 0 ? -1.0 : (double)(project_back - back_at) / 1e3,
           gate_back < 0 ? -1.0 : (double)(gate_back - back_at) / 1e3);
    fflush(stdout);
    cr_expect(first_after - back_at <= RECOVERY_MS, "first decision %.1f s after the broker was back (bound %d s)",
              (double)(first_after - back_at) / 1e3, RECOVERY_MS / 1000);
    cr_expect(guard_back > 0 && guard_back - back_at <= RECOVERY_MS, "guard judged nothing within %d s",
              RECOVERY_MS / 1000);
    cr_expect(project_back > 0 && project_back - back_at <= RECOVERY_MS, "project applied nothing within %d s",
              RECOVERY_MS / 1000);
    cr_expect(gate_back > 0 && gate_back - back_at <= RECOVERY_MS, "the gate answered no 200 within %d s",
              RECOVERY_MS / 1000);
    const struct {
        const char *name;
        ol_test_bg_t **bg;
    } roles[] = {{"gate", &gate}, {"guard", &guard}, {"decide", &decide}};
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        ol_test_bg_signal(*roles[i].bg, SIGTERM);
        rc = ol_test_bg_wait(*roles[i].bg, 60000);
        cr_assert_eq(rc, 0, "%s: exit %d on SIGTERM\n%s", roles[i].name, rc,
                     tail_of(ol_test_bg_stderr(*roles[i].bg), 1));
    }
    cr_expect(strstr(ol_test_bg_stdout(decide), "decided "), "%s", ol_test_bg_stdout(decide));
    free(qreq);
    free(bin);
}

Test(faults_decide, broker_killed_mid_sale_decide_resumes_alone_exactly_once) {
    sale_through_a_broker_fault(true, "kill -9");
}

Test(faults_decide, broker_stopped_cleanly_mid_sale_decide_resumes_alone_exactly_once) {
    sale_through_a_broker_fault(false, "clean stop");
}
