/* The API: routes a parsed HTTP request to its endpoint, validates it, runs
 * it on the owning shard with bounded retries, and renders the JSON answer.
 * Knows nothing of sockets; http.c feeds it. */
#ifndef CAL_SERVICE_H
#define CAL_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calendard/avail.h"
#include "calendard/metrics.h"
#include "calendard/router.h"

struct service_conf {
    unsigned max_attempts;    /* tries of one operation (conflicts, moves) */
    unsigned backoff_base_ms; /* full-jitter backoff between tries */
    unsigned backoff_max_ms;
    unsigned max_search_listings; /* listing_ids of one search at most */
    unsigned deadline_ms;         /* no new attempt starts after this much of a request */
    unsigned batch_max;           /* bookings per group commit; 0 = one transaction each */
    unsigned batch_lanes;         /* group commits of one shard in flight at low load */
    struct db_conf catalog;       /* where reservation ids come from (idblock.h) */
};

struct api_request {
    const char *method;
    const char *path;
    const char *body;
    size_t body_len;
    const char *idempotency_key; /* NULL when absent */
    const char *if_match;        /* NULL when absent */
    const char *if_none_match;   /* NULL when absent */
    const char *query_from;      /* NULL when absent */
    const char *query_to;
};

struct api_response {
    int status;
    char *body; /* malloc'd JSON or text; caller frees */
    size_t body_len;
    const char *content_type;
    char etag[32];     /* empty when none */
    int retry_after;   /* seconds; 0 when none */
    const char *allow; /* a 405's Allow header: the path's methods (static); NULL when none */
    enum endpoint endpoint;
};

struct service;

/* Borrows router and avail; caller frees with service_destroy(). */
struct service *service_create(const struct service_conf *conf, struct router *router,
                               struct avail *avail);
void service_destroy(struct service *svc);

void service_handle(struct service *svc, const struct api_request *req, struct api_response *resp);

/* GET /v1/listings/{id}/availability in halves, so that an event loop can
 * look the reads of many requests up in one memcached multi-get and hand
 * only the misses to a thread that may block on a shard. */
/* An availability read (GET /v1/listings/{id}/availability) or a search
 * (POST /v1/availability/search): n listings over one range. */
struct service_read {
    uint64_t listing_id; /* a single read's */
    int32_t from, to;    /* the range; a search's check_in, check_out */
    bool search;
    size_t n;
    struct avail_item *items; /* &item, or a search's n (malloc'd) */
    struct avail_item item;
};

/* false: req is not an availability read or search (give it to
 * service_handle). true: it is; *answered says resp already holds the
 * answer (a bad range or body), else r is ready for service_read_lookup. */
bool service_read_begin(struct service *svc, const struct api_request *req, struct service_read *r,
                        struct api_response *resp, bool *answered);

/* Looks the reads up in the cache, one multi-get per range for all of them;
 * service_read_hit() tells which are answered by service_read_finish
 * without a shard. Does not block on a shard. */
void service_read_lookup(struct service *svc, struct service_read *const *rs, size_t n);

/* Every listing of r was in the cache. */
bool service_read_hit(const struct service_read *r);

/* Answers a read that went through service_read_lookup: from the cache
 * (hit), or from the shards, filling the cache (miss: blocks). Frees what
 * r holds; every r that began must be finished. */
void service_read_finish(struct service *svc, struct service_read *r, struct api_response *resp);

/* Frees what r holds without answering it (a read left over at shutdown);
 * its leases, if any, expire on their own. */
void service_read_discard(struct service_read *r);

/* The error answer for refusals made before a request reaches the service
 * (413, 503 overloaded, ...). */
void service_error(struct api_response *resp, int status, const char *code, const char *message);

#endif
