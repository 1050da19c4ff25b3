#include "common/base/arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"

typedef struct arena_block_s {
    struct arena_block_s *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} arena_block_t;

struct ol_arena_s {
    arena_block_t *head; /* current block; older ones follow */
    size_t block_size, total;
};

static arena_block_t *block_new(size_t size) {
    arena_block_t *b = ol_xmalloc(sizeof(*b) + size);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

ol_arena_t *ol_arena_new(size_t block_size) {
    ol_arena_t *a = ol_xcalloc(1, sizeof(*a));
    a->block_size = block_size ? block_size : 64 * 1024;
    a->head = block_new(a->block_size);
    return a;
}

void ol_arena_destroy(ol_arena_t *a) {
    if (!a)
        return;
    for (arena_block_t *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

void ol_arena_reset(ol_arena_t *a) {
    arena_block_t *b = a->head;
    /* keep only the first (oldest) block, which has the default size */
    while (b->next) {
        arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    if (b->size != a->block_size) {
        free(b);
        b = block_new(a->block_size);
    }
    b->used = 0;
    a->head = b;
    a->total = 0;
}

void *ol_arena_alloc(ol_arena_t *a, size_t size) {
    OL_ASSERT(size <= SIZE_MAX / 2); /* else the rounding below or the block header would wrap */
    size = (size + 15) & ~(size_t)15;
    arena_block_t *b = a->head;
    if (b->size - b->used < size) {
        b = block_new(size > a->block_size ? size : a->block_size);
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    a->total += size;
    return p;
}

char *ol_arena_strndup(ol_arena_t *a, const char *s, size_t n) {
    char *p = ol_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *ol_arena_sprintf(ol_arena_t *a, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = ol_arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

size_t ol_arena_used(const ol_arena_t *a) {
    return a->total;
}
