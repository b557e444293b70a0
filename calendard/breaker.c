/* A circuit breaker per shard. */
#include "calendard/breaker.h"

void
breaker_init(struct breaker *b, unsigned threshold, unsigned cooldown_ms)
{
    pthread_mutex_init(&b->lock, NULL);
    b->state = BREAKER_CLOSED;
    b->failures = 0;
    b->threshold = threshold ? threshold : 1;
    b->cooldown_ms = cooldown_ms;
    b->opened_at_us = 0;
    b->probing = false;
}

void
breaker_deinit(struct breaker *b)
{
    pthread_mutex_destroy(&b->lock);
}

bool
breaker_allow(struct breaker *b, uint64_t now_us, bool *probe)
{
    bool ok, took = false;
    pthread_mutex_lock(&b->lock);
    /* now_us may predate opened_at_us: read before the lock, by a caller that waited. */
    if (b->state == BREAKER_OPEN && now_us >= b->opened_at_us &&
        now_us - b->opened_at_us >= b->cooldown_ms * 1000ULL) {
        b->state = BREAKER_HALF_OPEN;
        b->probing = false;
    }
    switch (b->state) {
    case BREAKER_CLOSED:
        ok = true;
        break;
    case BREAKER_HALF_OPEN:
        ok = took = !b->probing; /* one probe at a time */
        b->probing = true;
        break;
    default:
        ok = false;
        break;
    }
    pthread_mutex_unlock(&b->lock);
    if (probe != NULL)
        *probe = took;
    return ok;
}

void
breaker_record(struct breaker *b, bool success, uint64_t now_us)
{
    pthread_mutex_lock(&b->lock);
    if (success) {
        b->failures = 0;
        b->state = BREAKER_CLOSED;
        b->probing = false;
    } else if (b->state == BREAKER_HALF_OPEN || ++b->failures >= b->threshold) {
        b->state = BREAKER_OPEN;
        b->opened_at_us = now_us;
        b->probing = false;
    }
    pthread_mutex_unlock(&b->lock);
}

enum breaker_state
breaker_state(struct breaker *b)
{
    pthread_mutex_lock(&b->lock);
    enum breaker_state st = b->state;
    pthread_mutex_unlock(&b->lock);
    return st;
}

void
breaker_cancel(struct breaker *b, bool probe)
{
    pthread_mutex_lock(&b->lock);
    if (probe && b->state == BREAKER_HALF_OPEN)
        b->probing = false;
    pthread_mutex_unlock(&b->lock);
}
