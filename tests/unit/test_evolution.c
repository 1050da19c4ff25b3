/* Schema evolution and the registry: payloads written with an older version
 * are read as the current one, and every schema file in schemas/ is loaded. */
#include <criterion/criterion.h>
#include <string.h>

#include "common/domain/codec.h"
#include "common/domain/schema.h"
#include "testutil.h"

OLT_FIXTURE(ol_codec_t, codec, ol_codec_new(), ol_codec_destroy)

TestSuite(evolution, .init = setup, .fini = teardown);
TestSuite(registry);

/* An Avro interface built by avro-c from a schema file of the source tree,
 * not from the registry: the writer is independent of the reader. */
typedef struct writer_schema_s {
    avro_schema_t schema;
    avro_value_iface_t *iface;
} writer_schema_t;

static writer_schema_t load_writer_schema(const char *rel) {
    char *path = olt_path("ORDERLOG_SOURCE_DIR", rel);
    size_t len;
    char *text = olt_read_file(path, &len);
    cr_assert(text, "cannot read %s", path);
    writer_schema_t ws;
    cr_assert_eq(avro_schema_from_json_length(text, len, &ws.schema), 0, "%s: %s", path, avro_strerror());
    ws.iface = avro_generic_class_from_schema(ws.schema);
    cr_assert(ws.iface);
    free(text);
    free(path);
    return ws;
}

static void free_writer_schema(writer_schema_t *ws) {
    avro_value_iface_decref(ws->iface);
    avro_schema_decref(ws->schema);
}

#define V1_REQUEST                                                                                               \
    "{\"request_id\":\"req-v1\",\"session_id\":\"sess-1\",\"client_ip\":\"2001:db8::7\",\"user_id\":\"user-1\"," \
    "\"user_level\":4,\"sku\":\"SKU-OLD\",\"quantity\":3,\"requested_at\":1795000000123}"

static size_t write_v1(unsigned char *buf, size_t size) {
    writer_schema_t ws = load_writer_schema("schemas/history/BuyRequested.v1.avsc");
    size_t len = olt_avro_write(ws.iface, V1_REQUEST, buf, size);
    free_writer_schema(&ws);
    return len;
}

Test(evolution, reads_buy_requested_v1_as_the_current_version) {
    const ol_event_type_t *et = ol_schema_find("BuyRequested");
    cr_assert(et);
    cr_assert_eq(et->version, 2, "this test is about BuyRequested v1 -> v2; update it with the schema");
    unsigned char buf[256];
    size_t len = write_v1(buf, sizeof(buf));

    char errstr[256] = "";
    json_t *out = NULL;
    cr_assert_eq(ol_codec_decode_json(codec, et, 1, buf, len, &out, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    json_t *want = json_loads("{\"request_id\":\"req-v1\",\"session_id\":\"sess-1\",\"client_ip\":\"2001:db8::7\","
                              "\"user_id\":\"user-1\",\"user_level\":4,\"sku\":\"SKU-OLD\",\"quantity\":3,"
                              "\"requested_at\":\"2026-11-18T11:06:40.123Z\",\"channel\":\"\"}",
                              0, NULL);
    cr_assert(want);
    if (!json_equal(out, want)) {
        char *g = json_dumps(out, JSON_SORT_KEYS), *w = json_dumps(want, JSON_SORT_KEYS);
        cr_assert_fail("v1 read as v2:\n  got  %s\n  want %s", g, w);
    }
    json_decref(out);
    json_decref(want);

    /* the Avro value handed out is of the current version */
    avro_value_t *v;
    cr_assert_eq(ol_codec_decode(codec, et, 1, buf, len, &v, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_eq(avro_value_get_type(v), AVRO_RECORD);
    size_t nfields = 0;
    avro_value_get_size(v, &nfields);
    cr_expect_eq(nfields, et->root->nfields, "decoded value has %zu fields, the current version %zu", nfields,
                 et->root->nfields);
    avro_value_t field;
    const char *s;
    size_t size;
    cr_assert_eq(avro_value_get_by_name(v, "channel", &field, NULL), 0);
    cr_assert_eq(avro_value_get_string(&field, &s, &size), 0);
    cr_expect_str_eq(s, "");
    cr_assert_eq(avro_value_get_by_name(v, "quantity", &field, NULL), 0);
    int32_t q = 0;
    avro_value_get_int(&field, &q);
    cr_expect_eq(q, 3);

    /* reading v1 again, after a v2 decode, still works (per-version state) */
    unsigned char v2[256];
    const ol_event_type_t *et2 = et;
    size_t v2len =
        olt_avro_write(et2->iface,
                       "{\"request_id\":\"r2\",\"session_id\":\"\",\"client_ip\":\"1.2.3.4\",\"user_id\":\"u\","
                       "\"user_level\":0,\"sku\":\"S\",\"quantity\":1,\"requested_at\":0,\"channel\":\"gate\"}",
                       v2, sizeof(v2));
    cr_assert_eq(ol_codec_decode_json(codec, et, 2, v2, v2len, &out, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_str_eq(json_string_value(json_object_get(out, "channel")), "gate");
    json_decref(out);
    cr_assert_eq(ol_codec_decode_json(codec, et, 1, buf, len, &out, errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    cr_expect_str_eq(json_string_value(json_object_get(out, "request_id")), "req-v1");
    cr_expect_str_eq(json_string_value(json_object_get(out, "channel")), "");
    json_decref(out);
}

Test(evolution, checks_old_payloads_against_the_current_contract) {
    const ol_event_type_t *et = ol_schema_find("BuyRequested");
    writer_schema_t ws = load_writer_schema("schemas/history/BuyRequested.v1.avsc");
    unsigned char buf[256];
    size_t len = olt_avro_write(ws.iface,
                                "{\"request_id\":\"r\",\"session_id\":\"\",\"client_ip\":\"1.2.3.4\",\"user_id\":\"u\","
                                "\"user_level\":0,\"sku\":\"S\",\"quantity\":0,\"requested_at\":0}",
                                buf, sizeof(buf));
    char errstr[256] = "";
    json_t *out = NULL;
    cr_expect_eq(ol_codec_decode_json(codec, et, 1, buf, len, &out, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "quantity"), "%s", errstr);
    cr_expect_null(out);
    free_writer_schema(&ws);
}

Test(evolution, refuses_v1_bytes_that_are_broken_or_mislabelled) {
    const ol_event_type_t *et = ol_schema_find("BuyRequested");
    unsigned char buf[256];
    size_t len = write_v1(buf, sizeof(buf));
    char errstr[256] = "";
    avro_value_t *v;
    /* v1 bytes lack channel: read as v2 they end too early */
    cr_expect_eq(ol_codec_decode(codec, et, 2, buf, len, &v, errstr, sizeof(errstr)), OL_ERR_INVALID);
    /* every truncation and a trailing byte are refused in the old version too */
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *prefix = ol_xmalloc(cut ? cut : 1);
        memcpy(prefix, buf, cut);
        cr_expect_eq(ol_codec_decode(codec, et, 1, prefix, cut, &v, errstr, sizeof(errstr)), OL_ERR_INVALID,
                     "v1 prefix of %zu/%zu bytes accepted", cut, len);
        free(prefix);
    }
    buf[len] = 0;
    cr_expect_eq(ol_codec_decode(codec, et, 1, buf, len + 1, &v, errstr, sizeof(errstr)), OL_ERR_INVALID);
    cr_expect(strstr(errstr, "trailing"), "%s", errstr);
}

Test(registry, knows_every_readable_version_of_buy_requested) {
    char errstr[256] = "";
    cr_assert_eq(ol_schema_init(errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    const ol_event_type_t *et = ol_schema_find("BuyRequested");
    cr_assert(et);
    const ol_schema_version_t *v1 = ol_schema_version(et, 1), *v2 = ol_schema_version(et, 2);
    cr_assert(v1 && v2);
    cr_expect_eq(v1->version, 1);
    cr_expect_eq(v2->version, 2);
    cr_expect_null(ol_schema_version(et, 3));
    cr_expect_null(ol_schema_version(et, 0));
    cr_expect_eq(et->nhistory, 2);
    /* v1 has no channel; v2 (current) ends with it */
    cr_assert(v1->root && v2->root);
    cr_expect_eq(v2->root->nfields, v1->root->nfields + 1);
    cr_expect_str_eq(v2->root->fields[v2->root->nfields - 1].name, "channel");
    for (size_t i = 0; i < v1->root->nfields; i++)
        cr_expect_neq(strcmp(v1->root->fields[i].name, "channel"), 0);
    cr_expect_eq(avro_schema_record_size(v1->schema), v1->root->nfields);

    /* an event type without history reads only its current version */
    const ol_event_type_t *sr = ol_schema_find("SkuRemoved");
    cr_assert(sr);
    cr_expect_eq(sr->nhistory, 1);
    cr_expect(ol_schema_version(sr, sr->version));
    cr_expect_null(ol_schema_version(sr, sr->version + 1));
}

static int avsc_only(const struct dirent *d) {
    return olt_has_suffix(d->d_name, ".avsc");
}

/* BuyRejected version 2 added too_old at the end of its reason enum: every
 * symbol of version 1 keeps its index, so a version 1 payload reads as it
 * was written. */
Test(registry, buy_rejected_v2_appends_too_old_to_the_reasons_of_v1) {
    char errstr[256] = "";
    cr_assert_eq(ol_schema_init(errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    const ol_event_type_t *et = ol_schema_find("BuyRejected");
    cr_assert(et);
    cr_expect_eq(et->version, 2);
    const ol_schema_version_t *v1 = ol_schema_version(et, 1), *v2 = ol_schema_version(et, 2);
    cr_assert(v1 && v2);
    const ol_node_t *r1 = NULL, *r2 = NULL;
    for (size_t i = 0; i < v1->root->nfields; i++)
        if (!strcmp(v1->root->fields[i].name, "reason"))
            r1 = v1->root->fields[i].type;
    for (size_t i = 0; i < v2->root->nfields; i++)
        if (!strcmp(v2->root->fields[i].name, "reason"))
            r2 = v2->root->fields[i].type;
    cr_assert(r1 && r2);
    cr_assert_eq(r2->nsymbols, r1->nsymbols + 1);
    for (size_t i = 0; i < r1->nsymbols; i++)
        cr_expect_str_eq(r2->symbols[i], r1->symbols[i]);
    cr_expect_str_eq(r2->symbols[r1->nsymbols], "too_old");
}

Test(registry, loads_every_schema_file_of_the_source_tree) {
    char errstr[256] = "";
    cr_assert_eq(ol_schema_init(errstr, sizeof(errstr)), OL_ERR_OK, "%s", errstr);
    char *dir = olt_path("ORDERLOG_SOURCE_DIR", "schemas");
    struct dirent **names;
    int n = scandir(dir, &names, avsc_only, alphasort);
    cr_assert_gt(n, 0, "no schemas in %s", dir);
    size_t ntypes;
    const ol_event_type_t *const *types = ol_schema_types(&ntypes);
    cr_expect_eq(ntypes, (size_t)n, "%zu event types compiled in, %d files in schemas/ (rebuild?)", ntypes, n);

    for (int i = 0; i < n; i++) {
        size_t plen = strlen(dir) + strlen(names[i]->d_name) + 2;
        char *path = ol_xmalloc(plen);
        snprintf(path, plen, "%s/%s", dir, names[i]->d_name);
        json_error_t jerr;
        json_t *doc = json_load_file(path, 0, &jerr);
        cr_assert(doc, "%s: %s", path, jerr.text);
        const char *name = json_string_value(json_object_get(doc, "name"));
        cr_assert(name, "%s has no name", path);
        char want_file[128];
        snprintf(want_file, sizeof(want_file), "%s.avsc", name);
        cr_expect_str_eq(names[i]->d_name, want_file, "file named after its record");

        const ol_event_type_t *et = ol_schema_find(name);
        cr_assert(et, "%s is not in the registry", name);
        char ce_type[128];
        snprintf(ce_type, sizeof(ce_type), "orderlog.%s", name);
        cr_expect_str_eq(et->ce_type, ce_type);
        cr_expect_eq(ol_schema_find(ce_type), et, "found by its CloudEvents type");
        cr_expect_eq(et->version, json_integer_value(json_object_get(doc, "orderlog.version")),
                     "%s: compiled-in version differs from the file (rebuild?)", name);
        cr_expect_str_eq(et->topic, json_string_value(json_object_get(doc, "orderlog.topic")));

        /* its topic is one of the known topics, and not the dlq */
        bool known = false;
        for (const char *const *t = ol_schema_topics(); *t; t++)
            known |= !strcmp(*t, et->topic);
        cr_expect(known, "%s: topic %s is not among ol_schema_topics()", name, et->topic);
        cr_expect_neq(strcmp(et->topic, "dlq"), 0);

        /* key template fields and the subject are required string fields */
        for (const char *p = et->key; (p = strchr(p, '{')); p++) {
            char field[64];
            snprintf(field, sizeof(field), "%.*s", (int)(strchr(p, '}') - p - 1), p + 1);
            const ol_field_t *f = NULL;
            for (size_t k = 0; k < et->root->nfields; k++)
                if (!strcmp(et->root->fields[k].name, field))
                    f = &et->root->fields[k];
            cr_expect(f, "%s: key field %s is not a field", name, field);
            if (f)
                cr_expect(f->type->kind == OL_NODE_STRING || f->type->kind == OL_NODE_ENUM,
                          "%s: key field %s is not a string", name, field);
        }
        bool subject_ok = false;
        for (size_t k = 0; k < et->root->nfields; k++)
            subject_ok |=
                !strcmp(et->root->fields[k].name, et->subject) && et->root->fields[k].type->kind == OL_NODE_STRING;
        cr_expect(subject_ok, "%s: subject %s is not a string field", name, et->subject);

        json_decref(doc);
        free(path);
        free(names[i]);
    }
    free(names);
    free(dir);

    /* the registry is sorted by name and indexes match positions */
    for (size_t i = 0; i < ntypes; i++) {
        cr_expect_eq(types[i]->index, (int)i);
        if (i)
            cr_expect_lt(strcmp(types[i - 1]->name, types[i]->name), 0);
    }
    cr_expect_null(ol_schema_find("NoSuchEvent"));
    cr_expect_null(ol_schema_find("orderlog."));
    cr_expect_null(ol_schema_find(""));
}

Test(registry, lists_every_topic_once) {
    static const char *const want[] = {"buy-requests", "skus",        "sale-events", "blacklist",
                                       "orders",       "after-sales", "dlq",         "decide-snapshots"};
    const char *const *topics = ol_schema_topics();
    size_t n = 0;
    for (; topics[n]; n++) {
        for (size_t k = 0; k < n; k++)
            cr_expect_neq(strcmp(topics[k], topics[n]), 0, "topic %s listed twice", topics[n]);
    }
    cr_assert_eq(n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t k = 0; k < n; k++)
            found |= !strcmp(topics[k], want[i]);
        cr_expect(found, "topic %s of EVENTS.md missing", want[i]);
    }
}
