/* The CloudEvents envelope (Kafka binary mode) and reading Kafka records.
 *
 * ol_event_from_message needs an rd_kafka_message_t. librdkafka 2.0.2 makes
 * it the first member of its private rd_kafka_msg_t, and the accessors used
 * here (rd_kafka_message_headers, _set_headers, _timestamp) only read that
 * struct's fields, never rkt. So a zeroed block much larger than
 * rd_kafka_msg_t stands in for a consumed record: no headers parsed yet, no
 * protocol header bytes, timestamp 0. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/embedded.h"
#include "common/domain/properties.h"
#include "common/domain/wire.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/time.h"
#include "../fake_http.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
/* avro-c allocates whatever length a hostile payload claims (reported; see
 * test_codec.c): behave like glibc, which returns NULL for the impossible. */
__attribute__((used)) const char *__asan_default_options(void) {
    return "allocator_may_return_null=1";
}
#endif

#define NOW_MS 1795000000000LL

OLT_CODEC_FIXTURE

TestSuite(event, .init = setup, .fini = teardown);

/* ---- a record as a consumer would see it -------------------------------- */

#define FAKE_MSG_SIZE 4096 /* rd_kafka_msg_t is a few hundred bytes */

typedef struct record_s {
    rd_kafka_message_t *rkm; /* at the start of a zeroed FAKE_MSG_SIZE block */
    rd_kafka_headers_t *hdrs;
    void *payload;
    char *key;
} record_t;

static record_t record_new(const void *payload, size_t len, const char *key) {
    record_t r = {0};
    r.rkm = aligned_alloc(64, FAKE_MSG_SIZE);
    cr_assert(r.rkm);
    memset(r.rkm, 0, FAKE_MSG_SIZE);
    /* an exact copy, so ASan sees a read past the payload */
    r.payload = ol_xmalloc(len ? len : 1);
    memcpy(r.payload, payload, len);
    r.rkm->payload = r.payload;
    r.rkm->len = len;
    r.key = key ? ol_xstrdup(key) : NULL;
    r.rkm->key = r.key;
    r.rkm->key_len = key ? strlen(key) : 0;
    r.rkm->partition = 0;
    r.rkm->offset = 42;
    return r;
}

/* Headers become the record's: the record is what a consumer would read. */
static void record_set_headers(record_t *r, rd_kafka_headers_t *hdrs) {
    r->hdrs = hdrs;
    rd_kafka_message_set_headers(r->rkm, hdrs);
}

static void record_free(record_t *r) {
    if (r->hdrs)
        rd_kafka_headers_destroy(r->hdrs);
    free(r->payload);
    free(r->key);
    free(r->rkm);
}

static const char *header(rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t size) {
    const void *val;
    size_t len;
    if (rd_kafka_header_get_last(hdrs, name, &val, &len))
        return NULL;
    cr_assert_lt(len, size);
    memcpy(buf, val, len);
    buf[len] = '\0';
    return buf;
}

static const ol_event_type_t *find_type(const char *name) {
    char errstr[256];
    cr_assert_eq(ol_schema_init(errstr, sizeof(errstr)), OL_ERR_OK);
    const ol_event_type_t *et = ol_schema_find(name);
    cr_assert(et);
    return et;
}

static ol_envelope_t sample_envelope(void) {
    ol_envelope_t env = {0};
    env.type = find_type("BuyRequested");
    snprintf(env.id, sizeof(env.id), "%s", "3f0c6a2e-7b1d-4c55-9a0e-2b7f1c9d8e41");
    snprintf(env.source, sizeof(env.source), "%s", "orderlog/gate");
    snprintf(env.subject, sizeof(env.subject), "%s", "req-1");
    env.time_ms = 1795000000123LL;
    env.content = OL_CONTENT_AVRO;
    env.version = 2;
    return env;
}

Test(event, writes_the_eight_cloudevents_headers) {
    ol_envelope_t env = sample_envelope();
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&env, hdrs);
    static const char *const want[][2] = {
        {"ce_specversion", "1.0"},
        {"ce_id", "3f0c6a2e-7b1d-4c55-9a0e-2b7f1c9d8e41"},
        {"ce_type", "orderlog.BuyRequested"},
        {"ce_source", "orderlog/gate"},
        {"ce_time", "2026-11-18T11:06:40.123Z"},
        {"ce_subject", "req-1"},
        {"content-type", "application/avro"},
        {"ce_dataschema", "urn:orderlog:schema:BuyRequested:2"},
    };
    cr_expect_eq(rd_kafka_header_cnt(hdrs), 8, "%zu headers", rd_kafka_header_cnt(hdrs));
    for (size_t i = 0; i < 8; i++) {
        char buf[128];
        const char *got = header(hdrs, want[i][0], buf, sizeof(buf));
        cr_expect(got, "header %s missing", want[i][0]);
        if (got)
            cr_expect_str_eq(got, want[i][1], "header %s", want[i][0]);
    }
    /* each header once: a second envelope would show as duplicates */
    for (size_t i = 0; i < 8; i++) {
        const char *name;
        const void *val;
        size_t size;
        cr_assert_eq(rd_kafka_header_get_all(hdrs, i, &name, &val, &size), RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_expect_str_eq(name, want[i][0], "header %zu in the documented order", i);
    }
    rd_kafka_headers_destroy(hdrs);
}

Test(event, names_json_content_and_the_payload_version) {
    ol_envelope_t env = sample_envelope();
    env.content = OL_CONTENT_JSON;
    env.version = 1;
    env.time_ms = 0;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&env, hdrs);
    char buf[128];
    cr_expect_str_eq(header(hdrs, "content-type", buf, sizeof(buf)), "application/json");
    cr_expect_str_eq(header(hdrs, "ce_dataschema", buf, sizeof(buf)), "urn:orderlog:schema:BuyRequested:1");
    cr_expect_str_eq(header(hdrs, "ce_time", buf, sizeof(buf)), "1970-01-01T00:00:00.000Z");
    rd_kafka_headers_destroy(hdrs);
}

/* ---- reading records ---------------------------------------------------- */

static const char *const buy_line =
    "{\"type\":\"BuyRequested\",\"id\":\"ev-1\",\"time\":\"2026-11-11T00:00:00Z\",\"data\":{\"request_id\":\"req-1\","
    "\"session_id\":\"s\",\"client_ip\":\"1.2.3.4\",\"user_id\":\"u-1\",\"user_level\":2,\"sku\":\"SKU-1\","
    "\"quantity\":2}}";

/* The decoded data of buy_line: defaults filled, times rendered. */
static json_t *buy_data(void) {
    json_t *j = json_loads("{\"request_id\":\"req-1\",\"session_id\":\"s\",\"client_ip\":\"1.2.3.4\",\"user_id\":"
                           "\"u-1\",\"user_level\":2,\"sku\":\"SKU-1\",\"quantity\":2,\"requested_at\":"
                           "\"2026-11-11T00:00:00.000Z\",\"channel\":\"\"}",
                           0, NULL);
    cr_assert(j);
    return j;
}

/* What publish writes for a line: the envelope's headers and the Avro payload. */
static record_t publish_record(const char *line) {
    ol_event_t ev;
    char errstr[256] = "";
    ol_arena_reset(arena);
    cr_assert_eq(ol_event_from_line(arena, line, strlen(line), NOW_MS, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    snprintf(ev.env.source, sizeof(ev.env.source), "%s", "orderlog/publish");
    const void *bin;
    size_t len;
    cr_assert_eq(ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &bin, &len, errstr, sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    record_t r = record_new(bin, len, ev.key);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&ev.env, hdrs);
    record_set_headers(&r, hdrs);
    ol_event_clear(&ev);
    return r;
}

/* Expects got to be the data of buy_line. */
static void expect_buy_data(json_t *got) {
    json_t *want = buy_data();
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS), *w = json_dumps(want, JSON_SORT_KEYS);
        cr_expect_fail("data:\n  got  %s\n  want %s", g, w);
        free(g);
        free(w);
    }
    json_decref(want);
}

Test(event, reads_back_what_publish_writes) {
    record_t r = publish_record(buy_line);
    ol_event_t ev;
    char errstr[256] = "";
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ev.env.type, find_type("BuyRequested"));
    cr_expect_str_eq(ev.env.id, "ev-1");
    cr_expect_str_eq(ev.env.source, "orderlog/publish");
    cr_expect_str_eq(ev.env.subject, "req-1");
    cr_expect_eq(ev.env.time_ms, 1794355200000LL);
    cr_expect_eq(ev.env.content, OL_CONTENT_AVRO);
    cr_expect_eq(ev.env.version, 2);
    cr_expect_str_eq(ev.key, "SKU-1");
    expect_buy_data(ev.data);
    ol_event_clear(&ev);
    cr_expect_null(ev.data);
    record_free(&r);
}

Test(event, reads_a_headerless_publish_line) {
    record_t r = record_new(buy_line, strlen(buy_line), "SKU-1");
    ol_event_t ev;
    char errstr[256] = "";
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ev.env.type, find_type("BuyRequested"));
    cr_expect_str_eq(ev.env.id, "ev-1");
    cr_expect_eq(ev.env.time_ms, 1794355200000LL);
    cr_expect_eq(ev.env.content, OL_CONTENT_JSON);
    cr_expect_str_eq(ev.env.source, "unknown");
    cr_expect_str_eq(ev.env.subject, "req-1");
    cr_expect_str_eq(ev.key, "SKU-1");
    cr_expect_null(ev.input, "input points into a freed arena");
    expect_buy_data(ev.data);
    ol_event_clear(&ev);
    record_free(&r);

    /* without "time" or "id": a generated id, and a time near now (the fake
     * record has no broker timestamp) */
    const char *bare = "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\"}}";
    r = record_new(bare, strlen(bare), NULL);
    int64_t before = ol_time_now_ms();
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(strlen(ev.env.id), 36);
    cr_expect_geq(ev.env.time_ms, before);
    cr_expect_leq(ev.env.time_ms, ol_time_now_ms());
    cr_expect(json_is_string(json_object_get(ev.data, "removed_at")));
    ol_event_clear(&ev);
    record_free(&r);
}

Test(event, refuses_a_headerless_record_that_is_not_a_publish_line) {
    static const char *const bad[] = {
        "not json",
        "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"\"}}",
        "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\",\"typo\":1}}",
        "",
    };
    static const char *const want[] = {"malformed JSON", "must not be empty", "unknown field", "malformed JSON"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        record_t r = record_new(bad[i], strlen(bad[i]), NULL);
        ol_event_t ev;
        char errstr[256] = "";
        cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID, "case %zu", i);
        cr_expect(strstr(errstr, want[i]), "case %zu: %s", i, errstr);
        cr_expect_null(ev.data);
        record_free(&r);
    }
}

/* A record with the envelope of buy_line, one header replaced or removed
 * (value NULL), and the given payload. */
static record_t record_with(const void *payload, size_t len, const char *content_type, const char *name,
                            const char *value) {
    ol_envelope_t env = sample_envelope();
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&env, hdrs);
    if (content_type) {
        rd_kafka_header_remove(hdrs, "content-type");
        rd_kafka_header_add(hdrs, "content-type", -1, content_type, -1);
    }
    if (name) {
        rd_kafka_header_remove(hdrs, name);
        if (value)
            rd_kafka_header_add(hdrs, name, -1, value, -1);
    }
    record_t r = record_new(payload, len, "SKU-1");
    record_set_headers(&r, hdrs);
    return r;
}

static const char *const buy_json =
    "{\"request_id\":\"req-1\",\"session_id\":\"s\",\"client_ip\":\"1.2.3.4\",\"user_id\":\"u-1\",\"user_level\":2,"
    "\"sku\":\"SKU-1\",\"quantity\":2,\"requested_at\":\"2026-11-11T00:00:00Z\"}";

Test(event, reads_a_json_payload_named_by_content_type) {
    record_t r = record_with(buy_json, strlen(buy_json), "application/json; charset=utf-8", NULL, NULL);
    ol_event_t ev;
    char errstr[256] = "";
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ev.env.content, OL_CONTENT_JSON);
    cr_expect_str_eq(ev.env.id, "3f0c6a2e-7b1d-4c55-9a0e-2b7f1c9d8e41");
    cr_expect_eq(ev.env.time_ms, 1795000000123LL);
    cr_expect_str_eq(ev.key, "SKU-1");
    expect_buy_data(ev.data);
    ol_event_clear(&ev);
    record_free(&r);

    /* and checks it like any input */
    const char *bad = "{\"request_id\":\"req-1\",\"quantity\":0}";
    r = record_with(bad, strlen(bad), "application/json", NULL, NULL);
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect_null(ev.data);
    record_free(&r);
    r = record_with("{", 1, "application/json", NULL, NULL);
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "malformed JSON"), "%s", errstr);
    record_free(&r);
}

Test(event, reads_an_older_schema_version_named_by_ce_dataschema) {
    char *path = olt_path("ORDERLOG_SOURCE_DIR", "schemas/history/BuyRequested.v1.avsc");
    size_t tlen;
    char *text = olt_read_file(path, &tlen);
    cr_assert(text, "cannot read %s", path);
    avro_schema_t schema;
    cr_assert_eq(avro_schema_from_json_length(text, tlen, &schema), 0, "%s", avro_strerror());
    avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
    unsigned char buf[256];
    size_t len = olt_avro_write(iface,
                                "{\"request_id\":\"req-1\",\"session_id\":\"s\",\"client_ip\":\"1.2.3.4\",\"user_id\":"
                                "\"u-1\",\"user_level\":2,\"sku\":\"SKU-1\",\"quantity\":2,\"requested_at\":"
                                "1794355200000}",
                                buf, sizeof(buf));
    avro_value_iface_decref(iface);
    avro_schema_decref(schema);
    free(text);
    free(path);

    record_t r = record_with(buf, len, NULL, "ce_dataschema", "urn:orderlog:schema:BuyRequested:1");
    ol_event_t ev;
    char errstr[256] = "";
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ev.env.version, 1, "the envelope keeps the payload's version");
    expect_buy_data(ev.data);
    ol_event_clear(&ev);
    record_free(&r);

    /* a version this binary cannot read */
    r = record_with(buf, len, NULL, "ce_dataschema", "urn:orderlog:schema:BuyRequested:99");
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_UNSUPPORTED, "%s", errstr);
    cr_expect_null(ev.data);
    record_free(&r);
}

Test(event, refuses_a_broken_envelope) {
    /* a valid v2 payload, so only the envelope is at fault */
    record_t good = publish_record(buy_line);
    static const struct {
        const char *name, *value, *want;
        ol_err_t err;
    } cases[] = {
        {"ce_type", "orderlog.NoSuchEvent", "unknown ce_type \"orderlog.NoSuchEvent\"", OL_ERR_INVALID},
        {"ce_id", NULL, "missing ce_id", OL_ERR_INVALID},
        {"ce_id", "", "missing ce_id", OL_ERR_INVALID},
        {"ce_time", "yesterday", "ce_time", OL_ERR_INVALID},
        {"ce_dataschema", "urn:orderlog:schema:SkuRemoved:1", "ce_dataschema", OL_ERR_INVALID},
        {"ce_dataschema", "urn:orderlog:schema:BuyRequested:x", "ce_dataschema", OL_ERR_INVALID},
        {"ce_dataschema", "urn:orderlog:schema:BuyRequested:", "ce_dataschema", OL_ERR_INVALID},
        {"ce_dataschema", "urn:orderlog:schema:BuyRequested:0", "ce_dataschema", OL_ERR_INVALID},
        {"ce_dataschema", "urn:orderlog:schema:BuyRequested:2x", "ce_dataschema", OL_ERR_INVALID},
        {"ce_dataschema", "urn:orderlog:schema:BuyRequestedX:2", "ce_dataschema", OL_ERR_INVALID},
        {"ce_dataschema", "urn:other:BuyRequested:2", "ce_dataschema", OL_ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        record_t r = record_with(good.payload, good.rkm->len, NULL, cases[i].name, cases[i].value);
        ol_event_t ev;
        char errstr[256] = "";
        cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), cases[i].err,
                     "case %zu (%s=%s): %s", i, cases[i].name, cases[i].value ? cases[i].value : "(none)", errstr);
        cr_expect(strstr(errstr, cases[i].want), "case %zu: \"%s\" does not contain \"%s\"", i, errstr, cases[i].want);
        cr_expect_null(ev.data);
        record_free(&r);
    }
    /* the unmodified envelope is fine, so the cases above test what they say */
    record_t r = record_with(good.payload, good.rkm->len, NULL, NULL, NULL);
    ol_event_t ev;
    char errstr[256] = "";
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    ol_event_clear(&ev);
    record_free(&r);

    /* a payload that is not the named schema's Avro */
    r = record_with("\x02garbage", 8, NULL, NULL, NULL);
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect_null(ev.data);
    record_free(&r);
    r = record_with(buy_json, strlen(buy_json), NULL, NULL, NULL); /* JSON without saying so */
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID);
    record_free(&r);
    record_free(&good);
}

/* buy_line's envelope with header name set to value[0..len) (NUL allowed). */
static record_t record_with_bytes(const void *payload, size_t len, const char *name, const char *value,
                                  size_t value_len) {
    record_t r = record_with(payload, len, NULL, name, NULL);
    rd_kafka_header_add(r.hdrs, name, -1, value, (ssize_t)value_len);
    return r;
}

Test(event, reads_ce_dataschema_strictly) {
    record_t good = publish_record(buy_line);
    static const char *const bad[] = {
        "urn:orderlog:schema:BuyRequested:-4294967295", /* strtol read it as 1 */
        "urn:orderlog:schema:BuyRequested:4294967298",  /* and this as 2 */
        "urn:orderlog:schema:BuyRequested:2147483648",
        "urn:orderlog:schema:BuyRequested:99999999999999999999",
        "urn:orderlog:schema:BuyRequested:+2",
        "urn:orderlog:schema:BuyRequested:-2",
        "urn:orderlog:schema:BuyRequested:02",
        "urn:orderlog:schema:BuyRequested: 2",
        "urn:orderlog:schema:BuyRequested:2 ",
        "urn:orderlog:schema:BuyRequested:2:2",
        "urn:orderlog:schema:BuyRequested2",
        "urn:orderlog:schema::2",
        "URN:orderlog:schema:BuyRequested:2",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        record_t r = record_with(good.payload, good.rkm->len, NULL, "ce_dataschema", bad[i]);
        ol_event_t ev;
        char errstr[256] = "", want[128];
        snprintf(want, sizeof(want), "ce_dataschema header \"%s\" does not match", bad[i]);
        cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID, "%s: %s", bad[i],
                     errstr);
        cr_expect(strstr(errstr, want), "\"%s\" does not contain \"%s\"", errstr, want);
        cr_expect_null(ev.data);
        record_free(&r);
    }
    /* a value longer than the buffer is refused, not cut to another version */
    char lng[800];
    snprintf(lng, sizeof(lng), "urn:orderlog:schema:BuyRequested:2%0700d", 0);
    record_t r = record_with(good.payload, good.rkm->len, NULL, "ce_dataschema", lng);
    ol_event_t ev;
    char errstr[256] = "";
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID, "%s", errstr);
    cr_expect(strstr(errstr, "header \"ce_dataschema\": longer than"), "%s", errstr);
    record_free(&r);
    /* the largest version is read as a number, and unknown */
    r = record_with(good.payload, good.rkm->len, NULL, "ce_dataschema", "urn:orderlog:schema:BuyRequested:2147483647");
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_UNSUPPORTED, "%s", errstr);
    cr_expect(strstr(errstr, "version 2147483647 is unknown"), "%s", errstr);
    record_free(&r);
    r = record_with(good.payload, good.rkm->len, NULL, "ce_dataschema", "urn:orderlog:schema:BuyRequested:2");
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    ol_event_clear(&ev);
    record_free(&r);
    record_free(&good);
}

Test(event, refuses_headers_holding_nul_invalid_utf8_or_cut) {
    record_t good = publish_record(buy_line);
    static const char long_id[] = "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii",
                      type_nul[] = "orderlog.BuyRequested\0junk", id_nul[] = "ev-1\0x", bad_utf8[] = "ev-\xff",
                      subject_nul[] = "req-1\0x";
    const struct {
        const char *name, *value;
        size_t len;
        const char *want;
    } cases[] = {
        {"ce_type", type_nul, sizeof(type_nul) - 1, "header \"ce_type\": must not contain NUL (\\u0000)"},
        {"ce_id", id_nul, sizeof(id_nul) - 1, "header \"ce_id\": must not contain NUL (\\u0000)"},
        {"ce_subject", subject_nul, sizeof(subject_nul) - 1, "header \"ce_subject\": must not contain NUL"},
        {"ce_id", bad_utf8, sizeof(bad_utf8) - 1, "header \"ce_id\": invalid UTF-8 at byte 4"},
        {"ce_id", long_id, sizeof(long_id) - 1, "header \"ce_id\": longer than 64 bytes"},
        {"ce_time", "0000-12-31T23:59:59Z", 20, "ce_time header \"0000-12-31T23:59:59Z\" is outside the years"},
        {"ce_time", "9999-12-31T23:59:59-01:00", 25, "is outside the years 0001 to 9999"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        record_t r = record_with_bytes(good.payload, good.rkm->len, cases[i].name, cases[i].value, cases[i].len);
        ol_event_t ev;
        char errstr[256] = "";
        cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID, "case %zu: %s",
                     i, errstr);
        cr_expect(strstr(errstr, cases[i].want), "case %zu: \"%s\" does not contain \"%s\"", i, errstr, cases[i].want);
        cr_expect_null(ev.data);
        record_free(&r);
    }
    record_free(&good);
}

/* ---- a schema registry that answers GET /schemas/ids/<id> --------------- */

static fake_t registry;
static char *registry_body[64];                  /* by id: the JSON answer, NULL = 404 */
static atomic_int registry_gets, registry_posts; /* the requests it answered */

/* Answers GET /schemas/ids/<id> from registry_body, and a writer's lookup
 * (POST /subjects/<subject>) with the id 100 + the lookups before it. */
static char *registry_route(const char *req, size_t len, size_t *answer_len) {
    (void)len;
    unsigned id = 0;
    const char *body = NULL;
    char posted[64];
    const char *at = strstr(req, "/schemas/ids/");
    if (!strncmp(req, "POST ", 5)) {
        snprintf(posted, sizeof(posted), "{\"id\":%d,\"version\":1}", 100 + atomic_fetch_add(&registry_posts, 1));
        body = posted;
    } else if (at && sscanf(at, "/schemas/ids/%u", &id) == 1 && id < 64) {
        atomic_fetch_add(&registry_gets, 1);
        body = registry_body[id];
    }
    const char *nf = "{\"error_code\":40403,\"message\":\"Schema not found\"}";
    size_t cap = strlen(body ? body : nf) + 256;
    char *out = ol_xmalloc(cap);
    int n = snprintf(out, cap,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: "
                     "close\r\n\r\n%s",
                     body ? "200 OK" : "404 Not Found", strlen(body ? body : nf), body ? body : nf);
    *answer_len = (size_t)n;
    return out;
}

static char registry_url[64];

/* Starts the fake registry; registry.url set to it, event.format to format. */
static void registry_start_as(const char *format) {
    atomic_store(&registry_gets, 0);
    atomic_store(&registry_posts, 0);
    fake_start_routed(&registry, registry_route);
    char errstr[256];
    snprintf(registry_url, sizeof(registry_url), "http://127.0.0.1:%u/ccompat", registry.port);
    ol_conf_t *conf = ol_conf_new();
    cr_assert_eq(ol_conf_set(conf, "registry.url", registry_url, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(ol_conf_set(conf, "event.format", format, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    ol_wire_init(conf);
    ol_conf_destroy(conf);
}

static void registry_start(void) {
    registry_start_as("cloudevents");
}

static void registry_stop(void) {
    fake_stop(&registry);
    for (size_t i = 0; i < 64; i++) {
        free(registry_body[i]);
        registry_body[i] = NULL;
    }
    ol_wire_reset();
}

/* The registry's answer holding schema (and schemaType when type is set). */
static char *registry_answer(const char *schema, const char *type) {
    json_t *j = json_pack("{s:s}", "schema", schema);
    if (type)
        json_object_set_new(j, "schemaType", json_string(type));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static const char *embedded_text(const char *path) {
    for (const ol_embedded_t *e = ol_embedded_schemas; e->path; e++)
        if (!strcmp(e->path, path))
            return e->data;
    cr_assert_fail("%s is not compiled in", path);
    return NULL;
}

/* magic byte 0, schema id (big-endian), then payload */
static size_t frame_as(unsigned id, const void *payload, size_t len, unsigned char *out, size_t out_size) {
    cr_assert_leq(len + 5, out_size);
    unsigned char head[5] = {0, 0, 0, (unsigned char)(id >> 8), (unsigned char)id};
    memcpy(out, head, 5);
    memcpy(out + 5, payload, len);
    return len + 5;
}

Test(event, reads_the_confluent_wire_format_with_the_writers_schema_from_the_registry) {
    registry_start();
    const char *current = embedded_text("schemas/BuyRequested.avsc");
    registry_body[42] = registry_answer(current, NULL);
    registry_body[43] = registry_answer("syntax = \"proto3\"; message BuyRequested {}", "PROTOBUF");
    registry_body[44] = registry_answer("{\"type\":\"record\",\"name\":\"Other\",\"namespace\":\"com.example\","
                                        "\"fields\":[{\"name\":\"a\",\"type\":\"string\"}]}",
                                        NULL);
    /* another team's writer: orderlog's fields and one more of its own */
    json_t *w = json_loads(current, 0, NULL);
    json_array_append_new(json_object_get(w, "fields"), json_pack("{s:s, s:s}", "name", "note", "type", "string"));
    char *wtext = json_dumps(w, JSON_COMPACT);
    registry_body[45] = registry_answer(wtext, NULL);
    free(wtext);
    json_decref(w);
    /* a writer lacking a field orderlog requires (no default) */
    w = json_loads(current, 0, NULL);
    json_array_remove(json_object_get(w, "fields"), 0);
    wtext = json_dumps(w, JSON_COMPACT);
    registry_body[46] = registry_answer(wtext, NULL);
    free(wtext);
    json_decref(w);

    record_t good = publish_record(buy_line);
    unsigned char framed[1024];
    ol_event_t ev;
    char errstr[512] = "";
    /* as Confluent's serializers write it: no CloudEvents headers */
    size_t len = frame_as(42, good.payload, good.rkm->len, framed, sizeof(framed));
    record_t r = record_new(framed, len, "SKU-1");
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ev.env.type, ol_schema_find("BuyRequested"));
    cr_expect_eq(ev.env.schema_id, 42);
    cr_expect_str_eq(ev.env.source, "unknown");
    json_t *want = buy_data();
    cr_expect(json_equal(ev.data, want), "%s", json_dumps(ev.data, JSON_COMPACT));
    json_decref(want);
    char first_id[OL_EVENT_ID_MAX + 1];
    snprintf(first_id, sizeof(first_id), "%s", ev.env.id);
    ol_event_clear(&ev);
    /* read again: the same id (a replay applies it once) */
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_str_eq(ev.env.id, first_id);
    ol_event_clear(&ev);
    record_free(&r);
    /* with orderlog's headers too */
    r = record_with(framed, len, NULL, NULL, NULL);
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    ol_event_clear(&ev);
    record_free(&r);
    /* a writer's schema with a field orderlog does not know: resolved */
    unsigned char extra[1024];
    memcpy(extra, good.payload, good.rkm->len);
    memcpy(extra + good.rkm->len, "\x04hi", 3);
    len = frame_as(45, extra, good.rkm->len + 3, framed, sizeof(framed));
    r = record_new(framed, len, "SKU-1");
    cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_null(json_object_get(ev.data, "note"));
    cr_expect_eq(json_integer_value(json_object_get(ev.data, "quantity")), 2);
    ol_event_clear(&ev);
    record_free(&r);

    /* what cannot be read says what it is */
    static const struct {
        unsigned id;
        const char *want;
    } bad[] = {
        {41, "Confluent wire format, schema id 41: the schema registry at http://127.0.0.1:"},
        {43, "Confluent wire format, schema id 43: a PROTOBUF schema, not Avro"},
        {44, "Confluent wire format, schema id 44: record com.example.Other is not one of orderlog's events"},
        {46, "Confluent wire format, schema id 46: record orderlog.BuyRequested: field request_id of version"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        len = frame_as(bad[i].id, good.payload, good.rkm->len, framed, sizeof(framed));
        r = record_new(framed, len, "SKU-1");
        cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID, "%s", errstr);
        cr_expect(!strncmp(errstr, bad[i].want, strlen(bad[i].want)), "%s", errstr);
        record_free(&r);
    }
    /* JSON Schema serializer's frame around JSON, with orderlog's headers */
    registry_body[47] = registry_answer("{\"type\":\"object\"}", "JSON");
    len = frame_as(47, buy_json, strlen(buy_json), framed, sizeof(framed));
    r = record_with(framed, len, "application/json", NULL, NULL);
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect_str_eq(errstr, "Confluent wire format, schema id 47: a JSON schema, not Avro: orderlog reads Avro only");
    record_free(&r);
    /* the registry away: retriable, the record is not at fault */
    registry_stop();
    ol_conf_t *conf = ol_conf_new();
    cr_assert_eq(ol_conf_set(conf, "registry.url", "http://127.0.0.1:1", errstr, sizeof(errstr)), OL_ERR_OK);
    ol_wire_init(conf);
    ol_conf_destroy(conf);
    len = frame_as(42, good.payload, good.rkm->len, framed, sizeof(framed));
    r = record_new(framed, len, "SKU-1");
    ol_err_t err = ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr));
    cr_expect(ol_err_is_retriable(err), "%s: %s", ol_err2name(err), errstr);
    cr_expect(!strncmp(errstr, "Confluent wire format, schema id 42: ", 37), "%s", errstr);
    record_free(&r);
    ol_wire_reset();
    record_free(&good);
}

/* The registry is asked once per schema id, not per record: N framed
 * records of two ids cost two requests. A copy of one of orderlog's schemas
 * (even written differently) is that version, read as plain Avro is, not
 * resolved record by record as another team's schema is. */
Test(event, asks_the_registry_once_per_schema_id_whatever_the_records) {
    registry_start();
    const char *current = embedded_text("schemas/BuyRequested.avsc");
    registry_body[42] = registry_answer(current, NULL);
    json_t *w = json_loads(current, 0, NULL);
    char *compact = json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(w);
    registry_body[48] = registry_answer(compact, NULL);
    free(compact);
    const ol_event_type_t *et = find_type("BuyRequested");
    record_t good = publish_record(buy_line);
    unsigned char framed[1024];
    char errstr[512] = "";
    enum { N = 2000 };
    for (int i = 0; i < N; i++) {
        size_t len = frame_as(i % 2 ? 48 : 42, good.payload, good.rkm->len, framed, sizeof(framed));
        record_t r = record_new(framed, len, "SKU-1");
        ol_event_t ev;
        cr_assert_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
        cr_assert_eq(ev.env.version, et->version);
        if (i < 2)
            expect_buy_data(ev.data);
        ol_event_clear(&ev);
        record_free(&r);
    }
    cr_expect_eq(atomic_load(&registry_gets), 2, "%d requests for %d records of 2 ids", atomic_load(&registry_gets), N);
    const ol_event_type_t *got;
    const ol_schema_version_t *sv;
    for (unsigned id = 42; id <= 48; id += 6) {
        cr_assert_eq(ol_wire_writer(id, &got, &sv, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
        cr_expect_eq(got, et);
        cr_expect_eq(sv->version, et->version, "id %u: a resolving writer schema, not orderlog's version", id);
    }
    cr_expect_eq(atomic_load(&registry_gets), 2);
    record_free(&good);
    registry_stop();
}

/* A writer with event.format=confluent asks the registry at start (one
 * lookup per event type), then never: N events framed with the ids it got,
 * ce_dataschema naming the id, made once and not per record. */
Test(event, a_framed_writer_asks_the_registry_at_start_only) {
    registry_start_as("confluent");
    char errstr[512] = "";
    cr_assert_not(ol_wire_writing());
    cr_assert_eq(ol_wire_prepare(errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert(ol_wire_writing());
    size_t ntypes;
    ol_schema_types(&ntypes);
    cr_assert_eq(atomic_load(&registry_posts), (int)ntypes);
    const ol_event_type_t *et = find_type("BuyRequested");
    uint32_t id = ol_wire_id(et);
    cr_assert_geq(id, 100);
    char want_ds[128], buf[600], other[600];
    snprintf(want_ds, sizeof(want_ds), "%s/schemas/ids/%u", registry_url, (unsigned)id);
    const char *ds = ol_wire_dataschema(et, id, buf, sizeof(buf));
    cr_expect_str_eq(ds, want_ds);
    cr_expect_neq(ds, buf, "formatted per call, not made once");
    cr_expect_eq(ol_wire_dataschema(et, id, other, sizeof(other)), ds);
    /* an id that is not the one written: formatted into the buffer */
    cr_expect_eq(ol_wire_dataschema(et, id + 1000, buf, sizeof(buf)), buf);

    ol_arena_reset(arena);
    ol_event_t in;
    cr_assert_eq(ol_event_from_line(arena, buy_line, strlen(buy_line), NOW_MS, &in, errstr, sizeof(errstr)), OL_ERR_OK,
                 "%s", errstr);
    enum { N = 2000 };
    for (int i = 0; i < N; i++) {
        ol_event_out_t out;
        cr_assert_eq(ol_event_encode(codec, et, in.input, NOW_MS, "orderlog/test", &out, errstr, sizeof(errstr)),
                     OL_ERR_OK, "%s", errstr);
        uint32_t got;
        cr_assert(ol_wire_framed(out.payload, out.len, &got));
        cr_assert_eq(got, id);
        if (i == 0)
            cr_expect_str_eq(header(out.hdrs, "ce_dataschema", buf, sizeof(buf)), want_ds);
        rd_kafka_headers_destroy(out.hdrs);
    }
    cr_expect_eq(atomic_load(&registry_posts), (int)ntypes, "%d requests after %d events", atomic_load(&registry_posts),
                 N);
    cr_expect_eq(atomic_load(&registry_gets), 0);
    registry_stop();
}

Test(event, plain_avro_starting_with_a_zero_byte_stays_plain) {
    ol_event_t ev;
    char errstr[512] = "";
    record_t r;
    /* plain Avro that starts with a 0 byte (enum symbol 0) is still plain Avro */
    const char *line = "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"1.2.3.4\","
                       "\"action\":\"add\",\"reason\":\"rate\"}}";
    r = publish_record(line);
    cr_assert_eq(((unsigned char *)r.payload)[0], 0);
    cr_expect_eq(ol_event_from_message(codec, r.rkm, &ev, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    ol_event_clear(&ev);
    record_free(&r);
}

/* The record key must be the event's own: its key template rendered from
 * the payload (a string field, or an enum symbol and a string). */
static ol_err_t check_key(const char *line, const char *key, char *errstr, size_t errstr_size) {
    record_t r = record_new(line, strlen(line), key);
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(arena);
    ol_err_t err = ol_event_decode(codec, r.rkm, arena, &env, &value, errstr, errstr_size);
    cr_assert_eq(err, OL_ERR_OK, "%s", errstr);
    err = ol_event_check_key(r.rkm, &env, value, errstr, errstr_size);
    record_free(&r);
    return err;
}

Test(event, refuses_a_record_keyed_by_another_aggregate) {
    char errstr[512];
    const char *paid = "{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"O-1\",\"payment_id\":\"p\",\"amount\":1,"
                       "\"currency\":\"CNY\",\"paid_at\":0}}";
    cr_expect_eq(check_key(paid, "O-1", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(check_key(paid, "O-2", errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "record key \"O-2\" is not the key of its OrderPaid (\"O-1\", from {order_id})"), "%s",
              errstr);
    cr_expect_eq(check_key(paid, "O-1x", errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect_eq(check_key(paid, "O-", errstr, sizeof(errstr)), OL_ERR_INVALID);
    const char *ban = "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"ip\",\"subject\":\"10.0.0.1\","
                      "\"action\":\"add\",\"reason\":\"manual\",\"until\":null,\"changed_at\":0}}";
    cr_expect_eq(check_key(ban, "ip:10.0.0.1", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(check_key(ban, "user:10.0.0.1", errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "(\"ip:10.0.0.1\""), "%s", errstr);
}
