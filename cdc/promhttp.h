/* A tiny HTTP endpoint on libmicrohttpd for a CDC process: GET /metrics
 * (Prometheus text from a callback), /healthz (200 while the process runs),
 * /readyz (200 when a callback says so). Binds the given IPv4 address only. */
#ifndef CAL_PROMHTTP_H
#define CAL_PROMHTTP_H

#include <stdbool.h>
#include <stddef.h>

/* Returns a malloc'd body (the server frees it) and its length. */
typedef char *(*promhttp_render_fn)(void *opaque, size_t *len);
typedef bool (*promhttp_ready_fn)(void *opaque);

struct promhttp;

/* Starts serving on listen:port (its own thread). NULL and err on failure. */
struct promhttp *promhttp_start(const char *listen, unsigned port, promhttp_render_fn render,
                                promhttp_ready_fn ready, void *opaque, char *err, size_t errlen);
void promhttp_stop(struct promhttp *srv); /* promhttp_stop(NULL) is a no-op */

#endif
