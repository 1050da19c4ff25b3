/* orderlog guard: sliding windows per client IP and per user over
 * buy-requests; a subject over its threshold is blacklisted for a while
 * (BlacklistChanged add, reason rate, with an until), and removed again when
 * the until has passed. The judging is common/domain/rateban.h; this file is the
 * Kafka around it, on one thread:
 *
 *  - at start the `blacklist` topic is read to its end (all partitions) so
 *    that guard knows every entry, manual and rate, with its until (rate
 *    entries of a previous run included: their removes are scheduled too),
 *    and it keeps following the topic, so that an operator's later manual
 *    entry is never replaced nor removed by guard; should one of guard's
 *    changes land right after an operator's manual add it had not seen yet
 *    (and so override it), guard writes the manual entry again;
 *  - buy-requests is consumed in the group <topic.prefix>guard; other event
 *    types on the topic are skipped. A request is judged at its requested_at
 *    (a time later than the guard's clock counts as now), so a replay judges
 *    the same way; a ban whose until has already passed when it is judged
 *    (an old backlog) is not published;
 *  - offsets are committed only once every BlacklistChanged produced so far
 *    is delivered (at-least-once). With each offset goes, as commit metadata,
 *    the latest record timestamp before it; on assignment guard starts one
 *    window earlier than the committed offset, so the windows a crash lost
 *    are rebuilt and a ban not yet delivered is issued again. Bans that are
 *    still active are known from the blacklist and not issued twice; should
 *    one be anyway, a duplicate add on the compacted topic is harmless (the
 *    latest per key wins, and it holds the same until);
 *  - the removes are due by the wall clock.
 *
 * Requests are keyed by SKU, so one IP's requests are spread over every
 * partition: run one guard process per deployment (two in the group would
 * each see part of every subject's requests). */
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/domain/wire.h"
#include "common/base/http.h"
#include "common/base/kafka.h"
#include "common/domain/contract.h"
#include "common/base/log.h"
#include "common/domain/rateban.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/follow.h"
#include "consumers/guard.h"
#include "consumers/runtime.h"

#define TICK_MS 100
#define COMMIT_EVERY_MS 1000
#define POLL_BATCH 1000

static volatile sig_atomic_t guard_stop;

static void on_signal(int sig) {
    (void)sig;
    guard_stop = 1;
}

/* ---- Avro fields ---------------------------------------------------------- */

static int field(avro_value_t *rec, const char *name, avro_value_t *out) {
    return avro_value_get_by_name(rec, name, out, NULL);
}

static const char *field_str(avro_value_t *rec, const char *name) {
    avro_value_t f;
    const char *s;
    size_t size;
    if (field(rec, name, &f) || avro_value_get_string(&f, &s, &size))
        return NULL;
    return s;
}

static int field_long(avro_value_t *rec, const char *name, int64_t *out) {
    avro_value_t f;
    return field(rec, name, &f) || avro_value_get_long(&f, out);
}

static const char *field_enum(avro_value_t *rec, const char *name) {
    avro_value_t f;
    int sym;
    if (field(rec, name, &f) || avro_value_get_enum(&f, &sym))
        return NULL;
    return avro_schema_enum_get(avro_value_get_schema(&f), sym);
}

/* A nullable long: -1 when null. */
static int field_nullable_long(avro_value_t *rec, const char *name, int64_t *out) {
    avro_value_t f, branch;
    if (field(rec, name, &f) || avro_value_get_current_branch(&f, &branch))
        return -1;
    *out = -1;
    return avro_value_get_type(&branch) == AVRO_NULL ? 0 : avro_value_get_long(&branch, out);
}

/* ---- producing BlacklistChanged ------------------------------------------- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    guard_t *g = opaque;
    if (!rkm->err)
        return;
    g->failed++;
    ol_log_error("could not deliver a blacklist change for %.*s to %s: %s", (int)rkm->key_len,
                 rkm->key ? (const char *)rkm->key : "", rd_kafka_topic_name(rkm->rkt), rd_kafka_err2str(rkm->err));
}

static void pending_add(guard_t *g, const char *id) {
    int slot = (g->pending_head + g->npending) % PENDING_MAX;
    if (g->npending == PENDING_MAX) /* the oldest is forgotten: at worst applied twice */
        g->pending_head = (g->pending_head + 1) % PENDING_MAX;
    else
        g->npending++;
    snprintf(g->pending[slot], sizeof(g->pending[slot]), "%s", id);
}

/* True, and forgotten, when id is one of our own changes. */
static int pending_take(guard_t *g, const char *id) {
    for (int i = 0; i < g->npending; i++) {
        int slot = (g->pending_head + i) % PENDING_MAX;
        if (strcmp(g->pending[slot], id))
            continue;
        /* move the older ones up one slot over it */
        for (int k = i; k > 0; k--) {
            int to = (g->pending_head + k) % PENDING_MAX, from = (g->pending_head + k - 1) % PENDING_MAX;
            memcpy(g->pending[to], g->pending[from], sizeof(g->pending[to]));
        }
        g->pending_head = (g->pending_head + 1) % PENDING_MAX;
        g->npending--;
        return 1;
    }
    return 0;
}

/* Produces BlacklistChanged{type, subject, add|remove, rate, until, now} to
 * the blacklist topic, encoded and with headers as publish makes them. */
static ol_err_t publish_change(guard_t *g, ol_subject_t type, const char *subject, int add, ol_ban_reason_t reason,
                               int64_t until_ms, int64_t now_ms, char *errstr, size_t errstr_size) {
    if (ol_utf8_invalid_at(subject, strlen(subject)) >= 0)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "subject is not valid UTF-8");
    ol_json_member_t m[6];
    ol_json_member_str(&m[0], "subject_type", ol_subject_name(type));
    ol_json_member_str(&m[1], "subject", subject);
    ol_json_member_str(&m[2], "action", add ? "add" : "remove");
    ol_json_member_str(&m[3], "reason", ol_ban_reason_name(reason));
    ol_json_member_int(&m[4], "until", until_ms);
    if (!add || until_ms < 0)
        m[4].value = (ol_json_t){.type = OL_JSON_NULL};
    ol_json_member_int(&m[5], "changed_at", now_ms);
    ol_json_t data = ol_json_object_of(m, 6);
    ol_event_out_t ev;
    ol_arena_reset(g->arena);
    ol_err_t err = ol_event_encode(g->codec, g->change_type, &data, now_ms, g->source, &ev, errstr, errstr_size);
    if (err)
        return err;
    for (;;) {
        rd_kafka_resp_err_t kerr =
            rd_kafka_producev(g->producer, RD_KAFKA_V_TOPIC(g->bl_topic), RD_KAFKA_V_KEY(ev.key, strlen(ev.key)),
                              RD_KAFKA_V_VALUE((void *)ev.payload, ev.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(ev.hdrs), RD_KAFKA_V_END);
        if (!kerr)
            break;
        if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(g->producer, 10);
            continue;
        }
        rd_kafka_headers_destroy(ev.hdrs);
        return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not produce to %s: %s", g->bl_topic,
                       rd_kafka_err2str(kerr));
    }
    pending_add(g, ev.id);
    return OL_ERR_OK;
}

/* ---- judging requests ----------------------------------------------------- */

static void judge(guard_t *g, ol_subject_t type, const char *subject, int64_t at_ms, int64_t now_ms) {
    ol_rateban_ban_t ban;
    char errstr[512], until[40];
    if (!ol_rateban_hit(g->rw, type, subject, at_ms, &ban))
        return;
    ol_time_format(ban.until_ms, until, sizeof(until));
    if (ban.until_ms <= now_ms) {
        /* judged late (a backlog, a replay): the ban would already be over */
        g->lapsed++;
        ol_log_debug("%s %s went over its limit but the ban would have lapsed at %s: not published",
                     ol_subject_name(type), subject, until);
        ol_rateban_apply(g->rw, type, subject, false, OL_BAN_RATE, -1);
        return;
    }
    if (publish_change(g, type, subject, 1, OL_BAN_RATE, ban.until_ms, now_ms, errstr, sizeof(errstr))) {
        ol_log_error("could not ban %s %s: %s", ol_subject_name(type), subject, errstr);
        ol_rateban_apply(g->rw, type, subject, false, OL_BAN_RATE, -1);
        return;
    }
    g->bans++;
    ol_log_info("ban %s %s: %u requests within %lld ms (guard.%s.max %lld), until %s", ol_subject_name(type), subject,
                ban.count, (long long)g->window_ms, ol_subject_name(type),
                (long long)(type == OL_SUBJECT_IP ? g->ip_max : g->user_max), until);
}

static position_t *position(guard_t *g, int32_t partition) {
    if (partition >= g->npos) {
        int n = partition + 1;
        g->pos = ol_xrealloc(g->pos, (size_t)n * sizeof(*g->pos));
        memset(g->pos + g->npos, 0, (size_t)(n - g->npos) * sizeof(*g->pos));
        g->npos = n;
    }
    return &g->pos[partition];
}

static void advance(guard_t *g, const rd_kafka_message_t *rkm) {
    position_t *p = position(g, rkm->partition);
    int64_t ts = rd_kafka_message_timestamp(rkm, NULL);
    if (rkm->offset + 1 > p->next) { /* records before the committed offset are a rewind */
        p->next = rkm->offset + 1;
        p->dirty = 1;
    }
    if (ts > p->ts_ms)
        p->ts_ms = ts;
}

/* Decodes rkm of topic into g's arena (reset first; waiting out a schema
 * registry away until guard stops); an undecodable record is logged as
 * skipped and false returned. */
static bool decode(guard_t *g, const rd_kafka_message_t *rkm, const char *topic, ol_envelope_t *env,
                   avro_value_t **value) {
    char errstr[512];
    ol_arena_reset(g->arena);
    if (!ol_event_decode_waiting(g->codec, rkm, g->arena, env, value, &guard_stop, errstr, sizeof(errstr)))
        return true;
    ol_log_warn("skipped %s[%d]@%lld: %s", topic, (int)rkm->partition, (long long)rkm->offset, errstr);
    return false;
}

static void handle_request(guard_t *g, const rd_kafka_message_t *rkm) {
    ol_envelope_t env;
    avro_value_t *value;
    if (!decode(g, rkm, g->buy_topic, &env, &value)) {
        g->undecodable++;
    } else if (env.type != g->buy_type) {
        g->skipped++;
    } else {
        const char *ip = field_str(value, "client_ip"), *user = field_str(value, "user_id");
        int64_t at_ms, now_ms = ol_time_now_ms();
        if (!ip || !user || field_long(value, "requested_at", &at_ms)) {
            g->undecodable++;
        } else {
            if (at_ms > now_ms)
                at_ms = now_ms;
            if (at_ms > g->stream_ms)
                g->stream_ms = at_ms;
            g->requests++;
            judge(g, OL_SUBJECT_IP, ip, at_ms, now_ms);
            judge(g, OL_SUBJECT_USER, user, at_ms, now_ms);
        }
    }
    advance(g, rkm);
}

/* ---- lifts ---------------------------------------------------------------- */

static void lift_due(guard_t *g, int64_t now_ms) {
    ol_rateban_ban_t lift;
    char errstr[512], until[40];
    while (!g->failed && ol_rateban_due(g->rw, now_ms, &lift)) {
        if (publish_change(g, lift.type, lift.subject, 0, OL_BAN_RATE, -1, now_ms, errstr, sizeof(errstr))) {
            ol_log_error("could not lift %s %s: %s", ol_subject_name(lift.type), lift.subject, errstr);
            return; /* tried again at the next tick */
        }
        g->lifts++;
        ol_time_format(lift.until_ms, until, sizeof(until));
        ol_log_info("lift %s %s: its ban until %s has passed", ol_subject_name(lift.type), lift.subject, until);
        ol_rateban_apply(g->rw, lift.type, lift.subject, false, OL_BAN_RATE, -1);
    }
}

/* ---- the blacklist topic -------------------------------------------------- */

/* Applies one record of the blacklist topic, unless it is our own change
 * (already applied when it was made). */
static void follow_record(guard_t *g, const rd_kafka_message_t *rkm) {
    ol_envelope_t env;
    avro_value_t *value;
    if (!decode(g, rkm, g->bl_topic, &env, &value) || env.type != g->change_type)
        return;
    int own = pending_take(g, env.id);
    const char *type = field_enum(value, "subject_type"), *subject = field_str(value, "subject"),
               *action = field_enum(value, "action"), *reason = field_enum(value, "reason");
    int64_t until;
    if (!type || !subject || !action || !reason || field_nullable_long(value, "until", &until)) {
        ol_log_warn("skipped %s[%d]@%lld: not a readable BlacklistChanged", g->bl_topic, (int)rkm->partition,
                    (long long)rkm->offset);
        return;
    }
    ol_subject_t st = !strcmp(type, "ip") ? OL_SUBJECT_IP : OL_SUBJECT_USER;
    ol_ban_reason_t why = !strcmp(reason, "rate") ? OL_BAN_RATE : OL_BAN_MANUAL;
    int add = !strcmp(action, "add");
    if (!own) {
        ol_rateban_apply(g->rw, st, subject, add, why, until);
        return;
    }
    /* One of our rate changes is back, already applied when it was made.
     * Only a manual record read since can have made the entry manual: it
     * was written before ours, which now overrides it on the topic (the
     * latest per key wins). An operator's ban still in force is put back;
     * a lapsed one is let go, as the topic now has it. */
    ol_ban_reason_t cur;
    int64_t cur_until, now_ms = ol_time_now_ms();
    if (why != OL_BAN_RATE || !ol_rateban_listed(g->rw, st, subject, &cur, &cur_until) || cur != OL_BAN_MANUAL)
        return;
    if (cur_until >= 0 && cur_until <= now_ms) {
        ol_rateban_apply(g->rw, st, subject, add, why, until);
        return;
    }
    char errstr[512], *name = ol_xstrdup(subject); /* subject is the decoded record's, publishing may reuse it */
    if (publish_change(g, st, name, 1, OL_BAN_MANUAL, cur_until, now_ms, errstr, sizeof(errstr)))
        ol_log_error("could not restore the manual entry of %s %s: %s", ol_subject_name(st), name, errstr);
    else
        ol_log_warn("restored the manual entry of %s %s, overtaken by a change of guard made at the same time",
                    ol_subject_name(st), name);
    free(name);
}

static void on_blacklist_record(void *opaque, const rd_kafka_message_t *rkm) {
    follow_record(opaque, rkm);
}

/* Assigns every partition of the blacklist topic from the beginning and
 * reads up to the end offsets it has now (consumers/follow.h). */
static ol_err_t read_blacklist(guard_t *g, char *errstr, size_t errstr_size) {
    int timeout = (int)ol_conf_int(g->conf, "broker.wait.ms");
    ol_err_t err = ol_follow_open(&g->follow, g->follower, g->bl_topic, timeout, &guard_stop, errstr, errstr_size);
    if (err)
        return err;
    while (!ol_follow_caught_up(g->follow) && !guard_stop)
        ol_follow_poll(g->follow, 200, on_blacklist_record, g);
    if (!guard_stop) {
        ol_rateban_stats_t st;
        char next[40] = "none";
        ol_rateban_stats(g->rw, &st);
        if (ol_rateban_next_lift_ms(g->rw) >= 0)
            ol_time_format(ol_rateban_next_lift_ms(g->rw), next, sizeof(next));
        ol_log_info("read %s: %lld records, %zu entries listed, %zu of them by rate (next lift %s)", g->bl_topic,
                    ol_follow_records(g->follow), st.listed, st.rate, next);
    }
    return OL_ERR_OK;
}

/* Applies what others wrote to the blacklist since (operators, other runs). */
static void follow(guard_t *g) {
    for (int n = 0; n < POLL_BATCH && ol_follow_poll(g->follow, 0, on_blacklist_record, g); n++)
        ;
}

/* ---- offsets -------------------------------------------------------------- */

/* Commits the positions processed, once every change produced so far is
 * delivered. Returns 0 when there was nothing to commit or it is done. */
static int commit(guard_t *g, int flush_ms) {
    if (g->failed)
        return -1;
    if (rd_kafka_outq_len(g->producer) > 0)
        rd_kafka_flush(g->producer, flush_ms);
    if (g->failed || rd_kafka_outq_len(g->producer) > 0)
        return -1; /* not delivered yet: the next tick tries again */
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(g->npos ? g->npos : 1);
    for (int i = 0; i < g->npos; i++) {
        position_t *p = &g->pos[i];
        if (!p->assigned || !p->dirty)
            continue;
        char meta[32];
        int n = snprintf(meta, sizeof(meta), "%lld", (long long)p->ts_ms);
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(list, g->buy_topic, i);
        tp->offset = p->next;
        tp->metadata = ol_xmalloc((size_t)n); /* freed with the list */
        memcpy(tp->metadata, meta, (size_t)n);
        tp->metadata_size = (size_t)n;
    }
    int rc = 0;
    if (list->cnt) {
        rd_kafka_resp_err_t kerr = rd_kafka_commit(g->consumer, list, 0);
        if (kerr) {
            ol_log_warn("could not commit offsets of %s: %s", g->buy_topic, rd_kafka_err2str(kerr));
            rc = -1;
        } else {
            for (int i = 0; i < list->cnt; i++)
                g->pos[list->elems[i].partition].dirty = 0;
            ol_log_debug("committed offsets of %d partition%s; %lld requests judged so far", list->cnt,
                         list->cnt == 1 ? "" : "s", g->requests);
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    return rc;
}

/* Start positions of newly assigned partitions: the committed offset, moved
 * back by a window of record time (the timestamp committed with it) so that
 * the windows are whole again. */
static void rewind_parts(guard_t *g, rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts) {
    int timeout = (int)ol_conf_int(g->conf, "broker.wait.ms");
    rd_kafka_resp_err_t kerr = rd_kafka_committed(rk, parts, timeout);
    if (kerr) {
        ol_log_warn("could not read the committed offsets of %s: %s", g->buy_topic, rd_kafka_err2str(kerr));
        for (int i = 0; i < parts->cnt; i++) {
            parts->elems[i].offset = RD_KAFKA_OFFSET_STORED;
            *position(g, parts->elems[i].partition) = (position_t){1, 0, 0, 0};
        }
        return;
    }
    rd_kafka_topic_partition_list_t *times = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        position_t *p = position(g, tp->partition);
        *p = (position_t){1, 0, tp->offset >= 0 ? tp->offset : 0, 0};
        char meta[32] = "";
        if (tp->metadata && tp->metadata_size < sizeof(meta)) {
            memcpy(meta, tp->metadata, tp->metadata_size);
            meta[tp->metadata_size] = '\0';
        }
        long long ts = atoll(meta);
        p->ts_ms = ts;
        if (tp->offset >= 0 && ts > g->window_ms)
            rd_kafka_topic_partition_list_add(times, tp->topic, tp->partition)->offset = ts - g->window_ms;
    }
    if (times->cnt && !(kerr = rd_kafka_offsets_for_times(rk, times, timeout))) {
        for (int i = 0; i < times->cnt; i++) {
            rd_kafka_topic_partition_t *t = &times->elems[i];
            rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(parts, t->topic, t->partition);
            if (!t->err && t->offset >= 0 && tp && t->offset < tp->offset) {
                ol_log_info("rereading %s[%d] from %lld (committed %lld) to rebuild its windows", g->buy_topic,
                            (int)t->partition, (long long)t->offset, (long long)tp->offset);
                tp->offset = t->offset;
            }
        }
    } else if (times->cnt) {
        ol_log_warn("could not look up offsets by time in %s: %s", g->buy_topic, rd_kafka_err2str(kerr));
    }
    rd_kafka_topic_partition_list_destroy(times);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    guard_t *g = opaque;
    int cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        rewind_parts(g, rk, parts);
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            kerr = ol_kafka_assign(rk, parts);
        if (error || kerr) {
            ol_log_error("could not assign %s: %s", g->buy_topic,
                         error ? rd_kafka_error_string(error) : rd_kafka_err2str(kerr));
            if (error)
                rd_kafka_error_destroy(error);
            g->fatal = 1;
            return;
        }
        ol_log_info("assigned %d partition%s of %s", parts->cnt, parts->cnt == 1 ? "" : "s", g->buy_topic);
        return;
    }
    /* revoked (or lost): commit what is delivered, then let go */
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        commit(g, 10000);
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].partition < g->npos)
            g->pos[parts->elems[i].partition].assigned = 0;
    if (cooperative) {
        rd_kafka_error_t *error = rd_kafka_incremental_unassign(rk, parts);
        if (error)
            rd_kafka_error_destroy(error);
    } else {
        ol_kafka_assign(rk, NULL);
    }
}

/* ---- setup ---------------------------------------------------------------- */

/* guard.ignore: "ip:<addr>" and "user:<id>", comma separated. */
static ol_err_t load_ignore(guard_t *g, char *errstr, size_t errstr_size) {
    char *list = ol_xstrdup(ol_conf_str(g->conf, "guard.ignore")), *save = NULL;
    ol_err_t err = OL_ERR_OK;
    for (char *item = strtok_r(list, ",", &save); item && !err; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ' || *item == '\t')
            item++;
        char *end = item + strlen(item);
        while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (!*item)
            continue;
        if (!strncmp(item, "ip:", 3) && item[3])
            ol_rateban_exempt(g->rw, OL_SUBJECT_IP, item + 3);
        else if (!strncmp(item, "user:", 5) && item[5])
            ol_rateban_exempt(g->rw, OL_SUBJECT_USER, item + 5);
        else
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                          "property \"guard.ignore\": \"%s\" is not ip:<address> or user:<id>", item);
    }
    free(list);
    return err;
}

/* A client with the role's defaults; the producer reports deliveries, the
 * group member (grouped) rewinds on assignment. */
static rd_kafka_t *client_new(guard_t *g, ol_kafka_profile_t profile, const char *client_id, int grouped,
                              const char *const *tuning, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(g->conf, profile, client_id, tuning, errstr, errstr_size);
    if (!kconf)
        return NULL;
    rd_kafka_type_t type = ol_kafka_profile_type(profile);
    rd_kafka_conf_set_opaque(kconf, g);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(kconf, dr_cb);
    if (grouped)
        rd_kafka_conf_set_rebalance_cb(kconf, rebalance_cb);
    rd_kafka_t *rk = ol_kafka_handle_new(type, kconf, errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(kconf);
    return rk;
}

static ol_err_t guard_open(guard_t *g, char *errstr, size_t errstr_size) {
    char follower_group[300];
    snprintf(follower_group, sizeof(follower_group), "%s-blacklist", g->group); /* never joined nor committed */
    /* fetch.wait.max.ms: /readyz asks the cluster through the consumer, and
     * its metadata request waits behind the fetch long-poll (default 500 ms) */
    const char *ctuning[] = {"group.id",
                             g->group,
                             "enable.partition.eof",
                             "false",
                             "session.timeout.ms",
                             "10000",
                             "heartbeat.interval.ms",
                             "1000",
                             "fetch.wait.max.ms",
                             "100",
                             NULL};
    const char *ftuning[] = {"group.id", follower_group, NULL};
    /* A ban waits for the broker however long it is away (message.timeout.ms
     * 0: no limit), instead of failing and stopping guard; the requests it
     * covers are committed only once it is delivered. */
    const char *ptuning[] = {"linger.ms", "5", "message.timeout.ms", "0", NULL};
    if (!(g->producer = client_new(g, OL_KAFKA_PRODUCER, "orderlog-guard", 0, ptuning, errstr, errstr_size)) ||
        !(g->follower = client_new(g, OL_KAFKA_READER, follower_group, 0, ftuning, errstr, errstr_size)) ||
        !(g->consumer = client_new(g, OL_KAFKA_CONSUMER, g->group, 1, ctuning, errstr, errstr_size)))
        return OL_ERR_CONFIG;
    rd_kafka_poll_set_consumer(g->consumer);
    rd_kafka_poll_set_consumer(g->follower);
    ol_err_t err;
    if ((err = ol_kafka_wait_cluster(g->consumer, g->conf, errstr, errstr_size)) ||
        (err = ol_contract_check_topics(g->consumer, g->conf, errstr, errstr_size)) ||
        (err = read_blacklist(g, errstr, errstr_size)))
        return err;
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, g->buy_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(g->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not subscribe to %s: %s", g->buy_topic,
                       rd_kafka_err2str(kerr));
    return OL_ERR_OK;
}

static void guard_loop(guard_t *g) {
    int64_t last_commit = ol_time_now_ms();
    while (!guard_stop && !g->failed && !g->fatal) {
        atomic_store_explicit(&g->beat_us, ol_time_mono_us(), memory_order_relaxed);
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(g->consumer, TICK_MS);
        for (int n = 0; rkm; n++) {
            if (!rkm->err)
                handle_request(g, rkm);
            else if (rkm->err == RD_KAFKA_RESP_ERR__FATAL)
                g->fatal = 1;
            else if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                ol_log_warn("consuming %s: %s", g->buy_topic, rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            rkm = n + 1 < POLL_BATCH && !guard_stop && !g->fatal ? rd_kafka_consumer_poll(g->consumer, 0) : NULL;
        }
        follow(g);
        rd_kafka_poll(g->producer, 0);
        int64_t now = ol_time_now_ms();
        lift_due(g, now);
        if (now - last_commit >= COMMIT_EVERY_MS) {
            size_t gone = ol_rateban_expire(g->rw, g->stream_ms);
            if (gone)
                ol_log_debug("forgot %zu idle subjects", gone);
            commit(g, 1000);
            last_commit = now;
            ol_guard__observe_windows(g);
        }
    }
}

static int guard_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512];
    if (argc > 1)
        return ol_cli_usage_error(&ol_cmd_guard, "unknown argument \"%s\"", argv[1]);
    if (ol_schema_init(errstr, sizeof(errstr)) ||
        ol_wire_prepare(errstr, sizeof(errstr))) { /* event.format confluent: the schema ids */
        fprintf(stderr, "orderlog guard: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    guard_t *g = ol_xcalloc(1, sizeof(*g));
    g->conf = conf;
    g->window_ms = ol_conf_int(conf, "guard.window.ms");
    g->ip_max = ol_conf_int(conf, "guard.ip.max");
    g->user_max = ol_conf_int(conf, "guard.user.max");
    ol_rateban_conf_t rc = {.window_ms = g->window_ms,
                            .ban_ms = ol_conf_int(conf, "guard.ban.ms"),
                            .ip_max = (uint32_t)g->ip_max,
                            .user_max = (uint32_t)g->user_max,
                            .max_subjects = (size_t)ol_conf_int(conf, "guard.max.subjects")};
    g->rw = ol_rateban_new(&rc);
    g->codec = ol_codec_new();
    g->arena = ol_arena_new(0);
    g->buy_type = ol_schema_find("BuyRequested");
    g->change_type = ol_schema_find("BlacklistChanged");
    ol_kafka_topic_name(conf, "buy-requests", g->buy_topic, sizeof(g->buy_topic));
    ol_kafka_topic_name(conf, "blacklist", g->bl_topic, sizeof(g->bl_topic));
    ol_rt_group_name(conf, "guard", g->group, sizeof(g->group));
    snprintf(g->source, sizeof(g->source), "%.100s/guard", ol_conf_str(conf, "event.source"));
    int rc_exit = OL_EXIT_FAIL;
    guard_stop = 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    ol_err_t err = load_ignore(g, errstr, sizeof(errstr));
    if (!err)
        err = guard_open(g, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "orderlog guard: %s\n", errstr);
        rc_exit = err == OL_ERR_CONFIG ? OL_EXIT_USAGE : OL_EXIT_FAIL;
    } else {
        ol_log_info("guarding %s in group %s: more than %lld requests per IP or %lld per user within %lld ms are "
                    "banned for %lld ms",
                    g->buy_topic, g->group, (long long)g->ip_max, (long long)g->user_max, (long long)g->window_ms,
                    (long long)rc.ban_ms);
        ol_metrics_t *reg = ol_guard__metrics(g);
        ol_http_t *http = NULL;
        ol_http_conf_t hc = {ol_conf_str(conf, "http.listen"), reg, ol_guard__live, ol_guard__ready, g};
        bool served = !ol_http_serve(&hc, &http, errstr, sizeof(errstr));
        if (served)
            guard_loop(g);
        else
            fprintf(stderr, "orderlog guard: %s\n", errstr);
        ol_http_stop(http);
        ol_metrics_destroy(reg);
        /* deliver what was produced, then commit what it covers */
        rd_kafka_flush(g->producer, 30000);
        int undelivered = rd_kafka_outq_len(g->producer);
        commit(g, 0);
        ol_kafka_consumer_close(g->consumer);
        ol_rateban_stats_t st;
        ol_rateban_stats(g->rw, &st);
        ol_log_info(
            "stopped: %lld requests judged, %lld other events skipped, %lld undecodable, %lld bans, %lld lifts, "
            "%lld lapsed bans not published; %zu subjects tracked (~%zu KiB), %zu listed",
            g->requests, g->skipped, g->undecodable, g->bans, g->lifts, g->lapsed, st.tracked, st.bytes / 1024,
            st.listed);
        if (g->failed || undelivered)
            ol_log_error("stopped with %d blacklist changes not delivered: the requests that caused them were not "
                         "committed and are judged again at the next start",
                         g->failed + undelivered);
        if (g->fatal)
            ol_log_error("stopped on a fatal error of the consumer of %s", g->buy_topic);
        rc_exit = !served ? OL_EXIT_USAGE : g->failed || undelivered || g->fatal ? OL_EXIT_FAIL : OL_EXIT_OK;
    }
    if (g->consumer)
        rd_kafka_destroy(g->consumer);
    ol_follow_destroy(g->follow);
    if (g->follower) {
        ol_kafka_consumer_close(g->follower);
        rd_kafka_destroy(g->follower);
    }
    if (g->producer)
        rd_kafka_destroy(g->producer);
    ol_codec_destroy(g->codec);
    ol_arena_destroy(g->arena);
    ol_rateban_destroy(g->rw);
    free(g->pos);
    free(g);
    return rc_exit;
}

const ol_cmd_t ol_cmd_guard = {
    "guard", guard_run, "blacklist IPs and users that send too many buy requests, for a while",
    "usage: orderlog guard\n"
    "  Consumes buy-requests in the consumer group <topic.prefix>guard (consumer.group.id sets another).\n"
    "  More than guard.ip.max requests from one client_ip, or guard.user.max from one user_id, within\n"
    "  guard.window.ms (of requested_at) publish BlacklistChanged{add, reason rate, until = request time +\n"
    "  guard.ban.ms} to the blacklist topic, and a remove once until has passed. Manual entries are left\n"
    "  alone. guard.ignore lists subjects never banned. With http.listen set, serves /metrics, /healthz and\n"
    "  /readyz there. SIGTERM stops it cleanly.\n"};
