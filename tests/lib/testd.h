/* A calendard of a test's own, for a test that stops it or starves it: the
 * stack's calendard is shared by every test and never signalled. It runs
 * with the stack's calendard.ini, some keys set, on a free loopback port,
 * its output in a log file, and dies with the test process. */
#ifndef CAL_TESTD_H
#define CAL_TESTD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "tests/lib/testenv.h"

/* A key of the config and the value it gets: it replaces the stack's, or is
 * added to its section. */
struct testd_set {
    const char *section, *key, *value;
};

struct testd {
    pid_t pid; /* 0 once it has exited */
    unsigned port;
    char url[64];  /* "http://127.0.0.1:PORT", no trailing slash */
    char conf[64]; /* the config written for it */
    char log[64];  /* its stdout and stderr */
};

/* Writes the config (sets, and [server] port), starts bin/calendard and
 * waits at most 15 s for GET /healthz to answer 200. false with err filled,
 * and nothing left running or on disk, when it does not. */
bool testd_start(struct testd *d, const struct testenv *env, const struct testd_set *sets,
                 size_t nsets, char *err, size_t errlen);

/* Waits at most timeout_s for it to exit (after a SIGTERM the test sent);
 * its exit status, as proc_wait() returns it (killed when it outlived the
 * wait). */
int testd_wait(struct testd *d, unsigned timeout_s);

/* SIGTERM, then testd_wait(). */
int testd_stop(struct testd *d, unsigned timeout_s);

/* Its output so far into buf, NUL-terminated, cut to buflen. */
void testd_read_log(const struct testd *d, char *buf, size_t buflen);

/* Kills it if it still runs and removes its config and log. A test that
 * fails before it gets here leaves them in /tmp for the post-mortem (the
 * daemon itself dies with the test process). */
void testd_cleanup(struct testd *d);

#endif
