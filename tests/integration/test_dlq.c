/* orderlog dlq against the real broker and PostgreSQL: poison records of
 * several kinds sent to the dlq by `project`, counted by reason, shown
 * decoded, replayed once their cause is fixed and applied, never twice:
 * not by a second run, not after a run killed with a transaction open, not
 * by two runs at once. An outside reader (kcat) checks the markers and the
 * replayed records.
 *
 * Each test has its own topic prefix (it_project_dlq<tag>_<pid>_), group and
 * database, through the kit of test_project.c. */
#define OL_PROJECT_KIT_ONLY
#include "test_project.c"

TestSuite(dlq, .init = kit_setup, .fini = kit_teardown, .timeout = 300);

static bool have_kcat(void) {
    return ol_test_run("command -v kcat >/dev/null", NULL, NULL) == 0;
}

/* `orderlog dlq <args>` under the test's prefix; fails unless it exits 0; stdout (free it). */
static char *dlq_ok(const char *args) {
    return ol_test_orderlogf_ok(kit_fixed_args(), "dlq %s", args);
}

/* `dlq count` says says. */
static void expect_count(const char *says) {
    char *out = dlq_ok("count");
    cr_expect(strstr(out, says), "%s", out);
    free(out);
}

/* `dlq list --json <args>` as an array of its lines. */
static json_t *dlq_list(const char *args) {
    char *out = ol_test_orderlogf_ok(kit_fixed_args(), "dlq list --json %s", args);
    json_t *arr = json_array();
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        cr_assert(j, "dlq list: not JSON: %s (%s)", line, jerr.text);
        json_array_append_new(arr, j);
    }
    free(out);
    return arr;
}

/* The dlq list entry of the source record at topic[p]@o. */
static json_t *entry_of(json_t *list, const char *short_topic, long long p, long long o) {
    char topic[256];
    kit_topic(short_topic, topic, sizeof(topic));
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        if (!strcmp(json_string_value(json_object_get(e, "topic")), topic) &&
            json_integer_value(json_object_get(e, "partition")) == p &&
            json_integer_value(json_object_get(e, "offset")) == o)
            return e;
    }
    cr_assert_fail("no dead letter of %s[%lld]@%lld", topic, p, o);
    return NULL;
}

static void pos_of(json_t *e, char *out, size_t size) {
    snprintf(out, size, "%lld:%lld", (long long)json_integer_value(json_object_get(e, "dlq_partition")),
             (long long)json_integer_value(json_object_get(e, "dlq_offset")));
}

/* The headers of every record of a topic as kcat prints them (one line
 * each, "name=value,..."), read_committed or not; new string. */
static char *kcat_headers(const char *short_topic, bool committed) {
    char topic[256], *out, *err;
    kit_topic(short_topic, topic, sizeof(topic));
    int rc = ol_test_runf(&out, &err, "kcat -C -b %s -t %s -e -q -X isolation.level=%s -f '%%h\\n'",
                          ol_test_kafka_bootstrap(), topic, committed ? "read_committed" : "read_uncommitted");
    cr_assert_eq(rc, 0, "kcat: exit %d\n%s", rc, err);
    free(err);
    return out;
}

/* How often "<name>=<value>" is a header in kcat's lines (value ends at ',' or the line's end). */
static int header_count(const char *lines, const char *name, const char *value) {
    char needle[256];
    int n = 0;
    snprintf(needle, sizeof(needle), "%s=%s", name, value);
    size_t len = strlen(needle);
    for (const char *p = lines; (p = strstr(p, needle)); p += len)
        if ((p == lines || p[-1] == ',' || p[-1] == '\n') && (p[len] == ',' || p[len] == '\n' || !p[len]))
            n++;
    return n;
}

/* Every record of short_topic carrying dlq_replay_of: each dlq position
 * in positions exactly once, and no other. */
static void assert_replayed_once(const char *short_topic, json_t *positions) {
    char *lines = kcat_headers(short_topic, true);
    size_t i;
    json_t *p;
    int total = 0;
    for (const char *s = lines; (s = strstr(s, "dlq_replay_of=")); s++)
        total++;
    json_array_foreach(positions, i, p) {
        cr_expect_eq(header_count(lines, "dlq_replay_of", json_string_value(p)), 1, "dlq %s replayed %d times\n%s",
                     json_string_value(p), header_count(lines, "dlq_replay_of", json_string_value(p)), lines);
    }
    cr_expect_eq(total, (int)json_array_size(positions), "%d replayed records for %zu dead letters\n%s", total,
                 json_array_size(positions), lines);
    free(lines);
}

#define PAID                                                                                                \
    "{\"type\":\"OrderPaid\",\"data\":{\"order_id\":\"O-DLQ-%d\",\"payment_id\":\"pay-%d\",\"amount\":500," \
    "\"currency\":\"CNY\",\"paid_at\":\"2026-04-01T08:01:00Z\"}}\n"
#define PLACED                                                                                                     \
    "{\"type\":\"OrderPlaced\",\"data\":{\"order_id\":\"O-DLQ-%d\",\"user_id\":\"u-%d\",\"source\":\"external\","  \
    "\"lines\":[{\"sku\":\"SKU-A\",\"quantity\":1,\"unit_price\":500}],\"total_amount\":500,\"currency\":\"CNY\"," \
    "\"placed_at\":\"2026-04-01T08:00:00Z\"}}\n"

/* count OrderPaid (paid) or OrderPlaced lines of the orders O-DLQ-1..count to <dir>/name. */
static void write_lines(const char *name, bool paid, int count, char *path, size_t size) {
    snprintf(path, size, "%s/%s", kit_dir, name);
    FILE *fp = fopen(path, "w");
    cr_assert(fp);
    for (int i = 1; i <= count; i++)
        if (paid)
            fprintf(fp, PAID, i, i);
        else
            fprintf(fp, PLACED, i, i);
    cr_assert(!fclose(fp));
}

Test(dlq, poison_records_counted_shown_and_replayed_once_their_cause_is_fixed) {
    if (!have_kcat())
        cr_skip_test("kcat is not installed");
    const char *db = kit_use_db("dlqflow", "dlq_flow");
    char path[1024], orders[256];
    kit_topic("orders", orders, sizeof(orders));

    /* an OrderPaid before its order, an undecodable record, a misplaced one */
    write_lines("paid.jsonl", true, 1, path, sizeof(path));
    kit_publish(path);
    long long o_bad = ol_test_kafka_produce(orders, -1, "O-BAD", 5, "not an event", 12, NULL);
    int p_bad = kit_partition("O-BAD");
    const char *misplaced = "{\"type\":\"OrderCancelled\",\"data\":{\"order_id\":\"O-MIS\",\"reason\":\"x\","
                            "\"cancelled_at\":\"2026-04-01T08:00:00Z\"}}";
    int p_mis = (kit_partition("O-MIS") + 1) % KIT_PARTITIONS;
    long long o_mis = ol_test_kafka_produce(orders, p_mis, "O-MIS", 5, misplaced, strlen(misplaced), NULL);
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_assert_eq(s.dlq, 3, "%lld records went to the dlq", s.dlq);

    /* count: one group per topic, stage and reason, ids masked */
    char *out = dlq_ok("count --json");
    json_error_t jerr;
    json_t *count = json_loads(out, 0, &jerr);
    cr_assert(count, "count --json: %s\n%s", jerr.text, out);
    free(out);
    cr_expect_eq(json_integer_value(json_object_get(count, "dead_letters")), 3);
    cr_expect_eq(json_integer_value(json_object_get(count, "markers")), 0);
    json_t *groups = json_object_get(count, "groups");
    cr_assert_eq(json_array_size(groups), 3, "%s", json_dumps(groups, 0));
    size_t i;
    json_t *g;
    int seen = 0;
    json_array_foreach(groups, i, g) {
        const char *stage = json_string_value(json_object_get(g, "stage"));
        const char *reason = json_string_value(json_object_get(g, "reason"));
        cr_expect_str_eq(json_string_value(json_object_get(g, "topic")), orders);
        cr_expect_eq(json_integer_value(json_object_get(g, "records")), 1);
        if (!strcmp(stage, "apply")) {
            seen |= 1;
            cr_expect_str_eq(reason, "order \"*\" does not exist");
        } else if (!strcmp(stage, "decode")) {
            seen |= 2;
            cr_expect(!strstr(reason, "O-BAD") && !strpbrk(reason, "0123456789"), "%s", reason);
        } else if (!strcmp(stage, "placement")) {
            seen |= 4;
            cr_expect(strstr(reason, "key \"*\" is on partition # of # but belongs on partition #"), "%s", reason);
        }
    }
    cr_expect_eq(seen, 7, "stages apply, decode and placement each once: %s", json_dumps(groups, 0));
    json_decref(count);
    expect_count("3 dead letters (0 replayed, 3 pending), 0 replay markers");

    /* list and its filters */
    json_t *list = dlq_list("");
    cr_assert_eq(json_array_size(list), 3);
    json_t *paid = NULL;
    json_array_foreach(list, i, g) {
        if (!strcmp(json_string_value(json_object_get(g, "stage")), "apply"))
            paid = g;
    }
    cr_assert(paid);
    cr_expect_str_eq(json_string_value(json_object_get(paid, "key")), "O-DLQ-1");
    cr_expect_str_eq(json_string_value(json_object_get(paid, "status")), "pending");
    cr_expect_str_eq(json_string_value(json_object_get(paid, "group")), kit_group);
    char pos_paid[48], pos_bad[48], args[256];
    pos_of(paid, pos_paid, sizeof(pos_paid));
    pos_of(entry_of(list, "orders", p_bad, o_bad), pos_bad, sizeof(pos_bad));
    cr_expect_str_eq(json_string_value(json_object_get(entry_of(list, "orders", p_mis, o_mis), "stage")), "placement");
    json_t *only = dlq_list("--stage decode --topic orders");
    cr_expect_eq(json_array_size(only), 1);
    json_decref(only);
    only = dlq_list("--reason 'DOES NOT EXIST'");
    cr_expect_eq(json_array_size(only), 1);
    json_decref(only);

    /* show: every header, the payload decoded, or the raw bytes and why not */
    snprintf(args, sizeof(args), "show %s", pos_paid);
    out = dlq_ok(args);
    cr_expect(strstr(out, "payload: OrderPaid (schema version 1)") && strstr(out, "\"payment_id\": \"pay-1\"") &&
                  strstr(out, "dlq_stage: apply") && strstr(out, "ce_type: orderlog.OrderPaid") &&
                  strstr(out, "status:  pending"),
              "%s", out);
    free(out);
    snprintf(args, sizeof(args), "show %s --json", pos_paid);
    out = dlq_ok(args);
    json_t *shown = json_loads(out, 0, &jerr);
    cr_assert(shown, "%s", out);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(shown, "data"), "order_id")), "O-DLQ-1");
    json_decref(shown);
    free(out);
    snprintf(args, sizeof(args), "show %s", pos_bad);
    out = dlq_ok(args);
    cr_expect(strstr(out, "payload: could not be decoded: ") && strstr(out, "raw (12 bytes): \"not an event\""), "%s",
              out);
    free(out);

    /* a dry run says what would happen and writes nothing */
    long long end_before = 0;
    for (int p = 0; p < KIT_PARTITIONS; p++)
        end_before += ol_test_kafka_end_offset(orders, p);
    out = dlq_ok("replay --dry-run --all");
    cr_expect(strstr(out, "would replay 3,"), "%s", out);
    ol_test_expect_line(out, "would replay dlq", pos_bad, "will go back to the dlq (decode)", NULL);
    free(out);
    long long end_after = 0;
    for (int p = 0; p < KIT_PARTITIONS; p++)
        end_after += ol_test_kafka_end_offset(orders, p);
    cr_expect_eq(end_after, end_before, "the dry run wrote to %s", orders);

    /* the cause fixed: the order placed; the payment replayed once */
    write_lines("placed.jsonl", false, 1, path, sizeof(path));
    kit_publish(path);
    out = dlq_ok("replay --reason 'does not exist'");
    cr_expect(strstr(out, "replayed 1, skipped 0"), "%s", out);
    ol_test_expect_line(out, "replayed dlq", pos_paid, NULL);
    free(out);
    out = dlq_ok("replay --reason 'does not exist'");
    cr_expect(strstr(out, "replayed 0, skipped 1"), "%s", out);
    free(out);
    s = kit_project_all(db, kit_group, NULL);
    cr_expect_eq(s.dlq, 0, "the replay went to the dlq again");
    char *row = ol_test_pg_query_str(db, "select status || ' ' || paid_amount from orderlog.orders "
                                         "where order_id = 'O-DLQ-1'");
    cr_expect_str_eq(row, "paid 500");
    free(row);

    /* list and count show it replayed; the marker is no dead letter */
    expect_count("3 dead letters (1 replayed, 2 pending), 1 replay marker");
    json_t *pending = dlq_list("--pending");
    cr_expect_eq(json_array_size(pending), 2);
    json_decref(pending);
    json_t *replayed = dlq_list("--replayed");
    cr_assert_eq(json_array_size(replayed), 1);
    cr_expect(!strncmp(json_string_value(json_object_get(json_array_get(replayed, 0), "replayed_to")), orders,
                       strlen(orders)));
    json_decref(replayed);

    /* an outside reader sees the marker and the replayed record */
    char *dlq_lines = kcat_headers("dlq", true);
    cr_expect_eq(header_count(dlq_lines, "dlq_replayed", pos_paid), 1, "%s", dlq_lines);
    cr_expect(strstr(dlq_lines, "dlq_replayed_to="), "%s", dlq_lines);
    free(dlq_lines);
    json_t *want = json_pack("[s]", pos_paid);
    assert_replayed_once("orders", want);
    json_decref(want);
    char *order_lines = kcat_headers("orders", true);
    char *replay_line = ol_test_find_line(order_lines, "dlq_replay_of=", NULL);
    cr_assert(replay_line);
    cr_expect(strstr(replay_line, "ce_type=orderlog.OrderPaid") && !strstr(replay_line, "dlq_stage") &&
                  !strstr(replay_line, "dlq_error"),
              "%s", replay_line);
    free(replay_line);
    free(order_lines);
    json_decref(list);
}

/* `count` dead letters (OrderPaid before their order) projected to the dlq, then their orders placed. */
static const char *make_pending_payments(int count, const char *tag, json_t **positions) {
    char path[1024];
    const char *db = kit_use_db(tag, tag);
    write_lines("paid.jsonl", true, count, path, sizeof(path));
    kit_publish(path);
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_assert_eq(s.dlq, count);
    write_lines("placed.jsonl", false, count, path, sizeof(path));
    kit_publish(path);
    json_t *list = dlq_list("--reason 'does not exist'");
    cr_assert_eq(json_array_size(list), (size_t)count);
    *positions = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        char pos[48];
        pos_of(e, pos, sizeof(pos));
        json_array_append_new(*positions, json_string(pos));
    }
    json_decref(list);
    return db;
}

static ol_test_bg_t *replay_bg(const char *extra) {
    return ol_test_orderlog_bg("%s dlq replay --reason 'does not exist' %s", kit_fixed_args(), extra);
}

Test(dlq, replay_killed_with_a_transaction_open_then_rerun_replays_each_once) {
    if (!have_kcat())
        cr_skip_test("kcat is not installed");
    enum { N = 12 };
    json_t *positions;
    const char *db = make_pending_payments(N, "dlqkill", &positions);

    /* two transactions of two committed, the third written and left open, killed */
    ol_test_bg_t *bg = replay_bg("--batch 2 --debug-stall-after 2");
    cr_assert_eq(ol_test_bg_wait_stderr(bg, "stalled with transaction 3 open", 1, 90000), 1, "no stall\n%s\n%s",
                 ol_test_bg_stdout(bg), ol_test_bg_stderr(bg));
    ol_test_bg_free(bg); /* SIGKILL */

    char *committed = kcat_headers("dlq", true), *all = kcat_headers("orders", false);
    int markers = 0;
    for (const char *s = committed; (s = strstr(s, "dlq_replayed=")); s++)
        markers++;
    cr_expect_eq(markers, 4, "committed markers after the kill\n%s", committed);
    int written = 0;
    for (const char *s = all; (s = strstr(s, "dlq_replay_of=")); s++)
        written++;
    cr_expect_eq(written, 6, "replayed records written (the open transaction's included)\n%s", all);
    free(committed);
    free(all);

    /* the rerun aborts the open transaction and replays the rest */
    char *out = dlq_ok("replay --reason 'does not exist' --batch 2");
    cr_expect(strstr(out, "replayed 8, skipped 4 (replayed already), 0 failed"), "%s", out);
    free(out);
    assert_replayed_once("orders", positions);
    out = dlq_ok("replay --reason 'does not exist'");
    cr_expect(strstr(out, "replayed 0, skipped 12"), "%s", out);
    free(out);

    /* applied once each */
    kit_summary_t s = kit_project_all(db, kit_group, NULL);
    cr_expect_eq(s.dlq, 0);
    cr_expect_eq(ol_test_pg_query_int(db, "select count(*) from orderlog.orders where status = 'paid' and "
                                          "paid_amount = 500"),
                 N);
    json_decref(positions);
}

Test(dlq, a_second_run_fences_the_first) {
    if (!have_kcat())
        cr_skip_test("kcat is not installed");
    enum { N = 6 };
    json_t *positions;
    make_pending_payments(N, "dlqfence", &positions);

    /* the first run holds its first transaction open; the second fences it */
    ol_test_bg_t *first = replay_bg("--batch 2 --debug-stall-after 0");
    cr_assert_eq(ol_test_bg_wait_stderr(first, "stalled with transaction 1 open", 1, 90000), 1, "no stall\n%s",
                 ol_test_bg_stderr(first));
    char *out = dlq_ok("replay --reason 'does not exist' --batch 4");
    cr_expect(strstr(out, "replayed 6, skipped 0"), "%s", out);
    free(out);
    ol_test_bg_free(first);
    assert_replayed_once("orders", positions);
    json_decref(positions);
}
