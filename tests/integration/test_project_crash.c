/* orderlog project under crashes: SIGKILL at random moments, and a member of
 * a group of two killed mid-load. After the dust settles the projection must
 * be exactly what one clean run makes (same rows, every column), what the
 * events say (an independent model, see test_project.c), and its stored
 * offsets the end of every partition: nothing lost, nothing applied twice.
 *
 * Besides ops/sample-events orders (snapshots, payments, refunds: applying
 * them twice changes nothing), a stream of StockAdjusted goes along: any
 * record lost or applied twice shows in the stock.
 *
 * The random moments come from a seed printed at the start; set
 * OL_TEST_SEED=<n> to run the same moments again. */
#define OL_PROJECT_KIT_ONLY
#include "test_project.c"

TestSuite(project_crash, .init = kit_setup, .fini = kit_teardown, .timeout = 420);

/* The checks every crash test ends with: a clean projection of the same
 * topics into another database by another group equals db; both hold what
 * the model says; both stored the end of every partition; no dlq. */
static void assert_exact(const char *db, const char *group, const kit_totals_t *model, const char *tag) {
    const char *clean = kit_new_db(tag);
    const char *clean_group = kit_new_group(tag, "_clean");
    kit_summary_t s = kit_project_all(clean, clean_group, NULL);
    cr_assert_eq(s.events, model->events, "the clean run projected %lld events, %lld published", s.events,
                 model->events);
    kit_assert_totals(clean, model, "clean projection");
    kit_assert_totals(db, model, "projection through the crashes");
    kit_assert_same_tables(db, clean, "projection through the crashes (left) vs a clean projection (right)");
    kit_assert_offsets_at_end(db, group);
    kit_assert_offsets_at_end(clean, clean_group);
    cr_assert_eq(kit_dlq_count(), 0, "records went to the dlq");
}

Test(project_crash, kill9_at_random_moments_loses_and_duplicates_nothing) {
    unsigned seed = ol_test_seed("test_project_crash");
    const char *db = kit_use_db("kill9", "project_kill9");
    long long published;
    kit_totals_t model = kit_publish_load(&published, 200000, 1 + seed % 1000, 500, 40000, seed);
    cr_assert_eq(model.dlq, 0);

    /* small batches, so that kills land between and inside many of them */
    const char *extra = "-X consumer.batch.events=2000";
    enum { KILLS = 6 };
    int mid_stream = 0;
    for (int k = 0; k < KILLS; k++) {
        ol_test_bg_t *bg = kit_project_bg(db, kit_group, extra);
        /* a restart waits until the killed member's session expires (10 s):
         * count the moment from when it holds its partitions */
        int assigned = ol_test_bg_wait_stderr(bg, "\"assigned ", 1, 90000);
        cr_assert(assigned >= 1, "kill %d: no assignment within 90 s\n%s", k, ol_test_bg_stderr(bg));
        /* every other time in full flow, once a point of the stream drawn
         * in its own stretch (k+1)/(KILLS+2) +- 1/16 is stored, so that the
         * kill lands mid-stream however fast the projector is; the others
         * 50 to 600 ms after the assignment, while it starts fetching or
         * applies its first batches */
        long delay = 50 + rand() % 551;
        if (k % 2) {
            long long span = published / 16;
            long long target = published * (k + 1) / (KILLS + 2) - span + (long long)(rand() % (int)(2 * span + 1));
            kit_wait_offsets(db, kit_group, target, 60000, bg);
            delay = rand() % 101;
        }
        int rc = ol_test_bg_wait(bg, (int)delay);
        cr_assert_eq(rc, -1, "kill %d: project exited (%d) by itself\nstdout:\n%s\nstderr:\n%s", k, rc,
                     ol_test_bg_stdout(bg), ol_test_bg_stderr(bg));
        ol_test_bg_signal(bg, SIGKILL);
        rc = ol_test_bg_wait(bg, 10000);
        cr_assert_eq(rc, 128 + SIGKILL, "kill %d: exit %d", k, rc);
        long long stored = kit_offsets_sum(db, kit_group);
        cr_log_info("kill %d after %ld ms: %lld of %lld events stored", k, delay, stored, published);
        fprintf(stderr, "test_project_crash: kill %d after %ld ms: %lld of %lld events stored\n", k, delay, stored,
                published);
        if (stored < published)
            mid_stream++;
        kit_bg_free(bg);
    }
    cr_assert(mid_stream >= 3, "only %d of %d kills landed before the end of the stream: the test proves little",
              mid_stream, KILLS);

    kit_summary_t last = kit_project_all(db, kit_group, extra);
    cr_assert(last.events <= published);
    assert_exact(db, kit_group, &model, "project_kill9_clean");
}

/* Total partitions of the topics project reads. */
#define ALL_PARTITIONS ((int)(sizeof(kit_topics_read) / sizeof(kit_topics_read[0])) * KIT_PARTITIONS)

Test(project_crash, two_projectors_one_stopped_mid_load) {
    unsigned seed = ol_test_seed("test_project_crash");
    const char *db = kit_use_db("two", "project_two");
    /* the load is made first and published, in the background, once the
     * two members share the partitions. (Published before, the first member
     * could project all of it while the second joined and the model was
     * computed: "the load was over before the kill" in a CI run.) */
    char orders[1024], skus[1024];
    snprintf(orders, sizeof(orders), "%s", kit_sample_orders(120000, 1 + seed % 1000, "orders.jsonl"));
    snprintf(skus, sizeof(skus), "%s", kit_sample_skus(300, 16000, seed, "skus.jsonl"));
    const char *paths[] = {orders, skus, NULL};
    kit_totals_t model = kit_model(paths);
    long long published = model.events;

    const char *extra = "-X consumer.batch.events=2000";
    ol_test_bg_t *bg[2];
    bg[0] = kit_project_bg(db, kit_group, extra);
    cr_assert(ol_test_bg_wait_stderr(bg[0], "\"assigned ", 1, 60000) >= 1, "no assignment\n%s",
              ol_test_bg_stderr(bg[0]));
    bg[1] = kit_project_bg(db, kit_group, extra);
    long long deadline = ol_test_now_ms() + 60000;
    int held[2] = {0, 0};
    while (ol_test_now_ms() < deadline) {
        for (int i = 0; i < 2; i++) {
            int rc = ol_test_bg_wait(bg[i], 50);
            cr_assert_eq(rc, -1, "member %d exited (%d)\n%s", i, rc, ol_test_bg_stderr(bg[i]));
            held[i] = kit_assigned_now(ol_test_bg_stderr(bg[i]));
        }
        if (held[0] > 0 && held[1] > 0 && held[0] + held[1] == ALL_PARTITIONS)
            break;
    }
    cr_assert(held[0] > 0 && held[1] > 0 && held[0] + held[1] == ALL_PARTITIONS,
              "the two members do not share the %d partitions (%d + %d)\n%s\n%s", ALL_PARTITIONS, held[0], held[1],
              ol_test_bg_stderr(bg[0]), ol_test_bg_stderr(bg[1]));
    char *pub_cmd, *bin = ol_test_shell_quote(ol_test_bin()), *q = ol_test_shell_quote(orders);
    cr_assert(asprintf(&pub_cmd, "exec %s %s publish %s", bin, kit_fixed_args(), q) >= 0);
    ol_test_bg_t *pub = ol_test_bg_start(pub_cmd);
    free(pub_cmd);
    free(bin);
    free(q);
    /* killed once a random share (10 to 60%) of the load is stored: the
     * kill falls mid-load, however fast the publish and the members are */
    long long kill_at = (published * (10 + rand() % 51)) / 100, at_kill = 0;
    for (long long until = ol_test_now_ms() + 120000; ol_test_now_ms() < until && at_kill < kill_at;) {
        ol_test_bg_wait(pub, 10); /* its output read meanwhile */
        at_kill = kit_offsets_sum(db, kit_group);
    }
    cr_assert_geq(at_kill, kill_at, "%lld of %lld stored after 120 s", at_kill, published);
    int victim = rand() % 2, survivor = 1 - victim;
    ol_test_bg_signal(bg[victim], SIGKILL);
    cr_assert_eq(ol_test_bg_wait(bg[victim], 10000), 128 + SIGKILL);
    at_kill = kit_offsets_sum(db, kit_group);
    fprintf(stderr, "test_project_crash: member %d (%d partitions) killed with %lld of %lld stored (aimed at %lld)\n",
            victim, held[victim], at_kill, published, kill_at);
    cr_assert(at_kill < published, "the load was over before the kill (%lld of %lld): the test proves little", at_kill,
              published);
    int prc = ol_test_bg_wait(pub, 120000);
    cr_assert_eq(prc, 0, "publish %s: exit %d\n%s", orders, prc, ol_test_bg_stderr(pub));
    long long n_orders = -1;
    const char *sum = strstr(ol_test_bg_stdout(pub), "published ");
    cr_assert(sum && sscanf(sum, "published %lld", &n_orders) == 1, "publish: no summary\n%s", ol_test_bg_stdout(pub));
    ol_test_bg_free(pub);
    cr_assert_eq(n_orders + kit_publish(skus), published, "published other than the files hold");

    /* the survivor gets the partitions once the victim's session expires, and finishes */
    long long stored = kit_wait_offsets(db, kit_group, published, 180000, bg[survivor]);
    cr_assert_eq(stored, published, "the survivor stored %lld of %lld\n%s", stored, published,
                 ol_test_bg_stderr(bg[survivor]));
    /* the victim's partitions may have been done before the kill: then
     * the offsets are all stored before its session expired and the
     * survivor takes them over only after */
    for (long long until = ol_test_now_ms() + 60000;
         kit_assigned_now(ol_test_bg_stderr(bg[survivor])) != ALL_PARTITIONS && ol_test_now_ms() < until;)
        cr_assert_eq(ol_test_bg_wait(bg[survivor], 200), -1, "the survivor exited\n%s",
                     ol_test_bg_stderr(bg[survivor]));
    cr_assert_eq(kit_assigned_now(ol_test_bg_stderr(bg[survivor])), ALL_PARTITIONS,
                 "the survivor does not hold every partition\n%s", ol_test_bg_stderr(bg[survivor]));
    ol_test_bg_signal(bg[survivor], SIGTERM);
    int rc = ol_test_bg_wait(bg[survivor], 40000);
    cr_assert_eq(rc, 0, "the survivor exited %d on SIGTERM\n%s", rc, ol_test_bg_stderr(bg[survivor]));
    kit_summary_t s = kit_summary(ol_test_bg_stdout(bg[survivor]));
    cr_assert(s.events <= published && s.events > 0, "the survivor projected %lld events", s.events);
    assert_exact(db, kit_group, &model, "project_two_clean");
}
