/* The consumer runtime: life cycle, the poll loop and the small API (the
 * parts: consumers/runtime_internal.h; the protocol: consumers/README.md). */
#include "consumers/runtime_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/base/pg.h"
#include "common/domain/contract.h"
#include "common/domain/schema.h"

void ol_rt_set_dlq(ol_rt_t *rt, bool enabled) {
    rt->dlq.disabled = !enabled;
}

void ol_rt_on_batch(ol_rt_t *rt, void (*fn)(void *opaque, const ol_rt_t *rt), void *opaque) {
    rt->on_batch = fn;
    rt->on_batch_opaque = opaque;
}

int64_t ol_rt_backlog(const ol_rt_t *rt) {
    return rt->reb.backlog;
}

void ol_rt_group_name(const ol_conf_t *conf, const char *role, char *out, size_t out_size) {
    const char *group = ol_conf_str(conf, "consumer.group.id");
    if (*group)
        snprintf(out, out_size, "%s", group);
    else
        snprintf(out, out_size, "%s%s", ol_conf_str(conf, "topic.prefix"), role);
}

void *ol_rt_opaque(const ol_rt_t *rt) {
    return rt->role->opaque;
}

static ol_rt_t *signal_rt;

const char *ol_rt_schema(const ol_rt_t *rt) {
    return rt->schema;
}

void ol_rt_stats(const ol_rt_t *rt, ol_rt_stats_t *out) {
    out->events = atomic_load(&((ol_rt_t *)rt)->stats.events);
    out->batches = atomic_load(&((ol_rt_t *)rt)->stats.batches);
    out->rejected = atomic_load(&((ol_rt_t *)rt)->stats.rejected);
    out->retries = atomic_load(&((ol_rt_t *)rt)->stats.retries);
    out->skipped = atomic_load(&((ol_rt_t *)rt)->stats.skipped);
    out->apply_us = atomic_load(&((ol_rt_t *)rt)->stats.apply_us);
    out->fold_us = atomic_load(&((ol_rt_t *)rt)->stats.fold_us);
    out->idle_us = atomic_load(&((ol_rt_t *)rt)->stats.idle_us);
}

void ol_rt_stop(ol_rt_t *rt) {
    rt->stop = 1;
}

static void on_signal(int sig) {
    (void)sig;
    if (signal_rt)
        ol_rt_stop(signal_rt);
}

void ol_rt_handle_signals(ol_rt_t *rt) {
    signal_rt = rt;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

void ol_rt_reject(ol_rt_t *rt, size_t index, const char *reason) {
    batch_t *b = rt->pipe.applying;
    OL_ASSERT(index < b->nrecs);
    pthread_mutex_lock(&rt->pipe.reject_lock); /* appliers may run at once */
    b->recs[index].reason = ol_arena_strndup(b->arena, reason, strlen(reason));
    b->recs[index].stage = "apply";
    pthread_mutex_unlock(&rt->pipe.reject_lock);
}

int ol_rt__topic_index(const ol_rt_t *rt, const char *name) {
    for (int i = 0; i < rt->ntopics; i++)
        if (!strcmp(rt->topics[i], name))
            return i;
    return -1;
}

/* ---- life cycle --------------------------------------------------------- */

/* Names, locks and the parts that need no connection. */
static void rt_init(ol_rt_t *rt, const ol_conf_t *conf, const ol_rt_role_t *role) {
    rt->conf = conf;
    rt->role = role;
    ol_rt_group_name(conf, role->name, rt->group, sizeof(rt->group));
    snprintf(rt->kafka_group, sizeof(rt->kafka_group), "%s", role->kafka_group ? role->kafka_group : rt->group);
    rt->reb.backlog = -1;
    snprintf(rt->schema, sizeof(rt->schema), "%s", ol_conf_str(conf, "projection.schema"));
    for (const char *const *t = role->topics; *t && rt->ntopics < MAX_TOPICS; t++)
        ol_kafka_topic_name(conf, *t, rt->topics[rt->ntopics++], sizeof(rt->topics[0]));
    ol_kafka_topic_name(conf, "dlq", rt->dlq.topic, sizeof(rt->dlq.topic));
    rt->pipe.cur = &rt->pipe.slots[0];
    pthread_mutex_init(&rt->pipe.lock, NULL);
    pthread_cond_init(&rt->pipe.cv, NULL);
    rt->reb.eof = rd_kafka_topic_partition_list_new(1);
    pthread_mutex_init(&rt->pool.lock, NULL);
    pthread_cond_init(&rt->pool.work, NULL);
    pthread_cond_init(&rt->pool.done, NULL);
    pthread_mutex_init(&rt->pipe.reject_lock, NULL);
    pthread_mutex_init(&rt->stats.lock, NULL);
    rt->pool.nworkers = (int)ol_conf_int(conf, "consumer.workers");
}

/* The group's consumer, rebalanced by ol_rt__rebalance_cb. */
static ol_err_t consumer_open(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    char kbytes[32];
    snprintf(kbytes, sizeof(kbytes), "%lld", (long long)ol_conf_int(rt->conf, "consumer.queue.kbytes"));
    const char *ctuning[] = {"group.id", rt->kafka_group, "enable.partition.eof", "true", "queued.max.messages.kbytes",
                             kbytes, "session.timeout.ms", "10000", "heartbeat.interval.ms", "1000",
                             /* the first fetch after an assignment can
                              * name only partitions with nothing to read
                              * (empty topics, offsets still resolving):
                              * the broker then holds it this long, and a
                              * replay started with a stall of 500 ms */
                             "fetch.wait.max.ms", "100", NULL, NULL, NULL};
    /* static membership: a restarted process takes its partitions back at
     * once instead of after the session timeout (not for a rebuild's own
     * group, made anew each run) */
    char instance[512];
    const char *inst = ol_conf_str(rt->conf, "consumer.instance");
    if (*inst && !rt->role->kafka_group) {
        size_t n = sizeof(ctuning) / sizeof(ctuning[0]);
        snprintf(instance, sizeof(instance), "%s-%s", rt->kafka_group, inst);
        ctuning[n - 3] = "group.instance.id";
        ctuning[n - 2] = instance;
    }
    rd_kafka_conf_t *kconf =
        ol_kafka_conf_new(rt->conf, OL_KAFKA_CONSUMER, rt->kafka_group, ctuning, errstr, errstr_size);
    if (!kconf)
        return OL_ERR_CONFIG;
    rd_kafka_conf_set_rebalance_cb(kconf, ol_rt__rebalance_cb);
    rd_kafka_conf_set_opaque(kconf, rt);
    if (!(rt->rk = ol_kafka_handle_new(RD_KAFKA_CONSUMER, kconf, errstr, errstr_size))) {
        rd_kafka_conf_destroy(kconf);
        return OL_ERR_CONFIG;
    }
    rd_kafka_poll_set_consumer(rt->rk);
    return OL_ERR_OK;
}

ol_rt_t *ol_rt_new(const ol_conf_t *conf, const ol_rt_role_t *role, char *errstr, size_t errstr_size) {
    if (ol_schema_init(errstr, errstr_size))
        return NULL;
    ol_rt_t *rt = ol_xcalloc(1, sizeof(*rt));
    bool ok = false;
    rt_init(rt, conf, role);
    ol_rt__appliers_new(rt);
    if (!(rt->pipe.appliers[0].pg = ol_pg_connect_waiting(conf, errstr, errstr_size)))
        goto out;
    if (consumer_open(rt, errstr, errstr_size) || ol_rt__dlq_open(rt, errstr, errstr_size))
        goto out;
    if (ol_kafka_wait_cluster(rt->rk, conf, errstr, errstr_size) ||
        ol_contract_check_topics(rt->rk, conf, errstr, errstr_size))
        goto out;
    for (int i = 0; i < rt->ntopics; i++)
        rt->partitions[i] = ol_kafka_partition_count(rt->rk, conf, rt->topics[i]);
    ol_rt__batches_new(rt);
    ol_rt__pool_start(rt);
    ol_rt__pipeline_start(rt);
    ok = true;
out:
    if (ok)
        return rt;
    ol_rt_destroy(rt);
    return NULL;
}

void ol_rt_destroy(ol_rt_t *rt) {
    if (!rt)
        return;
    ol_rt__pool_stop(rt);
    ol_rt__pipeline_stop(rt); /* idle: ol_rt_run waits for the batch in flight */
    ol_rt__batches_free(rt);
    ol_rt__appliers_free(rt);
    if (rt->rk) {
        ol_kafka_consumer_close(rt->rk);
        rd_kafka_destroy(rt->rk);
    }
    if (rt->dlq.rk)
        rd_kafka_destroy(rt->dlq.rk);
    rd_kafka_topic_partition_list_destroy(rt->reb.eof);
    pthread_cond_destroy(&rt->pipe.cv);
    pthread_mutex_destroy(&rt->pipe.lock);
    pthread_cond_destroy(&rt->pool.work);
    pthread_cond_destroy(&rt->pool.done);
    pthread_mutex_destroy(&rt->pool.lock);
    pthread_mutex_destroy(&rt->pipe.reject_lock);
    pthread_mutex_destroy(&rt->stats.lock);
    if (signal_rt == rt)
        signal_rt = NULL;
    free(rt);
}

static void batch_add(ol_rt_t *rt, batch_t *b, rd_kafka_message_t *m) {
    int t = ol_rt__topic_index(rt, rd_kafka_topic_name(m->rkt));
    if (rt->role->takes_record &&
        !rt->role->takes_record(rt->role->opaque, t, m->partition, m->offset, m->key, m->key_len)) {
        atomic_fetch_add(&rt->stats.skipped, 1);
        rd_kafka_message_destroy(m);
        return;
    }
    if (b->nrecs == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 1024;
        b->recs = ol_xrealloc(b->recs, b->cap * sizeof(*b->recs));
    }
    /* partitions added since: the count where keys belong is read again
     * (the workers only read it while they fold, after this) */
    if (t >= 0 && m->partition >= rt->partitions[t])
        rt->partitions[t] = ol_kafka_partition_count(rt->rk, rt->conf, rt->topics[t]);
    b->recs[b->nrecs++] = (rec_t){m, t, NULL, NULL};
    b->bytes += m->len + m->key_len;
}

ol_err_t ol_rt_run(ol_rt_t *rt, bool until_end, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(rt->ntopics);
    for (int i = 0; i < rt->ntopics; i++)
        rd_kafka_topic_partition_list_add(subs, rt->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(rt->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not subscribe: %s", rd_kafka_err2str(kerr));
    size_t max_events = (size_t)ol_conf_int(rt->conf, "consumer.batch.events");
    size_t max_bytes = (size_t)ol_conf_int(rt->conf, "consumer.batch.bytes");
    int64_t max_us = ol_conf_int(rt->conf, "consumer.batch.ms") * 1000;
    ol_err_t err = OL_ERR_OK;
    while (!rt->stop) {
        int64_t deadline = ol_time_mono_us() + max_us;
        atomic_store_explicit(&rt->stats.beat_us, deadline - max_us, memory_order_relaxed);
        while (!rt->stop && rt->pipe.cur->nrecs < max_events && rt->pipe.cur->bytes < max_bytes) {
            int64_t left = (deadline - ol_time_mono_us()) / 1000;
            if (left <= 0)
                break;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rt->rk, (int)(left > 100 ? 100 : left));
            if (!m) {
                if ((err = ol_rt__inflight_poll(rt, errstr, errstr_size)))
                    break;
                if (until_end && rt->reb.assigned > 0 && rt->reb.at_end >= rt->reb.assigned)
                    break;
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                if (!rd_kafka_topic_partition_list_find(rt->reb.eof, rd_kafka_topic_name(m->rkt), m->partition)) {
                    rd_kafka_topic_partition_list_add(rt->reb.eof, rd_kafka_topic_name(m->rkt), m->partition);
                    rt->reb.at_end++;
                }
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__FATAL) {
                /* e.g. fenced by another member with the same
                 * group.instance.id: this consumer can do nothing more */
                char why[512];
                rd_kafka_fatal_error(rt->rk, why, sizeof(why));
                err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "the Kafka consumer failed for good: %s", why);
                rd_kafka_message_destroy(m);
                break;
            }
            if (m->err) {
                ol_log_warn("kafka: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            batch_add(rt, rt->pipe.cur, m);
        }
        if (err)
            break;
        if (rt->fatal) {
            err = ol_errf(errstr, errstr_size, rt->fatal, "%s", rt->fatal_msg);
            break;
        }
        if (rt->pipe.cur->nrecs) {
            if ((err = ol_rt__batch_apply(rt, errstr, errstr_size)))
                break;
        } else if (until_end && rt->reb.assigned > 0 && rt->reb.at_end >= rt->reb.assigned) {
            break;
        }
    }
    /* the batch in flight is finished (SIGTERM drains it too) */
    char errstr2[1024];
    ol_err_t err2 = ol_rt__inflight_wait(rt, errstr2, sizeof(errstr2));
    if (err2 && !err)
        err = ol_errf(errstr, errstr_size, err2, "%s", errstr2);
    ol_rt__batch_clear(rt->pipe.cur);
    return err;
}
