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

/*
 * Mount @tee_dir/rootfs for the sandbox in @sandbox_dir (R/ID): an overlay of
 * the image's shared tree in the image store R/.images (unpacked by
 * img_unpack() on first use; on later use only after @keys proved they open
 * every encrypted layer) and a private upper layer in @tee_dir. *shared is
 * set when the tree already existed. A reference keeps the tree until
 * agent__rootfs_release(). Nothing is left behind on failure (rootfs.c).
 */
int agent__rootfs_prepare(const char *sandbox_dir, const char *tee_dir, const img_image *img,
                          EVP_PKEY *const *keys, size_t key_count, bool *shared, cista_error **err)
    __attribute__((warn_unused_result));
/* Drop the sandbox's reference; the last one removes the tree. After unmounting. */
void agent__rootfs_release(const char *sandbox_dir);

/* The standard (trusted) parts of every generated config. */
json_t *agent__default_mounts(void);
bool agent__is_default_mount(const char *destination);

#endif
