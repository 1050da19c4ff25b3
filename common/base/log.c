#include "common/base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/base/redact.h"
#include "common/base/time.h"

static const char *log_role = "orderlog";
static ol_log_level_t log_min = OL_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ol_log_init(const char *role, ol_log_level_t min_level) {
    log_role = role;
    log_min = min_level;
}

int ol_log_level_parse(const char *s) {
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, level_names[i]))
            return i;
    return -1;
}

/* Appends s JSON-escaped; returns the new length, never past cap - 1. */
static size_t json_escape(char *out, size_t len, size_t cap, const char *s) {
    for (; *s && len + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[len++] = '\\';
            out[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)snprintf(out + len, cap - len, "\\u%04x", c);
        } else {
            out[len++] = (char)c;
        }
    }
    return len;
}

void ol_log(ol_log_level_t level, const char *fmt, ...) {
    if (level < log_min)
        return;
    char msg[2048], line[4600], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* the last guard: a library's message (librdkafka's log, libpq's
     * errors) may echo a secret of the configuration */
    ol_redact_text_inplace(msg, sizeof(msg));
    ol_time_format(ol_time_now_ms(), ts, sizeof(ts));
    size_t len =
        (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"role\":\"", ts, level_names[level]);
    len = json_escape(line, len, sizeof(line), log_role);
    len += (size_t)snprintf(line + len, sizeof(line) - len, "\",\"msg\":\"");
    len = json_escape(line, len, sizeof(line) - 4, msg);
    memcpy(line + len, "\"}\n", 3);
    len += 3;
    ssize_t rc = write(STDERR_FILENO, line, len);
    (void)rc;
}
