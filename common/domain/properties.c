#include "common/domain/properties.h"

#include <stdint.h>

/* The one table of properties. Names carry their unit (.ms, .bytes). */
static const ol_conf_prop_t props[] = {
    {"kafka.bootstrap.servers", OL_CONF_STR, "127.0.0.1:19092", 0, 0, NULL,
     "Kafka brokers to bootstrap from (host:port, comma separated). Every other kafka.* property "
     "is passed to librdkafka as it is."},
    {"pg.conninfo", OL_CONF_STR, "host=127.0.0.1 port=54329 dbname=orderlog user=postgres", 0, 0, NULL,
     "PostgreSQL connection string (libpq conninfo or URI); its passwords are never printed (shown as ***)."},
    {"topic.prefix", OL_CONF_STR, "orderlog.", 0, 0, NULL,
     "Prefix of every topic name (`orderlog.buy-requests`, `orderlog.orders`, ...)."},
    {"topic.partitions", OL_CONF_INT, "6", 1, 10000, NULL,
     "Partition count used by `orderlog topics create` (buy-requests, skus and sale-events must "
     "share it)."},
    {"topic.replication.factor", OL_CONF_INT, "1", 1, 32, NULL,
     "Replication factor used by `orderlog topics create`; from 3 up the topics get min.insync.replicas=2."},
    {"topic.dlq.retention.ms", OL_CONF_INT, "2592000000", -1, INT64_MAX, NULL,
     "How long the `dlq` topic keeps dead letters (set on the topic by `orderlog topics create`); -1 = forever. "
     "The log topics always keep everything."},
    {"replay.allow.truncated", OL_CONF_BOOL, "false", 0, 0, NULL,
     "Let `decide` and `rebuild` replay a log whose beginning was deleted (a partition's log start offset above "
     "0): the state or projection then misses those events. Off, they refuse to start."},
    {"event.source", OL_CONF_STR, "orderlog", 0, 0, NULL,
     "CloudEvents source of the events this process writes; the role is appended (orderlog/publish)."},
    {"event.format", OL_CONF_ENUM, "cloudevents", 0, 0, "cloudevents,confluent",
     "How the roles that write events (`publish`, `gate`, `decide`, `guard`) write them: `cloudevents`, plain Avro "
     "with the CloudEvents headers; "
     "`confluent`, the Confluent wire format (a 0 byte, the schema id in registry.url, the Avro binary) with the "
     "same headers, for readers that go through a schema registry. Each event's schema is looked up under "
     "<topic>-orderlog.<Event> at start, and registered when missing. Readers take both, whatever this says."},
    {"log.level", OL_CONF_ENUM, "info", 0, 0, "debug,info,warn,error",
     "Least severe level logged (JSON lines on stderr)."},
    {"broker.wait.ms", OL_CONF_INT, "10000", 100, 600000, NULL,
     "How long a command waits for the Kafka cluster to answer before it fails with a clear error."},
    {"http.listen", OL_CONF_STR, "", 0, 0, NULL,
     "Address `decide`, `guard` and `project` serve /metrics, /healthz and /readyz on (host:port, [v6]:port; "
     "port 0 picks a free port, printed at start as `http listening on http://HOST:PORT`); empty = no endpoint. "
     "One port per process: set it per role. `gate` serves them on gate.listen."},
    {"health.stall.ms", OL_CONF_INT, "30000", 1000, 3600000, NULL,
     "/healthz of `decide`, `guard` and `project` answers 503 once one of the role's loops has not turned for "
     "this long (stuck in a call, deadlocked); above the longest call a loop may block in (Kafka transaction "
     "calls, a PostgreSQL batch)."},
    {"status.endpoints", OL_CONF_STR, "", 0, 0, NULL,
     "Roles `orderlog status` asks for GET /healthz and /readyz: comma-separated [name=]host:port (IPv6 as "
     "[addr]:port), e.g. `gate=127.0.0.1:18080,decide=127.0.0.1:18081` (the quick start's: its http.listen and "
     "gate.listen); empty = none asked."},
    {"status.endpoint.timeout.ms", OL_CONF_INT, "500", 50, 60000, NULL,
     "How long `orderlog status` gives each /healthz and /readyz (connect, ask, read the answer); they are asked "
     "at once, while status reads PostgreSQL and Kafka."},
    {"gate.listen", OL_CONF_STR, "127.0.0.1:8080", 0, 0, NULL,
     "Address `gate` listens on for HTTP (host:port, [v6]:port; port 0 picks a free port, printed at start)."},
    {"gate.threads", OL_CONF_INT, "2", 1, 256, NULL,
     "HTTP threads of `gate` (each runs its own event loop over many connections)."},
    {"gate.wait.ms", OL_CONF_INT, "1000", 0, 60000, NULL,
     "How long `gate` holds a request open for its decision before answering 202 with a URL to poll; 0 answers "
     "202 as soon as Kafka has the request."},
    {"gate.max.waiting", OL_CONF_INT, "50000", 0, 10000000, NULL,
     "Most requests `gate` holds open for a decision at once; past it a request is answered 202 once Kafka has it."},
    {"gate.connections.max", OL_CONF_INT, "20000", 16, 1000000, NULL,
     "Most HTTP connections `gate` keeps open (waiting ones included); more are refused."},
    {"gate.idle.timeout.ms", OL_CONF_INT, "60000", 1000, 3600000, NULL,
     "An HTTP connection of `gate` idle this long is closed (a connection waiting for a decision is not idle)."},
    {"gate.body.max.bytes", OL_CONF_INT, "4096", 64, 1048576, NULL,
     "Largest request body `gate` accepts; larger ones are answered 400 without being read into memory."},
    {"gate.rate.per.second", OL_CONF_INT, "50000", 0, 100000000, NULL,
     "Requests per second the whole `gate` instance admits (token bucket, before Kafka); 0 = no limit."},
    {"gate.rate.burst", OL_CONF_INT, "10000", 1, 100000000, NULL,
     "Requests above gate.rate.per.second the instance admits in a burst (the bucket's size)."},
    {"gate.ip.rate.per.second", OL_CONF_INT, "20", 0, 100000000, NULL,
     "Requests per second `gate` admits per client address (token bucket; the address as gate.trusted.proxies says); "
     "0 = no limit."},
    {"gate.ip.burst", OL_CONF_INT, "40", 1, 100000000, NULL, "Size of each client IP's token bucket."},
    {"gate.ip.max.entries", OL_CONF_INT, "100000", 16, 100000000, NULL,
     "Client IPs whose buckets `gate` remembers (least recently seen forgotten first, ~150 bytes each)."},
    {"gate.trusted.proxies", OL_CONF_STR, "", 0, 0, NULL,
     "Networks of the proxies and load balancers in front of `gate`, comma separated (CIDRs or addresses, IPv4 and "
     "IPv6: 10.0.0.0/8, 2001:db8::/32). A buy's client address (its per-IP rate limit, the blacklist, "
     "BuyRequested.client_ip) is the TCP peer; when the peer is in this list, the right-most address of "
     "gate.forwarded.header that is not (400 when there is none usable). Empty: headers are ignored. A bad entry "
     "stops `gate` at start."},
    {"gate.forwarded.header", OL_CONF_ENUM, "x-forwarded-for", 0, 0, "x-forwarded-for,forwarded",
     "The header gate.trusted.proxies write the client's address in: X-Forwarded-For, or Forwarded (RFC 7239, "
     "for=). Only this one is read: name the one your proxy appends to, as one it passes on untouched is the "
     "client's to forge."},
    {"gate.trust.body.client.ip", OL_CONF_BOOL, "false", 0, 0, NULL,
     "Take a buy's client address from the body's clientIP (as before gate.trusted.proxies), whoever sends it. Only "
     "for a `gate` whose every client is a trusted backend that sends its users' addresses: any other client can "
     "pick the address its rate limit and bans fall on."},
    {"gate.cache.decisions", OL_CONF_INT, "100000", 16, 100000000, NULL,
     "Recent decisions `gate` keeps in memory for GET /buy/<requestID> and retried requests (~300 bytes each); "
     "older ones are read from PostgreSQL (buy_decisions)."},
    {"gate.delivery.timeout.ms", OL_CONF_INT, "30000", 100, 300000, NULL,
     "How long `gate` lets a request wait for Kafka to acknowledge it before answering 503 (the request may "
     "still be decided: a retry with the same requestID is safe). Longer than a failover, so that one delays "
     "answers and fails none: a broker killed on the local 3-broker stack (Kafka's default "
     "broker.session.timeout.ms) held requests up to 9 s, the active controller up to 14 s. A request "
     "acknowledged after gate.wait.ms is answered 202 pending."},
    {"gate.auth", OL_CONF_ENUM, "none", 0, 0, "none,jwt,header",
     "Who a request to `gate` comes from. none: the body's userID and userLevel, as the client says (the original "
     "API; anyone can claim any user and level). jwt: a bearer token (Authorization: Bearer <JWT>, gate.auth.jwt.*). "
     "header: headers an authenticating proxy sets (gate.auth.header.*). With jwt or header, POST /buy, POST "
     "/checkout and GET /buy/<requestID> answer 401 without valid credentials, and 403 when the body's userID or "
     "userLevel is not the authenticated user's (absent ones are filled in)."},
    {"gate.auth.jwt.alg", OL_CONF_ENUM, "RS256", 0, 0, "RS256,HS256",
     "The one signature algorithm `gate` accepts in tokens (gate.auth=jwt); a token of another alg, \"none\" "
     "included, is invalid."},
    {"gate.auth.jwt.key.file", OL_CONF_STR, "", 0, 0, NULL,
     "File holding the key that verifies tokens, read once at start: a PEM RSA public key (-----BEGIN PUBLIC "
     "KEY-----, 2048 bits or more) for RS256, or the HMAC secret (at least 32 bytes; one trailing line end is "
     "dropped) for HS256. Unreadable or not such a key: `gate` does not start."},
    {"gate.auth.jwt.issuer", OL_CONF_STR, "", 0, 0, NULL,
     "The iss a token must carry; empty: not checked (any issuer holding the key)."},
    {"gate.auth.jwt.audience", OL_CONF_STR, "", 0, 0, NULL,
     "A value the token's aud (a string or an array) must hold; empty: not checked."},
    {"gate.auth.jwt.leeway.ms", OL_CONF_INT, "30000", 0, 600000, NULL,
     "Clock skew allowed when checking a token's exp (required), nbf and iat."},
    {"gate.auth.jwt.cache.entries", OL_CONF_INT, "65536", 0, 10000000, NULL,
     "Tokens `gate` remembers as verified (by their SHA-256, ~200 bytes each; the oldest forgotten first), so that a "
     "user's next requests with the same token skip the signature (an RS256 check costs ~0.4 ms of CPU); their exp "
     "is checked every time. 0 = every request is verified."},
    {"gate.auth.jwt.user.claim", OL_CONF_STR, "sub", 0, 0, NULL,
     "The claim holding the user id (a string of 1 to 128 bytes): the BuyRequested's user_id."},
    {"gate.auth.jwt.level.claim", OL_CONF_STR, "level", 0, 0, NULL,
     "The claim holding the user's level (an integer, 0 or more): the BuyRequested's user_level. A token without "
     "it is invalid."},
    {"gate.auth.header.user", OL_CONF_STR, "X-Auth-User", 0, 0, NULL,
     "Header the authenticating proxy writes the user id in (gate.auth=header). The proxy must set it on every "
     "request, replacing what the client sent; a request carrying it twice is refused."},
    {"gate.auth.header.level", OL_CONF_STR, "X-Auth-Level", 0, 0, NULL,
     "Header the authenticating proxy writes the user's level in (decimal, 0 or more)."},
    {"gate.auth.header.from", OL_CONF_STR, "", 0, 0, NULL,
     "Networks of the authenticating proxies, comma separated (CIDRs or addresses, IPv4 and IPv6: 10.0.0.0/8, "
     "2001:db8::/32): with gate.auth=header, a request whose TCP peer is elsewhere is refused 403, whatever headers "
     "it carries. Required with gate.auth=header. Apart from gate.trusted.proxies (same syntax): a proxy trusted to "
     "forward the client's address does not thereby say who the user is."},
    {"gate.header.timeout.ms", OL_CONF_INT, "10000", 0, 3600000, NULL,
     "How long `gate` gives a new connection to send its first request line and headers before closing it (a "
     "client that is silent or sends a byte at a time; checked each second); 0 = no limit but "
     "gate.idle.timeout.ms. Later requests on a kept-alive connection have gate.idle.timeout.ms only."},
    {"gate.lookup.threads", OL_CONF_INT, "2", 1, 64, NULL,
     "Threads of `gate` that read older decisions from PostgreSQL for GET /buy/<requestID> (one connection "
     "each); the HTTP threads never wait for the database."},
    {"gate.lookup.max.queued", OL_CONF_INT, "1000", 1, 1000000, NULL,
     "Most GET /buy/<requestID> lookups waiting for a lookup thread; beyond, 503 \"too many lookups, try again\" "
     "at once."},
    {"gate.lookup.timeout.ms", OL_CONF_INT, "2000", 100, 60000, NULL,
     "Longest a GET /buy/<requestID> waits for PostgreSQL (queue and query; also the lookups' statement_timeout): "
     "past it, 503 (202 when the gate knows the request is pending)."},
    {"publish.delivery.timeout.ms", OL_CONF_INT, "30000", 1000, 3600000, NULL,
     "How long `publish` lets an event wait for its delivery report before counting it failed."},
    {"publish.max.line.bytes", OL_CONF_INT, "1048576", 1024, 67108864, NULL,
     "Longest accepted input line of `publish`; longer lines are rejected, not read into memory. An event whose "
     "record would exceed the producer's `message.max.bytes` (librdkafka's default 1000000, raised with "
     "`-X kafka.message.max.bytes=N`) is rejected too, before delivery."},
    {"publish.queue.kbytes", OL_CONF_INT, "16384", 1024, 1048576, NULL,
     "Payload bytes of produced events buffered in memory awaiting delivery (bounds publish's memory)."},
    {"publish.queue.messages", OL_CONF_INT, "32768", 1000, 10000000, NULL,
     "Events buffered in memory awaiting delivery; each also holds its headers (~1 KiB), so this bounds "
     "publish's memory too."},
    {"publish.threads", OL_CONF_INT, "2", 1, 64, NULL,
     "Threads of `publish` that parse, check and encode lines (events are still produced in input order)."},
    {"consumer.group.id", OL_CONF_STR, "", 0, 0, NULL,
     "Consumer group of a consuming role; empty means <topic.prefix><role> (orderlog.project, ...)."},
    {"consumer.instance", OL_CONF_STR, "", 0, 0, NULL,
     "Stable name of one `project` process in its group (static membership, group.instance.id "
     "<group>-<instance>): restarted after a crash it takes its partitions back at once instead of after the "
     "session timeout. Give each process its own and keep it across restarts; two processes with one name fence "
     "each other (the second ends the first with an error). Empty: dynamic membership."},
    {"consumer.workers", OL_CONF_INT, "2", 1, 256, NULL,
     "Worker threads that decode and fold a batch, records dispatched by key hash (one key, one worker)."},
    {"consumer.batch.events", OL_CONF_INT, "5000", 1, 1000000, NULL,
     "Most events in one batch (one PostgreSQL transaction)."},
    {"consumer.batch.bytes", OL_CONF_INT, "16777216", 1024, 1073741824, NULL, "Most payload bytes in one batch."},
    {"consumer.batch.ms", OL_CONF_INT, "200", 1, 60000, NULL,
     "Longest a batch waits for more events before it is applied."},
    {"consumer.max.poison", OL_CONF_INT, "100", 1, 1000000, NULL,
     "Poison records (sent to the dlq) in a row after which the consumer stops with an error."},
    {"consumer.retry.max.ms", OL_CONF_INT, "10000", 10, 600000, NULL,
     "Cap of the exponential backoff between retries of a batch after a transient failure."},
    {"consumer.shutdown.timeout.ms", OL_CONF_INT, "30000", 100, 600000, NULL,
     "On SIGTERM, how long the batch in flight may take to finish before the consumer gives up on it (`decide` then "
     "exits 1, leaving its open transaction to be aborted)."},
    {"consumer.queue.kbytes", OL_CONF_INT, "32768", 1024, 2097152, NULL,
     "Kilobytes librdkafka prefetches per consumer (bounds memory whatever the backlog)."},
    {"consumer.parallel.apply", OL_CONF_BOOL, "false", 0, 0, NULL,
     "Split each batch by partition and apply the parts at once, one connection per worker (roles that allow it). "
     "Pays off when PostgreSQL has cores to spare; on a 2-core machine shared with Kafka it is slower."},
    {"consumer.pipeline", OL_CONF_BOOL, "true", 0, 0, NULL,
     "Collect and fold the next batch while the current one is applied (at most two batches in memory)."},
    {"consumer.synchronous.commit", OL_CONF_BOOL, "true", 0, 0, NULL,
     "Whether a batch's COMMIT waits for PostgreSQL to flush it. Off is still exactly-once (rows and offsets are lost "
     "together in a database crash, then consumed again) but the dlq may get a record twice."},
    {"decide.workers", OL_CONF_INT, "2", 1, 256, NULL,
     "Worker threads of `decide`; each is a member of its consumer group with its own transactional producer and "
     "owns whole partitions."},
    {"decide.instance", OL_CONF_STR, "0", 0, 0, NULL,
     "Stable name of one `decide` process: its transactional ids are <topic.prefix>decide-<instance>-<worker>. "
     "Give each process its own and keep it across restarts, so a restart aborts what a killed run left open."},
    {"decide.batch.events", OL_CONF_INT, "10000", 1, 1000000, NULL,
     "Most records `decide` judges in one Kafka transaction (on a backlog every transaction is this big: its "
     "fixed cost, ~5 ms, is shared by more decisions)."},
    {"decide.batch.ms", OL_CONF_INT, "2", 1, 60000, NULL,
     "Longest `decide` collects records for one transaction after the first arrived (latency vs throughput: "
     "each request waits for the transaction in flight, then its own)."},
    {"decide.idempotency.window.ms", OL_CONF_INT, "3600000", 1000, 2592000000, NULL,
     "How long `decide` remembers a decided request id, in request time: a retry within it gets no second "
     "decision; a BuyRequested whose requested_at is older than the partition's latest fact by more than this is "
     "refused too_old (never decided twice). Memory: ~60 bytes per request id decided within it (216 MB for an hour "
     "at 1,000/s)."},
    {"decide.snapshot.facts", OL_CONF_INT, "100000", 0, 1000000000, NULL,
     "`decide` writes a snapshot of a partition's state to decide-snapshots (in the transaction of its facts) once "
     "this many facts were applied to it since the last one; a restore reads the latest snapshot and the facts after "
     "it. 0: no snapshots, every restore replays sale-events from its beginning."},
    {"decide.snapshot.interval.ms", OL_CONF_INT, "600000", 0, 86400000, NULL,
     "`decide` also writes a partition's snapshot when this long passed since its last one and facts were applied "
     "since (0: only by decide.snapshot.facts)."},
    {"decide.snapshot.chunk.bytes", OL_CONF_INT, "524288", 1024, 900000, NULL,
     "Largest record of a snapshot: a partition's state is cut into records of this size (under the topic's "
     "max.message.bytes)."},
    {"hold.ttl.ms", OL_CONF_INT, "1800000", 1000, 604800000, NULL,
     "How long a hold (cart item) freezes its units before `decide` releases it (HoldReleased, expired)."},
    {"guard.window.ms", OL_CONF_INT, "10000", 100, 86400000, NULL,
     "Length of the sliding windows of `guard`, in request time (requested_at)."},
    {"guard.ip.max", OL_CONF_INT, "100", 0, 1000000, NULL,
     "Buy requests one client IP may send within guard.window.ms; one more and `guard` blacklists the IP "
     "(reason rate). 0 = IPs are not watched."},
    {"guard.user.max", OL_CONF_INT, "20", 0, 1000000, NULL,
     "Buy requests one user may send within guard.window.ms; one more and `guard` blacklists the user "
     "(reason rate). 0 = users are not watched."},
    {"guard.ban.ms", OL_CONF_INT, "600000", 1000, 31536000000, NULL,
     "How long a ban of `guard` lasts: until = the time of the request that crossed the limit + this; `guard` "
     "removes the entry once until has passed."},
    {"guard.ignore", OL_CONF_STR, "", 0, 0, NULL,
     "Subjects `guard` never bans, comma separated: ip:<address> or user:<id> (a proxy, a load test account)."},
    {"guard.max.subjects", OL_CONF_INT, "1000000", 0, 1000000000, NULL,
     "IPs and users `guard` tracks at most (about 150 bytes each, plus 4 to 8 per request in the window); past it "
     "the least recently seen is forgotten. Idle ones are forgotten anyway. 0 = no limit."},
    {"rebuild.bulk.rows", OL_CONF_INT, "300000", 0, 1000000000, NULL,
     "Rows (orders, refunds, skus) `rebuild` holds in memory at most, the pass folding and the one being written "
     "out with COPY together (the readers wait past it): the replay goes in passes over whole partitions, or over "
     "a share of one partition's keys (the other shares' records kept in spill files under TMPDIR meanwhile), each "
     "holding at most this many. About 650 bytes each, plus 150 to 250 MB for the rest of the process (mostly "
     "librdkafka's prefetch): 300000 keeps the rebuild under 512 MB; 0 = one pass over everything, no limit."},
    {"rebuild.plan.events.per.row", OL_CONF_INT, "3", 1, 1000000, NULL,
     "Events per row (order, refund, sku) `rebuild` plans its first pass for; the passes after it are planned "
     "from what the passes before held. Fewer splits a partition by its keys sooner (more passes over it); more "
     "risks giving the first pass up past rebuild.bulk.rows (it is then split and done again)."},
    {"rebuild.maintenance.work.mem.mb", OL_CONF_INT, "1024", 1, 1048576, NULL,
     "Most maintenance_work_mem of the sessions in which `rebuild` makes the keys, indexes and constraints of the "
     "rebuilt tables: each table's builds get about its size (plus 64 MB), up to this, so that they sort in "
     "memory. PostgreSQL's memory, not the rebuild's: two tables are built at once."},
    {"rebuild.maintenance.workers", OL_CONF_INT, "2", 0, 64, NULL,
     "max_parallel_maintenance_workers of those sessions: parallel workers PostgreSQL may use per index build "
     "(bounded by its max_worker_processes)."},
    {"registry.url", OL_CONF_STR, "http://127.0.0.1:18091/apis/ccompat/v6", 0, 0, NULL,
     "Base URL of the schema registry's Confluent-compatible API (`orderlog schemas`, the writer's schema of a "
     "record in the Confluent wire format, event.format=confluent): http://host:port[/path], "
     "e.g. Apicurio's /apis/ccompat/v6 (the local stack's: `ops/stack env` exports it when the registry runs). "
     "Plain HTTP only."},
    {"registry.compatibility", OL_CONF_ENUM, "BACKWARD", 0, 0,
     "BACKWARD,BACKWARD_TRANSITIVE,FORWARD,FORWARD_TRANSITIVE,FULL,FULL_TRANSITIVE,NONE",
     "Compatibility rule `orderlog schemas register` sets on each subject; BACKWARD: a new version must read "
     "what the previous one wrote (orderlog's evolution rule, schemas/README.md)."},
    {"registry.timeout.ms", OL_CONF_INT, "10000", 100, 600000, NULL,
     "Longest one request to the schema registry may take (connecting, sending, reading the answer)."},
    {"projection.schema", OL_CONF_STR, "orderlog", 0, 0, NULL,
     "PostgreSQL schema the projections (and their consumer_offsets) live in."},
    {NULL, 0, NULL, 0, 0, NULL, NULL},
};

ol_conf_t *ol_conf_new(void) {
    return ol_conf_new_from(props);
}

const ol_conf_prop_t *ol_conf_props(void) {
    return props;
}

void ol_conf_write_sample(FILE *fp) {
    ol_conf_table_write_sample(props, fp);
}

void ol_conf_write_markdown(FILE *fp) {
    ol_conf_table_write_markdown(props, fp);
}
