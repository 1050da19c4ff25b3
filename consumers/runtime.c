#include "consumers/runtime.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/domain/codec.h"
#include "common/base/http.h"
#include "common/base/kafka.h"
#include "common/domain/contract.h"
#include "common/base/log.h"
#include "common/base/pg.h"
#include "common/base/time.h"
#include "common/base/util.h"

#define MAX_TOPICS 16

/* One record of the batch being built. */
typedef struct rec_s {
    rd_kafka_message_t *rkm; /* owned until the batch ends */
    int topic;
    const char *reason; /* poison: why (arena of the batch), NULL otherwise */
    const char *stage;  /* decode, fold or apply */
} rec_t;

/* A batch: its records and what the workers folded of them. Two of them
 * when pipelined: one applied while the next is collected and folded. */
typedef struct batch_s {
    rec_t *recs;
    size_t nrecs, cap, bytes;
    ol_arena_t *arena;   /* the reasons of apply-stage poison */
    void **states;       /* one fold state per worker */
    ol_arena_t **arenas; /* one per worker: what its folds keep */
    bool folded;
} batch_t;

typedef struct worker_s {
    ol_rt_t *rt;
    int id;
    pthread_t thread;
    ol_codec_t *codec;
    ol_arena_t *scratch; /* per record */
    size_t *idx;         /* this worker's records, in batch order */
    size_t n, cap;
} worker_t;

/* A partition the batch covers: its first and next offsets. */
typedef struct span_s {
    int topic;
    int32_t partition;
    int64_t first, next;
} span_t;

/* Applies the part of a batch whose partitions it owns (partition % mod ==
 * rem), on its own connection, in its own transaction with those
 * partitions' offsets. One applier, or one per worker with parallel apply. */
typedef struct applier_s {
    ol_rt_t *rt;
    pthread_t thread; /* parts after the first, while they apply */
    PGconn *pg;
    ol_arena_t *arena; /* per batch */
    int mod, rem;
    span_t *spans;
    size_t nspans, spans_cap;
    int64_t *stored;
    void **states;
    int nstates;
    bool stale;
    ol_err_t err;
    char errstr[1024];
} applier_t;

/* The worker pool: folds a batch, its records dispatched by key hash. */
typedef struct rt_pool_s {
    worker_t *workers;
    int nworkers;
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    uint64_t generation;
    int pending; /* workers still at the current generation's job */
    int quit;
    batch_t *folding; /* what the workers fold now */
} rt_pool_t;

/* The batches and the appliers; pipelined, a thread that applies one
 * batch while the poll thread collects and folds the next. */
typedef struct rt_pipeline_s {
    applier_t *appliers;
    int nappliers;
    pthread_mutex_t reject_lock;
    /* the batches: cur is collected and folded on the poll thread while
     * inflight (pipelined) is applied on the applier thread */
    batch_t slots[2];
    batch_t *cur;      /* being collected or folded */
    batch_t *applying; /* what apply works on (ol_rt_reject) */
    bool on;           /* consumer.pipeline */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    batch_t *inflight; /* handed over, NULL when none */
    bool inflight_done;
    int quit;
    ol_err_t inflight_err;
    char inflight_errstr[1024];
} rt_pipeline_t;

/* Poison records: the producer to the dlq topic. */
typedef struct rt_dlq_s {
    rd_kafka_t *rk;
    char topic[256];
    bool disabled; /* a replay: counted and logged, not sent */
    int consecutive_poison;
} rt_dlq_t;

/* The partitions assigned (the poll thread's, in the rebalance callback). */
typedef struct rt_rebalance_s {
    int assigned; /* partitions assigned now */
    int at_end;   /* of them, how many reported the end since their assignment */
    rd_kafka_topic_partition_list_t *eof;
    int64_t backlog; /* at the last assignment */
} rt_rebalance_t;

/* Counters and observability (ol_rt_observe; the families are NULL until then). */
typedef struct rt_stats_s {
    atomic_llong events, batches, rejected, retries, skipped;
    atomic_llong apply_us, fold_us, idle_us; /* where the time went */
    ol_metric_t *m_txns, *m_dlq, *m_batch_seconds;
    atomic_llong beat_us;       /* a loop turned: the poll loop, an apply attempt, a backoff */
    atomic_llong pg_failing_us; /* since when apply attempts fail; 0 when the last one succeeded */
    pthread_mutex_t lock;       /* pg_error */
    char pg_error[256];
} rt_stats_t;

struct ol_rt_s {
    const ol_conf_t *conf;
    const ol_rt_role_t *role;
    char group[256];
    char kafka_group[256];
    char schema[128];
    char topics[MAX_TOPICS][256];
    int32_t partitions[MAX_TOPICS]; /* partition counts: where a key belongs (poll thread writes) */
    int ntopics;
    rd_kafka_t *rk; /* consumer */
    rt_pool_t pool;
    rt_pipeline_t pipe;
    rt_dlq_t dlq;
    rt_rebalance_t reb;
    rt_stats_t stats;
    void (*on_batch)(void *opaque, const ol_rt_t *rt);
    void *on_batch_opaque;
    volatile sig_atomic_t stop;
    ol_err_t fatal;
    char fatal_msg[512];
};

static void observe_attempt(ol_rt_t *rt, const applier_t *ap);
static void observe_dlq(ol_rt_t *rt, const char *stage);

void ol_rt_set_dlq(ol_rt_t *rt, bool enabled) {
    rt->dlq.disabled = !enabled;
}

void ol_rt_on_batch(ol_rt_t *rt, void (*fn)(void *opaque, const ol_rt_t *rt), void *opaque) {
    rt->on_batch = fn;
    rt->on_batch_opaque = opaque;
}

int64_t ol_rt_backlog(const ol_rt_t *rt) {
    return rt->reb.backlog;
}

void ol_rt_group_name(const ol_conf_t *conf, const char *role, char *out, size_t out_size) {
    const char *group = ol_conf_str(conf, "consumer.group.id");
    if (*group)
        snprintf(out, out_size, "%s", group);
    else
        snprintf(out, out_size, "%s%s", ol_conf_str(conf, "topic.prefix"), role);
}

void *ol_rt_opaque(const ol_rt_t *rt) {
    return rt->role->opaque;
}

static ol_rt_t *signal_rt;

const char *ol_rt_schema(const ol_rt_t *rt) {
    return rt->schema;
}

void ol_rt_stats(const ol_rt_t *rt, ol_rt_stats_t *out) {
    out->events = atomic_load(&((ol_rt_t *)rt)->stats.events);
    out->batches = atomic_load(&((ol_rt_t *)rt)->stats.batches);
    out->rejected = atomic_load(&((ol_rt_t *)rt)->stats.rejected);
    out->retries = atomic_load(&((ol_rt_t *)rt)->stats.retries);
    out->skipped = atomic_load(&((ol_rt_t *)rt)->stats.skipped);
    out->apply_us = atomic_load(&((ol_rt_t *)rt)->stats.apply_us);
    out->fold_us = atomic_load(&((ol_rt_t *)rt)->stats.fold_us);
    out->idle_us = atomic_load(&((ol_rt_t *)rt)->stats.idle_us);
}

void ol_rt_stop(ol_rt_t *rt) {
    rt->stop = 1;
}

static void on_signal(int sig) {
    (void)sig;
    if (signal_rt)
        ol_rt_stop(signal_rt);
}

void ol_rt_handle_signals(ol_rt_t *rt) {
    signal_rt = rt;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

void ol_rt_reject(ol_rt_t *rt, size_t index, const char *reason) {
    batch_t *b = rt->pipe.applying;
    OL_ASSERT(index < b->nrecs);
    pthread_mutex_lock(&rt->pipe.reject_lock); /* appliers may run at once */
    b->recs[index].reason = ol_arena_strndup(b->arena, reason, strlen(reason));
    b->recs[index].stage = "apply";
    pthread_mutex_unlock(&rt->pipe.reject_lock);
}

static int topic_index(const ol_rt_t *rt, const char *name) {
    for (int i = 0; i < rt->ntopics; i++)
        if (!strcmp(rt->topics[i], name))
            return i;
    return -1;
}

/* ---- workers ---------------------------------------------------------- */

static void fold_one(worker_t *w, size_t i) {
    ol_rt_t *rt = w->rt;
    batch_t *b = rt->pool.folding;
    ol_arena_t *arena = b->arenas[w->id];
    rec_t *r = &b->recs[i];
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(w->scratch);
    /* a key on another partition than the contract's has lost its order
     * with the rest of its key's events: never applied silently */
    if (ol_kafka_check_placement(r->rkm, rt->partitions[r->topic], errstr, sizeof(errstr))) {
        r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
        r->stage = "placement";
        return;
    }
    if (ol_event_decode(w->codec, r->rkm, w->scratch, &env, &value, errstr, sizeof(errstr))) {
        r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
        r->stage = "decode";
        return;
    }
    if (ol_event_check_key(r->rkm, &env, value, errstr, sizeof(errstr))) {
        r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
        r->stage = "placement";
        return;
    }
    ol_rt_record_t rec = {r->topic, r->rkm->partition, r->rkm->offset, &env, value, i};
    if (rt->role->fold(b->states[w->id], &rec, arena, errstr, sizeof(errstr))) {
        r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
        r->stage = "fold";
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    ol_rt_t *rt = w->rt;
    uint64_t seen = 0;
    pthread_mutex_lock(&rt->pool.lock);
    for (;;) {
        while (rt->pool.generation == seen && !rt->pool.quit)
            pthread_cond_wait(&rt->pool.work, &rt->pool.lock);
        if (rt->pool.quit)
            break;
        seen = rt->pool.generation;
        pthread_mutex_unlock(&rt->pool.lock);
        for (size_t k = 0; k < w->n; k++)
            fold_one(w, w->idx[k]);
        pthread_mutex_lock(&rt->pool.lock);
        if (--rt->pool.pending == 0)
            pthread_cond_signal(&rt->pool.done);
    }
    pthread_mutex_unlock(&rt->pool.lock);
    return NULL;
}

/* Runs the fold on every worker at once and waits for them. */
static void run_fold(ol_rt_t *rt) {
    pthread_mutex_lock(&rt->pool.lock);
    rt->pool.pending = rt->pool.nworkers;
    rt->pool.generation++;
    pthread_cond_broadcast(&rt->pool.work);
    while (rt->pool.pending > 0)
        pthread_cond_wait(&rt->pool.done, &rt->pool.lock);
    pthread_mutex_unlock(&rt->pool.lock);
}

/* Folds the batch: records dispatched by key hash, every worker at once. */
static void fold_batch(ol_rt_t *rt, batch_t *b) {
    for (int i = 0; i < rt->pool.nworkers; i++) {
        rt->pool.workers[i].n = 0;
        ol_arena_reset(b->arenas[i]);
        rt->role->state_reset(b->states[i]);
    }
    for (size_t i = 0; i < b->nrecs; i++) {
        rd_kafka_message_t *m = b->recs[i].rkm;
        b->recs[i].reason = b->recs[i].stage = NULL;
        /* with parallel apply a worker folds what its applier writes: its
         * partitions (a key has one partition, so its order holds) */
        uint32_t h = rt->pipe.nappliers > 1 ? (uint32_t)m->partition : ol_hash_fnv1a32(m->key, m->key_len);
        worker_t *w = &rt->pool.workers[h % (uint32_t)rt->pool.nworkers];
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 1024;
            w->idx = ol_xrealloc(w->idx, w->cap * sizeof(*w->idx));
        }
        w->idx[w->n++] = i;
    }
    rt->pool.folding = b;
    int64_t t0 = ol_time_mono_us();
    run_fold(rt);
    atomic_fetch_add(&rt->stats.fold_us, ol_time_mono_us() - t0);
    b->folded = true;
}

/* ---- PostgreSQL --------------------------------------------------------- */

static ol_err_t pg_ensure(ol_rt_t *rt, applier_t *ap, char *errstr, size_t errstr_size) {
    if (ap->pg && PQstatus(ap->pg) == CONNECTION_OK)
        return OL_ERR_OK;
    if (ap->pg)
        PQfinish(ap->pg);
    ap->pg = ol_pg_connect(rt->conf, errstr, errstr_size);
    return ap->pg ? OL_ERR_OK : OL_ERR_TRANSIENT;
}

static bool owns(const applier_t *ap, int32_t partition) {
    return partition % ap->mod == ap->rem;
}

/* Sleeps the backoff of attempt n: 100 ms doubling, capped at
 * consumer.retry.max.ms. */
static void backoff(ol_rt_t *rt, int attempt) {
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
static ol_err_t load_offsets(ol_rt_t *rt, PGconn *pg, const span_t *spans, size_t n, int64_t *out, bool lock,
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
        int t = topic_index(rt, PQgetvalue(res, r, 0));
        int32_t p = (int32_t)atoi(PQgetvalue(res, r, 1));
        for (size_t i = 0; i < n; i++)
            if (spans[i].topic == t && spans[i].partition == p)
                out[i] = atoll(PQgetvalue(res, r, 2));
    }
    PQclear(res);
    return OL_ERR_OK;
}

/* ---- the dead-letter queue ---------------------------------------------- */

static void dlq_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    if (m->err)
        *(int *)m->_private = (int)m->err;
    (void)opaque;
}

/* Sends every poison record of the batch, with its reason, and waits for
 * the deliveries: they must be in the dlq before the batch commits. */
static ol_err_t dlq_send(ol_rt_t *rt, const applier_t *ap, char *errstr, size_t errstr_size) {
    if (rt->dlq.disabled)
        return OL_ERR_OK;
    const batch_t *b = rt->pipe.applying;
    int failed = 0;
    size_t sent = 0;
    for (size_t i = 0; i < b->nrecs; i++) {
        const rec_t *r = &b->recs[i];
        if (!r->reason || !owns(ap, r->rkm->partition))
            continue;
        rd_kafka_headers_t *h = ol_kafka_dlq_headers(r->rkm, rt->topics[r->topic], r->stage, r->reason, rt->group);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rt->dlq.rk, RD_KAFKA_V_TOPIC(rt->dlq.topic), RD_KAFKA_V_KEY(r->rkm->key, r->rkm->key_len),
                              RD_KAFKA_V_VALUE(r->rkm->payload, r->rkm->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&failed), RD_KAFKA_V_END);
        if (err) {
            rd_kafka_headers_destroy(h);
            return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not send to %s: %s", rt->dlq.topic,
                           rd_kafka_err2str(err));
        }
        sent++;
    }
    if (!sent)
        return OL_ERR_OK;
    rd_kafka_flush(rt->dlq.rk, 30000);
    if (rd_kafka_outq_len(rt->dlq.rk) > 0 || failed)
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not deliver %zu poison records to %s: %s", sent,
                       rt->dlq.topic, failed ? rd_kafka_err2str((rd_kafka_resp_err_t)failed) : "timed out");
    return OL_ERR_OK;
}

/* ---- the batch ---------------------------------------------------------- */

static void spans_build(const batch_t *b, applier_t *ap) {
    ap->nspans = 0;
    for (size_t i = 0; i < b->nrecs; i++) {
        rd_kafka_message_t *m = b->recs[i].rkm;
        if (!owns(ap, m->partition))
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

static void batch_clear(batch_t *b) {
    for (size_t i = 0; i < b->nrecs; i++)
        rd_kafka_message_destroy(b->recs[i].rkm);
    b->nrecs = 0;
    b->bytes = 0;
    b->folded = false;
    ol_arena_reset(b->arena);
}

/* Drops the records of b that the predicate matches; a folded batch then
 * needs folding again. */
static void batch_drop(ol_rt_t *rt, batch_t *b, bool (*drop)(const void *ctx, const char *topic, int32_t partition),
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
    batch_drop(rt, rt->pipe.cur, in_spans, &ctx);
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
    if ((err = pg_ensure(rt, ap, errstr, errstr_size)))
        return err;
    if ((err = ol_pg_exec_ok(ap->pg, "begin", errstr, errstr_size)))
        return err;
    if (!ol_conf_bool(rt->conf, "consumer.synchronous.commit") &&
        (err = ol_pg_exec_ok(ap->pg, "set local synchronous_commit = off", errstr, errstr_size)))
        goto rollback;
    /* a partition seen for the first time gets its row now, so that two
     * members racing on it serialize on the row like on any other */
    if ((err = offsets_write(rt, ap, false, errstr, errstr_size)) ||
        (err = load_offsets(rt, ap->pg, ap->spans, ap->nspans, ap->stored, true, errstr, errstr_size)))
        goto rollback;
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
        goto rollback;
    if ((err = dlq_send(rt, ap, errstr, errstr_size)))
        goto rollback;
    /* the offsets, in the same transaction */
    if ((err = offsets_write(rt, ap, true, errstr, errstr_size)))
        goto rollback;
    if ((err = ol_pg_exec_ok(ap->pg, "commit", errstr, errstr_size)))
        return err == OL_ERR_PG ? OL_ERR_TRANSIENT : err; /* unknown outcome: the retry sees the offsets */
    return OL_ERR_OK;
rollback:
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
        observe_attempt(rt, ap);
        if (!ap->err && ap->stale) /* the poll thread seeks (batch_settle) */
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
        backoff(rt, attempt);
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
static ol_err_t apply_batch(ol_rt_t *rt, batch_t *b, char *errstr, size_t errstr_size) {
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
            observe_dlq(rt, r->stage);
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
static ol_err_t batch_settle(ol_rt_t *rt, batch_t *b, ol_err_t err) {
    for (int i = 0; !err && i < rt->pipe.nappliers; i++)
        if (rt->pipe.appliers[i].stale) {
            ol_log_warn("batch part skipped: another member applied part of it; seeking to the stored offsets");
            reseek(rt, &rt->pipe.appliers[i]);
        }
    batch_clear(b);
    if (!err && rt->on_batch)
        rt->on_batch(rt->on_batch_opaque, rt);
    return err;
}

/* ---- the pipeline --------------------------------------------------------- */

static void *applier_main(void *arg) {
    ol_rt_t *rt = arg;
    pthread_mutex_lock(&rt->pipe.lock);
    for (;;) {
        int64_t t0 = ol_time_mono_us();
        while (!rt->pipe.quit && (!rt->pipe.inflight || rt->pipe.inflight_done))
            pthread_cond_wait(&rt->pipe.cv, &rt->pipe.lock);
        atomic_fetch_add(&rt->stats.idle_us, ol_time_mono_us() - t0);
        if (rt->pipe.quit)
            break;
        batch_t *b = rt->pipe.inflight;
        pthread_mutex_unlock(&rt->pipe.lock);
        char errstr[sizeof(rt->pipe.inflight_errstr)];
        ol_err_t err = apply_batch(rt, b, errstr, sizeof(errstr));
        pthread_mutex_lock(&rt->pipe.lock);
        rt->pipe.inflight_err = err;
        if (err)
            snprintf(rt->pipe.inflight_errstr, sizeof(rt->pipe.inflight_errstr), "%s", errstr);
        rt->pipe.inflight_done = true;
        pthread_cond_broadcast(&rt->pipe.cv);
    }
    pthread_mutex_unlock(&rt->pipe.lock);
    return NULL;
}

/* Waits for the batch in flight, if any, and settles it. */
static ol_err_t inflight_wait(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    if (!rt->pipe.inflight)
        return OL_ERR_OK;
    pthread_mutex_lock(&rt->pipe.lock);
    while (!rt->pipe.inflight_done)
        pthread_cond_wait(&rt->pipe.cv, &rt->pipe.lock);
    batch_t *b = rt->pipe.inflight;
    ol_err_t err = rt->pipe.inflight_err;
    rt->pipe.inflight = NULL;
    rt->pipe.inflight_done = false;
    pthread_mutex_unlock(&rt->pipe.lock);
    if (err)
        ol_errf(errstr, errstr_size, err, "%s", rt->pipe.inflight_errstr);
    return batch_settle(rt, b, err);
}

/* Settles the batch in flight if the applier is done with it, without
 * waiting: a failed batch (the poison limit, a fatal error) stops the
 * consumer at once, not when the next record arrives. */
static ol_err_t inflight_poll(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    if (!rt->pipe.inflight)
        return OL_ERR_OK;
    pthread_mutex_lock(&rt->pipe.lock);
    bool done = rt->pipe.inflight_done;
    pthread_mutex_unlock(&rt->pipe.lock);
    return done ? inflight_wait(rt, errstr, errstr_size) : OL_ERR_OK;
}

/* Hands the folded current batch to the applier thread; collecting goes
 * on into the other slot. */
static void inflight_start(ol_rt_t *rt) {
    pthread_mutex_lock(&rt->pipe.lock);
    rt->pipe.inflight = rt->pipe.cur;
    rt->pipe.inflight_done = false;
    pthread_cond_broadcast(&rt->pipe.cv);
    pthread_mutex_unlock(&rt->pipe.lock);
    rt->pipe.cur = rt->pipe.cur == &rt->pipe.slots[0] ? &rt->pipe.slots[1] : &rt->pipe.slots[0];
}

/* Applies the collected batch: pipelined, it waits for the one before and
 * starts this one; otherwise it applies it here. */
static ol_err_t batch_apply(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    batch_t *b = rt->pipe.cur;
    fold_batch(rt, b);
    if (!rt->pipe.on)
        return batch_settle(rt, b, apply_batch(rt, b, errstr, errstr_size));
    ol_err_t err = inflight_wait(rt, errstr, errstr_size);
    if (err)
        return err;
    if (!b->nrecs)
        return OL_ERR_OK;
    if (!b->folded) /* the batch before had its partitions sought back */
        fold_batch(rt, b);
    inflight_start(rt);
    return OL_ERR_OK;
}

/* ---- rebalancing ------------------------------------------------------- */

static bool in_parts(const void *ctx, const char *topic, int32_t partition) {
    return rd_kafka_topic_partition_list_find(ctx, topic, partition) != NULL;
}

/* A batch in flight is finished before the group changes: its offsets are
 * written while its partitions are still ours, and the applier's connection
 * is free for on_assign. An error stops the consumer. */
static void rebalance_wait(ol_rt_t *rt) {
    char errstr[sizeof(rt->fatal_msg)];
    ol_err_t err = inflight_wait(rt, errstr, sizeof(errstr));
    if (err && !rt->fatal) {
        rt->fatal = err;
        snprintf(rt->fatal_msg, sizeof(rt->fatal_msg), "%s", errstr);
        rt->stop = 1;
    }
}

static void on_assign(ol_rt_t *rt, rd_kafka_topic_partition_list_t *all) {
    char errstr[512];
    /* the role may take only some of them: the others stay unconsumed */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(all->cnt + 1);
    for (int i = 0; i < all->cnt; i++)
        if (!rt->role->takes_partition ||
            rt->role->takes_partition(rt->role->opaque, topic_index(rt, all->elems[i].topic), all->elems[i].partition))
            rd_kafka_topic_partition_list_add(parts, all->elems[i].topic, all->elems[i].partition);
    span_t *spans = ol_xcalloc((size_t)parts->cnt + 1, sizeof(*spans));
    int64_t *stored = ol_xcalloc((size_t)parts->cnt + 1, sizeof(*stored));
    for (int i = 0; i < parts->cnt; i++)
        spans[i] = (span_t){topic_index(rt, parts->elems[i].topic), parts->elems[i].partition, 0, 0};
    for (int attempt = 0;; attempt++) {
        ol_err_t err = pg_ensure(rt, &rt->pipe.appliers[0], errstr, sizeof(errstr));
        if (!err)
            err = load_offsets(rt, rt->pipe.appliers[0].pg, spans, (size_t)parts->cnt, stored, false, errstr,
                               sizeof(errstr));
        if (!err)
            break;
        if (!ol_err_is_retriable(err) || rt->stop) {
            rt->fatal = err ? err : OL_ERR_PG;
            snprintf(rt->fatal_msg, sizeof(rt->fatal_msg), "could not read the stored offsets: %.400s", errstr);
            rt->stop = 1;
            break;
        }
        ol_log_warn("could not read the stored offsets, will retry: %s", errstr);
        backoff(rt, attempt);
    }
    rt->reb.backlog = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t low = 0, high = 0;
        parts->elems[i].offset = stored[i] >= 0 ? stored[i] : RD_KAFKA_OFFSET_BEGINNING;
        if (!rd_kafka_query_watermark_offsets(rt->rk, parts->elems[i].topic, parts->elems[i].partition, &low, &high,
                                              (int)ol_conf_int(rt->conf, "broker.wait.ms")))
            rt->reb.backlog += high - (stored[i] > low ? stored[i] : low);
    }
    rd_kafka_assign(rt->rk, parts);
    rt->reb.assigned = parts->cnt;
    rt->reb.at_end = 0;
    rd_kafka_topic_partition_list_destroy(rt->reb.eof);
    rt->reb.eof = rd_kafka_topic_partition_list_new(parts->cnt + 1);
    ol_log_info("assigned %d partitions, resuming at the offsets stored in PostgreSQL", parts->cnt);
    free(spans);
    free(stored);
    rd_kafka_topic_partition_list_destroy(parts);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    ol_rt_t *rt = opaque;
    rebalance_wait(rt);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(rt, parts);
    } else {
        /* what was read of partitions no longer ours is not applied: the
         * next owner reads it again */
        batch_drop(rt, rt->pipe.cur, in_parts, parts);
        rd_kafka_assign(rk, NULL);
        rt->reb.assigned = 0;
        rt->reb.at_end = 0;
        ol_log_info("revoked %d partitions", parts->cnt);
    }
}

/* ---- life cycle --------------------------------------------------------- */

ol_rt_t *ol_rt_new(const ol_conf_t *conf, const ol_rt_role_t *role, char *errstr, size_t errstr_size) {
    if (ol_schema_init(errstr, errstr_size))
        return NULL;
    ol_rt_t *rt = ol_xcalloc(1, sizeof(*rt));
    rt->conf = conf;
    rt->role = role;
    ol_rt_group_name(conf, role->name, rt->group, sizeof(rt->group));
    snprintf(rt->kafka_group, sizeof(rt->kafka_group), "%s", role->kafka_group ? role->kafka_group : rt->group);
    rt->reb.backlog = -1;
    snprintf(rt->schema, sizeof(rt->schema), "%s", ol_conf_str(conf, "projection.schema"));
    for (const char *const *t = role->topics; *t && rt->ntopics < MAX_TOPICS; t++)
        ol_kafka_topic_name(conf, *t, rt->topics[rt->ntopics++], sizeof(rt->topics[0]));
    ol_kafka_topic_name(conf, "dlq", rt->dlq.topic, sizeof(rt->dlq.topic));
    rt->pipe.cur = &rt->pipe.slots[0];
    pthread_mutex_init(&rt->pipe.lock, NULL);
    pthread_cond_init(&rt->pipe.cv, NULL);
    rt->reb.eof = rd_kafka_topic_partition_list_new(1);
    pthread_mutex_init(&rt->pool.lock, NULL);
    pthread_cond_init(&rt->pool.work, NULL);
    pthread_cond_init(&rt->pool.done, NULL);
    pthread_mutex_init(&rt->pipe.reject_lock, NULL);
    pthread_mutex_init(&rt->stats.lock, NULL);

    rt->pool.nworkers = (int)ol_conf_int(conf, "consumer.workers");
    /* several appliers, one per worker, each with its own connection, when
     * the role allows it: the batch is then split by partition */
    rt->pipe.nappliers = role->parallel_apply && rt->pool.nworkers > 1 && ol_conf_bool(conf, "consumer.parallel.apply")
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
    if (!(rt->pipe.appliers[0].pg = ol_pg_connect_waiting(conf, errstr, errstr_size)))
        goto fail;
    char kbytes[32];
    snprintf(kbytes, sizeof(kbytes), "%lld", (long long)ol_conf_int(conf, "consumer.queue.kbytes"));
    const char *ctuning[] = {"group.id", rt->kafka_group, "enable.partition.eof", "true", "queued.max.messages.kbytes",
                             kbytes, "session.timeout.ms", "10000", "heartbeat.interval.ms", "1000",
                             /* the first fetch after an assignment can
                              * name only partitions with nothing to read
                              * (empty topics, offsets still resolving):
                              * the broker then holds it this long, and a
                              * replay started with a stall of 500 ms */
                             "fetch.wait.max.ms", "100", NULL, NULL, NULL};
    /* static membership: a restarted process takes its partitions back at
     * once instead of after the session timeout (not for a rebuild's own
     * group, made anew each run) */
    char instance[512];
    const char *inst = ol_conf_str(conf, "consumer.instance");
    if (*inst && !role->kafka_group) {
        size_t n = sizeof(ctuning) / sizeof(ctuning[0]);
        snprintf(instance, sizeof(instance), "%s-%s", rt->kafka_group, inst);
        ctuning[n - 3] = "group.instance.id";
        ctuning[n - 2] = instance;
    }
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, OL_KAFKA_CONSUMER, rt->kafka_group, ctuning, errstr, errstr_size);
    if (!kconf)
        goto fail;
    rd_kafka_conf_set_rebalance_cb(kconf, rebalance_cb);
    rd_kafka_conf_set_opaque(kconf, rt);
    if (!(rt->rk = ol_kafka_handle_new(RD_KAFKA_CONSUMER, kconf, errstr, errstr_size))) {
        rd_kafka_conf_destroy(kconf);
        goto fail;
    }
    rd_kafka_poll_set_consumer(rt->rk);
    const char *ptuning[] = {"linger.ms", "5", NULL};
    rd_kafka_conf_t *pconf = ol_kafka_conf_new(conf, OL_KAFKA_PRODUCER, "orderlog-dlq", ptuning, errstr, errstr_size);
    if (!pconf)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(pconf, dlq_dr);
    if (!(rt->dlq.rk = ol_kafka_handle_new(RD_KAFKA_PRODUCER, pconf, errstr, errstr_size))) {
        rd_kafka_conf_destroy(pconf);
        goto fail;
    }
    if (ol_kafka_wait_cluster(rt->rk, conf, errstr, errstr_size) ||
        ol_contract_check_topics(rt->rk, conf, errstr, errstr_size))
        goto fail;
    for (int i = 0; i < rt->ntopics; i++)
        rt->partitions[i] = ol_kafka_partition_count(rt->rk, conf, rt->topics[i]);
    /* pipelined: one thread applies a batch while the poll thread collects
     * and folds the next */
    rt->pipe.on = ol_conf_bool(conf, "consumer.pipeline");
    for (int k = 0; k < (rt->pipe.on ? 2 : 1); k++) {
        batch_t *b = &rt->pipe.slots[k];
        b->arena = ol_arena_new(0);
        b->states = ol_xcalloc((size_t)rt->pool.nworkers, sizeof(void *));
        b->arenas = ol_xcalloc((size_t)rt->pool.nworkers, sizeof(ol_arena_t *));
        for (int i = 0; i < rt->pool.nworkers; i++) {
            b->states[i] = role->state_new(role->opaque);
            b->arenas[i] = ol_arena_new(0);
        }
    }
    rt->pool.workers = ol_xcalloc((size_t)rt->pool.nworkers, sizeof(*rt->pool.workers));
    for (int i = 0; i < rt->pool.nworkers; i++) {
        worker_t *w = &rt->pool.workers[i];
        w->rt = rt;
        w->id = i;
        w->codec = ol_codec_new();
        w->scratch = ol_arena_new(0);
        if (pthread_create(&w->thread, NULL, worker_main, w))
            ol_assert_fail("pthread_create", __FILE__, __LINE__);
    }
    if (rt->pipe.on) {
        if (pthread_create(&rt->pipe.thread, NULL, applier_main, rt))
            ol_assert_fail("pthread_create", __FILE__, __LINE__);
        rt->pipe.started = true;
    }
    return rt;
fail:
    ol_rt_destroy(rt);
    return NULL;
}

void ol_rt_destroy(ol_rt_t *rt) {
    if (!rt)
        return;
    pthread_mutex_lock(&rt->pool.lock);
    rt->pool.quit = 1;
    pthread_cond_broadcast(&rt->pool.work);
    pthread_mutex_unlock(&rt->pool.lock);
    for (int i = 0; rt->pool.workers && i < rt->pool.nworkers; i++) {
        worker_t *w = &rt->pool.workers[i];
        pthread_join(w->thread, NULL);
        ol_codec_destroy(w->codec);
        ol_arena_destroy(w->scratch);
        free(w->idx);
    }
    free(rt->pool.workers);
    if (rt->pipe.started) { /* idle: ol_rt_run waits for the batch in flight */
        pthread_mutex_lock(&rt->pipe.lock);
        rt->pipe.quit = 1;
        pthread_cond_broadcast(&rt->pipe.cv);
        pthread_mutex_unlock(&rt->pipe.lock);
        pthread_join(rt->pipe.thread, NULL);
    }
    for (int k = 0; k < 2; k++) {
        batch_t *b = &rt->pipe.slots[k];
        if (!b->arena)
            continue;
        batch_clear(b);
        free(b->recs);
        for (int i = 0; i < rt->pool.nworkers; i++) {
            rt->role->state_destroy(b->states[i]);
            ol_arena_destroy(b->arenas[i]);
        }
        free(b->states);
        free(b->arenas);
        ol_arena_destroy(b->arena);
    }
    for (int i = 0; i < rt->pipe.nappliers; i++) {
        applier_t *ap = &rt->pipe.appliers[i];
        if (ap->pg)
            PQfinish(ap->pg);
        ol_arena_destroy(ap->arena);
        free(ap->states);
        free(ap->spans);
    }
    free(rt->pipe.appliers);
    if (rt->rk) {
        rd_kafka_consumer_close(rt->rk);
        rd_kafka_destroy(rt->rk);
    }
    if (rt->dlq.rk)
        rd_kafka_destroy(rt->dlq.rk);
    rd_kafka_topic_partition_list_destroy(rt->reb.eof);
    pthread_cond_destroy(&rt->pipe.cv);
    pthread_mutex_destroy(&rt->pipe.lock);
    pthread_cond_destroy(&rt->pool.work);
    pthread_cond_destroy(&rt->pool.done);
    pthread_mutex_destroy(&rt->pool.lock);
    pthread_mutex_destroy(&rt->pipe.reject_lock);
    pthread_mutex_destroy(&rt->stats.lock);
    if (signal_rt == rt)
        signal_rt = NULL;
    free(rt);
}

static void batch_add(ol_rt_t *rt, batch_t *b, rd_kafka_message_t *m) {
    int t = topic_index(rt, rd_kafka_topic_name(m->rkt));
    if (rt->role->takes_record &&
        !rt->role->takes_record(rt->role->opaque, t, m->partition, m->offset, m->key, m->key_len)) {
        atomic_fetch_add(&rt->stats.skipped, 1);
        rd_kafka_message_destroy(m);
        return;
    }
    if (b->nrecs == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 1024;
        b->recs = ol_xrealloc(b->recs, b->cap * sizeof(*b->recs));
    }
    /* partitions added since: the count where keys belong is read again
     * (the workers only read it while they fold, after this) */
    if (t >= 0 && m->partition >= rt->partitions[t])
        rt->partitions[t] = ol_kafka_partition_count(rt->rk, rt->conf, rt->topics[t]);
    b->recs[b->nrecs++] = (rec_t){m, t, NULL, NULL};
    b->bytes += m->len + m->key_len;
}

ol_err_t ol_rt_run(ol_rt_t *rt, bool until_end, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(rt->ntopics);
    for (int i = 0; i < rt->ntopics; i++)
        rd_kafka_topic_partition_list_add(subs, rt->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(rt->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not subscribe: %s", rd_kafka_err2str(kerr));
    size_t max_events = (size_t)ol_conf_int(rt->conf, "consumer.batch.events");
    size_t max_bytes = (size_t)ol_conf_int(rt->conf, "consumer.batch.bytes");
    int64_t max_us = ol_conf_int(rt->conf, "consumer.batch.ms") * 1000;
    ol_err_t err = OL_ERR_OK;
    while (!rt->stop) {
        int64_t deadline = ol_time_mono_us() + max_us;
        atomic_store_explicit(&rt->stats.beat_us, deadline - max_us, memory_order_relaxed);
        while (!rt->stop && rt->pipe.cur->nrecs < max_events && rt->pipe.cur->bytes < max_bytes) {
            int64_t left = (deadline - ol_time_mono_us()) / 1000;
            if (left <= 0)
                break;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rt->rk, (int)(left > 100 ? 100 : left));
            if (!m) {
                if ((err = inflight_poll(rt, errstr, errstr_size)))
                    break;
                if (until_end && rt->reb.assigned > 0 && rt->reb.at_end >= rt->reb.assigned)
                    break;
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (!rd_kafka_topic_partition_list_find(rt->reb.eof, rd_kafka_topic_name(m->rkt), m->partition)) {
                    rd_kafka_topic_partition_list_add(rt->reb.eof, rd_kafka_topic_name(m->rkt), m->partition);
                    rt->reb.at_end++;
                }
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
                /* e.g. fenced by another member with the same
                 * group.instance.id: this consumer can do nothing more */
                char why[512];
                rd_kafka_fatal_error(rt->rk, why, sizeof(why));
                err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "the Kafka consumer failed for good: %s", why);
                rd_kafka_message_destroy(m);
                break;
            }
            if (m->err) {
                ol_log_warn("kafka: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            batch_add(rt, rt->pipe.cur, m);
        }
        if (err)
            break;
        if (rt->fatal) {
            err = ol_errf(errstr, errstr_size, rt->fatal, "%s", rt->fatal_msg);
            break;
        }
        if (rt->pipe.cur->nrecs) {
            if ((err = batch_apply(rt, errstr, errstr_size)))
                break;
        } else if (until_end && rt->reb.assigned > 0 && rt->reb.at_end >= rt->reb.assigned) {
            break;
        }
    }
    /* the batch in flight is finished (SIGTERM drains it too) */
    char errstr2[1024];
    ol_err_t err2 = inflight_wait(rt, errstr2, sizeof(errstr2));
    if (err2 && !err)
        err = ol_errf(errstr, errstr_size, err2, "%s", errstr2);
    batch_clear(rt->pipe.cur);
    return err;
}

/* ---- observability -------------------------------------------------------- */

static const char *const txn_outcomes[] = {"committed", "rolled_back", NULL};
static const char *const dlq_stages[] = {"decode", "placement", "fold", "apply", NULL};
static const char *const phases[] = {"apply", "fold", "wait", NULL};

/* After each apply attempt (applier threads). */
static void observe_attempt(ol_rt_t *rt, const applier_t *ap) {
    atomic_store(&rt->stats.beat_us, ol_time_mono_us());
    if (rt->stats.m_txns && (ap->err || !ap->stale))
        ol_metric_inc(rt->stats.m_txns, ap->err ? 1 : 0);
    if (!ap->err) {
        atomic_store(&rt->stats.pg_failing_us, 0);
        return;
    }
    pthread_mutex_lock(&rt->stats.lock);
    snprintf(rt->stats.pg_error, sizeof(rt->stats.pg_error), "%.255s", ap->errstr);
    pthread_mutex_unlock(&rt->stats.lock);
    long long expected = 0;
    atomic_compare_exchange_strong(&rt->stats.pg_failing_us, &expected, ol_time_mono_us());
}

static void observe_dlq(ol_rt_t *rt, const char *stage) {
    if (!rt->stats.m_dlq)
        return;
    size_t i = 0;
    while (dlq_stages[i + 1] && strcmp(dlq_stages[i], stage ? stage : ""))
        i++;
    ol_metric_inc(rt->stats.m_dlq, i);
}

static void events_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((ol_rt_t *)opaque)->stats.events));
}

static void batches_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((ol_rt_t *)opaque)->stats.batches));
}

static void retries_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((ol_rt_t *)opaque)->stats.retries));
}

static void phases_fn(void *opaque, ol_metrics_out_t *out) {
    ol_rt_t *rt = opaque;
    long long us[] = {atomic_load(&rt->stats.apply_us), atomic_load(&rt->stats.fold_us),
                      atomic_load(&rt->stats.idle_us)};
    for (int i = 0; phases[i]; i++)
        ol_metrics_out(out, &phases[i], (double)us[i] / 1e6);
}

static void lag_fn(void *opaque, ol_metrics_out_t *out) {
    ol_kafka_lag_write(((ol_rt_t *)opaque)->rk, out);
}

static void assigned_fn(void *opaque, ol_metrics_out_t *out) {
    int n = ol_kafka_assigned_count(((ol_rt_t *)opaque)->rk);
    if (n >= 0)
        ol_metrics_out(out, NULL, n);
}

void ol_rt_observe(ol_rt_t *rt, ol_metrics_t *reg) {
    char name[128], help[256];
    const char *role = rt->role->name;
#define OL_RT_NAME(suffix) (snprintf(name, sizeof(name), "orderlog_%s_%s", role, suffix), name)
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = OL_RT_NAME("events_total"),
                                       .help = "Records consumed and applied (or dead-lettered) in committed batches.",
                                       .type = OL_METRIC_COUNTER},
                    events_fn, rt);
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = OL_RT_NAME("batches_total"),
                                       .help = "Batches applied, each in PostgreSQL transactions with its offsets.",
                                       .type = OL_METRIC_COUNTER},
                    batches_fn, rt);
    rt->stats.m_txns =
        ol_metrics_add(reg, &(ol_metric_def_t){
                                .name = OL_RT_NAME("transactions_total"),
                                .help = "PostgreSQL transactions of batch parts, by outcome (rolled_back: a "
                                        "failed attempt, retried unless it cannot succeed).",
                                .type = OL_METRIC_COUNTER,
                                .labels = {{"outcome", txn_outcomes}},
                            });
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = OL_RT_NAME("retries_total"),
                                       .help = "Backoffs before a retry: a batch or the stored offsets after a "
                                               "transient failure (PostgreSQL away, serialization failure).",
                                       .type = OL_METRIC_COUNTER},
                    retries_fn, rt);
    snprintf(help, sizeof(help), "Records sent to the dlq topic, by the stage that refused them%s.",
             rt->dlq.disabled ? " (counted, not sent: a replay)" : "");
    rt->stats.m_dlq = ol_metrics_add(reg, &(ol_metric_def_t){
                                              .name = OL_RT_NAME("dlq_records_total"),
                                              .help = help,
                                              .type = OL_METRIC_COUNTER,
                                              .labels = {{"stage", dlq_stages}},
                                          });
    rt->stats.m_batch_seconds =
        ol_metrics_add(reg, &(ol_metric_def_t){
                                .name = OL_RT_NAME("batch_duration_seconds"),
                                .help = "Time to apply a batch: PostgreSQL transactions, retries "
                                        "and the dlq included.",
                                .type = OL_METRIC_HISTOGRAM,
                                .buckets = ol_metrics_seconds_buckets,
                                .nbuckets = ol_metrics_seconds_nbuckets,
                            });
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = OL_RT_NAME("phase_seconds_total"),
                                       .help = "Time spent applying batches, folding them, and (pipelined) the "
                                               "applier waiting for the next one.",
                                       .type = OL_METRIC_COUNTER,
                                       .labels = {{"phase", NULL}}},
                    phases_fn, rt);
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = OL_RT_NAME("consumer_lag_records"),
                                       .help = "Records between the consumer's position and the end of each "
                                               "assigned partition.",
                                       .type = OL_METRIC_GAUGE,
                                       .labels = {{"topic", NULL}, {"partition", NULL}}},
                    lag_fn, rt);
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = OL_RT_NAME("assigned_partitions"),
                                       .help = "Partitions assigned to this member of the group.",
                                       .type = OL_METRIC_GAUGE},
                    assigned_fn, rt);
#undef OL_RT_NAME
}

bool ol_rt_check_live(ol_rt_t *rt, json_t *checks, int64_t stall_ms) {
    char fatal[256];
    bool ok = ol_http_check_beat(checks, "loop", atomic_load(&rt->stats.beat_us), stall_ms);
    if (rd_kafka_fatal_error(rt->rk, fatal, sizeof(fatal)))
        ok = ol_http_check(checks, "consumer", false, "fatal error: %s", fatal);
    return ok;
}

bool ol_rt_check_ready(ol_rt_t *rt, json_t *checks) {
    bool ok = ol_kafka_check_reachable(rt->rk, checks, "kafka", 1000);
    int assigned = ol_kafka_assigned_count(rt->rk);
    ok &= ol_http_check(checks, "partitions", assigned > 0, "%d assigned in group %s", assigned, rt->kafka_group);
    int64_t failing = atomic_load(&rt->stats.pg_failing_us);
    if (failing) {
        char error[sizeof(rt->stats.pg_error)];
        pthread_mutex_lock(&rt->stats.lock);
        snprintf(error, sizeof(error), "%s", rt->stats.pg_error);
        pthread_mutex_unlock(&rt->stats.lock);
        ok = ol_http_check(checks, "postgresql", false, "batches failing for %lld ms: %.255s",
                           (long long)(ol_time_mono_us() - failing) / 1000, error);
    } else {
        PGPing ping = PQping(ol_conf_str(rt->conf, "pg.conninfo"));
        ok &= ol_http_check(checks, "postgresql", ping == PQPING_OK, "%s",
                            ping == PQPING_OK       ? "accepting connections"
                            : ping == PQPING_REJECT ? "rejecting connections (starting up or shutting down)"
                                                    : "not answering");
    }
    return ok;
}
