/* orderlog gate against the real broker (and PostgreSQL for GET past the
 * cache): validation naming the field, rate limits before Kafka, the
 * BuyRequested it writes, answers from decisions read back from
 * sale-events, 202 pending after gate.wait.ms, GET past the cache from
 * PostgreSQL, checkout, a thousand requests waiting at once, /metrics,
 * SIGTERM, and one sale end to end through `orderlog decide`.
 *
 * Every test has topics of its own (it_gate_<tag>_<pid>_) and starts the
 * gate as a subprocess on a free port (gate.listen=127.0.0.1:0, the port is
 * read from its first line). Decisions are produced with `orderlog publish`
 * (real Avro events on sale-events) with the request id the client chose;
 * HTTP goes through a plain socket client, one connection per request. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define GATE_KIT_STEM "it_gate_"
#include "gate_kit.h"
#include "helpers.h"

#define MSG_ACCEPTED "successed.please place the order and make payments within half an hour"
#define MSG_SOLD_OUT "The goods is sold out!"
#define THROTTLED_JSON                                                                                               \
    "{\"reponseMsg\":\"Too many requests, please try later.\",\"repResult\":false,\"isThrottled\":true,\"version\":" \
    "\"1.0\"}"

/* Where requests go (the gate's host) and come from (NULL: the kernel's
 * choice, 127.0.0.1): any 127.0.0.0/8 address is this host's, so a test
 * can play several clients and proxies. Set from the test's thread only. */
static const char *gate_host = "127.0.0.1";
static const char *http_from;

static void teardown(void) {
    gate_kit_teardown();
    gate_host = "127.0.0.1";
    http_from = NULL;
}

TestSuite(gate, .init = gate_kit_setup, .fini = teardown, .timeout = 300);

/* ---- a tiny HTTP/1.1 client ---- */

/* ss set to the numeric IPv4 or IPv6 address host and port; its length. */
static socklen_t numeric_address(struct sockaddr_storage *ss, const char *host, int port) {
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(host, service, &hints, &ai);
    cr_assert_eq(rc, 0, "%s: %s", host, gai_strerror(rc));
    socklen_t len = ai->ai_addrlen;
    memcpy(ss, ai->ai_addr, len);
    freeaddrinfo(ai);
    return len;
}

/* A socket connected to the gate from http_from (when set); -1 on failure. */
static int connect_gate(void) {
    struct sockaddr_storage ss = {0}, from = {0};
    socklen_t len = numeric_address(&ss, gate_host, gate_port);
    if (http_from)
        numeric_address(&from, http_from, 0);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if ((http_from && bind(fd, (struct sockaddr *)&from, len)) || connect(fd, (struct sockaddr *)&ss, len)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads one whole answer (the gate closes: Connection: close) from fd;
 * status -1 unless it has a status line and the end of its head. */
static reply_t read_reply(int fd) {
    reply_t r = {.status = -1};
    size_t cap = 4096, got = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (got + 1024 > cap)
            buf = realloc(buf, cap *= 2);
        ssize_t rd = recv(fd, buf + got, cap - got - 1, 0);
        if (rd <= 0)
            break;
        got += (size_t)rd;
    }
    buf[got] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &r.status) == 1 && sep) {
        r.headers = strndup(buf, (size_t)(sep - buf));
        r.body = strdup(sep + 4);
        r.json = json_loads(r.body, 0, NULL);
    } else {
        r.status = -1;
    }
    free(buf);
    return r;
}

/* Sends one request (Connection: close) and reads the whole answer. extra
 * holds more header lines ("Name: value\r\n"), may be NULL; body goes with
 * a Content-Length unless chunked (then it is sent as it is). Never asserts:
 * callable from any thread; status -1 when the exchange failed. */
static reply_t http_send(const char *method, const char *path, const char *extra, const char *body, size_t body_len,
                         bool chunked) {
    reply_t r = {.status = -1};
    long long t0 = ol_test_now_ms();
    int fd = connect_gate();
    if (fd < 0)
        return r;
    char *req;
    int n = asprintf(&req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s", method, path,
                     extra ? extra : "", body ? "" : "\r\n");
    if (body && chunked) {
        char *with;
        n = asprintf(&with, "%sTransfer-Encoding: chunked\r\n\r\n", req);
        free(req);
        req = with;
    } else if (body) {
        char *with;
        n = asprintf(&with, "%sContent-Length: %zu\r\n\r\n", req, body_len);
        free(req);
        req = with;
    }
    size_t off = 0, len = (size_t)n;
    while (off < len) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    for (off = 0; body && off < body_len;) {
        ssize_t w = send(fd, body + off, body_len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the gate may answer (and close) before reading it all */
        off += (size_t)w;
    }
    free(req);
    r = read_reply(fd);
    close(fd);
    r.ms = ol_test_now_ms() - t0;
    return r;
}

static reply_t http_raw(const char *method, const char *path, const char *extra, const char *body, size_t body_len) {
    return http_send(method, path, extra, body, body_len, false);
}

static reply_t http(const char *method, const char *path, const char *json_body) {
    return http_raw(method, path, json_body ? "Content-Type: application/json\r\n" : NULL, json_body,
                    json_body ? strlen(json_body) : 0);
}

/* A POST /buy body; NULL fields are left out. */
static char *buy_body(const char *request_id, const char *user, const char *ip, const char *sku, int qty) {
    char *s, rid[200] = "";
    if (request_id)
        snprintf(rid, sizeof(rid), ",\"requestID\":\"%s\"", request_id);
    cr_assert(asprintf(&s,
                       "{\"sessionID\":\"sess-1\",\"clientIP\":\"%s\",\"userID\":\"%s\",\"userLevel\":3,"
                       "\"goodsSKU\":\"%s\",\"goodsQuantity\":%d%s}",
                       ip, user, sku, qty, rid) >= 0);
    return s;
}

/* POST /buy of buy_body(...). */
static reply_t post_buy(const char *request_id, const char *user, const char *ip, const char *sku, int qty) {
    char *body = buy_body(request_id, user, ip, sku, qty);
    reply_t r = http("POST", "/buy", body);
    free(body);
    return r;
}

/* POST in a thread, for requests that wait while the test publishes. */
typedef struct bg_post_s {
    pthread_t thread;
    const char *path;
    char *body;
    reply_t reply;
} bg_post_t;

static void *bg_post_main(void *arg) {
    bg_post_t *p = arg;
    p->reply = http("POST", p->path, p->body);
    return NULL;
}

static bg_post_t *bg_post(const char *path, char *body) {
    bg_post_t *p = calloc(1, sizeof(*p));
    p->path = path;
    p->body = body;
    cr_assert_eq(pthread_create(&p->thread, NULL, bg_post_main, p), 0);
    return p;
}

static reply_t bg_post_join(bg_post_t *p) {
    pthread_join(p->thread, NULL);
    reply_t r = p->reply;
    free(p->body);
    free(p);
    return r;
}

/* The value of one sample of /metrics (its full name with labels), -1 when absent. */
static long long metric(const char *sample) {
    reply_t r = http("GET", "/metrics", NULL);
    cr_assert_eq(r.status, 200);
    long long v = ol_test_metric_in(r.body, sample);
    ol_test_reply_free(&r);
    return v;
}

/* Waits until a sample of /metrics reaches at least want. */
static void wait_metric(const char *sample, long long want, int timeout_ms) {
    long long end = ol_test_now_ms() + timeout_ms, v;
    while ((v = metric(sample)) < want) {
        cr_assert(ol_test_now_ms() < end, "%s is %lld after %d ms, expected %lld\ngate stderr:\n%s", sample, v,
                  timeout_ms, want, ol_test_bg_stderr(gate));
        usleep(20000);
    }
}

static const char *dstr(json_t *rec, const char *field) {
    const char *s = json_string_value(json_object_get(json_object_get(rec, "data"), field));
    return s ? s : "(none)";
}

/* ---- validation ---- */

static void expect_invalid(const char *what, reply_t r, int status, const char *field) {
    cr_expect_eq(r.status, status, "%s: HTTP %d, expected %d: %s", what, r.status, status, r.body);
    cr_expect(json_is_object(r.json), "%s: body is not JSON: %s", what, r.body);
    cr_expect(r.headers && strstr(r.headers, "Content-Type: application/json"), "%s: %s", what, r.headers);
    cr_expect_str_eq(jstr(&r, "field"), field, "%s: %s", what, r.body);
    cr_expect(json_string_value(json_object_get(r.json, "error")), "%s: no error message: %s", what, r.body);
    ol_test_reply_free(&r);
}

/* The end of a test of invalid requests: n of them counted as invalid,
 * nothing on buy-requests, and the gate stops cleanly. */
static void expect_invalid_only(long long n) {
    cr_expect_eq(metric("orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"invalid\"}"), n);
    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), 0, "nothing invalid reaches Kafka: %s", json_dumps(recs, 0));
    json_decref(recs);
    stop_gate(true);
}

Test(gate, rejects_bad_input_with_400_naming_the_field_before_kafka) {
    use_topics("invalid");
    start_gate("-X gate.wait.ms=0 -X gate.body.max.bytes=1024");
    const char *ok_tail = ",\"userLevel\":1,\"goodsSKU\":\"A\",\"goodsQuantity\":1}";
    char body[4096];
    snprintf(body, sizeof(body), "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\"%s", ok_tail);
    expect_invalid("missing userID", http("POST", "/buy", body), 400, "userID");
    static const struct {
        const char *what, *body, *field;
    } bad[] = {
        {"userLevel as a string",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",\"userID\":\"u\",\"userLevel\":\"1\","
         "\"goodsSKU\":\"A\",\"goodsQuantity\":1}",
         "userLevel"},
        {"goodsSKU as a number",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",\"userID\":\"u\",\"userLevel\":1,"
         "\"goodsSKU\":7,\"goodsQuantity\":1}",
         "goodsSKU"},
        {"negative quantity",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",\"userID\":\"u\",\"userLevel\":1,"
         "\"goodsSKU\":\"A\",\"goodsQuantity\":-2}",
         "goodsQuantity"},
        {"zero quantity",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",\"userID\":\"u\",\"userLevel\":1,"
         "\"goodsSKU\":\"A\",\"goodsQuantity\":0}",
         "goodsQuantity"},
        {"fractional quantity",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",\"userID\":\"u\",\"userLevel\":1,"
         "\"goodsSKU\":\"A\",\"goodsQuantity\":1.5}",
         "goodsQuantity"},
        {"bad IP",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.300\",\"userID\":\"u\",\"userLevel\":1,"
         "\"goodsSKU\":\"A\",\"goodsQuantity\":1}",
         "clientIP"},
        {"unknown field",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",\"userID\":\"u\",\"userLevel\":1,"
         "\"goodsSKU\":\"A\",\"goodsQuantity\":1,\"price\":1}",
         "price"},
        {"bad requestID",
         "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",\"userID\":\"u\",\"userLevel\":1,"
         "\"goodsSKU\":\"A\",\"goodsQuantity\":1,\"requestID\":\"a b/c\"}",
         "requestID"},
        {"malformed JSON", "{\"sessionID\":\"s\",", "body"},
        {"not an object", "[1,2]", "body"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_invalid(bad[i].what, http("POST", "/buy", bad[i].body), 400, bad[i].field);
    /* oversized: declared with Content-Length, and again as chunks without it */
    char big[3000];
    memset(big, ' ', sizeof(big));
    memcpy(big, body, strlen(body));
    expect_invalid("oversized body", http_raw("POST", "/buy", "Content-Type: application/json\r\n", big, sizeof(big)),
                   400, "body");
    char chunked[4000];
    int n = snprintf(chunked, sizeof(chunked), "%zx\r\n", sizeof(big));
    memcpy(chunked + n, big, sizeof(big));
    n += (int)sizeof(big);
    n += snprintf(chunked + n, sizeof(chunked) - (size_t)n, "\r\n0\r\n\r\n");
    expect_invalid("oversized chunked body",
                   http_send("POST", "/buy", "Content-Type: application/json\r\n", chunked, (size_t)n, true), 400,
                   "body");
    expect_invalid("not JSON content",
                   http_raw("POST", "/buy", "Content-Type: application/x-www-form-urlencoded\r\n", "a=1", 3), 415,
                   "Content-Type");
    expect_invalid("checkout without holdID", http("POST", "/checkout", "{\"userID\":\"u\",\"goodsSKU\":\"A\"}"), 400,
                   "holdID");

    reply_t r = http("GET", "/nowhere", NULL);
    cr_expect_eq(r.status, 404, "%s", r.body);
    cr_expect(json_is_object(r.json), "%s", r.body);
    ol_test_reply_free(&r);
    r = http("GET", "/buy", NULL);
    cr_expect_eq(r.status, 405, "%s", r.body);
    cr_expect(json_is_object(r.json) && strstr(r.headers, "Allow: POST"), "%s\n%s", r.headers, r.body);
    ol_test_reply_free(&r);
    r = http("DELETE", "/metrics", NULL);
    cr_expect_eq(r.status, 405, "%s", r.body);
    ol_test_reply_free(&r);

    /* 14 bad bodies and the GET */
    expect_invalid_only(15);
}

/* Bodies that used to get 202 and were never decided (the decider
 * dead-letters them), or passed with a field cut at its NUL. */
Test(gate, refuses_invalid_utf8_and_nul_anywhere_in_the_body) {
    use_topics("holes");
    start_gate("-X gate.wait.ms=0");
    const char *head = "{\"sessionID\":\"s\",\"clientIP\":\"10.0.0.1\",";
    const char *tail = "\"userLevel\":1,\"goodsSKU\":\"A\",\"goodsQuantity\":1}";
    static const struct {
        const char *what, *middle, *field, *error;
    } cases[] = {
        {"invalid UTF-8 after an escape", "\"userID\":\"x\\\"\xff\",", "body", "invalid UTF-8 at byte"},
        {"invalid UTF-8 after an escape in a key", "\"userID\":\"u\",\"k\\n\xff\":1,", "body", "invalid UTF-8"},
        {"a lone surrogate", "\"userID\":\"x\\ud800\",", "body", "malformed JSON"},
        {"NUL in a value", "\"userID\":\"u\\u0000x\",", "userID", "field \"userID\": must not contain NUL (\\u0000)"},
        {"an extra key with NUL", "\"userID\":\"u\",\"userID\\u0000x\":\"v\",", "userID\\u0000x",
         "must not contain NUL (\\u0000)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[512];
        snprintf(body, sizeof(body), "%s%s%s", head, cases[i].middle, tail);
        reply_t r = http("POST", "/buy", body);
        const char *error = json_string_value(json_object_get(r.json, "error"));
        cr_expect(error && strstr(error, cases[i].error), "%s: error \"%s\" does not say \"%s\"", cases[i].what,
                  error ? error : "(none)", cases[i].error);
        expect_invalid(cases[i].what, r, 400, cases[i].field);
    }
    expect_invalid_only(5);
}

/* ---- rate limits ---- */

Test(gate, throttles_after_the_burst_per_ip_and_per_instance) {
    use_topics("throttle");
    start_gate("-X gate.wait.ms=0 -X gate.ip.rate.per.second=1 -X gate.ip.burst=3 -X gate.rate.per.second=1 "
               "-X gate.rate.burst=6");
    /* one client (the TCP peer, 127.0.0.1), whichever clientIP its bodies claim */
    for (int i = 0; i < 3; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "198.51.100.%d", i + 1);
        reply_t r = post_buy(NULL, "u1", ip, "A", 1);
        cr_assert_eq(r.status, 202, "request %d: %d %s", i, r.status, r.body);
        ol_test_reply_free(&r);
    }
    reply_t r = post_buy(NULL, "u1", "198.51.100.9", "A", 1);
    cr_assert_eq(r.status, 429, "%d %s", r.status, r.body);
    cr_assert_str_eq(r.body, THROTTLED_JSON);
    ol_test_reply_free(&r);
    /* another client (127.0.0.2) has its own bucket; the instance's (6) runs out after it */
    http_from = "127.0.0.2";
    for (int i = 0; i < 2; i++) {
        r = post_buy(NULL, "u2", "198.51.100.1", "A", 1);
        cr_assert_eq(r.status, 202, "request %d: %d %s", i, r.status, r.body);
        ol_test_reply_free(&r);
    }
    http_from = "127.0.0.3";
    r = post_buy(NULL, "u3", "198.51.100.3", "A", 1);
    cr_assert_eq(r.status, 429, "%d %s", r.status, r.body);
    cr_assert_eq(json_is_true(json_object_get(r.json, "isThrottled")), 1, "%s", r.body);
    ol_test_reply_free(&r);
    http_from = NULL;
    EXPECT_METRICS({"orderlog_gate_throttled_total{limit=\"ip\"}", 1},
                   {"orderlog_gate_throttled_total{limit=\"instance\"}", 1},
                   {"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"throttled\"}", 2},
                   {"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"pending\"}", 5});
    stop_gate(true);
    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), 5, "only admitted requests reach Kafka");
    json_decref(recs);
}

/* ---- the client's address ---- */

/* The client_ip of the BuyRequested of request id rid among recs. */
static const char *client_ip_of(json_t *recs, const char *rid) {
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec) {
        if (!strcmp(dstr(rec, "request_id"), rid))
            return dstr(rec, "client_ip");
    }
    return "(no such record)";
}

/* POST /buy of buy_body(rid, user, ip, ...) with more header lines (may be NULL). */
static reply_t post_buy_with(const char *headers, const char *rid, const char *user, const char *ip) {
    char *body = buy_body(rid, user, ip, "A", 1), hdrs[1024];
    snprintf(hdrs, sizeof(hdrs), "Content-Type: application/json\r\n%s", headers ? headers : "");
    reply_t r = http_raw("POST", "/buy", hdrs, body, strlen(body));
    free(body);
    return r;
}

/* How many of n buys from http_from were admitted (202, the rest 429), the
 * body's clientIP the same each time or a new one each time; *ms how long
 * they took. */
static int admitted(int n, bool rotate, long long *ms) {
    int ok = 0;
    long long t0 = ol_test_now_ms();
    for (int i = 0; i < n; i++) {
        char ip[32];
        snprintf(ip, sizeof(ip), "198.51.100.%d", rotate ? i + 1 : 1);
        reply_t r = post_buy(NULL, "u1", ip, "A", 1);
        cr_assert(r.status == 202 || r.status == 429, "%s request %d: %d %s", rotate ? "rotating" : "fixed", i,
                  r.status, r.body);
        ok += r.status == 202;
        ol_test_reply_free(&r);
    }
    *ms = ol_test_now_ms() - t0;
    return ok;
}

/* A client used to get a fresh bucket for every clientIP it made up: 200
 * requests with rotating ones all passed. */
/* A request through a proxy: the peer it comes from (NULL: 127.0.0.1), its
 * request id, the proxy's header lines, the client address the gate must
 * take from them. */
typedef struct proxied_s {
    const char *from, *rid, *headers, *client;
} proxied_t;

/* Sends each case as a POST /buy, which must be admitted (202). */
static void send_proxied(const proxied_t *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        http_from = cases[i].from;
        reply_t r = post_buy_with(cases[i].headers, cases[i].rid, "u1", "203.0.113.50");
        cr_assert_eq(r.status, 202, "%s: %d %s", cases[i].rid, r.status, r.body);
        ol_test_reply_free(&r);
    }
    http_from = NULL;
}

/* A header that names no usable client: 400 naming field with error. */
static void expect_bad_header(const char *headers, const char *rid, const char *field, const char *error) {
    reply_t r = post_buy_with(headers, rid, "u1", "203.0.113.50");
    cr_expect_eq(r.status, 400, "%d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "field"), field);
    cr_expect_str_eq(jstr(&r, "error"), error);
    ol_test_reply_free(&r);
}

/* buy-requests holds the n cases, each with the client the gate had to take. */
static void expect_clients(const proxied_t *cases, size_t n) {
    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), n);
    for (size_t i = 0; i < n; i++)
        cr_expect_str_eq(client_ip_of(recs, cases[i].rid), cases[i].client, "%s", cases[i].rid);
    json_decref(recs);
}

Test(gate, a_client_rotating_its_body_client_ip_is_throttled_like_one_with_a_fixed_one) {
    enum { N = 40, RATE = 2, BURST = 5 };
    use_topics("rotate");
    char extra[256];
    snprintf(extra, sizeof(extra),
             "-X gate.wait.ms=0 -X gate.rate.per.second=0 -X gate.ip.rate.per.second=%d -X gate.ip.burst=%d", RATE,
             BURST);
    start_gate(extra);
    long long fixed_ms, rotating_ms;
    http_from = "127.0.0.2";
    int fixed = admitted(N, false, &fixed_ms);
    http_from = "127.0.0.3";
    int rotating = admitted(N, true, &rotating_ms);
    http_from = NULL;
    /* a bucket admits its BURST, then RATE a second: at most what it earned
     * while the requests came (+1: the token part-earned when they began) */
    int fixed_max = BURST + (int)(RATE * fixed_ms / 1000) + 1;
    int rotating_max = BURST + (int)(RATE * rotating_ms / 1000) + 1;
    cr_expect(fixed >= BURST && fixed <= fixed_max, "fixed clientIP: %d of %d admitted in %lld ms, expected %d to %d",
              fixed, N, fixed_ms, BURST, fixed_max);
    cr_expect(rotating >= BURST && rotating <= rotating_max,
              "rotating clientIP: %d of %d admitted in %lld ms, expected %d to %d", rotating, N, rotating_ms, BURST,
              rotating_max);
    long long longest = fixed_ms > rotating_ms ? fixed_ms : rotating_ms;
    cr_expect_leq(abs(fixed - rotating), (int)(RATE * longest / 1000) + 1,
                  "429s: %d with a fixed clientIP, %d rotating", N - fixed, N - rotating);
    EXPECT_METRICS({"orderlog_gate_throttled_total{limit=\"ip\"}", 2 * N - fixed - rotating},
                   {"orderlog_gate_client_addresses_total{source=\"peer\"}", 2 * N},
                   {"orderlog_gate_client_ip_claims_ignored_total", fixed + rotating});
    stop_gate(true);
    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), (size_t)(fixed + rotating));
    int from2 = 0, from3 = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec) {
        from2 += !strcmp(dstr(rec, "client_ip"), "127.0.0.2");
        from3 += !strcmp(dstr(rec, "client_ip"), "127.0.0.3");
    }
    cr_expect_eq(from2, fixed, "every record carries its TCP peer");
    cr_expect_eq(from3, rotating, "every record carries its TCP peer");
    json_decref(recs);
}

/* 130 requests claiming 203.0.113.50 used to get guard to ban that address. */
Test(gate, a_forged_client_ip_gets_its_sender_banned_not_the_address_it_names) {
    enum { N = 12, IP_MAX = 5 };
    use_topics("forged");
    guard = ol_test_orderlog_bg("-X topic.prefix=%s -X guard.ip.max=%d -X guard.user.max=0 guard", prefix, IP_MAX);
    cr_assert_eq(ol_test_bg_wait_stderr(guard, "assigned 3 partitions", 1, 60000), 1, "guard did not start:\n%s",
                 ol_test_bg_stderr(guard));
    start_gate("-X gate.wait.ms=0 -X gate.rate.per.second=0 -X gate.ip.rate.per.second=0");
    for (int i = 0; i < N; i++) {
        char rid[32], user[32];
        snprintf(rid, sizeof(rid), "forged-%d", i);
        snprintf(user, sizeof(user), "u%d", i);
        reply_t r = post_buy(rid, user, "203.0.113.50", "A", 1);
        cr_assert_eq(r.status, 202, "request %d: %d %s", i, r.status, r.body);
        ol_test_reply_free(&r);
    }
    json_t *recs = read_topic("buy-requests");
    cr_assert_eq(json_array_size(recs), N);
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec) {
        cr_assert_str_eq(dstr(rec, "client_ip"), "127.0.0.1", "what guard counts is the peer: %s", json_dumps(rec, 0));
    }
    json_decref(recs);
    /* guard bans the sender... */
    long long deadline = ol_test_now_ms() + 60000;
    json_t *bans = NULL;
    for (bool banned = false; !banned;) {
        json_decref(bans);
        bans = read_topic("blacklist");
        json_array_foreach(bans, i, rec) {
            banned |= !strcmp(json_string_value(json_object_get(rec, "key")), "ip:127.0.0.1") &&
                      !strcmp(dstr(rec, "action"), "add") && !strcmp(dstr(rec, "reason"), "rate");
        }
        cr_assert(banned || ol_test_now_ms() < deadline, "no ban of ip:127.0.0.1 after 60 s: %s\nguard:\n%s",
                  json_dumps(bans, 0), ol_test_bg_stderr(guard));
        if (!banned)
            usleep(200000);
    }
    ol_test_bg_signal(guard, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(guard, 30000), 0, "%s", ol_test_bg_stderr(guard));
    /* ...and nothing else: every request judged (guard stopped after the
     * ban, reading in order), no entry names the claimed address */
    json_decref(bans);
    bans = read_topic("blacklist");
    cr_expect_eq(json_array_size(bans), 1, "one ban: %s", json_dumps(bans, 0));
    json_array_foreach(bans, i, rec) {
        cr_expect(!strstr(json_string_value(json_object_get(rec, "key")), "203.0.113.50"), "%s", json_dumps(rec, 0));
    }
    cr_expect(!strstr(ol_test_bg_stderr(guard), "203.0.113.50"), "%s", ol_test_bg_stderr(guard));
    json_decref(bans);
    stop_gate(true);
}

Test(gate, takes_the_client_from_x_forwarded_for_only_when_a_trusted_proxy_sends_it) {
    use_topics("xff");
    start_gate("-X gate.wait.ms=0 -X gate.trusted.proxies=127.0.0.1/32,10.0.0.0/8");
    static const proxied_t cases[] = {
        {NULL, "xff-1", "X-Forwarded-For: 198.51.100.7\r\n", "198.51.100.7"},
        /* the right-most address that is no trusted proxy: what the client wrote left of it is not read */
        {NULL, "xff-2", "X-Forwarded-For: 203.0.113.50, bogus, 198.51.100.8 ,10.1.2.3\r\n", "198.51.100.8"},
        /* two header lines are one list */
        {NULL, "xff-3", "X-Forwarded-For: 203.0.113.50\r\nX-Forwarded-For: 198.51.100.9\r\n", "198.51.100.9"},
        {NULL, "xff-4", "X-Forwarded-For: [2001:DB8::9]:4711\r\n", "2001:db8::9"},
        {NULL, "xff-5", "x-forwarded-for: ::ffff:198.51.100.10\r\n", "198.51.100.10"},
        /* a trusted peer without the header is the client itself */
        {NULL, "xff-6", NULL, "127.0.0.1"},
        /* the other header is not read */
        {NULL, "xff-7", "Forwarded: for=198.51.100.11\r\n", "127.0.0.1"},
        /* a peer that is no trusted proxy: its header is not read, valid or not */
        {"127.0.0.2", "xff-8", "X-Forwarded-For: 198.51.100.12\r\n", "127.0.0.2"},
        {"127.0.0.2", "xff-9", "X-Forwarded-For: garbage\r\n", "127.0.0.2"},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    send_proxied(cases, n);
    /* a trusted proxy's header that names no usable client: 400, nothing written */
    expect_bad_header("X-Forwarded-For: 198.51.100.13, not-an-ip\r\n", "xff-bad", "X-Forwarded-For",
                      "X-Forwarded-For: \"not-an-ip\" is not an IP address");
    EXPECT_METRICS({"orderlog_gate_client_addresses_total{source=\"forwarded\"}", 5},
                   {"orderlog_gate_client_addresses_total{source=\"peer\"}", 4},
                   {"orderlog_gate_forwarded_invalid_total", 1},
                   {"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"invalid\"}", 1});
    stop_gate(true);
    expect_clients(cases, n);
}

Test(gate, reads_the_forwarded_header_of_rfc_7239_when_told_to) {
    use_topics("fwd");
    start_gate("-X gate.wait.ms=0 -X gate.trusted.proxies=127.0.0.1 -X gate.forwarded.header=forwarded");
    static const proxied_t cases[] = {
        {NULL, "fwd-1", "Forwarded: for=203.0.113.50, for=\"[2001:db8:cafe::17]:4711\";proto=https\r\n",
         "2001:db8:cafe::17"},
        {NULL, "fwd-2", "Forwarded: for=192.0.2.60;proto=http;by=203.0.113.43\r\n", "192.0.2.60"},
        {NULL, "fwd-3", "Forwarded: for=\"_hidden\"\r\nForwarded: For=192.0.2.61\r\n", "192.0.2.61"},
        {NULL, "fwd-4", "X-Forwarded-For: 198.51.100.7\r\n", "127.0.0.1"},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    send_proxied(cases, n);
    expect_bad_header("Forwarded: for=unknown\r\n", "fwd-bad", "Forwarded",
                      "Forwarded: for=\"unknown\" is not an IP address");
    stop_gate(true);
    expect_clients(cases, n);
}

Test(gate, believes_the_body_client_ip_only_when_told_to) {
    use_topics("body");
    start_gate("-X gate.wait.ms=0 -X gate.rate.per.second=0 -X gate.ip.rate.per.second=1 -X gate.ip.burst=2 "
               "-X gate.trust.body.client.ip=true -X gate.trusted.proxies=127.0.0.1");
    const char *xff = "X-Forwarded-For: 198.51.100.99\r\n"; /* the body wins */
    static const struct {
        const char *rid, *ip;
        int status;
    } cases[] = {
        {"body-1", "198.51.100.1", 202},
        {"body-2", "198.51.100.1", 202},
        {"body-3", "198.51.100.1", 429},
        {"body-4", "198.51.100.2", 202}, /* another bucket */
    };
    for (size_t i = 0; i < 4; i++) {
        reply_t r = post_buy_with(xff, cases[i].rid, "u1", cases[i].ip);
        cr_assert_eq(r.status, cases[i].status, "%s: %d %s", cases[i].rid, r.status, r.body);
        ol_test_reply_free(&r);
    }
    cr_expect_eq(metric("orderlog_gate_client_addresses_total{source=\"body\"}"), 3);
    cr_expect_eq(metric("orderlog_gate_client_addresses_total{source=\"forwarded\"}"), 0);
    cr_expect_eq(
        ol_test_bg_wait_stderr(gate, "client address is the body's clientIP (gate.trust.body.client.ip)", 1, 10000), 1,
        "no warning at start:\n%s", ol_test_bg_stderr(gate));
    stop_gate(true);
    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), 3);
    cr_expect_str_eq(client_ip_of(recs, "body-1"), "198.51.100.1");
    cr_expect_str_eq(client_ip_of(recs, "body-4"), "198.51.100.2");
    json_decref(recs);
}

Test(gate, refuses_bad_trusted_proxy_networks_at_start) {
    static const ol_test_case_t bad[] = {
        {"gate.trusted.proxies=10.0.0.0/33",
         "orderlog gate: property \"gate.trusted.proxies\": \"10.0.0.0/33\": the prefix length must be 0 to 32"},
        {"gate.trusted.proxies=127.0.0.1/32, lb.internal", "\"lb.internal\" is not an IPv4 or IPv6 network"},
        {"gate.trusted.proxies=10.0.0.1/8", "has bits set past its prefix length (the network is 10.0.0.0/8)"},
        {"gate.trusted.proxies=2001:db8::/129", "the prefix length must be 0 to 128"},
        {"gate.forwarded.header=x-real-ip", "is not one of x-forwarded-for,forwarded"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *q = ol_test_shell_quote(bad[i].in), *out, *err;
        int rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X %s gate", q);
        cr_expect_eq(rc, 2, "%s: exit %d\n%s", bad[i].in, rc, err);
        cr_expect(strstr(err, bad[i].want), "%s: \"%s\" does not say \"%s\"", bad[i].in, err, bad[i].want);
        free(q);
        free(out);
        free(err);
    }
}

Test(gate, an_ipv6_peer_is_its_own_client_address) {
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 lo = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool v6 = probe >= 0 && !bind(probe, (struct sockaddr *)&lo, sizeof(lo));
    if (probe >= 0)
        close(probe);
    if (!v6)
        cr_skip_test("no IPv6 loopback on this machine");
    use_topics("v6");
    gate = ol_test_orderlog_bg(
        "-X topic.prefix=%s -X gate.listen=[::1]:0 -X gate.wait.ms=0 -X gate.trusted.proxies=::1/128 gate", prefix);
    cr_assert_eq(ol_test_bg_wait_lines(gate, 1, 60000), 1, "the gate did not start:\n%s", ol_test_bg_stderr(gate));
    const char *at = strstr(ol_test_bg_stdout(gate), "gate listening on http://[::1]:");
    cr_assert(at, "%s", ol_test_bg_stdout(gate));
    gate_port = atoi(at + strlen("gate listening on http://[::1]:"));
    gate_host = "::1";
    reply_t r = post_buy_with(NULL, "v6-1", "u1", "203.0.113.50");
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    r = post_buy_with("X-Forwarded-For: 198.51.100.7, ::1\r\n", "v6-2", "u1", "203.0.113.50");
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    stop_gate(true);
    json_t *recs = read_topic("buy-requests");
    cr_expect_str_eq(client_ip_of(recs, "v6-1"), "::1");
    cr_expect_str_eq(client_ip_of(recs, "v6-2"), "198.51.100.7");
    json_decref(recs);
}

/* ---- what reaches Kafka ---- */

Test(gate, writes_the_buy_requested_with_its_fields_and_envelope) {
    use_topics("produce");
    start_gate("-X gate.wait.ms=0");
    reply_t r = http("POST", "/buy",
                     "{\"sessionID\":\"sess-42\",\"clientIP\":\"2001:db8::7\",\"userID\":\"UID0000000001\","
                     "\"userLevel\":5,\"goodsSKU\":\"SKU0001\",\"goodsQuantity\":2,\"requestID\":\"it-req-1\"}");
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    cr_assert_str_eq(jstr(&r, "requestID"), "it-req-1");
    cr_assert_str_eq(jstr(&r, "status"), "pending");
    cr_assert_str_eq(jstr(&r, "poll"), "/buy/it-req-1");
    ol_test_reply_free(&r);
    /* without requestID, the gate makes one (a UUID) */
    r = post_buy(NULL, "u2", "10.1.2.3", "SKU0002", 1);
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    char generated[64];
    snprintf(generated, sizeof(generated), "%s", jstr(&r, "requestID"));
    cr_assert_eq(strlen(generated), 36, "%s", r.body);
    ol_test_reply_free(&r);

    char *out = ol_test_orderlogf_ok(fixed_args(), "tail buy-requests --from beginning -n 2");
    json_t *first = NULL, *second = NULL;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "%s", line);
        if (!strcmp(dstr(j, "request_id"), "it-req-1"))
            first = j;
        else
            second = j;
    }
    free(out);
    cr_assert(first && second, "two records expected");
    cr_expect_str_eq(json_string_value(json_object_get(first, "type")), "BuyRequested");
    cr_expect_str_eq(json_string_value(json_object_get(first, "key")), "SKU0001");
    json_t *d = json_object_get(first, "data"), *h = json_object_get(first, "headers");
    cr_expect_str_eq(dstr(first, "session_id"), "sess-42");
    cr_expect_str_eq(dstr(first, "client_ip"), "127.0.0.1", "the TCP peer, not the body's clientIP");
    cr_expect_str_eq(dstr(first, "user_id"), "UID0000000001");
    cr_expect_eq(json_integer_value(json_object_get(d, "user_level")), 5);
    cr_expect_str_eq(dstr(first, "sku"), "SKU0001");
    cr_expect_eq(json_integer_value(json_object_get(d, "quantity")), 2);
    cr_expect_str_eq(dstr(first, "channel"), "gate");
    cr_expect(json_string_value(json_object_get(d, "requested_at")));
    cr_expect_str_eq(json_string_value(json_object_get(h, "ce_specversion")), "1.0");
    cr_expect_str_eq(json_string_value(json_object_get(h, "ce_type")), "orderlog.BuyRequested");
    cr_expect_str_eq(json_string_value(json_object_get(h, "ce_source")), "orderlog/gate");
    cr_expect_str_eq(json_string_value(json_object_get(h, "ce_subject")), "it-req-1");
    cr_expect_str_eq(json_string_value(json_object_get(h, "content-type")), "application/avro");
    cr_expect_str_eq(dstr(second, "request_id"), generated);
    json_decref(first);
    json_decref(second);
    stop_gate(true);
}

/* ---- answers ---- */

Test(gate, answers_with_the_decision_read_back_from_sale_events) {
    use_topics("answer");
    start_gate("-X gate.wait.ms=20000");
    bg_post_t *acc = bg_post("/buy", buy_body("it-acc-1", "u1", "10.0.0.1", "A", 2));
    bg_post_t *rej = bg_post("/buy", buy_body("it-rej-1", "u2", "10.0.0.2", "A", 1));
    wait_metric("orderlog_gate_waiting", 2, 20000); /* both wait for their decision */
    publish("{\"type\":\"BuyAccepted\",\"data\":{\"request_id\":\"it-acc-1\",\"hold_id\":\"h-it-acc-1\","
            "\"user_id\":\"u1\",\"sku\":\"A\",\"quantity\":2,\"expires_at\":\"2031-05-06T07:08:09.123Z\"}}\n"
            "{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"it-rej-1\",\"user_id\":\"u2\",\"sku\":\"A\","
            "\"quantity\":1,\"reason\":\"sold_out\",\"message\":\"The goods is sold out!\"}}\n");
    reply_t a = bg_post_join(acc), r = bg_post_join(rej);
    cr_assert_eq(a.status, 200, "%d %s", a.status, a.body);
    cr_assert_str_eq(jstr(&a, "reponseMsg"), MSG_ACCEPTED);
    cr_assert(json_is_true(json_object_get(a.json, "repResult")), "%s", a.body);
    cr_assert(json_is_false(json_object_get(a.json, "isThrottled")), "%s", a.body);
    cr_assert_str_eq(jstr(&a, "version"), "1.0");
    cr_assert_str_eq(jstr(&a, "requestID"), "it-acc-1");
    cr_assert_str_eq(jstr(&a, "holdID"), "h-it-acc-1");
    cr_assert_str_eq(jstr(&a, "expiresAt"), "2031-05-06T07:08:09.123Z");
    cr_assert_lt(a.ms, 15000, "answered when the decision came, not at the deadline");
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert_str_eq(jstr(&r, "reponseMsg"), MSG_SOLD_OUT);
    cr_assert(json_is_false(json_object_get(r.json, "repResult")), "%s", r.body);
    cr_assert_str_eq(jstr(&r, "reason"), "sold_out");
    cr_assert_str_eq(jstr(&r, "requestID"), "it-rej-1");

    /* GET after the answer: the same answer; an unknown id: 404 */
    reply_t g = http("GET", "/buy/it-acc-1", NULL);
    cr_assert_eq(g.status, 200, "%d %s", g.status, g.body);
    cr_assert_str_eq(g.body, a.body);
    ol_test_reply_free(&g);
    g = http("GET", "/buy/it-rej-1", NULL);
    cr_assert_eq(g.status, 200, "%d %s", g.status, g.body);
    cr_assert_str_eq(g.body, r.body);
    ol_test_reply_free(&g);
    /* a retried request id already decided: answered from the cache at once */
    reply_t again = post_buy("it-acc-1", "u1", "10.0.0.1", "A", 2);
    cr_assert_eq(again.status, 200, "%d %s", again.status, again.body);
    cr_assert_str_eq(again.body, a.body);
    ol_test_reply_free(&again);
    ol_test_reply_free(&a);
    ol_test_reply_free(&r);

    EXPECT_METRICS({"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"accepted\"}", 2},
                   {"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"rejected\"}", 1},
                   {"orderlog_gate_rejected_total{endpoint=\"buy\",reason=\"sold_out\"}", 1},
                   {"orderlog_gate_requests_total{endpoint=\"buy_status\",outcome=\"accepted\"}", 1},
                   {"orderlog_gate_waiting", 0}, {"orderlog_gate_request_duration_seconds_count{endpoint=\"buy\"}", 3});
    stop_gate(true);
}

/* Polls GET /buy/<id> until it answers 200 (bounded); when pending, every
 * answer before must be 202. */
static reply_t get_decided_after(const char *id, bool pending) {
    char path[200];
    snprintf(path, sizeof(path), "/buy/%s", id);
    long long end = ol_test_now_ms() + 20000;
    for (;;) {
        reply_t r = http("GET", path, NULL);
        if (r.status == 200)
            return r;
        if (pending)
            cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
        cr_assert(ol_test_now_ms() < end, "%s: no decision after 20 s (%d %s)", id, r.status, r.body);
        ol_test_reply_free(&r);
        usleep(50000);
    }
}

/* Polls GET /buy/<id> until it answers 200 (bounded). */
static reply_t get_decided(const char *id) {
    return get_decided_after(id, false);
}

Test(gate, answers_202_pending_after_the_wait_then_the_decision_on_get) {
    use_topics("pending");
    /* a projection schema that does not exist: PostgreSQL has nothing, gracefully */
    char extra[300];
    snprintf(extra, sizeof(extra), "-X gate.wait.ms=300 -X projection.schema=it_gate_missing_%ld", (long)getpid());
    start_gate(extra);
    reply_t r = post_buy("it-slow-1", "u1", "10.0.0.1", "A", 1);
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    cr_assert_str_eq(jstr(&r, "requestID"), "it-slow-1");
    cr_assert_str_eq(jstr(&r, "status"), "pending");
    cr_assert_str_eq(jstr(&r, "poll"), "/buy/it-slow-1");
    cr_assert_geq(r.ms, 290, "answered after gate.wait.ms, took %lld ms", r.ms);
    cr_assert_lt(r.ms, 5000);
    ol_test_reply_free(&r);
    r = http("GET", "/buy/it-slow-1", NULL);
    cr_assert_eq(r.status, 202, "known but undecided: %d %s", r.status, r.body);
    cr_assert_str_eq(jstr(&r, "status"), "pending");
    ol_test_reply_free(&r);
    r = http("GET", "/buy/never-seen", NULL);
    cr_assert_eq(r.status, 404, "%d %s", r.status, r.body);
    cr_assert(json_is_object(r.json), "%s", r.body);
    ol_test_reply_free(&r);
    cr_expect_eq(metric("orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"pending\"}"), 1);

    publish("{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"it-slow-1\",\"user_id\":\"u1\",\"sku\":\"A\","
            "\"quantity\":1,\"reason\":\"limit\",\"message\":\"You can not buy this goods!\"}}\n");
    r = get_decided_after("it-slow-1", true);
    cr_assert_str_eq(jstr(&r, "reponseMsg"), "You can not buy this goods!");
    cr_assert_str_eq(jstr(&r, "reason"), "limit");
    cr_assert(json_is_false(json_object_get(r.json, "repResult")), "%s", r.body);
    ol_test_reply_free(&r);
    stop_gate(true);
}

static int count_requests(const char *id) {
    json_t *recs = read_topic("buy-requests");
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) n += !strcmp(dstr(r, "request_id"), id);
    json_decref(recs);
    return n;
}

/* too_old is no decision: a decision the gate knows stands and is the
 * answer; a request only refused too_old is shown so, and a retry of it is
 * written again (decide judges it at its new time). */
Test(gate, a_too_old_refusal_never_hides_a_decision_and_its_retry_is_sent_again) {
    use_topics("too_old");
    char extra[300];
    snprintf(extra, sizeof(extra), "-X gate.wait.ms=300 -X projection.schema=it_gate_missing_%ld", (long)getpid());
    start_gate(extra);
    const char *too_old = "\"reason\":\"too_old\",\"message\":\"The request has expired, please try again!\"}}\n";
    char lines[2048];

    /* decided, then refused too_old (its old record came back); a decision
     * of another request after them (same SKU: same partition, read in
     * order) says the gate has read both */
    reply_t r = post_buy("it-old-1", "u1", "10.0.0.1", "A", 1);
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    snprintf(lines, sizeof(lines),
             "{\"type\":\"BuyAccepted\",\"data\":{\"request_id\":\"it-old-1\",\"hold_id\":\"h-it-old-1\","
             "\"user_id\":\"u1\",\"sku\":\"A\",\"quantity\":1,\"expires_at\":\"2031-05-06T07:08:09.123Z\"}}\n"
             "{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"it-old-1\",\"user_id\":\"u1\",\"sku\":\"A\","
             "\"quantity\":1,%s"
             "{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"it-mark-1\",\"user_id\":\"u9\",\"sku\":\"A\","
             "\"quantity\":1,\"reason\":\"sold_out\",\"message\":\"The goods is sold out!\"}}\n",
             too_old);
    publish(lines);
    r = get_decided("it-mark-1");
    ol_test_reply_free(&r);
    r = get_decided("it-old-1");
    cr_assert(json_is_true(json_object_get(r.json, "repResult")), "the decision stands: %s", r.body);
    cr_assert_str_eq(jstr(&r, "holdID"), "h-it-old-1");
    ol_test_reply_free(&r);
    r = post_buy("it-old-1", "u1", "10.0.0.1", "A", 1);
    cr_assert_eq(r.status, 200, "answered from the cache: %d %s", r.status, r.body);
    cr_assert(json_is_true(json_object_get(r.json, "repResult")), "%s", r.body);
    ol_test_reply_free(&r);
    cr_assert_eq(count_requests("it-old-1"), 1, "a decided request is not written again");

    /* only refused too_old: shown so; a retry is written again, and its
     * decision replaces the refusal */
    r = post_buy("it-old-2", "u2", "10.0.0.2", "A", 1);
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    snprintf(lines, sizeof(lines),
             "{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"it-old-2\",\"user_id\":\"u2\",\"sku\":\"A\","
             "\"quantity\":1,%s",
             too_old);
    publish(lines);
    r = get_decided("it-old-2");
    cr_assert_str_eq(jstr(&r, "reason"), "too_old");
    cr_assert_str_eq(jstr(&r, "reponseMsg"), "The request has expired, please try again!");
    cr_assert(json_is_false(json_object_get(r.json, "repResult")), "%s", r.body);
    ol_test_reply_free(&r);
    r = post_buy("it-old-2", "u2", "10.0.0.2", "A", 1);
    cr_assert_eq(r.status, 202, "a too_old answer is no decision to repeat: %d %s", r.status, r.body);
    ol_test_reply_free(&r);
    cr_assert_eq(count_requests("it-old-2"), 2);
    publish("{\"type\":\"BuyAccepted\",\"data\":{\"request_id\":\"it-old-2\",\"hold_id\":\"h-it-old-2\","
            "\"user_id\":\"u2\",\"sku\":\"A\",\"quantity\":1,\"expires_at\":\"2031-05-06T07:08:09.123Z\"}}\n");
    long long end = ol_test_now_ms() + 20000;
    for (;;) {
        r = get_decided("it-old-2");
        if (json_is_true(json_object_get(r.json, "repResult")))
            break;
        cr_assert(ol_test_now_ms() < end, "the decision did not replace too_old: %s", r.body);
        ol_test_reply_free(&r);
        usleep(50000);
    }
    ol_test_reply_free(&r);
    cr_expect_geq(metric("orderlog_gate_rejected_total{endpoint=\"buy_status\",reason=\"too_old\"}"), 1);
    stop_gate(true);
}

Test(gate, get_reads_older_decisions_from_postgresql) {
    use_topics("pg");
    ol_test_pg_migrated_db("gate", db, sizeof(db));
    ol_test_pg_exec(db, "insert into orderlog.buy_decisions (request_id, user_id, sku, quantity, outcome, reason, "
                        "message, hold_id, decided_at) values "
                        "('it-old-acc', 'u1', 'A', 1, 'accepted', null, null, 'h-it-old-acc', now()), "
                        "('it-old-rej', 'u2', 'A', 1, 'rejected', 'blacklisted', 'Bad guy! Bye-Bye!', null, now())");
    bool has_expiry = ol_test_pg_query_int(db, "select count(*) from information_schema.columns where table_schema = "
                                               "'orderlog' and table_name = 'buy_decisions' and column_name = "
                                               "'expires_at'") == 1;
    if (has_expiry)
        ol_test_pg_exec(db, "update orderlog.buy_decisions set expires_at = '2031-01-02T03:04:05.678Z' "
                            "where request_id = 'it-old-acc'");
    char *ci = ol_test_shell_quote(db), extra[1400];
    snprintf(extra, sizeof(extra), "-X pg.conninfo=%s", ci);
    free(ci);
    start_gate(extra);
    reply_t r = http("GET", "/buy/it-old-acc", NULL);
    cr_assert_eq(r.status, 200, "%d %s\n%s", r.status, r.body, ol_test_bg_stderr(gate));
    cr_assert_str_eq(jstr(&r, "reponseMsg"), MSG_ACCEPTED);
    cr_assert_str_eq(jstr(&r, "holdID"), "h-it-old-acc");
    if (has_expiry)
        cr_assert_str_eq(jstr(&r, "expiresAt"), "2031-01-02T03:04:05.678Z");
    ol_test_reply_free(&r);
    r = http("GET", "/buy/it-old-rej", NULL);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert_str_eq(jstr(&r, "reponseMsg"), "Bad guy! Bye-Bye!");
    cr_assert_str_eq(jstr(&r, "reason"), "blacklisted");
    ol_test_reply_free(&r);
    r = http("GET", "/buy/it-old-none", NULL);
    cr_assert_eq(r.status, 404, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    stop_gate(true);
}

Test(gate, checkout_answers_the_order_or_why_not) {
    use_topics("checkout");
    start_gate("-X gate.wait.ms=20000");
    bg_post_t *ok = bg_post("/checkout", strdup("{\"userID\":\"u1\",\"goodsSKU\":\"A\",\"holdID\":\"h-r1\"}"));
    bg_post_t *no = bg_post("/checkout", strdup("{\"userID\":\"u2\",\"goodsSKU\":\"A\",\"holdID\":\"h-r2\"}"));
    wait_metric("orderlog_gate_waiting", 2, 20000);
    /* the CheckoutRequested records give the request ids the gate chose */
    json_t *recs = read_topic("buy-requests");
    cr_assert_eq(json_array_size(recs), 2);
    const char *rid2 = NULL;
    for (size_t i = 0; i < 2; i++) {
        json_t *rec = json_array_get(recs, i);
        cr_assert_str_eq(json_string_value(json_object_get(rec, "type")), "CheckoutRequested");
        if (!strcmp(dstr(rec, "hold_id"), "h-r2"))
            rid2 = dstr(rec, "request_id");
    }
    cr_assert(rid2);
    char lines[1024];
    snprintf(lines, sizeof(lines),
             "{\"type\":\"HoldConverted\",\"data\":{\"hold_id\":\"h-r1\",\"order_id\":\"o-h-r1\",\"user_id\":\"u1\","
             "\"sku\":\"A\",\"quantity\":1}}\n"
             "{\"type\":\"CheckoutRejected\",\"data\":{\"request_id\":\"%s\",\"hold_id\":\"h-r2\",\"user_id\":\"u2\","
             "\"sku\":\"A\",\"op\":\"checkout\",\"reason\":\"expired\"}}\n",
             rid2);
    publish(lines);
    reply_t a = bg_post_join(ok), b = bg_post_join(no);
    cr_assert_eq(a.status, 200, "%d %s", a.status, a.body);
    cr_assert_str_eq(jstr(&a, "orderID"), "o-h-r1");
    cr_assert_str_eq(jstr(&a, "holdID"), "h-r1");
    cr_assert(json_is_true(json_object_get(a.json, "repResult")), "%s", a.body);
    cr_assert_eq(b.status, 409, "%d %s", b.status, b.body);
    cr_assert_str_eq(jstr(&b, "reason"), "expired");
    cr_assert_str_eq(jstr(&b, "requestID"), rid2);
    cr_assert(json_is_false(json_object_get(b.json, "repResult")), "%s", b.body);
    json_decref(recs);
    ol_test_reply_free(&a);
    ol_test_reply_free(&b);
    cr_expect_eq(metric("orderlog_gate_rejected_total{endpoint=\"checkout\",reason=\"expired\"}"), 1);
    stop_gate(true);
}

Test(gate, holds_a_thousand_waiting_requests_at_once) {
    enum { N = 1000 };
    use_topics("many");
    start_gate("-X gate.wait.ms=60000 -X gate.ip.rate.per.second=0 -X gate.rate.per.second=0");
    static int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gate_port)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        struct timeval tv = {60, 0};
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        cr_assert_eq(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0, "connection %d", i);
        char rid[32], ip[32], *body, *req;
        snprintf(rid, sizeof(rid), "it-many-%d", i);
        snprintf(ip, sizeof(ip), "10.9.%d.%d", i / 250, i % 250);
        body = buy_body(rid, "u", ip, "A", 1);
        int n = asprintf(&req,
                         "POST /buy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(body), body);
        cr_assert_eq(send(fds[i], req, (size_t)n, MSG_NOSIGNAL), n);
        free(body);
        free(req);
    }
    wait_metric("orderlog_gate_waiting", N, 60000); /* all of them suspended, none answered */
    cr_assert_eq(metric("orderlog_gate_suspended_connections"), N);
    size_t cap = (size_t)N * 200, len = 0;
    char *lines = malloc(cap);
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(lines + len, cap - len,
                                "{\"type\":\"BuyRejected\",\"data\":{\"request_id\":\"it-many-%d\",\"user_id\":\"u\","
                                "\"sku\":\"A\",\"quantity\":1,\"reason\":\"sold_out\",\"message\":\"%s\"}}\n",
                                i, MSG_SOLD_OUT);
    publish(lines);
    free(lines);
    for (int i = 0; i < N; i++) {
        reply_t r = read_reply(fds[i]);
        close(fds[i]);
        char rid[32];
        snprintf(rid, sizeof(rid), "it-many-%d", i);
        cr_assert_eq(r.status, 200, "request %d: %d %s", i, r.status, r.body ? r.body : "");
        cr_assert_str_eq(jstr(&r, "requestID"), rid);
        cr_assert_str_eq(jstr(&r, "reason"), "sold_out");
        ol_test_reply_free(&r);
    }
    cr_expect_eq(metric("orderlog_gate_waiting"), 0);
    cr_expect_eq(metric("orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"rejected\"}"), N);
    stop_gate(true);
}

Test(gate, health_and_metrics) {
    use_topics("health");
    start_gate("-X gate.wait.ms=0");
    reply_t r = http("GET", "/healthz", NULL);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_assert_str_eq(jstr(&r, "status"), "ok");
    ol_test_reply_free(&r);
    long long before = metric("orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"pending\"}");
    cr_assert_eq(before, 0);
    r = post_buy(NULL, "u1", "10.0.0.1", "A", 1);
    cr_assert_eq(r.status, 202);
    ol_test_reply_free(&r);
    EXPECT_METRICS({"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"pending\"}", 1},
                   {"orderlog_gate_request_duration_seconds_count{endpoint=\"buy\"}", 1},
                   {"orderlog_gate_request_duration_seconds_bucket{endpoint=\"buy\",le=\"+Inf\"}", 1},
                   {"orderlog_gate_requests_total{endpoint=\"healthz\",outcome=\"ok\"}", 1});
    r = http("GET", "/metrics", NULL);
    cr_assert(strstr(r.headers, "Content-Type: text/plain"), "%s", r.headers);
    cr_assert(strstr(r.body, "# TYPE orderlog_gate_request_duration_seconds histogram"), "%s", r.body);
    ol_test_reply_free(&r);
    stop_gate(true);
}

Test(gate, sigterm_answers_waiting_requests_and_exits_0) {
    use_topics("sigterm");
    start_gate("-X gate.wait.ms=60000");
    bg_post_t *p = bg_post("/buy", buy_body("it-term-1", "u1", "10.0.0.1", "A", 1));
    wait_metric("orderlog_gate_waiting", 1, 20000);
    long long t0 = ol_test_now_ms();
    stop_gate(true);
    reply_t r = bg_post_join(p);
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    cr_assert_str_eq(jstr(&r, "status"), "pending");
    cr_assert_lt(ol_test_now_ms() - t0, 10000);
    ol_test_reply_free(&r);
    json_t *recs = read_topic("buy-requests");
    cr_assert_eq(json_array_size(recs), 1, "the request was written before the exit");
    json_decref(recs);
}

/* ---- framing and connections ---- */

/* What came back on a raw connection: every byte, and whether the gate
 * closed it (end of file or reset) before the deadline. */
typedef struct raw_s {
    char *data; /* new string */
    size_t len;
    bool closed;
    long long ms; /* from the send to the close, or to the deadline */
} raw_t;

static int raw_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gate_port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Reads from fd until the gate closes it or timeout_ms pass (fd stays open). */
static raw_t raw_read(int fd, long long t0, int timeout_ms) {
    raw_t x = {.data = malloc(65536)};
    long long end = t0 + timeout_ms;
    for (;;) {
        long long left = end - ol_test_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t n = recv(fd, x.data + x.len, 65535 - x.len, 0);
        if (n <= 0) {
            x.closed = true;
            break;
        }
        x.len += (size_t)n;
    }
    x.data[x.len] = '\0';
    x.ms = ol_test_now_ms() - t0;
    return x;
}

/* Sends bytes on a new connection and reads until the gate closes it. */
static raw_t raw_exchange(const void *bytes, size_t n, int timeout_ms) {
    int fd = raw_connect();
    long long t0 = ol_test_now_ms();
    cr_assert_eq(send(fd, bytes, n, MSG_NOSIGNAL), (ssize_t)n);
    raw_t x = raw_read(fd, t0, timeout_ms);
    close(fd);
    return x;
}

/* The answers in a raw stream: status lines at the start of the stream or
 * right after an answer's body. */
static int raw_answers(const raw_t *x, int *first_status, json_t **first_body, bool *close_header) {
    int n = 0;
    const char *p = x->data;
    while (p && !strncmp(p, "HTTP/1.", 7)) {
        int status = 0;
        sscanf(p, "HTTP/1.%*d %d", &status);
        const char *sep = strstr(p, "\r\n\r\n");
        if (!sep)
            break;
        const char *cl = strcasestr(p, "\r\nContent-Length:");
        size_t len = cl && cl < sep ? strtoul(cl + 17, NULL, 10) : 0;
        if (n == 0) {
            *first_status = status;
            *first_body = json_loadb(sep + 4, len, 0, NULL);
            *close_header = strcasestr(p, "\r\nConnection: close") && strcasestr(p, "\r\nConnection: close") < sep;
        }
        n++;
        p = sep + 4 + len;
    }
    return n;
}

/* Sends req raw and expects `answers` answers before timeout_ms, the first
 * with status; what names the case. */
static void expect_raw_answers(const char *req, int timeout_ms, int answers, int status, const char *what) {
    raw_t x = raw_exchange(req, strlen(req), timeout_ms);
    int first_status = 0;
    json_t *body = NULL;
    bool close_header = false;
    cr_expect_eq(raw_answers(&x, &first_status, &body, &close_header), answers, "%s: answers:\n%s", what, x.data);
    cr_expect_eq(first_status, status, "%s:\n%s", what, x.data);
    json_decref(body);
    free(x.data);
}

Test(gate, refuses_ambiguous_framing_with_400_json_and_closes) {
    use_topics("framing");
    start_gate("-X gate.wait.ms=0");
    /* each would be read one way by a proxy and another by a lenient server:
     * a request hidden after the first must never be answered */
    static const struct {
        const char *what, *request, *field, *reason;
    } cases[] = {
        {"two different Content-Length",
         "POST /buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 0\r\n"
         "Content-Length: 34\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
         "Content-Length", "content_length_repeated"},
        {"two equal Content-Length",
         "POST /buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
         "Content-Length: 2\r\n\r\n{}",
         "Content-Length", "content_length_repeated"},
        {"Content-Length with chunked",
         "POST /buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
         "Transfer-Encoding", "content_length_with_transfer_encoding"},
        {"Transfer-Encoding gzip",
         "POST /buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n"
         "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
         "Transfer-Encoding", "transfer_encoding_not_chunked"},
        {"Transfer-Encoding chunked twice",
         "POST /buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "Transfer-Encoding", "transfer_encoding_not_chunked"},
        {"Transfer-Encoding as a list",
         "POST /buy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: identity, chunked\r\n"
         "\r\n0\r\n\r\n",
         "Transfer-Encoding", "transfer_encoding_not_chunked"},
        {"Transfer-Encoding in HTTP/1.0",
         "POST /buy HTTP/1.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "Transfer-Encoding", "transfer_encoding_in_http10"},
        {"HTTP/1.1 without Host", "GET /healthz HTTP/1.1\r\n\r\n", "Host", "host_missing"},
        {"two Host", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "Host", "host_repeated"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        raw_t x = raw_exchange(cases[i].request, strlen(cases[i].request), 5000);
        int status = 0;
        json_t *body = NULL;
        bool close_header = false;
        int answers = raw_answers(&x, &status, &body, &close_header);
        cr_expect(x.closed, "%s: the connection is still open after %lld ms:\n%s", cases[i].what, x.ms, x.data);
        cr_expect_eq(answers, 1, "%s: %d answers:\n%s", cases[i].what, answers, x.data);
        cr_expect_eq(status, 400, "%s:\n%s", cases[i].what, x.data);
        cr_expect(close_header, "%s: no Connection: close:\n%s", cases[i].what, x.data);
        cr_expect(json_string_value(json_object_get(body, "error")), "%s: no JSON error:\n%s", cases[i].what, x.data);
        const char *field = json_string_value(json_object_get(body, "field"));
        cr_expect(field && !strcmp(field, cases[i].field), "%s: field %s:\n%s", cases[i].what, field, x.data);
        json_decref(body);
        free(x.data);
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char sample[200];
        snprintf(sample, sizeof(sample), "orderlog_gate_bad_framing_total{reason=\"%s\"}", cases[i].reason);
        long long want = 0;
        for (size_t j = 0; j < sizeof(cases) / sizeof(cases[0]); j++)
            want += !strcmp(cases[i].reason, cases[j].reason);
        cr_expect_eq(metric(sample), want, "%s", sample);
    }

    /* what stays fine: HTTP/1.0 without Host, one Content-Length, chunked
     * alone, and pipelined keep-alive requests */
    expect_raw_answers("GET /healthz HTTP/1.0\r\n\r\n", 5000, 1, 200, "HTTP/1.0 needs no Host");
    char *buy = buy_body("it-framing-10", "u1", "10.0.0.1", "A", 1), req[1024];
    snprintf(req, sizeof(req), "POST /buy HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(buy), buy);
    expect_raw_answers(req, 10000, 1, 202, "HTTP/1.0 POST /buy without Host");
    free(buy);
    reply_t r = post_buy("it-framing-11", "u2", "10.0.0.2", "A", 1);
    cr_expect_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    r = http_send("POST", "/buy", "Content-Type: application/json\r\n", "2\r\n{}\r\n0\r\n\r\n", 12, true);
    cr_expect_eq(r.status, 400, "chunked alone reaches validation: %d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "field"), "sessionID", "%s", r.body);
    ol_test_reply_free(&r);
    expect_raw_answers("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       10000, 3, 200, "three pipelined answers");
    stop_gate(true);
    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), 2, "only the two well-framed buys reach Kafka: %s", json_dumps(recs, 0));
    json_decref(recs);
}

/* The first record of a TLS handshake: a minimal ClientHello. Its random
 * holds no CR or LF, as many real ones: libmicrohttpd then never sees the
 * end of a "request line" and used to hold the connection until the idle
 * timeout. */
static const unsigned char client_hello[] = {
    0x16, 0x03, 0x01, 0x00, 0x2f,       /* handshake record, 47 bytes */
    0x01, 0x00, 0x00, 0x2b, 0x03, 0x03, /* ClientHello, 43 bytes, TLS 1.2 */
    'r',  'a',  'n',  'd',  'o',  'm',  'r', 'a', 'n', 'd', 'o', 'm', 'r', 'a', 'n', 'd', /* random */
    'o',  'm',  'r',  'a',  'n',  'd',  'o', 'm', 'r', 'a', 'n', 'd', 'o', 'm', 'r', 'a', /* */
    0x00, 0x00, 0x02, 0x13, 0x01, /* no session, one cipher suite */
    0x01, 0x00, 0x00, 0x00,       /* no compression, no extensions */
};

Test(gate, closes_a_tls_handshake_on_the_plain_port_at_once) {
    use_topics("tls");
    start_gate("-X gate.wait.ms=0 -X gate.idle.timeout.ms=60000");
    for (int i = 0; i < 3; i++) {
        raw_t x = raw_exchange(client_hello, sizeof(client_hello), 10000);
        cr_expect(x.closed, "attempt %d: the connection is still open after %lld ms", i, x.ms);
        cr_expect_lt(x.ms, 1000, "attempt %d: closed after %lld ms", i, x.ms);
        cr_expect_eq(x.len, 0, "attempt %d: the gate answered a TLS handshake:\n%s", i, x.data);
        fprintf(stderr, "TLS ClientHello on the plain port: closed after %lld ms\n", x.ms);
        free(x.data);
    }
    /* a real client: Python's ssl module */
    int expected = 3;
    char *out, *err;
    int rc = ol_test_runf(
        &out, &err,
        "command -v python3 >/dev/null || exit 77; exec python3 -c 'import socket, ssl, time\n"
        "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
        "s = socket.create_connection((\"127.0.0.1\", %d)); s.settimeout(30); t = time.monotonic()\n"
        "try:\n c.wrap_socket(s, server_hostname=\"gate\"); print(\"handshake done\")\n"
        "except (ssl.SSLError, OSError) as e:\n print(round((time.monotonic() - t) * 1000), type(e).__name__)\n'",
        gate_port);
    if (rc != 77) {
        cr_expect_eq(rc, 0, "%s%s", out, err);
        cr_expect(atoi(out) < 1000 && !strstr(out, "done") && !strstr(out, "timeout"), "python ssl: %s", out);
        fprintf(stderr, "python3 ssl handshake on the plain port: %s", out);
        expected++;
    }
    free(out);
    free(err);
    cr_expect_eq(metric("orderlog_gate_connections_dropped_total{reason=\"tls_handshake\"}"), expected);
    reply_t r = http("GET", "/healthz", NULL);
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    stop_gate(true);
}

Test(gate, closes_a_connection_without_request_headers_after_the_header_timeout) {
    use_topics("slow");
    start_gate("-X gate.wait.ms=0 -X gate.header.timeout.ms=1000 -X gate.idle.timeout.ms=60000");
    /* a request line and part of the headers, then nothing */
    int slow = raw_connect();
    long long t0 = ol_test_now_ms();
    const char *part = "GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Ag";
    cr_assert_eq(send(slow, part, strlen(part), MSG_NOSIGNAL), (ssize_t)strlen(part));
    /* a kept-alive connection idle after its first answer is not concerned */
    int kept = raw_connect();
    const char *get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    cr_assert_eq(send(kept, get, strlen(get), MSG_NOSIGNAL), (ssize_t)strlen(get));
    reply_t r = http("GET", "/healthz", NULL); /* others are answered meanwhile */
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_expect_lt(r.ms, 500);
    ol_test_reply_free(&r);
    raw_t x = raw_read(slow, t0, 10000);
    close(slow);
    cr_expect(x.closed, "still open after %lld ms", x.ms);
    cr_expect_geq(x.ms, 900, "closed after %lld ms, before gate.header.timeout.ms", x.ms);
    cr_expect_lt(x.ms, 4000, "closed after %lld ms: 1 s timeout, checked each second", x.ms);
    cr_expect_eq(x.len, 0, "%s", x.data);
    fprintf(stderr, "incomplete headers: closed after %lld ms (gate.header.timeout.ms=1000)\n", x.ms);
    free(x.data);
    x = raw_read(kept, ol_test_now_ms(), 200); /* its answer */
    cr_expect(!x.closed && strstr(x.data, "HTTP/1.1 200"), "%s", x.data);
    free(x.data);
    cr_assert_eq(send(kept, get, strlen(get), MSG_NOSIGNAL), (ssize_t)strlen(get));
    x = raw_read(kept, ol_test_now_ms(), 2000);
    cr_expect(!x.closed && strstr(x.data, "HTTP/1.1 200"), "the kept-alive connection, %lld ms later:\n%s",
              ol_test_now_ms() - t0, x.data);
    free(x.data);
    close(kept);
    cr_expect_eq(metric("orderlog_gate_connections_dropped_total{reason=\"header_timeout\"}"), 1);
    stop_gate(true);
}

/* ---- lookups past the cache ---- */

/* A scratch database with the projection's tables; its conninfo in db. */
/* A session holding buy_decisions locked as a rebuild's swap does. */
static PGconn *lock_decisions(void) {
    PGconn *conn = PQconnectdb(db);
    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
    PGresult *res = PQexec(conn, "BEGIN; LOCK TABLE orderlog.buy_decisions IN ACCESS EXCLUSIVE MODE");
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQerrorMessage(conn));
    PQclear(res);
    return conn;
}

static void unlock_decisions(PGconn *conn) {
    PQclear(PQexec(conn, "COMMIT"));
    PQfinish(conn);
}

/* Clients polling GET /buy/<unknown id> in a loop until told to stop. */
typedef struct poller_s {
    pthread_t thread;
    int n;
    atomic_bool *stop;
    int polls, unavailable, other;
    long long slowest_ms;
    char last[256];
} poller_t;

static void *poller_main(void *arg) {
    poller_t *p = arg;
    for (int i = 0; !atomic_load(p->stop); i++) {
        char path[64];
        snprintf(path, sizeof(path), "/buy/it-unknown-%d-%d", p->n, i);
        reply_t r = http("GET", path, NULL);
        p->polls++;
        if (r.status == 503)
            p->unavailable++;
        else
            p->other++;
        if (r.ms > p->slowest_ms)
            p->slowest_ms = r.ms;
        snprintf(p->last, sizeof(p->last), "%d %s", r.status, r.body ? r.body : "");
        ol_test_reply_free(&r);
    }
    return NULL;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

Test(gate, lookups_blocked_in_postgresql_never_slow_the_http_threads) {
    enum { POLLERS = 4, PROBES = 200, TIMEOUT_MS = 1000 };
    use_topics("lookup");
    ol_test_pg_migrated_db("gate", db, sizeof(db));
    char extra[1400];
    char *ci = ol_test_shell_quote(db);
    snprintf(extra, sizeof(extra), "-X pg.conninfo=%s -X gate.lookup.timeout.ms=%d -X gate.rate.per.second=0", ci,
             TIMEOUT_MS);
    free(ci);
    start_gate(extra);
    reply_t r = http("GET", "/buy/it-warm", NULL); /* the lookup threads connected */
    cr_assert_eq(r.status, 404, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);

    PGconn *lock = lock_decisions();
    atomic_bool stop = false;
    poller_t pollers[POLLERS];
    for (int i = 0; i < POLLERS; i++) {
        pollers[i] = (poller_t){.n = i, .stop = &stop};
        cr_assert_eq(pthread_create(&pollers[i].thread, NULL, poller_main, &pollers[i]), 0);
    }
    wait_metric("orderlog_gate_lookups_running", 2, 10000); /* lookups wait on the lock */
    static long long ms[PROBES];
    for (int i = 0; i < PROBES; i++) {
        r = http("GET", "/healthz", NULL);
        cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
        ms[i] = r.ms;
        ol_test_reply_free(&r);
        usleep(10000);
    }
    atomic_store(&stop, true);
    int polls = 0;
    for (int i = 0; i < POLLERS; i++) {
        pthread_join(pollers[i].thread, NULL);
        polls += pollers[i].polls;
        cr_expect_eq(pollers[i].other, 0, "poller %d got other than 503: %s", i, pollers[i].last);
        cr_expect_lt(pollers[i].slowest_ms, TIMEOUT_MS + 1000, "poller %d waited %lld ms", i, pollers[i].slowest_ms);
        cr_expect_geq(pollers[i].slowest_ms, TIMEOUT_MS - 100, "poller %d: answered before the timeout", i);
    }
    qsort(ms, PROBES, sizeof(ms[0]), cmp_ll);
    long long p99 = ms[PROBES * 99 / 100 - 1];
    fprintf(stderr,
            "/healthz with buy_decisions locked and %d clients polling unknown ids: p50 %lld ms, p99 %lld ms, "
            "max %lld ms over %d probes; %d polls answered 503\n",
            POLLERS, ms[PROBES / 2], p99, ms[PROBES - 1], PROBES, polls);
    cr_expect_lt(p99, 50, "/healthz p99 %lld ms while the lookups wait on the lock", p99);
    cr_expect_geq(metric("orderlog_gate_lookups_total{outcome=\"timeout\"}"), polls - POLLERS);

    /* the lock released: unknown ids are 404 again, at once */
    unlock_decisions(lock);
    r = http("GET", "/buy/it-after-lock", NULL);
    cr_expect_eq(r.status, 404, "%d %s", r.status, r.body);
    cr_expect_lt(r.ms, 1000);
    ol_test_reply_free(&r);
    /* PostgreSQL drops the gate's sessions (a restart): the next lookups reconnect */
    ol_test_pg_exec(db, "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() "
                        "and pid <> pg_backend_pid()");
    ol_test_pg_exec(db,
                    "insert into orderlog.buy_decisions (request_id, user_id, sku, quantity, outcome, reason, "
                    "message, hold_id, decided_at) values "
                    "('it-lookup-rej', 'u2', 'A', 1, 'rejected', 'sold_out', 'The goods is sold out!', null, now())");
    for (int i = 0; i < 3; i++) {
        r = http("GET", "/buy/it-lookup-rej", NULL);
        cr_expect_eq(r.status, 200, "after the sessions were dropped: %d %s", r.status, r.body);
        cr_expect_str_eq(jstr(&r, "reason"), "sold_out", "%s", r.body);
        ol_test_reply_free(&r);
    }
    stop_gate(true);
}

typedef struct bg_get_s {
    pthread_t thread;
    char path[64];
    reply_t reply;
} bg_get_t;

static void *bg_get_main(void *arg) {
    bg_get_t *p = arg;
    p->reply = http("GET", p->path, NULL);
    return NULL;
}

Test(gate, lookups_beyond_the_queue_get_503_at_once_and_shutdown_answers_the_rest) {
    use_topics("lookupq");
    ol_test_pg_migrated_db("gate", db, sizeof(db));
    char extra[1400];
    char *ci = ol_test_shell_quote(db);
    snprintf(extra, sizeof(extra),
             "-X pg.conninfo=%s -X gate.lookup.threads=1 -X gate.lookup.max.queued=1 -X gate.lookup.timeout.ms=30000",
             ci);
    free(ci);
    start_gate(extra);
    PGconn *lock = lock_decisions();
    bg_get_t gets[2];
    for (int i = 0; i < 2; i++) {
        snprintf(gets[i].path, sizeof(gets[i].path), "/buy/it-held-%d", i);
        cr_assert_eq(pthread_create(&gets[i].thread, NULL, bg_get_main, &gets[i]), 0);
        /* one runs (waits on the lock), then one waits in the queue */
        wait_metric(i ? "orderlog_gate_lookups_queued" : "orderlog_gate_lookups_running", 1, 10000);
    }
    reply_t r = http("GET", "/buy/it-one-too-many", NULL);
    cr_expect_eq(r.status, 503, "%d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "error"), "too many lookups, try again", "%s", r.body);
    cr_expect_lt(r.ms, 1000, "answered after %lld ms", r.ms);
    ol_test_reply_free(&r);
    cr_expect_eq(metric("orderlog_gate_lookups_total{outcome=\"queue_full\"}"), 1);

    /* SIGTERM: both answered now, not after gate.lookup.timeout.ms; the
     * query waiting on the lock is cancelled so the gate exits at once */
    long long t0 = ol_test_now_ms();
    stop_gate(true);
    for (int i = 0; i < 2; i++) {
        pthread_join(gets[i].thread, NULL);
        cr_expect_eq(gets[i].reply.status, 503, "%s: %d %s", gets[i].path, gets[i].reply.status, gets[i].reply.body);
        cr_expect_str_eq(jstr(&gets[i].reply, "error"), "shutting down", "%s", gets[i].reply.body);
        ol_test_reply_free(&gets[i].reply);
    }
    long long took = ol_test_now_ms() - t0;
    cr_expect_lt(took, 10000, "the gate took %lld ms to stop", took);
    unlock_decisions(lock);
}

/* Lookups waiting for the thread are read together (one query for up to
 * 64): each still gets its own answer. */
Test(gate, lookups_read_together_each_get_their_own_answer) {
    enum { KNOWN = 20, UNKNOWN = 10, N = KNOWN + UNKNOWN };
    use_topics("lookupb");
    ol_test_pg_migrated_db("gate", db, sizeof(db));
    char sql[256];
    for (int i = 0; i < KNOWN; i++) {
        snprintf(sql, sizeof(sql),
                 "insert into orderlog.buy_decisions (request_id, user_id, sku, quantity, outcome, reason, message, "
                 "hold_id, decided_at) values ('it-batch-%d', 'u', 'A', 1, %s, now())",
                 i, i % 2 ? "'rejected', 'limit', null, null" : "'accepted', null, null, 'h-it-batch'");
        ol_test_pg_exec(db, sql);
    }
    char extra[1400];
    char *ci = ol_test_shell_quote(db);
    snprintf(extra, sizeof(extra), "-X pg.conninfo=%s -X gate.lookup.threads=1 -X gate.lookup.timeout.ms=30000", ci);
    free(ci);
    start_gate(extra);
    PGconn *lock = lock_decisions();
    static bg_get_t gets[N];
    for (int i = 0; i < N; i++)
        snprintf(gets[i].path, sizeof(gets[i].path), i < KNOWN ? "/buy/it-batch-%d" : "/buy/it-nobatch-%d", i);
    /* the first waits on the lock in the one lookup thread, so the others
     * queue behind it and are read together once it is let go (sent all at
     * once, they may all be taken in the thread's first batch: CI saw
     * none queued) */
    cr_assert_eq(pthread_create(&gets[0].thread, NULL, bg_get_main, &gets[0]), 0);
    long long end = ol_test_now_ms() + 20000, held;
    while (metric("orderlog_gate_lookups_running") < 1) {
        cr_assert(ol_test_now_ms() < end, "the first lookup is not running after 20 s");
        usleep(20000);
    }
    for (int i = 1; i < N; i++)
        cr_assert_eq(pthread_create(&gets[i].thread, NULL, bg_get_main, &gets[i]), 0);
    while ((held = metric("orderlog_gate_lookups_running") + metric("orderlog_gate_lookups_queued")) < N) {
        cr_assert(ol_test_now_ms() < end, "%lld lookups held after 20 s, expected %d", held, N);
        usleep(20000);
    }
    cr_expect_eq(metric("orderlog_gate_lookups_queued"), N - 1);
    unlock_decisions(lock);
    for (int i = 0; i < N; i++) {
        pthread_join(gets[i].thread, NULL);
        reply_t *r = &gets[i].reply;
        if (i < KNOWN) {
            char rid[32];
            snprintf(rid, sizeof(rid), "it-batch-%d", i);
            cr_expect_eq(r->status, 200, "%s: %d %s", gets[i].path, r->status, r->body);
            cr_expect_str_eq(jstr(r, "requestID"), rid, "%s", r->body);
            cr_expect_str_eq(jstr(r, "reponseMsg"), i % 2 ? "You can not buy this goods!" : MSG_ACCEPTED, "%s",
                             r->body);
        } else {
            cr_expect_eq(r->status, 404, "%s: %d %s", gets[i].path, r->status, r->body);
        }
        ol_test_reply_free(r);
    }
    cr_expect_eq(metric("orderlog_gate_lookups_total{outcome=\"found\"}"), KNOWN);
    cr_expect_eq(metric("orderlog_gate_lookups_total{outcome=\"not_found\"}"), UNKNOWN);
    stop_gate(true);
}

/* ---- end to end, through the decider ---- */

Test(gate, sells_the_last_unit_once_through_the_decider) {
    ol_test_bg_t *decide = start_sale("e2e", 1);
    start_gate("-X gate.wait.ms=30000");
    reply_t a = post_buy("it-e2e-1", "u1", "10.0.0.1", "A", 1);
    cr_assert_eq(a.status, 200, "%d %s\ndecide:\n%s", a.status, a.body, ol_test_bg_stderr(decide));
    cr_assert_str_eq(jstr(&a, "reponseMsg"), MSG_ACCEPTED, "%s", a.body);
    cr_assert_str_eq(jstr(&a, "holdID"), "h-it-e2e-1");
    cr_assert(strcmp(jstr(&a, "expiresAt"), "(none)"), "%s", a.body);
    reply_t b = post_buy("it-e2e-2", "u2", "10.0.0.2", "A", 1);
    cr_assert_eq(b.status, 200, "%d %s", b.status, b.body);
    cr_assert_str_eq(jstr(&b, "reponseMsg"), MSG_SOLD_OUT);
    cr_assert_str_eq(jstr(&b, "reason"), "sold_out");
    reply_t c = http("POST", "/checkout", "{\"userID\":\"u1\",\"goodsSKU\":\"A\",\"holdID\":\"h-it-e2e-1\"}");
    cr_assert_eq(c.status, 200, "%d %s", c.status, c.body);
    cr_assert_str_eq(jstr(&c, "orderID"), "o-h-it-e2e-1");
    reply_t d = http("POST", "/checkout", "{\"userID\":\"u1\",\"goodsSKU\":\"A\",\"holdID\":\"h-it-e2e-1\"}");
    cr_assert_eq(d.status, 409, "%d %s", d.status, d.body);
    cr_assert_str_eq(jstr(&d, "reason"), "converted");
    ol_test_reply_free(&a);
    ol_test_reply_free(&b);
    ol_test_reply_free(&c);
    ol_test_reply_free(&d);
    stop_gate(true);
    ol_test_bg_signal(decide, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(decide, 30000), 0, "%s", ol_test_bg_stderr(decide));
    ol_test_bg_free(decide);
}
