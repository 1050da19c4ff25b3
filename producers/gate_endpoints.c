/* What each endpoint of the gate does: POST /buy and POST /checkout (rate
 * limits, the client's address, the body, encoding, producing and waiting),
 * GET /buy/<id> (the decision cache, then PostgreSQL), /healthz, /readyz and
 * /metrics. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/base/http.h"
#include "common/base/json.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/event.h"
#include "producers/gate_serve.h"

/* ---- per-thread context -------------------------------------------------- */

void ol_gate__thread_ctx_free(void *p) {
    thread_ctx_t *t = p;
    ol_codec_destroy(t->codec);
    ol_arena_destroy(t->arena);
    free(t);
}

static thread_ctx_t *thread_ctx(gate_t *g) {
    thread_ctx_t *t = pthread_getspecific(g->tkey);
    if (!t) {
        t = ol_xcalloc(1, sizeof(*t));
        t->codec = ol_codec_new();
        t->arena = ol_arena_new(0);
        pthread_setspecific(g->tkey, t);
    }
    return t;
}

/* ---- the client's address ----------------------------------------------- */

/* Every line of one header, joined with commas in the order received. */
typedef struct joined_s {
    const char *name;
    char *value; /* new; NULL when there is no such header */
    size_t len;
} joined_t;

static enum MHD_Result join_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    joined_t *j = cls;
    if (!key || strcasecmp(key, j->name))
        return MHD_YES;
    size_t n = value ? strlen(value) : 0;
    bool first = !j->value;
    j->value = ol_xrealloc(j->value, j->len + n + 2);
    if (!first)
        j->value[j->len++] = ',';
    memcpy(j->value + j->len, value ? value : "", n);
    j->len += n;
    j->value[j->len] = '\0';
    return MHD_YES;
}

/* The address a buy counts against (the per-IP bucket, the blacklist,
 * BuyRequested.client_ip): the TCP peer or, when the peer is one of
 * gate.trusted.proxies, the client its forwarding header names. False with
 * *ret answered (400) when that header names none usable. */
static bool client_address(req_t *r, ol_netaddr_t *out, enum MHD_Result *ret) {
    gate_t *g = r->g;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    ol_netaddr_t peer;
    if (!ci || !ol_netaddr_from_sockaddr(ci->client_addr, &peer)) {
        *ret = ol_gate__respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "could not read the client's address", NULL,
                                      OUT_UNAVAILABLE);
        return false;
    }
    joined_t h = {.name = g->forwarded == OL_FORWARDED_RFC7239 ? "Forwarded" : "X-Forwarded-For"};
    if (ol_netlist_has(g->trusted, &peer))
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, join_header, &h);
    char errstr[256];
    bool forwarded;
    ol_err_t err = ol_netaddr_client(&peer, g->trusted, g->forwarded, h.value, out, &forwarded, errstr, sizeof(errstr));
    free(h.value);
    if (err) {
        ol_metric_inc(g->m.forwarded_invalid, 0);
        *ret = ol_gate__respond_error(r, MHD_HTTP_BAD_REQUEST, errstr, h.name, OUT_INVALID);
        return false;
    }
    ol_metric_inc(g->m.client, forwarded ? SOURCE_FORWARDED : SOURCE_PEER);
    return true;
}

/* ---- producing and waiting ----------------------------------------------- */

/* Suspends r, registers its wait and produces the event (key: sku). The
 * answer comes through the resumed connection. */
static enum MHD_Result produce_and_wait(req_t *r, rd_kafka_topic_t *rkt, const char *key, const void *payload,
                                        size_t len, rd_kafka_headers_t *hdrs) {
    gate_t *g = r->g;
    MHD_suspend_connection(r->conn); /* before any other thread can see r */
    r->suspended = true;
    atomic_fetch_add(&g->suspended, 1);
    r->deadline_us = r->start_us + g->wait_us;
    bool cached = false;
    pthread_mutex_lock(&g->lock);
    if (r->ep == EP_BUY) {
        centry_t *e = ol_gate__cache_get(&g->cache, r->request_id);
        /* a retried request already decided (too_old is no decision: sent again) */
        if (e && e->answer && e->reason != REASON_TOO_OLD && ol_gate__owner_ok(r, e->owner)) {
            ol_gate__set_answer(r, MHD_HTTP_OK, ol_xstrdup(e->answer), e->outcome, e->reason);
            cached = true;
        } else if (e && e->answer && !ol_gate__owner_ok(r, e->owner)) { /* another user's request id */
            r->auth_outcome = OL_GATE_AUTH_FORBIDDEN;
            ol_gate__set_answer(r, MHD_HTTP_FORBIDDEN,
                                ol_gate__answer_error("requestID is another user's", "requestID"), OUT_FORBIDDEN, -1);
            cached = true;
        }
    }
    if (!cached) {
        ol_gate__wait_add(g, r);
        r->nowait = g->wait_us == 0 || g->waiting > g->max_waiting;
    }
    pthread_mutex_unlock(&g->lock);
    if (cached) {
        rd_kafka_headers_destroy(hdrs);
        MHD_resume_connection(r->conn);
        return MHD_YES;
    }
    rd_kafka_resp_err_t err;
    for (int tries = 0;; tries++) {
        err = rd_kafka_producev(g->rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_KEY(key, strlen(key)),
                                RD_KAFKA_V_VALUE((void *)payload, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(r), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries == 20)
            break;
        usleep(1000); /* the poll thread drains delivery reports meanwhile */
    }
    if (err) {
        rd_kafka_headers_destroy(hdrs);
        atomic_fetch_add(&g->m.delivery_failed, 1);
        char msg[200];
        snprintf(msg, sizeof(msg), "could not hand the request to Kafka: %s", rd_kafka_err2str(err));
        pthread_mutex_lock(&g->lock);
        ol_gate__wait_remove(g, r);
        if (!r->done)
            ol_gate__set_answer(r, MHD_HTTP_SERVICE_UNAVAILABLE, ol_gate__answer_unavailable(msg, r->request_id),
                                OUT_UNAVAILABLE, -1);
        pthread_mutex_unlock(&g->lock);
        MHD_resume_connection(r->conn);
    }
    return MHD_YES;
}

/* Encodes the members as et, with its envelope, and produces it waiting
 * for its decision on r's keys (set); 400 when it cannot be encoded. */
static enum MHD_Result encode_and_produce(req_t *r, thread_ctx_t *t, const ol_event_type_t *et,
                                          ol_json_member_t *members, size_t nmembers) {
    gate_t *g = r->g;
    ol_json_t data = ol_json_object_of(members, nmembers);
    ol_event_out_t ev;
    char errstr[512];
    if (ol_event_encode(t->codec, et, &data, ol_time_now_ms(), g->source, &ev, errstr, sizeof(errstr)))
        return ol_gate__respond_error(r, MHD_HTTP_BAD_REQUEST, errstr, "body", OUT_INVALID);
    return produce_and_wait(r, g->rkt_buy, ev.key, ev.payload, ev.len, ev.hdrs);
}

/* ---- endpoints ----------------------------------------------------------- */

/* The checks every POST body passes first; *out the parsed object. */
static bool body_object(req_t *r, thread_ctx_t *t, enum MHD_Result *ret, const ol_json_t **out) {
    char errstr[256];
    if (r->bad_type) {
        *ret = ol_gate__respond_error(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "content type must be application/json",
                                      "Content-Type", OUT_INVALID);
        return false;
    }
    if (r->too_large) {
        snprintf(errstr, sizeof(errstr), "body larger than %zu bytes (gate.body.max.bytes)", r->g->body_max);
        *ret = ol_gate__respond_error(r, MHD_HTTP_BAD_REQUEST, errstr, "body", OUT_INVALID);
        return false;
    }
    ol_gate_check_t c = {0};
    ol_arena_reset(t->arena);
    if (!ol_gate__parse_body(t->arena, r->body, r->body_len, out, &c)) {
        *ret = ol_gate__respond_error(r, MHD_HTTP_BAD_REQUEST, c.msg, c.field, OUT_INVALID);
        return false;
    }
    return true;
}

/* gate.auth: the body's userID (and userLevel when level is not NULL) must
 * be the authenticated user's, else 403 naming the field; absent (NULL user,
 * !has_level), they are filled in. */
static bool body_is_who(req_t *r, const char **user, int32_t *level, bool has_level, enum MHD_Result *ret) {
    const char *field = ol_gate_auth_mismatch(&r->who, *user, level && has_level ? level : NULL);
    if (field) {
        r->auth_outcome = OL_GATE_AUTH_FORBIDDEN;
        *ret = ol_gate__respond_error(r, MHD_HTTP_FORBIDDEN,
                                      level && !strcmp(field, "userLevel")
                                          ? "userLevel is not the authenticated user's level"
                                          : "userID is not the authenticated user",
                                      field, OUT_FORBIDDEN);
        return false;
    }
    *user = r->who.user;
    if (level)
        *level = r->who.level;
    return true;
}

enum MHD_Result ol_gate__handle_buy(req_t *r) {
    gate_t *g = r->g;
    thread_ctx_t *t = thread_ctx(g);
    enum MHD_Result ret;
    const ol_json_t *obj;
    ol_netaddr_t client;
    char addr[OL_NETADDR_STRLEN];
    if (!ol_tokenbucket_take(g->rl_instance, "", 0, r->start_us))
        return ol_gate__respond_throttled(r, false);
    if (!g->trust_body) { /* before the body: a bad one spends the client's token too */
        if (!client_address(r, &client, &ret))
            return ret;
        ol_netaddr_format(&client, addr);
        if (!ol_tokenbucket_take(g->rl_ip, addr, strlen(addr), r->start_us))
            return ol_gate__respond_throttled(r, true);
    }
    if (!body_object(r, t, &ret, &obj))
        return ret;
    const ol_json_t *ip = ol_json_get(obj, "clientIP");
    if (g->trust_body && ip && ip->type == OL_JSON_STRING &&
        !ol_tokenbucket_take(g->rl_ip, ip->u.s, ip->len, r->start_us))
        return ol_gate__respond_throttled(r, true);
    ol_gate_check_t c = {0};
    ol_gate_buy_t b;
    if (!ol_gate__check_buy(obj, r->authed, &b, &c))
        return ol_gate__respond_error(r, MHD_HTTP_BAD_REQUEST, c.msg, c.field, OUT_INVALID);
    /* the body's clientIP (the seed API's) is checked, then believed only
     * with gate.trust.body.client.ip */
    ol_netaddr_t claimed;
    if (g->trust_body) {
        snprintf(addr, sizeof(addr), "%s", b.client_ip);
        ol_metric_inc(g->m.client, SOURCE_BODY);
    } else if (!ol_netaddr_parse(b.client_ip, strlen(b.client_ip), &claimed) || !ol_netaddr_equal(&claimed, &client)) {
        ol_metric_inc(g->m.claim_ignored, 0);
    }
    if (r->authed && !body_is_who(r, &b.user, &b.level, b.has_level, &ret))
        return ret;
    if (b.request_id)
        memcpy(r->request_id, b.request_id, strlen(b.request_id) + 1);
    else
        ol_uuid_v4(r->request_id);
    ol_json_member_t m[8];
    ol_gate__buy_members(&b, r->request_id, addr, m);
    r->nkeys = 1;
    snprintf(r->keys[0], KEY_SIZE, "b:%s", r->request_id);
    return encode_and_produce(r, t, g->et_buy, m, 8);
}

enum MHD_Result ol_gate__handle_checkout(req_t *r) {
    gate_t *g = r->g;
    thread_ctx_t *t = thread_ctx(g);
    enum MHD_Result ret;
    const ol_json_t *obj;
    if (!ol_tokenbucket_take(g->rl_instance, "", 0, r->start_us))
        return ol_gate__respond_throttled(r, false);
    if (!body_object(r, t, &ret, &obj))
        return ret;
    ol_gate_check_t c = {0};
    ol_gate_checkout_t k;
    if (!ol_gate__check_checkout(obj, r->authed, &k, &c))
        return ol_gate__respond_error(r, MHD_HTTP_BAD_REQUEST, c.msg, c.field, OUT_INVALID);
    if (r->authed && !body_is_who(r, &k.user, NULL, false, &ret))
        return ret;
    ol_uuid_v4(r->request_id);
    memcpy(r->hold_id, k.hold, strlen(k.hold) + 1);
    ol_json_member_t m[4];
    ol_gate__checkout_members(&k, r->request_id, m);
    r->nkeys = 2;
    snprintf(r->keys[0], KEY_SIZE, "c:%s", r->request_id);
    snprintf(r->keys[1], KEY_SIZE, "h:%s", k.hold);
    return encode_and_produce(r, t, g->et_checkout, m, 4);
}

enum MHD_Result ol_gate__handle_buy_status(req_t *r) {
    gate_t *g = r->g;
    const char *id = r->request_id;
    if (!ol_tokenbucket_take(g->rl_instance, "", 0, r->start_us)) /* polls share the instance's budget */
        return ol_gate__respond_throttled(r, false);
    if (!*id || !ol_gate__id_chars_ok(id))
        return ol_gate__respond_error(r, MHD_HTTP_NOT_FOUND, "unknown request", "requestID", OUT_NOT_FOUND);
    char key[KEY_SIZE], *answer = NULL;
    outcome_t outcome = OUT_OK;
    int reason = -1;
    snprintf(key, sizeof(key), "b:%s", id);
    pthread_mutex_lock(&g->lock);
    centry_t *e = ol_gate__cache_get(&g->cache, id);
    /* gate.auth: another user's request is answered as unknown */
    bool mine = !e || ol_gate__owner_ok(r, e->owner), decided = e && e->answer;
    bool pending = (e && !e->answer && mine) || ol_gate__wait_exists(g, key, r->authed ? r->who.user : NULL);
    if (decided && mine) {
        answer = ol_xstrdup(e->answer);
        outcome = e->outcome;
        reason = e->reason;
    }
    pthread_mutex_unlock(&g->lock);
    if (answer)
        return ol_gate__respond(r, MHD_HTTP_OK, answer, outcome, reason, NULL);
    if (decided) {
        r->auth_outcome = OL_GATE_AUTH_FORBIDDEN;
        return ol_gate__respond_error(r, MHD_HTTP_NOT_FOUND, "unknown request", "requestID", OUT_NOT_FOUND);
    }
    ol_gate__lookup_start(r, pending); /* PostgreSQL, off this thread; answered when resumed */
    return MHD_YES;
}

enum MHD_Result ol_gate__handle_healthz(req_t *r) {
    gate_t *g = r->g;
    bool p = atomic_load(&g->producer_up), c = atomic_load(&g->consumer_up), s = atomic_load(&g->stopping);
    char body[200];
    snprintf(body, sizeof(body), "{\"status\":\"%s\",\"producer\":\"%s\",\"consumer\":\"%s\",\"waiting\":%lld}",
             s        ? "stopping"
             : p && c ? "ok"
                      : "degraded",
             p ? "up" : "down", c ? "up" : "down", (long long)atomic_load(&g->waiting_now));
    return ol_gate__respond(r, p && c && !s ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, ol_xstrdup(body),
                            p && c && !s ? OUT_OK : OUT_UNAVAILABLE, -1, NULL);
}

/* GET /readyz: whether the gate can take a buy now and have it decided:
 * not stopping, the producer reaches Kafka and no delivery failed in the
 * last READY_FAILURE_US, the sale-events reader is assigned and not in
 * error. /healthz keeps its own meaning (both Kafka clients up). */
#define READY_FAILURE_US (10 * 1000 * 1000)
enum MHD_Result ol_gate__handle_readyz(req_t *r) {
    gate_t *g = r->g;
    json_t *checks = json_object();
    bool ok = ol_http_check(checks, "stopping", !atomic_load(&g->stopping), "%s",
                            atomic_load(&g->stopping) ? "shutting down" : "no");
    int64_t failed_at = atomic_load(&g->m.failed_at_us);
    int64_t ago_ms = failed_at ? (ol_time_mono_us() - failed_at) / 1000 : -1;
    if (!atomic_load(&g->producer_up))
        ok &= ol_http_check(checks, "producer", false, "cannot reach the cluster");
    else if (failed_at && ago_ms * 1000 < READY_FAILURE_US)
        ok &= ol_http_check(checks, "producer", false, "a delivery to %s failed %lld ms ago", g->topic_buy,
                            (long long)ago_ms);
    else
        ok &= ol_http_check(checks, "producer", true, "up");
    int assigned = ol_kafka_assigned_count(g->rkc);
    ok &= ol_http_check(checks, "decisions", atomic_load(&g->consumer_up) && assigned > 0,
                        "reader of %s %s, %d partitions assigned", g->topic_sale,
                        atomic_load(&g->consumer_up) ? "up" : "down", assigned);
    char *body = ol_http_health_body(checks, ok);
    return ol_gate__respond(r, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, body, ok ? OUT_OK : OUT_UNAVAILABLE, -1,
                            NULL);
}

enum MHD_Result ol_gate__handle_metrics(req_t *r) {
    gate_t *g = r->g;
    size_t size;
    char *text = ol_metrics_render(g->m.reg, &size);
    struct MHD_Response *resp = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, OL_METRICS_CONTENT_TYPE);
    enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    ol_gate__observe(g, r, OUT_OK, -1);
    return ret;
}
