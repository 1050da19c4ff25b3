/* The runtime's dead-letter queue: poison records to the dlq topic. */
#include "consumers/runtime_internal.h"

#include "common/base/kafka.h"

/* ---- the dead-letter queue ---------------------------------------------- */

static void dlq_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    if (m->err)
        *(int *)m->_private = (int)m->err;
    (void)opaque;
}

/* Sends every poison record of the batch, with its reason, and waits for
 * the deliveries: they must be in the dlq before the batch commits. */
ol_err_t ol_rt__dlq_send(ol_rt_t *rt, const applier_t *ap, char *errstr, size_t errstr_size) {
    if (rt->dlq.disabled)
        return OL_ERR_OK;
    const batch_t *b = rt->pipe.applying;
    int failed = 0;
    size_t sent = 0;
    for (size_t i = 0; i < b->nrecs; i++) {
        const rec_t *r = &b->recs[i];
        if (!r->reason || !ol_rt__owns(ap, r->rkm->partition))
            continue;
        rd_kafka_headers_t *h = ol_kafka_dlq_headers(r->rkm, rt->topics[r->topic], r->stage, r->reason, rt->group);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rt->dlq.rk, RD_KAFKA_V_TOPIC(rt->dlq.topic), RD_KAFKA_V_KEY(r->rkm->key, r->rkm->key_len),
                              RD_KAFKA_V_VALUE(r->rkm->payload, r->rkm->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&failed), RD_KAFKA_V_END);
        if (err) {
            rd_kafka_headers_destroy(h);
            return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not send to %s: %s", rt->dlq.topic,
                           rd_kafka_err2str(err));
        }
        sent++;
    }
    if (!sent)
        return OL_ERR_OK;
    rd_kafka_flush(rt->dlq.rk, 30000);
    if (rd_kafka_outq_len(rt->dlq.rk) > 0 || failed)
        return ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not deliver %zu poison records to %s: %s", sent,
                       rt->dlq.topic, failed ? rd_kafka_err2str((rd_kafka_resp_err_t)failed) : "timed out");
    return OL_ERR_OK;
}

/* The producer of poison records. */
ol_err_t ol_rt__dlq_open(ol_rt_t *rt, char *errstr, size_t errstr_size) {
    const char *ptuning[] = {"linger.ms", "5", NULL};
    rd_kafka_conf_t *pconf =
        ol_kafka_conf_new(rt->conf, OL_KAFKA_PRODUCER, "orderlog-dlq", ptuning, errstr, errstr_size);
    if (!pconf)
        return OL_ERR_CONFIG;
    rd_kafka_conf_set_dr_msg_cb(pconf, dlq_dr);
    if (!(rt->dlq.rk = ol_kafka_handle_new(RD_KAFKA_PRODUCER, pconf, errstr, errstr_size))) {
        rd_kafka_conf_destroy(pconf);
        return OL_ERR_CONFIG;
    }
    return OL_ERR_OK;
}
