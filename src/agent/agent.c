/*
 * agent.c - the launch flow (bind check, attestation, keys, unpack into the
 * sandbox's tmpfs, config, secrets) and the policy-gated operations.
 */
#include "agent/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_int.h"
#include "crypto/crypto.h"
#include "evidence/ev.h"
#include "image/image.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/path.h"
#include "util/util.h"

#define AGENT_STATE "agent.json"

typedef struct {
    char *resource;
    char *path; /* in the container, or NULL */
    char *env;  /* variable name, or NULL */
    uint8_t *data;
    size_t size;
} agent_secret;

struct agent_sandbox {
    char *dir;
    char *tee_dir; /* DIR/tee: for messages and for what other processes are handed */
    /*
     * DIR and its tee, opened once without following a symlink, the tee checked to be the tmpfs
     * cista mounted directly on DIR (tee_open()); everything in the tee goes through tee_fd.
     * -1 when not open.
     */
    int dir_fd;
    int tee_fd;
    char *container;
    char *policy_hash;   /* hex */
    json_t *policy_doc;  /* the (hash-checked) policy document */
    const json_t *rules; /* its container object, borrowed from policy_doc */
    pol_policy *pol;
    img_image *img; /* during launch only */
    json_t *claims;
    agent_timings t;
    bool dev_keys;
    bool logs_allowed;
    agent_secret *secrets;
    size_t secret_count;
    json_t *secret_envs;         /* names of env vars that hold secrets (not in exec checks) */
    agent__volume_key *vol_keys; /* released at launch, used by create_config */
    size_t vol_key_count;
    agent__rootfs_kind rootfs; /* set when tee/rootfs is mounted; kept in agent.json */
    /* what the volume daemons need (launch only) */
    char *kbs_url, *kbs_ca, *volume_exe, *tee_name, *sim_state_dir, *tpm_tcti;
};

static double ms_since(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (double)(b.tv_sec - a->tv_sec) * 1e3 + (double)(b.tv_nsec - a->tv_nsec) / 1e6;
}

int agent__deny(cista_error **err, const pol_decision *d, const char *what)
{
    log_warn("policy denied %s: %s (rule %s%s%s)", what, d->reason ? d->reason : "denied",
             d->rule ? d->rule : "?", d->field && *d->field ? ", field " : "",
             d->field ? d->field : "");
    return err_set(err, -EACCES, "policy denies %s: %s (rule %s%s%s)", what,
                   d->reason ? d->reason : "denied", d->rule ? d->rule : "?",
                   d->field && *d->field ? ", field " : "", d->field ? d->field : "");
}

/* A refusal that is not a pol_decision: logged like agent__deny()'s, and returned as @code. */
static int deny_msg(cista_error **err, int code, const char *fmt, ...) CISTA_PRINTF(3, 4);
static int deny_msg(cista_error **err, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_warn("policy denied: %s", msg);
    return err_set(err, code, "%s", msg);
}

/* ---- lifecycle ---- */

void agent_sandbox_free(agent_sandbox *sb)
{
    if (!sb)
        return;
    for (size_t i = 0; i < sb->secret_count; i++) {
        crypto_free_secret(sb->secrets[i].data, sb->secrets[i].size);
        free(sb->secrets[i].resource);
        free(sb->secrets[i].path);
        free(sb->secrets[i].env);
    }
    free(sb->secrets);
    json_decref(sb->secret_envs);
    agent__volume_keys_free(sb->vol_keys, sb->vol_key_count);
    free(sb->kbs_url);
    free(sb->kbs_ca);
    free(sb->volume_exe);
    free(sb->tee_name);
    free(sb->sim_state_dir);
    free(sb->tpm_tcti);
    img_free(sb->img);
    pol_free(sb->pol);
    json_decref(sb->policy_doc);
    json_decref(sb->claims);
    if (sb->tee_fd >= 0)
        close(sb->tee_fd);
    if (sb->dir_fd >= 0)
        close(sb->dir_fd);
    free(sb->dir);
    free(sb->tee_dir);
    free(sb->container);
    free(sb->policy_hash);
    free(sb);
}

void agent__sandbox_freep(agent_sandbox **sb)
{
    agent_sandbox_free(*sb);
}

const char *agent_sandbox_tee_dir(const agent_sandbox *sb)
{
    return sb->tee_dir;
}
int agent_sandbox_tee_fd(const agent_sandbox *sb)
{
    return sb->tee_fd;
}
const char *agent_sandbox_container(const agent_sandbox *sb)
{
    return sb->container;
}
const agent_timings *agent_sandbox_timings(const agent_sandbox *sb)
{
    return &sb->t;
}
const json_t *agent_sandbox_claims(const agent_sandbox *sb)
{
    return sb->claims;
}
const char *agent_sandbox_policy_hash(const agent_sandbox *sb)
{
    return sb->policy_hash;
}
bool agent_sandbox_logs_allowed(const agent_sandbox *sb)
{
    return sb->logs_allowed;
}
bool agent_sandbox_dev_keys(const agent_sandbox *sb)
{
    return sb->dev_keys;
}

static const char *const g_rootfs_names[] = {
    [AGENT__ROOTFS_OVERLAY] = "overlay",
    [AGENT__ROOTFS_READONLY_BIND] = "readonly-bind",
    [AGENT__ROOTFS_PRIVATE] = "private",
};

const char *agent_sandbox_rootfs(const agent_sandbox *sb)
{
    return (size_t)sb->rootfs < ARRAY_LEN(g_rootfs_names) ? g_rootfs_names[sb->rootfs] : NULL;
}

static agent__rootfs_kind rootfs_kind(const char *name)
{
    for (size_t i = 0; name && i < ARRAY_LEN(g_rootfs_names); i++)
        if (g_rootfs_names[i] && !strcmp(name, g_rootfs_names[i]))
            return (agent__rootfs_kind)i;
    return AGENT__ROOTFS_NONE;
}

/* Parse the policy, resolve the container, keep the document for the rules. */
static int load_policy(agent_sandbox *sb, const char *data, size_t size, const char *container,
                       cista_error **err)
{
    int rc;
    if ((rc = pol_parse(&sb->pol, data, size, err)) < 0)
        return err_wrap(err, "policy");
    if ((rc = js_parse_object(&sb->policy_doc, data, size, POL_MAX_POLICY, "policy", err)) < 0)
        return rc;
    if (!container) {
        if (pol_container_count(sb->pol) != 1)
            return err_set(err, -EINVAL,
                           "the policy has %zu containers; say which one to run "
                           "(annotation io.cista.container or io.kubernetes.cri.container-name)",
                           pol_container_count(sb->pol));
        container = pol_container_name(sb->pol, 0);
    }
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(sb->policy_doc, "containers"), i, c)
    {
        if (!strcmp(json_string_value(json_object_get(c, "name")), container))
            sb->rules = c;
    }
    if (!sb->rules)
        return err_set(err, -EACCES, "the policy has no container \"%s\"", container);
    sb->container = xstrdup(container);
    pol_decision d = {0};
    sb->logs_allowed = pol_allow_logs(&d, sb->pol, sb->container) == 0;
    pol_decision_clear(&d);
    uint8_t h[POL_HASH_SIZE];
    pol_hash(h, data, size);
    sb->policy_hash = hex_encode(h, sizeof(h));
    return 0;
}

static int write_at(int dirfd, const char *name, const void *data, size_t size, mode_t mode,
                    cista_error **err)
{
    return util_write_file_atomic(dirfd, name, data, size, mode, err);
}

/* ---- step 1: the launch binding ---- */

static int check_binding(agent_sandbox *sb, const agent_tee *tee, EVP_PKEY *eph,
                         const uint8_t nonce[32], const uint8_t hash[POL_HASH_SIZE],
                         cista_error **err)
{
    int rc;
    _cleanup_free_ char *want = hex_encode(hash, POL_HASH_SIZE);
    agent_tee t = *tee;
    if (!strcmp(tee->tee, "tpm")) {
        /* Measure before use: the policy's hash goes into PCR 23 before anything else. */
        ev_get_opts go;
        ev_get_opts_init(&go);
        go.tpm_tcti = tee->tpm_tcti;
        go.tpm_eventlog = tee->tpm_eventlog;
        if ((rc = ev_tpm_extend(&go, 23, hash, "cista.policy", "container policy sha256", err)) < 0)
            return err_wrap(err, "extend PCR 23 with the policy hash");
        if (tee->host_data && !crypto_memeq(tee->host_data, hash, POL_HASH_SIZE)) {
            _cleanup_free_ char *got = hex_encode(tee->host_data, POL_HASH_SIZE);
            return err_set(err, -EPERM,
                           "policy hash %s differs from the hash bound at launch %s; the host "
                           "handed this TEE another policy than the one it was launched with",
                           want, got);
        }
    } else if (!strcmp(tee->tee, "sim")) {
        /* the launcher's part: the sim "hardware" reports the value the launcher bound */
        if (!t.host_data)
            t.host_data = hash;
        log_warn("TEE sim is INSECURE: it protects nothing from the host (development only)");
    }
    if ((rc = agent__local_attest(&sb->claims, &t, eph, nonce, err)) < 0)
        return err_wrap(err, "attestation evidence from TEE %s", tee->tee);
    const char *bound = NULL;
    _cleanup_free_ char *want_long = NULL;
    const char *cmp = want;
    if (!strcmp(tee->tee, "sim") || !strcmp(tee->tee, "snp")) {
        bound = json_string_value(json_object_get(sb->claims, "host_data"));
    } else if (!strcmp(tee->tee, "tdx")) {
        bound = json_string_value(json_object_get(sb->claims, "init_data"));
        want_long = xasprintf("%s%032d", want, 0);
        cmp = want_long;
    } else if (!strcmp(tee->tee, "tpm")) {
        json_t *log = json_object_get(json_object_get(sb->claims, "tpm"), "event_log");
        json_t *events = json_object_get(log, "cista_events");
        size_t i;
        json_t *e;
        json_array_foreach(events, i, e)
        {
            const char *type = json_string_value(json_object_get(e, "type"));
            const char *dg = json_string_value(json_object_get(e, "digest"));
            if (type && dg && !strcmp(type, "cista.policy") && !strcmp(dg, want) &&
                json_integer_value(json_object_get(e, "pcr")) == 23)
                bound = dg;
        }
        if (!bound)
            return err_set(err, -EPERM,
                           "the TPM quote's verified event log has no cista.policy event for "
                           "policy %s in PCR 23",
                           want);
    } else {
        return err_set(err, -ENOTSUP, "TEE \"%s\": no launch binding known", tee->tee);
    }
    if (!bound || strcmp(bound, cmp))
        return err_set(err, -EPERM,
                       "policy hash %s differs from the value bound at launch (%s %s); the host "
                       "handed this TEE another policy than the one it was launched with",
                       want, tee->tee, bound ? bound : "(none)");
    log_info("policy %s is bound to this TEE (%s)", want, tee->tee);
    return 0;
}

/* ---- the tmpfs ---- */

int agent__mount_tmpfs(const char *dir, unsigned long flags, const char *opts, cista_error **err)
{
    static bool warned;
    _cleanup_free_ char *o = xasprintf("%s,noswap", opts);
    if (mount("tmpfs", dir, "tmpfs", flags, o) == 0)
        return 0;
    if (errno != EINVAL || mount("tmpfs", dir, "tmpfs", flags, opts) < 0)
        return err_set_sys(err, -errno, "mount a tmpfs on %s", dir);
    if (!warned) {
        warned = true;
        log_warn("this kernel has no tmpfs noswap (Linux >= 6.4): TEE memory (decrypted images, "
                 "secrets) may be swapped out; run without swap or with encrypted swap");
    }
    return 0;
}

/*
 * Open the sandbox directory @dir (ROOT/ID) from a fd of ROOT without following a symlink
 * (making it first with @create): the fd to *out, owned by the caller. ROOT is the host's
 * --root and is taken as it names it; what is checked is that ROOT/ID itself is a directory,
 * never a symlink the host put in its place (-EPERM), so nothing cista makes or reads in the
 * sandbox lands in a directory the host chose. -ENOENT when there is none.
 */
static int sandbox_dir_open(int *out, const char *dir, bool create, cista_error **err)
{
    const char *slash = strrchr(dir, '/');
    if (slash && !slash[1])
        return err_set(err, -EINVAL, "sandbox directory \"%s\" ends in '/'", dir);
    _cleanup_free_ char *root = !slash         ? xstrdup(".")
                                : slash == dir ? xstrdup("/")
                                               : xstrndup(dir, (size_t)(slash - dir));
    const char *id = slash ? slash + 1 : dir;
    _cleanup_close_ int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return err_set_sys(err, -errno, "open %s", root);
    if (create && mkdirat(rootfd, id, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", dir);
    int fd = openat(rootfd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR))
        return err_set(err, -EPERM,
                       "sandbox %s is a symbolic link or not a directory; the host's runtime "
                       "root was tampered with, nothing in it is used",
                       dir);
    if (fd < 0)
        return err_set_sys(err, -errno, "sandbox %s", dir);
    *out = fd;
    return 0;
}

/*
 * Open the tee of the sandbox directory @dirfd (@dir) without following a symlink and check it
 * is the tmpfs cista mounted directly on it (agent__check_mounted_on(): its own mount, whose
 * parent is @dirfd's, the whole of a tmpfs, nodev), so the policy, state and secrets read or
 * written through it are in TEE memory, not in a directory or mount the host put there. With
 * @no_tmpfs (unit tests) a plain directory. The fd to *out, owned by the caller.
 */
static int tee_open(int *out, int dirfd, const char *dir, bool no_tmpfs, cista_error **err)
{
    _cleanup_free_ char *what = xasprintf("%s/%s", dir, AGENT_TEE_DIR);
    _cleanup_close_ int fd =
        openat(dirfd, AGENT_TEE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR))
        return err_set(err, -EPERM,
                       "%s is a symbolic link or not a directory, not the sandbox's TEE memory; "
                       "the host's runtime root was tampered with",
                       what);
    if (fd < 0)
        return err_set_sys(err, -errno, "open %s", what);
    int r;
    if (!no_tmpfs && (r = agent__check_mounted_on(dirfd, fd, "tmpfs", what, err)) < 0)
        return r;
    *out = steal_fd(&fd);
    return 0;
}

/*
 * Mount the sandbox's tmpfs on the tee directory of sb->dir_fd and open it (sb->tee_fd). The
 * tmpfs goes onto the directory's fd (O_PATH, O_NOFOLLOW), not its path, so a sandbox directory
 * the host renames or replaces meanwhile cannot move it elsewhere; the root opened afterwards
 * by name must then be that tmpfs, mounted directly there (tee_open()). If it is not, the host
 * swapped the directory under the mount: the (empty) tmpfs stays where the directory went, and
 * the launch is refused.
 */
static int mount_tee(agent_sandbox *sb, const char *size, bool no_tmpfs, cista_error **err)
{
    if (mkdirat(sb->dir_fd, AGENT_TEE_DIR, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", sb->tee_dir);
    if (!no_tmpfs) {
        _cleanup_close_ int pfd =
            openat(sb->dir_fd, AGENT_TEE_DIR, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (pfd < 0)
            return err_set_sys(err, errno == ELOOP ? -EPERM : -errno,
                               "open %s (a symbolic link there is not followed)", sb->tee_dir);
        char target[64];
        snprintf(target, sizeof(target), "/proc/self/fd/%d", pfd);
        _cleanup_free_ char *opts =
            size ? xasprintf("mode=0700,size=%s", size) : xstrdup("mode=0700");
        int r = agent__mount_tmpfs(target, MS_NODEV, opts, err);
        if (r < 0)
            return err_wrap(err, "the sandbox tmpfs %s", sb->tee_dir);
    }
    int r = tee_open(&sb->tee_fd, sb->dir_fd, sb->dir, no_tmpfs, err);
    if (r < 0) {
        log_warn("sandbox %s: %s was replaced while its tmpfs was mounted on it", sb->dir,
                 sb->tee_dir);
        return err_wrap(err, "the sandbox tmpfs");
    }
    if (no_tmpfs)
        return 0;
    char target[64];
    snprintf(target, sizeof(target), "/proc/self/fd/%d", sb->tee_fd);
    if (mount(NULL, target, NULL, MS_PRIVATE, NULL) < 0) {
        int e = -errno;
        umount2(target, MNT_DETACH);
        return err_set_sys(err, e, "make %s a private mount", sb->tee_dir);
    }
    return 0;
}

int agent_sandbox_destroy(const char *dir, cista_error **err)
{
    /*
     * Only the tmpfs cista mounted on this very directory is unmounted, through its checked fd:
     * a symlink or a directory the host swapped in is not followed, and whatever it holds is
     * neither unmounted nor used (the caller then removes only the link or the directory).
     */
    _cleanup_close_ int dfd = -1;
    _cleanup_close_ int tfd = -1;
    cista_error *e = NULL;
    int vrc = 0;
    if (sandbox_dir_open(&dfd, dir, false, &e) == 0)
        tfd = openat(dfd, AGENT_TEE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    else if (e->code == -EPERM)
        log_warn("%s", e->msg);
    err_clear(&e);
    uint64_t dm = 0, tm = 0;
    if (tfd >= 0 && agent__fd_mount_id(dfd, &dm) == 0 && agent__fd_mount_id(tfd, &tm) == 0 &&
        dm == tm) {
        close(steal_fd(&tfd)); /* a plain directory: the launch failed before the tmpfs */
    } else if (tfd >= 0 && agent__check_mounted_on(dfd, tfd, "tmpfs", dir, &e) < 0) {
        log_warn("%s; it is not unmounted", e->msg);
        err_clear(&e);
        close(steal_fd(&tfd));
    }
    if (tfd >= 0) {
        char tee[64];
        snprintf(tee, sizeof(tee), "/proc/self/fd/%d", tfd);
        /* the volumes first: each gets its final commit, none stays reachable below the tmpfs */
        vrc = agent__volumes_unmount(tee, err);
        if (umount2(tee, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
            return err_set_sys(err, -errno, "unmount the sandbox tmpfs %s/%s", dir, AGENT_TEE_DIR);
    }
    agent__rootfs_release(dir);
    return vrc;
}

/* ---- launch ---- */

/* Build the config the host asks for and ask the policy, without secrets. */
static int check_request(agent_sandbox *sb, const agent_host_request *req, cista_error **err)
{
    int rc;
    /* volumes first: which ones and from where, so a refused one gets no key released */
    _cleanup_json_ json_t *plan = NULL;
    if ((rc = agent_volume_plan(&plan, sb->pol, sb->container, req, err)) < 0)
        return rc;
    _cleanup_free_ char *rootfs = xasprintf("%s/%s", sb->tee_dir, AGENT_ROOTFS);
    _cleanup_json_ json_t *cfg = NULL;
    if ((rc = agent_build_config(&cfg, img_get_config(sb->img), sb->rules, req, rootfs, err)) < 0)
        return err_wrap(err, "container config");
    _cleanup_free_ char *text = js_dump_compact(cfg);
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_create(&d, sb->pol, sb->container, text, strlen(text)) < 0)
        return agent__deny(err, &d, "creating the container");
    return 0;
}

static int fetch_secrets(agent_sandbox *sb, agent_keysource *ks, cista_error **err)
{
    const pol_secret *ps;
    size_t n;
    int rc;
    if ((rc = pol_get_secrets(&ps, &n, sb->pol, sb->container, err)) < 0)
        return rc;
    sb->secret_envs = json_array();
    if (!n)
        return 0;
    sb->secrets = xzalloc(n * sizeof(*sb->secrets));
    for (size_t i = 0; i < n; i++) {
        agent_secret *s = &sb->secrets[sb->secret_count];
        if ((rc = ks->ops->get_secret(ks, ps[i].resource, &s->data, &s->size, err)) < 0)
            return err_wrap(err, "secret %s", ps[i].resource);
        sb->secret_count++;
        s->resource = xstrdup(ps[i].resource);
        s->path = ps[i].path ? xstrdup(ps[i].path) : NULL;
        s->env = ps[i].env ? xstrdup(ps[i].env) : NULL;
        if (s->env) {
            if (memchr(s->data, '\0', s->size))
                return err_set(err, -EINVAL,
                               "secret %s holds a NUL byte and cannot be the env variable %s",
                               ps[i].resource, s->env);
            json_t *probe = json_stringn((const char *)s->data, s->size);
            if (!probe)
                return err_set(err, -EINVAL,
                               "secret %s is not UTF-8 text and cannot be the env variable %s "
                               "(give it to the container as a file)",
                               ps[i].resource, s->env);
            /* jansson keeps a copy: overwrite it before it is freed */
            crypto_cleanse((char *)json_string_value(probe), s->size);
            json_decref(probe);
            json_array_append_new(sb->secret_envs, json_string(s->env));
        }
    }
    return 0;
}

static bool same_kbs(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    while (la > 8 && a[la - 1] == '/')
        la--;
    while (lb > 8 && b[lb - 1] == '/')
        lb--;
    return la == lb && strncasecmp(a, b, la) == 0;
}

/*
 * The key source of a policy that pins its broker ("kbs": {"url", "ca"}): the pinned URL with
 * the pinned CA (from a memfd: TEE memory, nothing the host can swap) or the system trust store,
 * never the host's CA file; the host's request must name that broker. A policy that pins none
 * uses the host's key source (*out stays NULL), with a warning for a KBS.
 */
static int pinned_keysource(agent_keysource **out, int *ca_fd, agent_sandbox *sb,
                            const agent_launch_opts *o, cista_error **err)
{
    const char *url, *ca;
    if (!pol_get_kbs(&url, &ca, sb->pol)) {
        if (!strcmp(o->keys->ops->name, "kbs"))
            log_warn("the policy pins no KBS: keys and secrets come from %s, which the host chose "
                     "(pin it with `cista policy gen --kbs URL --kbs-ca FILE`)",
                     o->kbs_url ? o->kbs_url : "a KBS");
        return 0;
    }
    if (strcmp(o->keys->ops->name, "kbs"))
        return deny_msg(err, -EACCES,
                        "policy denies keys from the %s key source: it pins the KBS %s (rule kbs)",
                        o->keys->ops->name, url);
    if (!o->kbs_url || !same_kbs(o->kbs_url, url))
        return deny_msg(err, -EACCES,
                        "policy denies the KBS %s the host asks for: it pins %s (rule kbs)",
                        o->kbs_url ? o->kbs_url : "(none)", url);
    _cleanup_free_ char *ca_path = NULL;
    if (ca) {
        *ca_fd = memfd_create("cista-kbs-ca", MFD_CLOEXEC);
        if (*ca_fd < 0 || util_write_all(*ca_fd, ca, strlen(ca)) < 0)
            return err_set_sys(err, -errno, "the pinned KBS CA");
        ca_path = xasprintf("/proc/self/fd/%d", *ca_fd);
    }
    int rc = agent_keysource_kbs_new(out, url, ca_path, err);
    if (rc < 0)
        return err_wrap(err, "the KBS the policy pins");
    free(sb->kbs_url);
    sb->kbs_url = xstrdup(url);
    free(sb->kbs_ca);
    sb->kbs_ca = NULL; /* the pinned CA file is written into the tmpfs once it exists */
    log_info("keys and secrets from %s, the KBS the policy pins%s", url,
             ca ? " (with its CA)" : " (system trust store)");
    return 0;
}

/* The policy (what later operations are checked against) and the pinned KBS's CA, in TEE memory. */
static int save_launch_files(agent_sandbox *sb, const agent_launch_opts *o, cista_error **err)
{
    int tfd = sb->tee_fd;
    int rc = write_at(tfd, AGENT_POLICY, o->policy, o->policy_size, 0600, err);
    if (rc < 0)
        return rc;
    /* for the volume daemons (rollback anchors at the pinned broker) */
    const char *purl, *pca;
    if (pol_get_kbs(&purl, &pca, sb->pol) && pca) {
        if ((rc = write_at(tfd, AGENT_KBS_CA, pca, strlen(pca), 0600, err)) < 0)
            return rc;
        free(sb->kbs_ca);
        sb->kbs_ca = xasprintf("%s/%s", sb->tee_dir, AGENT_KBS_CA);
    }
    return 0;
}

int agent_sandbox_launch(agent_sandbox **out, const agent_launch_opts *o, cista_error **err)
{
    int rc;
    struct timespec t0;
    if (!o->dir || !o->policy || !o->image_ref || !o->keys || !o->tee.tee)
        return err_set(err, -EINVAL,
                       "agent_sandbox_launch: dir, policy, image, keys and tee are "
                       "required");
    _cleanup_sandbox_ agent_sandbox *sb = xzalloc(sizeof(*sb));
    sb->dir_fd = sb->tee_fd = -1;
    sb->dir = xstrdup(o->dir);
    sb->tee_dir = xasprintf("%s/%s", o->dir, AGENT_TEE_DIR);
    sb->dev_keys = o->keys->ops->insecure;
    sb->kbs_url = o->kbs_url ? xstrdup(o->kbs_url) : NULL;
    sb->kbs_ca = o->kbs_ca ? xstrdup(o->kbs_ca) : NULL;
    sb->volume_exe = o->volume_exe ? xstrdup(o->volume_exe) : NULL;
    sb->tee_name = xstrdup(o->tee.tee);
    sb->sim_state_dir = o->tee.sim_state_dir ? xstrdup(o->tee.sim_state_dir) : NULL;
    sb->tpm_tcti = o->tee.tpm_tcti ? xstrdup(o->tee.tpm_tcti) : NULL;

    /* 1. the policy and its launch binding: nothing else runs before this */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((rc = load_policy(sb, o->policy, o->policy_size, o->container, err)) < 0)
        return rc;
    uint8_t hash[POL_HASH_SIZE];
    pol_hash(hash, o->policy, o->policy_size);
    _cleanup_pkey_ EVP_PKEY *eph = NULL;
    if ((rc = crypto_key_generate_ec(&eph, "P-256", err)) < 0)
        return rc;
    uint8_t nonce[32];
    if ((rc = crypto_random(nonce, sizeof(nonce), err)) < 0)
        return rc;
    /* no launch value given: the launcher bound the hash of this policy */
    agent_tee tee = o->tee;
    if (!tee.host_data)
        tee.host_data = hash;
    if ((rc = check_binding(sb, &tee, eph, nonce, hash, err)) < 0)
        return err_wrap(err, "launch binding");
    sb->t.bind = ms_since(&t0);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    if ((rc = img_open(&sb->img, o->image_ref, err)) < 0)
        return err_wrap(err, "image %s", o->image_ref);
    size_t nl = img_layer_count(sb->img);
    bool encrypted = false;
    _cleanup_free_ const char **diff_ids = xzalloc((nl + 1) * sizeof(*diff_ids));
    for (size_t i = 0; i < nl; i++) {
        diff_ids[i] = img_get_layer(sb->img, i)->diff_id;
        encrypted |= img_get_layer(sb->img, i)->encrypted;
    }
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_image(&d, sb->pol, sb->container, img_manifest_digest(sb->img), diff_ids, nl) < 0)
        return agent__deny(err, &d, "the image");
    /* the host's request, before any key is released for it */
    if (o->request && (rc = check_request(sb, o->request, err)) < 0)
        return rc;
    sb->t.bind += ms_since(&t0);

    /* 2. attestation with the key source, then image keys and secrets */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    _cleanup_keysource_ agent_keysource *pinned = NULL;
    _cleanup_close_ int ca_fd = -1;
    if ((rc = pinned_keysource(&pinned, &ca_fd, sb, o, err)) < 0)
        return rc;
    agent_keysource *ks = pinned ? pinned : o->keys;
    json_t *claims = NULL;
    if ((rc = ks->ops->attest(ks, &tee, eph, &claims, err)) < 0)
        return err_wrap(err, "attestation (%s)", ks->ops->name);
    if (claims) {
        json_decref(sb->claims);
        sb->claims = claims;
    }
    sb->t.attest = ms_since(&t0);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    EVP_PKEY **keys = NULL;
    size_t key_count = 0;
    if (encrypted) {
        _cleanup_free_ char *res = o->image_key_resource ? xstrdup(o->image_key_resource)
                                                         : agent_image_key_resource(sb->container);
        if ((rc = ks->ops->get_image_keys(ks, res, &keys, &key_count, err)) < 0)
            return err_wrap(err, "image key %s", res);
    }
    rc = fetch_secrets(sb, ks, err);
    /* the volumes' master keys, through the same attested session */
    if (rc == 0)
        rc = agent__volume_keys_fetch(&sb->vol_keys, &sb->vol_key_count, sb->pol, sb->container, ks,
                                      err);
    sb->t.keys = ms_since(&t0);

    /* 3. decrypt, verify and unpack into the sandbox's TEE memory */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (rc == 0)
        rc = sandbox_dir_open(&sb->dir_fd, o->dir, true, err);
    if (rc == 0 && (rc = mount_tee(sb, o->tmpfs_size, o->no_tmpfs, err)) < 0) {
        cista_error *e2 = NULL;
        if (agent_sandbox_destroy(o->dir, &e2) < 0)
            err_free(e2);
    }
    if (rc == 0) {
        bool shared = false;
        if (o->no_tmpfs || o->private_rootfs) {
            /* into the checked tee itself: img_unpack() opens the parent once, by this name */
            char rootfs[64];
            snprintf(rootfs, sizeof(rootfs), "/proc/self/fd/%d/%s", sb->tee_fd, AGENT_ROOTFS);
            img_unpack_opts uo = {.redact_names = true};
            rc = img_unpack(sb->img, rootfs, keys, key_count, &uo, err);
            sb->rootfs = AGENT__ROOTFS_PRIVATE;
        } else {
            /* mounted by agent_sandbox_create_config(): the final config says how */
            rc = agent__rootfs_prepare(o->dir, sb->img, keys, key_count, &shared, err);
        }
        if (rc == 0 && shared)
            log_info("sandbox %s: the verified tree of %s is shared with other sandboxes "
                     "(the released keys open every layer)",
                     o->dir, img_manifest_digest(sb->img));
        if (rc < 0) {
            err_wrap(err, "unpack %s", o->image_ref);
            cista_error *e2 = NULL;
            if (agent_sandbox_destroy(o->dir, &e2) < 0)
                err_free(e2);
        }
    }
    for (size_t i = 0; i < key_count; i++)
        EVP_PKEY_free(keys[i]);
    free(keys);
    if (rc < 0)
        return rc;
    sb->t.unpack = ms_since(&t0);

    if ((rc = save_launch_files(sb, o, err)) < 0) {
        cista_error *e2 = NULL;
        if (agent_sandbox_destroy(o->dir, &e2) < 0)
            err_free(e2);
        return rc;
    }
    log_info("sandbox %s: image %s (%s) unpacked into TEE memory, %zu secrets fetched%s", o->dir,
             o->image_ref, img_manifest_digest(sb->img), sb->secret_count,
             sb->dev_keys ? " (DEVELOPMENT key source: keys from local files)" : "");
    *out = steal_ptr(&sb);
    return 0;
}

/*
 * A secret file is written into the rootfs before the mounts are made: one at or below a
 * mount's destination (a host bind the policy allows, a volume) would be hidden by it, and the
 * workload would read what the host put there instead.
 */
static int check_secret_paths(const agent_sandbox *sb, const json_t *mounts, cista_error **err)
{
    for (size_t i = 0; i < sb->secret_count; i++) {
        const char *p = sb->secrets[i].path;
        const char *d = p ? agent__mount_over(mounts, p) : NULL;
        if (d)
            return deny_msg(err, -EPERM,
                            "secret %s: its file %s would be hidden by the mount at %s; "
                            "move the secret or the mount in the policy",
                            sb->secrets[i].resource, p, d);
    }
    return 0;
}

static int save_state(agent_sandbox *sb, cista_error **err)
{
    _cleanup_json_ json_t *st = json_pack(
        "{s:s,s:b,s:b,s:O,s:s,s:{s:f,s:f,s:f,s:f,s:f},s:s*}", "container", sb->container, "logs",
        sb->logs_allowed, "dev_keys", sb->dev_keys, "secret_envs",
        sb->secret_envs ? sb->secret_envs : json_array(), "policy_sha256", sb->policy_hash,
        "timings_ms", "bind", sb->t.bind, "attest", sb->t.attest, "keys", sb->t.keys, "unpack",
        sb->t.unpack, "config", sb->t.config, "rootfs", agent_sandbox_rootfs(sb));
    if (sb->claims)
        json_object_set(st, "claims", sb->claims);
    _cleanup_free_ char *s = js_dump_pretty(st);
    return write_at(sb->tee_fd, AGENT_STATE, s, strlen(s), 0600, err);
}

/*
 * Whether sb->tee_dir, looked up by its path as the delegate will, still reaches the tee checked
 * at launch (sb->tee_fd: same inode, same mount). The host could have renamed DIR and put a
 * directory of its own, with a rootfs and a tmpfs, in its place; the delegate would then run
 * that rootfs with this sandbox's config. -EPERM when it does not.
 */
static int tee_path_check(const agent_sandbox *sb, cista_error **err)
{
    struct stat a, b;
    uint64_t ma = 0, mb = 0;
    _cleanup_close_ int fd = open(sb->tee_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0 && fstat(fd, &a) == 0 && fstat(sb->tee_fd, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino && agent__fd_mount_id(fd, &ma) == 0 &&
        agent__fd_mount_id(sb->tee_fd, &mb) == 0 && ma == mb)
        return 0;
    log_warn("sandbox %s: %s no longer leads to the sandbox's TEE memory", sb->dir, sb->tee_dir);
    return err_set(err, -EPERM,
                   "sandbox %s: %s no longer leads to the sandbox's TEE memory (the directory was "
                   "renamed or replaced during create); the container is not started",
                   sb->dir, sb->tee_dir);
}

int agent_sandbox_open(agent_sandbox **out, const char *dir, const char *container,
                       cista_error **err)
{
    int rc;
    (void)container;
    _cleanup_sandbox_ agent_sandbox *sb = xzalloc(sizeof(*sb));
    sb->dir_fd = sb->tee_fd = -1;
    sb->dir = xstrdup(dir);
    sb->tee_dir = xasprintf("%s/%s", dir, AGENT_TEE_DIR);
    /*
     * The policy read back must be the one in TEE memory, not a file the host put there:
     * DIR and its tee without following a symlink, the tee the tmpfs mounted directly on DIR.
     */
    if ((rc = sandbox_dir_open(&sb->dir_fd, dir, false, err)) < 0 ||
        (rc = tee_open(&sb->tee_fd, sb->dir_fd, dir, false, err)) < 0)
        return rc == -ENOENT
                   ? rc
                   : err_wrap(err, "sandbox %s: refusing to read its policy from there", dir);
    int tfd = sb->tee_fd;
    _cleanup_free_ char *st = NULL, *pol = NULL;
    size_t st_size, pol_size;
    if ((rc = util_read_fileat(&st, &st_size, tfd, AGENT_STATE, 1u << 20, err)) < 0 ||
        (rc = util_read_fileat(&pol, &pol_size, tfd, AGENT_POLICY, POL_MAX_POLICY, err)) < 0)
        return err_wrap(err, "sandbox %s", dir);
    _cleanup_json_ json_t *sj = NULL;
    if ((rc = js_parse_object(&sj, st, st_size, 1u << 20, AGENT_STATE, err)) < 0)
        return rc;
    const char *name = json_string_value(json_object_get(sj, "container"));
    if ((rc = load_policy(sb, pol, pol_size, name, err)) < 0)
        return rc;
    sb->dev_keys = json_is_true(json_object_get(sj, "dev_keys"));
    json_t *se = json_object_get(sj, "secret_envs");
    sb->secret_envs = json_is_array(se) ? json_incref(se) : json_array();
    sb->rootfs = rootfs_kind(json_string_value(json_object_get(sj, "rootfs")));
    json_t *cl = json_object_get(sj, "claims");
    if (cl)
        sb->claims = json_incref(cl);
    json_t *tm = json_object_get(sj, "timings_ms");
    sb->t.bind = json_real_value(json_object_get(tm, "bind"));
    sb->t.attest = json_real_value(json_object_get(tm, "attest"));
    sb->t.keys = json_real_value(json_object_get(tm, "keys"));
    sb->t.unpack = json_real_value(json_object_get(tm, "unpack"));
    sb->t.config = json_real_value(json_object_get(tm, "config"));
    *out = steal_ptr(&sb);
    return 0;
}

/* ---- step 4: config and secrets ---- */

int agent__inject_secret_file(int rootfd, const char *path, const void *data, size_t size,
                              int64_t uid, int64_t gid, cista_error **err)
{
    int rc;
    _cleanup_free_ char *rel = pol_path_normalize(path);
    if (!rel || !strcmp(rel, "/"))
        return err_set(err, -EINVAL, "secret path \"%s\" is not a clean absolute file path", path);
    char *slash = strrchr(rel, '/');
    if (slash != rel) {
        *slash = '\0';
        if ((rc = path_mkdir_p_in_root(rootfd, rel + 1, 0755, err)) < 0)
            return err_wrap(err, "secret directory %s", rel);
        *slash = '/';
    }
    /* the rootfs is on the sandbox tmpfs: the secret never reaches a disk */
    _cleanup_close_ int fd = path_open_in_root(
        rootfd, rel + 1, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0400, err);
    if (fd < 0)
        return err_wrap(err, "secret file %s", path);
    if (fchmod(fd, 0400) < 0 || fchown(fd, (uid_t)uid, (gid_t)gid) < 0)
        return err_set_sys(err, -errno, "secret file %s: chmod/chown", path);
    if (util_write_all(fd, data, size) < 0)
        return err_set_sys(err, -errno, "write secret file %s", path);
    return 0;
}

int agent_sandbox_create_config(char **out_bundle, agent_sandbox *sb, const agent_host_request *req,
                                cista_error **err)
{
    int rc;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!sb->img)
        return err_set(err, -EINVAL, "create_config: the sandbox was not launched here");
    _cleanup_free_ char *rootfs = xasprintf("%s/%s", sb->tee_dir, AGENT_ROOTFS);
    _cleanup_json_ json_t *cfg = NULL;
    if ((rc = agent_build_config(&cfg, img_get_config(sb->img), sb->rules, req, rootfs, err)) < 0)
        return err_wrap(err, "container config");
    json_t *proc = json_object_get(cfg, "process");
    /* the secret env names are the policy's: a host variable of that name is not passed */
    json_t *env = json_object_get(proc, "env");
    for (size_t i = 0; i < sb->secret_count; i++) {
        if (!sb->secrets[i].env)
            continue;
        size_t n = strlen(sb->secrets[i].env);
        for (size_t k = 0; k < json_array_size(env);) {
            const char *s = json_string_value(json_array_get(env, k));
            if (!strncmp(s, sb->secrets[i].env, n) && s[n] == '=') {
                log_warn("dropping the host's %s: the policy injects it as a secret",
                         sb->secrets[i].env);
                json_array_remove(env, k);
            } else {
                k++;
            }
        }
    }
    _cleanup_free_ char *text = js_dump_compact(cfg);
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_create(&d, sb->pol, sb->container, text, strlen(text)) < 0)
        return agent__deny(err, &d, "creating the container");
    if (!sb->logs_allowed && json_is_true(json_object_get(proc, "terminal")))
        return deny_msg(err, -EACCES,
                        "policy denies a terminal: the policy does not let the host read the "
                        "container's output (rule logs)");

    /* secrets: env from the policy, files on the tmpfs-backed rootfs, 0400 */
    if ((rc = check_secret_paths(sb, json_object_get(cfg, "mounts"), err)) < 0)
        return rc;
    /* the rootfs, from the shared tree: how depends on the final config and the secret files */
    if (sb->rootfs == AGENT__ROOTFS_NONE) {
        bool secret_files = false;
        for (size_t i = 0; i < sb->secret_count; i++)
            secret_files |= sb->secrets[i].path != NULL;
        if ((rc = agent__rootfs_mount(&sb->rootfs, sb->dir, sb->tee_fd, sb->tee_dir, sb->img, cfg,
                                      sb->rules, secret_files, err)) < 0)
            return err_wrap(err, "the container's rootfs");
    }
    /* from the checked tee: the secrets go into this sandbox's rootfs, nowhere the host chose */
    _cleanup_close_ int rootfd =
        openat(sb->tee_fd, AGENT_ROOTFS, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        return err_set_sys(err, -errno, "open %s", rootfs);
    json_t *user = json_object_get(proc, "user");
    int64_t uid = json_integer_value(json_object_get(user, "uid"));
    int64_t gid = json_integer_value(json_object_get(user, "gid"));
    for (size_t i = 0; i < sb->secret_count; i++) {
        agent_secret *s = &sb->secrets[i];
        if (s->env) {
            _cleanup_free_ char *v = xasprintf("%s=%.*s", s->env, (int)s->size, (char *)s->data);
            int a = json_array_append_new(env, json_string(v));
            crypto_cleanse(v, strlen(v));
            if (a < 0)
                return err_set(err, -EINVAL, "secret %s: cannot be the env variable %s",
                               s->resource, s->env);
        } else if ((rc = agent__inject_secret_file(rootfd, s->path, s->data, s->size, uid, gid,
                                                   err)) < 0) {
            return rc;
        }
    }

    /* the volumes: mounted (key and rollback checked) before anything of the image runs */
    _cleanup_json_ json_t *plan = NULL;
    if ((rc = agent_volume_plan(&plan, sb->pol, sb->container, req, err)) < 0)
        return rc;
    agent__volume_env venv = {
        .exe = sb->volume_exe,
        .kbs_url = sb->kbs_url,
        .kbs_ca = sb->kbs_ca,
        .tee = sb->tee_name,
        .sim_state_dir = sb->sim_state_dir,
        .tpm_tcti = sb->tpm_tcti,
        .host_data = sb->policy_hash,
    };
    char tee[64];
    snprintf(tee, sizeof(tee), "/proc/self/fd/%d", sb->tee_fd);
    if ((rc = agent__volumes_mount(sb->tee_fd, sb->tee_dir, plan, sb->pol, sb->container,
                                   sb->vol_keys, sb->vol_key_count, &venv, uid, gid, err)) < 0) {
        cista_error *e2 = NULL;
        if (agent__volumes_unmount(tee, &e2) < 0)
            err_free(e2);
        return rc;
    }
    /* for runc and crun: rlimits written unsigned ("unlimited" is 2^64-1, not -1) */
    _cleanup_free_ char *final = agent_oci_dump_config(cfg);
    rc = write_at(sb->tee_fd, AGENT_CONFIG, final, strlen(final), 0600, err);
    crypto_cleanse(final, strlen(final));
    if (rc < 0)
        return rc;
    sb->t.config = ms_since(&t0);
    if ((rc = save_state(sb, err)) < 0)
        return rc;
    /*
     * The delegate gets the bundle by its path (runc and crun refuse a rootfs path through a
     * symlink, and later verbs find their state by path): it must name the tee checked above.
     * What the host can still do after this check is in docs/runtime.md.
     */
    if ((rc = tee_path_check(sb, err)) < 0)
        return rc;
    *out_bundle = xstrdup(sb->tee_dir);
    return 0;
}

/* ---- later operations ---- */

int agent_exec_prepare(char **out_path, agent_sandbox *sb, const char *process, size_t process_size,
                       cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *hp = NULL;
    if ((rc = agent_parse_oci(&hp, process, process_size, "the host's process.json", err)) < 0)
        return rc;
    int tfd = sb->tee_fd;
    _cleanup_free_ char *cfgtext = NULL;
    size_t cfg_size;
    if ((rc = util_read_fileat(&cfgtext, &cfg_size, tfd, AGENT_CONFIG, AGENT_MAX_CONFIG, err)) < 0)
        return rc;
    _cleanup_json_ json_t *cfg = NULL;
    if ((rc = agent_parse_oci(&cfg, cfgtext, cfg_size, "config", err)) < 0)
        return rc;
    crypto_cleanse(cfgtext, cfg_size);
    json_t *cproc = json_object_get(cfg, "process");

    json_t *args = json_object_get(hp, "args");
    if (!json_is_array(args) || json_array_size(args) == 0)
        return err_set(err, -EINVAL, "exec: process.args is missing or empty");
    _cleanup_json_ json_t *p = json_object();
    json_object_set_new(p, "args", json_deep_copy(args));
    /* env: the container's (without the injected secrets), then the host's others */
    json_t *env = json_array();
    json_object_set_new(p, "env", env);
    json_t *secret_env = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(cproc, "env"), i, v)
    {
        const char *s = json_string_value(v);
        bool secret = false;
        size_t k;
        json_t *n;
        json_array_foreach(sb->secret_envs, k, n)
        {
            size_t l = strlen(json_string_value(n));
            if (!strncmp(s, json_string_value(n), l) && s[l] == '=')
                secret = true;
        }
        json_array_append_new(secret ? secret_env : env, json_string(s));
    }
    json_t *henv = json_object_get(hp, "env");
    json_array_foreach(henv, i, v)
    {
        const char *s = json_string_value(v);
        if (!s) {
            json_decref(secret_env);
            return err_set(err, -EINVAL, "exec: process.env[%zu] is not a string", i);
        }
        const char *eq = strchr(s, '=');
        size_t l = eq ? (size_t)(eq - s) : strlen(s);
        bool have = false;
        size_t k;
        json_t *e;
        json_array_foreach(env, k, e)
        {
            const char *x = json_string_value(e);
            if (!strncmp(x, s, l) && x[l] == '=')
                have = true;
        }
        json_array_foreach(sb->secret_envs, k, e)
        {
            if (strlen(json_string_value(e)) == l && !strncmp(json_string_value(e), s, l))
                have = true;
        }
        if (!have)
            json_array_append_new(env, json_string(s));
    }
    const char *hcwd = json_string_value(json_object_get(hp, "cwd"));
    const char *ccwd = json_string_value(json_object_get(cproc, "cwd"));
    json_object_set_new(
        p, "cwd", json_string(hcwd && *hcwd && strcmp(hcwd, "/") ? hcwd : (ccwd ? ccwd : "/")));
    json_t *hu = json_object_get(hp, "user");
    json_t *cu = json_object_get(cproc, "user");
    bool host_root = !json_is_object(hu) || (json_integer_value(json_object_get(hu, "uid")) == 0 &&
                                             json_integer_value(json_object_get(hu, "gid")) == 0);
    json_object_set_new(p, "user", json_deep_copy(host_root && cu ? cu : hu));
    json_t *hc = json_object_get(hp, "capabilities");
    json_t *caps = json_deep_copy(json_is_object(hc) ? hc : json_object_get(cproc, "capabilities"));
    if (!caps)
        caps = json_object();
    json_object_set_new(caps, "inheritable", json_array());
    json_object_set_new(p, "capabilities", caps);
    json_object_set_new(p, "noNewPrivileges",
                        json_boolean(json_is_true(json_object_get(hp, "noNewPrivileges")) ||
                                     json_is_true(json_object_get(cproc, "noNewPrivileges"))));
    bool terminal = json_is_true(json_object_get(hp, "terminal"));
    json_object_set_new(p, "terminal", json_boolean(terminal));
    json_t *cs = json_object_get(hp, "consoleSize");
    if (json_is_object(cs))
        json_object_set_new(p, "consoleSize", json_deep_copy(cs));
    /* rlimits: the host's (clamped), else the container's (a process without any could keep
     * those of the runtime that starts it, which the host chose); never a core dump */
    json_t *rl = json_object_get(hp, "rlimits");
    json_t *crl = json_object_get(cproc, "rlimits");
    json_t *rlimits = json_is_array(rl)    ? json_deep_copy(rl)
                      : json_is_array(crl) ? json_deep_copy(crl)
                                           : json_array();
    _cleanup_json_ json_t *wrap = json_pack("{s:{s:o}}", "process", "rlimits", rlimits);
    agent_clamp_rlimits(wrap);
    if (agent_force_no_core(rlimits) < 0) {
        json_decref(secret_env);
        return err_set(err, -EINVAL, "exec: rlimits is not an array");
    }
    json_object_set(p, "rlimits", rlimits);

    _cleanup_free_ char *text = js_dump_compact(p);
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_exec(&d, sb->pol, sb->container, text, strlen(text)) < 0) {
        json_decref(secret_env);
        return agent__deny(err, &d, "exec");
    }
    if (terminal && !sb->logs_allowed) {
        json_decref(secret_env);
        return deny_msg(err, -EACCES,
                        "policy denies an exec terminal: the host may not read the "
                        "container's output (rule logs)");
    }
    json_array_extend(env, secret_env);
    json_decref(secret_env);

    _cleanup_free_ char *final = agent_oci_dump_process(p);
    char name[64];
    uint8_t rnd[8];
    if ((rc = crypto_random(rnd, sizeof(rnd), err)) < 0)
        return rc;
    _cleanup_free_ char *hx = hex_encode(rnd, sizeof(rnd));
    snprintf(name, sizeof(name), "exec-%s.json", hx);
    rc = write_at(tfd, name, final, strlen(final), 0600, err);
    crypto_cleanse(final, strlen(final));
    if (rc < 0)
        return rc;
    *out_path = xasprintf("%s/%s", sb->tee_dir, name);
    return 0;
}

int agent_allow_logs(agent_sandbox *sb, cista_error **err)
{
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_logs(&d, sb->pol, sb->container) < 0)
        return agent__deny(err, &d, "reading the container's output");
    return 0;
}

int agent_allow_signal(agent_sandbox *sb, int sig, cista_error **err)
{
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_signal(&d, sb->pol, sb->container, sig) < 0) {
        char what[48];
        snprintf(what, sizeof(what), "signal %d", sig);
        return agent__deny(err, &d, what);
    }
    return 0;
}

int agent_copy_in(agent_sandbox *sb, const char *path, const void *data, size_t size,
                  cista_error **err)
{
    int rc;
    if (size > AGENT_MAX_COPY)
        return err_set(err, -EFBIG, "copy: %zu bytes is more than the limit %u", size,
                       AGENT_MAX_COPY);
    _cleanup_decision_ pol_decision d = {0};
    if (pol_allow_copy(&d, sb->pol, sb->container, path) < 0)
        return agent__deny(err, &d, "copying a file in");
    /* the kernel would refuse the write too (the bind is read-only); this says why */
    if (sb->rootfs == AGENT__ROOTFS_READONLY_BIND)
        return err_set(err, -EROFS,
                       "copy to %s: the container's root is read-only (a read-only bind of the "
                       "image tree other containers share); nothing can be copied into it",
                       path);
    _cleanup_free_ char *rel = pol_path_normalize(path);
    if (!rel || !strcmp(rel, "/"))
        return err_set(err, -EINVAL, "copy: \"%s\" is not a file path", path);
    _cleanup_free_ char *rootfs = xasprintf("%s/%s", sb->tee_dir, AGENT_ROOTFS);
    _cleanup_close_ int rootfd =
        openat(sb->tee_fd, AGENT_ROOTFS, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rootfd < 0)
        return err_set_sys(err, -errno, "open %s", rootfs);
    char *slash = strrchr(rel, '/');
    if (slash != rel) {
        *slash = '\0';
        if ((rc = path_mkdir_p_in_root(rootfd, rel + 1, 0755, err)) < 0)
            return rc;
        *slash = '/';
    }
    _cleanup_close_ int fd = path_open_in_root(
        rootfd, rel + 1, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644, err);
    if (fd < 0)
        return err_wrap(err, "copy to %s", path);
    if (util_write_all(fd, data, size) < 0)
        return err_set_sys(err, -errno, "write %s", path);
    return 0;
}

/* ---- local evidence ---- */

int agent__local_attest(json_t **out, const agent_tee *tee, EVP_PKEY *pub, const uint8_t nonce[32],
                        cista_error **err)
{
    int rc;
    const ev_ops *ops = ev_find(tee->tee);
    if (!ops)
        return err_set(err, -ENOTSUP, "unknown TEE \"%s\"", tee->tee);
    uint8_t rd[EV_REPORT_DATA_SIZE] = {0};
    unsigned char *spki = NULL;
    int spki_size = i2d_PUBKEY(pub, &spki);
    if (spki_size <= 0)
        return err_set_ssl(err, -EINVAL, "encode the ephemeral public key");
    _cleanup_free_ uint8_t *buf = xmalloc(32 + (size_t)spki_size);
    memcpy(buf, nonce, 32);
    memcpy(buf + 32, spki, (size_t)spki_size);
    OPENSSL_free(spki);
    /* report_data = SHA-256(nonce || SPKI of the ephemeral key), zero-padded */
    crypto_hash_oneshot(CRYPTO_SHA256, buf, 32 + (size_t)spki_size, rd);

    ev_get_opts go;
    ev_get_opts_init(&go);
    go.sim_state_dir = tee->sim_state_dir;
    go.host_data = tee->host_data;
    go.tpm_tcti = tee->tpm_tcti;
    go.tpm_eventlog = tee->tpm_eventlog;
    _cleanup_free_ char *simdir = NULL;
    _cleanup_pkey_ EVP_PKEY *simkey = NULL;
    if (!strcmp(tee->tee, "sim")) {
        simdir = tee->sim_state_dir ? xstrdup(tee->sim_state_dir) : ev_sim_default_dir();
        bool created = false;
        if ((rc = ev_sim_init(simdir, &created, err)) < 0)
            return rc;
        if ((rc = ev_sim_load_public(&simkey, simdir, err)) < 0)
            return rc;
        go.sim_state_dir = simdir;
    }
    _cleanup_free_ uint8_t *evd = NULL, *aux = NULL;
    size_t evd_size = 0, aux_size = 0;
    if ((rc = ops->get(&evd, &evd_size, &aux, &aux_size, rd, &go, err)) < 0)
        return rc;
    ev_verify_opts vo;
    ev_verify_opts_init(&vo);
    vo.report_data = rd;
    vo.sim_key = simkey;
    _cleanup_pkey_ EVP_PKEY *ak = NULL;
    if (!strcmp(tee->tee, "tpm")) {
        _cleanup_json_ json_t *ej = NULL;
        if ((rc = js_parse_object(&ej, evd, evd_size, EV_MAX_EVIDENCE, "tpm evidence", err)) < 0)
            return rc;
        const char *s = json_string_value(json_object_get(ej, "ak_spki"));
        _cleanup_free_ uint8_t *der = NULL;
        size_t der_size;
        if (!s || b64_decode(&der, &der_size, s, strlen(s), err) < 0)
            return err_set(err, -EPROTO, "tpm evidence has no ak_spki");
        const unsigned char *pp = der;
        ak = d2i_PUBKEY(NULL, &pp, (long)der_size);
        if (!ak)
            return err_set_ssl(err, -EPROTO, "tpm evidence: ak_spki");
        vo.tpm_ak_pub = ak;
    }
    return ops->verify(out, evd, evd_size, aux, aux_size, &vo, err);
}
