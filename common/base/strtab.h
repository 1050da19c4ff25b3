#ifndef OL_STRTAB_H
#define OL_STRTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A string table with removal: every distinct string it holds has a dense
 * id (0, 1, 2, …; the id of a removed string is given again later), for
 * tables that must stay small with millions of keys and shrink when keys
 * go (common/base/intern.h is the same without removal). A string costs its
 * bytes + 2 (length, NUL; + 4 past 254 bytes) + 4 (id → place) + 5 to 10
 * (hash slot and tag at a load of 3/8 to 3/4), and no malloc of its own.
 *
 * Strings live in groups (ngroups, fixed at creation): each group has its
 * own chunks, which are freed when its last string is removed or moved
 * away, so a caller that empties groups as a whole (ids bucketed by time,
 * one group per slice) never copies. A table of one group compacts itself
 * instead, once removed strings take more than half of what its live ones
 * do. The hash table halves when 1/8 full; with no string left, everything
 * but the table itself is freed.
 *
 * Deterministic: the same sequence of calls gives the same ids. Not
 * thread-safe; concurrent finds are safe while nothing changes. */
typedef struct ol_strtab_s ol_strtab_t;

#define OL_STRTAB_NONE UINT32_MAX
#define OL_STRTAB_MAX_GROUPS 64

/* 1 <= ngroups <= OL_STRTAB_MAX_GROUPS. */
ol_strtab_t *ol_strtab_new(unsigned ngroups);
void ol_strtab_destroy(ol_strtab_t *t);

/* The id of s (len bytes, any bytes), OL_STRTAB_NONE when it is not held. */
uint32_t ol_strtab_find(const ol_strtab_t *t, const char *s, size_t len);
/* The id of s, added to group when new (*added, may be NULL, says so); a
 * string already held stays in its group. Aborts past 2^31 - 1 ids or 2 GiB
 * of strings. */
uint32_t ol_strtab_add(ol_strtab_t *t, const char *s, size_t len, unsigned group, bool *added);
/* The string of a held id, NUL-terminated (len may be NULL). Borrowed:
 * valid until the next ol_strtab_remove or ol_strtab_move. */
const char *ol_strtab_str(const ol_strtab_t *t, uint32_t id, size_t *len);
unsigned ol_strtab_group(const ol_strtab_t *t, uint32_t id);
/* Puts the string of id into another group (same id). */
void ol_strtab_move(ol_strtab_t *t, uint32_t id, unsigned group);
/* Forgets the string of a held id; its id may be given again. */
void ol_strtab_remove(ol_strtab_t *t, uint32_t id);
uint32_t ol_strtab_count(const ol_strtab_t *t);
/* Every held id is below this (arrays indexed by id need this many). */
uint32_t ol_strtab_limit(const ol_strtab_t *t);
/* Bytes allocated (capacities, not only what is used). */
size_t ol_strtab_bytes(const ol_strtab_t *t);

#endif
