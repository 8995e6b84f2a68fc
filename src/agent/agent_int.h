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

/* The standard (trusted) parts of every generated config. */
json_t *agent__default_mounts(void);
bool agent__is_default_mount(const char *destination);

#endif
