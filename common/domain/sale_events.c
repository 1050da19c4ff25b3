/* Facts and commands <-> event data (see sale_events.h). Each fact kind is
 * a list of fields, in the order of its schema; encoding and decoding both
 * walk it. */
#include "common/domain/sale_events.h"

#include <stddef.h>
#include <string.h>

#include "common/base/util.h"

/* What a field holds: a member of ol_fact_t at `off` (string, int32_t,
 * int64_t, or one of its enums, named by the list `e`), the policy's
 * levels, or the price. */
typedef enum ftype_e { F_STR, F_I32, F_I64, F_ENUM, F_LEVELS, F_PRICE, F_CURRENCY } ftype_t;

/* An enum of sale.h: its names (sale.h's), and the value a name not in it
 * is read as. */
typedef struct enum_s {
    const char *const *names;
    int count, def;
} enum_t;

static const enum_t rejects = {ol_reject_names, OL_REJECT__COUNT, OL_REJECT_SOLD_OUT};
static const enum_t releases = {ol_release_names, OL_RELEASE__COUNT, OL_RELEASE_EXPIRED};
static const enum_t hold_rejects = {ol_hold_reject_names, OL_HOLD_REJECT__COUNT, OL_HOLD_REJECT_UNKNOWN_HOLD};
static const enum_t hold_ops = {ol_hold_op_names, OL_HOLD_OP__COUNT, OL_HOLD_OP_CHECKOUT};
static const enum_t causes = {ol_stock_cause_names, OL_STOCK__COUNT, OL_STOCK_ADJUSTED};
/* the enum members are read and written as int */
_Static_assert(sizeof(ol_reject_t) == sizeof(int) && sizeof(ol_release_t) == sizeof(int) &&
                   sizeof(ol_hold_reject_t) == sizeof(int) && sizeof(ol_hold_op_t) == sizeof(int) &&
                   sizeof(ol_stock_cause_t) == sizeof(int),
               "sale.h's enums are ints");

typedef struct field_s {
    const char *name;
    ftype_t type;
    size_t off;
    const enum_t *e; /* F_ENUM */
} field_t;

#define STR(m) \
    { #m, F_STR, offsetof(ol_fact_t, m) }
#define I32(m) \
    { #m, F_I32, offsetof(ol_fact_t, m) }
#define I64(m) \
    { #m, F_I64, offsetof(ol_fact_t, m) }
#define AT(name) \
    { name, F_I64, offsetof(ol_fact_t, at_ms) }
#define ENUM(name, m, e) \
    { name, F_ENUM, offsetof(ol_fact_t, m), &e }
#define TYPED(name, type) \
    { name, type, 0, NULL }

static const field_t buy_accepted[] = {STR(request_id), STR(hold_id),    STR(user_id),    STR(sku),
                                       I32(quantity),   I64(expires_at), AT("decided_at")};
static const field_t buy_rejected[] = {
    STR(request_id), STR(user_id),    STR(sku), I32(quantity), ENUM("reason", reject, rejects),
    STR(message),    AT("decided_at")};
static const field_t hold_released[] = {
    STR(hold_id), STR(user_id), STR(sku), I32(quantity), ENUM("reason", release, releases), AT("released_at")};
static const field_t hold_converted[] = {STR(hold_id), STR(order_id), STR(user_id),
                                         STR(sku),     I32(quantity), AT("converted_at")};
static const field_t stock_changed[] = {STR(sku),
                                        I64(total),
                                        ENUM("cause", cause, causes),
                                        AT("changed_at"),
                                        I64(version),
                                        TYPED("price", F_PRICE),
                                        TYPED("currency", F_CURRENCY)};
static const field_t policy_changed[] = {STR(sku),
                                         {"min_level", F_I32, offsetof(ol_fact_t, policy.min_level)},
                                         {"default_limit", F_I32, offsetof(ol_fact_t, policy.default_limit)},
                                         TYPED("level_limits", F_LEVELS),
                                         AT("set_at")};
static const field_t checkout_rejected[] = {STR(request_id),
                                            STR(hold_id),
                                            STR(user_id),
                                            STR(sku),
                                            ENUM("op", op, hold_ops),
                                            ENUM("reason", hold_reject, hold_rejects),
                                            AT("decided_at")};

#define KIND(fields) \
    { fields, sizeof(fields) / sizeof(fields[0]) }
static const struct {
    const field_t *fields;
    size_t n;
} kinds[OL_FACT__COUNT] = {
    [OL_FACT_BUY_ACCEPTED] = KIND(buy_accepted),           [OL_FACT_BUY_REJECTED] = KIND(buy_rejected),
    [OL_FACT_HOLD_RELEASED] = KIND(hold_released),         [OL_FACT_HOLD_CONVERTED] = KIND(hold_converted),
    [OL_FACT_STOCK_CHANGED] = KIND(stock_changed),         [OL_FACT_POLICY_CHANGED] = KIND(policy_changed),
    [OL_FACT_CHECKOUT_REJECTED] = KIND(checkout_rejected),
};

/* ---- encoding ------------------------------------------------------------- */

static ol_json_t object_new(ol_arena_t *arena, size_t n, ol_json_member_t **members) {
    *members = ol_arena_alloc(arena, (n ? n : 1) * sizeof(**members));
    return ol_json_object_of(*members, n);
}

static void member_array(ol_json_member_t *m, const char *key, ol_json_t *items, size_t n) {
    m->key = key;
    m->key_len = strlen(key);
    m->value = (ol_json_t){.type = OL_JSON_ARRAY, .len = n, .u.items = items};
}

static void member_levels(ol_json_member_t *m, const char *key, const ol_policy_t *p, ol_arena_t *arena) {
    ol_json_t *items = ol_arena_alloc(arena, (p->n_levels + 1) * sizeof(*items));
    for (size_t i = 0; i < p->n_levels; i++) {
        ol_json_member_t *l;
        items[i] = object_new(arena, 2, &l);
        ol_json_member_int(&l[0], "level", p->levels[i].level);
        ol_json_member_int(&l[1], "limit", p->levels[i].limit);
    }
    member_array(m, key, items, p->n_levels);
}

static void encode_field(const field_t *fd, const ol_fact_t *f, const ol_sale_price_t *price, ol_arena_t *arena,
                         ol_json_member_t *m) {
    const char *at = (const char *)f + fd->off;
    switch (fd->type) {
    case F_STR: {
        const char *s = *(const char *const *)(const void *)at;
        ol_json_member_str(m, fd->name, s ? s : "");
        return;
    }
    case F_I32:
        ol_json_member_int(m, fd->name, *(const int32_t *)(const void *)at);
        return;
    case F_I64:
        ol_json_member_int(m, fd->name, *(const int64_t *)(const void *)at);
        return;
    case F_ENUM: {
        int v = *(const int *)(const void *)at;
        ol_json_member_str(m, fd->name, v >= 0 && v < fd->e->count ? fd->e->names[v] : "?");
        return;
    }
    case F_LEVELS:
        member_levels(m, fd->name, &f->policy, arena);
        return;
    case F_PRICE:
        ol_json_member_int(m, fd->name, price ? price->price : 0);
        return;
    case F_CURRENCY:
        ol_json_member_str(m, fd->name, price && price->currency ? price->currency : "");
        return;
    }
}

const char *ol_sale_events_encode(const ol_fact_t *f, const ol_sale_price_t *price, ol_arena_t *arena, ol_json_t *out) {
    if ((unsigned)f->kind >= OL_FACT__COUNT)
        return NULL;
    const field_t *fields = kinds[f->kind].fields;
    size_t n = kinds[f->kind].n;
    ol_json_member_t *ms;
    *out = object_new(arena, n, &ms);
    for (size_t i = 0; i < n; i++)
        encode_field(&fields[i], f, price, arena, &ms[i]);
    return ol_fact_kind_name(f->kind);
}

void ol_sale_events_order(const ol_fact_t *f, const ol_sale_price_t *price, ol_arena_t *arena, ol_json_t *out) {
    int64_t unit = price ? price->price : 0;
    ol_json_member_t *line, *order;
    ol_json_t *items = ol_arena_alloc(arena, sizeof(*items));
    items[0] = object_new(arena, 3, &line);
    ol_json_member_str(&line[0], "sku", f->sku);
    ol_json_member_int(&line[1], "quantity", f->quantity);
    ol_json_member_int(&line[2], "unit_price", unit);
    *out = object_new(arena, 7, &order);
    ol_json_member_str(&order[0], "order_id", f->order_id ? f->order_id : "");
    ol_json_member_str(&order[1], "user_id", f->user_id ? f->user_id : "");
    ol_json_member_str(&order[2], "source", "flash_sale");
    member_array(&order[3], "lines", items, 1);
    ol_json_member_int(&order[4], "total_amount", unit * f->quantity);
    ol_json_member_str(&order[5], "currency", price && price->currency && price->currency[0] ? price->currency : "XXX");
    ol_json_member_int(&order[6], "placed_at", f->at_ms);
}

/* ---- decoding ------------------------------------------------------------- */

/* The level_limits of a PurchasePolicySet or PolicyChanged, in arena. */
static const ol_level_limit_t *policy_levels(const ol_json_t *d, ol_arena_t *arena, size_t *n) {
    const ol_json_t *ll = ol_json_get(d, "level_limits");
    *n = ll && ll->type == OL_JSON_ARRAY ? ll->len : 0;
    ol_level_limit_t *levels = ol_arena_alloc(arena, (*n + 1) * sizeof(*levels));
    for (size_t i = 0; i < *n; i++)
        levels[i] = (ol_level_limit_t){(int32_t)ol_json_get_int(&ll->u.items[i], "level", 0),
                                       (int32_t)ol_json_get_int(&ll->u.items[i], "limit", 0)};
    return levels;
}

static void decode_field(const field_t *fd, const ol_json_t *d, ol_arena_t *arena, ol_fact_t *f,
                         ol_sale_price_t *price) {
    char *at = (char *)f + fd->off;
    const char *s = fd->type != F_I32 && fd->type != F_I64 ? ol_json_get_str(d, fd->name, "") : "";
    switch (fd->type) {
    case F_STR:
        *(const char **)(void *)at = s;
        return;
    case F_I32:
        *(int32_t *)(void *)at = (int32_t)ol_json_get_int(d, fd->name, 0);
        return;
    case F_I64:
        *(int64_t *)(void *)at = ol_json_get_int(d, fd->name, 0);
        return;
    case F_ENUM: {
        int v = 0;
        while (v < fd->e->count && strcmp(fd->e->names[v], s))
            v++;
        *(int *)(void *)at = v < fd->e->count ? v : fd->e->def;
        return;
    }
    case F_LEVELS:
        f->policy.levels = policy_levels(d, arena, &f->policy.n_levels);
        return;
    case F_PRICE:
        price->price = ol_json_get_int(d, fd->name, 0);
        return;
    case F_CURRENCY:
        price->currency = s;
        return;
    }
}

bool ol_sale_events_decode(const char *name, const ol_json_t *d, ol_arena_t *arena, ol_fact_t *out,
                           ol_sale_price_t *price) {
    int kind = ol_fact_kind_from_name(name);
    if (kind < 0 || kind >= OL_FACT__COUNT)
        return false;
    ol_sale_price_t ignored;
    if (!price)
        price = &ignored;
    *price = (ol_sale_price_t){0, NULL};
    memset(out, 0, sizeof(*out));
    out->kind = (ol_fact_kind_t)kind;
    for (size_t i = 0; i < kinds[kind].n; i++)
        decode_field(&kinds[kind].fields[i], d, arena, out, price);
    if (out->kind == OL_FACT_BUY_ACCEPTED)
        out->message = OL_SALE_MSG_ACCEPTED;
    return true;
}

/* ---- commands ------------------------------------------------------------- */

#define CMD_NAME(name, str) str,
static const char *const command_names[] = {OL_SALE_CMDS(CMD_NAME)};

bool ol_sale_events_command(const char *name, const ol_json_t *d, ol_arena_t *arena, ol_sale_cmd_t *out) {
    int k = 0;
    while (k < OL_SALE_CMD__COUNT && strcmp(command_names[k], name))
        k++;
    if (k == OL_SALE_CMD__COUNT)
        return false;
    memset(out, 0, sizeof(*out));
    out->kind = (ol_sale_cmd_kind_t)k;
#define S(field) ol_json_get_str(d, field, "")
#define I(field) ol_json_get_int(d, field, 0)
    switch (out->kind) {
    case OL_SALE_CMD_BUY:
        out->u.buy =
            (ol_buy_cmd_t){S("request_id"), S("session_id"),          S("client_ip"),         S("user_id"),
                           S("sku"),        (int32_t)I("user_level"), (int32_t)I("quantity"), I("requested_at")};
        break;
    case OL_SALE_CMD_CHECKOUT:
    case OL_SALE_CMD_CANCEL:
        out->u.hold = (ol_hold_cmd_t){S("request_id"), S("hold_id"), S("user_id"), S("sku"), I("requested_at")};
        break;
    case OL_SALE_CMD_SKU_SYNCED:
        out->u.synced = (ol_sku_synced_cmd_t){S("sku"), I("stock"), I("version"), 0};
        out->price = (ol_sale_price_t){I("price"), S("currency")};
        break;
    case OL_SALE_CMD_SKU_REMOVED:
        out->u.removed = (ol_sku_removed_cmd_t){S("sku"), 0};
        break;
    case OL_SALE_CMD_STOCK_ADJUSTED:
        out->u.adjusted = (ol_stock_adjusted_cmd_t){S("sku"), (int32_t)I("delta"), 0};
        break;
    case OL_SALE_CMD_POLICY_SET: {
        size_t nl;
        const ol_level_limit_t *levels = policy_levels(d, arena, &nl);
        out->u.policy =
            (ol_policy_cmd_t){S("sku"), {(int32_t)I("min_level"), (int32_t)I("default_limit"), nl, levels}, 0};
        break;
    }
    case OL_SALE_CMD__COUNT:
        break;
    }
#undef S
#undef I
    return true;
}
