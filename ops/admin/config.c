/* orderlog config: shows the configuration and writes its generated docs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/base/kafka.h"
#include "common/base/redact.h"
#include "common/domain/properties.h"

static void show(const char *name, const char *value) {
    char *shown = ol_redact_value(name, value);
    printf("%s = %s\n", name, shown);
    free(shown);
}

/* kafka.* properties beyond the table's (the user's, for librdkafka) */
static int show_kafka(void *opaque, const char *name, const char *value) {
    (void)opaque;
    char full[256];
    snprintf(full, sizeof(full), "kafka.%s", name);
    for (const ol_conf_prop_t *p = ol_conf_props(); p->name; p++)
        if (!strcmp(p->name, full))
            return 0;
    show(full, value);
    return 0;
}

static int config_run(const ol_conf_t *conf, int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "--show";
    if (!strcmp(what, "--profile")) {
        if (argc == 2) {
            for (int i = 0; i < OL_KAFKA_NPROFILES; i++)
                printf("%s\n", ol_kafka_profile_name((ol_kafka_profile_t)i));
            return OL_EXIT_OK;
        }
        int profile = argc == 3 ? ol_kafka_profile_find(argv[2]) : -1;
        if (profile < 0)
            return ol_cli_usage_error(&ol_cmd_config, "--profile takes one of producer, txn-producer, consumer, "
                                                      "reader, admin");
        ol_kafka_profile_write(conf, (ol_kafka_profile_t)profile, stdout);
        return OL_EXIT_OK;
    }
    if (argc > 2)
        return ol_cli_usage_error(&ol_cmd_config, "one option at a time");
    if (!strcmp(what, "--sample")) {
        ol_conf_write_sample(stdout);
    } else if (!strcmp(what, "--markdown")) {
        ol_conf_write_markdown(stdout);
    } else if (!strcmp(what, "--list")) {
        for (const ol_conf_prop_t *p = ol_conf_props(); p->name; p++)
            printf("%-28s %s\n", p->name, p->help);
    } else if (!strcmp(what, "--show")) {
        for (const ol_conf_prop_t *p = ol_conf_props(); p->name; p++) {
            if (p->type == OL_CONF_INT)
                printf("%s = %lld\n", p->name, (long long)ol_conf_int(conf, p->name));
            else if (p->type == OL_CONF_BOOL)
                printf("%s = %s\n", p->name, ol_conf_bool(conf, p->name) ? "true" : "false");
            else
                show(p->name, ol_conf_str(conf, p->name));
        }
        ol_conf_foreach_kafka(conf, show_kafka, NULL);
    } else {
        return ol_cli_usage_error(&ol_cmd_config, "unknown option \"%s\"", what);
    }
    return OL_EXIT_OK;
}

const ol_cmd_t ol_cmd_config = {"config", config_run,
                                "show the effective configuration, or write its generated reference",
                                "  --show       every property with its effective value (default), then the kafka.*\n"
                                "               properties set for librdkafka; secrets shown as ***\n"
                                "  --list       every property with its description\n"
                                "  --sample     a commented sample config file (ops/orderlog.conf.sample)\n"
                                "  --markdown   the reference table (docs/configuration.md)\n"
                                "  --profile [NAME]  the librdkafka properties of a Kafka client profile (producer,\n"
                                "               txn-producer, consumer, reader, admin) with the kafka.* overrides\n"
                                "               (secrets shown as ***);\n"
                                "               without NAME, the profiles\n"};
