#ifndef OL_CONF_H
#define OL_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/base/err.h"

/* Configuration: one table of properties drives parsing, validation,
 * --help, docs/configuration.md and ops/orderlog.conf.sample. This is the
 * machinery, knowing no property; the table of every role's properties is
 * the domain's (common/domain/properties.h, ol_conf_new).
 *
 * Sources, later wins: defaults < file (--config FILE or ORDERLOG_CONFIG)
 * < environment (ORDERLOG_<NAME>, dots as underscores, upper case)
 * < flags (-X name=value).
 * Every "kafka.<prop>" is handed to librdkafka as "<prop>" (checked there);
 * "pg.conninfo" goes to libpq. Not thread-safe while being set; read-only
 * (and so shareable between threads) afterwards. */

typedef enum ol_conf_type_e { OL_CONF_STR, OL_CONF_INT, OL_CONF_BOOL, OL_CONF_ENUM } ol_conf_type_t;

typedef struct ol_conf_prop_s {
    const char *name;
    ol_conf_type_t type;
    const char *def;   /* default as text */
    int64_t min, max;  /* OL_CONF_INT range, inclusive */
    const char *enums; /* OL_CONF_ENUM: "a,b,c" */
    const char *help;
} ol_conf_prop_t;

typedef struct ol_conf_s ol_conf_t;

/* New configuration over props (borrowed, ending with a NULL name; it must
 * outlive the configuration: a static table), holding its defaults; never
 * NULL. */
ol_conf_t *ol_conf_new_from(const ol_conf_prop_t *props);
void ol_conf_destroy(ol_conf_t *conf);
/* A copy of conf, to change for a part of the work (rebuild's shadow schema). */
ol_conf_t *ol_conf_dup(const ol_conf_t *conf);

/* Sets one property from text, validating it. Unknown names are refused,
 * except kafka.* which librdkafka validates later. */
ol_err_t ol_conf_set(ol_conf_t *conf, const char *name, const char *value, char *errstr, size_t errstr_size);
/* "name = value" lines, '#' comments; errors name the file and the line. */
ol_err_t ol_conf_load_file(ol_conf_t *conf, const char *path, char *errstr, size_t errstr_size);
/* Reads ORDERLOG_* variables from envp (NULL-terminated, like environ). */
ol_err_t ol_conf_load_env(ol_conf_t *conf, char *const *envp, char *errstr, size_t errstr_size);

/* Accessors abort on a name missing from the table (a programming error).
 * Returned strings are borrowed, valid until the property is set again. */
const char *ol_conf_str(const ol_conf_t *conf, const char *name);
int64_t ol_conf_int(const ol_conf_t *conf, const char *name);
bool ol_conf_bool(const ol_conf_t *conf, const char *name);

/* Calls fn for every kafka.* property that is set (defaults included),
 * with the "kafka." prefix removed. Stops and returns fn's first non-zero. */
int ol_conf_foreach_kafka(const ol_conf_t *conf, int (*fn)(void *opaque, const char *name, const char *value),
                          void *opaque);

/* The property table conf was made over (borrowed). */
const ol_conf_prop_t *ol_conf_table(const ol_conf_t *conf);
/* Generated documentation of a table: the sample config file, and the
 * markdown table of docs/configuration.md and README.md. */
void ol_conf_table_write_sample(const ol_conf_prop_t *props, FILE *fp);
void ol_conf_table_write_markdown(const ol_conf_prop_t *props, FILE *fp);

#endif
