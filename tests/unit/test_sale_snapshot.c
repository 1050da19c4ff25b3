/* Snapshots of the rules engine (ol_sale_snapshot, ol_sale_load): a sale
 * loaded from a snapshot decides every later command as the sale it was
 * taken from, on random command streams; bytes that are no snapshot, or of
 * another window, are refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/base/strbuf.h"
#include "common/domain/blacklist.h"
#include "common/domain/sale.h"

#define TTL 3000
#define WINDOW 10000
#define T0 1795359845000LL

static char err[256];

static bool same_str(const char *a, const char *b) {
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static void expect_same_fact(const ol_fact_t *a, const ol_fact_t *b, int step) {
    cr_assert_eq(a->kind, b->kind, "step %d: %s vs %s", step, ol_fact_kind_name(a->kind), ol_fact_kind_name(b->kind));
    cr_assert(same_str(a->request_id, b->request_id) && same_str(a->hold_id, b->hold_id) &&
                  same_str(a->user_id, b->user_id) && same_str(a->sku, b->sku) && same_str(a->order_id, b->order_id),
              "step %d: ids differ", step);
    cr_assert(a->quantity == b->quantity && a->expires_at == b->expires_at && a->total == b->total &&
                  a->version == b->version && a->at_ms == b->at_ms,
              "step %d: numbers differ", step);
    if (a->kind == OL_FACT_BUY_REJECTED)
        cr_assert_eq(a->reject, b->reject, "step %d: %s vs %s", step, ol_reject_name(a->reject),
                     ol_reject_name(b->reject));
    if (a->kind == OL_FACT_HOLD_RELEASED)
        cr_assert_eq(a->release, b->release, "step %d", step);
    if (a->kind == OL_FACT_CHECKOUT_REJECTED)
        cr_assert_eq(a->hold_reject, b->hold_reject, "step %d", step);
}

/* A command of a random stream, decided by both sales; their facts must be
 * the same, and are applied to each. */
typedef struct twin_s {
    ol_sale_t *a, *b;
    ol_arena_t *arena;
    unsigned seed;
    int64_t now;
    int nreq;
} twin_t;

static int rnd(twin_t *t, int n) {
    return (int)(rand_r(&t->seed) % (unsigned)n);
}

static int decide(twin_t *t, ol_sale_t *s, int op, int x, ol_fact_t *out) {
    char req[32], user[16], sku[16], hold[40];
    snprintf(req, sizeof(req), "req-%d", op == 0 ? t->nreq : x % (t->nreq + 1));
    snprintf(hold, sizeof(hold), "h-req-%d", x % (t->nreq + 1));
    snprintf(user, sizeof(user), "U%d", x % 13);
    snprintf(sku, sizeof(sku), "SKU%d", x % 4);
    const char *r = ol_arena_strndup(t->arena, req, strlen(req));
    const char *h = ol_arena_strndup(t->arena, hold, strlen(hold));
    const char *u = ol_arena_strndup(t->arena, user, strlen(user));
    const char *k = ol_arena_strndup(t->arena, sku, strlen(sku));
    switch (op) {
    case 0:
    case 1: { /* a new request, or a retry of an old one (maybe past the window) */
        ol_buy_cmd_t c = {.request_id = r,
                          .client_ip = "",
                          .user_id = u,
                          .sku = k,
                          .user_level = x % 3,
                          .quantity = 1 + x % 3,
                          .at_ms = t->now - (op == 1 ? (x % 3) * 6000 : 0)};
        return ol_sale_buy(s, &c, t->arena, out, err, sizeof(err));
    }
    case 2:
    case 3: {
        ol_hold_cmd_t c = {.request_id = r, .hold_id = h, .user_id = u, .sku = k, .at_ms = t->now};
        return op == 2 ? ol_sale_checkout(s, &c, t->arena, out, err, sizeof(err))
                       : ol_sale_cancel(s, &c, t->arena, out, err, sizeof(err));
    }
    case 4: {
        ol_sku_synced_cmd_t c = {.sku = k, .stock = x % 40, .version = x % 7, .at_ms = t->now};
        return ol_sale_sku_synced(s, &c, out, err, sizeof(err));
    }
    case 5: {
        ol_stock_adjusted_cmd_t c = {.sku = k, .delta = x % 9 - 3, .at_ms = t->now};
        return ol_sale_stock_adjusted(s, &c, out, err, sizeof(err));
    }
    case 6: {
        ol_sku_removed_cmd_t c = {.sku = k, .at_ms = t->now};
        return x % 5 ? 0 : ol_sale_sku_removed(s, &c, out, err, sizeof(err));
    }
    default: {
        ol_level_limit_t levels[2] = {{1, 1 + x % 4}, {2, x % 3}};
        ol_policy_cmd_t c = {.sku = k, .policy = {x % 2, x % 5, 2, levels}, .at_ms = t->now};
        return ol_sale_policy_set(s, &c, t->arena, out, err, sizeof(err));
    }
    }
}

static void step(twin_t *t, int i) {
    ol_arena_reset(t->arena);
    t->now += rnd(t, 400) + (rnd(t, 50) == 0 ? 3 * WINDOW : 0);
    ol_fact_t fa[16], fb[16];
    size_t na = ol_sale_expire(t->a, t->now, t->arena, fa, 16), nb = ol_sale_expire(t->b, t->now, t->arena, fb, 16);
    cr_assert_eq(na, nb, "step %d: %zu vs %zu expired", i, na, nb);
    for (size_t j = 0; j < na; j++) {
        expect_same_fact(&fa[j], &fb[j], i);
        cr_assert_eq(ol_sale_apply(t->a, &fa[j], err, sizeof(err)), OL_ERR_OK, "%s", err);
        cr_assert_eq(ol_sale_apply(t->b, &fb[j], err, sizeof(err)), OL_ERR_OK, "%s", err);
    }
    int op = rnd(t, 10), x = rnd(t, 1 << 20);
    op = op >= 8 ? (op == 8 ? 0 : 1) : op; /* more buys */
    int ka = decide(t, t->a, op, x, &fa[0]), kb = decide(t, t->b, op, x, &fb[0]);
    cr_assert_eq(ka, kb, "step %d: op %d: %d vs %d facts", i, op, ka, kb);
    if (op == 0)
        t->nreq++;
    if (ka == 1) {
        expect_same_fact(&fa[0], &fb[0], i);
        cr_assert_eq(ol_sale_apply(t->a, &fa[0], err, sizeof(err)), OL_ERR_OK, "%s", err);
        cr_assert_eq(ol_sale_apply(t->b, &fb[0], err, sizeof(err)), OL_ERR_OK, "%s", err);
    }
}

/* b := a loaded from its snapshot. */
static void reload(twin_t *t) {
    ol_strbuf_t buf = OL_STRBUF_INIT;
    ol_sale_snapshot(t->a, &buf);
    ol_sale_destroy(t->b);
    t->b = ol_sale_load(buf.p, buf.len, TTL, WINDOW, NULL, err, sizeof(err));
    cr_assert(t->b, "load: %s", err);
    cr_assert_eq(ol_sale_open_holds(t->b), ol_sale_open_holds(t->a));
    cr_assert_eq(ol_sale_remembered(t->b), ol_sale_remembered(t->a));
    cr_assert_eq(ol_sale_stream_time(t->b), ol_sale_stream_time(t->a));
    cr_assert_eq(ol_sale_next_expiry(t->b), ol_sale_next_expiry(t->a));
    /* a snapshot of the loaded sale loads too, to the same size */
    ol_strbuf_t again = OL_STRBUF_INIT;
    ol_sale_snapshot(t->b, &again);
    cr_assert_eq(again.len, buf.len);
    ol_strbuf_free(&again);
    ol_strbuf_free(&buf);
}

Test(sale_snapshot, a_loaded_sale_decides_as_the_original_on_random_streams) {
    for (unsigned seed = 1; seed <= 20; seed++) {
        twin_t t = {.a = ol_sale_new(TTL, WINDOW, NULL),
                    .b = ol_sale_new(TTL, WINDOW, NULL),
                    .arena = ol_arena_new(0),
                    .seed = seed,
                    .now = T0};
        for (int i = 0; i < 3000; i++) {
            if (i % 250 == 0)
                reload(&t);
            step(&t, i);
        }
        ol_stock_t sa, sb;
        for (int k = 0; k < 4; k++) {
            char sku[16];
            snprintf(sku, sizeof(sku), "SKU%d", k);
            cr_assert_eq(ol_sale_stock(t.a, sku, &sa), ol_sale_stock(t.b, sku, &sb));
            cr_assert(sa.total == sb.total && sa.held == sb.held && sa.sold == sb.sold && sa.version == sb.version &&
                          sa.on_sale == sb.on_sale && sa.removed == sb.removed,
                      "seed %u: %s differs", seed, sku);
            for (int u = 0; u < 13; u++) {
                char user[16];
                snprintf(user, sizeof(user), "U%d", u);
                ol_units_t ua = ol_sale_units(t.a, user, sku), ub = ol_sale_units(t.b, user, sku);
                cr_assert(ua.held == ub.held && ua.bought == ub.bought, "seed %u: %s %s differs", seed, user, sku);
            }
        }
        ol_sale_destroy(t.a);
        ol_sale_destroy(t.b);
        ol_arena_destroy(t.arena);
    }
}

Test(sale_snapshot, refuses_bytes_that_are_no_snapshot_or_of_another_window) {
    ol_sale_t *s = ol_sale_new(TTL, WINDOW, NULL);
    ol_arena_t *arena = ol_arena_new(0);
    ol_fact_t f;
    ol_sku_synced_cmd_t sc = {.sku = "SKU1", .stock = 10, .version = 1, .at_ms = T0};
    cr_assert_eq(ol_sale_sku_synced(s, &sc, &f, err, sizeof(err)), 1);
    cr_assert_eq(ol_sale_apply(s, &f, err, sizeof(err)), OL_ERR_OK);
    ol_buy_cmd_t bc = {.request_id = "r1", .client_ip = "", .user_id = "U1", .sku = "SKU1", .quantity = 2, .at_ms = T0};
    cr_assert_eq(ol_sale_buy(s, &bc, arena, &f, err, sizeof(err)), 1);
    cr_assert_eq(ol_sale_apply(s, &f, err, sizeof(err)), OL_ERR_OK);
    ol_strbuf_t buf = OL_STRBUF_INIT;
    ol_sale_snapshot(s, &buf);
    for (size_t cut = 0; cut < buf.len; cut++)
        cr_expect_null(ol_sale_load(buf.p, cut, TTL, WINDOW, NULL, err, sizeof(err)), "cut at %zu", cut);
    cr_expect_null(ol_sale_load(buf.p, buf.len, TTL, WINDOW * 2, NULL, err, sizeof(err)));
    cr_expect(strstr(err, "window"), "%s", err);
    ol_sale_t *back = ol_sale_load(buf.p, buf.len, TTL, WINDOW, NULL, err, sizeof(err));
    cr_assert(back, "%s", err);
    cr_expect(ol_sale_decided(back, "r1"));
    cr_expect_eq(ol_sale_units(back, "U1", "SKU1").held, 2);
    ol_sale_destroy(back);
    ol_strbuf_free(&buf);
    ol_sale_destroy(s);
    ol_arena_destroy(arena);
}
