/* libFuzzer target: the relay's decoders of what a shard sends, which need no
 * server: a binlog event (binlog_decode), a TABLE_MAP body and the rows of a
 * ROWS event body against it (rowimage_*), and a COMPRESSED column's value
 * (colcomp_decode). The input's first byte splits the rest into the
 * TABLE_MAP body and the ROWS body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/binlog.h"
#include "cdc/colcomp.h"
#include "cdc/rowimage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every row of body, as each ROWS event type, against table t. */
static void
rows_of(const uint8_t *body, size_t len, const struct rowimage_table *t)
{
    static const uint8_t types[] = {ROWIMAGE_WRITE_V1, ROWIMAGE_UPDATE_V1, ROWIMAGE_DELETE_V1,
                                    ROWIMAGE_WRITE_V2};
    static struct event_value before[ROWIMAGE_MAX_COLS], after[ROWIMAGE_MAX_COLS];
    char err[256];
    for (size_t i = 0; i < sizeof(types); i++) {
        struct rowimage_rows rows;
        if (rowimage_rows_begin(body, len, types[i], &rows, err, sizeof(err)) != CAL_OK)
            continue;
        /* Bounded: a row takes at least a byte, so body ends it. */
        for (size_t n = 0;
             n <= len && rowimage_rows_next(&rows, t, before, after, err, sizeof(err)) == 1; n++)
            ;
        rowimage_rows_deinit(&rows);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct binlog_decoder d = {.checksum = size > 0 && (data[0] & 1)};
    struct binlog_event ev;
    binlog_decode(&d, data, size, &ev, err, sizeof(err));

    const uint8_t *out;
    size_t outlen;
    void *owned = NULL;
    if (colcomp_decode(data, size, (size_t)1 << 16, &out, &outlen, &owned, err, sizeof(err)) ==
        CAL_OK)
        free(owned);

    if (size < 1)
        return 0;
    size_t split = data[0] < size - 1 ? data[0] : size - 1;
    const uint8_t *map = data + 1, *rows = data + 1 + split;
    struct rowimage_table *t = calloc(1, sizeof(*t));
    uint64_t id;
    char db[ROWIMAGE_NAME_MAX], table[ROWIMAGE_NAME_MAX];
    rowimage_table_peek(map, split, &id, db, table, err, sizeof(err));
    rowimage_rows_table_id(rows, size - 1 - split, &id, err, sizeof(err));
    if (t != NULL && rowimage_table_parse(map, split, t, err, sizeof(err)) == CAL_OK)
        rows_of(rows, size - 1 - split, t);
    free(t);
    return 0;
}
