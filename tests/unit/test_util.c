/* test_util.c - errors, buffers, whole-file helpers. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/buf.h"
#include "util/err.h"
#include "util/log.h"
#include "util/util.h"

static int fail_inner(cista_error **err)
{
    return err_set(err, -ENOENT, "blob %s is missing", "sha256:ab");
}

static int fail_outer(cista_error **err)
{
    int r = fail_inner(err);
    if (r < 0)
        return err_wrap(err, "layer %d", 2);
    return 0;
}

static void test_err_chain(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(fail_outer(&err), -ENOENT);
    assert_non_null(err);
    assert_int_equal(err->code, -ENOENT);
    assert_int_equal(err->context_len, 1);
    err_wrap(&err, "unpack %s", "oci:x");
    _cleanup_free_ char *s = err_str(err);
    assert_string_equal(s, "unpack oci:x: layer 2: blob sha256:ab is missing");
}

static void test_err_first_wins(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(err_set(&err, -EINVAL, "first"), -EINVAL);
    assert_int_equal(err_set(&err, -EIO, "second"), -EIO);
    assert_string_equal(err->msg, "first");
    assert_int_equal(err->code, -EINVAL);
    /* NULL error sink and positive codes are tolerated. */
    assert_int_equal(err_set(NULL, -EPERM, "x"), -EPERM);
    cista_error *e2 = NULL;
    assert_true(err_set(&e2, 5, "positive") < 0);
    err_free(e2);
}

static void test_err_sys(void **state)
{
    (void)state;
    _cleanup_err_ cista_error *err = NULL;
    err_set_sys(&err, -ENOENT, "open %s", "x");
    assert_string_equal(err->msg, "open x: No such file or directory");
    /* wrap without a set error still yields an error */
    cista_error *e2 = NULL;
    assert_int_equal(err_wrap(&e2, "context only"), -EIO);
    assert_string_equal(e2->msg, "context only");
    err_free(e2);
}

static void test_buf_bounds(void **state)
{
    (void)state;
    _cleanup_buf_ cbuf b = CBUF_INIT;
    buf_init(&b, 10, false);
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(buf_append(&b, "hello", 5, &err), 0);
    assert_int_equal(buf_append(&b, "world", 5, &err), 0);
    assert_int_equal(b.size, 10);
    assert_string_equal((char *)b.data, "helloworld");
    assert_int_equal(buf_append(&b, "!", 1, &err), -EMSGSIZE);
    assert_int_equal(b.size, 10);
    /* size overflow attempt */
    err_clear(&err);
    assert_int_equal(buf_append(&b, "", SIZE_MAX, &err), -EMSGSIZE);
}

static void test_buf_secret_and_steal(void **state)
{
    (void)state;
    cbuf b;
    buf_init(&b, 0, true);
    for (int i = 0; i < 100; i++)
        buf_printf(&b, "%02d", i);
    assert_int_equal(b.size, 200);
    size_t n;
    uint8_t *p = buf_steal(&b, &n);
    assert_int_equal(n, 200);
    assert_memory_equal(p, "000102", 6);
    assert_null(b.data);
    free(p);
    buf_free(&b);
}

static void test_read_write_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/cista-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(util_write_file_atomic(dfd, "a.json", "{}\n", 3, 0640, &err), 0);
    struct stat st;
    assert_int_equal(fstatat(dfd, "a.json", &st, 0), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    _cleanup_free_ char *path = xasprintf("%s/a.json", dir);
    char *data = NULL;
    size_t size = 0;
    assert_int_equal(util_read_file(&data, &size, path, 3, &err), 0);
    assert_int_equal(size, 3);
    assert_string_equal(data, "{}\n");
    free(data);
    assert_int_equal(util_read_file(&data, &size, path, 2, &err), -EFBIG);
    err_clear(&err);
    assert_int_equal(util_read_file(&data, &size, "/nonexistent/x", 2, &err), -ENOENT);
    err_clear(&err);
    /* /proc files report size 0: the limit must still hold while reading. */
    assert_int_equal(util_read_file(&data, &size, "/proc/self/status", 8, &err), -EFBIG);
    err_clear(&err);

    /* rm -rf with an unreadable directory and a symlink that must not be followed */
    assert_int_equal(mkdirat(dfd, "t", 0755), 0);
    assert_int_equal(mkdirat(dfd, "t/locked", 0755), 0);
    assert_int_equal(util_write_file_atomic(dfd, "t/locked/f", "x", 1, 0600, &err), 0);
    assert_int_equal(fchmodat(dfd, "t/locked", 0, 0), 0);
    assert_int_equal(symlinkat(dir, dfd, "t/link"), 0);
    assert_int_equal(util_rm_rf_at(dfd, "t", &err), 0);
    assert_int_equal(fstatat(dfd, "t", &st, AT_SYMLINK_NOFOLLOW), -1);
    assert_int_equal(fstatat(dfd, "a.json", &st, 0), 0);
    assert_int_equal(util_rm_rf_at(AT_FDCWD, dir, &err), 0);
    close(dfd);
}

static void test_rm_rf_depth_limit(void **state)
{
    (void)state;
    char dir[] = "/tmp/cista-deep-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(fd >= 0);
    int top = dup(fd);
    for (int i = 0; i < 4100; i++) {
        assert_int_equal(mkdirat(fd, "d", 0700), 0);
        int n = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        assert_true(n >= 0);
        close(fd);
        fd = n;
    }
    close(fd);
    _cleanup_err_ cista_error *err = NULL;
    assert_int_equal(util_rm_rf_at(top, "d", &err), -ELOOP);
    assert_non_null(strstr(err->msg, "nested deeper"));
    close(top);
    _cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/*
 * rm -rf never enters another mount: when unmounting a sandbox tmpfs or a decrypted volume
 * failed, removing the directory above it must not delete what is mounted there. The rest
 * goes, the mount stays and the call says so (-EBUSY).
 */
static void test_rm_rf_keeps_mounts(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        skip(); /* mounting a tmpfs needs CAP_SYS_ADMIN */
        return;
    }
    char dir[] = "/tmp/cista-rm-mnt-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(dfd >= 0);
    _cleanup_err_ cista_error *err = NULL;
    _cleanup_free_ char *mnt = xasprintf("%s/t/vol", dir);
    _cleanup_free_ char *file_mnt = xasprintf("%s/t/f", dir);
    _cleanup_free_ char *src = xasprintf("%s/src", dir);
    assert_int_equal(mkdirat(dfd, "t", 0700), 0);
    assert_int_equal(mkdirat(dfd, "t/a", 0700), 0);
    assert_int_equal(util_write_file_atomic(dfd, "t/a/x", "x", 1, 0600, &err), 0);
    assert_int_equal(mkdirat(dfd, "t/vol", 0700), 0);
    assert_int_equal(util_write_file_atomic(dfd, "t/f", "f", 1, 0600, &err), 0);
    assert_int_equal(util_write_file_atomic(dfd, "src", "s", 1, 0600, &err), 0);
    assert_int_equal(mount("tmpfs", mnt, "tmpfs", 0, "mode=0700"), 0);
    assert_int_equal(mount(src, file_mnt, NULL, MS_BIND, NULL), 0);
    assert_int_equal(mkdirat(dfd, "t/vol/sub", 0700), 0);
    assert_int_equal(util_write_file_atomic(dfd, "t/vol/keep", "k", 1, 0600, &err), 0);
    assert_int_equal(util_write_file_atomic(dfd, "t/vol/sub/keep", "k", 1, 0600, &err), 0);

    /* the mount itself as the top: nothing in it is touched */
    int tfd = openat(dfd, "t", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(tfd >= 0);
    assert_int_equal(util_rm_rf_at(tfd, "vol", &err), -EBUSY);
    assert_non_null(strstr(err->msg, "a file system is mounted there"));
    err_clear(&err);
    close(tfd);
    struct stat st;
    assert_int_equal(fstatat(dfd, "t/vol/sub/keep", &st, 0), 0);

    /* below the top: the rest goes, both mounts and what is in them stay */
    assert_int_equal(util_rm_rf_at(dfd, "t", &err), -EBUSY);
    assert_non_null(strstr(err->msg, "mounted there"));
    err_clear(&err);
    assert_int_equal(fstatat(dfd, "t/a", &st, AT_SYMLINK_NOFOLLOW), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(fstatat(dfd, "t/vol/keep", &st, 0), 0);
    assert_int_equal(fstatat(dfd, "t/vol/sub/keep", &st, 0), 0);
    assert_int_equal(fstatat(dfd, "src", &st, 0), 0);
    assert_int_equal(fstatat(dfd, "t/f", &st, 0), 0);

    /* unmounted, the same call removes everything */
    assert_int_equal(umount2(mnt, MNT_DETACH), 0);
    assert_int_equal(umount2(file_mnt, MNT_DETACH), 0);
    assert_int_equal(util_rm_rf_at(dfd, "t", &err), 0);
    assert_int_equal(fstatat(dfd, "t", &st, AT_SYMLINK_NOFOLLOW), -1);
    close(dfd);
    assert_int_equal(util_rm_rf_at(AT_FDCWD, dir, &err), 0);
}

/* The affinity mask bounds the count (taskset, cpusets); so would a cgroup quota. */
static void test_cpu_count(void **state)
{
    (void)state;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = util_cpu_count();
    assert_true(n >= 1);
    assert_true(online <= 0 || n <= (unsigned long)online);
    cpu_set_t saved, one;
    assert_int_equal(sched_getaffinity(0, sizeof(saved), &saved), 0);
    int first = 0;
    while (!CPU_ISSET(first, &saved))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    unsigned pinned = util_cpu_count();
    assert_int_equal(sched_setaffinity(0, sizeof(saved), &saved), 0);
    assert_int_equal(pinned, 1);
    assert_int_equal(util_cpu_count(), n);
}

static void test_log_levels(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("debug"), LOG_LVL_DEBUG);
    assert_int_equal(log_level_parse("warning"), LOG_LVL_WARN);
    assert_int_equal(log_level_parse("loud"), -1);
    FILE *f = tmpfile();
    log_set_stream(f);
    log_set_json(true);
    log_set_level(LOG_LVL_INFO);
    log_info("hello %d", 42);
    log_debug("not shown");
    log_set_stream(NULL);
    log_set_json(false);
    rewind(f);
    char line[256] = "";
    assert_non_null(fgets(line, sizeof(line), f));
    assert_non_null(strstr(line, "\"level\":\"info\""));
    assert_non_null(strstr(line, "\"msg\":\"hello 42\""));
    assert_null(fgets(line, sizeof(line), f));
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_chain),
        cmocka_unit_test(test_err_first_wins),
        cmocka_unit_test(test_err_sys),
        cmocka_unit_test(test_buf_bounds),
        cmocka_unit_test(test_buf_secret_and_steal),
        cmocka_unit_test(test_read_write_file),
        cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_cpu_count),
        cmocka_unit_test(test_rm_rf_depth_limit),
        cmocka_unit_test(test_rm_rf_keeps_mounts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
