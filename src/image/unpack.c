/*
 * unpack.c - verified, staged unpacking of an image into a root filesystem.
 *
 * Order of work, chosen so that nothing reaches ROOTFS unless everything
 * checks out:
 *   1. before touching the disk: every layer's media type is understood,
 *      every encrypted layer's pubopts parse and a given key unwraps its
 *      private options (a wrong key fails here, in milliseconds);
 *   2. each layer streams through file -> size/digest -> CTR+HMAC ->
 *      plaintext digest -> decompress -> diff_id -> tar_apply into a private
 *      staging directory next to ROOTFS;
 *   3. HMAC, digests and diff_id are only final at the end of each stream,
 *      so ROOTFS appears by rename() after the last check of the last layer;
 *      any failure removes the staging directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "image/img_int.h"
#include "image/tar_apply.h"
#include "util/codec.h"
#include "util/util.h"

typedef struct {
    img_rd *rd;
    img_progress_relay *progress;
} puller;

static ssize_t pull(void *ctx, const void **buf, cista_error **err)
{
    puller *p = ctx;
    uint8_t *b = NULL;
    ssize_t n = img__rd_read(p->rd, &b, err);
    if (n > 0)
        *buf = b;
    img__progress_relay_flush(p->progress);
    return n;
}

static bool names_layer(const cista_error *e, const char *name)
{
    size_t n = strlen(name);
    if (!e)
        return false;
    if (e->msg && !strncmp(e->msg, name, n))
        return true;
    for (size_t i = 0; i < e->context_len; i++)
        if (!strncmp(e->context[i], name, n))
            return true;
    return false;
}

/*
 * One layer's reader chain:
 *   file -> size/digest -> CTR+HMAC -> plaintext digest | inflate | diff_id -> tar_apply
 * on three threads ("|" is a pipe stage). Inflate is the slowest stage; the
 * other two share the second core. The chain of layer i+1 is opened while
 * layer i is applied, so its first chunks are ready when layer i ends (at
 * most two pipe rings ahead: memory stays bounded).
 */
typedef struct {
    char *name;
    int fd;
    img_progress_relay relay; /* the chain points here: the struct must not move */
    img_rd *chain;
    img_rd *verified; /* the last integrity stage, inside chain */
    int open_r;       /* < 0: opening failed, reported when the layer's turn comes */
    cista_error *open_err;
} layer_stream;

/* @po is NULL for a plaintext layer. */
static void layer_open(layer_stream *ls, const img_image *img, size_t i, const img_privopts *po,
                       uint8_t hmac[32], const img_progress *progress)
{
    const img_layer *l = &img->manifest.layers[i];
    memset(ls, 0, sizeof(*ls));
    ls->fd = -1;
    ls->name = img__layer_name(img, i);
    ls->open_r = img__blob_open(&ls->fd, img, l->digest, l->size, ls->name, &ls->open_err);
    if (ls->open_r < 0)
        return;
    img_progress prog = img__progress_relay_init(&ls->relay, progress);
    img_rd *rd = img__rd_fd(ls->fd, l->size, &prog);
    rd = img__rd_digest(rd, IMG_CHECK_BLOB, l->digest, NULL);
    if (po) {
        rd = img__rd_ctr(rd, false, po->symkey, po->nonce, hmac);
        rd = img__rd_digest(rd, IMG_CHECK_PLAIN, po->digest, NULL);
    }
    /* The integrity stages end here; what follows interprets the bytes. */
    ls->verified = rd;
    rd = img__rd_pipe(rd);
    if (l->compression != IMG_COMP_NONE) {
        rd = img__rd_decompress(rd, l->compression);
        rd = img__rd_pipe(rd);
    }
    ls->chain = img__rd_digest(rd, IMG_CHECK_DIFFID, l->diff_id, NULL);
}

/* Joins the chain's threads before closing the file they read. */
static void layer_close(layer_stream *ls)
{
    img__rd_free(ls->chain);
    ls->chain = NULL;
    if (ls->fd >= 0)
        close(ls->fd);
    ls->fd = -1;
    err_free(ls->open_err);
    ls->open_err = NULL;
    free(ls->name);
    ls->name = NULL;
}

/* Stream the layer into @rootfd. */
static int layer_apply(layer_stream *ls, int rootfd, const img_unpack_opts *opts, cista_error **err)
{
    if (ls->open_r < 0) {
        if (err && !*err)
            *err = steal_ptr(&ls->open_err);
        return ls->open_r;
    }
    const char *name = ls->name;
    img_rd *chain = ls->chain, *verified = ls->verified;
    tar_apply_opts to = {
        .allow_devices = opts->allow_devices,
        .preserve_owner = geteuid() == 0 && !opts->no_preserve_owner,
        .layer_name = name,
        .redact_names = opts->redact_names,
    };
    cista_error *e = NULL;
    puller pl = {chain, &ls->relay};
    int r = tar_apply(rootfd, pull, &pl, &to, NULL, &e);
    /* tar_apply may stop at the end-of-archive blocks; the digests need every byte. */
    if (r == 0)
        r = img__rd_drain(chain, &e);
    if (r < 0) {
        /*
         * Join the workers: the chain is ours again. One that ran ahead may have
         * met an integrity failure the consumer never saw; that is the cause.
         */
        cista_error *ahead = NULL;
        if (img__rd_stop(chain, verified, &ahead) < 0 && verified->failed && ahead) {
            err_free(e);
            e = ahead;
            r = e->code;
            ahead = NULL;
        }
        err_free(ahead);
    }
    if (r < 0 && !verified->failed) {
        /*
         * A modified blob usually shows up first as a gzip or tar error. Finish the
         * integrity stages: if they fail, that is the cause to report.
         */
        cista_error *e2 = NULL;
        if (img__rd_drain(verified, &e2) < 0) {
            err_free(e);
            e = e2;
            r = e2 ? e2->code : -EBADMSG;
        } else {
            err_free(e2);
        }
    }
    if (r < 0) {
        bool named = names_layer(e, name);
        if (err && !*err)
            *err = e;
        else
            err_free(e);
        /* tar_apply's own messages already start with the layer name. */
        return named ? r : err_wrap(err, "%s", name);
    }
    return 0;
}

/* Split "a/b/c/" into parent "a/b" and name "c". */
static int split_path(char **parent, char **base, const char *path, cista_error **err)
{
    _cleanup_free_ char *p = xstrdup(path);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/')
        p[--n] = '\0';
    char *slash = strrchr(p, '/');
    const char *b = slash ? slash + 1 : p;
    if (!*b || !strcmp(b, ".") || !strcmp(b, ".."))
        return err_set(err, -EINVAL, "rootfs path \"%s\" must name a new directory", path);
    *base = xstrdup(b);
    if (!slash)
        *parent = xstrdup(".");
    else if (slash == p)
        *parent = xstrdup("/");
    else
        *parent = xstrndup(p, (size_t)(slash - p));
    return 0;
}

/* ROOTFS must not exist, or be an empty directory (rename() replaces those atomically). */
static int check_target(int parentfd, const char *base, const char *path, cista_error **err)
{
    struct stat st;
    if (fstatat(parentfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0;
        return err_set_sys(err, -errno, "stat %s", path);
    }
    if (!S_ISDIR(st.st_mode))
        return err_set(err, -EEXIST, "%s already exists and is not a directory; choose a new path",
                       path);
    bool empty;
    int r = img__dir_is_empty(&empty, parentfd, base, err);
    if (r < 0)
        return r;
    if (!empty)
        return err_set(err, -EEXIST,
                       "%s already exists and is not empty; remove it or choose a new path", path);
    return 0;
}

/*
 * Before the rename publishes the tree, what we wrote must be on stable
 * storage, or a crash could leave ROOTFS present but with empty or missing
 * files. On tmpfs and ramfs nothing survives a crash (ROOTFS included), so
 * there is nothing to wait for: that is the TEE case, where the rootfs lives
 * in guest memory. Elsewhere, one syncfs() of the staging filesystem: it also
 * flushes other processes' dirty data on that filesystem, but it is a single
 * journal commit, where an fsync per file and directory (thousands) costs a
 * commit each. See docs/images.md, "Durability".
 */
static int make_durable(int rootfd, cista_error **err)
{
    struct statfs sf;
    if (fstatfs(rootfd, &sf) == 0 &&
        ((unsigned long)sf.f_type == TMPFS_MAGIC || (unsigned long)sf.f_type == RAMFS_MAGIC))
        return 0;
    if (syncfs(rootfd) < 0)
        return err_set_sys(err, -errno, "sync the unpacked tree");
    return 0;
}

static int make_staging(char **out, int parentfd, const char *base, cista_error **err)
{
    static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int attempt = 0; attempt < 16; attempt++) {
        uint8_t rnd[6];
        int r = crypto_random(rnd, sizeof(rnd), err);
        if (r < 0)
            return r;
        char sfx[7];
        for (size_t i = 0; i < 6; i++)
            sfx[i] = al[rnd[i] % 36];
        sfx[6] = '\0';
        /* Keep the name under NAME_MAX whatever the length of ROOTFS's name. */
        char *name = xasprintf(".%.200s.cista-%s", base, sfx);
        /* 0700: nobody else may see (or race into) a tree that is not verified yet. */
        if (mkdirat(parentfd, name, 0700) == 0) {
            *out = name;
            return 0;
        }
        int e = errno;
        free(name);
        if (e != EEXIST)
            return err_set_sys(err, -e, "create a staging directory next to %s", base);
    }
    return err_set(err, -EEXIST, "could not create a staging directory next to %s", base);
}

int img_unpack(const img_image *img, const char *rootfs, EVP_PKEY *const *keys, size_t key_count,
               const img_unpack_opts *opts, cista_error **err)
{
    static const img_unpack_opts defaults;
    if (!opts)
        opts = &defaults;
    size_t n = img->manifest.layer_count;
    int r = 0;

    /* 1. Everything that can be refused without writing, is refused now. */
    img_privopts *po = xzalloc((n ? n : 1) * sizeof(img_privopts));
    uint8_t(*hmacs)[32] = xzalloc((n ? n : 1) * 32);
    uint64_t total = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        const img_layer *l = &img->manifest.layers[i];
        total += l->size;
        img_compression c;
        bool enc;
        if ((r = img__layer_type(&c, &enc, l->media_type, err)) < 0 ||
            (l->encrypted && (r = img__pubopts_parse(hmacs[i], l->enc_pubopts, err)) < 0) ||
            (l->encrypted && (r = img__privopts_unwrap(&po[i], l, keys, key_count, err)) < 0)) {
            _cleanup_free_ char *name = img__layer_name(img, i);
            r = err_wrap(err, "%s", name);
        }
    }

    _cleanup_free_ char *parent = NULL, *base = NULL, *staging = NULL;
    _cleanup_close_ int parentfd = -1, stagefd = -1, rootfd = -1;
    if (r < 0)
        goto out;
    if ((r = split_path(&parent, &base, rootfs, err)) < 0)
        goto out;
    parentfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (parentfd < 0) {
        r = err_set_sys(err, -errno, "open the parent directory %s of the rootfs", parent);
        goto out;
    }
    if ((r = check_target(parentfd, base, rootfs, err)) < 0 ||
        (r = make_staging(&staging, parentfd, base, err)) < 0)
        goto out;

    /* 2. The tree is built in staging/rootfs; the 0700 staging dir hides it meanwhile. */
    stagefd = openat(parentfd, staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (stagefd < 0 || mkdirat(stagefd, "rootfs", 0755) < 0 ||
        (rootfd = openat(stagefd, "rootfs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        r = err_set_sys(err, -errno, "prepare staging directory %s", staging);
        goto fail;
    }
    layer_stream ls[2];
    uint64_t done = 0;
    img_progress prog = {opts->progress, opts->progress_ctx, 0, total};
    if (n)
        layer_open(&ls[0], img, 0, img->manifest.layers[0].encrypted ? &po[0] : NULL, hmacs[0],
                   &prog);
    for (size_t i = 0; i < n; i++) {
        const img_layer *l = &img->manifest.layers[i];
        layer_stream *cur = &ls[i % 2], *next = &ls[(i + 1) % 2];
        if (i + 1 < n) {
            prog.base = done + l->size;
            layer_open(next, img, i + 1, img->manifest.layers[i + 1].encrypted ? &po[i + 1] : NULL,
                       hmacs[i + 1], &prog);
        }
        r = layer_apply(cur, rootfd, opts, err);
        layer_close(cur);
        if (r < 0) {
            if (i + 1 < n)
                layer_close(next);
            goto fail;
        }
        done += l->size;
    }

    /* 3. Every check of every layer passed: make it durable, then publish. */
    if ((r = make_durable(rootfd, err)) < 0)
        goto fail;
    if (renameat(stagefd, "rootfs", parentfd, base) < 0) {
        r = err_set_sys(err, -errno, "rename the verified tree to %s", rootfs);
        goto fail;
    }
    (void)unlinkat(parentfd, staging, AT_REMOVEDIR);
    (void)fsync(parentfd);
    goto out;

fail:
    if (staging) {
        cista_error *e = NULL;
        if (util_rm_rf_at(parentfd, staging, &e) < 0) {
            _cleanup_free_ char *s = err_str(e);
            err_wrap(err, "(could not remove the staging directory %s/%s: %s)", parent, staging, s);
            err_free(e);
        }
    }
out:
    crypto_cleanse(po, (n ? n : 1) * sizeof(img_privopts));
    free(po);
    free(hmacs);
    if (r < 0)
        return err_wrap(err, "unpack %s into %s", img->ref_str, rootfs);
    return 0;
}

int img_keys_check(const img_image *img, EVP_PKEY *const *keys, size_t key_count, cista_error **err)
{
    for (size_t i = 0; i < img->manifest.layer_count; i++) {
        const img_layer *l = &img->manifest.layers[i];
        if (!l->encrypted)
            continue;
        uint8_t hmac[32];
        img_privopts po = {0};
        int r = img__pubopts_parse(hmac, l->enc_pubopts, err);
        if (r == 0)
            r = img__privopts_unwrap(&po, l, keys, key_count, err);
        OPENSSL_cleanse(&po, sizeof(po));
        if (r < 0) {
            _cleanup_free_ char *name = img__layer_name(img, i);
            return err_wrap(err, "%s", name);
        }
    }
    return 0;
}
