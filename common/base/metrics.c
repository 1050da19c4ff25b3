#include "common/base/metrics.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/base/util.h"

#ifndef OL_VERSION
#define OL_VERSION "unknown"
#endif

const double ol_metrics_seconds_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,      2.5,   5,    10,    30,   60};
const size_t ol_metrics_seconds_nbuckets = sizeof(ol_metrics_seconds_buckets) / sizeof(ol_metrics_seconds_buckets[0]);

/* One cell: a counter or gauge value, or a histogram's buckets (not
 * cumulative; [nbuckets] is +Inf) and sum (a double's bits). */
typedef struct cell_s {
    atomic_llong value;
    atomic_bool touched;
    atomic_ullong *buckets;
    atomic_ullong sum_bits;
} cell_t;

/* The opaque of a family of ol_metrics_fields. */
typedef struct field_sum_s {
    const char *items;
    size_t nitems, item_size, offset;
} field_sum_t;

struct ol_metric_s {
    struct ol_metric_s *next;
    char *name, *help;
    ol_metric_type_t type;
    unsigned flags;
    int nlabels;
    const char *label_names[OL_METRIC_LABELS_MAX];
    const char *const *label_values[OL_METRIC_LABELS_MAX];
    size_t label_counts[OL_METRIC_LABELS_MAX];
    double *buckets;
    size_t nbuckets;
    cell_t *cells;
    size_t ncells;
    ol_metrics_func_t fn; /* function family: no cells */
    void *opaque;
    field_sum_t sum; /* of a family of ol_metrics_fields: its opaque */
};

struct ol_metrics_s {
    pthread_mutex_t lock; /* renders; registration is single-threaded by contract */
    ol_metric_t *head, *tail;
};

struct ol_metrics_out_s {
    FILE *fp;
    const ol_metric_t *f;
};

ol_metrics_t *ol_metrics_new(void) {
    ol_metrics_t *m = ol_xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

void ol_metrics_destroy(ol_metrics_t *m) {
    if (!m)
        return;
    for (ol_metric_t *f = m->head, *next; f; f = next) {
        next = f->next;
        for (size_t i = 0; i < f->ncells; i++)
            free(f->cells[i].buckets);
        free(f->cells);
        free(f->buckets);
        free(f->name);
        free(f->help);
        free(f);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static bool name_ok(const char *s, bool colon) {
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              (colon && *s == ':')))
            return false;
    return true;
}

static ol_metric_t *family_new(ol_metrics_t *m, const ol_metric_def_t *def, bool func) {
    OL_ASSERT(name_ok(def->name, true) && def->help && !strchr(def->help, '\n'));
    for (const ol_metric_t *f = m->head; f; f = f->next)
        OL_ASSERT(strcmp(f->name, def->name));
    ol_metric_t *f = ol_xcalloc(1, sizeof(*f));
    f->name = ol_xstrdup(def->name);
    f->help = ol_xstrdup(def->help);
    f->type = def->type;
    f->flags = def->flags;
    f->ncells = 1;
    for (int k = 0; k < OL_METRIC_LABELS_MAX && def->labels[k].name; k++) {
        OL_ASSERT(name_ok(def->labels[k].name, false) && strcmp(def->labels[k].name, "le"));
        f->label_names[k] = def->labels[k].name;
        f->label_values[k] = def->labels[k].values;
        f->nlabels = k + 1;
        if (!func) {
            OL_ASSERT(def->labels[k].values && def->labels[k].values[0]);
            while (def->labels[k].values[f->label_counts[k]])
                f->label_counts[k]++;
            f->ncells *= f->label_counts[k];
        }
    }
    if (def->type == OL_METRIC_HISTOGRAM) {
        OL_ASSERT(!func && def->nbuckets > 0 && def->buckets);
        f->nbuckets = def->nbuckets;
        f->buckets = ol_xmalloc(def->nbuckets * sizeof(double));
        for (size_t i = 0; i < def->nbuckets; i++) {
            OL_ASSERT(i == 0 || def->buckets[i] > def->buckets[i - 1]);
            f->buckets[i] = def->buckets[i];
        }
    }
    if (!func) {
        f->cells = ol_xcalloc(f->ncells, sizeof(*f->cells));
        if (f->type == OL_METRIC_HISTOGRAM)
            for (size_t i = 0; i < f->ncells; i++)
                f->cells[i].buckets = ol_xcalloc(f->nbuckets + 1, sizeof(atomic_ullong));
    } else {
        f->ncells = 0;
    }
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    return f;
}

ol_metric_t *ol_metrics_add(ol_metrics_t *m, const ol_metric_def_t *def) {
    return family_new(m, def, false);
}

ol_metric_t *ol_metrics_counter(ol_metrics_t *m, const char *name, const char *help) {
    return ol_metrics_add(m, &(ol_metric_def_t){.name = name, .help = help, .type = OL_METRIC_COUNTER});
}

ol_metric_t *ol_metrics_gauge(ol_metrics_t *m, const char *name, const char *help) {
    return ol_metrics_add(m, &(ol_metric_def_t){.name = name, .help = help, .type = OL_METRIC_GAUGE});
}

ol_metric_t *ol_metrics_seconds(ol_metrics_t *m, const char *name, const char *help) {
    return ol_metrics_add(m, &(ol_metric_def_t){.name = name,
                                                .help = help,
                                                .type = OL_METRIC_HISTOGRAM,
                                                .buckets = ol_metrics_seconds_buckets,
                                                .nbuckets = ol_metrics_seconds_nbuckets});
}

ol_metric_t *ol_metrics_counter_by(ol_metrics_t *m, const char *name, const char *help, const char *label,
                                   const char *const *values) {
    return ol_metrics_add(
        m, &(ol_metric_def_t){.name = name, .help = help, .type = OL_METRIC_COUNTER, .labels = {{label, values}}});
}

static ol_metric_t *func_new(ol_metrics_t *m, const ol_metric_def_t *def, ol_metrics_func_t fn, void *opaque) {
    OL_ASSERT(fn);
    ol_metric_t *f = family_new(m, def, true);
    f->fn = fn;
    f->opaque = opaque;
    return f;
}

void ol_metrics_func(ol_metrics_t *m, const ol_metric_def_t *def, ol_metrics_func_t fn, void *opaque) {
    func_new(m, def, fn, opaque);
}

void ol_metrics_func_value(ol_metrics_t *m, ol_metric_type_t type, const char *name, const char *help,
                           ol_metrics_func_t fn, void *opaque) {
    ol_metrics_func_by(m, type, name, help, NULL, fn, opaque);
}

void ol_metrics_func_by(ol_metrics_t *m, ol_metric_type_t type, const char *name, const char *help, const char *label,
                        ol_metrics_func_t fn, void *opaque) {
    func_new(m, &(ol_metric_def_t){.name = name, .help = help, .type = type, .labels = {{label, NULL}}}, fn, opaque);
}

static void field_sum_fn(void *opaque, ol_metrics_out_t *out) {
    const field_sum_t *s = opaque;
    long long total = 0;
    for (size_t i = 0; i < s->nitems; i++)
        total += atomic_load((const atomic_llong *)(s->items + i * s->item_size + s->offset));
    ol_metrics_out(out, NULL, (double)total);
}

void ol_metrics_fields(ol_metrics_t *m, const ol_metric_field_t *fields, size_t nfields, const void *items,
                       size_t nitems, size_t item_size) {
    for (size_t i = 0; i < nfields; i++) {
        ol_metric_t *f =
            func_new(m, &(ol_metric_def_t){.name = fields[i].name, .help = fields[i].help, .type = fields[i].type},
                     field_sum_fn, NULL);
        f->sum = (field_sum_t){items, nitems, item_size, fields[i].offset};
        f->opaque = &f->sum;
    }
}

size_t ol_metric_label_count(const ol_metric_t *f, int k) {
    return k >= 0 && k < f->nlabels ? f->label_counts[k] : 0;
}

size_t ol_metric_cell_at(const ol_metric_t *f, size_t i0, size_t i1) {
    if (f->nlabels == 0)
        return 0;
    OL_ASSERT(i0 < f->label_counts[0]);
    if (f->nlabels == 1)
        return i0;
    OL_ASSERT(i1 < f->label_counts[1]);
    return i0 * f->label_counts[1] + i1;
}

static size_t value_index(const ol_metric_t *f, int k, const char *v) {
    for (size_t i = 0; i < f->label_counts[k]; i++)
        if (!strcmp(f->label_values[k][i], v))
            return i;
    ol_assert_fail("label value not declared", __FILE__, __LINE__);
}

size_t ol_metric_cell(const ol_metric_t *f, const char *v0, const char *v1) {
    OL_ASSERT(!f->fn);
    size_t i0 = f->nlabels > 0 ? value_index(f, 0, v0) : 0;
    size_t i1 = f->nlabels > 1 ? value_index(f, 1, v1) : 0;
    return ol_metric_cell_at(f, i0, i1);
}

/* Updates are relaxed: a scrape needs each value, not an order between them. */
static inline void touch(cell_t *c) {
    if (!atomic_load_explicit(&c->touched, memory_order_relaxed))
        atomic_store_explicit(&c->touched, true, memory_order_relaxed);
}

void ol_metric_add(ol_metric_t *f, size_t cell, uint64_t n) {
    OL_ASSERT(cell < f->ncells && f->type == OL_METRIC_COUNTER);
    atomic_fetch_add_explicit(&f->cells[cell].value, (long long)n, memory_order_relaxed);
    touch(&f->cells[cell]);
}

void ol_metric_set(ol_metric_t *f, size_t cell, int64_t v) {
    OL_ASSERT(cell < f->ncells && f->type == OL_METRIC_GAUGE);
    atomic_store_explicit(&f->cells[cell].value, v, memory_order_relaxed);
    touch(&f->cells[cell]);
}

void ol_metric_gauge_add(ol_metric_t *f, size_t cell, int64_t delta) {
    OL_ASSERT(cell < f->ncells && f->type == OL_METRIC_GAUGE);
    atomic_fetch_add_explicit(&f->cells[cell].value, delta, memory_order_relaxed);
    touch(&f->cells[cell]);
}

void ol_metric_observe(ol_metric_t *f, size_t cell, double v) {
    OL_ASSERT(cell < f->ncells && f->type == OL_METRIC_HISTOGRAM);
    cell_t *c = &f->cells[cell];
    size_t i = 0;
    while (i < f->nbuckets && v > f->buckets[i])
        i++;
    atomic_fetch_add_explicit(&c->buckets[i], 1, memory_order_relaxed);
    unsigned long long old = atomic_load_explicit(&c->sum_bits, memory_order_relaxed), upd;
    do {
        double sum;
        memcpy(&sum, &old, sizeof(sum));
        sum += v;
        memcpy(&upd, &sum, sizeof(upd));
    } while (
        !atomic_compare_exchange_weak_explicit(&c->sum_bits, &old, upd, memory_order_relaxed, memory_order_relaxed));
    touch(c);
}

void ol_metric_show(ol_metric_t *f, size_t cell) {
    OL_ASSERT(cell < f->ncells);
    atomic_store(&f->cells[cell].touched, true);
}

int64_t ol_metric_value(const ol_metric_t *f, size_t cell) {
    OL_ASSERT(cell < f->ncells);
    cell_t *c = &f->cells[cell];
    if (f->type != OL_METRIC_HISTOGRAM)
        return atomic_load(&c->value);
    int64_t n = 0;
    for (size_t i = 0; i <= f->nbuckets; i++)
        n += (int64_t)atomic_load(&c->buckets[i]);
    return n;
}

/* ---- rendering ------------------------------------------------------------ */

static void put_escaped(FILE *fp, const char *s, bool help) {
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", fp);
        else if (*s == '\n')
            fputs("\\n", fp);
        else if (*s == '"' && !help)
            fputs("\\\"", fp);
        else
            fputc(*s, fp);
    }
}

/* The shortest text that reads back as v (0.001, not 0.0010000000000000000208). */
static void format_double(double v, char *out, size_t out_size) {
    if (isnan(v)) {
        snprintf(out, out_size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, out_size, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(out, out_size, "%.*g", precision, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static void put_double(FILE *fp, double v) {
    char text[64];
    format_double(v, text, sizeof(text));
    fputs(text, fp);
}

/* name{l0="v0",l1="v1"[,le="..."]} */
static void put_series(FILE *fp, const ol_metric_t *f, const char *suffix, const char *const *values, const char *le) {
    fputs(f->name, fp);
    fputs(suffix, fp);
    if (!f->nlabels && !le)
        return;
    fputc('{', fp);
    for (int k = 0; k < f->nlabels; k++) {
        fprintf(fp, "%s%s=\"", k ? "," : "", f->label_names[k]);
        put_escaped(fp, values[k] ? values[k] : "", false);
        fputc('"', fp);
    }
    if (le)
        fprintf(fp, "%sle=\"%s\"", f->nlabels ? "," : "", le);
    fputc('}', fp);
}

void ol_metrics_out(ol_metrics_out_t *out, const char *const *label_values, double value) {
    OL_ASSERT(out->f->nlabels == 0 || label_values);
    put_series(out->fp, out->f, "", label_values, NULL);
    fputc(' ', out->fp);
    put_double(out->fp, value);
    fputc('\n', out->fp);
}

static void render_cell(FILE *fp, const ol_metric_t *f, size_t i) {
    const cell_t *c = &f->cells[i];
    if ((f->flags & OL_METRIC_SPARSE) && !atomic_load(&c->touched))
        return;
    const char *values[OL_METRIC_LABELS_MAX] = {NULL};
    if (f->nlabels == 1)
        values[0] = f->label_values[0][i];
    else if (f->nlabels == 2) {
        values[0] = f->label_values[0][i / f->label_counts[1]];
        values[1] = f->label_values[1][i % f->label_counts[1]];
    }
    if (f->type != OL_METRIC_HISTOGRAM) {
        put_series(fp, f, "", values, NULL);
        fprintf(fp, " %lld\n", (long long)atomic_load(&c->value));
        return;
    }
    /* read once: _count equals the +Inf bucket within one scrape */
    unsigned long long cum = 0;
    char le[64];
    for (size_t b = 0; b <= f->nbuckets; b++) {
        cum += atomic_load(&c->buckets[b]);
        format_double(b < f->nbuckets ? f->buckets[b] : INFINITY, le, sizeof(le));
        put_series(fp, f, "_bucket", values, le);
        fprintf(fp, " %llu\n", cum);
    }
    unsigned long long bits = atomic_load(&c->sum_bits);
    double sum;
    memcpy(&sum, &bits, sizeof(sum));
    put_series(fp, f, "_sum", values, NULL);
    fputc(' ', fp);
    put_double(fp, sum);
    fputc('\n', fp);
    put_series(fp, f, "_count", values, NULL);
    fprintf(fp, " %llu\n", cum);
}

static const char *type_name(ol_metric_type_t t) {
    return t == OL_METRIC_COUNTER ? "counter" : t == OL_METRIC_GAUGE ? "gauge" : "histogram";
}

char *ol_metrics_render(ol_metrics_t *m, size_t *out_len) {
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);
    OL_ASSERT(fp);
    pthread_mutex_lock(&m->lock);
    for (const ol_metric_t *f = m->head; f; f = f->next) {
        fprintf(fp, "# HELP %s ", f->name);
        put_escaped(fp, f->help, true);
        fprintf(fp, "\n# TYPE %s %s\n", f->name, type_name(f->type));
        if (f->fn) {
            ol_metrics_out_t out = {fp, f};
            f->fn(f->opaque, &out);
        } else {
            for (size_t i = 0; i < f->ncells; i++)
                render_cell(fp, f, i);
        }
    }
    pthread_mutex_unlock(&m->lock);
    fclose(fp);
    if (out_len)
        *out_len = size;
    return text;
}

/* ---- process metrics ------------------------------------------------------ */

static void cpu_fn(void *opaque, ol_metrics_out_t *out) {
    (void)opaque;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return;
    long long us =
        (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000LL + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
    ol_metrics_out(out, NULL, (double)us / 1e6);
}

/* /proc/self/statm: size and resident, in pages. */
static void memory_fn(void *opaque, ol_metrics_out_t *out) {
    bool resident = opaque != NULL;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (!fp)
        return;
    unsigned long long vsize, rss;
    if (fscanf(fp, "%llu %llu", &vsize, &rss) == 2)
        ol_metrics_out(out, NULL, (double)(resident ? rss : vsize) * (double)sysconf(_SC_PAGESIZE));
    fclose(fp);
}

/* Field 22 of /proc/self/stat (after the parenthesized command name) is the
 * start in clock ticks after boot; /proc/stat's btime is the boot. */
static double start_time(void) {
    char buf[1024];
    double boot = -1, ticks = -1;
    FILE *fp = fopen("/proc/stat", "r");
    if (fp) {
        while (fgets(buf, sizeof(buf), fp))
            if (!strncmp(buf, "btime ", 6))
                boot = atof(buf + 6);
        fclose(fp);
    }
    fp = fopen("/proc/self/stat", "r");
    if (fp) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        buf[n] = '\0';
        fclose(fp);
        char *p = strrchr(buf, ')');
        for (int field = 2; p && field < 22; field++)
            p = strchr(p + 1, ' ');
        if (p)
            ticks = atof(p + 1);
    }
    if (boot < 0 || ticks < 0)
        return -1;
    return boot + ticks / (double)sysconf(_SC_CLK_TCK);
}

static void start_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, *(const double *)opaque);
}

static void fds_fn(void *opaque, ol_metrics_out_t *out) {
    (void)opaque;
    DIR *dir = opendir("/proc/self/fd");
    if (!dir)
        return;
    long n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    ol_metrics_out(out, NULL, (double)(n - 1)); /* without the directory's own */
}

static void max_fds_fn(void *opaque, ol_metrics_out_t *out) {
    (void)opaque;
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl))
        ol_metrics_out(out, NULL, rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
}

static void build_fn(void *opaque, ol_metrics_out_t *out) {
    (void)opaque;
    const char *values[] = {OL_VERSION};
    ol_metrics_out(out, values, 1);
}

void ol_metrics_add_process(ol_metrics_t *m) {
    static double started = -2;
    if (started == -2) {
        started = start_time();
        if (started < 0)
            started = (double)time(NULL);
    }
    ol_metrics_func_value(m, OL_METRIC_COUNTER, "process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds.", cpu_fn, NULL);
    ol_metrics_func_value(m, OL_METRIC_GAUGE, "process_resident_memory_bytes", "Resident memory size in bytes.",
                          memory_fn, (void *)1);
    ol_metrics_func_value(m, OL_METRIC_GAUGE, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                          memory_fn, NULL);
    ol_metrics_func_value(m, OL_METRIC_GAUGE, "process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.", start_fn, &started);
    ol_metrics_func_value(m, OL_METRIC_GAUGE, "process_open_fds", "Number of open file descriptors.", fds_fn, NULL);
    ol_metrics_func_value(m, OL_METRIC_GAUGE, "process_max_fds", "Maximum number of open file descriptors.", max_fds_fn,
                          NULL);
    ol_metrics_func_by(m, OL_METRIC_GAUGE, "orderlog_build_info",
                       "Always 1, labelled with the version of orderlog running.", "version", build_fn, NULL);
}
