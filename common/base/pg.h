#ifndef OL_PG_H
#define OL_PG_H

#include <libpq-fe.h>

#include "common/base/conf.h"
#include "common/base/err.h"

/* PostgreSQL helpers shared by every role: connecting, mapping libpq errors
 * to ol_err_t once, and running statements with the error text in a
 * caller-owned errstr. A PGconn is not thread-safe: one per thread. */

/* Connects with pg.conninfo (a libpq conninfo string or URI). Unless the
 * conninfo or PGCONNECT_TIMEOUT says otherwise, connecting gives up after
 * 10 s; application_name defaults to "orderlog". Server notices go to the
 * log (warnings as warn, the rest as debug).
 * Returns a new connection (PQfinish it), or NULL with errstr naming the
 * host, port, database and reason. */
PGconn *ol_pg_connect(const ol_conf_t *conf, char *errstr, size_t errstr_size);
/* The same with an explicit conninfo. */
PGconn *ol_pg_connect_conninfo(const char *conninfo, char *errstr, size_t errstr_size);
/* ol_pg_connect for a role starting up: a server that does not answer yet,
 * is starting, stopping or out of connection slots ("too many clients") is
 * waited for, with backoff up to consumer.retry.max.ms, said in the log at
 * once and every 30 s after; for as long as it takes (a signal ends the
 * process). NULL with errstr only when retrying cannot help (a bad
 * conninfo, authentication, an unknown database or user). */
PGconn *ol_pg_connect_waiting(const ol_conf_t *conf, char *errstr, size_t errstr_size);

/* Maps a result to an error: OL_ERR_OK for PGRES_COMMAND_OK, _TUPLES_OK and
 * _EMPTY_QUERY; by SQLSTATE otherwise: 40001, 40P01, class 08 and 57P01-57P03
 * (and a NULL result or an error without SQLSTATE, i.e. a lost connection)
 * → OL_ERR_TRANSIENT; 23505 → OL_ERR_ALREADY_APPLIED; the rest OL_ERR_PG. */
ol_err_t ol_pg_err(const PGresult *res);

/* The server's message for a failed result on one line: the primary message,
 * with the detail in parentheses when there is one; falls back to the
 * connection's last error when res is NULL or carries no message. */
void ol_pg_msg(const PGresult *res, const PGconn *conn, char *out, size_t out_size);

/* Runs sql (one or more commands, no parameters) and discards the results.
 * Returns ol_pg_err of the failure with errstr holding ol_pg_msg. */
ol_err_t ol_pg_exec_ok(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

/* Runs one statement with nparams text parameters ($1..; NULL = SQL NULL).
 * On success *out holds the result (PQclear it; out may be NULL to discard
 * it); on failure *out is NULL and errstr holds ol_pg_msg. */
ol_err_t ol_pg_query(PGresult **out, PGconn *conn, const char *sql, int nparams, const char *const *params,
                     char *errstr, size_t errstr_size);

#endif
