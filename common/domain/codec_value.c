/* Avro values to the codec's JSON forms: its own (ol_json_t, in an arena)
 * and jansson's. */
#include "common/domain/codec.h"

#include <string.h>

#include "common/base/time.h"
#include "common/base/util.h"

/* The codec's form of an Avro value, in the arena (for checks and resolution). */
void ol_codec__node_to_dom(ol_arena_t *a, const ol_node_t *n, avro_value_t *v, ol_json_t *out) {
    memset(out, 0, sizeof(*out));
    switch (n->kind) {
    case OL_NODE_STRING: {
        const char *s = "";
        size_t size = 0;
        avro_value_get_string(v, &s, &size);
        out->type = OL_JSON_STRING;
        out->len = size ? size - 1 : 0;
        out->u.s = s; /* borrowed from the value, which outlives the check */
        return;
    }
    case OL_NODE_INT: {
        int32_t i = 0;
        avro_value_get_int(v, &i);
        out->type = OL_JSON_INT;
        out->u.i = i;
        return;
    }
    case OL_NODE_LONG:
        out->type = OL_JSON_INT;
        avro_value_get_long(v, &out->u.i);
        return;
    case OL_NODE_BOOLEAN: {
        int b = 0;
        avro_value_get_boolean(v, &b);
        out->type = b ? OL_JSON_TRUE : OL_JSON_FALSE;
        return;
    }
    case OL_NODE_DOUBLE:
        out->type = OL_JSON_REAL;
        avro_value_get_double(v, &out->u.d);
        return;
    case OL_NODE_NULL:
        out->type = OL_JSON_NULL;
        return;
    case OL_NODE_ENUM: {
        int e = 0;
        avro_value_get_enum(v, &e);
        out->type = OL_JSON_STRING;
        out->u.s = e >= 0 && (size_t)e < n->nsymbols ? n->symbols[e] : "";
        out->len = strlen(out->u.s);
        return;
    }
    case OL_NODE_ARRAY: {
        size_t size = 0;
        avro_value_get_size(v, &size);
        out->type = OL_JSON_ARRAY;
        out->u.items = ol_arena_alloc(a, (size ? size : 1) * sizeof(ol_json_t));
        for (size_t i = 0; i < size; i++) {
            avro_value_t elem;
            if (!avro_value_get_by_index(v, i, &elem, NULL))
                ol_codec__node_to_dom(a, n->inner, &elem, &out->u.items[out->len++]);
        }
        return;
    }
    case OL_NODE_RECORD:
        out->type = OL_JSON_OBJECT;
        out->u.members = ol_arena_alloc(a, (n->nfields ? n->nfields : 1) * sizeof(ol_json_member_t));
        for (size_t i = 0; i < n->nfields; i++) {
            avro_value_t field;
            if (avro_value_get_by_index(v, i, &field, NULL))
                continue;
            ol_json_member_t *m = &out->u.members[out->len++];
            m->key = n->fields[i].name;
            m->key_len = strlen(m->key);
            ol_codec__node_to_dom(a, n->fields[i].type, &field, &m->value);
        }
        return;
    case OL_NODE_NULLABLE: {
        int disc = 0;
        avro_value_t branch;
        out->type = OL_JSON_NULL;
        if (!avro_value_get_discriminant(v, &disc) && disc == 1 && !avro_value_get_current_branch(v, &branch))
            ol_codec__node_to_dom(a, n->inner, &branch, out);
        return;
    }
    }
}

/* ---- Avro values to JSON ---------------------------------------------- */

json_t *ol_codec__node_to_json(const ol_node_t *n, avro_value_t *v) {
    switch (n->kind) {
    case OL_NODE_STRING: {
        const char *s;
        size_t size;
        if (avro_value_get_string(v, &s, &size))
            return json_null();
        return json_stringn(s, size ? size - 1 : 0);
    }
    case OL_NODE_INT: {
        int32_t i = 0;
        avro_value_get_int(v, &i);
        return json_integer(i);
    }
    case OL_NODE_LONG: {
        int64_t l = 0;
        avro_value_get_long(v, &l);
        if (n->timestamp) {
            char ts[40];
            ol_time_format(l, ts, sizeof(ts));
            return json_string(ts);
        }
        return json_integer(l);
    }
    case OL_NODE_BOOLEAN: {
        int b = 0;
        avro_value_get_boolean(v, &b);
        return json_boolean(b);
    }
    case OL_NODE_DOUBLE: {
        double d = 0;
        avro_value_get_double(v, &d);
        return json_real(d);
    }
    case OL_NODE_NULL:
        return json_null();
    case OL_NODE_ENUM: {
        int e = 0;
        avro_value_get_enum(v, &e);
        return e >= 0 && (size_t)e < n->nsymbols ? json_string(n->symbols[e]) : json_null();
    }
    case OL_NODE_ARRAY: {
        json_t *arr = json_array();
        size_t size = 0;
        avro_value_get_size(v, &size);
        for (size_t i = 0; i < size; i++) {
            avro_value_t elem;
            if (!avro_value_get_by_index(v, i, &elem, NULL))
                json_array_append_new(arr, ol_codec__node_to_json(n->inner, &elem));
        }
        return arr;
    }
    case OL_NODE_RECORD: {
        json_t *obj = json_object();
        for (size_t i = 0; i < n->nfields; i++) {
            avro_value_t field;
            if (!avro_value_get_by_index(v, i, &field, NULL))
                json_object_set_new(obj, n->fields[i].name, ol_codec__node_to_json(n->fields[i].type, &field));
        }
        return obj;
    }
    case OL_NODE_NULLABLE: {
        int disc = 0;
        avro_value_t branch;
        if (avro_value_get_discriminant(v, &disc) || disc != 1 || avro_value_get_current_branch(v, &branch))
            return json_null();
        return ol_codec__node_to_json(n->inner, &branch);
    }
    }
    return json_null();
}

static void dom_own_strings(ol_arena_t *a, ol_json_t *v) {
    switch (v->type) {
    case OL_JSON_STRING:
        v->u.s = ol_arena_strndup(a, v->u.s, v->len);
        break;
    case OL_JSON_ARRAY:
        for (size_t i = 0; i < v->len; i++)
            dom_own_strings(a, &v->u.items[i]);
        break;
    case OL_JSON_OBJECT:
        for (size_t i = 0; i < v->len; i++)
            dom_own_strings(a, &v->u.members[i].value);
        break;
    default:
        break;
    }
}

ol_json_t *ol_codec_to_dom(const ol_event_type_t *et, avro_value_t *value, ol_arena_t *arena) {
    ol_json_t *v = ol_arena_alloc(arena, sizeof(*v));
    ol_codec__node_to_dom(arena, et->root, value, v);
    dom_own_strings(arena, v); /* node_to_dom borrows them from the value */
    return v;
}

json_t *ol_codec_to_json(const ol_event_type_t *et, avro_value_t *value) {
    return ol_codec__node_to_json(et->root, value);
}
