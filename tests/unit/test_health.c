/* The client side of /healthz and /readyz: the HTTP answer parser, the
 * bounded GET (against our own endpoint, a closed port, a silent server and
 * servers answering garbage), the status.endpoints list, the judging of
 * answers, and asking many endpoints at once. No broker needed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/base/health.h"
#include "common/base/http.h"
#include "common/base/time.h"
#include "testutil.h"
#include "../fake_http.h"

/* ---- the parser ------------------------------------------------------------ */

typedef struct parsed_s {
    ol_err_t err;
    bool done;
    ol_http_reply_t reply;
    char errstr[256];
} parsed_t;

static parsed_t parse(const char *buf, size_t len, bool closed) {
    parsed_t p = {0};
    p.err = ol_http_parse_reply(buf, len, closed, &p.done, &p.reply, p.errstr, sizeof(p.errstr));
    return p;
}

static parsed_t parse_str(const char *s, bool closed) {
    return parse(s, strlen(s), closed);
}

Test(http_reply, takes_content_length_bytes_and_no_more) {
    const char *text = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\ncontent-length:  7 \r\n"
                       "\r\n{\"a\":1}trailing";
    parsed_t p = parse_str(text, false);
    cr_assert_eq(p.err, OL_ERR_OK, "%s", p.errstr);
    cr_assert(p.done);
    cr_expect_eq(p.reply.status, 503);
    cr_expect_eq(p.reply.body_len, 7);
    cr_expect_str_eq(p.reply.body, "{\"a\":1}");
    ol_http_reply_clear(&p.reply);
    cr_expect(p.reply.body == NULL);
}

Test(http_reply, is_not_done_before_the_last_byte) {
    const char *text = "HTTP/1.0 200 OK\nContent-Length: 5\n\nhello";
    size_t len = strlen(text);
    for (size_t n = 0; n < len; n++) {
        parsed_t p = parse(text, n, false);
        cr_assert_eq(p.err, OL_ERR_OK, "after %zu bytes: %s", n, p.errstr);
        cr_assert(!p.done, "done after %zu of %zu bytes", n, len);
    }
    parsed_t p = parse(text, len, false);
    cr_assert(p.done && p.reply.status == 200 && !strcmp(p.reply.body, "hello"));
    ol_http_reply_clear(&p.reply);
}

Test(http_reply, without_content_length_reads_to_the_close) {
    const char *text = "HTTP/1.1 200 OK\r\n\r\nabc\0def";
    parsed_t p = parse(text, 26, false);
    cr_assert_eq(p.err, OL_ERR_OK);
    cr_expect(!p.done, "the body may go on until the server closes");
    p = parse(text, 26, true);
    cr_assert(p.done);
    cr_expect_eq(p.reply.body_len, 7, "a NUL in the body is kept");
    cr_expect(!memcmp(p.reply.body, "abc\0def", 8));
    ol_http_reply_clear(&p.reply);
}

Test(http_reply, says_what_is_wrong_with_a_malformed_answer) {
    static const struct {
        const char *text;
        bool closed;
        ol_err_t err;
        const char *msg;
    } cases[] = {
        {"", true, OL_ERR_INVALID, "the connection closed without an answer"},
        {"\x01garbage\xff", false, OL_ERR_INVALID, "not an HTTP/1.x answer: it starts with \"\\x01garbage\\xff\""},
        {"HTT", false, OL_ERR_OK, NULL}, /* a prefix of HTTP/1.: wait for more */
        {"HTTX", false, OL_ERR_INVALID, "not an HTTP/1.x answer: it starts with \"HTTX\""},
        {"HTTP/2 200\r\n\r\n", false, OL_ERR_INVALID, "not an HTTP/1.x answer"},
        {"HTTP/1.1 20 OK\r\n\r\n", false, OL_ERR_INVALID, "malformed status line \"HTTP/1.1 20 OK\\x0d\""},
        {"HTTP/1.1 999 Huh\r\n\r\n", false, OL_ERR_INVALID, "malformed status line"},
        {"HTTP/1.1 200", true, OL_ERR_INVALID, "the connection closed amid the headers"},
        {"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", false, OL_ERR_INVALID, "malformed header line \"no colon here\""},
        {"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n", false, OL_ERR_INVALID, "malformed Content-Length \"12x\""},
        {"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", false, OL_ERR_INVALID, "malformed Content-Length"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", false, OL_ERR_INVALID,
         "malformed Content-Length \"3\""},
        {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", false, OL_ERR_TOO_LARGE,
         "a body of 99999999999999999999 bytes, more than 65536"},
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true, OL_ERR_INVALID,
         "the connection closed after 3 of 10 bytes of body"},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false, OL_ERR_UNSUPPORTED,
         "a body in Transfer-Encoding \"chunked\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parsed_t p = parse_str(cases[i].text, cases[i].closed);
        cr_expect_eq(p.err, cases[i].err, "case %zu: %s -> %s", i, cases[i].text, p.errstr);
        cr_expect(!p.done, "case %zu is done", i);
        if (cases[i].msg)
            cr_expect(strstr(p.errstr, cases[i].msg), "case %zu: \"%s\", not \"%s\"", i, p.errstr, cases[i].msg);
    }
}

Test(http_reply, bounds_the_head_and_the_body) {
    size_t n = OL_HTTP_HEAD_MAX_BYTES + OL_HTTP_BODY_MAX_BYTES + 100;
    char *buf = malloc(n);
    /* headers that never end */
    memcpy(buf, "HTTP/1.1 200 OK\r\n", 17);
    for (size_t i = 17; i < n; i += 8)
        memcpy(buf + i, "X-A: b\r\n", i + 8 <= n ? 8 : n - i);
    parsed_t p = parse(buf, OL_HTTP_HEAD_MAX_BYTES + 20, false);
    cr_expect_eq(p.err, OL_ERR_TOO_LARGE, "%s", p.errstr);
    /* a body without Content-Length past the bound */
    int h = snprintf(buf, n, "HTTP/1.1 200 OK\r\n\r\n");
    memset(buf + h, 'x', n - (size_t)h);
    p = parse(buf, (size_t)h + OL_HTTP_BODY_MAX_BYTES, true);
    cr_expect_eq(p.err, OL_ERR_OK, "exactly the bound: %s", p.errstr);
    cr_expect(p.done && p.reply.body_len == OL_HTTP_BODY_MAX_BYTES);
    ol_http_reply_clear(&p.reply);
    p = parse(buf, (size_t)h + OL_HTTP_BODY_MAX_BYTES + 1, false);
    cr_expect_eq(p.err, OL_ERR_TOO_LARGE, "%s", p.errstr);
    cr_expect_str_eq(p.errstr, "a body longer than 65536 bytes");
    free(buf);
}

/* ---- fake servers ------------------------------------------------------------ */

static char *addr_of(unsigned port) {
    static char buf[4][64];
    static int n;
    char *a = buf[n++ % 4];
    snprintf(a, sizeof(buf[0]), "127.0.0.1:%u", port);
    return a;
}

/* ---- GET ----------------------------------------------------------------------- */

static bool ready = true;

static bool ready_check(void *opaque, json_t *checks) {
    (void)opaque;
    return ol_http_check(checks, "partitions", ready, "%d assigned", ready ? 3 : 0);
}

Test(http_get, asks_our_own_endpoint) {
    ol_http_t *h;
    char errstr[256];
    ol_http_conf_t conf = {.listen = "127.0.0.1:0", .readyz = ready_check};
    cr_assert_eq(ol_http_start(&conf, &h, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    ol_http_reply_t r;
    cr_assert_eq(ol_http_get(ol_http_address(h), "/readyz", 2000, &r, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.body, "\"status\":\"ok\""), "%s", r.body);
    ol_http_reply_clear(&r);
    ready = false;
    cr_assert_eq(ol_http_get(ol_http_address(h), "/readyz", 2000, &r, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(r.status, 503);
    cr_expect(strstr(r.body, "\"reason\":\"partitions: 0 assigned\""), "%s", r.body);
    ol_http_reply_clear(&r);
    cr_assert_eq(ol_http_get(ol_http_address(h), "/nope", 2000, &r, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(r.status, 404);
    ol_http_reply_clear(&r);
    ol_http_stop(h);
}

Test(http_get, reports_a_closed_port_as_refused) {
    ol_http_reply_t r;
    char errstr[256];
    cr_expect_eq(ol_http_get(addr_of(closed_port()), "/healthz", 2000, &r, errstr, sizeof(errstr)), OL_ERR_UNREACHABLE);
    cr_expect_str_eq(errstr, "connection refused");
    cr_expect(r.body == NULL);
}

Test(http_get, gives_up_on_a_silent_server_at_its_timeout) {
    fake_t f;
    fake_start(&f, NULL, 0, 0);
    ol_http_reply_t r;
    char errstr[256];
    int64_t t0 = ol_time_mono_us();
    cr_expect_eq(ol_http_get(addr_of(f.port), "/healthz", 300, &r, errstr, sizeof(errstr)), OL_ERR_TIMEOUT);
    int64_t took_ms = (ol_time_mono_us() - t0) / 1000;
    cr_expect_str_eq(errstr, "no whole answer within 300 ms");
    cr_expect(took_ms >= 290 && took_ms < 2000, "took %lld ms for a 300 ms timeout", (long long)took_ms);
    fake_stop(&f);
}

Test(http_get, reports_garbage_and_a_cut_answer) {
    static const char garbage[] = "\x00\x01 not http at all\r\n\r\n";
    fake_t f;
    fake_start(&f, garbage, sizeof(garbage) - 1, 1);
    ol_http_reply_t r;
    char errstr[256];
    cr_expect_eq(ol_http_get(addr_of(f.port), "/healthz", 2000, &r, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "not an HTTP/1.x answer: it starts with \"\\x00\\x01 not http"), "%s", errstr);
    fake_stop(&f);
    static const char cut[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"status\":";
    fake_start(&f, cut, sizeof(cut) - 1, 1);
    cr_expect_eq(ol_http_get(addr_of(f.port), "/healthz", 2000, &r, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect_str_eq(errstr, "the connection closed after 10 of 100 bytes of body");
    fake_stop(&f);
}

Test(http_get, refuses_a_bad_address) {
    ol_http_reply_t r;
    char errstr[256];
    cr_expect_eq(ol_http_get("nowhere", "/healthz", 100, &r, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect_str_eq(errstr, "address \"nowhere\": expected host:port");
    cr_expect_eq(ol_http_get("127.0.0.1:http", "/healthz", 100, &r, errstr, sizeof(errstr)), OL_ERR_CONFIG);
}

/* ---- the list of endpoints ---------------------------------------------------- */

Test(health, parses_named_and_unnamed_endpoints) {
    ol_health_endpoint_t *eps;
    size_t n;
    char errstr[256];
    cr_assert_eq(ol_health_parse_endpoints("status.endpoints",
                                           " gate=127.0.0.1:18080, ,decide=localhost:18081,"
                                           "[::1]:18082 ,v6=[fe80::1%lo]:9",
                                           &eps, &n, errstr, sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    cr_assert_eq(n, 4);
    cr_expect_str_eq(eps[0].name, "gate");
    cr_expect_str_eq(eps[0].address, "127.0.0.1:18080");
    cr_expect_str_eq(eps[1].name, "decide");
    cr_expect_str_eq(eps[1].address, "localhost:18081");
    cr_expect_str_eq(eps[2].name, "");
    cr_expect_str_eq(eps[2].address, "[::1]:18082");
    cr_expect_str_eq(eps[3].address, "[fe80::1%lo]:9");
    free(eps);
    cr_assert_eq(ol_health_parse_endpoints("status.endpoints", " , ", &eps, &n, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_expect(n == 0 && eps == NULL);
}

Test(health, says_which_endpoint_is_not_of_the_form) {
    static const olt_case_t cases[] = {
        {"a=127.0.0.1:1,b=nowhere", "status.endpoints: \"b=nowhere\": expected [name=]host:port"},
        {"x=127.0.0.1:0", "status.endpoints: \"x=127.0.0.1:0\": the port is not a number from 1 to 65535"},
        {"x=127.0.0.1:65536", "the port is not a number from 1 to 65535"},
        {"x=127.0.0.1:80a", "the port is not a number from 1 to 65535"},
        {"::1:80", "status.endpoints: \"::1:80\": an IPv6 address goes in brackets: [addr]:port"},
        {"[::1:80", "expected [v6 address]:port"},
        {"bad name=127.0.0.1:80", "a name is 1 to 63 letters, digits, '.', '_' or '-'"},
        {"=127.0.0.1:80", "a name is 1 to 63 letters"},
        {"a=:80", "expected [name=]host:port"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ol_health_endpoint_t *eps = (void *)1;
        size_t n = 1;
        char errstr[256] = "";
        cr_expect_eq(ol_health_parse_endpoints("status.endpoints", cases[i].in, &eps, &n, errstr, sizeof(errstr)),
                     OL_ERR_CONFIG, "%s", cases[i].in);
        cr_expect(eps == NULL && n == 0);
        cr_expect(strstr(errstr, cases[i].want), "%s: \"%s\", not \"%s\"", cases[i].in, errstr, cases[i].want);
    }
    char many[4096] = "";
    for (int i = 0; i <= OL_HEALTH_MAX_ENDPOINTS; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "127.0.0.1:%d,", 1000 + i);
    ol_health_endpoint_t *eps;
    size_t n;
    char errstr[256];
    cr_expect_eq(ol_health_parse_endpoints("status.endpoints", many, &eps, &n, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect_str_eq(errstr, "status.endpoints: more than 64 endpoints");
}

/* ---- judging ------------------------------------------------------------------ */

static ol_health_answer_t judge(int status, const char *body) {
    ol_http_reply_t r = {.status = status, .body = (char *)body, .body_len = strlen(body)};
    ol_health_answer_t a;
    ol_health_judge(OL_ERR_OK, "", &r, &a);
    return a;
}

Test(health, judges_answers) {
    ol_health_answer_t a = judge(200, "{\"status\":\"ok\",\"checks\":{}}");
    cr_expect_eq(a.state, OL_HEALTH_OK);
    cr_expect_str_eq(a.reason, "");
    a = judge(503, "{\"status\":\"unavailable\",\"reason\":\"kafka: cluster not answering\",\"checks\":{}}");
    cr_expect_eq(a.state, OL_HEALTH_UNAVAILABLE);
    cr_expect_eq(a.http_status, 503);
    cr_expect_str_eq(a.reason, "kafka: cluster not answering");
    a = judge(503, "{\"status\":\"unavailable\"}");
    cr_expect_str_eq(a.reason, "unavailable");
    a = judge(503, "<html>\nbusy</html>");
    cr_expect_eq(a.state, OL_HEALTH_UNAVAILABLE);
    cr_expect_str_eq(a.reason, "the body is not JSON: <html>\\x0abusy</html>");
    a = judge(200, "OK");
    cr_expect_eq(a.state, OL_HEALTH_MALFORMED);
    cr_expect_str_eq(a.reason, "200 but the body is not JSON: OK");
    a = judge(200, "{\"status\":\"unavailable\"}");
    cr_expect_eq(a.state, OL_HEALTH_MALFORMED);
    a = judge(404, "{\"error\":\"no such resource\"}");
    cr_expect_eq(a.state, OL_HEALTH_MALFORMED);
    cr_expect_str_eq(a.reason, "HTTP 404: no such resource");

    ol_http_reply_t none = {0};
    ol_health_judge(OL_ERR_UNREACHABLE, "connection refused", &none, &a);
    cr_expect(a.state == OL_HEALTH_UNREACHABLE && a.http_status == 0 && !strcmp(a.reason, "connection refused"));
    ol_health_judge(OL_ERR_TIMEOUT, "no whole answer within 500 ms", &none, &a);
    cr_expect_eq(a.state, OL_HEALTH_TIMEOUT);
    ol_health_judge(OL_ERR_INVALID, "not an HTTP/1.x answer", &none, &a);
    cr_expect_eq(a.state, OL_HEALTH_MALFORMED);
    ol_health_judge(OL_ERR_TOO_LARGE, "a body longer than 65536 bytes", &none, &a);
    cr_expect_eq(a.state, OL_HEALTH_MALFORMED);
    cr_expect_str_eq(ol_health_state_name(OL_HEALTH_TIMEOUT), "timeout");
}

/* ---- asking ------------------------------------------------------------------- */

Test(health, asks_every_endpoint_at_once_within_the_timeout) {
    ol_http_t *h;
    char errstr[256];
    ready = false;
    ol_http_conf_t conf = {.listen = "127.0.0.1:0", .readyz = ready_check};
    cr_assert_eq(ol_http_start(&conf, &h, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    fake_t silent[2], garbage;
    fake_start(&silent[0], NULL, 0, 0);
    fake_start(&silent[1], NULL, 0, 0);
    fake_start(&garbage, "SSH-2.0-OpenSSH\r\n", 17, 2);
    char list[512];
    snprintf(list, sizeof(list), "role=%s,closed=%s,s1=%s,s2=%s,garbage=%s", ol_http_address(h), addr_of(closed_port()),
             addr_of(silent[0].port), addr_of(silent[1].port), addr_of(garbage.port));
    ol_health_endpoint_t *eps;
    size_t n;
    cr_assert_eq(ol_health_parse_endpoints("status.endpoints", list, &eps, &n, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(n, 5);
    int64_t t0 = ol_time_mono_us();
    ol_health_probe_wait(ol_health_probe_start(eps, n, 400));
    int64_t took_ms = (ol_time_mono_us() - t0) / 1000;
    /* one after the other, the four silent asks alone would take 1600 ms */
    cr_expect(took_ms >= 390 && took_ms < 1200, "took %lld ms", (long long)took_ms);
    cr_expect_eq(eps[0].healthz.state, OL_HEALTH_OK);
    cr_expect_eq(eps[0].readyz.state, OL_HEALTH_UNAVAILABLE);
    cr_expect_str_eq(eps[0].readyz.reason, "partitions: 0 assigned");
    cr_expect_eq(eps[1].healthz.state, OL_HEALTH_UNREACHABLE);
    cr_expect_str_eq(eps[1].readyz.reason, "connection refused");
    for (int i = 2; i < 4; i++) {
        cr_expect_eq(eps[i].healthz.state, OL_HEALTH_TIMEOUT);
        cr_expect_eq(eps[i].readyz.state, OL_HEALTH_TIMEOUT);
        cr_expect_geq(eps[i].readyz.took_ms, 390);
    }
    cr_expect_eq(eps[4].healthz.state, OL_HEALTH_MALFORMED);
    cr_expect_str_eq(eps[4].readyz.reason, "not an HTTP/1.x answer: it starts with \"SSH-2.0-OpenSSH\\x0d\\x0a\"");
    free(eps);
    fake_stop(&garbage);
    fake_stop(&silent[0]);
    fake_stop(&silent[1]);
    ol_http_stop(h);
    ready = true;
}
