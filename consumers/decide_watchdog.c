/* The main thread while the workers run: the totals in the log every 10 s,
 * the heap handed back once idle; and the bounded shutdown. */
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "common/base/cli.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "consumers/decide.h"

void ol_decide__totals(decide_t *d, long long *decisions, long long *facts, long long *poison, long long *txns,
                       long long *aborts) {
    *decisions = *facts = *poison = *txns = *aborts = 0;
    for (int i = 0; i < d->nworkers; i++) {
        *decisions += atomic_load(&d->workers[i].decisions);
        *facts += atomic_load(&d->workers[i].facts);
        *poison += atomic_load(&d->workers[i].poison);
        *txns += atomic_load(&d->workers[i].txns);
        *aborts += atomic_load(&d->workers[i].aborts);
    }
}

typedef struct watch_s {
    int64_t last_us; /* last totals in the log */
    long long last_dec;
    long long trim_facts; /* facts at the last change seen */
    int64_t busy_us;      /* when they last changed */
    bool trim_due;
    /* the group watch */
    int64_t group_next_us, group_moved_us;
    long long group_committed, group_restored;
    bool group_renewed;
} watch_t;

/* The group's committed offsets on buy-requests and skus (summed) and the
 * records past them; false when Kafka does not answer. */
static bool group_position(decide_t *d, long long *committed, long long *waiting) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(2 * d->npartitions);
    for (int p = 0; p < d->npartitions; p++) {
        rd_kafka_topic_partition_list_add(l, d->topic_buy, p);
        rd_kafka_topic_partition_list_add(l, d->topic_skus, p);
    }
    bool ok = !rd_kafka_committed(d->watcher, l, 5000);
    *committed = *waiting = 0;
    for (int i = 0; ok && i < l->cnt; i++) {
        int64_t lo, hi, at = l->elems[i].offset;
        if (rd_kafka_query_watermark_offsets(d->watcher, l->elems[i].topic, l->elems[i].partition, &lo, &hi, 3000)) {
            ok = false;
            break;
        }
        at = at >= lo ? at : lo;
        *committed += at;
        *waiting += hi > at ? hi - at : 0;
    }
    rd_kafka_topic_partition_list_destroy(l);
    return ok;
}

/* Every 10 s: the group as Kafka sees it. Records waiting past its
 * committed offsets, Kafka answering, and neither those offsets nor a
 * restore moving for STALL_MS is a stall of the group, whatever each worker
 * sees (a worker whose partitions were revoked, waiting for a rebalance
 * that does not end, has nothing to do): every worker replaces its
 * consumer; still so STALL_MS later, the process exits 1. With other
 * decide processes in the group, their stall counts too: this process
 * then leaves and comes back, which makes the group rebalance. */
static void watch_group(decide_t *d, watch_t *s, int64_t now) {
    if (!d->watcher || now < s->group_next_us)
        return;
    s->group_next_us = now + 10 * 1000 * 1000;
    long long committed, waiting, restored = atomic_load(&d->restore_facts);
    if (!group_position(d, &committed, &waiting) || committed != s->group_committed || restored != s->group_restored ||
        !waiting) {
        s->group_committed = committed;
        s->group_restored = restored;
        s->group_moved_us = now;
        s->group_renewed = false;
        return;
    }
    if (now - s->group_moved_us < (int64_t)STALL_MS * 1000)
        return;
    char why[1024];
    snprintf(why, sizeof(why),
             "group %s: %lld records wait on %s and %s and its committed offsets did not move for %.0f s, Kafka "
             "answering",
             d->group, waiting, d->topic_buy, d->topic_skus, (double)(now - s->group_moved_us) / 1e6);
    if (s->group_renewed) {
        char errstr[1100];
        snprintf(errstr, sizeof(errstr), "%s, even after every worker replaced its consumer", why);
        ol_decide__fail(&d->workers[0], errstr);
        return;
    }
    ol_log_error("decide: %s: every worker replaces its consumer", why);
    for (int i = 0; i < d->nworkers; i++)
        atomic_store(&d->workers[i].renew_asked, true);
    s->group_renewed = true;
    s->group_moved_us = now;
}

#ifdef __GLIBC__
/* Once idle for a second after work, hand back the pages freed by
 * consumed and delivered messages: they sit between the sale state's
 * long-lived allocations, where the heap cannot shrink by itself
 * (this halves the resident size after a burst). Not under load:
 * trimming locks the allocator for tens of milliseconds. */
static void trim_when_idle(decide_t *d, watch_t *s, int64_t now) {
    long long facts_now = 0;
    for (int i = 0; i < d->nworkers; i++)
        facts_now += atomic_load(&d->workers[i].facts);
    if (facts_now != s->trim_facts) {
        s->trim_facts = facts_now;
        s->busy_us = now;
        s->trim_due = true;
    } else if (s->trim_due && now - s->busy_us >= 1000 * 1000) {
        int64_t trim_t0 = ol_time_mono_us();
        malloc_trim(0);
        ol_log_debug("decide: malloc_trim took %.1f ms", (double)(ol_time_mono_us() - trim_t0) / 1e3);
        s->trim_due = false;
    }
}
#endif

static void log_totals(decide_t *d, watch_t *s, int64_t now) {
    long long dec, facts, poison, txns, aborts;
    ol_decide__totals(d, &dec, &facts, &poison, &txns, &aborts);
    long long commit_us = 0, bytes = 0, holds = 0, remembered = 0;
    for (int i = 0; i < d->nworkers; i++) {
        commit_us += atomic_load(&d->workers[i].commit_us);
        bytes += atomic_load(&d->workers[i].state_bytes);
        holds += atomic_load(&d->workers[i].open_holds);
        remembered += atomic_load(&d->workers[i].remembered);
    }
    ol_log_info("decide: %lld decisions (%.0f/s), %lld facts, %lld transactions (%.1f ms to commit on average), "
                "%lld aborted, %lld to the dlq; state %.1f MB, %lld open holds, %lld request ids remembered",
                dec, (double)(dec - s->last_dec) * 1e6 / (double)(now - s->last_us), facts, txns,
                txns ? (double)commit_us / 1e3 / (double)txns : 0.0, aborts, poison, (double)bytes / 1048576.0, holds,
                remembered);
    s->last_dec = dec;
    s->last_us = now;
}

void ol_decide__watch(decide_t *d) {
    int64_t t0 = ol_time_mono_us();
    watch_t s = {.last_us = t0, .busy_us = t0, .group_next_us = t0 + 10 * 1000 * 1000, .group_moved_us = t0};
    while (!ol_decide__stop) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t now = ol_time_mono_us();
#ifdef __GLIBC__
        trim_when_idle(d, &s, now);
#endif
        if (now - s.last_us >= 10 * 1000 * 1000)
            log_totals(d, &s, now);
        watch_group(d, &s, now);
    }
}

/* Bounds the shutdown: librdkafka's transaction calls can block past their
 * timeout while the cluster is unreachable, so once stopping, the process
 * exits 1 after consumer.shutdown.timeout.ms whatever is still in flight (an
 * open transaction is aborted by the broker after transaction.timeout.ms, or
 * at once by the next start with the same decide.instance). */
static atomic_bool shutdown_done;
static int64_t shutdown_timeout_ms;

static void *watchdog_main(void *arg) {
    (void)arg;
    int64_t deadline = ol_time_mono_us() + shutdown_timeout_ms * 1000;
    while (!atomic_load(&shutdown_done)) {
        if (ol_time_mono_us() >= deadline) {
            ol_log_error("decide: not stopped within %lld ms (consumer.shutdown.timeout.ms; is Kafka reachable?): "
                         "exiting with the transaction in flight, which the broker or the next start aborts",
                         (long long)shutdown_timeout_ms);
            _exit(OL_EXIT_FAIL);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

void ol_decide__watchdog_start(int64_t timeout_ms) {
    shutdown_timeout_ms = timeout_ms;
    pthread_t watchdog;
    if (!pthread_create(&watchdog, NULL, watchdog_main, NULL))
        pthread_detach(watchdog);
}

void ol_decide__watchdog_done(void) {
    atomic_store(&shutdown_done, true);
}
