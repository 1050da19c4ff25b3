/* orderlog schemas: registers orderlog's schemas in a schema registry
 * (its Confluent-compatible API) and checks a change against what is
 * registered, so that readers going through the registry (Confluent
 * deserializers, Kafka UI, Connect) can read orderlog's topics and a change
 * that would break them is refused before it ships.
 *
 * Subjects follow Confluent's TopicRecordNameStrategy, as several event
 * types share a topic: "<topic>-<record full name>", the topic with its
 * prefix (orderlog.buy-requests-orderlog.BuyRequested). A subject's
 * versions are the event's orderlog versions in order: history/<E>.v1.avsc,
 * ..., <E>.avsc. */
#include <dirent.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "common/base/kafka.h"
#include "common/base/registry.h"
#include "common/base/util.h"
#include "common/domain/embedded.h"
#include "common/domain/schema.h"
#include "ops/admin/commands.h"

#define SUBJECT_MAX 512

/* One schema file. */
typedef struct avsc_s {
    char *path;     /* as shown in messages */
    char *text;     /* the file without the whitespace around it: what is registered */
    char *fullname; /* namespace.name */
    char *topic;    /* orderlog.topic, without prefix */
    int version;    /* orderlog.version */
} avsc_t;

/* Every version of one record, oldest first. */
typedef struct subject_s {
    char name[SUBJECT_MAX];
    avsc_t **versions;
    size_t n;
} subject_t;

typedef struct schemaset_s {
    avsc_t *files;
    size_t nfiles, cap;
    subject_t *subjects;
    size_t nsubjects;
} schemaset_t;

static void set_free(schemaset_t *set) {
    for (size_t i = 0; i < set->nfiles; i++) {
        free(set->files[i].path);
        free(set->files[i].text);
        free(set->files[i].fullname);
        free(set->files[i].topic);
    }
    for (size_t i = 0; i < set->nsubjects; i++)
        free(set->subjects[i].versions);
    free(set->files);
    free(set->subjects);
    memset(set, 0, sizeof(*set));
}

/* Reads what names and orders a schema; text is copied. */
static int set_add(schemaset_t *set, const char *path, const char *text, size_t len) {
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    int rc = -1;
    if (!j) {
        fprintf(stderr, "orderlog schemas: %s: not JSON: %s at line %d\n", path, jerr.text, jerr.line);
        return -1;
    }
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *ns = json_string_value(json_object_get(j, "namespace"));
    const char *topic = json_string_value(json_object_get(j, "orderlog.topic"));
    json_t *version = json_object_get(j, "orderlog.version");
    if (!type || strcmp(type, "record") || !name || !*name) {
        fprintf(stderr, "orderlog schemas: %s: not an Avro record with a name\n", path);
        goto out;
    }
    if (!topic || !*topic) {
        fprintf(stderr, "orderlog schemas: %s: no \"orderlog.topic\": its subject cannot be named\n", path);
        goto out;
    }
    if (version &&
        (!json_is_integer(version) || json_integer_value(version) < 1 || json_integer_value(version) > 1000000)) {
        fprintf(stderr, "orderlog schemas: %s: \"orderlog.version\" must be a whole number from 1\n", path);
        goto out;
    }
    if (set->nfiles == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 32;
        set->files = ol_xrealloc(set->files, set->cap * sizeof(*set->files));
    }
    avsc_t *f = &set->files[set->nfiles++];
    f->path = ol_xstrdup(path);
    f->text = ol_schema_registry_text(text, len);
    size_t n = strlen(name) + (ns && *ns ? strlen(ns) + 1 : 0) + 1;
    f->fullname = ol_xmalloc(n);
    if (ns && *ns && !strchr(name, '.'))
        snprintf(f->fullname, n, "%s.%s", ns, name);
    else
        snprintf(f->fullname, n, "%s", name);
    f->topic = ol_xstrdup(topic);
    f->version = version ? (int)json_integer_value(version) : 1;
    rc = 0;
out:
    json_decref(j);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Every DIR/<file>.avsc; a missing directory is an error only when required. */
static int set_load_dir(schemaset_t *set, const char *dir, bool required) {
    DIR *d = opendir(dir);
    if (!d) {
        if (!required)
            return 0;
        fprintf(stderr, "orderlog schemas: cannot read the directory %s\n", dir);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !ends_with(e->d_name, ".avsc"))
            continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *path = ol_xmalloc(n);
        snprintf(path, n, "%s/%s", dir, e->d_name);
        FILE *fp = fopen(path, "rb");
        char *text = NULL;
        size_t len = 0;
        if (fp) {
            size_t cap = 0, k;
            char chunk[8192];
            while ((k = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
                if (len + k > 16 * 1024 * 1024) { /* no schema is that large */
                    fprintf(stderr, "orderlog schemas: %s: larger than 16 MiB\n", path);
                    rc = -1;
                    break;
                }
                if (len + k + 1 > cap) {
                    cap = (len + k + 1) * 2;
                    text = ol_xrealloc(text, cap);
                }
                memcpy(text + len, chunk, k);
                len += k;
            }
            if (ferror(fp)) {
                fprintf(stderr, "orderlog schemas: cannot read %s\n", path);
                rc = -1;
            }
            fclose(fp);
        } else {
            fprintf(stderr, "orderlog schemas: cannot open %s\n", path);
            rc = -1;
        }
        if (rc == 0)
            rc = set_add(set, path, text ? text : "", len);
        free(text);
        free(path);
    }
    closedir(d);
    return rc;
}

static int by_version(const void *a, const void *b) {
    const avsc_t *x = *(const avsc_t *const *)a, *y = *(const avsc_t *const *)b;
    return (x->version > y->version) - (x->version < y->version);
}

static int by_subject(const void *a, const void *b) {
    return strcmp(((const subject_t *)a)->name, ((const subject_t *)b)->name);
}

/* Groups the files by subject, versions in order; two files of one version
 * of a record, or one record on two topics, are errors. */
static int set_group(schemaset_t *set, const ol_conf_t *conf) {
    set->subjects = ol_xcalloc(set->nfiles ? set->nfiles : 1, sizeof(*set->subjects));
    for (size_t i = 0; i < set->nfiles; i++) {
        avsc_t *f = &set->files[i];
        char topic[256], name[SUBJECT_MAX];
        ol_kafka_topic_name(conf, f->topic, topic, sizeof(topic));
        snprintf(name, sizeof(name), "%s-%s", topic, f->fullname);
        subject_t *s = NULL;
        for (size_t k = 0; k < set->nsubjects && !s; k++)
            if (!strcmp(set->subjects[k].name, name))
                s = &set->subjects[k];
        if (!s) {
            for (size_t k = 0; k < set->nsubjects; k++)
                if (!strcmp(set->subjects[k].versions[0]->fullname, f->fullname)) {
                    fprintf(stderr, "orderlog schemas: %s puts %s on topic %s, %s on %s\n", f->path, f->fullname,
                            f->topic, set->subjects[k].versions[0]->path, set->subjects[k].versions[0]->topic);
                    return -1;
                }
            s = &set->subjects[set->nsubjects++];
            snprintf(s->name, sizeof(s->name), "%s", name);
            s->versions = ol_xcalloc(set->nfiles, sizeof(*s->versions));
        }
        for (size_t k = 0; k < s->n; k++)
            if (s->versions[k]->version == f->version) {
                fprintf(stderr, "orderlog schemas: %s and %s are both version %d of %s\n", s->versions[k]->path,
                        f->path, f->version, f->fullname);
                return -1;
            }
        s->versions[s->n++] = f;
    }
    for (size_t i = 0; i < set->nsubjects; i++)
        qsort(set->subjects[i].versions, set->subjects[i].n, sizeof(avsc_t *), by_version);
    qsort(set->subjects, set->nsubjects, sizeof(*set->subjects), by_subject);
    return 0;
}

/* The compiled-in schemas, or the .avsc files of DIR and DIR/history. */
static int set_load(schemaset_t *set, const ol_conf_t *conf, const char *dir) {
    int rc = 0;
    if (dir) {
        size_t n = strlen(dir) + sizeof("/history");
        char *hist = ol_xmalloc(n);
        snprintf(hist, n, "%s/history", dir);
        rc = set_load_dir(set, dir, true);
        if (rc == 0)
            rc = set_load_dir(set, hist, false);
        free(hist);
        if (rc == 0 && set->nfiles == 0) {
            fprintf(stderr, "orderlog schemas: no .avsc file in %s\n", dir);
            rc = -1;
        }
    } else {
        for (const ol_embedded_t *e = ol_embedded_schemas; e->path && rc == 0; e++)
            rc = set_add(set, e->path, e->data, e->len);
    }
    return rc ? rc : set_group(set, conf);
}

/* What in schema (the new version) a reader of latest, or latest's
 * readers, may not resolve: fields added without a default, fields whose
 * type changed, fields removed that had no default. Top-level fields only:
 * a hint for the message when the registry gives no reason. */
static void diagnose(const char *schema, const char *latest, char *out, size_t out_size) {
    json_t *now = json_loads(schema, 0, NULL), *was = json_loads(latest, 0, NULL);
    json_t *nf = json_object_get(now, "fields"), *wf = json_object_get(was, "fields"), *f, *g;
    size_t i, k, used = 0;
    out[0] = '\0';
#define SAY(...)                                                                \
    do {                                                                        \
        if (used < out_size)                                                    \
            used += (size_t)snprintf(out + used, out_size - used, __VA_ARGS__); \
    } while (0)
    json_array_foreach(nf, i, f) {
        const char *name = json_string_value(json_object_get(f, "name"));
        json_t *old = NULL;
        json_array_foreach(wf, k, g) {
            if (name && json_equal(json_object_get(g, "name"), json_object_get(f, "name")))
                old = g;
        }
        if (!name)
            continue;
        if (!old && !json_object_get(f, "default"))
            SAY("%sfield \"%s\" added without a default", used ? "; " : "", name);
        else if (old && !json_equal(json_object_get(old, "type"), json_object_get(f, "type")))
            SAY("%sfield \"%s\" changed its type", used ? "; " : "", name);
    }
    json_array_foreach(wf, i, g) {
        const char *name = json_string_value(json_object_get(g, "name"));
        bool kept = false;
        json_array_foreach(nf, k, f) {
            kept = kept || json_equal(json_object_get(g, "name"), json_object_get(f, "name"));
        }
        if (name && !kept && !json_object_get(g, "default"))
            SAY("%sfield \"%s\" removed (it had no default)", used ? "; " : "", name);
    }
#undef SAY
    json_decref(now);
    json_decref(was);
}

static void print_version(const subject_t *s, const avsc_t *f) {
    printf("%s: %s (orderlog version %d)", s->name, f->path, f->version);
}

/* Registers the versions of s the registry lacks, after the last one it
 * has, and sets the rule once the subject exists. OL_ERR_INVALID: the
 * registry refused a version (told on stderr); other errors: the registry
 * is not usable (errstr). */
static ol_err_t register_subject(ol_registry_t *r, const subject_t *s, const char *level, char *errstr,
                                 size_t errstr_size) {
    bool found[s->n];
    int ids[s->n], versions[s->n];
    long last = -1;
    ol_err_t err;
    for (size_t i = 0; i < s->n; i++) {
        if ((err = ol_registry_lookup(r, s->name, s->versions[i]->text, &found[i], &ids[i], &versions[i], errstr,
                                      errstr_size)))
            return err;
        if (found[i])
            last = (long)i;
    }
    bool rule_set = false;
    for (size_t i = 0; i < s->n; i++) {
        print_version(s, s->versions[i]);
        if (found[i]) {
            printf(": registered already, version %d, id %d\n", versions[i], ids[i]);
        } else if ((long)i < last) {
            /* registering it now would make an old version the latest */
            printf(": not registered, but a later version is: left out\n");
        } else {
            if (i > 0 && !rule_set) {
                if ((err = ol_registry_set_compatibility(r, s->name, level, errstr, errstr_size)))
                    return err;
                rule_set = true;
            }
            char why[1024];
            int id;
            err = ol_registry_register(r, s->name, s->versions[i]->text, &id, why, sizeof(why));
            if (err == OL_ERR_INVALID) {
                printf(": refused\n");
                fflush(stdout);
                fprintf(stderr, "orderlog schemas register: %s: the registry refused %s: %s\n", s->name,
                        s->versions[i]->path, why);
                return OL_ERR_INVALID;
            }
            if (err)
                return ol_errf(errstr, errstr_size, err, "%s", why);
            printf(": registered, id %d\n", id);
        }
    }
    if (!rule_set && (err = ol_registry_set_compatibility(r, s->name, level, errstr, errstr_size)))
        return err;
    return OL_ERR_OK;
}

static int usage_dir(int argc, char **argv, const char **dir) {
    *dir = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            *dir = argv[++i];
        else if (!strncmp(argv[i], "--dir=", 6) && argv[i][6])
            *dir = argv[i] + 6;
        else
            return ol_cli_usage_error(&ol_cmd_schemas, "unknown argument \"%s\"", argv[i]);
    }
    return 0;
}

static int schemas_run(const ol_conf_t *conf, int argc, char **argv) {
    char errstr[1024];
    if (argc < 2)
        return ol_cli_usage_error(&ol_cmd_schemas, "expected register or check");
    const char *what = argv[1], *dir;
    bool reg = !strcmp(what, "register");
    if (!reg && strcmp(what, "check"))
        return ol_cli_usage_error(&ol_cmd_schemas, "unknown action \"%s\" (register, check)", what);
    if (usage_dir(argc, argv, &dir))
        return OL_EXIT_USAGE;
    schemaset_t set = {0};
    ol_registry_t *r = NULL;
    int rc = OL_EXIT_FAIL;
    if (set_load(&set, conf, dir))
        goto out;
    ol_err_t err = ol_registry_new(ol_conf_str(conf, "registry.url"), (int)ol_conf_int(conf, "registry.timeout.ms"), &r,
                                   errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "orderlog schemas: %s\n", errstr);
        rc = OL_EXIT_USAGE;
        goto out;
    }
    const char *level = ol_conf_str(conf, "registry.compatibility");
    int refused = 0;
    for (size_t i = 0; i < set.nsubjects; i++) {
        const subject_t *s = &set.subjects[i];
        errstr[0] = '\0';
        if (reg) {
            err = register_subject(r, s, level, errstr, sizeof(errstr));
            if (err == OL_ERR_INVALID && !errstr[0]) {
                refused++;
                continue;
            }
        } else {
            const avsc_t *f = s->versions[s->n - 1];
            bool registered, compatible;
            char reason[1024];
            err = ol_registry_check(r, s->name, f->text, &registered, &compatible, reason, sizeof(reason), errstr,
                                    sizeof(errstr));
            char *latest = NULL;
            if (!err && !compatible && !reason[0] &&
                !(err = ol_registry_latest(r, s->name, &latest, errstr, sizeof(errstr))) && latest)
                diagnose(f->text, latest, reason, sizeof(reason));
            free(latest);
            if (!err) {
                print_version(s, f);
                printf(": %s\n", !registered ? "not registered yet" : compatible ? "compatible" : "INCOMPATIBLE");
                if (!compatible) {
                    fflush(stdout);
                    fprintf(stderr,
                            "orderlog schemas check: %s: %s would break readers: the subject's compatibility rule "
                            "refuses it%s%s\n",
                            s->name, f->path, reason[0] ? ": " : "", reason);
                    refused++;
                }
            }
        }
        if (err) {
            fflush(stdout);
            fprintf(stderr, "orderlog schemas %s: %s\n", what, errstr);
            goto out;
        }
    }
    if (refused)
        fprintf(stderr, "orderlog schemas %s: %d of %zu subjects %s\n", what, refused, set.nsubjects,
                reg ? "refused a version" : "would break readers");
    else
        printf("%zu subjects %s at %s\n", set.nsubjects, reg ? "registered" : "compatible", ol_registry_url(r));
    rc = refused ? OL_EXIT_FAIL : OL_EXIT_OK;
out:
    ol_registry_destroy(r);
    set_free(&set);
    return rc;
}

const ol_cmd_t ol_cmd_schemas = {
    "schemas", schemas_run, "register the event schemas in a schema registry, or check a change against it",
    "  register     registers every schema (schemas/ and schemas/history/, compiled in) under the subject\n"
    "               <topic>-<record full name> (orderlog.buy-requests-orderlog.BuyRequested), the versions\n"
    "               in order, and sets registry.compatibility on each subject; what is registered\n"
    "               already is left as it is\n"
    "  check        asks the registry whether the current version of each schema is compatible with\n"
    "               the subject's latest version by the subject's rule; exits 1 naming each subject\n"
    "               whose change would break readers\n"
    "  --dir DIR    the schemas of DIR/*.avsc and DIR/history/*.avsc instead of the compiled-in ones\n"
    "               (each a record with \"orderlog.topic\" and \"orderlog.version\")\n"
    "registry.url names the registry (ORDERLOG_REGISTRY_URL); exit 1 when it cannot be reached.\n"};
