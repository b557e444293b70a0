/* Versioned schema: applies schema/<kind>/NNN_name.sql files in order and
 * records each in schema_migrations, so a later version migrates an
 * existing database. */
#ifndef CAL_MIGRATE_H
#define CAL_MIGRATE_H

#include <stddef.h>

#include "common/db.h"

/* Applies every file of dir whose version is not recorded yet, in version
 * order, under a named lock so two migrators never interleave. *applied gets
 * how many were applied (may be NULL). */
cal_status migrate_apply(struct db *db, const char *dir, int *applied, char *err, size_t errlen);

/* The schema/ folder beside the running program's bin/ folder. */
void migrate_default_dir(char *out, size_t len);

/* Highest applied version, 0 for a fresh database. */
cal_status migrate_version(struct db *db, int *version, char *err, size_t errlen);

#endif
