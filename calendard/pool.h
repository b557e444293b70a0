/* A bounded pool of connections to one database: at most `max` open, callers
 * wait at most `wait_ms` for one, then get CAL_EAGAIN (back-pressure, not a
 * queue without bound). */
#ifndef CAL_POOL_H
#define CAL_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/db.h"

struct pool;

/* Copies conf. Connects lazily. Caller frees with pool_destroy(). */
struct pool *pool_create(const struct db_conf *conf, unsigned max, unsigned wait_ms);
void pool_destroy(struct pool *pool); /* pool_destroy(NULL) is a no-op */

/* CAL_OK with *db, CAL_EAGAIN when none freed up in time, CAL_EMOVED when
 * the pool is retired, CAL_EUNAVAIL when connecting failed (err says why). */
cal_status pool_get(struct pool *pool, struct db **db, char *err, size_t errlen);

/* Returns db to the pool; a broken db is closed together with every idle
 * connection (after a server restart they are all dead). */
void pool_put(struct pool *pool, struct db *db);

/* The shard moved to another address: idle connections are closed now,
 * the ones in use when they come back, and pool_get answers CAL_EMOVED
 * (route again). */
void pool_retire(struct pool *pool);
bool pool_retired(struct pool *pool);

/* The connection settings the pool connects with. */
const struct db_conf *pool_conf(const struct pool *pool);

/* Open connections now (idle and in use). */
unsigned pool_size(struct pool *pool);

#endif
