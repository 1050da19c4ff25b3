/* orderlog loadgen — simulated shoppers for a flash sale, and the stopwatch.
 *
 * The main thread makes --count BuyRequested (Avro payload, CloudEvents
 * headers, key sku: what `orderlog publish` produces) and hands them to
 * librdkafka at --rate per second (0: as fast as it can). Before the first
 * one it assigns a read_committed consumer to every partition of sale-events
 * at its end; that consumer's thread matches BuyAccepted and BuyRejected to
 * the requests by request id (the ce_subject header), so the latency of a
 * request is: its decision seen here − it handed to Kafka, both on this
 * process's monotonic clock.
 *
 * Request ids are "lg-<run>-<n>", <run> new for every run (--run-id sets
 * it): the decider remembers the request ids it decided (for
 * decide.idempotency.window.ms), so ids must never repeat across runs on one
 * set of topics. Decisions of other runs are
 * ignored. The shoppers themselves are deterministic for a --seed: who asks
 * for what, and each user's level (0-5, a function of the seed and the
 * user).
 *
 * After sending it waits (--wait-ms after the last send at most) for a
 * decision on every request, then reads sale-events on to the end it has
 * then (a second decision of a request would be committed by then), prints
 * the summary and exits 1 unless every request got exactly one decision.
 *
 * Memory: 24 bytes per request (times, decision count, outcome). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "common/base/arena.h"
#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/codec.h"
#include "common/domain/consume.h"
#include "common/domain/event.h"
#include "common/base/json.h"
#include "common/base/kafka.h"
#include "common/domain/contract.h"
#include "common/base/log.h"
#include "common/domain/schema.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "producers/loadgen.h"

#define NREASONS 6
#define OUTCOME_NONE 0xff
#define OUTCOME_ACCEPTED 0

/* The reasons of BuyRejected, in the order of its Avro enum. */
static const char *const reason_names[NREASONS] = {"blacklisted", "level",       "limit",
                                                   "sold_out",    "unknown_sku", "too_old"};

/* One request as the consumer thread sees it. send_us is written by the main
 * thread before the request is handed to librdkafka; the decision can only
 * come back after that. */
typedef struct req_s {
    _Atomic int64_t send_us;
    int64_t decided_us; /* the first decision */
    /* wall clock (ms) at the hand-off, the decision's record timestamp (the
     * decider's clock, when it produced the fact) and when it was seen */
    _Atomic int64_t send_ms;
    int64_t fact_ms, seen_ms;
    uint32_t ndecisions;
    uint8_t outcome; /* OUTCOME_ACCEPTED, 1 + reason index, OUTCOME_NONE */
} req_t;

typedef struct loadgen_s {
    const ol_conf_t *conf;
    options_t opt;
    char run[32];
    char prefix[64]; /* "lg-<run>-" */
    size_t prefix_len;
    char topic_buy[256], topic_sale[256], source[128];
    rd_kafka_t *producer, *consumer;
    const ol_event_type_t *buy_requested;
    req_t *reqs;
    /* consumer side */
    pthread_t thread;
    atomic_bool stop_consumer;
    atomic_llong decided;    /* requests with at least one decision */
    atomic_llong duplicates; /* decisions beyond the first */
    atomic_llong foreign;    /* decisions of other runs */
    int64_t first_decision_us, last_decision_us;
    int64_t first_record_ms, last_record_ms; /* decisions' record timestamps (set by the decider) */
    int npartitions;
    /* producer side */
    atomic_llong delivered, failed;
    char first_failure[256];
    pthread_mutex_t mu;
} loadgen_t;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void sleep_us(int64_t us) {
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- deterministic shoppers ------------------------------------------------ */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double unit(uint64_t *state) {
    return (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t below(uint64_t *state, uint64_t n) {
    return n ? splitmix64(state) % n : 0;
}

static int user_level(uint64_t seed, long long user) {
    uint64_t s = seed ^ ((uint64_t)user * 0x2545f4914f6cdd1dULL);
    return (int)(splitmix64(&s) % 6);
}

typedef struct shopper_req_s {
    char request_id[96], session_id[48], client_ip[48], user_id[32], sku[128];
    int level, quantity;
} shopper_req_t;

static void make_request(const loadgen_t *lg, uint64_t *rng, long long n, shopper_req_t *r) {
    const options_t *o = &lg->opt;
    long long user = o->sequential_users ? n % o->users : (long long)below(rng, (uint64_t)o->users);
    snprintf(r->request_id, sizeof(r->request_id), "%s%lld", lg->prefix, n);
    snprintf(r->user_id, sizeof(r->user_id), "LGU%08lld", user);
    snprintf(r->session_id, sizeof(r->session_id), "lgs-%s-%lld", lg->run, user);
    if (o->blacklisted_share > 0 && unit(rng) < o->blacklisted_share)
        snprintf(r->client_ip, sizeof(r->client_ip), "203.0.113.%d", 1 + (int)below(rng, 3));
    else
        snprintf(r->client_ip, sizeof(r->client_ip), "10.%lld.%lld.%lld", (user >> 16) & 255, (user >> 8) & 255,
                 user & 255);
    if (o->hot_sku && unit(rng) < o->hot_share)
        snprintf(r->sku, sizeof(r->sku), "%s", o->hot_sku);
    else
        snprintf(r->sku, sizeof(r->sku), "SKU-%05lld", 1 + (long long)below(rng, (uint64_t)o->skus));
    r->level = user_level(o->seed, user);
    r->quantity = 1 + (int)below(rng, (uint64_t)o->max_quantity);
}

/* ---- event data (the codec's JSON form) ----------------------------------- */

/* ---- the consumer thread ---------------------------------------------------- */

static bool header(rd_kafka_headers_t *hdrs, const char *name, const char **val, size_t *size) {
    const void *v;
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &v, size) || !v)
        return false;
    *val = v;
    return true;
}

/* The index of one of our request ids, or -1. */
static long long request_index(const loadgen_t *lg, const char *id, size_t len) {
    if (len <= lg->prefix_len || len > lg->prefix_len + 12 || memcmp(id, lg->prefix, lg->prefix_len))
        return -1;
    long long n = 0;
    for (size_t i = lg->prefix_len; i < len; i++) {
        if (id[i] < '0' || id[i] > '9')
            return -1;
        n = n * 10 + (id[i] - '0');
    }
    return n < lg->opt.count ? n : -1;
}

/* The reason of a BuyRejected, as an index into reason_names, or -1. */
static int reject_reason(ol_codec_t *codec, ol_arena_t *arena, const rd_kafka_message_t *rkm) {
    char why[256];
    ol_envelope_t env;
    avro_value_t *value, field;
    int idx;
    ol_arena_reset(arena);
    if (ol_event_decode(codec, rkm, arena, &env, &value, why, sizeof(why)) ||
        avro_value_get_by_name(value, "reason", &field, NULL) || avro_value_get_enum(&field, &idx))
        return -1;
    const char *sym = avro_schema_enum_get(avro_value_get_schema(&field), idx);
    for (int i = 0; sym && i < NREASONS; i++)
        if (!strcmp(sym, reason_names[i]))
            return i;
    return -1;
}

static void on_decision(void *opaque, ol_codec_t *codec, ol_arena_t *arena, const rd_kafka_message_t *rkm) {
    loadgen_t *lg = opaque;
    rd_kafka_headers_t *hdrs = NULL;
    const char *type, *subject;
    size_t type_len, subject_len;
    int64_t now = ol_time_mono_us();
    if (rd_kafka_message_headers(rkm, &hdrs) || !header(hdrs, "ce_type", &type, &type_len))
        return;
    bool accepted = type_len == 20 && !memcmp(type, "orderlog.BuyAccepted", 20);
    bool rejected = type_len == 20 && !memcmp(type, "orderlog.BuyRejected", 20);
    if (!accepted && !rejected)
        return;
    long long n = header(hdrs, "ce_subject", &subject, &subject_len) ? request_index(lg, subject, subject_len) : -1;
    if (n < 0) {
        atomic_fetch_add_explicit(&lg->foreign, 1, memory_order_relaxed);
        return;
    }
    req_t *r = &lg->reqs[n];
    if (r->ndecisions++) {
        atomic_fetch_add(&lg->duplicates, 1);
        ol_log_warn("loadgen: request %.*s decided again (%s)", (int)subject_len, subject,
                    accepted ? "BuyAccepted" : "BuyRejected");
        return;
    }
    r->decided_us = now;
    r->seen_ms = ol_time_now_ms();
    r->fact_ms = rd_kafka_message_timestamp(rkm, NULL);
    int reason = accepted ? -1 : reject_reason(codec, arena, rkm);
    if (rejected && reason < 0)
        ol_log_warn("loadgen: the BuyRejected of %.*s has no reason this loadgen knows (counted as sold_out)",
                    (int)subject_len, subject);
    r->outcome = accepted ? OUTCOME_ACCEPTED : (uint8_t)(1 + (reason < 0 ? 3 : reason));
    if (!lg->first_decision_us)
        lg->first_decision_us = now;
    lg->last_decision_us = now;
    int64_t ts = r->fact_ms;
    if (ts > 0 && (!lg->first_record_ms || ts < lg->first_record_ms))
        lg->first_record_ms = ts;
    if (ts > lg->last_record_ms)
        lg->last_record_ms = ts;
    atomic_fetch_add(&lg->decided, 1);
}

static void *consumer_main(void *arg) {
    loadgen_t *lg = arg;
    ol_consume_until(lg->consumer, &lg->stop_consumer, "loadgen: ", lg->topic_sale, 16 * 1024, on_decision, lg);
    return NULL;
}

/* Assigns the consumer to every partition of sale-events at its current end. */
static ol_err_t consumer_start(loadgen_t *lg, char *errstr, size_t errstr_size) {
    const int timeout = (int)ol_conf_int(lg->conf, "broker.wait.ms");
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(lg->consumer, lg->topic_sale, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(lg->consumer, 0, rkt, &md, timeout);
    rd_kafka_topic_destroy(rkt);
    if (kerr || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0) {
        ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not read the partitions of %s: %s", lg->topic_sale,
                rd_kafka_err2str(kerr ? kerr : md->topics[0].err));
        if (md)
            rd_kafka_metadata_destroy(md);
        return OL_ERR_UNREACHABLE;
    }
    lg->npartitions = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(lg->npartitions);
    ol_err_t err = OL_ERR_OK;
    for (int i = 0; i < lg->npartitions && !err; i++) {
        int32_t p = md->topics[0].partitions[i].id;
        int64_t lo, hi, until = ol_time_mono_us() + (int64_t)timeout * 1000;
        if ((kerr = ol_kafka_watermarks(lg->consumer, lg->topic_sale, p, timeout, until, NULL, &lo, &hi)))
            err = ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not read the end of %s [%" PRId32 "]: %s",
                          lg->topic_sale, p, rd_kafka_err2str(kerr));
        else
            rd_kafka_topic_partition_list_add(l, lg->topic_sale, p)->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    if (!err && (kerr = ol_kafka_assign(lg->consumer, l)))
        err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not assign %s: %s", lg->topic_sale,
                      rd_kafka_err2str(kerr));
    rd_kafka_topic_partition_list_destroy(l);
    if (!err)
        pthread_create(&lg->thread, NULL, consumer_main, lg);
    return err;
}

/* True once the consumer has read every partition up to the end each had
 * when this was first called (ends[] filled then), or after timeout_ms. */
static void consumer_drain(loadgen_t *lg, int timeout_ms) {
    rd_kafka_topic_partition_list_t *l = NULL;
    if (rd_kafka_assignment(lg->consumer, &l))
        return;
    int64_t *ends = ol_xcalloc((size_t)l->cnt + 1, sizeof(*ends));
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo = 0;
        if (rd_kafka_query_watermark_offsets(lg->consumer, l->elems[i].topic, l->elems[i].partition, &lo, &ends[i],
                                             5000))
            ends[i] = 0;
    }
    int64_t deadline = ol_time_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        rd_kafka_position(lg->consumer, l);
        int behind = 0;
        for (int i = 0; i < l->cnt; i++)
            behind += l->elems[i].offset < ends[i];
        if (!behind || ol_time_mono_us() > deadline || stop_requested)
            break;
        sleep_us(20000);
    }
    free(ends);
    rd_kafka_topic_partition_list_destroy(l);
}

/* ---- the producer ------------------------------------------------------------ */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    loadgen_t *lg = opaque;
    if (!rkm->err) {
        atomic_fetch_add_explicit(&lg->delivered, 1, memory_order_relaxed);
        return;
    }
    if (atomic_fetch_add(&lg->failed, 1) == 0) {
        pthread_mutex_lock(&lg->mu);
        snprintf(lg->first_failure, sizeof(lg->first_failure), "%s", rd_kafka_err2str(rkm->err));
        pthread_mutex_unlock(&lg->mu);
    }
}

static ol_err_t clients_new(loadgen_t *lg, char *errstr, size_t errstr_size) {
    const char *ptuning[] = {"linger.ms", "5", "queue.buffering.max.messages", "1000000", "queue.buffering.max.kbytes",
                             "1048576",   NULL};
    char group[128];
    snprintf(group, sizeof(group), "orderlog-loadgen-%s", lg->run);
    const char *ctuning[] = {
        "group.id", group, "auto.offset.reset", "latest", "fetch.wait.max.ms", "5", "enable.partition.eof",
        "false",    NULL};
    const ol_kafka_callbacks_t cb = {.dr_msg = dr_cb, .opaque = lg};
    if (!(lg->producer =
              ol_kafka_new_with(lg->conf, OL_KAFKA_PRODUCER, "orderlog-loadgen", ptuning, &cb, errstr, errstr_size)))
        return OL_ERR_CONFIG;
    if (!(lg->consumer = ol_kafka_new(lg->conf, OL_KAFKA_READER, "orderlog-loadgen", ctuning, errstr, errstr_size)))
        return OL_ERR_CONFIG;
    return OL_ERR_OK;
}

/* One request: encoded, handed to librdkafka (send time recorded), and
 * written to the --out file. */
static ol_err_t send_one(loadgen_t *lg, ol_codec_t *codec, ol_arena_t *arena, uint64_t *rng, long long n, FILE *out,
                         char *errstr, size_t errstr_size) {
    const ol_event_type_t *et = lg->buy_requested;
    shopper_req_t r;
    make_request(lg, rng, n, &r);
    int64_t now_ms = ol_time_now_ms();
    ol_json_member_t m[9];
    ol_json_member_str(&m[0], "request_id", r.request_id);
    ol_json_member_str(&m[1], "session_id", r.session_id);
    ol_json_member_str(&m[2], "client_ip", r.client_ip);
    ol_json_member_str(&m[3], "user_id", r.user_id);
    ol_json_member_int(&m[4], "user_level", r.level);
    ol_json_member_str(&m[5], "sku", r.sku);
    ol_json_member_int(&m[6], "quantity", r.quantity);
    ol_json_member_int(&m[7], "requested_at", now_ms);
    ol_json_member_str(&m[8], "channel", "loadgen");
    ol_json_t doc = ol_json_object_of(m, 9);
    ol_event_out_t ev;
    ol_arena_reset(arena);
    ol_err_t err = ol_event_encode(codec, et, &doc, now_ms, lg->source, &ev, errstr, errstr_size);
    if (err)
        return err; /* --hot-sku too long, or the like */
    for (;;) {
        atomic_store_explicit(&lg->reqs[n].send_ms, ol_time_now_ms(), memory_order_relaxed);
        atomic_store_explicit(&lg->reqs[n].send_us, ol_time_mono_us(), memory_order_release);
        rd_kafka_resp_err_t kerr =
            rd_kafka_producev(lg->producer, RD_KAFKA_V_TOPIC(lg->topic_buy), RD_KAFKA_V_KEY(r.sku, strlen(r.sku)),
                              RD_KAFKA_V_VALUE((void *)ev.payload, ev.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(ev.hdrs), RD_KAFKA_V_TIMESTAMP(now_ms), RD_KAFKA_V_END);
        if (!kerr)
            break;
        if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_headers_destroy(ev.hdrs);
            return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not produce to %s: %s", lg->topic_buy,
                           rd_kafka_err2str(kerr));
        }
        rd_kafka_poll(lg->producer, 5);
    }
    if (out) {
        char ts[40];
        ol_time_format(now_ms, ts, sizeof(ts));
        fprintf(out,
                "{\"type\":\"BuyRequested\",\"id\":\"%s\",\"time\":\"%s\",\"data\":{\"request_id\":\"%s\","
                "\"session_id\":\"%s\",\"client_ip\":\"%s\",\"user_id\":\"%s\",\"user_level\":%d,\"sku\":\"%s\","
                "\"quantity\":%d,\"requested_at\":\"%s\",\"channel\":\"loadgen\"}}\n",
                ev.id, ts, r.request_id, r.session_id, r.client_ip, r.user_id, r.level, r.sku, r.quantity, ts);
    }
    return OL_ERR_OK;
}

/* ---- the summary ------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n), in milliseconds. */
static double pct_ms(const int64_t *v, size_t n, double p) {
    if (!n)
        return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return (double)v[rank ? rank - 1 : 0] / 1000.0;
}

/* Sorts v[0..n) and gives its p50 and p99 in milliseconds. */
static void percentiles(int64_t *v, size_t n, double *p50, double *p99) {
    qsort(v, n, sizeof(*v), cmp_i64);
    *p50 = pct_ms(v, n, 50);
    *p99 = pct_ms(v, n, 99);
}

typedef struct summary_s {
    long long sent, decided, accepted, rejected, reasons[NREASONS], missing, duplicated, extra;
    long long delivered, failed, foreign;
    double send_secs, send_rate, decide_secs, decisions_per_s, record_secs, record_decisions_per_s;
    double p50, p90, p99, max;
    /* the latency split at the decision's record time: request to fact
     * (waiting, batching, deciding) and fact to seen (the transaction's
     * end, the commit markers, the fetch); ms resolution, one clock when
     * loadgen and decide share a host */
    double to_fact_p50, to_fact_p99, after_fact_p50, after_fact_p99;
} summary_t;

static void summarize(loadgen_t *lg, long long sent, double send_secs, summary_t *s) {
    memset(s, 0, sizeof(*s));
    s->sent = sent;
    s->send_secs = send_secs;
    s->send_rate = send_secs > 0 ? (double)sent / send_secs : 0;
    int64_t *lat = ol_xmalloc(((size_t)sent + 1) * sizeof(*lat));
    int64_t *to_fact = ol_xmalloc(((size_t)sent + 1) * sizeof(*to_fact));
    int64_t *after_fact = ol_xmalloc(((size_t)sent + 1) * sizeof(*after_fact));
    size_t nlat = 0, nsplit = 0;
    for (long long i = 0; i < sent; i++) {
        const req_t *r = &lg->reqs[i];
        if (!r->ndecisions) {
            s->missing++;
            continue;
        }
        s->decided++;
        if (r->ndecisions > 1) {
            s->duplicated++;
            s->extra += r->ndecisions - 1;
        }
        if (r->outcome == OUTCOME_ACCEPTED) {
            s->accepted++;
        } else {
            s->rejected++;
            s->reasons[r->outcome - 1]++;
        }
        int64_t l = r->decided_us - atomic_load_explicit(&lg->reqs[i].send_us, memory_order_relaxed);
        lat[nlat++] = l > 0 ? l : 0;
        if (r->fact_ms > 0) {
            int64_t before = r->fact_ms - atomic_load_explicit(&r->send_ms, memory_order_relaxed);
            to_fact[nsplit] = before > 0 ? before * 1000 : 0;
            after_fact[nsplit++] = r->seen_ms > r->fact_ms ? (r->seen_ms - r->fact_ms) * 1000 : 0;
        }
    }
    qsort(lat, nlat, sizeof(*lat), cmp_i64);
    percentiles(to_fact, nsplit, &s->to_fact_p50, &s->to_fact_p99);
    percentiles(after_fact, nsplit, &s->after_fact_p50, &s->after_fact_p99);
    free(to_fact);
    free(after_fact);
    s->p50 = pct_ms(lat, nlat, 50);
    s->p90 = pct_ms(lat, nlat, 90);
    s->p99 = pct_ms(lat, nlat, 99);
    s->max = nlat ? (double)lat[nlat - 1] / 1000.0 : 0;
    free(lat);
    s->decide_secs = (double)(lg->last_decision_us - lg->first_decision_us) / 1e6;
    s->decisions_per_s = s->decided > 1 && s->decide_secs > 0 ? (double)(s->decided - 1) / s->decide_secs : 0;
    s->record_secs = (double)(lg->last_record_ms - lg->first_record_ms) / 1e3;
    s->record_decisions_per_s = s->decided > 1 && s->record_secs > 0 ? (double)(s->decided - 1) / s->record_secs : 0;
    s->delivered = atomic_load(&lg->delivered);
    s->failed = atomic_load(&lg->failed);
    s->foreign = atomic_load(&lg->foreign);
}

static void print_summary(const loadgen_t *lg, const summary_t *s) {
    printf("run %s: sent %lld requests to %s in %.2f s (%.0f/s), %lld delivered, %lld failed\n", lg->run, s->sent,
           lg->topic_buy, s->send_secs, s->send_rate, s->delivered, s->failed);
    printf("decided %lld of %lld: %lld without a decision, %lld with more than one (%lld extra decisions)\n",
           s->decided, s->sent, s->missing, s->duplicated, s->extra);
    printf("accepted %lld, rejected %lld (", s->accepted, s->rejected);
    for (int i = 0; i < NREASONS; i++)
        printf("%s%s %lld", i ? ", " : "", reason_names[i], s->reasons[i]);
    printf(")\n");
    printf("decisions/s %.0f (%lld decisions, first to last %.3f s as seen here; %.0f/s by their record times)\n",
           s->decisions_per_s, s->decided, s->decide_secs, s->record_decisions_per_s);
    printf("latency ms (decision seen - request handed to Kafka): p50 %.1f p90 %.1f p99 %.1f max %.1f\n", s->p50,
           s->p90, s->p99, s->max);
    printf("  split at the decision's record time (ms): request to fact p50 %.0f p99 %.0f, fact to seen p50 %.0f p99 "
           "%.0f\n",
           s->to_fact_p50, s->to_fact_p99, s->after_fact_p50, s->after_fact_p99);
}

static void print_json(const loadgen_t *lg, const summary_t *s) {
    json_t *reasons = json_object();
    for (int i = 0; i < NREASONS; i++)
        json_object_set_new(reasons, reason_names[i], json_integer(s->reasons[i]));
    json_t *j = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:{s:f, s:f, s:f, "
        "s:f}, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
        "run", lg->run, "sent", (json_int_t)s->sent, "delivered", (json_int_t)s->delivered, "failed",
        (json_int_t)s->failed, "decided", (json_int_t)s->decided, "accepted", (json_int_t)s->accepted, "rejected",
        reasons, "rejected_total", (json_int_t)s->rejected, "missing", (json_int_t)s->missing, "duplicated",
        (json_int_t)s->duplicated, "decisions_per_s", s->decisions_per_s, "decide_secs", s->decide_secs, "send_rate",
        s->send_rate, "send_secs", s->send_secs, "latency_ms", "p50", s->p50, "p90", s->p90, "p99", s->p99, "max",
        s->max, "to_fact_p50_ms", s->to_fact_p50, "to_fact_p99_ms", s->to_fact_p99, "fact_to_seen_p50_ms",
        s->after_fact_p50, "fact_to_seen_p99_ms", s->after_fact_p99, "offered_rate", lg->opt.rate, "wait_ms",
        (double)lg->opt.wait_ms, "record_decisions_per_s", s->record_decisions_per_s, "record_secs", s->record_secs);
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    printf("%s\n", text);
    free(text);
    json_decref(j);
}

/* ---- the command ------------------------------------------------------------------ */

static ol_err_t check_cluster(loadgen_t *lg, char *errstr, size_t errstr_size) {
    ol_err_t err = ol_kafka_wait_cluster(lg->producer, lg->conf, errstr, errstr_size);
    return err ? err : ol_contract_check_topics(lg->producer, lg->conf, errstr, errstr_size);
}

/* The run's names: its id, the request ids' prefix, the topics, the source. */
static void loadgen_name(loadgen_t *lg) {
    const ol_conf_t *conf = lg->conf;
    if (lg->opt.run_id) {
        snprintf(lg->run, sizeof(lg->run), "%s", lg->opt.run_id);
    } else {
        char uuid[37];
        ol_uuid_v4(uuid);
        snprintf(lg->run, sizeof(lg->run), "%.8s", uuid);
    }
    snprintf(lg->prefix, sizeof(lg->prefix), "lg-%s-", lg->run);
    lg->prefix_len = strlen(lg->prefix);
    ol_kafka_topic_name(conf, "buy-requests", lg->topic_buy, sizeof(lg->topic_buy));
    ol_kafka_topic_name(conf, "sale-events", lg->topic_sale, sizeof(lg->topic_sale));
    snprintf(lg->source, sizeof(lg->source), "%.100s/loadgen", ol_conf_str(conf, "event.source"));
}

/* Makes the clients, checks the cluster and its topics, starts the reader
 * of decisions; the exit status when that fails (said). */
static int loadgen_start(loadgen_t *lg) {
    char errstr[512];
    if (clients_new(lg, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog loadgen: %s\n", errstr); /* a bad property */
        return OL_EXIT_USAGE;
    }
    lg->reqs = ol_xcalloc((size_t)lg->opt.count, sizeof(*lg->reqs));
    if (check_cluster(lg, errstr, sizeof(errstr)) || consumer_start(lg, errstr, sizeof(errstr))) {
        ol_log_error("loadgen: %s", errstr);
        return OL_EXIT_FAIL;
    }
    return OL_EXIT_OK;
}

/* Sends the requests at --rate (or as fast as Kafka takes them) until
 * --count, a signal or an error (said); *sent how many, *secs how long. */
static ol_err_t send_all(loadgen_t *lg, FILE *out, long long *sent_out, double *secs) {
    const options_t *o = &lg->opt;
    char errstr[512];
    ol_codec_t *codec = ol_codec_new();
    ol_arena_t *arena = ol_arena_new(16 * 1024);
    uint64_t rng = o->seed;
    long long sent = 0;
    ol_err_t err = OL_ERR_OK;
    int64_t t0 = ol_time_mono_us(), last_log = t0;
    while (sent < o->count && !stop_requested && !err) {
        long long due = o->count;
        if (o->rate > 0) {
            int64_t now = ol_time_mono_us();
            due = (long long)((double)(now - t0) * o->rate / 1e6) + 1;
            if (due > o->count)
                due = o->count;
            if (due <= sent) {
                int64_t next_us = t0 + (int64_t)((double)sent * 1e6 / o->rate);
                rd_kafka_poll(lg->producer, 0);
                if (next_us > now)
                    sleep_us(next_us - now < 1000 ? next_us - now : 1000);
                continue;
            }
        }
        long long stop_at = due < sent + 1000 ? due : sent + 1000;
        for (; sent < stop_at && !err; sent++)
            err = send_one(lg, codec, arena, &rng, sent, out, errstr, sizeof(errstr));
        rd_kafka_poll(lg->producer, 0);
        int64_t now = ol_time_mono_us();
        if (now - last_log > 5000000) {
            ol_log_info("loadgen: sent %lld, decided %lld", sent, (long long)atomic_load(&lg->decided));
            last_log = now;
        }
    }
    ol_arena_destroy(arena);
    ol_codec_destroy(codec);
    *secs = (double)(ol_time_mono_us() - t0) / 1e6;
    *sent_out = sent;
    if (err)
        ol_log_error("loadgen: %s", errstr);
    return err;
}

/* Waits up to --wait-ms for a decision of each request sent, then reads
 * whatever else is committed by then, and stops the reader. */
static void wait_decisions(loadgen_t *lg, long long sent) {
    int64_t deadline = ol_time_mono_us() + lg->opt.wait_ms * 1000;
    int64_t last_log = ol_time_mono_us();
    while (atomic_load(&lg->decided) < sent && !stop_requested && ol_time_mono_us() < deadline) {
        sleep_us(10000);
        if (ol_time_mono_us() - last_log > 5000000) {
            ol_log_info("loadgen: decided %lld of %lld", (long long)atomic_load(&lg->decided), sent);
            last_log = ol_time_mono_us();
        }
    }
    consumer_drain(lg, 3000);
    atomic_store(&lg->stop_consumer, true);
    pthread_join(lg->thread, NULL);
    lg->thread = 0;
}

/* Prints the summary; the exit status: 0 when every request was sent and
 * got exactly one decision. */
static int report(loadgen_t *lg, long long sent, double send_secs, ol_err_t err) {
    summary_t s;
    summarize(lg, sent, send_secs, &s);
    print_summary(lg, &s);
    if (lg->opt.json)
        print_json(lg, &s);
    fflush(stdout);
    if (!err && !stop_requested && !s.failed && !s.missing && !s.duplicated && sent >= lg->opt.count)
        return OL_EXIT_OK;
    ol_log_error("loadgen: %s", s.missing || s.duplicated ? "not exactly one decision per request"
                                : s.failed                ? "requests were not delivered"
                                                          : "stopped before every request was sent");
    if (s.failed)
        ol_log_error("loadgen: first delivery error: %s", lg->first_failure);
    return OL_EXIT_FAIL;
}

static void loadgen_free(loadgen_t *lg) {
    if (lg->thread) {
        atomic_store(&lg->stop_consumer, true);
        pthread_join(lg->thread, NULL);
    }
    if (lg->consumer) {
        ol_kafka_consumer_close(lg->consumer);
        rd_kafka_destroy(lg->consumer);
    }
    if (lg->producer)
        rd_kafka_destroy(lg->producer);
    pthread_mutex_destroy(&lg->mu);
    free(lg->reqs);
    free(lg);
}

static int loadgen_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512];
    options_t opt = {0};
    int rc = ol_loadgen__parse_options(argc, argv, &opt);
    if (rc)
        return rc;
    if (ol_schema_init(errstr, sizeof(errstr))) {
        ol_log_error("loadgen: %s", errstr);
        return OL_EXIT_FAIL;
    }
    loadgen_t *lg = ol_xcalloc(1, sizeof(*lg));
    lg->conf = conf;
    lg->opt = opt;
    const options_t *o = &lg->opt;
    lg->buy_requested = ol_schema_find("BuyRequested");
    OL_ASSERT(lg->buy_requested);
    loadgen_name(lg);
    pthread_mutex_init(&lg->mu, NULL);
    FILE *out = NULL;
    rc = OL_EXIT_FAIL;
    if (o->out && !(out = fopen(o->out, "w"))) {
        ol_log_error("loadgen: could not write %s: %s", o->out, strerror(errno));
        goto out;
    }
    if ((rc = loadgen_start(lg)))
        goto out;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    ol_log_info("loadgen: run %s: %lld requests to %s at %s from %lld users (seed %" PRIu64 ")", lg->run, o->count,
                lg->topic_buy, o->rate > 0 ? "a fixed rate per second" : "the highest rate", o->users, o->seed);
    long long sent;
    double send_secs;
    ol_err_t err = send_all(lg, out, &sent, &send_secs);
    if (out && fflush(out)) {
        ol_log_error("loadgen: could not write %s: %s", o->out, strerror(errno));
        err = OL_ERR_IO;
    }
    rd_kafka_flush(lg->producer, 60000);
    ol_log_info("loadgen: all sent: %lld requests (%lld delivered, %lld failed) in %.2f s", sent,
                (long long)atomic_load(&lg->delivered), (long long)atomic_load(&lg->failed), send_secs);
    wait_decisions(lg, sent);
    rc = report(lg, sent, send_secs, err);
out:
    if (out && fclose(out) && rc == OL_EXIT_OK) {
        ol_log_error("loadgen: could not write %s: %s", o->out, strerror(errno));
        rc = OL_EXIT_FAIL;
    }
    loadgen_free(lg);
    return rc;
}

const ol_cmd_t ol_cmd_loadgen = {
    "loadgen", loadgen_run, "simulated flash-sale shoppers: send BuyRequested, time every decision",
    "usage: orderlog loadgen [options]\n"
    "  Sends BuyRequested to buy-requests (Avro, CloudEvents headers, key sku) and reads sale-events\n"
    "  (read_committed, from its end at start) for the BuyAccepted or BuyRejected of each. Prints sent,\n"
    "  decided, accepted, rejected by reason, decisions/s (first to last decision) and the latency\n"
    "  (decision seen - request handed to Kafka) p50/p90/p99/max, split at the decision's record\n"
    "  timestamp (the decider's clock: one host, one clock) into request to fact and fact to seen.\n"
    "  Exits 1 unless every request got exactly one decision.\n"
    "  --count N              requests to send (default 10000)\n"
    "  --rate R               requests per second (default 0: as fast as possible)\n"
    "  --users U              shoppers LGU00000000.. (default 100000), picked at random\n"
    "  --sequential-users     request n comes from user n mod U (U >= N: every request a new user)\n"
    "  --hot-sku SKU          the SKU of the sale ...\n"
    "  --hot-share F          ... asked for by this share of the requests (default 0.5)\n"
    "  --skus K               the others ask for SKU-00001..SKU-<K> (default 1000)\n"
    "  --max-quantity Q       units per request, 1..Q at random (default 1)\n"
    "  --blacklisted-share F  share of requests from 203.0.113.1-3 (blacklisted by ops/sample-events catalog)\n"
    "  --seed S               the shoppers and their levels (0-5 per user) follow from it (default 1)\n"
    "  --run-id ID            request ids are lg-<ID>-<n> (default: random; never reuse one on a topic)\n"
    "  --out FILE             every request sent, as a publish-format JSON line (for ops/oracle)\n"
    "  --wait-ms MS           longest wait for the decisions after the last send (default 60000)\n"
    "  --json                 the summary also as one JSON line (last line of stdout)\n"};
