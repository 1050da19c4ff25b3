/* Who sends a request to the gate: JWT bearer tokens (libjwt; the key
 * checked with OpenSSL at start) or the headers of a trusted proxy. See
 * producers/gate_auth.h for the contract. */
#include "producers/gate_auth.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base/netaddr.h"
#include "common/base/util.h"

#define KEY_FILE_MAX 65536 /* bytes read from gate.auth.jwt.key.file */
#define HMAC_SECRET_MIN 32 /* RFC 7518 3.2: a key as long as the hash at least */
#define RSA_BITS_MIN 2048

/* Tokens verified, by their SHA-256: libjwt decodes the PEM key on every
 * call, some 0.4 ms of CPU with OpenSSL 3.0 (an HMAC takes microseconds),
 * while a user sends the same token with every request (buy, polls,
 * checkout). Only tokens that verified are kept, with their user, level and
 * exp; a hit checks exp against the clock again; the rest (signature, alg,
 * iss, aud, nbf and iat already past) cannot change while the process runs.
 * Shards of their own lock; the oldest entry of a full shard goes first. */
#define TSHARDS 16
typedef struct tentry_s {
    struct tentry_s *next;
    unsigned char digest[32];
    int64_t exp_ms;
    ol_gate_auth_user_t who;
} tentry_t;

typedef struct tshard_s {
    pthread_mutex_t lock;
    tentry_t **table, **ring;
    size_t nbuckets, cap, pos;
} tshard_t;

const char *const ol_gate_auth_outcome_names[] = {
#define OL_GATE_AUTH_NAME(name, str) str,
    OL_GATE_AUTH_OUTCOMES(OL_GATE_AUTH_NAME)
#undef OL_GATE_AUTH_NAME
        NULL};

struct ol_gate_auth_s {
    ol_gate_auth_mode_t mode;
    /* jwt */
    jwt_alg_t alg;
    unsigned char *key; /* the PEM public key or the HMAC secret */
    size_t key_len;
    char *issuer, *audience; /* "" = not checked */
    char *user_claim, *level_claim;
    int64_t leeway_ms;
    tshard_t *cache; /* NULL: gate.auth.jwt.cache.entries = 0 */
    /* header */
    char *hdr_user, *hdr_level;
    ol_netlist_t *from; /* gate.auth.header.from */
};

static void set_why(char *why, size_t why_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t why_size, const char *fmt, ...) {
    if (!why || !why_size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
}

/* ---- setup ----------------------------------------------------------------- */

/* The whole file (at most KEY_FILE_MAX bytes) as a new buffer. */
static ol_err_t read_key_file(const char *path, unsigned char **out, size_t *len, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (!*path)
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "property \"gate.auth.jwt.key.file\": must name the key file when gate.auth is jwt");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "property \"gate.auth.jwt.key.file\": cannot read \"%s\": %s", path, strerror(errno));
    unsigned char *buf = ol_xmalloc(KEY_FILE_MAX + 1);
    size_t n = fread(buf, 1, KEY_FILE_MAX + 1, fp);
    bool failed = ferror(fp);
    int saved = errno;
    fclose(fp);
    if (failed || n > KEY_FILE_MAX) {
        free(buf);
        return failed ? ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                                "property \"gate.auth.jwt.key.file\": cannot read \"%s\": %s", path, strerror(saved))
                      : ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                                "property \"gate.auth.jwt.key.file\": \"%s\" is larger than %d bytes: not a key", path,
                                KEY_FILE_MAX);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return OL_ERR_OK;
}

static void wipe_free(unsigned char *p, size_t n) {
    if (!p)
        return;
    explicit_bzero(p, n);
    free(p);
}

/* RS256: an RSA public key, PEM (SubjectPublicKeyInfo), as libjwt reads it. */
static ol_err_t check_rsa_key(const char *path, const unsigned char *key, size_t len, char *errstr,
                              size_t errstr_size) {
    BIO *bio = BIO_new_mem_buf(key, (int)len);
    EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    ol_err_t err = OL_ERR_OK;
    if (!pk)
        err =
            ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                    "property \"gate.auth.jwt.key.file\": \"%s\" is not a PEM public key (-----BEGIN PUBLIC KEY-----), "
                    "which RS256 needs",
                    path);
    else if (EVP_PKEY_base_id(pk) != EVP_PKEY_RSA)
        err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                      "property \"gate.auth.jwt.key.file\": \"%s\" is not an RSA public key, which RS256 needs", path);
    else if (EVP_PKEY_get_bits(pk) < RSA_BITS_MIN)
        err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                      "property \"gate.auth.jwt.key.file\": the RSA key in \"%s\" has %d bits, fewer than %d", path,
                      EVP_PKEY_get_bits(pk), RSA_BITS_MIN);
    EVP_PKEY_free(pk);
    return err;
}

/* HS256: the file's bytes, one trailing line end dropped. */
static ol_err_t check_hmac_secret(const char *path, unsigned char *key, size_t *len, char *errstr, size_t errstr_size) {
    size_t n = *len;
    if (n && key[n - 1] == '\n')
        n--;
    if (n && key[n - 1] == '\r')
        n--;
    *len = n;
    if (memmem(key, n, "-----BEGIN", 10))
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "property \"gate.auth.jwt.key.file\": \"%s\" holds a PEM key, not an HMAC secret: HS256 with a "
                       "public key as its secret lets anyone sign (use gate.auth.jwt.alg=RS256 for a key pair)",
                       path);
    if (n < HMAC_SECRET_MIN)
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "property \"gate.auth.jwt.key.file\": the HMAC secret in \"%s\" has %zu bytes, fewer than %d",
                       path, n, HMAC_SECRET_MIN);
    return OL_ERR_OK;
}

static tshard_t *cache_new(size_t entries) {
    tshard_t *c = ol_xcalloc(TSHARDS, sizeof(*c));
    for (int i = 0; i < TSHARDS; i++) {
        c[i].cap = entries / TSHARDS ? entries / TSHARDS : 1;
        c[i].nbuckets = 16;
        while (c[i].nbuckets < c[i].cap)
            c[i].nbuckets *= 2;
        c[i].table = ol_xcalloc(c[i].nbuckets, sizeof(*c[i].table));
        c[i].ring = ol_xcalloc(c[i].cap, sizeof(*c[i].ring));
        pthread_mutex_init(&c[i].lock, NULL);
    }
    return c;
}

static void cache_destroy(tshard_t *c) {
    if (!c)
        return;
    for (int i = 0; i < TSHARDS; i++) {
        for (size_t k = 0; k < c[i].cap; k++)
            free(c[i].ring[k]);
        free(c[i].ring);
        free(c[i].table);
        pthread_mutex_destroy(&c[i].lock);
    }
    free(c);
}

static size_t bucket_of(const tshard_t *sh, const unsigned char *digest) {
    uint64_t h;
    memcpy(&h, digest, sizeof(h));
    return (size_t)(h & (sh->nbuckets - 1));
}

/* The entry of digest in its shard (under its lock), or NULL. */
static tentry_t *cache_find(tshard_t *sh, const unsigned char *digest) {
    tentry_t *e = sh->table[bucket_of(sh, digest)];
    while (e && CRYPTO_memcmp(e->digest, digest, sizeof(e->digest)))
        e = e->next;
    return e;
}

static void cache_put(tshard_t *sh, const unsigned char *digest, int64_t exp_ms, const ol_gate_auth_user_t *who) {
    pthread_mutex_lock(&sh->lock);
    if (cache_find(sh, digest)) {
        pthread_mutex_unlock(&sh->lock);
        return;
    }
    tentry_t *old = sh->ring[sh->pos];
    if (old) {
        tentry_t **pp = &sh->table[bucket_of(sh, old->digest)];
        while (*pp != old)
            pp = &(*pp)->next;
        *pp = old->next;
    } else {
        old = ol_xmalloc(sizeof(*old));
    }
    memcpy(old->digest, digest, sizeof(old->digest));
    old->exp_ms = exp_ms;
    old->who = *who;
    size_t b = bucket_of(sh, digest);
    old->next = sh->table[b];
    sh->table[b] = old;
    sh->ring[sh->pos] = old;
    sh->pos = (sh->pos + 1) % sh->cap;
    pthread_mutex_unlock(&sh->lock);
}

static bool header_name_ok(const char *s) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_'))
            return false;
    return true;
}

ol_err_t ol_gate_auth_new(const ol_conf_t *conf, ol_gate_auth_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    const char *mode = ol_conf_str(conf, "gate.auth");
    if (!strcmp(mode, "none"))
        return OL_ERR_OK;
    ol_gate_auth_t *a = ol_xcalloc(1, sizeof(*a));
    ol_err_t err = OL_ERR_OK;
    char why[256];
    if (!strcmp(mode, "jwt")) {
        a->mode = OL_GATE_AUTH_MODE_JWT;
        a->alg = !strcmp(ol_conf_str(conf, "gate.auth.jwt.alg"), "HS256") ? JWT_ALG_HS256 : JWT_ALG_RS256;
        a->issuer = ol_xstrdup(ol_conf_str(conf, "gate.auth.jwt.issuer"));
        a->audience = ol_xstrdup(ol_conf_str(conf, "gate.auth.jwt.audience"));
        a->user_claim = ol_xstrdup(ol_conf_str(conf, "gate.auth.jwt.user.claim"));
        a->level_claim = ol_xstrdup(ol_conf_str(conf, "gate.auth.jwt.level.claim"));
        a->leeway_ms = ol_conf_int(conf, "gate.auth.jwt.leeway.ms");
        if (ol_conf_int(conf, "gate.auth.jwt.cache.entries") > 0)
            a->cache = cache_new((size_t)ol_conf_int(conf, "gate.auth.jwt.cache.entries"));
        const char *path = ol_conf_str(conf, "gate.auth.jwt.key.file");
        if (!*a->user_claim || !*a->level_claim)
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "property \"gate.auth.jwt.%s.claim\": must not be empty",
                          *a->user_claim ? "level" : "user");
        else if (!strcmp(a->user_claim, a->level_claim))
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                          "property \"gate.auth.jwt.level.claim\": must not be gate.auth.jwt.user.claim");
        else if (!(err = read_key_file(path, &a->key, &a->key_len, errstr, errstr_size)))
            err = a->alg == JWT_ALG_RS256 ? check_rsa_key(path, a->key, a->key_len, errstr, errstr_size)
                                          : check_hmac_secret(path, a->key, &a->key_len, errstr, errstr_size);
    } else {
        a->mode = OL_GATE_AUTH_MODE_HEADER;
        a->hdr_user = ol_xstrdup(ol_conf_str(conf, "gate.auth.header.user"));
        a->hdr_level = ol_xstrdup(ol_conf_str(conf, "gate.auth.header.level"));
        if (!header_name_ok(a->hdr_user) || !header_name_ok(a->hdr_level))
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "property \"gate.auth.header.%s\": not a header name",
                          header_name_ok(a->hdr_user) ? "level" : "user");
        else if (!strcasecmp(a->hdr_user, a->hdr_level))
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                          "property \"gate.auth.header.level\": must not be gate.auth.header.user");
        else if (ol_netlist_parse(ol_conf_str(conf, "gate.auth.header.from"), &a->from, why, sizeof(why)))
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "property \"gate.auth.header.from\": %s", why);
        else if (!ol_netlist_count(a->from))
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                          "property \"gate.auth.header.from\": must name the networks of the authenticating proxies "
                          "when gate.auth is header");
    }
    if (err) {
        ol_gate_auth_destroy(a);
        return err;
    }
    *out = a;
    return OL_ERR_OK;
}

void ol_gate_auth_destroy(ol_gate_auth_t *a) {
    if (!a)
        return;
    wipe_free(a->key, a->key_len);
    cache_destroy(a->cache);
    free(a->issuer);
    free(a->audience);
    free(a->user_claim);
    free(a->level_claim);
    free(a->hdr_user);
    free(a->hdr_level);
    ol_netlist_destroy(a->from);
    free(a);
}

ol_gate_auth_mode_t ol_gate_auth_mode(const ol_gate_auth_t *a) {
    return a ? a->mode : OL_GATE_AUTH_MODE_NONE;
}

void ol_gate_auth_describe(const ol_gate_auth_t *a, char *out, size_t out_size) {
    if (!a)
        snprintf(out, out_size, "no authentication: the body's userID and userLevel are believed");
    else if (a->mode == OL_GATE_AUTH_MODE_JWT)
        snprintf(out, out_size, "authentication by JWT bearer token: %s, issuer %s, audience %s, claims %s and %s",
                 jwt_alg_str(a->alg), *a->issuer ? a->issuer : "(any)", *a->audience ? a->audience : "(any)",
                 a->user_claim, a->level_claim);
    else
        snprintf(out, out_size, "authentication by the headers %s and %s of %zu trusted proxy networks", a->hdr_user,
                 a->hdr_level, ol_netlist_count(a->from));
}

/* ---- jwt ------------------------------------------------------------------ */

static bool user_ok(const char *s, size_t len) {
    if (len < 1 || len > OL_GATE_AUTH_USER_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* A NumericDate (seconds, integer or not) in ms; false when not a number
 * or out of range. */
static bool numeric_date_ms(const json_t *v, int64_t *ms) {
    double d;
    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v))
        d = json_real_value(v);
    else
        return false;
    if (!isfinite(d) || d < -1e15 || d > 1e15)
        return false;
    *ms = (int64_t)(d * 1000.0);
    return true;
}

static bool audience_has(const json_t *aud, const char *want) {
    if (json_is_string(aud))
        return !strcmp(json_string_value(aud), want);
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v) {
        if (json_is_string(v) && !strcmp(json_string_value(v), want))
            return true;
    }
    return false;
}

/* The claims of a token whose signature verified. */
static ol_gate_auth_outcome_t check_claims(const ol_gate_auth_t *a, const json_t *claims, int64_t now_ms,
                                           ol_gate_auth_user_t *out, int64_t *exp_ms, char *why, size_t why_size) {
    if (*a->issuer) {
        const json_t *iss = json_object_get(claims, "iss");
        if (!json_is_string(iss) || strcmp(json_string_value(iss), a->issuer)) {
            set_why(why, why_size, "iss is not gate.auth.jwt.issuer");
            return OL_GATE_AUTH_INVALID;
        }
    }
    if (*a->audience && !audience_has(json_object_get(claims, "aud"), a->audience)) {
        set_why(why, why_size, "aud does not hold gate.auth.jwt.audience");
        return OL_GATE_AUTH_INVALID;
    }
    const json_t *user = json_object_get(claims, a->user_claim), *level = json_object_get(claims, a->level_claim);
    if (!json_is_string(user) || !user_ok(json_string_value(user), json_string_length(user))) {
        set_why(why, why_size, "claim %s is %s", a->user_claim,
                !user ? "missing" : "not a user id (a string of 1 to 128 bytes, no control characters)");
        return OL_GATE_AUTH_INVALID;
    }
    if (!json_is_integer(level) || json_integer_value(level) < 0 || json_integer_value(level) > INT32_MAX) {
        set_why(why, why_size, "claim %s is %s", a->level_claim,
                !level ? "missing" : "not an integer from 0 to 2147483647");
        return OL_GATE_AUTH_INVALID;
    }
    int64_t exp, t;
    const json_t *v;
    if ((v = json_object_get(claims, "nbf")) && (!numeric_date_ms(v, &t) || t > now_ms + a->leeway_ms)) {
        set_why(why, why_size, "nbf is %s", json_is_number(v) ? "in the future" : "not a number");
        return OL_GATE_AUTH_INVALID;
    }
    if ((v = json_object_get(claims, "iat")) && (!numeric_date_ms(v, &t) || t > now_ms + a->leeway_ms)) {
        set_why(why, why_size, "iat is %s", json_is_number(v) ? "in the future" : "not a number");
        return OL_GATE_AUTH_INVALID;
    }
    if (!(v = json_object_get(claims, "exp")) || !numeric_date_ms(v, &exp)) {
        set_why(why, why_size, "exp is %s", v ? "not a number" : "missing");
        return OL_GATE_AUTH_INVALID;
    }
    if (exp < now_ms - a->leeway_ms) {
        set_why(why, why_size, "expired %lld s ago", (long long)((now_ms - exp) / 1000));
        return OL_GATE_AUTH_EXPIRED;
    }
    memcpy(out->user, json_string_value(user), json_string_length(user) + 1);
    out->level = (int32_t)json_integer_value(level);
    *exp_ms = exp;
    return OL_GATE_AUTH_OK;
}

/* ol_gate_auth_verify, with the token's exp when OK. */
static ol_gate_auth_outcome_t verify(const ol_gate_auth_t *a, const char *token, int64_t now_ms,
                                     ol_gate_auth_user_t *out, int64_t *exp_ms, char *why, size_t why_size) {
    OL_ASSERT(a && a->mode == OL_GATE_AUTH_MODE_JWT);
    set_why(why, why_size, "ok");
    if (!token || !*token) {
        set_why(why, why_size, "no bearer token");
        return OL_GATE_AUTH_MISSING;
    }
    if (strlen(token) > OL_GATE_AUTH_TOKEN_MAX) {
        set_why(why, why_size, "token longer than %d bytes", OL_GATE_AUTH_TOKEN_MAX);
        return OL_GATE_AUTH_INVALID;
    }
    jwt_t *jwt = NULL;
    char *text = NULL;
    json_t *claims = NULL;
    ol_gate_auth_outcome_t rc = OL_GATE_AUTH_INVALID;
    /* libjwt verifies under the alg the token's header names, with our key:
     * the alg is checked against ours right after (alg confusion: an HS256
     * token keyed with the RSA public key verifies as HMAC). */
    if (jwt_decode(&jwt, token, a->key, (int)a->key_len)) {
        set_why(why, why_size, "malformed, or its signature does not verify");
        goto out;
    }
    if (jwt_get_alg(jwt) != a->alg) {
        set_why(why, why_size, "alg %s is not gate.auth.jwt.alg (%s)", jwt_alg_str(jwt_get_alg(jwt)),
                jwt_alg_str(a->alg));
        goto out;
    }
    char *crit = jwt_get_headers_json(jwt, "crit");
    if (crit) { /* RFC 7515 4.1.11: extensions we do not know must fail */
        free(crit);
        set_why(why, why_size, "crit header: extensions not understood");
        goto out;
    }
    if (!(text = jwt_get_grants_json(jwt, NULL)) || !(claims = json_loads(text, 0, NULL)) || !json_is_object(claims)) {
        set_why(why, why_size, "claims are not a JSON object");
        goto out;
    }
    rc = check_claims(a, claims, now_ms, out, exp_ms, why, why_size);
out:
    json_decref(claims);
    free(text);
    jwt_free(jwt);
    return rc;
}

ol_gate_auth_outcome_t ol_gate_auth_verify(const ol_gate_auth_t *a, const char *token, int64_t now_ms,
                                           ol_gate_auth_user_t *out, char *why, size_t why_size) {
    int64_t exp_ms;
    return verify(a, token, now_ms, out, &exp_ms, why, why_size);
}

ol_gate_auth_outcome_t ol_gate_auth_token(ol_gate_auth_t *a, const char *token, int64_t now_ms,
                                          ol_gate_auth_user_t *out, char *why, size_t why_size) {
    unsigned char digest[32];
    size_t n = token ? strlen(token) : 0;
    if (!a->cache || !n || n > OL_GATE_AUTH_TOKEN_MAX || !EVP_Digest(token, n, digest, NULL, EVP_sha256(), NULL))
        return ol_gate_auth_verify(a, token, now_ms, out, why, why_size);
    tshard_t *sh = &a->cache[digest[8] % TSHARDS];
    pthread_mutex_lock(&sh->lock);
    tentry_t *e = cache_find(sh, digest);
    int64_t exp_ms = e ? e->exp_ms : 0;
    if (e)
        *out = e->who;
    pthread_mutex_unlock(&sh->lock);
    if (e) {
        if (exp_ms >= now_ms - a->leeway_ms) {
            set_why(why, why_size, "ok (verified before)");
            return OL_GATE_AUTH_OK;
        }
        memset(out, 0, sizeof(*out));
        set_why(why, why_size, "expired %lld s ago", (long long)((now_ms - exp_ms) / 1000));
        return OL_GATE_AUTH_EXPIRED;
    }
    ol_gate_auth_outcome_t rc = verify(a, token, now_ms, out, &exp_ms, why, why_size);
    if (rc == OL_GATE_AUTH_OK)
        cache_put(sh, digest, exp_ms, out);
    return rc;
}

const char *ol_gate_auth_bearer(const char *value, size_t *len) {
    if (!value || strncasecmp(value, "Bearer", 6) || (value[6] != ' ' && value[6] != '\t'))
        return NULL;
    const char *s = value + 6;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    *len = n;
    return s;
}

/* ---- header --------------------------------------------------------------- */

bool ol_gate_auth_trusts_peer(const ol_gate_auth_t *a, const struct sockaddr *peer) {
    ol_netaddr_t addr;
    return a->mode == OL_GATE_AUTH_MODE_HEADER && ol_netaddr_from_sockaddr(peer, &addr) &&
           ol_netlist_has(a->from, &addr);
}

ol_gate_auth_outcome_t ol_gate_auth_from_headers(const char *user, const char *level, ol_gate_auth_user_t *out,
                                                 char *why, size_t why_size) {
    set_why(why, why_size, "ok");
    if (!user || !*user) {
        set_why(why, why_size, "no user header");
        return OL_GATE_AUTH_MISSING;
    }
    if (!user_ok(user, strlen(user))) {
        set_why(why, why_size, "the user header is not a user id (1 to 128 bytes, no control characters)");
        return OL_GATE_AUTH_INVALID;
    }
    int64_t v = 0;
    const char *p = level ? level : "";
    if (!*p) {
        set_why(why, why_size, "no level header");
        return OL_GATE_AUTH_INVALID;
    }
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || (v = v * 10 + (*p - '0')) > INT32_MAX) {
            set_why(why, why_size, "the level header is not an integer from 0 to 2147483647");
            return OL_GATE_AUTH_INVALID;
        }
    }
    memcpy(out->user, user, strlen(user) + 1);
    out->level = (int32_t)v;
    return OL_GATE_AUTH_OK;
}

/* ---- requests --------------------------------------------------------------- */

typedef struct count_s {
    const char *name;
    int n;
} count_t;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    (void)value;
    count_t *c = cls;
    if (key && !strcasecmp(key, c->name))
        c->n++;
    return MHD_YES;
}

/* The only value of header name: *twice set when it occurs more than once. */
static const char *header_once(struct MHD_Connection *conn, const char *name, bool *twice) {
    count_t c = {name, 0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &c);
    *twice = c.n > 1;
    return c.n == 1 ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name) : NULL;
}

ol_gate_auth_outcome_t ol_gate_auth_request(ol_gate_auth_t *a, struct MHD_Connection *conn, int64_t now_ms,
                                            ol_gate_auth_user_t *out, char *why, size_t why_size) {
    bool twice = false;
    if (a->mode == OL_GATE_AUTH_MODE_HEADER) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        if (!ci || !ol_gate_auth_trusts_peer(a, ci->client_addr)) {
            set_why(why, why_size, "the peer is not in gate.auth.header.from");
            return OL_GATE_AUTH_FORBIDDEN;
        }
        bool twice_level = false;
        const char *user = header_once(conn, a->hdr_user, &twice);
        const char *level = header_once(conn, a->hdr_level, &twice_level);
        if (twice || twice_level) {
            set_why(why, why_size, "header %s more than once", twice ? a->hdr_user : a->hdr_level);
            return OL_GATE_AUTH_INVALID;
        }
        return ol_gate_auth_from_headers(user, level, out, why, why_size);
    }
    const char *value = header_once(conn, MHD_HTTP_HEADER_AUTHORIZATION, &twice);
    if (twice) {
        set_why(why, why_size, "header Authorization more than once");
        return OL_GATE_AUTH_INVALID;
    }
    size_t len = 0;
    const char *token = ol_gate_auth_bearer(value, &len);
    if (!token || !len) {
        set_why(why, why_size, value ? "Authorization is not a bearer token" : "no Authorization header");
        return OL_GATE_AUTH_MISSING;
    }
    if (len > OL_GATE_AUTH_TOKEN_MAX) {
        set_why(why, why_size, "token longer than %d bytes", OL_GATE_AUTH_TOKEN_MAX);
        return OL_GATE_AUTH_INVALID;
    }
    char buf[OL_GATE_AUTH_TOKEN_MAX + 1];
    memcpy(buf, token, len);
    buf[len] = '\0';
    return ol_gate_auth_token(a, buf, now_ms, out, why, why_size);
}

ol_gate_auth_refusal_t ol_gate_auth_refusal(const ol_gate_auth_t *a, ol_gate_auth_outcome_t outcome) {
    bool jwt = ol_gate_auth_mode(a) == OL_GATE_AUTH_MODE_JWT;
    switch (outcome) {
    case OL_GATE_AUTH_FORBIDDEN:
        return (ol_gate_auth_refusal_t){MHD_HTTP_FORBIDDEN, "requests must come through the authenticating proxy", NULL,
                                        NULL};
    case OL_GATE_AUTH_MISSING:
        return jwt ? (ol_gate_auth_refusal_t){MHD_HTTP_UNAUTHORIZED, "authentication required", "Authorization",
                                              "Bearer"}
                   : (ol_gate_auth_refusal_t){MHD_HTTP_UNAUTHORIZED, "authentication required", NULL, NULL};
    case OL_GATE_AUTH_EXPIRED:
        return (ol_gate_auth_refusal_t){MHD_HTTP_UNAUTHORIZED, "token expired", "Authorization",
                                        "Bearer error=\"invalid_token\", error_description=\"expired\""};
    default:
        return jwt ? (ol_gate_auth_refusal_t){MHD_HTTP_UNAUTHORIZED, "invalid token", "Authorization",
                                              "Bearer error=\"invalid_token\""}
                   : (ol_gate_auth_refusal_t){MHD_HTTP_UNAUTHORIZED, "invalid authentication headers", NULL, NULL};
    }
}

const char *ol_gate_auth_mismatch(const ol_gate_auth_user_t *who, const char *user, const int32_t *level) {
    if (user && strcmp(user, who->user))
        return "userID";
    if (level && *level != who->level)
        return "userLevel";
    return NULL;
}
