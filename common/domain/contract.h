#ifndef OL_CONTRACT_H
#define OL_CONTRACT_H

#include <librdkafka/rdkafka.h>

#include "common/base/conf.h"
#include "common/base/err.h"

/* The topics of the contract (docs/events.md) as a cluster must hold them. */

/* Checks that every topic of the contract exists, and that the co-partitioned
 * ones (buy-requests, skus, sale-events) have one partition count. A topic
 * missing is waited for (bounded by broker.wait.ms, logged as "waiting for
 * topic X to be known by the cluster"): brokers learn of a topic a moment
 * after it is created. Once the broker rk asked lists them all, every other
 * broker of its metadata is asked alone until it lists them too (one that
 * does not answer is left out with a warning), so no later request of the
 * caller meets a broker that does not know them yet. OL_ERR_NOT_FOUND names
 * the topic (and the broker) and says to run `orderlog topics create`. */
ol_err_t ol_contract_check_topics(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size);

#endif
