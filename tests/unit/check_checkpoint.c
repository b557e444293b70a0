/* Unit tests of cdc/gtid and cdc/checkpoint: GTID position text, durable
 * checkpoint files, the guard on the domains a checkpoint holds, the state
 * directory lock. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cdc/checkpoint.h"
#include "cdc/gtid.h"
#include "tests/lib/unit.h"

START_TEST(gtid_positions)
{
    struct gtid_pos pos;
    char err[256], buf[GTID_POS_TEXT_MAX];
    ck_assert_int_eq(gtid_pos_parse(&pos, "", err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(pos.n, 0);
    ck_assert_int_eq(gtid_pos_format(&pos, buf, sizeof(buf)), CAL_OK);
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(gtid_pos_parse(&pos, " 2-5-9, 0-1-18446744073709551615 ", err, sizeof(err)),
                     CAL_OK);
    ck_assert_uint_eq(pos.n, 2);
    ck_assert_int_eq(gtid_pos_format(&pos, buf, sizeof(buf)), CAL_OK);
    ck_assert_str_eq(buf, "0-1-18446744073709551615,2-5-9");
    struct gtid g = {.domain_id = 1, .server_id = 3, .seq = 7};
    ck_assert_int_eq(gtid_pos_update(&pos, &g), CAL_OK);
    g = (struct gtid){.domain_id = 2, .server_id = 6, .seq = 10};
    ck_assert_int_eq(gtid_pos_update(&pos, &g), CAL_OK);
    ck_assert_int_eq(gtid_pos_format(&pos, buf, sizeof(buf)), CAL_OK);
    ck_assert_str_eq(buf, "0-1-18446744073709551615,1-3-7,2-6-10");
    ck_assert_int_eq(gtid_pos_format(&pos, buf, 10), CAL_EINVAL);
    struct gtid_pos again;
    ck_assert_int_eq(
        gtid_pos_parse(&again, "0-1-18446744073709551615,1-3-7,2-6-10", err, sizeof(err)), CAL_OK);
    ck_assert(gtid_pos_equal(&pos, &again));
    const char *bad[] = {"0-1",
                         "0-1-2,",
                         "a-1-2",
                         "0-1-2;1-1-1",
                         "0-1-2,0-3-4",
                         "4294967296-1-2",
                         "0-1-18446744073709551616",
                         "-1-1-1",
                         NULL};
    for (int i = 0; bad[i] != NULL; i++)
        ck_assert_msg(gtid_pos_parse(&pos, bad[i], err, sizeof(err)) == CAL_EINVAL, "%s", bad[i]);
}
END_TEST

/* The relay's stream starts from its checkpoint's domains: a 32nd domain
 * still fits, a 33rd is refused with a message naming it and leaves the
 * position as it was, and the domains already held keep advancing. */
START_TEST(a_33rd_domain_is_refused)
{
    char text[GTID_POS_TEXT_MAX] = "", err[256] = "";
    size_t off = 0;
    for (int d = 0; d < GTID_MAX_DOMAINS - 1; d++)
        off += (size_t)snprintf(text + off, sizeof(text) - off, "%s%d-1-%d", d ? "," : "", d, d);
    struct gtid_pos seen, before;
    ck_assert_int_eq(gtid_pos_parse(&seen, text, err, sizeof(err)), CAL_OK);
    struct gtid g = {.domain_id = 100, .server_id = 2, .seq = 1};
    ck_assert_int_eq(checkpoint_admit(&seen, &g, err, sizeof(err)), CAL_OK);
    ck_assert_uint_eq(seen.n, GTID_MAX_DOMAINS);
    before = seen;
    g = (struct gtid){.domain_id = 101, .server_id = 2, .seq = 1};
    ck_assert_int_eq(checkpoint_admit(&seen, &g, err, sizeof(err)), CAL_EINVAL);
    ck_assert_msg(strstr(err, "GTID domain 101 ") != NULL, "%s", err);
    ck_assert(gtid_pos_equal(&seen, &before));
    g = (struct gtid){.domain_id = 100, .server_id = 2, .seq = 2};
    ck_assert_int_eq(checkpoint_admit(&seen, &g, err, sizeof(err)), CAL_OK);
    g = (struct gtid){.domain_id = 0, .server_id = 3, .seq = 50};
    ck_assert_int_eq(checkpoint_admit(&seen, &g, err, sizeof(err)), CAL_OK);
    ck_assert_int_eq(gtid_pos_format(&seen, text, sizeof(text)), CAL_OK);
    ck_assert_msg(strncmp(text, "0-3-50,", 7) == 0 && strstr(text, ",100-2-2") != NULL, "%s", text);
}
END_TEST

static void
tmpdir(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/check_checkpoint_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

START_TEST(checkpoint_round_trip)
{
    char dir[64], path[128], err[256];
    tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/checkpoint", dir);
    struct checkpoint cp;
    ck_assert_int_eq(checkpoint_load(path, &cp, err, sizeof(err)), CAL_ENOTFOUND);
    struct checkpoint w = {
        .gtid = "0-1-44,3-2-1", .file = "binlog.000002", .pos = 4711, .updated_ms = 99};
    ck_assert_int_eq(checkpoint_store(path, &w, err, sizeof(err)), CAL_OK);
    ck_assert_int_eq(checkpoint_load(path, &cp, err, sizeof(err)), CAL_OK);
    ck_assert_str_eq(cp.gtid, "0-1-44,3-2-1");
    ck_assert_str_eq(cp.file, "binlog.000002");
    ck_assert_uint_eq(cp.pos, 4711);
    ck_assert_uint_eq(cp.updated_ms, 99);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    ck_assert_int_ne(access(tmp, F_OK), 0); /* no temp file left behind */

    /* Replacing keeps exactly the new content; an empty position is valid. */
    struct checkpoint e = {.gtid = ""};
    ck_assert_int_eq(checkpoint_store(path, &e, err, sizeof(err)), CAL_OK);
    ck_assert_int_eq(checkpoint_load(path, &cp, err, sizeof(err)), CAL_OK);
    ck_assert_str_eq(cp.gtid, "");

    FILE *f = fopen(path, "w");
    fputs("gtid=0-1-x\n", f);
    fclose(f);
    ck_assert_int_eq(checkpoint_load(path, &cp, err, sizeof(err)), CAL_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, ":1:"));
    f = fopen(path, "w");
    fputs("# no position\nfile=x\n", f);
    fclose(f);
    ck_assert_int_eq(checkpoint_load(path, &cp, err, sizeof(err)), CAL_EINVAL);
    f = fopen(path, "w");
    fputs("garbage\n", f);
    fclose(f);
    ck_assert_int_eq(checkpoint_load(path, &cp, err, sizeof(err)), CAL_EINVAL);
    unlink(path);
    ck_assert_int_eq(checkpoint_store("/nonexistent-dir/x/checkpoint", &w, err, sizeof(err)),
                     CAL_ERR);
    rmdir(dir);
}
END_TEST

/* The longest position a checkpoint can hold, 32 domains of the largest
 * numbers (1,375 characters), is stored and loaded back whole; a longer
 * line is refused by its line number. */
START_TEST(the_longest_position_round_trips)
{
    char dir[64], path[128], err[256];
    tmpdir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/checkpoint", dir);
    struct gtid_pos pos = {0}, back;
    for (uint32_t d = 0; d < GTID_MAX_DOMAINS; d++) {
        struct gtid g = {.domain_id = UINT32_MAX - d, .server_id = UINT32_MAX, .seq = UINT64_MAX};
        ck_assert_int_eq(gtid_pos_update(&pos, &g), CAL_OK);
    }
    struct checkpoint w = {.file = "binlog.000009", .pos = 4}, cp;
    ck_assert_int_eq(gtid_pos_format(&pos, w.gtid, sizeof(w.gtid)), CAL_OK);
    ck_assert_uint_eq(strlen(w.gtid), 32 * 42 + 31);
    ck_assert_int_eq(checkpoint_store(path, &w, err, sizeof(err)), CAL_OK);
    ck_assert_msg(checkpoint_load(path, &cp, err, sizeof(err)) == CAL_OK, "%s", err);
    ck_assert_str_eq(cp.gtid, w.gtid);
    ck_assert_int_eq(gtid_pos_parse(&back, cp.gtid, err, sizeof(err)), CAL_OK);
    ck_assert(gtid_pos_equal(&back, &pos));

    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("file=x\ngtid=", f);
    for (int i = 0; i < 3000; i++)
        fputc('1', f);
    fputs("\n", f);
    fclose(f);
    ck_assert_int_eq(checkpoint_load(path, &cp, err, sizeof(err)), CAL_EINVAL);
    ck_assert_msg(strstr(err, ":2: line too long") != NULL, "%s", err);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(state_dir_lock_is_exclusive)
{
    char dir[64], sub[128], err[256];
    tmpdir(dir, sizeof(dir));
    snprintf(sub, sizeof(sub), "%s/relay", dir);
    int fd = checkpoint_lock_dir(sub, err, sizeof(err));
    ck_assert_msg(fd >= 0, "%s", err);
    ck_assert_int_eq(checkpoint_lock_dir(sub, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "locked"));
    close(fd);
    fd = checkpoint_lock_dir(sub, err, sizeof(err));
    ck_assert_int_ge(fd, 0);
    close(fd);
    char lock[160];
    snprintf(lock, sizeof(lock), "%s/lock", sub);
    unlink(lock);
    rmdir(sub);
    rmdir(dir);
}
END_TEST

/* A state_dir whose parents do not exist yet is made with them (as the
 * default, var/cdc, is under a working directory without var/). */
START_TEST(state_dir_is_made_with_its_parents)
{
    char dir[64], sub[160], mid[128], err[256];
    tmpdir(dir, sizeof(dir));
    snprintf(mid, sizeof(mid), "%s/var", dir);
    snprintf(sub, sizeof(sub), "%s/cdc/", mid);
    int fd = checkpoint_lock_dir(sub, err, sizeof(err));
    ck_assert_msg(fd >= 0, "%s", err);
    close(fd);
    struct stat st;
    ck_assert_int_eq(stat(mid, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0700);
    char lock[192];
    snprintf(lock, sizeof(lock), "%slock", sub);
    ck_assert_int_eq(unlink(lock), 0);
    ck_assert_int_eq(rmdir(sub), 0);
    ck_assert_int_eq(rmdir(mid), 0);
    rmdir(dir);
    /* A file where a parent should be: refused, saying so. */
    tmpdir(dir, sizeof(dir));
    snprintf(mid, sizeof(mid), "%s/file", dir);
    FILE *f = fopen(mid, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    snprintf(sub, sizeof(sub), "%s/relay", mid);
    ck_assert_int_eq(checkpoint_lock_dir(sub, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, "cannot create state_dir") != NULL &&
                      strstr(err, strerror(ENOTDIR)) != NULL,
                  "%s", err);
    unlink(mid);
    rmdir(dir);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("checkpoint");
    UNIT_CASE(s, gtid_positions);
    UNIT_CASE(s, checkpoint_round_trip);
    UNIT_CASE(s, the_longest_position_round_trips);
    UNIT_CASE(s, a_33rd_domain_is_refused);
    UNIT_CASE(s, state_dir_lock_is_exclusive);
    UNIT_CASE(s, state_dir_is_made_with_its_parents);
    return unit_run(s);
}
