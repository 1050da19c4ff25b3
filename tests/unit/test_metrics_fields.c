/* The registration shorthands of common/base/metrics.h: families read from
 * a caller's atomic fields, seconds histograms, counters by one label. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/metrics.h"

typedef struct item_s {
    int pad;
    atomic_llong done, open;
} item_t;

static const ol_metric_field_t item_fields[] = {
    {"t_done_total", "Done, summed over the items.", OL_METRIC_COUNTER, offsetof(item_t, done)},
    {"t_open", "Open, summed over the items.", OL_METRIC_GAUGE, offsetof(item_t, open)},
};

Test(metrics_fields, sum_each_field_over_the_items_at_render_time) {
    item_t items[3] = {0};
    ol_metrics_t *m = ol_metrics_new();
    ol_metrics_fields(m, item_fields, 2, items, 3, sizeof(items[0]));
    ol_metrics_fields(
        m, &(ol_metric_field_t){"t_first_done_total", "Done by the first.", OL_METRIC_COUNTER, offsetof(item_t, done)},
        1, items, 1, sizeof(items[0]));
    atomic_store(&items[0].done, 2);
    atomic_store(&items[2].done, 40);
    atomic_store(&items[1].open, 5);
    char *text = ol_metrics_render(m, NULL);
    cr_expect_str_eq(text, "# HELP t_done_total Done, summed over the items.\n"
                           "# TYPE t_done_total counter\n"
                           "t_done_total 42\n"
                           "# HELP t_open Open, summed over the items.\n"
                           "# TYPE t_open gauge\n"
                           "t_open 5\n"
                           "# HELP t_first_done_total Done by the first.\n"
                           "# TYPE t_first_done_total counter\n"
                           "t_first_done_total 2\n");
    free(text);
    ol_metrics_destroy(m);
}

static void seven_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, *(const int *)opaque);
}

static void colors_fn(void *opaque, ol_metrics_out_t *out) {
    (void)opaque;
    const char *red[] = {"red"};
    ol_metrics_out(out, red, 3);
}

Test(metrics_fields, shorthands_register_what_their_definitions_would) {
    static const char *const kinds[] = {"a", "b", NULL};
    static const int seven = 7;
    ol_metrics_t *m = ol_metrics_new();
    ol_metric_t *h = ol_metrics_seconds(m, "t_wait_seconds", "Waits.");
    ol_metric_t *c = ol_metrics_counter_by(m, "t_kinds_total", "By kind.", "kind", kinds);
    ol_metrics_func_value(m, OL_METRIC_GAUGE, "t_seven", "Seven.", seven_fn, (void *)&seven);
    ol_metrics_func_by(m, OL_METRIC_COUNTER, "t_colors_total", "By color.", "color", colors_fn, NULL);
    ol_metric_observe(h, 0, 0.2);
    ol_metric_inc(c, ol_metric_cell(c, "b", NULL));
    char *text = ol_metrics_render(m, NULL);
    cr_expect(strstr(text, "# TYPE t_wait_seconds histogram\n"));
    cr_expect(strstr(text, "t_wait_seconds_bucket{le=\"0.1\"} 0\nt_wait_seconds_bucket{le=\"0.25\"} 1\n"));
    cr_expect(strstr(text, "t_wait_seconds_bucket{le=\"60\"} 1\nt_wait_seconds_bucket{le=\"+Inf\"} 1\n"));
    cr_expect(strstr(text, "# TYPE t_kinds_total counter\nt_kinds_total{kind=\"a\"} 0\nt_kinds_total{kind=\"b\"} 1\n"));
    cr_expect(strstr(text, "# HELP t_seven Seven.\n# TYPE t_seven gauge\nt_seven 7\n"));
    cr_expect(strstr(text, "# TYPE t_colors_total counter\nt_colors_total{color=\"red\"} 3\n"));
    free(text);
    ol_metrics_destroy(m);
}
