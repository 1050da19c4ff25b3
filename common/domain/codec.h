#ifndef OL_CODEC_H
#define OL_CODEC_H

#include <avro.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/err.h"
#include "common/base/json.h"
#include "common/domain/schema.h"

/* The codec: event data as JSON <-> Avro binary <-> Avro values (the C form),
 * with the contract's checks (required fields, types, enum symbols, ranges,
 * formats). One codec per thread: it owns reusable values and buffers.
 *
 * Input is read with ol_json (common/base/json.h), output made with jansson.
 * JSON form of an event's data: an object with the schema's fields; times as
 * RFC 3339 strings or epoch milliseconds on input, RFC 3339 on output; a
 * nullable field as null or its value. Unknown fields are refused. */
typedef struct ol_codec_s ol_codec_t;

ol_codec_t *ol_codec_new(void);
void ol_codec_destroy(ol_codec_t *codec);

/* Checks data (borrowed) against et and encodes it as Avro binary of et's
 * current version. Fields with orderlog.defaultNow default to event_time_ms.
 * On success *out points into the codec (valid until its next encode).
 * Errors name the field: `field "lines[1].quantity": must be at least 1, got 0`. */
ol_err_t ol_codec_encode(ol_codec_t *codec, const ol_event_type_t *et, const ol_json_t *data, int64_t event_time_ms,
                         const void **out, size_t *out_len, char *errstr, size_t errstr_size);

/* The same in the Confluent wire format: a 0 byte, schema_id (4 bytes,
 * big-endian), then the Avro binary. */
ol_err_t ol_codec_encode_framed(ol_codec_t *codec, const ol_event_type_t *et, const ol_json_t *data,
                                int64_t event_time_ms, uint32_t schema_id, const void **out, size_t *out_len,
                                char *errstr, size_t errstr_size);

/* Decodes Avro binary written with `version` of et into the codec's value
 * of the current version (*out borrowed, valid until the next decode of et),
 * then checks it as ol_codec_encode would. Trailing bytes are an error. */
ol_err_t ol_codec_decode(ol_codec_t *codec, const ol_event_type_t *et, int version, const void *buf, size_t len,
                         avro_value_t **out, char *errstr, size_t errstr_size);

/* The same for a payload written with sv (an entry of et->history, or a
 * writer's schema from ol_schema_writer): *out as ol_codec_decode's. */
ol_err_t ol_codec_decode_writer(ol_codec_t *codec, const ol_event_type_t *et, const ol_schema_version_t *sv,
                                const void *buf, size_t len, avro_value_t **out, char *errstr, size_t errstr_size);

/* ol_codec_decode, then the JSON form: *out is a new reference. */
ol_err_t ol_codec_decode_json(ol_codec_t *codec, const ol_event_type_t *et, int version, const void *buf, size_t len,
                              json_t **out, char *errstr, size_t errstr_size);

/* The codec's JSON form (ol_json, in arena) of an Avro value of et's current
 * version; strings are copied into the arena. */
ol_json_t *ol_codec_to_dom(const ol_event_type_t *et, avro_value_t *value, ol_arena_t *arena);

/* The JSON form of an Avro value of et's current version (new reference). */
json_t *ol_codec_to_json(const ol_event_type_t *et, avro_value_t *value);

/* Renders et's key template ("{sku}", "{subject_type}:{subject}") from the
 * JSON data into out. */
ol_err_t ol_codec_key(const ol_event_type_t *et, const ol_json_t *data, char *out, size_t out_size, char *errstr,
                      size_t errstr_size);

/* Whether key[0..key_len) is et's key template rendered from value (an Avro
 * value of et's current version): a record keyed by another aggregate than
 * the one its event is about would be applied outside that aggregate's
 * partition order. On false, the rendered key (cut to out_size) in out. */
bool ol_codec_key_matches(const ol_event_type_t *et, avro_value_t *value, const void *key, size_t key_len, char *out,
                          size_t out_size);

/* Between codec.c and codec_value.c, not for callers: value v of node n
 * as the codec's JSON (strings borrowed from v, the rest in arena a), and
 * as jansson's (new reference). */
void ol_codec__node_to_dom(ol_arena_t *a, const ol_node_t *n, avro_value_t *v, ol_json_t *out);
json_t *ol_codec__node_to_json(const ol_node_t *n, avro_value_t *v);

#endif
