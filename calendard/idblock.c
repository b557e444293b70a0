/* Reservation ids from blocks taken from the catalog. */
#include "calendard/idblock.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"

struct idblock {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t fetched;
    uint64_t size;
    uint64_t retry_us;         /* after a failed fetch, the next one waits this long */
    uint64_t next, end;        /* the block in use: [next, end) */
    uint64_t spare, spare_end; /* the block taken ahead, when spare < spare_end */
    bool fetching;             /* one fetch at a time */
    uint64_t attempts;         /* fetches finished, for waiters to tell theirs */
    cal_status last_rc;        /* of the last fetch */
    char last_err[256];
    uint64_t failed_at_us; /* when the last fetch failed; 0: it did not */
    idblock_fetch_fn fetch;
    void *arg;
};

struct idblock *
idblock_create(uint64_t size, unsigned retry_ms, idblock_fetch_fn fetch, void *arg)
{
    struct idblock *ids = cal_calloc(1, sizeof(*ids));
    pthread_mutex_init(&ids->lock, NULL);
    pthread_cond_init(&ids->fetched, NULL);
    ids->size = size ? size : 1;
    ids->retry_us = (uint64_t)retry_ms * 1000;
    ids->fetch = fetch;
    ids->arg = arg;
    return ids;
}

void
idblock_destroy(struct idblock *ids)
{
    if (ids == NULL)
        return;
    pthread_cond_destroy(&ids->fetched);
    pthread_mutex_destroy(&ids->lock);
    free(ids);
}

/* May a fetch start now? Not within retry_us of a failed one (needs lock). */
static bool
may_fetch_locked(const struct idblock *ids)
{
    return !ids->fetching &&
           (ids->failed_at_us == 0 || cal_mono_us() - ids->failed_at_us >= ids->retry_us);
}

/* Fetches a block into the spare slot (needs lock, with fetching set by the
 * caller; drops it meanwhile). */
static void
fetch_spare_locked(struct idblock *ids)
{
    uint64_t first = 0;
    char err[256] = "";
    pthread_mutex_unlock(&ids->lock);
    cal_status rc = ids->fetch(ids->arg, ids->size, &first, err, sizeof(err));
    if (rc != CAL_OK)
        log_warn("reservation id block not taken", "error=\"%s\"", err);
    pthread_mutex_lock(&ids->lock);
    if (rc == CAL_OK) {
        ids->spare = first;
        ids->spare_end = first + ids->size;
    }
    ids->last_rc = rc;
    snprintf(ids->last_err, sizeof(ids->last_err), "%s", err);
    ids->failed_at_us = rc == CAL_OK ? 0 : cal_mono_us();
    ids->fetching = false;
    ids->attempts++;
    pthread_cond_broadcast(&ids->fetched);
}

cal_status
idblock_next(struct idblock *ids, uint64_t *id, char *err, size_t errlen)
{
    pthread_mutex_lock(&ids->lock);
    uint64_t waited_for = UINT64_MAX; /* the attempt this call waited for */
    for (;;) {
        if (ids->next == ids->end && ids->spare < ids->spare_end) {
            ids->next = ids->spare;
            ids->end = ids->spare_end;
            ids->spare = ids->spare_end = 0;
        }
        if (ids->next < ids->end) {
            *id = ids->next++;
            /* Half used: this caller takes the next block now, while the
             * others go on with what is left of this one. */
            if (ids->end - ids->next < ids->size / 2 && ids->spare >= ids->spare_end &&
                may_fetch_locked(ids)) {
                ids->fetching = true;
                fetch_spare_locked(ids);
            }
            pthread_mutex_unlock(&ids->lock);
            return CAL_OK;
        }
        /* Used up: the answer of the fetch this call waited for, or of one
         * that failed a moment ago (a catalog outage costs one fetch per
         * retry_us, not one per booking). */
        if ((waited_for != UINT64_MAX && ids->attempts > waited_for && ids->last_rc != CAL_OK) ||
            (!ids->fetching && !may_fetch_locked(ids))) {
            cal_status rc = ids->last_rc;
            snprintf(err, errlen, "%s", ids->last_err);
            pthread_mutex_unlock(&ids->lock);
            return rc;
        }
        waited_for = ids->attempts;
        if (ids->fetching) {
            /* Bounded: the fetch has its connection's timeouts. */
            pthread_cond_wait(&ids->fetched, &ids->lock);
            continue;
        }
        ids->fetching = true;
        fetch_spare_locked(ids);
    }
}

/* Moves next_id on by n and answers where it was, in one statement: the
 * row lock makes concurrent daemons take disjoint blocks. No block goes
 * past IDBLOCK_MAX. */
static const char SQL_TAKE_IDS[] = "UPDATE id_blocks SET next_id = LAST_INSERT_ID(next_id) + ?"
                                   " WHERE name = 'reservation' AND next_id <= ?";

cal_status
idblock_fetch_catalog(void *arg, uint64_t n, uint64_t *first, char *err, size_t errlen)
{
    struct idblock_catalog *cat = arg;
    if (cat->db != NULL && db_broken(cat->db)) {
        db_close(cat->db);
        cat->db = NULL;
    }
    if (cat->db == NULL && (cat->db = db_connect(cat->conf, err, errlen)) == NULL)
        return CAL_EUNAVAIL;
    struct db_val p[2] = {DB_INT_V((int64_t)n), DB_INT_V((int64_t)(IDBLOCK_MAX + 1 - n))};
    struct db_stmt *st;
    cal_status rc = db_query(cat->db, SQL_TAKE_IDS, p, 2, &st, err, errlen);
    if (rc != CAL_OK)
        return rc;
    if (db_affected_rows(st) != 1) {
        snprintf(err, errlen,
                 "the catalog's id_blocks has no 'reservation' row left with %llu ids"
                 " (calendar-admin migrate creates it)",
                 (unsigned long long)n);
        return CAL_ERR;
    }
    /* Where the row was: 0 only if something between here and the server
     * dropped the insert id, which must not start a block at 0 on every
     * daemon. */
    *first = db_insert_id(st);
    if (*first == 0 || *first > IDBLOCK_MAX + 1 - n) {
        snprintf(err, errlen, "the catalog answered id block %llu of %llu ids",
                 (unsigned long long)*first, (unsigned long long)n);
        return CAL_ERR;
    }
    return CAL_OK;
}
