/* The gate's metrics registry: its families under the names they always
 * had; what the waiting side counts is read at render time. */
#include <stdlib.h>

#include "common/base/metrics.h"
#include "producers/gate_serve.h"

const char *const ol_gate__endpoint_names[] = {ENDPOINTS(NAME_STR) NULL};
static const char *const outcome_names[] = {OUTCOMES(NAME_STR) NULL};
static const char *const reason_names[] = {REASONS(NAME_STR) NULL};
static const char *const limit_names[] = {"instance", "ip", NULL};
static const char *const client_sources[] = {"peer", "forwarded", "body", NULL};
/* the endpoints whose durations are kept */
static const char *const timed_names[] = {"buy", "buy_status", "checkout", NULL};

/* Request duration buckets, in seconds. */
static const double latency_le[] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

static void waiting_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((gate_t *)opaque)->waiting_now));
}

static void suspended_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((gate_t *)opaque)->suspended));
}

static void delivery_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((gate_t *)opaque)->m.delivery_failed));
}

static void facts_fn(void *opaque, ol_metrics_out_t *out) {
    gate_t *g = opaque;
    for (int k = 0; k < OL_FACT__COUNT; k++)
        if (k == OL_FACT_BUY_ACCEPTED || k == OL_FACT_BUY_REJECTED || k == OL_FACT_HOLD_CONVERTED ||
            k == OL_FACT_CHECKOUT_REJECTED) {
            const char *values[] = {ol_fact_kind_name((ol_fact_kind_t)k)};
            ol_metrics_out(out, values, (double)atomic_load(&g->m.facts[k]));
        }
}

static void cached_fn(void *opaque, ol_metrics_out_t *out) {
    gate_t *g = opaque;
    pthread_mutex_lock(&g->lock);
    size_t cached = g->cache.count;
    pthread_mutex_unlock(&g->lock);
    ol_metrics_out(out, NULL, (double)cached);
}

/* The families read at render time (opaque: the gate), in their order;
 * label: the one label's name, or NULL. */
static const struct {
    const char *name, *help;
    ol_metric_type_t type;
    const char *label;
    ol_metrics_func_t fn;
} read_at_render[] = {
    {"orderlog_gate_waiting", "Requests waiting for their decision right now.", OL_METRIC_GAUGE, NULL, waiting_fn},
    {"orderlog_gate_suspended_connections", "Connections suspended (waiting for Kafka, a decision or a lookup).",
     OL_METRIC_GAUGE, NULL, suspended_fn},
    {"orderlog_gate_delivery_failures_total", "Requests Kafka did not take.", OL_METRIC_COUNTER, NULL, delivery_fn},
    {"orderlog_gate_facts_total", "Facts read from sale-events that answer requests, by type.", OL_METRIC_COUNTER,
     "type", facts_fn},
    {"orderlog_gate_cached_decisions", "Decisions (and pending requests) in the recent cache.", OL_METRIC_GAUGE, NULL,
     cached_fn},
};

/* A counter by endpoint and one more label, its cells shown once counted. */
static ol_metric_t *by_endpoint(ol_metrics_t *reg, const char *name, const char *help, const char *label,
                                const char *const *values) {
    return ol_metrics_add(reg, &(ol_metric_def_t){
                                   .name = name,
                                   .help = help,
                                   .type = OL_METRIC_COUNTER,
                                   .labels = {{"endpoint", ol_gate__endpoint_names}, {label, values}},
                                   .flags = OL_METRIC_SPARSE,
                               });
}

/* The gate's families, under the names it always had. */
void ol_gate__metrics_setup(gate_t *g) {
    metrics_t *m = &g->m;
    m->reg = ol_metrics_new();
    m->requests = by_endpoint(m->reg, "orderlog_gate_requests_total",
                              "HTTP requests answered, by endpoint and outcome.", "outcome", outcome_names);
    m->rejected = by_endpoint(m->reg, "orderlog_gate_rejected_total",
                              "Requests rejected by the decider, by endpoint and reason.", "reason", reason_names);
    /* a buy's outcomes and its usual reasons are shown from the start */
    for (size_t o = 0; o < (g->auth ? OUT__COUNT : OUT_UNAUTHORIZED); o++) /* 401, 403 with gate.auth only */
        ol_metric_show(m->requests, ol_metric_cell_at(m->requests, EP_BUY, o));
    for (size_t i = 0; i < REASON_UNKNOWN_HOLD; i++)
        ol_metric_show(m->rejected, ol_metric_cell_at(m->rejected, EP_BUY, i));
    m->throttled =
        ol_metrics_counter_by(m->reg, "orderlog_gate_throttled_total",
                              "Requests refused by a rate limit before Kafka, by limit.", "limit", limit_names);
    m->client =
        ol_metrics_counter_by(m->reg, "orderlog_gate_client_addresses_total",
                              "Buy requests by where their client address came from.", "source", client_sources);
    m->forwarded_invalid = ol_metrics_counter(m->reg, "orderlog_gate_forwarded_invalid_total",
                                              "Buy requests from a trusted proxy whose forwarding header named no "
                                              "usable client address (answered 400).");
    m->claim_ignored =
        ol_metrics_counter(m->reg, "orderlog_gate_client_ip_claims_ignored_total",
                           "Buy requests whose body clientIP is not their client address (the claim is dropped).");
    for (size_t i = 0; i < sizeof(read_at_render) / sizeof(read_at_render[0]); i++)
        ol_metrics_func_by(m->reg, read_at_render[i].type, read_at_render[i].name, read_at_render[i].help,
                           read_at_render[i].label, read_at_render[i].fn, g);
    m->duration = ol_metrics_add(m->reg, &(ol_metric_def_t){
                                             .name = "orderlog_gate_request_duration_seconds",
                                             .help = "Time from request to answer, by endpoint.",
                                             .type = OL_METRIC_HISTOGRAM,
                                             .labels = {{"endpoint", timed_names}},
                                             .buckets = latency_le,
                                             .nbuckets = sizeof(latency_le) / sizeof(latency_le[0]),
                                         });
    if (g->auth) /* gate.auth=none checks no credentials */
        m->auth = ol_metrics_counter_by(m->reg, "orderlog_gate_auth_total",
                                        "Requests whose credentials were checked (gate.auth), by outcome.", "outcome",
                                        ol_gate_auth_outcome_names);
    ol_metrics_add_process(m->reg);
}
