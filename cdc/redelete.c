/* The queue of second deletes (see redelete.h): a ring of fixed-size slots.
 * Due times only grow (a fixed delay after a monotonic clock), so the ring is
 * also in due order and the oldest key is always the next one due. */
#include "cdc/redelete.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/cachekey.h"
#include "common/util.h"

struct slot {
    uint64_t due_us;
    size_t len;
    char key[CACHEKEY_MAX];
};

struct redelete {
    struct slot *slots;
    size_t cap;
    size_t head; /* the oldest key */
    size_t len;
};

struct redelete *
redelete_create(size_t max_keys)
{
    assert(max_keys > 0);
    struct redelete *rq = cal_calloc(1, sizeof(*rq));
    rq->slots = cal_malloc(max_keys * sizeof(*rq->slots));
    rq->cap = max_keys;
    return rq;
}

void
redelete_destroy(struct redelete *rq)
{
    if (rq == NULL)
        return;
    free(rq->slots);
    free(rq);
}

size_t
redelete_len(const struct redelete *rq)
{
    return rq->len;
}

size_t
redelete_room(const struct redelete *rq)
{
    return rq->cap - rq->len;
}

size_t
redelete_push(struct redelete *rq, const char *const *keys, const size_t *keylens, size_t n,
              uint64_t due_us)
{
    assert(rq->len == 0 || due_us >= rq->slots[(rq->head + rq->len - 1) % rq->cap].due_us);
    size_t fit = n < rq->cap - rq->len ? n : rq->cap - rq->len;
    for (size_t i = 0; i < fit; i++) {
        assert(keylens[i] < CACHEKEY_MAX);
        struct slot *s = &rq->slots[(rq->head + rq->len) % rq->cap];
        s->due_us = due_us;
        s->len = keylens[i];
        memcpy(s->key, keys[i], keylens[i]);
        s->key[keylens[i]] = '\0';
        rq->len++;
    }
    return fit;
}

size_t
redelete_take(struct redelete *rq, uint64_t now_us, size_t reserve, const char **keys,
              size_t *keylens, size_t max, size_t *early)
{
    assert(reserve <= max && reserve <= rq->cap);
    size_t n = 0, ahead = 0;
    while (n < max && rq->len > 0) {
        struct slot *s = &rq->slots[rq->head];
        bool due = s->due_us <= now_us;
        if (!due && rq->cap - rq->len >= reserve)
            break;
        ahead += !due;
        keys[n] = s->key;
        keylens[n++] = s->len;
        rq->head = (rq->head + 1) % rq->cap;
        rq->len--;
    }
    if (early != NULL)
        *early = ahead;
    return n;
}

uint64_t
redelete_next_due(const struct redelete *rq)
{
    return rq->len > 0 ? rq->slots[rq->head].due_us : UINT64_MAX;
}
