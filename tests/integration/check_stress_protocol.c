/* calendar-stress against a fake calendard: answers calendard never gives
 * must fail the run as protocol_errors. The fake (libmicrohttpd, in the
 * test process, on a port of 127.0.0.1 the system picks) creates every
 * listing, refuses every block, and answers bookings and cancels the way a
 * case says; the run's verifier reads the stack's shards as always, through
 * a copy of the stack env without memcached (the cache check would read
 * through the fake). */
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/unit.h"

/* How the fake answers a booking (POST .../reservations) and a cancel. */
struct fake_answers {
    unsigned booking_status;
    const char *booking_body;
    unsigned cancel_status;
    const char *cancel_body;
    /* GET /metrics: 0 not found; -2 503 overloaded; else the scrapes (-1:
     * all) that see two requests in flight besides their own, and one, their
     * own, after. */
    int busy_scrapes;
};

static const struct fake_answers *answers;
static int scrapes; /* GET /metrics answered (MHD's one polling thread) */

static bool
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static enum MHD_Result
fake_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
             const char *version, const char *upload_data, size_t *upload_data_size, void **state)
{
    static int begun;
    unsigned status = 404;
    const char *body = "{\"error\":{\"code\":\"not_found\",\"message\":\"no such path\"}}";
    (void)cls;
    (void)version;
    (void)upload_data;
    if (*state == NULL) {
        *state = &begun;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        *upload_data_size = 0; /* bodies are not read */
        return MHD_YES;
    }
    if (strcmp(method, "PUT") == 0 && strncmp(url, "/v1/listings/", 13) == 0) {
        status = 201;
        body = "{\"listing_id\":1,\"version\":1}";
    } else if (strcmp(method, "POST") == 0 && ends_with(url, "/reservations")) {
        status = answers->booking_status;
        body = answers->booking_body;
    } else if (strcmp(method, "POST") == 0 && ends_with(url, "/cancel")) {
        status = answers->cancel_status;
        body = answers->cancel_body;
    } else if (strcmp(method, "GET") == 0 && strcmp(url, "/metrics") == 0 &&
               answers->busy_scrapes != 0) {
        bool busy = answers->busy_scrapes == -1 || scrapes < answers->busy_scrapes;
        scrapes++;
        status = answers->busy_scrapes == -2 ? 503 : 200;
        body = status == 503 ? "{\"error\":{\"code\":\"overloaded\",\"message\":\"x\"}}"
               : busy
                   ? "# TYPE calendard_requests_in_flight gauge\ncalendard_requests_in_flight 3\n"
                   : "# TYPE calendard_requests_in_flight gauge\ncalendard_requests_in_flight 1\n";
    } else if (strcmp(method, "POST") == 0 && ends_with(url, "/calendar")) {
        /* Nothing changed (a block the verifier would otherwise hold SQL to). */
        status = 409;
        body = "{\"error\":{\"code\":\"nights_unavailable\",\"message\":\"booked\"}}";
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The stack env less its MEMCACHED_SERVERS line, into a temporary file
 * (path, which the caller unlinks). */
static void
env_without_memcached(char *path, size_t len)
{
    const char *src = getenv("STACK_ENV");
    if (src == NULL || src[0] == '\0')
        src = "var/stack.env";
    FILE *in = fopen(src, "r");
    ck_assert_msg(in != NULL, "cannot read %s", src);
    snprintf(path, len, "/tmp/check_stress_protocol.XXXXXX");
    int fd = mkstemp(path);
    ck_assert(fd >= 0);
    FILE *out = fdopen(fd, "w");
    ck_assert(out != NULL);
    char line[4096];
    while (fgets(line, sizeof(line), in) != NULL)
        if (strstr(line, "MEMCACHED_SERVERS=") == NULL)
            fputs(line, out);
    fclose(in);
    fclose(out);
}

/* Runs calendar-stress against the fake answering as a says (--settle
 * settle_s, or its default when NULL); returns its exit status, its output
 * in out. */
static int
run_against_fake(const struct fake_answers *a, const char *settle_s, char *out, size_t outlen)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    answers = a;
    scrapes = 0;
    struct MHD_Daemon *d =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                         fake_request, NULL, MHD_OPTION_SOCK_ADDR, &addr, MHD_OPTION_END);
    ck_assert_msg(d != NULL, "the fake calendard did not start");
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    ck_assert(info != NULL && info->port != 0);
    char url[64], env_path[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", (unsigned)info->port);
    env_without_memcached(env_path, sizeof(env_path));
    char *argv[] = {"bin/calendar-stress",
                    "--stack-env",
                    env_path,
                    "--url",
                    url,
                    "--clients",
                    "4",
                    "--listings",
                    "5",
                    "--duration",
                    "2",
                    settle_s ? "--settle" : NULL,
                    (char *)settle_s,
                    NULL};
    int rc = proc_run(argv, out, outlen, 60);
    unlink(env_path);
    MHD_stop_daemon(d);
    return rc;
}

static char out[1 << 20];

/* The last 2000 bytes of out, where the run's verdict and errors are. */
static const char *
tail_of(const char *s)
{
    size_t n = strlen(s);
    return n > 2000 ? s + n - 2000 : s;
}

/* A run against the fake answering as a says must exit 1 with
 * protocol_errors above zero and a line holding each of the two needles
 * (the second may be NULL). */
static void
expect_protocol_errors(const struct fake_answers *a, const char *needle, const char *also)
{
    int rc = run_against_fake(a, NULL, out, sizeof(out));
    ck_assert_msg(rc == 1, "exit %d: %s", rc, tail_of(out));
    const char *p = strstr(out, "\"protocol_errors\":");
    ck_assert_msg(p != NULL, "no protocol_errors in: %s", tail_of(out));
    ck_assert_int_gt(strtol(p + strlen("\"protocol_errors\":"), NULL, 10), 0);
    ck_assert_msg(strstr(out, needle) != NULL && (also == NULL || strstr(out, also) != NULL), "%s",
                  tail_of(out));
}

START_TEST(a_booking_answered_201_without_reservation_id_fails_the_run)
{
    static const struct fake_answers a = {201, "{\"status\":\"confirmed\",\"version\":2}", 404,
                                          "{}", 0};
    expect_protocol_errors(&a, "without a reservation_id and known status", NULL);
}
END_TEST

START_TEST(a_booking_answered_422_fails_the_run)
{
    static const struct fake_answers a = {
        422, "{\"error\":{\"code\":\"stay_too_long\",\"message\":\"x\"}}", 404, "{}", 0};
    expect_protocol_errors(&a, "protocol_errors: key ", " answered 422: ");
}
END_TEST

START_TEST(a_booking_answered_201_without_total_price_fails_the_run)
{
    static const struct fake_answers a = {
        201, "{\"reservation_id\":77,\"status\":\"confirmed\",\"version\":2}", 404, "{}", 0};
    expect_protocol_errors(&a, "without a positive total_price", NULL);
}
END_TEST

/* Bookings acknowledged (that SQL then lacks: lost_acknowledged too), their
 * cancels answered 404. */
START_TEST(a_cancel_answered_404_fails_the_run)
{
    static const struct fake_answers a = {
        201, "{\"reservation_id\":77,\"status\":\"confirmed\",\"version\":2,\"total_price\":20000}",
        404, "{\"error\":{\"code\":\"not_found\",\"message\":\"x\"}}", 0};
    expect_protocol_errors(&a, "protocol_errors: cancel of ", NULL);
}
END_TEST

/* Every booking answered 503 overloaded, so nothing is booked and the
 * verify has nothing against the run: it exits 3 (tested nothing, or not
 * verified), and what decides is the wait for calendard's requests. Slow:
 * each booking is sent again for some 8 s. */
static const struct fake_answers overloaded_always = {
    503, "{\"error\":{\"code\":\"overloaded\",\"message\":\"x\"}}", 404, "{}", 0};

/* Every booking refused at once (the verify then finds no refusal kept in
 * SQL: exit 1); what is looked at is the wait's own lines and JSON. */
static const struct fake_answers refused_always = {
    409, "{\"error\":{\"code\":\"nights_unavailable\",\"message\":\"x\"}}", 404, "{}", 0};

/* A run against the fake answering as a says, its /metrics as busy_scrapes
 * says, with --settle settle_s, must exit want_rc with a line holding line
 * and its JSON holding json (in_flight_at_verify). */
static void
expect_settled(struct fake_answers a, int busy_scrapes, const char *settle_s, int want_rc,
               const char *line, const char *json)
{
    a.busy_scrapes = busy_scrapes;
    int rc = run_against_fake(&a, settle_s, out, sizeof(out));
    ck_assert_msg(rc == want_rc, "exit %d: %s", rc, tail_of(out));
    ck_assert_msg(strstr(out, line) != NULL, "no \"%s\" in: %s", line, tail_of(out));
    ck_assert_msg(strstr(out, json) != NULL, "no %s in: %s", json, tail_of(out));
}

/* Requests in flight at calendard after the load: the verify waits until
 * none is left (one the clients gave up on may still commit). */
START_TEST(the_verify_waits_for_calendards_requests_in_flight)
{
    /* 60 scrapes: some 1.2 s of polls every 20 ms. */
    expect_settled(refused_always, 60, "30", 1,
                   "calendar-stress: calendard's requests in flight ended after",
                   "\"in_flight_at_verify\":0");
    ck_assert_int_gt(scrapes, 60);
}
END_TEST

/* Still in flight after --settle: the run is not verified (exit 3), and
 * says why. */
START_TEST(requests_still_in_flight_leave_the_run_unverified)
{
    expect_settled(overloaded_always, -1, "1", 3,
                   "2 requests were still in flight at calendard when the verify began: the run "
                   "is not verified",
                   "\"in_flight_at_verify\":2");
    ck_assert_msg(strstr(out, "\"ok\":false") != NULL, "%s", tail_of(out));
}
END_TEST

/* A /metrics answered 503 to the end of --settle: the run cannot know
 * what is in flight (null), and says so. */
START_TEST(an_unanswered_metrics_leaves_the_run_unverified)
{
    expect_settled(refused_always, -2, "1", 1,
                   "calendar-stress: calendard did not answer its /metrics after",
                   "\"in_flight_at_verify\":null");
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("stress_protocol");
    TCase *tc = tcase_create("fake calendard");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, a_booking_answered_201_without_reservation_id_fails_the_run);
    tcase_add_test(tc, a_booking_answered_201_without_total_price_fails_the_run);
    tcase_add_test(tc, a_booking_answered_422_fails_the_run);
    tcase_add_test(tc, a_cancel_answered_404_fails_the_run);
    tcase_add_test(tc, the_verify_waits_for_calendards_requests_in_flight);
    tcase_add_test(tc, requests_still_in_flight_leave_the_run_unverified);
    tcase_add_test(tc, an_unanswered_metrics_leaves_the_run_unverified);
    suite_add_tcase(s, tc);
    return unit_run(s);
}
