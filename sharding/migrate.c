/* Versioned schema migrations recorded in schema_migrations. */
#include "sharding/migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <libgen.h>
#include <unistd.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"

#define MAX_FILES 256

static const char SQL_CREATE[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                 " version INT UNSIGNED NOT NULL PRIMARY KEY,"
                                 " name VARCHAR(255) NOT NULL,"
                                 " applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
                                 ") ENGINE=InnoDB";
static const char SQL_VERSION[] = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
static const char SQL_HAS[] = "SELECT 1 FROM schema_migrations WHERE version = ?";
static const char SQL_RECORD[] = "INSERT INTO schema_migrations (version, name) VALUES (?, ?)";
static const char SQL_LOCK[] = "SELECT GET_LOCK('calendar_schema_migrate', 60)";
static const char SQL_UNLOCK[] = "SELECT RELEASE_LOCK('calendar_schema_migrate')";

struct mfile {
    int version;
    char name[256];
};

static int
cmp_mfile(const void *a, const void *b)
{
    return ((const struct mfile *)a)->version - ((const struct mfile *)b)->version;
}

static char *
read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, len = 0;
    char *buf = cal_malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0)
            buf = cal_realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static int
list_files(const char *dir, struct mfile *files, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "schema dir %s: %s", dir, strerror(errno));
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        /* Any other file may lie beside them (a README); a migration whose
         * name is off would be skipped for good, so it is refused. */
        if (len < 4 || strcasecmp(e->d_name + len - 4, ".sql") != 0)
            continue;
        char *end;
        long v = isdigit((unsigned char)e->d_name[0]) ? strtol(e->d_name, &end, 10) : 0;
        if (v <= 0 || v > INT_MAX || *end != '_' || strcmp(e->d_name + len - 4, ".sql") != 0 ||
            len >= sizeof(files[0].name)) {
            snprintf(err, errlen, "schema dir %s: %s is not a migration's name (NNN_name.sql)", dir,
                     e->d_name);
            closedir(d);
            return -1;
        }
        if (n == MAX_FILES) {
            snprintf(err, errlen, "schema dir %s: more than %d migrations", dir, MAX_FILES);
            closedir(d);
            return -1;
        }
        files[n].version = (int)v;
        cal_strlcpy(files[n].name, e->d_name, sizeof(files[n].name));
        n++;
    }
    closedir(d);
    qsort(files, (size_t)n, sizeof(files[0]), cmp_mfile);
    for (int i = 1; i < n; i++) {
        if (files[i].version == files[i - 1].version) {
            snprintf(err, errlen, "schema dir %s: two files with version %d", dir,
                     files[i].version);
            return -1;
        }
    }
    return n;
}

void
migrate_default_dir(char *out, size_t len)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        cal_strlcpy(out, "schema", len);
        return;
    }
    exe[n] = '\0';
    snprintf(out, len, "%s/../schema", dirname(exe));
}

cal_status
migrate_version(struct db *db, int *version, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val c[1];
    cal_status rc = db_exec(db, SQL_CREATE, err, errlen);
    if (rc == CAL_OK)
        rc = db_query(db, SQL_VERSION, NULL, 0, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    *version = db_fetch(st, c, 1, err, errlen) > 0 ? (int)c[0].i : 0;
    while (db_fetch(st, c, 1, err, errlen) > 0)
        ;
    return CAL_OK;
}

static bool
is_applied(struct db *db, int version, cal_status *rc, char *err, size_t errlen)
{
    struct db_stmt *st;
    struct db_val p[1] = {DB_INT_V(version)}, c[1];
    *rc = db_query(db, SQL_HAS, p, 1, &st, err, errlen);
    if (*rc != CAL_OK)
        return false;
    bool found = false;
    while (db_fetch(st, c, 1, err, errlen) > 0)
        found = true;
    return found;
}

cal_status
migrate_apply(struct db *db, const char *dir, int *applied, char *err, size_t errlen)
{
    struct mfile *files = cal_calloc(MAX_FILES, sizeof(*files));
    struct db_stmt *st;
    struct db_val c[1];
    cal_status rc;
    bool locked = false;
    int count = 0;

    int n = list_files(dir, files, err, errlen);
    if (n < 0) {
        rc = CAL_EINVAL;
        goto out;
    }
    if ((rc = db_exec(db, SQL_CREATE, err, errlen)) != CAL_OK)
        goto out;
    if ((rc = db_query(db, SQL_LOCK, NULL, 0, &st, err, errlen)) != CAL_OK)
        goto out;
    locked = db_fetch(st, c, 1, err, errlen) > 0 && c[0].type == DB_INT && c[0].i == 1;
    while (db_fetch(st, c, 1, err, errlen) > 0)
        ;
    if (!locked) {
        snprintf(err, errlen, "another migration holds the schema lock");
        rc = CAL_EAGAIN;
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (is_applied(db, files[i].version, &rc, err, errlen))
            continue;
        if (rc != CAL_OK)
            goto out;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
        char *sql = read_file(path, err, errlen);
        if (sql == NULL) {
            rc = CAL_EINVAL;
            goto out;
        }
        char e2[512];
        rc = db_exec(db, sql, e2, sizeof(e2));
        free(sql);
        if (rc != CAL_OK) {
            snprintf(err, errlen, "%s: %s", path, e2);
            goto out;
        }
        struct db_val p[2] = {DB_INT_V(files[i].version), DB_CSTR_V(files[i].name)};
        if ((rc = db_query(db, SQL_RECORD, p, 2, NULL, err, errlen)) != CAL_OK)
            goto out;
        log_info("schema migration applied", "file=%s", path);
        count++;
    }
    rc = CAL_OK;
out:
    if (locked) {
        char e2[256];
        if (db_query(db, SQL_UNLOCK, NULL, 0, &st, e2, sizeof(e2)) == CAL_OK)
            while (db_fetch(st, c, 1, e2, sizeof(e2)) > 0)
                ;
    }
    if (applied != NULL)
        *applied = count;
    free(files);
    return rc;
}
