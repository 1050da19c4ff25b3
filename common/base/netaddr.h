#ifndef OL_NETADDR_H
#define OL_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "common/base/err.h"

/* Which address a request comes from: IP addresses, lists of networks
 * (CIDRs) and the forwarding headers proxies add (X-Forwarded-For, and
 * RFC 7239 Forwarded). Pure: no sockets, no HTTP, no clock; literals are
 * parsed with inet_pton. Thread-safe: a list is read-only once parsed.
 *
 * An address is kept normalized: an IPv4-mapped IPv6 address
 * (::ffff:192.0.2.1) is the IPv4 address, so a client has one key whichever
 * way it arrived; an IPv4 address is matched by IPv4 networks only (a
 * network written as ::ffff:a.b.c.d/96+n is the IPv4 network a.b.c.d/n). */

typedef struct ol_netaddr_s {
    int family;          /* AF_INET or AF_INET6 */
    unsigned char a[16]; /* network order; the first 4 bytes for AF_INET */
} ol_netaddr_t;

/* Room for an address as text, NUL included (INET6_ADDRSTRLEN). */
#define OL_NETADDR_STRLEN 46

/* Parses the len bytes at s as one address literal (no brackets, port or
 * zone); false when they are not one. */
bool ol_netaddr_parse(const char *s, size_t len, ol_netaddr_t *out);
/* The address of a socket address (AF_INET or AF_INET6); false for
 * another family or NULL. */
bool ol_netaddr_from_sockaddr(const struct sockaddr *sa, ol_netaddr_t *out);
/* The canonical text of addr (inet_ntop: "2001:db8::1", "192.0.2.1") into
 * out, which holds OL_NETADDR_STRLEN bytes. */
void ol_netaddr_format(const ol_netaddr_t *addr, char *out);
/* Whether a and b are the same address. */
bool ol_netaddr_equal(const ol_netaddr_t *a, const ol_netaddr_t *b);

/* ---- lists of networks ---------------------------------------------------- */

typedef struct ol_netlist_s ol_netlist_t;

/* Parses a comma-separated list of networks, "10.0.0.0/8, 2001:db8::/32,
 * 192.0.2.7" (an address alone is /32 or /128; spaces around entries and
 * empty entries are ignored; "" is the empty list, which holds nothing).
 * A network with bits set past its prefix (10.0.0.1/8) is refused, as a
 * likely typo. *out is new (ol_netlist_destroy), NULL on error, where errstr
 * names the entry and what is wrong with it. */
ol_err_t ol_netlist_parse(const char *text, ol_netlist_t **out, char *errstr, size_t errstr_size);
void ol_netlist_destroy(ol_netlist_t *nl);
/* Networks in the list. */
size_t ol_netlist_count(const ol_netlist_t *nl);
/* Whether a network of the list has prefix length 0 (holds every address
 * of its family). */
bool ol_netlist_has_any(const ol_netlist_t *nl);
/* Whether addr is in one of the networks; false for NULL or an empty list. */
bool ol_netlist_has(const ol_netlist_t *nl, const ol_netaddr_t *addr);

/* ---- forwarding headers --------------------------------------------------- */

typedef enum ol_forwarded_e {
    OL_FORWARDED_XFF,    /* X-Forwarded-For: 203.0.113.7, 10.0.0.2 */
    OL_FORWARDED_RFC7239 /* Forwarded: for=203.0.113.7;proto=https, for="[2001:db8::7]:4711" */
} ol_forwarded_t;

/* The client a chain of proxies names. header is the header's value, its
 * lines joined with commas in the order received. Each proxy appends the
 * address it saw, so the chain is walked from the right, skipping the
 * addresses in trusted: the first one that is not is the client (when all
 * are, the left-most). What lies left of it was written by the client and
 * is not judged, so garbage there does no harm; except that Forwarded's
 * quoting is read left to right over the whole header, so a syntax error
 * anywhere in it is an error (a client can only get its own request refused).
 *
 * An element is an address with or without a port: 192.0.2.1,
 * 192.0.2.1:8080, 2001:db8::1, [2001:db8::1], [2001:db8::1]:8080; in
 * Forwarded, the value of its for= parameter, a token or a quoted string
 * (RFC 7239: for="[2001:db8::1]:4711"). Empty elements are ignored.
 *
 * OL_ERR_OK with *out set; OL_ERR_NOT_FOUND when the header holds no element;
 * OL_ERR_INVALID when an element the walk reaches is not an address (garbage,
 * "unknown", an obfuscated identifier, a Forwarded element without for=, a
 * syntax error), errstr saying which. */
ol_err_t ol_netaddr_forwarded(ol_forwarded_t kind, const char *header, const ol_netlist_t *trusted, ol_netaddr_t *out,
                              char *errstr, size_t errstr_size);

/* A request's client: peer (the TCP peer) unless peer is in trusted and the
 * forwarding header (NULL when absent) names one, then that one
 * (*forwarded true). Errors as ol_netaddr_forwarded, except that a header
 * with no element leaves the peer. A header from a peer not in trusted is
 * not read at all. */
ol_err_t ol_netaddr_client(const ol_netaddr_t *peer, const ol_netlist_t *trusted, ol_forwarded_t kind,
                           const char *header, ol_netaddr_t *out, bool *forwarded, char *errstr, size_t errstr_size);

#endif
