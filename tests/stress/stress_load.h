/* The stress workload: client threads that book, cancel, block, replay and
 * drop replies against calendard, and remember what every idempotency key
 * was finally answered so stress_verify can hold SQL against it. */
#ifndef CAL_STRESS_LOAD_H
#define CAL_STRESS_LOAD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct stress_conf {
    char url[256];         /* calendard base url, 127.0.0.1 only */
    uint64_t listing_base; /* listings are [listing_base, listing_base + nlistings) */
    size_t nlistings;
    int64_t first_day; /* days since epoch of the first night of the window */
    int window;        /* nights in the booking window */
    unsigned clients;
    uint64_t max_ops;      /* 0 = bounded by time only */
    double setup_deadline; /* monotonic seconds by which the listings must be created */
    double start;          /* monotonic seconds when the load starts */
    double deadline;       /* monotonic seconds when clients stop starting ops */
    uint64_t seed;
    char tag[24]; /* prefix of every idempotency key of this run */
};

/* What the stress saw for one idempotency key. */
struct stress_record {
    uint64_t listing_id;
    int64_t reservation_id; /* from the first 200/201 answer; 0 if none */
    int64_t version;        /* the calendar version of a 201 answer (the booking's commit);
                             * 0 if none (a replay's 200 may carry a later one) */
    int64_t total_price;    /* from the first 200/201 answer; 0 if none */
    int32_t check_in;       /* days since epoch */
    int32_t check_out;
    uint32_t guest_id;
    int16_t final_status; /* last definitive HTTP status; 0 = never definitive */
    uint8_t acked;        /* answered 200/201 with status "confirmed" at some point */
    uint8_t cancel_sent;  /* a cancel went out (whatever its outcome) */
    uint8_t cancel_acked; /* a cancel was answered 200 "cancelled" */
    /* After a refusal the server does not keep (any but a 409
     * nights_unavailable: a replay of those is a new attempt), an attempt
     * of this key ended with no definitive answer: it may have booked.
     * Cleared by the next definitive answer. */
    uint8_t unknown_after_refusal;
    /* Answered 409 nights_unavailable: the server keeps that refusal under
     * the key, so no answer since or later may book it, and SQL must hold
     * the key's row as refused. Never cleared. */
    uint8_t refusal_kept;
    /* An attempt ended without an answer at all (timed out, connection
     * lost): its request may reach the server later than any answer since,
     * a refusal included, and book then. Never cleared. */
    uint8_t may_arrive_late;
    char key[48];
};

/* Every listing of a run is created at this nightly price. */
#define STRESS_DEFAULT_PRICE 10000

enum stress_hostop_kind { STRESS_OP_BLOCK = 1, STRESS_OP_UNBLOCK, STRESS_OP_PRICE };

/* What the stress saw for one host block, unblock or set_price of the
 * nights [from, to) of a listing, with when it was sent and answered: the
 * verifier works out which of them could have taken effect after which. */
struct stress_hostop {
    uint64_t listing_id;
    int32_t from; /* days since epoch */
    int32_t to;
    uint8_t kind;    /* enum stress_hostop_kind */
    int64_t price;   /* STRESS_OP_PRICE: the nightly price sent */
    int16_t status;  /* HTTP status; 0: no answer (it may have taken effect, at any time) */
    uint8_t maybe;   /* it may have changed nights: answered 200, 500 or 503 outcome_unknown,
                      * or not answered (every other answer says nothing was written) */
    int64_t version; /* the calendar version a 200 answer carries (every change, booking or
                      * calendar, moves a listing's version up); 0: none */
    double sent;     /* monotonic seconds, just before the request went out */
    double answered; /* monotonic seconds, just after its answer; 0: no answer (one answered
                      * before a block was sent did not take effect after that block) */
};

struct stress_stats {
    atomic_uint_fast64_t attempts;     /* operations started */
    atomic_uint_fast64_t requests;     /* HTTP requests sent */
    atomic_uint_fast64_t confirmed;    /* keys acknowledged as confirmed bookings */
    atomic_uint_fast64_t conflicts;    /* 409 answers */
    atomic_uint_fast64_t cancels_sent; /* cancels sent (at least once) */
    atomic_uint_fast64_t cancelled;    /* cancels acknowledged */
    atomic_uint_fast64_t errors;       /* transport errors, 5xx, other failed reads and host ops */
    /* Answers calendard never gives to these requests: a 200/201 booking
     * without reservation_id or a known status, a booking answered below 500
     * with neither 200, 201 nor 409, a cancel answered below 500 with
     * anything but 200 "cancelled". They fail the run. */
    atomic_uint_fast64_t protocol_errors;
    atomic_uint_fast64_t replays;
    atomic_uint_fast64_t drops;             /* replies deliberately lost by a tiny timeout */
    atomic_uint_fast64_t drops_processed;   /* ... whose replay found the booking made (200) */
    atomic_uint_fast64_t reads;             /* availability reads answered 200 */
    atomic_uint_fast64_t host_ops;          /* block/unblock/set_price answered 200 */
    atomic_uint_fast64_t overloaded;        /* 503 answers */
    atomic_uint_fast64_t unresolved;        /* keys never answered definitively */
    atomic_uint_fast64_t replay_mismatches; /* replay answered another reservation / 201 / 409 */
    atomic_uint_fast64_t cache_checks;      /* availability reads right after an own booking */
    atomic_uint_fast64_t cache_mismatches;  /* ... that did not show it (stale read) */
    atomic_uint_fast64_t clients_done;
};

struct stress_client {
    const struct stress_conf *conf;
    struct stress_stats *stats;
    unsigned index;
    struct stress_record *records; /* owned; freed by stress_load_client_deinit() */
    size_t nrecords;
    size_t cap;
    struct stress_hostop *hostops; /* every block, unblock and set_price sent; owned */
    size_t nhostops;
    size_t caphostops;
    uint64_t rng;
    int setup_failed;
    size_t created; /* listings this client created */
    /* Why creating stopped early: STRESS_SETUP_DEADLINE or STRESS_SETUP_STOPPED
     * (also sets setup_failed), 0 when it did not. */
    int setup_cut;
};

#define STRESS_SETUP_DEADLINE 1 /* conf->setup_deadline passed */
#define STRESS_SETUP_STOPPED 2  /* a stop signal came */

/* Prepares client storage for up to cap keys. Returns 0, or -1 on ENOMEM. */
int stress_load_client_init(struct stress_client *client, const struct stress_conf *conf,
                            struct stress_stats *stats, unsigned index, size_t cap);
void stress_load_client_deinit(struct stress_client *client);

/* Creates (PUT) the listings with index % clients == client->index; sets
 * client->setup_failed on any failure, and on a stop signal or
 * conf->setup_deadline (no request outlives it), saying which in
 * client->setup_cut. Thread entry point. */
void *stress_load_create_listings(void *arg);

/* Runs the mix until conf->deadline or conf->max_ops; thread entry point. */
void *stress_load_client_run(void *arg);

/* Ends the load early: clients start no new operation (retries of one
 * already started go on, bounded as at the deadline); creating listings
 * stops too. Async-signal-safe. */
void stress_load_stop(void);

/* How many times stress_load_stop() was called: a phase after the load
 * ends early on a stop that came after it began. */
unsigned stress_load_stops(void);

/* Monotonic clock in seconds. */
double stress_load_now(void);

#endif
