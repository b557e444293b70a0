/* libcurl wrapper for the tests and the stress tool. Only plain http to
 * 127.0.0.1 is allowed, so a mistyped URL can never load a remote host. */
#include "tests/lib/http.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "tests/lib/testenv.h"

struct http_client {
    CURL *curl;
};

void
http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct http_client *
http_client_create(void)
{
    struct http_client *client = calloc(1, sizeof(*client));

    if (client == NULL) {
        return NULL;
    }
    client->curl = curl_easy_init();
    if (client->curl == NULL) {
        free(client);
        return NULL;
    }
    return client;
}

void
http_client_destroy(struct http_client *client)
{
    if (client == NULL) {
        return;
    }
    curl_easy_cleanup(client->curl);
    free(client);
}

void
http_response_init(struct http_response *resp)
{
    memset(resp, 0, sizeof(*resp));
}

void
http_response_deinit(struct http_response *resp)
{
    free(resp->body);
    http_response_init(resp);
}

static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_response *resp = arg;
    size_t n = size * nmemb;
    char *p;

    if (resp->len + n > HTTP_MAX_BODY) {
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    p = realloc(resp->body, resp->len + n + 1);
    if (p == NULL) {
        return 0;
    }
    resp->body = p;
    memcpy(resp->body + resp->len, data, n);
    resp->len += n;
    resp->body[resp->len] = '\0';
    return n;
}

/* Copies the value of header line "Name: value\r\n" when its name is name. */
static void
take_header(const char *line, size_t len, const char *name, char *dst, size_t dstlen)
{
    size_t nlen = strlen(name), vlen;
    const char *v;

    if (len <= nlen || strncasecmp(line, name, nlen) != 0 || line[nlen] != ':') {
        return;
    }
    v = line + nlen + 1;
    vlen = len - nlen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vlen--;
    }
    while (vlen > 0 && isspace((unsigned char)v[vlen - 1])) {
        vlen--;
    }
    if (vlen >= dstlen) {
        vlen = dstlen - 1;
    }
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct http_response *resp = arg;
    size_t n = size * nmemb;

    /* A new status line (after a 100 Continue, say) starts a new header set. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        resp->etag[0] = resp->retry_after[0] = resp->content_type[0] = resp->allow[0] = '\0';
        resp->connection[0] = '\0';
        return n;
    }
    take_header(data, n, "ETag", resp->etag, sizeof(resp->etag));
    take_header(data, n, "Retry-After", resp->retry_after, sizeof(resp->retry_after));
    take_header(data, n, "Content-Type", resp->content_type, sizeof(resp->content_type));
    take_header(data, n, "Allow", resp->allow, sizeof(resp->allow));
    take_header(data, n, "Connection", resp->connection, sizeof(resp->connection));
    return n;
}

cal_status
http_request(struct http_client *client, const char *method, const char *url,
             const char *const *headers, const char *body, size_t body_len, long timeout_ms,
             struct http_response *resp, char *err, size_t errlen)
{
    CURL *curl = client->curl;
    struct curl_slist *list = NULL, *tmp;
    cal_status st = CAL_OK;
    CURLcode rc;

    http_response_init(resp);
    if (!testenv_url_is_loopback(url)) {
        snprintf(err, errlen, "refusing non-loopback url %s", url);
        return CAL_EINVAL;
    }
    if (timeout_ms <= 0) {
        timeout_ms = HTTP_DEFAULT_TIMEOUT_MS;
    }
    /* reset keeps the connection cache: keep-alive survives across requests. */
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 3000 ? timeout_ms : 3000L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http");
#else
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP);
#endif
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, resp);
    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        tmp = curl_slist_append(list, "Content-Type: application/json");
        if (tmp == NULL) {
            goto nomem;
        }
        list = tmp;
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        /* A custom HEAD would wait for the body its Content-Length names. */
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 && strcmp(method, "HEAD") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    /* No 100-continue round trip: the daemon answers on the full request. */
    tmp = curl_slist_append(list, "Expect:");
    if (tmp == NULL) {
        goto nomem;
    }
    list = tmp;
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        tmp = curl_slist_append(list, headers[i]);
        if (tmp == NULL) {
            goto nomem;
        }
        list = tmp;
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);

    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s %s: %s", method, url, curl_easy_strerror(rc));
        if (rc == CURLE_OPERATION_TIMEDOUT) {
            st = CAL_ETIMEDOUT;
        } else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_SEND_ERROR ||
                   rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING) {
            st = CAL_EUNAVAIL;
        } else {
            st = CAL_ERR;
        }
        /* A partial answer is no answer. */
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
        if (st != CAL_EUNAVAIL || resp->status == 0) {
            resp->status = 0;
        }
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
    if (resp->body == NULL) {
        resp->body = calloc(1, 1);
        if (resp->body == NULL) {
            goto nomem;
        }
    }
    goto out;
nomem:
    snprintf(err, errlen, "out of memory");
    st = CAL_ENOMEM;
out:
    /* The handle keeps a pointer to the list until the next reset. */
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(list);
    return st;
}

cal_status
http_requestf(struct http_client *client, const char *method, const char *const *headers,
              const char *body, struct http_response *resp, char *err, size_t errlen,
              const char *urlfmt, ...)
{
    char url[1024];
    va_list ap;
    int n;

    va_start(ap, urlfmt);
    n = vsnprintf(url, sizeof(url), urlfmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(url)) {
        http_response_init(resp);
        snprintf(err, errlen, "url too long");
        return CAL_EINVAL;
    }
    return http_request(client, method, url, headers, body, body != NULL ? strlen(body) : 0, 0,
                        resp, err, errlen);
}

json_t *
http_response_json(const struct http_response *resp)
{
    json_error_t jerr;

    if (resp->body == NULL || resp->len == 0) {
        return NULL;
    }
    return json_loadb(resp->body, resp->len, JSON_REJECT_DUPLICATES, &jerr);
}

const char *
http_response_error_code(const struct http_response *resp, char *buf, size_t buflen)
{
    json_t *root = http_response_json(resp);
    const char *code = NULL;

    buf[0] = '\0';
    if (root != NULL) {
        code = json_string_value(json_object_get(json_object_get(root, "error"), "code"));
        if (code != NULL) {
            snprintf(buf, buflen, "%s", code);
        }
        json_decref(root);
    }
    return buf;
}
