/*
 * store.c - the directory-backed vol_store (objects are files in one host
 * directory, reached only through the directory fd with O_NOFOLLOW) and
 * volume key files.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "util/codec.h"
#include "util/util.h"
#include "volume/vol_int.h"

typedef struct dir_store {
    int dirfd;
} dir_store;

typedef struct dir_handle {
    int fd;
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
    *out = h;
    return 0;
}

static void ds_close(void *ctx, void *hp)
{
    (void)ctx;
    dir_handle *h = hp;
    if (h) {
        close(h->fd);
        free(h);
    }
}

static ssize_t ds_read(void *ctx, void *hp, uint64_t off, void *buf, size_t size)
{
    (void)ctx;
    dir_handle *h = hp;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pread(h->fd, (uint8_t *)buf + done, size - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static int ds_write(void *ctx, void *hp, uint64_t off, const void *buf, size_t size)
{
    (void)ctx;
    dir_handle *h = hp;
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(h->fd, (const uint8_t *)buf + done, size - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        done += (size_t)n;
    }
    /* start writeback of large writes now, so a later fsync has little left */
    if (size >= (256u << 10))
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
    return ftruncate(h->fd, (off_t)size) < 0 ? -errno : 0;
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
    dir_store *s = xmalloc(sizeof(*s));
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
