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
    const void *group;   /* the pool its connection came from */
    bool taken;          /* a leader is committing it */
    bool done;           /* sb.rc and sb.err are final */
    pthread_cond_t wake; /* signalled when done, or to lead */
    struct job *next;
};

/* A leader committing a transaction, on its own stack while it does. */
struct leader {
    const void *group;
    struct leader *next;
};

/* A booking's calendar read waiting for, or taken by, a reading leader. */
struct read_job {
    struct store_read sr;
    const void *group;
    bool done;          /* rc and err are final */
    bool failed_as_one; /* a statement reading several failed: err is about it */
    cal_status rc;
    char err[256];
    pthread_cond_t wake;
    struct read_job *next;
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
    /* Reads under load: one in flight per group, the rest gather behind it. */
    pthread_mutex_t read_lock; /* guards the read queue, readers and read jobs */
    struct read_job *read_head;
    struct leader *readers; /* groups reading now */
};

static void
leader_remove(struct leader **list, struct leader *me)
{
    while (*list != me)
        list = &(*list)->next;
    *list = me->next;
}

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
 * herd of waiters on each commit (needs lock). skip (NULL for none) is the
 * caller's own booking, left behind by its batch: the caller is busy, and
 * waking it would leave the lane idle. */
static void
wake_next(struct batcher *b, const struct job *skip)
{
    for (struct job *j = b->head; j != NULL; j = j->next) {
        if (j != skip && lane_free(b, j->group)) {
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
    pthread_mutex_init(&b->read_lock, NULL);
    return b;
}

void
batcher_destroy(struct batcher *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->read_lock);
    free(b);
}

/* Commits jobs[0..n) on db as one transaction, hands its lane (me) on
 * (own: the leader's booking, which its batch may have left behind),
 * tells b->committed of the outcomes, and hands them out, one to each job,
 * waking each of their requests, and no other (needs lock; drops it
 * meanwhile). */
static void
lead(struct batcher *b, struct db *db, struct job **jobs, size_t n, struct leader *me,
     const struct job *own)
{
    struct store_booking small[8];
    struct store_booking *sb = n <= CAL_ARRAY_LEN(small) ? small : cal_malloc(n * sizeof(*sb));
    for (size_t i = 0; i < n; i++)
        sb[i] = jobs[i]->sb;
    pthread_mutex_unlock(&b->lock);
    metrics_group_commit((unsigned)n);
    store_book_many(db, sb, n);
    pthread_mutex_lock(&b->lock);
    /* The next transaction need not wait for the cache. */
    leader_remove(&b->leaders, me);
    wake_next(b, own->taken ? NULL : own);
    pthread_mutex_unlock(&b->lock);
    if (b->committed != NULL)
        b->committed(b->committed_arg, sb, n);
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < n; i++) {
        jobs[i]->sb.rc = sb[i].rc;
        memcpy(jobs[i]->sb.err, sb[i].err, sizeof(sb[i].err));
        jobs[i]->done = true;
        pthread_cond_signal(&jobs[i]->wake);
    }
    if (sb != small)
        free(sb);
}

cal_status
batcher_book(struct batcher *b, struct db *db, const void *group, const struct listing *listing,
             const struct booking_plan *plan, struct reservation *res, const char *key,
             size_t keylen, char *err, size_t errlen)
{
    struct job job = {
        .sb = {.listing = listing, .plan = plan, .res = res, .key = key, .keylen = keylen},
        .group = group};
    pthread_cond_init(&job.wake, NULL);
    struct job *small[32];
    struct job **jobs =
        b->max_batch <= CAL_ARRAY_LEN(small) ? small : cal_malloc(b->max_batch * sizeof(*jobs));
    pthread_mutex_lock(&b->lock);
    if (b->tail != NULL)
        b->tail->next = &job;
    else
        b->head = &job;
    b->tail = &job;
    while (!job.done) {
        if (job.taken || !lane_free(b, group)) {
            /* Bounded: every statement of a leader has its connection's
             * timeouts. Only this job's leader, or a leader handing its
             * lane on, wakes it. */
            pthread_cond_wait(&job.wake, &b->lock);
            continue;
        }
        /* A lane is free and this booking still waits: commit it, and
         * whatever of its group gathered behind the busy lanes, on this
         * request's own connection. */
        size_t n = take_locked(b, group, jobs);
        struct leader me = {.group = group, .next = b->leaders};
        b->leaders = &me;
        /* Bookings left behind (overlapping, past max_batch, or of another
         * group) may take another free lane at once. */
        wake_next(b, job.taken ? NULL : &job);
        lead(b, db, jobs, n, &me, &job);
    }
    pthread_mutex_unlock(&b->lock);
    pthread_cond_destroy(&job.wake);
    if (jobs != small)
        free(jobs);
    if (job.sb.rc != CAL_OK)
        snprintf(err, errlen, "%s", job.sb.err);
    return job.sb.rc;
}

static bool
reading(const struct batcher *b, const void *group)
{
    for (const struct leader *l = b->readers; l != NULL; l = l->next)
        if (l->group == group)
            return true;
    return false;
}

/* Reads jobs[0..n) on db in one statement (one alone as the plain read)
 * and hands out the outcomes (needs read_lock; drops it meanwhile). */
static void
read_lead(struct batcher *b, struct db *db, struct read_job **jobs, size_t n)
{
    struct store_read small[8];
    struct store_read *sr = n <= CAL_ARRAY_LEN(small) ? small : cal_malloc(n * sizeof(*sr));
    char err[256] = "";
    cal_status rc;
    for (size_t i = 0; i < n; i++)
        sr[i] = jobs[i]->sr;
    pthread_mutex_unlock(&b->read_lock);
    metrics_booking_read((unsigned)n);
    if (n == 1) {
        rc = sr[0].rc = store_read_calendar(db, sr[0].vbucket, sr[0].listing_id, sr[0].from,
                                            sr[0].to, sr[0].out, err, sizeof(err));
        if (rc == CAL_ENOTFOUND || rc == CAL_EMOVED)
            rc = CAL_OK;
    } else {
        rc = store_read_each(db, sr, n, err, sizeof(err));
    }
    pthread_mutex_lock(&b->read_lock);
    for (size_t i = 0; i < n; i++) {
        jobs[i]->rc = rc == CAL_OK ? sr[i].rc : rc;
        jobs[i]->failed_as_one = rc != CAL_OK && n > 1;
        memcpy(jobs[i]->err, err, sizeof(err));
        jobs[i]->done = true;
        pthread_cond_signal(&jobs[i]->wake);
    }
    if (sr != small)
        free(sr);
}

/* Wakes the oldest read of group still waiting, which leads the next read
 * of the group (needs read_lock). Each group's reader wakes its own group
 * only: a waiter woken for another group could leave this one asleep. */
static void
read_wake_next(struct batcher *b, const void *group)
{
    for (struct read_job *j = b->read_head; j != NULL; j = j->next) {
        if (j->group == group) {
            pthread_cond_signal(&j->wake);
            return;
        }
    }
}

/* Takes job and up to max_batch - 1 more reads of its group off the queue,
 * oldest first, job first (needs read_lock). */
static size_t
read_take(struct batcher *b, struct read_job *job, struct read_job **out)
{
    size_t n = 0;
    struct read_job **pp = &b->read_head;
    while (*pp != job)
        pp = &(*pp)->next;
    *pp = job->next;
    out[n++] = job;
    for (pp = &b->read_head; *pp != NULL && n < b->max_batch;) {
        struct read_job *j = *pp;
        if (j->group != job->group) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        out[n++] = j;
    }
    return n;
}

static cal_status
read_alone(struct db *db, uint32_t vbucket, uint64_t listing_id, int32_t from, int32_t to,
           struct calendar_read *out, char *err, size_t errlen)
{
    metrics_booking_read(1);
    return store_read_calendar(db, vbucket, listing_id, from, to, out, err, errlen);
}

cal_status
batcher_read(struct batcher *b, struct db *db, const void *group, uint32_t vbucket,
             uint64_t listing_id, int32_t from, int32_t to, struct calendar_read *out, char *err,
             size_t errlen)
{
    /* At low load a read in flight is rarely there to gather behind. */
    if (lanes_open(b) > 1)
        return read_alone(db, vbucket, listing_id, from, to, out, err, errlen);
    struct read_job job = {
        .sr = {.vbucket = vbucket, .listing_id = listing_id, .from = from, .to = to, .out = out},
        .group = group};
    pthread_cond_init(&job.wake, NULL);
    struct read_job *small[32];
    struct read_job **jobs =
        b->max_batch <= CAL_ARRAY_LEN(small) ? small : cal_malloc(b->max_batch * sizeof(*jobs));
    pthread_mutex_lock(&b->read_lock);
    struct read_job **pp = &b->read_head;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = &job;
    /* Bounded by the reading leader's statement timeouts. Reads take no
     * row locks; a metadata lock (a schema change) can hold them. */
    while (!job.done && reading(b, group))
        pthread_cond_wait(&job.wake, &b->read_lock);
    if (!job.done) {
        /* Nothing of this group is being read: read this booking's
         * calendar, and whatever of its group queued, on this request's
         * own connection. */
        size_t n = read_take(b, &job, jobs);
        struct leader me = {.group = group, .next = b->readers};
        b->readers = &me;
        read_lead(b, db, jobs, n);
        leader_remove(&b->readers, &me);
        read_wake_next(b, group);
    }
    pthread_mutex_unlock(&b->read_lock);
    pthread_cond_destroy(&job.wake);
    if (jobs != small)
        free(jobs);
    /* The statement reading several failed: whatever its reason (a lost
     * connection, no room for one more prepared statement there), it says
     * nothing sure about this booking's own connection, which reads alone:
     * it answers, or fails and is marked broken itself. */
    if (job.failed_as_one && !db_broken(db))
        return read_alone(db, vbucket, listing_id, from, to, out, err, errlen);
    if (job.rc != CAL_OK && job.rc != CAL_ENOTFOUND && job.rc != CAL_EMOVED)
        snprintf(err, errlen, "%s", job.err);
    return job.rc;
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

size_t
batcher_reads_waiting(struct batcher *b)
{
    size_t n = 0;
    pthread_mutex_lock(&b->read_lock);
    for (struct read_job *j = b->read_head; j != NULL; j = j->next)
        n++;
    pthread_mutex_unlock(&b->read_lock);
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
    wake_next(b, NULL);
    pthread_mutex_unlock(&b->lock);
}
