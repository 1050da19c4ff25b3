/* Keys where the contract puts them (docs/events.md, placement), against the
 * real broker and PostgreSQL:
 * - a flash-sale order written by decide and paid and shipped by another
 *   producer (orderlog publish, as a Java service would) stays whole when
 *   the projector reads it all from a backlog: every OrderPlaced sits on the
 *   murmur2 partition of its order id (decide once used CRC32, and the
 *   payments went to the dlq);
 * - a record on another partition than its key's, or without a key, is
 *   never applied silently: decide and project send it to the dlq with
 *   stage "placement" and a reason naming the key and both partitions.
 *
 * The partition a key belongs on is computed by the kit's own murmur2
 * (Kafka's Utils.murmur2), not orderlog's. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OL_PROJECT_KIT_ONLY
#include "test_project.c"

static void teardown(void) {
    if (*kit_prefix) {
        char groups[2][200];
        snprintf(groups[0], sizeof(groups[0]), "%sdecide", kit_prefix);
        snprintf(groups[1], sizeof(groups[1]), "%sdecide-restore", kit_prefix);
        const char *g[] = {groups[0], groups[1]};
        ol_test_kafka_delete_groups(g, 2);
    }
    kit_teardown();
}

TestSuite(placement, .init = kit_setup, .fini = teardown, .timeout = 600);

static ol_test_bg_t *decide_bg(void) {
    cr_assert(kit_nbgs < KIT_MAX);
    ol_test_bg_t *bg = ol_test_orderlog_bg("%s -X decide.workers=1 decide", kit_fixed_args());
    kit_bgs[kit_nbgs++] = bg;
    return bg;
}

static void decide_stop(ol_test_bg_t *bg) {
    ol_test_bg_stop_ok(bg, "decide", 30000);
    kit_bg_free(bg);
}

static int count_type(json_t *recs, const char *type) {
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *t = json_string_value(json_object_get(r, "type"));
        n += t && !strcmp(t, type);
    }
    return n;
}

/* Waits (bounded) until sale-events holds n records of type; the records. */
static json_t *wait_facts(const char *type, int n, ol_test_bg_t *bg) {
    long long end = ol_test_now_ms() + 60000;
    for (;;) {
        json_t *recs = tail_records("sale-events");
        if (count_type(recs, type) >= n)
            return recs;
        json_decref(recs);
        cr_assert(ol_test_now_ms() < end, "fewer than %d %s after 60 s\ndecide:\n%s", n, type, ol_test_bg_stderr(bg));
        cr_assert(ol_test_bg_wait(bg, 300) == -1, "decide exited\n%s", ol_test_bg_stderr(bg));
    }
}

/* Waits (bounded) until the dlq holds n records; them. */
static json_t *wait_dlq(int n, ol_test_bg_t *bg) {
    long long end = ol_test_now_ms() + 60000;
    for (;;) {
        json_t *recs = tail_records("dlq");
        if ((int)json_array_size(recs) >= n)
            return recs;
        json_decref(recs);
        cr_assert(ol_test_now_ms() < end, "fewer than %d dlq records after 60 s\n%s", n,
                  bg ? ol_test_bg_stderr(bg) : "");
        kit_sleep_ms(300);
    }
}

static void publish_text(const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", kit_dir, name);
    ol_test_write_file(path, text, strlen(text));
    kit_publish(path);
}

static const char *hdr(json_t *rec, const char *name) {
    const char *v = json_string_value(json_object_get(json_object_get(rec, "headers"), name));
    return v ? v : "";
}

#define ORDERS 60

/* One line of fmt (a string literal) for each order i = 1..ORDERS, given
 * i, i, i and its sku number (1..3). */
#define PER_ORDER(fp, fmt)               \
    for (int i_ = 1; i_ <= ORDERS; i_++) \
    fprintf(fp, fmt, i_, i_, i_, i_ % 3 + 1)

Test(placement, flash_sale_orders_keep_their_payments_through_a_projector_backlog) {
    const char *db = kit_use_db("fsorders", "placement_fs");
    char line[512], *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    for (int s = 1; s <= 3; s++)
        fprintf(fp,
                "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"FS-%d\",\"platform\":\"shop\",\"title\":\"t\","
                "\"price\":1500,\"currency\":\"CNY\",\"stock\":1000,\"version\":1}}\n",
                s);
    PER_ORDER(fp, "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"fs-r%d\",\"session_id\":\"s\",\"client_ip\":"
                  "\"10.1.0.%d\",\"user_id\":\"fs-u%d\",\"user_level\":1,\"sku\":\"FS-%d\",\"quantity\":2}}\n");
    fclose(fp);
    publish_text("buys.jsonl", text);
    free(text);
    ol_test_bg_t *bg = decide_bg();
    json_decref(wait_facts("BuyAccepted", ORDERS, bg));
    fp = open_memstream(&text, &len);
    PER_ORDER(fp, "{\"type\":\"CheckoutRequested\",\"data\":{\"request_id\":\"fs-c%d\",\"hold_id\":\"h-fs-r%d\","
                  "\"user_id\":\"fs-u%d\",\"sku\":\"FS-%d\"}}\n");
    fclose(fp);
    publish_text("checkouts.jsonl", text);
    free(text);
    json_t *facts = wait_facts("HoldConverted", ORDERS, bg);
    decide_stop(bg);

    /* the payment service pays and ships every order (keyed by order id) */
    fp = open_memstream(&text, &len);
    size_t i;
    json_t *r;
    json_array_foreach(facts, i, r) {
        if (strcmp(json_string_value(json_object_get(r, "type")), "HoldConverted"))
            continue;
        const char *order = json_string_value(json_object_get(json_object_get(r, "data"), "order_id"));
        fprintf(fp,
                "{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"%s\",\"payment_id\":\"pay-%s\",\"amount\":3000,"
                "\"currency\":\"CNY\",\"paid_at\":\"2026-12-01T00:00:00Z\"}}\n"
                "{\"type\":\"OrderShipped\",\"data\":{\"order_id\":\"%s\",\"carrier\":\"c\",\"tracking_no\":\"t\","
                "\"shipped_at\":\"2026-12-01T01:00:00Z\"}}\n",
                order, order, order);
    }
    fclose(fp);
    json_decref(facts);
    publish_text("payments.jsonl", text);
    free(text);

    /* every record of orders on its key's murmur2 partition */
    json_t *orders = tail_records("orders");
    cr_assert_eq(json_array_size(orders), 3 * ORDERS);
    json_array_foreach(orders, i, r) {
        const char *key = json_string_value(json_object_get(r, "key"));
        int part = (int)json_integer_value(json_object_get(r, "partition"));
        cr_assert_eq(part, kit_partition(key), "%s of %s on partition %d, murmur2 says %d",
                     json_string_value(json_object_get(r, "type")), key, part, kit_partition(key));
    }
    json_decref(orders);

    /* a projector started now reads it all as a backlog */
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_expect_eq(s.dlq, 0, "%lld records went to the dlq", s.dlq);
    cr_expect_eq(kit_dlq_count(), 0);
    snprintf(line, sizeof(line),
             "select count(*) from orderlog.orders where source = 'flash_sale' and status = 'shipped' and "
             "paid_amount = 3000");
    cr_expect_eq(ol_test_pg_query_int(db, line), ORDERS);
}

/* A record straight to partition p of topic (publish format, no headers). */
static long long produce_at(const char *short_topic, int p, const char *key, const char *value) {
    char topic[256];
    kit_topic(short_topic, topic, sizeof(topic));
    return ol_test_kafka_produce(topic, p, key, key ? strlen(key) : 0, value, strlen(value), NULL);
}

static int other_partition(const char *key) {
    return (kit_partition(key) + 1) % KIT_PARTITIONS;
}

/* The dlq record whose original was at partition p, offset o of topic. */
static json_t *dlq_of(json_t *dlq, const char *short_topic, int p, long long o) {
    char topic[256];
    kit_topic(short_topic, topic, sizeof(topic));
    json_t *r = dlq_record(dlq, topic, p, o);
    cr_assert(r, "no dlq record for %s[%d]@%lld", topic, p, o);
    return r;
}

static void assert_misplaced(json_t *r, const char *key, int on, int belongs) {
    char want[256];
    cr_expect_str_eq(hdr(r, "dlq_stage"), "placement");
    snprintf(want, sizeof(want), "key \"%s\" is on partition %d", key, on);
    cr_expect(strstr(hdr(r, "dlq_error"), want), "dlq_error: %s", hdr(r, "dlq_error"));
    snprintf(want, sizeof(want), "belongs on partition %d (murmur2", belongs);
    cr_expect(strstr(hdr(r, "dlq_error"), want), "dlq_error: %s", hdr(r, "dlq_error"));
}

Test(placement, decide_dead_letters_inputs_on_another_partition) {
    kit_use("decide");
    /* a catalog entry written with another partitioner (CRC32, as Python's
     * confluent-kafka does by default), and one written right */
    const char *sku1 =
        "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"MP-1\",\"platform\":\"shop\",\"title\":\"t\",\"price\":100,"
        "\"currency\":\"CNY\",\"stock\":10,\"version\":1}}";
    int p1 = other_partition("MP-1");
    long long o1 = produce_at("skus", p1, "MP-1", sku1);
    publish_text("sku2.jsonl", "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"MP-2\",\"platform\":\"shop\",\"title\":"
                               "\"t\",\"price\":100,\"currency\":\"CNY\",\"stock\":10,\"version\":1}}\n");
    /* a buy on the wrong partition, one without a key, two right ones */
#define MP_BUY                                                                                                        \
    "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"mp-r%d\",\"session_id\":\"s\",\"client_ip\":\"10.2.0.1\"," \
    "\"user_id\":\"mp-u%d\",\"user_level\":1,\"sku\":\"%s\",\"quantity\":1}}"
    char v[512];
    snprintf(v, sizeof(v), MP_BUY, 1, 1, "MP-2");
    int p2 = other_partition("MP-2");
    long long o2 = produce_at("buy-requests", p2, "MP-2", v);
    snprintf(v, sizeof(v), MP_BUY, 2, 2, "MP-2");
    long long o3 = produce_at("buy-requests", 0, NULL, v);
    publish_text("buys.jsonl",
                 "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"mp-r3\",\"session_id\":\"s\",\"client_ip\":"
                 "\"10.2.0.1\",\"user_id\":\"mp-u3\",\"user_level\":1,\"sku\":\"MP-2\",\"quantity\":1}}\n"
                 "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"mp-r4\",\"session_id\":\"s\",\"client_ip\":"
                 "\"10.2.0.1\",\"user_id\":\"mp-u4\",\"user_level\":1,\"sku\":\"MP-1\",\"quantity\":1}}\n");
    ol_test_bg_t *bg = decide_bg();
    json_decref(wait_facts("BuyRejected", 1, bg));
    json_decref(wait_facts("BuyAccepted", 1, bg));
    json_t *dlq = wait_dlq(3, bg);
    decide_stop(bg);
    json_t *facts = tail_records("sale-events");
    /* only the two placed right were decided: MP-2 accepted, MP-1 unknown */
    cr_expect_eq(count_type(facts, "BuyAccepted") + count_type(facts, "BuyRejected"), 2);
    size_t i;
    json_t *r;
    json_array_foreach(facts, i, r) {
        json_t *d = json_object_get(r, "data");
        const char *req = json_string_value(json_object_get(d, "request_id"));
        if (!req)
            continue;
        cr_expect(!strcmp(req, "mp-r3") || !strcmp(req, "mp-r4"), "%s was decided", req);
        if (!strcmp(req, "mp-r4"))
            cr_expect_str_eq(json_string_value(json_object_get(d, "reason")), "unknown_sku");
    }
    cr_assert_eq(json_array_size(dlq), 3);
    assert_misplaced(dlq_of(dlq, "skus", p1, o1), "MP-1", p1, kit_partition("MP-1"));
    assert_misplaced(dlq_of(dlq, "buy-requests", p2, o2), "MP-2", p2, kit_partition("MP-2"));
    r = dlq_of(dlq, "buy-requests", 0, o3);
    cr_expect_str_eq(hdr(r, "dlq_stage"), "placement");
    cr_expect(strstr(hdr(r, "dlq_error"), "has no key"), "%s", hdr(r, "dlq_error"));
    json_decref(facts);
    json_decref(dlq);
}

Test(placement, project_dead_letters_records_on_another_partition) {
    const char *db = kit_use_db("project", "placement_project");
    publish_text("placed.jsonl",
                 "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"PL-1\",\"user_id\":\"u\",\"source\":\"external\","
                 "\"lines\":[{\"sku\":\"S\",\"quantity\":1,\"unit_price\":500}],\"total_amount\":500,"
                 "\"currency\":\"CNY\",\"placed_at\":\"2026-12-01T00:00:00Z\"}}\n");
    const char *paid = "{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"PL-1\",\"payment_id\":\"pay-1\","
                       "\"amount\":500,\"currency\":\"CNY\",\"paid_at\":\"2026-12-01T00:01:00Z\"}}";
    int p = other_partition("PL-1");
    long long o = produce_at("orders", p, "PL-1", paid);
    /* on its key's partition, but the key is another order's */
    int p2 = kit_partition("PL-2");
    long long o2 = produce_at("orders", p2, "PL-2", paid);
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_expect_eq(s.dlq, 2);
    cr_expect_eq(ol_test_pg_query_int(db, "select paid_amount from orderlog.orders where order_id = 'PL-1'"), 0);
    json_t *dlq = tail_records("dlq");
    cr_assert_eq(json_array_size(dlq), 2);
    assert_misplaced(dlq_of(dlq, "orders", p, o), "PL-1", p, kit_partition("PL-1"));
    json_t *r = dlq_of(dlq, "orders", p2, o2);
    cr_expect_str_eq(hdr(r, "dlq_stage"), "placement");
    cr_expect(strstr(hdr(r, "dlq_error"), "record key \"PL-2\" is not the key of its OrderPaid (\"PL-1\""), "%s",
              hdr(r, "dlq_error"));
    json_decref(dlq);
}
