/*
 * tar_apply.h - apply one OCI layer (an uncompressed tar stream) onto a
 * root directory, safely.
 *
 * The tar bytes are untrusted (they may come from anyone who can push an
 * image). Every write goes through the root dirfd with RESOLVE_IN_ROOT
 * semantics (util/path.h): absolute names and ".." are re-rooted, symlinks
 * are resolved inside the root, hard links must point inside the root, the
 * root entry itself cannot change type, and device nodes are refused unless
 * allowed. OCI whiteouts (".wh.NAME", ".wh..wh..opq") delete from lower
 * layers. The exact rules are in docs/image-unpack.md.
 *
 * Data comes from a pull callback, so decryption, decompression and
 * digesting can sit in front of it. Not thread-safe per call; independent
 * calls on different roots may run concurrently.
 */
#ifndef CISTA_TAR_APPLY_H
#define CISTA_TAR_APPLY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

/*
 * Pull callback: set *buf to the next chunk of tar bytes and return its size,
 * 0 at end of stream, or a negative errno after filling @err.
 */
typedef ssize_t (*tar_read_fn)(void *ctx, const void **buf, cista_error **err);

typedef struct {
    bool allow_devices;     /* mknod char/block devices (needs CAP_MKNOD); default refuse */
    bool preserve_owner;    /* chown to the tar uid/gid (opts NULL: true when running as root) */
    bool no_whiteouts;      /* treat .wh. names as plain files (for testing only) */
    uint64_t max_entries;   /* 0 = default 1,000,000 */
    uint64_t max_total;     /* bytes of file data; 0 = default 64 GiB */
    const char *layer_name; /* prefix of error messages ("layer 2 sha256:ab…"); NULL: "layer" */
    bool redact_names;      /* errors name entries by number, never by path (confidential trees) */
} tar_apply_opts;

typedef struct {
    uint64_t entries;
    uint64_t bytes; /* file data written */
    uint64_t whiteouts;
    uint64_t rerooted; /* names or links clamped into the root */
    uint64_t skipped;  /* entries deliberately not created (documented kinds) */
} tar_apply_stats;

/*
 * Apply the tar stream to @rootfd (an O_DIRECTORY fd of the staging root;
 * borrowed). @opts may be NULL for the defaults. Stops at the first refused
 * entry with an error naming the layer and the entry
 * ("layer 2 sha256:ab…: entry \"a/b\": hard link target ... is outside the
 * root"). On error the root is left partially written: the caller stages it
 * and removes it. Reading stops at the tar end-of-archive marker, so the
 * callback may not be drained: a caller that digests the whole blob must
 * pull the rest itself. @stats (may be NULL) is filled on error too.
 */
int tar_apply(int rootfd, tar_read_fn rd, void *ctx, const tar_apply_opts *opts,
              tar_apply_stats *stats, cista_error **err) __attribute__((warn_unused_result));

#endif
