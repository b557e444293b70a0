/* Reservation ids from blocks taken from the catalog. */
#include "calendard/idblock.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

struct idblock {
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t fetched;
    uint64_t size;
    uint64_t next, end;        /* the block in use: [next, end) */
    uint64_t spare, spare_end; /* the block taken ahead, when spare < spare_end */
    bool fetching;             /* one fetch at a time */
    uint64_t attempts;         /* fetches finished, for waiters to tell theirs */
    cal_status last_rc;        /* of the last fetch */
    char last_err[256];
    idblock_fetch_fn fetch;
    void *arg;
};

struct idblock *
idblock_create(uint64_t size, idblock_fetch_fn fetch, void *arg)
{
    struct idblock *ids = cal_calloc(1, sizeof(*ids));
    pthread_mutex_init(&ids->lock, NULL);
    pthread_cond_init(&ids->fetched, NULL);
    ids->size = size ? size : 1;
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

/* Fetches a block into the spare slot (needs lock, with fetching set by the
 * caller; drops it meanwhile). */
static void
fetch_spare(struct idblock *ids)
{
    uint64_t first = 0;
    char err[256] = "";
    pthread_mutex_unlock(&ids->lock);
    cal_status rc = ids->fetch(ids->arg, ids->size, &first, err, sizeof(err));
    pthread_mutex_lock(&ids->lock);
    if (rc == CAL_OK) {
        ids->spare = first;
        ids->spare_end = first + ids->size;
    }
    ids->last_rc = rc;
    snprintf(ids->last_err, sizeof(ids->last_err), "%s", err);
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
                !ids->fetching) {
                ids->fetching = true;
                fetch_spare(ids);
            }
            pthread_mutex_unlock(&ids->lock);
            return CAL_OK;
        }
        if (waited_for != UINT64_MAX && ids->attempts > waited_for && ids->last_rc != CAL_OK) {
            cal_status rc = ids->last_rc;
            snprintf(err, errlen, "%s", ids->last_err);
            pthread_mutex_unlock(&ids->lock);
            return rc;
        }
        if (ids->fetching) {
            /* Bounded: the fetch has its connection's timeouts. */
            waited_for = ids->attempts;
            pthread_cond_wait(&ids->fetched, &ids->lock);
            continue;
        }
        ids->fetching = true;
        waited_for = ids->attempts;
        fetch_spare(ids);
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
    *first = db_insert_id(st);
    return CAL_OK;
}
