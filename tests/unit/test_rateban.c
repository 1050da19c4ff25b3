/* guard's windows and bans (common/domain/rateban.h): thresholds at and over the
 * limit, the window's edges and sliding, out-of-order requests, bans not
 * issued twice, lifts, manual entries, eviction and memory. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common/domain/rateban.h"
#include "testutil.h"

#define T0 1795359845000LL
#define WINDOW 10000
#define BAN 60000

static ol_rateban_t *rw;

static ol_rateban_t *watch(uint32_t ip_max, uint32_t user_max, size_t max_subjects) {
    ol_rateban_conf_t c = {
        .window_ms = WINDOW, .ban_ms = BAN, .ip_max = ip_max, .user_max = user_max, .max_subjects = max_subjects};
    return ol_rateban_new(&c);
}

static void setup(void) {
    rw = watch(5, 3, 0);
}

static void teardown(void) {
    ol_rateban_destroy(rw);
}

TestSuite(rateban, .init = setup, .fini = teardown);

/* n requests of an IP at t, expecting no ban. */
static void hits_ok(ol_subject_t type, const char *subject, int n, int64_t t) {
    ol_rateban_ban_t ban;
    for (int i = 0; i < n; i++)
        cr_assert(!ol_rateban_hit(rw, type, subject, t, &ban), "request %d of %s at %lld banned", i + 1, subject,
                  (long long)t);
}

static ol_rateban_ban_t hit_banned(ol_subject_t type, const char *subject, int64_t t) {
    ol_rateban_ban_t ban;
    cr_assert(ol_rateban_hit(rw, type, subject, t, &ban), "request of %s at %lld not banned", subject, (long long)t);
    cr_assert_eq(ban.type, type);
    cr_assert_str_eq(ban.subject, subject);
    return ban;
}

Test(rateban, allows_exactly_max_requests_in_a_window) {
    hits_ok(OL_SUBJECT_IP, "10.0.0.1", 5, T0);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "10.0.0.1"), 5);
    cr_assert(!ol_rateban_listed(rw, OL_SUBJECT_IP, "10.0.0.1", NULL, NULL));
    hits_ok(OL_SUBJECT_USER, "u-1", 3, T0);
    cr_assert(!ol_rateban_listed(rw, OL_SUBJECT_USER, "u-1", NULL, NULL));
}

Test(rateban, bans_one_over_max_until_request_time_plus_ban) {
    hits_ok(OL_SUBJECT_IP, "10.0.0.1", 5, T0);
    ol_rateban_ban_t ban = hit_banned(OL_SUBJECT_IP, "10.0.0.1", T0 + 1234);
    cr_assert_eq(ban.until_ms, T0 + 1234 + BAN);
    cr_assert_eq(ban.count, 6);
    ol_ban_reason_t reason;
    int64_t until;
    cr_assert(ol_rateban_listed(rw, OL_SUBJECT_IP, "10.0.0.1", &reason, &until));
    cr_assert_eq(reason, OL_BAN_RATE);
    cr_assert_eq(until, T0 + 1234 + BAN);
    /* users have their own threshold */
    hits_ok(OL_SUBJECT_USER, "u-1", 3, T0);
    ban = hit_banned(OL_SUBJECT_USER, "u-1", T0);
    cr_assert_eq(ban.count, 4);
}

Test(rateban, window_is_half_open_latest_minus_window_to_latest) {
    /* 5 at T0, then one at T0 + WINDOW: T0 is out of (T0, T0 + WINDOW] */
    hits_ok(OL_SUBJECT_IP, "a", 5, T0);
    hits_ok(OL_SUBJECT_IP, "a", 1, T0 + WINDOW);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "a"), 1);
    /* one millisecond earlier the first five are still in */
    hits_ok(OL_SUBJECT_IP, "b", 5, T0);
    hit_banned(OL_SUBJECT_IP, "b", T0 + WINDOW - 1);
}

Test(rateban, window_slides_with_a_steady_rate_at_the_limit) {
    /* exactly 5 per window for 100 windows: never banned */
    int64_t step = WINDOW / 5;
    int64_t t = T0;
    for (int i = 0; i < 500; i++, t += step)
        hits_ok(OL_SUBJECT_IP, "steady", 1, t);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "steady"), 5);
    /* one more squeezed into the current window is one too many */
    hit_banned(OL_SUBJECT_IP, "steady", t - step + 1);
}

Test(rateban, counts_late_requests_inside_the_window_only) {
    hits_ok(OL_SUBJECT_IP, "x", 1, T0 + WINDOW);
    /* earlier than the latest but inside (T0, T0 + WINDOW]: counted */
    hits_ok(OL_SUBJECT_IP, "x", 1, T0 + 1);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "x"), 2);
    /* at or before latest - window: not counted */
    hits_ok(OL_SUBJECT_IP, "x", 10, T0);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "x"), 2);
    /* a later request drops the late one once it falls out */
    hits_ok(OL_SUBJECT_IP, "x", 1, T0 + WINDOW + 1);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "x"), 2);
    hits_ok(OL_SUBJECT_IP, "x", 1, T0 + 2 * WINDOW);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "x"), 2);
    /* out of order requests cross the threshold like ordered ones */
    hits_ok(OL_SUBJECT_IP, "y", 1, T0 + 5000);
    hits_ok(OL_SUBJECT_IP, "y", 1, T0 + 1000);
    hits_ok(OL_SUBJECT_IP, "y", 1, T0 + 9000);
    hits_ok(OL_SUBJECT_IP, "y", 1, T0 + 3000);
    hits_ok(OL_SUBJECT_IP, "y", 1, T0 + 7000);
    hit_banned(OL_SUBJECT_IP, "y", T0 + 2000);
}

Test(rateban, does_not_ban_again_while_the_ban_is_active) {
    hits_ok(OL_SUBJECT_IP, "bot", 5, T0);
    ol_rateban_ban_t ban = hit_banned(OL_SUBJECT_IP, "bot", T0);
    /* a flood while banned: nothing counted, no second ban */
    hits_ok(OL_SUBJECT_IP, "bot", 1000, T0 + 1);
    hits_ok(OL_SUBJECT_IP, "bot", 1000, ban.until_ms - 1);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "bot"), 0);
    int64_t until;
    cr_assert(ol_rateban_listed(rw, OL_SUBJECT_IP, "bot", NULL, &until));
    cr_assert_eq(until, T0 + BAN);
    /* from until on (its lift not yet applied) it counts afresh */
    hits_ok(OL_SUBJECT_IP, "bot", 5, ban.until_ms);
    ban = hit_banned(OL_SUBJECT_IP, "bot", ban.until_ms + 1);
    cr_assert_eq(ban.until_ms, T0 + BAN + 1 + BAN);
    cr_assert_eq(ol_rateban_next_lift_ms(rw), T0 + 2 * BAN + 1);
}

Test(rateban, lifts_at_until_and_forgets_after_the_remove) {
    ol_rateban_ban_t lift;
    cr_assert_eq(ol_rateban_next_lift_ms(rw), -1);
    cr_assert(!ol_rateban_due(rw, T0 + 10 * BAN, &lift));
    hits_ok(OL_SUBJECT_USER, "u-9", 3, T0);
    hit_banned(OL_SUBJECT_USER, "u-9", T0 + 10);
    cr_assert_eq(ol_rateban_next_lift_ms(rw), T0 + 10 + BAN);
    cr_assert(!ol_rateban_due(rw, T0 + 10 + BAN - 1, &lift), "due one millisecond early");
    cr_assert(ol_rateban_due(rw, T0 + 10 + BAN, &lift));
    cr_assert_eq(lift.type, OL_SUBJECT_USER);
    cr_assert_str_eq(lift.subject, "u-9");
    cr_assert_eq(lift.until_ms, T0 + 10 + BAN);
    /* still due until the caller applies the remove it published */
    cr_assert(ol_rateban_due(rw, T0 + 10 + BAN, &lift));
    ol_rateban_apply(rw, lift.type, lift.subject, false, OL_BAN_RATE, -1);
    cr_assert(!ol_rateban_due(rw, T0 + 100 * BAN, &lift));
    cr_assert(!ol_rateban_listed(rw, OL_SUBJECT_USER, "u-9", NULL, NULL));
    ol_rateban_stats_t st;
    ol_rateban_stats(rw, &st);
    cr_assert_eq(st.listed, 0);
    cr_assert_eq(st.rate, 0);
    cr_assert_eq(st.tracked, 0);
}

Test(rateban, lifts_in_order_of_until_including_entries_read_from_the_topic) {
    /* rate entries of a previous run, as read from the blacklist topic */
    ol_rateban_apply(rw, OL_SUBJECT_IP, "c", true, OL_BAN_RATE, T0 + 300);
    ol_rateban_apply(rw, OL_SUBJECT_IP, "a", true, OL_BAN_RATE, T0 + 100);
    ol_rateban_apply(rw, OL_SUBJECT_USER, "b", true, OL_BAN_RATE, T0 + 200);
    ol_rateban_apply(rw, OL_SUBJECT_IP, "d", true, OL_BAN_RATE, T0 + 400);
    /* a later add moves an entry; a remove takes it out */
    ol_rateban_apply(rw, OL_SUBJECT_IP, "a", true, OL_BAN_RATE, T0 + 250);
    ol_rateban_apply(rw, OL_SUBJECT_IP, "d", false, OL_BAN_RATE, -1);
    const char *expect[] = {"b", "a", "c"};
    int64_t untils[] = {T0 + 200, T0 + 250, T0 + 300};
    ol_rateban_ban_t lift;
    for (int i = 0; i < 3; i++) {
        cr_assert(ol_rateban_due(rw, T0 + 1000, &lift));
        cr_assert_str_eq(lift.subject, expect[i]);
        cr_assert_eq(lift.until_ms, untils[i]);
        ol_rateban_apply(rw, lift.type, lift.subject, false, OL_BAN_RATE, -1);
    }
    cr_assert(!ol_rateban_due(rw, T0 + 1000, &lift));
}

Test(rateban, never_lifts_nor_replaces_an_active_manual_entry) {
    ol_rateban_apply(rw, OL_SUBJECT_IP, "m-forever", true, OL_BAN_MANUAL, -1);
    ol_rateban_apply(rw, OL_SUBJECT_IP, "m-until", true, OL_BAN_MANUAL, T0 + 5000);
    hits_ok(OL_SUBJECT_IP, "m-forever", 100, T0);
    hits_ok(OL_SUBJECT_IP, "m-until", 100, T0 + 4999);
    ol_rateban_ban_t lift;
    cr_assert(!ol_rateban_due(rw, T0 + 1000 * BAN, &lift), "a manual entry came due");
    ol_ban_reason_t reason;
    int64_t until;
    cr_assert(ol_rateban_listed(rw, OL_SUBJECT_IP, "m-until", &reason, &until));
    cr_assert_eq(reason, OL_BAN_MANUAL);
    cr_assert_eq(until, T0 + 5000);
    /* a rate ban turned manual by an operator is no longer lifted by guard */
    hits_ok(OL_SUBJECT_IP, "r", 5, T0);
    hit_banned(OL_SUBJECT_IP, "r", T0);
    ol_rateban_apply(rw, OL_SUBJECT_IP, "r", true, OL_BAN_MANUAL, T0 + BAN);
    cr_assert(!ol_rateban_due(rw, T0 + 1000 * BAN, &lift));
    /* once a manual ban has lapsed, the subject is judged again */
    hits_ok(OL_SUBJECT_IP, "m-until", 5, T0 + 5000);
    ol_rateban_ban_t ban = hit_banned(OL_SUBJECT_IP, "m-until", T0 + 5001);
    cr_assert_eq(ban.until_ms, T0 + 5001 + BAN);
}

Test(rateban, ips_and_users_are_apart_and_zero_max_watches_nothing) {
    ol_rateban_destroy(rw);
    rw = watch(2, 0, 0);
    hits_ok(OL_SUBJECT_USER, "same", 1000, T0);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_USER, "same"), 0);
    hits_ok(OL_SUBJECT_IP, "same", 2, T0);
    hit_banned(OL_SUBJECT_IP, "same", T0);
    cr_assert(!ol_rateban_listed(rw, OL_SUBJECT_USER, "same", NULL, NULL));
    /* an empty IP (unknown) is never counted */
    hits_ok(OL_SUBJECT_IP, "", 10, T0);
}

Test(rateban, exempt_subjects_are_never_banned) {
    ol_rateban_exempt(rw, OL_SUBJECT_IP, "10.9.9.9");
    hits_ok(OL_SUBJECT_IP, "10.9.9.9", 1000, T0);
    cr_assert(!ol_rateban_listed(rw, OL_SUBJECT_IP, "10.9.9.9", NULL, NULL));
    /* an operator may still list it */
    ol_rateban_apply(rw, OL_SUBJECT_IP, "10.9.9.9", true, OL_BAN_MANUAL, -1);
    cr_assert(ol_rateban_listed(rw, OL_SUBJECT_IP, "10.9.9.9", NULL, NULL));
    ol_rateban_apply(rw, OL_SUBJECT_IP, "10.9.9.9", false, OL_BAN_MANUAL, -1);
    hits_ok(OL_SUBJECT_IP, "10.9.9.9", 1000, T0);
}

Test(rateban, evicts_idle_subjects_and_keeps_active_ones) {
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "10.1.%d.%d", i / 256, i % 256);
        hits_ok(OL_SUBJECT_IP, name, 1, T0 + i);
    }
    ol_rateban_stats_t st;
    ol_rateban_stats(rw, &st);
    cr_assert_eq(st.tracked, 1000);
    /* at T0 + WINDOW + 499 the first 500 have empty windows */
    cr_assert_eq(ol_rateban_expire(rw, T0 + WINDOW + 499), 500);
    ol_rateban_stats(rw, &st);
    cr_assert_eq(st.tracked, 500);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "10.1.0.0"), 0);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_IP, "10.1.3.231"), 1); /* i = 999 */
    /* a banned subject is kept whatever its window, until it is lifted */
    hits_ok(OL_SUBJECT_IP, "bot", 5, T0);
    hit_banned(OL_SUBJECT_IP, "bot", T0);
    cr_assert_eq(ol_rateban_expire(rw, T0 + 100 * BAN), 500);
    cr_assert(ol_rateban_listed(rw, OL_SUBJECT_IP, "bot", NULL, NULL));
    ol_rateban_stats(rw, &st);
    cr_assert_eq(st.tracked, 0);
    cr_assert_eq(st.listed, 1);
    cr_assert_eq(st.evicted, 1000);
}

Test(rateban, forgets_the_least_recently_seen_past_max_subjects) {
    ol_rateban_destroy(rw);
    rw = watch(5, 3, 100);
    char name[32];
    for (int i = 0; i < 300; i++) {
        int64_t t = T0 + (int64_t)i * WINDOW; /* one request per window: never banned */
        snprintf(name, sizeof(name), "u-%d", i);
        hits_ok(OL_SUBJECT_USER, name, 1, t);
        hits_ok(OL_SUBJECT_USER, "keep", 1, t); /* seen last every time */
    }
    ol_rateban_stats_t st;
    ol_rateban_stats(rw, &st);
    cr_assert_eq(st.tracked, 100);
    cr_assert_eq(st.evicted, 201);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_USER, "keep"), 1);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_USER, "u-299"), 1);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_USER, "u-201"), 1);
    cr_assert_eq(ol_rateban_count(rw, OL_SUBJECT_USER, "u-200"), 0);
}

Test(rateban, memory_per_idle_subject_is_small) {
    char name[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof(name), "203.0.%d.%d", i / 256 % 256, i % 256);
        hits_ok(OL_SUBJECT_IP, name, 1, T0);
        snprintf(name, sizeof(name), "user-%06d", i);
        hits_ok(OL_SUBJECT_USER, name, 1, T0);
    }
    ol_rateban_stats_t st;
    ol_rateban_stats(rw, &st);
    cr_assert_eq(st.tracked, 165536); /* 65536 IPs, 100000 users */
    double per = (double)st.bytes / (double)st.tracked;
    cr_log_info("%.0f bytes per subject with one request", per);
    cr_assert(per < 160, "%.0f bytes per subject", per);
    ol_rateban_expire(rw, T0 + WINDOW);
    ol_rateban_stats(rw, &st);
    cr_assert_eq(st.tracked, 0);
    cr_assert(st.bytes < 4u * 1024 * 1024, "%zu bytes left", st.bytes);
}

/* A randomized run against a straightforward model: requests of a few
 * subjects in time order; the model keeps every request time and counts
 * those in (t - WINDOW, t]. */
Test(rateban, matches_a_brute_force_model) {
    enum { NSUB = 4, NREQ = 20000 };
    static int64_t times[NSUB][NREQ];
    int n[NSUB] = {0};
    int64_t until[NSUB] = {0};
    uint64_t seed = 42;
    int64_t t = T0;
    int bans = 0;
    for (int i = 0; i < NREQ; i++) {
        t += (int64_t)(olt_rand(&seed) % 1500);
        int s = (int)(olt_rand(&seed) % NSUB);
        char name[8];
        snprintf(name, sizeof(name), "s%d", s);
        bool expect_ban = false;
        if (!(until[s] && t < until[s])) {
            times[s][n[s]++] = t;
            int in = 0;
            for (int k = 0; k < n[s]; k++)
                in += times[s][k] > t - WINDOW;
            if (in > 5) {
                expect_ban = true;
                until[s] = t + BAN;
                n[s] = 0;
            }
        }
        ol_rateban_ban_t ban;
        bool got = ol_rateban_hit(rw, OL_SUBJECT_IP, name, t, &ban);
        cr_assert_eq(got, expect_ban, "request %d of %s at +%lld: ban %d, model %d", i, name, (long long)(t - T0), got,
                     expect_ban);
        if (got) {
            cr_assert_eq(ban.until_ms, until[s]);
            bans++;
        }
    }
    cr_assert(bans > 10, "only %d bans: the run tests little", bans);
}
