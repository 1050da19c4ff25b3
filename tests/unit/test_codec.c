/* The codec and the publish line format, driven by the fixtures in
 * tests/fixtures/events/{valid,invalid}/ (see README there), plus decoding
 * robustness against bytes no orderlog wrote. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/json.h"
#include "common/domain/schema.h"
#include "common/base/time.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
/* avro-c allocates whatever length a hostile payload claims (see
 * decode_allocates_no_more_than_the_payload_can_hold); under ASan an
 * impossible request aborts, where glibc returns NULL and avro-c reports an
 * error. Behave like glibc so the robustness tests test the decoder. */
__attribute__((used)) const char *__asan_default_options(void) {
    return "allocator_may_return_null=1:max_allocation_size_mb=256";
}
#endif

/* "now" handed to ol_event_from_line: 2026-11-18T11:06:40.000Z */
#define NOW_MS 1795000000000LL
#define NOW_TEXT "2026-11-18T11:06:40.000Z"

/* codec, and arena: the parsed input of one line, reset before each */
OLT_CODEC_FIXTURE

/* jansson data in the codec's input form (in the arena) */
static const ol_json_t *in_form(json_t *j) {
    return ol_json_from_jansson(arena, j);
}

TestSuite(codec, .init = setup, .fini = teardown);

static const ol_event_type_t *find_type(const char *name) {
    const ol_event_type_t *et = ol_schema_find(name);
    cr_assert(et, "no event type %s", name);
    return et;
}

static char *dump(json_t *j) {
    return json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
}

static void assert_json_eq(json_t *got, json_t *want, const char *where) {
    if (json_equal(got, want))
        return;
    char *g = dump(got), *w = dump(want);
    cr_assert_fail("%s:\n  got  %s\n  want %s", where, g, w);
}

/* What the decoded JSON form of `in` must be, computed from the schema
 * independently of the codec: times as RFC 3339 UTC with milliseconds,
 * missing fields from their default, defaultNow fields = the event time. */
static json_t *normal_form(const ol_node_t *n, json_t *in, int64_t event_ms) {
    switch (n->kind) {
    case OL_NODE_RECORD: {
        json_t *out = json_object();
        for (size_t i = 0; i < n->nfields; i++) {
            const ol_field_t *f = &n->fields[i];
            json_t *v = json_object_get(in, f->name), *nv = NULL;
            if (v) {
                nv = normal_form(f->type, v, event_ms);
            } else if (f->default_now) {
                json_t *now = json_integer(event_ms);
                nv = normal_form(f->type, now, event_ms);
                json_decref(now);
            } else if (f->def)
                nv = normal_form(f->type, f->def, event_ms);
            else
                cr_assert_fail("valid fixture without required field %s", f->name);
            json_object_set_new(out, f->name, nv);
        }
        return out;
    }
    case OL_NODE_ARRAY: {
        json_t *out = json_array();
        size_t i;
        json_t *item;
        json_array_foreach(in, i, item) {
            json_array_append_new(out, normal_form(n->inner, item, event_ms));
        }
        return out;
    }
    case OL_NODE_NULLABLE:
        return json_is_null(in) ? json_null() : normal_form(n->inner, in, event_ms);
    case OL_NODE_LONG:
        if (n->timestamp) {
            int64_t ms;
            if (json_is_string(in))
                cr_assert_eq(ol_time_parse(json_string_value(in), &ms), 0, "bad time %s", json_string_value(in));
            else
                ms = json_integer_value(in);
            char ts[40];
            ol_time_format(ms, ts, sizeof(ts));
            return json_string(ts);
        }
        return json_deep_copy(in);
    default:
        return json_deep_copy(in);
    }
}

/* The key template rendered by hand: "{a}:{b}" -> "<a>:<b>". */
static void render_key(const char *tmpl, json_t *data, char *out, size_t size) {
    size_t n = 0;
    for (const char *p = tmpl; *p;) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)(close - p - 1), p + 1);
            n += (size_t)snprintf(out + n, size - n, "%s", json_string_value(json_object_get(data, name)));
            p = close + 1;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
}

static int is_uuid_v4(const char *s) {
    if (strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!strchr("0123456789abcdef", s[i])) {
            return 0;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

/* ---- valid fixtures ---------------------------------------------------- */

typedef struct coverage_s {
    bool type_seen[64];
    int id_given, id_generated, time_string, time_epoch, time_absent;
    int until_null, until_absent, until_string, until_epoch;
    int field_time_string, field_time_epoch, field_time_offset, field_now;
    int level_limits_absent, level_limits_given, channel_absent, multi_line_arrays;
} coverage_t;

static void count_shapes(coverage_t *cov, const ol_event_type_t *et, json_t *root, json_t *data) {
    cov->type_seen[et->index] = true;
    json_t *id = json_object_get(root, "id"), *t = json_object_get(root, "time");
    cov->id_given += id != NULL;
    cov->id_generated += id == NULL;
    cov->time_string += json_is_string(t);
    cov->time_epoch += json_is_integer(t);
    cov->time_absent += t == NULL;
    for (size_t i = 0; i < et->root->nfields; i++) {
        const ol_field_t *f = &et->root->fields[i];
        json_t *v = json_object_get(data, f->name);
        if (!strcmp(f->name, "until")) {
            cov->until_null += v && json_is_null(v);
            cov->until_absent += !v;
            cov->until_string += json_is_string(v);
            cov->until_epoch += json_is_integer(v);
        }
        if (f->type->kind == OL_NODE_LONG && f->type->timestamp) {
            cov->field_time_string += json_is_string(v);
            cov->field_time_epoch += json_is_integer(v);
            cov->field_time_offset +=
                json_is_string(v) && (strchr(json_string_value(v) + 19, '+') || strchr(json_string_value(v) + 19, '-'));
            cov->field_now += f->default_now && !v;
        }
        if (!strcmp(f->name, "level_limits")) {
            cov->level_limits_absent += !v;
            cov->level_limits_given += v != NULL;
        }
        if (!strcmp(f->name, "channel"))
            cov->channel_absent += !v;
        if (f->type->kind == OL_NODE_ARRAY && json_array_size(v) > 1)
            cov->multi_line_arrays++;
    }
}

static void check_valid_line(const char *file, long lineno, const char *line, size_t len, void *opaque) {
    char where[300], errstr[512] = "";
    snprintf(where, sizeof(where), "valid/%s:%ld", file, lineno);
    json_error_t jerr;
    json_t *root = json_loadb(line, len, 0, &jerr);
    cr_assert(root, "%s: not JSON: %s", where, jerr.text);

    ol_event_t ev;
    ol_arena_reset(arena);
    ol_err_t err = ol_event_from_line(arena, line, len, NOW_MS, &ev, errstr, sizeof(errstr));
    cr_assert_eq(err, OL_ERR_OK, "%s: ol_event_from_line: %s (%s)", where, errstr, ol_err2name(err));
    cr_assert_not_null(ev.input);
    const ol_event_type_t *et = ev.env.type;
    json_t *data = json_object_get(root, "data");

    /* envelope: id, time, type, version, key, subject */
    json_t *id = json_object_get(root, "id"), *t = json_object_get(root, "time");
    if (id)
        cr_expect_str_eq(ev.env.id, json_string_value(id), "%s: id", where);
    else
        cr_expect(is_uuid_v4(ev.env.id), "%s: generated id \"%s\" is not a UUID v4", where, ev.env.id);
    int64_t want_time = NOW_MS;
    if (json_is_string(t))
        cr_assert_eq(ol_time_parse(json_string_value(t), &want_time), 0);
    else if (t)
        want_time = json_integer_value(t);
    cr_expect_eq(ev.env.time_ms, want_time, "%s: time %lld, want %lld", where, (long long)ev.env.time_ms,
                 (long long)want_time);
    cr_expect_eq(ev.env.version, et->version, "%s: version", where);
    char key[OL_EVENT_KEY_MAX + 1];
    render_key(et->key, data, key, sizeof(key));
    cr_expect_str_eq(ev.key, key, "%s: key", where);
    cr_expect_str_eq(ev.env.subject, json_string_value(json_object_get(data, et->subject)), "%s: subject", where);

    /* encode, decode, compare with the normal form */
    const void *bin;
    size_t bin_len;
    err = ol_codec_encode(codec, et, ev.input, ev.env.time_ms, &bin, &bin_len, errstr, sizeof(errstr));
    cr_assert_eq(err, OL_ERR_OK, "%s: ol_codec_encode: %s (%s)", where, errstr, ol_err2name(err));
    cr_assert_gt(bin_len, 0);
    void *copy = ol_xmalloc(bin_len);
    memcpy(copy, bin, bin_len);

    avro_value_t *value;
    err = ol_codec_decode(codec, et, et->version, copy, bin_len, &value, errstr, sizeof(errstr));
    cr_assert_eq(err, OL_ERR_OK, "%s: ol_codec_decode: %s", where, errstr);
    json_t *got;
    err = ol_codec_decode_json(codec, et, et->version, copy, bin_len, &got, errstr, sizeof(errstr));
    cr_assert_eq(err, OL_ERR_OK, "%s: ol_codec_decode_json: %s", where, errstr);
    json_t *want = normal_form(et->root, data, ev.env.time_ms);
    assert_json_eq(got, want, where);

    /* the normal form is a fixed point: re-encoding it gives the same bytes */
    err = ol_codec_encode(codec, et, in_form(got), 0, &bin, &bin_len, errstr, sizeof(errstr));
    cr_assert_eq(err, OL_ERR_OK, "%s: re-encoding the decoded form: %s", where, errstr);
    json_t *again;
    cr_assert_eq(ol_codec_decode_json(codec, et, et->version, bin, bin_len, &again, errstr, sizeof(errstr)), OL_ERR_OK);
    assert_json_eq(again, want, where);
    cr_expect(memcmp(bin, copy, bin_len) == 0, "%s: re-encoding changed the bytes", where);

    count_shapes(opaque, et, root, data);
    json_decref(again);
    json_decref(got);
    json_decref(want);
    free(copy);
    ol_event_clear(&ev);
    json_decref(root);
}

Test(codec, round_trips_every_valid_fixture_to_its_normal_form) {
    coverage_t cov = {0};
    char *dir = olt_path("ORDERLOG_FIXTURES", "events/valid");
    long n = olt_for_each_line(dir, ".jsonl", check_valid_line, &cov);
    cr_assert_gt(n, 0, "no valid fixtures in %s", dir);

    /* the fixtures keep exercising what the contract allows */
    size_t ntypes;
    const ol_event_type_t *const *types = ol_schema_types(&ntypes);
    cr_assert_leq(ntypes, sizeof(cov.type_seen));
    for (size_t i = 0; i < ntypes; i++)
        cr_expect(cov.type_seen[i], "no valid fixture for %s", types[i]->name);
    cr_expect(cov.id_given && cov.id_generated, "fixtures must have lines with and without \"id\"");
    cr_expect(cov.time_string && cov.time_epoch && cov.time_absent, "\"time\" as string, epoch ms and absent");
    cr_expect(cov.until_null && cov.until_absent && cov.until_string && cov.until_epoch,
              "until null, absent, string and epoch ms");
    cr_expect(cov.field_time_string && cov.field_time_epoch && cov.field_time_offset && cov.field_now,
              "time fields as UTC string, offset string, epoch ms and defaulted");
    cr_expect(cov.level_limits_absent && cov.level_limits_given, "level_limits given and absent");
    cr_expect(cov.channel_absent, "BuyRequested without channel");
    cr_expect(cov.multi_line_arrays, "an array with more than one element");
    free(dir);
}

/* ---- invalid fixtures -------------------------------------------------- */

static ol_err_t err_by_name(const char *name) {
    for (int e = 0; e < OL_ERR__COUNT; e++)
        if (!strcmp(ol_err2name((ol_err_t)e), name))
            return (ol_err_t)e;
    cr_assert_fail("unknown error code %s in a fixture", name);
    return OL_ERR_OK;
}

/* The pipeline of `orderlog publish`: parse the line, then encode. */
static ol_err_t publish_pipeline(const char *line, size_t len, char *errstr, size_t errstr_size) {
    ol_event_t ev;
    ol_arena_reset(arena);
    ol_err_t err = ol_event_from_line(arena, line, len, NOW_MS, &ev, errstr, errstr_size);
    if (err) {
        cr_expect_null(ev.input, "a failed ol_event_from_line leaves no input");
        return err;
    }
    const void *bin;
    size_t bin_len;
    err = ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &bin, &bin_len, errstr, errstr_size);
    ol_event_clear(&ev);
    return err;
}

static void check_invalid_line(const char *file, long lineno, const char *text, size_t len, void *opaque) {
    int *count = opaque;
    char where[128], errstr[512] = "";
    snprintf(where, sizeof(where), "invalid/%s:%ld", file, lineno);
    json_error_t jerr;
    json_t *fx = json_loadb(text, len, 0, &jerr);
    cr_assert(fx, "%s: fixture is not JSON: %s", where, jerr.text);
    json_t *line = json_object_get(fx, "line");
    const char *want = json_string_value(json_object_get(fx, "error"));
    const char *code = json_string_value(json_object_get(fx, "code"));
    cr_assert(json_is_string(line) && want && *want, "%s: needs \"line\" and \"error\" strings", where);
    ol_err_t want_err = code ? err_by_name(code) : OL_ERR_INVALID;

    ol_err_t err = publish_pipeline(json_string_value(line), json_string_length(line), errstr, sizeof(errstr));
    cr_expect_eq(err, want_err, "%s: %s, want %s (errstr: %s)\n  line: %s", where, ol_err2name(err),
                 ol_err2name(want_err), errstr, json_string_value(line));
    cr_expect(strstr(errstr, want) != NULL, "%s: error \"%s\" does not contain \"%s\"\n  line: %s", where, errstr, want,
              json_string_value(line));
    (*count)++;
    json_decref(fx);
}

Test(codec, refuses_every_invalid_fixture_with_its_message) {
    int count = 0;
    char *dir = olt_path("ORDERLOG_FIXTURES", "events/invalid");
    olt_for_each_line(dir, ".jsonl", check_invalid_line, &count);
    cr_assert_gt(count, 0, "no invalid fixtures in %s", dir);
    free(dir);
}

Test(codec, refuses_invalid_utf8_naming_the_byte) {
    static const struct {
        const char *line;
        const char *want;
    } cases[] = {
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\xff\"}}", "invalid UTF-8 at byte 38"},
        {"\xfe{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\"}}", "invalid UTF-8 at byte 1"},
        /* overlong '/', a surrogate, a truncated 3-byte sequence */
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\xc0\xaf\"}}", "invalid UTF-8"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\xed\xa0\x80\"}}", "invalid UTF-8"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\xe6\x97\"}}", "invalid UTF-8"},
        {"{\"type\":\"Sku\x80Removed\",\"data\":{\"sku\":\"A\"}}", "invalid UTF-8"},
        /* after an escape in the same string: every byte is checked */
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\\n\xff\"}}", "invalid UTF-8 at byte 39"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"x\\\"\xff\"}}", "invalid UTF-8 at byte 40"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\\u00e9\xc0\xaf\"}}", "invalid UTF-8 at byte 43"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\\t\xed\xa0\x80\"}}", "invalid UTF-8 at byte 39"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\\t\xf4\x90\x80\x80\"}}", "invalid UTF-8 at byte 39"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\\t\xe6\x97\"}}", "invalid UTF-8 at byte 39"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\\t\xe6\x97", "invalid UTF-8 at byte 39"},
        /* in keys too, before and after an escape */
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\",\"k\xff\":1}}", "invalid UTF-8 at byte 42"},
        {"{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\",\"k\\n\xff\":1}}", "invalid UTF-8 at byte 44"},
        {"{\"ty\\u0070e\xff\":\"SkuRemoved\",\"data\":{\"sku\":\"A\"}}", "invalid UTF-8 at byte 12"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char errstr[256] = "";
        ol_err_t err = publish_pipeline(cases[i].line, strlen(cases[i].line), errstr, sizeof(errstr));
        cr_expect_eq(err, OL_ERR_INVALID, "case %zu: %s", i, ol_err2name(err));
        cr_expect(strstr(errstr, cases[i].want), "case %zu: \"%s\" does not contain \"%s\"", i, errstr, cases[i].want);
    }
    /* valid multi-byte text passes, before and after escapes */
    const char *ok = "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\xe9\x99\x90\xf0\x9f\x98\x80\"}}";
    char errstr[256] = "";
    cr_expect_eq(publish_pipeline(ok, strlen(ok), errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    ok = "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\xc3\xa9\\n\xe9\x99\x90\\ud83d\\ude00\xf0\x9f\x98\x80\xdf\xbf\"}"
         "}";
    cr_expect_eq(publish_pipeline(ok, strlen(ok), errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
}

/* ---- explicit expectations (not derived from the schema) --------------- */

static json_t *decode_line(const char *line, ol_event_t *ev) {
    char errstr[512] = "";
    ol_arena_reset(arena);
    cr_assert_eq(ol_event_from_line(arena, line, strlen(line), NOW_MS, ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    const void *bin;
    size_t len;
    cr_assert_eq(ol_codec_encode(codec, ev->env.type, ev->input, ev->env.time_ms, &bin, &len, errstr, sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    json_t *out;
    cr_assert_eq(
        ol_codec_decode_json(codec, ev->env.type, ev->env.type->version, bin, len, &out, errstr, sizeof(errstr)),
        OL_ERR_OK, "%s", errstr);
    return out;
}

static void expect_field(json_t *obj, const char *name, const char *want_json) {
    json_error_t jerr;
    json_t *want = json_loads(want_json, JSON_DECODE_ANY, &jerr);
    cr_assert(want, "bad JSON in test: %s", want_json);
    json_t *got = json_object_get(obj, name);
    cr_assert(got, "field %s missing from the decoded form", name);
    assert_json_eq(got, want, name);
    json_decref(want);
}

/* decode_line(line), expecting the fields named in the NULL-terminated
 * (name, JSON value) pairs that follow. */
__attribute__((sentinel)) static void expect_decoded(const char *line, ...) {
    ol_event_t ev;
    json_t *out = decode_line(line, &ev);
    va_list ap;
    va_start(ap, line);
    for (const char *name; (name = va_arg(ap, const char *));)
        expect_field(out, name, va_arg(ap, const char *));
    va_end(ap);
    json_decref(out);
    ol_event_clear(&ev);
}

Test(codec, renders_times_as_utc_rfc3339_with_milliseconds) {
    expect_decoded("{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"1.2.3.4\","
                   "\"action\":\"add\",\"reason\":\"rate\",\"until\":\"2026-11-11T08:00:00.5+08:00\","
                   "\"changed_at\":1795000000123}}",
                   "until", "\"2026-11-11T00:00:00.500Z\"", "changed_at", "\"2026-11-18T11:06:40.123Z\"", NULL);

    expect_decoded(
        "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\",\"removed_at\":\"2000-02-29T23:30:00.999999-01:00\"}}",
        "removed_at", "\"2000-03-01T00:30:00.999Z\"", NULL);

    expect_decoded("{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\",\"removed_at\":-1}}", "removed_at",
                   "\"1969-12-31T23:59:59.999Z\"", NULL);
}

Test(codec, fills_defaults_from_the_schema_and_the_event_time) {
    expect_decoded("{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"r\",\"session_id\":\"\","
                   "\"client_ip\":\"::1\",\"user_id\":\"u\",\"user_level\":0,\"sku\":\"S\",\"quantity\":1}}",
                   "channel", "\"\"", "requested_at", "\"" NOW_TEXT "\"", NULL);

    expect_decoded("{\"type\":\"PurchasePolicySet\",\"time\":\"2026-11-11T00:00:00+08:00\","
                   "\"data\":{\"sku\":\"S\",\"min_level\":2,\"default_limit\":1}}",
                   "level_limits", "[]", "set_at", "\"2026-11-10T16:00:00.000Z\"", NULL);

    expect_decoded("{\"type\":\"BlacklistChanged\",\"time\":1795000000123,\"data\":{\"subject_type\":\"user\","
                   "\"subject\":\"u-1\",\"action\":\"remove\",\"reason\":\"manual\"}}",
                   "until", "null", "changed_at", "\"2026-11-18T11:06:40.123Z\"", NULL);
}

Test(codec, derives_key_and_subject_from_the_schema) {
    static const struct {
        const char *line, *key, *subject;
    } cases[] = {
        {"{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"1.2.3.4\",\"action\":\"add\","
         "\"reason\":\"rate\"}}",
         "ip:1.2.3.4", "1.2.3.4"},
        {"{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"user\",\"subject\":\"u-9\",\"action\":\"add\","
         "\"reason\":\"manual\"}}",
         "user:u-9", "u-9"},
        {"{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"req-7\",\"session_id\":\"s\",\"client_ip\":\"1.1.1.1\","
         "\"user_id\":\"u\",\"user_level\":1,\"sku\":\"SKU-42\",\"quantity\":1}}",
         "SKU-42", "req-7"},
        {"{\"type\":\"CheckoutRequested\",\"data\":{\"request_id\":\"req-8\",\"hold_id\":\"h-3\",\"user_id\":\"u\","
         "\"sku\":\"SKU-42\"}}",
         "SKU-42", "h-3"},
        {"{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"o-5\",\"payment_id\":\"p\",\"amount\":1,\"currency\":"
         "\"CNY\"}}",
         "o-5", "o-5"},
        {"{\"type\":\"RefundApproved\",\"data\":{\"refund_id\":\"rf-2\",\"order_id\":\"o-5\"}}", "o-5", "rf-2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ol_event_t ev;
        char errstr[256] = "";
        ol_arena_reset(arena);
        cr_assert_eq(
            ol_event_from_line(arena, cases[i].line, strlen(cases[i].line), NOW_MS, &ev, errstr, sizeof(errstr)),
            OL_ERR_OK, "case %zu: %s", i, errstr);
        cr_expect_str_eq(ev.key, cases[i].key, "case %zu", i);
        cr_expect_str_eq(ev.env.subject, cases[i].subject, "case %zu", i);
        char key[64];
        cr_expect_eq(ol_codec_key(ev.env.type, ev.input, key, sizeof(key), errstr, sizeof(errstr)), OL_ERR_OK);
        cr_expect_str_eq(key, cases[i].key, "case %zu: ol_codec_key", i);
        ol_event_clear(&ev);
    }
    /* a key that does not fit is refused, not cut */
    json_t *data = json_pack("{s:s,s:s}", "subject_type", "ip", "subject", "1.2.3.4");
    char small[8], errstr[256] = "";
    cr_expect_eq(
        ol_codec_key(find_type("BlacklistChanged"), in_form(data), small, sizeof(small), errstr, sizeof(errstr)),
        OL_ERR_TOO_LARGE);
    char fits[11];
    cr_expect_eq(ol_codec_key(find_type("BlacklistChanged"), in_form(data), fits, sizeof(fits), errstr, sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    cr_expect_str_eq(fits, "ip:1.2.3.4");
    json_decref(data);
}

/* ol_codec_encode of data (jansson) as et must give want and, with says,
 * an error saying says. */
static void expect_encode(const ol_event_type_t *et, json_t *data, ol_err_t want, const char *says) {
    const void *bin;
    size_t len;
    char errstr[256] = "";
    cr_expect_eq(ol_codec_encode(codec, et, in_form(data), NOW_MS, &bin, &len, errstr, sizeof(errstr)), want, "%s",
                 errstr);
    if (says)
        cr_expect(strstr(errstr, says), "%s", errstr);
}

/* ol_codec_encode of data (jansson) as et must refuse it as invalid, saying says. */
static void expect_encode_refused(const ol_event_type_t *et, json_t *data, const char *says) {
    expect_encode(et, data, OL_ERR_INVALID, says);
}

/* The data of an OrderPlaced that encodes: one line, source "external". */
static json_t *order_placed_data(void) {
    json_t *data = json_loads("{\"order_id\":\"o\",\"user_id\":\"u\",\"source\":\"external\",\"lines\":[{\"sku\":"
                              "\"A\",\"quantity\":1,\"unit_price\":1}],\"total_amount\":1,\"currency\":\"CNY\"}",
                              0, NULL);
    cr_assert(data);
    return data;
}

Test(codec, refuses_data_that_is_not_an_object_and_strings_with_nul) {
    const ol_event_type_t *et = find_type("SkuRemoved");
    json_t *arr = json_array();
    expect_encode_refused(et, arr, "\"data\" must be an object");
    json_decref(arr);

    json_t *data = json_object();
    json_object_set_new(data, "sku", json_stringn("A\0B", 3));
    expect_encode_refused(et, data, "field \"sku\": must not contain NUL (\\u0000)");
    json_decref(data);
}

Test(codec, compares_enum_symbols_by_full_length) {
    /* data built in C (not parsed, so a NUL can get this far) */
    const ol_event_type_t *et = find_type("OrderPlaced");
    json_t *data = order_placed_data();
    json_object_set_new(data, "source", json_stringn("external\0junk", 13));
    expect_encode_refused(et, data, "field \"source\": \"external\" is not one of");
    json_object_set_new(data, "source", json_string("external"));
    expect_encode(et, data, OL_ERR_OK, NULL);
    json_decref(data);
}

Test(codec, stays_usable_after_an_error) {
    const ol_event_type_t *et = find_type("OrderPlaced");
    json_t *good = order_placed_data();
    json_t *bad = json_loads("{\"order_id\":\"o\",\"user_id\":\"u\",\"source\":\"external\",\"lines\":[{\"sku\":"
                             "\"A\",\"quantity\":1,\"unit_price\":1},{\"sku\":\"B\",\"quantity\":0,\"unit_price\":1}],"
                             "\"total_amount\":1,\"currency\":\"CNY\"}",
                             0, NULL);
    const void *bin;
    size_t len, first_len;
    char errstr[256], first[256];
    cr_assert_eq(ol_codec_encode(codec, et, in_form(good), NOW_MS, &bin, &first_len, errstr, sizeof(errstr)),
                 OL_ERR_OK);
    cr_assert_lt(first_len, sizeof(first));
    memcpy(first, bin, first_len);
    cr_assert_eq(ol_codec_encode(codec, et, in_form(bad), NOW_MS, &bin, &len, errstr, sizeof(errstr)), OL_ERR_INVALID);
    /* the half-written output of the failed encode must not leak into the next */
    cr_assert_eq(ol_codec_encode(codec, et, in_form(good), NOW_MS, &bin, &len, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_expect_eq(len, first_len);
    cr_expect(memcmp(bin, first, len) == 0, "same data, different bytes after an error");
    json_t *out;
    cr_assert_eq(ol_codec_decode_json(codec, et, et->version, bin, len, &out, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_expect_eq(json_array_size(json_object_get(out, "lines")), 1);
    json_decref(out);
    json_decref(good);
    json_decref(bad);
}

Test(codec, encodes_events_larger_than_its_initial_buffer) {
    const ol_event_type_t *et = find_type("OrderPlaced");
    json_t *data = json_pack("{s:s,s:s,s:s,s:[],s:i,s:s}", "order_id", "o-big", "user_id", "u", "source", "external",
                             "lines", "total_amount", 0, "currency", "CNY");
    json_t *lines = json_object_get(data, "lines");
    char sku[64];
    for (int i = 0; i < 20000; i++) {
        snprintf(sku, sizeof(sku), "SKU-%08d-with-a-long-enough-name", i);
        json_array_append_new(lines, json_pack("{s:s,s:i,s:i}", "sku", sku, "quantity", i + 1, "unit_price", i));
    }
    const void *bin;
    size_t len;
    char errstr[256] = "";
    cr_assert_eq(ol_codec_encode(codec, et, in_form(data), NOW_MS, &bin, &len, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    cr_expect_gt(len, 64 * 1024);
    json_t *out;
    cr_assert_eq(ol_codec_decode_json(codec, et, et->version, bin, len, &out, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    json_t *out_lines = json_object_get(out, "lines");
    cr_assert_eq(json_array_size(out_lines), 20000);
    cr_expect_str_eq(json_string_value(json_object_get(json_array_get(out_lines, 19999), "sku")),
                     "SKU-00019999-with-a-long-enough-name");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(out_lines, 19999), "quantity")), 20000);
    json_decref(out);
    json_decref(data);
}

/* ---- decoding bytes no orderlog wrote ---------------------------------- */

/* A valid encoding of a line, copied into a new buffer. */
static void *encode_line(const char *line, const ol_event_type_t **et, size_t *len) {
    ol_event_t ev;
    char errstr[512] = "";
    ol_arena_reset(arena);
    cr_assert_eq(ol_event_from_line(arena, line, strlen(line), NOW_MS, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    const void *bin;
    cr_assert_eq(ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &bin, len, errstr, sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    *et = ev.env.type;
    void *copy = ol_xmalloc(*len);
    memcpy(copy, bin, *len);
    ol_event_clear(&ev);
    return copy;
}

static const char *const sample_lines[] = {
    "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"r-1\",\"session_id\":\"s-1\",\"client_ip\":\"1.2.3.4\","
    "\"user_id\":\"u-1\",\"user_level\":3,\"sku\":\"SKU-1\",\"quantity\":2,\"channel\":\"gate\"}}",
    "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"o-1\",\"user_id\":\"u-1\",\"source\":\"flash_sale\",\"lines\":"
    "[{\"sku\":\"A\",\"quantity\":1,\"unit_price\":100},{\"sku\":\"B\",\"quantity\":2,\"unit_price\":300}],"
    "\"total_amount\":700,\"currency\":\"CNY\"}}",
    "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"1.2.3.4\",\"action\":\"add\","
    "\"reason\":\"rate\",\"until\":\"2026-11-11T01:00:00Z\"}}",
    "{\"type\":\"PolicyChanged\",\"data\":{\"sku\":\"S\",\"min_level\":1,\"default_limit\":2,\"level_limits\":"
    "[{\"level\":3,\"limit\":5},{\"level\":4,\"limit\":0}]}}",
};
#define NSAMPLES (sizeof(sample_lines) / sizeof(sample_lines[0]))

/* Decodes buf; on failure the error must be explained. Returns the error. */
static ol_err_t decode_quietly(const ol_event_type_t *et, const void *buf, size_t len) {
    char errstr[512] = "";
    json_t *out = NULL;
    ol_err_t err = ol_codec_decode_json(codec, et, et->version, buf, len, &out, errstr, sizeof(errstr));
    if (err) {
        cr_assert_eq(err, OL_ERR_INVALID, "%s", ol_err2name(err));
        cr_assert(errstr[0], "a decode error without a message");
        cr_assert_null(out);
        return err;
    }
    /* whatever decode accepts, encode accepts: both apply the same checks */
    const void *bin;
    size_t bin_len;
    cr_assert(json_is_object(out));
    ol_arena_reset(arena);
    if (ol_codec_encode(codec, et, in_form(out), 0, &bin, &bin_len, errstr, sizeof(errstr))) {
        char *d = dump(out);
        cr_assert_fail("%s: decode accepted what encode refuses: %s\n  decoded: %s", et->name, errstr, d);
    }
    json_decref(out);
    return err;
}

Test(codec, decode_refuses_garbage) {
    const ol_event_type_t *et = find_type("BuyRequested");
    static const unsigned char garbage[][12] = {
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* varint too long */
        {0x01},                                                                   /* string length -1 */
        {0x7f, 'a'},                                                              /* length -64 */
        {0x7e, 'a', 'b'},                                                         /* length 63, 2 bytes */
    };
    static const size_t lens[] = {12, 1, 2, 3};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        cr_expect_eq(decode_quietly(et, garbage[i], lens[i]), OL_ERR_INVALID, "garbage %zu accepted", i);
    cr_expect_eq(decode_quietly(et, "", 0), OL_ERR_INVALID, "empty payload accepted");
    const char *json = "{\"request_id\":\"r-1\"}";
    cr_expect_eq(decode_quietly(et, json, strlen(json)), OL_ERR_INVALID, "JSON text accepted as Avro");
}

Test(codec, decode_refuses_every_truncation_of_a_valid_payload) {
    for (size_t s = 0; s < NSAMPLES; s++) {
        const ol_event_type_t *et;
        size_t len;
        unsigned char *bin = encode_line(sample_lines[s], &et, &len);
        cr_assert_eq(decode_quietly(et, bin, len), OL_ERR_OK, "sample %zu does not decode", s);
        for (size_t cut = 0; cut < len; cut++) {
            /* a copy of exactly `cut` bytes, so ASan sees any read past it */
            unsigned char *prefix = ol_xmalloc(cut ? cut : 1);
            memcpy(prefix, bin, cut);
            cr_expect_eq(decode_quietly(et, prefix, cut), OL_ERR_INVALID, "%s: %zu of %zu bytes accepted", et->name,
                         cut, len);
            free(prefix);
        }
        free(bin);
    }
}

Test(codec, decode_refuses_trailing_bytes) {
    for (size_t s = 0; s < NSAMPLES; s++) {
        const ol_event_type_t *et;
        size_t len;
        unsigned char *bin = encode_line(sample_lines[s], &et, &len);
        unsigned char *longer = ol_xmalloc(len + 1);
        memcpy(longer, bin, len);
        longer[len] = 0;
        char errstr[256] = "";
        avro_value_t *v;
        cr_expect_eq(ol_codec_decode(codec, et, et->version, longer, len + 1, &v, errstr, sizeof(errstr)),
                     OL_ERR_INVALID, "%s with a trailing byte accepted", et->name);
        cr_expect(strstr(errstr, "trailing bytes"), "%s", errstr);
        free(longer);
        free(bin);
    }
}

Test(codec, decode_survives_random_and_mutated_bytes) {
    size_t ntypes;
    const ol_event_type_t *const *types = ol_schema_types(&ntypes);
    uint64_t seed = 20261111;
    unsigned char buf[96];
    for (int iter = 0; iter < 4000; iter++) {
        const ol_event_type_t *et = types[olt_rand(&seed) % ntypes];
        size_t len = olt_rand(&seed) % sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)olt_rand(&seed);
        unsigned char *exact = ol_xmalloc(len ? len : 1);
        memcpy(exact, buf, len);
        decode_quietly(et, exact, len);
        free(exact);
    }
    /* valid payloads with a few bytes changed reach deeper into the decoder */
    for (size_t s = 0; s < NSAMPLES; s++) {
        const ol_event_type_t *et;
        size_t len;
        unsigned char *bin = encode_line(sample_lines[s], &et, &len);
        for (int iter = 0; iter < 1000; iter++) {
            unsigned char *m = ol_xmalloc(len);
            memcpy(m, bin, len);
            int flips = 1 + (int)(olt_rand(&seed) % 3);
            for (int k = 0; k < flips; k++)
                m[olt_rand(&seed) % len] = (unsigned char)olt_rand(&seed);
            decode_quietly(et, m, len);
            free(m);
        }
        free(bin);
    }
}

/* Data of et written with avro-c directly (json), which ol_codec_decode
 * must refuse as invalid, naming field. */
static void expect_decode_refused(const ol_event_type_t *et, const char *json, const char *field) {
    unsigned char buf[512];
    char errstr[256] = "";
    avro_value_t *v;
    size_t len = olt_avro_write(et->iface, json, buf, sizeof(buf));
    cr_expect_eq(ol_codec_decode(codec, et, et->version, buf, len, &v, errstr, sizeof(errstr)), OL_ERR_INVALID, "%s",
                 json);
    cr_expect(strstr(errstr, field), "error does not name the field %s: %s", field, errstr);
}

Test(codec, decode_checks_payloads_from_other_writers) {
    const ol_event_type_t *et = find_type("BuyRequested");
    unsigned char buf[512];
    char errstr[256] = "";
    avro_value_t *v;

    /* all fine when written with avro-c directly ... */
    size_t len =
        olt_avro_write(et->iface,
                       "{\"request_id\":\"r-1\",\"session_id\":\"\",\"client_ip\":\"1.2.3.4\",\"user_id\":\"u\","
                       "\"user_level\":0,\"sku\":\"S\",\"quantity\":1,\"requested_at\":0,\"channel\":\"x\"}",
                       buf, sizeof(buf));
    cr_expect_eq(ol_codec_decode(codec, et, et->version, buf, len, &v, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);

    /* ... but a quantity of 0 breaks the contract */
    expect_decode_refused(et,
                          "{\"request_id\":\"r-1\",\"session_id\":\"\",\"client_ip\":\"1.2.3.4\",\"user_id\":\"u\","
                          "\"user_level\":0,\"sku\":\"S\",\"quantity\":0,\"requested_at\":0,\"channel\":\"\"}",
                          "quantity");

    /* as do an empty request_id, a bad IP and a nested line quantity */
    expect_decode_refused(et,
                          "{\"request_id\":\"\",\"session_id\":\"\",\"client_ip\":\"1.2.3.4\",\"user_id\":\"u\","
                          "\"user_level\":0,\"sku\":\"S\",\"quantity\":1,\"requested_at\":0,\"channel\":\"\"}",
                          "request_id");
    expect_decode_refused(et,
                          "{\"request_id\":\"r\",\"session_id\":\"\",\"client_ip\":\"999.1.1.1\",\"user_id\":\"u\","
                          "\"user_level\":0,\"sku\":\"S\",\"quantity\":1,\"requested_at\":0,\"channel\":\"\"}",
                          "client_ip");

    const ol_event_type_t *op = find_type("OrderPlaced");
    expect_decode_refused(op,
                          "{\"order_id\":\"o\",\"user_id\":\"u\",\"source\":\"external\",\"lines\":[{\"sku\":\"A\","
                          "\"quantity\":1,\"unit_price\":1},{\"sku\":\"B\",\"quantity\":0,\"unit_price\":1}],"
                          "\"total_amount\":2,\"currency\":\"CNY\",\"placed_at\":0}",
                          "lines[1].quantity");
}

Test(codec, decode_refuses_unknown_schema_versions) {
    const ol_event_type_t *et = find_type("BuyRequested");
    const ol_event_type_t *sample_et;
    size_t len;
    unsigned char *bin = encode_line(sample_lines[0], &sample_et, &len);
    static const int versions[] = {99, 3, 0, -1};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        char errstr[256] = "";
        avro_value_t *v;
        json_t *j = NULL;
        cr_expect_eq(ol_codec_decode(codec, et, versions[i], bin, len, &v, errstr, sizeof(errstr)), OL_ERR_UNSUPPORTED,
                     "version %d", versions[i]);
        cr_expect(strstr(errstr, "BuyRequested") && strstr(errstr, "version"), "%s", errstr);
        cr_expect_eq(ol_codec_decode_json(codec, et, versions[i], bin, len, &j, errstr, sizeof(errstr)),
                     OL_ERR_UNSUPPORTED);
        cr_expect_null(j);
    }
    /* version 2 data claimed to be version 1 is not silently misread */
    char errstr[256] = "";
    avro_value_t *v;
    cr_expect_neq(ol_codec_decode(codec, et, 1, bin, len, &v, errstr, sizeof(errstr)), OL_ERR_OK,
                  "v2 bytes read as v1 (they carry one more field)");
    free(bin);
}

/* Replaces the first occurrence of the placeholder in buf by bytes of the
 * same length: how to get bytes JSON cannot hold into an Avro payload. */
static void patch(unsigned char *buf, size_t len, const char *placeholder, const char *bytes) {
    size_t n = strlen(placeholder);
    cr_assert_eq(strlen(bytes), n);
    unsigned char *at = memmem(buf, len, placeholder, n);
    cr_assert(at, "placeholder %s not in the payload", placeholder);
    memcpy(at, bytes, n);
}

Test(codec, decode_refuses_strings_that_are_not_utf8) {
    /* what encode can never write (publish lines are checked as UTF-8) must
     * not come out of decode either: jansson cannot hold such a string, so
     * the field would silently vanish from the JSON form */
    const ol_event_type_t *et = find_type("BuyRequested");
    static const struct {
        const char *field, *placeholder, *bytes;
    } cases[] = {
        {"session_id", "@@", "\xff\xfe"},
        {"channel", "@@", "\xc0\x80"},
        {"user_id", "@@@", "\xed\xa0\x80"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *obj = json_pack("{s:s,s:s,s:s,s:s,s:i,s:s,s:i,s:i,s:s}", "request_id", "r", "session_id", "s",
                                "client_ip", "1.2.3.4", "user_id", "u", "user_level", 0, "sku", "S", "quantity", 1,
                                "requested_at", 0, "channel", "c");
        json_object_set_new(obj, cases[i].field, json_string(cases[i].placeholder));
        char *text = json_dumps(obj, 0);
        unsigned char buf[512];
        size_t len = olt_avro_write(et->iface, text, buf, sizeof(buf));
        patch(buf, len, cases[i].placeholder, cases[i].bytes);
        char errstr[256] = "";
        avro_value_t *v;
        cr_expect_eq(ol_codec_decode(codec, et, et->version, buf, len, &v, errstr, sizeof(errstr)), OL_ERR_INVALID,
                     "%s with invalid UTF-8 accepted", cases[i].field);
        cr_expect(strstr(errstr, cases[i].field), "error does not name %s: %s", cases[i].field, errstr);
        free(text);
        json_decref(obj);
    }
}

Test(codec, refuses_times_rfc3339_cannot_express) {
    /* four-digit years that PostgreSQL can store: 0001-01-01 to 9999-12-31 */
    static const struct {
        const char *ms, *want; /* want NULL: refused */
    } cases[] = {
        {"253402300799999", "9999-12-31T23:59:59.999Z"},
        {"-62135596800000", "0001-01-01T00:00:00.000Z"},
        {"253402300800000", NULL},
        {"-62135596800001", NULL},
        {"-62167219200000", NULL}, /* the year 0000 */
        {"9223372036854775807", NULL},
        {"-9223372036854775808", NULL},
    };
    const ol_event_type_t *et = find_type("SkuRemoved");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char line[256], errstr[256] = "";
        snprintf(line, sizeof(line), "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\",\"removed_at\":%s}}",
                 cases[i].ms);
        ol_err_t err = publish_pipeline(line, strlen(line), errstr, sizeof(errstr));
        if (!cases[i].want) {
            cr_expect_eq(err, OL_ERR_INVALID, "removed_at %s accepted", cases[i].ms);
            cr_expect(strstr(errstr, "removed_at"), "%s", errstr);
        } else {
            cr_expect_eq(err, OL_ERR_OK, "removed_at %s: %s", cases[i].ms, errstr);
            ol_event_t ev;
            json_t *out = decode_line(line, &ev);
            char want[64];
            snprintf(want, sizeof(want), "\"%s\"", cases[i].want);
            expect_field(out, "removed_at", want);
            json_decref(out);
        }
        /* the same time from another writer */
        unsigned char buf[64];
        char json[128];
        snprintf(json, sizeof(json), "{\"sku\":\"A\",\"removed_at\":%s}", cases[i].ms);
        size_t len = olt_avro_write(et->iface, json, buf, sizeof(buf));
        json_t *out = NULL;
        err = ol_codec_decode_json(codec, et, et->version, buf, len, &out, errstr, sizeof(errstr));
        if (!cases[i].want) {
            cr_expect_eq(err, OL_ERR_INVALID, "decode: removed_at %s accepted as %s", cases[i].ms,
                         out ? json_string_value(json_object_get(out, "removed_at")) : "-");
        } else {
            cr_expect_eq(err, OL_ERR_OK, "decode: %s", errstr);
        }
        json_decref(out);
    }
    /* offsets can push a four-digit year out of range too */
    static const char *const strings[] = {"0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00",
                                          "0000-06-01T00:00:00Z"};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        char line[256], errstr[256] = "";
        snprintf(line, sizeof(line), "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\",\"removed_at\":\"%s\"}}",
                 strings[i]);
        cr_expect_eq(publish_pipeline(line, strlen(line), errstr, sizeof(errstr)), OL_ERR_INVALID,
                     "removed_at \"%s\" accepted", strings[i]);
    }
}

/* The JSON reader of the publish path against hostile lines: random bytes
 * and valid lines with bytes changed. Never a crash; every error explained. */
Test(codec, publish_pipeline_survives_random_and_mutated_lines) {
    uint64_t seed = 42;
    static const char alphabet[] = "{}[]\",:0123456789-.eE+tfnrulasx \\u/\x80\xc3\xa9\t";
    char buf[160];
    for (int iter = 0; iter < 4000; iter++) {
        size_t len = olt_rand(&seed) % sizeof(buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = alphabet[olt_rand(&seed) % (sizeof(alphabet) - 1)];
        char *exact = ol_xmalloc(len ? len : 1);
        memcpy(exact, buf, len);
        char errstr[512] = "";
        if (publish_pipeline(exact, len, errstr, sizeof(errstr)))
            cr_assert(errstr[0], "an error without a message for \"%.*s\"", (int)len, exact);
        free(exact);
    }
    for (size_t s = 0; s < NSAMPLES; s++) {
        size_t len = strlen(sample_lines[s]);
        for (int iter = 0; iter < 2000; iter++) {
            char *m = ol_xmalloc(len);
            memcpy(m, sample_lines[s], len);
            int flips = 1 + (int)(olt_rand(&seed) % 3);
            for (int k = 0; k < flips; k++)
                m[olt_rand(&seed) % len] = alphabet[olt_rand(&seed) % (sizeof(alphabet) - 1)];
            /* and sometimes cut it short */
            size_t mlen = olt_rand(&seed) % 4 ? len : olt_rand(&seed) % len;
            char errstr[512] = "";
            if (publish_pipeline(m, mlen, errstr, sizeof(errstr)))
                cr_assert(errstr[0], "an error without a message for \"%.*s\"", (int)mlen, m);
            free(m);
        }
    }
}

/* What avro-c allocates, chained to whatever allocator was set: the largest
 * single block, and the bytes live (avro-c passes the old size back). */
static struct avro_allocator_state prev_alloc;
static size_t biggest_alloc;
static long long live_bytes;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    void *p = prev_alloc.alloc(prev_alloc.user_data, ptr, osize, nsize);
    if (nsize == 0 || p) {
        live_bytes += (long long)nsize - (long long)(ptr ? osize : 0);
        if (nsize > biggest_alloc)
            biggest_alloc = nsize;
    }
    return p;
}

static void count_avro_allocations(bool on) {
    if (on) {
        prev_alloc = AVRO_CURRENT_ALLOCATOR;
        biggest_alloc = 0;
        live_bytes = 0;
        avro_set_allocator(counting_alloc, NULL);
    } else {
        avro_set_allocator(prev_alloc.alloc, prev_alloc.user_data);
    }
}

Test(codec, decode_allocates_no_more_than_the_payload_can_hold) {
    /* sizes from outside are bounds-checked before allocating: a 9-byte
     * payload claiming a 128 MiB string must not make a 128 MiB buffer
     * (under ASan, allocations over 256 MiB fail: see the options above) */
    const ol_event_type_t *et = find_type("SkuRemoved");
    unsigned char buf[16];
    size_t len = 0;
    uint64_t z = (uint64_t)128 << 20 << 1; /* zigzag of 128 MiB */
    while (z > 0x7f) {
        buf[len++] = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    buf[len++] = (unsigned char)z;
    memcpy(buf + len, "abcd", 4);
    len += 4;

    count_avro_allocations(true);
    char errstr[256] = "";
    avro_value_t *v;
    ol_err_t err = ol_codec_decode(codec, et, et->version, buf, len, &v, errstr, sizeof(errstr));
    size_t biggest = biggest_alloc;
    count_avro_allocations(false);
    cr_expect_eq(err, OL_ERR_INVALID);
    cr_expect_lt(biggest, 1 << 20, "decoding %zu bytes allocated %zu bytes at once", len, biggest);
}

Test(codec, decode_of_broken_payloads_does_not_leak) {
    /* a consumer meets corrupt records for as long as it runs: decoding one
     * must not leave memory behind (avro-c 1.11.1 drops the buffer of a
     * string cut short) */
    const ol_event_type_t *et;
    size_t len;
    unsigned char *bin = encode_line(sample_lines[0], &et, &len);
    size_t cut = 3; /* inside request_id "r-1" */
    char errstr[256];
    avro_value_t *v;
    /* warm up: the codec's reusable values exist before counting */
    cr_assert_eq(ol_codec_decode(codec, et, et->version, bin, len, &v, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_codec_decode(codec, et, et->version, bin, cut, &v, errstr, sizeof(errstr)), OL_ERR_INVALID);
    count_avro_allocations(true);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(ol_codec_decode(codec, et, et->version, bin, cut, &v, errstr, sizeof(errstr)), OL_ERR_INVALID);
    long long after_broken = live_bytes;
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(ol_codec_decode(codec, et, et->version, bin, len, &v, errstr, sizeof(errstr)), OL_ERR_OK);
    long long after_good = live_bytes;
    count_avro_allocations(false);
    cr_expect_lt(after_broken, 1000, "1000 truncated payloads left %lld bytes allocated", after_broken);
    cr_expect_lt(after_good - after_broken, 1000, "1000 good payloads left %lld bytes allocated",
                 after_good - after_broken);
    free(bin);
}
