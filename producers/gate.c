/* orderlog gate: the HTTP front of the flash sale (DESIGN §4).
 *
 * POST /buy is rate-limited (instance, then client IP), validated, written
 * to buy-requests as a BuyRequested, and answered with the decider's
 * decision read back from sale-events, or 202 with a URL to poll when the
 * decision takes longer than gate.wait.ms. POST /checkout does the same
 * with CheckoutRequested, HoldConverted and CheckoutRejected. This file is
 * the command: configuration, start, the main loop and shutdown; the HTTP
 * side's files are listed in producers/gate_serve.h, gate_wait.c completes
 * the waits (design in producers/gate.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/base/cli.h"
#include "common/base/http.h"
#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/domain/wire.h"
#include "ops/admin/commands.h"
#include "producers/gate_serve.h"

/* What the configuration gives before anything starts (read once). */
typedef struct gate_setup_s {
    struct sockaddr_storage addr; /* gate.listen */
    socklen_t addr_len;
    ol_netlist_t *trusted; /* gate.trusted.proxies; taken by gate_new */
    ol_gate_auth_t *auth;  /* NULL: gate.auth=none; taken by gate_new */
} gate_setup_t;

/* Reads what the gate cannot start without; on failure the exit status
 * (its message printed) and nothing held. */
static int gate_configure(const ol_conf_t *conf, gate_setup_t *out) {
    char errstr[512];
    if (ol_schema_init(errstr, sizeof(errstr))) {
        ol_log_error("%s", errstr);
        return OL_EXIT_FAIL;
    }
    if (ol_wire_prepare(errstr, sizeof(errstr))) { /* event.format confluent: the schema ids */
        ol_log_error("%s", errstr);
        return OL_EXIT_FAIL;
    }
    if (ol_http_parse_listen("gate.listen", ol_conf_str(conf, "gate.listen"), &out->addr, &out->addr_len, errstr,
                             sizeof(errstr))) {
        fprintf(stderr, "orderlog gate: %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    if (ol_netlist_parse(ol_conf_str(conf, "gate.trusted.proxies"), &out->trusted, errstr, sizeof(errstr))) {
        fprintf(stderr, "orderlog gate: property \"gate.trusted.proxies\": %s\n", errstr);
        return OL_EXIT_USAGE;
    }
    if (ol_gate_auth_new(conf, &out->auth, errstr, sizeof(errstr))) { /* the key file is read once, here */
        fprintf(stderr, "orderlog gate: %s\n", errstr);
        ol_netlist_destroy(out->trusted);
        return OL_EXIT_USAGE;
    }
    return OL_EXIT_OK;
}

/* Signals go to the main thread only: blocks them before any thread starts
 * (*sigs: SIGINT and SIGTERM, for sigtimedwait). */
static void block_signals(sigset_t *sigs) {
    sigemptyset(sigs);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The gate of conf, its setup taken; the lookup threads run, nothing else. */
static gate_t *gate_new(const ol_conf_t *conf, gate_setup_t *setup) {
    gate_t *g = ol_xcalloc(1, sizeof(*g));
    g->conf = conf;
    g->auth = setup->auth;
    g->et_buy = ol_schema_find("BuyRequested");
    g->et_checkout = ol_schema_find("CheckoutRequested");
    OL_ASSERT(g->et_buy && g->et_checkout);
    ol_kafka_topic_name(conf, g->et_buy->topic, g->topic_buy, sizeof(g->topic_buy));
    ol_kafka_topic_name(conf, "sale-events", g->topic_sale, sizeof(g->topic_sale));
    snprintf(g->source, sizeof(g->source), "%.100s/gate", ol_conf_str(conf, "event.source"));
    g->wait_us = ol_conf_int(conf, "gate.wait.ms") * 1000;
    g->max_waiting = (size_t)ol_conf_int(conf, "gate.max.waiting");
    g->body_max = (size_t)ol_conf_int(conf, "gate.body.max.bytes");
    g->rl_instance = ol_tokenbucket_new((double)ol_conf_int(conf, "gate.rate.per.second"),
                                        (double)ol_conf_int(conf, "gate.rate.burst"), 1);
    g->rl_ip = ol_tokenbucket_new((double)ol_conf_int(conf, "gate.ip.rate.per.second"),
                                  (double)ol_conf_int(conf, "gate.ip.burst"),
                                  (size_t)ol_conf_int(conf, "gate.ip.max.entries"));
    g->trusted = setup->trusted;
    g->forwarded =
        strcmp(ol_conf_str(conf, "gate.forwarded.header"), "forwarded") ? OL_FORWARDED_XFF : OL_FORWARDED_RFC7239;
    g->trust_body = ol_conf_bool(conf, "gate.trust.body.client.ip");
    g->wtable = ol_xcalloc(WAIT_BUCKETS, sizeof(*g->wtable));
    ol_gate__cache_init(&g->cache, (size_t)ol_conf_int(conf, "gate.cache.decisions"));
    pthread_mutex_init(&g->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->timer_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_key_create(&g->tkey, ol_gate__thread_ctx_free);
    ol_gate__metrics_setup(g);
    g->http = ol_gate__http_new(g);
    g->lookup = ol_gate__lookup_new(g);
    return g;
}

/* Starts the Kafka clients, the gate's threads (*threads set once they
 * run) and the HTTP daemon on addr. */
static int gate_start(gate_t *g, const gate_setup_t *setup, bool *threads) {
    const ol_conf_t *conf = g->conf;
    char errstr[512];
    if (ol_gate__kafka_setup(g, errstr, sizeof(errstr))) {
        ol_log_error("%s", errstr);
        return -1;
    }
    if (pthread_create(&g->poll_thread, NULL, ol_gate__poll_main, g) ||
        pthread_create(&g->timer_thread, NULL, ol_gate__timer_main, g) ||
        pthread_create(&g->consumer_thread, NULL, ol_gate__consumer_main, g))
        ol_assert_fail("pthread_create", __FILE__, __LINE__);
    *threads = true;
    unsigned int flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG;
    if (setup->addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned int nthreads = (unsigned int)ol_conf_int(conf, "gate.threads");
    g->d = MHD_start_daemon(flags, 0, NULL, NULL, ol_gate__on_request, g, MHD_OPTION_EXTERNAL_LOGGER, ol_http_mhd_log,
                            NULL, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&setup->addr,
                            MHD_OPTION_THREAD_POOL_SIZE, nthreads > 1 ? nthreads : 0,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned int)ol_conf_int(conf, "gate.connections.max"), MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned int)(ol_conf_int(conf, "gate.idle.timeout.ms") / 1000),
                            MHD_OPTION_NOTIFY_COMPLETED, ol_gate__on_completed, g, MHD_OPTION_LISTEN_BACKLOG_SIZE,
                            4096U, MHD_OPTION_NOTIFY_CONNECTION, ol_gate__http_on_connection, g, MHD_OPTION_END);
    if (!g->d) {
        ol_log_error("could not listen on %s: %s", ol_conf_str(conf, "gate.listen"), strerror(errno));
        return -1;
    }
    ol_gate__http_listening(g);
    return 0;
}

/* Says where the gate listens (stdout, for scripts) and how it takes a
 * client's address and credentials (the log). */
static void gate_announce(gate_t *g) {
    const ol_conf_t *conf = g->conf;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(g->d, MHD_DAEMON_INFO_BIND_PORT);
    char shown[300];
    ol_http_shown_address(ol_conf_str(conf, "gate.listen"), info ? (unsigned)info->port : 0, shown, sizeof(shown));
    printf("gate listening on http://%s\n", shown);
    fflush(stdout);
    ol_log_info("listening on %s (%u threads), waiting up to %lld ms for decisions", shown,
                (unsigned int)ol_conf_int(conf, "gate.threads"), (long long)(g->wait_us / 1000));
    if (g->trust_body)
        ol_log_warn("a buy's client address is the body's clientIP (gate.trust.body.client.ip): any client can "
                    "choose the address its rate limit and bans fall on");
    else if (ol_netlist_count(g->trusted))
        ol_log_info("a buy's client address: the TCP peer, or %s from %zu trusted proxy networks",
                    g->forwarded == OL_FORWARDED_RFC7239 ? "Forwarded" : "X-Forwarded-For",
                    ol_netlist_count(g->trusted));
    if (!g->trust_body && ol_netlist_has_any(g->trusted))
        ol_log_warn("gate.trusted.proxies holds a /0 network: its clients can choose their address with %s",
                    g->forwarded == OL_FORWARDED_RFC7239 ? "Forwarded" : "X-Forwarded-For");
    char described[512];
    ol_gate_auth_describe(g->auth, described, sizeof(described));
    ol_log_info("%s", described);
}

/* SIGTERM: stop taking connections, let Kafka acknowledge what it has, answer
 * every waiting request (pending), then stop. */
static void gate_shutdown(gate_t *g) {
    atomic_store(&g->stopping, true);
    ol_log_info("stopping: answering the requests in flight");
    MHD_socket fd = MHD_quiesce_daemon(g->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    while (atomic_load(&g->in_handler) > 0)
        usleep(1000);
    rd_kafka_flush(g->rk, (int)ol_conf_int(g->conf, "gate.delivery.timeout.ms") + 1000);
    if (rd_kafka_outq_len(g->rk) > 0) {
        ol_log_warn("%d requests not acknowledged by Kafka at shutdown", rd_kafka_outq_len(g->rk));
        rd_kafka_purge(g->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(g->rk, 2000);
    }
    ol_gate__lookup_stop(g->lookup);
    ol_gate__expire_all(g);
    for (int i = 0; i < 2000 && atomic_load(&g->suspended) > 0; i++)
        usleep(1000);
    usleep(50000); /* let the last answers leave */
    MHD_stop_daemon(g->d);
    g->d = NULL;
}

/* Each second until SIGTERM or SIGINT: the health of the Kafka clients and
 * the connections without headers. The exit status. */
static int gate_serve(gate_t *g, const sigset_t *sigs) {
    char fatal[256] = "";
    for (;;) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        ol_gate__health_check(g);
        ol_gate__http_sweep(g);
        /* The idempotent producer cannot go on (librdkafka says so only for
         * errors it cannot recover from): every buy would be answered 503.
         * Stop with a non-zero status so that a supervisor starts a gate
         * with a new producer; a retried request id is decided once. */
        if (rd_kafka_fatal_error(g->rk, fatal, sizeof(fatal)))
            break;
    }
    if (*fatal)
        ol_log_error("the Kafka producer failed for good (%s): stopping; a restart makes a new one", fatal);
    gate_shutdown(g);
    return *fatal ? OL_EXIT_FAIL : OL_EXIT_OK;
}

/* Stops what runs (threads: whether the gate's threads were started) and
 * frees the gate. */
static void gate_free(gate_t *g, bool threads) {
    if (g->d)
        MHD_stop_daemon(g->d);
    ol_gate__lookup_destroy(g->lookup);
    ol_gate__http_destroy(g->http);
    if (threads) {
        atomic_store(&g->threads_stop, true);
        pthread_mutex_lock(&g->lock);
        pthread_cond_signal(&g->timer_cond);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->consumer_thread, NULL);
        pthread_join(g->timer_thread, NULL);
        pthread_join(g->poll_thread, NULL);
    }
    if (g->rkc) {
        ol_kafka_consumer_close(g->rkc);
        rd_kafka_destroy(g->rkc);
    }
    if (g->rk) {
        rd_kafka_flush(g->rk, 1000);
        if (g->rkt_buy)
            rd_kafka_topic_destroy(g->rkt_buy);
        rd_kafka_destroy(g->rk);
    }
    thread_ctx_t *t = pthread_getspecific(g->tkey);
    if (t)
        ol_gate__thread_ctx_free(t);
    pthread_key_delete(g->tkey);
    pthread_cond_destroy(&g->timer_cond);
    pthread_mutex_destroy(&g->lock);
    ol_gate__cache_free(&g->cache);
    free(g->wtable);
    ol_tokenbucket_destroy(g->rl_instance);
    ol_tokenbucket_destroy(g->rl_ip);
    ol_netlist_destroy(g->trusted);
    ol_gate_auth_destroy(g->auth);
    ol_metrics_destroy(g->m.reg);
    ol_log_info("stopped");
    free(g);
}

static int gate_run(const ol_conf_t *conf, int argc, char **argv) {
    if (argc > 1)
        return ol_cli_usage_error(&ol_cmd_gate, "unexpected argument \"%s\"", argv[1]);
    gate_setup_t setup = {0};
    int rc = gate_configure(conf, &setup);
    if (rc)
        return rc;
    sigset_t sigs;
    block_signals(&sigs);
    gate_t *g = gate_new(conf, &setup);
    bool threads = false;
    rc = OL_EXIT_FAIL;
    if (gate_start(g, &setup, &threads))
        goto out;
    gate_announce(g);
    rc = gate_serve(g, &sigs);
out:
    gate_free(g, threads);
    return rc;
}

const ol_cmd_t ol_cmd_gate = {
    "gate", gate_run, "serve the flash-sale HTTP API (POST /buy, POST /checkout, GET /buy/<id>)",
    "usage: orderlog gate\n"
    "  Listens on gate.listen; prints `gate listening on http://HOST:PORT` when ready.\n"
    "  POST /buy, POST /checkout, GET /buy/<requestID>, GET /healthz, GET /readyz, GET /metrics.\n"
    "  Rate limits: gate.rate.per.second/gate.rate.burst (instance), gate.ip.rate.per.second/gate.ip.burst.\n"
    "  A buy's client address is the TCP peer, or gate.forwarded.header when the peer is in\n"
    "  gate.trusted.proxies; the body's clientIP only with gate.trust.body.client.ip.\n"
    "  Waits gate.wait.ms for a decision, then answers 202 with a URL to poll. SIGTERM stops it cleanly.\n"};
