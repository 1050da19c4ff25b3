/* The main thread while the workers run: the totals in the log every 10 s,
 * the heap handed back once idle; and the bounded shutdown. */
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "common/base/cli.h"
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
} watch_t;

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
    watch_t s = {.last_us = t0, .busy_us = t0};
    while (!ol_decide__stop) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        int64_t now = ol_time_mono_us();
#ifdef __GLIBC__
        trim_when_idle(d, &s, now);
#endif
        if (now - s.last_us >= 10 * 1000 * 1000)
            log_totals(d, &s, now);
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
