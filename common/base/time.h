#ifndef OL_TIME_H
#define OL_TIME_H

#include <stddef.h>
#include <stdint.h>

/* The times orderlog accepts: 0001-01-01T00:00:00.000Z to
 * 9999-12-31T23:59:59.999Z, in milliseconds since the Unix epoch. RFC 3339
 * also has the year 0000, but PostgreSQL has no year zero (it would be
 * 1 BC), so a projection could never store it. */
#define OL_TIME_MIN_MS (-62135596800000LL)
#define OL_TIME_MAX_MS (253402300799999LL)
/* The message for a time outside them, after "field \"x\": ". */
#define OL_TIME_RANGE_TEXT "is outside the years 0001 to 9999"

/* Wall clock, milliseconds since the Unix epoch. */
int64_t ol_time_now_ms(void);
/* Monotonic clock in microseconds, for durations. */
int64_t ol_time_mono_us(void);
/* RFC 3339 in UTC with milliseconds: 2026-11-22T15:04:05.123Z (24 chars + NUL);
 * times outside [OL_TIME_MIN_MS, OL_TIME_MAX_MS] are clamped to it. */
void ol_time_format(int64_t ms, char *out, size_t out_size);
/* Parses RFC 3339 (with 'Z' or a numeric offset, optional fraction);
 * returns 0 and sets *out_ms, -1 when the text is not a valid time, or
 * OL_TIME_OUT_OF_RANGE when it is one outside [OL_TIME_MIN_MS, OL_TIME_MAX_MS]
 * (the year 0000, or an offset pushing it out of 0001-9999). */
#define OL_TIME_OUT_OF_RANGE (-2)
int ol_time_parse(const char *s, int64_t *out_ms);

#endif
