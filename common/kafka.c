#include "common/kafka.h"
#include "common/time.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/schema.h"

typedef struct set_ctx_s {
    rd_kafka_conf_t *kconf;
    char *errstr;
    size_t errstr_size;
} set_ctx_t;

static int set_one(void *opaque, const char *name, const char *value) {
    set_ctx_t *ctx = opaque;
    char kerr[256];
    if (rd_kafka_conf_set(ctx->kconf, name, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
        ol_errf(ctx->errstr, ctx->errstr_size, OL_ERR_CONFIG, "property \"kafka.%s\": %s", name, kerr);
        return 1;
    }
    return 0;
}

/* librdkafka's own log lines go through ours (syslog levels). */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    ol_log_level_t l = level <= 3 ? OL_LOG_ERROR : level == 4 ? OL_LOG_WARN : level <= 6 ? OL_LOG_INFO : OL_LOG_DEBUG;
    ol_log(l, "kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

rd_kafka_conf_t *ol_kafka_conf_new(const ol_conf_t *conf, const char *const *defaults, char *errstr,
                                   size_t errstr_size) {
    set_ctx_t ctx = {rd_kafka_conf_new(), errstr, errstr_size};
    rd_kafka_conf_set_log_cb(ctx.kconf, log_cb);
    for (; defaults && defaults[0]; defaults += 2) {
        if (set_one(&ctx, defaults[0], defaults[1])) {
            rd_kafka_conf_destroy(ctx.kconf);
            return NULL;
        }
    }
    if (ol_conf_foreach_kafka(conf, set_one, &ctx)) {
        rd_kafka_conf_destroy(ctx.kconf);
        return NULL;
    }
    return ctx.kconf;
}

ol_err_t ol_kafka_wait_cluster(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout);
    if (err)
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE,
                       "could not reach Kafka at %s within %d ms: %s (is the broker running? `ops/stack start`)",
                       ol_conf_str(conf, "kafka.bootstrap.servers"), timeout, rd_kafka_err2str(err));
    rd_kafka_metadata_destroy(md);
    return OL_ERR_OK;
}

ol_err_t ol_kafka_check_topics(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 1, NULL, &md, (int)ol_conf_int(conf, "broker.wait.ms"));
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not list topics at %s: %s",
                       ol_conf_str(conf, "kafka.bootstrap.servers"), rd_kafka_err2str(kerr));
    ol_err_t err = OL_ERR_OK;
    int copartitioned = -1;
    for (const char *const *t = ol_schema_topics(); *t && !err; t++) {
        char name[256];
        ol_kafka_topic_name(conf, *t, name, sizeof(name));
        int i;
        for (i = 0; i < md->topic_cnt; i++)
            if (!strcmp(md->topics[i].topic, name) && !md->topics[i].err)
                break;
        if (i == md->topic_cnt) {
            err = ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND,
                          "topic %s does not exist (run `orderlog topics create`)", name);
            break;
        }
        if (strcmp(*t, "buy-requests") && strcmp(*t, "skus") && strcmp(*t, "sale-events"))
            continue;
        if (copartitioned >= 0 && md->topics[i].partition_cnt != copartitioned)
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                          "topic %s has %d partitions but buy-requests has %d: buy-requests, skus and "
                          "sale-events must be co-partitioned",
                          name, md->topics[i].partition_cnt, copartitioned);
        copartitioned = md->topics[i].partition_cnt;
    }
    rd_kafka_metadata_destroy(md);
    return err;
}

ol_err_t ol_kafka_delete_group(const ol_conf_t *conf, const char *group, char *errstr, size_t errstr_size) {
    const char *defaults[] = {"client.id", "orderlog-admin", NULL};
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, defaults, errstr, errstr_size);
    if (!kconf)
        return OL_ERR_CONFIG;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(kconf);
        return OL_ERR_KAFKA;
    }
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");
    rd_kafka_DeleteGroup_t *dg = rd_kafka_DeleteGroup_new(group);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DELETEGROUPS);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout, NULL, 0);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteGroups(rk, &dg, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout + 1000);
    ol_err_t err = OL_ERR_OK;
    if (!ev || rd_kafka_event_error(ev))
        err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not delete consumer group %s: %s", group,
                      ev ? rd_kafka_event_error_string(ev) : "no answer");
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_DeleteGroup_destroy(dg);
    rd_kafka_destroy(rk);
    return err;
}

void ol_kafka_topic_name(const ol_conf_t *conf, const char *name, char *out, size_t out_size) {
    snprintf(out, out_size, "%s%s", ol_conf_str(conf, "topic.prefix"), name);
}

rd_kafka_headers_t *ol_kafka_dlq_headers(const rd_kafka_message_t *rkm, const char *topic, const char *stage,
                                         const char *reason, const char *group) {
    rd_kafka_headers_t *orig = NULL;
    rd_kafka_headers_t *h =
        !rd_kafka_message_headers(rkm, &orig) && orig ? rd_kafka_headers_copy(orig) : rd_kafka_headers_new(8);
    char num[32], ts[40];
    rd_kafka_header_add(h, "dlq_topic", -1, topic, -1);
    snprintf(num, sizeof(num), "%d", (int)rkm->partition);
    rd_kafka_header_add(h, "dlq_partition", -1, num, -1);
    snprintf(num, sizeof(num), "%lld", (long long)rkm->offset);
    rd_kafka_header_add(h, "dlq_offset", -1, num, -1);
    rd_kafka_header_add(h, "dlq_stage", -1, stage, -1);
    rd_kafka_header_add(h, "dlq_error", -1, reason, -1);
    rd_kafka_header_add(h, "dlq_group", -1, group, -1);
    ol_time_format(ol_time_now_ms(), ts, sizeof(ts));
    rd_kafka_header_add(h, "dlq_time", -1, ts, -1);
    return h;
}
