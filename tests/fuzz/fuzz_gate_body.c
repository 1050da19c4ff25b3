/* Fuzz target gate_body: a POST /buy or POST /checkout body, handled as the
 * gate handles it apart from HTTP, rate limits and Kafka (producers/gate.c:
 * ol_gate__parse_body, ol_gate__check_buy, ol_gate__check_checkout,
 * ol_gate__buy_members, ol_gate__checkout_members). Every input is tried as
 * both, and each without gate.auth and with it (a token's user, which the
 * body may leave out but not contradict: ol_gate_auth_mismatch).
 *
 * Properties:
 *  - a refused body's 400 answer (ol_gate__answer_error) is JSON that a
 *    strict reader takes (UTF-8 included) and holds the reason and field;
 *  - an accepted body encodes: the gate's checks admit nothing the event
 *    contract refuses;
 *  - the record the gate would produce decodes on the consumers' path
 *    (ol_event_decode, as decide reads buy-requests) into exactly the fields
 *    the body gave, with the envelope the gate wrote, keyed by the SKU, and
 *    ol_event_check_key takes it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/util.h"
#include "fuzz.h"
#include "producers/gate.h"
#include "producers/gate_auth.h"

/* What the gate makes when the client chose no request id (ol_uuid_v4). */
#define GENERATED_ID "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"
#define SOURCE "orderlog/gate"

/* The user a token names, with gate.auth. */
static const ol_gate_auth_user_t token_user = {"UID0000000001", 5};

static ol_codec_t *codec;
static ol_arena_t *arena;
static const ol_event_type_t *et_buy, *et_checkout;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init(&codec, NULL, &arena);
    et_buy = ol_schema_find("BuyRequested");
    et_checkout = ol_schema_find("CheckoutRequested");
    if (!et_buy || !et_checkout)
        abort();
    return 0;
}

static void check_answer(const ol_gate_check_t *c) {
    char *answer = ol_gate__answer_error(c->msg, c->field);
    ol_json_t *doc;
    char errstr[512];
    FUZZ_CHECK(!ol_json_parse(arena, answer, strlen(answer), &doc, NULL, errstr, sizeof(errstr)),
               "the 400 answer is not JSON (%s): %s", errstr, answer);
    const ol_json_t *error = ol_json_get(doc, "error"), *field = ol_json_get(doc, "field");
    FUZZ_CHECK(error && error->type == OL_JSON_STRING && !strcmp(error->u.s, c->msg),
               "the 400 answer lost its error: %s", answer);
    FUZZ_CHECK(c->field ? field && field->type == OL_JSON_STRING && !strcmp(field->u.s, c->field) : !field,
               "the 400 answer lost its field: %s", answer);
    free(answer);
}

/* The gate's record for data (as et), read back as decide reads it. */
static void check_record(const ol_event_type_t *et, const ol_json_t *data, const char *subject, const char *sku) {
    ol_event_out_t ev;
    char errstr[512];
    FUZZ_CHECK(!ol_event_encode(codec, et, data, FUZZ_NOW_MS, SOURCE, &ev, errstr, sizeof(errstr)),
               "a body the gate accepts does not encode as %s: %s", et->name, errstr);
    FUZZ_CHECK(!strcmp(ev.key, sku), "%s keyed \"%s\", not by its SKU", et->name, ev.key);
    fuzz_record_t r = fuzz_record_new(ev.payload, ev.len, ev.key, strlen(ev.key), ev.hdrs);
    ol_envelope_t env;
    avro_value_t *value;
    fuzz_decode_as(codec, &r, arena, et, "the gate's", &env, &value);
    FUZZ_CHECK(!strcmp(env.id, ev.id) && env.time_ms == FUZZ_NOW_MS && !strcmp(env.source, SOURCE) &&
                   !strcmp(env.subject, subject),
               "the gate's %s envelope changed: id %s, time %lld, source %s, subject %s", et->name, env.id,
               (long long)env.time_ms, env.source, env.subject);
    FUZZ_CHECK(!ol_event_check_key(r.rkm, &env, value, errstr, sizeof(errstr)), "%s", errstr);
    const char *where;
    FUZZ_CHECK(fuzz_same_as_input(et->root, data, ol_codec_to_dom(et, value, arena), FUZZ_NOW_MS, &where),
               "the gate's %s decodes to other data: field %s", et->name, where);
    fuzz_record_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ol_gate_check_t c = {0};
    const ol_json_t *obj;
    ol_arena_reset(arena);
    /* the gate's body buffer: exactly the bytes received, NULL when none */
    char *body = size ? ol_xmalloc(size) : NULL;
    if (size)
        memcpy(body, data, size);
    if (!ol_gate__parse_body(arena, body, size, &obj, &c)) {
        check_answer(&c);
        free(body);
        return 0;
    }

    for (int authed = 0; authed <= 1; authed++) {
        ol_gate_buy_t b;
        c = (ol_gate_check_t){0};
        if (!ol_gate__check_buy(obj, authed, &b, &c)) {
            check_answer(&c);
        } else if (!authed || !ol_gate_auth_mismatch(&token_user, b.user, b.has_level ? &b.level : NULL)) {
            if (authed) { /* as body_is_who: the token's user and level */
                b.user = token_user.user;
                b.level = token_user.level;
            }
            const char *rid = b.request_id ? b.request_id : GENERATED_ID;
            ol_json_member_t m[8];
            ol_gate__buy_members(&b, rid, b.client_ip, m); /* as with gate.trust.body.client.ip */
            ol_json_t d = ol_json_object_of(m, 8);
            check_record(et_buy, &d, rid, b.sku);
        }

        ol_gate_checkout_t k;
        c = (ol_gate_check_t){0};
        if (!ol_gate__check_checkout(obj, authed, &k, &c)) {
            check_answer(&c);
        } else if (!authed || !ol_gate_auth_mismatch(&token_user, k.user, NULL)) {
            if (authed)
                k.user = token_user.user;
            ol_json_member_t m[4];
            ol_gate__checkout_members(&k, GENERATED_ID, m);
            ol_json_t d = ol_json_object_of(m, 4);
            check_record(et_checkout, &d, k.hold, k.sku);
        }
    }
    free(body);
    return 0;
}
