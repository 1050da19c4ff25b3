#include "common/base/json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

#define JSON_MAX_DEPTH 64

typedef struct parser_s {
    ol_arena_t *arena;
    const char *start, *p, *end;
    char *errstr;
    size_t errstr_size;
    /* a string held NUL: the error is reported once the path to it, built
     * while the recursion unwinds (segments prepended), is known */
    bool nul;
    char path[256];
} parser_t;

static ol_err_t perr(parser_t *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ol_err_t perr(parser_t *ps, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return ol_errf(ps->errstr, ps->errstr_size, OL_ERR_INVALID, "malformed JSON at column %ld: %s",
                   (long)(ps->p - ps->start) + 1, msg);
}

static void skip_ws(parser_t *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Bytes that end the fast scan of a string: '"', '\\', control characters
 * and every non-ASCII byte (checked as UTF-8 where it occurs). */
static const unsigned char string_stop[256] = {
    [0 ... 0x1f] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x80 ... 0xff] = 1,
};

/* The length of the valid UTF-8 sequence at p (a byte >= 0x80), or 0 when
 * it is invalid (overlong, surrogate, above U+10FFFF, truncated). */
static size_t utf8_seq(const parser_t *ps, const char *p) {
    size_t left = (size_t)(ps->end - p);
    if (ol_utf8_invalid_at(p, left < 4 ? left : 4) == 0)
        return 0;
    unsigned char c = (unsigned char)*p;
    return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
}

static ol_err_t bad_utf8(parser_t *ps) {
    return ol_errf(ps->errstr, ps->errstr_size, OL_ERR_INVALID, "invalid UTF-8 at byte %ld",
                   (long)(ps->p - ps->start) + 1);
}

/* One escape, its backslash at ps->p (and a byte after it): its
 * unescaped form is appended at buf + *n; *nul is set by \u0000. */
static ol_err_t unescape(parser_t *ps, char *buf, size_t *n, bool *nul) {
    /* the escapes of one byte: each letter, then the byte it stands for */
    static const char one_byte[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
    char e = ps->p[1];
    ps->p += 2;
    for (size_t i = 0; i < sizeof(one_byte) - 1; i += 2)
        if (one_byte[i] == e) {
            buf[(*n)++] = one_byte[i + 1];
            return OL_ERR_OK;
        }
    if (e != 'u')
        return perr(ps, "invalid escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
    unsigned cp, lo;
    if (ps->end - ps->p < 4 || hex4(ps->p, &cp))
        return perr(ps, "invalid \\u escape");
    ps->p += 4;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return perr(ps, "lone low surrogate in \\u escape");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) || lo < 0xdc00 ||
            lo > 0xdfff)
            return perr(ps, "high surrogate without its low half in \\u escape");
        ps->p += 6;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    *nul |= cp == 0;
    *n += put_utf8(buf + *n, cp);
    return OL_ERR_OK;
}

/* At the opening quote. Every byte of the string is checked once, escaped
 * or not: UTF-8 (also after an escape), no control characters, \u escapes
 * as valid code points (surrogates only in pairs). A \u0000 decodes in full
 * (for the path in the message) and then fails with ps->nul set. */
static ol_err_t parse_string(parser_t *ps, const char **out, size_t *out_len) {
    const char *s = ++ps->p;
    bool nul = false;
    /* fast path: no escapes */
    for (;;) {
        while (ps->p < ps->end && !string_stop[(unsigned char)*ps->p])
            ps->p++;
        if (ps->p >= ps->end || (unsigned char)*ps->p < 0x80)
            break;
        size_t n = utf8_seq(ps, ps->p);
        if (!n)
            return bad_utf8(ps);
        ps->p += n;
    }
    if (ps->p < ps->end && *ps->p == '"') {
        *out_len = (size_t)(ps->p - s);
        *out = ol_arena_strndup(ps->arena, s, *out_len);
        ps->p++;
        return OL_ERR_OK;
    }
    /* escapes: the unescaped form is never longer than the escaped one */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\' && q + 1 < ps->end)
            q++;
        q++;
    }
    char *buf = ol_arena_alloc(ps->arena, (size_t)(q - s) + 1);
    size_t n = (size_t)(ps->p - s);
    memcpy(buf, s, n);
    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            buf[n] = '\0';
            *out = buf;
            *out_len = n;
            if (nul) {
                ps->nul = true;
                return OL_ERR_INVALID;
            }
            return OL_ERR_OK;
        }
        if (c < 0x20)
            return perr(ps, "control character in a string (escape it)");
        if (c >= 0x80) {
            size_t k = utf8_seq(ps, ps->p);
            if (!k)
                return bad_utf8(ps);
            memcpy(buf + n, ps->p, k);
            n += k;
            ps->p += k;
            continue;
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            ps->p++;
            continue;
        }
        if (ps->p + 1 >= ps->end)
            break;
        ol_err_t err = unescape(ps, buf, &n, &nul);
        if (err)
            return err;
    }
    return perr(ps, "unterminated string");
}

static ol_err_t parse_number(parser_t *ps, ol_json_t *v) {
    const char *s = ps->p;
    bool real = false;
    if (ps->p < ps->end && *ps->p == '-')
        ps->p++;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return perr(ps, "invalid number");
    if (*ps->p == '0') {
        ps->p++;
    } else {
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        real = true;
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return perr(ps, "invalid number: digits expected after '.'");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        real = true;
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
            return perr(ps, "invalid number: digits expected in the exponent");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
            ps->p++;
    }
    char tmp[64];
    size_t n = (size_t)(ps->p - s);
    if (n >= sizeof(tmp)) {
        if (!real) {
            ps->p = s;
            return perr(ps, "integer too big");
        }
        n = sizeof(tmp) - 1; /* a long real: precision beyond 63 chars is lost anyway */
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    if (real) {
        v->type = OL_JSON_REAL;
        v->u.d = strtod(tmp, NULL);
    } else {
        v->type = OL_JSON_INT;
        v->u.i = strtoll(tmp, NULL, 10);
        if (errno == ERANGE) {
            ps->p = s;
            return perr(ps, "integer too big");
        }
    }
    return OL_ERR_OK;
}

static int member_cmp(const void *a, const void *b) {
    const ol_json_member_t *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static bool has_duplicate(parser_t *ps, const ol_json_member_t *m, size_t n, const char **dup) {
    if (n <= 16) {
        for (size_t i = 1; i < n; i++)
            for (size_t k = 0; k < i; k++)
                if (m[i].key_len == m[k].key_len && !memcmp(m[i].key, m[k].key, m[i].key_len)) {
                    *dup = m[i].key;
                    return true;
                }
        return false;
    }
    ol_json_member_t *sorted = ol_arena_alloc(ps->arena, n * sizeof(*sorted));
    memcpy(sorted, m, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), member_cmp);
    for (size_t i = 1; i < n; i++)
        if (!member_cmp(&sorted[i - 1], &sorted[i])) {
            *dup = sorted[i].key;
            return true;
        }
    return false;
}

/* Puts seg in front of the path of the string that held NUL. */
static void path_prepend(parser_t *ps, const char *seg) {
    size_t room = sizeof(ps->path) - 1, old = strlen(ps->path), sep = old && ps->path[0] != '[', n = strlen(seg) + sep;
    if (n > room)
        n = sep + ol_utf8_trim(seg, room - sep);
    if (old > room - n)
        old = ol_utf8_trim(ps->path, room - n); /* the innermost segments are cut first */
    memmove(ps->path + n, ps->path, old);
    ps->path[n + old] = '\0';
    memcpy(ps->path, seg, n - sep);
    if (sep)
        ps->path[n - 1] = '.';
}

/* A key as a path segment: its first 64 bytes (fewer rather than part of a
 * character), NUL shown as \u0000. */
static void path_prepend_key(parser_t *ps, const char *key, size_t len) {
    char seg[64 * 6 + 1];
    size_t n = 0, cut = len < 64 ? len : 64;
    while (cut < len && cut > 0 && ((unsigned char)key[cut] & 0xc0) == 0x80)
        cut--; /* not inside a character */
    for (size_t i = 0; i < cut; i++) {
        if (key[i]) {
            seg[n++] = key[i];
        } else {
            memcpy(seg + n, "\\u0000", 6);
            n += 6;
        }
    }
    seg[n] = '\0';
    path_prepend(ps, seg);
}

static ol_err_t parse_value(parser_t *ps, ol_json_t *v, int depth);

/* The array items of n elements of size bytes, moved to one twice as large
 * (in the arena; *cap updated) when it is full. */
static void *room_for_one(parser_t *ps, void *items, size_t n, size_t *cap, size_t size) {
    if (n < *cap)
        return items;
    void *bigger = ol_arena_alloc(ps->arena, *cap * 2 * size);
    memcpy(bigger, items, n * size);
    *cap *= 2;
    return bigger;
}

/* At the opening bracket of an array or object: true past its closing one
 * when it is empty, else false at its first item. */
static bool closed_at_once(parser_t *ps, char close) {
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return true;
    }
    return false;
}

/* After an item of an array or object: 1 past a ',' (another item comes),
 * 0 past the closing bracket, -1 when neither is there. */
static int after_item(parser_t *ps, char close) {
    skip_ws(ps);
    if (ps->p < ps->end && (*ps->p == ',' || *ps->p == close))
        return *ps->p++ == ',';
    return -1;
}

static ol_err_t parse_array(parser_t *ps, ol_json_t *v, int depth) {
    size_t cap = 8, n = 0;
    ol_json_t *items = ol_arena_alloc(ps->arena, cap * sizeof(*items));
    if (!closed_at_once(ps, ']')) {
        for (;;) {
            items = room_for_one(ps, items, n, &cap, sizeof(*items));
            ol_err_t err = parse_value(ps, &items[n++], depth + 1);
            if (err) {
                if (ps->nul) {
                    char seg[32];
                    snprintf(seg, sizeof(seg), "[%zu]", n - 1);
                    path_prepend(ps, seg);
                }
                return err;
            }
            int more = after_item(ps, ']');
            if (more < 0)
                return perr(ps, "',' or ']' expected");
            if (!more)
                break;
        }
    }
    v->type = OL_JSON_ARRAY;
    v->len = n;
    v->u.items = items;
    return OL_ERR_OK;
}

static ol_err_t parse_object(parser_t *ps, ol_json_t *v, int depth) {
    size_t cap = 16, n = 0;
    ol_json_member_t *m = ol_arena_alloc(ps->arena, cap * sizeof(*m));
    if (!closed_at_once(ps, '}')) {
        for (;;) {
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != '"')
                return perr(ps, "string or '}' expected");
            m = room_for_one(ps, m, n, &cap, sizeof(*m));
            ol_err_t err = parse_string(ps, &m[n].key, &m[n].key_len);
            if (err) {
                if (ps->nul)
                    path_prepend_key(ps, m[n].key, m[n].key_len);
                return err;
            }
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return perr(ps, "':' expected");
            ps->p++;
            if ((err = parse_value(ps, &m[n].value, depth + 1))) {
                if (ps->nul)
                    path_prepend_key(ps, m[n].key, m[n].key_len);
                return err;
            }
            n++;
            int more = after_item(ps, '}');
            if (more < 0)
                return perr(ps, "',' or '}' expected");
            if (!more)
                break;
        }
    }
    const char *dup;
    if (has_duplicate(ps, m, n, &dup))
        return ol_errf(ps->errstr, ps->errstr_size, OL_ERR_INVALID, "malformed JSON: duplicate object key \"%.*s\"",
                       ol_utf8_fit(dup, 64), dup);
    v->type = OL_JSON_OBJECT;
    v->len = n;
    v->u.members = m;
    return OL_ERR_OK;
}

static bool literal(parser_t *ps, const char *word, size_t n) {
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
        return false;
    ps->p += n;
    return true;
}

static ol_err_t parse_value(parser_t *ps, ol_json_t *v, int depth) {
    if (depth > JSON_MAX_DEPTH)
        return perr(ps, "nested deeper than %d levels", JSON_MAX_DEPTH);
    skip_ws(ps);
    memset(v, 0, sizeof(*v));
    if (ps->p >= ps->end)
        return perr(ps, "unexpected end of input");
    switch (*ps->p) {
    case '{':
        return parse_object(ps, v, depth);
    case '[':
        return parse_array(ps, v, depth);
    case '"':
        v->type = OL_JSON_STRING;
        return parse_string(ps, &v->u.s, &v->len);
    case 't':
        if (literal(ps, "true", 4)) {
            v->type = OL_JSON_TRUE;
            return OL_ERR_OK;
        }
        break;
    case 'f':
        if (literal(ps, "false", 5)) {
            v->type = OL_JSON_FALSE;
            return OL_ERR_OK;
        }
        break;
    case 'n':
        if (literal(ps, "null", 4)) {
            v->type = OL_JSON_NULL;
            return OL_ERR_OK;
        }
        break;
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return parse_number(ps, v);
    }
    return perr(ps, "unexpected character '%c'", *ps->p >= 0x20 && *ps->p < 0x7f ? *ps->p : '?');
}

ol_err_t ol_json_parse(ol_arena_t *arena, const char *text, size_t len, ol_json_t **out, const char **field,
                       char *errstr, size_t errstr_size) {
    parser_t ps = {
        .arena = arena, .start = text, .p = text, .end = text + len, .errstr = errstr, .errstr_size = errstr_size};
    ol_json_t *v = ol_arena_alloc(arena, sizeof(*v));
    if (field)
        *field = NULL;
    ol_err_t err = parse_value(&ps, v, 0);
    if (err && ps.nul) {
        if (!ps.path[0])
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "a string must not contain NUL (\\u0000)");
        if (field)
            *field = ol_arena_strndup(arena, ps.path, strlen(ps.path));
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "field \"%s\": must not contain NUL (\\u0000)", ps.path);
    }
    if (!err) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            err = perr(&ps, "unexpected text after the JSON value");
    }
    if (err) {
        /* broken UTF-8 anywhere says more than the syntax error it caused */
        long bad = ol_utf8_invalid_at(text, len);
        if (bad >= 0)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "invalid UTF-8 at byte %ld", bad + 1);
        return err;
    }
    *out = v;
    return OL_ERR_OK;
}

const ol_json_t *ol_json_get(const ol_json_t *obj, const char *key) {
    if (!obj || obj->type != OL_JSON_OBJECT)
        return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->len; i++)
        if (obj->u.members[i].key_len == n && !memcmp(obj->u.members[i].key, key, n))
            return &obj->u.members[i].value;
    return NULL;
}

const char *ol_json_get_str(const ol_json_t *obj, const char *key, const char *def) {
    const ol_json_t *v = ol_json_get(obj, key);
    return v && v->type == OL_JSON_STRING ? v->u.s : def;
}

int64_t ol_json_get_int(const ol_json_t *obj, const char *key, int64_t def) {
    const ol_json_t *v = ol_json_get(obj, key);
    return v && v->type == OL_JSON_INT ? v->u.i : def;
}

bool ol_json_get_null(const ol_json_t *obj, const char *key) {
    const ol_json_t *v = ol_json_get(obj, key);
    return !v || v->type == OL_JSON_NULL;
}

void ol_json_member_str(ol_json_member_t *m, const char *key, const char *s) {
    m->key = key;
    m->key_len = strlen(key);
    m->value = (ol_json_t){.type = OL_JSON_STRING, .len = strlen(s), .u.s = s};
}

void ol_json_member_int(ol_json_member_t *m, const char *key, int64_t i) {
    m->key = key;
    m->key_len = strlen(key);
    m->value = (ol_json_t){.type = OL_JSON_INT, .len = 0, .u.i = i};
}

ol_json_t ol_json_object_of(ol_json_member_t *members, size_t n) {
    return (ol_json_t){.type = OL_JSON_OBJECT, .len = n, .u.members = members};
}

const char *ol_json_kind(const ol_json_t *v) {
    switch (v->type) {
    case OL_JSON_OBJECT:
        return "an object";
    case OL_JSON_ARRAY:
        return "an array";
    case OL_JSON_STRING:
        return "a string";
    case OL_JSON_INT:
        return "an integer";
    case OL_JSON_REAL:
        return "a number with a fraction";
    case OL_JSON_TRUE:
    case OL_JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static void from_jansson(ol_arena_t *a, json_t *j, ol_json_t *v) {
    memset(v, 0, sizeof(*v));
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        v->type = OL_JSON_OBJECT;
        v->len = json_object_size(j);
        v->u.members = ol_arena_alloc(a, (v->len ? v->len : 1) * sizeof(ol_json_member_t));
        size_t i = 0;
        const char *key;
        json_t *val;
        json_object_foreach(j, key, val) {
            v->u.members[i].key_len = strlen(key);
            v->u.members[i].key = ol_arena_strndup(a, key, v->u.members[i].key_len);
            from_jansson(a, val, &v->u.members[i].value);
            i++;
        }
        break;
    }
    case JSON_ARRAY: {
        v->type = OL_JSON_ARRAY;
        v->len = json_array_size(j);
        v->u.items = ol_arena_alloc(a, (v->len ? v->len : 1) * sizeof(ol_json_t));
        for (size_t i = 0; i < v->len; i++)
            from_jansson(a, json_array_get(j, i), &v->u.items[i]);
        break;
    }
    case JSON_STRING:
        v->type = OL_JSON_STRING;
        v->len = json_string_length(j);
        v->u.s = ol_arena_strndup(a, json_string_value(j), v->len);
        break;
    case JSON_INTEGER:
        v->type = OL_JSON_INT;
        v->u.i = json_integer_value(j);
        break;
    case JSON_REAL:
        v->type = OL_JSON_REAL;
        v->u.d = json_real_value(j);
        break;
    case JSON_TRUE:
        v->type = OL_JSON_TRUE;
        break;
    case JSON_FALSE:
        v->type = OL_JSON_FALSE;
        break;
    default:
        v->type = OL_JSON_NULL;
    }
}

ol_json_t *ol_json_from_jansson(ol_arena_t *arena, json_t *j) {
    ol_json_t *v = ol_arena_alloc(arena, sizeof(*v));
    from_jansson(arena, j, v);
    return v;
}

json_t *ol_json_to_jansson(const ol_json_t *v) {
    switch (v->type) {
    case OL_JSON_OBJECT: {
        json_t *o = json_object();
        for (size_t i = 0; i < v->len; i++)
            json_object_setn_new_nocheck(o, v->u.members[i].key, v->u.members[i].key_len,
                                         ol_json_to_jansson(&v->u.members[i].value));
        return o;
    }
    case OL_JSON_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; i < v->len; i++)
            json_array_append_new(a, ol_json_to_jansson(&v->u.items[i]));
        return a;
    }
    case OL_JSON_STRING:
        return json_stringn_nocheck(v->u.s, v->len);
    case OL_JSON_INT:
        return json_integer(v->u.i);
    case OL_JSON_REAL:
        return json_real(v->u.d);
    case OL_JSON_TRUE:
        return json_true();
    case OL_JSON_FALSE:
        return json_false();
    default:
        return json_null();
    }
}

json_t *ol_json_bytes(const void *val, size_t size) {
    json_t *s = json_stringn(val, size);
    if (s)
        return s;
    const unsigned char *p = val;
    char *out = ol_xcalloc(size * 4 + 1, 1);
    size_t n = 0;
    for (size_t i = 0; i < size;) {
        size_t len = p[i] < 0x80 ? 1 : (p[i] & 0xe0) == 0xc0 ? 2 : (p[i] & 0xf0) == 0xe0 ? 3 : 4;
        json_t *seq = i + len <= size ? json_stringn((const char *)p + i, len) : NULL; /* NULL: not UTF-8 */
        if (seq) {
            memcpy(out + n, p + i, len);
            n += len;
            i += len;
            json_decref(seq);
        } else {
            n += (size_t)snprintf(out + n, 5, "\\x%02x", p[i]);
            i++;
        }
    }
    s = json_stringn(out, n);
    free(out);
    return s;
}
