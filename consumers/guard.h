#ifndef OL_GUARD_H
#define OL_GUARD_H

/* guard's state, shared by its loop (consumers/guard.c) and its
 * observability (consumers/guard_observe.c). Internal to guard. */
#include <librdkafka/rdkafka.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/conf.h"
#include "common/base/metrics.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/domain/rateban.h"
#include "consumers/follow.h"

#define PENDING_MAX 1024

/* Where guard is in one partition of buy-requests. */
typedef struct position_s {
    int assigned, dirty;
    int64_t next;  /* offset to commit: after the last record processed */
    int64_t ts_ms; /* latest record timestamp up to next, for the rewind */
} position_t;

/* guard's counters and gauges: X(field of guard_t, its type on /metrics,
 * name, help), in the order /metrics shows them. */
#define OL_GUARD_METRICS(X)                                                                                       \
    X(requests, COUNTER, "orderlog_guard_requests_total", "BuyRequested events judged against the rate windows.") \
    X(skipped, COUNTER, "orderlog_guard_skipped_total", "Other event types on buy-requests, skipped.")            \
    X(undecodable, COUNTER, "orderlog_guard_undecodable_total",                                                   \
      "Records of buy-requests that could not be decoded, skipped.")                                              \
    X(bans, COUNTER, "orderlog_guard_bans_total",                                                                 \
      "Subjects blacklisted for their rate (BlacklistChanged add, reason rate).")                                 \
    X(lifts, COUNTER, "orderlog_guard_lifts_total", "Rate bans removed once their until had passed.")             \
    X(lapsed, COUNTER, "orderlog_guard_lapsed_bans_total",                                                        \
      "Bans not published because their until had passed when judged (a backlog).")                               \
    X(tracked, GAUGE, "orderlog_guard_tracked_subjects", "IPs and users with requests in their rate window.")     \
    X(listed, GAUGE, "orderlog_guard_listed_subjects",                                                            \
      "Subjects on the blacklist as guard knows it (manual and rate).")                                           \
    X(tracked_bytes, GAUGE, "orderlog_guard_state_bytes", "Memory of the rate windows and the blacklist, estimated.")

typedef struct guard_s {
    const ol_conf_t *conf;
    ol_rateban_t *rw;
    rd_kafka_t *consumer; /* buy-requests, in the group */
    rd_kafka_t *follower; /* blacklist, every partition, no group */
    ol_follow_t *follow;  /* on follower */
    rd_kafka_t *producer;
    ol_codec_t *codec;
    ol_arena_t *arena;
    const ol_event_type_t *buy_type, *change_type;
    char buy_topic[256], bl_topic[256], group[256], source[128];
    int64_t window_ms, ip_max, user_max;
    position_t *pos;
    int npos;
    /* ce_id of our own changes not yet seen by the follower (a ring) */
    char pending[PENDING_MAX][OL_EVENT_ID_MAX + 1];
    int npending, pending_head;
    int failed;        /* deliveries that failed: nothing is committed any more */
    int fatal;         /* the consumer cannot go on */
    int64_t stream_ms; /* latest request time judged (clamped to the clock) */
    /* counted on the loop's thread, read by /metrics (the windows' at the last commit tick) */
#define OL_GUARD_FIELD(field, type, name, help) atomic_llong field;
    OL_GUARD_METRICS(OL_GUARD_FIELD)
#undef OL_GUARD_FIELD
    atomic_llong beat_us; /* the loop turned */
} guard_t;

/* The rate windows' size into the gauges (on the loop's thread). */
void ol_guard__observe_windows(guard_t *g);
/* guard's /metrics registry over g (the caller destroys it). */
ol_metrics_t *ol_guard__metrics(guard_t *g);
/* /healthz and /readyz checks. */
bool ol_guard__live(void *opaque, json_t *checks);
bool ol_guard__ready(void *opaque, json_t *checks);

#endif
