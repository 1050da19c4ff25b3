/* Fuzz target avro_decode: a record from Kafka as the consumers decode it
 * (ol_event_decode: CloudEvents headers, then the Avro payload checked and,
 * when an older schema version wrote it, resolved to the current version).
 * The first byte picks the event type and the schema version the headers
 * name, among every type and every version this binary reads; the rest is
 * the payload.
 *
 * Properties: the reason a payload is refused is UTF-8 text; and for every
 * payload that decodes:
 *  - its data (ol_codec_to_dom) encodes, and those bytes decode (current
 *    version) to the same data, and to the same JSON form;
 *  - its JSON form (ol_codec_to_json: what tail and dlq show) is taken back
 *    by the JSON input path as the same data: encoded, the same bytes;
 *  - the key publish renders from the data (ol_codec_key) is the key the
 *    consumers check records against (ol_codec_key_matches on the value). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/util.h"
#include "fuzz.h"

FUZZ_TWO_CODEC_HARNESS

static char *dump(json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    return s ? s : ol_xstrdup("(not printable)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    fuzz_pick_t pk = fuzz_pick(data[0]), *pick = &pk;
    const ol_event_type_t *et = pick->et;
    char errstr[512];
    ol_arena_reset(arena);

    ol_envelope_t env = {.type = et, .time_ms = FUZZ_NOW_MS, .content = OL_CONTENT_AVRO, .version = pick->version};
    snprintf(env.id, sizeof(env.id), "fuzz-1");
    snprintf(env.source, sizeof(env.source), "fuzz");
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&env, hdrs);
    fuzz_record_t r = fuzz_record_new(data + 1, size - 1, NULL, 0, hdrs);
    ol_envelope_t got;
    avro_value_t *value;
    if (ol_event_decode(codec, r.rkm, arena, &got, &value, errstr, sizeof(errstr))) {
        /* the reason goes into the dead letter's headers and the log */
        FUZZ_CHECK(ol_utf8_invalid_at(errstr, strlen(errstr)) < 0, "the reason a record is refused is not UTF-8: %s",
                   errstr);
        fuzz_record_free(&r);
        return 0;
    }
    FUZZ_CHECK(got.type == et && got.version == pick->version && got.time_ms == FUZZ_NOW_MS,
               "%s version %d decodes as %s version %d", et->name, pick->version, got.type->name, got.version);
    const ol_json_t *dom = ol_codec_to_dom(et, value, arena);
    json_t *json = ol_codec_to_json(et, value);

    /* encoded again, then decoded: the same */
    const void *bin;
    size_t len;
    FUZZ_CHECK(!ol_codec_encode(codec2, et, dom, 0, &bin, &len, errstr, sizeof(errstr)),
               "a decoded %s version %d does not encode: %s", et->name, pick->version, errstr);
    char *copy = ol_xmalloc(len ? len : 1);
    memcpy(copy, bin, len);
    avro_value_t *value2;
    FUZZ_CHECK(!ol_codec_decode(codec2, et, et->version, copy, len, &value2, errstr, sizeof(errstr)),
               "a decoded %s version %d, encoded again, does not decode: %s", et->name, pick->version, errstr);
    const char *where;
    FUZZ_CHECK(fuzz_dom_equal(dom, ol_codec_to_dom(et, value2, arena), &where),
               "a decoded %s version %d, encoded and decoded again, differs: field %s", et->name, pick->version, where);
    json_t *json2 = ol_codec_to_json(et, value2);
    if (!json_equal(json, json2)) {
        char *a = dump(json), *b = dump(json2);
        fuzz_fail("a decoded %s version %d, encoded and decoded again, has another JSON form:\n  %s\n  %s", et->name,
                  pick->version, a, b);
    }
    json_decref(json2);

    /* the JSON form, read as publish reads data: the same bytes */
    char *text = dump(json);
    ol_json_t *parsed;
    FUZZ_CHECK(!ol_json_parse(arena, text, strlen(text), &parsed, NULL, errstr, sizeof(errstr)),
               "the JSON form of a %s is not JSON (%s): %s", et->name, errstr, text);
    const void *bin2;
    size_t len2;
    FUZZ_CHECK(!ol_codec_encode(codec2, et, parsed, 0, &bin2, &len2, errstr, sizeof(errstr)),
               "the JSON form of a %s does not encode (%s): %s", et->name, errstr, text);
    FUZZ_CHECK(len2 == len && !memcmp(bin2, copy, len), "the JSON form of a %s encodes to other bytes: %s", et->name,
               text);

    /* the key publish would write is the key consumers expect */
    char key[OL_EVENT_KEY_MAX + 1], want[256];
    if (!ol_codec_key(et, dom, key, sizeof(key), errstr, sizeof(errstr)))
        FUZZ_CHECK(ol_codec_key_matches(et, value, key, strlen(key), want, sizeof(want)),
                   "%s: key \"%s\" rendered from the data, \"%s\" from the value", et->name, key, want);

    free(text);
    free(copy);
    json_decref(json);
    fuzz_record_free(&r);
    return 0;
}
