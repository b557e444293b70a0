/* A circuit breaker per shard: closed (calls pass), open after
 * `threshold` consecutive failures (calls fail fast for `cooldown_ms`), then
 * half-open (one probe call; success closes, failure opens again). Failures
 * are lost connections and timeouts, never conflicts or bad input. */
#ifndef CAL_BREAKER_H
#define CAL_BREAKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN };

struct breaker {
    pthread_mutex_t lock;
    enum breaker_state state;
    unsigned failures; /* consecutive */
    unsigned threshold;
    unsigned cooldown_ms;
    uint64_t opened_at_us;
    bool probing; /* a half-open probe is out */
};

void breaker_init(struct breaker *b, unsigned threshold, unsigned cooldown_ms);
void breaker_deinit(struct breaker *b);

/* May a call go ahead at now_us? A true in half-open makes the caller the
 * probe (*probe set, if probe is not NULL), which must report its outcome. */
bool breaker_allow(struct breaker *b, uint64_t now_us, bool *probe);
void breaker_record(struct breaker *b, bool success, uint64_t now_us);
/* The allowed call never reached the shard (e.g. no free connection): if it
 * was the half-open probe (probe from breaker_allow), its slot is given back
 * without a verdict; any other caller's cancel changes nothing. */
void breaker_cancel(struct breaker *b, bool probe);
enum breaker_state breaker_state(struct breaker *b);

#endif
