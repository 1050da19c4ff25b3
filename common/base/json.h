#ifndef OL_JSON_H
#define OL_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/err.h"

/* A strict JSON reader for the hot input path (one publish line, one gate
 * body): the document is parsed into an arena, so a line costs a few
 * allocations instead of one per value, and nothing is freed by hand.
 * jansson stays the library for everything else (output, schemas, config);
 * it costs ~40k instructions per 200-byte line, which alone would cap
 * publish far below its target.
 *
 * Strict: RFC 8259 grammar, valid UTF-8 in every string and key (escaped
 * or not; surrogate escapes only in pairs), no duplicate keys, no NUL at all
 * (raw or \u0000: no text field or key of the contract may hold one, and
 * this parser is the one door of every JSON input: publish lines, gate
 * bodies, JSON records from Kafka), nesting at most 64 deep, integers within
 * int64. So a parsed string's len is always its strlen. */

typedef enum ol_json_type_e {
    OL_JSON_NULL,
    OL_JSON_FALSE,
    OL_JSON_TRUE,
    OL_JSON_INT,
    OL_JSON_REAL,
    OL_JSON_STRING,
    OL_JSON_ARRAY,
    OL_JSON_OBJECT,
} ol_json_type_t;

typedef struct ol_json_s ol_json_t;
typedef struct ol_json_member_s ol_json_member_t;

struct ol_json_s {
    ol_json_type_t type;
    size_t len; /* string bytes (without NUL), array items or object members */
    union {
        int64_t i;
        double d;
        const char *s; /* NUL-terminated; parsed ones hold no other NUL */
        ol_json_t *items;
        ol_json_member_t *members;
    } u;
};

struct ol_json_member_s {
    const char *key;
    size_t key_len;
    ol_json_t value;
};

/* Parses text[0..len) into the arena. On error returns OL_ERR_INVALID with
 * "malformed JSON at column N: <what>" (columns count bytes from 1), "invalid
 * UTF-8 at byte N", or for a string or key holding NUL
 * `field "<path>": must not contain NUL (\u0000)`, the path as the codec
 * writes it ("data.lines[1].sku"; a key's own NUL shown as \u0000) and then
 * also in *field (arena). *field is NULL otherwise; field may be NULL. */
ol_err_t ol_json_parse(ol_arena_t *arena, const char *text, size_t len, ol_json_t **out, const char **field,
                       char *errstr, size_t errstr_size);

/* The member named key of an object, or NULL. */
const ol_json_t *ol_json_get(const ol_json_t *obj, const char *key);
/* Reading members of decoded data: the string (borrowed from obj) or the
 * integer of member key, def when obj has no such member or it is of
 * another kind; whether the member is absent or null. */
const char *ol_json_get_str(const ol_json_t *obj, const char *key, const char *def);
int64_t ol_json_get_int(const ol_json_t *obj, const char *key, int64_t def);
bool ol_json_get_null(const ol_json_t *obj, const char *key);

/* Conversions to and from jansson (for defaults from schemas and output). */
ol_json_t *ol_json_from_jansson(ol_arena_t *arena, json_t *j);
json_t *ol_json_to_jansson(const ol_json_t *v);

/* Building data to encode (events a role makes itself): a member with a
 * string (borrowed, NUL-terminated) or an integer value, and an object over
 * members (borrowed). */
void ol_json_member_str(ol_json_member_t *m, const char *key, const char *s);
void ol_json_member_int(ol_json_member_t *m, const char *key, int64_t i);
ol_json_t ol_json_object_of(ol_json_member_t *members, size_t n);

/* Bytes as a jansson string (new): as they are when they are UTF-8, else
 * each byte that is not part of a valid sequence as "\xNN", so that a
 * record with a binary key, header or value can still be printed. */
json_t *ol_json_bytes(const void *val, size_t size);

/* "an integer", "a string", ... for error messages. */
const char *ol_json_kind(const ol_json_t *v);

#endif
