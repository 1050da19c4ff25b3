#include "fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/time.h"
#include "common/base/util.h"

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("property failed: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static ol_codec_t *init_codecs[2];
static ol_arena_t *init_arena;

/* At exit, before the leak check: what fuzz_init made. */
static void init_free(void) {
    ol_codec_destroy(init_codecs[0]);
    ol_codec_destroy(init_codecs[1]);
    ol_arena_destroy(init_arena);
}

void fuzz_init(ol_codec_t **codec, ol_codec_t **codec2, ol_arena_t **arena) {
    char errstr[512];
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "schemas: %s\n", errstr);
        abort();
    }
    *codec = init_codecs[0] = ol_codec_new();
    if (codec2)
        *codec2 = init_codecs[1] = ol_codec_new();
    *arena = init_arena = ol_arena_new(0);
    atexit(init_free);
}

void fuzz_decode_as(ol_codec_t *codec, const fuzz_record_t *r, ol_arena_t *arena, const ol_event_type_t *et,
                    const char *who, ol_envelope_t *env, avro_value_t **value) {
    char errstr[512];
    FUZZ_CHECK(!ol_event_decode(codec, r->rkm, arena, env, value, errstr, sizeof(errstr)), "%s %s does not decode: %s",
               who, et->name, errstr);
    FUZZ_CHECK(env->type == et && env->version == et->version && env->content == OL_CONTENT_AVRO,
               "%s %s decodes as %s version %d", who, et->name, env->type->name, env->version);
}

#define FAKE_MSG_SIZE 4096 /* rd_kafka_msg_t is a few hundred bytes */

fuzz_record_t fuzz_record_new(const void *payload, size_t len, const void *key, size_t key_len,
                              rd_kafka_headers_t *hdrs) {
    fuzz_record_t r = {0};
    r.rkm = aligned_alloc(64, FAKE_MSG_SIZE);
    if (!r.rkm)
        abort();
    memset(r.rkm, 0, FAKE_MSG_SIZE);
    void *p = ol_xmalloc(len ? len : 1);
    memcpy(p, payload, len);
    r.rkm->payload = p;
    r.rkm->len = len;
    if (key) {
        void *k = ol_xmalloc(key_len ? key_len : 1);
        memcpy(k, key, key_len);
        r.rkm->key = k;
        r.rkm->key_len = key_len;
    }
    r.rkm->offset = 42;
    if (hdrs) {
        r.hdrs = hdrs;
        rd_kafka_message_set_headers(r.rkm, hdrs);
    }
    return r;
}

void fuzz_record_free(fuzz_record_t *r) {
    if (r->hdrs)
        rd_kafka_headers_destroy(r->hdrs);
    free(r->rkm->payload);
    free(r->rkm->key);
    free(r->rkm);
    r->rkm = NULL;
    r->hdrs = NULL;
}

/* ---- avro_decode's picks ----------------------------------------------- */

static fuzz_pick_t *picks;
static size_t npicks;

static void picks_init(void) {
    if (picks)
        return;
    char errstr[512];
    if (ol_schema_init(errstr, sizeof(errstr))) {
        fprintf(stderr, "schemas: %s\n", errstr);
        abort();
    }
    size_t ntypes, n = 0;
    const ol_event_type_t *const *types = ol_schema_types(&ntypes);
    for (size_t i = 0; i < ntypes; i++)
        n += types[i]->nhistory;
    picks = ol_xcalloc(n, sizeof(*picks));
    for (size_t i = 0; i < ntypes; i++)
        for (size_t k = 0; k < types[i]->nhistory; k++)
            picks[npicks++] = (fuzz_pick_t){types[i], types[i]->history[k].version};
}

fuzz_pick_t fuzz_pick(uint8_t byte) {
    picks_init();
    return picks[byte % npicks];
}

int fuzz_pick_byte(const ol_event_type_t *et, int version) {
    picks_init();
    for (size_t i = 0; i < npicks; i++)
        if (picks[i].et == et && picks[i].version == version)
            return (int)i;
    return -1;
}

/* ---- comparisons --------------------------------------------------------- */

static char where_buf[1024];

/* The path to the value compared, as the codec writes it ("lines[1].sku"). */
typedef struct path_s {
    char s[512];
    size_t len;
} path_t;

static size_t path_push(path_t *p, const char *name, long index) {
    size_t old = p->len;
    int n = index >= 0 ? snprintf(p->s + p->len, sizeof(p->s) - p->len, "[%ld]", index)
                       : snprintf(p->s + p->len, sizeof(p->s) - p->len, "%s%.*s", p->len ? "." : "", 64, name);
    if (n > 0)
        p->len += (size_t)n < sizeof(p->s) - p->len ? (size_t)n : sizeof(p->s) - p->len - 1;
    return old;
}

static void path_pop(path_t *p, size_t old) {
    p->len = old;
    p->s[old] = '\0';
}

static bool differ(const path_t *p, const char **where, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool differ(const path_t *p, const char **where, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(where_buf, sizeof(where_buf), "\"%s\": %s", p->s, msg);
    *where = where_buf;
    return false;
}

static const char *type_name(ol_json_type_t t) {
    static const char *const names[] = {"null", "false", "true", "int", "real", "string", "array", "object"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

static bool bits_equal(double a, double b) {
    return !memcmp(&a, &b, sizeof(a));
}

static bool dom_equal(path_t *p, const ol_json_t *a, const ol_json_t *b, const char **where) {
    if (a->type != b->type)
        return differ(p, where, "%s against %s", type_name(a->type), type_name(b->type));
    switch (a->type) {
    case OL_JSON_NULL:
    case OL_JSON_FALSE:
    case OL_JSON_TRUE:
        return true;
    case OL_JSON_INT:
        return a->u.i == b->u.i || differ(p, where, "%lld against %lld", (long long)a->u.i, (long long)b->u.i);
    case OL_JSON_REAL:
        return bits_equal(a->u.d, b->u.d) || differ(p, where, "%a against %a", a->u.d, b->u.d);
    case OL_JSON_STRING:
        return (a->len == b->len && !memcmp(a->u.s, b->u.s, a->len)) ||
               differ(p, where, "string of %zu bytes against %zu bytes", a->len, b->len);
    case OL_JSON_ARRAY:
        if (a->len != b->len)
            return differ(p, where, "%zu items against %zu", a->len, b->len);
        for (size_t i = 0; i < a->len; i++) {
            size_t old = path_push(p, NULL, (long)i);
            if (!dom_equal(p, &a->u.items[i], &b->u.items[i], where))
                return false;
            path_pop(p, old);
        }
        return true;
    case OL_JSON_OBJECT:
        if (a->len != b->len)
            return differ(p, where, "%zu members against %zu", a->len, b->len);
        for (size_t i = 0; i < a->len; i++) {
            const ol_json_member_t *x = &a->u.members[i], *y = &b->u.members[i];
            if (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len))
                return differ(p, where, "member %zu is \"%.64s\" against \"%.64s\"", i, x->key, y->key);
            size_t old = path_push(p, x->key, -1);
            if (!dom_equal(p, &x->value, &y->value, where))
                return false;
            path_pop(p, old);
        }
        return true;
    }
    return differ(p, where, "unknown type %d", (int)a->type);
}

bool fuzz_dom_equal(const ol_json_t *a, const ol_json_t *b, const char **where) {
    path_t p = {{0}, 0};
    return dom_equal(&p, a, b, where);
}

static bool same_as_input(path_t *p, const ol_node_t *n, const ol_json_t *in, const ol_json_t *out, int64_t time_ms,
                          const char **where);

static bool same_record(path_t *p, const ol_node_t *n, const ol_json_t *in, const ol_json_t *out, int64_t time_ms,
                        const char **where) {
    if (in->type != OL_JSON_OBJECT || out->type != OL_JSON_OBJECT)
        return differ(p, where, "%s in, %s out (record)", type_name(in->type), type_name(out->type));
    if (out->len != n->nfields)
        return differ(p, where, "%zu fields decoded, the schema has %zu", out->len, n->nfields);
    size_t seen = 0;
    for (size_t i = 0; i < n->nfields; i++) {
        const ol_field_t *f = &n->fields[i];
        size_t old = path_push(p, f->name, -1);
        const ol_json_t *iv = ol_json_get(in, f->name), *ov = ol_json_get(out, f->name);
        if (!ov)
            return differ(p, where, "not decoded");
        ol_json_t now = {.type = OL_JSON_INT, .u.i = time_ms};
        if (iv)
            seen++;
        else if (f->default_now)
            iv = &now;
        else if (f->dflt)
            iv = f->dflt;
        else
            return differ(p, where, "required, absent from the input, yet the input was accepted");
        if (!same_as_input(p, f->type, iv, ov, time_ms, where))
            return false;
        path_pop(p, old);
    }
    if (seen != in->len)
        return differ(p, where, "%zu input members, %zu of them fields: an unknown field was accepted", in->len, seen);
    return true;
}

static bool same_as_input(path_t *p, const ol_node_t *n, const ol_json_t *in, const ol_json_t *out, int64_t time_ms,
                          const char **where) {
    switch (n->kind) {
    case OL_NODE_STRING:
    case OL_NODE_ENUM:
        if (in->type != OL_JSON_STRING || out->type != OL_JSON_STRING)
            return differ(p, where, "%s in, %s out (string)", type_name(in->type), type_name(out->type));
        return (in->len == out->len && !memcmp(in->u.s, out->u.s, in->len)) ||
               differ(p, where, "%zu bytes in, %zu bytes out", in->len, out->len);
    case OL_NODE_INT:
    case OL_NODE_LONG: {
        int64_t want;
        if (in->type == OL_JSON_INT)
            want = in->u.i;
        else if (n->timestamp && in->type == OL_JSON_STRING && !ol_time_parse(in->u.s, &want))
            ;
        else
            return differ(p, where, "%s in, accepted as an integer", type_name(in->type));
        if (out->type != OL_JSON_INT)
            return differ(p, where, "%s out (integer)", type_name(out->type));
        return want == out->u.i || differ(p, where, "%lld in, %lld out", (long long)want, (long long)out->u.i);
    }
    case OL_NODE_BOOLEAN:
        if (in->type != OL_JSON_TRUE && in->type != OL_JSON_FALSE)
            return differ(p, where, "%s in, accepted as a boolean", type_name(in->type));
        return in->type == out->type || differ(p, where, "%s in, %s out", type_name(in->type), type_name(out->type));
    case OL_NODE_DOUBLE: {
        double want;
        if (in->type == OL_JSON_INT)
            want = (double)in->u.i;
        else if (in->type == OL_JSON_REAL)
            want = in->u.d;
        else
            return differ(p, where, "%s in, accepted as a number", type_name(in->type));
        if (out->type != OL_JSON_REAL)
            return differ(p, where, "%s out (double)", type_name(out->type));
        return bits_equal(want, out->u.d) || differ(p, where, "%a in, %a out", want, out->u.d);
    }
    case OL_NODE_NULL:
        return (in->type == OL_JSON_NULL && out->type == OL_JSON_NULL) ||
               differ(p, where, "%s in, %s out (null)", type_name(in->type), type_name(out->type));
    case OL_NODE_ARRAY:
        if (in->type != OL_JSON_ARRAY || out->type != OL_JSON_ARRAY)
            return differ(p, where, "%s in, %s out (array)", type_name(in->type), type_name(out->type));
        if (in->len != out->len)
            return differ(p, where, "%zu items in, %zu out", in->len, out->len);
        for (size_t i = 0; i < in->len; i++) {
            size_t old = path_push(p, NULL, (long)i);
            if (!same_as_input(p, n->inner, &in->u.items[i], &out->u.items[i], time_ms, where))
                return false;
            path_pop(p, old);
        }
        return true;
    case OL_NODE_RECORD:
        return same_record(p, n, in, out, time_ms, where);
    case OL_NODE_NULLABLE:
        if (in->type == OL_JSON_NULL || out->type == OL_JSON_NULL)
            return in->type == out->type ||
                   differ(p, where, "%s in, %s out (nullable)", type_name(in->type), type_name(out->type));
        return same_as_input(p, n->inner, in, out, time_ms, where);
    }
    return differ(p, where, "unknown schema node %d", (int)n->kind);
}

bool fuzz_same_as_input(const ol_node_t *n, const ol_json_t *in, const ol_json_t *out, int64_t time_ms,
                        const char **where) {
    path_t p = {{0}, 0};
    return same_as_input(&p, n, in, out, time_ms, where);
}
