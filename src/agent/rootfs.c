/*
 * rootfs.c - a sandbox's root file system, made from one shared, verified
 * copy of its image: an overlay of that tree and a private upper layer on the
 * sandbox's own tmpfs, or, for a container whose root is read-only anyway, a
 * read-only bind of the tree itself.
 *
 * Why share: without it every confidential container decrypts and unpacks its
 * own copy of the image into its own tmpfs, so N containers of one image cost
 * N times the image in TEE memory and N times the decrypt+unpack work, where
 * N native containers share one copy through the page cache. Here the first
 * sandbox of a manifest unpacks it once into the image store, a tmpfs (TEE
 * memory) under the runtime root; every sandbox of that manifest then mounts
 * its rootfs from the shared tree. Launch only takes the reference
 * (agent__rootfs_prepare()); the rootfs is mounted once the container's final
 * config is known (agent__rootfs_mount()), because that config decides how:
 *
 *  - overlay (the default): the tree is the read-only lower layer; writes,
 *    injected secrets and copied files go to the sandbox's upper layer on its
 *    own tmpfs, so nothing one container does is visible to another;
 *  - read-only bind: when root.readonly is true the upper layer would stay
 *    empty, and overlayfs still costs about 2 µs on every open() (nginx
 *    serving small files: 0.81-0.87x native, against 1.06-1.16x on a plain
 *    tree). The tree is bound at the rootfs and remounted read-only, nosuid,
 *    nodev, so neither the container nor the agent can write it. Only when
 *    nothing needs to write into the rootfs before the container starts: no
 *    secret file to inject, and every mount point and the cwd already in the
 *    image (runc and crun create missing ones, which fails with EROFS). And
 *    never when the container may hold CAP_SYS_ADMIN, among the other
 *    conditions of agent_rootfs_bind_blocker(). What remains shared is what overlayfs hid:
 *    the tree's inodes themselves, so a flock() or an inotify watch on an
 *    image file is seen by every container of the image (docs/runtime.md).
 *
 * Layout under the runtime root R (sandbox directories are R/ID; ids never
 * start with a dot, so none of this is mistaken for a container):
 *   R/.images-lock          flock: mounting the store
 *   R/.images/              the store: tmpfs, mode 0700, nodev, nosuid
 *   R/.images/HEX.lock      flock per manifest: one unpack at a time, refs
 *   R/.images/HEX/rootfs    the tree img_unpack() made (renamed in when whole)
 *   R/.images/HEX/refs/ID   one empty file per sandbox that uses it
 * HEX is the hex of the manifest digest. The last release removes the tree.
 * Both kinds of rootfs are mounts on the sandbox tmpfs (R/ID/tee/rootfs):
 * unmounting the tmpfs (agent_sandbox_destroy()) takes either with it, and
 * the reference is dropped after that.
 *
 * Trust: a tree is only ever made by img_unpack() of the manifest its name
 * gives, which checks every blob digest, HMAC and diff_id. A sandbox may use
 * an existing tree only after the policy allowed exactly that manifest digest
 * and diff_ids (the caller checks it before asking the key source for keys)
 * and after the keys released to *this* sandbox unwrap every encrypted
 * layer's key (img_keys_check()): a cached tree never stands in for a key
 * release. The tree is never written once made: overlayfs copies up, and the
 * bind is read-only.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <linux/magic.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "agent/agent_int.h"
#include "util/log.h"
#include "util/path.h"
#include "util/util.h"

#define STORE_DIR ".images"
#define STORE_LOCK ".images-lock"

/* R and ID of a sandbox directory R/ID. */
static int split_sandbox_dir(char **root, const char **id, const char *dir, cista_error **err)
{
    const char *slash = strrchr(dir, '/');
    if (!slash || !slash[1])
        return err_set(err, -EINVAL, "sandbox directory \"%s\" has no parent", dir);
    *root = slash == dir ? xstrdup("/") : xstrndup(dir, (size_t)(slash - dir));
    *id = slash + 1;
    return 0;
}

/* "sha256:abc…" -> "abc…": digests are validated when the image is opened. */
static const char *digest_hex(const char *digest)
{
    const char *colon = strchr(digest, ':');
    return colon ? colon + 1 : digest;
}

static int lock_file(int dirfd, const char *name, const char *what, cista_error **err)
{
    int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return err_set_sys(err, -errno, "open the lock of %s", what);
    if (flock(fd, LOCK_EX) < 0) {
        int e = -errno;
        close(fd);
        return err_set_sys(err, e, "lock %s", what);
    }
    return fd;
}

static bool is_own_tmpfs(const char *path, const char *parent)
{
    struct statfs sf;
    struct stat a, b;
    return statfs(path, &sf) == 0 && sf.f_type == TMPFS_MAGIC && stat(path, &a) == 0 &&
           stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/*
 * Enter the store of @root: its lock held shared (nobody unmounts the store
 * while it is held), mounting the tmpfs first when it is not there. With
 * @mount false a missing store is -ENOENT. The lock fd and a store fd to the
 * caller.
 */
static int store_enter(int *out_lock, int *out_fd, const char *root, bool mount_it,
                       cista_error **err)
{
    _cleanup_close_ int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return err_set_sys(err, -errno, "open %s", root);
    _cleanup_close_ int lk =
        openat(rootfd, STORE_LOCK, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lk < 0)
        return err_set_sys(err, -errno, "open the lock of the image store in %s", root);
    _cleanup_free_ char *store = xasprintf("%s/%s", root, STORE_DIR);
    for (int tries = 0; tries < 16; tries++) {
        if (flock(lk, LOCK_SH) < 0)
            return err_set_sys(err, -errno, "lock the image store");
        if (is_own_tmpfs(store, root)) {
            int fd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0)
                return err_set_sys(err, -errno, "open %s", store);
            *out_fd = fd;
            *out_lock = steal_fd(&lk);
            return 0;
        }
        if (!mount_it)
            return -ENOENT;
        /* flock cannot upgrade atomically: re-check under the exclusive lock */
        if (flock(lk, LOCK_EX) < 0)
            return err_set_sys(err, -errno, "lock the image store");
        if (!is_own_tmpfs(store, root)) {
            if (mkdirat(rootfd, STORE_DIR, 0700) < 0 && errno != EEXIST)
                return err_set_sys(err, -errno, "mkdir %s", store);
            int r = agent__mount_tmpfs(store, MS_NODEV | MS_NOSUID, "mode=0700", err);
            if (r < 0)
                return err_wrap(err, "the image store");
            if (mount(NULL, store, NULL, MS_PRIVATE, NULL) < 0) {
                int e = -errno;
                umount2(store, MNT_DETACH);
                return err_set_sys(err, e, "make %s a private mount", store);
            }
            log_debug("image store: tmpfs mounted on %s", store);
        }
        flock(lk, LOCK_UN);
    }
    return err_set(err, -EAGAIN, "the image store %s keeps disappearing", store);
}

/* Whether the store holds any tree (entries are directories; lock files are not). */
static bool store_in_use(int storefd)
{
    int dfd = dup(storefd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return true;
    }
    bool used = false;
    struct dirent *e;
    while (!used && (e = readdir(d)))
        used = e->d_name[0] != '.' && e->d_type != DT_REG;
    closedir(d);
    return used;
}

/* Unmount the store when its last tree is gone, so a runtime root is left as it was. */
static void store_leave(int lk, int storefd, const char *root)
{
    bool used = store_in_use(storefd);
    close(storefd);
    if (!used && flock(lk, LOCK_EX) == 0) {
        _cleanup_free_ char *store = xasprintf("%s/%s", root, STORE_DIR);
        _cleanup_close_ int fd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0 && is_own_tmpfs(store, root) && !store_in_use(fd)) {
            close(steal_fd(&fd));
            if (umount2(store, MNT_DETACH) == 0)
                rmdir(store);
            else
                log_warn("image store: unmount %s: %s", store, strerror(errno));
        }
    }
    close(lk);
}

/* The shared tree of @img in @storefd/HEX/rootfs: verified with @keys, made when missing. */
static int get_tree(int storefd, const char *store, const img_image *img, EVP_PKEY *const *keys,
                    size_t key_count, bool *hit, cista_error **err)
{
    const char *hex = digest_hex(img_manifest_digest(img));
    _cleanup_free_ char *rootfs_rel = xasprintf("%s/rootfs", hex);
    struct stat st;
    if (fstatat(storefd, rootfs_rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
        *hit = true;
        return img_keys_check(img, keys, key_count, err);
    }
    *hit = false;
    if (mkdirat(storefd, hex, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s/%s", store, hex);
    _cleanup_free_ char *rootfs = xasprintf("%s/%s", store, rootfs_rel);
    img_unpack_opts uo = {0};
    return img_unpack(img, rootfs, keys, key_count, &uo, err);
}

/* Drop @id's reference to HEX (locked by the caller) and remove the tree when unused. */
static void unref_locked(int storefd, const char *root, const char *hex, const char *id)
{
    _cleanup_free_ char *refs = xasprintf("%s/refs", hex);
    _cleanup_free_ char *ref = xasprintf("%s/%s", refs, id);
    if (unlinkat(storefd, ref, 0) < 0 && errno != ENOENT)
        log_warn("image store: remove reference %s: %s", ref, strerror(errno));
    int rfd = openat(storefd, refs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = rfd >= 0 ? fdopendir(rfd) : NULL;
    if (rfd >= 0 && !d)
        close(rfd);
    bool used = false;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        /* a sandbox removed without agent_sandbox_destroy() (its directory is gone) */
        _cleanup_free_ char *owner = xasprintf("%s/%s", root, e->d_name);
        if (access(owner, F_OK) < 0 && errno == ENOENT) {
            unlinkat(dirfd(d), e->d_name, 0);
            continue;
        }
        used = true;
    }
    if (d)
        closedir(d);
    if (used)
        return;
    cista_error *er = NULL;
    if (util_rm_rf_at(storefd, hex, &er) < 0) {
        log_warn("image store: remove %s: %s", hex, er->msg);
        err_free(er);
        return;
    }
    log_debug("image store: %s removed (no sandbox uses it)", hex);
}

static int mount_overlay(const char *tee_dir, const char *lower, cista_error **err)
{
    struct stat st;
    if (stat(lower, &st) < 0)
        return err_set_sys(err, -errno, "stat %s", lower);
    _cleanup_free_ char *upper = xasprintf("%s/upper", tee_dir);
    _cleanup_free_ char *work = xasprintf("%s/work", tee_dir);
    _cleanup_free_ char *merged = xasprintf("%s/%s", tee_dir, AGENT_ROOTFS);
    /* the option string cannot quote these */
    if (strpbrk(lower, ",:\\") || strpbrk(upper, ",:\\"))
        return err_set(err, -EINVAL,
                       "the runtime root %s contains ',', ':' or '\\', which overlayfs options "
                       "cannot carry; choose another --root",
                       tee_dir);
    /* the root directory of the merged tree takes its owner and mode from the upper one */
    if (mkdir(upper, 0700) < 0 || mkdir(work, 0700) < 0 || mkdir(merged, 0700) < 0 ||
        chown(upper, st.st_uid, st.st_gid) < 0 || chmod(upper, st.st_mode & 07777) < 0)
        return err_set_sys(err, -errno, "prepare the overlay directories in %s", tee_dir);
    /*
     * Only features that read nothing special from the lower tree: no redirects, no
     * metacopy, no user.* overlay xattrs (userxattr is off by default). The image
     * tree holds no device nodes (unpacked without allow_devices), so no whiteouts.
     */
    _cleanup_free_ char *opts =
        xasprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off,index=off",
                  lower, upper, work);
    if (mount("overlay", merged, "overlay", MS_NODEV, opts) < 0)
        return err_set_sys(err, -errno, "mount the container rootfs overlay on %s", merged);
    return 0;
}

/*
 * Bind the tree @treefd (the one the checks looked at) at @tee_dir/rootfs, read-only, nosuid and
 * nodev. With the new mount API the detached clone gets its flags before it is attached, so it
 * is never writable and never a different tree than @treefd. On kernels before 5.12 a bind of
 * the path @tree and a remount (a bind takes the flags of the mount it comes from, the store's,
 * and ignores MS_RDONLY given with MS_BIND), on the sandbox's private tmpfs where only the agent
 * looks.
 */
static int mount_readonly_bind(const char *tee_dir, int treefd, const char *tree, cista_error **err)
{
    _cleanup_free_ char *merged = xasprintf("%s/%s", tee_dir, AGENT_ROOTFS);
    if (mkdir(merged, 0700) < 0)
        return err_set_sys(err, -errno, "mkdir %s", merged);
    _cleanup_close_ int mfd = open_tree(
        treefd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_NO_AUTOMOUNT);
    if (mfd >= 0) {
        struct mount_attr a = {.attr_set =
                                   MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
        if (mount_setattr(mfd, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
            return err_set_sys(err, -errno, "make the bind of the image tree read-only");
        if (move_mount(mfd, "", AT_FDCWD, merged, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return err_set_sys(err, -errno, "attach the bind of the image tree on %s", merged);
        return 0;
    }
    if (errno != ENOSYS)
        return err_set_sys(err, -errno, "clone the image tree %s", tree);
    if (mount(tree, merged, NULL, MS_BIND, NULL) < 0)
        return err_set_sys(err, -errno, "bind the image tree %s on %s", tree, merged);
    if (mount(NULL, merged, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) <
        0) {
        int e = -errno;
        umount2(merged, MNT_DETACH);
        return err_set_sys(err, e, "make the bind of the image tree on %s read-only", merged);
    }
    return 0;
}

/* Whether any capability set of @caps names CAP_@name (either spelling, any case). */
static bool has_cap(const json_t *caps, const char *name)
{
    _cleanup_free_ char *full = xasprintf("CAP_%s", name);
    const char *set;
    json_t *v;
    json_object_foreach((json_t *)caps, set, v)
    {
        size_t i;
        json_t *c;
        json_array_foreach(v, i, c)
        {
            const char *s = json_string_value(c);
            if (s && (!strcasecmp(s, full) || !strcasecmp(s, name)))
                return true;
        }
    }
    return false;
}

/*
 * Whether @path (normalised) lies strictly below the destination of one of the first @n
 * mounts: the delegate makes it inside that mount, after mounting it, not in the rootfs.
 */
static bool below_mount(const json_t *mounts, size_t n, const char *path)
{
    for (size_t k = 0; k < n; k++) {
        _cleanup_free_ char *d = pol_path_normalize(
            json_string_value(json_object_get(json_array_get(mounts, k), "destination")));
        size_t l = d ? strlen(d) : 0;
        if (l == 1 ? strcmp(path, "/") != 0 : (l && !strncmp(path, d, l) && path[l] == '/'))
            return true;
    }
    return false;
}

/* NULL when @path (normalised) is in the tree @treefd, resolved in it; else why not. */
static char *missing_in_tree(int treefd, const char *what, const char *path)
{
    cista_error *e = NULL;
    int fd = path_open_in_root(treefd, path + 1, O_PATH, 0, &e);
    err_free(e);
    if (fd >= 0) {
        close(fd);
        return NULL;
    }
    _cleanup_free_ char *p = path_printable(path);
    return xasprintf("%s \"%s\" is not in the image (%s); the runtime would have to create it in "
                     "the read-only root",
                     what, p, strerror(-fd));
}

char *agent_rootfs_bind_blocker(const json_t *config, const json_t *rules, bool secret_files,
                                bool special_files, int treefd)
{
    if (!json_is_true(json_object_get(json_object_get(config, "root"), "readonly")))
        return xstrdup("root.readonly is false");
    /*
     * The bind shares more than the overlay does (the tree's inodes: flock, inotify, statfs of
     * the store), so only the owner's policy may choose it: the host asking for a read-only
     * root gets one, on the overlay.
     */
    if (!json_is_true(json_object_get(rules, "read_only_rootfs")))
        return xstrdup("the policy does not make the root read-only (read_only_rootfs): a "
                       "read-only root the host asked for stays on the overlay");
    if (secret_files)
        return xstrdup("a secret is injected as a file into the rootfs");
    if (json_array_size(json_object_get(rules, "copy")) > 0)
        return xstrdup("the policy allows the host to copy files into the container");
    /*
     * A FIFO or socket is opened for writing even on a read-only mount, and on the bind it is
     * the same inode in every container of the image: a channel between them, which the
     * overlay (one overlay inode per container) does not open.
     */
    if (special_files)
        return xstrdup("the image holds a FIFO, socket or device node, which the bind would "
                       "share between the containers of the image");
    /*
     * The container's root would be a bind of the tree that every sandbox of this image
     * shares, read-only only through a flag of that one mount. CAP_SYS_ADMIN in the
     * container's mount namespace clears it (mount -o remount,rw /), and writes would then land
     * in the tree under every other container of the image, where the overlay would have kept
     * them in this sandbox's upper layer. (CAP_SYS_ADMIN gained in a new user namespace does
     * not: the kernel locks the flag on mounts a less privileged namespace copies.) Every set
     * counts: uid 0 can get the bounding set back on execve, so can a setuid-root binary. The
     * policy's sets count as well: an exec may ask for any capability the policy allows, after
     * the container started on the bind.
     */
    json_t *proc = json_object_get(config, "process");
    if (has_cap(json_object_get(proc, "capabilities"), "SYS_ADMIN"))
        return xstrdup("the process has CAP_SYS_ADMIN, with which it could remount the shared "
                       "tree writable");
    if (has_cap(json_object_get(rules, "capabilities"), "SYS_ADMIN"))
        return xstrdup("the policy allows CAP_SYS_ADMIN, with which an exec could remount the "
                       "shared tree writable");
    /*
     * open_by_handle_at() (CAP_DAC_READ_SEARCH) decodes a handle relative to the mount it is
     * given but not confined to the bound subtree: through the bind, a guessed handle reaches
     * the whole store tmpfs, every other image's decrypted tree. Through the overlay it does
     * not (ESTALE).
     */
    if (has_cap(json_object_get(proc, "capabilities"), "DAC_READ_SEARCH") ||
        has_cap(json_object_get(rules, "capabilities"), "DAC_READ_SEARCH"))
        return xstrdup("CAP_DAC_READ_SEARCH (open_by_handle_at) could reach other images' trees "
                       "in the store through the bind");
    /*
     * runc and crun create a missing mount point (and the cwd) in the rootfs before they make
     * it read-only; on the bind that is EROFS and the container would not start. A path below
     * an earlier mount is made inside that mount (/dev/pts in the /dev tmpfs).
     */
    json_t *mounts = json_object_get(config, "mounts");
    for (size_t i = 0; i < json_array_size(mounts); i++) {
        const char *dest =
            json_string_value(json_object_get(json_array_get(mounts, i), "destination"));
        _cleanup_free_ char *d = pol_path_normalize(dest);
        if (!d) {
            _cleanup_free_ char *p = path_printable(dest ? dest : "");
            return xasprintf("mount point \"%s\" is not a clean absolute path", p);
        }
        char *why = below_mount(mounts, i, d) ? NULL : missing_in_tree(treefd, "mount point", d);
        if (why)
            return why;
    }
    const char *cwd = json_string_value(json_object_get(proc, "cwd"));
    _cleanup_free_ char *c = pol_path_normalize(cwd ? cwd : "/");
    if (!c) {
        _cleanup_free_ char *p = path_printable(cwd);
        return xasprintf("process.cwd \"%s\" is not a clean absolute path", p);
    }
    if (!below_mount(mounts, json_array_size(mounts), c))
        return missing_in_tree(treefd, "the working directory", c);
    return NULL;
}

static int prepare_in_store(int storefd, const char *root, const char *id, const img_image *img,
                            EVP_PKEY *const *keys, size_t key_count, bool *shared,
                            cista_error **err)
{
    int rc;
    _cleanup_free_ char *store = xasprintf("%s/%s", root, STORE_DIR);
    const char *hex = digest_hex(img_manifest_digest(img));
    _cleanup_free_ char *lockname = xasprintf("%s.lock", hex);
    _cleanup_close_ int lk = lock_file(storefd, lockname, "the image store entry", err);
    if (lk < 0)
        return lk;

    bool hit = false;
    if ((rc = get_tree(storefd, store, img, keys, key_count, &hit, err)) < 0) {
        if (!hit)
            unref_locked(storefd, root, hex, id); /* removes a half-made entry */
        return rc;
    }
    _cleanup_free_ char *refs = xasprintf("%s/refs", hex);
    _cleanup_free_ char *ref = xasprintf("%s/%s", refs, id);
    int fd = -1;
    if ((mkdirat(storefd, refs, 0700) < 0 && errno != EEXIST) ||
        (fd = openat(storefd, ref, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
        rc = err_set_sys(err, -errno, "image store: reference %s/%s", store, ref);
        unref_locked(storefd, root, hex, id);
        return rc;
    }
    close(fd);
    *shared = hit;
    return 0;
}

int agent__rootfs_prepare(const char *sandbox_dir, const img_image *img, EVP_PKEY *const *keys,
                          size_t key_count, bool *shared, cista_error **err)
{
    int rc;
    _cleanup_free_ char *root = NULL;
    const char *id = NULL;
    if ((rc = split_sandbox_dir(&root, &id, sandbox_dir, err)) < 0)
        return rc;
    int storefd = -1, slk = -1;
    if ((rc = store_enter(&slk, &storefd, root, true, err)) < 0)
        return rc;
    rc = prepare_in_store(storefd, root, id, img, keys, key_count, shared, err);
    store_leave(slk, storefd, root);
    return rc;
}

/* Whether the tree at @treefd holds anything but directories, regular files and symlinks
 * (FIFOs, sockets, device nodes); an unreadable tree counts as holding them. */
static bool scan_special(int treefd)
{
    char path[64]; /* a magic link to the tree: followed as the walk's root (FTS_COMFOLLOW) */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", treefd);
    char *const paths[] = {path, NULL};
    FTS *f = fts_open(paths, FTS_PHYSICAL | FTS_COMFOLLOW | FTS_NOCHDIR, NULL);
    if (!f)
        return true;
    bool special = false;
    FTSENT *e;
    while (!special && (e = fts_read(f)) != NULL) {
        if (e->fts_info == FTS_DNR || e->fts_info == FTS_ERR || e->fts_info == FTS_NS)
            special = true;
        else if (e->fts_level > 0 && e->fts_statp &&
                 (S_ISFIFO(e->fts_statp->st_mode) || S_ISSOCK(e->fts_statp->st_mode) ||
                  S_ISCHR(e->fts_statp->st_mode) || S_ISBLK(e->fts_statp->st_mode)))
            special = true;
    }
    fts_close(f);
    return special;
}

/*
 * scan_special() of the tree of manifest @hex, once per tree: the answer is kept next to it in
 * the store (HEX/special), written under the store lock the caller holds. The tree never
 * changes once renamed in.
 */
static bool tree_has_special(int storefd, const char *hex, int treefd)
{
    _cleanup_free_ char *rel = xasprintf("%s/special", hex);
    char c = 0;
    _cleanup_close_ int fd = openat(storefd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 && read(fd, &c, 1) == 1 && (c == '0' || c == '1'))
        return c == '1';
    bool special = scan_special(treefd);
    cista_error *e = NULL;
    if (util_write_file_atomic(storefd, rel, special ? "1" : "0", 1, 0600, &e) < 0)
        err_free(e); /* only a cache: scanned again next time */
    return special;
}

static int mount_in_store(agent__rootfs_kind *out, int storefd, const char *root, const char *id,
                          const char *tee_dir, const img_image *img, const json_t *config,
                          const json_t *rules, bool secret_files, cista_error **err)
{
    int rc;
    const char *hex = digest_hex(img_manifest_digest(img));
    /* only a tree this sandbox holds a reference to: nothing removes it under the mount */
    _cleanup_free_ char *ref = xasprintf("%s/refs/%s", hex, id);
    if (faccessat(storefd, ref, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
        return err_set_sys(err, -errno, "sandbox %s holds no reference to the image tree %s", id,
                           hex);
    _cleanup_free_ char *rel = xasprintf("%s/rootfs", hex);
    _cleanup_close_ int treefd =
        openat(storefd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (treefd < 0)
        return err_set_sys(err, -errno, "open the image tree %s", rel);
    _cleanup_free_ char *tree = xasprintf("%s/%s/%s", root, STORE_DIR, rel);
    /* the scan only when it can matter (a read-only root the policy asks for) */
    bool ro = json_is_true(json_object_get(json_object_get(config, "root"), "readonly")) &&
              json_is_true(json_object_get(rules, "read_only_rootfs"));
    bool special = ro && tree_has_special(storefd, hex, treefd);
    _cleanup_free_ char *why =
        agent_rootfs_bind_blocker(config, rules, secret_files, special, treefd);
    if (why) {
        if ((rc = mount_overlay(tee_dir, tree, err)) < 0)
            return rc;
        log_info("sandbox %s: the rootfs is an overlay of the shared image tree (not a read-only "
                 "bind: %s)",
                 id, why);
        *out = AGENT__ROOTFS_OVERLAY;
        return 0;
    }
    if ((rc = mount_readonly_bind(tee_dir, treefd, tree, err)) < 0)
        return rc;
    log_info("sandbox %s: the rootfs is a read-only bind of the shared image tree (root.readonly: "
             "no overlay, no copy)",
             id);
    *out = AGENT__ROOTFS_READONLY_BIND;
    return 0;
}

int agent__rootfs_mount(agent__rootfs_kind *out, const char *sandbox_dir, const char *tee_dir,
                        const img_image *img, const json_t *config, const json_t *rules,
                        bool secret_files, cista_error **err)
{
    int rc;
    _cleanup_free_ char *root = NULL;
    const char *id = NULL;
    if ((rc = split_sandbox_dir(&root, &id, sandbox_dir, err)) < 0)
        return rc;
    int storefd = -1, slk = -1;
    if ((rc = store_enter(&slk, &storefd, root, false, err)) < 0)
        return rc == -ENOENT ? err_set(err, -ENOENT,
                                       "sandbox %s: the image store of %s is not mounted (the "
                                       "sandbox was not launched, or was destroyed)",
                                       id, root)
                             : rc;
    rc = mount_in_store(out, storefd, root, id, tee_dir, img, config, rules, secret_files, err);
    store_leave(slk, storefd, root);
    return rc;
}

/* Drop @id's reference from whichever entry holds it (a handful of images at most). */
static void release_in_store(int storefd, const char *root, const char *id)
{
    int dfd = dup(storefd);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || de->d_type == DT_REG)
            continue;
        _cleanup_free_ char *ref = xasprintf("%s/refs/%s", de->d_name, id);
        if (faccessat(storefd, ref, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        cista_error *e = NULL;
        _cleanup_free_ char *lockname = xasprintf("%s.lock", de->d_name);
        _cleanup_close_ int lk = lock_file(storefd, lockname, "the image store entry", &e);
        if (lk < 0) {
            log_warn("image store: %s", e->msg);
            err_free(e);
            continue;
        }
        unref_locked(storefd, root, de->d_name, id);
    }
    closedir(d);
}

void agent__rootfs_release(const char *sandbox_dir)
{
    _cleanup_free_ char *root = NULL;
    const char *id = NULL;
    cista_error *e = NULL;
    int storefd = -1, slk = -1;
    if (split_sandbox_dir(&root, &id, sandbox_dir, &e) < 0 ||
        store_enter(&slk, &storefd, root, false, &e) < 0) {
        err_free(e);
        return;
    }
    release_in_store(storefd, root, id);
    store_leave(slk, storefd, root);
}
