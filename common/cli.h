/* The command line every daemon shares: --config FILE, --check-config,
 * --sample-config, --help. */
#ifndef CAL_CLI_H
#define CAL_CLI_H

#include <stdio.h>

#include "common/conf.h"

enum cli_action {
    CLI_RUN,        /* run with *config */
    CLI_CHECK,      /* validate *config and exit */
    CLI_EXIT_OK,    /* help or sample printed: exit 0 */
    CLI_EXIT_USAGE, /* bad arguments, usage printed on stderr: exit 2 */
};

/* usage(out) prints the program's help; the sample config comes from the
 * program's config table. */
enum cli_action cli_parse(int argc, char **argv, void (*usage)(FILE *out),
                          const struct conf_item *items, size_t nitems, const char **config);

#endif
