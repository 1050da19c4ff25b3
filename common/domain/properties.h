#ifndef OL_PROPERTIES_H
#define OL_PROPERTIES_H

#include <stdio.h>

#include "common/base/conf.h"

/* The table of every role's properties (common/domain/properties.c): the
 * one place a property is declared, with its unit in its name, type, range,
 * default and help. The machinery that parses, validates and documents it
 * is common/base/conf.h; these are that machinery over this table. */

/* New configuration holding the defaults of every property; never NULL. */
ol_conf_t *ol_conf_new(void);
/* The table, ending with a NULL name (static). */
const ol_conf_prop_t *ol_conf_props(void);
/* Generated documentation: ops/orderlog.conf.sample, and the table of
 * docs/configuration.md and README.md (ops/gen-docs). */
void ol_conf_write_sample(FILE *fp);
void ol_conf_write_markdown(FILE *fp);

#endif
