/* Running the project's programs from tests: capture output and exit status,
 * or start one in the background and wait for it later. Bounded in time. */
#ifndef CAL_TEST_PROC_H
#define CAL_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Exit code, or 128+signal when killed, or -1 when it could not run or
 * outlived timeout_s (then it is killed). out gets stdout+stderr (may be NULL). */
int proc_run(char *const argv[], char *out, size_t outlen, unsigned timeout_s);

/* Starts argv with stdout (and stderr) into out_path; returns the pid or -1. */
pid_t proc_start(char *const argv[], const char *out_path);

/* As proc_start, argv[0] looked up in PATH, output appended to out_path, and
 * the child killed (SIGKILL) when the calling thread exits: a test that
 * fails midway leaves no daemon of its own running. */
pid_t proc_start_tied(char *const argv[], const char *out_path);

/* Waits at most timeout_s for pid; same result convention as proc_run. */
int proc_wait(pid_t pid, unsigned timeout_s);

/* Does the file at path (a started program's log) hold needle, now or
 * within ms? Looked at every 100 ms. */
bool proc_log_has_within(const char *path, const char *needle, unsigned ms);

/* SIGSTOPs pid and waits up to 10 s until every thread of it is stopped
 * (kill() returns before they are, and a thread still running can answer
 * a request meant to time out); false if they did not stop (the caller
 * sends SIGCONT before it asserts). Whatever the caller does, pid gets a
 * SIGCONT when the calling process ends (a test failing while pid is
 * stopped leaves it stopped for no later test). */
bool proc_stop(pid_t pid);

/* pid's state letter from /proc/PID/stat ('T': stopped, 'Z': a zombie), or 0
 * when there is no such process. */
char proc_state(pid_t pid);

/* The fields of /proc/PID/stat after the command name, from the state
 * letter on (field 3), read into buf; NULL when there is no such process. */
const char *proc_stat_fields(pid_t pid, char *buf, size_t size);

#endif
