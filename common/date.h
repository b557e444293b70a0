/* Calendar dates as days since 1970-01-01 (proleptic Gregorian, UTC). */
#ifndef CAL_DATE_H
#define CAL_DATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Strictly "YYYY-MM-DD" (len bytes, no NUL needed), years 1970..9998, a real
 * calendar day. Returns false for anything else. Not 9999: a range is read
 * and cached by whole months, and the month after December 9999 is past
 * the last date MariaDB's FROM_DAYS() gives. */
bool date_parse(const char *s, size_t len, int32_t *days);

/* Writes "YYYY-MM-DD" and a NUL into buf (at least 11 bytes). */
void date_format(int32_t days, char *buf);

int32_t date_from_ymd(int y, unsigned m, unsigned d);
void date_to_ymd(int32_t days, int *y, unsigned *m, unsigned *d);

/* The first day of the month containing day, and of the month after it. */
int32_t date_month_first(int32_t day);
int32_t date_next_month(int32_t day);

/* Today in UTC. */
int32_t date_today(void);

#endif
