/* ol_kafka_assign: assignments changed in quick succession on one consumer
 * handle, as decide's restorer (decide-snapshots read to its end, then
 * sale-events at once) and decide's group member (a retake after an aborted
 * transaction assigns the partitions it has, and the rebalance callback may
 * unassign them right after) do.
 *
 * With librdkafka 2.0 (Debian's) and a bare rd_kafka_assign(), the first
 * test aborts the process at its first round (rdkafka_assignment.c:
 * rd_kafka_assignment_partition_stopped: Assertion `rktp->rktp_started'):
 * the partitions assigned again are stopped a second time before the first
 * stop was answered (the reason: common/base/kafka.c, ol_kafka_assign). */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/kafka.h"
#include "helpers.h"

#define PARTITIONS 6
#define PER_PARTITION 3
#define ROUNDS 200
#define POLL_BOUND_MS 30000 /* a round reads its partitions to their end within this */

static char topics[2][160];

static void setup(void) {
    char prefix[128];
    ol_test_take_prefix(prefix, sizeof(prefix), "it_assign_", "");
    for (int t = 0; t < 2; t++) {
        snprintf(topics[t], sizeof(topics[t]), "%s%c", prefix, 'a' + t);
        ol_test_kafka_create_topic(topics[t], PARTITIONS, NULL, NULL);
        for (int p = 0; p < PARTITIONS; p++)
            for (int i = 0; i < PER_PARTITION; i++)
                ol_test_kafka_produce(topics[t], p, "k", 1, "v", 1, NULL);
    }
}

static void teardown(void) {
    const char *names[] = {topics[0], topics[1]};
    char group[200], members[200];
    snprintf(group, sizeof(group), "%s-group", topics[0]);
    snprintf(members, sizeof(members), "%s-members", topics[0]);
    const char *groups[] = {group, members};
    ol_test_kafka_delete_groups(groups, 2);
    ol_test_kafka_delete_topics(names, 2);
}

TestSuite(kafka_assign, .init = setup, .fini = teardown, .timeout = 300);

/* A consumer in the group <topic a>-<suffix>, reading committed records from
 * their start with an EOF per partition; rebalance: its callback (a group
 * member) or NULL (a reader that assigns). */
typedef void rebalance_fn(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                          void *opaque);

static rd_kafka_t *consumer(const char *suffix, rebalance_fn *rebalance) {
    char errstr[512], group[200];
    snprintf(group, sizeof(group), "%s-%s", topics[0], suffix);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", ol_test_kafka_bootstrap()},
                              {"group.id", group},
                              {"enable.partition.eof", "true"},
                              {"enable.auto.commit", "false"},
                              {"isolation.level", "read_committed"},
                              {"partition.assignment.strategy", "range"},
                              {"auto.offset.reset", "earliest"},
                              {"fetch.wait.max.ms", "10"}};
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        cr_assert_eq(rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr)), RD_KAFKA_CONF_OK, "%s",
                     errstr);
    if (rebalance)
        rd_kafka_conf_set_rebalance_cb(conf, rebalance);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert(rk, "%s", errstr);
    return rk;
}

static rd_kafka_t *reader(void) {
    return consumer("group", NULL);
}

static rd_kafka_topic_partition_list_t *all_of(const char *topic) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    return l;
}

/* Polls until every partition of topic reached its end; returns the records
 * of topic read (those of any other topic fail the test). */
static int read_to_end(rd_kafka_t *rk, const char *topic, int round) {
    bool eof[PARTITIONS] = {false};
    int eofs = 0, records = 0;
    long long deadline = ol_test_now_ms() + POLL_BOUND_MS;
    while (eofs < PARTITIONS) {
        cr_assert_lt(ol_test_now_ms(), deadline, "round %d: %s not read to its end within %d ms (%d of %d partitions)",
                     round, topic, POLL_BOUND_MS, eofs, PARTITIONS);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        cr_assert(m->rkt && !strcmp(rd_kafka_topic_name(m->rkt), topic), "round %d: a record of %s while reading %s",
                  round, m->rkt ? rd_kafka_topic_name(m->rkt) : "?", topic);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!eof[m->partition])
                eofs++;
            eof[m->partition] = true;
        } else {
            cr_assert_eq(m->err, 0, "round %d: %s", round, rd_kafka_message_errstr(m));
            records++;
        }
        rd_kafka_message_destroy(m);
    }
    return records;
}

Test(kafka_assign, the_partitions_assigned_again_then_unassigned_at_once) {
    rd_kafka_t *rk = reader();
    rd_kafka_topic_partition_list_t *l = all_of(topics[0]);
    for (int round = 0; round < ROUNDS; round++) {
        cr_assert_eq(ol_kafka_assign(rk, l), 0);
        cr_assert_eq(read_to_end(rk, topics[0], round), PARTITIONS * PER_PARTITION);
        /* a retake: the same partitions again (their fetchers stopped and
         * started again), then an unassign at once (a revocation) */
        cr_assert_eq(ol_kafka_assign(rk, l), 0);
        cr_assert_eq(ol_kafka_assign(rk, NULL), 0);
    }
    /* and what was assigned last still reads from its start */
    cr_assert_eq(ol_kafka_assign(rk, l), 0);
    cr_assert_eq(read_to_end(rk, topics[0], ROUNDS), PARTITIONS * PER_PARTITION);
    ol_kafka_assign(rk, NULL);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}

Test(kafka_assign, two_topics_read_in_turn_on_one_handle_and_again_after_a_retake) {
    rd_kafka_t *rk = reader();
    rd_kafka_topic_partition_list_t *a = all_of(topics[0]), *b = all_of(topics[1]);
    for (int round = 0; round < ROUNDS; round++) {
        /* decide's restore: decide-snapshots to its end, then sale-events
         * from where the snapshot is, at once */
        cr_assert_eq(ol_kafka_assign(rk, a), 0);
        cr_assert_eq(read_to_end(rk, topics[0], round), PARTITIONS * PER_PARTITION);
        cr_assert_eq(ol_kafka_assign(rk, NULL), 0);
        cr_assert_eq(ol_kafka_assign(rk, b), 0);
        cr_assert_eq(read_to_end(rk, topics[1], round), PARTITIONS * PER_PARTITION);
        /* an abort: restored again at once, each reader replaced by the next
         * without an unassign between */
        cr_assert_eq(ol_kafka_assign(rk, a), 0);
        cr_assert_eq(ol_kafka_assign(rk, b), 0);
        cr_assert_eq(ol_kafka_assign(rk, b), 0);
        cr_assert_eq(ol_kafka_assign(rk, NULL), 0);
    }
    rd_kafka_topic_partition_list_destroy(a);
    rd_kafka_topic_partition_list_destroy(b);
    rd_kafka_destroy(rk);
}

/* ---- closing a group member whose rebalance callback uses ol_kafka_assign ----
 * rd_kafka_consumer_close() runs the callback's unassign on the closing
 * thread; once it is served the group may end and purge its op queue, and
 * an rd_kafka_assignment() caught in the purge is never answered: the close
 * waited for ever (guard, 90 s after SIGTERM, in a CI run). Each round joins
 * the group, reads, and closes on a thread of its own, bounded. */
#define CLOSE_ROUNDS 40
#define CLOSE_BOUND_MS 20000

static void member_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                             void *opaque) {
    (void)opaque;
    ol_kafka_assign(rk, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? parts : NULL);
    /* and what is left, asked again and again: each ask a round trip that
     * the end of the group can drop (with bare rd_kafka_assignment() calls
     * here the close hung at its first round) */
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        for (int i = 0; i < 500; i++)
            ol_kafka_assigned_count(rk);
}

static void *close_member(void *arg) {
    ol_kafka_consumer_close(arg);
    return arg;
}

Test(kafka_assign, a_member_closes_while_its_callback_unassigns) {
    for (int round = 0; round < CLOSE_ROUNDS; round++) {
        rd_kafka_t *rk = consumer("members", member_rebalance);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(sub, topics[0], RD_KAFKA_PARTITION_UA);
        cr_assert_eq(rd_kafka_subscribe(rk, sub), 0);
        rd_kafka_topic_partition_list_destroy(sub);
        /* joined: the group's assignment read to its end */
        cr_assert_eq(read_to_end(rk, topics[0], round), PARTITIONS * PER_PARTITION);
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, close_member, rk), 0);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CLOSE_BOUND_MS / 1000;
        int rc = pthread_timedjoin_np(t, NULL, &until);
        cr_assert_eq(rc, 0, "round %d: rd_kafka_consumer_close did not return within %d ms", round, CLOSE_BOUND_MS);
        rd_kafka_destroy(rk);
    }
}

/* ---- each partition's records to a queue of the application ----
 * A rebuild pass forwards each partition's queue to its reader's. Forwarded
 * after the assign, the records fetched in between went to the consumer's
 * queue, which nobody reads: a pass lost the first records of a partition
 * (CI, rebuild on a loaded machine). Here the reader is slow on purpose:
 * it starts reading well after the fetches began. */
#define SLOW_READER_MS 1500

Test(kafka_assign, records_fetched_before_the_reader_reads_are_in_its_partitions_queues) {
    rd_kafka_t *rk = reader();
    rd_kafka_topic_partition_list_t *l = all_of(topics[0]);
    rd_kafka_queue_t *queues[PARTITIONS], *q[2] = {rd_kafka_queue_new(rk), rd_kafka_queue_new(rk)};
    for (int p = 0; p < PARTITIONS; p++)
        queues[p] = q[p % 2]; /* two readers, three partitions each */
    /* the leaders known: the fetches start right after the assign */
    ol_kafka_know_leaders(rk, topics[0]);
    cr_assert_eq(ol_kafka_assign_to_queues(rk, l, queues), 0);
    usleep(SLOW_READER_MS * 1000);
    int records[PARTITIONS] = {0}, eofs = 0;
    long long deadline = ol_test_now_ms() + POLL_BOUND_MS;
    while (eofs < PARTITIONS && ol_test_now_ms() < deadline)
        for (int i = 0; i < 2; i++) {
            rd_kafka_message_t *m = rd_kafka_consume_queue(q[i], 100);
            if (!m)
                continue;
            cr_assert_eq(m->partition % 2, i, "a record of partition %d in the queue of the other reader",
                         (int)m->partition);
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
                eofs++;
            else if (!m->err)
                records[m->partition]++;
            rd_kafka_message_destroy(m);
        }
    cr_expect_eq(eofs, PARTITIONS, "%d of %d partitions read to their end within %d ms", eofs, PARTITIONS,
                 POLL_BOUND_MS);
    for (int p = 0; p < PARTITIONS; p++)
        cr_expect_eq(records[p], PER_PARTITION, "partition %d: %d of its %d records in its queue", p, records[p],
                     PER_PARTITION);
    /* and none in the consumer's queue */
    rd_kafka_message_t *stray = rd_kafka_consumer_poll(rk, 200);
    cr_expect_null(stray, "a record of partition %d in the consumer's queue", stray ? (int)stray->partition : -1);
    if (stray)
        rd_kafka_message_destroy(stray);
    ol_kafka_assign(rk, NULL);
    rd_kafka_queue_destroy(q[0]);
    rd_kafka_queue_destroy(q[1]);
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
}
