#include "helpers.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base/strbuf.h"
#include "common/base/util.h"

#define DEFAULT_BOOTSTRAP "127.0.0.1:19092"
#define DEFAULT_CONNINFO "host=127.0.0.1 port=54329 dbname=orderlog user=postgres"

/* Declares char *var: the printf-style arguments of the function, after
 * fmt, formatted as a new string (ol_test_vstrf). */
#define FORMAT_ARGS(var, fmt)                 \
    va_list var##_ap;                         \
    va_start(var##_ap, fmt);                  \
    char *var = ol_test_vstrf(fmt, var##_ap); \
    va_end(var##_ap)

/* ---- processes ---- */

/* A buffer of a process's output: never NULL once made (ol_strbuf_t). */
typedef ol_strbuf_t buf_t;

static buf_t buf_empty(void) {
    buf_t b = OL_STRBUF_INIT;
    ol_strbuf_put(&b, "", 0);
    return b;
}

/* In the child: cmdline with /bin/sh -c, stdout to out_fd, stderr to err_fd, stdin /dev/null. */
__attribute__((noreturn)) static void exec_sh(const char *cmdline, int out_fd, int err_fd) {
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    execl("/bin/sh", "sh", "-c", cmdline, (char *)NULL);
    _exit(127);
}

/* Reads what the pipes fds[0] and fds[1] (-1: closed) give within
 * timeout_ms (-1: until one gives something) into bufs, closing a pipe at
 * its end (and setting it to -1). Returns how many are still open; -1 when
 * poll fails (other than EINTR). */
static int pump_pipes(int fds[2], buf_t bufs[2], int timeout_ms) {
    struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
    int ready = fds[0] < 0 && fds[1] < 0 ? 0 : poll(p, 2, timeout_ms);
    if (ready < 0 && errno != EINTR)
        return -1;
    for (int i = 0; ready > 0 && i < 2; i++) {
        if (fds[i] < 0 || !p[i].revents)
            continue;
        char chunk[8192];
        ssize_t n = read(fds[i], chunk, sizeof(chunk));
        if (n > 0) {
            ol_strbuf_put(&bufs[i], chunk, (size_t)n);
        } else if (n == 0 || errno != EINTR) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
    return (fds[0] >= 0) + (fds[1] >= 0);
}

int ol_test_run(const char *cmdline, char **out, char **err) {
    int po[2], pe[2];
    if (out)
        *out = NULL;
    if (err)
        *err = NULL;
    if (pipe2(po, O_CLOEXEC))
        return -1;
    if (pipe2(pe, O_CLOEXEC)) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        return -1;
    }
    if (pid == 0)
        exec_sh(cmdline, po[1], pe[1]);
    close(po[1]);
    close(pe[1]);
    buf_t bufs[2] = {buf_empty(), buf_empty()};
    int fds[2] = {po[0], pe[0]};
    while (pump_pipes(fds, bufs, -1) > 0)
        ;
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    /* a sanitizer's exit status may equal the one expected (1): look at its report */
    cr_expect(!strstr(bufs[1].p, "Sanitizer") && !strstr(bufs[1].p, "runtime error:"),
              "sanitizer report from `%s`:\n%s", cmdline, bufs[1].p);
    if (out)
        *out = bufs[0].p;
    else
        free(bufs[0].p);
    if (err)
        *err = bufs[1].p;
    else
        free(bufs[1].p);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

int ol_test_runf(char **out, char **err, const char *fmt, ...) {
    va_list ap;
    char *cmdline = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&cmdline, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int rc = ol_test_run(cmdline, out, err);
    free(cmdline);
    return rc;
}

char *ol_test_shell_quote(const char *s) {
    buf_t b = OL_STRBUF_INIT;
    ol_strbuf_put(&b, "'", 1);
    for (; *s; s++) {
        if (*s == '\'')
            ol_strbuf_put(&b, "'\\''", 4);
        else
            ol_strbuf_put(&b, s, 1);
    }
    ol_strbuf_put(&b, "'", 1);
    return b.p;
}

const char *ol_test_bin(void) {
    const char *bin = getenv("ORDERLOG_BIN");
    return bin && *bin ? bin : "build/orderlog";
}

static int run_orderlog(char **out, char **err, const char *fixed_args, const char *args) {
    char *bin = ol_test_shell_quote(ol_test_bin());
    int rc = ol_test_runf(out, err, "%s %s%s%s", bin, fixed_args ? fixed_args : "", fixed_args ? " " : "", args);
    free(bin);
    return rc;
}

int ol_test_orderlogf(char **out, char **err, const char *fixed_args, const char *fmt, ...) {
    FORMAT_ARGS(args, fmt);
    int rc = run_orderlog(out, err, fixed_args, args);
    free(args);
    return rc;
}

char *ol_test_orderlogf_ok(const char *fixed_args, const char *fmt, ...) {
    char *out, *err;
    FORMAT_ARGS(args, fmt);
    int rc = run_orderlog(&out, &err, fixed_args, args);
    cr_assert_eq(rc, 0, "orderlog %s: exit %d\nstdout:\n%s\nstderr:\n%s", args, rc, out, err);
    free(args);
    free(err);
    return out;
}

int ol_test_count_lines(const char *text, const char *prefix) {
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *line = text; line && *line;) {
        if (!strncmp(line, prefix, pl))
            n++;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return n;
}

/* ol_test_find_line with the needles in ap (read from copies: ap is left as it is). */
static char *find_line_v(const char *text, va_list ap) {
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char *copy = ol_xstrndup(line, len);
        int all = 1;
        va_list aq;
        va_copy(aq, ap);
        for (const char *needle; all && (needle = va_arg(aq, const char *));)
            all = strstr(copy, needle) != NULL;
        va_end(aq);
        if (all)
            return copy;
        free(copy);
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

char *ol_test_find_line(const char *text, ...) {
    va_list ap;
    va_start(ap, text);
    char *line = find_line_v(text, ap);
    va_end(ap);
    return line;
}

bool ol_test_expect_line(const char *text, ...) {
    va_list ap, first;
    va_start(ap, text);
    va_copy(first, ap);
    char *line = find_line_v(text, ap);
    cr_expect(line, "no line holding \"%s\"... in:\n%s", va_arg(first, const char *), text);
    va_end(first);
    va_end(ap);
    free(line);
    return line != NULL;
}
/* ---- PostgreSQL ---- */

const char *ol_test_pg_conninfo(void) {
    const char *ci = getenv("ORDERLOG_PG_CONNINFO");
    return ci && *ci ? ci : DEFAULT_CONNINFO;
}

/* Connects or fails the test. */
static PGconn *connect_or_fail(const char *conninfo) {
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(conn));
        PQfinish(conn);
        cr_assert_fail("cannot connect to the test PostgreSQL (%s): %s(is it running? ops/stack pg-start)", conninfo,
                       msg);
    }
    return conn;
}

/* base with dbname replaced by db, as a key=value conninfo; NULL when base
 * does not parse. */
static char *conninfo_with_db(const char *base, const char *db) {
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(base, &perr);
    if (!opts) {
        PQfreemem(perr);
        return NULL;
    }
    buf_t b = buf_empty();
    for (PQconninfoOption *o = opts;; o++) {
        const char *key = o->keyword ? o->keyword : "dbname", *val = o->keyword ? o->val : db;
        if (val && (!o->keyword || strcmp(o->keyword, "dbname"))) {
            if (b.len)
                ol_strbuf_put(&b, " ", 1);
            ol_strbuf_put(&b, key, strlen(key));
            ol_strbuf_put(&b, "='", 2);
            for (const char *v = val; *v; v++) {
                if (*v == '\'' || *v == '\\')
                    ol_strbuf_put(&b, "\\", 1);
                ol_strbuf_put(&b, v, 1);
            }
            ol_strbuf_put(&b, "'", 1);
        }
        if (!o->keyword)
            break;
    }
    PQconninfoFree(opts);
    return b.p;
}

void ol_test_pg_scratch_db(const char *tag, char *conninfo_out, size_t size) {
    static int counter;
    char db[64], sql[200];
    cr_assert(strlen(tag) <= 30 && strspn(tag, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(tag),
              "scratch database tag \"%s\" must be [a-z0-9_]{0,30}", tag);
    snprintf(db, sizeof(db), "ol_test_%s_%ld_%d", tag, (long)getpid(), ++counter);
    char *ci = conninfo_with_db(ol_test_pg_conninfo(), db);
    cr_assert(ci, "ORDERLOG_PG_CONNINFO does not parse: %s", ol_test_pg_conninfo());
    cr_assert(strlen(ci) < size, "conninfo buffer too small");
    snprintf(conninfo_out, size, "%s", ci);
    free(ci);
    /* a leftover of a killed run of the same pid would be in the way */
    snprintf(sql, sizeof(sql), "drop database if exists %s with (force)", db);
    ol_test_pg_exec(ol_test_pg_conninfo(), sql);
    snprintf(sql, sizeof(sql), "create database %s", db);
    ol_test_pg_exec(ol_test_pg_conninfo(), sql);
}

void ol_test_pg_migrated_db(const char *tag, char *conninfo_out, size_t size) {
    ol_test_pg_scratch_db(tag, conninfo_out, size);
    char *ci = ol_test_shell_quote(conninfo_out), *out, *err;
    int rc = ol_test_orderlogf(&out, &err, NULL, "-X pg.conninfo=%s migrate", ci);
    cr_assert_eq(rc, 0, "migrate: exit %d\n%s%s", rc, out, err);
    free(ci);
    free(out);
    free(err);
}

void ol_test_pg_drop_db(const char *conninfo) {
    if (!conninfo || !*conninfo)
        return;
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    char *db = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (!strcmp(o->keyword, "dbname") && o->val)
            db = ol_xstrdup(o->val);
    PQconninfoFree(opts);
    if (!db)
        return;
    PGconn *conn = connect_or_fail(ol_test_pg_conninfo());
    char *ident = PQescapeIdentifier(conn, db, strlen(db));
    char sql[256];
    snprintf(sql, sizeof(sql), "drop database if exists %s with (force)", ident);
    PQfreemem(ident);
    free(db);
    PQclear(PQexec(conn, "set client_min_messages to warning"));
    PGresult *res = PQexec(conn, sql);
    char msg[512];
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(conn);
    cr_expect(ok, "%s: %s", sql, msg);
}

int ol_test_pg_try_exec(const char *conninfo, const char *sql, char *errstr, size_t errstr_size) {
    PGconn *conn = connect_or_fail(conninfo);
    PQclear(PQexec(conn, "set client_min_messages to warning"));
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc && errstr && errstr_size)
        snprintf(errstr, errstr_size, "%s", PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(conn);
    return rc;
}

void ol_test_pg_exec(const char *conninfo, const char *sql) {
    char msg[512];
    if (ol_test_pg_try_exec(conninfo, sql, msg, sizeof(msg)))
        cr_assert_fail("%s: %s", sql, msg);
}

/* Runs a query returning rows; fails the test on error. */
static PGresult *query_or_fail(const char *conninfo, const char *sql) {
    PGconn *conn = connect_or_fail(conninfo);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(conn);
        cr_assert_fail("%s: %s", sql, msg);
    }
    PQfinish(conn); /* a result outlives its connection */
    return res;
}

long long ol_test_pg_query_int(const char *conninfo, const char *sql) {
    PGresult *res = query_or_fail(conninfo, sql);
    if (PQntuples(res) < 1 || PQnfields(res) < 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        cr_assert_fail("%s: expected an integer, got no row or NULL", sql);
    }
    char *end;
    long long v = strtoll(PQgetvalue(res, 0, 0), &end, 10);
    int ok = *end == '\0';
    PQclear(res);
    cr_assert(ok, "%s: not an integer", sql);
    return v;
}

char *ol_test_pg_query_str(const char *conninfo, const char *sql) {
    PGresult *res = query_or_fail(conninfo, sql);
    char *v = NULL;
    if (PQntuples(res) >= 1 && PQnfields(res) >= 1 && !PQgetisnull(res, 0, 0))
        v = ol_xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

/* ---- files ---- */

void ol_test_tmpdir(char *out, size_t size) {
    const char *base = getenv("TMPDIR");
    snprintf(out, size, "%s/ol_test_XXXXXX", base && *base ? base : "/tmp");
    cr_assert(mkdtemp(out), "cannot create a directory %s: %s", out, strerror(errno));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) && errno != ENOENT ? -1 : 0;
}

/* ORDERLOG_TEST_KEEP=1 keeps every scratch directory (the roles' logs) and
 * says where it is, to read after a failure. */
void ol_test_rmtree(const char *path) {
    if (!path || !*path)
        return;
    const char *keep = getenv("ORDERLOG_TEST_KEEP");
    if (keep && *keep && strcmp(keep, "0")) {
        fprintf(stderr, "test: kept %s (ORDERLOG_TEST_KEEP)\n", path);
        return;
    }
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_mode(const char *path, const char *data, size_t len, const char *mode) {
    FILE *fp = fopen(path, mode);
    cr_assert(fp, "cannot open %s: %s", path, strerror(errno));
    size_t n = fwrite(data, 1, len, fp);
    int rc = fclose(fp);
    cr_assert(n == len && rc == 0, "cannot write %s", path);
}

void ol_test_write_file(const char *path, const char *data, size_t len) {
    write_mode(path, data, len, "wb");
}

void ol_test_append_file(const char *path, const char *s) {
    write_mode(path, s, strlen(s), "ab");
}

FILE *ol_test_scratch_open(const char *dir, const char *name, char *path, size_t size) {
    snprintf(path, size, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    cr_assert(fp, "cannot write %s: %s", path, strerror(errno));
    return fp;
}

char *ol_test_read_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    buf_t b = buf_empty();
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        ol_strbuf_put(&b, chunk, n);
    fclose(fp);
    return b.p;
}

/* ---- time ---- */

long long ol_test_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- background processes ---- */

struct ol_test_bg_s {
    pid_t pid;
    int fds[2]; /* stdout, stderr; -1 once closed */
    buf_t bufs[2];
    int exited, status;
};

ol_test_bg_t *ol_test_bg_start(const char *cmdline) {
    int po[2], pe[2];
    cr_assert(!pipe2(po, O_CLOEXEC) && !pipe2(pe, O_CLOEXEC), "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        exec_sh(cmdline, po[1], pe[1]);
    close(po[1]);
    close(pe[1]);
    ol_test_bg_t *bg = ol_xcalloc(1, sizeof(*bg));
    bg->pid = pid;
    bg->fds[0] = po[0];
    bg->fds[1] = pe[0];
    for (int i = 0; i < 2; i++)
        bg->bufs[i] = buf_empty();
    return bg;
}

/* Reads what is available within timeout_ms; returns 0 once both pipes are closed. */
static int bg_pump(ol_test_bg_t *bg, int timeout_ms) {
    return pump_pipes(bg->fds, bg->bufs, timeout_ms) != 0;
}

static int bg_reap(ol_test_bg_t *bg, int options) {
    if (bg->exited)
        return 1;
    int status;
    pid_t r = waitpid(bg->pid, &status, options);
    if (r != bg->pid)
        return 0;
    bg->exited = 1;
    bg->status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    return 1;
}

static int count_newlines(const buf_t *b) {
    int n = 0;
    for (size_t i = 0; i < b->len; i++)
        n += b->p[i] == '\n';
    return n;
}

/* One step of waiting for output: reads for up to 100 ms. False when the
 * wait is over: deadline has passed, or the process has exited and closed
 * its pipes, or (drain) it has exited at all, its output then read to the
 * end (a leftover child may hold the pipes: not past deadline). */
static bool bg_step(ol_test_bg_t *bg, long long deadline, bool drain) {
    long long left = deadline - ol_test_now_ms();
    if (left <= 0)
        return false;
    if (!bg_pump(bg, left > 100 ? 100 : (int)left)) {
        if (bg_reap(bg, WNOHANG))
            return false;
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    } else if (drain && bg_reap(bg, WNOHANG)) {
        while (bg_pump(bg, 100))
            if (ol_test_now_ms() > deadline)
                break;
        return false;
    }
    return true;
}

int ol_test_bg_wait_lines(ol_test_bg_t *bg, int lines, int timeout_ms) {
    long long deadline = ol_test_now_ms() + timeout_ms;
    while (count_newlines(&bg->bufs[0]) < lines && bg_step(bg, deadline, false))
        ;
    return count_newlines(&bg->bufs[0]);
}

int ol_test_bg_wait(ol_test_bg_t *bg, int timeout_ms) {
    long long deadline = ol_test_now_ms() + timeout_ms;
    for (;;) {
        int open_pipes = bg_pump(bg, 100);
        if (bg_reap(bg, WNOHANG)) {
            while (bg_pump(bg, 100)) /* the rest of its output; a leftover child may hold the pipes */
                if (ol_test_now_ms() > deadline)
                    break;
            return bg->status;
        }
        if (ol_test_now_ms() > deadline)
            return -1;
        if (!open_pipes) {
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

const char *ol_test_bg_stdout(const ol_test_bg_t *bg) {
    return bg->bufs[0].p;
}

const char *ol_test_bg_stderr(const ol_test_bg_t *bg) {
    return bg->bufs[1].p;
}

void ol_test_bg_free(ol_test_bg_t *bg) {
    if (!bg)
        return;
    if (!bg_reap(bg, WNOHANG)) {
        kill(bg->pid, SIGKILL);
        bg_reap(bg, 0);
    }
    for (int i = 0; i < 2; i++) {
        if (bg->fds[i] >= 0)
            close(bg->fds[i]);
        free(bg->bufs[i].p);
    }
    free(bg);
}

/* ---- Kafka ---- */

#define KAFKA_TIMEOUT_MS 15000

const char *ol_test_kafka_bootstrap(void) {
    const char *bs = getenv("ORDERLOG_KAFKA_BOOTSTRAP_SERVERS");
    return bs && *bs ? bs : DEFAULT_BOOTSTRAP;
}

/* A quiet client's configuration for the test broker; fails the test when it cannot. */
static rd_kafka_conf_t *kafka_conf_new(void) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert(rd_kafka_conf_set(conf, "bootstrap.servers", ol_test_kafka_bootstrap(), errstr, sizeof(errstr)) ==
                  RD_KAFKA_CONF_OK,
              "bootstrap.servers: %s", errstr);
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
    return conf;
}

/* A quiet producer handle for admin requests; fails the test when it cannot. */
static rd_kafka_t *kafka_admin_new(void) {
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kafka_conf_new(), errstr, sizeof(errstr));
    cr_assert(rk, "rd_kafka_new: %s", errstr);
    return rk;
}

/* One admin request under way: its options and the queue its result comes to. */
typedef struct admin_call_s {
    rd_kafka_AdminOptions_t *opts;
    rd_kafka_queue_t *q;
} admin_call_t;

/* Options for op with KAFKA_TIMEOUT_MS (the operation's timeout when
 * operation, else the request's) and a queue for the result. */
static admin_call_t admin_begin(rd_kafka_t *rk, rd_kafka_admin_op_t op, bool operation) {
    char errstr[512];
    admin_call_t c = {rd_kafka_AdminOptions_new(rk, op), rd_kafka_queue_new(rk)};
    if (operation)
        rd_kafka_AdminOptions_set_operation_timeout(c.opts, KAFKA_TIMEOUT_MS, errstr, sizeof(errstr));
    else
        rd_kafka_AdminOptions_set_request_timeout(c.opts, KAFKA_TIMEOUT_MS, errstr, sizeof(errstr));
    return c;
}

/* Waits for the result of the request: its event (NULL when none came);
 * msg gets "no answer" or the request's error, and is left as it is when
 * the request succeeded. */
static rd_kafka_event_t *admin_wait(admin_call_t *c, char *msg, size_t size) {
    rd_kafka_event_t *ev = rd_kafka_queue_poll(c->q, KAFKA_TIMEOUT_MS + 5000);
    if (!ev)
        snprintf(msg, size, "no answer");
    else if (rd_kafka_event_error(ev))
        snprintf(msg, size, "%s", rd_kafka_event_error_string(ev));
    return ev;
}

/* Frees the event (NULL is a no-op), the queue and the options. */
static void admin_end(admin_call_t *c, rd_kafka_event_t *ev) {
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(c->q);
    rd_kafka_AdminOptions_destroy(c->opts);
}

/* Partition count of topic in md, 0 when absent (or in error). */
static int md_partitions(const struct rd_kafka_metadata *md, const char *topic) {
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, topic))
            return md->topics[i].err ? 0 : md->topics[i].partition_cnt;
    return 0;
}

static int kafka_partitions(rd_kafka_t *rk, const char *topic) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, KAFKA_TIMEOUT_MS);
    if (err) {
        rd_kafka_destroy(rk);
        cr_assert_fail("no metadata from Kafka at %s: %s (is it running? ops/stack start)", ol_test_kafka_bootstrap(),
                       rd_kafka_err2str(err));
    }
    int n = md_partitions(md, topic);
    rd_kafka_metadata_destroy(md);
    return n;
}

int ol_test_kafka_partitions(const char *topic) {
    rd_kafka_t *rk = kafka_admin_new();
    int n = kafka_partitions(rk, topic);
    rd_kafka_destroy(rk);
    return n;
}

void ol_test_kafka_create_topic(const char *topic, int partitions, const char *config_name, const char *config_value) {
    char errstr[512], msg[512] = "";
    rd_kafka_t *rk = kafka_admin_new();
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof(errstr));
    cr_assert(nt, "NewTopic %s: %s", topic, errstr);
    if (config_name)
        rd_kafka_NewTopic_set_config(nt, config_name, config_value);
    admin_call_t c = admin_begin(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS, true);
    rd_kafka_CreateTopics(rk, &nt, 1, c.opts, c.q);
    rd_kafka_event_t *ev = admin_wait(&c, msg, sizeof(msg));
    if (!*msg) {
        size_t n;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        for (size_t i = 0; i < n; i++)
            if (rd_kafka_topic_result_error(res[i]))
                snprintf(msg, sizeof(msg), "%s", rd_kafka_topic_result_error_string(res[i]));
    }
    admin_end(&c, ev);
    rd_kafka_NewTopic_destroy(nt);
    if (*msg) {
        rd_kafka_destroy(rk);
        cr_assert_fail("could not create topic %s: %s", topic, msg);
    }
    /* the brokers' metadata follows the controller a moment later */
    long long deadline = ol_test_now_ms() + KAFKA_TIMEOUT_MS;
    int parts;
    while ((parts = kafka_partitions(rk, topic)) == 0 && ol_test_now_ms() < deadline) {
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    rd_kafka_destroy(rk);
    cr_assert(parts == partitions, "topic %s: %d partitions in the metadata, created with %d", topic, parts,
              partitions);
}

/* Deletes the consumer groups (groups) or else the topics of names; best
 * effort, quiet (for cleanup). */
static void kafka_delete(const char *const *names, size_t count, bool groups) {
    char msg[512]; /* not looked at */
    if (!count)
        return;
    rd_kafka_t *rk = kafka_admin_new();
    void **objs = ol_xcalloc(count, sizeof(*objs));
    for (size_t i = 0; i < count; i++)
        objs[i] = groups ? (void *)rd_kafka_DeleteGroup_new(names[i]) : (void *)rd_kafka_DeleteTopic_new(names[i]);
    admin_call_t c = admin_begin(rk, groups ? RD_KAFKA_ADMIN_OP_DELETEGROUPS : RD_KAFKA_ADMIN_OP_DELETETOPICS, !groups);
    if (groups)
        rd_kafka_DeleteGroups(rk, (rd_kafka_DeleteGroup_t **)objs, count, c.opts, c.q);
    else
        rd_kafka_DeleteTopics(rk, (rd_kafka_DeleteTopic_t **)objs, count, c.opts, c.q);
    admin_end(&c, admin_wait(&c, msg, sizeof(msg)));
    if (groups)
        rd_kafka_DeleteGroup_destroy_array((rd_kafka_DeleteGroup_t **)objs, count);
    else
        rd_kafka_DeleteTopic_destroy_array((rd_kafka_DeleteTopic_t **)objs, count);
    free(objs);
    rd_kafka_destroy(rk);
}

void ol_test_kafka_delete_topics(const char *const *topics, size_t count) {
    kafka_delete(topics, count, false);
}

char *ol_test_kafka_topic_config(const char *topic, const char *name) {
    char msg[512] = "";
    char *value = NULL;
    rd_kafka_t *rk = kafka_admin_new();
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    admin_call_t c = admin_begin(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, false);
    rd_kafka_DescribeConfigs(rk, &res, 1, c.opts, c.q);
    rd_kafka_event_t *ev = admin_wait(&c, msg, sizeof(msg));
    if (!*msg) {
        size_t nres, ncfg;
        const rd_kafka_ConfigResource_t **rs =
            rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &nres);
        for (size_t i = 0; i < nres; i++) {
            if (rd_kafka_ConfigResource_error(rs[i])) {
                snprintf(msg, sizeof(msg), "%s", rd_kafka_ConfigResource_error_string(rs[i]));
                continue;
            }
            const rd_kafka_ConfigEntry_t **cfg = rd_kafka_ConfigResource_configs(rs[i], &ncfg);
            for (size_t k = 0; k < ncfg; k++)
                if (!strcmp(rd_kafka_ConfigEntry_name(cfg[k]), name) && rd_kafka_ConfigEntry_value(cfg[k]))
                    value = ol_xstrdup(rd_kafka_ConfigEntry_value(cfg[k]));
        }
    }
    admin_end(&c, ev);
    rd_kafka_ConfigResource_destroy(res);
    rd_kafka_destroy(rk);
    cr_assert(!*msg, "could not describe the configs of topic %s: %s", topic, msg);
    return value;
}

/* ---- more helpers (appended) ---- */

void ol_test_bg_signal(ol_test_bg_t *bg, int sig) {
    if (bg && !bg_reap(bg, WNOHANG))
        kill(bg->pid, sig);
}

char *ol_test_pg_query_rows(const char *conninfo, const char *sql) {
    PGresult *res = query_or_fail(conninfo, sql);
    buf_t b = buf_empty();
    for (int r = 0; r < PQntuples(res); r++) {
        for (int f = 0; f < PQnfields(res); f++) {
            if (f)
                ol_strbuf_put(&b, "|", 1);
            if (PQgetisnull(res, r, f))
                ol_strbuf_put(&b, "\\N", 2);
            else
                ol_strbuf_put(&b, PQgetvalue(res, r, f), (size_t)PQgetlength(res, r, f));
        }
        ol_strbuf_put(&b, "\n", 1);
    }
    PQclear(res);
    return b.p;
}

/* ---- more helpers: background output, producing, watermarks, groups ---- */

static int count_occurrences(const char *text, const char *needle) {
    int n = 0;
    size_t len = strlen(needle);
    for (const char *p = text; len && (p = strstr(p, needle)); p += len)
        n++;
    return n;
}

int ol_test_bg_wait_stderr(ol_test_bg_t *bg, const char *needle, int count, int timeout_ms) {
    long long deadline = ol_test_now_ms() + timeout_ms;
    while (count_occurrences(bg->bufs[1].p, needle) < count && bg_step(bg, deadline, true))
        ;
    return count_occurrences(bg->bufs[1].p, needle);
}

int ol_test_pg_try_query_int(const char *conninfo, const char *sql, long long *out) {
    PGconn *conn = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(conn) == CONNECTION_OK) {
        PGresult *res = PQexec(conn, sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) >= 1 && PQnfields(res) >= 1 &&
            !PQgetisnull(res, 0, 0)) {
            char *end;
            long long v = strtoll(PQgetvalue(res, 0, 0), &end, 10);
            if (*end == '\0') {
                *out = v;
                rc = 0;
            }
        }
        PQclear(res);
    }
    PQfinish(conn);
    return rc;
}

static void produce_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    long long *offset = m->_private;
    *offset = m->err ? -2 - (long long)m->err : (long long)m->offset;
}

void ol_test_kafka_produce_unfinished(const char *txid, const char *topic, int partition, const char *const *keys,
                                      const void *const *values, const size_t *lens, int n) {
    /* in a child killed with -9 once its records are delivered */
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        char errstr[512];
        rd_kafka_conf_t *conf = kafka_conf_new();
        if (rd_kafka_conf_set(conf, "transactional.id", txid, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
            _exit(2);
        rd_kafka_conf_set_dr_msg_cb(conf, produce_dr);
        rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk || rd_kafka_init_transactions(rk, KAFKA_TIMEOUT_MS) || rd_kafka_begin_transaction(rk))
            _exit(3);
        long long *offsets = calloc((size_t)n, sizeof(*offsets));
        for (int i = 0; i < n; i++) {
            offsets[i] = -1;
            if (rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                    RD_KAFKA_V_KEY(keys[i], strlen(keys[i])), RD_KAFKA_V_VALUE((void *)values[i], lens[i]),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&offsets[i]), RD_KAFKA_V_END))
                _exit(4);
        }
        rd_kafka_flush(rk, KAFKA_TIMEOUT_MS);
        for (int i = 0; i < n; i++)
            if (offsets[i] < 0)
                _exit(5);
        raise(SIGKILL);
        _exit(6);
    }
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the producer of the unfinished transaction failed (exit %d)",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

long long ol_test_kafka_produce(const char *topic, int partition, const void *key, size_t key_len, const void *value,
                                size_t value_len, const char *const *headers) {
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new();
    /* partition -1: where the Java client would put the key */
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", errstr, sizeof(errstr));
    rd_kafka_conf_set_dr_msg_cb(conf, produce_dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert(rk, "rd_kafka_new: %s", errstr);
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    for (const char *const *p = headers; p && p[0]; p += 2)
        rd_kafka_header_add(h, p[0], -1, p[1], -1);
    long long offset = -1;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&offset), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(h);
        rd_kafka_destroy(rk);
        cr_assert_fail("could not produce to %s: %s", topic, rd_kafka_err2str(err));
    }
    rd_kafka_flush(rk, KAFKA_TIMEOUT_MS);
    rd_kafka_destroy(rk);
    cr_assert(offset >= 0, "could not produce to %s: %s", topic,
              offset == -1 ? "no delivery report" : rd_kafka_err2str((rd_kafka_resp_err_t)(-2 - offset)));
    return offset;
}

long long ol_test_kafka_end_offset(const char *topic, int partition) {
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new();
    rd_kafka_conf_set(conf, "group.id", "ol_test_watermarks", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert(rk, "rd_kafka_new: %s", errstr);
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk, topic, partition, &low, &high, KAFKA_TIMEOUT_MS);
    rd_kafka_destroy(rk);
    cr_assert(!err, "watermarks of %s [%d]: %s", topic, partition, rd_kafka_err2str(err));
    return (long long)high;
}

void ol_test_kafka_delete_groups(const char *const *groups, size_t count) {
    kafka_delete(groups, count, true);
}

void ol_test_kafka_delete_records(const char *topic, int partition, long long before) {
    char msg[512] = "";
    rd_kafka_t *rk = kafka_admin_new();
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(offsets, topic, partition)->offset = before;
    rd_kafka_DeleteRecords_t *del = rd_kafka_DeleteRecords_new(offsets);
    rd_kafka_topic_partition_list_destroy(offsets);
    admin_call_t c = admin_begin(rk, RD_KAFKA_ADMIN_OP_DELETERECORDS, true);
    rd_kafka_DeleteRecords(rk, &del, 1, c.opts, c.q);
    rd_kafka_event_t *ev = admin_wait(&c, msg, sizeof(msg));
    if (!*msg) {
        const rd_kafka_topic_partition_list_t *res =
            rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(ev));
        if (res->cnt != 1 || res->elems[0].err)
            snprintf(msg, sizeof(msg), "%s", res->cnt ? rd_kafka_err2str(res->elems[0].err) : "no result");
    }
    admin_end(&c, ev);
    rd_kafka_DeleteRecords_destroy(del);
    rd_kafka_destroy(rk);
    cr_assert(!*msg, "could not delete the records of %s [%d] before %lld: %s", topic, partition, before, msg);
}

/* ---- more helpers: machinery the tests share ---- */

char *ol_test_vstrf(const char *fmt, va_list ap) {
    char *s;
    int n = vasprintf(&s, fmt, ap);
    cr_assert(n >= 0);
    return s;
}

char *ol_test_strf(const char *fmt, ...) {
    FORMAT_ARGS(s, fmt);
    return s;
}

ol_test_bg_t *ol_test_orderlog_bg(const char *fmt, ...) {
    FORMAT_ARGS(args, fmt);
    char *bin = ol_test_shell_quote(ol_test_bin());
    char *cmd = ol_test_strf("exec %s %s", bin, args);
    ol_test_bg_t *bg = ol_test_bg_start(cmd);
    free(cmd);
    free(bin);
    free(args);
    return bg;
}

bool ol_test_has_command(const char *name) {
    char *out, *err, line[128];
    snprintf(line, sizeof(line), "\n  %s ", name);
    int rc = ol_test_orderlogf(&out, &err, NULL, "--help");
    bool has = rc == 0 && strstr(out, line);
    free(out);
    free(err);
    return has;
}

const char *ol_test_pg_args(const char *prefix, int partitions, const char *db) {
    static char args[4096];
    char *ci = ol_test_shell_quote(db && *db ? db : ol_test_pg_conninfo());
    snprintf(args, sizeof(args), "-X topic.prefix=%s -X topic.partitions=%d -X pg.conninfo=%s", prefix, partitions, ci);
    free(ci);
    return args;
}

const char *ol_test_src_dir(void) {
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    return src && *src ? src : ".";
}

int ol_test_stack(const char *env, const char *args, char **out) {
    char *script = ol_test_strf("%s/ops/stack", ol_test_src_dir());
    char *q = ol_test_shell_quote(script);
    int rc = ol_test_runf(out, NULL, "%s%s%s %s 2>&1", env ? env : "", env ? " " : "", q, args);
    free(q);
    free(script);
    return rc;
}

void ol_test_stack_ok(const char *args) {
    char *out = NULL;
    int rc = ol_test_stack(NULL, args, &out);
    cr_assert_eq(rc, 0, "ops/stack %s: exit %d\n%s", args, rc, out);
    free(out);
}

void ol_test_stack_restore(bool *stopped, const char *args) {
    if (!*stopped)
        return;
    char *out = NULL;
    int rc = ol_test_stack(NULL, args, &out);
    cr_expect_eq(rc, 0, "ops/stack %s: exit %d\n%s", args, rc, out);
    free(out);
    *stopped = false;
}

bool ol_test_stack_serves(const char *key, const char *value, const char *end) {
    char *out = NULL;
    if (ol_test_stack(NULL, "env", &out)) {
        free(out);
        return false;
    }
    const char *p = strstr(out, key);
    bool same = false;
    if (p) {
        p += strlen(key);
        size_t n = strcspn(p, end);
        same = strlen(value) == n && !strncmp(p, value, n);
    }
    free(out);
    return same;
}

long long ol_test_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long ol_test_parse_time(const char *s) {
    struct tm tm = {0};
    int ms = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (long long)timegm(&tm) * 1000 + ms;
}

unsigned ol_test_seed(const char *test) {
    const char *env = getenv("OL_TEST_SEED");
    unsigned seed = env && *env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)(time(NULL) ^ (getpid() << 8));
    cr_log_info("OL_TEST_SEED=%u", seed);
    fprintf(stderr, "%s: OL_TEST_SEED=%u\n", test, seed);
    srand(seed);
    return seed;
}

/* ---- more helpers: a test's topics, the gate, what roles print ---- */

const char *ol_test_topic_args(const char *prefix, const char *none_prefix, int partitions) {
    static char args[256];
    snprintf(args, sizeof(args), "-X topic.prefix=%s -X topic.partitions=%d", *prefix ? prefix : none_prefix,
             partitions);
    return args;
}

void ol_test_take_prefix(char *prefix, size_t size, const char *stem, const char *tag) {
    snprintf(prefix, size, "%s%s_%ld_", stem, tag, (long)getpid());
}

void ol_test_publish_file(const char *fixed_args, const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    ol_test_write_file(path, text, strlen(text));
    char *q = ol_test_shell_quote(path);
    free(ol_test_orderlogf_ok(fixed_args, "publish %s", q));
    free(q);
}

void ol_test_delete_prefixed_groups(const char *prefix, const char *const *suffixes) {
    size_t n = 0;
    while (suffixes && suffixes[n])
        n++;
    char **groups = ol_xcalloc(n ? n : 1, sizeof(*groups));
    for (size_t i = 0; i < n; i++)
        groups[i] = ol_test_strf("%s%s", prefix, suffixes[i]);
    ol_test_kafka_delete_groups((const char *const *)groups, n);
    for (size_t i = 0; i < n; i++)
        free(groups[i]);
    free(groups);
}

void ol_test_cleanup(const char *fixed_args, const char *prefix, const char *const *suffixes, const char *db,
                     const char *dir) {
    if (prefix && *prefix) {
        ol_test_delete_prefixed_groups(prefix, suffixes);
        ol_test_orderlogf(NULL, NULL, fixed_args, "topics delete");
    }
    if (db && *db)
        ol_test_pg_drop_db(db);
    if (dir && *dir)
        ol_test_rmtree(dir);
}

void ol_test_pg_append_rows(char **all, const char *conninfo, const char *sql) {
    char *row = ol_test_pg_query_rows(conninfo, sql);
    char *joined = ol_test_strf("%s%s", *all, row);
    free(*all);
    free(row);
    *all = joined;
}

void ol_test_fresh(char *dir, size_t dir_size, char *prefix, size_t prefix_size, const char *stem) {
    static int n;
    ol_test_tmpdir(dir, dir_size);
    snprintf(prefix, prefix_size, "%s%ld_%d_", stem, (long)getpid(), n++);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char *ol_test_sorted_join(const char **items, size_t n) {
    qsort(items, n, sizeof(*items), cmp_str);
    size_t size = 1;
    for (size_t i = 0; i < n; i++)
        size += strlen(items[i]) + 1;
    char *s = ol_xcalloc(size, 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(s, " ");
        strcat(s, items[i]);
    }
    return s;
}

void ol_test_bg_stop_ok(ol_test_bg_t *bg, const char *what, int timeout_ms) {
    int rc = ol_test_bg_term(bg, timeout_ms);
    cr_assert_eq(rc, 0, "%s exit %d after SIGTERM\nstderr:\n%s", what, rc, ol_test_bg_stderr(bg));
}

int ol_test_bg_term(ol_test_bg_t *bg, int timeout_ms) {
    ol_test_bg_signal(bg, SIGTERM);
    return ol_test_bg_wait(bg, timeout_ms);
}

json_t *ol_test_json_lines(char *text) {
    json_t *all = json_array();
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(line, 0, NULL);
        cr_assert(j, "tail printed a line that is not JSON: %s", line);
        json_array_append_new(all, j);
    }
    return all;
}

long long ol_test_metric_in(const char *text, const char *sample) {
    long long v = -1;
    size_t n = strlen(sample);
    for (const char *line = text; line && *line;) {
        if (!strncmp(line, sample, n) && line[n] == ' ')
            v = atoll(line + n + 1);
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return v;
}

void ol_test_start_gate(ol_test_bg_t **gate, int *port, const char *prefix, const char *extra) {
    *gate = ol_test_orderlog_bg("-X topic.prefix=%s -X gate.listen=127.0.0.1:0 %s gate", prefix, extra ? extra : "");
    int lines = ol_test_bg_wait_lines(*gate, 1, 60000);
    const char *out = ol_test_bg_stdout(*gate);
    cr_assert_eq(lines, 1, "the gate did not start\nstdout:\n%s\nstderr:\n%s", out, ol_test_bg_stderr(*gate));
    const char *colon = strrchr(out, ':');
    cr_assert(colon && strstr(out, "gate listening on http://127.0.0.1:"), "%s", out);
    *port = atoi(colon + 1);
    cr_assert(*port > 0);
}

void ol_test_reply_free(ol_test_reply_t *r) {
    free(r->headers);
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}
