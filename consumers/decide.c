/* orderlog decide — the flash-sale decider (DESIGN §4) on Kafka transactions.
 *
 * Every worker thread is one member of the consumer group
 * <topic.prefix>decide over buy-requests and skus (co-partitioned, range
 * assignor: partition p of both topics goes to one member) with its own
 * transactional producer. For each partition it owns it keeps an ol_sale_t
 * (common/domain/sale.h): the rules engine, event-sourced from sale-events.
 *
 * A batch is one transaction: expire the holds due, decide every record in
 * log order (apply each fact right after deciding it), produce the facts to
 * the same partition of sale-events (and OrderPlaced to orders for a
 * converted hold, poison records to the dlq), send the consumed offsets with
 * the transaction, commit. Consumed offsets and facts are visible together or
 * not at all (read-process-write exactly-once).
 *
 * On assignment (and after an aborted transaction) a partition's state is
 * rebuilt from sale-events partition p read from the beginning to its end
 * (read_committed), after the committed offsets were fetched: with
 * isolation.level=read_committed the offset fetch waits for transactions
 * that still hold offsets of the group (KIP-447), so the facts of a previous
 * owner are settled (committed or aborted) before they are read back.
 *
 * The blacklist (compacted topic, every partition) is read by its own thread
 * into one ol_blacklist_t shared under a read-write lock; the workers start
 * judging only once it was read to its end. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "common/base/arena.h"
#include "common/domain/blacklist.h"
#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/http.h"
#include "common/base/json.h"
#include "common/base/kafka.h"
#include "common/domain/contract.h"
#include "common/base/log.h"
#include "common/base/map.h"
#include "common/domain/sale.h"
#include "common/domain/sale_events.h"
#include "common/domain/schema.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/follow.h"

#define MAX_FACTS 256     /* per ol_sale_expire call */
#define TXN_CALL_MS 10000 /* longest a transaction call blocks before it is retried (or given up on a stop) */
/* Recovery (see "Faults" below): fatal producer errors without a committed
 * transaction for RECOVER_MAX_MS end the process; so does a second fatal
 * consumer error within FENCED_AGAIN_MS of the first (two processes with one
 * decide.instance fence each other in turn); records waiting with Kafka
 * answering and nothing committed for STALL_MS is a stall. */
#define RECOVER_MAX_MS 300000
#define FENCED_AGAIN_MS 120000
#define STALL_MS 60000
#define WAIT_LOG_MS 10000 /* how often a call retried while Kafka does not answer says so */

typedef struct decide_s decide_t;

/* What the engine does not keep and an OrderPlaced needs: a SKU's price. */
typedef struct price_s {
    int64_t price;
    char currency[8];
} price_t;

typedef struct part_s {
    ol_sale_t *sale;
    ol_map_t *prices; /* sku -> price_t* */
    /* On assignment the catalog goes first: buy-requests of the partition
     * stay paused until skus was consumed up to skus_end (its end then), so
     * a backlog of buys is not judged against a catalog not read yet. */
    bool paused;
    int64_t skus_end, skus_next;
    int64_t buy_next; /* committed offset of buy-requests (for the stall check) */
} part_t;

typedef struct worker_s {
    decide_t *d;
    int index;
    pthread_t thread;
    rd_kafka_t *consumer, *producer, *restorer;
    ol_codec_t *codec;
    ol_arena_t *arena;   /* per record */
    ol_arena_t *scratch; /* per restore / expiry */
    part_t *parts;       /* [d->npartitions]; sale NULL when not owned */
    rd_kafka_message_t **batch;
    size_t nbatch;
    ol_fact_t *expired; /* [MAX_FACTS], for expire_due */
    bool rebalanced;    /* set by the rebalance callback: drop what was collected */
    bool failed;
    char errstr[512];
    char client[64], txid[512];
    /* faults (worker thread only): what to recover from, and since when */
    bool consumer_fatal, producer_fatal, retake, stalled;
    char fatal_reason[512];
    int64_t retry_at_us, backoff_ms;
    int64_t fatal_since_us; /* first fatal producer error since the last commit, 0: none */
    int64_t fenced_us;      /* when the consumer was last replaced after a fatal error, 0: never */
    int64_t trouble_us;     /* first failed or retried call since the last commit, 0: none */
    int64_t progress_us;    /* last commit, or last check that found nothing waiting */
    int64_t unreachable_us; /* last sign that Kafka does not answer */
    int64_t stall_check_us;
    /* counters */
    atomic_llong decisions, facts, poison, txns, aborts, recoveries;
    atomic_llong commit_us;                           /* time spent committing (send offsets + commit) */
    atomic_llong state_bytes, open_holds, remembered; /* of the owned partitions, after the last batch */
    /* observability (read by /metrics, /healthz, /readyz) */
    atomic_llong beat_us, skus, skus_at_us; /* the loop turned; SKUs of the owned partitions (at most 1/s) */
    atomic_int restoring;                   /* partitions being restored now */
    atomic_bool down;                       /* failed: errstr is set */
    atomic_bool joined;                     /* its consumer had its first assignment (maybe empty) */
    /* held by the worker while it replaces or destroys consumer/producer,
     * and by the HTTP threads while they read them */
    pthread_mutex_t clients_lock;
} worker_t;

struct decide_s {
    const ol_conf_t *conf;
    int nworkers, npartitions;
    int64_t hold_ttl_ms, window_ms;
    size_t batch_events;
    int64_t batch_ms;
    char topic_buy[256], topic_skus[256], topic_sale[256], topic_orders[256], topic_dlq[256], topic_bl[256];
    char group[256], source[128];
    worker_t *workers;
    /* the blacklist */
    ol_blacklist_t *bl;
    pthread_rwlock_t bl_lock;
    pthread_t bl_thread;
    rd_kafka_t *bl_consumer;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool bl_ready;
    bool bl_failed;
    char bl_errstr[512];
    /* observability */
    ol_metrics_t *reg;
    ol_http_t *http;
    ol_metric_t *m_dlq, *m_retries, *m_txn_seconds, *m_commit_seconds, *m_restore_seconds, *m_restored;
    atomic_llong restore_facts, bl_beat_us;
    atomic_bool running; /* the workers are initialized (their handles may be read) */
};

static void observe_dlq(decide_t *d, const char *stage);
static void observe_retry(worker_t *w, rd_kafka_error_t *e, const char *call);
static void observe_txn(worker_t *w, int64_t txn_t0_us, int64_t commit_t0_us);
static void observe_state(worker_t *w);

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* ---- producing inside the transaction ------------------------------------- */

static ol_err_t produce(worker_t *w, const char *topic, int32_t partition, const char *key, size_t key_len,
                        const void *value, size_t len, rd_kafka_headers_t *hdrs, char *errstr, size_t errstr_size) {
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                              RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (!err)
            return OL_ERR_OK;
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !stop_requested) {
            rd_kafka_poll(w->producer, 10);
            continue;
        }
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
    return produce(w, topic, partition, ev.key, strlen(ev.key), ev.payload, ev.len, ev.hdrs, errstr, errstr_size);
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

static void set_price(part_t *pt, const char *sku, int64_t price, const char *currency) {
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
    return emit_fact(w, p, f, errstr, errstr_size);
}

/* ---- the dlq ------------------------------------------------------------- */

static ol_err_t to_dlq(worker_t *w, const rd_kafka_message_t *rkm, const char *stage, const char *reason) {
    rd_kafka_headers_t *h = ol_kafka_dlq_headers(rkm, rd_kafka_topic_name(rkm->rkt), stage, reason, w->d->group);
    atomic_fetch_add(&w->poison, 1);
    observe_dlq(w->d, stage);
    ol_log_warn("decide: %s [%" PRId32 "] offset %" PRId64 " sent to the dlq (%s): %s", rd_kafka_topic_name(rkm->rkt),
                rkm->partition, rkm->offset, stage, reason);
    char errstr[256];
    return produce(w, w->d->topic_dlq, RD_KAFKA_PARTITION_UA, rkm->key, rkm->key_len, rkm->payload, rkm->len, h, errstr,
                   sizeof(errstr));
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
            set_price(pt, c->u.synced.sku, c->price.price, c->price.currency);
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
    }
    return n;
}

static ol_err_t handle(worker_t *w, const rd_kafka_message_t *rkm, int64_t now_ms, char *errstr, size_t errstr_size) {
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
    if (ol_event_decode(w->codec, rkm, w->arena, &env, &value, why, sizeof(why)))
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
        ol_err_t err = settle(w, p, &f[i], errstr, errstr_size);
        if (err)
            return err;
    }
    return OL_ERR_OK;
}

/* HoldReleased{expired} for every hold due, in every owned partition. */
static ol_err_t expire_due(worker_t *w, int64_t now_ms, char *errstr, size_t errstr_size) {
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

/* ---- restoring a partition from sale-events ------------------------------- */

/* The fact a sale-events record holds; false for CheckoutRejected (it
 * changes nothing) and anything that is not a fact. A StockChanged with a
 * currency sets the SKU's price. */
static bool fact_from_event(worker_t *w, int32_t p, const ol_event_type_t *et, const ol_json_t *d, ol_fact_t *f) {
    ol_sale_price_t price;
    if (!ol_sale_events_decode(et->name, d, w->arena, f, &price) || f->kind == OL_FACT_CHECKOUT_REJECTED)
        return false;
    if (f->kind == OL_FACT_STOCK_CHANGED && price.currency[0])
        set_price(&w->parts[p], f->sku, price.price, price.currency);
    return true;
}

static void free_value(void *opaque, const char *key, size_t key_len, void *value) {
    (void)opaque, (void)key, (void)key_len;
    free(value);
}

static void part_drop(part_t *pt) {
    if (pt->sale)
        ol_sale_destroy(pt->sale);
    pt->sale = NULL;
    if (pt->prices) {
        ol_map_foreach(pt->prices, free_value, NULL);
        ol_map_destroy(pt->prices);
    }
    pt->prices = NULL;
}

/* Rebuilds the state of partitions ps[0..n) from sale-events, read from the
 * beginning to its end (read_committed). */
static ol_err_t restore(worker_t *w, const int32_t *ps, int n, char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    int64_t t0 = ol_time_mono_us();
    atomic_fetch_add(&w->restoring, n);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) {
        part_drop(&w->parts[ps[i]]);
        w->parts[ps[i]].sale = ol_sale_new(d->hold_ttl_ms, d->window_ms, d->bl);
        w->parts[ps[i]].prices = ol_map_new();
        rd_kafka_topic_partition_list_add(l, d->topic_sale, ps[i])->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_resp_err_t kerr = rd_kafka_assign(w->restorer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr) {
        atomic_fetch_sub(&w->restoring, n);
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not read %s: %s", d->topic_sale,
                       rd_kafka_err2str(kerr));
    }
    bool *done = ol_xcalloc((size_t)d->npartitions, sizeof(*done));
    int eof = 0;
    long long facts = 0, refused = 0;
    ol_err_t err = OL_ERR_OK;
    char why[512];
    while (eof < n && !err) {
        if (stop_requested) {
            err = ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "stopped while restoring");
            break;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->restorer, 200);
        atomic_store_explicit(&w->beat_us, ol_time_mono_us(), memory_order_relaxed);
        if (!rkm)
            continue;
        int32_t p = rkm->partition;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p >= 0 && p < d->npartitions && !done[p]) {
                done[p] = true;
                eof++;
            }
        } else if (rkm->err) {
            ol_log_warn("decide: reading %s: %s", d->topic_sale, rd_kafka_message_errstr(rkm));
        } else if (p >= 0 && p < d->npartitions && w->parts[p].sale) {
            ol_envelope_t env;
            avro_value_t *value;
            ol_fact_t f;
            ol_arena_reset(w->arena);
            if (ol_event_decode(w->codec, rkm, w->arena, &env, &value, why, sizeof(why))) {
                err = ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                              "%s [%" PRId32 "] offset %" PRId64 " cannot be read back (%s): refusing to decide on a "
                              "state that would miss it",
                              d->topic_sale, p, rkm->offset, why);
            } else if (fact_from_event(w, p, env.type, ol_codec_to_dom(env.type, value, w->arena), &f)) {
                facts++;
                atomic_fetch_add_explicit(&d->restore_facts, 1, memory_order_relaxed);
                if (ol_sale_apply(w->parts[p].sale, &f, why, sizeof(why))) {
                    refused++;
                    ol_log_warn("decide: %s [%" PRId32 "] offset %" PRId64 " contradicts the state, ignored: %s",
                                d->topic_sale, p, rkm->offset, why);
                }
            }
        }
        rd_kafka_message_destroy(rkm);
    }
    free(done);
    rd_kafka_assign(w->restorer, NULL);
    atomic_fetch_sub(&w->restoring, n);
    if (err)
        return err;
    ol_metric_add(d->m_restored, 0, (uint64_t)n);
    ol_metric_observe(d->m_restore_seconds, 0, (double)(ol_time_mono_us() - t0) / 1e6);
    atomic_store(&w->skus_at_us, 0); /* counted again after the next batch */
    size_t holds = 0, remembered = 0;
    for (int i = 0; i < n; i++) {
        holds += ol_sale_open_holds(w->parts[ps[i]].sale);
        remembered += ol_sale_remembered(w->parts[ps[i]].sale);
    }
    ol_log_info("decide: worker %d restored %d partition(s) from %s: %lld facts (%lld ignored), %zu open holds, "
                "%zu request ids remembered, %.0f ms",
                w->index, n, d->topic_sale, facts, refused, holds, remembered, (double)(ol_time_mono_us() - t0) / 1e3);
    return OL_ERR_OK;
}

/* Takes partitions (of buy-requests and skus): committed offsets first (they
 * wait for transactions still open on them), then the state, then assign.
 * On failure no state of them is left (their records are skipped until they
 * are taken again); OL_ERR_TRANSIENT when it may succeed later, with
 * w->consumer_fatal set when the consumer can no longer be used. */
static ol_err_t take(worker_t *w, rd_kafka_topic_partition_list_t *parts, char *errstr, size_t errstr_size) {
    rd_kafka_resp_err_t kerr;
    for (int attempt = 0;; attempt++) {
        kerr = rd_kafka_committed(w->consumer, parts, 30000);
        if (!kerr || kerr == RD_KAFKA_RESP_ERR__FATAL || stop_requested || attempt >= 2)
            break;
        ol_log_warn("decide: worker %d: fetching committed offsets: %s (retrying)", w->index, rd_kafka_err2str(kerr));
        observe_retry(w, NULL, "committed_offsets");
    }
    if (kerr == RD_KAFKA_RESP_ERR__FATAL)
        w->consumer_fatal = true;
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not fetch the committed offsets: %s",
                       rd_kafka_err2str(kerr));
    int32_t *ps = ol_xcalloc((size_t)parts->cnt + 1, sizeof(*ps));
    int n = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        bool seen = false;
        for (int j = 0; j < n; j++)
            seen |= ps[j] == p;
        if (p < 0 || p >= w->d->npartitions) {
            free(ps);
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "partition %" PRId32 " of %s is beyond the %d partitions decide started with: restart it", p,
                           parts->elems[i].topic, w->d->npartitions);
        }
        if (!seen)
            ps[n++] = p;
    }
    ol_err_t err = restore(w, ps, n, errstr, errstr_size);
    rd_kafka_topic_partition_list_t *pause = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt && !err; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        bool skus = !strcmp(tp->topic, w->d->topic_skus);
        part_t *pt = &w->parts[tp->partition];
        int64_t lo = 0, hi = 0;
        if (!skus && tp->offset >= 0) {
            pt->buy_next = tp->offset;
            continue;
        }
        /* "unknown partition" until this handle has the topic's metadata */
        for (int attempt = 0; attempt < 100; attempt++) {
            kerr = rd_kafka_query_watermark_offsets(w->consumer, tp->topic, tp->partition, &lo, &hi, 10000);
            if (kerr != RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION || stop_requested)
                break;
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (kerr) {
            err = ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not read the end of %s [%" PRId32 "]: %s",
                          tp->topic, tp->partition, rd_kafka_err2str(kerr));
            break;
        }
        if (!skus) {
            pt->buy_next = lo;
            continue;
        }
        pt->skus_next = tp->offset >= 0 ? tp->offset : lo;
        pt->skus_end = hi;
        pt->paused = pt->skus_next < hi;
        if (pt->paused)
            rd_kafka_topic_partition_list_add(pause, w->d->topic_buy, tp->partition);
    }
    if (!err && (kerr = rd_kafka_assign(w->consumer, parts))) {
        if (kerr == RD_KAFKA_RESP_ERR__FATAL)
            w->consumer_fatal = true;
        err = ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not assign: %s", rd_kafka_err2str(kerr));
    }
    if (err) {
        for (int i = 0; i < n; i++)
            part_drop(&w->parts[ps[i]]);
        free(ps);
        rd_kafka_topic_partition_list_destroy(pause);
        return err;
    }
    free(ps);
    if (pause->cnt) {
        rd_kafka_pause_partitions(w->consumer, pause);
        ol_log_info("decide: worker %d: %d partition(s) of %s wait until %s is read to its end", w->index, pause->cnt,
                    w->d->topic_buy, w->d->topic_skus);
    }
    rd_kafka_topic_partition_list_destroy(pause);
    return OL_ERR_OK;
}

/* After a committed batch: resumes the buy-requests partitions whose skus
 * partition reached the end it had at assignment. */
static void resume_caught_up(worker_t *w) {
    rd_kafka_topic_partition_list_t *l = NULL;
    for (size_t i = 0; i < w->nbatch; i++) {
        const rd_kafka_message_t *m = w->batch[i];
        part_t *pt = &w->parts[m->partition];
        if (strcmp(rd_kafka_topic_name(m->rkt), w->d->topic_skus)) {
            if (m->offset + 1 > pt->buy_next)
                pt->buy_next = m->offset + 1;
            continue;
        }
        if (m->offset + 1 > pt->skus_next)
            pt->skus_next = m->offset + 1;
        if (pt->paused && pt->skus_next >= pt->skus_end) {
            pt->paused = false;
            if (!l)
                l = rd_kafka_topic_partition_list_new(4);
            rd_kafka_topic_partition_list_add(l, w->d->topic_buy, m->partition);
        }
    }
    if (l) {
        rd_kafka_resume_partitions(w->consumer, l);
        rd_kafka_topic_partition_list_destroy(l);
    }
}

static void fail(worker_t *w, const char *errstr) {
    if (!w->failed)
        snprintf(w->errstr, sizeof(w->errstr), "%.*s", (int)sizeof(w->errstr) - 1, errstr);
    w->failed = true;
    atomic_store(&w->down, true);
    stop_requested = 1;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    worker_t *w = opaque;
    char errstr[512];
    w->rebalanced = true;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        ol_err_t terr = w->failed ? OL_ERR_OK : take(w, parts, errstr, sizeof(errstr));
        if (w->failed || (terr && (stop_requested || w->consumer_fatal))) {
            /* stopping while restoring is no failure; a consumer that
             * failed for good is replaced by the worker loop */
            rd_kafka_assign(rk, NULL);
        } else if (terr == OL_ERR_TRANSIENT) {
            /* ours, without a state: their records are skipped until the
             * worker loop takes them again */
            ol_log_warn("decide: worker %d: could not take its partitions (%s): retrying", w->index, errstr);
            w->unreachable_us = ol_time_mono_us();
            rd_kafka_assign(rk, parts);
            w->retake = true;
            w->retry_at_us = 0;
        } else if (terr) {
            fail(w, errstr);
            rd_kafka_assign(rk, NULL);
        }
        atomic_store(&w->joined, true);
    } else {
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].partition >= 0 && parts->elems[i].partition < w->d->npartitions)
                part_drop(&w->parts[parts->elems[i].partition]);
        rd_kafka_assign(rk, NULL);
    }
}

/* Takes the partitions of the current assignment again (committed offsets,
 * restore, seek): after an aborted transaction, a new producer, or a take
 * that failed. */
static ol_err_t recover(worker_t *w, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_assignment(w->consumer, &l);
    if (kerr) {
        if (kerr == RD_KAFKA_RESP_ERR__FATAL)
            w->consumer_fatal = true;
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not read the assignment: %s",
                       rd_kafka_err2str(kerr));
    }
    for (int i = 0; i < l->cnt; i++)
        l->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    ol_err_t err = l->cnt ? take(w, l, errstr, errstr_size) : OL_ERR_OK;
    rd_kafka_topic_partition_list_destroy(l);
    return err;
}

/* ---- the worker loop ------------------------------------------------------ */

static void batch_clear(worker_t *w) {
    for (size_t i = 0; i < w->nbatch; i++)
        rd_kafka_message_destroy(w->batch[i]);
    w->nbatch = 0;
}

static int64_t next_expiry(const worker_t *w) {
    int64_t next = INT64_MAX;
    for (int p = 0; p < w->d->npartitions; p++)
        if (w->parts[p].sale) {
            int64_t e = ol_sale_next_expiry(w->parts[p].sale);
            next = e < next ? e : next;
        }
    return next;
}

/* Collects up to batch.events records, for at most batch.ms after the first. */
static void collect(worker_t *w) {
    decide_t *d = w->d;
    int64_t first_us = 0;
    w->rebalanced = false;
    while (w->nbatch < d->batch_events && !stop_requested) {
        int timeout;
        if (w->nbatch) {
            int64_t left = d->batch_ms * 1000 - (ol_time_mono_us() - first_us);
            if (left <= 0)
                break;
            timeout = (int)(left / 1000) + 1;
        } else {
            int64_t due = next_expiry(w) - ol_time_now_ms();
            timeout = due < 0 ? 0 : due < 100 ? (int)due : 100;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->consumer, timeout);
        atomic_store_explicit(&w->beat_us, ol_time_mono_us(), memory_order_relaxed);
        if (w->rebalanced) { /* collected records may belong to another member now */
            batch_clear(w);
            w->rebalanced = false;
            first_us = 0;
        }
        if (!rkm) {
            if (w->nbatch || timeout < 100)
                break;
            continue;
        }
        if (rkm->err == RD_KAFKA_RESP_ERR__FATAL) { /* e.g. fenced: static member replaced */
            w->consumer_fatal = true;
            rd_kafka_message_destroy(rkm);
            batch_clear(w);
            break;
        }
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                ol_log_warn("decide: worker %d: consumer: %s", w->index, rd_kafka_message_errstr(rkm));
                w->unreachable_us = ol_time_mono_us();
            }
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (rkm->partition < 0 || rkm->partition >= d->npartitions || !w->parts[rkm->partition].sale) {
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (!w->nbatch)
            first_us = ol_time_mono_us();
        w->batch[w->nbatch++] = rkm;
    }
}

/* The consumed offsets of the batch: per topic and partition, last + 1. */
static rd_kafka_topic_partition_list_t *batch_offsets(worker_t *w) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    for (size_t i = 0; i < w->nbatch; i++) {
        const rd_kafka_message_t *m = w->batch[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(l, topic, m->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(l, topic, m->partition);
        if (m->offset + 1 > tp->offset)
            tp->offset = m->offset + 1;
    }
    return l;
}

/* ---- faults ---------------------------------------------------------------
 *
 * Every error of a transaction call is handled by its class (librdkafka's
 * rd_kafka_error_is_retriable / txn_requires_abort / is_fatal):
 * - retriable (Kafka does not answer, "timed out, retry the call"): the same
 *   call again, for as long as Kafka does not answer, said in the log every
 *   WAIT_LOG_MS; a call still failing so after STALL_MS while the cluster
 *   answers metadata requests is stuck and handled as fatal (below);
 * - requires abort (records that could not be delivered, a transaction the
 *   coordinator aborted): abort (retried the same way), drop the states of
 *   the worker's partitions, which hold the aborted batch's facts, and take
 *   the partitions again from their committed offsets: restored from
 *   sale-events, the states are what the log holds;
 * - fatal (fenced, INVALID_TXN_STATE, an abort that fails) or anything else:
 *   a new producer with the same transactional.id (init_transactions fences
 *   the old one and aborts what it left open), then the same rewind. Only
 *   when that keeps failing for RECOVER_MAX_MS without a committed
 *   transaction does the process exit 1.
 * A fatal consumer error (a static member fenced, as a broker restart can
 * cause) replaces the consumer, whose rebalance then takes the partitions
 * again; a second one within FENCED_AGAIN_MS means another process has the
 * same decide.instance, and this one exits 1. No silent stall: a worker
 * whose partitions have records waiting while Kafka answers, and which
 * commits nothing for STALL_MS, replaces its consumer, and exits 1 when that
 * does not help. */

typedef enum { TXN_OK, TXN_ABORTED, TXN_FATAL } txn_result_t;
typedef enum { CALL_COMMIT, CALL_ABORT, CALL_OFFSETS } txn_call_t;

static void drop_all(worker_t *w) {
    for (int p = 0; p < w->d->npartitions; p++)
        part_drop(&w->parts[p]);
}

/* Waits ms, or less when a stop is requested. */
static void pause_ms(int64_t ms) {
    for (int64_t end = ol_time_mono_us() + ms * 1000; !stop_requested && ol_time_mono_us() < end;) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void trouble(worker_t *w) {
    if (!w->trouble_us)
        w->trouble_us = ol_time_mono_us();
}

/* Schedules the next try of a recovery: 0.5 s doubling up to 10 s. */
static void backoff(worker_t *w) {
    w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : 500;
    if (w->backoff_ms > 10000)
        w->backoff_ms = 10000;
    w->retry_at_us = ol_time_mono_us() + w->backoff_ms * 1000;
}

/* Whether the cluster answers rk's metadata request within a second. */
static bool cluster_answers(rd_kafka_t *rk) {
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 0, NULL, &md, 1000))
        return false;
    rd_kafka_metadata_destroy(md);
    return true;
}

/* Makes one transaction call, again while it fails retriably, until a stop
 * is requested, or, when the cluster answers all along, for at most
 * STALL_MS. Returns its last error (NULL: done). */
static rd_kafka_error_t *txn_call(worker_t *w, txn_call_t call, const rd_kafka_topic_partition_list_t *offs,
                                  const rd_kafka_consumer_group_metadata_t *cgmd, const char *what) {
    int64_t t0 = ol_time_mono_us(), said = t0;
    for (;;) {
        int64_t call_t0 = ol_time_mono_us();
        rd_kafka_error_t *e = call == CALL_COMMIT ? rd_kafka_commit_transaction(w->producer, TXN_CALL_MS)
                              : call == CALL_ABORT
                                  ? rd_kafka_abort_transaction(w->producer, TXN_CALL_MS)
                                  : rd_kafka_send_offsets_to_transaction(w->producer, offs, cgmd, TXN_CALL_MS);
        if (!e || !rd_kafka_error_is_retriable(e) || stop_requested)
            return e;
        int64_t now = ol_time_mono_us();
        trouble(w);
        if (now - t0 >= (int64_t)STALL_MS * 1000 && cluster_answers(w->producer)) {
            /* not an outage: the call is stuck (a coordinator that moved
             * and never answers it). The error, retriable, is taken as
             * fatal: a new producer fences this one, the coordinator ends
             * the transaction, and the partitions are taken again. */
            ol_log_error("decide: worker %d: %s: %s for %.0f s while the cluster answers: giving it up", w->index, what,
                         rd_kafka_error_string(e), (double)(now - t0) / 1e6);
            return e;
        }
        w->unreachable_us = now;
        if (now - said >= WAIT_LOG_MS * 1000) {
            ol_log_warn("decide: worker %d: %s: %s; still retrying after %.0f s (is Kafka reachable?)", w->index, what,
                        rd_kafka_error_string(e), (double)(now - t0) / 1e6);
            said = now;
        }
        observe_retry(w, e, call == CALL_COMMIT ? "commit" : call == CALL_ABORT ? "abort" : "send_offsets");
        if (now - call_t0 < 100 * 1000)
            pause_ms(100);
    }
}

/* The producer cannot go on: the worker loop replaces it. */
static txn_result_t producer_failed(worker_t *w, const char *reason) {
    snprintf(w->fatal_reason, sizeof(w->fatal_reason), "%.*s", (int)sizeof(w->fatal_reason) - 1, reason);
    w->producer_fatal = true;
    w->retry_at_us = 0;
    trouble(w);
    drop_all(w);
    return TXN_FATAL;
}

/* Aborts the transaction and rewinds: the states (holding the aborted
 * batch's facts) are dropped and the partitions taken again. */
static txn_result_t abort_batch(worker_t *w, const char *reason) {
    ol_log_warn("decide: worker %d: %s: aborting the transaction and taking the partitions again from their "
                "committed offsets",
                w->index, reason);
    trouble(w);
    drop_all(w);
    rd_kafka_error_t *e = txn_call(w, CALL_ABORT, NULL, NULL, "abort transaction");
    if (e) {
        char why[600];
        snprintf(why, sizeof(why), "abort transaction: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return stop_requested ? TXN_FATAL : producer_failed(w, why);
    }
    atomic_fetch_add(&w->aborts, 1);
    w->retake = true;
    w->retry_at_us = 0;
    return TXN_ABORTED;
}

/* A transaction call failed (not retriably, or a stop ended the retries). */
static txn_result_t txn_failed(worker_t *w, rd_kafka_error_t *e, const char *what) {
    char why[600];
    snprintf(why, sizeof(why), "%s: %s", what, rd_kafka_error_string(e));
    bool fatal = rd_kafka_error_is_fatal(e), abortable = rd_kafka_error_txn_requires_abort(e);
    rd_kafka_error_destroy(e);
    if (stop_requested) /* the broker or the next start aborts what is open */
        return TXN_FATAL;
    if (abortable && !fatal)
        return abort_batch(w, why);
    return producer_failed(w, why);
}

static txn_result_t run_batch(worker_t *w) {
    char errstr[512];
    int64_t now = ol_time_now_ms(), txn_t0 = ol_time_mono_us();
    rd_kafka_error_t *e = rd_kafka_begin_transaction(w->producer);
    if (e)
        return txn_failed(w, e, "begin transaction");
    ol_err_t err = expire_due(w, now, errstr, sizeof(errstr));
    for (size_t i = 0; i < w->nbatch && !err; i++)
        err = handle(w, w->batch[i], now, errstr, sizeof(errstr));
    if (err == OL_ERR_TRANSIENT) /* the producer refusing a record */
        return abort_batch(w, errstr);
    if (err) {
        /* our own failure (a fact that does not encode): nothing of the
         * batch may stay */
        ol_log_error("decide: worker %d: %s", w->index, errstr);
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(w->producer, TXN_CALL_MS);
        if (ae)
            rd_kafka_error_destroy(ae);
        fail(w, errstr);
        return TXN_FATAL;
    }
    int64_t commit_t0 = ol_time_mono_us();
    if (w->nbatch) {
        rd_kafka_topic_partition_list_t *offs = batch_offsets(w);
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(w->consumer);
        e = txn_call(w, CALL_OFFSETS, offs, cgmd, "send offsets to the transaction");
        rd_kafka_consumer_group_metadata_destroy(cgmd);
        rd_kafka_topic_partition_list_destroy(offs);
        if (e)
            return txn_failed(w, e, "send offsets to the transaction");
    }
    /* retried while the cluster does not answer; a stop gives up (the
     * transaction is then aborted by the broker after transaction.timeout.ms,
     * or at once by the next start with the same decide.instance) */
    if ((e = txn_call(w, CALL_COMMIT, NULL, NULL, "commit transaction")))
        return txn_failed(w, e, "commit transaction");
    atomic_fetch_add(&w->txns, 1);
    int64_t done_us = ol_time_mono_us();
    atomic_fetch_add(&w->commit_us, done_us - commit_t0);
    if (w->trouble_us)
        ol_log_info("decide: worker %d: deciding again: a transaction committed %.1f s after the first failed call",
                    w->index, (double)(done_us - w->trouble_us) / 1e6);
    w->trouble_us = w->fatal_since_us = 0;
    w->progress_us = done_us;
    w->stalled = false;
    long long bytes = 0, holds = 0, remembered = 0;
    for (int p = 0; p < w->d->npartitions; p++)
        if (w->parts[p].sale) {
            bytes += (long long)ol_sale_bytes(w->parts[p].sale);
            holds += (long long)ol_sale_open_holds(w->parts[p].sale);
            remembered += (long long)ol_sale_remembered(w->parts[p].sale);
        }
    atomic_store(&w->state_bytes, bytes);
    atomic_store(&w->open_holds, holds);
    atomic_store(&w->remembered, remembered);
    observe_txn(w, txn_t0, commit_t0);
    observe_state(w);
    resume_caught_up(w);
    return TXN_OK;
}

static rd_kafka_t *consumer_new(worker_t *w, char *errstr, size_t errstr_size);
static rd_kafka_t *producer_new(worker_t *w, char *errstr, size_t errstr_size);
static ol_err_t worker_subscribe(worker_t *w, char *errstr, size_t errstr_size);

/* A new producer with the same transactional.id: init_transactions fences
 * the old one and aborts what it left open; then the partitions are taken
 * again. Called with w->producer_fatal set; clears it when done. */
static void renew_producer(worker_t *w) {
    char errstr[1024];
    int64_t now = ol_time_mono_us();
    if (!w->fatal_since_us)
        w->fatal_since_us = now;
    else if (now - w->fatal_since_us > (int64_t)RECOVER_MAX_MS * 1000) {
        snprintf(errstr, sizeof(errstr),
                 "the transactional producer %s kept failing for %.0f s without a committed transaction (last: %.300s)",
                 w->txid, (double)(now - w->fatal_since_us) / 1e6, w->fatal_reason);
        fail(w, errstr);
        return;
    }
    ol_log_warn("decide: worker %d: the transactional producer failed (%s): replacing it (transactional.id %s, which "
                "fences the old one), then restoring the partitions and taking them again from their committed offsets",
                w->index, w->fatal_reason, w->txid);
    drop_all(w);
    pthread_mutex_lock(&w->clients_lock);
    if (w->producer) {
        rd_kafka_purge(w->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_destroy(w->producer);
    }
    w->producer = producer_new(w, errstr, sizeof(errstr));
    pthread_mutex_unlock(&w->clients_lock);
    if (!w->producer) {
        fail(w, errstr);
        return;
    }
    int64_t t0 = ol_time_mono_us(), said = t0;
    rd_kafka_error_t *e;
    while ((e = rd_kafka_init_transactions(w->producer, TXN_CALL_MS)) && rd_kafka_error_is_retriable(e) &&
           !stop_requested) {
        w->unreachable_us = ol_time_mono_us();
        if (w->unreachable_us - said >= WAIT_LOG_MS * 1000) {
            ol_log_warn("decide: worker %d: starting transactions (%s): %s; still retrying after %.0f s (is Kafka "
                        "reachable?)",
                        w->index, w->txid, rd_kafka_error_string(e), (double)(w->unreachable_us - t0) / 1e6);
            said = w->unreachable_us;
        }
        rd_kafka_error_destroy(e);
    }
    if (e) {
        snprintf(w->fatal_reason, sizeof(w->fatal_reason), "init transactions: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        backoff(w); /* w->producer_fatal stays: tried again */
        return;
    }
    if (stop_requested)
        return;
    w->producer_fatal = false;
    w->backoff_ms = 0;
    w->retake = true;
    w->retry_at_us = 0;
    atomic_fetch_add(&w->recoveries, 1);
    ol_log_info("decide: worker %d: new transactional producer ready (%.1f s)", w->index,
                (double)(ol_time_mono_us() - now) / 1e6);
}

/* A new consumer with the same group.instance.id, after a fatal error of
 * the old one (why) or a stall; its rebalance takes the partitions. */
static void renew_consumer(worker_t *w, const char *why, bool fatal) {
    char errstr[1024];
    int64_t now = ol_time_mono_us();
    if (fatal && w->fenced_us && now - w->fenced_us < (int64_t)FENCED_AGAIN_MS * 1000) {
        snprintf(errstr, sizeof(errstr),
                 "consumer failed again %.0f s after it was replaced: %s (is another decide running with "
                 "decide.instance=%s in group %s?)",
                 (double)(now - w->fenced_us) / 1e6, why, ol_conf_str(w->d->conf, "decide.instance"), w->d->group);
        fail(w, errstr);
        return;
    }
    if (fatal)
        w->fenced_us = now;
    ol_log_warn("decide: worker %d: %s: replacing the consumer (group.instance.id %s); its partitions are taken "
                "again from their committed offsets",
                w->index, why, w->txid);
    trouble(w);
    batch_clear(w);
    drop_all(w);
    /* no close: it would leave the group or run the rebalance callback */
    pthread_mutex_lock(&w->clients_lock);
    rd_kafka_destroy_flags(w->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    atomic_store(&w->joined, false);
    w->consumer = consumer_new(w, errstr, sizeof(errstr));
    pthread_mutex_unlock(&w->clients_lock);
    if (!w->consumer || worker_subscribe(w, errstr, sizeof(errstr))) {
        fail(w, errstr);
        return;
    }
    w->consumer_fatal = w->retake = false;
    atomic_fetch_add(&w->recoveries, 1);
}

/* Takes the assigned partitions again, later when it fails. */
static void retake(worker_t *w) {
    char errstr[512];
    ol_err_t err = recover(w, errstr, sizeof(errstr));
    if (!err) {
        w->retake = false;
        w->backoff_ms = 0;
        return;
    }
    if (stop_requested || w->consumer_fatal)
        return;
    if (err != OL_ERR_TRANSIENT) {
        fail(w, errstr);
        return;
    }
    w->unreachable_us = ol_time_mono_us();
    backoff(w);
    ol_log_warn("decide: worker %d: could not take its partitions again (%s): retrying in %lld ms", w->index, errstr,
                (long long)w->backoff_ms);
}

/* Records of the owned partitions not committed yet (the broker asked for
 * the ends); -1 when it does not answer. */
static long long input_lag(worker_t *w) {
    long long lag = 0;
    for (int p = 0; p < w->d->npartitions; p++) {
        const part_t *pt = &w->parts[p];
        if (!pt->sale)
            continue;
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(w->consumer, w->d->topic_buy, p, &lo, &hi, 5000))
            return -1;
        lag += hi > pt->buy_next ? hi - pt->buy_next : 0;
        if (rd_kafka_query_watermark_offsets(w->consumer, w->d->topic_skus, p, &lo, &hi, 5000))
            return -1;
        lag += hi > pt->skus_next ? hi - pt->skus_next : 0;
    }
    return lag;
}

/* Every 10 s: records waiting, Kafka answering, nothing committed for
 * STALL_MS is a stall: the consumer is replaced once, then the process exits. */
static void check_stall(worker_t *w) {
    int64_t now = ol_time_mono_us();
    if (now < w->stall_check_us)
        return;
    w->stall_check_us = now + 10 * 1000 * 1000;
    if (w->retake || now - w->progress_us < (int64_t)STALL_MS * 1000 ||
        now - w->unreachable_us < (int64_t)STALL_MS * 1000)
        return;
    long long lag = input_lag(w);
    if (lag < 0) {
        w->unreachable_us = now;
        return;
    }
    if (!lag) {
        w->progress_us = now;
        w->stalled = false;
        return;
    }
    char why[512];
    snprintf(why, sizeof(why), "%lld records wait on its partitions and none was decided for %.0f s, Kafka answering",
             lag, (double)(now - w->progress_us) / 1e6);
    if (w->stalled) {
        char errstr[600];
        snprintf(errstr, sizeof(errstr), "%s, even after its consumer was replaced", why);
        fail(w, errstr);
        return;
    }
    ol_log_error("decide: worker %d: %s", w->index, why);
    w->stalled = true;
    w->progress_us = now;
    renew_consumer(w, why, false);
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    w->progress_us = ol_time_mono_us();
    while (!stop_requested && !w->failed) {
        if (w->consumer_fatal) {
            char why[512] = "";
            if (!rd_kafka_fatal_error(w->consumer, why, sizeof(why)))
                snprintf(why, sizeof(why), "fatal consumer error");
            renew_consumer(w, why, true);
            continue;
        }
        if (w->producer_fatal) {
            if (ol_time_mono_us() >= w->retry_at_us)
                renew_producer(w);
            else
                pause_ms(100);
            continue;
        }
        if (w->retake && ol_time_mono_us() >= w->retry_at_us) {
            retake(w);
            continue;
        }
        check_stall(w);
        collect(w);
        if (w->failed || w->consumer_fatal)
            continue;
        if (!w->nbatch && next_expiry(w) > ol_time_now_ms())
            continue;
        run_batch(w);
        batch_clear(w);
    }
    batch_clear(w);
    return NULL;
}

/* The worker's group member: static membership, so that a restarted
 * process (same decide.instance) gets its partitions back at once instead of
 * after the session timeout. */
static rd_kafka_t *consumer_new(worker_t *w, char *errstr, size_t errstr_size) {
    const char *ctuning[] = {"group.id", w->d->group, "group.instance.id", w->txid, "partition.assignment.strategy",
                             "range", "session.timeout.ms", "10000", "fetch.wait.max.ms", "10",
                             /* prefetch bounded per worker, whatever the backlog */
                             "queued.max.messages.kbytes", "16384", NULL};
    rd_kafka_conf_t *cc = ol_kafka_conf_new(w->d->conf, OL_KAFKA_CONSUMER, w->client, ctuning, errstr, errstr_size);
    if (!cc)
        return NULL;
    rd_kafka_conf_set_rebalance_cb(cc, rebalance_cb);
    rd_kafka_conf_set_opaque(cc, w);
    rd_kafka_t *rk = ol_kafka_handle_new(RD_KAFKA_CONSUMER, cc, errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(cc);
    return rk;
}

static rd_kafka_t *producer_new(worker_t *w, char *errstr, size_t errstr_size) {
    const char *ptuning[] = {"transactional.id", w->txid, "linger.ms", "2", NULL};
    return ol_kafka_new(w->d->conf, OL_KAFKA_TXN_PRODUCER, w->client, ptuning, errstr, errstr_size);
}

static ol_err_t worker_init(decide_t *d, worker_t *w, int index, char *errstr, size_t errstr_size) {
    const ol_conf_t *conf = d->conf;
    w->d = d;
    w->index = index;
    pthread_mutex_init(&w->clients_lock, NULL);
    w->codec = ol_codec_new();
    w->arena = ol_arena_new(64 * 1024);
    w->scratch = ol_arena_new(64 * 1024);
    w->parts = ol_xcalloc((size_t)d->npartitions, sizeof(*w->parts));
    w->batch = ol_xcalloc(d->batch_events, sizeof(*w->batch));
    w->expired = ol_xcalloc(MAX_FACTS, sizeof(*w->expired));
    char restore_group[300];
    snprintf(w->client, sizeof(w->client), "orderlog-decide-%d", index);
    snprintf(w->txid, sizeof(w->txid), "%sdecide-%s-%d", ol_conf_str(conf, "topic.prefix"),
             ol_conf_str(conf, "decide.instance"), index);
    snprintf(restore_group, sizeof(restore_group), "%s-restore", d->group);
    const char *rtuning[] = {"group.id", restore_group, "fetch.wait.max.ms", "10", NULL};
    if (!(w->consumer = consumer_new(w, errstr, errstr_size)) || !(w->producer = producer_new(w, errstr, errstr_size)))
        return OL_ERR_CONFIG;
    if (!(w->restorer = ol_kafka_new(conf, OL_KAFKA_READER, w->client, rtuning, errstr, errstr_size)))
        return OL_ERR_CONFIG;
    /* fences (aborts) what a previous run with this transactional.id left open */
    rd_kafka_error_t *e = rd_kafka_init_transactions(w->producer, ol_conf_int(conf, "broker.wait.ms") + 30000);
    if (e) {
        ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not start transactions (%s): %s", w->txid,
                rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return OL_ERR_UNREACHABLE;
    }
    return OL_ERR_OK;
}

/* Joins the group: after every worker started its transactions, so that
 * they join together and the first assignment is the final one. */
static ol_err_t worker_subscribe(worker_t *w, char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(topics, d->topic_buy, RD_KAFKA_PARTITION_UA);
    rd_kafka_topic_partition_list_add(topics, d->topic_skus, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(w->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not subscribe: %s", rd_kafka_err2str(kerr));
    return OL_ERR_OK;
}

static void worker_destroy(worker_t *w) {
    if (w->consumer)
        rd_kafka_consumer_close(w->consumer); /* revokes: the states are dropped */
    pthread_mutex_lock(&w->clients_lock);
    if (w->consumer)
        rd_kafka_destroy(w->consumer);
    if (w->producer)
        rd_kafka_destroy(w->producer);
    w->consumer = w->producer = NULL;
    pthread_mutex_unlock(&w->clients_lock);
    if (w->restorer) {
        rd_kafka_consumer_close(w->restorer);
        rd_kafka_destroy(w->restorer);
    }
    for (int p = 0; w->parts && p < w->d->npartitions; p++)
        part_drop(&w->parts[p]);
    free(w->parts);
    free(w->batch);
    free(w->expired);
    if (w->codec)
        ol_codec_destroy(w->codec);
    if (w->arena)
        ol_arena_destroy(w->arena);
    if (w->scratch)
        ol_arena_destroy(w->scratch);
}

/* ---- the blacklist -------------------------------------------------------- */

static void bl_signal(decide_t *d, bool failed, const char *errstr) {
    pthread_mutex_lock(&d->mu);
    if (failed) {
        d->bl_failed = true;
        snprintf(d->bl_errstr, sizeof(d->bl_errstr), "%s", errstr);
    }
    d->bl_ready = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
}

/* What the blacklist thread reads with. */
typedef struct bl_reader_s {
    decide_t *d;
    ol_codec_t *codec;
    ol_arena_t *arena;
    long long entries; /* changes applied */
} bl_reader_t;

/* Applies one record of the blacklist topic. */
static void bl_record(void *opaque, const rd_kafka_message_t *rkm) {
    bl_reader_t *r = opaque;
    decide_t *d = r->d;
    char why[512];
    ol_envelope_t env = {.type = NULL};
    avro_value_t *value;
    ol_arena_reset(r->arena);
    if (ol_event_decode(r->codec, rkm, r->arena, &env, &value, why, sizeof(why)) ||
        strcmp(env.type->name, "BlacklistChanged")) {
        ol_log_warn("decide: %s [%" PRId32 "] offset %" PRId64 " ignored: %s", d->topic_bl, rkm->partition, rkm->offset,
                    env.type && strcmp(env.type->name, "BlacklistChanged") ? "not a BlacklistChanged" : why);
        return;
    }
    const ol_json_t *j = ol_codec_to_dom(env.type, value, r->arena);
    ol_subject_t type = strcmp(ol_json_get_str(j, "subject_type", ""), "user") ? OL_SUBJECT_IP : OL_SUBJECT_USER;
    int64_t until = ol_json_get_null(j, "until") ? OL_BLACKLIST_FOREVER : ol_json_get_int(j, "until", 0);
    pthread_rwlock_wrlock(&d->bl_lock);
    ol_blacklist_apply(d->bl, type, ol_json_get_str(j, "subject", ""), !strcmp(ol_json_get_str(j, "action", ""), "add"),
                       until);
    pthread_rwlock_unlock(&d->bl_lock);
    r->entries++;
}

/* The blacklist thread: reads the topic to its end (then the workers may
 * judge), then follows it until a stop (consumers/follow.h). */
static void *bl_main(void *arg) {
    decide_t *d = arg;
    char why[512];
    bl_reader_t r = {d, ol_codec_new(), ol_arena_new(16 * 1024), 0};
    ol_follow_t *f;
    if (ol_follow_open(&f, d->bl_consumer, d->topic_bl, (int)ol_conf_int(d->conf, "broker.wait.ms"), &stop_requested,
                       why, sizeof(why))) {
        bl_signal(d, true, why);
        goto out;
    }
    bool caught_up = false;
    while (!stop_requested) {
        if (!caught_up && ol_follow_caught_up(f)) {
            caught_up = true;
            ol_log_info("decide: blacklist read: %lld changes, %zu subjects listed", r.entries,
                        ol_blacklist_count(d->bl));
            bl_signal(d, false, NULL);
        }
        ol_follow_poll(f, 200, bl_record, &r);
        atomic_store_explicit(&d->bl_beat_us, ol_time_mono_us(), memory_order_relaxed);
    }
    ol_follow_destroy(f);
out:
    ol_codec_destroy(r.codec);
    ol_arena_destroy(r.arena);
    if (!d->bl_ready)
        bl_signal(d, false, NULL);
    return NULL;
}

/* ---- observability -------------------------------------------------------- */

static const char *const dlq_stages[] = {"decode", "placement", "decide", NULL};
static const char *const retry_calls[] = {"committed_offsets", "send_offsets", "commit", "abort", NULL};

static void observe_dlq(decide_t *d, const char *stage) {
    size_t i = 0;
    while (dlq_stages[i + 1] && strcmp(dlq_stages[i], stage))
        i++;
    ol_metric_inc(d->m_dlq, i);
}

/* A retriable error of a Kafka call (e taken; NULL when there is none). */
static void observe_retry(worker_t *w, rd_kafka_error_t *e, const char *call) {
    if (e)
        rd_kafka_error_destroy(e);
    ol_metric_inc(w->d->m_retries, ol_metric_cell(w->d->m_retries, call, NULL));
}

static void observe_txn(worker_t *w, int64_t txn_t0_us, int64_t commit_t0_us) {
    int64_t now = ol_time_mono_us();
    ol_metric_observe(w->d->m_txn_seconds, 0, (double)(now - txn_t0_us) / 1e6);
    ol_metric_observe(w->d->m_commit_seconds, 0, (double)(now - commit_t0_us) / 1e6);
}

static void count_sku(void *opaque, const char *sku, const ol_stock_t *stock) {
    (void)sku;
    (void)stock;
    (*(long long *)opaque)++;
}

/* The SKUs of the owned partitions, counted at most once a second. */
static void observe_state(worker_t *w) {
    int64_t now = ol_time_mono_us();
    if (now - atomic_load(&w->skus_at_us) < 1000 * 1000)
        return;
    long long skus = 0;
    for (int p = 0; p < w->d->npartitions; p++)
        if (w->parts[p].sale)
            ol_sale_foreach_stock(w->parts[p].sale, count_sku, &skus);
    atomic_store(&w->skus, skus);
    atomic_store(&w->skus_at_us, now);
}

/* A sum over the workers of one of their atomic counters. */
typedef struct sum_s {
    decide_t *d;
    size_t offset; /* of an atomic_llong in worker_t */
} sum_t;

static void sum_fn(void *opaque, ol_metrics_out_t *out) {
    const sum_t *s = opaque;
    long long total = 0;
    for (int i = 0; i < s->d->nworkers; i++)
        total += atomic_load((atomic_llong *)((char *)&s->d->workers[i] + s->offset));
    ol_metrics_out(out, NULL, (double)total);
}

static void txns_fn(void *opaque, ol_metrics_out_t *out) {
    decide_t *d = opaque;
    long long txns = 0, aborts = 0;
    for (int i = 0; i < d->nworkers; i++) {
        txns += atomic_load(&d->workers[i].txns);
        aborts += atomic_load(&d->workers[i].aborts);
    }
    const char *committed[] = {"committed"}, *aborted[] = {"aborted"};
    ol_metrics_out(out, committed, (double)txns);
    ol_metrics_out(out, aborted, (double)aborts);
}

static void restoring_fn(void *opaque, ol_metrics_out_t *out) {
    decide_t *d = opaque;
    long long n = 0;
    for (int i = 0; i < d->nworkers; i++)
        n += atomic_load(&d->workers[i].restoring);
    ol_metrics_out(out, NULL, (double)n);
}

static void restore_facts_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((decide_t *)opaque)->restore_facts));
}

static void blacklist_fn(void *opaque, ol_metrics_out_t *out) {
    decide_t *d = opaque;
    pthread_rwlock_rdlock(&d->bl_lock);
    size_t n = ol_blacklist_count(d->bl);
    pthread_rwlock_unlock(&d->bl_lock);
    ol_metrics_out(out, NULL, (double)n);
}

static void lag_fn(void *opaque, ol_metrics_out_t *out) {
    decide_t *d = opaque;
    if (!atomic_load(&d->running))
        return;
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = &d->workers[i];
        pthread_mutex_lock(&w->clients_lock);
        if (w->consumer)
            ol_kafka_lag_write(w->consumer, out);
        pthread_mutex_unlock(&w->clients_lock);
    }
}

static void assigned_fn(void *opaque, ol_metrics_out_t *out) {
    decide_t *d = opaque;
    if (!atomic_load(&d->running))
        return;
    int n = 0;
    for (int i = 0; i < d->nworkers; i++) {
        rd_kafka_topic_partition_list_t *l = NULL;
        worker_t *w = &d->workers[i];
        pthread_mutex_lock(&w->clients_lock);
        rd_kafka_resp_err_t kerr = w->consumer ? rd_kafka_assignment(w->consumer, &l) : RD_KAFKA_RESP_ERR__STATE;
        pthread_mutex_unlock(&w->clients_lock);
        if (kerr)
            return;
        for (int k = 0; k < l->cnt; k++)
            n += !strcmp(l->elems[k].topic, d->topic_buy);
        rd_kafka_topic_partition_list_destroy(l);
    }
    ol_metrics_out(out, NULL, n);
}

static bool decide_live(void *opaque, json_t *checks) {
    decide_t *d = opaque;
    int64_t stall_ms = ol_conf_int(d->conf, "health.stall.ms");
    bool ok = true;
    if (!atomic_load(&d->running)) /* reading the blacklist */
        ok &= ol_http_check_beat(checks, "blacklist", atomic_load(&d->bl_beat_us), stall_ms);
    for (int i = 0; atomic_load(&d->running) && i < d->nworkers; i++) {
        worker_t *w = &d->workers[i];
        char name[32], fatal[256];
        snprintf(name, sizeof(name), "worker-%d", i);
        pthread_mutex_lock(&w->clients_lock);
        bool fatal_error = (w->consumer && rd_kafka_fatal_error(w->consumer, fatal, sizeof(fatal))) ||
                           (w->producer && rd_kafka_fatal_error(w->producer, fatal, sizeof(fatal)));
        pthread_mutex_unlock(&w->clients_lock);
        if (atomic_load(&w->down))
            ok = ol_http_check(checks, name, false, "failed: %s", w->errstr);
        else if (fatal_error)
            ok = ol_http_check(checks, name, false, "fatal Kafka error (the worker replaces the client): %s", fatal);
        else
            ok &= ol_http_check_beat(checks, name, atomic_load(&w->beat_us), stall_ms);
    }
    return ok;
}

static bool decide_ready(void *opaque, json_t *checks) {
    decide_t *d = opaque;
    bool ok = ol_kafka_check_reachable(d->bl_consumer, checks, "kafka", 1000);
    if (stop_requested)
        ok = ol_http_check(checks, "stopping", false, "shutting down");
    if (!atomic_load(&d->running))
        return ol_http_check(checks, "workers", false, "starting (reading the blacklist, joining the group)");
    int assigned = 0;
    for (int i = 0; i < d->nworkers; i++) {
        worker_t *w = &d->workers[i];
        char name[32];
        snprintf(name, sizeof(name), "worker-%d", i);
        pthread_mutex_lock(&w->clients_lock);
        int restoring = atomic_load(&w->restoring), n = w->consumer ? ol_kafka_assigned_count(w->consumer) : 0;
        pthread_mutex_unlock(&w->clients_lock);
        assigned += n > 0 ? n : 0;
        if (atomic_load(&w->down))
            ok = ol_http_check(checks, name, false, "failed: %s", w->errstr);
        else if (!atomic_load(&w->joined)) /* a later join would move partitions again */
            ok = ol_http_check(checks, name, false, "joining the group %s", d->group);
        else
            ok &=
                ol_http_check(checks, name, restoring == 0, "%d partitions assigned, %d being restored", n, restoring);
    }
    ok &= ol_http_check(checks, "partitions", assigned > 0, "%d assigned in group %s", assigned, d->group);
    return ok;
}

static sum_t decide_sums[6];

/* The registry and, with http.listen set, the endpoint. */
static ol_err_t observe_start(decide_t *d, char *errstr, size_t errstr_size) {
    ol_metrics_t *reg = d->reg = ol_metrics_new();
    ol_metrics_add_process(reg);
    static const struct {
        const char *name, *help;
        size_t offset;
        ol_metric_type_t type;
    } sums[] = {
        {"orderlog_decide_decisions_total", "Buy requests decided (accepted or rejected).",
         offsetof(worker_t, decisions), OL_METRIC_COUNTER},
        {"orderlog_decide_facts_total", "Facts written to sale-events (in committed or aborted transactions).",
         offsetof(worker_t, facts), OL_METRIC_COUNTER},
        {"orderlog_decide_open_holds", "Holds placed and not yet converted or released, in the owned partitions.",
         offsetof(worker_t, open_holds), OL_METRIC_GAUGE},
        {"orderlog_decide_state_bytes", "Memory of the sale state of the owned partitions, estimated.",
         offsetof(worker_t, state_bytes), OL_METRIC_GAUGE},
        {"orderlog_decide_remembered_requests",
         "Request ids remembered in the owned partitions (decided within decide.idempotency.window.ms, or of an "
         "open hold).",
         offsetof(worker_t, remembered), OL_METRIC_GAUGE},
        {"orderlog_decide_skus", "SKUs known in the owned partitions (counted at most once a second).",
         offsetof(worker_t, skus), OL_METRIC_GAUGE},
    };
    for (size_t i = 0; i < sizeof(sums) / sizeof(sums[0]); i++) {
        decide_sums[i] = (sum_t){d, sums[i].offset};
        ol_metrics_func(reg, &(ol_metric_def_t){.name = sums[i].name, .help = sums[i].help, .type = sums[i].type},
                        sum_fn, &decide_sums[i]);
    }
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_decide_transactions_total",
                                       .help = "Kafka transactions, by outcome (aborted: taken up again from the log).",
                                       .type = OL_METRIC_COUNTER,
                                       .labels = {{"outcome", NULL}}},
                    txns_fn, d);
    d->m_txn_seconds = ol_metrics_add(reg, &(ol_metric_def_t){
                                               .name = "orderlog_decide_transaction_duration_seconds",
                                               .help = "Time of a committed transaction (one batch), begin to commit.",
                                               .type = OL_METRIC_HISTOGRAM,
                                               .buckets = ol_metrics_seconds_buckets,
                                               .nbuckets = ol_metrics_seconds_nbuckets,
                                           });
    d->m_commit_seconds = ol_metrics_add(reg, &(ol_metric_def_t){
                                                  .name = "orderlog_decide_commit_duration_seconds",
                                                  .help = "Time to send the offsets and commit a transaction.",
                                                  .type = OL_METRIC_HISTOGRAM,
                                                  .buckets = ol_metrics_seconds_buckets,
                                                  .nbuckets = ol_metrics_seconds_nbuckets,
                                              });
    d->m_dlq = ol_metrics_add(reg, &(ol_metric_def_t){
                                       .name = "orderlog_decide_dlq_records_total",
                                       .help = "Records sent to the dlq topic, by the stage that refused them (in a "
                                               "transaction: an aborted one sends them again).",
                                       .type = OL_METRIC_COUNTER,
                                       .labels = {{"stage", dlq_stages}},
                                   });
    d->m_retries = ol_metrics_add(reg, &(ol_metric_def_t){
                                           .name = "orderlog_decide_retries_total",
                                           .help = "Kafka calls retried after a retriable error, by call.",
                                           .type = OL_METRIC_COUNTER,
                                           .labels = {{"call", retry_calls}},
                                       });
    d->m_restored = ol_metrics_counter(reg, "orderlog_decide_restored_partitions_total",
                                       "Partitions whose state was rebuilt from sale-events (at assignment, after "
                                       "an abort).");
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_decide_restoring_partitions",
                                       .help = "Partitions being restored from sale-events now (buys wait for them).",
                                       .type = OL_METRIC_GAUGE},
                    restoring_fn, d);
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_decide_restore_facts_total",
                                       .help = "Facts read back from sale-events while restoring.",
                                       .type = OL_METRIC_COUNTER},
                    restore_facts_fn, d);
    d->m_restore_seconds = ol_metrics_add(reg, &(ol_metric_def_t){
                                                   .name = "orderlog_decide_restore_duration_seconds",
                                                   .help = "Time to restore the partitions of one assignment.",
                                                   .type = OL_METRIC_HISTOGRAM,
                                                   .buckets = ol_metrics_seconds_buckets,
                                                   .nbuckets = ol_metrics_seconds_nbuckets,
                                               });
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_decide_blacklist_entries",
                                       .help = "Subjects on the blacklist as decide knows it.",
                                       .type = OL_METRIC_GAUGE},
                    blacklist_fn, d);
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_decide_consumer_lag_records",
                                       .help = "Records between a worker's position and the end of each assigned "
                                               "partition of buy-requests and skus.",
                                       .type = OL_METRIC_GAUGE,
                                       .labels = {{"topic", NULL}, {"partition", NULL}}},
                    lag_fn, d);
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_decide_assigned_partitions",
                                       .help = "Partitions of buy-requests assigned to the workers.",
                                       .type = OL_METRIC_GAUGE},
                    assigned_fn, d);
    ol_http_conf_t hc = {ol_conf_str(d->conf, "http.listen"), reg, decide_live, decide_ready, d};
    return ol_http_serve(&hc, &d->http, errstr, errstr_size);
}

/* Before the workers' handles go. */
static void observe_stop(decide_t *d) {
    ol_http_stop(d->http);
    d->http = NULL;
}

/* ---- the command ---------------------------------------------------------- */

/* The partition count of buy-requests (checked equal for skus and
 * sale-events by ol_contract_check_topics). */
static ol_err_t cluster_check(decide_t *d, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = ol_kafka_new(d->conf, OL_KAFKA_ADMIN, "orderlog-decide", NULL, errstr, errstr_size);
    if (!rk)
        return OL_ERR_CONFIG;
    ol_err_t err = ol_kafka_wait_cluster(rk, d->conf, errstr, errstr_size);
    if (!err)
        err = ol_contract_check_topics(rk, d->conf, errstr, errstr_size);
    /* the state is what sale-events says from its first fact on */
    if (!err)
        err = ol_kafka_check_replayable(rk, d->conf, d->topic_sale, errstr, errstr_size);
    if (!err) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, d->topic_buy, NULL);
        rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, (int)ol_conf_int(d->conf, "broker.wait.ms"));
        rd_kafka_topic_destroy(rkt);
        if (kerr || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0)
            err = ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not read the partitions of %s: %s",
                          d->topic_buy, rd_kafka_err2str(kerr ? kerr : md->topics[0].err));
        else
            d->npartitions = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return err;
}

static void totals(decide_t *d, long long *decisions, long long *facts, long long *poison, long long *txns,
                   long long *aborts) {
    *decisions = *facts = *poison = *txns = *aborts = 0;
    for (int i = 0; i < d->nworkers; i++) {
        *decisions += atomic_load(&d->workers[i].decisions);
        *facts += atomic_load(&d->workers[i].facts);
        *poison += atomic_load(&d->workers[i].poison);
        *txns += atomic_load(&d->workers[i].txns);
        *aborts += atomic_load(&d->workers[i].aborts);
    }
}

/* Bounds the shutdown: librdkafka's transaction calls can block past their
 * timeout while the cluster is unreachable, so once stopping, the process
 * exits 1 after consumer.shutdown.timeout.ms whatever is still in flight (an
 * open transaction is aborted by the broker after transaction.timeout.ms, or
 * at once by the next start with the same decide.instance). */
static atomic_bool shutdown_done;
static int64_t shutdown_timeout_ms;

static void *watchdog_main(void *arg) {
    (void)arg;
    int64_t deadline = ol_time_mono_us() + shutdown_timeout_ms * 1000;
    while (!atomic_load(&shutdown_done)) {
        if (ol_time_mono_us() >= deadline) {
            fprintf(stderr,
                    "orderlog decide: not stopped within %lld ms (consumer.shutdown.timeout.ms; is Kafka reachable?): "
                    "exiting with the transaction in flight, which the broker or the next start aborts\n",
                    (long long)shutdown_timeout_ms);
            fflush(stderr);
            _exit(OL_EXIT_FAIL);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int decide_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[1024];
    for (int i = 1; i < argc; i++)
        return ol_cli_usage_error(&ol_cmd_decide, "unknown option \"%s\"", argv[i]);
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog decide: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    decide_t d = {.conf = conf};
    d.nworkers = (int)ol_conf_int(conf, "decide.workers");
    d.hold_ttl_ms = ol_conf_int(conf, "hold.ttl.ms");
    d.window_ms = ol_conf_int(conf, "decide.idempotency.window.ms");
    d.batch_events = (size_t)ol_conf_int(conf, "decide.batch.events");
    d.batch_ms = ol_conf_int(conf, "decide.batch.ms");
    ol_kafka_topic_name(conf, "buy-requests", d.topic_buy, sizeof(d.topic_buy));
    ol_kafka_topic_name(conf, "skus", d.topic_skus, sizeof(d.topic_skus));
    ol_kafka_topic_name(conf, "sale-events", d.topic_sale, sizeof(d.topic_sale));
    ol_kafka_topic_name(conf, "orders", d.topic_orders, sizeof(d.topic_orders));
    ol_kafka_topic_name(conf, "dlq", d.topic_dlq, sizeof(d.topic_dlq));
    ol_kafka_topic_name(conf, "blacklist", d.topic_bl, sizeof(d.topic_bl));
    snprintf(d.source, sizeof(d.source), "%s", ol_conf_str(conf, "event.source"));
    if (*ol_conf_str(conf, "consumer.group.id"))
        snprintf(d.group, sizeof(d.group), "%s", ol_conf_str(conf, "consumer.group.id"));
    else
        snprintf(d.group, sizeof(d.group), "%sdecide", ol_conf_str(conf, "topic.prefix"));
    if (cluster_check(&d, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog decide: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int rc = OL_EXIT_FAIL;
    d.bl = ol_blacklist_new();
    pthread_rwlock_init(&d.bl_lock, NULL);
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cond, NULL);
    d.workers = ol_xcalloc((size_t)d.nworkers, sizeof(*d.workers));
    int started = 0;
    bool bl_started = false;
    /* /readyz asks the cluster through this reader: its metadata request
     * waits behind the fetch long-poll on the same connection, so the
     * fetch wait bounds how fast /readyz answers */
    const char *btuning[] = {"group.id", "orderlog-decide-blacklist", "fetch.wait.max.ms", "100", NULL};
    if (!(d.bl_consumer =
              ol_kafka_new(conf, OL_KAFKA_READER, "orderlog-decide-blacklist", btuning, errstr, sizeof(errstr)))) {
        fprintf(stderr, "orderlog decide: %s\n", errstr);
        goto out;
    }
    if (observe_start(&d, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog decide: %s\n", errstr);
        rc = OL_EXIT_USAGE;
        goto out;
    }
    pthread_create(&d.bl_thread, NULL, bl_main, &d);
    bl_started = true;
    pthread_mutex_lock(&d.mu);
    while (!d.bl_ready)
        pthread_cond_wait(&d.cond, &d.mu);
    pthread_mutex_unlock(&d.mu);
    if (d.bl_failed) {
        fprintf(stderr, "orderlog decide: %s\n", d.bl_errstr);
        goto out;
    }
    if (stop_requested) {
        rc = OL_EXIT_OK;
        goto out;
    }
    for (int i = 0; i < d.nworkers; i++) {
        if (worker_init(&d, &d.workers[i], i, errstr, sizeof(errstr))) {
            fprintf(stderr, "orderlog decide: worker %d: %s\n", i, errstr);
            stop_requested = 1;
            goto out;
        }
    }
    for (int i = 0; i < d.nworkers; i++) {
        if (worker_subscribe(&d.workers[i], errstr, sizeof(errstr))) {
            fprintf(stderr, "orderlog decide: worker %d: %s\n", i, errstr);
            stop_requested = 1;
            goto out;
        }
    }
    ol_log_info("decide: %d worker(s) in group %s over %s and %s (%d partitions), hold.ttl.ms=%lld", d.nworkers,
                d.group, d.topic_buy, d.topic_skus, d.npartitions, (long long)d.hold_ttl_ms);
    atomic_store(&d.running, true);
    for (; started < d.nworkers; started++)
        pthread_create(&d.workers[started].thread, NULL, worker_main, &d.workers[started]);
    int64_t t0 = ol_time_mono_us(), last_us = t0;
    long long last_dec = 0;
#ifdef __GLIBC__
    long long trim_facts = 0;
    int64_t busy_us = t0;
    bool trim_due = false;
#endif
    while (!stop_requested) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t now = ol_time_mono_us();
#ifdef __GLIBC__
        /* Once idle for a second after work, hand back the pages freed by
         * consumed and delivered messages: they sit between the sale state's
         * long-lived allocations, where the heap cannot shrink by itself
         * (this halves the resident size after a burst). Not under load:
         * trimming locks the allocator for tens of milliseconds. */
        long long facts_now = 0;
        for (int i = 0; i < d.nworkers; i++)
            facts_now += atomic_load(&d.workers[i].facts);
        if (facts_now != trim_facts) {
            trim_facts = facts_now;
            busy_us = now;
            trim_due = true;
        } else if (trim_due && now - busy_us >= 1000 * 1000) {
            int64_t trim_t0 = ol_time_mono_us();
            malloc_trim(0);
            ol_log_debug("decide: malloc_trim took %.1f ms", (double)(ol_time_mono_us() - trim_t0) / 1e3);
            trim_due = false;
        }
#endif
        if (now - last_us >= 10 * 1000 * 1000) {

            long long dec, facts, poison, txns, aborts;
            totals(&d, &dec, &facts, &poison, &txns, &aborts);
            long long commit_us = 0, bytes = 0, holds = 0, remembered = 0;
            for (int i = 0; i < d.nworkers; i++) {
                commit_us += atomic_load(&d.workers[i].commit_us);
                bytes += atomic_load(&d.workers[i].state_bytes);
                holds += atomic_load(&d.workers[i].open_holds);
                remembered += atomic_load(&d.workers[i].remembered);
            }
            ol_log_info(
                "decide: %lld decisions (%.0f/s), %lld facts, %lld transactions (%.1f ms to commit on average), "
                "%lld aborted, %lld to the dlq; state %.1f MB, %lld open holds, %lld request ids remembered",
                dec, (double)(dec - last_dec) * 1e6 / (double)(now - last_us), facts, txns,
                txns ? (double)commit_us / 1e3 / (double)txns : 0.0, aborts, poison, (double)bytes / 1048576.0, holds,
                remembered);
            last_dec = dec;
            last_us = now;
        }
    }
    rc = OL_EXIT_OK;
out:
    stop_requested = 1;
    shutdown_timeout_ms = ol_conf_int(conf, "consumer.shutdown.timeout.ms");
    pthread_t watchdog;
    if (!pthread_create(&watchdog, NULL, watchdog_main, NULL))
        pthread_detach(watchdog);
    for (int i = 0; i < started; i++)
        pthread_join(d.workers[i].thread, NULL);
    observe_stop(&d);
    for (int i = 0; i < d.nworkers; i++)
        if (d.workers[i].failed) {
            fprintf(stderr, "orderlog decide: worker %d: %s\n", i, d.workers[i].errstr);
            rc = OL_EXIT_FAIL;
        }
    if (started || rc == OL_EXIT_OK) {
        long long dec, facts, poison, txns, aborts;
        totals(&d, &dec, &facts, &poison, &txns, &aborts);
        printf("decided %lld requests: %lld facts in %lld transactions (%lld aborted), %lld records to the dlq\n", dec,
               facts, txns, aborts, poison);
    }
    for (int i = 0; i < d.nworkers; i++)
        if (d.workers[i].d)
            worker_destroy(&d.workers[i]);
    if (bl_started)
        pthread_join(d.bl_thread, NULL);
    if (d.bl_consumer) {
        rd_kafka_consumer_close(d.bl_consumer);
        rd_kafka_destroy(d.bl_consumer);
    }
    free(d.workers);
    ol_blacklist_destroy(d.bl);
    pthread_rwlock_destroy(&d.bl_lock);
    pthread_mutex_destroy(&d.mu);
    pthread_cond_destroy(&d.cond);
    observe_stop(&d);
    ol_metrics_destroy(d.reg);
    atomic_store(&shutdown_done, true);
    return rc;
}

const ol_cmd_t ol_cmd_decide = {
    "decide", decide_run, "judge buy requests and hold commands into sale-events (exactly-once, Kafka transactions)",
    "usage: orderlog decide\n"
    "  Consumes buy-requests and skus in the consumer group <topic.prefix>decide (consumer.group.id sets\n"
    "  another) with decide.workers members, each owning whole partitions; judges every BuyRequested\n"
    "  (blacklist, level, limit, unknown SKU, stock), places, converts, cancels and expires holds\n"
    "  (hold.ttl.ms), and writes the facts to sale-events (and OrderPlaced to orders) in Kafka\n"
    "  transactions that also commit the consumed offsets. On assignment each partition's state is\n"
    "  rebuilt from sale-events first. Decided request ids are remembered for\n"
    "  decide.idempotency.window.ms of request time; an older BuyRequested is refused too_old.\n"
    "  Keep decide.instance stable across restarts of one process: its\n"
    "  transactional ids derive from it, so a restart aborts what a killed run left open at once.\n"
    "  With http.listen set, serves /metrics, /healthz and /readyz there.\n"
    "  Runs until SIGTERM or SIGINT, which finish the transaction in flight.\n"};
