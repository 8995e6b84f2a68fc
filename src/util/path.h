/*
 * path.h - resolve and create paths inside a root directory so that no
 * name, "..", absolute symlink or symlinked parent can reach outside it.
 *
 * Semantics are those of openat2(2) with RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS: the root acts as "/" for every component, symlinks
 * included. When the kernel lacks openat2 (ENOSYS, or EPERM under a seccomp
 * filter), a userspace resolver walks the path one component at a time with
 * O_NOFOLLOW|O_PATH and resolves symlinks itself, clamping ".." at the root,
 * with a limit of 40 symlinks (ELOOP).
 *
 * Inputs (paths, link targets) are untrusted. Thread-safe.
 */
#ifndef CISTA_PATH_H
#define CISTA_PATH_H

#include <stdbool.h>
#include <sys/types.h>

#include "util/err.h"

/* Force the userspace fallback (tests; also set by CISTA_NO_OPENAT2=1). */
void path_force_fallback(bool on);

/*
 * Open @path below @rootfd with @flags (O_CLOEXEC is added). O_CREAT is
 * honoured for the last component with @mode; the last component itself is
 * followed only when @flags lacks O_NOFOLLOW. Returns the fd or a negative
 * errno (and fills err).
 */
int path_open_in_root(int rootfd, const char *path, int flags, mode_t mode, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Open the parent directory of @path below @rootfd (resolving every
 * component but the last) and return its fd; *out_name points into a copy
 * owned by the caller (free it) holding the final component. A path whose
 * final component is "." or ".." or empty (the root itself) gives -EINVAL.
 */
int path_open_parent_in_root(int rootfd, const char *path, char **out_name, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Create every missing directory of @path below @rootfd with @mode (like
 * mkdir -p, but never leaving the root) and return an O_DIRECTORY fd.
 */
int path_mkdir_p_in_root(int rootfd, const char *path, mode_t mode, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Lexically clean an untrusted archive name: strip leading "/" and "./",
 * collapse "//" and ".", resolve ".." without going above the root. Returns a
 * new string ("" for the root itself). Caller frees.
 */
char *path_clean(const char *name);

#endif
