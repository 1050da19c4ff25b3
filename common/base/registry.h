#ifndef OL_REGISTRY_H
#define OL_REGISTRY_H

/* A client of a schema registry's Confluent-compatible REST API (Confluent
 * Schema Registry, or Apicurio Registry at /apis/ccompat/v6): subjects,
 * versions, compatibility rules. Knows nothing of orderlog's events: it
 * takes subjects and schema texts.
 *
 * One request per connection (common/base/http.h), plain http:// only,
 * each request bounded by the timeout given at creation. Errors name the
 * registry's URL: OL_ERR_UNREACHABLE (nothing answers, or a 5xx),
 * OL_ERR_TIMEOUT, OL_ERR_INVALID (an answer that is not the API's),
 * OL_ERR_CONFIG (a bad URL). A client is read-only once made: threads may
 * share one. */

#include <stdbool.h>
#include <stddef.h>

#include "common/base/err.h"

typedef struct ol_registry_s ol_registry_t;

/* The compatibility levels the API knows, as it spells them. */
#define OL_REGISTRY_LEVELS "BACKWARD,BACKWARD_TRANSITIVE,FORWARD,FORWARD_TRANSITIVE,FULL,FULL_TRANSITIVE,NONE"

/* url: http://host:port[/base path], e.g.
 * http://127.0.0.1:18091/apis/ccompat/v6. *out stays NULL on failure. */
ol_err_t ol_registry_new(const char *url, int timeout_ms, ol_registry_t **out, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));
void ol_registry_destroy(ol_registry_t *r);
/* The URL as given (borrowed). */
const char *ol_registry_url(const ol_registry_t *r);

/* Where schema is registered under subject (POST /subjects/{subject}):
 * *found false when the subject or that schema is not there; else *id and
 * *version are set. */
ol_err_t ol_registry_lookup(ol_registry_t *r, const char *subject, const char *schema, bool *found, int *id,
                            int *version, char *errstr, size_t errstr_size) __attribute__((warn_unused_result));

/* Registers schema (Avro) under subject as its next version, or finds it
 * registered already (POST /subjects/{subject}/versions): *id set. A schema
 * the subject's compatibility rule refuses is OL_ERR_INVALID with the
 * registry's reason in errstr. */
ol_err_t ol_registry_register(ol_registry_t *r, const char *subject, const char *schema, int *id, char *errstr,
                              size_t errstr_size) __attribute__((warn_unused_result));

/* Sets subject's compatibility rule (PUT /config/{subject}); level one of
 * OL_REGISTRY_LEVELS. */
ol_err_t ol_registry_set_compatibility(ol_registry_t *r, const char *subject, const char *level, char *errstr,
                                       size_t errstr_size) __attribute__((warn_unused_result));

/* Whether schema may be registered next under subject by its rule (POST
 * /compatibility/subjects/{subject}/versions/latest). *registered false
 * when the subject has no version yet (then *compatible is true: anything
 * may start it). When not compatible, reason gets what the registry said
 * (possibly empty). */
ol_err_t ol_registry_check(ol_registry_t *r, const char *subject, const char *schema, bool *registered,
                           bool *compatible, char *reason, size_t reason_size, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

/* The schema of id (GET /schemas/ids/{id}): *schema its text (new: free
 * it), NULL when the registry knows no such id; *type (new, free it) the
 * schemaType it gives ("AVRO" when it gives none: the API's default). */
ol_err_t ol_registry_schema_by_id(ol_registry_t *r, long long id, char **schema, char **type, char *errstr,
                                  size_t errstr_size) __attribute__((warn_unused_result));

/* The schema text of subject's latest version (GET
 * /subjects/{subject}/versions/latest): *schema new (free it), NULL when the
 * subject has no version. */
ol_err_t ol_registry_latest(ol_registry_t *r, const char *subject, char **schema, char *errstr, size_t errstr_size)
    __attribute__((warn_unused_result));

#endif
