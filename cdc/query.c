/* Binlog Query event statements -> what they mean to the relay (see
 * query.h). A tokenizer, not a parser: words, quoted names, dots; comments
 * and string literals skipped, MariaDB's executable comments read as code. */
#include "cdc/query.h"

#include <string.h>
#include <strings.h>

enum tok_type { TOK_END, TOK_WORD, TOK_DOT, TOK_OTHER };

struct tok {
    enum tok_type type;
    const char *s;
    size_t len;
    bool quoted; /* `name` or "name": never a keyword */
};

struct lexer {
    const char *p, *end;
    bool in_exec; /* inside an executable comment ("/" "*!50001 ..."): its text is code */
};

static bool
word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '$' || c >= 0x80;
}

static bool
at(const struct lexer *lx, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(lx->end - lx->p) >= n && memcmp(lx->p, s, n) == 0;
}

/* Skips a quoted run opened by q at lx->p; inside, q doubled is one q, and
 * in a string literal ('), a backslash escapes the next byte. */
static void
skip_quoted(struct lexer *lx, char q)
{
    lx->p++;
    while (lx->p < lx->end) {
        if (*lx->p == '\\' && q == '\'' && lx->p + 1 < lx->end) {
            lx->p += 2;
        } else if (*lx->p == q) {
            lx->p++;
            if (lx->p < lx->end && *lx->p == q)
                lx->p++;
            else
                return;
        } else {
            lx->p++;
        }
    }
}

static void
next(struct lexer *lx, struct tok *t)
{
    for (;;) {
        while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' ||
                                   *lx->p == '\r' || *lx->p == '\f'))
            lx->p++;
        if (lx->p >= lx->end) {
            *t = (struct tok){.type = TOK_END};
            return;
        }
        if (at(lx, "/*!") || at(lx, "/*M!")) {
            /* Executable comment: the server runs its text (if it is at
             * least the version given), so it is read as code. */
            lx->p += at(lx, "/*!") ? 3 : 4;
            while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9')
                lx->p++;
            lx->in_exec = true;
            continue;
        }
        if (lx->in_exec && at(lx, "*/")) {
            lx->p += 2;
            lx->in_exec = false;
            continue;
        }
        if (at(lx, "/*")) {
            const char *close = NULL;
            for (const char *q = lx->p + 2; q + 1 < lx->end; q++)
                if (q[0] == '*' && q[1] == '/') {
                    close = q;
                    break;
                }
            lx->p = close != NULL ? close + 2 : lx->end;
            continue;
        }
        if (*lx->p == '#' || (at(lx, "--") && (lx->p + 2 == lx->end || lx->p[2] == ' ' ||
                                               lx->p[2] == '\t' || lx->p[2] == '\n'))) {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
            continue;
        }
        break;
    }
    const char *start = lx->p;
    char c = *lx->p;
    if (c == '`' || c == '"') {
        /* "name" is a name under ANSI_QUOTES: taken as one, at worst a
         * string that happens to read like a table costs a flush. */
        skip_quoted(lx, c);
        const char *stop = lx->p > start + 1 && lx->p[-1] == c ? lx->p - 1 : lx->p;
        *t = (struct tok){
            .type = TOK_WORD, .s = start + 1, .len = (size_t)(stop - start - 1), .quoted = true};
        return;
    }
    if (c == '\'') {
        skip_quoted(lx, c);
        *t = (struct tok){.type = TOK_OTHER, .s = start, .len = (size_t)(lx->p - start)};
        return;
    }
    if (c == '.') {
        lx->p++;
        *t = (struct tok){.type = TOK_DOT, .s = start, .len = 1};
        return;
    }
    if (word_byte((unsigned char)c)) {
        while (lx->p < lx->end && word_byte((unsigned char)*lx->p))
            lx->p++;
        *t = (struct tok){.type = TOK_WORD, .s = start, .len = (size_t)(lx->p - start)};
        return;
    }
    lx->p++;
    *t = (struct tok){.type = TOK_OTHER, .s = start, .len = 1};
}

static bool
name_eq(const char *s, size_t len, const char *name)
{
    return name != NULL && strlen(name) == len && strncasecmp(s, name, len) == 0;
}

static bool
keyword(const struct tok *t, const char *kw)
{
    return t->type == TOK_WORD && !t->quoted && name_eq(t->s, t->len, kw);
}

/* Bits of the relayed tables that sql names in the relayed database: a name
 * after "<db>." is that database's, one without the default database's. */
static uint32_t
tables_named(const char *sql, size_t len, const char *default_db, size_t dblen,
             const struct query_target *target)
{
    struct lexer lx = {.p = sql, .end = sql + len};
    struct tok prev2 = {.type = TOK_END}, prev = {.type = TOK_END}, t;
    uint32_t named = 0;
    bool default_ours = dblen > 0 && name_eq(default_db, dblen, target->db);
    for (next(&lx, &t); t.type != TOK_END; prev2 = prev, prev = t, next(&lx, &t)) {
        if (t.type != TOK_WORD)
            continue;
        bool qualified = prev.type == TOK_DOT && prev2.type == TOK_WORD;
        bool ours = qualified ? name_eq(prev2.s, prev2.len, target->db) : default_ours;
        if (!ours)
            continue;
        for (uint32_t i = 0; i < 32 && target->tables[i] != NULL; i++)
            if (name_eq(t.s, t.len, target->tables[i]))
                named |= 1u << i;
    }
    return named;
}

/* Whether sql names the relayed database as a qualifier ("<db>.x"). */
static bool
db_named(const char *sql, size_t len, const struct query_target *target)
{
    struct lexer lx = {.p = sql, .end = sql + len};
    struct tok prev = {.type = TOK_END}, t;
    for (next(&lx, &t); t.type != TOK_END; prev = t, next(&lx, &t))
        if (t.type == TOK_DOT && prev.type == TOK_WORD && name_eq(prev.s, prev.len, target->db))
            return true;
    return false;
}

/* DROP DATABASE|SCHEMA [IF EXISTS] <the relayed database>; lx after DROP. */
static bool
drops_the_database(struct lexer lx, const struct query_target *target)
{
    struct tok t;
    next(&lx, &t);
    if (!keyword(&t, "DATABASE") && !keyword(&t, "SCHEMA"))
        return false;
    next(&lx, &t);
    if (keyword(&t, "IF")) {
        next(&lx, &t);
        next(&lx, &t);
    }
    return t.type == TOK_WORD && name_eq(t.s, t.len, target->db);
}

enum query_kind
query_classify(const char *sql, size_t len, const char *default_db, size_t dblen,
               const struct query_target *target, uint32_t *named)
{
    *named = 0;
    struct lexer lx = {.p = sql, .end = sql + len};
    struct tok first, second;
    next(&lx, &first);
    struct lexer after_first = lx;
    next(&lx, &second);
    if (first.type == TOK_END)
        return QUERY_NONE;

    /* The frame of a transaction. */
    if (keyword(&first, "COMMIT"))
        return QUERY_COMMIT;
    if (keyword(&first, "ROLLBACK")) {
        struct lexer l2 = after_first;
        struct tok t;
        next(&l2, &t);
        if (keyword(&t, "WORK"))
            next(&l2, &t);
        return keyword(&t, "TO") ? QUERY_TXN : QUERY_COMMIT;
    }
    if (keyword(&first, "BEGIN") || keyword(&first, "SAVEPOINT") || keyword(&first, "RELEASE") ||
        (keyword(&first, "START") && keyword(&second, "TRANSACTION")))
        return QUERY_TXN;
    if (keyword(&first, "XA")) {
        if (keyword(&second, "START") || keyword(&second, "BEGIN"))
            return QUERY_XA_START;
        /* A prepared XA transaction's COMMIT or ROLLBACK is a group of its own. */
        if (keyword(&second, "COMMIT") || keyword(&second, "ROLLBACK"))
            return QUERY_COMMIT;
        return QUERY_TXN;
    }

    /* Statements that change no table's rows. */
    static const char *const harmless[] = {"GRANT",     "REVOKE",   "FLUSH",    "ANALYZE",
                                           "OPTIMIZE",  "CHECK",    "CHECKSUM", "INSTALL",
                                           "UNINSTALL", "SHUTDOWN", NULL};
    for (size_t i = 0; harmless[i] != NULL; i++)
        if (keyword(&first, harmless[i]))
            return QUERY_NONE;
    if (keyword(&first, "SET") && (keyword(&second, "PASSWORD") || keyword(&second, "ROLE") ||
                                   keyword(&second, "DEFAULT") || keyword(&second, "NAMES")))
        return QUERY_NONE;
    /* CREATE cannot change the rows of a table that exists; OR REPLACE can. */
    if (keyword(&first, "CREATE") && !keyword(&second, "OR"))
        return QUERY_NONE;

    /* Definitions: what they name is what they change. */
    if (keyword(&first, "CREATE") || keyword(&first, "ALTER") || keyword(&first, "DROP") ||
        keyword(&first, "RENAME") || keyword(&first, "TRUNCATE") || keyword(&first, "REPAIR")) {
        if (keyword(&first, "DROP") && drops_the_database(after_first, target))
            return QUERY_FLUSH;
        *named = tables_named(sql, len, default_db, dblen, target);
        return *named != 0 ? QUERY_FLUSH : QUERY_NONE;
    }

    /* Anything else may change data (INSERT, UPDATE, DELETE, REPLACE, LOAD
     * DATA, CALL, SET STATEMENT ... FOR, a statement this list does not
     * know), through triggers and views too: every relayed table of its
     * database may have changed. */
    bool default_ours = dblen > 0 && name_eq(default_db, dblen, target->db);
    if (default_ours || db_named(sql, len, target))
        return QUERY_FLUSH;
    return QUERY_NONE;
}

bool
query_group_step(struct query_group *g, enum query_kind kind)
{
    if (kind == QUERY_XA_START)
        g->xa = true;
    return kind == QUERY_COMMIT || (g->standalone && !g->xa);
}
