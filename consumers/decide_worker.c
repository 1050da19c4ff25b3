/* decide: a worker's Kafka clients (group member, transactional producer,
 * restorer) and its memory. */
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

/* The worker's group member: static membership, so that a restarted
 * process (same decide.instance) gets its partitions back at once instead of
 * after the session timeout. */
rd_kafka_t *ol_decide__consumer_new(worker_t *w, char *errstr, size_t errstr_size) {
    const char *ctuning[] = {"group.id", w->d->group, "group.instance.id", w->txid, "partition.assignment.strategy",
                             "range", "session.timeout.ms", "10000", "fetch.wait.max.ms", "10",
                             /* prefetch bounded per worker, whatever the backlog */
                             "queued.max.messages.kbytes", "16384", NULL};
    rd_kafka_conf_t *cc = ol_kafka_conf_new(w->d->conf, OL_KAFKA_CONSUMER, w->client, ctuning, errstr, errstr_size);
    if (!cc)
        return NULL;
    rd_kafka_conf_set_rebalance_cb(cc, ol_decide__rebalance_cb);
    rd_kafka_conf_set_opaque(cc, w);
    rd_kafka_t *rk = ol_kafka_handle_new(RD_KAFKA_CONSUMER, cc, errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(cc);
    return rk;
}

rd_kafka_t *ol_decide__producer_new(worker_t *w, char *errstr, size_t errstr_size) {
    const char *ptuning[] = {"transactional.id", w->txid, "linger.ms", "2", NULL};
    ol_kafka_callbacks_t cb = {.dr_msg = ol_decide__delivered, .opaque = w};
    return ol_kafka_new_with(w->d->conf, OL_KAFKA_TXN_PRODUCER, w->client, ptuning, &cb, errstr, errstr_size);
}

/* The topics the transactional producer writes, their partitions asked
 * for now and held while it lives. librdkafka (2.0.2) learns the partitions
 * of a topic first named in a produce call only at its next scan of unknown
 * topics, once a second: the first snapshot, converted hold or dead letter
 * of a run held its transaction's commit for up to a second meanwhile
 * (flushes of 800 ms seen, a backlog decided in 1.9 s instead of 1.1). A
 * held topic is also kept known by the periodic metadata refresh. */
void ol_decide__producer_topics(worker_t *w) {
    const char *names[] = {w->d->topic_sale, w->d->topic_orders, w->d->topic_dlq, w->d->topic_snap};
    _Static_assert(sizeof(names) / sizeof(names[0]) == sizeof(w->written) / sizeof(w->written[0]),
                   "a held topic for every topic written");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!w->written[i])
            w->written[i] = rd_kafka_topic_new(w->producer, names[i], NULL);
        ol_kafka_know_leaders(w->producer, names[i]);
    }
}

/* The producer and the topics held for it; the caller holds clients_lock. */
void ol_decide__producer_destroy(worker_t *w) {
    for (size_t i = 0; i < sizeof(w->written) / sizeof(w->written[0]); i++)
        if (w->written[i]) {
            rd_kafka_topic_destroy(w->written[i]);
            w->written[i] = NULL;
        }
    if (w->producer)
        rd_kafka_destroy(w->producer);
    w->producer = NULL;
}

/* The reader of sale-events for restores (assign(), no commits). */
static rd_kafka_t *restorer_new(worker_t *w, char *errstr, size_t errstr_size) {
    char group[300];
    snprintf(group, sizeof(group), "%s-restore", w->d->group);
    const char *rtuning[] = {"group.id", group, "fetch.wait.max.ms", "10", NULL};
    return ol_kafka_new(w->d->conf, OL_KAFKA_READER, w->client, rtuning, errstr, errstr_size);
}

ol_err_t ol_decide__worker_init(decide_t *d, worker_t *w, int index, char *errstr, size_t errstr_size) {
    const ol_conf_t *conf = d->conf;
    w->d = d;
    w->index = index;
    pthread_mutex_init(&w->clients_lock, NULL);
    w->codec = ol_codec_new();
    w->arena = ol_arena_new(64 * 1024);
    w->scratch = ol_arena_new(64 * 1024);
    w->parts = ol_xcalloc((size_t)d->npartitions, sizeof(*w->parts));
    w->batch = ol_xcalloc(d->batch_events, sizeof(*w->batch));
    w->expired = ol_xcalloc(MAX_FACTS, sizeof(*w->expired));
    snprintf(w->client, sizeof(w->client), "orderlog-decide-%d", index);
    snprintf(w->txid, sizeof(w->txid), "%sdecide-%s-%d", ol_conf_str(conf, "topic.prefix"),
             ol_conf_str(conf, "decide.instance"), index);
    if (!(w->consumer = ol_decide__consumer_new(w, errstr, errstr_size)) ||
        !(w->producer = ol_decide__producer_new(w, errstr, errstr_size)) ||
        !(w->restorer = restorer_new(w, errstr, errstr_size)))
        return OL_ERR_CONFIG;
    /* fences (aborts) what a previous run with this transactional.id left open */
    rd_kafka_error_t *e = rd_kafka_init_transactions(w->producer, ol_conf_int(conf, "broker.wait.ms") + 30000);
    if (e) {
        ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not start transactions (%s): %s", w->txid,
                rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return OL_ERR_UNREACHABLE;
    }
    ol_decide__producer_topics(w);
    return OL_ERR_OK;
}

/* Joins the group: after every worker started its transactions, so that
 * they join together and the first assignment is the final one. */
ol_err_t ol_decide__worker_subscribe(worker_t *w, char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(topics, d->topic_buy, RD_KAFKA_PARTITION_UA);
    rd_kafka_topic_partition_list_add(topics, d->topic_skus, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(w->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not subscribe: %s", rd_kafka_err2str(kerr));
    return OL_ERR_OK;
}

/* No consumer close: a static member does not leave the group (its
 * partitions wait for its restart), the offsets go with the transactions,
 * and a close waits for every fetch stop of the assignment, which after a
 * broker's death was seen never to come (the process then ended 1 on
 * SIGTERM, by the shutdown watchdog). The states are dropped below. */
void ol_decide__worker_destroy(worker_t *w) {
    pthread_mutex_lock(&w->clients_lock);
    if (w->consumer)
        rd_kafka_destroy_flags(w->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    ol_decide__producer_destroy(w);
    w->consumer = NULL;
    pthread_mutex_unlock(&w->clients_lock);
    if (w->restorer)
        rd_kafka_destroy_flags(w->restorer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    for (int p = 0; w->parts && p < w->d->npartitions; p++)
        ol_decide__part_drop(&w->parts[p]);
    free(w->parts);
    free(w->batch);
    free(w->expired);
    if (w->codec)
        ol_codec_destroy(w->codec);
    if (w->arena)
        ol_arena_destroy(w->arena);
    if (w->scratch)
        ol_arena_destroy(w->scratch);
}
