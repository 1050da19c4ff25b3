/* The runtime's rebalancing: assignment seeks to the offsets stored in
 * PostgreSQL; revocation drops what was read of the partitions. */
#include "consumers/runtime_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/util.h"

/* ---- rebalancing ------------------------------------------------------- */

static bool in_parts(const void *ctx, const char *topic, int32_t partition) {
    return rd_kafka_topic_partition_list_find(ctx, topic, partition) != NULL;
}

/* A batch in flight is finished before the group changes: its offsets are
 * written while its partitions are still ours, and the applier's connection
 * is free for on_assign. An error stops the consumer. */
static void rebalance_wait(ol_rt_t *rt) {
    char errstr[sizeof(rt->fatal_msg)];
    ol_err_t err = ol_rt__inflight_wait(rt, errstr, sizeof(errstr));
    if (err && !rt->fatal) {
        rt->fatal = err;
        snprintf(rt->fatal_msg, sizeof(rt->fatal_msg), "%s", errstr);
        rt->stop = 1;
    }
}

static void on_assign(ol_rt_t *rt, rd_kafka_topic_partition_list_t *all) {
    char errstr[512];
    /* the role may take only some of them: the others stay unconsumed */
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(all->cnt + 1);
    for (int i = 0; i < all->cnt; i++)
        if (!rt->role->takes_partition ||
            rt->role->takes_partition(rt->role->opaque, ol_rt__topic_index(rt, all->elems[i].topic),
                                      all->elems[i].partition))
            rd_kafka_topic_partition_list_add(parts, all->elems[i].topic, all->elems[i].partition);
    span_t *spans = ol_xcalloc((size_t)parts->cnt + 1, sizeof(*spans));
    int64_t *stored = ol_xcalloc((size_t)parts->cnt + 1, sizeof(*stored));
    for (int i = 0; i < parts->cnt; i++)
        spans[i] = (span_t){ol_rt__topic_index(rt, parts->elems[i].topic), parts->elems[i].partition, 0, 0};
    for (int attempt = 0;; attempt++) {
        ol_err_t err = ol_rt__pg_ensure(rt, &rt->pipe.appliers[0], errstr, sizeof(errstr));
        if (!err)
            err = ol_rt__load_offsets(rt, rt->pipe.appliers[0].pg, spans, (size_t)parts->cnt, stored, false, errstr,
                                      sizeof(errstr));
        if (!err)
            break;
        if (!ol_err_is_retriable(err) || rt->stop) {
            rt->fatal = err ? err : OL_ERR_PG;
            snprintf(rt->fatal_msg, sizeof(rt->fatal_msg), "could not read the stored offsets: %.400s", errstr);
            rt->stop = 1;
            break;
        }
        ol_log_warn("could not read the stored offsets, will retry: %s", errstr);
        ol_rt__backoff(rt, attempt);
    }
    rt->reb.backlog = 0;
    for (int i = 0; i < parts->cnt; i++) {
        int64_t low = 0, high = 0;
        parts->elems[i].offset = stored[i] >= 0 ? stored[i] : RD_KAFKA_OFFSET_BEGINNING;
        if (!rd_kafka_query_watermark_offsets(rt->rk, parts->elems[i].topic, parts->elems[i].partition, &low, &high,
                                              (int)ol_conf_int(rt->conf, "broker.wait.ms")))
            rt->reb.backlog += high - (stored[i] > low ? stored[i] : low);
    }
    ol_kafka_assign(rt->rk, parts);
    rt->reb.assigned = parts->cnt;
    rt->reb.at_end = 0;
    rd_kafka_topic_partition_list_destroy(rt->reb.eof);
    rt->reb.eof = rd_kafka_topic_partition_list_new(parts->cnt + 1);
    ol_log_info("assigned %d partitions, resuming at the offsets stored in PostgreSQL", parts->cnt);
    free(spans);
    free(stored);
    rd_kafka_topic_partition_list_destroy(parts);
}

void ol_rt__rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    ol_rt_t *rt = opaque;
    rebalance_wait(rt);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        on_assign(rt, parts);
    } else {
        /* what was read of partitions no longer ours is not applied: the
         * next owner reads it again */
        ol_rt__batch_drop(rt, rt->pipe.cur, in_parts, parts);
        ol_kafka_assign(rk, NULL);
        rt->reb.assigned = 0;
        rt->reb.at_end = 0;
        ol_log_info("revoked %d partitions", parts->cnt);
    }
}
