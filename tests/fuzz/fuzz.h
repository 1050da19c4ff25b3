/* What the libFuzzer harnesses of tests/fuzz share: a Kafka record as a
 * consumer sees it, the comparisons their properties make, and the abort
 * that turns a broken property into a crash libFuzzer saves.
 *
 * Each fuzz_*.c is its own executable (LLVMFuzzerTestOneInput); this file
 * is compiled into each. Not thread-safe: libFuzzer runs one input at a time. */
#ifndef OL_FUZZ_H
#define OL_FUZZ_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/json.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/domain/schema.h"

/* The event time the harnesses give every event they make. */
#define FUZZ_NOW_MS 1795000000000LL

/* Prints "property failed: <what>" and aborts: libFuzzer saves the input
 * as crash-<sha1> and prints its path. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define FUZZ_CHECK(cond, ...)       \
    do {                            \
        if (!(cond))                \
            fuzz_fail(__VA_ARGS__); \
    } while (0)

/* What the codec harnesses start with (in LLVMFuzzerInitialize): the
 * schemas loaded, a new codec in *codec and, when codec2 is not NULL, a
 * second one (a consumer's own: never sharing a buffer with the producer's)
 * in *codec2, a new arena in *arena; all freed at exit, before the leak
 * check. Aborts when the schemas do not load. */
void fuzz_init(ol_codec_t **codec, ol_codec_t **codec2, ol_arena_t **arena);

/* Defines the statics codec, codec2 and arena of a harness that encodes
 * with one codec and decodes with the other, and its LLVMFuzzerInitialize
 * (fuzz_init). */
#define FUZZ_TWO_CODEC_HARNESS                          \
    static ol_codec_t *codec, *codec2;                  \
    static ol_arena_t *arena;                           \
    int LLVMFuzzerInitialize(int *argc, char ***argv) { \
        (void)argc;                                     \
        (void)argv;                                     \
        fuzz_init(&codec, &codec2, &arena);             \
        return 0;                                       \
    }

/* A record as a consumer reads it: librdkafka 2.0.2 makes rd_kafka_message_t
 * the first member of its private rd_kafka_msg_t, and the accessors the
 * decoders use (rd_kafka_message_headers, _set_headers, _timestamp) read only
 * that struct, so a zeroed block much larger than it stands in (timestamp 0,
 * no protocol headers). payload and key are copied (exact sizes, so ASan sees
 * a read past them); hdrs (may be NULL) are taken. */
typedef struct fuzz_record_s {
    rd_kafka_message_t *rkm;
    rd_kafka_headers_t *hdrs;
} fuzz_record_t;

fuzz_record_t fuzz_record_new(const void *payload, size_t len, const void *key, size_t key_len,
                              rd_kafka_headers_t *hdrs);
void fuzz_record_free(fuzz_record_t *r);

/* Decodes r as the consumers do (ol_event_decode with codec, into arena)
 * into *env and *value; the property fails unless it decodes, as Avro of
 * et's current version. who names the producer in the message ("the
 * gate's"). */
void fuzz_decode_as(ol_codec_t *codec, const fuzz_record_t *r, ol_arena_t *arena, const ol_event_type_t *et,
                    const char *who, ol_envelope_t *env, avro_value_t **value);

/* avro_decode's first byte: the event type and the schema version its
 * headers name, among every type (sorted by name) and every version each
 * reads (history order). fuzz_pick_byte is the byte picking (et, version). */
typedef struct fuzz_pick_s {
    const ol_event_type_t *et;
    int version;
} fuzz_pick_t;

fuzz_pick_t fuzz_pick(uint8_t byte);
int fuzz_pick_byte(const ol_event_type_t *et, int version);

/* Whether two values of the codec's form are the same: type, length, every
 * byte of strings and keys, the bits of reals, members in order. On false,
 * *where names the first difference (static buffer). */
bool fuzz_dom_equal(const ol_json_t *a, const ol_json_t *b, const char **where);

/* Whether out (the codec's form of a decoded record, ol_codec_to_dom) is
 * what in (JSON input, as ol_codec_encode takes it) says for node n: times
 * given as RFC 3339 read as epoch ms, integers given for doubles as doubles,
 * absent fields as their default or, for orderlog.defaultNow, time_ms. On
 * false, *where names the first difference (static buffer). */
bool fuzz_same_as_input(const ol_node_t *n, const ol_json_t *in, const ol_json_t *out, int64_t time_ms,
                        const char **where);

#endif
