#include "common/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "common/util.h"

#define DATASCHEMA_PREFIX "urn:orderlog:schema:"

void ol_event_clear(ol_event_t *ev) {
    json_decref(ev->data);
    ev->data = NULL;
}

static void copy_str(char *dst, size_t dst_size, const char *src) {
    snprintf(dst, dst_size, "%s", src ? src : "");
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

static ol_err_t parse_time(const ol_json_t *t, int64_t *out) {
    if (t->type == OL_JSON_INT) {
        *out = t->u.i;
        return OL_ERR_OK;
    }
    if (t->type == OL_JSON_STRING && !ol_time_parse(t->u.s, out))
        return OL_ERR_OK;
    return OL_ERR_INVALID;
}

static ol_err_t from_object(const ol_json_t *root, int64_t now_ms, ol_event_t *ev, char *errstr, size_t errstr_size) {
    if (root->type != OL_JSON_OBJECT)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "expected a JSON object {\"type\":...,\"data\":{...}}");
    for (size_t i = 0; i < root->len; i++) {
        const char *key = root->u.members[i].key;
        if (strcmp(key, "type") && strcmp(key, "data") && strcmp(key, "id") && strcmp(key, "time"))
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "unknown top-level field \"%.64s\" (expected type, data, id, time)", key);
    }
    const ol_json_t *type = ol_json_get(root, "type");
    if (!type)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "missing \"type\"");
    if (type->type != OL_JSON_STRING)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "\"type\" must be a string");
    ev->env.type = ol_schema_find(type->u.s);
    if (!ev->env.type)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "unknown event type \"%.64s\"", type->u.s);
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
    if (t && parse_time(t, &ev->env.time_ms))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                       "\"time\" must be an RFC 3339 time (2026-11-22T15:04:05Z) or epoch milliseconds");
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
    ol_err_t err = ol_json_parse(arena, line, len, &root, errstr, errstr_size);
    if (!err)
        err = from_object(root, now_ms, ev, errstr, errstr_size);
    if (err)
        ev->input = NULL;
    return err;
}

void ol_envelope_to_headers(const ol_envelope_t *env, rd_kafka_headers_t *hdrs) {
    char ts[40], schema[160];
    const char *dataschema = env->type->dataschema;
    ol_time_format(env->time_ms, ts, sizeof(ts));
    if (env->version != env->type->version) {
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

/* Copies header `name` into out as a string; returns false when absent. */
static bool header_str(rd_kafka_headers_t *hdrs, const char *name, char *out, size_t out_size) {
    const void *val;
    size_t size;
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &size) || !val)
        return false;
    if (size >= out_size)
        size = out_size - 1;
    memcpy(out, val, size);
    out[size] = '\0';
    return true;
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

ol_err_t ol_event_decode(ol_codec_t *codec, const rd_kafka_message_t *rkm, ol_arena_t *arena, ol_envelope_t *env,
                         avro_value_t **value, char *errstr, size_t errstr_size) {
    memset(env, 0, sizeof(*env));
    rd_kafka_headers_t *hdrs = NULL;
    char type[128], buf[160];
    const char *payload = rkm->payload ? rkm->payload : "";
    if (rd_kafka_message_headers(rkm, &hdrs) || !header_str(hdrs, "ce_type", type, sizeof(type))) {
        /* no envelope: a publish-format line written by another tool */
        int64_t ts = rd_kafka_message_timestamp(rkm, NULL);
        ol_event_t ev;
        ol_err_t err =
            ol_event_from_line(arena, payload, rkm->len, ts > 0 ? ts : ol_time_now_ms(), &ev, errstr, errstr_size);
        if (err)
            return err;
        *env = ev.env;
        env->content = OL_CONTENT_JSON;
        copy_str(env->source, sizeof(env->source), "unknown");
        return decode_json_data(codec, env, ev.input, value, errstr, errstr_size);
    }
    if (!(env->type = ol_schema_find(type)))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "unknown ce_type \"%s\"", type);
    if (!header_str(hdrs, "ce_id", env->id, sizeof(env->id)) || !env->id[0])
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "missing ce_id header");
    header_str(hdrs, "ce_source", env->source, sizeof(env->source));
    header_str(hdrs, "ce_subject", env->subject, sizeof(env->subject));
    if (header_str(hdrs, "ce_time", buf, sizeof(buf))) {
        if (ol_time_parse(buf, &env->time_ms))
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "ce_time header \"%s\" is not an RFC 3339 time", buf);
    } else {
        env->time_ms = rd_kafka_message_timestamp(rkm, NULL);
    }
    env->version = env->type->version;
    if (header_str(hdrs, "ce_dataschema", buf, sizeof(buf))) {
        size_t plen = strlen(DATASCHEMA_PREFIX), nlen = strlen(env->type->name);
        char *end;
        if (strncmp(buf, DATASCHEMA_PREFIX, plen) || strncmp(buf + plen, env->type->name, nlen) ||
            buf[plen + nlen] != ':' || (env->version = (int)strtol(buf + plen + nlen + 1, &end, 10)) < 1 || *end)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "ce_dataschema header \"%s\" does not match %s%s:<n>",
                           buf, DATASCHEMA_PREFIX, env->type->name);
    }
    env->content = OL_CONTENT_AVRO;
    if (header_str(hdrs, "content-type", buf, sizeof(buf)) && !strncmp(buf, "application/json", 16))
        env->content = OL_CONTENT_JSON;
    if (env->content == OL_CONTENT_AVRO)
        return ol_codec_decode(codec, env->type, env->version, payload, rkm->len, value, errstr, errstr_size);
    ol_json_t *data;
    ol_err_t err = ol_json_parse(arena, payload, rkm->len, &data, errstr, errstr_size);
    if (err)
        return err;
    return decode_json_data(codec, env, data, value, errstr, errstr_size);
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

ol_err_t ol_event_encode(ol_codec_t *codec, const ol_event_type_t *et, const ol_json_t *data, int64_t time_ms,
                         const char *source, ol_event_out_t *out, char *errstr, size_t errstr_size) {
    ol_err_t err = ol_codec_encode(codec, et, data, time_ms, &out->payload, &out->len, errstr, errstr_size);
    if (err || (err = ol_codec_key(et, data, out->key, sizeof(out->key), errstr, errstr_size)))
        return err;
    ol_envelope_t env = {.type = et, .time_ms = time_ms, .content = OL_CONTENT_AVRO, .version = et->version};
    ol_uuid_v4(env.id);
    snprintf(env.source, sizeof(env.source), "%s", source);
    const ol_json_t *subject = ol_json_get(data, et->subject);
    snprintf(env.subject, sizeof(env.subject), "%s", subject && subject->type == OL_JSON_STRING ? subject->u.s : "");
    memcpy(out->id, env.id, sizeof(out->id));
    out->hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&env, out->hdrs);
    return OL_ERR_OK;
}
