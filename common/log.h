/* One logfmt line per event on stderr: level=... msg="..." key=value. Thread-safe. */
#ifndef CAL_LOG_H
#define CAL_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* Would a line of this level be written? To skip work done only for it. */
bool log_enabled(enum log_level level);
/* Maps a syslog severity (0 emerg .. 7 debug), as libraries report it. */
enum log_level log_level_from_syslog(int severity);

/* Parses "debug|info|warn|error"; returns -1 when unknown. */
int log_level_parse(const char *s);

/* log_level_parse as a config check (struct conf_item): CAL_EINVAL, with
 * why, when s is not a level. */
cal_status log_level_check(const char *s, char *why, size_t whylen);

/* fmt continues the line after msg: log_write(LOG_INFO, "listening", "port=%d", port). */
void log_write(enum log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...) log_write(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) log_write(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_write(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_ERROR, msg, __VA_ARGS__)

#endif
