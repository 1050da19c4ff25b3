#include "common/codec.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/time.h"
#include "common/util.h"

typedef struct codec_type_s {
    bool ready;
    avro_value_t value;     /* current version, generic */
    avro_value_t *resolved; /* per history entry; NULL entries until used */
    bool *resolved_ready;
} codec_type_t;

struct ol_codec_s {
    codec_type_t *types;
    size_t ntypes;
    char *buf;
    size_t buf_size;
    avro_writer_t writer;
    avro_reader_t reader;
};

ol_codec_t *ol_codec_new(void) {
    char errstr[256];
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog: broken compiled-in schema: %s\n", errstr);
        abort();
    }
    ol_codec_t *c = ol_xcalloc(1, sizeof(*c));
    ol_schema_types(&c->ntypes);
    c->types = ol_xcalloc(c->ntypes, sizeof(*c->types));
    c->buf_size = 64 * 1024;
    c->buf = ol_xmalloc(c->buf_size);
    c->writer = avro_writer_memory(c->buf, (int64_t)c->buf_size);
    c->reader = avro_reader_memory("", 0);
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
            if (ct->resolved_ready[k])
                avro_value_decref(&ct->resolved[k]);
        free(ct->resolved);
        free(ct->resolved_ready);
        avro_value_decref(&ct->value);
    }
    free(c->types);
    avro_writer_free(c->writer);
    avro_reader_free(c->reader);
    free(c->buf);
    free(c);
}

static codec_type_t *codec_type(ol_codec_t *c, const ol_event_type_t *et) {
    codec_type_t *ct = &c->types[et->index];
    if (!ct->ready) {
        if (avro_generic_value_new(et->iface, &ct->value))
            ol_assert_fail("avro_generic_value_new", __FILE__, __LINE__);
        ct->resolved = ol_xcalloc(et->nhistory, sizeof(*ct->resolved));
        ct->resolved_ready = ol_xcalloc(et->nhistory, sizeof(*ct->resolved_ready));
        ct->ready = true;
    }
    return ct;
}

/* ---- checking JSON and filling Avro values ---------------------------- */

typedef struct walk_s {
    char path[256];
    size_t len;
    int64_t now_ms;
    char *errstr;
    size_t errstr_size;
} walk_t;

static size_t path_push(walk_t *w, const char *name, long index) {
    size_t saved = w->len;
    int n;
    if (index >= 0)
        n = snprintf(w->path + w->len, sizeof(w->path) - w->len, "[%ld]", index);
    else
        n = snprintf(w->path + w->len, sizeof(w->path) - w->len, "%s%s", w->len ? "." : "", name ? name : "");
    if (n > 0)
        w->len = w->len + (size_t)n < sizeof(w->path) ? w->len + (size_t)n : sizeof(w->path) - 1;
    return saved;
}

static void path_pop(walk_t *w, size_t saved) {
    w->len = saved;
    w->path[saved] = '\0';
}

static ol_err_t fail(walk_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ol_err_t fail(walk_t *w, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return ol_errf(w->errstr, w->errstr_size, OL_ERR_INVALID, "field \"%s\": %s", w->path, msg);
}

static const char *json_kind(const json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static ol_err_t check_value(walk_t *w, const ol_field_t *f, const ol_node_t *n, json_t *j, avro_value_t *dst);

static ol_err_t check_record(walk_t *w, const ol_node_t *n, json_t *j, avro_value_t *dst) {
    if (!json_is_object(j))
        return fail(w, "expected an object, got %s", json_kind(j));
    /* unknown fields first: a typo must not pass as a missing optional field */
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        size_t i;
        for (i = 0; i < n->nfields; i++)
            if (!strcmp(n->fields[i].name, key))
                break;
        if (i == n->nfields) {
            size_t saved = path_push(w, key, -1);
            ol_err_t err = fail(w, "unknown field");
            path_pop(w, saved);
            return err;
        }
    }
    for (size_t i = 0; i < n->nfields; i++) {
        const ol_field_t *f = &n->fields[i];
        size_t saved = path_push(w, f->name, -1);
        avro_value_t field, *fdst = NULL;
        if (dst) {
            if (avro_value_get_by_index(dst, i, &field, NULL))
                return fail(w, "cannot set: %s", avro_strerror());
            fdst = &field;
        }
        json_t *fv = json_object_get(j, f->name);
        json_t *tmp = NULL;
        if (!fv) {
            if (f->default_now)
                fv = tmp = json_integer(w->now_ms);
            else if (f->def)
                fv = f->def;
            else
                return fail(w, "missing required field");
        }
        ol_err_t err = check_value(w, f, f->type, fv, fdst);
        json_decref(tmp);
        if (err)
            return err;
        path_pop(w, saved);
    }
    return OL_ERR_OK;
}

static bool currency_ok(const char *s) {
    return strlen(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] >= 'A' &&
           s[2] <= 'Z';
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

static ol_err_t check_value(walk_t *w, const ol_field_t *f, const ol_node_t *n, json_t *j, avro_value_t *dst) {
    ol_err_t err;
    switch (n->kind) {
    case OL_NODE_STRING: {
        if (!json_is_string(j))
            return fail(w, "expected a string, got %s", json_kind(j));
        const char *s = json_string_value(j);
        size_t len = json_string_length(j);
        if (memchr(s, '\0', len))
            return fail(w, "must not contain a NUL character");
        if (f && f->min_length && len < (size_t)f->min_length)
            return fail(w, "must not be empty");
        if (f && f->format == OL_FORMAT_IP && !ip_ok(s))
            return fail(w, "\"%.64s\" is not an IPv4 or IPv6 address", s);
        if (f && f->format == OL_FORMAT_CURRENCY && !currency_ok(s))
            return fail(w, "\"%.64s\" is not an ISO 4217 currency code (three upper-case letters)", s);
        if (dst && avro_value_set_string_len(dst, s, len + 1))
            return fail(w, "cannot set: %s", avro_strerror());
        return OL_ERR_OK;
    }
    case OL_NODE_INT:
    case OL_NODE_LONG: {
        int64_t v;
        if (json_is_integer(j)) {
            v = json_integer_value(j);
        } else if (n->timestamp && json_is_string(j)) {
            if (ol_time_parse(json_string_value(j), &v))
                return fail(w, "\"%.64s\" is not an RFC 3339 time (2026-11-22T15:04:05Z)", json_string_value(j));
        } else {
            return fail(w, "expected %s, got %s", n->timestamp ? "a time (RFC 3339 string or epoch ms)" : "an integer",
                        json_kind(j));
        }
        if (n->kind == OL_NODE_INT && (v < INT32_MIN || v > INT32_MAX))
            return fail(w, "%lld does not fit in a 32-bit int", (long long)v);
        if ((err = check_number(w, f, v)))
            return err;
        if (dst && (n->kind == OL_NODE_INT ? avro_value_set_int(dst, (int32_t)v) : avro_value_set_long(dst, v)))
            return fail(w, "cannot set: %s", avro_strerror());
        return OL_ERR_OK;
    }
    case OL_NODE_BOOLEAN:
        if (!json_is_boolean(j))
            return fail(w, "expected a boolean, got %s", json_kind(j));
        if (dst && avro_value_set_boolean(dst, json_is_true(j)))
            return fail(w, "cannot set: %s", avro_strerror());
        return OL_ERR_OK;
    case OL_NODE_DOUBLE:
        if (!json_is_number(j))
            return fail(w, "expected a number, got %s", json_kind(j));
        if (dst && avro_value_set_double(dst, json_number_value(j)))
            return fail(w, "cannot set: %s", avro_strerror());
        return OL_ERR_OK;
    case OL_NODE_NULL:
        if (!json_is_null(j))
            return fail(w, "expected null, got %s", json_kind(j));
        if (dst && avro_value_set_null(dst))
            return fail(w, "cannot set: %s", avro_strerror());
        return OL_ERR_OK;
    case OL_NODE_ENUM: {
        if (!json_is_string(j))
            return fail(w, "expected a string, got %s", json_kind(j));
        const char *s = json_string_value(j);
        for (size_t i = 0; i < n->nsymbols; i++) {
            if (!strcmp(n->symbols[i], s)) {
                if (dst && avro_value_set_enum(dst, (int)i))
                    return fail(w, "cannot set: %s", avro_strerror());
                return OL_ERR_OK;
            }
        }
        char allowed[256];
        size_t len = 0;
        allowed[0] = '\0';
        for (size_t i = 0; i < n->nsymbols && len < sizeof(allowed); i++)
            len += (size_t)snprintf(allowed + len, sizeof(allowed) - len, "%s%s", i ? ", " : "", n->symbols[i]);
        return fail(w, "\"%.64s\" is not one of %s", s, allowed);
    }
    case OL_NODE_ARRAY: {
        if (!json_is_array(j))
            return fail(w, "expected an array, got %s", json_kind(j));
        size_t i;
        json_t *item;
        json_array_foreach(j, i, item) {
            size_t saved = path_push(w, NULL, (long)i);
            avro_value_t elem, *edst = NULL;
            if (dst) {
                if (avro_value_append(dst, &elem, NULL))
                    return fail(w, "cannot append: %s", avro_strerror());
                edst = &elem;
            }
            if ((err = check_value(w, NULL, n->inner, item, edst)))
                return err;
            path_pop(w, saved);
        }
        return OL_ERR_OK;
    }
    case OL_NODE_RECORD:
        return check_record(w, n, j, dst);
    case OL_NODE_NULLABLE: {
        avro_value_t branch;
        if (json_is_null(j)) {
            if (dst && (avro_value_set_branch(dst, 0, &branch) || avro_value_set_null(&branch)))
                return fail(w, "cannot set: %s", avro_strerror());
            return OL_ERR_OK;
        }
        if (dst && avro_value_set_branch(dst, 1, &branch))
            return fail(w, "cannot set: %s", avro_strerror());
        return check_value(w, f, n->inner, j, dst ? &branch : NULL);
    }
    }
    return fail(w, "unsupported type");
}

static ol_err_t check_json(const ol_event_type_t *et, json_t *data, int64_t now_ms, avro_value_t *dst,
                           char *errstr, size_t errstr_size) {
    walk_t w = {.now_ms = now_ms, .errstr = errstr, .errstr_size = errstr_size};
    if (!json_is_object(data))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "\"data\" must be an object, got %s", json_kind(data));
    return check_record(&w, et->root, data, dst);
}

ol_err_t ol_codec_encode(ol_codec_t *c, const ol_event_type_t *et, json_t *data, int64_t event_time_ms,
                         const void **out, size_t *out_len, char *errstr, size_t errstr_size) {
    codec_type_t *ct = codec_type(c, et);
    avro_value_reset(&ct->value);
    ol_err_t err = check_json(et, data, event_time_ms, &ct->value, errstr, errstr_size);
    if (err)
        return err;
    for (;;) {
        avro_writer_reset(c->writer);
        if (!avro_value_write(c->writer, &ct->value))
            break;
        if (c->buf_size >= 64 * 1024 * 1024)
            return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "encoded event exceeds 64 MiB");
        c->buf_size *= 2;
        c->buf = ol_xrealloc(c->buf, c->buf_size);
        avro_writer_memory_set_dest(c->writer, c->buf, (int64_t)c->buf_size);
    }
    *out = c->buf;
    *out_len = (size_t)avro_writer_tell(c->writer);
    return OL_ERR_OK;
}

/* ---- Avro values to JSON ---------------------------------------------- */

static json_t *node_to_json(const ol_node_t *n, avro_value_t *v) {
    switch (n->kind) {
    case OL_NODE_STRING: {
        const char *s;
        size_t size;
        if (avro_value_get_string(v, &s, &size))
            return json_null();
        return json_stringn(s, size ? size - 1 : 0);
    }
    case OL_NODE_INT: {
        int32_t i = 0;
        avro_value_get_int(v, &i);
        return json_integer(i);
    }
    case OL_NODE_LONG: {
        int64_t l = 0;
        avro_value_get_long(v, &l);
        if (n->timestamp) {
            char ts[40];
            ol_time_format(l, ts, sizeof(ts));
            return json_string(ts);
        }
        return json_integer(l);
    }
    case OL_NODE_BOOLEAN: {
        int b = 0;
        avro_value_get_boolean(v, &b);
        return json_boolean(b);
    }
    case OL_NODE_DOUBLE: {
        double d = 0;
        avro_value_get_double(v, &d);
        return json_real(d);
    }
    case OL_NODE_NULL:
        return json_null();
    case OL_NODE_ENUM: {
        int e = 0;
        avro_value_get_enum(v, &e);
        return e >= 0 && (size_t)e < n->nsymbols ? json_string(n->symbols[e]) : json_null();
    }
    case OL_NODE_ARRAY: {
        json_t *arr = json_array();
        size_t size = 0;
        avro_value_get_size(v, &size);
        for (size_t i = 0; i < size; i++) {
            avro_value_t elem;
            if (!avro_value_get_by_index(v, i, &elem, NULL))
                json_array_append_new(arr, node_to_json(n->inner, &elem));
        }
        return arr;
    }
    case OL_NODE_RECORD: {
        json_t *obj = json_object();
        for (size_t i = 0; i < n->nfields; i++) {
            avro_value_t field;
            if (!avro_value_get_by_index(v, i, &field, NULL))
                json_object_set_new(obj, n->fields[i].name, node_to_json(n->fields[i].type, &field));
        }
        return obj;
    }
    case OL_NODE_NULLABLE: {
        int disc = 0;
        avro_value_t branch;
        if (avro_value_get_discriminant(v, &disc) || disc != 1 || avro_value_get_current_branch(v, &branch))
            return json_null();
        return node_to_json(n->inner, &branch);
    }
    }
    return json_null();
}

json_t *ol_codec_to_json(const ol_event_type_t *et, avro_value_t *value) {
    return node_to_json(et->root, value);
}

/* ---- decoding --------------------------------------------------------- */

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
    avro_value_reset(&ct->value);
    avro_value_t *target = &ct->value;
    if (et->history[k].resolver) {
        if (!ct->resolved_ready[k]) {
            if (avro_resolved_writer_new_value(et->history[k].resolver, &ct->resolved[k]))
                return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "cannot resolve %s version %d: %s", et->name,
                               version, avro_strerror());
            ct->resolved_ready[k] = true;
        }
        avro_resolved_writer_set_dest(&ct->resolved[k], &ct->value);
        target = &ct->resolved[k];
    }
    avro_reader_memory_set_source(c->reader, buf, (int64_t)len);
    if (avro_value_read(c->reader, target))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "undecodable %s version %d payload (%zu bytes): %s",
                       et->name, version, len, avro_strerror());
    char extra;
    if (avro_read(c->reader, &extra, 1) == 0)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                       "undecodable %s version %d payload: trailing bytes after the record", et->name, version);
    /* a payload from another writer gets the same checks as ours */
    json_t *j = node_to_json(et->root, &ct->value);
    ol_err_t err = check_json(et, j, 0, NULL, errstr, errstr_size);
    json_decref(j);
    if (err)
        return err;
    *out = &ct->value;
    return OL_ERR_OK;
}

ol_err_t ol_codec_decode_json(ol_codec_t *c, const ol_event_type_t *et, int version, const void *buf, size_t len,
                              json_t **out, char *errstr, size_t errstr_size) {
    avro_value_t *v;
    ol_err_t err = ol_codec_decode(c, et, version, buf, len, &v, errstr, errstr_size);
    if (err)
        return err;
    *out = node_to_json(et->root, v);
    return OL_ERR_OK;
}

ol_err_t ol_codec_key(const ol_event_type_t *et, json_t *data, char *out, size_t out_size, char *errstr,
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
        const char *v = json_string_value(json_object_get(data, name));
        if (!v)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "field \"%s\": missing required field", name);
        size_t vlen = strlen(v);
        if (len + vlen >= out_size)
            return ol_errf(errstr, errstr_size, OL_ERR_TOO_LARGE, "key longer than %zu bytes", out_size - 1);
        memcpy(out + len, v, vlen);
        len += vlen;
        p = close + 1;
    }
    out[len] = '\0';
    return OL_ERR_OK;
}
