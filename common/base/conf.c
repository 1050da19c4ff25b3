#include "common/base/conf.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

typedef struct conf_entry_s {
    char *name;
    char *value;
} conf_entry_t;

struct ol_conf_s {
    const ol_conf_prop_t *props; /* borrowed: static */
    conf_entry_t *entries;
    size_t count, cap;
};

const ol_conf_prop_t *ol_conf_table(const ol_conf_t *conf) {
    return conf->props;
}

static const ol_conf_prop_t *prop_find(const ol_conf_t *conf, const char *name) {
    for (const ol_conf_prop_t *p = conf->props; p->name; p++)
        if (!strcmp(p->name, name))
            return p;
    return NULL;
}

static conf_entry_t *entry_find(const ol_conf_t *conf, const char *name) {
    for (size_t i = 0; i < conf->count; i++)
        if (!strcmp(conf->entries[i].name, name))
            return &conf->entries[i];
    return NULL;
}

static void entry_put(ol_conf_t *conf, const char *name, const char *value) {
    conf_entry_t *e = entry_find(conf, name);
    if (e) {
        free(e->value);
        e->value = ol_xstrdup(value);
        return;
    }
    if (conf->count == conf->cap) {
        conf->cap = conf->cap ? conf->cap * 2 : 32;
        conf->entries = ol_xrealloc(conf->entries, conf->cap * sizeof(*conf->entries));
    }
    conf->entries[conf->count].name = ol_xstrdup(name);
    conf->entries[conf->count].value = ol_xstrdup(value);
    conf->count++;
}

ol_conf_t *ol_conf_new_from(const ol_conf_prop_t *props) {
    ol_conf_t *conf = ol_xcalloc(1, sizeof(*conf));
    conf->props = props;
    for (const ol_conf_prop_t *p = props; p->name; p++)
        entry_put(conf, p->name, p->def);
    return conf;
}

ol_conf_t *ol_conf_dup(const ol_conf_t *conf) {
    ol_conf_t *copy = ol_xcalloc(1, sizeof(*copy));
    copy->props = conf->props;
    for (size_t i = 0; i < conf->count; i++)
        entry_put(copy, conf->entries[i].name, conf->entries[i].value);
    return copy;
}

void ol_conf_destroy(ol_conf_t *conf) {
    if (!conf)
        return;
    for (size_t i = 0; i < conf->count; i++) {
        free(conf->entries[i].name);
        free(conf->entries[i].value);
    }
    free(conf->entries);
    free(conf);
}

static bool enum_has(const char *enums, const char *value) {
    size_t n = strlen(value);
    for (const char *p = enums; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && !strncmp(p, value, n))
            return true;
        if (!comma)
            break;
        p = comma + 1;
    }
    return false;
}

static int parse_bool(const char *v) {
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "on"))
        return 1;
    if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "off"))
        return 0;
    return -1;
}

ol_err_t ol_conf_set(ol_conf_t *conf, const char *name, const char *value, char *errstr, size_t errstr_size) {
    const ol_conf_prop_t *p = prop_find(conf, name);
    if (!p) {
        if (!strncmp(name, "kafka.", 6) && name[6]) {
            entry_put(conf, name, value);
            return OL_ERR_OK;
        }
        return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "unknown property \"%s\"", name);
    }
    switch (p->type) {
    case OL_CONF_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end)
            return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "property \"%s\": \"%s\" is not an integer", name,
                           value);
        if (v < p->min || v > p->max)
            return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "property \"%s\": %lld is out of range [%lld, %lld]",
                           name, v, (long long)p->min, (long long)p->max);
        break;
    }
    case OL_CONF_BOOL:
        if (parse_bool(value) < 0)
            return ol_errf(errstr, errstr_size, OL_ERR_CONFIG,
                           "property \"%s\": \"%s\" is not a boolean (true or false)", name, value);
        break;
    case OL_CONF_ENUM:
        if (!enum_has(p->enums, value))
            return ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "property \"%s\": \"%s\" is not one of %s", name, value,
                           p->enums);
        break;
    case OL_CONF_STR:
        break;
    }
    entry_put(conf, name, value);
    return OL_ERR_OK;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

ol_err_t ol_conf_load_file(ol_conf_t *conf, const char *path, char *errstr, size_t errstr_size) {
    FILE *fp = fopen(path, "r");
    if (!fp)
        return ol_errf(errstr, errstr_size, OL_ERR_IO, "could not open config file %s: %s", path, strerror(errno));
    char *line = NULL, sub[512];
    size_t cap = 0;
    long lineno = 0;
    ol_err_t err = OL_ERR_OK;
    while (getline(&line, &cap, fp) >= 0) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            err = ol_errf(errstr, errstr_size, OL_ERR_CONFIG, "%s line %ld: expected \"name = value\"", path, lineno);
            break;
        }
        *eq = '\0';
        if ((err = ol_conf_set(conf, trim(s), trim(eq + 1), sub, sizeof(sub)))) {
            ol_errf(errstr, errstr_size, err, "%s line %ld: %s", path, lineno, sub);
            break;
        }
    }
    free(line);
    fclose(fp);
    return err;
}

ol_err_t ol_conf_load_env(ol_conf_t *conf, char *const *envp, char *errstr, size_t errstr_size) {
    static const char prefix[] = "ORDERLOG_";
    for (; envp && *envp; envp++) {
        const char *kv = *envp;
        if (strncmp(kv, prefix, sizeof(prefix) - 1))
            continue;
        const char *eq = strchr(kv, '=');
        if (!eq)
            continue;
        char name[256];
        size_t n = (size_t)(eq - kv) - (sizeof(prefix) - 1);
        if (n == 0 || n >= sizeof(name))
            continue;
        for (size_t i = 0; i < n; i++) {
            char c = kv[sizeof(prefix) - 1 + i];
            name[i] = c == '_' ? '.' : (char)tolower((unsigned char)c);
        }
        name[n] = '\0';
        /* ORDERLOG_CONFIG names the file, and variables of other tools
         * (ORDERLOG_STACK_* of ops/stack) are not properties. */
        if (!strcmp(name, "config") || (!prop_find(conf, name) && strncmp(name, "kafka.", 6)))
            continue;
        char sub[512];
        ol_err_t err = ol_conf_set(conf, name, eq + 1, sub, sizeof(sub));
        if (err)
            return ol_errf(errstr, errstr_size, err, "environment %.*s: %s", (int)(eq - kv), kv, sub);
    }
    return OL_ERR_OK;
}

static const char *must_get(const ol_conf_t *conf, const char *name, ol_conf_type_t type) {
    const ol_conf_prop_t *p = prop_find(conf, name);
    OL_ASSERT(p && p->type == type);
    const conf_entry_t *e = entry_find(conf, name);
    OL_ASSERT(e);
    return e->value;
}

const char *ol_conf_str(const ol_conf_t *conf, const char *name) {
    const ol_conf_prop_t *p = prop_find(conf, name);
    OL_ASSERT(p && (p->type == OL_CONF_STR || p->type == OL_CONF_ENUM));
    return entry_find(conf, name)->value;
}

int64_t ol_conf_int(const ol_conf_t *conf, const char *name) {
    return strtoll(must_get(conf, name, OL_CONF_INT), NULL, 10);
}

bool ol_conf_bool(const ol_conf_t *conf, const char *name) {
    return parse_bool(must_get(conf, name, OL_CONF_BOOL)) == 1;
}

int ol_conf_foreach_kafka(const ol_conf_t *conf, int (*fn)(void *opaque, const char *name, const char *value),
                          void *opaque) {
    for (size_t i = 0; i < conf->count; i++) {
        if (strncmp(conf->entries[i].name, "kafka.", 6))
            continue;
        int rc = fn(opaque, conf->entries[i].name + 6, conf->entries[i].value);
        if (rc)
            return rc;
    }
    return 0;
}

static const char *type_name(const ol_conf_prop_t *p) {
    switch (p->type) {
    case OL_CONF_INT:
        return "integer";
    case OL_CONF_BOOL:
        return "boolean";
    case OL_CONF_ENUM:
        return "enum";
    default:
        return "string";
    }
}

static void env_name(const char *name, char *out, size_t out_size) {
    size_t n = (size_t)snprintf(out, out_size, "ORDERLOG_");
    for (const char *s = name; *s && n + 1 < out_size; s++)
        out[n++] = *s == '.' ? '_' : (char)toupper((unsigned char)*s);
    out[n] = '\0';
}

void ol_conf_table_write_sample(const ol_conf_prop_t *props, FILE *fp) {
    fputs("# orderlog configuration: every property with its default.\n"
          "# Generated by `orderlog config --sample`; do not edit by hand.\n"
          "# Precedence: flags (-X name=value) > environment (ORDERLOG_NAME) > this file > default.\n"
          "# Any kafka.<property> is passed to librdkafka as <property>.\n",
          fp);
    for (const ol_conf_prop_t *p = props; p->name; p++) {
        char env[128];
        env_name(p->name, env, sizeof(env));
        fprintf(fp, "\n# %s\n# type: %s", p->help, type_name(p));
        if (p->type == OL_CONF_INT)
            fprintf(fp, ", range [%lld, %lld]", (long long)p->min, (long long)p->max);
        if (p->type == OL_CONF_ENUM)
            fprintf(fp, ", one of %s", p->enums);
        fprintf(fp, "; environment: %s\n#%s = %s\n", env, p->name, p->def);
    }
}

void ol_conf_table_write_markdown(const ol_conf_prop_t *props, FILE *fp) {
    fputs("| property | type | default | environment | description |\n"
          "|---|---|---|---|---|\n",
          fp);
    for (const ol_conf_prop_t *p = props; p->name; p++) {
        char env[128], type[128];
        env_name(p->name, env, sizeof(env));
        if (p->type == OL_CONF_INT)
            snprintf(type, sizeof(type), "integer [%lld, %lld]", (long long)p->min, (long long)p->max);
        else if (p->type == OL_CONF_ENUM)
            snprintf(type, sizeof(type), "one of %s", p->enums);
        else
            snprintf(type, sizeof(type), "%s", type_name(p));
        fprintf(fp, "| `%s` | %s | `%s` | `%s` | %s |\n", p->name, type, p->def, env, p->help);
    }
}
