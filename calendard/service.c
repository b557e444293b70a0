/* The API endpoints: validation, retries on the owning shard, JSON answers. */
#include "calendard/service.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/batch.h"
#include "calendard/booking.h"
#include "calendard/idblock.h"
#include "calendard/inflight.h"
#include "calendard/request.h"
#include "calendard/store.h"
#include "common/date.h"
#include "common/jsonout.h"
#include "common/log.h"
#include "common/util.h"

struct service {
    struct service_conf conf;
    struct router *router;
    struct avail *avail;
    struct inflight *inflight;                   /* idempotency keys being processed */
    pthread_mutex_t batch_lock;                  /* guards creation of batchers */
    struct batcher *batchers[ROUTER_MAX_SHARDS]; /* by shard index, created on first use */
    struct idblock_catalog id_source;
    struct idblock *ids; /* reservation ids */
    /* By shard index: when a read last found the shard's server read-only
     * and reloaded the map (cal_mono_us). */
    _Atomic uint64_t read_only_reload_us[ROUTER_MAX_SHARDS];
};

/* A read-only server reloads the map at most this often per shard. */
#define READ_ONLY_RELOAD_US 250000

/* One operation on the shard that owns a listing. Returns CAL_OK, or a
 * status run_on_shard() retries (CAL_ECONFLICT, CAL_EMOVED, CAL_EUNAVAIL) or
 * turns into an answer; an op that decided the answer itself fills e and
 * returns CAL_EINVAL. */
typedef cal_status (*shard_op)(struct service *svc, struct db *db, const struct route *rt,
                               void *ctx, struct api_error *e, char *err, size_t errlen);

struct service *
service_create(const struct service_conf *conf, struct router *router, struct avail *avail)
{
    struct service *svc = cal_calloc(1, sizeof(*svc));
    svc->conf = *conf;
    svc->router = router;
    svc->avail = avail;
    pthread_mutex_init(&svc->batch_lock, NULL);
    svc->inflight = inflight_create();
    svc->id_source.conf = &svc->conf.catalog;
    svc->ids =
        idblock_create(IDBLOCK_SIZE, IDBLOCK_RETRY_MS, idblock_fetch_catalog, &svc->id_source);
    return svc;
}

void
service_destroy(struct service *svc)
{
    if (svc == NULL)
        return;
    for (size_t i = 0; i < ROUTER_MAX_SHARDS; i++)
        batcher_destroy(svc->batchers[i]);
    pthread_mutex_destroy(&svc->batch_lock);
    inflight_destroy(svc->inflight);
    idblock_destroy(svc->ids);
    db_close(svc->id_source.db);
    free(svc);
}

/* Did a write change the shard, as far as the cache knows? Committed, or
 * its COMMIT lost (503 outcome_unknown, which tells the client to read it
 * back): its keys go either way, or this daemon's reads would answer the
 * state before it until CDC's delete came. A write that changed nothing
 * costs only a refill. */
static bool
may_have_written(cal_status rc)
{
    return rc == CAL_OK || rc == CAL_EUNKNOWN;
}

/* A group commit's bookings, before any is answered: their cache keys go
 * in one round trip (read-your-writes for this daemon). */
static void
bookings_committed(void *arg, const struct store_booking *sb, size_t n)
{
    struct service *svc = arg;
    struct avail_stay *stays = cal_malloc(n * sizeof(*stays));
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (may_have_written(sb[i].rc))
            stays[m++] = (struct avail_stay){.listing_id = sb[i].listing->listing_id,
                                             .from = sb[i].res->check_in,
                                             .to = sb[i].res->check_out};
    avail_invalidate_many(svc->avail, stays, m);
    free(stays);
}

static struct batcher *
batcher_for(struct service *svc, const struct route *rt)
{
    struct batcher *b = __atomic_load_n(&svc->batchers[rt->shard_index], __ATOMIC_ACQUIRE);
    if (b != NULL)
        return b;
    pthread_mutex_lock(&svc->batch_lock);
    b = svc->batchers[rt->shard_index];
    if (b == NULL) {
        b = batcher_create(svc->conf.batch_max, svc->conf.batch_lanes, bookings_committed, svc);
        __atomic_store_n(&svc->batchers[rt->shard_index], b, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&svc->batch_lock);
    return b;
}

static void
set_json(struct api_response *resp, int status, json_t *obj)
{
    resp->status = status;
    resp->body = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
    if (resp->body == NULL) {
        /* json_pack refuses a string that is not UTF-8: a bug, never a crash. */
        log_error("answer could not be encoded", "status=%d", status);
        resp->status = 500;
        static const char fallback[] =
            "{\"error\":{\"code\":\"internal_error\",\"message\":\"internal error\"}}";
        resp->body = cal_strndup(fallback, sizeof(fallback) - 1);
    }
    resp->body_len = strlen(resp->body);
    resp->content_type = "application/json";
    json_decref(obj);
}

/* req's If-Match into *version (0: *; false when absent). An invalid one
 * is answered 400 in resp: *invalid. */
static bool
if_match_parse(const struct api_request *req, uint64_t *version, struct api_response *resp,
               bool *invalid)
{
    *invalid = false;
    if (req->if_match == NULL)
        return false;
    if (!request_parse_if_match(req->if_match, version)) {
        service_error(resp, 400, "invalid_if_match",
                      "If-Match must be a version number, quoted or not, or *");
        *invalid = true;
    }
    return true;
}

/* ETag: the calendar version, what If-Match takes back. */
static void
set_etag(struct api_response *resp, uint64_t version)
{
    snprintf(resp->etag, sizeof(resp->etag), "\"%llu\"", (unsigned long long)version);
}

void
service_error(struct api_response *resp, int status, const char *code, const char *message)
{
    /* Printable ASCII only, whatever a message quotes (a server's error
     * text may hold any byte): the body is always valid JSON. */
    char clean[512];
    cal_strlcpy(clean, message, sizeof(clean));
    cal_printable_ascii(clean);
    set_json(resp, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", clean));
    if (status == 503 && resp->retry_after == 0)
        resp->retry_after = 1;
}

static void
api_error_answer(struct api_response *resp, const struct api_error *e)
{
    service_error(resp, e->http, e->code, e->message);
}

static json_t *
dates_json(const int32_t *nights, size_t n)
{
    json_t *arr = json_array();
    char d[11];
    for (size_t i = 0; i < n; i++) {
        date_format(nights[i], d);
        json_array_append_new(arr, json_string(d));
    }
    return arr;
}

static void
unavailable_answer(struct api_response *resp, const int32_t *nights, size_t n, bool replay)
{
    char msg[160];
    snprintf(msg, sizeof(msg), "%s%zu night%s of the range %s booked or blocked%s",
             replay ? "this Idempotency-Key was refused before; " : "", n, n == 1 ? "" : "s",
             n == 1 ? "is" : "are", replay ? " now" : "");
    set_json(resp, 409,
             json_pack("{s:{s:s,s:s,s:o}}", "error", "code", "nights_unavailable", "message", msg,
                       "nights", dates_json(nights, n)));
}

static json_t *
listing_json(const struct listing *l)
{
    return json_pack("{s:I,s:I,s:s,s:i,s:i,s:I}", "listing_id", (json_int_t)l->listing_id,
                     "default_price", (json_int_t)l->default_price, "currency", l->currency,
                     "min_nights", l->min_nights, "max_nights", l->max_nights, "version",
                     (json_int_t)l->version);
}

/* A reservation answer, written directly as the availability answer is
 * (ids and prices are numbers, dates and the status name need no escaping,
 * the currency is validated): it answers every booking. */
static void
render_reservation(struct api_response *resp, int status, const struct reservation *r)
{
    struct jsonout j;
    jsonout_init(&j, 256);
    jsonout_lit(&j, "{\"reservation_id\":");
    jsonout_u64(&j, r->reservation_id);
    jsonout_lit(&j, ",\"listing_id\":");
    jsonout_u64(&j, r->listing_id);
    jsonout_lit(&j, ",\"check_in\":");
    jsonout_date(&j, r->check_in);
    jsonout_lit(&j, ",\"check_out\":");
    jsonout_date(&j, r->check_out);
    jsonout_lit(&j, ",\"guest_id\":");
    jsonout_u64(&j, r->guest_id);
    jsonout_lit(&j, ",\"total_price\":");
    jsonout_int(&j, r->total_price);
    jsonout_lit(&j, ",\"currency\":");
    jsonout_str(&j, r->currency, strlen(r->currency));
    jsonout_lit(&j, ",\"status\":\"");
    jsonout_lit(&j, booking_reservation_status_name(r->status));
    jsonout_lit(&j, "\",\"version\":");
    jsonout_u64(&j, r->version);
    jsonout_lit(&j, "}");
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = jsonout_finish(&j, &resp->body_len);
}

/* A line logged at most once a second (an outage fails every request),
 * with how many were not logged since. */
struct log_gate {
    _Atomic uint64_t last_us;
    atomic_uint not_logged;
};

/* true: log now, with *not_logged lines held back since the last. */
static bool
log_gate_pass(struct log_gate *g, unsigned *not_logged)
{
    uint64_t now = cal_mono_us(), prev = atomic_load(&g->last_us);
    if ((prev != 0 && now - prev < 1000000) ||
        !atomic_compare_exchange_strong(&g->last_us, &prev, now)) {
        atomic_fetch_add(&g->not_logged, 1);
        return false;
    }
    *not_logged = atomic_exchange(&g->not_logged, 0);
    return true;
}

/* Logs why a request found its shard unavailable, at most once a second
 * per shard. slot: the shard's index, or ROUTER_MAX_SHARDS before routing. */
static void
log_shard_unavailable(unsigned slot, int64_t shard_id, const char *err)
{
    static struct log_gate gates[ROUTER_MAX_SHARDS + 1];
    unsigned not_logged;
    if (slot > ROUTER_MAX_SHARDS)
        slot = ROUTER_MAX_SHARDS;
    if (log_gate_pass(&gates[slot], &not_logged))
        log_warn("shard unavailable", "shard=%lld error=\"%s\" not_logged_since=%u",
                 (long long)shard_id, err, not_logged);
}

/* 503 shard_unavailable for the shard rt routed to (pool NULL: before
 * routing). The detail (a server's address, database and user) goes to the
 * log, not to clients. */
static void
fail_unavailable(struct api_error *e, const struct route *rt, const char *err)
{
    log_shard_unavailable(rt->pool != NULL ? rt->shard_index : ROUTER_MAX_SHARDS,
                          rt->pool != NULL ? (int64_t)rt->shard_id : -1, err);
    if (rt->pool != NULL)
        request_fail(e, 503, "shard_unavailable", "shard %u is unavailable", rt->shard_id);
    else
        request_fail(e, 503, "shard_unavailable", "the shard map is not loaded yet");
}

/* Runs op on the listing's shard: routes, takes a pooled connection, and
 * retries conflicts, "moved" answers (after reloading the map) and lost
 * connections, at most max_attempts times with jittered backoff. */
static cal_status
run_on_shard(struct service *svc, uint64_t listing_id, shard_op op, void *ctx, struct api_error *e)
{
    char err[512] = "";
    cal_status rc = CAL_ERR;
    struct route rt = {0};
    uint64_t deadline = cal_mono_us() + (uint64_t)svc->conf.deadline_ms * 1000;
    unsigned lost = 0, tries = 0;
    bool rerouted = false;
    for (unsigned attempt = 0; attempt < svc->conf.max_attempts; attempt++) {
        /* A hung shard costs one timeout per attempt: bound the whole
         * request. No try starts after the deadline: a backoff is cut
         * short to end by it. */
        if (attempt > 0) {
            uint64_t now = cal_mono_us();
            if (now > deadline)
                break;
            uint64_t ms = booking_backoff_ms(attempt - 1, svc->conf.backoff_base_ms,
                                             svc->conf.backoff_max_ms, cal_rand64());
            if (ms * 1000 > deadline - now)
                ms = (deadline - now) / 1000;
            metrics_shard(rt.shard_index, SHARD_RETRY);
            cal_sleep_ms((unsigned)ms);
        }
        if ((rc = router_route(svc->router, listing_id, &rt, err, sizeof(err))) != CAL_OK)
            break;
        /* A shard that keeps failing answers 503 at once instead of a timeout each. */
        bool probe;
        if (!breaker_allow(rt.breaker, cal_mono_us(), &probe)) {
            snprintf(err, sizeof(err), "shard %u is failing; circuit breaker open", rt.shard_id);
            rc = CAL_EUNAVAIL;
            break;
        }
        struct db *db;
        if ((rc = pool_get(rt.pool, &db, err, sizeof(err))) != CAL_OK) {
            if (rc == CAL_EUNAVAIL)
                breaker_record(rt.breaker, false, cal_mono_us());
            else
                breaker_cancel(rt.breaker, probe);
            if (rc == CAL_EMOVED && !rerouted) {
                /* The shard's address changed after routing: route again. */
                rerouted = true;
                attempt--;
                continue;
            }
            if (rc == CAL_EMOVED) {
                snprintf(err, sizeof(err), "shard %u moved to another server twice meanwhile",
                         rt.shard_id);
                rc = CAL_EUNAVAIL;
            }
            break;
        }
        metrics_shard(rt.shard_index, SHARD_OPS);
        tries++;
        rc = op(svc, db, &rt, ctx, e, err, sizeof(err));
        /* A connection error always breaks the connection it came on: a
         * lost or unknown outcome on an unbroken one is another request's
         * (the leader of a group commit), counted against the shard at most
         * once, by that request. */
        bool others = (rc == CAL_EUNAVAIL || rc == CAL_EUNKNOWN) && !db_broken(db);
        pool_put(rt.pool, db);
        /* The shard moved to another server while this ran: what the old
         * one answered says nothing about the shard's health now. */
        bool moved_away = pool_retired(rt.pool);
        if (rc == CAL_EUNAVAIL && moved_away) {
            breaker_cancel(rt.breaker, probe);
            continue; /* on the new server */
        }
        if (rc == CAL_EUNAVAIL && lost == 0) {
            /* A pooled connection found dead (the pool dropped its idle
             * ones with it): retry at once on a fresh connection before it
             * counts against the shard, keeping a half-open probe slot. */
            lost++;
            metrics_shard(rt.shard_index, SHARD_ERROR);
            log_warn("shard connection lost", "shard=%u error=\"%s\"", rt.shard_id, err);
            breaker_cancel(rt.breaker, probe);
            attempt--; /* not a try of its own */
            continue;
        }
        if (moved_away || others)
            breaker_cancel(rt.breaker, probe);
        else
            breaker_record(rt.breaker, rc != CAL_EUNAVAIL && rc != CAL_EUNKNOWN, cal_mono_us());
        if (rc == CAL_ECONFLICT) {
            metrics_shard(rt.shard_index, SHARD_CONFLICT);
            continue;
        }
        if (rc == CAL_EMOVED || rc == CAL_EREADONLY) {
            /* A server fenced read-only was (or is being) replaced by
             * another: the catalog names the new one. */
            metrics_shard(rt.shard_index, SHARD_MOVED);
            char e2[256];
            if (router_refresh(svc->router, e2, sizeof(e2)) != CAL_OK)
                log_warn("shard map reload failed", "error=\"%s\"", e2);
            continue;
        }
        /* A second lost connection in one request: the shard is down or
         * hung, not merely a stale pooled connection; give up. */
        break;
    }
    switch (rc) {
    case CAL_OK:
    case CAL_EINVAL: /* e already filled by the op */
        break;
    case CAL_ENOTFOUND:
        if (e->code == NULL)
            request_fail(e, 404, "listing_not_found", "no listing %llu",
                         (unsigned long long)listing_id);
        break;
    case CAL_ECONFLICT:
        request_fail(e, 503, "contention", "gave up after %u conflicting attempts", tries);
        break;
    case CAL_EMOVED:
        request_fail(e, 503, "vbucket_moving", "vbucket %u is moving between shards", rt.vbucket);
        break;
    case CAL_EREADONLY:
        request_fail(e, 503, "shard_unavailable", "shard %u's server is read-only", rt.shard_id);
        break;
    case CAL_EAGAIN:
        metrics_overload();
        request_fail(e, 503, "overloaded", "%s", err);
        break;
    case CAL_EUNAVAIL:
        fail_unavailable(e, &rt, err);
        break;
    case CAL_EUNKNOWN:
        request_fail(e, 503, "outcome_unknown",
                     "connection lost while the write committed: read it back, or replay a"
                     " booking with the same Idempotency-Key");
        break;
    default:
        metrics_shard(rt.shard_index, SHARD_ERROR);
        log_error("shard operation failed", "shard=%u status=%s error=\"%s\"", rt.shard_id,
                  cal_status_name(rc), err);
        request_fail(e, 500, "internal_error", "internal error");
        break;
    }
    return rc;
}

/* ---- listings ---------------------------------------------------------- */

struct listing_ctx {
    uint64_t listing_id;
    const struct listing_settings *set;
    bool conditional;  /* If-Match given: replace only, at version if_match */
    uint64_t if_match; /* 0: any version (If-Match: *) */
    int created;
    struct listing listing;
};

static cal_status
op_put_listing(struct service *svc, struct db *db, const struct route *rt, void *ctx,
               struct api_error *e, char *err, size_t errlen)
{
    struct listing_ctx *c = ctx;
    (void)svc;
    if (!c->conditional)
        return store_put_listing(db, rt->vbucket, c->listing_id, c->set, &c->created, &c->listing,
                                 err, errlen);
    c->created = 0;
    cal_status rc = store_replace_listing(db, rt->vbucket, c->listing_id, c->set, c->if_match,
                                          &c->listing, err, errlen);
    /* A listing that does not exist has no version to match, not even *
     * (RFC 9110 13.1.1): a conditional PUT never creates one. */
    if (rc == CAL_EINVAL) {
        request_fail(e, 412, "version_mismatch", "the listing version is not the If-Match one");
    } else if (rc == CAL_ENOTFOUND) {
        request_fail(e, 412, "version_mismatch",
                     "no listing %llu to match If-Match; PUT without If-Match creates one",
                     (unsigned long long)c->listing_id);
        rc = CAL_EINVAL;
    }
    return rc;
}

static cal_status
op_get_listing(struct service *svc, struct db *db, const struct route *rt, void *ctx,
               struct api_error *e, char *err, size_t errlen)
{
    struct listing_ctx *c = ctx;
    (void)svc;
    (void)e;
    return store_get_listing(db, rt->vbucket, c->listing_id, &c->listing, err, errlen);
}

static void
handle_put_listing(struct service *svc, uint64_t listing_id, const struct api_request *req,
                   struct api_response *resp)
{
    struct api_error e = {0};
    struct listing_settings set;
    struct listing_ctx c = {.listing_id = listing_id, .set = &set};
    bool invalid;
    c.conditional = if_match_parse(req, &c.if_match, resp, &invalid);
    if (invalid)
        return;
    if (!request_parse_listing(req->body, req->body_len, &set, &e)) {
        api_error_answer(resp, &e);
        return;
    }
    cal_status rc = run_on_shard(svc, listing_id, op_put_listing, &c, &e);
    if (may_have_written(rc))
        avail_invalidate(svc->avail, listing_id, 0, 0);
    if (rc != CAL_OK) {
        api_error_answer(resp, &e);
        return;
    }
    set_json(resp, c.created ? 201 : 200, listing_json(&c.listing));
    set_etag(resp, c.listing.version);
}

static void
handle_get_listing(struct service *svc, uint64_t listing_id, struct api_response *resp)
{
    struct api_error e = {0};
    struct listing_ctx c = {.listing_id = listing_id};
    if (run_on_shard(svc, listing_id, op_get_listing, &c, &e) != CAL_OK) {
        api_error_answer(resp, &e);
        return;
    }
    set_json(resp, 200, listing_json(&c.listing));
    set_etag(resp, c.listing.version);
}

/* ---- reservations ------------------------------------------------------ */

struct booking_ctx {
    uint64_t listing_id;
    const struct booking_request *req;
    const char *key;
    size_t keylen;
    char request_hash[17];
    uint64_t reservation_id; /* taken before the first try, kept by the retries; 0: none */
    struct reservation res;
    bool replayed;
    bool invalidated;    /* committed through a batcher, which deleted its cache keys */
    bool refused;        /* plan_booking() refused it: verdict and plan say why */
    bool refused_before; /* its key holds a refusal: a replay of a 409 */
    enum stay_verdict verdict;
    struct calendar_read read;
    struct booking_plan plan;
};

/* The key was used before: the original answer, or 422 for another body.
 * Fenced like every read of the shard: CAL_EMOVED sends it to the owner. */
static cal_status
replay_or_fail(struct db *db, const struct route *rt, struct booking_ctx *c, struct api_error *e,
               char *err, size_t errlen)
{
    cal_status rc =
        store_find_by_key(db, rt->vbucket, c->listing_id, c->key, c->keylen, &c->res, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (strcmp(c->res.request_hash, c->request_hash) != 0) {
        request_fail(e, 422, "idempotency_key_reused",
                     "this Idempotency-Key was used with another request body");
        return CAL_EINVAL;
    }
    if (c->res.status == RESERVATION_REFUSED) {
        /* Refused once, refused for good: freed nights do not book it. */
        request_fail(e, 409, "nights_unavailable", "this Idempotency-Key was refused before");
        c->refused_before = true;
        return CAL_EINVAL;
    }
    c->replayed = true;
    return CAL_OK;
}

/* Plans c's booking on c->read: CAL_OK with c->res filled and sb pointing
 * at c's, or CAL_EINVAL with c->verdict set when it is refused (answered by
 * refuse_booking()). Uses no connection: a batch's leader calls it for
 * every booking it read. */
static cal_status
plan_booking(struct booking_ctx *c, struct store_booking *sb)
{
    const struct booking_request *req = c->req;
    const struct listing *l = &c->read.listing;
    c->verdict = booking_check_stay(l, req->check_in, req->check_out, date_today());
    booking_plan_make(l, c->read.rows, c->read.nrows, req->check_in, req->check_out, &c->plan);
    if (c->verdict != STAY_OK || c->plan.nunavailable > 0 || c->reservation_id == 0) {
        c->refused = true;
        return CAL_EINVAL;
    }
    struct reservation *r = &c->res;
    memset(r, 0, sizeof(*r));
    r->reservation_id = c->reservation_id;
    r->listing_id = c->listing_id;
    r->check_in = req->check_in;
    r->check_out = req->check_out;
    r->guest_id = req->guest_id;
    r->status = RESERVATION_CONFIRMED;
    r->total_price = c->plan.total_price;
    memcpy(r->currency, l->currency, sizeof(r->currency));
    memcpy(r->request_hash, c->request_hash, sizeof(r->request_hash));
    *sb = (struct store_booking){
        .listing = l, .plan = &c->plan, .res = r, .key = c->key, .keylen = c->keylen};
    return CAL_OK;
}

static cal_status
plan_in_batch(void *arg, struct store_booking *sb)
{
    struct booking_ctx *c = arg;
    return plan_booking(c, sb);
}

/* c's insert (of its booking or its refusal) hit a unique key: the key
 * raced with a concurrent replay, which answers as its row does, or the id
 * collided with one calendard made before ids came from the catalog: the
 * retry takes another. */
static cal_status
key_or_id_taken(struct service *svc, struct db *db, const struct route *rt, struct booking_ctx *c,
                struct api_error *e, char *err, size_t errlen)
{
    cal_status rc = replay_or_fail(db, rt, c, e, err, errlen);
    if (rc == CAL_ENOTFOUND) {
        rc = CAL_ECONFLICT;
        char why[256]; /* failing, it keeps the id: the retry conflicts again */
        (void)idblock_next(svc->ids, &c->reservation_id, why, sizeof(why));
    }
    return rc;
}

/* Keeps the refusal of c, whose nights are taken, under its key before
 * answering 409: a replay gets the same answer, even once the nights are
 * free. A key that got a row meanwhile (a concurrent replay on another
 * daemon) answers as that row does. */
static cal_status
keep_refusal(struct service *svc, struct db *db, const struct route *rt, struct booking_ctx *c,
             struct api_error *e, char *err, size_t errlen)
{
    const struct booking_request *req = c->req;
    struct reservation r = {.reservation_id = c->reservation_id,
                            .listing_id = c->listing_id,
                            .check_in = req->check_in,
                            .check_out = req->check_out,
                            .guest_id = req->guest_id,
                            .status = RESERVATION_REFUSED};
    memcpy(r.request_hash, c->request_hash, sizeof(r.request_hash));
    cal_status rc = store_refuse(db, &c->read.listing, &r, c->key, c->keylen, err, errlen);
    if (rc == CAL_EDUP)
        return key_or_id_taken(svc, db, rt, c, e, err, errlen);
    /* CAL_EUNKNOWN (the connection broke in the COMMIT) answers
     * outcome_unknown: the key may be refused for good now, and a replay
     * says which. */
    if (rc != CAL_OK)
        return rc;
    request_fail(e, 409, "nights_unavailable", "nights unavailable");
    return CAL_EINVAL;
}

/* The answer to a booking its plan refused (c->verdict, c->plan). */
static cal_status
refuse_booking(struct service *svc, struct db *db, const struct route *rt, struct booking_ctx *c,
               struct api_error *e, char *err, size_t errlen)
{
    /* A replay of a request that succeeded sees its own nights booked. */
    cal_status rc = replay_or_fail(db, rt, c, e, err, errlen);
    if (rc != CAL_ENOTFOUND)
        return rc;
    const struct listing *l = &c->read.listing;
    switch (c->verdict) {
    case STAY_OK:
        /* Bookable but no reservation id, or taken nights with no id to
         * keep the refusal under. */
        if (c->reservation_id == 0) {
            request_fail(e, 503, "shard_unavailable",
                         "the catalog cannot be reached for a reservation id");
            break;
        }
        return keep_refusal(svc, db, rt, c, e, err, errlen);
    case STAY_PAST:
        request_fail(e, 400, "past_date", "check_in is in the past");
        break;
    case STAY_RANGE:
        request_fail(e, 400, "invalid_range", "check_out must be after check_in");
        break;
    case STAY_TOO_SHORT:
        request_fail(e, 400, "stay_too_short", "the listing requires at least %d nights",
                     l->min_nights);
        break;
    case STAY_TOO_LONG:
        request_fail(e, 400, "stay_too_long", "the listing allows at most %d nights",
                     l->max_nights);
        break;
    }
    return CAL_EINVAL;
}

static cal_status
op_book_in(struct service *svc, struct db *db, const struct route *rt, void *ctx,
           struct api_error *e, char *err, size_t errlen)
{
    struct booking_ctx *c = ctx;
    const struct booking_request *req = c->req;
    cal_status rc;
    c->refused = c->refused_before = false;
    if (svc->conf.batch_max > 0) {
        rc = batcher_read_book(batcher_for(svc, rt), db, rt->pool, rt->vbucket, c->listing_id,
                               req->check_in, req->check_out, &c->read, plan_in_batch, c, err,
                               errlen);
        c->invalidated = rc == CAL_OK;
    } else {
        rc = store_read_calendar(db, rt->vbucket, c->listing_id, req->check_in, req->check_out,
                                 &c->read, err, errlen);
        struct store_booking sb = {0};
        if (rc == CAL_OK && (rc = plan_booking(c, &sb)) == CAL_OK)
            rc = store_book_one(db, sb.listing, sb.plan, sb.res, c->key, c->keylen, err, errlen);
    }
    if (rc == CAL_EINVAL && c->refused)
        return refuse_booking(svc, db, rt, c, e, err, errlen);
    return rc == CAL_EDUP ? key_or_id_taken(svc, db, rt, c, e, err, errlen) : rc;
}

/* op_book_in, counted in the shard's booking load (see batch.h). */
static cal_status
op_book(struct service *svc, struct db *db, const struct route *rt, void *ctx, struct api_error *e,
        char *err, size_t errlen)
{
    if (svc->conf.batch_max == 0)
        return op_book_in(svc, db, rt, ctx, e, err, errlen);
    struct batcher *b = batcher_for(svc, rt);
    batcher_enter(b);
    cal_status rc = op_book_in(svc, db, rt, ctx, e, err, errlen);
    batcher_leave(b);
    return rc;
}

static void
handle_create_reservation(struct service *svc, uint64_t listing_id, const struct api_request *req,
                          struct api_response *resp)
{
    struct api_error e = {0};
    struct booking_request breq;
    if (req->idempotency_key == NULL) {
        service_error(resp, 400, "missing_idempotency_key",
                      "the Idempotency-Key header is required");
        return;
    }
    size_t keylen = strlen(req->idempotency_key);
    if (!booking_key_valid(req->idempotency_key, keylen)) {
        service_error(resp, 400, "invalid_idempotency_key",
                      "Idempotency-Key must be 1 to 255 printable ASCII characters");
        return;
    }
    if (!request_parse_booking(req->body, req->body_len, &breq, &e)) {
        api_error_answer(resp, &e);
        return;
    }
    if (breq.check_out <= breq.check_in) {
        service_error(resp, 400, "invalid_range", "check_out must be after check_in");
        return;
    }
    if (breq.check_out - breq.check_in > BOOKING_MAX_NIGHTS) {
        service_error(resp, 400, "stay_too_long", "a stay is at most 366 nights");
        return;
    }
    /* A check-in in the past is refused by op_book, after the key lookup:
     * a replay of a booking made before midnight still gets its answer. */
    struct booking_ctx *c = cal_calloc(1, sizeof(*c));
    c->listing_id = listing_id;
    c->req = &breq;
    c->key = req->idempotency_key;
    c->keylen = keylen;
    booking_request_hash(breq.check_in, breq.check_out, breq.guest_id, c->request_hash);
    /* Without an id (the block used up, the catalog unreachable) the
     * booking still runs: a replay or a refusal answers as ever, only a new
     * reservation fails (plan_booking). */
    char err[512];
    if (idblock_next(svc->ids, &c->reservation_id, err, sizeof(err)) != CAL_OK)
        c->reservation_id = 0;
    /* One request per key at a time: a replay waits for the original. */
    if (!inflight_acquire(svc->inflight, listing_id, c->key, keylen, svc->conf.deadline_ms)) {
        service_error(resp, 409, "idempotency_key_in_use",
                      "a request with this Idempotency-Key is still being processed");
        free(c);
        return;
    }
    cal_status rc = run_on_shard(svc, listing_id, op_book, c, &e);
    inflight_release(svc->inflight, listing_id, c->key, keylen);
    /* A replay too: its original's answer may have been lost (503
     * outcome_unknown) before it invalidated anything. */
    if (may_have_written(rc) && !c->invalidated)
        avail_invalidate(svc->avail, listing_id, breq.check_in, breq.check_out);
    if (rc != CAL_OK) {
        if (e.http == 409)
            unavailable_answer(resp, c->plan.unavailable, c->plan.nunavailable, c->refused_before);
        else
            api_error_answer(resp, &e);
    } else {
        render_reservation(resp, c->replayed ? 200 : 201, &c->res);
    }
    calendar_read_clear(&c->read);
    free(c);
}

struct reservation_ctx {
    uint64_t listing_id;
    uint64_t reservation_id;
    struct reservation res;
};

static cal_status
op_get_reservation(struct service *svc, struct db *db, const struct route *rt, void *ctx,
                   struct api_error *e, char *err, size_t errlen)
{
    struct reservation_ctx *c = ctx;
    (void)svc;
    (void)e;
    return store_get_reservation(db, rt->vbucket, c->listing_id, c->reservation_id, &c->res, err,
                                 errlen);
}

static cal_status
op_cancel(struct service *svc, struct db *db, const struct route *rt, void *ctx,
          struct api_error *e, char *err, size_t errlen)
{
    struct reservation_ctx *c = ctx;
    (void)svc;
    (void)e;
    return store_cancel(db, rt->vbucket, c->listing_id, c->reservation_id, &c->res, err, errlen);
}

static void
handle_reservation(struct service *svc, uint64_t listing_id, uint64_t reservation_id, shard_op op,
                   struct api_response *resp)
{
    struct api_error e = {0};
    struct reservation_ctx c = {.listing_id = listing_id, .reservation_id = reservation_id};
    cal_status rc = run_on_shard(svc, listing_id, op, &c, &e);
    /* A cancel reads its reservation before its COMMIT; without it, the
     * listing key alone (a cached month of an older version is no hit). */
    if (op == op_cancel && may_have_written(rc))
        avail_invalidate(svc->avail, listing_id, c.res.check_in, c.res.check_out);
    if (rc == CAL_ENOTFOUND) {
        service_error(resp, 404, "reservation_not_found", "no such reservation on this listing");
        return;
    }
    if (rc != CAL_OK) {
        api_error_answer(resp, &e);
        return;
    }
    render_reservation(resp, 200, &c.res);
}

/* ---- calendar and availability ------------------------------------------ */

struct calendar_ctx {
    uint64_t listing_id;
    const struct calendar_request *req;
    uint64_t if_match;
    uint64_t version;
    size_t nbooked;
    int32_t booked[BOOKING_MAX_NIGHTS];
};

static cal_status
op_calendar(struct service *svc, struct db *db, const struct route *rt, void *ctx,
            struct api_error *e, char *err, size_t errlen)
{
    struct calendar_ctx *c = ctx;
    (void)svc;
    cal_status rc = store_calendar(db, rt->vbucket, c->listing_id, c->req, c->if_match, &c->version,
                                   c->booked, &c->nbooked, err, errlen);
    if (rc == CAL_EINVAL && c->nbooked > 0)
        request_fail(e, 409, "nights_unavailable", "booked nights cannot be blocked");
    else if (rc == CAL_EINVAL)
        request_fail(e, 412, "version_mismatch", "the calendar version is not the If-Match one");
    return rc;
}

static void
handle_calendar(struct service *svc, uint64_t listing_id, const struct api_request *req,
                struct api_response *resp)
{
    struct api_error e = {0};
    struct calendar_request creq;
    uint64_t if_match = 0; /* absent: unconditional, as * */
    bool invalid;
    (void)if_match_parse(req, &if_match, resp, &invalid);
    if (invalid)
        return;
    struct calendar_ctx *c = cal_calloc(1, sizeof(*c));
    c->listing_id = listing_id;
    c->req = &creq;
    c->if_match = if_match;
    cal_status rc = CAL_EINVAL;
    if (request_parse_calendar(req->body, req->body_len, date_today(), &creq, &e)) {
        rc = run_on_shard(svc, listing_id, op_calendar, c, &e);
        if (may_have_written(rc))
            avail_invalidate(svc->avail, listing_id, creq.from, creq.to);
    }
    if (rc != CAL_OK) {
        if (e.http == 409)
            unavailable_answer(resp, c->booked, c->nbooked, false);
        else
            api_error_answer(resp, &e);
    } else {
        set_json(resp, 200,
                 json_pack("{s:I,s:I}", "listing_id", (json_int_t)listing_id, "version",
                           (json_int_t)c->version));
        set_etag(resp, c->version);
    }
    free(c);
}

struct availability_ctx {
    uint64_t listing_id;
    int32_t from, to; /* the whole months of the request: what a fill needs */
    struct calendar_read *read;
};

/* A read answered by a read-only server: one fenced for a move to another
 * server (docs/operations.md), which the catalog may name already while
 * this daemon's map does not; writes there may have been invalidated.
 * Reloads the map (at most every READ_ONLY_RELOAD_US per shard) and says
 * whether the route now names another server, to read there. If not, the
 * answer stands but is not cached (avail_fill() skips it): a fill would
 * keep the old server's data for the cache's TTL. */
static bool
read_only_rerouted(struct service *svc, const struct route *rt)
{
    _Atomic uint64_t *last = &svc->read_only_reload_us[rt->shard_index];
    uint64_t prev = atomic_load(last), now = cal_mono_us(); /* in this order: now >= prev */
    if (pool_retired(rt->pool))
        return true;
    if (now - prev < READ_ONLY_RELOAD_US || !atomic_compare_exchange_strong(last, &prev, now))
        return false;
    char e2[256];
    if (router_refresh(svc->router, e2, sizeof(e2)) != CAL_OK)
        log_warn("shard map reload failed", "error=\"%s\"", e2);
    return pool_retired(rt->pool);
}

static cal_status
op_availability(struct service *svc, struct db *db, const struct route *rt, void *ctx,
                struct api_error *e, char *err, size_t errlen)
{
    struct availability_ctx *c = ctx;
    (void)e;
    cal_status rc =
        store_read_calendar(db, rt->vbucket, c->listing_id, c->from, c->to, c->read, err, errlen);
    /* Answered by a server replaced meanwhile: read again on the new one. */
    if (rc != CAL_EUNAVAIL && rc != CAL_EUNKNOWN &&
        (pool_retired(rt->pool) || (c->read->maybe_stale && read_only_rerouted(svc, rt)))) {
        snprintf(err, errlen, "shard %u moved to another server", rt->shard_id);
        return CAL_EMOVED;
    }
    return rc;
}

/* The availability answer. Written directly: dates and status names need no
 * escaping, and this is the hottest answer of the API. The currency is
 * escaped all the same: SQL from outside may have written any text. */
static void
render_availability(uint64_t listing_id, int32_t from, int32_t to, const struct calendar_read *read,
                    struct api_response *resp)
{
    struct night_state nights[BOOKING_MAX_NIGHTS];
    const struct listing *l = &read->listing;
    booking_expand(l, read->rows, read->nrows, from, to, nights);
    struct jsonout j;
    jsonout_init(&j, 96 + (size_t)(to - from) * 64);
    jsonout_lit(&j, "{\"listing_id\":");
    jsonout_int(&j, (int64_t)listing_id);
    jsonout_lit(&j, ",\"version\":");
    jsonout_int(&j, (int64_t)l->version);
    jsonout_lit(&j, ",\"currency\":");
    jsonout_str(&j, l->currency, strlen(l->currency));
    jsonout_lit(&j, ",\"nights\":[");
    for (int32_t i = 0; i < to - from; i++) {
        jsonout_lit(&j, i ? ",{\"date\":" : "{\"date\":");
        jsonout_date(&j, nights[i].night);
        jsonout_lit(&j, ",\"status\":\"");
        jsonout_lit(&j, booking_night_status_name(nights[i].status));
        jsonout_lit(&j, "\",\"price\":");
        jsonout_int(&j, nights[i].price);
        jsonout_lit(&j, "}");
    }
    jsonout_lit(&j, "]}");
    resp->status = 200;
    resp->content_type = "application/json";
    resp->body = jsonout_finish(&j, &resp->body_len);
    set_etag(resp, l->version);
}

static void search_finish(struct service *svc, struct service_read *r, struct api_response *resp);

void
service_read_finish(struct service *svc, struct service_read *r, struct api_response *resp)
{
    struct api_error e = {0};
    if (r->search) {
        search_finish(svc, r, resp);
        return;
    }
    resp->endpoint = EP_AVAILABILITY;
    if (!r->item.hit) {
        struct availability_ctx c = {.listing_id = r->listing_id, .read = &r->item.read};
        avail_lease(svc->avail, &r->item, 1, r->from, r->to);
        avail_span(r->from, r->to, &c.from, &c.to);
        cal_status rc = run_on_shard(svc, r->listing_id, op_availability, &c, &e);
        if (rc != CAL_OK) {
            api_error_answer(resp, &e);
            calendar_read_clear(&r->item.read);
            return;
        }
        avail_fill(svc->avail, &r->item, 1, r->from, r->to);
    }
    render_availability(r->listing_id, r->from, r->to, &r->item.read, resp);
    calendar_read_clear(&r->item.read);
}

void
service_read_discard(struct service_read *r)
{
    for (size_t i = 0; i < r->n; i++)
        calendar_read_clear(&r->items[i].read);
    if (r->items != &r->item)
        free(r->items);
    r->items = NULL;
    r->n = 0;
}

/* false (resp answered) when the range is invalid. */
static bool
read_start(uint64_t listing_id, const struct api_request *req, struct service_read *r,
           struct api_response *resp)
{
    struct api_error e = {0};
    memset(r, 0, sizeof(*r));
    r->listing_id = listing_id;
    r->item.listing_id = listing_id;
    r->items = &r->item;
    r->n = 1;
    if (!request_parse_range(req->query_from, req->query_to, &r->from, &r->to, &e)) {
        api_error_answer(resp, &e);
        return false;
    }
    return true;
}

static void
handle_availability(struct service *svc, uint64_t listing_id, const struct api_request *req,
                    struct api_response *resp)
{
    struct service_read r;
    if (!read_start(listing_id, req, &r, resp))
        return;
    avail_lookup(svc->avail, &r.item, 1, r.from, r.to);
    service_read_finish(svc, &r, resp);
}

void
service_read_lookup(struct service *svc, struct service_read *const *rs, size_t n)
{
    /* One multi-get per distinct range (usually one for all). */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += rs[i]->n;
    struct avail_item *items = cal_malloc(total * sizeof(*items));
    bool *taken = cal_calloc(n, sizeof(*taken));
    size_t *idx = cal_malloc(n * sizeof(*idx));
    for (size_t i = 0; i < n; i++) {
        if (taken[i])
            continue;
        size_t m = 0, nidx = 0;
        for (size_t k = i; k < n; k++) {
            if (taken[k] || rs[k]->from != rs[i]->from || rs[k]->to != rs[i]->to)
                continue;
            taken[k] = true;
            idx[nidx++] = k;
            memcpy(&items[m], rs[k]->items, rs[k]->n * sizeof(*items));
            m += rs[k]->n;
        }
        avail_lookup(svc->avail, items, m, rs[i]->from, rs[i]->to);
        m = 0;
        for (size_t t = 0; t < nidx; t++) {
            struct service_read *r = rs[idx[t]];
            memcpy(r->items, &items[m], r->n * sizeof(*items));
            m += r->n;
        }
    }
    free(items);
    free(taken);
    free(idx);
}

bool
service_read_hit(const struct service_read *r)
{
    for (size_t i = 0; i < r->n; i++)
        if (!r->items[i].hit)
            return false;
    return true;
}

/* Marks items[pick[0..k)] to be read in the next pass, routed again. */
static void
read_again(struct avail_item *items, const size_t *pick, size_t k)
{
    for (size_t q = 0; q < k; q++)
        items[pick[q]].read.moved = true;
}

/* Reads the misses of a search from their shards: one statement per shard.
 * Listings a shard no longer owns are read again after one map reload. */
static cal_status
read_misses(struct service *svc, struct avail_item *items, size_t n, int32_t from, int32_t to,
            struct api_error *e)
{
    size_t *todo = cal_malloc(n * sizeof(*todo)), ntodo = 0;
    uint64_t *ids = cal_malloc(n * sizeof(*ids));
    uint32_t *vbs = cal_malloc(n * sizeof(*vbs));
    size_t *pick = cal_malloc(n * sizeof(*pick));
    struct calendar_read *reads = cal_calloc(n, sizeof(*reads));
    unsigned *shard = cal_malloc(n * sizeof(*shard));
    struct route *routes = cal_malloc(n * sizeof(*routes));
    cal_status rc = CAL_OK;
    char err[512];
    struct route failed; /* the shard read last; pool NULL before routing */
    for (size_t i = 0; i < n; i++)
        if (!items[i].hit)
            todo[ntodo++] = i;
    for (int pass = 0; pass < 2 && ntodo > 0 && rc == CAL_OK; pass++) {
        bool moved = false;
        failed = (struct route){0};
        for (size_t t = 0; t < ntodo; t++) {
            if ((rc = router_route(svc->router, items[todo[t]].listing_id, &routes[t], err,
                                   sizeof(err))) != CAL_OK)
                break;
            shard[t] = routes[t].shard_index;
        }
        /* Each shard once: its misses in one IN (...) statement. */
        for (size_t t = 0; rc == CAL_OK && t < ntodo; t++) {
            if (shard[t] == UINT32_MAX)
                continue;
            unsigned s = shard[t];
            failed = routes[t];
            size_t k = 0;
            for (size_t u = t; u < ntodo; u++) {
                if (shard[u] == s) {
                    pick[k] = todo[u];
                    vbs[k] = routes[u].vbucket;
                    ids[k++] = items[todo[u]].listing_id;
                    shard[u] = UINT32_MAX;
                }
            }
            struct db *db;
            size_t not_owned = 0;
            bool probe;
            if (!breaker_allow(routes[t].breaker, cal_mono_us(), &probe)) {
                snprintf(err, sizeof(err), "shard %u is failing; circuit breaker open",
                         routes[t].shard_id);
                rc = CAL_EUNAVAIL;
                break;
            }
            if ((rc = pool_get(routes[t].pool, &db, err, sizeof(err))) != CAL_OK) {
                if (rc == CAL_EUNAVAIL)
                    breaker_record(routes[t].breaker, false, cal_mono_us());
                else
                    breaker_cancel(routes[t].breaker, probe);
                if (rc != CAL_EMOVED)
                    break;
                /* The shard moved to another server after routing. */
                read_again(items, pick, k);
                moved = true;
                rc = CAL_OK;
                continue;
            }
            metrics_shard(s, SHARD_OPS);
            rc = store_read_many(db, ids, vbs, k, from, to, reads, &not_owned, err, sizeof(err));
            pool_put(routes[t].pool, db);
            bool moved_away = pool_retired(routes[t].pool);
            if (moved_away) /* the old server's health is not the shard's */
                breaker_cancel(routes[t].breaker, probe);
            else
                breaker_record(routes[t].breaker, rc != CAL_EUNAVAIL, cal_mono_us());
            bool stale = moved_away;
            for (size_t q = 0; rc == CAL_OK && q < k && !stale; q++)
                stale = reads[q].maybe_stale;
            /* Answered by the old server of a shard that moved (or by one
             * fenced read-only for that): read on the new one, or, on the
             * last pass, answer without caching. */
            bool reroute = rc == CAL_OK && stale && pass == 0 &&
                           (moved_away || read_only_rerouted(svc, &routes[t]));
            for (size_t q = 0; rc == CAL_OK && stale && !reroute && q < k; q++)
                reads[q].maybe_stale = true;
            if ((rc == CAL_EUNAVAIL && moved_away) || reroute) {
                /* Lost with the old server, or answered by it after it was
                 * replaced. */
                read_again(items, pick, k);
                moved = true;
                rc = CAL_OK;
                continue;
            }
            if (rc != CAL_OK)
                break;
            for (size_t q = 0; q < k; q++) {
                struct calendar_read *dst = &items[pick[q]].read;
                calendar_read_clear(dst);
                *dst = reads[q];
                memset(&reads[q], 0, sizeof(reads[q]));
            }
            if (not_owned > 0) {
                metrics_shard(s, SHARD_MOVED);
                moved = true;
            }
        }
        if (rc != CAL_OK || !moved || pass == 1)
            break;
        /* Another pass for what moved: it lives on a new owner now. Left
         * moved (answered vbucket_moving) if the map cannot be reloaded. */
        char e2[256];
        if (router_refresh(svc->router, e2, sizeof(e2)) != CAL_OK) {
            log_warn("shard map reload failed", "error=\"%s\"", e2);
            break;
        }
        size_t again = 0;
        for (size_t t = 0; t < ntodo; t++)
            if (items[todo[t]].read.moved)
                todo[again++] = todo[t];
        ntodo = again;
    }
    if (rc == CAL_EAGAIN) {
        metrics_overload();
        request_fail(e, 503, "overloaded", "%s", err);
    } else if (rc != CAL_OK) {
        fail_unavailable(e, &failed, err);
    }
    for (size_t i = 0; i < n; i++)
        calendar_read_clear(&reads[i]);
    free(reads);
    free(todo);
    free(ids);
    free(vbs);
    free(pick);
    free(shard);
    free(routes);
    return rc;
}

/* One result of a search, written straight into j (ids, integers and fixed
 * words need no escaping; the currency, which SQL from outside may have
 * written, is escaped). */
static void
search_result(struct jsonout *j, const struct avail_item *it, int32_t in, int32_t out)
{
    jsonout_lit(j, "{\"listing_id\":");
    jsonout_int(j, (int64_t)it->listing_id);
    if (!it->read.found) {
        jsonout_lit(j, it->read.moved ? ",\"error\":\"vbucket_moving\"}"
                                      : ",\"error\":\"listing_not_found\"}");
        return;
    }
    const struct listing *l = &it->read.listing;
    struct booking_plan plan;
    booking_plan_make(l, it->read.rows, it->read.nrows, in, out, &plan);
    /* In the order a booking of the stay checks them: its rules first. */
    const char *reason = NULL;
    if (out - in < l->min_nights)
        reason = "stay_too_short";
    else if (out - in > l->max_nights)
        reason = "stay_too_long";
    else if (plan.nunavailable > 0)
        reason = "nights_unavailable";
    jsonout_lit(j, reason == NULL ? ",\"available\":true" : ",\"available\":false");
    jsonout_lit(j, ",\"total_price\":");
    jsonout_int(j, plan.total_price);
    jsonout_lit(j, ",\"currency\":");
    jsonout_str(j, l->currency, strlen(l->currency));
    jsonout_lit(j, ",\"version\":");
    jsonout_int(j, (int64_t)l->version);
    if (reason != NULL) {
        jsonout_lit(j, ",\"reason\":\"");
        jsonout_lit(j, reason);
        jsonout_lit(j, "\"");
    }
    jsonout_lit(j, "}");
}

/* Searches of more listings, or with larger bodies (parsed before the
 * listings are counted), go to the workers even when cached. */
#define SEARCH_ON_LOOP_MAX 100
#define SEARCH_ON_LOOP_MAX_BODY 8192

/* false (resp answered) when the body is not a valid search. */
static bool
search_start(struct service *svc, const struct api_request *req, struct service_read *r,
             struct api_response *resp)
{
    struct api_error e = {0};
    struct search_request sreq;
    memset(r, 0, sizeof(*r));
    resp->endpoint = EP_SEARCH;
    if (!request_parse_search(req->body, req->body_len, svc->conf.max_search_listings, date_today(),
                              &sreq, &e)) {
        api_error_answer(resp, &e);
        return false;
    }
    r->search = true;
    r->from = sreq.check_in;
    r->to = sreq.check_out;
    r->n = sreq.n;
    r->items = cal_calloc(sreq.n, sizeof(*r->items));
    for (size_t i = 0; i < sreq.n; i++)
        r->items[i].listing_id = sreq.listing_ids[i];
    free(sreq.listing_ids);
    return true;
}

static void
search_finish(struct service *svc, struct service_read *r, struct api_response *resp)
{
    struct api_error e = {0};
    struct avail_item *items = r->items;
    resp->endpoint = EP_SEARCH;
    int32_t span_from, span_to;
    avail_span(r->from, r->to, &span_from, &span_to);
    if (!service_read_hit(r))
        avail_lease(svc->avail, items, r->n, r->from, r->to);
    if (!service_read_hit(r) && read_misses(svc, items, r->n, span_from, span_to, &e) != CAL_OK) {
        api_error_answer(resp, &e);
    } else {
        if (!service_read_hit(r))
            avail_fill(svc->avail, items, r->n, r->from, r->to);
        struct jsonout j;
        jsonout_init(&j, 64 + r->n * 128);
        jsonout_lit(&j, "{\"check_in\":");
        jsonout_date(&j, r->from);
        jsonout_lit(&j, ",\"check_out\":");
        jsonout_date(&j, r->to);
        jsonout_lit(&j, ",\"results\":[");
        for (size_t i = 0; i < r->n; i++) {
            if (i > 0)
                jsonout_lit(&j, ",");
            search_result(&j, &items[i], r->from, r->to);
        }
        jsonout_lit(&j, "]}");
        resp->status = 200;
        resp->content_type = "application/json";
        resp->body = jsonout_finish(&j, &resp->body_len);
    }
    for (size_t i = 0; i < r->n; i++)
        calendar_read_clear(&items[i].read);
    free(items);
    r->items = NULL;
    r->n = 0;
}

static void
handle_search(struct service *svc, const struct api_request *req, struct api_response *resp)
{
    struct service_read r;
    if (!search_start(svc, req, &r, resp))
        return;
    avail_lookup(svc->avail, r.items, r.n, r.from, r.to);
    search_finish(svc, &r, resp);
}

/* ---- routing of paths ---------------------------------------------------- */

#define MAX_SEGMENTS 8

struct segment {
    const char *p;
    size_t len;
};

static size_t
split_path(const char *path, struct segment *seg)
{
    size_t n = 0;
    const char *p = path;
    while (*p == '/' && n < MAX_SEGMENTS) {
        const char *s = ++p;
        while (*p != '\0' && *p != '/')
            p++;
        seg[n].p = s;
        seg[n].len = (size_t)(p - s);
        n++;
    }
    if (*p != '\0')
        return MAX_SEGMENTS + 1; /* too deep, or not starting with '/' */
    return n;
}

static bool
seg_is(const struct segment *s, const char *lit)
{
    return s->len == strlen(lit) && memcmp(s->p, lit, s->len) == 0;
}

/* Whether req's method is one of allow, the methods of the path as an
 * Allow header lists them ("GET, HEAD" or "GET, HEAD, PUT"; a string
 * literal). HEAD goes wherever GET does: the handler answers it as a GET and
 * libmicrohttpd sends the headers only. If not, answers 405 with that header
 * (RFC 9110 requires it) and a message that names the same methods. */
static bool
method_in(const struct api_request *req, const char *allow, struct api_response *resp)
{
    size_t mlen = strlen(req->method);
    for (const char *p = allow; *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (len == mlen && memcmp(p, req->method, len) == 0)
            return true;
        p += len;
        p += strspn(p, ", ");
    }
    /* "GET, HEAD, PUT" reads "use GET, HEAD or PUT". */
    char msg[64];
    const char *last = strrchr(allow, ',');
    if (last == NULL)
        snprintf(msg, sizeof(msg), "use %s on this path", allow);
    else
        snprintf(msg, sizeof(msg), "use %.*s or %s on this path", (int)(last - allow), allow,
                 last + strspn(last, ", "));
    service_error(resp, 405, "method_not_allowed", msg);
    resp->allow = allow;
    return false;
}

/* What an endpoint does, for the preconditions it takes. */
enum access {
    ACCESS_READ,      /* If-Match refused; If-None-Match ignored */
    ACCESS_WRITE,     /* If-Match and If-None-Match refused */
    ACCESS_VERSIONED, /* a write at a listing's version: If-Match evaluated, If-None-Match refused
                       */
};

/* req's method is one of allow (method_in), and its preconditions are
 * ones the endpoint evaluates. If-Match is evaluated only by a write at a
 * listing's version (PUT /v1/listings/{id}, POST /v1/listings/{id}/calendar);
 * If-None-Match by no write. Ignoring either on a write would turn a
 * conditional write ("*" of If-None-Match: create only) into an
 * unconditional one, and a client would take an unconditional answer for
 * a conditional one: refused. If-None-Match is ignored on a read: the full
 * answer is a correct one to a conditional read. So are If-Modified-Since
 * and If-Unmodified-Since everywhere, as RFC 9110 asks of a resource
 * without a modification date. false: resp holds the refusal. */
static bool
accepted(const struct api_request *req, const char *allow, enum access access,
         struct api_response *resp)
{
    if (!method_in(req, allow, resp))
        return false;
    if (req->if_match != NULL && access != ACCESS_VERSIONED) {
        service_error(resp, 400, "if_match_not_supported",
                      "If-Match is evaluated only by PUT /v1/listings/{id} and POST"
                      " /v1/listings/{id}/calendar; send this request without it");
        return false;
    }
    if (req->if_none_match != NULL && access != ACCESS_READ) {
        service_error(resp, 400, "if_none_match_not_supported",
                      "no write evaluates If-None-Match; send this request without it (If-Match "
                      "makes PUT /v1/listings/{id} and POST /v1/listings/{id}/calendar "
                      "conditional)");
        return false;
    }
    return true;
}

/* The answer names what is not ready and how it fails (a load balancer's
 * health page may show it to anyone); the database's error, with its
 * server's address, database and user, goes to the log, at most once a
 * second (load balancers poll often). */
static void
handle_readyz(struct service *svc, struct api_response *resp)
{
    static struct log_gate gate;
    char why[128], err[512];
    unsigned not_logged;
    if (router_check_ready(svc->router, why, sizeof(why), err, sizeof(err)) != CAL_OK) {
        if (log_gate_pass(&gate, &not_logged))
            log_warn("not ready", "why=\"%s\" error=\"%s\" not_logged_since=%u", why, err,
                     not_logged);
        service_error(resp, 503, "not_ready", why);
        return;
    }
    set_json(resp, 200, json_pack("{s:s}", "status", "ready"));
}

static void
handle_metrics(struct service *svc, struct api_response *resp)
{
    uint32_t ids[METRICS_MAX_SHARDS];
    enum breaker_state states[METRICS_MAX_SHARDS];
    int open[METRICS_MAX_SHARDS];
    size_t n = router_shard_ids(svc->router, ids, states, METRICS_MAX_SHARDS);
    for (size_t i = 0; i < n; i++)
        open[i] = states[i] != BREAKER_CLOSED;
    resp->status = 200;
    resp->body = metrics_render(ids, open, n, &resp->body_len);
    resp->content_type = "text/plain; version=0.0.4";
}

void
service_handle(struct service *svc, const struct api_request *req, struct api_response *resp)
{
    struct segment seg[MAX_SEGMENTS];
    size_t n = split_path(req->path, seg);
    uint64_t listing_id, reservation_id;
    resp->endpoint = EP_OTHER;

    if (n == 1 && seg_is(&seg[0], "healthz")) {
        resp->endpoint = EP_HEALTHZ;
        if (accepted(req, "GET, HEAD", ACCESS_READ, resp))
            set_json(resp, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (n == 1 && seg_is(&seg[0], "readyz")) {
        resp->endpoint = EP_READYZ;
        if (accepted(req, "GET, HEAD", ACCESS_READ, resp))
            handle_readyz(svc, resp);
        return;
    }
    if (n == 1 && seg_is(&seg[0], "metrics")) {
        resp->endpoint = EP_METRICS;
        if (accepted(req, "GET, HEAD", ACCESS_READ, resp))
            handle_metrics(svc, resp);
        return;
    }
    if (n == 3 && seg_is(&seg[0], "v1") && seg_is(&seg[1], "availability") &&
        seg_is(&seg[2], "search")) {
        resp->endpoint = EP_SEARCH;
        if (accepted(req, "POST", ACCESS_READ, resp))
            handle_search(svc, req, resp);
        return;
    }
    if (n < 3 || n > 6 || !seg_is(&seg[0], "v1") || !seg_is(&seg[1], "listings")) {
        service_error(resp, 404, "not_found", "no such endpoint");
        return;
    }
    /* An empty id segment (/v1/listings/, .../reservations/) names no
     * resource, as /v1/listings/42/ names none: not a malformed id. */
    if (seg[2].len == 0 || (n >= 5 && seg[4].len == 0)) {
        service_error(resp, 404, "not_found", "no such endpoint");
        return;
    }
    /* The endpoint and its methods first, before any id is read: a path
     * that names no endpoint is a 404 whatever its ids, and a method the
     * path does not take a 405. */
    const char *allow;
    enum access access = ACCESS_READ;
    bool put = strcmp(req->method, "PUT") == 0;
    if (n == 3) {
        resp->endpoint = put ? EP_PUT_LISTING : EP_GET_LISTING;
        allow = "GET, HEAD, PUT";
        access = put ? ACCESS_VERSIONED : ACCESS_READ;
    } else if (n == 4 && seg_is(&seg[3], "reservations")) {
        resp->endpoint = EP_CREATE_RESERVATION;
        allow = "POST";
        access = ACCESS_WRITE;
    } else if (n == 4 && seg_is(&seg[3], "calendar")) {
        resp->endpoint = EP_CALENDAR;
        allow = "POST";
        access = ACCESS_VERSIONED;
    } else if (n == 4 && seg_is(&seg[3], "availability")) {
        resp->endpoint = EP_AVAILABILITY;
        allow = "GET, HEAD";
    } else if (n == 5 && seg_is(&seg[3], "reservations")) {
        resp->endpoint = EP_GET_RESERVATION;
        allow = "GET, HEAD";
    } else if (n == 6 && seg_is(&seg[3], "reservations") && seg_is(&seg[5], "cancel")) {
        resp->endpoint = EP_CANCEL_RESERVATION;
        allow = "POST";
        access = ACCESS_WRITE;
    } else {
        service_error(resp, 404, "not_found", "no such endpoint");
        return;
    }
    if (!accepted(req, allow, access, resp))
        return;
    if (!request_parse_id(seg[2].p, seg[2].len, &listing_id)) {
        service_error(resp, 400, "invalid_listing_id",
                      "listing id must be a positive integer below 2^63, "
                      "with no leading zero");
        return;
    }
    if (n >= 5 && !request_parse_id(seg[4].p, seg[4].len, &reservation_id)) {
        service_error(resp, 400, "invalid_reservation_id",
                      "reservation id must be a positive integer, with no leading zero");
        return;
    }
    switch (resp->endpoint) {
    case EP_PUT_LISTING:
        handle_put_listing(svc, listing_id, req, resp);
        return;
    case EP_GET_LISTING:
        handle_get_listing(svc, listing_id, resp);
        return;
    case EP_CREATE_RESERVATION:
        handle_create_reservation(svc, listing_id, req, resp);
        return;
    case EP_CALENDAR:
        handle_calendar(svc, listing_id, req, resp);
        return;
    case EP_AVAILABILITY:
        handle_availability(svc, listing_id, req, resp);
        return;
    case EP_GET_RESERVATION:
        handle_reservation(svc, listing_id, reservation_id, op_get_reservation, resp);
        return;
    default: /* EP_CANCEL_RESERVATION */
        handle_reservation(svc, listing_id, reservation_id, op_cancel, resp);
        return;
    }
}

bool
service_read_begin(struct service *svc, const struct api_request *req, struct service_read *r,
                   struct api_response *resp, bool *answered)
{
    *answered = false;
    if (req->if_match != NULL)
        return false; /* refused by service_handle */
    struct segment seg[MAX_SEGMENTS];
    size_t n = split_path(req->path, seg);
    if (strcmp(req->method, "POST") == 0 && n == 3 && seg_is(&seg[0], "v1") &&
        seg_is(&seg[1], "availability") && seg_is(&seg[2], "search") &&
        req->body_len <= SEARCH_ON_LOOP_MAX_BODY) {
        if (!search_start(svc, req, r, resp)) {
            *answered = true;
            return true;
        }
        if (r->n > SEARCH_ON_LOOP_MAX) {
            /* Too much to look up and render without stalling the loop. */
            free(r->items);
            r->items = NULL;
            return false;
        }
        return true;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
        return false;
    uint64_t listing_id;
    if (n != 4 || !seg_is(&seg[0], "v1") || !seg_is(&seg[1], "listings") ||
        !seg_is(&seg[3], "availability") || !request_parse_id(seg[2].p, seg[2].len, &listing_id))
        return false; /* service_handle answers it, errors included */
    resp->endpoint = EP_AVAILABILITY;
    if (!read_start(listing_id, req, r, resp))
        *answered = true;
    return true;
}
