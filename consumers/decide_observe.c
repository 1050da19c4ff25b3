/* decide: /metrics, /healthz and /readyz. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/decide.h"

static const char *const dlq_stages[] = {"decode", "placement", "decide", NULL};
static const char *const retry_calls[] = {"committed_offsets", "send_offsets", "commit", "abort", NULL};

void ol_decide__observe_dlq(decide_t *d, const char *stage) {
    size_t i = 0;
    while (dlq_stages[i + 1] && strcmp(dlq_stages[i], stage))
        i++;
    ol_metric_inc(d->m_dlq, i);
}

/* A retriable error of a Kafka call (e taken; NULL when there is none). */
void ol_decide__observe_retry(worker_t *w, rd_kafka_error_t *e, const char *call) {
    if (e)
        rd_kafka_error_destroy(e);
    ol_metric_inc(w->d->m_retries, ol_metric_cell(w->d->m_retries, call, NULL));
}

void ol_decide__observe_txn(worker_t *w, int64_t txn_t0_us, int64_t commit_t0_us) {
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
void ol_decide__observe_state(worker_t *w) {
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
    if (ol_decide__stop)
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

/* The metrics of restores, the blacklist and the workers' consumers. */
static void observe_restores_and_clients(decide_t *d, ol_metrics_t *reg) {
    d->m_restored = ol_metrics_counter(reg, "orderlog_decide_restored_partitions_total",
                                       "Partitions whose state was rebuilt from sale-events (at assignment, after "
                                       "an abort).");
    ol_metrics_func_value(reg, OL_METRIC_GAUGE, "orderlog_decide_restoring_partitions",
                          "Partitions being restored from sale-events now (buys wait for them).", restoring_fn, d);
    static const ol_metric_field_t restore_facts = {"orderlog_decide_restore_facts_total",
                                                    "Facts read back from sale-events while restoring.",
                                                    OL_METRIC_COUNTER, offsetof(decide_t, restore_facts)};
    ol_metrics_fields(reg, &restore_facts, 1, d, 1, sizeof(*d));
    d->m_snapshots = ol_metrics_counter(reg, "orderlog_decide_snapshots_total",
                                        "Snapshots of a partition's state written to decide-snapshots.");
    d->m_restored_snapshot = ol_metrics_counter(reg, "orderlog_decide_restored_from_snapshot_total",
                                                "Partitions restored from a snapshot (then the facts after it).");
    d->m_restore_seconds = ol_metrics_seconds(reg, "orderlog_decide_restore_duration_seconds",
                                              "Time to restore the partitions of one assignment.");
    ol_metrics_func_value(reg, OL_METRIC_GAUGE, "orderlog_decide_blacklist_entries",
                          "Subjects on the blacklist as decide knows it.", blacklist_fn, d);
    ol_kafka_observe_consumers(reg, "decide",
                               "Records between a worker's position and the end of each assigned partition of "
                               "buy-requests and skus.",
                               "Partitions of buy-requests assigned to the workers.", lag_fn, assigned_fn, d);
}

/* The registry and, with http.listen set, the endpoint. */
ol_err_t ol_decide__observe_start(decide_t *d, char *errstr, size_t errstr_size) {
    ol_metrics_t *reg = d->reg = ol_metrics_new();
    ol_metrics_add_process(reg);
    /* the workers' counters and gauges (atomic_llong fields of worker_t), summed */
    static const ol_metric_field_t worker_sums[] = {
        {"orderlog_decide_decisions_total", "Buy requests decided (accepted or rejected).", OL_METRIC_COUNTER,
         offsetof(worker_t, decisions)},
        {"orderlog_decide_facts_total", "Facts written to sale-events (in committed or aborted transactions).",
         OL_METRIC_COUNTER, offsetof(worker_t, facts)},
        {"orderlog_decide_open_holds", "Holds placed and not yet converted or released, in the owned partitions.",
         OL_METRIC_GAUGE, offsetof(worker_t, open_holds)},
        {"orderlog_decide_state_bytes", "Memory of the sale state of the owned partitions, estimated.", OL_METRIC_GAUGE,
         offsetof(worker_t, state_bytes)},
        {"orderlog_decide_remembered_requests",
         "Request ids remembered in the owned partitions (decided within decide.idempotency.window.ms, or of an "
         "open hold).",
         OL_METRIC_GAUGE, offsetof(worker_t, remembered)},
        {"orderlog_decide_skus", "SKUs known in the owned partitions (counted at most once a second).", OL_METRIC_GAUGE,
         offsetof(worker_t, skus)},
    };
    ol_metrics_fields(reg, worker_sums, sizeof(worker_sums) / sizeof(worker_sums[0]), d->workers, (size_t)d->nworkers,
                      sizeof(*d->workers));
    ol_metrics_func_by(reg, OL_METRIC_COUNTER, "orderlog_decide_transactions_total",
                       "Kafka transactions, by outcome (aborted: taken up again from the log).", "outcome", txns_fn, d);
    d->m_txn_seconds = ol_metrics_seconds(reg, "orderlog_decide_transaction_duration_seconds",
                                          "Time of a committed transaction (one batch), begin to commit.");
    d->m_commit_seconds = ol_metrics_seconds(reg, "orderlog_decide_commit_duration_seconds",
                                             "Time to send the offsets and commit a transaction.");
    d->m_dlq = ol_metrics_counter_by(reg, "orderlog_decide_dlq_records_total",
                                     "Records sent to the dlq topic, by the stage that refused them (in a "
                                     "transaction: an aborted one sends them again).",
                                     "stage", dlq_stages);
    d->m_retries = ol_metrics_counter_by(reg, "orderlog_decide_retries_total",
                                         "Kafka calls retried after a retriable error, by call.", "call", retry_calls);
    observe_restores_and_clients(d, reg);
    ol_http_conf_t hc = {ol_conf_str(d->conf, "http.listen"), reg, decide_live, decide_ready, d};
    return ol_http_serve(&hc, &d->http, errstr, errstr_size);
}

/* Before the workers' handles go. */
void ol_decide__observe_stop(decide_t *d) {
    ol_http_stop(d->http);
    d->http = NULL;
}
