/* calendard's configuration: one table of keys with type, default, range
 * and help, from which --sample-config and the checks come. */
#ifndef CAL_CALENDARD_CONFIG_H
#define CAL_CALENDARD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "calendard/avail.h"
#include "calendard/http.h"
#include "common/conf.h"
#include "common/db.h"

struct calendard_conf {
    struct http_conf http;
    struct db_conf catalog;
    struct db_conf shard;
    int pool_size;
    int pool_wait_ms;
    int refresh_interval_ms;
    int max_attempts;
    int backoff_base_ms;
    int backoff_max_ms;
    int deadline_ms;
    int breaker_threshold;
    int breaker_cooldown_ms;
    int max_search_listings;
    int batch_max;
    int batch_lanes;
    struct avail_conf avail;
    char log_level[16];
};

/* Defaults, then path over them, then the password files; every bad key or
 * value is an error naming the file and line. */
cal_status config_load(const char *path, struct calendard_conf *conf, char *err, size_t errlen);

/* The table of every key, for --sample-config. */
extern const struct conf_item config_items[];
extern const size_t config_nitems;

#endif
