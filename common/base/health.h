#ifndef OL_HEALTH_H
#define OL_HEALTH_H

/* The health of running roles, asked from outside: GET /healthz and
 * /readyz of each endpoint (common/base/http.h serves them), all at once, each
 * within a timeout, and every answer judged: ok, unavailable (503 and the
 * body's reason), unreachable, timed out, or malformed (not what a role
 * answers). For `orderlog status` (status.endpoints). */

#include <stddef.h>
#include <stdint.h>

#include "common/base/err.h"
#include "common/base/http.h"

#define OL_HEALTH_MAX_ENDPOINTS 64

typedef enum ol_health_state_e {
    OL_HEALTH_OK,          /* 200, body {"status":"ok",...} */
    OL_HEALTH_UNAVAILABLE, /* 503: the role says it is not healthy, or not ready */
    OL_HEALTH_UNREACHABLE, /* no connection (refused, no route, unknown host, reset) */
    OL_HEALTH_TIMEOUT,     /* no whole answer in time */
    OL_HEALTH_MALFORMED    /* an answer, but not HTTP, too large, another status, a body not JSON */
} ol_health_state_t;

/* "ok", "unavailable", "unreachable", "timeout", "malformed" (static). */
const char *ol_health_state_name(ol_health_state_t state);

typedef struct ol_health_answer_s {
    ol_health_state_t state;
    int http_status;  /* 0 when there was no HTTP answer */
    char reason[600]; /* why not ok, printable (control bytes as \xNN); "" when ok */
    int64_t took_ms;
} ol_health_answer_t;

typedef struct ol_health_endpoint_s {
    char name[64];     /* "" when the list gave none */
    char address[300]; /* host:port or [v6]:port */
    ol_health_answer_t healthz, readyz;
} ol_health_endpoint_t;

/* Parses a comma-separated list of [name=]host:port (IPv6 as [addr]:port;
 * blanks around items ignored) into *out (new: free() it) and *count;
 * *out stays NULL for an empty list. what names the list in errors
 * ("status.endpoints"): OL_ERR_CONFIG for an item that is not of that form,
 * or more than OL_HEALTH_MAX_ENDPOINTS. */
ol_err_t ol_health_parse_endpoints(const char *what, const char *list, ol_health_endpoint_t **out, size_t *count,
                                   char *errstr, size_t errstr_size) __attribute__((warn_unused_result));

/* Judges what ol_http_get gave for a health path: err and its errstr,
 * or the reply when err is OL_ERR_OK. */
void ol_health_judge(ol_err_t err, const char *errstr, const ol_http_reply_t *reply, ol_health_answer_t *out);

typedef struct ol_health_probe_s ol_health_probe_t;

/* Starts asking every endpoint's /healthz and /readyz, each on a thread of
 * its own within timeout_ms; endpoints (borrowed) must stay put until
 * ol_health_probe_wait, which fills their answers and frees the probe. */
ol_health_probe_t *ol_health_probe_start(ol_health_endpoint_t *endpoints, size_t count, int timeout_ms);
void ol_health_probe_wait(ol_health_probe_t *probe);

#endif
