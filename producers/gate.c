/* orderlog gate: the HTTP front of the flash sale (DESIGN §4).
 *
 * POST /buy is rate-limited (instance, then client IP), validated, written
 * to buy-requests as a BuyRequested, and answered with the decider's
 * decision read back from sale-events, or 202 with a URL to poll when the
 * decision takes longer than gate.wait.ms. POST /checkout does the same
 * with CheckoutRequested, HoldConverted and CheckoutRejected. This file is
 * the HTTP side (routing, validation, producing, /metrics, setup and
 * shutdown); gate_wait.c completes the waits (design in producers/gate.h). */
#include "producers/gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/contract.h"
#include "common/domain/event.h"
#include "common/base/http.h"
#include "common/base/json.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"

static const char *const endpoint_names[] = {ENDPOINTS(NAME_STR) NULL};
static const char *const outcome_names[] = {OUTCOMES(NAME_STR) NULL};
static const char *const reason_names[] = {REASONS(NAME_STR) NULL};
static const char *const limit_names[] = {"instance", "ip", NULL};
static const char *const client_sources[] = {"peer", "forwarded", "body", NULL};
enum { SOURCE_PEER, SOURCE_FORWARDED, SOURCE_BODY };
/* the endpoints whose durations are kept */
static const char *const timed_names[] = {"buy", "buy_status", "checkout", NULL};

/* Request duration buckets, in seconds. */
static const double latency_le[] = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

/* ---- per-thread context -------------------------------------------------- */

static void thread_ctx_free(void *p) {
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

/* ---- responding ---------------------------------------------------------- */

static void observe(gate_t *g, const req_t *r, outcome_t outcome, int reason) {
    ol_metric_inc(g->m.requests, ol_metric_cell_at(g->m.requests, (size_t)r->ep, (size_t)outcome));
    if (outcome == OUT_REJECTED && reason >= 0)
        ol_metric_inc(g->m.rejected, ol_metric_cell_at(g->m.rejected, (size_t)r->ep, (size_t)reason));
    if (r->auth_checked)
        ol_metric_inc(g->m.auth, (size_t)r->auth_outcome);
    int timed = r->ep == EP_BUY ? 0 : r->ep == EP_BUY_STATUS ? 1 : r->ep == EP_CHECKOUT ? 2 : -1;
    if (timed >= 0)
        ol_metric_observe(g->m.duration, (size_t)timed, (double)(ol_time_mono_us() - r->start_us) / 1e6);
}

/* Queues body (taken: a malloc'd string) with status. */
static enum MHD_Result respond(req_t *r, unsigned status, char *body, outcome_t outcome, int reason,
                               const char *allow) {
    gate_t *g = r->g;
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (r->challenge)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, r->challenge);
    if (atomic_load(&g->stopping) || r->must_close)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    observe(g, r, outcome, reason);
    return ret;
}

static enum MHD_Result respond_error(req_t *r, unsigned status, const char *error, const char *field,
                                     outcome_t outcome) {
    return respond(r, status, ol_gate__answer_error(error, field), outcome, -1, NULL);
}

static enum MHD_Result respond_throttled(req_t *r, bool ip) {
    ol_metric_inc(r->g->m.throttled, ip ? 1 : 0);
    return respond(r, MHD_HTTP_TOO_MANY_REQUESTS, ol_xstrdup(ol_gate__throttled_json), OUT_THROTTLED, -1, NULL);
}

/* ---- validation ---------------------------------------------------------- */

/* Fails with a message for the field; NULL when the value is fine. */
typedef ol_gate_check_t check_t;

static bool fail(check_t *c, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(check_t *c, const char *field, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
    va_end(ap);
    c->field = field;
    return false;
}

/* Every key one of names, compared by full length. */
static bool check_known(check_t *c, const ol_json_t *obj, const char *const *names) {
    for (size_t i = 0; i < obj->len; i++) {
        const ol_json_member_t *m = &obj->u.members[i];
        const char *const *n = names;
        while (*n && !(strlen(*n) == m->key_len && !memcmp(*n, m->key, m->key_len)))
            n++;
        if (!*n)
            return fail(c, m->key, "unknown field");
    }
    return true;
}

/* A string field of min..max bytes, no control characters. */
static bool check_str(check_t *c, const ol_json_t *obj, const char *name, bool required, size_t min, size_t max,
                      const char **out) {
    const ol_json_t *v = ol_json_get(obj, name);
    *out = NULL;
    if (!v)
        return required ? fail(c, name, "missing field") : true;
    if (v->type != OL_JSON_STRING)
        return fail(c, name, "must be a string, got %s", ol_json_kind(v));
    if (v->len < min || v->len > max)
        return min ? fail(c, name, "must be %zu to %zu characters long", min, max)
                   : fail(c, name, "must be at most %zu characters long", max);
    for (size_t i = 0; i < v->len; i++)
        if ((unsigned char)v->u.s[i] < 0x20 || v->u.s[i] == 0x7f)
            return fail(c, name, "must not contain control characters");
    *out = v->u.s;
    return true;
}

static bool check_int(check_t *c, const ol_json_t *obj, const char *name, int64_t min, int64_t max, int32_t *out) {
    const ol_json_t *v = ol_json_get(obj, name);
    if (!v)
        return fail(c, name, "missing field");
    if (v->type != OL_JSON_INT)
        return fail(c, name, "must be an integer, got %s", ol_json_kind(v));
    if (v->u.i < min)
        return fail(c, name, "must be at least %lld, got %lld", (long long)min, (long long)v->u.i);
    if (v->u.i > max)
        return fail(c, name, "must be at most %lld, got %lld", (long long)max, (long long)v->u.i);
    *out = (int32_t)v->u.i;
    return true;
}

static bool id_chars_ok(const char *s) {
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == ':' || *s == '-'))
            return false;
    return true;
}

static bool ip_ok(const char *s) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static const char *const buy_fields[] = {"sessionID", "clientIP",      "userID",    "userLevel",
                                         "goodsSKU",  "goodsQuantity", "requestID", NULL};
static const char *const checkout_fields[] = {"userID", "goodsSKU", "holdID", NULL};

bool ol_gate__parse_body(ol_arena_t *arena, const char *body, size_t len, const ol_json_t **out, ol_gate_check_t *c) {
    ol_json_t *root;
    const char *field; /* the field holding NUL, named in the answer */
    if (ol_json_parse(arena, body ? body : "", len, &root, &field, c->msg, sizeof(c->msg))) {
        c->field = field ? field : "body";
        return false;
    }
    if (root->type != OL_JSON_OBJECT)
        return fail(c, "body", "must be a JSON object, got %s", ol_json_kind(root));
    *out = root;
    return true;
}

bool ol_gate__check_buy(const ol_json_t *obj, bool authed, ol_gate_buy_t *out, ol_gate_check_t *c) {
    ol_gate_buy_t b = {0};
    b.has_level = !authed || ol_json_get(obj, "userLevel"); /* with gate.auth, the token's when absent */
    if (!check_known(c, obj, buy_fields) || !check_str(c, obj, "sessionID", true, 0, FIELD_MAX, &b.session) ||
        !check_str(c, obj, "clientIP", true, 1, 45, &b.client_ip) ||
        (!ip_ok(b.client_ip) && !fail(c, "clientIP", "must be an IPv4 or IPv6 address")) ||
        !check_str(c, obj, "userID", !authed, 1, FIELD_MAX, &b.user) ||
        (b.has_level && !check_int(c, obj, "userLevel", 0, INT32_MAX, &b.level)) ||
        !check_str(c, obj, "goodsSKU", true, 1, FIELD_MAX, &b.sku) ||
        !check_int(c, obj, "goodsQuantity", 1, INT32_MAX, &b.quantity) ||
        !check_str(c, obj, "requestID", false, 1, REQUEST_ID_MAX, &b.request_id) ||
        (b.request_id && !id_chars_ok(b.request_id) &&
         !fail(c, "requestID", "may only hold letters, digits and . _ : -")))
        return false;
    *out = b;
    return true;
}

bool ol_gate__check_checkout(const ol_json_t *obj, bool authed, ol_gate_checkout_t *out, ol_gate_check_t *c) {
    ol_gate_checkout_t k = {0};
    if (!check_known(c, obj, checkout_fields) || !check_str(c, obj, "userID", !authed, 1, FIELD_MAX, &k.user) ||
        !check_str(c, obj, "goodsSKU", true, 1, FIELD_MAX, &k.sku) ||
        !check_str(c, obj, "holdID", true, 1, FIELD_MAX, &k.hold))
        return false;
    *out = k;
    return true;
}

void ol_gate__buy_members(const ol_gate_buy_t *b, const char *request_id, const char *client_ip,
                          ol_json_member_t m[8]) {
    ol_json_member_str(&m[0], "request_id", request_id);
    ol_json_member_str(&m[1], "session_id", b->session);
    ol_json_member_str(&m[2], "client_ip", client_ip);
    ol_json_member_str(&m[3], "user_id", b->user);
    ol_json_member_int(&m[4], "user_level", b->level);
    ol_json_member_str(&m[5], "sku", b->sku);
    ol_json_member_int(&m[6], "quantity", b->quantity);
    ol_json_member_str(&m[7], "channel", "gate");
}

void ol_gate__checkout_members(const ol_gate_checkout_t *c, const char *request_id, ol_json_member_t m[4]) {
    ol_json_member_str(&m[0], "request_id", request_id);
    ol_json_member_str(&m[1], "hold_id", c->hold);
    ol_json_member_str(&m[2], "user_id", c->user);
    ol_json_member_str(&m[3], "sku", c->sku);
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
        *ret = respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "could not read the client's address", NULL,
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
        *ret = respond_error(r, MHD_HTTP_BAD_REQUEST, errstr, h.name, OUT_INVALID);
        return false;
    }
    ol_metric_inc(g->m.client, forwarded ? SOURCE_FORWARDED : SOURCE_PEER);
    return true;
}

/* ---- producing and waiting ----------------------------------------------- */

/* Encodes the members as et, with its envelope (ev->hdrs new). */
static ol_err_t encode(gate_t *g, thread_ctx_t *t, const ol_event_type_t *et, ol_json_member_t *members,
                       size_t nmembers, ol_event_out_t *ev, char *errstr, size_t errstr_size) {
    ol_json_t data = ol_json_object_of(members, nmembers);
    return ol_event_encode(t->codec, et, &data, ol_time_now_ms(), g->source, ev, errstr, errstr_size);
}

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

/* ---- endpoints ----------------------------------------------------------- */

/* The checks every POST body passes first; *out the parsed object. */
static bool body_object(req_t *r, thread_ctx_t *t, enum MHD_Result *ret, const ol_json_t **out) {
    char errstr[256];
    if (r->bad_type) {
        *ret = respond_error(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "content type must be application/json",
                             "Content-Type", OUT_INVALID);
        return false;
    }
    if (r->too_large) {
        snprintf(errstr, sizeof(errstr), "body larger than %zu bytes (gate.body.max.bytes)", r->g->body_max);
        *ret = respond_error(r, MHD_HTTP_BAD_REQUEST, errstr, "body", OUT_INVALID);
        return false;
    }
    check_t c = {0};
    ol_arena_reset(t->arena);
    if (!ol_gate__parse_body(t->arena, r->body, r->body_len, out, &c)) {
        *ret = respond_error(r, MHD_HTTP_BAD_REQUEST, c.msg, c.field, OUT_INVALID);
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
        *ret = respond_error(r, MHD_HTTP_FORBIDDEN,
                             level && !strcmp(field, "userLevel") ? "userLevel is not the authenticated user's level"
                                                                  : "userID is not the authenticated user",
                             field, OUT_FORBIDDEN);
        return false;
    }
    *user = r->who.user;
    if (level)
        *level = r->who.level;
    return true;
}

static enum MHD_Result handle_buy(req_t *r) {
    gate_t *g = r->g;
    thread_ctx_t *t = thread_ctx(g);
    enum MHD_Result ret;
    const ol_json_t *obj;
    ol_netaddr_t client;
    char addr[OL_NETADDR_STRLEN];
    if (!ol_tokenbucket_take(g->rl_instance, "", 0, r->start_us))
        return respond_throttled(r, false);
    if (!g->trust_body) { /* before the body: a bad one spends the client's token too */
        if (!client_address(r, &client, &ret))
            return ret;
        ol_netaddr_format(&client, addr);
        if (!ol_tokenbucket_take(g->rl_ip, addr, strlen(addr), r->start_us))
            return respond_throttled(r, true);
    }
    if (!body_object(r, t, &ret, &obj))
        return ret;
    const ol_json_t *ip = ol_json_get(obj, "clientIP");
    if (g->trust_body && ip && ip->type == OL_JSON_STRING &&
        !ol_tokenbucket_take(g->rl_ip, ip->u.s, ip->len, r->start_us))
        return respond_throttled(r, true);
    check_t c = {0};
    ol_gate_buy_t b;
    if (!ol_gate__check_buy(obj, r->authed, &b, &c))
        return respond_error(r, MHD_HTTP_BAD_REQUEST, c.msg, c.field, OUT_INVALID);
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
    ol_event_out_t ev;
    char errstr[512];
    if (encode(g, t, g->et_buy, m, 8, &ev, errstr, sizeof(errstr)))
        return respond_error(r, MHD_HTTP_BAD_REQUEST, errstr, "body", OUT_INVALID);
    r->nkeys = 1;
    snprintf(r->keys[0], KEY_SIZE, "b:%s", r->request_id);
    return produce_and_wait(r, g->rkt_buy, ev.key, ev.payload, ev.len, ev.hdrs);
}

static enum MHD_Result handle_checkout(req_t *r) {
    gate_t *g = r->g;
    thread_ctx_t *t = thread_ctx(g);
    enum MHD_Result ret;
    const ol_json_t *obj;
    if (!ol_tokenbucket_take(g->rl_instance, "", 0, r->start_us))
        return respond_throttled(r, false);
    if (!body_object(r, t, &ret, &obj))
        return ret;
    check_t c = {0};
    ol_gate_checkout_t k;
    if (!ol_gate__check_checkout(obj, r->authed, &k, &c))
        return respond_error(r, MHD_HTTP_BAD_REQUEST, c.msg, c.field, OUT_INVALID);
    if (r->authed && !body_is_who(r, &k.user, NULL, false, &ret))
        return ret;
    ol_uuid_v4(r->request_id);
    memcpy(r->hold_id, k.hold, strlen(k.hold) + 1);
    ol_json_member_t m[4];
    ol_gate__checkout_members(&k, r->request_id, m);
    ol_event_out_t ev;
    char errstr[512];
    if (encode(g, t, g->et_checkout, m, 4, &ev, errstr, sizeof(errstr)))
        return respond_error(r, MHD_HTTP_BAD_REQUEST, errstr, "body", OUT_INVALID);
    r->nkeys = 2;
    snprintf(r->keys[0], KEY_SIZE, "c:%s", r->request_id);
    snprintf(r->keys[1], KEY_SIZE, "h:%s", k.hold);
    return produce_and_wait(r, g->rkt_buy, ev.key, ev.payload, ev.len, ev.hdrs);
}

static enum MHD_Result handle_buy_status(req_t *r) {
    gate_t *g = r->g;
    const char *id = r->request_id;
    if (!ol_tokenbucket_take(g->rl_instance, "", 0, r->start_us)) /* polls share the instance's budget */
        return respond_throttled(r, false);
    if (!*id || !id_chars_ok(id))
        return respond_error(r, MHD_HTTP_NOT_FOUND, "unknown request", "requestID", OUT_NOT_FOUND);
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
        return respond(r, MHD_HTTP_OK, answer, outcome, reason, NULL);
    if (decided) {
        r->auth_outcome = OL_GATE_AUTH_FORBIDDEN;
        return respond_error(r, MHD_HTTP_NOT_FOUND, "unknown request", "requestID", OUT_NOT_FOUND);
    }
    ol_gate__lookup_start(r, pending); /* PostgreSQL, off this thread; answered when resumed */
    return MHD_YES;
}

static enum MHD_Result handle_healthz(req_t *r) {
    gate_t *g = r->g;
    bool p = atomic_load(&g->producer_up), c = atomic_load(&g->consumer_up), s = atomic_load(&g->stopping);
    char body[200];
    snprintf(body, sizeof(body), "{\"status\":\"%s\",\"producer\":\"%s\",\"consumer\":\"%s\",\"waiting\":%lld}",
             s        ? "stopping"
             : p && c ? "ok"
                      : "degraded",
             p ? "up" : "down", c ? "up" : "down", (long long)atomic_load(&g->waiting_now));
    return respond(r, p && c && !s ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, ol_xstrdup(body),
                   p && c && !s ? OUT_OK : OUT_UNAVAILABLE, -1, NULL);
}

/* GET /readyz: whether the gate can take a buy now and have it decided:
 * not stopping, the producer reaches Kafka and no delivery failed in the
 * last READY_FAILURE_US, the sale-events reader is assigned and not in
 * error. /healthz keeps its own meaning (both Kafka clients up). */
#define READY_FAILURE_US (10 * 1000 * 1000)
static enum MHD_Result handle_readyz(req_t *r) {
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
    return respond(r, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, body, ok ? OUT_OK : OUT_UNAVAILABLE, -1, NULL);
}

static enum MHD_Result handle_metrics(req_t *r) {
    gate_t *g = r->g;
    size_t size;
    char *text = ol_metrics_render(g->m.reg, &size);
    struct MHD_Response *resp = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, OL_METRICS_CONTENT_TYPE);
    enum MHD_Result ret = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    observe(g, r, OUT_OK, -1);
    return ret;
}

/* ---- the registry ---------------------------------------------------------- */

static void waiting_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((gate_t *)opaque)->waiting_now));
}

static void suspended_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((gate_t *)opaque)->suspended));
}

static void delivery_fn(void *opaque, ol_metrics_out_t *out) {
    ol_metrics_out(out, NULL, (double)atomic_load(&((gate_t *)opaque)->m.delivery_failed));
}

static void facts_fn(void *opaque, ol_metrics_out_t *out) {
    gate_t *g = opaque;
    for (int k = 0; k < OL_FACT__COUNT; k++)
        if (k == OL_FACT_BUY_ACCEPTED || k == OL_FACT_BUY_REJECTED || k == OL_FACT_HOLD_CONVERTED ||
            k == OL_FACT_CHECKOUT_REJECTED) {
            const char *values[] = {ol_fact_kind_name((ol_fact_kind_t)k)};
            ol_metrics_out(out, values, (double)atomic_load(&g->m.facts[k]));
        }
}

static void cached_fn(void *opaque, ol_metrics_out_t *out) {
    gate_t *g = opaque;
    pthread_mutex_lock(&g->lock);
    size_t cached = g->cache.count;
    pthread_mutex_unlock(&g->lock);
    ol_metrics_out(out, NULL, (double)cached);
}

/* The gate's families, under the names it always had. */
static void metrics_setup(gate_t *g) {
    metrics_t *m = &g->m;
    m->reg = ol_metrics_new();
    m->requests = ol_metrics_add(m->reg, &(ol_metric_def_t){
                                             .name = "orderlog_gate_requests_total",
                                             .help = "HTTP requests answered, by endpoint and outcome.",
                                             .type = OL_METRIC_COUNTER,
                                             .labels = {{"endpoint", endpoint_names}, {"outcome", outcome_names}},
                                             .flags = OL_METRIC_SPARSE,
                                         });
    m->rejected = ol_metrics_add(m->reg, &(ol_metric_def_t){
                                             .name = "orderlog_gate_rejected_total",
                                             .help = "Requests rejected by the decider, by endpoint and reason.",
                                             .type = OL_METRIC_COUNTER,
                                             .labels = {{"endpoint", endpoint_names}, {"reason", reason_names}},
                                             .flags = OL_METRIC_SPARSE,
                                         });
    /* a buy's outcomes and its usual reasons are shown from the start */
    for (size_t o = 0; o < (g->auth ? OUT__COUNT : OUT_UNAUTHORIZED); o++) /* 401, 403 with gate.auth only */
        ol_metric_show(m->requests, ol_metric_cell_at(m->requests, EP_BUY, o));
    for (size_t i = 0; i < REASON_UNKNOWN_HOLD; i++)
        ol_metric_show(m->rejected, ol_metric_cell_at(m->rejected, EP_BUY, i));
    m->throttled = ol_metrics_add(m->reg, &(ol_metric_def_t){
                                              .name = "orderlog_gate_throttled_total",
                                              .help = "Requests refused by a rate limit before Kafka, by limit.",
                                              .type = OL_METRIC_COUNTER,
                                              .labels = {{"limit", limit_names}},
                                          });
    m->client = ol_metrics_add(m->reg, &(ol_metric_def_t){
                                           .name = "orderlog_gate_client_addresses_total",
                                           .help = "Buy requests by where their client address came from.",
                                           .type = OL_METRIC_COUNTER,
                                           .labels = {{"source", client_sources}},
                                       });
    m->forwarded_invalid = ol_metrics_add(
        m->reg, &(ol_metric_def_t){
                    .name = "orderlog_gate_forwarded_invalid_total",
                    .help = "Buy requests from a trusted proxy whose forwarding header named no usable client "
                            "address (answered 400).",
                    .type = OL_METRIC_COUNTER,
                });
    m->claim_ignored = ol_metrics_add(
        m->reg, &(ol_metric_def_t){
                    .name = "orderlog_gate_client_ip_claims_ignored_total",
                    .help = "Buy requests whose body clientIP is not their client address (the claim is dropped).",
                    .type = OL_METRIC_COUNTER,
                });
    ol_metrics_func(m->reg,
                    &(ol_metric_def_t){.name = "orderlog_gate_waiting",
                                       .help = "Requests waiting for their decision right now.",
                                       .type = OL_METRIC_GAUGE},
                    waiting_fn, g);
    ol_metrics_func(m->reg,
                    &(ol_metric_def_t){.name = "orderlog_gate_suspended_connections",
                                       .help = "Connections suspended (waiting for Kafka, a decision or a lookup).",
                                       .type = OL_METRIC_GAUGE},
                    suspended_fn, g);
    ol_metrics_func(m->reg,
                    &(ol_metric_def_t){.name = "orderlog_gate_delivery_failures_total",
                                       .help = "Requests Kafka did not take.",
                                       .type = OL_METRIC_COUNTER},
                    delivery_fn, g);
    ol_metrics_func(m->reg,
                    &(ol_metric_def_t){.name = "orderlog_gate_facts_total",
                                       .help = "Facts read from sale-events that answer requests, by type.",
                                       .type = OL_METRIC_COUNTER,
                                       .labels = {{"type", NULL}}},
                    facts_fn, g);
    ol_metrics_func(m->reg,
                    &(ol_metric_def_t){.name = "orderlog_gate_cached_decisions",
                                       .help = "Decisions (and pending requests) in the recent cache.",
                                       .type = OL_METRIC_GAUGE},
                    cached_fn, g);
    m->duration = ol_metrics_add(m->reg, &(ol_metric_def_t){
                                             .name = "orderlog_gate_request_duration_seconds",
                                             .help = "Time from request to answer, by endpoint.",
                                             .type = OL_METRIC_HISTOGRAM,
                                             .labels = {{"endpoint", timed_names}},
                                             .buckets = latency_le,
                                             .nbuckets = sizeof(latency_le) / sizeof(latency_le[0]),
                                         });
    if (g->auth) /* gate.auth=none checks no credentials */
        m->auth = ol_metrics_add(m->reg, &(ol_metric_def_t){
                                             .name = "orderlog_gate_auth_total",
                                             .help = "Requests whose credentials were checked (gate.auth), by outcome.",
                                             .type = OL_METRIC_COUNTER,
                                             .labels = {{"outcome", ol_gate_auth_outcome_names}},
                                         });
    ol_metrics_add_process(m->reg);
}

/* ---- libmicrohttpd callbacks --------------------------------------------- */

static bool is_json_type(const char *ct) {
    if (!ct || strncasecmp(ct, "application/json", 16))
        return false;
    return ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ';
}

/* Routes a request on its first call; every answer is queued on the last
 * call (after the body), which keeps the connection alive. */
static void route(req_t *r, const char *url, const char *method) {
    gate_t *g = r->g;
    bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/buy") || !strcmp(url, "/checkout")) {
        r->ep = url[1] == 'b' ? EP_BUY : EP_CHECKOUT;
        if (!post) {
            r->allow = "POST";
            return;
        }
        r->bad_type =
            !is_json_type(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE));
        const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        r->declared_len = cl ? strtoull(cl, NULL, 10) : 0;
        r->too_large = r->declared_len > g->body_max; /* read and dropped, then answered */
        r->wants_body = true;
    } else if (!strncmp(url, "/buy/", 5)) {
        r->ep = EP_BUY_STATUS;
        if (!get)
            r->allow = "GET, HEAD";
        else if (strlen(url + 5) <= REQUEST_ID_MAX)
            memcpy(r->request_id, url + 5, strlen(url + 5) + 1);
        else
            r->request_id[0] = '\0'; /* too long: unknown */
    } else if (!strcmp(url, "/healthz") || !strcmp(url, "/readyz") || !strcmp(url, "/metrics")) {
        r->ep = url[1] == 'h' ? EP_HEALTHZ : url[1] == 'r' ? EP_READYZ : EP_METRICS;
        if (!get)
            r->allow = "GET, HEAD";
    } else {
        r->ep = EP_OTHER;
    }
}

/* gate.auth: who sends r (r->who), else its 401 or 403. */
static bool authenticate(req_t *r, enum MHD_Result *ret) {
    char why[256];
    r->auth_checked = true;
    r->auth_outcome = ol_gate_auth_request(r->g->auth, r->conn, ol_time_now_ms(), &r->who, why, sizeof(why));
    if ((r->authed = r->auth_outcome == OL_GATE_AUTH_OK))
        return true;
    ol_log_debug("%s refused (%s): %s", endpoint_names[r->ep], ol_gate_auth_outcome_names[r->auth_outcome], why);
    ol_gate_auth_refusal_t no = ol_gate_auth_refusal(r->g->auth, r->auth_outcome);
    r->challenge = no.challenge;
    *ret = respond_error(r, no.status, no.error, no.field,
                         no.status == MHD_HTTP_FORBIDDEN ? OUT_FORBIDDEN : OUT_UNAUTHORIZED);
    return false;
}

static enum MHD_Result dispatch(req_t *r) {
    gate_t *g = r->g;
    if (r->ep == EP_OTHER)
        return respond_error(r, MHD_HTTP_NOT_FOUND, "no such resource", NULL, OUT_NOT_FOUND);
    if (r->allow)
        return respond(r, MHD_HTTP_METHOD_NOT_ALLOWED, ol_gate__answer_error("method not allowed", NULL), OUT_INVALID,
                       -1, r->allow);
    enum MHD_Result ret;
    if (g->auth && (r->ep == EP_BUY || r->ep == EP_CHECKOUT || r->ep == EP_BUY_STATUS) && !authenticate(r, &ret))
        return ret;
    switch (r->ep) {
    case EP_BUY_STATUS:
        return handle_buy_status(r);
    case EP_HEALTHZ:
        return handle_healthz(r);
    case EP_READYZ:
        return handle_readyz(r);
    case EP_METRICS:
        return handle_metrics(r);
    default:
        break;
    }
    /* counted until the request is in Kafka's hands: shutdown waits for it */
    atomic_fetch_add(&g->in_handler, 1);
    if (atomic_load(&g->stopping))
        ret = respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down", NULL, OUT_UNAVAILABLE);
    else
        ret = r->ep == EP_BUY ? handle_buy(r) : handle_checkout(r);
    atomic_fetch_sub(&g->in_handler, 1);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
    gate_t *g = cls;
    req_t *r = *req_cls;
    if (!r) {
        r = ol_xcalloc(1, sizeof(*r));
        r->g = g;
        r->conn = conn;
        r->start_us = ol_time_mono_us();
        r->reason = -1;
        *req_cls = r;
        route(r, url, method);
        const char *field, *bad = ol_gate__http_request_check(g, conn, version, &field);
        if (bad) { /* before any body is read; the connection closes after the answer */
            r->handled = true;
            r->must_close = true;
            return respond_error(r, MHD_HTTP_BAD_REQUEST, bad, field, OUT_INVALID);
        }
        if (r->wants_body && r->too_large && r->declared_len / 16 > g->body_max) {
            /* absurdly large: answered without reading it (the connection closes) */
            r->handled = true;
            return dispatch(r);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (!r->wants_body || r->too_large || r->bad_type)
            return MHD_YES; /* read and dropped */
        if (r->body_len + n > g->body_max) {
            r->too_large = true;
            free(r->body);
            r->body = NULL;
            r->body_len = r->body_cap = 0;
            return MHD_YES;
        }
        if (r->body_len + n > r->body_cap) {
            r->body_cap = r->body_len + n > 512 ? r->body_len + n : 512;
            r->body = ol_xrealloc(r->body, r->body_cap);
        }
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        return MHD_YES;
    }
    if (r->suspended) { /* resumed with its answer */
        r->suspended = false;
        atomic_fetch_sub(&g->suspended, 1);
        char *answer = r->answer;
        r->answer = NULL;
        return respond(r, r->status, answer, r->outcome, r->reason, NULL);
    }
    if (r->handled)
        return MHD_YES;
    r->handled = true;
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)conn;
    (void)toe;
    req_t *r = *req_cls;
    if (!r)
        return;
    OL_ASSERT(!r->in_table && !r->in_timer);
    if (r->suspended) /* resumed, but the client had gone: no last call */
        atomic_fetch_sub(&r->g->suspended, 1);
    free(r->body);
    free(r->answer);
    free(r);
    *req_cls = NULL;
}

/* libmicrohttpd's messages: fmt is its own */
static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    ol_log_warn("http: %s", buf);
}

/* ---- setup and teardown -------------------------------------------------- */

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    gate_t *g = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__FATAL) {
        atomic_store(rk == g->rkc ? &g->consumer_up : &g->producer_up, false);
        ol_log_error("kafka %s: %s", rd_kafka_name(rk), reason);
    } else {
        ol_log_warn("kafka %s: %s", rd_kafka_name(rk), reason);
    }
}

static rd_kafka_t *kafka_new(gate_t *g, ol_kafka_profile_t profile, const char *client_id, const char *const *tuning,
                             char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(g->conf, profile, client_id, tuning, errstr, errstr_size);
    if (!kconf)
        return NULL;
    rd_kafka_type_t type = ol_kafka_profile_type(profile);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(kconf, ol_gate__dr_cb);
    rd_kafka_conf_set_error_cb(kconf, error_cb);
    rd_kafka_conf_set_opaque(kconf, g);
    rd_kafka_t *rk = ol_kafka_handle_new(type, kconf, errstr, errstr_size);
    if (!rk)
        rd_kafka_conf_destroy(kconf);
    return rk;
}

/* Assigns every partition of sale-events at its current end: decisions for
 * requests made from now on are all after it. */
static int consumer_assign(gate_t *g, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(g->rkc, g->topic_sale, NULL);
    int timeout = (int)ol_conf_int(g->conf, "broker.wait.ms");
    rd_kafka_resp_err_t err = rd_kafka_metadata(g->rkc, 0, rkt, &md, timeout);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
        ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read the partitions of %s: %s", g->topic_sale,
                rd_kafka_err2str(err                  ? err
                                 : md->topic_cnt == 1 ? md->topics[0].err
                                                      : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        if (!err)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    int n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t lo, hi, until = ol_time_mono_us() + (int64_t)timeout * 1000;
        /* a topic just created may have no leader yet: retry for broker.wait.ms */
        while ((err = rd_kafka_query_watermark_offsets(g->rkc, g->topic_sale, p, &lo, &hi, timeout)) &&
               ol_time_mono_us() < until)
            usleep(100000);
        if (err) {
            ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not read the end of %s[%d]: %s", g->topic_sale, p,
                    rd_kafka_err2str(err));
            rd_kafka_topic_partition_list_destroy(parts);
            return -1;
        }
        rd_kafka_topic_partition_list_add(parts, g->topic_sale, p)->offset = hi;
    }
    err = rd_kafka_assign(g->rkc, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not assign %s: %s", g->topic_sale, rd_kafka_err2str(err));
        return -1;
    }
    ol_log_info("reading decisions from %s (%d partitions) from its end", g->topic_sale, n);
    return 0;
}

static int kafka_setup(gate_t *g, char *errstr, size_t errstr_size) {
    char timeout[32], group[300], uuid[37];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)ol_conf_int(g->conf, "gate.delivery.timeout.ms"));
    const char *ptuning[] = {"linger.ms", "2", "queue.buffering.max.messages", "1000000", "message.timeout.ms",
                             timeout,     NULL};
    if (!(g->rk = kafka_new(g, OL_KAFKA_PRODUCER, "orderlog-gate", ptuning, errstr, errstr_size)))
        return -1;
    if (ol_kafka_wait_cluster(g->rk, g->conf, errstr, errstr_size) ||
        ol_contract_check_topics(g->rk, g->conf, errstr, errstr_size))
        return -1;
    g->rkt_buy = rd_kafka_topic_new(g->rk, g->topic_buy, NULL);
    ol_uuid_v4(uuid);
    snprintf(group, sizeof(group), "%sgate-%.8s", ol_conf_str(g->conf, "topic.prefix"), uuid);
    const char *ctuning[] = {"group.id",
                             group,
                             "auto.offset.reset",
                             "latest",
                             "enable.partition.eof",
                             "false",
                             "fetch.wait.max.ms",
                             "50",
                             "fetch.error.backoff.ms",
                             "50",
                             NULL};
    if (!(g->rkc = kafka_new(g, OL_KAFKA_READER, "orderlog-gate-decisions", ctuning, errstr, errstr_size)))
        return -1;
    rd_kafka_poll_set_consumer(g->rkc);
    if (consumer_assign(g, errstr, errstr_size))
        return -1;
    atomic_store(&g->producer_up, true);
    atomic_store(&g->consumer_up, true);
    return 0;
}

/* Each second: is each Kafka client still reaching the cluster? */
static void health_check(gate_t *g) {
    const struct rd_kafka_metadata *md;
    rd_kafka_t *clients[] = {g->rk, g->rkc};
    for (int i = 0; i < 2; i++) {
        char fatal[256];
        bool up = !rd_kafka_fatal_error(clients[i], fatal, sizeof(fatal)) &&
                  !rd_kafka_metadata(clients[i], 0, NULL, &md, 1000);
        if (up)
            rd_kafka_metadata_destroy(md);
        atomic_store(i ? &g->consumer_up : &g->producer_up, up);
    }
    unsigned long long failed = atomic_load(&g->m.delivery_failed);
    if (failed != g->m.failed_seen) {
        g->m.failed_seen = failed;
        atomic_store(&g->m.failed_at_us, ol_time_mono_us());
    }
}

/* SIGTERM: stop taking connections, let Kafka acknowledge what it has, answer
 * every waiting request (pending), then stop. */
static void gate_shutdown(gate_t *g) {
    atomic_store(&g->stopping, true);
    ol_log_info("stopping: answering the requests in flight");
    MHD_socket fd = MHD_quiesce_daemon(g->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    while (atomic_load(&g->in_handler) > 0)
        usleep(1000);
    rd_kafka_flush(g->rk, (int)ol_conf_int(g->conf, "gate.delivery.timeout.ms") + 1000);
    if (rd_kafka_outq_len(g->rk) > 0) {
        ol_log_warn("%d requests not acknowledged by Kafka at shutdown", rd_kafka_outq_len(g->rk));
        rd_kafka_purge(g->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(g->rk, 2000);
    }
    ol_gate__lookup_stop(g->lookup);
    ol_gate__expire_all(g);
    for (int i = 0; i < 2000 && atomic_load(&g->suspended) > 0; i++)
        usleep(1000);
    usleep(50000); /* let the last answers leave */
    MHD_stop_daemon(g->d);
    g->d = NULL;
}

static int gate_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512];
    if (argc > 1)
        return ol_cli_usage_error(&ol_cmd_gate, "unexpected argument \"%s\"", argv[1]);
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog gate: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (ol_http_parse_listen("gate.listen", ol_conf_str(conf, "gate.listen"), &addr, &addr_len, errstr,
                             sizeof(errstr))) {
        fprintf(stderr, "orderlog gate: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    ol_netlist_t *trusted;
    if (ol_netlist_parse(ol_conf_str(conf, "gate.trusted.proxies"), &trusted, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog gate: property \"gate.trusted.proxies\": %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    ol_gate_auth_t *auth; /* the key file is read once, here */
    if (ol_gate_auth_new(conf, &auth, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog gate: %s\n", errstr);
        ol_netlist_destroy(trusted);
        return OL_EXIT_USAGE;
    }
    /* Signals go to the main thread only: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    gate_t *g = ol_xcalloc(1, sizeof(*g));
    g->conf = conf;
    g->auth = auth;
    g->et_buy = ol_schema_find("BuyRequested");
    g->et_checkout = ol_schema_find("CheckoutRequested");
    OL_ASSERT(g->et_buy && g->et_checkout);
    ol_kafka_topic_name(conf, g->et_buy->topic, g->topic_buy, sizeof(g->topic_buy));
    ol_kafka_topic_name(conf, "sale-events", g->topic_sale, sizeof(g->topic_sale));
    snprintf(g->source, sizeof(g->source), "%.100s/gate", ol_conf_str(conf, "event.source"));
    g->wait_us = ol_conf_int(conf, "gate.wait.ms") * 1000;
    g->max_waiting = (size_t)ol_conf_int(conf, "gate.max.waiting");
    g->body_max = (size_t)ol_conf_int(conf, "gate.body.max.bytes");
    g->rl_instance = ol_tokenbucket_new((double)ol_conf_int(conf, "gate.rate.per.second"),
                                        (double)ol_conf_int(conf, "gate.rate.burst"), 1);
    g->rl_ip = ol_tokenbucket_new((double)ol_conf_int(conf, "gate.ip.rate.per.second"),
                                  (double)ol_conf_int(conf, "gate.ip.burst"),
                                  (size_t)ol_conf_int(conf, "gate.ip.max.entries"));
    g->trusted = trusted;
    g->forwarded =
        strcmp(ol_conf_str(conf, "gate.forwarded.header"), "forwarded") ? OL_FORWARDED_XFF : OL_FORWARDED_RFC7239;
    g->trust_body = ol_conf_bool(conf, "gate.trust.body.client.ip");
    g->wtable = ol_xcalloc(WAIT_BUCKETS, sizeof(*g->wtable));
    ol_gate__cache_init(&g->cache, (size_t)ol_conf_int(conf, "gate.cache.decisions"));
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->timer_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_key_create(&g->tkey, thread_ctx_free);
    metrics_setup(g);
    g->http = ol_gate__http_new(g);
    g->lookup = ol_gate__lookup_new(g);

    int rc = OL_EXIT_FAIL;
    bool threads = false;
    if (kafka_setup(g, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog gate: %s\n", errstr);
        goto out;
    }
    if (pthread_create(&g->poll_thread, NULL, ol_gate__poll_main, g) ||
        pthread_create(&g->timer_thread, NULL, ol_gate__timer_main, g) ||
        pthread_create(&g->consumer_thread, NULL, ol_gate__consumer_main, g))
        ol_assert_fail("pthread_create", __FILE__, __LINE__);
    threads = true;
    unsigned int flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned int nthreads = (unsigned int)ol_conf_int(conf, "gate.threads");
    g->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, g, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
                            nthreads > 1 ? nthreads : 0, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ol_conf_int(conf, "gate.connections.max"),
                            MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)(ol_conf_int(conf, "gate.idle.timeout.ms") / 1000),
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, g, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096U,
                            MHD_OPTION_NOTIFY_CONNECTION, ol_gate__http_on_connection, g, MHD_OPTION_END);
    if (!g->d) {
        fprintf(stderr, "orderlog gate: could not listen on %s: %s\n", ol_conf_str(conf, "gate.listen"),
                strerror(errno));
        goto out;
    }
    ol_gate__http_listening(g);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(g->d, MHD_DAEMON_INFO_BIND_PORT);
    char shown[300];
    ol_http_shown_address(ol_conf_str(conf, "gate.listen"), info ? (unsigned)info->port : 0, shown, sizeof(shown));
    printf("gate listening on http://%s\n", shown);
    fflush(stdout);
    ol_log_info("listening on %s (%u threads), waiting up to %lld ms for decisions", shown, nthreads,
                (long long)(g->wait_us / 1000));
    if (g->trust_body)
        ol_log_warn("a buy's client address is the body's clientIP (gate.trust.body.client.ip): any client can "
                    "choose the address its rate limit and bans fall on");
    else if (ol_netlist_count(g->trusted))
        ol_log_info("a buy's client address: the TCP peer, or %s from %zu trusted proxy networks",
                    g->forwarded == OL_FORWARDED_RFC7239 ? "Forwarded" : "X-Forwarded-For",
                    ol_netlist_count(g->trusted));
    if (!g->trust_body && ol_netlist_has_any(g->trusted))
        ol_log_warn("gate.trusted.proxies holds a /0 network: its clients can choose their address with %s",
                    g->forwarded == OL_FORWARDED_RFC7239 ? "Forwarded" : "X-Forwarded-For");
    char described[512];
    ol_gate_auth_describe(g->auth, described, sizeof(described));
    ol_log_info("%s", described);

    char fatal[256] = "";
    for (;;) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        health_check(g);
        ol_gate__http_sweep(g);
        /* The idempotent producer cannot go on (librdkafka says so only for
         * errors it cannot recover from): every buy would be answered 503.
         * Stop with a non-zero status so that a supervisor starts a gate
         * with a new producer; a retried request id is decided once. */
        if (rd_kafka_fatal_error(g->rk, fatal, sizeof(fatal)))
            break;
    }
    if (*fatal)
        ol_log_error("the Kafka producer failed for good (%s): stopping; a restart makes a new one", fatal);
    gate_shutdown(g);
    rc = *fatal ? OL_EXIT_FAIL : OL_EXIT_OK;
out:
    if (g->d)
        MHD_stop_daemon(g->d);
    ol_gate__lookup_destroy(g->lookup);
    ol_gate__http_destroy(g->http);
    if (threads) {
        atomic_store(&g->threads_stop, true);
        pthread_mutex_lock(&g->lock);
        pthread_cond_signal(&g->timer_cond);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->consumer_thread, NULL);
        pthread_join(g->timer_thread, NULL);
        pthread_join(g->poll_thread, NULL);
    }
    if (g->rkc) {
        rd_kafka_consumer_close(g->rkc);
        rd_kafka_destroy(g->rkc);
    }
    if (g->rk) {
        rd_kafka_flush(g->rk, 1000);
        if (g->rkt_buy)
            rd_kafka_topic_destroy(g->rkt_buy);
        rd_kafka_destroy(g->rk);
    }
    thread_ctx_t *t = pthread_getspecific(g->tkey);
    if (t)
        thread_ctx_free(t);
    pthread_key_delete(g->tkey);
    pthread_cond_destroy(&g->timer_cond);
    pthread_mutex_destroy(&g->lock);
    ol_gate__cache_free(&g->cache);
    free(g->wtable);
    ol_tokenbucket_destroy(g->rl_instance);
    ol_tokenbucket_destroy(g->rl_ip);
    ol_netlist_destroy(g->trusted);
    ol_gate_auth_destroy(g->auth);
    ol_metrics_destroy(g->m.reg);
    ol_log_info("stopped");
    free(g);
    return rc;
}

const ol_cmd_t ol_cmd_gate = {
    "gate", gate_run, "serve the flash-sale HTTP API (POST /buy, POST /checkout, GET /buy/<id>)",
    "usage: orderlog gate\n"
    "  Listens on gate.listen; prints `gate listening on http://HOST:PORT` when ready.\n"
    "  POST /buy, POST /checkout, GET /buy/<requestID>, GET /healthz, GET /readyz, GET /metrics.\n"
    "  Rate limits: gate.rate.per.second/gate.rate.burst (instance), gate.ip.rate.per.second/gate.ip.burst.\n"
    "  A buy's client address is the TCP peer, or gate.forwarded.header when the peer is in\n"
    "  gate.trusted.proxies; the body's clientIP only with gate.trust.body.client.ip.\n"
    "  Waits gate.wait.ms for a decision, then answers 202 with a URL to poll. SIGTERM stops it cleanly.\n"};
