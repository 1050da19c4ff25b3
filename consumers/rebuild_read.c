/* orderlog rebuild, the reading of a pass: the bulk topics' partitions of
 * the pass read by assign() (no group, no rebalance, no offsets) in
 * batches; the records of the pass's keys dealt by a hash of the key to
 * folder threads, each with its own decoder and rows, which fold and apply
 * at once (consumers/README.md, "Rebuild in passes"). See
 * rebuild_passes.c. */
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

#define READ_BATCH 2000
#define SLOTS 4 /* batches read ahead of the slowest folder */

typedef struct pass_read_s pass_read_t;

/* A batch of records, shared by the folders: each folds the records dealt
 * to it; the last one done destroys them. */
typedef struct slot_s {
    int64_t seq; /* -1: free */
    rd_kafka_message_t *msgs[READ_BATCH];
    int topic[READ_BATCH];
    size_t n;
    uint16_t idx[MAX_READERS][READ_BATCH];
    size_t nidx[MAX_READERS];
    int pending; /* folders not done with it */
} slot_t;

typedef struct folder_s {
    pass_read_t *pr;
    int id;
    ol_project_bulk_t *bulk;
    ol_codec_t *codec;
    void *state;
    ol_arena_t *arena, *scratch;
    pthread_t thread;
    bool started;
    atomic_size_t rows;
    int64_t next_seq; /* the batch it folds next */
    int64_t decode_us, apply_us, wait_us;
    size_t rejected;
} folder_t;

struct pass_read_s {
    rebuild_t *rb;
    const ol_rt_role_t *role;
    size_t max_rows;
    atomic_int stop; /* an error code: everyone stops */
    char errstr[512];
    pthread_mutex_t lock;
    pthread_cond_t ready, freed;
    slot_t slots[SLOTS];
    int64_t next_seq; /* of the next batch read */
    bool finished;    /* no more batches */
    folder_t *folders;
    int nfolders;
    atomic_llong events; /* taken (of the pass's keys, before the end) */
    bool done[MAX_TOPICS][MAX_PARTS];
    int waiting; /* partitions not at their end yet */
};

/* Whether a record of partition p with this key class is one of the
 * pass's. */
static bool pass_takes_class(const rebuild_t *rb, int32_t p, uint32_t h) {
    for (int i = 0; i < rb->npass; i++) {
        const unit_t *u = &rb->pass[i];
        if (u->partition == p && h % u->k == u->j)
            return true;
    }
    return false;
}

/* The folder of a key: FNV-1a, another hash than its class. */
static int folder_of(const void *key, size_t len, int nfolders) {
    const unsigned char *p = key;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return (int)(h % (uint32_t)nfolders);
}

/* The first failure stops everyone. */
static void fail(pass_read_t *pr, ol_err_t err, const char *why) {
    pthread_mutex_lock(&pr->lock);
    int expected = 0;
    if (atomic_compare_exchange_strong(&pr->stop, &expected, (int)err))
        snprintf(pr->errstr, sizeof(pr->errstr), "%s", why);
    pthread_cond_broadcast(&pr->ready);
    pthread_cond_broadcast(&pr->freed);
    pthread_mutex_unlock(&pr->lock);
}

static int topic_of(const rebuild_t *rb, const rd_kafka_message_t *m) {
    const char *name = rd_kafka_topic_name(m->rkt);
    for (int t = 0; t < rb->ntopics; t++)
        if (rb->bulk_topic[t] && !strcmp(rb->topic_names[t], name))
            return t;
    return -1;
}

static void partition_done(pass_read_t *pr, int t, int32_t p) {
    if (!pr->done[t][p]) {
        pr->done[t][p] = true;
        pr->waiting--;
    }
}

/* ---- the folders ------------------------------------------------------ */

/* One record of the pass decoded and folded into the folder's state. What
 * the live projector sent to the dlq (placement, decode, fold) is dropped
 * here. */
static void fold_one(folder_t *f, const rd_kafka_message_t *m, int t, size_t index) {
    rebuild_t *rb = f->pr->rb;
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(f->scratch);
    if (ol_kafka_check_placement(m, rb->topic_parts[t], errstr, sizeof(errstr)) ||
        ol_event_decode(f->codec, m, f->scratch, &env, &value, errstr, sizeof(errstr)) ||
        ol_event_check_key(m, &env, value, errstr, sizeof(errstr))) {
        f->rejected++;
        return;
    }
    ol_rt_record_t rec = {t, m->partition, m->offset, &env, value, index};
    if (f->pr->role->fold(f->state, &rec, f->arena, errstr, sizeof(errstr)))
        f->rejected++;
}

static void *folder_main(void *arg) {
    folder_t *f = arg;
    pass_read_t *pr = f->pr;
    for (int64_t seq = 0;; seq = ++f->next_seq) {
        slot_t *s = &pr->slots[seq % SLOTS];
        int64_t t0 = ol_time_mono_us();
        pthread_mutex_lock(&pr->lock);
        while (s->seq != seq && !pr->finished && !atomic_load(&pr->stop))
            pthread_cond_wait(&pr->ready, &pr->lock);
        bool have = s->seq == seq && !atomic_load(&pr->stop);
        pthread_mutex_unlock(&pr->lock);
        int64_t t1 = ol_time_mono_us();
        f->wait_us += t1 - t0;
        if (!have)
            break;
        for (size_t k = 0; k < s->nidx[f->id]; k++) {
            size_t i = s->idx[f->id][k];
            fold_one(f, s->msgs[i], s->topic[i], i);
        }
        int64_t t2 = ol_time_mono_us();
        ol_project_bulk_apply_state(f->bulk, f->state, &f->rejected);
        pr->role->state_reset(f->state);
        ol_arena_reset(f->arena);
        atomic_store(&f->rows, ol_project_bulk_rows(f->bulk));
        /* its own records: their headers go back to the heap of the
         * thread that parsed them */
        for (size_t k = 0; k < s->nidx[f->id]; k++)
            rd_kafka_message_destroy(s->msgs[s->idx[f->id][k]]);
        f->decode_us += t2 - t1;
        f->apply_us += ol_time_mono_us() - t2;
        pthread_mutex_lock(&pr->lock);
        if (--s->pending == 0) {
            s->seq = -1;
            pthread_cond_broadcast(&pr->freed);
        }
        pthread_mutex_unlock(&pr->lock);
    }
    return NULL;
}

/* ---- the reading (the caller's thread) ---------------------------------- */

static void progress(pass_read_t *pr) {
    rebuild_t *rb = pr->rb;
    int64_t now = ol_time_mono_us();
    if (now - rb->last_print_us < 1000000)
        return;
    rb->last_print_us = now;
    int64_t done = rb->events_done + atomic_load(&pr->events);
    double secs = (double)(now - rb->start_us) / 1e6;
    fprintf(stderr, "rebuild: %5.1f%% (%lld of %lld events, pass %d), %.0f events/s\n",
            rb->log_events > 0 ? 100.0 * (double)done / (double)rb->log_events : 0.0, (long long)done,
            (long long)rb->log_events, rb->passes + 1, (double)done / secs);
}

/* A free slot (waits for one), or NULL once stopped. */
static slot_t *slot_get(pass_read_t *pr) {
    slot_t *s = &pr->slots[pr->next_seq % SLOTS];
    pthread_mutex_lock(&pr->lock);
    while (s->seq != -1 && !atomic_load(&pr->stop))
        pthread_cond_wait(&pr->freed, &pr->lock);
    pthread_mutex_unlock(&pr->lock);
    return atomic_load(&pr->stop) ? NULL : s;
}

/* Reads until every partition of the pass is at its planned end: the
 * records of the pass's keys go to the folders, the others are dropped
 * unread (never decoded). */
static void read_loop(pass_read_t *pr, rd_kafka_queue_t *q) {
    rebuild_t *rb = pr->rb;
    rd_kafka_message_t *msgs[READ_BATCH];
    const rd_kafka_topic_t *last_rkt = NULL;
    int last_t = -1;
    while (pr->waiting > 0 && !atomic_load(&pr->stop) && !ol_rebuild__stopping()) {
        progress(pr);
        /* the rows of the pass, all folders', against the limit */
        size_t rows = 0;
        for (int i = 0; i < pr->nfolders; i++)
            rows += atomic_load(&pr->folders[i].rows);
        if (pr->max_rows && rows > pr->max_rows) {
            char why[256];
            snprintf(why, sizeof(why), "bulk load: %zu rows in memory, more than the limit of %zu (rebuild.bulk.rows)",
                     rows, pr->max_rows);
            fail(pr, OL_ERR_TOO_LARGE, why);
            break;
        }
        slot_t *s = slot_get(pr);
        if (!s)
            break;
        ssize_t n = rd_kafka_consume_batch_queue(q, 100, msgs, READ_BATCH);
        if (n < 0) {
            char why[256];
            snprintf(why, sizeof(why), "could not read: %s", rd_kafka_err2str(rd_kafka_last_error()));
            fail(pr, OL_ERR_KAFKA, why);
            break;
        }
        s->n = 0;
        memset(s->nidx, 0, sizeof(s->nidx));
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            int t = m->rkt == last_rkt ? last_t : topic_of(rb, m);
            last_rkt = m->rkt;
            last_t = t;
            int32_t p = m->partition;
            bool take = false;
            if (t < 0 || p < 0 || p >= MAX_PARTS || pr->done[t][p]) {
                /* not the pass's */
            } else if (m->err) {
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    partition_done(pr, t, p);
                else
                    ol_log_warn("kafka: %s", rd_kafka_message_errstr(m));
            } else if (m->offset >= rb->ends[t][p]) { /* the catch-up's */
                partition_done(pr, t, p);
            } else {
                atomic_store(&rb->last_seen[t][p], m->offset);
                if (m->offset + 1 >= rb->ends[t][p])
                    partition_done(pr, t, p);
                take = pass_takes_class(rb, p, ol_rebuild__key_class(m->key, m->key_len));
            }
            if (!take) {
                rd_kafka_message_destroy(m);
                continue;
            }
            int w = folder_of(m->key, m->key_len, pr->nfolders);
            s->idx[w][s->nidx[w]++] = (uint16_t)s->n;
            s->topic[s->n] = t;
            s->msgs[s->n++] = m;
        }
        if (!s->n)
            continue;
        atomic_fetch_add(&pr->events, (long long)s->n);
        pthread_mutex_lock(&pr->lock);
        s->pending = pr->nfolders;
        s->seq = pr->next_seq++;
        pthread_cond_broadcast(&pr->ready);
        pthread_mutex_unlock(&pr->lock);
    }
    pthread_mutex_lock(&pr->lock);
    pr->finished = true;
    pthread_cond_broadcast(&pr->ready);
    pthread_mutex_unlock(&pr->lock);
}

ol_err_t ol_rebuild__read_pass(rebuild_t *rb, ol_project_bulk_t **bulks, int nbulks, size_t max_rows,
                               ol_rt_stats_t *st) {
    memset(st, 0, sizeof(*st));
    pass_read_t *pr = ol_xcalloc(1, sizeof(*pr));
    pr->rb = rb;
    pr->role = ol_project_role();
    pr->max_rows = max_rows;
    pthread_mutex_init(&pr->lock, NULL);
    pthread_cond_init(&pr->ready, NULL);
    pthread_cond_init(&pr->freed, NULL);
    for (int i = 0; i < SLOTS; i++)
        pr->slots[i].seq = -1;
    pr->nfolders = nbulks;
    pr->folders = ol_xcalloc((size_t)nbulks, sizeof(*pr->folders));
    ol_err_t err = OL_ERR_OK;
    rd_kafka_queue_t *q = NULL;
    /* the pass's partitions of the bulk topics, from their start */
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(rb->npass * rb->ntopics + 1);
    for (int t = 0; t < rb->ntopics; t++)
        for (int i = 0; i < rb->npass; i++) {
            int32_t p = rb->pass[i].partition;
            if (!rb->bulk_topic[t] || p >= rb->topic_parts[t] || pr->done[t][p] ||
                rd_kafka_topic_partition_list_find(assign, rb->topic_names[t], p))
                continue;
            if (rb->ends[t][p] <= rb->starts[t][p]) {
                pr->done[t][p] = true; /* empty */
                continue;
            }
            rd_kafka_topic_partition_list_add(assign, rb->topic_names[t], p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            pr->waiting++;
        }
    char group[300];
    snprintf(group, sizeof(group), "%.200srebuild-%d", ol_conf_str(rb->conf, "topic.prefix"), (int)getpid());
    /* consumer.queue.kbytes prefetched in all (librdkafka's bound is per
     * partition); fetches large enough that one partition streams */
    long long kbytes = ol_conf_int(rb->conf, "consumer.queue.kbytes") / (pr->waiting > 0 ? pr->waiting : 1);
    char qkb[32];
    snprintf(qkb, sizeof(qkb), "%lld", kbytes < 4096 ? 4096 : kbytes);
    const char *tuning[] = {"group.id",
                            group,
                            "fetch.wait.max.ms",
                            "100",
                            "queued.max.messages.kbytes",
                            qkb,
                            "max.partition.fetch.bytes",
                            "4194304",
                            "fetch.max.bytes",
                            "33554432",
                            NULL};
    rd_kafka_t *rk = ol_kafka_new(rb->conf, OL_KAFKA_READER, "orderlog-rebuild", tuning, rb->errstr, rb->errstr_size);
    if (!rk) {
        rd_kafka_topic_partition_list_destroy(assign);
        err = OL_ERR_CONFIG;
        goto out;
    }
    q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_resp_err_t kerr = rd_kafka_assign(rk, assign);
    rd_kafka_topic_partition_list_destroy(assign);
    if (kerr) {
        err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_KAFKA, "could not assign the partitions: %s",
                      rd_kafka_err2str(kerr));
        goto out;
    }
    for (int i = 0; i < pr->nfolders; i++) {
        folder_t *f = &pr->folders[i];
        f->pr = pr;
        f->id = i;
        f->bulk = bulks[i];
        f->codec = ol_codec_new();
        f->state = pr->role->state_new(NULL);
        f->arena = ol_arena_new(4 << 20); /* a batch's events in one block: a reset frees nothing */
        f->scratch = ol_arena_new(0);
        if (pthread_create(&f->thread, NULL, folder_main, f)) {
            err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_INVALID, "could not start a folder thread");
            break;
        }
        f->started = true;
    }
    if (!err)
        read_loop(pr, q);
out:
    pthread_mutex_lock(&pr->lock);
    pr->finished = true;
    pthread_cond_broadcast(&pr->ready);
    pthread_mutex_unlock(&pr->lock);
    for (int i = 0; i < pr->nfolders; i++) {
        folder_t *f = &pr->folders[i];
        if (f->started)
            pthread_join(f->thread, NULL);
        st->rejected += (long long)f->rejected;
        st->fold_us += f->decode_us;
        st->apply_us += f->apply_us;
        st->idle_us += f->wait_us;
        if (f->state)
            pr->role->state_destroy(f->state);
        if (f->codec)
            ol_codec_destroy(f->codec);
        if (f->arena)
            ol_arena_destroy(f->arena);
        if (f->scratch)
            ol_arena_destroy(f->scratch);
    }
    /* what a stop left unfolded: the records of the folders that did not
     * get to a batch */
    for (int i = 0; i < SLOTS; i++) {
        slot_t *s = &pr->slots[i];
        for (int w = 0; s->seq != -1 && w < pr->nfolders; w++)
            if (s->seq >= pr->folders[w].next_seq)
                for (size_t k = 0; k < s->nidx[w]; k++)
                    rd_kafka_message_destroy(s->msgs[s->idx[w][k]]);
    }
    st->events = atomic_load(&pr->events);
    /* the last batches, folded after the reading ended */
    size_t rows = 0;
    for (int i = 0; i < nbulks; i++)
        rows += ol_project_bulk_rows(bulks[i]);
    if (!err && !atomic_load(&pr->stop) && max_rows && rows > max_rows)
        err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_TOO_LARGE,
                      "bulk load: %zu rows in memory, more than the limit of %zu (rebuild.bulk.rows)", rows, max_rows);
    if (q)
        rd_kafka_queue_destroy(q);
    if (rk) {
        rd_kafka_assign(rk, NULL);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    if (!err && atomic_load(&pr->stop))
        err = ol_errf(rb->errstr, rb->errstr_size, (ol_err_t)atomic_load(&pr->stop), "%s", pr->errstr);
    pthread_cond_destroy(&pr->ready);
    pthread_cond_destroy(&pr->freed);
    pthread_mutex_destroy(&pr->lock);
    free(pr->folders);
    free(pr);
    return err ? err : ol_rebuild__check_stop(rb);
}
