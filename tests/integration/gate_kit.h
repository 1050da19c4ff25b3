/* What the gate's integration tests (test_gate.c, test_gate_auth.c) share:
 * a test's topics (<GATE_KIT_STEM><tag>_<pid>_, PARTITIONS each), its
 * scratch directory and database, the gate (and a guard) it runs, and
 * reading back what reached Kafka. Static definitions: included by each
 * test file once, after it defines GATE_KIT_STEM ("it_gate_"). The suite
 * runs gate_kit_setup and gate_kit_teardown (or a teardown that calls it). */
#ifndef OL_GATE_KIT_H
#define OL_GATE_KIT_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define GATE_KIT static __attribute__((unused))
#define PARTITIONS 3

static char prefix[128];
static char dir[512];
static ol_test_bg_t *gate;
static ol_test_bg_t *guard; /* when the test runs one */
static int gate_port;
static char db[1024]; /* a scratch database, when the test made one */

typedef ol_test_reply_t reply_t;

GATE_KIT void gate_kit_setup(void) {
    ol_test_tmpdir(dir, sizeof(dir));
}

/* The options of every orderlog run here: the test's prefix and partitions. */
GATE_KIT const char *fixed_args(void) {
    return ol_test_topic_args(prefix, GATE_KIT_STEM "none_", PARTITIONS);
}

/* Stops what the test started, deletes its groups and topics, database and directory. */
GATE_KIT void gate_kit_teardown(void) {
    ol_test_bg_free(gate);
    gate = NULL;
    ol_test_bg_free(guard);
    guard = NULL;
    const char *groups[] = {"decide", "guard", NULL};
    ol_test_cleanup(fixed_args(), prefix, groups, db, dir);
    *db = '\0';
}

/* Takes the prefix of tag and creates its topics. */
GATE_KIT void use_topics(const char *tag) {
    ol_test_take_prefix(prefix, sizeof(prefix), GATE_KIT_STEM, tag);
    free(ol_test_orderlogf_ok(fixed_args(), "topics create"));
}

/* Publishes lines (publish's input format). */
GATE_KIT void publish(const char *lines) {
    ol_test_publish_file(fixed_args(), dir, "publish.jsonl", lines);
}

/* Starts the gate with extra -X options; waits for its "listening" line. */
GATE_KIT void start_gate(const char *extra) {
    ol_test_start_gate(&gate, &gate_port, prefix, extra);
}

/* The start of a test that sells through the decider: skipped when the
 * binary has no decide command; topics of tag, SKU A with stock units
 * published, and `orderlog decide` running (the caller stops and frees it). */
GATE_KIT ol_test_bg_t *start_sale(const char *tag, int stock) {
    if (!ol_test_has_command("decide"))
        cr_skip_test("this binary has no decide command");
    use_topics(tag);
    char sku[256];
    snprintf(sku, sizeof(sku),
             "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"A\",\"platform\":\"p\",\"title\":\"A\",\"price\":1500,"
             "\"currency\":\"CNY\",\"stock\":%d,\"version\":1}}\n",
             stock);
    publish(sku);
    return ol_test_orderlog_bg("-X topic.prefix=%s decide", prefix);
}

/* Stops the gate with SIGTERM: it must exit 0 and, when no_errors, have
 * logged no error. */
GATE_KIT void stop_gate(bool no_errors) {
    ol_test_bg_stop_ok(gate, "gate", 30000);
    if (no_errors)
        cr_assert(!strstr(ol_test_bg_stderr(gate), "\"level\":\"error\""), "%s", ol_test_bg_stderr(gate));
    ol_test_bg_free(gate);
    gate = NULL;
}

/* A string member of the answer's JSON body, "(none)" when absent. */
GATE_KIT const char *jstr(const reply_t *r, const char *name) {
    const char *s = json_string_value(json_object_get(r->json, name));
    return s ? s : "(none)";
}

/* The value of one sample of the gate's /metrics (its full name with
 * labels), -1 when absent: each test file's own, through its HTTP client. */
static long long metric(const char *sample);

/* A sample of /metrics and the value it must have. */
typedef struct metric_want_s {
    const char *sample;
    long long value;
} metric_want_t;

GATE_KIT void expect_metrics(const metric_want_t *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        cr_expect_eq(metric(want[i].sample), want[i].value, "%s", want[i].sample);
}

/* expect_metrics of the {sample, value} pairs listed. */
#define EXPECT_METRICS(...)                                      \
    do {                                                         \
        const metric_want_t want_[] = {__VA_ARGS__};             \
        expect_metrics(want_, sizeof(want_) / sizeof(want_[0])); \
    } while (0)

/* Every record of a topic, as a JSON array of tail's lines. */
GATE_KIT json_t *read_topic(const char *topic) {
    char *out = ol_test_orderlogf_ok(fixed_args(), "tail %s --from beginning", topic);
    json_t *all = ol_test_json_lines(out);
    free(out);
    return all;
}

#endif
