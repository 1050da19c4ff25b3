/* orderlog dlq replay: dead letters back to their source topic, each in a
 * transaction with its markers (see dlq.c for why at most once). */
#include "ops/admin/dlq_cmd.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/event.h"
#include "ops/admin/commands.h"

/* ---- replay --------------------------------------------------------------- */

static void replay_dr(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    (void)opaque;
    entry_t *e = rkm->_private;
    if (!e)
        return; /* a marker */
    e->err = rkm->err;
    e->partition = rkm->partition;
    e->offset = rkm->offset;
}

/* The partition count of a source topic (0: it does not exist), asked once. */
static int32_t source_partitions(dlq_t *d, const char *topic) {
    void *v = ol_map_get(d->topics, topic, strlen(topic));
    if (v)
        return (int32_t)((intptr_t)v - 1);
    int32_t n = ol_kafka_partition_count(d->reader, d->conf, topic);
    ol_map_put(d->topics, topic, strlen(topic), (void *)(intptr_t)(n + 1));
    return n;
}

/* What the consumers will make of the replayed record, as far as the
 * record alone tells: "" when nothing is wrong with it, else why it would
 * go back to the dlq. */
static void outlook(dlq_t *d, const ol_dlq_letter_t *l, const rd_kafka_message_t *rkm, char *out, size_t size) {
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    size_t n = strlen(d->prefix);
    ol_err_t err;
    out[0] = '\0';
    ol_arena_reset(d->arena);
    if (!rkm->key || !rkm->key_len)
        snprintf(out, size, "it has no key: it will go back to the dlq (placement)");
    else if ((err = ol_event_decode(d->codec, rkm, d->arena, &env, &value, errstr, sizeof(errstr))))
        snprintf(out, size,
                 ol_err_is_retriable(err) ? "it cannot be read now (%s): its readers will wait for what it needs"
                                          : "it does not decode (%s): it will go back to the dlq (decode)",
                 errstr);
    else if (!strncmp(l->topic, d->prefix, n) && strcmp(l->topic + n, env.type->topic))
        snprintf(out, size, "a %s belongs on %s%s, not %s: it will go back to the dlq", env.type->name, d->prefix,
                 env.type->topic, l->topic);
    else if (ol_event_check_key(rkm, &env, value, errstr, sizeof(errstr)))
        snprintf(out, size, "%s: it will go back to the dlq (placement)", errstr);
}

static ol_err_t txn_call(dlq_t *d, rd_kafka_error_t *e, const char *what, char *errstr, size_t errstr_size) {
    if (!e)
        return OL_ERR_OK;
    bool fenced = rd_kafka_error_is_fatal(e);
    ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not %s: %s%s", what, rd_kafka_error_string(e),
            fenced ? " (fenced: another `orderlog dlq replay` of this deployment started; it replays what this one "
                     "did not)"
                   : "");
    if (rd_kafka_error_txn_requires_abort(e)) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(d->producer, d->timeout_ms);
        if (ae)
            rd_kafka_error_destroy(ae);
    }
    rd_kafka_error_destroy(e);
    return OL_ERR_KAFKA;
}

static ol_err_t produce_marker(dlq_t *d, const ol_dlq_letter_t *l, const char *key, size_t key_len, const char *to,
                               char *errstr, size_t errstr_size) {
    rd_kafka_headers_t *h = ol_dlq_marker_headers(l, to);
    rd_kafka_resp_err_t kerr;
    while ((kerr = rd_kafka_producev(d->producer, RD_KAFKA_V_TOPIC(d->topic), RD_KAFKA_V_PARTITION(l->partition),
                                     RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_HEADERS(h),
                                     RD_KAFKA_V_OPAQUE(NULL), RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(d->producer, 10);
    if (kerr) {
        rd_kafka_headers_destroy(h);
        return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not write a marker to %s: %s", d->topic,
                       rd_kafka_err2str(kerr));
    }
    return OL_ERR_OK;
}

/* The open transaction's markers: each replayed record's delivery is known
 * (flushed), then a marker for every known copy of its source not marked
 * yet. */
static ol_err_t write_markers(dlq_t *d, char *errstr, size_t errstr_size) {
    if (rd_kafka_flush(d->producer, d->timeout_ms))
        return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT, "replayed records not delivered within %d ms",
                       d->timeout_ms);
    for (int i = 0; i < d->nentries; i++) {
        entry_t *e = &d->entries[i];
        if (e->marker_only)
            continue;
        if (e->err)
            return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not replay dlq %" PRId32 ":%" PRId64 " to %s: %s",
                           e->letter.partition, e->letter.offset, e->letter.topic, rd_kafka_err2str(e->err));
        snprintf(e->src->replayed_to, sizeof(e->src->replayed_to), "%s[%" PRId32 "]@%" PRId64, e->letter.topic,
                 e->partition, e->offset);
    }
    for (int i = 0; i < d->nentries; i++) {
        entry_t *e = &d->entries[i];
        for (size_t c = 0; c < e->src->ncopies; c++) {
            char pos[48];
            ol_dlq_letter_t copy = e->letter;
            copy.partition = e->src->copies[c].partition;
            copy.offset = e->src->copies[c].offset;
            ol_dlq_pos_format(copy.partition, copy.offset, pos, sizeof(pos));
            if (ol_map_get(d->markers, pos, strlen(pos)))
                continue;
            ol_err_t err = produce_marker(d, &copy, e->key, e->key_len, e->src->replayed_to, errstr, errstr_size);
            if (err)
                return err;
            ol_map_put(d->markers, pos, strlen(pos), ol_xstrdup(e->src->replayed_to));
            if (copy.partition != e->letter.partition || copy.offset != e->letter.offset)
                d->copies_marked++;
        }
    }
    return OL_ERR_OK;
}

/* Ends the open transaction: markers, commit (retried while retriable),
 * then what it did is printed. */
ol_err_t ol_dlqcmd__commit_batch(dlq_t *d, char *errstr, size_t errstr_size) {
    if (!d->nentries)
        return OL_ERR_OK;
    ol_err_t err = write_markers(d, errstr, errstr_size);
    if (err) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(d->producer, d->timeout_ms);
        if (ae)
            rd_kafka_error_destroy(ae);
        return err;
    }
    if (d->stall_after >= 0 && d->txns >= d->stall_after) {
        if (rd_kafka_flush(d->producer, d->timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR)
            fprintf(stderr,
                    "orderlog dlq: stalled with transaction %lld open, its %d replays and markers written "
                    "(--debug-stall-after)\n",
                    d->txns + 1, d->nentries);
        fflush(stderr);
        for (int64_t end = ol_time_mono_us() + STALL_MAX_MS * 1000LL; ol_time_mono_us() < end;)
            rd_kafka_poll(d->producer, 100);
        return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT, "not killed within %d ms (--debug-stall-after)",
                       STALL_MAX_MS);
    }
    rd_kafka_error_t *e;
    while ((e = rd_kafka_commit_transaction(d->producer, d->timeout_ms)) && rd_kafka_error_is_retriable(e))
        rd_kafka_error_destroy(e);
    if ((err = txn_call(d, e, "commit a replay transaction", errstr, errstr_size)))
        return err;
    d->txns++;
    for (int i = 0; i < d->nentries; i++) {
        entry_t *en = &d->entries[i];
        if (en->marker_only)
            printf("marked   dlq %" PRId32 ":%" PRId64 "  its source record was replayed already (from dlq %s, to "
                   "%s)\n",
                   en->letter.partition, en->letter.offset, en->src->replayed_by, en->src->replayed_to);
        else
            printf("replayed dlq %" PRId32 ":%" PRId64 "  %s[%" PRId32 "]@%" PRId64 " -> %s\n", en->letter.partition,
                   en->letter.offset, en->letter.topic, en->letter.src_partition, en->letter.src_offset,
                   en->src->replayed_to);
        free(en->key);
    }
    d->nentries = 0;
    return OL_ERR_OK;
}

static entry_t *batch_add(dlq_t *d, const ol_dlq_letter_t *l, source_t *src, const rd_kafka_message_t *rkm,
                          char *errstr, size_t errstr_size, ol_err_t *err) {
    *err = OL_ERR_OK;
    if (d->nentries == 0) {
        if ((*err = txn_call(d, rd_kafka_begin_transaction(d->producer), "begin a replay transaction", errstr,
                             errstr_size)))
            return NULL;
    }
    entry_t *e = &d->entries[d->nentries++];
    *e = (entry_t){.letter = *l, .src = src, .key_len = rkm->key ? rkm->key_len : 0, .partition = -1, .offset = -1};
    if (rkm->key) {
        e->key = ol_xmalloc(rkm->key_len + 1);
        memcpy(e->key, rkm->key, rkm->key_len);
    }
    return e;
}

int ol_dlqcmd__replay_cb(void *opaque, const rd_kafka_message_t *rkm) {
    dlq_t *d = opaque;
    ol_dlq_letter_t l;
    char id[512], why[700], errstr[1024];
    ol_err_t err;
    if (ol_dlq_parse(rkm, &l) != OL_DLQ_DEAD_LETTER || !ol_dlqcmd__selected(d, &l))
        return 0;
    const char *to = ol_dlqcmd__marker_of(d, &l);
    if (to) {
        d->skipped++;
        printf("skipped  dlq %" PRId32 ":%" PRId64 "  replayed already (to %s)\n", l.partition, l.offset, to);
        return 0;
    }
    ol_dlqcmd__source_id(&l, rkm, id, sizeof(id));
    source_t *src = ol_map_get(d->sources, id, strlen(id));
    OL_ASSERT(src); /* the index read the same records */
    if (src->replayed) {
        d->skipped++;
        if (d->dry_run) {
            printf("would mark dlq %" PRId32 ":%" PRId64 "  its source record is replayed from dlq %s\n", l.partition,
                   l.offset, src->replayed_by);
            return 0;
        }
        entry_t *e = batch_add(d, &l, src, rkm, errstr, sizeof(errstr), &err);
        if (!e)
            goto fail;
        e->marker_only = true;
        goto maybe_commit;
    }
    int32_t nparts = l.src_partition >= 0 && l.src_offset >= 0 ? source_partitions(d, l.topic) : 0;
    if (nparts <= 0) {
        d->failed++;
        fprintf(stderr, "orderlog dlq: dlq %" PRId32 ":%" PRId64 " not replayed: %s\n", l.partition, l.offset,
                l.src_partition < 0 || l.src_offset < 0 ? "its dlq_partition or dlq_offset header is missing"
                                                        : "its source topic does not exist");
        return 0;
    }
    outlook(d, &l, rkm, why, sizeof(why));
    src->replayed = true;
    snprintf(src->replayed_by, sizeof(src->replayed_by), "%" PRId32 ":%" PRId64, l.partition, l.offset);
    if (d->dry_run) {
        d->replayed++;
        char part[32] = "a random partition";
        if (rkm->key && rkm->key_len)
            snprintf(part, sizeof(part), "partition %" PRId32, ol_kafka_key_partition(rkm->key, rkm->key_len, nparts));
        snprintf(src->replayed_to, sizeof(src->replayed_to), "%s (%s)", l.topic, part);
        printf("would replay dlq %" PRId32 ":%" PRId64 "  %s[%" PRId32 "]@%" PRId64 " -> %s [%s]%s%s\n", l.partition,
               l.offset, l.topic, l.src_partition, l.src_offset, l.topic, part, *why ? "; " : "; ok",
               *why ? why : (strcmp(l.stage, "apply") ? "" : ", if its cause is fixed (not checked here)"));
        return 0;
    }
    if (*why)
        fprintf(stderr, "orderlog dlq: dlq %" PRId32 ":%" PRId64 " is replayed anyway: %s\n", l.partition, l.offset,
                why);
    entry_t *e = batch_add(d, &l, src, rkm, errstr, sizeof(errstr), &err);
    if (!e)
        goto fail;
    rd_kafka_resp_err_t kerr;
    rd_kafka_headers_t *h = ol_dlq_replay_headers(rkm);
    while ((kerr = rd_kafka_producev(d->producer, RD_KAFKA_V_TOPIC(l.topic), RD_KAFKA_V_KEY(rkm->key, rkm->key_len),
                                     RD_KAFKA_V_VALUE(rkm->payload, rkm->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                     RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(e), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(d->producer, 10);
    if (kerr) {
        rd_kafka_headers_destroy(h);
        err = ol_errf(errstr, sizeof(errstr), OL_ERR_KAFKA, "could not replay dlq %" PRId32 ":%" PRId64 " to %s: %s",
                      l.partition, l.offset, l.topic, rd_kafka_err2str(kerr));
        goto fail;
    }
    d->replayed++;
maybe_commit:
    if (d->nentries < d->batch)
        return 0;
    if (!(err = ol_dlqcmd__commit_batch(d, errstr, sizeof(errstr))))
        return 0;
fail:
    fprintf(stderr, "orderlog dlq: %s\n", errstr);
    d->rc = OL_EXIT_FAIL;
    return 1;
}

/* The replay producer: fences every other replay of the deployment and
 * waits for what they left open to end. */
ol_err_t ol_dlqcmd__open_producer(dlq_t *d, char *errstr, size_t errstr_size) {
    char txid[300];
    snprintf(txid, sizeof(txid), "%sdlq-replay", d->prefix);
    const char *tuning[] = {"transactional.id", txid, "linger.ms", "5", NULL};
    rd_kafka_conf_t *kc =
        ol_kafka_conf_new(d->conf, OL_KAFKA_TXN_PRODUCER, "orderlog-dlq", tuning, errstr, errstr_size);
    if (!kc)
        return OL_ERR_CONFIG;
    rd_kafka_conf_set_dr_msg_cb(kc, replay_dr);
    if (!(d->producer = ol_kafka_handle_new(RD_KAFKA_PRODUCER, kc, errstr, errstr_size))) {
        rd_kafka_conf_destroy(kc);
        return OL_ERR_CONFIG;
    }
    rd_kafka_error_t *e = rd_kafka_init_transactions(d->producer, d->timeout_ms);
    if (e) {
        ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not start transactions (%s): %s", txid,
                rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return OL_ERR_UNREACHABLE;
    }
    return OL_ERR_OK;
}
