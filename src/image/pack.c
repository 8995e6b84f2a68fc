/*
 * pack.c - copy an image into an OCI layout, optionally recompressing and
 * encrypting every layer as containers/ocicrypt does.
 *
 * Per layer: source blob -> digest check -> [decompress -> diff_id check ->
 * compress] -> [AES-256-CTR -> HMAC-SHA256 of the ciphertext] -> temporary
 * file in blobs/sha256 -> fsync -> rename to its digest. The private options
 * (fresh key and nonce, digest of the plaintext blob) are wrapped in one JWE
 * for all recipients once the stream is done. index.json is replaced
 * atomically after every blob is in place, so an interrupted pack leaves at
 * worst unreferenced blobs, never a broken tag.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "crypto/crypto.h"
#include "image/img_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/util.h"

typedef struct {
    int dirfd;   /* the layout */
    int blobsfd; /* blobs/sha256 */
} pack_dst;

static int tmp_create(char name[32], int blobsfd, cista_error **err)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        uint8_t rnd[8];
        int r = crypto_random(rnd, sizeof(rnd), err);
        if (r < 0)
            return r;
        _cleanup_free_ char *hex = hex_encode(rnd, sizeof(rnd));
        snprintf(name, 32, ".tmp-%s", hex);
        int fd = openat(blobsfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            return err_set_sys(err, -errno, "create a temporary blob file");
    }
    return err_set(err, -EEXIST, "could not create a temporary blob file");
}

/* Stream @rd into a new blob; *size gets the byte count. Renamed to @digest by blob_commit. */
static int blob_stream(char tmp[32], uint64_t *size, const pack_dst *d, img_rd *rd,
                       img_progress_relay *progress, cista_error **err)
{
    _cleanup_close_ int fd = tmp_create(tmp, d->blobsfd, err);
    if (fd < 0)
        return fd;
    uint64_t total = 0;
    int r;
    for (;;) {
        uint8_t *p;
        ssize_t n = img__rd_read(rd, &p, err);
        img__progress_relay_flush(progress);
        if (n < 0) {
            r = (int)n;
            goto fail;
        }
        if (n == 0)
            break;
        if ((r = util_write_all(fd, p, (size_t)n)) < 0) {
            r = err_set_sys(err, r, "write blob");
            goto fail;
        }
        total += (uint64_t)n;
    }
    /* The blob must be on disk before index.json can refer to it. */
    if (fsync(fd) < 0) {
        r = err_set_sys(err, -errno, "fsync blob");
        goto fail;
    }
    *size = total;
    return 0;
fail:
    unlinkat(d->blobsfd, tmp, 0);
    tmp[0] = '\0';
    return r;
}

static int blob_commit(const pack_dst *d, char tmp[32], const char *digest, cista_error **err)
{
    /* digest was computed by us, so digest + 7 is 64 hex digits. */
    if (renameat(d->blobsfd, tmp, d->blobsfd, digest + 7) < 0) {
        int e = -errno;
        unlinkat(d->blobsfd, tmp, 0);
        return err_set_sys(err, e, "rename blob to blobs/sha256/%s", digest + 7);
    }
    tmp[0] = '\0';
    return 0;
}

static int blob_write_mem(uint64_t *size, char digest[IMG_DIGEST_MAX], const pack_dst *d,
                          const void *data, size_t data_size, cista_error **err)
{
    _cleanup_rd_ img_rd *rd =
        img__rd_digest(img__rd_mem(data, data_size, 0), IMG_CHECK_NONE, NULL, digest);
    char tmp[32];
    int r = blob_stream(tmp, size, d, rd, NULL, err);
    if (r < 0)
        return r;
    return blob_commit(d, tmp, digest, err);
}

static img_compression target_of(img_compress c, img_compression src)
{
    switch (c) {
    case IMG_COMPRESS_NONE:
        return IMG_COMP_NONE;
    case IMG_COMPRESS_GZIP:
        return IMG_COMP_GZIP;
    case IMG_COMPRESS_ZSTD:
        return IMG_COMP_ZSTD;
    case IMG_COMPRESS_KEEP:
        break;
    }
    return src;
}

/* Annotations of a source layer without ocicrypt's (they describe the old encryption). */
static json_t *plain_annotations(const json_t *ann)
{
    json_t *o = json_object();
    if (!ann)
        return o;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)ann, k, v)
    {
        if (strncmp(k, IMG_ANN_ENC_PREFIX, strlen(IMG_ANN_ENC_PREFIX)) != 0)
            json_object_set(o, k, v);
    }
    return o;
}

static int pack_layer(img_layer *out, const img_image *img, size_t i, const pack_dst *d,
                      const img_pack_opts *opts, const img_progress *progress, cista_error **err)
{
    const img_layer *l = &img->manifest.layers[i];
    bool encrypt = opts->recipient_count > 0;
    img_compression target =
        l->encrypted ? l->compression : target_of(opts->compress, l->compression);
    bool recompress = target != l->compression;
    _cleanup_close_ int fd = -1;
    int r = img__blob_open(&fd, img, l->digest, l->size, "source blob", err);
    if (r < 0)
        return r;

    char plain[IMG_DIGEST_MAX], final[IMG_DIGEST_MAX];
    memcpy(plain, l->digest, IMG_DIGEST_MAX);
    memcpy(final, l->digest, IMG_DIGEST_MAX);
    img_privopts po = {0};
    uint8_t hmac[32];
    img_progress_relay relay;
    img_progress prog = img__progress_relay_init(&relay, progress);
    img_rd *rd = img__rd_fd(fd, l->size, &prog);
    rd = img__rd_digest(rd, IMG_CHECK_SOURCE, l->digest, NULL);
    /*
     * Threads: [read, source digest, inflate, diff_id] | [deflate, digest, CTR+HMAC]
     * | final digest and write. Without recompression the first two are one.
     */
    if (recompress) {
        rd = img__rd_decompress(rd, l->compression);
        /* Recompression must not change the tar: hold it to the config's diff_id. */
        rd = img__rd_digest(rd, IMG_CHECK_DIFFID, l->diff_id, NULL);
        rd = img__rd_pipe(rd);
        rd = img__rd_compress(rd, target, opts->level);
        rd = img__rd_digest(rd, IMG_CHECK_NONE, NULL, plain);
    }
    if (encrypt && !l->encrypted) {
        if ((r = crypto_random(po.symkey, sizeof(po.symkey), err)) < 0 ||
            (r = crypto_random(po.nonce, sizeof(po.nonce), err)) < 0) {
            img__rd_free(rd);
            return r;
        }
        rd = img__rd_ctr(rd, true, po.symkey, po.nonce, hmac);
    }
    if (recompress || (encrypt && !l->encrypted)) {
        rd = img__rd_pipe(rd);
        rd = img__rd_digest(rd, IMG_CHECK_NONE, NULL, final);
    }

    char tmp[32];
    uint64_t size;
    r = blob_stream(tmp, &size, d, rd, &relay, err);
    /* Joins the workers first: @plain and @hmac are final only then. */
    img__rd_free(rd);
    if (r < 0)
        goto out;
    if ((r = blob_commit(d, tmp, final, err)) < 0)
        goto out;

    memset(out, 0, sizeof(*out));
    memcpy(out->digest, final, IMG_DIGEST_MAX);
    out->size = size;
    out->compression = target;
    memcpy(out->diff_id, l->diff_id, IMG_DIGEST_MAX);
    if (l->encrypted) {
        /* Copied as is: the ocicrypt annotations still describe these exact bytes. */
        out->encrypted = true;
        out->media_type = xstrdup(l->media_type);
        out->annotations = l->annotations ? json_deep_copy(l->annotations) : NULL;
        goto out;
    }
    out->encrypted = encrypt;
    out->media_type = xstrdup(img__oci_layer_type(target, encrypt));
    out->annotations = plain_annotations(l->annotations);
    if (encrypt) {
        memcpy(po.digest, plain, IMG_DIGEST_MAX);
        char *keys = NULL;
        if ((r = img__privopts_wrap(&keys, &po, opts->recipients, opts->recipient_count, err)) < 0)
            goto out;
        _cleanup_free_ char *pub = img__pubopts_emit(hmac);
        /* Sorted keys, as Go writes the annotations map. */
        json_object_set_new(out->annotations, IMG_ANN_KEYS_JWE, json_string(keys));
        json_object_set_new(out->annotations, IMG_ANN_PUBOPTS, json_string(pub));
        free(keys);
    }
out:
    crypto_cleanse(&po, sizeof(po));
    return r;
}

/* Check every layer before writing anything, so a refusal leaves no trace. */
static int pack_precheck(const img_image *img, const img_pack_opts *opts, cista_error **err)
{
    if (opts->level < 0 || (opts->compress == IMG_COMPRESS_GZIP && opts->level > 9) ||
        (opts->compress == IMG_COMPRESS_ZSTD && opts->level > ZSTD_maxCLevel()))
        return err_set(err, -EINVAL, "compression level %d is out of range (gzip 1-9, zstd 1-%d)",
                       opts->level, ZSTD_maxCLevel());
    for (size_t i = 0; i < img->manifest.layer_count; i++) {
        const img_layer *l = &img->manifest.layers[i];
        _cleanup_free_ char *name = img__layer_name(img, i);
        img_compression c;
        bool enc;
        int r = img__layer_type(&c, &enc, l->media_type, err);
        if (r < 0)
            return err_wrap(err, "%s", name);
        if (l->encrypted && opts->recipient_count > 0)
            return err_set(err, -EINVAL,
                           "%s is already encrypted; cista does not re-encrypt a layer it cannot "
                           "read. Pack without --encrypt to copy it as is, or decrypt it first "
                           "(skopeo copy --decryption-key)",
                           name);
        if (l->encrypted && target_of(opts->compress, l->compression) != l->compression)
            return err_set(err, -EINVAL,
                           "%s is encrypted and cannot be recompressed to %s; use --compress "
                           "keep",
                           name, img__compression_name(target_of(opts->compress, l->compression)));
    }
    return 0;
}

/* Open or create the destination layout; *created says whether we made the directory. */
static int dst_open(pack_dst *d, json_t **index, bool *created, const char *path, cista_error **err)
{
    *created = false;
    d->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->dirfd < 0 && errno == ENOENT) {
        if (mkdir(path, 0755) < 0)
            return err_set_sys(err, -errno, "create OCI layout directory %s", path);
        *created = true;
        d->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    }
    if (d->dirfd < 0)
        return err_set_sys(err, -errno, "open OCI layout directory %s", path);
    struct stat st;
    if (!*created && fstatat(d->dirfd, "oci-layout", &st, AT_SYMLINK_NOFOLLOW) == 0) {
        /* An existing layout: keep its other tags. */
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r = util_read_fileat(&data, &size, d->dirfd, "index.json", IMG_MAX_INDEX, err);
        if (r == -ENOENT) {
            err_clear(err);
            *index = NULL;
        } else if (r < 0) {
            return err_wrap(err, "destination %s", path);
        } else {
            json_t *arr;
            if ((r = js_parse_object(index, data, size, IMG_MAX_INDEX, "destination index.json",
                                     err)) < 0 ||
                (r = js_get_array(&arr, *index, "manifests", true, "destination index.json", err)) <
                    0)
                return err_wrap(err, "destination %s (fix or remove it)", path);
        }
    } else if (!*created) {
        bool empty;
        int r = img__dir_is_empty(&empty, d->dirfd, ".", err);
        if (r < 0)
            return r;
        if (!empty)
            return err_set(err, -EEXIST,
                           "%s exists and is neither an OCI layout nor empty; choose another "
                           "destination",
                           path);
    }
    if ((mkdirat(d->dirfd, "blobs", 0755) < 0 && errno != EEXIST) ||
        (mkdirat(d->dirfd, "blobs/sha256", 0755) < 0 && errno != EEXIST))
        return err_set_sys(err, -errno, "create %s/blobs/sha256", path);
    d->blobsfd = openat(d->dirfd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (d->blobsfd < 0)
        return err_set_sys(err, -errno, "open %s/blobs/sha256", path);
    return 0;
}

/* index.json with @tag pointing at the new manifest (replacing an old entry of that tag). */
static json_t *index_update(json_t *old, const char *tag, const char *digest, uint64_t size)
{
    json_t *idx = old ? json_incref(old) : json_object();
    if (!old)
        json_object_set_new(idx, "schemaVersion", json_integer(2));
    json_t *arr = json_object_get(idx, "manifests");
    if (!json_is_array(arr)) {
        arr = json_array();
        json_object_set_new(idx, "manifests", arr);
    }
    for (size_t i = json_array_size(arr); i-- > 0;) {
        json_t *ann = json_object_get(json_array_get(arr, i), "annotations");
        json_t *rn = json_is_object(ann) ? json_object_get(ann, IMG_ANN_REF_NAME) : NULL;
        if (json_is_string(rn) && !strcmp(json_string_value(rn), tag))
            json_array_remove(arr, i);
    }
    json_t *e = json_object();
    json_object_set_new(e, "mediaType", json_string(IMG_MT_OCI_MANIFEST));
    json_object_set_new(e, "digest", json_string(digest));
    json_object_set_new(e, "size", json_integer((json_int_t)size));
    json_t *ann = json_object();
    json_object_set_new(ann, IMG_ANN_REF_NAME, json_string(tag));
    json_object_set_new(e, "annotations", ann);
    json_array_append_new(arr, e);
    return idx;
}

int img_pack(const char *src, const char *dst, const img_pack_opts *opts, cista_error **err)
{
    static const img_pack_opts defaults;
    if (!opts)
        opts = &defaults;
    img_ref dref = {0};
    _cleanup_img_ img_image *img = NULL;
    _cleanup_json_ json_t *index = NULL;
    pack_dst d = {-1, -1};
    bool created = false;
    img_layer *out = NULL;
    size_t nout = 0;
    _cleanup_free_ char *mtext = NULL, *itext = NULL;
    int r = img_ref_parse(&dref, dst, err);
    if (r < 0)
        goto done;
    if (dref.kind != IMG_REF_OCI) {
        r = err_set(err, -EINVAL,
                    "pack writes an OCI image layout; give the destination as "
                    "oci:DIR[:TAG]");
        goto done;
    }
    if ((r = img_open_platform(&img, src, opts->platform, err)) < 0 ||
        (r = pack_precheck(img, opts, err)) < 0)
        goto done;
    if ((r = dst_open(&d, &index, &created, dref.path, err)) < 0)
        goto fail;

    size_t n = img->manifest.layer_count;
    out = xzalloc((n ? n : 1) * sizeof(img_layer));
    uint64_t total = 0, done_bytes = 0;
    for (size_t i = 0; i < n; i++)
        total += img->manifest.layers[i].size;
    for (size_t i = 0; i < n; i++) {
        img_progress prog = {opts->progress, opts->progress_ctx, done_bytes, total};
        r = pack_layer(&out[i], img, i, &d, opts, &prog, err);
        nout++; /* out[i] is zeroed or filled either way; freed below */
        if (r < 0) {
            _cleanup_free_ char *name = img__layer_name(img, i);
            r = err_wrap(err, "%s", name);
            goto fail;
        }
        done_bytes += img->manifest.layers[i].size;
    }

    /* The config goes over byte for byte: its digest and diff_ids stay valid. */
    img_desc cfg = {0};
    cfg.media_type = (char *)IMG_MT_OCI_CONFIG;
    if ((r = blob_write_mem(&cfg.size, cfg.digest, &d, img->config_raw, img->config_size, err)) < 0)
        goto fail;
    json_t *jm = img__manifest_build(&cfg, out, nout, img->manifest.annotations);
    mtext = js_dump_compact(jm);
    json_decref(jm);
    char mdigest[IMG_DIGEST_MAX];
    uint64_t msize;
    if ((r = blob_write_mem(&msize, mdigest, &d, mtext, strlen(mtext), err)) < 0)
        goto fail;
    if (fsync(d.blobsfd) < 0) {
        r = err_set_sys(err, -errno, "fsync %s/blobs/sha256", dref.path);
        goto fail;
    }

    static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
    struct stat st;
    if (fstatat(d.dirfd, "oci-layout", &st, AT_SYMLINK_NOFOLLOW) < 0 &&
        (r = util_write_file_atomic(d.dirfd, "oci-layout", layout, strlen(layout), 0644, err)) < 0)
        goto fail;
    json_t *idx = index_update(index, dref.tag ? dref.tag : "latest", mdigest, msize);
    itext = js_dump_compact(idx);
    json_decref(idx);
    if ((r = util_write_file_atomic(d.dirfd, "index.json", itext, strlen(itext), 0644, err)) < 0)
        goto fail;
    if (opts->out_manifest_digest)
        memcpy(opts->out_manifest_digest, mdigest, IMG_DIGEST_MAX);
    goto done;

fail:
    if (created) {
        /* We made the directory: take it away again, whole. */
        cista_error *e = NULL;
        if (util_rm_rf_at(AT_FDCWD, dref.path, &e) < 0)
            err_free(e);
    }
done:
    for (size_t i = 0; i < nout; i++) {
        free(out[i].media_type);
        json_decref(out[i].annotations);
    }
    free(out);
    if (d.blobsfd >= 0)
        close(d.blobsfd);
    if (d.dirfd >= 0)
        close(d.dirfd);
    img_ref_clear(&dref);
    if (r < 0)
        return err_wrap(err, "pack %s into %s", src, dst);
    return 0;
}
