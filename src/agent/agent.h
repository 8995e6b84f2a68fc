/*
 * agent.h - the in-TEE launch flow of a confidential container and the
 * policy-gated agent API (docs/runtime.md, DESIGN.md §2).
 *
 * A sandbox is one confidential container: its TEE memory (a private tmpfs
 * the agent mounts and owns), the policy it runs under, the decrypted image,
 * the generated OCI bundle and the container's log. agent_sandbox_launch()
 * runs the launch flow in this order and stops at the first refusal:
 *   1. parse the policy and check that its SHA-256 equals the value bound in
 *      this TEE at launch (sim: the report's host_data; tpm: extended into
 *      PCR 23 first, then read back from a quote and its event log;
 *      snp/tdx: HOST_DATA / MRCONFIGID) - nothing else runs before this;
 *   2. attestation with an ephemeral P-256 key through the key source (KBS),
 *      then the image keys and the secrets the policy names;
 *   3. decrypt, verify and unpack the image into TEE memory (the shared
 *      image store, or the tmpfs), after checking its manifest digest and
 *      every diff_id against the policy;
 * then agent_sandbox_create_config() builds the container's OCI config from
 * the image config and the policy, takes from the host's request only what
 * the policy allows (pol_allow_create()), mounts the rootfs (an overlay of
 * the shared tree, or a read-only bind of it when the root is read-only and
 * nothing needs writing into it), injects the secrets (files of mode 0400 in
 * the rootfs, or env) and writes the bundle into the tmpfs. Later operations
 * (exec, logs, signals, copy) go through agent_allow_*(), which ask the
 * policy and log every denial with its rule.
 *
 * The agent never starts processes: running the bundle is the runtime's job
 * (src/runtime), so this API can later become a vsock protocol between a
 * host shim and an agent inside a confidential VM without redesign.
 *
 * Thread-safety: an agent_sandbox belongs to one thread at a time. Key
 * sources are not shared between threads.
 *
 * Trust: the host is untrusted. Everything in agent_host_request (the OCI
 * config.json a container manager wrote, exec process.json, paths, signal
 * numbers) is parsed with hard size limits and checked against the policy;
 * the policy itself arrives through the host too and is trusted only after
 * its hash matched the launch-bound value. The sandbox directory on the host
 * holds nothing secret: keys, secrets, the plaintext rootfs, the generated
 * config (it may carry secret env values) and the container log stay in the
 * tmpfs. In the sim TEE that tmpfs is ordinary host memory: sim protects
 * nothing and every sim path says so in the log.
 */
#ifndef CISTA_AGENT_H
#define CISTA_AGENT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image/image.h"
#include "policy/policy.h"
#include "util/err.h"

/* Hard limits on host input (bytes). */
#define AGENT_MAX_CONFIG POL_MAX_CONFIG
#define AGENT_MAX_SECRET (1u << 20)
#define AGENT_MAX_COPY (64u << 20)

/* Names of the files the agent keeps in the sandbox's TEE memory (tmpfs). */
#define AGENT_TEE_DIR "tee"
#define AGENT_ROOTFS "rootfs"
#define AGENT_CONFIG "config.json"
#define AGENT_POLICY "policy.json"
#define AGENT_LOG "container.log"
#define AGENT_RUNC_ROOT "runc"
/* DIR/tee/kbs-ca.pem: the CA of the KBS the policy pins (for the volume daemons) */
#define AGENT_KBS_CA "kbs-ca.pem"
/* DIR/tee/volumes/NAME: the decrypted volume NAME (FUSE); NAME.log: its daemon's log */
#define AGENT_VOLUMES "volumes"
/* DIR/tee/volumes.json: the volumes mounted for this sandbox (what delete unmounts) */
#define AGENT_VOLUMES_STATE "volumes.json"
#define AGENT_VOLUME_KEY_SIZE 32

/* ---- key sources: where image keys and secrets come from ---- */

typedef struct agent_keysource agent_keysource;

/* What the TEE is and how to reach it, for attestation. Strings borrowed. */
typedef struct {
    const char *tee;           /* "sim", "tpm", "snp", "tdx" (resolved, never "auto") */
    const char *sim_state_dir; /* NULL: ev_sim_default_dir() */
    const char *tpm_tcti;      /* NULL: $CISTA_TPM_TCTI or the device */
    const char *tpm_eventlog;  /* NULL: the evidence module's default */
    /*
     * The policy hash the launcher bound (32 bytes): sim's host_data register
     * (the launcher's part), the value tpm expects in its policy event; NULL =
     * the launcher bound the hash of the policy handed to the agent. snp/tdx
     * read the hardware's own HOST_DATA / MRCONFIGID instead.
     */
    const uint8_t *host_data;
} agent_tee;

typedef struct {
    const char *name; /* "dev", "kbs", "none" */
    /* true when keys come from local files (development only, logged loudly) */
    bool insecure;
    /*
     * Attest @tee to the key source with @pubkey (the ephemeral key; its
     * public half is bound into the evidence). *out_claims (may be set to
     * NULL) are the claims the source saw, for display. Called once before
     * any get_*.
     */
    int (*attest)(agent_keysource *ks, const agent_tee *tee, EVP_PKEY *pubkey, json_t **out_claims,
                  cista_error **err);
    /* Private keys for the image, from resource @resource (kbs:///r/t/t). New keys. */
    int (*get_image_keys)(agent_keysource *ks, const char *resource, EVP_PKEY ***out,
                          size_t *out_count, cista_error **err);
    /* Secret bytes of @resource (new buffer; cleanse before free). */
    int (*get_secret)(agent_keysource *ks, const char *resource, uint8_t **out, size_t *out_size,
                      cista_error **err);
    void (*free)(agent_keysource *ks);
} agent_keysource_ops;

struct agent_keysource {
    const agent_keysource_ops *ops;
    void *impl;
};

/*
 * The developer key source: image private keys from PEM files and secrets
 * from local files, "kbs:///repo/type/tag=/path/file" (or "NAME=FILE" where
 * NAME is the resource). INSECURE: for development without a KBS; logged as
 * such on every use. Strings are copied. New source to the caller.
 */
int agent_keysource_dev_new(agent_keysource **out, const char *const *key_files, size_t key_count,
                            const char *const *secret_specs, size_t secret_count, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * The KBS key source: RCAR attestation with the KBS at @url (CoCo KBS
 * protocol), then image keys and secrets as KBS resources. @cert may name a
 * CA bundle for https (NULL: system store). -ENOTSUP when this build has no
 * KBS client. New source to the caller.
 */
int agent_keysource_kbs_new(agent_keysource **out, const char *url, const char *cert,
                            cista_error **err) __attribute__((warn_unused_result));
/* A source with no keys and no secrets (plaintext images, no secrets). */
agent_keysource *agent_keysource_none_new(void);
void agent_keysource_free(agent_keysource *ks);
void agent__keysource_freep(agent_keysource **ks);
#define _cleanup_keysource_ __attribute__((cleanup(agent__keysource_freep)))

/* The default image key resource of a policy container: kbs:///default/image-key/NAME. */
char *agent_image_key_resource(const char *container);

/* ---- sandboxes ---- */

typedef struct agent_sandbox agent_sandbox;

/* Time spent per step, in milliseconds (for `cista run --json` and bench/). */
typedef struct {
    double bind, attest, keys, unpack, config;
} agent_timings;

typedef struct {
    const char *dir;    /* sandbox directory (created 0700 if missing); the tmpfs goes
                           to DIR/tee */
    const char *policy; /* policy bytes (borrowed) */
    size_t policy_size;
    const char *container;          /* policy container name; NULL = the only one */
    const char *image_ref;          /* img_open() reference of the (encrypted) image */
    const char *image_key_resource; /* NULL: agent_image_key_resource(container) */
    agent_tee tee;                  /* the TEE (tee.host_data: the launch-bound value for sim) */
    agent_keysource *keys;          /* borrowed */
    /*
     * The host's request, when known at launch: checked against the policy
     * (as agent_sandbox_create_config() will) right after the image, before
     * attestation, so a refused request gets no key released. May be NULL.
     */
    const struct agent_host_request *request;
    const char *tmpfs_size; /* tmpfs "size=" value, NULL = kernel default */
    /*
     * Unpack the image into this sandbox's own tmpfs instead of sharing one
     * tree per image through an overlay (rootfs.c): image-sized TEE memory
     * per container, but file lookups without overlayfs in the way.
     */
    bool private_rootfs;
    bool no_tmpfs; /* unit tests only: a plain directory instead of a tmpfs */
    /*
     * Encrypted volumes: the KBS of this launch and the CA its certificate chains to (the
     * rollback anchors are counters there; NULL: no KBS, and a volume with an anchor is
     * refused), and the cista binary whose `volume mount` serves them (NULL: /proc/self/exe).
     */
    const char *kbs_url;
    const char *kbs_ca;
    const char *volume_exe;
} agent_launch_opts;

/*
 * Run launch steps 1-3 (see above) for a new sandbox in opts->dir. On
 * success the tmpfs holds the policy, the sandbox references the verified
 * tree in the image store (or holds its own copy at tee/rootfs with
 * private_rootfs) and the fetched secrets are in memory only, not yet
 * injected; the shared tree is mounted at tee/rootfs by
 * agent_sandbox_create_config(), which knows the final config. On failure
 * nothing of the image is left: the tmpfs is unmounted. New sandbox to the
 * caller.
 * Codes: -EPERM policy hash not bound, -EACCES policy denial, -EBADMSG
 * image verification, -ENOKEY no key opens the image, others I/O.
 */
int agent_sandbox_launch(agent_sandbox **out, const agent_launch_opts *opts, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Reopen the sandbox in @dir for a later operation (exec, kill, logs...).
 * Reads the policy from the tmpfs. -ENOENT when there is no such sandbox.
 */
int agent_sandbox_open(agent_sandbox **out, const char *dir, const char *container,
                       cista_error **err) __attribute__((warn_unused_result));
void agent_sandbox_free(agent_sandbox *sb);
void agent__sandbox_freep(agent_sandbox **sb);
#define _cleanup_sandbox_ __attribute__((cleanup(agent__sandbox_freep)))

/*
 * A volume the host asks for by name (`cista run --volume NAME=DIR[:MOUNTPOINT]`): where its
 * ciphertext lives on the host and, optionally, where the host wants it (it must be the
 * policy's mount point). Untrusted; borrowed.
 */
typedef struct {
    const char *name;
    const char *backing;     /* absolute host directory (created when missing) */
    const char *mount_point; /* NULL: the policy's */
} agent_volume_request;

/* The host's request for the container (everything untrusted). Borrowed. */
typedef struct agent_host_request {
    const char *config; /* OCI config.json from the host, or NULL (`cista run`) */
    size_t config_size;
    const char *const *args; /* overriding process args (NULL-terminated), or NULL */
    const char *const *env;  /* extra env "NAME=VALUE" from the host (NULL-terminated), or NULL */
    const char *hostname;    /* or NULL */
    bool host_network;       /* no network namespace (only when config is NULL) */
    bool terminal;           /* only when config is NULL */
    /*
     * Volumes asked for by name. A bind mount of @config whose destination is a policy
     * volume's mount point asks for that volume too (its source is the backing directory, as a
     * Kubernetes PVC or hostPath appears in a bundle). Every policy volume needs one.
     */
    const agent_volume_request *volumes;
    size_t volume_count;
} agent_host_request;

/*
 * Launch step 4: build the OCI config from the image config and the policy
 * plus what the host asks (@req), refuse what the policy does not allow
 * (-EACCES, with the rule in the message and the log), mount the rootfs
 * from the shared tree (see agent_rootfs_bind_blocker()), inject the
 * secrets and write DIR/tee/config.json. *out_bundle (caller frees) is the
 * bundle directory to hand to the OCI runtime (DIR/tee).
 */
int agent_sandbox_create_config(char **out_bundle, agent_sandbox *sb, const agent_host_request *req,
                                cista_error **err) __attribute__((warn_unused_result));

/*
 * Policy-gated operations. Each returns 0 when allowed, -EACCES (with the
 * rule) when denied; every denial is logged.
 */
/*
 * Exec: check @process (OCI process.json from the host; env merged with the
 * container's own, as for create) and write the checked process to a file in
 * the tmpfs; *out_path (caller frees) is that file.
 */
int agent_exec_prepare(char **out_path, agent_sandbox *sb, const char *process, size_t process_size,
                       cista_error **err) __attribute__((warn_unused_result));
int agent_allow_logs(agent_sandbox *sb, cista_error **err) __attribute__((warn_unused_result));
int agent_allow_signal(agent_sandbox *sb, int sig, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Copy @data into the container's rootfs at @path (policy "copy"); mode 0644. -EROFS when the
 * rootfs is the read-only bind of the shared image tree (nothing may write that tree).
 */
int agent_copy_in(agent_sandbox *sb, const char *path, const void *data, size_t size,
                  cista_error **err) __attribute__((warn_unused_result));

/*
 * Tear down: unmount the sandbox's volumes (each with a final durable commit: this waits until
 * its daemon let go of the backing directory; one that does not within a minute is detached
 * lazily and commits when its last user goes), then the tmpfs (the plaintext rootfs and
 * secrets go with it).
 */
int agent_sandbox_destroy(const char *dir, cista_error **err) __attribute__((warn_unused_result));

/* ---- accessors (borrowed from the sandbox) ---- */

const char *agent_sandbox_tee_dir(const agent_sandbox *sb);
/*
 * The sandbox's tee, opened without following a symlink and checked to be the tmpfs cista
 * mounted on the sandbox directory (borrowed; valid while @sb lives): files cista makes there
 * (the container's log) are opened relative to it, never by a path through the host's root.
 */
int agent_sandbox_tee_fd(const agent_sandbox *sb);
const char *agent_sandbox_container(const agent_sandbox *sb);
const agent_timings *agent_sandbox_timings(const agent_sandbox *sb);
/* Claims seen during attestation (may be NULL). */
const json_t *agent_sandbox_claims(const agent_sandbox *sb);
/* SHA-256 of the policy, hex. */
const char *agent_sandbox_policy_hash(const agent_sandbox *sb);
/* Whether the policy lets the host read the container's output. */
bool agent_sandbox_logs_allowed(const agent_sandbox *sb);
/* Whether the key source was the insecure development one. */
bool agent_sandbox_dev_keys(const agent_sandbox *sb);
/*
 * What the rootfs is: "overlay" (of the shared image tree), "readonly-bind" (of that tree),
 * "private" (the sandbox's own copy), or NULL (not mounted yet; a sandbox made before this was
 * recorded). A static string.
 */
const char *agent_sandbox_rootfs(const agent_sandbox *sb);

/* ---- building blocks (exposed for tests/unit/test_runtime.c) ---- */

/*
 * Build the container config (as a JSON object) from the verified image's
 * config @ic, the policy container's rules @rules (its object in the policy
 * document) and the host's request, without checking it against the policy.
 * @rootfs is the absolute rootfs path. Inputs borrowed; new reference.
 */
int agent_build_config(json_t **out, const img_config *ic, const json_t *rules,
                       const agent_host_request *req, const char *rootfs, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Clamp every process.rlimits entry of @config to what this process may
 * set: hard <= the current hard limit, soft <= hard. Entries for unknown
 * resources are dropped. Returns the number of entries changed.
 */
int agent_clamp_rlimits(json_t *config);
/*
 * Replace every RLIMIT_CORE entry of the rlimits array @rlimits by one of 0/0: a core dump of a
 * confidential workload would carry its memory out of the TEE (on a host whose core_pattern is a
 * pipe, to a host program). @rlimits is borrowed and changed in place; -EINVAL when it is not
 * an array.
 */
int agent_force_no_core(json_t *rlimits) __attribute__((warn_unused_result));
/*
 * Parse an OCI document of the host (config.json, process.json; at most AGENT_MAX_CONFIG bytes)
 * as js_parse_object() does, except that an integer above INT64_MAX, up to UINT64_MAX, is read
 * as its two's complement instead of refused: the OCI's uint64 members (rlimits, where 2^64-1 is
 * "unlimited", seccomp argument values) can hold one, and jansson integers are signed. Readers of
 * those members take the value back unsigned and agent_oci_dump_*() write it unsigned; in a
 * signed member it is negative, as the checks see it. @data borrowed; new reference in *out.
 */
int agent_parse_oci(json_t **out, const char *data, size_t size, const char *what,
                    cista_error **err) __attribute__((warn_unused_result));
/*
 * Compact JSON of an OCI config (or of a process, for `exec`) whose uint64 members (process
 * rlimits, seccomp argument values) are written unsigned, as runc and crun read them (-1 is
 * refused there; 18446744073709551615 is "unlimited"). Caller frees, after cleansing: the text
 * may hold secrets.
 */
char *agent_oci_dump_config(const json_t *config);
char *agent_oci_dump_process(const json_t *process);
/*
 * Why the container of the final OCI @config (policy container @rules) cannot run on a
 * read-only bind of the shared image tree @treefd instead of an overlay, or NULL when it can:
 * root.readonly is true and the policy asks for it (read_only_rootfs), no secret file goes into
 * the rootfs (@secret_files false), the policy allows no copy into it, the tree holds no FIFO,
 * socket or device node (@special_files false: shared between containers even read-only), no
 * capability set of the process or of the policy holds CAP_SYS_ADMIN (it could remount the
 * tree writable for every container of the image) or CAP_DAC_READ_SEARCH (open_by_handle_at
 * reaches the whole store through the bind), and every mount point and the cwd that is
 * not below an earlier mount exists in the tree, resolved in it as runc and crun resolve them
 * (they would create a missing one: EROFS). A new string for the log; borrowed inputs (rootfs.c).
 */
char *agent_rootfs_bind_blocker(const json_t *config, const json_t *rules, bool secret_files,
                                bool special_files, int treefd);

/* ---- encrypted volumes (volumes.c; docs/runtime.md "Volumes") ---- */

/*
 * Parse "NAME=DIR[:MOUNTPOINT]" (`cista run --volume`) in place: @spec is modified and *out
 * points into it. DIR must not be empty; MOUNTPOINT, when given, starts with "/" (the last
 * ":/" splits, so DIR may hold ':' but not ":/"). -EINVAL (usage) otherwise.
 */
int agent_volume_request_parse(agent_volume_request *out, char *spec, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * A volume master key from the bytes of KBS resource @resource (named in errors): exactly 32
 * raw bytes, or 64 hex digits with an optional trailing newline. -EINVAL otherwise. @data is
 * borrowed; no copy of the key is left behind but @out.
 */
int agent_volume_key_parse(uint8_t out[AGENT_VOLUME_KEY_SIZE], const void *data, size_t size,
                           const char *resource, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * Which volumes container @container of @p gets, from the host's request @req: its explicit
 * volumes and the bind mounts of its config.json at a volume's mount point. *out is a JSON
 * array of {"name", "mount_point", "backing", "read_only"} (new reference) in the policy's
 * order. Refused (-EACCES, logged with rule "volumes"): a volume the policy does not declare,
 * one at another mount point, one asked for twice, a mount at a volume's mount point that is
 * not a bind, a policy volume without a backing directory, a backing directory that is not an
 * absolute path. Malformed host input is -EINVAL.
 */
int agent_volume_plan(json_t **out, const pol_policy *p, const char *container,
                      const agent_host_request *req, cista_error **err)
    __attribute__((warn_unused_result));

#endif
