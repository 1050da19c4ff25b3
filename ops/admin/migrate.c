/* orderlog migrate: applies the numbered SQL files of migrations/ to PostgreSQL.
 *
 * A migration is a file NNN_description.sql; its version is NNN. Each one runs
 * in its own transaction together with its row in public.schema_migrations
 * (version, name, checksum = sha256 of the file, applied_at), so a migration
 * is either applied and recorded, or neither. A session advisory lock held
 * from before reading schema_migrations to the end makes concurrent runs
 * safe: the later ones wait, then find the work done. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/arena.h"
#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/domain/embedded.h"
#include "common/base/pg.h"
#include "common/base/sha256.h"
#include "common/base/time.h"
#include "common/base/util.h"

/* pg_advisory_lock key of `orderlog migrate`: "olmigrat" in ASCII. */
#define MIGRATE_LOCK_KEY "8028912535169294708"
#define MIGRATE_MAX_FILE_BYTES (64 * 1024 * 1024)

typedef struct stmt_s {
    int line;         /* 1-based line of the statement's first token */
    char word[2][12]; /* its first two words, lower case ("" when not a word) */
} stmt_t;

typedef struct migration_s {
    int version;
    const char *name; /* file name, "001_init.sql" */
    const char *sql;  /* NUL-terminated */
    size_t len;
    char checksum[OL_SHA256_HEX_SIZE];
    stmt_t *stmts; /* where each statement starts, for error messages */
    size_t nstmts;
} migration_t;

typedef struct applied_s {
    int version;
    const char *name, *checksum, *applied_at; /* applied_at "YYYY-MM-DD HH:MM:SS", UTC */
} applied_t;

/* Everything one run reads; all memory lives in the arena. */
typedef struct migrate_s {
    ol_arena_t *arena;
    migration_t *files; /* sorted by version */
    size_t nfiles;
    applied_t *applied; /* sorted by version */
    size_t napplied;
} migrate_t;

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* One line on stderr: errors, warnings, progress notes. */
static void report(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "orderlog migrate: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* ------------------------------------------------------------------------
 * Statement boundaries. The server splits a multi-statement string itself;
 * we only need to know where each statement starts, to name the line of a
 * failure that carries no position and to refuse transaction control. This
 * follows the server's lexer for comments (nested), quotes, E'' strings,
 * dollar quotes and BEGIN ATOMIC bodies. Were it ever wrong, a message
 * would name the wrong line, or a statement would be taken for transaction
 * control; the server still parses the file itself. */

static int is_word_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
           c >= 0x80;
}

/* Length of a dollar-quote tag ("$$", "$body$") at s, or 0. */
static size_t dollar_tag(const char *s, const char *end) {
    const char *p = s + 1;
    if (p < end && ((*p >= '0' && *p <= '9')))
        return 0; /* $1: a parameter */
    while (p < end && *p != '$' && is_word_char((unsigned char)*p))
        p++;
    return p < end && *p == '$' ? (size_t)(p - s + 1) : 0;
}

/* The scanner of one file: where it is, and what it knows of the statement
 * it is in. */
typedef struct lexer_s {
    const char *sql, *s, *end;
    int line;
    int atomic_depth; /* inside BEGIN ATOMIC ... END, which holds semicolons */
    int nwords;       /* words of the statement kept so far (2: no more) */
    char prev[12];    /* the word before, lower case; "" after anything else */
} lexer_t;

/* A comment, nested ones included, from its opening slash-star. */
static void skip_block_comment(lexer_t *lx) {
    const char *s = lx->s, *end = lx->end;
    int depth = 0;
    do {
        if (s + 1 < end && s[0] == '/' && s[1] == '*') {
            depth++;
            s += 2;
        } else if (s + 1 < end && s[0] == '*' && s[1] == '/') {
            depth--;
            s += 2;
        } else {
            lx->line += *s++ == '\n';
        }
    } while (s < end && depth > 0);
    lx->s = s;
}

/* 'string' or "identifier", the quote doubled inside; E'' also takes \ escapes */
static void skip_quoted(lexer_t *lx) {
    const char *s = lx->s, *end = lx->end, *sql = lx->sql;
    unsigned char c = (unsigned char)*s;
    int esc =
        c == '\'' && s > sql && (s[-1] == 'e' || s[-1] == 'E') && (s - 1 == sql || !is_word_char((unsigned char)s[-2]));
    for (s++; s < end; s++) {
        if (esc && *s == '\\' && s + 1 < end) {
            lx->line += *++s == '\n';
        } else if ((unsigned char)*s == c) {
            if (s + 1 < end && (unsigned char)s[1] == c)
                s++;
            else
                break;
        } else {
            lx->line += *s == '\n';
        }
    }
    if (s < end)
        s++; /* the closing quote */
    lx->s = s;
}

/* A dollar-quoted string whose tag (tag bytes) starts at lx->s. */
static void skip_dollar_quoted(lexer_t *lx, size_t tag) {
    const char *s = lx->s, *end = lx->end, *close = NULL;
    for (const char *p = s + tag; p + tag <= end; p++)
        if (!memcmp(p, s, tag)) {
            close = p;
            break;
        }
    const char *stop = close ? close + tag : end;
    for (const char *p = s; p < stop; p++)
        lx->line += *p == '\n';
    lx->s = stop;
}

/* A word at lx->s: the statement's first two are kept in cur, and BEGIN
 * ATOMIC ... END (with the BEGIN and CASE nested in it) is followed. */
static void scan_word(lexer_t *lx, stmt_t *cur) {
    char word[12];
    size_t wl = 0;
    const char *w = lx->s;
    while (lx->s < lx->end && is_word_char((unsigned char)*lx->s))
        lx->s++;
    for (; w < lx->s && wl + 1 < sizeof(word); w++)
        word[wl++] = (char)(*w >= 'A' && *w <= 'Z' ? *w - 'A' + 'a' : *w);
    word[wl] = '\0';
    if (lx->nwords < 2)
        snprintf(cur->word[lx->nwords++], sizeof(cur->word[0]), "%s", word);
    /* a SQL-standard function body: BEGIN ATOMIC ... END holds semicolons */
    if (!lx->atomic_depth && !strcmp(lx->prev, "begin") && !strcmp(word, "atomic"))
        lx->atomic_depth = 1;
    else if (lx->atomic_depth && (!strcmp(word, "begin") || !strcmp(word, "case")))
        lx->atomic_depth++;
    else if (lx->atomic_depth && !strcmp(word, "end"))
        lx->atomic_depth--;
    snprintf(lx->prev, sizeof(lx->prev), "%s", word);
}

/* Skips what separates tokens (blanks, comments), counting lines; true when
 * it skipped anything. */
static bool skip_space(lexer_t *lx) {
    const char *s = lx->s, *end = lx->end;
    unsigned char c = (unsigned char)*s;
    if (c == '\n') {
        lx->line++;
        lx->s++;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
        lx->s++;
    } else if (c == '-' && s + 1 < end && s[1] == '-') {
        while (lx->s < end && *lx->s != '\n')
            lx->s++;
    } else if (c == '/' && s + 1 < end && s[1] == '*') {
        skip_block_comment(lx);
    } else {
        return false;
    }
    return true;
}

/* Room for one more statement in *stmts (arena memory, *cap of them). */
static stmt_t *stmt_add(ol_arena_t *arena, stmt_t **stmts, size_t *n, size_t *cap) {
    if (*n == *cap) {
        stmt_t *bigger = ol_arena_alloc(arena, 2 * *cap * sizeof(**stmts));
        memcpy(bigger, *stmts, *cap * sizeof(**stmts));
        *stmts = bigger;
        *cap *= 2;
    }
    stmt_t *st = &(*stmts)[(*n)++];
    memset(st, 0, sizeof(*st));
    return st;
}

static size_t split_statements(ol_arena_t *arena, const char *sql, size_t len, stmt_t **out) {
    lexer_t lx = {.sql = sql, .s = sql, .end = sql + len, .line = 1};
    size_t n = 0, cap = 16;
    stmt_t *stmts = ol_arena_alloc(arena, cap * sizeof(*stmts)), *cur = NULL;
    while (lx.s < lx.end) {
        if (skip_space(&lx))
            continue;
        unsigned char c = (unsigned char)*lx.s;
        if (c == ';') {
            if (!lx.atomic_depth)
                cur = NULL;
            lx.s++;
            continue;
        }
        if (!cur) {
            cur = stmt_add(arena, &stmts, &n, &cap);
            cur->line = lx.line;
            lx.nwords = 0;
            lx.prev[0] = '\0';
        }
        size_t tag = c == '$' ? dollar_tag(lx.s, lx.end) : 0;
        if (c == '\'' || c == '"' || tag) {
            if (tag)
                skip_dollar_quoted(&lx, tag);
            else
                skip_quoted(&lx);
            lx.nwords = 2; /* the words that matter come first */
            continue;
        }
        if (is_word_char(c) && !(c >= '0' && c <= '9') && c != '$') {
            scan_word(&lx, cur);
            continue;
        }
        /* numbers, operators, punctuation */
        if (c >= '0' && c <= '9')
            while (lx.s < lx.end && is_word_char((unsigned char)*lx.s))
                lx.s++;
        else
            lx.s++;
        lx.nwords = 2;
        lx.prev[0] = '\0';
    }
    *out = stmts;
    return n;
}

/* Transaction control would end the transaction the migration runs in. */
static const stmt_t *find_transaction_control(const migration_t *m) {
    static const char *const words[] = {"begin", "start", "commit", "end", "abort", "rollback", NULL};
    for (size_t i = 0; i < m->nstmts; i++) {
        const stmt_t *st = &m->stmts[i];
        for (int k = 0; words[k]; k++)
            if (!strcmp(st->word[0], words[k]) && !(k == 5 && !strcmp(st->word[1], "to")))
                return st;
        if (!strcmp(st->word[0], "prepare") && !strcmp(st->word[1], "transaction"))
            return st;
    }
    return NULL;
}

/* 1-based line of the 1-based character position pos (UTF-8), or 0. */
static int line_of_position(const char *sql, size_t len, long pos) {
    int line = 1;
    long chars = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)sql[i] & 0xc0) == 0x80)
            continue;
        if (++chars == pos)
            return line;
        line += sql[i] == '\n';
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Loading the files. */

/* Checks name and content and fills m; returns 0, or -1 after reporting. */
static int migration_init(migrate_t *mg, migration_t *m, const char *name, const char *sql, size_t len) {
    const char *p = name;
    long version = 0;
    while (*p >= '0' && *p <= '9' && version <= INT_MAX)
        version = version * 10 + (*p++ - '0');
    size_t nl = strlen(name);
    if (p == name || *p != '_' || nl < 5 || strcmp(name + nl - 4, ".sql") || p + 1 >= name + nl - 4) {
        report("migration file %s: the name must be NNN_description.sql (NNN: the version)", name);
        return -1;
    }
    if (version > INT_MAX) {
        report("migration file %s: version too large", name);
        return -1;
    }
    if (memchr(sql, '\0', len)) {
        report("migration file %s: contains a NUL byte", name);
        return -1;
    }
    long bad = ol_utf8_invalid_at(sql, len);
    if (bad >= 0) {
        report("migration file %s: not valid UTF-8 at byte %ld", name, bad);
        return -1;
    }
    m->version = (int)version;
    m->name = name;
    m->sql = sql;
    m->len = len;
    ol_sha256_hex(sql, len, m->checksum);
    m->nstmts = split_statements(mg->arena, sql, len, &m->stmts);
    const stmt_t *tc = find_transaction_control(m);
    if (tc) {
        report("migration %s: line %d: %s%s%s is not allowed: each migration runs in a transaction of its own", name,
               tc->line, tc->word[0], tc->word[1][0] ? " " : "", tc->word[1]);
        return -1;
    }
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const migration_t *)a)->name, ((const migration_t *)b)->name);
}

/* Sorts by name and checks that this is also version order. */
static int sort_files(migrate_t *mg) {
    qsort(mg->files, mg->nfiles, sizeof(*mg->files), by_name);
    for (size_t i = 1; i < mg->nfiles; i++) {
        const migration_t *a = &mg->files[i - 1], *b = &mg->files[i];
        if (a->version == b->version) {
            report("migrations %s and %s have the same version %d: renumber one", a->name, b->name, a->version);
            return -1;
        }
        if (a->version > b->version) {
            report("migration %s sorts before %s: give all versions the same number of digits", a->name, b->name);
            return -1;
        }
    }
    return 0;
}

static int load_embedded(migrate_t *mg) {
    size_t n = 0;
    while (ol_embedded_migrations[n].path)
        n++;
    mg->files = ol_arena_alloc(mg->arena, (n ? n : 1) * sizeof(*mg->files));
    for (size_t i = 0; i < n; i++) {
        const ol_embedded_t *e = &ol_embedded_migrations[i];
        const char *slash = strrchr(e->path, '/');
        if (migration_init(mg, &mg->files[mg->nfiles], slash ? slash + 1 : e->path, e->data, e->len))
            return -1;
        mg->nfiles++;
    }
    return sort_files(mg);
}

static char *read_file(ol_arena_t *arena, const char *path, size_t *len_out) {
    FILE *fp = fopen(path, "rb");
    struct stat st;
    char *data = NULL;
    if (!fp) {
        report("could not open migration %s: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(fp), &st) || !S_ISREG(st.st_mode)) {
        report("migration %s is not a regular file", path);
        goto out;
    }
    if (st.st_size > MIGRATE_MAX_FILE_BYTES) {
        report("migration %s is too large (%lld bytes, at most %d)", path, (long long)st.st_size,
               MIGRATE_MAX_FILE_BYTES);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    data = ol_arena_alloc(arena, len + 1);
    if (fread(data, 1, len, fp) != len || fgetc(fp) != EOF) {
        report("could not read migration %s: %s", path, ferror(fp) ? strerror(errno) : "it changed while being read");
        data = NULL;
        goto out;
    }
    data[len] = '\0';
    *len_out = len;
out:
    fclose(fp);
    return data;
}

static int load_dir(migrate_t *mg, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        report("could not open migrations directory %s: %s", dir, strerror(errno));
        return -1;
    }
    size_t cap = 16;
    int rc = 0;
    mg->files = ol_arena_alloc(mg->arena, cap * sizeof(*mg->files));
    for (struct dirent *de; (de = readdir(d));) {
        size_t nl = strlen(de->d_name);
        if (de->d_name[0] == '.' || nl < 4 || strcmp(de->d_name + nl - 4, ".sql"))
            continue; /* hidden files (editor backups), READMEs */
        if (mg->nfiles == cap) {
            migration_t *bigger = ol_arena_alloc(mg->arena, 2 * cap * sizeof(*bigger));
            memcpy(bigger, mg->files, cap * sizeof(*bigger));
            mg->files = bigger;
            cap *= 2;
        }
        const char *name = ol_arena_strndup(mg->arena, de->d_name, nl);
        const char *path = ol_arena_sprintf(mg->arena, "%s/%s", dir, name);
        size_t len = 0;
        const char *sql = read_file(mg->arena, path, &len);
        if (!sql || migration_init(mg, &mg->files[mg->nfiles], name, sql, len)) {
            rc = -1;
            break;
        }
        mg->nfiles++;
    }
    closedir(d);
    return rc ? rc : sort_files(mg);
}

/* ------------------------------------------------------------------------
 * The database side. */

static const migration_t *file_of(const migrate_t *mg, int version) {
    for (size_t i = 0; i < mg->nfiles; i++)
        if (mg->files[i].version == version)
            return &mg->files[i];
    return NULL;
}

static const applied_t *applied_of(const migrate_t *mg, int version) {
    for (size_t i = 0; i < mg->napplied; i++)
        if (mg->applied[i].version == version)
            return &mg->applied[i];
    return NULL;
}

static int read_applied(migrate_t *mg, PGconn *conn, int table_may_be_missing) {
    char errstr[512];
    PGresult *res = NULL;
    if (table_may_be_missing) {
        if (ol_pg_query(&res, conn, "select to_regclass('public.schema_migrations') is not null", 0, NULL, errstr,
                        sizeof(errstr))) {
            report("could not read public.schema_migrations: %s", errstr);
            return -1;
        }
        int exists = !strcmp(PQgetvalue(res, 0, 0), "t");
        PQclear(res);
        if (!exists)
            return 0;
    }
    if (ol_pg_query(&res, conn,
                    "select version, name, checksum, to_char(applied_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                    "from public.schema_migrations order by version",
                    0, NULL, errstr, sizeof(errstr))) {
        report("could not read public.schema_migrations: %s", errstr);
        return -1;
    }
    int n = PQntuples(res);
    mg->applied = ol_arena_alloc(mg->arena, (size_t)(n ? n : 1) * sizeof(*mg->applied));
    for (int i = 0; i < n; i++) {
        applied_t *a = &mg->applied[i];
        a->version = atoi(PQgetvalue(res, i, 0));
        a->name = ol_arena_strndup(mg->arena, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1));
        a->checksum = ol_arena_strndup(mg->arena, PQgetvalue(res, i, 2), (size_t)PQgetlength(res, i, 2));
        a->applied_at = ol_arena_strndup(mg->arena, PQgetvalue(res, i, 3), (size_t)PQgetlength(res, i, 3));
    }
    mg->napplied = (size_t)n;
    PQclear(res);
    return 0;
}

static int is_changed(const migration_t *m, const applied_t *a) {
    return a && strcmp(a->checksum, m->checksum);
}

/* Reports every applied file whose checksum differs; returns how many. */
static int report_changed(const migrate_t *mg) {
    int changed = 0;
    for (size_t i = 0; i < mg->nfiles; i++) {
        const migration_t *m = &mg->files[i];
        const applied_t *a = applied_of(mg, m->version);
        if (!is_changed(m, a))
            continue;
        report("migration %s was changed after it was applied (checksum %.12s… recorded, %.12s… now): restore it and "
               "add a new migration instead",
               m->name, a->checksum, m->checksum);
        changed++;
    }
    return changed;
}

static void warn_unknown_and_renamed(const migrate_t *mg) {
    for (size_t i = 0; i < mg->napplied; i++) {
        const applied_t *a = &mg->applied[i];
        const migration_t *m = file_of(mg, a->version);
        if (!m)
            report("warning: version %d (%s) is applied but has no migration file here: a newer orderlog applied it",
                   a->version, a->name);
        else if (strcmp(m->name, a->name) && !is_changed(m, a))
            report("warning: migration %s was applied as %s (renamed, same content)", m->name, a->name);
    }
}

/* Runs m's SQL, then records it, in one transaction. Returns 0, or -1
 * after reporting (the transaction rolled back). */
static int apply_one(PGconn *conn, const migration_t *m) {
    char errstr[1024], msg[1024];
    int line = 0, nok = 0, failed = 0;
    if (ol_pg_exec_ok(conn, "begin", errstr, sizeof(errstr))) {
        report("could not start the transaction of migration %s: %s", m->name, errstr);
        return -1;
    }
    if (!PQsendQuery(conn, m->sql)) {
        ol_pg_msg(NULL, conn, msg, sizeof(msg));
        failed = 1;
    }
    /* One result per statement up to the first failure; always drain them. */
    for (PGresult *res; !failed && (res = PQgetResult(conn)); PQclear(res)) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN) {
            PQputCopyEnd(conn, "COPY FROM STDIN is not supported in migrations");
        } else if (st == PGRES_COPY_OUT) {
            char *buf;
            while (PQgetCopyData(conn, &buf, 0) > 0)
                PQfreemem(buf);
        } else if (ol_pg_err(res)) {
            ol_pg_msg(res, conn, msg, sizeof(msg));
            const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
            if (pos)
                line = line_of_position(m->sql, m->len, atol(pos));
            else if ((size_t)nok < m->nstmts)
                line = m->stmts[nok].line;
            failed = 1;
            PQclear(res);
            while ((res = PQgetResult(conn)))
                PQclear(res);
            break;
        } else if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            nok++;
        }
    }
    if (!failed && PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        snprintf(msg, sizeof(msg),
                 "it ended its own transaction: what ran before that was committed, yet the "
                 "migration is not recorded; undo it by hand");
        failed = 1;
    }
    if (!failed) {
        char version[16];
        snprintf(version, sizeof(version), "%d", m->version);
        const char *params[3] = {version, m->name, m->checksum};
        if (ol_pg_query(NULL, conn,
                        "insert into public.schema_migrations (version, name, checksum) values ($1, $2, $3)", 3, params,
                        msg, sizeof(msg)) ||
            ol_pg_exec_ok(conn, "commit", msg, sizeof(msg)))
            failed = 1;
    }
    if (!failed)
        return 0;
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        ol_pg_exec_ok(conn, "rollback", NULL, 0);
    if (line)
        report("migration %s failed at line %d: %s", m->name, line, msg);
    else
        report("migration %s failed: %s", m->name, msg);
    return -1;
}

static int take_lock(PGconn *conn) {
    char errstr[512];
    PGresult *res = NULL;
    if (ol_pg_query(&res, conn, "select pg_try_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, errstr, sizeof(errstr))) {
        report("could not take the migration lock: %s", errstr);
        return -1;
    }
    int got = !strcmp(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    if (got)
        return 0;
    report("waiting for another orderlog migrate on this database to finish");
    if (ol_pg_exec_ok(conn, "select pg_advisory_lock(" MIGRATE_LOCK_KEY ")", errstr, sizeof(errstr))) {
        report("could not take the migration lock: %s", errstr);
        return -1;
    }
    return 0;
}

static int migrate(migrate_t *mg, PGconn *conn) {
    char errstr[512];
    if (take_lock(conn))
        return -1;
    if (ol_pg_exec_ok(conn,
                      "create table if not exists public.schema_migrations ("
                      "version int primary key, name text not null, checksum text not null, "
                      "applied_at timestamptz not null default now())",
                      errstr, sizeof(errstr))) {
        report("could not create public.schema_migrations: %s", errstr);
        return -1;
    }
    if (read_applied(mg, conn, 0))
        return -1;
    if (report_changed(mg))
        return -1;
    warn_unknown_and_renamed(mg);
    int newest = mg->napplied ? mg->applied[mg->napplied - 1].version : -1;
    size_t done = 0, uptodate = 0;
    for (size_t i = 0; i < mg->nfiles; i++) {
        const migration_t *m = &mg->files[i];
        if (applied_of(mg, m->version)) {
            uptodate++;
            continue;
        }
        if (m->version < newest)
            report("warning: migration %s is older than the newest applied version %d: applying it out of order",
                   m->name, newest);
        int64_t t0 = ol_time_mono_us();
        if (apply_one(conn, m)) {
            if (done)
                printf("%zu applied before the failure\n", done);
            return -1;
        }
        printf("applied %s in %lld ms\n", m->name, (long long)((ol_time_mono_us() - t0 + 500) / 1000));
        fflush(stdout);
        done++;
    }
    if (done)
        printf("%zu applied, %zu already up to date\n", done, uptodate);
    else
        printf("nothing to do, %zu already up to date\n", uptodate);
    ol_pg_exec_ok(conn, "select pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", NULL, 0);
    return 0;
}

/* Prints every migration, files and applied rows merged by version. Returns
 * the number of CHANGED ones, or -1 when schema_migrations cannot be read. */
static int status(migrate_t *mg, PGconn *conn) {
    if (read_applied(mg, conn, 1))
        return -1;
    int width = 4, changed = report_changed(mg);
    size_t napplied = 0, npending = 0, nunknown = 0;
    for (size_t i = 0; i < mg->nfiles; i++)
        if ((int)strlen(mg->files[i].name) > width)
            width = (int)strlen(mg->files[i].name);
    for (size_t i = 0; i < mg->napplied; i++)
        if ((int)strlen(mg->applied[i].name) > width)
            width = (int)strlen(mg->applied[i].name);
    printf("%7s  %-*s  %s\n", "VERSION", width, "NAME", "STATE (times in UTC)");
    size_t fi = 0, ai = 0;
    while (fi < mg->nfiles || ai < mg->napplied) {
        const migration_t *m = fi < mg->nfiles ? &mg->files[fi] : NULL;
        const applied_t *a = ai < mg->napplied ? &mg->applied[ai] : NULL;
        if (m && a && a->version < m->version)
            m = NULL;
        else if (m && a && m->version < a->version)
            a = NULL;
        fi += m != NULL;
        ai += a != NULL;
        int version = m ? m->version : a->version;
        const char *name = m ? m->name : a->name;
        if (!a) {
            printf("%7d  %-*s  pending\n", version, width, name);
            npending++;
        } else if (!m) {
            printf("%7d  %-*s  unknown file\n", version, width, name);
            nunknown++;
        } else if (is_changed(m, a)) {
            printf("%7d  %-*s  CHANGED\n", version, width, name);
        } else {
            printf("%7d  %-*s  applied %s\n", version, width, name, a->applied_at);
            napplied++;
        }
    }
    printf("%zu applied, %zu pending, %d changed, %zu unknown\n", napplied, npending, changed, nunknown);
    return changed;
}

static int migrate_run(const ol_conf_t *conf, int argc, char **argv) {
    const char *dir = NULL;
    int want_status = 0, rc = OL_EXIT_FAIL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--status"))
            want_status = 1;
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strncmp(argv[i], "--dir=", 6) && argv[i][6])
            dir = argv[i] + 6;
        else if (!strcmp(argv[i], "--dir"))
            return ol_cli_usage_error(&ol_cmd_migrate, "--dir needs a directory");
        else
            return ol_cli_usage_error(&ol_cmd_migrate, "unknown option \"%s\"", argv[i]);
    }
    char errstr[1024];
    migrate_t mg = {ol_arena_new(0), NULL, 0, NULL, 0};
    PGconn *conn = NULL;
    if (dir ? load_dir(&mg, dir) : load_embedded(&mg))
        goto out;
    if (!(conn = ol_pg_connect(conf, errstr, sizeof(errstr)))) {
        report("%s", errstr);
        goto out;
    }
    /* statement positions are counted in characters: make them UTF-8's */
    if (ol_pg_exec_ok(conn, "set client_encoding to 'UTF8'", errstr, sizeof(errstr))) {
        report("could not set the client encoding: %s", errstr);
        goto out;
    }
    if (want_status) {
        int changed = status(&mg, conn);
        rc = changed ? OL_EXIT_FAIL : OL_EXIT_OK;
    } else {
        rc = migrate(&mg, conn) ? OL_EXIT_FAIL : OL_EXIT_OK;
    }
out:
    PQfinish(conn); /* also releases the advisory lock if still held */
    ol_arena_destroy(mg.arena);
    return rc;
}

const ol_cmd_t ol_cmd_migrate = {
    "migrate", migrate_run, "apply the database migrations (schema of the read models) to PostgreSQL",
    "  (no option)  apply every pending migration compiled into orderlog, in version order\n"
    "  --dir DIR    use the files DIR/NNN_description.sql instead of the compiled-in ones\n"
    "  --status     list every migration as applied, pending, CHANGED or unknown file; exit 1 if one\n"
    "               was CHANGED after it was applied\n"
    "Each migration runs in a transaction of its own, recorded in public.schema_migrations with the\n"
    "sha256 of its file. A changed applied file stops everything: restore it, add a new migration.\n"
    "Concurrent runs are safe (the later ones wait for the first and find nothing to do).\n"
    "Connects with pg.conninfo.\n"};
