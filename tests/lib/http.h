/* A tiny blocking HTTP client for tests: one libcurl easy handle per client
 * (keep-alive across requests), timeouts always set, the few response
 * headers tests look at, and the body parsed as JSON on demand. */
#ifndef CAL_TEST_HTTP_H
#define CAL_TEST_HTTP_H

#include <stddef.h>

#include <jansson.h>

#include "common/status.h"

#define HTTP_DEFAULT_TIMEOUT_MS 10000L
#define HTTP_MAX_BODY (8u << 20) /* responses larger than this are an error */

struct http_client;

struct http_response {
    long status; /* HTTP status; 0 when no response was received */
    char *body;  /* NUL-terminated, owned; free with http_response_deinit() */
    size_t len;
    char etag[128]; /* raw header value, quotes included; "" if absent */
    char retry_after[32];
    char content_type[128];
    char allow[128];     /* the methods a 405 names; "" if absent */
    char connection[32]; /* the Connection header ("close"), "" if absent */
};

/* Call once from main before any thread starts (curl_global_init). */
void http_global_init(void);

/* Caller frees with http_client_destroy(); NULL on allocation failure. */
struct http_client *http_client_create(void);
void http_client_destroy(struct http_client *client); /* NULL is a no-op */

/* Sends one request. method is "GET", "PUT", "POST", ...; url must be on
 * 127.0.0.1; headers is a NULL-terminated list of "Name: value" (may be NULL);
 * body may be NULL. Every request has a total timeout (timeout_ms <= 0 means
 * HTTP_DEFAULT_TIMEOUT_MS) and a connect timeout. resp is (re)initialised;
 * the caller calls http_response_deinit() whatever the result.
 * Returns CAL_OK when a full response arrived, CAL_ETIMEDOUT on timeout,
 * CAL_EUNAVAIL when the connection failed, CAL_EINVAL for a refused url,
 * CAL_ERR otherwise; err says why. */
cal_status http_request(struct http_client *client, const char *method, const char *url,
                        const char *const *headers, const char *body, size_t body_len,
                        long timeout_ms, struct http_response *resp, char *err, size_t errlen);

/* printf-style url helper around http_request with a JSON body string. */
cal_status http_requestf(struct http_client *client, const char *method, const char *const *headers,
                         const char *body, struct http_response *resp, char *err, size_t errlen,
                         const char *urlfmt, ...) __attribute__((format(printf, 8, 9)));

void http_response_init(struct http_response *resp);
void http_response_deinit(struct http_response *resp);

/* The body parsed as JSON, or NULL when it is not JSON. Caller json_decref()s. */
json_t *http_response_json(const struct http_response *resp);

/* error.code of an error body, copied into buf ("" when absent). */
const char *http_response_error_code(const struct http_response *resp, char *buf, size_t buflen);

#endif
