#ifndef OL_CLI_H
#define OL_CLI_H

#include <stdbool.h>

#include "common/base/conf.h"

/* A subcommand of a binary: a thin main over the libraries.
 * run gets the loaded configuration (read-only) and its own arguments
 * (argv[0] is the command name); it returns the process exit status:
 * 0 success, 1 failure of the work, 2 bad usage or configuration. */
typedef struct ol_cmd_s {
    const char *name;
    int (*run)(const ol_conf_t *conf, int argc, char **argv);
    const char *summary;
    const char *usage; /* options, one per line, printed by --help */
} ol_cmd_t;

#define OL_EXIT_OK 0
#define OL_EXIT_FAIL 1
#define OL_EXIT_USAGE 2

/* Prints "orderlog <cmd>: <message>" on stderr and returns OL_EXIT_USAGE. */
int ol_cli_usage_error(const ol_cmd_t *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when argv holds -h or --help; prints the command's help then. */
int ol_cli_help_asked(const ol_cmd_t *cmd, int argc, char **argv);
/* The arguments of a command whose one option is flag: sets *given when it
 * is there; anything else is a usage error (printed, OL_EXIT_USAGE). */
int ol_cli_flag_only(const ol_cmd_t *cmd, int argc, char **argv, const char *flag, bool *given);

#endif
