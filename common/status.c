/* Names of cal_status values, for logs and messages. */
#include "common/status.h"

const char *
cal_status_name(cal_status st)
{
    switch (st) {
    case CAL_OK:
        return "ok";
    case CAL_ERR:
        return "error";
    case CAL_ENOMEM:
        return "out_of_memory";
    case CAL_EAGAIN:
        return "again";
    case CAL_ECONFLICT:
        return "conflict";
    case CAL_EDUP:
        return "duplicate";
    case CAL_ENOTFOUND:
        return "not_found";
    case CAL_EINVAL:
        return "invalid";
    case CAL_EMOVED:
        return "moved";
    case CAL_EUNAVAIL:
        return "unavailable";
    case CAL_ETIMEDOUT:
        return "timed_out";
    case CAL_EUNKNOWN:
        return "outcome_unknown";
    case CAL_EREADONLY:
        return "read_only";
    }
    return "unknown_status";
}
