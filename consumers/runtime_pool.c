/* The runtime's worker pool: a batch folded by key hash, every worker at once. */
#include "consumers/runtime_internal.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/event.h"

/* ---- workers ---------------------------------------------------------- */

static void fold_one(worker_t *w, size_t i) {
    ol_rt_t *rt = w->rt;
    batch_t *b = rt->pool.folding;
    ol_arena_t *arena = b->arenas[w->id];
    rec_t *r = &b->recs[i];
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(w->scratch);
    /* a key on another partition than the contract's has lost its order
     * with the rest of its key's events: never applied silently */
    if (ol_kafka_check_placement(r->rkm, rt->partitions[r->topic], errstr, sizeof(errstr))) {
        r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
        r->stage = "placement";
        return;
    }
    for (int attempt = 0;; attempt++) {
        ol_err_t err = ol_event_decode(w->codec, r->rkm, w->scratch, &env, &value, errstr, sizeof(errstr));
        if (!err)
            break;
        if (!ol_err_is_retriable(err)) {
            r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
            r->stage = "decode";
            return;
        }
        /* the record is fine, what reads it is away (the schema registry):
         * it waits, never a dead letter */
        if (rt->stop) {
            if (!atomic_exchange(&b->held, true))
                snprintf(b->held_why, sizeof(b->held_why), "%s", errstr);
            return;
        }
        if (attempt % 10 == 0)
            ol_log_warn("record %s[%d]@%lld waits (attempt %d): %s", rd_kafka_topic_name(r->rkm->rkt),
                        (int)r->rkm->partition, (long long)r->rkm->offset, attempt + 1, errstr);
        ol_rt__backoff(rt, attempt);
        ol_arena_reset(w->scratch);
    }
    if (ol_event_check_key(r->rkm, &env, value, errstr, sizeof(errstr))) {
        r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
        r->stage = "placement";
        return;
    }
    ol_rt_record_t rec = {r->topic, r->rkm->partition, r->rkm->offset, &env, value, i};
    if (rt->role->fold(b->states[w->id], &rec, arena, errstr, sizeof(errstr))) {
        r->reason = ol_arena_strndup(arena, errstr, strlen(errstr));
        r->stage = "fold";
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    ol_rt_t *rt = w->rt;
    uint64_t seen = 0;
    pthread_mutex_lock(&rt->pool.lock);
    for (;;) {
        while (rt->pool.generation == seen && !rt->pool.quit)
            pthread_cond_wait(&rt->pool.work, &rt->pool.lock);
        if (rt->pool.quit)
            break;
        seen = rt->pool.generation;
        pthread_mutex_unlock(&rt->pool.lock);
        for (size_t k = 0; k < w->n; k++)
            fold_one(w, w->idx[k]);
        pthread_mutex_lock(&rt->pool.lock);
        if (--rt->pool.pending == 0)
            pthread_cond_signal(&rt->pool.done);
    }
    pthread_mutex_unlock(&rt->pool.lock);
    return NULL;
}

/* Runs the fold on every worker at once and waits for them. */
static void run_fold(ol_rt_t *rt) {
    pthread_mutex_lock(&rt->pool.lock);
    rt->pool.pending = rt->pool.nworkers;
    rt->pool.generation++;
    pthread_cond_broadcast(&rt->pool.work);
    while (rt->pool.pending > 0)
        pthread_cond_wait(&rt->pool.done, &rt->pool.lock);
    pthread_mutex_unlock(&rt->pool.lock);
}

/* Folds the batch: records dispatched by key hash, every worker at once. */
void ol_rt__fold_batch(ol_rt_t *rt, batch_t *b) {
    for (int i = 0; i < rt->pool.nworkers; i++) {
        rt->pool.workers[i].n = 0;
        ol_arena_reset(b->arenas[i]);
        rt->role->state_reset(b->states[i]);
    }
    for (size_t i = 0; i < b->nrecs; i++) {
        rd_kafka_message_t *m = b->recs[i].rkm;
        b->recs[i].reason = b->recs[i].stage = NULL;
        /* with parallel apply a worker folds what its applier writes: its
         * partitions (a key has one partition, so its order holds) */
        uint32_t h = rt->pipe.nappliers > 1 ? (uint32_t)m->partition : ol_hash_fnv1a32(m->key, m->key_len);
        worker_t *w = &rt->pool.workers[h % (uint32_t)rt->pool.nworkers];
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 1024;
            w->idx = ol_xrealloc(w->idx, w->cap * sizeof(*w->idx));
        }
        w->idx[w->n++] = i;
    }
    atomic_store(&b->held, false);
    rt->pool.folding = b;
    int64_t t0 = ol_time_mono_us();
    run_fold(rt);
    atomic_fetch_add(&rt->stats.fold_us, ol_time_mono_us() - t0);
    b->folded = true;
}

/* Starts the workers (rt->pool.nworkers, each with its codec). */
void ol_rt__pool_start(ol_rt_t *rt) {
    rt->pool.workers = ol_xcalloc((size_t)rt->pool.nworkers, sizeof(*rt->pool.workers));
    for (int i = 0; i < rt->pool.nworkers; i++) {
        worker_t *w = &rt->pool.workers[i];
        w->rt = rt;
        w->id = i;
        w->codec = ol_codec_new();
        w->scratch = ol_arena_new(0);
        if (pthread_create(&w->thread, NULL, worker_main, w))
            ol_assert_fail("pthread_create", __FILE__, __LINE__);
    }
}

void ol_rt__pool_stop(ol_rt_t *rt) {
    pthread_mutex_lock(&rt->pool.lock);
    rt->pool.quit = 1;
    pthread_cond_broadcast(&rt->pool.work);
    pthread_mutex_unlock(&rt->pool.lock);
    for (int i = 0; rt->pool.workers && i < rt->pool.nworkers; i++) {
        worker_t *w = &rt->pool.workers[i];
        pthread_join(w->thread, NULL);
        ol_codec_destroy(w->codec);
        ol_arena_destroy(w->scratch);
        free(w->idx);
    }
    free(rt->pool.workers);
}
