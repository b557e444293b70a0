/* libFuzzer target: every decoder of outside input that needs no server —
 * request bodies of each endpoint, ids, If-Match, dates, cache values
 * (memcached is shared, its values are input too), CDC change events and their
 * invalidation hint headers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/cacheval.h"
#include "calendard/request.h"
#include "cdc/invalidate.h"
#include "common/date.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    struct api_error e;
    struct listing_settings ls;
    struct booking_request br;
    struct calendar_request cr;
    struct search_request sr;
    request_parse_listing(s, size, &ls, &e);
    request_parse_booking(s, size, &br, &e);
    request_parse_calendar(s, size, 20000, &cr, &e);
    if (request_parse_search(s, size, 1000, 20000, &sr, &e))
        free(sr.listing_ids);
    uint64_t id;
    int32_t d;
    request_parse_id(s, size, &id);
    date_parse(s, size, &d);
    char *z = strndup(s, size);
    request_parse_if_match(z, &id);
    int32_t f, t;
    request_parse_range(z, z, &f, &t, &e);
    struct listing l;
    cacheval_decode_listing(s, size, &l);
    struct night_row rows[31];
    size_t n = 0;
    cacheval_decode_month(s, size, 20000, rows, &n, 31, NULL);
    struct invalidate_event ev;
    char err[256];
    invalidate_decode("calendar.calendar_shard0.nights", s, size, &ev, err, sizeof(err));
    invalidate_decode(NULL, s, size, &ev, err, sizeof(err));
    /* The relay's hint header: not NUL-terminated, as librdkafka hands it. */
    invalidate_decode_hint(s, size, &ev, err, sizeof(err));
    free(z);
    return 0;
}
