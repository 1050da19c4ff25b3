/* Secrets never printed: a distinctive secret planted as the PostgreSQL
 * password and as Kafka secrets, then every command of the binary run
 * (its --help, every config view, the admin commands, publish, tail,
 * project, rebuild, loadgen, and the long-running roles started with their
 * HTTP endpoints, scraped with curl, then stopped with SIGTERM); no piece of
 * the secret may appear in anything they write.
 *
 * Three ways in:
 * - keyword: pg.conninfo with password='...' from the environment,
 *   kafka.sasl.password and kafka.ssl.key.password from a config file;
 * - uri: pg.conninfo postgresql://user:<percent-encoded>@host/db?password=...
 *   and kafka.sasl.password, kafka.ssl.keystore.password on the
 *   command line.
 * Both with security.protocol plaintext (librdkafka keeps the SASL settings
 * unused), so the commands work against the local broker; the local
 * PostgreSQL trusts local connections (ops/stack), so any password
 * connects.
 * - sasl: security.protocol SASL_PLAINTEXT, which the local broker does not
 *   speak, with librdkafka's security and broker debug logs on: the Kafka
 *   commands fail, and their errors and logs count too.
 *
 * Topics of its own (it_secrets_<pid>_<way>_), a scratch database per way. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define PLANTED "S3cr3t-Planted-XYZ"
#define PLANTED_URI "S3cr3t%2DPlanted-XYZ" /* the same, one character percent-encoded */

static char prefix[128];
static char dir[512];
static char db[1024];
static char args[4096]; /* the way's -X and --config options */
static char env[512];   /* the way's environment, "env NAME=VALUE " or "" */
static int outputs, leaks;
static long long scanned;

static void setup(void) {
    ol_test_tmpdir(dir, sizeof(dir));
}

static void teardown(void) {
    const char *groups[] = {"project", "decide", "guard", NULL};
    ol_test_cleanup(ol_test_topic_args(prefix, "", 3), prefix, groups, db, dir);
}

TestSuite(secrets, .init = setup, .fini = teardown, .timeout = 600);

/* Fails the test when text holds a piece of the secret, showing where. */
static void expect_clean(const char *what, const char *text) {
    static const char *const pieces[] = {"S3cr3t", "Planted", "-XYZ"};
    outputs++;
    if (!text)
        return;
    scanned += (long long)strlen(text);
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        const char *at = strstr(text, pieces[i]);
        if (!at)
            continue;
        leaks++;
        const char *from = at - text > 120 ? at - 120 : text;
        cr_expect_fail("%s: \"%s\" of the secret in its output: ...%.240s...", what, pieces[i], from);
        return;
    }
}

/* Runs `orderlog <args> <cmd>` with the way's environment; checks both
 * outputs; returns the exit status, *out (if not NULL) its stdout. */
static int run(const char *cmd, char **out_ret) {
    char *out = NULL, *err = NULL;
    int rc = ol_test_runf(&out, &err, "%stimeout -s KILL 120 %s %s %s", env, ol_test_bin(), args, cmd);
    char what[600];
    snprintf(what, sizeof(what), "orderlog %s (exit %d)", cmd, rc);
    expect_clean(what, out);
    snprintf(what, sizeof(what), "orderlog %s (exit %d), stderr", cmd, rc);
    expect_clean(what, err);
    free(err);
    if (out_ret)
        *out_ret = out;
    else
        free(out);
    return rc;
}

static void run_ok(const char *cmd, bool must_work) {
    int rc = run(cmd, NULL);
    if (must_work)
        cr_expect_eq(rc, 0, "orderlog %s: exit %d", cmd, rc);
}

/* ---- the long-running roles ---- */

#define NROLES 4
static const char *const roles[NROLES] = {"decide", "guard", "project", "gate"};

static bool have_curl(void) {
    return ol_test_run("command -v curl >/dev/null 2>&1", NULL, NULL) == 0;
}

/* GET path from addr: the status line and body as one new string, checked. */
static void scrape(const char *role, const char *addr, const char *path) {
    char *out = NULL, what[300];
    ol_test_runf(&out, NULL, "curl -s -m 10 -i 'http://%s%s'", addr, path);
    snprintf(what, sizeof(what), "%s %s", role, path);
    expect_clean(what, out);
    free(out);
}

/* Starts the four roles (HTTP on port 0), waits for each to print its
 * address (working ways: and for /readyz to say ready), scrapes the
 * endpoints, runs loadgen for one request while decide runs, stops them with
 * SIGTERM and checks everything they wrote. */
static void long_running(bool kafka_works) {
    ol_test_bg_t *procs[NROLES];
    char addrs[NROLES][128] = {{0}};
    for (int i = 0; i < NROLES; i++) {
        char cmd[6000];
        snprintf(cmd, sizeof(cmd), "exec %s%s %s %s %s", env, ol_test_bin(), args,
                 i == 3 ? "-X gate.listen=127.0.0.1:0" : "-X http.listen=127.0.0.1:0", roles[i]);
        procs[i] = ol_test_bg_start(cmd);
    }
    for (int i = 0; i < NROLES; i++) {
        /* the address comes once the role has started (or it exits, failing) */
        if (ol_test_bg_wait_lines(procs[i], 1, 90000) < 1) {
            cr_expect(!kafka_works, "%s printed no address:\n%s", roles[i], ol_test_bg_stderr(procs[i]));
            continue;
        }
        const char *at = strstr(ol_test_bg_stdout(procs[i]), "http://");
        if (at)
            snprintf(addrs[i], sizeof(addrs[i]), "%.*s", (int)strcspn(at + 7, "\n"), at + 7);
    }
    if (have_curl()) {
        for (int i = 0; i < NROLES; i++) {
            if (!*addrs[i])
                continue;
            if (kafka_works) { /* ready: every check passed once */
                long long deadline = ol_test_now_ms() + 90000;
                char *code = NULL;
                while (ol_test_now_ms() < deadline) {
                    free(code);
                    ol_test_runf(&code, NULL, "curl -s -m 10 -o /dev/null -w '%%{http_code}' 'http://%s/readyz'",
                                 addrs[i]);
                    if (code && !strcmp(code, "200"))
                        break;
                    usleep(200 * 1000);
                }
                cr_expect(code && !strcmp(code, "200"), "%s never ready:\n%s", roles[i], ol_test_bg_stderr(procs[i]));
                free(code);
            }
            scrape(roles[i], addrs[i], "/readyz");
            scrape(roles[i], addrs[i], "/healthz");
            scrape(roles[i], addrs[i], "/metrics");
        }
    } else {
        cr_log_warn("curl not installed: the HTTP endpoints are not scraped");
    }
    /* a shopper through Kafka, decided by decide (with a working broker) */
    int rc = run("loadgen --count 1 --wait-ms 30000", NULL);
    if (kafka_works)
        cr_expect_eq(rc, 0, "loadgen got no decision");
    for (int i = 0; i < NROLES; i++)
        ol_test_bg_signal(procs[i], SIGTERM);
    for (int i = 0; i < NROLES; i++) {
        int st = ol_test_bg_wait(procs[i], 90000);
        if (kafka_works)
            cr_expect_eq(st, 0, "%s exited %d after SIGTERM:\n%s", roles[i], st, ol_test_bg_stderr(procs[i]));
        char what[200];
        snprintf(what, sizeof(what), "%s (exit %d)", roles[i], st);
        expect_clean(what, ol_test_bg_stdout(procs[i]));
        snprintf(what, sizeof(what), "%s (exit %d), stderr", roles[i], st);
        expect_clean(what, ol_test_bg_stderr(procs[i]));
        ol_test_bg_free(procs[i]);
    }
}

/* ---- every command ---- */

static void every_command(bool kafka_works) {
    static const char *const commands[] = {"publish", "tail",   "decide", "loadgen", "guard",   "gate",  "project",
                                           "rebuild", "status", "dlq",    "topics",  "migrate", "config"};
    run_ok("--help", true);
    run_ok("--version", true);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "%s --help", commands[i]);
        run_ok(cmd, true);
    }
    static const char *const configs[] = {"config",
                                          "config --show",
                                          "config --list",
                                          "config --sample",
                                          "config --markdown",
                                          "config --profile",
                                          "config --profile producer",
                                          "config --profile txn-producer",
                                          "config --profile consumer",
                                          "config --profile reader",
                                          "config --profile admin",
                                          "config --bogus"};
    for (size_t i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
        run(configs[i], NULL);

    run_ok("migrate", true); /* the password goes to libpq: it connects */
    run_ok("migrate --status", true);
    run_ok("topics create", kafka_works);
    run_ok("topics list", kafka_works);
    run_ok("topics check", kafka_works);

    char path[700];
    snprintf(path, sizeof(path), "%s/catalog.jsonl", dir);
    const char *catalog = "{\"type\":\"SkuSynced\",\"data\":{\"sku\":\"A\",\"platform\":\"p\",\"title\":\"A\","
                          "\"price\":1500,\"currency\":\"CNY\",\"stock\":100,\"version\":1}}\n";
    ol_test_write_file(path, catalog, strlen(catalog));
    char cmd[1000];
    snprintf(cmd, sizeof(cmd), "publish '%s'", path);
    run_ok(cmd, kafka_works);
    run_ok("tail skus -n 1", kafka_works);
    run_ok("project --until-end", kafka_works);
    run_ok("rebuild --verify-only", kafka_works);
    run("status", NULL);
    run("status --json", NULL);
    run_ok("dlq count", kafka_works);
    run("dlq count --json", NULL);
    run("dlq list", NULL);
    run("dlq show 0:0", NULL); /* no dead letter there: an error */
    run("dlq replay --all --dry-run", NULL);

    long_running(kafka_works);
    run_ok("topics delete", kafka_works);
}

static void begin(const char *way) {
    snprintf(prefix, sizeof(prefix), "it_secrets_%ld_%s_", (long)getpid(), way);
    char tag[40];
    snprintf(tag, sizeof(tag), "secrets_%s", way);
    ol_test_pg_scratch_db(tag, db, sizeof(db));
}

static void report(const char *way) {
    cr_log_info("%s: %d outputs of orderlog, %lld bytes, scanned for the secret: %d with a piece of it", way, outputs,
                scanned, leaks);
    cr_expect_gt(outputs, 60, "every command ran");
}

Test(secrets, keyword_conninfo_from_the_environment_and_kafka_secrets_from_a_file) {
    begin("keyword");
    char file[700], text[2000];
    snprintf(file, sizeof(file), "%s/orderlog.conf", dir);
    snprintf(text, sizeof(text),
             "# secrets from a file\n"
             "kafka.sasl.password = " PLANTED "\n"
             "kafka.ssl.key.password = " PLANTED "\n"
             "log.level = debug\n");
    ol_test_write_file(file, text, strlen(text));
    snprintf(args, sizeof(args), "--config '%s' -X topic.prefix=%s -X topic.partitions=2", file, prefix);
    snprintf(text, sizeof(text), "%s password='" PLANTED "'", db);
    char *q = ol_test_shell_quote(text);
    snprintf(env, sizeof(env), "env ORDERLOG_PG_CONNINFO=%s ", q);
    free(q);

    char *out = NULL;
    cr_assert_eq(run("config --show", &out), 0);
    cr_expect(strstr(out, "password=***") && strstr(out, "kafka.sasl.password = ***") &&
                  strstr(out, "kafka.ssl.key.password = ***"),
              "the secrets were set and shown redacted:\n%s", out);
    free(out);
    every_command(true);
    report("keyword");
}

Test(secrets, uri_conninfo_and_kafka_secrets_on_the_command_line) {
    begin("uri");
    /* the scratch database as a URI, with the password in the user part and the query */
    PQconninfoOption *opts = PQconninfoParse(db, NULL);
    cr_assert(opts);
    const char *host = "127.0.0.1", *port = "5432", *user = "postgres", *dbname = "";
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val)
            continue;
        if (!strcmp(o->keyword, "host"))
            host = o->val;
        else if (!strcmp(o->keyword, "port"))
            port = o->val;
        else if (!strcmp(o->keyword, "user"))
            user = o->val;
        else if (!strcmp(o->keyword, "dbname"))
            dbname = o->val;
    }
    char uri[1200];
    snprintf(uri, sizeof(uri), "postgresql://%s:%s@%s:%s/%s?password=%s&sslmode=disable", user, PLANTED_URI, host, port,
             dbname, PLANTED);
    PQconninfoFree(opts);
    snprintf(args, sizeof(args),
             "-X 'pg.conninfo=%s' -X kafka.sasl.password=" PLANTED " -X kafka.ssl.keystore.password=" PLANTED
             " -X log.level=debug -X topic.prefix=%s -X topic.partitions=2",
             uri, prefix);
    env[0] = '\0';

    char *out = NULL;
    cr_assert_eq(run("config --show", &out), 0);
    cr_expect(strstr(out, "pg.conninfo = postgresql://") && strstr(out, ":***@") && strstr(out, "?password=***&") &&
                  strstr(out, "kafka.sasl.password = ***") && strstr(out, "kafka.ssl.keystore.password = ***"),
              "the secrets were set and shown redacted:\n%s", out);
    free(out);
    every_command(true);
    report("uri");
}

Test(secrets, failing_sasl_with_librdkafka_debug_logs) {
    begin("sasl");
    snprintf(args, sizeof(args),
             "-X 'pg.conninfo=%s password=" PLANTED "' -X kafka.security.protocol=SASL_PLAINTEXT "
             "-X kafka.sasl.mechanisms=PLAIN -X kafka.sasl.username=orderlog -X kafka.sasl.password=" PLANTED
             " -X kafka.debug=security,broker,conf -X log.level=debug -X broker.wait.ms=1500 -X topic.prefix=%s",
             db, prefix);
    env[0] = '\0';
    char *out = NULL;
    cr_expect_neq(run("topics list", &out), 0, "SASL against the plaintext listener works?");
    free(out);
    every_command(false);
    report("sasl");
}

/* A broken setting is reported, naming what is wrong, without the secret:
 * libpq's parse errors quote the piece they could not read (a URI whole),
 * and a -X without "=" may be a secret with a typo. */
Test(secrets, broken_settings_reported_without_the_secret) {
    begin("broken");
    const char *const broken[] = {
        "postgresql://postgres:S3cr3t%zzPlanted-XYZ@127.0.0.1/db",     /* invalid percent-encoding */
        "postgresql://postgres:S3cr3t-Planted-XYZ@[127.0.0.1/db",      /* unterminated IPv6 host */
        "postgresql://postgres:S3cr3t%00Planted-XYZ@127.0.0.1/db",     /* %00 */
        "host=127.0.0.1 password=S3cr3t Planted-XYZ",                  /* a blank in the password */
        "host=127.0.0.1 password 'S3cr3t-Planted-XYZ'",                /* "=" forgotten */
        "host=127.0.0.1 password='S3cr3t-Planted-XYZ",                 /* unterminated quote */
        "postgresql://postgres:S3cr3t-Planted-XYZ@127.0.0.1:5432x/db", /* a bad port */
    };
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        char *q = ol_test_shell_quote(broken[i]);
        snprintf(args, sizeof(args), "-X pg.conninfo=%s", q);
        free(q);
        char *out = NULL, *err = NULL;
        int rc = ol_test_runf(&out, &err, "%s %s migrate --status", ol_test_bin(), args);
        char what[300];
        snprintf(what, sizeof(what), "migrate --status with pg.conninfo #%zu (exit %d)", i, rc);
        expect_clean(what, out);
        expect_clean(what, err);
        cr_expect_neq(rc, 0, "%s", what);
        cr_expect(err && (strstr(err, "invalid pg.conninfo") || strstr(err, "could not connect to PostgreSQL")),
                  "%s: the error says what is wrong: %s", what, err);
        free(out);
        free(err);
    }
    /* a database that does not exist, named in the server's answer */
    char text[1200];
    snprintf(text, sizeof(text), "%s dbname=ol_test_no_such_db password=S3cr3t-Planted-XYZ", ol_test_pg_conninfo());
    char *q = ol_test_shell_quote(text), *err = NULL;
    int rc = ol_test_runf(NULL, &err, "%s -X pg.conninfo=%s migrate --status", ol_test_bin(), q);
    free(q);
    expect_clean("migrate --status on a missing database", err);
    cr_expect(rc != 0 && err && strstr(err, "does not exist"), "exit %d: %s", rc, err);
    free(err);
    /* "=" mistyped in a -X */
    err = NULL;
    rc = ol_test_runf(NULL, &err, "%s -X kafka.sasl.password:S3cr3t-Planted-XYZ config", ol_test_bin());
    expect_clean("-X without \"=\"", err);
    cr_expect(rc == 2 && err && strstr(err, "-X kafka.sasl.password...: expected name=value"), "exit %d: %s", rc, err);
    free(err);
}
