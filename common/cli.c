/* The command line every daemon shares. */
#include "common/cli.h"

#include <getopt.h>
#include <stdbool.h>

enum cli_action
cli_parse(int argc, char **argv, void (*usage)(FILE *out), const struct conf_item *items,
          size_t nitems, const char **config)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", no_argument, NULL, 'k'},
                                         {"sample-config", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    bool check = false;
    int c;
    *config = NULL;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *config = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 's':
            conf_print_sample(items, nitems, stdout);
            return CLI_EXIT_OK;
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        default:
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (*config == NULL || optind != argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    return check ? CLI_CHECK : CLI_RUN;
}
