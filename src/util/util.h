/*
 * util.h - the small things every cista module uses: allocation that aborts
 * on failure, cleanup attributes for ownership, and whole-file helpers.
 *
 * Thread-safe (no shared state). Trusts nothing it reads: file helpers take
 * an explicit maximum size so a hostile file cannot exhaust memory.
 */
#ifndef CISTA_UTIL_H
#define CISTA_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define CISTA_WUR __attribute__((warn_unused_result))
#define CISTA_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Allocation failure is not an error cista can recover from (crun, Redis). */
void *xmalloc(size_t size);
void *xzalloc(size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) CISTA_PRINTF(1, 2);

void util__freep(void *p);
void util__closep(int *fd);
void util__fclosep(void *fp);

#define _cleanup_free_ __attribute__((cleanup(util__freep)))
#define _cleanup_close_ __attribute__((cleanup(util__closep)))
#define _cleanup_fclose_ __attribute__((cleanup(util__fclosep)))

/* Move ownership out of a cleanup-managed variable. */
static inline void *util__steal_ptr(void *pp)
{
    void **p = pp;
    void *v = *p;
    *p = NULL;
    return v;
}
#define steal_ptr(pp) util__steal_ptr(pp)
static inline int steal_fd(int *fd)
{
    int v = *fd;
    *fd = -1;
    return v;
}

/*
 * Read a whole file (or the file at @path relative to @dirfd) into a fresh
 * NUL-terminated buffer owned by the caller. Fails with -EFBIG when the file
 * is larger than @max bytes.
 */
int util_read_file(char **out, size_t *out_size, const char *path, size_t max,
                   cista_error **err) CISTA_WUR;
int util_read_fileat(char **out, size_t *out_size, int dirfd, const char *path, size_t max,
                     cista_error **err) CISTA_WUR;
/*
 * The same for a file a less trusted party names (a bundle's config.json, a
 * process file): only a regular file, opened without blocking, so a FIFO or a
 * device there is an error (-EINVAL) instead of a hang or a read of a device.
 */
int util_read_regular_file(char **out, size_t *out_size, const char *path, size_t max,
                           cista_error **err) CISTA_WUR;

/*
 * Write @size bytes atomically: a temporary file in the same directory,
 * fsync, rename over @path, fsync of the directory. @mode applies to the new
 * file. Nothing is left behind on failure.
 */
int util_write_file_atomic(int dirfd, const char *path, const void *data, size_t size, mode_t mode,
                           cista_error **err) CISTA_WUR;

/* Full-length read/write that retry on EINTR and short transfers. */
ssize_t util_read_all(int fd, void *buf, size_t size);
int util_write_all(int fd, const void *buf, size_t size);
/* A signal "9", "KILL", "SIGKILL", "sigkill" (1..64); -EINVAL when unknown. */
int util_signal_parse(const char *s);

/*
 * Remove a directory tree below @dirfd without following symlinks and without
 * entering another mount: a file system mounted anywhere in the tree (@name
 * itself included) is left in place with everything in it, the rest is
 * removed, and the result is -EBUSY naming the first such mount.
 */
int util_rm_rf_at(int dirfd, const char *name, cista_error **err) CISTA_WUR;

/* True when @s ends with @suffix. */
bool util_has_suffix(const char *s, const char *suffix);

/*
 * The CPUs this process may actually use, for sizing thread pools: the CPUs of its affinity
 * mask (taskset, cpusets), lowered to a cgroup CPU quota rounded up (cgroup v2 cpu.max, v1
 * cpu.cfs_quota_us: a Kubernetes CPU limit). At least 1.
 */
unsigned util_cpu_count(void);

#endif
