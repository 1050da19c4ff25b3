#ifndef OL_LOADGEN_H
#define OL_LOADGEN_H

/* orderlog loadgen's parts (producers/loadgen.c: the shoppers, the
 * stopwatch and the command; loadgen_options.c: its command line). Not a
 * public API. */

#include <stdbool.h>
#include <stdint.h>

#define MAX_COUNT 100000000LL /* most requests one run sends */

/* The command line; strings borrowed from argv. */
typedef struct options_s {
    long long count;
    double rate;
    long long users;
    const char *hot_sku;
    double hot_share;
    long long skus;
    uint64_t seed;
    int max_quantity;
    double blacklisted_share;
    bool sequential_users;
    const char *out;
    const char *run_id;
    long long wait_ms;
    bool json;
} options_t;

/* Reads argv[1..argc) into o (defaults first); 0, or the exit status of a
 * usage error (said on stderr). */
int ol_loadgen__parse_options(int argc, char **argv, options_t *o);

#endif
