/* Reading a topic to its end, then following it (see follow.h). */
#include "consumers/follow.h"

#include <stdint.h>
#include <stdlib.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"

struct ol_follow_s {
    rd_kafka_t *rk;
    char *topic;
    int nparts, left;
    struct {
        int32_t id;  /* in the metadata's order */
        int64_t end; /* where the partition ended on open; -1: read to its end */
    } * parts;
    long long records;
};

/* The topic's partitions into f->parts. */
static ol_err_t read_partitions(ol_follow_t *f, int timeout_ms, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(f->rk, f->topic, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(f->rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read the partitions of %s: %s", f->topic,
                       rd_kafka_err2str(kerr));
    ol_err_t err = OL_ERR_OK;
    if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0) {
        err = ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND, "topic %s does not exist (run `orderlog topics create`)",
                      f->topic);
        goto out;
    }
    f->nparts = md->topics[0].partition_cnt;
    f->parts = ol_xcalloc((size_t)f->nparts, sizeof(*f->parts));
    for (int i = 0; i < f->nparts; i++)
        f->parts[i].id = md->topics[0].partitions[i].id;
out:
    rd_kafka_metadata_destroy(md);
    return err;
}

/* The end of each partition, and the assignment. */
static ol_err_t assign_all(ol_follow_t *f, int timeout_ms, const volatile sig_atomic_t *stop, char *errstr,
                           size_t errstr_size) {
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(f->nparts);
    rd_kafka_resp_err_t kerr;
    ol_err_t err = OL_ERR_OK;
    for (int i = 0; i < f->nparts && !err; i++) {
        int64_t low = 0, high = 0, deadline = ol_time_mono_us() + (int64_t)timeout_ms * 1000;
        /* a topic just created may have no leader yet: try again for timeout_ms */
        kerr = ol_kafka_watermarks(f->rk, f->topic, f->parts[i].id, timeout_ms, deadline, stop, &low, &high);
        if (kerr)
            err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read the end of %s[%d]: %s", f->topic,
                          (int)f->parts[i].id, rd_kafka_err2str(kerr));
        rd_kafka_topic_partition_list_add(parts, f->topic, f->parts[i].id)->offset = RD_KAFKA_OFFSET_BEGINNING;
        f->parts[i].end = high > low ? high : -1;
        f->left += high > low;
    }
    if (!err && (kerr = ol_kafka_assign(f->rk, parts)))
        err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read %s: %s", f->topic, rd_kafka_err2str(kerr));
    rd_kafka_topic_partition_list_destroy(parts);
    return err;
}

ol_err_t ol_follow_open(ol_follow_t **out, rd_kafka_t *rk, const char *topic, int timeout_ms,
                        const volatile sig_atomic_t *stop, char *errstr, size_t errstr_size) {
    *out = NULL;
    ol_follow_t *f = ol_xcalloc(1, sizeof(*f));
    f->rk = rk;
    f->topic = ol_xstrdup(topic);
    ol_err_t err = read_partitions(f, timeout_ms, errstr, errstr_size);
    if (!err)
        err = assign_all(f, timeout_ms, stop, errstr, errstr_size);
    if (err) {
        ol_follow_destroy(f);
        return err;
    }
    *out = f;
    return OL_ERR_OK;
}

/* A partition reached the end it had on open. */
static void count_end(ol_follow_t *f, const rd_kafka_message_t *rkm) {
    int i = 0;
    while (i < f->nparts && f->parts[i].id != rkm->partition)
        i++;
    if (i < f->nparts && f->parts[i].end >= 0 &&
        (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF || rkm->offset + 1 >= f->parts[i].end)) {
        f->parts[i].end = -1;
        f->left--;
    }
}

bool ol_follow_poll(ol_follow_t *f, int timeout_ms, ol_follow_fn *fn, void *opaque) {
    rd_kafka_message_t *rkm = rd_kafka_consumer_poll(f->rk, timeout_ms);
    if (!rkm)
        return false;
    if (rkm->err && rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        ol_log_warn("reading %s: %s", f->topic, rd_kafka_message_errstr(rkm));
    } else {
        if (!rkm->err) {
            fn(opaque, rkm);
            f->records++;
        }
        count_end(f, rkm);
    }
    rd_kafka_message_destroy(rkm);
    return true;
}

bool ol_follow_caught_up(const ol_follow_t *f) {
    return f->left <= 0;
}

long long ol_follow_records(const ol_follow_t *f) {
    return f->records;
}

void ol_follow_destroy(ol_follow_t *f) {
    if (f) {
        free(f->topic);
        free(f->parts);
    }
    free(f);
}
