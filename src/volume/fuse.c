/*
 * fuse.c - the FUSE3 low-level front end of a volume: translates kernel
 * requests into vol_* calls, commits on fsync and periodically, and once
 * more at unmount.
 *
 * Caching: the daemon is the only writer of the volume, so the kernel may
 * cache attributes, entries and pages (keep_cache, writeback cache); every
 * change goes through this daemon, which keeps the kernel consistent.
 */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fuse_lowlevel.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "util/util.h"
#include "volume/vol_int.h"
#include "volume/volume.h"

#define CACHE_TIMEOUT 3600.0
#define MAX_IO (1u << 20)
/*
 * Readahead window: 8 requests of MAX_IO. With a 1 MiB window the kernel
 * keeps at most 2 reads in flight (the current window and the async one), so
 * the backing disk idles while a request is decrypted and copied. Measured on
 * virtio, cold 1 GiB: 1 MiB ~0.7 GB/s; 4 MiB 1.4-1.5 GB/s (4-8 in flight);
 * 8 MiB with MAX_BACKGROUND 32, 1.8-2.0 GB/s; 16 MiB no better.
 */
#define READAHEAD (8u << 20)
/*
 * Worker threads, all kept alive: libfuse otherwise ends threads beyond the
 * idle limit and starts new ones under load (about 60 per 256 MiB written),
 * each with a fresh 1 MiB receive buffer to fault in and fresh cipher
 * contexts. 8 covers the kernel's 12 outstanding background writes on two
 * cores; more only add context switches.
 */
#define WORKERS 8u
#define MAX_BACKGROUND 32u
/*
 * Deleting files holding more than this commits soon after (in the commit
 * thread): their backing objects can only be removed after a commit, and
 * removing a large one keeps the host busy for a while (ext4 with discard:
 * ~0.5 s per GiB), better now than in the middle of the next writes.
 */
#define RECLAIM_COMMIT (64u << 20)

typedef struct vfuse {
    vol_volume *v;
    unsigned interval_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool kick; /* commit now, not at the next interval */
} vfuse;

static vol_volume *V(fuse_req_t req)
{
    return ((vfuse *)fuse_req_userdata(req))->v;
}

static void reply_entry(fuse_req_t req, int r, const struct stat *st)
{
    if (r < 0) {
        if (r == -ENOENT) {
            /* negative entry, cached briefly */
            struct fuse_entry_param e;
            memset(&e, 0, sizeof(e));
            e.entry_timeout = 1.0;
            fuse_reply_entry(req, &e);
            return;
        }
        fuse_reply_err(req, -r);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = st->st_ino;
    e.generation = 1;
    e.attr = *st;
    e.attr_timeout = CACHE_TIMEOUT;
    e.entry_timeout = CACHE_TIMEOUT;
    fuse_reply_entry(req, &e);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    conn->max_write = MAX_IO;
    /* caps the bdi readahead that tune_bdi() set before this INIT reply */
    conn->max_readahead = READAHEAD;
    /*
     * Asynchronous requests (writeback, readahead) the kernel keeps in flight:
     * 12 by default, fewer than the workers can take when 1 MiB writes and
     * 4 MiB readahead windows overlap.
     */
    conn->max_background = MAX_BACKGROUND;
    conn->congestion_threshold = MAX_BACKGROUND * 3 / 4;
    if (conn->capable & FUSE_CAP_WRITEBACK_CACHE)
        conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct stat st;
    int r = vol_lookup(V(req), parent, name, &st);
    reply_entry(req, r, &st);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    (void)ino;
    (void)nlookup;
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct stat st;
    int r = vol_getattr(V(req), ino, &st);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)fi;
    unsigned s = 0;
    if (to_set & FUSE_SET_ATTR_MODE)
        s |= VOL_SET_MODE;
    if (to_set & FUSE_SET_ATTR_UID)
        s |= VOL_SET_UID;
    if (to_set & FUSE_SET_ATTR_GID)
        s |= VOL_SET_GID;
    if (to_set & FUSE_SET_ATTR_SIZE)
        s |= VOL_SET_SIZE;
    if (to_set & FUSE_SET_ATTR_ATIME)
        s |= VOL_SET_ATIME;
    if (to_set & FUSE_SET_ATTR_MTIME)
        s |= VOL_SET_MTIME;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        s |= VOL_SET_ATIME_NOW;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        s |= VOL_SET_MTIME_NOW;
    if (to_set & FUSE_SET_ATTR_CTIME)
        s |= VOL_SET_CTIME;
    struct stat st;
    int r = vol_setattr(V(req), ino, attr, s, &st);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_attr(req, &st, CACHE_TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    char buf[4097];
    int r = vol_readlink(V(req), ino, buf, sizeof(buf));
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_readlink(req, buf);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct stat st;
    int r = vol_mknod(V(req), parent, name, mode, rdev, c->uid, c->gid, &st);
    reply_entry(req, r == -ENOENT ? -EIO : r, &st);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct stat st;
    int r = vol_mkdir(V(req), parent, name, mode & ~c->umask, c->uid, c->gid, &st);
    reply_entry(req, r == -ENOENT ? -EIO : r, &st);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct stat st;
    int r = vol_symlink(V(req), parent, name, link, c->uid, c->gid, &st);
    reply_entry(req, r == -ENOENT ? -EIO : r, &st);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    struct stat st;
    int r = vol_link(V(req), ino, newparent, newname, &st);
    reply_entry(req, r == -ENOENT ? -EIO : r, &st);
}

/* After an operation that may free files: wake the commit thread when much space waits. */
static void maybe_reclaim(fuse_req_t req)
{
    vfuse *f = fuse_req_userdata(req);
    if (vol_reclaimable(f->v) < RECLAIM_COMMIT)
        return;
    pthread_mutex_lock(&f->mu);
    f->kick = true;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    int r = vol_unlink(V(req), parent, name);
    if (r == 0)
        maybe_reclaim(req);
    fuse_reply_err(req, -r);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    fuse_reply_err(req, -vol_rmdir(V(req), parent, name));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    int r = vol_rename(V(req), parent, name, newparent, newname, flags);
    if (r == 0)
        maybe_reclaim(req);
    fuse_reply_err(req, -r);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    int r = vol_open_file(V(req), ino, (fi->flags & O_TRUNC) != 0);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) == -ENOENT)
        vol_release(V(req), ino);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    const struct fuse_ctx *c = fuse_req_ctx(req);
    struct stat st;
    vol_volume *v = V(req);
    int r = vol_mknod(v, parent, name, (mode & ~c->umask) | S_IFREG, 0, c->uid, c->gid, &st);
    if (r == 0)
        r = vol_open_file(v, st.st_ino, false);
    if (r < 0) {
        fuse_reply_err(req, r == -ENOENT ? EIO : -r);
        return;
    }
    fi->keep_cache = 1;
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = st.st_ino;
    e.generation = 1;
    e.attr = st;
    e.attr_timeout = CACHE_TIMEOUT;
    e.entry_timeout = CACHE_TIMEOUT;
    if (fuse_reply_create(req, &e, fi) == -ENOENT)
        vol_release(v, st.st_ino);
}

/*
 * Each worker thread reads into its own aligned buffer (vol__thread_read_buffer):
 * the store reads large aligned ranges with direct I/O straight into it, and a
 * fresh 1 MiB malloc per request would be an mmap/munmap with page faults.
 * The plaintext it holds is what the kernel keeps in the mount's page cache
 * anyway; it is cleansed when the thread exits, not after every reply (that
 * cost 3 % of the daemon's CPU on sequential reads).
 */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    if (size > MAX_IO)
        size = MAX_IO;
    _Static_assert(MAX_IO <= (1u << 20), "read buffer size");
    uint8_t *buf = vol__thread_read_buffer();
    ssize_t n = vol_read(V(req), ino, (uint64_t)off, buf, size);
    if (n < 0)
        fuse_reply_err(req, (int)-n);
    else
        fuse_reply_buf(req, (const char *)buf, (size_t)n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    bool append = (fi->flags & O_APPEND) != 0 && !fi->writepage;
    ssize_t n = vol_write(V(req), ino, (uint64_t)off, buf, size, append);
    if (n < 0)
        fuse_reply_err(req, (int)-n);
    else
        fuse_reply_write(req, (size_t)n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    vol_release(V(req), ino);
    maybe_reclaim(req); /* the last close of a file unlinked while open frees it */
    fuse_reply_err(req, 0);
}

/* fsync: commit, answer, and only then remove the objects of deleted files */
static void do_commit(fuse_req_t req)
{
    vol_volume *v = V(req);
    cista_error *e = NULL;
    int r = vol_commit_ex(v, VOL_COMMIT_DEFER_REAP, &e);
    if (r < 0) {
        _cleanup_free_ char *s = err_str(e);
        log_error("volume: %s", s);
        err_free(e);
        fuse_reply_err(req, EIO);
    } else {
        fuse_reply_err(req, 0);
    }
    vol_reap(v);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    do_commit(req);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct stat st;
    int r = vol_getattr(V(req), ino, &st);
    if (r < 0) {
        fuse_reply_err(req, -r);
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    fi->cache_readdir = 1;
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
}

typedef struct dirbuf {
    fuse_req_t req;
    char *buf;
    size_t size, used;
} dirbuf;

static int dir_add_cb(void *arg, const char *name, uint64_t ino, mode_t type, uint64_t cookie)
{
    dirbuf *b = arg;
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = type;
    size_t need = fuse_add_direntry(b->req, NULL, 0, name, NULL, 0);
    if (b->used + need > b->size)
        return 1;
    fuse_add_direntry(b->req, b->buf + b->used, b->size - b->used, name, &st, (off_t)cookie);
    b->used += need;
    return 0;
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)fi;
    dirbuf b = {.req = req, .buf = malloc(size ? size : 1), .size = size};
    if (!b.buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    int r = vol_readdir(V(req), ino, (uint64_t)off, dir_add_cb, &b);
    if (r < 0)
        fuse_reply_err(req, -r);
    else
        fuse_reply_buf(req, b.buf, b.used);
    free(b.buf);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    do_commit(req);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    vol_statfs s;
    vol_get_statfs(V(req), &s);
    struct statvfs sv;
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = VOL_BLOCK_SIZE;
    sv.f_frsize = VOL_BLOCK_SIZE;
    sv.f_blocks = UINT64_C(1) << 28;
    sv.f_bfree = sv.f_bavail = (UINT64_C(1) << 28) - 1;
    sv.f_files = UINT64_C(1) << 32;
    sv.f_ffree = sv.f_favail = (UINT64_C(1) << 32) - s.files;
    sv.f_namemax = VOL_NAME_MAX;
    fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops g_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    /* no .flush: the kernel then stops sending FLUSH on every close (writeback
     * of dirty pages on close happens in the kernel either way) */
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .create = op_create,
};

/* Write @value to /sys/class/bdi/DEV/@attr; false when it cannot be set. */
static bool bdi_set(const char *dev, const char *attr, unsigned long long value)
{
    char path[96], v[24];
    snprintf(path, sizeof(path), "/sys/class/bdi/%s/%s", dev, attr);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    int n = snprintf(v, sizeof(v), "%llu", value);
    bool ok = write(fd, v, (size_t)n) == n;
    close(fd);
    if (!ok)
        log_debug("volume: could not set %s to %s", path, v);
    return ok;
}

/*
 * Per-mount tuning of the kernel's side of the FUSE connection, before the
 * session loop answers INIT. Best effort (needs root).
 *
 * Readahead: the kernel caps FUSE readahead at the bdi's read_ahead_kb
 * (128 KiB by default) and, when it processes the INIT reply, at
 * max_readahead; raising the former to READAHEAD makes sequential reads
 * arrive as several large requests at once.
 *
 * Dirty pages: a FUSE bdi has a strict limit of 1 % of the dirty threshold
 * (~20 MB here), so that a stuck user-space server cannot hold much of the
 * machine's memory dirty. This daemon is part of the TEE's trusted base, and
 * with 20 MB a writer is throttled long before the daemon's workers are all
 * busy: the workers idled half the time and a 1 GiB write ran at ~800 MB/s;
 * with DIRTY_MAX it runs at ~1 GB/s (64 MiB gave most of it). The global
 * dirty limits still apply on top.
 */
#define DIRTY_MAX (128ull << 20)

static void tune_bdi(const char *mnt)
{
    /* the device number comes from mountinfo: stat() of our own mount would
     * wait for this daemon, which is not serving requests yet */
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return;
    char line[4096], dev[32] = "";
    while (fgets(line, sizeof(line), f)) {
        char d[32], mp[2048];
        if (sscanf(line, "%*s %*s %31s %*s %2047s", d, mp) == 2 && strcmp(mp, mnt) == 0)
            snprintf(dev, sizeof(dev), "%s", d);
    }
    fclose(f);
    if (!dev[0])
        return;
    (void)bdi_set(dev, "read_ahead_kb", READAHEAD >> 10);
    /* max_bytes is Linux 6.2+; before, a ratio of the dirty threshold */
    if (!bdi_set(dev, "max_bytes", DIRTY_MAX))
        (void)bdi_set(dev, "max_ratio", 5);
}

static void *commit_thread(void *arg)
{
    vfuse *f = arg;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += f->interval_ms / 1000;
        ts.tv_nsec += (long)(f->interval_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (!f->kick)
            pthread_cond_timedwait(&f->cv, &f->mu, &ts);
        if (f->stop)
            break;
        f->kick = false;
        pthread_mutex_unlock(&f->mu);
        if (vol_is_dirty(f->v)) {
            cista_error *e = NULL;
            if (vol_commit(f->v, &e) < 0) {
                _cleanup_free_ char *s = err_str(e);
                log_error("volume: periodic commit: %s", s);
            }
            err_free(e);
        }
        pthread_mutex_lock(&f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int vol_fuse_serve(vol_volume *v, const vol_fuse_opts *opts, cista_error **err)
{
    vfuse f = {.v = v, .interval_ms = opts->commit_interval_ms ? opts->commit_interval_ms : 5000};
    pthread_mutex_init(&f.mu, NULL);
    pthread_cond_init(&f.cv, NULL);
    int r = 0;

    /* one fd per open file and per file written since the last commit */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }

    _cleanup_free_ char *o =
        xasprintf("fsname=%s,subtype=cista,default_permissions%s",
                  opts->fsname ? opts->fsname : "cista", geteuid() == 0 ? ",allow_other" : "");
    char *argv[] = {(char *)"cista", (char *)"-o", o, opts->debug ? (char *)"-d" : NULL, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(opts->debug ? 4 : 3, argv);
    struct fuse_session *se = fuse_session_new(&args, &g_ops, sizeof(g_ops), &f);
    if (!se) {
        r = err_set(err, -EIO, "FUSE session setup failed");
        goto out_vol;
    }
    if (fuse_set_signal_handlers(se) != 0) {
        r = err_set(err, -EIO, "FUSE signal handlers");
        goto out_se;
    }
    if (fuse_session_mount(se, opts->mountpoint) != 0) {
        r = err_set(err, -EIO,
                    "mount FUSE on %s failed (is /dev/fuse available and the "
                    "mountpoint an existing directory?)",
                    opts->mountpoint);
        goto out_sig;
    }
    if (!opts->foreground && fuse_daemonize(0) != 0) {
        r = err_set(err, -EIO, "daemonize failed");
        goto out_mount;
    }
    tune_bdi(opts->mountpoint);
    if (opts->ready_fd >= 0) {
        (void)!write(opts->ready_fd, "ok\n", 3);
        close(opts->ready_fd);
    }
    pthread_t th;
    bool have_thread = pthread_create(&th, NULL, commit_thread, &f) == 0;
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    fuse_loop_cfg_set_max_threads(cfg, WORKERS);
    fuse_loop_cfg_set_idle_threads(cfg, WORKERS);
    int lr = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    if (have_thread) {
        pthread_mutex_lock(&f.mu);
        f.stop = true;
        pthread_cond_signal(&f.cv);
        pthread_mutex_unlock(&f.mu);
        pthread_join(th, NULL);
    }
    if (lr < 0)
        log_warn("volume: FUSE loop ended with %d", lr);
out_mount:
    fuse_session_unmount(se);
out_sig:
    fuse_remove_signal_handlers(se);
out_se:
    fuse_session_destroy(se);
out_vol:
    fuse_opt_free_args(&args);
    {
        cista_error *e = NULL;
        int cr = vol_close(v, r < 0 ? &e : err);
        if (r < 0)
            err_free(e);
        else
            r = cr;
    }
    pthread_cond_destroy(&f.cv);
    pthread_mutex_destroy(&f.mu);
    return r;
}
