/* orderlog rebuild, the reading of a pass: the bulk topics' partitions of
 * the pass read by assign() (no group, no rebalance, no offsets) by a few
 * reader threads, each with the partitions it owns, its own queue, decoder
 * and rows, reading, folding and applying in turn (consumers/README.md,
 * "Rebuild in passes"). See rebuild_passes.c. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/arena.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "consumers/project.h"
#include "consumers/rebuild.h"
#include "consumers/runtime.h"

#define READ_BATCH 1000

typedef struct pass_read_s pass_read_t;

typedef struct reader_s {
    pass_read_t *pr;
    rd_kafka_queue_t *q;
    ol_project_bulk_t *bulk;
    ol_codec_t *codec;
    void *state;
    ol_arena_t *arena, *scratch;
    int waiting; /* its partitions not at their end yet */
    pthread_t thread;
    bool started;
    atomic_llong events; /* taken (of the pass's keys, before the end) */
    atomic_size_t rows;
    int64_t decode_us, apply_us, wait_us;
    size_t rejected;
} reader_t;

struct pass_read_s {
    rebuild_t *rb;
    const ol_rt_role_t *role;
    size_t max_rows;
    atomic_int stop;    /* an error code: every reader stops */
    atomic_int running; /* readers not ended */
    int64_t start_us;
    atomic_llong first_us; /* when a reader got its first records (0: none yet) */
    char errstr[512];
    pthread_mutex_t lock;
    reader_t *readers;
    int nreaders;
    bool done[MAX_TOPICS][MAX_PARTS]; /* written by the partition's reader only */
};

/* The first failure stops every reader. */
static void fail(pass_read_t *pr, ol_err_t err, const char *why) {
    pthread_mutex_lock(&pr->lock);
    int expected = 0;
    if (atomic_compare_exchange_strong(&pr->stop, &expected, (int)err))
        snprintf(pr->errstr, sizeof(pr->errstr), "%s", why);
    pthread_mutex_unlock(&pr->lock);
}

static int topic_of(const rebuild_t *rb, const rd_kafka_message_t *m) {
    const char *name = rd_kafka_topic_name(m->rkt);
    for (int t = 0; t < rb->ntopics; t++)
        if (rb->bulk_topic[t] && !strcmp(rb->topic_names[t], name))
            return t;
    return -1;
}

static void partition_done(reader_t *r, int t, int32_t p) {
    if (!r->pr->done[t][p]) {
        r->pr->done[t][p] = true;
        r->waiting--;
    }
}

/* One record: taken or dropped, decoded and folded into the reader's
 * state. What the live projector sent to the dlq (placement, decode, fold)
 * is dropped here too. */
static void read_one(reader_t *r, const rd_kafka_message_t *m, size_t index, int *last_t,
                     const rd_kafka_topic_t **last_rkt) {
    pass_read_t *pr = r->pr;
    rebuild_t *rb = pr->rb;
    int t = m->rkt == *last_rkt ? *last_t : topic_of(rb, m);
    *last_rkt = m->rkt;
    *last_t = t;
    int32_t p = m->partition;
    if (t < 0 || p < 0 || p >= MAX_PARTS || pr->done[t][p])
        return;
    if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            partition_done(r, t, p);
        else
            ol_log_warn("kafka: %s", rd_kafka_message_errstr(m));
        return;
    }
    if (m->offset >= rb->ends[t][p]) { /* the catch-up's */
        partition_done(r, t, p);
        return;
    }
    atomic_store(&rb->last_seen[t][p], m->offset);
    if (m->offset + 1 >= rb->ends[t][p])
        partition_done(r, t, p);
    if (!ol_rebuild__pass_takes_key(rb, p, m->key, m->key_len))
        return;
    atomic_fetch_add(&r->events, 1);
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(r->scratch);
    if (ol_kafka_check_placement(m, rb->topic_parts[t], errstr, sizeof(errstr)) ||
        ol_event_decode(r->codec, m, r->scratch, &env, &value, errstr, sizeof(errstr)) ||
        ol_event_check_key(m, &env, value, errstr, sizeof(errstr))) {
        r->rejected++;
        return;
    }
    ol_rt_record_t rec = {t, p, m->offset, &env, value, index};
    if (pr->role->fold(r->state, &rec, r->arena, errstr, sizeof(errstr)))
        r->rejected++;
}

static void *reader_main(void *arg) {
    reader_t *r = arg;
    pass_read_t *pr = r->pr;
    rd_kafka_message_t *msgs[READ_BATCH];
    int last_t = -1;
    const rd_kafka_topic_t *last_rkt = NULL;
    while (r->waiting > 0 && !atomic_load(&pr->stop) && !ol_rebuild__stopping()) {
        int64_t t0 = ol_time_mono_us();
        ssize_t n = rd_kafka_consume_batch_queue(r->q, 100, msgs, READ_BATCH);
        int64_t t1 = ol_time_mono_us();
        r->wait_us += t1 - t0;
        if (n < 0) {
            char why[256];
            snprintf(why, sizeof(why), "could not read: %s", rd_kafka_err2str(rd_kafka_last_error()));
            fail(pr, OL_ERR_KAFKA, why);
            break;
        }
        if (n == 0)
            continue;
        long long none = 0;
        atomic_compare_exchange_strong(&pr->first_us, &none, (long long)t1);
        for (ssize_t i = 0; i < n; i++)
            read_one(r, msgs[i], (size_t)i, &last_t, &last_rkt);
        int64_t t2 = ol_time_mono_us();
        ol_project_bulk_apply_state(r->bulk, r->state, &r->rejected);
        pr->role->state_reset(r->state);
        ol_arena_reset(r->arena);
        for (ssize_t i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        int64_t t3 = ol_time_mono_us();
        r->decode_us += t2 - t1;
        r->apply_us += t3 - t2;
        /* the rows of the pass, all readers', against the limit */
        atomic_store(&r->rows, ol_project_bulk_rows(r->bulk));
        size_t rows = 0;
        for (int i = 0; i < pr->nreaders; i++)
            rows += atomic_load(&pr->readers[i].rows);
        if (pr->max_rows && rows > pr->max_rows) {
            char why[256];
            snprintf(why, sizeof(why), "bulk load: %zu rows in memory, more than the limit of %zu (rebuild.bulk.rows)",
                     rows, pr->max_rows);
            fail(pr, OL_ERR_TOO_LARGE, why);
        }
    }
    atomic_fetch_sub(&pr->running, 1);
    return NULL;
}

static void progress(const pass_read_t *pr) {
    rebuild_t *rb = pr->rb;
    int64_t now = ol_time_mono_us();
    if (now - rb->last_print_us < 1000000)
        return;
    rb->last_print_us = now;
    int64_t done = rb->events_done;
    for (int i = 0; i < pr->nreaders; i++)
        done += atomic_load(&pr->readers[i].events);
    double secs = (double)(now - rb->start_us) / 1e6;
    fprintf(stderr, "rebuild: %5.1f%% (%lld of %lld events, pass %d), %.0f events/s\n",
            rb->log_events > 0 ? 100.0 * (double)done / (double)rb->log_events : 0.0, (long long)done,
            (long long)rb->log_events, rb->passes + 1, (double)done / secs);
}

/* A partition of a bulk topic in the pass, with the events it holds. */
typedef struct tp_s {
    int t;
    int32_t p;
    int64_t events;
} tp_t;

/* The pass's partitions of the bulk topics (each topic's rows are its own:
 * orders, lines and payments come from orders only, refunds from
 * after-sales, skus from skus), the largest first, each to the reader with
 * the fewest events so far (*owner_out[k] the reader of (*tps_out)[k]);
 * makes pr's readers and returns how many partitions. */
static int plan_readers(pass_read_t *pr, int nbulks, tp_t **tps_out, int **owner_out) {
    rebuild_t *rb = pr->rb;
    tp_t *tps = ol_xcalloc((size_t)(rb->npass * rb->ntopics + 1), sizeof(*tps));
    int ntps = 0;
    for (int t = 0; t < rb->ntopics; t++)
        for (int i = 0; i < rb->npass; i++) {
            int32_t p = rb->pass[i].partition;
            bool seen = false;
            for (int k = 0; k < ntps; k++)
                seen = seen || (tps[k].t == t && tps[k].p == p);
            if (!rb->bulk_topic[t] || p >= rb->topic_parts[t] || seen)
                continue;
            if (rb->ends[t][p] <= rb->starts[t][p]) {
                pr->done[t][p] = true; /* empty */
                continue;
            }
            tps[ntps++] = (tp_t){t, p, rb->ends[t][p] - rb->starts[t][p]};
        }
    for (int i = 1; i < ntps; i++)
        for (int k = i; k > 0 && tps[k].events > tps[k - 1].events; k--) {
            tp_t x = tps[k];
            tps[k] = tps[k - 1];
            tps[k - 1] = x;
        }
    pr->nreaders = nbulks < ntps ? nbulks : ntps;
    pr->readers = ol_xcalloc((size_t)(pr->nreaders > 0 ? pr->nreaders : 1), sizeof(*pr->readers));
    int *owner = ol_xcalloc((size_t)ntps + 1, sizeof(*owner));
    int64_t load[MAX_READERS] = {0};
    for (int k = 0; k < ntps; k++) {
        int best = 0;
        for (int i = 1; i < pr->nreaders; i++)
            best = load[i] < load[best] ? i : best;
        owner[k] = best;
        load[best] += tps[k].events;
    }
    *tps_out = tps;
    *owner_out = owner;
    return ntps;
}

/* One consumer (*rk_out, NULL when it could not be made) assigned every
 * partition of the pass from its beginning, each partition's queue
 * forwarded to its reader's. */
static ol_err_t open_consumer(pass_read_t *pr, const tp_t *tps, const int *owner, int ntps, rd_kafka_t **rk_out) {
    rebuild_t *rb = pr->rb;
    char tuning_group[300];
    snprintf(tuning_group, sizeof(tuning_group), "%.200srebuild-%d", ol_conf_str(rb->conf, "topic.prefix"),
             (int)getpid());
    /* consumer.queue.kbytes prefetched in all (librdkafka's bound is per
     * partition) */
    long long kbytes = ol_conf_int(rb->conf, "consumer.queue.kbytes") / (ntps > 0 ? ntps : 1);
    char qkb[32];
    snprintf(qkb, sizeof(qkb), "%lld", kbytes < 1024 ? 1024 : kbytes);
    const char *tuning[] = {"group.id", tuning_group, "fetch.wait.max.ms", "100", "queued.max.messages.kbytes",
                            qkb,        NULL};
    rd_kafka_t *rk = *rk_out =
        ol_kafka_new(rb->conf, OL_KAFKA_READER, "orderlog-rebuild", tuning, rb->errstr, rb->errstr_size);
    /* the leaders known before the assign: a partition assigned before its
     * leader is known waits half a second (librdkafka's retry of its
     * offset query) before its first fetch */
    bool known[MAX_TOPICS] = {false};
    for (int k = 0; rk && k < ntps; k++)
        if (!known[tps[k].t]) {
            known[tps[k].t] = true;
            ol_kafka_partition_count(rk, rb->conf, rb->topic_names[tps[k].t]);
        }
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(ntps + 1);
    for (int k = 0; k < ntps; k++) {
        rd_kafka_topic_partition_list_add(assign, rb->topic_names[tps[k].t], tps[k].p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        pr->readers[owner[k]].waiting++;
    }
    rd_kafka_resp_err_t kerr = rk ? ol_kafka_assign(rk, assign) : RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int k = 0; rk && !kerr && k < ntps; k++) {
        reader_t *r = &pr->readers[owner[k]];
        if (!r->q)
            r->q = rd_kafka_queue_new(rk);
        rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(rk, rb->topic_names[tps[k].t], tps[k].p);
        if (pq) {
            rd_kafka_queue_forward(pq, r->q);
            rd_kafka_queue_destroy(pq);
        }
    }
    rd_kafka_topic_partition_list_destroy(assign);
    if (!rk)
        return OL_ERR_CONFIG;
    if (kerr)
        return ol_errf(rb->errstr, rb->errstr_size, OL_ERR_KAFKA, "could not assign the partitions: %s",
                       rd_kafka_err2str(kerr));
    return OL_ERR_OK;
}

/* Starts a thread per reader over its bulk state; on a failure the readers
 * started are told to stop. */
static ol_err_t start_readers(pass_read_t *pr, ol_project_bulk_t **bulks) {
    rebuild_t *rb = pr->rb;
    for (int i = 0; i < pr->nreaders; i++) {
        reader_t *r = &pr->readers[i];
        r->pr = pr;
        r->bulk = bulks[i];
        r->codec = ol_codec_new();
        r->state = pr->role->state_new(NULL);
        r->arena = ol_arena_new(0);
        r->scratch = ol_arena_new(0);
        atomic_fetch_add(&pr->running, 1);
        if (pthread_create(&r->thread, NULL, reader_main, r)) {
            atomic_fetch_sub(&pr->running, 1);
            ol_err_t err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_INVALID, "could not start a reader thread");
            atomic_store(&pr->stop, (int)err);
            return err;
        }
        r->started = true;
    }
    return OL_ERR_OK;
}

/* Joins the readers, adds up their figures into st and frees what they
 * held. */
static void stop_readers(pass_read_t *pr, ol_rt_stats_t *st) {
    for (int i = 0; i < pr->nreaders; i++) {
        reader_t *r = &pr->readers[i];
        if (r->started)
            pthread_join(r->thread, NULL);
        st->events += atomic_load(&r->events);
        st->rejected += (long long)r->rejected;
        st->fold_us += r->decode_us;
        st->apply_us += r->apply_us;
        st->idle_us += r->wait_us;
        if (r->state)
            pr->role->state_destroy(r->state);
        if (r->codec)
            ol_codec_destroy(r->codec);
        if (r->arena)
            ol_arena_destroy(r->arena);
        if (r->scratch)
            ol_arena_destroy(r->scratch);
        if (r->q)
            rd_kafka_queue_destroy(r->q);
    }
}

ol_err_t ol_rebuild__read_pass(rebuild_t *rb, ol_project_bulk_t **bulks, int nbulks, size_t max_rows,
                               ol_rt_stats_t *st) {
    memset(st, 0, sizeof(*st));
    pass_read_t *pr = ol_xcalloc(1, sizeof(*pr));
    pr->rb = rb;
    pr->role = ol_project_role();
    pr->max_rows = max_rows;
    pthread_mutex_init(&pr->lock, NULL);
    tp_t *tps = NULL;
    int *owner = NULL;
    int ntps = plan_readers(pr, nbulks, &tps, &owner);
    rd_kafka_t *rk = NULL;
    pr->start_us = ol_time_mono_us();
    ol_err_t err = open_consumer(pr, tps, owner, ntps, &rk);
    rb->pass_open_s = (double)(ol_time_mono_us() - pr->start_us) / 1e6;
    free(tps);
    free(owner);
    if (!err) {
        err = start_readers(pr, bulks);
        /* the progress while they read */
        while (atomic_load(&pr->running) > 0) {
            progress(pr);
            usleep(20000);
        }
    }
    stop_readers(pr, st);
    long long first = atomic_load(&pr->first_us);
    rb->pass_first_s = first ? (double)(first - pr->start_us) / 1e6 : 0.0;
    int64_t t_close = ol_time_mono_us();
    if (rk) {
        ol_kafka_assign(rk, NULL);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    rb->pass_close_s = (double)(ol_time_mono_us() - t_close) / 1e6;
    /* the last batch of each reader, folded after its check */
    size_t rows = 0;
    for (int i = 0; i < pr->nreaders; i++)
        rows += ol_project_bulk_rows(bulks[i]);
    if (!err && !atomic_load(&pr->stop) && max_rows && rows > max_rows)
        err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_TOO_LARGE,
                      "bulk load: %zu rows in memory, more than the limit of %zu (rebuild.bulk.rows)", rows, max_rows);
    if (!err && atomic_load(&pr->stop))
        err = ol_errf(rb->errstr, rb->errstr_size, (ol_err_t)atomic_load(&pr->stop), "%s", pr->errstr);
    pthread_mutex_destroy(&pr->lock);
    free(pr->readers);
    free(pr);
    return err ? err : ol_rebuild__check_stop(rb);
}
