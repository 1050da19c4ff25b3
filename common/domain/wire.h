#ifndef OL_WIRE_H
#define OL_WIRE_H

/* The Confluent wire format of a record's value: a 0 byte, the writer
 * schema's id in a schema registry (4 bytes, big-endian), then the Avro
 * binary. What Confluent's serializers write; orderlog reads it on every
 * topic and writes it when event.format is confluent.
 *
 * Process-wide, set once before any thread runs (ol_wire_init, then
 * ol_wire_prepare for a writer), read by any thread afterwards:
 *  - reading: a writer's schema fetched by id from registry.url the first
 *    time the id is seen, kept for the life of the process (a schema id
 *    never changes meaning);
 *  - writing: the ids of orderlog's current schemas under the subjects
 *    <topic>-orderlog.<Event> (TopicRecordNameStrategy, the topic with its
 *    prefix), looked up, or registered when missing, by ol_wire_prepare. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/conf.h"
#include "common/base/err.h"
#include "common/domain/schema.h"

#define OL_WIRE_HEADER_BYTES 5

/* Reads registry.url, registry.timeout.ms, topic.prefix and event.format;
 * talks to no one. A URL the registry client refuses is reported when a
 * framed record needs it. */
void ol_wire_init(const ol_conf_t *conf);

/* For a role that writes events: with event.format = confluent, the schema
 * id of every event's current version, looked up or registered (a
 * registry that does not answer: OL_ERR_UNREACHABLE or OL_ERR_TIMEOUT; a
 * schema it refuses: OL_ERR_INVALID). Nothing to do with cloudevents.
 * Afterwards ol_wire_writing() says whether to frame. Not thread-safe: at
 * start, before the threads. */
ol_err_t ol_wire_prepare(char *errstr, size_t errstr_size) __attribute__((warn_unused_result));
bool ol_wire_writing(void);
/* The id of et's current schema (ol_wire_prepare done, writing). */
uint32_t ol_wire_id(const ol_event_type_t *et);
/* The CloudEvents dataschema of a framed record of et with schema id:
 * <registry.url>/schemas/ids/<id>. The id ol_wire_prepare gave et: a string
 * made then (borrowed, valid until ol_wire_reset), so writers format
 * nothing per record; any other id: formatted into buf, which is returned. */
const char *ol_wire_dataschema(const ol_event_type_t *et, uint32_t id, char *buf, size_t buf_size);

/* Whether value[0..len) is framed: *id set when it is. A JSON text never
 * is; plain Avro may start with a 0 byte too, so callers try it first
 * unless something else says the record is framed. */
bool ol_wire_framed(const void *value, size_t len, uint32_t *id);

/* The writer's schema of id: *et and *sv to decode with
 * (ol_codec_decode_writer). OL_ERR_INVALID with the reason when the
 * registry knows no such id, or its schema is not Avro or not one of
 * orderlog's events (cached: it never changes); the registry away is
 * retriable (OL_ERR_UNREACHABLE, OL_ERR_TIMEOUT), nothing cached.
 * Thread-safe. */
ol_err_t ol_wire_writer(uint32_t id, const ol_event_type_t **et, const ol_schema_version_t **sv, char *errstr,
                        size_t errstr_size) __attribute__((warn_unused_result));

/* Forgets every id and the settings (tests). */
void ol_wire_reset(void);

#endif
