/* decide's snapshots (decide-snapshots) against the real broker:
 *  - a decider restored from snapshots decides every later request, checkout
 *    and cancel exactly as one that replays sale-events from its beginning
 *    (snapshots disabled), and reads far fewer facts back;
 *  - a snapshot left in a transaction its decider never finished (killed
 *    with -9 in the middle of it) is never used, nor is one whose bytes do
 *    not match its manifest; the same records committed are.
 * Outcomes are read back from sale-events with `orderlog tail`. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/util.h"
#include "helpers.h"

#define PARTITIONS 3
#define SKUS 6

static char dir[512];
static char prefixes[2][128];

static void setup(void) {
    ol_test_tmpdir(dir, sizeof(dir));
}

/* The options of every orderlog run on topics of prefix. */
static const char *args_of(const char *prefix) {
    static char args[2][512];
    static int turn;
    char *a = args[turn++ % 2];
    snprintf(a, sizeof(args[0]), "-X topic.prefix=%s -X topic.partitions=%d", prefix, PARTITIONS);
    return a;
}

static void teardown(void) {
    const char *groups[] = {"decide", "decide-restore", NULL};
    for (int i = 0; i < 2; i++)
        if (*prefixes[i])
            ol_test_cleanup(args_of(prefixes[i]), prefixes[i], groups, NULL, NULL);
    ol_test_rmtree(dir);
}

TestSuite(decide_snapshot, .init = setup, .fini = teardown, .timeout = 600);

static const char *use_topics(int i, const char *tag) {
    snprintf(prefixes[i], sizeof(prefixes[i]), "it_snap_%s_%ld_", tag, (long)getpid());
    free(ol_test_orderlogf_ok(args_of(prefixes[i]), "topics create"));
    return prefixes[i];
}

static void publish(const char *prefix, const char *name, const char *lines) {
    char file[300];
    snprintf(file, sizeof(file), "%s%s", prefix, name);
    ol_test_publish_file(args_of(prefix), dir, file, lines);
}

static ol_test_bg_t *decide_bg(const char *prefix, const char *extra) {
    return ol_test_orderlog_bg("%s %s decide", args_of(prefix), extra);
}

static json_t *read_sale(const char *prefix) {
    char *out = ol_test_orderlogf_ok(args_of(prefix), "tail sale-events --from beginning");
    json_t *recs = ol_test_json_lines(out);
    free(out);
    return recs;
}

static const char *dstr(json_t *rec, const char *field) {
    const char *s = json_string_value(json_object_get(json_object_get(rec, "data"), field));
    return s ? s : "";
}

static const char *type_of(json_t *rec) {
    return json_string_value(json_object_get(rec, "type"));
}

/* Decisions (BuyAccepted, BuyRejected) and hold outcomes (HoldConverted,
 * HoldReleased, CheckoutRejected) in sale-events. */
static void count_outcomes(json_t *recs, int *decisions, int *holds) {
    *decisions = *holds = 0;
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *t = type_of(r);
        *decisions += !strcmp(t, "BuyAccepted") || !strcmp(t, "BuyRejected");
        *holds += !strcmp(t, "HoldConverted") || !strcmp(t, "HoldReleased") || !strcmp(t, "CheckoutRejected");
    }
}

/* Waits (bounded) until sale-events of prefix holds at least the decisions
 * and hold outcomes given. */
static json_t *wait_outcomes(const char *prefix, int decisions, int holds, ol_test_bg_t *bg) {
    long long end = ol_test_now_ms() + 120000;
    for (;;) {
        json_t *recs = read_sale(prefix);
        int d, h;
        count_outcomes(recs, &d, &h);
        if (d >= decisions && h >= holds)
            return recs;
        json_decref(recs);
        cr_assert(ol_test_now_ms() < end, "%s: %d decisions and %d hold outcomes, expected %d and %d\n%s", prefix, d, h,
                  decisions, holds, ol_test_bg_stderr(bg));
        cr_assert_eq(ol_test_bg_wait(bg, 300), -1, "decide exited\n%s", ol_test_bg_stderr(bg));
    }
}

/* Every outcome as one line ("<kind> <id> <reason or total>"), sorted: two
 * deciders that decided alike give the same text. */
static char *outcomes_text(json_t *recs) {
    size_t n = json_array_size(recs), k = 0;
    const char **lines = calloc(n + 1, sizeof(*lines));
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        const char *t = type_of(r);
        json_t *d = json_object_get(r, "data");
        if (!strcmp(t, "BuyAccepted") || !strcmp(t, "BuyRejected"))
            lines[k++] = ol_test_strf("%s %s %s %lld", t, dstr(r, "request_id"), dstr(r, "reason"),
                                      (long long)json_integer_value(json_object_get(d, "quantity")));
        else if (!strcmp(t, "HoldConverted") || !strcmp(t, "HoldReleased"))
            lines[k++] = ol_test_strf("%s %s %s", t, dstr(r, "hold_id"), dstr(r, "reason"));
        else if (!strcmp(t, "CheckoutRejected"))
            lines[k++] = ol_test_strf("%s %s %s", t, dstr(r, "request_id"), dstr(r, "reason"));
        else if (!strcmp(t, "StockChanged"))
            lines[k++] = ol_test_strf("%s %s %lld %s", t, dstr(r, "sku"),
                                      (long long)json_integer_value(json_object_get(d, "total")), dstr(r, "cause"));
    }
    char *text = ol_test_sorted_join(lines, k);
    for (size_t j = 0; j < k; j++)
        free((char *)lines[j]);
    free(lines);
    return text;
}

/* The facts decide read back while restoring (summed over its restore log
 * lines, one per worker), and the partitions restored from a snapshot. */
static void restore_counts(const char *stderr_text, long long *facts, long long *from_snapshot) {
    *facts = *from_snapshot = 0;
    for (const char *p = stderr_text; (p = strstr(p, " partition(s) (")); p++) {
        long long snap = 0, f = 0;
        const char *q = strstr(p, ": ");
        if (sscanf(p, " partition(s) (%lld from a snapshot)", &snap) == 1 && q && sscanf(q, ": %lld facts", &f) == 1) {
            *facts += f;
            *from_snapshot += snap;
        }
    }
}

typedef struct buy_s {
    char id[32], user[16], sku[8];
    int level, qty;
} buy_t;

static void add_buy(char **text, const buy_t *b) {
    char *line = ol_test_strf("%s{\"type\":\"BuyRequested\",\"data\":{\"request_id\":\"%s\",\"session_id\":\"s\","
                              "\"client_ip\":\"10.0.0.1\",\"user_id\":\"%s\",\"user_level\":%d,\"sku\":\"%s\","
                              "\"quantity\":%d}}\n",
                              *text, b->id, b->user, b->level, b->sku, b->qty);
    free(*text);
    *text = line;
}

static void add_hold_cmd(char **text, const char *type, const char *id, const char *hold, const char *user,
                         const char *sku) {
    char *line = ol_test_strf("%s{\"type\":\"%s\",\"data\":{\"request_id\":\"%s\",\"hold_id\":\"%s\","
                              "\"user_id\":\"%s\",\"sku\":\"%s\"}}\n",
                              *text, type, id, hold, user, sku);
    free(*text);
    *text = line;
}

static char *catalog_text(void) {
    char *text = ol_test_strf("%s", "");
    for (int s = 0; s < SKUS; s++) {
        char *line = ol_test_strf("%s{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"K%d\",\"platform\":\"p\",\"title\":"
                                  "\"t\",\"price\":%d,\"currency\":\"CNY\",\"stock\":%d,\"version\":1}}\n"
                                  "{\"type\":\"PurchasePolicySet\",\"data\":{\"sku\":\"K%d\",\"min_level\":%d,"
                                  "\"default_limit\":%d}}\n",
                                  text, s, 100 + s, 25 + 5 * s, s, s % 2, 2 + s % 3);
        free(text);
        text = line;
    }
    return text;
}

/* One StockAdjusted of 0 per SKU: a transaction on every partition, whose
 * start writes the snapshots that are due. */
static char *ticks_text(void) {
    char *text = ol_test_strf("%s", "");
    for (int s = 0; s < SKUS; s++) {
        char *line = ol_test_strf("%s{\"type\":\"StockAdjusted\",\"data\":{\"sku\":\"K%d\",\"delta\":0,\"reason\":"
                                  "\"tick\"}}\n",
                                  text, s);
        free(text);
        text = line;
    }
    return text;
}

Test(decide_snapshot, a_restore_from_snapshots_decides_as_a_full_replay_and_reads_far_fewer_facts) {
    enum { N1 = 240, N2 = 120, RETRIES = 40, HOLDCMDS = 60 };
    srand(ol_test_seed("test_decide_snapshot"));
    const char *pa = use_topics(0, "with"), *pb = use_topics(1, "without");
    /* small chunks: a snapshot is many records */
    const char *xa = "-X decide.snapshot.facts=10 -X decide.snapshot.chunk.bytes=1024",
               *xb = "-X decide.snapshot.facts=0";
    char *cat = catalog_text(), *ticks = ticks_text();
    buy_t *buys = calloc(N1 + N2, sizeof(*buys));
    for (int i = 0; i < N1 + N2; i++) {
        buy_t *b = &buys[i];
        snprintf(b->id, sizeof(b->id), "%s-%d", i < N1 ? "one" : "two", i);
        snprintf(b->user, sizeof(b->user), "U%d", rand() % 25);
        snprintf(b->sku, sizeof(b->sku), "K%d", rand() % SKUS);
        b->level = rand() % 3;
        b->qty = 1 + rand() % 2;
    }
    char *one = ol_test_strf("%s", "");
    for (int i = 0; i < N1; i++)
        add_buy(&one, &buys[i]);
    /* after the restart: retries of decided requests, new requests,
     * checkouts and cancels of holds made before (some by another user) */
    char *two = ol_test_strf("%s", "");
    for (int i = 0; i < N2 + RETRIES + HOLDCMDS; i++) {
        if (i % 4 == 1 && i / 4 < RETRIES) {
            add_buy(&two, &buys[rand() % N1]);
        } else if (i % 4 == 3 && i / 4 < HOLDCMDS) {
            const buy_t *b = &buys[rand() % N1];
            char id[40], hold[40];
            snprintf(id, sizeof(id), "cmd-%d", i);
            snprintf(hold, sizeof(hold), "h-%s", b->id);
            add_hold_cmd(&two, rand() % 3 ? "CheckoutRequested" : "HoldCancelled", id, hold,
                         rand() % 5 ? b->user : "U99", b->sku);
        }
    }
    for (int i = N1; i < N1 + N2; i++)
        add_buy(&two, &buys[i]);
    int holdcmds = 0;
    for (const char *p = two; (p = strstr(p, "\"hold_id\"")); p++)
        holdcmds++;

    const char *ps[2] = {pa, pb}, *xs[2] = {xa, xb};
    ol_test_bg_t *bg[2];
    for (int k = 0; k < 2; k++) {
        publish(ps[k], "catalog.jsonl", cat);
        publish(ps[k], "one.jsonl", one);
        bg[k] = decide_bg(ps[k], xs[k]);
    }
    for (int k = 0; k < 2; k++) {
        json_decref(wait_outcomes(ps[k], N1, 0, bg[k]));
        publish(ps[k], "ticks.jsonl", ticks);
    }
    for (int k = 0; k < 2; k++) {
        /* the ticks decided: 2 StockChanged per SKU */
        long long end = ol_test_now_ms() + 60000;
        for (;;) {
            json_t *recs = read_sale(ps[k]);
            int stock = 0;
            size_t i;
            json_t *r;
            json_array_foreach(recs, i, r) stock += !strcmp(type_of(r), "StockChanged");
            json_decref(recs);
            if (stock >= 2 * SKUS)
                break;
            cr_assert(ol_test_now_ms() < end, "%s: ticks not decided\n%s", ps[k], ol_test_bg_stderr(bg[k]));
            ol_test_bg_wait(bg[k], 300);
        }
        ol_test_bg_stop_ok(bg[k], "decide", 30000);
        ol_test_bg_free(bg[k]);
    }

    for (int k = 0; k < 2; k++) {
        publish(ps[k], "two.jsonl", two);
        bg[k] = decide_bg(ps[k], xs[k]);
    }
    long long facts[2], snaps[2];
    char *text[2];
    for (int k = 0; k < 2; k++) {
        json_t *recs = wait_outcomes(ps[k], N1 + N2, holdcmds, bg[k]);
        ol_test_bg_wait(bg[k], 1000); /* nothing more comes */
        ol_test_bg_stop_ok(bg[k], "decide", 30000);
        json_decref(recs);
        recs = read_sale(ps[k]);
        int d, h;
        count_outcomes(recs, &d, &h);
        cr_assert_eq(d, N1 + N2, "%s: %d decisions: a retried request was decided again", ps[k], d);
        cr_assert_eq(h, holdcmds, "%s: %d hold outcomes for %d commands", ps[k], h, holdcmds);
        text[k] = outcomes_text(recs);
        json_decref(recs);
        restore_counts(ol_test_bg_stderr(bg[k]), &facts[k], &snaps[k]);
        cr_log_info("%s: restored %lld partitions from a snapshot, %lld facts read back", ps[k], snaps[k], facts[k]);
        fprintf(stderr, "test_decide_snapshot: %s: %lld partition(s) from a snapshot, %lld facts read back\n", ps[k],
                snaps[k], facts[k]);
        ol_test_bg_free(bg[k]);
    }
    cr_assert_str_eq(text[0], text[1], "the decider restored from snapshots decided otherwise");
    cr_assert_eq(snaps[1], 0, "snapshots disabled, yet restored from one");
    cr_assert_geq(snaps[0], 1, "no partition restored from a snapshot");
    cr_assert_geq(facts[1], N1, "the full replay read %lld facts", facts[1]);
    /* at most the facts after each partition's last snapshot: fewer than
     * decide.snapshot.facts, and the ticks */
    cr_assert_leq(facts[0], PARTITIONS * 9 + SKUS, "restored from snapshots, yet read %lld facts back (full: %lld)",
                  facts[0], facts[1]);
    for (int k = 0; k < 2; k++)
        free(text[k]);
    free(cat);
    free(ticks);
    free(one);
    free(two);
    free(buys);
}

/* ---- snapshots that must not be used ---------------------------------------- */

/* The records of a snapshot of partition p whose state is empty (no SKU,
 * no hold, no request id; the default window) covering sale-events up to
 * offset: were it loaded, decide would forget everything before offset. */
typedef struct forged_s {
    char keys[2][32];
    char chunk[64], manifest[256];
    size_t lens[2];
} forged_t;

static void forge(forged_t *f, int p, long long seq, long long offset, bool bad_hash) {
    /* "OLS1", window 3600000 (zigzag varint), stream 0, base 0, based 0,
     * 0 SKUs, 0 counters, 0 slices; then 0 prices (8 bytes) */
    static const uint8_t state[] = {'O', 'L', 'S', '1', 0x80, 0xba, 0xb7, 0x03, 0, 0, 0,
                                    0,   0,   0,   0,   0,    0,    0,    0,    0, 0, 0};
    for (int i = 0; i < 8; i++)
        f->chunk[i] = (char)((uint64_t)seq >> (56 - 8 * i));
    memcpy(f->chunk + 8, state, sizeof(state));
    f->lens[0] = 8 + sizeof(state);
    snprintf(f->keys[0], sizeof(f->keys[0]), "%d/0", p);
    snprintf(f->keys[1], sizeof(f->keys[1]), "%d/manifest", p);
    f->lens[1] = (size_t)snprintf(
        f->manifest, sizeof(f->manifest),
        "orderlog-decide-snapshot 1 seq=%lld offset=%lld chunks=1 bytes=%zu "
        "sale_bytes=%zu hash=%016llx",
        seq, offset, sizeof(state), sizeof(state) - 8,
        (unsigned long long)(ol_hash_fnv1a64(OL_FNV1A64_BASIS, state, sizeof(state)) ^ (bad_hash ? 1 : 0)));
}

static void produce_forged(const char *prefix, long long seq, bool bad_hash, const char *unfinished_txid) {
    char snap[256], sale[256];
    snprintf(snap, sizeof(snap), "%sdecide-snapshots", prefix);
    snprintf(sale, sizeof(sale), "%ssale-events", prefix);
    for (int p = 0; p < PARTITIONS; p++) {
        forged_t f;
        forge(&f, p, seq, ol_test_kafka_end_offset(sale, p), bad_hash);
        const char *keys[2] = {f.keys[0], f.keys[1]};
        const void *values[2] = {f.chunk, f.manifest};
        if (unfinished_txid) {
            ol_test_kafka_produce_unfinished(unfinished_txid, snap, p, keys, values, f.lens, 2);
        } else {
            for (int i = 0; i < 2; i++)
                ol_test_kafka_produce(snap, p, keys[i], strlen(keys[i]), values[i], f.lens[i], NULL);
        }
    }
}

Test(decide_snapshot, a_snapshot_of_an_unfinished_transaction_or_with_bad_bytes_is_never_used) {
    const char *pa = use_topics(0, "forged");
    const char *x = "-X decide.snapshot.facts=3 -X decide.workers=1";
    char *cat = catalog_text();
    publish(pa, "catalog.jsonl", cat);
    free(cat);
    char *one = ol_test_strf("%s", "");
    buy_t b = {.level = 1, .qty = 1};
    for (int s = 0; s < SKUS; s++) {
        snprintf(b.id, sizeof(b.id), "first-%d", s);
        snprintf(b.user, sizeof(b.user), "U%d", s);
        snprintf(b.sku, sizeof(b.sku), "K%d", s);
        add_buy(&one, &b);
    }
    publish(pa, "one.jsonl", one);
    ol_test_bg_t *bg = decide_bg(pa, x);
    json_decref(wait_outcomes(pa, SKUS, 0, bg));
    ol_test_bg_stop_ok(bg, "decide", 30000);
    ol_test_bg_free(bg);

    /* 1. a newer snapshot in a transaction of decide's own transactional id
     *    that never finished (as decide killed with -9 while writing it):
     *    aborted by the restart, never read */
    char txid[256];
    snprintf(txid, sizeof(txid), "%sdecide-0-0", pa);
    produce_forged(pa, 999, false, txid);
    /* 2. a committed one whose bytes do not match its manifest */
    publish(pa, "again1.jsonl", one); /* retries: no second decision */
    bg = decide_bg(pa, x);
    json_decref(wait_outcomes(pa, SKUS, 0, bg));
    ol_test_bg_wait_stderr(bg, "restored", 1, 60000);
    ol_test_bg_wait(bg, 2000);
    ol_test_bg_stop_ok(bg, "decide", 30000);
    cr_assert(!strstr(ol_test_bg_stderr(bg), "snapshot 999 loaded"), "the unfinished snapshot was used:\n%s",
              ol_test_bg_stderr(bg));
    ol_test_bg_free(bg);
    produce_forged(pa, 1000, true, NULL);
    bg = decide_bg(pa, x);
    ol_test_bg_wait_stderr(bg, "restored", 1, 60000);
    cr_assert(strstr(ol_test_bg_stderr(bg), "snapshot not used (snapshot 1000: bytes do not match its manifest)"), "%s",
              ol_test_bg_stderr(bg));
    ol_test_bg_stop_ok(bg, "decide", 30000);
    ol_test_bg_free(bg);

    /* the state is whole: the retries got nothing, the stock and the
     * limits still count the first holds */
    char *two = ol_test_strf("%s", "");
    for (int s = 0; s < SKUS; s++) {
        snprintf(b.id, sizeof(b.id), "second-%d", s);
        snprintf(b.user, sizeof(b.user), "U%d", s);
        snprintf(b.sku, sizeof(b.sku), "K%d", s);
        b.qty = 2 + s % 3; /* the limit, 2 + s % 3, with the unit held before: over it */
        add_buy(&two, &b);
    }
    publish(pa, "again2.jsonl", one);
    publish(pa, "two.jsonl", two);
    bg = decide_bg(pa, x);
    json_t *recs = wait_outcomes(pa, 2 * SKUS, 0, bg);
    ol_test_bg_wait(bg, 1000);
    ol_test_bg_stop_ok(bg, "decide", 30000);
    ol_test_bg_free(bg);
    json_decref(recs);
    recs = read_sale(pa);
    int d, h;
    count_outcomes(recs, &d, &h);
    cr_assert_eq(d, 2 * SKUS, "%d decisions: a retry was decided again", d);
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        if (strcmp(type_of(r), "BuyRejected") && strcmp(type_of(r), "BuyAccepted"))
            continue;
        const char *id = dstr(r, "request_id");
        if (!strncmp(id, "first-", 6))
            cr_assert_str_eq(type_of(r), "BuyAccepted", "%s", id);
        else
            cr_assert(!strcmp(type_of(r), "BuyRejected") && !strcmp(dstr(r, "reason"), "limit"),
                      "%s: %s %s, expected the limit (the first unit still held)", id, type_of(r), dstr(r, "reason"));
    }
    json_decref(recs);

    /* 3. the same records as 1., committed: used (so 1. was well-formed and
     *    ignored for its transaction alone) */
    produce_forged(pa, 5000, false, NULL);
    bg = decide_bg(pa, x);
    ol_test_bg_wait_stderr(bg, "snapshot 5000 loaded", 1, 60000);
    cr_assert(strstr(ol_test_bg_stderr(bg), "snapshot 5000 loaded"), "%s", ol_test_bg_stderr(bg));
    ol_test_bg_stop_ok(bg, "decide", 30000);
    ol_test_bg_free(bg);
    free(one);
    free(two);
}

/* decide's producer knows the partitions of every topic it writes from its
 * start. librdkafka (2.0.2) learns those of a topic first named in a produce
 * call only at its next scan of unknown topics, once a second, and keeps
 * the records meanwhile unassigned to a partition (kafka.debug=topic logs
 * "Partitioning <n> unassigned messages" when it learns them); the first
 * facts and the first snapshot of a run held their transaction's commit for
 * up to a second. */
Test(decide_snapshot, the_producer_knows_its_topics_before_the_first_facts_and_snapshot) {
    const char *p = use_topics(0, "known");
    char *cat = catalog_text(), *one = ol_test_strf("%s", ""), *two = ol_test_strf("%s", "");
    for (int i = 0; i < 40; i++) {
        buy_t b = {.level = 2, .qty = 1};
        snprintf(b.id, sizeof(b.id), "known-%d", i);
        snprintf(b.user, sizeof(b.user), "U%d", i);
        snprintf(b.sku, sizeof(b.sku), "K%d", i % SKUS);
        add_buy(i < 20 ? &one : &two, &b);
    }
    publish(p, "catalog.jsonl", cat);
    publish(p, "one.jsonl", one);
    ol_test_bg_t *bg = decide_bg(p, "-X decide.snapshot.facts=1 -X kafka.debug=topic -X log.level=debug");
    json_decref(wait_outcomes(p, 20, 0, bg));
    /* the next transaction begins with a snapshot of the partitions that
     * decided the first requests */
    publish(p, "two.jsonl", two);
    json_decref(wait_outcomes(p, 40, 0, bg));
    ol_test_bg_stop_ok(bg, "decide", 60000);
    const char *err = ol_test_bg_stderr(bg);
    cr_assert(strstr(err, "snapshot 1 of "), "no snapshot written:\n%s", err);
    for (const char *line = err; *line;) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        char *l = strndup(line, n);
        const char *u = strstr(l, "Partitioning ");
        if (strstr(l, "#producer") && u && strstr(u, "unassigned messages"))
            cr_expect_eq(atoi(u + strlen("Partitioning ")), 0,
                         "the producer wrote to a topic whose partitions it did not know yet: %s", l);
        free(l);
        line += n + (end != NULL);
    }
    ol_test_bg_free(bg);
    free(cat);
    free(one);
    free(two);
}
