/* orderlog tail: prints the events of a topic as JSON lines, decoded.
 * Reads with assign() (no consumer group, nothing committed). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/kafka.h"
#include "common/domain/schema.h"
#include "common/base/time.h"
#include "common/base/util.h"

static volatile sig_atomic_t tail_stop;

static void on_signal(int sig) {
    (void)sig;
    tail_stop = 1;
}

/* Every header as a string, in record order (a repeated name keeps the last). */
static json_t *headers_json(const rd_kafka_message_t *rkm) {
    json_t *obj = json_object();
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(rkm, &hdrs))
        return obj;
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &size); i++)
        json_object_set_new(obj, name, val ? ol_json_bytes(val, size) : json_null());
    return obj;
}

static void print_record(ol_codec_t *codec, const rd_kafka_message_t *rkm, long long *errors) {
    char errstr[512], ts[40];
    json_t *out = json_object();
    json_object_set_new(out, "topic", json_string(rd_kafka_topic_name(rkm->rkt)));
    json_object_set_new(out, "partition", json_integer(rkm->partition));
    json_object_set_new(out, "offset", json_integer(rkm->offset));
    ol_time_format(rd_kafka_message_timestamp(rkm, NULL), ts, sizeof(ts));
    json_object_set_new(out, "timestamp", json_string(ts));
    json_object_set_new(out, "key", rkm->key ? ol_json_bytes(rkm->key, rkm->key_len) : json_null());
    json_object_set_new(out, "headers", headers_json(rkm));
    ol_event_t ev;
    if (ol_event_from_message(codec, rkm, &ev, errstr, sizeof(errstr))) {
        (*errors)++;
        json_object_set_new(out, "error", json_string(errstr));
        json_object_set_new(out, "value_bytes", json_integer((json_int_t)rkm->len));
    } else {
        json_object_set_new(out, "type", json_string(ev.env.type->name));
        json_object_set_new(out, "schema_version", json_integer(ev.env.version));
        json_object_set_new(out, "data", json_incref(ev.data));
        ol_event_clear(&ev);
    }
    char *line = json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (line) {
        puts(line);
        free(line);
    }
    json_decref(out);
}

typedef struct tail_opts_s {
    const char *name; /* the topic as given */
    long long limit;  /* -1: no limit */
    int from_end, follow;
} tail_opts_t;

/* OL_EXIT_OK, or the exit code of the usage error reported. */
static int tail_options(tail_opts_t *out, int argc, char **argv) {
    *out = (tail_opts_t){NULL, -1, 0, 0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--count")) {
            char *end;
            if (i + 1 >= argc || (out->limit = strtoll(argv[++i], &end, 10)) < 0 || *end)
                return ol_cli_usage_error(&ol_cmd_tail, "-n needs a count of 0 or more");
        } else if (!strcmp(argv[i], "--from")) {
            if (i + 1 >= argc || (strcmp(argv[i + 1], "beginning") && strcmp(argv[i + 1], "end")))
                return ol_cli_usage_error(&ol_cmd_tail, "--from needs beginning or end");
            out->from_end = !strcmp(argv[++i], "end");
        } else if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--follow")) {
            out->follow = 1;
        } else if (argv[i][0] == '-') {
            return ol_cli_usage_error(&ol_cmd_tail, "unknown option \"%s\"", argv[i]);
        } else if (out->name) {
            return ol_cli_usage_error(&ol_cmd_tail, "one topic at a time");
        } else {
            out->name = argv[i];
        }
    }
    if (!out->name)
        return ol_cli_usage_error(&ol_cmd_tail, "which topic? (buy-requests, skus, sale-events, blacklist, orders, "
                                                "after-sales, dlq, or a full topic name)");
    if (out->from_end)
        out->follow = 1;
    return OL_EXIT_OK;
}

/* Prints records until stopped, the limit, or (not following) the end of
 * all nparts partitions; returns how many were printed. */
static long long tail_print(rd_kafka_t *rk, const tail_opts_t *o, int nparts, long long *errors) {
    ol_codec_t *codec = ol_codec_new();
    long long printed = 0;
    int eof = 0;
    while (!tail_stop && (o->limit < 0 || printed < o->limit) && (o->follow || eof < nparts)) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 200);
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof++;
        } else if (rkm->err) {
            fprintf(stderr, "orderlog tail: %s\n", rd_kafka_message_errstr(rkm));
        } else {
            print_record(codec, rkm, errors);
            printed++;
        }
        rd_kafka_message_destroy(rkm);
    }
    ol_codec_destroy(codec);
    return printed;
}

static int tail_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512], topic[256];
    tail_opts_t o;
    int rc = tail_options(&o, argc, argv);
    if (rc != OL_EXIT_OK)
        return rc;
    /* a contract topic by its short name gets the prefix; anything else is taken as it is */
    snprintf(topic, sizeof(topic), "%s", o.name);
    for (const char *const *t = ol_schema_topics(); *t; t++)
        if (!strcmp(*t, o.name))
            ol_kafka_topic_name(conf, o.name, topic, sizeof(topic));
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog tail: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    const char *tuning[] = {"group.id", "orderlog-tail", NULL};
    rd_kafka_t *rk = ol_kafka_new(conf, OL_KAFKA_READER, "orderlog-tail", tuning, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "orderlog tail: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    rc = OL_EXIT_FAIL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, (int)ol_conf_int(conf, "broker.wait.ms"));
    rd_kafka_topic_destroy(rkt);
    if (kerr) {
        fprintf(stderr, "orderlog tail: could not reach Kafka at %s: %s\n",
                ol_conf_str(conf, "kafka.bootstrap.servers"), rd_kafka_err2str(kerr));
        goto out;
    }
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0) {
        fprintf(stderr, "orderlog tail: topic %s does not exist\n", topic);
        goto out;
    }
    int nparts = md->topics[0].partition_cnt;
    parts = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
            o.from_end ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
    if ((kerr = ol_kafka_assign(rk, parts))) {
        fprintf(stderr, "orderlog tail: could not read %s: %s\n", topic, rd_kafka_err2str(kerr));
        goto out;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    long long errors = 0, printed = tail_print(rk, &o, nparts, &errors);
    fflush(stdout);
    if (errors)
        fprintf(stderr, "orderlog tail: %lld of %lld records could not be decoded (see their \"error\")\n", errors,
                printed);
    rc = errors ? OL_EXIT_FAIL : OL_EXIT_OK;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    ol_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

const ol_cmd_t ol_cmd_tail = {
    "tail", tail_run, "print a topic's events as JSON lines (headers and decoded payload)",
    "usage: orderlog tail TOPIC [--from beginning|end] [-n COUNT] [--follow]\n"
    "  TOPIC            buy-requests, skus, sale-events, blacklist, orders, after-sales, dlq\n"
    "                   (the prefix is added), or any full topic name\n"
    "  --from beginning start at the oldest event (default) and stop at the end\n"
    "  --from end       only events published from now on (implies --follow)\n"
    "  -n COUNT         stop after COUNT events\n"
    "  -f, --follow     keep waiting for new events\n"};
