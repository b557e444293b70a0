/* A bounded pool of connections to one database. */
#include "calendard/pool.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    struct db_conf conf;
    unsigned max;
    unsigned wait_ms;
    unsigned open; /* idle + in use + being connected */
    unsigned nidle;
    struct db **idle;
    bool retired; /* written under lock, read without: see pool_retired */
};

struct pool *
pool_create(const struct db_conf *conf, unsigned max, unsigned wait_ms)
{
    struct pool *pool = cal_calloc(1, sizeof(*pool));
    pthread_mutex_init(&pool->lock, NULL);
    cal_cond_init_monotonic(&pool->freed);
    pool->conf = *conf;
    pool->max = max ? max : 1;
    pool->wait_ms = wait_ms;
    pool->idle = cal_calloc(pool->max, sizeof(*pool->idle));
    return pool;
}

void
pool_destroy(struct pool *pool)
{
    if (pool == NULL)
        return;
    for (unsigned i = 0; i < pool->nidle; i++)
        db_close(pool->idle[i]);
    free(pool->idle);
    pthread_cond_destroy(&pool->freed);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

cal_status
pool_get(struct pool *pool, struct db **db, char *err, size_t errlen)
{
    struct timespec deadline = cal_mono_after_ms(pool->wait_ms);
    bool timed_out = false;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        if (pool->retired) {
            pthread_mutex_unlock(&pool->lock);
            snprintf(err, errlen, "the shard moved to another server");
            return CAL_EMOVED;
        }
        if (pool->nidle > 0) {
            *db = pool->idle[--pool->nidle];
            pthread_mutex_unlock(&pool->lock);
            return CAL_OK;
        }
        if (pool->open < pool->max)
            break;
        /* Checked after the wait: a waiter woken as it timed out still
         * takes the connection it was woken for. */
        if (timed_out) {
            pthread_mutex_unlock(&pool->lock);
            snprintf(err, errlen, "all %u connections busy for %u ms", pool->max, pool->wait_ms);
            return CAL_EAGAIN;
        }
        timed_out = pthread_cond_timedwait(&pool->freed, &pool->lock, &deadline) == ETIMEDOUT;
    }
    pool->open++;
    pthread_mutex_unlock(&pool->lock);
    /* Connect outside the lock: a slow server must not stall the other callers. */
    *db = db_connect(&pool->conf, err, errlen);
    pthread_mutex_lock(&pool->lock);
    if (*db != NULL && !pool->retired) {
        pthread_mutex_unlock(&pool->lock);
        return CAL_OK;
    }
    pool->open--;
    pthread_cond_signal(&pool->freed);
    bool retired = pool->retired;
    pthread_mutex_unlock(&pool->lock);
    if (retired) {
        /* Retired while connecting: whatever the old server did says
         * nothing about the shard now; route again. */
        db_close(*db);
        *db = NULL;
        snprintf(err, errlen, "the shard moved to another server");
        return CAL_EMOVED;
    }
    return CAL_EUNAVAIL;
}

void
pool_put(struct pool *pool, struct db *db)
{
    /* Every caller ends its transaction; one left open would keep its locks
     * (a fence row in share mode holds up a move's cutover) for the next
     * borrower. */
    if (db_in_txn(db)) {
        log_warn("connection put back inside a transaction; rolled back", "%s", "");
        db_rollback(db);
    }
    bool broken = db_broken(db), close_db = true;
    struct db *stale[64];
    size_t nstale = 0;
    pthread_mutex_lock(&pool->lock);
    if (pool->retired) {
        pool->open--;
    } else if (broken) {
        pool->open--;
        /* A lost connection usually means the server restarted: every idle
         * connection to it is dead too. Handing them out one by one would
         * fail that many requests (and half-open breaker probes) in a row. */
        while (pool->nidle > 0 && nstale < CAL_ARRAY_LEN(stale)) {
            stale[nstale++] = pool->idle[--pool->nidle];
            pool->open--;
        }
    } else {
        pool->idle[pool->nidle++] = db;
        close_db = false;
    }
    pthread_mutex_unlock(&pool->lock);
    /* One connection back wakes one waiter, not all of them to fight over
     * it (and after the unlock, so that it does not find the lock held);
     * a broken one can free several slots. */
    if (close_db)
        pthread_cond_broadcast(&pool->freed);
    else
        pthread_cond_signal(&pool->freed);
    if (close_db)
        db_close(db);
    for (size_t i = 0; i < nstale; i++)
        db_close(stale[i]);
}

void
pool_retire(struct pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    __atomic_store_n(&pool->retired, true, __ATOMIC_RELEASE);
    unsigned n = pool->nidle;
    struct db **idle = pool->idle;
    pool->idle = cal_calloc(pool->max, sizeof(*pool->idle));
    pool->nidle = 0;
    pool->open -= n;
    pthread_cond_broadcast(&pool->freed); /* waiters answer CAL_EMOVED */
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < n; i++)
        db_close(idle[i]);
    free(idle);
}

bool
pool_retired(struct pool *pool)
{
    /* Asked after every shard operation: no lock on that path. */
    return __atomic_load_n(&pool->retired, __ATOMIC_ACQUIRE);
}

unsigned
pool_size(struct pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    unsigned n = pool->open;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

const struct db_conf *
pool_conf(const struct pool *pool)
{
    return &pool->conf;
}
