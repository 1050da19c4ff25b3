/* orderlog topics against the real broker: every test works under a topic
 * prefix of its own (it_topics_<tag>_<pid>_), so tests can run in parallel
 * with each other and with the other integration tests. What the broker
 * holds is checked with the admin API directly, not through orderlog. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define NTOPICS 8
static const char *const short_names[NTOPICS] = {"buy-requests", "skus",        "sale-events", "blacklist",
                                                 "orders",       "after-sales", "dlq",         "decide-snapshots"};

static char prefix[128];
static char names[NTOPICS][256]; /* short_names under prefix */

static void use_prefix(const char *tag) {
    snprintf(prefix, sizeof(prefix), "it_topics_%s_%ld_", tag, (long)getpid());
    for (int i = 0; i < NTOPICS; i++)
        snprintf(names[i], sizeof(names[i]), "%s%s", prefix, short_names[i]);
}

static void teardown(void) {
    if (!*prefix)
        return;
    const char *list[NTOPICS];
    for (int i = 0; i < NTOPICS; i++)
        list[i] = names[i];
    ol_test_kafka_delete_topics(list, NTOPICS);
}

TestSuite(topics, .fini = teardown, .timeout = 120);

/* The options of every orderlog run here: the test's prefix and partitions. */
static const char *fixed_args(void) {
    return ol_test_topic_args(prefix, "", 3);
}

/* The partition count `topics list` printed for topic: -1 when it printed
 * "missing", -2 when it printed nothing about it. */
static int listed_partitions(const char *list_out, const char *topic) {
    for (const char *line = list_out; line && *line;) {
        char name[256], word[32];
        int parts;
        if (sscanf(line, "%255s %d partitions", name, &parts) == 2 && !strcmp(name, topic))
            return parts;
        if (sscanf(line, "%255s %31s", name, word) == 2 && !strcmp(name, topic) && !strcmp(word, "missing"))
            return -1;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -2;
}

/* "<word> <topic>" with any spacing between them, as create and delete print it. */
static int reported(const char *out, const char *word, const char *topic) {
    for (const char *line = out; line && *line;) {
        char w[32], name[256];
        if (sscanf(line, "%31s %255s", w, name) == 2 && !strcmp(w, word) && !strcmp(name, topic))
            return 1;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return 0;
}

static void create_all(void) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics create");
    cr_assert_eq(rc, 0, "topics create: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    free(out);
    free(err);
}

static bool compacted(int i) {
    return !strcmp(short_names[i], "blacklist") || !strcmp(short_names[i], "decide-snapshots");
}

static void assert_compaction(void) {
    for (int i = 0; i < NTOPICS; i++) {
        char *policy = ol_test_kafka_topic_config(names[i], "cleanup.policy");
        const char *want = compacted(i) ? "compact" : "delete";
        cr_expect(policy && !strcmp(policy, want), "%s: cleanup.policy is %s, expected %s", names[i],
                  policy ? policy : "(none)", want);
        free(policy);
    }
}

Test(topics, create_makes_every_topic_with_the_partition_count_and_blacklist_compacted) {
    use_prefix("create");
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics create");
    cr_assert_eq(rc, 0, "topics create: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    for (int i = 0; i < NTOPICS; i++)
        cr_expect(reported(out, "created", names[i]), "no \"created %s\" in:\n%s", names[i], out);
    cr_expect_eq(ol_test_count_lines(out, "created"), NTOPICS, "stdout:\n%s", out);
    free(out);
    free(err);

    rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics list");
    cr_assert_eq(rc, 0, "topics list: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    for (int i = 0; i < NTOPICS; i++) {
        cr_expect_eq(listed_partitions(out, names[i]), 3, "topics list for %s:\n%s", names[i], out);
        cr_expect_eq(ol_test_kafka_partitions(names[i]), 3, "%s in the broker's metadata", names[i]);
    }
    free(out);
    free(err);
    assert_compaction();
}

/* The blacklist topic is found by its name, not by where "blacklist" first
 * occurs in the prefixed name. */
Test(topics, create_compacts_blacklist_even_when_the_prefix_says_blacklist) {
    use_prefix("blacklist");
    create_all();
    assert_compaction();
}

Test(topics, create_twice_is_a_noop) {
    use_prefix("twice");
    create_all();
    char *list1, *list2, *out, *err;
    cr_assert_eq(ol_test_orderlogf(&list1, NULL, fixed_args(), "topics list"), 0);
    /* an event published in between must survive the second create */
    char dir[512], path[1024];
    ol_test_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/one.jsonl", dir);
    const char *line = "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"T-1\",\"removed_at\":0}}\n";
    ol_test_write_file(path, line, strlen(line));
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "publish %s", path);
    cr_assert_eq(rc, 0, "publish: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
    ol_test_rmtree(dir);

    rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics create");
    cr_assert_eq(rc, 0, "second topics create: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    for (int i = 0; i < NTOPICS; i++)
        cr_expect(reported(out, "exists", names[i]), "no \"exists %s\" in:\n%s", names[i], out);
    cr_expect_eq(ol_test_count_lines(out, "created"), 0, "stdout:\n%s", out);
    free(out);
    free(err);

    cr_assert_eq(ol_test_orderlogf(&list2, NULL, fixed_args(), "topics list"), 0);
    cr_expect_str_eq(list2, list1, "topics list changed");
    free(list1);
    free(list2);
    assert_compaction();
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "tail skus");
    cr_expect_eq(rc, 0, "tail: exit %d\n%s", rc, err);
    cr_expect_eq(ol_test_count_lines(out, "{"), 1, "the event published before the second create:\n%s", out);
    cr_expect(strstr(out, "\"T-1\""), "tail skus:\n%s", out);
    free(out);
    free(err);
}

Test(topics, mismatched_copartitioning_is_refused) {
    use_prefix("copart");
    /* skus made elsewhere with 4 partitions; orderlog makes the rest with 3 */
    ol_test_kafka_create_topic(names[1], 4, NULL, NULL);
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics create");
    cr_expect_neq(rc, 0, "topics create accepted skus with 4 partitions\nstdout:\n%s\nstderr:\n%s", out, err);
    cr_expect(strstr(err, "co-partitioned") && strstr(err, names[1]),
              "the message should name %s and the co-partitioning rule:\n%s", names[1], err);
    free(out);
    free(err);
    cr_expect_eq(ol_test_kafka_partitions(names[0]), 3, "buy-requests was still created");
    cr_expect_eq(ol_test_kafka_partitions(names[1]), 4, "skus is left alone");

    char dir[512], path[1024];
    ol_test_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/one.jsonl", dir);
    const char *line = "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"T-1\",\"removed_at\":0}}\n";
    ol_test_write_file(path, line, strlen(line));
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "publish %s", path);
    ol_test_rmtree(dir);
    cr_expect_neq(rc, 0, "publish accepted mismatched topics\nstdout:\n%s\nstderr:\n%s", out, err);
    cr_expect(strstr(err, "co-partitioned") && strstr(err, names[1]), "publish stderr:\n%s", err);
    free(out);
    free(err);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "tail skus");
    cr_expect_eq(ol_test_count_lines(out, "{"), 0, "publish refused, yet skus holds:\n%s", out);
    free(out);
    free(err);
}

/* Only buy-requests, skus and sale-events must agree. */
Test(topics, other_topics_may_have_their_own_partition_count) {
    use_prefix("freeparts");
    ol_test_kafka_create_topic(names[6], 1, NULL, NULL); /* dlq */
    ol_test_kafka_create_topic(names[4], 5, NULL, NULL); /* orders */
    char *out, *err;
    /* made without their retention: create says so, check --fix sets it */
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics create");
    cr_expect_eq(rc, 1, "topics create: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    cr_expect(reported(out, "exists", names[6]) && reported(out, "exists", names[4]), "stdout:\n%s", out);
    cr_expect(!strstr(err, "partitions"), "partition counts reported:\n%s", err);
    free(out);
    free(err);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics check --fix");
    cr_expect_eq(rc, 0, "topics check --fix: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    free(out);
    free(err);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics list");
    cr_expect_eq(rc, 0, "topics list: exit %d\n%s%s", rc, out, err);
    cr_expect_eq(listed_partitions(out, names[6]), 1, "topics list:\n%s", out);
    cr_expect_eq(listed_partitions(out, names[4]), 5, "topics list:\n%s", out);
    cr_expect_eq(listed_partitions(out, names[0]), 3, "topics list:\n%s", out);
    free(out);
    free(err);
}

Test(topics, list_reports_missing_topics) {
    use_prefix("missing");
    ol_test_kafka_create_topic(names[0], 3, NULL, NULL);
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics list");
    cr_expect_neq(rc, 0, "topics list with 6 topics missing: exit 0\n%s", out);
    cr_expect_eq(listed_partitions(out, names[0]), 3, "topics list:\n%s", out);
    for (int i = 1; i < NTOPICS; i++)
        cr_expect_eq(listed_partitions(out, names[i]), -1, "%s should be listed as missing:\n%s", names[i], out);
    free(out);
    free(err);
}

Test(topics, delete_removes_every_topic) {
    use_prefix("delete");
    create_all();
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics delete");
    cr_assert_eq(rc, 0, "topics delete: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    for (int i = 0; i < NTOPICS; i++)
        cr_expect(reported(out, "deleted", names[i]), "no \"deleted %s\" in:\n%s", names[i], out);
    free(out);
    free(err);
    /* deletion completes asynchronously in the brokers */
    long long deadline = ol_test_now_ms() + 30000;
    int left;
    do {
        left = 0;
        for (int i = 0; i < NTOPICS; i++)
            left += ol_test_kafka_partitions(names[i]) > 0;
        if (left) {
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
        }
    } while (left && ol_test_now_ms() < deadline);
    cr_assert_eq(left, 0, "%d topics still exist 30 s after topics delete", left);

    rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics list");
    cr_expect_neq(rc, 0, "topics list after delete: exit 0\n%s", out);
    for (int i = 0; i < NTOPICS; i++)
        cr_expect_eq(listed_partitions(out, names[i]), -1, "topics list:\n%s", out);
    free(out);
    free(err);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics delete");
    cr_expect_eq(rc, 0, "second topics delete: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    for (int i = 0; i < NTOPICS; i++)
        cr_expect(reported(out, "absent", names[i]), "no \"absent %s\" in:\n%s", names[i], out);
    free(out);
    free(err);
}

/* A topic config as the broker describes it (must exist). */
static char *config(const char *topic, const char *name) {
    char *v = ol_test_kafka_topic_config(topic, name);
    cr_assert(v, "%s has no %s", topic, name);
    return v;
}

static void expect_config(const char *topic, const char *name, const char *want) {
    char *v = config(topic, name);
    cr_expect_str_eq(v, want, "%s: %s", topic, name);
    free(v);
}

static int is_log(int i) {
    return !compacted(i) && strcmp(short_names[i], "dlq");
}

/* The stack's broker keeps records 7 days by default, as most clusters
 * do: the topics keep everything only because create sets it on them. */
Test(topics, create_sets_retention_on_the_topics_whatever_the_broker_default) {
    use_prefix("retention");
    char control[300];
    snprintf(control, sizeof(control), "%scontrol", prefix);
    ol_test_kafka_create_topic(control, 1, NULL, NULL);
    char *dflt = config(control, "retention.ms");
    const char *gone[] = {control};
    ol_test_kafka_delete_topics(gone, 1);
    cr_expect_neq(strcmp(dflt, "-1"), 0, "the broker keeps everything by default: this test proves nothing");
    free(dflt);
    create_all();
    for (int i = 0; i < NTOPICS; i++) {
        if (is_log(i)) {
            expect_config(names[i], "retention.ms", "-1");
            expect_config(names[i], "retention.bytes", "-1");
        }
        expect_config(names[i], "min.insync.replicas", "1");
    }
    expect_config(names[6], "retention.ms", "2592000000");
    expect_config(names[7], "segment.ms", "3600000");
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics check");
    cr_expect_eq(rc, 0, "topics check: exit %d\n%s%s", rc, out, err);
    cr_expect(strstr(out, "8 topics fit the contract"), "%s", out);
    free(out);
    free(err);
}

/* Topics made by another tool with the broker's defaults. */
Test(topics, check_reports_topics_made_without_orderlog_and_fix_sets_what_is_safe) {
    use_prefix("foreign");
    for (int i = 0; i < NTOPICS; i++)
        ol_test_kafka_create_topic(names[i], 3, i == 4 ? "max.message.bytes" : NULL, i == 4 ? "200000" : NULL);
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics check");
    cr_expect_eq(rc, 1, "topics check: exit %d\n%s%s", rc, out, err);
    for (int i = 0; i < NTOPICS; i++) {
        char *line = ol_test_find_line(out, names[i], is_log(i) ? "retention.ms is" : "cleanup.policy is", NULL);
        if (!strcmp(short_names[i], "dlq"))
            line = ol_test_find_line(out, names[i], "retention.ms is", NULL);
        cr_expect(line, "no problem reported for %s:\n%s", names[i], out);
        cr_expect(!line || strstr(line, "--fix"), "%s", line);
        free(line);
    }
    cr_expect(strstr(err, "problem(s)"), "%s", err);
    free(out);
    free(err);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics check --fix");
    cr_expect_eq(rc, 0, "topics check --fix: exit %d\n%s%s", rc, out, err);
    cr_expect_eq(ol_test_count_lines(out, "fixed "), NTOPICS, "%s", out);
    free(out);
    free(err);
    for (int i = 0; i < NTOPICS; i++)
        if (is_log(i))
            expect_config(names[i], "retention.ms", "-1");
    expect_config(names[3], "cleanup.policy", "compact");
    expect_config(names[7], "cleanup.policy", "compact");
    expect_config(names[7], "segment.ms", "3600000");
    expect_config(names[4], "max.message.bytes", "200000"); /* what was set before is kept */
    cr_expect_eq(ol_test_orderlogf(NULL, NULL, fixed_args(), "topics check"), 0);
}

/* A log whose beginning was deleted (retention, DeleteRecords) is reported
 * by check, and decide and rebuild refuse to replay it unless told. */
Test(topics, a_truncated_log_is_reported_and_not_replayed) {
    use_prefix("truncated");
    create_all();
    static const char fact[] = "{\"type\":\"StockChanged\",\"data\":{\"sku\":\"T-1\",\"total\":5,\"cause\":\"sync\","
                               "\"changed_at\":\"2026-12-01T00:00:00Z\"}}";
    static const char paid[] = "{\"type\":\"OrderCancelled\",\"data\":{\"order_id\":\"T-O\",\"reason\":\"r\","
                               "\"cancelled_at\":\"2026-12-01T00:00:00Z\"}}";
    for (int k = 0; k < 2; k++) {
        ol_test_kafka_produce(names[2], 1, "T-1", 3, fact, strlen(fact), NULL);
        ol_test_kafka_produce(names[4], 2, "T-O", 3, paid, strlen(paid), NULL);
    }
    ol_test_kafka_delete_records(names[2], 1, 1);
    ol_test_kafka_delete_records(names[4], 2, 1);
    char *out, *err, want[512];
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics check");
    cr_expect_eq(rc, 1, "topics check: exit %d\n%s%s", rc, out, err);
    snprintf(want, sizeof(want), "the beginning of %s [1] was deleted: it starts at offset 1", names[2]);
    cr_expect(strstr(out, want), "%s", out);
    free(out);
    free(err);

    rc = ol_test_orderlogf(&out, &err, fixed_args(), "decide");
    cr_expect_eq(rc, 1, "decide on a truncated sale-events: exit %d\n%s", rc, err);
    cr_expect(strstr(err, want) && strstr(err, "replay.allow.truncated"), "%s", err);
    free(out);
    free(err);

    char db[512];
    ol_test_pg_scratch_db("topics_truncated", db, sizeof(db));
    char *ci = ol_test_shell_quote(db);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X pg.conninfo=%s migrate", ci);
    cr_assert_eq(rc, 0, "migrate: %s", err);
    free(out);
    free(err);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X pg.conninfo=%s rebuild", ci);
    snprintf(want, sizeof(want), "the beginning of %s [2] was deleted", names[4]);
    cr_expect_eq(rc, 1, "rebuild on a truncated orders: exit %d\n%s", rc, err);
    cr_expect(strstr(err, want) && strstr(err, "replay.allow.truncated"), "%s", err);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from pg_namespace where nspname = 'orderlog_rebuild'"), 0,
                 "rebuild made its shadow schema anyway");
    free(out);
    free(err);
    free(ci);
    ol_test_pg_drop_db(db);

    /* knowingly: decide starts, and says what it replays */
    ol_test_bg_t *bg =
        ol_test_orderlog_bg("%s -X replay.allow.truncated=true -X decide.workers=1 decide", fixed_args());
    cr_expect_eq(ol_test_bg_wait_stderr(bg, "replaying it anyway", 1, 30000), 1, "%s", ol_test_bg_stderr(bg));
    cr_expect_eq(ol_test_bg_wait(bg, 1000), -1, "decide exited\n%s", ol_test_bg_stderr(bg));
    ol_test_bg_signal(bg, SIGTERM);
    cr_expect_eq(ol_test_bg_wait(bg, 30000), 0, "%s", ol_test_bg_stderr(bg));
    ol_test_bg_free(bg);
    const char *groups[] = {"decide", "decide-restore", NULL};
    ol_test_delete_prefixed_groups(prefix, groups);
}

/* A role started before the topics exist (or while they reach the brokers)
 * waits for them, saying so, instead of exiting at once; once they are
 * created it goes on. */
Test(topics, a_role_started_before_the_topics_waits_for_them) {
    use_prefix("wait");
    char dir[512], path[600];
    ol_test_tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/one.jsonl", dir);
    const char *line = "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"w-1\",\"session_id\":\"s\","
                       "\"client_ip\":\"10.0.0.1\",\"user_id\":\"U1\",\"user_level\":1,\"sku\":\"SKU-1\","
                       "\"quantity\":1}}\n";
    ol_test_write_file(path, line, strlen(line));
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "exec %s publish %s -X broker.wait.ms=60000 %s", ol_test_bin(), fixed_args(), path);
    ol_test_bg_t *bg = ol_test_bg_start(cmd);
    cr_assert_eq(ol_test_bg_wait_stderr(bg, "to be known by the cluster", 1, 20000), 1,
                 "publish should say it waits for the topics:\n%s", ol_test_bg_stderr(bg));
    cr_expect(strstr(ol_test_bg_stderr(bg), "waiting for topic"), "stderr:\n%s", ol_test_bg_stderr(bg));
    create_all();
    int rc = ol_test_bg_wait(bg, 60000);
    cr_expect_eq(rc, 0, "publish once the topics exist: exit %d\nstdout:\n%s\nstderr:\n%s", rc, ol_test_bg_stdout(bg),
                 ol_test_bg_stderr(bg));
    cr_expect(strstr(ol_test_bg_stdout(bg), "published 1"), "stdout:\n%s", ol_test_bg_stdout(bg));
    ol_test_bg_free(bg);
    ol_test_rmtree(dir);
}
