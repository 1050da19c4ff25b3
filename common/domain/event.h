#ifndef OL_EVENT_H
#define OL_EVENT_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/base/err.h"
#include "common/domain/schema.h"

/* An event as it travels: the CloudEvents envelope (Kafka binding, binary
 * mode: attributes in ce_* headers), the record key and the payload.
 *
 * Headers written: ce_specversion=1.0, ce_id, ce_type (orderlog.<Event>),
 * ce_source, ce_time (RFC 3339), ce_subject, content-type
 * (application/avro or application/json) and ce_dataschema
 * (urn:orderlog:schema:<Event>:<version>, the payload's schema version). */

#define OL_EVENT_ID_MAX 64
#define OL_EVENT_KEY_MAX 512

typedef enum ol_content_e { OL_CONTENT_AVRO, OL_CONTENT_JSON } ol_content_t;

typedef struct ol_envelope_s {
    const ol_event_type_t *type;
    char id[OL_EVENT_ID_MAX + 1];
    char source[128];
    char subject[256];
    int64_t time_ms;
    ol_content_t content;
    int version;        /* schema version of the payload */
    uint32_t schema_id; /* Confluent wire format: the payload's schema id in the registry; 0 = plain */
} ol_envelope_t;

typedef struct ol_event_s {
    ol_envelope_t env;
    char key[OL_EVENT_KEY_MAX + 1];
    const ol_json_t *input; /* ol_event_from_line: the data as read, in the caller's arena */
    json_t *data;           /* ol_event_from_message: decoded, owned; NULL after ol_event_clear */
} ol_event_t;

/* Parses one line of the publish format
 *   {"type":"<Event>","data":{...},"id":"<optional>","time":"<optional>"}
 * into ev: id generated and time = now_ms when absent, key and subject
 * rendered. The data is checked against the schema when it is encoded. */
ol_err_t ol_event_from_line(ol_arena_t *arena, const char *line, size_t len, int64_t now_ms, ol_event_t *ev,
                            char *errstr, size_t errstr_size);

/* Decodes a Kafka record: ce_* headers with an Avro or JSON payload, or a
 * record without headers whose value is a publish-format line (what kcat or a
 * script would write); either with its value in the Confluent wire format
 * (common/domain/wire.h), the writer's schema then fetched from the registry
 * and read as the current version. A framed record without headers gets an
 * id made of its topic, partition and offset, its record time and source
 * "unknown". A registry that does not answer is OL_ERR_UNREACHABLE or
 * OL_ERR_TIMEOUT (retriable: the record is fine, try again later); a framed
 * record that cannot be read says "Confluent wire format, schema id N: why".
 * ev->data is the JSON form of the current version. */
ol_err_t ol_event_from_message(ol_codec_t *codec, const rd_kafka_message_t *rkm, ol_event_t *ev, char *errstr,
                               size_t errstr_size);

/* The same without the JSON form, for consumers: *env filled, *value the
 * codec's value of the current version (borrowed, valid until the codec's
 * next decode of that type). arena holds what JSON input needed. */
ol_err_t ol_event_decode(ol_codec_t *codec, const rd_kafka_message_t *rkm, ol_arena_t *arena, ol_envelope_t *env,
                         avro_value_t **value, char *errstr, size_t errstr_size);

/* The parts of a record that ol_event_decode reads: a Kafka record's
 * (ol_event_rec_of), or a copy of one kept elsewhere (the rebuild's spill
 * files, consumers/README.md). Every pointer borrowed. */
typedef struct ol_event_rec_s {
    const char *topic; /* NULL: unknown */
    int32_t partition;
    int64_t offset;
    int64_t timestamp; /* the record's time, ms; -1 when it has none */
    const void *key;
    size_t key_len;
    const void *payload;
    size_t len;
    rd_kafka_headers_t *hdrs; /* NULL: those of hv */
    /* without hdrs: the headers as nhv names and values (value NULL: a
     * header without one); the last of a name counts */
    const struct ol_event_hdr_s {
        const char *name; /* name_len bytes, not terminated */
        size_t name_len;
        const void *value;
        size_t size;
    } * hv;
    size_t nhv;
} ol_event_rec_t;

/* rkm's parts, borrowed from rkm. */
void ol_event_rec_of(const rd_kafka_message_t *rkm, ol_event_rec_t *out);
/* ol_event_decode of a record's parts. */
ol_err_t ol_event_decode_rec(ol_codec_t *codec, const ol_event_rec_t *rec, ol_arena_t *arena, ol_envelope_t *env,
                             avro_value_t **value, char *errstr, size_t errstr_size);

/* ol_event_decode, waiting out what is away (a schema registry that does
 * not answer: the record is fine): retried with backoff (100 ms doubling to
 * 5 s, a warning every 10 tries) until it answers or *stop is set (then the
 * retriable error is returned). For readers that take their records one by
 * one; the record is never given up for that reason. */
ol_err_t ol_event_decode_waiting(ol_codec_t *codec, const rd_kafka_message_t *rkm, ol_arena_t *arena,
                                 ol_envelope_t *env, avro_value_t **value, const volatile sig_atomic_t *stop,
                                 char *errstr, size_t errstr_size);

void ol_event_clear(ol_event_t *ev);

/* Checks that rkm's key is the key of the event decoded from it (env,
 * value: from ol_event_decode); else OL_ERR_INVALID with both keys named.
 * Records keyed by one aggregate but about another are never applied. */
ol_err_t ol_event_check_key(const rd_kafka_message_t *rkm, const ol_envelope_t *env, avro_value_t *value, char *errstr,
                            size_t errstr_size);
/* The same for a key (key_len bytes). */
ol_err_t ol_event_check_key_of(const void *key, size_t key_len, const ol_envelope_t *env, avro_value_t *value,
                               char *errstr, size_t errstr_size);

/* An event a role makes itself, ready for rd_kafka_producev: the payload
 * (Avro, borrowed from the codec until its next encode), the key rendered
 * from the data, and the CloudEvents headers (new: hand them to producev or
 * destroy them). */
typedef struct ol_event_out_s {
    char id[OL_EVENT_ID_MAX + 1]; /* the event id (ce_id) made */
    const void *payload;
    size_t len;
    char key[OL_EVENT_KEY_MAX + 1];
    rd_kafka_headers_t *hdrs;
} ol_event_out_t;

/* Checks and encodes data as et (a new id, time_ms, source, ce_subject from
 * the schema's subject field), in the process's format: the Confluent wire
 * format once ol_wire_prepare made it write so (event.format), plain Avro
 * otherwise; CloudEvents headers either way. On error nothing is allocated.
 * The one producing function of the roles that make events. */
ol_err_t ol_event_encode(ol_codec_t *codec, const ol_event_type_t *et, const ol_json_t *data, int64_t time_ms,
                         const char *source, ol_event_out_t *out, char *errstr, size_t errstr_size);

/* The payload part of ol_event_encode, for a caller with its own envelope
 * (publish): data encoded as env->type's current version, env->content,
 * version and schema_id set for the process's format; *out borrowed from
 * the codec until its next encode. */
ol_err_t ol_event_encode_payload(ol_codec_t *codec, ol_envelope_t *env, const ol_json_t *data, const void **out,
                                 size_t *out_len, char *errstr, size_t errstr_size);

/* Adds the envelope's headers to hdrs. */
void ol_envelope_to_headers(const ol_envelope_t *env, rd_kafka_headers_t *hdrs);

#endif
