/* The runtime's metrics and health checks. */
#include "consumers/runtime_internal.h"

#include <stdio.h>
#include <string.h>

#include "common/base/kafka.h"
#include "common/base/time.h"
#include "common/base/http.h"

/* ---- observability -------------------------------------------------------- */

static const char *const txn_outcomes[] = {"committed", "rolled_back", NULL};
static const char *const dlq_stages[] = {"decode", "placement", "fold", "apply", NULL};
static const char *const phases[] = {"apply", "fold", "wait", NULL};

/* After each apply attempt (applier threads). */
void ol_rt__observe_attempt(ol_rt_t *rt, const applier_t *ap) {
    atomic_store(&rt->stats.beat_us, ol_time_mono_us());
    if (rt->stats.m_txns && (ap->err || !ap->stale))
        ol_metric_inc(rt->stats.m_txns, ap->err ? 1 : 0);
    if (!ap->err) {
        atomic_store(&rt->stats.pg_failing_us, 0);
        return;
    }
    pthread_mutex_lock(&rt->stats.lock);
    snprintf(rt->stats.pg_error, sizeof(rt->stats.pg_error), "%.255s", ap->errstr);
    pthread_mutex_unlock(&rt->stats.lock);
    long long expected = 0;
    atomic_compare_exchange_strong(&rt->stats.pg_failing_us, &expected, ol_time_mono_us());
}

void ol_rt__observe_dlq(ol_rt_t *rt, const char *stage) {
    if (!rt->stats.m_dlq)
        return;
    size_t i = 0;
    while (dlq_stages[i + 1] && strcmp(dlq_stages[i], stage ? stage : ""))
        i++;
    ol_metric_inc(rt->stats.m_dlq, i);
}

static void phases_fn(void *opaque, ol_metrics_out_t *out) {
    ol_rt_t *rt = opaque;
    long long us[] = {atomic_load(&rt->stats.apply_us), atomic_load(&rt->stats.fold_us),
                      atomic_load(&rt->stats.idle_us)};
    for (int i = 0; phases[i]; i++)
        ol_metrics_out(out, &phases[i], (double)us[i] / 1e6);
}

/* A counter read from an atomic_llong of rt (offset in ol_rt_t), under the
 * role's name. */
static void observe_field(ol_metrics_t *reg, ol_rt_t *rt, const char *suffix, const char *help, size_t offset) {
    char name[128];
    snprintf(name, sizeof(name), "orderlog_%s_%s", rt->role->name, suffix);
    ol_metrics_fields(reg, &(ol_metric_field_t){name, help, OL_METRIC_COUNTER, offset}, 1, rt, 1, sizeof(*rt));
}

void ol_rt_observe(ol_rt_t *rt, ol_metrics_t *reg) {
    char name[128], help[256];
    const char *role = rt->role->name;
#define OL_RT_NAME(suffix) (snprintf(name, sizeof(name), "orderlog_%s_%s", role, suffix), name)
    observe_field(reg, rt, "events_total", "Records consumed and applied (or dead-lettered) in committed batches.",
                  offsetof(ol_rt_t, stats.events));
    observe_field(reg, rt, "batches_total", "Batches applied, each in PostgreSQL transactions with its offsets.",
                  offsetof(ol_rt_t, stats.batches));
    rt->stats.m_txns = ol_metrics_counter_by(reg, OL_RT_NAME("transactions_total"),
                                             "PostgreSQL transactions of batch parts, by outcome (rolled_back: a "
                                             "failed attempt, retried unless it cannot succeed).",
                                             "outcome", txn_outcomes);
    observe_field(reg, rt, "retries_total",
                  "Backoffs before a retry: a batch or the stored offsets after a transient failure (PostgreSQL "
                  "away, serialization failure).",
                  offsetof(ol_rt_t, stats.retries));
    snprintf(help, sizeof(help), "Records sent to the dlq topic, by the stage that refused them%s.",
             rt->dlq.disabled ? " (counted, not sent: a replay)" : "");
    rt->stats.m_dlq = ol_metrics_counter_by(reg, OL_RT_NAME("dlq_records_total"), help, "stage", dlq_stages);
    rt->stats.m_batch_seconds =
        ol_metrics_seconds(reg, OL_RT_NAME("batch_duration_seconds"),
                           "Time to apply a batch: PostgreSQL transactions, retries and the dlq included.");
    ol_metrics_func_by(reg, OL_METRIC_COUNTER, OL_RT_NAME("phase_seconds_total"),
                       "Time spent applying batches, folding them, and (pipelined) the applier waiting for the next "
                       "one.",
                       "phase", phases_fn, rt);
    ol_kafka_observe_consumer(reg, role,
                              "Records between the consumer's position and the end of each assigned partition.",
                              "Partitions assigned to this member of the group.", &rt->rk);
#undef OL_RT_NAME
}

bool ol_rt_check_live(ol_rt_t *rt, json_t *checks, int64_t stall_ms) {
    char fatal[256];
    bool ok = ol_http_check_beat(checks, "loop", atomic_load(&rt->stats.beat_us), stall_ms);
    if (rd_kafka_fatal_error(rt->rk, fatal, sizeof(fatal)))
        ok = ol_http_check(checks, "consumer", false, "fatal error: %s", fatal);
    return ok;
}

bool ol_rt_check_ready(ol_rt_t *rt, json_t *checks) {
    bool ok = ol_kafka_check_reachable(rt->rk, checks, "kafka", 1000);
    int assigned = ol_kafka_assigned_count(rt->rk);
    ok &= ol_http_check(checks, "partitions", assigned > 0, "%d assigned in group %s", assigned, rt->kafka_group);
    int64_t failing = atomic_load(&rt->stats.pg_failing_us);
    if (failing) {
        char error[sizeof(rt->stats.pg_error)];
        pthread_mutex_lock(&rt->stats.lock);
        snprintf(error, sizeof(error), "%s", rt->stats.pg_error);
        pthread_mutex_unlock(&rt->stats.lock);
        ok = ol_http_check(checks, "postgresql", false, "batches failing for %lld ms: %.255s",
                           (long long)(ol_time_mono_us() - failing) / 1000, error);
    } else {
        PGPing ping = PQping(ol_conf_str(rt->conf, "pg.conninfo"));
        ok &= ol_http_check(checks, "postgresql", ping == PQPING_OK, "%s",
                            ping == PQPING_OK       ? "accepting connections"
                            : ping == PQPING_REJECT ? "rejecting connections (starting up or shutting down)"
                                                    : "not answering");
    }
    return ok;
}
