/*
 * volume.h - cista encrypted volumes: an authenticated, encrypted,
 * rollback-protected file system stored as opaque objects in an untrusted
 * directory, and its FUSE front end.
 *
 * The format (docs/volume-format.md is the specification) encrypts every
 * 4 KiB block with AES-256-GCM, binds each block to its volume, object,
 * position and write generation, and authenticates the whole volume through
 * a tree of GCM tags whose root is the superblock. Names, the directory tree
 * and file metadata live inside encrypted objects; the host sees only
 * objects named by a keyed hash of their number. Commits are atomic: new
 * blocks are written out of place and the superblock (two slots, monotonic
 * generation) is flipped last.
 *
 * Trust: the backing store is fully untrusted and host-controlled. Every
 * byte read from it is authenticated before use; the parsers of superblock,
 * inode, tree-node and directory bytes are bounded and fuzzed. Rollback of
 * the whole store is detected against a trusted anchor (vol_anchor) that
 * holds the last committed {generation, root}.
 *
 * Thread-safety: a vol_volume serialises its operations with an internal
 * mutex, so the vol_* file operations may be called from several threads
 * (the FUSE front end is multi-threaded). Stores and anchors are used only
 * by the volume that owns them.
 *
 * Host I/O goes through vol_store callbacks (Gramine's protected-files
 * model), so the format is unit-tested without FUSE: a directory store is
 * provided; tests supply an in-memory store that simulates crashes.
 */
#ifndef CISTA_VOLUME_H
#define CISTA_VOLUME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "util/err.h"

#define VOL_BLOCK_SIZE 4096u
#define VOL_KEY_SIZE 32u
#define VOL_ID_SIZE 16u
#define VOL_ROOT_SIZE 32u
#define VOL_ROOT_INO 1u
#define VOL_NAME_MAX 255u
/* Largest file: 2^40 bytes (1 TiB). */
#define VOL_MAX_FILE_SIZE (UINT64_C(1) << 40)

/* ---------------------------------------------------------------------------
 * Backing store: named objects, page-granular I/O.
 *
 * Every read and write is a whole number of VOL_BLOCK_SIZE pages at a
 * page-aligned offset. Objects are sparse: pages never written read as zero
 * (read returns the number of bytes that exist; the volume treats missing
 * bytes as corruption where data is expected). Nothing written is durable
 * until sync() of that object; create/remove are durable after sync_dir().
 * All callbacks return 0 (or a byte count) or a negative errno.
 */
typedef struct vol_store_ops {
    /* Open object @name (creating it when @create); *out is the store's handle. */
    int (*open)(void *ctx, const char *name, bool create, void **out);
    void (*close)(void *ctx, void *h);
    ssize_t (*read)(void *ctx, void *h, uint64_t off, void *buf, size_t size);
    int (*write)(void *ctx, void *h, uint64_t off, const void *buf, size_t size);
    int (*sync)(void *ctx, void *h);
    int (*truncate)(void *ctx, void *h, uint64_t size);
    int (*remove)(void *ctx, const char *name); /* -ENOENT when absent */
    int (*sync_dir)(void *ctx);
    /* Call @cb for every object name; stops and returns the first non-zero. */
    int (*list)(void *ctx, int (*cb)(void *arg, const char *name), void *arg);
    void (*free)(void *ctx);
} vol_store_ops;

typedef struct vol_store {
    const vol_store_ops *ops;
    void *ctx;
} vol_store;

/*
 * A store over a host directory (created if missing with @create). Objects
 * are files in it, opened O_CLOEXEC|O_NOFOLLOW relative to the directory fd.
 * New store owned by the caller (vol_store_free).
 */
int vol_store_dir_new(vol_store **out, const char *dir, bool create, cista_error **err)
    __attribute__((warn_unused_result));
void vol_store_free(vol_store *s);
void vol__store_freep(vol_store **s);
#define _cleanup_vol_store_ __attribute__((cleanup(vol__store_freep)))

/* ---------------------------------------------------------------------------
 * Rollback anchor: trusted storage of the last committed {generation, root}.
 *
 * read() returns -ENOENT when nothing is anchored yet. advance() must refuse
 * (-ESTALE) a generation lower than the anchored one; it is called after
 * every durable commit. The file anchor keeps the pair in a file the TEE
 * trusts (tmpfs inside the TEE, a sealed disk), MACed with a key derived from
 * the volume key so a wrong or foreign anchor file is rejected.
 */
typedef struct vol_anchor_ops {
    int (*read)(void *ctx, uint64_t *gen, uint8_t root[VOL_ROOT_SIZE], cista_error **err);
    int (*advance)(void *ctx, uint64_t gen, const uint8_t root[VOL_ROOT_SIZE], cista_error **err);
    const char *(*describe)(void *ctx);
    void (*free)(void *ctx);
} vol_anchor_ops;

typedef struct vol_anchor {
    const vol_anchor_ops *ops;
    void *ctx;
} vol_anchor;

/*
 * A file anchor at @path for the volume @volume_id, MACed with a key derived
 * from @master_key (borrowed; a derived copy is kept and cleansed on free).
 */
vol_anchor *vol_anchor_file_new(const char *path, const uint8_t master_key[VOL_KEY_SIZE],
                                const uint8_t volume_id[VOL_ID_SIZE]);
/*
 * The KBS anchor: a monotonic counter resource {generation, root} at @path ("repo/type/tag")
 * on the broker at @url, which only the volume's attested workload may read and advance (the
 * broker's release policy of @path). The anchor attests once (evidence from @tee: "sim" or
 * "tpm"), re-attests when the token is refused as expired, and advances by compare-and-set
 * from the generation it last saw, so a second writer or a replayed old root is refused.
 * All strings are borrowed (copied). New anchor to the caller (vol_anchor_free).
 */
typedef struct vol_kbs_anchor_opts {
    const char *url;       /* "https://host:port" (no path) */
    const char *ca_file;   /* PEM CA the broker's certificate must chain to */
    const char *tee;       /* "sim" | "tpm" */
    const char *path;      /* counter resource path "repo/type/tag" */
    const char *sim_state; /* sim: evidence state directory; NULL: the default */
    /* sim: the launch value (EV_HOST_DATA_SIZE bytes, normally the workload's policy hash)
     * bound in the anchor's reports, so the broker can tie the counter to that workload;
     * NULL: zeros. Copied. */
    const uint8_t *host_data;
    const char *tpm_tcti; /* tpm: TCTI; NULL: the default */
    long timeout;         /* seconds per request; 0: 30 */
} vol_kbs_anchor_opts;

int vol_anchor_kbs_new(vol_anchor **out, const vol_kbs_anchor_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Split "kbs:https://HOST:PORT/repo/type/tag" into the URL and the path. *out_url and
 * *out_path are new strings. -EINVAL when @spec is not of that form.
 */
int vol_anchor_kbs_parse(char **out_url, char **out_path, const char *spec, cista_error **err)
    __attribute__((warn_unused_result));
void vol_anchor_free(vol_anchor *a);

typedef enum {
    VOL_ROLLBACK_STRICT = 0, /* refuse a generation older than the anchor */
    VOL_ROLLBACK_RESET,      /* on rollback, start over with an empty volume */
    VOL_ROLLBACK_OFF,        /* accept any authentic superblock (warns) */
} vol_rollback_mode;

/* "strict" | "reset" | "off"; -EINVAL otherwise. */
int vol_rollback_parse(vol_rollback_mode *out, const char *s);

/* ---------------------------------------------------------------------------
 * Volumes.
 */
typedef struct vol_volume vol_volume;

typedef struct vol_open_opts {
    vol_rollback_mode rollback;
    vol_anchor *anchor; /* borrowed; NULL = no anchor (needs rollback off) */
    bool read_only;
} vol_open_opts;

typedef struct vol_info {
    uint8_t volume_id[VOL_ID_SIZE];
    uint32_t version;
    uint64_t generation;
    uint8_t root[VOL_ROOT_SIZE];
    uint64_t next_ino;
    uint32_t mount_epoch;
    int64_t created;
    bool key_ok; /* the key check value matches (only meaningful with a key) */
} vol_info;

/*
 * Create an empty volume in a store that holds none: the root directory,
 * superblock generation 1. The volume id is random. @anchor (borrowed, may be
 * NULL) is advanced to the new root; a file anchor is bound to the volume id,
 * so callers usually pass NULL and advance an anchor made from *out_info.
 * @store stays owned by the caller.
 */
int vol_create(vol_store *store, const uint8_t master_key[VOL_KEY_SIZE], vol_anchor *anchor,
               vol_info *out_info, cista_error **err) __attribute__((warn_unused_result));

/*
 * Open a volume: read both superblock slots, pick the newest authentic one,
 * check it against the anchor per @opts->rollback, and start a new write
 * epoch. @store becomes owned by the volume (also on failure); the key is
 * copied. New volume to the caller (vol_close).
 */
int vol_open(vol_volume **out, vol_store *store, const uint8_t master_key[VOL_KEY_SIZE],
             const vol_open_opts *opts, cista_error **err) __attribute__((warn_unused_result));
/* Commit (unless read-only), then free everything. */
int vol_close(vol_volume *v, cista_error **err);
/* Free without committing (as a crash would; tests). */
void vol_abandon(vol_volume *v);

/* Plaintext superblock facts, without the key (info_key NULL) or with it. */
int vol_read_info(vol_info *out, vol_store *store, const uint8_t *master_key_or_null,
                  cista_error **err) __attribute__((warn_unused_result));
void vol_get_info(vol_volume *v, vol_info *out);

/*
 * Commit everything written so far: flush tree nodes, inode table, and
 * directories out of place, sync, write the other superblock slot, sync,
 * advance the anchor. After it returns every file is durable in its current
 * state. A no-op when nothing changed.
 */
int vol_commit(vol_volume *v, cista_error **err) __attribute__((warn_unused_result));
/*
 * vol_commit with options. VOL_COMMIT_DEFER_REAP: leave the backing objects
 * of files deleted before this commit in place, for vol_reap (removing a
 * large object can take the host ~0.5 s per GiB; a caller answering an fsync
 * does that after replying). Durability is the same either way: removals
 * become durable with the next commit.
 */
enum { VOL_COMMIT_DEFER_REAP = 1u << 0 };
int vol_commit_ex(vol_volume *v, unsigned flags, cista_error **err)
    __attribute__((warn_unused_result));
/* Remove the backing objects of deleted files that earlier commits left (see above). */
void vol_reap(vol_volume *v);
/*
 * Bytes of deleted regular files whose backing objects wait for the next
 * commit (they can only go once no committed state references them). The
 * FUSE front end commits early when this is large, so the host deletes them
 * in the background instead of during later writes.
 */
uint64_t vol_reclaimable(vol_volume *v);
/* True when there are uncommitted changes. */
bool vol_is_dirty(vol_volume *v);

/*
 * Check the whole volume: every reachable object, tree node and block is
 * read and authenticated, directory structure and link counts are checked,
 * unreferenced backing objects are reported (and removed with @repair).
 * Returns 0 when clean, -EUCLEAN (with a message naming the first problem)
 * otherwise. *out_objects / *out_orphans get counts (may be NULL).
 */
int vol_fsck(vol_volume *v, bool repair, uint64_t *out_objects, uint64_t *out_orphans,
             cista_error **err) __attribute__((warn_unused_result));

/* ---- file operations (inode based; errors are negative errno, as for FUSE) ---- */

/* Fill @st for @ino. */
int vol_getattr(vol_volume *v, uint64_t ino, struct stat *st);
int vol_lookup(vol_volume *v, uint64_t parent, const char *name, struct stat *st);
/* Create a regular file, fifo/socket/device node, directory or symlink. */
int vol_mknod(vol_volume *v, uint64_t parent, const char *name, mode_t mode, dev_t rdev, uid_t uid,
              gid_t gid, struct stat *st);
int vol_mkdir(vol_volume *v, uint64_t parent, const char *name, mode_t mode, uid_t uid, gid_t gid,
              struct stat *st);
int vol_symlink(vol_volume *v, uint64_t parent, const char *name, const char *target, uid_t uid,
                gid_t gid, struct stat *st);
/* Copy the target into @buf (NUL-terminated); returns its length. */
int vol_readlink(vol_volume *v, uint64_t ino, char *buf, size_t size);
int vol_link(vol_volume *v, uint64_t ino, uint64_t newparent, const char *newname, struct stat *st);
int vol_unlink(vol_volume *v, uint64_t parent, const char *name);
int vol_rmdir(vol_volume *v, uint64_t parent, const char *name);
/* @flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE. */
int vol_rename(vol_volume *v, uint64_t parent, const char *name, uint64_t newparent,
               const char *newname, unsigned flags);

/* Attribute changes; VOL_SET_* bits say which fields of @st apply. */
enum {
    VOL_SET_MODE = 1 << 0,
    VOL_SET_UID = 1 << 1,
    VOL_SET_GID = 1 << 2,
    VOL_SET_SIZE = 1 << 3,
    VOL_SET_ATIME = 1 << 4,
    VOL_SET_MTIME = 1 << 5,
    VOL_SET_ATIME_NOW = 1 << 6,
    VOL_SET_MTIME_NOW = 1 << 7,
    VOL_SET_CTIME = 1 << 8,
};
int vol_setattr(vol_volume *v, uint64_t ino, const struct stat *in, unsigned to_set,
                struct stat *st);

/* Open-file accounting: an unlinked file stays readable until its last release. */
int vol_open_file(vol_volume *v, uint64_t ino, bool truncate);
void vol_release(vol_volume *v, uint64_t ino);
/* Returns bytes read (short at end of file) or -errno (-EIO on tampering). */
ssize_t vol_read(vol_volume *v, uint64_t ino, uint64_t off, void *buf, size_t size);
/* Returns bytes written. @append writes at the end of file. */
ssize_t vol_write(vol_volume *v, uint64_t ino, uint64_t off, const void *buf, size_t size,
                  bool append);

/* Directory listing: @cb gets each entry after @offset (1-based cookies). */
typedef int (*vol_dir_cb)(void *arg, const char *name, uint64_t ino, mode_t type, uint64_t cookie);
int vol_readdir(vol_volume *v, uint64_t ino, uint64_t offset, vol_dir_cb cb, void *arg);

typedef struct vol_statfs {
    uint64_t files;
    uint64_t blocks_used;
} vol_statfs;
void vol_get_statfs(vol_volume *v, vol_statfs *out);

/* Debug/test: backing object name of @ino ("" for none). @out holds 33 bytes. */
int vol_object_name(vol_volume *v, uint64_t ino, char out[33]);

/* ---------------------------------------------------------------------------
 * FUSE front end.
 */
typedef struct vol_fuse_opts {
    const char *mountpoint;
    const char *fsname; /* shown in mountinfo, e.g. "cista:/backing/dir" */
    bool foreground;
    bool debug;
    unsigned commit_interval_ms; /* periodic commit (default 5000) */
    int ready_fd;                /* when >= 0, "ok\n" is written here once mounted */
} vol_fuse_opts;

/*
 * Serve @v on @opts->mountpoint until unmounted (multi-threaded session,
 * max_write 1 MiB, kernel caching). Commits periodically and on fsync, and
 * once more at unmount. Takes ownership of @v (closed on return).
 */
int vol_fuse_serve(vol_volume *v, const vol_fuse_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- keys ---- */
/*
 * Load a 32-byte volume key from @path: 32 raw bytes or 64 hex digits
 * (a trailing newline is fine). The file must not be group/world readable.
 */
int vol_key_load(uint8_t out[VOL_KEY_SIZE], const char *path, cista_error **err)
    __attribute__((warn_unused_result));
/* Write a fresh random key as hex to @path (mode 0600, refuses to overwrite). */
int vol_key_generate(uint8_t out[VOL_KEY_SIZE], const char *path, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- parsers exposed for the fuzz target (untrusted bytes in) ---- */
/* Parse a superblock slot with @key (may be NULL: plaintext header only). */
int vol_parse_superblock(vol_info *out, const uint8_t *data, size_t size,
                         const uint8_t *master_key_or_null, cista_error **err);
/* Parse a decrypted inode record / directory blob / tree node; 0 when valid. */
int vol_parse_inode(const uint8_t *data, size_t size, cista_error **err);
int vol_parse_dir(const uint8_t *data, size_t size, cista_error **err);
int vol_parse_node(const uint8_t *data, size_t size, cista_error **err);

#endif
