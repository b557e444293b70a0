/* The CDC metrics endpoint on libmicrohttpd (see promhttp.h). */
#include "cdc/promhttp.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

struct promhttp {
    struct MHD_Daemon *daemon;
    promhttp_render_fn render;
    promhttp_ready_fn ready;
    void *opaque;
};

static enum MHD_Result
answer(struct MHD_Connection *conn, unsigned code, const char *type, char *body, size_t len,
       enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **state)
{
    struct promhttp *srv = cls;
    (void)version;
    (void)upload_data;
    if (*state == NULL) { /* first call: headers only */
        *state = srv;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0; /* bodies are ignored */
        return MHD_YES;
    }
    static char text[] = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return answer(conn, 405, text, (char *)"method not allowed\n", 19, MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/metrics") == 0) {
        size_t len = 0;
        char *body = srv->render(srv->opaque, &len);
        return answer(conn, 200, "text/plain; version=0.0.4; charset=utf-8", body, len,
                      MHD_RESPMEM_MUST_FREE);
    }
    if (strcmp(url, "/healthz") == 0)
        return answer(conn, 200, text, (char *)"ok\n", 3, MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/readyz") == 0) {
        if (srv->ready == NULL || srv->ready(srv->opaque))
            return answer(conn, 200, text, (char *)"ready\n", 6, MHD_RESPMEM_PERSISTENT);
        return answer(conn, 503, text, (char *)"not ready\n", 10, MHD_RESPMEM_PERSISTENT);
    }
    return answer(conn, 404, text, (char *)"not found\n", 10, MHD_RESPMEM_PERSISTENT);
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    log_warn("metrics http", "detail=\"%s\"", buf);
}

struct promhttp *
promhttp_start(const char *listen, unsigned port, promhttp_render_fn render,
               promhttp_ready_fn ready, void *opaque, char *err, size_t errlen)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (port == 0 || port > 65535 || inet_pton(AF_INET, listen, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "metrics address '%s:%u' is not an IPv4 address and port", listen,
                 port);
        return NULL;
    }
    struct promhttp *srv = cal_calloc(1, sizeof(*srv));
    srv->render = render;
    srv->ready = ready;
    srv->opaque = opaque;
    /* One internal thread polling; scrapes are rare and cheap. */
    srv->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port, NULL, NULL, on_request,
        srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%u (in use, or not permitted)", listen, port);
        free(srv);
        return NULL;
    }
    return srv;
}

void
promhttp_stop(struct promhttp *srv)
{
    if (srv == NULL)
        return;
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
