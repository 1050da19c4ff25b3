/* The orderlog binary: global options, configuration, then a subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/admin/commands.h"
#include "common/base/log.h"
#include "common/base/redact.h"
#include "common/domain/properties.h"
#include "common/domain/wire.h"

extern char **environ;

static const ol_cmd_t *const commands[] = {
    &ol_cmd_publish, &ol_cmd_tail,    &ol_cmd_decide,  &ol_cmd_loadgen, &ol_cmd_guard,
    &ol_cmd_gate,    &ol_cmd_project, &ol_cmd_rebuild, &ol_cmd_status,  &ol_cmd_dlq,
    &ol_cmd_topics,  &ol_cmd_migrate, &ol_cmd_config,  &ol_cmd_schemas, NULL};

static void usage(FILE *fp) {
    fprintf(fp, "usage: orderlog <command> [options]\n\nA Kafka-driven, event-sourced order backend.\n\n"
                "commands:\n");
    for (int i = 0; commands[i]; i++)
        fprintf(fp, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(fp, "\noptions anywhere on the line:\n"
                "  -X name=value   set a property (flags > ORDERLOG_* environment > config file > default)\n"
                "  --config FILE   read properties from FILE (also ORDERLOG_CONFIG)\n"
                "`orderlog <command> --help` shows a command's options.\n");
}

int main(int argc, char **argv) {
    char errstr[512];
    const char *config_file = getenv("ORDERLOG_CONFIG");
    /* Pull the global options out, wherever they are, keeping the rest in
     * order for the command; -X values are applied after file and env. */
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    char **sets = calloc((size_t)argc + 1, sizeof(*sets));
    int nrest = 0, nsets = 0, rc = OL_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            while (i < argc)
                rest[nrest++] = argv[i++];
            break;
        }
        if ((!strcmp(a, "-X") || !strcmp(a, "--set") || !strcmp(a, "--config")) && i + 1 >= argc) {
            fprintf(stderr, "orderlog: option %s needs a value\n", a);
            goto out;
        }
        if (!strcmp(a, "-X") || !strcmp(a, "--set"))
            sets[nsets++] = argv[++i];
        else if (!strncmp(a, "-X", 2))
            sets[nsets++] = argv[i] + 2;
        else if (!strcmp(a, "--config"))
            config_file = argv[++i];
        else if (!strncmp(a, "--config=", 9))
            config_file = a + 9;
        else
            rest[nrest++] = argv[i];
    }
    if (nrest == 0 || !strcmp(rest[0], "-h") || !strcmp(rest[0], "--help") || !strcmp(rest[0], "help")) {
        usage(nrest ? stdout : stderr);
        rc = nrest ? OL_EXIT_OK : OL_EXIT_USAGE;
        goto out;
    }
    if (!strcmp(rest[0], "--version") || !strcmp(rest[0], "version")) {
        printf("orderlog %s\n", OL_VERSION);
        rc = OL_EXIT_OK;
        goto out;
    }
    const ol_cmd_t *cmd = NULL;
    for (int i = 0; commands[i]; i++)
        if (!strcmp(commands[i]->name, rest[0]))
            cmd = commands[i];
    if (!cmd) {
        fprintf(stderr, "orderlog: unknown command \"%s\"\n\n", rest[0]);
        usage(stderr);
        goto out;
    }
    ol_conf_t *conf = ol_conf_new();
    if ((config_file && ol_conf_load_file(conf, config_file, errstr, sizeof(errstr))) ||
        ol_conf_load_env(conf, environ, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog: %s\n", errstr);
        ol_conf_destroy(conf);
        goto out;
    }
    for (int i = 0; i < nsets; i++) {
        char *eq = strchr(sets[i], '=');
        if (!eq) {
            /* only the name: the rest may be a value with a typo for "=" */
            int n = (int)strspn(sets[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-");
            fprintf(stderr, "orderlog: -X %.*s%s: expected name=value\n", n, sets[i], sets[i][n] ? "..." : "");
            ol_conf_destroy(conf);
            goto out;
        }
        *eq = '\0';
        if (ol_conf_set(conf, sets[i], eq + 1, errstr, sizeof(errstr))) {
            fprintf(stderr, "orderlog: -X: %s\n", errstr);
            ol_conf_destroy(conf);
            goto out;
        }
    }
    ol_log_init(cmd->name, (ol_log_level_t)ol_log_level_parse(ol_conf_str(conf, "log.level")));
    ol_redact_remember(conf); /* before any thread; kept to the end (threads may log while exiting) */
    ol_wire_init(conf);       /* before any thread: where framed records' schemas are fetched */
    if (ol_cli_help_asked(cmd, nrest, rest))
        rc = OL_EXIT_OK;
    else
        rc = cmd->run(conf, nrest, rest);
    ol_conf_destroy(conf);
out:
    free(rest);
    free(sets);
    return rc;
}
