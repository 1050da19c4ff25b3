#ifndef OL_KAFKA_H
#define OL_KAFKA_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/base/conf.h"
#include "common/base/err.h"
#include "common/base/log.h"
#include "common/base/metrics.h"

/* Kafka helpers shared by every role. */

/* The Kafka client profiles: every librdkafka handle orderlog makes starts
 * from one of these, so a property the contract depends on (the
 * partitioner above all) is set in one place. A role adds only tuning
 * (linger, batch sizes, fetch waits, its group); the user's kafka.*
 * properties come last, except the locked ones (see ol_kafka_conf_new). */
typedef enum ol_kafka_profile_e {
    OL_KAFKA_PRODUCER,     /* idempotent producer, acks=all, murmur2_random */
    OL_KAFKA_TXN_PRODUCER, /* the same, transactional (the role sets transactional.id) */
    OL_KAFKA_CONSUMER,     /* group member, read_committed, offsets stored and committed by the role */
    OL_KAFKA_READER,       /* assign()-based reader of a log to its end: read_committed, partition EOF, no commits */
    OL_KAFKA_ADMIN,        /* metadata, admin requests, watermarks */
    OL_KAFKA_NPROFILES
} ol_kafka_profile_t;

/* The profile's name ("producer", "txn-producer", "consumer", "reader",
 * "admin") and the librdkafka handle type it makes. */
const char *ol_kafka_profile_name(ol_kafka_profile_t profile);
rd_kafka_type_t ol_kafka_profile_type(ol_kafka_profile_t profile);
/* The profile named name, or -1. */
int ol_kafka_profile_find(const char *name);

/* A librdkafka configuration (new; the caller hands it to rd_kafka_new or
 * destroys it): the profile's properties, then client.id, then the role's
 * tuning (pairs of name, value, ending with NULL; may be NULL), then every
 * kafka.* property of conf. A kafka.* property that would break the
 * contract (partitioner other than murmur2, isolation.level other than
 * read_committed, idempotence off, auto commit on, group.id,
 * group.instance.id, transactional.id) is refused with OL_ERR_CONFIG in
 * errstr, naming the property and the setting to use instead. */
rd_kafka_conf_t *ol_kafka_conf_new(const ol_conf_t *conf, ol_kafka_profile_t profile, const char *client_id,
                                   const char *const *tuning, char *errstr, size_t errstr_size);

/* A librdkafka handle of the profile's type over ol_kafka_conf_new (NULL
 * with errstr on error). For roles that set no callbacks. */
rd_kafka_t *ol_kafka_new(const ol_conf_t *conf, ol_kafka_profile_t profile, const char *client_id,
                         const char *const *tuning, char *errstr, size_t errstr_size);

/* The callbacks a role sets on its handle (each may be NULL; dr_msg only
 * on a producer) and the opaque they get (borrowed). */
typedef struct ol_kafka_callbacks_s {
    void (*dr_msg)(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);
    void (*error)(rd_kafka_t *rk, int err, const char *reason, void *opaque);
    void *opaque;
} ol_kafka_callbacks_t;

/* As ol_kafka_new, with cb's callbacks set. */
rd_kafka_t *ol_kafka_new_with(const ol_conf_t *conf, ol_kafka_profile_t profile, const char *client_id,
                              const char *const *tuning, const ol_kafka_callbacks_t *cb, char *errstr,
                              size_t errstr_size);

/* rd_kafka_new, its error message redacted (ol_redact_text): on failure
 * kconf is still the caller's. Every handle is made through here. */
rd_kafka_t *ol_kafka_handle_new(rd_kafka_type_t type, rd_kafka_conf_t *kconf, char *errstr, size_t errstr_size);

/* Writes the profile's effective properties as `name = value  # source`
 * lines (source: profile, or kafka.* for the user's), secrets as ol_redact_value shows
 * them. */
void ol_kafka_profile_write(const ol_conf_t *conf, ol_kafka_profile_t profile, FILE *out);

/* The partition Kafka's default partitioner (the Java client's murmur2,
 * librdkafka's murmur2_random) puts key on among partition_cnt. */
int32_t ol_kafka_key_partition(const void *key, size_t key_len, int32_t partition_cnt);

/* The partition count of topic in the cluster's metadata (bounded by
 * broker.wait.ms), or 0 when it is not known. */
int32_t ol_kafka_partition_count(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic);

/* Asks for topic's leaders (a metadata request, at most 5 s), so that rk's
 * next request to one of its partitions goes to the leader of now. */
void ol_kafka_know_leaders(rd_kafka_t *rk, const char *topic);

/* The watermarks of one partition. A partition whose leader is not known
 * yet (a topic just created), moves, or died (the handle can go on naming a
 * broker that is gone, and librdkafka retries that one) is asked again,
 * its topic's leaders asked for between tries, until deadline_us
 * (ol_time_mono_us) or *stop (when stop is not NULL); each call waits at
 * most timeout_ms. */
rd_kafka_resp_err_t ol_kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int timeout_ms,
                                        int64_t deadline_us, const volatile sig_atomic_t *stop, int64_t *lo,
                                        int64_t *hi);

/* Checks that every partition of topic still holds its first record (a
 * log start offset of 0); else OL_ERR_INVALID naming the topic, the
 * partition and where it starts now. */
ol_err_t ol_kafka_check_log_start(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic, char *errstr,
                                  size_t errstr_size);

/* ol_kafka_check_log_start for a role about to replay topic: the error
 * says how to override it knowingly (replay.allow.truncated), and with that
 * set it is only logged as a warning. */
ol_err_t ol_kafka_check_replayable(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic, char *errstr,
                                   size_t errstr_size);
/* The same for each of the contract topics named (without prefix, ending
 * with NULL); the compacted blacklist is a snapshot, not a log, and is left
 * out. */
ol_err_t ol_kafka_check_replayable_topics(const ol_conf_t *conf, const char *const *names, char *errstr,
                                          size_t errstr_size);

/* Checks that rkm sits on the partition its key belongs on among
 * partition_cnt; else OL_ERR_INVALID with a reason naming the key, the
 * partition it is on, the one it belongs on and the rule. A record without
 * a key breaks the rule too. */
ol_err_t ol_kafka_check_placement(const rd_kafka_message_t *rkm, int32_t partition_cnt, char *errstr,
                                  size_t errstr_size);
/* The same for a record's parts: its topic's name, partition and key. */
ol_err_t ol_kafka_check_key_placement(const char *topic, int32_t partition, const void *key, size_t key_len,
                                      int32_t partition_cnt, char *errstr, size_t errstr_size);

/* rd_kafka_assign(rk, parts) (NULL: unassign), then waits until the fetch
 * stops it started have been served. Every assign() of orderlog goes through
 * here: librdkafka 2.0 aborts the process (rd_kafka_assignment_partition_stopped:
 * assertion rktp_started) when a partition whose stop is still unanswered is
 * added back and removed again, as an assign() of the partitions already
 * assigned followed at once by another assign() does (see kafka.c). */
rd_kafka_resp_err_t ol_kafka_assign(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts);

/* ol_kafka_assign(rk, parts) with the records of parts->elems[i] going to
 * queues[i] (NULL: the consumer's queue). Each partition's queue is
 * forwarded before the assign: librdkafka forwards a partition it starts to
 * fetch to the consumer's queue unless the application did so first, and a
 * forward made after the assign does not bring back what was fetched in
 * between (a rebuild pass lost the first records of a partition so). */
rd_kafka_resp_err_t ol_kafka_assign_to_queues(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                                              rd_kafka_queue_t *const *queues);

/* rd_kafka_consumer_close(rk), during which ol_kafka_assign (called by a
 * rebalance callback that the close runs on this thread) does not wait:
 * the group may end between two of its round trips, and librdkafka 2.0
 * then drops the request unanswered, which would wait for ever (see
 * kafka.c). Every consumer of orderlog that is closed is closed here. */
rd_kafka_resp_err_t ol_kafka_consumer_close(rd_kafka_t *rk);

/* Waits until the cluster answers a metadata request (bounded by
 * broker.wait.ms); OL_ERR_UNREACHABLE with the bootstrap servers named. */
ol_err_t ol_kafka_wait_cluster(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size);

/* Deletes a consumer group that has no members (best effort: a group left
 * behind only keeps its committed offsets). */
ol_err_t ol_kafka_delete_group(const ol_conf_t *conf, const char *group, char *errstr, size_t errstr_size);

/* The headers a poison record goes to the dlq with: its own, then
 * dlq_topic, dlq_partition, dlq_offset, dlq_stage, dlq_error, dlq_group and
 * dlq_time (new: hand them to producev or destroy them). */
rd_kafka_headers_t *ol_kafka_dlq_headers(const rd_kafka_message_t *rkm, const char *topic, const char *stage,
                                         const char *reason, const char *group);

/* ---- observability (thread-safe: from /metrics and /readyz) ---------------- */

/* For readiness: whether rk has no fatal error and the cluster answers a
 * metadata request within timeout_ms; adds the check name to checks. */
bool ol_kafka_check_reachable(rd_kafka_t *rk, json_t *checks, const char *name, int timeout_ms);

/* The number of partitions assigned to the consumer rk now; -1 when unknown
 * (also from a rebalance callback run by ol_kafka_consumer_close). */
int ol_kafka_assigned_count(rd_kafka_t *rk);

/* Whether the cluster answers rk's metadata request within a second. */
bool ol_kafka_cluster_answers(rd_kafka_t *rk);

/* Writes one sample {topic, partition} per partition assigned to the
 * consumer rk: its high watermark (as of the last fetch) minus its position
 * (the next offset handed to the application). Until a record was handed
 * out: the assigned offset, or the low watermark when assigned from the
 * beginning or when the partition is empty; partitions whose position or
 * end is still unknown are left out. For a function family with the labels
 * topic and partition. */
void ol_kafka_lag_write(rd_kafka_t *rk, ol_metrics_out_t *out);

/* The two families of a role's group consumers, read at render time:
 * orderlog_<role>_consumer_lag_records{topic,partition} and
 * orderlog_<role>_assigned_partitions (gauges). _consumer: of the one
 * consumer *rk (read at each render; rk valid as long as reg), with
 * ol_kafka_lag_write and ol_kafka_assigned_count (nothing while unknown).
 * _consumers: a role with several writes the samples itself (lag_fn,
 * assigned_fn, with opaque). */
void ol_kafka_observe_consumer(ol_metrics_t *reg, const char *role, const char *lag_help, const char *assigned_help,
                               rd_kafka_t *const *rk);
void ol_kafka_observe_consumers(ol_metrics_t *reg, const char *role, const char *lag_help, const char *assigned_help,
                                ol_metrics_func_t lag_fn, ol_metrics_func_t assigned_fn, void *opaque);

/* "<topic.prefix><name>" into out. */
void ol_kafka_topic_name(const ol_conf_t *conf, const char *name, char *out, size_t out_size);

/* The log level of a librdkafka log line (syslog level, text): warnings
 * about a transient coordinator state librdkafka retries by itself are
 * info. */
ol_log_level_t ol_kafka_log_level(int level, const char *buf);

#endif
