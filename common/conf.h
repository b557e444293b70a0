/* Table-driven INI configuration (libinih): one table of keys with type,
 * default, range and help; --help and the sample config are printed from it. */
#ifndef CAL_CONF_H
#define CAL_CONF_H

#include <stddef.h>
#include <stdio.h>

#include "common/status.h"

enum conf_type { CONF_STR, CONF_INT, CONF_BOOL };

struct conf_item {
    const char *section;
    const char *key;
    enum conf_type type;
    size_t offset; /* into the target struct */
    size_t size;   /* CONF_STR: buffer size; CONF_INT: sizeof the integer (4 or 8) */
    long long min, max;
    const char *dflt;
    const char *help;
    /* CONF_STR: a check of the value beyond its length (NULL: none), so
     * that a bad value is refused with its file and line; why says what
     * is wrong with it. */
    cal_status (*check)(const char *value, char *why, size_t whylen);
};

#define CONF_STR_ITEM(sec, k, type_, field, dflt, help)                                            \
    {                                                                                              \
        sec, k, CONF_STR, offsetof(type_, field), sizeof(((type_ *)0)->field), 0, 0, dflt, help,   \
            NULL                                                                                   \
    }
#define CONF_STR_CHECK_ITEM(sec, k, type_, field, dflt, check, help)                               \
    {                                                                                              \
        sec, k, CONF_STR, offsetof(type_, field), sizeof(((type_ *)0)->field), 0, 0, dflt, help,   \
            check                                                                                  \
    }
#define CONF_INT_ITEM(sec, k, type_, field, lo, hi, dflt, help)                                    \
    {                                                                                              \
        sec, k, CONF_INT, offsetof(type_, field), sizeof(((type_ *)0)->field), lo, hi, dflt, help, \
            NULL                                                                                   \
    }
#define CONF_BOOL_ITEM(sec, k, type_, field, dflt, help)                                           \
    {                                                                                              \
        sec, k, CONF_BOOL, offsetof(type_, field), sizeof(((type_ *)0)->field), 0, 1, dflt, help,  \
            NULL                                                                                   \
    }

/* A check of CONF_STR_CHECK_ITEM: value is an IPv4 address. */
cal_status conf_check_ipv4(const char *value, char *why, size_t whylen);

/* A check of CONF_STR_CHECK_ITEM: value, a path the program opens later
 * (a CA bundle, say), names a regular file it can read now, so a typo
 * fails at load (and --check-config) rather than at the first use. An
 * empty value (not set) passes. */
cal_status conf_check_readable_file(const char *value, char *why, size_t whylen);

/* A check of CONF_STR_CHECK_ITEM for a password_file: a regular file this
 * process can read, with no group or other permission bits. An empty value
 * passes. */
cal_status conf_check_secret_file(const char *value, char *why, size_t whylen);

/* Sets every item of target to its default. */
void conf_defaults(const struct conf_item *items, size_t n, void *target);

/* Sets one key from text, validating type and range. */
cal_status conf_set(const struct conf_item *items, size_t n, void *target, const char *section,
                    const char *key, const char *value, char *err, size_t errlen);

/* Loads path over the current values. Unknown sections/keys, bad values and
 * out-of-range numbers are errors naming the file and line. */
cal_status conf_load(const struct conf_item *items, size_t n, void *target, const char *path,
                     char *err, size_t errlen);

/* Annotated sample config with defaults, ranges and help. */
void conf_print_sample(const struct conf_item *items, size_t n, FILE *out);

#endif
