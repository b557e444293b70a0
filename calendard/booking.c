/* Booking rules as pure functions. */
#include "calendard/booking.h"

#include <assert.h>
#include <string.h>

#include "common/util.h"

static const char *const night_names[] = {"available", "blocked", "booked"};
static const char *const reservation_names[] = {"confirmed", "cancelled", "refused"};

enum stay_verdict
booking_check_stay(const struct listing *listing, int32_t check_in, int32_t check_out,
                   int32_t today)
{
    if (check_out <= check_in)
        return STAY_RANGE;
    if (check_in < today)
        return STAY_PAST;
    int32_t nights = check_out - check_in;
    if (nights < listing->min_nights)
        return STAY_TOO_SHORT;
    if (nights > listing->max_nights || nights > BOOKING_MAX_NIGHTS)
        return STAY_TOO_LONG;
    return STAY_OK;
}

const char *
booking_night_status_name(enum night_status st)
{
    return night_names[st];
}

bool
booking_night_status_parse(const char *s, enum night_status *st)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(s, night_names[i]) == 0) {
            *st = (enum night_status)i;
            return true;
        }
    }
    return false;
}

const char *
booking_reservation_status_name(enum reservation_status st)
{
    return reservation_names[st];
}

bool
booking_reservation_status_parse(const char *s, enum reservation_status *st)
{
    for (int i = 0; i < (int)CAL_ARRAY_LEN(reservation_names); i++) {
        if (strcmp(s, reservation_names[i]) == 0) {
            *st = (enum reservation_status)i;
            return true;
        }
    }
    return false;
}

static int64_t
night_price(const struct listing *listing, const struct night_row *row)
{
    return row != NULL && row->has_price ? row->price : listing->default_price;
}

/* A price no request can set (SQL from outside wrote it, the schema has no
 * CHECK): the night is never sold at it, nor summed (a stay's total could
 * overflow). */
static bool
price_valid(int64_t price)
{
    return price >= 0 && price <= BOOKING_MAX_PRICE;
}

/* Index rows by night offset so both planners are linear in the range. */
static void
index_rows(const struct night_row *rows, size_t nrows, int32_t from, int32_t to,
           const struct night_row **by_night)
{
    memset(by_night, 0, sizeof(*by_night) * (size_t)(to - from));
    for (size_t i = 0; i < nrows; i++)
        if (rows[i].night >= from && rows[i].night < to)
            by_night[rows[i].night - from] = &rows[i];
}

void
booking_plan_make(const struct listing *listing, const struct night_row *rows, size_t nrows,
                  int32_t check_in, int32_t check_out, struct booking_plan *plan)
{
    const struct night_row *by_night[BOOKING_MAX_NIGHTS];
    assert(check_out > check_in && check_out - check_in <= BOOKING_MAX_NIGHTS);
    index_rows(rows, nrows, check_in, check_out, by_night);
    plan->total_price = 0;
    plan->nunavailable = plan->nexisting = plan->nmissing = 0;
    for (int32_t d = check_in; d < check_out; d++) {
        const struct night_row *row = by_night[d - check_in];
        int64_t price = night_price(listing, row);
        if (!price_valid(price)) {
            plan->unavailable[plan->nunavailable++] = d;
            continue;
        }
        plan->total_price += price;
        if (row == NULL) {
            plan->missing[plan->nmissing++] = d;
        } else if (row->status != NIGHT_AVAILABLE) {
            plan->unavailable[plan->nunavailable++] = d;
        } else {
            plan->existing_night[plan->nexisting] = d;
            plan->existing_version[plan->nexisting++] = row->version;
        }
    }
}

void
booking_expand(const struct listing *listing, const struct night_row *rows, size_t nrows,
               int32_t from, int32_t to, struct night_state *out)
{
    const struct night_row *by_night[BOOKING_MAX_NIGHTS];
    assert(to > from && to - from <= BOOKING_MAX_NIGHTS);
    index_rows(rows, nrows, from, to, by_night);
    for (int32_t d = from; d < to; d++) {
        const struct night_row *row = by_night[d - from];
        out[d - from].night = d;
        out[d - from].status = row ? row->status : NIGHT_AVAILABLE;
        out[d - from].price = night_price(listing, row);
        if (!price_valid(out[d - from].price)) {
            out[d - from].price = 0;
            if (out[d - from].status == NIGHT_AVAILABLE)
                out[d - from].status = NIGHT_BLOCKED;
        }
    }
}

void
booking_request_hash(int32_t check_in, int32_t check_out, uint64_t guest_id, char *out)
{
    uint64_t vals[3] = {(uint64_t)(uint32_t)check_in, (uint64_t)(uint32_t)check_out, guest_id};
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int v = 0; v < 3; v++) {
        for (int b = 0; b < 8; b++) {
            h ^= (vals[v] >> (8 * b)) & 0xff;
            h *= 0x100000001b3ULL;
        }
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++)
        out[i] = hex[(h >> (60 - 4 * i)) & 0xf];
    out[16] = '\0';
}

bool
booking_key_valid(const char *key, size_t len)
{
    if (len == 0 || len > BOOKING_KEY_MAX || key[0] == ' ' || key[len - 1] == ' ')
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] < 0x20 || (unsigned char)key[i] > 0x7e)
            return false;
    return true;
}

unsigned
booking_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t rnd)
{
    uint64_t ceiling = base_ms;
    for (unsigned i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return (unsigned)(rnd % (ceiling + 1));
}
