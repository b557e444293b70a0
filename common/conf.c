/* Table-driven INI configuration on top of libinih. */
#include "common/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

cal_status
conf_check_ipv4(const char *value, char *why, size_t whylen)
{
    struct in_addr addr;
    if (inet_pton(AF_INET, value, &addr) == 1)
        return CAL_OK;
    snprintf(why, whylen, "'%s' is not an IPv4 address", value);
    return CAL_EINVAL;
}

cal_status
conf_check_readable_file(const char *value, char *why, size_t whylen)
{
    if (value[0] == '\0')
        return CAL_OK;
    /* O_NONBLOCK: a FIFO opens at once (and is refused below) instead of
     * hanging the load until someone writes to it. */
    int fd = open(value, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(why, whylen, "cannot read %s: %s", value, strerror(errno));
        return CAL_EINVAL;
    }
    struct stat st;
    bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!regular) {
        snprintf(why, whylen, "%s is not a regular file", value);
        return CAL_EINVAL;
    }
    return CAL_OK;
}

cal_status
conf_check_secret_file(const char *value, char *why, size_t whylen)
{
    cal_status rc = conf_check_readable_file(value, why, whylen);
    struct stat st;
    if (rc != CAL_OK || value[0] == '\0')
        return rc;
    if (stat(value, &st) != 0 || (st.st_mode & 077) != 0) {
        snprintf(why, whylen, "%s must have no group or other permission bits (chmod 600)", value);
        return CAL_EINVAL;
    }
    return CAL_OK;
}

static cal_status
set_item(const struct conf_item *it, void *target, const char *value, char *err, size_t errlen)
{
    char *field = (char *)target + it->offset;
    switch (it->type) {
    case CONF_STR:
        if (strlen(value) >= it->size) {
            snprintf(err, errlen, "[%s] %s: value longer than %zu bytes", it->section, it->key,
                     it->size - 1);
            return CAL_EINVAL;
        }
        if (it->check != NULL) {
            char why[640]; /* room for a path value and the reason */
            if (it->check(value, why, sizeof(why)) != CAL_OK) {
                snprintf(err, errlen, "[%s] %s: %s", it->section, it->key, why);
                return CAL_EINVAL;
            }
        }
        cal_strlcpy(field, value, it->size);
        return CAL_OK;
    case CONF_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0') {
            snprintf(err, errlen, "[%s] %s: '%s' is not an integer", it->section, it->key, value);
            return CAL_EINVAL;
        }
        if (v < it->min || v > it->max) {
            snprintf(err, errlen, "[%s] %s: %lld is outside %lld..%lld", it->section, it->key, v,
                     it->min, it->max);
            return CAL_EINVAL;
        }
        if (it->size == sizeof(int64_t))
            *(int64_t *)field = v;
        else
            *(int *)field = (int)v;
        return CAL_OK;
    }
    case CONF_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 || strcmp(value, "1") == 0)
            *(bool *)field = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 || strcmp(value, "0") == 0)
            *(bool *)field = false;
        else {
            snprintf(err, errlen, "[%s] %s: '%s' is not true/false", it->section, it->key, value);
            return CAL_EINVAL;
        }
        return CAL_OK;
    }
    return CAL_EINVAL;
}

void
conf_defaults(const struct conf_item *items, size_t n, void *target)
{
    char err[256];
    for (size_t i = 0; i < n; i++) {
        cal_status st = set_item(&items[i], target, items[i].dflt, err, sizeof(err));
        (void)st;
    }
}

cal_status
conf_set(const struct conf_item *items, size_t n, void *target, const char *section,
         const char *key, const char *value, char *err, size_t errlen)
{
    bool section_known = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(items[i].section, section) != 0)
            continue;
        section_known = true;
        if (strcmp(items[i].key, key) == 0)
            return set_item(&items[i], target, value, err, errlen);
    }
    if (!section_known)
        snprintf(err, errlen, "unknown section [%s]", section);
    else
        snprintf(err, errlen, "unknown key '%s' in [%s]", key, section);
    return CAL_EINVAL;
}

struct load_ctx {
    const struct conf_item *items;
    size_t n;
    void *target;
    bool *seen; /* [n]: keys set by the file */
    char err[768];
    bool failed;
};

static int
on_ini_value(void *user, const char *section, const char *key, const char *value)
{
    struct load_ctx *ctx = user;
    if (ctx->failed)
        return 0;
    for (size_t i = 0; i < ctx->n; i++) {
        if (strcmp(ctx->items[i].section, section) != 0 || strcmp(ctx->items[i].key, key) != 0)
            continue;
        if (ctx->seen[i]) {
            /* inih also hands an indented line on as more of the key above. */
            snprintf(ctx->err, sizeof(ctx->err),
                     "[%s] %s is set twice (or an indented line continues it)", section, key);
            ctx->failed = true;
            return 0;
        }
        ctx->seen[i] = true;
    }
    if (conf_set(ctx->items, ctx->n, ctx->target, section, key, value, ctx->err,
                 sizeof(ctx->err)) != CAL_OK) {
        ctx->failed = true;
        return 0;
    }
    return 1;
}

cal_status
conf_load(const struct conf_item *items, size_t n, void *target, const char *path, char *err,
          size_t errlen)
{
    struct load_ctx ctx = {.items = items, .n = n, .target = target};
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open config %s: %s", path, strerror(errno));
        return CAL_EINVAL;
    }
    ctx.seen = cal_calloc(n ? n : 1, sizeof(*ctx.seen));
    int rc = ini_parse_file(f, on_ini_value, &ctx);
    fclose(f);
    free(ctx.seen);
    if (ctx.failed) {
        /* inih returns the line of the first value the handler refused. */
        snprintf(err, errlen, "%s:%d: %s", path, rc, ctx.err);
        return CAL_EINVAL;
    }
    if (rc != 0) {
        snprintf(err, errlen, "%s:%d: syntax error", path, rc);
        return CAL_EINVAL;
    }
    return CAL_OK;
}

#define SAMPLE_WIDTH 96

/* "# " lines of text wrapped at spaces to SAMPLE_WIDTH columns (a word
 * longer than that gets a line of its own). */
static void
print_comment(FILE *out, const char *text)
{
    const char *p = text;
    while (*p != '\0') {
        size_t room = SAMPLE_WIDTH - 2, len = strlen(p);
        size_t cut = len;
        if (len > room) {
            cut = room;
            while (cut > 0 && p[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = strcspn(p, " ");
        }
        fprintf(out, "# %.*s\n", (int)cut, p);
        p += cut;
        p += strspn(p, " ");
    }
}

void
conf_print_sample(const struct conf_item *items, size_t n, FILE *out)
{
    /* Comment lines wrapped at SAMPLE_WIDTH: libinih reads lines of at most
     * 200 bytes and a longer one, comment or not, is a syntax error. */
    const char *section = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct conf_item *it = &items[i];
        if (section == NULL || strcmp(section, it->section) != 0) {
            fprintf(out, "%s[%s]\n", section ? "\n" : "", it->section);
            section = it->section;
        }
        char help[1024];
        if (it->type == CONF_INT)
            snprintf(help, sizeof(help), "%s (%lld..%lld)", it->help, it->min, it->max);
        else if (it->type == CONF_BOOL)
            snprintf(help, sizeof(help), "%s (true|false)", it->help);
        else
            snprintf(help, sizeof(help), "%s", it->help);
        print_comment(out, help);
        fprintf(out, "%s = %s\n", it->key, it->dflt);
    }
}
