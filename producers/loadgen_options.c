/* orderlog loadgen's command line (producers/loadgen.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "producers/loadgen.h"

/* ---- options ------------------------------------------------------------------ */

static int parse_num(const char *opt, const char *s, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        return ol_cli_usage_error(&ol_cmd_loadgen, "%s wants a number from %g to %g, got \"%s\"", opt, min, max, s);
    *out = v;
    return 0;
}

int ol_loadgen__parse_options(int argc, char **argv, options_t *o) {
    *o = (options_t){.count = 10000,
                     .rate = 0,
                     .users = 100000,
                     .hot_share = 0.5,
                     .skus = 1000,
                     .seed = 1,
                     .max_quantity = 1,
                     .wait_ms = 60000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        double v = 0;
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!strcmp(a, "--sequential-users")) {
            o->sequential_users = true;
            continue;
        }
        static const char *const valued[] = {"--count",   "--rate",         "--users",
                                             "--hot-sku", "--hot-share",    "--skus",
                                             "--seed",    "--max-quantity", "--blacklisted-share",
                                             "--out",     "--run-id",       "--wait-ms",
                                             NULL};
        bool known = false;
        for (int k = 0; valued[k]; k++)
            known |= !strcmp(a, valued[k]);
        if (!known)
            return ol_cli_usage_error(&ol_cmd_loadgen, "unknown option \"%s\"", a);
        if (i + 1 >= argc)
            return ol_cli_usage_error(&ol_cmd_loadgen, "option %s needs a value", a);
        const char *val = argv[++i];
        if (!strcmp(a, "--count")) {
            if (parse_num(a, val, 1, (double)MAX_COUNT, &v))
                return OL_EXIT_USAGE;
            o->count = (long long)v;
        } else if (!strcmp(a, "--rate")) {
            if (parse_num(a, val, 0, 1e9, &v))
                return OL_EXIT_USAGE;
            o->rate = v;
        } else if (!strcmp(a, "--users")) {
            if (parse_num(a, val, 1, 99999999, &v))
                return OL_EXIT_USAGE;
            o->users = (long long)v;
        } else if (!strcmp(a, "--hot-sku")) {
            if (!*val || strlen(val) > 100)
                return ol_cli_usage_error(&ol_cmd_loadgen, "--hot-sku wants 1 to 100 characters");
            o->hot_sku = val;
        } else if (!strcmp(a, "--hot-share")) {
            if (parse_num(a, val, 0, 1, &o->hot_share))
                return OL_EXIT_USAGE;
        } else if (!strcmp(a, "--skus")) {
            if (parse_num(a, val, 1, 99999, &v))
                return OL_EXIT_USAGE;
            o->skus = (long long)v;
        } else if (!strcmp(a, "--seed")) {
            if (parse_num(a, val, 0, 9007199254740992.0, &v))
                return OL_EXIT_USAGE;
            o->seed = (uint64_t)v;
        } else if (!strcmp(a, "--max-quantity")) {
            if (parse_num(a, val, 1, 1000, &v))
                return OL_EXIT_USAGE;
            o->max_quantity = (int)v;
        } else if (!strcmp(a, "--blacklisted-share")) {
            if (parse_num(a, val, 0, 1, &o->blacklisted_share))
                return OL_EXIT_USAGE;
        } else if (!strcmp(a, "--out")) {
            o->out = val;
        } else if (!strcmp(a, "--run-id")) {
            size_t n = strlen(val);
            if (!n || n > 24 || strspn(val, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != n)
                return ol_cli_usage_error(&ol_cmd_loadgen, "--run-id wants 1 to 24 letters, digits or _");
            o->run_id = val;
        } else { /* --wait-ms */
            if (parse_num(a, val, 0, 86400000, &v))
                return OL_EXIT_USAGE;
            o->wait_ms = (long long)v;
        }
    }
    return 0;
}
