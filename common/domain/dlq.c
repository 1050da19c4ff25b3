/* The dlq topic as a reader sees it: dead letters and replay markers told
 * apart, reasons grouped, the topic read to a given end. See dlq.h. */
#include "common/domain/dlq.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"

/* The last header called name as a NUL-terminated string in buf
 * (truncated); false when there is none. */
static bool header_str(rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t size) {
    const void *val;
    size_t len;
    buf[0] = '\0';
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &len))
        return false;
    if (!val)
        return true;
    if (len >= size)
        len = size - 1;
    memcpy(buf, val, len);
    buf[len] = '\0';
    return true;
}

static bool parse_i64(const char *s, int64_t *out) {
    char *end;
    if (!*s || !isdigit((unsigned char)*s))
        return false;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return false;
    *out = v;
    return true;
}

ol_dlq_kind_t ol_dlq_parse(const rd_kafka_message_t *rkm, ol_dlq_letter_t *out) {
    rd_kafka_headers_t *hdrs = NULL;
    char num[48];
    int64_t v;
    memset(out, 0, sizeof(*out));
    out->partition = rkm->partition;
    out->offset = rkm->offset;
    out->timestamp_ms = rd_kafka_message_timestamp(rkm, NULL);
    out->src_partition = -1;
    out->src_offset = -1;
    out->marked_partition = -1;
    out->marked_offset = -1;
    if (rd_kafka_message_headers(rkm, &hdrs))
        hdrs = NULL;
    if (header_str(hdrs, OL_DLQ_H_REPLAYED, num, sizeof(num)) &&
        ol_dlq_pos_parse(num, strlen(num), &out->marked_partition, &out->marked_offset)) {
        header_str(hdrs, OL_DLQ_H_REPLAYED_FROM, out->replayed_from, sizeof(out->replayed_from));
        header_str(hdrs, OL_DLQ_H_REPLAYED_TO, out->replayed_to, sizeof(out->replayed_to));
        header_str(hdrs, "dlq_time", out->time, sizeof(out->time));
        return out->kind = OL_DLQ_MARKER;
    }
    if (!header_str(hdrs, "dlq_topic", out->topic, sizeof(out->topic)))
        return out->kind = OL_DLQ_OTHER;
    if (header_str(hdrs, "dlq_partition", num, sizeof(num)) && parse_i64(num, &v) && v <= INT32_MAX)
        out->src_partition = (int32_t)v;
    if (header_str(hdrs, "dlq_offset", num, sizeof(num)) && parse_i64(num, &v))
        out->src_offset = v;
    header_str(hdrs, "dlq_stage", out->stage, sizeof(out->stage));
    header_str(hdrs, "dlq_group", out->group, sizeof(out->group));
    header_str(hdrs, "dlq_time", out->time, sizeof(out->time));
    header_str(hdrs, "dlq_error", out->error, sizeof(out->error));
    header_str(hdrs, OL_DLQ_H_REPLAY_OF, out->replay_of, sizeof(out->replay_of));
    return out->kind = OL_DLQ_DEAD_LETTER;
}

void ol_dlq_pos_format(int32_t partition, int64_t offset, char *out, size_t out_size) {
    snprintf(out, out_size, "%" PRId32 ":%" PRId64, partition, offset);
}

bool ol_dlq_pos_parse(const char *s, size_t len, int32_t *partition, int64_t *offset) {
    char buf[48], *colon;
    int64_t p, o;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (!(colon = strchr(buf, ':')))
        return false;
    *colon = '\0';
    if (!parse_i64(buf, &p) || !parse_i64(colon + 1, &o) || p > INT32_MAX)
        return false;
    *partition = (int32_t)p;
    *offset = o;
    return true;
}

static bool is_word(unsigned char c) {
    return isalnum(c) || c == '_' || c == '.' || c == ':' || c == '-' || c == '+' || c == '/';
}

void ol_dlq_reason_group(const char *error, char *out, size_t out_size) {
    size_t n = 0;
#define PUT(c)                \
    do {                      \
        if (n + 1 < out_size) \
            out[n++] = (c);   \
    } while (0)
    const unsigned char *s = (const unsigned char *)error;
    while (*s) {
        if (*s == '"' || *s == '\'') {
            const unsigned char *q = s + 1;
            while (*q && *q != *s)
                q += q[0] == '\\' && q[1] ? 2 : 1;
            if (*q) {
                PUT((char)*s);
                PUT('*');
                PUT((char)*s);
                s = q + 1;
                continue;
            }
            PUT((char)*s); /* an unmatched quote stays */
            s++;
        } else if (is_word(*s)) {
            const unsigned char *e = s;
            bool digit = false;
            while (is_word(*e))
                digit |= isdigit(*e++) != 0;
            if (!digit) {
                for (; s < e; s++)
                    PUT((char)*s);
                continue;
            }
            const unsigned char *tail = e; /* "2:" or "7." ending a phrase keep their punctuation */
            while (tail > s && (tail[-1] == ':' || tail[-1] == '.'))
                tail--;
            PUT('#');
            for (s = tail; s < e; s++)
                PUT((char)*s);
        } else if (isspace(*s)) {
            while (isspace(*s))
                s++;
            if (n > 0 && *s)
                PUT(' ');
        } else {
            PUT((char)*s);
            s++;
        }
    }
#undef PUT
    if (out_size)
        out[n] = '\0';
}

rd_kafka_headers_t *ol_dlq_replay_headers(const rd_kafka_message_t *rkm) {
    rd_kafka_headers_t *orig = NULL, *h;
    const char *name;
    const void *val;
    size_t size;
    char pos[48];
    if (rd_kafka_message_headers(rkm, &orig))
        orig = NULL;
    h = rd_kafka_headers_new(orig ? rd_kafka_header_cnt(orig) + 1 : 1);
    for (size_t i = 0; orig && !rd_kafka_header_get_all(orig, i, &name, &val, &size); i++)
        if (strncmp(name, "dlq_", 4))
            rd_kafka_header_add(h, name, -1, val, val ? (ssize_t)size : 0);
    ol_dlq_pos_format(rkm->partition, rkm->offset, pos, sizeof(pos));
    rd_kafka_header_add(h, OL_DLQ_H_REPLAY_OF, -1, pos, -1);
    return h;
}

rd_kafka_headers_t *ol_dlq_marker_headers(const ol_dlq_letter_t *letter, const char *replayed_to) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    char buf[320], ts[40];
    ol_dlq_pos_format(letter->partition, letter->offset, buf, sizeof(buf));
    rd_kafka_header_add(h, OL_DLQ_H_REPLAYED, -1, buf, -1);
    snprintf(buf, sizeof(buf), "%s[%" PRId32 "]@%" PRId64, letter->topic, letter->src_partition, letter->src_offset);
    rd_kafka_header_add(h, OL_DLQ_H_REPLAYED_FROM, -1, buf, -1);
    rd_kafka_header_add(h, OL_DLQ_H_REPLAYED_TO, -1, replayed_to, -1);
    ol_time_format(ol_time_now_ms(), ts, sizeof(ts));
    rd_kafka_header_add(h, "dlq_time", -1, ts, -1);
    return h;
}

ol_err_t ol_dlq_scan(rd_kafka_t *rk, const char *topic, ol_dlq_range_t *ranges, int nranges, int timeout_ms,
                     ol_dlq_record_cb cb, void *opaque, char *errstr, size_t errstr_size) {
    ol_err_t err = OL_ERR_OK;
    if (nranges <= 0)
        return OL_ERR_OK;
    bool *done = ol_xcalloc((size_t)nranges, sizeof(*done));
    int remaining = nranges;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(nranges);
    for (int i = 0; i < nranges; i++)
        rd_kafka_topic_partition_list_add(parts, topic, ranges[i].partition)->offset = ranges[i].from;
    rd_kafka_resp_err_t kerr = ol_kafka_assign(rk, parts);
    if (kerr) {
        err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read %s: %s", topic, rd_kafka_err2str(kerr));
        goto out;
    }
    int64_t deadline = ol_time_mono_us() + (int64_t)timeout_ms * 1000;
    while (remaining > 0) {
        if (ol_time_mono_us() > deadline) {
            int i = 0;
            while (done[i])
                i++;
            err = ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT,
                          "could not read %s [%" PRId32
                          "] to its end: nothing came for %d ms (a transaction still open on it "
                          "holds read_committed readers back; is the broker up?)",
                          topic, ranges[i].partition, timeout_ms);
            goto out;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 100);
        if (!rkm)
            continue;
        deadline = ol_time_mono_us() + (int64_t)timeout_ms * 1000; /* progress */
        int i = 0;
        while (i < nranges && ranges[i].partition != rkm->partition)
            i++;
        if (i == nranges || done[i]) {
            /* another partition's error, or past the end of a finished one */
        } else if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (ranges[i].until < 0 || rkm->offset >= ranges[i].until) {
                if (ranges[i].until < 0)
                    ranges[i].until = rkm->offset;
                done[i] = true;
                remaining--;
            }
        } else if (rkm->err) {
            if (rkm->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || rkm->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                rkm->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
                err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read %s: %s", topic,
                              rd_kafka_message_errstr(rkm));
                rd_kafka_message_destroy(rkm);
                goto out;
            }
            ol_log_warn("reading %s: %s", topic, rd_kafka_message_errstr(rkm)); /* librdkafka retries */
        } else if (ranges[i].until >= 0 && rkm->offset >= ranges[i].until) {
            done[i] = true;
            remaining--;
        } else if (cb(opaque, rkm)) {
            remaining = 0;
        }
        rd_kafka_message_destroy(rkm);
    }
out:
    ol_kafka_assign(rk, NULL);
    rd_kafka_topic_partition_list_destroy(parts);
    free(done);
    return err;
}

ol_err_t ol_dlq_partitions(rd_kafka_t *rk, const ol_conf_t *conf, const char *topic, int32_t *count, int64_t *ends,
                           char *errstr, size_t errstr_size) {
    int timeout = (int)ol_conf_int(conf, "broker.wait.ms");
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, timeout);
    rd_kafka_topic_destroy(rkt);
    *count = 0;
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE,
                       "could not reach Kafka at %s within %d ms: %s (is the broker running? `ops/stack start`)",
                       ol_conf_str(conf, "kafka.bootstrap.servers"), timeout, rd_kafka_err2str(kerr));
    int32_t n = md->topic_cnt == 1 && !md->topics[0].err ? md->topics[0].partition_cnt : 0;
    rd_kafka_metadata_destroy(md);
    if (n <= 0)
        return ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND, "topic %s does not exist (run `orderlog topics create`)",
                       topic);
    if (n > OL_DLQ_MAX_PARTITIONS)
        return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "topic %s has %" PRId32 " partitions, more than %d",
                       topic, n, OL_DLQ_MAX_PARTITIONS);
    int64_t deadline = ol_time_mono_us() + (int64_t)timeout * 1000;
    for (int32_t p = 0; ends && p < n; p++) {
        int64_t lo = 0, hi = 0;
        if ((kerr = ol_kafka_watermarks(rk, topic, p, timeout, deadline, NULL, &lo, &hi)))
            return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not read where %s [%" PRId32 "] ends: %s",
                           topic, p, rd_kafka_err2str(kerr));
        ends[p] = hi;
    }
    *count = n;
    return OL_ERR_OK;
}

/* The dead letters read on one partition of a tally: offsets ascending (a
 * partition is read in order), and whether a marker covered each. */
typedef struct tally_letters_s {
    int64_t *offsets;
    bool *replayed;
    size_t n, cap;
} tally_letters_t;

typedef struct tally_s {
    const ol_dlq_range_t *ranges;
    int nranges;
    tally_letters_t *letters; /* one per range */
    ol_dlq_tally_t *out;
    int64_t deadline_us;
    bool late;
} tally_t;

static tally_letters_t *tally_letters(tally_t *t, int32_t partition) {
    for (int i = 0; i < t->nranges; i++)
        if (t->ranges[i].partition == partition)
            return &t->letters[i];
    return NULL;
}

static int tally_cb(void *opaque, const rd_kafka_message_t *rkm) {
    tally_t *t = opaque;
    ol_dlq_letter_t l;
    tally_letters_t *ls;
    switch (ol_dlq_parse(rkm, &l)) {
    case OL_DLQ_DEAD_LETTER:
        t->out->dead_letters++;
        if (!(ls = tally_letters(t, l.partition)))
            break;
        if (ls->n == ls->cap) {
            ls->cap = ls->cap ? ls->cap * 2 : 256;
            ls->offsets = ol_xrealloc(ls->offsets, ls->cap * sizeof(*ls->offsets));
            ls->replayed = ol_xrealloc(ls->replayed, ls->cap * sizeof(*ls->replayed));
        }
        ls->offsets[ls->n] = l.offset;
        ls->replayed[ls->n++] = false;
        break;
    case OL_DLQ_MARKER:
        t->out->markers++;
        if (!(ls = tally_letters(t, l.marked_partition)))
            break;
        for (size_t lo = 0, hi = ls->n; lo < hi;) {
            size_t mid = lo + (hi - lo) / 2;
            if (ls->offsets[mid] < l.marked_offset) {
                lo = mid + 1;
            } else if (ls->offsets[mid] > l.marked_offset) {
                hi = mid;
            } else {
                t->out->replayed += !ls->replayed[mid];
                ls->replayed[mid] = true;
                break;
            }
        }
        break;
    case OL_DLQ_OTHER:
        t->out->others++;
        break;
    }
    if (ol_time_mono_us() < t->deadline_us)
        return 0;
    t->late = true;
    return 1;
}

ol_err_t ol_dlq_tally(rd_kafka_t *rk, const char *topic, ol_dlq_range_t *ranges, int nranges, int timeout_ms,
                      ol_dlq_tally_t *out, char *errstr, size_t errstr_size) {
    memset(out, 0, sizeof(*out));
    tally_t t = {.ranges = ranges,
                 .nranges = nranges,
                 .letters = ol_xcalloc(nranges > 0 ? (size_t)nranges : 1, sizeof(*t.letters)),
                 .out = out,
                 .deadline_us = ol_time_mono_us() + (int64_t)timeout_ms * 1000};
    ol_err_t err = ol_dlq_scan(rk, topic, ranges, nranges, timeout_ms, tally_cb, &t, errstr, errstr_size);
    if (!err && t.late)
        err = ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT,
                      "could not read %s to its end within %d ms (%lld records counted)", topic, timeout_ms,
                      out->dead_letters + out->markers + out->others);
    for (int i = 0; i < nranges; i++) {
        free(t.letters[i].offsets);
        free(t.letters[i].replayed);
    }
    free(t.letters);
    return err;
}
