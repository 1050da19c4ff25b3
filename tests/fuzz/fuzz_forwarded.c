/* Fuzz target forwarded: a forwarding header as a proxy (or a client behind
 * it) may send it, read the way the gate reads it (common/base/netaddr.c:
 * ol_netaddr_client, ol_netaddr_forwarded). The first byte picks the header
 * kind (X-Forwarded-For or RFC 7239 Forwarded) and whether the peer is a
 * trusted proxy; the rest is the header's value.
 *
 * Properties:
 *  - a peer that is not trusted is its own client, whatever the header says;
 *  - a client found is an address that prints and parses back to itself;
 *  - a refusal's reason is valid UTF-8 (it reaches the 400 answer's JSON). */
#include <stdlib.h>
#include <string.h>

#include "common/base/err.h"
#include "common/base/netaddr.h"
#include "common/base/util.h"
#include "fuzz.h"

static ol_netlist_t *trusted;

static void teardown(void) {
    ol_netlist_destroy(trusted);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char errstr[256];
    if (ol_netlist_parse("10.0.0.0/8, 192.168.1.1/32, 2001:db8::/32, ::1/128", &trusted, errstr, sizeof(errstr)))
        abort();
    atexit(teardown);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    ol_forwarded_t kind = data[0] & 1 ? OL_FORWARDED_RFC7239 : OL_FORWARDED_XFF;
    bool peer_trusted = data[0] & 2;
    char *header = malloc(size); /* the value without the first byte, NUL-terminated */
    memcpy(header, data + 1, size - 1);
    header[size - 1] = '\0';

    ol_netaddr_t peer, out;
    const char *peer_text = peer_trusted ? "10.1.2.3" : "198.51.100.9";
    FUZZ_CHECK(ol_netaddr_parse(peer_text, strlen(peer_text), &peer), "the peer does not parse");
    bool forwarded = false;
    char errstr[300];
    ol_err_t err = ol_netaddr_client(&peer, trusted, kind, header, &out, &forwarded, errstr, sizeof(errstr));
    if (!peer_trusted)
        FUZZ_CHECK(!err && !forwarded && ol_netaddr_equal(&out, &peer),
                   "an untrusted peer's header was read (err %d, forwarded %d)", (int)err, (int)forwarded);
    if (err) {
        FUZZ_CHECK(ol_utf8_invalid_at(errstr, strlen(errstr)) < 0, "the reason is not UTF-8: %s", errstr);
    } else {
        char text[OL_NETADDR_STRLEN];
        ol_netaddr_format(&out, text);
        ol_netaddr_t back;
        FUZZ_CHECK(ol_netaddr_parse(text, strlen(text), &back) && ol_netaddr_equal(&back, &out),
                   "the client %s does not parse back to itself", text);
    }
    free(header);
    return 0;
}
