/*
 * runtime.h - cista as an OCI runtime: the container lifecycle that
 * containerd's runc shim, podman/conmon and `cista run` drive (create,
 * start, state, kill, delete, exec, pause, resume, ps, list, features,
 * spec), with container setup delegated to a proven OCI runtime (runc by
 * default; configurable). docs/runtime.md describes the layout.
 *
 * A bundle whose config.json carries the io.cista.* annotations is
 * confidential: create runs the agent's launch flow (src/agent/agent.h:
 * policy binding, attestation, keys, decrypt and unpack into the sandbox's
 * tmpfs, config rebuilt from image + policy and checked) and hands the
 * generated bundle to the delegate; the host bundle's rootfs is ignored.
 * Later verbs ask the agent first (exec, kill). A bundle without them runs
 * as a plain container only when the configuration says "allow_plain".
 *
 * State lives under ROOT/ID (ROOT from --root, default /run/cista): the
 * host-visible state.json (no secrets) and, for confidential containers,
 * ROOT/ID/tee, the sandbox tmpfs holding the rootfs, the generated bundle,
 * the delegate's own state and the container log.
 *
 * Thread-safety: none needed; each call is one CLI invocation. Calls on the
 * same container from several processes are serialised by a lock file.
 *
 * Trust: the caller (the container manager) and the bundle are host input,
 * hence untrusted for confidential containers: the agent decides. The
 * delegate runtime binary is trusted (it is part of the TCB of the sandbox).
 * The delegate always runs with fds 0-2 only (close_range), never inside the
 * container's mount namespace as cista.
 */
#ifndef CISTA_RUNTIME_H
#define CISTA_RUNTIME_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "agent/agent.h"
#include "util/err.h"

#define RT_DEFAULT_ROOT "/run/cista"
#define RT_DEFAULT_CONFIG "/etc/cista/runtime.json"
#define RT_MAX_ID 128

/* Annotations that request a confidential container. */
#define RT_ANN_IMAGE "io.cista.image"
#define RT_ANN_POLICY "io.cista.policy"           /* base64 of the policy bytes */
#define RT_ANN_POLICY_FILE "io.cista.policy-file" /* or a path to them */
#define RT_ANN_POLICY_HASH "io.cista.policy-hash" /* the launch-bound hash (hex) */
#define RT_ANN_KBS "io.cista.kbs"
#define RT_ANN_TEE "io.cista.tee"
#define RT_ANN_CONTAINER "io.cista.container"
#define RT_ANN_IMAGE_KEY "io.cista.image-key" /* KBS resource of the image key */

/* ---- configuration (ROOT-independent; file + command line) ---- */

typedef struct {
    char *root;          /* --root */
    char *log_file;      /* --log (also passed to the delegate) */
    bool log_json;       /* --log-format json */
    bool systemd_cgroup; /* --systemd-cgroup (accepted; cgroupfs is used: no systemd here) */
    bool debug;
    /* from the configuration file */
    bool allow_plain; /* run bundles without io.cista.* annotations */
    char *delegate;   /* "runc", "crun" or a path */
    char *tee;        /* default TEE: "auto", "sim", "tpm", "snp", "tdx" */
    char *sim_state_dir;
    char *tpm_tcti;
    char *tpm_eventlog;
    char *tmpfs_size;
    /* each sandbox's own copy of the image instead of the shared store (image_store: "private") */
    bool private_rootfs;
    char *kbs_cert;
    char **dev_key_files; /* development key source (INSECURE) */
    size_t dev_key_count;
    char **dev_secrets; /* "kbs:///r/t/t=FILE" */
    size_t dev_secret_count;
} rt_config;

/*
 * Load the configuration: @path, else $CISTA_RUNTIME_CONFIG, else
 * RT_DEFAULT_CONFIG when it exists, else the defaults (allow_plain false,
 * delegate "runc", tee "auto"). Unknown keys are errors. New config.
 */
int rt_config_load(rt_config **out, const char *path, cista_error **err)
    __attribute__((warn_unused_result));
/* Parse @size bytes of configuration JSON over the defaults. */
int rt_config_parse(rt_config **out, const char *data, size_t size, cista_error **err)
    __attribute__((warn_unused_result));
void rt_config_free(rt_config *c);
void rt__config_freep(rt_config **c);
#define _cleanup_rt_config_ __attribute__((cleanup(rt__config_freep)))

/* ---- confidential request, from annotations or from `cista run` ---- */

typedef struct {
    char *image;  /* img_open() reference */
    char *policy; /* policy bytes */
    size_t policy_size;
    bool has_hash;
    unsigned char policy_hash[32]; /* launch-bound hash (io.cista.policy-hash) */
    char *kbs;                     /* KBS URL or NULL */
    char *tee;                     /* or NULL: the configuration's */
    char *container;               /* policy container name or NULL */
    char *image_key;               /* KBS resource of the image key or NULL */
} rt_confidential;

/*
 * Read the io.cista.* annotations of @config (an OCI config.json object).
 * *out_present is false (and *out untouched) when there are none. Policy
 * files are read with a size limit; bad values are -EINVAL naming the
 * annotation.
 */
int rt_confidential_from_annotations(rt_confidential *out, bool *out_present, const json_t *config,
                                     cista_error **err) __attribute__((warn_unused_result));
void rt_confidential_clear(rt_confidential *c);

/* ---- lifecycle ---- */

typedef struct {
    const char *pid_file;       /* --pid-file (passed to the delegate) */
    const char *console_socket; /* --console-socket */
    /* `cista run`: no bundle; these replace the bundle's config.json */
    const rt_confidential *confidential;
    const char *const *args; /* NULL-terminated or NULL */
    const char *const *env;
    bool host_network;
    const char *const *key_files; /* development key source */
    size_t key_count;
    const char *const *secret_specs;
    size_t secret_count;
    /*
     * `cista run --volume NAME=DIR[:MOUNTPOINT]`: encrypted volumes by name (a bundle's bind
     * mounts at a policy volume's mount point ask for volumes too). Borrowed.
     */
    const agent_volume_request *volumes;
    size_t volume_count;
    int stdio_fd;        /* >= 0: the container's stdout/stderr go there */
    bool to_sandbox_log; /* confidential: stdout/stderr to the log in the sandbox */
    /*
     * Non-NULL: create, start and wait in one delegate call (`runc run`),
     * spawned and not waited for: *run_pid is the delegate's pid (a child of
     * the caller; its exit status is the container's). `cista run` uses it.
     */
    pid_t *run_pid;
} rt_create_opts;

/* True when @id is a valid container id ([A-Za-z0-9][A-Za-z0-9_.+-]*, < RT_MAX_ID). */
bool rt_id_valid(const char *id);

/*
 * Create container @id from @bundle (NULL with opts->confidential for
 * `cista run`). Confidential: runs the agent's launch flow; plain: needs
 * allow_plain. Then `DELEGATE create`. Nothing is left behind on failure.
 */
int rt_create(const rt_config *c, const char *id, const char *bundle, const rt_create_opts *opts,
              cista_error **err) __attribute__((warn_unused_result));
int rt_start(const rt_config *c, const char *id, cista_error **err)
    __attribute__((warn_unused_result));
/* runc-compatible state JSON (new reference). */
int rt_state(json_t **out, const rt_config *c, const char *id, cista_error **err)
    __attribute__((warn_unused_result));
/* Send @sig (policy-checked for confidential containers). */
int rt_kill(const rt_config *c, const char *id, int sig, bool all, cista_error **err)
    __attribute__((warn_unused_result));
int rt_delete(const rt_config *c, const char *id, bool force, cista_error **err)
    __attribute__((warn_unused_result));

typedef struct {
    const char *process_file; /* --process FILE (OCI process JSON), or NULL: args */
    const char *const *args;  /* when no process file */
    const char *const *env;
    const char *cwd;
    bool tty;
    bool detach;
    const char *pid_file;
    const char *console_socket;
} rt_exec_opts;

/*
 * Exec a process (policy-checked for confidential containers). Without
 * detach, *out_status is the process's exit status. @out_status may be NULL.
 */
int rt_exec(int *out_status, const rt_config *c, const char *id, const rt_exec_opts *o,
            cista_error **err) __attribute__((warn_unused_result));
int rt_pause(const rt_config *c, const char *id, bool pause, cista_error **err)
    __attribute__((warn_unused_result));
/*
 * New cgroup limits: @resources is an OCI LinuxResources JSON document (what kubelet's in-place
 * resize and CPU manager send through containerd), handed to the delegate's `update`. Only
 * limits change; the host sets cgroups either way, so no policy rule gates it.
 */
int rt_update(const rt_config *c, const char *id, const char *resources, size_t size,
              cista_error **err) __attribute__((warn_unused_result));
/* The container's processes: JSON array of pids (new reference). */
int rt_ps(json_t **out, const rt_config *c, const char *id, cista_error **err)
    __attribute__((warn_unused_result));
/* Every container under ROOT with its state (new reference: array). */
int rt_list(json_t **out, const rt_config *c, cista_error **err)
    __attribute__((warn_unused_result));
/* Output of the container (policy "logs"); new buffer. */
int rt_logs(char **out, size_t *out_size, const rt_config *c, const char *id, cista_error **err)
    __attribute__((warn_unused_result));
/* Attestation claims, timings and mode of a container (new reference). */
int rt_inspect(json_t **out, const rt_config *c, const char *id, cista_error **err)
    __attribute__((warn_unused_result));
/* The host pid of the container's init, from the delegate's state. */
int rt_init_pid(pid_t *out, const rt_config *c, const char *id, cista_error **err)
    __attribute__((warn_unused_result));

/* `features` output: the delegate's, plus cista's annotations (new reference). */
json_t *rt_features(const rt_config *c);
/* Write a default config.json into @bundle (the delegate's, rlimits clamped). */
int rt_spec(const rt_config *c, const char *bundle, cista_error **err)
    __attribute__((warn_unused_result));

/* ---- delegate (exposed for tests) ---- */

/* Start the delegate as rt__delegate() does, without waiting: *out is its pid. */
int rt__delegate_spawn(pid_t *out, const rt_config *c, const char *delegate_root,
                       const char *const *argv, int out_fd, cista_error **err)
    __attribute__((warn_unused_result));

/*
 * Run the delegate runtime with @argv (argv[0] ignored: the configured
 * delegate) and global options for state directory @delegate_root. Only fds
 * 0-2 survive into it (close_range); @out_fd >= 0 replaces fds 1 and 2.
 * With @capture, its stdout is collected into *capture (new buffer).
 * Returns its exit status (>= 0) or a negative error.
 */
int rt__delegate(const rt_config *c, const char *delegate_root, const char *const *argv, int out_fd,
                 char **capture, cista_error **err) __attribute__((warn_unused_result));

#endif
