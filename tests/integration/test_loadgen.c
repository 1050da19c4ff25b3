/* orderlog loadgen and ops/oracle against the real broker and PostgreSQL.
 *
 * A small sale runs through the real decider: loadgen must see exactly one
 * decision per request, the projection of the sale must pass every check of
 * the oracle. Then the oracle must be able to fail: a projection made from
 * facts written here is tampered with, one way per check, and the oracle
 * must exit 1 naming that check.
 *
 * Every test works under a topic prefix, consumer groups and a scratch
 * database of its own. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define MAX_BGS 4

static char dir[512], prefix[128], db[512], group[160];
static ol_test_bg_t *bgs[MAX_BGS];
static int nbgs;

static void setup(void) {
    ol_test_fresh(dir, sizeof(dir), prefix, sizeof(prefix), "it_loadgen_");
    snprintf(group, sizeof(group), "%sproject", prefix);
    *db = '\0';
}

static void teardown(void) {
    for (int i = 0; i < nbgs; i++) {
        ol_test_bg_signal(bgs[i], SIGTERM);
        ol_test_bg_wait(bgs[i], 30000);
        const char *err = ol_test_bg_stderr(bgs[i]);
        cr_expect(!strstr(err, "Sanitizer") && !strstr(err, "runtime error:"), "sanitizer report:\n%s", err);
        ol_test_bg_free(bgs[i]);
    }
    nbgs = 0;
    const char *groups[] = {"project", NULL};
    ol_test_cleanup(ol_test_topic_args(prefix, "", 3), prefix, groups, db, dir);
}

TestSuite(loadgen, .init = setup, .fini = teardown, .timeout = 600);

/* The options of every orderlog run here: the test's prefix, partitions and database. */
static const char *fixed_args(void) {
    return ol_test_pg_args(prefix, 3, db);
}

/* Topics of the test's prefix and a migrated scratch database. */
static void make_topics_and_db(void) {
    char *out = NULL, *err = NULL;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics create");
    cr_assert_eq(rc, 0, "topics create: %s%s", out, err);
    free(out);
    free(err);
    ol_test_pg_scratch_db("loadgen", db, sizeof(db));
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "migrate");
    cr_assert_eq(rc, 0, "migrate: %s%s", out, err);
    free(out);
    free(err);
}

/* Publishes the lines of text (written to dir/name first). */
static void publish(const char *name, const char *text) {
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ol_test_write_file(path, text, strlen(text));
    char *out = NULL, *err = NULL, *q = ol_test_shell_quote(path);
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "publish %s", q);
    cr_assert_eq(rc, 0, "publish %s: %s%s", name, out, err);
    free(q);
    free(out);
    free(err);
}

static void project(void) {
    char *out = NULL, *err = NULL;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X consumer.group.id=%s project --until-end", group);
    cr_assert_eq(rc, 0, "project: %s%s", out, err);
    cr_assert(strstr(out, "(0 to the dlq"), "project sent records to the dlq: %s", out);
    free(out);
    free(err);
}

/* ops/oracle over the scratch database with args (--requests options,
 * quoted already); its exit status and output. */
static int oracle(const char *args, char **out) {
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    char *ci = ol_test_shell_quote(db);
    int rc = ol_test_runf(out, NULL, "%s/ops/oracle --conninfo %s %s 2>&1", src ? src : ".", ci, args);
    free(ci);
    return rc;
}

static long long json_int(json_t *j, const char *key) {
    json_t *v = json_object_get(j, key);
    cr_assert(json_is_integer(v), "no integer \"%s\" in the summary", key);
    return (long long)json_integer_value(v);
}

/* ---- a sale through the real decider ----------------------------------------- */

Test(loadgen, small_sale_gets_exactly_one_decision_per_request_and_passes_the_oracle) {
    make_topics_and_db();
    /* HOT-LG: 100 units, level 1 and up, 1 per user (2 at level 3, 3 at level
     * 5); SKU-00001..00020: 30 units each, 5 per user; two blacklisted IPs */
    char *catalog =
        strdup("{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"HOT-LG\",\"platform\":\"flash\",\"title\":\"Phone\","
               "\"price\":99900,\"currency\":\"CNY\",\"stock\":100,\"version\":1}}\n"
               "{\"type\":\"PurchasePolicySet\",\"data\":{\"sku\":\"HOT-LG\",\"min_level\":1,\"default_limit\":1,"
               "\"level_limits\":[{\"level\":3,\"limit\":2},{\"level\":5,\"limit\":3}]}}\n"
               "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"203.0.113.1\","
               "\"action\":\"add\",\"reason\":\"manual\",\"until\":null}}\n"
               "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"203.0.113.2\","
               "\"action\":\"add\",\"reason\":\"manual\",\"until\":null}}\n");
    for (int i = 1; i <= 20; i++) {
        char *more;
        cr_assert(asprintf(&more,
                           "%s{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"SKU-%05d\",\"platform\":\"shop\",\"title\":"
                           "\"Item\",\"price\":%d,\"currency\":\"CNY\",\"stock\":30,\"version\":1}}\n"
                           "{\"type\":\"PurchasePolicySet\",\"data\":{\"sku\":\"SKU-%05d\",\"min_level\":0,"
                           "\"default_limit\":5}}\n",
                           catalog, i, 100 * i, i) >= 0);
        free(catalog);
        catalog = more;
    }
    publish("catalog.jsonl", catalog);
    free(catalog);

    bgs[nbgs++] = ol_test_orderlog_bg("-X topic.prefix=%s -X decide.workers=2 decide", prefix);

    char requests[700];
    snprintf(requests, sizeof(requests), "%s/requests.jsonl", dir);
    char *qreq = ol_test_shell_quote(requests);
    char *out = NULL, *err = NULL;
    int rc = ol_test_orderlogf(
        &out, &err, fixed_args(),
        "loadgen --count 5000 --hot-sku HOT-LG --hot-share 0.8 --skus 20 --users 1500 --max-quantity 2 "
        "--blacklisted-share 0.02 --seed 11 --out %s --wait-ms 180000 --json",
        qreq);
    cr_assert_eq(rc, 0, "loadgen failed (%d):\n%s%s\ndecide:\n%s", rc, out, err, ol_test_bg_stderr(bgs[0]));
    cr_assert(strstr(out, "decided 5000 of 5000: 0 without a decision, 0 with more than one"), "%s", out);

    /* the JSON summary: every request decided once, every rule at work */
    const char *last = out + strlen(out) - 1;
    while (last > out && last[-1] != '\n')
        last--;
    json_error_t jerr;
    json_t *j = json_loads(last, 0, &jerr);
    cr_assert(j, "the last line is not JSON (%s): %s", jerr.text, last);
    cr_expect_eq(json_int(j, "sent"), 5000);
    cr_expect_eq(json_int(j, "decided"), 5000);
    cr_expect_eq(json_int(j, "missing"), 0);
    cr_expect_eq(json_int(j, "duplicated"), 0);
    json_t *reasons = json_object_get(j, "rejected");
    cr_assert(json_is_object(reasons));
    long long accepted = json_int(j, "accepted"), rejected = json_int(j, "rejected_total");
    cr_expect_eq(accepted + rejected, 5000);
    cr_expect_gt(json_int(reasons, "sold_out"), 0, "4,000 requests for 100 units: some must be sold out");
    cr_expect_gt(json_int(reasons, "blacklisted"), 0);
    cr_expect_gt(json_int(reasons, "level"), 0, "level 0 users asked for HOT-LG");
    cr_expect_gt(json_int(reasons, "limit"), 0);
    cr_expect_eq(json_int(reasons, "unknown_sku"), 0);
    /* the latency split at the decision's record time: both parts within
     * the whole (ms resolution on both clocks of this host) */
    double max = json_real_value(json_object_get(json_object_get(j, "latency_ms"), "max"));
    const char *parts[] = {"to_fact_p50_ms", "to_fact_p99_ms", "fact_to_seen_p50_ms", "fact_to_seen_p99_ms"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        json_t *v = json_object_get(j, parts[i]);
        cr_assert(json_is_real(v), "no \"%s\" in the summary", parts[i]);
        cr_expect(json_real_value(v) >= 0 && json_real_value(v) <= max + 1, "%s %.1f outside [0, max %.1f + 1]",
                  parts[i], json_real_value(v), max);
    }
    cr_expect_gt(json_real_value(json_object_get(j, "to_fact_p99_ms")) +
                     json_real_value(json_object_get(j, "fact_to_seen_p99_ms")),
                 0, "a decision takes time: the split cannot be 0 on both sides");
    json_decref(j);
    free(out);
    free(err);

    /* the projection: HOT-LG sold out to the unit, and the oracle passes */
    project();
    cr_expect_eq(ol_test_pg_query_int(db, "select held + sold from orderlog.inventory where sku = 'HOT-LG'"), 100);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from orderlog.buy_decisions"), 5000);

    /* a checkout converts one hold into an order: that check has a row */
    char *req = ol_test_pg_query_str(db, "select request_id from orderlog.holds where sku = 'HOT-LG' and "
                                         "status = 'held' order by request_id limit 1");
    char *user = ol_test_pg_query_str(db, "select user_id from orderlog.holds where sku = 'HOT-LG' and "
                                          "status = 'held' order by request_id limit 1");
    cr_assert(req && user);
    char *checkout;
    cr_assert(asprintf(&checkout,
                       "{\"type\":\"CheckoutRequested\",\"data\":{\"request_id\":\"co-%s\",\"hold_id\":\"h-%s\","
                       "\"user_id\":\"%s\",\"sku\":\"HOT-LG\"}}\n",
                       req, req, user) >= 0);
    publish("checkout.jsonl", checkout);
    free(checkout);
    long long deadline = ol_test_now_ms() + 60000, converted = 0;
    while (!converted && ol_test_now_ms() < deadline) {
        project();
        converted = ol_test_pg_query_int(db, "select count(*) from orderlog.holds where status = 'converted'");
        if (!converted)
            usleep(300 * 1000);
    }
    cr_assert_eq(converted, 1, "the checkout was not decided within 60 s");
    free(req);
    free(user);

    char *args;
    cr_assert(asprintf(&args, "--requests %s", qreq) >= 0);
    rc = oracle(args, &out);
    free(args);
    cr_assert_eq(rc, 0, "the oracle failed on a correct sale:\n%s", out);
    cr_expect(strstr(out, "oracle: all 9 check(s) passed, 0 skipped"), "%s", out);
    cr_expect(strstr(out, "PASS converted_holds_have_orders"), "%s", out);
    free(out);

    /* replayed from the topics into a fresh schema and swapped in, the
     * projection is the same and the oracle still passes */
    long long holds = ol_test_pg_query_int(db, "select count(*) from orderlog.holds");
    out = ol_test_orderlogf_ok(fixed_args(), "-X consumer.group.id=%s rebuild", group);
    free(out);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from orderlog.buy_decisions"), 5000);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from orderlog.holds"), holds);
    cr_expect_eq(ol_test_pg_query_int(db, "select held + sold from orderlog.inventory where sku = 'HOT-LG'"), 100);
    cr_assert(asprintf(&args, "--requests %s", qreq) >= 0);
    rc = oracle(args, &out);
    free(args);
    cr_assert_eq(rc, 0, "the oracle failed after a rebuild:\n%s", out);
    cr_expect(strstr(out, "oracle: all 9 check(s) passed, 0 skipped"), "%s", out);
    free(out);
    free(qreq);
}

/* ---- the oracle can fail ------------------------------------------------------------ */

/* A projection made from facts written here: SKU-A (10 units, level 2 and
 * up, 2 per user at level 2), users u1 (level 2, 2 units held) and u2
 * (level 3, 1 unit, then released), u3 rejected; and the requests file
 * that matches it. */
static void write_sale_facts(const char *requests) {
    const long long t = 1795000000000LL;
    char facts[4096];
    snprintf(facts, sizeof(facts),
             "{\"type\":\"StockChanged\",\"data\":{\"sku\":\"SKU-A\",\"total\":10,\"cause\":\"synced\","
             "\"version\":1,\"price\":500,\"currency\":\"CNY\",\"changed_at\":%lld}}\n"
             "{\"type\":\"PolicyChanged\",\"data\":{\"sku\":\"SKU-A\",\"min_level\":2,\"default_limit\":1,"
             "\"level_limits\":[{\"level\":2,\"limit\":2}],\"set_at\":%lld}}\n"
             "{\"type\":\"BuyAccepted\",\"data\":{\"request_id\":\"r1\",\"hold_id\":\"h-r1\",\"user_id\":\"u1\","
             "\"sku\":\"SKU-A\",\"quantity\":2,\"expires_at\":%lld,\"decided_at\":%lld}}\n"
             "{\"type\":\"BuyAccepted\",\"data\":{\"request_id\":\"r2\",\"hold_id\":\"h-r2\",\"user_id\":\"u2\","
             "\"sku\":\"SKU-A\",\"quantity\":1,\"expires_at\":%lld,\"decided_at\":%lld}}\n"
             "{\"type\":\"HoldReleased\",\"data\":{\"hold_id\":\"h-r2\",\"user_id\":\"u2\",\"sku\":\"SKU-A\","
             "\"quantity\":1,\"reason\":\"cancelled\",\"released_at\":%lld}}\n"
             "{\"type\":\"BuyAccepted\",\"data\":{\"request_id\":\"r4\",\"hold_id\":\"h-r4\",\"user_id\":\"u2\","
             "\"sku\":\"SKU-A\",\"quantity\":1,\"expires_at\":%lld,\"decided_at\":%lld}}\n"
             "{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"r3\",\"user_id\":\"u3\",\"sku\":\"SKU-A\","
             "\"quantity\":1,\"reason\":\"level\",\"message\":\"You can not buy this goods!\",\"decided_at\":%lld}}\n",
             t, t, t + 4000000000LL, t + 1, t + 4000000000LL, t + 2, t + 3, t + 4000000000LL, t + 4, t + 5);
    publish("facts.jsonl", facts);
    char lines[2048] = "";
    const char *reqs[][4] = {
        {"r1", "u1", "2", "2"}, {"r2", "u2", "3", "1"}, {"r4", "u2", "3", "1"}, {"r3", "u3", "0", "1"}};
    for (size_t i = 0; i < 4; i++) {
        char line[512];
        snprintf(line, sizeof(line),
                 "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"%s\",\"session_id\":\"s\",\"client_ip\":"
                 "\"10.0.0.1\",\"user_id\":\"%s\",\"user_level\":%s,\"sku\":\"SKU-A\",\"quantity\":%s}}\n",
                 reqs[i][0], reqs[i][1], reqs[i][2], reqs[i][3]);
        strcat(lines, line);
    }
    ol_test_write_file(requests, lines, strlen(lines));
}

/* The oracle exits 1 and prints "FAIL <check>" (with its rows). */
static void expect_fail(const char *args, const char *check, const char *row) {
    char *out = NULL, needle[128];
    int rc = oracle(args, &out);
    snprintf(needle, sizeof(needle), "FAIL %s:", check);
    cr_expect_eq(rc, 1, "the oracle exited %d on a broken %s:\n%s", rc, check, out);
    cr_expect(strstr(out, needle), "the oracle did not name %s:\n%s", check, out);
    cr_expect(strstr(out, row), "the oracle did not show the row \"%s\":\n%s", row, out);
    free(out);
}

static void expect_pass(const char *args) {
    char *out = NULL;
    int rc = oracle(args, &out);
    cr_assert_eq(rc, 0, "the oracle failed on a correct projection:\n%s", out);
    cr_assert(strstr(out, "oracle: all 9 check(s) passed"), "%s", out);
    free(out);
}

Test(loadgen, oracle_names_the_check_a_tampered_projection_breaks) {
    make_topics_and_db();
    char requests[700];
    snprintf(requests, sizeof(requests), "%s/requests.jsonl", dir);
    write_sale_facts(requests);
    project();
    char *qreq = ol_test_shell_quote(requests), *args2;
    cr_assert(asprintf(&args2, "--requests %s", qreq) >= 0);
    expect_pass(args2);

    /* oversold: the check constraint of 005 would refuse it, so drop it first */
    ol_test_pg_exec(db, "alter table orderlog.inventory drop constraint if exists inventory_within_total_check;"
                        "update orderlog.inventory set total = 2 where sku = 'SKU-A'");
    expect_fail(args2, "no_oversell", "SKU-A");
    ol_test_pg_exec(db, "update orderlog.inventory set total = 10 where sku = 'SKU-A'");

    ol_test_pg_exec(db, "update orderlog.inventory set held = held + 1 where sku = 'SKU-A'");
    expect_fail(args2, "inventory_matches_holds", "SKU-A");
    ol_test_pg_exec(db, "update orderlog.inventory set held = held - 1 where sku = 'SKU-A'");

    /* a decision lost */
    ol_test_pg_exec(db, "create table saved as select * from orderlog.buy_decisions where request_id = 'r3';"
                        "delete from orderlog.buy_decisions where request_id = 'r3'");
    expect_fail(args2, "one_decision_per_request", "no decision");
    ol_test_pg_exec(db, "insert into orderlog.buy_decisions select * from saved; drop table saved");

    /* a request sent twice */
    char *twice = ol_test_read_file(requests);
    cr_assert(twice);
    char path2[800];
    snprintf(path2, sizeof(path2), "%s/again.jsonl", dir);
    const char *r3 = strstr(twice, "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"r3\"");
    cr_assert(r3);
    ol_test_write_file(path2, r3, strlen(r3));
    char *q2 = ol_test_shell_quote(path2), *both;
    cr_assert(asprintf(&both, "%s --requests %s", qreq, q2) >= 0);
    char *args;
    cr_assert(asprintf(&args, "--requests %s", both) >= 0);
    expect_fail(args, "one_decision_per_request", "sent 2 times");
    free(args);
    free(both);
    free(q2);
    free(twice);

    /* u1 (level 2, limit 2) given one more unit: 3 held at acceptance */
    ol_test_pg_exec(db, "update orderlog.holds set quantity = 3 where hold_id = 'h-r1';"
                        "update orderlog.buy_decisions set quantity = 3 where request_id = 'r1'");
    expect_fail(args2, "level_limits", "h-r1");
    ol_test_pg_exec(db, "update orderlog.holds set quantity = 2 where hold_id = 'h-r1';"
                        "update orderlog.buy_decisions set quantity = 2 where request_id = 'r1'");

    /* a hold below the minimum level: r4 claimed level 1 */
    char *text = ol_test_read_file(requests);
    cr_assert(text);
    char *r4 = strstr(text, "\"request_id\":\"r4\"");
    cr_assert(r4);
    char *lvl = strstr(r4, "\"user_level\":3");
    cr_assert(lvl);
    lvl[strlen("\"user_level\":")] = '1';
    char path3[800];
    snprintf(path3, sizeof(path3), "%s/low.jsonl", dir);
    ol_test_write_file(path3, text, strlen(text));
    free(text);
    char *q3 = ol_test_shell_quote(path3), *args3;
    cr_assert(asprintf(&args3, "--requests %s", q3) >= 0);
    expect_fail(args3, "min_level", "h-r4");
    free(args3);
    free(q3);

    /* a hold left open past its expiry */
    ol_test_pg_exec(db, "update orderlog.holds set expires_at = now() - interval '1 hour' where hold_id = 'h-r1'");
    expect_fail(args2, "holds_end", "h-r1");
    ol_test_pg_exec(db, "update orderlog.holds set expires_at = now() + interval '1 hour' where hold_id = 'h-r1'");

    /* a converted hold whose order never came */
    ol_test_pg_exec(db, "alter table orderlog.holds drop constraint if exists holds_status_fields_check;"
                        "update orderlog.holds set status = 'converted', order_id = 'o-h-r4', ended_at = now() "
                        "where hold_id = 'h-r4'");
    expect_fail(args2, "converted_holds_have_orders", "o-h-r4");
    free(args2);
    free(qreq);
}
