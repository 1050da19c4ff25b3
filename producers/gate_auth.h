#ifndef OL_GATE_AUTH_H
#define OL_GATE_AUTH_H

/* Who sends a request to the gate (gate.auth), when the body's userID and
 * userLevel are not to be believed:
 *  - none:   nobody is authenticated (the original API: the body says who);
 *  - jwt:    Authorization: Bearer <token>, a JWT signed with RS256 or HS256
 *            (gate.auth.jwt.alg, one of them, never "none"), its key read
 *            once at start from gate.auth.jwt.key.file; issuer, audience,
 *            exp (required), nbf and iat checked; the user and the level are
 *            two claims of it;
 *  - header: an authenticating proxy sets two headers (the user, the level);
 *            believed only from a TCP peer in gate.auth.header.from (its own
 *            list: a proxy trusted to forward a client's address,
 *            gate.trusted.proxies, need not be one that authenticates).
 *
 * The checks are pure (no clock, no HTTP) except ol_gate_auth_request, the
 * one call the HTTP side makes. An ol_gate_auth_t is shared by every HTTP
 * thread: its settings are read-only once made, and its cache of verified
 * tokens (ol_gate_auth_token) has locks of its own. Nothing here prints a
 * token or a key: the reasons it gives (why) are for the log, never for
 * the client. */

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/base/conf.h"
#include "common/base/err.h"

#define OL_GATE_AUTH_USER_MAX 128   /* bytes of a user id, as the body's userID */
#define OL_GATE_AUTH_TOKEN_MAX 8192 /* bytes of a token; longer ones are invalid */

/* What checking a request's credentials gives; "forbidden" is also what an
 * authenticated request acting for another user gets (counted by the gate). */
#define OL_GATE_AUTH_OUTCOMES(X) \
    X(OK, "ok")                  \
    X(MISSING, "missing")        \
    X(INVALID, "invalid")        \
    X(EXPIRED, "expired")        \
    X(FORBIDDEN, "forbidden")
typedef enum ol_gate_auth_outcome_e {
#define OL_GATE_AUTH_ENUM(name, str) OL_GATE_AUTH_##name,
    OL_GATE_AUTH_OUTCOMES(OL_GATE_AUTH_ENUM)
#undef OL_GATE_AUTH_ENUM
        OL_GATE_AUTH__COUNT
} ol_gate_auth_outcome_t;

/* "ok", "missing", ...: static strings, NULL-terminated. */
extern const char *const ol_gate_auth_outcome_names[];

typedef enum ol_gate_auth_mode_e {
    OL_GATE_AUTH_MODE_NONE,
    OL_GATE_AUTH_MODE_JWT,
    OL_GATE_AUTH_MODE_HEADER
} ol_gate_auth_mode_t;

/* The authenticated user. */
typedef struct ol_gate_auth_user_s {
    char user[OL_GATE_AUTH_USER_MAX + 1];
    int32_t level;
} ol_gate_auth_user_t;

typedef struct ol_gate_auth_s ol_gate_auth_t;

/* The authentication gate.auth* configures. *out is NULL with gate.auth =
 * none, else new (ol_gate_auth_destroy). The key file is read here, once:
 * an unreadable file, a file that is not a PEM public key of RSA (RS256) or
 * an HMAC secret shorter than 32 bytes or looking like a PEM file (HS256)
 * fail with OL_ERR_CONFIG and errstr naming the property (never the key). */
ol_err_t ol_gate_auth_new(const ol_conf_t *conf, ol_gate_auth_t **out, char *errstr, size_t errstr_size);
void ol_gate_auth_destroy(ol_gate_auth_t *a);
ol_gate_auth_mode_t ol_gate_auth_mode(const ol_gate_auth_t *a);
/* A line for the start-up log: the mode and its settings (no secret). */
void ol_gate_auth_describe(const ol_gate_auth_t *a, char *out, size_t out_size);

/* ---- jwt ------------------------------------------------------------------ */

/* Verifies a JWT (compact form) at now_ms (ms since the epoch): the
 * signature under gate.auth.jwt.alg and the key (a token of another alg,
 * "none" included, is invalid even when its signature verifies), no "crit"
 * header, iss and aud when configured (aud a string or an array holding
 * it), the user claim a string of 1..OL_GATE_AUTH_USER_MAX bytes without
 * control characters, the level claim an integer in 0..INT32_MAX, nbf and
 * iat (when present) numbers not after now + leeway, exp a number not
 * before now - leeway. OL_GATE_AUTH_OK with *out set; EXPIRED when only exp
 * fails; MISSING for NULL or ""; else INVALID. why (may be NULL) gets the
 * reason, for the log. */
ol_gate_auth_outcome_t ol_gate_auth_verify(const ol_gate_auth_t *a, const char *token, int64_t now_ms,
                                           ol_gate_auth_user_t *out, char *why, size_t why_size);

/* ol_gate_auth_verify through the cache of tokens verified before
 * (gate.auth.jwt.cache.entries, by the token's SHA-256): a token that
 * verified is not verified again (libjwt decodes the PEM key on every call,
 * costly with OpenSSL 3), only its exp is checked again at now_ms. The
 * outcome and *out are what ol_gate_auth_verify gives. Thread-safe. */
ol_gate_auth_outcome_t ol_gate_auth_token(ol_gate_auth_t *a, const char *token, int64_t now_ms,
                                          ol_gate_auth_user_t *out, char *why, size_t why_size);

/* The token of an Authorization header's value ("Bearer <token>", the
 * scheme in any case, spaces around the token ignored) as a pointer into
 * value and its length; NULL when value is NULL or of another scheme. */
const char *ol_gate_auth_bearer(const char *value, size_t *len);

/* ---- header --------------------------------------------------------------- */

/* Whether peer (a TCP peer's address) is one of the authenticating proxies
 * (gate.auth.header.from, a list of networks as gate.trusted.proxies reads
 * them: common/base/netaddr.h; an IPv4-mapped IPv6 peer is its IPv4 address).
 * False outside header mode. */
bool ol_gate_auth_trusts_peer(const ol_gate_auth_t *a, const struct sockaddr *peer);

/* The user of a request a trusted proxy sent: user (1..OL_GATE_AUTH_USER_MAX
 * bytes, no control characters) and level (decimal digits, 0..INT32_MAX) as
 * the proxy's headers hold them. MISSING when user is NULL or "", INVALID
 * when a value is malformed or level is missing. */
ol_gate_auth_outcome_t ol_gate_auth_from_headers(const char *user, const char *level, ol_gate_auth_user_t *out,
                                                 char *why, size_t why_size);

/* ---- requests --------------------------------------------------------------- */

/* The user of the request on conn, as the mode says (the headers, the TCP
 * peer); now_ms for the token's times. A header that occurs twice makes the
 * request INVALID; in header mode a peer not in gate.auth.header.from is
 * FORBIDDEN whatever it sends. */
ol_gate_auth_outcome_t ol_gate_auth_request(ol_gate_auth_t *a, struct MHD_Connection *conn, int64_t now_ms,
                                            ol_gate_auth_user_t *out, char *why, size_t why_size);

/* How a request is refused when its credentials gave outcome (not OK):
 * FORBIDDEN (a peer that is not a trusted proxy) 403; else 401, with the
 * WWW-Authenticate of RFC 6750 in jwt mode ("Bearer" alone when no token
 * came, error="invalid_token" otherwise, error_description="expired" for an
 * expired one: the client learns no more). Static strings; field and
 * challenge may be NULL. */
typedef struct ol_gate_auth_refusal_s {
    unsigned status;
    const char *error, *field, *challenge;
} ol_gate_auth_refusal_t;
ol_gate_auth_refusal_t ol_gate_auth_refusal(const ol_gate_auth_t *a, ol_gate_auth_outcome_t outcome);

/* The body's field that claims another user than who: "userID" when user
 * (NULL: absent) is not who's id, "userLevel" when level (NULL: absent) is
 * not who's level; NULL when the body agrees. */
const char *ol_gate_auth_mismatch(const ol_gate_auth_user_t *who, const char *user, const int32_t *level);

#endif
