#ifndef OL_DLQ_CMD_H
#define OL_DLQ_CMD_H

/* orderlog dlq, inside: what its files share (ops/admin/dlq.c: the
 * command, its options and the first read, the index; dlq_view.c: list,
 * count and show; dlq_replay.c: replay). Not an API: one command's parts. */

#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/conf.h"
#include "common/base/err.h"
#include "common/base/kafka.h"
#include "common/base/map.h"
#include "common/domain/codec.h"
#include "common/domain/dlq.h"

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

/* dlq.c */
/* Prints j on one line (flags as json_dumps), ASCII only. */
void ol_dlqcmd__print_json(json_t *j, size_t flags);
void ol_dlqcmd__source_id(const ol_dlq_letter_t *l, const rd_kafka_message_t *rkm, char *out, size_t size);
/* Where the dead letter l was replayed to (borrowed), NULL when pending. */
const char *ol_dlqcmd__marker_of(const dlq_t *d, const ol_dlq_letter_t *l);
bool ol_dlqcmd__selected(dlq_t *d, const ol_dlq_letter_t *l);

/* dlq_view.c: ol_dlq_scan callbacks of the second read, and the count's
 * table (d->groups, whose values ol_dlqcmd__free_group frees). */
int ol_dlqcmd__list_cb(void *opaque, const rd_kafka_message_t *rkm);
int ol_dlqcmd__count_cb(void *opaque, const rd_kafka_message_t *rkm);
void ol_dlqcmd__print_counts(dlq_t *d);
void ol_dlqcmd__free_group(void *opaque, const char *key, size_t key_len, void *value);
int ol_dlqcmd__show_cb(void *opaque, const rd_kafka_message_t *rkm);

/* dlq_replay.c */
ol_err_t ol_dlqcmd__open_producer(dlq_t *d, char *errstr, size_t errstr_size);
int ol_dlqcmd__replay_cb(void *opaque, const rd_kafka_message_t *rkm);
ol_err_t ol_dlqcmd__commit_batch(dlq_t *d, char *errstr, size_t errstr_size);

#endif
