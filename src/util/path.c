/*
 * path.c - resolve names below a root directory (see path.h).
 *
 * Two resolvers give the same answers: openat2(2) with RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS, and a userspace walker used when the kernel lacks
 * openat2 (or a seccomp filter hides it) or when forced. The walker follows
 * the kernel's rules closely enough that tests/unit/test_path.c runs every
 * case through both and compares: a symlink is never followed by the
 * kernel (every component is opened O_PATH|O_NOFOLLOW), its target is read
 * and spliced into the rest of the path, absolute targets restart at the
 * root, ".." stops at the root, and at most 40 symlinks are followed.
 *
 * Everything above path_open_in_root() (parent lookup, mkdir -p) is written
 * once on top of it, so the two resolvers differ in exactly one function.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/path.h"
#include "util/util.h"

/* The kernel's MAXSYMLINKS: the 41st symlink in one lookup fails with ELOOP. */
#define PATH_MAX_LINKS 40
/* openat2 returns EAGAIN when a rename raced with "..": retry a little. */
#define PATH_RETRIES 32

static atomic_bool g_force_fallback;
static atomic_bool g_no_openat2; /* the kernel said ENOSYS once */
static pthread_once_t g_env_once = PTHREAD_ONCE_INIT;

static void read_env(void)
{
    const char *v = getenv("CISTA_NO_OPENAT2");
    if (v && strcmp(v, "1") == 0)
        atomic_store(&g_force_fallback, true);
}

void path_force_fallback(bool on)
{
    /* Read the environment first so that it cannot override this call later. */
    pthread_once(&g_env_once, read_env);
    atomic_store(&g_force_fallback, on);
}

bool path_using_openat2(void)
{
    pthread_once(&g_env_once, read_env);
    return !atomic_load(&g_force_fallback) && !atomic_load(&g_no_openat2);
}

static int sys_openat2(int dirfd, const char *path, int flags, mode_t mode)
{
    bool creates = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
    struct open_how how = {
        .flags = (uint64_t)(unsigned)(flags | O_CLOEXEC),
        /* openat2 rejects a mode it would not use, unlike openat. */
        .mode = creates ? (mode & 07777) : 0,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    for (int i = 0; i < PATH_RETRIES; i++) {
        long r = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
        if (r >= 0)
            return (int)r;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
    }
    return -EAGAIN;
}

/*
 * The walker's position: an O_PATH fd of the current directory and the
 * identity of every directory between it and the root, so that ".." can be
 * taken with one openat() and checked, instead of re-walking from the root.
 */
typedef struct {
    dev_t dev;
    ino_t ino;
} dir_id;

typedef struct {
    int rootfd;
    int cur;
    dir_id *stack; /* stack[0] is the root; stack[depth] is cur */
    size_t depth;
    size_t cap;
} walker;

static int walker_reset(walker *w)
{
    struct stat st;
    int fd = openat(w->rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (w->cur >= 0)
        close(w->cur);
    w->cur = fd;
    w->depth = 0;
    w->stack[0] = (dir_id){st.st_dev, st.st_ino};
    return 0;
}

/* Descend into @fd (a directory just opened below cur); takes ownership. */
static void walker_push(walker *w, int fd, const struct stat *st)
{
    if (w->depth + 1 >= w->cap) {
        w->cap *= 2;
        w->stack = xrealloc(w->stack, w->cap * sizeof(*w->stack));
    }
    close(w->cur);
    w->cur = fd;
    w->stack[++w->depth] = (dir_id){st->st_dev, st->st_ino};
}

/*
 * "..": stay at the root, otherwise open the real parent and check that it
 * is the directory we came through. A mismatch means the tree was moved
 * under us; answer EAGAIN as openat2 does rather than guess.
 */
static int walker_up(walker *w)
{
    struct stat st;
    if (w->depth == 0)
        return 0;
    int fd = openat(w->cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    const dir_id *want = &w->stack[w->depth - 1];
    if (st.st_dev != want->dev || st.st_ino != want->ino) {
        close(fd);
        return -EAGAIN;
    }
    close(w->cur);
    w->cur = fd;
    w->depth--;
    return 0;
}

/* Read the target of the symlink opened as @fd (O_PATH|O_NOFOLLOW). */
static int read_link(int fd, char **out)
{
    char *buf = xmalloc(PATH_MAX + 1);
    ssize_t n = readlinkat(fd, "", buf, PATH_MAX + 1);
    if (n < 0) {
        int e = -errno;
        free(buf);
        return e;
    }
    if (n > PATH_MAX) {
        free(buf);
        return -ENAMETOOLONG;
    }
    if (n == 0) {
        /* The kernel treats an empty symlink body as a missing file. */
        free(buf);
        return -ENOENT;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/*
 * Open the final component @name in @dirfd. O_NOFOLLOW is always added: the
 * walker has already decided not to follow it, and if the name turned into
 * a symlink since we looked, failing beats letting the kernel follow it.
 */
static int open_last(int dirfd, const char *name, int flags, bool trailing, mode_t mode)
{
    int fd =
        openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC | (trailing ? O_DIRECTORY : 0), mode);
    return fd < 0 ? -errno : fd;
}

/*
 * The userspace resolver. @rest is consumed left to right from index pos;
 * each symlink replaces the consumed part with its target (so the buffer
 * never holds more than 41 * PATH_MAX bytes). Trailing slashes follow the
 * kernel: they force following a final symlink and require a directory,
 * and with O_CREAT they give EISDIR.
 */
static int walk_open_once(int rootfd, const char *path, int flags, mode_t mode)
{
    walker w = {.rootfd = rootfd, .cur = -1, .cap = 16};
    _cleanup_free_ char *rest = xstrdup(path);
    size_t pos = 0;
    unsigned links = 0;
    int ret;

    w.stack = xmalloc(w.cap * sizeof(*w.stack));
    ret = walker_reset(&w);
    if (ret < 0)
        goto out;

    for (;;) {
        char *p = rest + pos;
        while (*p == '/')
            p++;
        if (*p == '\0') {
            /* "", "/" or a symlink to "/": the current directory itself. */
            ret = open_last(w.cur, ".", flags, false, mode);
            goto out;
        }
        char *end = strchrnul(p, '/');
        char *after = end;
        while (*after == '/')
            after++;
        bool last = *after == '\0';
        bool trailing = last && after != end;
        char saved = *end;
        *end = '\0';

        if (strcmp(p, ".") == 0 || strcmp(p, "..") == 0) {
            if (p[1] == '.') {
                ret = walker_up(&w);
                if (ret < 0)
                    goto out;
            }
            if (last) {
                ret = open_last(w.cur, ".", flags, false, mode);
                goto out;
            }
            *end = saved;
            pos = (size_t)(after - rest);
            continue;
        }
        if (last && trailing && (flags & O_CREAT)) {
            ret = -EISDIR;
            goto out;
        }

        struct stat st;
        int fd = openat(w.cur, p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0) {
            ret = -errno;
            if (fd >= 0)
                close(fd);
            /* A missing final name is for open_last: O_CREAT may make it. */
            if (ret == -ENOENT && last)
                ret = open_last(w.cur, p, flags, trailing, mode);
            goto out;
        }

        bool excl_create = (flags & O_CREAT) && (flags & O_EXCL);
        bool follow = !last || trailing || (!(flags & O_NOFOLLOW) && !excl_create);
        if (S_ISLNK(st.st_mode) && follow) {
            char *target = NULL;
            ret = ++links > PATH_MAX_LINKS ? -ELOOP : read_link(fd, &target);
            close(fd);
            if (ret == 0 && target[0] == '/')
                ret = walker_reset(&w);
            if (ret < 0) {
                free(target);
                goto out;
            }
            /* New path: the target, then whatever followed the link. */
            *end = saved;
            char *next = xasprintf("%s%s", target, end);
            free(target);
            free(rest);
            rest = next;
            pos = 0;
            continue;
        }
        if (last) {
            close(fd);
            ret = open_last(w.cur, p, flags, trailing, mode);
            goto out;
        }
        if (!S_ISDIR(st.st_mode)) {
            close(fd);
            ret = -ENOTDIR;
            goto out;
        }
        walker_push(&w, fd, &st);
        *end = saved;
        pos = (size_t)(after - rest);
    }

out:
    if (w.cur >= 0)
        close(w.cur);
    free(w.stack);
    return ret;
}

static int walk_open(int rootfd, const char *path, int flags, mode_t mode)
{
    int ret = -EAGAIN;
    for (int i = 0; i < PATH_RETRIES && ret == -EAGAIN; i++)
        ret = walk_open_once(rootfd, path, flags, mode);
    return ret;
}

/* Resolve without touching err: the building block for the functions below. */
static int resolve(int rootfd, const char *path, int flags, mode_t mode)
{
    if (path[0] == '\0')
        path = ".";
    /* The kernel copies at most PATH_MAX bytes of a name; so do we. */
    if (strnlen(path, PATH_MAX) >= PATH_MAX)
        return -ENAMETOOLONG;
    if (path_using_openat2()) {
        int fd = sys_openat2(rootfd, path, flags, mode);
        if (fd != -ENOSYS && fd != -EPERM)
            return fd;
        /*
         * ENOSYS: no openat2 here, remember that. EPERM: usually a seccomp
         * filter, but also a genuine answer (O_NOATIME on a file we do not
         * own); the walker gives the genuine answer too, so just ask it.
         */
        if (fd == -ENOSYS)
            atomic_store(&g_no_openat2, true);
    }
    return walk_open(rootfd, path, flags, mode);
}

int path_open_in_root(int rootfd, const char *path, int flags, mode_t mode, cista_error **err)
{
    int fd = resolve(rootfd, path, flags, mode);
    if (fd < 0) {
        _cleanup_free_ char *q = path_printable(path);
        return err_set_sys(err, fd, "cannot open \"%s\" below the root", q);
    }
    return fd;
}

int path_open_parent_in_root(int rootfd, const char *path, char **out_name, cista_error **err)
{
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    _cleanup_free_ char *q = NULL;

    if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        q = path_printable(path);
        return err_set(err, -EINVAL,
                       "\"%s\" has no final name (it ends in \"/\", \".\" or \"..\"), "
                       "so it has no parent to open",
                       q);
    }
    /* "a/b" -> "a"; "/b" -> "/"; "b" -> "" (the root). */
    _cleanup_free_ char *parent =
        slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup("");
    int fd = resolve(rootfd, parent, O_PATH | O_DIRECTORY, 0);
    if (fd < 0) {
        q = path_printable(parent);
        return err_set_sys(err, fd, "cannot open parent directory \"%s\" below the root", q);
    }
    *out_name = xstrdup(name);
    return fd;
}

/* A path as a vector of non-empty components ("a//b/" -> a, b). */
typedef struct {
    char **v;
    size_t len;
    size_t cap;
} strv;

static void strv_push(strv *s, const char *p, size_t n)
{
    if (s->len == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = xrealloc(s->v, s->cap * sizeof(char *));
    }
    s->v[s->len++] = xstrndup(p, n);
}

static void strv_split(strv *s, const char *path)
{
    for (const char *p = path; *p;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchrnul(p, '/');
        strv_push(s, p, (size_t)(e - p));
        p = e;
    }
}

static void strv_free(strv *s)
{
    for (size_t i = 0; i < s->len; i++)
        free(s->v[i]);
    free(s->v);
    *s = (strv){0};
}

static char *strv_join(const strv *s, size_t count)
{
    size_t size = 1;
    for (size_t i = 0; i < count; i++)
        size += strlen(s->v[i]) + 1;
    char *out = xmalloc(size);
    char *p = out;
    *p = '\0';
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(s->v[i]);
        if (i)
            *p++ = '/';
        memcpy(p, s->v[i], n);
        p += n;
    }
    *p = '\0';
    return out;
}

/* Replace s->v[i] (a symlink) by the components of @target. */
static void strv_splice(strv *s, size_t i, const char *target, bool absolute)
{
    strv n = {0};
    size_t start = absolute ? 0 : i;
    for (size_t k = 0; k < start; k++)
        strv_push(&n, s->v[k], strlen(s->v[k]));
    strv_split(&n, target);
    for (size_t k = i + 1; k < s->len; k++)
        strv_push(&n, s->v[k], strlen(s->v[k]));
    strv_free(s);
    *s = n;
}

/*
 * mkdir -p: resolve ever longer prefixes from the root with the in-root
 * resolver; when one is missing, its parent is the directory we already
 * hold, so mkdirat() there. A name that exists but does not resolve is a
 * dangling symlink: splice its target into the path (absolute targets start
 * again at the root) and go on, so directories are created where the
 * symlink points - inside the root, as with O_CREAT through a dangling
 * symlink.
 */
static int mkdir_p(int rootfd, const char *path, mode_t mode, char **out_failed)
{
    strv comps = {0};
    size_t i = 0;
    unsigned links = 0, tries = 0; /* tries: attempts at the current component */
    int ret = 0;
    int cur = resolve(rootfd, "", O_PATH | O_DIRECTORY, 0);

    if (cur < 0)
        return cur;
    strv_split(&comps, path);
    while (i < comps.len) {
        _cleanup_free_ char *prefix = strv_join(&comps, i + 1);
        int fd = resolve(rootfd, prefix, O_PATH | O_DIRECTORY, 0);
        if (fd >= 0) {
            close(cur);
            cur = fd;
            i++;
            tries = 0;
            continue;
        }
        /* Someone else keeps removing what we create: give up, do not spin. */
        if (++tries > PATH_RETRIES)
            fd = -EAGAIN;
        if (fd != -ENOENT) {
            ret = fd;
            *out_failed = steal_ptr(&prefix);
            goto out;
        }
        if (mkdirat(cur, comps.v[i], mode) == 0)
            continue; /* resolve it again to step in */
        if (errno != EEXIST) {
            ret = -errno;
            *out_failed = steal_ptr(&prefix);
            goto out;
        }

        struct stat st;
        _cleanup_close_ int lfd = openat(cur, comps.v[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (lfd < 0 || fstat(lfd, &st) < 0 || !S_ISLNK(st.st_mode))
            continue; /* appeared or vanished between our calls: look again */
        _cleanup_free_ char *target = NULL;
        if (++links > PATH_MAX_LINKS)
            ret = -ELOOP;
        else
            ret = read_link(lfd, &target);
        if (ret < 0) {
            *out_failed = steal_ptr(&prefix);
            goto out;
        }
        bool absolute = target[0] == '/';
        strv_splice(&comps, i, target, absolute);
        tries = 0;
        if (absolute) {
            i = 0;
            fd = resolve(rootfd, "", O_PATH | O_DIRECTORY, 0);
            if (fd < 0) {
                ret = fd;
                goto out;
            }
            close(cur);
            cur = fd;
        }
    }
    /* Hand back a real directory fd (O_PATH cannot fchmod or list). */
    ret = openat(cur, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ret < 0) {
        ret = -errno;
        *out_failed = strv_join(&comps, comps.len);
    }
out:
    close(cur);
    strv_free(&comps);
    return ret;
}

int path_mkdir_p_in_root(int rootfd, const char *path, mode_t mode, cista_error **err)
{
    char *failed = NULL;
    int fd = mkdir_p(rootfd, path, mode, &failed);
    if (fd < 0) {
        _cleanup_free_ char *q = path_printable(path);
        _cleanup_free_ char *qf = path_printable(failed ? failed : path);
        free(failed);
        return err_set_sys(err, fd, "cannot create directory \"%s\" below the root (at \"%s\")", q,
                           qf);
    }
    return fd;
}

char *path_clean(const char *name)
{
    size_t olen = 0;
    char *out = xmalloc(strlen(name) + 1);

    for (const char *p = name; *p;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchrnul(p, '/');
        size_t len = (size_t)(e - p);
        if (len == 1 && p[0] == '.') {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            /* Drop the last component; at the root ".." is the root. */
            while (olen > 0 && out[olen - 1] != '/')
                olen--;
            if (olen > 0)
                olen--;
        } else {
            if (olen)
                out[olen++] = '/';
            memcpy(out + olen, p, len);
            olen += len;
        }
        p = e;
    }
    out[olen] = '\0';
    return out;
}

bool path_escapes_root(const char *name)
{
    size_t depth = 0;

    if (name[0] == '/')
        return true;
    for (const char *p = name; *p;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchrnul(p, '/');
        size_t len = (size_t)(e - p);
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (depth == 0)
                return true;
            depth--;
        } else if (!(len == 1 && p[0] == '.')) {
            depth++;
        }
        p = e;
    }
    return false;
}

char *path_printable(const char *name)
{
    /* Enough for a message; hostile names can be megabytes long. */
    enum { MAX_SHOWN = 256 };
    size_t n = strnlen(name, MAX_SHOWN + 1);
    bool cut = n > MAX_SHOWN;
    char *out = xmalloc((cut ? MAX_SHOWN : n) * 4 + 4);
    char *o = out;

    for (size_t i = 0; i < n && i < MAX_SHOWN; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            o += sprintf(o, "\\x%02x", c);
        else
            *o++ = (char)c;
    }
    if (cut)
        o = stpcpy(o, "...");
    *o = '\0';
    return out;
}
