/*
 * layout.c - where an image's blobs come from, and opening an image.
 *
 * An OCI layout is read in place. An archive (oci-archive, docker-archive)
 * is extracted once into a private 0700 directory: every regular member
 * becomes a file with a generated name ("m000001"), so no name from the
 * archive is ever used as a path; links are kept as a name table and
 * resolved by lookup. For docker archives each member is hashed while it is
 * copied, because `docker save` names layers by path, not by digest.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "image/img_int.h"
#include "util/json.h"
#include "util/log.h"
#include "util/path.h"
#include "util/util.h"

#define MAX_MEMBERS 100000
#define MAX_LINK_HOPS 16
#define MAX_LAYOUT_FILE (64u << 10)
#define ARCHIVE_PREFIX "cista-archive-"
/* a directory this old with no owner holding its lock is a leftover */
#define ARCHIVE_STALE_SECS 60

/* ---- helpers ---- */

/*
 * Open a file of the image for reading: never follow a final symlink, never
 * block on a FIFO, and insist on a regular file (a device could feed us
 * endless bytes).
 */
static int open_regular(int dirfd, const char *path, const char *what, struct stat *st,
                        cista_error **err)
{
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        int e = -errno;
        if (e == -ELOOP)
            return err_set(err, -EINVAL,
                           "%s: %s is a symbolic link; image files must be regular "
                           "files",
                           what, path);
        return err_set_sys(err, e, "%s: open %s", what, path);
    }
    if (fstat(fd, st) < 0) {
        int e = -errno;
        close(fd);
        return err_set_sys(err, e, "%s: stat %s", what, path);
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return err_set(err, -EINVAL, "%s: %s is not a regular file", what, path);
    }
    /* Regular files ignore O_NONBLOCK, but clear it so later readers see plain blocking I/O. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

/* Read exactly @size bytes from @fd and make sure nothing follows. */
static int read_exact(uint8_t **out, int fd, size_t size, const char *what, cista_error **err)
{
    _cleanup_free_ uint8_t *buf = xmalloc(size + 1);
    ssize_t n = util_read_all(fd, buf, size);
    if (n < 0)
        return err_set_sys(err, (int)n, "%s: read", what);
    if ((size_t)n != size)
        return err_set(err, -EBADMSG, "%s: truncated: read %zd of %zu bytes", what, n, size);
    uint8_t extra;
    n = util_read_all(fd, &extra, 1);
    if (n != 0)
        return err_set(err, -EBADMSG, "%s: has more bytes than the %zu its descriptor says", what,
                       size);
    buf[size] = '\0';
    *out = steal_ptr(&buf);
    return 0;
}

int img__dir_is_empty(bool *out, int dirfd, const char *name, cista_error **err)
{
    int dfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return err_set_sys(err, -errno, "open directory %s", name);
    DIR *d = fdopendir(dfd);
    if (!d) {
        int e = -errno;
        close(dfd);
        return err_set_sys(err, e, "read directory %s", name);
    }
    bool empty = true;
    struct dirent *de;
    while (empty && (de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            empty = false;
    closedir(d);
    *out = empty;
    return 0;
}

char *img__layer_name(const img_image *img, size_t index)
{
    return xasprintf("layer %zu/%zu (%s)", index + 1, img->manifest.layer_count,
                     img->manifest.layers[index].digest);
}

/* ---- archives ---- */

static void store_close(img_store *st)
{
    if (st->tmpdir) {
        cista_error *e = NULL;
        /* Best effort: the directory is private and under TMPDIR, so a leftover is harmless. */
        if (util_rm_rf_at(AT_FDCWD, st->tmpdir, &e) < 0)
            err_free(e);
        free(st->tmpdir);
    }
    if (st->dirfd >= 0)
        close(st->dirfd);
    for (size_t i = 0; i < st->member_count; i++) {
        free(st->members[i].name);
        free(st->members[i].target);
    }
    free(st->members);
    memset(st, 0, sizeof(*st));
    st->dirfd = -1;
}

static img_member *member_add(img_store *st, const char *name)
{
    if (st->member_count % 64 == 0)
        st->members = xrealloc(st->members, (st->member_count + 64) * sizeof(img_member));
    img_member *m = &st->members[st->member_count++];
    memset(m, 0, sizeof(*m));
    m->name = xstrdup(name);
    return m;
}

/* Resolve a symlink target relative to the directory of the link, inside the archive. */
static char *link_resolve(const char *name, const char *target)
{
    if (target[0] == '/')
        return path_clean(target);
    const char *slash = strrchr(name, '/');
    _cleanup_free_ char *joined =
        slash ? xasprintf("%.*s/%s", (int)(slash - name), name, target) : xstrdup(target);
    return path_clean(joined);
}

/* Copy the data of the current entry into @fd, hashing it when @h is set. */
static int copy_entry(struct archive *a, int fd, crypto_hash *h, uint64_t *size, const char *name,
                      cista_error **err)
{
    static const uint8_t zeros[4096];
    uint64_t pos = 0;
    for (;;) {
        const void *p;
        size_t n;
        la_int64_t off;
        int r = archive_read_data_block(a, &p, &n, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN)
            return err_set(err, -EINVAL, "archive member %s: %s", name, archive_error_string(a));
        if (off < 0 || (uint64_t)off < pos)
            return err_set(err, -EINVAL, "archive member %s: data out of order", name);
        /* Sparse members: materialise the holes so the hash covers them. */
        while (pos < (uint64_t)off) {
            size_t z =
                (uint64_t)off - pos > sizeof(zeros) ? sizeof(zeros) : (size_t)((uint64_t)off - pos);
            if (util_write_all(fd, zeros, z) < 0)
                return err_set_sys(err, -errno, "extract archive member %s", name);
            if (h)
                crypto_hash_update(h, zeros, z);
            pos += z;
        }
        if (n && util_write_all(fd, p, n) < 0)
            return err_set_sys(err, -errno, "extract archive member %s", name);
        if (h)
            crypto_hash_update(h, p, n);
        pos += n;
    }
    *size = pos;
    return 0;
}

/*
 * Extraction directories of processes that were killed (kill -9, OOM) before
 * store_close(). Each live owner holds a flock on its directory for as long
 * as it uses it, and the kernel drops it when the owner dies, so a directory
 * whose lock can be taken has no owner. The age check covers the moment
 * between mkdtemp() and flock() of a new directory. Best effort: errors only
 * mean a leftover stays for the next sweep.
 */
static void sweep_stale_archives(const char *base)
{
    DIR *d = opendir(base);
    if (!d)
        return;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, ARCHIVE_PREFIX, strlen(ARCHIVE_PREFIX)) != 0)
            continue;
        _cleanup_close_ int fd =
            openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) < 0 || sb.st_uid != geteuid() ||
            now - sb.st_mtime < ARCHIVE_STALE_SECS || flock(fd, LOCK_EX | LOCK_NB) < 0)
            continue;
        cista_error *e = NULL;
        if (util_rm_rf_at(dirfd(d), de->d_name, &e) < 0)
            err_free(e);
        else
            log_debug("removed %s/%s left by a process that did not finish", base, de->d_name);
    }
    closedir(d);
}

static int extract_archive(img_store *st, const char *path, bool hash, cista_error **err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "open archive %s", path);
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return err_set_sys(err, -errno, "stat archive %s", path);
    if (S_ISDIR(sb.st_mode))
        return err_set(err, -EISDIR,
                       "%s is a directory, not an archive; for an OCI layout "
                       "directory use oci:%s",
                       path, path);

    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/var/tmp";
    sweep_stale_archives(base);
    st->tmpdir = xasprintf("%s/" ARCHIVE_PREFIX "XXXXXX", base);
    if (!mkdtemp(st->tmpdir)) {
        int e = -errno;
        free(steal_ptr(&st->tmpdir));
        return err_set_sys(err, e,
                           "create a private directory under %s for extracting %s "
                           "(set TMPDIR to a directory with enough space)",
                           base, path);
    }
    st->dirfd = open(st->tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->dirfd < 0)
        return err_set_sys(err, -errno, "open %s", st->tmpdir);
    /* held until the directory is removed; see sweep_stale_archives() */
    if (flock(st->dirfd, LOCK_EX) < 0)
        return err_set_sys(err, -errno, "lock %s", st->tmpdir);

    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    /* Only in-process filters: support_filter_all would also run external programs. */
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_zstd(a);
    int ret = 0;
    if (archive_read_open_fd(a, fd, IMG_CHUNK) != ARCHIVE_OK) {
        ret = err_set(err, -EINVAL, "%s is not a readable tar archive: %s", path,
                      archive_error_string(a));
        goto out;
    }
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r < ARCHIVE_WARN) {
            ret = err_set(err, -EINVAL, "archive %s is not a readable tar: %s", path,
                          archive_error_string(a));
            goto out;
        }
        if (st->member_count >= MAX_MEMBERS) {
            ret = err_set(err, -E2BIG, "archive %s has more than %d members", path, MAX_MEMBERS);
            goto out;
        }
        const char *raw = archive_entry_pathname(e);
        if (!raw)
            continue;
        _cleanup_free_ char *name = path_clean(raw);
        if (!*name)
            continue;
        const char *hl = archive_entry_hardlink(e);
        mode_t type = archive_entry_filetype(e);
        if (hl) {
            img_member *m = member_add(st, name);
            m->kind = IMG_MEMBER_HARDLINK;
            m->target = path_clean(hl);
        } else if (type == AE_IFLNK) {
            const char *t = archive_entry_symlink(e);
            img_member *m = member_add(st, name);
            m->kind = IMG_MEMBER_SYMLINK;
            m->target = link_resolve(name, t ? t : "");
        } else if (type == AE_IFREG) {
            img_member *m = member_add(st, name);
            m->kind = IMG_MEMBER_FILE;
            snprintf(m->file, sizeof(m->file), "m%06zu", st->member_count);
            _cleanup_close_ int ofd =
                openat(st->dirfd, m->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (ofd < 0) {
                ret = err_set_sys(err, -errno, "extract archive member %s", name);
                goto out;
            }
            _cleanup_hash_ crypto_hash *h = hash ? crypto_hash_new(CRYPTO_SHA256) : NULL;
            if ((ret = copy_entry(a, ofd, h, &m->size, name, err)) < 0)
                goto out;
            if (h) {
                uint8_t raw_digest[32];
                crypto_hash_final(h, raw_digest);
                img__sha256_digest(m->digest, raw_digest);
            }
        }
    }
out:
    archive_read_free(a);
    return ret;
}

/* The regular-file member called @name, following links inside the archive. */
static const img_member *member_find(const img_store *st, const char *name, cista_error **err)
{
    _cleanup_free_ char *cur = path_clean(name);
    for (int hop = 0; hop <= MAX_LINK_HOPS; hop++) {
        const img_member *m = NULL;
        /* The last entry of a name wins, as when tar extracts. */
        for (size_t i = st->member_count; i-- > 0;) {
            if (!strcmp(st->members[i].name, cur)) {
                m = &st->members[i];
                break;
            }
        }
        if (!m) {
            _cleanup_free_ char *q = img__quote(name);
            return err_set(err, -ENOENT, "the archive has no member %s", q), NULL;
        }
        if (m->kind == IMG_MEMBER_FILE)
            return m;
        free(cur);
        cur = xstrdup(m->target);
    }
    _cleanup_free_ char *q = img__quote(name);
    return err_set(err, -ELOOP, "archive member %s: too many links", q), NULL;
}

static int member_open(const img_store *st, const char *name, const char *what, struct stat *sb,
                       cista_error **err)
{
    const img_member *m = member_find(st, name, err);
    if (!m)
        return err_wrap(err, "%s", what);
    return open_regular(st->dirfd, m->file, what, sb, err);
}

/* ---- blobs ---- */

int img__blob_open(int *out, const img_image *img, const char *digest, uint64_t size,
                   const char *what, cista_error **err)
{
    int r = img__digest_check(digest, what, err);
    if (r < 0)
        return r;
    /* Built only from a validated digest: "blobs/sha256/" + 64 hex digits. */
    char path[16 + IMG_DIGEST_MAX];
    snprintf(path, sizeof(path), "blobs/sha256/%s", digest + 7);
    struct stat sb;
    int fd;
    const img_store *st = &img->store;
    if (st->kind == IMG_REF_OCI) {
        fd = open_regular(st->dirfd, path, what, &sb, err);
        if (fd == -ENOENT) {
            err_clear(err);
            return err_set(err, -ENOENT, "%s: blob %s is missing from the layout %s", what, path,
                           img->ref.path);
        }
    } else if (st->kind == IMG_REF_OCI_ARCHIVE) {
        fd = member_open(st, path, what, &sb, err);
    } else {
        const img_member *m = NULL;
        for (size_t i = 0; i < st->member_count && !m; i++)
            if (st->members[i].kind == IMG_MEMBER_FILE && !strcmp(st->members[i].digest, digest))
                m = &st->members[i];
        if (!m)
            return err_set(err, -ENOENT, "%s: no member of the docker archive has digest %s", what,
                           digest);
        fd = open_regular(st->dirfd, m->file, what, &sb, err);
    }
    if (fd < 0)
        return fd;
    if (size != UINT64_MAX && (uint64_t)sb.st_size != size) {
        close(fd);
        return err_set(err, -EBADMSG,
                       "%s: the blob is %llu bytes but its descriptor says %llu; it is %s "
                       "(fetch or copy the image again)",
                       what, (unsigned long long)sb.st_size, (unsigned long long)size,
                       (uint64_t)sb.st_size < size ? "truncated" : "longer than it should be");
    }
    *out = fd;
    return 0;
}

int img__blob_read(uint8_t **out, size_t *out_size, const img_image *img, const img_desc *d,
                   size_t max, const char *what, cista_error **err)
{
    if (d->size > max)
        return err_set(err, -EFBIG, "%s: %llu bytes is more than the limit of %zu", what,
                       (unsigned long long)d->size, max);
    _cleanup_close_ int fd = -1;
    int r = img__blob_open(&fd, img, d->digest, d->size, what, err);
    if (r < 0)
        return r;
    _cleanup_free_ uint8_t *buf = NULL;
    if ((r = read_exact(&buf, fd, (size_t)d->size, what, err)) < 0)
        return r;
    uint8_t raw[32];
    char got[IMG_DIGEST_MAX];
    crypto_hash_oneshot(CRYPTO_SHA256, buf, (size_t)d->size, raw);
    img__sha256_digest(got, raw);
    if (strcmp(got, d->digest) != 0)
        return err_set(err, -EBADMSG,
                       "%s: sha256 of the blob is %s but its descriptor says %s; the blob was "
                       "modified or corrupted",
                       what, got, d->digest);
    *out = steal_ptr(&buf);
    *out_size = (size_t)d->size;
    return 0;
}

/* ---- opening an image ---- */

static int read_layout_file(uint8_t **out, size_t *out_size, const img_image *img, const char *name,
                            size_t max, cista_error **err)
{
    struct stat sb;
    _cleanup_free_ char *what = xasprintf("%s in %s", name, img->ref.path);
    _cleanup_close_ int fd = img->store.kind == IMG_REF_OCI
                                 ? open_regular(img->store.dirfd, name, what, &sb, err)
                                 : member_open(&img->store, name, what, &sb, err);
    if (fd < 0) {
        if (fd == -ENOENT && !strcmp(name, "oci-layout")) {
            err_clear(err);
            return err_set(err, -ENOENT, "%s is not an OCI image layout: it has no oci-layout file",
                           img->ref.path);
        }
        return fd;
    }
    if ((uint64_t)sb.st_size > max)
        return err_set(err, -EFBIG, "%s is %lld bytes, more than the limit of %zu", what,
                       (long long)sb.st_size, max);
    int r = read_exact(out, fd, (size_t)sb.st_size, what, err);
    if (r < 0)
        return r;
    *out_size = (size_t)sb.st_size;
    return 0;
}

static int check_oci_layout(const img_image *img, cista_error **err)
{
    _cleanup_free_ uint8_t *data = NULL;
    size_t size;
    int r = read_layout_file(&data, &size, img, "oci-layout", MAX_LAYOUT_FILE, err);
    if (r < 0)
        return r;
    _cleanup_json_ json_t *root = NULL;
    const char *v;
    if ((r = js_parse_object(&root, data, size, MAX_LAYOUT_FILE, "oci-layout", err)) < 0 ||
        (r = js_get_string(&v, root, "imageLayoutVersion", true, "oci-layout", err)) < 0)
        return r;
    if (strncmp(v, "1.", 2) != 0) {
        _cleanup_free_ char *q = img__quote(v);
        return err_set(err, -EINVAL, "oci-layout: imageLayoutVersion %s is not supported (1.x)", q);
    }
    return 0;
}

static void note_add(img_image *img, char *note)
{
    if (!note)
        return;
    if (!img->platform_note) {
        img->platform_note = note;
        return;
    }
    char *s = xasprintf("%s; %s", img->platform_note, note);
    free(note);
    free(img->platform_note);
    img->platform_note = s;
}

/* Read and parse the config, and give each layer its diff_id. */
static int load_config(img_image *img, cista_error **err)
{
    _cleanup_free_ char *what = xasprintf("config %s", img->manifest.config.digest);
    int r = img__blob_read(&img->config_raw, &img->config_size, img, &img->manifest.config,
                           IMG_MAX_CONFIG, what, err);
    if (r < 0)
        return r;
    _cleanup_free_ char(*ids)[IMG_DIGEST_MAX] = NULL;
    size_t n;
    r = img__config_parse(&img->config, &ids, &n, img->config_raw, img->config_size, what, err);
    if (r < 0)
        return r;
    if (n != img->manifest.layer_count)
        return err_set(err, -EINVAL,
                       "%s lists %zu diff_ids but the manifest has %zu layers; the image is "
                       "inconsistent",
                       what, n, img->manifest.layer_count);
    for (size_t i = 0; i < n; i++)
        memcpy(img->manifest.layers[i].diff_id, ids[i], IMG_DIGEST_MAX);
    return 0;
}

static int open_oci(img_image *img, const char *platform, cista_error **err)
{
    int r;
    if (img->ref.kind == IMG_REF_OCI) {
        img->store.dirfd = open(img->ref.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (img->store.dirfd < 0)
            return err_set_sys(err, -errno, "open OCI layout directory %s", img->ref.path);
    } else if ((r = extract_archive(&img->store, img->ref.path, false, err)) < 0) {
        return r;
    }
    if ((r = check_oci_layout(img, err)) < 0)
        return r;
    _cleanup_free_ uint8_t *data = NULL;
    size_t size;
    if ((r = read_layout_file(&data, &size, img, "index.json", IMG_MAX_INDEX, err)) < 0)
        return r;
    img_index idx = {0};
    if ((r = img__index_parse(&idx, data, size, "index.json", err)) < 0)
        return r;
    size_t pick;
    char *note = NULL;
    r = img__index_select(&pick, &note, &idx, img->ref.tag, platform, "index.json", err);
    if (r < 0) {
        img__index_clear(&idx);
        return r;
    }
    note_add(img, note);
    img_desc d = idx.v[pick];
    memset(&idx.v[pick], 0, sizeof(img_desc));
    img__index_clear(&idx);

    /* Follow nested indexes (multi-platform images) down to one manifest. */
    for (int depth = 0;; depth++) {
        if (img__is_manifest_type(d.media_type))
            break;
        if (!img__is_index_type(d.media_type)) {
            _cleanup_free_ char *q = img__quote(d.media_type);
            r = err_set(err, -EINVAL,
                        "%s: media type %s is neither an image manifest nor an "
                        "index",
                        d.digest, q);
            goto out;
        }
        if (depth == IMG_MAX_INDEX_DEPTH) {
            r = err_set(err, -ELOOP, "indexes nested deeper than %d levels", IMG_MAX_INDEX_DEPTH);
            goto out;
        }
        _cleanup_free_ char *what = xasprintf("index %s", d.digest);
        _cleanup_free_ uint8_t *blob = NULL;
        size_t bsize;
        if ((r = img__blob_read(&blob, &bsize, img, &d, IMG_MAX_INDEX, what, err)) < 0 ||
            (r = img__index_parse(&idx, blob, bsize, what, err)) < 0)
            goto out;
        r = img__index_select(&pick, &note, &idx, NULL, platform, what, err);
        if (r < 0) {
            img__index_clear(&idx);
            goto out;
        }
        note_add(img, note);
        img__desc_clear(&d);
        d = idx.v[pick];
        memset(&idx.v[pick], 0, sizeof(img_desc));
        img__index_clear(&idx);
    }
    {
        _cleanup_free_ char *what = xasprintf("manifest %s", d.digest);
        _cleanup_free_ uint8_t *blob = NULL;
        size_t bsize;
        if ((r = img__blob_read(&blob, &bsize, img, &d, IMG_MAX_MANIFEST, what, err)) < 0 ||
            (r = img__manifest_parse(&img->manifest, blob, bsize, d.media_type, what, err)) < 0)
            goto out;
        memcpy(img->manifest_digest, d.digest, IMG_DIGEST_MAX);
        img->manifest_size = d.size;
    }
    r = load_config(img, err);
out:
    img__desc_clear(&d);
    return r;
}

/* Sniff the compression of a docker-archive layer: `docker save` does not say. */
static img_compression sniff(const img_store *st, const img_member *m)
{
    uint8_t head[4] = {0};
    struct stat sb;
    cista_error *e = NULL;
    int fd = open_regular(st->dirfd, m->file, "layer", &sb, &e);
    if (fd < 0) {
        err_free(e);
        return IMG_COMP_NONE;
    }
    ssize_t n = util_read_all(fd, head, sizeof(head));
    close(fd);
    if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b)
        return IMG_COMP_GZIP;
    if (n >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd)
        return IMG_COMP_ZSTD;
    return IMG_COMP_NONE;
}

static int open_docker(img_image *img, cista_error **err)
{
    _cleanup_free_ char *text = NULL;
    int r = extract_archive(&img->store, img->ref.path, true, err);
    if (r < 0)
        return r;
    _cleanup_free_ uint8_t *data = NULL;
    size_t size;
    if ((r = read_layout_file(&data, &size, img, "manifest.json", IMG_MAX_DOCKER_MANIFEST, err)) <
        0)
        return err_wrap(err, "%s is not a docker-archive (docker save output)", img->ref.path);
    img_docker_manifest dm = {0};
    if ((r = img__docker_manifest_parse(&dm, data, size, err)) < 0)
        return r;
    size_t pick;
    if ((r = img__docker_select(&pick, &dm, img->ref.tag, err)) < 0)
        goto out;
    const img_docker_entry *de = &dm.v[pick];
    const img_member *cm = member_find(&img->store, de->config, err);
    if (!cm) {
        r = err_wrap(err, "docker-archive config");
        goto out;
    }
    img_manifest *m = &img->manifest;
    m->media_type = xstrdup(IMG_MT_OCI_MANIFEST);
    /* Converted as skopeo converts docker-archive to OCI: the config bytes stay, the type is OCI.
     */
    m->config.media_type = xstrdup(IMG_MT_OCI_CONFIG);
    memcpy(m->config.digest, cm->digest, IMG_DIGEST_MAX);
    m->config.size = cm->size;
    m->layers = xzalloc((de->layer_count ? de->layer_count : 1) * sizeof(img_layer));
    for (size_t i = 0; i < de->layer_count; i++) {
        const img_member *lm = member_find(&img->store, de->layers[i], err);
        if (!lm) {
            r = err_wrap(err, "docker-archive layer %zu", i + 1);
            goto out;
        }
        img_layer *l = &m->layers[m->layer_count++];
        l->compression = sniff(&img->store, lm);
        l->media_type = xstrdup(img__oci_layer_type(l->compression, false));
        memcpy(l->digest, lm->digest, IMG_DIGEST_MAX);
        l->size = lm->size;
    }
    /* The manifest an OCI copy of this image would have; its digest names the image. */
    json_t *jm = img__manifest_build(&m->config, m->layers, m->layer_count, NULL);
    text = js_dump_compact(jm);
    json_decref(jm);
    uint8_t raw[32];
    crypto_hash_oneshot(CRYPTO_SHA256, text, strlen(text), raw);
    img__sha256_digest(img->manifest_digest, raw);
    img->manifest_size = strlen(text);
    img->synthesized = true;
    r = load_config(img, err);
out:
    img__docker_manifest_clear(&dm);
    return r;
}

int img_open_platform(img_image **out, const char *ref, const char *platform, cista_error **err)
{
    img_image *img = xzalloc(sizeof(*img));
    img->store.dirfd = -1;
    int r = img_ref_parse(&img->ref, ref, err);
    if (r < 0) {
        img_free(img);
        return r;
    }
    img->store.kind = img->ref.kind;
    img->ref_str = img_ref_str(&img->ref);
    if (img->ref.kind == IMG_REF_DOCKER_ARCHIVE)
        r = open_docker(img, err);
    else
        r = open_oci(img, platform, err);
    if (r < 0) {
        r = err_wrap(err, "image %s", ref);
        img_free(img);
        return r;
    }
    *out = img;
    return 0;
}

int img_open(img_image **out, const char *ref, cista_error **err)
{
    return img_open_platform(out, ref, NULL, err);
}

void img_free(img_image *img)
{
    if (!img)
        return;
    img__manifest_clear(&img->manifest);
    img__config_clear(&img->config);
    free(img->config_raw);
    free(img->platform_note);
    store_close(&img->store);
    img_ref_clear(&img->ref);
    free(img->ref_str);
    free(img);
}

void img__freep(img_image **img)
{
    img_free(*img);
    *img = NULL;
}

const img_ref *img_get_ref(const img_image *img)
{
    return &img->ref;
}

const char *img_manifest_digest(const img_image *img)
{
    return img->manifest_digest;
}

const char *img_manifest_media_type(const img_image *img)
{
    return img->manifest.media_type;
}

const char *img_config_digest(const img_image *img)
{
    return img->manifest.config.digest;
}

const char *img_platform_note(const img_image *img)
{
    return img->platform_note;
}

const img_config *img_get_config(const img_image *img)
{
    return &img->config;
}

size_t img_layer_count(const img_image *img)
{
    return img->manifest.layer_count;
}

const img_layer *img_get_layer(const img_image *img, size_t index)
{
    return index < img->manifest.layer_count ? &img->manifest.layers[index] : NULL;
}
