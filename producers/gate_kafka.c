/* The gate's Kafka clients: the producer of buy-requests and the reader of
 * sale-events (every partition from its end), and whether each still
 * reaches the cluster. */
#include <stdio.h>

#include "common/base/err.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/contract.h"
#include "producers/gate_serve.h"

/* ---- setup and teardown -------------------------------------------------- */

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    gate_t *g = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__FATAL) {
        atomic_store(rk == g->rkc ? &g->consumer_up : &g->producer_up, false);
        ol_log_error("kafka %s: %s", rd_kafka_name(rk), reason);
    } else {
        ol_log_warn("kafka %s: %s", rd_kafka_name(rk), reason);
    }
}

static rd_kafka_t *kafka_new(gate_t *g, ol_kafka_profile_t profile, const char *client_id, const char *const *tuning,
                             char *errstr, size_t errstr_size) {
    const ol_kafka_callbacks_t cb = {.dr_msg = ol_gate__dr_cb, .error = error_cb, .opaque = g};
    return ol_kafka_new_with(g->conf, profile, client_id, tuning, &cb, errstr, errstr_size);
}

/* Assigns every partition of sale-events at its current end: decisions for
 * requests made from now on are all after it. */
static int consumer_assign(gate_t *g, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(g->rkc, g->topic_sale, NULL);
    int timeout = (int)ol_conf_int(g->conf, "broker.wait.ms");
    rd_kafka_resp_err_t err = rd_kafka_metadata(g->rkc, 0, rkt, &md, timeout);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
        ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read the partitions of %s: %s", g->topic_sale,
                rd_kafka_err2str(err                  ? err
                                 : md->topic_cnt == 1 ? md->topics[0].err
                                                      : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        if (!err)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t lo, hi, until = ol_time_mono_us() + (int64_t)timeout * 1000;
        /* a topic just created may have no leader yet: retry for broker.wait.ms */
        err = ol_kafka_watermarks(g->rkc, g->topic_sale, p, timeout, until, NULL, &lo, &hi);
        if (err) {
            ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read the end of %s[%d]: %s", g->topic_sale, p,
                    rd_kafka_err2str(err));
            rd_kafka_topic_partition_list_destroy(parts);
            return -1;
        }
        rd_kafka_topic_partition_list_add(parts, g->topic_sale, p)->offset = hi;
    }
    err = ol_kafka_assign(g->rkc, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not assign %s: %s", g->topic_sale, rd_kafka_err2str(err));
        return -1;
    }
    ol_log_info("reading decisions from %s (%d partitions) from its end", g->topic_sale, n);
    return 0;
}

int ol_gate__kafka_setup(gate_t *g, char *errstr, size_t errstr_size) {
    char timeout[32], group[300], uuid[37];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)ol_conf_int(g->conf, "gate.delivery.timeout.ms"));
    const char *ptuning[] = {"linger.ms", "2", "queue.buffering.max.messages", "1000000", "message.timeout.ms",
                             timeout,     NULL};
    if (!(g->rk = kafka_new(g, OL_KAFKA_PRODUCER, "orderlog-gate", ptuning, errstr, errstr_size)))
        return -1;
    if (ol_kafka_wait_cluster(g->rk, g->conf, errstr, errstr_size) ||
        ol_contract_check_topics(g->rk, g->conf, errstr, errstr_size))
        return -1;
    g->rkt_buy = rd_kafka_topic_new(g->rk, g->topic_buy, NULL);
    ol_uuid_v4(uuid);
    snprintf(group, sizeof(group), "%sgate-%.8s", ol_conf_str(g->conf, "topic.prefix"), uuid);
    const char *ctuning[] = {"group.id",
                             group,
                             "auto.offset.reset",
                             "latest",
                             "enable.partition.eof",
                             "false",
                             "fetch.wait.max.ms",
                             "50",
                             "fetch.error.backoff.ms",
                             "50",
                             NULL};
    if (!(g->rkc = kafka_new(g, OL_KAFKA_READER, "orderlog-gate-decisions", ctuning, errstr, errstr_size)))
        return -1;
    rd_kafka_poll_set_consumer(g->rkc);
    if (consumer_assign(g, errstr, errstr_size))
        return -1;
    atomic_store(&g->producer_up, true);
    atomic_store(&g->consumer_up, true);
    return 0;
}

/* Each second: is each Kafka client still reaching the cluster? */
void ol_gate__health_check(gate_t *g) {
    const struct rd_kafka_metadata *md;
    rd_kafka_t *clients[] = {g->rk, g->rkc};
    for (int i = 0; i < 2; i++) {
        char fatal[256];
        bool up = !rd_kafka_fatal_error(clients[i], fatal, sizeof(fatal)) &&
                  !rd_kafka_metadata(clients[i], 0, NULL, &md, 1000);
        if (up)
            rd_kafka_metadata_destroy(md);
        atomic_store(i ? &g->consumer_up : &g->producer_up, up);
    }
    unsigned long long failed = atomic_load(&g->m.delivery_failed);
    if (failed != g->m.failed_seen) {
        g->m.failed_seen = failed;
        atomic_store(&g->m.failed_at_us, ol_time_mono_us());
    }
}
