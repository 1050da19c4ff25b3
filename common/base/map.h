#ifndef OL_MAP_H
#define OL_MAP_H

#include <stddef.h>

/* A hash map from strings to pointers (open addressing, linear probing).
 * Keys are copied; values are the caller's. Not thread-safe. */
typedef struct ol_map_s ol_map_t;

ol_map_t *ol_map_new(void);
void ol_map_destroy(ol_map_t *map);
/* Removes every entry, keeping the capacity. */
void ol_map_clear(ol_map_t *map);
void *ol_map_get(const ol_map_t *map, const char *key, size_t key_len);
/* Sets key to value, replacing what was there. */
void ol_map_put(ol_map_t *map, const char *key, size_t key_len, void *value);
size_t ol_map_count(const ol_map_t *map);
/* Calls fn for every entry, in no particular order. */
void ol_map_foreach(const ol_map_t *map, void (*fn)(void *opaque, const char *key, size_t key_len, void *value),
                    void *opaque);

#endif
