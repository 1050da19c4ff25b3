#ifndef OL_EMBEDDED_H
#define OL_EMBEDDED_H

#include <stddef.h>

/* A source file compiled into the binary (see common/domain/embed.cmake). */
typedef struct ol_embedded_s {
    const char *path; /* relative to the source root, e.g. "schemas/BuyRequested.avsc" */
    const char *data; /* NUL-terminated */
    size_t len;       /* without the NUL */
} ol_embedded_t;

/* Both arrays end with an entry whose path is NULL; entries are sorted by path. */
extern const ol_embedded_t ol_embedded_schemas[];
extern const ol_embedded_t ol_embedded_migrations[];

#endif
