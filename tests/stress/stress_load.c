/* Stress client threads. Every booking carries a fresh idempotency key whose
 * request body never changes, so any later replay of the key must get the
 * same reservation back; what each key was finally answered is recorded for
 * the SQL verification after the run. */
#include "tests/stress/stress_load.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "tests/lib/http.h"
#include "tests/lib/testenv.h"

#define REQUEST_TIMEOUT_MS 10000L
#define MAX_TRIES 20  /* per key until a definitive answer */
#define GRACE_S 15.0  /* retries may run this long past the deadline */
#define MAX_LOGGED 40 /* anomaly lines printed per run */
#define MAX_STAY 4

static atomic_uint logged;

static void log_anomaly(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
log_anomaly(const char *fmt, ...)
{
    va_list ap;
    char line[1024];

    if (atomic_fetch_add(&logged, 1) >= MAX_LOGGED) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "stress: %s\n", line);
}

/* Lock-free, so a signal handler may count it (and the clients read it). */
static atomic_uint stopping;

void
stress_load_stop(void)
{
    atomic_fetch_add_explicit(&stopping, 1, memory_order_relaxed);
}

unsigned
stress_load_stops(void)
{
    return atomic_load_explicit(&stopping, memory_order_relaxed);
}

double
stress_load_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* splitmix64: small, fast, good enough to pick operations. */
static uint64_t
rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t
rng_below(uint64_t *state, uint64_t n)
{
    return rng_next(state) % n;
}

int
stress_load_client_init(struct stress_client *client, const struct stress_conf *conf,
                        struct stress_stats *stats, unsigned index, size_t cap)
{
    memset(client, 0, sizeof(*client));
    client->conf = conf;
    client->stats = stats;
    client->index = index;
    client->cap = cap;
    client->rng = testenv_fmix64(conf->seed ^ ((uint64_t)(index + 1) << 32));
    client->records = calloc(cap, sizeof(*client->records));
    return client->records == NULL ? -1 : 0;
}

void
stress_load_client_deinit(struct stress_client *client)
{
    free(client->records);
    client->records = NULL;
    client->nrecords = 0;
    free(client->hostops);
    client->hostops = NULL;
    client->nhostops = client->caphostops = 0;
}

/* Retry-After in milliseconds, capped so loops stay bounded. */
static long
retry_delay_ms(const struct http_response *resp, unsigned attempt)
{
    long ms = 20L << (attempt < 5 ? attempt : 5);

    if (resp->retry_after[0] != '\0') {
        long s = strtol(resp->retry_after, NULL, 10);

        if (s > 0) {
            ms = s * 1000;
        }
    }
    return ms > 500 ? 500 : ms;
}

static void *
create_listings_run(struct stress_client *client)
{
    const struct stress_conf *conf = client->conf;
    struct http_client *http = http_client_create();
    char url[512], err[256];
    char body[128];

    snprintf(body, sizeof(body),
             "{\"default_price\":%d,\"currency\":\"USD\",\"min_nights\":1,\"max_nights\":30}",
             STRESS_DEFAULT_PRICE);

    if (http == NULL) {
        client->setup_failed = 1;
        return NULL;
    }
    for (size_t i = client->index; i < conf->nlistings; i += conf->clients) {
        int ok = 0;

        snprintf(url, sizeof(url), "%s/v1/listings/%" PRIu64, conf->url, conf->listing_base + i);
        for (unsigned attempt = 0; attempt < 5 && !ok; attempt++) {
            struct http_response resp;
            long left = (long)((conf->setup_deadline - stress_load_now()) * 1000);
            cal_status st;

            if (atomic_load_explicit(&stopping, memory_order_relaxed) != 0) {
                client->setup_cut = STRESS_SETUP_STOPPED;
                break;
            }
            if (left <= 0) {
                client->setup_cut = STRESS_SETUP_DEADLINE;
                break;
            }
            st = http_request(http, "PUT", url, NULL, body, strlen(body),
                              left < REQUEST_TIMEOUT_MS ? left : REQUEST_TIMEOUT_MS, &resp, err,
                              sizeof(err));
            if (st == CAL_OK && (resp.status == 201 || resp.status == 200)) {
                ok = 1;
                client->created++;
            } else {
                long delay = retry_delay_ms(&resp, attempt);

                if (st != CAL_OK) {
                    fprintf(stderr, "stress: %s\n", err);
                } else {
                    fprintf(stderr, "stress: PUT %s: %ld %s\n", url, resp.status, resp.body);
                }
                left = (long)((conf->setup_deadline - stress_load_now()) * 1000);
                sleep_ms(delay < left ? delay : left > 0 ? left : 0);
            }
            http_response_deinit(&resp);
        }
        if (!ok) {
            client->setup_failed = 1;
            break;
        }
    }
    http_client_destroy(http);
    return NULL;
}

void *
stress_load_create_listings(void *arg)
{
    return create_listings_run(arg);
}

static void
booking_body(const struct stress_record *rec, char *buf, size_t len)
{
    char ci[11], co[11];

    testenv_format_date(rec->check_in, ci, sizeof(ci));
    testenv_format_date(rec->check_out, co, sizeof(co));
    snprintf(buf, len, "{\"check_in\":\"%s\",\"check_out\":\"%s\",\"guest_id\":%" PRIu32 "}", ci,
             co, rec->guest_id);
}

/* Is resp an error answer with this error.code? */
static int
error_code_is(const struct http_response *resp, const char *code)
{
    json_t *root = http_response_json(resp);
    const char *got = json_string_value(json_object_get(json_object_get(root, "error"), "code"));
    int is = got != NULL && strcmp(got, code) == 0;

    json_decref(root);
    return is;
}

/* Records a definitive answer (status < 500) to a booking of rec. */
static void
take_booking_answer(struct stress_client *client, struct stress_record *rec, long status,
                    const struct http_response *resp, int replay)
{
    struct stress_stats *stats = client->stats;
    json_t *root;
    int64_t rid, total;
    const char *rstatus;
    int unknown = rec->unknown_after_refusal;

    rec->unknown_after_refusal = 0; /* this answer is definitive */
    switch (status) {
    case 200:
    case 201:
        root = http_response_json(resp);
        rid = (int64_t)json_integer_value(json_object_get(root, "reservation_id"));
        rstatus = json_string_value(json_object_get(root, "status"));
        if (rid <= 0 || rstatus == NULL ||
            (strcmp(rstatus, "confirmed") != 0 && strcmp(rstatus, "cancelled") != 0)) {
            atomic_fetch_add(&stats->protocol_errors, 1);
            log_anomaly("protocol_errors: key %s: %ld without a reservation_id and known status: "
                        "%s",
                        rec->key, status, resp->body);
            json_decref(root);
            return;
        }
        /* Every night costs more than nothing here (the run's prices are
         * 90.00-110.00), so a booking's total is positive. */
        total = (int64_t)json_integer_value(json_object_get(root, "total_price"));
        if (!json_is_integer(json_object_get(root, "total_price")) || total <= 0) {
            atomic_fetch_add(&stats->protocol_errors, 1);
            log_anomaly("protocol_errors: key %s: %ld without a positive total_price: %s", rec->key,
                        status, resp->body);
            json_decref(root);
            return;
        }
        if (rec->refusal_kept) {
            /* The refusal was committed under the key before it was
             * answered: nothing can book the key since. */
            atomic_fetch_add(&stats->replay_mismatches, 1);
            log_anomaly("key %s: answered %ld (reservation %" PRId64 ") after its refusal was kept",
                        rec->key, status, rid);
        } else if (status == 200 && rec->reservation_id == 0 && rec->final_status >= 400 &&
                   !unknown && !rec->may_arrive_late) {
            /* A refusal not kept (a 409 idempotency_key_in_use): a replay
             * answered with a booking after it, with no attempt in between
             * whose outcome is unknown, means a row exists that the refusal
             * hid. */
            atomic_fetch_add(&stats->replay_mismatches, 1);
            log_anomaly("key %s: replay answered 200 (reservation %" PRId64 ") after %d", rec->key,
                        rid, rec->final_status);
        } else if (status == 200 && rec->reservation_id == 0 && rec->final_status >= 400) {
            log_anomaly("key %s: booked (reservation %" PRId64 ") by an attempt of unknown outcome"
                        " after a %d; not a violation",
                        rec->key, rid, rec->final_status);
        }
        if (rec->reservation_id != 0 && rid != rec->reservation_id) {
            atomic_fetch_add(&stats->replay_mismatches, 1);
            log_anomaly("key %s: replay answered reservation %" PRId64 ", first answer %" PRId64,
                        rec->key, rid, rec->reservation_id);
        } else if (rec->reservation_id == 0) {
            rec->reservation_id = rid;
        }
        if (status == 201 && rec->version == 0) {
            rec->version = (int64_t)json_integer_value(json_object_get(root, "version"));
        }
        if (rec->total_price != 0 && total != rec->total_price) {
            /* Every answer of a key is its one reservation's. */
            atomic_fetch_add(&stats->replay_mismatches, 1);
            log_anomaly("key %s: answered total_price %" PRId64 ", first answer %" PRId64, rec->key,
                        total, rec->total_price);
        } else if (rec->total_price == 0) {
            rec->total_price = total;
        }
        if (status == 201 && rec->acked) {
            atomic_fetch_add(&stats->replay_mismatches, 1);
            log_anomaly("key %s: replay answered 201 again (reservation %" PRId64 ")", rec->key,
                        rid);
        }
        if (rec->cancel_acked && strcmp(rstatus, "confirmed") == 0) {
            atomic_fetch_add(&stats->replay_mismatches, 1);
            log_anomaly("key %s: confirmed again after an acknowledged cancel", rec->key);
        }
        if (strcmp(rstatus, "confirmed") == 0 && !rec->acked && !rec->cancel_sent) {
            rec->acked = 1;
            atomic_fetch_add(&stats->confirmed, 1);
        }
        rec->final_status = (int16_t)status;
        json_decref(root);
        break;
    case 409:
        atomic_fetch_add(&stats->conflicts, 1);
        if (rec->acked) {
            atomic_fetch_add(&stats->replay_mismatches, 1);
            log_anomaly("key %s: replay of an acknowledged booking answered 409: %s", rec->key,
                        resp->body);
        } else {
            rec->final_status = 409;
            rec->refusal_kept = (unsigned char)error_code_is(resp, "nights_unavailable");
        }
        break;
    default:
        /* The request is well formed, its listing exists, its body never
         * changes and its nights lie ahead: no other answer below 500 is
         * one calendard gives it. */
        atomic_fetch_add(&stats->protocol_errors, 1);
        log_anomaly("protocol_errors: key %s: %s answered %ld: %s", rec->key,
                    replay ? "replay" : "booking", status, resp->body);
        if (rec->acked || rec->reservation_id != 0) {
            /* The body never changes: a booked key must replay as booked. */
            atomic_fetch_add(&stats->replay_mismatches, 1);
        }
        if (!rec->acked) {
            rec->final_status = (int16_t)status;
        }
        break;
    }
}

/* Read-your-writes through the cache: right after this client's booking was
 * acknowledged, availability must show its nights booked at a version no
 * older than the booking's. Nobody else can free them in between: only the
 * client that made a booking cancels it, and hosts cannot block booked nights. */
static void
check_own_write(struct stress_client *client, struct http_client *http,
                const struct stress_record *rec, const struct http_response *booked)
{
    const struct stress_conf *conf = client->conf;
    struct stress_stats *stats = client->stats;
    char url[512], ci[11], co[11], err[256];
    struct http_response resp;
    json_t *root = http_response_json(booked), *avail = NULL, *nights;
    int64_t version = (int64_t)json_integer_value(json_object_get(root, "version"));
    const char *problem = NULL;

    json_decref(root);
    testenv_format_date(rec->check_in, ci, sizeof(ci));
    testenv_format_date(rec->check_out, co, sizeof(co));
    snprintf(url, sizeof(url), "%s/v1/listings/%" PRIu64 "/availability?from=%s&to=%s", conf->url,
             rec->listing_id, ci, co);
    atomic_fetch_add(&stats->requests, 1);
    if (http_request(http, "GET", url, NULL, NULL, 0, REQUEST_TIMEOUT_MS, &resp, err,
                     sizeof(err)) != CAL_OK ||
        resp.status != 200) {
        if (resp.status != 503) {
            atomic_fetch_add(&stats->errors, 1);
            log_anomaly("availability %s: %ld %s", url, resp.status, resp.body);
        }
        http_response_deinit(&resp);
        return;
    }
    atomic_fetch_add(&stats->cache_checks, 1);
    avail = http_response_json(&resp);
    nights = json_object_get(avail, "nights");
    if (json_array_size(nights) != (size_t)(rec->check_out - rec->check_in)) {
        problem = "wrong number of nights";
    } else if ((int64_t)json_integer_value(json_object_get(avail, "version")) < version) {
        problem = "version older than the booking";
    }
    for (size_t i = 0; problem == NULL && i < json_array_size(nights); i++) {
        const char *st = json_string_value(json_object_get(json_array_get(nights, i), "status"));

        if (st == NULL || strcmp(st, "booked") != 0) {
            problem = "a night of the booking is not booked";
        }
    }
    if (problem != NULL) {
        atomic_fetch_add(&stats->cache_mismatches, 1);
        log_anomaly("read-your-writes: key %s reservation %" PRId64 " version %" PRId64 ": %s: %s",
                    rec->key, rec->reservation_id, version, problem, resp.body);
    }
    json_decref(avail);
    http_response_deinit(&resp);
}

/* An attempt of rec ended with no definitive answer (5xx, timeout): after a
 * refusal, this attempt may have booked the key. */
static void
note_unknown_outcome(struct stress_record *rec)
{
    if (rec->final_status >= 400 && !rec->acked)
        rec->unknown_after_refusal = 1;
}

/* Sends the booking of rec until a definitive answer or the tries run out.
 * drop: the first try has a 1-5 ms timeout so its reply is lost. */
static void
book_until_definitive(struct stress_client *client, struct http_client *http,
                      struct stress_record *rec, int drop, int replay)
{
    const struct stress_conf *conf = client->conf;
    struct stress_stats *stats = client->stats;
    char url[512], hdr[128], body[256], err[256];
    const char *headers[] = {hdr, NULL};
    long timeout = drop ? 1 + (long)rng_below(&client->rng, 5) : REQUEST_TIMEOUT_MS;
    int definitive = 0, dropped = 0;

    snprintf(url, sizeof(url), "%s/v1/listings/%" PRIu64 "/reservations", conf->url,
             rec->listing_id);
    snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", rec->key);
    booking_body(rec, body, sizeof(body));
    for (unsigned attempt = 0; attempt < MAX_TRIES && !definitive; attempt++) {
        struct http_response resp;
        cal_status st;

        if (attempt > 0 && stress_load_now() > conf->deadline + GRACE_S) {
            break;
        }
        atomic_fetch_add(&stats->requests, 1);
        st = http_request(http, "POST", url, headers, body, strlen(body), timeout, &resp, err,
                          sizeof(err));
        if (st == CAL_OK && resp.status == 409 && error_code_is(&resp, "idempotency_key_in_use")) {
            /* The original of this key is still running: no answer yet. */
            sleep_ms(retry_delay_ms(&resp, attempt));
        } else if (st == CAL_OK && resp.status > 0 && resp.status < 500) {
            if (dropped && resp.status == 200) {
                atomic_fetch_add(&stats->drops_processed, 1);
            }
            take_booking_answer(client, rec, resp.status, &resp, replay || attempt > 0);
            definitive = 1;
            if (resp.status == 201 && rec->acked && rng_below(&client->rng, 4) == 0) {
                check_own_write(client, http, rec, &resp);
            }
        } else if (st == CAL_OK) {
            /* Other 503s (overloaded, shard_unavailable, contention, moving)
             * come before a commit: nothing was booked. */
            if (resp.status != 503 || error_code_is(&resp, "outcome_unknown"))
                note_unknown_outcome(rec);
            atomic_fetch_add(resp.status == 503 ? &stats->overloaded : &stats->errors, 1);
            if (resp.status != 503) {
                log_anomaly("key %s: %ld %s", rec->key, resp.status, resp.body);
            }
            sleep_ms(retry_delay_ms(&resp, attempt));
        } else if (drop && attempt == 0 && st == CAL_ETIMEDOUT) {
            /* The reply is lost on purpose; give the server time to finish
             * before the replay, as a real client's retry would. */
            note_unknown_outcome(rec);
            rec->may_arrive_late = 1;
            atomic_fetch_add(&stats->drops, 1);
            dropped = 1;
            sleep_ms(20 + (long)rng_below(&client->rng, 30));
        } else {
            note_unknown_outcome(rec);
            rec->may_arrive_late = 1;
            atomic_fetch_add(&stats->errors, 1);
            log_anomaly("key %s: %s", rec->key, err);
            sleep_ms(retry_delay_ms(&resp, attempt));
        }
        http_response_deinit(&resp);
        timeout = REQUEST_TIMEOUT_MS;
    }
    if (!definitive) {
        atomic_fetch_add(&stats->unresolved, 1);
    }
}

static void
op_book(struct stress_client *client, struct http_client *http, int drop)
{
    const struct stress_conf *conf = client->conf;
    struct stress_record *rec = &client->records[client->nrecords];
    int64_t nights = 1 + (int64_t)rng_below(&client->rng, MAX_STAY);
    int64_t ci = conf->first_day + (int64_t)rng_below(&client->rng, (uint64_t)conf->window);
    int64_t end = conf->first_day + conf->window;

    memset(rec, 0, sizeof(*rec));
    rec->listing_id = conf->listing_base + rng_below(&client->rng, conf->nlistings);
    rec->check_in = (int32_t)ci;
    rec->check_out = (int32_t)(ci + nights > end ? end : ci + nights);
    rec->guest_id = 1 + (uint32_t)rng_below(&client->rng, 1000000);
    snprintf(rec->key, sizeof(rec->key), "%s-%u-%zu", conf->tag, client->index, client->nrecords);
    client->nrecords++;
    book_until_definitive(client, http, rec, drop, 0);
}

/* A random earlier key with a definitive answer, or NULL. */
static struct stress_record *
pick_record(struct stress_client *client, int for_cancel)
{
    if (client->nrecords == 0) {
        return NULL;
    }
    for (unsigned i = 0; i < 16; i++) {
        struct stress_record *rec = &client->records[rng_below(&client->rng, client->nrecords)];

        if (for_cancel ? (rec->acked && !rec->cancel_sent) : rec->final_status != 0) {
            return rec;
        }
    }
    return NULL;
}

static void
op_replay(struct stress_client *client, struct http_client *http, struct stress_record *rec)
{
    atomic_fetch_add(&client->stats->replays, 1);
    book_until_definitive(client, http, rec, 0, 1);
}

static void
op_cancel(struct stress_client *client, struct http_client *http, struct stress_record *rec)
{
    const struct stress_conf *conf = client->conf;
    struct stress_stats *stats = client->stats;
    char url[512], err[256];

    snprintf(url, sizeof(url), "%s/v1/listings/%" PRIu64 "/reservations/%" PRId64 "/cancel",
             conf->url, rec->listing_id, rec->reservation_id);
    rec->cancel_sent = 1;
    atomic_fetch_add(&stats->cancels_sent, 1);
    for (unsigned attempt = 0; attempt < MAX_TRIES; attempt++) {
        struct http_response resp;
        cal_status st;
        json_t *root;
        const char *status;

        if (attempt > 0 && stress_load_now() > conf->deadline + GRACE_S) {
            break;
        }
        atomic_fetch_add(&stats->requests, 1);
        st = http_request(http, "POST", url, NULL, NULL, 0, REQUEST_TIMEOUT_MS, &resp, err,
                          sizeof(err));
        if (st != CAL_OK || resp.status >= 500) {
            atomic_fetch_add(
                st == CAL_OK && resp.status == 503 ? &stats->overloaded : &stats->errors, 1);
            sleep_ms(retry_delay_ms(&resp, attempt));
            http_response_deinit(&resp);
            continue;
        }
        root = http_response_json(&resp);
        status = json_string_value(json_object_get(root, "status"));
        if (resp.status == 200 && status != NULL && strcmp(status, "cancelled") == 0) {
            rec->cancel_acked = 1;
            atomic_fetch_add(&stats->cancelled, 1);
        } else {
            /* The reservation was acknowledged to this client: a cancel of
             * it is answered 200 "cancelled", also when cancelled already. */
            atomic_fetch_add(&stats->protocol_errors, 1);
            log_anomaly("protocol_errors: cancel of %s (reservation %" PRId64 "): %ld %s", rec->key,
                        rec->reservation_id, resp.status, resp.body);
        }
        json_decref(root);
        http_response_deinit(&resp);
        return;
    }
    atomic_fetch_add(&stats->unresolved, 1);
}

/* A host blocks, unblocks or prices 1-2 nights (kind). Every one sent is
 * remembered, with when it was sent and answered, for the verifier's
 * lost_blocks, phantom_blocks and price_mismatches; one that cannot be
 * remembered is not sent. */
static void
op_host(struct stress_client *client, struct http_client *http, enum stress_hostop_kind kind)
{
    const struct stress_conf *conf = client->conf;
    struct stress_stats *stats = client->stats;
    uint64_t id = conf->listing_base + rng_below(&client->rng, conf->nlistings);
    int64_t from = conf->first_day + (int64_t)rng_below(&client->rng, (uint64_t)conf->window);
    int64_t to = from + 1 + (int64_t)rng_below(&client->rng, 2);
    char url[512], body[256], f[11], t[11], err[256];
    struct http_response resp;
    struct stress_hostop *op;
    cal_status st;

    if (client->nhostops == client->caphostops) {
        size_t cap = client->caphostops ? 2 * client->caphostops : 256;
        struct stress_hostop *grown = realloc(client->hostops, cap * sizeof(*grown));

        if (grown == NULL) {
            log_anomaly("client %u: no memory to remember host operation %zu, not sent",
                        client->index, client->nhostops);
            return;
        }
        client->hostops = grown;
        client->caphostops = cap;
    }
    op = &client->hostops[client->nhostops++];
    *op = (struct stress_hostop){.listing_id = id,
                                 .from = (int32_t)from,
                                 .to = (int32_t)to,
                                 .kind = (uint8_t)kind,
                                 .maybe = 1};
    testenv_format_date(from, f, sizeof(f));
    testenv_format_date(to, t, sizeof(t));
    snprintf(url, sizeof(url), "%s/v1/listings/%" PRIu64 "/calendar", conf->url, id);
    if (kind == STRESS_OP_PRICE) {
        /* 90.00 to 110.00 around the default, never the default itself. */
        op->price = STRESS_DEFAULT_PRICE - 1000 + 100 * (int64_t)rng_below(&client->rng, 20);
        op->price += op->price >= STRESS_DEFAULT_PRICE ? 100 : 0;
        snprintf(body, sizeof(body),
                 "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"set_price\",\"price\":%" PRId64 "}",
                 f, t, op->price);
    } else {
        snprintf(body, sizeof(body), "{\"from\":\"%s\",\"to\":\"%s\",\"action\":\"%s\"}", f, t,
                 kind == STRESS_OP_BLOCK ? "block" : "unblock");
    }
    atomic_fetch_add(&stats->requests, 1);
    op->sent = stress_load_now();
    st = http_request(http, "POST", url, NULL, body, strlen(body), REQUEST_TIMEOUT_MS, &resp, err,
                      sizeof(err));
    if (st != CAL_OK) {
        atomic_fetch_add(&stats->errors, 1);
        log_anomaly("calendar %s: %s", body, err);
        http_response_deinit(&resp);
        return;
    }
    op->answered = stress_load_now();
    op->status = (int16_t)resp.status;
    op->maybe = resp.status == 200 || resp.status == 500 ||
                (resp.status == 503 && error_code_is(&resp, "outcome_unknown"));
    if (resp.status == 200) {
        json_t *root = http_response_json(&resp);

        op->version = (int64_t)json_integer_value(json_object_get(root, "version"));
        json_decref(root);
        atomic_fetch_add(&stats->host_ops, 1);
        if (op->version <= 0) {
            atomic_fetch_add(&stats->protocol_errors, 1);
            log_anomaly("protocol_errors: calendar %s: 200 without a version: %s", body, resp.body);
        }
    } else if (resp.status == 409) {
        atomic_fetch_add(&stats->conflicts, 1);
    } else if (resp.status == 503) {
        atomic_fetch_add(&stats->overloaded, 1);
    } else {
        atomic_fetch_add(&stats->errors, 1);
        log_anomaly("calendar %s: %ld %s", body, resp.status, resp.body);
    }
    http_response_deinit(&resp);
}

/* A search-style read of a random listing's whole window: fills the cache
 * that later bookings must invalidate. Its content is not checked (other
 * clients change it concurrently); check_own_write() checks freshness. */
static void
op_browse(struct stress_client *client, struct http_client *http)
{
    const struct stress_conf *conf = client->conf;
    struct stress_stats *stats = client->stats;
    uint64_t id = conf->listing_base + rng_below(&client->rng, conf->nlistings);
    char url[512], f[11], t[11], err[256];
    struct http_response resp;

    testenv_format_date(conf->first_day, f, sizeof(f));
    testenv_format_date(conf->first_day + conf->window, t, sizeof(t));
    snprintf(url, sizeof(url), "%s/v1/listings/%" PRIu64 "/availability?from=%s&to=%s", conf->url,
             id, f, t);
    atomic_fetch_add(&stats->requests, 1);
    if (http_request(http, "GET", url, NULL, NULL, 0, REQUEST_TIMEOUT_MS, &resp, err,
                     sizeof(err)) != CAL_OK) {
        atomic_fetch_add(&stats->errors, 1);
        log_anomaly("availability %s: %s", url, err);
    } else if (resp.status == 200) {
        atomic_fetch_add(&stats->reads, 1);
    } else if (resp.status == 503) {
        atomic_fetch_add(&stats->overloaded, 1);
    } else {
        atomic_fetch_add(&stats->errors, 1);
        log_anomaly("availability %s: %ld %s", url, resp.status, resp.body);
    }
    http_response_deinit(&resp);
}

void *
stress_load_client_run(void *arg)
{
    struct stress_client *client = arg;
    const struct stress_conf *conf = client->conf;
    struct stress_stats *stats = client->stats;
    struct http_client *http = http_client_create();
    static atomic_uint_fast64_t claimed;

    if (http == NULL) {
        atomic_fetch_add(&stats->errors, 1);
        goto out;
    }
    while (stress_load_now() < conf->deadline &&
           !atomic_load_explicit(&stopping, memory_order_relaxed)) {
        uint64_t roll;
        struct stress_record *rec = NULL;

        if (conf->max_ops != 0 && atomic_fetch_add(&claimed, 1) >= conf->max_ops) {
            break;
        }
        atomic_fetch_add(&stats->attempts, 1);
        roll = rng_below(&client->rng, 100);
        /* Mix: 45 book, 8 dropped-reply book, 10 replay, 5 browse, 22 cancel,
         * 4 block, 4 unblock, 2 set_price (a missing replay/cancel candidate
         * books instead). */
        if (roll >= 63 && roll < 68) {
            op_browse(client, http);
            continue;
        }
        if (roll >= 53 && roll < 63) {
            rec = pick_record(client, 0);
            if (rec != NULL) {
                op_replay(client, http, rec);
                continue;
            }
        } else if (roll >= 68 && roll < 90) {
            rec = pick_record(client, 1);
            if (rec != NULL) {
                op_cancel(client, http, rec);
                continue;
            }
        } else if (roll >= 90) {
            op_host(client, http,
                    roll < 94   ? STRESS_OP_BLOCK
                    : roll < 98 ? STRESS_OP_UNBLOCK
                                : STRESS_OP_PRICE);
            continue;
        }
        if (client->nrecords == client->cap) {
            log_anomaly("client %u: key table full (%zu), stopping early", client->index,
                        client->cap);
            break;
        }
        op_book(client, http, roll >= 45 && roll < 53);
    }
out:
    http_client_destroy(http);
    atomic_fetch_add(&stats->clients_done, 1);
    return NULL;
}
