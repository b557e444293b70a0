/* Group commit of bookings per shard. */
#include "calendard/batch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

struct job {
    struct store_booking sb;
    bool done;
    struct job *next;
};

struct batcher {
    struct db_conf conf;
    unsigned max_batch;
    pthread_mutex_t lock; /* guards queue, stopping, done flags */
    pthread_cond_t work;
    pthread_cond_t finished;
    struct job *head, *tail;
    bool busy;       /* the batcher thread is committing a batch */
    unsigned direct; /* bookings committed by their own request thread now */
    bool stopping;
    pthread_t thread;
    struct db *db; /* the batcher thread's own */
};

/* May job j join a batch that already holds out[0..n)? Bookings of one
 * listing share its version bump, so they must have been planned on the same
 * rules and must not overlap (an overlap is a sure conflict: it waits for the
 * next batch, where it fails alone). */
static bool
fits(struct job *const *out, size_t n, const struct job *j)
{
    const struct store_booking *b = &j->sb;
    for (size_t i = 0; i < n; i++) {
        const struct store_booking *a = &out[i]->sb;
        if (a->listing->listing_id != b->listing->listing_id)
            continue;
        if (a->listing->rules_version != b->listing->rules_version)
            return false;
        if (a->res->check_in < b->res->check_out && b->res->check_in < a->res->check_out)
            return false;
    }
    return true;
}

/* Takes up to max_batch jobs off the queue (needs lock). */
static size_t
take_locked(struct batcher *b, struct job **out)
{
    size_t n = 0;
    struct job **pp = &b->head;
    while (*pp != NULL && n < b->max_batch) {
        struct job *j = *pp;
        if (!fits(out, n, j)) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        out[n++] = j;
    }
    b->tail = NULL;
    for (struct job *j = b->head; j != NULL; j = j->next)
        b->tail = j;
    return n;
}

static void *
run(void *arg)
{
    struct batcher *b = arg;
    struct job **jobs = cal_malloc(b->max_batch * sizeof(*jobs));
    struct store_booking *sb = cal_malloc(b->max_batch * sizeof(*sb));
    char err[256];
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (b->head == NULL && !b->stopping)
            pthread_cond_wait(&b->work, &b->lock);
        if (b->head == NULL && b->stopping)
            break;
        size_t n = take_locked(b, jobs);
        b->busy = true;
        pthread_mutex_unlock(&b->lock);
        if (b->db != NULL && db_broken(b->db)) {
            db_close(b->db);
            b->db = NULL;
        }
        if (b->db == NULL)
            b->db = db_connect(&b->conf, err, sizeof(err));
        for (size_t i = 0; i < n; i++)
            sb[i] = jobs[i]->sb;
        if (b->db != NULL) {
            store_book_many(b->db, sb, n);
        } else {
            for (size_t i = 0; i < n; i++) {
                sb[i].rc = CAL_EUNAVAIL;
                snprintf(sb[i].err, sizeof(sb[i].err), "%s", err);
            }
        }
        pthread_mutex_lock(&b->lock);
        for (size_t i = 0; i < n; i++) {
            jobs[i]->sb.rc = sb[i].rc;
            memcpy(jobs[i]->sb.err, sb[i].err, sizeof(sb[i].err));
            jobs[i]->done = true;
        }
        b->busy = false;
        pthread_cond_broadcast(&b->finished);
    }
    pthread_mutex_unlock(&b->lock);
    free(jobs);
    free(sb);
    return NULL;
}

struct batcher *
batcher_create(const struct db_conf *conf, unsigned max_batch)
{
    struct batcher *b = cal_calloc(1, sizeof(*b));
    b->conf = *conf;
    b->max_batch = max_batch ? max_batch : 1;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->work, NULL);
    pthread_cond_init(&b->finished, NULL);
    pthread_create(&b->thread, NULL, run, b);
    return b;
}

void
batcher_destroy(struct batcher *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    b->stopping = true;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL); /* drains the queue first */
    db_close(b->db);
    pthread_cond_destroy(&b->finished);
    pthread_cond_destroy(&b->work);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

cal_status
batcher_book(struct batcher *b, struct db *db, const struct listing *listing,
             const struct booking_plan *plan, struct reservation *res, const char *key,
             size_t keylen, char *err, size_t errlen)
{
    struct job job = {
        .sb = {.listing = listing, .plan = plan, .res = res, .key = key, .keylen = keylen}};
    pthread_mutex_lock(&b->lock);
    if (!b->busy && b->head == NULL && b->direct == 0) {
        /* Nothing to group with: commit on the caller's connection rather
         * than pay two thread hand-offs. Bookings that arrive meanwhile queue
         * for the batcher. */
        b->direct++;
        pthread_mutex_unlock(&b->lock);
        cal_status rc = store_book(db, listing, plan, res, key, keylen, err, errlen);
        pthread_mutex_lock(&b->lock);
        b->direct--;
        pthread_mutex_unlock(&b->lock);
        return rc;
    }
    if (b->tail != NULL)
        b->tail->next = &job;
    else
        b->head = &job;
    b->tail = &job;
    pthread_cond_signal(&b->work);
    /* Bounded: every statement of the batcher has the connection's timeouts. */
    while (!job.done)
        pthread_cond_wait(&b->finished, &b->lock);
    pthread_mutex_unlock(&b->lock);
    if (job.sb.rc != CAL_OK)
        snprintf(err, errlen, "%s", job.sb.err);
    return job.sb.rc;
}
