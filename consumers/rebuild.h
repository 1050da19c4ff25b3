#ifndef OL_REBUILD_H
#define OL_REBUILD_H

/* orderlog rebuild's parts (internal): the run and the comparison
 * (rebuild.c), the shadow schema (rebuild_shadow.c), the replay in passes
 * (rebuild_passes.c). The command is ol_cmd_rebuild (ops/admin/commands.h). */
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/conf.h"
#include "common/base/err.h"
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
/* The passes over the log (rb->queue). */
ol_err_t ol_rebuild__plan(rebuild_t *rb);
/* Every pass, each written out once it ends, while the next one runs. */
ol_err_t ol_rebuild__replay_passes(rebuild_t *rb, ol_project_bulk_t *bulks[2][MAX_READERS], int nreaders,
                                   size_t max_rows);
/* Reads the current pass (rb->pass) of the bulk topics by assign(): the
 * records of its keys dealt by key to nbulks folder threads, each folding
 * and applying into its own bulks[i] (a key meets one folder only); past
 * max_rows rows in all, OL_ERR_TOO_LARGE (rebuild_read.c). */
ol_err_t ol_rebuild__read_pass(rebuild_t *rb, ol_project_bulk_t **bulks, int nbulks, size_t max_rows,
                               ol_rt_stats_t *st);
/* Replays into the shadow: with bulk, the current pass; without, every
 * partition from its stored offset to its end (the catch-up). */
ol_err_t ol_rebuild__replay(rebuild_t *rb, ol_project_bulk_t *bulk, ol_rt_stats_t *stats);

#endif
