/* The runtime's pipeline: the batch slots, and the applier thread that
 * applies one batch while the poll thread collects and folds the next. */
#include "consumers/runtime_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/base/time.h"
#include "common/base/util.h"

/* ---- the pipeline --------------------------------------------------------- */

static void *applier_main(void *arg) {
    ol_rt_t *rt = arg;
    pthread_mutex_lock(&rt->pipe.lock);
    for (;;) {
        int64_t t0 = ol_time_mono_us();
        while (!rt->pipe.quit && (!rt->pipe.inflight || rt->pipe.inflight_done))
            pthread_cond_wait(&rt->pipe.cv, &rt->pipe.lock);
        atomic_fetch_add(&rt->stats.idle_us, ol_time_mono_us() - t0);
        if (rt->pipe.quit)
            break;
        batch_t *b = rt->pipe.inflight;
        pthread_mutex_unlock(&rt->pipe.lock);
        char errstr[sizeof(rt->pipe.inflight_errstr)];
        ol_err_t err = ol_rt__apply_batch(rt, b, errstr, sizeof(errstr));
        pthread_mutex_lock(&rt->pipe.lock);
        rt->pipe.inflight_err = err;
        if (err)
            snprintf(rt->pipe.inflight_errstr, sizeof(rt->pipe.inflight_errstr), "%s", errstr);
        rt->pipe.inflight_done = true;
        pthread_cond_broadcast(&rt->pipe.cv);
    }
    pthread_mutex_unlock(&rt->pipe.lock);
    return NULL;
}

/* Waits for the batch in flight, if any, and settles it. */
ol_err_t ol_rt__inflight_wait(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    if (!rt->pipe.inflight)
        return OL_ERR_OK;
    pthread_mutex_lock(&rt->pipe.lock);
    while (!rt->pipe.inflight_done)
        pthread_cond_wait(&rt->pipe.cv, &rt->pipe.lock);
    batch_t *b = rt->pipe.inflight;
    ol_err_t err = rt->pipe.inflight_err;
    rt->pipe.inflight = NULL;
    rt->pipe.inflight_done = false;
    pthread_mutex_unlock(&rt->pipe.lock);
    if (err)
        ol_errf(errstr, errstr_size, err, "%s", rt->pipe.inflight_errstr);
    return ol_rt__batch_settle(rt, b, err);
}

/* Settles the batch in flight if the applier is done with it, without
 * waiting: a failed batch (the poison limit, a fatal error) stops the
 * consumer at once, not when the next record arrives. */
ol_err_t ol_rt__inflight_poll(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    if (!rt->pipe.inflight)
        return OL_ERR_OK;
    pthread_mutex_lock(&rt->pipe.lock);
    bool done = rt->pipe.inflight_done;
    pthread_mutex_unlock(&rt->pipe.lock);
    return done ? ol_rt__inflight_wait(rt, errstr, errstr_size) : OL_ERR_OK;
}

/* Hands the folded current batch to the applier thread; collecting goes
 * on into the other slot. */
static void inflight_start(ol_rt_t *rt) {
    pthread_mutex_lock(&rt->pipe.lock);
    rt->pipe.inflight = rt->pipe.cur;
    rt->pipe.inflight_done = false;
    pthread_cond_broadcast(&rt->pipe.cv);
    pthread_mutex_unlock(&rt->pipe.lock);
    rt->pipe.cur = rt->pipe.cur == &rt->pipe.slots[0] ? &rt->pipe.slots[1] : &rt->pipe.slots[0];
}

/* Applies the collected batch: pipelined, it waits for the one before and
 * starts this one; otherwise it applies it here. */
ol_err_t ol_rt__batch_apply(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    batch_t *b = rt->pipe.cur;
    ol_rt__fold_batch(rt, b);
    if (atomic_load(&b->held))
        return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT,
                       "stopped while records waited (nothing of their batch committed; read again at the next "
                       "start): %s",
                       b->held_why);
    if (!rt->pipe.on)
        return ol_rt__batch_settle(rt, b, ol_rt__apply_batch(rt, b, errstr, errstr_size));
    ol_err_t err = ol_rt__inflight_wait(rt, errstr, errstr_size);
    if (err)
        return err;
    if (!b->nrecs)
        return OL_ERR_OK;
    if (!b->folded) { /* the batch before had its partitions sought back */
        ol_rt__fold_batch(rt, b);
        if (atomic_load(&b->held))
            return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT,
                           "stopped while records waited (nothing of their batch committed): %s", b->held_why);
    }
    inflight_start(rt);
    return OL_ERR_OK;
}

/* The two batch slots (one without the pipeline), with a fold state and an
 * arena per worker. */
void ol_rt__batches_new(ol_rt_t *rt) {
    /* pipelined: one thread applies a batch while the poll thread collects
     * and folds the next */
    rt->pipe.on = ol_conf_bool(rt->conf, "consumer.pipeline");
    for (int k = 0; k < (rt->pipe.on ? 2 : 1); k++) {
        batch_t *b = &rt->pipe.slots[k];
        b->arena = ol_arena_new(0);
        b->states = ol_xcalloc((size_t)rt->pool.nworkers, sizeof(void *));
        b->arenas = ol_xcalloc((size_t)rt->pool.nworkers, sizeof(ol_arena_t *));
        for (int i = 0; i < rt->pool.nworkers; i++) {
            b->states[i] = rt->role->state_new(rt->role->opaque);
            b->arenas[i] = ol_arena_new(0);
        }
    }
}

void ol_rt__batches_free(ol_rt_t *rt) {
    for (int k = 0; k < 2; k++) {
        batch_t *b = &rt->pipe.slots[k];
        if (!b->arena)
            continue;
        ol_rt__batch_clear(b);
        free(b->recs);
        for (int i = 0; i < rt->pool.nworkers; i++) {
            rt->role->state_destroy(b->states[i]);
            ol_arena_destroy(b->arenas[i]);
        }
        free(b->states);
        free(b->arenas);
        ol_arena_destroy(b->arena);
    }
}

/* Pipelined, the applier thread. */
void ol_rt__pipeline_start(ol_rt_t *rt) {
    if (!rt->pipe.on)
        return;
    if (pthread_create(&rt->pipe.thread, NULL, applier_main, rt))
        ol_assert_fail("pthread_create", __FILE__, __LINE__);
    rt->pipe.started = true;
}

void ol_rt__pipeline_stop(ol_rt_t *rt) {
    if (!rt->pipe.started)
        return;
    pthread_mutex_lock(&rt->pipe.lock);
    rt->pipe.quit = 1;
    pthread_cond_broadcast(&rt->pipe.cv);
    pthread_mutex_unlock(&rt->pipe.lock);
    pthread_join(rt->pipe.thread, NULL);
}
