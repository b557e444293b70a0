/* MariaDB COMPRESSED column values: the header byte read here, the data
 * inflated with zlib, every length checked against the value and the
 * caller's bound (the value comes from the network). */
#include "cdc/colcomp.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#include "common/util.h"

#define METHOD_STORED 0
#define METHOD_ZLIB 8
#define HEADER_RAW_DEFLATE 0x08
#define HEADER_LENGTH_BYTES 0x07

cal_status
colcomp_decode(const uint8_t *value, size_t len, size_t max, const uint8_t **out, size_t *outlen,
               void **owned, char *err, size_t errlen)
{
    *owned = NULL;
    if (len == 0) { /* an empty value has no header */
        *out = value;
        *outlen = 0;
        return CAL_OK;
    }
    unsigned method = value[0] >> 4;
    if (method == METHOD_STORED) {
        if (len - 1 > max) {
            snprintf(err, errlen, "stored value of %zu bytes over its column's %zu", len - 1, max);
            return CAL_EINVAL;
        }
        *out = value + 1;
        *outlen = len - 1;
        return CAL_OK;
    }
    if (method != METHOD_ZLIB) {
        snprintf(err, errlen, "unknown compression method %u (header 0x%02x)", method, value[0]);
        return CAL_EINVAL;
    }
    size_t nlen = value[0] & HEADER_LENGTH_BYTES;
    if (nlen < 1 || nlen > 4 || len - 1 < nlen) {
        snprintf(err, errlen, "malformed compressed value (header 0x%02x, %zu bytes)", value[0],
                 len);
        return CAL_EINVAL;
    }
    uint64_t original = 0;
    for (size_t i = 0; i < nlen; i++)
        original = (original << 8) | value[1 + i];
    size_t in_len = len - 1 - nlen;
    if (original > max || in_len > UINT_MAX) {
        snprintf(err, errlen, "compressed value inflates to %llu bytes, over the %zu allowed",
                 (unsigned long long)original, max);
        return CAL_EINVAL;
    }
    uint8_t *buf = cal_malloc(original > 0 ? (size_t)original : 1);
    z_stream zs = {0};
    zs.next_in = (Bytef *)(value + 1 + nlen);
    zs.avail_in = (uInt)in_len;
    zs.next_out = buf;
    zs.avail_out = (uInt)original;
    int wbits = (value[0] & HEADER_RAW_DEFLATE) ? -MAX_WBITS : MAX_WBITS;
    int rc = inflateInit2(&zs, wbits);
    if (rc == Z_OK) {
        rc = inflate(&zs, Z_FINISH);
        inflateEnd(&zs);
    }
    /* MariaDB takes what the stream ends with, up to the length it wrote. */
    if (rc != Z_STREAM_END) {
        const char *why = zs.msg != NULL                    ? zs.msg
                          : rc == Z_BUF_ERROR || rc == Z_OK ? "truncated, or over its length"
                                                            : zError(rc);
        snprintf(err, errlen, "compressed value of %llu bytes does not inflate: %s",
                 (unsigned long long)original, why);
        free(buf);
        return CAL_EINVAL;
    }
    *out = buf;
    *outlen = (size_t)zs.total_out;
    *owned = buf;
    return CAL_OK;
}
