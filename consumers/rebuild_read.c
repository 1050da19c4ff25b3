/* orderlog rebuild, the reading of a pass: the bulk topics' partitions of
 * the pass read from spill files or by assign() (no group, no rebalance, no
 * offsets) by a few reader threads, each with the partitions and files it
 * owns, its own queue, decoder and rows; the records off a queue dealt by
 * their keys' sub, each reader folding and applying, or spilling, those of
 * its sub (consumers/README.md, "Rebuild in passes"). See rebuild_passes.c
 * and rebuild_spill.c. */
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
    struct src_s *files; /* the spill files it reads, before its partitions */
    int nfiles;
    spill_writer_t *writers; /* the spill files it writes */
    int nwriters, writers_cap;
    int64_t kafka_records, file_records, spilled;
    size_t pending;        /* records folded since the last apply */
    int64_t batch_us;      /* when the batch began */
    int64_t flush_wait_us; /* waiting for the pass before to be written */
    int index;
    /* records of its keys that other readers took off their partitions'
     * queues (see deal) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct handoff_s *inbox, *inbox_tail;
    int inbox_len;
} reader_t;

/* Records a reader took off its queue for another reader: the records of
 * a partition go to the reader of their keys' sub, so that every reader
 * folds a part of every partition of the pass. */
typedef struct handoff_s {
    struct handoff_s *next;
    int n;
    struct {
        rd_kafka_message_t *m;
        int t;
        uint32_t cls;
    } recs[READ_BATCH];
} handoff_t;
#define MAX_INBOX 8

/* A source of a pass: partition p of bulk topic t, from Kafka (spill -1) or
 * one file (sub) of a spill set. */
typedef struct src_s {
    int t;
    int32_t p;
    int spill, sub;
    int64_t events;
} src_t;

/* How the pass reads partition p (of every bulk topic): from Kafka or a
 * spill set (source), and which spill sets it fills. */
#define MAX_TARGETS 64
typedef struct part_plan_s {
    int32_t p;
    int source; /* a spill set, or -1: Kafka */
    int ntargets;
    int targets[MAX_TARGETS];
} part_plan_t;

struct pass_read_s {
    rebuild_t *rb;
    const ol_rt_role_t *role;
    size_t max_rows;
    atomic_int stop;    /* an error code: every reader stops */
    atomic_int running; /* readers not ended */
    int64_t start_us;
    atomic_llong first_us; /* when a reader got its first records (0: none yet) */
    atomic_int dealers;    /* readers whose partitions are not at their end */
    char errstr[512];
    pthread_mutex_t lock;
    reader_t *readers;
    int nreaders;
    bool done[MAX_TOPICS][MAX_PARTS]; /* written by the partition's reader only */
    part_plan_t plan[MAX_PASS_UNITS];
    int nplan;
    int16_t plan_of[MAX_PARTS]; /* p -> index into plan (-1: not the pass's) */
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

/* The reader's writer of a spill file, made on first use. */
static spill_writer_t *writer_of(reader_t *r, int spill, int t, int sub) {
    for (int i = r->nwriters; i-- > 0;) {
        spill_writer_t *w = &r->writers[i];
        if (w->spill == spill && w->t == t && w->sub == sub)
            return w;
    }
    if (r->nwriters == r->writers_cap) {
        r->writers_cap = r->writers_cap ? r->writers_cap * 2 : 8;
        r->writers = ol_xrealloc(r->writers, (size_t)r->writers_cap * sizeof(*r->writers));
    }
    spill_writer_t *w = &r->writers[r->nwriters++];
    *w = (spill_writer_t){.spill = spill, .t = t, .sub = sub, .fd = -1};
    return w;
}

/* A record the pass folds: checked, decoded and folded into the reader's
 * state. What the live projector sent to the dlq (placement, decode, fold)
 * is dropped here too. */
static void fold_one(reader_t *r, int t, int32_t p, const ol_event_rec_t *rec, size_t index) {
    pass_read_t *pr = r->pr;
    rebuild_t *rb = pr->rb;
    atomic_fetch_add(&r->events, 1);
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(r->scratch);
    if (ol_kafka_check_key_placement(rb->topic_names[t], p, rec->key, rec->key_len, rb->topic_parts[t], errstr,
                                     sizeof(errstr)) ||
        ol_event_decode_rec(r->codec, rec, r->scratch, &env, &value, errstr, sizeof(errstr)) ||
        ol_event_check_key_of(rec->key, rec->key_len, &env, value, errstr, sizeof(errstr))) {
        r->rejected++;
        return;
    }
    ol_rt_record_t rr = {t, p, rec->offset, &env, value, index};
    if (pr->role->fold(r->state, &rr, r->arena, errstr, sizeof(errstr)))
        r->rejected++;
}

/* A record of the pass's partition p of topic t, before the end planned:
 * folded when the pass takes its key, written to a spill file when a spill
 * set of the pass does, else dropped. From Kafka (m; its parts made only
 * when needed) or a spill file (rec). */
static void take(reader_t *r, int t, int32_t p, uint32_t cls, const rd_kafka_message_t *m, const ol_event_rec_t *rec,
                 size_t index) {
    pass_read_t *pr = r->pr;
    rebuild_t *rb = pr->rb;
    bool fold = ol_rebuild__pass_takes_class(rb, p, cls);
    int target = -1; /* the spill set it goes to, when not folded */
    const part_plan_t *pp = &pr->plan[pr->plan_of[p]];
    for (int i = 0; !fold && target < 0 && i < pp->ntargets; i++) {
        const spill_t *sp = &rb->spills[pp->targets[i]];
        if (cls % sp->u.k == sp->u.j)
            target = pp->targets[i];
    }
    if (!fold && target < 0)
        return; /* dropped */
    ol_event_rec_t parts;
    if (m) {
        ol_event_rec_of(m, &parts);
        rec = &parts;
    }
    if (fold) {
        fold_one(r, t, p, rec, index);
        return;
    }
    int sub = (int)ol_rebuild__spill_sub(cls, rb->spill_subs);
    ol_rebuild__spill_put(rb, writer_of(r, target, t, sub), target, t, sub, rec);
    r->spilled++;
}

/* Whether a record from Kafka is one the pass may take (before the end
 * planned, of the pass's partitions); *t_out its topic, *cls_out its key's
 * class. Notes where its partition got to. */
static bool wanted(reader_t *r, const rd_kafka_message_t *m, int *last_t, const rd_kafka_topic_t **last_rkt, int *t_out,
                   uint32_t *cls_out) {
    pass_read_t *pr = r->pr;
    rebuild_t *rb = pr->rb;
    int t = m->rkt == *last_rkt ? *last_t : topic_of(rb, m);
    *last_rkt = m->rkt;
    *last_t = t;
    int32_t p = m->partition;
    if (t < 0 || p < 0 || p >= MAX_PARTS || pr->done[t][p] || pr->plan_of[p] < 0)
        return false;
    if (m->err) {
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
            partition_done(r, t, p);
        else
            ol_log_warn("kafka: %s", rd_kafka_message_errstr(m));
        return false;
    }
    if (m->offset >= rb->ends[t][p]) { /* the catch-up's */
        partition_done(r, t, p);
        return false;
    }
    r->kafka_records++;
    atomic_store(&rb->last_seen[t][p], m->offset);
    if (m->offset + 1 >= rb->ends[t][p])
        partition_done(r, t, p);
    *t_out = t;
    *cls_out = ol_rebuild__key_class(m->key, m->key_len);
    return true;
}

/* The records folded since the last call applied to the reader's rows,
 * and the rows of the pass, all readers', checked against the limit. */
static void end_batch(reader_t *r) {
    pass_read_t *pr = r->pr;
    int64_t t2 = ol_time_mono_us();
    ol_project_bulk_apply_state(r->bulk, r->state, &r->rejected);
    pr->role->state_reset(r->state);
    ol_arena_reset(r->arena);
    int64_t t3 = ol_time_mono_us();
    r->decode_us += t2 - r->batch_us;
    r->apply_us += t3 - t2;
    r->batch_us = t3;
    r->pending = 0;
    atomic_store(&r->rows, ol_project_bulk_rows(r->bulk));
    size_t rows = 0;
    for (int i = 0; i < pr->nreaders; i++)
        rows += atomic_load(&pr->readers[i].rows);
    if (pr->max_rows && rows > pr->max_rows) {
        char why[256];
        snprintf(why, sizeof(why), "bulk load: %zu rows in memory, more than the limit of %zu (rebuild.bulk.rows)",
                 rows, pr->max_rows);
        fail(pr, OL_ERR_TOO_LARGE, why);
        return;
    }
    /* the pass before is being written: together, no more than the limit
     * (the reader waits until those rows are gone) */
    if (!pr->max_rows || rows + (size_t)atomic_load(&pr->rb->flushing_rows) <= pr->max_rows)
        return;
    while (atomic_load(&pr->rb->flushing_rows) > 0 && !atomic_load(&pr->stop) && !ol_rebuild__stopping())
        usleep(2000);
    int64_t t4 = ol_time_mono_us();
    r->flush_wait_us += t4 - t3;
    r->batch_us = t4;
}

/* The file being read. */
typedef struct file_read_s {
    reader_t *r;
    int t;
    int32_t p;
} file_read_t;

static ol_err_t file_record(void *opaque, const ol_event_rec_t *rec) {
    file_read_t *f = opaque;
    reader_t *r = f->r;
    if (atomic_load(&r->pr->stop) || ol_rebuild__stopping())
        return OL_ERR_INVALID; /* stopped: the pass says why */
    r->file_records++;
    take(r, f->t, f->p, ol_rebuild__key_class(rec->key, rec->key_len), NULL, rec, r->pending);
    if (++r->pending == READ_BATCH)
        end_batch(r);
    return OL_ERR_OK;
}

/* The reader's spill files, one after another. */
static void read_files(reader_t *r) {
    pass_read_t *pr = r->pr;
    r->batch_us = ol_time_mono_us();
    for (int i = 0; i < r->nfiles && !atomic_load(&pr->stop) && !ol_rebuild__stopping(); i++) {
        const src_t *s = &r->files[i];
        file_read_t f = {r, s->t, s->p};
        char errstr[512];
        long long none = 0;
        atomic_compare_exchange_strong(&pr->first_us, &none, (long long)ol_time_mono_us());
        ol_err_t err = ol_rebuild__spill_read(pr->rb, s->spill, s->t, s->sub, file_record, &f, errstr, sizeof(errstr));
        if (err && !atomic_load(&pr->stop) && !ol_rebuild__stopping())
            fail(pr, err, errstr);
    }
    if (r->pending && !atomic_load(&pr->stop))
        end_batch(r);
}

/* Takes the records of a handoff (then destroyed) and applies them. */
static void take_handoff(reader_t *r, handoff_t *h) {
    r->batch_us = ol_time_mono_us();
    for (int i = 0; i < h->n; i++) {
        rd_kafka_message_t *m = h->recs[i].m;
        take(r, h->recs[i].t, m->partition, h->recs[i].cls, m, NULL, (size_t)i);
        rd_kafka_message_destroy(m);
    }
    if (h->n)
        end_batch(r);
    free(h);
}

/* The next handoff of r's inbox, or NULL. */
static handoff_t *inbox_pop(reader_t *r) {
    pthread_mutex_lock(&r->lock);
    handoff_t *h = r->inbox;
    if (h) {
        r->inbox = h->next;
        if (!r->inbox)
            r->inbox_tail = NULL;
        r->inbox_len--;
        pthread_cond_broadcast(&r->cond); /* room for a dealer */
    }
    pthread_mutex_unlock(&r->lock);
    return h;
}

/* Waits on r's condition for at most ms milliseconds (r->lock held). */
static void wait_ms(reader_t *r, long ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ms * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
    }
    pthread_cond_timedwait(&r->cond, &r->lock, &ts);
}

/* Hands h to reader to, once its inbox has room; meanwhile r takes what
 * was handed to it (two readers dealing to each other never both wait). On
 * a stop, h's records are destroyed. */
static void inbox_push(reader_t *r, reader_t *to, handoff_t *h) {
    pass_read_t *pr = r->pr;
    for (;;) {
        pthread_mutex_lock(&to->lock);
        if (to->inbox_len < MAX_INBOX || atomic_load(&pr->stop) || ol_rebuild__stopping())
            break;
        pthread_mutex_unlock(&to->lock);
        handoff_t *mine = inbox_pop(r);
        if (mine) {
            take_handoff(r, mine);
            continue;
        }
        int64_t t0 = ol_time_mono_us();
        pthread_mutex_lock(&to->lock);
        if (to->inbox_len >= MAX_INBOX)
            wait_ms(to, 2);
        pthread_mutex_unlock(&to->lock);
        r->wait_us += ol_time_mono_us() - t0;
    }
    h->next = NULL;
    if (to->inbox_tail)
        to->inbox_tail->next = h;
    else
        to->inbox = h;
    to->inbox_tail = h;
    to->inbox_len++;
    pthread_cond_broadcast(&to->cond);
    pthread_mutex_unlock(&to->lock);
}

/* A batch off r's queue: the records of its keys taken here, the others
 * handed to the readers of their keys' subs (ol_rebuild__spill_sub: the
 * reader that folds a key is the one that spills it, so a spill file has
 * one writer). */
static void deal(reader_t *r, rd_kafka_message_t **msgs, ssize_t n, int *last_t, const rd_kafka_topic_t **last_rkt) {
    pass_read_t *pr = r->pr;
    handoff_t *out[MAX_READERS] = {NULL};
    handoff_t *own = ol_xmalloc(sizeof(*own));
    own->n = 0;
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = msgs[i];
        int t;
        uint32_t cls;
        if (!wanted(r, m, last_t, last_rkt, &t, &cls)) {
            rd_kafka_message_destroy(m);
            continue;
        }
        int to = (int)ol_rebuild__spill_sub(cls, pr->nreaders);
        handoff_t *h = to == r->index ? own : out[to];
        if (!h) {
            h = out[to] = ol_xmalloc(sizeof(*h));
            h->n = 0;
        }
        h->recs[h->n].m = m;
        h->recs[h->n].t = t;
        h->recs[h->n].cls = cls;
        h->n++;
    }
    for (int i = 0; i < pr->nreaders; i++)
        if (out[i])
            inbox_push(r, &pr->readers[i], out[i]);
    take_handoff(r, own);
}

/* Tells every reader that one more has no partition left to deal. */
static void dealer_done(pass_read_t *pr) {
    atomic_fetch_sub(&pr->dealers, 1);
    for (int i = 0; i < pr->nreaders; i++) {
        pthread_mutex_lock(&pr->readers[i].lock);
        pthread_cond_broadcast(&pr->readers[i].cond);
        pthread_mutex_unlock(&pr->readers[i].lock);
    }
}

/* Every reader: its spill files; then, until every partition of the pass
 * read from Kafka is at its end, batches off its queue (dealt) and what
 * other readers handed it. */
static void *reader_main(void *arg) {
    reader_t *r = arg;
    pass_read_t *pr = r->pr;
    rd_kafka_message_t *msgs[READ_BATCH];
    int last_t = -1;
    const rd_kafka_topic_t *last_rkt = NULL;
    read_files(r);
    bool dealing = r->waiting > 0;
    while (!atomic_load(&pr->stop) && !ol_rebuild__stopping()) {
        handoff_t *h;
        while (!atomic_load(&pr->stop) && (h = inbox_pop(r)))
            take_handoff(r, h);
        if (r->waiting > 0) {
            int64_t t0 = ol_time_mono_us();
            ssize_t n = rd_kafka_consume_batch_queue(r->q, 20, msgs, READ_BATCH);
            int64_t t1 = ol_time_mono_us();
            r->wait_us += t1 - t0;
            if (n < 0) {
                char why[256];
                snprintf(why, sizeof(why), "could not read: %s", rd_kafka_err2str(rd_kafka_last_error()));
                fail(pr, OL_ERR_KAFKA, why);
                break;
            }
            if (n > 0) {
                long long none = 0;
                atomic_compare_exchange_strong(&pr->first_us, &none, (long long)t1);
                deal(r, msgs, n, &last_t, &last_rkt);
            }
            continue;
        }
        if (dealing) { /* its partitions are at their end */
            dealing = false;
            dealer_done(pr);
        }
        /* nothing of its own left: what the others still hand it */
        pthread_mutex_lock(&r->lock);
        bool over = !r->inbox && atomic_load(&pr->dealers) == 0;
        if (!over && !r->inbox) {
            int64_t t0 = ol_time_mono_us();
            wait_ms(r, 10);
            r->wait_us += ol_time_mono_us() - t0;
        }
        pthread_mutex_unlock(&r->lock);
        if (over)
            break;
    }
    if (dealing)
        dealer_done(pr);
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

/* How the pass reads each of its partitions (pr->plan): from the smallest
 * complete spill set that holds its units' keys, else from Kafka; and the
 * spill sets it fills: the queued shares of the partition whose best
 * source is the one read. The partitions read from spill files stop where
 * the pass that read them from Kafka stopped. */
static void plan_partitions(pass_read_t *pr) {
    rebuild_t *rb = pr->rb;
    for (int32_t p = 0; p < MAX_PARTS; p++)
        pr->plan_of[p] = -1;
    pr->nplan = 0;
    for (int i = 0; i < rb->npass; i++) {
        int32_t p = rb->pass[i].partition;
        if (pr->plan_of[p] >= 0)
            continue;
        part_plan_t *pp = &pr->plan[pr->nplan];
        pr->plan_of[p] = (int16_t)pr->nplan++;
        pp->p = p;
        pp->source = ol_rebuild__spill_source(rb, p);
        pp->ntargets = ol_rebuild__spill_plan(rb, p, pp->source, pp->targets, MAX_TARGETS);
        if (pp->source >= 0)
            for (int t = 0; t < rb->ntopics; t++)
                atomic_store(&rb->last_seen[t][p], rb->part_last[t][p]);
    }
}

/* The pass's sources: each partition of the bulk topics (each topic's rows
 * are its own: orders, lines and payments come from orders only, refunds
 * from after-sales, skus from skus) from Kafka, or each of its spill files;
 * the largest first, each to the reader with the fewest events so far
 * (*owner_out[k] the reader of (*srcs_out)[k]); makes pr's readers and
 * returns how many sources. */
static int plan_readers(pass_read_t *pr, int nbulks, src_t **srcs_out, int **owner_out) {
    rebuild_t *rb = pr->rb;
    src_t *srcs = ol_xcalloc((size_t)(pr->nplan * rb->ntopics * (rb->spill_subs + 1) + 1), sizeof(*srcs));
    int nsrcs = 0;
    for (int t = 0; t < rb->ntopics; t++)
        for (int i = 0; i < pr->nplan; i++) {
            const part_plan_t *pp = &pr->plan[i];
            int32_t p = pp->p;
            if (!rb->bulk_topic[t] || p >= rb->topic_parts[t])
                continue;
            if (rb->ends[t][p] <= rb->starts[t][p]) {
                pr->done[t][p] = true; /* empty */
                continue;
            }
            if (pp->source < 0) {
                srcs[nsrcs++] = (src_t){t, p, -1, 0, rb->ends[t][p] - rb->starts[t][p]};
                continue;
            }
            pr->done[t][p] = true; /* no Kafka */
            for (int sub = 0; sub < rb->spill_subs; sub++) {
                int64_t n = rb->spills[pp->source].records[t][sub];
                if (n > 0)
                    srcs[nsrcs++] = (src_t){t, p, pp->source, sub, n};
            }
        }
    for (int i = 1; i < nsrcs; i++)
        for (int k = i; k > 0 && srcs[k].events > srcs[k - 1].events; k--) {
            src_t x = srcs[k];
            srcs[k] = srcs[k - 1];
            srcs[k - 1] = x;
        }
    /* from Kafka, every reader takes a part of every partition (deal) */
    bool kafka = false;
    for (int k = 0; k < nsrcs; k++)
        kafka = kafka || srcs[k].spill < 0;
    pr->nreaders = kafka || nbulks < nsrcs ? nbulks : nsrcs;
    pr->readers = ol_xcalloc((size_t)(pr->nreaders > 0 ? pr->nreaders : 1), sizeof(*pr->readers));
    for (int i = 0; i < pr->nreaders; i++) {
        pr->readers[i].index = i;
        pthread_mutex_init(&pr->readers[i].lock, NULL);
        pthread_cond_init(&pr->readers[i].cond, NULL);
    }
    int *owner = ol_xcalloc((size_t)nsrcs + 1, sizeof(*owner));
    int64_t load[MAX_READERS] = {0};
    for (int k = 0; k < nsrcs; k++) {
        int best = 0;
        for (int i = 1; i < pr->nreaders; i++)
            best = load[i] < load[best] ? i : best;
        owner[k] = best;
        load[best] += srcs[k].events;
        if (srcs[k].spill >= 0) {
            reader_t *r = &pr->readers[best];
            r->files = ol_xrealloc(r->files, (size_t)(r->nfiles + 1) * sizeof(*r->files));
            r->files[r->nfiles++] = srcs[k];
        }
    }
    *srcs_out = srcs;
    *owner_out = owner;
    return nsrcs;
}

/* One consumer (*rk_out; NULL when it could not be made, or when no source
 * is Kafka) assigned every partition of the pass read from Kafka from its
 * beginning, each partition's queue forwarded to its reader's. */
static ol_err_t open_consumer(pass_read_t *pr, const src_t *srcs, const int *owner, int nsrcs, rd_kafka_t **rk_out) {
    rebuild_t *rb = pr->rb;
    *rk_out = NULL;
    int ntps = 0;
    for (int k = 0; k < nsrcs; k++)
        ntps += srcs[k].spill < 0;
    if (!ntps)
        return OL_ERR_OK;
    char tuning_group[300];
    snprintf(tuning_group, sizeof(tuning_group), "%.200srebuild-%d", ol_conf_str(rb->conf, "topic.prefix"),
             (int)getpid());
    /* librdkafka's bound is per partition, of any topic: consumer.queue.kbytes
     * over the partition numbers of the pass read from Kafka, plus one (orders
     * holds most records, after-sales and skus few). Divided by every
     * topic's partitions, the readers of a pass over several partitions
     * starved (librdkafka 2.0 fetches a partition whose queue was full again
     * only when its broker thread wakes); divided by the partition numbers
     * alone, the prefetch of a pass starting while the one before is written
     * cost up to 170 MB more (consumers/README.md, "Rebuild in passes") */
    int nparts = 0;
    for (int k = 0; k < pr->nplan; k++)
        nparts += pr->plan[k].source < 0;
    long long kbytes = ol_conf_int(rb->conf, "consumer.queue.kbytes") / (nparts + 1);
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
    for (int k = 0; rk && k < nsrcs; k++)
        if (srcs[k].spill < 0 && !known[srcs[k].t]) {
            known[srcs[k].t] = true;
            ol_kafka_know_leaders(rk, rb->topic_names[srcs[k].t]);
        }
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(ntps + 1);
    rd_kafka_queue_t **queues = ol_xcalloc((size_t)ntps + 1, sizeof(*queues));
    for (int k = 0; k < nsrcs; k++) {
        if (srcs[k].spill >= 0)
            continue;
        reader_t *r = &pr->readers[owner[k]];
        if (rk && !r->q)
            r->q = rd_kafka_queue_new(rk);
        queues[assign->cnt] = r->q;
        rd_kafka_topic_partition_list_add(assign, rb->topic_names[srcs[k].t], srcs[k].p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        r->waiting++;
    }
    /* each partition's records to its reader's queue from the first */
    rd_kafka_resp_err_t kerr = rk ? ol_kafka_assign_to_queues(rk, assign, queues) : RD_KAFKA_RESP_ERR_NO_ERROR;
    free(queues);
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
    for (int i = 0; i < pr->nreaders; i++)
        if (pr->readers[i].waiting > 0)
            atomic_fetch_add(&pr->dealers, 1);
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
    }
    for (int i = 0; i < pr->nreaders; i++) {
        reader_t *r = &pr->readers[i];
        /* what was handed to it after it stopped */
        for (handoff_t *h = r->inbox, *next; h; h = next) {
            next = h->next;
            for (int k = 0; k < h->n; k++)
                rd_kafka_message_destroy(h->recs[k].m);
            free(h);
        }
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
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
        /* what it spilled: the files complete once the pass is */
        for (int w = 0; w < r->nwriters; w++) {
            spill_writer_t *sw = &r->writers[w];
            spill_t *sp = &pr->rb->spills[sw->spill];
            if (!ol_rebuild__spill_close(sw))
                sp->failed = true;
            sp->records[sw->t][sw->sub] += sw->records;
            pr->rb->pass_spilled_bytes += sw->bytes;
            sp->bytes += sw->bytes;
            pr->rb->spill_disk_bytes += sw->bytes;
            if (pr->rb->spill_disk_bytes > pr->rb->spill_peak_bytes)
                pr->rb->spill_peak_bytes = pr->rb->spill_disk_bytes;
        }
        free(r->writers);
        free(r->files);
        pr->rb->pass_flush_wait_s += (double)r->flush_wait_us / 1e6;
        pr->rb->pass_kafka += r->kafka_records;
        pr->rb->pass_files += r->file_records;
        pr->rb->pass_spilled += r->spilled;
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
    src_t *srcs = NULL;
    int *owner = NULL;
    rb->pass_kafka = rb->pass_files = rb->pass_spilled = rb->pass_spilled_bytes = 0;
    rb->pass_flush_wait_s = 0;
    plan_partitions(pr);
    int nsrcs = plan_readers(pr, nbulks, &srcs, &owner);
    rd_kafka_t *rk = NULL;
    pr->start_us = ol_time_mono_us();
    ol_err_t err = open_consumer(pr, srcs, owner, nsrcs, &rk);
    rb->pass_open_s = (double)(ol_time_mono_us() - pr->start_us) / 1e6;
    free(srcs);
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
