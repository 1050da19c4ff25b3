#include "common/base/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base/util.h"

/* Longest element or entry quoted back in an error. */
#define SHOWN 64

/* s[0, len) for an error message: at most SHOWN bytes, anything but
 * printable ASCII as '?' (headers may hold any byte). */
static const char *show(const char *s, size_t len, char buf[SHOWN + 1]) {
    size_t n = len > SHOWN ? SHOWN : len;
    for (size_t i = 0; i < n; i++)
        buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    buf[n] = '\0';
    return buf;
}

/* ---- addresses ----------------------------------------------------------- */

static const unsigned char v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool is_v4mapped(const ol_netaddr_t *a) {
    return a->family == AF_INET6 && !memcmp(a->a, v4mapped_prefix, sizeof(v4mapped_prefix));
}

static void normalize(ol_netaddr_t *a) {
    if (is_v4mapped(a)) {
        memmove(a->a, a->a + 12, 4);
        memset(a->a + 4, 0, 12);
        a->family = AF_INET;
    }
}

/* One literal of family (0: either), not normalized. */
static bool parse_raw(int family, const char *s, size_t len, ol_netaddr_t *out) {
    char buf[OL_NETADDR_STRLEN];
    if (len == 0 || len >= sizeof(buf) || memchr(s, '\0', len))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    memset(out, 0, sizeof(*out));
    if ((family == 0 || family == AF_INET) && inet_pton(AF_INET, buf, out->a) == 1) {
        out->family = AF_INET;
        return true;
    }
    if ((family == 0 || family == AF_INET6) && inet_pton(AF_INET6, buf, out->a) == 1) {
        out->family = AF_INET6;
        return true;
    }
    return false;
}

bool ol_netaddr_parse(const char *s, size_t len, ol_netaddr_t *out) {
    if (!parse_raw(0, s, len, out))
        return false;
    normalize(out);
    return true;
}

bool ol_netaddr_from_sockaddr(const struct sockaddr *sa, ol_netaddr_t *out) {
    memset(out, 0, sizeof(*out));
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        memcpy(out->a, &in->sin_addr, 4);
        out->family = AF_INET;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(out->a, &in6->sin6_addr, 16);
        out->family = AF_INET6;
        normalize(out);
        return true;
    }
    return false;
}

void ol_netaddr_format(const ol_netaddr_t *addr, char *out) {
    if (!inet_ntop(addr->family, addr->a, out, OL_NETADDR_STRLEN))
        snprintf(out, OL_NETADDR_STRLEN, "?");
}

bool ol_netaddr_equal(const ol_netaddr_t *a, const ol_netaddr_t *b) {
    return a->family == b->family && !memcmp(a->a, b->a, a->family == AF_INET ? 4 : 16);
}

/* ---- lists of networks ----------------------------------------------------- */

typedef struct net_s {
    ol_netaddr_t addr; /* normalized, no bits past the prefix */
    unsigned bits;
} net_t;

struct ol_netlist_s {
    net_t *nets;
    size_t count;
};

/* Whether the first bits bits of a and b are equal. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits) {
    unsigned full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, full))
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

static void mask_to(ol_netaddr_t *a, unsigned bits) {
    unsigned full = bits / 8, rest = bits % 8, size = a->family == AF_INET ? 4 : 16;
    if (full >= size)
        return;
    if (rest)
        a->a[full++] &= (unsigned char)(0xff << (8 - rest));
    memset(a->a + full, 0, size - full);
}

static bool is_space(char c) {
    return c == ' ' || c == '\t';
}

/* One entry, "address" or "address/bits", of len bytes (trimmed, not empty). */
static ol_err_t net_parse(const char *s, size_t len, net_t *out, char *errstr, size_t errstr_size) {
    int shown = len > SHOWN ? SHOWN : (int)len;
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    if (!parse_raw(0, s, alen, &out->addr))
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "\"%.*s\" is not an IPv4 or IPv6 network (address or address/prefix length)", shown, s);
    unsigned max = out->addr.family == AF_INET ? 32 : 128;
    out->bits = max;
    if (slash) {
        size_t blen = len - alen - 1;
        unsigned bits = 0;
        bool digits = blen >= 1 && blen <= 3;
        for (size_t i = 0; digits && i < blen; i++) {
            digits = slash[1 + i] >= '0' && slash[1 + i] <= '9';
            bits = bits * 10 + (unsigned)(slash[1 + i] - '0');
        }
        if (!digits || bits > max)
            return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "\"%.*s\": the prefix length must be 0 to %u", shown, s,
                           max);
        out->bits = bits;
    }
    if (is_v4mapped(&out->addr) && out->bits >= 96) {
        normalize(&out->addr);
        out->bits -= 96;
    }
    ol_netaddr_t masked = out->addr;
    mask_to(&masked, out->bits);
    if (!ol_netaddr_equal(&masked, &out->addr)) {
        char net[OL_NETADDR_STRLEN];
        ol_netaddr_format(&masked, net);
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                       "\"%.*s\" has bits set past its prefix length (the network is %s/%u)", shown, s, net, out->bits);
    }
    return OL_ERR_OK;
}

ol_err_t ol_netlist_parse(const char *text, ol_netlist_t **out, char *errstr, size_t errstr_size) {
    *out = NULL;
    ol_netlist_t *nl = ol_xcalloc(1, sizeof(*nl));
    size_t cap = 0;
    for (const char *p = text; *p;) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *s = p;
        while (s < end && is_space(*s))
            s++;
        const char *e = end;
        while (e > s && is_space(e[-1]))
            e--;
        if (e > s) {
            if (nl->count == cap) {
                cap = cap ? cap * 2 : 8;
                nl->nets = ol_xrealloc(nl->nets, cap * sizeof(*nl->nets));
            }
            ol_err_t err = net_parse(s, (size_t)(e - s), &nl->nets[nl->count], errstr, errstr_size);
            if (err) {
                ol_netlist_destroy(nl);
                return err;
            }
            nl->count++;
        }
        p = comma ? comma + 1 : end;
    }
    *out = nl;
    return OL_ERR_OK;
}

void ol_netlist_destroy(ol_netlist_t *nl) {
    if (!nl)
        return;
    free(nl->nets);
    free(nl);
}

size_t ol_netlist_count(const ol_netlist_t *nl) {
    return nl ? nl->count : 0;
}

bool ol_netlist_has_any(const ol_netlist_t *nl) {
    for (size_t i = 0; nl && i < nl->count; i++)
        if (nl->nets[i].bits == 0)
            return true;
    return false;
}

bool ol_netlist_has(const ol_netlist_t *nl, const ol_netaddr_t *addr) {
    for (size_t i = 0; nl && i < nl->count; i++)
        if (nl->nets[i].addr.family == addr->family && prefix_equal(nl->nets[i].addr.a, addr->a, nl->nets[i].bits))
            return true;
    return false;
}

/* ---- forwarding headers ---------------------------------------------------- */

/* A port: 1 to 5 digits up to 65535, or an obfuscated one (RFC 7239 obfport). */
static bool port_ok(const char *s, size_t len) {
    if (len >= 2 && s[0] == '_') {
        for (size_t i = 1; i < len; i++)
            if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
                  s[i] == '.' || s[i] == '_' || s[i] == '-'))
                return false;
        return true;
    }
    if (len < 1 || len > 5)
        return false;
    unsigned long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    return v <= 65535;
}

/* An element's node: an address with or without a port (see the header). */
static bool node_parse(const char *s, size_t len, ol_netaddr_t *out) {
    if (ol_netaddr_parse(s, len, out))
        return true;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close || !parse_raw(AF_INET6, s + 1, (size_t)(close - s - 1), out))
            return false;
        normalize(out);
        size_t rest = len - (size_t)(close + 1 - s);
        return rest == 0 || (close[1] == ':' && port_ok(close + 2, rest - 1));
    }
    const char *colon = memchr(s, ':', len);
    if (!colon)
        return false;
    size_t alen = (size_t)(colon - s);
    return parse_raw(AF_INET, s, alen, out) && port_ok(colon + 1, len - alen - 1);
}

/* Where the walk is: the left-most trusted address seen so far. */
typedef struct walk_s {
    const ol_netlist_t *trusted;
    ol_netaddr_t leftmost;
    bool any;
} walk_t;

/* Takes the next node from the right: true when it is the client. */
static bool walk_step(walk_t *w, const ol_netaddr_t *a) {
    w->leftmost = *a;
    w->any = true;
    return !ol_netlist_has(w->trusted, a);
}

static ol_err_t walk_end(const walk_t *w, ol_netaddr_t *out) {
    if (!w->any)
        return OL_ERR_NOT_FOUND;
    *out = w->leftmost; /* every address was a trusted proxy's */
    return OL_ERR_OK;
}

static ol_err_t xff_client(const char *header, const ol_netlist_t *trusted, ol_netaddr_t *out, char *errstr,
                           size_t errstr_size) {
    walk_t w = {.trusted = trusted};
    size_t end = strlen(header);
    for (;;) { /* header[start, end) is an element, header[end] a comma or the end */
        size_t start = end;
        while (start > 0 && header[start - 1] != ',')
            start--;
        const char *s = header + start, *e = header + end;
        while (s < e && is_space(*s))
            s++;
        while (e > s && is_space(e[-1]))
            e--;
        if (e > s) {
            ol_netaddr_t a;
            char buf[SHOWN + 1];
            if (!node_parse(s, (size_t)(e - s), &a))
                return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "X-Forwarded-For: \"%s\" is not an IP address",
                               show(s, (size_t)(e - s), buf));
            if (walk_step(&w, &a)) {
                *out = a;
                return OL_ERR_OK;
            }
        }
        if (start == 0)
            break;
        end = start - 1;
    }
    return walk_end(&w, out);
}

/* RFC 7230 token characters. */
static bool is_tchar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A Forwarded element, read left to right: its for= value, unescaped. */
typedef struct felem_s {
    const char *value; /* NULL when the element has no for= */
    size_t len;
} felem_t;

/* Reads every element of a Forwarded header into *elems (new; count in
 * *n). The unescaped values live in *buf (new). */
static ol_err_t rfc7239_read(const char *h, felem_t **elems, size_t *n, char **buf, char *errstr, size_t errstr_size) {
    size_t len = strlen(h), cap = 0, used = 0;
    *elems = NULL;
    *n = 0;
    *buf = ol_xmalloc(len + 1);
    size_t i = 0;
    for (;;) {
        while (i < len && is_space(h[i]))
            i++;
        if (i == len)
            break;
        if (h[i] == ',') { /* an empty element */
            i++;
            continue;
        }
        felem_t el = {NULL, 0};
        for (;;) { /* the pairs of one element */
            while (i < len && is_space(h[i]))
                i++;
            if (i == len || h[i] == ',')
                break;
            if (h[i] == ';') { /* an empty pair */
                i++;
                continue;
            }
            size_t name = i;
            while (i < len && is_tchar(h[i]))
                i++;
            size_t name_len = i - name;
            if (!name_len || i == len || h[i] != '=')
                return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "Forwarded: expected name=value at byte %zu",
                               name_len ? i : name);
            i++;
            char *value = *buf + used;
            size_t vlen = 0;
            if (i < len && h[i] == '"') {
                for (i++; i < len && h[i] != '"'; i++) {
                    if (h[i] == '\\' && i + 1 < len)
                        i++;
                    value[vlen++] = h[i];
                }
                if (i == len)
                    return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "Forwarded: unterminated quoted string");
                i++;
            } else {
                while (i < len && h[i] != ',' && h[i] != ';' && h[i] != '"' && !is_space(h[i]) &&
                       (unsigned char)h[i] >= 0x20)
                    value[vlen++] = h[i++];
                if (!vlen)
                    return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "Forwarded: empty value at byte %zu", i);
            }
            used += vlen;
            if (name_len == 3 && !strncasecmp(h + name, "for", 3)) {
                if (el.value)
                    return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "Forwarded: for= twice in one element");
                el.value = value;
                el.len = vlen;
            }
            while (i < len && is_space(h[i]))
                i++;
            if (i < len && h[i] == ';')
                i++;
            else if (i < len && h[i] != ',')
                return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "Forwarded: unexpected \"%s\" at byte %zu",
                               show(h + i, 1, (char[SHOWN + 1]){0}), i);
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *elems = ol_xrealloc(*elems, cap * sizeof(**elems));
        }
        (*elems)[(*n)++] = el;
    }
    return OL_ERR_OK;
}

static ol_err_t rfc7239_client(const char *header, const ol_netlist_t *trusted, ol_netaddr_t *out, char *errstr,
                               size_t errstr_size) {
    felem_t *elems;
    size_t n;
    char *buf;
    ol_err_t err = rfc7239_read(header, &elems, &n, &buf, errstr, errstr_size);
    walk_t w = {.trusted = trusted};
    for (size_t k = n; !err && k-- > 0;) {
        ol_netaddr_t a;
        char shown[SHOWN + 1];
        if (!elems[k].value) {
            err = ol_errf(errstr, errstr_size, OL_ERR_INVALID, "Forwarded: element %zu of %zu has no for=", k + 1, n);
        } else if (!node_parse(elems[k].value, elems[k].len, &a)) {
            err = ol_errf(errstr, errstr_size, OL_ERR_INVALID, "Forwarded: for=\"%s\" is not an IP address",
                          show(elems[k].value, elems[k].len, shown));
        } else if (walk_step(&w, &a)) {
            *out = a;
            goto out;
        }
    }
    if (!err)
        err = walk_end(&w, out);
out:
    free(elems);
    free(buf);
    return err;
}

ol_err_t ol_netaddr_forwarded(ol_forwarded_t kind, const char *header, const ol_netlist_t *trusted, ol_netaddr_t *out,
                              char *errstr, size_t errstr_size) {
    return kind == OL_FORWARDED_RFC7239 ? rfc7239_client(header, trusted, out, errstr, errstr_size)
                                        : xff_client(header, trusted, out, errstr, errstr_size);
}

ol_err_t ol_netaddr_client(const ol_netaddr_t *peer, const ol_netlist_t *trusted, ol_forwarded_t kind,
                           const char *header, ol_netaddr_t *out, bool *forwarded, char *errstr, size_t errstr_size) {
    *out = *peer;
    *forwarded = false;
    if (!header || !ol_netlist_has(trusted, peer))
        return OL_ERR_OK;
    ol_netaddr_t a;
    ol_err_t err = ol_netaddr_forwarded(kind, header, trusted, &a, errstr, errstr_size);
    if (err == OL_ERR_NOT_FOUND)
        return OL_ERR_OK;
    if (err)
        return err;
    *out = a;
    *forwarded = true;
    return OL_ERR_OK;
}
