#include "common/base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/base/util.h"

static const char *const err_strs[] = {
#define OL_ERR_STR(name, str) [OL_ERR_##name] = str,
    OL_ERRORS(OL_ERR_STR)
#undef OL_ERR_STR
};

static const char *const err_names[] = {
#define OL_ERR_NAME(name, str) [OL_ERR_##name] = #name,
    OL_ERRORS(OL_ERR_NAME)
#undef OL_ERR_NAME
};

const char *ol_err2str(ol_err_t err) {
    if ((unsigned)err >= OL_ERR__COUNT)
        return "unknown error";
    return err_strs[err];
}

const char *ol_err2name(ol_err_t err) {
    if ((unsigned)err >= OL_ERR__COUNT)
        return "UNKNOWN";
    return err_names[err];
}

bool ol_err_is_retriable(ol_err_t err) {
    return err == OL_ERR_TRANSIENT || err == OL_ERR_TIMEOUT || err == OL_ERR_UNREACHABLE;
}

ol_err_t ol_errf(char *errstr, size_t errstr_size, ol_err_t err, const char *fmt, ...) {
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n >= errstr_size) /* cut to fit: never inside a character */
            errstr[ol_utf8_trim(errstr, strlen(errstr))] = '\0';
    }
    return err;
}
