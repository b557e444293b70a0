/* The binlog -> Kafka relay of one shard: reads the shard's binlog as a
 * replica from a durable GTID checkpoint, turns row changes of listings,
 * nights and reservations into Debezium-style events keyed and partitioned
 * by listing (and changes the binlog shows no rows of, a TRUNCATE or a
 * statement-logged change, into truncate events), produces them
 * idempotently, and advances the checkpoint only
 * over transactions whose every event Kafka acknowledged (at-least-once:
 * duplicates after a crash, never gaps). */
#ifndef CAL_RELAY_H
#define CAL_RELAY_H

#include <signal.h>

#include "cdc/binlog.h"
#include "cdc/kproducer.h"

struct relay_conf {
    struct binlog_conf source; /* source.db.database: the shard database to relay */
    struct kproducer_conf kafka;
    char topic_prefix[64];
    char state_dir[512];
    int checkpoint_interval_ms; /* write the checkpoint at most this often ... */
    int checkpoint_events;      /* ... unless this many transactions were acknowledged */
    int progress_interval_s;
    int reconnect_max_ms; /* backoff cap between reconnects (it never gives up) */
    int metadata_timeout_ms;
    int max_pending_txns; /* read-ahead bound: transactions not yet acknowledged */
};

/* The tables relayed (NULL-terminated). */
extern const char *const relay_tables[];

/* Runs until *stop becomes nonzero, then flushes the producer, writes the
 * checkpoint and returns 0. Returns 1 when it cannot start (state_dir
 * locked or unusable, checkpoint corrupt), 2 when the Kafka settings are
 * refused (kproducer_conf_check). Connection problems with the shard or
 * Kafka, and a producer that cannot be created with valid settings, are
 * retried forever with bounded backoff. */
int relay_run(const struct relay_conf *conf, volatile sig_atomic_t *stop);

/* Counts one interruption of the stream, with acked the acknowledged
 * position when it ended and ran_us how long it had run: *stuck counts the
 * interruptions in a row at *stuck_at. One after the position moved, or
 * after a stream that ran RELAY_STREAM_HEALTHY_US (an idle shard's stream
 * is healthy for hours without a change), starts the count again at 1.
 * Returns *stuck; at RELAY_STUCK_ATTEMPTS the relay logs "stream stuck". */
#define RELAY_STUCK_ATTEMPTS 3
#define RELAY_STREAM_HEALTHY_US (10 * 1000 * 1000)
unsigned relay_count_interruption(const struct gtid_pos *acked, uint64_t ran_us,
                                  struct gtid_pos *stuck_at, unsigned *stuck);

#endif
