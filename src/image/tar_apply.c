/*
 * tar_apply.c - apply one uncompressed OCI layer onto a root directory
 * (see tar_apply.h; the rules per entry kind are in docs/image-unpack.md).
 *
 * libarchive only parses: it reads tar, GNU tar and pax headers from a
 * callback. Every filesystem change is made here, on directory fds found by
 * util/path.h inside the root, with *at() calls on the final name that never
 * follow it. archive_write_disk is deliberately not used: its notion of what
 * is safe (and its flags) would be a second policy to keep in line.
 *
 * Bookkeeping per layer:
 *  - "touched": every (parent directory inode, name) this layer created or
 *    updated. Whiteouts and opaque markers only remove what lower layers
 *    left, so they skip touched names whatever the order inside the tar.
 *  - "fixups": directories whose mode and times are set after the stream
 *    ends, deepest first. Files created inside a directory change its mtime,
 *    and a 0555 directory must stay writable until its last file arrives.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "image/tar_apply.h"
#include "util/log.h"
#include "util/path.h"
#include "util/util.h"

#define TAR_DEFAULT_MAX_ENTRIES 1000000ULL
#define TAR_DEFAULT_MAX_TOTAL (64ULL << 30)
/* Directory depth we are willing to walk when pruning (removal recurses). */
#define TAR_MAX_PRUNE_DEPTH 1024

#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"
#define WH_META_PREFIX ".wh..wh."

/* (directory inode, name) pairs this layer created or updated. */
typedef struct {
    uint64_t hash;
    dev_t dev;
    ino_t ino;
    char *name; /* NULL: empty slot */
} touched_slot;

typedef struct {
    touched_slot *slots;
    size_t cap; /* power of two */
    size_t len;
} touched_set;

/* A directory whose mode and times are set when the stream has ended. */
typedef struct {
    char *path; /* cleaned, as in the tar */
    dev_t dev;
    ino_t ino;
    mode_t mode;
    bool has_times;
    struct timespec ts[2];
    size_t depth;
    size_t seq;
} dir_fixup;

typedef struct {
    int rootfd;
    tar_apply_opts opts;
    tar_apply_stats st;
    const char *layer;
    bool unpriv; /* not root: keep directories owner-writable while unpacking */
    uid_t euid;
    tar_read_fn rd;
    void *ctx;
    cista_error *read_err; /* what the pull callback reported */
    uint64_t stream_size;  /* bytes the callback has delivered */
    touched_set touched;
    dir_fixup *fix;
    size_t nfix;
    size_t capfix;
    bool warned_xattr;
} applier;

/* ---- the touched set ------------------------------------------------- */

static uint64_t touched_hash(dev_t dev, ino_t ino, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    uint64_t words[2] = {(uint64_t)dev, (uint64_t)ino};
    const unsigned char *p = (const unsigned char *)words;
    for (size_t i = 0; i < sizeof(words); i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    for (p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    return h;
}

static touched_slot *touched_find(const touched_set *s, uint64_t h, dev_t dev, ino_t ino,
                                  const char *name)
{
    size_t mask = s->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        touched_slot *sl = &s->slots[i];
        if (!sl->name)
            return sl;
        if (sl->hash == h && sl->dev == dev && sl->ino == ino && strcmp(sl->name, name) == 0)
            return sl;
    }
}

static void touched_add(touched_set *s, dev_t dev, ino_t ino, const char *name)
{
    if ((s->len + 1) * 2 > s->cap) {
        touched_set n = {.cap = s->cap ? s->cap * 2 : 256, .len = s->len};
        n.slots = xzalloc(n.cap * sizeof(*n.slots));
        for (size_t i = 0; i < s->cap; i++) {
            touched_slot *old = &s->slots[i];
            if (old->name)
                *touched_find(&n, old->hash, old->dev, old->ino, old->name) = *old;
        }
        free(s->slots);
        *s = n;
    }
    uint64_t h = touched_hash(dev, ino, name);
    touched_slot *sl = touched_find(s, h, dev, ino, name);
    if (sl->name)
        return;
    *sl = (touched_slot){h, dev, ino, xstrdup(name)};
    s->len++;
}

static bool touched_has(const touched_set *s, dev_t dev, ino_t ino, const char *name)
{
    if (!s->cap)
        return false;
    return touched_find(s, touched_hash(dev, ino, name), dev, ino, name)->name != NULL;
}

static void touched_free(touched_set *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->slots[i].name);
    free(s->slots);
    *s = (touched_set){0};
}

/* Remember that @name in directory @dirfd belongs to this layer. */
static int mark_touched(applier *t, int dirfd, const char *name, cista_error **err)
{
    struct stat st;
    if (fstat(dirfd, &st) < 0)
        return err_set_sys(err, -errno, "stat of the parent directory failed");
    touched_add(&t->touched, st.st_dev, st.st_ino, name);
    return 0;
}

/* ---- small helpers --------------------------------------------------- */

static size_t path_depth(const char *p)
{
    size_t d = *p ? 1 : 0;
    for (; *p; p++)
        d += *p == '/';
    return d;
}

/* chmod through any fd, O_PATH included (fchmod refuses those). */
static int chmod_fd(int fd, mode_t mode)
{
    if (fchmod(fd, mode) == 0)
        return 0;
    if (errno != EBADF)
        return -errno;
#ifdef SYS_fchmodat2
    if (syscall(SYS_fchmodat2, fd, "", mode, AT_EMPTY_PATH) == 0)
        return 0;
    if (errno != ENOSYS && errno != EINVAL)
        return -errno;
#endif
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    return chmod(proc, mode) < 0 ? -errno : 0;
}

static void add_fixup(applier *t, const char *path, const struct stat *st, mode_t mode,
                      const struct timespec *ts)
{
    if (t->nfix == t->capfix) {
        t->capfix = t->capfix ? t->capfix * 2 : 64;
        t->fix = xrealloc(t->fix, t->capfix * sizeof(*t->fix));
    }
    dir_fixup *f = &t->fix[t->nfix];
    *f = (dir_fixup){.path = xstrdup(path),
                     .dev = st->st_dev,
                     .ino = st->st_ino,
                     .mode = mode,
                     .depth = path_depth(path),
                     .seq = t->nfix};
    if (ts) {
        f->has_times = true;
        f->ts[0] = ts[0];
        f->ts[1] = ts[1];
    }
    t->nfix++;
}

/*
 * Unprivileged only: a directory we must create in (or remove from) that
 * lacks owner rwx - say a 0555 directory from a lower layer - is opened up
 * now and its mode restored with the other fixups.
 */
static int ensure_writable(applier *t, int dirfd, const char *path, cista_error **err)
{
    struct stat st;
    if (!t->unpriv)
        return 0;
    if (fstat(dirfd, &st) < 0)
        return err_set_sys(err, -errno, "stat of directory failed");
    if ((st.st_mode & 0700) == 0700 || st.st_uid != t->euid)
        return 0;
    int r = chmod_fd(dirfd, (st.st_mode & 07777) | 0700);
    if (r < 0) {
        _cleanup_free_ char *q = path_printable(path);
        return err_set_sys(err, r, "cannot make directory \"%s\" writable while unpacking", q);
    }
    add_fixup(t, path, &st, st.st_mode & 07777, NULL);
    return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
    ts[1] = (struct timespec){.tv_nsec = UTIME_OMIT};
    if (archive_entry_mtime_is_set(e)) {
        long ns = archive_entry_mtime_nsec(e);
        ts[1] = (struct timespec){archive_entry_mtime(e), ns >= 0 && ns < 1000000000L ? ns : 0};
    }
    ts[0] = ts[1];
    if (archive_entry_atime_is_set(e)) {
        long ns = archive_entry_atime_nsec(e);
        ts[0] = (struct timespec){archive_entry_atime(e), ns >= 0 && ns < 1000000000L ? ns : 0};
    }
}

static int entry_owner(struct archive_entry *e, uid_t *uid, gid_t *gid, cista_error **err)
{
    int64_t u = archive_entry_uid(e), g = archive_entry_gid(e);
    /* (uid_t)-1 would mean "leave unchanged" to chown: refuse it with the rest. */
    if (u < 0 || u >= (int64_t)UINT32_MAX || g < 0 || g >= (int64_t)UINT32_MAX)
        return err_set(err, -ERANGE, "owner %" PRId64 ":%" PRId64 " is out of range", u, g);
    *uid = (uid_t)u;
    *gid = (gid_t)g;
    return 0;
}

/* Keep "user.*" extended attributes; others are skipped (see docs). */
static int apply_xattrs(applier *t, int fd, struct archive_entry *e, cista_error **err)
{
    const char *name;
    const void *value;
    size_t size;

    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
        if (!name || strncmp(name, "user.", 5) != 0) {
            _cleanup_free_ char *q = path_printable(name ? name : "");
            log_debug("%s: skipping extended attribute \"%s\" (only user.* is kept)", t->layer, q);
            continue;
        }
        if (fsetxattr(fd, name, value, size, 0) == 0)
            continue;
        if (errno == ENOTSUP) {
            if (!t->warned_xattr)
                log_warn("%s: the target filesystem does not store user.* extended "
                         "attributes; they are dropped",
                         t->layer);
            t->warned_xattr = true;
            continue;
        }
        int code = -errno; /* before path_printable() can clobber errno */
        _cleanup_free_ char *q = path_printable(name);
        return err_set_sys(err, code, "cannot set extended attribute \"%s\"", q);
    }
    return 0;
}

/* ---- removal --------------------------------------------------------- */

static int prune_children(applier *t, int dirfd, const char *path, bool keep_touched,
                          unsigned depth, size_t *out_left, cista_error **err);

/*
 * Remove @name from @dirfd without following it. With @keep_touched, names
 * this layer created survive, and so does any directory with a survivor
 * inside; *out_kept says whether @name survived.
 */
static int prune(applier *t, int dirfd, const char *dirpath, const char *name, bool keep_touched,
                 unsigned depth, bool *out_kept, cista_error **err)
{
    struct stat st, dst;
    bool keep = false;

    *out_kept = false;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int code = -errno;
        if (code == -ENOENT)
            return 0;
        _cleanup_free_ char *q = path_printable(name);
        return err_set_sys(err, code, "cannot stat \"%s\"", q);
    }
    if (keep_touched) {
        if (fstat(dirfd, &dst) < 0)
            return err_set_sys(err, -errno, "cannot stat a directory");
        keep = touched_has(&t->touched, dst.st_dev, dst.st_ino, name);
    }
    if (S_ISDIR(st.st_mode)) {
        _cleanup_free_ char *path = *dirpath ? xasprintf("%s/%s", dirpath, name) : xstrdup(name);
        _cleanup_close_ int fd =
            openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == EACCES && t->unpriv && st.st_uid == t->euid) {
            /* A 0000 directory of our own from a lower layer: open it up. */
            if (fchmodat(dirfd, name, (st.st_mode & 07777) | 0700, AT_SYMLINK_NOFOLLOW) == 0)
                fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd >= 0)
                add_fixup(t, path, &st, st.st_mode & 07777, NULL);
        }
        if (fd < 0) {
            int code = -errno;
            _cleanup_free_ char *q = path_printable(path);
            return err_set_sys(err, code, "cannot open directory \"%s\" to remove it", q);
        }
        size_t left = 0;
        int r = prune_children(t, fd, path, keep_touched, depth + 1, &left, err);
        if (r < 0)
            return r;
        if (keep || left > 0) {
            *out_kept = true;
            return 0;
        }
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
            int code = -errno;
            _cleanup_free_ char *q = path_printable(path);
            return err_set_sys(err, code, "cannot remove directory \"%s\"", q);
        }
        return 0;
    }
    if (keep) {
        *out_kept = true;
        return 0;
    }
    if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT) {
        int code = -errno;
        _cleanup_free_ char *q = path_printable(name);
        return err_set_sys(err, code, "cannot remove \"%s\"", q);
    }
    return 0;
}

/* Prune every child of @dirfd (an O_RDONLY directory fd); *out_left counts survivors. */
static int prune_children(applier *t, int dirfd, const char *path, bool keep_touched,
                          unsigned depth, size_t *out_left, cista_error **err)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    int ret = 0;

    *out_left = 0;
    if (depth > TAR_MAX_PRUNE_DEPTH) {
        _cleanup_free_ char *q = path_printable(path);
        return err_set(err, -ELOOP,
                       "directory \"%s\" is nested more than %d levels deep; refusing to "
                       "walk it",
                       q, TAR_MAX_PRUNE_DEPTH);
    }
    ret = ensure_writable(t, dirfd, path, err);
    if (ret < 0)
        return ret;
    /* Read the names first: removing while reading a directory is unspecified. */
    int dfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd < 0 ? NULL : fdopendir(dfd);
    if (!d) {
        ret = -errno;
        if (dfd >= 0)
            close(dfd);
        _cleanup_free_ char *q = path_printable(path);
        return err_set_sys(err, ret, "cannot list directory \"%s\"", q);
    }
    for (struct dirent *de; (errno = 0, de = readdir(d));) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            names = xrealloc(names, cap * sizeof(char *));
        }
        names[n++] = xstrdup(de->d_name);
    }
    if (errno != 0) {
        ret = -errno;
        _cleanup_free_ char *q = path_printable(path);
        err_set_sys(err, ret, "cannot list directory \"%s\"", q);
    }
    closedir(d);
    for (size_t i = 0; i < n && ret == 0; i++) {
        bool kept;
        ret = prune(t, dirfd, path, names[i], keep_touched, depth, &kept, err);
        *out_left += kept;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return ret;
}

/* Make room for a new entry at @name: remove whatever is there (last one wins). */
static int clear_slot(applier *t, int dirfd, const char *dirpath, const char *name,
                      cista_error **err)
{
    bool kept;
    return prune(t, dirfd, dirpath, name, false, 0, &kept, err);
}

/* ---- entries --------------------------------------------------------- */

/*
 * The directory that will hold @cleaned (an in-root O_PATH or O_RDONLY fd),
 * creating missing parents as 0755 directories. *out_base is the final name
 * (owned by the caller) and *out_dir the parent's path.
 */
static int open_parent(applier *t, const char *cleaned, char **out_base, char **out_dir,
                       cista_error **err)
{
    const char *slash = strrchr(cleaned, '/');
    _cleanup_free_ char *dir = slash ? xstrndup(cleaned, (size_t)(slash - cleaned)) : xstrdup("");
    char *base = NULL;

    int fd = path_open_parent_in_root(t->rootfd, cleaned, &base, NULL);
    if (fd == -ENOENT)
        fd = path_mkdir_p_in_root(t->rootfd, dir, 0755, NULL);
    if (fd < 0) {
        free(base);
        _cleanup_free_ char *q = path_printable(dir);
        if (fd == -ENOTDIR)
            return err_set(err, fd,
                           "parent \"%s\" is not a directory (a file or a symlink to one is in "
                           "the way)",
                           q);
        return err_set_sys(err, fd, "cannot open or create parent directory \"%s\"", q);
    }
    if (!base)
        base = xstrdup(slash ? slash + 1 : cleaned);
    int r = ensure_writable(t, fd, dir, err);
    if (r < 0) {
        free(base);
        close(fd);
        return r;
    }
    *out_base = base;
    *out_dir = steal_ptr(&dir);
    return fd;
}

static int set_meta_fd(applier *t, int fd, struct archive_entry *e, bool mode_and_times,
                       cista_error **err)
{
    int r;
    if (t->opts.preserve_owner) {
        uid_t uid = 0;
        gid_t gid = 0;
        r = entry_owner(e, &uid, &gid, err);
        if (r < 0)
            return r;
        if (fchown(fd, uid, gid) < 0)
            return err_set_sys(err, -errno, "cannot chown to %u:%u", (unsigned)uid, (unsigned)gid);
    }
    r = apply_xattrs(t, fd, e, err);
    if (r < 0)
        return r;
    if (!mode_and_times)
        return 0; /* directories: applied when the layer ends */
    /* After chown, which clears set-id bits; the mode is exactly the tar's. */
    if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
        return err_set_sys(err, -errno, "cannot set mode %04o", archive_entry_perm(e) & 07777);
    struct timespec ts[2];
    entry_times(e, ts);
    if (futimens(fd, ts) < 0)
        return err_set_sys(err, -errno, "cannot set the modification time");
    return 0;
}

/* Metadata for entries we hold no fd for (symlinks, fifos, devices). */
static int set_meta_at(applier *t, int dirfd, const char *name, struct archive_entry *e,
                       bool chmod_too, cista_error **err)
{
    if (t->opts.preserve_owner) {
        uid_t uid = 0;
        gid_t gid = 0;
        int r = entry_owner(e, &uid, &gid, err);
        if (r < 0)
            return r;
        if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
            return err_set_sys(err, -errno, "cannot chown to %u:%u", (unsigned)uid, (unsigned)gid);
    }
    if (chmod_too && fchmodat(dirfd, name, archive_entry_perm(e) & 07777, AT_SYMLINK_NOFOLLOW) < 0)
        return err_set_sys(err, -errno, "cannot set mode %04o", archive_entry_perm(e) & 07777);
    struct timespec ts[2];
    entry_times(e, ts);
    if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return err_set_sys(err, -errno, "cannot set the modification time");
    return 0;
}

static int write_data(applier *t, struct archive *a, struct archive_entry *e, int fd,
                      cista_error **err)
{
    const void *buf;
    size_t size;
    la_int64_t offset;
    int64_t end = 0;

    for (;;) {
        int r = archive_read_data_block(a, &buf, &size, &offset);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN || r == ARCHIVE_RETRY) {
            if (t->read_err)
                return err_set(err, t->read_err->code, "reading file data: %s", t->read_err->msg);
            return err_set(err, -EIO, "reading file data: %s (the layer is truncated or corrupt)",
                           archive_error_string(a) ? archive_error_string(a) : "unknown error");
        }
        if (size > t->opts.max_total || t->st.bytes > t->opts.max_total - size)
            return err_set(err, -EFBIG,
                           "the layer holds more than %" PRIu64
                           " bytes of file data (max_total); refusing it",
                           t->opts.max_total);
        if (offset < 0)
            return err_set(err, -EINVAL, "file data at negative offset %lld", (long long)offset);
        for (size_t done = 0; done < size;) {
            ssize_t n = pwrite(fd, (const char *)buf + done, size - done, offset + (off_t)done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return err_set_sys(err, n < 0 ? -errno : -EIO, "cannot write file data");
            done += (size_t)n;
        }
        t->st.bytes += size;
        if ((int64_t)(offset + (la_int64_t)size) > end)
            end = offset + (la_int64_t)size;
    }
    /* A sparse file may end in a hole. */
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > end &&
        ftruncate(fd, archive_entry_size(e)) < 0)
        return err_set_sys(err, -errno, "cannot extend sparse file");
    return 0;
}

static int apply_file(applier *t, struct archive *a, struct archive_entry *e, const char *cleaned,
                      cista_error **err)
{
    _cleanup_free_ char *base = NULL, *dir = NULL;
    _cleanup_close_ int pfd = open_parent(t, cleaned, &base, &dir, err);
    if (pfd < 0)
        return pfd;

    if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0 &&
        (uint64_t)archive_entry_size(e) > t->opts.max_total - t->st.bytes)
        return err_set(err, -EFBIG,
                       "file of %" PRId64 " bytes would take the layer past its limit of %" PRIu64
                       " bytes of file data (max_total; %" PRIu64 " written so far); refusing it",
                       (int64_t)archive_entry_size(e), t->opts.max_total, t->st.bytes);
    int r = clear_slot(t, pfd, dir, base, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd =
        openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set_sys(err, -errno, "cannot create file");
    r = mark_touched(t, pfd, base, err);
    if (r < 0)
        return r;
    r = write_data(t, a, e, fd, err);
    if (r < 0)
        return r;
    return set_meta_fd(t, fd, e, true, err);
}

static int apply_dir(applier *t, struct archive_entry *e, const char *cleaned, cista_error **err)
{
    _cleanup_free_ char *base = NULL, *dir = NULL;
    _cleanup_close_ int pfd = -1;
    _cleanup_close_ int fd = -1;
    struct stat st;
    int r;

    if (*cleaned == '\0') {
        /* The root entry ("./"): the root stays a directory; only metadata changes. */
        fd = openat(t->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    } else {
        pfd = open_parent(t, cleaned, &base, &dir, err);
        if (pfd < 0)
            return pfd;
        if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
            /* An existing directory is kept (its contents too); metadata updated. */
        } else {
            r = clear_slot(t, pfd, dir, base, err);
            if (r < 0)
                return r;
            if (mkdirat(pfd, base, 0700) < 0)
                return err_set_sys(err, -errno, "cannot create directory");
        }
        r = mark_touched(t, pfd, base, err);
        if (r < 0)
            return r;
        fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0)
        return err_set_sys(err, -errno, "cannot open directory");
    r = ensure_writable(t, fd, cleaned, err);
    if (r < 0)
        return r;
    r = set_meta_fd(t, fd, e, false, err);
    if (r < 0)
        return r;
    if (fstat(fd, &st) < 0)
        return err_set_sys(err, -errno, "cannot stat directory");
    struct timespec ts[2];
    entry_times(e, ts);
    add_fixup(t, cleaned, &st, archive_entry_perm(e) & 07777, ts);
    return 0;
}

static int apply_symlink(applier *t, struct archive_entry *e, const char *cleaned,
                         cista_error **err)
{
    const char *target = archive_entry_symlink(e);
    if (!target)
        target = archive_entry_symlink_utf8(e);
    if (!target || !*target)
        return err_set(err, -EINVAL, "symlink with an empty target");

    _cleanup_free_ char *base = NULL, *dir = NULL;
    _cleanup_close_ int pfd = open_parent(t, cleaned, &base, &dir, err);
    if (pfd < 0)
        return pfd;
    int r = clear_slot(t, pfd, dir, base, err);
    if (r < 0)
        return r;
    /* Stored verbatim: every later lookup resolves it inside the root. */
    if (symlinkat(target, pfd, base) < 0) {
        int code = -errno;
        _cleanup_free_ char *q = path_printable(target);
        return err_set_sys(err, code, "cannot create symlink to \"%s\"", q);
    }
    r = mark_touched(t, pfd, base, err);
    if (r < 0)
        return r;
    return set_meta_at(t, pfd, base, e, false, err);
}

static int apply_hardlink(applier *t, const char *raw_target, const char *cleaned,
                          cista_error **err)
{
    _cleanup_free_ char *qt = path_printable(raw_target);
    const char *rel = raw_target;

    /* Absolute targets are re-rooted like names; climbing out with ".." is refused. */
    while (*rel == '/')
        rel++;
    if (path_escapes_root(rel))
        return err_set(err, -EXDEV, "hard link target \"%s\" is outside the root", qt);
    if (rel != raw_target)
        t->st.rerooted++;
    _cleanup_free_ char *tclean = path_clean(rel);
    if (*tclean == '\0')
        return err_set(err, -EISDIR, "hard link target \"%s\" is the root directory", qt);

    _cleanup_free_ char *tbase = NULL;
    _cleanup_close_ int tpfd = path_open_parent_in_root(t->rootfd, tclean, &tbase, NULL);
    struct stat tst;
    if (tpfd < 0 || fstatat(tpfd, tbase, &tst, AT_SYMLINK_NOFOLLOW) < 0) {
        int code = tpfd < 0 ? tpfd : -errno;
        if (code == -ENOENT || code == -ENOTDIR)
            return err_set(err, code,
                           "hard link target \"%s\" does not exist in the root (a link must "
                           "follow the file it links to)",
                           qt);
        return err_set_sys(err, code, "cannot look up hard link target \"%s\"", qt);
    }
    if (S_ISDIR(tst.st_mode))
        return err_set(err, -EPERM, "hard link target \"%s\" is a directory", qt);
    if (S_ISLNK(tst.st_mode))
        return err_set(err, -EPERM,
                       "hard link target \"%s\" is a symlink; only regular files may be "
                       "hard-linked",
                       qt);
    if (!S_ISREG(tst.st_mode))
        return err_set(err, -EPERM, "hard link target \"%s\" is not a regular file", qt);

    _cleanup_free_ char *base = NULL, *dir = NULL;
    _cleanup_close_ int pfd = open_parent(t, cleaned, &base, &dir, err);
    if (pfd < 0)
        return pfd;
    struct stat st;
    bool same = fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == tst.st_dev &&
                st.st_ino == tst.st_ino;
    if (!same) {
        int r = clear_slot(t, pfd, dir, base, err);
        if (r < 0)
            return r;
        if (linkat(tpfd, tbase, pfd, base, 0) < 0)
            return err_set_sys(err, -errno, "cannot hard-link to \"%s\"", qt);
    }
    return mark_touched(t, pfd, base, err);
}

static int apply_node(applier *t, struct archive_entry *e, const char *cleaned, mode_t type,
                      cista_error **err)
{
    dev_t rdev = 0;
    if (type == S_IFCHR || type == S_IFBLK) {
        unsigned maj = (unsigned)archive_entry_rdevmajor(e);
        unsigned min = (unsigned)archive_entry_rdevminor(e);
        if (!t->opts.allow_devices)
            return err_set(err, -EPERM,
                           "%s device %u:%u refused: layers may not create device nodes "
                           "(allow_devices is off)",
                           type == S_IFCHR ? "character" : "block", maj, min);
        rdev = makedev(maj, min);
    }
    _cleanup_free_ char *base = NULL, *dir = NULL;
    _cleanup_close_ int pfd = open_parent(t, cleaned, &base, &dir, err);
    if (pfd < 0)
        return pfd;
    int r = clear_slot(t, pfd, dir, base, err);
    if (r < 0)
        return r;
    if (mknodat(pfd, base, type | 0600, rdev) < 0)
        return err_set_sys(err, -errno, "cannot create %s",
                           type == S_IFIFO ? "fifo" : "device node");
    r = mark_touched(t, pfd, base, err);
    if (r < 0)
        return r;
    return set_meta_at(t, pfd, base, e, true, err);
}

/*
 * ".wh.NAME" removes NAME as left by lower layers; ".wh..wh..opq" removes
 * everything lower layers left in its directory. Names this layer created
 * survive either way, so the order of entries inside the layer is free.
 * Lookups are in-root, so neither can remove anything outside.
 */
static int apply_whiteout(applier *t, const char *cleaned, const char *base, cista_error **err)
{
    _cleanup_free_ char *dir =
        base == cleaned ? xstrdup("") : xstrndup(cleaned, (size_t)(base - cleaned - 1));
    size_t left;
    bool kept;

    if (strcmp(base, WH_OPAQUE) == 0) {
        t->st.whiteouts++;
        int fd = path_open_in_root(t->rootfd, dir, O_RDONLY | O_DIRECTORY, 0, NULL);
        if (fd == -ENOENT || fd == -ENOTDIR)
            return 0; /* nothing below to hide; whiteouts never create */
        if (fd < 0) {
            _cleanup_free_ char *q = path_printable(dir);
            return err_set_sys(err, fd, "opaque marker: cannot open directory \"%s\"", q);
        }
        _cleanup_close_ int dfd = fd;
        return prune_children(t, dfd, dir, true, 0, &left, err);
    }
    if (strncmp(base, WH_META_PREFIX, strlen(WH_META_PREFIX)) == 0) {
        /* aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the image. */
        t->st.skipped++;
        return 0;
    }
    const char *victim = base + strlen(WH_PREFIX);
    if (*victim == '\0' || strcmp(victim, ".") == 0 || strcmp(victim, "..") == 0)
        return err_set(err, -EINVAL, "whiteout names nothing to remove");
    t->st.whiteouts++;
    int fd = path_open_in_root(t->rootfd, dir, O_PATH | O_DIRECTORY, 0, NULL);
    if (fd == -ENOENT || fd == -ENOTDIR)
        return 0; /* nothing below to hide */
    if (fd < 0) {
        _cleanup_free_ char *q = path_printable(dir);
        return err_set_sys(err, fd, "whiteout: cannot open directory \"%s\"", q);
    }
    _cleanup_close_ int pfd = fd;
    int r = ensure_writable(t, pfd, dir, err);
    if (r < 0)
        return r;
    return prune(t, pfd, dir, victim, true, 0, &kept, err);
}

static const char *last_component(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* True when a directory component (not the last) starts with ".wh.". */
static bool whiteout_in_dirs(const char *cleaned)
{
    const char *base = last_component(cleaned);
    for (const char *p = cleaned; p < base;) {
        if (strncmp(p, WH_PREFIX, strlen(WH_PREFIX)) == 0)
            return true;
        const char *s = strchr(p, '/');
        if (!s)
            break;
        p = s + 1;
    }
    return false;
}

static int apply_entry(applier *t, struct archive *a, struct archive_entry *e, const char *raw,
                       cista_error **err)
{
    _cleanup_free_ char *cleaned = path_clean(raw);
    const char *base = last_component(cleaned);
    const char *link = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);

    if (path_escapes_root(raw))
        t->st.rerooted++;
    if (!link)
        link = archive_entry_hardlink_utf8(e);

    if (!t->opts.no_whiteouts) {
        if (strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) == 0)
            return apply_whiteout(t, cleaned, base, err);
        if (whiteout_in_dirs(cleaned))
            return err_set(err, -EINVAL,
                           "a directory in the name starts with \".wh.\"; whiteouts are files "
                           "and are never created");
    }
    if (*cleaned == '\0' && (link || type != AE_IFDIR))
        return err_set(err, -EPERM,
                       "the entry names the root directory but is not a directory; the root "
                       "never changes type (CVE-2021-29136)");
    if (link)
        return apply_hardlink(t, link, cleaned, err);
    switch (type) {
    case AE_IFREG:
        return apply_file(t, a, e, cleaned, err);
    case AE_IFDIR:
        return apply_dir(t, e, cleaned, err);
    case AE_IFLNK:
        return apply_symlink(t, e, cleaned, err);
    case AE_IFIFO:
    case AE_IFCHR:
    case AE_IFBLK:
        return apply_node(t, e, cleaned, type, err);
    default:
        return err_set(err, -EINVAL, "unsupported entry type %#o", (unsigned)type);
    }
}

/* ---- directory fixups ------------------------------------------------ */

static int cmp_fixup(const void *pa, const void *pb)
{
    const dir_fixup *a = pa, *b = pb;
    if (a->depth != b->depth)
        return a->depth > b->depth ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/*
 * Deepest first, so a parent losing its write or search bit cannot block a
 * child; same depth in stream order, so the last entry for a directory wins.
 * A recorded directory that was replaced later in the layer is skipped.
 */
static int finish_dirs(applier *t, cista_error **err)
{
    if (t->nfix > 1)
        qsort(t->fix, t->nfix, sizeof(*t->fix), cmp_fixup);
    for (size_t i = 0; i < t->nfix; i++) {
        const dir_fixup *f = &t->fix[i];
        struct stat st;
        _cleanup_close_ int fd =
            path_open_in_root(t->rootfd, f->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, NULL);
        if (fd < 0 || fstat(fd, &st) < 0 || st.st_dev != f->dev || st.st_ino != f->ino)
            continue;
        if (fchmod(fd, f->mode) < 0 || (f->has_times && futimens(fd, f->ts) < 0)) {
            int code = -errno;
            _cleanup_free_ char *q = path_printable(f->path);
            return err_set_sys(err, code, "cannot restore mode and times of directory \"%s\"", q);
        }
    }
    return 0;
}

/* ---- the stream ------------------------------------------------------ */

static la_ssize_t read_cb(struct archive *a, void *client, const void **buf)
{
    applier *t = client;
    ssize_t n = t->rd(t->ctx, buf, &t->read_err);
    if (n < 0) {
        if (!t->read_err)
            err_set(&t->read_err, (int)n, "the layer reader failed without saying why");
        archive_set_error(a, (int)-n, "layer read callback failed");
        return -1;
    }
    t->stream_size += (uint64_t)n;
    return n;
}

/*
 * The names of a confidential image's entries are its plaintext, and an unpack error reaches the
 * host: replace the error (whose messages name paths at every level) by where and why, the
 * entry counted, not named.
 */
static void redact(cista_error **err, int code, const char *fmt, ...) CISTA_PRINTF(3, 4);
static void redact(cista_error **err, int code, const char *fmt, ...)
{
    if (!err)
        return;
    char where[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(where, sizeof(where), fmt, ap);
    va_end(ap);
    err_clear(err);
    err_set(err, code, "%s: %s (entry names are withheld from the host)", where, strerror(-code));
}

int tar_apply(int rootfd, tar_read_fn rd, void *ctx, const tar_apply_opts *opts,
              tar_apply_stats *stats, cista_error **err)
{
    applier t = {.rootfd = rootfd, .rd = rd, .ctx = ctx, .euid = geteuid()};
    struct archive *a = NULL;
    _cleanup_free_ char *prev = NULL;
    int ret = 0;

    if (opts)
        t.opts = *opts;
    else
        t.opts.preserve_owner = t.euid == 0;
    if (!t.opts.max_entries)
        t.opts.max_entries = TAR_DEFAULT_MAX_ENTRIES;
    if (!t.opts.max_total)
        t.opts.max_total = TAR_DEFAULT_MAX_TOTAL;
    t.layer = t.opts.layer_name ? t.opts.layer_name : "layer";
    t.unpriv = t.euid != 0;

    a = archive_read_new();
    /* Uncompressed tar only: decompression sits in front of the callback. */
    if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
        archive_read_support_format_gnutar(a) != ARCHIVE_OK ||
        archive_read_support_filter_none(a) != ARCHIVE_OK) {
        ret = err_set(err, -ENOTSUP, "%s: libarchive lacks tar support: %s", t.layer,
                      archive_error_string(a));
        goto out;
    }
    if (archive_read_open(a, &t, NULL, read_cb, NULL) != ARCHIVE_OK) {
        /* A zero-byte blob is an empty layer to GNU tar and to us. */
        if (!t.read_err && t.stream_size == 0)
            goto out;
        if (t.read_err)
            ret = err_set(err, t.read_err->code, "%s: %s", t.layer, t.read_err->msg);
        else
            ret = err_set(err, -EINVAL, "%s: not a tar stream: %s", t.layer,
                          archive_error_string(a) ? archive_error_string(a) : "unknown");
        goto out;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        _cleanup_free_ char *qprev = prev ? path_printable(prev) : NULL;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            const char *why = t.read_err ? t.read_err->msg : archive_error_string(a);
            int code = t.read_err ? t.read_err->code : -EIO;
            if (prev && t.opts.redact_names)
                ret = err_set(err, code,
                              "%s: after entry %" PRIu64 ": reading the next tar header: %s "
                              "(the layer is truncated or corrupt)",
                              t.layer, t.st.entries, why ? why : "unknown error");
            else if (prev)
                ret = err_set(err, code,
                              "%s: after entry \"%s\": reading the next tar header: %s "
                              "(the layer is truncated or corrupt)",
                              t.layer, qprev, why ? why : "unknown error");
            else
                ret = err_set(err, code,
                              "%s: reading the first tar header: %s (not a tar stream, "
                              "or truncated)",
                              t.layer, why ? why : "unknown error");
            goto out;
        }
        if (++t.st.entries > t.opts.max_entries) {
            ret =
                err_set(err, -E2BIG, "%s: more than %" PRIu64 " entries (max_entries); refusing it",
                        t.layer, t.opts.max_entries);
            goto out;
        }
        const char *raw = archive_entry_pathname(e);
        if (!raw)
            raw = archive_entry_pathname_utf8(e);
        if (!raw || !*raw) {
            ret = err_set(err, -EINVAL, "%s: entry %" PRIu64 " has no name", t.layer, t.st.entries);
            goto out;
        }
        free(prev);
        prev = xstrdup(raw);
        if (r == ARCHIVE_WARN)
            log_debug("%s: libarchive warning: %s", t.layer, archive_error_string(a));
        ret = apply_entry(&t, a, e, raw, err);
        if (ret < 0 && t.opts.redact_names) {
            redact(err, ret, "%s: entry %" PRIu64, t.layer, t.st.entries);
            goto out;
        }
        if (ret < 0) {
            _cleanup_free_ char *q = path_printable(raw);
            err_wrap(err, "%s: entry \"%s\"", t.layer, q);
            goto out;
        }
    }
    ret = finish_dirs(&t, err);
    if (ret < 0 && t.opts.redact_names)
        redact(err, ret, "%s: setting directory modes and times", t.layer);
    else if (ret < 0)
        err_wrap(err, "%s", t.layer);

out:
    if (a)
        archive_read_free(a);
    if (stats)
        *stats = t.st;
    touched_free(&t.touched);
    for (size_t i = 0; i < t.nfix; i++)
        free(t.fix[i].path);
    free(t.fix);
    err_free(t.read_err);
    return ret;
}
