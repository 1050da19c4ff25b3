/* The gate's authentication without HTTP (producers/gate_auth.c): tokens
 * signed here with libjwt (and made by hand where libjwt would not make
 * them: alg none, a forged header), verified at a fixed clock; the key file
 * checks at start; the trusted proxies' networks and headers; the body's
 * claims against the authenticated user. Keys: tests/fixtures/auth. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <jwt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/conf.h"
#include "common/base/util.h"
#include "producers/gate_auth.h"
#include "testutil.h"
#include "common/domain/properties.h"

#define NOW_S 1800000000LL /* the clock of every verification */
#define NOW_MS (NOW_S * 1000)

static char *fixture(const char *name) {
    return olt_path("ORDERLOG_FIXTURES", name);
}

static char *key_text(const char *name, size_t *len) {
    char *path = fixture(name);
    char *k = olt_read_file(path, len);
    cr_assert(k, "cannot read %s", path);
    free(path);
    return k;
}

/* A gate.auth=jwt authenticator; extra: NULL-terminated name, value pairs. */
static ol_gate_auth_t *make_auth(const char *alg, const char *key_file, ...) {
    ol_conf_t *conf = ol_conf_new();
    char errstr[512];
    char *path = fixture(key_file);
    cr_assert_eq(ol_conf_set(conf, "gate.auth", "jwt", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(ol_conf_set(conf, "gate.auth.jwt.alg", alg, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(ol_conf_set(conf, "gate.auth.jwt.key.file", path, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(ol_conf_set(conf, "gate.auth.jwt.issuer", "https://id.example", errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_conf_set(conf, "gate.auth.jwt.audience", "orderlog-gate", errstr, sizeof(errstr)), OL_ERR_OK);
    va_list ap;
    va_start(ap, key_file);
    for (const char *name; (name = va_arg(ap, const char *));) {
        const char *value = va_arg(ap, const char *);
        cr_assert_eq(ol_conf_set(conf, name, value, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    }
    va_end(ap);
    ol_gate_auth_t *a;
    cr_assert_eq(ol_gate_auth_new(conf, &a, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert(a);
    ol_conf_destroy(conf);
    free(path);
    return a;
}

/* Signs claims (a JSON object) with alg and the key in fixture key_file
 * (NULL: alg none). */
static char *sign_with(jwt_alg_t alg, const unsigned char *key, size_t key_len, const char *claims) {
    jwt_t *jwt;
    cr_assert_eq(jwt_new(&jwt), 0);
    cr_assert_eq(jwt_add_grants_json(jwt, claims), 0, "claims: %s", claims);
    cr_assert_eq(jwt_set_alg(jwt, alg, key, (int)key_len), 0);
    char *token = jwt_encode_str(jwt);
    cr_assert(token);
    jwt_free(jwt);
    return token;
}

static char *sign(jwt_alg_t alg, const char *key_file, const char *claims) {
    size_t len = 0;
    char *key = key_file ? key_text(key_file, &len) : NULL;
    if (key && alg == JWT_ALG_HS256 && len && key[len - 1] == '\n')
        len--;
    char *token = sign_with(alg, (const unsigned char *)key, len, claims);
    free(key);
    return token;
}

/* The claims of a valid token, with one member changed: set (a JSON object
 * merged in) and drop (a claim removed, or NULL). */
static char *claims_with(const char *set, const char *drop) {
    char base[512];
    snprintf(base, sizeof(base),
             "{\"iss\":\"https://id.example\",\"aud\":\"orderlog-gate\",\"sub\":\"UID0000000001\",\"level\":5,"
             "\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}",
             NOW_S - 60, NOW_S - 60, NOW_S + 600);
    json_t *c = json_loads(base, 0, NULL);
    if (set) {
        json_t *s = json_loads(set, 0, NULL);
        cr_assert(s, "bad test JSON %s", set);
        json_object_update(c, s);
        json_decref(s);
    }
    if (drop)
        json_object_del(c, drop);
    char *text = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return text;
}

static ol_gate_auth_outcome_t verify(const ol_gate_auth_t *a, const char *token, ol_gate_auth_user_t *who, char *why,
                                     size_t why_size) {
    memset(who, 0, sizeof(*who));
    return ol_gate_auth_verify(a, token, NOW_MS, who, why, why_size);
}

/* Expects a to refuse token as invalid, with a reason saying `says`; who as
 * verify leaves it. */
static void expect_invalid(const ol_gate_auth_t *a, const char *token, ol_gate_auth_user_t *who, const char *says) {
    char why[256] = "";
    cr_expect_eq(verify(a, token, who, why, sizeof(why)), OL_GATE_AUTH_INVALID, "%s", why);
    cr_expect(strstr(why, says), "%s", why);
}

/* What verifying a token gave. */
typedef struct verified_s {
    ol_gate_auth_outcome_t got;
    ol_gate_auth_user_t who;
    char why[256];
} verified_t;

/* Signs claims with alg and the key file key, and verifies that token with a. */
static verified_t verify_signed(const ol_gate_auth_t *a, jwt_alg_t alg, const char *key, const char *claims) {
    verified_t v;
    char *token = sign(alg, key, claims);
    v.got = verify(a, token, &v.who, v.why, sizeof(v.why));
    free(token);
    return v;
}

/* Verifies a token of claims_with(set, drop) signed with RS256 and the key
 * the authenticator trusts; expects want. */
static void expect_rs256(ol_gate_auth_t *a, const char *set, const char *drop, ol_gate_auth_outcome_t want,
                         const char *why_has) {
    char *claims = claims_with(set, drop);
    verified_t v = verify_signed(a, JWT_ALG_RS256, "auth/rsa.key.pem", claims);
    cr_expect_eq(v.got, want, "claims %s: %s, expected %s (%s)", claims, ol_gate_auth_outcome_names[v.got],
                 ol_gate_auth_outcome_names[want], v.why);
    if (why_has)
        cr_expect(strstr(v.why, why_has), "claims %s: why \"%s\" lacks \"%s\"", claims, v.why, why_has);
    free(claims);
}

/* ---- tokens that pass ---- */

Test(gate_auth, accepts_a_valid_rs256_token_with_its_user_and_level) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    char *claims = claims_with(NULL, NULL);
    verified_t v = verify_signed(a, JWT_ALG_RS256, "auth/rsa.key.pem", claims);
    cr_assert_eq(v.got, OL_GATE_AUTH_OK, "%s", v.why);
    cr_expect_str_eq(v.who.user, "UID0000000001");
    cr_expect_eq(v.who.level, 5);
    free(claims);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, accepts_a_valid_hs256_token) {
    ol_gate_auth_t *a = make_auth("HS256", "auth/hmac.secret", NULL);
    char *claims = claims_with("{\"sub\":\"u-hs\",\"level\":0}", NULL);
    verified_t v = verify_signed(a, JWT_ALG_HS256, "auth/hmac.secret", claims);
    cr_assert_eq(v.got, OL_GATE_AUTH_OK, "%s", v.why);
    cr_expect_str_eq(v.who.user, "u-hs");
    cr_expect_eq(v.who.level, 0);
    /* the secret without its line end: signed with the newline it is another secret */
    size_t len;
    char *raw = key_text("auth/hmac.secret", &len);
    char *with_nl = sign_with(JWT_ALG_HS256, (unsigned char *)raw, len, claims);
    cr_expect_eq(verify(a, with_nl, &v.who, v.why, sizeof(v.why)), OL_GATE_AUTH_INVALID);
    free(with_nl);
    free(raw);
    free(claims);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, reads_the_user_and_level_from_the_configured_claims) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", "gate.auth.jwt.user.claim", "uid",
                                  "gate.auth.jwt.level.claim", "https://orderlog.example/level", NULL);
    expect_rs256(a, "{\"uid\":\"u-77\",\"https://orderlog.example/level\":2}", NULL, OL_GATE_AUTH_OK, NULL);
    expect_rs256(a, NULL, NULL, OL_GATE_AUTH_INVALID, "claim uid is missing");
    char *claims = claims_with("{\"uid\":\"u-77\",\"https://orderlog.example/level\":2}", NULL);
    verified_t v = verify_signed(a, JWT_ALG_RS256, "auth/rsa.key.pem", claims);
    cr_assert_eq(v.got, OL_GATE_AUTH_OK);
    cr_expect_str_eq(v.who.user, "u-77", "sub is not the user any more");
    cr_expect_eq(v.who.level, 2);
    free(claims);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, aud_may_be_an_array_holding_the_audience) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    expect_rs256(a, "{\"aud\":[\"billing\",\"orderlog-gate\"]}", NULL, OL_GATE_AUTH_OK, NULL);
    expect_rs256(a, "{\"aud\":[\"billing\",\"shop\"]}", NULL, OL_GATE_AUTH_INVALID, "aud");
    ol_gate_auth_destroy(a);
}

Test(gate_auth, allows_the_leeway_around_exp_nbf_and_iat) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", "gate.auth.jwt.leeway.ms", "30000", NULL);
    char set[256];
    snprintf(set, sizeof(set), "{\"exp\":%lld}", NOW_S - 29);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_OK, NULL);
    snprintf(set, sizeof(set), "{\"exp\":%lld}", NOW_S - 31);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_EXPIRED, "expired");
    snprintf(set, sizeof(set), "{\"nbf\":%lld,\"iat\":%lld}", NOW_S + 29, NOW_S + 29);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_OK, NULL);
    snprintf(set, sizeof(set), "{\"exp\":%lld.5}", NOW_S);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_OK, "ok");
    ol_gate_auth_destroy(a);
}

/* ---- tokens that fail ---- */

Test(gate_auth, refuses_a_token_signed_with_another_key) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    char *claims = claims_with(NULL, NULL);
    verified_t v = verify_signed(a, JWT_ALG_RS256, "auth/other.key.pem", claims);
    cr_expect_eq(v.got, OL_GATE_AUTH_INVALID);
    cr_expect(strstr(v.why, "signature"), "%s", v.why);
    cr_expect_str_eq(v.who.user, "", "nothing is filled in");
    ol_gate_auth_destroy(a);
    /* HS256 with another secret */
    a = make_auth("HS256", "auth/hmac.secret", NULL);
    char *token = sign_with(JWT_ALG_HS256, (const unsigned char *)"another-secret-of-more-than-32-bytes!", 37, claims);
    cr_expect_eq(verify(a, token, &v.who, v.why, sizeof(v.why)), OL_GATE_AUTH_INVALID);
    free(token);
    free(claims);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, refuses_an_expired_token_as_expired) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    char set[128];
    snprintf(set, sizeof(set), "{\"exp\":%lld}", NOW_S - 3600);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_EXPIRED, "expired 3600 s ago");
    /* expired and of another audience: invalid, not merely expired */
    snprintf(set, sizeof(set), "{\"exp\":%lld,\"aud\":\"shop\"}", NOW_S - 3600);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_INVALID, "aud");
    ol_gate_auth_destroy(a);
}

Test(gate_auth, refuses_nbf_or_iat_in_the_future) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    char set[128];
    snprintf(set, sizeof(set), "{\"nbf\":%lld}", NOW_S + 3600);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_INVALID, "nbf is in the future");
    snprintf(set, sizeof(set), "{\"iat\":%lld}", NOW_S + 3600);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_INVALID, "iat is in the future");
    expect_rs256(a, "{\"nbf\":\"soon\"}", NULL, OL_GATE_AUTH_INVALID, "nbf is not a number");
    /* absent, they are not needed */
    expect_rs256(a, NULL, "nbf", OL_GATE_AUTH_OK, NULL);
    expect_rs256(a, NULL, "iat", OL_GATE_AUTH_OK, NULL);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, refuses_a_wrong_or_missing_issuer) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    expect_rs256(a, "{\"iss\":\"https://evil.example\"}", NULL, OL_GATE_AUTH_INVALID, "iss");
    expect_rs256(a, NULL, "iss", OL_GATE_AUTH_INVALID, "iss");
    expect_rs256(a, "{\"iss\":[\"https://id.example\"]}", NULL, OL_GATE_AUTH_INVALID, "iss");
    ol_gate_auth_destroy(a);
}

Test(gate_auth, refuses_a_wrong_or_missing_audience) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    expect_rs256(a, "{\"aud\":\"orderlog-gate-2\"}", NULL, OL_GATE_AUTH_INVALID, "aud");
    expect_rs256(a, NULL, "aud", OL_GATE_AUTH_INVALID, "aud");
    ol_gate_auth_destroy(a);
}

Test(gate_auth, does_not_check_issuer_and_audience_left_empty) {
    ol_gate_auth_t *a =
        make_auth("RS256", "auth/rsa.pub.pem", "gate.auth.jwt.issuer", "", "gate.auth.jwt.audience", "", NULL);
    expect_rs256(a, NULL, "iss", OL_GATE_AUTH_OK, NULL);
    expect_rs256(a, "{\"aud\":\"anything\"}", NULL, OL_GATE_AUTH_OK, NULL);
    ol_gate_auth_destroy(a);
}

/* base64url without padding, of a string (for tokens libjwt would not make). */
static char *b64url(const char *s) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s);
    char *out = ol_xmalloc(n * 4 / 3 + 4), *o = out;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        if (i + 1 < n)
            *o++ = tab[v >> 6 & 63];
        if (i + 2 < n)
            *o++ = tab[v & 63];
    }
    *o = '\0';
    return out;
}

/* header.claims.sig from parts (sig taken as it is). */
static char *compact(const char *header, const char *claims, const char *sig) {
    char *h = b64url(header), *c = b64url(claims), *t;
    cr_assert(asprintf(&t, "%s.%s.%s", h, c, sig) >= 0);
    free(h);
    free(c);
    return t;
}

Test(gate_auth, refuses_alg_none_in_any_spelling) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    char *claims = claims_with(NULL, NULL);
    ol_gate_auth_user_t who;
    char *token = sign(JWT_ALG_NONE, NULL, claims); /* libjwt's own "none" token */
    cr_expect_eq(verify(a, token, &who, NULL, 0), OL_GATE_AUTH_INVALID, "%s", token);
    free(token);
    static const char *const headers[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}",
                                          "{\"alg\":\"NONE\"}", "{\"alg\":\"none\",\"typ\":\"JWT\"}",
                                          "{\"typ\":\"JWT\"}",  "{}"};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        token = compact(headers[i], claims, "");
        cr_expect_eq(verify(a, token, &who, NULL, 0), OL_GATE_AUTH_INVALID, "%s", headers[i]);
        free(token);
        /* with the signature of a valid token appended */
        char *valid = sign(JWT_ALG_RS256, "auth/rsa.key.pem", claims);
        token = compact(headers[i], claims, strrchr(valid, '.') + 1);
        cr_expect_eq(verify(a, token, &who, NULL, 0), OL_GATE_AUTH_INVALID, "%s with a signature", headers[i]);
        free(token);
        free(valid);
    }
    free(claims);
    ol_gate_auth_destroy(a);
}

/* The classic: the RSA public key is public, so an attacker signs HS256
 * with its PEM text as the HMAC secret; a verifier that lets the token
 * choose the alg checks the HMAC with that same "key" and accepts. */
Test(gate_auth, refuses_alg_confusion_hs256_keyed_with_the_rsa_public_key) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    char *claims = claims_with("{\"sub\":\"attacker\",\"level\":9}", NULL);
    size_t len;
    char *pub = key_text("auth/rsa.pub.pem", &len);
    char *token = sign_with(JWT_ALG_HS256, (unsigned char *)pub, len, claims);
    /* libjwt alone accepts it (the reason for the alg check): */
    jwt_t *jwt = NULL;
    cr_expect_eq(jwt_decode(&jwt, token, (unsigned char *)pub, (int)len), 0, "libjwt now refuses it by itself");
    jwt_free(jwt);
    ol_gate_auth_user_t who;
    expect_invalid(a, token, &who, "alg HS256");
    cr_expect_str_eq(who.user, "");
    free(token);
    /* and the other way: an RS256 token where HS256 is configured */
    ol_gate_auth_destroy(a);
    a = make_auth("HS256", "auth/hmac.secret", NULL);
    token = sign(JWT_ALG_RS256, "auth/rsa.key.pem", claims);
    cr_expect_eq(verify(a, token, &who, NULL, 0), OL_GATE_AUTH_INVALID);
    free(token);
    /* RS512 with the right key is still another alg */
    ol_gate_auth_destroy(a);
    a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    token = sign(JWT_ALG_RS512, "auth/rsa.key.pem", claims);
    expect_invalid(a, token, &who, "alg RS512");
    free(token);
    free(pub);
    free(claims);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, refuses_missing_claims) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    expect_rs256(a, NULL, "sub", OL_GATE_AUTH_INVALID, "claim sub is missing");
    expect_rs256(a, NULL, "level", OL_GATE_AUTH_INVALID, "claim level is missing");
    expect_rs256(a, NULL, "exp", OL_GATE_AUTH_INVALID, "exp is missing");
    ol_gate_auth_destroy(a);
}

Test(gate_auth, refuses_a_level_that_is_not_an_integer_and_a_bad_user) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    static const char *const bad_levels[] = {"\"5\"", "5.5", "-1", "2147483648", "true", "null", "[5]"};
    for (size_t i = 0; i < sizeof(bad_levels) / sizeof(bad_levels[0]); i++) {
        char set[128];
        snprintf(set, sizeof(set), "{\"level\":%s}", bad_levels[i]);
        expect_rs256(a, set, NULL, OL_GATE_AUTH_INVALID, "claim level is not an integer");
    }
    expect_rs256(a, "{\"level\":2147483647}", NULL, OL_GATE_AUTH_OK, NULL);
    expect_rs256(a, "{\"sub\":42}", NULL, OL_GATE_AUTH_INVALID, "claim sub is not a user id");
    expect_rs256(a, "{\"sub\":\"\"}", NULL, OL_GATE_AUTH_INVALID, "claim sub");
    expect_rs256(a, "{\"sub\":\"a\\nb\"}", NULL, OL_GATE_AUTH_INVALID, "claim sub");
    char set[300];
    char long_user[140];
    memset(long_user, 'u', 129);
    long_user[129] = '\0';
    snprintf(set, sizeof(set), "{\"sub\":\"%s\"}", long_user);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_INVALID, "claim sub");
    long_user[128] = '\0';
    snprintf(set, sizeof(set), "{\"sub\":\"%s\"}", long_user);
    expect_rs256(a, set, NULL, OL_GATE_AUTH_OK, NULL);
    expect_rs256(a, "{\"exp\":\"tomorrow\"}", NULL, OL_GATE_AUTH_INVALID, "exp is not a number");
    ol_gate_auth_destroy(a);
}

Test(gate_auth, refuses_a_crit_header_and_garbage) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    ol_gate_auth_user_t who;
    char *claims = claims_with(NULL, NULL);
    size_t len;
    char *priv = key_text("auth/rsa.key.pem", &len);
    jwt_t *jwt;
    cr_assert_eq(jwt_new(&jwt), 0);
    cr_assert_eq(jwt_add_grants_json(jwt, claims), 0);
    cr_assert_eq(jwt_add_headers_json(jwt, "{\"crit\":[\"exp\"]}"), 0);
    cr_assert_eq(jwt_set_alg(jwt, JWT_ALG_RS256, (unsigned char *)priv, (int)len), 0);
    char *token = jwt_encode_str(jwt);
    jwt_free(jwt);
    expect_invalid(a, token, &who, "crit");
    free(token);
    static const char *const garbage[] = {"x", "a.b", "a.b.c", "..", "eyJhbGciOiJSUzI1NiJ9..", "Bearer x.y.z"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
        cr_expect_eq(verify(a, garbage[i], &who, NULL, 0), OL_GATE_AUTH_INVALID, "%s", garbage[i]);
    cr_expect_eq(verify(a, "", &who, NULL, 0), OL_GATE_AUTH_MISSING);
    cr_expect_eq(verify(a, NULL, &who, NULL, 0), OL_GATE_AUTH_MISSING);
    /* a tampered claim under a valid signature */
    token = sign(JWT_ALG_RS256, "auth/rsa.key.pem", claims);
    char *forged_claims = claims_with("{\"level\":9}", NULL), *fc = b64url(forged_claims);
    char *dot1 = strchr(token, '.'), *dot2 = strrchr(token, '.'), *forged;
    cr_assert(asprintf(&forged, "%.*s.%s%s", (int)(dot1 - token), token, fc, dot2) >= 0);
    cr_expect_eq(verify(a, forged, &who, NULL, 0), OL_GATE_AUTH_INVALID);
    /* too long */
    char *huge = ol_xmalloc(OL_GATE_AUTH_TOKEN_MAX + 2);
    memset(huge, 'a', OL_GATE_AUTH_TOKEN_MAX + 1);
    huge[OL_GATE_AUTH_TOKEN_MAX + 1] = '\0';
    expect_invalid(a, huge, &who, "longer");
    free(huge);
    free(forged);
    free(fc);
    free(forged_claims);
    free(token);
    free(priv);
    free(claims);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, reads_the_bearer_token_of_an_authorization_header) {
    size_t len = 0;
    const char *t = ol_gate_auth_bearer("Bearer abc.def.ghi", &len);
    cr_assert(t);
    cr_expect_eq(len, 11);
    cr_expect(!strncmp(t, "abc.def.ghi", len));
    t = ol_gate_auth_bearer("bearer   abc.def.ghi  ", &len);
    cr_assert(t, "the scheme in any case, spaces around the token");
    cr_expect_eq(len, 11);
    cr_expect_null(ol_gate_auth_bearer("Basic dXNlcjpwYXNz", &len));
    cr_expect_null(ol_gate_auth_bearer("Bearerabc", &len));
    cr_expect_null(ol_gate_auth_bearer(NULL, &len));
    t = ol_gate_auth_bearer("Bearer ", &len);
    cr_expect(t && len == 0);
}

/* ---- the key file at start ---- */

/* ol_gate_auth_new's error for alg and a fixture (or a path when abs). */
static char *start_error(const char *mode, const char *alg, const char *key_file, bool fixture_path) {
    ol_conf_t *conf = ol_conf_new();
    char errstr[512] = "";
    char *path = fixture_path ? fixture(key_file) : ol_xstrdup(key_file);
    cr_assert_eq(ol_conf_set(conf, "gate.auth", mode, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_conf_set(conf, "gate.auth.jwt.alg", alg, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_conf_set(conf, "gate.auth.jwt.key.file", path, errstr, sizeof(errstr)), OL_ERR_OK);
    ol_gate_auth_t *a = (ol_gate_auth_t *)1;
    ol_err_t err = ol_gate_auth_new(conf, &a, errstr, sizeof(errstr));
    cr_expect_null(a, "no authenticator on error");
    ol_conf_destroy(conf);
    free(path);
    return err ? ol_xstrdup(errstr) : NULL;
}

static void expect_start_error(const char *alg, const char *key_file, bool fixture_path, const char *has) {
    char *e = start_error("jwt", alg, key_file, fixture_path);
    cr_assert(e, "%s with %s started", alg, key_file);
    cr_expect(strstr(e, "gate.auth.jwt.key.file"), "names the property: %s", e);
    cr_expect(strstr(e, has), "\"%s\" lacks \"%s\"", e, has);
    /* never the key itself */
    cr_expect(!strstr(e, "MII") && !strstr(e, "short-secret") && !strstr(e, "test-only-hmac"),
              "the key is in the message: %s", e);
    free(e);
}

Test(gate_auth, refuses_to_start_without_a_usable_key) {
    expect_start_error("RS256", "/nonexistent/key.pem", false, "cannot read \"/nonexistent/key.pem\"");
    expect_start_error("RS256", "", false, "must name the key file");
    expect_start_error("RS256", "auth/hmac.secret", true, "is not a PEM public key");
    expect_start_error("RS256", "auth/rsa.key.pem", true, "is not a PEM public key"); /* the private key */
    expect_start_error("RS256", "auth/ec.pub.pem", true, "not an RSA public key");
    expect_start_error("RS256", "auth/rsa1024.pub.pem", true, "1024 bits, fewer than 2048");
    expect_start_error("HS256", "auth/hmac-short.secret", true, "12 bytes, fewer than 32");
    expect_start_error("HS256", "auth/rsa.pub.pem", true, "holds a PEM key, not an HMAC secret");
    expect_start_error("RS256", "auth", true, "cannot read"); /* a directory */
    char *e = start_error("none", "RS256", "/nonexistent/key.pem", false);
    cr_expect_null(e, "gate.auth=none reads no key: %s", e ? e : "");
    free(e);
}

Test(gate_auth, none_makes_no_authenticator) {
    ol_conf_t *conf = ol_conf_new();
    ol_gate_auth_t *a = (ol_gate_auth_t *)1;
    char errstr[256];
    cr_assert_eq(ol_gate_auth_new(conf, &a, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_expect_null(a, "gate.auth defaults to none");
    cr_expect_eq(ol_gate_auth_mode(a), OL_GATE_AUTH_MODE_NONE);
    ol_conf_destroy(conf);
}

/* ---- header mode ---- */

static struct sockaddr_storage addr_of(const char *text) {
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1)
        v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1)
        v6->sin6_family = AF_INET6;
    else
        cr_assert_fail("bad test address %s", text);
    return ss;
}

/* A gate.auth=header authenticator trusting from (NULL: the config's
 * error in errstr, returned NULL). */
static ol_gate_auth_t *header_auth(const char *from, char *errstr, size_t errstr_size) {
    ol_conf_t *conf = ol_conf_new();
    cr_assert_eq(ol_conf_set(conf, "gate.auth", "header", errstr, errstr_size), OL_ERR_OK);
    cr_assert_eq(ol_conf_set(conf, "gate.auth.header.from", from, errstr, errstr_size), OL_ERR_OK);
    ol_gate_auth_t *a = NULL;
    ol_err_t err = ol_gate_auth_new(conf, &a, errstr, errstr_size);
    cr_assert((err == OL_ERR_OK) == (a != NULL));
    ol_conf_destroy(conf);
    return a;
}

static bool trusts(const ol_gate_auth_t *a, const char *addr) {
    struct sockaddr_storage ss = addr_of(addr);
    return ol_gate_auth_trusts_peer(a, (struct sockaddr *)&ss);
}

Test(gate_auth, header_mode_trusts_peers_of_the_proxy_networks_only) {
    char errstr[256];
    ol_gate_auth_t *a = header_auth(" 10.0.0.0/8, ,192.0.2.7,2001:db8::/32 , 172.16.0.0/12", errstr, sizeof(errstr));
    cr_assert(a, "%s", errstr);
    cr_expect(trusts(a, "10.1.2.3"));
    cr_expect(!trusts(a, "11.0.0.1"));
    cr_expect(trusts(a, "192.0.2.7"));
    cr_expect(!trusts(a, "192.0.2.8"), "an address alone is /32");
    cr_expect(trusts(a, "2001:db8:1::5"));
    cr_expect(!trusts(a, "2001:db9::1"));
    cr_expect(trusts(a, "172.31.255.1"));
    cr_expect(!trusts(a, "172.32.0.1"), "a prefix that is not a whole byte");
    cr_expect(trusts(a, "::ffff:10.9.8.7"), "an IPv4-mapped peer is its IPv4 address");
    cr_expect(!trusts(a, "::ffff:11.9.8.7"));
    cr_expect(!ol_gate_auth_trusts_peer(a, NULL));
    ol_gate_auth_destroy(a);
    /* a jwt authenticator trusts no peer's headers */
    ol_gate_auth_t *j = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    cr_expect(!trusts(j, "10.1.2.3"));
    ol_gate_auth_destroy(j);
}

Test(gate_auth, header_mode_refuses_networks_that_are_not) {
    static const char *const bad[] = {"10.0.0.1/8", "10.0.0.0/33", "example.com", "2001:db8::1/32", "10.0.0.0/8x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char errstr[256], text[64];
        snprintf(text, sizeof(text), "192.0.2.0/24, %s", bad[i]);
        cr_expect_null(header_auth(text, errstr, sizeof(errstr)), "%s", bad[i]);
        cr_expect(strstr(errstr, "property \"gate.auth.header.from\"") && strstr(errstr, bad[i]), "%s", errstr);
    }
}

Test(gate_auth, reads_the_user_and_level_a_proxy_sends) {
    ol_gate_auth_user_t who = {0};
    cr_expect_eq(ol_gate_auth_from_headers("UID7", "3", &who, NULL, 0), OL_GATE_AUTH_OK);
    cr_expect_str_eq(who.user, "UID7");
    cr_expect_eq(who.level, 3);
    cr_expect_eq(ol_gate_auth_from_headers(NULL, "3", &who, NULL, 0), OL_GATE_AUTH_MISSING);
    cr_expect_eq(ol_gate_auth_from_headers("", "3", &who, NULL, 0), OL_GATE_AUTH_MISSING);
    cr_expect_eq(ol_gate_auth_from_headers("u", NULL, &who, NULL, 0), OL_GATE_AUTH_INVALID);
    static const char *const bad[] = {"", "-1", "+1", "1.0", "2147483648", "3 ", "x", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect_eq(ol_gate_auth_from_headers("u", bad[i], &who, NULL, 0), OL_GATE_AUTH_INVALID, "level \"%s\"",
                     bad[i]);
    cr_expect_eq(ol_gate_auth_from_headers("u", "2147483647", &who, NULL, 0), OL_GATE_AUTH_OK);
    cr_expect_eq(ol_gate_auth_from_headers("a\tb", "1", &who, NULL, 0), OL_GATE_AUTH_INVALID);
}

Test(gate_auth, header_mode_needs_its_proxies_and_two_header_names) {
    static const struct {
        const char *name, *value, *has;
    } cases[] = {
        {"gate.auth.header.from", "", "gate.auth.header.from\": must name"},
        {"gate.auth.header.from", "10.0.0.300", "gate.auth.header.from\": \"10.0.0.300\""},
        {"gate.auth.header.user", "X Auth", "gate.auth.header.user\": not a header name"},
        {"gate.auth.header.level", "x-auth-user", "gate.auth.header.level\": must not be"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ol_conf_t *conf = ol_conf_new();
        char errstr[512] = "";
        cr_assert_eq(ol_conf_set(conf, "gate.auth", "header", errstr, sizeof(errstr)), OL_ERR_OK);
        cr_assert_eq(ol_conf_set(conf, "gate.auth.header.from", "10.0.0.0/8", errstr, sizeof(errstr)), OL_ERR_OK);
        cr_assert_eq(ol_conf_set(conf, cases[i].name, cases[i].value, errstr, sizeof(errstr)), OL_ERR_OK);
        ol_gate_auth_t *a;
        cr_expect_eq(ol_gate_auth_new(conf, &a, errstr, sizeof(errstr)), OL_ERR_CONFIG, "%s=%s", cases[i].name,
                     cases[i].value);
        cr_expect(strstr(errstr, cases[i].has), "%s", errstr);
        ol_conf_destroy(conf);
    }
}

/* ---- the body against the authenticated user ---- */

Test(gate_auth, names_the_body_field_that_claims_another_user) {
    ol_gate_auth_user_t who = {"UID1", 3};
    int32_t same = 3, higher = 5;
    cr_expect_null(ol_gate_auth_mismatch(&who, "UID1", &same));
    cr_expect_null(ol_gate_auth_mismatch(&who, NULL, NULL), "absent fields agree");
    cr_expect_str_eq(ol_gate_auth_mismatch(&who, "UID2", &same), "userID");
    cr_expect_str_eq(ol_gate_auth_mismatch(&who, "uid1", NULL), "userID", "ids are compared exactly");
    cr_expect_str_eq(ol_gate_auth_mismatch(&who, "UID1", &higher), "userLevel");
    cr_expect_str_eq(ol_gate_auth_mismatch(&who, NULL, &higher), "userLevel");
}

Test(gate_auth, refuses_with_401_and_the_bearer_challenge_or_403) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", NULL);
    ol_gate_auth_refusal_t no = ol_gate_auth_refusal(a, OL_GATE_AUTH_MISSING);
    cr_expect_eq(no.status, 401);
    cr_expect_str_eq(no.challenge, "Bearer", "no error code when no token came (RFC 6750 3.1)");
    no = ol_gate_auth_refusal(a, OL_GATE_AUTH_INVALID);
    cr_expect_eq(no.status, 401);
    cr_expect_str_eq(no.challenge, "Bearer error=\"invalid_token\"");
    cr_expect_str_eq(no.error, "invalid token");
    no = ol_gate_auth_refusal(a, OL_GATE_AUTH_EXPIRED);
    cr_expect_eq(no.status, 401);
    cr_expect_str_eq(no.challenge, "Bearer error=\"invalid_token\", error_description=\"expired\"");
    cr_expect_str_eq(no.error, "token expired");
    no = ol_gate_auth_refusal(a, OL_GATE_AUTH_FORBIDDEN);
    cr_expect_eq(no.status, 403);
    ol_gate_auth_destroy(a);
}

/* ---- the cache of verified tokens ---- */

Test(gate_auth, a_token_verified_once_is_remembered_but_its_exp_checked_again) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", "gate.auth.jwt.leeway.ms", "0", NULL);
    char set[128];
    snprintf(set, sizeof(set), "{\"exp\":%lld}", NOW_S + 60);
    char *claims = claims_with(set, NULL);
    char *token = sign(JWT_ALG_RS256, "auth/rsa.key.pem", claims);
    ol_gate_auth_user_t who = {0};
    char why[256];
    cr_assert_eq(ol_gate_auth_token(a, token, NOW_MS, &who, why, sizeof(why)), OL_GATE_AUTH_OK, "%s", why);
    cr_expect_str_eq(why, "ok", "verified the first time");
    memset(&who, 0, sizeof(who));
    cr_assert_eq(ol_gate_auth_token(a, token, NOW_MS + 1000, &who, why, sizeof(why)), OL_GATE_AUTH_OK);
    cr_expect_str_eq(why, "ok (verified before)");
    cr_expect_str_eq(who.user, "UID0000000001");
    cr_expect_eq(who.level, 5);
    cr_expect_eq(ol_gate_auth_token(a, token, NOW_MS + 61000, &who, why, sizeof(why)), OL_GATE_AUTH_EXPIRED,
                 "a remembered token expires: %s", why);
    cr_expect_str_eq(who.user, "", "nothing is filled in");
    /* a token differing in one signature byte is another token, verified */
    token[strlen(token) - 3] = token[strlen(token) - 3] == 'A' ? 'B' : 'A';
    cr_expect_eq(ol_gate_auth_token(a, token, NOW_MS, &who, why, sizeof(why)), OL_GATE_AUTH_INVALID, "%s", why);
    cr_expect_eq(ol_gate_auth_token(a, token, NOW_MS, &who, why, sizeof(why)), OL_GATE_AUTH_INVALID,
                 "refused tokens are not remembered");
    cr_expect_eq(ol_gate_auth_token(a, "", NOW_MS, &who, why, sizeof(why)), OL_GATE_AUTH_MISSING);
    free(token);
    free(claims);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, a_full_cache_forgets_the_oldest_tokens_and_verifies_them_again) {
    ol_gate_auth_t *a = make_auth("HS256", "auth/hmac.secret", "gate.auth.jwt.cache.entries", "16", NULL);
    enum { N = 200 };
    char *tokens[N];
    for (int i = 0; i < N; i++) {
        char set[64];
        snprintf(set, sizeof(set), "{\"sub\":\"u%d\",\"level\":%d}", i, i % 7);
        char *claims = claims_with(set, NULL);
        tokens[i] = sign(JWT_ALG_HS256, "auth/hmac.secret", claims);
        free(claims);
    }
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < N; i++) {
            ol_gate_auth_user_t who;
            char why[256], user[16];
            cr_assert_eq(ol_gate_auth_token(a, tokens[i], NOW_MS, &who, why, sizeof(why)), OL_GATE_AUTH_OK, "%s", why);
            snprintf(user, sizeof(user), "u%d", i);
            cr_assert_str_eq(who.user, user, "token %d got another user's entry", i);
            cr_assert_eq(who.level, i % 7);
        }
    /* the last one is still remembered */
    ol_gate_auth_user_t who;
    char why[256];
    cr_expect_eq(ol_gate_auth_token(a, tokens[N - 1], NOW_MS, &who, why, sizeof(why)), OL_GATE_AUTH_OK);
    cr_expect_str_eq(why, "ok (verified before)");
    for (int i = 0; i < N; i++)
        free(tokens[i]);
    ol_gate_auth_destroy(a);
}

Test(gate_auth, cache_entries_0_verifies_every_token) {
    ol_gate_auth_t *a = make_auth("RS256", "auth/rsa.pub.pem", "gate.auth.jwt.cache.entries", "0", NULL);
    char *claims = claims_with(NULL, NULL);
    char *token = sign(JWT_ALG_RS256, "auth/rsa.key.pem", claims);
    ol_gate_auth_user_t who;
    char why[256];
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(ol_gate_auth_token(a, token, NOW_MS, &who, why, sizeof(why)), OL_GATE_AUTH_OK);
        cr_expect_str_eq(why, "ok");
    }
    free(token);
    free(claims);
    ol_gate_auth_destroy(a);
}
