/* Token buckets by key: the burst, the refill rate, keys apart, the bound on
 * keys (least recently seen forgotten), no limit at rate 0, and threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "common/base/tokenbucket.h"

static int takes(ol_tokenbucket_t *rl, const char *key, int n, int64_t now_us) {
    int ok = 0;
    for (int i = 0; i < n; i++)
        ok += ol_tokenbucket_take(rl, key, strlen(key), now_us);
    return ok;
}

Test(tokenbucket, admits_the_burst_then_throttles) {
    ol_tokenbucket_t *rl = ol_tokenbucket_new(10, 5, 100);
    cr_expect_eq(takes(rl, "10.0.0.1", 8, 1000000), 5);
    ol_tokenbucket_destroy(rl);
}

Test(tokenbucket, refills_at_the_rate_up_to_the_burst) {
    ol_tokenbucket_t *rl = ol_tokenbucket_new(10, 5, 100);
    int64_t t = 1000000;
    cr_expect_eq(takes(rl, "a", 5, t), 5);
    cr_expect_eq(takes(rl, "a", 1, t + 50000), 0, "half a token after 50 ms");
    cr_expect_eq(takes(rl, "a", 4, t + 300000), 3, "three tokens 300 ms after the burst");
    cr_expect_eq(takes(rl, "a", 10, t + 60000000), 5, "a long idle time fills the bucket to the burst only");
    ol_tokenbucket_destroy(rl);
}

Test(tokenbucket, keys_have_buckets_of_their_own) {
    ol_tokenbucket_t *rl = ol_tokenbucket_new(1, 2, 100);
    cr_expect_eq(takes(rl, "a", 3, 0), 2);
    cr_expect_eq(takes(rl, "b", 3, 0), 2);
    cr_expect_eq(takes(rl, "", 3, 0), 2, "the empty key is a key too");
    cr_expect_eq(ol_tokenbucket_count(rl), 3);
    ol_tokenbucket_destroy(rl);
}

Test(tokenbucket, forgets_the_least_recently_seen_key_past_the_bound) {
    ol_tokenbucket_t *rl = ol_tokenbucket_new(1, 1, 16);
    char key[32];
    for (int i = 0; i < 16; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        cr_assert_eq(takes(rl, key, 1, 0), 1);
    }
    cr_expect_eq(takes(rl, "k1", 1, 1), 0, "k1 is empty and now the most recently seen");
    cr_expect_eq(takes(rl, "new", 1, 2), 1, "a 17th key pushes out k0");
    cr_expect_eq(ol_tokenbucket_count(rl), 16);
    cr_expect_eq(takes(rl, "k0", 1, 3), 1, "k0 was forgotten: a full bucket again");
    cr_expect_eq(takes(rl, "k1", 1, 4), 0, "k1 was kept");
    ol_tokenbucket_destroy(rl);
}

Test(tokenbucket, rate_zero_is_no_limit) {
    ol_tokenbucket_t *rl = ol_tokenbucket_new(0, 1, 16);
    cr_expect_eq(takes(rl, "a", 1000, 0), 1000);
    cr_expect_eq(ol_tokenbucket_count(rl), 0);
    ol_tokenbucket_destroy(rl);
}

static ol_tokenbucket_t *shared;
static atomic_int admitted;

static void *taker(void *arg) {
    (void)arg;
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "ip%d", i % 500);
        if (ol_tokenbucket_take(shared, key, strlen(key), 0))
            atomic_fetch_add(&admitted, 1);
    }
    return NULL;
}

Test(tokenbucket, threads_spend_each_token_once) {
    shared = ol_tokenbucket_new(1, 10, 100000);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, taker, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(atomic_load(&admitted), 500 * 10, "500 keys, 10 tokens each, the clock stopped");
    ol_tokenbucket_destroy(shared);
}
