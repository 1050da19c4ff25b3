/* The checks of a POST /buy and a POST /checkout body, apart from HTTP,
 * rate limits and Kafka (producers/gate.h; tests/fuzz calls them), and the
 * event data made from a valid one. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/base/json.h"
#include "producers/gate_serve.h"

/* ---- validation ---------------------------------------------------------- */

/* Fails with a message for the field; NULL when the value is fine. */
typedef ol_gate_check_t check_t;

static bool fail(check_t *c, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(check_t *c, const char *field, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
    va_end(ap);
    c->field = field;
    return false;
}

/* Every key one of names, compared by full length. */
static bool check_known(check_t *c, const ol_json_t *obj, const char *const *names) {
    for (size_t i = 0; i < obj->len; i++) {
        const ol_json_member_t *m = &obj->u.members[i];
        const char *const *n = names;
        while (*n && !(strlen(*n) == m->key_len && !memcmp(*n, m->key, m->key_len)))
            n++;
        if (!*n)
            return fail(c, m->key, "unknown field");
    }
    return true;
}

/* A string field of min..max bytes, no control characters. */
static bool check_str(check_t *c, const ol_json_t *obj, const char *name, bool required, size_t min, size_t max,
                      const char **out) {
    const ol_json_t *v = ol_json_get(obj, name);
    *out = NULL;
    if (!v)
        return required ? fail(c, name, "missing field") : true;
    if (v->type != OL_JSON_STRING)
        return fail(c, name, "must be a string, got %s", ol_json_kind(v));
    if (v->len < min || v->len > max)
        return min ? fail(c, name, "must be %zu to %zu characters long", min, max)
                   : fail(c, name, "must be at most %zu characters long", max);
    for (size_t i = 0; i < v->len; i++)
        if ((unsigned char)v->u.s[i] < 0x20 || v->u.s[i] == 0x7f)
            return fail(c, name, "must not contain control characters");
    *out = v->u.s;
    return true;
}

static bool check_int(check_t *c, const ol_json_t *obj, const char *name, int64_t min, int64_t max, int32_t *out) {
    const ol_json_t *v = ol_json_get(obj, name);
    if (!v)
        return fail(c, name, "missing field");
    if (v->type != OL_JSON_INT)
        return fail(c, name, "must be an integer, got %s", ol_json_kind(v));
    if (v->u.i < min)
        return fail(c, name, "must be at least %lld, got %lld", (long long)min, (long long)v->u.i);
    if (v->u.i > max)
        return fail(c, name, "must be at most %lld, got %lld", (long long)max, (long long)v->u.i);
    *out = (int32_t)v->u.i;
    return true;
}

bool ol_gate__id_chars_ok(const char *s) {
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == ':' || *s == '-'))
            return false;
    return true;
}

static bool ip_ok(const char *s) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static const char *const buy_fields[] = {"sessionID", "clientIP",      "userID",    "userLevel",
                                         "goodsSKU",  "goodsQuantity", "requestID", NULL};
static const char *const checkout_fields[] = {"userID", "goodsSKU", "holdID", NULL};

bool ol_gate__parse_body(ol_arena_t *arena, const char *body, size_t len, const ol_json_t **out, ol_gate_check_t *c) {
    ol_json_t *root;
    const char *field; /* the field holding NUL, named in the answer */
    if (ol_json_parse(arena, body ? body : "", len, &root, &field, c->msg, sizeof(c->msg))) {
        c->field = field ? field : "body";
        return false;
    }
    if (root->type != OL_JSON_OBJECT)
        return fail(c, "body", "must be a JSON object, got %s", ol_json_kind(root));
    *out = root;
    return true;
}

bool ol_gate__check_buy(const ol_json_t *obj, bool authed, ol_gate_buy_t *out, ol_gate_check_t *c) {
    ol_gate_buy_t b = {0};
    b.has_level = !authed || ol_json_get(obj, "userLevel"); /* with gate.auth, the token's when absent */
    if (!check_known(c, obj, buy_fields) || !check_str(c, obj, "sessionID", true, 0, FIELD_MAX, &b.session) ||
        !check_str(c, obj, "clientIP", true, 1, 45, &b.client_ip) ||
        (!ip_ok(b.client_ip) && !fail(c, "clientIP", "must be an IPv4 or IPv6 address")) ||
        !check_str(c, obj, "userID", !authed, 1, FIELD_MAX, &b.user) ||
        (b.has_level && !check_int(c, obj, "userLevel", 0, INT32_MAX, &b.level)) ||
        !check_str(c, obj, "goodsSKU", true, 1, FIELD_MAX, &b.sku) ||
        !check_int(c, obj, "goodsQuantity", 1, INT32_MAX, &b.quantity) ||
        !check_str(c, obj, "requestID", false, 1, REQUEST_ID_MAX, &b.request_id) ||
        (b.request_id && !ol_gate__id_chars_ok(b.request_id) &&
         !fail(c, "requestID", "may only hold letters, digits and . _ : -")))
        return false;
    *out = b;
    return true;
}

bool ol_gate__check_checkout(const ol_json_t *obj, bool authed, ol_gate_checkout_t *out, ol_gate_check_t *c) {
    ol_gate_checkout_t k = {0};
    if (!check_known(c, obj, checkout_fields) || !check_str(c, obj, "userID", !authed, 1, FIELD_MAX, &k.user) ||
        !check_str(c, obj, "goodsSKU", true, 1, FIELD_MAX, &k.sku) ||
        !check_str(c, obj, "holdID", true, 1, FIELD_MAX, &k.hold))
        return false;
    *out = k;
    return true;
}

void ol_gate__buy_members(const ol_gate_buy_t *b, const char *request_id, const char *client_ip,
                          ol_json_member_t m[8]) {
    ol_json_member_str(&m[0], "request_id", request_id);
    ol_json_member_str(&m[1], "session_id", b->session);
    ol_json_member_str(&m[2], "client_ip", client_ip);
    ol_json_member_str(&m[3], "user_id", b->user);
    ol_json_member_int(&m[4], "user_level", b->level);
    ol_json_member_str(&m[5], "sku", b->sku);
    ol_json_member_int(&m[6], "quantity", b->quantity);
    ol_json_member_str(&m[7], "channel", "gate");
}

void ol_gate__checkout_members(const ol_gate_checkout_t *c, const char *request_id, ol_json_member_t m[4]) {
    ol_json_member_str(&m[0], "request_id", request_id);
    ol_json_member_str(&m[1], "hold_id", c->hold);
    ol_json_member_str(&m[2], "user_id", c->user);
    ol_json_member_str(&m[3], "sku", c->sku);
}
