/* orderlog rebuild, the replay: the log in passes, each folded in memory
 * and written with COPY while the next one runs (consumers/README.md,
 * "Rebuild in passes"). See rebuild.c. */
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/pg.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/project.h"
#include "consumers/rebuild.h"
#include "consumers/runtime.h"
#include "consumers/sale_project.h"

/* SIGTERM, SIGINT: the rebuild stops (the replay running ends after its
 * batch) and drops the shadow; the live projection stays as it was. */
static volatile sig_atomic_t stopping;
static ol_rt_t *volatile replaying;

void ol_rebuild__on_signal(int sig) {
    (void)sig;
    stopping = 1;
    if (replaying)
        ol_rt_stop(replaying);
}

bool ol_rebuild__stopping(void) {
    return stopping;
}

ol_err_t ol_rebuild__check_stop(rebuild_t *rb) {
    return stopping ? ol_errf(rb->errstr, rb->errstr_size, OL_ERR_INVALID, "stopped by a signal: nothing swapped")
                    : OL_ERR_OK;
}

static bool pass_takes_partition(void *opaque, int topic, int32_t partition);
static bool pass_takes_record(void *opaque, int topic, int32_t partition, int64_t offset, const void *key,
                              size_t key_len);

static void queue_push(rebuild_t *rb, unit_t u) {
    if (rb->nqueue == rb->queue_cap) {
        rb->queue_cap = rb->queue_cap ? rb->queue_cap * 2 : 64;
        rb->queue = ol_xrealloc(rb->queue, rb->queue_cap * sizeof(*rb->queue));
    }
    rb->queue[rb->nqueue++] = u;
}

static void progress(void *opaque, const ol_rt_t *rt) {
    rebuild_t *rb = opaque;
    int64_t now = ol_time_mono_us();
    if (now - rb->last_print_us < 1000000)
        return;
    rb->last_print_us = now;
    ol_rt_stats_t st;
    ol_rt_stats(rt, &st);
    int64_t done = rb->events_done + st.events;
    double secs = (double)(now - rb->start_us) / 1e6;
    if (rb->log_events > 0)
        fprintf(stderr, "rebuild: %5.1f%% (%lld of %lld events, pass %d), %.0f events/s\n",
                100.0 * (double)done / (double)rb->log_events, (long long)done, (long long)rb->log_events,
                rb->passes + 1, (double)done / secs);
    else
        fprintf(stderr, "rebuild: %lld events, %.0f events/s\n", (long long)done, (double)done / secs);
}

/* Replays into the shadow: with bulk, the share of the log the current
 * pass takes, to the ends planned; without, every partition from its
 * stored offset until each reached its end (the catch-up). */
ol_err_t ol_rebuild__replay(rebuild_t *rb, ol_project_bulk_t *bulk, ol_rt_stats_t *stats) {
    ol_conf_t *conf = ol_conf_dup(rb->conf);
    char kafka_group[256];
    snprintf(kafka_group, sizeof(kafka_group), "%.200srebuild-%d", ol_conf_str(rb->conf, "topic.prefix"),
             (int)getpid());
    ol_conf_set(conf, "projection.schema", rb->shadow, NULL, 0);
    ol_conf_set(conf, "consumer.synchronous.commit", "false", NULL, 0); /* unlogged tables: nothing to wait for */
    ol_conf_set(conf, "consumer.group.id", rb->group, NULL, 0);
    ol_rt_role_t role = *ol_project_role();
    role.kafka_group = kafka_group;
    role.opaque = bulk;
    role.parallel_apply = !bulk; /* the bulk rows are one state */
    if (bulk) {
        role.takes_partition = pass_takes_partition;
        role.takes_record = pass_takes_record;
    }
    ol_err_t err = OL_ERR_OK;
    ol_rt_t *rt = ol_rt_new(conf, &role, rb->errstr, rb->errstr_size);
    if (!rt) {
        ol_conf_destroy(conf);
        return OL_ERR_UNREACHABLE;
    }
    replaying = rt;
    ol_rt_set_dlq(rt, false); /* the live projector sent them already */
    ol_rt_on_batch(rt, progress, rb);
    err = stopping ? OL_ERR_OK : ol_rt_run(rt, true, rb->errstr, rb->errstr_size);
    replaying = NULL;
    ol_rt_stats(rt, stats);
    ol_rt_destroy(rt);
    char kerr[512];
    if (ol_kafka_delete_group(conf, kafka_group, kerr, sizeof(kerr)))
        ol_log_warn("%s", kerr); /* harmless: the group only keeps its offsets */
    ol_conf_destroy(conf);
    return err ? err : ol_rebuild__check_stop(rb);
}

/* ---- the passes ----------------------------------------------------------- */

bool ol_rebuild__pass_takes_key(const rebuild_t *rb, int32_t p, const void *key, size_t key_len) {
    return ol_rebuild__pass_takes_class(rb, p, ol_rebuild__key_class(key, key_len));
}

bool ol_rebuild__pass_takes_class(const rebuild_t *rb, int32_t p, uint32_t h) {
    for (int i = 0; i < rb->npass; i++) {
        const unit_t *u = &rb->pass[i];
        if (u->partition == p && h % u->k == u->j)
            return true;
    }
    return false;
}

/* The classes of a partition are of about even size. */
uint32_t ol_rebuild__key_class(const void *key, size_t len) {
    uint64_t h = ol_hash_fnv1a64(OL_FNV1A64_SEED, key, len);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t)h;
}

/* The runtime's callbacks (takes_partition, takes_record) during a pass:
 * the bulk topics' partitions of the pass's units, the sale topics until a
 * pass replayed them. */
static bool pass_takes_partition(void *opaque, int topic, int32_t partition) {
    rebuild_t *rb = ol_project_bulk_owner(opaque);
    if (topic < 0 || topic >= rb->ntopics)
        return false;
    if (!rb->bulk_topic[topic])
        return !rb->sale_done;
    for (int i = 0; i < rb->npass; i++)
        if (rb->pass[i].partition == partition)
            return true;
    return false;
}

/* The poll thread, as records arrive (the progress line reads the atomics
 * from the applier). */
static bool pass_takes_record(void *opaque, int topic, int32_t partition, int64_t offset, const void *key,
                              size_t key_len) {
    rebuild_t *rb = ol_project_bulk_owner(opaque);
    if (topic < 0 || topic >= rb->ntopics)
        return true;
    if (!rb->bulk_topic[topic]) {
        atomic_fetch_add(&rb->pass_sale_events, 1);
        return true;
    }
    /* past the end planned: the catch-up's (the passes over one partition
     * must all stop at the same record) */
    if (partition < 0 || partition >= MAX_PARTS || offset >= rb->ends[topic][partition])
        return false;
    atomic_llong *last = &rb->last_seen[topic][partition];
    for (long long seen = atomic_load(last); offset > seen && !atomic_compare_exchange_weak(last, &seen, offset);)
        ;
    return ol_rebuild__pass_takes_key(rb, partition, key, key_len);
}

/* The watermarks of every partition replayed: where the passes stop, and
 * how many events each partition number holds. */
ol_err_t ol_rebuild__plan(rebuild_t *rb) {
    rd_kafka_t *rk = ol_kafka_new(rb->conf, OL_KAFKA_ADMIN, "orderlog-rebuild", NULL, rb->errstr, rb->errstr_size);
    if (!rk)
        return OL_ERR_CONFIG;
    ol_err_t err = OL_ERR_OK;
    int64_t deadline = ol_time_mono_us() + ol_conf_int(rb->conf, "broker.wait.ms") * 1000;
    for (rb->ntopics = 0; rb->topics[rb->ntopics] && rb->ntopics < MAX_TOPICS && !err; rb->ntopics++) {
        int t = rb->ntopics;
        char *name = rb->topic_names[t];
        ol_kafka_topic_name(rb->conf, rb->topics[t], name, sizeof(rb->topic_names[0]));
        rb->bulk_topic[t] = !ol_sale_project_takes(rb->topics[t]);
        int32_t n = ol_kafka_partition_count(rk, rb->conf, name);
        rb->topic_parts[t] = n;
        if (n > MAX_PARTS) {
            err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_UNSUPPORTED, "topic %s has %d partitions, more than %d",
                          name, (int)n, MAX_PARTS);
            break;
        }
        for (int32_t p = 0; p < n; p++) {
            int64_t lo = 0, hi = 0;
            rd_kafka_resp_err_t kerr = ol_kafka_watermarks(rk, name, p, 5000, deadline, NULL, &lo, &hi);
            if (kerr) {
                err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_KAFKA, "could not read the end of %s[%d]: %s", name,
                              (int)p, rd_kafka_err2str(kerr));
                break;
            }
            rb->log_events += hi - lo;
            rb->starts[t][p] = lo;
            if (!rb->bulk_topic[t])
                continue;
            rb->ends[t][p] = hi;
            rb->part_events[p] += hi - lo;
            if (p + 1 > rb->nparts)
                rb->nparts = p + 1;
        }
    }
    rd_kafka_destroy(rk);
    /* the queue is a stack: its last unit goes first */
    for (int32_t p = rb->nparts - 1; p >= 0 && !err; p--)
        if (rb->part_events[p] > 0)
            queue_push(rb, (unit_t){p, 1, 0});
    return err;
}

/* Rows a unit is expected to fold, from what the passes so far held per
 * event (with a margin: keys are not spread quite evenly). */
static double unit_rows(const rebuild_t *rb, const unit_t *u) {
    return (double)rb->part_events[u->partition] / u->k * rb->rows_per_event * 1.15;
}

/* The next pass: units from the queue while their rows fit in max_rows
 * (0: everything). A partition alone over it goes in classes of its keys. */
static void next_pass(rebuild_t *rb, size_t max_rows) {
    double rows = 0;
    rb->npass = 0;
    while (rb->nqueue && rb->npass < MAX_PASS_UNITS) {
        unit_t u = rb->queue[rb->nqueue - 1];
        double r = unit_rows(rb, &u);
        if (max_rows && rb->npass == 0 && u.k == 1 && r > (double)max_rows) {
            uint32_t k = (uint32_t)ceil(r / (double)max_rows);
            rb->nqueue--;
            for (uint32_t j = k; j-- > 0;)
                queue_push(rb, (unit_t){u.partition, k, j});
            continue;
        }
        if (max_rows && rb->npass > 0 && rows + r > (double)max_rows)
            break;
        rb->pass[rb->npass++] = u;
        rb->nqueue--;
        rows += r;
    }
}

/* The shadow's offsets of the pass's partitions of the bulk topics: with
 * seen, where the pass stopped (the last record before the end planned,
 * plus one: what the live projector stores once it applied that record);
 * without, none (a pass over a share of the keys reads the partition from
 * its start). */
static ol_err_t pass_offsets(rebuild_t *rb, bool seen) {
    char *group = PQescapeLiteral(rb->pg, rb->group, strlen(rb->group));
    ol_err_t err = OL_ERR_OK;
    for (int t = 0; t < rb->ntopics && !err; t++) {
        if (!rb->bulk_topic[t])
            continue;
        char *topic = PQescapeLiteral(rb->pg, rb->topic_names[t], strlen(rb->topic_names[t]));
        for (int i = 0; i < rb->npass && !err; i++) {
            int32_t p = rb->pass[i].partition;
            long long last = atomic_load(&rb->last_seen[t][p]);
            err = ol_rebuild__execf(
                rb, "delete from %s.consumer_offsets where group_id = %s and topic = %s and partition = %d", rb->shadow,
                group, topic, (int)p);
            if (!err && seen && last >= 0)
                err = ol_rebuild__execf(
                    rb,
                    "insert into %s.consumer_offsets (group_id, topic, partition, next_offset) values (%s, %s, "
                    "%d, %lld)",
                    rb->shadow, group, topic, (int)p, last + 1);
        }
        PQfreemem(topic);
    }
    PQfreemem(group);
    return err;
}

/* The process's resident memory now, in MB (0 where /proc has none). */
static long rss_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

static void describe_pass(const rebuild_t *rb, char *out, size_t out_size) {
    size_t len = 0;
    for (int i = 0; i < rb->npass && len + 64 < out_size; i++) {
        const unit_t *u = &rb->pass[i];
        if (u->k == 1)
            len += (size_t)snprintf(out + len, out_size - len, "%s%d", i ? ", " : "", (int)u->partition);
        else
            len += (size_t)snprintf(out + len, out_size - len, "%s%d (keys %u of %u)", i ? ", " : "", (int)u->partition,
                                    u->j + 1, u->k);
    }
}

static size_t set_rows(ol_project_bulk_t **bulks, int n) {
    size_t rows = 0;
    for (int i = 0; i < n; i++)
        rows += ol_project_bulk_rows(bulks[i]);
    return rows;
}

/* The rows of a pass, written while the next pass folds (on connections
 * of their own): the next one only holds what it folded meanwhile, and a
 * pass's rows go out once the flush before has ended. */
typedef struct flusher_s {
    rebuild_t *rb;
    PGconn *pg[2];
    pthread_t thread;
    bool running;
    ol_project_bulk_t **bulks;
    int nbulks;
    int pass;
    double secs;
    ol_err_t err;
    char errstr[1024];
} flusher_t;

static void *flusher_main(void *arg) {
    flusher_t *f = arg;
    int64_t t0 = ol_time_mono_us();
    f->err = OL_ERR_OK;
    for (int i = 0; i < f->nbulks && !f->err; i++)
        f->err = ol_project_bulk_flush(f->bulks[i], f->pg[0], f->pg[1], f->rb->shadow, f->errstr, sizeof(f->errstr));
    malloc_trim(0); /* the pass's rows, back to the system */
    atomic_store(&f->rb->flushing_rows, 0);
    f->secs = (double)(ol_time_mono_us() - t0) / 1e6;
    return NULL;
}

/* What a flush that ended says: its error, or its time. */
static ol_err_t flusher_done(flusher_t *f) {
    if (f->err)
        return ol_errf(f->rb->errstr, f->rb->errstr_size, f->err, "%s", f->errstr);
    fprintf(stderr, "rebuild: pass %d written in %.1f s\n", f->pass, f->secs);
    return OL_ERR_OK;
}

/* Waits for the flush running, if any. */
static ol_err_t flusher_wait(flusher_t *f) {
    if (!f->running)
        return OL_ERR_OK;
    pthread_join(f->thread, NULL);
    f->running = false;
    return flusher_done(f);
}

/* Writes the rows of bulks once the flush before has ended; returns at
 * once. */
static ol_err_t flusher_start(flusher_t *f, ol_project_bulk_t **bulks, int nbulks, int pass) {
    ol_err_t err = flusher_wait(f);
    if (err)
        return err;
    f->bulks = bulks;
    f->nbulks = nbulks;
    f->pass = pass;
    atomic_store(&f->rb->flushing_rows, (long long)set_rows(bulks, nbulks));
    if (pthread_create(&f->thread, NULL, flusher_main, f)) {
        flusher_main(f); /* no thread: here and now */
        return flusher_done(f);
    }
    f->running = true;
    return OL_ERR_OK;
}

static size_t set_bytes(ol_project_bulk_t **bulks, int n) {
    size_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += ol_project_bulk_bytes(bulks[i]);
    return bytes;
}

/* The sale topics (sale-events, blacklist), which take the normal path
 * (their tables have their keys): once, on the runtime, before the passes.
 * Nothing when they are empty. */
static ol_err_t replay_sale(rebuild_t *rb, ol_project_bulk_t *bulk) {
    int64_t bulk_events = 0;
    for (int32_t p = 0; p < rb->nparts; p++)
        bulk_events += rb->part_events[p];
    if (rb->log_events - bulk_events <= 0) {
        rb->sale_done = true;
        return OL_ERR_OK;
    }
    rb->npass = 0; /* no partition of the bulk topics */
    int64_t t0 = ol_time_mono_us();
    ol_rt_stats_t st;
    ol_err_t err = ol_rebuild__replay(rb, bulk, &st);
    if (err)
        return err;
    rb->sale_done = true;
    rb->events_done += st.events;
    fprintf(stderr, "rebuild: the sale topics: %lld events in %.1f s\n", (long long)st.events,
            (double)(ol_time_mono_us() - t0) / 1e6);
    return OL_ERR_OK;
}

/* Every pass, each written out with COPY once it ends, while the next one
 * runs. A pass that passes rebuild.bulk.rows is given up and its units
 * split in two. */
ol_err_t ol_rebuild__replay_passes(rebuild_t *rb, ol_project_bulk_t *bulks[2][MAX_READERS], int nreaders,
                                   size_t max_rows) {
    bool learned = false;
    int cur = 0;
    flusher_t f = {.rb = rb};
    ol_err_t err = OL_ERR_OK;
    rb->spill_subs = nreaders;
    ol_rebuild__spill_sweep();
    for (int t = 0; t < MAX_TOPICS; t++)
        for (int p = 0; p < MAX_PARTS; p++)
            rb->part_last[t][p] = -1;
    for (int i = 0; i < 2; i++)
        if (!(f.pg[i] = ol_pg_connect(rb->conf, rb->errstr, rb->errstr_size)))
            err = OL_ERR_UNREACHABLE;
    if (!err)
        err = replay_sale(rb, bulks[0][0]);
    while (rb->nqueue && !err) {
        ol_project_bulk_t **set = bulks[cur];
        next_pass(rb, max_rows);
        for (int t = 0; t < MAX_TOPICS; t++)
            for (int i = 0; i < rb->npass; i++)
                atomic_store(&rb->last_seen[t][rb->pass[i].partition], -1);
        if ((err = pass_offsets(rb, false)))
            break;
        char what[2048];
        describe_pass(rb, what, sizeof(what));
        int64_t t0 = ol_time_mono_us();
        ol_rt_stats_t st;
        err = ol_rebuild__read_pass(rb, set, nreaders, max_rows, &st);
        int64_t bulk_events = st.events;
        size_t rows = set_rows(set, nreaders), bytes = set_bytes(set, nreaders);
        rb->peak_rows = rows > rb->peak_rows ? rows : rb->peak_rows;
        rb->peak_bytes = bytes > rb->peak_bytes ? bytes : rb->peak_bytes;
        if (err == OL_ERR_TOO_LARGE) {
            /* given up: what it folded is forgotten, its units split */
            fprintf(stderr,
                    "rebuild: pass over partitions %s held more than %zu rows after %lld events: splitting it\n", what,
                    max_rows, (long long)bulk_events);
            err = OL_ERR_OK;
            for (int i = 0; i < nreaders; i++)
                ol_project_bulk_reset(set[i]);
            double seen_rate = bulk_events > 0 ? (double)rows / (double)bulk_events : 1.0;
            if (seen_rate > rb->rows_per_event)
                rb->rows_per_event = seen_rate;
            rb->passes_given_up++;
            for (int i = rb->npass; i-- > 0 && !err;) {
                unit_t u = rb->pass[i];
                if (u.k >= (1u << 20))
                    err = ol_errf(rb->errstr, rb->errstr_size, OL_ERR_TOO_LARGE,
                                  "partition %d: a millionth of its keys holds more than %zu rows (rebuild.bulk.rows)",
                                  (int)u.partition, max_rows);
                queue_push(rb, (unit_t){u.partition, u.k * 2, u.j + u.k});
                queue_push(rb, (unit_t){u.partition, u.k * 2, u.j});
            }
            ol_rebuild__spill_pass_end(rb, false); /* what it spilled is incomplete */
            continue;
        }
        /* its offsets now: nothing reads the shadow's before the last flush
         * has ended */
        if (err || (err = pass_offsets(rb, true)))
            break;
        /* where every later pass over these partitions stops, and the
         * spill sets it filled */
        for (int t = 0; t < rb->ntopics; t++)
            for (int i = 0; i < rb->npass; i++)
                rb->part_last[t][rb->pass[i].partition] = atomic_load(&rb->last_seen[t][rb->pass[i].partition]);
        ol_rebuild__spill_pass_end(rb, true);
        rb->kafka_read += rb->pass_kafka;
        rb->files_read += rb->pass_files;
        rb->spilled += rb->pass_spilled;
        rb->spilled_bytes += rb->pass_spilled_bytes;
        long rss = rss_mb();
        rb->passes++;
        rb->events_done += st.events;
        if (bulk_events > 0) {
            double rate = (double)rows / (double)bulk_events;
            rb->rows_per_event = learned && rb->rows_per_event > rate ? rb->rows_per_event : rate;
            learned = true;
        }
        fprintf(stderr,
                "rebuild: pass %d over partitions %s: %lld events, %zu rows (%zu MB) folded in %.1f s on %d threads "
                "(their time: decoding %.1f s, applying %.1f s, waiting for records %.1f s, for the pass before to be "
                "written %.1f s; the consumer: assigned "
                "in %.2f s, first records %.2f s after, closed in %.2f s); records read from Kafka %lld, from spill "
                "files %lld, spilled %lld (%lld MB); process RSS %ld MB\n",
                rb->passes, what, (long long)st.events, rows, bytes >> 20, (double)(ol_time_mono_us() - t0) / 1e6,
                nreaders, (double)st.fold_us / 1e6, (double)st.apply_us / 1e6, (double)st.idle_us / 1e6,
                rb->pass_flush_wait_s, rb->pass_open_s, rb->pass_first_s, rb->pass_close_s, (long long)rb->pass_kafka,
                (long long)rb->pass_files, (long long)rb->pass_spilled, (long long)(rb->pass_spilled_bytes >> 20), rss);
        if ((err = flusher_start(&f, set, nreaders, rb->passes)))
            break;
        cur = 1 - cur;
    }
    ol_err_t ferr = flusher_wait(&f);
    ol_rebuild__spill_cleanup(rb); /* also after a failure or a signal */
    for (int i = 0; i < 2; i++)
        if (f.pg[i])
            PQfinish(f.pg[i]);
    return err ? err : ferr;
}
