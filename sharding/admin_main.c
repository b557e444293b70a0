/* calendar-admin: schema migrations and cluster bootstrap (catalog, shards,
 * initial vbucket map). Moving vbuckets later is calendar-rebalance's job. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "common/dbconf.h"
#include "common/log.h"
#include "common/util.h"
#include "sharding/catalog.h"
#include "sharding/migrate.h"
#include "sharding/shardmap.h"

#define MAX_SHARDS 64

struct admin_conf {
    struct db_conf catalog;
    struct db_conf shard;
};

static const struct conf_item admin_items[] = {
    DBCONF_ADDRESS_ITEMS("catalog", struct admin_conf, catalog),
    DBCONF_SESSION_ITEMS("catalog", struct admin_conf, catalog, "cal_admin"),
    DBCONF_SESSION_ITEMS("shards", struct admin_conf, shard, "cal_admin"),
};

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: calendar-admin --config FILE [--schema-dir DIR] COMMAND [ARGS]\n"
            "\n"
            "Commands:\n"
            "  migrate                          apply new schema versions to the catalog and\n"
            "                                   to every registered shard\n"
            "  bootstrap --vbuckets N --shard HOST:PORT/DB [--shard ...]\n"
            "                                   create a cluster: migrate the catalog and the\n"
            "                                   shards, register them (ids 0,1,... in order) and\n"
            "                                   assign vbucket v to shard v mod nshards;\n"
            "                                   safe to run again with the same shards (a\n"
            "                                   shard owning vbuckets of another layout is\n"
            "                                   refused)\n"
            "  sample-config                    print an annotated config file\n"
            "\n"
            "Options:\n"
            "  --config FILE      INI with [catalog] (host, port, database, user, password_file)\n"
            "                     and [shards] (user, password_file) of an admin user\n"
            "  --schema-dir DIR   folder with catalog/ and shard/ SQL (default: the schema/\n"
            "                     folder beside bin/)\n"
            "  -h, --help         this text\n");
}

static struct db *
connect_or_die(struct db_conf *conf, const char *what)
{
    char err[512];
    struct db *db = db_connect(conf, err, sizeof(err));
    if (db == NULL) {
        fprintf(stderr, "calendar-admin: %s: %s\n", what, err);
        exit(1);
    }
    return db;
}

static int
migrate_one(struct db *db, const char *dir, const char *what)
{
    char err[512];
    int applied = 0, version = 0;
    if (migrate_apply(db, dir, &applied, err, sizeof(err)) != CAL_OK ||
        migrate_version(db, &version, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-admin: migrate %s: %s\n", what, err);
        return 1;
    }
    printf("%s: schema version %d (%d applied now)\n", what, version, applied);
    return 0;
}

static int
parse_shard_arg(const char *arg, struct db_conf *conf)
{
    char err[512];
    if (db_conf_parse_hostport(conf, arg, err, sizeof(err)) != CAL_OK) {
        /* Which --shard, unless it holds a secret. */
        fprintf(stderr, "calendar-admin: --shard%s%s: %s\n", strchr(arg, '@') ? "" : " ",
                strchr(arg, '@') ? "" : arg, err);
        return -1;
    }
    return 0;
}

static int
cmd_migrate(struct admin_conf *conf, const char *schema)
{
    char dir[PATH_MAX + 16], err[512];
    struct db *catalog = connect_or_die(&conf->catalog, "catalog");
    snprintf(dir, sizeof(dir), "%s/catalog", schema);
    int rc = migrate_one(catalog, dir, "catalog");
    struct shardmap *map = NULL;
    if (rc == 0 && shardmap_load(catalog, &map, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-admin: %s\n", err);
        rc = 1;
    }
    snprintf(dir, sizeof(dir), "%s/shard", schema);
    uint64_t max_id = 0;
    for (size_t i = 0; rc == 0 && i < map->nshards; i++) {
        struct db_conf sc = conf->shard;
        cal_strlcpy(sc.host, map->shards[i].host, sizeof(sc.host));
        sc.port = map->shards[i].port;
        cal_strlcpy(sc.database, map->shards[i].db_name, sizeof(sc.database));
        struct db *db = connect_or_die(&sc, sc.database);
        rc = migrate_one(db, dir, sc.database);
        uint64_t max = 0;
        if (rc == 0 && catalog_shard_max_id(db, &max, err, sizeof(err)) != CAL_OK) {
            fprintf(stderr, "calendar-admin: %s: %s\n", sc.database, err);
            rc = 1;
        }
        max_id = max > max_id ? max : max_id;
        db_close(db);
    }
    /* Every shard's ids below the next block: those of releases that made
     * them from the clock, which passed the table's first id in 2027. */
    bool moved = false;
    if (rc == 0 && catalog_ids_above(catalog, max_id, &moved, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-admin: catalog: %s\n", err);
        rc = 1;
    }
    if (moved)
        printf("reservation ids: the next block starts after %llu, the highest on the shards\n",
               (unsigned long long)max_id);
    shardmap_destroy(map);
    db_close(catalog);
    return rc;
}

static int
cmd_bootstrap(struct admin_conf *conf, const char *schema, int argc, char **argv)
{
    struct db_conf shards[MAX_SHARDS];
    uint32_t nshards = 0;
    long nvb = 0;
    char dir[PATH_MAX + 16], err[512] = "";
    static const struct option opts[] = {{"vbuckets", required_argument, NULL, 'v'},
                                         {"shard", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    int c;
    optind = 0; /* glibc: 0 starts a new scan (1 would keep the state of main's) */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'v') {
            char *end;
            nvb = strtol(optarg, &end, 10);
            if (*end != '\0' || nvb < 1 || nvb > SHARDMAP_MAX_VBUCKETS) {
                fprintf(stderr, "calendar-admin: --vbuckets must be 1..%d\n",
                        SHARDMAP_MAX_VBUCKETS);
                return 2;
            }
        } else if (c == 's') {
            if (nshards == MAX_SHARDS) {
                fprintf(stderr, "calendar-admin: at most %d shards\n", MAX_SHARDS);
                return 2;
            }
            shards[nshards] = conf->shard;
            if (parse_shard_arg(optarg, &shards[nshards]) != 0)
                return 2;
            nshards++;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        /* "--shard a b": b would be dropped, and a cluster of fewer shards made. */
        fprintf(stderr,
                "calendar-admin: bootstrap: unexpected argument '%s' (each shard needs"
                " its own --shard)\n",
                argv[optind]);
        return 2;
    }
    if (nvb == 0 || nshards == 0) {
        fprintf(stderr, "calendar-admin: bootstrap needs --vbuckets and at least one --shard\n");
        return 2;
    }
    struct db *catalog = connect_or_die(&conf->catalog, "catalog");
    snprintf(dir, sizeof(dir), "%s/catalog", schema);
    int rc = migrate_one(catalog, dir, "catalog");
    if (rc == 0 && catalog_set_num_vbuckets(catalog, (uint32_t)nvb, err, sizeof(err)) != CAL_OK)
        rc = 1;
    uint64_t have = 0;
    if (rc == 0 && catalog_count_vbuckets(catalog, &have, err, sizeof(err)) != CAL_OK)
        rc = 1;
    snprintf(dir, sizeof(dir), "%s/shard", schema);
    for (uint32_t i = 0; rc == 0 && i < nshards; i++) {
        struct db *db = connect_or_die(&shards[i], shards[i].database);
        bool known = false;
        rc = migrate_one(db, dir, shards[i].database);
        /* A shard id registered at another address refuses the run before
         * any fence row is written. */
        if (rc == 0 && catalog_shard_known(catalog, i, shards[i].host, shards[i].port,
                                           shards[i].database, &known, err, sizeof(err)) != CAL_OK)
            rc = 1;
        /* The fence rows before the map (catalog_assign_vbuckets, last), so
         * the catalog never names an owner that does not own; a shard new
         * to a cluster bootstrapped already must own nothing. */
        if (rc == 0 && have == 0 &&
            catalog_assign_owner_rows(db, (uint32_t)nvb, nshards, i, err, sizeof(err)) != CAL_OK)
            rc = 1;
        if (rc == 0 && have != 0 && !known &&
            catalog_shard_is_empty(db, err, sizeof(err)) != CAL_OK)
            rc = 1;
        if (rc == 0 && catalog_register_shard(catalog, i, shards[i].host, shards[i].port,
                                              shards[i].database, err, sizeof(err)) != CAL_OK)
            rc = 1;
        db_close(db);
    }
    if (rc == 0 && have == 0 &&
        catalog_assign_vbuckets(catalog, (uint32_t)nvb, nshards, err, sizeof(err)) != CAL_OK)
        rc = 1;
    if (rc != 0 && err[0] != '\0')
        fprintf(stderr, "calendar-admin: bootstrap: %s\n", err);
    if (rc == 0)
        printf("cluster: %ld vbuckets over %u shards%s\n", nvb, nshards,
               have ? " (already assigned; left as is)" : "");
    db_close(catalog);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *config = NULL;
    char schema[PATH_MAX];
    char err[512] = "";
    migrate_default_dir(schema, sizeof(schema));
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"schema-dir", required_argument, NULL, 'S'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "+hc:", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'S':
            cal_strlcpy(schema, optarg, sizeof(schema));
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[optind];
    if (strcmp(cmd, "sample-config") != 0 && strcmp(cmd, "migrate") != 0 &&
        strcmp(cmd, "bootstrap") != 0) {
        fprintf(stderr, "calendar-admin: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    /* bootstrap takes its own arguments; the others none (options go
     * before the command). */
    if (strcmp(cmd, "bootstrap") != 0 && optind + 1 < argc) {
        fprintf(stderr,
                "calendar-admin: %s takes no arguments, got '%s' (options go before the"
                " command)\n",
                cmd, argv[optind + 1]);
        return 2;
    }
    struct admin_conf conf;
    memset(&conf, 0, sizeof(conf));
    conf_defaults(admin_items, CAL_ARRAY_LEN(admin_items), &conf);
    if (strcmp(cmd, "sample-config") == 0) {
        conf_print_sample(admin_items, CAL_ARRAY_LEN(admin_items), stdout);
        return 0;
    }
    if (config == NULL) {
        fprintf(stderr, "calendar-admin: --config FILE is required\n");
        return 2;
    }
    if (conf_load(admin_items, CAL_ARRAY_LEN(admin_items), &conf, config, err, sizeof(err)) !=
            CAL_OK ||
        db_conf_check_timeouts(&conf.catalog, config, "catalog", err, sizeof(err)) != CAL_OK ||
        db_conf_check_timeouts(&conf.shard, config, "shards", err, sizeof(err)) != CAL_OK ||
        db_conf_read_password(&conf.catalog, err, sizeof(err)) != CAL_OK ||
        db_conf_read_password(&conf.shard, err, sizeof(err)) != CAL_OK) {
        fprintf(stderr, "calendar-admin: %s\n", err);
        return 2;
    }
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate(&conf, schema);
    return cmd_bootstrap(&conf, schema, argc - optind, argv + optind);
}
