#ifndef OL_REBUILD_H
#define OL_REBUILD_H

/* orderlog rebuild's parts (internal): the run and the comparison
 * (rebuild.c), the shadow schema (rebuild_shadow.c), the replay in passes
 * (rebuild_passes.c), the reading of a pass (rebuild_read.c), the spill
 * files (rebuild_spill.c). The command is ol_cmd_rebuild
 * (ops/admin/commands.h). */
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/conf.h"
#include "common/base/err.h"
#include "common/domain/event.h"
#include "consumers/project.h"
#include "consumers/runtime.h"

#define MAX_TABLES 64
#define MAX_TOPICS 8
#define MAX_PARTS 1024
#define MAX_PASS_UNITS 256
#define MAX_READERS 16

/* A share of the log that one pass folds: the keys of partition p of the
 * bulk topics (orders, after-sales, skus) whose class hash modulo k is j. */
typedef struct unit_s {
    int32_t partition;
    uint32_t k, j;
} unit_t;

/* A spill set: the records of a unit's keys that a pass over a larger set
 * (the partition, or a spill set holding them) did not fold, kept in local
 * files, one per bulk topic and sub (a part of the keys, so that a pass
 * over one share still has work for every reader). */
typedef enum { SPILL_WRITING, SPILL_COMPLETE, SPILL_GONE } spill_state_t;
typedef struct spill_s {
    unit_t u;
    spill_state_t state;
    bool failed;                              /* a write failed: never complete */
    int64_t records[MAX_TOPICS][MAX_READERS]; /* per file */
    int64_t bytes;                            /* in all its files */
} spill_t;

typedef struct rebuild_s {
    const ol_conf_t *conf;
    PGconn *pg;
    char live[128], shadow[128], old[160];
    char group[256]; /* the live projector's group: the offsets the shadow stores */
    char tables[MAX_TABLES][64];
    char relopts[MAX_TABLES][256]; /* the live table's storage parameters (fillfactor) */
    bool text_sum[MAX_TABLES];     /* compared by the md5 of the rows' text (table_sum) */
    int ntables;
    int64_t last_print_us, start_us;
    char *errstr;
    size_t errstr_size;
    PGconn *pg2; /* a second connection: two tables written, indexed or summed at once */
    /* the passes (see README.md here: "Rebuild in passes") */
    const char *const *topics; /* the role's */
    bool bulk_topic[MAX_TOPICS];
    char topic_names[MAX_TOPICS][256];
    int ntopics;
    int32_t nparts;                                /* the most partitions of a bulk topic */
    int32_t topic_parts[MAX_TOPICS];               /* partitions of each topic, at the start */
    int64_t starts[MAX_TOPICS][MAX_PARTS];         /* low watermarks at the start */
    int64_t ends[MAX_TOPICS][MAX_PARTS];           /* high watermarks at the start: where the passes stop */
    int64_t part_events[MAX_PARTS];                /* events of the bulk topics per partition number */
    atomic_llong last_seen[MAX_TOPICS][MAX_PARTS]; /* the last offset before the end a pass saw */
    int64_t log_events;                            /* of every topic replayed, at the start */
    unit_t *queue;                                 /* what is left, in order */
    size_t nqueue, queue_cap;
    unit_t pass[MAX_PASS_UNITS];
    int npass;
    bool sale_done;                /* the sale topics are replayed (by the first pass that completed) */
    double rows_per_event;         /* learned from the passes so far */
    int64_t events_done;           /* replayed by the completed passes */
    atomic_llong pass_sale_events; /* of the sale topics, in the pass running */
    int passes, passes_given_up;
    size_t peak_rows, peak_bytes;
    double pass_open_s, pass_first_s, pass_close_s; /* the last pass's consumer: made and assigned, its first
                                                       records (from the start of the pass), closed */
    /* the spill files (rebuild_spill.c): a directory under TMPDIR made
     * when a partition is first split, removed when the passes end */
    char spill_dir[4096];
    bool spill_off; /* the directory could not be made: every share reads Kafka */
    int spill_subs; /* files per topic of a spill set: the readers */
    spill_t *spills;
    int nspills, spills_cap;
    int64_t part_last[MAX_TOPICS][MAX_PARTS];     /* last_seen of a partition once a pass read it whole (-1: none) */
    int64_t pass_kafka, pass_files, pass_spilled; /* the last pass's records: read from Kafka (dropped ones
                                                     too), read from spill files, written to them */
    int64_t kafka_read, files_read, spilled;      /* the same over the completed passes */
    /* bytes written to spill files: by the last pass, by all, on disk now
     * and at most at once */
    int64_t pass_spilled_bytes, spilled_bytes, spill_disk_bytes, spill_peak_bytes;
    /* the rows of the pass being written (0: none): the readers of the next
     * pass wait while theirs and these pass rebuild.bulk.rows */
    atomic_llong flushing_rows;
    double pass_flush_wait_s; /* the last pass's readers waiting for it, in all */
} rebuild_t;

/* ---- the shadow schema (rebuild_shadow.c) ---- */

/* One statement on rb->pg; the error in rb->errstr. */
ol_err_t ol_rebuild__exec(rebuild_t *rb, const char *sql);
ol_err_t ol_rebuild__execf(rebuild_t *rb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The rows of a query with one text parameter; PQclear the result. */
ol_err_t ol_rebuild__query1(rebuild_t *rb, PGresult **out, const char *sql, const char *param);
/* The live schema's tables into rb->tables. */
ol_err_t ol_rebuild__list_tables(rebuild_t *rb);
/* The shadow schema, its tables empty and unlogged, for the load. */
ol_err_t ol_rebuild__create_shadow(rebuild_t *rb);
/* After the load: logged tables, keys and indexes, constraints, views,
 * comments. */
ol_err_t ol_rebuild__finish_shadow(rebuild_t *rb);
/* Drops the old projection once swapped out (a warning when it cannot). */
void ol_rebuild__drop_old(rebuild_t *rb);

/* ---- the replay (rebuild_passes.c) ---- */

/* SIGTERM, SIGINT: the rebuild stops (the replay running ends after its
 * batch). */
void ol_rebuild__on_signal(int sig);
/* An error once a signal came. */
ol_err_t ol_rebuild__check_stop(rebuild_t *rb);
/* Whether a signal came. */
bool ol_rebuild__stopping(void);
/* The class of a key: a hash of its own (not murmur2, which placed the
 * key, nor the runtime's worker hash); a unit takes the keys whose class
 * modulo k is j. */
uint32_t ol_rebuild__key_class(const void *key, size_t len);
/* Whether a record of partition p with this key is one of the current
 * pass's (rb->pass). */
bool ol_rebuild__pass_takes_key(const rebuild_t *rb, int32_t p, const void *key, size_t key_len);
/* The same for a key of class cls. */
bool ol_rebuild__pass_takes_class(const rebuild_t *rb, int32_t p, uint32_t cls);
/* The passes over the log (rb->queue). */
ol_err_t ol_rebuild__plan(rebuild_t *rb);
/* Every pass, each written out once it ends, while the next one runs. */
ol_err_t ol_rebuild__replay_passes(rebuild_t *rb, ol_project_bulk_t *bulks[2][MAX_READERS], int nreaders,
                                   size_t max_rows);
/* Reads the current pass (rb->pass) of the bulk topics, each partition
 * from the smallest complete spill set holding its units' keys, else from
 * Kafka by assign(): nbulks reader threads, the records of Kafka dealt by
 * their keys' sub, each folding and applying into its own bulks[i] (a key
 * meets one reader only) and spilling the records of the shares still
 * queued; past max_rows rows in all, OL_ERR_TOO_LARGE (rebuild_read.c). */
ol_err_t ol_rebuild__read_pass(rebuild_t *rb, ol_project_bulk_t **bulks, int nbulks, size_t max_rows,
                               ol_rt_stats_t *st);
/* ---- the spill files (rebuild_spill.c) ---- */

/* What one reader writes into one spill file. */
typedef struct spill_writer_s {
    int spill, t, sub; /* which file */
    int fd;            /* -1 until the first record */
    char *buf;
    size_t len, cap;
    bool failed;
    int64_t records, bytes;
} spill_writer_t;

/* The sub (file) of a key of class cls among nsubs. */
uint32_t ol_rebuild__spill_sub(uint32_t cls, int nsubs);
void ol_rebuild__spill_path(const rebuild_t *rb, int spill, int t, int sub, char *out, size_t out_size);
/* The complete spill set the pass reads partition p from (the smallest
 * that holds every key of the pass's units of p), or -1: Kafka. */
int ol_rebuild__spill_source(const rebuild_t *rb, int32_t p);
/* The queued units of partition p whose best source is now source (a spill
 * set, or -1: Kafka): a new spill set each (SPILL_WRITING), their indexes
 * in targets; returns how many. Makes the directory on first use. */
int ol_rebuild__spill_plan(rebuild_t *rb, int32_t p, int source, int *targets, int max_targets);
/* A record into w's file (made on the first). A failure is logged and
 * marks w failed. */
void ol_rebuild__spill_put(const rebuild_t *rb, spill_writer_t *w, int spill, int t, int sub,
                           const ol_event_rec_t *rec);
/* Flushes and closes w; false when any of its writes failed. */
bool ol_rebuild__spill_close(spill_writer_t *w);
/* After a pass: its spill sets complete (ok) or removed, and the sets no
 * queued unit needs removed. */
void ol_rebuild__spill_pass_end(rebuild_t *rb, bool ok);
/* Every file and the directory removed. */
void ol_rebuild__spill_cleanup(rebuild_t *rb);
/* Removes the spill directories of this host's rebuilds that were killed
 * before they could (kill -9, a crash): their process no longer exists. */
void ol_rebuild__spill_sweep(void);
/* Each record of a spill file, in the order written: fn's error stops. */
typedef ol_err_t (*spill_read_fn)(void *opaque, const ol_event_rec_t *rec);
ol_err_t ol_rebuild__spill_read(const rebuild_t *rb, int spill, int t, int sub, spill_read_fn fn, void *opaque,
                                char *errstr, size_t errstr_size);

/* Replays into the shadow: with bulk, the current pass; without, every
 * partition from its stored offset to its end (the catch-up). */
ol_err_t ol_rebuild__replay(rebuild_t *rb, ol_project_bulk_t *bulk, ol_rt_stats_t *stats);

#endif
