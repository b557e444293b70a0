/* Config-table rows for a database connection (struct db_conf inside a
 * program's config struct), shared by every program's table. */
#ifndef CAL_DBCONF_H
#define CAL_DBCONF_H

#include "common/conf.h"
#include "common/db.h"

/* Where: host, port, database. */
#define DBCONF_ADDRESS_ITEMS(sec, T, f)                                                            \
    CONF_STR_ITEM(sec, "host", T, f.host, "127.0.0.1", "server address"),                          \
        CONF_INT_ITEM(sec, "port", T, f.port, 1, 65535, "3306", "server port"),                    \
        CONF_STR_ITEM(sec, "database", T, f.database, "calendar_catalog", "database name")

/* Who and how: credentials, timeouts, TLS; dflt_user: the default database user. */
#define DBCONF_SESSION_ITEMS(sec, T, f, dflt_user)                                                 \
    CONF_STR_ITEM(sec, "user", T, f.user, dflt_user, "database user"),                             \
        CONF_STR_CHECK_ITEM(sec, "password_file", T, f.password_file, "", conf_check_secret_file,  \
                            "file holding the password (mode 0600); never put it on a command"     \
                            " line"),                                                              \
        CONF_INT_ITEM(sec, "connect_timeout_ms", T, f.connect_timeout_ms, 100, 60000, "2000",      \
                      "connect timeout (whole seconds, rounded up)"),                              \
        CONF_INT_ITEM(sec, "read_timeout_ms", T, f.read_timeout_ms, 1000, 600000, "5000",          \
                      "timeout of every read from the server (whole seconds, rounded up)"),        \
        CONF_INT_ITEM(sec, "write_timeout_ms", T, f.write_timeout_ms, 1000, 600000, "5000",        \
                      "timeout of every write to the server (whole seconds, rounded up)"),         \
        CONF_INT_ITEM(sec, "lock_wait_timeout_s", T, f.lock_wait_timeout_s, 1, 3600, "2",          \
                      "innodb_lock_wait_timeout of each session; read_timeout_ms must exceed"      \
                      " it by 2 s"),                                                               \
        CONF_BOOL_ITEM(sec, "tls", T, f.tls, "false", "require TLS to the server"),                \
        CONF_BOOL_ITEM(sec, "tls_verify", T, f.tls_verify, "true",                                 \
                       "verify the server certificate against tls_ca when tls is on"),             \
        CONF_STR_CHECK_ITEM(sec, "tls_ca", T, f.tls_ca, "", conf_check_readable_file,              \
                            "CA bundle that signed the server certificate; when set, a file"       \
                            " readable at load")

#endif
