#ifndef OL_REDACT_H
#define OL_REDACT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/base/conf.h"

/* Secrets never printed: the one place that knows which configuration
 * values are secret and takes them out of what orderlog shows (config
 * output, log lines, error messages, /readyz).
 *
 * Two ways, both used:
 * - by structure, wherever orderlog prints a configuration value: a secret
 *   property is shown as OL_REDACTED, pg.conninfo with its passwords
 *   replaced (ol_redact_value);
 * - by value, on text orderlog did not make (libpq's and librdkafka's
 *   messages, every log line): the secrets of the configuration are
 *   remembered at start (ol_redact_remember) and replaced wherever they
 *   appear (ol_redact_text). Values shorter than OL_REDACT_TEXT_MIN are left
 *   to the structural way: they would match ordinary words. */

#define OL_REDACTED "***"
#define OL_REDACT_TEXT_MIN 4

/* Whether the value of property name is a secret as a whole. name is a
 * configuration name ("kafka.sasl.password") or a librdkafka one
 * ("sasl.password"): every property librdkafka flags as sensitive
 * (sasl.username, sasl.password, ssl.key.password, ssl.key.pem, ssl_key,
 * ssl.key.location, ssl.keystore.password, ssl.ca.pem,
 * sasl.oauthbearer.config, sasl.oauthbearer.client.secret and the
 * sasl.oauthbearer.assertion.private.key.* ones), and any kafka.* whose
 * name holds password, secret, passphrase, private.key, key.pem or jaas.
 * pg.conninfo is not: only its passwords are (ol_redact_conninfo). */
bool ol_redact_is_secret(const char *name);

/* conninfo with the value of every password replaced by OL_REDACTED, the
 * rest as written: in the keyword form password= and sslpassword= (quoted
 * or not, backslash escapes included); in the URI form (postgresql:// or
 * postgres://) the password of user:password@ and ?password= or
 * ?sslpassword= in the query. Malformed text is read leniently, so that
 * what libpq might take for the password is hidden too: words without "="
 * after a password belong to it, an unterminated quote runs to the end.
 * New string (free it). */
char *ol_redact_conninfo(const char *conninfo);

/* What may be shown of property name set to value: OL_REDACTED for a
 * secret (an empty value stays empty), pg.conninfo through
 * ol_redact_conninfo, any other value as it is. New string (free it). */
char *ol_redact_value(const char *name, const char *value);

/* A message of libpq about conninfo (a parse error quotes pieces of it, a
 * URI error the whole URI) made safe to show, into out (truncated to
 * out_size): a quoted piece that comes from conninfo is shown redacted,
 * or as OL_REDACTED when it is part of a password; the passwords of
 * conninfo and the remembered secrets are replaced wherever they appear
 * (ol_redact_text). */
void ol_redact_conninfo_msg(const char *conninfo, const char *msg, char *out, size_t out_size);

/* Remembers the secrets conf holds, as text may hold them: the passwords of
 * pg.conninfo as written and as libpq reads them (escapes, percent-encoding
 * undone), the values of the secret kafka.* properties (those that are not
 * a user name or a file name) and the words of those with several. Replaces
 * what was remembered before; NULL forgets. Not thread-safe: call it at
 * start, before other threads run; ol_redact_text may then run on any
 * thread. */
void ol_redact_remember(const ol_conf_t *conf);

/* in with every remembered secret replaced by OL_REDACTED, into out
 * (truncated to out_size, always terminated); returns out. in and out may
 * not overlap. */
char *ol_redact_text(const char *in, char *out, size_t out_size);
/* The same in place on buf, a string in a buffer of buf_size bytes. */
void ol_redact_text_inplace(char *buf, size_t buf_size);

#endif
