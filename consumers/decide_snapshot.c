/* decide: snapshots of a partition's state in decide-snapshots (the design:
 * consumers/README.md, "The decider's snapshots"), written inside the
 * worker's transaction and read back by a restore.
 *
 * Records of partition p (decide-snapshots partition p, co-partitioned with
 * sale-events), keys fixed so that compaction keeps the latest of each:
 *   "<p>/<i>"       chunk i: the snapshot's sequence (8 bytes, big-endian),
 *                   then its share of the state's bytes;
 *   "<p>/manifest"  written last, text: format, sequence, the sale-events
 *                   offset the state covers (replay from there), chunks,
 *                   bytes, the engine's share of them, FNV-1a 64 hash.
 * A snapshot with fewer chunks than the one before deletes the extra keys
 * (tombstones) in the same transaction.
 *
 * The state's bytes: ol_sale_snapshot's, then the SKUs' prices (count, then
 * per SKU: length, sku, price, currency; integers 8 bytes big-endian). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/strbuf.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "consumers/decide.h"

#define MANIFEST_FORMAT "orderlog-decide-snapshot 1"

static void put_be64(ol_strbuf_t *b, uint64_t v) {
    char tmp[8];
    for (int i = 0; i < 8; i++)
        tmp[i] = (char)(v >> (56 - 8 * i));
    ol_strbuf_put(b, tmp, 8);
}

static uint64_t get_be64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- the sale-events position of the state -------------------------------- */

/* Delivery reports (served on the worker thread, by its producer's polls and
 * commits): a delivered fact moves its partition's position past it. A fact
 * of a transaction aborted later is a position as good (nothing committed
 * lies between), and an abort restores the state anyway. */
void ol_decide__delivered(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    worker_t *w = opaque;
    if (rkm->err || rkm->offset < 0 || rkm->partition < 0 || rkm->partition >= w->d->npartitions)
        return;
    part_t *pt = &w->parts[rkm->partition];
    if (pt->sale && rkm->offset + 1 > pt->sale_next && !strcmp(rd_kafka_topic_name(rkm->rkt), w->d->topic_sale))
        pt->sale_next = rkm->offset + 1;
}

/* ---- writing ---------------------------------------------------------------- */

static void put_price(void *opaque, const char *key, size_t key_len, void *value) {
    ol_strbuf_t *b = opaque;
    const price_t *pr = value;
    put_be64(b, key_len);
    ol_strbuf_put(b, key, key_len);
    put_be64(b, (uint64_t)pr->price);
    char cur[8] = {0};
    memcpy(cur, pr->currency, sizeof(cur));
    ol_strbuf_put(b, cur, sizeof(cur));
}

static void count_one(void *opaque, const char *key, size_t key_len, void *value) {
    (void)key, (void)key_len, (void)value;
    (*(uint64_t *)opaque)++;
}

/* Writes partition p's snapshot in the open transaction. */
static ol_err_t write_snapshot(worker_t *w, int32_t p, char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    part_t *pt = &w->parts[p];
    int64_t t0 = ol_time_mono_us();
    ol_strbuf_t state = OL_STRBUF_INIT;
    ol_sale_snapshot(pt->sale, &state);
    size_t sale_bytes = state.len;
    uint64_t nprices = 0;
    ol_map_foreach(pt->prices, count_one, &nprices);
    put_be64(&state, nprices);
    ol_map_foreach(pt->prices, put_price, &state);
    int64_t seq = pt->snap_seq + 1;
    size_t chunk = d->snap_chunk - 8, nchunks = (state.len + chunk - 1) / chunk;
    char key[64];
    ol_err_t err = OL_ERR_OK;
    ol_strbuf_t rec = OL_STRBUF_INIT;
    for (size_t i = 0; i < nchunks && !err; i++) {
        size_t at = i * chunk, len = state.len - at < chunk ? state.len - at : chunk;
        rec.len = 0;
        put_be64(&rec, (uint64_t)seq);
        ol_strbuf_put(&rec, state.p + at, len);
        int klen = snprintf(key, sizeof(key), "%" PRId32 "/%zu", p, i);
        err = ol_decide__produce(w, d->topic_snap, p, key, (size_t)klen, rec.p, rec.len, NULL, errstr, errstr_size);
    }
    for (int i = (int)nchunks; i < pt->snap_chunks && !err; i++) { /* keys of a larger snapshot before */
        int klen = snprintf(key, sizeof(key), "%" PRId32 "/%d", p, i);
        err = ol_decide__produce(w, d->topic_snap, p, key, (size_t)klen, NULL, 0, NULL, errstr, errstr_size);
    }
    if (!err) {
        char manifest[512];
        int mlen = snprintf(manifest, sizeof(manifest),
                            MANIFEST_FORMAT " seq=%" PRId64 " offset=%" PRId64 " chunks=%zu bytes=%zu sale_bytes=%zu "
                                            "hash=%016" PRIx64,
                            seq, pt->sale_next, nchunks, state.len, sale_bytes,
                            ol_hash_fnv1a64(OL_FNV1A64_BASIS, state.p, state.len));
        int klen = snprintf(key, sizeof(key), "%" PRId32 "/manifest", p);
        err = ol_decide__produce(w, d->topic_snap, p, key, (size_t)klen, manifest, (size_t)mlen, NULL, errstr,
                                 errstr_size);
    }
    if (!err) {
        ol_log_info("decide: worker %d: snapshot %" PRId64 " of %s [%" PRId32 "] at offset %" PRId64
                    ": %zu bytes in %zu record(s), %lld facts since the last, %.1f ms",
                    w->index, seq, d->topic_sale, p, pt->sale_next, state.len, nchunks, (long long)pt->snap_facts,
                    (double)(ol_time_mono_us() - t0) / 1e3);
        pt->snap_seq = seq;
        pt->snap_chunks = (int)nchunks;
        pt->snap_facts = 0;
        pt->snap_us = ol_time_mono_us();
        ol_metric_add(d->m_snapshots, 0, 1);
    }
    ol_strbuf_free(&rec);
    ol_strbuf_free(&state);
    return err;
}

ol_err_t ol_decide__snapshot_due(worker_t *w, char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    if (d->snap_facts <= 0)
        return OL_ERR_OK;
    int64_t now = ol_time_mono_us();
    for (int32_t p = 0; p < d->npartitions; p++) {
        part_t *pt = &w->parts[p];
        if (!pt->sale || !pt->snap_facts)
            continue;
        if (pt->snap_facts < d->snap_facts && (d->snap_ms <= 0 || now - pt->snap_us < d->snap_ms * 1000))
            continue;
        ol_err_t err = write_snapshot(w, p, errstr, errstr_size);
        if (err)
            return err;
    }
    return OL_ERR_OK;
}

/* ---- reading back ------------------------------------------------------------ */

typedef struct chunk_s {
    uint8_t *data;
    size_t len;
} chunk_t;

/* What decide-snapshots holds of one partition, latest value per key. */
typedef struct found_s {
    char *manifest;
    int64_t manifest_offset;
    chunk_t *chunks;
    size_t nchunks;
} found_t;

static void found_free(found_t *f) {
    free(f->manifest);
    for (size_t i = 0; i < f->nchunks; i++)
        free(f->chunks[i].data);
    free(f->chunks);
    *f = (found_t){0};
}

/* Keeps one record of decide-snapshots (a tombstone deletes its key). */
static void found_take(found_t *f, const rd_kafka_message_t *rkm) {
    char key[64];
    if (!rkm->key || rkm->key_len >= sizeof(key))
        return;
    memcpy(key, rkm->key, rkm->key_len);
    key[rkm->key_len] = 0;
    const char *slash = strchr(key, '/');
    if (!slash)
        return;
    if (!strcmp(slash + 1, "manifest")) {
        free(f->manifest);
        f->manifest = rkm->payload ? ol_xstrndup(rkm->payload, rkm->len) : NULL;
        f->manifest_offset = rkm->offset;
        return;
    }
    char *end;
    unsigned long i = strtoul(slash + 1, &end, 10);
    if (*end || i > 1000000)
        return;
    if (i >= f->nchunks) {
        if (!rkm->payload)
            return;
        f->chunks = ol_xrealloc(f->chunks, (i + 1) * sizeof(*f->chunks));
        memset(f->chunks + f->nchunks, 0, (i + 1 - f->nchunks) * sizeof(*f->chunks));
        f->nchunks = i + 1;
    }
    free(f->chunks[i].data);
    f->chunks[i] = (chunk_t){0};
    if (rkm->payload) {
        f->chunks[i].data = ol_xmalloc(rkm->len ? rkm->len : 1);
        memcpy(f->chunks[i].data, rkm->payload, rkm->len);
        f->chunks[i].len = rkm->len;
    }
}

typedef struct manifest_s {
    long long seq, offset;
    size_t chunks, bytes, sale_bytes;
    uint64_t hash;
} manifest_t;

/* Loads the snapshot f holds into pt (a new sale and prices); errstr says
 * why not. */
static ol_err_t load(worker_t *w, int32_t p, const found_t *f, manifest_t *m, char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    part_t *pt = &w->parts[p];
    if (!f->manifest)
        return ol_errf(errstr, errstr_size, OL_ERR_NOT_FOUND, "none");
    if (sscanf(f->manifest, MANIFEST_FORMAT " seq=%lld offset=%lld chunks=%zu bytes=%zu sale_bytes=%zu hash=%" SCNx64,
               &m->seq, &m->offset, &m->chunks, &m->bytes, &m->sale_bytes, &m->hash) != 6)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "manifest not understood: %.80s", f->manifest);
    if (m->chunks > f->nchunks || m->sale_bytes > m->bytes || m->offset < 0)
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "snapshot %lld: chunks missing", m->seq);
    uint8_t *all = ol_xmalloc(m->bytes + 1);
    size_t len = 0;
    for (size_t i = 0; i < m->chunks; i++) {
        const chunk_t *c = &f->chunks[i];
        if (!c->data || c->len < 8 || get_be64(c->data) != (uint64_t)m->seq || len + c->len - 8 > m->bytes) {
            free(all);
            return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "snapshot %lld: chunk %zu missing or of another",
                           m->seq, i);
        }
        memcpy(all + len, c->data + 8, c->len - 8);
        len += c->len - 8;
    }
    if (len != m->bytes || ol_hash_fnv1a64(OL_FNV1A64_BASIS, all, len) != m->hash) {
        free(all);
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "snapshot %lld: bytes do not match its manifest", m->seq);
    }
    ol_sale_t *sale = ol_sale_load(all, m->sale_bytes, d->hold_ttl_ms, d->window_ms, d->bl, errstr, errstr_size);
    if (!sale) {
        free(all);
        return OL_ERR_INVALID;
    }
    ol_map_t *prices = ol_map_new();
    const uint8_t *q = all + m->sale_bytes, *end = all + len;
    uint64_t n = end - q >= 8 ? get_be64(q) : UINT64_MAX;
    q += 8;
    for (uint64_t i = 0; i < n && n != UINT64_MAX; i++) {
        uint64_t klen = end - q >= 8 ? get_be64(q) : UINT64_MAX;
        if (klen == UINT64_MAX || klen > (uint64_t)(end - q) - 8 || (uint64_t)(end - q) - 8 - klen < 16) {
            n = UINT64_MAX;
            break;
        }
        char sku[1024], cur[9] = {0};
        if (klen >= sizeof(sku)) {
            n = UINT64_MAX;
            break;
        }
        memcpy(sku, q + 8, klen);
        sku[klen] = 0;
        q += 8 + klen;
        int64_t price = (int64_t)get_be64(q);
        memcpy(cur, q + 8, 8);
        q += 16;
        part_t tmp = {.prices = prices};
        ol_decide__set_price(&tmp, sku, price, cur);
    }
    free(all);
    if (n == UINT64_MAX || q != end) {
        ol_sale_destroy(sale);
        part_t tmp = {.prices = prices};
        ol_decide__part_drop(&tmp);
        return ol_errf(errstr, errstr_size, OL_ERR_INVALID, "snapshot %lld: prices not understood", m->seq);
    }
    ol_decide__part_drop(pt);
    pt->sale = sale;
    pt->prices = prices;
    return OL_ERR_OK;
}

/* Whether f holds a whole snapshot: the manifest, and every chunk it names
 * carrying its sequence (load() checks the rest); *chunks is the manifest's
 * chunk count (0 without one). */
static bool complete(const found_t *f, size_t *chunks) {
    manifest_t m = {0};
    *chunks = 0;
    if (!f->manifest ||
        sscanf(f->manifest, MANIFEST_FORMAT " seq=%lld offset=%lld chunks=%zu bytes=%zu sale_bytes=%zu hash=%" SCNx64,
               &m.seq, &m.offset, &m.chunks, &m.bytes, &m.sale_bytes, &m.hash) != 6)
        return false;
    *chunks = m.chunks;
    if (m.chunks > f->nchunks)
        return false;
    for (size_t i = 0; i < m.chunks; i++)
        if (!f->chunks[i].data || f->chunks[i].len < 8 || get_be64(f->chunks[i].data) != (uint64_t)m.seq)
            return false;
    return true;
}

/* Reads decide-snapshots partitions ps[0..n) from start[i] to their end
 * (read_committed) into found[ps[i]], latest value per key. */
static ol_err_t read_from(worker_t *w, const int32_t *ps, int n, const int64_t *start, found_t *found,
                          long long *records, long long *bytes, char *errstr, size_t errstr_size) {
    restore_watch_t rw;
    ol_err_t err = ol_decide__restore_start(w, &rw, w->d->topic_snap, ps, start, n, errstr, errstr_size);
    if (err)
        return err;
    rd_kafka_message_t *rkm;
    while ((rkm = ol_decide__restore_next(w, &rw, &err, errstr, errstr_size))) {
        (*records)++;
        *bytes += (long long)rkm->len;
        found_take(&found[rkm->partition], rkm);
        rd_kafka_message_destroy(rkm);
    }
    ol_decide__restore_end(w, &rw);
    return err;
}

/* The records a first read takes from the end of a decide-snapshots
 * partition (a snapshot of one chunk, its manifest and the transaction's
 * marker, and room); a further read starts its manifest's chunk count
 * (plus SUFFIX_RECORDS for tombstones and markers) before the manifest when
 * that is further back than the read before, else SUFFIX_GROWTH times
 * further back. */
#define SUFFIX_RECORDS 8
#define SUFFIX_GROWTH 8

/* Reads decide-snapshots partitions ps[0..n) (read_committed) and loads the
 * latest snapshot of each into its part; from[i] is where sale-events
 * partition ps[i] is then replayed from: the snapshot's offset, or its
 * beginning when there is no snapshot it can use (said in the log). The
 * parts hold empty states before.
 *
 * A partition is read from its end backwards in growing steps: its last
 * SUFFIX_RECORDS records first, to the end; when they do not hold a whole
 * snapshot (its manifest and every chunk of its sequence: a snapshot's
 * records are written together, the manifest last, by the partition's one
 * owner), SUFFIX_GROWTH times more, and so on down to its start. So a
 * restore reads the latest snapshot and little else, however many older ones
 * compaction has not removed yet. */
ol_err_t ol_decide__snapshot_read(worker_t *w, const int32_t *ps, int n, int64_t *from, long long *snapshots,
                                  char *errstr, size_t errstr_size) {
    decide_t *d = w->d;
    ol_kafka_know_leaders(w->restorer, d->topic_snap);
    found_t *found = ol_xcalloc((size_t)d->npartitions, sizeof(*found));
    int64_t *lows = ol_xcalloc((size_t)n, sizeof(*lows)), *highs = ol_xcalloc((size_t)n, sizeof(*highs));
    int64_t *window = ol_xcalloc((size_t)n, sizeof(*window)), *start = ol_xcalloc((size_t)n, sizeof(*start));
    int32_t *todo = ol_xcalloc((size_t)n, sizeof(*todo));
    for (int i = 0; i < n; i++) {
        from[i] = RD_KAFKA_OFFSET_BEGINNING;
        window[i] = SUFFIX_RECORDS;
        if (ol_decide__ends(w, d->topic_snap, ps[i], &lows[i], &highs[i], ENDS_WITHIN_MS))
            lows[i] = highs[i] = -1; /* unknown: read from the beginning */
    }
    long long records = 0, bytes = 0;
    int reads = 0;
    int64_t t0 = ol_time_mono_us();
    ol_err_t err = OL_ERR_OK;
    for (int ntodo = n; ntodo > 0 && !err;) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (window[i] <= 0)
                continue; /* done */
            found_free(&found[ps[i]]);
            start[k] =
                lows[i] < 0 || highs[i] - window[i] <= lows[i] ? RD_KAFKA_OFFSET_BEGINNING : highs[i] - window[i];
            todo[k++] = ps[i];
        }
        err = read_from(w, todo, k, start, found, &records, &bytes, errstr, errstr_size);
        reads++;
        ntodo = 0;
        for (int i = 0, j = 0; i < n && !err; i++) {
            if (window[i] <= 0)
                continue;
            size_t chunks;
            bool from_start = start[j++] == RD_KAFKA_OFFSET_BEGINNING;
            bool whole = complete(&found[ps[i]], &chunks) || from_start;
            int64_t next = window[i] * SUFFIX_GROWTH;
            if (chunks && highs[i] - found[ps[i]].manifest_offset + (int64_t)chunks + SUFFIX_RECORDS > window[i])
                next = highs[i] - found[ps[i]].manifest_offset + (int64_t)chunks + SUFFIX_RECORDS;
            window[i] = whole ? 0 : next;
            ntodo += !whole;
        }
    }
    free(lows);
    free(highs);
    free(window);
    free(start);
    free(todo);
    if (!err)
        ol_log_info("decide: worker %d read %lld records (%.1f MB) of %s in %.0f ms (%d read(s))", w->index, records,
                    (double)bytes / 1048576.0, d->topic_snap, (double)(ol_time_mono_us() - t0) / 1e3, reads);
    rd_kafka_resp_err_t kerr;
    for (int i = 0; i < n && !err; i++) {
        int32_t p = ps[i];
        part_t *pt = &w->parts[p];
        manifest_t m = {0};
        char why[512];
        pt->snap_chunks = (int)found[p].nchunks;
        ol_err_t lerr = load(w, p, &found[p], &m, why, sizeof(why));
        int64_t lo = 0, hi = 0;
        if (!lerr) {
            /* unanswered within ENDS_WITHIN_MS: the restore fails (the take
             * is retried) rather than replay the whole history */
            if ((kerr = ol_decide__ends(w, d->topic_sale, p, &lo, &hi, ENDS_WITHIN_MS))) {
                err = ol_errf(errstr, errstr_size, OL_ERR_TRANSIENT, "could not read the end of %s [%" PRId32 "]: %s",
                              d->topic_sale, p, rd_kafka_err2str(kerr));
                break;
            }
            if (m.offset < lo || m.offset > hi)
                lerr = ol_errf(why, sizeof(why), OL_ERR_INVALID,
                               "snapshot %lld covers %s up to offset %lld, outside its %" PRId64 "..%" PRId64, m.seq,
                               d->topic_sale, m.offset, lo, hi);
        }
        if (lerr) {
            /* back to the empty state, replayed from the beginning */
            ol_decide__part_drop(pt);
            pt->sale = ol_sale_new(d->hold_ttl_ms, d->window_ms, d->bl);
            pt->prices = ol_map_new();
            pt->snap_seq = m.seq > 0 ? m.seq : 0;
            if (lerr != OL_ERR_NOT_FOUND)
                ol_log_warn("decide: %s [%" PRId32 "]: snapshot not used (%s): replaying %s from its beginning",
                            d->topic_snap, p, why, d->topic_sale);
            continue;
        }
        pt->snap_seq = m.seq;
        from[i] = m.offset;
        (*snapshots)++;
        ol_log_info("decide: %s [%" PRId32 "]: snapshot %lld loaded (%zu bytes, %zu open holds), replaying %s from "
                    "offset %lld",
                    d->topic_snap, p, m.seq, m.bytes, ol_sale_open_holds(pt->sale), d->topic_sale, m.offset);
    }
    for (int p = 0; p < d->npartitions; p++)
        found_free(&found[p]);
    free(found);
    return err;
}
