#ifndef OL_CONSUME_H
#define OL_CONSUME_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stddef.h>

#include "common/base/arena.h"
#include "common/domain/codec.h"

/* A thread reading events off a consumer (the gate and loadgen following
 * sale-events): each record goes to fn (borrowed for the call) with a codec
 * and an arena of the loop's own (arena_block: its block size, 0 for the
 * default; fn resets it as it likes). rk is polled 100 ms at a time until
 * *stop is set; an error other than a partition's end is logged as a
 * warning "<who>reading <topic>: <error>" (who: "" or e.g. "loadgen: "). */
typedef void ol_consume_fn(void *opaque, ol_codec_t *codec, ol_arena_t *arena, const rd_kafka_message_t *rkm);
void ol_consume_until(rd_kafka_t *rk, const atomic_bool *stop, const char *who, const char *topic, size_t arena_block,
                      ol_consume_fn *fn, void *opaque);

#endif
