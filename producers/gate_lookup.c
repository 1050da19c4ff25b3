/* GET /buy/<id> past the decision cache: the lookup in PostgreSQL
 * (buy_decisions in projection.schema), off the HTTP threads.
 *
 * The HTTP thread suspends the connection and queues a job (bounded by
 * gate.lookup.max.queued: beyond, 503 at once); gate.lookup.threads threads,
 * each with its own connection (made again when PostgreSQL went away), take
 * the oldest jobs (up to BATCH_MAX), read their decisions in one query and
 * resume the connections with the answers. A timer thread
 * answers every job still unanswered at its deadline (gate.lookup.timeout.ms
 * after it was queued: 503, or 202 when the gate knows the request is
 * pending), whether it still waits for a thread or its query is running: a
 * query blocked on a lock (a rebuild's swap) ends at the statement timeout
 * (the same value), and its answer is then only cached. So no client waits
 * past the deadline, and the HTTP threads never wait for PostgreSQL. At
 * shutdown every job is answered at once (503 shutting down) and the running
 * queries are cancelled, so that the threads end without waiting for them.
 *
 * Ownership: a job belongs to the pool; it borrows its request (job->r)
 * until the request is answered, and only then is the connection resumed,
 * so a request is answered and resumed once, and never touched after. All
 * under lk->lock; g->lock (the cache) is never taken while it is held. */
#include "producers/gate.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/list.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"

#define LOOKUP_OUTCOMES(X)      \
    X(FOUND, "found")           \
    X(NOT_FOUND, "not_found")   \
    X(ERROR, "error")           \
    X(TIMEOUT, "timeout")       \
    X(QUEUE_FULL, "queue_full") \
    X(SHUTDOWN, "shutdown")
#define LK_ENUM(name, str) LK_##name,
#define LK_STR(name, str) str,
typedef enum lk_outcome_e { LOOKUP_OUTCOMES(LK_ENUM) LK__COUNT } lk_outcome_t;
static const char *const lk_outcome_names[] = {LOOKUP_OUTCOMES(LK_STR) NULL};

/* Lookup duration buckets, in seconds (queue and query). */
static const double lookup_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

#define MSG_QUEUE_FULL "too many lookups, try again"
#define MSG_TIMEOUT "the decisions store did not answer in time, try again"
#define MSG_UNAVAILABLE "decisions store unavailable, try again later"
#define MSG_SHUTDOWN "shutting down"

/* Most lookups one query reads (the queue's oldest, with request_id = ANY). */
#define BATCH_MAX 64

typedef struct job_s {
    OL_LIST_LINK(struct job_s) link; /* in the queue; link.next: in its thread's batch */
    req_t *r;                        /* until answered, then NULL */
    bool pending;                    /* the gate knows the request and has no decision yet */
    int64_t queued_us, deadline_us;
    char id[REQUEST_ID_MAX + 1];
    /* the query's result (the thread running it only) */
    char *found, *owner; /* owner: the decision's user (gate.auth), or NULL */
    outcome_t outcome;
    int reason;
} job_t;

struct lookup_s {
    gate_t *g;
    int64_t timeout_us;
    size_t max_queued, queued;
    int nthreads;
    pthread_t *threads, timer;
    pthread_mutex_t lock;
    pthread_cond_t work_cond, timer_cond; /* CLOCK_MONOTONIC */
    OL_LIST(job_t) queue;                 /* oldest first */
    job_t **running;                      /* by thread: its batch (a list by next), or NULL */
    PGcancel **cancels;                   /* by thread: to cancel its query at exit, or NULL */
    bool refusing;                        /* shutting down: every job answered at once */
    bool stop;                            /* threads end */
    bool timer_idle;                      /* the timer sleeps without a deadline */
    char sql[600];
    atomic_bool table_warned;
    ol_metric_t *outcomes, *duration, *queued_g, *running_g;
};

typedef struct worker_s {
    lookup_t *lk;
    int slot;
    PGconn *pg;       /* NULL until connected, and after it broke */
    int64_t retry_us; /* no new connection before */
} worker_t;

/* ---- answering (under lk->lock) ------------------------------------------ */

/* Answers job's request (202 pending instead of an error or a 404 when the
 * gate knows the request); returns the request to resume once the lock is
 * released. body: taken. */
static req_t *answer(lookup_t *lk, job_t *job, lk_outcome_t o, unsigned status, char *body, outcome_t outcome,
                     int reason) {
    req_t *r = job->r;
    OL_ASSERT(r);
    if (job->pending && o != LK_FOUND) {
        free(body);
        status = MHD_HTTP_ACCEPTED;
        body = ol_gate__answer_pending(r);
        outcome = OUT_PENDING;
        reason = -1;
    }
    ol_gate__set_answer(r, status, body, outcome, reason);
    job->r = NULL;
    ol_metric_inc(lk->outcomes, (size_t)o);
    if (o != LK_QUEUE_FULL)
        ol_metric_observe(lk->duration, 0, (double)(ol_time_mono_us() - job->queued_us) / 1e6);
    return r;
}

static req_t *answer_error(lookup_t *lk, job_t *job, lk_outcome_t o, const char *msg) {
    return answer(lk, job, o, MHD_HTTP_SERVICE_UNAVAILABLE, ol_gate__answer_error(msg, NULL), OUT_UNAVAILABLE, -1);
}

static void unqueue(lookup_t *lk, job_t *job) {
    OL_LIST_REMOVE(&lk->queue, job, link);
    lk->queued--;
    ol_metric_set(lk->queued_g, 0, (int64_t)lk->queued);
}

static void resume(req_t *r) {
    MHD_resume_connection(r->conn);
}

/* ---- the query ------------------------------------------------------------- */

/* Sets (or with NULL, drops) the worker's connection and its cancel key. */
static void set_conn(worker_t *w, PGconn *pg) {
    lookup_t *lk = w->lk;
    PGcancel *cancel = pg ? PQgetCancel(pg) : NULL;
    pthread_mutex_lock(&lk->lock);
    PGcancel *old = lk->cancels[w->slot];
    lk->cancels[w->slot] = cancel;
    pthread_mutex_unlock(&lk->lock);
    if (old)
        PQfreeCancel(old);
    if (w->pg)
        PQfinish(w->pg);
    w->pg = pg;
}

/* The answer a buy_decisions row (as JSON) gives, for GET /buy/<id>. */
static void row_answer(job_t *job, const char *json) {
    /* whichever columns the schema has (expires_at came later) */
    json_t *row = json_loads(json, 0, NULL);
    const char *out = json_string_value(json_object_get(row, "outcome"));
    const char *why = json_string_value(json_object_get(row, "reason"));
    const char *msg = json_string_value(json_object_get(row, "message"));
    const char *hold = json_string_value(json_object_get(row, "hold_id"));
    const char *exp = json_string_value(json_object_get(row, "expires_at"));
    const char *user = json_string_value(json_object_get(row, "user_id"));
    free(job->owner);
    job->owner = user ? ol_xstrdup(user) : NULL;
    int64_t expires_ms = 0;
    if (exp && ol_time_parse(exp, &expires_ms))
        expires_ms = 0;
    free(job->found);
    if (out && !strcmp(out, "accepted")) {
        job->found = ol_gate__answer_accepted(job->id, hold ? hold : "", expires_ms);
        job->outcome = OUT_ACCEPTED;
        job->reason = -1;
    } else {
        why = why ? why : "";
        if (!msg || !*msg)
            msg = !strcmp(why, "blacklisted")                      ? OL_SALE_MSG_BLACKLISTED
                  : !strcmp(why, "level") || !strcmp(why, "limit") ? OL_SALE_MSG_NOT_ALLOWED
                  : !strcmp(why, "too_old")                        ? OL_SALE_MSG_TOO_OLD
                                                                   : OL_SALE_MSG_SOLD_OUT;
        job->found = ol_gate__answer_rejected(job->id, msg, why);
        job->outcome = OUT_REJECTED;
        job->reason = ol_gate__reason_index(why);
    }
    json_decref(row);
}

/* Reads the decisions of a batch (a list by next) in one query: 0 with
 * job->found set for each decision there is (none at all when there is no
 * such table yet), -1 when the database fails, -2 when the query was
 * cancelled (its statement timeout). Connects when the worker has no
 * connection (at most once a second while that fails); a connection found
 * broken is made again once at once (PostgreSQL restarted). */
static int query(worker_t *w, job_t *batch) {
    lookup_t *lk = w->lk;
    char errstr[512];
    /* a text[] literal; request ids hold only [A-Za-z0-9._:-] (checked before) */
    char ids[BATCH_MAX * (REQUEST_ID_MAX + 3) + 3];
    size_t n = 0;
    ids[n++] = '{';
    for (job_t *job = batch; job; job = job->link.next)
        n += (size_t)snprintf(ids + n, sizeof(ids) - n, "%s\"%s\"", job == batch ? "" : ",", job->id);
    ids[n++] = '}';
    ids[n] = '\0';
    for (int attempt = 0;; attempt++) {
        if (!w->pg) {
            int64_t now = ol_time_mono_us();
            if (now < w->retry_us)
                return -1;
            PGconn *pg = ol_pg_connect(lk->g->conf, errstr, sizeof(errstr));
            if (!pg) {
                w->retry_us = now + 1000000;
                ol_log_warn("decisions past the cache cannot be read: %s", errstr);
                return -1;
            }
            /* a query blocked past the lookup's deadline is of no use */
            snprintf(errstr, sizeof(errstr), "SET statement_timeout = %lld", (long long)(lk->timeout_us / 1000));
            PQclear(PQexec(pg, errstr));
            set_conn(w, pg);
        }
        const char *params[] = {ids};
        PGresult *res = PQexecParams(w->pg, lk->sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            for (int i = 0; i < PQntuples(res); i++)
                for (job_t *job = batch; job; job = job->link.next)
                    if (!strcmp(job->id, PQgetvalue(res, i, 0)))
                        row_answer(job, PQgetvalue(res, i, 1));
            PQclear(res);
            return 0;
        }
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        ol_pg_msg(res, w->pg, errstr, sizeof(errstr));
        bool no_table = state && (!strcmp(state, "42P01") || !strcmp(state, "3F000"));
        bool cancelled = state && !strcmp(state, "57014");
        PQclear(res);
        if (no_table) {
            if (!atomic_exchange(&lk->table_warned, true))
                ol_log_warn("decisions past the cache cannot be read: %s", errstr);
            return 0; /* no decisions table (yet): nothing is known */
        }
        if (cancelled) { /* the statement timeout (a lock held), or cancelled at exit: counted, not logged */
            ol_log_debug("a decision lookup was cancelled: %s", errstr);
            return -2;
        }
        if (PQstatus(w->pg) == CONNECTION_OK) {
            ol_log_warn("could not read a decision from PostgreSQL: %s", errstr);
            return -1;
        }
        /* the connection broke (PostgreSQL restarted): once more on a new one */
        set_conn(w, NULL);
        if (attempt > 0) {
            ol_log_warn("could not read a decision from PostgreSQL: %s", errstr);
            return -1;
        }
    }
}

/* ---- threads --------------------------------------------------------------- */

static void *worker_main(void *arg) {
    worker_t *w = arg;
    lookup_t *lk = w->lk;
    gate_t *g = lk->g;
    req_t **wake = ol_xcalloc(BATCH_MAX, sizeof(*wake));
    pthread_mutex_lock(&lk->lock);
    for (;;) {
        while (!lk->queue.head && !lk->stop)
            pthread_cond_wait(&lk->work_cond, &lk->lock);
        if (lk->stop)
            break;
        job_t *batch = NULL, **tail = &batch;
        int n = 0;
        while (lk->queue.head && n < BATCH_MAX) {
            job_t *job = lk->queue.head;
            unqueue(lk, job);
            *tail = job;
            tail = &job->link.next;
            n++;
        }
        lk->running[w->slot] = batch;
        ol_metric_gauge_add(lk->running_g, 0, n);
        pthread_mutex_unlock(&lk->lock);

        int rc = query(w, batch);

        pthread_mutex_lock(&lk->lock);
        lk->running[w->slot] = NULL;
        ol_metric_gauge_add(lk->running_g, 0, -n);
        int nwake = 0;
        for (job_t *job = batch; job; job = job->link.next) {
            if (!job->r)
                continue;                                               /* answered at its deadline */
            if (job->found && !ol_gate__owner_ok(job->r, job->owner)) { /* gate.auth: another user's */
                job->r->auth_outcome = OL_GATE_AUTH_FORBIDDEN;
                wake[nwake++] = answer(lk, job, LK_NOT_FOUND, MHD_HTTP_NOT_FOUND,
                                       ol_gate__answer_error("unknown request", "requestID"), OUT_NOT_FOUND, -1);
            } else if (job->found)
                wake[nwake++] =
                    answer(lk, job, LK_FOUND, MHD_HTTP_OK, ol_xstrdup(job->found), job->outcome, job->reason);
            else if (rc == 0)
                wake[nwake++] = answer(lk, job, LK_NOT_FOUND, MHD_HTTP_NOT_FOUND,
                                       ol_gate__answer_error("unknown request", "requestID"), OUT_NOT_FOUND, -1);
            else
                wake[nwake++] =
                    answer_error(lk, job, rc == -2 ? LK_TIMEOUT : LK_ERROR, rc == -2 ? MSG_TIMEOUT : MSG_UNAVAILABLE);
        }
        pthread_mutex_unlock(&lk->lock);
        for (int i = 0; i < nwake; i++)
            resume(wake[i]);
        while (batch) {
            job_t *job = batch;
            batch = job->link.next;
            if (job->found) { /* answered or not, the decision is worth keeping */
                pthread_mutex_lock(&g->lock);
                ol_gate__cache_put(&g->cache, job->id, job->owner, job->found, job->outcome, job->reason);
                pthread_mutex_unlock(&g->lock);
            }
            free(job->owner);
            free(job);
        }
        pthread_mutex_lock(&lk->lock);
    }
    pthread_mutex_unlock(&lk->lock);
    set_conn(w, NULL);
    free(wake);
    free(w);
    return NULL;
}

/* Answers every job past its deadline, queued or running. */
static void *timer_main(void *arg) {
    lookup_t *lk = arg;
    req_t **due = ol_xcalloc(64, sizeof(*due));
    pthread_mutex_lock(&lk->lock);
    while (!lk->stop) {
        int64_t now = ol_time_mono_us(), next = INT64_MAX;
        int ndue = 0;
        for (int i = 0; i < lk->nthreads; i++) {
            for (job_t *job = lk->running[i]; job && ndue < 64; job = job->link.next) {
                if (job->r && job->deadline_us <= now)
                    due[ndue++] = answer_error(lk, job, LK_TIMEOUT, MSG_TIMEOUT); /* the thread frees it */
                else if (job->r && job->deadline_us < next)
                    next = job->deadline_us;
            }
        }
        while (lk->queue.head && lk->queue.head->deadline_us <= now && ndue < 64) {
            job_t *job = lk->queue.head;
            unqueue(lk, job);
            due[ndue++] = answer_error(lk, job, LK_TIMEOUT, MSG_TIMEOUT);
            free(job);
        }
        if (ndue) {
            pthread_mutex_unlock(&lk->lock);
            for (int i = 0; i < ndue; i++)
                resume(due[i]);
            pthread_mutex_lock(&lk->lock);
            continue;
        }
        if (lk->queue.head && lk->queue.head->deadline_us < next) /* queued after every running one */
            next = lk->queue.head->deadline_us;
        lk->timer_idle = next == INT64_MAX;
        if (lk->timer_idle) {
            pthread_cond_wait(&lk->timer_cond, &lk->lock);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            int64_t ns = ts.tv_nsec + ((next - now) % 1000000) * 1000;
            ts.tv_sec += (time_t)((next - now) / 1000000 + ns / 1000000000);
            ts.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&lk->timer_cond, &lk->lock, &ts);
        }
        lk->timer_idle = false;
    }
    pthread_mutex_unlock(&lk->lock);
    free(due);
    return NULL;
}

/* ---- the pool ---------------------------------------------------------------- */

lookup_t *ol_gate__lookup_new(gate_t *g) {
    lookup_t *lk = ol_xcalloc(1, sizeof(*lk));
    lk->g = g;
    lk->timeout_us = ol_conf_int(g->conf, "gate.lookup.timeout.ms") * 1000;
    lk->max_queued = (size_t)ol_conf_int(g->conf, "gate.lookup.max.queued");
    lk->nthreads = (int)ol_conf_int(g->conf, "gate.lookup.threads");
    lk->threads = ol_xcalloc((size_t)lk->nthreads, sizeof(*lk->threads));
    lk->running = ol_xcalloc((size_t)lk->nthreads, sizeof(*lk->running));
    lk->cancels = ol_xcalloc((size_t)lk->nthreads, sizeof(*lk->cancels));
    pthread_mutex_init(&lk->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&lk->work_cond, &ca);
    pthread_cond_init(&lk->timer_cond, &ca);
    pthread_condattr_destroy(&ca);

    const char *schema = ol_conf_str(g->conf, "projection.schema");
    char quoted[300];
    size_t n = 0;
    quoted[n++] = '"';
    for (const char *s = schema; *s && n < sizeof(quoted) - 3; s++) {
        if (*s == '"')
            quoted[n++] = '"';
        quoted[n++] = *s;
    }
    quoted[n++] = '"';
    quoted[n] = '\0';
    snprintf(lk->sql, sizeof(lk->sql),
             "SELECT request_id, to_jsonb(d)::text FROM %s.buy_decisions d WHERE request_id = ANY ($1::text[])",
             quoted);

    ol_metrics_t *reg = g->m.reg;
    lk->outcomes = ol_metrics_counter_by(reg, "orderlog_gate_lookups_total",
                                         "GET /buy/<id> lookups in PostgreSQL (past the cache), by outcome "
                                         "(queue_full: refused 503 without queueing).",
                                         "outcome", lk_outcome_names);
    lk->duration = ol_metrics_add(reg, &(ol_metric_def_t){
                                           .name = "orderlog_gate_lookup_duration_seconds",
                                           .help = "Time from queueing a lookup to its answer (queue and query).",
                                           .type = OL_METRIC_HISTOGRAM,
                                           .buckets = lookup_le,
                                           .nbuckets = sizeof(lookup_le) / sizeof(lookup_le[0]),
                                       });
    lk->queued_g = ol_metrics_gauge(reg, "orderlog_gate_lookups_queued", "Lookups waiting for a lookup thread.");
    lk->running_g =
        ol_metrics_gauge(reg, "orderlog_gate_lookups_running", "Lookups whose query runs in PostgreSQL now.");

    if (pthread_create(&lk->timer, NULL, timer_main, lk))
        ol_assert_fail("pthread_create", __FILE__, __LINE__);
    for (int i = 0; i < lk->nthreads; i++) {
        worker_t *w = ol_xcalloc(1, sizeof(*w));
        w->lk = lk;
        w->slot = i;
        if (pthread_create(&lk->threads[i], NULL, worker_main, w))
            ol_assert_fail("pthread_create", __FILE__, __LINE__);
    }
    return lk;
}

void ol_gate__lookup_start(req_t *r, bool pending) {
    gate_t *g = r->g;
    lookup_t *lk = g->lookup;
    MHD_suspend_connection(r->conn); /* before any other thread can see r */
    r->suspended = true;
    atomic_fetch_add(&g->suspended, 1);
    job_t *job = ol_xcalloc(1, sizeof(*job));
    job->r = r;
    job->pending = pending;
    job->queued_us = ol_time_mono_us();
    job->deadline_us = job->queued_us + lk->timeout_us;
    snprintf(job->id, sizeof(job->id), "%s", r->request_id);
    req_t *refused = NULL;
    pthread_mutex_lock(&lk->lock);
    if (lk->refusing) {
        refused = answer_error(lk, job, LK_SHUTDOWN, MSG_SHUTDOWN);
    } else if (lk->queued >= lk->max_queued) {
        refused = answer_error(lk, job, LK_QUEUE_FULL, MSG_QUEUE_FULL);
    } else {
        OL_LIST_PUSH_BACK(&lk->queue, job, link);
        lk->queued++;
        ol_metric_set(lk->queued_g, 0, (int64_t)lk->queued);
        pthread_cond_signal(&lk->work_cond);
        if (lk->timer_idle)
            pthread_cond_signal(&lk->timer_cond);
        job = NULL;
    }
    pthread_mutex_unlock(&lk->lock);
    if (refused) {
        free(job);
        resume(refused);
    }
}

void ol_gate__lookup_stop(lookup_t *lk) {
    req_t **due = NULL;
    size_t ndue = 0;
    pthread_mutex_lock(&lk->lock);
    lk->refusing = true;
    due = ol_xcalloc(lk->queued + (size_t)lk->nthreads * BATCH_MAX + 1, sizeof(*due));
    for (int i = 0; i < lk->nthreads; i++)
        for (job_t *job = lk->running[i]; job; job = job->link.next)
            if (job->r)
                due[ndue++] = answer_error(lk, job, LK_SHUTDOWN, MSG_SHUTDOWN);
    while (lk->queue.head) {
        job_t *job = lk->queue.head;
        unqueue(lk, job);
        due[ndue++] = answer_error(lk, job, LK_SHUTDOWN, MSG_SHUTDOWN);
        free(job);
    }
    pthread_mutex_unlock(&lk->lock);
    for (size_t i = 0; i < ndue; i++)
        resume(due[i]);
    free(due);
}

void ol_gate__lookup_destroy(lookup_t *lk) {
    if (!lk)
        return;
    ol_gate__lookup_stop(lk);
    pthread_mutex_lock(&lk->lock);
    lk->stop = true;
    pthread_cond_broadcast(&lk->work_cond);
    pthread_cond_signal(&lk->timer_cond);
    for (int i = 0; i < lk->nthreads; i++) {
        char errbuf[256];
        if (lk->running[i] && lk->cancels[i]) /* a query waiting on a lock would wait its statement timeout */
            PQcancel(lk->cancels[i], errbuf, sizeof(errbuf));
    }
    pthread_mutex_unlock(&lk->lock);
    pthread_join(lk->timer, NULL);
    for (int i = 0; i < lk->nthreads; i++)
        pthread_join(lk->threads[i], NULL);
    pthread_cond_destroy(&lk->work_cond);
    pthread_cond_destroy(&lk->timer_cond);
    pthread_mutex_destroy(&lk->lock);
    free(lk->threads);
    free(lk->running);
    free(lk->cancels);
    free(lk);
}
