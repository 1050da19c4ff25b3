/* The generic tier: time, UTF-8, UUIDs, the arena, the line reader, errors. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/base/arena.h"
#include "common/base/err.h"
#include "common/base/linereader.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "testutil.h"

/* ---- time ---------------------------------------------------------------- */

static int64_t parse_ok(const char *s) {
    int64_t ms = 0x5a5a5a5a;
    cr_assert_eq(ol_time_parse(s, &ms), 0, "\"%s\" refused", s);
    return ms;
}

Test(time, parses_rfc3339_in_utc) {
    cr_expect_eq(parse_ok("2026-11-22T15:04:05Z"), 1795359845000LL);
    cr_expect_eq(parse_ok("1970-01-01T00:00:00Z"), 0);
    cr_expect_eq(parse_ok("1969-12-31T23:59:59.999Z"), -1);
    cr_expect_eq(parse_ok("1969-07-20T20:17:40Z"), -14182940000LL);
    cr_expect_eq(parse_ok("0001-01-01T00:00:00Z"), -62135596800000LL);
    cr_expect_eq(parse_ok("9999-12-31T23:59:59.999Z"), 253402300799999LL);
    /* RFC 3339 allows lower-case t and z, and a space for T */
    cr_expect_eq(parse_ok("2026-11-22t15:04:05z"), 1795359845000LL);
    cr_expect_eq(parse_ok("2026-11-22 15:04:05Z"), 1795359845000LL);
}

Test(time, applies_numeric_offsets) {
    cr_expect_eq(parse_ok("2026-11-22T23:04:05+08:00"), 1795359845000LL);
    cr_expect_eq(parse_ok("2026-11-22T09:34:05-05:30"), 1795359845000LL);
    cr_expect_eq(parse_ok("2026-11-22T15:04:05+00:00"), 1795359845000LL);
    cr_expect_eq(parse_ok("2026-11-22T15:04:05-00:00"), 1795359845000LL);
    /* an offset that crosses a day, a month and a year */
    cr_expect_eq(parse_ok("2027-01-01T07:00:00+08:00"), parse_ok("2026-12-31T23:00:00Z"));
    cr_expect_eq(parse_ok("2026-02-28T20:00:00-04:00"), parse_ok("2026-03-01T00:00:00Z"));
    cr_expect_eq(parse_ok("2026-11-22T00:00:00+23:59"), parse_ok("2026-11-21T00:01:00Z"));
}

Test(time, reads_fractions_to_the_millisecond) {
    int64_t base = 1795359845000LL;
    cr_expect_eq(parse_ok("2026-11-22T15:04:05.5Z"), base + 500);
    cr_expect_eq(parse_ok("2026-11-22T15:04:05.12Z"), base + 120);
    cr_expect_eq(parse_ok("2026-11-22T15:04:05.123Z"), base + 123);
    cr_expect_eq(parse_ok("2026-11-22T15:04:05.1239Z"), base + 123, "digits past the millisecond are dropped");
    cr_expect_eq(parse_ok("2026-11-22T15:04:05.000000001Z"), base);
    cr_expect_eq(parse_ok("2026-11-22T15:04:05.999999999+01:00"), base - 3600000 + 999);
    cr_expect_eq(parse_ok("1969-12-31T23:59:59.5Z"), -500);
}

Test(time, knows_leap_days) {
    cr_expect_eq(parse_ok("2024-02-29T12:00:00Z"), 1709208000000LL);
    cr_expect_eq(parse_ok("2000-02-29T00:00:00Z"), 951782400000LL, "divisible by 400: leap");
    cr_expect_eq(parse_ok("2024-03-01T00:00:00Z") - parse_ok("2024-02-28T00:00:00Z"), 2 * 86400000LL);
    cr_expect_eq(parse_ok("2023-03-01T00:00:00Z") - parse_ok("2023-02-28T00:00:00Z"), 86400000LL);
    int64_t ms;
    cr_expect_neq(ol_time_parse("2023-02-29T00:00:00Z", &ms), 0);
    cr_expect_neq(ol_time_parse("1900-02-29T00:00:00Z", &ms), 0, "divisible by 100: no leap");
    cr_expect_neq(ol_time_parse("2100-02-29T00:00:00Z", &ms), 0);
}

Test(time, refuses_what_is_not_a_time) {
    static const char *const bad[] = {
        "",
        "garbage",
        "2026-11-22",
        "2026-11-22T15:04:05", /* no zone */
        "2026-11-22T15:04Z",   /* no seconds */
        "2026-02-30T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-10T00:00:00Z",
        "2026-11-00T00:00:00Z",
        "2026-11-32T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T23:60:00Z",
        "2026-11-22T23:59:61Z",
        "2026-11-22T15:04:05.Z", /* a dot without digits */
        "2026-11-22T15:04:05+8:00",
        "2026-11-22T15:04:05+08",
        "2026-11-22T15:04:05+0800",
        "2026-11-22T15:04:05+24:00",
        "2026-11-22T15:04:05+08:60",
        "2026-11-22T15:04:05Z ", /* trailing text */
        " 2026-11-22T15:04:05Z",
        "2026-11-22X15:04:05Z",
        "26-11-22T15:04:05Z",
        "+2026-11-22T15:04:05Z",
        "2026/11/22T15:04:05Z",
        "2026-1-22T15:04:05Z",
        "2026-11-22T15:04:05ZZ",
        "1795359845000",
        "2026-11-22T15:04:0", /* cut short */
        "2026-11-",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = 12345;
        cr_expect_neq(ol_time_parse(bad[i], &ms), 0, "\"%s\" accepted as %lld", bad[i], (long long)ms);
        cr_expect_eq(ms, 12345, "\"%s\": output written on failure", bad[i]);
    }
}

static void expect_format(int64_t ms, const char *want) {
    char out[32];
    memset(out, 'x', sizeof(out));
    ol_time_format(ms, out, sizeof(out));
    cr_expect_str_eq(out, want, "ol_time_format(%lld)", (long long)ms);
}

Test(time, formats_utc_with_milliseconds) {
    expect_format(0, "1970-01-01T00:00:00.000Z");
    expect_format(1795359845007LL, "2026-11-22T15:04:05.007Z");
    expect_format(1795359845999LL, "2026-11-22T15:04:05.999Z");
    expect_format(-1, "1969-12-31T23:59:59.999Z");
    expect_format(-1000, "1969-12-31T23:59:59.000Z");
    expect_format(-1001, "1969-12-31T23:59:58.999Z");
    expect_format(951782400000LL, "2000-02-29T00:00:00.000Z");
    expect_format(253402300799999LL, "9999-12-31T23:59:59.999Z");
    expect_format(-62135596800000LL, "0001-01-01T00:00:00.000Z");
    /* exactly 24 characters and the NUL: a 25-byte buffer is enough */
    char out[25];
    ol_time_format(1795359845123LL, out, sizeof(out));
    cr_expect_str_eq(out, "2026-11-22T15:04:05.123Z");
}

Test(time, formats_right_whatever_came_before) {
    /* same second, other second, back: no stale cached part */
    expect_format(1795359845001LL, "2026-11-22T15:04:05.001Z");
    expect_format(1795359845999LL, "2026-11-22T15:04:05.999Z");
    expect_format(1795359846000LL, "2026-11-22T15:04:06.000Z");
    expect_format(1795359845500LL, "2026-11-22T15:04:05.500Z");
    expect_format(-1, "1969-12-31T23:59:59.999Z");
    expect_format(-999, "1969-12-31T23:59:59.001Z");
    expect_format(0, "1970-01-01T00:00:00.000Z");
}

static void *format_in_thread(void *arg) {
    int64_t base = *(int64_t *)arg;
    for (int i = 0; i < 20000; i++) {
        int64_t ms = base + (int64_t)(i % 7) * 1000 + i % 1000;
        char out[32], want[96];
        ol_time_format(ms, out, sizeof(out));
        time_t secs = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
        if (strcmp(out, want))
            return (void *)1;
    }
    return NULL;
}

Test(time, formats_from_several_threads_at_once) {
    int64_t bases[4] = {0, 1795359845000LL, 951782400000LL, 4102444800000LL};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, format_in_thread, &bases[i]), 0);
    for (int i = 0; i < 4; i++) {
        void *res;
        pthread_join(th[i], &res);
        cr_expect_null(res, "thread %d formatted a wrong time", i);
    }
}

Test(time, formats_as_gmtime_does_over_the_whole_range) {
    uint64_t seed = 11;
    const int64_t lo = -62135596800000LL, hi = 253402300799999LL; /* 0001-01-01 .. 9999-12-31 */
    for (int i = 0; i < 200000; i++) {
        int64_t ms = lo + (int64_t)(olt_rand(&seed) % (uint64_t)(hi - lo + 1));
        int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        char out[32], want[96];
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms - secs * 1000));
        ol_time_format(ms, out, sizeof(out));
        cr_assert_str_eq(out, want, "ol_time_format(%lld)", (long long)ms);
    }
}

Test(time, parses_what_it_formats) {
    uint64_t seed = 7;
    /* 0001-01-01 .. 9999-12-31 */
    const int64_t lo = -62135596800000LL, hi = 253402300799999LL;
    for (int i = 0; i < 100000; i++) {
        int64_t ms = lo + (int64_t)(olt_rand(&seed) % (uint64_t)(hi - lo + 1));
        char out[32];
        ol_time_format(ms, out, sizeof(out));
        int64_t back;
        cr_assert_eq(ol_time_parse(out, &back), 0, "format(%lld) = \"%s\" does not parse", (long long)ms, out);
        cr_assert_eq(back, ms, "\"%s\" parses to %lld, not %lld", out, (long long)back, (long long)ms);
    }
}

Test(time, has_clocks_that_move_forward) {
    int64_t wall = ol_time_now_ms();
    cr_expect_gt(wall, 1700000000000LL, "wall clock in ms since the epoch");
    int64_t a = ol_time_mono_us();
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    int64_t b = ol_time_mono_us();
    cr_expect_geq(b - a, 2000, "monotonic clock in microseconds");
    cr_expect_lt(b - a, 2000000);
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* ol_utf8_invalid_at on an exact-size copy, so ASan sees any read past it */
static long utf8_at(const char *s, size_t len) {
    char *copy = ol_xmalloc(len ? len : 1);
    memcpy(copy, s, len);
    long r = ol_utf8_invalid_at(copy, len);
    free(copy);
    return r;
}

#define UTF8(lit) utf8_at(lit, sizeof(lit) - 1)

Test(utf8, accepts_valid_text) {
    cr_expect_eq(UTF8(""), -1);
    cr_expect_eq(UTF8("plain ascii"), -1);
    cr_expect_eq(UTF8("a\0b"), -1, "NUL is valid UTF-8");
    cr_expect_eq(UTF8("\xc2\x80"), -1, "U+0080, the smallest two-byte");
    cr_expect_eq(UTF8("\xdf\xbf"), -1, "U+07FF");
    cr_expect_eq(UTF8("\xe0\xa0\x80"), -1, "U+0800, the smallest three-byte");
    cr_expect_eq(UTF8("\xed\x9f\xbf"), -1, "U+D7FF, just below the surrogates");
    cr_expect_eq(UTF8("\xee\x80\x80"), -1, "U+E000, just above them");
    cr_expect_eq(UTF8("\xef\xbf\xbf"), -1, "U+FFFF");
    cr_expect_eq(UTF8("\xf0\x90\x80\x80"), -1, "U+10000, the smallest four-byte");
    cr_expect_eq(UTF8("\xf4\x8f\xbf\xbf"), -1, "U+10FFFF, the largest");
    cr_expect_eq(UTF8("caf\xc3\xa9 \xe9\x99\x90\xe9\x87\x8f \xf0\x9f\x98\x80!"), -1);
}

/* A text (without NUL) and where its first invalid byte is: -1 none. */
typedef struct {
    const char *text;
    long at;
    const char *what;
} utf8_case_t;

Test(utf8, finds_the_first_invalid_byte) {
    static const utf8_case_t cases[] = {
        {"\x80", 0, "a lone continuation byte"},
        {"ab\xbf", 2, ""},
        {"\xff", 0, ""},
        {"\xfe", 0, ""},
        {"\xf5\x80\x80\x80", 0, "lead byte beyond U+10FFFF"},
        {"ab\xc0\x80", 2, "overlong NUL C0 80"},
        {"\xc1\xbf", 0, "overlong two-byte"},
        {"\xe0\x80\x80", 0, "overlong three-byte"},
        {"\xe0\x9f\xbf", 0, "overlong U+07FF in three bytes"},
        {"\xf0\x80\x80\x80", 0, "overlong four-byte"},
        {"\xf0\x8f\xbf\xbf", 0, "overlong U+FFFF in four bytes"},
        {"x\xed\xa0\x80", 1, "surrogate D800 (ED A0 80)"},
        {"\xed\xbf\xbf", 0, "surrogate DFFF"},
        {"\xf4\x90\x80\x80", 0, "U+110000"},
        {"\xc3\x28", 0, "bad continuation"},
        {"a\xe6\x97(", 1, "bad third byte"},
        {"ok\xc3\xa9\xff", 4, "after a valid sequence"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(utf8_at(cases[i].text, strlen(cases[i].text)), cases[i].at, "%s", cases[i].what);
}

Test(utf8, refuses_sequences_cut_by_the_end) {
    cr_expect_eq(UTF8("ab\xc3"), 2);
    cr_expect_eq(UTF8("ab\xe6\x97"), 2);
    cr_expect_eq(UTF8("ab\xe6"), 2);
    cr_expect_eq(UTF8("\xf0\x9f\x98"), 0);
    cr_expect_eq(UTF8("\xf0\x9f"), 0);
    cr_expect_eq(UTF8("\xf0"), 0);
    /* the length is what counts, not a NUL */
    cr_expect_eq(utf8_at("\xc3\xa9", 1), 0);
    cr_expect_eq(utf8_at("\xe9\x99\x90", 2), 0);
    cr_expect_eq(utf8_at("ab\xff", 2), -1, "bytes past len are not looked at");
}

Test(utf8, fits_text_into_a_width_between_characters) {
    const char *s = "ab\xc3\xa9\xe9\x99\x90\xf0\x9f\x98\x80z"; /* a b é 限 😀 z: 1+1+2+3+4+1 bytes */
    static const int want[] = {0, 1, 2, 2, 4, 4, 4, 7, 7, 7, 7, 11, 12, 12};
    for (size_t max = 0; max < sizeof(want) / sizeof(want[0]); max++)
        cr_expect_eq(ol_utf8_fit(s, max), want[max], "max %zu: %d bytes, want %d", max, ol_utf8_fit(s, max), want[max]);
    cr_expect_eq(ol_utf8_fit("", 64), 0);
    cr_expect_eq(ol_utf8_fit("short", 64), 5, "a string shorter than max is whole");
}

Test(utf8, trims_a_sequence_cut_at_the_end) {
    const char *s = "ab\xc3\xa9\xe9\x99\x90\xf0\x9f\x98\x80z";
    static const size_t want[] = {0, 1, 2, 2, 4, 4, 4, 7, 7, 7, 7, 11, 12};
    for (size_t len = 0; len < sizeof(want) / sizeof(want[0]); len++)
        cr_expect_eq(ol_utf8_trim(s, len), want[len], "len %zu: %zu, want %zu", len, ol_utf8_trim(s, len), want[len]);
    cr_expect_eq(ol_utf8_trim("a\x80\x80\x80\x80", 5), 5, "not UTF-8: left alone");
}

/* ---- UUIDs ---------------------------------------------------------------- */

static void expect_uuid_v4(const char *u) {
    cr_assert_eq(strlen(u), 36, "\"%s\"", u);
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            cr_assert_eq(u[i], '-', "\"%s\"", u);
        else
            cr_assert(strchr("0123456789abcdef", u[i]) && u[i], "\"%s\": not lower-case hex at %d", u, i);
    }
    cr_assert_eq(u[14], '4', "\"%s\": version nibble", u);
    cr_assert(strchr("89ab", u[19]), "\"%s\": variant bits", u);
}

static int cmp_uuid(const void *a, const void *b) {
    return memcmp(a, b, 37);
}

Test(uuid, makes_distinct_version_4_uuids) {
    enum { N = 100000 };
    char(*ids)[37] = ol_xmalloc(N * sizeof(*ids));
    int hist[16] = {0};
    for (int i = 0; i < N; i++) {
        ol_uuid_v4(ids[i]);
        expect_uuid_v4(ids[i]);
        hist[strchr("0123456789abcdef", ids[i][0]) - "0123456789abcdef"]++;
    }
    qsort(ids, N, sizeof(*ids), cmp_uuid);
    for (int i = 1; i < N; i++)
        cr_assert_neq(memcmp(ids[i - 1], ids[i], 37), 0, "duplicate UUID %s", ids[i]);
    /* random bits look random: each first hex digit ~N/16 times */
    for (int d = 0; d < 16; d++)
        cr_expect(hist[d] > N / 16 * 8 / 10 && hist[d] < N / 16 * 12 / 10, "digit %x seen %d times", d, hist[d]);
    free(ids);
}

#define THREAD_IDS 2000

static void *uuids_in_thread(void *arg) {
    char(*ids)[37] = arg;
    for (int i = 0; i < THREAD_IDS; i++)
        ol_uuid_v4(ids[i]);
    return NULL;
}

Test(uuid, differs_between_threads) {
    char(*ids)[37] = ol_xmalloc(4 * THREAD_IDS * sizeof(*ids));
    pthread_t th[4];
    for (int t = 0; t < 4; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, uuids_in_thread, ids + t * THREAD_IDS), 0);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    qsort(ids, 4 * THREAD_IDS, sizeof(*ids), cmp_uuid);
    for (int i = 1; i < 4 * THREAD_IDS; i++)
        cr_assert_neq(memcmp(ids[i - 1], ids[i], 37), 0, "duplicate UUID %s across threads", ids[i]);
    free(ids);
}

/* ---- arena ---------------------------------------------------------------- */

Test(arena, hands_out_16_byte_aligned_disjoint_memory) {
    ol_arena_t *a = ol_arena_new(1024);
    unsigned char *ptrs[200];
    size_t sizes[200], total = 0;
    for (int i = 0; i < 200; i++) {
        sizes[i] = (size_t)(i * 7 % 61) + 1;
        ptrs[i] = ol_arena_alloc(a, sizes[i]);
        cr_assert_eq((uintptr_t)ptrs[i] % 16, 0, "allocation %d of %zu bytes misaligned", i, sizes[i]);
        memset(ptrs[i], i, sizes[i]);
        total += (sizes[i] + 15) / 16 * 16;
    }
    for (int i = 0; i < 200; i++)
        for (size_t k = 0; k < sizes[i]; k++)
            cr_assert_eq(ptrs[i][k], (unsigned char)i, "allocation %d overwritten", i);
    cr_expect_eq(ol_arena_used(a), total);
    ol_arena_destroy(a);
}

Test(arena, serves_allocations_bigger_than_a_block) {
    ol_arena_t *a = ol_arena_new(256);
    char *small = ol_arena_alloc(a, 100);
    memset(small, 's', 100);
    char *big = ol_arena_alloc(a, 100000);
    cr_assert_eq((uintptr_t)big % 16, 0);
    memset(big, 'b', 100000);
    char *after = ol_arena_alloc(a, 200);
    memset(after, 'a', 200);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(small[i], 's');
    for (int i = 0; i < 100000; i++)
        cr_assert_eq(big[i], 'b', "byte %d of the big allocation", i);
    cr_expect_eq(ol_arena_used(a), 112 + 100000 + 208);
    ol_arena_destroy(a);
}

Test(arena, starts_over_after_a_reset) {
    ol_arena_t *a = ol_arena_new(512);
    char *first = ol_arena_alloc(a, 32);
    for (int i = 0; i < 100; i++)
        memset(ol_arena_alloc(a, 300), 'x', 300);
    memset(ol_arena_alloc(a, 50000), 'y', 50000);
    cr_expect_gt(ol_arena_used(a), 50000);
    ol_arena_reset(a);
    cr_expect_eq(ol_arena_used(a), 0);
    char *again = ol_arena_alloc(a, 32);
    cr_expect_eq(again, first, "the first block is kept and reused");
    memset(again, 'z', 32);
    /* and grows again as before */
    for (int i = 0; i < 100; i++)
        memset(ol_arena_alloc(a, 300), 'w', 300);
    ol_arena_reset(a);
    ol_arena_reset(a);
    cr_expect_eq(ol_arena_used(a), 0);
    ol_arena_destroy(a);

    /* a reset right after a big first allocation */
    a = ol_arena_new(64);
    memset(ol_arena_alloc(a, 4096), 1, 4096);
    ol_arena_reset(a);
    memset(ol_arena_alloc(a, 64), 2, 64);
    ol_arena_destroy(a);
    ol_arena_destroy(NULL);
}

Test(arena, copies_and_formats_strings) {
    ol_arena_t *a = ol_arena_new(0);
    char *s = ol_arena_strndup(a, "hello, world", 5);
    cr_expect_str_eq(s, "hello");
    char *e = ol_arena_strndup(a, "", 0);
    cr_expect_str_eq(e, "");
    char *f = ol_arena_sprintf(a, "%s-%d-%05.1f", "x", 42, 3.14159);
    cr_expect_str_eq(f, "x-42-003.1");
    /* longer than a block */
    char *long_one = ol_arena_sprintf(a, "%0*d", 200000, 7);
    cr_expect_eq(strlen(long_one), 200000);
    cr_expect_eq(long_one[199999], '7');
    cr_expect_eq(long_one[0], '0');
    cr_expect_str_eq(s, "hello", "earlier strings intact");
    ol_arena_destroy(a);
}

Test(arena, aborts_on_a_size_that_cannot_be_allocated, .signal = SIGABRT) {
    ol_arena_t *a = ol_arena_new(1024);
    /* rounding SIZE_MAX up to 16 wraps to 0; it must not hand out memory */
    char *p = ol_arena_alloc(a, SIZE_MAX);
    (void)p;
    ol_arena_destroy(a);
}

Test(arena, aborts_on_a_size_whose_block_would_overflow, .signal = SIGABRT) {
    ol_arena_t *a = ol_arena_new(1024);
    /* rounded up, plus the block header, this wraps to a 16-byte malloc */
    char *p = ol_arena_alloc(a, SIZE_MAX - 20);
    (void)p;
    ol_arena_destroy(a);
}

/* ---- line reader ---------------------------------------------------------- */

typedef struct read_line_s {
    ol_linereader_status_t st;
    char text[256];
    size_t len;
    long long lineno;
} read_line_t;

static read_line_t next_line(ol_linereader_t *lr) {
    read_line_t r = {0};
    const char *line = NULL;
    r.st = ol_linereader_next(lr, &line, &r.len, &r.lineno);
    if (r.st == OL_LINE_OK) {
        cr_assert_lt(r.len, sizeof(r.text));
        memcpy(r.text, line, r.len);
    }
    return r;
}

static void expect_ok(ol_linereader_t *lr, const char *text, size_t len, long long lineno) {
    read_line_t r = next_line(lr);
    cr_expect_eq(r.st, OL_LINE_OK, "line %lld: status %d", lineno, r.st);
    cr_expect_eq(r.lineno, lineno);
    cr_expect_eq(r.len, len, "line %lld: length %zu, want %zu", lineno, r.len, len);
    cr_expect(r.len == len && !memcmp(r.text, text, len), "line %lld: \"%.*s\", want \"%.*s\"", lineno, (int)r.len,
              r.text, (int)len, text);
}

static void expect_status(ol_linereader_t *lr, ol_linereader_status_t st, long long lineno) {
    read_line_t r = next_line(lr);
    cr_expect_eq(r.st, st, "status %d, want %d", r.st, st);
    if (st == OL_LINE_TOO_LONG)
        cr_expect_eq(r.lineno, lineno, "too long line numbered %lld, want %lld", r.lineno, lineno);
}

/* A read-only stream over text (not copied: it must outlive the stream). */
static FILE *mem(const char *text, size_t len) {
    FILE *fp = len ? fmemopen((void *)text, len, "r") : fopen("/dev/null", "r");
    cr_assert(fp);
    return fp;
}

static void mem_close(FILE *fp) {
    fclose(fp);
}

#define MEM(lit) mem(lit, sizeof(lit) - 1)

/* What one ol_linereader_next must give: a line (OL_LINE_OK: text, len
 * bytes, numbered lineno) or another status (lineno checked for
 * OL_LINE_TOO_LONG). */
typedef struct want_s {
    ol_linereader_status_t st;
    const char *text;
    size_t len;
    long long lineno;
} want_t;
#define OK(lit, lineno) \
    { OL_LINE_OK, lit, sizeof(lit) - 1, lineno }
#define TOO_LONG(lineno) \
    { OL_LINE_TOO_LONG, NULL, 0, lineno }
#define END \
    { OL_LINE_EOF, NULL, 0, 0 }

/* Reads input (len bytes) with lines of at most max, expecting want[0..n-1] in turn. */
static void expect_reads(const char *input, size_t len, size_t max, const want_t *want, size_t n) {
    FILE *fp = mem(input, len);
    ol_linereader_t *lr = ol_linereader_new(fp, max);
    for (size_t i = 0; i < n; i++) {
        if (want[i].st == OL_LINE_OK)
            expect_ok(lr, want[i].text, want[i].len, want[i].lineno);
        else
            expect_status(lr, want[i].st, want[i].lineno);
    }
    ol_linereader_destroy(lr);
    mem_close(fp);
}

/* expect_reads of a string literal and the results listed. */
#define EXPECT_READS(lit, max, ...)                                                       \
    do {                                                                                  \
        const want_t want_[] = {__VA_ARGS__};                                             \
        expect_reads(lit, sizeof(lit) - 1, max, want_, sizeof(want_) / sizeof(want_[0])); \
    } while (0)

Test(linereader, reads_lines_with_and_without_a_final_newline) {
    EXPECT_READS("first\nsecond\n\nfourth", 100, OK("first", 1), OK("second", 2), OK("", 3), OK("fourth", 4), END, END);
    EXPECT_READS("only\n", 100, OK("only", 1), END);
    EXPECT_READS("", 100, END);
}

Test(linereader, leaves_carriage_returns_and_nuls_to_the_caller) {
    EXPECT_READS("a\r\nb\r\n\r\nc\0d\n", 100, OK("a\r", 1), OK("b\r", 2), OK("\r", 3), OK("c\0d", 4), END);
}

Test(linereader, skips_a_line_longer_than_max_and_goes_on) {
    EXPECT_READS("0123456789\n01234567890\nnext\n0123456789abcdef\nlast", 10, OK("0123456789", 1), TOO_LONG(2),
                 OK("next", 3), TOO_LONG(4), OK("last", 5), END);
    /* a too long last line without a newline */
    EXPECT_READS("ok\n0123456789ABC", 10, OK("ok", 1), TOO_LONG(2), END);
    /* exactly max without a newline at the end */
    EXPECT_READS("ok\n0123456789", 10, OK("ok", 1), OK("0123456789", 2), END);
}

Test(linereader, skips_lines_far_longer_than_its_buffer) {
    /* the buffer holds max + 64 KiB: these lines take several fills */
    size_t huge = 300 * 1024;
    size_t len = 0;
    char *text = ol_xmalloc(3 * huge + 100);
    len += (size_t)sprintf(text + len, "a\n");
    memset(text + len, 'x', huge);
    len += huge;
    len += (size_t)sprintf(text + len, "\nb\n");
    memset(text + len, 'y', huge);
    len += huge;
    len += (size_t)sprintf(text + len, "\n\nc\n");
    memset(text + len, 'z', huge); /* last, no newline */
    len += huge;
    const want_t want[] = {OK("a", 1), TOO_LONG(2), OK("b", 3), TOO_LONG(4), OK("", 5), OK("c", 6), TOO_LONG(7), END};
    expect_reads(text, len, 16, want, sizeof(want) / sizeof(want[0]));
    free(text);
}

Test(linereader, reads_many_lines_across_buffer_refills) {
    /* ~2.6 MB of lines of every length up to max, through a real pipe-like
     * stream (open_memstream written, then read back) */
    char *text = NULL;
    size_t len = 0;
    FILE *w = open_memstream(&text, &len);
    uint64_t seed = 99;
    enum { LINES = 100000, MAX = 50 };
    static unsigned char lens[LINES];
    for (int i = 0; i < LINES; i++) {
        lens[i] = (unsigned char)(olt_rand(&seed) % (MAX + 1));
        for (int k = 0; k < lens[i]; k++)
            fputc('a' + (i + k) % 26, w);
        fputc('\n', w);
    }
    fclose(w);
    FILE *fp = fmemopen(text, len, "r");
    ol_linereader_t *lr = ol_linereader_new(fp, MAX);
    for (int i = 0; i < LINES; i++) {
        const char *line;
        size_t n;
        long long lineno;
        cr_assert_eq(ol_linereader_next(lr, &line, &n, &lineno), OL_LINE_OK, "line %d", i + 1);
        cr_assert_eq(lineno, i + 1);
        cr_assert_eq(n, lens[i], "line %d: length %zu, want %d", i + 1, n, lens[i]);
        for (size_t k = 0; k < n; k++)
            cr_assert_eq(line[k], 'a' + (i + (int)k) % 26, "line %d byte %zu", i + 1, k);
    }
    expect_status(lr, OL_LINE_EOF, 0);
    ol_linereader_destroy(lr);
    fclose(fp);
    free(text);
}

Test(linereader, reports_a_read_error) {
    FILE *fp = fopen("/dev/null", "w"); /* reading a write-only stream fails */
    cr_assert(fp);
    ol_linereader_t *lr = ol_linereader_new(fp, 100);
    expect_status(lr, OL_LINE_ERROR, 0);
    ol_linereader_destroy(lr);
    fclose(fp);
}

/* ---- errors --------------------------------------------------------------- */

Test(err, names_and_describes_every_code) {
    cr_expect_str_eq(ol_err2str(OL_ERR_OK), "success");
    cr_expect_str_eq(ol_err2name(OL_ERR_OK), "OK");
    cr_expect_str_eq(ol_err2name(OL_ERR_INVALID), "INVALID");
    cr_expect_str_eq(ol_err2str(OL_ERR_INVALID), "invalid input");
    cr_expect_str_eq(ol_err2name(OL_ERR_ALREADY_APPLIED), "ALREADY_APPLIED");
    cr_expect_str_eq(ol_err2name(OL_ERR_UNSUPPORTED), "UNSUPPORTED");
    for (int e = 0; e < OL_ERR__COUNT; e++) {
        const char *name = ol_err2name((ol_err_t)e), *str = ol_err2str((ol_err_t)e);
        cr_assert(name && *name && str && *str, "code %d", e);
        cr_expect_neq(strcmp(name, "UNKNOWN"), 0, "code %d", e);
        for (int k = 0; k < e; k++) {
            cr_expect_neq(strcmp(name, ol_err2name((ol_err_t)k)), 0, "codes %d and %d share a name", e, k);
            cr_expect_neq(strcmp(str, ol_err2str((ol_err_t)k)), 0, "codes %d and %d share a string", e, k);
        }
    }
    cr_expect_str_eq(ol_err2name(OL_ERR__COUNT), "UNKNOWN");
    cr_expect_str_eq(ol_err2str(OL_ERR__COUNT), "unknown error");
    cr_expect_str_eq(ol_err2name((ol_err_t)-1), "UNKNOWN");
    cr_expect_str_eq(ol_err2str((ol_err_t)1000), "unknown error");
}

Test(err, retries_only_transient_failures) {
    cr_expect(ol_err_is_retriable(OL_ERR_TRANSIENT));
    cr_expect(ol_err_is_retriable(OL_ERR_TIMEOUT));
    cr_expect(ol_err_is_retriable(OL_ERR_UNREACHABLE));
    static const ol_err_t final[] = {OL_ERR_OK,       OL_ERR_INVALID,   OL_ERR_NOT_FOUND,  OL_ERR_IO,
                                     OL_ERR_CONFIG,   OL_ERR_KAFKA,     OL_ERR_PG,         OL_ERR_ALREADY_APPLIED,
                                     OL_ERR_CHECKSUM, OL_ERR_TOO_LARGE, OL_ERR_UNSUPPORTED};
    for (size_t i = 0; i < sizeof(final) / sizeof(final[0]); i++)
        cr_expect(!ol_err_is_retriable(final[i]), "%s is retriable", ol_err2name(final[i]));
    cr_expect(!ol_err_is_retriable(OL_ERR__COUNT));
}

Test(err, formats_details_into_the_callers_buffer) {
    char errstr[16];
    cr_expect_eq(ol_errf(errstr, sizeof(errstr), OL_ERR_CONFIG, "bad %s %d", "value", 42), OL_ERR_CONFIG);
    cr_expect_str_eq(errstr, "bad value 42");
    cr_expect_eq(ol_errf(errstr, sizeof(errstr), OL_ERR_IO, "%s", "a message longer than the buffer"), OL_ERR_IO);
    cr_expect_eq(strlen(errstr), sizeof(errstr) - 1, "truncated and terminated");
    /* cut on a character boundary: "é" (2 bytes) at bytes 15-16 would be split */
    cr_expect_eq(ol_errf(errstr, sizeof(errstr), OL_ERR_IO, "%s",
                         "0123456789abcd\xc3\xa9"
                         "f"),
                 OL_ERR_IO);
    cr_expect_str_eq(errstr, "0123456789abcd");
    cr_expect_eq(ol_errf(errstr, sizeof(errstr), OL_ERR_IO, "%s",
                         "0123456789abc\xc3\xa9"
                         "f"),
                 OL_ERR_IO);
    cr_expect_str_eq(errstr, "0123456789abc\xc3\xa9", "a whole character at the end stays");
    cr_expect_eq(ol_errf(NULL, 0, OL_ERR_PG, "no buffer %d", 1), OL_ERR_PG);
    errstr[0] = 'q';
    cr_expect_eq(ol_errf(errstr, 0, OL_ERR_PG, "size zero"), OL_ERR_PG);
    cr_expect_eq(errstr[0], 'q', "nothing written into a zero-size buffer");
}
