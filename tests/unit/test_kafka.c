/* The Kafka client profiles and the placement rule (no broker needed). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "common/base/conf.h"
#include "common/base/kafka.h"
#include "testutil.h"
#include "common/domain/properties.h"

/* Kafka's own vectors (Utils.murmur2 in the Java client's tests). */
Test(placement, murmur2_matches_the_java_client) {
    static const struct {
        const char *key;
        int32_t hash;
    } v[] = {{"21", -973932308},
             {"foobar", -790332482},
             {"a-little-bit-long-string", -985981536},
             {"a-little-bit-longer-string", -1486304829},
             {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
             {"abc", 479470107}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        for (int32_t n = 1; n <= 12; n++)
            cr_expect_eq(ol_kafka_key_partition(v[i].key, strlen(v[i].key), n),
                         (int32_t)(((uint32_t)v[i].hash & 0x7fffffffu) % (uint32_t)n), "key %s over %d partitions",
                         v[i].key, n);
}

Test(placement, names_key_partitions_and_rule_when_misplaced) {
    char errstr[512];
    rd_kafka_message_t rkm = {.key = "abc", .key_len = 3, .partition = 3};
    cr_expect_eq(ol_kafka_check_placement(&rkm, 6, errstr, sizeof(errstr)), OL_ERR_OK);
    rkm.partition = 1;
    cr_assert_eq(ol_kafka_check_placement(&rkm, 6, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "key \"abc\" is on partition 1") && strstr(errstr, "belongs on partition 3") &&
                  strstr(errstr, "murmur2") && strstr(errstr, "6 partitions"),
              "%s", errstr);
    rd_kafka_message_t nokey = {.partition = 0};
    cr_assert_eq(ol_kafka_check_placement(&nokey, 6, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "has no key"), "%s", errstr);
}

static char *conf_get(rd_kafka_conf_t *kconf, const char *name) {
    static char buf[256];
    size_t n = sizeof(buf);
    buf[0] = '\0';
    rd_kafka_conf_get(kconf, name, buf, &n);
    return buf;
}

Test(profiles, every_producer_places_keys_with_murmur2) {
    ol_conf_t *conf = ol_conf_new();
    char errstr[512];
    for (int p = 0; p < OL_KAFKA_NPROFILES; p++) {
        rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, (ol_kafka_profile_t)p, "t", NULL, errstr, sizeof(errstr));
        cr_assert(kconf, "%s", errstr);
        if (p == OL_KAFKA_PRODUCER || p == OL_KAFKA_TXN_PRODUCER) {
            cr_expect_str_eq(conf_get(kconf, "partitioner"), "murmur2_random", "%s", ol_kafka_profile_name(p));
            cr_expect_str_eq(conf_get(kconf, "enable.idempotence"), "true");
        }
        /* a transaction begun while the coordinator completes the last one
         * is retried after 10 ms, not librdkafka's 100 */
        if (p == OL_KAFKA_TXN_PRODUCER)
            cr_expect_str_eq(conf_get(kconf, "retry.backoff.ms"), "10");
        if (p == OL_KAFKA_CONSUMER || p == OL_KAFKA_READER) {
            cr_expect_str_eq(conf_get(kconf, "isolation.level"), "read_committed");
            cr_expect_str_eq(conf_get(kconf, "enable.auto.commit"), "false");
        }
        cr_expect_str_eq(conf_get(kconf, "client.id"), "t");
        /* every client leaves a dead leader within seconds of the cluster
         * moving its partitions (librdkafka's default: 5 min) */
        cr_expect_str_eq(conf_get(kconf, "topic.metadata.refresh.interval.ms"), "5000", "%s", ol_kafka_profile_name(p));
        rd_kafka_conf_destroy(kconf);
    }
    ol_conf_destroy(conf);
}

Test(profiles, tuning_then_user_properties_override_the_profile) {
    ol_conf_t *conf = ol_conf_new();
    char errstr[512];
    cr_assert_eq(ol_conf_set(conf, "kafka.linger.ms", "7", errstr, sizeof(errstr)), OL_ERR_OK);
    const char *tuning[] = {"linger.ms", "3", "auto.offset.reset", "latest", NULL};
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, OL_KAFKA_READER, "t", tuning, errstr, sizeof(errstr));
    cr_assert(kconf, "%s", errstr);
    cr_expect_str_eq(conf_get(kconf, "linger.ms"), "7");
    cr_expect_str_eq(conf_get(kconf, "auto.offset.reset"), "largest"); /* librdkafka's name for latest */
    rd_kafka_conf_destroy(kconf);
    ol_conf_destroy(conf);
}

Test(profiles, refuses_user_properties_that_break_the_contract) {
    static const char *bad[][2] = {{"kafka.partitioner", "consistent_random"},
                                   {"kafka.isolation.level", "read_uncommitted"},
                                   {"kafka.enable.idempotence", "false"},
                                   {"kafka.enable.auto.commit", "true"},
                                   {"kafka.group.id", "mine"},
                                   {"kafka.transactional.id", "x"}};
    char errstr[512];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ol_conf_t *conf = ol_conf_new();
        cr_assert_eq(ol_conf_set(conf, bad[i][0], bad[i][1], errstr, sizeof(errstr)), OL_ERR_OK);
        rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, OL_KAFKA_PRODUCER, "t", NULL, errstr, sizeof(errstr));
        cr_expect_null(kconf, "%s=%s accepted", bad[i][0], bad[i][1]);
        if (kconf)
            rd_kafka_conf_destroy(kconf);
        else
            cr_expect(strstr(errstr, bad[i][0]) && strstr(errstr, bad[i][1]), "%s", errstr);
        ol_conf_destroy(conf);
    }
    ol_conf_t *conf = ol_conf_new();
    cr_assert_eq(ol_conf_set(conf, "kafka.partitioner", "murmur2_random", errstr, sizeof(errstr)), OL_ERR_OK);
    rd_kafka_conf_t *kconf = ol_kafka_conf_new(conf, OL_KAFKA_PRODUCER, "t", NULL, errstr, sizeof(errstr));
    cr_expect_not_null(kconf, "%s", errstr);
    if (kconf)
        rd_kafka_conf_destroy(kconf);
    ol_conf_destroy(conf);
}

Test(profiles, shown_with_secrets_masked) {
    ol_conf_t *conf = ol_conf_new();
    char errstr[512], *buf = NULL;
    size_t len = 0;
    cr_assert_eq(ol_conf_set(conf, "kafka.sasl.password", "hunter2", errstr, sizeof(errstr)), OL_ERR_OK);
    cr_assert_eq(ol_conf_set(conf, "kafka.acks", "1", errstr, sizeof(errstr)), OL_ERR_OK);
    FILE *fp = open_memstream(&buf, &len);
    ol_kafka_profile_write(conf, OL_KAFKA_PRODUCER, fp);
    fclose(fp);
    cr_expect(strstr(buf, "partitioner = murmur2_random  # profile producer"), "%s", buf);
    cr_expect(strstr(buf, "acks = 1  # kafka.acks") && !strstr(buf, "acks = all"), "%s", buf);
    cr_expect(!strstr(buf, "hunter2") && strstr(buf, "sasl.password = ***  # kafka.sasl.password"), "%s", buf);
    free(buf);
    ol_conf_destroy(conf);
}

/* The partitioner and librdkafka configurations live in common/base/kafka.c
 * only: a role that made its own would drift again. */
static void scan_dir(const char *rel) {
    char *dir = olt_path("ORDERLOG_SOURCE_DIR", rel);
    DIR *d = opendir(dir);
    cr_assert(d, "cannot open %s", dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!olt_has_suffix(de->d_name, ".c") && !olt_has_suffix(de->d_name, ".h"))
            continue;
        if (!strcmp(rel, "common/base") && !strncmp(de->d_name, "kafka.", 6))
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        char *src = olt_read_file(path, NULL);
        cr_assert(src, "cannot read %s", path);
        cr_expect(!strstr(src, "\"partitioner\""), "%s/%s sets the partitioner itself", rel, de->d_name);
        cr_expect(!strstr(src, "rd_kafka_conf_new("), "%s/%s makes a librdkafka configuration without a profile", rel,
                  de->d_name);
        cr_expect(!strstr(src, "rd_kafka_new("),
                  "%s/%s makes a librdkafka handle without ol_kafka_handle_new (its "
                  "errors unredacted)",
                  rel, de->d_name);
        free(src);
    }
    closedir(d);
    free(dir);
}

Test(profiles, roles_make_no_kafka_configuration_of_their_own) {
    scan_dir("common/base");
    scan_dir("common/domain");
    scan_dir("ops/admin");
    scan_dir("producers");
    scan_dir("consumers");
}

/* The quick start printed librdkafka's "Coordinator load in progress:
 * retrying" of a broker just started as warnings. */
Test(kafka, transient_coordinator_warnings_are_info_and_the_rest_keeps_its_level) {
    cr_expect_eq(ol_kafka_log_level(4, "GETPID: [thrd:main]: Failed to acquire idempotence PID from broker "
                                       "127.0.0.1:19092/1: Broker: Coordinator load in progress: retrying"),
                 OL_LOG_INFO);
    cr_expect_eq(ol_kafka_log_level(4, "Group coordinator lookup failed: Broker: Coordinator not available: retrying"),
                 OL_LOG_INFO);
    cr_expect_eq(ol_kafka_log_level(4, "Coordinator load in progress"), OL_LOG_WARN); /* not retried */
    cr_expect_eq(ol_kafka_log_level(4, "127.0.0.1:19092/1: Connect to ipv4#127.0.0.1:19092 failed"), OL_LOG_WARN);
    cr_expect_eq(ol_kafka_log_level(3, "Coordinator load in progress: retrying"), OL_LOG_ERROR);
    cr_expect_eq(ol_kafka_log_level(6, "anything"), OL_LOG_INFO);
    cr_expect_eq(ol_kafka_log_level(7, "anything"), OL_LOG_DEBUG);
}
