/* orderlog topics: creates (or deletes) the topics of the contract. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/cli.h"
#include "common/kafka.h"
#include "common/schema.h"
#include "common/time.h"

#define NTOPICS_MAX 16

typedef enum { TOPICS_CREATE, TOPICS_DELETE } topics_op_t;

static int admin_wait(rd_kafka_t *rk, rd_kafka_queue_t *q, int timeout_ms, rd_kafka_event_t **out) {
    (void)rk;
    *out = rd_kafka_queue_poll(q, timeout_ms);
    return *out ? 0 : -1;
}

static int topics_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512];
    if (argc != 2 || (strcmp(argv[1], "create") && strcmp(argv[1], "delete") && strcmp(argv[1], "list")))
        return ol_cli_usage_error(&ol_cmd_topics, "expected create, list or delete");
    rd_kafka_t *rk = ol_kafka_new(conf, OL_KAFKA_ADMIN, "orderlog-topics", NULL, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "orderlog topics: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    int rc = OL_EXIT_FAIL;
    if (ol_kafka_wait_cluster(rk, conf, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog topics: %s\n", errstr);
        rd_kafka_destroy(rk);
        return OL_EXIT_FAIL;
    }
    char names[NTOPICS_MAX][256];
    const char *shorts[NTOPICS_MAX]; /* the names without prefix */
    size_t n = 0;
    for (const char *const *t = ol_schema_topics(); *t && n < NTOPICS_MAX; t++) {
        shorts[n] = *t;
        ol_kafka_topic_name(conf, *t, names[n++], sizeof(names[0]));
    }
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");

    if (!strcmp(argv[1], "list")) {
        const struct rd_kafka_metadata *md;
        if (rd_kafka_metadata(rk, 1, NULL, &md, timeout)) {
            fprintf(stderr, "orderlog topics: could not list topics\n");
            goto out;
        }
        rc = OL_EXIT_OK;
        for (size_t i = 0; i < n; i++) {
            int k;
            for (k = 0; k < md->topic_cnt; k++)
                if (!strcmp(md->topics[k].topic, names[i]))
                    break;
            if (k < md->topic_cnt)
                printf("%-32s %3d partitions\n", names[i], md->topics[k].partition_cnt);
            else {
                printf("%-32s missing\n", names[i]);
                rc = OL_EXIT_FAIL;
            }
        }
        rd_kafka_metadata_destroy(md);
        goto out;
    }

    topics_op_t op = !strcmp(argv[1], "create") ? TOPICS_CREATE : TOPICS_DELETE;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, op == TOPICS_CREATE ? RD_KAFKA_ADMIN_OP_CREATETOPICS
                                                                                      : RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout, errstr, sizeof(errstr));
    rd_kafka_event_t *ev = NULL;
    if (op == TOPICS_CREATE) {
        rd_kafka_NewTopic_t *nt[NTOPICS_MAX];
        for (size_t i = 0; i < n; i++) {
            nt[i] = rd_kafka_NewTopic_new(names[i], (int)ol_conf_int(conf, "topic.partitions"),
                                          (int)ol_conf_int(conf, "topic.replication.factor"), errstr, sizeof(errstr));
            if (!strcmp(shorts[i], "blacklist"))
                rd_kafka_NewTopic_set_config(nt[i], "cleanup.policy", "compact");
        }
        rd_kafka_CreateTopics(rk, nt, n, opts, q);
        rd_kafka_NewTopic_destroy_array(nt, n);
    } else {
        rd_kafka_DeleteTopic_t *dt[NTOPICS_MAX];
        for (size_t i = 0; i < n; i++)
            dt[i] = rd_kafka_DeleteTopic_new(names[i]);
        rd_kafka_DeleteTopics(rk, dt, n, opts, q);
        rd_kafka_DeleteTopic_destroy_array(dt, n);
    }
    if (admin_wait(rk, q, timeout + 5000, &ev) || rd_kafka_event_error(ev)) {
        fprintf(stderr, "orderlog topics: %s failed: %s\n", argv[1],
                ev ? rd_kafka_event_error_string(ev) : "no answer from the cluster");
    } else {
        const rd_kafka_topic_result_t **res;
        size_t nres;
        if (op == TOPICS_CREATE)
            res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres);
        else
            res = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &nres);
        int failed = 0;
        for (size_t i = 0; i < nres; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            const char *tn = rd_kafka_topic_result_name(res[i]);
            if (!e)
                printf("%s %s\n", op == TOPICS_CREATE ? "created" : "deleted", tn);
            else if (op == TOPICS_CREATE && e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                printf("exists  %s\n", tn);
            else if (op == TOPICS_DELETE && e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                printf("absent  %s\n", tn);
            else {
                failed = 1;
                fprintf(stderr, "orderlog topics: %s %s: %s\n", argv[1], tn,
                        rd_kafka_topic_result_error_string(res[i]) ?: rd_kafka_err2str(e));
            }
        }
        rc = failed ? OL_EXIT_FAIL : OL_EXIT_OK;
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    /* existing topics made elsewhere must still fit the contract; new ones
     * reach the brokers' metadata a moment after CreateTopics answers, so a
     * missing topic is waited for (up to broker.wait.ms) */
    if (rc == OL_EXIT_OK && op == TOPICS_CREATE) {
        int64_t deadline = ol_time_mono_us() + (int64_t)timeout * 1000;
        ol_err_t err;
        while ((err = ol_kafka_check_topics(rk, conf, errstr, sizeof(errstr))) == OL_ERR_NOT_FOUND &&
               ol_time_mono_us() < deadline)
            nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
        if (err) {
            fprintf(stderr, "orderlog topics: %s\n", errstr);
            rc = OL_EXIT_FAIL;
        }
    }
out:
    rd_kafka_destroy(rk);
    return rc;
}

const ol_cmd_t ol_cmd_topics = {
    "topics", topics_run, "create, list or delete the topics (a no-op for those that exist)",
    "usage: orderlog topics create|list|delete\n"
    "  create   every topic of the contract with topic.partitions partitions (blacklist compacted)\n"
    "  list     each topic with its partition count\n"
    "  delete   every topic under topic.prefix (all data in them is lost)\n"};
