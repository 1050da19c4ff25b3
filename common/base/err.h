#ifndef OL_ERR_H
#define OL_ERR_H

#include <stdbool.h>
#include <stddef.h>

/* One error list; the enum, names and strings are generated from it so they
 * never drift. Detail goes to a caller-owned errstr, never into the code. */
#define OL_ERRORS(X)                         \
    X(OK, "success")                         \
    X(INVALID, "invalid input")              \
    X(NOT_FOUND, "not found")                \
    X(IO, "input/output error")              \
    X(CONFIG, "invalid configuration")       \
    X(KAFKA, "kafka error")                  \
    X(PG, "postgresql error")                \
    X(TRANSIENT, "transient failure, retry") \
    X(TIMEOUT, "timed out")                  \
    X(UNREACHABLE, "service unreachable")    \
    X(ALREADY_APPLIED, "already applied")    \
    X(CHECKSUM, "checksum mismatch")         \
    X(TOO_LARGE, "too large")                \
    X(UNSUPPORTED, "unsupported")

typedef enum ol_err_e {
#define OL_ERR_ENUM(name, str) OL_ERR_##name,
    OL_ERRORS(OL_ERR_ENUM)
#undef OL_ERR_ENUM
        OL_ERR__COUNT
} ol_err_t;

/* Human-readable, static string. */
const char *ol_err2str(ol_err_t err);
/* Symbolic name without prefix, e.g. "INVALID"; static string. */
const char *ol_err2name(ol_err_t err);
/* True for failures worth retrying with backoff. */
bool ol_err_is_retriable(ol_err_t err);

/* snprintf into errstr (may be NULL) and return err: `return ol_errf(...)`.
 * A message longer than errstr is cut on a UTF-8 character boundary. */
ol_err_t ol_errf(char *errstr, size_t errstr_size, ol_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
