#ifndef OL_DLQ_H
#define OL_DLQ_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/conf.h"
#include "common/base/err.h"

/* The dlq topic as a reader sees it (docs/events.md, "The dlq").
 *
 * It holds two kinds of records:
 *  - dead letters: a record that could never apply, unchanged (key, value,
 *    headers) plus dlq_topic, dlq_partition, dlq_offset, dlq_stage,
 *    dlq_error, dlq_group and dlq_time (ol_kafka_dlq_headers);
 *  - replay markers, written by `orderlog dlq replay` in the transaction
 *    that puts a dead letter back on its source topic: the dead letter's
 *    key, an empty value, and the headers dlq_replayed (<partition>:<offset>
 *    of the dead letter, on the same dlq partition, after it),
 *    dlq_replayed_from (<topic>[<partition>]@<offset>, the source record),
 *    dlq_replayed_to (where the replay went, the same form) and dlq_time.
 * A marker is not a dead letter: every reader that counts dead letters
 * skips records carrying dlq_replayed (ol_dlq_parse says which is which).
 * A replayed record carries dlq_replay_of=<partition>:<offset> of the dead
 * letter it came from, and none of the dead letter's other dlq_* headers. */

#define OL_DLQ_H_REPLAYED "dlq_replayed"
#define OL_DLQ_H_REPLAYED_FROM "dlq_replayed_from"
#define OL_DLQ_H_REPLAYED_TO "dlq_replayed_to"
#define OL_DLQ_H_REPLAY_OF "dlq_replay_of"

typedef enum ol_dlq_kind_e {
    OL_DLQ_DEAD_LETTER, /* has dlq_topic, dlq_partition and dlq_offset */
    OL_DLQ_MARKER,      /* has dlq_replayed */
    OL_DLQ_OTHER        /* neither (written by someone else): not counted */
} ol_dlq_kind_t;

/* One dlq record's dlq_* headers, copied (truncated to the buffers). */
typedef struct ol_dlq_letter_s {
    ol_dlq_kind_t kind;
    int32_t partition; /* where it is on the dlq */
    int64_t offset;
    int64_t timestamp_ms;
    /* dead letter */
    char topic[256]; /* dlq_topic: the source topic, with its prefix */
    int32_t src_partition;
    int64_t src_offset;
    char stage[32];
    char group[256];
    char time[48];
    char error[1024];
    char replay_of[48]; /* dlq_replay_of when the dead letter is itself a replay that failed again; "" else */
    /* marker */
    int32_t marked_partition; /* dlq_replayed */
    int64_t marked_offset;
    char replayed_from[300];
    char replayed_to[300];
} ol_dlq_letter_t;

/* Classifies rkm (a record read from the dlq) and fills *out. */
ol_dlq_kind_t ol_dlq_parse(const rd_kafka_message_t *rkm, ol_dlq_letter_t *out);

/* "<partition>:<offset>" (the dlq position form of the command line and
 * the headers) into out; ol_dlq_pos_parse reads it back (false when s is
 * not of that form). */
void ol_dlq_pos_format(int32_t partition, int64_t offset, char *out, size_t out_size);
bool ol_dlq_pos_parse(const char *s, size_t len, int32_t *partition, int64_t *offset);

/* The reason group of a dlq_error: the text with what varies from one
 * record to the next masked, so that records failing for one cause count
 * together. Quoted values ("..." or '...') become "*" (quotes kept); a
 * word (a run of letters, digits and _ . : - + /) holding a digit
 * becomes #; runs of spaces become one; at most out_size - 1 bytes.
 * `order "O-1" does not exist` -> `order "*" does not exist`,
 * `key "k" is on partition 2 of t1 but belongs on partition 0` ->
 * `key "*" is on partition # of # but belongs on partition #`. */
void ol_dlq_reason_group(const char *error, char *out, size_t out_size);

/* The headers of the record replaying a dead letter (new: hand them to
 * producev or destroy them): its own headers in order without any dlq_*
 * one, then dlq_replay_of=<partition>:<offset>. */
rd_kafka_headers_t *ol_dlq_replay_headers(const rd_kafka_message_t *rkm);

/* The headers of the marker of a replayed dead letter (new). */
rd_kafka_headers_t *ol_dlq_marker_headers(const ol_dlq_letter_t *letter, const char *replayed_to);

/* What one partition of the dlq is read over: from `from` (an offset, or
 * RD_KAFKA_OFFSET_BEGINNING) until `until`, the end offset of the read
 * (exclusive). until -1: until the first partition EOF, which read_committed
 * puts at the last stable offset (a transaction still open ends the read
 * there); the offset reached is written back to until. */
typedef struct ol_dlq_range_s {
    int32_t partition;
    int64_t from;
    int64_t until;
} ol_dlq_range_t;

/* Called for each record of the read; a non-zero return ends the read of
 * every partition (the scan returns OL_ERR_OK). */
typedef int (*ol_dlq_record_cb)(void *opaque, const rd_kafka_message_t *rkm);

/* Reads the ranges of topic with rk (a consumer of the OL_KAFKA_READER
 * profile, read_committed, assign()-based: its assignment is replaced),
 * calling cb for every record, in order within a partition. Fails with
 * OL_ERR_TIMEOUT when nothing (no record, no partition EOF) comes for
 * timeout_ms before the ranges are read (a transaction left open holds a
 * read_committed reader back). */
ol_err_t ol_dlq_scan(rd_kafka_t *rk, const char *topic, ol_dlq_range_t *ranges, int nranges, int timeout_ms,
                     ol_dlq_record_cb cb, void *opaque, char *errstr, size_t errstr_size);

/* What the dlq holds, counted in one read: the dead letters, how many of
 * them a replay marker covers (replayed; pending is the rest), the markers,
 * and the records that are neither. As `orderlog dlq count` counts them. */
typedef struct ol_dlq_tally_s {
    long long dead_letters, replayed, markers, others;
} ol_dlq_tally_t;

/* Counts the records of the ranges of topic (ol_dlq_scan, with rk as
 * there) into *out, within timeout_ms in all: OL_ERR_TIMEOUT, with *out
 * holding what was counted so far, when the read did not end in time. A
 * marker counts its dead letter as replayed once, and only a dead letter
 * read here (markers come after their dead letter on its partition). */
ol_err_t ol_dlq_tally(rd_kafka_t *rk, const char *topic, ol_dlq_range_t *ranges, int nranges, int timeout_ms,
                      ol_dlq_tally_t *out, char *errstr, size_t errstr_size) __attribute__((warn_unused_result));

/* The partition count of topic and, when ends is not NULL (room for
 * OL_DLQ_MAX_PARTITIONS), each partition's high watermark. */
#define OL_DLQ_MAX_PARTITIONS 10000
ol_err_t ol_dlq_partitions(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic, int32_t *count, int64_t *ends,
                           char *errstr, size_t errstr_size);

#endif
