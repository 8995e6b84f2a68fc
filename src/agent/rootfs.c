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
 *   R/.images/.cista-store  marker: the tmpfs's device and birth time, made at mount
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
 *
 * R is the host's (--root): what is at R/.images is not trusted by its name.
 * The store is opened without following a symlink and used only when it is
 * the tmpfs cista mounts there (store_check()): a mount of its own directly on
 * R/.images, nothing stacked on it, the whole of a tmpfs, nodev, nosuid, its
 * root 0700 and ours, and the marker naming that very tmpfs. Everything
 * below is reached from that fd, one component at a time with O_NOFOLLOW and
 * on the same mount; the tree is unpacked into, overlaid from and bound from
 * /proc/self/fd of the checked directories, never by a path through R. What a
 * host that is root on the same kernel can still do (mount a look-alike tmpfs
 * and forge the marker, or write into the real store) is in docs/runtime.md.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fts.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_int.h"
#include "util/log.h"
#include "util/path.h"
#include "util/util.h"

#define STORE_DIR ".images"
#define STORE_LOCK ".images-lock"
#define STORE_MARKER ".cista-store"

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

int agent__fd_mount_id(int fd, uint64_t *out)
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

/* What /proc/self/mountinfo says of one mount. */
typedef struct {
    uint64_t parent; /* the mount it is attached to */
    bool whole;      /* the root of its file system, not a bind of a part of it */
    bool nodev, nosuid;
    char fstype[32];
} mount_facts;

static bool has_opt(const char *opts, const char *opt)
{
    size_t n = strlen(opt);
    for (const char *p = opts; p; p = strchr(p, ',')) {
        p += *p == ',';
        if (!strncmp(p, opt, n) && (p[n] == ',' || p[n] == 0))
            return true;
    }
    return false;
}

/* The facts of mount @id; -ENOENT when this mount namespace has none by that id. */
static int mount_facts_get(mount_facts *out, uint64_t id)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    _cleanup_free_ char *line = NULL;
    size_t cap = 0;
    /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS */
    while (getline(&line, &cap, f) > 0) {
        uint64_t mid = 0, parent = 0;
        int n = 0;
        if (sscanf(line, "%" SCNu64 " %" SCNu64 " %*u:%*u %n", &mid, &parent, &n) < 2 || !n ||
            mid != id)
            continue;
        char *save = NULL;
        const char *root = strtok_r(line + n, " \n", &save);
        const char *point = strtok_r(NULL, " \n", &save);
        const char *opts = strtok_r(NULL, " \n", &save);
        const char *t;
        while ((t = strtok_r(NULL, " \n", &save)) && strcmp(t, "-"))
            ;
        const char *fstype = t ? strtok_r(NULL, " \n", &save) : NULL;
        if (!root || !point || !opts || !fstype)
            return -EBADMSG;
        out->parent = parent;
        out->whole = !strcmp(root, "/");
        out->nodev = has_opt(opts, "nodev");
        out->nosuid = has_opt(opts, "nosuid");
        snprintf(out->fstype, sizeof(out->fstype), "%s", fstype);
        return 0;
    }
    return -ENOENT;
}

int agent__check_mounted_on(int parentfd, int fd, const char *fstype, const char *what,
                            cista_error **err)
{
    uint64_t pid = 0, id = 0;
    if (agent__fd_mount_id(parentfd, &pid) < 0 || agent__fd_mount_id(fd, &id) < 0)
        return err_set(err, -ENOTSUP,
                       "cannot tell which mount %s is on (no statx mount id, no "
                       "/proc/self/fdinfo); is /proc mounted?",
                       what);
    if (id == pid)
        return err_set(err, -EPERM,
                       "%s is not the %s cista mounted there: it is a plain directory (nothing "
                       "is mounted on it); the host's runtime root was tampered with",
                       what, fstype);
    mount_facts m = {0};
    int r = mount_facts_get(&m, id);
    if (r < 0)
        return err_set_sys(err, r, "find mount %" PRIu64 " of %s in /proc/self/mountinfo", id,
                           what);
    if (m.parent != pid)
        return err_set(err, -EPERM,
                       "%s is not the %s cista mounted there: a file system is mounted over "
                       "another one there (mount %" PRIu64 " on mount %" PRIu64
                       ", expected directly on its directory's mount %" PRIu64
                       "); the host's runtime root was tampered with",
                       what, fstype, id, m.parent, pid);
    if (strcmp(m.fstype, fstype) || !m.whole)
        return err_set(err, -EPERM,
                       "%s is not the %s cista mounted there: it is %s %s; the host's runtime "
                       "root was tampered with",
                       what, fstype, m.whole ? "the root of a" : "a bind of a directory of a",
                       m.fstype);
    if (!m.nodev)
        return err_set(err, -EPERM,
                       "%s is not the %s cista mounted there: it is mounted without nodev; the "
                       "host's runtime root was tampered with",
                       what, fstype);
    return 0;
}

/*
 * The marker's text for the store whose root is @sfd: its superblock (device number) and the
 * birth time of its root, which only mounting a new tmpfs sets (no call sets a birth time), so
 * the marker of one tmpfs does not fit another, even one that got the same device number after
 * the first was unmounted. NULL when the root cannot be looked at.
 */
static char *marker_text(int sfd)
{
    struct statx sx;
    if (statx(sfd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &sx) <
        0)
        return NULL;
    if (!(sx.stx_mask &
          STATX_BTIME)) /* a kernel whose tmpfs keeps no birth time: the device alone */
        sx.stx_btime = (struct statx_timestamp){0};
    return xasprintf("cista image store: tmpfs %u:%u born %lld.%09u\n", sx.stx_dev_major,
                     sx.stx_dev_minor, (long long)sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec);
}

static int store_refuse(cista_error **err, const char *store, const char *why)
{
    return err_set(err, -EPERM,
                   "%s is not the image store cista mounted there: %s. The host's runtime root was "
                   "tampered with; no tree in it is used. Remove or unmount it (after deleting "
                   "the sandboxes that use it) and start again",
                   store, why);
}

/*
 * Whether @sfd, opened as @store (@rootfd/.images without following a symlink), is the tmpfs
 * cista mounted there: 0, -ENOENT when nothing is mounted there (a plain directory of the
 * runtime root), -EPERM (err filled) when something else is.
 *
 * Why each check: the directory is resolved without symlinks, so it is whatever is mounted at
 * exactly @rootfd/.images; its parent mount being @rootfd's means nothing is stacked on a mount
 * there; a whole tmpfs (not a bind of a part of some file system, not another file system
 * type), nodev and nosuid, root 0700 and ours, is what store_mount() makes; the marker, written
 * only by store_mount(), names this very tmpfs (marker_text()), so a tmpfs someone else mounted
 * there does not pass by copying an earlier store's marker. A host that is root on this kernel can
 * still mount a look-alike and write the marker (docs/runtime.md).
 */
static int store_check(int rootfd, int sfd, const char *store, cista_error **err)
{
    uint64_t rid = 0, sid = 0;
    if (agent__fd_mount_id(rootfd, &rid) < 0 || agent__fd_mount_id(sfd, &sid) < 0)
        return err_set(err, -ENOTSUP,
                       "cannot tell which mount %s is on (no statx mount id, no "
                       "/proc/self/fdinfo); is /proc mounted?",
                       store);
    if (sid == rid)
        return -ENOENT;
    mount_facts m = {0};
    int r = mount_facts_get(&m, sid);
    if (r < 0)
        return err_set_sys(err, r, "find mount %" PRIu64 " of %s in /proc/self/mountinfo", sid,
                           store);
    _cleanup_free_ char *why = NULL;
    struct stat st = {0};
    if (m.parent != rid)
        why = xasprintf("a file system is mounted over another one there (mount %" PRIu64
                        " on mount %" PRIu64
                        ", expected directly on the runtime root's mount %" PRIu64 ")",
                        sid, m.parent, rid);
    else if (strcmp(m.fstype, "tmpfs") || !m.whole)
        why = xasprintf("it is %s %s, expected the root of a tmpfs",
                        m.whole ? "the root of a" : "a bind of a directory of a", m.fstype);
    else if (!m.nodev || !m.nosuid)
        why = xstrdup("it is mounted without nodev or nosuid");
    else if (fstat(sfd, &st) < 0)
        return err_set_sys(err, -errno, "stat %s", store);
    else if ((st.st_mode & 07777) != 0700 || st.st_uid != geteuid())
        why = xasprintf("its root has mode %04o and owner %u, expected 0700 and %u",
                        (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)geteuid());
    if (why)
        return store_refuse(err, store, why);

    _cleanup_close_ int mfd = openat(sfd, STORE_MARKER, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat ms;
    char buf[128] = {0};
    ssize_t n = -1;
    if (mfd >= 0 && fstat(mfd, &ms) == 0 && S_ISREG(ms.st_mode) && ms.st_dev == st.st_dev &&
        ms.st_uid == geteuid())
        n = util_read_all(mfd, buf, sizeof(buf) - 1);
    _cleanup_free_ char *want = marker_text(sfd);
    if (n < 0 || !want || strcmp(buf, want))
        return store_refuse(err, store,
                            mfd < 0 ? "it carries no marker " STORE_MARKER
                                    : "its marker " STORE_MARKER " names another tmpfs");
    return 0;
}

/*
 * Open @store (@rootfd/.images) without following a symlink and check it (store_check()):
 * the fd to *out (owned by the caller). -ENOENT (err untouched) when there is no store: no
 * directory, or a plain one.
 */
static int store_open(int *out, int rootfd, const char *store, cista_error **err)
{
    _cleanup_close_ int fd =
        openat(rootfd, STORE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        if (errno == ELOOP || errno == ENOTDIR)
            return store_refuse(err, store, "it is a symbolic link or not a directory");
        return err_set_sys(err, -errno, "open %s", store);
    }
    int r = store_check(rootfd, fd, store, err);
    if (r < 0)
        return r;
    *out = steal_fd(&fd);
    return 0;
}

/*
 * Mount the store's tmpfs on @rootfd/.images (under the exclusive lock; store_open() said there
 * is none). Onto the directory's fd, not its path: a symlink swapped in cannot move the mount
 * elsewhere. Private, so nothing mounted in it propagates; then the marker.
 */
static int store_mount(int rootfd, const char *store, cista_error **err)
{
    if (mkdirat(rootfd, STORE_DIR, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", store);
    _cleanup_close_ int dfd =
        openat(rootfd, STORE_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return errno == ELOOP || errno == ENOTDIR
                   ? store_refuse(err, store, "it is a symbolic link or not a directory")
                   : err_set_sys(err, -errno, "open %s", store);
    char target[64];
    snprintf(target, sizeof(target), "/proc/self/fd/%d", dfd);
    int r = agent__mount_tmpfs(target, MS_NODEV | MS_NOSUID, "mode=0700", err);
    if (r < 0)
        return err_wrap(err, "the image store %s", store);
    /* the tmpfs is on the directory dfd names; by its name it must be there too */
    _cleanup_close_ int sfd =
        openat(rootfd, STORE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    uint64_t rid = 0, sid = 0;
    mount_facts m = {0};
    if (sfd < 0 || agent__fd_mount_id(rootfd, &rid) < 0 || agent__fd_mount_id(sfd, &sid) < 0 ||
        sid == rid || mount_facts_get(&m, sid) < 0 || m.parent != rid ||
        strcmp(m.fstype, "tmpfs")) {
        log_warn("image store: %s was replaced while a tmpfs was mounted on it; that (empty) "
                 "tmpfs stays where the directory went",
                 store);
        return store_refuse(err, store, "it was replaced while cista mounted the store");
    }
    snprintf(target, sizeof(target), "/proc/self/fd/%d", sfd);
    _cleanup_free_ char *marker = NULL;
    if (mount(NULL, target, NULL, MS_PRIVATE, NULL) < 0)
        r = err_set_sys(err, -errno, "make %s a private mount", store);
    else if (!(marker = marker_text(sfd)))
        r = err_set_sys(err, -errno, "stat %s", store);
    else if ((r = util_write_file_atomic(sfd, STORE_MARKER, marker, strlen(marker), 0400, err)) < 0)
        err_wrap(err, "the image store %s", store);
    if (r < 0) {
        umount2(target, MNT_DETACH);
        return r;
    }
    log_debug("image store: tmpfs mounted on %s", store);
    return 0;
}

/* An entered store: the lock held shared, the runtime root and the checked store open. */
typedef struct {
    int lock;   /* R/.images-lock, flock shared */
    int rootfd; /* R */
    int fd;     /* R/.images, checked by store_check() */
    char *path; /* R/.images, for messages */
} store_handle;

/*
 * Enter the store of @root: its lock held shared (nobody unmounts the store while it is held),
 * mounting the tmpfs first when there is none. With @mount_it false a missing store is -ENOENT
 * (err untouched). A store that is not cista's is refused (-EPERM), never mounted over or used.
 * Release with store_leave().
 */
static int store_enter(store_handle *out, const char *root, bool mount_it, cista_error **err)
{
    _cleanup_close_ int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return err_set_sys(err, -errno, "open %s", root);
    _cleanup_close_ int lk =
        openat(rootfd, STORE_LOCK, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lk < 0)
        return err_set_sys(err, -errno, "open the lock of the image store in %s", root);
    _cleanup_free_ char *path = xasprintf("%s/%s", root, STORE_DIR);
    for (int tries = 0; tries < 16; tries++) {
        if (flock(lk, LOCK_SH) < 0)
            return err_set_sys(err, -errno, "lock the image store");
        int fd = -1;
        int r = store_open(&fd, rootfd, path, err);
        if (r == 0) {
            *out = (store_handle){.lock = steal_fd(&lk),
                                  .rootfd = steal_fd(&rootfd),
                                  .fd = fd,
                                  .path = steal_ptr(&path)};
            return 0;
        }
        if (r != -ENOENT || !mount_it)
            return r;
        /* flock cannot upgrade atomically: re-check under the exclusive lock */
        if (flock(lk, LOCK_EX) < 0)
            return err_set_sys(err, -errno, "lock the image store");
        r = store_open(&fd, rootfd, path, err);
        if (r == 0)
            close(fd);
        else if (r != -ENOENT || (r = store_mount(rootfd, path, err)) < 0)
            return r;
        flock(lk, LOCK_UN);
    }
    return err_set(err, -EAGAIN, "the image store %s keeps disappearing", path);
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

/*
 * Leave the store; unmount it when its last tree is gone, so a runtime root is left as it was.
 * The unmount goes through /proc/self/fd of the store checked again under the exclusive lock:
 * never a path the host could have pointed elsewhere.
 */
static void store_leave(store_handle *s)
{
    bool used = store_in_use(s->fd);
    close(s->fd);
    if (!used && flock(s->lock, LOCK_EX) == 0) {
        cista_error *e = NULL;
        _cleanup_close_ int fd = -1;
        int r = store_open(&fd, s->rootfd, s->path, &e);
        if (r == 0 && !store_in_use(fd)) {
            char target[64];
            snprintf(target, sizeof(target), "/proc/self/fd/%d", fd);
            if (umount2(target, MNT_DETACH) == 0) {
                close(steal_fd(&fd));
                unlinkat(s->rootfd, STORE_DIR, AT_REMOVEDIR);
            } else {
                log_warn("image store: unmount %s: %s", s->path, strerror(errno));
            }
        } else if (r < 0 && r != -ENOENT) {
            log_warn("image store: %s", e->msg);
        }
        err_free(e);
    }
    close(s->lock);
    close(s->rootfd);
    free(s->path);
}

/*
 * Open the directory @name (one component) in @dirfd of the store @storefd without following a
 * symlink and only on the store's own mount: the fd (owned by the caller) or -errno (err filled).
 */
static int store_open_dir(int storefd, int dirfd, const char *name, const char *what,
                          cista_error **err)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "open %s", what);
    uint64_t a = 0, b = 0;
    if (agent__fd_mount_id(storefd, &a) < 0 || agent__fd_mount_id(fd, &b) < 0 || a != b)
        return err_set(err, -EXDEV, "%s is not on the image store's tmpfs (another mount)", what);
    return steal_fd(&fd);
}

/* The shared tree of @img in @storefd/HEX/rootfs: verified with @keys, made when missing. */
static int get_tree(int storefd, const char *store, const img_image *img, EVP_PKEY *const *keys,
                    size_t key_count, bool *hit, cista_error **err)
{
    const char *hex = digest_hex(img_manifest_digest(img));
    _cleanup_free_ char *what = xasprintf("%s/%s", store, hex);
    if (mkdirat(storefd, hex, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", what);
    _cleanup_close_ int hexfd = store_open_dir(storefd, storefd, hex, what, err);
    if (hexfd < 0)
        return hexfd;
    struct stat st;
    if (fstatat(hexfd, "rootfs", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
        *hit = true;
        return img_keys_check(img, keys, key_count, err);
    }
    *hit = false;
    /* into the checked directory itself: img_unpack() opens the parent once, by this name */
    char rootfs[64];
    snprintf(rootfs, sizeof(rootfs), "/proc/self/fd/%d/rootfs", hexfd);
    img_unpack_opts uo = {.redact_names = true};
    int r = img_unpack(img, rootfs, keys, key_count, &uo, err);
    return r < 0 ? err_wrap(err, "the image store entry %s", what) : 0;
}

/* Drop @id's reference to HEX (locked by the caller) and remove the tree when unused. */
static void unref_locked(int storefd, int rootfd, const char *hex, const char *id)
{
    _cleanup_free_ char *refs = xasprintf("%s/refs", hex);
    _cleanup_free_ char *ref = xasprintf("%s/%s", refs, id);
    if (unlinkat(storefd, ref, 0) < 0 && errno != ENOENT)
        log_warn("image store: remove reference %s: %s", ref, strerror(errno));
    int rfd = openat(storefd, refs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = rfd >= 0 ? fdopendir(rfd) : NULL;
    if (rfd >= 0 && !d)
        close(rfd);
    bool used = false;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        /* a sandbox removed without agent_sandbox_destroy() (its directory is gone) */
        if (faccessat(rootfd, e->d_name, F_OK, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
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

/*
 * Make the directory @name in the sandbox's tee @teefd (a checked tmpfs) and open it without
 * following a symlink: the fd (owned by the caller; O_PATH with @path_only) or -errno.
 */
static int tee_mkdir_open(int teefd, const char *name, mode_t mode, bool path_only,
                          const char *tee_dir, cista_error **err)
{
    if (mkdirat(teefd, name, mode) < 0)
        return err_set_sys(err, -errno, "mkdir %s/%s", tee_dir, name);
    int fd =
        openat(teefd, name, (path_only ? O_PATH : O_RDONLY) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "open %s/%s", tee_dir, name);
    return fd;
}

/*
 * The overlay of the tree @treefd (the one the checks looked at; @tree names it in messages)
 * and an upper layer in the sandbox's tee @teefd, at its rootfs (@tee_dir names it in
 * messages). Every directory is given as /proc/self/fd/N, which the kernel resolves to that
 * very directory: no path through the host's runtime root is looked up again, so a sandbox
 * directory the host renamed or replaced meanwhile cannot receive the upper layer (the
 * container's writes and secrets) or the mount.
 */
static int mount_overlay(int teefd, const char *tee_dir, int treefd, const char *tree,
                         cista_error **err)
{
    struct stat st;
    if (fstat(treefd, &st) < 0)
        return err_set_sys(err, -errno, "stat %s", tree);
    /* the root directory of the merged tree takes its owner and mode from the upper one */
    _cleanup_close_ int ufd = tee_mkdir_open(teefd, "upper", 0700, false, tee_dir, err);
    if (ufd < 0)
        return ufd;
    if (fchown(ufd, st.st_uid, st.st_gid) < 0 || fchmod(ufd, st.st_mode & 07777) < 0)
        return err_set_sys(err, -errno, "prepare the overlay's upper layer in %s", tee_dir);
    _cleanup_close_ int wfd = tee_mkdir_open(teefd, "work", 0700, true, tee_dir, err);
    if (wfd < 0)
        return wfd;
    _cleanup_close_ int mfd = tee_mkdir_open(teefd, AGENT_ROOTFS, 0700, true, tee_dir, err);
    if (mfd < 0)
        return mfd;
    char merged[64];
    snprintf(merged, sizeof(merged), "/proc/self/fd/%d", mfd);
    /*
     * Only features that read nothing special from the lower tree: no redirects, no
     * metacopy, no user.* overlay xattrs (userxattr is off by default). The image
     * tree holds no device nodes (unpacked without allow_devices), so no whiteouts.
     */
    _cleanup_free_ char *opts =
        xasprintf("lowerdir=/proc/self/fd/%d,upperdir=/proc/self/fd/%d,workdir=/proc/self/fd/%d,"
                  "redirect_dir=off,metacopy=off,index=off",
                  treefd, ufd, wfd);
    if (mount("overlay", merged, "overlay", MS_NODEV, opts) < 0)
        return err_set_sys(err, -errno, "mount the container rootfs overlay on %s/%s", tee_dir,
                           AGENT_ROOTFS);
    return 0;
}

/*
 * Bind the tree @treefd (the one the checks looked at) at the rootfs of the sandbox's tee
 * @teefd, read-only, nosuid and nodev. With the new mount API the detached clone gets its
 * flags before it is attached (onto the mount point's fd), so it is never writable and never a
 * different tree than @treefd. On kernels before 5.12 a bind of /proc/self/fd of @treefd (the
 * same directory, not the path @tree, which only names it in messages) and a remount (a bind
 * takes the flags of the mount it comes from, the store's, and ignores MS_RDONLY given with
 * MS_BIND), on the sandbox's private tmpfs where only the agent looks.
 */
static int mount_readonly_bind(int teefd, const char *tee_dir, int treefd, const char *tree,
                               cista_error **err)
{
    _cleanup_close_ int pfd = tee_mkdir_open(teefd, AGENT_ROOTFS, 0700, true, tee_dir, err);
    if (pfd < 0)
        return pfd;
    char merged[64];
    snprintf(merged, sizeof(merged), "/proc/self/fd/%d", pfd);
    _cleanup_close_ int mfd = open_tree(
        treefd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_NO_AUTOMOUNT);
    if (mfd >= 0) {
        struct mount_attr a = {.attr_set =
                                   MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV};
        if (mount_setattr(mfd, "", AT_EMPTY_PATH, &a, sizeof(a)) < 0)
            return err_set_sys(err, -errno, "make the bind of the image tree read-only");
        if (move_mount(mfd, "", pfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            return err_set_sys(err, -errno, "attach the bind of the image tree on %s/%s", tee_dir,
                               AGENT_ROOTFS);
        return 0;
    }
    if (errno != ENOSYS)
        return err_set_sys(err, -errno, "clone the image tree %s", tree);
    char source[64];
    snprintf(source, sizeof(source), "/proc/self/fd/%d", treefd);
    if (mount(source, merged, NULL, MS_BIND, NULL) < 0)
        return err_set_sys(err, -errno, "bind the image tree %s on %s/%s", tree, tee_dir,
                           AGENT_ROOTFS);
    /* pfd is the directory under the bind: the remount goes to the bind's root, opened anew */
    _cleanup_close_ int bfd =
        openat(teefd, AGENT_ROOTFS, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    char bound[64];
    snprintf(bound, sizeof(bound), "/proc/self/fd/%d", bfd);
    if (bfd < 0 || mount(NULL, bound, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                         NULL) < 0) {
        int e = -errno;
        if (bfd >= 0)
            umount2(bound, MNT_DETACH);
        return err_set_sys(err, e, "make the bind of the image tree on %s/%s read-only", tee_dir,
                           AGENT_ROOTFS);
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

static int prepare_in_store(const store_handle *s, const char *id, const img_image *img,
                            EVP_PKEY *const *keys, size_t key_count, bool *shared,
                            cista_error **err)
{
    int rc;
    const char *hex = digest_hex(img_manifest_digest(img));
    _cleanup_free_ char *lockname = xasprintf("%s.lock", hex);
    _cleanup_close_ int lk = lock_file(s->fd, lockname, "the image store entry", err);
    if (lk < 0)
        return lk;

    bool hit = false;
    if ((rc = get_tree(s->fd, s->path, img, keys, key_count, &hit, err)) < 0) {
        if (!hit)
            unref_locked(s->fd, s->rootfd, hex, id); /* removes a half-made entry */
        return rc;
    }
    _cleanup_free_ char *refs = xasprintf("%s/refs", hex);
    _cleanup_free_ char *ref = xasprintf("%s/%s", refs, id);
    int fd = -1;
    if ((mkdirat(s->fd, refs, 0700) < 0 && errno != EEXIST) ||
        (fd = openat(s->fd, ref, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0) {
        rc = err_set_sys(err, -errno, "image store: reference %s/%s", s->path, ref);
        unref_locked(s->fd, s->rootfd, hex, id);
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
    store_handle s;
    if ((rc = store_enter(&s, root, true, err)) < 0)
        return rc;
    rc = prepare_in_store(&s, id, img, keys, key_count, shared, err);
    store_leave(&s);
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
 * scan_special() of the tree @treefd, once per tree: the answer is kept next to it in the store
 * (HEX/special in @hexfd), written under the store lock the caller holds. The tree never
 * changes once renamed in.
 */
static bool tree_has_special(int hexfd, int treefd)
{
    char c = 0;
    _cleanup_close_ int fd = openat(hexfd, "special", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0 && read(fd, &c, 1) == 1 && (c == '0' || c == '1'))
        return c == '1';
    bool special = scan_special(treefd);
    cista_error *e = NULL;
    if (util_write_file_atomic(hexfd, "special", special ? "1" : "0", 1, 0600, &e) < 0)
        err_free(e); /* only a cache: scanned again next time */
    return special;
}

static int mount_in_store(agent__rootfs_kind *out, const store_handle *s, const char *id, int teefd,
                          const char *tee_dir, const img_image *img, const json_t *config,
                          const json_t *rules, bool secret_files, cista_error **err)
{
    int rc;
    const char *hex = digest_hex(img_manifest_digest(img));
    _cleanup_free_ char *entry = xasprintf("%s/%s", s->path, hex);
    _cleanup_free_ char *tree = xasprintf("%s/rootfs", entry);
    _cleanup_close_ int hexfd = store_open_dir(s->fd, s->fd, hex, entry, err);
    if (hexfd < 0)
        return err_wrap(err, "the image tree of sandbox %s", id);
    /* only a tree this sandbox holds a reference to: nothing removes it under the mount */
    _cleanup_free_ char *ref = xasprintf("refs/%s", id);
    if (faccessat(hexfd, ref, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
        return err_set_sys(err, -errno, "sandbox %s holds no reference to the image tree %s", id,
                           hex);
    /* the one fd every later step uses: the scans, the overlay's lower layer, the bind */
    _cleanup_close_ int treefd = store_open_dir(s->fd, hexfd, "rootfs", tree, err);
    if (treefd < 0)
        return err_wrap(err, "the image tree of sandbox %s", id);
    /* the scan only when it can matter (a read-only root the policy asks for) */
    bool ro = json_is_true(json_object_get(json_object_get(config, "root"), "readonly")) &&
              json_is_true(json_object_get(rules, "read_only_rootfs"));
    bool special = ro && tree_has_special(hexfd, treefd);
    _cleanup_free_ char *why =
        agent_rootfs_bind_blocker(config, rules, secret_files, special, treefd);
    if (why) {
        if ((rc = mount_overlay(teefd, tee_dir, treefd, tree, err)) < 0)
            return rc;
        log_info("sandbox %s: the rootfs is an overlay of the shared image tree (not a read-only "
                 "bind: %s)",
                 id, why);
        *out = AGENT__ROOTFS_OVERLAY;
        return 0;
    }
    if ((rc = mount_readonly_bind(teefd, tee_dir, treefd, tree, err)) < 0)
        return rc;
    log_info("sandbox %s: the rootfs is a read-only bind of the shared image tree (root.readonly: "
             "no overlay, no copy)",
             id);
    *out = AGENT__ROOTFS_READONLY_BIND;
    return 0;
}

int agent__rootfs_mount(agent__rootfs_kind *out, const char *sandbox_dir, int tee_fd,
                        const char *tee_dir, const img_image *img, const json_t *config,
                        const json_t *rules, bool secret_files, cista_error **err)
{
    int rc;
    _cleanup_free_ char *root = NULL;
    const char *id = NULL;
    if ((rc = split_sandbox_dir(&root, &id, sandbox_dir, err)) < 0)
        return rc;
    store_handle s;
    if ((rc = store_enter(&s, root, false, err)) < 0)
        return rc == -ENOENT ? err_set(err, -ENOENT,
                                       "sandbox %s: the image store of %s is not mounted (the "
                                       "sandbox was not launched, or was destroyed)",
                                       id, root)
                             : rc;
    rc = mount_in_store(out, &s, id, tee_fd, tee_dir, img, config, rules, secret_files, err);
    store_leave(&s);
    return rc;
}

/* Drop @id's reference from whichever entry holds it (a handful of images at most). */
static void release_in_store(const store_handle *s, const char *id)
{
    int dfd = dup(s->fd);
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
        if (faccessat(s->fd, ref, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        cista_error *e = NULL;
        _cleanup_free_ char *lockname = xasprintf("%s.lock", de->d_name);
        _cleanup_close_ int lk = lock_file(s->fd, lockname, "the image store entry", &e);
        if (lk < 0) {
            log_warn("image store: %s", e->msg);
            err_free(e);
            continue;
        }
        unref_locked(s->fd, s->rootfd, de->d_name, id);
    }
    closedir(d);
}

void agent__rootfs_release(const char *sandbox_dir)
{
    _cleanup_free_ char *root = NULL;
    const char *id = NULL;
    cista_error *e = NULL;
    store_handle s;
    int rc = split_sandbox_dir(&root, &id, sandbox_dir, &e);
    if (rc == 0)
        rc = store_enter(&s, root, false, &e);
    if (rc < 0) {
        /* a store that is not cista's is left alone, and said so: the host tampered with it */
        if (rc != -ENOENT && e)
            log_warn("image store: the reference of %s is not dropped: %s", sandbox_dir, e->msg);
        err_free(e);
        return;
    }
    release_in_store(&s, id);
    store_leave(&s);
}
