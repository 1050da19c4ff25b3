#ifndef OL_COMMANDS_H
#define OL_COMMANDS_H

#include "common/base/cli.h"

/* Every subcommand of the orderlog binary, each defined by its role
 * (producers/, consumers/) or admin command (ops/admin/); only the entry
 * point (ops/admin/orderlog.c) lists them. */
extern const ol_cmd_t ol_cmd_publish, ol_cmd_loadgen, ol_cmd_gate;                 /* producers/ */
extern const ol_cmd_t ol_cmd_decide, ol_cmd_guard, ol_cmd_project, ol_cmd_rebuild, /* consumers/ */
    ol_cmd_tail;
extern const ol_cmd_t ol_cmd_status, ol_cmd_dlq, ol_cmd_topics, ol_cmd_migrate, ol_cmd_config; /* ops/admin/ */
extern const ol_cmd_t ol_cmd_schemas;                                                          /* ops/admin/ */

#endif
