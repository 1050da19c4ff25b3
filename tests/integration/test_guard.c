/* orderlog guard against the real broker: a bot's burst among normal traffic
 * gets exactly the bot blacklisted (reason rate, until = request time + ban),
 * the remove follows once until has passed, manual entries are left alone,
 * and a restart neither bans twice nor forgets to lift. Every test works
 * under a topic prefix of its own (it_guard_<tag>_<pid>_), created with
 * `orderlog topics create` and deleted at the end. guard runs in the
 * background as users run it; what it wrote is read back with
 * `orderlog tail blacklist`.
 *
 * Expected times are worked out here (gmtime, strftime), not with orderlog's
 * own code; RFC 3339 UTC times of one format compare as strings. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

static char prefix[128];
static char dir[512];
static ol_test_bg_t *guards[2];

static void setup(void) {
    ol_test_tmpdir(dir, sizeof(dir));
}

/* The options of every orderlog run here: the test's prefix and partitions. */
static const char *fixed_args(void) {
    return ol_test_topic_args(prefix, "", 3);
}

static void teardown(void) {
    for (int i = 0; i < 2; i++) {
        ol_test_bg_free(guards[i]);
        guards[i] = NULL;
    }
    const char *groups[] = {"guard", NULL};
    ol_test_cleanup(fixed_args(), prefix, groups, NULL, dir);
}

TestSuite(guard, .init = setup, .fini = teardown, .timeout = 180);

static void use_topics(const char *tag) {
    snprintf(prefix, sizeof(prefix), "it_guard_%s_%ld_", tag, (long)getpid());
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "topics create");
    cr_assert_eq(rc, 0, "topics create: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
}

/* Epoch milliseconds as RFC 3339 UTC with milliseconds (how tail prints times). */
static void format_ms(long long ms, char *out, size_t size) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03lldZ", buf, ms % 1000);
}

/* ---- input ---- */

typedef struct lines_s {
    char *text;
    size_t len;
} lines_t;

__attribute__((format(printf, 2, 3))) static void add_line(lines_t *l, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = ol_test_vstrf(fmt, ap);
    va_end(ap);
    size_t n = strlen(s);
    l->text = realloc(l->text, l->len + (size_t)n + 2);
    memcpy(l->text + l->len, s, (size_t)n);
    l->len += (size_t)n;
    l->text[l->len++] = '\n';
    l->text[l->len] = '\0';
    free(s);
}

static void buy(lines_t *l, const char *req, const char *ip, const char *user, long long at_ms) {
    add_line(l,
             "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"%s\",\"session_id\":\"s\",\"client_ip\":\"%s\","
             "\"user_id\":\"%s\",\"user_level\":1,\"sku\":\"sku-%s\",\"quantity\":1,\"requested_at\":%lld}}",
             req, ip, user, req, at_ms);
}

/* base with n appended when base ends in '-' or '.' (a numbered name or
 * address), else base as it is. */
static void numbered(char *out, size_t size, const char *base, int n) {
    size_t len = strlen(base);
    if (len && (base[len - 1] == '-' || base[len - 1] == '.'))
        snprintf(out, size, "%s%d", base, n);
    else
        snprintf(out, size, "%s", base);
}

/* Adds requests <stem><from..to-1> of user from ip at t (t + i when spread)
 * to l; ip and user numbered (i + 1 and i). */
static void buys(lines_t *l, const char *stem, int from, int to, const char *ip, const char *user, long long t,
                 bool spread) {
    char req[64], a[64], u[64];
    for (int i = from; i < to; i++) {
        snprintf(req, sizeof(req), "%s%d", stem, i);
        numbered(a, sizeof(a), ip, i + 1);
        numbered(u, sizeof(u), user, i);
        buy(l, req, a, u, spread ? t + i : t);
    }
}

static void listing(lines_t *l, const char *type, const char *subject, const char *action, const char *reason,
                    long long until_ms) {
    char until[32] = "null";
    if (until_ms >= 0)
        snprintf(until, sizeof(until), "%lld", until_ms);
    add_line(l,
             "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"%s\",\"subject\":\"%s\",\"action\":\"%s\","
             "\"reason\":\"%s\",\"until\":%s}}",
             type, subject, action, reason, until);
}

/* Publishes the lines with `orderlog publish`; fails the test otherwise. */
static void publish(lines_t *l, const char *name) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ol_test_write_file(path, l->text, l->len);
    char *q = ol_test_shell_quote(path), *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "publish %s", q);
    cr_assert_eq(rc, 0, "publish: exit %d\n%s%s", rc, out, err);
    free(q);
    free(out);
    free(err);
    free(l->text);
    l->text = NULL;
    l->len = 0;
}

/* ---- guard in the background ---- */

static ol_test_bg_t *start_guard(const char *options) {
    ol_test_bg_t *bg = ol_test_orderlog_bg("-X topic.prefix=%s %s guard", prefix, options);
    int n = ol_test_bg_wait_stderr(bg, "assigned 3 partitions", 1, 60000);
    cr_assert_eq(n, 1, "guard did not get its partitions:\n%s", ol_test_bg_stderr(bg));
    return bg;
}

/* SIGTERM: guard must stop cleanly with exit 0. */
static void stop_guard(ol_test_bg_t *bg) {
    ol_test_bg_stop_ok(bg, "guard", 30000);
    const char *err = ol_test_bg_stderr(bg);
    cr_assert(!strstr(err, "Sanitizer") && !strstr(err, "runtime error:"), "sanitizer report from guard:\n%s", err);
    cr_assert(strstr(err, "\"msg\":\"stopped: "), "no stop line:\n%s", err);
}

/* ---- reading the blacklist back ---- */

/* Every record of the blacklist topic (a new array). */
static json_t *blacklist(void) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "tail blacklist --from beginning");
    cr_assert_eq(rc, 0, "tail blacklist: exit %d\n%s", rc, err);
    json_t *arr = json_array();
    for (char *line = out; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len) {
            json_error_t jerr;
            json_t *v = json_loadb(line, len, 0, &jerr);
            cr_assert(json_is_object(v), "not JSON: %.*s", (int)len, line);
            json_array_append_new(arr, v);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(out);
    free(err);
    return arr;
}

static const char *data_str(json_t *rec, const char *name) {
    return json_string_value(json_object_get(json_object_get(rec, "data"), name));
}

/* Records with that action and reason (NULL: any), as a new array. */
static json_t *select_records(json_t *all, const char *action, const char *reason) {
    json_t *out = json_array();
    size_t i;
    json_t *rec;
    json_array_foreach(all, i, rec) {
        if ((!action || !strcmp(data_str(rec, "action"), action)) &&
            (!reason || !strcmp(data_str(rec, "reason"), reason)))
            json_array_append(out, rec);
    }
    return out;
}

/* Polls the blacklist until it holds at least n records of action/reason;
 * returns every record then (a new array). */
static json_t *wait_for(const char *action, const char *reason, size_t n, int timeout_ms) {
    long long deadline = ol_test_now_ms() + timeout_ms;
    for (;;) {
        json_t *all = blacklist();
        json_t *sel = select_records(all, action, reason);
        size_t have = json_array_size(sel);
        json_decref(sel);
        if (have >= n || ol_test_now_ms() > deadline)
            return all;
        json_decref(all);
        usleep(300 * 1000);
    }
}

/* Polls the blacklist until it holds a record of key with that action;
 * returns every record then (a new array). */
static json_t *wait_for_key(const char *key, const char *action, int timeout_ms) {
    long long deadline = ol_test_now_ms() + timeout_ms;
    for (;;) {
        json_t *all = blacklist();
        size_t i;
        json_t *rec;
        json_array_foreach(all, i, rec) {
            if (!strcmp(json_string_value(json_object_get(rec, "key")), key) &&
                !strcmp(data_str(rec, "action"), action))
                return all;
        }
        if (ol_test_now_ms() > deadline)
            return all;
        json_decref(all);
        usleep(300 * 1000);
    }
}

/* The keys of records, sorted, joined by spaces (a new string). */
static char *keys_of(json_t *records) {
    size_t n = json_array_size(records);
    const char **keys = calloc(n + 1, sizeof(*keys));
    for (size_t i = 0; i < n; i++)
        keys[i] = json_string_value(json_object_get(json_array_get(records, i), "key"));
    char *s = ol_test_sorted_join(keys, n);
    free(keys);
    return s;
}

/* Checks a record guard wrote: key, headers as publish writes them, fields. */
static void expect_change(json_t *rec, const char *key, const char *action, const char *until) {
    const char *type = data_str(rec, "subject_type"), *subject = data_str(rec, "subject");
    char expect_key[300];
    snprintf(expect_key, sizeof(expect_key), "%s:%s", type, subject);
    cr_assert_str_eq(json_string_value(json_object_get(rec, "key")), key);
    cr_assert_str_eq(expect_key, key);
    cr_assert_str_eq(data_str(rec, "action"), action);
    cr_assert_str_eq(data_str(rec, "reason"), "rate");
    json_t *h = json_object_get(rec, "headers");
    cr_assert_str_eq(json_string_value(json_object_get(h, "ce_specversion")), "1.0");
    cr_assert_str_eq(json_string_value(json_object_get(h, "ce_type")), "orderlog.BlacklistChanged");
    cr_assert_str_eq(json_string_value(json_object_get(h, "ce_source")), "orderlog/guard");
    cr_assert_str_eq(json_string_value(json_object_get(h, "ce_subject")), subject);
    cr_assert_str_eq(json_string_value(json_object_get(h, "content-type")), "application/avro");
    cr_assert_str_eq(json_string_value(json_object_get(h, "ce_dataschema")), "urn:orderlog:schema:BlacklistChanged:1");
    cr_assert_eq(strlen(json_string_value(json_object_get(h, "ce_id"))), 36);
    json_t *u = json_object_get(json_object_get(rec, "data"), "until");
    if (until)
        cr_assert(json_is_string(u) && !strcmp(json_string_value(u), until), "%s: until %s, expected %s", key,
                  json_is_string(u) ? json_string_value(u) : "null", until);
    else
        cr_assert(json_is_null(u), "%s: a remove with an until", key);
}

#define BAN_MS 8000

Test(guard, bans_exactly_the_bot_then_lifts_it_and_leaves_manual_entries) {
    use_topics("bot");
    lines_t l = {0};
    /* an operator's entry from before: the IP sends a flood too */
    listing(&l, "ip", "192.0.2.1", "add", "manual", -1);
    publish(&l, "manual.jsonl");
    guards[0] = start_guard("-X guard.window.ms=60000 -X guard.ip.max=20 -X guard.user.max=10 "
                            "-X guard.ban.ms=8000 -X 'guard.ignore=ip:198.51.100.250, user:loadtest'");
    long long t = ol_test_wall_ms();
    char req[64], ip[64], user[64];
    /* normal traffic: 30 shoppers, 3 requests each, on their own IPs */
    for (int i = 0; i < 30; i++) {
        for (int k = 0; k < 3; k++) {
            snprintf(req, sizeof(req), "n-%d-%d", i, k);
            snprintf(ip, sizeof(ip), "198.51.100.%d", i + 1);
            snprintf(user, sizeof(user), "shopper-%d", i);
            buy(&l, req, ip, user, t + k);
        }
    }
    /* an office behind one address: exactly at the IP limit, 20 users */
    buys(&l, "office-", 0, 20, "198.51.100.200", "clerk-", t, false);
    /* a user at exactly the user limit, on several IPs */
    buys(&l, "keen-", 0, 10, "198.51.101.", "keen", t, false);
    /* the bot: 45 requests from one IP with one account, all at t */
    buys(&l, "bot-", 0, 45, "203.0.113.66", "bot-1", t, false);
    /* a user hopping over 15 IPs: one over the user limit */
    buys(&l, "hop-", 0, 11, "198.51.102.", "hopper", t, false);
    /* the manually listed IP floods too */
    buys(&l, "manual-", 0, 50, "192.0.2.1", "m-", t, false);
    /* subjects of guard.ignore flood as they like */
    for (int i = 0; i < 40; i++) {
        buys(&l, "proxy-", i, i + 1, "198.51.100.250", "behind-proxy-", t, false);
        buys(&l, "load-", i, i + 1, "198.51.103.", "loadtest", t, false);
    }
    /* other commands on buy-requests are skipped */
    add_line(&l, "{\"type\":\"CheckoutRequested\",\"data\":{\"request_id\":\"c-1\",\"hold_id\":\"h-bot-0\","
                 "\"user_id\":\"bot-1\",\"sku\":\"sku-bot-0\"}}");
    add_line(&l, "{\"type\":\"HoldCancelled\",\"data\":{\"request_id\":\"c-2\",\"hold_id\":\"h-bot-1\","
                 "\"user_id\":\"bot-1\",\"sku\":\"sku-bot-1\"}}");
    publish(&l, "traffic.jsonl");

    json_t *all = wait_for("add", "rate", 3, 30000);
    json_t *adds = select_records(all, "add", "rate");
    char *keys = keys_of(adds);
    cr_assert_str_eq(keys, "ip:203.0.113.66 user:bot-1 user:hopper", "rate adds: %s", keys);
    char until[40];
    format_ms(t + BAN_MS, until, sizeof(until));
    size_t i;
    json_t *rec;
    json_array_foreach(adds, i, rec) {
        expect_change(rec, json_string_value(json_object_get(rec, "key")), "add", until);
    }
    free(keys);
    json_decref(adds);
    json_decref(all);
    cr_assert(ol_test_wall_ms() < t + BAN_MS, "the test was too slow to see the bans before they lapse");

    /* the removes come once until has passed, not before */
    all = wait_for("remove", NULL, 3, 30000);
    json_t *removes = select_records(all, "remove", NULL);
    keys = keys_of(removes);
    cr_assert_str_eq(keys, "ip:203.0.113.66 user:bot-1 user:hopper", "removes: %s", keys);
    json_array_foreach(removes, i, rec) {
        expect_change(rec, json_string_value(json_object_get(rec, "key")), "remove", NULL);
        const char *changed = data_str(rec, "changed_at");
        cr_assert(strcmp(changed, until) >= 0, "removed at %s, before its until %s", changed, until);
    }
    free(keys);
    json_decref(removes);
    /* the manual entry: still its one record, nothing by guard */
    json_t *manual = json_array();
    json_array_foreach(all, i, rec) {
        if (!strcmp(json_string_value(json_object_get(rec, "key")), "ip:192.0.2.1"))
            json_array_append(manual, rec);
    }
    cr_assert_eq(json_array_size(manual), 1, "records of the manual entry: %zu", json_array_size(manual));
    cr_assert_str_eq(data_str(json_array_get(manual, 0), "reason"), "manual");
    json_decref(manual);
    cr_assert_eq(json_array_size(all), 7, "blacklist holds %zu records, expected 1 manual + 3 adds + 3 removes",
                 json_array_size(all));
    json_decref(all);

    stop_guard(guards[0]);
    const char *err = ol_test_bg_stderr(guards[0]);
    cr_assert(strstr(err, "ban ip 203.0.113.66: "), "no ban line:\n%s", err);
    cr_assert(strstr(err, "lift ip 203.0.113.66: "), "no lift line:\n%s", err);
    cr_assert(strstr(err, "2 other events skipped"), "the other commands were not skipped:\n%s", err);
}

Test(guard, restart_neither_bans_twice_nor_forgets_lifts) {
    use_topics("restart");
    lines_t l = {0};
    long long now = ol_test_wall_ms();
    /* entries of an earlier run and of an operator */
    listing(&l, "ip", "203.0.113.99", "add", "rate", now + 4000); /* lapses soon: guard removes it */
    listing(&l, "user", "old-bot", "add", "rate", now - 1000);    /* lapsed already: removed at once */
    listing(&l, "ip", "192.0.2.7", "add", "manual", now + 2000);  /* manual with an until: never removed */
    listing(&l, "user", "gone", "add", "rate", now + 3000);
    listing(&l, "user", "gone", "remove", "manual", -1); /* an operator lifted it early */
    publish(&l, "earlier.jsonl");

    guards[0] = start_guard("-X guard.window.ms=60000 -X guard.ip.max=5 -X guard.user.max=100 -X guard.ban.ms=600000");
    long long t = ol_test_wall_ms();
    buys(&l, "bot-", 0, 6, "203.0.113.50", "bot-50", t, false);
    publish(&l, "burst.jsonl");
    json_decref(wait_for_key("ip:203.0.113.50", "add", 30000));
    stop_guard(guards[0]);

    /* a second run, same group: rereads the window, knows the ban */
    guards[1] = start_guard("-X guard.window.ms=60000 -X guard.ip.max=5 -X guard.user.max=100 -X guard.ban.ms=600000");
    cr_assert(ol_test_bg_wait_stderr(guards[1], "rereading ", 1, 10000) >= 1, "no rewind:\n%s",
              ol_test_bg_stderr(guards[1]));
    /* one more request from the bot while it is banned: no second ban */
    buy(&l, "bot-6", "203.0.113.50", "bot-50", ol_test_wall_ms());
    publish(&l, "more.jsonl");
    /* wait past the lapse of 203.0.113.99 and 192.0.2.7 */
    json_decref(wait_for_key("ip:203.0.113.99", "remove", 30000));
    while (ol_test_wall_ms() < now + 6000)
        usleep(200 * 1000);
    json_t *all = blacklist();
    json_t *adds = select_records(all, "add", "rate");
    char *keys = keys_of(adds);
    cr_assert_str_eq(keys, "ip:203.0.113.50 ip:203.0.113.99 user:gone user:old-bot", "rate adds: %s", keys);
    free(keys);
    json_decref(adds);
    json_t *removes = select_records(all, "remove", NULL);
    keys = keys_of(removes);
    /* gone: the operator's remove; 203.0.113.99 and old-bot: guard's; not the manual entry */
    cr_assert_str_eq(keys, "ip:203.0.113.99 user:gone user:old-bot", "removes: %s\nfirst run:\n%s\nsecond run:\n%s",
                     keys, ol_test_bg_stderr(guards[0]), ol_test_bg_stderr(guards[1]));
    size_t i;
    json_t *rec;
    json_array_foreach(removes, i, rec) {
        if (strcmp(json_string_value(json_object_get(rec, "key")), "user:gone"))
            expect_change(rec, json_string_value(json_object_get(rec, "key")), "remove", NULL);
    }
    free(keys);
    json_decref(removes);
    json_decref(all);
    stop_guard(guards[1]);
    const char *err = ol_test_bg_stderr(guards[1]);
    cr_assert(strstr(err, "undecodable, 0 bans,"), "the second run banned again:\n%s", err);
}

/* The options of the restart tests' guard: 5 requests of an IP in a minute. */
#define RESTART_OPTIONS                                                                                    \
    "-X log.level=debug -X guard.window.ms=60000 -X guard.ip.max=5 -X guard.user.max=100 -X guard.ban.ms=" \
    "600000"

/* The first run of the restart tests: topics of tag, guards[0] with
 * RESTART_OPTIONS, and n requests of user from ip (buys from 0) published
 * as first.jsonl, which it commits. Returns their time t. */
static long long first_run(lines_t *l, const char *tag, const char *stem, int n, const char *ip, const char *user,
                           bool spread) {
    use_topics(tag);
    guards[0] = start_guard(RESTART_OPTIONS);
    long long t = ol_test_wall_ms();
    buys(l, stem, 0, n, ip, user, t, spread);
    publish(l, "first.jsonl");
    char judged[64];
    snprintf(judged, sizeof(judged), "; %d requests judged so far", n);
    cr_assert(ol_test_bg_wait_stderr(guards[0], judged, 1, 20000) == 1, "the first run did not commit %d requests:\n%s",
              n, ol_test_bg_stderr(guards[0]));
    return t;
}

Test(guard, a_restart_keeps_counting_the_window_it_was_in) {
    lines_t l = {0};
    long long t = first_run(&l, "window", "a-", 3, "203.0.113.77", "slow-bot", true);
    stop_guard(guards[0]);

    /* 3 more in the same window after a restart: 6 > 5 only if the first 3
     * are counted again */
    guards[1] = start_guard(RESTART_OPTIONS);
    buys(&l, "a-", 3, 6, "203.0.113.77", "slow-bot", t, true);
    publish(&l, "second.jsonl");
    json_t *all = wait_for("add", "rate", 1, 20000);
    json_t *adds = select_records(all, "add", "rate");
    char *keys = keys_of(adds);
    cr_assert_str_eq(keys, "ip:203.0.113.77", "rate adds: %s\nsecond run:\n%s", keys, ol_test_bg_stderr(guards[1]));
    char until[40];
    format_ms(t + 5 + 600000, until, sizeof(until));
    expect_change(json_array_get(adds, 0), "ip:203.0.113.77", "add", until);
    free(keys);
    json_decref(adds);
    json_decref(all);
    stop_guard(guards[1]);
    cr_assert(strstr(ol_test_bg_stderr(guards[0]), "undecodable, 0 bans,"), "the first run banned:\n%s",
              ol_test_bg_stderr(guards[0]));
}

Test(guard, refuses_a_bad_ignore_list) {
    /* refused before Kafka is contacted: no topics needed */
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X guard.ignore=10.0.0.1 guard");
    cr_assert_eq(rc, 2, "exit %d\n%s", rc, err);
    cr_assert(strstr(err, "guard.ignore") && strstr(err, "10.0.0.1"), "%s", err);
    free(out);
    free(err);
    rc = ol_test_orderlogf(&out, &err, fixed_args(), "guard extra");
    cr_assert_eq(rc, 2, "exit %d\n%s", rc, err);
    free(out);
    free(err);
}

Test(guard, a_ban_survives_a_kill_at_any_point) {
    lines_t l = {0};
    long long t = first_run(&l, "kill", "k-", 5, "203.0.113.88", "killed-bot", false);
    buy(&l, "k-5", "203.0.113.88", "killed-bot", t);
    publish(&l, "second.jsonl");
    /* killed right after it decided the ban: delivered or not, committed or not */
    cr_assert(ol_test_bg_wait_stderr(guards[0], "ban ip 203.0.113.88", 1, 20000) == 1, "no ban:\n%s",
              ol_test_bg_stderr(guards[0]));
    ol_test_bg_signal(guards[0], SIGKILL);
    ol_test_bg_wait(guards[0], 10000);

    guards[1] = start_guard(RESTART_OPTIONS);
    json_t *all = wait_for_key("ip:203.0.113.88", "add", 20000);
    json_t *adds = select_records(all, "add", "rate");
    cr_assert(json_array_size(adds) >= 1 && json_array_size(adds) <= 2, "%zu adds after the kill\nsecond run:\n%s",
              json_array_size(adds), ol_test_bg_stderr(guards[1]));
    char until[40];
    format_ms(t + 600000, until, sizeof(until));
    size_t i;
    json_t *rec;
    json_array_foreach(adds, i, rec) {
        expect_change(rec, "ip:203.0.113.88", "add", until);
    }
    json_decref(adds);
    json_decref(all);
    stop_guard(guards[1]);
}

/* Produces a publish-format line (no headers, as another tool would) to the
 * blacklist topic inside a transaction left open; returns the producer,
 * whose transaction the caller commits. */
static rd_kafka_t *open_transaction(const char *key, const char *line) {
    char errstr[512], topic[256], txn_id[200];
    snprintf(topic, sizeof(topic), "%sblacklist", prefix);
    snprintf(txn_id, sizeof(txn_id), "%stest-operator", prefix);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[] = {"bootstrap.servers",
                           ol_test_kafka_bootstrap(),
                           "transactional.id",
                           txn_id,
                           "partitioner",
                           "murmur2_random",
                           "log_level",
                           "3",
                           NULL};
    for (const char *const *p = props; *p; p += 2)
        cr_assert_eq(rd_kafka_conf_set(conf, p[0], p[1], errstr, sizeof(errstr)), RD_KAFKA_CONF_OK, "%s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert(rk, "%s", errstr);
    rd_kafka_error_t *error = rd_kafka_init_transactions(rk, 30000);
    cr_assert(!error, "init_transactions: %s", error ? rd_kafka_error_string(error) : "");
    cr_assert(!(error = rd_kafka_begin_transaction(rk)), "begin_transaction: %s", rd_kafka_error_string(error));
    rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                                RD_KAFKA_V_VALUE((void *)line, strlen(line)),
                                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    cr_assert(!err, "produce: %s", rd_kafka_err2str(err));
    rd_kafka_flush(rk, 10000); /* written, not yet committed: read_committed readers stop before it */
    return rk;
}

Test(guard, puts_back_a_manual_entry_its_ban_overtook) {
    use_topics("race");
    guards[0] = start_guard("-X guard.window.ms=60000 -X guard.ip.max=5 -X guard.user.max=100 -X guard.ban.ms=3000");
    /* an operator lists the IP while guard, not seeing it yet, bans it */
    rd_kafka_t *op = open_transaction("ip:203.0.113.44",
                                      "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":"
                                      "\"203.0.113.44\",\"action\":\"add\",\"reason\":\"manual\",\"until\":null}}");
    lines_t l = {0};
    long long t = ol_test_wall_ms();
    buys(&l, "race-", 0, 6, "203.0.113.44", "racer", t, false);
    publish(&l, "burst.jsonl");
    cr_assert(ol_test_bg_wait_stderr(guards[0], "ban ip 203.0.113.44", 1, 20000) == 1, "no ban:\n%s",
              ol_test_bg_stderr(guards[0]));
    usleep(500 * 1000); /* its add is written after the operator's */
    rd_kafka_error_t *error = rd_kafka_commit_transaction(op, 30000);
    cr_assert(!error, "commit_transaction: %s", error ? rd_kafka_error_string(error) : "");
    rd_kafka_destroy(op);
    cr_assert(ol_test_bg_wait_stderr(guards[0], "restored the manual entry of ip 203.0.113.44", 1, 20000) == 1,
              "not restored:\n%s", ol_test_bg_stderr(guards[0]));
    /* past the rate ban's until: the manual entry is still the latest, nothing removed it */
    while (ol_test_wall_ms() < t + 3000 + 2000)
        usleep(200 * 1000);
    json_t *all = blacklist();
    size_t n = json_array_size(all);
    cr_assert_eq(n, 3, "blacklist holds %zu records, expected the operator's, guard's add, the restore", n);
    cr_assert_str_eq(data_str(json_array_get(all, 0), "reason"), "manual");
    char until[40];
    format_ms(t + 3000, until, sizeof(until));
    expect_change(json_array_get(all, 1), "ip:203.0.113.44", "add", until);
    json_t *last = json_array_get(all, 2);
    cr_assert_str_eq(json_string_value(json_object_get(last, "key")), "ip:203.0.113.44");
    cr_assert_str_eq(data_str(last, "action"), "add");
    cr_assert_str_eq(data_str(last, "reason"), "manual");
    cr_assert(json_is_null(json_object_get(json_object_get(last, "data"), "until")), "the restore has an until");
    json_decref(all);
    stop_guard(guards[0]);
}
