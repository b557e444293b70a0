/* Calendar dates as days since 1970-01-01; the civil-date algorithms are
 * Howard Hinnant's (exact for the whole proleptic Gregorian calendar). */
#include "common/date.h"

#include <time.h>

int32_t
date_from_ymd(int y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3u : 9u)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int32_t)(era * 146097 + (int)doe - 719468);
}

void
date_to_ymd(int32_t days, int *y, unsigned *m, unsigned *d)
{
    int z = days + 719468;
    const int era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int yy = (int)yoe + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}

static bool
is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned
days_in_month(int y, unsigned m)
{
    static const unsigned dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

static bool
digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

bool
date_parse(const char *s, size_t len, int32_t *days)
{
    unsigned y, m, d;
    if (len != 10 || s[4] != '-' || s[7] != '-')
        return false;
    if (!digits(s, 4, &y) || !digits(s + 5, 2, &m) || !digits(s + 8, 2, &d))
        return false;
    if (y < 1970 || y > 9998 || m < 1 || m > 12 || d < 1 || d > days_in_month((int)y, m))
        return false;
    *days = date_from_ymd((int)y, m, d);
    return true;
}

void
date_format(int32_t days, char *buf)
{
    int y;
    unsigned m, d;
    date_to_ymd(days, &y, &m, &d);
    unsigned yy = (unsigned)y % 10000;
    buf[0] = (char)('0' + yy / 1000);
    buf[1] = (char)('0' + yy / 100 % 10);
    buf[2] = (char)('0' + yy / 10 % 10);
    buf[3] = (char)('0' + yy % 10);
    buf[4] = '-';
    buf[5] = (char)('0' + m / 10);
    buf[6] = (char)('0' + m % 10);
    buf[7] = '-';
    buf[8] = (char)('0' + d / 10);
    buf[9] = (char)('0' + d % 10);
    buf[10] = '\0';
}

int32_t
date_month_first(int32_t day)
{
    int y;
    unsigned m, d;
    date_to_ymd(day, &y, &m, &d);
    return date_from_ymd(y, m, 1);
}

int32_t
date_next_month(int32_t day)
{
    int y;
    unsigned m, d;
    date_to_ymd(day, &y, &m, &d);
    return m == 12 ? date_from_ymd(y + 1, 1, 1) : date_from_ymd(y, m + 1, 1);
}

int32_t
date_today(void)
{
    return (int32_t)(time(NULL) / 86400);
}
