#include "common/base/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/redact.h"
#include "common/base/time.h"
#include "common/base/util.h"

#define CONNECTIONS_MAX 64U
#define CONNECTION_TIMEOUT_S 10U

struct ol_http_s {
    ol_http_conf_t conf;
    struct MHD_Daemon *d;
    char address[300];
};

/* ---- addresses ------------------------------------------------------------ */

/* "host:port" or "[v6]:port" into host (brackets removed) and the port's
 * text (borrowed from address). */
static ol_err_t split_address(const char *what, const char *address, char *host, size_t host_size, const char **port,
                              char *errstr, size_t errstr_size) {
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || !colon[1])
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s \"%s\": expected host:port", what, address);
    const char *h = address;
    size_t hlen = (size_t)(colon - address);
    if (h[0] == '[' && hlen >= 2 && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen >= host_size)
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s \"%s\": host too long", what, address);
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = colon + 1;
    return OL_ERR_OK;
}

ol_err_t ol_http_parse_listen(const char *what, const char *listen, struct sockaddr_storage *out, socklen_t *out_len,
                              char *errstr, size_t errstr_size) {
    char host[256];
    const char *port = NULL;
    ol_err_t err = split_address(what, listen, host, sizeof(host), &port, errstr, errstr_size);
    if (err)
        return err;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
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

void ol_http_mhd_log(void *cls, const char *fmt, va_list ap) {
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
    h->d = MHD_start_daemon(flags, port, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, ol_http_mhd_log, NULL,
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

/* ---- client --------------------------------------------------------------- */

/* Up to 40 bytes of p for an error message, other bytes than printable
 * ASCII as \xNN. */
static const char *snippet(const char *p, size_t n, char *out, size_t out_size) {
    size_t o = 0;
    for (size_t i = 0; i < n && i < 40 && o + 5 < out_size; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[o++] = (char)c;
        else
            o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", c);
    }
    out[o] = '\0';
    return out;
}

static bool name_is(const char *name, size_t len, const char *want) {
    return len == strlen(want) && !strncasecmp(name, want, len);
}

/* One header line of an answer, name and value [v, ve) trimmed: a
 * Content-Length into *clen (-1 until one is seen; a second must agree), a
 * Transfer-Encoding other than identity refused; others ignored. */
static ol_err_t reply_header(const char *name, size_t name_len, const char *v, const char *ve, long long *clen,
                             char *errstr, size_t errstr_size) {
    char shown[200];
    if (name_is(name, name_len, "content-length")) {
        long long v_len = 0;
        const char *d = v;
        for (; d < ve && *d >= '0' && *d <= '9'; d++)
            if (v_len <= OL_HTTP_BODY_MAX_BYTES) /* past it the value no longer matters */
                v_len = v_len * 10 + (*d - '0');
        if (d == v || d != ve || (*clen >= 0 && *clen != v_len))
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "malformed Content-Length \"%s\"",
                           snippet(v, (size_t)(ve - v), shown, sizeof(shown)));
        if (v_len > OL_HTTP_BODY_MAX_BYTES)
            return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "a body of %s bytes, more than %d",
                           snippet(v, (size_t)(ve - v), shown, sizeof(shown)), OL_HTTP_BODY_MAX_BYTES);
        *clen = v_len;
    } else if (name_is(name, name_len, "transfer-encoding") && !name_is(v, (size_t)(ve - v), "identity")) {
        return ol_errf(errstr, errstr_size, OL_ERR_UNSUPPORTED, "a body in Transfer-Encoding \"%s\"",
                       snippet(v, (size_t)(ve - v), shown, sizeof(shown)));
    }
    return OL_ERR_OK;
}

ol_err_t ol_http_parse_reply(const char *buf, size_t len, bool closed, bool *done, ol_http_reply_t *out, char *errstr,
                             size_t errstr_size) {
    static const char proto[] = "HTTP/1.";
    const char *end = buf + len, *body = NULL;
    char shown[200];
    *done = false;
    /* the status line: HTTP/1.x SSS[ reason] */
    size_t plen = len < sizeof(proto) - 1 ? len : sizeof(proto) - 1;
    if (memcmp(buf, proto, plen))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "not an HTTP/1.x answer: it starts with \"%s\"",
                       snippet(buf, len, shown, sizeof(shown)));
    const char *nl = memchr(buf, '\n', len);
    if (nl) {
        const char *s = buf + sizeof(proto) - 1;
        if (nl - buf < 12 || s[0] < '0' || s[0] > '9' || s[1] != ' ' || s[2] < '1' || s[2] > '5' || s[3] < '0' ||
            s[3] > '9' || s[4] < '0' || s[4] > '9' || (s[5] != ' ' && s[5] != '\r' && s[5] != '\n'))
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "malformed status line \"%s\"",
                           snippet(buf, (size_t)(nl - buf), shown, sizeof(shown)));
    }
    /* the headers, up to an empty line */
    long long clen = -1;
    for (const char *line = nl ? nl + 1 : NULL; line && !body; line = nl + 1) {
        if (!(nl = memchr(line, '\n', (size_t)(end - line))))
            break;
        size_t n = (size_t)(nl - line);
        if (n && line[n - 1] == '\r')
            n--;
        if (!n) {
            body = nl + 1;
            break;
        }
        const char *colon = memchr(line, ':', n);
        if (!colon || colon == line)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "malformed header line \"%s\"",
                           snippet(line, n, shown, sizeof(shown)));
        const char *v = colon + 1, *ve = line + n;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        ol_err_t err = reply_header(line, (size_t)(colon - line), v, ve, &clen, errstr, errstr_size);
        if (err)
            return err;
    }
    if (!body) {
        if (len > OL_HTTP_HEAD_MAX_BYTES)
            return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "no end of the headers in the first %d bytes",
                           OL_HTTP_HEAD_MAX_BYTES);
        if (closed)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "%s",
                           len ? "the connection closed amid the headers" : "the connection closed without an answer");
        return OL_ERR_OK;
    }
    if ((size_t)(body - buf) > OL_HTTP_HEAD_MAX_BYTES)
        return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "headers longer than %d bytes", OL_HTTP_HEAD_MAX_BYTES);
    size_t have = (size_t)(end - body);
    if (clen < 0 && have > OL_HTTP_BODY_MAX_BYTES)
        return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "a body longer than %d bytes", OL_HTTP_BODY_MAX_BYTES);
    if (clen >= 0 && have < (size_t)clen && closed)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "the connection closed after %zu of %lld bytes of body",
                       have, clen);
    if ((clen >= 0 && have < (size_t)clen) || (clen < 0 && !closed))
        return OL_ERR_OK;
    size_t n = clen >= 0 ? (size_t)clen : have;
    const char *s = buf + sizeof(proto) - 1 + 2;
    out->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    out->body = ol_xmalloc(n + 1);
    memcpy(out->body, body, n);
    out->body[n] = '\0';
    out->body_len = n;
    *done = true;
    return OL_ERR_OK;
}

void ol_http_reply_clear(ol_http_reply_t *r) {
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Milliseconds left before deadline_us, rounded up; 0 once past it. */
static int ms_left(int64_t deadline_us) {
    int64_t us = deadline_us - ol_time_mono_us();
    return us <= 0 ? 0 : (int)((us + 999) / 1000);
}

/* Waits for events on fd until deadline_us: true when they came. */
static bool wait_fd(int fd, short events, int64_t deadline_us) {
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, ms_left(deadline_us));
        if (rc > 0)
            return true;
        if (rc == 0 || errno != EINTR)
            return false;
    }
}

/* strerror(e) with its first letter in lower case, as our messages are. */
static const char *reason_of(int e, char *out, size_t out_size) {
    snprintf(out, out_size, "%s", strerror(e));
    out[0] = (char)tolower((unsigned char)out[0]);
    return out;
}

/* A connected socket to address (each of the name's addresses in turn). */
static ol_err_t dial(const char *address, int timeout_ms, int64_t deadline_us, int *out, char *errstr,
                     size_t errstr_size) {
    char host[256], why[128];
    const char *port = NULL;
    *out = -1;
    ol_err_t err = split_address("address", address, host, sizeof(host), &port, errstr, errstr_size);
    if (err)
        return err;
    char *e;
    long p = strtol(port, &e, 10);
    if (*e || p < 1 || p > 65535 || !isdigit((unsigned char)*port))
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "address \"%s\": the port is not a number from 1 to 65535",
                       address);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ais;
    int rc = getaddrinfo(host, port, &hints, &ais);
    if (rc)
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not resolve %s: %s", host, gai_strerror(rc));
    int last = ECONNREFUSED;
    for (struct addrinfo *ai = ais; ai && *out < 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (!connect(fd, ai->ai_addr, ai->ai_addrlen)) {
            *out = fd;
            break;
        }
        if (errno == EINPROGRESS) {
            if (!wait_fd(fd, POLLOUT, deadline_us)) {
                close(fd);
                freeaddrinfo(ais);
                return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT, "could not connect within %d ms", timeout_ms);
            }
            socklen_t len = sizeof(last);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &last, &len) == 0 && last == 0) {
                *out = fd;
                break;
            }
        } else {
            last = errno;
        }
        close(fd);
    }
    freeaddrinfo(ais);
    if (*out < 0)
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "%s", reason_of(last, why, sizeof(why)));
    return OL_ERR_OK;
}

/* Sends the len bytes of data before deadline_us; what names them in errors. */
static ol_err_t send_all(int fd, const char *data, size_t len, const char *what, int timeout_ms, int64_t deadline_us,
                         char *errstr, size_t errstr_size) {
    char why[128];
    for (size_t sent = 0; sent < len;) {
        ssize_t k = send(fd, data + sent, len - sent, MSG_NOSIGNAL);
        if (k > 0)
            sent += (size_t)k;
        else if (k < 0 && errno != EAGAIN && errno != EINTR)
            return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not send the %s: %s", what,
                           reason_of(errno, why, sizeof(why)));
        else if (!wait_fd(fd, POLLOUT, deadline_us))
            return ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT, "could not send the %s within %d ms", what, timeout_ms);
    }
    return OL_ERR_OK;
}

ol_err_t ol_http_get(const char *address, const char *path, int timeout_ms, ol_http_reply_t *out, char *errstr,
                     size_t errstr_size) {
    return ol_http_request(address, "GET", path, NULL, NULL, 0, timeout_ms, out, errstr, errstr_size);
}

ol_err_t ol_http_request(const char *address, const char *method, const char *path, const char *content_type,
                         const char *body, size_t body_len, int timeout_ms, ol_http_reply_t *out, char *errstr,
                         size_t errstr_size) {
    char req[2048], why[128];
    int64_t deadline_us = ol_time_mono_us() + (int64_t)timeout_ms * 1000;
    memset(out, 0, sizeof(*out));
    int n;
    if (content_type)
        n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: orderlog\r\nAccept: application/json\r\n"
                     "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     method, path, address, content_type, body_len);
    else
        n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: orderlog\r\nAccept: application/json\r\n"
                     "Connection: close\r\n\r\n",
                     method, path, address);
    if (n < 0 || (size_t)n >= sizeof(req))
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "address \"%s\" or path: too long", address);
    int fd;
    ol_err_t err = dial(address, timeout_ms, deadline_us, &fd, errstr, errstr_size);
    if (err)
        return err;
    size_t cap = OL_HTTP_HEAD_MAX_BYTES + OL_HTTP_BODY_MAX_BYTES + 1, len = 0;
    char *buf = NULL;
    if ((err = send_all(fd, req, (size_t)n, "request", timeout_ms, deadline_us, errstr, errstr_size)) ||
        (content_type &&
         (err = send_all(fd, body, body_len, "request body", timeout_ms, deadline_us, errstr, errstr_size))))
        goto out;
    buf = ol_xmalloc(cap);
    for (bool closed = false, done = false; !done;) {
        if (!wait_fd(fd, POLLIN, deadline_us)) {
            err = ol_errf(errstr, errstr_size, OL_ERR_TIMEOUT, "no whole answer within %d ms", timeout_ms);
            goto out;
        }
        ssize_t k = recv(fd, buf + len, cap - len, 0);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (k < 0) {
            err = ol_errf(errstr, errstr_size, OL_ERR_IO, "could not read the answer: %s",
                          reason_of(errno, why, sizeof(why)));
            goto out;
        }
        closed = k == 0;
        len += (size_t)k;
        if ((err = ol_http_parse_reply(buf, len, closed, &done, out, errstr, errstr_size)))
            goto out;
        if (!done && len == cap) { /* cannot happen with the bounds above; never loop on a full buffer */
            err = ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "an answer longer than %zu bytes", cap);
            goto out;
        }
    }
out:
    free(buf);
    close(fd);
    return err;
}
