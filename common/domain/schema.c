#include "common/domain/schema.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/domain/embedded.h"
#include "common/base/json.h"
#include "common/base/util.h"

/* Every topic, including the dlq and decide-snapshots, which carry no
 * event type of their own. */
static const char *const schema_topics[] = {"buy-requests", "skus", "sale-events",      "blacklist", "orders",
                                            "after-sales",  "dlq",  "decide-snapshots", NULL};

static ol_event_type_t **types;
static size_t ntypes;
static json_t **docs; /* parsed schema JSON, kept: nodes borrow strings from it */
static size_t ndocs;
static ol_arena_t *schema_arena; /* defaults in the codec's form; lives as long as the process */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char init_errstr[512];
static ol_err_t init_err;

const char *const *ol_schema_topics(void) {
    return schema_topics;
}

static ol_node_t *node_parse(json_t *j, char *errstr, size_t errstr_size);

/* Frees a node tree (its strings and defaults are borrowed: the schema JSON
 * and schema_arena keep them); NULL is fine. */
static void node_free(ol_node_t *n) {
    if (!n)
        return;
    for (size_t i = 0; n->fields && i < n->nfields; i++)
        node_free(n->fields[i].type);
    free(n->fields);
    free(n->symbols);
    node_free(n->inner);
    free(n);
}

/* node_parse's failure: n freed, NULL. */
static ol_node_t *node_fail(ol_node_t *n) {
    node_free(n);
    return NULL;
}

static ol_err_t field_parse(json_t *jf, ol_field_t *f, char *errstr, size_t errstr_size) {
    f->name = json_string_value(json_object_get(jf, "name"));
    if (!f->name)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "field without a name");
    if (!(f->type = node_parse(json_object_get(jf, "type"), errstr, errstr_size)))
        return OL_ERR_INVALID;
    f->def = json_object_get(jf, "default");
    if (f->def)
        f->dflt = ol_json_from_jansson(schema_arena, f->def);
    f->default_now = json_is_true(json_object_get(jf, "orderlog.defaultNow"));
    json_t *v;
    if ((v = json_object_get(jf, "orderlog.min"))) {
        f->has_min = true;
        f->min = json_integer_value(v);
    }
    if ((v = json_object_get(jf, "orderlog.max"))) {
        f->has_max = true;
        f->max = json_integer_value(v);
    }
    f->min_length = (int)json_integer_value(json_object_get(jf, "orderlog.minLength"));
    const char *fmt = json_string_value(json_object_get(jf, "orderlog.format"));
    if (fmt && !strcmp(fmt, "ip"))
        f->format = OL_FORMAT_IP;
    else if (fmt && !strcmp(fmt, "currency"))
        f->format = OL_FORMAT_CURRENCY;
    else if (fmt)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "field %s: unknown orderlog.format \"%s\"", f->name, fmt);
    return OL_ERR_OK;
}

static ol_node_t *node_parse(json_t *j, char *errstr, size_t errstr_size) {
    ol_node_t *n = ol_xcalloc(1, sizeof(*n));
    if (json_is_array(j)) {
        /* only the nullable union ["null", T] is used by the contract */
        if (json_array_size(j) != 2 || strcmp(json_string_value(json_array_get(j, 0)) ?: "", "null")) {
            ol_errf(errstr, errstr_size, OL_ERR_INVALID, "only [\"null\", T] unions are supported");
            return node_fail(n);
        }
        n->kind = OL_NODE_NULLABLE;
        n->inner = node_parse(json_array_get(j, 1), errstr, errstr_size);
        return n->inner ? n : node_fail(n);
    }
    const char *t = json_is_string(j) ? json_string_value(j) : json_string_value(json_object_get(j, "type"));
    if (!t) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "type without a name");
        return node_fail(n);
    }
    const char *logical = json_string_value(json_object_get(j, "logicalType"));
    n->name = json_string_value(json_object_get(j, "name"));
    if (!strcmp(t, "string"))
        n->kind = OL_NODE_STRING;
    else if (!strcmp(t, "int"))
        n->kind = OL_NODE_INT;
    else if (!strcmp(t, "long")) {
        n->kind = OL_NODE_LONG;
        n->timestamp = logical && !strcmp(logical, "timestamp-millis");
    } else if (!strcmp(t, "boolean"))
        n->kind = OL_NODE_BOOLEAN;
    else if (!strcmp(t, "double"))
        n->kind = OL_NODE_DOUBLE;
    else if (!strcmp(t, "null"))
        n->kind = OL_NODE_NULL;
    else if (!strcmp(t, "enum")) {
        json_t *syms = json_object_get(j, "symbols");
        n->kind = OL_NODE_ENUM;
        n->nsymbols = json_array_size(syms);
        n->symbols = ol_xcalloc(n->nsymbols, sizeof(*n->symbols));
        for (size_t i = 0; i < n->nsymbols; i++)
            n->symbols[i] = json_string_value(json_array_get(syms, i));
    } else if (!strcmp(t, "array")) {
        n->kind = OL_NODE_ARRAY;
        if (!(n->inner = node_parse(json_object_get(j, "items"), errstr, errstr_size)))
            return node_fail(n);
    } else if (!strcmp(t, "record")) {
        json_t *fields = json_object_get(j, "fields");
        n->kind = OL_NODE_RECORD;
        n->nfields = json_array_size(fields);
        n->fields = ol_xcalloc(n->nfields, sizeof(*n->fields));
        for (size_t i = 0; i < n->nfields; i++)
            if (field_parse(json_array_get(fields, i), &n->fields[i], errstr, errstr_size))
                return node_fail(n);
    } else {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "unsupported type \"%s\"", t);
        return node_fail(n);
    }
    return n;
}

static int type_cmp(const void *a, const void *b) {
    return strcmp((*(ol_event_type_t *const *)a)->name, (*(ol_event_type_t *const *)b)->name);
}

static ol_event_type_t *find_loaded(const char *name) {
    for (size_t i = 0; i < ntypes; i++)
        if (!strcmp(types[i]->name, name))
            return types[i];
    return NULL;
}

static json_t *load_doc(const ol_embedded_t *e, char *errstr, size_t errstr_size) {
    json_error_t jerr;
    json_t *doc = json_loadb(e->data, e->len, 0, &jerr);
    if (!doc) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "%s line %d: %s", e->path, jerr.line, jerr.text);
        return NULL;
    }
    docs = ol_xrealloc(docs, (ndocs + 1) * sizeof(*docs));
    docs[ndocs++] = doc;
    return doc;
}

static ol_err_t parse_avro(const ol_embedded_t *e, avro_schema_t *out, char *errstr, size_t errstr_size) {
    if (avro_schema_from_json_length(e->data, e->len, out))
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "%s: %s", e->path, avro_strerror());
    return OL_ERR_OK;
}

static void add_version(ol_event_type_t *et, int version, avro_schema_t schema, avro_value_iface_t *iface,
                        ol_node_t *root, const json_t *doc) {
    et->history = ol_xrealloc(et->history, (et->nhistory + 1) * sizeof(*et->history));
    et->history[et->nhistory++] = (ol_schema_version_t){version, schema, iface, root, doc};
}

/* The evolution rule: every field of the current version that the writer's
 * root lacks has a default. what names the writer in the error. */
static ol_err_t check_readable(const ol_event_type_t *et, const ol_node_t *root, const char *what, char *errstr,
                               size_t errstr_size) {
    for (size_t i = 0; i < et->root->nfields; i++) {
        const ol_field_t *f = &et->root->fields[i];
        size_t k;
        for (k = 0; k < root->nfields; k++)
            if (!strcmp(root->fields[k].name, f->name))
                break;
        if (k == root->nfields && !f->def && !f->default_now)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "field %s of version %d has no default, so %s cannot be read", f->name, et->version, what);
    }
    return OL_ERR_OK;
}

static ol_err_t load_all(char *errstr, size_t errstr_size) {
    ol_err_t err;
    /* current versions first: schemas/<Name>.avsc */
    for (const ol_embedded_t *e = ol_embedded_schemas; e->path; e++) {
        if (strncmp(e->path, "schemas/", 8) || strchr(e->path + 8, '/'))
            continue;
        json_t *doc = load_doc(e, errstr, errstr_size);
        if (!doc)
            return OL_ERR_INVALID;
        ol_event_type_t *et = ol_xcalloc(1, sizeof(*et));
        et->name = json_string_value(json_object_get(doc, "name"));
        et->topic = json_string_value(json_object_get(doc, "orderlog.topic"));
        et->key = json_string_value(json_object_get(doc, "orderlog.key"));
        et->subject = json_string_value(json_object_get(doc, "orderlog.subject"));
        et->doc = json_string_value(json_object_get(doc, "doc"));
        et->version = (int)json_integer_value(json_object_get(doc, "orderlog.version"));
        if (!et->name || !et->topic || !et->key || !et->subject || et->version < 1)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "%s: name, orderlog.version, orderlog.topic, orderlog.key and orderlog.subject "
                           "are required",
                           e->path);
        size_t n = strlen(et->name) + sizeof("orderlog.");
        char *ce = ol_xmalloc(n);
        snprintf(ce, n, "orderlog.%s", et->name);
        et->ce_type = ce;
        char *ds = ol_xmalloc(n + 40);
        snprintf(ds, n + 40, "urn:orderlog:schema:%s:%d", et->name, et->version);
        et->dataschema = ds;
        if (!(et->root = node_parse(doc, errstr, errstr_size)))
            return OL_ERR_INVALID;
        if ((err = parse_avro(e, &et->schema, errstr, errstr_size)))
            return err;
        et->iface = avro_generic_class_from_schema(et->schema);
        add_version(et, et->version, et->schema, et->iface, et->root, doc);
        types = ol_xrealloc(types, (ntypes + 1) * sizeof(*types));
        types[ntypes++] = et;
    }
    /* then older versions: schemas/history/<Name>.v<N>.avsc */
    for (const ol_embedded_t *e = ol_embedded_schemas; e->path; e++) {
        if (strncmp(e->path, "schemas/history/", 16))
            continue;
        json_t *doc = load_doc(e, errstr, errstr_size);
        if (!doc)
            return OL_ERR_INVALID;
        const char *name = json_string_value(json_object_get(doc, "name"));
        int version = (int)json_integer_value(json_object_get(doc, "orderlog.version"));
        ol_event_type_t *et = name ? find_loaded(name) : NULL;
        if (!et || version < 1 || version >= et->version)
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                           "%s: an older version (orderlog.version) of a current schema is expected", e->path);
        avro_schema_t schema;
        if ((err = parse_avro(e, &schema, errstr, errstr_size)))
            return err;
        ol_node_t *root = node_parse(doc, errstr, errstr_size);
        if (!root)
            return OL_ERR_INVALID;
        /* the evolution rule */
        char what[64], why[256];
        snprintf(what, sizeof(what), "version %d", version);
        if ((err = check_readable(et, root, what, why, sizeof(why))))
            return ol_errf(errstr, errstr_size, err, "%s: %s", e->path, why);
        add_version(et, version, schema, avro_generic_class_from_schema(schema), root, doc);
    }
    qsort(types, ntypes, sizeof(*types), type_cmp);
    for (size_t i = 0; i < ntypes; i++)
        types[i]->index = (int)i;
    return OL_ERR_OK;
}

static void init_run(void) {
    schema_arena = ol_arena_new(0);
    init_err = load_all(init_errstr, sizeof(init_errstr));
}

ol_err_t ol_schema_init(char *errstr, size_t errstr_size) {
    pthread_once(&init_once, init_run);
    if (init_err)
        ol_errf(errstr, errstr_size, init_err, "%s", init_errstr);
    return init_err;
}

const ol_event_type_t *const *ol_schema_types(size_t *count) {
    *count = ntypes;
    return (const ol_event_type_t *const *)types;
}

const ol_event_type_t *ol_schema_find(const char *name) {
    return ol_schema_findn(name, strlen(name));
}

const ol_event_type_t *ol_schema_findn(const char *name, size_t len) {
    if (len >= 9 && !memcmp(name, "orderlog.", 9)) {
        name += 9;
        len -= 9;
    }
    size_t lo = 0, hi = ntypes;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        size_t tlen = strlen(types[mid]->name);
        int c = memcmp(name, types[mid]->name, len < tlen ? len : tlen);
        if (c == 0)
            c = (len > tlen) - (len < tlen);
        if (c == 0)
            return types[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const ol_schema_version_t *ol_schema_version(const ol_event_type_t *et, int version) {
    for (size_t i = 0; i < et->nhistory; i++)
        if (et->history[i].version == version)
            return &et->history[i];
    return NULL;
}

/* Writers' schemas parsed so far are appended to the schema arena and the
 * docs, which the loader owns alone: one at a time. */
static pthread_mutex_t writer_lock = PTHREAD_MUTEX_INITIALIZER;
static ol_schema_version_t **writers; /* ol_schema_writer's, under writer_lock */
static size_t nwriters;

ol_err_t ol_schema_writer(const char *text, size_t len, const ol_event_type_t **et, const ol_schema_version_t **out,
                          char *errstr, size_t errstr_size) {
    *et = NULL;
    *out = NULL;
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    if (!doc)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "the schema is not JSON (%s)", jerr.text);
    ol_err_t err = OL_ERR_INVALID;
    const char *type = json_string_value(json_object_get(doc, "type"));
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *ns = json_string_value(json_object_get(doc, "namespace"));
    if (!json_is_object(doc) || !type || strcmp(type, "record") || !name) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                "the schema is not an Avro record, so not one of orderlog's events");
        goto out;
    }
    char full[256];
    snprintf(full, sizeof(full), "%s%s%s", strchr(name, '.') || !ns || !*ns ? "" : ns,
             strchr(name, '.') || !ns || !*ns ? "" : ".", name);
    const ol_event_type_t *t = strncmp(full, "orderlog.", 9) ? NULL : ol_schema_find(full);
    if (!t) {
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "record %.128s is not one of orderlog's events", full);
        goto out;
    }
    for (size_t i = 0; i < t->nhistory; i++) {
        if (json_equal(doc, (json_t *)t->history[i].doc)) {
            *et = t;
            *out = &t->history[i];
            err = OL_ERR_OK;
            goto out;
        }
    }
    char why[256];
    pthread_mutex_lock(&writer_lock);
    ol_node_t *root = node_parse(doc, why, sizeof(why));
    avro_schema_t schema = NULL;
    if (!root)
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "record %s: %s", full, why);
    else if (check_readable(t, root, "this schema", why, sizeof(why)))
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "record %s: %s", full, why);
    else if (avro_schema_from_json_length(text, len, &schema))
        ol_errf(errstr, errstr_size, OL_ERR_INVALID, "record %s: not a valid Avro schema: %s", full, avro_strerror());
    else {
        ol_schema_version_t *sv = ol_xcalloc(1, sizeof(*sv));
        *sv = (ol_schema_version_t){0, schema, avro_generic_class_from_schema(schema), root, doc};
        docs = ol_xrealloc(docs, (ndocs + 1) * sizeof(*docs));
        docs[ndocs++] = doc; /* the nodes borrow from it */
        writers = ol_xrealloc(writers, (nwriters + 1) * sizeof(*writers));
        writers[nwriters++] = sv; /* kept for the life of the process */
        doc = NULL;
        root = NULL;
        *et = t;
        *out = sv;
        err = OL_ERR_OK;
    }
    node_free(root); /* a schema refused */
    pthread_mutex_unlock(&writer_lock);
out:
    json_decref(doc);
    return err;
}

char *ol_schema_registry_text(const char *text, size_t len) {
    while (len && strchr(" \t\r\n", text[0])) {
        text++;
        len--;
    }
    while (len && strchr(" \t\r\n", text[len - 1]))
        len--;
    return ol_xstrndup(text, len);
}
