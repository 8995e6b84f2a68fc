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
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "image/img_int.h"
#include "image/tar_apply.h"
#include "util/codec.h"
#include "util/util.h"

static ssize_t pull(void *ctx, const void **buf, cista_error **err)
{
    uint8_t *p = NULL;
    ssize_t n = img__rd_read(ctx, &p, err);
    if (n > 0)
        *buf = p;
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

/* Stream one layer into @rootfd. @po is NULL for a plaintext layer. */
static int unpack_layer(const img_image *img, size_t i, int rootfd, const img_privopts *po,
                        uint8_t hmac[32], const img_progress *progress, const img_unpack_opts *opts,
                        cista_error **err)
{
    const img_layer *l = &img->manifest.layers[i];
    _cleanup_free_ char *name = img__layer_name(img, i);
    _cleanup_close_ int fd = -1;
    int r = img__blob_open(&fd, img, l->digest, l->size, name, err);
    if (r < 0)
        return r;
    img_rd *rd = img__rd_fd(fd, l->size, progress);
    rd = img__rd_digest(rd, IMG_CHECK_BLOB, l->digest, NULL);
    if (po) {
        rd = img__rd_ctr(rd, false, po->symkey, po->nonce, hmac);
        rd = img__rd_digest(rd, IMG_CHECK_PLAIN, po->digest, NULL);
    }
    /* The integrity stages end here; what follows interprets the bytes. */
    img_rd *verified = rd;
    rd = img__rd_decompress(rd, l->compression);
    rd = img__rd_digest(rd, IMG_CHECK_DIFFID, l->diff_id, NULL);
    _cleanup_rd_ img_rd *chain = rd;

    tar_apply_opts to = {
        .allow_devices = opts->allow_devices,
        .preserve_owner = geteuid() == 0 && !opts->no_preserve_owner,
        .layer_name = name,
    };
    cista_error *e = NULL;
    r = tar_apply(rootfd, pull, chain, &to, NULL, &e);
    /* tar_apply may stop at the end-of-archive blocks; the digests need every byte. */
    if (r == 0)
        r = img__rd_drain(chain, &e);
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
    uint64_t done = 0;
    for (size_t i = 0; i < n; i++) {
        const img_layer *l = &img->manifest.layers[i];
        img_progress prog = {opts->progress, opts->progress_ctx, done, total};
        r = unpack_layer(img, i, rootfd, l->encrypted ? &po[i] : NULL, hmacs[i], &prog, opts, err);
        if (r < 0)
            goto fail;
        done += l->size;
    }

    /* 3. Every check of every layer passed: publish. */
    if (syncfs(rootfd) < 0) {
        r = err_set_sys(err, -errno, "sync the unpacked tree");
        goto fail;
    }
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
