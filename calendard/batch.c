/* Group commit of bookings per shard, leader/follower: no thread of its own. */
#include "calendard/batch.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/metrics.h"
#include "common/util.h"

struct job {
    struct store_booking sb;
    const void *group; /* the pool its connection came from */
    /* The listing and stay, known before the read (what fits() compares);
     * sr.out is where an unread job's calendar goes. */
    struct store_read sr;
    /* Not read yet (sb.listing NULL): its leader reads it with the batch's
     * others and plans it with prepare. */
    bool unread;
    batcher_prepare_fn prepare;
    void *prepare_arg;
    bool failed_as_one;  /* failed on its leader's connection, not its own */
    bool taken;          /* a leader is committing it */
    bool leading;        /* its request is busy leading a batch (without it) */
    bool done;           /* sb.rc and sb.err are final */
    pthread_cond_t wake; /* signalled when done, or to lead */
    struct job *next;
};

/* A leader committing a transaction, on its own stack while it does. */
struct leader {
    const void *group;
    struct leader *next;
};

struct batcher {
    unsigned max_batch;
    unsigned lanes;          /* transactions of this shard's bookings in flight at most */
    pthread_mutex_t lock;    /* guards everything below and the jobs' flags */
    struct job *head, *tail; /* waiting, not taken, oldest first */
    struct leader *leaders;  /* committing now, one per busy lane */
    unsigned load;           /* atomic: bookings between batcher_enter and _leave */
    batcher_committed_fn committed;
    void *committed_arg;
};

static void
leader_remove(struct leader **list, struct leader *me)
{
    while (*list != me)
        list = &(*list)->next;
    *list = me->next;
}

/* May job j join a batch that already holds out[0..n)? Bookings of one
 * listing must not overlap (an overlap is a sure conflict: it waits for the
 * next batch, where it is read again and refused, or fails alone), and
 * those planned already must have been planned on the same rules. An
 * unread one is planned on whatever rules its read finds: if they differ
 * from a planned one's, store_book_many() gives each a savepoint of its own. */
static bool
fits(struct job *const *out, size_t n, const struct job *j)
{
    for (size_t i = 0; i < n; i++) {
        const struct job *a = out[i];
        if (a->sr.listing_id != j->sr.listing_id)
            continue;
        if (a->sb.listing != NULL && j->sb.listing != NULL &&
            a->sb.listing->rules_version != j->sb.listing->rules_version)
            return false;
        if (a->sr.from < j->sr.to && j->sr.from < a->sr.to)
            return false;
    }
    return true;
}

/* Unlinks a job that no leader took from the queue (needs lock). */
static void
queue_remove(struct batcher *b, struct job *job)
{
    struct job **pp = &b->head, *prev = NULL;
    while (*pp != job) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = job->next;
    if (b->tail == job)
        b->tail = prev;
    job->next = NULL;
}

/* Takes up to max_batch jobs of the leader's group off the queue, oldest
 * first; the leader's own among them unless older ones fill the batch or
 * it overlaps one of them (needs lock). A leader commits on its
 * own connection: after a shard moved to another server, a booking read
 * on the new one must not commit on the old one. */
static size_t
take_locked(struct batcher *b, const void *group, struct job **out)
{
    size_t n = 0;
    struct job **pp = &b->head;
    while (*pp != NULL && n < b->max_batch) {
        struct job *j = *pp;
        if (j->group != group || !fits(out, n, j)) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        j->taken = true;
        out[n++] = j;
    }
    b->tail = NULL;
    for (struct job *j = b->head; j != NULL; j = j->next)
        b->tail = j;
    return n;
}

/* While the shard has no more bookings in progress than lanes, a booking
 * that found a transaction in flight would wait only to commit alone: it
 * takes a lane of its own at once. Beyond that, bookings gather behind one
 * transaction and share its statements and its flush, which costs the
 * shard less than a transaction each (measured: at 4 clients on 2 shards
 * 4 lanes book about 15 % more than 1; at 64 clients 4 lanes always open
 * book 10-25 % less). */
static unsigned
lanes_open(struct batcher *b)
{
    return __atomic_load_n(&b->load, __ATOMIC_RELAXED) <= b->lanes ? b->lanes : 1;
}

/* Has group a lane free? Each group (the pool a connection came from) has
 * lanes of its own: after a shard moved to another server, a leader stuck
 * on the old one never holds up the bookings of the new one (needs lock). */
static bool
lane_free(struct batcher *b, const void *group)
{
    unsigned busy = 0;
    for (struct leader *l = b->leaders; l != NULL; l = l->next)
        busy += l->group == group;
    return busy < lanes_open(b);
}

/* Wakes the oldest waiting booking that may lead now, and no other: no
 * herd of waiters on each commit (needs lock). A booking left behind by
 * its own request's batch is passed over while that request leads: nobody
 * waits on it, and the signal would be lost with the lane left idle. */
static void
wake_next(struct batcher *b)
{
    for (struct job *j = b->head; j != NULL; j = j->next) {
        if (!j->leading && lane_free(b, j->group)) {
            pthread_cond_signal(&j->wake);
            return;
        }
    }
}

struct batcher *
batcher_create(unsigned max_batch, unsigned lanes, batcher_committed_fn committed, void *arg)
{
    struct batcher *b = cal_calloc(1, sizeof(*b));
    b->max_batch = max_batch ? max_batch : 1;
    b->lanes = lanes ? lanes : 1;
    b->committed = committed;
    b->committed_arg = arg;
    pthread_mutex_init(&b->lock, NULL);
    return b;
}

void
batcher_destroy(struct batcher *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

/* Reads the unread of jobs[0..n) on db in one statement (one alone as the
 * plain read) and plans each that was read (no lock held). A job whose
 * read or plan refuses it is settled: its sb.rc says why. own is the
 * leader's own job: for any other, a failed statement says nothing about
 * its own connection. */
static void
read_unread(struct db *db, struct job **jobs, size_t n, const struct job *own)
{
    struct store_read small[8];
    size_t small_at[8];
    struct store_read *sr = n <= CAL_ARRAY_LEN(small) ? small : cal_malloc(n * sizeof(*sr));
    size_t *at = n <= CAL_ARRAY_LEN(small_at) ? small_at : cal_malloc(n * sizeof(*at));
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        if (jobs[i]->unread) {
            at[nr] = i;
            sr[nr++] = jobs[i]->sr;
        }
    }
    if (nr > 0) {
        char err[256] = "";
        cal_status rc;
        metrics_booking_read((unsigned)nr);
        if (nr == 1) {
            rc = sr[0].rc = store_read_calendar(db, sr[0].vbucket, sr[0].listing_id, sr[0].from,
                                                sr[0].to, sr[0].out, err, sizeof(err));
            if (rc == CAL_ENOTFOUND || rc == CAL_EMOVED)
                rc = CAL_OK;
        } else {
            rc = store_read_each(db, sr, nr, err, sizeof(err));
        }
        for (size_t k = 0; k < nr; k++) {
            struct job *j = jobs[at[k]];
            j->unread = false;
            if (rc != CAL_OK) {
                j->sb.rc = rc;
                j->failed_as_one = nr > 1 || j != own;
                snprintf(j->sb.err, sizeof(j->sb.err), "%s", err);
            } else if (sr[k].rc != CAL_OK) {
                j->sb.rc = sr[k].rc;
            } else {
                j->sb.rc = j->prepare(j->prepare_arg, &j->sb);
            }
        }
    }
    if (sr != small)
        free(sr);
    if (at != small_at)
        free(at);
}

/* Reads and plans what of jobs[0..n) is unread, commits the planned on db
 * as one transaction, hands its lane (me) on (own: the leader's booking,
 * which its batch may have left behind), tells b->committed of the
 * outcomes, and hands them out, one to each job, waking each of their
 * requests, and no other (needs lock; drops it meanwhile). */
static void
lead(struct batcher *b, struct db *db, struct job **jobs, size_t n, struct leader *me,
     const struct job *own)
{
    struct store_booking small[8];
    struct job *small_settled[8];
    struct store_booking *sb = n <= CAL_ARRAY_LEN(small) ? small : cal_malloc(n * sizeof(*sb));
    struct job **settled =
        n <= CAL_ARRAY_LEN(small_settled) ? small_settled : cal_malloc(n * sizeof(*settled));
    pthread_mutex_unlock(&b->lock);
    read_unread(db, jobs, n, own);
    /* The read broke the leader's connection: the others' bookings go
     * again on their own. */
    bool broken = db_broken(db);
    /* jobs[0..nb) are to book; what the read or the plan refused is
     * settled, and answered now: it is not in the transaction. */
    size_t nb = 0, ns = 0;
    for (size_t i = 0; i < n; i++) {
        struct job *j = jobs[i];
        if (j->sb.rc == CAL_OK && broken) {
            j->sb.rc = CAL_EUNAVAIL;
            j->failed_as_one = j != own;
            snprintf(j->sb.err, sizeof(j->sb.err), "the connection broke before the commit");
        }
        if (j->sb.rc != CAL_OK)
            settled[ns++] = j;
        else
            jobs[nb++] = j;
    }
    if (ns > 0) {
        pthread_mutex_lock(&b->lock);
        for (size_t i = 0; i < ns; i++) {
            settled[i]->done = true;
            pthread_cond_signal(&settled[i]->wake);
        }
        pthread_mutex_unlock(&b->lock);
    }
    for (size_t i = 0; i < nb; i++)
        sb[i] = jobs[i]->sb;
    if (nb > 0) {
        metrics_group_commit((unsigned)nb);
        store_book_many(db, sb, nb);
    }
    bool broken_now = db_broken(db);
    pthread_mutex_lock(&b->lock);
    /* The next transaction need not wait for the cache. */
    leader_remove(&b->leaders, me);
    wake_next(b);
    pthread_mutex_unlock(&b->lock);
    if (b->committed != NULL && nb > 0)
        b->committed(b->committed_arg, sb, nb);
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < nb; i++) {
        jobs[i]->sb.rc = sb[i].rc;
        /* Lost before the commit on the leader's connection, which says
         * nothing about a follower's own: it books again (batcher_book). */
        jobs[i]->failed_as_one = broken_now && sb[i].rc == CAL_EUNAVAIL && jobs[i] != own;
        memcpy(jobs[i]->sb.err, sb[i].err, sizeof(sb[i].err));
        jobs[i]->done = true;
        pthread_cond_signal(&jobs[i]->wake);
    }
    if (sb != small)
        free(sb);
    if (settled != small_settled)
        free(settled);
}

/* Queues job and waits until it is done, leading when a lane is free. */
static void
queue_and_wait(struct batcher *b, struct db *db, struct job *job)
{
    struct job *small[32];
    struct job **jobs =
        b->max_batch <= CAL_ARRAY_LEN(small) ? small : cal_malloc(b->max_batch * sizeof(*jobs));
    pthread_cond_init(&job->wake, NULL);
    pthread_mutex_lock(&b->lock);
    if (b->tail != NULL)
        b->tail->next = job;
    else
        b->head = job;
    b->tail = job;
    while (!job->done) {
        if (job->taken || !lane_free(b, job->group)) {
            /* Bounded: every statement of a leader has its connection's
             * timeouts. Only this job's leader, or a leader handing its
             * lane on, wakes it. */
            pthread_cond_wait(&job->wake, &b->lock);
            continue;
        }
        /* Its own connection broke in a batch that left it behind: it
         * leads no other on it, and fails alone (its request retries on a
         * fresh connection). */
        if (db_broken(db)) {
            queue_remove(b, job);
            /* It was handed the free lane: the next waiting booking takes it. */
            wake_next(b);
            job->sb.rc = CAL_EUNAVAIL;
            snprintf(job->sb.err, sizeof(job->sb.err), "the connection broke in an earlier batch");
            break;
        }
        /* A lane is free and this booking still waits: commit it, and
         * whatever of its group gathered behind the busy lanes, on this
         * request's own connection. */
        size_t n = take_locked(b, job->group, jobs);
        struct leader me = {.group = job->group, .next = b->leaders};
        b->leaders = &me;
        job->leading = true;
        /* Bookings left behind (overlapping, past max_batch, or of another
         * group) may take another free lane at once. */
        wake_next(b);
        lead(b, db, jobs, n, &me, job);
        job->leading = false;
    }
    pthread_mutex_unlock(&b->lock);
    pthread_cond_destroy(&job->wake);
    if (jobs != small)
        free(jobs);
}

cal_status
batcher_book(struct batcher *b, struct db *db, const void *group, const struct listing *listing,
             const struct booking_plan *plan, struct reservation *res, const char *key,
             size_t keylen, char *err, size_t errlen)
{
    struct job job = {
        .sb = {.listing = listing, .plan = plan, .res = res, .key = key, .keylen = keylen},
        .group = group,
        .sr = {.listing_id = listing->listing_id, .from = res->check_in, .to = res->check_out}};
    for (unsigned tries = 1;; tries++) {
        queue_and_wait(b, db, &job);
        /* Its leader's connection broke before the commit, which says
         * nothing about this booking's own: it goes again (bounded). */
        if (!job.failed_as_one || db_broken(db) || tries == 3)
            break;
        job.taken = job.done = job.failed_as_one = false;
        job.sb.rc = CAL_OK;
        job.next = NULL;
    }
    if (job.sb.rc != CAL_OK)
        snprintf(err, errlen, "%s", job.sb.err);
    return job.sb.rc;
}

static cal_status
read_alone(struct db *db, uint32_t vbucket, uint64_t listing_id, int32_t from, int32_t to,
           struct calendar_read *out, char *err, size_t errlen)
{
    metrics_booking_read(1);
    return store_read_calendar(db, vbucket, listing_id, from, to, out, err, errlen);
}

/* Reads alone on db, plans, and commits through the batcher. */
static cal_status
read_then_book(struct batcher *b, struct db *db, const void *group, const struct store_read *sr,
               batcher_prepare_fn prepare, void *arg, char *err, size_t errlen)
{
    cal_status rc =
        read_alone(db, sr->vbucket, sr->listing_id, sr->from, sr->to, sr->out, err, errlen);
    if (rc != CAL_OK)
        return rc;
    struct store_booking sb = {0};
    if ((rc = prepare(arg, &sb)) != CAL_OK)
        return rc;
    return batcher_book(b, db, group, sb.listing, sb.plan, sb.res, sb.key, sb.keylen, err, errlen);
}

cal_status
batcher_read_book(struct batcher *b, struct db *db, const void *group, uint32_t vbucket,
                  uint64_t listing_id, int32_t check_in, int32_t check_out,
                  struct calendar_read *out, batcher_prepare_fn prepare, void *arg, char *err,
                  size_t errlen)
{
    struct store_read sr = {.vbucket = vbucket,
                            .listing_id = listing_id,
                            .from = check_in,
                            .to = check_out,
                            .out = out};
    /* At low load each booking reads at once and takes a lane of its own. */
    if (lanes_open(b) > 1)
        return read_then_book(b, db, group, &sr, prepare, arg, err, errlen);
    struct job job = {
        .group = group, .unread = true, .sr = sr, .prepare = prepare, .prepare_arg = arg};
    queue_and_wait(b, db, &job);
    /* The statement reading several failed: whatever its reason, it says
     * nothing sure about this booking's own connection, which reads alone:
     * it answers, or fails and is marked broken itself. */
    if (job.failed_as_one && !db_broken(db))
        return read_then_book(b, db, group, &sr, prepare, arg, err, errlen);
    if (job.sb.rc != CAL_OK && job.sb.rc != CAL_ENOTFOUND && job.sb.rc != CAL_EMOVED)
        snprintf(err, errlen, "%s", job.sb.err);
    return job.sb.rc;
}

size_t
batcher_bookings_waiting(struct batcher *b)
{
    size_t n = 0;
    pthread_mutex_lock(&b->lock);
    for (struct job *j = b->head; j != NULL; j = j->next)
        n++;
    pthread_mutex_unlock(&b->lock);
    return n;
}

void
batcher_enter(struct batcher *b)
{
    __atomic_add_fetch(&b->load, 1, __ATOMIC_RELAXED);
}

void
batcher_leave(struct batcher *b)
{
    if (__atomic_sub_fetch(&b->load, 1, __ATOMIC_RELAXED) != b->lanes || b->lanes == 1)
        return;
    /* The lanes just opened: a waiting booking need not wait for the
     * transaction in flight any more. */
    pthread_mutex_lock(&b->lock);
    wake_next(b);
    pthread_mutex_unlock(&b->lock);
}
