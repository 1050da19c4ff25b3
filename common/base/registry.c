#include "common/base/registry.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/http.h"
#include "common/base/util.h"

#define CONTENT_TYPE "application/vnd.schemaregistry.v1+json"

struct ol_registry_s {
    char *url;     /* as given */
    char *address; /* host:port */
    char *base;    /* path before /subjects..., without a trailing '/'; may be "" */
    int timeout_ms;
};

ol_err_t ol_registry_new(const char *url, int timeout_ms, ol_registry_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    if (!url || !*url)
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "no schema registry URL (registry.url)");
    if (!strncmp(url, "https://", 8))
        return ol_errf(errstr, errstr_size, OL_ERR_UNSUPPORTED,
                       "schema registry URL \"%s\": https is not supported, only http://", url);
    if (strncmp(url, "http://", 7))
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "schema registry URL \"%s\": expected http://host:port[/path]", url);
    const char *host = url + 7, *slash = strchr(host, '/');
    size_t hlen = slash ? (size_t)(slash - host) : strlen(host);
    if (hlen == 0 || memchr(host, '@', hlen) || memchr(host, '?', hlen))
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "schema registry URL \"%s\": expected http://host:port[/path]", url);
    ol_registry_t *r = ol_xcalloc(1, sizeof(*r));
    r->url = ol_xstrdup(url);
    /* a port is needed by the client; an IPv6 literal ends with ']' */
    const char *last_colon = NULL;
    for (const char *p = host; p < host + hlen; p++)
        if (*p == ':')
            last_colon = p;
    bool has_port = last_colon && host[hlen - 1] != ']';
    size_t alen = hlen + (has_port ? 0 : 3);
    r->address = ol_xmalloc(alen + 1);
    snprintf(r->address, alen + 1, "%.*s%s", (int)hlen, host, has_port ? "" : ":80");
    const char *path = slash ? slash : "";
    size_t plen = strlen(path);
    while (plen && path[plen - 1] == '/')
        plen--;
    r->base = ol_xmalloc(plen + 1);
    memcpy(r->base, path, plen);
    r->base[plen] = '\0';
    if (strpbrk(r->base, "?# ")) {
        ol_registry_destroy(r);
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "schema registry URL \"%s\": no query, fragment or space allowed", url);
    }
    r->timeout_ms = timeout_ms;
    *out = r;
    return OL_ERR_OK;
}

void ol_registry_destroy(ol_registry_t *r) {
    if (!r)
        return;
    free(r->url);
    free(r->address);
    free(r->base);
    free(r);
}

const char *ol_registry_url(const ol_registry_t *r) {
    return r->url;
}

/* base + the parts, the subject percent-encoded: a new string. */
static char *path_of(const ol_registry_t *r, const char *before, const char *subject, const char *after) {
    size_t n = strlen(r->base) + strlen(before) + strlen(subject) * 3 + strlen(after) + 1;
    char *p = ol_xmalloc(n), *w = p;
    w += sprintf(w, "%s%s", r->base, before);
    for (const unsigned char *s = (const unsigned char *)subject; *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
            *s == '-' || *s == '_' || *s == '~')
            *w++ = (char)*s;
        else
            w += sprintf(w, "%%%02X", *s);
    }
    strcpy(w, after);
    return p;
}

/* The registry's own message in an error body ({"error_code":..,
 * "message":..}), else the start of the body. */
static void message_of(const ol_http_reply_t *reply, int *code, char *out, size_t out_size) {
    *code = 0;
    json_t *j = json_loadb(reply->body, reply->body_len, 0, NULL);
    const char *msg = NULL;
    if (json_is_object(j)) {
        json_t *c = json_object_get(j, "error_code");
        if (json_is_integer(c))
            *code = (int)json_integer_value(c);
        msg = json_string_value(json_object_get(j, "message"));
    }
    if (msg)
        snprintf(out, out_size, "%s", msg);
    else
        snprintf(out, out_size, "%.200s", reply->body_len ? reply->body : "(empty body)");
    for (char *p = out; *p; p++) /* one line */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    json_decref(j);
}

/* One request and its answer. */
typedef struct {
    const char *method;
    char *path;            /* owned */
    ol_http_reply_t reply; /* whatever its status below 500 */
    json_t *json;          /* the answer's body parsed (owned; NULL when it is not JSON) */
} exchange_t;

static void exchange_clear(exchange_t *x) {
    ol_http_reply_clear(&x->reply);
    json_decref(x->json);
    free(x->path);
}

/* One request; path (a new string) and body (may be NULL, sent as JSON)
 * are taken over. On OL_ERR_OK *x holds the answer, for exchange_clear;
 * on an error nothing is left to clear. */
static ol_err_t call(ol_registry_t *r, const char *method, char *path, json_t *body, exchange_t *x, char *errstr,
                     size_t errstr_size) {
    char why[512];
    *x = (exchange_t){.method = method, .path = path};
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        abort(); /* allocation failure */
    json_decref(body);
    ol_err_t err = ol_http_request(r->address, method, path, text ? CONTENT_TYPE : NULL, text, text ? strlen(text) : 0,
                                   r->timeout_ms, &x->reply, why, sizeof(why));
    free(text);
    if (err) {
        free(path);
        return ol_errf(errstr, errstr_size, err, "schema registry at %s: %s", r->url, why);
    }
    if (x->reply.status >= 500) {
        int code;
        message_of(&x->reply, &code, why, sizeof(why));
        err = ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "schema registry at %s: %s %s answered %d: %s", r->url,
                      method, path, x->reply.status, why);
        exchange_clear(x);
        return err;
    }
    x->json = json_loadb(x->reply.body, x->reply.body_len, 0, NULL);
    return OL_ERR_OK;
}

/* An answer the API does not give: an error naming what was asked. */
static ol_err_t unexpected(const ol_registry_t *r, const exchange_t *x, char *errstr, size_t errstr_size) {
    char why[512];
    int code;
    message_of(&x->reply, &code, why, sizeof(why));
    return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "schema registry at %s: %s %s answered %d: %s", r->url,
                   x->method, x->path, x->reply.status, why);
}

static json_t *schema_body(const char *schema) {
    json_t *b = json_pack("{s:s, s:s}", "schema", schema, "schemaType", "AVRO");
    if (!b)
        abort(); /* not UTF-8: the callers pass JSON texts already parsed */
    return b;
}

ol_err_t ol_registry_lookup(ol_registry_t *r, const char *subject, const char *schema, bool *found, int *id,
                            int *version, char *errstr, size_t errstr_size) {
    *found = false;
    exchange_t x;
    ol_err_t err = call(r, "POST", path_of(r, "/subjects/", subject, ""), schema_body(schema), &x, errstr, errstr_size);
    if (err)
        return err;
    if (x.reply.status == 404) { /* 40401 no such subject, 40403 no such schema under it */
        err = OL_ERR_OK;
    } else if (x.reply.status == 200 && json_is_integer(json_object_get(x.json, "id")) &&
               json_is_integer(json_object_get(x.json, "version"))) {
        *found = true;
        *id = (int)json_integer_value(json_object_get(x.json, "id"));
        *version = (int)json_integer_value(json_object_get(x.json, "version"));
    } else {
        err = unexpected(r, &x, errstr, errstr_size);
    }
    exchange_clear(&x);
    return err;
}

ol_err_t ol_registry_register(ol_registry_t *r, const char *subject, const char *schema, int *id, char *errstr,
                              size_t errstr_size) {
    char why[512];
    exchange_t x;
    ol_err_t err =
        call(r, "POST", path_of(r, "/subjects/", subject, "/versions"), schema_body(schema), &x, errstr, errstr_size);
    if (err)
        return err;
    if (x.reply.status == 200 && json_is_integer(json_object_get(x.json, "id"))) {
        *id = (int)json_integer_value(json_object_get(x.json, "id"));
    } else if (x.reply.status == 409 || x.reply.status == 422) {
        int code;
        message_of(&x.reply, &code, why, sizeof(why));
        err = ol_errf(errstr, errstr_size, OL_ERR_INVALID, "%s", why);
    } else {
        err = unexpected(r, &x, errstr, errstr_size);
    }
    exchange_clear(&x);
    return err;
}

ol_err_t ol_registry_set_compatibility(ol_registry_t *r, const char *subject, const char *level, char *errstr,
                                       size_t errstr_size) {
    exchange_t x;
    ol_err_t err = call(r, "PUT", path_of(r, "/config/", subject, ""), json_pack("{s:s}", "compatibility", level), &x,
                        errstr, errstr_size);
    if (err)
        return err;
    if (x.reply.status != 200)
        err = unexpected(r, &x, errstr, errstr_size);
    exchange_clear(&x);
    return err;
}

/* The reasons a verbose compatibility answer gives, "; "-separated:
 * Confluent's in "messages", Apicurio's maybe in "reason". */
static void reasons_of(const json_t *j, char *reason, size_t reason_size) {
    json_t *msgs = json_object_get(j, "messages");
    size_t i, used = 0;
    if (json_is_string(json_object_get(j, "reason")) && reason_size)
        used += (size_t)snprintf(reason, reason_size, "%s", json_string_value(json_object_get(j, "reason")));
    json_t *m;
    json_array_foreach(msgs, i, m) {
        if (json_is_string(m) && used < reason_size)
            used += (size_t)snprintf(reason + used, reason_size - used, "%s%s", used ? "; " : "", json_string_value(m));
    }
}

ol_err_t ol_registry_check(ol_registry_t *r, const char *subject, const char *schema, bool *registered,
                           bool *compatible, char *reason, size_t reason_size, char *errstr, size_t errstr_size) {
    *registered = true;
    *compatible = false;
    if (reason_size)
        reason[0] = '\0';
    /* verbose: Confluent's registry then says why in "messages" */
    exchange_t x;
    ol_err_t err = call(r, "POST", path_of(r, "/compatibility/subjects/", subject, "/versions/latest?verbose=true"),
                        schema_body(schema), &x, errstr, errstr_size);
    if (err)
        return err;
    json_t *is = json_object_get(x.json, "is_compatible");
    int code;
    if (x.reply.status == 404) { /* no such subject (40401) or no version yet (40402) */
        *registered = false;
        *compatible = true;
    } else if (x.reply.status == 200 && json_is_boolean(is)) {
        *compatible = json_is_true(is);
        reasons_of(x.json, reason, reason_size);
    } else if (x.reply.status == 409 || x.reply.status == 422) {
        /* some registries answer an incompatible schema with an error */
        message_of(&x.reply, &code, reason, reason_size);
    } else {
        err = unexpected(r, &x, errstr, errstr_size);
    }
    exchange_clear(&x);
    return err;
}

/* The answer's "schema" when it is 200 with one, else NULL (not found
 * when 404, else an error). */
static ol_err_t schema_of(ol_registry_t *r, const exchange_t *x, const char **text, char *errstr, size_t errstr_size) {
    *text = json_string_value(json_object_get(x->json, "schema"));
    if (x->reply.status == 200 && *text)
        return OL_ERR_OK;
    *text = NULL;
    return x->reply.status == 404 ? OL_ERR_OK : unexpected(r, x, errstr, errstr_size);
}

ol_err_t ol_registry_latest(ol_registry_t *r, const char *subject, char **schema, char *errstr, size_t errstr_size) {
    *schema = NULL;
    exchange_t x;
    const char *text;
    ol_err_t err = call(r, "GET", path_of(r, "/subjects/", subject, "/versions/latest"), NULL, &x, errstr, errstr_size);
    if (err)
        return err;
    err = schema_of(r, &x, &text, errstr, errstr_size);
    if (text)
        *schema = ol_xstrdup(text);
    exchange_clear(&x);
    return err;
}

ol_err_t ol_registry_schema_by_id(ol_registry_t *r, long long id, char **schema, char **type, char *errstr,
                                  size_t errstr_size) {
    *schema = *type = NULL;
    size_t n = strlen(r->base) + 64;
    char *path = ol_xmalloc(n);
    snprintf(path, n, "%s/schemas/ids/%lld", r->base, id);
    exchange_t x;
    const char *text;
    ol_err_t err = call(r, "GET", path, NULL, &x, errstr, errstr_size);
    if (err)
        return err;
    err = schema_of(r, &x, &text, errstr, errstr_size);
    const char *st = json_string_value(json_object_get(x.json, "schemaType"));
    if (text) {
        *schema = ol_xstrdup(text);
        *type = ol_xstrdup(st ? st : "AVRO");
    }
    exchange_clear(&x);
    return err;
}
