/* Decoding and validation of API inputs (JSON bodies, path ids, query
 * strings) into plain structs, with a stable error code for every refusal.
 * Pure: no sockets, no SQL. */
#ifndef CAL_REQUEST_H
#define CAL_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calendard/booking.h"

struct api_error {
    int http;         /* HTTP status */
    const char *code; /* stable machine-readable code */
    char message[256];
};

/* Fills e and returns false: for one-line refusals. */
bool request_fail(struct api_error *e, int http, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

struct listing_settings {
    int64_t default_price;
    char currency[4];
    int min_nights;
    int max_nights;
};

struct booking_request {
    int32_t check_in;
    int32_t check_out;
    uint64_t guest_id;
};

enum calendar_action { CALENDAR_BLOCK, CALENDAR_UNBLOCK, CALENDAR_SET_PRICE };

struct calendar_request {
    int32_t from;
    int32_t to;
    enum calendar_action action;
    int64_t price; /* set_price only */
};

struct search_request {
    int32_t check_in;
    int32_t check_out;
    size_t n;
    uint64_t *listing_ids; /* malloc'd; caller frees */
};

/* {"listing_ids":[...],"check_in":..,"check_out":..} with 1..max ids. */
bool request_parse_search(const char *body, size_t len, size_t max, int32_t today,
                          struct search_request *out, struct api_error *e);

/* A positive decimal id of at most 19 digits, below 2^63, with no sign,
 * spaces or leading zero. */
bool request_parse_id(const char *s, size_t len, uint64_t *id);

bool request_parse_listing(const char *body, size_t len, struct listing_settings *out,
                           struct api_error *e);
bool request_parse_booking(const char *body, size_t len, struct booking_request *out,
                           struct api_error *e);
bool request_parse_calendar(const char *body, size_t len, int32_t today,
                            struct calendar_request *out, struct api_error *e);

/* from/to query values (NULL when absent) of an availability read. */
bool request_parse_range(const char *from, const char *to, int32_t *dfrom, int32_t *dto,
                         struct api_error *e);

/* If-Match: "<version>" (quotes optional) or * (any version: *version = 0);
 * false on anything else. A number that no listing's version can be (0, or
 * past 2^63 - 1) is a version still: REQUEST_VERSION_NONE, which matches
 * none (412, not 400). */
#define REQUEST_VERSION_NONE ((uint64_t)INT64_MAX)
bool request_parse_if_match(const char *s, uint64_t *version);

#endif
