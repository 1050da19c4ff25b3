/* decide: faults, and how a worker recovers from them.
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

static void drop_all(worker_t *w) {
    for (int p = 0; p < w->d->npartitions; p++)
        ol_decide__part_drop(&w->parts[p]);
}

/* Waits ms, or less when a stop is requested. */
void ol_decide__pause_ms(int64_t ms) {
    for (int64_t end = ol_time_mono_us() + ms * 1000; !ol_decide__stop && ol_time_mono_us() < end;) {
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

/* Makes one transaction call, again while it fails retriably, until a stop
 * is requested, or, when the cluster answers all along, for at most
 * STALL_MS. Returns its last error (NULL: done). */
rd_kafka_error_t *ol_decide__txn_call(worker_t *w, txn_call_t call, const rd_kafka_topic_partition_list_t *offs,
                                      const rd_kafka_consumer_group_metadata_t *cgmd, const char *what) {
    int64_t t0 = ol_time_mono_us(), said = t0;
    for (;;) {
        int64_t call_t0 = ol_time_mono_us();
        rd_kafka_error_t *e = call == CALL_COMMIT ? rd_kafka_commit_transaction(w->producer, TXN_CALL_MS)
                              : call == CALL_ABORT
                                  ? rd_kafka_abort_transaction(w->producer, TXN_CALL_MS)
                                  : rd_kafka_send_offsets_to_transaction(w->producer, offs, cgmd, TXN_CALL_MS);
        if (!e || !rd_kafka_error_is_retriable(e) || ol_decide__stop)
            return e;
        int64_t now = ol_time_mono_us();
        trouble(w);
        if (now - t0 >= (int64_t)STALL_MS * 1000 && ol_kafka_cluster_answers(w->producer)) {
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
        ol_decide__observe_retry(w, e, call == CALL_COMMIT ? "commit" : call == CALL_ABORT ? "abort" : "send_offsets");
        if (now - call_t0 < 100 * 1000)
            ol_decide__pause_ms(100);
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
txn_result_t ol_decide__abort_batch(worker_t *w, const char *reason) {
    ol_log_warn("decide: worker %d: %s: aborting the transaction and taking the partitions again from their "
                "committed offsets",
                w->index, reason);
    trouble(w);
    drop_all(w);
    rd_kafka_error_t *e = ol_decide__txn_call(w, CALL_ABORT, NULL, NULL, "abort transaction");
    if (e) {
        char why[600];
        snprintf(why, sizeof(why), "abort transaction: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return ol_decide__stop ? TXN_FATAL : producer_failed(w, why);
    }
    atomic_fetch_add(&w->aborts, 1);
    w->retake = true;
    w->retry_at_us = 0;
    return TXN_ABORTED;
}

/* A transaction call failed (not retriably, or a stop ended the retries). */
txn_result_t ol_decide__txn_failed(worker_t *w, rd_kafka_error_t *e, const char *what) {
    char why[600];
    snprintf(why, sizeof(why), "%s: %s", what, rd_kafka_error_string(e));
    bool fatal = rd_kafka_error_is_fatal(e), abortable = rd_kafka_error_txn_requires_abort(e);
    rd_kafka_error_destroy(e);
    if (ol_decide__stop) /* the broker or the next start aborts what is open */
        return TXN_FATAL;
    if (abortable && !fatal)
        return ol_decide__abort_batch(w, why);
    return producer_failed(w, why);
}

void ol_decide__fail(worker_t *w, const char *errstr) {
    if (!w->failed)
        snprintf(w->errstr, sizeof(w->errstr), "%.*s", (int)sizeof(w->errstr) - 1, errstr);
    w->failed = true;
    atomic_store(&w->down, true);
    ol_decide__stop = 1;
}

/* A new producer with the same transactional.id: init_transactions fences
 * the old one and aborts what it left open; then the partitions are taken
 * again. Called with w->producer_fatal set; clears it when done. */
void ol_decide__renew_producer(worker_t *w) {
    char errstr[1024];
    int64_t now = ol_time_mono_us();
    if (!w->fatal_since_us)
        w->fatal_since_us = now;
    else if (now - w->fatal_since_us > (int64_t)RECOVER_MAX_MS * 1000) {
        snprintf(errstr, sizeof(errstr),
                 "the transactional producer %s kept failing for %.0f s without a committed transaction (last: %.300s)",
                 w->txid, (double)(now - w->fatal_since_us) / 1e6, w->fatal_reason);
        ol_decide__fail(w, errstr);
        return;
    }
    ol_log_warn("decide: worker %d: the transactional producer failed (%s): replacing it (transactional.id %s, which "
                "fences the old one), then restoring the partitions and taking them again from their committed offsets",
                w->index, w->fatal_reason, w->txid);
    drop_all(w);
    pthread_mutex_lock(&w->clients_lock);
    if (w->producer)
        rd_kafka_purge(w->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    ol_decide__producer_destroy(w);
    w->producer = ol_decide__producer_new(w, errstr, sizeof(errstr));
    pthread_mutex_unlock(&w->clients_lock);
    if (!w->producer) {
        ol_decide__fail(w, errstr);
        return;
    }
    int64_t t0 = ol_time_mono_us(), said = t0;
    rd_kafka_error_t *e;
    while ((e = rd_kafka_init_transactions(w->producer, TXN_CALL_MS)) && rd_kafka_error_is_retriable(e) &&
           !ol_decide__stop) {
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
    if (ol_decide__stop)
        return;
    ol_decide__producer_topics(w);
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
void ol_decide__renew_consumer(worker_t *w, const char *why, bool fatal) {
    char errstr[1024];
    int64_t now = ol_time_mono_us();
    if (fatal && w->fenced_us && now - w->fenced_us < (int64_t)FENCED_AGAIN_MS * 1000) {
        snprintf(errstr, sizeof(errstr),
                 "consumer failed again %.0f s after it was replaced: %s (is another decide running with "
                 "decide.instance=%s in group %s?)",
                 (double)(now - w->fenced_us) / 1e6, why, ol_conf_str(w->d->conf, "decide.instance"), w->d->group);
        ol_decide__fail(w, errstr);
        return;
    }
    if (fatal)
        w->fenced_us = now;
    ol_log_warn("decide: worker %d: %s: replacing the consumer (group.instance.id %s); its partitions are taken "
                "again from their committed offsets",
                w->index, why, w->txid);
    trouble(w);
    ol_decide__batch_clear(w);
    drop_all(w);
    /* no close: it would leave the group or run the rebalance callback */
    pthread_mutex_lock(&w->clients_lock);
    rd_kafka_destroy_flags(w->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    atomic_store(&w->joined, false);
    w->consumer = ol_decide__consumer_new(w, errstr, sizeof(errstr));
    pthread_mutex_unlock(&w->clients_lock);
    if (!w->consumer || ol_decide__worker_subscribe(w, errstr, sizeof(errstr))) {
        ol_decide__fail(w, errstr);
        return;
    }
    w->consumer_fatal = w->retake = false;
    atomic_fetch_add(&w->recoveries, 1);
}

/* Takes the assigned partitions again, later when it fails. */
void ol_decide__retake(worker_t *w) {
    char errstr[512];
    ol_err_t err = ol_decide__recover(w, errstr, sizeof(errstr));
    if (!err) {
        w->retake = false;
        w->backoff_ms = 0;
        return;
    }
    if (ol_decide__stop || w->consumer_fatal)
        return;
    if (err != OL_ERR_TRANSIENT) {
        ol_decide__fail(w, errstr);
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
        if (ol_decide__ends(w, w->d->topic_buy, p, &lo, &hi, 0))
            return -1;
        lag += hi > pt->buy_next ? hi - pt->buy_next : 0;
        if (ol_decide__ends(w, w->d->topic_skus, p, &lo, &hi, 0))
            return -1;
        lag += hi > pt->skus_next ? hi - pt->skus_next : 0;
    }
    return lag;
}

/* Every 10 s: records waiting (or partitions not taken yet, a retake
 * pending), Kafka answering, nothing committed for STALL_MS is a stall: the
 * consumer is replaced once, then the process exits. Whether Kafka answers
 * is asked at the check; while it does not, the clock starts again (an
 * outage is no stall, and a worker gets STALL_MS after it). */
void ol_decide__check_stall(worker_t *w) {
    int64_t now = ol_time_mono_us();
    if (now < w->stall_check_us)
        return;
    w->stall_check_us = now + 10 * 1000 * 1000;
    if (now - w->progress_us < (int64_t)STALL_MS * 1000)
        return;
    if (!ol_kafka_cluster_answers(w->consumer)) {
        w->progress_us = now;
        return;
    }
    long long lag = w->retake ? -2 : input_lag(w);
    if (!lag) {
        w->progress_us = now;
        w->stalled = false;
        return;
    }
    char why[512];
    if (lag < 0)
        snprintf(why, sizeof(why), "its partitions %s for %.0f s, Kafka answering",
                 lag == -2 ? "could not be taken" : "could not be asked for their ends",
                 (double)(now - w->progress_us) / 1e6);
    else
        snprintf(why, sizeof(why),
                 "%lld records wait on its partitions and none was decided for %.0f s, Kafka answering", lag,
                 (double)(now - w->progress_us) / 1e6);
    if (w->stalled) {
        char errstr[600];
        snprintf(errstr, sizeof(errstr), "%s, even after its consumer was replaced", why);
        ol_decide__fail(w, errstr);
        return;
    }
    ol_log_error("decide: worker %d: %s", w->index, why);
    w->stalled = true;
    w->progress_us = now;
    ol_decide__renew_consumer(w, why, false);
}
