/* orderlog status: how far each consumer group is behind, and the dlq.
 *
 * The stored offsets come from <projection.schema>.consumer_offsets (the
 * offsets the runtime writes with the rows, so they are what has really
 * been applied), the end offsets from Kafka (high watermarks). For a
 * partition that lags, the age of its first unconsumed record is read with
 * a short-lived consumer: assign at the stored offset, poll one record.
 * Every Kafka step shares one deadline, broker.wait.ms from the start; a
 * record that does not arrive in time leaves its lag in seconds unknown.
 *
 * A partition of a topic the group has rows for, but no row of its own, is
 * listed too (stored offset none: the group would start at its beginning).
 * A topic the group never applied a record of has no row and is not seen.
 *
 * The groups that commit to Kafka (decide, in its transactions, and guard)
 * are listed with their committed offsets (ListConsumerGroupOffsets).
 *
 * A partition written in transactions ends with a commit marker, which is
 * not a record: a reader that applied everything stores the offset before
 * it. The first-record read (read_committed, partition EOF on) tells: when
 * it reaches the end without a record, nothing is left and the lag is 0.
 *
 * The dlq is read through (read_committed, up to the last stable offset)
 * and its records counted as `orderlog dlq count` counts them
 * (ol_dlq_tally): dead letters, replayed or pending, and replay markers.
 *
 * The roles of status.endpoints are asked for /healthz and /readyz on
 * threads of their own (common/base/health.h) while PostgreSQL and Kafka are
 * read; their answers only show: status exits 0 whatever they say, as it
 * does whatever the lag and the dlq. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/base/arena.h"
#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/dlq.h"
#include "common/base/health.h"
#include "common/base/json.h"
#include "common/base/kafka.h"
#include "common/base/pg.h"
#include "common/base/time.h"
#include "common/base/util.h"

#define NO_OFFSET (-1)

/* One partition of one group; strings live in the run's arena. */
typedef struct part_s {
    const char *group, *topic;
    int32_t partition;
    int64_t stored;        /* next offset stored in PostgreSQL, NO_OFFSET when no row */
    const char *stored_at; /* updated_at of the row, NULL when no row */
    int64_t low, high;     /* watermarks, NO_OFFSET when unknown */
    const char *error;     /* why the watermarks are unknown, NULL otherwise */
    int64_t lag;           /* records; 0 when unknown */
    bool in_kafka;         /* offsets committed to Kafka (decide, guard), not stored in PostgreSQL */
    int64_t first_ts;      /* timestamp (ms) of the first unconsumed record, -1 unknown */
    double lag_s;          /* seconds; -1 unknown */
} part_t;

typedef struct status_s {
    const ol_conf_t *conf;
    ol_arena_t *arena;
    part_t *parts;
    size_t nparts, cap;
    rd_kafka_t *rk;
    const struct rd_kafka_metadata *md;
    int64_t deadline_us; /* of every Kafka step */
    int64_t now_ms;      /* the time the lags are measured at */
    char dlq_topic[256];
    ol_dlq_tally_t dlq;
    bool dlq_known;
    const char *dlq_error; /* why the dlq is not counted (arena), NULL otherwise */
    ol_health_endpoint_t *roles;
    size_t nroles;
    int role_timeout_ms;
} status_t;

static part_t *part_add(status_t *st) {
    if (st->nparts == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 64;
        st->parts = ol_xrealloc(st->parts, st->cap * sizeof(*st->parts));
    }
    part_t *p = &st->parts[st->nparts++];
    memset(p, 0, sizeof(*p));
    p->stored = p->low = p->high = NO_OFFSET;
    p->first_ts = -1;
    p->lag_s = -1;
    return p;
}

static int part_cmp(const void *a, const void *b) {
    const part_t *x = a, *y = b;
    int c = strcmp(x->group, y->group);
    if (!c)
        c = strcmp(x->topic, y->topic);
    return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

/* Milliseconds left before the deadline (at least 1: librdkafka reads 0 as
 * "do not wait", which would fail a call the broker answers at once). */
static int left_ms(const status_t *st) {
    int64_t ms = (st->deadline_us - ol_time_mono_us()) / 1000;
    return ms < 1 ? 1 : ms > 3600000 ? 3600000 : (int)ms;
}

/* ---- PostgreSQL --------------------------------------------------------- */

static ol_err_t load_offsets(status_t *st, char *errstr, size_t errstr_size) {
    const char *schema = ol_conf_str(st->conf, "projection.schema");
    PGconn *conn = ol_pg_connect(st->conf, errstr, errstr_size);
    if (!conn)
        return OL_ERR_UNREACHABLE;
    PGresult *res = NULL;
    const char *params[] = {schema};
    ol_err_t err = ol_pg_query(&res, conn, "select to_regclass(format('%I.consumer_offsets', $1::text)) is not null", 1,
                               params, errstr, errstr_size);
    if (err)
        goto out;
    if (strcmp(PQgetvalue(res, 0, 0), "t")) {
        err = ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND,
                      "no table %s.consumer_offsets in database \"%s\": the schema is not migrated (run `orderlog "
                      "migrate`, or check projection.schema)",
                      schema, PQdb(conn));
        goto out;
    }
    PQclear(res);
    res = NULL;
    char *ident = PQescapeIdentifier(conn, schema, strlen(schema));
    char *sql = ol_arena_sprintf(st->arena,
                                 "select group_id, topic, partition, next_offset, "
                                 "to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
                                 "from %s.consumer_offsets order by 1, 2, 3",
                                 ident);
    PQfreemem(ident);
    if ((err = ol_pg_query(&res, conn, sql, 0, NULL, errstr, errstr_size))) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%.400s", errstr);
        err = ol_errf(errstr, errstr_size, err, "could not read %s.consumer_offsets: %s", schema, msg);
        goto out;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        part_t *p = part_add(st);
        p->group = ol_arena_strndup(st->arena, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
        p->topic = ol_arena_strndup(st->arena, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        p->partition = (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10);
        p->stored = strtoll(PQgetvalue(res, i, 3), NULL, 10);
        p->stored_at = ol_arena_strndup(st->arena, PQgetvalue(res, i, 4), (size_t)PQgetlength(res, i, 4));
    }
out:
    PQclear(res);
    PQfinish(conn);
    return err;
}

/* ---- Kafka --------------------------------------------------------------- */

static const rd_kafka_metadata_topic_t *md_topic(const status_t *st, const char *name) {
    for (int i = 0; i < st->md->topic_cnt; i++)
        if (!strcmp(st->md->topics[i].topic, name) && !st->md->topics[i].err)
            return &st->md->topics[i];
    return NULL;
}

static bool has_part(const status_t *st, size_t end, const char *group, const char *topic, int32_t partition) {
    for (size_t i = 0; i < end; i++)
        if (st->parts[i].partition == partition && !strcmp(st->parts[i].group, group) &&
            !strcmp(st->parts[i].topic, topic))
            return true;
    return false;
}

/* Adds the partitions of every (group, topic) seen that have no row. */
static void add_missing_partitions(status_t *st) {
    size_t n = st->nparts;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && !strcmp(st->parts[i].group, st->parts[i - 1].group) &&
            !strcmp(st->parts[i].topic, st->parts[i - 1].topic))
            continue; /* rows are sorted: one look per (group, topic) */
        const rd_kafka_metadata_topic_t *t = md_topic(st, st->parts[i].topic);
        for (int k = 0; t && k < t->partition_cnt; k++) {
            if (has_part(st, n, st->parts[i].group, st->parts[i].topic, t->partitions[k].id))
                continue;
            const char *group = st->parts[i].group, *topic = st->parts[i].topic; /* before part_add moves parts */
            part_t *p = part_add(st);
            p->group = group;
            p->topic = topic;
            p->partition = t->partitions[k].id;
        }
    }
    if (st->nparts) /* qsort wants an array, even of nothing */
        qsort(st->parts, st->nparts, sizeof(*st->parts), part_cmp);
}

/* Watermarks of one partition; an error string (arena) or NULL. */
static const char *watermarks(status_t *st, const char *topic, int32_t partition, int64_t *low, int64_t *high) {
    const rd_kafka_metadata_topic_t *t = md_topic(st, topic);
    if (!t)
        return "topic does not exist";
    int k;
    for (k = 0; k < t->partition_cnt && t->partitions[k].id != partition; k++)
        ;
    if (k == t->partition_cnt)
        return "partition does not exist";
    rd_kafka_resp_err_t kerr = rd_kafka_query_watermark_offsets(st->rk, topic, partition, low, high, left_ms(st));
    if (kerr)
        return ol_arena_sprintf(st->arena, "could not read its offsets: %s", rd_kafka_err2str(kerr));
    return NULL;
}

static ol_err_t query_watermarks(status_t *st, char *errstr, size_t errstr_size) {
    for (size_t i = 0; i < st->nparts; i++) {
        part_t *p = &st->parts[i];
        p->error = watermarks(st, p->topic, p->partition, &p->low, &p->high);
        if (p->error) {
            p->low = p->high = NO_OFFSET;
            if (ol_time_mono_us() >= st->deadline_us)
                return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE,
                               "Kafka at %s did not give the end offset of %s[%d] within broker.wait.ms (%lld ms)",
                               ol_conf_str(st->conf, "kafka.bootstrap.servers"), p->topic, (int)p->partition,
                               (long long)ol_conf_int(st->conf, "broker.wait.ms"));
            continue;
        }
        /* no row: the group would start at the beginning of the partition */
        p->lag = p->high - (p->stored == NO_OFFSET ? p->low : p->stored);
        if (p->lag <= 0)
            p->lag_s = 0;
    }
    return OL_ERR_OK;
}

/* Counts the dlq's records: only the partitions holding any are read. */
static ol_err_t count_dlq(status_t *st, char *errstr, size_t errstr_size) {
    char e[512];
    const rd_kafka_metadata_topic_t *t = md_topic(st, st->dlq_topic);
    if (!t) {
        st->dlq_error = "topic does not exist";
        return OL_ERR_OK;
    }
    ol_dlq_range_t *ranges = ol_arena_alloc(st->arena, (size_t)t->partition_cnt * sizeof(*ranges) + 1);
    int nranges = 0;
    for (int k = 0; k < t->partition_cnt; k++) {
        int64_t low, high;
        const char *why = watermarks(st, st->dlq_topic, t->partitions[k].id, &low, &high);
        if (why) {
            st->dlq_error = why;
            if (ol_time_mono_us() >= st->deadline_us)
                return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE,
                               "Kafka at %s did not give the offsets of %s within broker.wait.ms (%lld ms)",
                               ol_conf_str(st->conf, "kafka.bootstrap.servers"), st->dlq_topic,
                               (long long)ol_conf_int(st->conf, "broker.wait.ms"));
            return OL_ERR_OK;
        }
        if (high > low)
            ranges[nranges++] = (ol_dlq_range_t){t->partitions[k].id, RD_KAFKA_OFFSET_BEGINNING, -1};
    }
    /* the topic's leaders known before the assign: otherwise the reader
     * waits for its offset query timer (500 ms) to learn them */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(st->rk, st->dlq_topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (nranges && !rd_kafka_metadata(st->rk, 0, rkt, &md, left_ms(st)))
        rd_kafka_metadata_destroy(md);
    if (ol_dlq_tally(st->rk, st->dlq_topic, ranges, nranges, left_ms(st), &st->dlq, e, sizeof(e)))
        st->dlq_error = ol_arena_strndup(st->arena, e, strlen(e));
    else
        st->dlq_known = true;
    rd_kafka_topic_destroy(rkt);
    return OL_ERR_OK;
}

/* The part of parts[from, to) after prev (NULL: from the first) still
 * waiting for the first record of rkm's partition; NULL when none is. */
static part_t *next_waiting(status_t *st, const part_t *prev, size_t from, size_t to, const rd_kafka_message_t *rkm) {
    const char *topic = rd_kafka_topic_name(rkm->rkt);
    for (size_t i = prev ? (size_t)(prev - st->parts) + 1 : from; i < to; i++) {
        part_t *p = &st->parts[i];
        if (p->partition == rkm->partition && p->first_ts < 0 && !p->error && p->lag > 0 && !strcmp(p->topic, topic))
            return p;
    }
    return NULL;
}

/* The timestamp of the first unconsumed record of every lagging partition
 * of parts[from, to) (one group: a partition appears once). */
static void fetch_first_records(status_t *st, size_t from, size_t to) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)(to - from));
    int wanted = 0;
    for (size_t i = from; i < to; i++) {
        part_t *p = &st->parts[i];
        if (p->error || p->lag <= 0)
            continue;
        rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset =
            p->stored == NO_OFFSET ? RD_KAFKA_OFFSET_BEGINNING : p->stored;
        wanted++;
    }
    if (!wanted || ol_kafka_assign(st->rk, list)) {
        rd_kafka_topic_partition_list_destroy(list);
        return;
    }
    while (wanted > 0 && ol_time_mono_us() < st->deadline_us) {
        int wait = left_ms(st);
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(st->rk, wait > 100 ? 100 : wait);
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* the end without a record: what is left are transaction
             * markers (or aborted records), nothing to apply */
            for (part_t *p = NULL; (p = next_waiting(st, p, from, to, rkm));) {
                p->lag = 0;
                p->lag_s = 0;
                wanted--;
            }
        } else if (!rkm->err) {
            for (part_t *p = NULL; (p = next_waiting(st, p, from, to, rkm));) {
                rd_kafka_timestamp_type_t tstype;
                int64_t ts = rd_kafka_message_timestamp(rkm, &tstype);
                p->first_ts = ts >= 0 ? ts : 0;
                if (ts >= 0)
                    p->lag_s = ts < st->now_ms ? (double)(st->now_ms - ts) / 1000.0 : 0.0;
                wanted--;
            }
        }
        rd_kafka_message_destroy(rkm);
    }
    ol_kafka_assign(st->rk, NULL);
    rd_kafka_topic_partition_list_destroy(list);
}

/* The committed offsets of the groups that commit to Kafka; a group that
 * never committed is left out. */
static void load_kafka_groups(status_t *st) {
    static const char *const roles[] = {"decide", "guard"};
    for (size_t r = 0; r < sizeof(roles) / sizeof(roles[0]); r++) {
        char group[300];
        snprintf(group, sizeof(group), "%s%s", ol_conf_str(st->conf, "topic.prefix"), roles[r]);
        rd_kafka_ListConsumerGroupOffsets_t *req = rd_kafka_ListConsumerGroupOffsets_new(group, NULL);
        rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(st->rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
        rd_kafka_AdminOptions_set_request_timeout(opts, left_ms(st), NULL, 0);
        rd_kafka_error_t *e = rd_kafka_AdminOptions_set_require_stable_offsets(opts, 1);
        if (e)
            rd_kafka_error_destroy(e);
        rd_kafka_queue_t *q = rd_kafka_queue_new(st->rk);
        rd_kafka_ListConsumerGroupOffsets(st->rk, &req, 1, opts, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, left_ms(st));
        if (ev && !rd_kafka_event_error(ev)) {
            size_t n;
            const rd_kafka_group_result_t **res =
                rd_kafka_ListConsumerGroupOffsets_result_groups(rd_kafka_event_ListConsumerGroupOffsets_result(ev), &n);
            const rd_kafka_topic_partition_list_t *parts =
                n == 1 && !rd_kafka_group_result_error(res[0]) ? rd_kafka_group_result_partitions(res[0]) : NULL;
            for (int i = 0; parts && i < parts->cnt; i++) {
                if (parts->elems[i].offset < 0)
                    continue;
                part_t *p = part_add(st);
                p->group = ol_arena_strndup(st->arena, group, strlen(group));
                p->topic = ol_arena_strndup(st->arena, parts->elems[i].topic, strlen(parts->elems[i].topic));
                p->partition = parts->elems[i].partition;
                p->stored = parts->elems[i].offset;
                p->in_kafka = true;
            }
        }
        if (ev)
            rd_kafka_event_destroy(ev);
        rd_kafka_queue_destroy(q);
        rd_kafka_AdminOptions_destroy(opts);
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
    }
    if (st->nparts) /* qsort wants an array, even of nothing */
        qsort(st->parts, st->nparts, sizeof(*st->parts), part_cmp);
}

static ol_err_t kafka_status(status_t *st, char *errstr, size_t errstr_size) {
    /* status says what went wrong itself: librdkafka's own log stays quiet
     * unless kafka.log_level asks for it */
    /* clang-format off */
    const char *tuning[] = {
        "group.id", "orderlog-status", "fetch.wait.max.ms", "10",
        "log_level", "0", "fetch.max.bytes", "1048576", "queued.max.messages.kbytes", "1024",
        NULL};
    /* clang-format on */
    if (!(st->rk = ol_kafka_new(st->conf, OL_KAFKA_READER, "orderlog-status", tuning, errstr, errstr_size)))
        return OL_ERR_CONFIG;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(st->rk, 1, NULL, &st->md, left_ms(st));
    if (kerr) {
        st->md = NULL;
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE,
                       "could not reach Kafka at %s within broker.wait.ms (%lld ms): %s (is the broker running? "
                       "`ops/stack start`)",
                       ol_conf_str(st->conf, "kafka.bootstrap.servers"),
                       (long long)ol_conf_int(st->conf, "broker.wait.ms"), rd_kafka_err2str(kerr));
    }
    load_kafka_groups(st);
    add_missing_partitions(st);
    st->now_ms = ol_time_now_ms();
    ol_err_t err = query_watermarks(st, errstr, errstr_size);
    if (err)
        return err;
    for (size_t from = 0; from < st->nparts;) {
        size_t to = from + 1;
        while (to < st->nparts && !strcmp(st->parts[to].group, st->parts[from].group))
            to++;
        fetch_first_records(st, from, to);
        from = to;
    }
    return count_dlq(st, errstr, errstr_size);
}

/* ---- output ------------------------------------------------------------- */

static json_t *offset_json(int64_t v) {
    return v == NO_OFFSET ? json_null() : json_integer((json_int_t)v);
}

static json_t *seconds_json(double s) {
    return s < 0 ? json_null() : json_real((double)(int64_t)(s * 1000.0 + 0.5) / 1000.0);
}

static json_t *count_json(const status_t *st, long long n) {
    return st->dlq_known ? json_integer((json_int_t)n) : json_null();
}

static json_t *answer_json(const ol_health_answer_t *a) {
    json_t *o = json_object();
    json_object_set_new(o, "state", json_string(ol_health_state_name(a->state)));
    json_object_set_new(o, "http_status", a->http_status ? json_integer(a->http_status) : json_null());
    json_object_set_new(o, "reason", *a->reason ? ol_json_bytes(a->reason, strlen(a->reason)) : json_null());
    json_object_set_new(o, "ms", json_integer((json_int_t)a->took_ms));
    return o;
}

/* The totals of the group of parts[from]: its parts end at to; lag in
 * records of the lagging partitions, in seconds the largest (-1 when a
 * lagging partition's is unknown); unknown: the partitions with an error. */
typedef struct group_total_s {
    size_t to, unknown;
    int64_t lag;
    double lag_s;
} group_total_t;

static group_total_t group_total(const status_t *st, size_t from) {
    group_total_t t = {.to = from};
    bool known = true;
    for (; t.to < st->nparts && !strcmp(st->parts[t.to].group, st->parts[from].group); t.to++) {
        const part_t *p = &st->parts[t.to];
        t.unknown += p->error != NULL;
        if (p->lag > 0)
            t.lag += p->lag;
        if (p->lag_s > t.lag_s)
            t.lag_s = p->lag_s;
        if (p->lag > 0 && p->lag_s < 0)
            known = false;
    }
    if (!known)
        t.lag_s = -1;
    return t;
}

static void print_json(const status_t *st) {
    char ts[40];
    json_t *root = json_object(), *groups = json_object();
    ol_time_format(st->now_ms, ts, sizeof(ts));
    json_object_set_new(root, "time", json_string(ts));
    json_object_set_new(root, "schema", json_string(ol_conf_str(st->conf, "projection.schema")));
    for (size_t from = 0; from < st->nparts;) {
        json_t *parts = json_array();
        group_total_t t = group_total(st, from);
        for (size_t i = from; i < t.to; i++) {
            const part_t *p = &st->parts[i];
            json_t *o = json_object();
            json_object_set_new(o, "topic", json_string(p->topic));
            json_object_set_new(o, "partition", json_integer(p->partition));
            json_object_set_new(o, "stored_offset", offset_json(p->stored));
            json_object_set_new(o, "stored_at", p->stored_at ? json_string(p->stored_at) : json_null());
            json_object_set_new(o, "stored_in", json_string(p->in_kafka ? "kafka" : "postgresql"));
            json_object_set_new(o, "start_offset", offset_json(p->low));
            json_object_set_new(o, "end_offset", offset_json(p->high));
            json_object_set_new(o, "lag", p->error ? json_null() : json_integer((json_int_t)p->lag));
            json_object_set_new(o, "lag_seconds", seconds_json(p->lag_s));
            if (p->error)
                json_object_set_new(o, "error", json_string(p->error));
            json_array_append_new(parts, o);
        }
        json_t *g = json_object();
        json_object_set_new(g, "lag", json_integer((json_int_t)t.lag));
        json_object_set_new(g, "unknown_partitions", json_integer((json_int_t)t.unknown));
        json_object_set_new(g, "lag_seconds", seconds_json(t.lag_s));
        json_object_set_new(g, "partitions", parts);
        json_object_set_new(groups, st->parts[from].group, g);
        from = t.to;
    }
    json_object_set_new(root, "groups", groups);
    json_t *dlq = json_object();
    json_object_set_new(dlq, "topic", json_string(st->dlq_topic));
    json_object_set_new(dlq, "dead_letters", count_json(st, st->dlq.dead_letters));
    json_object_set_new(dlq, "replayed", count_json(st, st->dlq.replayed));
    json_object_set_new(dlq, "pending", count_json(st, st->dlq.dead_letters - st->dlq.replayed));
    json_object_set_new(dlq, "markers", count_json(st, st->dlq.markers));
    if (st->dlq_error)
        json_object_set_new(dlq, "error", json_string(st->dlq_error));
    json_object_set_new(root, "dlq", dlq);
    json_t *roles = json_array();
    for (size_t i = 0; i < st->nroles; i++) {
        const ol_health_endpoint_t *ep = &st->roles[i];
        json_t *o = json_object();
        json_object_set_new(o, "name", *ep->name ? json_string(ep->name) : json_null());
        json_object_set_new(o, "address", json_string(ep->address));
        json_object_set_new(o, "healthz", answer_json(&ep->healthz));
        json_object_set_new(o, "readyz", answer_json(&ep->readyz));
        json_array_append_new(roles, o);
    }
    json_object_set_new(root, "roles", roles);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    if (text)
        puts(text);
    free(text);
    json_decref(root);
}

static void fmt_offset(int64_t v, char *out, size_t size) {
    if (v == NO_OFFSET)
        snprintf(out, size, "-");
    else
        snprintf(out, size, "%lld", (long long)v);
}

static void fmt_seconds(double s, char *out, size_t size) {
    if (s < 0)
        snprintf(out, size, "?");
    else
        snprintf(out, size, "%.1f", s);
}

/* An answer in a cell: "ok", "503 <reason>", "unreachable: <why>", ... */
static void fmt_answer(const ol_health_answer_t *a, char *out, size_t size) {
    switch (a->state) {
    case OL_HEALTH_OK:
        snprintf(out, size, "ok");
        break;
    case OL_HEALTH_UNAVAILABLE:
        snprintf(out, size, "%d %s", a->http_status, a->reason);
        break;
    case OL_HEALTH_TIMEOUT:
        snprintf(out, size, "timed out: %s", a->reason);
        break;
    default:
        snprintf(out, size, "%s: %s", ol_health_state_name(a->state), a->reason);
        break;
    }
}

static void print_roles(const status_t *st) {
    if (!st->nroles) {
        printf("\nroles: none asked (status.endpoints lists the /healthz and /readyz addresses of the roles)\n");
        return;
    }
    char cell[700];
    int wname = (int)strlen("name"), waddr = (int)strlen("address"), wh = (int)strlen("healthz");
    size_t healthy = 0, ready = 0;
    for (size_t i = 0; i < st->nroles; i++) {
        const ol_health_endpoint_t *ep = &st->roles[i];
        int n = (int)strlen(*ep->name ? ep->name : "-");
        wname = n > wname ? n : wname;
        n = (int)strlen(ep->address);
        waddr = n > waddr ? n : waddr;
        fmt_answer(&ep->healthz, cell, sizeof(cell));
        n = (int)strlen(cell);
        wh = n > wh ? n : wh;
        healthy += ep->healthz.state == OL_HEALTH_OK;
        ready += ep->readyz.state == OL_HEALTH_OK;
    }
    printf("\nroles (status.endpoints: GET /healthz and /readyz, %d ms each)\n", st->role_timeout_ms);
    printf("  %-*s %-*s  %-*s  %s\n", wname, "name", waddr, "address", wh, "healthz", "readyz");
    for (size_t i = 0; i < st->nroles; i++) {
        const ol_health_endpoint_t *ep = &st->roles[i];
        printf("  %-*s %-*s  ", wname, *ep->name ? ep->name : "-", waddr, ep->address);
        fmt_answer(&ep->healthz, cell, sizeof(cell));
        printf("%-*s  ", wh, cell);
        fmt_answer(&ep->readyz, cell, sizeof(cell));
        printf("%s\n", cell);
    }
    if (healthy == st->nroles && ready == st->nroles)
        printf("  all %zu healthy and ready\n", st->nroles);
    else
        printf("  NOT ALL WELL: %zu of %zu healthy, %zu of %zu ready\n", healthy, st->nroles, ready, st->nroles);
}

static void print_table(const status_t *st) {
    char ts[40], a[32], b[32], c[32], d[32];
    ol_time_format(st->now_ms, ts, sizeof(ts));
    printf("consumer groups at %s (offsets stored in %s.consumer_offsets, or committed in Kafka)\n", ts,
           ol_conf_str(st->conf, "projection.schema"));
    if (!st->nparts)
        printf("\n  (none: no consumer has applied a batch yet)\n");
    size_t width = strlen("total");
    for (size_t i = 0; i < st->nparts; i++)
        if (strlen(st->parts[i].topic) + 6 > width)
            width = strlen(st->parts[i].topic) + 6;
    for (size_t from = 0; from < st->nparts;) {
        printf("\ngroup %s\n", st->parts[from].group);
        printf("  %-*s %12s %12s %10s %9s  %s\n", (int)width, "partition", "stored", "end", "lag", "lag (s)",
               "stored at");
        group_total_t t = group_total(st, from);
        for (size_t i = from; i < t.to; i++) {
            const part_t *p = &st->parts[i];
            char name[300];
            snprintf(name, sizeof(name), "%s[%d]", p->topic, (int)p->partition);
            fmt_offset(p->stored, a, sizeof(a));
            fmt_offset(p->high, b, sizeof(b));
            if (p->error)
                snprintf(c, sizeof(c), "?");
            else
                snprintf(c, sizeof(c), "%lld", (long long)p->lag);
            fmt_seconds(p->lag_s, d, sizeof(d));
            printf("  %-*s %12s %12s %10s %9s  %s", (int)width, name, a, b, c, d,
                   p->in_kafka    ? "(committed in Kafka)"
                   : p->stored_at ? p->stored_at
                                  : "never (starts at the beginning)");
            if (p->error)
                printf("  (%s)", p->error);
            else if (p->lag < 0)
                printf("  (stored offset past the end: topic recreated?)");
            putchar('\n');
        }
        fmt_seconds(t.lag_s, d, sizeof(d));
        printf("  %-*s %12s %12s %10lld %9s  (%zu partitions", (int)width, "total", "", "", (long long)t.lag, d,
               t.to - from);
        if (t.unknown)
            printf(", %zu of them unknown and not counted", t.unknown);
        printf("; lag in seconds is the largest)\n");
        from = t.to;
    }
    const ol_dlq_tally_t *q = &st->dlq;
    if (!st->dlq_known)
        printf("\ndlq %s: ? dead letters (%s)\n", st->dlq_topic, st->dlq_error ? st->dlq_error : "unknown");
    else
        printf("\ndlq %s: %lld dead letter%s (%lld replayed, %lld pending), %lld replay marker%s\n", st->dlq_topic,
               q->dead_letters, q->dead_letters == 1 ? "" : "s", q->replayed, q->dead_letters - q->replayed, q->markers,
               q->markers == 1 ? "" : "s");
    print_roles(st);
}

/* ---- the command -------------------------------------------------------- */

static int status_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[1024];
    bool json = false;
    if (ol_cli_flag_only(&ol_cmd_status, argc, argv, "--json", &json))
        return OL_EXIT_USAGE;
    status_t st = {.conf = conf, .role_timeout_ms = (int)ol_conf_int(conf, "status.endpoint.timeout.ms")};
    if (ol_health_parse_endpoints("status.endpoints", ol_conf_str(conf, "status.endpoints"), &st.roles, &st.nroles,
                                  errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog status: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    /* asked while PostgreSQL and Kafka are read */
    ol_health_probe_t *probe = ol_health_probe_start(st.roles, st.nroles, st.role_timeout_ms);
    st.arena = ol_arena_new(0);
    ol_kafka_topic_name(conf, "dlq", st.dlq_topic, sizeof(st.dlq_topic));
    int rc = OL_EXIT_FAIL;
    if (load_offsets(&st, errstr, sizeof(errstr)))
        goto out;
    st.deadline_us = ol_time_mono_us() + ol_conf_int(conf, "broker.wait.ms") * 1000;
    if (kafka_status(&st, errstr, sizeof(errstr)))
        goto out;
    ol_health_probe_wait(probe);
    probe = NULL;
    if (json)
        print_json(&st);
    else
        print_table(&st);
    rc = OL_EXIT_OK;
out:
    if (probe)
        ol_health_probe_wait(probe);
    if (rc)
        fprintf(stderr, "orderlog status: %s\n", errstr);
    if (st.md)
        rd_kafka_metadata_destroy(st.md);
    if (st.rk) {
        ol_kafka_consumer_close(st.rk);
        rd_kafka_destroy(st.rk);
    }
    free(st.parts);
    free(st.roles);
    ol_arena_destroy(st.arena);
    return rc;
}

const ol_cmd_t ol_cmd_status = {
    "status", status_run,
    "lag of every consumer group (stored vs end offsets, in records and seconds), the dlq, the roles' health",
    "usage: orderlog status [--json]\n"
    "  For every group in projection.schema's consumer_offsets (project) and the groups committing to\n"
    "  Kafka (decide, guard), every partition: the offset stored (what is applied), Kafka's end offset,\n"
    "  the lag in records and in seconds (age of the first record not applied yet; 0 when only\n"
    "  transaction markers are left), with totals per group; the dead letters of the dlq topic, pending\n"
    "  and replayed (read through, counted as `orderlog dlq count` does), and its replay markers; and\n"
    "  for every role in status.endpoints ([name=]host:port, comma separated) its GET /healthz and\n"
    "  /readyz, asked at once, each within status.endpoint.timeout.ms: ok, 503 and the role's reason,\n"
    "  unreachable, timed out, or malformed.\n"
    "  Kafka is given broker.wait.ms in all; an unknown value prints as ? (null in JSON).\n"
    "  Exit 0 whenever the offsets could be read, whatever the lag, the dlq and the roles say; 1 when\n"
    "  PostgreSQL or Kafka cannot be read; 2 for a bad option or status.endpoints.\n"
    "  --json   one JSON document: {time, schema, groups: {<group>: {lag, lag_seconds, unknown_partitions,\n"
    "           partitions: [{topic, partition, stored_offset, stored_at, stored_in, start_offset, end_offset, lag,\n"
    "           lag_seconds, error?}]}}, dlq: {topic, dead_letters, replayed, pending, markers, error?},\n"
    "           roles: [{name, address, healthz: {state, http_status, reason, ms}, readyz: {...}}]}\n"};
