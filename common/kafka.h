#ifndef OL_KAFKA_H
#define OL_KAFKA_H

#include <librdkafka/rdkafka.h>

#include "common/conf.h"
#include "common/err.h"

/* Kafka helpers shared by every role. */

/* A librdkafka configuration: the role's defaults (pairs of name, value,
 * ending with NULL) overridden by every kafka.* property of conf. */
rd_kafka_conf_t *ol_kafka_conf_new(const ol_conf_t *conf, const char *const *defaults, char *errstr,
                                   size_t errstr_size);

/* Waits until the cluster answers a metadata request (bounded by
 * broker.wait.ms); OL_ERR_UNREACHABLE with the bootstrap servers named. */
ol_err_t ol_kafka_wait_cluster(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size);

/* Checks that every topic of the contract exists, and that the co-partitioned
 * ones (buy-requests, skus, sale-events) have one partition count; the error
 * names the topic and says to run `orderlog topics create`. */
ol_err_t ol_kafka_check_topics(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size);

/* Deletes a consumer group that has no members (best effort: a group left
 * behind only keeps its committed offsets). */
ol_err_t ol_kafka_delete_group(const ol_conf_t *conf, const char *group, char *errstr, size_t errstr_size);

/* The headers a poison record goes to the dlq with: its own, then
 * dlq_topic, dlq_partition, dlq_offset, dlq_stage, dlq_error, dlq_group and
 * dlq_time (new: hand them to producev or destroy them). */
rd_kafka_headers_t *ol_kafka_dlq_headers(const rd_kafka_message_t *rkm, const char *topic, const char *stage,
                                         const char *reason, const char *group);

/* "<topic.prefix><name>" into out. */
void ol_kafka_topic_name(const ol_conf_t *conf, const char *name, char *out, size_t out_size);

#endif
