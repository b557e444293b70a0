/* The HTTP front on libmicrohttpd. */
#include "calendard/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

struct http_server {
    struct http_conf conf;
    struct service *svc;
    struct MHD_Daemon *daemon;
    atomic_int inflight;
};

/* Per-request state, freed when MHD reports the request completed. */
struct http_request {
    uint64_t start_us;
    char *body;
    size_t len;
    bool too_large;
    bool answered;
};

static enum MHD_Result
send_answer(struct MHD_Connection *conn, struct api_response *resp, uint64_t start_us)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(resp->body_len, resp->body, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(resp->body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
    if (resp->etag[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, resp->etag);
    if (resp->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", resp->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    metrics_request(resp->endpoint, resp->status, cal_mono_us() - start_us);
    return ret;
}

static enum MHD_Result
refuse(struct MHD_Connection *conn, struct http_request *hr, int status, const char *code,
       const char *message)
{
    struct api_response resp = {.endpoint = EP_OTHER};
    service_error(&resp, status, code, message);
    hr->answered = true;
    return send_answer(conn, &resp, hr->start_us);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct http_server *srv = cls;
    struct http_request *hr = *con_cls;
    (void)version;
    if (hr == NULL) {
        hr = cal_calloc(1, sizeof(*hr));
        hr->start_us = cal_mono_us();
        *con_cls = hr;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)srv->conf.max_body_bytes)
            return refuse(conn, hr, 413, "body_too_large", "request body over the limit");
        return MHD_YES;
    }
    if (hr->answered)
        return MHD_YES;
    if (*upload_data_size > 0) {
        if (!hr->too_large) {
            if (hr->len + *upload_data_size > (size_t)srv->conf.max_body_bytes) {
                hr->too_large = true;
                free(hr->body);
                hr->body = NULL;
            } else {
                hr->body = cal_realloc(hr->body, hr->len + *upload_data_size + 1);
                memcpy(hr->body + hr->len, upload_data, *upload_data_size);
                hr->len += *upload_data_size;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (hr->too_large)
        return refuse(conn, hr, 413, "body_too_large", "request body over the limit");
    if (atomic_fetch_add(&srv->inflight, 1) >= srv->conf.max_inflight) {
        atomic_fetch_sub(&srv->inflight, 1);
        metrics_overload();
        return refuse(conn, hr, 503, "overloaded", "too many requests in flight");
    }
    struct api_request req = {
        .method = method,
        .path = url,
        .body = hr->body ? hr->body : "",
        .body_len = hr->len,
        .idempotency_key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Idempotency-Key"),
        .if_match = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MATCH),
        .query_from = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "from"),
        .query_to = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "to"),
    };
    struct api_response resp = {0};
    service_handle(srv->svc, &req, &resp);
    atomic_fetch_sub(&srv->inflight, 1);
    hr->answered = true;
    return send_answer(conn, &resp, hr->start_us);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct http_request *hr = *con_cls;
    (void)cls;
    (void)conn;
    (void)toe;
    if (hr != NULL) {
        free(hr->body);
        free(hr);
        *con_cls = NULL;
    }
}

/* MHD's own log lines; the format comes from the library. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    /* A connection flood makes MHD log one line per refused connection:
     * at most one line a second, with how many were suppressed. */
    static atomic_ullong last_s, suppressed;
    (void)cls;
    unsigned long long now = cal_mono_us() / 1000000;
    unsigned long long prev = atomic_load(&last_s);
    if (prev == now || !atomic_compare_exchange_strong(&last_s, &prev, now)) {
        atomic_fetch_add(&suppressed, 1);
        return;
    }
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '"')
            *p = '\'';
    log_warn("http", "detail=\"%s\" suppressed_since_last=%llu", msg,
             atomic_exchange(&suppressed, 0));
}

struct http_server *
http_start(const struct http_conf *conf, struct service *svc, char *err, size_t errlen)
{
    struct http_server *srv = cal_calloc(1, sizeof(*srv));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)conf->port)};
    srv->conf = *conf;
    srv->svc = svc;
    if (inet_pton(AF_INET, conf->listen, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "listen address '%s' is not an IPv4 address", conf->listen);
        free(srv);
        return NULL;
    }
    srv->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG,
        (uint16_t)conf->port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        srv, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)conf->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)conf->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)conf->max_header_bytes, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not permitted)", conf->listen,
                 conf->port);
        free(srv);
        return NULL;
    }
    return srv;
}

void
http_stop(struct http_server *srv)
{
    if (srv == NULL)
        return;
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
