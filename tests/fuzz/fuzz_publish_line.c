/* Fuzz target publish_line: input lines of `orderlog publish`, each taken as
 * publish takes it (producers/publish.c, prepare_item): trimmed,
 * ol_event_from_line, ol_codec_encode, the envelope's headers with the
 * record key rendered from the data.
 *
 * Properties:
 *  - the reason publish gives for a line it rejects is UTF-8 text;
 * and for every line publish accepts:
 *  - the record decodes on the consumers' path (ol_event_decode, as project
 *    and decide read it) into the same envelope (type, id, time, source,
 *    subject, version) and into exactly the data the line gave (defaults and
 *    the event time filled in, times read as epoch ms);
 *  - ol_event_check_key takes the record key publish rendered;
 *  - the decoded data encodes again to the very same bytes;
 *  - the line written raw, without headers (what kcat or a script would
 *    produce), decodes to the same type and data too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/util.h"
#include "fuzz.h"

#define SOURCE "orderlog/publish"

FUZZ_TWO_CODEC_HARNESS

static void check_headerless(const char *line, size_t len, const ol_event_t *ev) {
    char errstr[512];
    fuzz_record_t r = fuzz_record_new(line, len, ev->key, strlen(ev->key), NULL);
    ol_envelope_t env;
    avro_value_t *value;
    FUZZ_CHECK(!ol_event_decode(codec2, r.rkm, arena, &env, &value, errstr, sizeof(errstr)),
               "a line publish accepts does not decode when written raw: %s", errstr);
    FUZZ_CHECK(env.type == ev->env.type && env.content == OL_CONTENT_JSON, "written raw, %s decodes as %s",
               ev->env.type->name, env.type->name);
    const char *where;
    FUZZ_CHECK(
        fuzz_same_as_input(env.type->root, ev->input, ol_codec_to_dom(env.type, value, arena), env.time_ms, &where),
        "written raw, %s decodes to other data: field %s", env.type->name, where);
    fuzz_record_free(&r);
}

static void one_line(const char *line, size_t len) {
    char errstr[512];
    ol_event_t ev;
    const void *payload;
    size_t payload_len;
    ol_arena_reset(arena);
    if (ol_event_from_line(arena, line, len, FUZZ_NOW_MS, &ev, errstr, sizeof(errstr)) ||
        ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &payload, &payload_len, errstr, sizeof(errstr))) {
        /* rejected: publish reports the line, and a dead letter or a log line may carry the reason */
        FUZZ_CHECK(ol_utf8_invalid_at(errstr, strlen(errstr)) < 0, "the reason a line is rejected is not UTF-8: %s",
                   errstr);
        return;
    }
    snprintf(ev.env.source, sizeof(ev.env.source), "%s", SOURCE);
    ev.env.content = OL_CONTENT_AVRO;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&ev.env, hdrs);
    fuzz_record_t r = fuzz_record_new(payload, payload_len, ev.key, strlen(ev.key), hdrs);
    const ol_event_type_t *et = ev.env.type;

    ol_envelope_t env;
    avro_value_t *value;
    fuzz_decode_as(codec2, &r, arena, et, "publish's", &env, &value);
    FUZZ_CHECK(!strcmp(env.id, ev.env.id), "%s: id \"%s\" published, \"%s\" decoded", et->name, ev.env.id, env.id);
    FUZZ_CHECK(env.time_ms == ev.env.time_ms, "%s: time %lld published, %lld decoded", et->name,
               (long long)ev.env.time_ms, (long long)env.time_ms);
    FUZZ_CHECK(!strcmp(env.source, SOURCE), "%s: source \"%s\" decoded", et->name, env.source);
    FUZZ_CHECK(!strcmp(env.subject, ev.env.subject), "%s: subject \"%s\" published, \"%s\" decoded", et->name,
               ev.env.subject, env.subject);
    FUZZ_CHECK(!ol_event_check_key(r.rkm, &env, value, errstr, sizeof(errstr)), "%s: %s", et->name, errstr);
    ol_json_t *dom = ol_codec_to_dom(et, value, arena);
    const char *where;
    FUZZ_CHECK(fuzz_same_as_input(et->root, ev.input, dom, ev.env.time_ms, &where),
               "a %s decodes to other data than published: field %s", et->name, where);

    const void *again;
    size_t again_len;
    FUZZ_CHECK(!ol_codec_encode(codec2, et, dom, 0, &again, &again_len, errstr, sizeof(errstr)),
               "a decoded %s does not encode: %s", et->name, errstr);
    FUZZ_CHECK(again_len == payload_len && !memcmp(again, r.rkm->payload, payload_len),
               "a decoded %s encodes to other bytes (%zu, first %zu)", et->name, again_len, payload_len);
    fuzz_record_free(&r);

    check_headerless(line, len, &ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line = p, *stop = nl ? nl : end;
        p = nl ? nl + 1 : end;
        /* as publish_stream trims a line; blank lines are not events */
        while (stop > line && (stop[-1] == '\r' || stop[-1] == ' ' || stop[-1] == '\t'))
            stop--;
        while (line < stop && (*line == ' ' || *line == '\t'))
            line++;
        if (line == stop)
            continue;
        /* an exact copy, so ASan sees a read past the line */
        size_t len = (size_t)(stop - line);
        char *copy = ol_xmalloc(len);
        memcpy(copy, line, len);
        one_line(copy, len);
        free(copy);
    }
    return 0;
}
