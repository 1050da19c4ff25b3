/* A broker crash in the middle of a flash sale, on a 3-broker cluster.
 *
 * The test starts a 3-node KRaft cluster of its own through ops/stack
 * (ORDERLOG_STACK_BROKERS=3 with ports and a data folder of its own, so the
 * suite's single broker keeps running beside it), creates the topics with
 * replication factor 3 (min ISR 2), runs decide, guard and project as
 * ops/quickstart does and drives a sale with loadgen. Mid-sale it kills -9
 * the broker that coordinates decide's transactions and restarts it
 * DOWN_MS later: the broker that coordinates the transactions of decide's
 * worker 0 and is the cluster's active controller too, the longest failover
 * one broker's crash makes (a new controller is elected, then fences the
 * dead broker once its session expires, then leaders move), found by picking
 * decide.instance so that worker 0 is coordinated by the active controller.
 * Then:
 *  - loadgen saw exactly one decision for every request;
 *  - no role exited: one that does is reported with the end of its log, then
 *    started again (as an operator would) so that the rest is still checked;
 *  - the longest pause in decisions (between the record times of two
 *    BuyAccepted or BuyRejected in a row on one partition of sale-events)
 *    stays below PAUSE_BOUND_MS, or AFTER_BACK_MS after the killed broker
 *    is back when its restart took longer than planned (a loaded machine):
 *    Kafka's own failover can wait for it (seen: the markers of a
 *    transaction whose coordinator moved, written only once the broker was
 *    back, holding read_committed readers and committed-offset fetches);
 *  - ops/oracle passes on the projection and `rebuild --verify-only` finds
 *    it equal to a replay of the topics.
 *
 * The coordinator of a transactional id is the leader of partition
 * abs(String.hashCode(id)) % partitions of __transaction_state, as Kafka
 * places it; the test confirms it with the "Initialized transactionalId"
 * line of that broker's log. (Kafka 3.9.1's TransactionsCommand lives in the
 * kafka-tools artifact, which the broker's jars do not include.)
 *
 * Three more JVMs and a sale take the machine's cores: ctest runs it alone
 * (RUN_SERIAL for _serial_ names). The cluster is killed and its data
 * removed whatever happens (the suite's .fini). Ports: 6 from
 * $ORDERLOG_TEST_CLUSTER_PORT (default 19592), moved up by 10 while any is
 * taken. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define NODES 3
#define SALE_COUNT 30000
#define SALE_RATE 1000
#define KILL_AFTER_LOGS 2 /* loadgen logs its progress every 5 s: kill ~10 s into the sale */
#define DOWN_MS 15000
#define PAUSE_BOUND_MS 30000 /* a coordinator failover, an aborted transaction and its retry */
#define AFTER_BACK_MS 10000
#define MAX_RESTARTS 3

typedef struct role_s {
    const char *name;
    const char *args;
    ol_test_bg_t *bg;
    int runs;
    char log[700]; /* stderr of the current run */
} role_t;

static char decide_args[512]; /* "decide -X decide.instance=..." */
static role_t roles[] = {
    {"decide", decide_args, NULL, 0, ""},
    {"guard", "guard -X guard.window.ms=10000 -X guard.ip.max=300 -X guard.user.max=300 -X guard.ban.ms=600000", NULL,
     0, ""},
    {"project", "project", NULL, 0, ""},
};
#define NROLES (sizeof(roles) / sizeof(roles[0]))

static char dir[512], cluster_dir[600], prefix[128], db[512], bootstrap[256];
static int base_port;
static bool cluster_started;
static ol_test_bg_t *loadgen, *restarter;
static long long kill_ms = -1; /* wall clock of the kill */
static char failures[16384];   /* what went wrong with the roles, reported at the end */

/* The environment that points ops/stack at the test's cluster. */
static const char *stack_env(void) {
    static char env[1024];
    snprintf(env, sizeof(env),
             "ORDERLOG_STACK_BROKERS=3 ORDERLOG_STACK_CLUSTER_PORT=%d ORDERLOG_STACK_CLUSTER_CONTROLLER_PORT=%d "
             "ORDERLOG_STACK_CLUSTER_DIR=%s ORDERLOG_STACK_CLUSTER_HEAP='-Xms256m -Xmx512m'",
             base_port, base_port + NODES, cluster_dir);
    return env;
}

static int stack(const char *args, char **out) {
    return ol_test_stack(stack_env(), args, out);
}

static bool port_taken(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool taken = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return taken;
}

static int pick_ports(void) {
    const char *env = getenv("ORDERLOG_TEST_CLUSTER_PORT");
    int start = env && *env ? atoi(env) : 19592;
    for (int base = start; base < start + 200; base += 10) {
        bool free_ = true;
        for (int p = base; p < base + 2 * NODES && free_; p++)
            free_ = !port_taken(p);
        if (free_)
            return base;
    }
    cr_assert_fail("no 6 free ports from %d to %d", start, start + 200);
    return 0;
}

/* Every orderlog run here: the cluster, the test's prefix and database. */
static const char *fixed_args(void) {
    static char args[2048];
    char *ci = ol_test_shell_quote(*db ? db : ol_test_pg_conninfo());
    snprintf(args, sizeof(args), "-X kafka.bootstrap.servers=%s -X topic.prefix=%s -X pg.conninfo=%s", bootstrap,
             prefix, ci);
    free(ci);
    return args;
}

static void role_start(role_t *r) {
    r->runs++;
    snprintf(r->log, sizeof(r->log), "%s/%s.%d.log", dir, r->name, r->runs);
    r->bg = ol_test_orderlog_bg("%s %s >%s/%s.%d.out 2>%s", r->args, fixed_args(), dir, r->name, r->runs, r->log);
}

static void stop_role(role_t *r, int *rc) {
    *rc = -2;
    if (!r->bg)
        return;
    ol_test_bg_signal(r->bg, SIGTERM);
    *rc = ol_test_bg_wait(r->bg, 60000);
    ol_test_bg_free(r->bg);
    r->bg = NULL;
}

static void teardown(void) {
    int rc;
    for (size_t i = 0; i < NROLES; i++)
        stop_role(&roles[i], &rc);
    ol_test_bg_free(loadgen);
    ol_test_bg_free(restarter);
    loadgen = restarter = NULL;
    if (cluster_started) {
        char *out = NULL;
        rc = stack("kafka-stop kill", &out);
        cr_expect_eq(rc, 0, "ops/stack kafka-stop kill: exit %d\n%s", rc, out);
        free(out);
        cluster_started = false;
    }
    if (*db)
        ol_test_pg_drop_db(db);
    if (*dir)
        ol_test_rmtree(dir);
}

TestSuite(faults_cluster, .fini = teardown, .timeout = 600);

/* The warnings and errors at the end of a log, one line each, cut short. */
static char *log_tail(const char *path, int lines) {
    char *text = ol_test_read_file(path);
    if (!text)
        return strdup("(no log)");
    const char *picked[64];
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        if (!strstr(line, "\"level\":\"info\"") && !strstr(line, "\"level\":\"debug\"") &&
            !strstr(line, "Connection refused") && !strstr(line, ": Disconnected")) {
            if (n == lines)
                memmove(picked, picked + 1, sizeof(picked[0]) * (size_t)--n);
            picked[n++] = line;
        }
    size_t size = 1;
    for (int i = 0; i < n; i++)
        size += strlen(picked[i]) + 8;
    char *out = calloc(1, size);
    for (int i = 0; i < n; i++) {
        strcat(out, "    ");
        strncat(out, picked[i], 320);
        strcat(out, "\n");
    }
    free(text);
    return out;
}

/* Every role still running; one that exited is reported (with the end of
 * its log) and started again, so that the sale can finish and the rest be
 * checked. */
static void check_roles(void) {
    for (size_t i = 0; i < NROLES; i++) {
        role_t *r = &roles[i];
        int rc = ol_test_bg_wait(r->bg, 0);
        if (rc == -1)
            continue;
        char *tail = log_tail(r->log, 12);
        char line[4096];
        snprintf(line, sizeof(line),
                 "%s exited with status %d at %+.1f s from the kill (run %d); its last warnings:\n%s", r->name, rc,
                 kill_ms < 0 ? 0.0 : (double)(ol_test_wall_ms() - kill_ms) / 1000, r->runs, tail);
        fprintf(stderr, "test: %s", line);
        strncat(failures, line, sizeof(failures) - strlen(failures) - 1);
        free(tail);
        ol_test_bg_free(r->bg);
        r->bg = NULL;
        cr_assert_lt(r->runs, MAX_RESTARTS, "%s exited %d times", r->name, r->runs);
        role_start(r);
    }
}

/* Watches the roles for ms, or until bg (when not NULL) exits; bg's status. */
static int watch(int ms, ol_test_bg_t *bg) {
    long long until = ol_test_now_ms() + ms;
    while (ol_test_now_ms() < until) {
        check_roles();
        if (bg) {
            int rc = ol_test_bg_wait(bg, 0);
            if (rc != -1)
                return rc;
        }
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int count_in_file(const char *path, const char *needle) {
    char *text = ol_test_read_file(path);
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(text);
    return n;
}

/* Java's String.hashCode of an ASCII string. */
static int32_t java_hash(const char *s) {
    uint32_t h = 0;
    for (; *s; s++)
        h = 31 * h + (unsigned char)*s;
    return (int32_t)h;
}

static rd_kafka_t *admin(void) {
    char errstr[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    cr_assert(rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    cr_assert(rk, "%s", errstr);
    return rk;
}

#define TXN_PARTITIONS_MAX 1024

/* The leader of every partition of __transaction_state (-1: none yet); their
 * count. */
static int txn_leaders(int leaders[TXN_PARTITIONS_MAX]) {
    rd_kafka_t *rk = admin();
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, "__transaction_state", NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, 15000);
    cr_assert(!kerr && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0 &&
                  md->topics[0].partition_cnt <= TXN_PARTITIONS_MAX,
              "no metadata of __transaction_state: %s", rd_kafka_err2str(kerr));
    int n = md->topics[0].partition_cnt;
    for (int i = 0; i < n; i++)
        leaders[i] = -1;
    for (int i = 0; i < n; i++)
        if (md->topics[0].partitions[i].id >= 0 && md->topics[0].partitions[i].id < n)
            leaders[md->topics[0].partitions[i].id] = md->topics[0].partitions[i].leader;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return n;
}

/* The partition of __transaction_state that holds txid, as Kafka places it. */
static int txn_partition(const char *txid, int partitions) {
    int32_t h = java_hash(txid);
    return (h == INT32_MIN ? 0 : abs(h)) % partitions;
}

/* The broker coordinating transactional id txid and its partition of
 * __transaction_state. */
static int coordinator_of(const char *txid, int *partition) {
    int leaders[TXN_PARTITIONS_MAX];
    int n = txn_leaders(leaders);
    *partition = txn_partition(txid, n);
    return leaders[*partition];
}

/* Makes __transaction_state exist (a transactional producer's first
 * init_transactions creates it), so that its leaders are known before
 * decide starts. */
static void make_transaction_state(void) {
    char errstr[512], txid[300];
    snprintf(txid, sizeof(txid), "%sprobe", prefix);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    cr_assert(rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK &&
                  rd_kafka_conf_set(c, "transactional.id", txid, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK &&
                  rd_kafka_conf_set(c, "log_level", "3", errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK,
              "%s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    cr_assert(rk, "%s", errstr);
    rd_kafka_error_t *e = rd_kafka_init_transactions(rk, 60000);
    cr_assert(!e, "init_transactions on the new cluster: %s", e ? rd_kafka_error_string(e) : "");
    rd_kafka_destroy(rk);
}

/* The active controller: the leader of the highest epoch in the nodes'
 * quorum-state files (-1 when none says). */
static int active_controller(void) {
    int leader = -1;
    long long epoch = -1;
    for (int node = 1; node <= NODES; node++) {
        char path[800];
        snprintf(path, sizeof(path), "%s/node-%d/data/__cluster_metadata-0/quorum-state", cluster_dir, node);
        json_t *j = json_load_file(path, 0, NULL);
        json_t *id = json_object_get(j, "leaderId"), *ep = json_object_get(j, "leaderEpoch");
        if (json_is_integer(id) && json_is_integer(ep) && json_integer_value(ep) > epoch &&
            json_integer_value(id) >= 1) {
            epoch = json_integer_value(ep);
            leader = (int)json_integer_value(id);
        }
        json_decref(j);
    }
    return leader;
}

/* A decide.instance whose worker 0 is coordinated by broker node. */
static void pick_instance(int node, char *out, size_t out_size) {
    int leaders[TXN_PARTITIONS_MAX];
    int n = txn_leaders(leaders);
    for (int k = 0; k < 10000; k++) {
        char txid[300];
        snprintf(out, out_size, "f%d", k);
        snprintf(txid, sizeof(txid), "%sdecide-%s-0", prefix, out);
        if (leaders[txn_partition(txid, n)] == node)
            return;
    }
    cr_assert_fail("no decide.instance f0..f9999 whose worker 0 is coordinated by broker %d", node);
}

/* The line of a broker's log saying it initialized txid's producer, or NULL (new). */
static char *coordinator_log_line(int node, const char *txid) {
    char path[800], needle[512];
    snprintf(path, sizeof(path), "%s/node-%d/logs/server.log", cluster_dir, node);
    snprintf(needle, sizeof(needle), "Initialized transactionalId %s with", txid);
    char *text = ol_test_read_file(path);
    char *hit = text ? strstr(text, needle) : NULL, *line = NULL;
    if (hit) {
        while (hit > text && hit[-1] != '\n')
            hit--;
        line = strndup(hit, strcspn(hit, "\n"));
    }
    free(text);
    return line;
}

typedef struct pause_s {
    long long ms, from; /* the longest gap between two decisions in a row on a partition, and its start */
    int partition;
    size_t decisions;
} pause_t;

/* The longest pause between two decisions (BuyAccepted, BuyRejected) in a
 * row on one partition of sale-events (read_committed), by record times. */
static pause_t longest_pause(void) {
    char errstr[512], topic[256], group[300];
    snprintf(topic, sizeof(topic), "%ssale-events", prefix);
    snprintf(group, sizeof(group), "%stest-pause", prefix);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    const char *props[] = {"bootstrap.servers",
                           bootstrap,
                           "group.id",
                           group,
                           "enable.auto.commit",
                           "false",
                           "isolation.level",
                           "read_committed",
                           "enable.partition.eof",
                           "true",
                           NULL};
    for (const char **p = props; *p; p += 2)
        cr_assert(rd_kafka_conf_set(c, p[0], p[1], errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK, "%s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof(errstr));
    cr_assert(rk, "%s", errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    cr_assert(!rd_kafka_metadata(rk, 0, rkt, &md, 15000) && md->topic_cnt == 1 && md->topics[0].partition_cnt > 0);
    int nparts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    cr_assert(!rd_kafka_assign(rk, parts));
    rd_kafka_topic_partition_list_destroy(parts);
    pause_t pause = {0, 0, -1, 0};
    size_t decisions = 0;
    long long *last = calloc((size_t)nparts, sizeof(*last));
    int eofs = 0;
    long long deadline = ol_test_now_ms() + 120000;
    while (eofs < nparts && ol_test_now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eofs++;
        } else if (!m->err) {
            rd_kafka_headers_t *h = NULL;
            const void *v;
            size_t len;
            if (!rd_kafka_message_headers(m, &h) && !rd_kafka_header_get_last(h, "ce_type", &v, &len) &&
                ((len == strlen("orderlog.BuyAccepted") && !memcmp(v, "orderlog.BuyAccepted", len)) ||
                 (len == strlen("orderlog.BuyRejected") && !memcmp(v, "orderlog.BuyRejected", len)))) {
                long long t = rd_kafka_message_timestamp(m, NULL);
                if (last[m->partition] && t - last[m->partition] > pause.ms)
                    pause = (pause_t){t - last[m->partition], last[m->partition], m->partition, 0};
                if (t > last[m->partition])
                    last[m->partition] = t;
                decisions++;
            }
        }
        rd_kafka_message_destroy(m);
    }
    cr_assert_eq(eofs, nparts, "could not read %s to its end within 120 s", topic);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(last);
    pause.decisions = decisions;
    return pause;
}

static void run_ok(const char *what, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_ok(const char *what, const char *fmt, ...) {
    va_list ap;
    char *cmd, *out = NULL;
    va_start(ap, fmt);
    cr_assert(vasprintf(&cmd, fmt, ap) >= 0);
    va_end(ap);
    int rc = ol_test_runf(&out, NULL, "%s 2>&1", cmd);
    cr_assert_eq(rc, 0, "%s: exit %d\n%s", what, rc, out);
    free(out);
    free(cmd);
}

Test(faults_cluster, decide_coordinator_killed_mid_sale_and_restarted) {
    ol_test_tmpdir(dir, sizeof(dir));
    snprintf(cluster_dir, sizeof(cluster_dir), "%s/cluster", dir);
    snprintf(prefix, sizeof(prefix), "it_faults_%ld_", (long)getpid());
    base_port = pick_ports();
    snprintf(bootstrap, sizeof(bootstrap), "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", base_port, base_port + 1,
             base_port + 2);
    long long t0 = ol_test_now_ms();

    /* the cluster, the topics (replication factor 3), the database, the catalog */
    char *out = NULL;
    cluster_started = true;
    int rc = stack("kafka-start", &out);
    cr_assert_eq(rc, 0, "ops/stack --brokers 3 kafka-start: exit %d\n%s", rc, out);
    free(out);
    fprintf(stderr, "test: 3-broker cluster on %s up in %.1f s (data in %s)\n", bootstrap,
            (double)(ol_test_now_ms() - t0) / 1000, cluster_dir);
    ol_test_pg_scratch_db("faults_cluster", db, sizeof(db));
    char *bin = ol_test_shell_quote(ol_test_bin());
    run_ok("topics create", "%s topics create -X topic.replication.factor=3 %s", bin, fixed_args());
    run_ok("migrate", "%s migrate %s", bin, fixed_args());
    run_ok("publish the catalog", "%s/ops/sample-events catalog | %s publish %s", ol_test_src_dir(), bin, fixed_args());

    /* the broker to kill: the active controller; worker 0 of decide gets it
     * as its transaction coordinator */
    make_transaction_state();
    int controller = active_controller();
    cr_assert(controller >= 1 && controller <= NODES, "no active controller in the quorum-state files");
    char instance[32];
    pick_instance(controller, instance, sizeof(instance));
    /* ORDERLOG_TEST_DECIDE_ARGS: more for decide, e.g. librdkafka's debug
     * contexts (-X kafka.debug=cgrp,fetch -X log.level=debug) */
    const char *more = getenv("ORDERLOG_TEST_DECIDE_ARGS");
    snprintf(decide_args, sizeof(decide_args), "decide -X decide.instance=%s %s", instance, more ? more : "");

    /* the roles, as the quick start runs them */
    for (size_t i = 0; i < NROLES; i++)
        role_start(&roles[i]);
    long long deadline = ol_test_now_ms() + 120000;
    while (count_in_file(roles[0].log, "restored") < 2 && ol_test_now_ms() < deadline)
        watch(500, NULL);
    cr_assert_geq(count_in_file(roles[0].log, "restored"), 2, "decide's 2 workers did not restore within 120 s:\n%s",
                  log_tail(roles[0].log, 20));

    /* who coordinates decide's transactions: worker 0's broker is killed */
    int coordinator = -1;
    for (int w = 0; w < 2; w++) {
        char txid[300];
        snprintf(txid, sizeof(txid), "%sdecide-%s-%d", prefix, instance, w);
        int partition, node = coordinator_of(txid, &partition);
        cr_assert(node >= 1 && node <= NODES, "no leader for __transaction_state-%d", partition);
        char *line = coordinator_log_line(node, txid);
        cr_assert(line, "broker %d leads __transaction_state-%d but its log does not say it initialized %s", node,
                  partition, txid);
        cr_assert(strstr(line, "__transaction_state-"), "%s", line);
        fprintf(stderr, "test: %s is coordinated by broker %d%s (__transaction_state-%d; its log: %.200s)\n", txid,
                node, node == controller ? ", the active controller" : "", partition, strstr(line, "INFO"));
        free(line);
        if (w == 0)
            coordinator = node;
    }

    /* the sale */
    char requests[700], cmd[4096];
    snprintf(requests, sizeof(requests), "%s/requests.jsonl", dir);
    snprintf(cmd, sizeof(cmd),
             "exec %s loadgen --count %d --rate %d --users 100000 --hot-sku HOT-0001 --hot-share 0.5 "
             "--max-quantity 2 --blacklisted-share 0.005 --seed 7 --out %s --wait-ms 120000 %s >%s/loadgen.out "
             "2>%s/loadgen.log",
             bin, SALE_COUNT, SALE_RATE, requests, fixed_args(), dir, dir);
    char loadgen_log[700];
    snprintf(loadgen_log, sizeof(loadgen_log), "%s/loadgen.log", dir);
    loadgen = ol_test_bg_start(cmd);
    deadline = ol_test_now_ms() + 60000;
    while (count_in_file(loadgen_log, "loadgen: sent") < KILL_AFTER_LOGS && ol_test_now_ms() < deadline)
        cr_assert_eq(watch(200, loadgen), -1, "loadgen exited early:\n%s", log_tail(loadgen_log, 20));
    char *llog = ol_test_read_file(loadgen_log);
    const char *last = llog ? strstr(llog, "loadgen: sent") : NULL;
    for (const char *p = last; p && (p = strstr(p + 1, "loadgen: sent"));)
        last = p;
    long long sent = 0, decided = 0;
    cr_assert(last && sscanf(last, "loadgen: sent %lld, decided %lld", &sent, &decided) == 2,
              "no progress from loadgen:\n%s", llog ? llog : "");
    free(llog);
    cr_assert_gt(decided, 0, "no decision yet after %lld requests: nothing to interrupt", sent);

    /* kill -9 the coordinator mid-sale, restart it DOWN_MS later */
    int now_controller = active_controller();
    char args[64];
    snprintf(args, sizeof(args), "node-stop %d kill", coordinator);
    kill_ms = ol_test_wall_ms();
    rc = stack(args, &out);
    cr_assert_eq(rc, 0, "ops/stack %s: exit %d\n%s", args, rc, out);
    free(out);
    fprintf(stderr, "test: killed broker %d (decide's coordinator%s) after %lld requests, %lld decided\n", coordinator,
            now_controller == coordinator ? " and the active controller" : "", sent, decided);
    watch(DOWN_MS - (int)(ol_test_wall_ms() - kill_ms), NULL);
    snprintf(cmd, sizeof(cmd), "exec env %s %s/ops/stack node-start %d 2>&1", stack_env(), ol_test_src_dir(),
             coordinator);
    restarter = ol_test_bg_start(cmd);
    rc = watch(150000, restarter);
    cr_assert_eq(rc, 0, "ops/stack node-start %d: exit %d\n%s", coordinator, rc, ol_test_bg_stdout(restarter));
    long long back_ms = ol_test_wall_ms() - kill_ms;
    fprintf(stderr, "test: broker %d back at %+.1f s from the kill\n", coordinator, (double)back_ms / 1000);

    /* loadgen: every request decided once */
    rc = watch(300000, loadgen);
    char lpath[700];
    snprintf(lpath, sizeof(lpath), "%s/loadgen.out", dir);
    char *lout = ol_test_read_file(lpath);
    fprintf(stderr, "test: loadgen exit %d:\n%s", rc, lout ? lout : "");
    if (rc) /* what the roles said: warnings and errors at the end of each log */
        for (size_t i = 0; i < NROLES; i++) {
            char *t = log_tail(roles[i].log, 25);
            fprintf(stderr, "test: %s (run %d), the end of its warnings and errors:\n%s\n", roles[i].name,
                    roles[i].runs, t);
            free(t);
        }
    cr_expect_eq(rc, 0, "loadgen: exit %d\n%s\n%s", rc, lout ? lout : "", log_tail(loadgen_log, 10));
    char want[128];
    snprintf(want, sizeof(want), "decided %d of %d: 0 without a decision, 0 with more than one", SALE_COUNT,
             SALE_COUNT);
    cr_expect(lout && strstr(lout, want), "loadgen:\n%s", lout ? lout : "");
    free(lout);

    /* the projection catches up with every decision */
    long long projected = 0;
    deadline = ol_test_now_ms() + 180000;
    while (ol_test_now_ms() < deadline &&
           (ol_test_pg_try_query_int(db, "select count(*) from orderlog.buy_decisions", &projected) ||
            projected < SALE_COUNT))
        watch(500, NULL);
    cr_expect_eq(projected, SALE_COUNT, "buy_decisions has %lld rows", projected);

    /* the pause in decisions */
    pause_t pause = longest_pause();
    long long bound = PAUSE_BOUND_MS;
    if (back_ms + AFTER_BACK_MS > bound)
        bound = back_ms + AFTER_BACK_MS;
    fprintf(stderr,
            "test: longest pause in decisions: %.1f s on partition %d, from %+.1f s after the kill (bound %.1f s; %zu "
            "decisions)\n",
            (double)pause.ms / 1000, pause.partition, (double)(pause.from - kill_ms) / 1000, (double)bound / 1000,
            pause.decisions);
    cr_expect_eq(pause.decisions, SALE_COUNT, "decisions on sale-events");
    cr_expect_lt(pause.ms, bound, "decisions paused %.1f s on partition %d from %+.1f s after the kill",
                 (double)pause.ms / 1000, pause.partition, (double)(pause.from - kill_ms) / 1000);

    /* no role exited on its own */
    check_roles();
    cr_expect(!*failures, "a role exited during the failover:\n%s", failures);
    for (size_t i = 0; i < NROLES; i++) {
        stop_role(&roles[i], &rc);
        cr_expect_eq(rc, 0, "%s: exit %d on SIGTERM\n%s", roles[i].name, rc, log_tail(roles[i].log, 10));
    }

    /* the sale's invariants, and the projection equal to a replay */
    char *qreq = ol_test_shell_quote(requests), *ci = ol_test_shell_quote(db);
    rc = ol_test_runf(&out, NULL, "%s/ops/oracle --conninfo %s --requests %s 2>&1", ol_test_src_dir(), ci, qreq);
    fprintf(stderr, "test: ops/oracle exit %d:\n%s", rc, out);
    cr_expect_eq(rc, 0, "ops/oracle: exit %d\n%s", rc, out);
    free(out);
    char *err = NULL;
    rc = ol_test_runf(&out, &err, "%s rebuild --verify-only %s", bin, fixed_args());
    fprintf(stderr, "test: rebuild --verify-only exit %d: %s", rc, out);
    cr_expect_eq(rc, 0, "rebuild --verify-only: exit %d\n%s%s", rc, out, err);
    free(out);
    free(err);
    free(qreq);
    free(ci);
    free(bin);
    fprintf(stderr, "test: %.0f s in all\n", (double)(ol_test_now_ms() - t0) / 1000);
}
