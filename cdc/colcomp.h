/* MariaDB's COMPRESSED columns (VARCHAR, VARBINARY, BLOB, TEXT ... COMPRESSED)
 * as the binlog's row images carry them, after their length prefix: empty,
 * or one header byte and the data. Header bits 4-7 name the method (0: the
 * value follows as it is; 8: zlib), bit 3 is set for a raw deflate stream
 * (column_compression_zlib_wrap=OFF, the default) and clear for a zlib
 * stream, bits 0-2 count the bytes of the original length that follow,
 * big-endian. The only module that includes zlib.h. */
#ifndef CAL_COLCOMP_H
#define CAL_COLCOMP_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Decodes the len bytes at value into at most max bytes. A value stored as
 * it is (or empty) is borrowed: *out points into value and *owned is NULL.
 * An inflated one is in *owned, which *out points to; caller frees *owned
 * with free(). CAL_EINVAL and err filled for a malformed value, an unknown
 * method, or an original length over max (nothing to free then). */
cal_status colcomp_decode(const uint8_t *value, size_t len, size_t max, const uint8_t **out,
                          size_t *outlen, void **owned, char *err, size_t errlen);

#endif
