#include "common/base/pg.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/log.h"
#include "common/base/redact.h"
#include "common/base/time.h"

#define PG_CONNECT_TIMEOUT_S "10"

/* Whitespace (newlines included) squeezed to single spaces, trimmed. */
static void squeeze(char *s) {
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (isspace((unsigned char)*r)) {
            if (w != s && w[-1] != ' ')
                *w++ = ' ';
        } else {
            *w++ = *r;
        }
    }
    while (w != s && w[-1] == ' ')
        w--;
    *w = '\0';
}

/* Copies the first non-blank line of in, squeezed. */
static void first_line(const char *in, char *out, size_t out_size) {
    while (isspace((unsigned char)*in))
        in++;
    size_t n = strcspn(in, "\n");
    snprintf(out, out_size, "%.*s", (int)(n < 4096 ? n : 4096), in);
    squeeze(out);
}

/* The reason in a libpq connection error such as
 * `connection to server at "h", port 5 failed: FATAL:  database "x" does not exist`. */
static void connect_reason(const char *msg, char *out, size_t out_size) {
    const char *p = strstr(msg, "failed: ");
    const char *nl = strchr(msg, '\n');
    if (p && (!nl || p < nl))
        msg = p + strlen("failed: ");
    if (!strncmp(msg, "FATAL:  ", 8) || !strncmp(msg, "ERROR:  ", 8))
        msg += 8;
    first_line(msg, out, out_size);
    /* "Connection refused" (strerror) -> "connection refused"; leave "SSL ..." alone */
    if (isupper((unsigned char)out[0]) && (islower((unsigned char)out[1]) || out[1] == ' '))
        out[0] = (char)tolower((unsigned char)out[0]);
    if (!out[0])
        snprintf(out, out_size, "no reason given");
}

static void notice_receiver(void *opaque, const PGresult *res) {
    (void)opaque;
    char msg[1024];
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    ol_pg_msg(res, NULL, msg, sizeof(msg));
    if (severity && !strcmp(severity, "WARNING"))
        ol_log_warn("postgresql: %s", msg);
    else
        ol_log_debug("postgresql: %s", msg);
}

/* A refusal that passes by itself: the server is starting, stopping,
 * recovering or out of connection slots. */
static bool refusal_passes(const char *msg) {
    return strstr(msg, "too many clients") || strstr(msg, "too many connections") ||
           strstr(msg, "connection slots are reserved") || strstr(msg, "starting up") || strstr(msg, "shutting down") ||
           strstr(msg, "in recovery mode") || strstr(msg, "not yet accepting connections");
}

/* One connection attempt; *code says whether trying again may help
 * (OL_ERR_TRANSIENT) or not (OL_ERR_CONFIG, OL_ERR_UNREACHABLE). */
static PGconn *connect_once(const char *conninfo, ol_err_t *code, char *errstr, size_t errstr_size) {
    /* Check the syntax first, so a typo is reported as such rather than as
     * a failure to connect to some default host. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        char reason[256], shown[256];
        first_line(perr ? perr : "out of memory", shown, sizeof(shown));
        PQfreemem(perr);
        /* libpq quotes the piece it could not read, a URI whole */
        ol_redact_conninfo_msg(conninfo, shown, reason, sizeof(reason));
        *code = ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "invalid pg.conninfo: %s", reason);
        return NULL;
    }
    PQconninfoFree(opts);

    /* Keywords before dbname are defaults: the expanded conninfo overrides them. */
    const char *keys[4], *values[4];
    int n = 0;
    if (!getenv("PGCONNECT_TIMEOUT")) {
        keys[n] = "connect_timeout";
        values[n++] = PG_CONNECT_TIMEOUT_S;
    }
    keys[n] = "fallback_application_name";
    values[n++] = "orderlog";
    keys[n] = "dbname";
    values[n++] = conninfo;
    keys[n] = values[n] = NULL;
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (!conn) {
        *code = ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not connect to PostgreSQL: out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char reason[512], where[300], said[512];
        const char *host = PQhost(conn), *port = PQport(conn), *db = PQdb(conn), *user = PQuser(conn);
        connect_reason(PQerrorMessage(conn), said, sizeof(said));
        ol_redact_conninfo_msg(conninfo, said, reason, sizeof(reason));
        if (host && host[0] == '/')
            snprintf(where, sizeof(where), "socket %s/.s.PGSQL.%s", host, port ? port : "5432");
        else
            snprintf(where, sizeof(where), "%s:%s", host && *host ? host : "localhost", port && *port ? port : "5432");
        /* a FATAL came from the server: it runs, but refused us */
        int answered = strstr(PQerrorMessage(conn), "FATAL:") != NULL;
        bool passes = !answered || refusal_passes(PQerrorMessage(conn));
        *code = passes ? OL_ERR_TRANSIENT : OL_ERR_UNREACHABLE;
        ol_errf(errstr, errstr_size, *code,
                "could not connect to PostgreSQL at %s (database \"%s\", user \"%s\"): %s (%s)", where, db ? db : "",
                user ? user : "", reason,
                !answered ? "is the server running? `ops/stack start`"
                : passes  ? "the server refuses connections for now"
                          : "check pg.conninfo; `ops/stack start` sets up the local server and its database");
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeReceiver(conn, notice_receiver, NULL);
    /* Our statements are many short ones over key lists; JIT compiling the
     * bigger batch statements cost a quarter of the projector's throughput
     * (measured: ops/bench/project). A session setting: only orderlog's
     * own connections go without it. */
    PGresult *res = PQexec(conn, "select set_config('jit', 'off', false) from pg_settings where name = 'jit'");
    ol_err_t jerr = ol_pg_err(res);
    PQclear(res);
    if (jerr) {
        char said[512];
        ol_redact_conninfo_msg(conninfo, PQerrorMessage(conn), said, sizeof(said));
        *code = ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT,
                        "PostgreSQL connection failed at its first statement: %s", said);
        PQfinish(conn);
        return NULL;
    }
    *code = OL_ERR_OK;
    return conn;
}

PGconn *ol_pg_connect_conninfo(const char *conninfo, char *errstr, size_t errstr_size) {
    ol_err_t code;
    return connect_once(conninfo, &code, errstr, errstr_size);
}

PGconn *ol_pg_connect_waiting(const ol_conf_t *conf, char *errstr, size_t errstr_size) {
    int64_t wait_ms = 100, max_ms = ol_conf_int(conf, "consumer.retry.max.ms"), logged_us = 0, since_us = 0;
    for (;;) {
        ol_err_t code;
        PGconn *conn = connect_once(ol_conf_str(conf, "pg.conninfo"), &code, errstr, errstr_size);
        if (conn) {
            if (since_us)
                ol_log_info("PostgreSQL answers again, after %.1f s", (double)(ol_time_mono_us() - since_us) / 1e6);
            return conn;
        }
        if (code != OL_ERR_TRANSIENT)
            return NULL;
        int64_t now = ol_time_mono_us();
        if (!since_us)
            since_us = now;
        if (!logged_us || now - logged_us >= 30 * 1000000) { /* said at once, then every 30 s */
            ol_log_warn("waiting for PostgreSQL (%.0f s so far): %s", (double)(now - since_us) / 1e6, errstr);
            logged_us = now;
        }
        nanosleep(&(struct timespec){wait_ms / 1000, (wait_ms % 1000) * 1000000}, NULL);
        wait_ms = wait_ms * 2 > max_ms ? max_ms : wait_ms * 2;
    }
}

PGconn *ol_pg_connect(const ol_conf_t *conf, char *errstr, size_t errstr_size) {
    return ol_pg_connect_conninfo(ol_conf_str(conf, "pg.conninfo"), errstr, errstr_size);
}

ol_err_t ol_pg_err(const PGresult *res) {
    if (!res)
        return OL_ERR_TRANSIENT; /* libpq could not send or allocate: the connection is gone */
    switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_SINGLE_TUPLE:
    case PGRES_EMPTY_QUERY:
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
    case PGRES_PIPELINE_SYNC:
        return OL_ERR_OK;
    default:
        break;
    }
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state || strlen(state) != 5)
        return OL_ERR_TRANSIENT; /* raised by libpq itself: lost connection */
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strncmp(state, "08", 2) || !strcmp(state, "57P01") ||
        !strcmp(state, "57P02") || !strcmp(state, "57P03"))
        return OL_ERR_TRANSIENT;
    if (!strcmp(state, "23505"))
        return OL_ERR_ALREADY_APPLIED;
    return OL_ERR_PG;
}

void ol_pg_msg(const PGresult *res, const PGconn *conn, char *out, size_t out_size) {
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!out_size)
        return;
    if (primary) {
        const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        if (detail)
            snprintf(out, out_size, "%s (%s)", primary, detail);
        else
            snprintf(out, out_size, "%s", primary);
        squeeze(out);
        return;
    }
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!*msg && conn)
        msg = PQerrorMessage(conn);
    if (!strncmp(msg, "ERROR:  ", 8) || !strncmp(msg, "FATAL:  ", 8))
        msg += 8;
    first_line(msg, out, out_size);
    if (!out[0])
        snprintf(out, out_size, "no message from the server (connection lost?)");
}

ol_err_t ol_pg_exec_ok(PGconn *conn, const char *sql, char *errstr, size_t errstr_size) {
    PGresult *res = PQexec(conn, sql);
    ol_err_t err = ol_pg_err(res);
    if (err && errstr)
        ol_pg_msg(res, conn, errstr, errstr_size);
    PQclear(res);
    return err;
}

ol_err_t ol_pg_query(PGresult **out, PGconn *conn, const char *sql, int nparams, const char *const *params,
                     char *errstr, size_t errstr_size) {
    if (out)
        *out = NULL;
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ol_err_t err = ol_pg_err(res);
    if (err) {
        if (errstr)
            ol_pg_msg(res, conn, errstr, errstr_size);
        PQclear(res);
        return err;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return OL_ERR_OK;
}
