/* Integration tests of the availability cache against the stack's real
 * memcached and calendard: lease-guarded fills, invalidation after writes,
 * fallback when memcached is unreachable. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "calendard/avail.h"
#include "calendard/booking.h"
#include "calendard/cacheval.h"
#include "calendard/metrics.h"
#include "common/cache.h"
#include "common/cachekey.h"
#include "common/date.h"
#include "common/util.h"
#include "tests/lib/http.h"
#include "tests/lib/testd.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

static struct testenv env;

static void
load_env(void)
{
    char err[256];
    ck_assert_msg(testenv_load(&env, NULL, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_msg(env.memcached_servers[0] != '\0', "stack.env has no MEMCACHED_SERVERS");
}

/* An avail on servers whose deletes linger delete_linger_ms. */
static struct avail *
make_avail_lingering(const char *servers, unsigned delete_linger_ms)
{
    struct avail_conf conf = {.ttl_s = 60, .lease_ttl_s = 2, .delete_linger_ms = delete_linger_ms};
    char err[256];
    snprintf(conf.cache.servers, sizeof(conf.cache.servers), "%s", servers);
    conf.cache.timeout_ms = 50;
    struct avail *avail = avail_create(&conf, err, sizeof(err));
    ck_assert_msg(avail != NULL, "%s", err);
    return avail;
}

static struct avail *
make_avail(const char *servers)
{
    return make_avail_lingering(servers, 0);
}

static struct cache *
make_cache(void)
{
    struct cache_conf conf = {.timeout_ms = 200};
    char err[256];
    snprintf(conf.servers, sizeof(conf.servers), "%s", env.memcached_servers);
    struct cache *c = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    return c;
}

/* A shard read as the database would give it: one booked night. */
static void
fake_db_read(struct avail_item *item, int32_t booked_night, uint64_t version)
{
    struct calendar_read *r = &item->read;
    r->found = true;
    r->listing.listing_id = item->listing_id;
    r->listing.version = version;
    r->listing.rules_version = 1;
    r->listing.default_price = 100;
    memcpy(r->listing.currency, "EUR", 4);
    r->listing.min_nights = 1;
    r->listing.max_nights = 10;
    struct night_row *row = calendar_read_add(r);
    memset(row, 0, sizeof(*row));
    row->night = booked_night;
    row->status = NIGHT_BOOKED;
    row->version = 1;
}

static bool
key_present(struct cache *c, const char *key)
{
    struct cache_item it = {.key = key, .keylen = strlen(key)};
    char err[256];
    ck_assert_msg(cache_get_multi(c, &it, 1, err, sizeof(err)) == CAL_OK, "%s", err);
    bool found = it.found && !cacheval_is_lease(it.value, it.len);
    cache_results_free(&it, 1);
    return found;
}

/* Stores value under key for a minute. */
static void
put(struct cache *c, const char *key, const char *value)
{
    char err[256];
    cal_status st = cache_set(c, key, strlen(key), value, strlen(value), 60, err, sizeof(err));
    ck_assert_msg(st == CAL_OK, "set %s: %s", key, err);
}

/* The daemon's read path: the lookup (on the event loop), then for a miss
 * the leases (on a worker) before the shard read. */
static void
lookup(struct avail *avail, struct avail_item *item, int32_t from, int32_t to)
{
    avail_lookup(avail, item, 1, from, to);
    avail_lease(avail, item, 1, from, to);
}

/* calendard_cache_<name>_total of this process's metrics. */
static unsigned long long
cache_counter(const char *name)
{
    size_t len;
    char *text = metrics_render(NULL, NULL, 0, &len), line[128];
    snprintf(line, sizeof(line), "\ncalendard_cache_%s_total ", name);
    const char *at = strstr(text, line);
    ck_assert_msg(at != NULL, "no %s", line + 1);
    unsigned long long v = strtoull(at + strlen(line), NULL, 10);
    free(text);
    return v;
}

/* A month key filled after a change whose listing key is not deleted yet
 * (the two deletes land apart): a hit would answer the listing key's older
 * version with the newer month's nights, so it is no hit, and nothing is
 * deleted (the listing key's delete is on its way). A month older than its
 * listing key may predate a change whose nights delete has not landed (the
 * invalidator takes a change's listing row and nights rows from two topics,
 * in either order): a hit would show its old nights at the listing key's
 * new version. It is no hit either, and the month is leased (over the
 * value seen) and filled again from the shard read. */
START_TEST(a_month_of_another_version_than_its_listing_key_is_no_hit)
{
    load_env();
    struct avail *avail = make_avail(env.memcached_servers);
    struct cache *c = make_cache();
    int32_t from = date_from_ymd(2031, 3, 10), to = from + 3;
    uint64_t id = testenv_random48();
    char lkey[CACHEKEY_MAX], mkey[CACHEKEY_MAX];
    cachekey_listing(id, lkey);
    cachekey_month_of(id, from, mkey);
    put(c, lkey, "L1 5 1 100 EUR 1 9");
    put(c, mkey, "M1 6 11k");
    struct avail_item item = {.listing_id = id};
    unsigned long long hits = cache_counter("hits"), misses = cache_counter("misses");
    avail_lookup(avail, &item, 1, from, to);
    ck_assert_msg(!item.hit, "answered version 5 with the nights of version 6");
    /* The shard answers: misses, both keys, though both are there. */
    ck_assert_uint_eq(cache_counter("hits"), hits);
    ck_assert_uint_eq(cache_counter("misses"), misses + 2);
    ck_assert_uint_eq(item.absent, 0);
    ck_assert(key_present(c, mkey) && key_present(c, lkey));
    calendar_read_clear(&item.read);

    /* Older: no hit, the month goes, and this read leases it and fills it
     * (the listing key stays: it is the newer one). */
    put(c, mkey, "M1 4 11k");
    item = (struct avail_item){.listing_id = id};
    hits = cache_counter("hits");
    misses = cache_counter("misses");
    lookup(avail, &item, from, to);
    ck_assert_msg(!item.hit, "answered version 5 with the nights of a month read at version 4");
    ck_assert_uint_eq(cache_counter("hits"), hits + 1);
    ck_assert_uint_eq(cache_counter("misses"), misses + 1);
    ck_assert_uint_eq(item.absent, 2u);
    ck_assert_uint_eq(item.owned, 2u);
    ck_assert(key_present(c, lkey));
    calendar_read_clear(&item.read);
    fake_db_read(&item, from + 1, 5);
    avail_fill(avail, &item, 1, from, to);
    calendar_read_clear(&item.read);

    item = (struct avail_item){.listing_id = id};
    avail_lookup(avail, &item, 1, from, to);
    ck_assert(item.hit);
    ck_assert_uint_eq(item.read.listing.version, 5);
    ck_assert_uint_eq(item.read.nrows, 1);
    ck_assert_int_eq(item.read.rows[0].night, from + 1);
    ck_assert_int_eq(item.read.rows[0].status, NIGHT_BOOKED);
    calendar_read_clear(&item.read);
    cache_destroy(c);
    avail_destroy(avail);
}
END_TEST

/* Over two months: with one month newer than the listing key, nothing is
 * leased (an older one neither: the listing key is the stale one); with one
 * current and one older, the older one is leased, by cas over the value the
 * lookup saw, so a value stored since (another reader's fill) stays. */
START_TEST(a_stale_month_is_leased_only_over_the_value_seen)
{
    load_env();
    struct avail *avail = make_avail(env.memcached_servers);
    struct cache *c = make_cache();
    int32_t from = date_from_ymd(2031, 3, 30), to = date_from_ymd(2031, 4, 2);
    uint64_t id = testenv_random48();
    char lkey[CACHEKEY_MAX], m3[CACHEKEY_MAX], m4[CACHEKEY_MAX], err[256];
    cachekey_listing(id, lkey);
    cachekey_month_of(id, from, m3);
    cachekey_month_of(id, to, m4);
    put(c, lkey, "L1 5 1 100 EUR 1 9");
    put(c, m3, "M1 6 11k");
    put(c, m4, "M1 4 11k");
    struct avail_item item = {.listing_id = id};
    lookup(avail, &item, from, to);
    ck_assert(!item.hit);
    ck_assert_uint_eq(item.absent, 0);
    ck_assert_uint_eq(item.owned, 0);
    calendar_read_clear(&item.read);

    put(c, m3, "M1 5 11k");
    item = (struct avail_item){.listing_id = id};
    lookup(avail, &item, from, to);
    ck_assert(!item.hit);
    ck_assert_uint_eq(item.absent, 4u); /* the second month only */
    ck_assert_uint_eq(item.owned, 4u);
    calendar_read_clear(&item.read);
    ck_assert(cache_delete(c, m4, strlen(m4), err, sizeof(err)) == CAL_OK);

    /* Stored again between the lookup and the lease: the lease does not
     * take its place. */
    put(c, m4, "M1 4 11k");
    item = (struct avail_item){.listing_id = id};
    avail_lookup(avail, &item, 1, from, to);
    ck_assert(!item.hit);
    ck_assert_uint_eq(item.absent, 4u);
    put(c, m4, "M1 5 12k");
    avail_lease(avail, &item, 1, from, to);
    ck_assert_uint_eq(item.owned, 0);
    calendar_read_clear(&item.read);
    struct cache_item it = {.key = m4, .keylen = strlen(m4)};
    ck_assert(cache_get_multi(c, &it, 1, err, sizeof(err)) == CAL_OK);
    ck_assert(it.found && it.len == 8 && memcmp(it.value, "M1 5 12k", 8) == 0);
    cache_results_free(&it, 1);
    item = (struct avail_item){.listing_id = id};
    avail_lookup(avail, &item, 1, from, to);
    ck_assert(item.hit);
    ck_assert_uint_eq(item.read.listing.version, 5);
    calendar_read_clear(&item.read);

    /* Deleted between the lookup and the lease (its invalidation landed):
     * absent now, so leased like any absent key, and no cache error. */
    put(c, m4, "M1 4 11k");
    item = (struct avail_item){.listing_id = id};
    avail_lookup(avail, &item, 1, from, to);
    ck_assert_uint_eq(item.absent, 4u);
    ck_assert(cache_delete(c, m4, strlen(m4), err, sizeof(err)) == CAL_OK);
    unsigned long long errors = cache_counter("errors");
    avail_lease(avail, &item, 1, from, to);
    ck_assert_uint_eq(item.owned, 4u);
    ck_assert_uint_eq(cache_counter("errors"), errors);
    calendar_read_clear(&item.read);
    cache_destroy(c);
    avail_destroy(avail);
}
END_TEST

/* A value that does not decode (another release's format, say) is no hit,
 * and is replaced by the next fill instead of keeping the listing's reads on
 * the shard until it expires. */
START_TEST(an_undecodable_value_is_replaced)
{
    load_env();
    struct avail *avail = make_avail(env.memcached_servers);
    struct cache *c = make_cache();
    int32_t from = date_from_ymd(2031, 4, 10), to = from + 3;
    uint64_t id = testenv_random48();
    char lkey[CACHEKEY_MAX];
    cachekey_listing(id, lkey);
    put(c, lkey, "L9 not a listing");
    struct avail_item item = {.listing_id = id};
    lookup(avail, &item, from, to);
    ck_assert(!item.hit);
    ck_assert_msg(item.owned & 1u, "no lease on the undecodable listing key");
    fake_db_read(&item, from + 1, 3);
    avail_fill(avail, &item, 1, from, to);
    calendar_read_clear(&item.read);
    struct avail_item again = {.listing_id = id};
    lookup(avail, &again, from, to);
    ck_assert(again.hit);
    ck_assert_uint_eq(again.read.listing.version, 3);
    calendar_read_clear(&again.read);
    cache_destroy(c);
    avail_destroy(avail);
}
END_TEST

START_TEST(fill_then_hit)
{
    load_env();
    struct avail *avail = make_avail(env.memcached_servers);
    int32_t from = date_today() + 40, to = from + 5;
    struct avail_item item = {.listing_id = testenv_random48()};
    avail_lookup(avail, &item, 1, from, to);
    ck_assert(!item.hit);
    /* The lookup only looks: the listing key (bit 0) and its months are
     * absent, and only the lease step takes them. */
    ck_assert_uint_eq(item.owned, 0);
    ck_assert_uint_eq(item.absent & 1u, 1u);
    ck_assert_uint_ge(item.absent, 3);
    avail_lease(avail, &item, 1, from, to);
    ck_assert_uint_eq(item.owned, item.absent);
    fake_db_read(&item, from + 1, 7);
    avail_fill(avail, &item, 1, from, to);
    calendar_read_clear(&item.read);

    struct avail_item again = {.listing_id = item.listing_id};
    lookup(avail, &again, from, to);
    ck_assert(again.hit);
    ck_assert_uint_eq(again.read.listing.version, 7);
    ck_assert_str_eq(again.read.listing.currency, "EUR");
    ck_assert_uint_eq(again.read.nrows, 1);
    ck_assert_int_eq(again.read.rows[0].night, from + 1);
    ck_assert_int_eq(again.read.rows[0].status, NIGHT_BOOKED);
    calendar_read_clear(&again.read);
    avail_destroy(avail);
}
END_TEST

/* The interleaving the lease exists for: a reader takes its leases and reads
 * the shard, a write commits and is invalidated, then the reader tries to
 * fill with what it read before. Nothing may be stored: the delete removed
 * the lease, or (delete_held) it is not sent yet, the lease is still there
 * and only the pending set stops the fill. */
static void
stale_fill_is_dropped(bool delete_held)
{
    load_env();
    struct avail *avail = make_avail(env.memcached_servers);
    struct cache *c = make_cache();
    int32_t from = date_today() + 40, to = from + 3;
    uint64_t id = testenv_random48();
    struct avail_item item = {.listing_id = id};
    lookup(avail, &item, from, to);
    ck_assert(!item.hit);
    ck_assert_uint_ne(item.owned, 0);
    fake_db_read(&item, from, 3); /* read before the write */
    avail_hold_deletes(avail, delete_held);
    avail_invalidate(avail, id, from, to);
    if (!delete_held) /* the write's delete lands first */
        ck_assert_msg(avail_settle(avail, 5000), "the invalidation was never confirmed");
    avail_fill(avail, &item, 1, from, to);
    calendar_read_clear(&item.read);
    char key[CACHEKEY_MAX];
    cachekey_listing(id, key);
    ck_assert_msg(!key_present(c, key), "stale listing value stored after invalidation");
    cachekey_month_of(id, from, key);
    ck_assert_msg(!key_present(c, key), "stale month value stored after invalidation");
    avail_hold_deletes(avail, false);
    ck_assert(avail_settle(avail, 5000));
    cache_destroy(c);
    avail_destroy(avail);
}

START_TEST(stale_fill_after_invalidation_is_dropped)
{
    stale_fill_is_dropped(false);
}
END_TEST

START_TEST(fill_of_an_unsent_invalidation_is_dropped)
{
    stale_fill_is_dropped(true);
}
END_TEST

/* A second reader that finds the first reader's lease reads the shard but
 * must not fill: only the lease owner stores. */
START_TEST(only_the_lease_owner_fills)
{
    load_env();
    struct avail *avail = make_avail(env.memcached_servers);
    int32_t from = date_today() + 40, to = from + 3;
    uint64_t id = testenv_random48();
    struct avail_item first = {.listing_id = id}, second = {.listing_id = id};
    lookup(avail, &first, from, to);
    lookup(avail, &second, from, to);
    ck_assert_uint_ne(first.owned, 0);
    ck_assert_uint_eq(second.owned, 0);
    fake_db_read(&second, from, 9);
    avail_fill(avail, &second, 1, from, to);
    fake_db_read(&first, from + 1, 8);
    avail_fill(avail, &first, 1, from, to);
    struct avail_item check = {.listing_id = id};
    lookup(avail, &check, from, to);
    ck_assert(check.hit);
    ck_assert_uint_eq(check.read.listing.version, 8);
    calendar_read_clear(&first.read);
    calendar_read_clear(&second.read);
    calendar_read_clear(&check.read);
    avail_destroy(avail);
}
END_TEST

/* A loopback port whose connections the kernel completes but nobody
 * answers: a hung server. */
static int
silent_listener(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 64), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* With a short [cache] timeout_ms a hung memcached times out quickly, and
 * every lookup of an event loop still stalls its other connections for that
 * long: the loop must hand its reads to the workers (it logs "slow cache
 * lookup"), whatever the timeout, and the reads are answered from the shard.
 * A daemon of the test's own, with a cache that never answers. */
START_TEST(a_hung_cache_diverts_reads_at_any_timeout)
{
    load_env();
    http_global_init();
    unsigned mc_port;
    int hung = silent_listener(&mc_port);
    char servers[64], err[512];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u", mc_port);
    const struct testd_set sets[] = {{"cache", "servers", servers}, {"cache", "timeout_ms", "20"}};
    struct testd d;
    ck_assert_msg(testd_start(&d, &env, sets, 2, err, sizeof(err)), "%s", err);

    struct http_client *h = http_client_create();
    struct http_response r;
    char from[16], to[16];
    testenv_format_date(testenv_today() + 30, from, sizeof(from));
    testenv_format_date(testenv_today() + 40, to, sizeof(to));
    for (int i = 0; i < 3; i++) {
        ck_assert(http_requestf(h, "GET", NULL, NULL, &r, err, sizeof(err),
                                "%s/v1/listings/%llu/availability?from=%s&to=%s", d.url,
                                (unsigned long long)testenv_random48(), from, to) == CAL_OK);
        ck_assert_int_eq(r.status, 404); /* answered from the shard: no such listing */
        http_response_deinit(&r);
    }
    http_client_destroy(h);
    ck_assert_int_eq(testd_stop(&d, 30), 0);
    close(hung);

    char out[1 << 16];
    testd_read_log(&d, out, sizeof(out));
    testd_cleanup(&d);
    ck_assert_msg(strstr(out, "slow cache lookup") != NULL,
                  "a 20 ms cache timeout did not divert the loop's reads:\n%s", out);
}
END_TEST

/* One hung server of a pool costs only its own keys: the keys of the live
 * server are still answered by a multi-get over both. */
START_TEST(a_dead_server_of_the_pool_misses_only_its_keys)
{
    load_env();
    struct cache_conf conf = {.timeout_ms = 100};
    char err[256];
    unsigned port;
    int hung = silent_listener(&port);
    snprintf(conf.servers, sizeof(conf.servers), "%s,127.0.0.1:%u", env.memcached_servers, port);
    struct cache *pool = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(pool != NULL, "%s", err);
    enum { N = 16 };
    char keys[N][CACHEKEY_MAX];
    struct cache_item items[N] = {{0}};
    bool stored[N];
    size_t nstored = 0;
    uint64_t base = testenv_random48();
    for (size_t i = 0; i < N; i++) {
        cachekey_listing(base + i, keys[i]);
        items[i].key = keys[i];
        items[i].keylen = strlen(keys[i]);
        stored[i] =
            cache_set(pool, keys[i], items[i].keylen, "v", 1, 600, err, sizeof(err)) == CAL_OK;
        nstored += stored[i];
    }
    ck_assert_msg(nstored > 0 && nstored < N, "%zu of %d keys stored: not spread over both",
                  nstored, N);
    ck_assert_msg(cache_get_multi(pool, items, N, err, sizeof(err)) == CAL_OK, "%s", err);
    for (size_t i = 0; i < N; i++)
        ck_assert_msg(items[i].found == stored[i], "key %zu: found %d, stored %d", i,
                      (int)items[i].found, (int)stored[i]);
    cache_results_free(items, N);
    cache_destroy(pool);
    close(hung);
}
END_TEST

START_TEST(unreachable_cache_is_a_miss)
{
    load_env();
    /* Port 9 (discard) on loopback: nothing listens there. */
    struct avail *avail = make_avail("127.0.0.1:9");
    int32_t from = date_today() + 40;
    struct avail_item item = {.listing_id = 1};
    lookup(avail, &item, from, from + 2);
    ck_assert(!item.hit);
    ck_assert_uint_eq(item.owned, 0);
    fake_db_read(&item, from, 1);
    avail_fill(avail, &item, 1, from, from + 2); /* must not crash or block */
    avail_invalidate(avail, 1, from, from + 2);
    calendar_read_clear(&item.read);
    avail_destroy(avail);
}
END_TEST

/* A multi-get naming a key more than once answers every copy (a search may
 * name a listing twice). */
START_TEST(multi_get_answers_repeated_keys)
{
    load_env();
    struct cache *c = make_cache();
    char err[256], key[CACHEKEY_MAX], other[CACHEKEY_MAX];
    cachekey_listing(testenv_random48(), key);
    cachekey_listing(testenv_random48(), other);
    put(c, key, "v1");
    put(c, other, "v2");
    struct cache_item it[5] = {
        {.key = key}, {.key = other}, {.key = key}, {.key = key}, {.key = other}};
    for (int i = 0; i < 5; i++)
        it[i].keylen = strlen(it[i].key);
    ck_assert(cache_get_multi(c, it, 5, err, sizeof(err)) == CAL_OK);
    for (int i = 0; i < 5; i++) {
        ck_assert_msg(it[i].found, "copy %d of a repeated key reported missing", i);
        ck_assert_str_eq(it[i].value, it[i].key == key ? "v1" : "v2");
    }
    cache_results_free(it, 5);
    cache_destroy(c);
}
END_TEST

/* A multi-get of thousands of keys, some absent and some named twice, in
 * an order unlike the one memcached answers in: each item gets its own
 * key's value or a miss, never another key's. */
START_TEST(multi_get_matches_every_value_to_its_key)
{
    load_env();
    struct cache *c = make_cache();
    char err[256];
    enum { N = 3000 };
    static char keys[N][CACHEKEY_MAX], values[N][32];
    static struct cache_item it[N];
    uint64_t base = testenv_random48();
    for (size_t i = 0; i < N; i++) {
        /* Item i names key i, or key i - 7 again for every 10th. */
        size_t k = i % 10 == 9 ? i - 7 : i;
        cachekey_listing(base + (k * 7919) % N, keys[i]);
        snprintf(values[i], sizeof(values[i]), "value of %zu", (k * 7919) % N);
        it[i].key = keys[i];
        it[i].keylen = strlen(keys[i]);
        if (k == i && i % 3 != 0)
            ck_assert(cache_set(c, keys[i], it[i].keylen, values[i], strlen(values[i]), 60, err,
                                sizeof(err)) == CAL_OK);
    }
    ck_assert_msg(cache_get_multi(c, it, N, err, sizeof(err)) == CAL_OK, "%s", err);
    for (size_t i = 0; i < N; i++) {
        size_t k = i % 10 == 9 ? i - 7 : i;
        ck_assert_msg(it[i].found == (k % 3 != 0), "item %zu: found %d", i, (int)it[i].found);
        if (it[i].found) {
            ck_assert_uint_eq(it[i].len, strlen(values[i]));
            ck_assert_str_eq(it[i].value, values[i]);
        }
    }
    cache_results_free(it, N);
    cache_destroy(c);
}
END_TEST

/* Pipelined deletes: every named key is gone when the call returns (the
 * confirming round trip came after them), the others are untouched; an
 * unreachable server is an error, not a silent success. */
START_TEST(delete_many_deletes_exactly_the_named_keys)
{
    load_env();
    struct cache *c = make_cache();
    char err[256];
    enum { N = 300, DELETED = 250 };
    static char keys[N][CACHEKEY_MAX];
    const char *names[N];
    size_t lens[N];
    uint64_t base = testenv_random48();
    for (int i = 0; i < N; i++) {
        cachekey_listing(base + (uint64_t)i, keys[i]);
        names[i] = keys[i];
        lens[i] = strlen(keys[i]);
        ck_assert(cache_set(c, keys[i], lens[i], "v", 1, 60, err, sizeof(err)) == CAL_OK);
    }
    /* Absent keys and repeats are fine in the list. */
    names[DELETED - 1] = keys[0];
    lens[DELETED - 1] = lens[0];
    static bool done[N];
    ck_assert_msg(cache_delete_many(c, names, lens, DELETED, done, err, sizeof(err)) == CAL_OK,
                  "%s", err);
    for (int i = 0; i < DELETED; i++)
        ck_assert_msg(done[i], "key %d not marked done after a success", i);
    /* Checked on another connection: the call returns only once memcached
     * executed the deletes, not when they were merely written. */
    struct cache *other = make_cache();
    for (int i = 0; i < N; i++) {
        bool named = i < DELETED - 1;
        ck_assert_msg(key_present(other, keys[i]) != named, "key %d: %s after the pipeline", i,
                      named ? "still there" : "deleted although not named");
    }
    cache_destroy(other);
    /* The connection still answers normally afterwards (no reply left over). */
    ck_assert(cache_set(c, keys[0], lens[0], "w", 1, 60, err, sizeof(err)) == CAL_OK);
    ck_assert(key_present(c, keys[0]));
    cache_destroy(c);

    struct cache_conf dead = {.timeout_ms = 100};
    snprintf(dead.servers, sizeof(dead.servers), "127.0.0.1:9");
    c = cache_create(&dead, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    done[0] = true;
    ck_assert(cache_delete_many(c, names, lens, 10, done, err, sizeof(err)) != CAL_OK);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(!done[i], "key %d marked done with the server unreachable", i);
    cache_destroy(c);
}
END_TEST

/* keys[0..n) set through a cache of the live server alone, then deleted
 * through one of the live server and `other`: the call fails, and done
 * says which keys the live server confirmed, exactly those now gone. */
static void
delete_with_a_failed_server(const char *other, bool other_first)
{
    enum { N = 40 };
    char err[256];
    struct cache *live = make_cache();
    struct cache_conf conf = {.timeout_ms = 500}; /* a live server's own timeout is no fail */
    snprintf(conf.servers, sizeof(conf.servers), "%s,%s",
             other_first ? other : env.memcached_servers,
             other_first ? env.memcached_servers : other);
    struct cache *pool = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(pool != NULL, "%s", err);
    char keys[N][CACHEKEY_MAX];
    const char *names[N];
    size_t lens[N];
    bool done[N];
    uint64_t base = testenv_random48();
    for (size_t i = 0; i < N; i++) {
        lens[i] = cachekey_listing(base + i, keys[i]);
        names[i] = keys[i];
        ck_assert(cache_set(live, keys[i], lens[i], "v", 1, 60, err, sizeof(err)) == CAL_OK);
    }
    ck_assert(cache_delete_many(pool, names, lens, N, done, err, sizeof(err)) != CAL_OK);
    size_t ndone = 0;
    for (size_t i = 0; i < N; i++) {
        ck_assert_msg(done[i] == !key_present(live, keys[i]), "key %zu: done %d, present %d", i,
                      (int)done[i], (int)key_present(live, keys[i]));
        ndone += done[i];
    }
    ck_assert_msg(ndone > 0 && ndone < N, "%zu of %d keys confirmed: not spread over both", ndone,
                  N);
    cache_destroy(pool);
    cache_destroy(live);
}

/* One server of the pool down (refused) or hung (never answers), listed
 * before or after the live one: its keys fail, the live server's are
 * deleted and confirmed all the same. */
START_TEST(delete_many_confirms_the_keys_of_the_live_server)
{
    load_env();
    delete_with_a_failed_server("127.0.0.1:9", false);
    delete_with_a_failed_server("127.0.0.1:9", true);
    unsigned port;
    int hung = silent_listener(&port);
    char other[64];
    snprintf(other, sizeof(other), "127.0.0.1:%u", port);
    delete_with_a_failed_server(other, false);
    delete_with_a_failed_server(other, true);
    close(hung);
}
END_TEST

/* A peer that reads requests until it has a whole "get" line and then
 * resets the connection instead of answering it. */
static void *
reset_at_get(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    char buf[8192];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *get = strstr(buf, "get ");
        if (get != NULL && strstr(get, "\r\n") != NULL)
            break;
        if (len == sizeof(buf) - 1)
            len = 0;
    }
    struct linger rst = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
    close(fd);
    return NULL;
}

/* With one of two servers down, the keys the live one confirmed leave the
 * pending set at once and only the dead one's stay, retried: one server
 * does not hold up the others' invalidations. */
START_TEST(a_dead_server_keeps_only_its_keys_pending)
{
    load_env();
    char err[256];
    struct cache_conf conf = {.timeout_ms = 1000}; /* a set fails on the dead server only */
    snprintf(conf.servers, sizeof(conf.servers), "%s,127.0.0.1:9", env.memcached_servers);
    struct avail *avail = make_avail(conf.servers);
    struct cache *pool = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(pool != NULL, "%s", err);
    enum { N = 40 };
    uint64_t base = testenv_random48();
    size_t on_dead = 0;
    avail_hold_deletes(avail, true); /* then sent together, in one batch */
    for (size_t i = 0; i < N; i++) {
        char key[CACHEKEY_MAX];
        size_t len = cachekey_listing(base + i, key);
        on_dead += cache_set(pool, key, len, "v", 1, 60, err, sizeof(err)) != CAL_OK;
        avail_invalidate(avail, base + i, 0, 0);
    }
    avail_hold_deletes(avail, false);
    ck_assert_msg(on_dead > 0 && on_dead < N, "%zu of %d keys on the dead server", on_dead, N);
    for (int ms = 0; ms < 3000 && avail_pending_keys(avail) != on_dead; ms += 5)
        usleep(5000);
    ck_assert_uint_eq(avail_pending_keys(avail), on_dead);
    usleep(200 * 1000); /* retried meanwhile, never confirmed */
    ck_assert_uint_eq(avail_pending_keys(avail), on_dead);
    cache_destroy(pool);
    avail_destroy(avail);
}
END_TEST

/* The connection resets while the deletes are being confirmed: an error,
 * not a success. (libmemcached 1.1 can report a failed read of the reply as
 * NOTFOUND; cache.c also checks the error it recorded. With this peer it
 * reports the reset itself.) */
START_TEST(delete_many_reset_before_the_answer_is_an_error)
{
    unsigned port;
    int lfd = silent_listener(&port);
    pthread_t t;
    pthread_create(&t, NULL, reset_at_get, &lfd);
    struct cache_conf conf = {.timeout_ms = 2000};
    snprintf(conf.servers, sizeof(conf.servers), "127.0.0.1:%u", port);
    char err[256];
    struct cache *c = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    const char *keys[3] = {"cal:v1:L:1", "cal:v1:L:2", "cal:v1:L:3"};
    size_t lens[3] = {strlen(keys[0]), strlen(keys[1]), strlen(keys[2])};
    ck_assert_int_ne(cache_delete_many(c, keys, lens, 3, NULL, err, sizeof(err)), CAL_OK);
    pthread_join(t, NULL);
    cache_destroy(c);
    close(lfd);
}
END_TEST

/* The pid 'stack.sh up' recorded for the stack's process name. */
static pid_t
stack_pid(const char *name)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/run/%s.pid", env.stack_dir, name);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "no %s", path);
    long pid = 0;
    ck_assert_int_eq(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    return (pid_t)pid;
}

/* Requests that time out (memcached stopped) leave their answers on the
 * way: a get's (a value deleted since), an add's, a delete's. None of them
 * may be read as the answer to a later request on the same handle, which
 * would return the deleted value as a hit or take an add's answer for
 * another's. libmemcached 1.1.4 drops the connection of a request that
 * timed out, so the late answers go nowhere: cache.c relies on that, and
 * this holds it to it (another release, or another behaviour set on the
 * handle, could keep the connection). */
START_TEST(a_late_answer_is_never_taken_for_a_later_request)
{
    load_env();
    pid_t mc = stack_pid("memcached");
    struct cache_conf conf = {.timeout_ms = 50};
    char key[64], other[80], err[256];
    snprintf(key, sizeof(key), "cal:test:late:%llu", (unsigned long long)testenv_random48());
    snprintf(other, sizeof(other), "%s:lease", key);
    snprintf(conf.servers, sizeof(conf.servers), "%s", env.memcached_servers);
    struct cache *slow = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(slow != NULL, "%s", err);
    struct cache *c = make_cache();
    put(c, key, "old");
    ck_assert(key_present(slow, key)); /* connected: the stop hits the answers */

    bool stopped = proc_stop(mc);
    struct cache_item it = {.key = key, .keylen = strlen(key)};
    cal_status got = cache_get_multi(slow, &it, 1, err, sizeof(err));
    bool found = it.found;
    cache_results_free(&it, 1);
    cal_status added = cache_add(slow, other, strlen(other), "x", 1, 60, err, sizeof(err));
    cal_status deleted = cache_delete(slow, other, strlen(other), err, sizeof(err));
    ck_assert_int_eq(kill(mc, SIGCONT), 0);
    ck_assert_msg(stopped, "memcached (pid %ld) did not stop in 10 s", (long)mc);
    ck_assert_msg(!found && got != CAL_OK && added != CAL_OK && deleted != CAL_OK,
                  "answered while memcached was stopped: get %d (found %d), add %d, delete %d",
                  (int)got, (int)found, (int)added, (int)deleted);
    usleep(100 * 1000); /* the late answers arrive; memcached ran the requests */

    ck_assert(cache_delete(c, key, strlen(key), err, sizeof(err)) == CAL_OK);
    ck_assert_msg(!key_present(c, key), "the delete did not take");
    /* The slow handle's requests may time out again while memcached works
     * off what queued up during the stop: retried; a wrong answer is not. */
    cal_status st = CAL_EUNAVAIL;
    for (int i = 0; i < 40 && st == CAL_EUNAVAIL; i++) {
        if (i > 0)
            usleep(50 * 1000);
        it = (struct cache_item){.key = key, .keylen = strlen(key)};
        st = cache_get_multi(slow, &it, 1, err, sizeof(err));
        found = it.found;
        cache_results_free(&it, 1);
    }
    ck_assert_msg(st == CAL_OK, "%s", err);
    ck_assert_msg(!found, "a get returned the answer to an earlier one");
    /* The late add and delete ran in either order (each went on a
     * connection of its own): whatever they left goes, and an add stores. */
    st = CAL_EUNAVAIL;
    for (int i = 0; i < 40 && st != CAL_OK; i++) {
        if (i > 0)
            usleep(50 * 1000);
        ck_assert(cache_delete(c, other, strlen(other), err, sizeof(err)) == CAL_OK);
        st = cache_add(slow, other, strlen(other), "y", 1, 60, err, sizeof(err));
        ck_assert_msg(st == CAL_OK || st == CAL_EUNAVAIL || (st == CAL_EDUP && i < 3),
                      "an add was not stored (%d): %s", (int)st, err);
    }
    ck_assert_msg(st == CAL_OK, "an add was not stored (%d): %s", (int)st, err);
    put(c, key, "new");
    st = CAL_EUNAVAIL;
    for (int i = 0; i < 40 && st == CAL_EUNAVAIL; i++) {
        if (i > 0)
            usleep(50 * 1000);
        it = (struct cache_item){.key = key, .keylen = strlen(key)};
        st = cache_get_multi(slow, &it, 1, err, sizeof(err));
        found = it.found && it.len == 3 && memcmp(it.value, "new", 3) == 0;
        cache_results_free(&it, 1);
    }
    ck_assert_msg(st == CAL_OK && found, "%s", err);
    ck_assert(cache_delete(c, other, strlen(other), err, sizeof(err)) == CAL_OK);
    ck_assert(cache_delete(c, key, strlen(key), err, sizeof(err)) == CAL_OK);
    cache_destroy(slow);
    cache_destroy(c);
}
END_TEST
/* A key of the live server whose delete failed (memcached stopped) is
 * retried and confirmed once memcached answers again, though a key of the
 * down server sits in a bucket before it and keeps failing (the retry pass
 * goes on past it instead of starting over) and keeps being written (its
 * failed sends do not put the retry off). */
START_TEST(retry_goes_on_past_a_down_servers_keys)
{
    load_env();
    char err[256];
    struct cache_conf conf = {.timeout_ms = 1000};
    snprintf(conf.servers, sizeof(conf.servers), "%s,127.0.0.1:9", env.memcached_servers);
    struct cache *pool = cache_create(&conf, err, sizeof(err));
    ck_assert_msg(pool != NULL, "%s", err);
    /* The down server's key in the lowest bucket, the live one's in the
     * highest, of 200 listings. */
    uint64_t base = testenv_random48(), dead = 0, live = 0;
    size_t dead_bucket = SIZE_MAX, live_bucket = 0;
    for (uint64_t id = base; id < base + 200; id++) {
        char key[CACHEKEY_MAX];
        size_t len = cachekey_listing(id, key);
        size_t bucket = avail_pending_bucket(key, len);
        if (cache_set(pool, key, len, "v", 1, 60, err, sizeof(err)) != CAL_OK) {
            if (bucket < dead_bucket) {
                dead = id;
                dead_bucket = bucket;
            }
        } else if (bucket >= live_bucket) {
            live = id;
            live_bucket = bucket;
        }
    }
    ck_assert_msg(dead != 0 && live != 0 && dead_bucket < live_bucket,
                  "no down-server key before a live one (buckets %zu, %zu)", dead_bucket,
                  live_bucket);
    cache_destroy(pool);
    struct avail *avail = make_avail(conf.servers);
    pid_t mc = stack_pid("memcached");
    bool stopped = proc_stop(mc);
    avail_invalidate(avail, live, 0, 0);
    /* From now on the down server's key is written again and again: its
     * failing sends must not keep putting the retry off. */
    for (int ms = 0; ms < 300; ms += 5) { /* the live key's send times out */
        avail_invalidate(avail, dead, 0, 0);
        usleep(5000);
    }
    kill(mc, SIGCONT);
    ck_assert_msg(stopped, "memcached (pid %ld) did not stop in 10 s", (long)mc);
    for (int ms = 0; ms < 3000 && avail_pending_keys(avail) != 1; ms += 5) {
        avail_invalidate(avail, dead, 0, 0);
        usleep(5000);
    }
    ck_assert_msg(avail_pending_keys(avail) == 1,
                  "%zu keys pending: the live server's key was never retried",
                  avail_pending_keys(avail));
    avail_destroy(avail);
}
END_TEST

/* A write during each flush after an overflow: a key lost while the set is
 * full. Counted once memcached runs again (mc_running): a flush tried while
 * it was stopped fails, and proves nothing. */
static unsigned writes_during_flushes;
static int mc_running;

static void
write_during_flush(void *arg)
{
    struct avail *avail = arg;
    avail_invalidate(avail, testenv_random48(), 0, 0);
    if (__atomic_load_n(&mc_running, __ATOMIC_RELAXED))
        __atomic_add_fetch(&writes_during_flushes, 1, __ATOMIC_RELAXED);
}

/* 65,536 failed deletes (memcached stopped) overflow the pending set; once
 * memcached answers, the set drains although every flush loses a key to a
 * write racing with it, and the overflow clears once a flush loses none. */
START_TEST(the_overflow_drains_under_writes)
{
    load_env();
    struct avail_conf conf = {.ttl_s = 60, .lease_ttl_s = 2};
    char err[256];
    snprintf(conf.cache.servers, sizeof(conf.cache.servers), "%s", env.memcached_servers);
    conf.cache.timeout_ms = 10; /* 256 failed rounds in under 3 s; a 2 ms one
                                 * failed live rounds on a slow machine */
    struct avail *avail = avail_create(&conf, err, sizeof(err));
    ck_assert_msg(avail != NULL, "%s", err);
    enum { FULL = 65536 };
    uint64_t base = testenv_random48();
    /* memcached is stopped first: an overflow's flush comes at once, and
     * one that landed before the stop would clear it before the test. No
     * assertion until it runs again. */
    pid_t mc = stack_pid("memcached");
    /* Every flush writes, from the first: a flush begun while memcached
     * was stopped that ends once it runs again would otherwise clear the
     * overflow with no write during it, and none come after. */
    avail_on_flush(avail, write_during_flush, avail);
    bool stopped = proc_stop(mc);
    avail_hold_deletes(avail, true);
    for (uint64_t i = 0; i <= FULL; i++) /* one more than the set holds */
        avail_invalidate(avail, base + i, 0, 0);
    size_t pending = avail_pending_keys(avail);
    avail_hold_deletes(avail, false);
    usleep(4000 * 1000); /* every queued delete sent and failed */
    kill(mc, SIGCONT);
    __atomic_store_n(&mc_running, 1, __ATOMIC_RELAXED);
    ck_assert_msg(stopped, "memcached (pid %ld) did not stop in 10 s", (long)mc);
    ck_assert_uint_eq(pending, FULL + 1); /* + 1: the overflow */
    uint64_t drain_deadline = cal_mono_us() + 30 * 1000000ULL;
    while (avail_pending_keys(avail) > 1000 && cal_mono_us() < drain_deadline)
        usleep(10 * 1000);
    ck_assert_msg(avail_pending_keys(avail) <= 1000,
                  "%zu keys pending: the failed deletes were never retried",
                  avail_pending_keys(avail));
    /* The race the test is about takes place: writes come in mid-flush.
     * The overflow stays until a flush, which comes at the start of a retry
     * pass: the drain can end within the pass that was under way when
     * memcached stopped, so the flush may still be to come. */
    uint64_t flush_deadline = cal_mono_us() + 30 * 1000000ULL;
    while (__atomic_load_n(&writes_during_flushes, __ATOMIC_RELAXED) == 0 &&
           cal_mono_us() < flush_deadline)
        usleep(10 * 1000);
    avail_on_flush(avail, NULL, NULL);
    ck_assert_uint_gt(__atomic_load_n(&writes_during_flushes, __ATOMIC_RELAXED), 0);
    ck_assert_msg(avail_settle(avail, 20000), "the overflow never cleared");
    avail_destroy(avail);
}
END_TEST

/* A listing cached at version 4 over [from, to), through a lookup's lease,
 * with a daemon's cache and a plain client of the same memcached. */
struct cached {
    struct avail *avail;
    struct cache *c;
    uint64_t id;
    int32_t from, to;
};

static void
cache_version4(struct cached *f)
{
    load_env();
    f->avail = make_avail(env.memcached_servers);
    f->c = make_cache();
    f->id = testenv_random48();
    f->from = date_today() + 40;
    f->to = f->from + 3;
    struct avail_item item = {.listing_id = f->id};
    lookup(f->avail, &item, f->from, f->to);
    fake_db_read(&item, f->from, 4);
    avail_fill(f->avail, &item, 1, f->from, f->to);
    ck_assert_uint_ne(item.owned, 0);
    calendar_read_clear(&item.read);
}

/* A write whose invalidation fails (memcached stalled) must still be read
 * back by this daemon once memcached answers again: the key is read from the
 * shard until a background retry has deleted it. */
START_TEST(failed_invalidation_still_reads_own_write)
{
    struct cached f;
    cache_version4(&f);
    pid_t mc = stack_pid("memcached");
    bool stopped = proc_stop(mc);
    avail_invalidate(f.avail, f.id, f.from, f.to);
    /* The delete thread's send times out (50 ms) and so do its retries:
     * nothing may count as deleted while memcached is stopped. */
    bool settled = avail_settle(f.avail, 300);
    kill(mc, SIGCONT);
    ck_assert_msg(stopped, "memcached (pid %ld) did not stop in 10 s", (long)mc);
    ck_assert_msg(!settled, "an invalidation counted as done while memcached was stopped");
    struct avail_item again = {.listing_id = f.id};
    lookup(f.avail, &again, f.from, f.to);
    ck_assert_msg(!again.hit, "served the value the failed invalidation should have deleted");
    /* No assertion on again.owned: the background retry can fire while
     * memcached is stopped and land once it runs, before this lookup; a
     * lease taken (an add) then proves the old value was already gone. */
    calendar_read_clear(&again.read);
    char key[CACHEKEY_MAX];
    cachekey_listing(f.id, key);
    bool gone = false;
    for (int i = 0; i < 100 && !gone; i++) { /* the retry lands within seconds */
        gone = !key_present(f.c, key);
        if (!gone)
            usleep(50 * 1000);
    }
    ck_assert_msg(gone, "the failed invalidation was never retried");
    ck_assert_msg(avail_settle(f.avail, 5000), "the retried invalidation never left the set");
    cache_destroy(f.c);
    avail_destroy(f.avail);
}
END_TEST

/* An invalidation is sent after the write is answered: until memcached
 * confirmed the delete, this daemon's reads of the keys bypass the value
 * still cached, and fills of them are dropped. */
START_TEST(unsent_invalidation_still_reads_own_write)
{
    struct cached f;
    cache_version4(&f);
    avail_hold_deletes(f.avail, true);
    avail_invalidate(f.avail, f.id, f.from, f.to); /* the write's delete is not sent yet */
    char key[CACHEKEY_MAX];
    cachekey_listing(f.id, key);
    ck_assert_msg(key_present(f.c, key), "the held delete was sent");
    struct avail_item again = {.listing_id = f.id};
    lookup(f.avail, &again, f.from, f.to);
    ck_assert_msg(!again.hit, "served the value the unsent invalidation is to delete");
    calendar_read_clear(&again.read);
    ck_assert_msg(!avail_settle(f.avail, 100), "settled with the delete held");
    avail_hold_deletes(f.avail, false);
    ck_assert_msg(avail_settle(f.avail, 5000), "the invalidation was never confirmed");
    ck_assert_msg(!key_present(f.c, key), "confirmed, but the key is still cached");
    cache_destroy(f.c);
    avail_destroy(f.avail);
}
END_TEST

/* delete_linger_ms: a write's deletes wait that long for later writes' to
 * share their round trip, the keys pending (bypassed by this daemon's
 * reads) meanwhile; a stop sends what lingers at once. */
START_TEST(deletes_linger_then_share_a_round_trip)
{
    load_env();
    enum { LINGER_MS = 2000 }; /* margins of a few hundred ms under the sanitizers */
    struct avail *avail = make_avail_lingering(env.memcached_servers, LINGER_MS);
    struct cache *c = make_cache();
    uint64_t first = testenv_random48(), second = first + 1, third = first + 2;
    char k1[CACHEKEY_MAX], k2[CACHEKEY_MAX], k3[CACHEKEY_MAX];
    cachekey_listing(first, k1);
    cachekey_listing(second, k2);
    cachekey_listing(third, k3);
    put(c, k1, "old");
    put(c, k2, "old");
    put(c, k3, "old");

    uint64_t t0 = cal_mono_us();
    avail_invalidate(avail, first, 0, 0); /* the listing key alone */
    cal_sleep_ms(LINGER_MS / 2);
    avail_invalidate(avail, second, 0, 0);
    cal_sleep_ms(LINGER_MS / 4);
    ck_assert_uint_eq(avail_pending_keys(avail), 2);
    ck_assert_msg(key_present(c, k1) && key_present(c, k2), "a delete went before its linger");
    /* Both go in the round the first key's linger opens, the second's
     * own linger not waited for (nor a linger restarted by it, which
     * steady writes could put off for good). */
    bool gone = false;
    uint64_t gone_us = 0;
    while (!gone && cal_mono_us() - t0 < 5000000) {
        gone = !key_present(c, k1);
        if (gone)
            gone_us = cal_mono_us() - t0;
        else
            cal_sleep_ms(2);
    }
    ck_assert_msg(gone, "the first delete never went");
    ck_assert_msg(gone_us >= LINGER_MS * 1000, "the first delete went after %llu us, not %d ms",
                  (unsigned long long)gone_us, LINGER_MS);
    ck_assert_msg(gone_us < LINGER_MS * 1000 + LINGER_MS * 1000 / 3,
                  "the first delete went after %llu us: its linger restarted with the second",
                  (unsigned long long)gone_us);
    ck_assert_msg(!key_present(c, k2), "the second delete did not share the first's round trip");
    ck_assert(avail_settle(avail, 5000));

    /* A stop does not wait out the linger. */
    avail_invalidate(avail, third, 0, 0);
    ck_assert(key_present(c, k3));
    uint64_t stop_us = cal_mono_us();
    avail_destroy(avail);
    stop_us = cal_mono_us() - stop_us;
    ck_assert_msg(!key_present(c, k3), "a lingering delete was not sent at the stop");
    ck_assert_msg(stop_us < LINGER_MS * 1000 / 2, "the stop waited %llu us for the linger",
                  (unsigned long long)stop_us);
    cache_destroy(c);
}
END_TEST

/* A full round of queued deletes goes at once: a linger only waits for
 * writes that would share a round trip, and a full one has no room. */
START_TEST(a_full_round_of_deletes_does_not_linger)
{
    load_env();
    enum { LINGER_MS = 3000, ROUND = 256 };
    struct avail *avail = make_avail_lingering(env.memcached_servers, LINGER_MS);
    uint64_t first = testenv_random48();
    uint64_t t0 = cal_mono_us();
    for (uint64_t i = 0; i < ROUND - 1; i++)
        avail_invalidate(avail, first + i, 0, 0); /* the listing key alone */
    ck_assert_msg(!avail_settle(avail, 300), "%d keys, less than a round, did not linger",
                  ROUND - 1);
    avail_invalidate(avail, first + ROUND - 1, 0, 0);
    ck_assert_msg(avail_settle(avail, 1500), "a full round of deletes waited (%zu keys pending)",
                  avail_pending_keys(avail));
    uint64_t took_us = cal_mono_us() - t0;
    ck_assert_msg(took_us < LINGER_MS * 1000, "the round went after %llu us: it lingered",
                  (unsigned long long)took_us);
    avail_destroy(avail);
}
END_TEST

/* A retry sends at most 256 keys of a bucket of the pending set at a time:
 * after memcached was stopped, a bucket holding more failed keys than that
 * must still be emptied once it answers again. */
START_TEST(retry_empties_a_crowded_bucket)
{
    enum { N = 260 };
    load_env();
    struct avail *avail = make_avail(env.memcached_servers);
    uint64_t ids[N];
    char key[CACHEKEY_MAX];
    uint64_t id = testenv_random48();
    cachekey_listing(id, key);
    size_t bucket = avail_pending_bucket(key, strlen(key)), n = 0;
    for (; n < N; id++) { /* about 4096 ids per one of the bucket */
        cachekey_listing(id, key);
        if (avail_pending_bucket(key, strlen(key)) == bucket)
            ids[n++] = id;
    }
    pid_t mc = stack_pid("memcached");
    bool stopped = proc_stop(mc);
    for (size_t i = 0; i < N; i++)
        avail_invalidate(avail, ids[i], 0, 0); /* the listing key only */
    bool settled = avail_settle(avail, 300);
    kill(mc, SIGCONT);
    ck_assert_msg(stopped, "memcached (pid %ld) did not stop in 10 s", (long)mc);
    ck_assert_msg(!settled, "invalidations counted as done while memcached was stopped");
    ck_assert_msg(avail_settle(avail, 10000), "failed keys left in the pending set");
    avail_destroy(avail);
}
END_TEST

struct stay_thread {
    uint64_t listing_id;
    int index;
    long status;
    uint64_t version;
};

static void *
book_one_night(void *arg)
{
    struct stay_thread *t = arg;
    struct http_client *h = http_client_create();
    struct http_response r;
    char url[512], body[256], hdr[64], err[256], d1[11], d2[11];
    const char *headers[2] = {hdr, NULL};
    testenv_format_date(testenv_today() + 100 + 2 * t->index, d1, sizeof(d1));
    testenv_format_date(testenv_today() + 101 + 2 * t->index, d2, sizeof(d2));
    snprintf(url, sizeof(url), "%s/v1/listings/%llu/reservations", env.calendard_url,
             (unsigned long long)t->listing_id);
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":9}", d1,
             d2);
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: same-listing-%d", t->index);
    http_response_init(&r);
    if (http_request(h, "POST", url, headers, body, strlen(body), 15000, &r, err, sizeof(err)) ==
        CAL_OK) {
        t->status = r.status;
        json_t *doc = http_response_json(&r);
        t->version = (uint64_t)json_integer_value(json_object_get(doc, "version"));
        json_decref(doc);
    }
    http_response_deinit(&r);
    http_client_destroy(h);
    return NULL;
}

/* Non-overlapping bookings of one listing may share a group commit: each
 * must succeed, get its own calendar version, and the listing must end at
 * exactly one version per booking. */
START_TEST(concurrent_bookings_of_one_listing_get_distinct_versions)
{
    enum { N = 16 };
    load_env();
    http_global_init();
    struct http_client *h = http_client_create();
    struct http_response r;
    char url[512];
    uint64_t id = testenv_random48();
    snprintf(url, sizeof(url), "%s/v1/listings/%llu", env.calendard_url, (unsigned long long)id);
    http_response_init(&r);
    char err[256];
    const char *body = "{\"default_price\":100,\"currency\":\"USD\",\"min_nights\":1,"
                       "\"max_nights\":9}";
    ck_assert(http_request(h, "PUT", url, NULL, body, strlen(body), 15000, &r, err, sizeof(err)) ==
              CAL_OK);
    ck_assert_int_eq(r.status, 201);
    http_response_deinit(&r);
    struct stay_thread t[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        t[i] = (struct stay_thread){.listing_id = id, .index = i};
        pthread_create(&th[i], NULL, book_one_night, &t[i]);
    }
    bool seen[N + 2] = {false};
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(t[i].status, 201);
        ck_assert_uint_ge(t[i].version, 2);
        ck_assert_uint_le(t[i].version, N + 1);
        ck_assert_msg(!seen[t[i].version], "version %llu handed out twice",
                      (unsigned long long)t[i].version);
        seen[t[i].version] = true;
    }
    http_response_init(&r);
    ck_assert(http_request(h, "GET", url, NULL, NULL, 0, 15000, &r, err, sizeof(err)) == CAL_OK);
    json_t *doc = http_response_json(&r);
    ck_assert_uint_eq((uint64_t)json_integer_value(json_object_get(doc, "version")), N + 1);
    json_decref(doc);
    http_response_deinit(&r);
    http_client_destroy(h);
}
END_TEST

static long
request(struct http_client *h, const char *method, const char *url, const char *key,
        const char *body, struct http_response *resp)
{
    char err[256], hdr[300];
    const char *headers[2] = {NULL, NULL};
    if (key != NULL) {
        snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", key);
        headers[0] = hdr;
    }
    http_response_init(resp);
    ck_assert_msg(http_request(h, method, url, headers, body, body ? strlen(body) : 0, 10000, resp,
                               err, sizeof(err)) == CAL_OK,
                  "%s %s: %s", method, url, err);
    return resp->status;
}

/* Reads through calendard until every key of keys is cached (not a lease):
 * a read right after a write does not fill the keys that write is still
 * invalidating. */
static void
read_until_cached(struct http_client *h, const char *method, const char *url, const char *body,
                  char (*keys)[CACHEKEY_MAX], size_t n)
{
    struct cache *c = make_cache();
    for (int tries = 1;; tries++) {
        struct http_response r;
        ck_assert_int_eq(request(h, method, url, NULL, body, &r), 200);
        http_response_deinit(&r);
        size_t left = 0;
        for (size_t i = 0; i < n; i++)
            left += !key_present(c, keys[i]);
        if (left == 0)
            break;
        ck_assert_msg(tries < 50, "%zu of %zu keys not cached after %d reads", left, n, tries);
        usleep(100000);
    }
    cache_destroy(c);
}

/* Waits until no key of keys is cached: a write deleted them. */
static void
wait_uncached(char (*keys)[CACHEKEY_MAX], size_t n)
{
    struct cache *c = make_cache();
    for (int tries = 1;; tries++) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++)
            left += key_present(c, keys[i]);
        if (left == 0)
            break;
        ck_assert_msg(tries < 100, "%zu of %zu keys still cached 10 s after the write", left, n);
        usleep(100000);
    }
    cache_destroy(c);
}

/* Makes listing id (500 USD, 1 to 9 nights): url[512] names it, avail_url[600]
 * its availability of [in, in + 4), keys the listing's key and the range's
 * months'. */
static void
new_listing(struct http_client *h, uint64_t id, int32_t in, char *url, char *avail_url,
            char (*keys)[CACHEKEY_MAX])
{
    struct http_response r;
    char from[11], to[11];
    testenv_format_date(in, from, sizeof(from));
    testenv_format_date(in + 4, to, sizeof(to));
    snprintf(url, 512, "%s/v1/listings/%llu", env.calendard_url, (unsigned long long)id);
    ck_assert_int_eq(request(h, "PUT", url, NULL,
                             "{\"default_price\":500,\"currency\":\"USD\",\"min_nights\":1,"
                             "\"max_nights\":9}",
                             &r),
                     201);
    http_response_deinit(&r);
    snprintf(avail_url, 600, "%s/availability?from=%s&to=%s", url, from, to);
    cachekey_listing(id, keys[0]);
    cachekey_month_of(id, in, keys[1]);
    cachekey_month_of(id, in + 3, keys[2]);
}

/* new_listing(), with its availability of [in, in + 4) cached. */
static void
cached_listing(struct http_client *h, uint64_t id, int32_t in, char *url, char *avail_url,
               char (*keys)[CACHEKEY_MAX])
{
    new_listing(h, id, in, url, avail_url, keys);
    read_until_cached(h, "GET", avail_url, NULL, keys, 3);
}

/* After cached_listing(): the PUT's own CDC event may still delete what the
 * read cached. Lets it (up to 15 s: a consumer group's rebalance stalls CDC
 * for seconds; it may also have come before the read), and
 * its second delete [invalidator] redelete_ms (2 s) after it, then caches
 * again: a delete landing after that would pass for one the test made. */
static void
settle_cached_listing(struct http_client *h, const char *avail_url, char (*keys)[CACHEKEY_MAX])
{
    struct cache *c = make_cache();
    for (int i = 0; i < 150 && key_present(c, keys[0]); i++)
        usleep(100000);
    cache_destroy(c);
    usleep(3000 * 1000);
    read_until_cached(h, "GET", avail_url, NULL, keys, 3);
}

/* Through calendard: a cached availability answer changes after a booking
 * and after a host block, with the version growing. */
START_TEST(writes_invalidate_cached_availability)
{
    load_env();
    struct http_client *h = http_client_create();
    struct http_response r;
    uint64_t id = testenv_random48();
    char url[512], avail_url[600], body[256], d1[11], d2[11], d3[11];
    char keys[3][CACHEKEY_MAX];
    int32_t in = (int32_t)testenv_today() + 60;
    cached_listing(h, id, in, url, avail_url, keys);
    testenv_format_date(in, d1, sizeof(d1));
    testenv_format_date(in + 2, d2, sizeof(d2));
    testenv_format_date(in + 4, d3, sizeof(d3));
    for (int i = 0; i < 2; i++) { /* hits */
        ck_assert_int_eq(request(h, "GET", avail_url, NULL, NULL, &r), 200);
        ck_assert_ptr_null(strstr(r.body, "booked"));
        ck_assert_str_eq(r.etag, "\"1\"");
        http_response_deinit(&r);
    }
    char res_url[600];
    snprintf(res_url, sizeof(res_url), "%s/reservations", url);
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":5}", d1,
             d2);
    ck_assert_int_eq(request(h, "POST", res_url, "cache-1", body, &r), 201);
    http_response_deinit(&r);
    wait_uncached(keys, 2); /* the listing and the month of the booked nights */
    read_until_cached(h, "GET", avail_url, NULL, keys, 3);
    ck_assert_int_eq(request(h, "GET", avail_url, NULL, NULL, &r), 200);
    ck_assert_str_eq(r.etag, "\"2\"");
    json_t *doc = http_response_json(&r);
    json_t *nights = json_object_get(doc, "nights");
    ck_assert_uint_eq(json_array_size(nights), 4);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(nights, 0), "status")),
                     "booked");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(nights, 2), "status")),
                     "available");
    json_decref(doc);
    http_response_deinit(&r);
    char cal_url[600];
    snprintf(cal_url, sizeof(cal_url), "%s/calendar", url);
    snprintf(body, sizeof(body), "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}", d2, d3);
    ck_assert_int_eq(request(h, "POST", cal_url, NULL, body, &r), 200);
    http_response_deinit(&r);
    wait_uncached(keys, 1);
    read_until_cached(h, "GET", avail_url, NULL, keys, 3);
    ck_assert_int_eq(request(h, "GET", avail_url, NULL, NULL, &r), 200);
    ck_assert_str_eq(r.etag, "\"3\"");
    doc = http_response_json(&r);
    nights = json_object_get(doc, "nights");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(nights, 3), "status")),
                     "blocked");
    json_decref(doc);
    http_response_deinit(&r);
    http_client_destroy(h);
}
END_TEST

/* The shard (index into env.shard_dsns) holding listing id, and its database. */
static size_t
shard_of_listing(uint64_t id, char *database, size_t len)
{
    char err[256];
    for (size_t i = 0; i < env.nshards; i++) {
        struct db *d = testenv_connect_shard(&env, i, err, sizeof(err));
        ck_assert_msg(d != NULL, "%s", err);
        struct db_val p[1] = {DB_INT_V((int64_t)id)}, c[1];
        struct db_stmt *st;
        ck_assert_msg(db_query(d, "SELECT COUNT(*) FROM listings WHERE listing_id = ?", p, 1, &st,
                               err, sizeof(err)) == CAL_OK,
                      "%s", err);
        ck_assert_int_eq(db_fetch(st, c, 1, err, sizeof(err)), 1);
        int64_t n = c[0].i;
        while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
            ;
        db_close(d);
        if (n > 0) {
            struct db_conf conf;
            memset(&conf, 0, sizeof(conf));
            ck_assert(db_conf_parse_dsn(&conf, env.shard_dsns[i], err, sizeof(err)) == CAL_OK);
            snprintf(database, len, "%s", conf.database);
            return i;
        }
    }
    ck_abort_msg("listing %llu is on no shard", (unsigned long long)id);
    return 0;
}

/* A booking committed whose answer was lost (503 outcome_unknown) is
 * replayed under its key: the replay's answer invalidates its nights like
 * the original's would have, so the client reads its own booking at once,
 * whatever the CDC pipeline's lag. The original is written here by SQL
 * outside the binlog, so that no invalidation but the replay's comes. */
START_TEST(a_replayed_booking_invalidates_its_nights)
{
    load_env();
    struct http_client *h = http_client_create();
    struct http_response r;
    uint64_t id = testenv_random48(), rid = testenv_random48(), guest = 7;
    int32_t in = (int32_t)testenv_today() + 60, out = in + 2;
    char url[512], avail_url[600], body[256], d1[11], d2[11];
    char keys[3][CACHEKEY_MAX];
    cached_listing(h, id, in, url, avail_url, keys);
    testenv_format_date(in, d1, sizeof(d1));
    testenv_format_date(out, d2, sizeof(d2));
    settle_cached_listing(h, avail_url, keys);
    char database[128], hash[17], sql[2048];
    size_t shard = shard_of_listing(id, database, sizeof(database));
    booking_request_hash(in, out, guest, hash);
    unsigned vb = testenv_vbucket(id);
    snprintf(sql, sizeof(sql),
             "SET SESSION sql_log_bin = 0; USE %s; START TRANSACTION;"
             " INSERT INTO nights (listing_id, night, status, reservation_id, version, vbucket)"
             " VALUES (%llu, FROM_DAYS(%d), 'booked', %llu, 2, %u),"
             " (%llu, FROM_DAYS(%d), 'booked', %llu, 2, %u);"
             " INSERT INTO reservations (reservation_id, listing_id, vbucket, check_in, check_out,"
             " guest_id, status, total_price, currency, idempotency_key, request_hash, version)"
             " VALUES (%llu, %llu, %u, FROM_DAYS(%d), FROM_DAYS(%d), %llu, 'confirmed', 1000,"
             " 'USD', 'lost-answer', '%s', 2);"
             " UPDATE listings SET version = 2 WHERE listing_id = %llu; COMMIT;\n",
             database, (unsigned long long)id, in + DB_TO_DAYS_EPOCH, (unsigned long long)rid, vb,
             (unsigned long long)id, in + 1 + DB_TO_DAYS_EPOCH, (unsigned long long)rid, vb,
             (unsigned long long)rid, (unsigned long long)id, vb, in + DB_TO_DAYS_EPOCH,
             out + DB_TO_DAYS_EPOCH, (unsigned long long)guest, hash, (unsigned long long)id);
    ck_assert_int_eq(testenv_sql_admin(&env, shard, sql), 0);
    /* Still cached as it was: nothing told the cache. */
    ck_assert_int_eq(request(h, "GET", avail_url, NULL, NULL, &r), 200);
    ck_assert_str_eq(r.etag, "\"1\"");
    http_response_deinit(&r);
    char res_url[600];
    snprintf(res_url, sizeof(res_url), "%s/reservations", url);
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":%llu}", d1,
             d2, (unsigned long long)guest);
    ck_assert_int_eq(request(h, "POST", res_url, "lost-answer", body, &r), 200);
    http_response_deinit(&r);
    ck_assert_int_eq(request(h, "GET", avail_url, NULL, NULL, &r), 200);
    ck_assert_str_eq(r.etag, "\"2\"");
    json_t *doc = http_response_json(&r);
    json_t *nights = json_object_get(doc, "nights");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(nights, 0), "status")),
                     "booked");
    json_decref(doc);
    http_response_deinit(&r);
    http_client_destroy(h);
}
END_TEST

/* Every shard's binlog group commit wait as it was (this process). */
static long long commit_wait_count[TESTENV_MAX_SHARDS], commit_wait_usec[TESTENV_MAX_SHARDS];

/* Unchecked fixture: the waits are put back even when the test crashed, or
 * every later commit of the shard would wait. */
static void
remember_commit_waits(void)
{
    char err[256];
    load_env();
    for (size_t i = 0; i < env.nshards; i++)
        ck_assert_msg(testenv_get_global(&env, i, "binlog_commit_wait_count", &commit_wait_count[i],
                                         err, sizeof(err)) == 0 &&
                          testenv_get_global(&env, i, "binlog_commit_wait_usec",
                                             &commit_wait_usec[i], err, sizeof(err)) == 0,
                      "%s", err);
}

static void
restore_commit_waits(void)
{
    for (size_t i = 0; i < env.nshards; i++)
        if (testenv_set_global(&env, i, "binlog_commit_wait_count", commit_wait_count[i]) != 0 ||
            testenv_set_global(&env, i, "binlog_commit_wait_usec", commit_wait_usec[i]) != 0)
            fprintf(stderr, "check_cache: could not restore shard %zu's binlog commit wait\n", i);
}

/* The status of night `in` of listing id on its shard ("" when no row). */
static void
night_in_sql(size_t shard, uint64_t id, int32_t in, char *out, size_t outlen)
{
    char err[256];
    struct db *d = testenv_connect_shard(&env, shard, err, sizeof(err));
    ck_assert_msg(d != NULL, "%s", err);
    struct db_val p[2] = {DB_INT_V((int64_t)id), DB_INT_V(in + DB_TO_DAYS_EPOCH)}, c[1];
    struct db_stmt *st;
    ck_assert_msg(
        db_query(d, "SELECT status FROM nights WHERE listing_id = ? AND night = FROM_DAYS(?)", p, 2,
                 &st, err, sizeof(err)) == CAL_OK,
        "%s", err);
    out[0] = '\0';
    while (db_fetch(st, c, 1, err, sizeof(err)) > 0)
        snprintf(out, outlen, "%s", c[0].type == DB_STR ? c[0].s : "");
    db_close(d);
}

/* A host block whose COMMIT outlived calendard's read timeout answers 503
 * outcome_unknown, and api.md tells the client to read it back: the block
 * committed all the same (the server went on), so the daemon that answered
 * must not read its cached calendar from before it. With the shard's CDC
 * relay stopped (the invalidator stays in its consumer group), only
 * calendard's own invalidation can take the keys away. */
START_TEST(a_write_of_unknown_outcome_invalidates_like_a_committed_one)
{
    load_env();
    char err[512];
    struct testd d;
    const struct testd_set sets[] = {{"shards", "read_timeout_ms", "3000"},
                                     {"shards", "lock_wait_timeout_s", "1"}};
    ck_assert_msg(testd_start(&d, &env, sets, 2, err, sizeof(err)), "%s", err);
    struct http_client *h = http_client_create();
    struct http_response r;
    uint64_t id = testenv_random48();
    int32_t in = (int32_t)testenv_today() + 60;
    char url[512], avail_url[600], cal_url[700], own_avail[800], body[256], d1[11], d2[11];
    char keys[3][CACHEKEY_MAX], database[128], status[32];
    cached_listing(h, id, in, url, avail_url, keys);
    settle_cached_listing(h, avail_url, keys);
    size_t shard = shard_of_listing(id, database, sizeof(database));
    char relay[32];
    snprintf(relay, sizeof(relay), "cdc-relay-shard%zu", shard);
    pid_t relay_pid = stack_pid(relay);
    ck_assert(proc_stop(relay_pid)); /* SIGCONT when this test ends, whatever happens */
    /* Every commit of the shard now waits 4.5 s: past the 3 s read timeout. */
    ck_assert_int_eq(testenv_set_global(&env, shard, "binlog_commit_wait_count", 1000), 0);
    ck_assert_int_eq(testenv_set_global(&env, shard, "binlog_commit_wait_usec", 4500000), 0);
    testenv_format_date(in + 1, d1, sizeof(d1));
    testenv_format_date(in + 2, d2, sizeof(d2));
    snprintf(cal_url, sizeof(cal_url), "%s/v1/listings/%llu/calendar", d.url,
             (unsigned long long)id);
    snprintf(body, sizeof(body), "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"block\"}", d1, d2);
    long code = request(h, "POST", cal_url, NULL, body, &r);
    bool unknown = r.body != NULL && strstr(r.body, "outcome_unknown") != NULL;
    http_response_deinit(&r);
    restore_commit_waits();
    ck_assert_msg(code == 503 && unknown, "the block answered %ld, not 503 outcome_unknown", code);
    /* The server finishes the COMMIT once its wait ends. */
    for (int i = 0; i < 100; i++) {
        night_in_sql(shard, id, in + 1, status, sizeof(status));
        if (strcmp(status, "blocked") == 0)
            break;
        usleep(100000);
    }
    ck_assert_msg(strcmp(status, "blocked") == 0, "the block never committed: '%s'", status);
    snprintf(own_avail, sizeof(own_avail), "%s%s", d.url, avail_url + strlen(env.calendard_url));
    ck_assert_int_eq(request(h, "GET", own_avail, NULL, NULL, &r), 200);
    json_t *doc = http_response_json(&r);
    json_t *nights = json_object_get(doc, "nights");
    const char *st = json_string_value(json_object_get(json_array_get(nights, 1), "status"));
    ck_assert_msg(st != NULL && strcmp(st, "blocked") == 0,
                  "read back after the 503: night %s is %s (etag %s)", d1, st ? st : "?", r.etag);
    json_decref(doc);
    http_response_deinit(&r);
    kill(relay_pid, SIGCONT);
    http_client_destroy(h);
    ck_assert_int_eq(testd_stop(&d, 30), 0);
    testd_cleanup(&d);
}
END_TEST

/* Unchecked teardown: every shard writable again, even after a failure. */
static void
all_writable(void)
{
    char err[256];
    if (testenv_load(&env, NULL, err, sizeof(err)) != CAL_OK)
        return;
    for (size_t i = 0; i < env.nshards; i++)
        testenv_set_global(&env, i, "read_only", 0);
}

/* key holds a lease: a reader's, which it did not fill (yet). */
static bool
key_leased(struct cache *c, const char *key)
{
    struct cache_item it = {.key = key, .keylen = strlen(key)};
    char err[256];
    ck_assert_msg(cache_get_multi(c, &it, 1, err, sizeof(err)) == CAL_OK, "%s", err);
    bool leased = it.found && cacheval_is_lease(it.value, it.len);
    cache_results_free(&it, 1);
    return leased;
}

/* Reads through calendard (search: POST body to url, else GET url) with the
 * listing's keys deleted first, five times: each answers, none caches a
 * value, and at least one read took the lease (so it owned the fill and
 * chose not to: a CDC delete of the listing's creation may take a lease
 * away between a read and the check). */
static void
reads_not_cached(struct http_client *h, const char *url, const char *body,
                 char (*keys)[CACHEKEY_MAX])
{
    struct cache *c = make_cache();
    struct http_response r;
    char err[256];
    int leased = 0;
    for (int i = 0; i < 5; i++) {
        for (size_t k = 0; k < 3; k++)
            ck_assert_msg(cache_delete(c, keys[k], strlen(keys[k]), err, sizeof(err)) == CAL_OK,
                          "%s", err);
        ck_assert_int_eq(request(h, body ? "POST" : "GET", url, NULL, body, &r), 200);
        ck_assert_msg(strstr(r.body, "\"available\"") != NULL, "%s", r.body);
        http_response_deinit(&r);
        leased += key_leased(c, keys[0]);
        for (size_t k = 0; k < 3; k++)
            ck_assert_msg(!key_present(c, keys[k]), "%s cached from a read-only server (%s)",
                          keys[k], body ? "search" : "single read");
        usleep(300000);
    }
    ck_assert_msg(leased > 0, "no %s took the lease of %s", body ? "search" : "single read",
                  keys[0]);
    cache_destroy(c);
}

/* A shard's server fenced read-only (an old primary whose replica is being
 * promoted: the catalog may name the new server already, and its writes be
 * invalidated, while this daemon's map names the old one) answers reads,
 * single and search (a listing of each), but nothing it answered is cached:
 * a fill would serve its data for the cache's TTL. Writable again, the
 * same reads fill. */
START_TEST(a_read_only_servers_answers_are_not_cached)
{
    load_env();
    struct http_client *h = http_client_create();
    int32_t in = (int32_t)testenv_today() + 90;
    uint64_t id[2] = {testenv_random48(), testenv_random48()};
    char url[2][512], avail_url[2][600], search_url[512], body[256], from[11], to[11], db[65];
    char keys[2][3][CACHEKEY_MAX];
    size_t shard[2];
    for (int l = 0; l < 2; l++) {
        new_listing(h, id[l], in, url[l], avail_url[l], keys[l]);
        shard[l] = shard_of_listing(id[l], db, sizeof(db));
    }
    testenv_format_date(in, from, sizeof(from));
    testenv_format_date(in + 4, to, sizeof(to));
    snprintf(search_url, sizeof(search_url), "%s/v1/availability/search", env.calendard_url);
    snprintf(body, sizeof(body),
             "{\"listing_ids\":[%llu],\"check_in\":\"%s\",\"check_out\":\"%s\"}",
             (unsigned long long)id[1], from, to);

    for (int l = 0; l < 2; l++)
        ck_assert_int_eq(testenv_set_global(&env, shard[l], "read_only", 1), 0);
    reads_not_cached(h, avail_url[0], NULL, keys[0]);
    reads_not_cached(h, search_url, body, keys[1]);
    for (int l = 0; l < 2; l++)
        ck_assert_int_eq(testenv_set_global(&env, shard[l], "read_only", 0), 0);
    read_until_cached(h, "GET", avail_url[0], NULL, keys[0], 3);
    read_until_cached(h, "POST", search_url, body, keys[1], 3);
    http_client_destroy(h);
}
END_TEST

/* The batch search answers from one multi-get plus one query per shard and
 * agrees with single reads: availability, price and not-found listings. */
START_TEST(search_matches_single_reads)
{
    load_env();
    struct http_client *h = http_client_create();
    struct http_response r;
    uint64_t base = testenv_random48();
    char url[512], body[1024], d1[11], d2[11];
    testenv_format_date(testenv_today() + 80, d1, sizeof(d1));
    testenv_format_date(testenv_today() + 83, d2, sizeof(d2));
    for (uint64_t i = 0; i < 6; i++) {
        snprintf(url, sizeof(url), "%s/v1/listings/%llu", env.calendard_url,
                 (unsigned long long)(base + i));
        snprintf(body, sizeof(body),
                 "{\"default_price\":%llu,\"currency\":\"USD\",\"min_nights\":%d,"
                 "\"max_nights\":9}",
                 (unsigned long long)(100 + i), i == 5 ? 4 : 1);
        ck_assert_int_eq(request(h, "PUT", url, NULL, body, &r), 201);
        http_response_deinit(&r);
    }
    snprintf(url, sizeof(url), "%s/v1/listings/%llu/reservations", env.calendard_url,
             (unsigned long long)(base + 2));
    snprintf(body, sizeof(body), "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":5}", d1,
             d2);
    ck_assert_int_eq(request(h, "POST", url, "search-1", body, &r), 201);
    http_response_deinit(&r);
    snprintf(url, sizeof(url), "%s/v1/availability/search", env.calendard_url);
    snprintf(body, sizeof(body),
             "{\"listing_ids\":[%llu,%llu,%llu,%llu,%llu,%llu,%llu],\"check_in\":\"%s\","
             "\"check_out\":\"%s\"}",
             (unsigned long long)base, (unsigned long long)base + 1, (unsigned long long)base + 2,
             (unsigned long long)base + 3, (unsigned long long)base + 4,
             (unsigned long long)base + 5, (unsigned long long)base + 1000, d1, d2);
    /* The listings that exist and the month of the stay, cached by the
     * search (the second round below answers from them). */
    char keys[12][CACHEKEY_MAX];
    for (uint64_t i = 0; i < 6; i++) {
        cachekey_listing(base + i, keys[2 * i]);
        cachekey_month_of(base + i, (int32_t)testenv_today() + 80, keys[2 * i + 1]);
    }
    for (int round = 0; round < 2; round++) { /* cold, then warm */
        if (round == 1)
            read_until_cached(h, "POST", url, body, keys, 12);
        ck_assert_int_eq(request(h, "POST", url, NULL, body, &r), 200);
        json_t *doc = http_response_json(&r);
        json_t *res = json_object_get(doc, "results");
        ck_assert_uint_eq(json_array_size(res), 7);
        for (size_t i = 0; i < 7; i++) {
            json_t *it = json_array_get(res, i);
            ck_assert_uint_eq(json_integer_value(json_object_get(it, "listing_id")),
                              i < 6 ? base + i : base + 1000);
            if (i == 6) {
                ck_assert_str_eq(json_string_value(json_object_get(it, "error")),
                                 "listing_not_found");
                continue;
            }
            bool want = i != 2 && i != 5;
            ck_assert_msg(json_is_true(json_object_get(it, "available")) == want,
                          "round %d listing %zu", round, i);
            ck_assert_int_eq(json_integer_value(json_object_get(it, "total_price")),
                             3 * (100 + (long long)i));
        }
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(res, 2), "reason")),
                         "nights_unavailable");
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(res, 5), "reason")),
                         "stay_too_short");
        json_decref(doc);
        http_response_deinit(&r);
    }
    ck_assert_int_eq(request(h, "POST", url, NULL, "{\"listing_ids\":[],\"check_in\":\"x\"}", &r),
                     400);
    http_response_deinit(&r);
    http_client_destroy(h);
}
END_TEST

int
main(void)
{
    http_global_init();
    Suite *s = suite_create("cache");
    UNIT_CASE(s, fill_then_hit);
    UNIT_CASE(s, a_month_of_another_version_than_its_listing_key_is_no_hit);
    UNIT_CASE(s, a_stale_month_is_leased_only_over_the_value_seen);
    UNIT_CASE(s, a_late_answer_is_never_taken_for_a_later_request);
    UNIT_CASE(s, an_undecodable_value_is_replaced);
    UNIT_CASE(s, multi_get_answers_repeated_keys);
    UNIT_CASE(s, multi_get_matches_every_value_to_its_key);
    UNIT_CASE(s, delete_many_deletes_exactly_the_named_keys);
    UNIT_CASE(s, delete_many_reset_before_the_answer_is_an_error);
    UNIT_CASE(s, delete_many_confirms_the_keys_of_the_live_server);
    UNIT_CASE(s, a_dead_server_keeps_only_its_keys_pending);
    UNIT_CASE(s, retry_goes_on_past_a_down_servers_keys);
    TCase *tc = tcase_create("the_overflow_drains_under_writes");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, the_overflow_drains_under_writes);
    suite_add_tcase(s, tc);
    UNIT_CASE(s, stale_fill_after_invalidation_is_dropped);
    UNIT_CASE(s, only_the_lease_owner_fills);
    UNIT_CASE(s, unreachable_cache_is_a_miss);
    UNIT_CASE(s, a_dead_server_of_the_pool_misses_only_its_keys);
    UNIT_CASE(s, a_hung_cache_diverts_reads_at_any_timeout);
    UNIT_CASE(s, failed_invalidation_still_reads_own_write);
    UNIT_CASE(s, unsent_invalidation_still_reads_own_write);
    UNIT_CASE(s, deletes_linger_then_share_a_round_trip);
    UNIT_CASE(s, a_full_round_of_deletes_does_not_linger);
    UNIT_CASE(s, fill_of_an_unsent_invalidation_is_dropped);
    UNIT_CASE(s, retry_empties_a_crowded_bucket);
    UNIT_CASE(s, writes_invalidate_cached_availability);
    UNIT_CASE(s, a_replayed_booking_invalidates_its_nights);
    tc = tcase_create("a_write_of_unknown_outcome_invalidates_like_a_committed_one");
    tcase_set_timeout(tc, UNIT_CASE_TIMEOUT_S);
    tcase_add_unchecked_fixture(tc, remember_commit_waits, restore_commit_waits);
    tcase_add_test(tc, a_write_of_unknown_outcome_invalidates_like_a_committed_one);
    suite_add_tcase(s, tc);
    UNIT_CASE(s, search_matches_single_reads);
    tc = tcase_create("a_read_only_servers_answers_are_not_cached");
    tcase_set_timeout(tc, UNIT_CASE_TIMEOUT_S);
    tcase_add_unchecked_fixture(tc, NULL, all_writable);
    tcase_add_test(tc, a_read_only_servers_answers_are_not_cached);
    suite_add_tcase(s, tc);
    UNIT_CASE(s, concurrent_bookings_of_one_listing_get_distinct_versions);
    return unit_run(s);
}
