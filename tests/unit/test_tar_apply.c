/*
 * test_tar_apply.c - image/tar_apply.h against tar streams built in memory
 * with libarchive's writer (pax and ustar). Every test applies into a fresh
 * mkdtemp root with a "sentinel" directory beside it; symlinks in the tars
 * point at the sentinel by absolute and relative paths, and teardown checks
 * that the sentinel is byte-for-byte unchanged.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "image/tar_apply.h"
#include "util/buf.h"
#include "util/path.h"
#include "util/util.h"

#define MTIME 1500000000

/* ---- tar streams ----------------------------------------------------- */

typedef struct {
    struct archive *a;
    cbuf data;
} tb;

static la_ssize_t tb_write(struct archive *a, void *client, const void *buf, size_t size)
{
    (void)a;
    buf_put(&((tb *)client)->data, buf, size);
    return (la_ssize_t)size;
}

static void tb_begin_fmt(tb *b, bool ustar)
{
    buf_init(&b->data, 0, false);
    b->a = archive_write_new();
    assert_int_equal(ustar ? archive_write_set_format_ustar(b->a)
                           : archive_write_set_format_pax(b->a),
                     ARCHIVE_OK);
    assert_int_equal(archive_write_open(b->a, b, NULL, tb_write, NULL), ARCHIVE_OK);
}

static void tb_begin(tb *b)
{
    tb_begin_fmt(b, false);
}

static struct archive_entry *tb_entry(const char *name, mode_t type, mode_t perm)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_mtime(e, MTIME, 0);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    return e;
}

static void tb_put(tb *b, struct archive_entry *e, const char *data)
{
    size_t n = data ? strlen(data) : 0;
    if (archive_entry_filetype(e) == AE_IFREG && !archive_entry_hardlink(e))
        archive_entry_set_size(e, (la_int64_t)n);
    if (archive_write_header(b->a, e) != ARCHIVE_OK)
        fail_msg("archive_write_header: %s", archive_error_string(b->a));
    if (n)
        assert_int_equal(archive_write_data(b->a, data, n), (la_ssize_t)n);
    archive_entry_free(e);
}

static void tb_file(tb *b, const char *name, mode_t perm, const char *data)
{
    tb_put(b, tb_entry(name, AE_IFREG, perm), data);
}

static void tb_dir(tb *b, const char *name, mode_t perm)
{
    tb_put(b, tb_entry(name, AE_IFDIR, perm), NULL);
}

static void tb_symlink(tb *b, const char *name, const char *target)
{
    struct archive_entry *e = tb_entry(name, AE_IFLNK, 0777);
    archive_entry_set_symlink(e, target);
    tb_put(b, e, NULL);
}

static void tb_hardlink(tb *b, const char *name, const char *target)
{
    struct archive_entry *e = tb_entry(name, AE_IFREG, 0644);
    archive_entry_set_hardlink(e, target);
    archive_entry_set_size(e, 0);
    tb_put(b, e, NULL);
}

static void tb_node(tb *b, const char *name, mode_t type, unsigned maj, unsigned min)
{
    struct archive_entry *e = tb_entry(name, type, 0660);
    archive_entry_set_rdevmajor(e, maj);
    archive_entry_set_rdevminor(e, min);
    tb_put(b, e, NULL);
}

/* Finish the stream; the caller owns the bytes (buf_free). */
static void tb_end(tb *b)
{
    assert_int_equal(archive_write_close(b->a), ARCHIVE_OK);
    archive_write_free(b->a);
    b->a = NULL;
}

/* ---- the pull callback ------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t size;
    size_t pos;
    size_t chunk;
    bool fail; /* report an I/O error after the first chunk */
} mem_src;

static ssize_t mem_read(void *ctx, const void **buf, cista_error **err)
{
    mem_src *m = ctx;
    if (m->fail && m->pos > 0)
        return err_set(err, -EIO, "decompressor says the blob is corrupt");
    size_t n = m->size - m->pos;
    if (n > m->chunk)
        n = m->chunk;
    *buf = m->p + m->pos;
    m->pos += n;
    return (ssize_t)n;
}

/* ---- the fixture ------------------------------------------------------- */

typedef struct {
    char base[64];
    char root[96];
    char sent[96]; /* base/sentinel: never touched */
    int rootfd;
    char *sent_before;
    char *msg; /* last error message */
    tar_apply_stats st;
} fx;

static cbuf g_list;
static const char *g_top;

static int list_one(const char *fpath, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    (void)ftw;
    char data[64] = "";
    if (S_ISLNK(st->st_mode)) {
        ssize_t n = readlink(fpath, data, sizeof(data) - 1);
        data[n < 0 ? 0 : n] = '\0';
    } else if (S_ISREG(st->st_mode)) {
        int fd = open(fpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            ssize_t n = read(fd, data, sizeof(data) - 1);
            data[n < 0 ? 0 : n] = '\0';
            close(fd);
        }
    }
    buf_printf(&g_list, "%s %o %u:%u %ld.%09ld %lu [%s]\n", fpath + strlen(g_top),
               (unsigned)st->st_mode, (unsigned)st->st_uid, (unsigned)st->st_gid,
               (long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, (unsigned long)st->st_nlink, data);
    return 0;
}

static char *list_tree(const char *top)
{
    size_t size;
    buf_init(&g_list, 0, false);
    g_top = top;
    assert_int_equal(nftw(top, list_one, 16, FTW_PHYS), 0);
    return (char *)buf_steal(&g_list, &size);
}

static void put(const char *path, const char *data)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(util_write_all(fd, data, strlen(data)), 0);
    close(fd);
}

static int fx_setup(void **state)
{
    fx *f = xzalloc(sizeof(*f));
    char p[256];
    snprintf(f->base, sizeof(f->base), "/tmp/cista-test-tar-XXXXXX");
    assert_non_null(mkdtemp(f->base));
    snprintf(f->root, sizeof(f->root), "%s/root", f->base);
    snprintf(f->sent, sizeof(f->sent), "%s/sentinel", f->base);
    assert_int_equal(mkdir(f->root, 0755), 0);
    assert_int_equal(mkdir(f->sent, 0755), 0);
    snprintf(p, sizeof(p), "%s/victim", f->sent);
    put(p, "victim");
    snprintf(p, sizeof(p), "%s/etc", f->sent);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/etc/passwd", f->sent);
    put(p, "host passwd");
    f->rootfd = open(f->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(f->rootfd >= 0);
    f->sent_before = list_tree(f->sent);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    char *after = list_tree(f->sent);
    assert_string_equal(f->sent_before, after);
    free(after);
    /* Nothing but root/ and sentinel/ next to each other. */
    DIR *d = opendir(f->base);
    assert_non_null(d);
    for (struct dirent *de; (de = readdir(d));) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "root") &&
            strcmp(de->d_name, "sentinel"))
            fail_msg("unexpected %s/%s", f->base, de->d_name);
    }
    closedir(d);
    close(f->rootfd);
    int tmp = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
    assert_int_equal(util_rm_rf_at(tmp, f->base + strlen("/tmp/"), NULL), 0);
    close(tmp);
    free(f->sent_before);
    free(f->msg);
    free(f);
    return 0;
}

/* Apply the stream in @b (freed here) with @o (NULL: defaults). */
static int apply_chunked(fx *f, tb *b, const tar_apply_opts *o, size_t chunk, bool fail)
{
    tar_apply_opts def = {.preserve_owner = geteuid() == 0, .layer_name = "layer test"};
    mem_src m = {b->data.data, b->data.size, 0, chunk, fail};
    cista_error *err = NULL;
    free(f->msg);
    f->msg = NULL;
    int r = tar_apply(f->rootfd, mem_read, &m, o ? o : &def, &f->st, &err);
    if (r < 0) {
        assert_non_null(err);
        assert_int_equal(err->code, r);
        f->msg = err_str(err);
        err_free(err);
    } else {
        assert_null(err);
    }
    buf_free(&b->data);
    return r;
}

static int apply(fx *f, tb *b, const tar_apply_opts *o)
{
    /* An odd chunk size, so headers and data straddle callback reads. */
    return apply_chunked(f, b, o, 1001, false);
}

static void apply_ok(fx *f, tb *b, const tar_apply_opts *o)
{
    if (apply(f, b, o) < 0)
        fail_msg("tar_apply failed: %s", f->msg);
}

/* Expect a refusal whose message contains every given fragment. */
static void apply_refused(fx *f, tb *b, const tar_apply_opts *o, ...)
{
    va_list ap;
    if (apply(f, b, o) >= 0)
        fail_msg("tar_apply succeeded, a refusal was expected");
    if (getenv("TEST_VERBOSE"))
        print_message("refused: %s\n", f->msg);
    va_start(ap, o);
    for (const char *frag; (frag = va_arg(ap, const char *));) {
        if (!strstr(f->msg, frag))
            fail_msg("error \"%s\" lacks \"%s\"", f->msg, frag);
    }
    va_end(ap);
}

static char *rp(const fx *f, const char *rel)
{
    static char p[4][PATH_MAX];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof(p[i]), "%s/%s", f->root, rel);
    return p[i];
}

static void assert_file(const fx *f, const char *rel, const char *content, mode_t perm)
{
    struct stat st;
    char buf[256];
    const char *p = rp(f, rel);
    if (lstat(p, &st) < 0)
        fail_msg("%s: missing", rel);
    if (!S_ISREG(st.st_mode))
        fail_msg("%s: mode %o, not a regular file", rel, (unsigned)st.st_mode);
    if (perm != (mode_t)-1 && (st.st_mode & 07777) != perm)
        fail_msg("%s: mode %04o, want %04o", rel, (unsigned)(st.st_mode & 07777), (unsigned)perm);
    int fd = open(p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, content);
}

static void assert_kind(const fx *f, const char *rel, mode_t type)
{
    struct stat st;
    if (lstat(rp(f, rel), &st) < 0)
        fail_msg("%s: missing", rel);
    if ((st.st_mode & S_IFMT) != type)
        fail_msg("%s: type %o, want %o", rel, (unsigned)(st.st_mode & S_IFMT), (unsigned)type);
}

static void assert_mode(const fx *f, const char *rel, mode_t perm)
{
    struct stat st;
    assert_int_equal(lstat(rp(f, rel), &st), 0);
    if ((st.st_mode & 07777) != perm)
        fail_msg("%s: mode %04o, want %04o", rel, (unsigned)(st.st_mode & 07777), (unsigned)perm);
}

static void assert_absent(const fx *f, const char *rel)
{
    struct stat st;
    if (lstat(rp(f, rel), &st) == 0)
        fail_msg("%s exists, it should not", rel);
    assert_int_equal(errno, ENOENT);
}

static void assert_link(const fx *f, const char *rel, const char *target)
{
    char buf[PATH_MAX];
    ssize_t n = readlink(rp(f, rel), buf, sizeof(buf) - 1);
    if (n < 0)
        fail_msg("%s: not a symlink", rel);
    buf[n] = '\0';
    assert_string_equal(buf, target);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* No ".wh." name anywhere in the root. */
static int no_wh_one(const char *fpath, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (strncmp(fpath + ftw->base, ".wh.", 4) == 0)
        fail_msg("whiteout materialised: %s", fpath);
    return 0;
}

static void assert_no_whiteouts(const fx *f)
{
    assert_int_equal(nftw(f->root, no_wh_one, 16, FTW_PHYS), 0);
}

/* ---- tests ------------------------------------------------------------- */

static void test_basic(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_dir(&b, "./", 0755);
    tb_dir(&b, "etc/", 0755);
    tb_file(&b, "etc/passwd", 0644, "root:x:0:0");
    tb_file(&b, "etc/empty", 0600, NULL);
    struct archive_entry *e = tb_entry("usr/bin/su", AE_IFREG, 04755);
    archive_entry_set_uid(e, 1234);
    archive_entry_set_gid(e, 5678);
    tb_put(&b, e, "setuid");
    e = tb_entry("x/attr", AE_IFREG, 0644);
    archive_entry_xattr_add_entry(e, "user.note", "hi", 2);
    archive_entry_xattr_add_entry(e, "trusted.evil", "no", 2);
    archive_entry_xattr_add_entry(e, "security.capability", "\x01\x00\x00\x02", 4);
    tb_put(&b, e, "x");
    tb_symlink(&b, "etc/localtime", "/usr/share/zoneinfo/UTC");
    tb_node(&b, "run/fifo", AE_IFIFO, 0, 0);
    /* A read-only directory with a file after it, and a dated directory. */
    tb_dir(&b, "ro/", 0555);
    tb_file(&b, "ro/inside", 0444, "ro");
    e = tb_entry("dated/", AE_IFDIR, 0750);
    archive_entry_set_mtime(e, 1000, 123);
    tb_put(&b, e, NULL);
    tb_file(&b, "dated/later", 0644, "later");
    tb_end(&b);
    apply_ok(f, &b, NULL);

    assert_file(f, "etc/passwd", "root:x:0:0", 0644);
    assert_file(f, "etc/empty", "", 0600);
    assert_file(f, "usr/bin/su", "setuid", 04755);
    assert_kind(f, "run/fifo", S_IFIFO);
    assert_mode(f, "run/fifo", 0660);
    assert_link(f, "etc/localtime", "/usr/share/zoneinfo/UTC");
    assert_file(f, "ro/inside", "ro", 0444);
    assert_mode(f, "ro", 0555);
    assert_mode(f, "dated", 0750);
    assert_mode(f, "usr", 0755); /* implicit parent */

    struct stat st;
    assert_int_equal(lstat(rp(f, "usr/bin/su"), &st), 0);
    if (geteuid() == 0) {
        assert_int_equal(st.st_uid, 1234);
        assert_int_equal(st.st_gid, 5678);
    }
    assert_int_equal(st.st_mtim.tv_sec, MTIME);
    /* Directory times are set after the files inside were written. */
    assert_int_equal(lstat(rp(f, "dated"), &st), 0);
    assert_int_equal(st.st_mtim.tv_sec, 1000);
    assert_int_equal(st.st_mtim.tv_nsec, 123);
    assert_int_equal(lstat(rp(f, "etc/localtime"), &st), 0);
    assert_int_equal(st.st_mtim.tv_sec, MTIME);

    char v[16];
    ssize_t n = getxattr(rp(f, "x/attr"), "user.note", v, sizeof(v));
    if (n < 0 && errno == ENOTSUP) {
        print_message("note: no user xattrs on this filesystem\n");
    } else {
        assert_int_equal(n, 2);
        assert_memory_equal(v, "hi", 2);
    }
    assert_true(getxattr(rp(f, "x/attr"), "trusted.evil", v, sizeof(v)) < 0);
    assert_true(getxattr(rp(f, "x/attr"), "security.capability", v, sizeof(v)) < 0);

    assert_int_equal(f->st.entries, 12);
    assert_int_equal(f->st.bytes, strlen("root:x:0:0") + strlen("setuid") + 1 + 2 + 5);
    assert_int_equal(f->st.rerooted, 0);
    assert_int_equal(f->st.whiteouts, 0);
}

static void test_ustar_and_tiny_chunks(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin_fmt(&b, true);
    tb_dir(&b, "a/", 0755);
    tb_file(&b, "a/b", 0644, "ustar data");
    tb_end(&b);
    assert_int_equal(apply_chunked(f, &b, NULL, 7, false), 0);
    assert_file(f, "a/b", "ustar data", 0644);
}

/* A pax sparse file (GNU.sparse 1.0): holes come back as holes. */
static void test_sparse(void **state)
{
    fx *f = *state;
    enum { SIZE = 1 << 20 };
    char *data = xzalloc(SIZE);
    memcpy(data, "head", 4);
    memcpy(data + SIZE - 4, "tail", 4);
    tb b;
    tb_begin(&b);
    struct archive_entry *e = tb_entry("sparse", AE_IFREG, 0644);
    archive_entry_set_size(e, SIZE);
    archive_entry_sparse_add_entry(e, 0, 4);
    archive_entry_sparse_add_entry(e, SIZE - 4, 4);
    assert_int_equal(archive_write_header(b.a, e), ARCHIVE_OK);
    assert_int_equal(archive_write_data(b.a, data, SIZE), SIZE);
    archive_entry_free(e);
    tb_end(&b);
    assert_true(b.data.size < 64 * 1024);
    apply_ok(f, &b, NULL);

    int fd = open(rp(f, "sparse"), O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char *got = xmalloc(SIZE);
    assert_int_equal(util_read_all(fd, got, SIZE), SIZE);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    close(fd);
    assert_int_equal(st.st_size, SIZE);
    assert_memory_equal(got, data, SIZE);
    assert_int_equal(f->st.bytes, 8);
    if ((uint64_t)st.st_blocks * 512 >= SIZE)
        print_message("note: the filesystem did not keep the holes\n");
    free(got);
    free(data);
}

static void test_rerooted_names(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_file(&b, "../../etc/passwd", 0644, "dots");
    tb_file(&b, "/abs/file", 0644, "abs");
    tb_file(&b, "./a/../../../b", 0644, "b");
    tb_file(&b, "../sentinel/victim", 0644, "not the victim");
    tb_dir(&b, "/", 0755);
    tb_end(&b);
    apply_ok(f, &b, NULL);
    assert_file(f, "etc/passwd", "dots", 0644);
    assert_file(f, "abs/file", "abs", 0644);
    assert_file(f, "b", "b", 0644);
    assert_file(f, "sentinel/victim", "not the victim", 0644);
    assert_int_equal(f->st.rerooted, 5);
}

static void test_symlink_tricks(void **state)
{
    fx *f = *state;
    char abs_sent[160], abs_victim[192];
    snprintf(abs_sent, sizeof(abs_sent), "%s", f->sent);
    snprintf(abs_victim, sizeof(abs_victim), "%s/victim", f->sent);

    tb b;
    tb_begin(&b);
    /* "evil -> /" then a file through it: lands in ROOT/etc/passwd. */
    tb_symlink(&b, "evil", "/");
    tb_file(&b, "evil/etc/passwd", 0644, "through evil");
    /* An absolute link to the real sentinel, then writes through it. */
    tb_symlink(&b, "out", abs_sent);
    tb_file(&b, "out/victim", 0644, "rerooted");
    tb_symlink(&b, "rel", "../../sentinel");
    tb_file(&b, "rel/victim", 0644, "clamped");
    /* A link to a host file, replaced by a file of the same name: not followed. */
    tb_symlink(&b, "host_file", abs_victim);
    tb_file(&b, "host_file", 0600, "replaced");
    /* CVE-2021-32760 shape: link out, then a directory entry with that name. */
    tb_symlink(&b, "chmod_me", abs_sent);
    tb_dir(&b, "chmod_me/", 0777);
    /* A symlink chain through a directory link. */
    tb_symlink(&b, "d1", "d2");
    tb_symlink(&b, "d2", "/real");
    tb_file(&b, "d1/f", 0644, "chain");
    tb_end(&b);
    apply_ok(f, &b, NULL);

    assert_link(f, "evil", "/");
    assert_file(f, "etc/passwd", "through evil", 0644);
    assert_link(f, "out", abs_sent);
    assert_file(f, abs_victim + 1, "rerooted", 0644);
    assert_file(f, "sentinel/victim", "clamped", 0644);
    assert_file(f, "host_file", "replaced", 0600);
    assert_kind(f, "chmod_me", S_IFDIR);
    assert_mode(f, "chmod_me", 0777);
    assert_file(f, "real/f", "chain", 0644);
}

static void test_hardlinks_ok(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_file(&b, "etc/passwd", 0644, "pw");
    tb_hardlink(&b, "a", "etc/passwd");
    tb_hardlink(&b, "b", "/etc/passwd"); /* absolute: re-rooted */
    tb_hardlink(&b, "c", "./etc/../etc/passwd");
    tb_symlink(&b, "evil", "/");
    tb_hardlink(&b, "d", "evil/etc/passwd");
    tb_hardlink(&b, "a", "etc/passwd"); /* again: already that inode */
    tb_file(&b, "e", 0644, "old");
    tb_hardlink(&b, "e", "etc/passwd"); /* replaces a file */
    tb_end(&b);
    apply_ok(f, &b, NULL);
    struct stat s0, s;
    assert_int_equal(lstat(rp(f, "etc/passwd"), &s0), 0);
    assert_int_equal(s0.st_nlink, 6);
    const char *names[] = {"a", "b", "c", "d", "e"};
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        assert_int_equal(lstat(rp(f, names[i]), &s), 0);
        assert_int_equal(s.st_ino, s0.st_ino);
    }
    assert_int_equal(f->st.rerooted, 1);
}

static void test_hardlink_refusals(void **state)
{
    fx *f = *state;
    char abs_victim[192];
    snprintf(abs_victim, sizeof(abs_victim), "%s/victim", f->sent);
    tb b;

    tb_begin(&b);
    tb_hardlink(&b, "x", "../../sentinel/victim");
    tb_end(&b);
    apply_refused(f, &b, NULL, "layer test: entry \"x\": hard link target",
                  "\"../../sentinel/victim\" is outside the root", NULL);

    tb_begin(&b);
    tb_hardlink(&b, "y", abs_victim); /* re-rooted, and not there */
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"y\"", "does not exist in the root", NULL);

    tb_begin(&b);
    tb_dir(&b, "dir/", 0755);
    tb_hardlink(&b, "z", "dir");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"z\"", "is a directory", NULL);

    tb_begin(&b);
    tb_symlink(&b, "s", abs_victim);
    tb_hardlink(&b, "h", "s");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"h\"", "\"s\" is a symlink", NULL);

    tb_begin(&b);
    tb_symlink(&b, "s2", "../../..");
    tb_hardlink(&b, "h2", "s2/sentinel/victim"); /* through a link out: re-rooted, missing */
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"h2\"", "does not exist in the root", NULL);

    tb_begin(&b);
    tb_hardlink(&b, "h3", "/");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"h3\"", "is the root directory", NULL);

    tb_begin(&b);
    tb_node(&b, "fifo", AE_IFIFO, 0, 0);
    tb_hardlink(&b, "h4", "fifo");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"h4\"", "not a regular file", NULL);

    tb_begin(&b);
    tb_hardlink(&b, "early", "later");
    tb_file(&b, "later", 0644, "x");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"early\"", "must follow the file", NULL);
    assert_absent(f, "early");
}

/* A confidential image's names are plaintext: with redact_names, errors count entries instead. */
static void test_redacted_names(void **state)
{
    fx *f = *state;
    tar_apply_opts o = {.redact_names = true, .layer_name = "layer test"};
    tb b;
    tb_begin(&b);
    tb_file(&b, "etc/secret-name", 0644, "x");
    tb_hardlink(&b, "opt/h", "../../sentinel/victim");
    tb_end(&b);
    apply_refused(f, &b, &o, "layer test: entry 2: ", "entry names are withheld", NULL);
    assert_null(strstr(f->msg, "opt/h"));
    assert_null(strstr(f->msg, "victim"));
    assert_null(strstr(f->msg, "secret-name"));
}

static void test_devices(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_file(&b, "before", 0644, "1");
    tb_node(&b, "dev/null", AE_IFCHR, 1, 3);
    tb_file(&b, "after", 0644, "2");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"dev/null\"", "character device 1:3 refused", NULL);
    assert_file(f, "before", "1", 0644);
    assert_absent(f, "dev/null");
    assert_absent(f, "after");

    tb_begin(&b);
    tb_node(&b, "dev/sda", AE_IFBLK, 8, 0);
    tb_end(&b);
    apply_refused(f, &b, NULL, "block device 8:0 refused", NULL);

    tar_apply_opts o = {
        .allow_devices = true, .preserve_owner = geteuid() == 0, .layer_name = "dev"};
    tb_begin(&b);
    tb_node(&b, "dev/null", AE_IFCHR, 1, 3);
    tb_end(&b);
    if (apply(f, &b, &o) < 0) {
        /* Without CAP_MKNOD (a container) the kernel says no; that is fine too. */
        assert_non_null(strstr(f->msg, "cannot create device node"));
        print_message("note: mknod not permitted here: %s\n", f->msg);
        return;
    }
    struct stat st;
    assert_int_equal(lstat(rp(f, "dev/null"), &st), 0);
    assert_true(S_ISCHR(st.st_mode));
    assert_int_equal(major(st.st_rdev), 1);
    assert_int_equal(minor(st.st_rdev), 3);
}

static void test_root_entry(void **state)
{
    fx *f = *state;
    tb b;

    tb_begin(&b);
    struct archive_entry *e = tb_entry("./", AE_IFDIR, 0711);
    archive_entry_set_mtime(e, 4242, 0);
    tb_put(&b, e, NULL);
    tb_file(&b, "f", 0644, "f");
    tb_end(&b);
    apply_ok(f, &b, NULL);
    assert_mode(f, ".", 0711);
    struct stat st;
    assert_int_equal(stat(f->root, &st), 0);
    assert_int_equal(st.st_mtim.tv_sec, 4242);

    /* CVE-2021-29136: "." as a symlink, then a file through it. */
    tb_begin(&b);
    tb_symlink(&b, ".", f->sent);
    tb_file(&b, "victim", 0644, "pwned");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \".\"", "root never changes type", NULL);

    /* (A regular file named "/" reads back as a directory: libarchive's rule.) */
    tb_begin(&b);
    tb_file(&b, "a/..", 0644, "file root");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"a/..\"", "not a directory", NULL);

    tb_begin(&b);
    tb_hardlink(&b, "./", "f");
    tb_end(&b);
    apply_refused(f, &b, NULL, "root never changes type", NULL);

    tb_begin(&b);
    tb_node(&b, "..", AE_IFIFO, 0, 0);
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"..\"", "root never changes type", NULL);

    assert_kind(f, ".", S_IFDIR);
    assert_absent(f, "victim");
}

static void layer1_for_whiteouts(fx *f, char *abs_sent)
{
    tb b;
    tb_begin(&b);
    tb_dir(&b, "a/", 0755);
    tb_file(&b, "a/f1", 0644, "f1");
    tb_file(&b, "a/f2", 0644, "f2");
    tb_file(&b, "b", 0644, "b");
    tb_dir(&b, "c/", 0755);
    tb_dir(&b, "c/deep/", 0700);
    tb_file(&b, "c/deep/x", 0644, "x");
    tb_file(&b, "keep", 0644, "keep");
    tb_symlink(&b, "lnk", "a");
    tb_symlink(&b, "out", abs_sent);
    tb_symlink(&b, "outrel", "../../sentinel");
    tb_dir(&b, "d/", 0755);
    tb_file(&b, "d/old1", 0644, "o");
    tb_dir(&b, "d/sub/", 0755);
    tb_file(&b, "d/sub/old2", 0644, "o");
    tb_dir(&b, "d/keepdir/", 0755);
    tb_file(&b, "d/keepdir/lower", 0644, "o");
    tb_end(&b);
    apply_ok(f, &b, NULL);
}

static void test_whiteouts(void **state)
{
    fx *f = *state;
    layer1_for_whiteouts(f, f->sent);

    tb b;
    tb_begin(&b);
    tb_file(&b, "a/.wh.f1", 0644, NULL);
    tb_file(&b, ".wh.b", 0644, NULL);
    tb_file(&b, ".wh.c", 0644, NULL);
    tb_file(&b, ".wh.nonexistent", 0644, NULL);
    tb_file(&b, "lnk/.wh.f2", 0644, NULL); /* through an in-root symlink */
    tb_file(&b, "out/.wh.victim", 0644, NULL);
    tb_file(&b, "outrel/.wh.victim", 0644, NULL);
    tb_file(&b, "../.wh.victim", 0644, NULL);
    tb_file(&b, "missing/dir/.wh.x", 0644, NULL);
    tb_file(&b, "keep/.wh.x", 0644, NULL); /* parent is a file */
    /* A file of this layer survives a whiteout of its own name in this layer. */
    tb_file(&b, "same", 0644, "same layer");
    tb_file(&b, ".wh.same", 0644, NULL);
    tb_file(&b, ".wh..wh.plnk", 0644, NULL); /* aufs bookkeeping: skipped */
    tb_end(&b);
    apply_ok(f, &b, NULL);

    assert_absent(f, "a/f1");
    assert_absent(f, "a/f2");
    assert_kind(f, "a", S_IFDIR);
    assert_absent(f, "b");
    assert_absent(f, "c");
    assert_file(f, "keep", "keep", 0644);
    assert_file(f, "same", "same layer", 0644);
    assert_absent(f, "missing");
    assert_kind(f, "out", S_IFLNK);
    assert_no_whiteouts(f);
    assert_int_equal(f->st.whiteouts, 11);
    assert_int_equal(f->st.skipped, 1);
    assert_int_equal(f->st.rerooted, 1);
}

static void test_opaque(void **state)
{
    fx *f = *state;
    layer1_for_whiteouts(f, f->sent);

    tb b;
    tb_begin(&b);
    /* Siblings before the marker: they belong to this layer and stay. */
    tb_file(&b, "d/new", 0644, "new");
    tb_file(&b, "d/keepdir/inner", 0644, "inner");
    tb_file(&b, "d/.wh..wh..opq", 0644, NULL);
    tb_file(&b, "d/after", 0644, "after");
    /* An opaque marker in a directory that does not exist changes nothing. */
    tb_file(&b, "fresh/.wh..wh..opq", 0644, NULL);
    /* Opaque through a symlink out of the root: in-root, so missing here. */
    tb_file(&b, "out/.wh..wh..opq", 0644, NULL);
    tb_end(&b);
    apply_ok(f, &b, NULL);

    assert_file(f, "d/new", "new", 0644);
    assert_file(f, "d/after", "after", 0644);
    assert_file(f, "d/keepdir/inner", "inner", 0644);
    assert_absent(f, "d/keepdir/lower");
    assert_absent(f, "d/old1");
    assert_absent(f, "d/sub");
    assert_absent(f, "fresh");
    assert_file(f, "keep", "keep", 0644);
    assert_no_whiteouts(f);
    assert_int_equal(f->st.whiteouts, 3);
}

static void test_opaque_root(void **state)
{
    fx *f = *state;
    layer1_for_whiteouts(f, f->sent);
    tb b;
    tb_begin(&b);
    tb_file(&b, "top", 0644, "top");
    tb_file(&b, ".wh..wh..opq", 0644, NULL);
    tb_end(&b);
    apply_ok(f, &b, NULL);
    char *tree = list_tree(f->root);
    /* Only the root and "top" remain. */
    assert_int_equal(count_lines(tree), 2);
    free(tree);
    assert_file(f, "top", "top", 0644);
}

static void test_whiteout_rules(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_file(&b, "a/.wh.b/c", 0644, "x");
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"a/.wh.b/c\"", "whiteouts are files", NULL);
    assert_absent(f, "a/.wh.b");

    tb_begin(&b);
    tb_file(&b, "x/.wh.", 0644, NULL);
    tb_end(&b);
    apply_refused(f, &b, NULL, "whiteout names nothing", NULL);

    /* With whiteouts off, the names are plain files. */
    tar_apply_opts o = {
        .no_whiteouts = true, .preserve_owner = geteuid() == 0, .layer_name = "raw"};
    tb_begin(&b);
    tb_file(&b, ".wh.plain", 0644, "plain");
    tb_end(&b);
    apply_ok(f, &b, &o);
    assert_file(f, ".wh.plain", "plain", 0644);
}

static void test_last_wins(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_file(&b, "x", 0644, "file first");
    tb_dir(&b, "x/", 0700);
    tb_file(&b, "x/y", 0644, "y");
    tb_dir(&b, "d/", 0755);
    tb_file(&b, "d/f", 0644, "f");
    tb_file(&b, "d", 0600, "dir replaced by file");
    tb_file(&b, "twice", 0644, "one");
    tb_file(&b, "twice", 0640, "two");
    tb_symlink(&b, "sl", "/etc");
    tb_file(&b, "sl", 0644, "not a link");
    tb_dir(&b, "m/", 0700);
    tb_dir(&b, "m/", 0751);
    tb_file(&b, "l", 0644, "becomes a link");
    tb_symlink(&b, "l", "x/y");
    tb_dir(&b, "gone/", 0755);
    tb_file(&b, "gone/inner", 0644, "i");
    tb_symlink(&b, "gone", "x");
    tb_end(&b);
    apply_ok(f, &b, NULL);
    assert_kind(f, "x", S_IFDIR);
    assert_mode(f, "x", 0700);
    assert_file(f, "x/y", "y", 0644);
    assert_file(f, "d", "dir replaced by file", 0600);
    assert_file(f, "twice", "two", 0640);
    assert_file(f, "sl", "not a link", 0644);
    assert_mode(f, "m", 0751);
    assert_link(f, "l", "x/y");
    assert_link(f, "gone", "x");
}

static void test_truncated(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_file(&b, "first", 0644, "1");
    char big[3000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    tb_file(&b, "big", 0644, big);
    tb_end(&b);
    /* Cut inside big's data. */
    const uint8_t *z = memmem(b.data.data, b.data.size, "zzzz", 4);
    assert_non_null(z);
    b.data.size = (size_t)(z - b.data.data) + 1000;
    apply_refused(f, &b, NULL, "entry \"big\"", "truncated", NULL);

    tb_begin(&b);
    tb_file(&b, "first", 0644, "1");
    tb_file(&b, "second", 0644, "2");
    tb_end(&b);
    /* Cut inside the second header. */
    const uint8_t *h = memmem(b.data.data, b.data.size, "second", 6);
    assert_non_null(h);
    b.data.size = (size_t)(h - b.data.data) + 200;
    apply_refused(f, &b, NULL, "after entry \"first\"", "truncated or corrupt", NULL);

    cbuf junk;
    buf_init(&junk, 0, false);
    for (int i = 0; i < 2048; i++)
        buf_put(&junk, "junk", 4);
    b.data = junk;
    apply_refused(f, &b, NULL, "layer test", "tar", NULL);

    buf_init(&b.data, 0, false);
    buf_put(&b.data, "", 0);
    int r = apply(f, &b, NULL);
    /* A zero-byte blob is an empty layer (as for GNU tar). */
    assert_int_equal(r, 0);
    assert_int_equal(f->st.entries, 0);

    tb_begin(&b);
    tb_file(&b, "a", 0644, "a");
    tb_end(&b);
    assert_true(apply_chunked(f, &b, NULL, 700, true) < 0);
    assert_non_null(strstr(f->msg, "decompressor says the blob is corrupt"));
}

static void test_limits(void **state)
{
    fx *f = *state;
    tb b;
    tar_apply_opts o = {
        .max_entries = 3, .preserve_owner = geteuid() == 0, .layer_name = "layer lim"};
    tb_begin(&b);
    for (int i = 0; i < 5; i++) {
        char n[8];
        snprintf(n, sizeof(n), "f%d", i);
        tb_file(&b, n, 0644, "x");
    }
    tb_end(&b);
    apply_refused(f, &b, &o, "layer lim", "more than 3 entries", NULL);
    assert_absent(f, "f3");

    o = (tar_apply_opts){
        .max_total = 10, .preserve_owner = geteuid() == 0, .layer_name = "layer lim"};
    tb_begin(&b);
    tb_file(&b, "small", 0644, "12345");
    tb_file(&b, "big", 0644, "0123456789");
    tb_end(&b);
    apply_refused(f, &b, &o, "entry \"big\"", "max_total", NULL);
    assert_file(f, "small", "12345", 0644);
}

static void test_hostile_names_in_messages(void **state)
{
    fx *f = *state;
    tb b;
    tb_begin(&b);
    tb_node(&b, "dev/\x1b[2Jx\ny", AE_IFCHR, 1, 5);
    tb_end(&b);
    apply_refused(f, &b, NULL, "entry \"dev/\\x1b[2Jx\\x0ay\"", NULL);
}

/*
 * Unprivileged unpack (a child drops to nobody): a 0555 directory followed
 * by files in it, a 0000 directory, and a second layer writing into both.
 */
static int child_unpriv(fx *f)
{
    if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
        return 77;
    tar_apply_opts o = {.layer_name = "unpriv"};
    tb b;
    tb_begin(&b);
    tb_dir(&b, "ro/", 0555);
    tb_file(&b, "ro/f", 0444, "f");
    tb_dir(&b, "ro/sub/", 0500);
    tb_file(&b, "ro/sub/g", 0400, "g");
    tb_dir(&b, "locked/", 0000);
    tb_file(&b, "locked/f", 0644, "f");
    tb_end(&b);
    if (apply(f, &b, &o) < 0) {
        fprintf(stderr, "layer 1: %s\n", f->msg);
        return 1;
    }
    tb_begin(&b);
    tb_file(&b, "ro/h", 0644, "h");
    tb_file(&b, "locked/.wh.f", 0644, NULL);
    tb_file(&b, "locked/new", 0644, "new");
    tb_end(&b);
    if (apply(f, &b, &o) < 0) {
        fprintf(stderr, "layer 2: %s\n", f->msg);
        return 2;
    }
    return 0;
}

static void test_unprivileged(void **state)
{
    fx *f = *state;
    if (geteuid() != 0) {
        print_message("note: not root, cannot test dropping privileges\n");
        return;
    }
    assert_int_equal(chmod(f->base, 0755), 0);
    assert_int_equal(chown(f->root, 65534, 65534), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child_unpriv(f));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        print_message("note: cannot drop privileges here\n");
        return;
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_mode(f, "ro", 0555);
    assert_mode(f, "ro/sub", 0500);
    assert_file(f, "ro/f", "f", 0444);
    assert_file(f, "ro/sub/g", "g", 0400);
    assert_file(f, "ro/h", "h", 0644);
    assert_mode(f, "locked", 0000);
    assert_absent(f, "locked/f");
    assert_file(f, "locked/new", "new", 0644);
    struct stat st;
    assert_int_equal(lstat(rp(f, "ro/f"), &st), 0);
    assert_int_equal(st.st_uid, 65534);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
    const struct CMUnitTest tests[] = {
        T(test_basic),
        T(test_ustar_and_tiny_chunks),
        T(test_sparse),
        T(test_rerooted_names),
        T(test_symlink_tricks),
        T(test_hardlinks_ok),
        T(test_hardlink_refusals),
        T(test_redacted_names),
        T(test_devices),
        T(test_root_entry),
        T(test_whiteouts),
        T(test_opaque),
        T(test_opaque_root),
        T(test_whiteout_rules),
        T(test_last_wins),
        T(test_truncated),
        T(test_limits),
        T(test_hostile_names_in_messages),
        T(test_unprivileged),
    };
#undef T
    /* Everything twice: lookups through openat2, then through the fallback. */
    path_force_fallback(false);
    int failed = cmocka_run_group_tests_name("tar_apply (openat2)", tests, NULL, NULL);
    path_force_fallback(true);
    failed += cmocka_run_group_tests_name("tar_apply (fallback resolver)", tests, NULL, NULL);
    return failed;
}
