#include "common/domain/codec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"

/* Avro binary output, written while checking: no intermediate values. */
typedef struct out_s {
    char *buf;
    size_t len, cap;
} out_t;

static void out_reserve(out_t *o, size_t n) {
    if (o->len + n <= o->cap)
        return;
    while (o->len + n > o->cap)
        o->cap *= 2;
    o->buf = ol_xrealloc(o->buf, o->cap);
}

static void out_long(out_t *o, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    out_reserve(o, 10);
    while (z > 0x7f) {
        o->buf[o->len++] = (char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    o->buf[o->len++] = (char)z;
}

static void out_bytes(out_t *o, const void *p, size_t n) {
    out_reserve(o, n);
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

typedef struct codec_type_s {
    bool ready;
    avro_value_t value; /* current version, generic */
    avro_value_t *old;  /* per history entry, for reading older versions */
    bool *old_ready;
} codec_type_t;

/* A value of a writer's schema from outside (ol_schema_writer), made on its
 * first decode. */
typedef struct writer_value_s {
    const ol_schema_version_t *sv;
    avro_value_t value;
    struct writer_value_s *next;
} writer_value_t;

struct ol_codec_s {
    codec_type_t *types;
    writer_value_t *writers;
    size_t ntypes;
    out_t out; /* the last encode's bytes */
    avro_reader_t reader;
    ol_arena_t *arena; /* the last decode's checks */
};

ol_codec_t *ol_codec_new(void) {
    char errstr[256];
    if (ol_schema_init(errstr, sizeof(errstr))) {
        ol_log_error("broken compiled-in schema: %s", errstr);
        abort();
    }
    ol_codec_t *c = ol_xcalloc(1, sizeof(*c));
    ol_schema_types(&c->ntypes);
    c->types = ol_xcalloc(c->ntypes, sizeof(*c->types));
    c->out.cap = 64 * 1024;
    c->out.buf = ol_xmalloc(c->out.cap);
    c->reader = avro_reader_memory("", 0);
    c->arena = ol_arena_new(0);
    return c;
}

void ol_codec_destroy(ol_codec_t *c) {
    if (!c)
        return;
    size_t n;
    const ol_event_type_t *const *types = ol_schema_types(&n);
    for (size_t i = 0; i < c->ntypes; i++) {
        codec_type_t *ct = &c->types[i];
        if (!ct->ready)
            continue;
        for (size_t k = 0; k < types[i]->nhistory; k++)
            if (ct->old_ready[k])
                avro_value_decref(&ct->old[k]);
        free(ct->old);
        free(ct->old_ready);
        avro_value_decref(&ct->value);
    }
    free(c->types);
    for (writer_value_t *wv = c->writers, *next; wv; wv = next) {
        next = wv->next;
        avro_value_decref(&wv->value);
        free(wv);
    }
    avro_reader_free(c->reader);
    ol_arena_destroy(c->arena);
    free(c->out.buf);
    free(c);
}

static codec_type_t *codec_type(ol_codec_t *c, const ol_event_type_t *et) {
    codec_type_t *ct = &c->types[et->index];
    if (!ct->ready) {
        if (avro_generic_value_new(et->iface, &ct->value))
            ol_assert_fail("avro_generic_value_new", __FILE__, __LINE__);
        ct->old = ol_xcalloc(et->nhistory, sizeof(*ct->old));
        ct->old_ready = ol_xcalloc(et->nhistory, sizeof(*ct->old_ready));
        ct->ready = true;
    }
    return ct;
}

/* ---- checking JSON and filling Avro values ---------------------------- */

/* The path to the value being checked, as segments; only formatted when an
 * error is reported, so the hot path never prints. */
#define PATH_MAX_DEPTH 32

typedef struct walk_s {
    const char *names[PATH_MAX_DEPTH];
    long index[PATH_MAX_DEPTH]; /* -1 for a named segment */
    int depth;
    int64_t now_ms;
    bool resolving; /* reading an older version: fields it had and we dropped are ignored */
    bool decoded;   /* checking a payload someone else encoded: strings may be invalid UTF-8 */
    char *errstr;
    size_t errstr_size;
} walk_t;

static void path_push(walk_t *w, const char *name, long index) {
    if (w->depth < PATH_MAX_DEPTH) {
        w->names[w->depth] = name;
        w->index[w->depth] = index;
    }
    w->depth++;
}

static void path_pop(walk_t *w) {
    w->depth--;
}

static ol_err_t fail(walk_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ol_err_t fail(walk_t *w, const char *fmt, ...) {
    char msg[256], path[256];
    size_t len = 0;
    path[0] = '\0';
    for (int i = 0; i < w->depth && i < PATH_MAX_DEPTH && len < sizeof(path); i++) {
        int n = w->index[i] >= 0 ? snprintf(path + len, sizeof(path) - len, "[%ld]", w->index[i])
                                 : snprintf(path + len, sizeof(path) - len, "%s%s", len ? "." : "", w->names[i]);
        if (n > 0)
            len += (size_t)n;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof(msg))
        msg[ol_utf8_trim(msg, strlen(msg))] = '\0';
    return ol_errf(w->errstr, w->errstr_size, OL_ERR_INVALID, "field \"%s\": %s", path, msg);
}

static ol_err_t check_value(walk_t *w, const ol_field_t *f, const ol_node_t *n, const ol_json_t *j, out_t *dst);

/* The member for field i: members usually come in schema order, so the same
 * position is tried first. */
static const ol_json_t *member_for(const ol_node_t *n, size_t i, const ol_json_t *j) {
    if (i < j->len && !strcmp(j->u.members[i].key, n->fields[i].name) &&
        j->u.members[i].key_len == strlen(n->fields[i].name)) /* a key may hold \u0000 */
        return &j->u.members[i].value;
    return ol_json_get(j, n->fields[i].name);
}

static bool all_known(const ol_node_t *n, const ol_json_t *j) {
    size_t found = 0;
    for (size_t i = 0; i < n->nfields; i++)
        found += member_for(n, i, j) != NULL;
    return found == j->len;
}

static ol_err_t check_record(walk_t *w, const ol_node_t *n, const ol_json_t *j, out_t *dst) {
    if (j->type != OL_JSON_OBJECT)
        return fail(w, "expected an object, got %s", ol_json_kind(j));
    /* unknown fields first: a typo must not pass as a missing optional field;
     * keys are unique, so when every member matched a field there is none */
    if (!w->resolving && !all_known(n, j)) {
        for (size_t m = 0; m < j->len; m++) {
            const ol_json_member_t *mem = &j->u.members[m];
            size_t i;
            for (i = 0; i < n->nfields; i++)
                if (strlen(n->fields[i].name) == mem->key_len && !memcmp(n->fields[i].name, mem->key, mem->key_len))
                    break;
            if (i == n->nfields) {
                path_push(w, mem->key, -1);
                return fail(w, "unknown field");
            }
        }
    }
    for (size_t i = 0; i < n->nfields; i++) {
        const ol_field_t *f = &n->fields[i];
        path_push(w, f->name, -1);
        const ol_json_t *fv = member_for(n, i, j);
        ol_json_t now;
        if (!fv) {
            if (f->default_now) {
                now = (ol_json_t){.type = OL_JSON_INT, .u.i = w->now_ms};
                fv = &now;
            } else if (f->dflt) {
                fv = f->dflt;
            } else {
                return fail(w, "missing required field");
            }
        }
        ol_err_t err = check_value(w, f, f->type, fv, dst);
        if (err)
            return err;
        path_pop(w);
    }
    return OL_ERR_OK;
}

static bool currency_ok(const char *s, size_t len) {
    return len == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] >= 'A' && s[2] <= 'Z';
}

static bool ip_ok(const char *s) {
    unsigned char addr[16];
    return inet_pton(AF_INET, s, addr) == 1 || inet_pton(AF_INET6, s, addr) == 1;
}

static ol_err_t check_number(walk_t *w, const ol_field_t *f, int64_t v) {
    if (f && f->has_min && v < f->min)
        return fail(w, "must be at least %lld, got %lld", (long long)f->min, (long long)v);
    if (f && f->has_max && v > f->max)
        return fail(w, "must be at most %lld, got %lld", (long long)f->max, (long long)v);
    return OL_ERR_OK;
}

static ol_err_t check_string(walk_t *w, const ol_field_t *f, const ol_json_t *j, out_t *dst) {
    if (j->type != OL_JSON_STRING)
        return fail(w, "expected a string, got %s", ol_json_kind(j));
    const char *s = j->u.s;
    size_t len = j->len;
    if (memchr(s, '\0', len)) /* only from Avro: ol_json_parse refuses NUL */
        return fail(w, "must not contain NUL (\\u0000)");
    if (w->decoded && ol_utf8_invalid_at(s, len) >= 0)
        return fail(w, "invalid UTF-8");
    if (f && f->min_length && len < (size_t)f->min_length)
        return fail(w, "must not be empty");
    if (f && f->format == OL_FORMAT_IP && !ip_ok(s))
        return fail(w, "\"%.*s\" is not an IPv4 or IPv6 address", ol_utf8_fit(s, 64), s);
    if (f && f->format == OL_FORMAT_CURRENCY && !currency_ok(s, len))
        return fail(w, "\"%.*s\" is not an ISO 4217 currency code (three upper-case letters)", ol_utf8_fit(s, 64), s);
    if (dst) {
        out_long(dst, (int64_t)len);
        out_bytes(dst, s, len);
    }
    return OL_ERR_OK;
}

/* int, long, and the timestamps (epoch ms or an RFC 3339 string) */
static ol_err_t check_integer(walk_t *w, const ol_field_t *f, const ol_node_t *n, const ol_json_t *j, out_t *dst) {
    ol_err_t err;
    int64_t v;
    if (j->type == OL_JSON_INT) {
        v = j->u.i;
    } else if (n->timestamp && j->type == OL_JSON_STRING) {
        int rc = ol_time_parse(j->u.s, &v);
        if (rc == OL_TIME_OUT_OF_RANGE)
            return fail(w, "\"%.*s\" " OL_TIME_RANGE_TEXT, ol_utf8_fit(j->u.s, 64), j->u.s);
        if (rc)
            return fail(w, "\"%.*s\" is not an RFC 3339 time (2026-11-22T15:04:05Z)", ol_utf8_fit(j->u.s, 64), j->u.s);
    } else {
        return fail(w, "expected %s, got %s", n->timestamp ? "a time (RFC 3339 string or epoch ms)" : "an integer",
                    ol_json_kind(j));
    }
    if (n->timestamp && (v < OL_TIME_MIN_MS || v > OL_TIME_MAX_MS))
        return fail(w, "time %lld ms " OL_TIME_RANGE_TEXT, (long long)v);
    if (n->kind == OL_NODE_INT && (v < INT32_MIN || v > INT32_MAX))
        return fail(w, "%lld does not fit in a 32-bit int", (long long)v);
    if ((err = check_number(w, f, v)))
        return err;
    if (dst)
        out_long(dst, v);
    return OL_ERR_OK;
}

static ol_err_t check_double(walk_t *w, const ol_json_t *j, out_t *dst) {
    if (j->type != OL_JSON_INT && j->type != OL_JSON_REAL)
        return fail(w, "expected a number, got %s", ol_json_kind(j));
    if (dst) {
        double d = j->type == OL_JSON_INT ? (double)j->u.i : j->u.d;
        uint64_t bits;
        unsigned char le[8];
        memcpy(&bits, &d, 8);
        for (int i = 0; i < 8; i++)
            le[i] = (unsigned char)(bits >> (8 * i));
        out_bytes(dst, le, 8);
    }
    return OL_ERR_OK;
}

static ol_err_t check_enum(walk_t *w, const ol_node_t *n, const ol_json_t *j, out_t *dst) {
    if (j->type != OL_JSON_STRING)
        return fail(w, "expected a string, got %s", ol_json_kind(j));
    for (size_t i = 0; i < n->nsymbols; i++) {
        /* by full length: "external\u0000junk" is not "external" */
        if (strlen(n->symbols[i]) == j->len && !memcmp(n->symbols[i], j->u.s, j->len)) {
            if (dst)
                out_long(dst, (int64_t)i);
            return OL_ERR_OK;
        }
    }
    char allowed[256];
    size_t len = 0;
    allowed[0] = '\0';
    for (size_t i = 0; i < n->nsymbols && len < sizeof(allowed); i++)
        len += (size_t)snprintf(allowed + len, sizeof(allowed) - len, "%s%s", i ? ", " : "", n->symbols[i]);
    return fail(w, "\"%.*s\" is not one of %s", ol_utf8_fit(j->u.s, 64), j->u.s, allowed);
}

static ol_err_t check_array(walk_t *w, const ol_node_t *n, const ol_json_t *j, out_t *dst) {
    ol_err_t err;
    if (j->type != OL_JSON_ARRAY)
        return fail(w, "expected an array, got %s", ol_json_kind(j));
    if (dst && j->len)
        out_long(dst, (int64_t)j->len); /* one block of every item */
    for (size_t i = 0; i < j->len; i++) {
        path_push(w, NULL, (long)i);
        if ((err = check_value(w, NULL, n->inner, &j->u.items[i], dst)))
            return err;
        path_pop(w);
    }
    if (dst)
        out_long(dst, 0);
    return OL_ERR_OK;
}

static ol_err_t check_value(walk_t *w, const ol_field_t *f, const ol_node_t *n, const ol_json_t *j, out_t *dst) {
    switch (n->kind) {
    case OL_NODE_STRING:
        return check_string(w, f, j, dst);
    case OL_NODE_INT:
    case OL_NODE_LONG:
        return check_integer(w, f, n, j, dst);
    case OL_NODE_BOOLEAN:
        if (j->type != OL_JSON_TRUE && j->type != OL_JSON_FALSE)
            return fail(w, "expected a boolean, got %s", ol_json_kind(j));
        if (dst)
            out_bytes(dst, j->type == OL_JSON_TRUE ? "\1" : "\0", 1);
        return OL_ERR_OK;
    case OL_NODE_DOUBLE:
        return check_double(w, j, dst);
    case OL_NODE_NULL:
        if (j->type != OL_JSON_NULL)
            return fail(w, "expected null, got %s", ol_json_kind(j));
        return OL_ERR_OK;
    case OL_NODE_ENUM:
        return check_enum(w, n, j, dst);
    case OL_NODE_ARRAY:
        return check_array(w, n, j, dst);
    case OL_NODE_RECORD:
        return check_record(w, n, j, dst);
    case OL_NODE_NULLABLE: {
        if (dst)
            out_long(dst, j->type == OL_JSON_NULL ? 0 : 1);
        if (j->type == OL_JSON_NULL)
            return OL_ERR_OK;
        return check_value(w, f, n->inner, j, dst);
    }
    }
    return fail(w, "unsupported type");
}

/* How check_json is called: on input, or on what a payload decoded to. */
typedef enum { CHECK_INPUT, CHECK_DECODED, CHECK_RESOLVING } check_mode_t;

static ol_err_t check_json(const ol_event_type_t *et, const ol_json_t *data, int64_t now_ms, check_mode_t mode,
                           out_t *dst, char *errstr, size_t errstr_size) {
    walk_t w = {.now_ms = now_ms,
                .resolving = mode == CHECK_RESOLVING,
                .decoded = mode != CHECK_INPUT,
                .errstr = errstr,
                .errstr_size = errstr_size};
    if (data->type != OL_JSON_OBJECT)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "\"data\" must be an object, got %s", ol_json_kind(data));
    return check_record(&w, et->root, data, dst);
}

/* Encodes data after the prefix bytes already in c->out. */
static ol_err_t encode_after(ol_codec_t *c, const ol_event_type_t *et, const ol_json_t *data, int64_t event_time_ms,
                             const void **out, size_t *out_len, char *errstr, size_t errstr_size) {
    ol_err_t err = check_json(et, data, event_time_ms, CHECK_INPUT, &c->out, errstr, errstr_size);
    if (err)
        return err;
    if (c->out.len > 64 * 1024 * 1024)
        return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "encoded event exceeds 64 MiB");
    *out = c->out.buf;
    *out_len = c->out.len;
    return OL_ERR_OK;
}

ol_err_t ol_codec_encode(ol_codec_t *c, const ol_event_type_t *et, const ol_json_t *data, int64_t event_time_ms,
                         const void **out, size_t *out_len, char *errstr, size_t errstr_size) {
    c->out.len = 0;
    return encode_after(c, et, data, event_time_ms, out, out_len, errstr, errstr_size);
}

ol_err_t ol_codec_encode_framed(ol_codec_t *c, const ol_event_type_t *et, const ol_json_t *data, int64_t event_time_ms,
                                uint32_t schema_id, const void **out, size_t *out_len, char *errstr,
                                size_t errstr_size) {
    unsigned char head[5] = {0, (unsigned char)(schema_id >> 24), (unsigned char)(schema_id >> 16),
                             (unsigned char)(schema_id >> 8), (unsigned char)schema_id};
    c->out.len = 0;
    out_bytes(&c->out, head, sizeof(head));
    return encode_after(c, et, data, event_time_ms, out, out_len, errstr, errstr_size);
}

/* ---- decoding --------------------------------------------------------- */

/* Reads a zigzag varint; false when the bytes end first or it is too long. */
static bool measure_long(const unsigned char **p, const unsigned char *end, int64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return false;
        unsigned char b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return true;
        }
    }
    return false;
}

/* Walks one value of node n in Avro binary without allocating anything:
 * every length is checked against the bytes left, enum indexes and union
 * branches against the schema. Returns false on malformed input. avro-c
 * would allocate what a hostile length claims (and leak it), and reports
 * errors in one buffer shared by all threads, so it only ever reads what
 * this accepted. */
static bool measure(const ol_node_t *n, const unsigned char **p, const unsigned char *end, int depth) {
    int64_t v;
    if (depth > 64)
        return false;
    switch (n->kind) {
    case OL_NODE_STRING:
        if (!measure_long(p, end, &v) || v < 0 || v > end - *p)
            return false;
        *p += v;
        return true;
    case OL_NODE_INT:
        return measure_long(p, end, &v) && v >= INT32_MIN && v <= INT32_MAX;
    case OL_NODE_LONG:
        return measure_long(p, end, &v);
    case OL_NODE_BOOLEAN:
        if (*p >= end || **p > 1)
            return false;
        (*p)++;
        return true;
    case OL_NODE_DOUBLE:
        if (end - *p < 8)
            return false;
        *p += 8;
        return true;
    case OL_NODE_NULL:
        return true;
    case OL_NODE_ENUM:
        return measure_long(p, end, &v) && v >= 0 && (uint64_t)v < n->nsymbols;
    case OL_NODE_ARRAY:
        for (;;) {
            int64_t count;
            if (!measure_long(p, end, &count))
                return false;
            if (count == 0)
                return true;
            if (count < 0) { /* a block with its byte size */
                int64_t size;
                if (count == INT64_MIN || !measure_long(p, end, &size) || size < 0)
                    return false;
                count = -count;
            }
            /* every item takes a byte at least (but null, which is bounded apart) */
            if (n->inner->kind == OL_NODE_NULL ? count > 65536 : count > end - *p)
                return false;
            for (int64_t i = 0; i < count; i++)
                if (!measure(n->inner, p, end, depth + 1))
                    return false;
        }
    case OL_NODE_RECORD:
        for (size_t i = 0; i < n->nfields; i++)
            if (!measure(n->fields[i].type, p, end, depth + 1))
                return false;
        return true;
    case OL_NODE_NULLABLE:
        if (!measure_long(p, end, &v) || (v != 0 && v != 1))
            return false;
        return v == 0 || measure(n->inner, p, end, depth + 1);
    }
    return false;
}

static ol_err_t read_value(ol_codec_t *c, const ol_event_type_t *et, int version, const ol_node_t *root,
                           const void *buf, size_t len, avro_value_t *dst, char *errstr, size_t errstr_size) {
    const unsigned char *p = buf, *end = p + len;
    if (!measure(root, &p, end, 0))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                       "undecodable %s version %d payload (%zu bytes): it does not match the schema", et->name, version,
                       len);
    if (p != end)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                       "undecodable %s version %d payload: trailing bytes after the record", et->name, version);
    avro_value_reset(dst);
    avro_reader_memory_set_source(c->reader, buf, (int64_t)len);
    if (avro_value_read(c->reader, dst))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "undecodable %s version %d payload (%zu bytes)", et->name,
                       version, len);
    return OL_ERR_OK;
}

/* Reads buf, written with sv (not the current version) into old, then
 * fills the current version from its JSON form, defaults included. */
static ol_err_t decode_older(ol_codec_t *c, const ol_event_type_t *et, codec_type_t *ct, const ol_schema_version_t *sv,
                             avro_value_t *old, const void *buf, size_t len, char *errstr, size_t errstr_size) {
    ol_json_t dom;
    ol_err_t err = read_value(c, et, sv->version, sv->root, buf, len, old, errstr, errstr_size);
    if (err)
        return err;
    ol_codec__node_to_dom(c->arena, sv->root, old, &dom);
    c->out.len = 0;
    err = check_json(et, &dom, 0, CHECK_RESOLVING, &c->out, errstr, errstr_size);
    if (!err)
        err = read_value(c, et, et->version, et->root, c->out.buf, c->out.len, &ct->value, errstr, errstr_size);
    return err;
}

ol_err_t ol_codec_decode(ol_codec_t *c, const ol_event_type_t *et, int version, const void *buf, size_t len,
                         avro_value_t **out, char *errstr, size_t errstr_size) {
    codec_type_t *ct = codec_type(c, et);
    size_t k;
    for (k = 0; k < et->nhistory; k++)
        if (et->history[k].version == version)
            break;
    if (k == et->nhistory)
        return ol_errf(errstr, errstr_size, OL_ERR_UNSUPPORTED,
                       "%s schema version %d is unknown to this orderlog (it reads up to %d)", et->name, version,
                       et->version);
    ol_err_t err;
    ol_json_t dom;
    ol_arena_reset(c->arena);
    if (version == et->version) {
        if ((err = read_value(c, et, version, et->root, buf, len, &ct->value, errstr, errstr_size)))
            return err;
        /* a payload from another writer gets the same checks as ours */
        ol_codec__node_to_dom(c->arena, et->root, &ct->value, &dom);
        err = check_json(et, &dom, 0, CHECK_DECODED, NULL, errstr, errstr_size);
    } else {
        /* an older version: read it with its own schema */
        if (!ct->old_ready[k]) {
            if (avro_generic_value_new(et->history[k].iface, &ct->old[k]))
                ol_assert_fail("avro_generic_value_new", __FILE__, __LINE__);
            ct->old_ready[k] = true;
        }
        err = decode_older(c, et, ct, &et->history[k], &ct->old[k], buf, len, errstr, errstr_size);
    }
    if (err)
        return err;
    *out = &ct->value;
    return OL_ERR_OK;
}

ol_err_t ol_codec_decode_writer(ol_codec_t *c, const ol_event_type_t *et, const ol_schema_version_t *sv,
                                const void *buf, size_t len, avro_value_t **out, char *errstr, size_t errstr_size) {
    if (sv->version)
        return ol_codec_decode(c, et, sv->version, buf, len, out, errstr, errstr_size);
    codec_type_t *ct = codec_type(c, et);
    writer_value_t *wv;
    for (wv = c->writers; wv && wv->sv != sv; wv = wv->next)
        ;
    if (!wv) {
        wv = ol_xcalloc(1, sizeof(*wv));
        wv->sv = sv;
        if (avro_generic_value_new(sv->iface, &wv->value))
            ol_assert_fail("avro_generic_value_new", __FILE__, __LINE__);
        wv->next = c->writers;
        c->writers = wv;
    }
    ol_arena_reset(c->arena);
    ol_err_t err = decode_older(c, et, ct, sv, &wv->value, buf, len, errstr, errstr_size);
    if (err)
        return err;
    *out = &ct->value;
    return OL_ERR_OK;
}

ol_err_t ol_codec_decode_json(ol_codec_t *c, const ol_event_type_t *et, int version, const void *buf, size_t len,
                              json_t **out, char *errstr, size_t errstr_size) {
    avro_value_t *v = NULL;
    ol_err_t err = ol_codec_decode(c, et, version, buf, len, &v, errstr, errstr_size);
    if (err)
        return err;
    *out = ol_codec__node_to_json(et->root, v);
    return OL_ERR_OK;
}

ol_err_t ol_codec_key(const ol_event_type_t *et, const ol_json_t *data, char *out, size_t out_size, char *errstr,
                      size_t errstr_size) {
    size_t len = 0;
    for (const char *p = et->key; *p;) {
        if (*p != '{') {
            if (len + 1 >= out_size)
                return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "key longer than %zu bytes", out_size - 1);
            out[len++] = *p++;
            continue;
        }
        const char *close = strchr(p, '}');
        OL_ASSERT(close);
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(close - p - 1), p + 1);
        const ol_json_t *v = ol_json_get(data, name);
        if (!v || v->type != OL_JSON_STRING)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "field \"%s\": %s", name,
                           v ? "expected a string" : "missing required field");
        if (len + v->len >= out_size)
            return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "key longer than %zu bytes", out_size - 1);
        memcpy(out + len, v->u.s, v->len);
        len += v->len;
        p = close + 1;
    }
    out[len] = '\0';
    return OL_ERR_OK;
}

bool ol_codec_key_matches(const ol_event_type_t *et, avro_value_t *value, const void *key, size_t key_len, char *out,
                          size_t out_size) {
    char buf[1024];
    size_t len = 0;
    for (const char *p = et->key; *p;) {
        const char *part = p, *close = NULL;
        size_t n = 1;
        avro_value_t field;
        if (*p == '{') {
            close = strchr(p, '}');
            OL_ASSERT(close);
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(close - p - 1), p + 1);
            if (avro_value_get_by_name(value, name, &field, NULL))
                return true; /* not this version's field: nothing to compare */
            if (avro_value_get_type(&field) == AVRO_STRING) {
                if (avro_value_get_string(&field, &part, &n))
                    return true;
                n = n ? n - 1 : 0; /* avro-c's sizes count the NUL */
            } else if (avro_value_get_type(&field) == AVRO_ENUM) {
                int sym;
                if (avro_value_get_enum(&field, &sym) ||
                    !(part = avro_schema_enum_get(avro_value_get_schema(&field), sym)))
                    return true;
                n = strlen(part);
            } else {
                return true;
            }
            p = close + 1;
        } else {
            p++;
        }
        if (len + n > sizeof(buf))
            return false;
        memcpy(buf + len, part, n);
        len += n;
    }
    if (len == key_len && !memcmp(buf, key, len))
        return true;
    snprintf(out, out_size, "%.*s", (int)len, buf);
    return false;
}
