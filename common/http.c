#include "common/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/redact.h"
#include "common/time.h"
#include "common/util.h"

#define CONNECTIONS_MAX 64U
#define CONNECTION_TIMEOUT_S 10U

struct ol_http_s {
    ol_http_conf_t conf;
    struct MHD_Daemon *d;
    char address[300];
};

/* ---- addresses ------------------------------------------------------------ */

ol_err_t ol_http_parse_listen(const char *what, const char *listen, struct sockaddr_storage *out, socklen_t *out_len,
                              char *errstr, size_t errstr_size) {
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || !colon[1])
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s \"%s\": expected host:port", what, listen);
    const char *h = listen;
    size_t hlen = (size_t)(colon - listen);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= sizeof(host))
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s \"%s\": host too long", what, listen);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc)
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s \"%s\": %s", what, listen, gai_strerror(rc));
    memcpy(out, ai->ai_addr, ai->ai_addrlen);
    *out_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return OL_ERR_OK;
}

void ol_http_shown_address(const char *listen, unsigned port, char *out, size_t out_size) {
    const char *colon = strrchr(listen, ':');
    int hlen = colon ? (int)(colon - listen) : (int)strlen(listen);
    snprintf(out, out_size, "%.*s:%u", hlen, listen, port);
}

/* ---- health bodies -------------------------------------------------------- */

bool ol_http_check(json_t *checks, const char *name, bool ok, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    ol_redact_text_inplace(detail, sizeof(detail)); /* a library's message may echo a secret */
    json_object_set_new(checks, name, json_pack("{s:b,s:s}", "ok", ok, "detail", detail));
    return ok;
}

bool ol_http_check_beat(json_t *checks, const char *name, int64_t beat_us, int64_t stall_ms) {
    if (!beat_us)
        return ol_http_check(checks, name, true, "starting");
    int64_t age_ms = (ol_time_mono_us() - beat_us) / 1000;
    return ol_http_check(checks, name, age_ms <= stall_ms, "last turn %lld ms ago (stalled after %lld ms)",
                         (long long)age_ms, (long long)stall_ms);
}

char *ol_http_health_body(json_t *checks, bool ok) {
    json_t *body = json_pack("{s:s}", "status", ok ? "ok" : "unavailable");
    if (!ok) {
        const char *name;
        json_t *c;
        json_object_foreach(checks, name, c) {
            if (!json_is_true(json_object_get(c, "ok"))) {
                char reason[700];
                snprintf(reason, sizeof(reason), "%s: %s", name, json_string_value(json_object_get(c, "detail")));
                json_object_set_new(body, "reason", json_string(reason));
                break;
            }
        }
    }
    json_object_set_new(body, "checks", checks);
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    OL_ASSERT(text);
    return text;
}

/* ---- serving -------------------------------------------------------------- */

/* Queues text (taken: malloc'd). */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, char *text, size_t len,
                             const char *content_type, const char *allow) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned status, const char *error, const char *allow) {
    json_t *body = json_pack("{s:s}", "error", error);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    OL_ASSERT(text);
    return reply(conn, status, text, strlen(text), "application/json", allow);
}

static enum MHD_Result reply_health(ol_http_t *h, struct MHD_Connection *conn, ol_http_check_fn fn) {
    json_t *checks = json_object();
    bool ok = fn ? fn(h->conf.opaque, checks) : true;
    char *text = ol_http_health_body(checks, ok);
    return reply(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, strlen(text), "application/json", NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
    (void)version;
    (void)upload_data;
    ol_http_t *h = cls;
    static int first;
    if (!*req_cls) { /* headers only: answer after the body (if any) was read */
        *req_cls = &first;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0; /* read and dropped */
        return MHD_YES;
    }
    bool known = !strcmp(url, "/metrics") || !strcmp(url, "/healthz") || !strcmp(url, "/readyz");
    if (!known || (!h->conf.metrics && !strcmp(url, "/metrics")))
        return reply_error(conn, MHD_HTTP_NOT_FOUND, "no such resource", NULL);
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", "GET, HEAD");
    if (!strcmp(url, "/metrics")) {
        size_t len;
        char *text = ol_metrics_render(h->conf.metrics, &len);
        return reply(conn, MHD_HTTP_OK, text, len, OL_METRICS_CONTENT_TYPE, NULL);
    }
    return reply_health(h, conn, !strcmp(url, "/healthz") ? h->conf.healthz : h->conf.readyz);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    ol_log_warn("http: %s", buf);
}

ol_err_t ol_http_start(const ol_http_conf_t *conf, ol_http_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    ol_err_t err = ol_http_parse_listen("http.listen", conf->listen, &addr, &addr_len, errstr, errstr_size);
    if (err)
        return err;
    ol_http_t *h = ol_xcalloc(1, sizeof(*h));
    h->conf = *conf;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* only for libmicrohttpd's messages: the address is MHD_OPTION_SOCK_ADDR */
    uint16_t port = ntohs(addr.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&addr)->sin6_port
                                                     : ((struct sockaddr_in *)&addr)->sin_port);
    h->d = MHD_start_daemon(flags, port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
                            CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT, CONNECTION_TIMEOUT_S, MHD_OPTION_END);
    if (!h->d) {
        int e = errno;
        free(h);
        return ol_errf(errstr, errstr_size, OL_ERR_IO, "could not listen on %s: %s", conf->listen,
                       e ? strerror(e) : "unknown error");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    ol_http_shown_address(conf->listen, info ? (unsigned)info->port : 0, h->address, sizeof(h->address));
    *out = h;
    return OL_ERR_OK;
}

ol_err_t ol_http_serve(const ol_http_conf_t *conf, ol_http_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (!conf->listen || !*conf->listen)
        return OL_ERR_OK;
    ol_err_t err = ol_http_start(conf, out, errstr, errstr_size);
    if (err)
        return err;
    printf("http listening on http://%s\n", (*out)->address);
    fflush(stdout);
    ol_log_info("http: serving /metrics, /healthz and /readyz on %s", (*out)->address);
    return OL_ERR_OK;
}

const char *ol_http_address(const ol_http_t *h) {
    return h->address;
}

void ol_http_stop(ol_http_t *h) {
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
