/* orderlog publish: JSON lines in, Avro events on their topics out.
 *
 * Streams: lines are read in bounded chunks (a line longer than
 * publish.max.line.bytes is skipped, never buffered whole) and the producer
 * queue is bounded by publish.queue.kbytes, so memory stays flat whatever the
 * input size. Every line ends up counted once: published (delivery report
 * OK), rejected (bad input, reported as "line N: reason") or failed
 * (delivery error, reported likewise). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/codec.h"
#include "common/event.h"
#include "common/kafka.h"
#include "common/linereader.h"
#include "common/log.h"
#include "common/time.h"
#include "common/util.h"

typedef struct publish_s {
    const ol_conf_t *conf;
    rd_kafka_t *rk;
    ol_codec_t *codec;
    ol_arena_t *arena; /* one line's parse, reset per line */
    char source[128];
    char (*topics)[256]; /* per event type index */
    const char *input;   /* file name for messages, NULL for a single input */
    int64_t published, rejected, failed;
} publish_t;

static volatile sig_atomic_t publish_stop;

static void on_signal(int sig) {
    (void)sig;
    publish_stop = 1;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    publish_t *p = opaque;
    if (rkm->err) {
        p->failed++;
        fprintf(stderr, "line %lld: delivery to %s failed: %s\n", (long long)(intptr_t)rkm->_private,
                rd_kafka_topic_name(rkm->rkt), rd_kafka_err2str(rkm->err));
    } else {
        p->published++;
    }
}

static void reject(publish_t *p, const char *input, long long lineno, const char *reason) {
    p->rejected++;
    if (input)
        fprintf(stderr, "%s line %lld: %s\n", input, lineno, reason);
    else
        fprintf(stderr, "line %lld: %s\n", lineno, reason);
}

/* Encodes one line and queues it; a full queue waits for deliveries. */
static void publish_line(publish_t *p, const char *input, long long lineno, const char *line, size_t len) {
    char errstr[512];
    ol_event_t ev;
    const void *payload;
    size_t payload_len;
    ol_arena_reset(p->arena);
    if (ol_event_from_line(p->arena, line, len, ol_time_now_ms(), &ev, errstr, sizeof(errstr))) {
        reject(p, input, lineno, errstr);
        return;
    }
    if (ol_codec_encode(p->codec, ev.env.type, ev.input, ev.env.time_ms, &payload, &payload_len, errstr,
                        sizeof(errstr))) {
        reject(p, input, lineno, errstr);
        return;
    }
    snprintf(ev.env.source, sizeof(ev.env.source), "%s", p->source);
    ev.env.content = OL_CONTENT_AVRO;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&ev.env, hdrs);
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(p->topics[ev.env.type->index]), RD_KAFKA_V_KEY(ev.key, strlen(ev.key)),
            RD_KAFKA_V_VALUE((void *)payload, payload_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE((void *)(intptr_t)lineno), RD_KAFKA_V_END);
        if (!err)
            break;
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->rk, 10);
            continue;
        }
        rd_kafka_headers_destroy(hdrs);
        p->failed++;
        fprintf(stderr, "line %lld: could not produce to %s: %s\n", lineno, p->topics[ev.env.type->index],
                rd_kafka_err2str(err));
        break;
    }
    rd_kafka_poll(p->rk, 0);
}

static int publish_stream(publish_t *p, FILE *fp, const char *input) {
    char errstr[256];
    ol_linereader_t *lr = ol_linereader_new(fp, (size_t)ol_conf_int(p->conf, "publish.max.line.bytes"));
    const char *line;
    size_t len;
    long long lineno;
    ol_linereader_status_t st;
    while (!publish_stop && (st = ol_linereader_next(lr, &line, &len, &lineno)) != OL_LINE_EOF) {
        if (st == OL_LINE_TOO_LONG) {
            snprintf(errstr, sizeof(errstr), "line longer than %lld bytes (publish.max.line.bytes)",
                     (long long)ol_conf_int(p->conf, "publish.max.line.bytes"));
            reject(p, input, lineno, errstr);
            continue;
        }
        if (st == OL_LINE_ERROR) {
            fprintf(stderr, "orderlog publish: reading %s: %s\n", input ? input : "standard input", strerror(errno));
            ol_linereader_destroy(lr);
            return -1;
        }
        while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
            len--;
        size_t skip = 0;
        while (skip < len && (line[skip] == ' ' || line[skip] == '\t'))
            skip++;
        if (skip == len)
            continue; /* blank lines are not events */
        publish_line(p, input, lineno, line + skip, len - skip);
    }
    ol_linereader_destroy(lr);
    return 0;
}

static int publish_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512], timeout[32];
    int rc = OL_EXIT_FAIL;
    publish_t p = {.conf = conf};
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] && strcmp(argv[i], "--"))
            return ol_cli_usage_error(&ol_cmd_publish, "unknown option \"%s\"", argv[i]);
        if (strcmp(argv[i], "--"))
            nfiles++;
    }
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog publish: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    snprintf(timeout, sizeof(timeout), "%lld", (long long)ol_conf_int(conf, "publish.delivery.timeout.ms"));
    char kbytes[32];
    snprintf(kbytes, sizeof(kbytes), "%lld", (long long)ol_conf_int(conf, "publish.queue.kbytes"));
    const char *defaults[] = {"client.id", "orderlog-publish", "enable.idempotence", "true", "acks", "all",
                              "linger.ms", "20", "batch.num.messages", "10000", "batch.size", "1000000",
                              "compression.codec", "lz4", "partitioner", "murmur2_random",
                              "queue.buffering.max.kbytes", kbytes, "queue.buffering.max.messages", "1000000",
                              "message.timeout.ms", timeout, NULL};
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, defaults, errstr, sizeof(errstr));
    if (!kconf) {
        fprintf(stderr, "orderlog publish: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    rd_kafka_conf_set_dr_msg_cb(kconf, dr_cb);
    rd_kafka_conf_set_opaque(kconf, &p);
    p.rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf, errstr, sizeof(errstr));
    if (!p.rk) {
        rd_kafka_conf_destroy(kconf);
        fprintf(stderr, "orderlog publish: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    size_t ntypes;
    const ol_event_type_t *const *types = ol_schema_types(&ntypes);
    p.topics = ol_xcalloc(ntypes, sizeof(*p.topics));
    for (size_t i = 0; i < ntypes; i++)
        ol_kafka_topic_name(conf, types[i]->topic, p.topics[i], sizeof(p.topics[i]));
    if (ol_kafka_wait_cluster(p.rk, conf, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog publish: %s\n", errstr);
        goto out;
    }
    if (ol_kafka_check_topics(p.rk, conf, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog publish: %s\n", errstr);
        goto out;
    }
    snprintf(p.source, sizeof(p.source), "%.100s/publish", ol_conf_str(conf, "event.source"));
    p.codec = ol_codec_new();
    p.arena = ol_arena_new(0);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    int64_t t0 = ol_time_mono_us();
    int read_failed = 0;
    if (nfiles == 0) {
        read_failed |= publish_stream(&p, stdin, NULL);
    } else {
        for (int i = 1; i < argc && !publish_stop; i++) {
            if (!strcmp(argv[i], "--"))
                continue;
            const char *name = argv[i];
            FILE *fp = strcmp(name, "-") ? fopen(name, "r") : stdin;
            if (!fp) {
                fprintf(stderr, "orderlog publish: could not open %s: %s\n", name, strerror(errno));
                read_failed = 1;
                continue;
            }
            read_failed |= publish_stream(&p, fp, nfiles > 1 ? name : NULL);
            if (fp != stdin)
                fclose(fp);
        }
    }
    /* every queued event gets its delivery report (or times out) */
    while (rd_kafka_outq_len(p.rk) > 0)
        rd_kafka_flush(p.rk, 1000);
    double secs = (double)(ol_time_mono_us() - t0) / 1e6;
    printf("published %lld, rejected %lld, failed %lld (%.2f s, %.0f events/s)\n", (long long)p.published,
           (long long)p.rejected, (long long)p.failed, secs, secs > 0 ? (double)p.published / secs : 0.0);
    if (publish_stop)
        fprintf(stderr, "orderlog publish: interrupted; the counts above cover what was read\n");
    rc = (p.rejected || p.failed || read_failed || publish_stop) ? OL_EXIT_FAIL : OL_EXIT_OK;
out:
    ol_codec_destroy(p.codec);
    ol_arena_destroy(p.arena);
    rd_kafka_destroy(p.rk);
    free(p.topics);
    return rc;
}

const ol_cmd_t ol_cmd_publish = {
    "publish", publish_run, "publish JSON lines of events to their topics (Avro, CloudEvents headers)",
    "usage: orderlog publish [FILE ...]   (no FILE or - reads standard input)\n"
    "  Each line: {\"type\":\"<Event>\",\"data\":{...}} with optional \"id\" and \"time\".\n"
    "  Bad lines are reported as `line N: reason` and the others still published;\n"
    "  the exit status is 1 when any line was rejected or failed.\n"};
