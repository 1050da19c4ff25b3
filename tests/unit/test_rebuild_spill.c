/* The rebuild's spill files (consumers/rebuild_spill.c): a record written
 * and read back is the record, headers and all, and decodes as it did from
 * Kafka; the directory under TMPDIR goes with the last set. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "consumers/rebuild.h"
#include "testutil.h"

OLT_CODEC_FIXTURE

TestSuite(rebuild_spill, .init = setup, .fini = teardown);

static rebuild_t rb; /* large: static */
static char tmp[256];

/* A rebuild_t with one bulk topic and, queued, share 2 of 2 of partition 3,
 * TMPDIR a directory of the test's own. */
static void rb_init(void) {
    memset(&rb, 0, sizeof(rb));
    rb.ntopics = 1;
    rb.bulk_topic[0] = true;
    snprintf(rb.topic_names[0], sizeof(rb.topic_names[0]), "orders");
    rb.spill_subs = 1;
    rb.queue = ol_xcalloc(4, sizeof(*rb.queue));
    rb.queue_cap = 4;
    rb.queue[rb.nqueue++] = (unit_t){3, 2, 1};
    snprintf(tmp, sizeof(tmp), "/tmp/olt-spill-%d-XXXXXX", (int)getpid());
    cr_assert(mkdtemp(tmp));
    setenv("TMPDIR", tmp, 1);
}

static int entries(const char *path) {
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

#define MAX_SEEN 8
typedef struct seen_s {
    spill_writer_t *again; /* each record spilled again here (set again_spill) */
    int again_spill;
    int n;
    ol_event_rec_t recs[MAX_SEEN];
    char *copies[MAX_SEEN]; /* key, payload and header bytes, kept */
    ol_envelope_t env[MAX_SEEN];
    char *data[MAX_SEEN]; /* the decoded data as JSON text, or the error */
} seen_t;

static char *decoded(const ol_event_rec_t *rec, ol_envelope_t *env) {
    char errstr[512];
    avro_value_t *value;
    ol_arena_reset(arena);
    if (ol_event_decode_rec(codec, rec, arena, env, &value, errstr, sizeof(errstr)))
        return ol_xstrdup(errstr);
    json_t *j = ol_codec_to_json(env->type, value);
    char *text = json_dumps(j, JSON_SORT_KEYS);
    json_decref(j);
    return text;
}

static ol_err_t on_record(void *opaque, const ol_event_rec_t *rec) {
    seen_t *s = opaque;
    cr_assert_lt(s->n, MAX_SEEN);
    if (s->again)
        ol_rebuild__spill_put(&rb, s->again, s->again_spill, 0, 0, rec);
    int i = s->n++;
    s->recs[i] = *rec;
    s->data[i] = decoded(rec, &s->env[i]);
    /* what the record points into lives only during the call: a copy of
     * the header names and values, as text */
    char buf[4096];
    size_t len = 0;
    for (size_t h = 0; h < rec->nhv; h++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%.*s=%.*s;", (int)rec->hv[h].name_len, rec->hv[h].name,
                                rec->hv[h].value ? (int)rec->hv[h].size : 6,
                                rec->hv[h].value ? (const char *)rec->hv[h].value : "(null)");
    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "|key=%.*s|value=%.*s", (int)rec->key_len,
                            rec->key ? (const char *)rec->key : "", (int)rec->len,
                            rec->payload ? (const char *)rec->payload : "");
    s->copies[i] = ol_xstrdup(buf);
    s->recs[i].hv = NULL;
    s->recs[i].key = s->recs[i].payload = NULL;
    return OL_ERR_OK;
}

Test(rebuild_spill, records_come_back_as_written_and_decode_the_same) {
    rb_init();
    int target;
    cr_assert_eq(ol_rebuild__spill_plan(&rb, 3, -1, &target, 1), 1);
    cr_assert_eq(entries(tmp), 1, "no directory made under TMPDIR");
    spill_writer_t w = {.spill = target, .t = 0, .sub = 0, .fd = -1};

    /* 1: an event as publish writes it (its envelope's headers, Avro) */
    const char *line = "{\"type\":\"OrderCancelled\",\"data\":{\"order_id\":\"O-1\",\"reason\":\"r\","
                       "\"cancelled_at\":\"2026-11-11T00:10:00Z\"},\"id\":\"e-1\",\"time\":\"2026-11-11T00:10:00Z\"}";
    ol_event_t ev;
    char errstr[512] = "";
    cr_assert_eq(ol_event_from_line(arena, line, strlen(line), 1795000000000LL, &ev, errstr, sizeof(errstr)), OL_ERR_OK,
                 "%s", errstr);
    const void *bin;
    size_t bin_len;
    cr_assert_eq(ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &bin, &bin_len, errstr, sizeof(errstr)),
                 OL_ERR_OK, "%s", errstr);
    char *payload = ol_xmalloc(bin_len);
    memcpy(payload, bin, bin_len);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(8);
    ol_envelope_to_headers(&ev.env, hdrs);
    ol_event_rec_t r1 = {"orders", 3, 41, 1795000000123LL, ev.key, strlen(ev.key), payload, bin_len, hdrs, NULL, 0};
    ol_envelope_t env1;
    char *data1 = decoded(&r1, &env1);
    cr_assert(strstr(data1, "O-1"), "%s", data1);
    ol_rebuild__spill_put(&rb, &w, target, 0, 0, &r1);

    /* 2: headers of one name twice (the last counts) and one without a
     * value; no value; an empty key */
    rd_kafka_headers_t *odd = rd_kafka_headers_new(4);
    rd_kafka_header_add(odd, "x", -1, "first", -1);
    rd_kafka_header_add(odd, "nothing", -1, NULL, 0);
    rd_kafka_header_add(odd, "x", -1, "second", -1);
    ol_event_rec_t r2 = {"orders", 3, 42, -1, NULL, 0, NULL, 0, odd, NULL, 0};
    ol_rebuild__spill_put(&rb, &w, target, 0, 0, &r2);

    /* 3: no headers: a publish-format line as the value */
    ol_event_rec_t r3 = {"orders", 3, 43, 1795000000456LL, "O-1", 3, line, strlen(line), NULL, NULL, 0};
    ol_envelope_t env3;
    char *data3 = decoded(&r3, &env3);
    ol_rebuild__spill_put(&rb, &w, target, 0, 0, &r3);
    cr_assert(ol_rebuild__spill_close(&w));
    cr_expect_eq(w.records, 3);

    seen_t seen = {0};
    cr_assert_eq(ol_rebuild__spill_read(&rb, target, 0, 0, on_record, &seen, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    cr_assert_eq(seen.n, 3);
    cr_expect_eq(seen.recs[0].offset, 41);
    cr_expect_eq(seen.recs[0].timestamp, 1795000000123LL);
    cr_expect_eq(seen.recs[0].partition, 3);
    cr_expect_str_eq(seen.data[0], data1);
    cr_expect_eq(seen.env[0].type, env1.type);
    cr_expect_str_eq(seen.env[0].id, env1.id);
    cr_expect_str_eq(seen.env[0].source, env1.source);
    cr_expect_str_eq(seen.env[0].subject, env1.subject);
    cr_expect_eq(seen.env[0].time_ms, env1.time_ms);
    cr_expect_eq(seen.env[0].version, env1.version);
    cr_expect_eq(seen.env[0].content, env1.content);

    cr_expect_eq(seen.recs[1].offset, 42);
    cr_expect_eq(seen.recs[1].timestamp, -1);
    cr_expect_str_eq(seen.copies[1], "x=first;nothing=(null);x=second;|key=|value=");
    cr_expect_eq(seen.recs[1].len, 0);

    cr_expect_eq(seen.recs[2].offset, 43);
    cr_expect_str_eq(seen.data[2], data3);
    cr_expect_str_eq(seen.env[2].id, env3.id);
    cr_expect_eq(seen.env[2].time_ms, env3.time_ms);
    cr_expect_eq(seen.recs[2].nhv, 0);

    /* read from the file and spilled again (a share split after its pass
     * was given up): the same records, the same headers (regression: a
     * record read from a file was spilled again without them) */
    ol_rebuild__spill_pass_end(&rb, true);
    cr_expect_eq(rb.spills[target].state, SPILL_COMPLETE);
    rb.queue[0] = (unit_t){3, 4, 3};
    int again;
    cr_assert_eq(ol_rebuild__spill_plan(&rb, 3, target, &again, 1), 1);
    spill_writer_t w2 = {.spill = again, .t = 0, .sub = 0, .fd = -1};
    seen_t first = {.again = &w2, .again_spill = again};
    cr_assert_eq(ol_rebuild__spill_read(&rb, target, 0, 0, on_record, &first, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    cr_assert(ol_rebuild__spill_close(&w2));
    seen_t second = {0};
    cr_assert_eq(ol_rebuild__spill_read(&rb, again, 0, 0, on_record, &second, errstr, sizeof(errstr)), OL_ERR_OK, "%s",
                 errstr);
    cr_assert_eq(second.n, 3);
    for (int i = 0; i < 3; i++) {
        cr_expect_str_eq(second.copies[i], seen.copies[i]);
        cr_expect_str_eq(second.data[i], seen.data[i]);
        cr_expect_eq(second.recs[i].offset, seen.recs[i].offset);
        cr_expect_eq(second.recs[i].timestamp, seen.recs[i].timestamp);
    }
    for (int i = 0; i < 3; i++) {
        free(first.copies[i]);
        free(first.data[i]);
        free(second.copies[i]);
        free(second.data[i]);
    }

    /* nothing queued needs the sets once their units are gone; cleanup
     * leaves nothing */
    ol_rebuild__spill_pass_end(&rb, true);
    cr_expect_eq(rb.spills[again].state, SPILL_COMPLETE);
    rb.nqueue = 0;
    ol_rebuild__spill_pass_end(&rb, true);
    cr_expect_eq(rb.spills[target].state, SPILL_GONE);
    cr_expect_eq(rb.spills[again].state, SPILL_GONE);
    ol_rebuild__spill_cleanup(&rb);
    cr_expect_eq(entries(tmp), 0, "left in TMPDIR: %d", entries(tmp));
    rmdir(tmp);
    for (int i = 0; i < seen.n; i++) {
        free(seen.copies[i]);
        free(seen.data[i]);
    }
    free(data1);
    free(data3);
    free(payload);
    rd_kafka_headers_destroy(hdrs);
    rd_kafka_headers_destroy(odd);
    ol_event_clear(&ev);
    free(rb.queue);
}

/* The pass over a share reads the smallest complete set that holds its
 * keys; a set from a pass given up is never read. */
Test(rebuild_spill, a_pass_reads_the_smallest_complete_set_holding_its_keys) {
    rb_init();
    rb.queue[0] = (unit_t){3, 2, 1};
    int t1;
    cr_assert_eq(ol_rebuild__spill_plan(&rb, 3, -1, &t1, 1), 1);
    ol_rebuild__spill_pass_end(&rb, false); /* given up */
    cr_expect_eq(rb.spills[t1].state, SPILL_GONE);
    int t2;
    cr_assert_eq(ol_rebuild__spill_plan(&rb, 3, -1, &t2, 1), 1);
    ol_rebuild__spill_pass_end(&rb, true);
    /* share 2 of 2 split in two (2 of 4, 4 of 4): both read the set */
    rb.nqueue = 0;
    rb.queue[rb.nqueue++] = (unit_t){3, 4, 3};
    rb.queue[rb.nqueue++] = (unit_t){3, 4, 1};
    rb.pass[0] = (unit_t){3, 4, 1};
    rb.npass = 1;
    rb.nqueue = 1; /* 2 of 4 taken by the pass */
    cr_expect_eq(ol_rebuild__spill_source(&rb, 3), t2);
    /* that pass fills a set for 4 of 4, which it then prefers */
    int t3;
    cr_assert_eq(ol_rebuild__spill_plan(&rb, 3, t2, &t3, 1), 1);
    cr_expect_eq(rb.spills[t3].u.k, 4);
    ol_rebuild__spill_pass_end(&rb, true);
    cr_expect_eq(rb.spills[t2].state, SPILL_COMPLETE, "a set a queued unit needs went");
    rb.pass[0] = (unit_t){3, 4, 3};
    rb.nqueue = 0;
    cr_expect_eq(ol_rebuild__spill_source(&rb, 3), t3);
    ol_rebuild__spill_pass_end(&rb, true);
    cr_expect_eq(rb.spills[t2].state, SPILL_GONE, "a set no queued unit needs stays");
    cr_expect_eq(rb.spills[t3].state, SPILL_GONE, "a set no queued unit needs stays");
    ol_rebuild__spill_cleanup(&rb);
    cr_expect_eq(entries(tmp), 0);
    rmdir(tmp);
    free(rb.queue);
}

/* A damaged file (only this process writes them, but a disk can fail) is
 * an error naming it, never a read past the record: a record shorter than
 * its fixed fields, and one whose header count runs past its end. */
static void write_raw(int target, const void *bytes, size_t len) {
    char path[4200];
    ol_rebuild__spill_path(&rb, target, 0, 0, path, sizeof(path));
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

Test(rebuild_spill, a_damaged_file_is_an_error_naming_it) {
    rb_init();
    int target;
    cr_assert_eq(ol_rebuild__spill_plan(&rb, 3, -1, &target, 1), 1);
    char errstr[512] = "";
    seen_t seen = {0};
    /* a body of 3 bytes: less than offset, time, lengths and header count */
    unsigned char shorter[7] = {3, 0, 0, 0, 1, 2, 3};
    write_raw(target, shorter, sizeof(shorter));
    cr_expect_eq(ol_rebuild__spill_read(&rb, target, 0, 0, on_record, &seen, errstr, sizeof(errstr)), OL_ERR_IO);
    cr_expect(strstr(errstr, "is damaged"), "%s", errstr);
    /* the fixed fields (26 bytes: no key, no value) saying 200 headers,
     * and none there */
    unsigned char hdrs[30] = {26, 0, 0, 0};
    uint32_t no_len = UINT32_MAX;
    memcpy(hdrs + 4 + 20, &no_len, 4);
    hdrs[4 + 24] = 200;
    write_raw(target, hdrs, sizeof(hdrs));
    errstr[0] = '\0';
    cr_expect_eq(ol_rebuild__spill_read(&rb, target, 0, 0, on_record, &seen, errstr, sizeof(errstr)), OL_ERR_IO);
    cr_expect(strstr(errstr, "is damaged"), "%s", errstr);
    cr_expect_eq(seen.n, 0, "a record of a damaged file was handed on");
    ol_rebuild__spill_cleanup(&rb);
    free(rb.queue);
    rmdir(tmp);
}
