#ifndef OL_ARENA_H
#define OL_ARENA_H

#include <stddef.h>

/* A bump allocator for everything made while handling one unit of work (a
 * line, a batch): reset it afterwards and error paths free nothing by hand.
 * Not thread-safe: one arena per thread. */
typedef struct ol_arena_s ol_arena_t;

ol_arena_t *ol_arena_new(size_t block_size);
void ol_arena_destroy(ol_arena_t *arena);
/* Frees everything allocated since creation; keeps the first block. */
void ol_arena_reset(ol_arena_t *arena);
/* 16-byte aligned; aborts when memory is exhausted. */
void *ol_arena_alloc(ol_arena_t *arena, size_t size);
char *ol_arena_strndup(ol_arena_t *arena, const char *s, size_t n);
char *ol_arena_sprintf(ol_arena_t *arena, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes handed out since the last reset. */
size_t ol_arena_used(const ol_arena_t *arena);

#endif
