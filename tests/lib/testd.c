/* A calendard of a test's own next to the stack's: config, start, stop. */
#include "tests/lib/testd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/http.h"
#include "tests/lib/proc.h"

#define TESTD_MAX_SETS 32
#define TESTD_START_TRIES 150 /* GET /healthz every 100 ms */

/* Whether a set names this line's key in section; *idx which. */
static bool
set_of_line(const char *section, const char *line, const struct testd_set *sets, size_t nsets,
            size_t *idx)
{
    for (size_t i = 0; i < nsets; i++) {
        size_t klen = strlen(sets[i].key);
        if (strcmp(sets[i].section, section) == 0 && strncmp(line, sets[i].key, klen) == 0 &&
            (line[klen] == ' ' || line[klen] == '\t' || line[klen] == '=')) {
            *idx = i;
            return true;
        }
    }
    return false;
}

/* The sets of section not written yet, at its end. */
static void
add_missing(FILE *out, const char *section, const struct testd_set *sets, size_t nsets, bool *done)
{
    for (size_t i = 0; i < nsets; i++) {
        if (!done[i] && strcmp(sets[i].section, section) == 0) {
            fprintf(out, "%s = %s\n", sets[i].key, sets[i].value);
            done[i] = true;
        }
    }
}

/* The stack's calendard.ini with sets applied, into path. */
static bool
write_conf(const char *path, const struct testenv *env, const struct testd_set *sets, size_t nsets,
           char *err, size_t errlen)
{
    char src[640], line[1024], section[64] = "";
    bool done[TESTD_MAX_SETS] = {false};
    snprintf(src, sizeof(src), "%s/calendard.ini", env->stack_dir);
    FILE *in = fopen(src, "r");
    FILE *out = fopen(path, "w");
    if (in == NULL || out == NULL || nsets > TESTD_MAX_SETS) {
        snprintf(err, errlen, "cannot copy %s to %s", src, path);
        if (in != NULL)
            fclose(in);
        if (out != NULL)
            fclose(out);
        return false;
    }
    while (fgets(line, sizeof(line), in) != NULL) {
        size_t i;
        if (line[0] == '[') {
            add_missing(out, section, sets, nsets, done);
            sscanf(line, "[%63[^]]", section);
            fputs(line, out);
        } else if (set_of_line(section, line, sets, nsets, &i)) {
            fprintf(out, "%s = %s\n", sets[i].key, sets[i].value);
            done[i] = true;
        } else {
            fputs(line, out);
        }
    }
    add_missing(out, section, sets, nsets, done);
    for (size_t i = 0; i < nsets; i++) /* sections the stack's file has not */
        if (!done[i])
            fprintf(out, "[%s]\n%s = %s\n", sets[i].section, sets[i].key, sets[i].value);
    fclose(in);
    if (fclose(out) != 0) {
        snprintf(err, errlen, "cannot write %s", path);
        return false;
    }
    return true;
}

/* Whether GET /healthz answers 200 within the start's bound; false at once
 * when the daemon exited. */
static bool
wait_healthy(struct testd *d)
{
    struct http_client *h = http_client_create();
    struct http_response r;
    char err[256];
    bool up = false;
    for (int i = 0; h != NULL && i < TESTD_START_TRIES && !up; i++) {
        if (waitpid(d->pid, NULL, WNOHANG) == d->pid) {
            d->pid = 0;
            break;
        }
        if (http_requestf(h, "GET", NULL, NULL, &r, err, sizeof(err), "%s/healthz", d->url) ==
            CAL_OK)
            up = r.status == 200;
        else
            usleep(100000);
        http_response_deinit(&r);
    }
    http_client_destroy(h);
    return up;
}

static bool
make_temp(char *path, size_t len, const char *pattern)
{
    snprintf(path, len, "%s", pattern);
    int fd = mkstemp(path);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

bool
testd_start(struct testd *d, const struct testenv *env, const struct testd_set *sets, size_t nsets,
            char *err, size_t errlen)
{
    struct testd_set all[TESTD_MAX_SETS + 1];
    char port[16];
    memset(d, 0, sizeof(*d));
    d->port = testenv_free_port();
    snprintf(port, sizeof(port), "%u", d->port);
    snprintf(d->url, sizeof(d->url), "http://127.0.0.1:%u", d->port);
    if (nsets > TESTD_MAX_SETS - 1) {
        snprintf(err, errlen, "more than %d config keys", TESTD_MAX_SETS - 1);
        return false;
    }
    all[0] = (struct testd_set){"server", "port", port};
    memcpy(all + 1, sets, nsets * sizeof(*sets));
    if (d->port == 0 || !make_temp(d->conf, sizeof(d->conf), "/tmp/calendard-testd-XXXXXX") ||
        !make_temp(d->log, sizeof(d->log), "/tmp/calendard-testd-log-XXXXXX")) {
        snprintf(err, errlen, "no free port or temporary file");
        testd_cleanup(d);
        return false;
    }
    if (!write_conf(d->conf, env, all, nsets + 1, err, errlen)) {
        testd_cleanup(d);
        return false;
    }
    char *argv[] = {"bin/calendard", "--config", d->conf, NULL};
    d->pid = proc_start_tied(argv, d->log);
    if (d->pid < 0)
        d->pid = 0;
    if (d->pid == 0 || !wait_healthy(d)) {
        char out[1024];
        testd_read_log(d, out, sizeof(out));
        snprintf(err, errlen, "calendard on port %u did not come up: %s", d->port, out);
        testd_cleanup(d);
        return false;
    }
    return true;
}

int
testd_wait(struct testd *d, unsigned timeout_s)
{
    if (d->pid == 0)
        return -1;
    int rc = proc_wait(d->pid, timeout_s);
    d->pid = 0;
    return rc;
}

int
testd_stop(struct testd *d, unsigned timeout_s)
{
    if (d->pid != 0)
        kill(d->pid, SIGTERM);
    return testd_wait(d, timeout_s);
}

void
testd_read_log(const struct testd *d, char *buf, size_t buflen)
{
    FILE *f = d->log[0] != '\0' ? fopen(d->log, "r") : NULL;
    size_t n = f != NULL ? fread(buf, 1, buflen - 1, f) : 0;
    buf[n] = '\0';
    if (f != NULL)
        fclose(f);
}

void
testd_cleanup(struct testd *d)
{
    if (d->pid != 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
    if (d->conf[0] != '\0')
        unlink(d->conf);
    if (d->log[0] != '\0')
        unlink(d->log);
    d->conf[0] = d->log[0] = '\0';
}
