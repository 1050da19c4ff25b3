/* orderlog status against the real broker and PostgreSQL. Every test has a
 * topic prefix (it_status_<tag>_<pid>_) and a database of its own, so tests
 * can run in parallel. What status should print is worked out here from
 * consumer_offsets (read with SQL) and the broker's watermarks (read with
 * librdkafka directly), not from orderlog's own code; the dlq counts from
 * `orderlog dlq count`, and the roles' health from a real role started here
 * and from fake endpoints on sockets of this test. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../fake_http.h"
#include "helpers.h"

#define PARTITIONS 3
/* the projector's default group: the topic prefix and the role */
static char group_buf[160];
#define GROUP (snprintf(group_buf, sizeof(group_buf), "%sproject", prefix), group_buf)

static char prefix[128]; /* this test's topic prefix, once it has one */
static char db[1024];    /* conninfo of this test's database */
static char dir[512];    /* this test's scratch directory */

static void setup(void) {
    ol_test_pg_scratch_db("status", db, sizeof(db));
    ol_test_tmpdir(dir, sizeof(dir));
}

/* The options of every orderlog run here: the test's prefix, partitions and database. */
static const char *fixed_args(void) {
    return ol_test_pg_args(*prefix ? prefix : "it_status_none_", PARTITIONS, db);
}

static void teardown(void) {
    ol_test_cleanup(fixed_args(), prefix, NULL, db, dir);
}

TestSuite(status, .init = setup, .fini = teardown, .timeout = 180);

/* Takes a prefix, creates its topics and migrates the database. */
static void use_stack(const char *tag) {
    snprintf(prefix, sizeof(prefix), "it_status_%s_%ld_", tag, (long)getpid());
    free(ol_test_orderlogf_ok(fixed_args(), "topics create"));
    free(ol_test_orderlogf_ok(fixed_args(), "migrate"));
}

/* Closes fp, written to the scratch file path, and publishes that file. */
static void publish_written(FILE *fp, const char *path) {
    cr_assert_eq(fclose(fp), 0);
    char *q = ol_test_shell_quote(path);
    free(ol_test_orderlogf_ok(fixed_args(), "publish %s", q));
    free(q);
}

/* Publishes OrderPlaced for orders first .. first+count-1. */
static void publish_orders(int first, int count) {
    char path[1024], name[64];
    snprintf(name, sizeof(name), "orders_%d.jsonl", first);
    FILE *fp = ol_test_scratch_open(dir, name, path, sizeof(path));
    for (int i = first; i < first + count; i++)
        fprintf(fp,
                "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"st-%d\",\"user_id\":\"u-%d\",\"source\":"
                "\"flash_sale\",\"lines\":[{\"sku\":\"SKU-%d\",\"quantity\":1,\"unit_price\":100}],"
                "\"total_amount\":100,\"currency\":\"CNY\"}}\n",
                i, i, i % 7);
    cr_assert_eq(fclose(fp), 0);
    char *q = ol_test_shell_quote(path), *out = ol_test_orderlogf_ok(fixed_args(), "publish %s", q);
    char want[64];
    snprintf(want, sizeof(want), "published %d, rejected 0, failed 0", count);
    cr_assert(strstr(out, want), "publish: %s", out);
    free(q);
    free(out);
}

static void project(void) {
    free(ol_test_orderlogf_ok(fixed_args(), "project --until-end"));
}

/* `orderlog status --json`, parsed (new); fails the test unless it exits 0
 * with one JSON object on stdout. */
static json_t *status_json(void) {
    char *out = ol_test_orderlogf_ok(fixed_args(), "status --json");
    json_error_t jerr;
    json_t *doc = json_loads(out, 0, &jerr);
    cr_assert(json_is_object(doc), "status --json is not a JSON object (%s):\n%s", jerr.text, out);
    free(out);
    return doc;
}

/* The broker's watermarks of <prefix><topic_short>[partition]. */
static void watermarks(const char *topic_short, int partition, long long *low, long long *high) {
    char errstr[512], topic[256];
    snprintf(topic, sizeof(topic), "%s%s", prefix, topic_short);
    rd_kafka_conf_t *kconf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(kconf, "bootstrap.servers", ol_test_kafka_bootstrap(), errstr, sizeof(errstr)),
                 RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, errstr, sizeof(errstr));
    cr_assert(rk, "%s", errstr);
    int64_t lo, hi;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 10000);
    rd_kafka_destroy(rk);
    cr_assert_eq(err, 0, "watermarks of %s[%d]: %s", topic, partition, rd_kafka_err2str(err));
    *low = lo;
    *high = hi;
}

/* next_offset stored for (group, <prefix><topic_short>, partition), -1 when no row. */
static long long stored_offset(const char *group, const char *topic_short, int partition) {
    char sql[512];
    snprintf(sql, sizeof(sql),
             "select coalesce((select next_offset from orderlog.consumer_offsets where group_id = '%s' and "
             "topic = '%s%s' and partition = %d), -1)",
             group, prefix, topic_short, partition);
    return ol_test_pg_query_int(db, sql);
}

static json_t *group_of(json_t *doc, const char *group) {
    json_t *g = json_object_get(json_object_get(doc, "groups"), group);
    char *text = json_dumps(doc, JSON_INDENT(1));
    cr_assert(json_is_object(g), "no group %s in:\n%s", group, text);
    free(text);
    return g;
}

/* The entry of <prefix><topic_short>[partition] in a group, or NULL. */
static json_t *partition_of(json_t *group, const char *topic_short, int partition) {
    char topic[256];
    snprintf(topic, sizeof(topic), "%s%s", prefix, topic_short);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(group, "partitions"), i, p) {
        if (!strcmp(json_string_value(json_object_get(p, "topic")) ?: "", topic) &&
            json_integer_value(json_object_get(p, "partition")) == partition)
            return p;
    }
    return NULL;
}

static long long int_at(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    char *text = json_dumps(obj, 0);
    cr_assert(json_is_integer(v), "%s is not an integer in %s", key, text);
    free(text);
    return json_integer_value(v);
}

/* Every partition of the orders topic in the group: stored offset as in
 * PostgreSQL, end offset as the broker says, lag = end - stored; returns
 * the sum of the lags. */
static long long check_orders_partitions(json_t *group, const char *group_id) {
    long long total = 0;
    for (int k = 0; k < PARTITIONS; k++) {
        json_t *p = partition_of(group, "orders", k);
        cr_assert(p, "no entry for orders[%d]", k);
        long long lo, hi, stored = stored_offset(group_id, "orders", k);
        watermarks("orders", k, &lo, &hi);
        json_t *s = json_object_get(p, "stored_offset");
        if (stored < 0)
            cr_expect(json_is_null(s), "orders[%d]: no row, yet stored_offset %lld", k,
                      (long long)json_integer_value(s));
        else
            cr_expect_eq(int_at(p, "stored_offset"), stored, "orders[%d]: stored_offset", k);
        cr_expect_eq(int_at(p, "end_offset"), hi, "orders[%d]: end_offset", k);
        cr_expect_eq(int_at(p, "start_offset"), lo, "orders[%d]: start_offset", k);
        long long lag = hi - (stored < 0 ? lo : stored);
        cr_expect_eq(int_at(p, "lag"), lag, "orders[%d]: lag", k);
        json_t *secs = json_object_get(p, "lag_seconds");
        if (lag > 0)
            cr_expect(json_is_number(secs) && json_number_value(secs) >= 0,
                      "orders[%d] lags %lld records, but lag_seconds is not a number", k, lag);
        else
            cr_expect(json_is_number(secs) && json_number_value(secs) == 0, "orders[%d] does not lag: lag_seconds 0",
                      k);
        total += lag;
    }
    return total;
}

Test(status, shows_the_records_published_after_a_projection_as_lag) {
    use_stack("lag");
    publish_orders(1, 40);
    project();
    publish_orders(1001, 13);
    sleep(1); /* the first unconsumed record is at least a second old */

    json_t *doc = status_json();
    json_t *g = group_of(doc, GROUP);
    cr_expect_eq(int_at(g, "lag"), 13);
    cr_expect_eq(check_orders_partitions(g, GROUP), 13);
    json_t *secs = json_object_get(g, "lag_seconds");
    cr_expect(json_is_number(secs) && json_number_value(secs) >= 1.0 && json_number_value(secs) < 120,
              "group lag_seconds: %s", json_dumps(secs, JSON_ENCODE_ANY));
    /* one entry per stored row (plus none: every partition got a record) */
    long long rows = ol_test_pg_query_int(db, "select count(*) from orderlog.consumer_offsets");
    cr_expect_eq((long long)json_array_size(json_object_get(g, "partitions")), rows);
    cr_expect_eq(json_object_size(json_object_get(doc, "groups")), 1);
    cr_expect_eq(int_at(json_object_get(doc, "dlq"), "dead_letters"), 0);
    json_decref(doc);

    /* the table says the same */
    char *out = ol_test_orderlogf_ok(fixed_args(), "status");
    char needle[200];
    snprintf(needle, sizeof(needle), "group %s", GROUP);
    char *line = ol_test_find_line(out, needle, NULL);
    cr_expect(line, "no group line in:\n%s", out);
    free(line);
    line = ol_test_find_line(out, "total", " 13 ", NULL);
    cr_expect(line, "no total with a lag of 13 in:\n%s", out);
    free(line);
    free(out);

    /* caught up: no lag, in records or seconds */
    project();
    doc = status_json();
    g = group_of(doc, GROUP);
    cr_expect_eq(int_at(g, "lag"), 0);
    cr_expect_eq(check_orders_partitions(g, GROUP), 0);
    cr_expect(json_number_value(json_object_get(g, "lag_seconds")) == 0);
    json_decref(doc);
}

Test(status, lists_every_group_its_partitions_without_a_row_and_rows_of_deleted_topics) {
    use_stack("groups");
    publish_orders(1, 30);
    project();
    /* another group that applied the first two records of orders[0] only */
    char sql[512];
    snprintf(sql, sizeof(sql),
             "insert into orderlog.consumer_offsets (group_id, topic, partition, next_offset) "
             "values ('other', '%sorders', 0, 2), ('other', '%sgone', 0, 5)",
             prefix, prefix);
    ol_test_pg_exec(db, sql);
    json_t *doc = status_json();
    cr_expect_eq(json_object_size(json_object_get(doc, "groups")), 2);
    cr_expect_eq(int_at(group_of(doc, GROUP), "lag"), 0);
    json_t *other = group_of(doc, "other");
    long long total = check_orders_partitions(other, "other");
    cr_expect_eq(total, 28, "the other group has applied 2 of 30 records");
    cr_expect_eq(int_at(other, "lag"), 28);
    cr_expect(json_is_null(json_object_get(partition_of(other, "orders", 1), "stored_offset")));
    cr_expect(json_is_number(json_object_get(other, "lag_seconds")));
    /* a row of a topic that no longer exists: shown, not counted */
    cr_expect_eq(int_at(other, "unknown_partitions"), 1);
    json_t *gone = partition_of(other, "gone", 0);
    cr_assert(gone, "no entry for the row of a deleted topic");
    cr_expect_eq(int_at(gone, "stored_offset"), 5);
    cr_expect(json_is_null(json_object_get(gone, "lag")) && json_is_null(json_object_get(gone, "end_offset")));
    cr_expect_str_eq(json_string_value(json_object_get(gone, "error")) ?: "(none)", "topic does not exist");
    json_decref(doc);
}

static int have_kcat(void) {
    return ol_test_run("command -v kcat", NULL, NULL) == 0;
}

Test(status, counts_a_poison_record_in_the_dlq) {
    if (!have_kcat())
        cr_skip_test("kcat is not installed");
    use_stack("dlq");
    publish_orders(1, 20);
    char path[1024];
    snprintf(path, sizeof(path), "%s/garbage", dir);
    ol_test_write_file(path, "\x01garbage\xff", 9);
    char *q = ol_test_shell_quote(path), *err;
    int rc = ol_test_runf(NULL, &err, "kcat -P -b %s -t %sorders -k st-1 -H ce_type=orderlog.OrderPaid -H ce_id=x %s",
                          ol_test_kafka_bootstrap(), prefix, q);
    cr_assert_eq(rc, 0, "kcat: exit %d\n%s", rc, err);
    free(err);
    free(q);
    project();

    json_t *doc = status_json();
    json_t *dlq = json_object_get(doc, "dlq");
    char topic[256];
    snprintf(topic, sizeof(topic), "%sdlq", prefix);
    cr_expect_str_eq(json_string_value(json_object_get(dlq, "topic")) ?: "(none)", topic);
    cr_expect_eq(int_at(dlq, "dead_letters"), 1);
    cr_expect_eq(int_at(dlq, "pending"), 1);
    json_t *g = group_of(doc, GROUP);
    cr_expect_eq(int_at(g, "lag"), 0, "the poison record is consumed too");
    cr_expect_eq(check_orders_partitions(g, GROUP), 0);
    json_decref(doc);

    char *out = ol_test_orderlogf_ok(fixed_args(), "status");
    char want[400];
    snprintf(want, sizeof(want), "dlq %s: 1 dead letter (0 replayed, 1 pending), 0 replay markers", topic);
    cr_expect(strstr(out, want), "no \"%s\" in:\n%s", want, out);
    free(out);
}

/* `orderlog <fixed args> <args>` fails: exit 1 and one line on stderr
 * starting with "orderlog status: " and holding needle. */
static void expect_status_failure(const char *args, const char *needle) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "%s", args);
    cr_expect_eq(rc, 1, "exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    cr_expect_eq(ol_test_count_lines(err, ""), 1, "not one line on stderr:\n%s", err);
    cr_expect(!strncmp(err, "orderlog status: ", 17) && strstr(err, needle), "stderr: %s (expected \"%s\")", err,
              needle);
    cr_expect_str_empty(out);
    free(out);
    free(err);
}

Test(status, fails_in_bounded_time_when_kafka_is_unreachable) {
    use_stack("nokafka");
    long long t0 = ol_test_now_ms();
    expect_status_failure("-X kafka.bootstrap.servers=127.0.0.1:1 -X broker.wait.ms=1500 status",
                          "could not reach Kafka at 127.0.0.1:1");
    long long took = ol_test_now_ms() - t0;
    cr_expect(took < 1500 + 3000, "took %lld ms with broker.wait.ms=1500", took);
}

Test(status, fails_when_postgresql_is_unreachable) {
    expect_status_failure("-X 'pg.conninfo=host=127.0.0.1 port=1 dbname=x user=postgres' status --json",
                          "could not connect to PostgreSQL at 127.0.0.1:1");
}

Test(status, fails_when_the_schema_is_not_migrated) {
    expect_status_failure("status", "not migrated");
}

Test(status, rejects_an_unknown_option) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "status --lag");
    cr_expect_eq(rc, 2, "exit %d: %s", rc, err);
    free(out);
    free(err);
}

/* A projector that applied everything decide wrote (in transactions: each
 * partition ends with a commit marker) lags 0, and the decide group, which
 * commits to Kafka, is listed too; all within a second. */
Test(status, shows_no_lag_on_transactional_partitions_and_lists_the_kafka_groups) {
    use_stack("txn");
    char path[1024];
    FILE *fp = ol_test_scratch_open(dir, "sale.jsonl", path, sizeof(path));
    fprintf(fp,
            "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"TX-1\",\"platform\":\"shop\",\"title\":\"t\",\"price\":100,"
            "\"currency\":\"CNY\",\"stock\":100,\"version\":1}}\n");
    for (int i = 0; i < 20; i++)
        fprintf(fp,
                "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"tx-%d\",\"session_id\":\"s\",\"client_ip\":"
                "\"10.9.0.1\",\"user_id\":\"tx-u%d\",\"user_level\":1,\"sku\":\"TX-1\",\"quantity\":1}}\n",
                i, i);
    publish_written(fp, path);
    ol_test_bg_t *bg = ol_test_orderlog_bg("%s -X decide.workers=1 decide", fixed_args());
    char sale[256];
    snprintf(sale, sizeof(sale), "%ssale-events", prefix);
    long long end = ol_test_now_ms() + 60000, facts = 0;
    while (ol_test_now_ms() < end) { /* the StockChanged and 20 decisions, each transaction + its marker */
        facts = 0;
        for (int p = 0; p < PARTITIONS; p++)
            facts += ol_test_kafka_end_offset(sale, p);
        if (facts >= 22)
            break;
        cr_assert_eq(ol_test_bg_wait(bg, 200), -1, "decide exited\n%s", ol_test_bg_stderr(bg));
    }
    ol_test_bg_signal(bg, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(bg, 30000), 0, "%s", ol_test_bg_stderr(bg));
    ol_test_bg_free(bg);
    project();
    long long t0 = ol_test_now_ms();
    json_t *doc = status_json();
    long long took = ol_test_now_ms() - t0;
    cr_expect_lt(took, 1000, "status took %lld ms", took);
    json_t *g = group_of(doc, GROUP);
    cr_expect_eq(int_at(g, "lag"), 0);
    json_t *d = group_of(doc, (snprintf(group_buf, sizeof(group_buf), "%sdecide", prefix), group_buf));
    cr_expect_eq(int_at(d, "lag"), 0);
    size_t i;
    json_t *p;
    int in_kafka = 0;
    json_array_foreach(json_object_get(d, "partitions"), i, p) in_kafka +=
        !strcmp(json_string_value(json_object_get(p, "stored_in")), "kafka");
    cr_expect_gt(in_kafka, 0);
    json_decref(doc);
    const char *groups[] = {"decide", "decide-restore", NULL};
    ol_test_delete_prefixed_groups(prefix, groups);
}

/* ---- the dlq: dead letters, not records -------------------------------------- */

/* count OrderPaid lines for orders that do not exist: each a dead letter
 * (stage apply) once projected. */
static void publish_orphan_payments(int count) {
    char path[1024];
    FILE *fp = ol_test_scratch_open(dir, "paid.jsonl", path, sizeof(path));
    for (int i = 1; i <= count; i++)
        fprintf(fp,
                "{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"ST-NONE-%d\",\"payment_id\":\"pay-%d\","
                "\"amount\":500,\"currency\":\"CNY\",\"paid_at\":\"2026-04-01T08:01:00Z\"}}\n",
                i, i);
    publish_written(fp, path);
    free(ol_test_orderlogf_ok(fixed_args(), "-X consumer.max.poison=1000000 project --until-end"));
}

Test(status, counts_dead_letters_without_the_replay_markers_as_dlq_count_does) {
    enum { ORPHANS = 2000 };
    use_stack("dlqcount");
    publish_orphan_payments(ORPHANS);
    /* two replays, each a transaction with a marker on the dlq */
    free(ol_test_orderlogf_ok(fixed_args(), "dlq replay --reason 'ST-NONE-1\"'"));
    free(ol_test_orderlogf_ok(fixed_args(), "dlq replay --reason 'ST-NONE-2\"'"));

    char *out = ol_test_orderlogf_ok(fixed_args(), "dlq count --json");
    json_t *count = json_loads(out, 0, NULL);
    cr_assert(json_is_object(count), "dlq count --json: %s", out);
    free(out);
    cr_expect_eq(int_at(count, "dead_letters"), ORPHANS);
    cr_expect_eq(int_at(count, "replayed"), 2);
    cr_expect_eq(int_at(count, "markers"), 2);

    long long t0 = ol_test_now_ms();
    json_t *doc = status_json();
    long long took = ol_test_now_ms() - t0;
    cr_expect_lt(took, 1000, "status took %lld ms with %d dead letters", took, ORPHANS);
    json_t *dlq = json_object_get(doc, "dlq");
    const char *keys[] = {"dead_letters", "replayed", "pending", "markers"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        cr_expect_eq(int_at(dlq, keys[i]), int_at(count, keys[i]), "%s: status and dlq count differ", keys[i]);
    cr_expect(!json_object_get(dlq, "error"));
    /* the span of offsets, what status used to count, holds more: markers
     * and Kafka's commit markers */
    long long span = 0;
    for (int k = 0; k < PARTITIONS; k++) {
        long long lo, hi;
        watermarks("dlq", k, &lo, &hi);
        span += hi - lo;
    }
    cr_expect_gt(span, ORPHANS + 2, "the dlq's offsets span %lld", span);
    json_decref(doc);
    json_decref(count);

    out = ol_test_orderlogf_ok(fixed_args(), "status");
    char want[300];
    snprintf(want, sizeof(want), "dlq %sdlq: %d dead letters (2 replayed, %d pending), 2 replay markers", prefix,
             ORPHANS, ORPHANS - 2);
    cr_expect(strstr(out, want), "no \"%s\" in:\n%s", want, out);
    free(out);
}

/* ---- the roles' health ------------------------------------------------------- */

/* Starts `orderlog guard` with http.listen on a free port; its address. */
static ol_test_bg_t *start_guard(char *addr, size_t size) {
    ol_test_bg_t *bg = ol_test_orderlog_bg("%s -X http.listen=127.0.0.1:0 guard", fixed_args());
    int lines = ol_test_bg_wait_lines(bg, 1, 60000);
    const char *out = ol_test_bg_stdout(bg), *at = strstr(out, "http listening on http://");
    cr_assert(lines >= 1 && at, "guard did not print its address\nstdout:\n%s\nstderr:\n%s", out,
              ol_test_bg_stderr(bg));
    at += strlen("http listening on http://");
    snprintf(addr, size, "%.*s", (int)strcspn(at, "\n"), at);
    return bg;
}

/* The entry of the role called name in status --json's roles. */
static json_t *role_of(json_t *doc, const char *name) {
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(doc, "roles"), i, r) {
        if (!strcmp(json_string_value(json_object_get(r, "name")) ?: "", name))
            return r;
    }
    char *text = json_dumps(doc, JSON_INDENT(1));
    cr_assert_fail("no role %s in:\n%s", name, text);
    return NULL;
}

static const char *state_of(json_t *role, const char *path) {
    return json_string_value(json_object_get(json_object_get(role, path), "state")) ?: "(none)";
}

Test(status, shows_a_running_role_healthy_and_ready) {
    use_stack("role");
    char addr[128], endpoints[300];
    ol_test_bg_t *guard = start_guard(addr, sizeof(addr));
    snprintf(endpoints, sizeof(endpoints), "-X status.endpoints=guard=%s", addr);
    /* ready once its partitions are assigned: asked until then */
    long long deadline = ol_test_now_ms() + 60000;
    json_t *doc = NULL, *role = NULL;
    for (;;) {
        char *out = ol_test_orderlogf_ok(fixed_args(), "%s status --json", endpoints);
        json_decref(doc);
        doc = json_loads(out, 0, NULL);
        cr_assert(json_is_object(doc), "%s", out);
        free(out);
        role = role_of(doc, "guard");
        if (!strcmp(state_of(role, "readyz"), "ok") || ol_test_now_ms() > deadline)
            break;
        cr_assert_eq(ol_test_bg_wait(guard, 200), -1, "guard exited\n%s", ol_test_bg_stderr(guard));
    }
    json_decref(doc);
    /* readyz answers well within the default timeout, every time: the
     * role's Kafka check must not wait behind its consumer's fetch
     * long-poll (guard's took up to 500 ms when it did) */
    long long slowest = 0;
    for (int i = 0; i < 5; i++) {
        char *out = ol_test_orderlogf_ok(fixed_args(), "%s status --json", endpoints);
        doc = json_loads(out, 0, NULL);
        cr_assert(json_is_object(doc), "%s", out);
        free(out);
        role = role_of(doc, "guard");
        cr_expect_str_eq(state_of(role, "readyz"), "ok", "%s", json_dumps(role, 0));
        long long ms = int_at(json_object_get(role, "readyz"), "ms");
        slowest = ms > slowest ? ms : slowest;
        if (i < 4)
            json_decref(doc);
    }
    cr_expect_lt(slowest, 300, "guard's /readyz took %lld ms", slowest);
    cr_expect_eq(json_array_size(json_object_get(doc, "roles")), 1);
    cr_expect_str_eq(json_string_value(json_object_get(role, "address")), addr);
    const char *paths[] = {"healthz", "readyz"};
    for (int i = 0; i < 2; i++) {
        json_t *a = json_object_get(role, paths[i]);
        cr_expect_str_eq(state_of(role, paths[i]), "ok", "%s: %s", paths[i], json_dumps(a, 0));
        cr_expect_eq(int_at(a, "http_status"), 200);
        cr_expect(json_is_null(json_object_get(a, "reason")));
        cr_expect_lt(int_at(a, "ms"), 500, "within status.endpoint.timeout.ms");
    }
    json_decref(doc);

    char *out = ol_test_orderlogf_ok(fixed_args(), "%s status", endpoints);
    char *line = ol_test_find_line(out, "  guard ", addr, " ok ", NULL);
    cr_expect(line, "no line for guard healthy and ready in:\n%s", out);
    cr_expect(line && !strcmp(line + strlen(line) - 3, " ok"), "readyz is not ok: %s", line);
    free(line);
    cr_expect(strstr(out, "\n  all 1 healthy and ready\n"), "%s", out);
    free(out);

    /* the role stopped: unreachable, and status still exits 0 */
    ol_test_bg_signal(guard, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(guard, 30000), 0, "%s", ol_test_bg_stderr(guard));
    ol_test_bg_free(guard);
    doc = NULL;
    out = ol_test_orderlogf_ok(fixed_args(), "%s status --json", endpoints);
    doc = json_loads(out, 0, NULL);
    free(out);
    cr_expect_str_eq(state_of(role_of(doc, "guard"), "healthz"), "unreachable");
    json_decref(doc);
    char g[200];
    snprintf(g, sizeof(g), "%sguard", prefix);
    const char *groups[] = {g};
    ol_test_kafka_delete_groups(groups, 1);
}

Test(status, reports_unreachable_silent_and_garbage_endpoints_in_bounded_time) {
    use_stack("badroles");
    fake_t silent[2], garbage, other;
    fake_start(&silent[0], NULL, 0, 0);
    fake_start(&silent[1], NULL, 0, 0);
    const char *not_http = "\x16\x03\x01 this is not HTTP\r\n\r\n",
               *not_found = "HTTP/1.1 404 Not Found\r\nContent-Length: 28\r\n\r\n{\"error\":\"no such resource\"}";
    fake_start(&garbage, not_http, strlen(not_http), -1);
    fake_start(&other, not_found, strlen(not_found), -1);
    char args[1000];
    snprintf(args, sizeof(args),
             "-X status.endpoint.timeout.ms=800 -X "
             "status.endpoints=closed=127.0.0.1:%u,s1=127.0.0.1:%u,s2=127.0.0.1:%u,garbage=127.0.0.1:%u,127.0.0.1:%u",
             closed_port(), silent[0].port, silent[1].port, garbage.port, other.port);
    long long t0 = ol_test_now_ms();
    char *out = ol_test_orderlogf_ok(fixed_args(), "%s status --json", args);
    long long took = ol_test_now_ms() - t0;
    /* asked at once: one after the other, the silent ones alone would take 3.2 s */
    cr_expect_lt(took, 2500, "status took %lld ms", took);
    json_t *doc = json_loads(out, 0, NULL);
    cr_assert(json_is_object(doc), "%s", out);
    free(out);
    json_t *roles = json_object_get(doc, "roles");
    cr_assert_eq(json_array_size(roles), 5);
    json_t *closed = role_of(doc, "closed");
    cr_expect_str_eq(state_of(closed, "healthz"), "unreachable");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(closed, "readyz"), "reason")) ?: "",
                     "connection refused");
    cr_expect_lt(int_at(json_object_get(closed, "healthz"), "ms"), 800);
    for (int i = 0; i < 2; i++) {
        json_t *s = role_of(doc, i ? "s2" : "s1");
        cr_expect_str_eq(state_of(s, "healthz"), "timeout");
        cr_expect_str_eq(state_of(s, "readyz"), "timeout");
        long long ms = int_at(json_object_get(s, "readyz"), "ms");
        cr_expect(ms >= 790 && ms < 2000, "a timeout of 800 ms took %lld ms", ms);
    }
    json_t *g = role_of(doc, "garbage");
    cr_expect_str_eq(state_of(g, "healthz"), "malformed");
    const char *why = json_string_value(json_object_get(json_object_get(g, "healthz"), "reason")) ?: "";
    cr_expect(strstr(why, "not an HTTP/1.x answer"), "%s", why);
    json_t *o = json_array_get(roles, 4);
    cr_expect(json_is_null(json_object_get(o, "name")));
    cr_expect_str_eq(state_of(o, "readyz"), "malformed");
    cr_expect_eq(int_at(json_object_get(o, "readyz"), "http_status"), 404);
    json_decref(doc);

    out = ol_test_orderlogf_ok(fixed_args(), "%s status", args);
    ol_test_expect_line(out, "  closed ", "unreachable: connection refused", NULL);
    ol_test_expect_line(out, "  s1 ", "timed out: no whole answer within 800 ms", NULL);
    ol_test_expect_line(out, "  garbage ", "malformed: not an HTTP/1.x answer", NULL);
    ol_test_expect_line(out, "  - ", "malformed: HTTP 404: no such resource", NULL);
    cr_expect(strstr(out, "\n  NOT ALL WELL: 0 of 5 healthy, 0 of 5 ready\n"), "%s", out);
    free(out);
    fake_stop(&silent[0]);
    fake_stop(&silent[1]);
    fake_stop(&garbage);
    fake_stop(&other);
}

Test(status, rejects_a_malformed_endpoint_list) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X status.endpoints=guard=127.0.0.1:1,::1:80 status");
    cr_expect_eq(rc, 2, "exit %d: %s", rc, err);
    cr_expect_str_eq(err, "orderlog status: status.endpoints: \"::1:80\": an IPv6 address goes in brackets: "
                          "[addr]:port\n");
    cr_expect_str_empty(out);
    free(out);
    free(err);
}
