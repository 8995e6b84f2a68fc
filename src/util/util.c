/* util.c - allocation, cleanup helpers and whole-file I/O. */
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void oom(void)
{
    /* Nothing sensible can continue without memory (crun and Redis agree). */
    static const char msg[] = "cista: out of memory\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)r;
    abort();
}

void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *xzalloc(size_t size)
{
    void *p = calloc(1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (!q)
        oom();
    return q;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        oom();
    return p;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p)
        oom();
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *p = NULL;
    va_start(ap, fmt);
    int r = vasprintf(&p, fmt, ap);
    va_end(ap);
    if (r < 0)
        oom();
    return p;
}

void util__freep(void *p)
{
    free(*(void **)p);
}

void util__closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

void util__fclosep(void *fp)
{
    FILE *f = *(FILE **)fp;
    if (f)
        fclose(f);
}

ssize_t util_read_all(int fd, void *buf, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t r = read(fd, (char *)buf + done, size - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

int util_write_all(int fd, const void *buf, size_t size)
{
    size_t done = 0;
    while (done < size) {
        ssize_t r = write(fd, (const char *)buf + done, size - done);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)r;
    }
    return 0;
}

/* Read open file @fd (named @path in errors), whose fstat is @st. */
static int read_fd(char **out, size_t *out_size, int fd, const struct stat *stp, const char *path,
                   size_t max, cista_error **err)
{
    const struct stat st = *stp;
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max)
        return err_set(err, -EFBIG, "%s is %lld bytes, more than the limit of %zu", path,
                       (long long)st.st_size, max);
    /* Read one byte past max: sizes of special files are not known in advance. */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096;
    size_t size = 0;
    _cleanup_free_ char *buf = xmalloc(cap + 1);
    for (;;) {
        if (size == cap) {
            if (cap > max)
                return err_set(err, -EFBIG, "%s is larger than the limit of %zu bytes", path, max);
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + size, cap - size);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return err_set_sys(err, -errno, "read %s", path);
        }
        if (r == 0)
            break;
        size += (size_t)r;
        if (size > max)
            return err_set(err, -EFBIG, "%s is larger than the limit of %zu bytes", path, max);
    }
    buf[size] = '\0';
    *out = steal_ptr(&buf);
    if (out_size)
        *out_size = size;
    return 0;
}

int util_read_fileat(char **out, size_t *out_size, int dirfd, const char *path, size_t max,
                     cista_error **err)
{
    _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return err_set_sys(err, -errno, "stat %s", path);
    return read_fd(out, out_size, fd, &st, path, max, err);
}

int util_read_file(char **out, size_t *out_size, const char *path, size_t max, cista_error **err)
{
    return util_read_fileat(out, out_size, AT_FDCWD, path, max, err);
}

int util_read_regular_file(char **out, size_t *out_size, const char *path, size_t max,
                           cista_error **err)
{
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return err_set_sys(err, -errno, "stat %s", path);
    if (!S_ISREG(st.st_mode))
        return err_set(err, -EINVAL, "%s is not a regular file", path);
    /* a regular file never blocks: no need to clear O_NONBLOCK */
    return read_fd(out, out_size, fd, &st, path, max, err);
}

int util_write_file_atomic(int dirfd, const char *path, const void *data, size_t size, mode_t mode,
                           cista_error **err)
{
    const char *slash = strrchr(path, '/');
    _cleanup_free_ char *dir = slash ? xstrndup(path, (size_t)(slash - path + 1)) : xstrdup("");
    const char *base = slash ? slash + 1 : path;
    _cleanup_free_ char *tmp = xasprintf("%s.%s.tmp-XXXXXX", dir, base);
    /* mkostemp works on the cwd; emulate it relative to dirfd with O_EXCL retries. */
    _cleanup_close_ int fd = -1;
    size_t tl = strlen(tmp);
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789";
        unsigned r = (unsigned)random() ^ (unsigned)getpid() ^ (unsigned)attempt * 2654435761u;
        for (size_t i = tl - 6; i < tl; i++, r /= 36)
            tmp[i] = al[r % 36];
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST)
            return err_set_sys(err, -errno, "create temporary file for %s", path);
    }
    if (fd < 0)
        return err_set(err, -EEXIST, "could not create a temporary file for %s", path);
    int r = util_write_all(fd, data, size);
    if (r == 0 && fchmod(fd, mode) < 0)
        r = -errno;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (r == 0 && renameat(dirfd, tmp, dirfd, path) < 0)
        r = -errno;
    if (r < 0) {
        unlinkat(dirfd, tmp, 0);
        return err_set_sys(err, r, "write %s", path);
    }
    /* The rename is durable only once the directory is synced. */
    _cleanup_close_ int dfd = openat(dirfd, *dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0)
        (void)fsync(dfd);
    return 0;
}

/*
 * A hostile layer can nest directories far deeper than PATH_MAX through
 * symlinked parents; bound the recursion so cleanup cannot exhaust the stack.
 */
#define RM_MAX_DEPTH 4096

static int rm_at(int dirfd, const char *name, unsigned depth, cista_error **err);

static int rm_children(int dfd, const char *what, unsigned depth, cista_error **err)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = -errno;
        close(dfd);
        return err_set_sys(err, e, "open directory %s", what);
    }
    int ret = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            continue;
        if (errno != EISDIR && errno != EPERM) {
            ret = err_set_sys(err, -errno, "remove %s/%s", what, de->d_name);
            break;
        }
        ret = rm_at(dirfd(d), de->d_name, depth + 1, err);
        if (ret < 0)
            break;
    }
    closedir(d);
    return ret;
}

static int rm_at(int dirfd, const char *name, unsigned depth, cista_error **err)
{
    if (depth > RM_MAX_DEPTH)
        return err_set(err, -ELOOP, "remove %s: directories nested deeper than %d levels", name,
                       RM_MAX_DEPTH);
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return err_set_sys(err, -errno, "stat %s", name);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
            return err_set_sys(err, -errno, "remove %s", name);
        return 0;
    }
    int dfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 && errno == EACCES) {
        /*
         * An unpacked image may contain 0000 directories; we own them, so open
         * up. O_PATH first so the chmod cannot be redirected through a symlink
         * swapped in after the fstatat above.
         */
        _cleanup_close_ int pfd =
            openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_free_ char *proc = pfd >= 0 ? xasprintf("/proc/self/fd/%d", pfd) : NULL;
        if (proc && chmod(proc, 0700) == 0)
            dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (dfd < 0)
        return err_set_sys(err, -errno, "open directory %s", name);
    if ((st.st_mode & 0700) != 0700)
        (void)fchmod(dfd, 0700);
    int r = rm_children(dfd, name, depth, err);
    if (r < 0)
        return r;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return err_set_sys(err, -errno, "remove directory %s", name);
    return 0;
}

int util_rm_rf_at(int dirfd, const char *name, cista_error **err)
{
    return rm_at(dirfd, name, 0, err);
}

bool util_has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* "QUOTA PERIOD" (v2 cpu.max) or a v1 quota file plus its period file: CPUs, rounded up; 0: none.
 */
static unsigned quota_cpus(const char *quota_path, const char *period_path)
{
    char buf[64] = {0};
    long long quota = -1, period = 0;
    _cleanup_close_ int fd = open(quota_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || util_read_all(fd, buf, sizeof(buf) - 1) <= 0)
        return 0;
    if (!period_path) {
        if (strncmp(buf, "max", 3) == 0 || sscanf(buf, "%lld %lld", &quota, &period) != 2)
            return 0;
    } else {
        char pbuf[32] = {0};
        _cleanup_close_ int pfd = open(period_path, O_RDONLY | O_CLOEXEC);
        if (sscanf(buf, "%lld", &quota) != 1 || pfd < 0 ||
            util_read_all(pfd, pbuf, sizeof(pbuf) - 1) <= 0 || sscanf(pbuf, "%lld", &period) != 1)
            return 0;
    }
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = (quota + period - 1) / period;
    return n > 4096 ? 4096 : (unsigned)n;
}

/*
 * The quota of this process's own cgroup only (not its ancestors': a limit set higher up is
 * what a container runtime puts on the container's own cgroup anyway).
 */
static unsigned cgroup_quota_cpus(void)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/cgroup", "re");
    char line[512];
    unsigned best = 0;
    while (f && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || strstr(c2 + 1, ".."))
            continue;
        *c2 = 0;
        const char *ctrl = c1 + 1, *path = c2 + 1;
        unsigned n = 0;
        if (*ctrl == 0) { /* v2: the unified hierarchy, alone or beside v1 (hybrid) */
            _cleanup_free_ char *q = xasprintf("/sys/fs/cgroup%s/cpu.max", path);
            _cleanup_free_ char *h = xasprintf("/sys/fs/cgroup/unified%s/cpu.max", path);
            n = quota_cpus(q, NULL);
            if (!n)
                n = quota_cpus(h, NULL);
        } else {
            bool cpu = false;
            for (char *sv = NULL, *t = strtok_r((char *)ctrl, ",", &sv); t;
                 t = strtok_r(NULL, ",", &sv))
                cpu |= strcmp(t, "cpu") == 0;
            if (cpu) {
                const char *dirs[] = {"cpu,cpuacct", "cpu"};
                for (size_t i = 0; i < 2 && !n; i++) {
                    _cleanup_free_ char *q =
                        xasprintf("/sys/fs/cgroup/%s%s/cpu.cfs_quota_us", dirs[i], path);
                    _cleanup_free_ char *p =
                        xasprintf("/sys/fs/cgroup/%s%s/cpu.cfs_period_us", dirs[i], path);
                    n = quota_cpus(q, p);
                }
            }
        }
        if (n && (!best || n < best))
            best = n;
    }
    return best;
}

unsigned util_cpu_count(void)
{
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0)
        n = 1;
    unsigned q = cgroup_quota_cpus();
    return q && q < (unsigned long)n ? q : (unsigned)n;
}
