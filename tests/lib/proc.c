/* Running the project's programs from tests. */
#include "tests/lib/proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

extern char **environ;

static int
decode(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

int
proc_wait(pid_t pid, unsigned timeout_s)
{
    struct timespec tick = {0, 20 * 1000000L};
    for (unsigned long waited = 0; waited < timeout_s * 50UL; waited++) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return decode(status);
        if (r < 0)
            return -1;
        nanosleep(&tick, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

pid_t
proc_start(char *const argv[], const char *out_path)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

pid_t
proc_start_tied(char *const argv[], const char *out_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* the parent was gone before the prctl */
        _exit(127);
    int fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    execvp(argv[0], argv);
    _exit(127);
}

int
proc_run(char *const argv[], char *out, size_t outlen, unsigned timeout_s)
{
    char path[] = "/tmp/calendar-proc-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    pid_t pid = proc_start(argv, path);
    int rc = pid < 0 ? -1 : proc_wait(pid, timeout_s);
    if (out != NULL && outlen > 0) {
        out[0] = '\0';
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            size_t n = fread(out, 1, outlen - 1, f);
            out[n] = '\0';
            fclose(f);
        }
    }
    unlink(path);
    return rc;
}

bool
proc_log_has_within(const char *path, const char *needle, unsigned ms)
{
    for (unsigned waited = 0;; waited += 100) {
        FILE *f = fopen(path, "r");
        char line[4096];
        bool found = false;
        while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL)
            found = strstr(line, needle) != NULL;
        if (f != NULL)
            fclose(f);
        if (found)
            return true;
        if (waited >= ms)
            return false;
        cal_sleep_ms(100);
    }
}

/* The fields of a /proc stat file after the command name, from the state
 * letter on, read into buf; NULL when it cannot be read. comm may hold
 * spaces and parentheses: the fields start after the last ')'. */
static const char *
stat_fields(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren != NULL && paren[1] == ' ' && paren[2] != '\0' ? paren + 2 : NULL;
}

const char *
proc_stat_fields(pid_t pid, char *buf, size_t size)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    return stat_fields(path, buf, size);
}

char
proc_state(pid_t pid)
{
    char buf[600];
    const char *fields = proc_stat_fields(pid, buf, sizeof(buf));
    return fields != NULL ? fields[0] : 0;
}

/* Every thread of pid stopped (state T in /proc/PID/task/TID/stat). */
static bool
all_stopped(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/task", (long)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return false;
    bool all = true;
    struct dirent *e;
    while (all && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char stat[600], buf[600];
        snprintf(stat, sizeof(stat), "%s/%s/stat", path, e->d_name);
        const char *fields = stat_fields(stat, buf, sizeof(buf));
        all = fields != NULL && (fields[0] == 'T' || fields[0] == 't');
    }
    closedir(d);
    return all;
}

/* Sends pid a SIGCONT once the calling process is gone, however it ends: a
 * failed assertion ends a Check test (its own process) with _exit, before
 * the test's SIGCONT, and a server left stopped would hang every test after
 * it. A child waits for the end of a pipe that only this process holds
 * (close-on-exec: the programs it starts do not keep it open). */
static void
cont_when_gone(pid_t pid)
{
    int fds[2], ready[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return;
    if (pipe2(ready, O_CLOEXEC) != 0) {
        close(fds[0]);
        close(fds[1]);
        return;
    }
    pid_t guard = fork();
    if (guard == 0) {
        char c;
        /* Out of the test's process group: Check kills the whole group
         * (SIGKILL) once the test ended, or timed out. */
        setsid();
        /* Every descriptor but fds[0] (as 3) closed: ready[1], so the
         * caller goes on, now the guard is out of the group, and what it
         * inherited of other threads' pipes, which they wait on. */
        if (dup2(fds[0], 3) < 0)
            _exit(1);
        close_range(4, ~0U, 0);
        while (read(3, &c, 1) < 0 && errno == EINTR) {
        }
        kill(pid, SIGCONT);
        _exit(0);
    }
    close(fds[0]);
    close(ready[1]);
    if (guard < 0) {
        close(fds[1]);
    } else {
        /* Wait until the guard has left the group (its end of ready
         * closed): a group killed before that would take the guard too. */
        char c;
        while (read(ready[0], &c, 1) < 0 && errno == EINTR) {
        }
    }
    close(ready[0]);
    /* fds[1] stays open until this process ends */
}

bool
proc_stop(pid_t pid)
{
    cont_when_gone(pid);
    if (kill(pid, SIGSTOP) != 0)
        return false;
    bool stopped = false;
    /* Every thread must reach T: up to 10 s on a loaded machine. */
    for (int i = 0; i < 10000 && !(stopped = all_stopped(pid)); i++)
        usleep(1000);
    return stopped;
}
