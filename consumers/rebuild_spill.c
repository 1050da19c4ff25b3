/* orderlog rebuild, the spill files: the records of the shares of a split
 * partition that a pass does not fold, kept in local files so that the
 * passes over those shares read them instead of the partition again
 * (consumers/README.md, "Rebuild in passes"). See rebuild_read.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/base/util.h"
#include "consumers/rebuild.h"

#define WRITE_BUF (256 * 1024)
#define READ_BUF (1024 * 1024)
#define NO_LEN UINT32_MAX

/* A rebuild's spill directory: <TMPDIR>/orderlog-rebuild-<host>-<pid>-XXXXXX. */
#define DIR_PREFIX "orderlog-rebuild-"

static const char *tmp_dir(void) {
    const char *tmp = getenv("TMPDIR");
    return tmp && *tmp ? tmp : "/tmp";
}

/* This host's name, '-' where it holds '/' (one path component). */
static void host_name(char *out, size_t size) {
    if (gethostname(out, size))
        snprintf(out, size, "localhost");
    out[size - 1] = '\0';
    for (char *c = out; *c; c++)
        if (*c == '/')
            *c = '-';
}

/* Whether unit a's keys are all unit b's. */
static bool unit_within(const unit_t *a, const unit_t *b) {
    return a->partition == b->partition && a->k % b->k == 0 && a->j % b->k == b->j;
}

uint32_t ol_rebuild__spill_sub(uint32_t cls, int nsubs) {
    return nsubs > 1 ? (cls >> 24) % (uint32_t)nsubs : 0;
}

void ol_rebuild__spill_path(const rebuild_t *rb, int spill, int t, int sub, char *out, size_t out_size) {
    const spill_t *s = &rb->spills[spill];
    snprintf(out, out_size, "%s/%d-%d-%u-%u-%d", rb->spill_dir, t, (int)s->u.partition, s->u.k, s->u.j, sub);
}

static void remove_files(rebuild_t *rb, int spill) {
    for (int t = 0; t < rb->ntopics; t++)
        for (int sub = 0; sub < rb->spill_subs; sub++) {
            char path[4200];
            ol_rebuild__spill_path(rb, spill, t, sub, path, sizeof(path));
            if (unlink(path) && errno != ENOENT)
                ol_log_warn("rebuild: could not remove %s: %s", path, strerror(errno));
        }
    rb->spills[spill].state = SPILL_GONE;
    rb->spill_disk_bytes -= rb->spills[spill].bytes;
}

/* The smallest complete spill set holding every key of the units of
 * partition p in list (n of them), or -1. */
static int best_set(const rebuild_t *rb, const unit_t *list, int n, int32_t p) {
    int best = -1;
    for (int i = 0; i < rb->nspills; i++) {
        const spill_t *s = &rb->spills[i];
        if (s->state != SPILL_COMPLETE || s->u.partition != p)
            continue;
        bool covers = true;
        for (int k = 0; k < n && covers; k++)
            covers = list[k].partition != p || unit_within(&list[k], &s->u);
        if (covers && (best < 0 || s->u.k > rb->spills[best].u.k))
            best = i;
    }
    return best;
}

int ol_rebuild__spill_source(const rebuild_t *rb, int32_t p) {
    return best_set(rb, rb->pass, rb->npass, p);
}

int ol_rebuild__spill_plan(rebuild_t *rb, int32_t p, int source, int *targets, int max_targets) {
    if (!rb->spill_dir[0]) {
        char host[HOST_NAME_MAX + 1];
        host_name(host, sizeof(host));
        snprintf(rb->spill_dir, sizeof(rb->spill_dir), "%s/" DIR_PREFIX "%s-%d-XXXXXX", tmp_dir(), host, (int)getpid());
        if (!mkdtemp(rb->spill_dir)) {
            ol_log_warn("rebuild: no spill files (could not make a directory %s: %s): a partition split in shares "
                        "is read once per share",
                        rb->spill_dir, strerror(errno));
            rb->spill_dir[0] = '\0';
            rb->spill_off = true;
        }
    }
    if (rb->spill_off)
        return 0;
    int n = 0;
    for (size_t q = 0; q < rb->nqueue && n < max_targets; q++) {
        const unit_t *v = &rb->queue[q];
        if (v->partition != p || best_set(rb, v, 1, p) != source)
            continue;
        if (rb->nspills == rb->spills_cap) {
            rb->spills_cap = rb->spills_cap ? rb->spills_cap * 2 : 16;
            rb->spills = ol_xrealloc(rb->spills, rb->spills_cap * sizeof(*rb->spills));
        }
        spill_t *s = &rb->spills[rb->nspills];
        memset(s, 0, sizeof(*s));
        s->u = *v;
        s->state = SPILL_WRITING;
        targets[n++] = rb->nspills++;
    }
    return n;
}

void ol_rebuild__spill_pass_end(rebuild_t *rb, bool ok) {
    for (int i = 0; i < rb->nspills; i++) {
        spill_t *s = &rb->spills[i];
        if (s->state == SPILL_WRITING) {
            if (ok && !s->failed) {
                s->state = SPILL_COMPLETE;
            } else {
                remove_files(rb, i);
            }
        }
    }
    /* a set no unit left needs: gone */
    for (int i = 0; i < rb->nspills; i++) {
        if (rb->spills[i].state != SPILL_COMPLETE)
            continue;
        bool needed = false;
        for (size_t q = 0; q < rb->nqueue && !needed; q++)
            needed = unit_within(&rb->queue[q], &rb->spills[i].u);
        if (!needed)
            remove_files(rb, i);
    }
}

/* Removes the directory dir and the files in it; the bytes they held. */
static long long remove_dir(const char *dir) {
    long long bytes = 0;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char path[4400];
                struct stat st;
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                if (!stat(path, &st))
                    bytes += (long long)st.st_size;
                unlink(path);
            }
        closedir(d);
    }
    if (rmdir(dir) && errno != ENOENT)
        ol_log_warn("rebuild: could not remove %s: %s", dir, strerror(errno));
    return bytes;
}

void ol_rebuild__spill_sweep(void) {
    char host[HOST_NAME_MAX + 1], prefix[HOST_NAME_MAX + 64];
    host_name(host, sizeof(host));
    int n = snprintf(prefix, sizeof(prefix), DIR_PREFIX "%s-", host);
    const char *tmp = tmp_dir();
    DIR *d = opendir(tmp);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, (size_t)n))
            continue;
        char *end;
        long pid = strtol(e->d_name + n, &end, 10);
        /* a process of this host that no longer exists (one that does, or
         * a pid taken again, keeps its directory) */
        if (end == e->d_name + n || *end != '-' || pid <= 0 || pid == (long)getpid() || !kill((pid_t)pid, 0) ||
            errno != ESRCH)
            continue;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s", tmp, e->d_name);
        long long bytes = remove_dir(path);
        ol_log_info("rebuild: removed %s (%lld MB of spill files), left by a rebuild (pid %ld) that did not end", path,
                    bytes >> 20, pid);
    }
    closedir(d);
}

void ol_rebuild__spill_cleanup(rebuild_t *rb) {
    if (!rb->spill_dir[0])
        return;
    remove_dir(rb->spill_dir);
    rb->spill_dir[0] = '\0';
    free(rb->spills);
    rb->spills = NULL;
    rb->nspills = rb->spills_cap = 0;
}

/* ---- writing ------------------------------------------------------------- */

/* A record in a file (host byte order: the file never leaves the process):
 *   u32 length of what follows, i64 offset, i64 timestamp, u32 key length,
 *   u32 value length (NO_LEN: none), u16 headers, the key, the value, then
 *   each header: u16 name length, u32 value length (NO_LEN: none), name,
 *   value. */
static void put(char *buf, size_t *len, const void *p, size_t n) {
    if (n)
        memcpy(buf + *len, p, n);
    *len += n;
}

static bool flush_writer(spill_writer_t *w) {
    size_t done = 0;
    while (done < w->len && !w->failed) {
        ssize_t n = write(w->fd, w->buf + done, w->len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ol_log_warn("rebuild: could not write a spill file: %s: its share is read from Kafka again",
                        n < 0 ? strerror(errno) : "no space");
            w->failed = true;
        } else {
            done += (size_t)n;
        }
    }
    w->len = 0;
    return !w->failed;
}

/* Header i of rec, from Kafka's headers or a view (*val NULL, *size 0: a
 * header without a value); false past the last. */
static bool header_at(const ol_event_rec_t *rec, size_t i, const char **name, size_t *name_len, const void **val,
                      size_t *size) {
    if (rec->hdrs) {
        if (rd_kafka_header_get_all(rec->hdrs, i, name, val, size))
            return false;
        *name_len = strlen(*name);
    } else {
        if (i >= rec->nhv)
            return false;
        *name = rec->hv[i].name;
        *name_len = rec->hv[i].name_len;
        *val = rec->hv[i].value;
        *size = rec->hv[i].size;
    }
    if (!*val)
        *size = 0;
    return true;
}

void ol_rebuild__spill_put(const rebuild_t *rb, spill_writer_t *w, int spill, int t, int sub,
                           const ol_event_rec_t *rec) {
    if (w->failed)
        return;
    if (w->fd < 0) {
        char path[4200];
        ol_rebuild__spill_path(rb, spill, t, sub, path, sizeof(path));
        w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (w->fd < 0) {
            ol_log_warn("rebuild: could not create %s: %s: its share is read from Kafka again", path, strerror(errno));
            w->failed = true;
            return;
        }
        w->buf = ol_xmalloc(WRITE_BUF);
        w->cap = WRITE_BUF;
    }
    size_t need = 4 + 8 + 8 + 4 + 4 + 2 + rec->key_len + (rec->payload ? rec->len : 0);
    const char *name;
    const void *val;
    size_t name_len, size, nh = 0;
    bool fits = true;
    for (; header_at(rec, nh, &name, &name_len, &val, &size); nh++) {
        need += 2 + 4 + name_len + size;
        fits = fits && name_len <= UINT16_MAX && size < NO_LEN;
    }
    if (nh > UINT16_MAX || !fits) {
        ol_log_warn("rebuild: a record of %zu headers, or with a header too long, cannot be spilled: its share is "
                    "read from Kafka again",
                    nh);
        w->failed = true;
        return;
    }
    if (w->len + need > w->cap && !flush_writer(w))
        return;
    if (need > w->cap) {
        w->buf = ol_xrealloc(w->buf, need);
        w->cap = need;
    }
    uint32_t body = (uint32_t)(need - 4), key_len = (uint32_t)rec->key_len,
             val_len = rec->payload ? (uint32_t)rec->len : NO_LEN;
    uint16_t nh16 = (uint16_t)nh;
    put(w->buf, &w->len, &body, 4);
    put(w->buf, &w->len, &rec->offset, 8);
    put(w->buf, &w->len, &rec->timestamp, 8);
    put(w->buf, &w->len, &key_len, 4);
    put(w->buf, &w->len, &val_len, 4);
    put(w->buf, &w->len, &nh16, 2);
    put(w->buf, &w->len, rec->key, rec->key_len);
    if (rec->payload)
        put(w->buf, &w->len, rec->payload, rec->len);
    for (size_t i = 0; i < nh && header_at(rec, i, &name, &name_len, &val, &size); i++) {
        uint16_t nl = (uint16_t)name_len;
        uint32_t vl = val ? (uint32_t)size : NO_LEN;
        put(w->buf, &w->len, &nl, 2);
        put(w->buf, &w->len, &vl, 4);
        put(w->buf, &w->len, name, nl);
        put(w->buf, &w->len, val, size);
    }
    w->records++;
    w->bytes += (int64_t)need;
}

bool ol_rebuild__spill_close(spill_writer_t *w) {
    if (w->fd >= 0) {
        flush_writer(w);
        if (close(w->fd) && !w->failed) {
            ol_log_warn("rebuild: could not write a spill file: %s: its share is read from Kafka again",
                        strerror(errno));
            w->failed = true;
        }
        w->fd = -1;
    }
    free(w->buf);
    w->buf = NULL;
    return !w->failed;
}

/* ---- reading ------------------------------------------------------------- */

static uint32_t get32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

ol_err_t ol_rebuild__spill_read(const rebuild_t *rb, int spill, int t, int sub, spill_read_fn fn, void *opaque,
                                char *errstr, size_t errstr_size) {
    char path[4200];
    ol_rebuild__spill_path(rb, spill, t, sub, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT
                   ? OL_ERR_OK /* nothing of that topic and share */
                   : ol_errf(errstr, errstr_size, OL_ERR_IO, "could not open %s: %s", path, strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    size_t cap = READ_BUF, len = 0, pos = 0;
    char *buf = ol_xmalloc(cap);
    size_t hv_cap = 16;
    struct ol_event_hdr_s *hv = ol_xmalloc(hv_cap * sizeof(*hv));
    ol_err_t err = OL_ERR_OK;
    bool eof = false;
    const char *topic = rb->topic_names[t];
    int32_t p = rb->spills[spill].u.partition;
    while (!err) {
        /* whole records from pos; then what is left goes to the front */
        while (!err) {
            if (len - pos < 4 || len - pos < 4 + (size_t)get32(buf + pos))
                break;
            const char *q = buf + pos + 4;
            size_t body = get32(buf + pos);
            if (body < 26) { /* shorter than its fixed fields */
                err = ol_errf(errstr, errstr_size, OL_ERR_IO, "spill file %s is damaged", path);
                break;
            }
            ol_event_rec_t rec = {.topic = topic, .partition = p};
            uint32_t key_len, val_len;
            uint16_t nh;
            memcpy(&rec.offset, q, 8);
            memcpy(&rec.timestamp, q + 8, 8);
            key_len = get32(q + 16);
            val_len = get32(q + 20);
            memcpy(&nh, q + 24, 2);
            const char *d = q + 26, *end = q + body;
            rec.key = key_len ? d : NULL;
            rec.key_len = key_len;
            d += key_len;
            rec.payload = val_len == NO_LEN ? NULL : d;
            rec.len = val_len == NO_LEN ? 0 : val_len;
            d += rec.len;
            if (nh > hv_cap) {
                hv_cap = nh;
                hv = ol_xrealloc(hv, hv_cap * sizeof(*hv));
            }
            rec.hv = hv;
            rec.nhv = nh;
            bool fits = d <= end;
            for (uint16_t i = 0; i < nh && fits; i++) {
                if (end - d < 6) {
                    fits = false;
                    break;
                }
                uint16_t nl;
                memcpy(&nl, d, 2);
                uint32_t vl = get32(d + 2);
                size_t vsize = vl == NO_LEN ? 0 : vl;
                fits = d + 6 + nl + vsize <= end;
                hv[i] = (struct ol_event_hdr_s){d + 6, nl, vl == NO_LEN ? NULL : d + 6 + nl, vsize};
                d += 6 + nl + vsize;
            }
            if (!fits || d != end)
                err = ol_errf(errstr, errstr_size, OL_ERR_IO, "spill file %s is damaged", path);
            else
                err = fn(opaque, &rec);
            pos += 4 + body;
        }
        if (err)
            break;
        if (eof) {
            if (pos != len)
                err = ol_errf(errstr, errstr_size, OL_ERR_IO, "spill file %s ends inside a record", path);
            break;
        }
        memmove(buf, buf + pos, len - pos);
        len -= pos;
        pos = 0;
        if (len >= 4 && 4 + (size_t)get32(buf) > cap) {
            cap = 4 + (size_t)get32(buf);
            buf = ol_xrealloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            err = ol_errf(errstr, errstr_size, OL_ERR_IO, "could not read %s: %s", path, strerror(errno));
        else if (n == 0)
            eof = true;
        else
            len += (size_t)n;
    }
    free(hv);
    free(buf);
    close(fd);
    return err;
}
