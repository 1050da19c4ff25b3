#include "common/base/kafka.h"
#include "common/base/time.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/http.h"
#include "common/base/log.h"
#include "common/base/redact.h"

typedef struct set_ctx_s {
    rd_kafka_conf_t *kconf;
    char *errstr;
    size_t errstr_size;
} set_ctx_t;

static int set_one(void *opaque, const char *name, const char *value) {
    set_ctx_t *ctx = opaque;
    char kerr[256];
    if (rd_kafka_conf_set(ctx->kconf, name, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
        ol_redact_text_inplace(kerr, sizeof(kerr));
        ol_errf(ctx->errstr, ctx->errstr_size, OL_ERR_CONFIG, "property \"kafka.%s\": %s", name, kerr);
        return 1;
    }
    return 0;
}

/* librdkafka's own log lines go through ours (syslog levels). */
ol_log_level_t ol_kafka_log_level(int level, const char *buf) {
    ol_log_level_t l = level <= 3 ? OL_LOG_ERROR : level == 4 ? OL_LOG_WARN : level <= 6 ? OL_LOG_INFO : OL_LOG_DEBUG;
    /* a broker still loading its coordinator state (just started, or a
     * coordinator that moved), which librdkafka retries by itself: nothing
     * for an operator to do unless it lasts, and then other errors follow */
    if (l == OL_LOG_WARN && (strstr(buf, "Coordinator load in progress") || strstr(buf, "Coordinator not available")) &&
        strstr(buf, "retrying"))
        l = OL_LOG_INFO;
    return l;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    ol_log(ol_kafka_log_level(level, buf), "kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

/* ---- client profiles ---------------------------------------------------- */

typedef struct profile_s {
    const char *name;
    rd_kafka_type_t type;
    const char *const *base;  /* pairs set first (NULL-terminated), or NULL */
    const char *const *props; /* pairs over them */
} profile_t;

/* Every client: after a broker comes back, reconnect within a second, as
 * the Java client does (reconnect.backoff.max.ms 1000); librdkafka's own
 * default backs off up to 10 s, which after an outage of a few seconds left
 * each role up to 10 s more without the broker. And the leaders asked for
 * every 5 s (topic.metadata.refresh.interval.ms, 5 min by default): a
 * leader that died (connection refused, no "not leader" answer) is only
 * left once metadata names another, and with the default a partition of
 * decide stayed paused until the dead broker came back (30 s in the
 * 3-broker fault test) while the cluster had moved it 10 s after the
 * kill. */
static const char *const client_props[] = {"reconnect.backoff.max.ms", "1000", "topic.metadata.refresh.interval.ms",
                                           "5000", NULL};

/* Producers place keys as the Java client does (murmur2), so a key written
 * by orderlog and by anyone else lands on one partition, in order; they
 * batch and compress (the roles set how long they linger). */
static const char *const producer_props[] = {"enable.idempotence",
                                             "true",
                                             "acks",
                                             "all",
                                             "partitioner",
                                             "murmur2_random",
                                             "batch.num.messages",
                                             "10000",
                                             "batch.size",
                                             "1000000",
                                             "compression.codec",
                                             "lz4",
                                             NULL};
/* A transaction outlives a broker outage or a coordinator failover (seconds
 * to tens of seconds): 60 s, within the broker's default
 * transaction.max.timeout.ms (15 min). librdkafka derives message.timeout.ms
 * (60 s) from it, so the records of a batch wait that long for a broker
 * instead of failing the transaction after 10 s. The price: a decider killed
 * with a transaction open and not restarted holds back read_committed readers
 * of its partitions (and the next owner's offset fetch) until the broker
 * aborts it, up to 60 s; a restart with the same decide.instance aborts it at
 * once. consumer.shutdown.timeout.ms (30 s) stays below it: a stop that gives
 * up leaves the transaction to the broker or the next start.
 * retry.backoff.ms 10 (100 by default): a transaction begun right after
 * the previous commit can find the coordinator still writing that commit's
 * markers (CONCURRENT_TRANSACTIONS), and librdkafka retries the
 * AddOffsetsToTxn after retry.backoff.ms: with 100 ms, about one decide
 * transaction in 50 took 100 ms more, and p99 at 10,000 requests/s went
 * from ~40 ms to 200-600 ms. */
static const char *const txn_props[] = {"transaction.timeout.ms", "60000", "retry.backoff.ms", "10", NULL};
static const char *const consumer_props[] = {"enable.auto.commit",
                                             "false",
                                             "enable.auto.offset.store",
                                             "false",
                                             "isolation.level",
                                             "read_committed",
                                             "auto.offset.reset",
                                             "earliest",
                                             NULL};
static const char *const reader_props[] = {"enable.partition.eof", "true", NULL};
static const char *const admin_props[] = {NULL};

static const profile_t profiles[OL_KAFKA_NPROFILES] = {
    [OL_KAFKA_PRODUCER] = {"producer", RD_KAFKA_PRODUCER, NULL, producer_props},
    [OL_KAFKA_TXN_PRODUCER] = {"txn-producer", RD_KAFKA_PRODUCER, producer_props, txn_props},
    [OL_KAFKA_CONSUMER] = {"consumer", RD_KAFKA_CONSUMER, NULL, consumer_props},
    [OL_KAFKA_READER] = {"reader", RD_KAFKA_CONSUMER, consumer_props, reader_props},
    [OL_KAFKA_ADMIN] = {"admin", RD_KAFKA_PRODUCER, NULL, admin_props},
};

/* kafka.* properties the user may not change: the allowed values (NULL:
 * none, orderlog sets it) and what to do instead. */
static const struct {
    const char *name;
    const char *allowed[3];
    const char *why;
} locked[] = {
    {"partitioner",
     {"murmur2_random", "murmur2", NULL},
     "orderlog places keys with murmur2_random, the Java client's partitioner, so that every producer of a key "
     "puts it on one partition (docs/events.md, placement)"},
    {"isolation.level", {"read_committed", NULL}, "orderlog reads only committed transactions"},
    {"enable.idempotence", {"true", NULL}, "orderlog's producers are idempotent (no duplicates on retries)"},
    {"enable.auto.commit", {"false", NULL}, "orderlog commits offsets only after the work they cover"},
    {"group.id", {NULL}, "orderlog sets it per role: use consumer.group.id"},
    {"group.instance.id", {NULL}, "orderlog derives it from decide.instance"},
    {"transactional.id", {NULL}, "orderlog derives it from decide.instance"},
};

const char *ol_kafka_profile_name(ol_kafka_profile_t profile) {
    return profiles[profile].name;
}

rd_kafka_type_t ol_kafka_profile_type(ol_kafka_profile_t profile) {
    return profiles[profile].type;
}

int ol_kafka_profile_find(const char *name) {
    for (int i = 0; i < OL_KAFKA_NPROFILES; i++)
        if (!strcmp(profiles[i].name, name))
            return i;
    return -1;
}

static int check_locked(void *opaque, const char *name, const char *value) {
    set_ctx_t *ctx = opaque;
    for (size_t i = 0; i < sizeof(locked) / sizeof(locked[0]); i++) {
        if (strcmp(locked[i].name, name))
            continue;
        for (const char *const *a = locked[i].allowed; *a; a++)
            if (!strcmp(*a, value))
                return 0;
        ol_errf(ctx->errstr, ctx->errstr_size, OL_ERR_CONFIG, "property \"kafka.%s\" cannot be \"%s\": %s", name, value,
                locked[i].why);
        return 1;
    }
    return 0;
}

static int set_pairs(set_ctx_t *ctx, const char *const *pairs) {
    for (; pairs && pairs[0]; pairs += 2)
        if (set_one(ctx, pairs[0], pairs[1]))
            return 1;
    return 0;
}

rd_kafka_conf_t *ol_kafka_conf_new(const ol_conf_t *conf, ol_kafka_profile_t profile, const char *client_id,
                                   const char *const *tuning, char *errstr, size_t errstr_size) {
    set_ctx_t ctx = {rd_kafka_conf_new(), errstr, errstr_size};
    rd_kafka_conf_set_log_cb(ctx.kconf, log_cb);
    const char *const id[] = {"client.id", client_id, NULL};
    if (ol_conf_foreach_kafka(conf, check_locked, &ctx) || set_pairs(&ctx, client_props) ||
        set_pairs(&ctx, profiles[profile].base) || set_pairs(&ctx, profiles[profile].props) || set_pairs(&ctx, id) ||
        set_pairs(&ctx, tuning) || ol_conf_foreach_kafka(conf, set_one, &ctx)) {
        rd_kafka_conf_destroy(ctx.kconf);
        return NULL;
    }
    return ctx.kconf;
}

rd_kafka_t *ol_kafka_new(const ol_conf_t *conf, ol_kafka_profile_t profile, const char *client_id,
                         const char *const *tuning, char *errstr, size_t errstr_size) {
    return ol_kafka_new_with(conf, profile, client_id, tuning, NULL, errstr, errstr_size);
}

rd_kafka_t *ol_kafka_new_with(const ol_conf_t *conf, ol_kafka_profile_t profile, const char *client_id,
                              const char *const *tuning, const ol_kafka_callbacks_t *cb, char *errstr,
                              size_t errstr_size) {
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, profile, client_id, tuning, errstr, errstr_size);
    if (!kconf)
        return NULL;
    if (cb && cb->dr_msg && profiles[profile].type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(kconf, cb->dr_msg);
    if (cb && cb->error)
        rd_kafka_conf_set_error_cb(kconf, cb->error);
    if (cb)
        rd_kafka_conf_set_opaque(kconf, cb->opaque);
    rd_kafka_t *rk = ol_kafka_handle_new(profiles[profile].type, kconf, errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(kconf);
    return rk;
}

rd_kafka_t *ol_kafka_handle_new(rd_kafka_type_t type, rd_kafka_conf_t *kconf, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = rd_kafka_new(type, kconf, errstr, errstr_size);
    if (!rk)
        ol_redact_text_inplace(errstr, errstr_size);
    return rk;
}

static int write_user(void *opaque, const char *name, const char *value) {
    char *shown = ol_redact_value(name, value);
    fprintf(opaque, "%s = %s  # kafka.%s\n", name, shown, name);
    free(shown);
    return 0;
}

static int names_match(void *opaque, const char *name, const char *value) {
    (void)value;
    return !strcmp(opaque, name);
}

static void write_pairs(const ol_conf_t *conf, const char *const *pairs, const char *profile, FILE *out) {
    for (; pairs && pairs[0]; pairs += 2)
        if (!ol_conf_foreach_kafka(conf, names_match, (void *)pairs[0]))
            fprintf(out, "%s = %s  # profile %s\n", pairs[0], pairs[1], profile);
}

void ol_kafka_profile_write(const ol_conf_t *conf, ol_kafka_profile_t profile, FILE *out) {
    write_pairs(conf, client_props, "(every client)", out);
    write_pairs(conf, profiles[profile].base, profiles[profile].name, out);
    write_pairs(conf, profiles[profile].props, profiles[profile].name, out);
    ol_conf_foreach_kafka(conf, write_user, out);
}

int32_t ol_kafka_partition_count(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    int32_t n = 0;
    if (!rd_kafka_metadata(rk, 0, rkt, &md, (int)ol_conf_int(conf, "broker.wait.ms"))) {
        if (md->topic_cnt == 1 && !md->topics[0].err)
            n = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_topic_destroy(rkt);
    return n;
}

void ol_kafka_know_leaders(rd_kafka_t *rk, const char *topic) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rkt && !rd_kafka_metadata(rk, 0, rkt, &md, 5000))
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
}

/* Errors a leader that moves or died gives: no leader yet, "not leader",
 * or no answer (librdkafka asks the broker it knows, which may be gone). */
static bool leader_may_have_moved(rd_kafka_resp_err_t kerr) {
    return kerr == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION || kerr == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
           kerr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || kerr == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
           kerr == RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH || kerr == RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH ||
           kerr == RD_KAFKA_RESP_ERR__TRANSPORT || kerr == RD_KAFKA_RESP_ERR__TIMED_OUT;
}

rd_kafka_resp_err_t ol_kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int timeout_ms,
                                        int64_t deadline_us, const volatile sig_atomic_t *stop, int64_t *lo,
                                        int64_t *hi) {
    rd_kafka_resp_err_t kerr;
    while ((kerr = rd_kafka_query_watermark_offsets(rk, topic, partition, lo, hi, timeout_ms)) &&
           leader_may_have_moved(kerr) && !(stop && *stop) && ol_time_mono_us() < deadline_us) {
        ol_kafka_know_leaders(rk, topic);
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    return kerr;
}

ol_err_t ol_kafka_check_log_start(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic, char *errstr,
                                  size_t errstr_size) {
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");
    int32_t n = ol_kafka_partition_count(rk, conf, topic);
    if (n <= 0)
        return ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND, "topic %s does not exist (run `orderlog topics create`)",
                       topic);
    int64_t deadline = ol_time_mono_us() + (int64_t)timeout * 1000;
    for (int32_t p = 0; p < n; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t kerr = ol_kafka_watermarks(rk, topic, p, timeout, deadline, NULL, &lo, &hi);
        if (kerr)
            return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not read where %s [%" PRId32 "] starts: %s",
                           topic, p, rd_kafka_err2str(kerr));
        if (lo > 0)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "the beginning of %s [%" PRId32 "] was deleted: it starts at offset %" PRId64
                           " (retention or a deletion on the topic; `orderlog topics check` shows its configuration)",
                           topic, p, lo);
    }
    return OL_ERR_OK;
}

ol_err_t ol_kafka_check_replayable(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic, char *errstr,
                                   size_t errstr_size) {
    char why[512];
    ol_err_t err = ol_kafka_check_log_start(rk, conf, topic, why, sizeof(why));
    if (err != OL_ERR_INVALID)
        return err ? ol_errf(errstr, errstr_size, err, "%s", why) : OL_ERR_OK;
    if (ol_conf_bool(conf, "replay.allow.truncated")) {
        ol_log_warn("%s; replaying it anyway (replay.allow.truncated): what was deleted is missing", why);
        return OL_ERR_OK;
    }
    return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                   "%s; a replay would miss those events: refusing (-X replay.allow.truncated=true replays it anyway)",
                   why);
}

ol_err_t ol_kafka_check_replayable_topics(const ol_conf_t *conf, const char *const *names, char *errstr,
                                          size_t errstr_size) {
    rd_kafka_t *rk = ol_kafka_new(conf, OL_KAFKA_ADMIN, "orderlog-admin", NULL, errstr, errstr_size);
    if (!rk)
        return OL_ERR_CONFIG;
    ol_err_t err = OL_ERR_OK;
    for (; *names && !err; names++) {
        char topic[256];
        ol_kafka_topic_name(conf, *names, topic, sizeof(topic));
        if (strcmp(*names, "blacklist"))
            err = ol_kafka_check_replayable(rk, conf, topic, errstr, errstr_size);
    }
    rd_kafka_destroy(rk);
    return err;
}

int32_t ol_kafka_key_partition(const void *key, size_t key_len, int32_t partition_cnt) {
    /* librdkafka's murmur2 (the Java client's Utils.murmur2 & 0x7fffffff) */
    return rd_kafka_msg_partitioner_murmur2(NULL, key, key_len, partition_cnt, NULL, NULL);
}

ol_err_t ol_kafka_check_placement(const rd_kafka_message_t *rkm, int32_t partition_cnt, char *errstr,
                                  size_t errstr_size) {
    return ol_kafka_check_key_placement(rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "?", rkm->partition, rkm->key,
                                        rkm->key_len, partition_cnt, errstr, errstr_size);
}

ol_err_t ol_kafka_check_key_placement(const char *topic, int32_t partition, const void *key, size_t key_len,
                                      int32_t partition_cnt, char *errstr, size_t errstr_size) {
    if (!key || key_len == 0)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                       "record at partition %" PRId32 " of %s has no key: every event is keyed by its aggregate id "
                       "and placed by murmur2 of the key (docs/events.md, placement)",
                       partition, topic);
    if (partition_cnt <= 0)
        return OL_ERR_OK;
    int32_t want = ol_kafka_key_partition(key, key_len, partition_cnt);
    if (want == partition)
        return OL_ERR_OK;
    int n = key_len > 128 ? 128 : (int)key_len;
    return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                   "key \"%.*s\" is on partition %" PRId32 " of %s but belongs on partition %" PRId32
                   " (murmur2 of the key over %" PRId32 " partitions; set partitioner=murmur2_random)",
                   n, (const char *)key, partition, topic, want, partition_cnt);
}

/* Set on the thread that closes a consumer, for as long as the close runs:
 * the rebalance callback's unassign during rd_kafka_consumer_close runs on
 * that thread. Once that unassign is served, the group may end at once; it
 * then disables its op queue and purges the ops still in it
 * (rdkafka_cgrp.c, rd_kafka_cgrp_terminated), and a purged request is
 * destroyed without a reply (rd_kafka_op_destroy), so an
 * rd_kafka_assignment() enqueued just before waits for ever (its wait has no
 * timeout): guard hung 90 s on SIGTERM in one CI run. Nothing is assigned
 * after a close, so no wait is needed there. */
static _Thread_local bool closing;

rd_kafka_resp_err_t ol_kafka_consumer_close(rd_kafka_t *rk) {
    closing = true;
    rd_kafka_resp_err_t kerr = rd_kafka_consumer_close(rk);
    closing = false;
    return kerr;
}

/* Why the wait (librdkafka 2.0.2, rdkafka_assignment.c): an assignment
 * change moves the partitions it drops to the "removed" list, and
 * rd_kafka_assignment_serve_removals() sends a fetch stop to each one whose
 * rktp_started is set, counting it in wait_stop_cnt; rktp_started is only
 * cleared when the stop's reply is served, by
 * rd_kafka_assignment_partition_stopped(), which asserts it is still set.
 * Partitions added meanwhile wait in "pending" (serve_pending runs only when
 * wait_stop_cnt is 0) but keep rktp_started from their previous life. So
 * assign(P) with P started (a stop, P pending again) followed by assign(NULL)
 * before the stops' replies are served stops P a second time: the second
 * reply finds rktp_started cleared by the first and aborts the process.
 * The stops, their replies and the requests of assign() and assignment() all
 * go through the handle's ops queue (rk_ops: the group's queue and the
 * partitions' ops queues forward to it), served in order by librdkafka's main
 * thread: the stops are queued before assign() returns, and each reply is
 * queued while its stop is served. So once two assignment() requests made
 * after assign() have been answered, every reply has been served. */
rd_kafka_resp_err_t ol_kafka_assign(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts) {
    rd_kafka_resp_err_t kerr = rd_kafka_assign(rk, parts);
    if (closing)
        return kerr;
    for (int i = 0; i < 2; i++) {
        rd_kafka_topic_partition_list_t *l = NULL;
        if (rd_kafka_assignment(rk, &l))
            break;
        rd_kafka_topic_partition_list_destroy(l);
    }
    return kerr;
}

rd_kafka_resp_err_t ol_kafka_assign_to_queues(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *parts,
                                              rd_kafka_queue_t *const *queues) {
    for (int i = 0; i < parts->cnt; i++) {
        if (!queues[i])
            continue;
        rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(rk, parts->elems[i].topic, parts->elems[i].partition);
        if (!pq)
            return RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION;
        rd_kafka_queue_forward(pq, queues[i]);
        rd_kafka_queue_destroy(pq);
    }
    return ol_kafka_assign(rk, parts);
}

ol_err_t ol_kafka_wait_cluster(rd_kafka_t *rk, const ol_conf_t *conf, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout);
    if (err)
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE,
                       "could not reach Kafka at %s within %d ms: %s (is the broker running? `ops/stack start`)",
                       ol_conf_str(conf, "kafka.bootstrap.servers"), timeout, rd_kafka_err2str(err));
    rd_kafka_metadata_destroy(md);
    return OL_ERR_OK;
}

ol_err_t ol_kafka_delete_group(const ol_conf_t *conf, const char *group, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = ol_kafka_new(conf, OL_KAFKA_ADMIN, "orderlog-admin", NULL, errstr, errstr_size);
    if (!rk)
        return OL_ERR_CONFIG;
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");
    rd_kafka_DeleteGroup_t *dg = rd_kafka_DeleteGroup_new(group);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DELETEGROUPS);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout, NULL, 0);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteGroups(rk, &dg, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout + 1000);
    ol_err_t err = OL_ERR_OK;
    if (!ev || rd_kafka_event_error(ev))
        err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not delete consumer group %s: %s", group,
                      ev ? rd_kafka_event_error_string(ev) : "no answer");
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_DeleteGroup_destroy(dg);
    rd_kafka_destroy(rk);
    return err;
}

void ol_kafka_topic_name(const ol_conf_t *conf, const char *name, char *out, size_t out_size) {
    snprintf(out, out_size, "%s%s", ol_conf_str(conf, "topic.prefix"), name);
}

rd_kafka_headers_t *ol_kafka_dlq_headers(const rd_kafka_message_t *rkm, const char *topic, const char *stage,
                                         const char *reason, const char *group) {
    rd_kafka_headers_t *orig = NULL;
    rd_kafka_headers_t *h =
        !rd_kafka_message_headers(rkm, &orig) && orig ? rd_kafka_headers_copy(orig) : rd_kafka_headers_new(8);
    char num[32], ts[40];
    rd_kafka_header_add(h, "dlq_topic", -1, topic, -1);
    snprintf(num, sizeof(num), "%d", (int)rkm->partition);
    rd_kafka_header_add(h, "dlq_partition", -1, num, -1);
    snprintf(num, sizeof(num), "%lld", (long long)rkm->offset);
    rd_kafka_header_add(h, "dlq_offset", -1, num, -1);
    rd_kafka_header_add(h, "dlq_stage", -1, stage, -1);
    rd_kafka_header_add(h, "dlq_error", -1, reason, -1);
    rd_kafka_header_add(h, "dlq_group", -1, group, -1);
    ol_time_format(ol_time_now_ms(), ts, sizeof(ts));
    rd_kafka_header_add(h, "dlq_time", -1, ts, -1);
    return h;
}

/* ---- observability -------------------------------------------------------- */

bool ol_kafka_check_reachable(rd_kafka_t *rk, json_t *checks, const char *name, int timeout_ms) {
    char fatal[256];
    if (rd_kafka_fatal_error(rk, fatal, sizeof(fatal)))
        return ol_http_check(checks, name, false, "fatal error: %s", fatal);
    const struct rd_kafka_metadata *md = NULL;
    int64_t t0 = ol_time_mono_us();
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (err)
        return ol_http_check(checks, name, false, "cluster not answering: %s", rd_kafka_err2str(err));
    int brokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    return ol_http_check(checks, name, true, "%d broker%s answered in %lld ms", brokers, brokers == 1 ? "" : "s",
                         (long long)(ol_time_mono_us() - t0) / 1000);
}

bool ol_kafka_cluster_answers(rd_kafka_t *rk) {
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 0, NULL, &md, 1000))
        return false;
    rd_kafka_metadata_destroy(md);
    return true;
}

int ol_kafka_assigned_count(rd_kafka_t *rk) {
    rd_kafka_topic_partition_list_t *l = NULL;
    if (closing || rd_kafka_assignment(rk, &l)) /* not asked from a close's callback: see ol_kafka_consumer_close */
        return -1;
    int n = l->cnt;
    rd_kafka_topic_partition_list_destroy(l);
    return n;
}

void ol_kafka_lag_write(rd_kafka_t *rk, ol_metrics_out_t *out) {
    rd_kafka_topic_partition_list_t *assigned = NULL;
    if (rd_kafka_assignment(rk, &assigned))
        return;
    rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_copy(assigned);
    if (rd_kafka_position(rk, pos))
        goto out;
    for (int i = 0; i < pos->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &pos->elems[i];
        int64_t at = tp->offset >= 0 ? tp->offset : assigned->elems[i].offset, lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(rk, tp->topic, tp->partition, &lo, &hi) || hi < 0)
            continue;
        if ((at == RD_KAFKA_OFFSET_BEGINNING || (at < 0 && hi == lo)) && lo >= 0)
            at = lo; /* nothing consumed yet: from the start, or an empty partition */
        if (at < 0)
            continue;
        char partition[16];
        snprintf(partition, sizeof(partition), "%d", (int)tp->partition);
        const char *values[] = {tp->topic, partition};
        ol_metrics_out(out, values, (double)(hi > at ? hi - at : 0));
    }
out:
    rd_kafka_topic_partition_list_destroy(pos);
    rd_kafka_topic_partition_list_destroy(assigned);
}

static void consumer_lag_fn(void *opaque, ol_metrics_out_t *out) {
    ol_kafka_lag_write(*(rd_kafka_t **)opaque, out);
}

static void consumer_assigned_fn(void *opaque, ol_metrics_out_t *out) {
    int n = ol_kafka_assigned_count(*(rd_kafka_t **)opaque);
    if (n >= 0)
        ol_metrics_out(out, NULL, n);
}

void ol_kafka_observe_consumer(ol_metrics_t *reg, const char *role, const char *lag_help, const char *assigned_help,
                               rd_kafka_t *const *rk) {
    ol_kafka_observe_consumers(reg, role, lag_help, assigned_help, consumer_lag_fn, consumer_assigned_fn, (void *)rk);
}

void ol_kafka_observe_consumers(ol_metrics_t *reg, const char *role, const char *lag_help, const char *assigned_help,
                                ol_metrics_func_t lag_fn, ol_metrics_func_t assigned_fn, void *opaque) {
    char name[128];
    snprintf(name, sizeof(name), "orderlog_%s_consumer_lag_records", role);
    ol_metrics_func(
        reg,
        &(ol_metric_def_t){
            .name = name, .help = lag_help, .type = OL_METRIC_GAUGE, .labels = {{"topic", NULL}, {"partition", NULL}}},
        lag_fn, opaque);
    snprintf(name, sizeof(name), "orderlog_%s_assigned_partitions", role);
    ol_metrics_func_value(reg, OL_METRIC_GAUGE, name, assigned_help, assigned_fn, opaque);
}
