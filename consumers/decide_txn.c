/* decide: the worker loop, a batch collected and decided in one Kafka
 * transaction with its consumed offsets. */
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

/* ---- the worker loop ------------------------------------------------------ */

void ol_decide__batch_clear(worker_t *w) {
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
    while (w->nbatch < d->batch_events && !ol_decide__stop) {
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
            ol_decide__batch_clear(w);
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
            ol_decide__batch_clear(w);
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

static txn_result_t run_batch(worker_t *w) {
    char errstr[512];
    int64_t now = ol_time_now_ms(), txn_t0 = ol_time_mono_us();
    rd_kafka_error_t *e = rd_kafka_begin_transaction(w->producer);
    if (e)
        return ol_decide__txn_failed(w, e, "begin transaction");
    /* the states as committed, before this batch's facts */
    ol_err_t err = ol_decide__snapshot_due(w, errstr, sizeof(errstr));
    if (!err)
        err = ol_decide__expire_due(w, now, errstr, sizeof(errstr));
    for (size_t i = 0; i < w->nbatch && !err; i++)
        err = ol_decide__handle(w, w->batch[i], now, errstr, sizeof(errstr));
    if (err == OL_ERR_TRANSIENT) /* the producer refusing a record */
        return ol_decide__abort_batch(w, errstr);
    if (err) {
        /* our own failure (a fact that does not encode): nothing of the
         * batch may stay */
        ol_log_error("decide: worker %d: %s", w->index, errstr);
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(w->producer, TXN_CALL_MS);
        if (ae)
            rd_kafka_error_destroy(ae);
        ol_decide__fail(w, errstr);
        return TXN_FATAL;
    }
    int64_t commit_t0 = ol_time_mono_us();
    if (w->nbatch) {
        rd_kafka_topic_partition_list_t *offs = batch_offsets(w);
        rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(w->consumer);
        e = ol_decide__txn_call(w, CALL_OFFSETS, offs, cgmd, "send offsets to the transaction");
        rd_kafka_consumer_group_metadata_destroy(cgmd);
        rd_kafka_topic_partition_list_destroy(offs);
        if (e)
            return ol_decide__txn_failed(w, e, "send offsets to the transaction");
    }
    /* retried while the cluster does not answer; a stop gives up (the
     * transaction is then aborted by the broker after transaction.timeout.ms,
     * or at once by the next start with the same decide.instance) */
    if ((e = ol_decide__txn_call(w, CALL_COMMIT, NULL, NULL, "commit transaction")))
        return ol_decide__txn_failed(w, e, "commit transaction");
    atomic_fetch_add(&w->txns, 1);
    rd_kafka_poll(w->producer, 0); /* delivery reports left, if any: the states' positions */
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
    ol_decide__observe_txn(w, txn_t0, commit_t0);
    ol_decide__observe_state(w);
    ol_decide__resume_caught_up(w);
    return TXN_OK;
}

void *ol_decide__worker_main(void *arg) {
    worker_t *w = arg;
    w->progress_us = ol_time_mono_us();
    while (!ol_decide__stop && !w->failed) {
        if (atomic_exchange(&w->renew_asked, false)) {
            ol_decide__renew_consumer(w, "the group watch found the group stalled", false);
            continue;
        }
        if (w->consumer_fatal) {
            char why[512] = "";
            if (!rd_kafka_fatal_error(w->consumer, why, sizeof(why)))
                snprintf(why, sizeof(why), "fatal consumer error");
            ol_decide__renew_consumer(w, why, true);
            continue;
        }
        if (w->producer_fatal) {
            if (ol_time_mono_us() >= w->retry_at_us)
                ol_decide__renew_producer(w);
            else
                ol_decide__pause_ms(100);
            continue;
        }
        if (w->retake && ol_time_mono_us() >= w->retry_at_us) {
            ol_decide__retake(w);
            continue;
        }
        ol_decide__check_stall(w);
        collect(w);
        if (w->failed || w->consumer_fatal)
            continue;
        if (!w->nbatch && next_expiry(w) > ol_time_now_ms())
            continue;
        run_batch(w);
        ol_decide__batch_clear(w);
    }
    ol_decide__batch_clear(w);
    return NULL;
}
