/*
 * policy.h - the container policy: the workload owner's statement of exactly
 * what may run in the TEE. Parsing and validation of the versioned JSON
 * format (docs/policy.md, docs/policy.schema.json), its hash and the launch
 * encodings of that hash (SNP HOST_DATA, TDX MRCONFIGID, TPM PCR, sim),
 * generation from OCI image configs and Kubernetes YAML, and the enforcement
 * API the runtime calls for every operation (create, exec, logs, signal,
 * copy, volume mount, image).
 *
 * Thread-safety: a parsed pol_policy is immutable; the pol_allow_*()
 * functions may be called on one policy from several threads at once.
 * Generation keeps no global state.
 *
 * Trust: the policy file is the owner's document, but it reaches the TEE
 * through the host, so it is parsed strictly (size limit, unknown members
 * rejected, every regex compiled up front) and its hash is what the TEE
 * binds. Everything the pol_allow_*() functions are asked about (OCI
 * config.json, process.json, paths, names) comes from the untrusted host:
 * it is parsed with explicit bounds, and anything malformed, missing or not
 * allowed is denied (fail closed). Kubernetes YAML given to generation is
 * parsed with size, depth, node and alias-expansion limits.
 */
#ifndef CISTA_POLICY_H
#define CISTA_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* The format version this code reads and writes. */
#define POL_VERSION "1"

/* Hard limits on untrusted documents, in bytes. */
#define POL_MAX_POLICY (4u << 20)
#define POL_MAX_CONFIG (1u << 20)  /* OCI config.json and process.json */
#define POL_MAX_YAML (4u << 20)    /* a Kubernetes YAML stream */
#define POL_MAX_YAML_NODES 200000u /* nodes after alias expansion (billion laughs) */
#define POL_MAX_YAML_DEPTH 64u

typedef struct pol_policy pol_policy;

/* ---- parsing ---- */

/*
 * Parse and validate @size bytes of policy JSON. Unknown members, wrong
 * types, duplicate container names and regexes that do not compile are
 * errors (-EINVAL) naming the member. New policy to the caller.
 */
int pol_parse(pol_policy **out, const void *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
/* Read @path (at most POL_MAX_POLICY bytes) and pol_parse() it. */
int pol_load_file(pol_policy **out, const char *path, cista_error **err)
    __attribute__((warn_unused_result));
void pol_free(pol_policy *p);
void pol__freep(pol_policy **p);
#define _cleanup_pol_ __attribute__((cleanup(pol__freep)))

/* Number of containers and the name of the i-th (borrowed from @p). */
size_t pol_container_count(const pol_policy *p);
const char *pol_container_name(const pol_policy *p, size_t index);

/* ---- canonical form and hash ---- */

/*
 * The canonical bytes of a policy document: compact JSON, object keys
 * sorted, ASCII only, one trailing newline. The hash is over the exact file
 * bytes, so only canonical output gives the same hash for the same policy.
 * Caller frees.
 */
char *pol_canonical(const json_t *doc, size_t *out_size);

#define POL_HASH_SIZE 32

/* SHA-256 of the exact bytes (the policy hash). */
void pol_hash(uint8_t out[POL_HASH_SIZE], const void *data, size_t size);

/*
 * The hash and its launch encodings as a JSON object (hex strings):
 *   sha256            the digest
 *   snp_host_data     SNP HOST_DATA, 32 bytes: the digest itself
 *   tdx_mrconfigid    TDX MRCONFIGID, 48 bytes: the digest then 16 zero bytes
 *   tpm_pcr           23, the PCR the digest is extended into
 *   tpm_pcr_extend    the value to extend into that PCR (the digest)
 *   tpm_pcr_value     PCR 23 after one extend from its reset value (32 zero
 *                     bytes): SHA-256(zeros || digest)
 *   sim_host_data     the sim report's host_data, 32 bytes: the digest
 * New reference to the caller.
 */
json_t *pol_hash_encodings(const uint8_t digest[POL_HASH_SIZE]);

/* ---- generation ---- */

/* A secret to inject: KBS resource "kbs:///repo/type/tag" to a file or an env var. */
typedef struct {
    const char *container; /* container name */
    const char *resource;  /* kbs:///repo/type/tag */
    const char *path;      /* absolute file path, or NULL */
    const char *env;       /* env var name, or NULL (exactly one of path/env) */
} pol_gen_secret;

/* An encrypted volume and where it is mounted (see pol_volume for the fields). */
typedef struct {
    const char *container;
    const char *name;
    const char *mount_point;
    const char *key;      /* kbs:///repo/type/tag (required) */
    const char *anchor;   /* kbs:///repo/type/tag or NULL */
    const char *rollback; /* "strict" | "reset" | "off" or NULL: the default */
} pol_gen_volume;

typedef struct {
    /* Image references for img_open(), each optionally "YAMLIMAGE=REF" to say
     * which image named in the YAML it provides. Borrowed. */
    const char *const *images;
    size_t image_count;
    /* Kubernetes YAML stream (may be NULL); borrowed. */
    const char *pod_yaml;
    size_t pod_yaml_size;
    /* Commands allowed for exec, each an argv (NULL-terminated). Borrowed. */
    const char *const *const *exec;
    size_t exec_count;
    bool deny_logs;
    const pol_gen_secret *secrets;
    size_t secret_count;
    const pol_gen_volume *volumes;
    size_t volume_count;
    /* The KBS to pin (policy "kbs"): URL, and the PEM of its CA (may be NULL). Borrowed. */
    const char *kbs_url;
    const char *kbs_ca;
    /* Leave the image rule out instead of failing when no image matches a
     * YAML container (its pol_allow_image() then always denies). For tests
     * and fuzzing; the CLI never sets it. */
    bool no_image_pinning;
} pol_gen_opts;

/*
 * Generate a policy. *out is the policy document (new reference); when
 * @out_yaml is not NULL and opts->pod_yaml was given, *out_yaml is the YAML
 * stream with every workload annotated for cista (runtimeClassName cista,
 * io.cista.policy = base64 of the canonical policy, io.cista.policy-hash =
 * its SHA-256 in hex), caller frees. Same inputs, same output bytes.
 */
int pol_gen(json_t **out, char **out_yaml, const pol_gen_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- enforcement ---- */

/*
 * A decision. @rule is a stable identifier of the check that decided
 * ("process.env", "mounts", ...; see docs/policy.md), @field the offending
 * field of the request ("process.env[3]") or "" and @reason a sentence for
 * humans. The strings are owned by the decision: pol_decision_clear().
 */
typedef struct {
    bool allowed;
    char *rule;
    char *field;
    char *reason;
} pol_decision;

void pol_decision_clear(pol_decision *d);
#define _cleanup_decision_ __attribute__((cleanup(pol_decision_clear)))

/*
 * Every pol_allow_*() overwrites *out without freeing it (pol_decision_clear()
 * a decision before reusing it) and returns
 * 0 when the operation is allowed and -EACCES when it is denied. The
 * request bytes are untrusted; malformed requests are denied, never an
 * error. @container names the policy container; NULL means "the only one"
 * (and, for create, the config's io.kubernetes.cri.container-name
 * annotation first).
 */

/* Container creation from an OCI runtime config.json. */
int pol_allow_create(pol_decision *out, const pol_policy *p, const char *container,
                     const char *config, size_t config_size);
/* Exec of an OCI process (process.json, as `runc exec --process`). */
int pol_allow_exec(pol_decision *out, const pol_policy *p, const char *container,
                   const char *process, size_t process_size);
/* Reading the container's stdout/stderr from the host. */
int pol_allow_logs(pol_decision *out, const pol_policy *p, const char *container);
/* Sending @sig to the container's processes. */
int pol_allow_signal(pol_decision *out, const pol_policy *p, const char *container, int sig);
/* Copying a file from the host into the container at @path. */
int pol_allow_copy(pol_decision *out, const pol_policy *p, const char *container, const char *path);
/* Mounting the encrypted volume @name at @dest. */
int pol_allow_volume_mount(pol_decision *out, const pol_policy *p, const char *container,
                           const char *name, const char *dest);
/* Running an image: its manifest digest and its layer diff_ids, bottom first. */
int pol_allow_image(pol_decision *out, const pol_policy *p, const char *container,
                    const char *manifest_digest, const char *const *diff_ids, size_t count);

/* The secrets of a container, for the runtime to fetch and inject. */
typedef struct {
    const char *resource; /* kbs:///repo/type/tag */
    const char *path;     /* or NULL */
    const char *env;      /* or NULL */
} pol_secret;

/* *out borrows from @p; -ENOENT when there is no such container. */
int pol_get_secrets(const pol_secret **out, size_t *out_count, const pol_policy *p,
                    const char *container, cista_error **err) __attribute__((warn_unused_result));

/*
 * An encrypted volume of a container: the runtime mounts it at @mount_point
 * with the master key from KBS resource @key (32 raw bytes or 64 hex digits)
 * and, when @anchor is set, keeps its newest {generation, root} in that KBS
 * counter; @rollback says what an older copy of the volume gets.
 */
typedef struct {
    const char *name;        /* [A-Za-z0-9][A-Za-z0-9_.-]*, at most POL_MAX_VOLUME_NAME */
    const char *mount_point; /* normalised absolute path */
    const char *key;         /* kbs:///repo/type/tag */
    const char *anchor;      /* kbs:///repo/type/tag, or NULL: no rollback anchor */
    const char *rollback;    /* "strict" | "reset" | "off"; the default filled in */
} pol_volume;

#define POL_MAX_VOLUME_NAME 64

/*
 * The key broker the policy pins ("kbs": {"url", "ca"}), if any: 1 and its URL (no trailing
 * slash) and CA bundle (PEM, or NULL: the system trust store), 0 when the policy names none
 * (the host's choice is used). Borrowed from @p.
 */
int pol_get_kbs(const char **out_url, const char **out_ca, const pol_policy *p);

/* The volumes of a container. *out borrows from @p; -ENOENT when there is no such container. */
int pol_get_volumes(const pol_volume **out, size_t *out_count, const pol_policy *p,
                    const char *container, cista_error **err) __attribute__((warn_unused_result));

/*
 * Lexically normalise an absolute path from an untrusted request: collapse
 * "//" and "/./", drop a trailing "/". Returns a new string, or NULL when the
 * path is not absolute, is empty, holds a NUL, or has a ".." component (a
 * path that climbs is never compared, it is refused). Caller frees.
 */
char *pol_path_normalize(const char *path);

#endif
