/* Unit tests of cdc/colcomp: MariaDB's COMPRESSED column values (header
 * byte, original length, zlib data) decode to what was written, whether
 * stored as is, deflated raw or in a zlib stream; malformed ones, unknown
 * methods and values over their bound are refused, never overread. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cdc/colcomp.h"
#include "tests/lib/unit.h"

/* A compressed value as MariaDB writes it: header 0x80 | raw?8 | nlen, the
 * original length in nlen big-endian bytes, then the deflated data. */
static size_t
compressed(uint8_t *out, size_t cap, const char *text, size_t len, bool raw, unsigned nlen)
{
    out[0] = (uint8_t)(0x80 | (raw ? 0x08 : 0) | nlen);
    for (unsigned i = 0; i < nlen; i++)
        out[1 + i] = (uint8_t)(len >> (8 * (nlen - 1 - i)));
    z_stream zs = {0};
    ck_assert_int_eq(
        deflateInit2(&zs, 6, Z_DEFLATED, raw ? -MAX_WBITS : MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
        Z_OK);
    zs.next_in = (Bytef *)text;
    zs.avail_in = (uInt)len;
    zs.next_out = out + 1 + nlen;
    zs.avail_out = (uInt)(cap - 1 - nlen);
    ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t n = 1 + nlen + zs.total_out;
    deflateEnd(&zs);
    return n;
}

START_TEST(values_decode_as_written)
{
    const uint8_t *out;
    size_t outlen;
    void *owned;
    char err[256];
    /* Empty: no header. */
    ck_assert_int_eq(
        colcomp_decode((const uint8_t *)"", 0, 10, &out, &outlen, &owned, err, sizeof(err)),
        CAL_OK);
    ck_assert_uint_eq(outlen, 0);
    ck_assert_ptr_null(owned);
    /* Stored as is (under column_compression_threshold): borrowed. */
    const uint8_t stored[] = {0x00, 's', 'h', 'o', 'r', 't'};
    ck_assert_int_eq(
        colcomp_decode(stored, sizeof(stored), 5, &out, &outlen, &owned, err, sizeof(err)), CAL_OK);
    ck_assert_ptr_eq(out, stored + 1);
    ck_assert_uint_eq(outlen, 5);
    ck_assert_ptr_null(owned);

    char text[70000];
    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = "abcdefgh"[(i * 7 + i / 100) % 8];
    static uint8_t buf[80000];
    const size_t lens[] = {2, 255, 300, 65535, sizeof(text)};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        for (int raw = 0; raw <= 1; raw++) {
            size_t len = lens[k];
            unsigned nlen = len < 256 ? 1 : len < 65536 ? 2 : 3;
            size_t n = compressed(buf, sizeof(buf), text, len, raw, nlen);
            ck_assert_msg(colcomp_decode(buf, n, len, &out, &outlen, &owned, err, sizeof(err)) ==
                              CAL_OK,
                          "%zu bytes, raw %d: %s", len, raw, err);
            ck_assert_ptr_nonnull(owned);
            ck_assert_ptr_eq(out, owned);
            ck_assert_uint_eq(outlen, len);
            ck_assert(memcmp(out, text, len) == 0);
            free(owned);
            /* A length stored in more bytes than it needs (4) reads the same. */
            n = compressed(buf, sizeof(buf), text, len, raw, 4);
            ck_assert_int_eq(colcomp_decode(buf, n, len, &out, &outlen, &owned, err, sizeof(err)),
                             CAL_OK);
            ck_assert(outlen == len && memcmp(out, text, len) == 0);
            free(owned);
        }
    }
}
END_TEST

START_TEST(bad_values_are_refused)
{
    const uint8_t *out;
    size_t outlen;
    void *owned = (void *)1;
    char err[256];
    static uint8_t buf[4096];
    const char text[] = "hello hello hello hello hello hello hello hello";
    size_t len = sizeof(text) - 1;
    size_t n = compressed(buf, sizeof(buf), text, len, true, 1);

    /* Over the caller's bound: the original length, or a stored value. */
    ck_assert_int_eq(colcomp_decode(buf, n, len - 1, &out, &outlen, &owned, err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_ptr_null(owned);
    ck_assert_ptr_nonnull(strstr(err, "over"));
    const uint8_t stored[] = {0x00, 'a', 'b', 'c'};
    ck_assert_int_eq(
        colcomp_decode(stored, sizeof(stored), 2, &out, &outlen, &owned, err, sizeof(err)),
        CAL_EINVAL);
    /* Every cut of the value: refused, never overread. */
    for (size_t cut = 1; cut < n; cut++) {
        uint8_t *copy = malloc(cut); /* ASan sees a read past the cut */
        memcpy(copy, buf, cut);
        ck_assert_int_eq(colcomp_decode(copy, cut, len, &out, &outlen, &owned, err, sizeof(err)),
                         CAL_EINVAL);
        ck_assert_ptr_null(owned);
        free(copy);
    }
    /* A stated length below the data: the data does not fit. */
    buf[1] = (uint8_t)(len - 1);
    ck_assert_int_eq(colcomp_decode(buf, n, len, &out, &outlen, &owned, err, sizeof(err)),
                     CAL_EINVAL);
    buf[1] = (uint8_t)len;
    /* A zlib stream read as raw deflate (bit 3 flipped) is not deflate. */
    buf[0] ^= 0x08;
    ck_assert_int_eq(colcomp_decode(buf, n, len, &out, &outlen, &owned, err, sizeof(err)),
                     CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "inflate"));
    buf[0] ^= 0x08;
    /* No length bytes, more than 4, an unknown method. */
    const uint8_t headers[] = {0x88, 0x8d, 0x98, 0x48, 0xf9};
    for (size_t i = 0; i < sizeof(headers); i++) {
        uint8_t h = buf[0];
        buf[0] = headers[i];
        ck_assert_int_eq(colcomp_decode(buf, n, len, &out, &outlen, &owned, err, sizeof(err)),
                         CAL_EINVAL);
        ck_assert_ptr_null(owned);
        buf[0] = h;
    }
    ck_assert_int_eq(colcomp_decode(buf, n, len, &out, &outlen, &owned, err, sizeof(err)), CAL_OK);
    ck_assert(outlen == len && memcmp(out, text, len) == 0);
    free(owned);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("colcomp");
    UNIT_CASE(s, values_decode_as_written);
    UNIT_CASE(s, bad_values_are_refused);
    return unit_run(s);
}
