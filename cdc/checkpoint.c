/* Durable checkpoint file: a few KEY=VALUE lines, replaced atomically. */
#include "cdc/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

cal_status
checkpoint_load(const char *path, struct checkpoint *cp, char *err, size_t errlen)
{
    memset(cp, 0, sizeof(*cp));
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return CAL_ENOTFOUND;
        snprintf(err, errlen, "cannot open checkpoint %s: %s", path, strerror(errno));
        return CAL_ERR;
    }
    char line[GTID_POS_TEXT_MAX + 64];
    int lineno = 0;
    bool have_gtid = false;
    cal_status rc = CAL_OK;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] != '\n' && !feof(f)) {
            snprintf(err, errlen, "%s:%d: line too long", path, lineno);
            rc = CAL_EINVAL;
            goto out;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "%s:%d: expected KEY=VALUE", path, lineno);
            rc = CAL_EINVAL;
            goto out;
        }
        *eq = '\0';
        const char *key = line, *val = eq + 1;
        if (strcmp(key, "gtid") == 0) {
            struct gtid_pos pos;
            char perr[160];
            if (gtid_pos_parse(&pos, val, perr, sizeof(perr)) != CAL_OK) {
                snprintf(err, errlen, "%s:%d: %s", path, lineno, perr);
                rc = CAL_EINVAL;
                goto out;
            }
            cal_strlcpy(cp->gtid, val, sizeof(cp->gtid));
            have_gtid = true;
        } else if (strcmp(key, "file") == 0) {
            cal_strlcpy(cp->file, val, sizeof(cp->file));
        } else if (strcmp(key, "pos") == 0) {
            cp->pos = strtoull(val, NULL, 10);
        } else if (strcmp(key, "updated_ms") == 0) {
            cp->updated_ms = strtoull(val, NULL, 10);
        } /* unknown keys: written by a newer relay, ignored */
    }
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read checkpoint %s: %s", path, strerror(errno));
        rc = CAL_ERR;
    } else if (!have_gtid) {
        snprintf(err, errlen, "%s: no gtid= line", path);
        rc = CAL_EINVAL;
    }
out:
    fclose(f);
    return rc;
}

static cal_status
fsync_dir_of(const char *path, char *err, size_t errlen)
{
    char *copy = cal_strndup(path, strlen(path));
    const char *dir = dirname(copy);
    cal_status rc = CAL_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        snprintf(err, errlen, "fsync of directory %s failed: %s", dir, strerror(errno));
        rc = CAL_ERR;
    }
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

cal_status
checkpoint_store(const char *path, const struct checkpoint *cp, char *err, size_t errlen)
{
    char tmp[1024];
    char text[GTID_POS_TEXT_MAX + 512];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        snprintf(err, errlen, "checkpoint path too long");
        return CAL_EINVAL;
    }
    int len = snprintf(text, sizeof(text),
                       "# calendar-cdc-relay checkpoint: GTID position of the last transaction\n"
                       "# whose every event Kafka acknowledged. Resume point after a restart.\n"
                       "gtid=%s\nfile=%s\npos=%" PRIu64 "\nupdated_ms=%" PRIu64 "\n",
                       cp->gtid, cp->file, cp->pos, cp->updated_ms);
    if (len < 0 || (size_t)len >= sizeof(text)) {
        snprintf(err, errlen, "checkpoint text too long");
        return CAL_EINVAL;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return CAL_ERR;
    }
    cal_status rc = CAL_OK;
    size_t off = 0;
    while (off < (size_t)len) {
        ssize_t w = write(fd, text + off, (size_t)len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
            rc = CAL_ERR;
            break;
        }
        off += (size_t)w;
    }
    if (rc == CAL_OK && fsync(fd) != 0) {
        snprintf(err, errlen, "fsync of %s failed: %s", tmp, strerror(errno));
        rc = CAL_ERR;
    }
    if (close(fd) != 0 && rc == CAL_OK) {
        snprintf(err, errlen, "close of %s failed: %s", tmp, strerror(errno));
        rc = CAL_ERR;
    }
    if (rc == CAL_OK && rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %s -> %s failed: %s", tmp, path, strerror(errno));
        rc = CAL_ERR;
    }
    if (rc != CAL_OK) {
        unlink(tmp);
        return rc;
    }
    return fsync_dir_of(path, err, errlen);
}

cal_status
checkpoint_admit(struct gtid_pos *seen, const struct gtid *g, char *err, size_t errlen)
{
    if (gtid_pos_update(seen, g) != CAL_OK) {
        snprintf(err, errlen,
                 "GTID domain %u is one replication domain more than the %d the"
                 " relay's checkpoint holds",
                 g->domain_id, GTID_MAX_DOMAINS);
        return CAL_EINVAL;
    }
    return CAL_OK;
}

/* mkdir -p, each directory made 0700. */
static int
make_dirs(const char *dir)
{
    char path[1024];
    int n = snprintf(path, sizeof(path), "%s", dir);
    if (n <= 0 || (size_t)n >= sizeof(path)) {
        errno = n == 0 ? ENOENT : ENAMETOOLONG;
        return -1;
    }
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(path, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

int
checkpoint_lock_dir(const char *dir, char *err, size_t errlen)
{
    if (make_dirs(dir) != 0) {
        snprintf(err, errlen, "cannot create state_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    char path[1024];
    int n = snprintf(path, sizeof(path), "%s/lock", dir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        snprintf(err, errlen, "state_dir path too long");
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "state_dir %s is locked by another relay (%s)", dir, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}
