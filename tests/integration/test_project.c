/* orderlog project against the real broker and PostgreSQL: the projection
 * rules on hand-written event streams (tests/fixtures/project), replay,
 * poison records and the dlq, the poison limit, and SIGTERM.
 *
 * Every test works under a topic prefix (it_project_<tag>_<pid>_) and a
 * consumer group (it_project_<tag>_<pid>) of its own, in scratch databases
 * migrated with `orderlog migrate`; all of it is removed at the end. A group
 * of its own matters: Kafka rebalances every member of a group whatever
 * topics they read, so tests sharing orderlog-project would disturb each other.
 *
 * What the tables should hold is written out here from the contract
 * (docs/events.md) and the rules of consumers/project.c's header comment,
 * never taken from a run.
 *
 * The "kit" below (running the projector, an independent model of the
 * order streams of ops/sample-events, table checksums, offsets at the end)
 * is shared with test_project_crash.c and test_project_serial_pg_restart.c,
 * which #include this file with OL_PROJECT_KIT_ONLY defined. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define KIT static __attribute__((unused))

/* ==== the kit ============================================================ */

static const char *const kit_topics_read[] = {"orders", "after-sales", "skus", "sale-events",
                                              "blacklist"}; /* what project reads */
#define KIT_PARTITIONS 3
#define KIT_MAX 8

static char kit_prefix[128];       /* it_project_<tag>_<pid>_, once taken */
static char kit_group[128];        /* the test's main consumer group */
static char kit_dir[512];          /* scratch directory */
static char kit_dbs[KIT_MAX][512]; /* scratch databases to drop */
static int kit_ndbs;
static char kit_groups[KIT_MAX][128]; /* consumer groups to delete */
static int kit_ngroups;
static ol_test_bg_t *kit_bgs[KIT_MAX]; /* background processes to kill */
static int kit_nbgs;

KIT void kit_setup(void) {
    ol_test_tmpdir(kit_dir, sizeof(kit_dir));
}

/* A sanitizer report in what a background process wrote fails the test. */
static void kit_bg_check(ol_test_bg_t *bg) {
    const char *err = ol_test_bg_stderr(bg);
    cr_expect(!strstr(err, "Sanitizer") && !strstr(err, "runtime error:"), "sanitizer report from project:\n%s", err);
}

/* The options of every orderlog run of the kit: the test's prefix and partitions. */
KIT const char *kit_fixed_args(void) {
    static char args[256];
    snprintf(args, sizeof(args), "-X topic.prefix=%s -X topic.partitions=%d", kit_prefix, KIT_PARTITIONS);
    return args;
}

KIT void kit_teardown(void) {
    for (int i = 0; i < kit_nbgs; i++) {
        kit_bg_check(kit_bgs[i]);
        ol_test_bg_free(kit_bgs[i]);
    }
    kit_nbgs = 0;
    if (*kit_prefix)
        ol_test_orderlogf(NULL, NULL, kit_fixed_args(), "topics delete");
    for (int i = 0; i < kit_ndbs; i++)
        ol_test_pg_drop_db(kit_dbs[i]);
    kit_ndbs = 0;
    const char *groups[KIT_MAX];
    for (int i = 0; i < kit_ngroups; i++)
        groups[i] = kit_groups[i];
    ol_test_kafka_delete_groups(groups, (size_t)kit_ngroups);
    kit_ngroups = 0;
    if (*kit_dir)
        ol_test_rmtree(kit_dir);
}

/* A consumer group of the test's own (deleted at the end): it_project_<tag>_<pid><suffix>. */
KIT const char *kit_new_group(const char *tag, const char *suffix) {
    cr_assert(kit_ngroups < KIT_MAX);
    char *g = kit_groups[kit_ngroups++];
    snprintf(g, sizeof(kit_groups[0]), "it_project_%s_%ld%s", tag, (long)getpid(), suffix);
    return g;
}

/* A scratch database with the read models (orderlog migrate); its conninfo. */
KIT const char *kit_new_db(const char *tag) {
    cr_assert(kit_ndbs < KIT_MAX);
    char *db = kit_dbs[kit_ndbs++];
    ol_test_pg_migrated_db(tag, db, sizeof(kit_dbs[0]));
    return db;
}

/* Takes the prefix and main group of tag, creates the topics. */
KIT void kit_use(const char *tag) {
    snprintf(kit_prefix, sizeof(kit_prefix), "it_project_%s_%ld_", tag, (long)getpid());
    snprintf(kit_group, sizeof(kit_group), "%s", kit_new_group(tag, ""));
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, kit_fixed_args(), "topics create");
    cr_assert_eq(rc, 0, "topics create: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
}

/* kit_use(tag), then kit_new_db(db_tag): the test's topics and a scratch
 * database for them. */
KIT const char *kit_use_db(const char *tag, const char *db_tag) {
    kit_use(tag);
    return kit_new_db(db_tag);
}

/* The full name of a contract topic under the test's prefix (static buffer per call site). */
KIT const char *kit_topic(const char *name, char *buf, size_t size) {
    snprintf(buf, size, "%s%s", kit_prefix, name);
    return buf;
}

/* The command line of `orderlog project` on db in group, with extra options (-X ...) and args. */
KIT char *kit_project_cmd(const char *db, const char *group, const char *extra, const char *args) {
    char *bin = ol_test_shell_quote(ol_test_bin()), *ci = ol_test_shell_quote(db), *cmd;
    cr_assert(asprintf(&cmd,
                       "exec %s -X topic.prefix=%s -X topic.partitions=%d -X pg.conninfo=%s "
                       "-X consumer.group.id=%s %s project %s",
                       bin, kit_prefix, KIT_PARTITIONS, ci, group, extra ? extra : "", args ? args : "") >= 0);
    free(bin);
    free(ci);
    return cmd;
}

/* `orderlog project` in the background (killed at the end if still running). */
KIT ol_test_bg_t *kit_project_bg(const char *db, const char *group, const char *extra) {
    cr_assert(kit_nbgs < KIT_MAX);
    char *cmd = kit_project_cmd(db, group, extra, NULL);
    ol_test_bg_t *bg = ol_test_bg_start(cmd);
    free(cmd);
    kit_bgs[kit_nbgs++] = bg;
    return bg;
}

/* Kills (SIGKILL) and forgets a background process started by kit_project_bg. */
KIT void kit_bg_free(ol_test_bg_t *bg) {
    kit_bg_check(bg);
    for (int i = 0; i < kit_nbgs; i++) {
        if (kit_bgs[i] == bg) {
            kit_bgs[i] = kit_bgs[--kit_nbgs];
            break;
        }
    }
    ol_test_bg_free(bg);
}

/* `orderlog project --until-end`; the exit status, out and err as new strings. */
KIT int kit_project_until_end(const char *db, const char *group, const char *extra, char **out, char **err) {
    char *cmd = kit_project_cmd(db, group, extra, "--until-end");
    int rc = ol_test_run(cmd, out, err);
    free(cmd);
    return rc;
}

/* The summary line of project: "projected N events in B batches (D to the dlq, R retries) ...". */
typedef struct kit_summary_s {
    long long events, batches, dlq, retries;
} kit_summary_t;

KIT kit_summary_t kit_summary(const char *out) {
    kit_summary_t s = {-1, -1, -1, -1};
    const char *p = out ? strstr(out, "projected ") : NULL;
    cr_assert(p, "no \"projected ...\" line in the output of project:\n%s", out ? out : "(none)");
    cr_assert(sscanf(p, "projected %lld events in %lld batches (%lld to the dlq, %lld retries)", &s.events, &s.batches,
                     &s.dlq, &s.retries) == 4,
              "unexpected summary line: %.200s", p);
    return s;
}

/* `project --until-end`; fails unless it exits 0; its summary. */
KIT kit_summary_t kit_project_all(const char *db, const char *group, const char *extra) {
    char *out, *err;
    int rc = kit_project_until_end(db, group, extra, &out, &err);
    cr_assert_eq(rc, 0, "project --until-end: exit %d\nstdout:\n%s\nstderr:\n%s", rc, out, err);
    kit_summary_t s = kit_summary(out);
    free(out);
    free(err);
    return s;
}

/* Records in the dlq topic. */
KIT long long kit_dlq_count(void) {
    char dlq[256];
    long long n = 0;
    kit_topic("dlq", dlq, sizeof(dlq));
    for (int p = 0; p < KIT_PARTITIONS; p++)
        n += ol_test_kafka_end_offset(dlq, p);
    return n;
}

/* `orderlog publish <path>`: fails the test unless every line was published; the count. */
KIT long long kit_publish(const char *path) {
    char *q = ol_test_shell_quote(path), *out, *err;
    int rc = ol_test_orderlogf(&out, &err, kit_fixed_args(), "publish %s", q);
    cr_assert_eq(rc, 0, "publish %s: exit %d\n%s%s", path, rc, out, err);
    long long n = -1, rejected = -1, failed = -1;
    const char *p = strstr(out, "published ");
    cr_assert(p && sscanf(p, "published %lld, rejected %lld, failed %lld", &n, &rejected, &failed) == 3,
              "publish: no summary\n%s", out);
    cr_assert(rejected == 0 && failed == 0, "publish %s: %s%s", path, out, err);
    free(q);
    free(out);
    free(err);
    return n;
}

/* Path of a fixture under tests/fixtures/project (static buffer). */
KIT const char *kit_fixture(const char *name) {
    static char path[1024];
    const char *base = getenv("ORDERLOG_FIXTURES");
    snprintf(path, sizeof(path), "%s/project/%s", base && *base ? base : "tests/fixtures", name);
    return path;
}

/* ops/sample-events orders n seed > <dir>/<name>; the path (static buffer). */
KIT const char *kit_sample_orders(long n, unsigned seed, const char *name) {
    static char path[1024];
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/%s", kit_dir, name);
    char *script, *q = ol_test_shell_quote(path), *err;
    cr_assert(asprintf(&script, "%s/ops/sample-events", src && *src ? src : ".") >= 0);
    char *qs = ol_test_shell_quote(script);
    int rc = ol_test_runf(NULL, &err, "%s orders %ld %u > %s", qs, n, seed, q);
    cr_assert_eq(rc, 0, "sample-events: exit %d\n%s", rc, err);
    free(script);
    free(qs);
    free(q);
    free(err);
    return path;
}

/* A sku stream that shows any record applied twice or lost: nskus
 * SkuSynced (v1, stock 1000) then nadjust StockAdjusted of -3..+5 units
 * spread over them (a StockAdjusted is not idempotent, so a replayed or
 * missing one changes the stock; the stock never gets near 0). Written to
 * <dir>/<name>; the path (static buffer). */
KIT const char *kit_sample_skus(int nskus, int nadjust, unsigned seed, const char *name) {
    static char path[1024];
    snprintf(path, sizeof(path), "%s/%s", kit_dir, name);
    FILE *fp = fopen(path, "w");
    cr_assert(fp, "cannot write %s", path);
    for (int i = 0; i < nskus; i++)
        fprintf(fp,
                "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"ADJ-%05d\",\"platform\":\"shop\",\"title\":"
                "\"Item %d\",\"price\":%d,\"currency\":\"CNY\",\"stock\":1000,\"version\":1,\"updated_at\":"
                "\"2026-05-01T00:00:00Z\"}}\n",
                i, i, 100 + i);
    unsigned x = seed * 2654435761u + 1;
    for (int k = 0; k < nadjust; k++) {
        x = x * 1103515245u + 12345u;
        int sku = (int)((x >> 8) % (unsigned)nskus);
        x = x * 1103515245u + 12345u;
        int delta = (int)((x >> 8) % 9) - 3;
        fprintf(fp,
                "{\"type\":\"StockAdjusted\",\"data\":{\"sku\":\"ADJ-%05d\",\"delta\":%d,\"reason\":"
                "\"count %d\",\"adjusted_at\":%lld}}\n",
                sku, delta, k, 1777593600000LL + k);
    }
    cr_assert(!fclose(fp), "cannot write %s", path);
    return path;
}

/* sum(next_offset) of group in db (0 when none); -1 when PostgreSQL does not answer. */
KIT long long kit_offsets_sum(const char *db, const char *group) {
    char sql[512];
    long long v = -1;
    snprintf(sql, sizeof(sql),
             "select coalesce(sum(next_offset), 0)::bigint from orderlog.consumer_offsets where group_id = '%s'",
             group);
    if (ol_test_pg_try_query_int(db, sql, &v))
        return -1;
    return v;
}

/* Every partition of the topics project reads: the stored next offset of
 * group is the partition's end (nothing lost, nothing left), and there is no
 * other offset row for the group. */
KIT void kit_assert_offsets_at_end(const char *db, const char *group) {
    char sql[1024], topic[256];
    int rows = 0;
    for (size_t t = 0; t < sizeof(kit_topics_read) / sizeof(kit_topics_read[0]); t++) {
        kit_topic(kit_topics_read[t], topic, sizeof(topic));
        for (int p = 0; p < KIT_PARTITIONS; p++) {
            long long end = ol_test_kafka_end_offset(topic, p);
            snprintf(sql, sizeof(sql),
                     "select coalesce((select next_offset from orderlog.consumer_offsets where group_id = '%s' "
                     "and topic = '%s' and partition = %d), -1)",
                     group, topic, p);
            long long stored = ol_test_pg_query_int(db, sql);
            if (stored >= 0)
                rows++;
            cr_assert(stored == end || (stored == -1 && end == 0),
                      "group %s, %s [%d]: stored next offset %lld, the partition ends at %lld", group, topic, p, stored,
                      end);
        }
    }
    snprintf(sql, sizeof(sql), "select count(*) from orderlog.consumer_offsets where group_id = '%s'", group);
    cr_assert_eq(ol_test_pg_query_int(db, sql), rows, "group %s has offset rows for other partitions", group);
}

/* The four tables project writes, with their keys. */
static const char *const kit_tables[][2] = {
    {"orders", "order_id"}, {"order_lines", "order_id, line_no"}, {"refunds", "refund_id"}, {"skus", "sku"}};
#define KIT_NTABLES 4

/* md5 of every row of every column of table, in key order. */
KIT char *kit_checksum(const char *db, int table) {
    char sql[512];
    snprintf(sql, sizeof(sql),
             "select md5(coalesce(string_agg(t::text, ',' order by %s), '')) || ' (' || count(*) || ' rows)' "
             "from orderlog.%s t",
             kit_tables[table][1], kit_tables[table][0]);
    return ol_test_pg_query_str(db, sql);
}

/* The lines where a and b (rows in key order) differ, at most max of them,
 * for failure messages (a new string, "" when none). */
KIT char *kit_differences(const char *a, const char *b, int max) {
    char *s = strdup("");
    int line = 1, shown = 0, more = 0;
    const char *la = a, *lb = b;
    while (*la || *lb) {
        size_t na = strcspn(la, "\n"), nb = strcspn(lb, "\n");
        if (na != nb || memcmp(la, lb, na)) {
            if (shown++ < max) {
                char *t;
                cr_assert(asprintf(&t, "%s  row %d:\n    %.*s\n  vs\n    %.*s\n", s, line, (int)(na > 600 ? 600 : na),
                                   la, (int)(nb > 600 ? 600 : nb), lb) >= 0);
                free(s);
                s = t;
            } else {
                more++;
            }
        }
        la += na + (la[na] == '\n');
        lb += nb + (lb[nb] == '\n');
        line++;
    }
    if (more) {
        char *t;
        cr_assert(asprintf(&t, "%s  and %d more rows\n", s, more) >= 0);
        free(s);
        s = t;
    }
    return s;
}

/* Every table of db_a equals the one of db_b, row for row, column for
 * column; the failure lists the rows that differ in every table. */
KIT void kit_assert_same_tables(const char *db_a, const char *db_b, const char *what) {
    char *report = strdup("");
    for (int t = 0; t < KIT_NTABLES; t++) {
        char *a = kit_checksum(db_a, t), *b = kit_checksum(db_b, t);
        if (strcmp(a, b)) {
            char sql[512], *r;
            snprintf(sql, sizeof(sql), "select t::text from orderlog.%s t order by %s", kit_tables[t][0],
                     kit_tables[t][1]);
            char *ra = ol_test_pg_query_rows(db_a, sql), *rb = ol_test_pg_query_rows(db_b, sql);
            char *diff = kit_differences(ra, rb, 5);
            cr_assert(asprintf(&r, "%stable %s: %s vs %s\n%s", report, kit_tables[t][0], a, b, diff) >= 0);
            free(report);
            report = r;
            free(ra);
            free(rb);
            free(diff);
        }
        free(a);
        free(b);
    }
    cr_assert(!*report, "%s: the tables differ\n%s", what, report);
    free(report);
}

/* ---- an independent model of the order, after-sales and sku streams ----
 *
 * The contract's rules, written again here from docs/events.md: snapshots
 * apply when their version is above the stored one (or none is stored);
 * OrderPlaced / RefundRequested create and are ignored when the row exists;
 * OrderPaid counts once per payment_id and turns a placed order paid;
 * OrderShipped / OrderCancelled set the status; an event about an order,
 * refund or sku that does not exist goes to the dlq; refunded_amount is the
 * sum of the completed refunds of the order. Events are taken in file order,
 * which is log order per key. */

enum { ST_PLACED, ST_PAID, ST_SHIPPED, ST_COMPLETED, ST_CANCELLED, ST_N };
static const char *const kit_order_status[] = {"placed", "paid", "shipped", "completed", "cancelled"};
enum { RS_REQUESTED, RS_APPROVED, RS_REJECTED, RS_COMPLETED, RS_N };
static const char *const kit_refund_status[] = {"requested", "approved", "rejected", "completed"};

typedef struct kit_totals_s {
    long long orders, total_amount, lines, paid, refunded, by_status[ST_N];
    long long refunds, refund_amount, refunds_by_status[RS_N];
    long long skus, stock;
    long long events, dlq; /* model only */
} kit_totals_t;

typedef struct kit_order_s {
    long long version; /* -1: none */
    int status;
    long long total, lines, paid;
    json_t *payments; /* payment_id -> amount */
} kit_order_t;

typedef struct kit_refund_s {
    long long version;
    int status;
    long long amount;
    char *order_id;
} kit_refund_t;

typedef struct kit_sku_s {
    long long version, stock;
} kit_sku_t;

static int kit_status_index(const char *const *names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (s && !strcmp(names[i], s))
            return i;
    cr_assert_fail("unknown status \"%s\"", s ? s : "(null)");
    return -1;
}

/* The entity of id in map (an index into *arr), created when create is set; NULL when absent. */
static void *kit_entity(json_t *map, void **arr, size_t *n, size_t *cap, size_t size, const char *id, bool create) {
    json_t *ix = json_object_get(map, id);
    if (ix)
        return (char *)*arr + (size_t)json_integer_value(ix) * size;
    if (!create)
        return NULL;
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        *arr = realloc(*arr, *cap * size);
    }
    json_object_set_new(map, id, json_integer((json_int_t)*n));
    void *e = (char *)*arr + (*n)++ * size;
    memset(e, 0, size);
    return e;
}

static long long jint(json_t *data, const char *field) {
    json_t *v = json_object_get(data, field);
    cr_assert(json_is_integer(v), "field %s: not an integer", field);
    return (long long)json_integer_value(v);
}

static const char *jstr(json_t *data, const char *field) {
    const char *s = json_string_value(json_object_get(data, field));
    cr_assert(s, "field %s: not a string", field);
    return s;
}

/* Feeds the publish-format lines of each file (NULL-terminated) through the model. */
KIT kit_totals_t kit_model(const char *const *paths) {
    kit_totals_t t;
    memset(&t, 0, sizeof(t));
    json_t *omap = json_object(), *rmap = json_object(), *smap = json_object();
    kit_order_t *orders = NULL;
    kit_refund_t *refunds = NULL;
    kit_sku_t *skus = NULL;
    size_t no = 0, co = 0, nr = 0, cr = 0, ns = 0, cs = 0;
    for (const char *const *path = paths; *path; path++) {
        FILE *fp = fopen(*path, "r");
        cr_assert(fp, "cannot read %s", *path);
        char *line = NULL;
        size_t lcap = 0;
        ssize_t len;
        while ((len = getline(&line, &lcap, fp)) > 0) {
            if (len <= 1)
                continue;
            json_error_t jerr;
            json_t *ev = json_loadb(line, (size_t)len, 0, &jerr);
            cr_assert(ev, "%s: not JSON (%s): %.200s", *path, jerr.text, line);
            const char *type = jstr(ev, "type");
            json_t *d = json_object_get(ev, "data");
            t.events++;
            if (!strcmp(type, "OrderSynced") || !strcmp(type, "OrderPlaced")) {
                const char *id = jstr(d, "order_id");
                kit_order_t *o = kit_entity(omap, (void **)&orders, &no, &co, sizeof(*o), id, false);
                bool synced = !strcmp(type, "OrderSynced");
                if (!o) {
                    o = kit_entity(omap, (void **)&orders, &no, &co, sizeof(*o), id, true);
                    o->version = -1;
                    o->payments = json_object();
                } else if (!synced || (o->version >= 0 && o->version >= jint(d, "version"))) {
                    json_decref(ev);
                    continue; /* placed once; a snapshot not newer */
                }
                o->status = synced ? kit_status_index(kit_order_status, ST_N, jstr(d, "status")) : ST_PLACED;
                o->total = jint(d, "total_amount");
                o->lines = (long long)json_array_size(json_object_get(d, "lines"));
                if (synced)
                    o->version = jint(d, "version");
            } else if (!strncmp(type, "Order", 5)) {
                kit_order_t *o = kit_entity(omap, (void **)&orders, &no, &co, sizeof(*o), jstr(d, "order_id"), false);
                if (!o) {
                    t.dlq++;
                } else if (!strcmp(type, "OrderPaid")) {
                    const char *pay = jstr(d, "payment_id");
                    if (!json_object_get(o->payments, pay)) {
                        json_object_set_new(o->payments, pay, json_integer(jint(d, "amount")));
                        o->paid += jint(d, "amount");
                        if (o->status == ST_PLACED)
                            o->status = ST_PAID;
                    }
                } else if (!strcmp(type, "OrderShipped")) {
                    o->status = ST_SHIPPED;
                } else if (!strcmp(type, "OrderCancelled")) {
                    o->status = ST_CANCELLED;
                }
            } else if (!strcmp(type, "AfterSaleSynced") || !strcmp(type, "RefundRequested")) {
                const char *id = jstr(d, "refund_id");
                kit_refund_t *r = kit_entity(rmap, (void **)&refunds, &nr, &cr, sizeof(*r), id, false);
                bool synced = !strcmp(type, "AfterSaleSynced");
                if (!r) {
                    r = kit_entity(rmap, (void **)&refunds, &nr, &cr, sizeof(*r), id, true);
                    r->version = -1;
                } else if (!synced || (r->version >= 0 && r->version >= jint(d, "version"))) {
                    json_decref(ev);
                    continue;
                }
                r->status = synced ? kit_status_index(kit_refund_status, RS_N, jstr(d, "status")) : RS_REQUESTED;
                r->amount = jint(d, "amount");
                free(r->order_id);
                r->order_id = strdup(jstr(d, "order_id"));
                if (synced)
                    r->version = jint(d, "version");
            } else if (!strncmp(type, "Refund", 6)) {
                kit_refund_t *r =
                    kit_entity(rmap, (void **)&refunds, &nr, &cr, sizeof(*r), jstr(d, "refund_id"), false);
                if (!r)
                    t.dlq++;
                else if (!strcmp(type, "RefundApproved"))
                    r->status = RS_APPROVED;
                else if (!strcmp(type, "RefundRejected"))
                    r->status = RS_REJECTED;
                else if (!strcmp(type, "RefundCompleted")) {
                    r->status = RS_COMPLETED;
                    r->amount = jint(d, "amount");
                }
            } else if (!strcmp(type, "SkuSynced")) {
                const char *id = jstr(d, "sku");
                kit_sku_t *s = kit_entity(smap, (void **)&skus, &ns, &cs, sizeof(*s), id, false);
                if (!s) {
                    s = kit_entity(smap, (void **)&skus, &ns, &cs, sizeof(*s), id, true);
                    s->version = -1;
                }
                if (s->version < jint(d, "version")) {
                    s->version = jint(d, "version");
                    s->stock = jint(d, "stock");
                }
            } else if (!strcmp(type, "StockAdjusted") || !strcmp(type, "SkuRemoved")) {
                kit_sku_t *s = kit_entity(smap, (void **)&skus, &ns, &cs, sizeof(*s), jstr(d, "sku"), false);
                if (!s)
                    t.dlq++;
                else if (!strcmp(type, "StockAdjusted"))
                    s->stock = s->stock + jint(d, "delta") < 0 ? 0 : s->stock + jint(d, "delta");
            } else if (strcmp(type, "PurchasePolicySet")) {
                cr_assert_fail("the model does not know %s", type);
            }
            json_decref(ev);
        }
        free(line);
        fclose(fp);
    }
    for (size_t i = 0; i < no; i++) {
        t.orders++;
        t.total_amount += orders[i].total;
        t.lines += orders[i].lines;
        t.paid += orders[i].paid;
        t.by_status[orders[i].status]++;
        json_decref(orders[i].payments);
    }
    for (size_t i = 0; i < nr; i++) {
        t.refunds++;
        t.refund_amount += refunds[i].amount;
        t.refunds_by_status[refunds[i].status]++;
        if (refunds[i].status == RS_COMPLETED && json_object_get(omap, refunds[i].order_id))
            t.refunded += refunds[i].amount;
        free(refunds[i].order_id);
    }
    for (size_t i = 0; i < ns; i++) {
        t.skus++;
        t.stock += skus[i].stock;
    }
    free(orders);
    free(refunds);
    free(skus);
    json_decref(omap);
    json_decref(rmap);
    json_decref(smap);
    return t;
}

/* A load on the test's topics: ops/sample-events orders (n_orders, seed) and
 * kit_sample_skus (nskus, nadjust, seed) published (*published: how many
 * events); returns what the model of them says, failing the test unless it
 * counts every published event. */
KIT kit_totals_t kit_publish_load(long long *published, long n_orders, unsigned orders_seed, int nskus, int nadjust,
                                  unsigned skus_seed) {
    char orders[1024], skus[1024];
    snprintf(orders, sizeof(orders), "%s", kit_sample_orders(n_orders, orders_seed, "orders.jsonl"));
    snprintf(skus, sizeof(skus), "%s", kit_sample_skus(nskus, nadjust, skus_seed, "skus.jsonl"));
    *published = kit_publish(orders) + kit_publish(skus);
    const char *paths[] = {orders, skus, NULL};
    kit_totals_t model = kit_model(paths);
    cr_assert_eq(model.events, *published);
    return model;
}

/* The same totals, from the tables of db. */
KIT kit_totals_t kit_actual(const char *db) {
    kit_totals_t t;
    memset(&t, 0, sizeof(t));
    t.orders = ol_test_pg_query_int(db, "select count(*) from orderlog.orders");
    t.total_amount = ol_test_pg_query_int(db, "select coalesce(sum(total_amount), 0)::bigint from orderlog.orders");
    t.lines = ol_test_pg_query_int(db, "select count(*) from orderlog.order_lines");
    t.paid = ol_test_pg_query_int(db, "select coalesce(sum(paid_amount), 0)::bigint from orderlog.orders");
    t.refunded = ol_test_pg_query_int(db, "select coalesce(sum(refunded_amount), 0)::bigint from orderlog.orders");
    char sql[256];
    for (int s = 0; s < ST_N; s++) {
        snprintf(sql, sizeof(sql), "select count(*) from orderlog.orders where status = '%s'", kit_order_status[s]);
        t.by_status[s] = ol_test_pg_query_int(db, sql);
    }
    t.refunds = ol_test_pg_query_int(db, "select count(*) from orderlog.refunds");
    t.refund_amount = ol_test_pg_query_int(db, "select coalesce(sum(amount), 0)::bigint from orderlog.refunds");
    for (int s = 0; s < RS_N; s++) {
        snprintf(sql, sizeof(sql), "select count(*) from orderlog.refunds where status = '%s'", kit_refund_status[s]);
        t.refunds_by_status[s] = ol_test_pg_query_int(db, sql);
    }
    t.skus = ol_test_pg_query_int(db, "select count(*) from orderlog.skus");
    t.stock = ol_test_pg_query_int(db, "select coalesce(sum(stock), 0)::bigint from orderlog.skus");
    return t;
}

#define KIT_EQ(field)                                                                                            \
    cr_assert_eq(actual.field, expected.field, "%s: " #field " is %lld in the tables, %lld by the events", what, \
                 actual.field, expected.field)

/* The tables of db hold what the model says. */
KIT void kit_assert_totals(const char *db, const kit_totals_t *model, const char *what) {
    kit_totals_t actual = kit_actual(db), expected = *model;
    KIT_EQ(orders);
    KIT_EQ(total_amount);
    KIT_EQ(lines);
    KIT_EQ(paid);
    KIT_EQ(refunded);
    for (int s = 0; s < ST_N; s++)
        cr_assert_eq(actual.by_status[s], expected.by_status[s], "%s: %lld orders %s in the tables, %lld by the events",
                     what, actual.by_status[s], kit_order_status[s], expected.by_status[s]);
    KIT_EQ(refunds);
    KIT_EQ(refund_amount);
    for (int s = 0; s < RS_N; s++)
        cr_assert_eq(actual.refunds_by_status[s], expected.refunds_by_status[s],
                     "%s: %lld refunds %s in the tables, %lld by the events", what, actual.refunds_by_status[s],
                     kit_refund_status[s], expected.refunds_by_status[s]);
    KIT_EQ(skus);
    KIT_EQ(stock);
}

/* Sleeps ms milliseconds. */
KIT void kit_sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts))
        ;
}

/* Waits until the stored offsets of group add up to target (or timeout_ms
 * passes, or bg, when given, exits); returns the last sum seen. */
KIT long long kit_wait_offsets(const char *db, const char *group, long long target, int timeout_ms, ol_test_bg_t *bg) {
    long long deadline = ol_test_now_ms() + timeout_ms, sum = -1;
    for (;;) {
        sum = kit_offsets_sum(db, group);
        if (sum >= target || ol_test_now_ms() > deadline)
            return sum;
        if (bg && ol_test_bg_wait(bg, 100) >= 0)
            return kit_offsets_sum(db, group);
        if (!bg)
            kit_sleep_ms(100);
    }
}

/* kit_project_bg of the main group once it has stored a first batch
 * (*stored: the sum of its offsets then); fails the test when none is
 * stored within 60 s. */
KIT ol_test_bg_t *kit_project_started(long long *stored, const char *db, const char *extra) {
    ol_test_bg_t *bg = kit_project_bg(db, kit_group, extra);
    *stored = kit_wait_offsets(db, kit_group, 1, 60000, bg);
    cr_assert(*stored > 0, "no progress within 60 s\n%s", ol_test_bg_stderr(bg));
    return bg;
}

/* The partitions a project process holds by its log: the count of its last
 * "assigned N partitions" line, 0 when its last word was "revoked" or none. */
KIT int kit_assigned_now(const char *log) {
    const char *a = NULL, *r = NULL;
    for (const char *p = log; (p = strstr(p, "\"assigned ")); p++)
        a = p;
    for (const char *p = log; (p = strstr(p, "\"revoked ")); p++)
        r = p;
    if (!a || (r && r > a))
        return 0;
    return atoi(a + strlen("\"assigned "));
}

/* The partition a key belongs on among partitions: Kafka's murmur2 (seed
 * 0x9747b28c) as the Java client computes it, written here and not taken
 * from orderlog. */
KIT int kit_partition_of(const char *key, int partitions) {
    const uint32_t m = 0x5bd1e995;
    size_t len = strlen(key);
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    const unsigned char *d = (const unsigned char *)key;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t k = (uint32_t)d[i] | (uint32_t)d[i + 1] << 8 | (uint32_t)d[i + 2] << 16 | (uint32_t)d[i + 3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)d[i + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)d[i + 1] << 8;
        /* fall through */
    case 1:
        h ^= d[i];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int)((h & 0x7fffffffu) % (uint32_t)partitions);
}

/* The same over the kit's partition count. */
KIT int kit_partition(const char *key) {
    return kit_partition_of(key, KIT_PARTITIONS);
}

/* One record of `orderlog tail dlq` by the offset header of its original. */
KIT json_t *dlq_record(json_t *records, const char *topic, long long partition, long long offset) {
    char part[32], off[32];
    snprintf(part, sizeof(part), "%lld", partition);
    snprintf(off, sizeof(off), "%lld", offset);
    size_t i;
    json_t *r;
    json_array_foreach(records, i, r) {
        json_t *h = json_object_get(r, "headers");
        const char *t = json_string_value(json_object_get(h, "dlq_topic"));
        const char *p = json_string_value(json_object_get(h, "dlq_partition"));
        const char *o = json_string_value(json_object_get(h, "dlq_offset"));
        if (t && p && o && !strcmp(t, topic) && !strcmp(p, part) && !strcmp(o, off))
            return r;
    }
    return NULL;
}

/* `orderlog tail <topic>` as an array of records (tail exits 1 when some
 * records do not decode, which the dlq is for). */
KIT json_t *tail_records(const char *topic) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, kit_fixed_args(), "tail %s", topic);
    cr_assert(rc == 0 || rc == 1, "tail %s: exit %d\n%s", topic, rc, err);
    json_t *arr = json_array();
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *v = json_loads(line, 0, &jerr);
        cr_assert(json_is_object(v), "tail %s: not JSON: %.300s", topic, line);
        json_array_append_new(arr, v);
    }
    free(out);
    free(err);
    return arr;
}

#ifndef OL_PROJECT_KIT_ONLY

/* ==== the tests ========================================================== */

TestSuite(project, .init = kit_setup, .fini = kit_teardown, .timeout = 240);

static const char *const fixture_files[] = {"orders.jsonl", "after_sales.jsonl", "skus.jsonl"};
#define NFIXTURES 3

/* Publishes the three fixture streams; the number of events. */
static long long publish_fixtures(void) {
    long long n = 0;
    for (int i = 0; i < NFIXTURES; i++)
        n += kit_publish(kit_fixture(fixture_files[i]));
    return n;
}

/* select <cols> from orderlog.<table> order by <order>, every column as
 * text, NULL as "-", the columns named in times as UTC "YYYY-MM-DD
 * HH24:MI:SS" (a new string). */
static char *rows_sql(const char *table, const char *cols, const char *times, const char *order) {
    char *sql = strdup("select "), *list = strdup(cols);
    int first = 1;
    for (char *c = strtok(list, ", "); c; c = strtok(NULL, ", ")) {
        char *more;
        size_t n = strlen(c);
        const char *hit = strstr(times, c);
        int is_time = hit && (hit == times || hit[-1] == ' ') && (hit[n] == ' ' || hit[n] == '\0');
        cr_assert(asprintf(&more,
                           is_time ? "%s%scoalesce(to_char(%s at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '-')"
                                   : "%s%scoalesce(%s::text, '-')",
                           sql, first ? "" : ", ", c) >= 0);
        free(sql);
        sql = more;
        first = 0;
    }
    char *out;
    cr_assert(asprintf(&out, "%s from orderlog.%s order by %s", sql, table, order) >= 0);
    free(sql);
    free(list);
    return out;
}

static void assert_rows(const char *db, const char *sql, const char *expected, const char *what) {
    char *rows = ol_test_pg_query_rows(db, sql);
    if (strcmp(rows, expected)) {
        char *diff = kit_differences(rows, expected, 10);
        cr_assert_fail("%s: the rows differ from the rules (left: the table, right: expected)\n%sall rows:\n%s", what,
                       diff, rows);
    }
    free(rows);
}

/* The rows the fixture streams must leave, worked out by hand from the rules
 * (see the comments in each expected row). */
static void assert_fixture_rows(const char *db) {
    char *sql = rows_sql("orders",
                         "order_id, user_id, source, platform, shop_id, status, total_amount, currency, paid_amount, "
                         "refunded_amount, carrier, tracking_no, cancel_reason, placed_at, shipped_at, cancelled_at, "
                         "version, updated_at",
                         "placed_at shipped_at cancelled_at updated_at", "order_id");
    assert_rows(db, sql,
                /* placed, cancelled: the cancellation is the last change */
                "O-CANCEL|u-cancel|flash_sale|-|-|cancelled|700|CNY|0|0|-|-|buyer changed mind|2026-03-04 08:00:00|-|"
                "2026-03-04 08:30:00|-|2026-03-04 08:30:00\n"
                /* v1 snapshot, paid (placed -> paid), the duplicate v1 after it changes nothing
                 * (else the status would be placed again); R-EXT2 is approved, not completed */
                "O-DUP|u-dup|external|jd|shop-2|paid|2200|CNY|2200|0|-|-|-|-|-|-|1|2026-03-02 09:05:00\n"
                /* placed once (the second OrderPlaced is ignored), pay-1 counted once, pay-2 added, shipped */
                "O-PAY|u-pay|flash_sale|-|-|shipped|5000|CNY|5000|0|YTO|YT0002|-|2026-03-03 08:00:00|"
                "2026-03-03 10:00:00|-|-|2026-03-03 10:00:00\n"
                /* paid; refunded = R-1 (completed with 2500, not the 3000 asked) + R-3 (500); R-2 rejected */
                "O-REF|u-ref|flash_sale|-|-|paid|10000|CNY|10000|3000|-|-|-|2026-03-05 08:00:00|-|-|-|"
                "2026-03-05 08:10:00\n"
                /* v2, stale v1 ignored, shipped, duplicate v2 ignored (status stays shipped until v3),
                 * v3 completed; R-EXT (AfterSaleSynced v3, completed, 400) refunds it */
                "O-SNAP|u-snap|external|tmall|shop-1|completed|600|CNY|0|400|SF|SF0001|-|-|2026-03-01 11:00:00|-|3|"
                "2026-03-01 12:00:00\n",
                "orders");
    assert_rows(db,
                "select order_id, line_no, sku, quantity, unit_price from orderlog.order_lines order by order_id, "
                "line_no",
                "O-CANCEL|1|SKU-C|1|700\n"
                "O-DUP|1|SKU-A|1|1000\n"
                "O-DUP|2|SKU-B|2|500\n"
                "O-DUP|3|SKU-C|1|200\n"
                "O-PAY|1|SKU-A|1|3000\n"
                "O-PAY|2|SKU-B|2|1000\n"
                "O-REF|1|SKU-D|4|2500\n"
                /* v3 has one line: the two lines of v2 are gone */
                "O-SNAP|1|SKU-C|3|200\n",
                "order_lines");
    free(sql);
    sql = rows_sql("refunds",
                   "refund_id, order_id, user_id, platform, status, amount, currency, reason, reject_reason, "
                   "requested_at, approved_at, rejected_at, completed_at, version, updated_at",
                   "requested_at approved_at rejected_at completed_at updated_at", "refund_id");
    assert_rows(db, sql,
                /* requested 3000, approved, a duplicate request ignored, completed with 2500 */
                "R-1|O-REF|u-ref|-|completed|2500|CNY|damaged|-|2026-03-06 08:00:00|2026-03-06 09:00:00|-|"
                "2026-03-06 10:00:00|-|2026-03-06 10:00:00\n"
                "R-2|O-REF|u-ref|-|rejected|1000|CNY|late|not eligible|2026-03-06 08:05:00|-|2026-03-06 09:10:00|-|-|"
                "2026-03-06 09:10:00\n"
                "R-3|O-REF|u-ref|-|completed|500|CNY|missing part|-|2026-03-06 11:00:00|2026-03-06 11:10:00|-|"
                "2026-03-06 11:20:00|-|2026-03-06 11:20:00\n"
                /* v1 requested, v3 completed, v2 (approved) stale: ignored */
                "R-EXT|O-SNAP|-|tmall|completed|400|CNY|-|-|-|-|-|2026-03-07 10:00:00|3|2026-03-07 10:00:00\n"
                /* v5 twice: once */
                "R-EXT2|O-DUP|-|jd|approved|700|CNY|-|-|-|-|-|-|5|2026-03-08 08:00:00\n",
                "refunds");
    free(sql);
    sql = rows_sql("skus", "sku, platform, title, price, currency, stock, version, removed_at, updated_at",
                   "removed_at updated_at", "sku");
    assert_rows(db, sql,
                /* v1, v3 (30), -5, duplicate v3 and stale v2 ignored, +2: 27; the policy is not the projector's */
                "SKU-A|shop|Alpha v3|1200|CNY|27|3|-|2026-02-03 02:00:00\n"
                "SKU-B|shop|Bravo|500|CNY|5|1|2026-02-05 00:00:00|2026-02-05 00:00:00\n"
                /* v7, stale v6 ignored, +4 */
                "SKU-C|jd|Charlie v7|200|USD|4|7|-|2026-02-07 01:00:00\n",
                "skus");
    free(sql);
}

Test(project, projects_fixture_streams_correctly) {
    const char *db = kit_use_db("fixture", "project_fixture");
    long long published = publish_fixtures();
    cr_assert_eq(published, 18 + 14 + 12);
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_assert_eq(s.events, published, "projected %lld events, %lld published", s.events, published);
    cr_assert_eq(s.dlq, 0, "%lld events went to the dlq", s.dlq);
    assert_fixture_rows(db);
    /* every record consumed and its offset stored: nothing lost, nothing left */
    kit_assert_offsets_at_end(db, kit_group);
    char topic[256];
    long long total = 0;
    for (int p = 0; p < KIT_PARTITIONS; p++)
        total += ol_test_kafka_end_offset(kit_topic("orders", topic, sizeof(topic)), p);
    cr_assert_eq(total, 18, "the orders topic holds %lld records, 18 published", total);
    /* the dlq stays empty */
    for (int p = 0; p < KIT_PARTITIONS; p++)
        cr_assert_eq(ol_test_kafka_end_offset(kit_topic("dlq", topic, sizeof(topic)), p), 0);
    /* the independent model agrees on the totals */
    const char *paths[NFIXTURES + 1];
    static char copies[NFIXTURES][1024];
    for (int i = 0; i < NFIXTURES; i++) {
        snprintf(copies[i], sizeof(copies[i]), "%s", kit_fixture(fixture_files[i]));
        paths[i] = copies[i];
    }
    paths[NFIXTURES] = NULL;
    kit_totals_t model = kit_model(paths);
    cr_assert_eq(model.dlq, 0);
    kit_assert_totals(db, &model, "fixture");
    /* running again in the same group finds nothing to do and changes nothing */
    char *before[KIT_NTABLES];
    for (int t = 0; t < KIT_NTABLES; t++)
        before[t] = kit_checksum(db, t);
    s = kit_project_all(db, kit_group, NULL);
    cr_assert_eq(s.events, 0, "a second run in the same group projected %lld events again", s.events);
    for (int t = 0; t < KIT_NTABLES; t++) {
        char *after = kit_checksum(db, t);
        cr_assert_str_eq(after, before[t], "table %s changed on a run with nothing to do", kit_tables[t][0]);
        free(after);
        free(before[t]);
    }
}

/* The same projection whichever way the batches are applied: pipelined (the
 * default: the next batch folded while one is applied), one at a time, and
 * split by partition over parallel connections (pipelined too). Batches of
 * 2 events, so that every mode runs many of them and an order's events
 * spread over batches that overlap in the pipeline. */
Test(project, every_apply_mode_gives_the_same_projection) {
    kit_use("modes");
    long long published = publish_fixtures();
    const char *modes[][2] = {
        {"pipelined", "-X consumer.batch.events=2"},
        {"serial", "-X consumer.batch.events=2 -X consumer.pipeline=false"},
        {"parallel", "-X consumer.batch.events=2 -X consumer.workers=3 -X consumer.parallel.apply=true"},
    };
    const char *first = NULL;
    for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
        char name[64];
        snprintf(name, sizeof(name), "project_modes_%s", modes[m][0]);
        const char *db = kit_new_db(name);
        char suffix[32];
        snprintf(suffix, sizeof(suffix), "_%s", modes[m][0]);
        const char *group = kit_new_group("modes", suffix);
        kit_summary_t s = kit_project_all(db, group, modes[m][1]);
        cr_assert_eq(s.events, published, "%s: projected %lld events of %lld", modes[m][0], s.events, published);
        cr_assert(s.batches >= published / 2, "%s: %lld batches for %lld events of at most 2", modes[m][0], s.batches,
                  published);
        assert_fixture_rows(db);
        kit_assert_offsets_at_end(db, group);
        if (first)
            kit_assert_same_tables(first, db, modes[m][0]);
        else
            first = db;
    }
}

/* OrderPaid counts once per payment_id: a payment redelivered after another
 * one of the same order must not be added again. */
Test(project, payment_redelivered_after_another_counts_once) {
    const char *db = kit_use_db("repay", "project_repay");
    cr_assert_eq(kit_publish(kit_fixture("payments_interleaved.jsonl")), 4);
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_assert_eq(s.events, 4);
    cr_assert_eq(s.dlq, 0);
    assert_rows(db, "select order_id, status, total_amount, paid_amount from orderlog.orders",
                /* pay-a 300 + pay-b 200; the second pay-a is the first one again */
                "O-REPAY|paid|500|500\n", "orders after pay-a, pay-b, pay-a");
    kit_assert_offsets_at_end(db, kit_group);
}

Test(project, replay_changes_nothing) {
    const char *db = kit_use_db("replay", "project_replay");
    long long published = publish_fixtures();
    kit_project_all(db, kit_group, NULL);
    assert_fixture_rows(db);
    char *first[KIT_NTABLES];
    for (int t = 0; t < KIT_NTABLES; t++)
        first[t] = kit_checksum(db, t);
    /* a new group over the same database: every event is applied a second time */
    const char *again = kit_new_group("replay", "_again");
    kit_summary_t s = kit_project_all(db, again, NULL);
    cr_assert_eq(s.events, published, "the replay projected %lld events of %lld", s.events, published);
    cr_assert_eq(s.dlq, 0);
    for (int t = 0; t < KIT_NTABLES; t++) {
        char *second = kit_checksum(db, t);
        if (strcmp(second, first[t])) {
            /* say which rows moved: compare with a fresh projection of the same topics */
            const char *fresh = kit_new_db("project_replay_fresh");
            kit_project_all(fresh, kit_new_group("replay", "_fresh"), NULL);
            kit_assert_same_tables(db, fresh, "after a replay over the same database (left) vs one projection");
        }
        cr_assert_str_eq(second, first[t], "table %s changed on replay", kit_tables[t][0]);
        free(second);
        free(first[t]);
    }
    kit_assert_offsets_at_end(db, kit_group);
    kit_assert_offsets_at_end(db, again);
}

/* ---- poison records ---- */

typedef struct poison_s {
    const char *what;
    const char *topic; /* short name */
    long long partition, offset;
    const char *stage;
    const char *error1, *error2; /* what dlq_error must name */
    const char *type;            /* the dlq record decodes as this type, NULL: undecodable */
    size_t value_len;            /* undecodable ones: their length */
} poison_t;

/* Produces value (len bytes, with headers, NULL for none) keyed by key to
 * the topic orders (full name), to partition, or the key's when partition
 * < 0; p gets where it went. */
static void produce_poison(poison_t *p, const char *orders, const char *key, int partition, const void *value,
                           size_t len, const char *const *headers) {
    p->partition = partition < 0 ? kit_partition(key) : partition;
    p->offset = ol_test_kafka_produce(orders, (int)p->partition, key, strlen(key), value, len, headers);
}

/* The record of the orders topic whose data.<field> is value: its partition and offset. */
static void find_record(json_t *records, const char *field, const char *value, long long *partition,
                        long long *offset) {
    size_t i;
    json_t *r;
    json_array_foreach(records, i, r) {
        const char *v = json_string_value(json_object_get(json_object_get(r, "data"), field));
        if (v && !strcmp(v, value)) {
            *partition = json_integer_value(json_object_get(r, "partition"));
            *offset = json_integer_value(json_object_get(r, "offset"));
            return;
        }
    }
    cr_assert_fail("no record with %s = %s", field, value);
}

/* Produces line as a JSON payload (content-type application/json, ce_type
 * type, ce_id id) keyed by key to orders (as produce_poison). */
static void produce_json_poison(poison_t *p, const char *orders, const char *key, const char *type, const char *id,
                                const char *line) {
    const char *const headers[] = {"ce_type", type, "ce_id", id, "content-type", "application/json", NULL};
    produce_poison(p, orders, key, -1, line, strlen(line), headers);
}

/* p (an apply poison whose error1 is the id of what does not exist) at the
 * record of its topic whose data.<field> is that id. */
static void find_ghost(poison_t *p, const char *field) {
    json_t *rec = tail_records(p->topic);
    find_record(rec, field, p->error1, &p->partition, &p->offset);
    json_decref(rec);
}

Test(project, poison_records_go_to_the_dlq_and_the_rest_is_projected) {
    const char *db = kit_use_db("poison", "project_poison");
    char orders[256], after[256], skus[256], dlq[256], path[1024];
    kit_topic("orders", orders, sizeof(orders));
    kit_topic("after-sales", after, sizeof(after));
    kit_topic("skus", skus, sizeof(skus));
    kit_topic("dlq", dlq, sizeof(dlq));
    poison_t poison[8];
    int np = 0;

    /* 1. garbage bytes under a valid-looking envelope (Avro by default) */
    unsigned char garbage[48];
    srand((unsigned)getpid());
    for (size_t i = 0; i < sizeof(garbage); i++)
        garbage[i] = (unsigned char)rand();
    garbage[0] = 0x01; /* a negative string length first: undecodable whatever follows */
    const char *const garbage_headers[] = {"ce_type", "orderlog.OrderPaid", "ce_id", "poison-garbage", NULL};
    poison[np] = (poison_t){"garbage", "orders", 0, 0, "decode", "undecodable", "OrderPaid", NULL, sizeof(garbage)};
    produce_poison(&poison[np++], orders, "O-JUNK", -1, garbage, sizeof(garbage), garbage_headers);

    /* 2. a valid envelope, a JSON payload breaking the schema: quantity 0 */
    const char *bad_line = "{\"order_id\":\"O-BAD\",\"user_id\":\"u\",\"source\":\"flash_sale\",\"lines\":[{\"sku\":"
                           "\"S\",\"quantity\":0,\"unit_price\":1}],\"total_amount\":1,\"currency\":\"CNY\","
                           "\"placed_at\":\"2026-01-01T00:00:00Z\"}";
    poison[np] = (poison_t){"quantity 0", "orders", 0, 0, "decode", "quantity", "at least 1", NULL, strlen(bad_line)};
    produce_json_poison(&poison[np++], orders, "O-BAD", "orderlog.OrderPlaced", "poison-quantity", bad_line);

    /* 3. the same with a required field missing */
    const char *missing = "{\"order_id\":\"O-BAD2\",\"payment_id\":\"p\",\"currency\":\"CNY\","
                          "\"paid_at\":\"2026-01-01T00:00:00Z\"}";
    poison[np] = (poison_t){"missing amount", "orders", 0, 0, "decode", "amount", "missing", NULL, strlen(missing)};
    produce_json_poison(&poison[np++], orders, "O-BAD2", "orderlog.OrderPaid", "poison-missing", missing);

    /* 4. an event of another topic, as kcat would write it (publish format, no headers) */
    const char *buy = "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"req-1\",\"session_id\":\"s\","
                      "\"client_ip\":\"198.51.100.7\",\"user_id\":\"u-1\",\"user_level\":1,\"sku\":\"SKU-1\","
                      "\"quantity\":1,\"requested_at\":\"2026-01-01T00:00:00Z\"}}";
    poison[np] = (poison_t){"wrong topic", "orders", 0, 0, "fold", "BuyRequested", "orders", "BuyRequested", 0};
    produce_poison(&poison[np++], orders, "SKU-1", -1, buy, strlen(buy), NULL);

    /* 5. what a Confluent serializer writes (magic byte 0, the schema id,
     * then Avro) with an id the registry never gave: read through the
     * registry, so only with one (ops/test starts it; without it the record
     * would wait, as it must) */
    static const char framed[] = "\0\x7f\xff\xff\xfe\x0a"
                                 "O-CNF\x02p";
    bool with_registry = getenv("ORDERLOG_REGISTRY_URL") != NULL;
    poison[np] = (poison_t){"confluent framing",
                            "orders",
                            0,
                            0,
                            "decode",
                            "Confluent wire format, schema id 2147483646: ",
                            "knows no such id",
                            NULL,
                            sizeof(framed) - 1};
    if (with_registry)
        produce_poison(&poison[np++], orders, "O-CNF", 1, framed, sizeof(framed) - 1, NULL);

    /* 6-8. events about what does not exist, published the normal way */
    snprintf(path, sizeof(path), "%s/ghosts.jsonl", kit_dir);
    const char *ghosts =
        "{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"O-GHOST\",\"payment_id\":\"pay-g\",\"amount\":100,"
        "\"currency\":\"CNY\",\"paid_at\":\"2026-01-01T00:00:00Z\"}}\n"
        "{\"type\":\"RefundApproved\",\"data\":{\"refund_id\":\"R-GHOST\",\"order_id\":\"O-GOOD\","
        "\"approved_at\":\"2026-01-01T00:00:00Z\"}}\n"
        "{\"type\":\"StockAdjusted\",\"data\":{\"sku\":\"SKU-GHOST\",\"delta\":3,\"reason\":\"r\","
        "\"adjusted_at\":\"2026-01-01T00:00:00Z\"}}\n";
    ol_test_write_file(path, ghosts, strlen(ghosts));
    cr_assert_eq(kit_publish(path), 3);
    poison[np] = (poison_t){"unknown order", "orders", 0, 0, "apply", "O-GHOST", "does not exist", "OrderPaid", 0};
    find_ghost(&poison[np++], "order_id");
    poison[np] =
        (poison_t){"unknown refund", "after-sales", 0, 0, "apply", "R-GHOST", "does not exist", "RefundApproved", 0};
    find_ghost(&poison[np++], "refund_id");
    poison[np] = (poison_t){"unknown sku", "skus", 0, 0, "apply", "SKU-GHOST", "does not exist", "StockAdjusted", 0};
    find_ghost(&poison[np++], "sku");

    /* then good events */
    snprintf(path, sizeof(path), "%s/good.jsonl", kit_dir);
    const char *good =
        "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"O-GOOD\",\"user_id\":\"u-good\",\"source\":\"flash_sale\","
        "\"lines\":[{\"sku\":\"SKU-G\",\"quantity\":2,\"unit_price\":150}],\"total_amount\":300,\"currency\":\"CNY\","
        "\"placed_at\":\"2026-01-02T00:00:00Z\"}}\n"
        "{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"O-GOOD\",\"payment_id\":\"pay-good\",\"amount\":300,"
        "\"currency\":\"CNY\",\"paid_at\":\"2026-01-02T00:01:00Z\"}}\n"
        "{\"type\":\"RefundRequested\",\"data\":{\"refund_id\":\"R-GOOD\",\"order_id\":\"O-GOOD\",\"user_id\":\"u-"
        "good\","
        "\"lines\":[],\"amount\":100,\"currency\":\"CNY\",\"reason\":\"r\",\"requested_at\":\"2026-01-02T00:02:00Z\"}}"
        "\n"
        "{\"type\":\"RefundCompleted\",\"data\":{\"refund_id\":\"R-GOOD\",\"order_id\":\"O-GOOD\",\"amount\":100,"
        "\"completed_at\":\"2026-01-02T00:03:00Z\"}}\n"
        "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"SKU-G\",\"platform\":\"shop\",\"title\":\"Good\",\"price\":150,"
        "\"currency\":\"CNY\",\"stock\":9,\"version\":1,\"updated_at\":\"2026-01-02T00:00:00Z\"}}\n"
        "{\"type\":\"StockAdjusted\",\"data\":{\"sku\":\"SKU-G\",\"delta\":-2,\"reason\":\"sold\","
        "\"adjusted_at\":\"2026-01-02T00:04:00Z\"}}\n";
    ol_test_write_file(path, good, strlen(good));
    cr_assert_eq(kit_publish(path), 6);

    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_assert_eq(s.events, np + 6, "projected %lld events, %d records were published", s.events, np + 6);
    cr_assert_eq(s.dlq, np, "%lld records went to the dlq, %d poison ones were published", s.dlq, np);

    /* the good rows are there, nothing of the poison */
    assert_rows(db, "select order_id, status, total_amount, paid_amount, refunded_amount from orderlog.orders",
                "O-GOOD|paid|300|300|100\n", "orders");
    assert_rows(db, "select order_id, line_no, sku, quantity, unit_price from orderlog.order_lines",
                "O-GOOD|1|SKU-G|2|150\n", "order_lines");
    assert_rows(db, "select refund_id, order_id, status, amount from orderlog.refunds", "R-GOOD|O-GOOD|completed|100\n",
                "refunds");
    assert_rows(db, "select sku, stock, version from orderlog.skus", "SKU-G|7|1\n", "skus");
    kit_assert_offsets_at_end(db, kit_group);

    /* the dlq holds exactly the poison records, each naming its origin, stage and error */
    json_t *dead = tail_records("dlq");
    cr_assert_eq(json_array_size(dead), (size_t)np, "the dlq holds %zu records, %d expected", json_array_size(dead),
                 np);
    for (int i = 0; i < np; i++) {
        poison_t *p = &poison[i];
        char full[256];
        kit_topic(p->topic, full, sizeof(full));
        json_t *r = dlq_record(dead, full, p->partition, p->offset);
        cr_assert(r, "%s: no dlq record for %s [%lld] @%lld", p->what, full, p->partition, p->offset);
        json_t *h = json_object_get(r, "headers");
        const char *stage = json_string_value(json_object_get(h, "dlq_stage"));
        const char *error = json_string_value(json_object_get(h, "dlq_error"));
        const char *group = json_string_value(json_object_get(h, "dlq_group"));
        const char *when = json_string_value(json_object_get(h, "dlq_time"));
        cr_assert(stage && !strcmp(stage, p->stage), "%s: dlq_stage %s, expected %s", p->what, stage ? stage : "(none)",
                  p->stage);
        cr_assert(error && strstr(error, p->error1) && strstr(error, p->error2),
                  "%s: dlq_error \"%s\" should name \"%s\" and \"%s\"", p->what, error ? error : "(none)", p->error1,
                  p->error2);
        cr_assert(group && !strcmp(group, kit_group), "%s: dlq_group %s", p->what, group ? group : "(none)");
        cr_assert(when && strlen(when) >= 20 && when[4] == '-' && when[10] == 'T', "%s: dlq_time \"%s\"", p->what,
                  when ? when : "(none)");
        /* the original record, unchanged */
        if (p->type) {
            const char *type = json_string_value(json_object_get(r, "type"));
            cr_assert(type && !strcmp(type, p->type), "%s: the dlq record is a %s, expected the original %s", p->what,
                      type ? type : "(undecodable)", p->type);
        } else {
            cr_assert_eq(json_integer_value(json_object_get(r, "value_bytes")), (json_int_t)p->value_len,
                         "%s: the dlq record has %lld bytes, the original %zu", p->what,
                         (long long)json_integer_value(json_object_get(r, "value_bytes")), p->value_len);
        }
    }
    /* the envelope headers travel with it */
    json_t *r = dlq_record(dead, orders, poison[0].partition, poison[0].offset);
    const char *ce_id = json_string_value(json_object_get(json_object_get(r, "headers"), "ce_id"));
    cr_assert(ce_id && !strcmp(ce_id, "poison-garbage"), "the garbage record lost its ce_id header: %s",
              ce_id ? ce_id : "(none)");
    const char *key = json_string_value(json_object_get(r, "key"));
    cr_assert(key && !strcmp(key, "O-JUNK"), "the garbage record lost its key: %s", key ? key : "(none)");
    json_decref(dead);
}

Test(project, too_many_poison_in_a_row_stops_loudly) {
    const char *db = kit_use_db("maxpoison", "project_maxpoison");
    char orders[256], dlq[256];
    kit_topic("orders", orders, sizeof(orders));
    kit_topic("dlq", dlq, sizeof(dlq));
    const char *const headers[] = {"ce_type", "orderlog.OrderShipped", "ce_id", "junk", NULL};
    for (int i = 0; i < 5; i++) {
        char junk[32];
        snprintf(junk, sizeof(junk), "\x03junk-%d", i);
        ol_test_kafka_produce(orders, -1, "O-JUNK", 6, junk, strlen(junk), headers);
    }
    char *out, *err;
    int rc = kit_project_until_end(db, kit_group, "-X consumer.max.poison=3", &out, &err);
    cr_assert_neq(rc, 0, "project went on after 5 poison records in a row with consumer.max.poison=3\n%s%s", out, err);
    cr_assert(strstr(err, "consumer.max.poison"), "the error does not name consumer.max.poison:\n%s", err);
    /* what it consumed went to the dlq (at least the 3 that stopped it), nothing was lost */
    long long dead = 0;
    for (int p = 0; p < KIT_PARTITIONS; p++)
        dead += ol_test_kafka_end_offset(dlq, p);
    long long stored = kit_offsets_sum(db, kit_group);
    cr_assert(dead >= 3 && dead <= 5, "%lld records in the dlq", dead);
    cr_assert_eq(stored, dead, "offsets stored past %lld records, %lld of them in the dlq", stored, dead);
    cr_assert_eq(ol_test_pg_query_int(db, "select count(*) from orderlog.orders"), 0);
    free(out);
    free(err);
}

/* The limit stops a projector that keeps running at once, not when the next
 * record arrives (none comes here). */
Test(project, too_many_poison_in_a_row_stops_without_waiting_for_more) {
    const char *db = kit_use_db("maxpoisonlive", "project_maxpoisonlive");
    char orders[256];
    kit_topic("orders", orders, sizeof(orders));
    const char *const headers[] = {"ce_type", "orderlog.OrderShipped", "ce_id", "junk", NULL};
    for (int i = 0; i < 3; i++) {
        char junk[32];
        snprintf(junk, sizeof(junk), "\x03junk-%d", i);
        ol_test_kafka_produce(orders, -1, "O-JUNK", 6, junk, strlen(junk), headers);
    }
    ol_test_bg_t *bg = kit_project_bg(db, kit_group, "-X consumer.max.poison=3");
    int rc = ol_test_bg_wait(bg, 60000);
    cr_assert(rc > 0 && rc < 128, "project did not stop on its own after 3 poison records (exit %d)\n%s", rc,
              ol_test_bg_stderr(bg));
    cr_assert(strstr(ol_test_bg_stderr(bg), "consumer.max.poison"), "%s", ol_test_bg_stderr(bg));
}

/* Static membership (consumer.instance): killed and restarted, a projector
 * takes its partitions back at once (not after the 10 s session timeout);
 * a second process with the same name fences the first, which exits
 * non-zero saying why instead of sitting idle. */
Test(project, a_static_member_comes_back_at_once_and_a_duplicate_is_fenced_loudly) {
    const char *db = kit_use_db("static", "project_static");
    ol_test_bg_t *a = kit_project_bg(db, kit_group, "-X consumer.instance=a");
    cr_assert(ol_test_bg_wait_stderr(a, "\"assigned ", 1, 60000) >= 1, "%s", ol_test_bg_stderr(a));
    ol_test_bg_signal(a, SIGKILL);
    cr_assert_eq(ol_test_bg_wait(a, 10000), 128 + SIGKILL);
    kit_bg_free(a);
    long long t0 = ol_test_now_ms();
    ol_test_bg_t *b = kit_project_bg(db, kit_group, "-X consumer.instance=a");
    cr_assert(ol_test_bg_wait_stderr(b, "\"assigned ", 1, 60000) >= 1, "%s", ol_test_bg_stderr(b));
    long long took = ol_test_now_ms() - t0;
    cr_expect_lt(took, 8000, "the restarted member waited %lld ms for its partitions", took);
    ol_test_bg_t *c = kit_project_bg(db, kit_group, "-X consumer.instance=a");
    int rc = ol_test_bg_wait(b, 60000);
    cr_expect(rc > 0 && rc < 128, "the fenced member did not exit non-zero (%d)\n%s", rc, ol_test_bg_stderr(b));
    cr_expect(strstr(ol_test_bg_stderr(b), "failed for good"), "%s", ol_test_bg_stderr(b));
    ol_test_bg_signal(c, SIGTERM);
    ol_test_bg_wait(c, 40000);
}

Test(project, sigterm_drains_and_exits_0) {
    const char *db = kit_use_db("sigterm", "project_sigterm");
    long long published;
    kit_totals_t model = kit_publish_load(&published, 50000, 3, 200, 10000, 3);

    /* as soon as a batch is in: SIGTERM mid-stream */
    long long progress;
    ol_test_bg_t *bg = kit_project_started(&progress, db, "-X consumer.batch.events=1000");
    long long t0 = ol_test_now_ms();
    ol_test_bg_signal(bg, SIGTERM);
    int rc = ol_test_bg_wait(bg, 40000);
    long long took = ol_test_now_ms() - t0;
    cr_assert_eq(rc, 0, "exit %d after SIGTERM\nstdout:\n%s\nstderr:\n%s", rc, ol_test_bg_stdout(bg),
                 ol_test_bg_stderr(bg));
    cr_assert(took < 30000, "SIGTERM took %lld ms to stop it", took);
    kit_summary_t first = kit_summary(ol_test_bg_stdout(bg));
    long long stored = kit_offsets_sum(db, kit_group);
    cr_assert_eq(stored, first.events, "it says it projected %lld events, the stored offsets cover %lld", first.events,
                 stored);
    cr_assert(first.events < published, "SIGTERM came after the end (%lld of %lld): no drain was tested", first.events,
              published);
    kit_bg_free(bg);

    kit_summary_t second = kit_project_all(db, kit_group, "-X consumer.batch.events=1000");
    cr_assert_eq(first.events + second.events, published, "%lld + %lld events projected, %lld published", first.events,
                 second.events, published);
    cr_assert_eq(first.dlq + second.dlq, 0);
    kit_assert_totals(db, &model, "after SIGTERM and a restart");
    kit_assert_offsets_at_end(db, kit_group);
}

/* Writes text to <dir>/<name> and publishes it; the count. */
static long long publish_text(const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", kit_dir, name);
    ol_test_write_file(path, text, strlen(text));
    return kit_publish(path);
}

/* refunded_amount follows a refund that a newer AfterSaleSynced moves to
 * another order: the first order no longer counts it. Two runs, so that the
 * move comes in a batch of its own, as it would in production. */
Test(project, refund_moved_to_another_order_leaves_the_first_one) {
    const char *db = kit_use_db("refundmove", "project_refundmove");
    publish_text("first.jsonl",
                 "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"O-A\",\"user_id\":\"u\",\"source\":"
                 "\"flash_sale\",\"lines\":[],\"total_amount\":500,\"currency\":\"CNY\",\"placed_at\":"
                 "\"2026-06-01T00:00:00Z\"}}\n"
                 "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"O-B\",\"user_id\":\"u\",\"source\":"
                 "\"flash_sale\",\"lines\":[],\"total_amount\":500,\"currency\":\"CNY\",\"placed_at\":"
                 "\"2026-06-01T00:00:00Z\"}}\n"
                 "{\"type\":\"AfterSaleSynced\",\"data\":{\"refund_id\":\"R-MOVE\",\"order_id\":\"O-A\","
                 "\"platform\":\"tmall\",\"status\":\"completed\",\"lines\":[],\"amount\":100,\"currency\":"
                 "\"CNY\",\"version\":1,\"updated_at\":\"2026-06-02T00:00:00Z\"}}\n");
    kit_project_all(db, kit_group, NULL);
    assert_rows(db, "select order_id, refunded_amount from orderlog.orders order by order_id", "O-A|100\nO-B|0\n",
                "before the move");
    publish_text("second.jsonl",
                 "{\"type\":\"AfterSaleSynced\",\"data\":{\"refund_id\":\"R-MOVE\",\"order_id\":\"O-B\","
                 "\"platform\":\"tmall\",\"status\":\"completed\",\"lines\":[],\"amount\":100,\"currency\":"
                 "\"CNY\",\"version\":2,\"updated_at\":\"2026-06-03T00:00:00Z\"}}\n");
    kit_project_all(db, kit_group, NULL);
    assert_rows(db, "select refund_id, order_id, status, amount from orderlog.refunds", "R-MOVE|O-B|completed|100\n",
                "refunds");
    assert_rows(db, "select order_id, refunded_amount from orderlog.orders order by order_id", "O-A|0\nO-B|100\n",
                "after the move");
    kit_assert_offsets_at_end(db, kit_group);
}

/* A record that passes the schema but that PostgreSQL refuses (RFC 3339
 * allows the year 0000, PostgreSQL's timestamptz has no year 0) can never be
 * applied either: it belongs in the dlq, and the records after it must
 * still be projected, not stop the projector on every start. */
/* PostgreSQL has no year 0000: publish refuses such a time, and a record
 * written by another tool goes to the dlq instead of stopping the projector. */
Test(project, a_time_postgresql_cannot_store_goes_to_the_dlq) {
    const char *db = kit_use_db("pgrefuses", "project_pgrefuses");
    static const char year0[] = "{\"order_id\":\"O-Y0\",\"user_id\":\"u\",\"source\":\"flash_sale\",\"lines\":[],"
                                "\"total_amount\":500,\"currency\":\"CNY\",\"placed_at\":\"0000-06-01T00:00:00Z\"}";
    char topic[256];
    kit_topic("orders", topic, sizeof(topic));
    const char *headers[] = {"ce_type",      "orderlog.OrderPlaced", "ce_id", "y0",
                             "content-type", "application/json",     NULL};
    ol_test_kafka_produce(topic, -1, "O-Y0", 4, year0, strlen(year0), headers);
    publish_text("year1.jsonl", "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"O-Y1\",\"user_id\":\"u\","
                                "\"source\":\"flash_sale\",\"lines\":[],\"total_amount\":700,\"currency\":\"CNY\","
                                "\"placed_at\":\"2026-06-01T00:00:00Z\"}}\n");
    char *out, *err;
    int rc = kit_project_until_end(db, kit_group, NULL, &out, &err);
    cr_assert_eq(rc, 0, "project stopped on a record it can never apply: exit %d\n%s%s", rc, out, err);
    kit_summary_t s = kit_summary(out);
    cr_assert_eq(s.dlq, 1);
    assert_rows(db, "select order_id, total_amount from orderlog.orders", "O-Y1|700\n", "orders");
    cr_assert_eq(kit_dlq_count(), 1);
    kit_assert_offsets_at_end(db, kit_group);
    free(out);
    free(err);
    /* publish itself refuses the time, naming the field */
    rc = ol_test_runf(&out, &err,
                      "printf '%%s\\n' '{\"type\":\"OrderPlaced\",\"data\":%s}' | %s publish -X topic.prefix=%s", year0,
                      ol_test_bin(), kit_prefix);
    cr_expect_eq(rc, 1);
    cr_expect(strstr(err, "line 1: field \"placed_at\""), "%s", err);
    free(out);
    free(err);
}

/* No connection slot when the projector starts (a role at its connection
 * limit says "too many connections", as a full server says "too many
 * clients"): it waits, says so, and projects once a slot is free. The role
 * is a member of the tables' owner but no superuser (the limit does not
 * hold for superusers). */
Test(project, waits_for_a_connection_slot_at_start) {
    const char *db = kit_use_db("slots", "project_slots");
    char path[1024];
    snprintf(path, sizeof(path), "%s", kit_sample_orders(2000, 3, "orders.jsonl"));
    long long published = kit_publish(path);
    char role[64], sql[512], ci[1024];
    snprintf(role, sizeof(role), "it_slots_%ld", (long)getpid());
    char *owner = ol_test_pg_query_str(db, "select current_user");
    snprintf(sql, sizeof(sql), "drop role if exists %s; create role %s login connection limit 0 in role %s", role, role,
             owner);
    free(owner);
    ol_test_pg_exec(db, sql);
    const char *user = strstr(db, "user=");
    cr_assert(user, "no user= in %s", db);
    snprintf(ci, sizeof(ci), "%.*suser=%s%s", (int)(user - db), db, role, user + strcspn(user, " "));
    ol_test_bg_t *bg = kit_project_bg(ci, kit_group, NULL);
    cr_assert_eq(ol_test_bg_wait_stderr(bg, "waiting for PostgreSQL", 1, 30000), 1, "%s", ol_test_bg_stderr(bg));
    cr_expect(strstr(ol_test_bg_stderr(bg), "too many connections"), "%s", ol_test_bg_stderr(bg));
    cr_assert_eq(ol_test_bg_wait(bg, 2000), -1, "project exited\n%s", ol_test_bg_stderr(bg));
    snprintf(sql, sizeof(sql), "alter role %s connection limit -1", role);
    ol_test_pg_exec(db, sql);
    long long stored = kit_wait_offsets(db, kit_group, published, 120000, bg);
    cr_assert_eq(stored, published, "%lld of %lld stored\n%s", stored, published, ol_test_bg_stderr(bg));
    ol_test_bg_signal(bg, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(bg, 40000), 0, "%s", ol_test_bg_stderr(bg));
    kit_bg_free(bg);
    ol_test_pg_drop_db(db);
    snprintf(sql, sizeof(sql), "drop role if exists %s", role);
    ol_test_pg_exec(ol_test_pg_conninfo(), sql);
}

#endif /* OL_PROJECT_KIT_ONLY */
