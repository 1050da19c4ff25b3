/* orderlog decide against the real broker: every rule end to end with its
 * reason and message, checkout / cancel / expiry, a retried request decided
 * once, poison records to the dlq, and SIGKILL at random moments during a
 * sale: afterwards every request has exactly one committed decision, no SKU
 * is oversold, no user is above the limit of their level.
 *
 * Decisions are read back from sale-events with `orderlog tail` (which
 * reads committed transactions only), independently of any projection.
 * Set OL_TEST_SEED=<n> to replay the kill moments of a failed run. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define PARTITIONS 3

static char prefix[128];
static char dir[512];

static void setup(void) {
    ol_test_tmpdir(dir, sizeof(dir));
}

/* The options of every orderlog run here: the test's prefix and partitions. */
static const char *fixed_args(void) {
    static char args[256];
    snprintf(args, sizeof(args), "-X topic.prefix=%s -X topic.partitions=%d", *prefix ? prefix : "it_decide_none_",
             PARTITIONS);
    return args;
}

static void teardown(void) {
    const char *groups[] = {"decide", "decide-restore", NULL};
    ol_test_cleanup(fixed_args(), prefix, groups, NULL, dir);
}

TestSuite(decide, .init = setup, .fini = teardown, .timeout = 600);

static void use_topics(const char *tag) {
    snprintf(prefix, sizeof(prefix), "it_decide_%s_%ld_", tag, (long)getpid());
    free(ol_test_orderlogf_ok(fixed_args(), "topics create"));
}

/* Writes lines to a file of the scratch directory and publishes it. */
static void publish(const char *name, const char *lines) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ol_test_write_file(path, lines, strlen(lines));
    char *q = ol_test_shell_quote(path);
    free(ol_test_orderlogf_ok(fixed_args(), "publish %s", q));
    free(q);
}

static ol_test_bg_t *decide_bg(const char *extra) {
    return ol_test_orderlog_bg("-X topic.prefix=%s -X topic.partitions=%d %s decide", prefix, PARTITIONS,
                               extra ? extra : "");
}

/* Every record of a topic (committed ones), as a JSON array of tail's lines;
 * records that are not events (the dlq's) are listed with an "error". */
static json_t *read_topic(const char *topic) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "tail %s --from beginning", topic);
    cr_assert(rc == 0 || (rc == 1 && strstr(err, "could not be decoded")), "orderlog tail %s: exit %d\n%s", topic, rc,
              err);
    free(err);
    json_t *all = json_array();
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        cr_assert(j, "tail printed a line that is not JSON: %s", line);
        json_array_append_new(all, j);
    }
    free(out);
    return all;
}

static const char *type_of(json_t *rec) {
    return json_string_value(json_object_get(rec, "type"));
}

static json_t *data_of(json_t *rec) {
    return json_object_get(rec, "data");
}

static const char *dstr(json_t *rec, const char *field) {
    const char *s = json_string_value(json_object_get(data_of(rec), field));
    return s ? s : "";
}

static long long dint(json_t *rec, const char *field) {
    return json_integer_value(json_object_get(data_of(rec), field));
}

static int count_type(json_t *recs, const char *type) {
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) n += !strcmp(type_of(r), type);
    return n;
}

/* Waits (bounded) until sale-events holds at least n records of type. */
static json_t *wait_facts(const char *type, int n, int timeout_ms, ol_test_bg_t *bg) {
    long long end = ol_test_now_ms() + timeout_ms;
    for (;;) {
        json_t *recs = read_topic("sale-events");
        int have = count_type(recs, type);
        if (have >= n)
            return recs;
        json_decref(recs);
        cr_assert(ol_test_now_ms() < end, "%d %s after %d ms, expected %d\ndecide stderr:\n%s", have, type, timeout_ms,
                  n, bg ? ol_test_bg_stderr(bg) : "");
        cr_assert(!bg || ol_test_bg_wait(bg, 500) == -1, "decide exited\n%s", ol_test_bg_stderr(bg));
    }
}

/* The decision (BuyAccepted or BuyRejected) of a request; fails unless
 * there is exactly one. */
static json_t *decision(json_t *recs, const char *request_id) {
    json_t *found = NULL, *r;
    size_t i;
    int n = 0;
    json_array_foreach(recs, i, r) {
        const char *t = type_of(r);
        if ((!strcmp(t, "BuyAccepted") || !strcmp(t, "BuyRejected")) && !strcmp(dstr(r, "request_id"), request_id)) {
            found = r;
            n++;
        }
    }
    cr_assert_eq(n, 1, "request %s has %d decisions", request_id, n);
    return found;
}

static void stop_ok(ol_test_bg_t *bg) {
    ol_test_bg_stop_ok(bg, "decide", 30000);
    ol_test_bg_free(bg);
}

#define BUY(id, user, level, ip, sku, qty)                                                                    \
    "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"" id "\",\"session_id\":\"s\",\"client_ip\":\"" ip \
    "\",\"user_id\":\"" user "\",\"user_level\":" #level ",\"sku\":\"" sku "\",\"quantity\":" #qty "}}\n"
#define HOLDCMD(type, id, hold, user, sku)                                                                    \
    "{\"type\":\"" type "\",\"data\":{\"request_id\":\"" id "\",\"hold_id\":\"" hold "\",\"user_id\":\"" user \
    "\",\"sku\":\"" sku "\"}}\n"

static const char *catalog =
    "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"A\",\"platform\":\"p\",\"title\":\"A\",\"price\":1500,"
    "\"currency\":\"CNY\",\"stock\":3,\"version\":1}}\n"
    "{\"type\":\"PurchasePolicySet\",\"data\":{\"sku\":\"A\",\"min_level\":1,\"default_limit\":2}}\n"
    "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"B\",\"platform\":\"p\",\"title\":\"B\",\"price\":700,"
    "\"currency\":\"CNY\",\"stock\":10,\"version\":1}}\n"
    "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"203.0.113.9\",\"action\":\"add\","
    "\"reason\":\"manual\",\"until\":null}}\n";

static void assert_rejected(json_t *recs, const char *id, const char *reason, const char *message) {
    json_t *d = decision(recs, id);
    cr_assert_str_eq(type_of(d), "BuyRejected", "%s: %s", id, json_dumps(d, 0));
    cr_assert_str_eq(dstr(d, "reason"), reason, "%s", id);
    cr_assert_str_eq(dstr(d, "message"), message, "%s", id);
}

Test(decide, judges_every_rule_in_order_with_its_reason_and_message) {
    use_topics("rules");
    publish("catalog.jsonl", catalog);
    publish("buys.jsonl", BUY("r1", "u1", 0, "10.0.0.1", "A", 1) /* level 0 < min 1 */
            BUY("r2", "u2", 1, "10.0.0.2", "A", 3)               /* above the limit of 2 */
            BUY("r3", "u2", 1, "10.0.0.2", "A", 2)               /* accepted: 1 left */
            BUY("r4", "u3", 2, "10.0.0.3", "A", 2)               /* sold out */
            BUY("r5", "u4", 9, "203.0.113.9", "B", 1)            /* blacklisted IP */
            BUY("r6", "u5", 1, "10.0.0.5", "C", 1)               /* unknown SKU */
            BUY("r7", "u3", 2, "10.0.0.3", "A", 1)               /* accepted: the last unit */
            BUY("r3", "u2", 1, "10.0.0.2", "A", 2)               /* a retry of r3: decided once */
            BUY("r8", "u6", 0, "203.0.113.9", "A", 5)            /* blacklist comes before every rule */
            HOLDCMD("CheckoutRequested", "c1", "h-r3", "u2", "A") HOLDCMD("CheckoutRequested", "c2", "h-r7", "u9", "A")
                HOLDCMD("HoldCancelled", "c3", "h-r7", "u3", "A") HOLDCMD("CheckoutRequested", "c4", "h-r7", "u3", "A")
                    BUY("r9", "u7", 1, "10.0.0.7", "A", 1)); /* the cancelled unit is free again */
    ol_test_bg_t *bg = decide_bg(NULL);
    json_t *recs = wait_facts("BuyAccepted", 3, 60000, bg);
    recs = (json_decref(recs), wait_facts("BuyRejected", 6, 30000, bg));
    stop_ok(bg);

    assert_rejected(recs, "r1", "level", "You can not buy this goods!");
    assert_rejected(recs, "r2", "limit", "You can not buy this goods!");
    assert_rejected(recs, "r4", "sold_out", "The goods is sold out!");
    assert_rejected(recs, "r5", "blacklisted", "Bad guy! Bye-Bye!");
    assert_rejected(recs, "r6", "unknown_sku", "The goods is sold out!");
    assert_rejected(recs, "r8", "blacklisted", "Bad guy! Bye-Bye!");
    json_t *a = decision(recs, "r3");
    cr_assert_str_eq(type_of(a), "BuyAccepted");
    cr_assert_str_eq(dstr(a, "hold_id"), "h-r3");
    cr_assert_eq(dint(a, "quantity"), 2);
    cr_assert_str_eq(type_of(decision(recs, "r7")), "BuyAccepted");
    cr_assert_str_eq(type_of(decision(recs, "r9")), "BuyAccepted");
    cr_assert_eq(count_type(recs, "BuyAccepted") + count_type(recs, "BuyRejected"), 9, "one decision per request");

    /* c1 converts r3's hold; c2 is another user's; c3 cancels r7's; c4 comes after the cancel */
    json_t *r;
    size_t i;
    int converted = 0, released = 0, refused = 0;
    json_array_foreach(recs, i, r) {
        if (!strcmp(type_of(r), "HoldConverted")) {
            converted++;
            cr_assert_str_eq(dstr(r, "hold_id"), "h-r3");
            cr_assert_str_eq(dstr(r, "order_id"), "o-h-r3");
            cr_assert_eq(dint(r, "quantity"), 2);
        } else if (!strcmp(type_of(r), "HoldReleased")) {
            released++;
            cr_assert_str_eq(dstr(r, "hold_id"), "h-r7");
            cr_assert_str_eq(dstr(r, "reason"), "cancelled");
        } else if (!strcmp(type_of(r), "CheckoutRejected")) {
            refused++;
            if (!strcmp(dstr(r, "request_id"), "c2"))
                cr_assert_str_eq(dstr(r, "reason"), "not_owner");
            else {
                cr_assert_str_eq(dstr(r, "request_id"), "c4");
                cr_assert_str_eq(dstr(r, "reason"), "released");
            }
        }
    }
    cr_assert_eq(converted, 1);
    cr_assert_eq(released, 1);
    cr_assert_eq(refused, 2);
    /* stock and policy changes are facts too, with what a restore needs */
    int stock = 0;
    json_array_foreach(recs, i, r) if (!strcmp(type_of(r), "StockChanged") && !strcmp(dstr(r, "sku"), "A")) {
        stock++;
        cr_assert_eq(dint(r, "total"), 3);
        cr_assert_eq(dint(r, "version"), 1);
        cr_assert_eq(dint(r, "price"), 1500);
        cr_assert_str_eq(dstr(r, "currency"), "CNY");
    }
    cr_assert_eq(stock, 1);
    cr_assert_eq(count_type(recs, "PolicyChanged"), 1);
    json_decref(recs);

    /* the converted hold is an order on the orders topic */
    json_t *orders = read_topic("orders");
    cr_assert_eq(json_array_size(orders), 1);
    json_t *o = json_array_get(orders, 0);
    cr_assert_str_eq(type_of(o), "OrderPlaced");
    cr_assert_str_eq(dstr(o, "order_id"), "o-h-r3");
    cr_assert_str_eq(dstr(o, "user_id"), "u2");
    cr_assert_str_eq(dstr(o, "source"), "flash_sale");
    cr_assert_eq(dint(o, "total_amount"), 3000);
    cr_assert_str_eq(dstr(o, "currency"), "CNY");
    json_decref(orders);
}

Test(decide, expires_holds_after_the_ttl_and_a_restart_keeps_the_state) {
    use_topics("expiry");
    publish("catalog.jsonl", catalog);
    publish("buys1.jsonl", BUY("e1", "u1", 1, "10.0.0.1", "B", 6) BUY("e2", "u2", 1, "10.0.0.2", "A", 2));
    ol_test_bg_t *bg = decide_bg("-X hold.ttl.ms=1500");
    json_t *recs = wait_facts("HoldReleased", 2, 60000, bg);
    json_t *r;
    size_t i;
    json_array_foreach(recs, i, r) if (!strcmp(type_of(r), "HoldReleased")) {
        cr_assert_str_eq(dstr(r, "reason"), "expired");
    }
    json_decref(recs);
    stop_ok(bg);

    /* after a restart the state comes back from sale-events: the expired
     * units are free, a retried request is not decided again, and u2 may
     * buy 2 units of A again (released units no longer count to the limit) */
    publish("buys2.jsonl", BUY("e3", "u3", 1, "10.0.0.3", "B", 10) BUY("e1", "u1", 1, "10.0.0.1", "B", 6)
                               BUY("e4", "u2", 1, "10.0.0.2", "A", 2) BUY("e5", "u5", 1, "10.0.0.5", "B", 1));
    bg = decide_bg("-X hold.ttl.ms=600000");
    recs = wait_facts("BuyRejected", 1, 60000, bg);
    recs = (json_decref(recs), wait_facts("BuyAccepted", 4, 60000, bg));
    stop_ok(bg);
    cr_assert_str_eq(type_of(decision(recs, "e3")), "BuyAccepted", "all 10 units of B are free again");
    cr_assert_str_eq(type_of(decision(recs, "e4")), "BuyAccepted");
    assert_rejected(recs, "e5", "sold_out", "The goods is sold out!");
    cr_assert_eq(count_type(recs, "BuyAccepted") + count_type(recs, "BuyRejected"), 5);
    json_decref(recs);
}

Test(decide, sends_poison_to_the_dlq_and_goes_on) {
    use_topics("poison");
    publish("catalog.jsonl", catalog);
    char topic[256];
    snprintf(topic, sizeof(topic), "%sbuy-requests", prefix);
    const char *garbage = "\x01\x02 not an event";
    ol_test_kafka_produce(topic, -1, "A", 1, garbage, strlen(garbage), NULL);
    publish("p1.jsonl", BUY("p1", "u1", 1, "10.0.0.1", "B", 1));
    /* a record in the publish format whose data misses every field */
    const char *empty = "{\"type\":\"BuyRequested\",\"data\":{}}";
    ol_test_kafka_produce(topic, -1, "B", 1, empty, strlen(empty), NULL);
    publish("good.jsonl", BUY("p2", "u2", 1, "10.0.0.2", "B", 1));
    ol_test_bg_t *bg = decide_bg(NULL);
    json_t *recs = wait_facts("BuyAccepted", 2, 60000, bg);
    json_decref(recs);
    long long end = ol_test_now_ms() + 30000;
    json_t *dlq = NULL;
    for (;;) {
        dlq = read_topic("dlq");
        if (json_array_size(dlq) >= 2 || ol_test_now_ms() > end)
            break;
        json_decref(dlq);
        ol_test_bg_wait(bg, 500);
    }
    stop_ok(bg);
    cr_assert_eq(json_array_size(dlq), 2, "%s", json_dumps(dlq, 0));
    size_t i;
    json_t *r;
    json_array_foreach(dlq, i, r) {
        json_t *h = json_object_get(r, "headers");
        cr_assert_str_eq(json_string_value(json_object_get(h, "dlq_topic")), topic);
        cr_assert(json_string_value(json_object_get(h, "dlq_error")));
        cr_assert(strlen(json_string_value(json_object_get(h, "dlq_error"))) > 5);
    }
    json_decref(dlq);
}

/* ---- kill -9 during a sale ---------------------------------------------- */

typedef struct req_s {
    char id[32], user[16], sku[12];
    int level, qty;
} req_t;

/* The limit of a level for the sale's policies (see the catalog below). */
static int limit_of(const char *sku, int level) {
    if (strcmp(sku, "HOT"))
        return 3;
    return level >= 5 ? 3 : level >= 3 ? 2 : 1;
}

/* The sum of sale-events' end offsets: grows with every transaction. */
static long long sale_end(void) {
    char topic[256];
    snprintf(topic, sizeof(topic), "%ssale-events", prefix);
    long long sum = 0;
    for (int p = 0; p < PARTITIONS; p++)
        sum += ol_test_kafka_end_offset(topic, p);
    return sum;
}

Test(decide, kill9_during_a_sale_leaves_one_decision_per_request_and_no_oversell) {
    unsigned seed = ol_test_seed("test_decide");
    use_topics("kill9");
    enum { N = 80000, SKUS = 20, HOT_STOCK = 500, SKU_STOCK = 300 };
    /* catalog: HOT (500 units, min level 1, limits 1 / 2 from level 3 / 3 from level 5) and 20 SKUs */
    size_t cap = 1 << 16, len = 0;
    char *cat = malloc(cap);
    len += (size_t)snprintf(cat + len, cap - len,
                            "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"HOT\",\"platform\":\"p\",\"title\":\"t\","
                            "\"price\":9900,\"currency\":\"CNY\",\"stock\":%d,\"version\":1}}\n"
                            "{\"type\":\"PurchasePolicySet\",\"data\":{\"sku\":\"HOT\",\"min_level\":1,"
                            "\"default_limit\":1,\"level_limits\":[{\"level\":3,\"limit\":2},{\"level\":5,\"limit\":3}]"
                            "}}\n",
                            HOT_STOCK);
    for (int s = 0; s < SKUS; s++)
        len +=
            (size_t)snprintf(cat + len, cap - len,
                             "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"S%02d\",\"platform\":\"p\",\"title\":\"t\","
                             "\"price\":100,\"currency\":\"CNY\",\"stock\":%d,\"version\":1}}\n"
                             "{\"type\":\"PurchasePolicySet\",\"data\":{\"sku\":\"S%02d\",\"min_level\":0,"
                             "\"default_limit\":3}}\n",
                             s, SKU_STOCK, s);
    publish("catalog.jsonl", cat);
    free(cat);

    req_t *reqs = calloc(N, sizeof(*reqs));
    char *buys = malloc((size_t)N * 200);
    len = 0;
    for (int i = 0; i < N; i++) {
        req_t *q = &reqs[i];
        int user = rand() % 8000;
        snprintf(q->id, sizeof(q->id), "k%u-%d", seed, i);
        snprintf(q->user, sizeof(q->user), "U%d", user);
        q->level = user % 6;
        if (rand() % 2)
            snprintf(q->sku, sizeof(q->sku), "HOT");
        else
            snprintf(q->sku, sizeof(q->sku), "S%02d", rand() % SKUS);
        q->qty = 1 + rand() % 2;
        len += (size_t)sprintf(buys + len,
                               "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"%s\",\"session_id\":\"s\","
                               "\"client_ip\":\"10.1.%d.%d\",\"user_id\":\"%s\",\"user_level\":%d,\"sku\":\"%s\","
                               "\"quantity\":%d}}\n",
                               q->id, user / 256, user % 256, q->user, q->level, q->sku, q->qty);
    }
    publish("buys.jsonl", buys);
    free(buys);

    /* small transactions, so that kills land inside many of them; a
     * snapshot of a partition's state in nearly every one of them, so that
     * kills land inside snapshots too and restores start from them */
    const char *extra = "-X decide.batch.events=200 -X hold.ttl.ms=3600000 -X decide.snapshot.facts=200 "
                        "-X decide.snapshot.chunk.bytes=65536";
    enum { KILLS = 6 };
    int mid_sale = 0, last = 0, from_snapshot = 0;
    for (int k = 0; k < KILLS && last < N; k++) {
        ol_test_bg_t *bg = decide_bg(extra);
        int ready = ol_test_bg_wait_stderr(bg, "restored", 2, 60000);
        cr_assert(ready >= 2, "kill %d: decide did not restore its partitions\n%s", k, ol_test_bg_stderr(bg));
        from_snapshot += strstr(ol_test_bg_stderr(bg), " loaded (") != NULL;
        /* from its first transaction on, so that the kill lands in full flow
         * (its transactions were fenced before it restored: their abort
         * markers are in already) */
        long long end_before = sale_end();
        long long until = ol_test_now_ms() + 60000;
        while (sale_end() <= end_before) {
            cr_assert(ol_test_now_ms() < until, "kill %d: no progress in 60 s\n%s", k, ol_test_bg_stderr(bg));
            cr_assert_eq(ol_test_bg_wait(bg, 20), -1, "kill %d: decide exited\n%s", k, ol_test_bg_stderr(bg));
        }
        int delay = rand() % 400;
        int rc = ol_test_bg_wait(bg, delay > 0 ? delay : 1);
        cr_assert_eq(rc, -1, "kill %d: decide exited (%d) by itself\n%s", k, rc, ol_test_bg_stderr(bg));
        ol_test_bg_signal(bg, SIGKILL);
        cr_assert_eq(ol_test_bg_wait(bg, 10000), 128 + SIGKILL);
        ol_test_bg_free(bg);
        json_t *now = read_topic("sale-events");
        int decided = count_type(now, "BuyAccepted") + count_type(now, "BuyRejected");
        json_decref(now);
        cr_log_info("kill %d after %d ms: %d of %d decided", k, delay, decided, N);
        fprintf(stderr, "test_decide: kill %d after %d ms: %d of %d decided\n", k, delay, decided, N);
        mid_sale += decided > last && decided < N;
        last = decided;
    }
    cr_assert(mid_sale >= 3, "only %d kills landed while the sale went on: the test proves little", mid_sale);
    cr_assert(from_snapshot >= 3, "only %d restarts restored from a snapshot", from_snapshot);
    ol_test_bg_t *bg = decide_bg(extra);
    json_t *recs = NULL;
    long long end = ol_test_now_ms() + 180000;
    for (;;) {
        recs = read_topic("sale-events");
        int decided = count_type(recs, "BuyAccepted") + count_type(recs, "BuyRejected");
        if (decided >= N)
            break;
        json_decref(recs);
        cr_assert(ol_test_now_ms() < end, "only %d of %d requests decided\n%s", decided, N, ol_test_bg_stderr(bg));
        cr_assert_eq(ol_test_bg_wait(bg, 1000), -1, "decide exited\n%s", ol_test_bg_stderr(bg));
    }
    /* nothing more comes: give it a moment, then read again */
    ol_test_bg_wait(bg, 2000);
    stop_ok(bg);
    json_decref(recs);
    recs = read_topic("sale-events");

    /* exactly one decision per request, for the requests published only */
    json_t *seen = json_object();
    json_t *held = json_object(); /* "user|sku" -> units accepted */
    long long hot_units = 0, sku_units[SKUS] = {0};
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *t = type_of(r);
        if (strcmp(t, "BuyAccepted") && strcmp(t, "BuyRejected"))
            continue;
        const char *id = dstr(r, "request_id");
        cr_assert(!json_object_get(seen, id), "request %s decided twice", id);
        json_object_set_new(seen, id, json_true());
        if (!strcmp(t, "BuyAccepted")) {
            const char *sku = dstr(r, "sku");
            long long q = dint(r, "quantity");
            if (!strcmp(sku, "HOT"))
                hot_units += q;
            else
                sku_units[atoi(sku + 1)] += q;
            char key[64];
            snprintf(key, sizeof(key), "%s|%s", dstr(r, "user_id"), sku);
            json_object_set_new(held, key, json_integer(json_integer_value(json_object_get(held, key)) + q));
        }
    }
    cr_assert_eq(json_object_size(seen), N, "%zu of %d requests decided", json_object_size(seen), N);
    for (int k = 0; k < N; k++)
        cr_assert(json_object_get(seen, reqs[k].id), "request %s has no decision", reqs[k].id);
    /* demand is far above the stock: every unit is held, none more */
    cr_assert_eq(hot_units, HOT_STOCK, "HOT: %lld units held of %d", hot_units, HOT_STOCK);
    for (int s = 0; s < SKUS; s++)
        cr_assert(sku_units[s] <= SKU_STOCK, "S%02d oversold: %lld of %d", s, sku_units[s], SKU_STOCK);
    /* nobody above the limit of their level */
    for (int k = 0; k < N; k++) {
        char key[64];
        snprintf(key, sizeof(key), "%s|%s", reqs[k].user, reqs[k].sku);
        long long units = json_integer_value(json_object_get(held, key));
        cr_assert(units <= limit_of(reqs[k].sku, reqs[k].level), "%s holds %lld units of %s at level %d", reqs[k].user,
                  units, reqs[k].sku, reqs[k].level);
    }
    cr_assert_eq(count_type(recs, "HoldReleased"), 0, "no hold expires within an hour");
    json_decref(seen);
    json_decref(held);
    json_decref(recs);
    free(reqs);
}

/* Two processes with one decide.instance (a mistake of deployment): each
 * fences the other (static membership, transactional ids). The one fenced
 * again after it took over once exits 1 naming the instance, never sits at
 * 0 decisions/s; the other goes on deciding. */
Test(decide, a_second_process_with_the_same_instance_ends_the_fenced_one) {
    use_topics("twins");
    publish("catalog.jsonl", catalog);
    publish("buys1.jsonl", BUY("t1", "u1", 1, "10.0.0.1", "B", 1));
    const char *extra = "-X decide.workers=1 -X decide.instance=twin";
    ol_test_bg_t *first = decide_bg(extra);
    json_t *recs = wait_facts("BuyAccepted", 1, 60000, first);
    json_decref(recs);
    ol_test_bg_t *second = decide_bg(extra), *bgs[2] = {first, second};
    long long deadline = ol_test_now_ms() + 240000;
    int ended = -1, rc = -1;
    while (ended < 0 && ol_test_now_ms() < deadline)
        for (int i = 0; i < 2 && ended < 0; i++)
            if ((rc = ol_test_bg_wait(bgs[i], 250)) != -1)
                ended = i;
    cr_assert(ended >= 0, "neither process ended within 240 s\nfirst:\n%s\nsecond:\n%s", ol_test_bg_stderr(first),
              ol_test_bg_stderr(second));
    const char *err = ol_test_bg_stderr(bgs[ended]);
    cr_assert_eq(rc, 1, "the fenced decide exited %d\n%s", rc, err);
    cr_assert(strstr(err, "is another decide running with decide.instance=twin"), "no clear message:\n%s", err);
    char *line = ol_test_find_line(err, "\"level\":\"error\"", "decide: worker 0:", NULL);
    cr_assert(line, "no one-line error in the log naming the worker:\n%s", err);
    free(line);

    /* the other one still decides */
    ol_test_bg_t *other = bgs[1 - ended];
    cr_assert_eq(ol_test_bg_wait(other, 0), -1, "both exited\n%s", ol_test_bg_stderr(other));
    publish("buys2.jsonl", BUY("t2", "u2", 1, "10.0.0.2", "B", 1));
    recs = wait_facts("BuyAccepted", 2, 120000, other);
    cr_assert_str_eq(type_of(decision(recs, "t2")), "BuyAccepted");
    json_decref(recs);
    ol_test_bg_free(bgs[ended]);
    stop_ok(other);
}

/* ---- the idempotency window ---------------------------------------------- */

/* Facts of one request id: of type (NULL: any), and too_old or not. */
static int count_request(json_t *recs, const char *type, const char *request_id, bool too_old) {
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *t = type_of(r);
        if ((strcmp(t, "BuyAccepted") && strcmp(t, "BuyRejected")) || (type && strcmp(t, type)) ||
            strcmp(dstr(r, "request_id"), request_id))
            continue;
        n += !strcmp(dstr(r, "reason"), "too_old") == too_old;
    }
    return n;
}

/* Appends a BuyRequested of 1 unit of B with its requested_at to buf. */
static void buy_at(char *buf, size_t size, const char *id, const char *user, long long at) {
    size_t len = strlen(buf);
    snprintf(buf + len, size - len,
             "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"%s\",\"session_id\":\"s\",\"client_ip\":"
             "\"10.0.0.1\",\"user_id\":\"%s\",\"user_level\":1,\"sku\":\"B\",\"quantity\":1,\"requested_at\":%lld}}\n",
             id, user, at);
}

/* Waits until sale-events holds at least n facts of request_id (too_old or
 * not), with the whole log then. */
static json_t *wait_request(const char *request_id, bool too_old, int n, ol_test_bg_t *bg) {
    long long end = ol_test_now_ms() + 90000;
    for (;;) {
        json_t *recs = read_topic("sale-events");
        if (count_request(recs, NULL, request_id, too_old) >= n)
            return recs;
        json_decref(recs);
        cr_assert(ol_test_now_ms() < end, "%s: fewer than %d %s facts after 90 s\n%s", request_id, n,
                  too_old ? "too_old" : "decision", ol_test_bg_stderr(bg));
        cr_assert_eq(ol_test_bg_wait(bg, 300), -1, "decide exited\n%s", ol_test_bg_stderr(bg));
    }
}

Test(decide, a_retry_older_than_the_window_is_refused_too_old_and_never_decided_twice_even_after_kill9) {
    enum { WINDOW_MS = 5000 };
    use_topics("window");
    publish("catalog.jsonl", catalog);
    char extra[128], buf[1024];
    snprintf(extra, sizeof(extra), "-X decide.idempotency.window.ms=%d", WINDOW_MS);
    ol_test_bg_t *bg = decide_bg(extra);
    json_decref(wait_facts("StockChanged", 2, 60000, bg)); /* deciding */

    /* w1 is decided; once the partition's stream time has passed w1's time
     * by the window (a StockAdjusted of B, judged at decide's clock), the
     * same record sent again is refused too_old, not decided again */
    long long t1 = ol_test_wall_ms();
    buf[0] = '\0';
    buy_at(buf, sizeof(buf), "w1", "u1", t1);
    publish("w1.jsonl", buf);
    json_decref(wait_request("w1", false, 1, bg));
    while (ol_test_wall_ms() <= t1 + WINDOW_MS + 200)
        ol_test_bg_wait(bg, (int)(t1 + WINDOW_MS + 201 - ol_test_wall_ms()));
    publish("tick.jsonl", "{\"type\":\"StockAdjusted\",\"data\":{\"sku\":\"B\",\"delta\":0,\"reason\":\"tick\"}}\n");
    json_decref(wait_facts("StockChanged", 3, 60000, bg));
    buf[0] = '\0';
    buy_at(buf, sizeof(buf), "w1", "u1", t1);
    publish("w1-again.jsonl", buf);
    /* w2, at the stream time: a retry inside the window gets nothing */
    long long t2 = ol_test_wall_ms();
    buf[0] = '\0';
    buy_at(buf, sizeof(buf), "w2", "u2", t2);
    buy_at(buf, sizeof(buf), "w2", "u2", t2);
    /* a requested_at far ahead of decide's clock goes to the dlq */
    buy_at(buf, sizeof(buf), "w3", "u3", t2 + 600000);
    publish("w2.jsonl", buf);
    json_t *recs = wait_request("w1", true, 1, bg);
    json_decref(recs);
    recs = wait_request("w2", false, 1, bg);
    json_t *r;
    size_t i;
    json_array_foreach(recs, i, r) if (!strcmp(type_of(r), "BuyRejected") && !strcmp(dstr(r, "request_id"), "w1")) {
        cr_assert_str_eq(dstr(r, "reason"), "too_old");
        cr_assert_str_eq(dstr(r, "message"), "The request has expired, please try again!");
    }
    json_decref(recs);

    /* kill -9 and restart: the state restored from sale-events judges the
     * same way */
    ol_test_bg_signal(bg, SIGKILL);
    ol_test_bg_wait(bg, 10000);
    ol_test_bg_free(bg);
    bg = decide_bg(extra);
    buf[0] = '\0';
    buy_at(buf, sizeof(buf), "w1", "u1", t1);
    buy_at(buf, sizeof(buf), "w2", "u2", t2);
    buy_at(buf, sizeof(buf), "w4", "u4", t2);
    publish("after-kill.jsonl", buf);
    recs = wait_request("w4", false, 1, bg); /* after w1 and w2 in the log */
    json_decref(recs);
    recs = wait_request("w1", true, 2, bg);
    ol_test_bg_wait_stderr(bg, "request ids remembered", 1, 10000);
    cr_assert(strstr(ol_test_bg_stderr(bg), "request ids remembered"), "%s", ol_test_bg_stderr(bg));
    stop_ok(bg);
    cr_assert_eq(count_request(recs, "BuyAccepted", "w1", false), 1, "w1 decided once");
    cr_assert_eq(count_request(recs, NULL, "w1", false), 1, "w1: no other decision");
    cr_assert_eq(count_request(recs, NULL, "w1", true), 2, "w1 refused too_old each time it came back");
    cr_assert_eq(count_request(recs, "BuyAccepted", "w2", false), 1);
    cr_assert_eq(count_request(recs, NULL, "w2", false) + count_request(recs, NULL, "w2", true), 1,
                 "w2 retried inside the window, before and after the kill: one decision");
    cr_assert_eq(count_request(recs, NULL, "w3", false) + count_request(recs, NULL, "w3", true), 0);
    json_decref(recs);
    json_t *dlq = read_topic("dlq");
    cr_assert_eq(json_array_size(dlq), 1, "%s", json_dumps(dlq, 0));
    const char *why =
        json_string_value(json_object_get(json_object_get(json_array_get(dlq, 0), "headers"), "dlq_error"));
    cr_assert(why && strstr(why, "ahead of decide's clock"), "%s", why ? why : "(no dlq_error)");
    json_decref(dlq);
}
