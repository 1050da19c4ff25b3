/* The sale projections of orderlog project (consumers/sale_project.c)
 * against the real broker and PostgreSQL: facts published with `orderlog
 * publish` onto sale-events and blacklist, projected, and the rows checked.
 *
 * Every test works under a topic prefix, consumer group and scratch database
 * of its own (the kit of test_project.c). What the tables must hold is
 * worked out here from the contract (docs/events.md) and the rules of
 * migration 005, never taken from a run: by hand for the short streams, by
 * an independent model (gen_*) for the generated one. */
#define OL_PROJECT_KIT_ONLY
#include "test_project.c"

TestSuite(sale_project, .init = kit_setup, .fini = kit_teardown, .timeout = 420);

/* 2026-11-18T11:06:40Z: facts' times are given as epoch ms from here. */
#define T0 1795000000000LL

/* ---- writing facts -------------------------------------------------------- */

static FILE *facts_open(const char *name, char *path, size_t size) {
    snprintf(path, size, "%s/%s", kit_dir, name);
    FILE *fp = fopen(path, "w");
    cr_assert(fp, "cannot write %s", path);
    return fp;
}

static void facts_close(FILE *fp, const char *path) {
    cr_assert(!fclose(fp), "cannot write %s", path);
}

static void stock(FILE *fp, const char *sku, long long total, const char *cause, long long version, long long at) {
    fprintf(fp,
            "{\"type\":\"StockChanged\",\"data\":{\"sku\":\"%s\",\"total\":%lld,\"cause\":\"%s\",\"version\":%lld,"
            "\"price\":1999,\"currency\":\"CNY\",\"changed_at\":%lld}}\n",
            sku, total, cause, version, at);
}

/* BuyAccepted of request r: hold h-<r>, expiring 30 min after at. */
static void accepted(FILE *fp, const char *r, const char *user, const char *sku, int qty, long long at) {
    fprintf(fp,
            "{\"type\":\"BuyAccepted\",\"data\":{\"request_id\":\"%s\",\"hold_id\":\"h-%s\",\"user_id\":\"%s\","
            "\"sku\":\"%s\",\"quantity\":%d,\"expires_at\":%lld,\"decided_at\":%lld}}\n",
            r, r, user, sku, qty, at + 1800000, at);
}

static void rejected(FILE *fp, const char *r, const char *user, const char *sku, int qty, const char *reason,
                     const char *message, long long at) {
    fprintf(fp,
            "{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"%s\",\"user_id\":\"%s\",\"sku\":\"%s\","
            "\"quantity\":%d,\"reason\":\"%s\",\"message\":\"%s\",\"decided_at\":%lld}}\n",
            r, user, sku, qty, reason, message, at);
}

static void released(FILE *fp, const char *hold, const char *user, const char *sku, int qty, const char *reason,
                     long long at) {
    fprintf(fp,
            "{\"type\":\"HoldReleased\",\"data\":{\"hold_id\":\"%s\",\"user_id\":\"%s\",\"sku\":\"%s\","
            "\"quantity\":%d,\"reason\":\"%s\",\"released_at\":%lld}}\n",
            hold, user, sku, qty, reason, at);
}

/* HoldConverted of hold into order o-<hold>. */
static void converted(FILE *fp, const char *hold, const char *user, const char *sku, int qty, long long at) {
    fprintf(fp,
            "{\"type\":\"HoldConverted\",\"data\":{\"hold_id\":\"%s\",\"order_id\":\"o-%s\",\"user_id\":\"%s\","
            "\"sku\":\"%s\",\"quantity\":%d,\"converted_at\":%lld}}\n",
            hold, hold, user, sku, qty, at);
}

static void checkout_rejected(FILE *fp, const char *r, const char *hold, const char *user, const char *sku,
                              const char *op, const char *reason, long long at) {
    fprintf(fp,
            "{\"type\":\"CheckoutRejected\",\"data\":{\"request_id\":\"%s\",\"hold_id\":\"%s\",\"user_id\":\"%s\","
            "\"sku\":\"%s\",\"op\":\"%s\",\"reason\":\"%s\",\"decided_at\":%lld}}\n",
            r, hold, user, sku, op, reason, at);
}

/* levels: the JSON array of level_limits. */
static void policy(FILE *fp, const char *sku, int min_level, int default_limit, const char *levels, long long at) {
    fprintf(fp,
            "{\"type\":\"PolicyChanged\",\"data\":{\"sku\":\"%s\",\"min_level\":%d,\"default_limit\":%d,"
            "\"level_limits\":%s,\"set_at\":%lld}}\n",
            sku, min_level, default_limit, levels, at);
}

/* until: epoch ms, or -1 for none. */
static void blacklist(FILE *fp, const char *type, const char *subject, const char *action, const char *reason,
                      long long until, long long at) {
    char u[32];
    if (until < 0)
        snprintf(u, sizeof(u), "null");
    else
        snprintf(u, sizeof(u), "%lld", until);
    fprintf(fp,
            "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"%s\",\"subject\":\"%s\",\"action\":\"%s\","
            "\"reason\":\"%s\",\"until\":%s,\"changed_at\":%lld}}\n",
            type, subject, action, reason, u, at);
}

/* ---- reading the tables ---------------------------------------------------- */

/* A time column as epoch ms (NULL stays NULL), for the expected rows. */
#define MS(col) "(extract(epoch from " col ") * 1000)::bigint"

static void expect_rows(const char *db, const char *sql, const char *expected, const char *what) {
    char *rows = ol_test_pg_query_rows(db, sql);
    if (strcmp(rows, expected)) {
        char *diff = kit_differences(rows, expected, 10);
        cr_assert_fail("%s: the rows differ (left: the table, right: expected)\n%sall rows:\n%s", what, diff, rows);
    }
    free(rows);
}

static const char *const sale_tables[][2] = {
    {"buy_decisions", "request_id"},        {"holds", "hold_id"}, {"inventory", "sku"},
    {"user_sku_totals", "user_id, sku"},    {"policies", "sku"},  {"checkout_rejections", "request_id"},
    {"blacklist", "subject_type, subject"},
};
#define NSALE (sizeof(sale_tables) / sizeof(sale_tables[0]))

/* "<table> <rows> <md5 of every row as text, in key order>" per sale table,
 * one a line, as a new string. */
static char *sale_checksums(const char *db) {
    char *all = strdup("");
    for (size_t t = 0; t < NSALE; t++) {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "select '%s', count(*), md5(coalesce(string_agg(t::text, E'\\n' order by %s), '')) from orderlog.%s t",
                 sale_tables[t][0], sale_tables[t][1], sale_tables[t][0]);
        ol_test_pg_append_rows(&all, db, sql);
    }
    return all;
}

/* project --until-end in the test's group: exits 0, its summary; its stderr in *err when err is not NULL. */
static kit_summary_t project_err(const char *db, const char *group, char **err) {
    char *out, *e;
    int rc = kit_project_until_end(db, group, NULL, &out, &e);
    cr_assert_eq(rc, 0, "project --until-end: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, e);
    kit_summary_t s = kit_summary(out);
    free(out);
    if (err)
        *err = e;
    else
        free(e);
    return s;
}

/* `orderlog <args>` on db in the test's group with extra options; the exit
 * status, its output in *out and *err (new strings). */
static int orderlog_in(const char *db, const char *extra, const char *args, char **out, char **err) {
    char *cmd = kit_project_cmd(db, kit_group, extra, NULL);
    /* the project command line, with args instead of project */
    char *at = strstr(cmd, " project ");
    cr_assert(at);
    char *line;
    cr_assert(asprintf(&line, "%.*s %s", (int)(at - cmd), cmd, args) >= 0);
    int rc = ol_test_run(line, out, err);
    free(cmd);
    free(line);
    return rc;
}

/* ---- the tests --------------------------------------------------------------- */

Test(sale_project, holds_inventory_and_user_totals_follow_accepts_releases_and_conversions) {
    const char *db = kit_use_db("sale_holds", "sale_holds");
    char path[1024];
    FILE *fp = facts_open("holds1.jsonl", path, sizeof(path));
    stock(fp, "S-A", 10, "synced", 1, T0);
    stock(fp, "S-B", 5, "synced", 4, T0);
    accepted(fp, "r1", "u1", "S-A", 2, T0 + 1000);
    accepted(fp, "r2", "u2", "S-A", 3, T0 + 2000);
    accepted(fp, "r3", "u1", "S-A", 1, T0 + 3000);
    accepted(fp, "r4", "u1", "S-B", 5, T0 + 4000); /* S-B sold out */
    converted(fp, "h-r1", "u1", "S-A", 2, T0 + 5000);
    released(fp, "h-r2", "u2", "S-A", 3, "expired", T0 + 1802000);
    released(fp, "h-r4", "u1", "S-B", 5, "cancelled", T0 + 6000);
    stock(fp, "S-A", 20, "adjusted", 1, T0 + 7000);
    policy(fp, "S-A", 1, 2, "[{\"level\":3,\"limit\":5}]", T0);
    policy(fp, "S-A", 0, 4, "[{\"level\":2,\"limit\":6},{\"level\":5,\"limit\":0}]", T0 + 100);
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), 12);
    kit_summary_t s = project_err(db, kit_group, NULL);
    cr_assert_eq(s.events, 12);
    cr_assert_eq(s.dlq, 0);

    /* S-A: 20 in total (the adjustment), r1's 2 sold, r3's 1 held, r2's 3 back; S-B: r4's 5 back */
    expect_rows(
        db,
        "select sku, total, held, sold, available, version, cause, " MS("updated_at") " from orderlog.inventory "
                                                                                      "order by sku",
        "S-A|20|1|2|17|1|adjusted|1795000007000\n"
        "S-B|5|0|0|5|4|synced|1795000006000\n",
        "inventory");
    expect_rows(db,
                "select hold_id, request_id, user_id, sku, quantity, status, release_reason, order_id, " MS(
                    "expires_at") ", " MS("placed_at") ", " MS("ended_at") " from orderlog.holds order by hold_id",
                "h-r1|r1|u1|S-A|2|converted|\\N|o-h-r1|1795001801000|1795000001000|1795000005000\n"
                "h-r2|r2|u2|S-A|3|released|expired|\\N|1795001802000|1795000002000|1795001802000\n"
                "h-r3|r3|u1|S-A|1|held|\\N|\\N|1795001803000|1795000003000|\\N\n"
                "h-r4|r4|u1|S-B|5|released|cancelled|\\N|1795001804000|1795000004000|1795000006000\n",
                "holds");
    expect_rows(db, "select user_id, sku, held, bought from orderlog.user_sku_totals order by 1, 2",
                "u1|S-A|1|2\n"
                "u1|S-B|0|0\n"
                "u2|S-A|0|0\n",
                "user_sku_totals");
    expect_rows(db,
                "select request_id, user_id, sku, quantity, outcome, reason, hold_id, " MS("expires_at") ", " MS(
                    "decided_at") ", message like 'successed.%' from orderlog.buy_decisions order by 1",
                "r1|u1|S-A|2|accepted|\\N|h-r1|1795001801000|1795000001000|t\n"
                "r2|u2|S-A|3|accepted|\\N|h-r2|1795001802000|1795000002000|t\n"
                "r3|u1|S-A|1|accepted|\\N|h-r3|1795001803000|1795000003000|t\n"
                "r4|u1|S-B|5|accepted|\\N|h-r4|1795001804000|1795000004000|t\n",
                "buy_decisions");
    /* the last PolicyChanged is in force, its levels as jsonb */
    expect_rows(db,
                "select sku, min_level, default_limit, level_limits = '[{\"level\":2,\"limit\":6},{\"level\":5,"
                "\"limit\":0}]'::jsonb, " MS("set_at") " from orderlog.policies",
                "S-A|0|4|t|1795000000100\n", "policies");

    /* a second batch on the rows the first one wrote */
    fp = facts_open("holds2.jsonl", path, sizeof(path));
    converted(fp, "h-r3", "u1", "S-A", 1, T0 + 8000);
    accepted(fp, "r5", "u2", "S-B", 4, T0 + 9000);
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), 2);
    s = project_err(db, kit_group, NULL);
    cr_assert_eq(s.events, 2, "the second run projected %lld events", s.events);
    cr_assert_eq(s.dlq, 0);
    expect_rows(db, "select sku, total, held, sold, available from orderlog.inventory order by sku",
                "S-A|20|0|3|17\n"
                "S-B|5|4|0|1\n",
                "inventory after the second batch");
    expect_rows(db, "select user_id, sku, held, bought from orderlog.user_sku_totals order by 1, 2",
                "u1|S-A|0|3\n"
                "u1|S-B|0|0\n"
                "u2|S-A|0|0\n"
                "u2|S-B|4|0\n",
                "user_sku_totals after the second batch");
    expect_rows(db, "select hold_id, status, order_id from orderlog.holds where hold_id in ('h-r3', 'h-r5') order by 1",
                "h-r3|converted|o-h-r3\n"
                "h-r5|held|\\N\n",
                "holds after the second batch");
    /* the group's offsets cover sale-events: `orderlog status` shows them */
    char *out, *err;
    int rc = orderlog_in(db, NULL, "status", &out, &err);
    cr_expect(rc == 0 || rc == 1, "status: exit %d\n%s%s", rc, out, err);
    char topic[256];
    kit_topic("sale-events[", topic, sizeof(topic));
    cr_expect(strstr(out, topic), "status does not show %s:\n%s", topic, out);
    free(out);
    free(err);
}

Test(sale_project, rejections_keep_their_reason_and_the_views_count_them) {
    const char *db = kit_use_db("sale_reject", "sale_reject");
    char path[1024];
    FILE *fp = facts_open("reject.jsonl", path, sizeof(path));
    stock(fp, "S-R", 3, "synced", 1, T0);
    rejected(fp, "q1", "u1", "S-R", 1, "blacklisted", "Bad guy! Bye-Bye!", T0 + 1);
    rejected(fp, "q2", "u2", "S-R", 2, "level", "You can not buy this goods!", T0 + 2);
    rejected(fp, "q3", "u3", "S-R", 3, "limit", "You can not buy this goods!", T0 + 3);
    accepted(fp, "q4", "u4", "S-R", 3, T0 + 4);
    rejected(fp, "q5", "u5", "S-R", 1, "sold_out", "The goods is sold out!", T0 + 5);
    rejected(fp, "q6", "u6", "S-R", 2, "sold_out", "The goods is sold out!", T0 + 6);
    rejected(fp, "q7", "u7", "S-NONE", 1, "unknown_sku", "The goods is sold out!", T0 + 7);
    checkout_rejected(fp, "c1", "h-q4", "u9", "S-R", "checkout", "not_owner", T0 + 8);
    checkout_rejected(fp, "c2", "h-zz", "u4", "S-R", "cancel", "unknown_hold", T0 + 9);
    /* c1 retried and refused again, differently: the first refusal stays */
    checkout_rejected(fp, "c1", "h-q4", "u9", "S-R", "checkout", "expired", T0 + 10);
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), 11);
    kit_summary_t s = project_err(db, kit_group, NULL);
    cr_assert_eq(s.events, 11);
    cr_assert_eq(s.dlq, 0, "%lld facts went to the dlq", s.dlq);

    expect_rows(db,
                "select request_id, user_id, sku, quantity, outcome, reason, message, hold_id, " MS(
                    "decided_at") ", " MS("expires_at") " from orderlog.buy_decisions order by 1",
                "q1|u1|S-R|1|rejected|blacklisted|Bad guy! Bye-Bye!|\\N|1795000000001|\\N\n"
                "q2|u2|S-R|2|rejected|level|You can not buy this goods!|\\N|1795000000002|\\N\n"
                "q3|u3|S-R|3|rejected|limit|You can not buy this goods!|\\N|1795000000003|\\N\n"
                "q4|u4|S-R|3|accepted|\\N|successed.please place the order and make payments within half an "
                "hour|h-q4|1795000000004|1795001800004\n"
                "q5|u5|S-R|1|rejected|sold_out|The goods is sold out!|\\N|1795000000005|\\N\n"
                "q6|u6|S-R|2|rejected|sold_out|The goods is sold out!|\\N|1795000000006|\\N\n"
                "q7|u7|S-NONE|1|rejected|unknown_sku|The goods is sold out!|\\N|1795000000007|\\N\n",
                "buy_decisions");
    expect_rows(db,
                "select request_id, hold_id, user_id, sku, op, reason, " MS(
                    "decided_at") " from "
                                  "orderlog.checkout_rejections order by 1",
                "c1|h-q4|u9|S-R|checkout|not_owner|1795000000008\n"
                "c2|h-zz|u4|S-R|cancel|unknown_hold|1795000000009\n",
                "checkout_rejections");
    /* a rejection moves no stock, an unknown sku gets no inventory row */
    expect_rows(db, "select sku, total, held, sold, available from orderlog.inventory", "S-R|3|3|0|0\n", "inventory");
    expect_rows(db, "select user_id, sku, held, bought from orderlog.user_sku_totals", "u4|S-R|3|0\n",
                "user_sku_totals");
    /* the report */
    expect_rows(db, "select sku, outcome, reason, requests, units from orderlog.sale_outcomes order by 1, 2, 3",
                "S-NONE|rejected|unknown_sku|1|1\n"
                "S-R|accepted|\\N|1|3\n"
                "S-R|rejected|blacklisted|1|1\n"
                "S-R|rejected|level|1|2\n"
                "S-R|rejected|limit|1|3\n"
                "S-R|rejected|sold_out|2|3\n",
                "sale_outcomes");
    expect_rows(db,
                "select sku, total, sold, held, available, accepted, rejected, sold_out from orderlog.sale_by_sku "
                "order by sku",
                "S-NONE|\\N|\\N|\\N|\\N|0|1|0\n"
                "S-R|3|0|3|0|1|5|2\n",
                "sale_by_sku");
}

/* too_old is no decision: it never replaces one, is kept when the request
 * has none, and a decision replaces it. */
Test(sale_project, a_too_old_refusal_never_replaces_a_decision_and_a_decision_replaces_it) {
    const char *db = kit_use_db("sale_too_old", "sale_too_old");
    char path[1024];
    FILE *fp = facts_open("too_old.jsonl", path, sizeof(path));
    const char *msg = "The request has expired, please try again!";
    stock(fp, "S-T", 5, "synced", 1, T0);
    accepted(fp, "o1", "u1", "S-T", 1, T0 + 1);
    rejected(fp, "o2", "u2", "S-T", 1, "sold_out", "The goods is sold out!", T0 + 2);
    rejected(fp, "o1", "u1", "S-T", 1, "too_old", msg, T0 + 1); /* o1's record again, past the window */
    rejected(fp, "o2", "u2", "S-T", 1, "too_old", msg, T0 + 2); /* o2's */
    rejected(fp, "o3", "u3", "S-T", 1, "too_old", msg, T0 - 9); /* never decided */
    rejected(fp, "o3", "u3", "S-T", 1, "too_old", msg, T0 - 9); /* twice */
    rejected(fp, "o4", "u4", "S-T", 1, "too_old", msg, T0 - 9); /* refused, then sent with a new time */
    accepted(fp, "o4", "u4", "S-T", 1, T0 + 20);
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), 9);
    kit_summary_t s = project_err(db, kit_group, NULL);
    cr_assert_eq(s.events, 9);
    cr_assert_eq(s.dlq, 0, "%lld facts went to the dlq", s.dlq);
    expect_rows(
        db, "select request_id, outcome, reason, hold_id, " MS("decided_at") " from orderlog.buy_decisions order by 1",
        "o1|accepted|\\N|h-o1|1795000000001\n"
        "o2|rejected|sold_out|\\N|1795000000002\n"
        "o3|rejected|too_old|\\N|1794999999991\n"
        "o4|accepted|\\N|h-o4|1795000000020\n",
        "buy_decisions");
    expect_rows(db, "select sku, total, held, sold from orderlog.inventory", "S-T|5|2|0\n", "inventory");
}

Test(sale_project, contradicting_facts_go_to_the_dlq_and_change_nothing) {
    const char *db = kit_use_db("sale_contra", "sale_contra");
    char path[1024];
    FILE *fp = facts_open("contra.jsonl", path, sizeof(path));
    stock(fp, "S-C", 3, "synced", 1, T0);
    accepted(fp, "k1", "u1", "S-C", 2, T0 + 1);
    released(fp, "h-nope", "u1", "S-C", 1, "cancelled", T0 + 2);                      /* unknown hold */
    accepted(fp, "k2", "u2", "S-C", 2, T0 + 3);                                       /* 1 available */
    stock(fp, "S-C", 1, "adjusted", 1, T0 + 4);                                       /* under the 2 held */
    converted(fp, "h-k1", "u2", "S-C", 2, T0 + 5);                                    /* u1's hold */
    rejected(fp, "k1", "u1", "S-C", 2, "sold_out", "The goods is sold out!", T0 + 6); /* k1 decided */
    converted(fp, "h-k1", "u1", "S-C", 2, T0 + 7);                                    /* fine */
    released(fp, "h-k1", "u1", "S-C", 2, "expired", T0 + 8);                          /* converted already */
    accepted(fp, "k3", "u1", "S-X", 1, T0 + 9);                                       /* S-X has no stock */
    stock(fp, "S-C", 2, "adjusted", 1, T0 + 10);                                      /* fine: 2 sold */
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), 11);
    char *err;
    kit_summary_t s = project_err(db, kit_group, &err);
    cr_assert_eq(s.events, 11);
    cr_expect_eq(s.dlq, 7, "%lld facts went to the dlq, 7 contradict:\n%s", s.dlq, err);
    cr_expect_eq(kit_dlq_count(), 7);
    static const char *const reasons[] = {
        "hold \"h-nope\" does not exist",
        "sku \"S-C\" has 1 units available, the hold takes 2",
        "sku \"S-C\": a total of 1 is under the 2 units held and sold",
        "hold \"h-k1\" is 2 units of sku \"S-C\" for user \"u1\"",
        "request \"k1\" was decided already (accepted)",
        "hold \"h-k1\" is converted already",
        "sku \"S-X\" has no stock",
    };
    /* the log is JSON lines: its quotes are escaped */
    for (char *from = err, *to = err;; from++) {
        if (*from == '\\' && from[1] == '"')
            continue;
        if (!(*to++ = *from))
            break;
    }
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        cr_expect(strstr(err, reasons[i]), "no \"%s\" in the log:\n%s", reasons[i], err);
    free(err);
    expect_rows(db, "select sku, total, held, sold, available from orderlog.inventory", "S-C|2|0|2|0\n", "inventory");
    expect_rows(db, "select hold_id, user_id, status, order_id from orderlog.holds", "h-k1|u1|converted|o-h-k1\n",
                "holds");
    expect_rows(db, "select request_id, outcome from orderlog.buy_decisions", "k1|accepted\n", "buy_decisions");
    expect_rows(db, "select user_id, sku, held, bought from orderlog.user_sku_totals", "u1|S-C|0|2\n",
                "user_sku_totals");
}

Test(sale_project, blacklist_adds_replace_and_removes_delete) {
    const char *db = kit_use_db("sale_black", "sale_black");
    const long long y2099 = 4070908800000LL, y2000 = 946684800000LL;
    char path[1024];
    FILE *fp = facts_open("black1.jsonl", path, sizeof(path));
    blacklist(fp, "ip", "1.2.3.4", "add", "rate", y2099, T0);
    blacklist(fp, "user", "u-666", "add", "manual", -1, T0 + 1);
    blacklist(fp, "ip", "5.6.7.8", "add", "manual", -1, T0 + 2);
    blacklist(fp, "ip", "5.6.7.8", "remove", "manual", -1, T0 + 3);  /* added and removed in one batch */
    blacklist(fp, "user", "nobody", "remove", "manual", -1, T0 + 4); /* never added */
    blacklist(fp, "ip", "9.9.9.9", "add", "rate", y2000, T0 + 5);    /* lapsed */
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), 6);
    kit_summary_t s = project_err(db, kit_group, NULL);
    cr_assert_eq(s.events, 6);
    cr_assert_eq(s.dlq, 0);
    const char *sql =
        "select subject_type, subject, reason, " MS("until") ", " MS("changed_at") " from "
                                                                                   "orderlog.blacklist order by 1, 2";
    expect_rows(db, sql,
                "ip|1.2.3.4|rate|4070908800000|1795000000000\n"
                "ip|9.9.9.9|rate|946684800000|1795000000005\n"
                "user|u-666|manual|\\N|1795000000001\n",
                "blacklist");
    expect_rows(db, "select subject_type, subject from orderlog.blacklist_active order by 1, 2",
                "ip|1.2.3.4\n"
                "user|u-666\n",
                "blacklist_active");

    /* next batch: a row written before goes, another is replaced */
    fp = facts_open("black2.jsonl", path, sizeof(path));
    blacklist(fp, "ip", "1.2.3.4", "remove", "manual", -1, T0 + 10);
    blacklist(fp, "user", "u-666", "add", "rate", y2000, T0 + 11);
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), 2);
    s = project_err(db, kit_group, NULL);
    cr_assert_eq(s.events, 2);
    const char *expected = "ip|9.9.9.9|rate|946684800000|1795000000005\n"
                           "user|u-666|rate|946684800000|1795000000011\n";
    expect_rows(db, sql, expected, "blacklist after a remove and a replacing add");
    expect_rows(db, "select count(*) from orderlog.blacklist_active", "0\n", "blacklist_active");

    /* replayed from the start by another group over the same rows: the same */
    s = project_err(db, kit_new_group("sale_black", "_again"), NULL);
    cr_assert_eq(s.events, 8);
    cr_assert_eq(s.dlq, 0);
    expect_rows(db, sql, expected, "blacklist after a replay");
}

/* ---- a generated stream ---------------------------------------------------- */

/* A legal stream, as the decider could write it, and what it must leave:
 * stock per SKU, holds that end by conversion or release, rejections for
 * lack of stock, stock changes (never under held + sold), policies,
 * refused checkouts. */
#define GEN_SKUS 12
#define GEN_USERS 40
#define GEN_HOLDS 4000

typedef struct gen_s {
    unsigned x;
    long long total[GEN_SKUS], held[GEN_SKUS], sold[GEN_SKUS];
    long long user_held[GEN_USERS][GEN_SKUS], user_bought[GEN_USERS][GEN_SKUS];
    int hold_sku[GEN_HOLDS], hold_user[GEN_HOLDS], hold_qty[GEN_HOLDS], hold_req[GEN_HOLDS];
    int hold_state[GEN_HOLDS]; /* 0 held, 1 released, 2 converted */
    int nholds, requests, rejections, checkouts, facts;
    long long at;
} gen_t;

static unsigned gen_rand(gen_t *g, unsigned n) {
    g->x = g->x * 1103515245u + 12345u;
    return (g->x >> 8) % n;
}

static gen_t *gen_new(unsigned seed) {
    gen_t *g = calloc(1, sizeof(*g));
    cr_assert(g);
    g->x = seed * 2654435761u + 7;
    g->at = T0;
    return g;
}

/* n more facts into fp (the first call begins with every SKU's stock). */
static void gen_facts(gen_t *g, FILE *fp, int n) {
    char sku[32], user[32], req[32], hold[48];
    if (!g->facts)
        for (int k = 0; k < GEN_SKUS; k++) {
            snprintf(sku, sizeof(sku), "G-%02d", k);
            g->total[k] = 20 + gen_rand(g, 30);
            stock(fp, sku, g->total[k], "synced", 1, g->at);
            g->facts++;
        }
    for (int i = 0; i < n;) {
        g->at += 1000;
        unsigned what = gen_rand(g, 100);
        int k = (int)gen_rand(g, GEN_SKUS), u = (int)gen_rand(g, GEN_USERS);
        if (what >= 55 && what < 85) { /* a hold ends: one of the open ones */
            int h = g->nholds ? (int)gen_rand(g, (unsigned)g->nholds) : 0;
            if (!g->nholds || g->hold_state[h])
                continue;
            k = g->hold_sku[h];
            u = g->hold_user[h];
        }
        snprintf(sku, sizeof(sku), "G-%02d", k);
        snprintf(user, sizeof(user), "user-%02d", u);
        if (what < 55) { /* a buy */
            if (g->nholds == GEN_HOLDS)
                continue;
            int q = 1 + (int)gen_rand(g, 3);
            int r = g->requests++;
            snprintf(req, sizeof(req), "req-%05d", r);
            if (g->total[k] - g->held[k] - g->sold[k] >= q) {
                accepted(fp, req, user, sku, q, g->at);
                int h = g->nholds++;
                g->hold_sku[h] = k;
                g->hold_user[h] = u;
                g->hold_qty[h] = q;
                g->hold_req[h] = r;
                g->held[k] += q;
                g->user_held[u][k] += q;
            } else {
                rejected(fp, req, user, sku, q, "sold_out", "The goods is sold out!", g->at);
                g->rejections++;
            }
        } else if (what < 85) {
            int h;
            for (h = 0; h < g->nholds; h++) /* the open hold of this sku and user picked above */
                if (!g->hold_state[h] && g->hold_sku[h] == k && g->hold_user[h] == u)
                    break;
            int q = g->hold_qty[h];
            snprintf(hold, sizeof(hold), "h-req-%05d", g->hold_req[h]);
            g->held[k] -= q;
            g->user_held[u][k] -= q;
            if (gen_rand(g, 2)) {
                converted(fp, hold, user, sku, q, g->at);
                g->hold_state[h] = 2;
                g->sold[k] += q;
                g->user_bought[u][k] += q;
            } else {
                released(fp, hold, user, sku, q, gen_rand(g, 2) ? "expired" : "cancelled", g->at);
                g->hold_state[h] = 1;
            }
        } else if (what < 92) { /* stock changes, never under held + sold */
            long long t = g->total[k] + (long long)gen_rand(g, 16) - 5;
            if (t < g->held[k] + g->sold[k])
                t = g->held[k] + g->sold[k];
            g->total[k] = t;
            stock(fp, sku, t, "adjusted", 2, g->at);
        } else if (what < 96) {
            policy(fp, sku, (int)gen_rand(g, 3), (int)gen_rand(g, 5), "[{\"level\":4,\"limit\":9}]", g->at);
        } else {
            snprintf(req, sizeof(req), "co-%05d", g->checkouts++);
            checkout_rejected(fp, req, "h-unknown", user, sku, "checkout", "unknown_hold", g->at);
        }
        g->facts++;
        i++;
    }
}

/* Writes n more facts to <dir>/<name> and publishes them. */
static void gen_publish(gen_t *g, int n, const char *name) {
    char path[1024];
    FILE *fp = facts_open(name, path, sizeof(path));
    int before = g->facts;
    gen_facts(g, fp, n);
    facts_close(fp, path);
    cr_assert_eq(kit_publish(path), g->facts - before);
}

/* The tables hold what the model says. */
static void gen_expect(const gen_t *g, const char *db, const char *what) {
    char buf[1 << 16];
    size_t len = 0;
    for (int k = 0; k < GEN_SKUS; k++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "G-%02d|%lld|%lld|%lld|%lld\n", k, g->total[k],
                                g->held[k], g->sold[k], g->total[k] - g->held[k] - g->sold[k]);
    char w[256];
    snprintf(w, sizeof(w), "inventory (%s)", what);
    expect_rows(db, "select sku, total, held, sold, available from orderlog.inventory order by sku", buf, w);
    len = 0;
    for (int u = 0; u < GEN_USERS; u++)
        for (int k = 0; k < GEN_SKUS; k++) {
            int ever = 0;
            for (int h = 0; h < g->nholds && !ever; h++)
                ever = g->hold_user[h] == u && g->hold_sku[h] == k;
            if (ever)
                len += (size_t)snprintf(buf + len, sizeof(buf) - len, "user-%02d|G-%02d|%lld|%lld\n", u, k,
                                        g->user_held[u][k], g->user_bought[u][k]);
        }
    snprintf(w, sizeof(w), "user_sku_totals (%s)", what);
    expect_rows(db, "select user_id, sku, held, bought from orderlog.user_sku_totals order by 1, 2", buf, w);
    int states[3] = {0, 0, 0};
    for (int h = 0; h < g->nholds; h++)
        states[g->hold_state[h]]++;
    snprintf(buf, sizeof(buf), "%d|%d|%d|%d|%d|%d\n", states[0], states[1], states[2], g->nholds, g->rejections,
             g->checkouts);
    snprintf(w, sizeof(w), "holds, decisions and refused checkouts (%s)", what);
    expect_rows(db,
                "select (select count(*) from orderlog.holds where status = 'held'), (select count(*) from "
                "orderlog.holds where status = 'released'), (select count(*) from orderlog.holds where status = "
                "'converted'), (select count(*) from orderlog.buy_decisions where outcome = 'accepted'), (select "
                "count(*) from orderlog.buy_decisions where outcome = 'rejected'), (select count(*) from "
                "orderlog.checkout_rejections)",
                buf, w);
}

Test(sale_project, replayed_facts_change_nothing) {
    const char *db = kit_use_db("sale_replay", "sale_replay");
    gen_t *g = gen_new(1);
    gen_publish(g, 1500, "gen1.jsonl");
    FILE *fp;
    char path[1024];
    fp = facts_open("black.jsonl", path, sizeof(path));
    blacklist(fp, "ip", "10.0.0.1", "add", "rate", -1, T0);
    blacklist(fp, "user", "user-01", "add", "manual", -1, T0);
    blacklist(fp, "ip", "10.0.0.1", "remove", "manual", -1, T0 + 1);
    facts_close(fp, path);
    kit_publish(path);
    long long published = g->facts + 3;
    /* small batches: the facts of a sku spread over many */
    kit_summary_t s = kit_project_all(db, kit_group, "-X consumer.batch.events=97");
    cr_assert_eq(s.events, published);
    cr_assert_eq(s.dlq, 0);
    cr_assert_gt(s.batches, 10);
    gen_expect(g, db, "projected once");
    char *first = sale_checksums(db);
    /* another group over the same database: every fact is read again, in
     * other batches, applied by partition in parallel */
    s = kit_project_all(db, kit_new_group("sale_replay", "_again"),
                        "-X consumer.batch.events=500 -X consumer.workers=3 -X consumer.parallel.apply=true");
    cr_assert_eq(s.events, published, "the replay projected %lld events of %lld", s.events, published);
    cr_assert_eq(s.dlq, 0, "%lld replayed facts went to the dlq", s.dlq);
    char *second = sale_checksums(db);
    if (strcmp(first, second)) {
        char *diff = kit_differences(first, second, 10);
        cr_assert_fail("the sale tables changed on replay (left: once, right: replayed):\n%s", diff);
    }
    gen_expect(g, db, "projected twice");
    free(first);
    free(second);
    free(g);
}

/* orderlog rebuild in the test's group and database; exits 0; its stdout. */
static char *rebuild_run(const char *db, const char *extra) {
    char *out, *err;
    int rc = orderlog_in(db, extra, "rebuild", &out, &err);
    cr_assert_eq(rc, 0, "rebuild: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    free(err);
    return out;
}

/* Every sale table has a "same" line in the rebuild's comparison. */
static void expect_all_same(const char *out) {
    for (size_t t = 0; t < NSALE; t++) {
        char *line = ol_test_find_line(out, sale_tables[t][0], ":", NULL);
        cr_expect(line, "no comparison line for %s:\n%s", sale_tables[t][0], out);
        if (!line)
            continue;
        size_t n = strlen(line);
        cr_expect(!strncmp(line, sale_tables[t][0], strlen(sale_tables[t][0])) && n > 5 &&
                      !strcmp(line + n - 5, " same"),
                  "%s", line);
        free(line);
    }
}

Test(sale_project, rebuild_gives_the_same_sale_tables_as_the_live_projection) {
    const char *db = kit_use_db("sale_rebuild", "sale_rebuild");
    gen_t *g = gen_new(2);
    gen_publish(g, 1200, "gen1.jsonl");
    char path[1024];
    FILE *fp = facts_open("black.jsonl", path, sizeof(path));
    blacklist(fp, "ip", "10.0.0.1", "add", "rate", -1, T0);
    blacklist(fp, "user", "user-02", "add", "manual", 4070908800000LL, T0);
    blacklist(fp, "ip", "10.0.0.1", "remove", "manual", -1, T0 + 1);
    blacklist(fp, "ip", "10.0.0.2", "add", "manual", -1, T0 + 2);
    facts_close(fp, path);
    kit_publish(path);
    kit_project_all(db, kit_group, "-X consumer.batch.events=300");
    gen_expect(g, db, "live");
    char *live = sale_checksums(db);

    /* the bulk path (the sale tables beside it, through the normal one) */
    char *out = rebuild_run(db, NULL);
    cr_expect(strstr(out, "swapped"), "no swap:\n%s", out);
    expect_all_same(out);
    free(out);
    char *rebuilt = sale_checksums(db);
    cr_expect_str_eq(rebuilt, live, "the sale tables after the rebuild differ from the live ones");
    free(rebuilt);
    /* the generated column and the no-oversell check came through */
    expect_rows(db,
                "select count(*) from information_schema.columns where table_schema = 'orderlog' and table_name = "
                "'inventory' and column_name = 'available' and is_generated = 'ALWAYS'",
                "1\n", "inventory.available is generated");
    char msg[512];
    cr_expect_neq(
        ol_test_pg_try_exec(db, "update orderlog.inventory set held = total + 1 where sku = 'G-00'", msg, sizeof(msg)),
        0, "the rebuilt inventory lets held + sold pass total");

    /* past the bulk limit: keys and indexes made in the middle */
    out = rebuild_run(db, "-X rebuild.bulk.rows=100 -X consumer.batch.events=150");
    expect_all_same(out);
    free(out);
    rebuilt = sale_checksums(db);
    cr_expect_str_eq(rebuilt, live, "the sale tables after a rebuild past the bulk limit differ");
    free(rebuilt);

    /* the projector goes on from the offsets the swap brought */
    gen_publish(g, 400, "gen2.jsonl");
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_expect_eq(s.events, 400, "after the swaps the projector took %lld events, 400 were new", s.events);
    gen_expect(g, db, "projected on after the rebuilds");
    /* and that is what one projection of everything says */
    const char *fresh = kit_new_db("sale_rebuild_fresh");
    kit_project_all(fresh, kit_new_group("sale_rebuild", "_fresh"), NULL);
    char *a = sale_checksums(db), *b = sale_checksums(fresh);
    cr_expect_str_eq(a, b, "rebuilt then projected on vs one projection");
    free(a);
    free(b);
    free(live);
    free(g);
}
