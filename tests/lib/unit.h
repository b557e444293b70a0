/* Shared scaffolding of the Check suites: one TCase per behaviour, fork mode. */
#ifndef CAL_TEST_UNIT_H
#define CAL_TEST_UNIT_H

#include <check.h>

/* Adds test fn as its own TCase named after it. */
#define UNIT_CASE(suite, fn)                                                                       \
    do {                                                                                           \
        TCase *tc_ = tcase_create(#fn);                                                            \
        tcase_add_test(tc_, fn);                                                                   \
        suite_add_tcase(suite, tc_);                                                               \
    } while (0)

/* Runs the suite and returns the process exit status. */
int unit_run(Suite *suite);

#endif
