/* The gate's HTTP hygiene, around libmicrohttpd: strict request framing
 * (the checks a proxy in front may not make the same way), a TLS handshake
 * on the plain port closed at once, and a deadline for a connection's first
 * request line and headers (see producers/gate.h).
 *
 * Framing: libmicrohttpd 0.9.75 takes the first Content-Length when there are
 * several, lets Transfer-Encoding win over Content-Length and reads any
 * Transfer-Encoding but chunked as "until the connection closes"; an HTTP/1.1
 * request without Host passes. Behind a proxy that frames the same bytes
 * another way these are request smuggling shapes, so the gate refuses them
 * on the first call of the access handler, before any body is read: 400 with
 * a JSON error naming the header, and the connection closed after it.
 *
 * A TLS ClientHello on the plain port never ends its "request line", so
 * libmicrohttpd would hold it until the idle timeout. The listening socket
 * has TCP_DEFER_ACCEPT, so a connection is accepted once its first bytes are
 * there; when the first byte is a TLS handshake record (0x16) the socket is
 * shut down at once and libmicrohttpd drops it. */
#include "producers/gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/base/list.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"

/* Seconds the kernel holds a connection without data before accepting it
 * all the same (rounded up to its SYN-ACK retransmits). */
#define DEFER_ACCEPT_S 5
#define TLS_HANDSHAKE_RECORD 0x16

#define FRAMING(X)                                         \
    X(CL_REPEATED, "content_length_repeated")              \
    X(CL_WITH_TE, "content_length_with_transfer_encoding") \
    X(TE_NOT_CHUNKED, "transfer_encoding_not_chunked")     \
    X(TE_HTTP10, "transfer_encoding_in_http10")            \
    X(HOST_MISSING, "host_missing")                        \
    X(HOST_REPEATED, "host_repeated")
#define CLOSES(X)                     \
    X(TLS_HANDSHAKE, "tls_handshake") \
    X(HEADER_TIMEOUT, "header_timeout")
#define FRAMING_ENUM(name, str) FRAMING_##name,
#define CLOSE_ENUM(name, str) CLOSE_##name,
#define NAME_STR_(name, str) str,
enum { FRAMING(FRAMING_ENUM) FRAMING__COUNT };
enum { CLOSES(CLOSE_ENUM) CLOSE__COUNT };
static const char *const framing_names[] = {FRAMING(NAME_STR_) NULL};
static const char *const close_names[] = {CLOSES(NAME_STR_) NULL};

/* A connection that has not sent its first request's headers yet; its
 * socket context. Freed when libmicrohttpd reports the connection closed,
 * which it does before it closes the socket: under h->lock, fd is still
 * this connection's. */
typedef struct hconn_s {
    OL_LIST_LINK(struct hconn_s) link;
    MHD_socket fd;
    int64_t accepted_us;
    bool listed; /* in h's list (under h->lock) */
    bool seen;   /* a request's headers arrived (the connection's thread only) */
} hconn_t;

struct gate_http_s {
    int64_t header_timeout_us; /* 0: none */
    pthread_mutex_t lock;
    OL_LIST(hconn_t) conns; /* oldest first */
    ol_metric_t *framing;   /* reason */
    ol_metric_t *closed;    /* reason */
};

gate_http_t *ol_gate__http_new(gate_t *g) {
    gate_http_t *h = ol_xcalloc(1, sizeof(*h));
    h->header_timeout_us = ol_conf_int(g->conf, "gate.header.timeout.ms") * 1000;
    pthread_mutex_init(&h->lock, NULL);
    h->framing = ol_metrics_add(g->m.reg, &(ol_metric_def_t){
                                              .name = "orderlog_gate_bad_framing_total",
                                              .help = "Requests refused 400 for their framing headers "
                                                      "(Content-Length, Transfer-Encoding, Host), by reason.",
                                              .type = OL_METRIC_COUNTER,
                                              .labels = {{"reason", framing_names}},
                                          });
    h->closed = ol_metrics_add(g->m.reg, &(ol_metric_def_t){
                                             .name = "orderlog_gate_connections_dropped_total",
                                             .help = "Connections closed before any request: a TLS handshake "
                                                     "on the plain port, or no request headers within "
                                                     "gate.header.timeout.ms.",
                                             .type = OL_METRIC_COUNTER,
                                             .labels = {{"reason", close_names}},
                                         });
    return h;
}

void ol_gate__http_destroy(gate_http_t *h) {
    if (!h)
        return;
    OL_ASSERT(!h->conns.head); /* every connection reported closed */
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void ol_gate__http_listening(gate_t *g) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(g->d, MHD_DAEMON_INFO_LISTEN_FD);
    int secs = DEFER_ACCEPT_S;
    if (!info || setsockopt(info->listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)))
        ol_log_warn("could not set TCP_DEFER_ACCEPT on the listening socket (%s): a TLS handshake on the plain "
                    "port may be held until gate.header.timeout.ms",
                    info ? strerror(errno) : "no socket");
}

static void peer_text(struct MHD_Connection *conn, char *out, size_t out_size) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    snprintf(out, out_size, "?");
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)out_size);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)out_size);
}

static void unlist(gate_http_t *h, hconn_t *c) {
    if (!c->listed)
        return;
    OL_LIST_REMOVE(&h->conns, c, link);
    c->listed = false;
}

void ol_gate__http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                 enum MHD_ConnectionNotificationCode toe) {
    gate_t *g = cls;
    gate_http_t *h = g->http;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        hconn_t *c = *socket_context;
        if (c) {
            pthread_mutex_lock(&h->lock);
            unlist(h, c);
            pthread_mutex_unlock(&h->lock);
            free(c);
            *socket_context = NULL;
        }
        return;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return;
    MHD_socket fd = ci->connect_fd;
    unsigned char first;
    if (recv(fd, &first, 1, MSG_PEEK | MSG_DONTWAIT) == 1 && first == TLS_HANDSHAKE_RECORD) {
        /* what the client sent is dropped too, so that libmicrohttpd reads
         * end-of-file before any request line and drops the connection quietly */
        shutdown(fd, SHUT_RDWR);
        char sink[4096];
        for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
            ;
        ol_metric_inc(h->closed, CLOSE_TLS_HANDSHAKE);
        char peer[INET6_ADDRSTRLEN];
        peer_text(conn, peer, sizeof(peer));
        ol_log_debug("closed a connection from %s at once: a TLS handshake on the plain HTTP port", peer);
        return;
    }
    if (!h->header_timeout_us)
        return;
    hconn_t *c = ol_xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->accepted_us = ol_time_mono_us();
    pthread_mutex_lock(&h->lock);
    OL_LIST_PUSH_BACK(&h->conns, c, link);
    c->listed = true;
    pthread_mutex_unlock(&h->lock);
    *socket_context = c;
}

void ol_gate__http_sweep(gate_t *g) {
    gate_http_t *h = g->http;
    if (!h->header_timeout_us)
        return;
    int64_t cutoff = ol_time_mono_us() - h->header_timeout_us;
    int n = 0;
    pthread_mutex_lock(&h->lock);
    while (h->conns.head && h->conns.head->accepted_us <= cutoff) {
        hconn_t *c = h->conns.head;
        unlist(h, c);
        shutdown(c->fd, SHUT_RDWR); /* still open: unlisted before it closes */
        n++;
    }
    pthread_mutex_unlock(&h->lock);
    if (n) {
        ol_metric_add(h->closed, CLOSE_HEADER_TIMEOUT, (uint64_t)n);
        ol_log_debug("closed %d connections without request headers after %lld ms (gate.header.timeout.ms)", n,
                     (long long)(h->header_timeout_us / 1000));
    }
}

typedef struct framing_s {
    int content_length, transfer_encoding, host;
    bool te_chunked; /* every Transfer-Encoding value is exactly "chunked" */
} framing_t;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    framing_t *f = cls;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        f->content_length++;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->transfer_encoding++;
        f->te_chunked &= value && !strcasecmp(value, "chunked");
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST)) {
        f->host++;
    }
    return MHD_YES;
}

const char *ol_gate__http_request_check(gate_t *g, struct MHD_Connection *conn, const char *version,
                                        const char **field) {
    gate_http_t *h = g->http;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    hconn_t *c = ci ? ci->socket_context : NULL;
    if (c && !c->seen) {
        c->seen = true;
        pthread_mutex_lock(&h->lock);
        unlist(h, c);
        pthread_mutex_unlock(&h->lock);
    }
    framing_t f = {.te_chunked = true};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &f);
    bool http10 = version && !strcmp(version, MHD_HTTP_VERSION_1_0);
    int reason = -1;
    const char *error = NULL;
    *field = NULL;
    if (f.content_length > 1) {
        reason = FRAMING_CL_REPEATED;
        error = "more than one Content-Length header";
        *field = MHD_HTTP_HEADER_CONTENT_LENGTH;
    } else if (f.content_length && f.transfer_encoding) {
        reason = FRAMING_CL_WITH_TE;
        error = "Content-Length and Transfer-Encoding together";
        *field = MHD_HTTP_HEADER_TRANSFER_ENCODING;
    } else if (f.transfer_encoding && http10) {
        reason = FRAMING_TE_HTTP10;
        error = "Transfer-Encoding in an HTTP/1.0 request";
        *field = MHD_HTTP_HEADER_TRANSFER_ENCODING;
    } else if (f.transfer_encoding > 1 || (f.transfer_encoding && !f.te_chunked)) {
        reason = FRAMING_TE_NOT_CHUNKED;
        error = "Transfer-Encoding other than chunked";
        *field = MHD_HTTP_HEADER_TRANSFER_ENCODING;
    } else if (f.host > 1) {
        reason = FRAMING_HOST_REPEATED;
        error = "more than one Host header";
        *field = MHD_HTTP_HEADER_HOST;
    } else if (!f.host && !http10) {
        reason = FRAMING_HOST_MISSING;
        error = "missing Host header (required in HTTP/1.1)";
        *field = MHD_HTTP_HEADER_HOST;
    }
    if (reason >= 0)
        ol_metric_inc(h->framing, (size_t)reason);
    return error;
}
