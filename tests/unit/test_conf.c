/* Configuration: the property table, its sources and their precedence, and
 * the files generated from it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/conf.h"
#include "testutil.h"
#include "common/domain/properties.h"

OLT_FIXTURE(ol_conf_t, conf, ol_conf_new(), ol_conf_destroy)

TestSuite(conf, .init = setup, .fini = teardown);

/* A temporary file holding text; the path is new and the file removed by
 * remove_temp. */
static char *write_temp(const char *text) {
    char *path = ol_xstrdup("/tmp/orderlog-conf-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    size_t len = strlen(text);
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void remove_temp(char *path) {
    unlink(path);
    free(path);
}

static ol_err_t set(const char *name, const char *value, char *errstr, size_t size) {
    errstr[0] = '\0';
    return ol_conf_set(conf, name, value, errstr, size);
}

Test(conf, starts_with_the_table_defaults) {
    cr_expect_str_eq(ol_conf_str(conf, "kafka.bootstrap.servers"), "127.0.0.1:19092");
    cr_expect_str_eq(ol_conf_str(conf, "topic.prefix"), "orderlog.");
    cr_expect_eq(ol_conf_int(conf, "topic.partitions"), 6);
    cr_expect_eq(ol_conf_int(conf, "publish.max.line.bytes"), 1048576);
    cr_expect_str_eq(ol_conf_str(conf, "log.level"), "info");
    /* every property of the table holds its default, well-formed for its type */
    for (const ol_conf_prop_t *p = ol_conf_props(); p->name; p++) {
        cr_assert(p->def, "%s has no default", p->name);
        cr_assert(p->help && *p->help, "%s has no help", p->name);
        switch (p->type) {
        case OL_CONF_INT:
            cr_expect_eq(ol_conf_int(conf, p->name), strtoll(p->def, NULL, 10), "%s", p->name);
            cr_expect(ol_conf_int(conf, p->name) >= p->min && ol_conf_int(conf, p->name) <= p->max,
                      "%s: default %s outside [%lld, %lld]", p->name, p->def, (long long)p->min, (long long)p->max);
            break;
        case OL_CONF_STR:
        case OL_CONF_ENUM:
            cr_expect_str_eq(ol_conf_str(conf, p->name), p->def, "%s", p->name);
            break;
        case OL_CONF_BOOL:
            (void)ol_conf_bool(conf, p->name);
            break;
        }
        /* a default must pass its own validation */
        char errstr[256];
        cr_expect_eq(set(p->name, p->def, errstr, sizeof(errstr)), OL_ERR_OK, "%s: %s", p->name, errstr);
    }
}

Test(conf, validates_integers) {
    char errstr[256];
    cr_expect_eq(set("topic.partitions", "12", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ol_conf_int(conf, "topic.partitions"), 12);
    cr_expect_eq(set("topic.partitions", "1", errstr, sizeof(errstr)), OL_ERR_OK, "minimum is inclusive");
    cr_expect_eq(set("topic.partitions", "10000", errstr, sizeof(errstr)), OL_ERR_OK, "maximum is inclusive");

    static const olt_case_t bad[] = {
        {"0", "0 is out of range [1, 10000]"},
        {"10001", "out of range"},
        {"-5", "out of range"},
        {"twelve", "\"twelve\" is not an integer"},
        {"", "is not an integer"},
        {"12abc", "is not an integer"},
        {"1.5", "is not an integer"},
        {"99999999999999999999", "is not an integer"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(set("topic.partitions", bad[i].in, errstr, sizeof(errstr)), OL_ERR_CONFIG, "\"%s\" accepted",
                     bad[i].in);
        cr_expect(strstr(errstr, bad[i].want), "\"%s\": %s", bad[i].in, errstr);
        cr_expect(strstr(errstr, "topic.partitions"), "error names the property: %s", errstr);
    }
    /* a refused value leaves the previous one */
    cr_expect_eq(ol_conf_int(conf, "topic.partitions"), 10000);
}

Test(conf, validates_enums) {
    char errstr[256];
    cr_expect_eq(set("log.level", "debug", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_str_eq(ol_conf_str(conf, "log.level"), "debug");
    cr_expect_eq(set("log.level", "error", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    static const char *const bad[] = {"verbose", "INFO", "", "warn,error", "inf", "infoo", "debug "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(set("log.level", bad[i], errstr, sizeof(errstr)), OL_ERR_CONFIG, "\"%s\" accepted", bad[i]);
        cr_expect(strstr(errstr, "debug,info,warn,error"), "the allowed values are listed: %s", errstr);
    }
    cr_expect_str_eq(ol_conf_str(conf, "log.level"), "error");
}

Test(conf, refuses_unknown_properties_but_passes_kafka_ones_through) {
    char errstr[256];
    cr_expect_eq(set("topic.partition", "3", errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect(strstr(errstr, "unknown property \"topic.partition\""), "%s", errstr);
    cr_expect_eq(set("pg.password", "x", errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect_eq(set("kafka.", "x", errstr, sizeof(errstr)), OL_ERR_CONFIG, "kafka. alone is no property");
    cr_expect_eq(set("", "x", errstr, sizeof(errstr)), OL_ERR_CONFIG);

    cr_expect_eq(set("kafka.linger.ms", "5", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(set("kafka.security.protocol", "plaintext", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(set("kafka.linger.ms", "7", errstr, sizeof(errstr)), OL_ERR_OK, "set twice: the last wins");
}

typedef struct kafka_seen_s {
    int count;
    char names[32][64], values[32][128];
} kafka_seen_t;

static int collect(void *opaque, const char *name, const char *value) {
    kafka_seen_t *seen = opaque;
    cr_assert_lt(seen->count, 32);
    snprintf(seen->names[seen->count], 64, "%s", name);
    snprintf(seen->values[seen->count], 128, "%s", value);
    seen->count++;
    return 0;
}

static const char *seen_value(const kafka_seen_t *seen, const char *name) {
    const char *v = NULL;
    for (int i = 0; i < seen->count; i++)
        if (!strcmp(seen->names[i], name)) {
            cr_expect_null(v, "%s passed twice", name);
            v = seen->values[i];
        }
    return v;
}

static int stop_at_second(void *opaque, const char *name, const char *value) {
    (void)name;
    (void)value;
    return ++*(int *)opaque == 2 ? 17 : 0;
}

Test(conf, hands_kafka_properties_to_librdkafka_without_the_prefix) {
    char errstr[256];
    cr_assert_eq(set("kafka.linger.ms", "5", errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(set("kafka.linger.ms", "9", errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(set("topic.prefix", "x.", errstr, sizeof(errstr)), OL_ERR_OK);
    kafka_seen_t seen = {0};
    cr_expect_eq(ol_conf_foreach_kafka(conf, collect, &seen), 0);
    cr_expect_str_eq(seen_value(&seen, "bootstrap.servers"), "127.0.0.1:19092", "defaults included");
    cr_expect_str_eq(seen_value(&seen, "linger.ms"), "9");
    for (int i = 0; i < seen.count; i++) {
        cr_expect_neq(strncmp(seen.names[i], "kafka.", 6), 0, "prefix left on %s", seen.names[i]);
        cr_expect_neq(strcmp(seen.names[i], "prefix"), 0, "topic.prefix is no kafka property");
    }
    cr_expect_eq(seen.count, 2);
    int calls = 0;
    cr_expect_eq(ol_conf_foreach_kafka(conf, stop_at_second, &calls), 17, "the callback's non-zero is returned");
    cr_expect_eq(calls, 2, "and stops the walk");
}

Test(conf, loads_a_file_with_comments_and_blank_lines) {
    char *path = write_temp("# a comment\n"
                            "\n"
                            "   \t\n"
                            "topic.partitions = 12\n"
                            "  # an indented comment\n"
                            "log.level=debug\n"
                            "topic.prefix =  test.  \n"
                            "kafka.linger.ms = 5\n"
                            "pg.conninfo = host=db port=5432 dbname=x\n"
                            "event.source = a#b"); /* no final newline */
    char errstr[256] = "";
    cr_assert_eq(ol_conf_load_file(conf, path, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ol_conf_int(conf, "topic.partitions"), 12);
    cr_expect_str_eq(ol_conf_str(conf, "log.level"), "debug");
    cr_expect_str_eq(ol_conf_str(conf, "topic.prefix"), "test.", "values are trimmed");
    cr_expect_str_eq(ol_conf_str(conf, "pg.conninfo"), "host=db port=5432 dbname=x", "'=' in a value kept");
    cr_expect_str_eq(ol_conf_str(conf, "event.source"), "a#b", "'#' inside a value is no comment");
    kafka_seen_t seen = {0};
    ol_conf_foreach_kafka(conf, collect, &seen);
    cr_expect_str_eq(seen_value(&seen, "linger.ms"), "5");
    remove_temp(path);
}

Test(conf, names_the_file_and_line_of_an_error) {
    static const olt_case_t cases[] = {
        {"topic.partitions = 3\n# ok\ntopic.partitions = zero\n",
         "line 3: property \"topic.partitions\": \"zero\" is not an integer"},
        {"\n\nno equals sign here\n", "line 3: expected \"name = value\""},
        {"log.level = info\nlog.levle = debug\n", "line 2: unknown property \"log.levle\""},
        {"log.level = loud\n", "line 1: property \"log.level\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = write_temp(cases[i].in);
        char errstr[512] = "";
        cr_expect_eq(ol_conf_load_file(conf, path, errstr, sizeof(errstr)), OL_ERR_CONFIG, "case %zu", i);
        cr_expect(strstr(errstr, path), "case %zu: the file is named: %s", i, errstr);
        cr_expect(strstr(errstr, cases[i].want), "case %zu: \"%s\" does not contain \"%s\"", i, errstr, cases[i].want);
        remove_temp(path);
    }
    char errstr[512] = "";
    cr_expect_eq(ol_conf_load_file(conf, "/nonexistent/orderlog.conf", errstr, sizeof(errstr)), OL_ERR_IO);
    cr_expect(strstr(errstr, "/nonexistent/orderlog.conf"), "%s", errstr);
}

Test(conf, reads_orderlog_environment_variables) {
    char *envp[] = {
        "PATH=/usr/bin",
        "ORDERLOG_TOPIC_PARTITIONS=12",
        "ORDERLOG_KAFKA_LINGER_MS=5",
        "ORDERLOG_STACK_KAFKA_PORT=19092",
        "ORDERLOG_CONFIG=/etc/orderlog.conf",
        "ORDERLOG_LOG_LEVEL=warn",
        "ORDERLOG_=x",
        "ORDERLOG_NOEQUALS",
        "orderlog_topic_prefix=lower.",
        "XORDERLOG_TOPIC_PREFIX=other.",
        NULL,
    };
    char errstr[256] = "";
    cr_assert_eq(ol_conf_load_env(conf, envp, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ol_conf_int(conf, "topic.partitions"), 12);
    cr_expect_str_eq(ol_conf_str(conf, "log.level"), "warn");
    cr_expect_str_eq(ol_conf_str(conf, "topic.prefix"), "orderlog.", "only ORDERLOG_ (upper case) variables");
    kafka_seen_t seen = {0};
    ol_conf_foreach_kafka(conf, collect, &seen);
    cr_expect_str_eq(seen_value(&seen, "linger.ms"), "5");
    cr_expect_eq(seen.count, 2, "ORDERLOG_STACK_* and ORDERLOG_CONFIG are not properties");
    cr_expect_null(seen_value(&seen, "port"));

    /* a bad value is an error naming the variable */
    char *bad[] = {"ORDERLOG_TOPIC_PARTITIONS=lots", NULL};
    cr_expect_eq(ol_conf_load_env(conf, bad, errstr, sizeof(errstr)), OL_ERR_CONFIG);
    cr_expect(strstr(errstr, "ORDERLOG_TOPIC_PARTITIONS"), "%s", errstr);
    cr_expect(strstr(errstr, "lots"), "%s", errstr);
    cr_expect_eq(ol_conf_load_env(conf, NULL, errstr, sizeof(errstr)), OL_ERR_OK, "no environment at all");
}

Test(conf, lets_flags_override_the_environment_override_the_file) {
    char *path = write_temp("topic.partitions = 2\nlog.level = debug\ntopic.prefix = file.\n");
    char *envp[] = {"ORDERLOG_LOG_LEVEL=warn", "ORDERLOG_TOPIC_PREFIX=env.", NULL};
    char errstr[256] = "";
    /* applied in the documented order: file, then environment, then flags */
    cr_assert_eq(ol_conf_load_file(conf, path, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(ol_conf_load_env(conf, envp, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_assert_eq(set("topic.prefix", "flag.", errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ol_conf_int(conf, "topic.partitions"), 2, "file over default");
    cr_expect_str_eq(ol_conf_str(conf, "log.level"), "warn", "environment over file");
    cr_expect_str_eq(ol_conf_str(conf, "topic.prefix"), "flag.", "flag over environment");
    cr_expect_eq(ol_conf_int(conf, "topic.replication.factor"), 1, "default where nothing is set");
    remove_temp(path);
}

/* ---- generated files ----------------------------------------------------- */

static char *generate(void (*writer)(FILE *)) {
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    cr_assert(fp);
    writer(fp);
    fclose(fp);
    return text;
}

Test(conf, writes_a_sample_that_loads_back_as_the_defaults) {
    char *sample = generate(ol_conf_write_sample);
    char *path = write_temp(sample);
    char errstr[256] = "";
    /* change everything first: loading the sample must not set anything */
    cr_assert_eq(set("topic.partitions", "99", errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_conf_load_file(conf, path, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(ol_conf_int(conf, "topic.partitions"), 99, "every line of the sample is commented");

    for (const ol_conf_prop_t *p = ol_conf_props(); p->name; p++) {
        char line[512];
        snprintf(line, sizeof(line), "\n#%s = %s\n", p->name, p->def);
        cr_expect(strstr(sample, line), "the sample lacks \"#%s = %s\"", p->name, p->def);
        cr_expect(strstr(sample, p->help), "the sample lacks the help of %s", p->name);
    }
    /* uncommenting every property line gives a file that loads */
    size_t n = strlen(sample);
    char *uncommented = ol_xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (sample[i] == '#' && (i == 0 || sample[i - 1] == '\n') && sample[i + 1] != ' ' && sample[i + 1] != '\n')
            continue; /* "#name = value" -> "name = value" */
        uncommented[o++] = sample[i];
    }
    uncommented[o] = '\0';
    char *path2 = write_temp(uncommented);
    ol_conf_t *fresh = ol_conf_new();
    cr_expect_eq(ol_conf_load_file(fresh, path2, errstr, sizeof(errstr)), OL_ERR_OK, "uncommented sample: %s", errstr);
    cr_expect_eq(ol_conf_int(fresh, "topic.partitions"), 6);
    ol_conf_destroy(fresh);
    remove_temp(path2);
    free(uncommented);
    remove_temp(path);
    free(sample);
}

Test(conf, writes_markdown_with_a_row_per_property) {
    char *md = generate(ol_conf_write_markdown);
    int rows = 0;
    for (const char *p = md; (p = strstr(p, "\n| `")); p++)
        rows++;
    int props = 0;
    for (const ol_conf_prop_t *p = ol_conf_props(); p->name; p++) {
        props++;
        char cell[256];
        snprintf(cell, sizeof(cell), "| `%s` |", p->name);
        cr_expect(strstr(md, cell), "no row for %s", p->name);
    }
    cr_expect_eq(rows, props);
    cr_expect(strstr(md, "`ORDERLOG_TOPIC_PARTITIONS`"), "environment names are shown");
    cr_expect(strstr(md, "integer [1, 10000]"), "ranges are shown");
    free(md);
}

/* docs/configuration.md and ops/orderlog.conf.sample are generated by
 * ops/gen-docs from the table; they must not drift from it. */
static void expect_generated(const char *rel, void (*writer)(FILE *), bool whole_file) {
    char *path = olt_path("ORDERLOG_SOURCE_DIR", rel);
    char *have = olt_read_file(path, NULL);
    cr_assert(have, "%s is missing: run ops/gen-docs", rel);
    char *want = generate(writer);
    bool ok = whole_file ? !strcmp(have, want) : strstr(have, want) != NULL;
    cr_expect(ok, "%s is out of date with the config table in common/domain/properties.c: run ops/gen-docs", rel);
    free(want);
    free(have);
    free(path);
}

Test(conf, sample_file_matches_the_table) {
    expect_generated("ops/orderlog.conf.sample", ol_conf_write_sample, true);
}

Test(conf, configuration_doc_matches_the_table) {
    char *path = olt_path("ORDERLOG_SOURCE_DIR", "docs/configuration.md");
    bool exists = access(path, F_OK) == 0;
    free(path);
    if (!exists)
        cr_skip_test("docs/configuration.md does not exist (yet): run ops/gen-docs");
    /* the doc has an introduction before the generated table */
    expect_generated("docs/configuration.md", ol_conf_write_markdown, false);
}
