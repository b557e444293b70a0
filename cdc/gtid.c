/* GTID position text <-> struct, kept sorted by domain. */
#include "cdc/gtid.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool
parse_u64(const char **p, uint64_t max, uint64_t *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || v > max)
        return false;
    *out = v;
    *p = end;
    return true;
}

cal_status
gtid_pos_parse(struct gtid_pos *pos, const char *text, char *err, size_t errlen)
{
    memset(pos, 0, sizeof(*pos));
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0')
        return CAL_OK;
    for (;;) {
        uint64_t d, s, n;
        while (isspace((unsigned char)*p))
            p++;
        if (!parse_u64(&p, UINT32_MAX, &d) || *p++ != '-' || !parse_u64(&p, UINT32_MAX, &s) ||
            *p++ != '-' || !parse_u64(&p, UINT64_MAX, &n)) {
            snprintf(err, errlen, "bad GTID position '%.100s' (want domain-server-seq[,...])",
                     text);
            return CAL_EINVAL;
        }
        for (size_t i = 0; i < pos->n; i++) {
            if (pos->e[i].domain_id == d) {
                snprintf(err, errlen, "GTID position '%.100s' lists domain %" PRIu64 " twice", text,
                         d);
                return CAL_EINVAL;
            }
        }
        struct gtid g = {.domain_id = (uint32_t)d, .server_id = (uint32_t)s, .seq = n};
        if (gtid_pos_update(pos, &g) != CAL_OK) {
            snprintf(err, errlen, "GTID position has more than %d domains", GTID_MAX_DOMAINS);
            return CAL_EINVAL;
        }
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\0')
            return CAL_OK;
        if (*p++ != ',') {
            snprintf(err, errlen, "bad GTID position '%.100s' (want domain-server-seq[,...])",
                     text);
            return CAL_EINVAL;
        }
    }
}

cal_status
gtid_pos_format(const struct gtid_pos *pos, char *buf, size_t size)
{
    size_t off = 0;
    if (size == 0)
        return CAL_EINVAL;
    buf[0] = '\0';
    for (size_t i = 0; i < pos->n; i++) {
        int n = snprintf(buf + off, size - off, "%s%" PRIu32 "-%" PRIu32 "-%" PRIu64, i ? "," : "",
                         pos->e[i].domain_id, pos->e[i].server_id, pos->e[i].seq);
        if (n < 0 || (size_t)n >= size - off)
            return CAL_EINVAL;
        off += (size_t)n;
    }
    return CAL_OK;
}

cal_status
gtid_pos_update(struct gtid_pos *pos, const struct gtid *g)
{
    size_t i = 0;
    while (i < pos->n && pos->e[i].domain_id < g->domain_id)
        i++;
    if (i < pos->n && pos->e[i].domain_id == g->domain_id) {
        pos->e[i] = *g;
        return CAL_OK;
    }
    if (pos->n == GTID_MAX_DOMAINS)
        return CAL_EINVAL;
    memmove(&pos->e[i + 1], &pos->e[i], (pos->n - i) * sizeof(pos->e[0]));
    pos->e[i] = *g;
    pos->n++;
    return CAL_OK;
}

bool
gtid_pos_equal(const struct gtid_pos *a, const struct gtid_pos *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (a->e[i].domain_id != b->e[i].domain_id || a->e[i].server_id != b->e[i].server_id ||
            a->e[i].seq != b->e[i].seq)
            return false;
    return true;
}
