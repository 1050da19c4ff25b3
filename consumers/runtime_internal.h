#ifndef OL_RUNTIME_INTERNAL_H
#define OL_RUNTIME_INTERNAL_H

/* Inside the consumer runtime: its state and what its files share. Not an
 * API (that is consumers/runtime.h); consumers/README.md tells the offset
 * protocol these parts implement.
 *  - runtime.c: life cycle, the poll loop (ol_rt_run), the small API;
 *  - runtime_pool.c: the workers, folding a batch by key;
 *  - runtime_apply.c: the appliers: a batch's PostgreSQL transactions with
 *    its offsets, and the batches' records (spans, drop, reseek);
 *  - runtime_dlq.c: poison records to the dlq topic;
 *  - runtime_pipeline.c: the batch slots and the applier thread;
 *  - runtime_rebalance.c: assignment, seeking to the stored offsets;
 *  - runtime_observe.c: metrics, /healthz and /readyz.
 * Threads: the poll thread owns everything but what a part says. */

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/err.h"
#include "common/base/metrics.h"
#include "common/domain/codec.h"
#include "consumers/runtime.h"

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
    /* a record could not be decoded for a transient reason (the schema
     * registry away) when the runtime was stopping: the batch is not
     * applied, its records read again at the next start; why in held_why
     * (written by the worker that set held first) */
    atomic_bool held;
    char held_why[512];
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

/* Whether the applier owns the partition (parallel apply splits by
 * partition number). */
static inline bool ol_rt__owns(const applier_t *ap, int32_t partition) {
    return partition % ap->mod == ap->rem;
}

/* runtime.c */
/* The index of a topic among the role's, -1 when not one of them. */
int ol_rt__topic_index(const ol_rt_t *rt, const char *name);

/* runtime_pool.c */
void ol_rt__pool_start(ol_rt_t *rt);
void ol_rt__pool_stop(ol_rt_t *rt);
/* Folds the batch: records dispatched by key hash, every worker at once. */
void ol_rt__fold_batch(ol_rt_t *rt, batch_t *b);

/* runtime_apply.c */
void ol_rt__appliers_new(ol_rt_t *rt);
void ol_rt__appliers_free(ol_rt_t *rt);
ol_err_t ol_rt__pg_ensure(ol_rt_t *rt, applier_t *ap, char *errstr, size_t errstr_size);
/* Sleeps the backoff of attempt n: 100 ms doubling, capped at
 * consumer.retry.max.ms. */
void ol_rt__backoff(ol_rt_t *rt, int attempt);
/* The stored next offsets of the given partitions (-1 where none); runs in
 * the current transaction when locking. */
ol_err_t ol_rt__load_offsets(ol_rt_t *rt, PGconn *pg, const span_t *spans, size_t n, int64_t *out, bool lock,
                             char *errstr, size_t errstr_size);
void ol_rt__batch_clear(batch_t *b);
/* Drops the records of b that the predicate matches; a folded batch then
 * needs folding again. */
void ol_rt__batch_drop(ol_rt_t *rt, batch_t *b, bool (*drop)(const void *ctx, const char *topic, int32_t partition),
                       const void *ctx);
/* Applies batch b (every applier's part, at once when there are several);
 * commits to Kafka after. */
ol_err_t ol_rt__apply_batch(ol_rt_t *rt, batch_t *b, char *errstr, size_t errstr_size);
/* Poll thread, once batch b is applied (or failed). */
ol_err_t ol_rt__batch_settle(ol_rt_t *rt, batch_t *b, ol_err_t err);

/* runtime_dlq.c */
ol_err_t ol_rt__dlq_open(ol_rt_t *rt, char *errstr, size_t errstr_size);
/* Sends the poison records of the applier's part, awaiting delivery. */
ol_err_t ol_rt__dlq_send(ol_rt_t *rt, const applier_t *ap, char *errstr, size_t errstr_size);

/* runtime_pipeline.c */
void ol_rt__batches_new(ol_rt_t *rt);
void ol_rt__batches_free(ol_rt_t *rt);
void ol_rt__pipeline_start(ol_rt_t *rt);
void ol_rt__pipeline_stop(ol_rt_t *rt);
ol_err_t ol_rt__inflight_wait(ol_rt_t *rt, char *errstr, size_t errstr_size);
ol_err_t ol_rt__inflight_poll(ol_rt_t *rt, char *errstr, size_t errstr_size);
/* Applies the collected batch (pipelined: hands it over). */
ol_err_t ol_rt__batch_apply(ol_rt_t *rt, char *errstr, size_t errstr_size);

/* runtime_rebalance.c */
void ol_rt__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque);

/* runtime_observe.c: after each apply attempt (applier threads), and per
 * poison record */
void ol_rt__observe_attempt(ol_rt_t *rt, const applier_t *ap);
void ol_rt__observe_dlq(ol_rt_t *rt, const char *stage);

#endif
