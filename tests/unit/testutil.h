/* Helpers shared by the unit tests (header-only: every tests/unit/test_*.c is
 * its own executable). Everything here aborts the test on failure, so callers
 * need no error paths. */
#ifndef OL_TESTUTIL_H
#define OL_TESTUTIL_H

#include <avro.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

/* One case of a table-driven test: an input and what is wanted of it (the
 * message its refusal holds, the value it reads as). */
typedef struct olt_case_s {
    const char *in, *want;
} olt_case_t;

/* A suite's fixture: the static object var, made by the expression make in
 * the suite's .init and freed by destroy(var) in its .fini. Declares var and
 * defines setup() and teardown() for TestSuite. */
#define OLT_FIXTURE(type, var, make, destroy) \
    static type *var;                         \
    static void setup(void) {                 \
        var = (make);                         \
    }                                         \
    static void teardown(void) {              \
        destroy(var);                         \
    }

/* The fixture of a suite that encodes and decodes: a codec and an arena
 * (common/domain/codec.h, common/base/arena.h), new for each test. Declares
 * codec and arena and defines setup() and teardown() for TestSuite. */
#define OLT_CODEC_FIXTURE        \
    static ol_codec_t *codec;    \
    static ol_arena_t *arena;    \
    static void setup(void) {    \
        codec = ol_codec_new();  \
        arena = ol_arena_new(0); \
    }                            \
    static void teardown(void) { \
        ol_codec_destroy(codec); \
        ol_arena_destroy(arena); \
    }

/* $<env>/<rel> as a new string; the test fails when the variable is unset
 * (ctest sets ORDERLOG_FIXTURES and ORDERLOG_SOURCE_DIR). */
static inline char *olt_path(const char *env, const char *rel) {
    const char *root = getenv(env);
    cr_assert(root && *root, "%s is not set: run the test through ctest", env);
    size_t n = strlen(root) + strlen(rel) + 2;
    char *p = ol_xmalloc(n);
    snprintf(p, n, "%s/%s", root, rel);
    return p;
}

/* The whole file as a new NUL-terminated buffer, or NULL when it cannot be
 * opened (errno set). */
static inline char *olt_read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = ol_xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = ol_xrealloc(buf, cap);
        }
    }
    cr_assert(!ferror(fp), "read error on %s", path);
    fclose(fp);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static inline int olt_has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Calls fn for every non-empty line of every file in dir named *suffix, in file
 * name order; returns the number of lines. */
typedef void (*olt_line_fn)(const char *file, long lineno, const char *line, size_t len, void *opaque);

static inline int olt_select_all(const struct dirent *d) {
    return d->d_name[0] != '.';
}

static inline long olt_for_each_line(const char *dir, const char *suffix, olt_line_fn fn, void *opaque) {
    struct dirent **names;
    int n = scandir(dir, &names, olt_select_all, alphasort);
    cr_assert(n >= 0, "cannot list %s", dir);
    long total = 0;
    for (int i = 0; i < n; i++) {
        if (olt_has_suffix(names[i]->d_name, suffix)) {
            size_t plen = strlen(dir) + strlen(names[i]->d_name) + 2;
            char *path = ol_xmalloc(plen);
            snprintf(path, plen, "%s/%s", dir, names[i]->d_name);
            char *text = olt_read_file(path, NULL);
            cr_assert(text, "cannot read %s", path);
            long lineno = 0;
            for (char *p = text; *p;) {
                char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t)(nl - p) : strlen(p);
                lineno++;
                if (len > 0) {
                    fn(names[i]->d_name, lineno, p, len, opaque);
                    total++;
                }
                p += len + (nl ? 1 : 0);
            }
            free(text);
            free(path);
        }
        free(names[i]);
    }
    free(names);
    return total;
}

/* A deterministic generator for the randomized tests (splitmix64). */
static inline uint64_t olt_rand(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Fills a generic Avro value from JSON with avro-c alone, bypassing the
 * codec and its checks: how another writer (or an older orderlog) would
 * produce a payload. Times must be given as epoch ms. */
static inline void olt_avro_fill(avro_value_t *v, json_t *j) {
    switch (avro_value_get_type(v)) {
    case AVRO_STRING:
        cr_assert(json_is_string(j));
        cr_assert_eq(avro_value_set_string_len(v, json_string_value(j), json_string_length(j) + 1), 0);
        break;
    case AVRO_INT32:
        cr_assert(json_is_integer(j));
        cr_assert_eq(avro_value_set_int(v, (int32_t)json_integer_value(j)), 0);
        break;
    case AVRO_INT64:
        cr_assert(json_is_integer(j));
        cr_assert_eq(avro_value_set_long(v, json_integer_value(j)), 0);
        break;
    case AVRO_ENUM: {
        cr_assert(json_is_string(j));
        int sym = avro_schema_enum_get_by_name(avro_value_get_schema(v), json_string_value(j));
        cr_assert(sym >= 0, "no enum symbol %s", json_string_value(j));
        cr_assert_eq(avro_value_set_enum(v, sym), 0);
        break;
    }
    case AVRO_UNION: {
        avro_value_t branch;
        cr_assert_eq(avro_value_set_branch(v, json_is_null(j) ? 0 : 1, &branch), 0);
        if (json_is_null(j))
            cr_assert_eq(avro_value_set_null(&branch), 0);
        else
            olt_avro_fill(&branch, j);
        break;
    }
    case AVRO_ARRAY: {
        size_t i;
        json_t *item;
        json_array_foreach(j, i, item) {
            avro_value_t elem;
            cr_assert_eq(avro_value_append(v, &elem, NULL), 0);
            olt_avro_fill(&elem, item);
        }
        break;
    }
    case AVRO_RECORD: {
        const char *key;
        json_t *fv;
        json_object_foreach(j, key, fv) {
            avro_value_t field;
            cr_assert_eq(avro_value_get_by_name(v, key, &field, NULL), 0, "no field %s: %s", key, avro_strerror());
            olt_avro_fill(&field, fv);
        }
        break;
    }
    default:
        cr_assert_fail("olt_avro_fill: unsupported Avro type %d", (int)avro_value_get_type(v));
    }
}

/* Encodes the JSON object (every field given) with the Avro interface iface
 * into buf; returns the length. */
static inline size_t olt_avro_write(avro_value_iface_t *iface, const char *json_text, void *buf, size_t size) {
    json_error_t jerr;
    json_t *j = json_loads(json_text, 0, &jerr);
    cr_assert(j, "bad JSON in test: %s", jerr.text);
    avro_value_t v;
    cr_assert_eq(avro_generic_value_new(iface, &v), 0);
    olt_avro_fill(&v, j);
    avro_writer_t w = avro_writer_memory(buf, (int64_t)size);
    cr_assert_eq(avro_value_write(w, &v), 0, "avro_value_write: %s", avro_strerror());
    size_t len = (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    avro_value_decref(&v);
    json_decref(j);
    return len;
}

#endif
