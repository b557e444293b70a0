/* MariaDB GTID positions ("domain-server-seq[,...]", one entry per
 * replication domain): parse, format, advance. Pure. */
#ifndef CAL_GTID_H
#define CAL_GTID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define GTID_MAX_DOMAINS 32
#define GTID_POS_TEXT_MAX (GTID_MAX_DOMAINS * 44)

struct gtid {
    uint32_t domain_id;
    uint32_t server_id;
    uint64_t seq;
};

struct gtid_pos {
    size_t n;
    struct gtid e[GTID_MAX_DOMAINS]; /* sorted by domain_id, one per domain */
};

/* Parses "" (empty position) or "d-s-n,d-s-n...". Whitespace around entries
 * is allowed; a domain listed twice is an error. */
cal_status gtid_pos_parse(struct gtid_pos *pos, const char *text, char *err, size_t errlen);

/* Writes the position in @@gtid_binlog_pos syntax; CAL_EINVAL if it does not fit. */
cal_status gtid_pos_format(const struct gtid_pos *pos, char *buf, size_t size);

/* Records g as the latest transaction of its domain. CAL_EINVAL when the
 * position already holds GTID_MAX_DOMAINS other domains. */
cal_status gtid_pos_update(struct gtid_pos *pos, const struct gtid *g);

bool gtid_pos_equal(const struct gtid_pos *a, const struct gtid_pos *b);

#endif
