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

typedef struct counter_s {
    const char *name, *help;
    size_t offset; /* of an atomic_llong in guard_t */
    ol_metric_type_t type;
} counter_t;

static const counter_t guard_counters[] = {
    {"orderlog_guard_requests_total", "BuyRequested events judged against the rate windows.",
     offsetof(guard_t, requests), OL_METRIC_COUNTER},
    {"orderlog_guard_skipped_total", "Other event types on buy-requests, skipped.", offsetof(guard_t, skipped),
     OL_METRIC_COUNTER},
    {"orderlog_guard_undecodable_total", "Records of buy-requests that could not be decoded, skipped.",
     offsetof(guard_t, undecodable), OL_METRIC_COUNTER},
    {"orderlog_guard_bans_total", "Subjects blacklisted for their rate (BlacklistChanged add, reason rate).",
     offsetof(guard_t, bans), OL_METRIC_COUNTER},
    {"orderlog_guard_lifts_total", "Rate bans removed once their until had passed.", offsetof(guard_t, lifts),
     OL_METRIC_COUNTER},
    {"orderlog_guard_lapsed_bans_total", "Bans not published because their until had passed when judged (a backlog).",
     offsetof(guard_t, lapsed), OL_METRIC_COUNTER},
    {"orderlog_guard_tracked_subjects", "IPs and users with requests in their rate window.", offsetof(guard_t, tracked),
     OL_METRIC_GAUGE},
    {"orderlog_guard_listed_subjects", "Subjects on the blacklist as guard knows it (manual and rate).",
     offsetof(guard_t, listed), OL_METRIC_GAUGE},
    {"orderlog_guard_state_bytes", "Memory of the rate windows and the blacklist, estimated.",
     offsetof(guard_t, tracked_bytes), OL_METRIC_GAUGE},
};

typedef struct counter_ref_s {
    guard_t *g;
    const counter_t *c;
} counter_ref_t;

static void counter_fn(void *opaque, ol_metrics_out_t *out) {
    const counter_ref_t *ref = opaque;
    ol_metrics_out(out, NULL, (double)atomic_load((atomic_llong *)((char *)ref->g + ref->c->offset)));
}

static void lag_fn(void *opaque, ol_metrics_out_t *out) {
    ol_kafka_lag_write(((guard_t *)opaque)->consumer, out);
}

static void assigned_fn(void *opaque, ol_metrics_out_t *out) {
    int n = ol_kafka_assigned_count(((guard_t *)opaque)->consumer);
    if (n >= 0)
        ol_metrics_out(out, NULL, n);
}

static counter_ref_t guard_refs[sizeof(guard_counters) / sizeof(guard_counters[0])];

ol_metrics_t *ol_guard__metrics(guard_t *g) {
    ol_metrics_t *reg = ol_metrics_new();
    ol_metrics_add_process(reg);
    for (size_t i = 0; i < sizeof(guard_counters) / sizeof(guard_counters[0]); i++) {
        guard_refs[i] = (counter_ref_t){g, &guard_counters[i]};
        ol_metrics_func(reg,
                        &(ol_metric_def_t){.name = guard_counters[i].name,
                                           .help = guard_counters[i].help,
                                           .type = guard_counters[i].type},
                        counter_fn, &guard_refs[i]);
    }
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_guard_consumer_lag_records",
                                       .help = "Records between guard's position and the end of each assigned "
                                               "partition of buy-requests.",
                                       .type = OL_METRIC_GAUGE,
                                       .labels = {{"topic", NULL}, {"partition", NULL}}},
                    lag_fn, g);
    ol_metrics_func(reg,
                    &(ol_metric_def_t){.name = "orderlog_guard_assigned_partitions",
                                       .help = "Partitions of buy-requests assigned to guard.",
                                       .type = OL_METRIC_GAUGE},
                    assigned_fn, g);
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
