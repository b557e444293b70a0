/* Decoding and validation of API inputs with stable error codes. */
#include "calendard/request.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/date.h"
#include "common/util.h"

bool
request_fail(struct api_error *e, int http, const char *code, const char *fmt, ...)
{
    va_list ap;
    e->http = http;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    /* Messages may quote the client's bytes (a key, a JSON parser's token),
     * cut anywhere by the precision or the buffer: printable ASCII only, so
     * the error body is always valid JSON text. */
    cal_printable_ascii(e->message);
    return false;
}

bool
request_parse_id(const char *s, size_t len, uint64_t *id)
{
    uint64_t v = 0;
    /* "007" is malformed, not another name for 7 (a second path to one
     * resource, a second entry in a cache in front of the daemon). */
    if (len == 0 || len > 19 || s[0] == '0')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) /* v > 0: its first digit is not 0 */
        return false;
    *id = v;
    return true;
}

/* A field of a request object: its JSON name, whether it is required, and
 * where the decoded value goes. Decoding is table-driven so every body gets
 * the same checks for unknown fields, missing fields and wrong types. */
enum field_kind { F_INT, F_DATE, F_STRING, F_IDS };

struct id_list {
    uint64_t *ids;
    size_t n, max;
};

struct field {
    const char *name;
    enum field_kind kind;
    bool required;
    long long min, max; /* F_INT */
    void *out;          /* int64_t*, int32_t* (date) or char* (string) */
    size_t out_size;    /* F_STRING buffer */
    bool present;
};

/* Whether [p, p+len) is one JSON number (RFC 8259); *real tells a fraction
 * or an exponent. */
static bool
is_json_number(const char *p, size_t len, bool *real)
{
    size_t i = len > 0 && p[0] == '-';
    *real = false;
    if (i < len && p[i] == '0')
        i++;
    else if (i < len && p[i] >= '1' && p[i] <= '9')
        while (i < len && p[i] >= '0' && p[i] <= '9')
            i++;
    else
        return false;
    if (i < len && p[i] == '.') {
        size_t digits = ++i;
        while (i < len && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == digits)
            return false;
        *real = true;
    }
    if (i < len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < len && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t digits = i;
        while (i < len && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == digits)
            return false;
        *real = true;
    }
    return i == len;
}

/* Whether [p, p+len) is a JSON number jansson cannot hold: an integer past
 * json_int_t, or a real past the range of a double (as jansson decides). */
static bool
is_huge_number(const char *p, size_t len)
{
    bool real;
    if (!is_json_number(p, len, &real))
        return false;
    char *s = cal_malloc(len + 1);
    memcpy(s, p, len);
    s[len] = '\0';
    errno = 0;
    bool huge;
    if (real) {
        double d = strtod(s, NULL);
        huge = errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL);
    } else {
        (void)strtoll(s, NULL, 10);
        huge = errno == ERANGE;
    }
    free(s);
    return huge;
}

static bool
is_token_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '+' ||
           c == '-' || c == '.';
}

/* A copy of body (len bytes, caller frees) with every number jansson cannot
 * hold, outside strings, replaced by [] and spaces: the same length, so a
 * decoding error keeps its line and column; a value that no field takes, and
 * no object (a body that is such a number is still not an object). Numbers
 * so large are at least five characters ("1e309"). */
static char *
mask_huge_numbers(const char *body, size_t len)
{
    char *out = cal_malloc(len + 1);
    bool in_string = false;
    memcpy(out, body, len);
    for (size_t i = 0; i < len;) {
        if (in_string) {
            if (body[i] == '\\')
                i++;
            else if (body[i] == '"')
                in_string = false;
            i++;
            continue;
        }
        if (body[i] == '"') {
            in_string = true;
            i++;
            continue;
        }
        size_t run = 0;
        while (i + run < len && is_token_char(body[i + run]))
            run++;
        if (run >= 2 && is_huge_number(body + i, run)) {
            memset(out + i, ' ', run);
            memcpy(out + i, "[]", 2);
        }
        i += run > 0 ? run : 1;
    }
    return out;
}

static bool
decode_object(const char *body, size_t len, struct field *fields, size_t nfields,
              struct api_error *e)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    bool ok = false, masked = false;
    /* jansson stops at a number it cannot hold, before it has seen the rest
     * of the body. Such a number is JSON, only not a value any field takes:
     * decoded again with it masked, the body answers with its own error
     * (invalid_json, unknown_field, ...), and the number's field, if known,
     * with invalid_field. */
    if (root == NULL && json_error_code(&jerr) == json_error_numeric_overflow) {
        char *copy = mask_huge_numbers(body, len);
        root = json_loadb(copy, len, JSON_REJECT_DUPLICATES, &jerr);
        free(copy);
        masked = true;
    }
    if (root == NULL)
        return request_fail(e, 400, "invalid_json", "invalid JSON at line %d column %d: %s",
                            jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root)) {
        request_fail(e, 400, "invalid_json", "the body must be a JSON object");
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        struct field *f = NULL;
        for (size_t i = 0; i < nfields; i++)
            if (strcmp(fields[i].name, key) == 0)
                f = &fields[i];
        if (f == NULL) {
            request_fail(e, 400, "unknown_field", "unknown field '%.64s'", key);
            goto out;
        }
        f->present = true;
        switch (f->kind) {
        case F_INT: {
            if (masked && json_is_array(val)) { /* a masked number */
                request_fail(e, 400, "invalid_field", "'%s' must be in %lld..%lld", f->name, f->min,
                             f->max);
                goto out;
            }
            if (!json_is_integer(val)) {
                request_fail(e, 400, "invalid_field", "'%s' must be an integer", f->name);
                goto out;
            }
            json_int_t v = json_integer_value(val);
            if (v < f->min || v > f->max) {
                request_fail(e, 400, "invalid_field", "'%s' must be in %lld..%lld", f->name, f->min,
                             f->max);
                goto out;
            }
            *(int64_t *)f->out = v;
            break;
        }
        case F_DATE:
            if (!json_is_string(val)) {
                request_fail(e, 400, "invalid_field", "'%s' must be a date string YYYY-MM-DD",
                             f->name);
                goto out;
            }
            if (!date_parse(json_string_value(val), json_string_length(val), f->out)) {
                request_fail(e, 400, "invalid_date", "'%s' must be a real date YYYY-MM-DD",
                             f->name);
                goto out;
            }
            break;
        case F_IDS: {
            struct id_list *list = f->out;
            size_t i;
            json_t *elem;
            if (!json_is_array(val) || json_array_size(val) == 0 ||
                json_array_size(val) > list->max) {
                request_fail(e, 400, "invalid_field", "'%s' must be an array of 1 to %zu ids",
                             f->name, list->max);
                goto out;
            }
            list->ids = cal_malloc(json_array_size(val) * sizeof(*list->ids));
            json_array_foreach(val, i, elem)
            {
                if (!json_is_integer(elem) || json_integer_value(elem) <= 0) {
                    request_fail(e, 400, "invalid_field", "'%s' must hold positive integer ids",
                                 f->name);
                    goto out;
                }
                list->ids[i] = (uint64_t)json_integer_value(elem);
            }
            list->n = json_array_size(val);
            break;
        }
        case F_STRING:
            if (!json_is_string(val) || json_string_length(val) >= f->out_size) {
                request_fail(e, 400, "invalid_field", "'%s' must be a string of at most %zu bytes",
                             f->name, f->out_size - 1);
                goto out;
            }
            memcpy(f->out, json_string_value(val), json_string_length(val) + 1);
            break;
        }
    }
    for (size_t i = 0; i < nfields; i++) {
        if (fields[i].required && !fields[i].present) {
            request_fail(e, 400, "missing_field", "'%s' is required", fields[i].name);
            goto out;
        }
    }
    ok = true;
out:
    json_decref(root);
    return ok;
}

bool
request_parse_listing(const char *body, size_t len, struct listing_settings *out,
                      struct api_error *e)
{
    int64_t price = 0, min_n = 0, max_n = 0;
    char currency[8] = "";
    struct field fields[] = {
        {"default_price", F_INT, true, 0, BOOKING_MAX_PRICE, &price, 0, false},
        {"currency", F_STRING, true, 0, 0, currency, sizeof(currency), false},
        {"min_nights", F_INT, true, 1, BOOKING_MAX_NIGHTS - 1, &min_n, 0, false},
        {"max_nights", F_INT, true, 1, BOOKING_MAX_NIGHTS - 1, &max_n, 0, false},
    };
    if (!decode_object(body, len, fields, 4, e))
        return false;
    if (strlen(currency) != 3 || currency[0] < 'A' || currency[0] > 'Z' || currency[1] < 'A' ||
        currency[1] > 'Z' || currency[2] < 'A' || currency[2] > 'Z')
        return request_fail(e, 400, "invalid_field",
                            "'currency' must be three upper-case letters (ISO 4217)");
    if (min_n > max_n)
        return request_fail(e, 400, "invalid_field", "'min_nights' is above 'max_nights'");
    out->default_price = price;
    memcpy(out->currency, currency, 4);
    out->min_nights = (int)min_n;
    out->max_nights = (int)max_n;
    return true;
}

bool
request_parse_booking(const char *body, size_t len, struct booking_request *out,
                      struct api_error *e)
{
    int64_t guest = 0;
    struct field fields[] = {
        {"check_in", F_DATE, true, 0, 0, &out->check_in, 0, false},
        {"check_out", F_DATE, true, 0, 0, &out->check_out, 0, false},
        {"guest_id", F_INT, true, 1, BOOKING_MAX_GUEST_ID, &guest, 0, false},
    };
    if (!decode_object(body, len, fields, 3, e))
        return false;
    out->guest_id = (uint64_t)guest;
    return true;
}

bool
request_parse_calendar(const char *body, size_t len, int32_t today, struct calendar_request *out,
                       struct api_error *e)
{
    char action[16] = "";
    int64_t price = 0;
    struct field fields[] = {
        {"from", F_DATE, true, 0, 0, &out->from, 0, false},
        {"to", F_DATE, true, 0, 0, &out->to, 0, false},
        {"action", F_STRING, true, 0, 0, action, sizeof(action), false},
        {"price", F_INT, false, 0, BOOKING_MAX_PRICE, &price, 0, false},
    };
    if (!decode_object(body, len, fields, 4, e))
        return false;
    if (strcmp(action, "block") == 0)
        out->action = CALENDAR_BLOCK;
    else if (strcmp(action, "unblock") == 0)
        out->action = CALENDAR_UNBLOCK;
    else if (strcmp(action, "set_price") == 0)
        out->action = CALENDAR_SET_PRICE;
    else
        return request_fail(e, 400, "invalid_field",
                            "'action' must be block, unblock or set_price");
    bool has_price = fields[3].present;
    if (out->action == CALENDAR_SET_PRICE && !has_price)
        return request_fail(e, 400, "missing_field", "'price' is required for set_price");
    if (out->action != CALENDAR_SET_PRICE && has_price)
        return request_fail(e, 400, "invalid_field", "'price' is only for set_price");
    out->price = price;
    if (out->to <= out->from)
        return request_fail(e, 400, "invalid_range", "'to' must be after 'from'");
    if (out->to - out->from > BOOKING_MAX_NIGHTS)
        return request_fail(e, 400, "invalid_range", "at most %d nights at once",
                            BOOKING_MAX_NIGHTS);
    if (out->from < today)
        return request_fail(e, 400, "past_date", "'from' is in the past");
    return true;
}

bool
request_parse_search(const char *body, size_t len, size_t max, int32_t today,
                     struct search_request *out, struct api_error *e)
{
    struct id_list list = {.max = max};
    struct field fields[] = {
        {"listing_ids", F_IDS, true, 0, 0, &list, 0, false},
        {"check_in", F_DATE, true, 0, 0, &out->check_in, 0, false},
        {"check_out", F_DATE, true, 0, 0, &out->check_out, 0, false},
    };
    out->listing_ids = NULL;
    out->n = 0;
    bool ok = decode_object(body, len, fields, 3, e);
    if (ok && out->check_out <= out->check_in)
        ok = request_fail(e, 400, "invalid_range", "check_out must be after check_in");
    if (ok && out->check_out - out->check_in > BOOKING_MAX_NIGHTS)
        ok = request_fail(e, 400, "invalid_range", "at most %d nights", BOOKING_MAX_NIGHTS);
    if (ok && out->check_in < today)
        ok = request_fail(e, 400, "past_date", "check_in is in the past");
    if (!ok) {
        free(list.ids);
        return false;
    }
    out->listing_ids = list.ids;
    out->n = list.n;
    return true;
}

bool
request_parse_range(const char *from, const char *to, int32_t *dfrom, int32_t *dto,
                    struct api_error *e)
{
    if (from == NULL || to == NULL)
        return request_fail(e, 400, "invalid_query", "query needs from=YYYY-MM-DD&to=YYYY-MM-DD");
    if (!date_parse(from, strlen(from), dfrom) || !date_parse(to, strlen(to), dto))
        return request_fail(e, 400, "invalid_query", "from and to must be real dates YYYY-MM-DD");
    if (*dto <= *dfrom)
        return request_fail(e, 400, "invalid_range", "'to' must be after 'from'");
    if (*dto - *dfrom > BOOKING_MAX_NIGHTS)
        return request_fail(e, 400, "invalid_range", "at most %d nights at once",
                            BOOKING_MAX_NIGHTS);
    return true;
}

bool
request_parse_if_match(const char *s, uint64_t *version)
{
    size_t len = strlen(s);
    if (len == 1 && s[0] == '*') {
        *version = 0; /* any version: unconditional */
        return true;
    }
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s++;
        len -= 2;
    }
    if (len == 0 || strspn(s, "0123456789") < len)
        return false;
    while (len > 1 && s[0] == '0') { /* "05" is version 5, however many zeros */
        s++;
        len--;
    }
    if (!request_parse_id(s, len, version))
        *version = REQUEST_VERSION_NONE; /* 0, or past 2^63 - 1 */
    return true;
}
