/* orderlog topics: creates, checks, lists or deletes the topics of the
 * contract, each with the configuration the contract needs on the topic
 * itself (never the broker's defaults):
 * - the log topics (buy-requests, skus, sale-events, orders, after-sales)
 *   keep everything: retention.ms=-1, retention.bytes=-1, cleanup.policy
 *   delete (compaction would drop a key's older events);
 * - blacklist is compacted (the latest entry per subject), and so is
 *   decide-snapshots (the latest snapshot of each partition's decider state,
 *   segment.ms an hour so that compaction keeps up with the snapshots);
 * - dlq keeps its records topic.dlq.retention.ms;
 * - min.insync.replicas 2 from a replication factor of 3, else 1;
 * - buy-requests, skus, sale-events and decide-snapshots have one partition
 *   count. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/cli.h"
#include "ops/admin/commands.h"
#include "common/base/kafka.h"
#include "common/domain/contract.h"
#include "common/domain/schema.h"
#include "common/base/time.h"

#define NTOPICS_MAX 16
#define NWANT 4

typedef struct want_s {
    const char *name;
    char value[32];
} want_t;

/* One topic of the contract as the cluster has it. */
typedef struct topic_s {
    const char *shrt; /* name without prefix */
    char name[256];
    bool exists;
    int partitions, replicas;
    want_t want[NWANT];
    int nwant;
    rd_kafka_ConfigResource_t *res; /* described configs (owned by the result event) */
    char fixes[NWANT][80];          /* name=value the fix sets */
    int nfixes;
} topic_t;

typedef struct topics_s {
    const ol_conf_t *conf;
    rd_kafka_t *rk;
    int timeout;
    topic_t t[NTOPICS_MAX];
    size_t n;
    int problems, fixable;
    FILE *report; /* where problems are told: stdout for check, stderr for create; NULL: counted only */
} topics_t;

static bool is_log(const char *shrt) {
    return strcmp(shrt, "blacklist") && strcmp(shrt, "dlq") && strcmp(shrt, "decide-snapshots");
}

static bool copartitioned(const char *shrt) {
    return !strcmp(shrt, "buy-requests") || !strcmp(shrt, "skus") || !strcmp(shrt, "sale-events") ||
           !strcmp(shrt, "decide-snapshots");
}

static int min_isr(int replicas) {
    return replicas >= 3 ? 2 : 1;
}

/* What the contract asks of t's configuration for replicas copies. */
static void wanted(const ol_conf_t *conf, topic_t *t, int replicas) {
    t->nwant = 0;
    want_t *w = t->want;
    if (is_log(t->shrt)) {
        w[t->nwant++] = (want_t){"retention.ms", "-1"};
        w[t->nwant++] = (want_t){"retention.bytes", "-1"};
        w[t->nwant++] = (want_t){"cleanup.policy", "delete"};
    } else if (!strcmp(t->shrt, "blacklist")) {
        w[t->nwant++] = (want_t){"cleanup.policy", "compact"};
    } else if (!strcmp(t->shrt, "decide-snapshots")) {
        w[t->nwant++] = (want_t){"cleanup.policy", "compact"};
        w[t->nwant++] = (want_t){"segment.ms", "3600000"};
    } else {
        w[t->nwant] = (want_t){"retention.ms", ""};
        snprintf(w[t->nwant++].value, sizeof(w[0].value), "%" PRId64, ol_conf_int(conf, "topic.dlq.retention.ms"));
        w[t->nwant++] = (want_t){"cleanup.policy", "delete"};
    }
    w[t->nwant] = (want_t){"min.insync.replicas", ""};
    snprintf(w[t->nwant++].value, sizeof(w[0].value), "%d", min_isr(replicas));
}

static const rd_kafka_ConfigEntry_t *entry(const rd_kafka_ConfigResource_t *res, const char *name) {
    size_t n;
    const rd_kafka_ConfigEntry_t **e = rd_kafka_ConfigResource_configs(res, &n);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rd_kafka_ConfigEntry_name(e[i]), name))
            return e[i];
    return NULL;
}

static void problem(topics_t *ts, const char *name, bool fixable, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(topics_t *ts, const char *name, bool fixable, const char *fmt, ...) {
    if (ts->report) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(ts->report, "%s: ", name);
        vfprintf(ts->report, fmt, ap);
        fprintf(ts->report, "%s\n", fixable ? " (fixable: orderlog topics check --fix)" : "");
        va_end(ap);
    }
    ts->problems++;
    ts->fixable += fixable;
}

/* Reads partitions and replicas of every topic from the metadata. */
static ol_err_t read_metadata(topics_t *ts, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(ts->rk, 1, NULL, &md, ts->timeout);
    if (kerr)
        return ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not list topics: %s", rd_kafka_err2str(kerr));
    for (size_t i = 0; i < ts->n; i++) {
        topic_t *t = &ts->t[i];
        t->exists = false;
        for (int k = 0; k < md->topic_cnt; k++) {
            if (strcmp(md->topics[k].topic, t->name) || md->topics[k].err)
                continue;
            t->exists = true;
            t->partitions = md->topics[k].partition_cnt;
            t->replicas = t->partitions ? md->topics[k].partitions[0].replica_cnt : 0;
        }
    }
    rd_kafka_metadata_destroy(md);
    return OL_ERR_OK;
}

/* The options of an admin request of ts (its timeout; for_brokers: the
 * brokers are given as long to carry it out) and, in *q, the queue its
 * answer comes to: destroy both. */
static rd_kafka_AdminOptions_t *admin_request(topics_t *ts, rd_kafka_admin_op_t op, bool for_brokers,
                                              rd_kafka_queue_t **q) {
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(ts->rk, op);
    if (for_brokers)
        rd_kafka_AdminOptions_set_operation_timeout(opts, ts->timeout, NULL, 0);
    rd_kafka_AdminOptions_set_request_timeout(opts, ts->timeout, NULL, 0);
    *q = rd_kafka_queue_new(ts->rk);
    return opts;
}

/* DescribeConfigs of every existing topic; the event holding the results
 * (destroy it) in *out. A topic just created may not be known to every
 * broker yet: retried within broker.wait.ms. */
static ol_err_t describe(topics_t *ts, rd_kafka_event_t **out, char *errstr, size_t errstr_size) {
    int64_t deadline = ol_time_mono_us() + (int64_t)ts->timeout * 1000;
    for (;;) {
        rd_kafka_ConfigResource_t *res[NTOPICS_MAX];
        size_t n = 0;
        for (size_t i = 0; i < ts->n; i++)
            if (ts->t[i].exists)
                res[n++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, ts->t[i].name);
        rd_kafka_queue_t *q;
        rd_kafka_AdminOptions_t *opts = admin_request(ts, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS, false, &q);
        rd_kafka_DescribeConfigs(ts->rk, res, n, opts, q);
        rd_kafka_ConfigResource_destroy_array(res, n);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ts->timeout + 5000);
        rd_kafka_queue_destroy(q);
        rd_kafka_AdminOptions_destroy(opts);
        const char *why = !ev ? "no answer from the cluster" : rd_kafka_event_error_string(ev);
        if (ev && !rd_kafka_event_error(ev)) {
            size_t nres;
            const rd_kafka_ConfigResource_t **r =
                rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &nres);
            why = NULL;
            for (size_t k = 0; k < nres && !why; k++) {
                for (size_t i = 0; i < ts->n; i++)
                    if (!strcmp(ts->t[i].name, rd_kafka_ConfigResource_name(r[k])))
                        ts->t[i].res = (rd_kafka_ConfigResource_t *)r[k];
                if (rd_kafka_ConfigResource_error(r[k]))
                    why = rd_kafka_ConfigResource_error_string(r[k]);
            }
            if (!why) {
                *out = ev;
                return OL_ERR_OK;
            }
        }
        if (ol_time_mono_us() >= deadline) {
            ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not describe the topics' configuration: %s", why);
            if (ev)
                rd_kafka_event_destroy(ev);
            return OL_ERR_KAFKA;
        }
        if (ev)
            rd_kafka_event_destroy(ev);
        nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    }
}

/* Compares one topic's configuration with the contract; prints what breaks
 * it and notes the safe fixes. */
static void check_configs(topics_t *ts, topic_t *t) {
    wanted(ts->conf, t, t->replicas);
    t->nfixes = 0;
    for (int i = 0; i < t->nwant; i++) {
        const want_t *w = &t->want[i];
        const rd_kafka_ConfigEntry_t *e = entry(t->res, w->name);
        const char *have = e && rd_kafka_ConfigEntry_value(e) ? rd_kafka_ConfigEntry_value(e) : "(none)";
        const char *source = e ? rd_kafka_ConfigSource_name(rd_kafka_ConfigEntry_source(e)) : "unknown";
        bool on_topic = e && rd_kafka_ConfigEntry_source(e) == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG;
        bool bad;
        const char *why;
        if (!strcmp(w->name, "min.insync.replicas")) {
            int isr = atoi(have);
            bad = isr < atoi(w->value) || isr > t->replicas;
            why = isr > t->replicas ? "more than the topic's replicas: every write fails"
                                    : "a write acknowledged by one broker is lost with it";
        } else if (!strcmp(w->name, "cleanup.policy")) {
            bad = strcmp(have, w->value) != 0;
            why = is_log(t->shrt)                 ? "compaction would delete a key's older events from the log"
                  : !strcmp(t->shrt, "blacklist") ? "the blacklist keeps the latest entry per subject"
                                                  : "only the latest snapshot of each partition is needed";
        } else if (!strcmp(w->name, "segment.ms")) {
            bad = strcmp(have, w->value) != 0;
            why = "compaction only cleans closed segments: old snapshots would stay for the broker's default";
        } else {
            /* retention: on the topic itself, never the broker's default */
            bad = strcmp(have, w->value) || (!on_topic && is_log(t->shrt));
            why = is_log(t->shrt) ? "the log is the source of truth and must keep everything, whatever the "
                                    "broker's default"
                                  : "as topic.dlq.retention.ms says";
        }
        if (!bad)
            continue;
        if (!strcmp(have, w->value))
            problem(ts, t->name, true, "%s is %s only by the broker's default (%s), want %s set on the topic: %s",
                    w->name, have, source, w->value, why);
        else
            problem(ts, t->name, true, "%s is %s (%s), want %s: %s", w->name, have, source, w->value, why);
        snprintf(t->fixes[t->nfixes++], sizeof(t->fixes[0]), "%s=%s", w->name, w->value);
    }
}

/* Every partition of a log topic must still hold its first record. */
static void check_start(topics_t *ts, topic_t *t) {
    char errstr[512];
    if (is_log(t->shrt) && ol_kafka_check_log_start(ts->rk, ts->conf, t->name, errstr, sizeof(errstr)))
        problem(ts, t->name, false, "%s", errstr);
}

/* The whole check; prints one line per problem. */
static ol_err_t check(topics_t *ts, rd_kafka_event_t **described, char *errstr, size_t errstr_size) {
    ts->problems = ts->fixable = 0;
    ol_err_t err = read_metadata(ts, errstr, errstr_size);
    if (err || (err = describe(ts, described, errstr, errstr_size)))
        return err;
    int copart = -1;
    const char *copart_name = NULL;
    for (size_t i = 0; i < ts->n; i++) {
        topic_t *t = &ts->t[i];
        if (!t->exists) {
            problem(ts, t->name, false, "missing (run `orderlog topics create`)");
            continue;
        }
        if (copartitioned(t->shrt)) {
            if (copart >= 0 && t->partitions != copart)
                problem(ts, t->name, false,
                        "%d partitions but %s has %d: buy-requests, skus, sale-events and decide-snapshots must be "
                        "co-partitioned "
                        "(recreate it with %d partitions and publish its events again)",
                        t->partitions, copart_name, copart, copart);
            copart = t->partitions;
            copart_name = t->name;
        }
        check_configs(ts, t);
        check_start(ts, t);
    }
    return OL_ERR_OK;
}

/* AlterConfigs replaces every config set on a topic: the ones set there
 * already are sent again, with the fixes over them. */
static ol_err_t fix(topics_t *ts, char *errstr, size_t errstr_size) {
    rd_kafka_ConfigResource_t *res[NTOPICS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < ts->n; i++) {
        topic_t *t = &ts->t[i];
        if (!t->exists || !t->nfixes)
            continue;
        rd_kafka_ConfigResource_t *r = res[n++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, t->name);
        size_t ne;
        const rd_kafka_ConfigEntry_t **e = rd_kafka_ConfigResource_configs(t->res, &ne);
        for (size_t k = 0; k < ne; k++)
            if (rd_kafka_ConfigEntry_source(e[k]) == RD_KAFKA_CONFIG_SOURCE_DYNAMIC_TOPIC_CONFIG &&
                rd_kafka_ConfigEntry_value(e[k]))
                rd_kafka_ConfigResource_set_config(r, rd_kafka_ConfigEntry_name(e[k]),
                                                   rd_kafka_ConfigEntry_value(e[k]));
        for (int k = 0; k < t->nfixes; k++) {
            char *eq = strchr(t->fixes[k], '=');
            *eq = '\0';
            rd_kafka_ConfigResource_set_config(r, t->fixes[k], eq + 1);
            *eq = '=';
        }
    }
    if (!n)
        return OL_ERR_OK;
    rd_kafka_queue_t *q;
    rd_kafka_AdminOptions_t *opts = admin_request(ts, RD_KAFKA_ADMIN_OP_ALTERCONFIGS, false, &q);
    rd_kafka_AlterConfigs(ts->rk, res, n, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ts->timeout + 5000);
    ol_err_t err = OL_ERR_OK;
    if (!ev || rd_kafka_event_error(ev)) {
        err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not change the topics' configuration: %s",
                      ev ? rd_kafka_event_error_string(ev) : "no answer from the cluster");
    } else {
        size_t nres;
        const rd_kafka_ConfigResource_t **r =
            rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &nres);
        for (size_t k = 0; k < nres; k++) {
            const char *name = rd_kafka_ConfigResource_name(r[k]);
            if (rd_kafka_ConfigResource_error(r[k])) {
                err = ol_errf(errstr, errstr_size, OL_ERR_KAFKA, "could not change the configuration of %s: %s", name,
                              rd_kafka_ConfigResource_error_string(r[k]));
                continue;
            }
            for (size_t i = 0; i < ts->n; i++) {
                if (strcmp(ts->t[i].name, name))
                    continue;
                printf("fixed %s:", name);
                for (int f = 0; f < ts->t[i].nfixes; f++)
                    printf(" %s", ts->t[i].fixes[f]);
                printf("\n");
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_ConfigResource_destroy_array(res, n);
    return err;
}

/* check [--fix]: exit 0 when every topic fits the contract. */
static int run_check(topics_t *ts, bool do_fix, const char *verb) {
    char errstr[512];
    rd_kafka_event_t *ev = NULL;
    ol_err_t err = check(ts, &ev, errstr, sizeof(errstr));
    if (!err && do_fix && ts->fixable) {
        err = fix(ts, errstr, sizeof(errstr));
        /* the brokers apply a change a moment after they accept it: checked
         * quietly until it shows (bounded), then once more out loud */
        FILE *report = ts->report;
        ts->report = NULL;
        for (int64_t deadline = ol_time_mono_us() + (int64_t)ts->timeout * 1000;
             !err && ts->fixable && ol_time_mono_us() < deadline;) {
            nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
            rd_kafka_event_destroy(ev);
            ev = NULL;
            err = check(ts, &ev, errstr, sizeof(errstr));
        }
        ts->report = report;
        if (ev)
            rd_kafka_event_destroy(ev);
        ev = NULL;
        if (!err) /* what is left */
            err = check(ts, &ev, errstr, sizeof(errstr));
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    if (err) {
        fprintf(stderr, "orderlog topics: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    if (ts->problems) {
        fprintf(stderr, "orderlog topics %s: %d problem(s) in the topics of the contract%s\n", verb, ts->problems,
                ts->fixable && !do_fix ? "; `orderlog topics check --fix` applies the safe fixes" : "");
        return OL_EXIT_FAIL;
    }
    printf("%zu topics fit the contract\n", ts->n);
    return OL_EXIT_OK;
}

/* Waits for the CreateTopics or DeleteTopics answer on q and prints a line
 * per topic: "<done> <topic>", "<benign_word> <topic>" for the error that
 * means nothing to do, else the error. Destroys opts and q. */
static int admin_results(topics_t *ts, rd_kafka_AdminOptions_t *opts, rd_kafka_queue_t *q, const char *verb,
                         const char *done, rd_kafka_resp_err_t benign, const char *benign_word) {
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ts->timeout + 5000);
    int rc = OL_EXIT_OK;
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "orderlog topics: %s failed: %s\n", verb,
                ev ? rd_kafka_event_error_string(ev) : "no answer from the cluster");
        rc = OL_EXIT_FAIL;
    } else {
        size_t nres;
        const rd_kafka_topic_result_t **res =
            rd_kafka_event_type(ev) == RD_KAFKA_EVENT_CREATETOPICS_RESULT
                ? rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &nres)
                : rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &nres);
        for (size_t i = 0; i < nres; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            const char *tn = rd_kafka_topic_result_name(res[i]);
            if (!e) {
                printf("%s %s\n", done, tn);
            } else if (e == benign) {
                printf("%s %s\n", benign_word, tn);
            } else {
                rc = OL_EXIT_FAIL;
                fprintf(stderr, "orderlog topics: %s %s: %s\n", verb, tn,
                        rd_kafka_topic_result_error_string(res[i]) ?: rd_kafka_err2str(e));
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    return rc;
}

static int run_create(topics_t *ts) {
    char errstr[512];
    int replicas = (int)ol_conf_int(ts->conf, "topic.replication.factor");
    rd_kafka_NewTopic_t *nt[NTOPICS_MAX];
    for (size_t i = 0; i < ts->n; i++) {
        topic_t *t = &ts->t[i];
        nt[i] = rd_kafka_NewTopic_new(t->name, (int)ol_conf_int(ts->conf, "topic.partitions"), replicas, errstr,
                                      sizeof(errstr));
        wanted(ts->conf, t, replicas);
        for (int k = 0; k < t->nwant; k++)
            rd_kafka_NewTopic_set_config(nt[i], t->want[k].name, t->want[k].value);
    }
    rd_kafka_queue_t *q;
    rd_kafka_AdminOptions_t *opts = admin_request(ts, RD_KAFKA_ADMIN_OP_CREATETOPICS, true, &q);
    rd_kafka_CreateTopics(ts->rk, nt, ts->n, opts, q);
    rd_kafka_NewTopic_destroy_array(nt, ts->n);
    int rc = admin_results(ts, opts, q, "create", "created", RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS, "exists ");
    if (rc)
        return rc;
    /* new topics reach each broker's metadata a moment after CreateTopics
     * answers: done only once every broker lists them (each asked alone, up
     * to broker.wait.ms), so a role started next finds them wherever it asks */
    ol_err_t err = ol_contract_check_topics(ts->rk, ts->conf, errstr, sizeof(errstr));
    if (err && err != OL_ERR_CONFIG) {
        fprintf(stderr, "orderlog topics: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    /* existing topics made elsewhere must fit the contract too */
    ts->report = stderr;
    return run_check(ts, false, "create");
}

static int run_list(topics_t *ts) {
    char errstr[512];
    if (read_metadata(ts, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog topics: %s\n", errstr);
        return OL_EXIT_FAIL;
    }
    int rc = OL_EXIT_OK;
    for (size_t i = 0; i < ts->n; i++) {
        if (ts->t[i].exists) {
            printf("%-32s %3d partitions\n", ts->t[i].name, ts->t[i].partitions);
        } else {
            printf("%-32s missing\n", ts->t[i].name);
            rc = OL_EXIT_FAIL;
        }
    }
    return rc;
}

static int run_delete(topics_t *ts) {
    rd_kafka_DeleteTopic_t *dt[NTOPICS_MAX];
    for (size_t i = 0; i < ts->n; i++)
        dt[i] = rd_kafka_DeleteTopic_new(ts->t[i].name);
    rd_kafka_queue_t *q;
    rd_kafka_AdminOptions_t *opts = admin_request(ts, RD_KAFKA_ADMIN_OP_DELETETOPICS, true, &q);
    rd_kafka_DeleteTopics(ts->rk, dt, ts->n, opts, q);
    rd_kafka_DeleteTopic_destroy_array(dt, ts->n);
    return admin_results(ts, opts, q, "delete", "deleted", RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, "absent ");
}

static int topics_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[512];
    const char *verb = argc >= 2 ? argv[1] : "";
    bool do_fix = argc == 3 && !strcmp(argv[2], "--fix") && !strcmp(verb, "check");
    if ((argc != 2 && !do_fix) ||
        (strcmp(verb, "create") && strcmp(verb, "check") && strcmp(verb, "delete") && strcmp(verb, "list")))
        return ol_cli_usage_error(&ol_cmd_topics, "expected create, check [--fix], list or delete");
    topics_t ts = {.conf = conf, .timeout = (int)ol_conf_int(conf, "broker.wait.ms"), .report = stdout};
    if (!(ts.rk = ol_kafka_new(conf, OL_KAFKA_ADMIN, "orderlog-topics", NULL, errstr, sizeof(errstr)))) {
        fprintf(stderr, "orderlog topics: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    if (ol_kafka_wait_cluster(ts.rk, conf, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog topics: %s\n", errstr);
        rd_kafka_destroy(ts.rk);
        return OL_EXIT_FAIL;
    }
    for (const char *const *t = ol_schema_topics(); *t && ts.n < NTOPICS_MAX; t++) {
        ts.t[ts.n].shrt = *t;
        ol_kafka_topic_name(conf, *t, ts.t[ts.n++].name, sizeof(ts.t[0].name));
    }
    int rc = !strcmp(verb, "create")  ? run_create(&ts)
             : !strcmp(verb, "check") ? run_check(&ts, do_fix, "check")
             : !strcmp(verb, "list")  ? run_list(&ts)
                                      : run_delete(&ts);
    rd_kafka_destroy(ts.rk);
    return rc;
}

const ol_cmd_t ol_cmd_topics = {
    "topics", topics_run, "create, check, list or delete the topics of the contract",
    "usage: orderlog topics create|check [--fix]|list|delete\n"
    "  create       every topic of the contract with topic.partitions partitions and the configuration it needs\n"
    "               on the topic itself: the log topics keep everything (retention.ms=-1, retention.bytes=-1),\n"
    "               blacklist and decide-snapshots are compacted, dlq keeps topic.dlq.retention.ms, "
    "min.insync.replicas 2 from\n"
    "               topic.replication.factor 3; returns once every broker lists them; existing topics are then\n"
    "               checked as by `check`\n"
    "  check        reports every topic whose partitions, co-partitioning, retention, cleanup policy or\n"
    "               min.insync.replicas break the contract, or whose beginning was deleted; exit 1 if any\n"
    "  check --fix  applies the safe fixes (configuration only; never partitions or data) and checks again\n"
    "  list         each topic with its partition count\n"
    "  delete       every topic under topic.prefix (all data in them is lost)\n"};
