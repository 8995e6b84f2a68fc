/*
 * test_path.c - util/path.h: in-root resolution, run twice for every case,
 * once through openat2 and once through the userspace walker, and the two
 * answers compared (same errno, or the same inode, or the same tree after
 * a creating call). A directory "outside" next to the root holds a
 * sentinel that no case may reach.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/buf.h"
#include "util/path.h"
#include "util/util.h"

enum { IMPL_OPENAT2, IMPL_FALLBACK, IMPL_COUNT };
static const char *const impl_name[IMPL_COUNT] = {"openat2", "fallback"};

typedef struct {
    char base[64]; /* /tmp/cista-test-path-XXXXXX */
    char root[96]; /* base/root */
    char out[96];  /* base/outside: must never change */
    int rootfd;
    char *out_before;
} fixture;

static void set_impl(int impl)
{
    path_force_fallback(impl == IMPL_FALLBACK);
    if (impl == IMPL_OPENAT2 && !path_using_openat2())
        print_message("note: openat2 unavailable here; both runs use the fallback\n");
}

static void put_file(const char *dir, const char *name, const char *data)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(util_write_all(fd, data, strlen(data)), 0);
    close(fd);
}

static void put_dir(const char *dir, const char *name)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
    assert_int_equal(mkdir(p, 0755), 0);
}

static void put_link(const char *dir, const char *name, const char *target)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", dir, name);
    assert_int_equal(symlink(target, p), 0);
}

/* A sorted listing of a tree: "path type detail" per entry, symlinks not followed. */
static cbuf g_list;
static const char *g_list_top;

static int list_one(const char *fpath, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)flag;
    (void)ftw;
    const char *rel = fpath + strlen(g_list_top);
    if (S_ISLNK(st->st_mode)) {
        char t[PATH_MAX + 1];
        ssize_t n = readlink(fpath, t, PATH_MAX);
        t[n < 0 ? 0 : n] = '\0';
        buf_printf(&g_list, "%s l %s\n", rel, t);
    } else if (S_ISDIR(st->st_mode)) {
        buf_printf(&g_list, "%s d %o\n", rel, (unsigned)(st->st_mode & 07777));
    } else {
        char data[64] = "";
        int fd = open(fpath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            ssize_t n = read(fd, data, sizeof(data) - 1);
            data[n < 0 ? 0 : n] = '\0';
            close(fd);
        }
        buf_printf(&g_list, "%s f %o [%s]\n", rel, (unsigned)(st->st_mode & 07777), data);
    }
    return 0;
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *list_tree(const char *top)
{
    buf_init(&g_list, 0, false);
    g_list_top = top;
    assert_int_equal(nftw(top, list_one, 16, FTW_PHYS), 0);
    size_t size;
    char *raw = (char *)buf_steal(&g_list, &size);
    char *lines[4096];
    size_t n = 0;
    for (char *save = NULL, *l = strtok_r(raw, "\n", &save); l && n < ARRAY_LEN(lines);
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    qsort(lines, n, sizeof(char *), cmp_lines);
    cbuf out;
    buf_init(&out, 0, false);
    for (size_t i = 0; i < n; i++)
        buf_printf(&out, "%s\n", lines[i]);
    free(raw);
    return (char *)buf_steal(&out, &size);
}

/*
 * The standard tree. Links named out_* point at real host paths next to
 * the root; resolved in-root they must miss (ENOENT) or land inside.
 */
static void fixture_setup(fixture *f)
{
    char p[PATH_MAX];
    snprintf(f->base, sizeof(f->base), "/tmp/cista-test-path-XXXXXX");
    assert_non_null(mkdtemp(f->base));
    snprintf(f->root, sizeof(f->root), "%s/root", f->base);
    snprintf(f->out, sizeof(f->out), "%s/outside", f->base);
    assert_int_equal(mkdir(f->root, 0755), 0);
    assert_int_equal(mkdir(f->out, 0755), 0);
    put_file(f->out, "secret", "outside");
    put_dir(f->out, "etc");
    put_file(f->out, "etc/passwd", "outside-passwd");

    put_dir(f->root, "etc");
    put_file(f->root, "etc/passwd", "inside");
    put_dir(f->root, "dir");
    put_dir(f->root, "dir/sub");
    put_file(f->root, "dir/sub/file", "sub");
    put_dir(f->root, "newdir");
    put_link(f->root, "abs_etc", "/etc");
    put_link(f->root, "abs_passwd", "/etc/passwd");
    put_link(f->root, "rel_up", "../../../../etc/passwd");
    put_link(f->root, "toroot", "/");
    put_link(f->root, "dotdot", "..");
    put_link(f->root, "dir_link", "dir");
    put_link(f->root, "dir/sub/up", "../..");
    put_link(f->root, "dir/sub/abs_in_sub", "/etc/passwd");
    put_link(f->root, "dir/sub/abs_dir", "/dir");
    put_link(f->root, "c1", "c2");
    put_link(f->root, "c2", "dir/c3");
    put_link(f->root, "dir/c3", "../etc/passwd");
    put_link(f->root, "loopA", "loopB");
    put_link(f->root, "loopB", "loopA");
    put_link(f->root, "self", "self");
    put_link(f->root, "out_abs", f->out);
    snprintf(p, sizeof(p), "%s/secret", f->out);
    put_link(f->root, "out_abs_secret", p);
    put_link(f->root, "out_rel", "../outside");
    put_link(f->root, "out_rel_deep", "dir/../../../outside/secret");
    put_link(f->root, "dangling_abs", "/newdir/created");
    put_link(f->root, "dangling_rel", "../../newdir/created_rel");
    snprintf(p, sizeof(p), "%s/created", f->out);
    put_link(f->root, "dangling_out", p);
    put_link(f->root, "dangling_out_rel", "../outside/created");
    put_link(f->root, "dangling_slash", "newdir/x/");
    put_link(f->root, "dangling_mkdir", "/made/by/link");
    /* Chains of exactly 40 (allowed) and 41 (ELOOP) symlinks. */
    for (int n = 40; n <= 41; n++) {
        for (int i = 0; i < n; i++) {
            char name[32], target[32];
            snprintf(name, sizeof(name), "n%d_%d", n, i);
            if (i + 1 < n)
                snprintf(target, sizeof(target), "n%d_%d", n, i + 1);
            else
                snprintf(target, sizeof(target), "etc/passwd");
            put_link(f->root, name, target);
        }
    }
    f->rootfd = open(f->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    assert_true(f->rootfd >= 0);
    f->out_before = list_tree(f->out);
}

static void fixture_teardown(fixture *f)
{
    /* The sentinel: nothing outside the root changed. */
    char *after = list_tree(f->out);
    assert_string_equal(f->out_before, after);
    free(after);
    free(f->out_before);
    close(f->rootfd);
    int basefd = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC);
    cista_error *err = NULL;
    assert_int_equal(util_rm_rf_at(basefd, f->base + strlen("/tmp/"), &err), 0);
    close(basefd);
}

/* Result of one lookup: an errno, or the inode it reached. */
typedef struct {
    int err;
    dev_t dev;
    ino_t ino;
} outcome;

static outcome run_open(const fixture *f, const char *path, int flags)
{
    outcome o = {0};
    cista_error *err = NULL;
    int fd = path_open_in_root(f->rootfd, path, flags, 0644, &err);
    if (fd < 0) {
        assert_non_null(err);
        assert_int_equal(err->code, fd);
        err_free(err);
        o.err = -fd;
        return o;
    }
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    close(fd);
    o.dev = st.st_dev;
    o.ino = st.st_ino;
    return o;
}

/* Where a case is expected to land: a path relative to the root, not followed. */
static outcome expect_at(const fixture *f, const char *rel)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", f->root, rel);
    struct stat st;
    outcome o = {0};
    assert_int_equal(lstat(p, &st), 0);
    o.dev = st.st_dev;
    o.ino = st.st_ino;
    return o;
}

typedef struct {
    const char *path;
    int flags;
    const char *lands; /* relative to the root; NULL when an error is expected */
    int err;
} open_case;

static const open_case open_cases[] = {
    {"etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"/etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"../../etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"dir/../../../etc/./passwd", O_RDONLY, "etc/passwd", 0},
    {"abs_passwd", O_RDONLY, "etc/passwd", 0},
    {"abs_etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"rel_up", O_RDONLY, "etc/passwd", 0},
    {"c1", O_RDONLY, "etc/passwd", 0},
    {"toroot/etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"toroot", O_PATH, ".", 0},
    {"dotdot/etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"dotdot/dotdot/dotdot", O_PATH, ".", 0},
    {"dir/sub/up/etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"dir_link/sub/file", O_RDONLY, "dir/sub/file", 0},
    {"dir/sub/abs_in_sub", O_RDONLY, "etc/passwd", 0},
    {"dir/sub/abs_dir/sub/file", O_RDONLY, "dir/sub/file", 0},
    {"dir/sub/abs_dir/sub/abs_dir/sub/up/etc/passwd", O_RDONLY, "etc/passwd", 0},
    {"dir_link/sub/../sub/file", O_RDONLY, "dir/sub/file", 0},
    /* Symlinked parents and targets that point outside: re-rooted, so missing. */
    {"out_abs/secret", O_RDONLY, NULL, ENOENT},
    {"out_abs_secret", O_RDONLY, NULL, ENOENT},
    {"out_rel/secret", O_RDONLY, NULL, ENOENT},
    {"out_rel_deep", O_RDONLY, NULL, ENOENT},
    {"out_rel/etc/passwd", O_RDONLY, NULL, ENOENT},
    {"loopA", O_RDONLY, NULL, ELOOP},
    {"self/x", O_RDONLY, NULL, ELOOP},
    {"n40_0", O_RDONLY, "etc/passwd", 0},
    {"n41_0", O_RDONLY, NULL, ELOOP},
    {"etc/passwd/x", O_RDONLY, NULL, ENOTDIR},
    {"etc/passwd/", O_RDONLY, NULL, ENOTDIR},
    {"etc/", O_RDONLY, "etc", 0},
    {"missing/x", O_RDONLY, NULL, ENOENT},
    {"missing/", O_RDONLY, NULL, ENOENT},
    /* The final component and O_NOFOLLOW. */
    {"abs_passwd", O_PATH | O_NOFOLLOW, "abs_passwd", 0},
    {"abs_passwd", O_RDONLY | O_NOFOLLOW, NULL, ELOOP},
    {"abs_etc", O_DIRECTORY | O_NOFOLLOW, NULL, ENOTDIR},
    {"abs_etc/", O_DIRECTORY | O_NOFOLLOW, "etc", 0},
    {"abs_etc", O_DIRECTORY, "etc", 0},
    {"etc/passwd", O_DIRECTORY, NULL, ENOTDIR},
    /* The root itself. */
    {"", O_PATH, ".", 0},
    {"/", O_PATH, ".", 0},
    {".", O_RDONLY | O_DIRECTORY, ".", 0},
    {"..", O_PATH, ".", 0},
    {"///..//./../", O_PATH, ".", 0},
    /* O_CREAT of things that exist or cannot be files. */
    {"etc/passwd", O_RDONLY | O_CREAT, "etc/passwd", 0},
    {"etc/passwd", O_RDONLY | O_CREAT | O_EXCL, NULL, EEXIST},
    {"abs_passwd", O_RDONLY | O_CREAT, "etc/passwd", 0},
    {"abs_passwd", O_RDONLY | O_CREAT | O_EXCL, NULL, EEXIST},
    {"abs_passwd", O_RDONLY | O_CREAT | O_NOFOLLOW, NULL, ELOOP},
    {"dangling_abs", O_RDONLY | O_CREAT | O_EXCL, NULL, EEXIST},
    {"dangling_abs", O_RDONLY | O_CREAT | O_NOFOLLOW, NULL, ELOOP},
    {"dangling_slash", O_RDONLY | O_CREAT, NULL, EISDIR},
    {"newdir/nothere/", O_RDONLY | O_CREAT, NULL, EISDIR},
    {"etc/", O_RDONLY | O_CREAT, NULL, EISDIR},
    {".", O_RDONLY | O_CREAT, NULL, EISDIR},
    {"toroot", O_RDONLY | O_CREAT, NULL, EISDIR},
    {"dangling_out", O_RDONLY | O_CREAT, NULL, ENOENT},
    {"dangling_out_rel", O_RDONLY | O_CREAT, NULL, ENOENT},
};

static void test_open_cases(void **state)
{
    (void)state;
    fixture f;
    fixture_setup(&f);
    for (size_t i = 0; i < ARRAY_LEN(open_cases); i++) {
        const open_case *c = &open_cases[i];
        outcome got[IMPL_COUNT];
        for (int impl = 0; impl < IMPL_COUNT; impl++) {
            set_impl(impl);
            got[impl] = run_open(&f, c->path, c->flags);
        }
        outcome want = c->lands ? expect_at(&f, c->lands) : (outcome){.err = c->err};
        for (int impl = 0; impl < IMPL_COUNT; impl++) {
            if (got[impl].err != want.err || got[impl].ino != want.ino ||
                got[impl].dev != want.dev) {
                print_error("case %zu \"%s\" flags %#x via %s: got errno %d ino %lu, want errno "
                            "%d ino %lu\n",
                            i, c->path, (unsigned)c->flags, impl_name[impl], got[impl].err,
                            (unsigned long)got[impl].ino, want.err, (unsigned long)want.ino);
                fail();
            }
        }
    }
    fixture_teardown(&f);
}

static void test_long_path(void **state)
{
    (void)state;
    fixture f;
    fixture_setup(&f);
    char *p = xmalloc(PATH_MAX + 8);
    memset(p, 'a', PATH_MAX + 4);
    for (size_t i = 100; i < PATH_MAX + 4; i += 100)
        p[i] = '/';
    p[PATH_MAX + 4] = '\0';
    for (int impl = 0; impl < IMPL_COUNT; impl++) {
        set_impl(impl);
        assert_int_equal(run_open(&f, p, O_RDONLY).err, ENAMETOOLONG);
    }
    /* One component longer than NAME_MAX. */
    p[300] = '\0';
    memset(p, 'b', 300);
    for (int impl = 0; impl < IMPL_COUNT; impl++) {
        set_impl(impl);
        assert_int_equal(run_open(&f, p, O_RDONLY).err, ENAMETOOLONG);
    }
    free(p);
    fixture_teardown(&f);
}

/*
 * A creating operation, run on a fresh tree per implementation; the trees
 * afterwards must be identical, and the outside sentinel untouched.
 */
typedef void (*mutate_fn)(fixture *f, int impl);

/* The fixture's random directory name appears in re-rooted paths; mask it. */
static char *mask(char *s, const char *word)
{
    size_t wl = strlen(word);
    cbuf out;
    buf_init(&out, 0, false);
    for (char *p = s;;) {
        char *hit = strstr(p, word);
        if (!hit) {
            buf_puts(&out, p);
            break;
        }
        buf_put(&out, p, (size_t)(hit - p));
        buf_puts(&out, "BASE");
        p = hit + wl;
    }
    free(s);
    size_t size;
    return (char *)buf_steal(&out, &size);
}

static void compare_mutation(mutate_fn fn)
{
    char *trees[IMPL_COUNT];
    for (int impl = 0; impl < IMPL_COUNT; impl++) {
        fixture f;
        fixture_setup(&f);
        set_impl(impl);
        fn(&f, impl);
        trees[impl] = mask(list_tree(f.root), f.base + 1);
        fixture_teardown(&f);
    }
    assert_string_equal(trees[IMPL_OPENAT2], trees[IMPL_FALLBACK]);
    for (int impl = 0; impl < IMPL_COUNT; impl++)
        free(trees[impl]);
}

static void assert_exists(const fixture *f, const char *rel, mode_t type)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", f->root, rel);
    struct stat st;
    if (lstat(p, &st) < 0) {
        print_error("expected %s to exist\n", p);
        fail();
    }
    assert_int_equal(st.st_mode & S_IFMT, type);
}

static void creat_ok(fixture *f, const char *path, const char *lands)
{
    outcome o = run_open(f, path, O_WRONLY | O_CREAT);
    assert_int_equal(o.err, 0);
    outcome want = expect_at(f, lands);
    assert_true(o.ino == want.ino && o.dev == want.dev);
}

/*
 * O_CREAT through a dangling symlink creates its target inside the root
 * (both implementations); a target whose directory exists only outside
 * the root is refused with ENOENT.
 */
static void mutate_creat_dangling(fixture *f, int impl)
{
    (void)impl;
    creat_ok(f, "dangling_abs", "newdir/created");
    creat_ok(f, "dangling_rel", "newdir/created_rel");
    creat_ok(f, "plain_new", "plain_new");
    creat_ok(f, "abs_etc/shadow", "etc/shadow");
    assert_int_equal(run_open(f, "dangling_out", O_WRONLY | O_CREAT).err, ENOENT);
    assert_int_equal(run_open(f, "out_abs/new", O_WRONLY | O_CREAT).err, ENOENT);
    assert_int_equal(run_open(f, "out_rel/new", O_WRONLY | O_CREAT).err, ENOENT);
    /* Now give the re-rooted host path a home inside the root: it lands there. */
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s%s", f->root, f->out);
    char cmd[PATH_MAX * 2];
    snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", p);
    assert_int_equal(system(cmd), 0);
    snprintf(p, sizeof(p), "%s/created", f->out + 1);
    creat_ok(f, "dangling_out", p);
    assert_int_equal(run_open(f, "dangling_out_rel", O_WRONLY | O_CREAT).err, ENOENT);
    put_dir(f->root, "outside");
    creat_ok(f, "dangling_out_rel", "outside/created");
}

static void test_creat_dangling(void **state)
{
    (void)state;
    compare_mutation(mutate_creat_dangling);
}

typedef struct {
    const char *path;
    const char *lands; /* directory expected, or NULL for an error */
    int err;
} mkdir_case;

static const mkdir_case mkdir_cases[] = {
    {"a/b/c", "a/b/c", 0},
    {"/abs/x", "abs/x", 0},
    {"../../up/../y", "y", 0},
    {"abs_etc/newdir", "etc/newdir", 0},
    {"dir_link/sub/deeper", "dir/sub/deeper", 0},
    {"dir/sub/up/z", "z", 0},
    {"dangling_mkdir/sub", "made/by/link/sub", 0},
    {"dangling_abs", "newdir/created", 0},
    {"out_rel/x", "outside/x", 0},
    {"etc", "etc", 0},
    {"", ".", 0},
    {"etc/passwd/x", NULL, ENOTDIR},
    {"abs_passwd/x", NULL, ENOTDIR},
    {"loopA/x", NULL, ELOOP},
    {"n41_0/x", NULL, ELOOP},
};

static void mutate_mkdir(fixture *f, int impl)
{
    for (size_t i = 0; i < ARRAY_LEN(mkdir_cases); i++) {
        const mkdir_case *c = &mkdir_cases[i];
        cista_error *err = NULL;
        int fd = path_mkdir_p_in_root(f->rootfd, c->path, 0755, &err);
        if (!c->lands) {
            if (fd != -c->err) {
                print_error("mkdir_p case %zu \"%s\" via %s: got %d, want %d\n", i, c->path,
                            impl_name[impl], fd, -c->err);
                fail();
            }
            assert_non_null(err);
            err_free(err);
            continue;
        }
        if (fd < 0) {
            char *s = err_str(err);
            print_error("mkdir_p case %zu \"%s\" via %s: %s\n", i, c->path, impl_name[impl], s);
            fail();
        }
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        /* A real directory fd: listing and fchmod work on it. */
        assert_int_equal(fchmod(fd, 0755), 0);
        close(fd);
        outcome want = expect_at(f, c->lands);
        assert_true(st.st_ino == want.ino && st.st_dev == want.dev);
    }
    /* A dangling link to a host path: the directories appear inside the root. */
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/evil", f->out);
    put_link(f->root, "to_host", p);
    cista_error *err = NULL;
    int fd = path_mkdir_p_in_root(f->rootfd, "to_host/sub", 0755, &err);
    assert_true(fd >= 0);
    close(fd);
    snprintf(p, sizeof(p), "%s/evil/sub", f->out + 1);
    assert_exists(f, p, S_IFDIR);
}

static void test_mkdir_p(void **state)
{
    (void)state;
    compare_mutation(mutate_mkdir);
}

typedef struct {
    const char *path;
    const char *parent; /* directory expected, NULL for an error */
    const char *name;
    int err;
} parent_case;

static const parent_case parent_cases[] = {
    {"etc/passwd", "etc", "passwd", 0},
    {"abs_etc/passwd", "etc", "passwd", 0},
    {"toroot/toroot/etc/x", "etc", "x", 0},
    {"x", ".", "x", 0},
    {"/x", ".", "x", 0},
    {"../../x", ".", "x", 0},
    {"dir/sub/up/abs_passwd", ".", "abs_passwd", 0},
    {"out_abs/secret", NULL, NULL, ENOENT},
    {"out_rel/secret", NULL, NULL, ENOENT},
    {"etc/passwd/x", NULL, NULL, ENOTDIR},
    {"loopA/x", NULL, NULL, ELOOP},
    {"a/b/", NULL, NULL, EINVAL},
    {"a/..", NULL, NULL, EINVAL},
    {".", NULL, NULL, EINVAL},
    {"", NULL, NULL, EINVAL},
    {"/", NULL, NULL, EINVAL},
};

static void test_open_parent(void **state)
{
    (void)state;
    fixture f;
    fixture_setup(&f);
    for (size_t i = 0; i < ARRAY_LEN(parent_cases); i++) {
        const parent_case *c = &parent_cases[i];
        for (int impl = 0; impl < IMPL_COUNT; impl++) {
            set_impl(impl);
            cista_error *err = NULL;
            char *name = NULL;
            int fd = path_open_parent_in_root(f.rootfd, c->path, &name, &err);
            if (!c->parent) {
                if (fd != -c->err) {
                    print_error("parent case %zu \"%s\" via %s: got %d, want %d\n", i, c->path,
                                impl_name[impl], fd, -c->err);
                    fail();
                }
                assert_null(name);
                err_free(err);
                continue;
            }
            assert_true(fd >= 0);
            assert_string_equal(name, c->name);
            struct stat st;
            assert_int_equal(fstat(fd, &st), 0);
            outcome want = expect_at(&f, c->parent);
            assert_true(st.st_ino == want.ino && st.st_dev == want.dev);
            close(fd);
            free(name);
        }
    }
    fixture_teardown(&f);
}

static void test_clean(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
        bool escapes;
    } cases[] = {
        {"", "", false},
        {"/", "", true},
        {".", "", false},
        {"./", "", false},
        {"..", "", true},
        {"../../etc/passwd", "etc/passwd", true},
        {"/etc/passwd", "etc/passwd", true},
        {"./etc//passwd/", "etc/passwd", false},
        {"a/./b/../c", "a/c", false},
        {"a/../../b", "b", true},
        {"a/b/../../..", "", true},
        {"a/b/../..", "", false},
        {"a/.../b", "a/.../b", false},
        {"..a/b..", "..a/b..", false},
        {"///a///", "a", true},
        {"a/..b/../c", "a/c", false},
        {".wh..wh..opq", ".wh..wh..opq", false},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *got = path_clean(cases[i].in);
        if (strcmp(got, cases[i].out) != 0) {
            print_error("path_clean(\"%s\") = \"%s\", want \"%s\"\n", cases[i].in, got,
                        cases[i].out);
            fail();
        }
        free(got);
        assert_int_equal(path_escapes_root(cases[i].in), cases[i].escapes);
    }
}

static void test_printable(void **state)
{
    (void)state;
    char *s = path_printable("a\nb\"c\\d\x1b[31m\xc3\xa9");
    assert_string_equal(s, "a\\x0ab\\x22c\\x5cd\\x1b[31m\\xc3\\xa9");
    free(s);
    char *big = xmalloc(1001);
    memset(big, 'x', 1000);
    big[1000] = '\0';
    s = path_printable(big);
    assert_int_equal(strlen(s), 256 + 3);
    free(s);
    free(big);
}

/*
 * The automatic fallback: in a child, a seccomp filter makes openat2 fail
 * with @errno_val (ENOSYS as on old kernels, EPERM as under some container
 * profiles); lookups must still work, through the walker.
 */
static int child_with_filter(int errno_val)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)errno_val),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = ARRAY_LEN(filter), .filter = filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        return 77;
    return 0;
}

static void test_auto_fallback(void **state)
{
    (void)state;
    fixture f;
    fixture_setup(&f);
    const int errnos[] = {ENOSYS, EPERM};
    for (size_t i = 0; i < ARRAY_LEN(errnos); i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            path_force_fallback(false);
            int r = child_with_filter(errnos[i]);
            if (r)
                _exit(r);
            outcome o = run_open(&f, "abs_etc/passwd", O_RDONLY);
            outcome want = expect_at(&f, "etc/passwd");
            if (o.err || o.ino != want.ino)
                _exit(1);
            if (run_open(&f, "out_abs/secret", O_RDONLY).err != ENOENT)
                _exit(2);
            /* ENOSYS is remembered; EPERM is asked again every time. */
            if (path_using_openat2() != (errnos[i] == EPERM))
                _exit(3);
            _exit(0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77) {
            print_message("note: seccomp unavailable, auto-fallback not tested\n");
            continue;
        }
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    fixture_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_cases),     cmocka_unit_test(test_long_path),
        cmocka_unit_test(test_creat_dangling), cmocka_unit_test(test_mkdir_p),
        cmocka_unit_test(test_open_parent),    cmocka_unit_test(test_clean),
        cmocka_unit_test(test_printable),      cmocka_unit_test(test_auto_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
