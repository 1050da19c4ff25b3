#include "common/domain/event.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/wire.h"

#define DATASCHEMA_PREFIX "urn:orderlog:schema:"

void ol_event_clear(ol_event_t *ev) {
    json_decref(ev->data);
    ev->data = NULL;
}

/* src cut to fit, between characters: a header holding part of one would
 * make every consumer refuse the record. */
static void copy_str(char *dst, size_t dst_size, const char *src) {
    src = src ? src : "";
    snprintf(dst, dst_size, "%.*s", ol_utf8_fit(src, dst_size - 1), src);
}

/* Fills key and subject from the data. */
static ol_err_t derive_key(ol_event_t *ev, char *errstr, size_t errstr_size) {
    ol_err_t err = ol_codec_key(ev->env.type, ev->input, ev->key, sizeof(ev->key), errstr, errstr_size);
    if (err)
        return err;
    const ol_json_t *subject = ol_json_get(ev->input, ev->env.type->subject);
    copy_str(ev->env.subject, sizeof(ev->env.subject), subject && subject->type == OL_JSON_STRING ? subject->u.s : "");
    return OL_ERR_OK;
}

/* The envelope's "time": epoch ms or RFC 3339, in the years 0001-9999. */
static ol_err_t parse_time(const ol_json_t *t, int64_t *out, char *errstr, size_t errstr_size) {
    if (t->type == OL_JSON_INT) {
        if (t->u.i < OL_TIME_MIN_MS || t->u.i > OL_TIME_MAX_MS)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "field \"time\": %lld ms " OL_TIME_RANGE_TEXT,
                           (long long)t->u.i);
        *out = t->u.i;
        return OL_ERR_OK;
    }
    if (t->type == OL_JSON_STRING) {
        int rc = ol_time_parse(t->u.s, out);
        if (!rc)
            return OL_ERR_OK;
        if (rc == OL_TIME_OUT_OF_RANGE)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "field \"time\": \"%.*s\" " OL_TIME_RANGE_TEXT,
                           ol_utf8_fit(t->u.s, 64), t->u.s);
    }
    return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                   "\"time\" must be an RFC 3339 time (2026-11-22T15:04:05Z) or epoch milliseconds");
}

static bool key_is(const ol_json_member_t *m, const char *name) {
    return m->key_len == strlen(name) && !memcmp(m->key, name, m->key_len);
}

static ol_err_t from_object(const ol_json_t *root, int64_t now_ms, ol_event_t *ev, char *errstr, size_t errstr_size) {
    if (root->type != OL_JSON_OBJECT)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "expected a JSON object {\"type\":...,\"data\":{...}}");
    for (size_t i = 0; i < root->len; i++) {
        const ol_json_member_t *m = &root->u.members[i];
        if (!key_is(m, "type") && !key_is(m, "data") && !key_is(m, "id") && !key_is(m, "time"))
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "unknown top-level field \"%.*s\" (expected type, data, id, time)", ol_utf8_fit(m->key, 64),
                           m->key);
    }
    const ol_json_t *type = ol_json_get(root, "type");
    if (!type)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "missing \"type\"");
    if (type->type != OL_JSON_STRING)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "\"type\" must be a string");
    ev->env.type = ol_schema_findn(type->u.s, type->len);
    if (!ev->env.type)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "unknown event type \"%.*s\"", ol_utf8_fit(type->u.s, 64),
                       type->u.s);
    ev->env.version = ev->env.type->version;
    const ol_json_t *id = ol_json_get(root, "id");
    if (id) {
        if (id->type != OL_JSON_STRING || id->len == 0 || id->len > OL_EVENT_ID_MAX || memchr(id->u.s, 0, id->len))
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "\"id\" must be a string of 1 to %d characters",
                           OL_EVENT_ID_MAX);
        memcpy(ev->env.id, id->u.s, id->len + 1);
    } else {
        ol_uuid_v4(ev->env.id);
    }
    const ol_json_t *t = ol_json_get(root, "time");
    ev->env.time_ms = now_ms;
    ol_err_t err;
    if (t && (err = parse_time(t, &ev->env.time_ms, errstr, errstr_size)))
        return err;
    if (!(ev->input = ol_json_get(root, "data")))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "missing \"data\"");
    if (ev->input->type != OL_JSON_OBJECT)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "\"data\" must be an object, got %s",
                       ol_json_kind(ev->input));
    return derive_key(ev, errstr, errstr_size);
}

ol_err_t ol_event_from_line(ol_arena_t *arena, const char *line, size_t len, int64_t now_ms, ol_event_t *ev,
                            char *errstr, size_t errstr_size) {
    memset(ev, 0, sizeof(*ev));
    ol_json_t *root;
    const char *field;
    ol_err_t err = ol_json_parse(arena, line, len, &root, &field, errstr, errstr_size);
    if (err && field && !strncmp(field, "data.", 5)) /* named as the codec names data fields */
        ol_errf(errstr, errstr_size, err, "field \"%s\": must not contain NUL (\\u0000)", field + 5);
    if (!err)
        err = from_object(root, now_ms, ev, errstr, errstr_size);
    if (err)
        ev->input = NULL;
    return err;
}

void ol_envelope_to_headers(const ol_envelope_t *env, rd_kafka_headers_t *hdrs) {
    char ts[40], schema[600];
    const char *dataschema = env->type->dataschema;
    ol_time_format(env->time_ms, ts, sizeof(ts));
    if (env->schema_id) {
        dataschema = ol_wire_dataschema(env->type, env->schema_id, schema, sizeof(schema));
    } else if (env->version != env->type->version) {
        snprintf(schema, sizeof(schema), DATASCHEMA_PREFIX "%s:%d", env->type->name, env->version);
        dataschema = schema;
    }
    rd_kafka_header_add(hdrs, "ce_specversion", -1, "1.0", 3);
    rd_kafka_header_add(hdrs, "ce_id", -1, env->id, -1);
    rd_kafka_header_add(hdrs, "ce_type", -1, env->type->ce_type, -1);
    rd_kafka_header_add(hdrs, "ce_source", -1, env->source, -1);
    rd_kafka_header_add(hdrs, "ce_time", -1, ts, -1);
    rd_kafka_header_add(hdrs, "ce_subject", -1, env->subject, -1);
    rd_kafka_header_add(hdrs, "content-type", -1,
                        env->content == OL_CONTENT_AVRO ? "application/avro" : "application/json", -1);
    rd_kafka_header_add(hdrs, "ce_dataschema", -1, dataschema, -1);
}

/* How header_str treats a value longer than its buffer. */
typedef enum { HDR_EXACT, HDR_TRUNCATE } hdr_fit_t;

/* Copies the last header `name` into out as a string; *found false (and
 * OL_ERR_OK) when absent. A value holding NUL or invalid UTF-8 is an error,
 * and so is one longer than out_size - 1 when fit is HDR_EXACT (a cut id,
 * type or version would mean another one). */
static ol_err_t header_str(const ol_event_rec_t *rec, const char *name, hdr_fit_t fit, char *out, size_t out_size,
                           bool *found, char *errstr, size_t errstr_size) {
    const void *val = NULL;
    size_t size = 0;
    *found = false;
    out[0] = '\0';
    if (rec->hdrs) {
        if (rd_kafka_header_get_last(rec->hdrs, name, &val, &size))
            val = NULL;
    } else {
        size_t name_len = strlen(name);
        for (size_t i = rec->nhv; i-- > 0;)
            if (rec->hv[i].name_len == name_len && !memcmp(rec->hv[i].name, name, name_len)) {
                val = rec->hv[i].value;
                size = rec->hv[i].size;
                break;
            }
    }
    if (!val)
        return OL_ERR_OK;
    if (memchr(val, '\0', size))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "header \"%s\": must not contain NUL (\\u0000)", name);
    long bad = ol_utf8_invalid_at(val, size);
    if (bad >= 0)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "header \"%s\": invalid UTF-8 at byte %ld", name, bad + 1);
    if (size >= out_size) {
        if (fit == HDR_EXACT)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "header \"%s\": longer than %zu bytes", name,
                           out_size - 1);
        size = out_size - 1;
        while (size && ((const unsigned char *)val)[size] >= 0x80 && ((const unsigned char *)val)[size] < 0xc0)
            size--; /* cut on a character boundary */
    }
    memcpy(out, val, size);
    out[size] = '\0';
    *found = true;
    return OL_ERR_OK;
}

/* ce_dataschema: exactly DATASCHEMA_PREFIX<Type>:<version>, Type the
 * ce_type's, the version decimal without sign or leading zero, 1..INT_MAX. */
static bool parse_dataschema(const char *s, const ol_event_type_t *et, int *version) {
    size_t plen = strlen(DATASCHEMA_PREFIX), nlen = strlen(et->name);
    if (strncmp(s, DATASCHEMA_PREFIX, plen) || strncmp(s + plen, et->name, nlen) || s[plen + nlen] != ':')
        return false;
    const char *d = s + plen + nlen + 1;
    if (*d < '1' || *d > '9')
        return false;
    long long v = 0;
    for (; *d; d++) {
        if (*d < '0' || *d > '9' || (v = v * 10 + (*d - '0')) > INT_MAX)
            return false;
    }
    *version = (int)v;
    return true;
}

/* The dataschema of a framed record (ol_wire_dataschema): .../schemas/ids/<id>. */
static bool parse_framed_dataschema(const char *s, uint32_t *id) {
    const char *tail = strstr(s, "/schemas/ids/");
    if (!tail)
        return false;
    const char *d = tail + strlen("/schemas/ids/");
    if (*d < '0' || *d > '9')
        return false;
    unsigned long long v = 0;
    for (; *d; d++)
        if (*d < '0' || *d > '9' || (v = v * 10 + (unsigned)(*d - '0')) > UINT32_MAX)
            return false;
    *id = (uint32_t)v;
    return true;
}

/* A record whose value is in the Confluent wire format with schema id:
 * decoded with the writer's schema from the registry. enveloped: env holds
 * what the ce_* headers said (the type must be the schema's); else env is
 * made from the record. */
static ol_err_t decode_framed(ol_codec_t *codec, const ol_event_rec_t *rec, uint32_t id, bool enveloped,
                              ol_envelope_t *env, avro_value_t **value, char *errstr, size_t errstr_size) {
    const ol_event_type_t *et;
    const ol_schema_version_t *sv;
    char why[600];
    ol_err_t err = ol_wire_writer(id, &et, &sv, why, sizeof(why));
    if (!err && enveloped && et != env->type)
        err = ol_errf(why, sizeof(why), OL_ERR_INVALID, "the schema is %s's, but the ce_type header says %s",
                      et->ce_type, env->type->ce_type);
    if (!err)
        err = ol_codec_decode_writer(codec, et, sv, (const char *)rec->payload + OL_WIRE_HEADER_BYTES,
                                     rec->len - OL_WIRE_HEADER_BYTES, value, why, sizeof(why));
    if (err)
        return ol_errf(errstr, errstr_size, err, "Confluent wire format, schema id %lu: %s", (unsigned long)id, why);
    env->schema_id = id;
    env->content = OL_CONTENT_AVRO;
    env->version = sv->version ? sv->version : et->version;
    if (enveloped)
        return OL_ERR_OK;
    env->type = et;
    /* the same id every time the record is read: a replay applies it once */
    const char *topic = rec->topic ? rec->topic : "";
    snprintf(env->id, sizeof(env->id), "kafka-%016llx-%d-%lld",
             (unsigned long long)ol_hash_fnv1a64(0, topic, strlen(topic)), (int)rec->partition, (long long)rec->offset);
    int64_t ts = rec->timestamp;
    env->time_ms = ts > 0 ? ts : ol_time_now_ms();
    copy_str(env->source, sizeof(env->source), "unknown");
    avro_value_t field;
    const char *subject = NULL;
    size_t n;
    if (!avro_value_get_by_name(*value, et->subject, &field, NULL) && avro_value_get_type(&field) == AVRO_STRING &&
        !avro_value_get_string(&field, &subject, &n))
        copy_str(env->subject, sizeof(env->subject), subject);
    return OL_ERR_OK;
}

/* JSON data (input form) of env's type → the codec's current-version value. */
static ol_err_t decode_json_data(ol_codec_t *codec, const ol_envelope_t *env, const ol_json_t *data,
                                 avro_value_t **value, char *errstr, size_t errstr_size) {
    const void *bin;
    size_t bin_len;
    ol_err_t err = ol_codec_encode(codec, env->type, data, env->time_ms, &bin, &bin_len, errstr, errstr_size);
    if (err)
        return err;
    return ol_codec_decode(codec, env->type, env->type->version, bin, bin_len, value, errstr, errstr_size);
}

/* A record without an envelope: framed (a JSON text never starts with a 0
 * byte), or a publish-format line written by another tool. */
static ol_err_t decode_headerless(ol_codec_t *codec, const ol_event_rec_t *rec, ol_arena_t *arena, ol_envelope_t *env,
                                  avro_value_t **value, char *errstr, size_t errstr_size) {
    const char *payload = rec->payload ? rec->payload : "";
    uint32_t id;
    if (ol_wire_framed(payload, rec->len, &id))
        return decode_framed(codec, rec, id, false, env, value, errstr, errstr_size);
    int64_t ts = rec->timestamp;
    ol_event_t ev;
    ol_err_t err =
        ol_event_from_line(arena, payload, rec->len, ts > 0 ? ts : ol_time_now_ms(), &ev, errstr, errstr_size);
    if (err)
        return err;
    *env = ev.env;
    env->content = OL_CONTENT_JSON;
    copy_str(env->source, sizeof(env->source), "unknown");
    return decode_json_data(codec, env, ev.input, value, errstr, errstr_size);
}

void ol_event_rec_of(const rd_kafka_message_t *rkm, ol_event_rec_t *out) {
    out->topic = rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : NULL;
    out->partition = rkm->partition;
    out->offset = rkm->offset;
    out->timestamp = rd_kafka_message_timestamp(rkm, NULL);
    out->key = rkm->key;
    out->key_len = rkm->key_len;
    out->payload = rkm->payload;
    out->len = rkm->len;
    if (rd_kafka_message_headers(rkm, &out->hdrs))
        out->hdrs = NULL;
    out->hv = NULL;
    out->nhv = 0;
}

ol_err_t ol_event_decode(ol_codec_t *codec, const rd_kafka_message_t *rkm, ol_arena_t *arena, ol_envelope_t *env,
                         avro_value_t **value, char *errstr, size_t errstr_size) {
    ol_event_rec_t rec;
    ol_event_rec_of(rkm, &rec);
    return ol_event_decode_rec(codec, &rec, arena, env, value, errstr, errstr_size);
}

ol_err_t ol_event_decode_rec(ol_codec_t *codec, const ol_event_rec_t *rec, ol_arena_t *arena, ol_envelope_t *env,
                             avro_value_t **value, char *errstr, size_t errstr_size) {
    memset(env, 0, sizeof(*env));
    char type[128], buf[160];
    bool found;
    ol_err_t err;
    const char *payload = rec->payload ? rec->payload : "";
    if ((err = header_str(rec, "ce_type", HDR_EXACT, type, sizeof(type), &found, errstr, errstr_size)))
        return err;
    if (!found)
        return decode_headerless(codec, rec, arena, env, value, errstr, errstr_size);
    uint32_t id;
    if (!(env->type = ol_schema_find(type)))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "unknown ce_type \"%s\"", type);
    if ((err = header_str(rec, "ce_id", HDR_EXACT, env->id, sizeof(env->id), &found, errstr, errstr_size)))
        return err;
    if (!found || !env->id[0])
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "missing ce_id header");
    if ((err = header_str(rec, "ce_source", HDR_TRUNCATE, env->source, sizeof(env->source), &found, errstr,
                          errstr_size)) ||
        (err = header_str(rec, "ce_subject", HDR_TRUNCATE, env->subject, sizeof(env->subject), &found, errstr,
                          errstr_size)) ||
        (err = header_str(rec, "ce_time", HDR_EXACT, buf, sizeof(buf), &found, errstr, errstr_size)))
        return err;
    if (found) {
        int rc = ol_time_parse(buf, &env->time_ms);
        if (rc == OL_TIME_OUT_OF_RANGE)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "ce_time header \"%s\" " OL_TIME_RANGE_TEXT, buf);
        if (rc)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "ce_time header \"%s\" is not an RFC 3339 time", buf);
    } else {
        env->time_ms = rec->timestamp;
    }
    env->version = env->type->version;
    char dataschema[600];
    if ((err =
             header_str(rec, "ce_dataschema", HDR_EXACT, dataschema, sizeof(dataschema), &found, errstr, errstr_size)))
        return err;
    uint32_t said;
    bool named = found && parse_dataschema(dataschema, env->type, &env->version); /* parsed once per record */
    if (found && !named && parse_framed_dataschema(dataschema, &said)) {
        if (!ol_wire_framed(payload, rec->len, &id) || id != said)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "ce_dataschema header \"%s\" names a schema registry's schema, but the value is not in the "
                           "Confluent wire format with that id",
                           dataschema);
        return decode_framed(codec, rec, id, true, env, value, errstr, errstr_size);
    }
    if (found && !named)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                       "ce_dataschema header \"%s\" does not match %s%s:<n> (n a decimal version from 1, no sign "
                       "or leading zero)",
                       dataschema, DATASCHEMA_PREFIX, env->type->name);
    env->content = OL_CONTENT_AVRO;
    if ((err = header_str(rec, "content-type", HDR_TRUNCATE, buf, sizeof(buf), &found, errstr, errstr_size)))
        return err;
    if (found && !strncmp(buf, "application/json", 16))
        env->content = OL_CONTENT_JSON;
    if (env->content == OL_CONTENT_AVRO) {
        err = ol_codec_decode(codec, env->type, env->version, payload, rec->len, value, errstr, errstr_size);
        /* plain Avro may start with a 0 byte: framed only when it did not decode */
        if (err == OL_ERR_INVALID && ol_wire_framed(payload, rec->len, &id))
            return decode_framed(codec, rec, id, true, env, value, errstr, errstr_size);
        return err;
    }
    if (ol_wire_framed(payload, rec->len, &id))
        return decode_framed(codec, rec, id, true, env, value, errstr, errstr_size);
    ol_json_t *data;
    if ((err = ol_json_parse(arena, payload, rec->len, &data, NULL, errstr, errstr_size)))
        return err;
    return decode_json_data(codec, env, data, value, errstr, errstr_size);
}

ol_err_t ol_event_decode_waiting(ol_codec_t *codec, const rd_kafka_message_t *rkm, ol_arena_t *arena,
                                 ol_envelope_t *env, avro_value_t **value, const volatile sig_atomic_t *stop,
                                 char *errstr, size_t errstr_size) {
    int64_t wait_ms = 100;
    for (int attempt = 0;; attempt++) {
        ol_err_t err = ol_event_decode(codec, rkm, arena, env, value, errstr, errstr_size);
        if (!err || !ol_err_is_retriable(err) || (stop && *stop))
            return err;
        if (attempt % 10 == 0)
            ol_log_warn("record %s[%d]@%lld waits (attempt %d): %s", rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "",
                        (int)rkm->partition, (long long)rkm->offset, attempt + 1, errstr);
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
        wait_ms = wait_ms * 2 > 5000 ? 5000 : wait_ms * 2;
    }
}

ol_err_t ol_event_from_message(ol_codec_t *codec, const rd_kafka_message_t *rkm, ol_event_t *ev, char *errstr,
                               size_t errstr_size) {
    memset(ev, 0, sizeof(*ev));
    ol_arena_t *arena = ol_arena_new(0);
    avro_value_t *value;
    ol_err_t err = ol_event_decode(codec, rkm, arena, &ev->env, &value, errstr, errstr_size);
    ol_arena_destroy(arena);
    if (err)
        return err;
    ev->data = ol_codec_to_json(ev->env.type, value);
    if (rkm->key_len <= OL_EVENT_KEY_MAX) {
        memcpy(ev->key, rkm->key ? rkm->key : "", rkm->key_len);
        ev->key[rkm->key_len] = '\0';
    }
    return OL_ERR_OK;
}

ol_err_t ol_event_encode_payload(ol_codec_t *codec, ol_envelope_t *env, const ol_json_t *data, const void **out,
                                 size_t *out_len, char *errstr, size_t errstr_size) {
    env->content = OL_CONTENT_AVRO;
    env->version = env->type->version;
    env->schema_id = ol_wire_writing() ? ol_wire_id(env->type) : 0;
    if (env->schema_id)
        return ol_codec_encode_framed(codec, env->type, data, env->time_ms, env->schema_id, out, out_len, errstr,
                                      errstr_size);
    return ol_codec_encode(codec, env->type, data, env->time_ms, out, out_len, errstr, errstr_size);
}

ol_err_t ol_event_encode(ol_codec_t *codec, const ol_event_type_t *et, const ol_json_t *data, int64_t time_ms,
                         const char *source, ol_event_out_t *out, char *errstr, size_t errstr_size) {
    ol_envelope_t env = {.type = et, .time_ms = time_ms};
    ol_err_t err = ol_event_encode_payload(codec, &env, data, &out->payload, &out->len, errstr, errstr_size);
    if (err || (err = ol_codec_key(et, data, out->key, sizeof(out->key), errstr, errstr_size)))
        return err;
    ol_uuid_v4(env.id);
    copy_str(env.source, sizeof(env.source), source);
    const ol_json_t *subject = ol_json_get(data, et->subject);
    copy_str(env.subject, sizeof(env.subject), subject && subject->type == OL_JSON_STRING ? subject->u.s : "");
    memcpy(out->id, env.id, sizeof(out->id));
    out->hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&env, out->hdrs);
    return OL_ERR_OK;
}

ol_err_t ol_event_check_key(const rd_kafka_message_t *rkm, const ol_envelope_t *env, avro_value_t *value, char *errstr,
                            size_t errstr_size) {
    return ol_event_check_key_of(rkm->key, rkm->key_len, env, value, errstr, errstr_size);
}

ol_err_t ol_event_check_key_of(const void *key, size_t key_len, const ol_envelope_t *env, avro_value_t *value,
                               char *errstr, size_t errstr_size) {
    char want[256];
    if (ol_codec_key_matches(env->type, value, key, key_len, want, sizeof(want)))
        return OL_ERR_OK;
    int n = key_len > 128 ? 128 : (int)key_len;
    return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                   "record key \"%.*s\" is not the key of its %s (\"%s\", from %s): every event is keyed by the "
                   "aggregate it is about (docs/events.md, placement)",
                   n, key ? (const char *)key : "", env->type->name, want, env->type->key);
}
