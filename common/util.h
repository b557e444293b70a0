/* Small shared helpers: allocation that aborts on OOM, time, random, strings. */
#ifndef CAL_UTIL_H
#define CAL_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define CAL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Out of memory aborts the process: there is no sane recovery for a daemon
 * that cannot allocate a request arena. */
void *cal_malloc(size_t size);
void *cal_calloc(size_t n, size_t size);
void *cal_realloc(void *p, size_t size);
char *cal_strndup(const char *s, size_t len);

uint64_t cal_now_ms(void);  /* CLOCK_REALTIME, ms since epoch */
uint64_t cal_mono_us(void); /* CLOCK_MONOTONIC, microseconds */

/* A pause in a polling loop: the core's sibling runs meanwhile. */
static inline void
cal_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A condition whose timed waits take CLOCK_MONOTONIC times, and such a
 * time ms milliseconds from now. */
void cal_cond_init_monotonic(pthread_cond_t *cond);
struct timespec cal_mono_after_ms(unsigned ms);
struct timespec cal_mono_after_us(uint64_t us);
void cal_sleep_ms(unsigned ms);

/* Thread-safe fast PRNG (per-thread xorshift seeded from getrandom). */
uint64_t cal_rand64(void);

/* FNV-1a of len bytes: a hash for in-memory tables, not for anything an
 * attacker chooses the keys of. */
uint64_t cal_fnv1a(const void *data, size_t len);

/* Copies src into dst[size], always NUL-terminates; returns src length. */
size_t cal_strlcpy(char *dst, const char *src, size_t size);

/* Replaces every byte of the NUL-terminated s outside printable ASCII
 * (0x20..0x7e) with '?', so s is valid JSON string content once escaped. */
void cal_printable_ascii(char *s);

/* Writes the decimal digits of v (at most 20, no NUL) at out; returns how
 * many. For keys and JSON made per request, without printf's parser. */
size_t cal_put_u64(char *out, uint64_t v);

#endif
