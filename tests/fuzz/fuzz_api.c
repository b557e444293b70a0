/* libFuzzer target: the whole HTTP request handling of calendard behind the
 * socket layer. Input: "METHOD PATH[?QUERY]\n", header lines
 * ("Idempotency-Key: ...", "If-Match: ..."), an empty line, then the body.
 * The router has no reachable catalog, so a request that passes validation
 * ends in a fast 503: everything before the database is exercised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "calendard/service.h"
#include "common/log.h"

static struct service *svc;

static void
setup(void)
{
    struct router_conf rc = {.pool_size = 1,
                             .pool_wait_ms = 1,
                             .refresh_interval_ms = 600000,
                             .breaker_threshold = 1,
                             .breaker_cooldown_ms = 1};
    strcpy(rc.catalog.host, "127.0.0.1");
    rc.catalog.port = 1; /* nothing listens: connect is refused at once */
    rc.catalog.connect_timeout_ms = 100;
    struct avail_conf ac = {.ttl_s = 1, .lease_ttl_s = 1};
    struct service_conf sc = {.max_attempts = 2,
                              .backoff_base_ms = 0,
                              .backoff_max_ms = 0,
                              .max_search_listings = 1000,
                              .deadline_ms = 100};
    sc.catalog = rc.catalog; /* reservation ids: refused at once too */
    char err[256];
    log_set_level(LOG_ERROR);
    svc = service_create(&sc, router_create(&rc), avail_create(&ac, err, sizeof(err)));
}

/* Copies the next line of [*p, end) into a NUL-terminated string. */
static char *
next_line(const char **p, const char *end)
{
    const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    const char *e = nl ? nl : end;
    char *line = malloc((size_t)(e - s) + 1);
    memcpy(line, s, (size_t)(e - s));
    line[e - s] = '\0';
    *p = nl ? nl + 1 : end;
    return line;
}

static char *
query_value(const char *query, const char *name)
{
    size_t n = strlen(name);
    for (const char *q = query; q != NULL && *q; q = strchr(q, '&') ? strchr(q, '&') + 1 : NULL) {
        if (strncmp(q, name, n) == 0 && q[n] == '=') {
            size_t len = strcspn(q + n + 1, "&");
            return strndup(q + n + 1, len);
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (svc == NULL)
        setup();
    const char *p = (const char *)data, *end = p + size;
    char *first = next_line(&p, end);
    char *sp = strchr(first, ' ');
    if (sp == NULL) {
        free(first);
        return 0;
    }
    *sp = '\0';
    char *path = sp + 1, *query = strchr(path, '?');
    if (query != NULL)
        *query++ = '\0';
    struct api_request req = {.method = first, .path = path};
    char *key = NULL, *if_match = NULL;
    for (;;) {
        char *h = next_line(&p, end);
        if (h[0] == '\0') {
            free(h);
            break;
        }
        if (strncmp(h, "Idempotency-Key: ", 17) == 0 && key == NULL)
            key = strdup(h + 17);
        else if (strncmp(h, "If-Match: ", 10) == 0 && if_match == NULL)
            if_match = strdup(h + 10);
        free(h);
        if (p == end)
            break;
    }
    req.idempotency_key = key;
    req.if_match = if_match;
    char *from = query_value(query, "from"), *to = query_value(query, "to");
    req.query_from = from;
    req.query_to = to;
    req.body = p;
    req.body_len = (size_t)(end - p);
    struct api_response resp = {0};
    service_handle(svc, &req, &resp);
    if (resp.status < 200 || resp.status > 599 || resp.body == NULL)
        abort(); /* every request gets an answer */
    free(resp.body);
    free(first);
    free(key);
    free(if_match);
    free(from);
    free(to);
    return 0;
}
