/* The sale-events mapping (common/domain/sale_events.h): every fact kind
 * written as its schema's event and read back the same, through Avro. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/sale_events.h"
#include "common/domain/schema.h"

static ol_arena_t *arena;
static ol_codec_t *codec;

static void setup(void) {
    codec = ol_codec_new();
    char errstr[256];
    cr_assert_eq(ol_schema_init(errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    arena = ol_arena_new(0);
}

static void teardown(void) {
    ol_arena_destroy(arena);
    ol_codec_destroy(codec);
}

TestSuite(sale_events, .init = setup, .fini = teardown);

/* data through the Avro of the event `name`, back in the JSON form. */
static const ol_json_t *through_avro(const char *name, const ol_json_t *data) {
    char errstr[512];
    const ol_event_type_t *et = ol_schema_find(name);
    cr_assert(et, "no schema %s", name);
    const void *buf;
    size_t len;
    cr_assert_eq(ol_codec_encode(codec, et, data, 1, &buf, &len, errstr, sizeof(errstr)), OL_ERR_OK, "%s: %s", name,
                 errstr);
    void *copy = ol_arena_alloc(arena, len + 1);
    memcpy(copy, buf, len);
    avro_value_t *value;
    cr_assert_eq(ol_codec_decode(codec, et, et->version, copy, len, &value, errstr, sizeof(errstr)), OL_ERR_OK,
                 "%s: %s", name, errstr);
    return ol_codec_to_dom(et, value, arena);
}

static void expect_str(const char *got, const char *want, const char *what) {
    if (!want)
        cr_expect_null(got, "%s: %s, expected none", what, got);
    else
        cr_expect(got && !strcmp(got, want), "%s: \"%s\", expected \"%s\"", what, got ? got : "(null)", want);
}

static ol_fact_t round_trip(const ol_fact_t *f, const ol_sale_price_t *price, ol_sale_price_t *price_out) {
    ol_json_t data;
    const char *name = ol_sale_events_encode(f, price, arena, &data);
    cr_assert_str_eq(name, ol_fact_kind_name(f->kind));
    ol_fact_t back;
    cr_assert(ol_sale_events_decode(name, through_avro(name, &data), arena, &back, price_out));
    cr_expect_eq(back.kind, f->kind);
    expect_str(back.request_id, f->request_id, "request_id");
    expect_str(back.hold_id, f->hold_id, "hold_id");
    expect_str(back.order_id, f->order_id, "order_id");
    expect_str(back.user_id, f->user_id, "user_id");
    expect_str(back.sku, f->sku, "sku");
    expect_str(back.message, f->message, "message");
    cr_expect_eq(back.quantity, f->quantity);
    cr_expect_eq(back.reject, f->reject);
    cr_expect_eq(back.release, f->release);
    cr_expect_eq(back.hold_reject, f->hold_reject);
    cr_expect_eq(back.op, f->op);
    cr_expect_eq(back.cause, f->cause);
    cr_expect_eq(back.expires_at, f->expires_at);
    cr_expect_eq(back.total, f->total);
    cr_expect_eq(back.version, f->version);
    cr_expect_eq(back.at_ms, f->at_ms);
    return back;
}

/* One fact of each kind but PolicyChanged (below, with its levels), a
 * fact a line. */
/* clang-format off */
static const ol_fact_t facts[] = {
    {.kind = OL_FACT_BUY_ACCEPTED, .request_id = "r1", .hold_id = "h-r1", .user_id = "u1", .sku = "S1", .quantity = 2,
     .message = OL_SALE_MSG_ACCEPTED, .expires_at = 5000, .at_ms = 1000},
    {.kind = OL_FACT_BUY_REJECTED, .request_id = "r2", .user_id = "u2", .sku = "S1", .quantity = 1,
     .reject = OL_REJECT_LIMIT, .message = OL_SALE_MSG_NOT_ALLOWED, .at_ms = 1001},
    {.kind = OL_FACT_HOLD_RELEASED, .hold_id = "h-r1", .user_id = "u1", .sku = "S1", .quantity = 2,
     .release = OL_RELEASE_CANCELLED, .at_ms = 1002},
    {.kind = OL_FACT_HOLD_CONVERTED, .hold_id = "h-r3", .order_id = "o-h-r3", .user_id = "u3", .sku = "S2",
     .quantity = 1, .at_ms = 1003},
    {.kind = OL_FACT_STOCK_CHANGED, .sku = "S2", .total = 90, .cause = OL_STOCK_REMOVED, .version = 7, .at_ms = 1004},
    {.kind = OL_FACT_CHECKOUT_REJECTED, .request_id = "r4", .hold_id = "h-r9", .user_id = "u4", .sku = "S2",
     .op = OL_HOLD_OP_CANCEL, .hold_reject = OL_HOLD_REJECT_NOT_OWNER, .at_ms = 1005},
};
/* clang-format on */

Test(sale_events, reads_back_every_fact_kind_as_written) {
    for (size_t i = 0; i < sizeof(facts) / sizeof(facts[0]); i++)
        round_trip(&facts[i], NULL, NULL);
}

Test(sale_events, carries_the_price_and_the_policy_levels) {
    ol_sale_price_t price = {1999, "CNY"}, back_price;
    ol_fact_t stock = {.kind = OL_FACT_STOCK_CHANGED, .sku = "S1", .total = 5, .cause = OL_STOCK_SYNCED, .at_ms = 7};
    round_trip(&stock, &price, &back_price);
    cr_expect_eq(back_price.price, 1999);
    cr_expect_str_eq(back_price.currency, "CNY");

    ol_level_limit_t levels[] = {{1, 3}, {0, 1}};
    ol_fact_t policy = {.kind = OL_FACT_POLICY_CHANGED, .sku = "S1", .policy = {2, 5, 2, levels}, .at_ms = 8};
    ol_fact_t back = round_trip(&policy, NULL, NULL);
    cr_expect_eq(back.policy.min_level, 2);
    cr_expect_eq(back.policy.default_limit, 5);
    cr_assert_eq(back.policy.n_levels, 2);
    cr_expect_eq(back.policy.levels[0].level, 1, "levels keep their order");
    cr_expect_eq(back.policy.levels[0].limit, 3);
    cr_expect_eq(back.policy.levels[1].limit, 1);
}

Test(sale_events, makes_the_order_of_a_converted_hold) {
    const ol_fact_t f = facts[3]; /* HoldConverted: 1 unit */
    ol_sale_price_t price = {250, "CNY"};
    ol_json_t data;
    ol_sale_events_order(&f, &price, arena, &data);
    const ol_json_t *d = through_avro("OrderPlaced", &data);
    cr_expect_str_eq(ol_json_get_str(d, "order_id", ""), "o-h-r3");
    cr_expect_eq(ol_json_get_int(d, "total_amount", 0), 250);
    cr_expect_str_eq(ol_json_get_str(d, "currency", ""), "CNY");
    ol_sale_events_order(&f, NULL, arena, &data);
    d = through_avro("OrderPlaced", &data);
    cr_expect_str_eq(ol_json_get_str(d, "currency", ""), "XXX", "no price known: no currency");
}

Test(sale_events, reads_commands_and_refuses_other_events) {
    ol_json_member_t m[4];
    ol_json_member_str(&m[0], "request_id", "r1");
    ol_json_member_str(&m[1], "hold_id", "h-r1");
    ol_json_member_int(&m[2], "requested_at", 42);
    ol_json_member_str(&m[3], "sku", "S1");
    ol_json_t d = ol_json_object_of(m, 4);
    ol_sale_cmd_t c;
    cr_assert(ol_sale_events_command("HoldCancelled", &d, arena, &c));
    cr_expect_eq(c.kind, OL_SALE_CMD_CANCEL);
    cr_expect_str_eq(c.u.hold.hold_id, "h-r1");
    cr_expect_str_eq(c.u.hold.user_id, "", "a field not there reads empty");
    cr_expect_eq(c.u.hold.at_ms, 42);
    cr_expect_not(ol_sale_events_command("BuyAccepted", &d, arena, &c));
    ol_fact_t f;
    cr_expect_not(ol_sale_events_decode("BuyRequested", &d, arena, &f, NULL));
}
