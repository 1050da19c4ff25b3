/* What the fuzzers of tests/fuzz found, each kept as the input that showed
 * it (ops/fuzz; tests/fuzz/README.md).
 *
 * Error messages end up in JSON: the gate's 400 answers, the log lines, the
 * reason headers of dead letters. JSON is UTF-8, so a message must never
 * hold part of a character, however it quotes or cuts the input. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/json.h"
#include "common/base/util.h"
#include "testutil.h"

#define NOW_MS 1795000000000LL

OLT_CODEC_FIXTURE

TestSuite(fuzz_found, .init = setup, .fini = teardown);

static void expect_utf8(const char *s, const char *what) {
    long bad = ol_utf8_invalid_at(s, strlen(s));
    cr_expect_eq(bad, -1, "%s is not UTF-8 (byte %ld): %s", what, bad + 1, s);
}

/* gate_body, crash-d209a767: a backslash then a two-byte character. The
 * message quoted the byte after the backslash alone. */
Test(fuzz_found, an_invalid_escape_of_a_non_ascii_character_is_named_in_utf8) {
    static const char body[] = "\"00\\\xd5\x86\xc3\xa9\"\"{u00>{";
    ol_json_t *v;
    const char *field;
    char errstr[256] = "";
    cr_assert_eq(ol_json_parse(arena, body, sizeof(body) - 1, &v, &field, errstr, sizeof(errstr)), OL_ERR_INVALID);
    expect_utf8(errstr, "the message");
    cr_expect(strstr(errstr, "invalid escape \\?"), "%s", errstr);
}

/* gate_body, crash-57ff51b5: a key holding \u0000, 64 bytes of it shown in
 * the path, the 64th byte inside a four-byte character. */
Test(fuzz_found, the_path_to_a_nul_cuts_a_long_key_between_characters) {
    static const char body[] =
        "{\"1se\\u000e\\u0000eYYYYYYYYYYYYYY*YY1e+YYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYYY\\\"\xf0\x9f"
        "\x98\x80\"u\xd0\xcf\xcf\xcc"
        "0e\\u00001e+\"\xd1\"";
    ol_json_t *v;
    const char *field = NULL;
    char errstr[256] = "";
    cr_assert_eq(ol_json_parse(arena, body, sizeof(body) - 1, &v, &field, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_assert(field, "the field holding NUL is named: %s", errstr);
    expect_utf8(field, "the field");
    expect_utf8(errstr, "the message");
    cr_expect(strstr(errstr, "must not contain NUL"), "%s", errstr);
    /* the cut falls before the character, never inside it */
    size_t n = strlen(field);
    cr_expect(n >= 2 && !strcmp(field + n - 2, "Y\""), "%s", field);
}

/* A NUL deep inside keys of 64 bytes: the path (255 bytes at most) is cut,
 * and so is the message holding it; both between characters. */
Test(fuzz_found, a_long_path_to_a_nul_is_cut_between_characters) {
    char body[4096];
    size_t n = 0;
    for (int depth = 0; depth < 8; depth++) {
        n += (size_t)snprintf(body + n, sizeof(body) - n, "{\"%.*s", depth % 3, "xx");
        for (int i = 0; i < 21; i++)
            n += (size_t)snprintf(body + n, sizeof(body) - n, "\xe9\x99\x90");
        n += (size_t)snprintf(body + n, sizeof(body) - n, "\":");
    }
    n += (size_t)snprintf(body + n, sizeof(body) - n, "\"\\u0000\"");
    for (int depth = 0; depth < 8; depth++)
        body[n++] = '}';
    ol_json_t *v;
    const char *field = NULL;
    for (size_t size = 64; size <= 320; size += 1) {
        char errstr[320] = "";
        ol_arena_reset(arena);
        cr_assert_eq(ol_json_parse(arena, body, n, &v, &field, errstr, size), OL_ERR_INVALID);
        cr_assert(field);
        expect_utf8(field, "the field");
        expect_utf8(errstr, "the message");
    }
}

/* tmpl with every @ replaced by value. */
static void subst(char *out, size_t size, const char *tmpl, const char *value) {
    size_t n = 0;
    for (const char *t = tmpl; *t && n + 1 < size; t++) {
        if (*t != '@') {
            out[n++] = *t;
            continue;
        }
        for (const char *v = value; *v && n + 1 < size; v++)
            out[n++] = *v;
    }
    out[n] = '\0';
}

/* What the publish path says of a line: every message quoting 64 bytes of
 * a string stops before a character it would split. */
Test(fuzz_found, messages_quoting_input_cut_it_between_characters) {
    /* 63 ASCII bytes, then characters of 2, 3 and 4 bytes */
    const char *s =
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9\xe9\x99\x90\xf0\x9f\x98\x80";
    static const char *const lines[] = {
        /* JSON: a duplicate key */
        "{\"type\":\"SkuRemoved\",\"data\":{\"@\":1,\"@\":2}}",
        /* the envelope: an unknown field, an unknown type */
        "{\"type\":\"SkuRemoved\",\"data\":{\"sku\":\"A\"},\"@\":1}",
        "{\"type\":\"@\",\"data\":{}}",
        /* the codec: an address, a currency, an enum symbol, a time */
        "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"r\",\"session_id\":\"s\",\"client_ip\":\"@\","
        "\"user_id\":\"u\",\"user_level\":0,\"sku\":\"A\",\"quantity\":1}}",
        "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"A\",\"platform\":\"shop\",\"title\":\"t\",\"price\":1,"
        "\"currency\":\"@\",\"stock\":1,\"version\":1}}",
        "{\"type\":\"BlacklistChanged\",\"data\":{\"subject_type\":\"@\",\"subject\":\"x\",\"action\":\"add\"}}",
        "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"r\",\"session_id\":\"s\",\"client_ip\":\"10.0.0.1\","
        "\"user_id\":\"u\",\"user_level\":0,\"sku\":\"A\",\"quantity\":1,\"requested_at\":\"@\"}}",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        for (size_t cut = 63; cut <= 72; cut++) { /* the quoted string ends on every byte of the characters */
            char value[128], line[1024], errstr[512] = "";
            snprintf(value, sizeof(value), "%.*s", (int)cut, s);
            if (ol_utf8_invalid_at(value, strlen(value)) >= 0)
                continue; /* only valid text is input */
            subst(line, sizeof(line), lines[i], value);
            ol_event_t ev;
            const void *bin;
            size_t len;
            ol_arena_reset(arena);
            ol_err_t err = ol_event_from_line(arena, line, strlen(line), NOW_MS, &ev, errstr, sizeof(errstr));
            if (!err)
                err = ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &bin, &len, errstr, sizeof(errstr));
            cr_expect_eq(err, OL_ERR_INVALID, "case %zu, %zu bytes: %s", i, cut, errstr);
            expect_utf8(errstr, "the message");
            cr_expect(strstr(errstr, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
                      "case %zu: the message quotes the input: %s", i, errstr);
        }
    }
}

/* publish_line's property "what publish accepts, consumers decode", shown by
 * tests/fuzz/corpus/publish_line/long-subject.json: a subject (ce_subject)
 * longer than its 255 bytes was cut inside a character, and every consumer
 * refused the record for the invalid UTF-8 in that header. A zeroed block
 * stands in for the consumed record (as in test_event.c). */
Test(fuzz_found, a_long_subject_is_cut_between_characters_and_the_record_decodes) {
    char line[1024], rid[300];
    for (size_t pad = 250; pad <= 256; pad++) { /* the cut lands on every byte of a 3-byte character */
        memset(rid, 'a', pad);
        memcpy(rid + pad, "\xe9\x99\x90", 4);
        snprintf(line, sizeof(line),
                 "{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"%s\",\"session_id\":\"s\",\"client_ip\":"
                 "\"10.0.0.1\",\"user_id\":\"u\",\"user_level\":0,\"sku\":\"A\",\"quantity\":1}}",
                 rid);
        ol_event_t ev;
        const void *bin;
        size_t len;
        char errstr[512] = "";
        ol_arena_reset(arena);
        cr_assert_eq(ol_event_from_line(arena, line, strlen(line), NOW_MS, &ev, errstr, sizeof(errstr)), OL_ERR_OK,
                     "%s", errstr);
        expect_utf8(ev.env.subject, "the subject");
        cr_expect(!strncmp(ev.env.subject, rid, strlen(ev.env.subject)) && strlen(ev.env.subject) >= 253,
                  "the subject is the request id, cut: %s", ev.env.subject);
        cr_assert_eq(ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &bin, &len, errstr, sizeof(errstr)),
                     OL_ERR_OK, "%s", errstr);
        rd_kafka_message_t *rkm = aligned_alloc(64, 4096);
        cr_assert(rkm);
        memset(rkm, 0, 4096);
        rkm->payload = (void *)bin;
        rkm->len = len;
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
        ol_envelope_to_headers(&ev.env, hdrs);
        rd_kafka_message_set_headers(rkm, hdrs);
        ol_envelope_t env;
        avro_value_t *value;
        ol_codec_t *reader = ol_codec_new();
        cr_expect_eq(ol_event_decode(reader, rkm, arena, &env, &value, errstr, sizeof(errstr)), OL_ERR_OK,
                     "%zu bytes of padding: %s", pad, errstr);
        cr_expect_str_eq(env.subject, ev.env.subject);
        ol_codec_destroy(reader);
        rd_kafka_headers_destroy(hdrs);
        free(rkm);
    }

    /* what a role makes itself (ol_event_encode, the gate and decide) */
    ol_json_member_t m[7];
    ol_json_member_str(&m[0], "request_id", rid);
    ol_json_member_str(&m[1], "session_id", "s");
    ol_json_member_str(&m[2], "client_ip", "10.0.0.1");
    ol_json_member_str(&m[3], "user_id", "u");
    ol_json_member_int(&m[4], "user_level", 0);
    ol_json_member_str(&m[5], "sku", "A");
    ol_json_member_int(&m[6], "quantity", 1);
    ol_json_t data = ol_json_object_of(m, 7);
    ol_event_out_t out;
    char errstr[512] = "";
    cr_assert_eq(ol_event_encode(codec, ol_schema_find("BuyRequested"), &data, NOW_MS, "orderlog/gate", &out, errstr,
                                 sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    const void *val;
    size_t size;
    cr_assert_eq(rd_kafka_header_get_last(out.hdrs, "ce_subject", &val, &size), RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_expect_eq(ol_utf8_invalid_at(val, size), -1, "ce_subject of %zu bytes is not UTF-8", size);
    rd_kafka_headers_destroy(out.hdrs);
}
