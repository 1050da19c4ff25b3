#ifndef OL_SALE_EVENTS_H
#define OL_SALE_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/base/arena.h"
#include "common/base/json.h"
#include "common/domain/sale.h"

/* The rules engine (common/domain/sale.h) and its topics: the one place
 * that knows which field of which event holds which member of an
 * ol_fact_t (sale-events, both ways) or of a command (buy-requests and
 * skus, read only), and what OrderPlaced a converted hold makes. Event data
 * is in the codec's JSON form (ol_codec_to_dom, ol_event_encode). Pure: no
 * I/O, no state; the decider, the sale projection and the gate read and
 * write facts through it.
 *
 * A new field of a fact: a member in ol_fact_t (sale.h) and a line in the
 * kind's field list in sale_events.c. */

/* What a StockChanged carries that the engine does not keep: the SKU's
 * price, for the orders a converted hold makes. currency borrowed. */
typedef struct ol_sale_price_s {
    int64_t price;
    const char *currency;
} ol_sale_price_t;

/* The data of the sale-events record of fact f into *out (members and
 * policy levels in arena; strings borrowed from f, NULL ones as "");
 * price (NULL: 0 and "") goes into a StockChanged. Returns the event type
 * name, NULL for a kind that is not a fact (out untouched). */
const char *ol_sale_events_encode(const ol_fact_t *f, const ol_sale_price_t *price, ol_arena_t *arena, ol_json_t *out);

/* The OrderPlaced data of a HoldConverted f into *out (in arena, strings
 * borrowed): one line of f's quantity at price (NULL: 0, currency "XXX"). */
void ol_sale_events_order(const ol_fact_t *f, const ol_sale_price_t *price, ol_arena_t *arena, ol_json_t *out);

/* The fact a sale-events record of type `name` holds, from its data d:
 * false when name is no fact kind. The members the kind has (sale.h's
 * table) are set, the others 0 / NULL; strings are borrowed from d, policy
 * levels in arena; an enum name not known is read as the kind's default
 * (sold_out, expired, unknown_hold, checkout, adjusted). A BuyAccepted's
 * message is OL_SALE_MSG_ACCEPTED. price (may be NULL) gets a StockChanged's
 * price, else {0, NULL}. */
bool ol_sale_events_decode(const char *name, const ol_json_t *d, ol_arena_t *arena, ol_fact_t *out,
                           ol_sale_price_t *price);

/* ---- commands (buy-requests and skus) ------------------------------------ */

/* The commands (event names) the decider takes. */
#define OL_SALE_CMDS(X)                \
    X(BUY, "BuyRequested")             \
    X(CHECKOUT, "CheckoutRequested")   \
    X(CANCEL, "HoldCancelled")         \
    X(SKU_SYNCED, "SkuSynced")         \
    X(SKU_REMOVED, "SkuRemoved")       \
    X(STOCK_ADJUSTED, "StockAdjusted") \
    X(POLICY_SET, "PurchasePolicySet")
#define OL_SALE_CMD_ENUM(name, str) OL_SALE_CMD_##name,
typedef enum ol_sale_cmd_kind_e { OL_SALE_CMDS(OL_SALE_CMD_ENUM) OL_SALE_CMD__COUNT } ol_sale_cmd_kind_t;

typedef struct ol_sale_cmd_s {
    ol_sale_cmd_kind_t kind;
    union {
        ol_buy_cmd_t buy;   /* BUY */
        ol_hold_cmd_t hold; /* CHECKOUT, CANCEL */
        ol_sku_synced_cmd_t synced;
        ol_sku_removed_cmd_t removed;
        ol_stock_adjusted_cmd_t adjusted;
        ol_policy_cmd_t policy;
    } u;
    ol_sale_price_t price; /* SKU_SYNCED: the snapshot's price */
} ol_sale_cmd_t;

/* The command an event of type `name` holds, from its data d: false when
 * name is no command of the decider. Strings borrowed from d, policy levels
 * in arena. at_ms is the event's requested_at for BUY, CHECKOUT and CANCEL
 * (the caller judges at the time it chooses), 0 for the others (the caller
 * sets it). */
bool ol_sale_events_command(const char *name, const ol_json_t *d, ol_arena_t *arena, ol_sale_cmd_t *out);

#endif
