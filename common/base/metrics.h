#ifndef OL_METRICS_H
#define OL_METRICS_H

/* A tiny Prometheus registry: counters, gauges and histograms with fixed
 * buckets, rendered in the text exposition format 0.0.4 (HELP and TYPE
 * lines, one sample a line). Every role serves one on /metrics
 * (common/base/http.h).
 *
 * Why our own: Debian packages no Prometheus C client (libprom and
 * prometheus-client-c are not in bookworm) and what the roles need is
 * small: a fixed set of metrics made at start, updated from hot paths with
 * one relaxed atomic each, rendered on a scrape.
 *
 * Labels: a family has at most OL_METRIC_LABELS_MAX labels, each with a
 * fixed, NULL-terminated list of values given at registration; the family
 * then holds one cell per combination (a dense array), addressed by an
 * index (ol_metric_cell). Labels whose values are only known at scrape
 * time (partitions, topics) belong to a function family (ol_metrics_func),
 * whose callback writes its samples when the registry is rendered.
 *
 * Thread-safety: registering is for setup (one thread, before the family
 * is shared); updating (inc, add, set, observe) is lock-free and safe from
 * any thread; rendering takes the registry's lock only against concurrent
 * renders and may run while other threads update. Families live as long
 * as their registry: pointers returned stay valid until ol_metrics_destroy. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define OL_METRIC_LABELS_MAX 2

typedef enum ol_metric_type_e { OL_METRIC_COUNTER, OL_METRIC_GAUGE, OL_METRIC_HISTOGRAM } ol_metric_type_t;

/* Render only the cells that were touched (updated, or ol_metric_show):
 * for label combinations that mostly never happen. Without it every cell
 * is rendered from the start, zero included (what Prometheus recommends). */
#define OL_METRIC_SPARSE 1u

typedef struct ol_metric_label_s {
    const char *name;
    const char *const *values; /* NULL-terminated; borrowed for the registry's life */
} ol_metric_label_t;

typedef struct ol_metric_def_s {
    const char *name; /* [a-zA-Z_:][a-zA-Z0-9_:]*; copied */
    const char *help; /* one line; copied */
    ol_metric_type_t type;
    ol_metric_label_t labels[OL_METRIC_LABELS_MAX]; /* unused ones have a NULL name */
    const double *buckets;                          /* histogram: upper bounds, ascending, +Inf implied; copied */
    size_t nbuckets;
    unsigned flags; /* OL_METRIC_SPARSE */
} ol_metric_def_t;

typedef struct ol_metrics_s ol_metrics_t;
typedef struct ol_metric_s ol_metric_t;
typedef struct ol_metrics_out_s ol_metrics_out_t;

/* An empty registry; never NULL. */
ol_metrics_t *ol_metrics_new(void);
void ol_metrics_destroy(ol_metrics_t *m);

/* Registers a family (def is copied). Names must be unique in the registry;
 * a bad definition is a programming error and aborts. */
ol_metric_t *ol_metrics_add(ol_metrics_t *m, const ol_metric_def_t *def);

/* A counter or gauge family without labels: shorthands of ol_metrics_add. */
ol_metric_t *ol_metrics_counter(ol_metrics_t *m, const char *name, const char *help);
ol_metric_t *ol_metrics_gauge(ol_metrics_t *m, const char *name, const char *help);

/* A histogram without labels over ol_metrics_seconds_buckets, and a
 * counter with one label (values as in ol_metric_label_t): shorthands of
 * ol_metrics_add. */
ol_metric_t *ol_metrics_seconds(ol_metrics_t *m, const char *name, const char *help);
ol_metric_t *ol_metrics_counter_by(ol_metrics_t *m, const char *name, const char *help, const char *label,
                                   const char *const *values);

/* A family whose samples fn writes at render time (with ol_metrics_out),
 * for values read from elsewhere (process, librdkafka, a role's own
 * counters). def's labels give the names only (values NULL); histograms are
 * not supported. fn runs on the rendering thread with the registry's lock
 * held: it must not register nor render. */
typedef void (*ol_metrics_func_t)(void *opaque, ol_metrics_out_t *out);
void ol_metrics_func(ol_metrics_t *m, const ol_metric_def_t *def, ol_metrics_func_t fn, void *opaque);
/* From fn: one sample; label_values has one value per label of the family
 * (borrowed for the call; escaped here), NULL when it has none. */
void ol_metrics_out(ol_metrics_out_t *out, const char *const *label_values, double value);

/* A function family of type type (counter or gauge) without labels, and
 * one with the one label `label` (NULL: none): shorthands of
 * ol_metrics_func. */
void ol_metrics_func_value(ol_metrics_t *m, ol_metric_type_t type, const char *name, const char *help,
                           ol_metrics_func_t fn, void *opaque);
void ol_metrics_func_by(ol_metrics_t *m, ol_metric_type_t type, const char *name, const char *help, const char *label,
                        ol_metrics_func_t fn, void *opaque);

/* Families read at render time from atomic_llong fields of a caller's
 * structs: one a field, whose value is the sum of that field over nitems
 * items of item_size bytes from items (one struct: nitems 1). items must
 * stay valid, and their number fixed, as long as the registry. */
typedef struct ol_metric_field_s {
    const char *name, *help;
    ol_metric_type_t type; /* counter or gauge */
    size_t offset;         /* of an atomic_llong in each item */
} ol_metric_field_t;
void ol_metrics_fields(ol_metrics_t *m, const ol_metric_field_t *fields, size_t nfields, const void *items,
                       size_t nitems, size_t item_size);

/* The cell of a label combination, by values (names must be among the
 * label's values: aborts otherwise). Slow: look cells up at setup. */
size_t ol_metric_cell(const ol_metric_t *f, const char *v0, const char *v1);
/* The cell by value indexes (each below its label's value count). */
size_t ol_metric_cell_at(const ol_metric_t *f, size_t i0, size_t i1);
/* Number of values of label k (0 for an unused label). */
size_t ol_metric_label_count(const ol_metric_t *f, int k);

/* Updates. cell is 0 for a family without labels. */
void ol_metric_add(ol_metric_t *f, size_t cell, uint64_t n); /* counter */
static inline void ol_metric_inc(ol_metric_t *f, size_t cell) {
    ol_metric_add(f, cell, 1);
}
void ol_metric_set(ol_metric_t *f, size_t cell, int64_t v);           /* gauge */
void ol_metric_gauge_add(ol_metric_t *f, size_t cell, int64_t delta); /* gauge */
void ol_metric_observe(ol_metric_t *f, size_t cell, double v);        /* histogram */
/* Marks a cell of a sparse family as rendered even while zero. */
void ol_metric_show(ol_metric_t *f, size_t cell);

/* Reads, for tests and the role's own logic: a counter's or gauge's value,
 * a histogram's count. */
int64_t ol_metric_value(const ol_metric_t *f, size_t cell);

/* Registers the process metrics (process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_start_time_seconds, process_open_fds, process_max_fds; read from
 * /proc at render time) and orderlog_build_info{version}. */
void ol_metrics_add_process(ol_metrics_t *m);

/* The exposition (text format 0.0.4) of every family, in registration
 * order; a new string, free() it. */
char *ol_metrics_render(ol_metrics_t *m, size_t *out_len);
/* The content type of that text. */
#define OL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Histogram buckets in seconds for durations from 1 ms to 60 s. */
extern const double ol_metrics_seconds_buckets[];
extern const size_t ol_metrics_seconds_nbuckets;

#endif
