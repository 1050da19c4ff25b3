/* decide: the blacklist thread, reading the compacted topic to its end
 * (consumers/follow.h) into the shared ol_blacklist_t. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/kafka.h"
#include "common/base/log.h"
#include "common/base/time.h"
#include "common/base/util.h"
#include "common/base/json.h"
#include "common/domain/event.h"
#include "consumers/follow.h"
#include "consumers/decide.h"

static void bl_signal(decide_t *d, bool failed, const char *errstr) {
    pthread_mutex_lock(&d->mu);
    if (failed) {
        d->bl_failed = true;
        snprintf(d->bl_errstr, sizeof(d->bl_errstr), "%s", errstr);
    }
    d->bl_ready = true;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
}

/* What the blacklist thread reads with. */
typedef struct bl_reader_s {
    decide_t *d;
    ol_codec_t *codec;
    ol_arena_t *arena;
    long long entries; /* changes applied */
} bl_reader_t;

/* Applies one record of the blacklist topic. */
static void bl_record(void *opaque, const rd_kafka_message_t *rkm) {
    bl_reader_t *r = opaque;
    decide_t *d = r->d;
    char why[512];
    ol_envelope_t env = {.type = NULL};
    avro_value_t *value;
    ol_arena_reset(r->arena);
    if (ol_event_decode_waiting(r->codec, rkm, r->arena, &env, &value, &ol_decide__stop, why, sizeof(why)) ||
        strcmp(env.type->name, "BlacklistChanged")) {
        ol_log_warn("decide: %s [%" PRId32 "] offset %" PRId64 " ignored: %s", d->topic_bl, rkm->partition, rkm->offset,
                    env.type && strcmp(env.type->name, "BlacklistChanged") ? "not a BlacklistChanged" : why);
        return;
    }
    const ol_json_t *j = ol_codec_to_dom(env.type, value, r->arena);
    ol_subject_t type = strcmp(ol_json_get_str(j, "subject_type", ""), "user") ? OL_SUBJECT_IP : OL_SUBJECT_USER;
    int64_t until = ol_json_get_null(j, "until") ? OL_BLACKLIST_FOREVER : ol_json_get_int(j, "until", 0);
    pthread_rwlock_wrlock(&d->bl_lock);
    ol_blacklist_apply(d->bl, type, ol_json_get_str(j, "subject", ""), !strcmp(ol_json_get_str(j, "action", ""), "add"),
                       until);
    pthread_rwlock_unlock(&d->bl_lock);
    r->entries++;
}

/* The blacklist thread: reads the topic to its end (then the workers may
 * judge), then follows it until a stop (consumers/follow.h). */
void *ol_decide__bl_main(void *arg) {
    decide_t *d = arg;
    char why[512];
    bl_reader_t r = {d, ol_codec_new(), ol_arena_new(16 * 1024), 0};
    ol_follow_t *f;
    if (ol_follow_open(&f, d->bl_consumer, d->topic_bl, (int)ol_conf_int(d->conf, "broker.wait.ms"), &ol_decide__stop,
                       why, sizeof(why))) {
        bl_signal(d, true, why);
        goto out;
    }
    bool caught_up = false;
    while (!ol_decide__stop) {
        if (!caught_up && ol_follow_caught_up(f)) {
            caught_up = true;
            ol_log_info("decide: blacklist read: %lld changes, %zu subjects listed", r.entries,
                        ol_blacklist_count(d->bl));
            bl_signal(d, false, NULL);
        }
        ol_follow_poll(f, 200, bl_record, &r);
        atomic_store_explicit(&d->bl_beat_us, ol_time_mono_us(), memory_order_relaxed);
    }
    ol_follow_destroy(f);
out:
    ol_codec_destroy(r.codec);
    ol_arena_destroy(r.arena);
    if (!d->bl_ready)
        bl_signal(d, false, NULL);
    return NULL;
}
