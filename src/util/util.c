/* util.c - allocation, cleanup helpers and whole-file I/O. */
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/* The mount @fd is on: statx (Linux 5.8), else /proc/self/fdinfo (3.15). */
static int mount_id_of(int fd, uint64_t *out)
{
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &sx) == 0 &&
        (sx.stx_mask & STATX_MNT_ID)) {
        *out = sx.stx_mnt_id;
        return 0;
    }
    char path[64], line[128];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "mnt_id: %" SCNu64, out) == 1)
            return 0;
    return -ENOTSUP;
}

/*
 * Whether @fd is the root of a mount: statx says so without any permission on the directory
 * (Linux 5.8); before that, whether its ".." is on another mount.
 */
static int is_mount_root(int fd, bool *out)
{
    struct statx sx;
    if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &sx) == 0 &&
        (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) {
        *out = sx.stx_attributes & STATX_ATTR_MOUNT_ROOT;
        return 0;
    }
    uint64_t here = 0, up = 0;
    _cleanup_close_ int ufd = openat(fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (ufd < 0)
        return -errno;
    if (mount_id_of(fd, &here) < 0 || mount_id_of(ufd, &up) < 0)
        return -ENOTSUP;
    *out = here != up;
    return 0;
}

static int mount_left(cista_error **err, const char *path)
{
    return err_set(err, -EBUSY,
                   "remove %s: a file system is mounted there; it and everything in it were left "
                   "in place (unmount it, then remove it)",
                   path);
}

static int rm_at(int dirfd, const char *name, const char *path, const uint64_t *parent_mnt,
                 unsigned depth, cista_error **err);

/*
 * Remove the entries of the directory @dfd (consumed), on mount @mnt, named @path in messages.
 * What lies on another mount stays: -EBUSY at the end (err names the first), after the rest is
 * gone; any other failure stops the walk.
 */
static int rm_children(int dfd, const char *path, uint64_t mnt, unsigned depth, cista_error **err)
{
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = -errno;
        close(dfd);
        return err_set_sys(err, e, "open directory %s", path);
    }
    int ret = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            continue;
        _cleanup_free_ char *sub = xasprintf("%s/%s", path, de->d_name);
        int r;
        if (errno == EBUSY) /* a file with something mounted on it */
            r = mount_left(err, sub);
        else if (errno != EISDIR && errno != EPERM)
            r = err_set_sys(err, -errno, "remove %s", sub);
        else
            r = rm_at(dirfd(d), de->d_name, sub, &mnt, depth + 1, err);
        if (r == -EBUSY) {
            ret = r;
            continue;
        }
        if (r < 0) {
            ret = r;
            break;
        }
    }
    closedir(d);
    return ret;
}

/*
 * Remove @name in @dirfd (@path in messages). A directory is entered only when it is on
 * @parent_mnt, the mount of the directory holding it (NULL at the top: when it is no mount's root):
 * if unmounting a sandbox's tmpfs or a volume failed, the walk must not delete what is
 * mounted there.
 */
static int rm_at(int dirfd, const char *name, const char *path, const uint64_t *parent_mnt,
                 unsigned depth, cista_error **err)
{
    if (depth > RM_MAX_DEPTH)
        return err_set(err, -ELOOP, "remove %s: directories nested deeper than %d levels", path,
                       RM_MAX_DEPTH);
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return err_set_sys(err, -errno, "stat %s", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
            return 0;
        return errno == EBUSY ? mount_left(err, path) : err_set_sys(err, -errno, "remove %s", path);
    }
    /* O_PATH needs no permission on the directory: its mount is checked before anything else */
    _cleanup_close_ int pfd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (pfd < 0)
        return errno == ENOENT ? 0 : err_set_sys(err, -errno, "open directory %s", path);
    uint64_t here = 0;
    if (mount_id_of(pfd, &here) < 0)
        return err_set(err, -ENOTSUP,
                       "remove %s: cannot tell which mount it is on (no statx mount id, no "
                       "/proc/self/fdinfo)",
                       path);
    bool root = false;
    int r = parent_mnt ? 0 : is_mount_root(pfd, &root);
    if (r < 0)
        return err_set_sys(err, r, "remove %s: tell whether it is a mount point", path);
    if (root || (parent_mnt && here != *parent_mnt))
        return mount_left(err, path);
    int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 && errno == EACCES) {
        /*
         * An unpacked image may contain 0000 directories; we own them, so open
         * up, through the O_PATH fd so the chmod cannot be redirected through a
         * symlink swapped in after the fstatat above.
         */
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
        if (chmod(proc, 0700) == 0)
            dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (dfd < 0)
        return err_set_sys(err, -errno, "open directory %s", path);
    if ((st.st_mode & 0700) != 0700)
        (void)fchmod(dfd, 0700);
    if ((r = rm_children(dfd, path, here, depth, err)) < 0)
        return r;
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return errno == EBUSY ? mount_left(err, path)
                              : err_set_sys(err, -errno, "remove directory %s", path);
    return 0;
}

int util_rm_rf_at(int dirfd, const char *name, cista_error **err)
{
    return rm_at(dirfd, name, name, NULL, 0, err);
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

static const struct {
    const char *name;
    int sig;
} g_signals[] = {
    {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"ILL", SIGILL},
    {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"BUS", SIGBUS},     {"FPE", SIGFPE},
    {"KILL", SIGKILL},     {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE},     {"ALRM", SIGALRM}, {"TERM", SIGTERM},   {"CHLD", SIGCHLD},
    {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ},
    {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"PWR", SIGPWR},       {"SYS", SIGSYS},
};

int util_signal_parse(const char *s)
{
    if (!s || !*s)
        return -EINVAL;
    if (s[0] >= '0' && s[0] <= '9') {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end || v <= 0 || v > 64)
            return -EINVAL;
        return (int)v;
    }
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < ARRAY_LEN(g_signals); i++)
        if (!strcasecmp(s, g_signals[i].name))
            return g_signals[i].sig;
    return -EINVAL;
}
