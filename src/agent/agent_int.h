/*
 * agent_int.h - what the agent's .c files share (not part of the API).
 */
#ifndef CISTA_AGENT_INT_H
#define CISTA_AGENT_INT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"
#include "util/err.h"

/*
 * Get evidence from @tee binding SHA-256(@nonce || SPKI(@pub)) and verify it
 * locally into claims (sim: with the platform key of the sim state dir; tpm:
 * with the AK the quote carries - a self-check, the KBS uses its registered
 * AK). The claims are for display and for the launch-binding check only.
 * New claims to the caller.
 */
int agent__local_attest(json_t **out, const agent_tee *tee, EVP_PKEY *pub, const uint8_t nonce[32],
                        cista_error **err) __attribute__((warn_unused_result));

/* Log and return -EACCES for a policy denial of @what. Clears nothing. */
int agent__deny(cista_error **err, const pol_decision *d, const char *what);

/*
 * Write a secret to @path inside the rootfs @rootfd (resolved in root, parents
 * created 0755, the file 0400 owned by @uid:@gid, O_NOFOLLOW). Borrowed inputs.
 */
int agent__inject_secret_file(int rootfd, const char *path, const void *data, size_t size,
                              int64_t uid, int64_t gid, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- volumes.c ---- */

/* The master key of policy volume @name (cleansed by agent__volume_keys_free()). */
typedef struct {
    char *name;
    uint8_t key[AGENT_VOLUME_KEY_SIZE];
} agent__volume_key;

/* What the volume daemons need besides the key. Strings borrowed. */
typedef struct {
    const char *exe;     /* the cista binary; NULL: /proc/self/exe */
    const char *kbs_url; /* the KBS holding the rollback anchors, or NULL */
    const char *kbs_ca;  /* its CA, or NULL */
    const char *tee;     /* evidence for the anchor's attestation: "sim" or "tpm" */
    const char *sim_state_dir;
    const char *tpm_tcti;
    const char *host_data; /* sim: the launch value for the anchor's reports (hex), or NULL */
} agent__volume_env;

/*
 * After attestation: the master key of every volume of @container from key source @ks (the
 * KBS session that released the image keys). A refusal keeps the source's code (-EACCES for a
 * KBS denial) and is logged with the rule. New array to the caller.
 */
int agent__volume_keys_fetch(agent__volume_key **out, size_t *out_count, const pol_policy *p,
                             const char *container, agent_keysource *ks, cista_error **err)
    __attribute__((warn_unused_result));
void agent__volume_keys_free(agent__volume_key *keys, size_t count);

/*
 * Mount every volume of @plan (agent_volume_plan()) under volumes/NAME of the sandbox's checked
 * tee @tee_fd (@tee_dir names it in messages): an empty
 * backing directory gets a new volume, the key is checked against an existing one, then
 * `cista volume mount` is started with the key on a pipe and the policy's rollback anchor and
 * mode; it daemonises once the anchor check passed and the FUSE mount is up. A fresh volume's
 * root is given to @uid:@gid. What was mounted is recorded in @tee_dir/volumes.json, before each
 * daemon starts, so agent__volumes_unmount() (and delete) can undo a partial mount. Refusals
 * (wrong key, rollback detected) are -EACCES/-EKEYREJECTED, logged with rule "volumes".
 */
int agent__volumes_mount(int tee_fd, const char *tee_dir, const json_t *plan, const pol_policy *p,
                         const char *container, const agent__volume_key *keys, size_t key_count,
                         const agent__volume_env *env, int64_t uid, int64_t gid, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Unmount the volumes recorded in @tee_dir/volumes.json, newest first, and wait for each
 * daemon's final commit (it releases the backing directory's lock). Never leaves a volume
 * reachable: one that stays busy is detached lazily. Returns the first error, after trying all.
 */
int agent__volumes_unmount(const char *tee_dir, cista_error **err);

/* ---- rootfs.c ---- */

/* What a sandbox's rootfs (DIR/tee/rootfs) is; agent.json "rootfs" keeps it for later verbs. */
typedef enum {
    AGENT__ROOTFS_NONE,          /* not mounted yet, or a sandbox of a cista that kept no record */
    AGENT__ROOTFS_OVERLAY,       /* overlay: the shared tree and an upper layer on the tmpfs */
    AGENT__ROOTFS_READONLY_BIND, /* read-only bind of the shared tree (nothing may write it) */
    AGENT__ROOTFS_PRIVATE,       /* the sandbox's own copy on its tmpfs (image_store private) */
} agent__rootfs_kind;

/*
 * Take a reference for the sandbox in @sandbox_dir (R/ID) to the shared tree of @img in the
 * image store R/.images, unpacking it there with img_unpack() on first use; on later use only
 * after @keys proved they open every encrypted layer. *shared is set when the tree already
 * existed. Mounts nothing in the sandbox: agent__rootfs_mount() does, once the final config is
 * known. The reference keeps the tree until agent__rootfs_release(). Nothing is left behind on
 * failure. Inputs borrowed (rootfs.c).
 */
int agent__rootfs_prepare(const char *sandbox_dir, const img_image *img, EVP_PKEY *const *keys,
                          size_t key_count, bool *shared, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Mount rootfs in the sandbox's checked tee @tee_fd (@tee_dir names it in messages only) from
 * the tree of @img the sandbox references: a read-only bind of it when
 * agent_rootfs_bind_blocker() finds nothing against that in the final @config, the policy
 * container @rules and @secret_files (whether secrets will be written into the rootfs), else an
 * overlay with an upper layer in the tee. Every directory in the tee is reached from @tee_fd
 * (O_NOFOLLOW) and handed to the kernel as /proc/self/fd/N, never by a path through the host's
 * runtime root. Logs the choice and the reason at info; *out says which. On failure nothing is
 * mounted; the reference stays for agent__rootfs_release(). Inputs borrowed.
 */
int agent__rootfs_mount(agent__rootfs_kind *out, const char *sandbox_dir, int tee_fd,
                        const char *tee_dir, const img_image *img, const json_t *config,
                        const json_t *rules, bool secret_files, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * The mount @fd is on: statx(STATX_MNT_ID) (Linux 5.8), else /proc/self/fdinfo (3.15).
 * 0 or -ENOTSUP.
 */
int agent__fd_mount_id(int fd, uint64_t *out) __attribute__((warn_unused_result));
/*
 * Whether @fd (opened from @parentfd without following a symlink) is the root of a file system
 * of type @fstype mounted directly on that directory, as cista mounts its tmpfs and volumes: a
 * mount of its own whose parent in /proc/self/mountinfo is @parentfd's mount (nothing stacked
 * on it, nothing bound there from elsewhere), the whole file system, nodev. 0, or -EPERM naming
 * @what and what was found instead (-ENOTSUP when the mount cannot be told). Borrows all.
 */
int agent__check_mounted_on(int parentfd, int fd, const char *fstype, const char *what,
                            cista_error **err) __attribute__((warn_unused_result));
/* Drop the sandbox's reference; the last one removes the tree. After unmounting. */
void agent__rootfs_release(const char *sandbox_dir);

/* The standard (trusted) parts of every generated config. */
/*
 * Mount a tmpfs of TEE memory on @dir (flags, options as mount(2)), kept out of swap
 * ("noswap", Linux 6.4): swap is the host's disk, or a disk it provides to the VM. An older
 * kernel gets the mount without it and one warning per process.
 */
int agent__mount_tmpfs(const char *dir, unsigned long flags, const char *opts, cista_error **err)
    __attribute__((warn_unused_result));

json_t *agent__default_mounts(void);
/* Whether @destination is one of cista's standard mounts once normalised ("/dev/shm/" is). */
bool agent__is_default_mount(const char *destination);
/*
 * Whether the normalised path @path is @dir or below it, by whole components ("/run/secrets/x"
 * is below "/run/secrets" and "/", not below "/run/sec"). Both borrowed.
 */
bool agent__path_within(const char *path, const char *dir);
/*
 * The destination of the first of the OCI @mounts at or above the file @path, compared as the
 * runtime resolves them (normalised, by whole components: "//run/secrets" and "/run/./secrets/"
 * are above "/run/secrets/x"), or NULL. A destination or @path that does not normalise counts
 * as above (refused). Borrowed from @mounts (or @path).
 */
const char *agent__mount_over(const json_t *mounts, const char *path);

#endif
