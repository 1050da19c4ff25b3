#ifndef OL_RUNTIME_H
#define OL_RUNTIME_H

#include <avro.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/conf.h"
#include "common/base/err.h"
#include "common/domain/event.h"
#include "common/base/metrics.h"

/* The consumer runtime every PostgreSQL-writing role runs on (see
 * consumers/README.md for the offset protocol).
 *
 * One poll thread collects a batch (bounded by count, bytes and time); the
 * batch's records are dispatched by key hash to a pool of workers, so each
 * key is folded in order while workers run in parallel; then the applier
 * thread (while the poll thread collects and folds the next batch: at most
 * two in memory) applies the folded batch in ONE PostgreSQL transaction that also writes the
 * next offset of every partition the batch covers (exactly-once), and only
 * after COMMIT commits the offsets to Kafka (for lag tools). On assignment
 * the consumer seeks to the offsets stored in PostgreSQL.
 *
 * Transient failures (lost connection, serialization failure, deadlock)
 * roll back, back off and retry the same batch. A record that can never
 * succeed goes to the dlq topic with error headers and the batch goes on;
 * consumer.max.poison in a row stop the consumer loudly. */

typedef struct ol_rt_s ol_rt_t;

/* A consumed record, as a role's fold sees it. Everything is borrowed for
 * the duration of the fold call only: copy what you keep (into the arena). */
typedef struct ol_rt_record_s {
    int topic; /* index into the role's topics */
    int32_t partition;
    int64_t offset;
    const ol_envelope_t *env;
    avro_value_t *value; /* the payload as the current version of env->type */
    size_t index;        /* position in the batch, for ol_rt_reject */
} ol_rt_record_t;

/* A role: what to consume and how to fold and apply it. */
typedef struct ol_rt_role_s {
    const char *name;          /* "project": group <topic.prefix>project unless consumer.group.id is set */
    const char *kafka_group;   /* Kafka consumer group when it must differ from the offsets' group (rebuild
                                  stores the live group's offsets in its shadow schema); NULL: the same */
    const char *const *topics; /* short topic names, NULL-terminated */
    void *opaque;              /* the role's own, passed back below */
    /* Per-worker fold state: created once per worker, reset before every batch. */
    void *(*state_new)(void *opaque);
    void (*state_reset)(void *state);
    void (*state_destroy)(void *state);
    /* Worker thread, records of one key in log order. An error makes the
     * record poison (dlq, with errstr as the reason); nothing of it may stay
     * in the state then. */
    ol_err_t (*fold)(void *state, const ol_rt_record_t *rec, ol_arena_t *arena, char *errstr, size_t errstr_size);
    /* Applier thread, inside the batch's transaction: write what the states
     * hold. Must not change the states (a transient failure runs it again).
     * May reject records with ol_rt_reject. A transient error retries the
     * batch; any other error stops the consumer. */
    ol_err_t (*apply)(ol_rt_t *rt, PGconn *conn, void **states, int nstates, char *errstr, size_t errstr_size);
    /* With more than one worker, split every batch by partition and run the
     * parts' apply at once, each on its own connection and in its own
     * transaction with its partitions' offsets. Only for roles whose rows of
     * one key never depend on records of another partition number, and
     * whose apply is safe to run in several threads at once. */
    bool parallel_apply;
    /* Optional (NULL: everything), for a replay in passes (rebuild).
     * takes_partition, at every assignment: a partition it does not take is
     * not consumed (nor counted for the backlog and --until-end).
     * takes_record, on the poll thread as a record arrives: one it does not
     * take is dropped there (never decoded, folded, counted as an event or
     * poison; counted as skipped). Its offset is stored only as part of a
     * later record's batch: the caller stores where the replay ended. */
    bool (*takes_partition)(void *opaque, int topic, int32_t partition);
    bool (*takes_record)(void *opaque, int topic, int32_t partition, int64_t offset, const void *key, size_t key_len);
} ol_rt_role_t;

/* Creates the runtime: connects to PostgreSQL and Kafka, spawns the workers.
 * Returns NULL with errstr set. */
ol_rt_t *ol_rt_new(const ol_conf_t *conf, const ol_rt_role_t *role, char *errstr, size_t errstr_size);
void ol_rt_destroy(ol_rt_t *rt);

/* Runs until ol_rt_stop (SIGTERM, SIGINT), a fatal error, or, with
 * until_end, until every assigned partition was consumed to the end offsets
 * it had at start. Returns OL_ERR_OK on a clean stop. */
ol_err_t ol_rt_run(ol_rt_t *rt, bool until_end, char *errstr, size_t errstr_size);
/* Async-signal-safe: the current batch is finished, then run returns. */
void ol_rt_stop(ol_rt_t *rt);

/* From apply: the record at batch position index can never be applied. */
void ol_rt_reject(ol_rt_t *rt, size_t index, const char *reason);

/* The schema the role writes into (projection.schema). */
const char *ol_rt_schema(const ol_rt_t *rt);

/* Installs SIGTERM/SIGINT handlers that call ol_rt_stop(rt). */
void ol_rt_handle_signals(ol_rt_t *rt);

/* A replay (rebuild) must not send poison records to the dlq a second time:
 * with false they are skipped and logged only. Default true. */
void ol_rt_set_dlq(ol_rt_t *rt, bool enabled);

/* Called on the poll thread after every applied batch. */
void ol_rt_on_batch(ol_rt_t *rt, void (*fn)(void *opaque, const ol_rt_t *rt), void *opaque);

/* Sum over the partitions assigned now of their end offsets (high
 * watermarks) minus the stored offsets at assignment: what is left to
 * consume. -1 until partitions are assigned. */
int64_t ol_rt_backlog(const ol_rt_t *rt);

/* The group of a role: consumer.group.id, else <topic.prefix><role>
 * (orderlog.project), so that deployments on one cluster with different
 * prefixes never share a group. */
void ol_rt_group_name(const ol_conf_t *conf, const char *role, char *out, size_t out_size);

/* The role's opaque (ol_rt_role_t.opaque). */
void *ol_rt_opaque(const ol_rt_t *rt);

/* Counters since start, for progress lines and tests. */
typedef struct ol_rt_stats_s {
    int64_t events, batches, rejected, retries;
    int64_t skipped; /* records the role's takes_record passed over (not in events) */
    /* microseconds: applying batches (PostgreSQL and the role's apply),
     * folding them, and, pipelined, the applier waiting for the next one */
    int64_t apply_us, fold_us, idle_us;
} ol_rt_stats_t;
void ol_rt_stats(const ol_rt_t *rt, ol_rt_stats_t *out);

/* Registers the runtime's metrics, named orderlog_<role>_..., on reg
 * (borrowed: it must outlive rt); before ol_rt_run. */
void ol_rt_observe(ol_rt_t *rt, ol_metrics_t *reg);
/* The runtime's parts of /healthz (its loops turned within stall_ms, no
 * fatal consumer error) and /readyz (Kafka answers, partitions assigned,
 * PostgreSQL takes the batches or answers a ping). Thread-safe. */
bool ol_rt_check_live(ol_rt_t *rt, json_t *checks, int64_t stall_ms);
bool ol_rt_check_ready(ol_rt_t *rt, json_t *checks);

#endif
