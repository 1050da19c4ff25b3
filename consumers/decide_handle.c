/* decide: one command or expiry decided, its facts applied to the
 * partition's state and produced in the open transaction (the mapping to
 * events: common/domain/sale_events.h); poison records to the dlq. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/event.h"
#include "common/domain/sale_events.h"
#include "common/domain/schema.h"
#include "consumers/decide.h"

/* ---- producing inside the transaction ------------------------------------- */

ol_err_t ol_decide__produce(worker_t *w, const char *topic, int32_t partition, const char *key, size_t key_len,
                            const void *value, size_t len, rd_kafka_headers_t *hdrs, char *errstr, size_t errstr_size) {
    for (;;) {
        rd_kafka_resp_err_t err =
            hdrs ? rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                     RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, len),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END)
                 : rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                                     RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, len),
                                     RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (!err)
            return OL_ERR_OK;
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !ol_decide__stop) {
            rd_kafka_poll(w->producer, 10);
            continue;
        }
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not produce to %s: %s", topic,
                       rd_kafka_err2str(err));
    }
}

/* Encodes data (in w->arena) as an event of type `name` and produces it. */
static ol_err_t emit(worker_t *w, const char *name, ol_json_t *data, int64_t at_ms, const char *topic,
                     int32_t partition, char *errstr, size_t errstr_size) {
    const ol_event_type_t *et = ol_schema_find(name);
    OL_ASSERT(et);
    ol_event_out_t ev;
    ol_err_t err = ol_event_encode(w->codec, et, data, at_ms, w->d->source, &ev, errstr, errstr_size);
    if (err)
        return err; /* a bug of ours: the facts are checked by the engine */
    return ol_decide__produce(w, topic, partition, ev.key, strlen(ev.key), ev.payload, ev.len, ev.hdrs, errstr,
                              errstr_size);
}

/* The price of a SKU of partition p as the mapping takes it; NULL when none. */
static const ol_sale_price_t *price_of(worker_t *w, int32_t p, const char *sku, ol_sale_price_t *out) {
    const price_t *pr = ol_map_get(w->parts[p].prices, sku, strlen(sku));
    if (!pr)
        return NULL;
    *out = (ol_sale_price_t){pr->price, pr->currency};
    return out;
}

/* The fact to sale-events; a converted hold also as an OrderPlaced to orders. */
static ol_err_t emit_fact(worker_t *w, int32_t p, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    ol_sale_price_t price_buf;
    const ol_sale_price_t *price = price_of(w, p, f->sku, &price_buf);
    ol_json_t data;
    const char *name = ol_sale_events_encode(f, price, w->arena, &data);
    if (!name)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "unknown fact kind %d", (int)f->kind);
    ol_err_t err = emit(w, name, &data, f->at_ms, w->d->topic_sale, p, errstr, errstr_size);
    if (err || f->kind != OL_FACT_HOLD_CONVERTED)
        return err;
    ol_json_t order;
    ol_sale_events_order(f, price, w->arena, &order);
    return emit(w, "OrderPlaced", &order, f->at_ms, w->d->topic_orders, RD_KAFKA_PARTITION_UA, errstr, errstr_size);
}

void ol_decide__set_price(part_t *pt, const char *sku, int64_t price, const char *currency) {
    price_t *pr = ol_map_get(pt->prices, sku, strlen(sku));
    if (!pr) {
        pr = ol_xcalloc(1, sizeof(*pr));
        ol_map_put(pt->prices, sku, strlen(sku), pr);
    }
    pr->price = price;
    snprintf(pr->currency, sizeof(pr->currency), "%s", currency);
}

/* Decide, apply, produce: one fact. */
static ol_err_t settle(worker_t *w, int32_t p, const ol_fact_t *f, char *errstr, size_t errstr_size) {
    ol_err_t err = ol_sale_apply(w->parts[p].sale, f, errstr, errstr_size);
    if (err)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "the engine refused its own fact: %s", errstr);
    if (f->kind == OL_FACT_BUY_ACCEPTED || f->kind == OL_FACT_BUY_REJECTED)
        atomic_fetch_add(&w->decisions, 1);
    atomic_fetch_add(&w->facts, 1);
    w->parts[p].snap_facts++;
    return emit_fact(w, p, f, errstr, errstr_size);
}

/* ---- the dlq ------------------------------------------------------------- */

static ol_err_t to_dlq(worker_t *w, const rd_kafka_message_t *rkm, const char *stage, const char *reason) {
    rd_kafka_headers_t *h = ol_kafka_dlq_headers(rkm, rd_kafka_topic_name(rkm->rkt), stage, reason, w->d->group);
    atomic_fetch_add(&w->poison, 1);
    ol_decide__observe_dlq(w->d, stage);
    ol_log_warn("decide: %s [%" PRId32 "] offset %" PRId64 " sent to the dlq (%s): %s", rd_kafka_topic_name(rkm->rkt),
                rkm->partition, rkm->offset, stage, reason);
    char errstr[256];
    return ol_decide__produce(w, w->d->topic_dlq, RD_KAFKA_PARTITION_UA, rkm->key, rkm->key_len, rkm->payload, rkm->len,
                              h, errstr, sizeof(errstr));
}

/* ---- one command ---------------------------------------------------------- */

/* The time rules are judged at: the command's own time, but never in the
 * future (a client clock ahead must not stretch a hold). */
static int64_t judge_time(int64_t at_ms, int64_t now_ms) {
    return at_ms > 0 && at_ms < now_ms ? at_ms : now_ms;
}

/* Decides one command of partition pt: the number of facts in f (at most
 * one), -1 with why when the command breaks the engine's contract. */
static int decide_command(worker_t *w, part_t *pt, ol_sale_cmd_t *c, int64_t now_ms, ol_fact_t *f, char *why,
                          size_t why_size) {
    int n = -1;
    switch (c->kind) {
    case OL_SALE_CMD_BUY:
        c->u.buy.at_ms = judge_time(c->u.buy.at_ms, now_ms);
        pthread_rwlock_rdlock(&w->d->bl_lock);
        n = ol_sale_buy(pt->sale, &c->u.buy, w->arena, f, why, why_size);
        pthread_rwlock_unlock(&w->d->bl_lock);
        break;
    case OL_SALE_CMD_CHECKOUT:
    case OL_SALE_CMD_CANCEL:
        c->u.hold.at_ms = judge_time(c->u.hold.at_ms, now_ms);
        n = c->kind == OL_SALE_CMD_CHECKOUT ? ol_sale_checkout(pt->sale, &c->u.hold, w->arena, f, why, why_size)
                                            : ol_sale_cancel(pt->sale, &c->u.hold, w->arena, f, why, why_size);
        break;
    case OL_SALE_CMD_SKU_SYNCED:
        c->u.synced.at_ms = now_ms;
        n = ol_sale_sku_synced(pt->sale, &c->u.synced, f, why, why_size);
        if (n == 1) /* a newer snapshot: its price is the one in force */
            ol_decide__set_price(pt, c->u.synced.sku, c->price.price, c->price.currency);
        break;
    case OL_SALE_CMD_SKU_REMOVED:
        c->u.removed.at_ms = now_ms;
        n = ol_sale_sku_removed(pt->sale, &c->u.removed, f, why, why_size);
        break;
    case OL_SALE_CMD_STOCK_ADJUSTED:
        c->u.adjusted.at_ms = now_ms;
        n = ol_sale_stock_adjusted(pt->sale, &c->u.adjusted, f, why, why_size);
        break;
    case OL_SALE_CMD_POLICY_SET:
        c->u.policy.at_ms = now_ms;
        n = ol_sale_policy_set(pt->sale, &c->u.policy, w->arena, f, why, why_size);
        break;
    case OL_SALE_CMD__COUNT:
        break;
    }
    return n;
}

ol_err_t ol_decide__handle(worker_t *w, const rd_kafka_message_t *rkm, int64_t now_ms, char *errstr,
                           size_t errstr_size) {
    int32_t p = rkm->partition;
    part_t *pt = &w->parts[p];
    char why[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(w->arena);
    /* a SKU's inputs on another partition than its murmur2 one are read by
     * a worker that does not own the SKU: never decided on */
    if (ol_kafka_check_placement(rkm, w->d->npartitions, why, sizeof(why)))
        return to_dlq(w, rkm, "placement", why);
    ol_err_t err = ol_event_decode(w->codec, rkm, w->arena, &env, &value, why, sizeof(why));
    if (err && ol_err_is_retriable(err)) {
        /* the record is fine, the schema registry away: the batch is
         * aborted and taken again, never a dead letter; a pause first, so
         * that an outage does not spin */
        struct timespec pause = {1, 0};
        nanosleep(&pause, NULL);
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "%s [%" PRId32 "] offset %" PRId64 " waits: %s",
                       rd_kafka_topic_name(rkm->rkt), rkm->partition, rkm->offset, why);
    }
    if (err)
        return to_dlq(w, rkm, "decode", why);
    if (ol_event_check_key(rkm, &env, value, why, sizeof(why)))
        return to_dlq(w, rkm, "placement", why);
    const char *expected =
        rkm->rkt && !strcmp(rd_kafka_topic_name(rkm->rkt), w->d->topic_buy) ? "buy-requests" : "skus";
    if (strcmp(env.type->topic, expected)) {
        snprintf(why, sizeof(why), "%s does not belong on the %s topic", env.type->name, expected);
        return to_dlq(w, rkm, "decide", why);
    }
    const ol_json_t *d = ol_codec_to_dom(env.type, value, w->arena);
    ol_sale_cmd_t c;
    ol_fact_t f[1];
    int n = -1;
    if (!ol_sale_events_command(env.type->name, d, w->arena, &c))
        snprintf(why, sizeof(why), "%s is not a command the decider takes", env.type->name);
    else if (c.kind == OL_SALE_CMD_BUY && (c.u.buy.at_ms <= 0 || c.u.buy.at_ms > now_ms + OL_SALE_AHEAD_MS))
        /* a retry is judged at the same time as the first try, so the
         * window keeps exactly one decision per request (common/domain/sale.h) */
        snprintf(why, sizeof(why),
                 "requested_at %lld is %s: a client clock ahead? (decide refuses more than %d s ahead of its "
                 "clock; replay it once the clock is right)",
                 (long long)c.u.buy.at_ms, c.u.buy.at_ms <= 0 ? "not a time" : "ahead of decide's clock",
                 OL_SALE_AHEAD_MS / 1000);
    else
        n = decide_command(w, pt, &c, now_ms, f, why, sizeof(why));
    if (n < 0)
        return to_dlq(w, rkm, "decide", why);
    for (int i = 0; i < n; i++) {
        if ((err = settle(w, p, &f[i], errstr, errstr_size)))
            return err;
    }
    return OL_ERR_OK;
}

/* HoldReleased{expired} for every hold due, in every owned partition. */
ol_err_t ol_decide__expire_due(worker_t *w, int64_t now_ms, char *errstr, size_t errstr_size) {
    ol_fact_t *f = w->expired;
    ol_err_t err = OL_ERR_OK;
    for (int p = 0; p < w->d->npartitions && !err; p++) {
        if (!w->parts[p].sale || ol_sale_next_expiry(w->parts[p].sale) > now_ms)
            continue;
        size_t n;
        do {
            ol_arena_reset(w->scratch);
            n = ol_sale_expire(w->parts[p].sale, now_ms, w->scratch, f, MAX_FACTS);
            for (size_t i = 0; i < n && !err; i++) {
                ol_arena_reset(w->arena);
                err = settle(w, p, &f[i], errstr, errstr_size);
            }
        } while (n == MAX_FACTS && !err);
    }
    return err;
}
