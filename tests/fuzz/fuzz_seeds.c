/* fuzz_seeds DIR: makes the seed corpora of publish_line and avro_decode
 * from publish-format lines on stdin (ops/fuzz seeds feeds it
 * ops/sample-events and tests/fixtures/events/valid). The first line
 * publish accepts of each event type becomes DIR/publish_line/<Type>.json;
 * its Avro payload, behind avro_decode's first byte, becomes
 * DIR/avro_decode/<Type>.v<N> for every version the type reads (an older
 * version's payload is the current one cut where that version's fields end:
 * versions only ever add fields at the end). Not a fuzzer: a plain program. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"
#include "common/domain/event.h"
#include "common/base/util.h"
#include "fuzz.h"

static void write_file(const char *dir, const char *sub, const char *name, const void *a, size_t alen, const void *b,
                       size_t blen) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    if (mkdir(path, 0755) && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(a, 1, alen, fp) != alen || (blen && fwrite(b, 1, blen, fp) != blen) || fclose(fp)) {
        perror(path);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR < lines\n");
        return 2;
    }
    const char *dir = argv[1];
    ol_codec_t *codec = ol_codec_new();
    ol_arena_t *arena = ol_arena_new(0);
    size_t ntypes;
    ol_schema_types(&ntypes);
    char *done = ol_xcalloc(ntypes, 1);
    char *line = NULL, errstr[512];
    size_t cap = 0;
    ssize_t n;
    int written = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        ol_event_t ev;
        const void *bin;
        size_t bin_len;
        ol_arena_reset(arena);
        if (!len || ol_event_from_line(arena, line, len, FUZZ_NOW_MS, &ev, errstr, sizeof(errstr)) ||
            ol_codec_encode(codec, ev.env.type, ev.input, ev.env.time_ms, &bin, &bin_len, errstr, sizeof(errstr)))
            continue;
        const ol_event_type_t *et = ev.env.type;
        if (done[et->index])
            continue;
        done[et->index] = 1;
        char name[160];
        snprintf(name, sizeof(name), "%s.json", et->name);
        write_file(dir, "publish_line", name, line, len, NULL, 0);
        char *payload = ol_xmalloc(bin_len ? bin_len : 1);
        memcpy(payload, bin, bin_len);
        for (size_t k = 0; k < et->nhistory; k++) {
            int version = et->history[k].version;
            size_t cut = bin_len + 1;
            avro_value_t *value;
            while (cut-- > 0)
                if (!ol_codec_decode(codec, et, version, payload, cut, &value, errstr, sizeof(errstr)))
                    break;
            if (cut > bin_len) {
                fprintf(stderr, "%s: no prefix of the payload decodes as version %d\n", et->name, version);
                return 1;
            }
            unsigned char pick = (unsigned char)fuzz_pick_byte(et, version);
            snprintf(name, sizeof(name), "%s.v%d", et->name, version);
            write_file(dir, "avro_decode", name, &pick, 1, payload, cut);
            written++;
        }
        free(payload);
    }
    fprintf(stderr, "%d avro_decode seeds written in %s\n", written, dir);
    free(line);
    free(done);
    ol_arena_destroy(arena);
    ol_codec_destroy(codec);
    return 0;
}
