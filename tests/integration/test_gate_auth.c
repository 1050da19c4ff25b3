/* orderlog gate with authentication (gate.auth) against the real broker
 * (and PostgreSQL for GET past the cache), met from the outside: requests
 * with curl, tokens made by openssl in a shell (header and claims in
 * base64url, signed with `openssl dgst -sign`), not by the libjwt the gate
 * verifies with. What reaches buy-requests is read with `orderlog tail`.
 *
 * jwt: no token 401, a token of another key or expired 401, a forged user or
 * level in the body 403 and nothing on Kafka, a valid token 202 with the
 * token's user and level in the BuyRequested; another user's hold, decision
 * and request id refused (with `orderlog decide` deciding). header: the
 * proxy's headers believed from a trusted peer only. A key file that cannot
 * be used stops the gate at start, naming the property.
 *
 * Topics it_gate_auth_<tag>_<pid>_; the gate on a free port. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GATE_KIT_STEM "it_gate_auth_"
#include "gate_kit.h"
#include "helpers.h"

#define ISSUER "https://id.example"
#define AUDIENCE "orderlog-gate"

TestSuite(gate_auth, .init = gate_kit_setup, .fini = gate_kit_teardown, .timeout = 300);

/* A fixture's path, quoted for sh (new string). */
static char *fixture_q(const char *name) {
    const char *root = getenv("ORDERLOG_FIXTURES");
    cr_assert(root, "ORDERLOG_FIXTURES is not set: run through ctest");
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", root, name);
    return ol_test_shell_quote(path);
}

/* The -X options of a gate that verifies RS256 tokens of rsa.pub.pem. */
static const char *jwt_opts(const char *more) {
    static char opts[2048];
    char *key = fixture_q("auth/rsa.pub.pem");
    snprintf(opts, sizeof(opts),
             "-X gate.auth=jwt -X gate.auth.jwt.key.file=%s -X gate.auth.jwt.issuer=" ISSUER
             " -X gate.auth.jwt.audience=" AUDIENCE " %s",
             key, more ? more : "");
    free(key);
    return opts;
}

/* ---- tokens, made by openssl ---- */

/* A JWT of header and claims (JSON texts) signed RS256 with a fixture's
 * private key (key NULL: no signature, for alg none); a new string. */
static char *openssl_token(const char *header, const char *claims, const char *key) {
    char *h = ol_test_shell_quote(header), *c = ol_test_shell_quote(claims), *k = key ? fixture_q(key) : NULL;
    char *out, *err;
    int rc = ol_test_runf(&out, &err,
                          "b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }; "
                          "h=$(printf %%s %s | b64url) && c=$(printf %%s %s | b64url) && "
                          "if [ -n '%s' ]; then s=$(printf %%s \"$h.$c\" | openssl dgst -sha256 -sign %s -binary | "
                          "b64url); else s=; fi && printf %%s \"$h.$c.$s\"",
                          h, c, k ? "sign" : "", k ? k : "/dev/null");
    cr_assert_eq(rc, 0, "openssl: %s", err);
    free(err);
    free(h);
    free(c);
    free(k);
    return out;
}

/* An RS256 token for user at level expiring exp_in seconds from now
 * (negative: expired), signed with key (a fixture). */
static char *token_for(const char *user, int level, long exp_in, const char *key) {
    char claims[512];
    long now = (long)time(NULL);
    snprintf(claims, sizeof(claims),
             "{\"iss\":\"" ISSUER "\",\"aud\":\"" AUDIENCE "\",\"sub\":\"%s\",\"level\":%d,\"iat\":%ld,\"exp\":%ld}",
             user, level, now - 5, now + exp_in);
    return openssl_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", claims, key);
}

static char *token(const char *user, int level) {
    return token_for(user, level, 600, "auth/rsa.key.pem");
}

/* ---- HTTP through curl ---- */

/* A request with curl; tok (may be NULL) goes as "Authorization: Bearer",
 * header (may be NULL) is one more "Name: value" line, or several joined by
 * '\n'; body (may be NULL) as application/json. */
static reply_t curl(const char *method, const char *path, const char *tok, const char *header, const char *body) {
    char hfile[1024], bfile[1024], args[8192] = "";
    snprintf(hfile, sizeof(hfile), "%s/headers", dir);
    snprintf(bfile, sizeof(bfile), "%s/body", dir);
    size_t n = 0;
    if (tok) {
        char line[9000];
        snprintf(line, sizeof(line), "Authorization: Bearer %s", tok);
        char *q = ol_test_shell_quote(line);
        n += (size_t)snprintf(args + n, sizeof(args) - n, " -H %s", q);
        free(q);
    }
    if (header) {
        char *copy = strdup(header), *save = NULL;
        for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char *q = ol_test_shell_quote(line);
            n += (size_t)snprintf(args + n, sizeof(args) - n, " -H %s", q);
            free(q);
        }
        free(copy);
    }
    if (body) {
        char *q = ol_test_shell_quote(body);
        n += (size_t)snprintf(args + n, sizeof(args) - n, " -H 'Content-Type: application/json' --data-binary %s", q);
        free(q);
    }
    cr_assert_lt(n, sizeof(args) - 1);
    char *hq = ol_test_shell_quote(hfile), *bq = ol_test_shell_quote(bfile), *out, *err;
    int rc =
        ol_test_runf(&out, &err, "curl -sS --max-time 60 -X %s -D %s -o %s -w '%%{http_code}'%s http://127.0.0.1:%d%s",
                     method, hq, bq, args, gate_port, path);
    cr_assert_eq(rc, 0, "curl exit %d: %s", rc, err);
    reply_t r = {.status = atoi(out)};
    r.headers = ol_test_read_file(hfile);
    r.body = ol_test_read_file(bfile);
    r.json = json_loads(r.body ? r.body : "", 0, NULL);
    free(out);
    free(err);
    free(hq);
    free(bq);
    return r;
}

/* The value of one sample of /metrics, -1 when absent. */
static long long metric(const char *sample) {
    reply_t r = curl("GET", "/metrics", NULL, NULL, NULL);
    cr_assert_eq(r.status, 200);
    long long v = ol_test_metric_in(r.body, sample);
    ol_test_reply_free(&r);
    return v;
}

/* The record of request_id in recs (borrowed), or NULL. */
static json_t *record_of(json_t *recs, const char *request_id) {
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec) {
        const char *id = json_string_value(json_object_get(json_object_get(rec, "data"), "request_id"));
        if (id && !strcmp(id, request_id))
            return rec;
    }
    return NULL;
}

static void expect_refused(const char *what, reply_t r, int status, const char *challenge, const char *field) {
    cr_expect_eq(r.status, status, "%s: HTTP %d, expected %d: %s", what, r.status, status, r.body);
    cr_expect(json_is_string(json_object_get(r.json, "error")), "%s: no JSON error: %s", what, r.body);
    if (field)
        cr_expect_str_eq(jstr(&r, "field"), field, "%s: %s", what, r.body);
    if (challenge) {
        char line[300];
        snprintf(line, sizeof(line), "WWW-Authenticate: %s\r\n", challenge);
        cr_expect(r.headers && strstr(r.headers, line), "%s: no \"%s\" in\n%s", what, challenge, r.headers);
    }
    ol_test_reply_free(&r);
}

static const char *buy_json(const char *request_id, const char *user_fields) {
    static char body[512];
    snprintf(body, sizeof(body),
             "{\"sessionID\":\"s1\",\"clientIP\":\"10.0.0.1\",%s\"goodsSKU\":\"A\",\"goodsQuantity\":1,"
             "\"requestID\":\"%s\"}",
             user_fields, request_id);
    return body;
}

/* ---- jwt ---- */

Test(gate_auth, jwt_buy_takes_the_user_and_level_from_the_token) {
    use_topics("jwt");
    start_gate(jwt_opts("-X gate.wait.ms=0"));
    char *alice = token("alice", 2);
    char *other = token_for("alice", 2, 600, "auth/other.key.pem");
    char *expired = token_for("alice", 2, -3600, "auth/rsa.key.pem");
    char *none = openssl_token("{\"alg\":\"none\"}", "{\"sub\":\"alice\",\"level\":5,\"exp\":9999999999}", NULL);

    expect_refused("no token", curl("POST", "/buy", NULL, NULL, buy_json("r-none", "")), 401, "Bearer",
                   "Authorization");
    expect_refused("basic credentials",
                   curl("POST", "/buy", NULL, "Authorization: Basic YWxpY2U6eA==",
                        buy_json("r-basic", "\"userID\":\"alice\",\"userLevel\":2,")),
                   401, "Bearer", NULL);
    expect_refused("another key", curl("POST", "/buy", other, NULL, buy_json("r-other", "")), 401,
                   "Bearer error=\"invalid_token\"", "Authorization");
    expect_refused("alg none", curl("POST", "/buy", none, NULL, buy_json("r-algnone", "")), 401,
                   "Bearer error=\"invalid_token\"", NULL);
    reply_t r = curl("POST", "/buy", expired, NULL, buy_json("r-exp", ""));
    cr_expect_str_eq(jstr(&r, "error"), "token expired", "%s", r.body);
    expect_refused("expired", r, 401, "Bearer error=\"invalid_token\", error_description=\"expired\"", NULL);
    expect_refused("a forged user",
                   curl("POST", "/buy", alice, NULL, buy_json("r-user", "\"userID\":\"bob\",\"userLevel\":2,")), 403,
                   NULL, "userID");
    expect_refused("a forged level",
                   curl("POST", "/buy", alice, NULL, buy_json("r-level", "\"userID\":\"alice\",\"userLevel\":5,")), 403,
                   NULL, "userLevel");
    expect_refused("a forged level alone", curl("POST", "/buy", alice, NULL, buy_json("r-level2", "\"userLevel\":9,")),
                   403, NULL, "userLevel");
    expect_refused("a bad body still 400", curl("POST", "/buy", alice, NULL, buy_json("r-bad", "\"userID\":7,")), 400,
                   NULL, "userID");
    expect_refused("get without a token", curl("GET", "/buy/r-ok-1", NULL, NULL, NULL), 401, "Bearer", NULL);
    expect_refused("checkout without a token",
                   curl("POST", "/checkout", NULL, NULL, "{\"goodsSKU\":\"A\",\"holdID\":\"h-x\"}"), 401, "Bearer",
                   NULL);

    /* the token's user and level, the body's fields absent or agreeing */
    r = curl("POST", "/buy", alice, NULL, buy_json("r-ok-1", ""));
    cr_expect_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    r = curl("POST", "/buy", alice, NULL, buy_json("r-ok-2", "\"userID\":\"alice\",\"userLevel\":2,"));
    cr_expect_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    /* /metrics, /healthz and /readyz need no token */
    r = curl("GET", "/healthz", NULL, NULL, NULL);
    cr_expect_eq(r.status, 200, "%s", r.body);
    ol_test_reply_free(&r);

    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), 2, "only the authenticated requests reach Kafka: %s",
                 json_dumps(recs, JSON_COMPACT));
    for (int i = 1; i <= 2; i++) {
        char id[32];
        snprintf(id, sizeof(id), "r-ok-%d", i);
        json_t *d = json_object_get(record_of(recs, id), "data");
        cr_assert(d, "no BuyRequested for %s", id);
        cr_expect_str_eq(json_string_value(json_object_get(d, "user_id")), "alice");
        cr_expect_eq(json_integer_value(json_object_get(d, "user_level")), 2);
    }
    json_decref(recs);

    cr_expect_eq(metric("orderlog_gate_auth_total{outcome=\"ok\"}"), 3, "the two buys and the bad body");
    EXPECT_METRICS(
        {"orderlog_gate_auth_total{outcome=\"missing\"}", 4}, {"orderlog_gate_auth_total{outcome=\"invalid\"}", 2},
        {"orderlog_gate_auth_total{outcome=\"expired\"}", 1}, {"orderlog_gate_auth_total{outcome=\"forbidden\"}", 3},
        {"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"unauthorized\"}", 5},
        {"orderlog_gate_requests_total{endpoint=\"buy\",outcome=\"forbidden\"}", 3});
    cr_expect(!strstr(ol_test_bg_stderr(gate), alice), "a token in the log");
    free(alice);
    free(other);
    free(expired);
    free(none);
    stop_gate(false);
}

Test(gate_auth, jwt_another_users_hold_decision_and_request_id_are_refused) {
    ol_test_bg_t *decide = start_sale("owner", 5);
    start_gate(jwt_opts("-X gate.wait.ms=30000"));
    char *alice = token("alice", 2), *bob = token("bob", 2);

    reply_t r = curl("POST", "/buy", alice, NULL, buy_json("own-1", ""));
    cr_assert_eq(r.status, 200, "%d %s\ndecide:\n%s", r.status, r.body, ol_test_bg_stderr(decide));
    cr_assert_str_eq(jstr(&r, "holdID"), "h-own-1", "%s", r.body);
    ol_test_reply_free(&r);

    /* the decision: its owner reads it, another user is told it is unknown */
    r = curl("GET", "/buy/own-1", alice, NULL, NULL);
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "holdID"), "h-own-1");
    ol_test_reply_free(&r);
    r = curl("GET", "/buy/own-1", bob, NULL, NULL);
    cr_expect_eq(r.status, 404, "%d %s", r.status, r.body);
    cr_expect(!strstr(r.body, "h-own-1"), "%s", r.body);
    ol_test_reply_free(&r);
    /* the request id: not answered from alice's decision */
    r = curl("POST", "/buy", bob, NULL, buy_json("own-1", ""));
    cr_expect_eq(r.status, 403, "%d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "field"), "requestID");
    cr_expect(!strstr(r.body, "h-own-1"), "%s", r.body);
    ol_test_reply_free(&r);

    /* the hold: bob cannot name alice in the body, and as himself decide says not_owner */
    r = curl("POST", "/checkout", bob, NULL, "{\"userID\":\"alice\",\"goodsSKU\":\"A\",\"holdID\":\"h-own-1\"}");
    cr_expect_eq(r.status, 403, "%d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "field"), "userID");
    ol_test_reply_free(&r);
    r = curl("POST", "/checkout", bob, NULL, "{\"goodsSKU\":\"A\",\"holdID\":\"h-own-1\"}");
    cr_expect_eq(r.status, 409, "%d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "reason"), "not_owner", "%s", r.body);
    ol_test_reply_free(&r);
    r = curl("POST", "/checkout", alice, NULL, "{\"goodsSKU\":\"A\",\"holdID\":\"h-own-1\"}");
    cr_expect_eq(r.status, 200, "%d %s", r.status, r.body);
    cr_expect_str_eq(jstr(&r, "orderID"), "o-h-own-1", "%s", r.body);
    ol_test_reply_free(&r);

    /* what reached Kafka: alice's buy, bob's and alice's checkouts under their own names */
    json_t *recs = read_topic("buy-requests");
    int checkouts = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(recs, i, rec) {
        const char *type = json_string_value(json_object_get(rec, "type"));
        const char *user = json_string_value(json_object_get(json_object_get(rec, "data"), "user_id"));
        if (!strcmp(type, "CheckoutRequested")) {
            checkouts++;
            cr_expect(!strcmp(user, "alice") || !strcmp(user, "bob"), "%s", user);
        } else {
            cr_expect_str_eq(user, "alice", "the only buy is alice's");
        }
    }
    cr_expect_eq(checkouts, 2);
    cr_expect_eq(json_array_size(recs), 3, "%s", json_dumps(recs, JSON_COMPACT));
    json_decref(recs);
    cr_expect_eq(metric("orderlog_gate_auth_total{outcome=\"forbidden\"}"), 3);
    free(alice);
    free(bob);
    stop_gate(false);
    ol_test_bg_signal(decide, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(decide, 30000), 0, "%s", ol_test_bg_stderr(decide));
    ol_test_bg_free(decide);
}

Test(gate_auth, jwt_get_past_the_cache_shows_a_decision_to_its_owner_only) {
    use_topics("pg");
    ol_test_pg_migrated_db("gate_auth", db, sizeof(db));
    ol_test_pg_exec(db, "insert into orderlog.buy_decisions (request_id, user_id, sku, quantity, outcome, reason, "
                        "message, hold_id, decided_at) values "
                        "('old-1', 'alice', 'A', 1, 'accepted', null, null, 'h-old-1', now())");
    char *ci = ol_test_shell_quote(db), more[1400];
    snprintf(more, sizeof(more), "-X pg.conninfo=%s", ci);
    free(ci);
    start_gate(jwt_opts(more));
    char *alice = token("alice", 2), *bob = token("bob", 2);
    reply_t r = curl("GET", "/buy/old-1", bob, NULL, NULL);
    cr_expect_eq(r.status, 404, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    r = curl("GET", "/buy/old-1", alice, NULL, NULL);
    cr_expect_eq(r.status, 200, "%d %s\n%s", r.status, r.body, ol_test_bg_stderr(gate));
    cr_expect_str_eq(jstr(&r, "holdID"), "h-old-1");
    ol_test_reply_free(&r);
    /* now from the cache: still bob's 404 */
    r = curl("GET", "/buy/old-1", bob, NULL, NULL);
    cr_expect_eq(r.status, 404, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    cr_expect_eq(metric("orderlog_gate_auth_total{outcome=\"forbidden\"}"), 2);
    free(alice);
    free(bob);
    stop_gate(false);
}

/* ---- header ---- */

Test(gate_auth, header_mode_believes_the_trusted_proxy_only) {
    use_topics("header");
    start_gate("-X gate.wait.ms=0 -X gate.auth=header -X gate.auth.header.from=127.0.0.1/32,::1");
    reply_t r = curl("POST", "/buy", NULL, "X-Auth-User: carol\nX-Auth-Level: 4", buy_json("h-ok", ""));
    cr_expect_eq(r.status, 202, "%d %s", r.status, r.body);
    ol_test_reply_free(&r);
    expect_refused("no headers", curl("POST", "/buy", NULL, NULL, buy_json("h-none", "\"userID\":\"carol\",")), 401,
                   NULL, NULL);
    expect_refused("a level that is not a number",
                   curl("POST", "/buy", NULL, "X-Auth-User: carol\nX-Auth-Level: high", buy_json("h-lvl", "")), 401,
                   NULL, NULL);
    expect_refused("the user twice",
                   curl("POST", "/buy", NULL, "X-Auth-User: carol\nX-Auth-User: mallory\nX-Auth-Level: 4",
                        buy_json("h-twice", "")),
                   401, NULL, NULL);
    expect_refused(
        "another user in the body",
        curl("POST", "/buy", NULL, "X-Auth-User: carol\nX-Auth-Level: 4", buy_json("h-forged", "\"userID\":\"dave\",")),
        403, NULL, "userID");
    json_t *recs = read_topic("buy-requests");
    cr_expect_eq(json_array_size(recs), 1, "%s", json_dumps(recs, JSON_COMPACT));
    json_t *d = json_object_get(record_of(recs, "h-ok"), "data");
    cr_expect_str_eq(json_string_value(json_object_get(d, "user_id")), "carol");
    cr_expect_eq(json_integer_value(json_object_get(d, "user_level")), 4);
    json_decref(recs);
    stop_gate(false);

    /* the same headers from a peer that is not a proxy of gate.auth.header.from */
    start_gate("-X gate.wait.ms=0 -X gate.auth=header -X gate.auth.header.from=10.0.0.0/8");
    expect_refused("an untrusted peer",
                   curl("POST", "/buy", NULL, "X-Auth-User: carol\nX-Auth-Level: 4", buy_json("h-peer", "")), 403, NULL,
                   NULL);
    cr_expect_eq(metric("orderlog_gate_auth_total{outcome=\"forbidden\"}"), 1);
    stop_gate(false);
}

/* ---- start ---- */

/* The gate given opts exits 2 before it reaches Kafka (no topics needed). */
static void expect_no_start(const char *opts, const char *has) {
    char *out, *err;
    int rc = ol_test_orderlogf(&out, &err, fixed_args(), "-X gate.listen=127.0.0.1:0 %s gate", opts);
    cr_expect_eq(rc, 2, "%s: exit %d\n%s%s", opts, rc, out, err);
    cr_expect(strstr(err, has), "%s: stderr lacks \"%s\":\n%s", opts, has, err);
    cr_expect(!strstr(err, "MII") && !strstr(err, "hmac-secret"), "the key in the message: %s", err);
    free(out);
    free(err);
}

Test(gate_auth, an_unusable_key_stops_the_gate_at_start_naming_the_property) {
    char opts[2048];
    expect_no_start("-X gate.auth=jwt -X gate.auth.jwt.key.file=/nonexistent/key.pem",
                    "property \"gate.auth.jwt.key.file\": cannot read \"/nonexistent/key.pem\"");
    char *priv = fixture_q("auth/rsa.key.pem"), *pub = fixture_q("auth/rsa.pub.pem");
    snprintf(opts, sizeof(opts), "-X gate.auth=jwt -X gate.auth.jwt.key.file=%s", priv);
    expect_no_start(opts, "is not a PEM public key");
    snprintf(opts, sizeof(opts), "-X gate.auth=jwt -X gate.auth.jwt.alg=HS256 -X gate.auth.jwt.key.file=%s", pub);
    expect_no_start(opts, "holds a PEM key, not an HMAC secret");
    expect_no_start("-X gate.auth=jwt", "property \"gate.auth.jwt.key.file\": must name the key file");
    expect_no_start("-X gate.auth=header", "property \"gate.auth.header.from\"");
    expect_no_start("-X gate.auth=basic", "gate.auth");
    free(priv);
    free(pub);
}
