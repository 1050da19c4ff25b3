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
#include "ops/admin/dlq_cmd.h"

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

/* ---- small helpers ------------------------------------------------------- */

void ol_dlqcmd__print_json(json_t *j, size_t flags) {
    char *s = json_dumps(j, flags | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    if (s) {
        puts(s);
        free(s);
    }
}

/* A source record's identity: its position and a hash of its key and
 * value (a topic deleted and made again reuses positions). */
void ol_dlqcmd__source_id(const ol_dlq_letter_t *l, const rd_kafka_message_t *rkm, char *out, size_t size) {
    static const unsigned char sep = 0xff;
    uint64_t h = ol_hash_fnv1a64(OL_FNV1A64_SEED, rkm->key, rkm->key ? rkm->key_len : 0);
    h = ol_hash_fnv1a64(h, &sep, 1);
    h = ol_hash_fnv1a64(h, rkm->payload, rkm->payload ? rkm->len : 0);
    snprintf(out, size, "%s[%" PRId32 "]@%" PRId64 "#%016" PRIx64, l->topic, l->src_partition, l->src_offset, h);
}

static bool topic_matches(const dlq_t *d, const char *filter, const char *full) {
    size_t n = strlen(d->prefix);
    return !strcmp(filter, full) || (!strncmp(full, d->prefix, n) && !strcmp(full + n, filter));
}

const char *ol_dlqcmd__marker_of(const dlq_t *d, const ol_dlq_letter_t *l) {
    char pos[48];
    ol_dlq_pos_format(l->partition, l->offset, pos, sizeof(pos));
    return ol_map_get(d->markers, pos, strlen(pos));
}

/* Whether the dead letter is selected by the filters and positions. */
bool ol_dlqcmd__selected(dlq_t *d, const ol_dlq_letter_t *l) {
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
    bool replayed = ol_dlqcmd__marker_of(d, l) != NULL;
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
        ol_dlqcmd__source_id(&l, rkm, id, sizeof(id));
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

static int run(dlq_t *d) {
    char errstr[1024];
    ol_err_t err = OL_ERR_OK;
    int64_t *ends = NULL;
    ends = ol_xcalloc(OL_DLQ_MAX_PARTITIONS, sizeof(*ends));
    if ((err = ol_dlq_partitions(d->reader, d->conf, d->topic, &d->nparts, NULL, errstr, sizeof(errstr))))
        goto out;
    /* a replay reads to the high watermarks taken after its fence: every
     * marker an earlier run committed is below them */
    bool to_hwm = d->cmd == CMD_REPLAY && !d->dry_run;
    if (to_hwm && ((err = ol_dlqcmd__open_producer(d, errstr, sizeof(errstr))) ||
                   (err = ol_dlq_partitions(d->reader, d->conf, d->topic, &d->nparts, ends, errstr, sizeof(errstr)))))
        goto out;
    if ((err = read_index(d, to_hwm ? ends : NULL, errstr, sizeof(errstr))))
        goto out;
    switch (d->cmd) {
    case CMD_LIST:
        err = read_records(d, ol_dlqcmd__list_cb, errstr, sizeof(errstr));
        break;
    case CMD_COUNT:
        if (!(err = read_records(d, ol_dlqcmd__count_cb, errstr, sizeof(errstr))))
            ol_dlqcmd__print_counts(d);
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
            err = ol_dlq_scan(d->reader, d->topic, &r, 1, d->timeout_ms, ol_dlqcmd__show_cb, d, errstr, sizeof(errstr));
        if (!err && !d->show_found) {
            fprintf(stderr, "orderlog dlq: no record at dlq %" PRId32 ":%" PRId64 " of %s\n", p.partition, p.offset,
                    d->topic);
            d->rc = OL_EXIT_FAIL;
        }
        break;
    }
    case CMD_REPLAY:
        d->entries = ol_xcalloc((size_t)d->batch, sizeof(*d->entries));
        err = read_records(d, ol_dlqcmd__replay_cb, errstr, sizeof(errstr));
        if (!err && d->rc == OL_EXIT_OK && !d->dry_run && ol_dlqcmd__commit_batch(d, errstr, sizeof(errstr))) {
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
        goto out;
    for (int i = 0; i < d->npositions && d->cmd != CMD_SHOW; i++)
        if (!d->position_seen[i]) {
            fprintf(stderr, "orderlog dlq: no dead letter at dlq %" PRId32 ":%" PRId64 "\n", d->positions[i].partition,
                    d->positions[i].offset);
            d->rc = OL_EXIT_FAIL;
        }
out:
    free(ends);
    if (!err)
        return d->rc;
    fprintf(stderr, "orderlog dlq: %s\n", errstr);
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
    ol_kafka_consumer_close(d.reader);
    rd_kafka_destroy(d.reader);
    ol_map_foreach(d.markers, free_marker, NULL);
    ol_map_destroy(d.markers);
    ol_map_foreach(d.groups, ol_dlqcmd__free_group, NULL);
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
