/* The dlq's reason groups and positions (no broker needed). */
#include <criterion/criterion.h>
#include <string.h>

#include "common/domain/dlq.h"

static void expect_group(const char *error, const char *want) {
    char out[512];
    ol_dlq_reason_group(error, out, sizeof(out));
    cr_expect_str_eq(out, want, "reason group of <%s>", error);
}

Test(dlq_reason, masks_quoted_values) {
    expect_group("order \"O-1\" does not exist", "order \"*\" does not exist");
    expect_group("order \"another one\" does not exist", "order \"*\" does not exist");
    expect_group("unexpected character 'g'", "unexpected character '*'");
    expect_group("field \"a\\\"b\": must be at least 1, got 0", "field \"*\": must be at least #, got #");
}

Test(dlq_reason, masks_words_holding_a_digit) {
    expect_group("key \"k\" is on partition 2 of it_t_42_orders but belongs on partition 0 (murmur2 of the key over "
                 "3 partitions; set partitioner=murmur2_random)",
                 "key \"*\" is on partition # of # but belongs on partition # (# of the key over # partitions; set "
                 "partitioner=#)");
    expect_group("malformed JSON at column 17: unexpected end", "malformed JSON at column #: unexpected end");
    expect_group("hold h-r-42 expired at 2026-03-01T10:00:00.000Z.", "hold # expired at #.");
    expect_group("a 3f2a9c1e-0d4b-4c1a-9f7e-2b6d8a1c0e55 twice", "a # twice");
}

Test(dlq_reason, keeps_words_without_digits_and_collapses_spaces) {
    expect_group("  no   ce_type header\tand no value ", "no ce_type header and no value");
    expect_group("record has no key", "record has no key");
    expect_group("an unmatched \"quote stays", "an unmatched \"quote stays");
}

Test(dlq_reason, one_cause_one_group) {
    char a[256], b[256];
    ol_dlq_reason_group("order \"O-17\" does not exist", a, sizeof(a));
    ol_dlq_reason_group("order \"ORDER-0000042\" does not exist", b, sizeof(b));
    cr_expect_str_eq(a, b);
    ol_dlq_reason_group("refund \"R-1\" does not exist", b, sizeof(b));
    cr_expect_str_neq(a, b);
}

Test(dlq_reason, never_writes_past_the_buffer) {
    char out[8];
    memset(out, 'x', sizeof(out));
    ol_dlq_reason_group("a very long reason about order \"O-1\"", out, 6);
    cr_expect_str_eq(out, "a ver");
    cr_expect_eq(out[6], 'x');
}

Test(dlq_position, parses_and_formats_partition_and_offset) {
    int32_t p;
    int64_t o;
    char buf[48];
    cr_assert(ol_dlq_pos_parse("2:17", 4, &p, &o));
    cr_expect_eq(p, 2);
    cr_expect_eq(o, 17);
    ol_dlq_pos_format(p, 9000000000LL, buf, sizeof(buf));
    cr_expect_str_eq(buf, "2:9000000000");
    cr_assert(ol_dlq_pos_parse(buf, strlen(buf), &p, &o));
    cr_expect_eq(o, 9000000000LL);
    const char *bad[] = {"", "2", ":1", "2:", "a:1", "1:b", "-1:2", "1:-2", "1:2:3", "3000000000:1", "1:2 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect(!ol_dlq_pos_parse(bad[i], strlen(bad[i]), &p, &o), "<%s> parsed", bad[i]);
}
