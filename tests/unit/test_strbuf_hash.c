/* common/base/strbuf.h and the FNV-1a hashes of common/base/util.h: the
 * one growable string and the one hash of each width that the roles share. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/base/strbuf.h"
#include "common/base/util.h"

Test(strbuf, starts_empty_and_holds_what_was_put_nul_terminated) {
    ol_strbuf_t b = OL_STRBUF_INIT;
    cr_assert_null(b.p);
    ol_strbuf_put(&b, "", 0);
    cr_assert_not_null(b.p);
    cr_assert_str_eq(b.p, "");
    ol_strbuf_puts(&b, "ab");
    ol_strbuf_put(&b, "c\0d", 3);
    cr_assert_eq(b.len, 5);
    cr_assert_eq(memcmp(b.p, "abc\0d", 6), 0);
    ol_strbuf_free(&b);
    cr_assert_null(b.p);
    cr_assert_eq(b.len, 0);
}

Test(strbuf, grows_past_its_first_allocation_keeping_the_content) {
    ol_strbuf_t b = OL_STRBUF_INIT;
    char expect[5001];
    for (int i = 0; i < 5000; i++) {
        char c = (char)('a' + i % 26);
        ol_strbuf_put(&b, &c, 1);
        expect[i] = c;
    }
    expect[5000] = '\0';
    cr_assert_eq(b.len, 5000);
    cr_assert_geq(b.cap, 5001);
    cr_assert_str_eq(b.p, expect);
    ol_strbuf_free(&b);
}

/* The values the inlined hashes gave before they were one function: the
 * decision cache, token buckets and worker dispatch (32-bit), the maps,
 * rate bans, rebuild's key shares and the dlq's source ids (64-bit, with
 * this project's seed) must not move. */
Test(hash, fnv1a32_is_the_standard_fnv1a) {
    cr_assert_eq(ol_hash_fnv1a32("", 0), 2166136261u);
    cr_assert_eq(ol_hash_fnv1a32("a", 1), 0xe40c292cu);
    cr_assert_eq(ol_hash_fnv1a32("foobar", 6), 0xbf9cf968u);
}

static uint64_t fnv64_by_hand(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

Test(hash, fnv1a64_keeps_the_seeded_values_and_continues_over_pieces) {
    cr_assert_eq(ol_hash_fnv1a64(OL_FNV1A64_SEED, "", 0), 1469598103934665603ull);
    cr_assert_eq(ol_hash_fnv1a64(OL_FNV1A64_SEED, "order-1", 7), fnv64_by_hand(1469598103934665603ull, "order-1", 7));
    uint64_t pieces = ol_hash_fnv1a64(ol_hash_fnv1a64(OL_FNV1A64_SEED, "order", 5), "-1", 2);
    cr_assert_eq(pieces, ol_hash_fnv1a64(OL_FNV1A64_SEED, "order-1", 7));
    cr_assert_neq(ol_hash_fnv1a64(OL_FNV1A64_SEED, "a", 1), ol_hash_fnv1a64(OL_FNV1A64_SEED, "b", 1));
}
