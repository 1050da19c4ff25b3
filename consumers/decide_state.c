/* decide: the partitions' states, restored from sale-events on assignment
 * (and after an abort), the rebalance callback, and the catalog-first
 * pause of buy-requests. */
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
#include "consumers/decide.h"

/* ---- restoring a partition from sale-events ------------------------------- */

/* The fact a sale-events record holds; false for CheckoutRejected (it
 * changes nothing) and anything that is not a fact. A StockChanged with a
 * currency sets the SKU's price. */
static bool fact_from_event(worker_t *w, int32_t p, const ol_event_type_t *et, const ol_json_t *d, ol_fact_t *f) {
    ol_sale_price_t price;
    if (!ol_sale_events_decode(et->name, d, w->arena, f, &price) || f->kind == OL_FACT_CHECKOUT_REJECTED)
        return false;
    if (f->kind == OL_FACT_STOCK_CHANGED && price.currency[0])
        ol_decide__set_price(&w->parts[p], f->sku, price.price, price.currency);
    return true;
}

static void free_value(void *opaque, const char *key, size_t key_len, void *value) {
    (void)opaque, (void)key, (void)key_len;
    free(value);
}

void ol_decide__part_drop(part_t *pt) {
    if (pt->sale)
        ol_sale_destroy(pt->sale);
    pt->sale = NULL;
    if (pt->prices) {
        ol_map_foreach(pt->prices, free_value, NULL);
        ol_map_destroy(pt->prices);
    }
    pt->prices = NULL;
}

/* Applies the fact of one sale-events record of an owned partition
 * (counted in *facts, and in *refused when the state refuses it); an
 * unreadable record fails the restore. */
static ol_err_t restore_record(worker_t *w, const rd_kafka_message_t *rkm, long long *facts, long long *refused,
                               char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    int32_t p = rkm->partition;
    char why[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_fact_t f;
    ol_arena_reset(w->arena);
    ol_err_t err = ol_event_decode_waiting(w->codec, rkm, w->arena, &env, &value, &ol_decide__stop, why, sizeof(why));
    if (err)
        return ol_errf(errstr, errstr_size, ol_err_is_retriable(err) ? err : OL_ERR_INVALID,
                       "%s [%" PRId32 "] offset %" PRId64 " cannot be read back (%s): refusing to decide on a "
                       "state that would miss it",
                       d->topic_sale, p, rkm->offset, why);
    if (!fact_from_event(w, p, env.type, ol_codec_to_dom(env.type, value, w->arena), &f))
        return OL_ERR_OK;
    (*facts)++;
    w->parts[p].snap_facts++;
    atomic_fetch_add_explicit(&d->restore_facts, 1, memory_order_relaxed);
    if (ol_sale_apply(w->parts[p].sale, &f, why, sizeof(why))) {
        (*refused)++;
        ol_log_warn("decide: %s [%" PRId32 "] offset %" PRId64 " contradicts the state, ignored: %s", d->topic_sale, p,
                    rkm->offset, why);
    }
    return OL_ERR_OK;
}

/* A restore that reads nothing for WAIT_LOG_MS says where it waits, every
 * WAIT_LOG_MS: each partition of rw->topic not read to its end, at which
 * offset of how many. Its end is the last stable offset (read_committed): a
 * transaction still open on the partition holds it back until it ends (the
 * broker aborts it after transaction.timeout.ms). Nothing read for
 * RESTORE_STUCK_MS while the cluster answers is a restore that will not end:
 * an error. */
static ol_err_t restore_waiting(worker_t *w, restore_watch_t *rw, char *errstr, size_t errstr_size) {
    int64_t now = ol_time_mono_us();
    if (now - rw->moved_us < (int64_t)WAIT_LOG_MS * 1000 || now - rw->said_us < (int64_t)WAIT_LOG_MS * 1000)
        return OL_ERR_OK;
    rw->said_us = now;
    char where[256] = "";
    size_t len = 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(rw->n);
    for (int i = 0; i < rw->n; i++)
        if (rw->end[rw->ps[i]] == -1)
            rd_kafka_topic_partition_list_add(l, rw->topic, rw->ps[i]);
    rd_kafka_position(w->restorer, l);
    for (int i = 0; i < l->cnt && len < sizeof(where) - 64; i++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_get_watermark_offsets(w->restorer, rw->topic, l->elems[i].partition, &lo, &hi);
        len += (size_t)snprintf(where + len, sizeof(where) - len, "%s[%" PRId32 "] at %" PRId64 " of %" PRId64,
                                i ? ", " : "", l->elems[i].partition, l->elems[i].offset, hi);
    }
    rd_kafka_topic_partition_list_destroy(l);
    double idle_s = (double)(now - rw->moved_us) / 1e6;
    if (now - rw->moved_us >= (int64_t)RESTORE_STUCK_MS * 1000 && ol_kafka_cluster_answers(w->restorer))
        return ol_errf(
            errstr, errstr_size, OL_ERR_INVALID,
            "restoring from %s: nothing read for %.0f s while Kafka answers (%s): a transaction left "
            "open on it holds read_committed readers back (kafka-transactions.sh find-hanging and abort end one "
            "that hangs)",
            rw->topic, idle_s, where);
    ol_log_warn("decide: worker %d: restoring: nothing read from %s for %.0f s (%s); waiting for its end (a "
                "transaction still open holds it back until it ends)",
                w->index, rw->topic, idle_s, where);
    return OL_ERR_OK;
}

ol_err_t ol_decide__restore_start(worker_t *w, restore_watch_t *rw, const char *topic, const int32_t *ps,
                                  const int64_t *from, int n, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, ps[i])->offset = from[i];
    rd_kafka_resp_err_t kerr = ol_kafka_assign(w->restorer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not read %s: %s", topic, rd_kafka_err2str(kerr));
    *rw = (restore_watch_t){
        topic, ps, n, n, ol_xmalloc((size_t)w->d->npartitions * sizeof(*rw->end)), ol_time_mono_us(), 0};
    for (int p = 0; p < w->d->npartitions; p++)
        rw->end[p] = -2;
    for (int i = 0; i < n; i++)
        rw->end[ps[i]] = -1;
    return OL_ERR_OK;
}

void ol_decide__restore_end(worker_t *w, restore_watch_t *rw) {
    free(rw->end);
    rw->end = NULL;
    ol_kafka_assign(w->restorer, NULL);
}

rd_kafka_message_t *ol_decide__restore_next(worker_t *w, restore_watch_t *rw, ol_err_t *err, char *errstr,
                                            size_t errstr_size) {
    while (rw->left > 0 && !*err) {
        if (ol_decide__stop) {
            *err = ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "stopped while restoring");
            break;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(w->restorer, 200);
        atomic_store_explicit(&w->beat_us, ol_time_mono_us(), memory_order_relaxed);
        if (!rkm) {
            *err = restore_waiting(w, rw, errstr, errstr_size);
            continue;
        }
        rw->moved_us = ol_time_mono_us();
        int32_t p = rkm->partition;
        /* a record of another topic: left over from an assignment before */
        bool ours = rkm->rkt && !strcmp(rd_kafka_topic_name(rkm->rkt), rw->topic) && p >= 0 && p < w->d->npartitions &&
                    rw->end[p] != -2;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (ours && rw->end[p] == -1) {
                rw->end[p] = rkm->offset;
                rw->left--;
            }
        } else if (rkm->err) {
            ol_log_warn("decide: reading %s: %s", rw->topic, rd_kafka_message_errstr(rkm));
        } else if (ours) {
            return rkm;
        }
        rd_kafka_message_destroy(rkm);
    }
    return NULL;
}

/* Rebuilds the state of partitions ps[0..n): from the latest snapshot of
 * each in decide-snapshots (with decide.snapshot.facts > 0) and the facts of
 * sale-events after it, or from sale-events read from its beginning; to
 * sale-events' end (read_committed). */
static ol_err_t restore(worker_t *w, const int32_t *ps, int n, char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    int64_t t0 = ol_time_mono_us();
    atomic_fetch_add(&w->restoring, n);
    int64_t *from = ol_xcalloc((size_t)n, sizeof(*from));
    long long snapshots = 0;
    for (int i = 0; i < n; i++) {
        part_t *pt = &w->parts[ps[i]];
        ol_decide__part_drop(pt);
        pt->sale = ol_sale_new(d->hold_ttl_ms, d->window_ms, d->bl);
        pt->prices = ol_map_new();
        pt->sale_next = 0;
        pt->snap_facts = pt->snap_seq = 0;
        pt->snap_chunks = 0;
        pt->snap_us = t0;
        from[i] = RD_KAFKA_OFFSET_BEGINNING;
    }
    ol_kafka_know_leaders(w->restorer, d->topic_sale);
    ol_err_t serr =
        d->snap_facts > 0 ? ol_decide__snapshot_read(w, ps, n, from, &snapshots, errstr, errstr_size) : OL_ERR_OK;
    for (int i = 0; i < n; i++)
        w->parts[ps[i]].sale_next = from[i] >= 0 ? from[i] : 0;
    restore_watch_t rw;
    ol_err_t err = serr ? serr : ol_decide__restore_start(w, &rw, d->topic_sale, ps, from, n, errstr, errstr_size);
    free(from);
    if (err) {
        atomic_fetch_sub(&w->restoring, n);
        return err;
    }
    long long facts = 0, refused = 0, bytes = 0;
    rd_kafka_message_t *rkm;
    while ((rkm = ol_decide__restore_next(w, &rw, &err, errstr, errstr_size))) {
        int32_t p = rkm->partition;
        bytes += (long long)rkm->len;
        if (w->parts[p].sale) {
            err = restore_record(w, rkm, &facts, &refused, errstr, errstr_size);
            if (rkm->offset + 1 > w->parts[p].sale_next)
                w->parts[p].sale_next = rkm->offset + 1;
        }
        rd_kafka_message_destroy(rkm);
    }
    for (int i = 0; i < n; i++)
        if (w->parts[ps[i]].sale && rw.end[ps[i]] > w->parts[ps[i]].sale_next)
            w->parts[ps[i]].sale_next = rw.end[ps[i]];
    ol_decide__restore_end(w, &rw);
    atomic_fetch_sub(&w->restoring, n);
    if (err)
        return err;
    ol_metric_add(d->m_restored, 0, (uint64_t)n);
    ol_metric_add(d->m_restored_snapshot, 0, (uint64_t)snapshots);
    ol_metric_observe(d->m_restore_seconds, 0, (double)(ol_time_mono_us() - t0) / 1e6);
    atomic_store(&w->skus_at_us, 0); /* counted again after the next batch */
    size_t holds = 0, remembered = 0;
    for (int i = 0; i < n; i++) {
        holds += ol_sale_open_holds(w->parts[ps[i]].sale);
        remembered += ol_sale_remembered(w->parts[ps[i]].sale);
    }
    ol_log_info("decide: worker %d restored %d partition(s) (%lld from a snapshot) from %s: %lld facts (%lld "
                "ignored; %.1f MB read), %zu open holds, %zu request ids remembered, %.0f ms",
                w->index, n, snapshots, d->topic_sale, facts, refused, (double)bytes / 1048576.0, holds, remembered,
                (double)(ol_time_mono_us() - t0) / 1e3);
    return OL_ERR_OK;
}

/* The ends of a partition, asked with the worker's consumer for at most
 * within_ms (one try when 0) or until a stop (ol_kafka_watermarks). */
rd_kafka_resp_err_t ol_decide__ends(worker_t *w, const char *topic, int32_t p, int64_t *lo, int64_t *hi,
                                    int within_ms) {
    return ol_kafka_watermarks(w->consumer, topic, p, 3000, ol_time_mono_us() + (int64_t)within_ms * 1000,
                               &ol_decide__stop, lo, hi);
}

/* Where each taken partition goes on from: buy-requests at its committed
 * offset (or its start), skus too, and its end now, up to which the
 * partition's buy-requests wait (added to pause). */
static ol_err_t positions(worker_t *w, const rd_kafka_topic_partition_list_t *parts,
                          rd_kafka_topic_partition_list_t *pause, char *errstr, size_t errstr_size) {
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[i];
        bool skus = !strcmp(tp->topic, w->d->topic_skus);
        part_t *pt = &w->parts[tp->partition];
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (!skus && tp->offset >= 0) {
            pt->buy_next = tp->offset;
            continue;
        }
        /* "unknown partition" until this handle has the topic's metadata;
         * "not leader" while a leader moves (seconds, after a broker died) */
        if ((kerr = ol_decide__ends(w, tp->topic, tp->partition, &lo, &hi, ENDS_WITHIN_MS)))
            return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not read the end of %s [%" PRId32 "]: %s",
                           tp->topic, tp->partition, rd_kafka_err2str(kerr));
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
    return OL_ERR_OK;
}

/* A buy-requests partition this handle paused (taken before its skus
 * caught up) stays paused through unassign and assign: resumed before it
 * is assigned again (and paused again if still behind). Only those: a
 * resume right after an assign can make librdkafka drop the assign's
 * offset. */
static void resume_paused(worker_t *w, const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *pt = &w->parts[parts->elems[i].partition];
        if (pt->paused && strcmp(parts->elems[i].topic, w->d->topic_skus)) {
            rd_kafka_topic_partition_list_add(l, parts->elems[i].topic, parts->elems[i].partition);
            pt->paused = false;
        }
    }
    if (l->cnt)
        rd_kafka_resume_partitions(w->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
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
        if (!kerr || kerr == RD_KAFKA_RESP_ERR__FATAL || ol_decide__stop || attempt >= 2)
            break;
        ol_log_warn("decide: worker %d: fetching committed offsets: %s (retrying)", w->index, rd_kafka_err2str(kerr));
        ol_decide__observe_retry(w, NULL, "committed_offsets");
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
    resume_paused(w, parts);
    ol_err_t err = restore(w, ps, n, errstr, errstr_size);
    rd_kafka_topic_partition_list_t *pause = rd_kafka_topic_partition_list_new(parts->cnt);
    if (!err)
        err = positions(w, parts, pause, errstr, errstr_size);
    if (!err && (kerr = ol_kafka_assign(w->consumer, parts))) {
        if (kerr == RD_KAFKA_RESP_ERR__FATAL)
            w->consumer_fatal = true;
        err = ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not assign: %s", rd_kafka_err2str(kerr));
    }
    if (err) {
        for (int i = 0; i < n; i++)
            ol_decide__part_drop(&w->parts[ps[i]]);
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
void ol_decide__resume_caught_up(worker_t *w) {
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

void ol_decide__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                             void *opaque) {
    worker_t *w = opaque;
    char errstr[512];
    w->rebalanced = true;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        ol_err_t terr = w->failed ? OL_ERR_OK : take(w, parts, errstr, sizeof(errstr));
        if (w->failed || (terr && (ol_decide__stop || w->consumer_fatal))) {
            /* stopping while restoring is no failure; a consumer that
             * failed for good is replaced by the worker loop */
            ol_kafka_assign(rk, NULL);
        } else if (terr == OL_ERR_TRANSIENT) {
            /* ours, without a state: their records are skipped until the
             * worker loop takes them again */
            ol_log_warn("decide: worker %d: could not take its partitions (%s): retrying", w->index, errstr);
            w->unreachable_us = ol_time_mono_us();
            ol_kafka_assign(rk, parts);
            w->retake = true;
            w->retry_at_us = 0;
        } else if (terr) {
            ol_decide__fail(w, errstr);
            ol_kafka_assign(rk, NULL);
        }
        atomic_store(&w->joined, true);
    } else {
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].partition >= 0 && parts->elems[i].partition < w->d->npartitions)
                ol_decide__part_drop(&w->parts[parts->elems[i].partition]);
        ol_kafka_assign(rk, NULL);
    }
}

/* Takes the partitions of the current assignment again (committed offsets,
 * restore, seek): after an aborted transaction, a new producer, or a take
 * that failed. */
ol_err_t ol_decide__recover(worker_t *w, char *errstr, size_t errstr_size) {
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
