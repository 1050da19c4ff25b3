#include "common/base/time.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/base/util.h"

int64_t ol_time_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ol_time_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void ol_time_format(int64_t ms, char *out, size_t out_size) {
    /* the seconds part is cached per thread: events come in bursts of one second */
    static _Thread_local int64_t cached_secs = INT64_MIN;
    static _Thread_local char cached[32];
    if (ms < OL_TIME_MIN_MS)
        ms = OL_TIME_MIN_MS;
    if (ms > OL_TIME_MAX_MS)
        ms = OL_TIME_MAX_MS;
    int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int millis = (int)(ms - secs * 1000);
    if (secs != cached_secs) {
        /* the civil date of a day number, by arithmetic (the projector
         * formats a time per value it writes: gmtime_r and snprintf were a
         * visible share of its applier) */
        int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400, rem = secs - days * 86400;
        int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
        int64_t doe = z - era * 146097;                                      /* [0, 146096] */
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
        int64_t mp = (5 * doy + 2) / 153;                                    /* [0, 11], from March */
        int day = (int)(doy - (153 * mp + 2) / 5 + 1), month = (int)(mp < 10 ? mp + 3 : mp - 9);
        int year = (int)(yoe + era * 400 + (month <= 2));
        int hms[3] = {(int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60)};
        char *o = cached;
        for (int d = 1000; d; d /= 10)
            *o++ = (char)('0' + year / d % 10);
        const int parts[5] = {month, day, hms[0], hms[1], hms[2]};
        const char seps[5] = {'-', '-', 'T', ':', ':'};
        for (int i = 0; i < 5; i++) {
            *o++ = seps[i];
            *o++ = (char)('0' + parts[i] / 10);
            *o++ = (char)('0' + parts[i] % 10);
        }
        *o = '\0';
        cached_secs = secs;
    }
    OL_ASSERT(out_size >= 25);
    memcpy(out, cached, 19);
    out[19] = '.';
    out[20] = (char)('0' + millis / 100);
    out[21] = (char)('0' + millis / 10 % 10);
    out[22] = (char)('0' + millis % 10);
    out[23] = 'Z';
    out[24] = '\0';
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char **p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

int ol_time_parse(const char *s, int64_t *out_ms) {
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, ms = 0;
    const char *p = s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &sec))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return -1;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -1;
    if (*p == '.') {
        p++;
        int n = 0;
        while (isdigit((unsigned char)*p)) {
            if (n < 3)
                ms = ms * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0)
            return -1;
        for (; n < 3; n++)
            ms *= 10;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p)
        return -1;
    int64_t days = days_from_civil(y, mo, d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - (int64_t)offset_min * 60;
    int64_t t = secs * 1000 + ms;
    if (t < OL_TIME_MIN_MS || t > OL_TIME_MAX_MS)
        return OL_TIME_OUT_OF_RANGE;
    *out_ms = t;
    return 0;
}
