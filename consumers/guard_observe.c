/* guard's observability: its counters and windows on /metrics, /healthz
 * and /readyz (consumers/guard.h). */
#include <stdatomic.h>
#include <stddef.h>

#include "common/base/http.h"
#include "common/base/kafka.h"
#include "common/base/metrics.h"
#include "consumers/guard.h"

/* The rate windows' size, for /metrics (the loop's thread owns them). */
void ol_guard__observe_windows(guard_t *g) {
    ol_rateban_stats_t st;
    ol_rateban_stats(g->rw, &st);
    atomic_store(&g->tracked, (long long)st.tracked);
    atomic_store(&g->listed, (long long)st.listed);
    atomic_store(&g->tracked_bytes, (long long)st.bytes);
}

#define FIELD_ROW(field, type, name, help) {name, help, OL_METRIC_##type, offsetof(guard_t, field)},
static const ol_metric_field_t guard_counters[] = {OL_GUARD_METRICS(FIELD_ROW)};
#undef FIELD_ROW

ol_metrics_t *ol_guard__metrics(guard_t *g) {
    ol_metrics_t *reg = ol_metrics_new();
    ol_metrics_add_process(reg);
    ol_metrics_fields(reg, guard_counters, sizeof(guard_counters) / sizeof(guard_counters[0]), g, 1, sizeof(*g));
    ol_kafka_observe_consumer(reg, "guard",
                              "Records between guard's position and the end of each assigned partition of "
                              "buy-requests.",
                              "Partitions of buy-requests assigned to guard.", &g->consumer);
    return reg;
}

bool ol_guard__live(void *opaque, json_t *checks) {
    guard_t *g = opaque;
    char fatal[256];
    bool ok = ol_http_check_beat(checks, "loop", atomic_load(&g->beat_us), ol_conf_int(g->conf, "health.stall.ms"));
    if (rd_kafka_fatal_error(g->consumer, fatal, sizeof(fatal)))
        ok = ol_http_check(checks, "consumer", false, "fatal error: %s", fatal);
    return ok;
}

bool ol_guard__ready(void *opaque, json_t *checks) {
    guard_t *g = opaque;
    bool ok = ol_kafka_check_reachable(g->consumer, checks, "kafka", 1000);
    int assigned = ol_kafka_assigned_count(g->consumer);
    ok &= ol_http_check(checks, "partitions", assigned > 0, "%d of %s assigned in group %s", assigned, g->buy_topic,
                        g->group);
    return ok;
}
