#ifndef OL_SCHEMA_H
#define OL_SCHEMA_H

#include <avro.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/base/err.h"

/* The event registry: every schemas/<Event>.avsc (the current version) and
 * schemas/history/<Event>.v<N>.avsc (older versions still readable), compiled
 * in. Loaded once (ol_schema_init) and read-only afterwards, so any thread
 * may use it.
 *
 * Besides Avro, a schema carries orderlog attributes that Avro ignores:
 *   record: orderlog.version (int), orderlog.topic (topic without prefix),
 *           orderlog.key ("{field}" template), orderlog.subject (field name)
 *   field:  orderlog.min / orderlog.max (numbers), orderlog.minLength
 *           (strings), orderlog.format ("ip", "currency"),
 *           orderlog.defaultNow (a time field defaulting to the event time)
 * and "logicalType": "timestamp-millis" on longs. */

typedef enum ol_node_kind_e {
    OL_NODE_STRING,
    OL_NODE_INT,
    OL_NODE_LONG,
    OL_NODE_BOOLEAN,
    OL_NODE_DOUBLE,
    OL_NODE_NULL,
    OL_NODE_ENUM,
    OL_NODE_ARRAY,
    OL_NODE_RECORD,
    OL_NODE_NULLABLE, /* union ["null", T] */
} ol_node_kind_t;

typedef enum ol_format_e { OL_FORMAT_NONE, OL_FORMAT_IP, OL_FORMAT_CURRENCY } ol_format_t;

typedef struct ol_node_s ol_node_t;

typedef struct ol_field_s {
    const char *name;
    ol_node_t *type;
    json_t *def;                  /* borrowed from the schema JSON; NULL when required */
    const struct ol_json_s *dflt; /* def as the codec reads it; NULL when required */
    bool default_now;
    bool has_min, has_max;
    int64_t min, max;
    int min_length;
    ol_format_t format;
} ol_field_t;

struct ol_node_s {
    ol_node_kind_t kind;
    bool timestamp; /* long with logicalType timestamp-millis */
    const char *name;
    /* OL_NODE_RECORD */
    ol_field_t *fields;
    size_t nfields;
    /* OL_NODE_ENUM */
    const char **symbols;
    size_t nsymbols;
    /* OL_NODE_ARRAY items, OL_NODE_NULLABLE inner type */
    ol_node_t *inner;
};

/* A readable version. avro-c 1.11's resolver does not apply reader defaults
 * ("Reader field x doesn't appear in writer"), so older versions are read
 * with their own schema and resolved to the current one by the codec. */
typedef struct ol_schema_version_s {
    int version;
    avro_schema_t schema;
    avro_value_iface_t *iface; /* generic values of this version */
    ol_node_t *root;           /* this version's fields */
    const json_t *doc;         /* the schema's JSON (borrowed, lives as long as the process) */
} ol_schema_version_t;

typedef struct ol_event_type_s {
    const char *name;       /* "BuyRequested" */
    const char *ce_type;    /* "orderlog.BuyRequested" */
    const char *dataschema; /* "urn:orderlog:schema:BuyRequested:2", the current version */
    const char *topic;      /* "buy-requests", without prefix */
    const char *key;        /* key template, e.g. "{subject_type}:{subject}" */
    const char *subject;    /* field holding the aggregate id (ce_subject) */
    const char *doc;
    int version;                  /* current version */
    avro_schema_t schema;         /* current version */
    avro_value_iface_t *iface;    /* generic values of the current version */
    ol_node_t *root;              /* current version, with the checks */
    ol_schema_version_t *history; /* every readable version, current included */
    size_t nhistory;
    int index; /* position in ol_schema_types() */
} ol_event_type_t;

/* Loads the compiled-in schemas; idempotent and thread-safe. Fails only if a
 * schema is broken, which the unit tests rule out. */
ol_err_t ol_schema_init(char *errstr, size_t errstr_size);

/* All event types, sorted by name; *count set. */
const ol_event_type_t *const *ol_schema_types(size_t *count);
/* By event name ("BuyRequested") or CloudEvents type ("orderlog.BuyRequested"). */
const ol_event_type_t *ol_schema_find(const char *name);
/* The same over name[0..len), compared by full length: bytes from outside
 * (a JSON string, a header) match only when all of them do. */
const ol_event_type_t *ol_schema_findn(const char *name, size_t len);
/* The version entry, or NULL when this binary cannot read that version. */
const ol_schema_version_t *ol_schema_version(const ol_event_type_t *et, int version);
/* A writer's schema from outside (a schema registry's, text[0..len)):
 * *et the event whose record it is (by full name, orderlog.<Event>) and
 * *out how to read it. A schema equal (as JSON) to a compiled-in version is
 * that version; another one becomes a new entry (version 0, kept for the
 * life of the process: call it once per schema) when the evolution rule
 * reads it as the current version: every current field it lacks has a
 * default, and it uses only the types orderlog's schemas use. Else
 * OL_ERR_INVALID with the reason. Thread-safe. */
ol_err_t ol_schema_writer(const char *text, size_t len, const ol_event_type_t **et, const ol_schema_version_t **out,
                          char *errstr, size_t errstr_size);
/* A schema's text as orderlog registers it in a schema registry and looks
 * it up: text[0..len) without the whitespace around it, as Confluent's
 * clients send a schema, so that a registry that finds a schema by its
 * exact text (Apicurio) finds theirs and ours alike. The caller frees it. */
char *ol_schema_registry_text(const char *text, size_t len);
/* Distinct topic names (without prefix) in a fixed order; ends with NULL. */
const char *const *ol_schema_topics(void);

#endif
