#ifndef OL_RATEBAN_H
#define OL_RATEBAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/domain/blacklist.h"

/* guard's judgement (DESIGN §4): sliding windows of requests per IP and per
 * user, the bans they cause and when those lapse. Pure state, no I/O and no
 * clock: every time is given by the caller, so that the same requests judged
 * again (a replay) give the same bans.
 *
 * Window: a subject's window is (latest - window_ms, latest], latest being
 * the latest request time counted for it. A request later than latest moves
 * the window; an earlier one (requests of one subject arrive out of order
 * across partitions) is counted when it still falls inside it, and ignored
 * when it does not. The request that makes the count exceed the subject
 * type's max is banned: the subject is listed with reason rate until
 * at_ms + ban_ms and its window is emptied. Requests of a subject while it
 * is listed (at their own time) are not counted, so a ban is never issued
 * twice while it is active; once it has lapsed, counting starts afresh.
 *
 * Entries: the blacklist as guard knows it (the compacted `blacklist` topic
 * applied in log order, and guard's own changes). Manual entries are never
 * lifted by guard, and a subject listed for any reason is not banned again
 * while its entry is active, so a manual ban is never replaced (shortened)
 * by a rate ban.
 *
 * Memory: a subject costs about 112 bytes + its length, plus 4 to 8 bytes
 * per request in its window (at most max of them, the array doubling as it
 * grows), while it is tracked or listed. A
 * subject whose window is empty (idle) is forgotten by ol_rateban_expire;
 * past max_subjects the least recently seen one is forgotten at once.
 *
 * Not thread-safe: one thread at a time. Strings given are borrowed for the
 * call; strings returned are borrowed, valid until the next call that
 * changes the watch. */
typedef struct ol_rateban_s ol_rateban_t;

typedef enum ol_ban_reason_e { OL_BAN_MANUAL, OL_BAN_RATE } ol_ban_reason_t;

typedef struct ol_rateban_conf_s {
    int64_t window_ms;   /* >= 1 and < 2^31 */
    int64_t ban_ms;      /* >= 1 */
    uint32_t ip_max;     /* requests allowed per window per IP; 0 = IPs not watched */
    uint32_t user_max;   /* the same per user */
    size_t max_subjects; /* tracked (not listed) subjects kept at most; 0 = no limit */
} ol_rateban_conf_t;

/* A ban to publish, or a lift (its until is the lapsed one). subject is
 * borrowed. */
typedef struct ol_rateban_ban_s {
    ol_subject_t type;
    const char *subject;
    int64_t until_ms;
    uint32_t count; /* requests in the window, the one that crossed included (bans only) */
} ol_rateban_ban_t;

typedef struct ol_rateban_stats_s {
    size_t tracked; /* subjects with a window */
    size_t listed;  /* entries (lapsed ones until they are removed) */
    size_t rate;    /* of which by rate with an until: they will be lifted */
    size_t evicted; /* subjects forgotten since creation (idle or past max_subjects) */
    size_t bytes;   /* memory held, approximately */
} ol_rateban_stats_t;

ol_rateban_t *ol_rateban_new(const ol_rateban_conf_t *conf);
void ol_rateban_destroy(ol_rateban_t *rw);

/* The subject is never counted (guard.ignore); an entry of it is still kept. */
void ol_rateban_exempt(ol_rateban_t *rw, ol_subject_t type, const char *subject);

/* Counts a request of subject at at_ms. Returns true when it crosses the
 * threshold: *ban is filled and the subject is already listed (rate, until);
 * the caller publishes the add. An empty subject is never counted. */
bool ol_rateban_hit(ol_rateban_t *rw, ol_subject_t type, const char *subject, int64_t at_ms, ol_rateban_ban_t *ban);

/* Applies a BlacklistChanged in log order: add (re)sets the entry with its
 * reason and until (negative: never lapses), remove deletes it. */
void ol_rateban_apply(ol_rateban_t *rw, ol_subject_t type, const char *subject, bool add, ol_ban_reason_t reason,
                      int64_t until_ms);

/* The rate entry that lapses first, when its until is <= now_ms: true and
 * *lift filled. The entry stays until the caller applies the remove it
 * publishes (so a failed publish is tried again). */
bool ol_rateban_due(const ol_rateban_t *rw, int64_t now_ms, ol_rateban_ban_t *lift);

/* The earliest until among rate entries, or -1 when there is none. */
int64_t ol_rateban_next_lift_ms(const ol_rateban_t *rw);

/* Whether the subject has an entry; *reason and *until_ms (either may be
 * NULL) are set when it has. Lapsed entries count until removed. */
bool ol_rateban_listed(const ol_rateban_t *rw, ol_subject_t type, const char *subject, ol_ban_reason_t *reason,
                       int64_t *until_ms);

/* Requests counted in the subject's window now (0 when not tracked). */
uint32_t ol_rateban_count(const ol_rateban_t *rw, ol_subject_t type, const char *subject);

/* Forgets the subjects whose latest request is <= now_ms - window_ms (their
 * windows are empty at now_ms). Returns how many. */
size_t ol_rateban_expire(ol_rateban_t *rw, int64_t now_ms);

void ol_rateban_stats(const ol_rateban_t *rw, ol_rateban_stats_t *out);

const char *ol_ban_reason_name(ol_ban_reason_t reason);
const char *ol_subject_name(ol_subject_t type);

#endif
