/*
 * store.c - the directory-backed vol_store (objects are files in one host
 * directory, reached only through the directory fd with O_NOFOLLOW) and
 * volume key files.
 *
 * Large page-aligned transfers use direct I/O (O_DIRECT) when the host file
 * system supports it: buffered writeback of the backing files is what bounds
 * a buffered design (measured: ext4 on virtio writes back ~0.45 GB/s, direct
 * writes ~1.7 GB/s), reading through the host page cache costs a copy per
 * byte, and the ciphertext would otherwise sit in memory twice (plaintext in
 * the FUSE page cache, ciphertext in the backing one). Durability is
 * unchanged: nothing is durable before sync(), which still fdatasyncs (that
 * also commits the extent conversions of direct writes and flushes the disk
 * cache). Where O_DIRECT is refused (tmpfs before 6.6, some FUSE and network
 * file systems) or rejects an aligned transfer, the store silently falls back
 * to buffered I/O.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "util/codec.h"
#include "util/util.h"
#include "volume/vol_int.h"

/*
 * Transfers of at least this size whose buffer, offset and size are
 * multiples of DS_DIRECT_ALIGN go direct. Smaller ones stay buffered: a
 * direct write waits for the device, while buffered small writes (random
 * 4 KiB I/O, tree nodes, directories) are coalesced by the host's writeback.
 * 4096 satisfies every logical block size up to 4 KiB; an unusual device
 * with larger sectors refuses (EINVAL) and the store falls back.
 */
#define DS_DIRECT_MIN (64u << 10)
#define DS_DIRECT_ALIGN 4096u

/*
 * Preallocation ahead of direct writes that grow an object. A direct write
 * into unallocated space takes ext4's inode lock exclusively for the whole
 * I/O, so the daemon's writers queue behind each other (profile: writer
 * threads spent 14 s per GiB, summed, waiting for it); into preallocated
 * (unwritten) extents it takes the lock shared and several run at once.
 * A write that continues the previous one (within DS_STREAM_SLACK: parallel
 * writers finish out of order) allocates a window ahead of the stream: a
 * quarter of the stream's length, between 1 and 64 MiB. Scattered writes
 * allocate nothing ahead, gaps between writes are never filled, and the
 * space allocated but not written stays below that window past the end of
 * a stream (it goes with the object).
 */
#define DS_PREALLOC_MIN (1u << 20)
#define DS_PREALLOC_MAX (64u << 20)
#define DS_STREAM_SLACK (16u << 20)

typedef struct dir_store {
    int dirfd;
    bool no_direct;   /* O_DIRECT refused by the file system (atomic) */
    bool no_prealloc; /* fallocate not supported (atomic) */
} dir_store;

/* dir_handle.dfd before the first direct transfer, and when it is unusable */
#define DFD_UNOPENED (-2)
#define DFD_NONE (-1)

typedef struct dir_handle {
    int fd;
    int dfd;      /* O_DIRECT descriptor to use, opened lazily (atomic) */
    int dfd_open; /* the O_DIRECT descriptor owned (closed with the handle), or -1 */
    pthread_mutex_t mu;
    /* the stream of direct writes: [st_start, st_end) written, [st_start, pa_end) allocated */
    uint64_t st_start, st_end, pa_end;
    char *name;
} dir_handle;

static int ds_open(void *ctx, const char *name, bool create, void **out)
{
    dir_store *s = ctx;
    int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT : 0);
    int fd = openat(s->dirfd, name, flags, 0600);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EUCLEAN;
    }
    dir_handle *h = xmalloc(sizeof(*h));
    h->fd = fd;
    h->dfd = DFD_UNOPENED;
    h->dfd_open = -1;
    h->st_start = h->st_end = h->pa_end = 0;
    pthread_mutex_init(&h->mu, NULL);
    h->name = xstrdup(name);
    *out = h;
    return 0;
}

static void ds_close(void *ctx, void *hp)
{
    (void)ctx;
    dir_handle *h = hp;
    if (h) {
        close(h->fd);
        if (h->dfd_open >= 0)
            close(h->dfd_open);
        pthread_mutex_destroy(&h->mu);
        free(h->name);
        free(h);
    }
}

/*
 * The O_DIRECT descriptor of @h for a transfer of @size bytes at @off from or
 * to @buf, or -1 when this transfer goes buffered. The second descriptor is
 * opened by name on first use (Linux cannot add O_DIRECT to a new open file
 * description of an fd without /proc) and used only when it is the same file
 * as the buffered one, so both always reach one object.
 */
static int direct_fd(dir_store *s, dir_handle *h, uint64_t off, const void *buf, size_t size)
{
    if (size < DS_DIRECT_MIN || off % DS_DIRECT_ALIGN || size % DS_DIRECT_ALIGN ||
        (uintptr_t)buf % DS_DIRECT_ALIGN)
        return -1;
    int fd = __atomic_load_n(&h->dfd, __ATOMIC_ACQUIRE);
    if (fd != DFD_UNOPENED)
        return fd;
    pthread_mutex_lock(&h->mu);
    fd = h->dfd;
    if (fd == DFD_UNOPENED) {
        fd = DFD_NONE;
        if (!__atomic_load_n(&s->no_direct, __ATOMIC_RELAXED)) {
            int d = openat(s->dirfd, h->name, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_DIRECT);
            struct stat a, b;
            if (d < 0 && errno == EINVAL)
                __atomic_store_n(&s->no_direct, true, __ATOMIC_RELAXED);
            if (d >= 0 && fstat(d, &a) == 0 && fstat(h->fd, &b) == 0 && a.st_dev == b.st_dev &&
                a.st_ino == b.st_ino)
                fd = h->dfd_open = d;
            else if (d >= 0)
                close(d);
        }
        __atomic_store_n(&h->dfd, fd, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&h->mu);
    return fd;
}

/* A direct transfer was refused although aligned: this object goes buffered from now on. */
static void direct_refused(dir_store *s, dir_handle *h)
{
    __atomic_store_n(&s->no_direct, true, __ATOMIC_RELAXED);
    /* another thread may be in a transfer on the descriptor: it stays open until close */
    pthread_mutex_lock(&h->mu);
    __atomic_store_n(&h->dfd, DFD_NONE, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&h->mu);
}

static ssize_t ds_read(void *ctx, void *hp, uint64_t off, void *buf, size_t size)
{
    dir_handle *h = hp;
    int dfd = direct_fd(ctx, h, off, buf, size);
    size_t done = 0;
    while (done < size) {
        int fd = dfd >= 0 ? dfd : h->fd;
        ssize_t n = pread(fd, (uint8_t *)buf + done, size - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EINVAL && fd == dfd) {
                /* aligned at the start: the device refuses; otherwise a short read
                 * (the host cut the file) left the rest unaligned */
                if (done == 0)
                    direct_refused(ctx, h);
                dfd = -1;
                continue;
            }
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

/* Before a direct write of [off, off + size): preallocate ahead of a stream (above). */
static void prealloc_ahead(dir_store *s, dir_handle *h, uint64_t off, size_t size)
{
    if (__atomic_load_n(&s->no_prealloc, __ATOMIC_RELAXED))
        return;
    uint64_t end = off + size;
    pthread_mutex_lock(&h->mu);
    if (off >= h->st_start && end <= h->pa_end) {
        if (end > h->st_end)
            h->st_end = end;
        pthread_mutex_unlock(&h->mu);
        return;
    }
    bool in_stream =
        h->st_end > 0 && end + DS_STREAM_SLACK >= h->st_start && off <= h->st_end + DS_STREAM_SLACK;
    if (!in_stream) {
        /* a new stream: this write allocates its own blocks */
        h->st_start = off;
        h->st_end = h->pa_end = end;
        pthread_mutex_unlock(&h->mu);
        return;
    }
    uint64_t from = off >= h->st_start && h->pa_end > off ? h->pa_end : off;
    if (off < h->st_start)
        h->st_start = off;
    if (end > h->st_end)
        h->st_end = end;
    uint64_t ahead = (h->st_end - h->st_start) / 4;
    ahead = ahead < DS_PREALLOC_MIN   ? DS_PREALLOC_MIN
            : ahead > DS_PREALLOC_MAX ? DS_PREALLOC_MAX
                                      : ahead;
    uint64_t to = (h->st_end > h->pa_end ? h->st_end : h->pa_end) + ahead;
    to = (to + DS_PREALLOC_MIN - 1) / DS_PREALLOC_MIN * DS_PREALLOC_MIN;
    /* mode 0: i_size moves too, so the writes do not extend the file either */
    if (fallocate(h->fd, 0, (off_t)from, (off_t)(to - from)) == 0) {
        if (to > h->pa_end)
            h->pa_end = to;
    } else if (errno == EOPNOTSUPP || errno == ENOSYS) {
        __atomic_store_n(&s->no_prealloc, true, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&h->mu);
}

static int ds_write(void *ctx, void *hp, uint64_t off, const void *buf, size_t size)
{
    dir_handle *h = hp;
    int dfd = direct_fd(ctx, h, off, buf, size);
    if (dfd >= 0)
        prealloc_ahead(ctx, h, off, size);
    size_t done = 0;
    while (done < size) {
        int fd = dfd >= 0 ? dfd : h->fd;
        ssize_t n = pwrite(fd, (const uint8_t *)buf + done, size - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EINVAL && fd == dfd) {
                if (done == 0)
                    direct_refused(ctx, h);
                dfd = -1;
                continue;
            }
            return -errno;
        }
        done += (size_t)n;
    }
    /* start writeback of large buffered writes now, so a later fsync has little left */
    if (dfd < 0 && size >= (256u << 10))
        (void)sync_file_range(h->fd, (off_t)off, (off_t)size, SYNC_FILE_RANGE_WRITE);
    return 0;
}

static int ds_sync(void *ctx, void *hp)
{
    (void)ctx;
    dir_handle *h = hp;
    return fdatasync(h->fd) < 0 ? -errno : 0;
}

static int ds_truncate(void *ctx, void *hp, uint64_t size)
{
    (void)ctx;
    dir_handle *h = hp;
    pthread_mutex_lock(&h->mu);
    /* the preallocated stream may be gone with the cut: start over */
    h->st_start = h->st_end = h->pa_end = 0;
    int r = ftruncate(h->fd, (off_t)size) < 0 ? -errno : 0;
    pthread_mutex_unlock(&h->mu);
    return r;
}

static int ds_remove(void *ctx, const char *name)
{
    dir_store *s = ctx;
    return unlinkat(s->dirfd, name, 0) < 0 ? -errno : 0;
}

static int ds_sync_dir(void *ctx)
{
    dir_store *s = ctx;
    return fsync(s->dirfd) < 0 ? -errno : 0;
}

static int ds_list(void *ctx, int (*cb)(void *arg, const char *name), void *arg)
{
    dir_store *s = ctx;
    int fd = openat(s->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = -errno;
        close(fd);
        return e;
    }
    int r = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if ((r = cb(arg, de->d_name)) != 0)
            break;
    }
    closedir(d);
    return r;
}

static void ds_free(void *ctx)
{
    dir_store *s = ctx;
    if (s) {
        close(s->dirfd);
        free(s);
    }
}

static const vol_store_ops g_dir_ops = {
    .open = ds_open,
    .close = ds_close,
    .read = ds_read,
    .write = ds_write,
    .sync = ds_sync,
    .truncate = ds_truncate,
    .remove = ds_remove,
    .sync_dir = ds_sync_dir,
    .list = ds_list,
    .free = ds_free,
};

int vol_store_dir_new(vol_store **out, const char *dir, bool create, cista_error **err)
{
    if (create && mkdir(dir, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "create backing directory %s", dir);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "open backing directory %s", dir);
    dir_store *s = xzalloc(sizeof(*s));
    s->dirfd = fd;
    vol_store *st = xmalloc(sizeof(*st));
    st->ops = &g_dir_ops;
    st->ctx = s;
    *out = st;
    return 0;
}

void vol_store_free(vol_store *s)
{
    if (!s)
        return;
    if (s->ops->free)
        s->ops->free(s->ctx);
    free(s);
}

void vol__store_freep(vol_store **s)
{
    vol_store_free(*s);
    *s = NULL;
}

/* ---- keys ---- */

int vol_key_load(uint8_t out[VOL_KEY_SIZE], const char *path, cista_error **err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "volume key %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return err_set_sys(err, -errno, "volume key %s", path);
    if (!S_ISREG(st.st_mode))
        return err_set(err, -EINVAL, "volume key %s is not a regular file", path);
    if (st.st_mode & 077)
        return err_set(err, -EPERM,
                       "volume key %s is readable by group or others (mode 0%o); chmod 600 it",
                       path, (unsigned)(st.st_mode & 0777));
    uint8_t buf[130];
    ssize_t n = util_read_all(fd, buf, sizeof(buf));
    if (n < 0)
        return err_set_sys(err, (int)n, "read volume key %s", path);
    size_t len = (size_t)n;
    int r = 0;
    if (len == VOL_KEY_SIZE) {
        memcpy(out, buf, VOL_KEY_SIZE);
    } else {
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            len--;
        if (len != 2 * VOL_KEY_SIZE) {
            r = err_set(err, -EINVAL,
                        "volume key %s: expected 32 raw bytes or 64 hex digits, got %zd bytes",
                        path, n);
        } else {
            char hex[2 * VOL_KEY_SIZE + 1];
            memcpy(hex, buf, 2 * VOL_KEY_SIZE);
            hex[2 * VOL_KEY_SIZE] = '\0';
            r = hex_decode_to(out, VOL_KEY_SIZE, hex, err);
            OPENSSL_cleanse(hex, sizeof(hex));
            if (r < 0)
                r = err_wrap(err, "volume key %s", path);
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    return r;
}

int vol_key_generate(uint8_t out[VOL_KEY_SIZE], const char *path, cista_error **err)
{
    int r = crypto_random(out, VOL_KEY_SIZE, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return err_set_sys(err, -errno, "create volume key %s", path);
    static const char hx[] = "0123456789abcdef";
    char hex[2 * VOL_KEY_SIZE + 1];
    for (size_t i = 0; i < VOL_KEY_SIZE; i++) {
        hex[2 * i] = hx[out[i] >> 4];
        hex[2 * i + 1] = hx[out[i] & 15];
    }
    hex[2 * VOL_KEY_SIZE] = '\n';
    r = util_write_all(fd, hex, sizeof(hex));
    OPENSSL_cleanse(hex, sizeof(hex));
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (r < 0) {
        unlinkat(AT_FDCWD, path, 0);
        return err_set_sys(err, r, "write volume key %s", path);
    }
    return 0;
}
