#include "common/domain/rateban.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/list.h"
#include "common/base/util.h"

/* One node per subject, in a chained hash table. A node is in the idle list
 * (least recently seen first) while it is tracked and neither listed nor
 * exempt, and in the lift heap (by until) while it is listed by rate with an
 * until. times[] holds its requests in the window, sorted, as offsets from
 * base (int32: the window is shorter than 2^31 ms). */
#define NOT_IN_HEAP UINT32_MAX
#define LATE_NONE INT64_MIN

typedef struct node_s {
    struct node_s *next;                   /* hash chain */
    OL_LIST_LINK(struct node_s) idle_link; /* idle list: prev older, next newer */
    int64_t latest;                        /* latest request counted, LATE_NONE when none */
    int64_t base;
    int32_t *times;
    uint32_t ntimes, cap;
    int64_t until; /* listed: when it lapses, < 0 never */
    uint64_t hash;
    uint32_t heap_idx;
    uint32_t len;
    uint8_t type, listed, reason, exempt, idle;
    char subject[]; /* NUL-terminated */
} node_t;

struct ol_rateban_s {
    ol_rateban_conf_t conf;
    node_t **buckets;
    size_t nbuckets, nnodes;
    OL_LIST(node_t) idle; /* idle list: head the oldest, tail the newest */
    size_t nidle, tracked, listed, evicted;
    node_t **heap;
    uint32_t nheap, heap_cap;
    size_t times_bytes;
};

static uint64_t hash_subject(ol_subject_t type, const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull ^ (uint64_t)type;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

ol_rateban_t *ol_rateban_new(const ol_rateban_conf_t *conf) {
    OL_ASSERT(conf->window_ms >= 1 && conf->window_ms < INT32_MAX && conf->ban_ms >= 1);
    ol_rateban_t *rw = ol_xcalloc(1, sizeof(*rw));
    rw->conf = *conf;
    rw->nbuckets = 64;
    rw->buckets = ol_xcalloc(rw->nbuckets, sizeof(*rw->buckets));
    return rw;
}

static void node_free(ol_rateban_t *rw, node_t *n) {
    rw->times_bytes -= (size_t)n->cap * sizeof(int32_t);
    free(n->times);
    free(n);
}

void ol_rateban_destroy(ol_rateban_t *rw) {
    if (!rw)
        return;
    for (size_t i = 0; i < rw->nbuckets; i++) {
        for (node_t *n = rw->buckets[i], *next; n; n = next) {
            next = n->next;
            node_free(rw, n);
        }
    }
    free(rw->buckets);
    free(rw->heap);
    free(rw);
}

const char *ol_ban_reason_name(ol_ban_reason_t reason) {
    return reason == OL_BAN_MANUAL ? "manual" : reason == OL_BAN_RATE ? "rate" : "?";
}

const char *ol_subject_name(ol_subject_t type) {
    return type == OL_SUBJECT_IP ? "ip" : type == OL_SUBJECT_USER ? "user" : "?";
}

/* ---- hash table ---------------------------------------------------------- */

static node_t *find(const ol_rateban_t *rw, ol_subject_t type, const char *s, size_t len, uint64_t h) {
    for (node_t *n = rw->buckets[h & (rw->nbuckets - 1)]; n; n = n->next)
        if (n->hash == h && n->type == type && n->len == len && !memcmp(n->subject, s, len))
            return n;
    return NULL;
}

static node_t *lookup(const ol_rateban_t *rw, ol_subject_t type, const char *s) {
    size_t len = strlen(s);
    return find(rw, type, s, len, hash_subject(type, s, len));
}

static node_t *create(ol_rateban_t *rw, ol_subject_t type, const char *s, size_t len, uint64_t h) {
    OL_ASSERT(len < UINT32_MAX);
    if (rw->nnodes + 1 > rw->nbuckets) {
        size_t cap = rw->nbuckets * 2;
        node_t **b = ol_xcalloc(cap, sizeof(*b));
        for (size_t i = 0; i < rw->nbuckets; i++) {
            for (node_t *n = rw->buckets[i], *next; n; n = next) {
                next = n->next;
                n->next = b[n->hash & (cap - 1)];
                b[n->hash & (cap - 1)] = n;
            }
        }
        free(rw->buckets);
        rw->buckets = b;
        rw->nbuckets = cap;
    }
    node_t *n = ol_xcalloc(1, sizeof(*n) + len + 1);
    memcpy(n->subject, s, len);
    n->len = (uint32_t)len;
    n->hash = h;
    n->type = (uint8_t)type;
    n->latest = LATE_NONE;
    n->heap_idx = NOT_IN_HEAP;
    n->next = rw->buckets[h & (rw->nbuckets - 1)];
    rw->buckets[h & (rw->nbuckets - 1)] = n;
    rw->nnodes++;
    return n;
}

/* ---- idle list ------------------------------------------------------------ */

static void idle_unlink(ol_rateban_t *rw, node_t *n) {
    if (!n->idle)
        return;
    OL_LIST_REMOVE(&rw->idle, n, idle_link);
    n->idle = 0;
    rw->nidle--;
}

/* Makes n the most recently seen. */
static void idle_touch(ol_rateban_t *rw, node_t *n) {
    idle_unlink(rw, n);
    OL_LIST_PUSH_BACK(&rw->idle, n, idle_link);
    n->idle = 1;
    rw->nidle++;
}

/* ---- lift heap (min by until) --------------------------------------------- */

static void heap_set(ol_rateban_t *rw, uint32_t i, node_t *n) {
    rw->heap[i] = n;
    n->heap_idx = i;
}

static void heap_up(ol_rateban_t *rw, uint32_t i) {
    node_t *n = rw->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (rw->heap[parent]->until <= n->until)
            break;
        heap_set(rw, i, rw->heap[parent]);
        i = parent;
    }
    heap_set(rw, i, n);
}

static void heap_down(ol_rateban_t *rw, uint32_t i) {
    node_t *n = rw->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= rw->nheap)
            break;
        if (child + 1 < rw->nheap && rw->heap[child + 1]->until < rw->heap[child]->until)
            child++;
        if (n->until <= rw->heap[child]->until)
            break;
        heap_set(rw, i, rw->heap[child]);
        i = child;
    }
    heap_set(rw, i, n);
}

static void heap_remove(ol_rateban_t *rw, node_t *n) {
    uint32_t i = n->heap_idx;
    if (i == NOT_IN_HEAP)
        return;
    n->heap_idx = NOT_IN_HEAP;
    node_t *last = rw->heap[--rw->nheap];
    if (last == n)
        return;
    heap_set(rw, i, last);
    heap_up(rw, i);
    heap_down(rw, last->heap_idx);
}

/* Puts n in the heap, or moves it after its until changed. */
static void heap_put(ol_rateban_t *rw, node_t *n) {
    if (n->heap_idx == NOT_IN_HEAP) {
        if (rw->nheap == rw->heap_cap) {
            rw->heap_cap = rw->heap_cap ? rw->heap_cap * 2 : 64;
            rw->heap = ol_xrealloc(rw->heap, rw->heap_cap * sizeof(*rw->heap));
        }
        heap_set(rw, rw->nheap++, n);
    }
    heap_up(rw, n->heap_idx);
    heap_down(rw, n->heap_idx);
}

/* ---- windows -------------------------------------------------------------- */

static void window_clear(ol_rateban_t *rw, node_t *n) {
    if (n->latest != LATE_NONE)
        rw->tracked--;
    rw->times_bytes -= (size_t)n->cap * sizeof(int32_t);
    free(n->times);
    n->times = NULL;
    n->ntimes = n->cap = 0;
    n->latest = LATE_NONE;
}

/* Drops the requests at or before edge (the front of the sorted times). */
static void window_trim(node_t *n, int64_t edge) {
    uint32_t k = 0;
    while (k < n->ntimes && n->base + n->times[k] <= edge)
        k++;
    if (k) {
        memmove(n->times, n->times + k, (n->ntimes - k) * sizeof(*n->times));
        n->ntimes -= k;
    }
}

/* Inserts at_ms into the sorted times; at_ms is within the window. */
static void window_insert(ol_rateban_t *rw, node_t *n, int64_t at_ms) {
    if (n->ntimes == 0) {
        n->base = at_ms;
    } else if (at_ms - n->base > INT32_MAX / 2 || at_ms < n->base) {
        /* rebase on the oldest request kept: every offset is then within a window */
        int64_t base = n->base + n->times[0] < at_ms ? n->base + n->times[0] : at_ms;
        for (uint32_t i = 0; i < n->ntimes; i++)
            n->times[i] = (int32_t)(n->base + n->times[i] - base);
        n->base = base;
    }
    if (n->ntimes == n->cap) {
        uint32_t cap = n->cap ? n->cap * 2 : 4;
        rw->times_bytes += (size_t)(cap - n->cap) * sizeof(int32_t);
        n->times = ol_xrealloc(n->times, cap * sizeof(*n->times));
        n->cap = cap;
    }
    int32_t off = (int32_t)(at_ms - n->base);
    uint32_t i = n->ntimes;
    while (i > 0 && n->times[i - 1] > off)
        i--;
    memmove(n->times + i + 1, n->times + i, (n->ntimes - i) * sizeof(*n->times));
    n->times[i] = off;
    n->ntimes++;
}

/* Forgets n (not listed, not exempt). */
static void forget(ol_rateban_t *rw, node_t *n) {
    idle_unlink(rw, n);
    window_clear(rw, n);
    node_t **pp = &rw->buckets[n->hash & (rw->nbuckets - 1)];
    while (*pp != n)
        pp = &(*pp)->next;
    *pp = n->next;
    rw->nnodes--;
    rw->evicted++;
    node_free(rw, n);
}

void ol_rateban_exempt(ol_rateban_t *rw, ol_subject_t type, const char *subject) {
    size_t len = strlen(subject);
    uint64_t h = hash_subject(type, subject, len);
    node_t *n = find(rw, type, subject, len, h);
    if (!n)
        n = create(rw, type, subject, len, h);
    n->exempt = 1;
    idle_unlink(rw, n);
    window_clear(rw, n);
}

static bool active_at(const node_t *n, int64_t at_ms) {
    return n->listed && (n->until < 0 || at_ms < n->until);
}

bool ol_rateban_hit(ol_rateban_t *rw, ol_subject_t type, const char *subject, int64_t at_ms, ol_rateban_ban_t *ban) {
    uint32_t max = type == OL_SUBJECT_IP ? rw->conf.ip_max : rw->conf.user_max;
    size_t len = strlen(subject);
    if (max == 0 || len == 0)
        return false;
    uint64_t h = hash_subject(type, subject, len);
    node_t *n = find(rw, type, subject, len, h);
    if (n && (n->exempt || active_at(n, at_ms)))
        return false;
    if (!n) {
        if (rw->conf.max_subjects && rw->nidle >= rw->conf.max_subjects && rw->idle.head)
            forget(rw, rw->idle.head);
        n = create(rw, type, subject, len, h);
    }
    if (n->latest == LATE_NONE) {
        n->latest = at_ms;
        rw->tracked++;
    } else if (at_ms > n->latest) {
        n->latest = at_ms;
        window_trim(n, at_ms - rw->conf.window_ms);
    } else if (at_ms <= n->latest - rw->conf.window_ms) {
        return false; /* too late: its window has passed */
    }
    if (!n->listed)
        idle_touch(rw, n);
    window_insert(rw, n, at_ms);
    if (n->ntimes <= max)
        return false;
    uint32_t count = n->ntimes;
    idle_unlink(rw, n);
    window_clear(rw, n);
    if (!n->listed)
        rw->listed++;
    n->listed = 1;
    n->reason = OL_BAN_RATE;
    n->until = at_ms + rw->conf.ban_ms;
    heap_put(rw, n);
    *ban = (ol_rateban_ban_t){type, n->subject, n->until, count};
    return true;
}

void ol_rateban_apply(ol_rateban_t *rw, ol_subject_t type, const char *subject, bool add, ol_ban_reason_t reason,
                      int64_t until_ms) {
    size_t len = strlen(subject);
    uint64_t h = hash_subject(type, subject, len);
    node_t *n = find(rw, type, subject, len, h);
    if (add) {
        if (!n)
            n = create(rw, type, subject, len, h);
        if (!n->listed)
            rw->listed++;
        n->listed = 1;
        n->reason = (uint8_t)reason;
        n->until = until_ms < 0 ? -1 : until_ms;
        /* counting restarts once the entry has lapsed */
        idle_unlink(rw, n);
        window_clear(rw, n);
        if (reason == OL_BAN_RATE && n->until >= 0)
            heap_put(rw, n);
        else
            heap_remove(rw, n);
        return;
    }
    if (!n || !n->listed)
        return;
    n->listed = 0;
    rw->listed--;
    heap_remove(rw, n);
    if (n->exempt)
        return;
    if (n->latest != LATE_NONE) {
        idle_touch(rw, n);
        return;
    }
    /* neither listed nor tracked: nothing left to know */
    node_t **pp = &rw->buckets[n->hash & (rw->nbuckets - 1)];
    while (*pp != n)
        pp = &(*pp)->next;
    *pp = n->next;
    rw->nnodes--;
    node_free(rw, n);
}

bool ol_rateban_due(const ol_rateban_t *rw, int64_t now_ms, ol_rateban_ban_t *lift) {
    if (!rw->nheap || rw->heap[0]->until > now_ms)
        return false;
    const node_t *n = rw->heap[0];
    *lift = (ol_rateban_ban_t){(ol_subject_t)n->type, n->subject, n->until, 0};
    return true;
}

int64_t ol_rateban_next_lift_ms(const ol_rateban_t *rw) {
    return rw->nheap ? rw->heap[0]->until : -1;
}

bool ol_rateban_listed(const ol_rateban_t *rw, ol_subject_t type, const char *subject, ol_ban_reason_t *reason,
                       int64_t *until_ms) {
    const node_t *n = lookup(rw, type, subject);
    if (!n || !n->listed)
        return false;
    if (reason)
        *reason = (ol_ban_reason_t)n->reason;
    if (until_ms)
        *until_ms = n->until;
    return true;
}

uint32_t ol_rateban_count(const ol_rateban_t *rw, ol_subject_t type, const char *subject) {
    const node_t *n = lookup(rw, type, subject);
    return n ? n->ntimes : 0;
}

size_t ol_rateban_expire(ol_rateban_t *rw, int64_t now_ms) {
    size_t k = 0;
    /* the list is in order of last request seen, which is the order of
     * latest unless requests came out of order: stopping at the first
     * subject still active may leave a few idle ones for the next call */
    while (rw->idle.head && rw->idle.head->latest <= now_ms - rw->conf.window_ms) {
        forget(rw, rw->idle.head);
        k++;
    }
    return k;
}

void ol_rateban_stats(const ol_rateban_t *rw, ol_rateban_stats_t *out) {
    out->tracked = rw->tracked;
    out->listed = rw->listed;
    out->rate = rw->nheap;
    out->evicted = rw->evicted;
    /* a node, its subject and two words of allocator overhead; the table's
     * buckets; the windows; the heap */
    size_t subjects = 0;
    for (size_t i = 0; i < rw->nbuckets; i++)
        for (const node_t *n = rw->buckets[i]; n; n = n->next)
            subjects += n->len + 1;
    out->bytes = rw->nnodes * (sizeof(node_t) + 16) + subjects + rw->nbuckets * sizeof(node_t *) + rw->times_bytes +
                 rw->heap_cap * sizeof(node_t *);
}
