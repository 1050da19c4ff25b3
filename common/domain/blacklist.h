#ifndef OL_BLACKLIST_H
#define OL_BLACKLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The blacklist of IPs and user ids, as read from the compacted `blacklist`
 * topic (BlacklistChanged): one per process, shared by the deciders of all
 * its partitions. Pure state, no clock: the caller gives the time.
 * Not thread-safe: the caller serializes applies with reads (a decider that
 * runs partitions on several threads puts a lock around it). */
typedef struct ol_blacklist_s ol_blacklist_t;

typedef enum ol_subject_e { OL_SUBJECT_IP, OL_SUBJECT_USER } ol_subject_t;

/* until_ms of an entry that never lapses by itself (BlacklistChanged.until
 * null); any negative value means the same. */
#define OL_BLACKLIST_FOREVER ((int64_t)-1)

ol_blacklist_t *ol_blacklist_new(void);
void ol_blacklist_destroy(ol_blacklist_t *bl);

/* Applies one BlacklistChanged in log order: add (re)sets the entry of the
 * subject with its until (later adds replace earlier ones, so an add can also
 * shorten or lengthen a ban); remove deletes it (until ignored). subject is
 * borrowed for the call. */
void ol_blacklist_apply(ol_blacklist_t *bl, ol_subject_t type, const char *subject, bool add, int64_t until_ms);

/* True when subject is listed at now_ms: added, not removed since, and
 * until_ms < 0 or now_ms < until_ms (the entry no longer counts from until on). */
bool ol_blacklist_has(const ol_blacklist_t *bl, ol_subject_t type, const char *subject, int64_t now_ms);

/* Subjects listed and not removed, lapsed or not. */
size_t ol_blacklist_count(const ol_blacklist_t *bl);

#endif
