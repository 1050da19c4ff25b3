#include "common/domain/wire.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/registry.h"
#include "common/base/util.h"
#include "common/domain/embedded.h"

/* What a schema id turned out to be: readable (et, sv) or not (reason). */
typedef struct entry_s {
    uint32_t id;
    const ol_event_type_t *et;
    const ol_schema_version_t *sv;
    char *reason; /* NULL when readable */
} entry_t;

static struct {
    char *url;
    int timeout_ms;
    char *prefix;
    bool confluent;     /* event.format */
    bool writing;       /* ol_wire_prepare done with confluent */
    uint32_t *ids;      /* writing: by ol_event_type_t.index */
    char **dataschemas; /* writing: ol_wire_dataschema of ids[i], made once */
    size_t ntypes;
    /* read side */
    pthread_rwlock_t lock;
    entry_t *entries;
    size_t n, cap;
    pthread_mutex_t fetch; /* one fetch at a time: each id asked once */
} wire = {.lock = PTHREAD_RWLOCK_INITIALIZER, .fetch = PTHREAD_MUTEX_INITIALIZER};

static void free_written(void) {
    for (size_t i = 0; i < wire.ntypes; i++)
        free(wire.dataschemas[i]);
    free(wire.dataschemas);
    free(wire.ids);
    wire.dataschemas = NULL;
    wire.ids = NULL;
    wire.ntypes = 0;
}

void ol_wire_reset(void) {
    for (size_t i = 0; i < wire.n; i++)
        free(wire.entries[i].reason);
    free(wire.entries);
    wire.entries = NULL;
    wire.n = wire.cap = 0;
    free(wire.url);
    free(wire.prefix);
    free_written();
    wire.url = wire.prefix = NULL;
    wire.confluent = wire.writing = false;
}

void ol_wire_init(const ol_conf_t *conf) {
    ol_wire_reset();
    wire.url = ol_xstrdup(ol_conf_str(conf, "registry.url"));
    wire.timeout_ms = (int)ol_conf_int(conf, "registry.timeout.ms");
    wire.prefix = ol_xstrdup(ol_conf_str(conf, "topic.prefix"));
    wire.confluent = !strcmp(ol_conf_str(conf, "event.format"), "confluent");
}

bool ol_wire_framed(const void *value, size_t len, uint32_t *id) {
    const unsigned char *p = value;
    if (len < OL_WIRE_HEADER_BYTES || p[0] != 0)
        return false;
    *id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    return true;
}

bool ol_wire_writing(void) {
    return wire.writing;
}

uint32_t ol_wire_id(const ol_event_type_t *et) {
    OL_ASSERT(wire.writing);
    return wire.ids[et->index];
}

static void format_dataschema(uint32_t id, char *out, size_t out_size) {
    size_t n = wire.url ? strlen(wire.url) : 0;
    while (n && wire.url[n - 1] == '/')
        n--;
    snprintf(out, out_size, "%.*s/schemas/ids/%lu", (int)n, wire.url ? wire.url : "", (unsigned long)id);
}

const char *ol_wire_dataschema(const ol_event_type_t *et, uint32_t id, char *buf, size_t buf_size) {
    if (wire.writing && et && et->index >= 0 && (size_t)et->index < wire.ntypes && wire.ids[et->index] == id)
        return wire.dataschemas[et->index];
    format_dataschema(id, buf, buf_size);
    return buf;
}

/* et's compiled-in schema file as `orderlog schemas register` registers it
 * (ol_schema_registry_text). */
static char *schema_text(const ol_event_type_t *et) {
    char path[256];
    snprintf(path, sizeof(path), "schemas/%s.avsc", et->name);
    for (const ol_embedded_t *e = ol_embedded_schemas; e->path; e++)
        if (!strcmp(e->path, path))
            return ol_schema_registry_text(e->data, e->len);
    return NULL;
}

ol_err_t ol_wire_prepare(char *errstr, size_t errstr_size) {
    wire.writing = false;
    if (!wire.confluent)
        return OL_ERR_OK;
    ol_registry_t *r;
    ol_err_t err = ol_registry_new(wire.url, wire.timeout_ms, &r, errstr, errstr_size);
    if (err)
        return err;
    size_t n;
    const ol_event_type_t *const *types = ol_schema_types(&n);
    free_written();
    wire.ids = ol_xcalloc(n, sizeof(*wire.ids));
    wire.dataschemas = ol_xcalloc(n, sizeof(*wire.dataschemas));
    wire.ntypes = n;
    for (size_t i = 0; i < n && !err; i++) {
        const ol_event_type_t *et = types[i];
        char subject[512], why[512];
        snprintf(subject, sizeof(subject), "%s%s-%s", wire.prefix, et->topic, et->ce_type);
        char *text = schema_text(et);
        OL_ASSERT(text);
        bool found;
        int id, version;
        err = ol_registry_lookup(r, subject, text, &found, &id, &version, why, sizeof(why));
        if (!err && !found)
            err = ol_registry_register(r, subject, text, &id, why, sizeof(why));
        if (err)
            ol_errf(errstr, errstr_size, err, "event.format confluent: the schema of %s under subject %s: %s", et->name,
                    subject, why);
        else if (id < 0)
            err = ol_errf(errstr, errstr_size, OL_ERR_INVALID,
                          "event.format confluent: the schema registry gave %s the id %d", et->name, id);
        else {
            char ds[600];
            wire.ids[et->index] = (uint32_t)id;
            format_dataschema((uint32_t)id, ds, sizeof(ds));
            wire.dataschemas[et->index] = ol_xstrdup(ds);
        }
        free(text);
    }
    ol_registry_destroy(r);
    wire.writing = !err;
    return err;
}

static const entry_t *find(uint32_t id) {
    for (size_t i = 0; i < wire.n; i++)
        if (wire.entries[i].id == id)
            return &wire.entries[i];
    return NULL;
}

static ol_err_t answer(const entry_t *e, const ol_event_type_t **et, const ol_schema_version_t **sv, char *errstr,
                       size_t errstr_size) {
    if (e->reason)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "%s", e->reason);
    *et = e->et;
    *sv = e->sv;
    return OL_ERR_OK;
}

/* Asks the registry for id: OL_ERR_OK with e filled (readable or with its
 * reason, which never changes), OL_ERR_NOT_FOUND when the registry knows
 * no such id (not kept: it may be registered yet), or the registry's error. */
static ol_err_t fetch(uint32_t id, entry_t *e, char *errstr, size_t errstr_size) {
    ol_registry_t *r;
    char why[512];
    ol_err_t err = ol_registry_new(wire.url, wire.timeout_ms, &r, why, sizeof(why));
    if (err) /* a bad registry.url: records wait for the configuration to be fixed */
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "registry.url: %s", why);
    char *schema = NULL, *type = NULL;
    err = ol_registry_schema_by_id(r, id, &schema, &type, errstr, errstr_size);
    ol_registry_destroy(r);
    if (err == OL_ERR_INVALID) /* an answer that is not the API's: the registry is not well */
        err = OL_ERR_UNREACHABLE;
    if (err)
        return err;
    if (!schema)
        return ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND, "the schema registry at %s knows no such id", wire.url);
    memset(e, 0, sizeof(*e));
    e->id = id;
    if (strcmp(type, "AVRO")) {
        snprintf(why, sizeof(why), "a %.64s schema, not Avro: orderlog reads Avro only", type);
        e->reason = ol_xstrdup(why);
    } else if (ol_schema_writer(schema, strlen(schema), &e->et, &e->sv, why, sizeof(why))) {
        e->reason = ol_xstrdup(why);
    }
    free(schema);
    free(type);
    return OL_ERR_OK;
}

ol_err_t ol_wire_writer(uint32_t id, const ol_event_type_t **et, const ol_schema_version_t **sv, char *errstr,
                        size_t errstr_size) {
    *et = NULL;
    *sv = NULL;
    pthread_rwlock_rdlock(&wire.lock);
    const entry_t *e = find(id);
    ol_err_t err = e ? answer(e, et, sv, errstr, errstr_size) : OL_ERR_OK;
    pthread_rwlock_unlock(&wire.lock);
    if (e)
        return err;
    pthread_mutex_lock(&wire.fetch);
    pthread_rwlock_rdlock(&wire.lock);
    e = find(id); /* another thread may have asked meanwhile */
    if (e)
        err = answer(e, et, sv, errstr, errstr_size);
    pthread_rwlock_unlock(&wire.lock);
    if (!e) {
        entry_t got;
        err = fetch(id, &got, errstr, errstr_size);
        if (err == OL_ERR_NOT_FOUND)
            err = OL_ERR_INVALID;
        else if (!err) {
            pthread_rwlock_wrlock(&wire.lock);
            if (wire.n == wire.cap) {
                wire.cap = wire.cap ? wire.cap * 2 : 16;
                wire.entries = ol_xrealloc(wire.entries, wire.cap * sizeof(*wire.entries));
            }
            wire.entries[wire.n++] = got;
            err = answer(&got, et, sv, errstr, errstr_size);
            pthread_rwlock_unlock(&wire.lock);
        }
    }
    pthread_mutex_unlock(&wire.fetch);
    return err;
}
