/* The projection's rules (consumers/project.c) on rows in memory: no
 * broker, no database. Each event goes through the same rules a batch
 * runs (ol_project_bulk_apply_event), and the row images are read back. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/base/json.h"
#include "common/domain/schema.h"
#include "consumers/project.h"

#define T0 1795359845000LL

static ol_project_bulk_t *bulk;
static ol_arena_t *arena;
static char rejected[512];

static void setup(void) {
    char errstr[256];
    cr_assert_eq(ol_schema_init(errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    bulk = ol_project_bulk_new(0);
    arena = ol_arena_new(0);
}

static void teardown(void) {
    ol_project_bulk_destroy(bulk);
    ol_arena_destroy(arena);
}

TestSuite(project_rules, .init = setup, .fini = teardown);

/* Applies event name with data (JSON) at partition 0, offset. */
static void event(const char *name, int64_t offset, const char *json) {
    const ol_event_type_t *et = ol_schema_find(name);
    cr_assert(et, "no event type %s", name);
    ol_json_t *data;
    char errstr[256];
    cr_assert_eq(ol_json_parse(arena, json, strlen(json), &data, NULL, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    ol_project_bulk_apply_event(bulk, et, data, 0, offset, rejected, sizeof(rejected));
}

static const char *order(const char *id, const char *column) {
    return ol_project_bulk_value(bulk, "orders", id, column);
}

/* The order's columns hold these values: {column, value} pairs, a NULL
 * column last. */
static void expect_order(const char *id, const char *const (*want)[2]) {
    for (; (*want)[0]; want++) {
        const char *got = order(id, (*want)[0]);
        cr_assert(got, "orders[%s].%s is NULL, expected \"%s\"", id, (*want)[0], (*want)[1]);
        cr_assert_str_eq(got, (*want)[1], "orders[%s].%s", id, (*want)[0]);
    }
}

static void placed(const char *id, int64_t offset) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"order_id\": \"%s\", \"user_id\": \"u1\", \"source\": \"web\", \"lines\": [{\"sku\": \"A1\", "
             "\"quantity\": 2, \"unit_price\": 250}], \"total_amount\": 500, \"currency\": \"EUR\", \"placed_at\": "
             "%lld}",
             id, (long long)T0);
    event("OrderPlaced", offset, json);
    cr_assert_str_empty(rejected);
}

Test(project_rules, order_placed_creates_the_row_with_its_position) {
    placed("o1", 7);
    expect_order("o1", (const char *const[][2]){{"status", "placed"},
                                                {"total_amount", "500"},
                                                {"paid_amount", "0"},
                                                {"last_partition", "0"},
                                                {"last_offset", "7"},
                                                {NULL, NULL}});
}

Test(project_rules, a_payment_counts_once_per_payment_id) {
    placed("o1", 1);
    const char *paid = "{\"order_id\": \"o1\", \"payment_id\": \"p1\", \"amount\": 300, \"currency\": \"EUR\", "
                       "\"paid_at\": 1795359846000}";
    event("OrderPaid", 2, paid);
    event("OrderPaid", 3, paid); /* the same payment, published twice */
    cr_assert_str_empty(rejected);
    /* last_offset 2: the second OrderPaid changed nothing */
    expect_order(
        "o1",
        (const char *const[][2]){
            {"paid_amount", "300"}, {"status", "paid"}, {"payment_id", "p1"}, {"last_offset", "2"}, {NULL, NULL}});
}

Test(project_rules, an_event_at_or_below_the_rows_position_is_a_replay) {
    placed("o1", 1);
    event("OrderCancelled", 5, "{\"order_id\": \"o1\", \"reason\": \"changed mind\", \"cancelled_at\": 1795359847000}");
    event("OrderShipped", 4,
          "{\"order_id\": \"o1\", \"carrier\": \"dhl\", \"tracking_no\": \"T1\", \"shipped_at\": 1795359848000}");
    cr_assert_str_empty(rejected);
    cr_assert_null(order("o1", "carrier"));
    expect_order("o1", (const char *const[][2]){{"status", "cancelled"}, {"last_offset", "5"}, {NULL, NULL}});
}

Test(project_rules, an_event_about_a_missing_order_is_rejected_with_why) {
    event("OrderShipped", 1,
          "{\"order_id\": \"o9\", \"carrier\": \"dhl\", \"tracking_no\": \"T1\", \"shipped_at\": 1795359848000}");
    cr_assert_str_eq(rejected, "order \"o9\" does not exist");
    cr_assert_null(order("o9", "status"));
}

Test(project_rules, a_snapshot_applies_only_above_the_stored_version) {
#define SYNCED(status, total, version)                                                                                \
    "{\"order_id\": \"o1\", \"platform\": \"shopx\", \"shop_id\": \"s1\", \"user_id\": \"u1\", \"status\": \"" status \
    "\", \"lines\": [], \"total_amount\": " total ", \"currency\": \"EUR\", \"version\": " version                    \
    ", \"updated_at\": 1795359849000}"
    const char *v2 = SYNCED("shipped", "900", "2"), *v1 = SYNCED("paid", "100", "1");
    event("OrderSynced", 1, v2);
    event("OrderSynced", 2, v1); /* older, arrived later */
    cr_assert_str_empty(rejected);
    expect_order(
        "o1",
        (const char *const[][2]){
            {"version", "2"}, {"status", "shipped"}, {"total_amount", "900"}, {"source", "external"}, {NULL, NULL}});
}
