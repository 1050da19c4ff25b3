/* orderlog schemas against the real schema registry of ops/stack
 * (ORDERLOG_REGISTRY_URL; `ops/test` starts it). Every test registers under
 * a topic prefix of its own (it_schemas_<tag>_<pid>_), so its subjects are
 * its own and tests run in parallel. What the registry holds is asked with
 * curl, not through orderlog. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

static char prefix[128];
static char args[512];
static char tmpdir[512];

static void teardown(void) {
    if (*tmpdir)
        ol_test_rmtree(tmpdir);
}

TestSuite(schemas, .fini = teardown, .timeout = 180);

/* The registry of the stack; skips the test when none runs. */
static const char *registry_url(void) {
    const char *url = getenv("ORDERLOG_REGISTRY_URL");
    if (!url || !*url)
        cr_skip_test("ORDERLOG_REGISTRY_URL is not set: no schema registry (ops/stack registry-start, or ops/test)");
    return url;
}

static void use_prefix(const char *tag) {
    snprintf(prefix, sizeof(prefix), "it_schemas_%s_%ld_", tag, (long)getpid());
    snprintf(args, sizeof(args), "-X topic.prefix=%s -X registry.url=%s", prefix, registry_url());
}

/* The subject of BuyRequested under the test's prefix. */
static const char *buy_subject(void) {
    static char s[256];
    snprintf(s, sizeof(s), "%sbuy-requests-orderlog.BuyRequested", prefix);
    return s;
}

/* GET <registry>/<path> with curl, the path printf-formatted: the body
 * (free it); fails the test unless it answers 2xx. */
static char *registry_get(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *registry_get(const char *fmt, ...) {
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    char *out = NULL, *err = NULL;
    int rc = ol_test_runf(&out, &err, "curl -sS -f -m 10 '%s%s'", registry_url(), path);
    cr_assert_eq(rc, 0, "curl %s%s: exit %d: %s", registry_url(), path, rc, err);
    free(err);
    return out;
}

/* Expects the versions of BuyRequested's subject to be `want` (a JSON array). */
static void expect_buy_versions(const char *want) {
    char *versions = registry_get("/subjects/%s/versions", buy_subject());
    cr_expect_str_eq(versions, want);
    free(versions);
}

/* How many times needle stands in text. */
static int count_of(const char *text, const char *needle) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* A copy of schemas/BuyRequested.avsc with `field` (JSON) added first and
 * orderlog.version 3, alone in a new directory; returns the directory. */
static const char *schema_dir_with(const char *field) {
    char path[1024];
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    cr_assert(src, "ORDERLOG_SOURCE_DIR is not set");
    snprintf(path, sizeof(path), "%s/schemas/BuyRequested.avsc", src);
    char *text = ol_test_read_file(path);
    cr_assert(text, "cannot read %s", path);
    char *fields = strstr(text, "\"fields\": [");
    char *version = strstr(text, "\"orderlog.version\": 2");
    cr_assert(fields && version, "schemas/BuyRequested.avsc is no longer version 2 with a fields array");
    version[strlen("\"orderlog.version\": ")] = '3';
    ol_test_tmpdir(tmpdir, sizeof(tmpdir));
    snprintf(path, sizeof(path), "%s/BuyRequested.avsc", tmpdir);
    size_t head = (size_t)(fields - text) + strlen("\"fields\": [");
    ol_test_write_file(path, text, head);
    ol_test_append_file(path, field);
    ol_test_append_file(path, ",");
    ol_test_append_file(path, text + head);
    free(text);
    return tmpdir;
}

Test(schemas, registers_every_version_under_topic_and_record_name) {
    use_prefix("reg");
    char *out = ol_test_orderlogf_ok(args, "schemas register");
    /* 25 schemas and 3 older versions in history/ */
    cr_expect_eq(ol_test_count_lines(out, prefix), 28, "%s", out);
    cr_expect_eq(ol_test_count_lines(out, "it_schemas_"), 28, "%s", out);
    char *line = ol_test_find_line(out, buy_subject(), "history/BuyRequested.v1.avsc", "registered, id", NULL);
    cr_expect(line, "no line registering BuyRequested version 1: %s", out);
    free(line);
    free(out);

    char path[512];
    char *subjects = registry_get("/subjects");
    cr_expect(strstr(subjects, buy_subject()), "%s not among %s", buy_subject(), subjects);
    snprintf(path, sizeof(path), "\"%sorders-orderlog.OrderPlaced\"", prefix);
    cr_expect(strstr(subjects, path), "%s not among %s", path, subjects);
    free(subjects);
    /* BuyRequested: version 1 of history/, then the current one */
    expect_buy_versions("[1,2]");
    char *v1 = registry_get("/subjects/%s/versions/1", buy_subject());
    cr_expect(!strstr(v1, "channel"), "version 1 has no channel field: %s", v1);
    free(v1);
    char *v2 = registry_get("/subjects/%s/versions/2", buy_subject());
    cr_expect(strstr(v2, "channel"), "version 2 has the channel field: %s", v2);
    free(v2);
    char *config = registry_get("/config/%s", buy_subject());
    cr_expect(strstr(config, "\"BACKWARD\""), "%s", config);
    free(config);
}

Test(schemas, registering_twice_changes_nothing) {
    use_prefix("twice");
    char *first = ol_test_orderlogf_ok(args, "schemas register");
    char *second = ol_test_orderlogf_ok(args, "schemas register");
    cr_expect_eq(ol_test_count_lines(second, prefix), 28, "%s", second);
    cr_expect_eq(ol_test_count_lines(first, "registered already"), 0, "%s", first);
    /* every line says "registered already", with the id of the first run */
    char *line = ol_test_find_line(first, buy_subject(), "schemas/BuyRequested.avsc", NULL);
    cr_assert(line, "%s", first);
    const char *id = strstr(line, "id ");
    cr_assert(id, "%s", line);
    char *again = ol_test_find_line(second, buy_subject(), "schemas/BuyRequested.avsc", "registered already, version 2",
                                    id, NULL);
    cr_expect(again, "not found again with the same %s: %s", id, second);
    int already = count_of(second, ": registered already");
    cr_expect_eq(already, 28, "%s", second);
    free(again);
    free(line);
    free(first);
    free(second);
    expect_buy_versions("[1,2]");
}

Test(schemas, check_passes_on_what_is_registered) {
    use_prefix("check");
    char *before = ol_test_orderlogf_ok(args, "schemas check");
    cr_expect_eq(ol_test_count_lines(before, prefix), 25, "one line per subject: %s", before);
    char *line = ol_test_find_line(before, buy_subject(), "not registered yet", NULL);
    cr_expect(line, "%s", before);
    free(line);
    free(before);
    free(ol_test_orderlogf_ok(args, "schemas register"));
    char *after = ol_test_orderlogf_ok(args, "schemas check");
    int compatible = count_of(after, ": compatible\n");
    cr_expect_eq(compatible, 25, "%s", after);
    free(after);
}

Test(schemas, check_refuses_a_field_added_without_default) {
    use_prefix("nodefault");
    free(ol_test_orderlogf_ok(args, "schemas register"));
    const char *dir = schema_dir_with("{\"name\": \"coupon\", \"type\": \"string\"}");
    char *out = NULL, *err = NULL;
    int rc = ol_test_orderlogf(&out, &err, args, "schemas check --dir %s", dir);
    cr_expect_eq(rc, 1, "exit %d: %s%s", rc, out, err);
    char *line =
        ol_test_find_line(err, buy_subject(), "would break readers", "\"coupon\" added without a default", NULL);
    cr_expect(line, "stderr names neither the subject nor the field: %s", err);
    free(line);
    line = ol_test_find_line(out, buy_subject(), "INCOMPATIBLE", NULL);
    cr_expect(line, "%s", out);
    free(line);
    free(out);
    free(err);
    /* registering it is refused too, and the subject keeps its versions */
    rc = ol_test_orderlogf(&out, &err, args, "schemas register --dir %s", dir);
    cr_expect_eq(rc, 1, "exit %d: %s%s", rc, out, err);
    line = ol_test_find_line(err, buy_subject(), "the registry refused", NULL);
    cr_expect(line, "%s", err);
    free(line);
    free(out);
    free(err);
    expect_buy_versions("[1,2]");
}

Test(schemas, a_field_added_with_default_passes_and_registers) {
    use_prefix("default");
    free(ol_test_orderlogf_ok(args, "schemas register"));
    const char *dir = schema_dir_with("{\"name\": \"coupon\", \"type\": \"string\", \"default\": \"\"}");
    char *out = ol_test_orderlogf_ok(args, "schemas check --dir %s", dir);
    char *line = ol_test_find_line(out, buy_subject(), ": compatible", NULL);
    cr_expect(line, "%s", out);
    free(line);
    free(out);
    free(ol_test_orderlogf_ok(args, "schemas register --dir %s", dir));
    expect_buy_versions("[1,2,3]");
}

Test(schemas, the_compatibility_rule_is_configurable) {
    use_prefix("transitive");
    free(ol_test_orderlogf_ok(args, "-X registry.compatibility=BACKWARD_TRANSITIVE schemas register"));
    char *config = registry_get("/config/%sorders-orderlog.OrderPaid", prefix);
    cr_expect(strstr(config, "\"BACKWARD_TRANSITIVE\""), "%s", config);
    free(config);
    /* a level the API does not have is refused before anything is asked */
    char *out = NULL, *err = NULL;
    int rc = ol_test_orderlogf(&out, &err, NULL,
                               "-X topic.prefix=%s -X registry.url=%s -X registry.compatibility=NOPE "
                               "schemas register",
                               prefix, registry_url());
    cr_expect_eq(rc, 2, "exit %d: %s", rc, err);
    cr_expect(strstr(err, "registry.compatibility"), "%s", err);
    free(out);
    free(err);
}

/* A port on 127.0.0.1 nothing listens on (bound, then closed). */
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

Test(schemas, a_registry_down_is_a_clear_error) {
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/apis/ccompat/v6", closed_port());
    const char *actions[] = {"register", "check"};
    for (int i = 0; i < 2; i++) {
        char *out = NULL, *err = NULL;
        int rc = ol_test_orderlogf(&out, &err, NULL, "-X registry.url=%s schemas %s", url, actions[i]);
        cr_expect_eq(rc, 1, "%s: exit %d", actions[i], rc);
        char *line = ol_test_find_line(err, url, "connection refused", NULL);
        cr_expect(line, "%s: stderr names neither the URL nor why: %s", actions[i], err);
        cr_expect_eq(ol_test_count_lines(err, "orderlog"), 1, "one line: %s", err);
        free(line);
        free(out);
        free(err);
    }
}
