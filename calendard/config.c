/* calendard's configuration table and loading. */
#include "calendard/config.h"

#include <string.h>

#include "common/cache.h"
#include "common/conf.h"
#include "common/dbconf.h"
#include "common/log.h"
#include "common/util.h"

/* Empty: no cache. */
static cal_status
check_cache_servers(const char *value, char *why, size_t whylen)
{
    return value[0] == '\0' ? CAL_OK : cache_servers_check(value, why, whylen);
}

#define C struct calendard_conf
const struct conf_item config_items[] = {
    CONF_STR_CHECK_ITEM("server", "listen", C, http.listen, "127.0.0.1", conf_check_ipv4,
                        "IPv4 address to listen on"),
    CONF_INT_ITEM("server", "port", C, http.port, 1, 65535, "8080", "HTTP port"),
    CONF_INT_ITEM("server", "max_connections", C, http.max_connections, 1, 100000, "1024",
                  "open client connections at most, split evenly over the event loops (each takes "
                  "its share rounded up, so up to event_loops - 1 more): the kernel spreads new "
                  "connections over them, so a loop can refuse one a little before the total is "
                  "reached"),
    CONF_INT_ITEM("server", "max_inflight", C, http.max_inflight, 1, 100000, "512",
                  "requests being processed at most; more get 503 overloaded"),
    CONF_INT_ITEM("server", "max_body_bytes", C, http.max_body_bytes, 256, 16777216, "65536",
                  "largest request body; larger gets 413"),
    CONF_INT_ITEM("server", "max_header_bytes", C, http.max_header_bytes, 4096, 1048576, "32768",
                  "memory for one connection's request line and headers"),
    CONF_INT_ITEM("server", "idle_timeout_s", C, http.idle_timeout_s, 1, 3600, "30",
                  "close a connection idle this long"),
    CONF_INT_ITEM("server", "worker_threads", C, http.worker_threads, 1, 4096, "128",
                  "threads for requests that may wait on a shard (writes, cache misses, "
                  "searches); cache-hit reads are answered by the event loops"),
    CONF_INT_ITEM("server", "worker_spin_us", C, http.worker_spin_us, 0, 100000, "300",
                  "a worker that finishes while no other is busy polls for the next request this"
                  " long before it sleeps (at low load that request skips a thread wakeup); 0 ="
                  " sleep at once"),
    CONF_INT_ITEM("server", "event_loops", C, http.event_loops, 1, 64, "2",
                  "event-loop threads serving the connections (about one per core)"),
    CONF_INT_ITEM("server", "max_search_listings", C, max_search_listings, 1, 30000, "1000",
                  "listing_ids of one availability search at most (a shard's read of its"
                  " misses binds two placeholders per listing; MariaDB takes 65535)"),
    DBCONF_ADDRESS_ITEMS("catalog", C, catalog),
    DBCONF_SESSION_ITEMS("catalog", C, catalog, "cal_app"),
    DBCONF_SESSION_ITEMS("shards", C, shard, "cal_app"),
    CONF_INT_ITEM("shards", "pool_size", C, pool_size, 1, 1024, "32",
                  "connections per shard at most"),
    CONF_INT_ITEM("shards", "pool_wait_ms", C, pool_wait_ms, 0, 60000, "1000",
                  "wait this long for a free connection, then answer 503 overloaded"),
    CONF_INT_ITEM("shards", "batch_max", C, batch_max, 0, 1000, "32",
                  "bookings of one shard read and committed together (group commit); 0 = one each"),
    CONF_INT_ITEM("shards", "batch_lanes", C, batch_lanes, 1, 1024, "4",
                  "transactions of one shard's bookings in flight at once while the shard has"
                  " at most this many bookings in progress; beyond, one, and the bookings that"
                  " arrive while it is busy commit together in the next"),
    CONF_INT_ITEM("shards", "breaker_threshold", C, breaker_threshold, 1, 1000, "5",
                  "consecutive connection failures or timeouts that open a shard's breaker"),
    CONF_INT_ITEM("shards", "breaker_cooldown_ms", C, breaker_cooldown_ms, 10, 600000, "2000",
                  "an open breaker answers 503 at once this long, then lets one probe through"),
    CONF_INT_ITEM("routing", "refresh_interval_ms", C, refresh_interval_ms, 100, 3600000, "5000",
                  "reload the shard map this often (and at once on a 'moved' answer)"),
    CONF_INT_ITEM("routing", "max_attempts", C, max_attempts, 1, 100, "10",
                  "tries of one operation across conflicts and moves"),
    CONF_INT_ITEM("routing", "backoff_base_ms", C, backoff_base_ms, 0, 10000, "1",
                  "first retry waits up to this long (full jitter, doubling)"),
    CONF_INT_ITEM("routing", "backoff_max_ms", C, backoff_max_ms, 0, 60000, "50",
                  "longest wait between two tries"),
    CONF_INT_ITEM("routing", "request_deadline_ms", C, deadline_ms, 100, 600000, "8000",
                  "start no new attempt of a request after this long"),
    CONF_STR_CHECK_ITEM("cache", "servers", C, avail.cache.servers, "", check_cache_servers,
                        "memcached servers host:port[,host:port]; empty = no cache"),
    CONF_INT_ITEM("cache", "timeout_ms", C, avail.cache.timeout_ms, 1, 10000, "50",
                  "connect/send/receive timeout; a slow cache falls back to the shards"),
    CONF_INT_ITEM("cache", "ttl_s", C, avail.ttl_s, 1, 2592000, "3600",
                  "lifetime of a cached value (invalidations delete sooner)"),
    CONF_INT_ITEM("cache", "lease_ttl_s", C, avail.lease_ttl_s, 1, 60, "2",
                  "lifetime of a fill lease whose reader died"),
    CONF_INT_ITEM("cache", "delete_linger_ms", C, avail.delete_linger_ms, 0, 100, "5",
                  "how long a write's cache deletes wait to share a round trip with the next "
                  "writes' (its own reads bypass those keys meanwhile); 0 = at once"),
    CONF_STR_CHECK_ITEM("log", "level", C, log_level, "info", log_level_check,
                        "debug, info, warn or error"),
};
#undef C
const size_t config_nitems = sizeof(config_items) / sizeof(config_items[0]);

cal_status
config_load(const char *path, struct calendard_conf *conf, char *err, size_t errlen)
{
    memset(conf, 0, sizeof(*conf));
    conf_defaults(config_items, config_nitems, conf);
    cal_status rc = conf_load(config_items, config_nitems, conf, path, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (conf->backoff_max_ms < conf->backoff_base_ms) {
        snprintf(err, errlen, "%s: [routing] backoff_max_ms is below backoff_base_ms", path);
        return CAL_EINVAL;
    }
    if ((rc = db_conf_check_timeouts(&conf->catalog, path, "catalog", err, errlen)) != CAL_OK ||
        (rc = db_conf_check_timeouts(&conf->shard, path, "shards", err, errlen)) != CAL_OK)
        return rc;
    if ((rc = db_conf_read_password(&conf->catalog, err, errlen)) != CAL_OK)
        return rc;
    return db_conf_read_password(&conf->shard, err, errlen);
}
