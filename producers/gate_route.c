/* libmicrohttpd's callbacks for the gate: a request from its first call
 * (routing, framing, gate.auth) through its body to its answer, which is
 * queued on its last call (or when its suspended connection resumes). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "producers/gate_serve.h"

/* ---- responding ---------------------------------------------------------- */

void ol_gate__observe(gate_t *g, const req_t *r, outcome_t outcome, int reason) {
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
enum MHD_Result ol_gate__respond(req_t *r, unsigned status, char *body, outcome_t outcome, int reason,
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
    ol_gate__observe(g, r, outcome, reason);
    return ret;
}

enum MHD_Result ol_gate__respond_error(req_t *r, unsigned status, const char *error, const char *field,
                                       outcome_t outcome) {
    return ol_gate__respond(r, status, ol_gate__answer_error(error, field), outcome, -1, NULL);
}

enum MHD_Result ol_gate__respond_throttled(req_t *r, bool ip) {
    ol_metric_inc(r->g->m.throttled, ip ? 1 : 0);
    return ol_gate__respond(r, MHD_HTTP_TOO_MANY_REQUESTS, ol_xstrdup(ol_gate__throttled_json), OUT_THROTTLED, -1,
                            NULL);
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
    ol_log_debug("%s refused (%s): %s", ol_gate__endpoint_names[r->ep], ol_gate_auth_outcome_names[r->auth_outcome],
                 why);
    ol_gate_auth_refusal_t no = ol_gate_auth_refusal(r->g->auth, r->auth_outcome);
    r->challenge = no.challenge;
    *ret = ol_gate__respond_error(r, no.status, no.error, no.field,
                                  no.status == MHD_HTTP_FORBIDDEN ? OUT_FORBIDDEN : OUT_UNAUTHORIZED);
    return false;
}

static enum MHD_Result dispatch(req_t *r) {
    gate_t *g = r->g;
    if (r->ep == EP_OTHER)
        return ol_gate__respond_error(r, MHD_HTTP_NOT_FOUND, "no such resource", NULL, OUT_NOT_FOUND);
    if (r->allow)
        return ol_gate__respond(r, MHD_HTTP_METHOD_NOT_ALLOWED, ol_gate__answer_error("method not allowed", NULL),
                                OUT_INVALID, -1, r->allow);
    enum MHD_Result ret;
    if (g->auth && (r->ep == EP_BUY || r->ep == EP_CHECKOUT || r->ep == EP_BUY_STATUS) && !authenticate(r, &ret))
        return ret;
    switch (r->ep) {
    case EP_BUY_STATUS:
        return ol_gate__handle_buy_status(r);
    case EP_HEALTHZ:
        return ol_gate__handle_healthz(r);
    case EP_READYZ:
        return ol_gate__handle_readyz(r);
    case EP_METRICS:
        return ol_gate__handle_metrics(r);
    default:
        break;
    }
    /* counted until the request is in Kafka's hands: shutdown waits for it */
    atomic_fetch_add(&g->in_handler, 1);
    if (atomic_load(&g->stopping))
        ret = ol_gate__respond_error(r, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting down", NULL, OUT_UNAVAILABLE);
    else
        ret = r->ep == EP_BUY ? ol_gate__handle_buy(r) : ol_gate__handle_checkout(r);
    atomic_fetch_sub(&g->in_handler, 1);
    return ret;
}

enum MHD_Result ol_gate__on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
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
            return ol_gate__respond_error(r, MHD_HTTP_BAD_REQUEST, bad, field, OUT_INVALID);
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
        return ol_gate__respond(r, r->status, answer, r->outcome, r->reason, NULL);
    }
    if (r->handled)
        return MHD_YES;
    r->handled = true;
    return dispatch(r);
}

void ol_gate__on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                           enum MHD_RequestTerminationCode toe) {
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
