/* The health of running roles, asked from outside. See health.h. */
#include "common/base/health.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/time.h"
#include "common/base/util.h"

#define PROBE_STACK_BYTES (256 * 1024)

const char *ol_health_state_name(ol_health_state_t state) {
    switch (state) {
    case OL_HEALTH_OK:
        return "ok";
    case OL_HEALTH_UNAVAILABLE:
        return "unavailable";
    case OL_HEALTH_UNREACHABLE:
        return "unreachable";
    case OL_HEALTH_TIMEOUT:
        return "timeout";
    case OL_HEALTH_MALFORMED:
        return "malformed";
    }
    return "?";
}

/* ---- the list ------------------------------------------------------------- */

static bool name_ok(const char *s, size_t n) {
    if (!n || n >= sizeof(((ol_health_endpoint_t *)0)->name))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') && !(s[i] >= '0' && s[i] <= '9') &&
            !strchr("._-", s[i]))
            return false;
    return true;
}

/* Why an address is not host:port or [v6]:port, or NULL when it is. */
static const char *address_problem(const char *s, size_t n) {
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon || colon == s)
        return "expected [name=]host:port";
    size_t hlen = (size_t)(colon - s), plen = n - hlen - 1;
    long port = 0;
    for (size_t i = 0; i < plen; i++)
        port = colon[1 + i] >= '0' && colon[1 + i] <= '9' && port <= 65535 ? port * 10 + (colon[1 + i] - '0') : -1;
    if (!plen || port < 1 || port > 65535)
        return "the port is not a number from 1 to 65535";
    if (s[0] == '[')
        return hlen > 2 && s[hlen - 1] == ']' && !memchr(s + 1, ']', hlen - 2) ? NULL : "expected [v6 address]:port";
    if (memchr(s, ':', hlen))
        return "an IPv6 address goes in brackets: [addr]:port";
    for (size_t i = 0; i < hlen; i++)
        if (s[i] == '[' || s[i] == ']' || s[i] == ' ' || s[i] == '\t' || s[i] == '/')
            return "expected [name=]host:port";
    if (n >= sizeof(((ol_health_endpoint_t *)0)->address))
        return "too long";
    return NULL;
}

ol_err_t ol_health_parse_endpoints(const char *what, const char *list, ol_health_endpoint_t **out, size_t *count,
                                   char *errstr, size_t errstr_size) {
    ol_health_endpoint_t *eps = NULL;
    size_t n = 0;
    *out = NULL;
    *count = 0;
    for (const char *p = list, *e; *p; p = *e ? e + 1 : e) {
        e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        const char *s = p, *se = e;
        while (s < se && (*s == ' ' || *s == '\t'))
            s++;
        while (se > s && (se[-1] == ' ' || se[-1] == '\t'))
            se--;
        if (s == se)
            continue;
        const char *eq = memchr(s, '=', (size_t)(se - s)), *addr = eq ? eq + 1 : s, *problem = NULL;
        if (eq && !name_ok(s, (size_t)(eq - s)))
            problem = "a name is 1 to 63 letters, digits, '.', '_' or '-'";
        else
            problem = address_problem(addr, (size_t)(se - addr));
        if (problem) {
            free(eps);
            return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s: \"%.*s\": %s", what, (int)(se - s), s, problem);
        }
        if (n == OL_HEALTH_MAX_ENDPOINTS) {
            free(eps);
            return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s: more than %d endpoints", what,
                           OL_HEALTH_MAX_ENDPOINTS);
        }
        eps = ol_xrealloc(eps, (n + 1) * sizeof(*eps));
        ol_health_endpoint_t *ep = &eps[n++];
        memset(ep, 0, sizeof(*ep));
        snprintf(ep->name, sizeof(ep->name), "%.*s", eq ? (int)(eq - s) : 0, s);
        snprintf(ep->address, sizeof(ep->address), "%.*s", (int)(se - addr), addr);
    }
    *out = eps;
    *count = n;
    return OL_ERR_OK;
}

/* ---- judging an answer ---------------------------------------------------- */

/* The reason, printable: control bytes and DEL as \xNN, truncated. */
static void set_reason(ol_health_answer_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(ol_health_answer_t *a, const char *fmt, ...) {
    char raw[sizeof(a->reason)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    size_t o = 0;
    for (const unsigned char *s = (const unsigned char *)raw; *s && o + 5 < sizeof(a->reason); s++) {
        if (*s < 0x20 || *s == 0x7f)
            o += (size_t)snprintf(a->reason + o, sizeof(a->reason) - o, "\\x%02x", *s);
        else
            a->reason[o++] = (char)*s;
    }
    a->reason[o] = '\0';
}

/* The first bytes of a body that is not what a role answers, for a reason. */
static const char *body_start(const ol_http_reply_t *r, char *out, size_t out_size) {
    size_t n = r->body_len < out_size - 1 ? r->body_len : out_size - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = r->body[i] ? r->body[i] : ' '; /* set_reason shows the other control bytes */
    out[n] = '\0';
    return n ? out : "(empty)";
}

void ol_health_judge(ol_err_t err, const char *errstr, const ol_http_reply_t *reply, ol_health_answer_t *out) {
    char start[96];
    out->http_status = 0;
    out->reason[0] = '\0';
    if (err) {
        out->state = err == OL_ERR_UNREACHABLE || err == OL_ERR_IO ? OL_HEALTH_UNREACHABLE
                     : err == OL_ERR_TIMEOUT                       ? OL_HEALTH_TIMEOUT
                                                                   : OL_HEALTH_MALFORMED;
        set_reason(out, "%s", errstr);
        return;
    }
    out->http_status = reply->status;
    json_t *body = json_loadb(reply->body, reply->body_len, 0, NULL);
    const char *status = json_string_value(json_object_get(body, "status"));
    const char *why = json_string_value(json_object_get(body, "reason"));
    const char *error = json_string_value(json_object_get(body, "error"));
    if (reply->status == 200 && status && !strcmp(status, "ok")) {
        out->state = OL_HEALTH_OK;
    } else if (reply->status == 503) {
        out->state = OL_HEALTH_UNAVAILABLE;
        if (!json_is_object(body))
            set_reason(out, "the body is not JSON: %s", body_start(reply, start, sizeof(start)));
        else
            set_reason(out, "%s", why ? why : status ? status : "no reason given");
    } else if (reply->status == 200) {
        out->state = OL_HEALTH_MALFORMED;
        if (!json_is_object(body))
            set_reason(out, "200 but the body is not JSON: %s", body_start(reply, start, sizeof(start)));
        else
            set_reason(out, "200 but the body's status is not \"ok\": %s", status ? status : "(none)");
    } else {
        out->state = OL_HEALTH_MALFORMED;
        set_reason(out, "HTTP %d: %s", reply->status, error ? error : body_start(reply, start, sizeof(start)));
    }
    json_decref(body);
}

/* ---- asking --------------------------------------------------------------- */

typedef struct job_s {
    const char *address, *path;
    ol_health_answer_t *answer;
    int timeout_ms;
    pthread_t thread;
    bool started;
} job_t;

struct ol_health_probe_s {
    job_t *jobs;
    size_t njobs;
};

static void *job_run(void *arg) {
    job_t *j = arg;
    char errstr[512] = "";
    ol_http_reply_t reply;
    int64_t t0 = ol_time_mono_us();
    ol_err_t err = ol_http_get(j->address, j->path, j->timeout_ms, &reply, errstr, sizeof(errstr));
    ol_health_judge(err, errstr, &reply, j->answer);
    j->answer->took_ms = (ol_time_mono_us() - t0) / 1000;
    ol_http_reply_clear(&reply);
    return NULL;
}

ol_health_probe_t *ol_health_probe_start(ol_health_endpoint_t *endpoints, size_t count, int timeout_ms) {
    ol_health_probe_t *p = ol_xcalloc(1, sizeof(*p));
    p->njobs = count * 2;
    p->jobs = ol_xcalloc(p->njobs ? p->njobs : 1, sizeof(*p->jobs));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, PROBE_STACK_BYTES);
    for (size_t i = 0; i < p->njobs; i++) {
        job_t *j = &p->jobs[i];
        ol_health_endpoint_t *ep = &endpoints[i / 2];
        j->address = ep->address;
        j->path = i % 2 ? "/readyz" : "/healthz";
        j->answer = i % 2 ? &ep->readyz : &ep->healthz;
        j->timeout_ms = timeout_ms;
        j->started = pthread_create(&j->thread, &attr, job_run, j) == 0;
    }
    pthread_attr_destroy(&attr);
    return p;
}

void ol_health_probe_wait(ol_health_probe_t *p) {
    for (size_t i = 0; i < p->njobs; i++) {
        if (p->jobs[i].started)
            pthread_join(p->jobs[i].thread, NULL);
        else
            job_run(&p->jobs[i]); /* no thread to be had: asked here, one after the other */
    }
    free(p->jobs);
    free(p);
}
