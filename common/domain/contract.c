#include "common/domain/contract.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/domain/schema.h"

/* The first topic of the contract md does not list (its name into out),
 * or NULL when it lists them all. */
static const char *first_missing(const ol_conf_t *conf, const struct rd_kafka_metadata *md, char *out,
                                 size_t out_size) {
    for (const char *const *t = ol_schema_topics(); *t; t++) {
        ol_kafka_topic_name(conf, *t, out, out_size);
        int i;
        for (i = 0; i < md->topic_cnt; i++)
            if (!strcmp(md->topics[i].topic, out) && !md->topics[i].err && md->topics[i].partition_cnt > 0)
                break;
        if (i == md->topic_cnt)
            return out;
    }
    return NULL;
}

/* What one broker asked alone says of the topics. */
typedef enum broker_view_e { VIEW_ALL, VIEW_MISSING, VIEW_NO_ANSWER } broker_view_t;

/* Asks the broker at addr (host:port) alone for every topic, through a
 * handle of its own bootstrapped from that broker only: a metadata request
 * goes to one broker, and each broker learns of a topic from the
 * controller's log a moment after it was created. The first topic it does
 * not list goes into missing. */
static broker_view_t broker_view(const ol_conf_t *conf, const char *addr, int timeout_ms, char *missing,
                                 size_t missing_size) {
    char errstr[512];
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, OL_KAFKA_ADMIN, "orderlog-admin", NULL, errstr, sizeof(errstr));
    if (!kconf)
        return VIEW_NO_ANSWER;
    rd_kafka_t *rk = NULL;
    if (rd_kafka_conf_set(kconf, "bootstrap.servers", addr, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        !(rk = ol_kafka_handle_new(RD_KAFKA_PRODUCER, kconf, errstr, sizeof(errstr)))) {
        rd_kafka_conf_destroy(kconf);
        return VIEW_NO_ANSWER;
    }
    broker_view_t view = VIEW_NO_ANSWER;
    const struct rd_kafka_metadata *md = NULL;
    size_t alen = strlen(addr);
    /* the handle knows the other brokers once it has an answer: only an
     * answer from addr ("<addr>/bootstrap" or "<addr>/<id>") counts */
    if (!rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms)) {
        if (md->orig_broker_name && !strncmp(md->orig_broker_name, addr, alen) && md->orig_broker_name[alen] == '/')
            view = first_missing(conf, md, missing, missing_size) ? VIEW_MISSING : VIEW_ALL;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return view;
}

/* Waits for every broker md lists, but the one that answered md, to list
 * every topic too. A broker that does not answer within a couple of seconds
 * is left out with a warning (one being restarted catches up with the
 * metadata before it serves clients). *waited tells whether the wait was
 * logged. */
static ol_err_t wait_every_broker(const ol_conf_t *conf, const struct rd_kafka_metadata *md, int64_t deadline,
                                  bool *waited, char *errstr, size_t errstr_size) {
    for (int b = 0; b < md->broker_cnt; b++) {
        const struct rd_kafka_metadata_broker *mb = &md->brokers[b];
        if (mb->id == md->orig_broker_id)
            continue;
        char addr[300], missing[256], logged[256] = "";
        snprintf(addr, sizeof(addr), strchr(mb->host, ':') ? "[%s]:%d" : "%s:%d", mb->host, mb->port);
        for (;;) {
            int64_t left_ms = (deadline - ol_time_mono_us()) / 1000;
            broker_view_t view = broker_view(conf, addr, left_ms < 2000 ? (left_ms > 100 ? (int)left_ms : 100) : 2000,
                                             missing, sizeof(missing));
            if (view == VIEW_ALL)
                break;
            if (view == VIEW_NO_ANSWER) {
                ol_log_warn("broker %" PRId32 " at %s did not answer: not waiting for it to know the topics", mb->id,
                            addr);
                break;
            }
            if (ol_time_mono_us() >= deadline)
                return ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND,
                               "topic %s is still unknown to broker %" PRId32 " at %s after %lld ms", missing, mb->id,
                               addr, (long long)ol_conf_int(conf, "broker.wait.ms"));
            if (strcmp(logged, missing)) {
                ol_log_info("waiting for topic %s to be known by the cluster (broker %" PRId32
                            " at %s does not list it yet)",
                            missing, mb->id, addr);
                snprintf(logged, sizeof(logged), "%s", missing);
                *waited = true;
            }
            nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        }
    }
    return OL_ERR_OK;
}

ol_err_t ol_contract_check_topics(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size) {
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");
    int64_t deadline = ol_time_mono_us() + (int64_t)timeout * 1000;
    const struct rd_kafka_metadata *md = NULL;
    char missing[256], logged[256] = "";
    bool waited = false;
    for (;;) {
        int64_t left_ms = (deadline - ol_time_mono_us()) / 1000;
        rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 1, NULL, &md, left_ms > 1000 ? (int)left_ms : 1000);
        if (kerr)
            return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not list topics at %s: %s",
                           ol_conf_str(conf, "kafka.bootstrap.servers"), rd_kafka_err2str(kerr));
        if (!first_missing(conf, md, missing, sizeof(missing)))
            break;
        rd_kafka_metadata_destroy(md);
        if (ol_time_mono_us() >= deadline)
            return ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND,
                           "topic %s does not exist (run `orderlog topics create`)", missing);
        /* created a moment ago, and not every broker knows it yet; or not
         * created at all, then the error above once broker.wait.ms is over */
        if (strcmp(logged, missing)) {
            ol_log_info("waiting for topic %s to be known by the cluster", missing);
            snprintf(logged, sizeof(logged), "%s", missing);
            waited = true;
        }
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    ol_err_t err = wait_every_broker(conf, md, deadline, &waited, errstr, errstr_size);
    if (!err && waited)
        ol_log_info("every broker knows the topics");
    int copartitioned = -1;
    for (const char *const *t = ol_schema_topics(); *t && !err; t++) {
        if (strcmp(*t, "buy-requests") && strcmp(*t, "skus") && strcmp(*t, "sale-events") &&
            strcmp(*t, "decide-snapshots"))
            continue;
        char name[256];
        ol_kafka_topic_name(conf, *t, name, sizeof(name));
        int i;
        for (i = 0; strcmp(md->topics[i].topic, name); i++)
            ;
        if (copartitioned >= 0 && md->topics[i].partition_cnt != copartitioned)
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                          "topic %s has %d partitions but buy-requests has %d: buy-requests, skus, "
                          "sale-events and decide-snapshots must be co-partitioned",
                          name, md->topics[i].partition_cnt, copartitioned);
        copartitioned = md->topics[i].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return err;
}
