/* The gate's waiting side: answers as JSON, the decision cache, the wait
 * table and its deadlines, delivery reports, and the sale-events reader that
 * completes waits (see producers/gate.h for the design). */
#include "producers/gate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/domain/consume.h"
#include "common/domain/event.h"
#include "common/domain/sale_events.h"
#include "common/base/json.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/strbuf.h"
#include "common/base/util.h"

#define MSG_ORDER_PLACED "the order is placed, please make payments within half an hour"

static const char *const reason_names[] = {REASONS(NAME_STR)};

/* ---- answers (JSON built in an ol_strbuf_t) ------------------------------- */

/* s as a JSON string, quoted. */
static void sb_json(ol_strbuf_t *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    ol_strbuf_put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        ol_strbuf_put(b, run, (size_t)(s - run));
        char esc[7] = {'\\', (char)c, 0};
        if (c < 0x20) {
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            ol_strbuf_put(b, esc, 6);
        } else {
            ol_strbuf_put(b, esc, 2);
        }
        run = s + 1;
    }
    ol_strbuf_put(b, run, (size_t)(s - run));
    ol_strbuf_put(b, "\"", 1);
}

/* `,"name":"value"` */
static void sb_field(ol_strbuf_t *b, const char *name, const char *value) {
    ol_strbuf_puts(b, ",\"");
    ol_strbuf_puts(b, name);
    ol_strbuf_puts(b, "\":");
    sb_json(b, value);
}

/* ---- answers (new strings) ----------------------------------------------- */

const char ol_gate__throttled_json[] =
    "{\"reponseMsg\":\"Too many requests, please try later.\",\"repResult\":false,\"isThrottled\":true,"
    "\"version\":\"" API_VERSION "\"}";

static void sb_head(ol_strbuf_t *b, const char *msg, bool result) {
    ol_strbuf_puts(b, "{\"reponseMsg\":");
    sb_json(b, msg);
    ol_strbuf_puts(b, result ? ",\"repResult\":true" : ",\"repResult\":false");
    ol_strbuf_puts(b, ",\"isThrottled\":false,\"version\":\"" API_VERSION "\"");
}

char *ol_gate__answer_accepted(const char *request_id, const char *hold_id, int64_t expires_ms) {
    ol_strbuf_t b = OL_STRBUF_INIT;
    char ts[40];
    ol_time_format(expires_ms, ts, sizeof(ts));
    sb_head(&b, OL_SALE_MSG_ACCEPTED, true);
    sb_field(&b, "requestID", request_id);
    sb_field(&b, "holdID", hold_id);
    sb_field(&b, "expiresAt", ts);
    ol_strbuf_puts(&b, "}");
    return b.p;
}

char *ol_gate__answer_rejected(const char *request_id, const char *message, const char *reason) {
    ol_strbuf_t b = OL_STRBUF_INIT;
    sb_head(&b, message, false);
    sb_field(&b, "requestID", request_id);
    sb_field(&b, "reason", reason);
    ol_strbuf_puts(&b, "}");
    return b.p;
}

char *ol_gate__answer_pending(const req_t *r) {
    ol_strbuf_t b = OL_STRBUF_INIT;
    ol_strbuf_puts(&b, "{\"requestID\":");
    sb_json(&b, r->request_id);
    if (r->ep == EP_CHECKOUT) {
        sb_field(&b, "holdID", r->hold_id);
        ol_strbuf_puts(&b, ",\"status\":\"pending\"}");
    } else {
        ol_strbuf_puts(&b, ",\"status\":\"pending\",\"poll\":\"/buy/");
        ol_strbuf_puts(&b, r->request_id); /* [A-Za-z0-9._:-] only */
        ol_strbuf_puts(&b, "\"}");
    }
    return b.p;
}

/* {"error":<error>[,"<name>":<value> when value is set]<rest>; a new string. */
static char *answer_with_error(const char *error, const char *name, const char *value, const char *rest) {
    ol_strbuf_t b = OL_STRBUF_INIT;
    ol_strbuf_puts(&b, "{\"error\":");
    sb_json(&b, error);
    if (value)
        sb_field(&b, name, value);
    ol_strbuf_puts(&b, rest);
    return b.p;
}

char *ol_gate__answer_error(const char *error, const char *field) {
    return answer_with_error(error, "field", field, "}");
}

char *ol_gate__answer_unavailable(const char *error, const char *request_id) {
    return answer_with_error(error, "requestID", request_id && *request_id ? request_id : NULL,
                             ",\"retry\":\"safe: send the same request with the same requestID, it is decided once\"}");
}

static const char *hold_reject_message(const char *reason) {
    if (!strcmp(reason, "not_owner"))
        return "The hold belongs to another user.";
    if (!strcmp(reason, "released"))
        return "The hold was released.";
    if (!strcmp(reason, "converted"))
        return "The hold is already checked out.";
    if (!strcmp(reason, "expired"))
        return "The hold has expired.";
    return "There is no such hold.";
}

int ol_gate__reason_index(const char *s) {
    for (int i = 0; i < REASON_OTHER; i++)
        if (!strcmp(reason_names[i], s))
            return i;
    return REASON_OTHER;
}

const char *ol_gate__reason_name(int reason) {
    return reason >= 0 && reason < NREASONS ? reason_names[reason] : "other";
}

/* ---- the decision cache (under g->lock) ----------------------------------- */

static uint32_t hash_str(const char *s) {
    return ol_hash_fnv1a32(s, strlen(s));
}

void ol_gate__cache_init(cache_t *c, size_t cap) {
    c->cap = cap;
    c->nbuckets = 16;
    while (c->nbuckets < cap)
        c->nbuckets *= 2;
    c->table = ol_xcalloc(c->nbuckets, sizeof(*c->table));
    c->ring = ol_xcalloc(cap, sizeof(*c->ring));
}

void ol_gate__cache_free(cache_t *c) {
    for (size_t i = 0; i < c->cap; i++) {
        if (c->ring[i]) {
            free(c->ring[i]->answer);
            free(c->ring[i]->owner);
            free(c->ring[i]);
        }
    }
    free(c->ring);
    free(c->table);
}

centry_t *ol_gate__cache_get(cache_t *c, const char *key) {
    centry_t *e = c->table[hash_str(key) & (c->nbuckets - 1)];
    while (e && strcmp(e->key, key))
        e = e->hnext;
    return e;
}

/* Records a decision (answer taken) or, with answer NULL, that the request
 * is pending; a decision is never replaced by "pending". */
void ol_gate__cache_put(cache_t *c, const char *key, const char *owner, char *answer, outcome_t outcome, int reason) {
    centry_t *e = ol_gate__cache_get(c, key);
    if (e) {
        if (answer) {
            free(e->answer);
            e->answer = answer;
            if (owner) {
                free(e->owner);
                e->owner = ol_xstrdup(owner);
            }
            e->outcome = outcome;
            e->reason = reason;
        }
        return;
    }
    centry_t *old = c->ring[c->pos];
    if (old) {
        centry_t **pp = &c->table[hash_str(old->key) & (c->nbuckets - 1)];
        while (*pp != old)
            pp = &(*pp)->hnext;
        *pp = old->hnext;
        free(old->answer);
        free(old->owner);
        free(old);
        c->count--;
    }
    size_t klen = strlen(key);
    e = ol_xmalloc(sizeof(*e) + klen + 1);
    memcpy(e->key, key, klen + 1);
    e->answer = answer;
    e->owner = owner ? ol_xstrdup(owner) : NULL;
    e->outcome = outcome;
    e->reason = reason;
    size_t b = hash_str(key) & (c->nbuckets - 1);
    e->hnext = c->table[b];
    c->table[b] = e;
    c->ring[c->pos] = e;
    c->pos = (c->pos + 1) % c->cap;
    c->count++;
}

/* ---- the wait table and the deadline list (under g->lock) ---------------- */

void ol_gate__wait_add(gate_t *g, req_t *r) {
    for (int i = 0; i < r->nkeys; i++) {
        wnode_t *n = &r->nodes[i];
        n->req = r;
        n->key = r->keys[i];
        size_t b = hash_str(n->key) & (WAIT_BUCKETS - 1);
        n->next = g->wtable[b];
        g->wtable[b] = n;
    }
    r->in_table = true;
    g->waiting++;
    atomic_store(&g->waiting_now, (long long)g->waiting);
}

void ol_gate__wait_remove(gate_t *g, req_t *r) {
    if (!r->in_table)
        return;
    for (int i = 0; i < r->nkeys; i++) {
        wnode_t **pp = &g->wtable[hash_str(r->keys[i]) & (WAIT_BUCKETS - 1)];
        while (*pp != &r->nodes[i])
            pp = &(*pp)->next;
        *pp = r->nodes[i].next;
    }
    r->in_table = false;
    g->waiting--;
    atomic_store(&g->waiting_now, (long long)g->waiting);
}

bool ol_gate__wait_exists(gate_t *g, const char *key, const char *user) {
    for (wnode_t *n = g->wtable[hash_str(key) & (WAIT_BUCKETS - 1)]; n; n = n->next)
        if (!strcmp(n->key, key) && (!user || (n->req->authed && !strcmp(n->req->who.user, user))))
            return true;
    return false;
}

static void timer_insert(gate_t *g, req_t *r) {
    req_t *after = g->timers.tail; /* deadlines arrive nearly in order: walk from the tail */
    while (after && after->deadline_us > r->deadline_us)
        after = after->timer.prev;
    OL_LIST_INSERT_AFTER(&g->timers, after, r, timer);
    r->in_timer = true;
    if (g->timers.head == r)
        pthread_cond_signal(&g->timer_cond);
}

static void timer_remove(gate_t *g, req_t *r) {
    if (!r->in_timer)
        return;
    OL_LIST_REMOVE(&g->timers, r, timer);
    r->in_timer = false;
}

void ol_gate__set_answer(req_t *r, unsigned status, char *answer, outcome_t outcome, int reason) {
    free(r->answer);
    r->status = status;
    r->answer = answer;
    r->outcome = outcome;
    r->reason = reason;
    r->done = true;
}

/* Answers r "pending" and remembers that for GET /buy/<id>. */
static void set_pending(gate_t *g, req_t *r) {
    ol_gate__set_answer(r, MHD_HTTP_ACCEPTED, ol_gate__answer_pending(r), OUT_PENDING, -1);
    if (r->ep == EP_BUY)
        ol_gate__cache_put(&g->cache, r->request_id, r->authed ? r->who.user : NULL, NULL, OUT_PENDING, -1);
}

static void resume(gate_t *g, req_t *r) {
    (void)g;
    MHD_resume_connection(r->conn);
}

/* Delivery reports, on the poll thread. */
void ol_gate__dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    gate_t *g = opaque;
    req_t *r = rkm->_private;
    if (!r)
        return;
    bool wake = false;
    pthread_mutex_lock(&g->lock);
    r->produced = true;
    if (rkm->err) {
        ol_gate__wait_remove(g, r);
        if (!r->done) {
            char msg[200];
            snprintf(msg, sizeof(msg), "could not write the request to Kafka: %s", rd_kafka_err2str(rkm->err));
            ol_gate__set_answer(r, MHD_HTTP_SERVICE_UNAVAILABLE, ol_gate__answer_unavailable(msg, r->request_id),
                                OUT_UNAVAILABLE, -1);
        }
        wake = true;
    } else if (r->done) {
        wake = true; /* decided before Kafka acknowledged */
    } else if (r->nowait || atomic_load(&g->stopping) || ol_time_mono_us() >= r->deadline_us) {
        ol_gate__wait_remove(g, r);
        set_pending(g, r);
        wake = true;
    } else {
        timer_insert(g, r);
    }
    pthread_mutex_unlock(&g->lock);
    if (rkm->err)
        atomic_fetch_add(&g->m.delivery_failed, 1);
    else
        atomic_store(&g->producer_up, true);
    if (wake)
        resume(g, r);
}

void *ol_gate__poll_main(void *arg) {
    gate_t *g = arg;
    while (!atomic_load(&g->threads_stop))
        rd_kafka_poll(g->rk, 50);
    return NULL;
}

/* Takes the requests whose deadline is at or before now off the timers
 * and the wait table, pending; the list of them to resume (linked by
 * timer.next). Under g->lock. */
static req_t *take_due(gate_t *g, int64_t now) {
    req_t *due = NULL;
    while (g->timers.head && g->timers.head->deadline_us <= now) {
        req_t *r = g->timers.head;
        timer_remove(g, r);
        ol_gate__wait_remove(g, r);
        set_pending(g, r);
        r->timer.next = due; /* reused as the list of requests to resume */
        due = r;
    }
    return due;
}

/* Resumes the requests of a list of take_due (outside g->lock). */
static void resume_list(gate_t *g, req_t *due) {
    while (due) {
        req_t *next = due->timer.next;
        due->timer.next = NULL;
        resume(g, due);
        due = next;
    }
}

void *ol_gate__timer_main(void *arg) {
    gate_t *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!atomic_load(&g->threads_stop)) {
        int64_t now = ol_time_mono_us();
        req_t *due = take_due(g, now);
        if (due) {
            pthread_mutex_unlock(&g->lock);
            resume_list(g, due);
            pthread_mutex_lock(&g->lock);
            continue;
        }
        int64_t wait_us = g->timers.head ? g->timers.head->deadline_us - now : 200000;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (wait_us % 1000000) * 1000;
        ts.tv_sec += wait_us / 1000000 + ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&g->timer_cond, &g->lock, &ts);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

/* ---- decisions from sale-events ------------------------------------------ */

/* The reason a rejecting fact gives, as sale-events names it ("" for the
 * others). */
static const char *reason_of(const ol_fact_t *f) {
    return f->kind == OL_FACT_BUY_REJECTED        ? ol_reject_name(f->reject)
           : f->kind == OL_FACT_CHECKOUT_REJECTED ? ol_hold_reject_name(f->hold_reject)
                                                  : "";
}

/* The answer f gives the waiting request r (under g->lock). */
static void answer_fact(req_t *r, const ol_fact_t *f, const char *buy_answer) {
    ol_strbuf_t b = OL_STRBUF_INIT;
    switch (f->kind) {
    case OL_FACT_BUY_ACCEPTED:
        ol_gate__set_answer(r, MHD_HTTP_OK, ol_xstrdup(buy_answer), OUT_ACCEPTED, -1);
        return;
    case OL_FACT_BUY_REJECTED:
        ol_gate__set_answer(r, MHD_HTTP_OK, ol_xstrdup(buy_answer), OUT_REJECTED, ol_gate__reason_index(reason_of(f)));
        return;
    case OL_FACT_HOLD_CONVERTED:
        sb_head(&b, MSG_ORDER_PLACED, true);
        sb_field(&b, "requestID", r->request_id);
        sb_field(&b, "holdID", f->hold_id);
        sb_field(&b, "orderID", f->order_id);
        ol_strbuf_puts(&b, "}");
        ol_gate__set_answer(r, MHD_HTTP_OK, b.p, OUT_ACCEPTED, -1);
        return;
    default:
        sb_head(&b, hold_reject_message(reason_of(f)), false);
        sb_field(&b, "requestID", r->request_id);
        sb_field(&b, "holdID", f->hold_id);
        sb_field(&b, "reason", reason_of(f));
        ol_strbuf_puts(&b, "}");
        ol_gate__set_answer(r, MHD_HTTP_CONFLICT, b.p, OUT_REJECTED, ol_gate__reason_index(reason_of(f)));
        return;
    }
}

/* Completes every request waiting on key with f; caches buy decisions. An
 * authenticated request is completed by its own user's facts only: another
 * user's request with the same request id or hold gets 202 pending at its
 * deadline, and nothing of the other user's decision. */
static void deliver(gate_t *g, const char *key, const ol_fact_t *f) {
    char *buy_answer = NULL;
    if (f->kind == OL_FACT_BUY_ACCEPTED)
        buy_answer = ol_gate__answer_accepted(f->request_id, f->hold_id, f->expires_at);
    else if (f->kind == OL_FACT_BUY_REJECTED)
        buy_answer = ol_gate__answer_rejected(f->request_id, f->message, reason_of(f));
    req_t *wake[64];
    int nwake = 0;
    pthread_mutex_lock(&g->lock);
    /* too_old is no decision: a decision the gate knows stands, and is the
     * answer */
    centry_t *known = f->kind == OL_FACT_BUY_REJECTED && f->reject == OL_REJECT_TOO_OLD
                          ? ol_gate__cache_get(&g->cache, f->request_id)
                          : NULL;
    if (known && (!known->answer || known->reason == REASON_TOO_OLD))
        known = NULL;
    if (buy_answer && !known)
        ol_gate__cache_put(&g->cache, f->request_id, f->user_id, ol_xstrdup(buy_answer),
                           f->kind == OL_FACT_BUY_ACCEPTED ? OUT_ACCEPTED : OUT_REJECTED,
                           f->kind == OL_FACT_BUY_REJECTED ? ol_gate__reason_index(reason_of(f)) : -1);
    for (;;) {
        req_t *r = NULL;
        for (wnode_t *n = g->wtable[hash_str(key) & (WAIT_BUCKETS - 1)]; n && !r; n = n->next)
            if (!strcmp(n->key, key) && ol_gate__owner_ok(n->req, f->user_id))
                r = n->req;
        if (!r)
            break;
        ol_gate__wait_remove(g, r);
        timer_remove(g, r);
        if (known)
            ol_gate__set_answer(r, MHD_HTTP_OK, ol_xstrdup(known->answer), known->outcome, known->reason);
        else
            answer_fact(r, f, buy_answer);
        if (r->produced) { /* else the delivery report resumes it */
            if (nwake == 64) {
                pthread_mutex_unlock(&g->lock);
                for (int i = 0; i < nwake; i++)
                    resume(g, wake[i]);
                nwake = 0;
                pthread_mutex_lock(&g->lock);
            }
            wake[nwake++] = r;
        }
    }
    pthread_mutex_unlock(&g->lock);
    for (int i = 0; i < nwake; i++)
        resume(g, wake[i]);
    free(buy_answer);
}

static bool wanted_type(const void *v, size_t n) {
    static const char *const types[] = {"orderlog.BuyAccepted", "orderlog.BuyRejected", "orderlog.HoldConverted",
                                        "orderlog.CheckoutRejected"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strlen(types[i]) == n && !memcmp(types[i], v, n))
            return true;
    return false;
}

static void on_fact(void *opaque, ol_codec_t *codec, ol_arena_t *arena, const rd_kafka_message_t *rkm) {
    gate_t *g = opaque;
    rd_kafka_headers_t *hdrs;
    const void *v;
    size_t n;
    if (!rd_kafka_message_headers(rkm, &hdrs) && !rd_kafka_header_get_last(hdrs, "ce_type", &v, &n) &&
        !wanted_type(v, n))
        return; /* stock, policy, releases: not for the gate */
    char errstr[512];
    ol_envelope_t env;
    avro_value_t *value;
    ol_arena_reset(arena);
    if (ol_event_decode(codec, rkm, arena, &env, &value, errstr, sizeof(errstr))) {
        ol_log_warn("skipping %s[%d]@%lld: %s", rd_kafka_topic_name(rkm->rkt), (int)rkm->partition,
                    (long long)rkm->offset, errstr);
        return;
    }
    ol_fact_t f;
    if (!ol_sale_events_decode(env.type->name, ol_codec_to_dom(env.type, value, arena), arena, &f, NULL))
        return;
    char key[KEY_SIZE + 256];
    switch (f.kind) {
    case OL_FACT_BUY_ACCEPTED:
    case OL_FACT_BUY_REJECTED:
        snprintf(key, sizeof(key), "b:%s", f.request_id);
        break;
    case OL_FACT_HOLD_CONVERTED:
        snprintf(key, sizeof(key), "h:%s", f.hold_id);
        break;
    case OL_FACT_CHECKOUT_REJECTED:
        if (f.op != OL_HOLD_OP_CHECKOUT)
            return;
        snprintf(key, sizeof(key), "c:%s", f.request_id);
        break;
    default:
        return;
    }
    atomic_fetch_add(&g->m.facts[f.kind], 1);
    deliver(g, key, &f);
}

void *ol_gate__consumer_main(void *arg) {
    gate_t *g = arg;
    ol_consume_until(g->rkc, &g->threads_stop, "", g->topic_sale, 0, on_fact, g);
    return NULL;
}

void ol_gate__expire_all(gate_t *g) {
    pthread_mutex_lock(&g->lock);
    req_t *due = take_due(g, INT64_MAX);
    pthread_mutex_unlock(&g->lock);
    resume_list(g, due);
}
