#ifndef OL_DECIDE_H
#define OL_DECIDE_H

/* The decider's parts, shared by consumers/decide*.c (not an API: the
 * command is ol_cmd_decide). decide.c holds the design and the command;
 * each decide_<part>.c one concept, named below. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "common/base/arena.h"
#include "common/base/conf.h"
#include "common/base/err.h"
#include "common/base/http.h"
#include "common/base/map.h"
#include "common/base/metrics.h"
#include "common/domain/blacklist.h"
#include "common/domain/codec.h"
#include "common/domain/sale.h"

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
#define ENDS_WITHIN_MS 30000    /* how long a take asks a partition's ends before it gives up (retried later) */
#define RESTORE_STUCK_MS 180000 /* a restore reading nothing this long while Kafka answers fails */
#define WAIT_LOG_MS 10000       /* how often a call retried while Kafka does not answer says so */

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
    /* snapshots (decide_snapshot.c) */
    int64_t sale_next;  /* sale-events offset after the last fact the state holds */
    int64_t snap_facts; /* facts applied since the last snapshot (or replayed by the restore) */
    int64_t snap_us;    /* when the last snapshot was written or the state restored (monotonic) */
    int64_t snap_seq;   /* sequence of the latest snapshot in decide-snapshots, 0: none */
    int snap_chunks;    /* chunk keys of decide-snapshots that may hold a value */
} part_t;

typedef struct worker_s {
    decide_t *d;
    int index;
    pthread_t thread;
    rd_kafka_t *consumer, *producer, *restorer;
    /* the topics the producer writes, held for its lifetime so that their
     * partitions stay known (ol_decide__producer_topics) */
    rd_kafka_topic_t *written[4];
    ol_codec_t *codec;
    ol_arena_t *arena;   /* per record */
    ol_arena_t *scratch; /* per restore / expiry */
    part_t *parts;       /* [d->npartitions]; sale NULL when not owned */
    rd_kafka_message_t **batch;
    size_t nbatch;
    ol_fact_t *expired; /* [MAX_FACTS], for expire_due */
    bool rebalanced;    /* set by the rebalance callback: drop what was collected */
    bool failed;
    char errstr[1100];
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
    atomic_bool renew_asked;                /* the group watch asks for a new consumer */
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
    int64_t snap_facts, snap_ms; /* decide.snapshot.facts (0: none), decide.snapshot.interval.ms */
    size_t snap_chunk;           /* decide.snapshot.chunk.bytes */
    char topic_snap[256];
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
    ol_metric_t *m_snapshots, *m_restored_snapshot;
    atomic_llong restore_facts, bl_beat_us;
    rd_kafka_t *watcher; /* the group watch's reader (group.id of the group, never joins it) */
    atomic_bool running; /* the workers are initialized (their handles may be read) */
    int started;         /* worker threads started */
    bool bl_started;     /* the blacklist thread started */
};

typedef enum { TXN_OK, TXN_ABORTED, TXN_FATAL } txn_result_t;
typedef enum { CALL_COMMIT, CALL_ABORT, CALL_OFFSETS } txn_call_t;

/* Set by a signal or a failure: every thread winds down. */
extern volatile sig_atomic_t ol_decide__stop;

/* decide_handle.c: one command or expiry: decided, applied, produced in the open transaction */
ol_err_t ol_decide__expire_due(worker_t *w, int64_t now_ms, char *errstr, size_t errstr_size);
ol_err_t ol_decide__handle(worker_t *w, const rd_kafka_message_t *rkm, int64_t now_ms, char *errstr,
                           size_t errstr_size);
void ol_decide__set_price(part_t *pt, const char *sku, int64_t price, const char *currency);
/* Produces one record in the open transaction (value NULL: a tombstone;
 * hdrs, may be NULL, owned from the call on). */
ol_err_t ol_decide__produce(worker_t *w, const char *topic, int32_t partition, const char *key, size_t key_len,
                            const void *value, size_t len, rd_kafka_headers_t *hdrs, char *errstr, size_t errstr_size);

/* decide_snapshot.c: snapshots of the partitions' states in decide-snapshots */
/* The producer's delivery reports: the sale-events position of each state. */
void ol_decide__delivered(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);
/* Writes, in the open transaction, the snapshot of every owned partition
 * that is due (decide.snapshot.facts, decide.snapshot.interval.ms). */
ol_err_t ol_decide__snapshot_due(worker_t *w, char *errstr, size_t errstr_size);
/* Loads the latest usable snapshot of partitions ps[0..n) into their parts;
 * from[i]: where to replay sale-events partition ps[i] from; *snapshots
 * counts the partitions loaded from one. */
ol_err_t ol_decide__snapshot_read(worker_t *w, const int32_t *ps, int n, int64_t *from, long long *snapshots,
                                  char *errstr, size_t errstr_size);

/* decide_state.c: the partitions' states: restored from sale-events, taken on assignment */
void ol_decide__part_drop(part_t *pt);
void ol_decide__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                             void *opaque);
ol_err_t ol_decide__recover(worker_t *w, char *errstr, size_t errstr_size);
void ol_decide__resume_caught_up(worker_t *w);

/* decide_txn.c: the worker loop: collect a batch, one transaction per batch */
void ol_decide__batch_clear(worker_t *w);
void *ol_decide__worker_main(void *arg);

/* decide_faults.c: faults of the transactional producer and the consumer, and their recovery */
txn_result_t ol_decide__abort_batch(worker_t *w, const char *reason);
void ol_decide__check_stall(worker_t *w);
void ol_decide__fail(worker_t *w, const char *errstr);
void ol_decide__pause_ms(int64_t ms);
void ol_decide__renew_consumer(worker_t *w, const char *why, bool fatal);
void ol_decide__renew_producer(worker_t *w);
void ol_decide__retake(worker_t *w);
rd_kafka_error_t *ol_decide__txn_call(worker_t *w, txn_call_t call, const rd_kafka_topic_partition_list_t *offs,
                                      const rd_kafka_consumer_group_metadata_t *cgmd, const char *what);
txn_result_t ol_decide__txn_failed(worker_t *w, rd_kafka_error_t *e, const char *what);

/* decide_worker.c: a worker's Kafka clients */
rd_kafka_t *ol_decide__consumer_new(worker_t *w, char *errstr, size_t errstr_size);
rd_kafka_t *ol_decide__producer_new(worker_t *w, char *errstr, size_t errstr_size);
void ol_decide__producer_topics(worker_t *w);
void ol_decide__producer_destroy(worker_t *w);
/* The ends of partition p of topic (see decide_state.c). */
rd_kafka_resp_err_t ol_decide__ends(worker_t *w, const char *topic, int32_t p, int64_t *lo, int64_t *hi, int within_ms);
void ol_decide__worker_destroy(worker_t *w);
ol_err_t ol_decide__worker_init(decide_t *d, worker_t *w, int index, char *errstr, size_t errstr_size);
ol_err_t ol_decide__worker_subscribe(worker_t *w, char *errstr, size_t errstr_size);

/* decide_blacklist.c: the blacklist thread */
void *ol_decide__bl_main(void *arg);

/* decide_observe.c: /metrics, /healthz, /readyz */
void ol_decide__observe_dlq(decide_t *d, const char *stage);
void ol_decide__observe_retry(worker_t *w, rd_kafka_error_t *e, const char *call);
ol_err_t ol_decide__observe_start(decide_t *d, char *errstr, size_t errstr_size);
void ol_decide__observe_state(worker_t *w);
void ol_decide__observe_stop(decide_t *d);
void ol_decide__observe_txn(worker_t *w, int64_t txn_t0_us, int64_t commit_t0_us);

/* decide_watchdog.c: the main thread while the workers run, and the bounded shutdown */
/* The totals of the workers' counters. */
void ol_decide__totals(decide_t *d, long long *decisions, long long *facts, long long *poison, long long *txns,
                       long long *aborts);
/* Returns once a stop is requested. */
void ol_decide__watch(decide_t *d);
/* Once stopping: the process exits 1 after timeout_ms unless
 * ol_decide__watchdog_done was called by then. */
void ol_decide__watchdog_start(int64_t timeout_ms);
void ol_decide__watchdog_done(void);

/* decide_state.c: a restore's reading (of sale-events, and of decide-snapshots in decide_snapshot.c) */
/* What a restore reads with w->restorer: partitions ps[0..n) of topic,
 * left of them not read to their end yet; end[p] (by partition) -2 for a
 * partition not read here, -1 while it is read, then the offset of its end;
 * when it last read something (moved_us) and last said where it waits
 * (said_us). */
typedef struct restore_watch_s {
    const char *topic;
    const int32_t *ps;
    int n, left;
    int64_t *end;
    int64_t moved_us, said_us;
} restore_watch_t;

/* Assigns w->restorer partitions ps[0..n) of topic, partition ps[i] from
 * offset from[i], and starts watching the read; ol_decide__restore_end
 * unassigns them and frees what rw holds. */
ol_err_t ol_decide__restore_start(worker_t *w, restore_watch_t *rw, const char *topic, const int32_t *ps,
                                  const int64_t *from, int n, char *errstr, size_t errstr_size);
void ol_decide__restore_end(worker_t *w, restore_watch_t *rw);
/* The next record of rw's partitions on w->restorer, the worker's beat kept
 * (polls of up to 200 ms); NULL once every partition is read to its end, or
 * with *err set (also when set on entry) when decide is stopping or when
 * nothing was read for RESTORE_STUCK_MS while Kafka answers (nothing read
 * for WAIT_LOG_MS is logged with where it waits). */
rd_kafka_message_t *ol_decide__restore_next(worker_t *w, restore_watch_t *rw, ol_err_t *err, char *errstr,
                                            size_t errstr_size);

#endif
