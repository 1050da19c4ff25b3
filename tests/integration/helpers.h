#ifndef OL_TEST_HELPERS_H
#define OL_TEST_HELPERS_H

/* Helpers for the integration tests (Criterion): running the orderlog binary,
 * scratch PostgreSQL databases, scratch directories. Functions documented as
 * "fails the test" call cr_assert*, so callers need not check them. */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* One case of a table-driven test: an input and what is wanted of it (the
 * message its refusal holds, the value it reads as). */
typedef struct ol_test_case_s {
    const char *in, *want;
} ol_test_case_t;

/* ---- processes ---- */

/* Runs cmdline with /bin/sh -c and waits for it. *out and *err (either may
 * be NULL to discard) receive its stdout and stderr as new NUL-terminated
 * strings (free them). Returns the exit status, 128 + the signal when it was
 * killed, -1 when it could not be started. A sanitizer report (ASan, LSan,
 * UBSan) on its stderr fails the test, whatever the exit status. */
int ol_test_run(const char *cmdline, char **out, char **err);
/* The same with a printf-style command line. */
int ol_test_runf(char **out, char **err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* s quoted for sh ('...'), as a new string. */
char *ol_test_shell_quote(const char *s);
/* The orderlog binary under test: $ORDERLOG_BIN, else build/orderlog. */
const char *ol_test_bin(void);
/* Runs the orderlog binary under test as `<bin> <fixed_args> <fmt ...>`
 * with ol_test_run: fixed_args are the options a test gives every run (its
 * topic prefix, partitions, database; NULL for none), the printf-style rest
 * the command and its arguments, both already quoted for sh where needed. */
int ol_test_orderlogf(char **out, char **err, const char *fixed_args, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same, failing the test unless it exits 0; returns its stdout (free it). */
char *ol_test_orderlogf_ok(const char *fixed_args, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Counts the lines of text that start with prefix. */
int ol_test_count_lines(const char *text, const char *prefix);
/* The first line of text containing every one of the NULL-terminated
 * needles, as a new string, or NULL. */
char *ol_test_find_line(const char *text, ...) __attribute__((sentinel));
/* Expects (cr_expect) a line of text containing every one of the
 * NULL-terminated needles; whether there is one. */
bool ol_test_expect_line(const char *text, ...) __attribute__((sentinel));

/* ---- PostgreSQL ---- */

/* Conninfo of the test server: $ORDERLOG_PG_CONNINFO, else the ops/stack default. */
const char *ol_test_pg_conninfo(void);
/* Creates an empty database "ol_test_<tag>_<pid>_<n>" (tag: [a-z0-9_], at
 * most 30 chars) and writes a conninfo for it to conninfo_out: the base
 * conninfo (string or URI) with dbname replaced. Fails the test when it cannot. */
void ol_test_pg_scratch_db(const char *tag, char *conninfo_out, size_t size);
/* ol_test_pg_scratch_db, then the read models in it (`orderlog -X
 * pg.conninfo=<it> migrate`); fails the test when it cannot. */
void ol_test_pg_migrated_db(const char *tag, char *conninfo_out, size_t size);
/* Drops the database conninfo names, ending its sessions; quiet when it
 * does not exist (or conninfo is empty). */
void ol_test_pg_drop_db(const char *conninfo);
/* Runs sql (one or more commands); fails the test on error. */
void ol_test_pg_exec(const char *conninfo, const char *sql);
/* Runs sql; returns 0, or -1 with the server's message in errstr. */
int ol_test_pg_try_exec(const char *conninfo, const char *sql, char *errstr, size_t errstr_size);
/* The first column of the first row as an integer; fails the test on an
 * error, no row or NULL. */
long long ol_test_pg_query_int(const char *conninfo, const char *sql);
/* The first column of the first row as a new string (free it); NULL when
 * it is SQL NULL or there is no row; fails the test on an error. */
char *ol_test_pg_query_str(const char *conninfo, const char *sql);

/* ---- files ---- */

/* Creates a new empty directory under $TMPDIR (or /tmp) and writes its path
 * to out. Fails the test when it cannot. */
void ol_test_tmpdir(char *out, size_t size);
/* Removes path and everything under it; quiet when it does not exist. */
void ol_test_rmtree(const char *path);
/* Writes len bytes to path (created or truncated); fails the test on error. */
void ol_test_write_file(const char *path, const char *data, size_t len);
/* Appends the string s to path; fails the test on error. */
void ol_test_append_file(const char *path, const char *s);
/* Opens dir/name for writing (created or truncated) and writes its path to
 * path; fails the test when it cannot. */
FILE *ol_test_scratch_open(const char *dir, const char *name, char *path, size_t size);
/* The whole file as a new NUL-terminated string, or NULL when it cannot be read. */
char *ol_test_read_file(const char *path);

/* ---- time ---- */

/* A monotonic clock in milliseconds, for durations and deadlines. */
long long ol_test_now_ms(void);

/* ---- background processes ---- */

/* A process started with /bin/sh -c, its stdout and stderr collected while
 * it runs (stdin is /dev/null). Prefix the command line with "exec " so the
 * pid is that of the program itself. */
typedef struct ol_test_bg_s ol_test_bg_t;
/* Starts cmdline; fails the test when it cannot. */
ol_test_bg_t *ol_test_bg_start(const char *cmdline);
/* Waits up to timeout_ms until stdout holds at least `lines` newlines or the
 * process has exited; returns the number of complete lines collected. */
int ol_test_bg_wait_lines(ol_test_bg_t *bg, int lines, int timeout_ms);
/* Waits up to timeout_ms for the process to exit (collecting its output);
 * returns its exit status (128 + signal when killed), or -1 on timeout. */
int ol_test_bg_wait(ol_test_bg_t *bg, int timeout_ms);
/* What it wrote so far (borrowed; valid until the next call on bg). */
const char *ol_test_bg_stdout(const ol_test_bg_t *bg);
const char *ol_test_bg_stderr(const ol_test_bg_t *bg);
/* Kills the process (SIGKILL) when it still runs, reaps it and frees bg;
 * NULL is a no-op. */
void ol_test_bg_free(ol_test_bg_t *bg);

/* ---- Kafka (admin API, straight to the broker, not through orderlog) ---- */

/* Bootstrap servers of the test broker: $ORDERLOG_KAFKA_BOOTSTRAP_SERVERS,
 * else the ops/stack default. */
const char *ol_test_kafka_bootstrap(void);
/* Creates topic with that many partitions (replication factor 1) and, when
 * config_name is not NULL, one topic config; waits until the broker lists
 * it. Fails the test when it cannot. */
void ol_test_kafka_create_topic(const char *topic, int partitions, const char *config_name, const char *config_value);
/* Deletes the topics (best effort, quiet: for cleanup). */
void ol_test_kafka_delete_topics(const char *const *topics, size_t count);
/* The partition count of topic in the broker's metadata, 0 when it does
 * not exist; fails the test when the broker does not answer. */
int ol_test_kafka_partitions(const char *topic);
/* The value of a topic config (e.g. "cleanup.policy") as the broker
 * describes it, as a new string (NULL when the broker has no such entry);
 * fails the test when the broker does not answer. */
char *ol_test_kafka_topic_config(const char *topic, const char *name);

/* ---- more helpers (appended) ---- */

/* Sends sig to the background process (a no-op once it has exited). */
void ol_test_bg_signal(ol_test_bg_t *bg, int sig);
/* Every row of a query as one new string (free it): the columns of a row
 * joined by '|' (SQL NULL as \N), each row ended by '\n'; "" when there
 * is no row. Fails the test on an error. */
char *ol_test_pg_query_rows(const char *conninfo, const char *sql);

/* ---- more helpers: background output, producing, watermarks, groups ---- */

/* Waits up to timeout_ms until the stderr of the background process holds
 * needle at least count times, or the process has exited; returns the
 * number of occurrences collected. */
int ol_test_bg_wait_stderr(ol_test_bg_t *bg, const char *needle, int count, int timeout_ms);
/* Like ol_test_pg_query_int, but never fails the test: 0 with *out set, -1
 * when the server cannot be reached, the query fails, or gives no integer
 * (for polling while PostgreSQL may be down). */
int ol_test_pg_try_query_int(const char *conninfo, const char *sql, long long *out);
/* Produces one record straight to the broker (no orderlog involved): to
 * partition (-1: murmur2 of the key, the Java client's partitioner), with headers given as
 * NULL-terminated name, value pairs (NULL for none). Returns its offset;
 * fails the test when it is not delivered. */
long long ol_test_kafka_produce(const char *topic, int partition, const void *key, size_t key_len, const void *value,
                                size_t value_len, const char *const *headers);
/* Produces n records (keys[i], values[i] of lens[i] bytes) to one partition
 * in a transaction of transactional.id txid that is never finished: the
 * producer goes away as a process killed with -9 would (the transaction
 * stays open until a producer with txid starts, or it times out). Fails the
 * test when a record is not delivered. */
void ol_test_kafka_produce_unfinished(const char *txid, const char *topic, int partition, const char *const *keys,
                                      const void *const *values, const size_t *lens, int n);
/* The high watermark of a partition (the offset the next record will get);
 * fails the test when the broker does not answer. */
long long ol_test_kafka_end_offset(const char *topic, int partition);
/* Deletes the records of a partition before offset `before` (its log
 * start offset becomes `before`, as retention would make it); fails the
 * test when the broker refuses. */
void ol_test_kafka_delete_records(const char *topic, int partition, long long before);
/* Deletes consumer groups (best effort, quiet: for cleanup). */
void ol_test_kafka_delete_groups(const char *const *groups, size_t count);

/* ---- more helpers: machinery the tests share ---- */

/* The printf-style string as a new string (free it); fails the test when it
 * cannot be made. */
char *ol_test_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *ol_test_vstrf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Starts the orderlog binary under test in the background as
 * `exec <bin> <fmt ...>` (the printf-style rest already quoted for sh);
 * fails the test when it cannot. */
ol_test_bg_t *ol_test_orderlog_bg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whether the binary under test has the command name (its --help lists it). */
bool ol_test_has_command(const char *name);
/* The options of every orderlog run of a test that has a database:
 * "-X topic.prefix=<prefix> -X topic.partitions=<partitions> -X
 * pg.conninfo=<db, else the test server>" (borrowed, valid until the next call). */
const char *ol_test_pg_args(const char *prefix, int partitions, const char *db);
/* The source tree under test: $ORDERLOG_SOURCE_DIR, else ".". */
const char *ol_test_src_dir(void);
/* Runs ops/stack <args> of the source tree, with env (more "NAME=value"
 * assignments for it, NULL for none) before it; *out (may be NULL) gets its
 * stdout and stderr together. Returns its exit status. */
int ol_test_stack(const char *env, const char *args, char **out);
/* True when `ops/stack env` prints key (e.g. "ORDERLOG_PG_CONNINFO='")
 * followed by exactly value and then one of the characters of end: the tests
 * run against the service ops/stack starts and stops. */
bool ol_test_stack_serves(const char *key, const char *value, const char *end);
/* ops/stack <args>, failing the test unless it exits 0. */
void ol_test_stack_ok(const char *args);
/* For a teardown: when *stopped, runs ops/stack <args> (a start), expecting
 * exit 0 (cr_expect), and clears *stopped. */
void ol_test_stack_restore(bool *stopped, const char *args);
/* The wall clock in milliseconds since the epoch (record times, requested_at). */
long long ol_test_wall_ms(void);
/* "2026-01-02T03:04:05.678Z" as milliseconds since the epoch; -1 when it is not that (or NULL). */
long long ol_test_parse_time(const char *s);
/* The seed of a randomized test: $OL_TEST_SEED, else one made of the time
 * and pid; logged (and printed to stderr, after "<test>: ") so that a run can
 * be repeated, and given to srand(). */
unsigned ol_test_seed(const char *test);

/* ---- more helpers: a test's topics, the gate, what roles print ---- */

/* "-X topic.prefix=<prefix> -X topic.partitions=<partitions>", with
 * none_prefix while prefix is "" (borrowed, valid until the next call). */
const char *ol_test_topic_args(const char *prefix, const char *none_prefix, int partitions);
/* Writes "<stem><tag>_<pid>_" to prefix (size bytes): a topic prefix of the test's own. */
void ol_test_take_prefix(char *prefix, size_t size, const char *stem, const char *tag);
/* Writes text to dir/name and publishes it with `orderlog <fixed_args> publish`;
 * fails the test unless it exits 0. */
void ol_test_publish_file(const char *fixed_args, const char *dir, const char *name, const char *text);
/* Deletes the consumer groups <prefix><suffix> for the NULL-terminated
 * suffixes (NULL: none); best effort, quiet. */
void ol_test_delete_prefixed_groups(const char *prefix, const char *const *suffixes);
/* A test's cleanup (best effort, quiet). When prefix is not "": deletes
 * the consumer groups <prefix><suffix> for the NULL-terminated suffixes
 * (NULL: none), then the topics (`orderlog <fixed_args> topics delete`).
 * Then drops the database db and removes the directory dir, each when not
 * NULL or "". */
void ol_test_cleanup(const char *fixed_args, const char *prefix, const char *const *suffixes, const char *db,
                     const char *dir);
/* Appends the rows of sql, as ol_test_pg_query_rows gives them, to *all (a
 * new string that replaces it; free it). Fails the test on an error. */
void ol_test_pg_append_rows(char **all, const char *conninfo, const char *sql);
/* Makes a scratch directory into dir and a fresh prefix "<stem><pid>_<n>_"
 * (n counts the calls) into prefix. Fails the test when it cannot. */
void ol_test_fresh(char *dir, size_t dir_size, char *prefix, size_t prefix_size, const char *stem);
/* Sorts the n strings of items (in place) and joins them with spaces, as a
 * new string. */
char *ol_test_sorted_join(const char **items, size_t n);
/* Stops the background process with SIGTERM, failing the test unless it
 * exits 0 within timeout_ms (the message names it as what). Does not free it. */
void ol_test_bg_stop_ok(ol_test_bg_t *bg, const char *what, int timeout_ms);
/* Sends SIGTERM to the background process and waits up to timeout_ms for
 * it; its exit status (-1 on timeout), as ol_test_bg_wait. */
int ol_test_bg_term(ol_test_bg_t *bg, int timeout_ms);
/* The lines of text (each a JSON value, as tail prints them) as a new JSON
 * array; fails the test on a line that is not JSON. text is cut up (strtok). */
json_t *ol_test_json_lines(char *text);
/* The value of sample (its full name with labels) in a /metrics text; the
 * last one when it stands more than once, -1 when absent. */
long long ol_test_metric_in(const char *text, const char *sample);
/* Starts `orderlog -X topic.prefix=<prefix> -X gate.listen=127.0.0.1:0 <extra> gate`
 * into *gate (set at once, so that the test's teardown frees it whatever
 * happens) and waits for its "gate listening on" line; *port gets its port.
 * Fails the test when it does not start. */
void ol_test_start_gate(ol_test_bg_t **gate, int *port, const char *prefix, const char *extra);

/* An HTTP answer. */
typedef struct ol_test_reply_s {
    int status;
    char *headers; /* raw, new string */
    char *body;    /* new string */
    json_t *json;  /* the body parsed, or NULL */
    long long ms;  /* time to answer, when measured */
} ol_test_reply_t;
/* Frees what r holds and zeroes it. */
void ol_test_reply_free(ol_test_reply_t *r);

#endif
