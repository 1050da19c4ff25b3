#include "common/base/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int ol_cli_usage_error(const ol_cmd_t *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "orderlog %s: ", cmd->name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see orderlog %s --help)\n", cmd->name);
    return OL_EXIT_USAGE;
}

int ol_cli_help_asked(const ol_cmd_t *cmd, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("orderlog %s: %s\n\n%s\nCommon options: -X name=value (any property, see `orderlog config "
                   "--list`), --config FILE\n",
                   cmd->name, cmd->summary, cmd->usage);
            return 1;
        }
    }
    return 0;
}

int ol_cli_flag_only(const ol_cmd_t *cmd, int argc, char **argv, const char *flag, bool *given) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], flag))
            return ol_cli_usage_error(cmd, "unknown option \"%s\"", argv[i]);
        *given = true;
    }
    return OL_EXIT_OK;
}
