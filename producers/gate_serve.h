#ifndef OL_GATE_SERVE_H
#define OL_GATE_SERVE_H

/* The HTTP side of the gate, file by file (the waiting side and the design
 * are in producers/gate.h). Not a public API.
 *
 *   gate.c            the command: configuration, start, the main loop, shutdown
 *   gate_route.c      libmicrohttpd's callbacks: a request from its first call
 *                     (routing, framing, gate.auth) to its answer (respond)
 *   gate_endpoints.c  what each endpoint does: rate limits, the client's
 *                     address, encoding, producing and waiting
 *   gate_body.c       the checks of a POST body (gate.h: ol_gate__check_*)
 *   gate_metrics.c    the registry: the families /metrics shows
 *   gate_kafka.c      the producer and the sale-events reader: setup, health
 *
 * Every respond* queues the answer on r's connection and counts it
 * (requests, rejected, duration, auth); its body is taken. */

#include "producers/gate.h"

/* Where a buy's client address came from (orderlog_gate_client_addresses_total). */
enum { SOURCE_PEER, SOURCE_FORWARDED, SOURCE_BODY };

/* The label values of the families, in the order of their enums. */
extern const char *const ol_gate__endpoint_names[];

/* ---- responding (gate_route.c) -------------------------------------------- */

/* Counts r answered with outcome (reason: index in REASONS, or -1). */
void ol_gate__observe(gate_t *g, const req_t *r, outcome_t outcome, int reason);
/* Queues body (taken: a malloc'd string) with status; allow: the Allow header or NULL. */
enum MHD_Result ol_gate__respond(req_t *r, unsigned status, char *body, outcome_t outcome, int reason,
                                 const char *allow);
/* {"error", "field"} with status. */
enum MHD_Result ol_gate__respond_error(req_t *r, unsigned status, const char *error, const char *field,
                                       outcome_t outcome);
/* 429 in the original API's words; ip: the per-IP limit, else the instance's. */
enum MHD_Result ol_gate__respond_throttled(req_t *r, bool ip);

/* libmicrohttpd's access handler and completion callback (cls: the gate). */
enum MHD_Result ol_gate__on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                    const char *version, const char *upload_data, size_t *upload_data_size,
                                    void **req_cls);
void ol_gate__on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe);

/* ---- endpoints (gate_endpoints.c) ------------------------------------------- */

/* Each answers r (or suspends it: answered when resumed). buy and checkout
 * run between the stopping check and their produce (g->in_handler). */
enum MHD_Result ol_gate__handle_buy(req_t *r);
enum MHD_Result ol_gate__handle_checkout(req_t *r);
enum MHD_Result ol_gate__handle_buy_status(req_t *r);
enum MHD_Result ol_gate__handle_healthz(req_t *r);
enum MHD_Result ol_gate__handle_readyz(req_t *r);
enum MHD_Result ol_gate__handle_metrics(req_t *r);
/* The pthread_key_t destructor of an HTTP thread's thread_ctx_t. */
void ol_gate__thread_ctx_free(void *p);

/* ---- bodies (gate_body.c) ----------------------------------------------------- */

/* Whether s holds only the characters of a request id: [A-Za-z0-9._:-]. */
bool ol_gate__id_chars_ok(const char *s);

/* ---- the registry (gate_metrics.c) ------------------------------------------- */

/* Makes g->m.reg and the gate's families, under the names they always had. */
void ol_gate__metrics_setup(gate_t *g);

/* ---- Kafka (gate_kafka.c) ----------------------------------------------------- */

/* Makes the producer (checks the cluster and the topics) and the
 * sale-events reader, assigned at the end of every partition. */
int ol_gate__kafka_setup(gate_t *g, char *errstr, size_t errstr_size);
/* Each second (the main thread): is each Kafka client still reaching the
 * cluster? when did a delivery last fail? */
void ol_gate__health_check(gate_t *g);

#endif
