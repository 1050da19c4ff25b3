/* The Prometheus registry (text format 0.0.4: HELP, TYPE, labels, escaping,
 * histograms, sparse families, function families, process metrics, threads)
 * and the HTTP endpoint serving it (routes, JSON errors, health bodies). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/base/http.h"
#include "common/base/metrics.h"
#include "common/base/time.h"

static const char *const stages[] = {"decode", "apply", NULL};
static const char *const colors[] = {"red", "blue", "green", NULL};

static char *render(ol_metrics_t *m) {
    size_t len;
    char *text = ol_metrics_render(m, &len);
    cr_assert_eq(strlen(text), len);
    return text;
}

Test(metrics, renders_counters_and_gauges_with_help_and_type) {
    ol_metrics_t *m = ol_metrics_new();
    ol_metric_t *c = ol_metrics_counter(m, "orderlog_test_events_total", "Events processed.");
    ol_metric_t *g = ol_metrics_gauge(m, "orderlog_test_open_holds", "Open holds.");
    ol_metric_inc(c, 0);
    ol_metric_add(c, 0, 41);
    ol_metric_set(g, 0, 7);
    ol_metric_gauge_add(g, 0, -2);
    char *text = render(m);
    cr_expect_str_eq(text, "# HELP orderlog_test_events_total Events processed.\n"
                           "# TYPE orderlog_test_events_total counter\n"
                           "orderlog_test_events_total 42\n"
                           "# HELP orderlog_test_open_holds Open holds.\n"
                           "# TYPE orderlog_test_open_holds gauge\n"
                           "orderlog_test_open_holds 5\n");
    cr_expect_eq(ol_metric_value(c, 0), 42);
    free(text);
    ol_metrics_destroy(m);
}

Test(metrics, renders_every_label_combination_from_zero) {
    ol_metrics_t *m = ol_metrics_new();
    ol_metric_t *c = ol_metrics_add(m, &(ol_metric_def_t){.name = "t_total",
                                                          .help = "By stage and color.",
                                                          .type = OL_METRIC_COUNTER,
                                                          .labels = {{"stage", stages}, {"color", colors}}});
    cr_assert_eq(ol_metric_label_count(c, 0), 2);
    cr_assert_eq(ol_metric_label_count(c, 1), 3);
    ol_metric_inc(c, ol_metric_cell(c, "apply", "blue"));
    ol_metric_inc(c, ol_metric_cell_at(c, 1, 1));
    char *text = render(m);
    cr_expect_str_eq(text, "# HELP t_total By stage and color.\n"
                           "# TYPE t_total counter\n"
                           "t_total{stage=\"decode\",color=\"red\"} 0\n"
                           "t_total{stage=\"decode\",color=\"blue\"} 0\n"
                           "t_total{stage=\"decode\",color=\"green\"} 0\n"
                           "t_total{stage=\"apply\",color=\"red\"} 0\n"
                           "t_total{stage=\"apply\",color=\"blue\"} 2\n"
                           "t_total{stage=\"apply\",color=\"green\"} 0\n");
    free(text);
    ol_metrics_destroy(m);
}

Test(metrics, sparse_families_render_touched_or_shown_cells_only) {
    ol_metrics_t *m = ol_metrics_new();
    ol_metric_t *c = ol_metrics_add(m, &(ol_metric_def_t){.name = "t_total",
                                                          .help = "Sparse.",
                                                          .type = OL_METRIC_COUNTER,
                                                          .labels = {{"color", colors}},
                                                          .flags = OL_METRIC_SPARSE});
    ol_metric_show(c, ol_metric_cell(c, "red", NULL));
    ol_metric_add(c, ol_metric_cell(c, "green", NULL), 3);
    char *text = render(m);
    cr_expect_str_eq(text, "# HELP t_total Sparse.\n"
                           "# TYPE t_total counter\n"
                           "t_total{color=\"red\"} 0\n"
                           "t_total{color=\"green\"} 3\n");
    free(text);
    ol_metrics_destroy(m);
}

Test(metrics, renders_histograms_with_cumulative_buckets_sum_and_count) {
    ol_metrics_t *m = ol_metrics_new();
    static const double bounds[] = {0.001, 0.01, 0.1};
    ol_metric_t *h = ol_metrics_add(m, &(ol_metric_def_t){.name = "t_duration_seconds",
                                                          .help = "Durations.",
                                                          .type = OL_METRIC_HISTOGRAM,
                                                          .labels = {{"stage", stages}},
                                                          .buckets = bounds,
                                                          .nbuckets = 3});
    size_t apply = ol_metric_cell(h, "apply", NULL);
    ol_metric_observe(h, apply, 0.001); /* on a bound: in that bucket (le) */
    ol_metric_observe(h, apply, 0.05);
    ol_metric_observe(h, apply, 2);
    char *text = render(m);
    cr_expect_str_eq(text, "# HELP t_duration_seconds Durations.\n"
                           "# TYPE t_duration_seconds histogram\n"
                           "t_duration_seconds_bucket{stage=\"decode\",le=\"0.001\"} 0\n"
                           "t_duration_seconds_bucket{stage=\"decode\",le=\"0.01\"} 0\n"
                           "t_duration_seconds_bucket{stage=\"decode\",le=\"0.1\"} 0\n"
                           "t_duration_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 0\n"
                           "t_duration_seconds_sum{stage=\"decode\"} 0\n"
                           "t_duration_seconds_count{stage=\"decode\"} 0\n"
                           "t_duration_seconds_bucket{stage=\"apply\",le=\"0.001\"} 1\n"
                           "t_duration_seconds_bucket{stage=\"apply\",le=\"0.01\"} 1\n"
                           "t_duration_seconds_bucket{stage=\"apply\",le=\"0.1\"} 2\n"
                           "t_duration_seconds_bucket{stage=\"apply\",le=\"+Inf\"} 3\n"
                           "t_duration_seconds_sum{stage=\"apply\"} 2.051\n"
                           "t_duration_seconds_count{stage=\"apply\"} 3\n");
    cr_expect_eq(ol_metric_value(h, apply), 3);
    free(text);
    ol_metrics_destroy(m);
}

static void lag_fn(void *opaque, ol_metrics_out_t *out) {
    (void)opaque;
    const char *a[] = {"orders", "0"}, *b[] = {"we\"ird\\topic\nname", "11"};
    ol_metrics_out(out, a, 12);
    ol_metrics_out(out, b, 0.5);
}

Test(metrics, function_families_escape_label_values_and_help) {
    ol_metrics_t *m = ol_metrics_new();
    ol_metrics_func(m,
                    &(ol_metric_def_t){.name = "t_lag_records",
                                       .help = "Lag \\ per partition.",
                                       .type = OL_METRIC_GAUGE,
                                       .labels = {{"topic", NULL}, {"partition", NULL}}},
                    lag_fn, NULL);
    char *text = render(m);
    cr_expect_str_eq(text, "# HELP t_lag_records Lag \\\\ per partition.\n"
                           "# TYPE t_lag_records gauge\n"
                           "t_lag_records{topic=\"orders\",partition=\"0\"} 12\n"
                           "t_lag_records{topic=\"we\\\"ird\\\\topic\\nname\",partition=\"11\"} 0.5\n");
    free(text);
    ol_metrics_destroy(m);
}

Test(metrics, process_metrics_and_build_info) {
    ol_metrics_t *m = ol_metrics_new();
    ol_metrics_add_process(m);
    char *text = render(m);
    const char *want[] = {"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ",
                          "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ",
                          "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ",
                          "# TYPE process_open_fds gauge\nprocess_open_fds ",
                          "process_max_fds ",
                          "orderlog_build_info{version=\""};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_expect(strstr(text, want[i]), "missing %s in\n%s", want[i], text);
    const char *rss = strstr(text, "\nprocess_resident_memory_bytes ");
    cr_assert(rss);
    cr_expect_gt(atof(rss + 31), 1e5, "a resident size in bytes");
    const char *start = strstr(text, "\nprocess_start_time_seconds ");
    cr_assert(start);
    double t = atof(start + 28), now = (double)ol_time_now_ms() / 1e3;
    cr_expect(t > now - 3600 && t <= now + 1, "start time %f near now %f", t, now);
    free(text);
    ol_metrics_destroy(m);
}

typedef struct hammer_s {
    ol_metric_t *c, *h;
} hammer_t;

static void *hammer(void *arg) {
    hammer_t *x = arg;
    for (int i = 0; i < 100000; i++) {
        ol_metric_inc(x->c, 0);
        ol_metric_observe(x->h, 0, 0.5);
    }
    return NULL;
}

Test(metrics, updates_from_threads_are_not_lost) {
    ol_metrics_t *m = ol_metrics_new();
    static const double bounds[] = {1};
    hammer_t x = {ol_metrics_counter(m, "t_total", "Hits."),
                  ol_metrics_add(m, &(ol_metric_def_t){.name = "t_seconds",
                                                       .help = "Half seconds.",
                                                       .type = OL_METRIC_HISTOGRAM,
                                                       .buckets = bounds,
                                                       .nbuckets = 1})};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, &x);
    for (int i = 0; i < 4; i++) {
        char *text = render(m); /* while they update */
        free(text);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(ol_metric_value(x.c, 0), 400000);
    cr_expect_eq(ol_metric_value(x.h, 0), 400000);
    char *text = render(m);
    cr_expect(strstr(text, "t_seconds_sum 200000\n"), "%s", text);
    free(text);
    ol_metrics_destroy(m);
}

/* promtool (Debian's prometheus package) agrees with the format. */
Test(metrics, promtool_accepts_the_exposition) {
    if (system("command -v promtool >/dev/null 2>&1")) {
        cr_skip_test("promtool not installed (Debian package prometheus): format not checked by it");
        return;
    }
    ol_metrics_t *m = ol_metrics_new();
    static const double bounds[] = {0.01, 0.1};
    ol_metric_t *c = ol_metrics_add(m, &(ol_metric_def_t){.name = "orderlog_test_records_total",
                                                          .help = "Records.",
                                                          .type = OL_METRIC_COUNTER,
                                                          .labels = {{"stage", stages}}});
    ol_metric_inc(c, 1);
    ol_metric_t *h = ol_metrics_add(m, &(ol_metric_def_t){.name = "orderlog_test_batch_duration_seconds",
                                                          .help = "Batches.",
                                                          .type = OL_METRIC_HISTOGRAM,
                                                          .buckets = bounds,
                                                          .nbuckets = 2});
    ol_metric_observe(h, 0, 0.05);
    ol_metrics_func(m,
                    &(ol_metric_def_t){.name = "orderlog_test_lag_records",
                                       .help = "Lag.",
                                       .type = OL_METRIC_GAUGE,
                                       .labels = {{"topic", NULL}, {"partition", NULL}}},
                    lag_fn, NULL);
    ol_metrics_add_process(m);
    char *text = render(m);
    FILE *p = popen("promtool check metrics >/tmp/ol-promtool-unit.$$ 2>&1; s=$?; cat /tmp/ol-promtool-unit.$$ >&2; "
                    "rm -f /tmp/ol-promtool-unit.$$; exit $s",
                    "w");
    cr_assert(p);
    fputs(text, p);
    int status = pclose(p);
    cr_expect_eq(status, 0, "promtool check metrics failed on:\n%s", text);
    free(text);
    ol_metrics_destroy(m);
}

/* ops/prometheus.yml, the scrape configuration of the quick start's roles. */
Test(metrics, promtool_accepts_the_scrape_config) {
    if (system("command -v promtool >/dev/null 2>&1")) {
        cr_skip_test("promtool not installed (Debian package prometheus): ops/prometheus.yml not checked");
        return;
    }
    const char *root = getenv("ORDERLOG_SOURCE_DIR");
    cr_assert(root, "ORDERLOG_SOURCE_DIR is not set: run the test through ctest");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "promtool check config '%s/ops/prometheus.yml' >/dev/null", root);
    cr_expect_eq(system(cmd), 0, "promtool check config ops/prometheus.yml failed");
}

/* ---- the endpoint -------------------------------------------------------- */

typedef struct reply_s {
    int status;
    char head[2048];
    char *body;
} reply_t;

static reply_t get(const char *addr, const char *method, const char *path) {
    reply_t r = {0};
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method, path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t got;
    while ((got = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)got;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    close(fd);
    cr_assert(sscanf(buf, "HTTP/1.1 %d", &r.status) == 1, "%s", buf);
    char *sep = strstr(buf, "\r\n\r\n");
    cr_assert(sep);
    snprintf(r.head, sizeof(r.head), "%.*s", (int)(sep - buf), buf);
    r.body = strdup(sep + 4);
    free(buf);
    return r;
}

static bool ready;

static bool ready_check(void *opaque, json_t *checks) {
    (void)opaque;
    bool ok = ol_http_check(checks, "kafka", true, "up");
    ok &= ol_http_check(checks, "partitions", ready, "%d assigned", ready ? 6 : 0);
    return ok;
}

static bool live_check(void *opaque, json_t *checks) {
    (void)opaque;
    return ol_http_check_beat(checks, "worker-0", ol_time_mono_us() - 5000 * 1000, 1000);
}

Test(http, serves_metrics_health_and_json_errors_on_a_picked_port) {
    ol_metrics_t *m = ol_metrics_new();
    ol_metric_inc(ol_metrics_counter(m, "t_total", "Hits."), 0);
    ol_http_t *h;
    char errstr[256];
    ol_http_conf_t conf = {.listen = "127.0.0.1:0", .metrics = m, .healthz = live_check, .readyz = ready_check};
    cr_assert_eq(ol_http_start(&conf, &h, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    const char *addr = ol_http_address(h);
    cr_assert(!strncmp(addr, "127.0.0.1:", 10) && atoi(addr + 10) > 0, "%s", addr);

    reply_t r = get(addr, "GET", "/metrics");
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.head, "text/plain; version=0.0.4"), "%s", r.head);
    cr_expect(strstr(r.body, "\nt_total 1\n"), "%s", r.body);
    free(r.body);

    r = get(addr, "GET", "/readyz");
    cr_expect_eq(r.status, 503);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert(j, "%s", r.body);
    cr_expect_str_eq(json_string_value(json_object_get(j, "status")), "unavailable");
    cr_expect_str_eq(json_string_value(json_object_get(j, "reason")), "partitions: 0 assigned");
    cr_expect(json_is_true(json_object_get(json_object_get(json_object_get(j, "checks"), "kafka"), "ok")));
    json_decref(j);
    free(r.body);
    ready = true;
    r = get(addr, "GET", "/readyz");
    cr_expect_eq(r.status, 200, "%s", r.body);
    cr_expect(strstr(r.body, "\"status\":\"ok\""), "%s", r.body);
    cr_expect(!strstr(r.body, "reason"), "%s", r.body);
    free(r.body);

    r = get(addr, "GET", "/healthz");
    cr_expect_eq(r.status, 503);
    cr_expect(strstr(r.body, "\"reason\":\"worker-0: last turn 5"), "%s", r.body);
    free(r.body);

    r = get(addr, "GET", "/nope");
    cr_expect_eq(r.status, 404);
    cr_expect_str_eq(r.body, "{\"error\":\"no such resource\"}");
    free(r.body);
    r = get(addr, "POST", "/metrics");
    cr_expect_eq(r.status, 405);
    cr_expect(strstr(r.head, "Allow: GET, HEAD"), "%s", r.head);
    cr_expect_str_eq(r.body, "{\"error\":\"method not allowed\"}");
    free(r.body);
    r = get(addr, "HEAD", "/metrics");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "");
    free(r.body);

    ol_http_stop(h);
    ol_metrics_destroy(m);
}

Test(http, refuses_a_bad_address_and_a_taken_port) {
    ol_http_t *h, *h2;
    char errstr[256];
    ol_http_conf_t conf = {.listen = "nowhere"};
    cr_expect_eq(ol_http_start(&conf, &h, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect(h == NULL);
    cr_expect_str_eq(errstr, "http.listen \"nowhere\": expected host:port");
    conf.listen = "127.0.0.1:0";
    cr_assert_eq(ol_http_start(&conf, &h, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    char taken[64];
    snprintf(taken, sizeof(taken), "%s", ol_http_address(h));
    conf.listen = taken;
    cr_expect_eq(ol_http_start(&conf, &h2, errstr, sizeof(errstr)), OL_ERR_IO);
    cr_expect(strstr(errstr, "could not listen on 127.0.0.1:"), "%s", errstr);
    /* no checks: both always ok */
    reply_t r = get(taken, "GET", "/healthz");
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "{\"status\":\"ok\",\"checks\":{}}");
    free(r.body);
    r = get(taken, "GET", "/metrics");
    cr_expect_eq(r.status, 404, "no registry: no /metrics");
    free(r.body);
    ol_http_stop(h);
}
