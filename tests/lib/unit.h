/* Shared scaffolding of the Check suites: one TCase per behaviour, fork mode. */
#ifndef CAL_TEST_UNIT_H
#define CAL_TEST_UNIT_H

#include <check.h>

/* A case's own waits decide when it fails (the longest, a hung calendard's
 * exit, allows 30 s): Check's default of 4 s would kill a case mid-wait on a
 * loaded machine (TSan, 2 cores). run-tests.sh bounds each binary besides. */
#define UNIT_CASE_TIMEOUT_S 60

/* Adds test fn as its own TCase named after it. */
#define UNIT_CASE(suite, fn)                                                                       \
    do {                                                                                           \
        TCase *tc_ = tcase_create(#fn);                                                            \
        tcase_set_timeout(tc_, UNIT_CASE_TIMEOUT_S);                                               \
        tcase_add_test(tc_, fn);                                                                   \
        suite_add_tcase(suite, tc_);                                                               \
    } while (0)

/* Runs the suite and returns the process exit status. */
int unit_run(Suite *suite);

#endif
