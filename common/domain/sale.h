#ifndef OL_SALE_H
#define OL_SALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/domain/blacklist.h"
#include "common/base/err.h"
#include "common/base/strbuf.h"

/* The decider's rules engine (DESIGN §4): pure, deterministic, no I/O, no
 * clock (every time is given). Event-sourced:
 *  - the decide functions (ol_sale_buy … ol_sale_expire) never change the
 *    state: they return facts, the events the decider writes to sale-events;
 *  - ol_sale_apply is the only way the state changes. The decider applies
 *    each fact right after deciding it, and on partition assignment restores
 *    a fresh ol_sale_t by applying the facts read back from sale-events (or
 *    loads a snapshot, ol_sale_load, and applies the facts after it), so
 *    the state after restore decides as the state after the live decisions.
 * Deciding a command, then deciding another before applying the first's
 * facts, judges the second against stale state: always apply in between.
 *
 * One ol_sale_t per partition (its SKUs). Not thread-safe: one thread at a
 * time per sale. The blacklist is shared, see common/domain/blacklist.h.
 *
 * Ids the engine makes, deterministic so that a replay makes the same ones:
 * hold_id = "h-" + request_id, order_id = "o-" + hold_id. The engine finds a
 * hold by its request id, so every hold id it is given must be of that form
 * (others are unknown holds).
 *
 * Invariants, for any sequence of commands and facts:
 *  - per SKU, held + sold <= total (stock changes are clamped to held + sold);
 *  - a user's held + bought units of a SKU never exceed the limit of their
 *    level at the time of each accepted request;
 *  - a hold ends (released or converted) at most once; exactly one decision
 *    (BuyAccepted or BuyRejected other than too_old) per request id.
 *
 * Time and the idempotency window: the stream time of a sale is the latest
 * at_ms of the facts applied to it (CheckoutRejected and too_old refusals
 * aside), so it is the same after a restore. A decided request id is
 * remembered until the stream time has passed its decision's time by the
 * window + OL_SALE_AHEAD_MS; a BuyRequested judged at a time older than the
 * stream time - window is refused too_old (not decided, not remembered),
 * whether or not it was decided before. So a retry is never decided twice
 * as long as it is judged at most OL_SALE_AHEAD_MS after its first decision
 * was (a retry of the same record is judged at the same requested_at):
 * callers judge at min(requested_at, their clock) and refuse a requested_at
 * further than OL_SALE_AHEAD_MS ahead of their clock. A sale without new
 * facts keeps what it remembers until its next fact.
 *
 * Memory: ~145 bytes per open hold with its request, user and (user, SKU)
 * counter (UUID request ids, "UID" + 10 digits user ids); ~60 per request
 * id remembered; a (user, SKU) counter is kept while its user holds units
 * or has bought some (a limit counts bought units for as long as the SKU
 * is sold; a policy may come later), and a user while one of its counters
 * is. With no open hold, nothing bought and the window passed, what is
 * left is the catalog and the policies. */
typedef struct ol_sale_s ol_sale_t;

/* ---- commands (inputs; every string borrowed for the call) --------------- */

/* BuyRequested. at_ms (requested_at) is the time the rules are judged at
 * (blacklist entries, hold expiry). */
typedef struct ol_buy_cmd_s {
    const char *request_id, *session_id, *client_ip, *user_id, *sku;
    int32_t user_level; /* >= 0 */
    int32_t quantity;   /* >= 1 */
    int64_t at_ms;
} ol_buy_cmd_t;

/* CheckoutRequested and HoldCancelled. */
typedef struct ol_hold_cmd_s {
    const char *request_id, *hold_id, *user_id, *sku;
    int64_t at_ms;
} ol_hold_cmd_t;

typedef struct ol_sku_synced_cmd_s {
    const char *sku;
    int64_t stock;   /* >= 0, the sellable total */
    int64_t version; /* >= 0 */
    int64_t at_ms;
} ol_sku_synced_cmd_t;

typedef struct ol_sku_removed_cmd_s {
    const char *sku;
    int64_t at_ms;
} ol_sku_removed_cmd_t;

typedef struct ol_stock_adjusted_cmd_s {
    const char *sku;
    int32_t delta;
    int64_t at_ms;
} ol_stock_adjusted_cmd_t;

typedef struct ol_level_limit_s {
    int32_t level, limit; /* >= 0; limit 0 = no limit */
} ol_level_limit_t;

/* A purchase policy; levels borrowed (from the command, the arena of the
 * fact, or the sale for ol_sale_policy). */
typedef struct ol_policy_s {
    int32_t min_level;     /* >= 0 */
    int32_t default_limit; /* >= 0, 0 = no limit; for levels not in levels[] */
    size_t n_levels;
    const ol_level_limit_t *levels;
} ol_policy_t;

typedef struct ol_policy_cmd_s {
    const char *sku;
    ol_policy_t policy;
    int64_t at_ms;
} ol_policy_cmd_t;

/* ---- facts (outputs, and inputs of ol_sale_apply) ------------------------ */

/* The fact kinds (event names) and reason lists (Avro enum symbols). */
#define OL_FACT_KINDS(X)               \
    X(BUY_ACCEPTED, "BuyAccepted")     \
    X(BUY_REJECTED, "BuyRejected")     \
    X(HOLD_RELEASED, "HoldReleased")   \
    X(HOLD_CONVERTED, "HoldConverted") \
    X(STOCK_CHANGED, "StockChanged")   \
    X(POLICY_CHANGED, "PolicyChanged") \
    X(CHECKOUT_REJECTED, "CheckoutRejected")
/* A BuyRejected's reasons: the rules' (a decision), then too_old (none). */
#define OL_REJECTS(X) OL_REJECTS_RULES(X) OL_REJECTS_STALE(X)
#define OL_REJECTS_RULES(X)       \
    X(BLACKLISTED, "blacklisted") \
    X(LEVEL, "level")             \
    X(LIMIT, "limit")             \
    X(SOLD_OUT, "sold_out")       \
    X(UNKNOWN_SKU, "unknown_sku")
#define OL_REJECTS_STALE(X) X(TOO_OLD, "too_old")
#define OL_RELEASES(X)    \
    X(EXPIRED, "expired") \
    X(CANCELLED, "cancelled")
/* Why a checkout or cancel was refused: no such hold (or not of this SKU),
 * another user's hold, already released or converted, or still open but
 * past its expiry (its HoldReleased{expired} not decided yet). */
#define OL_HOLD_REJECTS(X)          \
    X(UNKNOWN_HOLD, "unknown_hold") \
    X(NOT_OWNER, "not_owner")       \
    X(RELEASED, "released")         \
    X(CONVERTED, "converted")       \
    X(EXPIRED, "expired")
#define OL_HOLD_OPS(X)      \
    X(CHECKOUT, "checkout") \
    X(CANCEL, "cancel")
#define OL_STOCK_CAUSES(X)  \
    X(SYNCED, "synced")     \
    X(ADJUSTED, "adjusted") \
    X(REMOVED, "removed")

#define OL_SALE_ENUM(prefix, name, str) prefix##name,
#define OL_FACT_ENUM(name, str) OL_SALE_ENUM(OL_FACT_, name, str)
#define OL_REJECT_ENUM(name, str) OL_SALE_ENUM(OL_REJECT_, name, str)
#define OL_RELEASE_ENUM(name, str) OL_SALE_ENUM(OL_RELEASE_, name, str)
#define OL_HOLD_REJECT_ENUM(name, str) OL_SALE_ENUM(OL_HOLD_REJECT_, name, str)
#define OL_HOLD_OP_ENUM(name, str) OL_SALE_ENUM(OL_HOLD_OP_, name, str)
#define OL_STOCK_CAUSE_ENUM(name, str) OL_SALE_ENUM(OL_STOCK_, name, str)
typedef enum ol_fact_kind_e { OL_FACT_KINDS(OL_FACT_ENUM) OL_FACT__COUNT } ol_fact_kind_t;
typedef enum ol_reject_e { OL_REJECTS(OL_REJECT_ENUM) OL_REJECT__COUNT } ol_reject_t;
typedef enum ol_release_e { OL_RELEASES(OL_RELEASE_ENUM) OL_RELEASE__COUNT } ol_release_t;
typedef enum ol_hold_reject_e { OL_HOLD_REJECTS(OL_HOLD_REJECT_ENUM) OL_HOLD_REJECT__COUNT } ol_hold_reject_t;
typedef enum ol_hold_op_e { OL_HOLD_OPS(OL_HOLD_OP_ENUM) OL_HOLD_OP__COUNT } ol_hold_op_t;
typedef enum ol_stock_cause_e { OL_STOCK_CAUSES(OL_STOCK_CAUSE_ENUM) OL_STOCK__COUNT } ol_stock_cause_t;

/* Names (static strings; "?" when out of range) and their inverse (-1 when
 * the name is not one of them), for the Kafka layer's encoding. */
const char *ol_fact_kind_name(ol_fact_kind_t kind);
const char *ol_reject_name(ol_reject_t r);
const char *ol_release_name(ol_release_t r);
const char *ol_hold_reject_name(ol_hold_reject_t r);
const char *ol_hold_op_name(ol_hold_op_t op);
const char *ol_stock_cause_name(ol_stock_cause_t c);
int ol_fact_kind_from_name(const char *name);
int ol_reject_from_name(const char *name);
int ol_release_from_name(const char *name);
int ol_hold_reject_from_name(const char *name);
int ol_hold_op_from_name(const char *name);
int ol_stock_cause_from_name(const char *name);
/* The names of each list, indexed by value (the sale-events mapping's). */
extern const char *const ol_reject_names[OL_REJECT__COUNT];
extern const char *const ol_release_names[OL_RELEASE__COUNT];
extern const char *const ol_hold_reject_names[OL_HOLD_REJECT__COUNT];
extern const char *const ol_hold_op_names[OL_HOLD_OP__COUNT];
extern const char *const ol_stock_cause_names[OL_STOCK__COUNT];

/* The shopper's messages of the original flash-sale API. */
#define OL_SALE_MSG_BLACKLISTED "Bad guy! Bye-Bye!"
#define OL_SALE_MSG_NOT_ALLOWED "You can not buy this goods!"
#define OL_SALE_MSG_SOLD_OUT "The goods is sold out!"
#define OL_SALE_MSG_ACCEPTED "successed.please place the order and make payments within half an hour"
/* orderlog's own, in the same voice: a request older than the window */
#define OL_SALE_MSG_TOO_OLD "The request has expired, please try again!"

/* How far ahead of the caller's clock a BuyRequested's requested_at may be
 * (a client clock ahead): the caller refuses one further ahead, and request
 * ids are kept this much past the window. */
#define OL_SALE_AHEAD_MS 60000

/* One fact. Fields a kind does not use are 0 / NULL. Strings are borrowed:
 * from the command decided (its ids), from the arena given to the decide
 * call (hold_id, order_id, policy levels, ids of expiry facts), from the
 * sale (sku of expiry facts: valid until the sale is destroyed) or static
 * (message). For
 * ol_sale_apply they are the caller's, borrowed for the call.
 *
 *   kind               fields
 *   BUY_ACCEPTED       request_id hold_id user_id sku quantity expires_at message at_ms(decided_at)
 *   BUY_REJECTED       request_id user_id sku quantity reject message at_ms(decided_at)
 *   HOLD_RELEASED      hold_id user_id sku quantity release at_ms(released_at)
 *   HOLD_CONVERTED     hold_id order_id user_id sku quantity at_ms(converted_at)
 *   STOCK_CHANGED      sku total cause version at_ms(changed_at)
 *   POLICY_CHANGED     sku policy at_ms(set_at)
 *   CHECKOUT_REJECTED  request_id hold_id user_id sku op hold_reject at_ms (changes nothing)
 *
 * StockChanged.version is the SkuSynced version stored for the SKU after the
 * change (-1: never synced); the state needs it back on restore so that an
 * older snapshot arriving later is still ignored. */
typedef struct ol_fact_s {
    ol_fact_kind_t kind;
    const char *request_id, *hold_id, *order_id, *user_id, *sku;
    int32_t quantity;
    ol_reject_t reject;
    ol_release_t release;
    ol_hold_reject_t hold_reject;
    ol_hold_op_t op;
    ol_stock_cause_t cause;
    const char *message;
    int64_t expires_at;
    int64_t total;
    int64_t version;
    ol_policy_t policy;
    int64_t at_ms;
} ol_fact_t;

/* ---- life ---------------------------------------------------------------- */

/* hold_ttl_ms > 0 (hold.ttl), window_ms > 0 (decide.idempotency.window).
 * bl is borrowed and must outlive the sale; NULL = nobody is blacklisted. */
ol_sale_t *ol_sale_new(int64_t hold_ttl_ms, int64_t window_ms, const ol_blacklist_t *bl);
void ol_sale_destroy(ol_sale_t *sale);

/* ---- deciding: fill *out (or out[0..max)), return the number of facts ---- */
/* The single-command functions return 0 or 1, or -1 when the command breaks
 * the contract (empty id, quantity < 1, negative level, stock or version…):
 * errstr says why, nothing is decided, the caller dead-letters the record. */

/* at_ms older than the stream time - window → BuyRejected{too_old}, which
 * is no decision (see "Time" above). Else exactly one BuyAccepted or
 * BuyRejected for a request id not remembered; nothing for one remembered
 * (a retry). Rules in order, first failure wins: blacklisted IP or user (at
 * at_ms; an empty client_ip is not looked up) → blacklisted; level below the
 * policy's min_level → level; held + bought + quantity above the limit of
 * the user's level (no limit: above 2147483647, what a counter holds) →
 * limit; SKU never synced or removed → unknown_sku;
 * available < quantity → sold_out; else a hold until at_ms + hold_ttl.
 * No policy: min level 0, no limit. Holds past their expiry still count
 * until their HoldReleased is applied: run ol_sale_expire(at_ms) first. */
int ol_sale_buy(const ol_sale_t *sale, const ol_buy_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out, char *errstr,
                size_t errstr_size);

/* An open hold of cmd->sku owned by cmd->user_id with at_ms < expires_at →
 * HoldConverted (held → sold); else CheckoutRejected with the first that
 * applies of: unknown_hold, released, converted (a closed hold is reported
 * as such whoever asks), not_owner, expired. Always one fact. */
int ol_sale_checkout(const ol_sale_t *sale, const ol_hold_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out, char *errstr,
                     size_t errstr_size);
/* The same rules for HoldCancelled → HoldReleased{cancelled}, or
 * CheckoutRejected{op cancel}. */
int ol_sale_cancel(const ol_sale_t *sale, const ol_hold_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out, char *errstr,
                   size_t errstr_size);

/* A version above the stored one (or the first sync, or a sync after the SKU
 * was removed, if newer) → StockChanged{total = max(stock, held + sold),
 * synced}; the SKU is on sale again. Older or equal versions → nothing. */
int ol_sale_sku_synced(const ol_sale_t *sale, const ol_sku_synced_cmd_t *cmd, ol_fact_t *out, char *errstr,
                       size_t errstr_size);
/* A SKU on sale → StockChanged{total = held + sold, removed}: new buys get
 * unknown_sku, existing holds still convert, expire or get cancelled.
 * Unknown or already removed → nothing. */
int ol_sale_sku_removed(const ol_sale_t *sale, const ol_sku_removed_cmd_t *cmd, ol_fact_t *out, char *errstr,
                        size_t errstr_size);
/* A SKU on sale → StockChanged{total = max(total + delta, held + sold),
 * adjusted} (one fact even when the total does not move). Unknown or
 * removed → nothing: synced stock is the base an adjustment applies to. */
int ol_sale_stock_adjusted(const ol_sale_t *sale, const ol_stock_adjusted_cmd_t *cmd, ol_fact_t *out, char *errstr,
                           size_t errstr_size);
/* → PolicyChanged with the policy as applied: levels sorted, a level listed
 * twice keeps its last limit (levels copied into arena). Any SKU, even one
 * not synced yet: the policy waits for it. */
int ol_sale_policy_set(const ol_sale_t *sale, const ol_policy_cmd_t *cmd, ol_arena_t *arena, ol_fact_t *out,
                       char *errstr, size_t errstr_size);

/* HoldReleased{expired} for the open holds with expires_at <= now_ms, oldest
 * first (by expires_at, then by request id, bytewise; released_at = now_ms),
 * at most max; apply them and call again until it returns less than max.
 * Strings are in arena (sku: the sale's, valid until it is destroyed). */
size_t ol_sale_expire(const ol_sale_t *sale, int64_t now_ms, ol_arena_t *arena, ol_fact_t *out, size_t max);

/* ---- the only mutation --------------------------------------------------- */

/* Applies one fact (live, right after deciding it; or on restore, read back
 * from sale-events). A fact that contradicts the state (a second decision
 * for a request, a hold unknown or already ended or not matching the fact,
 * a stock total under held + sold, an accepted hold the stock cannot
 * cover…) is refused with OL_ERR_INVALID and errstr, and changes nothing:
 * the invariants hold whatever is applied. CheckoutRejected and
 * BuyRejected{too_old} change nothing. A decision older than the stream
 * time - window - OL_SALE_AHEAD_MS (only a restore meets one) is applied
 * without its request id being remembered (an accepted hold's id is kept
 * while the hold is open). */
ol_err_t ol_sale_apply(ol_sale_t *sale, const ol_fact_t *fact, char *errstr, size_t errstr_size);

/* ---- reading (for tests, projections, metrics) --------------------------- */

typedef struct ol_stock_s {
    int64_t total, held, sold, available; /* available = total - held - sold */
    int64_t version;                      /* of the last SkuSynced applied; -1: none */
    bool on_sale;                         /* synced and not removed since */
    bool removed;
} ol_stock_t;

typedef struct ol_units_s {
    int64_t held, bought;
} ol_units_t;

typedef enum ol_hold_state_e { OL_HOLD_NONE, OL_HOLD_OPEN, OL_HOLD_RELEASED, OL_HOLD_CONVERTED } ol_hold_state_t;

/* An open hold; strings borrowed from the sale (valid until the next apply). */
typedef struct ol_hold_info_s {
    const char *user_id, *sku;
    int32_t quantity;
    int64_t expires_at;
} ol_hold_info_t;

/* False (and *out zeroed, version -1) for a SKU the sale never heard of. */
bool ol_sale_stock(const ol_sale_t *sale, const char *sku, ol_stock_t *out);
/* Zeros when the user never held this SKU. */
ol_units_t ol_sale_units(const ol_sale_t *sale, const char *user_id, const char *sku);
/* The state of a hold; *out (may be NULL) filled for an open one. */
ol_hold_state_t ol_sale_hold(const ol_sale_t *sale, const char *hold_id, ol_hold_info_t *out);
/* True while the request id of an applied BuyAccepted or BuyRejected (other
 * than too_old) is remembered. */
bool ol_sale_decided(const ol_sale_t *sale, const char *request_id);
/* Request ids remembered (decided within the window, or of open holds). */
size_t ol_sale_remembered(const ol_sale_t *sale);
/* The latest at_ms of the facts applied (0: none). */
int64_t ol_sale_stream_time(const ol_sale_t *sale);
/* False when no policy was set for sku; levels borrowed until the next apply. */
bool ol_sale_policy(const ol_sale_t *sale, const char *sku, ol_policy_t *out);
size_t ol_sale_open_holds(const ol_sale_t *sale);
/* Earliest expires_at of the open holds, INT64_MAX when none: when to call
 * ol_sale_expire next. */
int64_t ol_sale_next_expiry(const ol_sale_t *sale);
/* Every SKU the sale heard of / every (user, SKU) counter kept (see
 * "Memory" above), in an order that depends only on the facts applied. No
 * apply from fn; strings valid until the next apply. */
void ol_sale_foreach_stock(const ol_sale_t *sale, void (*fn)(void *opaque, const char *sku, const ol_stock_t *stock),
                           void *opaque);
void ol_sale_foreach_units(const ol_sale_t *sale,
                           void (*fn)(void *opaque, const char *user_id, const char *sku, ol_units_t units),
                           void *opaque);
/* Bytes the sale has allocated (capacities, not only what is in use). */
size_t ol_sale_bytes(const ol_sale_t *sale);

/* ---- snapshots (common/domain/sale_snapshot.c) ---------------------------- */

/* Appends the state to out as bytes: what deciding needs (stock, policies,
 * units bought per (user, SKU), open holds, the request ids remembered and
 * their time slices, the stream time), not its internal ids. */
void ol_sale_snapshot(const ol_sale_t *sale, ol_strbuf_t *out);
/* A new sale from the bytes of ol_sale_snapshot: it decides every command
 * and applies every fact as the sale snapshotted would (ids, slots and the
 * order of ol_sale_foreach_units may differ). NULL with errstr when data is
 * not a snapshot of this format, was made with another window_ms, or breaks
 * the invariants. */
ol_sale_t *ol_sale_load(const void *data, size_t len, int64_t hold_ttl_ms, int64_t window_ms, const ol_blacklist_t *bl,
                        char *errstr, size_t errstr_size);

#endif
