/* orderlog dlq list, count and show: the second read's callbacks. */
#include "ops/admin/dlq_cmd.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/event.h"

/* ---- list ----------------------------------------------------------------- */

static json_t *letter_json(const dlq_t *d, const ol_dlq_letter_t *l, const rd_kafka_message_t *rkm) {
    char reason[1024], ts[40];
    const char *to = ol_dlqcmd__marker_of(d, l);
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

int ol_dlqcmd__list_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    ol_dlq_letter_t l;
    if (ol_dlq_parse(rkm, &l) != OL_DLQ_DEAD_LETTER || !ol_dlqcmd__selected(d, &l))
        return 0;
    d->shown++;
    if (d->json) {
        json_t *o = letter_json(d, &l, rkm);
        ol_dlqcmd__print_json(o, JSON_COMPACT);
        json_decref(o);
        return 0;
    }
    const char *to = ol_dlqcmd__marker_of(d, &l);
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

int ol_dlqcmd__count_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    ol_dlq_letter_t l;
    char reason[1024], key[1400];
    if (ol_dlq_parse(rkm, &l) != OL_DLQ_DEAD_LETTER || !ol_dlqcmd__selected(d, &l))
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
    g->replayed += ol_dlqcmd__marker_of(d, &l) != NULL;
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

void ol_dlqcmd__print_counts(dlq_t *d) {
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
        ol_dlqcmd__print_json(o, JSON_INDENT(2));
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

void ol_dlqcmd__free_group(void *opaque, const char *key, size_t key_len, void *value) {
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

int ol_dlqcmd__show_cb(void *opaque, const rd_kafka_message_t *rkm) {
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
        ol_dlqcmd__print_json(o, JSON_INDENT(2));
        json_decref(o);
        return 1;
    }
    printf("dlq %s [%" PRId32 "] @ %" PRId64 "  (written %s)\n", d->topic, rkm->partition, rkm->offset,
           json_string_value(json_object_get(o, "timestamp")));
    if (kind == OL_DLQ_DEAD_LETTER) {
        const char *to = ol_dlqcmd__marker_of(d, &l);
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
    ol_dlqcmd__print_json(json_object_get(o, "key"), 0);
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
        ol_dlqcmd__print_json(json_object_get(o, "data"), JSON_INDENT(2) | JSON_SORT_KEYS);
    } else if (json_object_get(o, "decode_error")) {
        printf("payload: could not be decoded: %s\nraw (%zu bytes): ",
               json_string_value(json_object_get(o, "decode_error")), rkm->len);
        ol_dlqcmd__print_json(json_object_get(o, "value"), 0);
    }
    json_decref(o);
    return 1;
}
