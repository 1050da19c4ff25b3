/* Client addresses without HTTP: address literals (v4, v6, v4-mapped v6),
 * lists of networks (CIDRs) and their refusals, matching, and the walk of
 * X-Forwarded-For and RFC 7239 Forwarded from the right past trusted proxies. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/base/netaddr.h"
#include "testutil.h"

static ol_netaddr_t addr(const char *s) {
    ol_netaddr_t a;
    cr_assert(ol_netaddr_parse(s, strlen(s), &a), "\"%s\" should parse", s);
    return a;
}

static const char *text(const ol_netaddr_t *a) {
    static char buf[OL_NETADDR_STRLEN];
    ol_netaddr_format(a, buf);
    return buf;
}

static ol_netlist_t *list(const char *s) {
    ol_netlist_t *nl;
    char errstr[256] = "";
    cr_assert_eq(ol_netlist_parse(s, &nl, errstr, sizeof(errstr)), OL_ERR_OK, "\"%s\": %s", s, errstr);
    return nl;
}

/* Expects nl to hold each address of the NULL-terminated list in and none of out. */
static void expect_members(const ol_netlist_t *nl, const char *const *in, const char *const *out) {
    for (; in && *in; in++) {
        ol_netaddr_t a = addr(*in);
        cr_expect(ol_netlist_has(nl, &a), "%s is in the list", *in);
    }
    for (; out && *out; out++) {
        ol_netaddr_t a = addr(*out);
        cr_expect(!ol_netlist_has(nl, &a), "%s is not in the list", *out);
    }
}

/* ---- addresses ---- */

Test(netaddr, parses_v4_and_v6_and_formats_them_canonically) {
    ol_netaddr_t a = addr("192.0.2.1");
    cr_expect_eq(a.family, AF_INET);
    cr_expect_str_eq(text(&a), "192.0.2.1");
    a = addr("2001:DB8:0:0::0001");
    cr_expect_eq(a.family, AF_INET6);
    cr_expect_str_eq(text(&a), "2001:db8::1");
    a = addr("::1");
    cr_expect_str_eq(text(&a), "::1");
}

Test(netaddr, a_v4_mapped_v6_address_is_the_v4_address) {
    ol_netaddr_t a = addr("::ffff:192.0.2.1"), b = addr("192.0.2.1");
    cr_expect_eq(a.family, AF_INET);
    cr_expect(ol_netaddr_equal(&a, &b));
    cr_expect_str_eq(text(&a), "192.0.2.1");
    a = addr("::FFFF:c000:0201");
    cr_expect_str_eq(text(&a), "192.0.2.1");
    /* v4-compatible (deprecated) and NAT64 addresses are IPv6 */
    a = addr("64:ff9b::192.0.2.1");
    cr_expect_eq(a.family, AF_INET6);
}

Test(netaddr, refuses_what_is_not_one_address) {
    static const char *const bad[] = {
        "",           "1.2.3",   "1.2.3.4.5",    "256.1.1.1",        "1.2.3.4 ",  " 1.2.3.4",
        "1.2.3.4:80", "[::1]",   "fe80::1%eth0", "2001:db8:::1",     "localhost", "0x7f.0.0.1",
        "1.2.3.4/32", "unknown", "::ffff:1.2.3", "1:2:3:4:5:6:7:8:9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ol_netaddr_t a;
        cr_expect(!ol_netaddr_parse(bad[i], strlen(bad[i]), &a), "\"%s\" should not parse", bad[i]);
    }
    ol_netaddr_t a;
    cr_expect(!ol_netaddr_parse("1.2.3.4\0x", 9, &a), "a NUL inside is not cut off");
    cr_expect(ol_netaddr_parse("1.2.3.4x", 7, &a), "only len bytes are read");
}

Test(netaddr, reads_socket_addresses_of_both_families) {
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    ol_netaddr_t a;
    cr_assert(ol_netaddr_from_sockaddr((struct sockaddr *)&in, &a));
    cr_expect_str_eq(text(&a), "127.0.0.1");
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &in6.sin6_addr);
    cr_assert(ol_netaddr_from_sockaddr((struct sockaddr *)&in6, &a));
    cr_expect_eq(a.family, AF_INET, "a dual-stack socket's v4 peer");
    cr_expect_str_eq(text(&a), "10.1.2.3");
    inet_pton(AF_INET6, "2001:db8::5", &in6.sin6_addr);
    cr_assert(ol_netaddr_from_sockaddr((struct sockaddr *)&in6, &a));
    cr_expect_str_eq(text(&a), "2001:db8::5");
    struct sockaddr un = {.sa_family = AF_UNIX};
    cr_expect(!ol_netaddr_from_sockaddr(&un, &a));
    cr_expect(!ol_netaddr_from_sockaddr(NULL, &a));
}

/* ---- lists of networks ---- */

Test(netaddr, parses_lists_of_networks_with_spaces_and_empty_entries) {
    ol_netlist_t *nl = list(" 10.0.0.0/8 ,\t192.0.2.7, 2001:db8::/32,,  ::1 ,");
    cr_expect_eq(ol_netlist_count(nl), 4);
    ol_netaddr_t in[] = {addr("10.255.1.2"), addr("192.0.2.7"), addr("2001:db8:ffff::9"), addr("::1"),
                         addr("::ffff:10.0.0.1")};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        cr_expect(ol_netlist_has(nl, &in[i]), "%s is in the list", text(&in[i]));
    ol_netaddr_t out[] = {addr("11.0.0.1"), addr("192.0.2.8"), addr("2001:db9::1"), addr("::2"), addr("9.255.255.255")};
    for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++)
        cr_expect(!ol_netlist_has(nl, &out[i]), "%s is not in the list", text(&out[i]));
    cr_expect(!ol_netlist_has_any(nl));
    ol_netlist_destroy(nl);
}

Test(netaddr, the_empty_list_holds_nothing) {
    ol_netlist_t *nl = list("");
    cr_expect_eq(ol_netlist_count(nl), 0);
    ol_netaddr_t a = addr("127.0.0.1");
    cr_expect(!ol_netlist_has(nl, &a));
    cr_expect(!ol_netlist_has(NULL, &a));
    ol_netlist_destroy(nl);
    nl = list(" , ");
    cr_expect_eq(ol_netlist_count(nl), 0);
    ol_netlist_destroy(nl);
}

Test(netaddr, matches_prefixes_that_are_not_whole_bytes) {
    ol_netlist_t *nl = list("192.0.2.64/26, 2001:db8:8000::/33, 0.0.0.0/32");
    static const char *const in[] = {"192.0.2.64", "192.0.2.127", "2001:db8:8000::1", "2001:db8:ffff:ffff::1", NULL};
    static const char *const out[] = {"192.0.2.63", "192.0.2.128", "2001:db8:7fff::1", NULL};
    expect_members(nl, in, out);
    ol_netlist_destroy(nl);
}

Test(netaddr, families_match_their_own_networks_only) {
    ol_netlist_t *nl = list("::/0");
    ol_netaddr_t v4 = addr("10.0.0.1"), mapped = addr("::ffff:10.0.0.1"), v6 = addr("2001:db8::1");
    cr_expect(ol_netlist_has(nl, &v6));
    cr_expect(!ol_netlist_has(nl, &v4), "::/0 holds the IPv6 addresses only");
    cr_expect(!ol_netlist_has(nl, &mapped), "a v4-mapped address is IPv4");
    cr_expect(ol_netlist_has_any(nl));
    ol_netlist_destroy(nl);
    nl = list("0.0.0.0/0");
    static const char *const v4s[] = {"10.0.0.1", "::ffff:10.0.0.1", NULL}, *const v6s[] = {"2001:db8::1", NULL};
    expect_members(nl, v4s, v6s);
    ol_netlist_destroy(nl);
}

Test(netaddr, a_v4_mapped_network_is_the_v4_network) {
    ol_netlist_t *nl = list("::ffff:10.0.0.0/104");
    ol_netaddr_t in = addr("10.200.0.1"), out = addr("11.0.0.1");
    cr_expect(ol_netlist_has(nl, &in));
    cr_expect(!ol_netlist_has(nl, &out));
    ol_netlist_destroy(nl);
    nl = list("::ffff:192.0.2.1");
    in = addr("192.0.2.1");
    cr_expect(ol_netlist_has(nl, &in));
    ol_netlist_destroy(nl);
}

Test(netaddr, refuses_bad_networks_naming_the_entry) {
    static const olt_case_t bad[] = {
        {"10.0.0.0/33", "\"10.0.0.0/33\": the prefix length must be 0 to 32"},
        {"2001:db8::/129", "\"2001:db8::/129\": the prefix length must be 0 to 128"},
        {"10.0.0.0/", "the prefix length must be 0 to 32"},
        {"10.0.0.0/-1", "the prefix length must be 0 to 32"},
        {"10.0.0.0/8x", "the prefix length must be 0 to 32"},
        {"10.0.0.0/ 8", "the prefix length must be 0 to 32"},
        {"10.0.0.0/0008", "the prefix length must be 0 to 32"},
        {"10.0.0.0/8/8", "the prefix length must be 0 to 32"},
        {"10.0.0.1/8", "\"10.0.0.1/8\" has bits set past its prefix length (the network is 10.0.0.0/8)"},
        {"2001:db8::1/32", "(the network is 2001:db8::/32)"},
        {"192.0.2.0/24, 10.0.0.256/8", "\"10.0.0.256/8\" is not an IPv4 or IPv6 network"},
        {"10.0.0.0 /8", "\"10.0.0.0 /8\" is not an IPv4 or IPv6 network"},
        {"proxy.internal", "\"proxy.internal\" is not an IPv4 or IPv6 network"},
        {"/8", "\"/8\" is not an IPv4 or IPv6 network"},
        {"10.0.0.0/8 10.1.0.0/16", "the prefix length must be 0 to 32"},
        {"10.0.0.0-10.0.0.9", "is not an IPv4 or IPv6 network"},
        {"fe80::1%eth0/64", "is not an IPv4 or IPv6 network"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ol_netlist_t *nl = (ol_netlist_t *)1;
        char errstr[256] = "";
        cr_expect_eq(ol_netlist_parse(bad[i].in, &nl, errstr, sizeof(errstr)), OL_ERR_CONFIG, "\"%s\"", bad[i].in);
        cr_expect_null(nl, "\"%s\"", bad[i].in);
        cr_expect(strstr(errstr, bad[i].want), "\"%s\": \"%s\" does not say \"%s\"", bad[i].in, errstr, bad[i].want);
    }
}

/* ---- X-Forwarded-For ---- */

/* The client ol_netaddr_forwarded finds, as text; the error's text after
 * "error: " otherwise, "none" for OL_ERR_NOT_FOUND. */
static const char *walk(ol_forwarded_t kind, const char *header, const char *trusted) {
    static char out[300];
    ol_netlist_t *nl = list(trusted);
    ol_netaddr_t a;
    char errstr[256] = "";
    ol_err_t err = ol_netaddr_forwarded(kind, header, nl, &a, errstr, sizeof(errstr));
    ol_netlist_destroy(nl);
    if (err == OL_ERR_NOT_FOUND)
        snprintf(out, sizeof(out), "none");
    else if (err)
        snprintf(out, sizeof(out), "error: %s", errstr);
    else
        ol_netaddr_format(&a, out);
    cr_assert(err == OL_ERR_OK || err == OL_ERR_NOT_FOUND || err == OL_ERR_INVALID, "%s: %s", header, ol_err2str(err));
    return out;
}

static const char *xff(const char *header, const char *trusted) {
    return walk(OL_FORWARDED_XFF, header, trusted);
}

static const char *fwd(const char *header, const char *trusted) {
    return walk(OL_FORWARDED_RFC7239, header, trusted);
}

Test(netaddr, xff_the_right_most_address_not_trusted_is_the_client) {
    cr_expect_str_eq(xff("203.0.113.7", ""), "203.0.113.7");
    cr_expect_str_eq(xff("198.51.100.1, 203.0.113.7", ""), "203.0.113.7", "what the client wrote is left of it");
    cr_expect_str_eq(xff("198.51.100.1, 203.0.113.7, 10.0.0.2, 10.0.0.1", "10.0.0.0/8"), "203.0.113.7",
                     "the trusted proxies are skipped");
    cr_expect_str_eq(xff("10.9.9.9, 10.0.0.2", "10.0.0.0/8"), "10.9.9.9", "all trusted: the left-most");
    cr_expect_str_eq(xff("203.0.113.7,10.0.0.2", "10.0.0.2"), "203.0.113.7", "no spaces");
}

Test(netaddr, xff_spaces_empty_elements_and_header_lines) {
    cr_expect_str_eq(xff("  203.0.113.7 \t", ""), "203.0.113.7");
    cr_expect_str_eq(xff("198.51.100.1 ,\t 203.0.113.7 , ,", ""), "203.0.113.7", "empty elements are ignored");
    cr_expect_str_eq(xff("198.51.100.1,203.0.113.7", ""), "203.0.113.7", "two header lines joined");
    cr_expect_str_eq(xff("", ""), "none");
    cr_expect_str_eq(xff(" , ,\t", ""), "none");
}

Test(netaddr, xff_ports_brackets_and_v6) {
    cr_expect_str_eq(xff("203.0.113.7:51234", ""), "203.0.113.7");
    cr_expect_str_eq(xff("2001:db8::7", ""), "2001:db8::7");
    cr_expect_str_eq(xff("[2001:DB8::7]", ""), "2001:db8::7");
    cr_expect_str_eq(xff("[2001:db8::7]:443", ""), "2001:db8::7");
    cr_expect_str_eq(xff("::ffff:203.0.113.7", ""), "203.0.113.7", "v4-mapped");
    cr_expect_str_eq(xff("[::ffff:203.0.113.7]:80, ::ffff:10.0.0.1", "10.0.0.0/8"), "203.0.113.7");
    cr_expect_str_eq(xff("2001:db8::7, 2001:db8:ffff::1", "2001:db8:ffff::/48"), "2001:db8::7");
}

Test(netaddr, xff_garbage_where_the_walk_stops_is_an_error) {
    static const char *const bad[] = {"unknown",          "203.0.113.7 198.51.100.1",
                                      "203.0.113.7:",     "203.0.113.7:65536",
                                      "203.0.113.7:http", "[2001:db8::7",
                                      "[2001:db8::7]x",   "[203.0.113.7]",
                                      "2001:db8::7:80:",  "\"203.0.113.7\"",
                                      "_hidden",          "fe80::1%eth0",
                                      "203.0.113.7;for",  "0x7f000001"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *got = xff(bad[i], "");
        cr_expect(!strncmp(got, "error: X-Forwarded-For: \"", 25) && strstr(got, "\" is not an IP address"),
                  "\"%s\": %s", bad[i], got);
    }
    cr_expect_str_eq(xff("\xff\x01;", ""), "error: X-Forwarded-For: \"??;\" is not an IP address",
                     "bytes that are not printable ASCII are not echoed");
    cr_expect_str_eq(fwd("for=\"\xc3\xa9\"", ""), "error: Forwarded: for=\"??\" is not an IP address");
    cr_expect_str_eq(xff("203.0.113.7, garbage, 10.0.0.1", "10.0.0.0/8"),
                     "error: X-Forwarded-For: \"garbage\" is not an IP address", "past a trusted proxy");
}

Test(netaddr, xff_garbage_left_of_the_client_is_never_read) {
    cr_expect_str_eq(xff("garbage, \"quoted, [[[, 203.0.113.7", ""), "203.0.113.7");
    cr_expect_str_eq(xff("unknown, 203.0.113.7, 10.0.0.1", "10.0.0.1"), "203.0.113.7");
}

/* ---- Forwarded (RFC 7239) ---- */

Test(netaddr, forwarded_the_examples_of_rfc_7239) {
    cr_expect_str_eq(fwd("for=\"_gazonk\", for=192.0.2.60", ""), "192.0.2.60");
    cr_expect_str_eq(fwd("For=\"[2001:db8:cafe::17]:4711\"", ""), "2001:db8:cafe::17");
    cr_expect_str_eq(fwd("for=192.0.2.60;proto=http;by=203.0.113.43", ""), "192.0.2.60");
    cr_expect_str_eq(fwd("for=192.0.2.43, for=198.51.100.17", ""), "198.51.100.17");
    cr_expect_str_eq(fwd("for=192.0.2.43, for=198.51.100.17", "198.51.100.17/32"), "192.0.2.43");
    cr_expect_str_eq(fwd("for=192.0.2.43, for=\"[2001:db8:cafe::17]\"", "2001:db8:cafe::/48"), "192.0.2.43");
}

Test(netaddr, forwarded_forms_of_the_value) {
    cr_expect_str_eq(fwd("for=\"192.0.2.60:8080\"", ""), "192.0.2.60");
    cr_expect_str_eq(fwd("for=\"[2001:db8::1]:_port-1\"", ""), "2001:db8::1", "an obfuscated port");
    cr_expect_str_eq(fwd("for=\"192.0.2.\\60\"", ""), "192.0.2.60", "a quoted-pair");
    cr_expect_str_eq(fwd("FOR=192.0.2.60", ""), "192.0.2.60", "names are case-insensitive");
    cr_expect_str_eq(fwd("proto=https;for=192.0.2.60;host=\"a,b;c\"", ""), "192.0.2.60",
                     "separators inside a quoted string");
    cr_expect_str_eq(fwd(" for=192.0.2.1 ; proto=http , ,for=192.0.2.60 ;", ""), "192.0.2.60",
                     "spaces around separators, empty elements and pairs");
    cr_expect_str_eq(fwd("for=[2001:db8::1]", ""), "2001:db8::1", "brackets unquoted, leniently");
    cr_expect_str_eq(fwd("for=\"[::ffff:192.0.2.60]\"", ""), "192.0.2.60", "v4-mapped");
    cr_expect_str_eq(fwd("", ""), "none");
    cr_expect_str_eq(fwd(" , ", ""), "none");
}

Test(netaddr, forwarded_unusable_elements_are_errors) {
    static const struct {
        const char *header, *says;
    } bad[] = {
        {"for=unknown", "for=\"unknown\" is not an IP address"},
        {"for=_hidden", "for=\"_hidden\" is not an IP address"},
        {"for=\"[2001:db8::1]:99999\"", "is not an IP address"},
        {"for=\"2001:db8::1]\"", "is not an IP address"},
        {"proto=https;by=10.0.0.1", "element 1 of 1 has no for="},
        {"for=192.0.2.1, proto=https", "element 2 of 2 has no for="},
        {"for=192.0.2.1;for=192.0.2.2", "for= twice in one element"},
        {"for=\"192.0.2.1", "unterminated quoted string"},
        {"for=", "empty value"},
        {"for", "expected name=value"},
        {"=192.0.2.1", "expected name=value"},
        {"for =192.0.2.1", "expected name=value"},
        {"for=192.0.2.1 x", "unexpected \"x\""},
        {"for=\"192.0.2.1\"x", "unexpected \"x\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *got = fwd(bad[i].header, "");
        cr_expect(!strncmp(got, "error: Forwarded: ", 18) && strstr(got, bad[i].says), "\"%s\": %s does not say %s",
                  bad[i].header, got, bad[i].says);
    }
}

Test(netaddr, forwarded_elements_left_of_the_client_are_not_judged) {
    cr_expect_str_eq(fwd("for=unknown, proto=http, for=192.0.2.60", ""), "192.0.2.60");
    /* the quoting is read left to right: a quote the client leaves open
     * swallows the proxy's element, and the header is refused */
    cr_expect(!strncmp(fwd("for=\"192.0.2.1, for=192.0.2.60", ""), "error:", 6));
}

/* ---- the client of a request ---- */

static const char *client(const char *peer, const char *trusted, ol_forwarded_t kind, const char *header,
                          bool *forwarded) {
    static char out[300];
    ol_netlist_t *nl = list(trusted);
    ol_netaddr_t p = addr(peer), a;
    char errstr[256] = "";
    ol_err_t err = ol_netaddr_client(&p, nl, kind, header, &a, forwarded, errstr, sizeof(errstr));
    ol_netlist_destroy(nl);
    if (err)
        snprintf(out, sizeof(out), "error: %s", errstr);
    else
        ol_netaddr_format(&a, out);
    return out;
}

Test(netaddr, the_header_is_read_only_from_a_trusted_peer) {
    bool fw = true;
    cr_expect_str_eq(client("192.0.2.9", "", OL_FORWARDED_XFF, "203.0.113.50", &fw), "192.0.2.9");
    cr_expect(!fw);
    cr_expect_str_eq(client("192.0.2.9", "10.0.0.0/8", OL_FORWARDED_XFF, "203.0.113.50", &fw), "192.0.2.9",
                     "a peer that is no trusted proxy");
    cr_expect(!fw);
    cr_expect_str_eq(client("192.0.2.9", "10.0.0.0/8", OL_FORWARDED_XFF, "garbage", &fw), "192.0.2.9",
                     "not even judged");
    cr_expect_str_eq(client("10.0.0.1", "10.0.0.0/8", OL_FORWARDED_XFF, NULL, &fw), "10.0.0.1", "no header");
    cr_expect(!fw);
    cr_expect_str_eq(client("10.0.0.1", "10.0.0.0/8", OL_FORWARDED_XFF, " ", &fw), "10.0.0.1", "an empty header");
    cr_expect(!fw);
    cr_expect_str_eq(client("10.0.0.1", "10.0.0.0/8", OL_FORWARDED_XFF, "203.0.113.50, 10.0.0.3", &fw), "203.0.113.50");
    cr_expect(fw);
    cr_expect_str_eq(client("::ffff:10.0.0.1", "10.0.0.0/8", OL_FORWARDED_RFC7239, "for=\"[2001:db8::50]\"", &fw),
                     "2001:db8::50", "a v4-mapped peer in a v4 network");
    cr_expect(fw);
    cr_expect_str_eq(client("10.0.0.1", "10.0.0.0/8", OL_FORWARDED_XFF, "203.0.113.50, nonsense", &fw),
                     "error: X-Forwarded-For: \"nonsense\" is not an IP address");
}
