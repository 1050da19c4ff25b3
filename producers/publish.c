/* orderlog publish: JSON lines in, Avro events on their topics out.
 *
 * A pipeline: the main thread reads lines into batches; publish.threads
 * workers parse, check and encode batches in parallel; each batch is then
 * produced by the worker that prepared it, strictly in batch order, so events
 * reach Kafka in input order (per key, that is what consumers rely on).
 *
 * Memory is bounded whatever the input: a line longer than
 * publish.max.line.bytes is skipped, never buffered whole; at most
 * PIPELINE_SLOTS batches exist; the producer queue is bounded by
 * publish.queue.kbytes. Every line is counted once: published (delivery
 * report OK), rejected (bad input, "line N: reason", including an event
 * whose record is over the producer's message.max.bytes) or failed
 * (delivery error, "line N: ..."). Messages go to stderr in line order. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/kafka.h"
#include "common/domain/contract.h"
#include "common/base/linereader.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/wire.h"

#define PIPELINE_SLOTS 8
#define BATCH_LINES 512
#define BATCH_BYTES (256 * 1024)

/* One line of a batch, and what a worker made of it. */
typedef struct item_s {
    size_t off, len;
    long long lineno;
    int too_long;
    /* prepared */
    const char *error; /* rejected when set (arena) */
    int topic;
    const char *key;
    size_t key_len;
    const void *payload; /* arena */
    size_t payload_len;
    rd_kafka_headers_t *hdrs; /* owned until produced */
} item_t;

typedef enum { SLOT_FREE, SLOT_FILLED, SLOT_CLAIMED } slot_state_t;

typedef struct batch_s {
    slot_state_t state;
    uint64_t seq;
    const char *input; /* file name for messages, NULL for a single input */
    int input_index;   /* its index in argv, 0 for a single input */
    char *text;
    size_t text_len, text_cap;
    item_t *items;
    size_t nitems;
    ol_arena_t *arena; /* the prepared events, reset when the slot is reused */
} batch_t;

typedef struct publish_s {
    const ol_conf_t *conf;
    rd_kafka_t *rk;
    char source[128];
    char (*topics)[256]; /* per event type index */
    size_t max_record;   /* the producer's message.max.bytes: larger records are rejected */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    batch_t slots[PIPELINE_SLOTS];
    uint64_t next_fill, next_claim, next_produce; /* batch sequence numbers */
    int eof;
    atomic_llong published, rejected, failed;
    char **argv; /* the command line, for file names in messages */
} publish_t;

static volatile sig_atomic_t publish_stop;

static void on_signal(int sig) {
    (void)sig;
    publish_stop = 1;
}

/* A message's opaque: its input (index + 1 into argv, 0 for a single
 * input) and line number, so a delivery failure names both. */
#define ORIGIN_LINE_BITS 40

static void *origin_pack(int input, long long lineno) {
    return (void *)(uintptr_t)(((uint64_t)input << ORIGIN_LINE_BITS) | (uint64_t)lineno);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    publish_t *p = opaque;
    if (rkm->err) {
        uint64_t origin = (uint64_t)(uintptr_t)rkm->_private;
        int input = (int)(origin >> ORIGIN_LINE_BITS);
        long long lineno = (long long)(origin & ((1ULL << ORIGIN_LINE_BITS) - 1));
        atomic_fetch_add(&p->failed, 1);
        fprintf(stderr, "%s%sline %lld: delivery to %s failed: %s\n", input ? p->argv[input] : "", input ? " " : "",
                lineno, rd_kafka_topic_name(rkm->rkt), rd_kafka_err2str(rkm->err));
    } else {
        atomic_fetch_add(&p->published, 1);
    }
}

/* The bytes librdkafka counts against message.max.bytes for a record (its
 * wire size: key, value, headers and the v2 record overhead of 36 bytes). */
static size_t varint_len(size_t n) {
    uint64_t z = (uint64_t)n << 1; /* zigzag of a non-negative length */
    size_t len = 1;
    while (z > 0x7f) {
        z >>= 7;
        len++;
    }
    return len;
}

static size_t record_size(size_t key_len, size_t value_len, const rd_kafka_headers_t *hdrs) {
    size_t size = 36 + key_len + value_len;
    const char *name;
    const void *val;
    size_t val_len;
    for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &val_len); i++)
        size += varint_len(strlen(name)) + strlen(name) + varint_len(val_len) + val_len;
    return size;
}

static void report(const batch_t *b, long long lineno, const char *reason) {
    if (b->input)
        fprintf(stderr, "%s line %lld: %s\n", b->input, lineno, reason);
    else
        fprintf(stderr, "line %lld: %s\n", lineno, reason);
}

/* Worker side, in parallel: parse, check, encode, build headers. */
static void prepare_item(publish_t *p, batch_t *b, item_t *it, ol_codec_t *codec, ol_arena_t *scratch) {
    char errstr[512];
    ol_event_t ev;
    const void *payload;
    size_t payload_len;
    if (it->too_long) {
        it->error = ol_arena_sprintf(b->arena, "line longer than %lld bytes (publish.max.line.bytes)",
                                     (long long)ol_conf_int(p->conf, "publish.max.line.bytes"));
        return;
    }
    ol_arena_reset(scratch);
    if (ol_event_from_line(scratch, b->text + it->off, it->len, ol_time_now_ms(), &ev, errstr, sizeof(errstr)) ||
        ol_event_encode_payload(codec, &ev.env, ev.input, &payload, &payload_len, errstr, sizeof(errstr))) {
        it->error = ol_arena_strndup(b->arena, errstr, strlen(errstr));
        return;
    }
    memcpy(ev.env.source, p->source, sizeof(ev.env.source));
    it->topic = ev.env.type->index;
    it->key_len = strlen(ev.key);
    it->key = ol_arena_strndup(b->arena, ev.key, it->key_len);
    void *copy = ol_arena_alloc(b->arena, payload_len);
    memcpy(copy, payload, payload_len);
    it->payload = copy;
    it->payload_len = payload_len;
    it->hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&ev.env, it->hdrs);
    /* rejected here rather than failed at delivery: the line is at fault */
    size_t size = record_size(it->key_len, payload_len, it->hdrs);
    if (size > p->max_record) {
        rd_kafka_headers_destroy(it->hdrs);
        it->hdrs = NULL;
        it->error = ol_arena_sprintf(b->arena,
                                     "encoded event is %zu bytes, more than the %zu of the producer's "
                                     "message.max.bytes (raise it with -X kafka.message.max.bytes=N)",
                                     size, p->max_record);
    }
}

/* Worker side, in batch order: hand the prepared events to librdkafka. */
static void produce_item(publish_t *p, batch_t *b, item_t *it) {
    if (it->error) {
        atomic_fetch_add(&p->rejected, 1);
        report(b, it->lineno, it->error);
        return;
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(p->topics[it->topic]), RD_KAFKA_V_KEY(it->key, it->key_len),
            RD_KAFKA_V_VALUE((void *)it->payload, it->payload_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(it->hdrs), RD_KAFKA_V_OPAQUE(origin_pack(b->input_index, it->lineno)), RD_KAFKA_V_END);
        if (!err) {
            it->hdrs = NULL; /* librdkafka owns them now */
            return;
        }
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->rk, 10);
            continue;
        }
        char reason[300];
        snprintf(reason, sizeof(reason), "could not produce to %s: %s", p->topics[it->topic], rd_kafka_err2str(err));
        atomic_fetch_add(&p->failed, 1);
        report(b, it->lineno, reason);
        return;
    }
}

static void *worker_main(void *arg) {
    publish_t *p = arg;
    ol_codec_t *codec = ol_codec_new();
    ol_arena_t *scratch = ol_arena_new(0);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!(p->next_claim < p->next_fill) && !p->eof)
            pthread_cond_wait(&p->cond, &p->lock);
        if (!(p->next_claim < p->next_fill))
            break; /* eof and nothing left */
        batch_t *b = &p->slots[p->next_claim % PIPELINE_SLOTS];
        uint64_t seq = p->next_claim++;
        b->state = SLOT_CLAIMED;
        pthread_mutex_unlock(&p->lock);

        for (size_t i = 0; i < b->nitems; i++)
            prepare_item(p, b, &b->items[i], codec, scratch);

        pthread_mutex_lock(&p->lock);
        while (p->next_produce != seq)
            pthread_cond_wait(&p->cond, &p->lock);
        pthread_mutex_unlock(&p->lock);
        for (size_t i = 0; i < b->nitems; i++)
            produce_item(p, b, &b->items[i]);
        rd_kafka_poll(p->rk, 0);
        for (size_t i = 0; i < b->nitems; i++)
            if (b->items[i].hdrs)
                rd_kafka_headers_destroy(b->items[i].hdrs);
        pthread_mutex_lock(&p->lock);
        b->state = SLOT_FREE;
        p->next_produce++;
        pthread_cond_broadcast(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    ol_arena_destroy(scratch);
    ol_codec_destroy(codec);
    return NULL;
}

/* Main side: the next free slot, waiting for one. */
static batch_t *slot_acquire(publish_t *p) {
    pthread_mutex_lock(&p->lock);
    batch_t *b = &p->slots[p->next_fill % PIPELINE_SLOTS];
    while (b->state != SLOT_FREE)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    b->text_len = 0;
    b->nitems = 0;
    ol_arena_reset(b->arena);
    return b;
}

static void slot_publish(publish_t *p, batch_t *b) {
    pthread_mutex_lock(&p->lock);
    b->state = SLOT_FILLED;
    b->seq = p->next_fill++;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    rd_kafka_poll(p->rk, 0);
}

static void batch_add(batch_t *b, const char *line, size_t len, long long lineno, int too_long) {
    if (b->text_len + len > b->text_cap) {
        while (b->text_len + len > b->text_cap)
            b->text_cap *= 2;
        b->text = ol_xrealloc(b->text, b->text_cap);
    }
    item_t *it = &b->items[b->nitems++];
    memset(it, 0, sizeof(*it));
    it->off = b->text_len;
    it->len = len;
    it->lineno = lineno;
    it->too_long = too_long;
    memcpy(b->text + b->text_len, line, len);
    b->text_len += len;
}

static int publish_stream(publish_t *p, FILE *fp, const char *input, int input_index) {
    ol_linereader_t *lr = ol_linereader_new(fp, (size_t)ol_conf_int(p->conf, "publish.max.line.bytes"));
    const char *line;
    size_t len;
    long long lineno;
    ol_linereader_status_t st;
    int rc = 0;
    batch_t *b = slot_acquire(p);
    b->input = input;
    b->input_index = input_index;
    while (!publish_stop && (st = ol_linereader_next(lr, &line, &len, &lineno)) != OL_LINE_EOF) {
        if (st == OL_LINE_ERROR) {
            ol_log_error("reading %s: %s", input ? input : "standard input", strerror(errno));
            rc = -1;
            break;
        }
        if (st == OL_LINE_OK) {
            while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
                len--;
            size_t skip = 0;
            while (skip < len && (line[skip] == ' ' || line[skip] == '\t'))
                skip++;
            if (skip == len)
                continue; /* blank lines are not events */
            line += skip;
            len -= skip;
        }
        batch_add(b, line, st == OL_LINE_TOO_LONG ? 0 : len, lineno, st == OL_LINE_TOO_LONG);
        if (b->nitems == BATCH_LINES || b->text_len >= BATCH_BYTES) {
            slot_publish(p, b);
            b = slot_acquire(p);
            b->input = input;
            b->input_index = input_index;
        }
    }
    if (b->nitems)
        slot_publish(p, b);
    else
        b->state = SLOT_FREE; /* acquired but unused: still free */
    ol_linereader_destroy(lr);
    return rc;
}

static rd_kafka_t *producer_new(publish_t *p, const ol_conf_t *conf) {
    char errstr[512], timeout[32], kbytes[32], msgs[32];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)ol_conf_int(conf, "publish.delivery.timeout.ms"));
    snprintf(kbytes, sizeof(kbytes), "%lld", (long long)ol_conf_int(conf, "publish.queue.kbytes"));
    snprintf(msgs, sizeof(msgs), "%lld", (long long)ol_conf_int(conf, "publish.queue.messages"));
    const char *tuning[] = {"linger.ms",
                            "20",
                            "queue.buffering.max.kbytes",
                            kbytes,
                            "queue.buffering.max.messages",
                            msgs,
                            "message.timeout.ms",
                            timeout,
                            NULL};
    const ol_kafka_callbacks_t cb = {.dr_msg = dr_cb, .opaque = p};
    rd_kafka_t *rk =
        ol_kafka_new_with(conf, OL_KAFKA_PRODUCER, "orderlog-publish", tuning, &cb, errstr, sizeof(errstr));
    if (!rk)
        fprintf(stderr, "orderlog publish: %s\n", errstr); /* a bad property */
    return rk;
}

/* The producer and the topics, once the cluster answers and the topics are
 * as the contract says; NULL with *rc the exit status (said). */
static publish_t *publish_new(const ol_conf_t *conf, char **argv, int *rc) {
    char errstr[512];
    publish_t *p = ol_xcalloc(1, sizeof(*p));
    p->conf = conf;
    p->argv = argv;
    if (!(p->rk = producer_new(p, conf))) {
        free(p);
        *rc = OL_EXIT_USAGE;
        return NULL;
    }
    char mmb[32];
    size_t mmb_size = sizeof(mmb);
    if (rd_kafka_conf_get(rd_kafka_conf(p->rk), "message.max.bytes", mmb, &mmb_size) != RD_KAFKA_CONF_OK)
        ol_assert_fail("message.max.bytes unknown to librdkafka", __FILE__, __LINE__);
    p->max_record = (size_t)strtoull(mmb, NULL, 10);
    size_t ntypes;
    const ol_event_type_t *const *types = ol_schema_types(&ntypes);
    p->topics = ol_xcalloc(ntypes, sizeof(*p->topics));
    for (size_t i = 0; i < ntypes; i++)
        ol_kafka_topic_name(conf, types[i]->topic, p->topics[i], sizeof(p->topics[i]));
    if (ol_kafka_wait_cluster(p->rk, conf, errstr, sizeof(errstr)) ||
        ol_contract_check_topics(p->rk, conf, errstr, sizeof(errstr))) {
        ol_log_error("%s", errstr);
        rd_kafka_destroy(p->rk);
        free(p->topics);
        free(p);
        *rc = OL_EXIT_FAIL;
        return NULL;
    }
    snprintf(p->source, sizeof(p->source), "%.100s/publish", ol_conf_str(conf, "event.source"));
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    for (int i = 0; i < PIPELINE_SLOTS; i++) {
        p->slots[i].text_cap = BATCH_BYTES * 2;
        p->slots[i].text = ol_xmalloc(p->slots[i].text_cap);
        p->slots[i].items = ol_xcalloc(BATCH_LINES, sizeof(item_t));
        p->slots[i].arena = ol_arena_new(0);
    }
    return p;
}

static void publish_free(publish_t *p) {
    for (int i = 0; i < PIPELINE_SLOTS; i++) {
        free(p->slots[i].text);
        free(p->slots[i].items);
        ol_arena_destroy(p->slots[i].arena);
    }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    rd_kafka_destroy(p->rk);
    free(p->topics);
    free(p);
}

/* Reads every input (argv[1..argc), standard input when there are none or
 * for "-") into the pipeline; non-zero when one could not be read. */
static int publish_inputs(publish_t *p, int argc, char **argv, int nfiles) {
    if (nfiles == 0)
        return publish_stream(p, stdin, NULL, 0);
    int read_failed = 0;
    for (int i = 1; i < argc && !publish_stop; i++) {
        if (!strcmp(argv[i], "--"))
            continue;
        const char *name = argv[i];
        FILE *fp = strcmp(name, "-") ? fopen(name, "r") : stdin;
        if (!fp) {
            ol_log_error("could not open %s: %s", name, strerror(errno));
            read_failed = 1;
            continue;
        }
        read_failed |= publish_stream(p, fp, nfiles > 1 ? name : NULL, nfiles > 1 ? i : 0);
        if (fp != stdin)
            fclose(fp);
    }
    return read_failed;
}

static int publish_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512];
    int nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] && strcmp(argv[i], "--"))
            return ol_cli_usage_error(&ol_cmd_publish, "unknown option \"%s\"", argv[i]);
        if (strcmp(argv[i], "--"))
            nfiles++;
    }
    if (ol_schema_init(errstr, sizeof(errstr)) ||
        ol_wire_prepare(errstr, sizeof(errstr))) { /* event.format confluent: the schema ids */
        ol_log_error("%s", errstr);
        return OL_EXIT_FAIL;
    }
    int rc;
    publish_t *p = publish_new(conf, argv, &rc);
    if (!p)
        return rc;
    int nthreads = (int)ol_conf_int(conf, "publish.threads");
    pthread_t *threads = ol_xcalloc((size_t)nthreads, sizeof(*threads));
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&threads[i], NULL, worker_main, p))
            ol_assert_fail("pthread_create", __FILE__, __LINE__);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    int64_t t0 = ol_time_mono_us();
    int read_failed = publish_inputs(p, argc, argv, nfiles);
    pthread_mutex_lock(&p->lock);
    p->eof = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    /* every queued event gets its delivery report (or times out) */
    while (rd_kafka_outq_len(p->rk) > 0)
        rd_kafka_flush(p->rk, 1000);
    double secs = (double)(ol_time_mono_us() - t0) / 1e6;
    long long published = atomic_load(&p->published), rejected = atomic_load(&p->rejected),
              failed = atomic_load(&p->failed);
    printf("published %lld, rejected %lld, failed %lld (%.2f s, %.0f events/s)\n", published, rejected, failed, secs,
           secs > 0 ? (double)published / secs : 0.0);
    if (publish_stop)
        ol_log_warn("interrupted; the counts above cover what was read");
    rc = (rejected || failed || read_failed || publish_stop) ? OL_EXIT_FAIL : OL_EXIT_OK;
    publish_free(p);
    return rc;
}

const ol_cmd_t ol_cmd_publish = {
    "publish", publish_run, "publish JSON lines of events to their topics (Avro, CloudEvents headers)",
    "usage: orderlog publish [FILE ...]   (no FILE or - reads standard input)\n"
    "  Each line: {\"type\":\"<Event>\",\"data\":{...}} with optional \"id\" and \"time\".\n"
    "  Bad lines are reported as `line N: reason` and the others still published;\n"
    "  the exit status is 1 when any line was rejected or failed.\n"};
