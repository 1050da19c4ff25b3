/* Secrets never printed: which values are secret, conninfo redaction, and
 * the scrubbing of text (log lines, libpq's messages). */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/conf.h"
#include "common/base/log.h"
#include "common/base/redact.h"
#include "common/domain/properties.h"

static void expect_conninfo(const char *in, const char *want) {
    char *got = ol_redact_conninfo(in);
    cr_expect_str_eq(got, want, "redacting [%s]", in);
    free(got);
}

Test(redact, keyword_form_password_values) {
    expect_conninfo("host=db port=5432 dbname=orders user=ol password=secret",
                    "host=db port=5432 dbname=orders user=ol password=***");
    expect_conninfo("password=secret host=db", "password=*** host=db");
    expect_conninfo("host=db password='se cret' user=ol", "host=db password=*** user=ol");
    expect_conninfo("host=db password = 'it\\'s a \\\\ secret' user=ol", "host=db password = *** user=ol");
    expect_conninfo("host=db password=back\\ slash user=ol", "host=db password=*** user=ol");
    expect_conninfo("host=db\tpassword=tab\nuser=ol", "host=db\tpassword=***\nuser=ol");
    expect_conninfo("host=db sslpassword=keypass sslkey=/k.pem", "host=db sslpassword=*** sslkey=/k.pem");
    expect_conninfo("host=db PASSWORD=x", "host=db PASSWORD=***");
    /* an empty password hides nothing; libpq takes the next word after blanks */
    expect_conninfo("host=db password=", "host=db password=");
    expect_conninfo("password= user=ol", "password= ***");
    expect_conninfo("host=db password=''", "host=db password=***");
}

Test(redact, keyword_form_malformed_is_read_leniently) {
    /* a blank in an unquoted password: libpq names the rest as a key */
    expect_conninfo("host=db password=se cret more user=ol", "host=db password=*** user=ol");
    /* "=" forgotten after the key */
    expect_conninfo("host=db password secret user=ol", "host=db password *** user=ol");
    /* an unterminated quote runs to the end */
    expect_conninfo("host=db password='se cret user=ol", "host=db password=***");
    /* the same key without "=" after another password does not swallow what lies between */
    expect_conninfo("sslpassword=a1b2 host=db password s3cret", "sslpassword=*** host=db password ***");
}

/* Each conninfo of the NULL-terminated list comes back as it is. */
static void expect_unchanged(const char *const *same) {
    for (; *same; same++)
        expect_conninfo(*same, *same);
}

Test(redact, keyword_form_without_password_unchanged) {
    static const char *const same[] = {"",
                                       "host=db port=5432 dbname=orders user=ol sslmode=require",
                                       "dbname=orders",
                                       "host=db passfile=/home/ol/.pgpass user=ol",
                                       "application_name='pass word=x' host=db",
                                       "orders",
                                       NULL};
    expect_unchanged(same);
}

Test(redact, uri_form_password_values) {
    expect_conninfo("postgresql://ol:secret@db:5432/orders", "postgresql://ol:***@db:5432/orders");
    expect_conninfo("postgres://ol:secret@db/orders", "postgres://ol:***@db/orders");
    expect_conninfo("postgresql://ol:s%40c%2Fr%3Aet@db/orders?sslmode=require",
                    "postgresql://ol:***@db/orders?sslmode=require");
    expect_conninfo("postgresql://ol@db/orders?password=secret&sslmode=require",
                    "postgresql://ol@db/orders?password=***&sslmode=require");
    expect_conninfo("postgresql://db/orders?user=ol&password=secret", "postgresql://db/orders?user=ol&password=***");
    expect_conninfo("postgresql://db/orders?pass%77ord=secret", "postgresql://db/orders?pass%77ord=***");
    expect_conninfo("postgresql://ol:a@db/orders?sslpassword=keypass&sslkey=/k.pem",
                    "postgresql://ol:***@db/orders?sslpassword=***&sslkey=/k.pem");
    expect_conninfo("postgresql://ol:secret@h1:5432,h2:5433/orders?target_session_attrs=read-write",
                    "postgresql://ol:***@h1:5432,h2:5433/orders?target_session_attrs=read-write");
    expect_conninfo("postgresql://ol:secret@[::1]:5432/orders", "postgresql://ol:***@[::1]:5432/orders");
    expect_conninfo("POSTGRESQL://ol:secret@db/orders", "POSTGRESQL://ol:***@db/orders");
    /* an "@" left unencoded in the password */
    expect_conninfo("postgresql://ol:p@ss@db/orders", "postgresql://ol:***@db/orders");
    /* a "?" in the password is the password's, not the query's */
    expect_conninfo("postgresql://ol:pa?ss@db/orders", "postgresql://ol:***@db/orders");
}

Test(redact, uri_form_without_password_unchanged) {
    static const char *const same[] = {"postgresql://",
                                       "postgresql://db",
                                       "postgresql://ol@db:5432/orders",
                                       "postgresql://ol:@db/orders",
                                       "postgresql:///orders?host=/var/run/postgresql",
                                       "postgresql://db/orders?user=a@b&sslmode=disable",
                                       NULL};
    expect_unchanged(same);
}

Test(redact, secret_properties) {
    const char *secret[] = {"kafka.sasl.password",
                            "sasl.password",
                            "kafka.sasl.username",
                            "kafka.ssl.key.password",
                            "kafka.ssl.keystore.password",
                            "kafka.ssl.key.pem",
                            "kafka.ssl_key",
                            "kafka.ssl.key.location",
                            "kafka.ssl.ca.pem",
                            "kafka.sasl.oauthbearer.config",
                            "kafka.sasl.oauthbearer.client.secret",
                            "kafka.sasl.oauthbearer.assertion.private.key.passphrase",
                            "kafka.sasl.oauthbearer.assertion.private.key.pem",
                            "kafka.sasl.oauthbearer.assertion.private.key.file",
                            "kafka.some.future.password",
                            "kafka.sasl.jaas.config"};
    for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
        cr_expect(ol_redact_is_secret(secret[i]), "%s", secret[i]);
    const char *plain[] = {"kafka.bootstrap.servers",
                           "kafka.acks",
                           "kafka.security.protocol",
                           "kafka.sasl.mechanisms",
                           "kafka.ssl.certificate.location",
                           "pg.conninfo",
                           "topic.prefix",
                           "gate.listen"};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        cr_expect(!ol_redact_is_secret(plain[i]), "%s", plain[i]);
}

Test(redact, values_as_shown) {
    char *v = ol_redact_value("kafka.sasl.password", "hunter22");
    cr_expect_str_eq(v, "***");
    free(v);
    v = ol_redact_value("kafka.sasl.password", "");
    cr_expect_str_eq(v, "", "an empty secret shows it is not set");
    free(v);
    v = ol_redact_value("pg.conninfo", "host=db password=x");
    cr_expect_str_eq(v, "host=db password=***");
    free(v);
    v = ol_redact_value("kafka.acks", "all");
    cr_expect_str_eq(v, "all");
    free(v);
}

static ol_conf_t *conf_with(const char *conninfo) {
    char errstr[256];
    ol_conf_t *conf = ol_conf_new();
    cr_assert_eq(ol_conf_set(conf, "pg.conninfo", conninfo, errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_conf_set(conf, "kafka.sasl.password", "K4fka-Secret", errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_conf_set(conf, "kafka.sasl.username", "orderlog", errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(
        ol_conf_set(conf, "kafka.sasl.oauthbearer.config", "principal=svc scope=orders.write", errstr, sizeof(errstr)),
        OL_ERR_OK);
    return conf;
}

Test(redact, text_scrubbed_of_remembered_secrets) {
    ol_conf_t *conf = conf_with("host=db password='it\\'s se cret' sslpassword=k3y");
    ol_redact_remember(conf);
    char out[512];
    ol_redact_text("a 'it\\'s se cret' and it's se cret, K4fka-Secret; scope=orders.write", out, sizeof(out));
    cr_expect_str_eq(out, "a *** and ***, ***; ***", "as written (quotes included) and as read");
    /* a user name and secrets shorter than OL_REDACT_TEXT_MIN would blank ordinary words */
    ol_redact_text("orderlog k3y", out, sizeof(out));
    cr_expect_str_eq(out, "orderlog k3y");
    /* truncated, still terminated */
    ol_redact_text("K4fka-Secret", out, 3);
    cr_expect_str_eq(out, "**");
    char buf[64] = "sasl: K4fka-Secret!";
    ol_redact_text_inplace(buf, sizeof(buf));
    cr_expect_str_eq(buf, "sasl: ***!");
    ol_redact_remember(NULL);
    ol_redact_text("K4fka-Secret", out, sizeof(out));
    cr_expect_str_eq(out, "K4fka-Secret", "forgotten");
    ol_conf_destroy(conf);
}

Test(redact, uri_secrets_remembered_encoded_and_decoded) {
    ol_conf_t *conf = conf_with("postgresql://ol:S3cr%40t-x@db/orders?sslpassword=s%20l%20l1");
    ol_redact_remember(conf);
    char out[512];
    ol_redact_text("S3cr%40t-x S3cr@t-x s%20l%20l1 s l l1", out, sizeof(out));
    cr_expect_str_eq(out, "*** *** *** ***");
    ol_redact_remember(NULL);
    ol_conf_destroy(conf);
}

/* libpq's own parse errors quote pieces of the conninfo: what pg.c shows. */
static void expect_parse_error_safe(const char *conninfo, const char *secret, const char *kept) {
    char *perr = NULL, out[512];
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    cr_assert_null(opts, "%s parses", conninfo);
    cr_assert_not_null(perr);
    cr_assert(strstr(perr, secret), "the test wants a message that echoes the secret: %s", perr);
    ol_redact_conninfo_msg(conninfo, perr, out, sizeof(out));
    cr_expect(!strstr(out, secret), "%s leaks in: %s", secret, out);
    cr_expect(strstr(out, kept), "%s lost from: %s", kept, out);
    PQfreemem(perr);
}

Test(redact, libpq_parse_errors_shown_without_the_password) {
    expect_parse_error_safe("postgresql://ol:S3cr%zzet@db/orders", "S3cr", "invalid percent-encoded token: \"***\"");
    expect_parse_error_safe("postgresql://ol:S3cret@[db/orders", "S3cret", "\"postgresql://ol:***@[db/orders\"");
    expect_parse_error_safe("host=db password=S3 cr3t", "cr3t", "missing \"=\" after \"***\"");
    expect_parse_error_safe("postgresql://ol:S3cr%00et@db/orders", "S3cr", "forbidden value %00");
    /* pieces that are not the password stay */
    char *perr = NULL, out[512];
    cr_assert_null(PQconninfoParse("postgresql://ol:S3cret@db/orders?bogus=1", &perr));
    ol_redact_conninfo_msg("postgresql://ol:S3cret@db/orders?bogus=1", perr, out, sizeof(out));
    cr_expect(strstr(out, "\"bogus\""), "%s", out);
    PQfreemem(perr);
    /* a message that does not come from the conninfo keeps its quotes */
    ol_redact_conninfo_msg("host=db password=S3cret", "socket \"/run/pg/.s.PGSQL.5432\" failed: S3cret?", out,
                           sizeof(out));
    cr_expect_str_eq(out, "socket \"/run/pg/.s.PGSQL.5432\" failed: ***?");
}

/* Every log line goes through the scrubber. */
Test(redact, log_lines_never_carry_a_secret) {
    char path[] = "/tmp/ol_redact_logXXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    int saved = dup(STDERR_FILENO);
    cr_assert(dup2(fd, STDERR_FILENO) >= 0);
    ol_conf_t *conf = conf_with("host=db password=Pl4nted-Pw");
    ol_redact_remember(conf);
    ol_log_init("test", OL_LOG_DEBUG);
    ol_log_error("kafka rdkafka#producer-1: SASL: authentication with K4fka-Secret as Pl4nted-Pw failed");
    dup2(saved, STDERR_FILENO);
    close(saved);
    FILE *fp = fopen(path, "r");
    char line[1024] = "";
    cr_assert(fgets(line, sizeof(line), fp));
    fclose(fp);
    close(fd);
    unlink(path);
    cr_expect(strstr(line, "authentication with *** as *** failed"), "%s", line);
    cr_expect(!strstr(line, "K4fka") && !strstr(line, "Pl4nted"), "%s", line);
    ol_redact_remember(NULL);
    ol_conf_destroy(conf);
}
