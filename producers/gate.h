#ifndef OL_GATE_H
#define OL_GATE_H

/* The gate's parts (orderlog gate, producers/gate.c): what the HTTP side
 * (gate.c and the files listed in gate_serve.h: routing, validation,
 * producing, setup) and the waiting side
 * (gate_wait.c: the wait table, deadlines, the decision cache, delivery
 * reports and the sale-events reader) share. Not a public API.
 *
 * Waiting costs no thread: the connection is suspended (libmicrohttpd) and
 * its request registered under the keys its decision will carry
 * ("b:<request_id>", or "c:<request_id>" and "h:<hold_id>" for a checkout).
 * Three threads complete waits and resume connections:
 *  - the Kafka poll thread, on the delivery report: an error answers 503;
 *    with gate.wait.ms = 0 (or too many waiting) the request is answered 202
 *    as soon as Kafka has it; otherwise the wait gets its deadline;
 *  - the sale-events consumer (assigned every partition from the end,
 *    read_committed), on a decision: every request waiting on its key;
 *  - the timer thread, on a deadline: 202 pending.
 * A request is resumed only after its delivery report, so the request
 * outlives the produce call's opaque. Everything about waits is under one
 * lock (g->lock): the wait table, the deadline list and the decision cache.
 *
 * GET /buy/<id> past the decision cache suspends its connection too: the
 * lookup in PostgreSQL runs on a thread of its own (gate_lookup.c), so no
 * HTTP thread ever waits for the database.
 *
 * Framing (gate_http.c): every request's Content-Length, Transfer-Encoding
 * and Host headers are checked on its first call, before its body is read;
 * a TLS handshake on the plain port and a connection that does not send its
 * first request's headers in time are closed.
 *
 * Ownership: req_t belongs to its connection (freed when libmicrohttpd
 * reports the request completed); while it waits it is borrowed by the wait
 * table and the deadline list, and leaves both before it is resumed; a
 * lookup borrows it the same way until it answers it. */

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/base/conf.h"
#include "common/base/kafka.h"
#include "common/base/list.h"
#include "common/base/metrics.h"
#include "common/base/netaddr.h"
#include "common/base/pg.h"
#include "common/base/tokenbucket.h"
#include "common/domain/sale.h"
#include "producers/gate_auth.h"

#define API_VERSION "1.0"
#define REQUEST_ID_MAX 64 /* client-chosen request ids: [A-Za-z0-9._:-], goes into URLs */
#define FIELD_MAX 128     /* userID, goodsSKU, sessionID, holdID */
#define KEY_SIZE (FIELD_MAX + 8)
#define WAIT_BUCKETS 65536

/* ---- metrics ------------------------------------------------------------ */

#define ENDPOINTS(X)            \
    X(BUY, "buy")               \
    X(BUY_STATUS, "buy_status") \
    X(CHECKOUT, "checkout")     \
    X(HEALTHZ, "healthz")       \
    X(READYZ, "readyz")         \
    X(METRICS, "metrics")       \
    X(OTHER, "other")
#define OUTCOMES(X)                 \
    X(ACCEPTED, "accepted")         \
    X(REJECTED, "rejected")         \
    X(THROTTLED, "throttled")       \
    X(INVALID, "invalid")           \
    X(PENDING, "pending")           \
    X(NOT_FOUND, "not_found")       \
    X(UNAVAILABLE, "unavailable")   \
    X(OK, "ok")                     \
    X(UNAUTHORIZED, "unauthorized") \
    X(FORBIDDEN, "forbidden")
#define EP_ENUM(name, str) EP_##name,
#define OUT_ENUM(name, str) OUT_##name,
#define NAME_STR(name, str) str,
typedef enum endpoint_e { ENDPOINTS(EP_ENUM) EP__COUNT } endpoint_t;
typedef enum outcome_e { OUTCOMES(OUT_ENUM) OUT__COUNT } outcome_t;

/* Why a buy or a checkout was rejected: the sale-events enums of
 * common/domain/sale.h (the rules' reasons, the hold rejects, too_old), then
 * "other" for a name none of them has. */
#define REASONS(X) OL_REJECTS_RULES(X) OL_HOLD_REJECTS(X) OL_REJECTS_STALE(X) X(OTHER, "other")
#define REASON_ENUM(name, str) REASON_##name,
typedef enum reason_e { REASONS(REASON_ENUM) NREASONS } reason_t;

/* The gate's metrics (common/base/metrics.h). The families are updated where
 * requests are answered (gate.c); what gate_wait.c counts stays in atomics
 * read at render time. */
typedef struct metrics_s {
    ol_metrics_t *reg;
    ol_metric_t *requests;  /* endpoint x outcome */
    ol_metric_t *rejected;  /* endpoint x reason */
    ol_metric_t *throttled; /* limit */
    ol_metric_t *client;    /* source of a buy's client address (client_sources) */
    ol_metric_t *forwarded_invalid;
    ol_metric_t *claim_ignored; /* the body's clientIP is not the client address */
    ol_metric_t *duration;      /* endpoint (buy, buy_status, checkout) */
    ol_metric_t *auth;          /* gate.auth: outcome (ol_gate_auth_outcome_names) */
    atomic_ullong facts[OL_FACT__COUNT];
    atomic_ullong delivery_failed;
    /* main thread (health_check): when delivery_failed last grew */
    unsigned long long failed_seen;
    atomic_llong failed_at_us;
} metrics_t;

/* ---- requests and the waits --------------------------------------------- */

struct req_s;
typedef struct wnode_s {
    struct wnode_s *next;
    struct req_s *req;
    const char *key;
} wnode_t;

typedef struct gate_s gate_t;

typedef struct req_s {
    gate_t *g;
    struct MHD_Connection *conn;
    endpoint_t ep;
    int64_t start_us;
    bool bad_type, too_large, suspended, handled, wants_body;
    bool must_close;                 /* answered with Connection: close */
    const char *allow;               /* set when the method is not allowed */
    unsigned long long declared_len; /* Content-Length */
    char *body;
    size_t body_len, body_cap;
    char request_id[REQUEST_ID_MAX + 1];
    char hold_id[FIELD_MAX + 1];
    /* Under g->lock from registration until resumed. */
    char keys[2][KEY_SIZE];
    wnode_t nodes[2];
    int nkeys;
    bool in_table, in_timer, produced, done, nowait;
    OL_LIST_LINK(struct req_s) timer; /* the deadline list (g->timers) */
    int64_t deadline_us;
    /* The answer, once done. */
    unsigned status;
    char *answer;
    outcome_t outcome;
    int reason; /* index in reason_names when rejected, else -1 */
    /* gate.auth: the outcome counted when the request is answered (set when
     * checked, FORBIDDEN when the body or the data is another user's) and
     * the authenticated user (authed); the WWW-Authenticate of a 401. */
    bool auth_checked, authed;
    ol_gate_auth_outcome_t auth_outcome;
    ol_gate_auth_user_t who;
    const char *challenge;
} req_t;

/* Whether r may see what owner's request holds: always without gate.auth. */
static inline bool ol_gate__owner_ok(const req_t *r, const char *owner) {
    return !r->authed || (owner && !strcmp(owner, r->who.user));
}

/* A recent buy decision (answer set) or a request known to be pending
 * (answer NULL), by request id. */
typedef struct centry_s {
    struct centry_s *hnext;
    char *answer;
    char *owner; /* the request's user, NULL when not known */
    outcome_t outcome;
    int reason;
    char key[];
} centry_t;

typedef struct cache_s {
    centry_t **table;
    size_t nbuckets;
    centry_t **ring; /* insertion order; the oldest is evicted */
    size_t cap, pos, count;
} cache_t;

/* What each HTTP thread keeps: a codec and an arena for one request. */
typedef struct thread_ctx_s {
    ol_codec_t *codec;
    ol_arena_t *arena;
} thread_ctx_t;

typedef struct lookup_s lookup_t;       /* gate_lookup.c */
typedef struct gate_http_s gate_http_t; /* gate_http.c */

struct gate_s {
    const ol_conf_t *conf;
    rd_kafka_t *rk;  /* producer */
    rd_kafka_t *rkc; /* sale-events consumer */
    rd_kafka_topic_t *rkt_buy;
    struct MHD_Daemon *d;
    char topic_buy[256], topic_sale[256];
    char source[128];
    const ol_event_type_t *et_buy, *et_checkout;
    int64_t wait_us;
    size_t max_waiting, body_max;
    ol_tokenbucket_t *rl_instance, *rl_ip;
    /* where a buy's client address comes from (gate.trusted.proxies, ...) */
    ol_netlist_t *trusted;
    ol_forwarded_t forwarded;
    bool trust_body;
    ol_gate_auth_t *auth; /* NULL: gate.auth=none */
    pthread_key_t tkey;

    pthread_mutex_t lock;
    pthread_cond_t timer_cond;
    wnode_t **wtable;
    size_t waiting;
    OL_LIST(req_t) timers; /* waits by deadline, soonest first */
    cache_t cache;

    atomic_bool stopping, threads_stop, producer_up, consumer_up;
    atomic_int in_handler;    /* requests between the stopping check and their produce */
    atomic_llong suspended;   /* connections suspended right now */
    atomic_llong waiting_now; /* mirror of waiting, for /metrics */
    pthread_t poll_thread, timer_thread, consumer_thread;
    metrics_t m;
    lookup_t *lookup;
    gate_http_t *http;
};

/* ---- request bodies (gate_body.c) ---------------------------------------- */

/* Why a body was refused: the 400 answer's "error" and "field" (a field
 * name, a key of the body or a path in the arena: borrowed). */
typedef struct ol_gate_check_s {
    const char *field;
    char msg[256];
} ol_gate_check_t;

/* A valid POST /buy body; strings borrowed from the parsed body. With
 * gate.auth, user (NULL) and level (has_level false) may be absent: the
 * token's are used. */
typedef struct ol_gate_buy_s {
    const char *session, *client_ip, *user, *sku;
    const char *request_id; /* NULL when the client chose none */
    int32_t level, quantity;
    bool has_level;
} ol_gate_buy_t;

/* A valid POST /checkout body; strings borrowed from the parsed body (user
 * NULL when absent, with gate.auth). */
typedef struct ol_gate_checkout_s {
    const char *user, *sku, *hold;
} ol_gate_checkout_t;

/* What POST /buy and POST /checkout do with a body, apart from HTTP, rate
 * limits and Kafka (tests/fuzz calls them). parse_body: body[0..len) (NULL
 * when empty) as a JSON object in arena. check_*: the fields of that object
 * (authed: the request carries a user from gate.auth, so userID and
 * userLevel may be absent). On false, c says why. *_members: the data of the BuyRequested (m[0..8)) or
 * CheckoutRequested (m[0..4)) made for it, request_id and client_ip (the
 * client's address, the body's only with gate.trust.body.client.ip)
 * borrowed. */
bool ol_gate__parse_body(ol_arena_t *arena, const char *body, size_t len, const ol_json_t **out, ol_gate_check_t *c);
bool ol_gate__check_buy(const ol_json_t *obj, bool authed, ol_gate_buy_t *out, ol_gate_check_t *c);
bool ol_gate__check_checkout(const ol_json_t *obj, bool authed, ol_gate_checkout_t *out, ol_gate_check_t *c);
void ol_gate__buy_members(const ol_gate_buy_t *b, const char *request_id, const char *client_ip, ol_json_member_t m[8]);
void ol_gate__checkout_members(const ol_gate_checkout_t *c, const char *request_id, ol_json_member_t m[4]);

/* ---- answers (gate_wait.c): new strings, JSON --------------------------- */

/* The original API's answer to a throttled request. */
extern const char ol_gate__throttled_json[];
char *ol_gate__answer_accepted(const char *request_id, const char *hold_id, int64_t expires_ms);
char *ol_gate__answer_rejected(const char *request_id, const char *message, const char *reason);
/* 202 pending: with the URL to poll for a buy, the hold for a checkout. */
char *ol_gate__answer_pending(const req_t *r);
/* {"error":..., "field":...}; field may be NULL. */
char *ol_gate__answer_error(const char *error, const char *field);
/* {"error", "requestID", "retry"}: Kafka did not take the request; sending it
 * again with the same requestID is safe. */
char *ol_gate__answer_unavailable(const char *error, const char *request_id);
/* The reason's index in REASONS, REASON_OTHER when unknown; and its name. */
int ol_gate__reason_index(const char *s);
const char *ol_gate__reason_name(int reason);

/* ---- the decision cache (gate_wait.c; under g->lock) ---------------------- */

void ol_gate__cache_init(cache_t *c, size_t cap);
void ol_gate__cache_free(cache_t *c);
/* The entry of a request id (borrowed, valid while the lock is held), or NULL. */
centry_t *ol_gate__cache_get(cache_t *c, const char *key);
/* Records a decision (answer taken) or, with answer NULL, that the request
 * is pending; a decision is never replaced by "pending". owner (copied; may
 * be NULL) is the request's user; a decision's replaces a pending one's.
 * The oldest entry goes when the cache is full. */
void ol_gate__cache_put(cache_t *c, const char *key, const char *owner, char *answer, outcome_t outcome, int reason);

/* ---- waits (gate_wait.c; under g->lock) ----------------------------------- */

/* Registers r under its keys (r->keys[0..nkeys)). */
void ol_gate__wait_add(gate_t *g, req_t *r);
/* Unregisters r; a no-op when it is not registered. */
void ol_gate__wait_remove(gate_t *g, req_t *r);
/* Whether a request waits on key (of user, when not NULL: an authenticated
 * request's user). */
bool ol_gate__wait_exists(gate_t *g, const char *key, const char *user);
/* Sets r's answer (taken) and marks it done. */
void ol_gate__set_answer(req_t *r, unsigned status, char *answer, outcome_t outcome, int reason);
/* Answers every waiting request 202 pending and resumes them (shutdown). */
void ol_gate__expire_all(gate_t *g);

/* ---- threads and callbacks (gate_wait.c) -------------------------------- */

/* The producer's delivery report callback (opaque: the gate). */
void ol_gate__dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque);
/* Thread mains (arg: the gate), until g->threads_stop. */
void *ol_gate__poll_main(void *arg);
void *ol_gate__timer_main(void *arg);
void *ol_gate__consumer_main(void *arg);

/* ---- lookups past the cache (gate_lookup.c) ------------------------------ */

/* Starts gate.lookup.threads lookup threads and a timer; registers the
 * lookup metrics in g->m.reg. */
lookup_t *ol_gate__lookup_new(gate_t *g);
/* GET /buy/<id> for r->request_id, not in the cache (pending: the gate knows
 * it undecided): suspends r's connection and queues the lookup; r is
 * answered through the resumed connection, by its deadline at the latest;
 * at once (503, or 202 when pending) when the queue is full or the gate
 * stops. HTTP threads only. */
void ol_gate__lookup_start(req_t *r, bool pending);
/* Shutdown: answers every lookup queued or running (503, 202 when pending)
 * and every later one at once. */
void ol_gate__lookup_stop(lookup_t *lk);
/* Stops and joins the threads (a running query is cancelled); after the
 * HTTP daemon stopped. NULL is a no-op. */
void ol_gate__lookup_destroy(lookup_t *lk);

/* ---- framing and connections (gate_http.c) -------------------------------- */

/* Registers the framing metrics in g->m.reg. */
gate_http_t *ol_gate__http_new(gate_t *g);
/* After the HTTP daemon stopped (every connection reported closed). */
void ol_gate__http_destroy(gate_http_t *h);
/* Once g->d listens: TCP_DEFER_ACCEPT on its socket. */
void ol_gate__http_listening(gate_t *g);
/* MHD_OPTION_NOTIFY_CONNECTION (cls: the gate): closes a TLS handshake at
 * once, tracks the connection for gate.header.timeout.ms. */
void ol_gate__http_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                                 enum MHD_ConnectionNotificationCode toe);
/* On the first call for a request (headers read, body not): why its
 * framing is refused (the message of a 400; *field the header), or NULL.
 * Counts refusals; ends the connection's header deadline. */
const char *ol_gate__http_request_check(gate_t *g, struct MHD_Connection *conn, const char *version,
                                        const char **field);
/* Closes the connections past gate.header.timeout.ms without request
 * headers (the main thread, each second). */
void ol_gate__http_sweep(gate_t *g);

#endif