/* Booking rules as pure functions: stay validation, night states, prices,
 * the optimistic plan of a booking, request hashes, ids and retry backoff.
 * No sockets, no SQL: unit tests need no server. */
#ifndef CAL_BOOKING_H
#define CAL_BOOKING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BOOKING_MAX_NIGHTS 366 /* longest stay, block or availability range */
#define BOOKING_MAX_PRICE 1000000000000LL
#define BOOKING_MAX_GUEST_ID 9007199254740991LL /* 2^53-1: exact in every JSON client */
#define BOOKING_KEY_MAX 255

enum night_status { NIGHT_AVAILABLE = 0, NIGHT_BLOCKED, NIGHT_BOOKED };
/* A refused reservation holds no nights: it keeps the answer of a booking
 * whose nights were taken, so a replay of its key is refused again. */
enum reservation_status { RESERVATION_CONFIRMED = 0, RESERVATION_CANCELLED, RESERVATION_REFUSED };

struct listing {
    uint64_t listing_id;
    uint32_t vbucket;
    uint64_t version;       /* calendar version */
    uint64_t rules_version; /* settings version */
    int64_t default_price;
    char currency[4];
    int min_nights;
    int max_nights;
};

/* One row of the sparse nights table. */
struct night_row {
    int32_t night; /* days since epoch */
    enum night_status status;
    uint64_t reservation_id;
    bool has_price;
    int64_t price;
    uint64_t version;
};

struct reservation {
    uint64_t reservation_id;
    uint64_t listing_id;
    int32_t check_in;
    int32_t check_out;
    uint64_t guest_id;
    enum reservation_status status;
    int64_t total_price;
    char currency[4];
    uint64_t version;
    char request_hash[17];
};

enum stay_verdict {
    STAY_OK = 0,
    STAY_PAST,      /* check_in before today */
    STAY_RANGE,     /* check_out <= check_in */
    STAY_TOO_SHORT, /* below min_nights */
    STAY_TOO_LONG,  /* above max_nights */
};

enum stay_verdict booking_check_stay(const struct listing *listing, int32_t check_in,
                                     int32_t check_out, int32_t today);

const char *booking_night_status_name(enum night_status st);
bool booking_night_status_parse(const char *s, enum night_status *st);
const char *booking_reservation_status_name(enum reservation_status st);
bool booking_reservation_status_parse(const char *s, enum reservation_status *st);

/* A booking decided on one read of the calendar: what to write and what to
 * check, so the transaction can verify nothing it depended on changed. */
struct booking_plan {
    int64_t total_price;
    size_t nunavailable;
    int32_t unavailable[BOOKING_MAX_NIGHTS]; /* nights booked or blocked */
    size_t nexisting;                        /* available rows: update with version check */
    int32_t existing_night[BOOKING_MAX_NIGHTS];
    uint64_t existing_version[BOOKING_MAX_NIGHTS];
    size_t nmissing; /* no row: insert (duplicate key = conflict) */
    int32_t missing[BOOKING_MAX_NIGHTS];
};

/* rows: the listing's rows within [check_in, check_out), any order, no
 * duplicates. The stay must be 1..BOOKING_MAX_NIGHTS nights. */
void booking_plan_make(const struct listing *listing, const struct night_row *rows, size_t nrows,
                       int32_t check_in, int32_t check_out, struct booking_plan *plan);

/* One night of an availability answer. */
struct night_state {
    int32_t night;
    enum night_status status;
    int64_t price;
};

/* Expands sparse rows over [from, to) into out[to - from]. */
void booking_expand(const struct listing *listing, const struct night_row *rows, size_t nrows,
                    int32_t from, int32_t to, struct night_state *out);

/* FNV-1a 64 over the canonical request, as 16 hex digits + NUL in out[17]. */
void booking_request_hash(int32_t check_in, int32_t check_out, uint64_t guest_id, char *out);

/* Idempotency keys: 1..255 bytes of printable ASCII (0x20..0x7e), no
 * leading or trailing space (HTTP strips those). */
bool booking_key_valid(const char *key, size_t len);

/* Full-jitter exponential backoff: uniform in [0, min(cap, base * 2^attempt)]. */
unsigned booking_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t rnd);

#endif
