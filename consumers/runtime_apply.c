/* The runtime's appliers: a batch's PostgreSQL transactions, each with the
 * offsets of its partitions, and the records of the batches. */
#include "consumers/runtime_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/base/pg.h"

/* ---- PostgreSQL --------------------------------------------------------- */

ol_err_t ol_rt__pg_ensure(ol_rt_t *rt, applier_t *ap, char *errstr, size_t errstr_size) {
    if (ap->pg && PQstatus(ap->pg) == CONNECTION_OK)
        return OL_ERR_OK;
    if (ap->pg)
        PQfinish(ap->pg);
    ap->pg = ol_pg_connect(rt->conf, errstr, errstr_size);
    return ap->pg ? OL_ERR_OK : OL_ERR_TRANSIENT;
}

/* Sleeps the backoff of attempt n: 100 ms doubling, capped at
 * consumer.retry.max.ms. */
void ol_rt__backoff(ol_rt_t *rt, int attempt) {
    int64_t ms = 100;
    for (int i = 0; i < attempt && ms < ol_conf_int(rt->conf, "consumer.retry.max.ms"); i++)
        ms *= 2;
    if (ms > ol_conf_int(rt->conf, "consumer.retry.max.ms"))
        ms = ol_conf_int(rt->conf, "consumer.retry.max.ms");
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    atomic_fetch_add(&rt->stats.retries, 1);
    atomic_store(&rt->stats.beat_us, ol_time_mono_us());
}

/* The stored next offsets of the given partitions (-1 where none); runs in
 * the current transaction when locking. */
ol_err_t ol_rt__load_offsets(ol_rt_t *rt, PGconn *pg, const span_t *spans, size_t n, int64_t *out, bool lock,
                             char *errstr, size_t errstr_size) {
    /* only the rows of these partitions: appliers working at once must not
     * wait on each other's locks */
    char sql[512], *list = ol_xmalloc(n * 24 + 8);
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(list + len, 24, "%s%d", i ? "," : "", (int)spans[i].partition);
    list[len] = '\0';
    snprintf(sql, sizeof(sql),
             "select topic, partition, next_offset from %s.consumer_offsets where group_id = $1 and partition = "
             "any($2::int[])%s",
             rt->schema, lock ? " order by topic, partition for update" : "");
    char *arr = ol_xmalloc(len + 3);
    snprintf(arr, len + 3, "{%s}", list);
    const char *params[] = {rt->group, arr};
    PGresult *res;
    ol_err_t err = ol_pg_query(&res, pg, sql, 2, params, errstr, errstr_size);
    free(list);
    free(arr);
    if (err)
        return err;
    for (size_t i = 0; i < n; i++)
        out[i] = -1;
    for (int r = 0; r < PQntuples(res); r++) {
        int t = ol_rt__topic_index(rt, PQgetvalue(res, r, 0));
        int32_t p = (int32_t)atoi(PQgetvalue(res, r, 1));
        for (size_t i = 0; i < n; i++)
            if (spans[i].topic == t && spans[i].partition == p)
                out[i] = atoll(PQgetvalue(res, r, 2));
    }
    PQclear(res);
    return OL_ERR_OK;
}

/* ---- the batch ---------------------------------------------------------- */

static void spans_build(const batch_t *b, applier_t *ap) {
    ap->nspans = 0;
    for (size_t i = 0; i < b->nrecs; i++) {
        rd_kafka_message_t *m = b->recs[i].rkm;
        if (!ol_rt__owns(ap, m->partition))
            continue;
        size_t k;
        for (k = 0; k < ap->nspans; k++)
            if (ap->spans[k].topic == b->recs[i].topic && ap->spans[k].partition == m->partition)
                break;
        if (k == ap->nspans) {
            if (ap->nspans == ap->spans_cap) {
                ap->spans_cap = ap->spans_cap ? ap->spans_cap * 2 : 64;
                ap->spans = ol_xrealloc(ap->spans, ap->spans_cap * sizeof(*ap->spans));
            }
            ap->spans[k] = (span_t){b->recs[i].topic, m->partition, m->offset, m->offset + 1};
            ap->nspans++;
        } else if (m->offset + 1 > ap->spans[k].next) {
            ap->spans[k].next = m->offset + 1;
        }
    }
}

void ol_rt__batch_clear(batch_t *b) {
    for (size_t i = 0; i < b->nrecs; i++)
        rd_kafka_message_destroy(b->recs[i].rkm);
    b->nrecs = 0;
    b->bytes = 0;
    b->folded = false;
    ol_arena_reset(b->arena);
}

/* Drops the records of b that the predicate matches; a folded batch then
 * needs folding again. */
void ol_rt__batch_drop(ol_rt_t *rt, batch_t *b, bool (*drop)(const void *ctx, const char *topic, int32_t partition),
                       const void *ctx) {
    size_t kept = 0;
    for (size_t i = 0; i < b->nrecs; i++) {
        rd_kafka_message_t *m = b->recs[i].rkm;
        if (drop(ctx, rt->topics[b->recs[i].topic], m->partition)) {
            rd_kafka_message_destroy(m);
            continue;
        }
        b->recs[kept++] = b->recs[i];
    }
    if (kept < b->nrecs)
        b->folded = false;
    b->nrecs = kept;
}

typedef struct spans_ctx_s {
    const ol_rt_t *rt;
    const applier_t *ap;
} spans_ctx_t;

static bool in_spans(const void *ctx, const char *topic, int32_t partition) {
    const spans_ctx_t *c = ctx;
    for (size_t i = 0; i < c->ap->nspans; i++)
        if (c->ap->spans[i].partition == partition && !strcmp(c->rt->topics[c->ap->spans[i].topic], topic))
            return true;
    return false;
}

/* Seeks the partitions of the batch back to their stored offsets (another
 * member applied part of it, or it was dropped). Poll thread: what the next
 * batch holds of them was read before the seek and is dropped. */
static void reseek(ol_rt_t *rt, const applier_t *ap) {
    spans_ctx_t ctx = {rt, ap};
    ol_rt__batch_drop(rt, rt->pipe.cur, in_spans, &ctx);
    for (size_t i = 0; i < ap->nspans; i++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rt->rk, rt->topics[ap->spans[i].topic], NULL);
        rd_kafka_seek(rkt, ap->spans[i].partition, ap->stored[i] >= 0 ? ap->stored[i] : ap->spans[i].first, 5000);
        rd_kafka_topic_destroy(rkt);
    }
}

/* Upserts the offsets of the batch's partitions: with done, their next
 * offsets (the batch is applied); without, their first offsets where no row
 * exists yet (nothing before the batch was applied). */
static ol_err_t offsets_write(ol_rt_t *rt, applier_t *ap, bool done, char *errstr, size_t errstr_size) {
    size_t cap = 512 + ap->nspans * 320;
    char *sql = ol_arena_alloc(ap->arena, cap);
    size_t len = (size_t)snprintf(
        sql, cap, "insert into %s.consumer_offsets (group_id, topic, partition, next_offset) values ", rt->schema);
    char *group = PQescapeLiteral(ap->pg, rt->group, strlen(rt->group));
    for (size_t i = 0; i < ap->nspans; i++) {
        const char *name = rt->topics[ap->spans[i].topic];
        char *topic = PQescapeLiteral(ap->pg, name, strlen(name));
        len +=
            (size_t)snprintf(sql + len, cap - len, "%s(%s, %s, %d, %lld)", i ? ", " : "", group, topic,
                             (int)ap->spans[i].partition, (long long)(done ? ap->spans[i].next : ap->spans[i].first));
        PQfreemem(topic);
    }
    PQfreemem(group);
    snprintf(sql + len, cap - len, "%s",
             done ? " on conflict (group_id, topic, partition) do update set next_offset = excluded.next_offset, "
                    "updated_at = now()"
                  : " on conflict (group_id, topic, partition) do nothing");
    return ol_pg_exec_ok(ap->pg, sql, errstr, errstr_size);
}

/* One transaction: check the offsets, apply, dlq, store the offsets, commit. */
static ol_err_t apply_once(ol_rt_t *rt, applier_t *ap, char *errstr, size_t errstr_size) {
    ol_err_t err;
    ap->stale = false;
    if ((err = ol_rt__pg_ensure(rt, ap, errstr, errstr_size)))
        return err;
    if ((err = ol_pg_exec_ok(ap->pg, "begin", errstr, errstr_size)))
        return err;
    if (!ol_conf_bool(rt->conf, "consumer.synchronous.commit") &&
        (err = ol_pg_exec_ok(ap->pg, "set local synchronous_commit = off", errstr, errstr_size)))
        goto out;
    /* a partition seen for the first time gets its row now, so that two
     * members racing on it serialize on the row like on any other */
    if ((err = offsets_write(rt, ap, false, errstr, errstr_size)) ||
        (err = ol_rt__load_offsets(rt, ap->pg, ap->spans, ap->nspans, ap->stored, true, errstr, errstr_size)))
        goto out;
    for (size_t i = 0; i < ap->nspans; i++) {
        /* records of this batch were applied already (by the member that had
         * the partition before): never apply twice. A stored offset below the
         * first record is normal: the consumer reads from the stored offset,
         * so what lies between is no record (transaction markers, aborted
         * records, retention) */
        if (ap->stored[i] > ap->spans[i].first) {
            ap->stale = true;
            ol_pg_exec_ok(ap->pg, "rollback", NULL, 0);
            return OL_ERR_OK;
        }
    }
    if ((err = rt->role->apply(rt, ap->pg, ap->states, ap->nstates, errstr, errstr_size)))
        goto out;
    if ((err = ol_rt__dlq_send(rt, ap, errstr, errstr_size)))
        goto out;
    /* the offsets, in the same transaction */
    if ((err = offsets_write(rt, ap, true, errstr, errstr_size)))
        goto out;
    if ((err = ol_pg_exec_ok(ap->pg, "commit", errstr, errstr_size)))
        return err == OL_ERR_PG ? OL_ERR_TRANSIENT : err; /* unknown outcome: the retry sees the offsets */
    return OL_ERR_OK;
out: /* a failure inside the transaction: roll it back */
    if (ap->pg && PQstatus(ap->pg) == CONNECTION_OK)
        ol_pg_exec_ok(ap->pg, "rollback", NULL, 0);
    return err;
}

/* One applier's part of the batch, retrying transient failures; the
 * outcome is left in ap->err / ap->errstr / ap->stale. */
static void applier_run(ol_rt_t *rt, applier_t *ap) {
    ap->err = OL_ERR_OK;
    ap->stale = false;
    if (!ap->nspans)
        return;
    int64_t shutdown_deadline = 0;
    for (int attempt = 0;; attempt++) {
        ap->err = apply_once(rt, ap, ap->errstr, sizeof(ap->errstr));
        ol_rt__observe_attempt(rt, ap);
        if (!ap->err && ap->stale) /* the poll thread seeks (ol_rt__batch_settle) */
            return;
        if (!ap->err || !ol_err_is_retriable(ap->err))
            return;
        if (rt->stop) {
            if (!shutdown_deadline)
                shutdown_deadline = ol_time_mono_us() + ol_conf_int(rt->conf, "consumer.shutdown.timeout.ms") * 1000;
            else if (ol_time_mono_us() > shutdown_deadline) {
                char keep[sizeof(ap->errstr)];
                snprintf(keep, sizeof(keep), "%s", ap->errstr);
                ap->err = ol_errf(ap->errstr, sizeof(ap->errstr), OL_ERR_TIMEOUT,
                                  "gave up on the batch in flight at shutdown (nothing of it committed): %.900s", keep);
                return;
            }
        }
        ol_log_warn("batch not applied, will retry (attempt %d): %s", attempt + 1, ap->errstr);
        ol_rt__backoff(rt, attempt);
    }
}

static void *applier_main_part(void *arg) {
    applier_t *ap = arg;
    applier_run(ap->rt, ap);
    return NULL;
}

/* Applies batch b (every applier's part, at once when there are several);
 * commits to Kafka after. The poll thread's, or the applier thread's when
 * pipelined. A stale part's seek is left to batch_settle. */
ol_err_t ol_rt__apply_batch(ol_rt_t *rt, batch_t *b, char *errstr, size_t errstr_size) {
    int64_t t0 = ol_time_mono_us();
    rt->pipe.applying = b;
    for (int i = 0; i < rt->pipe.nappliers; i++) {
        applier_t *ap = &rt->pipe.appliers[i];
        ol_arena_reset(ap->arena);
        spans_build(b, ap);
        ap->stored = ol_arena_alloc(ap->arena, (ap->nspans + 1) * sizeof(int64_t));
        if (rt->pipe.nappliers == 1) { /* every worker's fold */
            ap->nstates = rt->pool.nworkers;
            for (int k = 0; k < rt->pool.nworkers; k++)
                ap->states[k] = b->states[k];
        } else { /* its worker's fold: that worker folded its partitions */
            ap->nstates = 1;
            ap->states[0] = b->states[i];
        }
    }
    /* the parts at once, each on a thread of its own (the workers may be
     * folding the next batch meanwhile) */
    for (int i = 1; i < rt->pipe.nappliers; i++)
        if (pthread_create(&rt->pipe.appliers[i].thread, NULL, applier_main_part, &rt->pipe.appliers[i]))
            ol_assert_fail("pthread_create", __FILE__, __LINE__);
    applier_run(rt, &rt->pipe.appliers[0]);
    for (int i = 1; i < rt->pipe.nappliers; i++)
        pthread_join(rt->pipe.appliers[i].thread, NULL);
    /* Kafka follows PostgreSQL, for lag tools; never past what is stored */
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(16);
    ol_err_t err = OL_ERR_OK;
    for (int i = 0; i < rt->pipe.nappliers; i++) {
        applier_t *ap = &rt->pipe.appliers[i];
        if (ap->err && !err)
            err = ol_errf(errstr, errstr_size, ap->err, "%s", ap->errstr);
        if (ap->err || ap->stale)
            continue;
        for (size_t k = 0; k < ap->nspans; k++)
            rd_kafka_topic_partition_list_add(offsets, rt->topics[ap->spans[k].topic], ap->spans[k].partition)->offset =
                ap->spans[k].next;
    }
    if (offsets->cnt)
        rd_kafka_commit(rt->rk, offsets, 1);
    rd_kafka_topic_partition_list_destroy(offsets);
    atomic_fetch_add(&rt->stats.apply_us, ol_time_mono_us() - t0);
    if (rt->stats.m_batch_seconds)
        ol_metric_observe(rt->stats.m_batch_seconds, 0, (double)(ol_time_mono_us() - t0) / 1e6);
    if (err)
        return err;
    size_t poison = 0, applied = 0;
    for (size_t i = 0; i < b->nrecs; i++) {
        const rec_t *r = &b->recs[i];
        const applier_t *ap = &rt->pipe.appliers[rt->pipe.nappliers > 1 ? r->rkm->partition % rt->pipe.nappliers : 0];
        if (ap->stale)
            continue;
        applied++;
        if (r->reason) {
            poison++;
            ol_rt__observe_dlq(rt, r->stage);
            rt->dlq.consecutive_poison++;
            ol_log_warn("record %s[%d]@%lld %s (%s): %s", rt->topics[r->topic], (int)r->rkm->partition,
                        (long long)r->rkm->offset, rt->dlq.disabled ? "skipped" : "sent to the dlq", r->stage,
                        r->reason);
        } else {
            rt->dlq.consecutive_poison = 0;
        }
    }
    atomic_fetch_add(&rt->stats.events, (long long)applied);
    atomic_fetch_add(&rt->stats.rejected, (long long)poison);
    atomic_fetch_add(&rt->stats.batches, 1);
    if (rt->dlq.consecutive_poison >= ol_conf_int(rt->conf, "consumer.max.poison"))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                       "%d poison records in a row (consumer.max.poison): stopping; see the %s topic for the "
                       "records and their errors",
                       rt->dlq.consecutive_poison, rt->dlq.topic);
    return OL_ERR_OK;
}

/* Poll thread, once batch b is applied (or failed): seeks the partitions of
 * a part another member had applied, frees b, reports progress. */
ol_err_t ol_rt__batch_settle(ol_rt_t *rt, batch_t *b, ol_err_t err) {
    for (int i = 0; !err && i < rt->pipe.nappliers; i++)
        if (rt->pipe.appliers[i].stale) {
            ol_log_warn("batch part skipped: another member applied part of it; seeking to the stored offsets");
            reseek(rt, &rt->pipe.appliers[i]);
        }
    ol_rt__batch_clear(b);
    if (!err && rt->on_batch)
        rt->on_batch(rt->on_batch_opaque, rt);
    return err;
}

/* One applier, or with parallel apply one per worker, each to have its own
 * connection: the batch is then split by partition. */
void ol_rt__appliers_new(ol_rt_t *rt) {
    rt->pipe.nappliers =
        rt->role->parallel_apply && rt->pool.nworkers > 1 && ol_conf_bool(rt->conf, "consumer.parallel.apply")
            ? rt->pool.nworkers
            : 1;
    rt->pipe.appliers = ol_xcalloc((size_t)rt->pipe.nappliers, sizeof(*rt->pipe.appliers));
    for (int i = 0; i < rt->pipe.nappliers; i++) {
        applier_t *ap = &rt->pipe.appliers[i];
        ap->rt = rt;
        ap->mod = rt->pipe.nappliers;
        ap->rem = i;
        ap->arena = ol_arena_new(0);
        ap->states = ol_xcalloc((size_t)rt->pool.nworkers, sizeof(void *));
    }
}

void ol_rt__appliers_free(ol_rt_t *rt) {
    for (int i = 0; i < rt->pipe.nappliers; i++) {
        applier_t *ap = &rt->pipe.appliers[i];
        if (ap->pg)
            PQfinish(ap->pg);
        ol_arena_destroy(ap->arena);
        free(ap->states);
        free(ap->spans);
    }
    free(rt->pipe.appliers);
}
