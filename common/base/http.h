#ifndef OL_HTTP_H
#define OL_HTTP_H

/* HTTP for operators: a small endpoint (libmicrohttpd) serving GET /metrics (a
 * registry, common/base/metrics.h), GET /healthz and GET /readyz (the role's
 * checks, answered 200 or 503 with a JSON body saying why); 404 and 405
 * with a JSON error body for anything else. HEAD works where GET does.
 *
 * Each connection has its own thread, so a slow check (one that asks the
 * Kafka cluster) never delays a scrape of /metrics; checks must therefore
 * be thread-safe and should bound their waits (a second or so).
 *
 * Health bodies: {"status":"ok"|"unavailable","reason":"<first failed
 * check>: <its detail>","checks":{"<name>":{"ok":true,"detail":"..."},...}}
 * ("reason" only when a check failed).
 *
 * And a small client to ask such endpoints (ol_http_get): one request per
 * connection, bounded in time and size, for `orderlog status` and the schema
 * registry (`orderlog schemas`). */

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/base/err.h"
#include "common/base/metrics.h"

typedef struct ol_http_s ol_http_t;

/* A health check: adds its parts to checks (borrowed) with ol_http_check
 * and returns whether all of them passed. Runs on a connection's thread. */
typedef bool (*ol_http_check_fn)(void *opaque, json_t *checks);

typedef struct ol_http_conf_s {
    const char *listen;       /* host:port or [v6]:port; port 0 picks a free one */
    ol_metrics_t *metrics;    /* borrowed; NULL: /metrics is 404 */
    ol_http_check_fn healthz; /* NULL: always ok */
    ol_http_check_fn readyz;  /* NULL: always ok */
    void *opaque;             /* passed to the checks */
} ol_http_conf_t;

/* Starts serving (conf is copied, its pointers borrowed until
 * ol_http_stop). *out stays NULL on failure (bad address, port taken). */
ol_err_t ol_http_start(const ol_http_conf_t *conf, ol_http_t **out, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));
/* For a role: starts like ol_http_start when conf->listen is set, then
 * prints `http listening on http://HOST:PORT` on stdout (what scripts wait
 * for); with an empty listen it serves nothing and *out stays NULL. */
ol_err_t ol_http_serve(const ol_http_conf_t *conf, ol_http_t **out, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));
/* The address as bound, "host:port" with the port picked (borrowed). */
const char *ol_http_address(const ol_http_t *h);
/* Stops listening and waits for the requests in progress. NULL is a no-op. */
void ol_http_stop(ol_http_t *h);

/* Adds {"<name>": {"ok": ok, "detail": <fmt...>}} to checks; returns ok. */
bool ol_http_check(json_t *checks, const char *name, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The liveness of a loop that stores ol_time_mono_us() into its heartbeat
 * at every turn (0 = not started yet, which counts as alive): fails when
 * the last turn is older than stall_ms. */
bool ol_http_check_beat(json_t *checks, const char *name, int64_t beat_us, int64_t stall_ms);

/* The body of a health answer for checks (stolen) and whether all passed:
 * a new string, free() it. Exposed for the gate, which answers on its own
 * server. */
char *ol_http_health_body(json_t *checks, bool ok);

/* "host:port" or "[v6]:port" into a socket address; what names the
 * property in errors ("http.listen"). */
ol_err_t ol_http_parse_listen(const char *what, const char *listen, struct sockaddr_storage *out, socklen_t *out_len,
                              char *errstr, size_t errstr_size);
/* listen with its port replaced by port (the port a daemon picked). */
void ol_http_shown_address(const char *listen, unsigned port, char *out, size_t out_size);
/* MHD_OPTION_EXTERNAL_LOGGER: libmicrohttpd's messages (fmt is its own) as
 * warnings in the log, "http: <message>". */
void ol_http_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* ---- client ---- */

#define OL_HTTP_HEAD_MAX_BYTES (16 * 1024) /* status line and headers */
#define OL_HTTP_BODY_MAX_BYTES (64 * 1024)

typedef struct ol_http_reply_s {
    int status;      /* 100-599 */
    char *body;      /* new, NUL-terminated (it may hold other NULs): ol_http_reply_clear */
    size_t body_len; /* at most OL_HTTP_BODY_MAX_BYTES */
} ol_http_reply_t;

/* Parses the len bytes of an HTTP/1.x answer read so far; closed says the
 * server closed the connection after them. OL_ERR_OK: *done says whether
 * the answer is whole (status line, headers, then Content-Length bytes of
 * body, or without Content-Length everything up to the close), and then out
 * holds it; bytes past Content-Length are ignored. Errors, with errstr
 * saying what: OL_ERR_INVALID not an HTTP/1.x answer, or cut short;
 * OL_ERR_TOO_LARGE head or body past the bounds above; OL_ERR_UNSUPPORTED a
 * chunked body. out is untouched unless *done. */
ol_err_t ol_http_parse_reply(const char *buf, size_t len, bool closed, bool *done, ol_http_reply_t *out, char *errstr,
                             size_t errstr_size) __attribute__((warn_unused_result));

/* GET http://<address><path> (address "host:port" or "[v6]:port"; every
 * address of the name is tried in turn) on a connection of its own, with
 * Connection: close; connecting, sending and reading within timeout_ms in
 * all (the name lookup aside: give numeric addresses for a strict bound).
 * OL_ERR_UNREACHABLE no connection (errstr: "connection refused", ...),
 * OL_ERR_TIMEOUT, OL_ERR_CONFIG a bad address, else as ol_http_parse_reply.
 * On OL_ERR_OK *out holds the answer, whatever its status. Thread-safe. */
ol_err_t ol_http_get(const char *address, const char *path, int timeout_ms, ol_http_reply_t *out, char *errstr,
                     size_t errstr_size) __attribute__((warn_unused_result));
/* The same with any method, and with a body of body_len bytes sent as
 * content_type when content_type is not NULL (body is borrowed). */
ol_err_t ol_http_request(const char *address, const char *method, const char *path, const char *content_type,
                         const char *body, size_t body_len, int timeout_ms, ol_http_reply_t *out, char *errstr,
                         size_t errstr_size) __attribute__((warn_unused_result));
/* Frees what a reply holds; leaves it empty. */
void ol_http_reply_clear(ol_http_reply_t *r);

#endif
