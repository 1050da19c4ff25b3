#ifndef OL_FOLLOW_H
#define OL_FOLLOW_H

#include <signal.h>
#include <stdbool.h>

#include <librdkafka/rdkafka.h>

#include "common/base/err.h"

/* Reading a topic to its end, then following it: every partition of the
 * topic assigned from its beginning to one reader (an OL_KAFKA_READER
 * handle, no group), as decide and guard read the compacted blacklist. The
 * end of a partition is where it ended when the follower was opened (an
 * empty partition is read at once); the follower is caught up once every
 * partition was read to its end, and goes on handing out what comes after.
 * One thread at a time per follower. */
typedef struct ol_follow_s ol_follow_t;

/* A record of the topic (borrowed for the call). */
typedef void ol_follow_fn(void *opaque, const rd_kafka_message_t *rkm);

/* Asks the topic's partitions and their ends (each retried for timeout_ms
 * while it has no leader yet, as a topic just created; given up early once
 * *stop is set) and assigns them all to rk (borrowed; outlives the
 * follower) from the beginning. On error *out is NULL: OL_ERR_NOT_FOUND
 * when the topic does not exist, OL_ERR_KAFKA else. */
ol_err_t ol_follow_open(ol_follow_t **out, rd_kafka_t *rk, const char *topic, int timeout_ms,
                        const volatile sig_atomic_t *stop, char *errstr, size_t errstr_size);

/* Polls rk once for at most timeout_ms: a record goes to fn, an error
 * (other than a partition's end) to the log. False when nothing came. */
bool ol_follow_poll(ol_follow_t *f, int timeout_ms, ol_follow_fn *fn, void *opaque);

/* Whether every partition was read to its end; the records handed to fn. */
bool ol_follow_caught_up(const ol_follow_t *f);
long long ol_follow_records(const ol_follow_t *f);

/* Frees the follower (the assignment stays on rk). NULL is fine. */
void ol_follow_destroy(ol_follow_t *f);

#endif
