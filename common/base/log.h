#ifndef OL_LOG_H
#define OL_LOG_H

/* Logging: one JSON object per line on stderr
 * {"ts":"2026-11-22T15:00:00.123Z","level":"info","role":"publish","msg":"..."}.
 * Thread-safe (each line is a single write). */

typedef enum ol_log_level_e { OL_LOG_DEBUG, OL_LOG_INFO, OL_LOG_WARN, OL_LOG_ERROR } ol_log_level_t;

void ol_log_init(const char *role, ol_log_level_t min_level);
/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int ol_log_level_parse(const char *s);
void ol_log(ol_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ol_log_debug(...) ol_log(OL_LOG_DEBUG, __VA_ARGS__)
#define ol_log_info(...) ol_log(OL_LOG_INFO, __VA_ARGS__)
#define ol_log_warn(...) ol_log(OL_LOG_WARN, __VA_ARGS__)
#define ol_log_error(...) ol_log(OL_LOG_ERROR, __VA_ARGS__)

#endif
