/*
 * path.h - resolve and create paths inside a root directory so that no
 * name, "..", absolute symlink or symlinked parent can reach outside it.
 *
 * Semantics are those of openat2(2) with RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS: the root acts as "/" for every component, symlinks
 * included. When the kernel lacks openat2 (ENOSYS, or EPERM under a seccomp
 * filter), a userspace resolver walks the path one component at a time with
 * O_NOFOLLOW|O_PATH and resolves symlinks itself, clamping ".." at the root,
 * with a limit of 40 symlinks (ELOOP). Both give the same answers (the unit
 * test runs every case through both); the fallback answers EAGAIN, as
 * openat2 does, if it notices a directory moved while it walked.
 *
 * Creating through a dangling symlink (O_CREAT without O_EXCL|O_NOFOLLOW, or
 * mkdir -p) creates the target *inside* the root: "a -> /etc/x" makes
 * ROOT/etc/x, never /etc/x. O_EXCL or O_NOFOLLOW refuse instead (EEXIST,
 * ELOOP), as open(2) does.
 *
 * Inputs (paths, link targets) are untrusted. Thread-safe.
 */
#ifndef CISTA_PATH_H
#define CISTA_PATH_H

#include <stdbool.h>
#include <sys/types.h>

#include "util/err.h"

/*
 * Force the userspace fallback (tests; also set by CISTA_NO_OPENAT2=1 in the
 * environment, which a later call here overrides).
 */
void path_force_fallback(bool on);
/* True when lookups currently go through openat2 (not forced off, no ENOSYS seen). */
bool path_using_openat2(void);

/*
 * Open @path below @rootfd with @flags (O_CLOEXEC is added). O_CREAT is
 * honoured for the last component with @mode; the last component itself is
 * followed only when @flags lacks O_NOFOLLOW. "" means the root itself.
 * Returns the fd (owned by the caller) or a negative errno (and fills err).
 * Paths of PATH_MAX bytes or more give -ENAMETOOLONG.
 */
int path_open_in_root(int rootfd, const char *path, int flags, mode_t mode, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Open the parent directory of @path below @rootfd (resolving every
 * component but the last, symlinks included) and return it as an
 * O_PATH|O_DIRECTORY fd, good for the *at() calls; *out_name is set to a
 * copy owned by the caller (free it) holding the final component, which is
 * not resolved. A path whose final component is "." or ".." or empty (the
 * root itself, or a trailing "/") gives -EINVAL.
 */
int path_open_parent_in_root(int rootfd, const char *path, char **out_name, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Create every missing directory of @path below @rootfd with @mode (like
 * mkdir -p, but never leaving the root; @mode is subject to the umask) and
 * return an O_RDONLY|O_DIRECTORY fd owned by the caller. Symlinks on the way
 * are followed inside the root; a dangling one gets its target created
 * (inside the root). A component that is not a directory gives -ENOTDIR.
 */
int path_mkdir_p_in_root(int rootfd, const char *path, mode_t mode, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Lexically clean an untrusted archive name: strip leading "/" and "./",
 * collapse "//" and ".", resolve ".." without going above the root. Returns a
 * new string ("" for the root itself). Caller frees.
 */
char *path_clean(const char *name);

/*
 * True when path_clean() had to clamp @name: it is absolute, or a ".."
 * climbs above the top ("a/../../b"). Lets callers count re-rooted names.
 */
bool path_escapes_root(const char *name);

/*
 * A copy of an untrusted name safe to put in a message between quotes:
 * control bytes, non-ASCII, '"' and '\\' become \xNN, and names longer
 * than 256 bytes are cut with "...". Caller frees.
 */
char *path_printable(const char *name);

#endif
