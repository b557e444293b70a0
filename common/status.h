/* Status values shared by every module. Library error codes never cross an
 * adapter: they become one of these plus a message in the caller's buffer. */
#ifndef CAL_STATUS_H
#define CAL_STATUS_H

typedef enum {
    CAL_OK = 0,
    CAL_ERR,       /* unexpected failure; message says why */
    CAL_ENOMEM,    /* out of memory (allocation wrapper aborts instead) */
    CAL_EAGAIN,    /* transient: pool exhausted, overloaded; retry later */
    CAL_ECONFLICT, /* optimistic check failed, deadlock, lock wait: retry */
    CAL_EDUP,      /* duplicate key */
    CAL_ENOTFOUND, /* no such row / object */
    CAL_EINVAL,    /* bad input */
    CAL_EMOVED,    /* this shard does not own the vbucket (fence) */
    CAL_EUNAVAIL,  /* server unreachable or connection lost */
    CAL_ETIMEDOUT, /* network call timed out */
    CAL_EUNKNOWN,  /* outcome unknown: connection lost during COMMIT */
    CAL_EREADONLY, /* the server refuses writes (read-only: a fenced old primary) */
} cal_status;

const char *cal_status_name(cal_status st);

#endif
