/* orderlog dlq: the dead letters, listed, counted, shown, and replayed to
 * their source topic once their cause is fixed.
 *
 * Every subcommand reads the dlq twice with one read_committed reader
 * (assign(), nothing committed): first an index (the replay markers, and
 * for replay where each source record has copies), then the records
 * themselves, streamed, up to the ends the first read reached; memory grows
 * with the markers and copies, never with the payloads.
 *
 * Replay is at most once per dead letter, and per source record:
 *  - one transactional producer, transactional.id <topic.prefix>dlq-replay:
 *    init_transactions fences any other replay of the deployment (a second
 *    run fences the first, whose next commit fails) and waits until the
 *    transactions the other left open are aborted or committed;
 *  - only then the dlq is read, to the high watermarks taken after that
 *    fence, so every marker any earlier run committed is seen;
 *  - a replay is one transaction holding the replayed record (to its
 *    source topic, partition by murmur2 of the key) and the marker of every
 *    known dlq copy of that source record (on the copy's dlq partition,
 *    after it): a kill leaves both or neither.
 * See docs/events.md, "The dlq", and common/domain/dlq.h for the marker. */
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/codec.h"
#include "common/domain/dlq.h"
#include "common/domain/event.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/map.h"
#include "common/domain/schema.h"
#include "common/base/time.h"
#include "common/base/util.h"

#define DEFAULT_BATCH 100
#define MAX_BATCH 10000
#define MAX_POSITIONS 1024
#define STALL_MAX_MS 120000 /* --debug-stall-after: longest wait for the kill */

typedef enum { CMD_LIST, CMD_COUNT, CMD_SHOW, CMD_REPLAY } subcmd_t;

typedef struct pos_s {
    int32_t partition;
    int64_t offset;
} pos_t;

/* A source record (topic, partition, offset, content) and its dlq copies. */
typedef struct source_s {
    pos_t *copies;
    size_t ncopies, cap;
    bool replayed;         /* by a marker of a copy, or by this run */
    char replayed_by[48];  /* the dlq position whose marker says so */
    char replayed_to[300]; /* where the replay went */
} source_t;

/* A replay in the open transaction, until its marker is written. */
typedef struct entry_s {
    ol_dlq_letter_t letter;
    source_t *src;
    char *key;
    size_t key_len;
    bool marker_only; /* the source was replayed already: only mark this copy */
    rd_kafka_resp_err_t err;
    int32_t partition; /* delivery report of the replayed record */
    int64_t offset;
} entry_t;

typedef struct dlq_s {
    const ol_conf_t *conf;
    subcmd_t cmd;
    char topic[256];
    const char *prefix;
    rd_kafka_t *reader;
    rd_kafka_t *producer; /* replay only, not in a dry run */
    ol_codec_t *codec;
    ol_arena_t *arena;
    int timeout_ms;
    int32_t nparts;
    ol_dlq_range_t *ranges;
    /* options */
    const char *reason, *topic_filter, *stage, *group;
    bool json, pending_only, replayed_only, dry_run, all;
    pos_t positions[MAX_POSITIONS];
    bool *position_seen;
    int npositions;
    int batch;
    long long stall_after;
    /* the index */
    ol_map_t *markers; /* "p:o" of a dead letter -> its marker's replayed_to (new string) */
    ol_map_t *sources; /* source id -> source_t (replay) */
    ol_map_t *groups;  /* count: "topic\x1fstage\x1freason" -> group_t */
    ol_map_t *topics;  /* replay: source topic -> partition count + 1 (as a pointer) */
    long long letters, nmarkers, others;
    /* the second pass */
    long long shown, replayed, skipped, failed, copies_marked, txns;
    entry_t *entries;
    int nentries;
    int64_t show_offset;
    bool show_found;
    int rc;
} dlq_t;

/* ---- small helpers ------------------------------------------------------- */

static void print_json(json_t *j, size_t flags) {
    char *s = json_dumps(j, flags | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    if (s) {
        puts(s);
        free(s);
    }
}

/* A source record's identity: its position and a hash of its key and
 * value (a topic deleted and made again reuses positions). */
static void source_id(const ol_dlq_letter_t *l, const rd_kafka_message_t *rkm, char *out, size_t size) {
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *b = rkm->key;
    for (size_t i = 0; b && i < rkm->key_len; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    b = rkm->payload;
    for (size_t i = 0; b && i < rkm->len; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    snprintf(out, size, "%s[%" PRId32 "]@%" PRId64 "#%016" PRIx64, l->topic, l->src_partition, l->src_offset, h);
}

static bool topic_matches(const dlq_t *d, const char *filter, const char *full) {
    size_t n = strlen(d->prefix);
    return !strcmp(filter, full) || (!strncmp(full, d->prefix, n) && !strcmp(full + n, filter));
}

static const char *marker_of(const dlq_t *d, const ol_dlq_letter_t *l) {
    char pos[48];
    ol_dlq_pos_format(l->partition, l->offset, pos, sizeof(pos));
    return ol_map_get(d->markers, pos, strlen(pos));
}

/* Whether the dead letter is selected by the filters and positions. */
static bool selected(dlq_t *d, const ol_dlq_letter_t *l) {
    if (d->npositions) {
        int i = 0;
        while (i < d->npositions && (d->positions[i].partition != l->partition || d->positions[i].offset != l->offset))
            i++;
        if (i == d->npositions)
            return false;
        d->position_seen[i] = true;
    }
    if (d->reason && !strcasestr(l->error, d->reason))
        return false;
    if (d->topic_filter && !topic_matches(d, d->topic_filter, l->topic))
        return false;
    if (d->stage && strcmp(d->stage, l->stage))
        return false;
    if (d->group && !topic_matches(d, d->group, l->group))
        return false;
    bool replayed = marker_of(d, l) != NULL;
    if ((d->pending_only && replayed) || (d->replayed_only && !replayed))
        return false;
    return true;
}

/* ---- the first read: the index ------------------------------------------- */

static int index_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    ol_dlq_letter_t l;
    char pos[48], id[512];
    switch (ol_dlq_parse(rkm, &l)) {
    case OL_DLQ_MARKER:
        d->nmarkers++;
        ol_dlq_pos_format(l.marked_partition, l.marked_offset, pos, sizeof(pos));
        if (!ol_map_get(d->markers, pos, strlen(pos)))
            ol_map_put(d->markers, pos, strlen(pos), ol_xstrdup(l.replayed_to));
        break;
    case OL_DLQ_DEAD_LETTER:
        d->letters++;
        if (!d->sources)
            break;
        source_id(&l, rkm, id, sizeof(id));
        source_t *src = ol_map_get(d->sources, id, strlen(id));
        if (!src) {
            src = ol_xcalloc(1, sizeof(*src));
            ol_map_put(d->sources, id, strlen(id), src);
        }
        if (src->ncopies == src->cap) {
            src->cap = src->cap ? src->cap * 2 : 2;
            src->copies = ol_xrealloc(src->copies, src->cap * sizeof(*src->copies));
        }
        src->copies[src->ncopies++] = (pos_t){l.partition, l.offset};
        break;
    case OL_DLQ_OTHER:
        d->others++;
        break;
    }
    return 0;
}

/* A source is replayed when a marker covers any of its copies. */
static void source_settle(void *opaque, const char *key, size_t key_len, void *value) {
    dlq_t *d = opaque;
    source_t *src = value;
    (void)key;
    (void)key_len;
    for (size_t i = 0; i < src->ncopies && !src->replayed; i++) {
        char pos[48];
        ol_dlq_pos_format(src->copies[i].partition, src->copies[i].offset, pos, sizeof(pos));
        const char *to = ol_map_get(d->markers, pos, strlen(pos));
        if (to) {
            src->replayed = true;
            snprintf(src->replayed_by, sizeof(src->replayed_by), "%s", pos);
            snprintf(src->replayed_to, sizeof(src->replayed_to), "%s", to);
        }
    }
}

/* Reads the whole dlq once: markers (and sources); the ends reached become
 * the ends of the second read. ends: high watermarks to read up to, or
 * NULL for the last stable offsets. */
static ol_err_t read_index(dlq_t *d, const int64_t *ends, char *errstr, size_t errstr_size) {
    d->ranges = ol_xcalloc((size_t)d->nparts, sizeof(*d->ranges));
    for (int32_t p = 0; p < d->nparts; p++)
        d->ranges[p] = (ol_dlq_range_t){p, RD_KAFKA_OFFSET_BEGINNING, ends ? ends[p] : -1};
    ol_err_t err =
        ol_dlq_scan(d->reader, d->topic, d->ranges, d->nparts, d->timeout_ms, index_cb, d, errstr, errstr_size);
    if (!err && d->sources)
        ol_map_foreach(d->sources, source_settle, d);
    return err;
}

static ol_err_t read_records(dlq_t *d, ol_dlq_record_cb cb, char *errstr, size_t errstr_size) {
    for (int32_t p = 0; p < d->nparts; p++)
        d->ranges[p].from = RD_KAFKA_OFFSET_BEGINNING;
    return ol_dlq_scan(d->reader, d->topic, d->ranges, d->nparts, d->timeout_ms, cb, d, errstr, errstr_size);
}

/* ---- list ----------------------------------------------------------------- */

static json_t *letter_json(const dlq_t *d, const ol_dlq_letter_t *l, const rd_kafka_message_t *rkm) {
    char reason[1024], ts[40];
    const char *to = marker_of(d, l);
    json_t *o = json_object();
    json_object_set_new(o, "dlq_partition", json_integer(l->partition));
    json_object_set_new(o, "dlq_offset", json_integer(l->offset));
    ol_time_format(l->timestamp_ms, ts, sizeof(ts));
    json_object_set_new(o, "timestamp", json_string(ts));
    json_object_set_new(o, "topic", json_string(l->topic));
    json_object_set_new(o, "partition", json_integer(l->src_partition));
    json_object_set_new(o, "offset", json_integer(l->src_offset));
    json_object_set_new(o, "stage", json_string(l->stage));
    json_object_set_new(o, "group", json_string(l->group));
    json_object_set_new(o, "time", json_string(l->time));
    json_object_set_new(o, "error", ol_json_bytes(l->error, strlen(l->error)));
    ol_dlq_reason_group(l->error, reason, sizeof(reason));
    json_object_set_new(o, "reason", ol_json_bytes(reason, strlen(reason)));
    json_object_set_new(o, "key", rkm->key ? ol_json_bytes(rkm->key, rkm->key_len) : json_null());
    json_object_set_new(o, "status", json_string(to ? "replayed" : "pending"));
    if (to)
        json_object_set_new(o, "replayed_to", json_string(to));
    if (*l->replay_of)
        json_object_set_new(o, "replay_of", json_string(l->replay_of));
    return o;
}

static int list_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    ol_dlq_letter_t l;
    if (ol_dlq_parse(rkm, &l) != OL_DLQ_DEAD_LETTER || !selected(d, &l))
        return 0;
    d->shown++;
    if (d->json) {
        json_t *o = letter_json(d, &l, rkm);
        print_json(o, JSON_COMPACT);
        json_decref(o);
        return 0;
    }
    const char *to = marker_of(d, &l);
    printf("%" PRId32 ":%" PRId64 "  %s[%" PRId32 "]@%" PRId64 "  %s  %s  %s  %s%s%s  %s\n", l.partition, l.offset,
           l.topic, l.src_partition, l.src_offset, *l.stage ? l.stage : "-", *l.group ? l.group : "-",
           *l.time ? l.time : "-", to ? "replayed->" : "pending", to ? to : "", *l.replay_of ? " (a replay)" : "",
           l.error);
    return 0;
}

/* ---- count ---------------------------------------------------------------- */

typedef struct group_s {
    char *topic, *stage, *reason;
    long long records, replayed;
} group_t;

static int count_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    ol_dlq_letter_t l;
    char reason[1024], key[1400];
    if (ol_dlq_parse(rkm, &l) != OL_DLQ_DEAD_LETTER || !selected(d, &l))
        return 0;
    ol_dlq_reason_group(l.error, reason, sizeof(reason));
    int n = snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", l.topic, l.stage, reason);
    size_t len = n < (int)sizeof(key) ? (size_t)n : sizeof(key) - 1;
    group_t *g = ol_map_get(d->groups, key, len);
    if (!g) {
        g = ol_xcalloc(1, sizeof(*g));
        g->topic = ol_xstrdup(l.topic);
        g->stage = ol_xstrdup(l.stage);
        g->reason = ol_xstrdup(reason);
        ol_map_put(d->groups, key, len, g);
    }
    g->records++;
    g->replayed += marker_of(d, &l) != NULL;
    d->shown++;
    return 0;
}

typedef struct group_list_s {
    group_t **items;
    size_t n;
} group_list_t;

static void collect_group(void *opaque, const char *key, size_t key_len, void *value) {
    group_list_t *gl = opaque;
    (void)key;
    (void)key_len;
    gl->items[gl->n++] = value;
}

static int group_cmp(const void *a, const void *b) {
    const group_t *x = *(group_t *const *)a, *y = *(group_t *const *)b;
    int c;
    if (x->records != y->records)
        return x->records > y->records ? -1 : 1;
    if ((c = strcmp(x->topic, y->topic)) || (c = strcmp(x->stage, y->stage)))
        return c;
    return strcmp(x->reason, y->reason);
}

static void print_counts(dlq_t *d) {
    group_list_t gl = {ol_xcalloc(ol_map_count(d->groups) + 1, sizeof(group_t *)), 0};
    ol_map_foreach(d->groups, collect_group, &gl);
    qsort(gl.items, gl.n, sizeof(*gl.items), group_cmp);
    long long replayed = 0;
    for (size_t i = 0; i < gl.n; i++)
        replayed += gl.items[i]->replayed;
    if (d->json) {
        json_t *o = json_object(), *arr = json_array();
        json_object_set_new(o, "topic", json_string(d->topic));
        json_object_set_new(o, "dead_letters", json_integer(d->shown));
        json_object_set_new(o, "replayed", json_integer(replayed));
        json_object_set_new(o, "pending", json_integer(d->shown - replayed));
        json_object_set_new(o, "markers", json_integer(d->nmarkers));
        for (size_t i = 0; i < gl.n; i++) {
            group_t *g = gl.items[i];
            json_t *e = json_object();
            json_object_set_new(e, "topic", json_string(g->topic));
            json_object_set_new(e, "stage", json_string(g->stage));
            json_object_set_new(e, "reason", ol_json_bytes(g->reason, strlen(g->reason)));
            json_object_set_new(e, "records", json_integer(g->records));
            json_object_set_new(e, "replayed", json_integer(g->replayed));
            json_array_append_new(arr, e);
        }
        json_object_set_new(o, "groups", arr);
        print_json(o, JSON_INDENT(2));
        json_decref(o);
    } else {
        if (gl.n)
            printf("%8s %8s  %-28s %-9s %s\n", "records", "replayed", "topic", "stage", "reason");
        for (size_t i = 0; i < gl.n; i++)
            printf("%8lld %8lld  %-28s %-9s %s\n", gl.items[i]->records, gl.items[i]->replayed, gl.items[i]->topic,
                   *gl.items[i]->stage ? gl.items[i]->stage : "-", gl.items[i]->reason);
        printf("%s: %lld dead letter%s (%lld replayed, %lld pending), %lld replay marker%s\n", d->topic, d->shown,
               d->shown == 1 ? "" : "s", replayed, d->shown - replayed, d->nmarkers, d->nmarkers == 1 ? "" : "s");
    }
    free(gl.items);
}

static void free_group(void *opaque, const char *key, size_t key_len, void *value) {
    group_t *g = value;
    (void)opaque;
    (void)key;
    (void)key_len;
    free(g->topic);
    free(g->stage);
    free(g->reason);
    free(g);
}

/* ---- show ----------------------------------------------------------------- */

static json_t *headers_json(const rd_kafka_message_t *rkm) {
    json_t *arr = json_array();
    rd_kafka_headers_t *hdrs;
    const char *name;
    const void *val;
    size_t size;
    if (rd_kafka_message_headers(rkm, &hdrs))
        return arr;
    for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &size); i++) {
        json_t *h = json_array();
        json_array_append_new(h, json_string(name));
        json_array_append_new(h, val ? ol_json_bytes(val, size) : json_null());
        json_array_append_new(arr, h);
    }
    return arr;
}

static int show_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    char errstr[512], ts[40];
    if (rkm->offset != d->show_offset)
        return 1; /* the position holds no record (a transaction marker, or deleted) */
    d->show_found = true;
    ol_dlq_letter_t l;
    ol_dlq_kind_t kind = ol_dlq_parse(rkm, &l);
    json_t *o = kind == OL_DLQ_DEAD_LETTER ? letter_json(d, &l, rkm) : json_object();
    if (kind != OL_DLQ_DEAD_LETTER) {
        json_object_set_new(o, "dlq_partition", json_integer(rkm->partition));
        json_object_set_new(o, "dlq_offset", json_integer(rkm->offset));
        ol_time_format(l.timestamp_ms, ts, sizeof(ts));
        json_object_set_new(o, "timestamp", json_string(ts));
        json_object_set_new(o, "key", rkm->key ? ol_json_bytes(rkm->key, rkm->key_len) : json_null());
        json_object_set_new(o, "status", json_string(kind == OL_DLQ_MARKER ? "marker" : "not a dead letter"));
    }
    json_object_set_new(o, "headers", headers_json(rkm));
    ol_event_t ev;
    if (kind == OL_DLQ_MARKER) {
        /* no payload */
    } else if (ol_event_from_message(d->codec, rkm, &ev, errstr, sizeof(errstr))) {
        json_object_set_new(o, "decode_error", json_string(errstr));
        json_object_set_new(o, "value_bytes", json_integer((json_int_t)rkm->len));
        json_object_set_new(o, "value", rkm->payload ? ol_json_bytes(rkm->payload, rkm->len) : json_null());
    } else {
        json_object_set_new(o, "type", json_string(ev.env.type->name));
        json_object_set_new(o, "schema_version", json_integer(ev.env.version));
        json_object_set_new(o, "data", json_incref(ev.data));
        ol_event_clear(&ev);
    }
    if (d->json) {
        print_json(o, JSON_INDENT(2));
        json_decref(o);
        return 1;
    }
    printf("dlq %s [%" PRId32 "] @ %" PRId64 "  (written %s)\n", d->topic, rkm->partition, rkm->offset,
           json_string_value(json_object_get(o, "timestamp")));
    if (kind == OL_DLQ_DEAD_LETTER) {
        const char *to = marker_of(d, &l);
        printf("status:  %s%s\n", to ? "replayed to " : "pending", to ? to : "");
        printf("source:  %s [%" PRId32 "] @ %" PRId64 "\n", l.topic, l.src_partition, l.src_offset);
        printf("stage:   %s\ngroup:   %s\ntime:    %s\nerror:   %s\n", l.stage, l.group, l.time, l.error);
        if (*l.replay_of)
            printf("replay:  this record is a replay of dlq %s that failed again\n", l.replay_of);
    } else if (kind == OL_DLQ_MARKER) {
        printf("status:  a replay marker, not a dead letter: dlq %" PRId32 ":%" PRId64 " (%s) was replayed to %s\n",
               l.marked_partition, l.marked_offset, l.replayed_from, l.replayed_to);
    } else {
        printf("status:  not a dead letter (no dlq_topic header)\n");
    }
    printf("key:     ");
    print_json(json_object_get(o, "key"), 0);
    printf("headers:\n");
    json_t *h;
    size_t i;
    json_array_foreach(json_object_get(o, "headers"), i, h) {
        printf("  %s: ", json_string_value(json_array_get(h, 0)));
        json_t *v = json_array_get(h, 1);
        if (json_is_string(v))
            printf("%s\n", json_string_value(v));
        else
            printf("(no value)\n");
    }
    if (json_object_get(o, "data")) {
        printf("payload: %s (schema version %d)\n", json_string_value(json_object_get(o, "type")),
               (int)json_integer_value(json_object_get(o, "schema_version")));
        print_json(json_object_get(o, "data"), JSON_INDENT(2) | JSON_SORT_KEYS);
    } else if (json_object_get(o, "decode_error")) {
        printf("payload: could not be decoded: %s\nraw (%zu bytes): ",
               json_string_value(json_object_get(o, "decode_error")), rkm->len);
        print_json(json_object_get(o, "value"), 0);
    }
    json_decref(o);
    return 1;
}

/* ---- replay --------------------------------------------------------------- */

static void replay_dr(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    (void)opaque;
    entry_t *e = rkm->_private;
    if (!e)
        return; /* a marker */
    e->err = rkm->err;
    e->partition = rkm->partition;
    e->offset = rkm->offset;
}

/* The partition count of a source topic (0: it does not exist), asked once. */
static int32_t source_partitions(dlq_t *d, const char *topic) {
    void *v = ol_map_get(d->topics, topic, strlen(topic));
    if (v)
        return (int32_t)((intptr_t)v - 1);
    int32_t n = ol_kafka_partition_count(d->reader, d->conf, topic);
    ol_map_put(d->topics, topic, strlen(topic), (void *)(intptr_t)(n + 1));
    return n;
}

/* What the consumers will make of the replayed record, as far as the
 * record alone tells: "" when nothing is wrong with it, else why it would
 * go back to the dlq. */
static void outlook(dlq_t *d, const ol_dlq_letter_t *l, const rd_kafka_message_t *rkm, char *out, size_t size) {
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    size_t n = strlen(d->prefix);
    out[0] = '\0';
    ol_arena_reset(d->arena);
    if (!rkm->key || !rkm->key_len)
        snprintf(out, size, "it has no key: it will go back to the dlq (placement)");
    else if (ol_event_decode(d->codec, rkm, d->arena, &env, &value, errstr, sizeof(errstr)))
        snprintf(out, size, "it does not decode (%s): it will go back to the dlq (decode)", errstr);
    else if (!strncmp(l->topic, d->prefix, n) && strcmp(l->topic + n, env.type->topic))
        snprintf(out, size, "a %s belongs on %s%s, not %s: it will go back to the dlq", env.type->name, d->prefix,
                 env.type->topic, l->topic);
    else if (ol_event_check_key(rkm, &env, value, errstr, sizeof(errstr)))
        snprintf(out, size, "%s: it will go back to the dlq (placement)", errstr);
}

static ol_err_t txn_call(dlq_t *d, rd_kafka_error_t *e, const char *what, char *errstr, size_t errstr_size) {
    if (!e)
        return OL_ERR_OK;
    bool fenced = rd_kafka_error_is_fatal(e);
    ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not %s: %s%s", what, rd_kafka_error_string(e),
            fenced ? " (fenced: another `orderlog dlq replay` of this deployment started; it replays what this one "
                     "did not)"
                   : "");
    if (rd_kafka_error_txn_requires_abort(e)) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(d->producer, d->timeout_ms);
        if (ae)
            rd_kafka_error_destroy(ae);
    }
    rd_kafka_error_destroy(e);
    return OL_ERR_KAFKA;
}

static ol_err_t produce_marker(dlq_t *d, const ol_dlq_letter_t *l, const char *key, size_t key_len, const char *to,
                               char *errstr, size_t errstr_size) {
    rd_kafka_headers_t *h = ol_dlq_marker_headers(l, to);
    rd_kafka_resp_err_t kerr;
    while ((kerr = rd_kafka_producev(d->producer, RD_KAFKA_V_TOPIC(d->topic), RD_KAFKA_V_PARTITION(l->partition),
                                     RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_HEADERS(h),
                                     RD_KAFKA_V_OPAQUE(NULL), RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(d->producer, 10);
    if (kerr) {
        rd_kafka_headers_destroy(h);
        return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not write a marker to %s: %s", d->topic,
                       rd_kafka_err2str(kerr));
    }
    return OL_ERR_OK;
}

/* The open transaction's markers: each replayed record's delivery is known
 * (flushed), then a marker for every known copy of its source not marked
 * yet. */
static ol_err_t write_markers(dlq_t *d, char *errstr, size_t errstr_size) {
    if (rd_kafka_flush(d->producer, d->timeout_ms))
        return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT, "replayed records not delivered within %d ms",
                       d->timeout_ms);
    for (int i = 0; i < d->nentries; i++) {
        entry_t *e = &d->entries[i];
        if (e->marker_only)
            continue;
        if (e->err)
            return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not replay dlq %" PRId32 ":%" PRId64 " to %s: %s",
                           e->letter.partition, e->letter.offset, e->letter.topic, rd_kafka_err2str(e->err));
        snprintf(e->src->replayed_to, sizeof(e->src->replayed_to), "%s[%" PRId32 "]@%" PRId64, e->letter.topic,
                 e->partition, e->offset);
    }
    for (int i = 0; i < d->nentries; i++) {
        entry_t *e = &d->entries[i];
        for (size_t c = 0; c < e->src->ncopies; c++) {
            char pos[48];
            ol_dlq_letter_t copy = e->letter;
            copy.partition = e->src->copies[c].partition;
            copy.offset = e->src->copies[c].offset;
            ol_dlq_pos_format(copy.partition, copy.offset, pos, sizeof(pos));
            if (ol_map_get(d->markers, pos, strlen(pos)))
                continue;
            ol_err_t err = produce_marker(d, &copy, e->key, e->key_len, e->src->replayed_to, errstr, errstr_size);
            if (err)
                return err;
            ol_map_put(d->markers, pos, strlen(pos), ol_xstrdup(e->src->replayed_to));
            if (copy.partition != e->letter.partition || copy.offset != e->letter.offset)
                d->copies_marked++;
        }
    }
    return OL_ERR_OK;
}

/* Ends the open transaction: markers, commit (retried while retriable),
 * then what it did is printed. */
static ol_err_t commit_batch(dlq_t *d, char *errstr, size_t errstr_size) {
    if (!d->nentries)
        return OL_ERR_OK;
    ol_err_t err = write_markers(d, errstr, errstr_size);
    if (err) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(d->producer, d->timeout_ms);
        if (ae)
            rd_kafka_error_destroy(ae);
        return err;
    }
    if (d->stall_after >= 0 && d->txns >= d->stall_after) {
        if (rd_kafka_flush(d->producer, d->timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR)
            fprintf(stderr,
                    "orderlog dlq: stalled with transaction %lld open, its %d replays and markers written "
                    "(--debug-stall-after)\n",
                    d->txns + 1, d->nentries);
        fflush(stderr);
        for (int64_t end = ol_time_mono_us() + STALL_MAX_MS * 1000LL; ol_time_mono_us() < end;)
            rd_kafka_poll(d->producer, 100);
        return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT, "not killed within %d ms (--debug-stall-after)",
                       STALL_MAX_MS);
    }
    rd_kafka_error_t *e;
    while ((e = rd_kafka_commit_transaction(d->producer, d->timeout_ms)) && rd_kafka_error_is_retriable(e))
        rd_kafka_error_destroy(e);
    if ((err = txn_call(d, e, "commit a replay transaction", errstr, errstr_size)))
        return err;
    d->txns++;
    for (int i = 0; i < d->nentries; i++) {
        entry_t *en = &d->entries[i];
        if (en->marker_only)
            printf("marked   dlq %" PRId32 ":%" PRId64 "  its source record was replayed already (from dlq %s, to "
                   "%s)\n",
                   en->letter.partition, en->letter.offset, en->src->replayed_by, en->src->replayed_to);
        else
            printf("replayed dlq %" PRId32 ":%" PRId64 "  %s[%" PRId32 "]@%" PRId64 " -> %s\n", en->letter.partition,
                   en->letter.offset, en->letter.topic, en->letter.src_partition, en->letter.src_offset,
                   en->src->replayed_to);
        free(en->key);
    }
    d->nentries = 0;
    return OL_ERR_OK;
}

static entry_t *batch_add(dlq_t *d, const ol_dlq_letter_t *l, source_t *src, const rd_kafka_message_t *rkm,
                          char *errstr, size_t errstr_size, ol_err_t *err) {
    *err = OL_ERR_OK;
    if (d->nentries == 0) {
        if ((*err = txn_call(d, rd_kafka_begin_transaction(d->producer), "begin a replay transaction", errstr,
                             errstr_size)))
            return NULL;
    }
    entry_t *e = &d->entries[d->nentries++];
    *e = (entry_t){.letter = *l, .src = src, .key_len = rkm->key ? rkm->key_len : 0, .partition = -1, .offset = -1};
    if (rkm->key) {
        e->key = ol_xmalloc(rkm->key_len + 1);
        memcpy(e->key, rkm->key, rkm->key_len);
    }
    return e;
}

static int replay_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    ol_dlq_letter_t l;
    char id[512], why[700], errstr[1024];
    ol_err_t err;
    if (ol_dlq_parse(rkm, &l) != OL_DLQ_DEAD_LETTER || !selected(d, &l))
        return 0;
    const char *to = marker_of(d, &l);
    if (to) {
        d->skipped++;
        printf("skipped  dlq %" PRId32 ":%" PRId64 "  replayed already (to %s)\n", l.partition, l.offset, to);
        return 0;
    }
    source_id(&l, rkm, id, sizeof(id));
    source_t *src = ol_map_get(d->sources, id, strlen(id));
    OL_ASSERT(src); /* the index read the same records */
    if (src->replayed) {
        d->skipped++;
        if (d->dry_run) {
            printf("would mark dlq %" PRId32 ":%" PRId64 "  its source record is replayed from dlq %s\n", l.partition,
                   l.offset, src->replayed_by);
            return 0;
        }
        entry_t *e = batch_add(d, &l, src, rkm, errstr, sizeof(errstr), &err);
        if (!e)
            goto fail;
        e->marker_only = true;
        goto maybe_commit;
    }
    int32_t nparts = l.src_partition >= 0 && l.src_offset >= 0 ? source_partitions(d, l.topic) : 0;
    if (nparts <= 0) {
        d->failed++;
        fprintf(stderr, "orderlog dlq: dlq %" PRId32 ":%" PRId64 " not replayed: %s\n", l.partition, l.offset,
                l.src_partition < 0 || l.src_offset < 0 ? "its dlq_partition or dlq_offset header is missing"
                                                        : "its source topic does not exist");
        return 0;
    }
    outlook(d, &l, rkm, why, sizeof(why));
    src->replayed = true;
    snprintf(src->replayed_by, sizeof(src->replayed_by), "%" PRId32 ":%" PRId64, l.partition, l.offset);
    if (d->dry_run) {
        d->replayed++;
        char part[32] = "a random partition";
        if (rkm->key && rkm->key_len)
            snprintf(part, sizeof(part), "partition %" PRId32, ol_kafka_key_partition(rkm->key, rkm->key_len, nparts));
        snprintf(src->replayed_to, sizeof(src->replayed_to), "%s (%s)", l.topic, part);
        printf("would replay dlq %" PRId32 ":%" PRId64 "  %s[%" PRId32 "]@%" PRId64 " -> %s [%s]%s%s\n", l.partition,
               l.offset, l.topic, l.src_partition, l.src_offset, l.topic, part, *why ? "; " : "; ok",
               *why ? why : (strcmp(l.stage, "apply") ? "" : ", if its cause is fixed (not checked here)"));
        return 0;
    }
    if (*why)
        fprintf(stderr, "orderlog dlq: dlq %" PRId32 ":%" PRId64 " is replayed anyway: %s\n", l.partition, l.offset,
                why);
    entry_t *e = batch_add(d, &l, src, rkm, errstr, sizeof(errstr), &err);
    if (!e)
        goto fail;
    rd_kafka_resp_err_t kerr;
    rd_kafka_headers_t *h = ol_dlq_replay_headers(rkm);
    while ((kerr = rd_kafka_producev(d->producer, RD_KAFKA_V_TOPIC(l.topic), RD_KAFKA_V_KEY(rkm->key, rkm->key_len),
                                     RD_KAFKA_V_VALUE(rkm->payload, rkm->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(e), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(d->producer, 10);
    if (kerr) {
        rd_kafka_headers_destroy(h);
        err = ol_errf(errstr, sizeof(errstr), OL_ERR_KAFKA, "could not replay dlq %" PRId32 ":%" PRId64 " to %s: %s",
                      l.partition, l.offset, l.topic, rd_kafka_err2str(kerr));
        goto fail;
    }
    d->replayed++;
maybe_commit:
    if (d->nentries < d->batch)
        return 0;
    if (!(err = commit_batch(d, errstr, sizeof(errstr))))
        return 0;
fail:
    fprintf(stderr, "orderlog dlq: %s\n", errstr);
    d->rc = OL_EXIT_FAIL;
    return 1;
}

/* ---- the command ---------------------------------------------------------- */

static void free_marker(void *opaque, const char *key, size_t key_len, void *value) {
    (void)opaque;
    (void)key;
    (void)key_len;
    free(value);
}

static void free_source(void *opaque, const char *key, size_t key_len, void *value) {
    source_t *src = value;
    (void)opaque;
    (void)key;
    (void)key_len;
    free(src->copies);
    free(src);
}

static int parse_args(dlq_t *d, int argc, char **argv) {
    static const char *const subs[] = {"list", "count", "show", "replay"};
    if (argc < 2)
        return ol_cli_usage_error(&ol_cmd_dlq, "which one? list, count, show or replay");
    int i;
    for (i = 0; i < 4 && strcmp(argv[1], subs[i]); i++)
        ;
    if (i == 4)
        return ol_cli_usage_error(&ol_cmd_dlq, "unknown subcommand \"%s\" (list, count, show, replay)", argv[1]);
    d->cmd = (subcmd_t)i;
    for (i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char **opt = !strcmp(a, "--reason")  ? &d->reason
                           : !strcmp(a, "--topic") ? &d->topic_filter
                           : !strcmp(a, "--stage") ? &d->stage
                           : !strcmp(a, "--group") ? &d->group
                                                   : NULL;
        if (opt) {
            if (d->cmd == CMD_SHOW)
                return ol_cli_usage_error(&ol_cmd_dlq, "show takes a position, not %s", a);
            if (i + 1 >= argc || !*argv[i + 1])
                return ol_cli_usage_error(&ol_cmd_dlq, "%s needs a value", a);
            *opt = argv[++i];
        } else if (!strcmp(a, "--json") && d->cmd != CMD_REPLAY) {
            d->json = true;
        } else if (!strcmp(a, "--pending") && d->cmd != CMD_SHOW) {
            d->pending_only = true;
        } else if (!strcmp(a, "--replayed") && (d->cmd == CMD_LIST || d->cmd == CMD_COUNT)) {
            d->replayed_only = true;
        } else if (!strcmp(a, "--dry-run") && d->cmd == CMD_REPLAY) {
            d->dry_run = true;
        } else if (!strcmp(a, "--all") && d->cmd == CMD_REPLAY) {
            d->all = true;
        } else if ((!strcmp(a, "--batch") || !strcmp(a, "--debug-stall-after")) && d->cmd == CMD_REPLAY) {
            bool batch = !strcmp(a, "--batch");
            char *end = NULL;
            long long v = i + 1 < argc ? strtoll(argv[i + 1], &end, 10) : -1;
            if (i + 1 >= argc || *end || v < (batch ? 1 : 0) || v > MAX_BATCH)
                return ol_cli_usage_error(&ol_cmd_dlq, "%s needs a number from %d to %d", a, batch ? 1 : 0, MAX_BATCH);
            i++;
            if (batch)
                d->batch = (int)v;
            else
                d->stall_after = v;
        } else if (a[0] == '-') {
            return ol_cli_usage_error(&ol_cmd_dlq, "%s: unknown option \"%s\"", argv[1], a);
        } else if (d->cmd == CMD_COUNT) {
            return ol_cli_usage_error(&ol_cmd_dlq, "count takes no position (\"%s\")", a);
        } else {
            pos_t *p = &d->positions[d->npositions];
            if (d->npositions == MAX_POSITIONS || !ol_dlq_pos_parse(a, strlen(a), &p->partition, &p->offset))
                return ol_cli_usage_error(&ol_cmd_dlq, "\"%s\" is not a dlq position <partition>:<offset>%s", a,
                                          d->npositions == MAX_POSITIONS ? " (too many)" : "");
            d->npositions++;
        }
    }
    if (d->cmd == CMD_SHOW && d->npositions != 1)
        return ol_cli_usage_error(&ol_cmd_dlq, "show needs one position <partition>:<offset>");
    if (d->cmd == CMD_REPLAY && !d->npositions && !d->reason && !d->topic_filter && !d->stage && !d->group && !d->all)
        return ol_cli_usage_error(&ol_cmd_dlq, "replay what? positions, --reason, --topic, --stage, --group, or --all");
    if (d->pending_only && d->replayed_only)
        return ol_cli_usage_error(&ol_cmd_dlq, "--pending and --replayed exclude each other");
    return OL_EXIT_OK;
}

/* The replay producer: fences every other replay of the deployment and
 * waits for what they left open to end. */
static ol_err_t open_producer(dlq_t *d, char *errstr, size_t errstr_size) {
    char txid[300];
    snprintf(txid, sizeof(txid), "%sdlq-replay", d->prefix);
    const char *tuning[] = {"transactional.id", txid, "linger.ms", "5", NULL};
    rd_kafka_conf_t *kc =
        ol_kafka_conf_new(d->conf, OL_KAFKA_TXN_PRODUCER, "orderlog-dlq", tuning, errstr, errstr_size);
    if (!kc)
        return OL_ERR_CONFIG;
    rd_kafka_conf_set_dr_msg_cb(kc, replay_dr);
    if (!(d->producer = ol_kafka_handle_new(RD_KAFKA_PRODUCER, kc, errstr, errstr_size))) {
        rd_kafka_conf_destroy(kc);
        return OL_ERR_CONFIG;
    }
    rd_kafka_error_t *e = rd_kafka_init_transactions(d->producer, d->timeout_ms);
    if (e) {
        ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not start transactions (%s): %s", txid,
                rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return OL_ERR_UNREACHABLE;
    }
    return OL_ERR_OK;
}

static int run(dlq_t *d) {
    char errstr[1024];
    ol_err_t err;
    int64_t *ends = NULL;
    ends = ol_xcalloc(OL_DLQ_MAX_PARTITIONS, sizeof(*ends));
    if ((err = ol_dlq_partitions(d->reader, d->conf, d->topic, &d->nparts, NULL, errstr, sizeof(errstr))))
        goto fail;
    /* a replay reads to the high watermarks taken after its fence: every
     * marker an earlier run committed is below them */
    bool to_hwm = d->cmd == CMD_REPLAY && !d->dry_run;
    if (to_hwm && ((err = open_producer(d, errstr, sizeof(errstr))) ||
                   (err = ol_dlq_partitions(d->reader, d->conf, d->topic, &d->nparts, ends, errstr, sizeof(errstr)))))
        goto fail;
    if ((err = read_index(d, to_hwm ? ends : NULL, errstr, sizeof(errstr))))
        goto fail;
    switch (d->cmd) {
    case CMD_LIST:
        err = read_records(d, list_cb, errstr, sizeof(errstr));
        break;
    case CMD_COUNT:
        if (!(err = read_records(d, count_cb, errstr, sizeof(errstr))))
            print_counts(d);
        break;
    case CMD_SHOW: {
        pos_t p = d->positions[0];
        if (p.partition >= d->nparts) {
            fprintf(stderr, "orderlog dlq: %s has no partition %" PRId32 "\n", d->topic, p.partition);
            d->rc = OL_EXIT_FAIL;
            break;
        }
        ol_dlq_range_t r = {p.partition, p.offset, d->ranges[p.partition].until};
        d->show_offset = p.offset;
        if (p.offset < r.until)
            err = ol_dlq_scan(d->reader, d->topic, &r, 1, d->timeout_ms, show_cb, d, errstr, sizeof(errstr));
        if (!err && !d->show_found) {
            fprintf(stderr, "orderlog dlq: no record at dlq %" PRId32 ":%" PRId64 " of %s\n", p.partition, p.offset,
                    d->topic);
            d->rc = OL_EXIT_FAIL;
        }
        break;
    }
    case CMD_REPLAY:
        d->entries = ol_xcalloc((size_t)d->batch, sizeof(*d->entries));
        err = read_records(d, replay_cb, errstr, sizeof(errstr));
        if (!err && d->rc == OL_EXIT_OK && !d->dry_run && commit_batch(d, errstr, sizeof(errstr))) {
            fprintf(stderr, "orderlog dlq: %s\n", errstr);
            d->rc = OL_EXIT_FAIL;
        }
        for (int i = 0; i < d->nentries; i++)
            free(d->entries[i].key);
        if (d->rc == OL_EXIT_OK || d->replayed || d->skipped)
            printf("%s %lld, skipped %lld (replayed already), %lld failed%s; %lld other dlq cop%s marked; %lld "
                   "transaction%s\n",
                   d->dry_run ? "would replay" : "replayed", d->replayed, d->skipped, d->failed,
                   d->rc == OL_EXIT_OK ? "" : ", stopped on an error", d->copies_marked,
                   d->copies_marked == 1 ? "y" : "ies", d->txns, d->txns == 1 ? "" : "s");
        if (d->failed)
            d->rc = OL_EXIT_FAIL;
        break;
    }
    if (err)
        goto fail;
    for (int i = 0; i < d->npositions && d->cmd != CMD_SHOW; i++)
        if (!d->position_seen[i]) {
            fprintf(stderr, "orderlog dlq: no dead letter at dlq %" PRId32 ":%" PRId64 "\n", d->positions[i].partition,
                    d->positions[i].offset);
            d->rc = OL_EXIT_FAIL;
        }
    free(ends);
    return d->rc;
fail:
    fprintf(stderr, "orderlog dlq: %s\n", errstr);
    free(ends);
    return err == OL_ERR_CONFIG ? OL_EXIT_USAGE : OL_EXIT_FAIL;
}

static int dlq_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512];
    dlq_t d = {.conf = conf, .batch = DEFAULT_BATCH, .stall_after = -1, .rc = OL_EXIT_OK};
    int rc = parse_args(&d, argc, argv);
    if (rc)
        return rc;
    d.prefix = ol_conf_str(conf, "topic.prefix");
    ol_kafka_topic_name(conf, "dlq", d.topic, sizeof(d.topic));
    d.timeout_ms = (int)ol_conf_int(conf, "broker.wait.ms") + 30000;
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog dlq: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    const char *tuning[] = {"group.id", "orderlog-dlq", "fetch.wait.max.ms", "10",
                            NULL}; /* the end of each partition at once */
    if (!(d.reader = ol_kafka_new(conf, OL_KAFKA_READER, "orderlog-dlq", tuning, errstr, sizeof(errstr)))) {
        fprintf(stderr, "orderlog dlq: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    d.codec = ol_codec_new();
    d.arena = ol_arena_new(0);
    d.markers = ol_map_new();
    d.groups = ol_map_new();
    d.topics = ol_map_new();
    d.position_seen = ol_xcalloc(MAX_POSITIONS, sizeof(bool));
    if (d.cmd == CMD_REPLAY)
        d.sources = ol_map_new();
    rc = run(&d);
    fflush(stdout);
    if (d.producer)
        rd_kafka_destroy(d.producer);
    rd_kafka_consumer_close(d.reader);
    rd_kafka_destroy(d.reader);
    ol_map_foreach(d.markers, free_marker, NULL);
    ol_map_destroy(d.markers);
    ol_map_foreach(d.groups, free_group, NULL);
    ol_map_destroy(d.groups);
    ol_map_destroy(d.topics);
    if (d.sources) {
        ol_map_foreach(d.sources, free_source, NULL);
        ol_map_destroy(d.sources);
    }
    free(d.entries);
    free(d.ranges);
    free(d.position_seen);
    ol_arena_destroy(d.arena);
    ol_codec_destroy(d.codec);
    return rc;
}

const ol_cmd_t ol_cmd_dlq = {
    "dlq", dlq_run, "list, count, show and replay the dead letters of the dlq topic",
    "usage: orderlog dlq list   [FILTERS] [POSITION ...] [--pending|--replayed] [--json]\n"
    "       orderlog dlq count  [FILTERS] [--pending|--replayed] [--json]\n"
    "       orderlog dlq show   POSITION [--json]\n"
    "       orderlog dlq replay [FILTERS] [POSITION ...] [--all] [--dry-run] [--batch N]\n"
    "  POSITION         a dead letter's place on the dlq, <partition>:<offset> (the first column of list)\n"
    "  FILTERS          --reason TEXT (in dlq_error, any case), --topic T (source topic, with or without the\n"
    "                   prefix), --stage S (placement, decode, fold, apply, decide), --group G (dlq_group)\n"
    "  --pending        only dead letters not replayed yet; --replayed: only replayed ones\n"
    "  --json           list: one JSON object per line; count and show: one JSON document\n"
    "  list             one line each: position, source topic[partition]@offset, stage, group, time,\n"
    "                   pending or replayed->where, error\n"
    "  count            dead letters per source topic, stage and reason (dlq_error with quoted values\n"
    "                   masked as \"*\" and words holding a digit as #)\n"
    "  show             every header, the key and the payload decoded (or its raw bytes and why not)\n"
    "  replay           puts the selected dead letters back on their source topic (key, value, headers\n"
    "                   without dlq_*, plus dlq_replay_of=<partition>:<offset>), at most once each: every\n"
    "                   replay is one Kafka transaction with a marker on the dlq (transactional.id\n"
    "                   <topic.prefix>dlq-replay, so runs fence each other); replayed ones are skipped\n"
    "  --all            replay selects every pending dead letter (without it, replay needs a selection)\n"
    "  --dry-run        what replay would do, and whether a record would go straight back to the dlq\n"
    "  --batch N        replays per transaction (default 100)\n"
    "  --debug-stall-after N  (tests) after N transactions, write the next one and wait to be killed\n"};
