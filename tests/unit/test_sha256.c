/* SHA-256 against the FIPS 180-4 / NIST vectors and the padding boundaries. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/base/sha256.h"
#include "common/base/util.h"

static char *repeat(char c, size_t n) {
    char *s = ol_xmalloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void expect_hex(const void *data, size_t len, const char *want) {
    char hex[OL_SHA256_HEX_SIZE];
    ol_sha256_hex(data, len, hex);
    cr_expect_str_eq(hex, want, "sha256 of %zu bytes", len);
}

Test(sha256, matches_nist_vectors) {
    expect_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    expect_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    expect_hex(two_blocks, strlen(two_blocks), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *long_msg =
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
        "mnopqrstnopqrstu";
    expect_hex(long_msg, strlen(long_msg), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

/* Lengths where the padding needs one or two extra blocks. */
Test(sha256, pads_correctly_at_block_boundaries) {
    static const struct {
        size_t len;
        const char *hex;
    } cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = repeat('a', cases[i].len);
        expect_hex(s, cases[i].len, cases[i].hex);
        free(s);
    }
}

Test(sha256, hashes_a_million_bytes) {
    char *s = repeat('a', 1000000);
    expect_hex(s, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(s);
}

/* Feeding the same bytes in pieces of any size gives the one-shot digest. */
Test(sha256, incremental_updates_equal_one_shot) {
    static const uint8_t want[OL_SHA256_SIZE] = {
        0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92, 0x81, 0xa1, 0xc7, 0xe2, 0x84, 0xd7, 0x3e, 0x67,
        0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97, 0x20, 0x0e, 0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0,
    };
    static const size_t chunks[] = {1, 3, 55, 63, 64, 65, 127, 4096};
    char *s = repeat('a', 1000000);
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        ol_sha256_t ctx;
        uint8_t md[OL_SHA256_SIZE];
        ol_sha256_init(&ctx);
        for (size_t off = 0; off < 1000000; off += chunks[c])
            ol_sha256_update(&ctx, s + off, 1000000 - off < chunks[c] ? 1000000 - off : chunks[c]);
        ol_sha256_final(&ctx, md);
        cr_expect(!memcmp(md, want, sizeof(want)), "digest differs when fed in chunks of %zu bytes", chunks[c]);
    }
    free(s);
}

/* The context can be reused after init, and a zero-length update changes nothing. */
Test(sha256, reinit_and_empty_updates_are_harmless) {
    ol_sha256_t ctx;
    uint8_t a[OL_SHA256_SIZE], b[OL_SHA256_SIZE];
    ol_sha256_init(&ctx);
    ol_sha256_update(&ctx, "xyz", 3);
    ol_sha256_final(&ctx, a);
    ol_sha256_init(&ctx);
    ol_sha256_update(&ctx, "", 0);
    ol_sha256_update(&ctx, "ab", 2);
    ol_sha256_update(&ctx, NULL, 0);
    ol_sha256_update(&ctx, "c", 1);
    ol_sha256_final(&ctx, b);
    static const uint8_t abc[4] = {0xba, 0x78, 0x16, 0xbf};
    cr_expect(!memcmp(b, abc, sizeof(abc)), "reused context must hash \"abc\" from scratch");
    cr_expect(memcmp(a, b, sizeof(a)), "different inputs must give different digests");
}
