/* orderlog project while PostgreSQL restarts under it: the projector must
 * retry with backoff (never exit), resume by itself once the server is back,
 * and end with exactly the projection one clean run makes.
 *
 * This stops the stack's PostgreSQL (ops/stack pg-stop fast / pg-start):
 * every other test using it would fail meanwhile, so ctest runs it alone
 * (RUN_SERIAL in tests/CMakeLists.txt). The teardown starts PostgreSQL
 * again whatever happened. Skipped when the tests use another server than
 * the stack's (ORDERLOG_PG_CONNINFO). */
#define OL_PROJECT_KIT_ONLY
#include "test_project.c"

static bool pg_stopped;

static void pg_teardown(void) {
    ol_test_stack_restore(&pg_stopped, "pg-start");
    kit_teardown();
}

TestSuite(project_pg, .init = kit_setup, .fini = pg_teardown, .timeout = 420);

/* True when the tests run against the stack's PostgreSQL (the one ops/stack restarts). */
static bool stack_pg_under_test(void) {
    return ol_test_stack_serves("ORDERLOG_PG_CONNINFO='", ol_test_pg_conninfo(), "'");
}

Test(project_pg, postgresql_restarted_mid_load_loses_and_duplicates_nothing) {
    if (!stack_pg_under_test())
        cr_skip_test("the tests do not use the PostgreSQL of ops/stack (%s): not restarting it", ol_test_pg_conninfo());
    const char *db = kit_use_db("pgrestart", "project_pgrestart");
    long long published, before;
    kit_totals_t model = kit_publish_load(&published, 84000, 11, 300, 16000, 11);
    ol_test_bg_t *bg = kit_project_started(&before, db, "-X consumer.batch.events=2000");

    pg_stopped = true;
    ol_test_stack_ok("pg-stop fast");
    long long at_stop = kit_offsets_sum(db, kit_group);
    cr_assert_eq(at_stop, -1, "PostgreSQL still answers after pg-stop");
    /* down for a few seconds: the projector keeps trying, it must not exit */
    int rc = ol_test_bg_wait(bg, 4000);
    cr_assert_eq(rc, -1, "project exited (%d) while PostgreSQL was down\nstdout:\n%s\nstderr:\n%s", rc,
                 ol_test_bg_stdout(bg), ol_test_bg_stderr(bg));
    ol_test_stack_ok("pg-start");
    pg_stopped = false;

    long long mid = kit_offsets_sum(db, kit_group);
    cr_assert(mid >= before && mid < published,
              "the restart did not land mid-load: %lld of %lld stored after it (%lld before)", mid, published, before);
    long long stored = kit_wait_offsets(db, kit_group, published, 180000, bg);
    cr_assert_eq(stored, published, "after the restart only %lld of %lld were stored\n%s", stored, published,
                 ol_test_bg_stderr(bg));
    ol_test_bg_signal(bg, SIGTERM);
    rc = ol_test_bg_wait(bg, 40000);
    cr_assert_eq(rc, 0, "exit %d on SIGTERM\n%s", rc, ol_test_bg_stderr(bg));
    kit_summary_t s = kit_summary(ol_test_bg_stdout(bg));
    /* one process from the start: never more than published (a batch whose
     * COMMIT was cut off may be skipped as applied, and is not counted) */
    cr_assert(s.events > 0 && s.events <= published, "it projected %lld events, %lld published", s.events, published);
    cr_assert(s.retries > 0, "no retry counted across a PostgreSQL restart\n%s", ol_test_bg_stdout(bg));
    cr_assert(strstr(ol_test_bg_stderr(bg), "retry"), "nothing logged about retrying\n%s", ol_test_bg_stderr(bg));

    const char *clean = kit_new_db("project_pgrestart_clean");
    const char *clean_group = kit_new_group("pgrestart", "_clean");
    kit_project_all(clean, clean_group, NULL);
    kit_assert_totals(db, &model, "projection through the restart");
    kit_assert_totals(clean, &model, "clean projection");
    kit_assert_same_tables(db, clean, "projection through the restart (left) vs a clean projection (right)");
    kit_assert_offsets_at_end(db, kit_group);
    kit_assert_offsets_at_end(clean, clean_group);
    cr_assert_eq(kit_dlq_count(), 0);
}

/* Started while PostgreSQL is down: it waits (saying so), never exits, and
 * projects everything once the server is up. */
Test(project_pg, started_while_postgresql_is_down_waits_for_it) {
    if (!stack_pg_under_test())
        cr_skip_test("the tests do not use the PostgreSQL of ops/stack (%s): not stopping it", ol_test_pg_conninfo());
    const char *db = kit_use_db("pgdown", "project_pgdown");
    long long published = kit_publish(kit_sample_orders(3000, 5, "orders.jsonl"));
    pg_stopped = true;
    ol_test_stack_ok("pg-stop fast");
    ol_test_bg_t *bg = kit_project_bg(db, kit_group, NULL);
    cr_assert_eq(ol_test_bg_wait_stderr(bg, "waiting for PostgreSQL", 1, 30000), 1, "nothing said while waiting\n%s",
                 ol_test_bg_stderr(bg));
    int rc = ol_test_bg_wait(bg, 3000);
    cr_assert_eq(rc, -1, "project exited (%d) while PostgreSQL was down\n%s", rc, ol_test_bg_stderr(bg));
    ol_test_stack_ok("pg-start");
    pg_stopped = false;
    long long stored = kit_wait_offsets(db, kit_group, published, 120000, bg);
    cr_assert_eq(stored, published, "only %lld of %lld stored after PostgreSQL came up\n%s", stored, published,
                 ol_test_bg_stderr(bg));
    cr_expect(strstr(ol_test_bg_stderr(bg), "PostgreSQL answers again"), "%s", ol_test_bg_stderr(bg));
    ol_test_bg_signal(bg, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(bg, 40000), 0, "%s", ol_test_bg_stderr(bg));
}

/* PostgreSQL killed with SIGKILL mid-load (no shutdown at all: crash
 * recovery at the next start): nothing lost, nothing applied twice. */
Test(project_pg, postgresql_killed_mid_load_loses_and_duplicates_nothing) {
    if (!stack_pg_under_test())
        cr_skip_test("the tests do not use the PostgreSQL of ops/stack (%s): not killing it", ol_test_pg_conninfo());
    const char *db = kit_use_db("pgkill", "project_pgkill");
    char orders[1024];
    snprintf(orders, sizeof(orders), "%s", kit_sample_orders(60000, 13, "orders.jsonl"));
    long long published = kit_publish(orders);
    const char *paths[] = {orders, NULL};
    kit_totals_t model = kit_model(paths);
    long long before;
    ol_test_bg_t *bg = kit_project_started(&before, db, "-X consumer.batch.events=2000");
    const char *src = getenv("ORDERLOG_SOURCE_DIR");
    char pidfile[1024];
    snprintf(pidfile, sizeof(pidfile), "%s/.local/pg/data/postmaster.pid", src && *src ? src : ".");
    char *pidtext = ol_test_read_file(pidfile);
    cr_assert(pidtext, "cannot read %s", pidfile);
    long pid = strtol(pidtext, NULL, 10);
    free(pidtext);
    cr_assert_gt(pid, 1);
    pg_stopped = true;
    cr_assert_eq(kill((pid_t)pid, SIGKILL), 0, "kill -9 %ld", pid);
    long long end = ol_test_now_ms() + 10000; /* its backends notice and go */
    while (kit_offsets_sum(db, kit_group) != -1 && ol_test_now_ms() < end)
        kit_sleep_ms(100);
    cr_assert_eq(ol_test_bg_wait(bg, 3000), -1, "project exited when PostgreSQL died\n%s", ol_test_bg_stderr(bg));
    char *out = NULL;
    int rc = ol_test_stack(NULL, "pg-start", &out);
    cr_assert_eq(rc, 0, "ops/stack pg-start after kill -9: exit %d\n%s", rc, out);
    free(out);
    pg_stopped = false;
    long long stored = kit_wait_offsets(db, kit_group, published, 180000, bg);
    cr_assert_eq(stored, published, "after the crash only %lld of %lld were stored\n%s", stored, published,
                 ol_test_bg_stderr(bg));
    ol_test_bg_signal(bg, SIGTERM);
    cr_assert_eq(ol_test_bg_wait(bg, 40000), 0, "%s", ol_test_bg_stderr(bg));
    const char *clean = kit_new_db("project_pgkill_clean");
    const char *clean_group = kit_new_group("pgkill", "_clean");
    kit_project_all(clean, clean_group, NULL);
    kit_assert_totals(db, &model, "projection through the crash");
    kit_assert_same_tables(db, clean, "projection through the crash (left) vs a clean projection (right)");
    kit_assert_offsets_at_end(db, kit_group);
    cr_assert_eq(kit_dlq_count(), 0);
}
