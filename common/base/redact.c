#include "common/base/redact.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base/strbuf.h"
#include "common/base/util.h"

/* ---- which properties are secret ----------------------------------------- */

/* librdkafka's sensitive properties (the _RK_SENSITIVE flag of its
 * configuration table). in_text: the value is a secret by itself, so it is
 * also looked for in free text; a user name, a file name or a CA
 * certificate is hidden where the configuration is shown, but would only
 * blank out ordinary text. */
static const struct {
    const char *name;
    bool in_text;
} kafka_sensitive[] = {
    {"sasl.username", false},
    {"sasl.password", true},
    {"sasl.oauthbearer.config", true},
    {"sasl.oauthbearer.client.secret", true},
    {"sasl.oauthbearer.assertion.private.key.file", false},
    {"sasl.oauthbearer.assertion.private.key.passphrase", true},
    {"sasl.oauthbearer.assertion.private.key.pem", true},
    {"ssl.key.location", false},
    {"ssl.key.password", true},
    {"ssl.key.pem", true},
    {"ssl_key", true},
    {"ssl.keystore.password", true},
    {"ssl.ca.pem", false},
};

/* Any other property whose name holds one of these is a secret too
 * (properties of newer librdkafka versions, plugins). */
static const char *const secret_words[] = {"password", "secret", "passphrase", "private.key", "key.pem", "jaas"};

/* 0: not secret; 1: secret, hidden where shown; 2: also looked for in text. */
static int secret_kind(const char *name) {
    if (!strncmp(name, "kafka.", 6))
        name += 6;
    else if (!strncmp(name, "pg.", 3))
        return 0; /* pg.conninfo: only its passwords */
    for (size_t i = 0; i < sizeof(kafka_sensitive) / sizeof(kafka_sensitive[0]); i++)
        if (!strcasecmp(kafka_sensitive[i].name, name))
            return kafka_sensitive[i].in_text ? 2 : 1;
    for (size_t i = 0; i < sizeof(secret_words) / sizeof(secret_words[0]); i++)
        if (strcasestr(name, secret_words[i]))
            return 2;
    return 0;
}

bool ol_redact_is_secret(const char *name) {
    return secret_kind(name) != 0;
}

/* ---- where the passwords of a conninfo are ------------------------------- */

typedef enum span_kind_e {
    SPAN_WORD,   /* keyword value, unquoted: backslash escapes */
    SPAN_QUOTED, /* keyword value in single quotes: backslash escapes */
    SPAN_URI,    /* percent-encoded */
    SPAN_RAW     /* malformed: taken as written */
} span_kind_t;

typedef struct span_s {
    size_t start, len;
    span_kind_t kind;
} span_t;

typedef struct spans_s {
    span_t *v;
    size_t n, cap;
} spans_t;

static void span_add(spans_t *s, size_t start, size_t len, span_kind_t kind) {
    if (!len)
        return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->v = ol_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = (span_t){start, len, kind};
}

/* Extends the last span to end at end (a malformed continuation). */
static void span_extend(spans_t *s, size_t end) {
    span_t *last = &s->v[s->n - 1];
    last->len = end - last->start;
    last->kind = SPAN_RAW;
}

static bool secret_key(const char *k, size_t len) {
    return (len == 8 && !strncasecmp(k, "password", 8)) || (len == 11 && !strncasecmp(k, "sslpassword", 11));
}

/* The keyword form, read as libpq reads it: key, optional blanks, "=",
 * optional blanks, a value (single-quoted, or up to a blank; backslash
 * escapes the next character in both). */
static void keyword_spans(const char *s, spans_t *out) {
    size_t n = strlen(s), i = 0;
    /* after a password (the last span is open), after a key "password"
     * without "=" (a span to open), or neither */
    enum { NONE, KEY, VALUE } after = NONE;
    while (i < n) {
        while (i < n && isspace((unsigned char)s[i]))
            i++;
        if (i >= n)
            break;
        size_t k = i;
        while (i < n && s[i] != '=' && !isspace((unsigned char)s[i]))
            i++;
        size_t klen = i - k, j = i;
        while (j < n && isspace((unsigned char)s[j]))
            j++;
        if (j >= n || s[j] != '=') {
            /* a word without "=": libpq refuses it, naming it. After a
             * password, or after the key "password" itself, it may be
             * (part of) the password: a blank in it, a missing "=". */
            if (after == VALUE) {
                span_extend(out, i);
            } else if (after == KEY) {
                span_add(out, k, klen, SPAN_RAW);
                after = VALUE;
            } else if (secret_key(s + k, klen)) {
                after = KEY;
            }
            continue;
        }
        j++;
        while (j < n && isspace((unsigned char)s[j]))
            j++;
        size_t v = j;
        span_kind_t kind = SPAN_WORD;
        if (j < n && s[j] == '\'') {
            kind = SPAN_QUOTED;
            for (j++; j < n && s[j] != '\''; j++)
                if (s[j] == '\\' && j + 1 < n)
                    j++;
            if (j < n)
                j++; /* the closing quote; unterminated: to the end */
        } else {
            for (; j < n && !isspace((unsigned char)s[j]); j++)
                if (s[j] == '\\' && j + 1 < n)
                    j++;
        }
        after = NONE;
        if (secret_key(s + k, klen) && j > v) {
            span_add(out, v, j - v, kind);
            after = VALUE;
        }
        i = j;
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* s[0..len) percent-decoded (invalid sequences kept) as a new string. */
static char *percent_decode(const char *s, size_t len) {
    char *out = ol_xmalloc(len + 1);
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
            out[w++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[w++] = s[i];
        }
    }
    out[w] = '\0';
    return out;
}

static size_t uri_prefix(const char *s) {
    if (!strncasecmp(s, "postgresql://", 13))
        return 13;
    if (!strncasecmp(s, "postgres://", 11))
        return 11;
    return 0;
}

/* The URI form: postgresql://[user[:password]@][hosts][/dbname][?k=v&...].
 * The user part ends at the first "@" before any "/", as libpq reads it;
 * a further "@" before the hosts end (a "@" left unencoded in the
 * password) is taken into the password. */
static void uri_spans(const char *s, size_t prefix, spans_t *out) {
    size_t n = strlen(s), a = prefix, e = a;
    while (e < n && s[e] != '@' && s[e] != '/')
        e++;
    size_t rest = a;
    if (e < n && s[e] == '@') {
        size_t at = e;
        for (size_t f = e + 1; f < n && s[f] != '/' && s[f] != '?'; f++)
            if (s[f] == '@')
                at = f;
        const char *colon = memchr(s + a, ':', at - a);
        if (colon)
            span_add(out, (size_t)(colon + 1 - s), at - (size_t)(colon + 1 - s), SPAN_URI);
        rest = at + 1;
    }
    const char *q = strchr(s + rest, '?');
    if (!q)
        return;
    for (size_t p = (size_t)(q + 1 - s); p < n;) {
        size_t end = p;
        while (end < n && s[end] != '&')
            end++;
        const char *eq = memchr(s + p, '=', end - p);
        if (eq) {
            char *key = percent_decode(s + p, (size_t)(eq - (s + p)));
            if (secret_key(key, strlen(key)))
                span_add(out, (size_t)(eq + 1 - s), end - (size_t)(eq + 1 - s), SPAN_URI);
            free(key);
        }
        p = end + 1;
    }
}

static void conninfo_spans(const char *conninfo, spans_t *out) {
    size_t prefix = uri_prefix(conninfo);
    if (prefix)
        uri_spans(conninfo, prefix, out);
    else
        keyword_spans(conninfo, out);
}

/* The value of a span as libpq reads it, as a new string. */
static char *span_decode(const char *s, const span_t *sp) {
    const char *v = s + sp->start;
    size_t len = sp->len;
    switch (sp->kind) {
    case SPAN_URI:
        return percent_decode(v, len);
    case SPAN_RAW:
        return ol_xstrndup(v, len);
    case SPAN_QUOTED:
        v++, len--;
        if (len && v[len - 1] == '\'')
            len--;
        /* fall through */
    case SPAN_WORD:
        break;
    }
    char *out = ol_xmalloc(len + 1);
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '\\' && i + 1 < len)
            i++;
        out[w++] = v[i];
    }
    out[w] = '\0';
    return out;
}

char *ol_redact_conninfo(const char *conninfo) {
    spans_t sp = {0};
    conninfo_spans(conninfo, &sp);
    size_t n = strlen(conninfo);
    char *out = ol_xmalloc(n + sp.n * sizeof(OL_REDACTED) + 1);
    size_t r = 0, w = 0;
    for (size_t i = 0; i < sp.n; i++) {
        memcpy(out + w, conninfo + r, sp.v[i].start - r);
        w += sp.v[i].start - r;
        memcpy(out + w, OL_REDACTED, sizeof(OL_REDACTED) - 1);
        w += sizeof(OL_REDACTED) - 1;
        r = sp.v[i].start + sp.v[i].len;
    }
    memcpy(out + w, conninfo + r, n - r + 1);
    free(sp.v);
    return out;
}

char *ol_redact_value(const char *name, const char *value) {
    if (!strcmp(name, "pg.conninfo"))
        return ol_redact_conninfo(value);
    if (*value && ol_redact_is_secret(name))
        return ol_xstrdup(OL_REDACTED);
    return ol_xstrdup(value);
}

/* ---- secrets in text ------------------------------------------------------ */

typedef struct secrets_s {
    char **v;
    size_t n, cap;
} secrets_t;

static secrets_t remembered;

static void secret_add(secrets_t *s, const char *value, size_t len) {
    if (len < OL_REDACT_TEXT_MIN)
        return;
    for (size_t i = 0; i < s->n; i++)
        if (strlen(s->v[i]) == len && !memcmp(s->v[i], value, len))
            return;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = ol_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = ol_xstrndup(value, len);
}

static void secrets_free(secrets_t *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    *s = (secrets_t){0};
}

/* The passwords of conninfo, as written and as libpq reads them. */
static void conninfo_secrets(const char *conninfo, secrets_t *out) {
    spans_t sp = {0};
    conninfo_spans(conninfo, &sp);
    for (size_t i = 0; i < sp.n; i++) {
        secret_add(out, conninfo + sp.v[i].start, sp.v[i].len);
        char *plain = span_decode(conninfo, &sp.v[i]);
        secret_add(out, plain, strlen(plain));
        free(plain);
    }
    free(sp.v);
}

static int add_kafka_secret(void *opaque, const char *name, const char *value) {
    secrets_t *out = opaque;
    if (secret_kind(name) != 2)
        return 0;
    secret_add(out, value, strlen(value));
    /* and its words (a PEM's lines, an oauthbearer config's pairs): a
     * message may quote one */
    for (const char *p = value; *p;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        size_t len = 0;
        while (p[len] && !isspace((unsigned char)p[len]))
            len++;
        if (len && len != strlen(value))
            secret_add(out, p, len);
        p += len;
    }
    return 0;
}

static int by_length_desc(const void *a, const void *b) {
    size_t la = strlen(*(char *const *)a), lb = strlen(*(char *const *)b);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

void ol_redact_remember(const ol_conf_t *conf) {
    secrets_free(&remembered);
    if (!conf)
        return;
    conninfo_secrets(ol_conf_str(conf, "pg.conninfo"), &remembered);
    ol_conf_foreach_kafka(conf, add_kafka_secret, &remembered);
    /* the longest first, so that a secret holding another is replaced whole */
    if (remembered.n)
        qsort(remembered.v, remembered.n, sizeof(*remembered.v), by_length_desc);
}

/* Copies in to out (out_size > 0), every one of the secrets (longest first)
 * replaced by OL_REDACTED. */
static void scrub(const secrets_t *s, const char *in, char *out, size_t out_size) {
    size_t w = 0;
    while (*in && w + 1 < out_size) {
        size_t hit = 0;
        for (size_t i = 0; i < s->n && !hit; i++) {
            size_t len = strlen(s->v[i]);
            if (!strncmp(in, s->v[i], len))
                hit = len;
        }
        if (!hit) {
            out[w++] = *in++;
            continue;
        }
        for (const char *r = OL_REDACTED; *r && w + 1 < out_size; r++)
            out[w++] = *r;
        in += hit;
    }
    out[w] = '\0';
}

char *ol_redact_text(const char *in, char *out, size_t out_size) {
    if (!out_size)
        return out;
    scrub(&remembered, in, out, out_size);
    return out;
}

void ol_redact_text_inplace(char *buf, size_t buf_size) {
    if (!remembered.n || !buf_size)
        return;
    char *copy = ol_xstrdup(buf);
    scrub(&remembered, copy, buf, buf_size);
    free(copy);
}

void ol_redact_conninfo_msg(const char *conninfo, const char *msg, char *out, size_t out_size) {
    if (!out_size)
        return;
    char *red = ol_redact_conninfo(conninfo);
    ol_strbuf_t t = OL_STRBUF_INIT;
    ol_strbuf_put(&t, "", 0);
    /* a quoted piece that conninfo holds but its redacted form does not
     * overlaps a password */
    for (const char *m = msg; *m;) {
        const char *close = *m == '"' ? strchr(m + 1, '"') : NULL;
        if (!close) {
            ol_strbuf_put(&t, m++, 1);
            continue;
        }
        char *piece = ol_xstrndup(m + 1, (size_t)(close - m - 1)), *shown = NULL;
        if (*piece && strstr(conninfo, piece) && !strstr(red, piece)) {
            shown = ol_redact_conninfo(piece); /* a whole URI: its redacted form */
            if (!strcmp(shown, piece) || !strstr(red, shown)) {
                free(shown);
                shown = ol_xstrdup(OL_REDACTED);
            }
        }
        ol_strbuf_put(&t, "\"", 1);
        ol_strbuf_put(&t, shown ? shown : piece, strlen(shown ? shown : piece));
        ol_strbuf_put(&t, "\"", 1);
        free(piece);
        free(shown);
        m = close + 1;
    }
    /* then the passwords of conninfo, and every remembered secret */
    secrets_t own = {0};
    conninfo_secrets(conninfo, &own);
    for (size_t i = 0; i < remembered.n; i++)
        secret_add(&own, remembered.v[i], strlen(remembered.v[i]));
    if (own.n)
        qsort(own.v, own.n, sizeof(*own.v), by_length_desc);
    scrub(&own, t.p, out, out_size);
    secrets_free(&own);
    free(t.p);
    free(red);
}
