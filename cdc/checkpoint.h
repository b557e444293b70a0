/* The relay's durable checkpoint: the GTID position of the last transaction
 * whose every event Kafka acknowledged. Written as temp file + fsync +
 * rename + fsync of the directory, so after a crash the file holds either
 * the old or the new checkpoint, never a torn one. */
#ifndef CAL_CHECKPOINT_H
#define CAL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "cdc/gtid.h"
#include "common/status.h"

struct checkpoint {
    char gtid[GTID_POS_TEXT_MAX]; /* @@gtid_binlog_pos syntax; "" = none */
    char file[256];               /* informational: binlog file and position */
    uint64_t pos;
    uint64_t updated_ms;
};

/* Loads path. CAL_ENOTFOUND when it does not exist; CAL_EINVAL (message
 * names the file and line) when it is malformed. */
cal_status checkpoint_load(const char *path, struct checkpoint *cp, char *err, size_t errlen);

/* Replaces path atomically and durably with cp. */
cal_status checkpoint_store(const char *path, const struct checkpoint *cp, char *err,
                            size_t errlen);

/* A stream's guard on what its checkpoint can hold: seen holds the domains
 * of the checkpoint it started from and of every transaction read since.
 * Records g in seen, or refuses it (CAL_EINVAL, err filled, seen unchanged)
 * when its domain would be one past the GTID_MAX_DOMAINS a checkpoint holds:
 * its transactions would be left out of the checkpoint, and a restart would
 * resume that domain wherever the server chose. Pure. */
cal_status checkpoint_admit(struct gtid_pos *seen, const struct gtid *g, char *err, size_t errlen);

/* Creates dir (mode 0700) if needed and takes an exclusive flock on
 * dir/lock so two relays never share one state directory. Returns the fd
 * that holds the lock (released when the process exits), or -1 (err filled). */
int checkpoint_lock_dir(const char *dir, char *err, size_t errlen);

#endif
