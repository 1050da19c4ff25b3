#ifndef OL_LIST_H
#define OL_LIST_H

/* Intrusive doubly linked lists, written once: the deadline lists of the
 * gate (waits, lookups, connections without headers), the recency list of
 * the token buckets and rateban's idle list.
 *
 * A list is OL_LIST(type) { head, tail } (both NULL when empty), a node
 * embeds an OL_LIST_LINK(type) { prev, next } under a field name of its
 * choosing (one node may be on several lists, one link each). The list
 * owns nothing: a node is put on and taken off by its owner, and must be on
 * the list it is taken off.
 *
 *   typedef struct conn_s { OL_LIST_LINK(struct conn_s) link; ... } conn_t;
 *   OL_LIST(conn_t) conns = {0};
 *   OL_LIST_PUSH_BACK(&conns, c, link);
 *   OL_LIST_REMOVE(&conns, c, link);
 *
 * The macros evaluate list and field more than once: pass plain names. */

#define OL_LIST(type) \
    struct {          \
        type *head;   \
        type *tail;   \
    }
#define OL_LIST_LINK(type) \
    struct {               \
        type *prev;        \
        type *next;        \
    }

/* Puts n after `after` in list; after NULL: first. */
#define OL_LIST_INSERT_AFTER(list, after, n, field)                                          \
    do {                                                                                     \
        __typeof__(n) ol_list_n_ = (n), ol_list_after_ = (after);                            \
        ol_list_n_->field.prev = ol_list_after_;                                             \
        ol_list_n_->field.next = ol_list_after_ ? ol_list_after_->field.next : (list)->head; \
        if (ol_list_n_->field.next)                                                          \
            ol_list_n_->field.next->field.prev = ol_list_n_;                                 \
        else                                                                                 \
            (list)->tail = ol_list_n_;                                                       \
        if (ol_list_after_)                                                                  \
            ol_list_after_->field.next = ol_list_n_;                                         \
        else                                                                                 \
            (list)->head = ol_list_n_;                                                       \
    } while (0)

#define OL_LIST_PUSH_FRONT(list, n, field) OL_LIST_INSERT_AFTER(list, (__typeof__(n))0, n, field)
#define OL_LIST_PUSH_BACK(list, n, field) OL_LIST_INSERT_AFTER(list, (list)->tail, n, field)

/* Takes n off list; its link is cleared. */
#define OL_LIST_REMOVE(list, n, field)                                   \
    do {                                                                 \
        __typeof__(n) ol_list_r_ = (n);                                  \
        if (ol_list_r_->field.prev)                                      \
            ol_list_r_->field.prev->field.next = ol_list_r_->field.next; \
        else                                                             \
            (list)->head = ol_list_r_->field.next;                       \
        if (ol_list_r_->field.next)                                      \
            ol_list_r_->field.next->field.prev = ol_list_r_->field.prev; \
        else                                                             \
            (list)->tail = ol_list_r_->field.prev;                       \
        ol_list_r_->field.prev = ol_list_r_->field.next = NULL;          \
    } while (0)

#endif
