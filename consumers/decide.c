/* orderlog decide — the flash-sale decider (DESIGN §4) on Kafka transactions.
 *
 * Every worker thread is one member of the consumer group
 * <topic.prefix>decide over buy-requests and skus (co-partitioned, range
 * assignor: partition p of both topics goes to one member) with its own
 * transactional producer. For each partition it owns it keeps an ol_sale_t
 * (common/domain/sale.h): the rules engine, event-sourced from sale-events.
 *
 * A batch is one transaction: expire the holds due, decide every record in
 * log order (apply each fact right after deciding it), produce the facts to
 * the same partition of sale-events (and OrderPlaced to orders for a
 * converted hold, poison records to the dlq), send the consumed offsets with
 * the transaction, commit. Consumed offsets and facts are visible together or
 * not at all (read-process-write exactly-once).
 *
 * On assignment (and after an aborted transaction) a partition's state is
 * rebuilt from its latest snapshot in decide-snapshots and sale-events
 * partition p read from the snapshot's offset (or from the beginning) to its
 * end (read_committed), after the committed offsets were fetched: with
 * isolation.level=read_committed the offset fetch waits for transactions
 * that still hold offsets of the group (KIP-447), so the facts of a previous
 * owner are settled (committed or aborted) before they are read back.
 *
 * The blacklist (compacted topic, every partition) is read by its own thread
 * into one ol_blacklist_t shared under a read-write lock; the workers start
 * judging only once it was read to its end.
 *
 * The parts, one concept a file (the shared types: consumers/decide.h):
 * decide_handle.c (one command, its facts produced), decide_state.c
 * (restore and assignment), decide_snapshot.c (snapshots of the states,
 * written in the transactions, read back by a restore), decide_txn.c (the worker loop, a transaction a
 * batch), decide_faults.c (recovery), decide_worker.c (a worker's clients),
 * decide_blacklist.c, decide_observe.c (/metrics, /healthz, /readyz),
 * decide_watchdog.c (the main thread's watch, the bounded shutdown); this
 * file: the command. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/util.h"
#include "common/domain/contract.h"
#include "common/domain/schema.h"
#include "common/domain/wire.h"
#include "consumers/decide.h"
#include "ops/admin/commands.h"

volatile sig_atomic_t ol_decide__stop;

static void on_signal(int sig) {
    (void)sig;
    ol_decide__stop = 1;
}

/* The partition count of buy-requests (checked equal for skus and
 * sale-events by ol_contract_check_topics). */
static ol_err_t cluster_check(decide_t *d, char *errstr, size_t errstr_size) {
    rd_kafka_t *rk = ol_kafka_new(d->conf, OL_KAFKA_ADMIN, "orderlog-decide", NULL, errstr, errstr_size);
    if (!rk)
        return OL_ERR_CONFIG;
    ol_err_t err = ol_kafka_wait_cluster(rk, d->conf, errstr, errstr_size);
    if (!err)
        err = ol_contract_check_topics(rk, d->conf, errstr, errstr_size);
    /* the state is what sale-events says from its first fact on */
    if (!err)
        err = ol_kafka_check_replayable(rk, d->conf, d->topic_sale, errstr, errstr_size);
    if (!err) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, d->topic_buy, NULL);
        rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, (int)ol_conf_int(d->conf, "broker.wait.ms"));
        rd_kafka_topic_destroy(rkt);
        if (kerr || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt <= 0)
            err = ol_errf(errstr, errstr_size, OL_ERR_UNREACHABLE, "could not read the partitions of %s: %s",
                          d->topic_buy, rd_kafka_err2str(kerr ? kerr : md->topics[0].err));
        else
            d->npartitions = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return err;
}

/* The settings of d from conf. */
static void configure(decide_t *d, const ol_conf_t *conf) {
    d->conf = conf;
    d->nworkers = (int)ol_conf_int(conf, "decide.workers");
    d->hold_ttl_ms = ol_conf_int(conf, "hold.ttl.ms");
    d->window_ms = ol_conf_int(conf, "decide.idempotency.window.ms");
    d->batch_events = (size_t)ol_conf_int(conf, "decide.batch.events");
    d->batch_ms = ol_conf_int(conf, "decide.batch.ms");
    d->snap_facts = ol_conf_int(conf, "decide.snapshot.facts");
    d->snap_ms = ol_conf_int(conf, "decide.snapshot.interval.ms");
    d->snap_chunk = (size_t)ol_conf_int(conf, "decide.snapshot.chunk.bytes");
    ol_kafka_topic_name(conf, "decide-snapshots", d->topic_snap, sizeof(d->topic_snap));
    ol_kafka_topic_name(conf, "buy-requests", d->topic_buy, sizeof(d->topic_buy));
    ol_kafka_topic_name(conf, "skus", d->topic_skus, sizeof(d->topic_skus));
    ol_kafka_topic_name(conf, "sale-events", d->topic_sale, sizeof(d->topic_sale));
    ol_kafka_topic_name(conf, "orders", d->topic_orders, sizeof(d->topic_orders));
    ol_kafka_topic_name(conf, "dlq", d->topic_dlq, sizeof(d->topic_dlq));
    ol_kafka_topic_name(conf, "blacklist", d->topic_bl, sizeof(d->topic_bl));
    snprintf(d->source, sizeof(d->source), "%s", ol_conf_str(conf, "event.source"));
    if (*ol_conf_str(conf, "consumer.group.id"))
        snprintf(d->group, sizeof(d->group), "%s", ol_conf_str(conf, "consumer.group.id"));
    else
        snprintf(d->group, sizeof(d->group), "%sdecide", ol_conf_str(conf, "topic.prefix"));
}

/* The blacklist read to its end first (its thread goes on following it). */
static int start_blacklist(decide_t *d) {
    char errstr[1024];
    /* /readyz asks the cluster through this reader: its metadata request
     * waits behind the fetch long-poll on the same connection, so the
     * fetch wait bounds how fast /readyz answers */
    const char *btuning[] = {"group.id", "orderlog-decide-blacklist", "fetch.wait.max.ms", "100", NULL};
    if (!(d->bl_consumer =
              ol_kafka_new(d->conf, OL_KAFKA_READER, "orderlog-decide-blacklist", btuning, errstr, sizeof(errstr)))) {
        ol_log_error("decide: %s", errstr);
        return OL_EXIT_FAIL;
    }
    if (ol_decide__observe_start(d, errstr, sizeof(errstr))) {
        ol_log_error("decide: %s", errstr);
        return OL_EXIT_USAGE;
    }
    pthread_create(&d->bl_thread, NULL, ol_decide__bl_main, d);
    d->bl_started = true;
    pthread_mutex_lock(&d->mu);
    while (!d->bl_ready)
        pthread_cond_wait(&d->cond, &d->mu);
    pthread_mutex_unlock(&d->mu);
    if (d->bl_failed) {
        ol_log_error("decide: %s", d->bl_errstr);
        return OL_EXIT_FAIL;
    }
    return OL_EXIT_OK;
}

/* The workers: transactions started, then the group joined together, then
 * their threads. OL_EXIT_OK also when a stop came first. */
static int start_workers(decide_t *d) {
    char errstr[1024];
    if (ol_decide__stop)
        return OL_EXIT_OK;
    for (int i = 0; i < d->nworkers; i++) {
        if (ol_decide__worker_init(d, &d->workers[i], i, errstr, sizeof(errstr))) {
            ol_log_error("decide: worker %d: %s", i, errstr);
            ol_decide__stop = 1;
            return OL_EXIT_FAIL;
        }
    }
    for (int i = 0; i < d->nworkers; i++) {
        if (ol_decide__worker_subscribe(&d->workers[i], errstr, sizeof(errstr))) {
            ol_log_error("decide: worker %d: %s", i, errstr);
            ol_decide__stop = 1;
            return OL_EXIT_FAIL;
        }
    }
    /* the group watch's reader: the group's committed offsets, never a member */
    const char *wtuning[] = {"group.id", d->group, NULL};
    if (!(d->watcher =
              ol_kafka_new(d->conf, OL_KAFKA_READER, "orderlog-decide-watch", wtuning, errstr, sizeof(errstr)))) {
        ol_log_error("decide: %s", errstr);
        ol_decide__stop = 1;
        return OL_EXIT_FAIL;
    }
    ol_log_info("decide: %d worker(s) in group %s over %s and %s (%d partitions), hold.ttl.ms=%lld", d->nworkers,
                d->group, d->topic_buy, d->topic_skus, d->npartitions, (long long)d->hold_ttl_ms);
    atomic_store(&d->running, true);
    for (; d->started < d->nworkers; d->started++)
        pthread_create(&d->workers[d->started].thread, NULL, ol_decide__worker_main, &d->workers[d->started]);
    return OL_EXIT_OK;
}

/* Stops everything started (bounded by the watchdog) and says what was
 * done; rc is the status so far, the one returned unless a worker failed. */
static int stop_all(decide_t *d, int rc) {
    ol_decide__stop = 1;
    ol_decide__watchdog_start(ol_conf_int(d->conf, "consumer.shutdown.timeout.ms"));
    for (int i = 0; i < d->started; i++)
        pthread_join(d->workers[i].thread, NULL);
    ol_decide__observe_stop(d);
    for (int i = 0; i < d->nworkers; i++)
        if (d->workers[i].failed) {
            ol_log_error("decide: worker %d: %s", i, d->workers[i].errstr);
            rc = OL_EXIT_FAIL;
        }
    if (d->started || rc == OL_EXIT_OK) {
        long long dec, facts, poison, txns, aborts;
        ol_decide__totals(d, &dec, &facts, &poison, &txns, &aborts);
        printf("decided %lld requests: %lld facts in %lld transactions (%lld aborted), %lld records to the dlq\n", dec,
               facts, txns, aborts, poison);
    }
    for (int i = 0; i < d->nworkers; i++)
        if (d->workers[i].d)
            ol_decide__worker_destroy(&d->workers[i]);
    if (d->watcher)
        rd_kafka_destroy_flags(d->watcher, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (d->bl_started)
        pthread_join(d->bl_thread, NULL);
    if (d->bl_consumer) {
        ol_kafka_consumer_close(d->bl_consumer);
        rd_kafka_destroy(d->bl_consumer);
    }
    free(d->workers);
    ol_blacklist_destroy(d->bl);
    pthread_rwlock_destroy(&d->bl_lock);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cond);
    ol_decide__observe_stop(d);
    ol_metrics_destroy(d->reg);
    ol_decide__watchdog_done();
    return rc;
}

static int decide_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[1024];
    for (int i = 1; i < argc; i++)
        return ol_cli_usage_error(&ol_cmd_decide, "unknown option \"%s\"", argv[i]);
    if (ol_schema_init(errstr, sizeof(errstr)) ||
        ol_wire_prepare(errstr, sizeof(errstr))) { /* event.format confluent: the schema ids */
        ol_log_error("decide: %s", errstr);
        return OL_EXIT_FAIL;
    }
    decide_t d = {.conf = conf};
    configure(&d, conf);
    if (cluster_check(&d, errstr, sizeof(errstr))) {
        ol_log_error("decide: %s", errstr);
        return OL_EXIT_FAIL;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    d.bl = ol_blacklist_new();
    pthread_rwlock_init(&d.bl_lock, NULL);
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cond, NULL);
    d.workers = ol_xcalloc((size_t)d.nworkers, sizeof(*d.workers));
    int rc = start_blacklist(&d);
    if (rc == OL_EXIT_OK)
        rc = start_workers(&d);
    if (rc == OL_EXIT_OK)
        ol_decide__watch(&d);
    return stop_all(&d, rc);
}

const ol_cmd_t ol_cmd_decide = {
    "decide", decide_run, "judge buy requests and hold commands into sale-events (exactly-once, Kafka transactions)",
    "usage: orderlog decide\n"
    "  Consumes buy-requests and skus in the consumer group <topic.prefix>decide (consumer.group.id sets\n"
    "  another) with decide.workers members, each owning whole partitions; judges every BuyRequested\n"
    "  (blacklist, level, limit, unknown SKU, stock), places, converts, cancels and expires holds\n"
    "  (hold.ttl.ms), and writes the facts to sale-events (and OrderPlaced to orders) in Kafka\n"
    "  transactions that also commit the consumed offsets. On assignment each partition's state is\n"
    "  rebuilt from sale-events first. Decided request ids are remembered for\n"
    "  decide.idempotency.window.ms of request time; an older BuyRequested is refused too_old.\n"
    "  Keep decide.instance stable across restarts of one process: its\n"
    "  transactional ids derive from it, so a restart aborts what a killed run left open at once.\n"
    "  With http.listen set, serves /metrics, /healthz and /readyz there.\n"
    "  Runs until SIGTERM or SIGINT, which finish the transaction in flight.\n"};
