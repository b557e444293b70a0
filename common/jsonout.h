/* A small JSON writer for hot paths: calendard's read answers (availability,
 * search) and the relay's change events are written straight into one
 * buffer instead of building a jansson tree per value. */
#ifndef CAL_JSONOUT_H
#define CAL_JSONOUT_H

#include <stddef.h>
#include <stdint.h>

struct jsonout {
    char *p;
    size_t len, cap;
};

void jsonout_init(struct jsonout *j, size_t cap);
/* Appends text as is: the caller guarantees it is valid JSON syntax. */
void jsonout_raw(struct jsonout *j, const char *s, size_t len);
void jsonout_lit(struct jsonout *j, const char *s); /* NUL-terminated raw text */
void jsonout_int(struct jsonout *j, int64_t v);
void jsonout_u64(struct jsonout *j, uint64_t v);
/* A JSON string of (s, len): quotes, backslashes and control characters
 * escaped, UTF-8 kept; bytes that are not valid UTF-8 become '?'. */
void jsonout_str(struct jsonout *j, const char *s, size_t len);
void jsonout_date(struct jsonout *j, int32_t days); /* "YYYY-MM-DD" with quotes */
/* The buffer, NUL-terminated, malloc'd; the caller frees it. */
char *jsonout_finish(struct jsonout *j, size_t *len);

#endif
