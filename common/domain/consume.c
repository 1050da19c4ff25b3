#include "common/domain/consume.h"

#include "common/base/log.h"

void ol_consume_until(rd_kafka_t *rk, const atomic_bool *stop, const char *who, const char *topic, size_t arena_block,
                      ol_consume_fn *fn, void *opaque) {
    ol_codec_t *codec = ol_codec_new();
    ol_arena_t *arena = ol_arena_new(arena_block);
    while (!atomic_load(stop)) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, 100);
        if (!rkm)
            continue;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                ol_log_warn("%sreading %s: %s", who, topic, rd_kafka_message_errstr(rkm));
        } else {
            fn(opaque, codec, arena, rkm);
        }
        rd_kafka_message_destroy(rkm);
    }
    ol_arena_destroy(arena);
    ol_codec_destroy(codec);
}
