/*
 * runtime.c - the OCI runtime verbs: confidential containers through the
 * agent, plain ones (when allowed) straight to the delegate.
 */
#include "runtime/runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "crypto/crypto.h"
#include "runtime/rt_int.h"
#include "util/codec.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define RT_MAX_LOG (64u << 20)

bool rt_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= RT_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || !strchr("_.+-", ch)))
            return false;
    }
    return true;
}

static int check_id(const char *id, cista_error **err)
{
    if (!rt_id_valid(id))
        return err_set(err, -EINVAL,
                       "container id \"%s\" is not valid: letters, digits and _.+- (not first), "
                       "at most %d characters",
                       id ? id : "", RT_MAX_ID - 1);
    return 0;
}

char *rt__resolve_tee(const rt_config *c, const char *want, cista_error **err)
{
    if (!want)
        want = c->tee ? c->tee : "auto";
    if (!strcmp(want, "auto")) {
        if (access("/dev/sev-guest", F_OK) == 0)
            return xstrdup("snp");
        if (access("/dev/tdx_guest", F_OK) == 0)
            return xstrdup("tdx");
        if (c->tpm_tcti || getenv("CISTA_TPM_TCTI") || access("/dev/tpmrm0", F_OK) == 0)
            return xstrdup("tpm");
        log_warn("no TEE found (SEV-SNP, TDX, TPM): using the INSECURE software TEE sim");
        return xstrdup("sim");
    }
    static const char *const known[] = {"sim", "tpm", "snp", "tdx"};
    for (size_t i = 0; i < ARRAY_LEN(known); i++)
        if (!strcmp(want, known[i]))
            return xstrdup(want);
    err_set(err, -EINVAL, "TEE \"%s\" is not one of auto, sim, tpm, snp, tdx", want);
    return NULL;
}

/* ---- annotations ---- */

void rt_confidential_clear(rt_confidential *c)
{
    free(c->image);
    crypto_free_secret(c->policy, c->policy_size);
    free(c->kbs);
    free(c->tee);
    free(c->container);
    free(c->image_key);
    memset(c, 0, sizeof(*c));
}

static const char *ann(const json_t *a, const char *k)
{
    return json_string_value(json_object_get(a, k));
}

int rt_confidential_from_annotations(rt_confidential *out, bool *out_present, const json_t *config,
                                     cista_error **err)
{
    int rc;
    const json_t *a = json_object_get(config, "annotations");
    *out_present = false;
    if (!json_is_object(a))
        return 0;
    const char *image = ann(a, RT_ANN_IMAGE);
    const char *pol = ann(a, RT_ANN_POLICY), *polf = ann(a, RT_ANN_POLICY_FILE);
    if (!image && !pol && !polf)
        return 0;
    if (!image)
        return err_set(err, -EINVAL, "annotation %s is missing (the confidential image)",
                       RT_ANN_IMAGE);
    if (!pol && !polf)
        return err_set(err, -EINVAL, "annotation %s (base64) or %s is missing", RT_ANN_POLICY,
                       RT_ANN_POLICY_FILE);
    rt_confidential c = {0};
    if (pol) {
        uint8_t *p;
        if ((rc = b64_decode(&p, &c.policy_size, pol, strlen(pol), err)) < 0) {
            rt_confidential_clear(&c);
            return err_wrap(err, "annotation %s", RT_ANN_POLICY);
        }
        c.policy = (char *)p;
    } else if ((rc = util_read_regular_file(&c.policy, &c.policy_size, polf, POL_MAX_POLICY, err)) <
               0) {
        rt_confidential_clear(&c);
        return err_wrap(err, "annotation %s", RT_ANN_POLICY_FILE);
    }
    const char *h = ann(a, RT_ANN_POLICY_HASH);
    if (h) {
        if (strlen(h) != 64 || hex_decode_to(c.policy_hash, 32, h, err) < 0) {
            rt_confidential_clear(&c);
            return err_set(err, -EINVAL, "annotation %s: expected 64 hex digits",
                           RT_ANN_POLICY_HASH);
        }
        c.has_hash = true;
    }
    c.image = xstrdup(image);
    const char *v;
    if ((v = ann(a, RT_ANN_KBS)))
        c.kbs = xstrdup(v);
    if ((v = ann(a, RT_ANN_TEE)))
        c.tee = xstrdup(v);
    if ((v = ann(a, RT_ANN_CONTAINER)) || (v = ann(a, "io.kubernetes.cri.container-name")))
        c.container = xstrdup(v);
    if ((v = ann(a, RT_ANN_IMAGE_KEY)))
        c.image_key = xstrdup(v);
    *out = c;
    *out_present = true;
    return 0;
}

/* ---- state ---- */

static char *cdir(const rt_config *c, const char *id)
{
    return xasprintf("%s/%s", c->root, id);
}

/*
 * state.json lies on the host's disk, outside the TEE: what it says must agree with what only a
 * create makes. A container with a sandbox directory is confidential whatever the file says
 * (else its exec and kill would skip the agent and its policy), its delegate keeps its state in
 * the sandbox, and the delegate run is the configured runtime, runc or crun, never a program
 * the file names.
 */
static int check_state(const json_t *st, const rt_config *c, const char *id, cista_error **err)
{
    _cleanup_free_ char *dir = xasprintf("%s/%s", c->root, id);
    _cleanup_free_ char *tee = xasprintf("%s/%s", dir, AGENT_TEE_DIR);
    struct stat sb;
    bool sandbox = lstat(tee, &sb) == 0 && S_ISDIR(sb.st_mode);
    const char *mode = json_string_value(json_object_get(st, "mode"));
    const char *d = json_string_value(json_object_get(st, "delegate"));
    const char *droot = json_string_value(json_object_get(st, "delegate_root"));
    _cleanup_free_ char *want_droot =
        sandbox ? xasprintf("%s/%s", tee, AGENT_RUNC_ROOT) : xasprintf("%s/%s", dir, RT_PLAIN_RUNC);
    if (sandbox && (!mode || strcmp(mode, "confidential")))
        return err_set(err, -EPERM,
                       "container \"%s\": its state file says mode \"%s\" but it has a TEE "
                       "sandbox: the file was altered (refusing)",
                       id, mode ? mode : "(none)");
    if (d && strcmp(d, c->delegate) && strcmp(d, "runc") && strcmp(d, "crun"))
        return err_set(err, -EPERM,
                       "container \"%s\": its state file names the delegate \"%s\", which is "
                       "neither the configured runtime (%s) nor runc or crun (refusing)",
                       id, d, c->delegate);
    _cleanup_free_ char *rd = droot ? realpath(droot, NULL) : NULL;
    _cleanup_free_ char *rw = droot ? realpath(want_droot, NULL) : NULL;
    if (droot && (rd && rw ? strcmp(rd, rw) : strcmp(droot, want_droot)))
        return err_set(err, -EPERM,
                       "container \"%s\": its state file names the delegate state %s, not %s "
                       "(refusing)",
                       id, droot, want_droot);
    return 0;
}

static int load_state(json_t **out, const rt_config *c, const char *id, cista_error **err)
{
    int rc;
    if ((rc = check_id(id, err)) < 0)
        return rc;
    /*
     * The container's directory itself, never a symlink the host put in its place: every verb
     * would otherwise act through it (the delegate's state, the sandbox), on a directory the
     * host chose. agent_sandbox_open() checks the sandbox the same way.
     */
    _cleanup_free_ char *dir = xasprintf("%s/%s", c->root, id);
    struct stat ds;
    if (lstat(dir, &ds) == 0 && !S_ISDIR(ds.st_mode))
        return err_set(err, -EPERM,
                       "container \"%s\": %s is a symbolic link or not a directory; the runtime "
                       "root was tampered with, nothing is done through it (remove it by hand; "
                       "a sandbox it pointed to is not touched)",
                       id, dir);
    _cleanup_free_ char *p = xasprintf("%s/%s", dir, RT_STATE);
    _cleanup_free_ char *data = NULL;
    size_t size;
    if (access(p, F_OK) != 0)
        return err_set(err, -ENOENT, "container \"%s\" does not exist (no %s)", id, p);
    if ((rc = util_read_file(&data, &size, p, 1u << 20, err)) < 0)
        return rc;
    _cleanup_json_ json_t *st = NULL;
    if ((rc = js_parse_object(&st, data, size, 1u << 20, "container state", err)) < 0 ||
        (rc = check_state(st, c, id, err)) < 0)
        return rc;
    *out = steal_ptr(&st);
    return 0;
}

static const char *st_str(const json_t *st, const char *k)
{
    return json_string_value(json_object_get(st, k));
}

/* The delegate's state directory; a container still being created has none yet. */
static int st_droot(const char **out, const json_t *st, const char *id, cista_error **err)
{
    *out = json_string_value(json_object_get(st, "delegate_root"));
    if (!*out)
        return err_set(err, -EBUSY,
                       "container \"%s\" is being created (or its create died: "
                       "`delete --force` removes it)",
                       id);
    return 0;
}

/* The state of container @id and its delegate root, which points into *@out. */
static int load_created(json_t **out, const char **out_droot, const rt_config *c, const char *id,
                        cista_error **err)
{
    int rc;
    if ((rc = load_state(out, c, id, err)) < 0)
        return rc;
    return st_droot(out_droot, *out, id, err);
}

/*
 * The configuration to drive @st's delegate with. The delegate recorded at create wins over the
 * current configuration's: a container created by crun must be started, killed and deleted by
 * crun even when the configuration changed since, or a caller reads another one (podman runs
 * start, kill and delete with an environment of its own); otherwise its state is looked for in
 * the wrong runtime and the container and its cgroups leak. @tmp holds the copy that may be
 * returned; it borrows from @c and @st.
 */
static const rt_config *st_config(rt_config *tmp, const rt_config *c, const json_t *st)
{
    const char *d = st_str(st, "delegate");
    if (!d || !strcmp(d, c->delegate))
        return c;
    *tmp = *c;
    tmp->delegate = (char *)d;
    return tmp;
}

static bool st_confidential(const json_t *st)
{
    const char *m = st_str(st, "mode");
    return m && !strcmp(m, "confidential");
}

static int lock_dir(const char *dir, cista_error **err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return err_set_sys(err, -errno, "open %s", dir);
    if (flock(fd, LOCK_EX) < 0) {
        int e = -errno;
        close(fd);
        return err_set_sys(err, e, "lock %s", dir);
    }
    return fd;
}

/* Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot. */
static int proc_start_time(long pid, unsigned long long *out)
{
    _cleanup_free_ char *p = xasprintf("/proc/%ld/stat", pid);
    _cleanup_free_ char *text = NULL;
    size_t n;
    cista_error *e = NULL;
    if (util_read_file(&text, &n, p, 4096, &e) < 0) {
        err_free(e);
        return -ESRCH;
    }
    /* the command name (field 2) may hold spaces and parentheses: count from its last ')' */
    const char *s = strrchr(text, ')');
    for (int field = 2; s && field < 22; field++)
        s = strchr(s + 1, ' ');
    if (!s)
        return -EINVAL;
    *out = strtoull(s + 1, NULL, 10);
    return 0;
}

/* The start time of the init the delegate just created (pid file in @dir), for init_is_ours(). */
static void record_init_start(const char *dir)
{
    _cleanup_free_ char *pp = xasprintf("%s/%s", dir, RT_PID_FILE);
    _cleanup_free_ char *text = NULL;
    size_t n;
    cista_error *e = NULL;
    unsigned long long t;
    if (util_read_file(&text, &n, pp, 64, &e) < 0 ||
        proc_start_time(strtol(text, NULL, 10), &t) < 0) {
        err_free(e);
        return;
    }
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%llu\n", t);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || util_write_file_atomic(dfd, RT_INIT_START_FILE, buf, (size_t)len, 0600, &e) < 0)
        err_free(e);
}

/*
 * containerd and podman name the pid file themselves (--pid-file): the delegate wrote the init's
 * pid there, not into @dir. A copy in @dir keeps delete --force able to find and kill an init
 * whose delegate state is lost (stop_orphan()); what the host's file says is checked there like
 * ours (another pid namespace, the container's root, the recorded start time).
 */
static void adopt_pid_file(const char *dir, const char *host_pid_file)
{
    _cleanup_free_ char *text = NULL;
    size_t n;
    cista_error *e = NULL;
    long pid = 0;
    if (util_read_regular_file(&text, &n, host_pid_file, 64, &e) == 0)
        pid = strtol(text, NULL, 10);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%ld", pid);
    if (pid <= 0 || dfd < 0 ||
        util_write_file_atomic(dfd, RT_PID_FILE, buf, (size_t)len, 0600, &e) < 0) {
        log_warn("create: the init's pid could not be kept (%s): delete --force may not find "
                 "it if the delegate's state is lost",
                 e ? e->msg : "no pid in the pid file");
        err_free(e);
    }
}

static void remove_dir(const rt_config *c, const char *id)
{
    cista_error *e = NULL;
    _cleanup_free_ char *d = cdir(c, id);
    if (agent_sandbox_destroy(d, &e) < 0) {
        log_warn("container %s: %s", id, e->msg);
        err_clear(&e);
    }
    int rfd = open(c->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd >= 0) {
        if (util_rm_rf_at(rfd, id, &e) < 0) {
            log_warn("remove %s/%s: %s", c->root, id, e->msg);
            err_clear(&e);
        }
        close(rfd);
    }
}

static int delegate_fail(int st, const char *what, const char *id, cista_error **err)
{
    if (st < 0)
        return st;
    if (st != 0)
        return err_set(err, -EIO, "%s %s: the delegate runtime exited with status %d (see its log)",
                       what, id, st);
    return 0;
}

/* ---- create ---- */

/* mkdir -p for the state root (0711: ids are listed only to root) */
static int mkdir_p(const char *path, cista_error **err)
{
    _cleanup_free_ char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0711) < 0 && errno != EEXIST)
            return err_set_sys(err, -errno, "mkdir %s", p);
        *s = '/';
    }
    if (mkdir(p, 0711) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", p);
    return 0;
}

/* A plain container: the host's config with an absolute rootfs and clamped rlimits. */
static int plain_bundle(char **out, const char *dir, const char *bundle, json_t *cfg,
                        cista_error **err)
{
    json_t *root = json_object_get(cfg, "root");
    const char *rp = json_string_value(json_object_get(root, "path"));
    if (!rp)
        return err_set(err, -EINVAL, "%s/config.json has no root.path", bundle);
    if (rp[0] != '/') {
        _cleanup_free_ char *abs_bundle = realpath(bundle, NULL);
        if (!abs_bundle)
            return err_set_sys(err, -errno, "bundle %s", bundle);
        _cleanup_free_ char *p = xasprintf("%s/%s", abs_bundle, rp);
        json_object_set_new(root, "path", json_string(p));
    }
    agent_clamp_rlimits(cfg);
    _cleanup_free_ char *b = xasprintf("%s/%s", dir, RT_PLAIN_BUNDLE);
    if (mkdir(b, 0700) < 0 && errno != EEXIST)
        return err_set_sys(err, -errno, "mkdir %s", b);
    _cleanup_close_ int bfd = open(b, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0)
        return err_set_sys(err, -errno, "open %s", b);
    _cleanup_free_ char *text = agent_oci_dump_config(cfg);
    int rc = util_write_file_atomic(bfd, "config.json", text, strlen(text), 0600, err);
    if (rc < 0)
        return rc;
    *out = steal_ptr(&b);
    return 0;
}

static bool str_in(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

static bool is_bind_mount(const json_t *m)
{
    const char *type = json_string_value(json_object_get(m, "type"));
    if (type && !strcmp(type, "bind"))
        return true;
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(m, "options"), i, o)
    {
        if (str_in(json_string_value(o), (const char *const[]){"bind", "rbind", NULL}))
            return true;
    }
    return false;
}

/*
 * The pod sandbox (pause) container runs plain even where plain containers are not allowed, but
 * its image and config are the host's: it is host code beside the confidential containers of
 * its pod (inside the TEE, when the pod is a confidential VM). So it keeps only what pause
 * needs: no bind mount (the state root holds every sandbox's TEE memory and the image store,
 * and /proc/PID/root is another container's root), no device, no hook, no capability, no new
 * privileges, and a pid and mount namespace of its own. Pseudo-filesystems and tmpfs mounts stay;
 * the network, ipc and uts namespaces the CRI made for the pod may be joined.
 */
int rt__confine_pod_sandbox(json_t *cfg, const char *id, cista_error **err)
{
    static const char *const kinds[] = {"proc",   "sysfs",  "tmpfs",   "devpts",
                                        "mqueue", "cgroup", "cgroup2", NULL};
    static const char *const own_ns[] = {"pid", "mount", "user", "cgroup", NULL};
    json_t *proc = json_object_get(cfg, "process");
    if (!json_is_object(proc))
        return err_set(err, -EINVAL, "pod sandbox %s: config.json has no process", id);
    json_t *caps = json_object();
    for (const char *const *k = (const char *const[]){"bounding", "effective", "inheritable",
                                                      "permitted", "ambient", NULL};
         *k; k++)
        json_object_set_new(caps, *k, json_array());
    json_object_set_new(proc, "capabilities", caps);
    json_object_set_new(proc, "noNewPrivileges", json_true());
    json_object_del(cfg, "hooks");
    json_t *kept = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(cfg, "mounts"), i, m)
    {
        const char *dst = st_str(m, "destination");
        if (!is_bind_mount(m) && str_in(st_str(m, "type"), kinds))
            json_array_append(kept, m);
        else
            log_info("pod sandbox %s: its mount on %s is dropped (a pod sandbox gets no bind "
                     "mounts)",
                     id, dst ? dst : "?");
    }
    json_object_set_new(cfg, "mounts", kept);
    json_t *lx = json_object_get(cfg, "linux");
    if (!json_is_object(lx)) {
        lx = json_object();
        json_object_set_new(cfg, "linux", lx);
    }
    json_object_del(lx, "devices");
    json_t *ns = json_object_get(lx, "namespaces");
    if (!json_is_array(ns)) {
        ns = json_array();
        json_object_set_new(lx, "namespaces", ns);
    }
    bool pid = false, mnt = false;
    json_array_foreach(ns, i, m)
    {
        const char *t = json_string_value(json_object_get(m, "type"));
        const char *path = json_string_value(json_object_get(m, "path"));
        if (str_in(t, own_ns) && path && *path)
            return err_set(err, -EPERM,
                           "pod sandbox %s: it would join the %s namespace at %s; a pod "
                           "sandbox runs plain only in a pid and mount namespace of its own",
                           id, t, path);
        pid |= t && !strcmp(t, "pid");
        mnt |= t && !strcmp(t, "mount");
    }
    if (!pid)
        json_array_append_new(ns, json_pack("{s:s}", "type", "pid"));
    if (!mnt)
        json_array_append_new(ns, json_pack("{s:s}", "type", "mount"));
    return 0;
}

static int write_state(const char *dir, json_t *st, cista_error **err)
{
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return err_set_sys(err, -errno, "open %s", dir);
    _cleanup_free_ char *text = js_dump_pretty(st);
    return util_write_file_atomic(dfd, RT_STATE, text, strlen(text), 0600, err);
}

static int make_keysource(agent_keysource **out, const rt_config *c, const rt_confidential *conf,
                          const rt_create_opts *o, cista_error **err)
{
    if (conf->kbs)
        return agent_keysource_kbs_new(out, conf->kbs, c->kbs_cert, err);
    const char *const *kf =
        o && o->key_count ? o->key_files : (const char *const *)c->dev_key_files;
    size_t kn = o && o->key_count ? o->key_count : c->dev_key_count;
    const char *const *sf =
        o && o->secret_count ? o->secret_specs : (const char *const *)c->dev_secrets;
    size_t sn = o && o->secret_count ? o->secret_count : c->dev_secret_count;
    if (kn || sn)
        return agent_keysource_dev_new(out, kf, kn, sf, sn, err);
    *out = agent_keysource_none_new();
    return 0;
}

static int create_confidential(json_t *st, char **out_bundle, char **out_root, int *out_fd,
                               const rt_config *c, const char *dir, const rt_confidential *conf,
                               const char *host_config, size_t host_config_size,
                               const rt_create_opts *o, cista_error **err)
{
    int rc;
    _cleanup_free_ char *tee = rt__resolve_tee(c, conf->tee, err);
    if (!tee)
        return -EINVAL;
    _cleanup_keysource_ agent_keysource *ks = NULL;
    if ((rc = make_keysource(&ks, c, conf, o, err)) < 0)
        return rc;
    agent_host_request req = {
        .config = host_config,
        .config_size = host_config_size,
        .args = o ? o->args : NULL,
        .env = o ? o->env : NULL,
        .host_network = o && o->host_network,
        .volumes = o ? o->volumes : NULL,
        .volume_count = o ? o->volume_count : 0,
    };
    agent_launch_opts lo = {
        .dir = dir,
        .policy = conf->policy,
        .policy_size = conf->policy_size,
        .container = conf->container,
        .image_ref = conf->image,
        .image_key_resource = conf->image_key,
        .tee =
            {
                .tee = tee,
                .sim_state_dir = c->sim_state_dir,
                .tpm_tcti = c->tpm_tcti,
                .tpm_eventlog = c->tpm_eventlog,
                .host_data = conf->has_hash ? conf->policy_hash : NULL,
            },
        .keys = ks,
        .request = &req,
        .tmpfs_size = c->tmpfs_size,
        .private_rootfs = c->private_rootfs,
        .kbs_url = conf->kbs,
        .kbs_ca = c->kbs_cert,
    };
    json_object_set_new(st, "mode", json_string("confidential"));
    json_object_set_new(st, "tee", json_string(tee));
    json_object_set_new(st, "image", json_string(conf->image));
    json_object_set_new(st, "key_source", json_string(ks->ops->name));
    _cleanup_sandbox_ agent_sandbox *sb = NULL;
    if ((rc = agent_sandbox_launch(&sb, &lo, err)) < 0)
        return rc;
    if ((rc = agent_sandbox_create_config(out_bundle, sb, &req, err)) < 0)
        return rc;
    json_object_set_new(st, "container", json_string(agent_sandbox_container(sb)));
    json_object_set_new(st, "policy_sha256", json_string(agent_sandbox_policy_hash(sb)));
    json_object_set_new(st, "dev_keys", json_boolean(agent_sandbox_dev_keys(sb)));
    json_object_set_new(st, "logs", json_boolean(agent_sandbox_logs_allowed(sb)));
    *out_root = xasprintf("%s/%s", agent_sandbox_tee_dir(sb), AGENT_RUNC_ROOT);
    /* output the host may not read stays in TEE memory */
    if ((!o || o->stdio_fd < 0) && (!agent_sandbox_logs_allowed(sb) || (o && o->to_sandbox_log))) {
        _cleanup_free_ char *lp = xasprintf("%s/%s", agent_sandbox_tee_dir(sb), AGENT_LOG);
        *out_fd = openat(agent_sandbox_tee_fd(sb), AGENT_LOG,
                         O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (*out_fd < 0)
            return err_set_sys(err, -errno, "open %s", lp);
        log_info("the policy does not let the host read the output: it stays in the sandbox");
    }
    return 0;
}

int rt_create(const rt_config *c, const char *id, const char *bundle, const rt_create_opts *o,
              cista_error **err)
{
    int rc;
    if ((rc = check_id(id, err)) < 0)
        return rc;
    if (!bundle && !(o && o->confidential))
        return err_set(err, -EINVAL, "create: --bundle is required");
    /* the host's request */
    _cleanup_free_ char *host = NULL;
    size_t host_size = 0;
    _cleanup_json_ json_t *cfg = NULL;
    if (bundle) {
        _cleanup_free_ char *p = xasprintf("%s/config.json", bundle);
        if ((rc = util_read_regular_file(&host, &host_size, p, AGENT_MAX_CONFIG, err)) < 0)
            return rc;
        if ((rc = agent_parse_oci(&cfg, host, host_size, p, err)) < 0)
            return rc;
    }
    rt_confidential ann_conf = {0};
    bool present = false;
    const rt_confidential *conf = o ? o->confidential : NULL;
    if (!conf && cfg) {
        if ((rc = rt_confidential_from_annotations(&ann_conf, &present, cfg, err)) < 0)
            return rc;
        if (present)
            conf = &ann_conf;
    }
    /* a Kubernetes pod's sandbox (pause) container holds no workload: it runs plain */
    const char *ctype =
        cfg ? ann(json_object_get(cfg, "annotations"), "io.kubernetes.cri.container-type") : NULL;
    bool pod_sandbox = ctype && !strcmp(ctype, "sandbox");
    if (pod_sandbox && conf == &ann_conf) {
        rt_confidential_clear(&ann_conf);
        conf = NULL;
    }
    if (pod_sandbox && !conf && !c->allow_plain && (rc = rt__confine_pod_sandbox(cfg, id, err)) < 0)
        return rc;
    if (!conf && !c->allow_plain && !pod_sandbox) {
        rt_confidential_clear(&ann_conf);
        return err_set(err, -EPERM,
                       "container %s: the bundle has no io.cista.image/io.cista.policy "
                       "annotations and this runtime's configuration does not allow plain "
                       "containers (\"allow_plain\": true)",
                       id);
    }

    if ((rc = mkdir_p(c->root, err)) < 0) {
        rt_confidential_clear(&ann_conf);
        return rc;
    }
    _cleanup_free_ char *dir = cdir(c, id);
    if (mkdir(dir, 0700) < 0) {
        int e = -errno;
        rt_confidential_clear(&ann_conf);
        if (e == -EEXIST)
            return err_set(err, -EEXIST, "container \"%s\" already exists", id);
        return err_set_sys(err, e, "mkdir %s", dir);
    }
    _cleanup_close_ int lock = lock_dir(dir, err);
    if (lock < 0) {
        rt_confidential_clear(&ann_conf);
        return lock;
    }
    char created[64];
    time_t now = time(NULL);
    struct tm tm;
    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    _cleanup_json_ json_t *st =
        json_pack("{s:s,s:s,s:s}", "id", id, "created", created, "bundle", bundle ? bundle : "");
    _cleanup_free_ char *gen_bundle = NULL, *droot = NULL;
    _cleanup_close_ int out_fd = -1;
    /* a state from the start, so `delete --force` can clean up after a create that died */
    json_object_set_new(st, "mode", json_string(conf ? "confidential" : "plain"));
    if ((rc = write_state(dir, st, err)) < 0) {
        rt_confidential_clear(&ann_conf);
        remove_dir(c, id);
        return rc;
    }
    if (conf) {
        rc = create_confidential(st, &gen_bundle, &droot, &out_fd, c, dir, conf, host, host_size, o,
                                 err);
    } else {
        if (pod_sandbox)
            log_info("container %s: the pod's sandbox (pause) container runs plain", id);
        else
            log_warn("container %s: PLAIN container (no confidential annotations; allowed by "
                     "allow_plain): the host sees everything",
                     id);
        json_object_set_new(st, "mode", json_string("plain"));
        droot = xasprintf("%s/%s", dir, RT_PLAIN_RUNC);
        rc = plain_bundle(&gen_bundle, dir, bundle, cfg, err);
    }
    rt_confidential_clear(&ann_conf);
    if (host)
        crypto_cleanse(host, host_size);
    if (rc == 0) {
        json_object_set_new(st, "delegate_root", json_string(droot));
        json_object_set_new(st, "delegate", json_string(c->delegate));
        rc = write_state(dir, st, err);
    }
    if (rc == 0) {
        const char *av[12];
        size_t k = 0;
        av[k++] = "";
        av[k++] = o && o->run_pid ? "run" : "create";
        av[k++] = "--bundle";
        av[k++] = gen_bundle;
        _cleanup_free_ char *own_pid = xasprintf("%s/%s", dir, RT_PID_FILE);
        av[k++] = "--pid-file";
        av[k++] = o && o->pid_file ? o->pid_file : own_pid;
        if (o && o->console_socket) {
            av[k++] = "--console-socket";
            av[k++] = o->console_socket;
        }
        av[k++] = id;
        av[k] = NULL;
        int fd = o && o->stdio_fd >= 0 ? o->stdio_fd : out_fd;
        if (o && o->run_pid)
            rc = rt__delegate_spawn(o->run_pid, c, droot, av, fd, err);
        else
            rc = delegate_fail(rt__delegate(c, droot, av, fd, NULL, err), "create", id, err);
    }
    if (rc < 0) {
        remove_dir(c, id);
        return err_wrap(err, "create %s", id);
    }
    if (o && o->pid_file && !o->run_pid)
        adopt_pid_file(dir, o->pid_file);
    if (!(o && o->run_pid))
        record_init_start(dir);
    log_info("container %s created (%s)", id, st_str(st, "mode"));
    return 0;
}

/* ---- the other verbs ---- */

static int simple(const rt_config *c, const char *id, const char *verb, const char *const *extra,
                  cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *st = NULL;
    const char *droot;
    if ((rc = load_created(&st, &droot, c, id, err)) < 0)
        return rc;
    rt_config own_c;
    c = st_config(&own_c, c, st);
    const char *av[12];
    size_t k = 0;
    av[k++] = "";
    av[k++] = verb;
    for (size_t i = 0; extra && extra[i] && k < 10; i++)
        av[k++] = extra[i];
    av[k++] = id;
    av[k] = NULL;
    return delegate_fail(rt__delegate(c, droot, av, -1, NULL, err), verb, id, err);
}

int rt_start(const rt_config *c, const char *id, cista_error **err)
{
    return simple(c, id, "start", NULL, err);
}

int rt_pause(const rt_config *c, const char *id, bool pause, cista_error **err)
{
    return simple(c, id, pause ? "pause" : "resume", NULL, err);
}

int rt_update(const rt_config *c, const char *id, const char *resources, size_t size,
              cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *res = NULL, *st = NULL;
    if ((rc = js_parse_object(&res, resources, size, 1u << 20, "update --resources", err)) < 0 ||
        (rc = load_state(&st, c, id, err)) < 0)
        return rc;
    /* the delegate reads a file: ours, in the container's state directory, re-serialised */
    _cleanup_free_ char *dir = cdir(c, id);
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return err_set_sys(err, -errno, "container \"%s\"", id);
    _cleanup_free_ char *text = js_dump_pretty(res);
    if ((rc = util_write_file_atomic(dfd, "update.json", text, strlen(text), 0600, err)) < 0)
        return rc;
    _cleanup_free_ char *path = xasprintf("%s/update.json", dir);
    const char *extra[] = {"--resources", path, NULL};
    rc = simple(c, id, "update", extra, err);
    unlinkat(dfd, "update.json", 0);
    return rc;
}

int rt_state(json_t **out, const rt_config *c, const char *id, cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *st = NULL;
    const char *droot;
    if ((rc = load_created(&st, &droot, c, id, err)) < 0)
        return rc;
    rt_config own_c;
    c = st_config(&own_c, c, st);
    const char *av[] = {"", "state", id, NULL};
    _cleanup_free_ char *text = NULL;
    rc = rt__delegate(c, droot, av, -1, &text, err);
    if ((rc = delegate_fail(rc, "state", id, err)) < 0)
        return rc;
    json_t *s;
    if ((rc = js_parse_object(&s, text, strlen(text), 1u << 20, "delegate state", err)) < 0)
        return rc;
    /* the host's view: its own bundle, not the one generated in the sandbox */
    const char *b = st_str(st, "bundle");
    if (b && *b)
        json_object_set_new(s, "bundle", json_string(b));
    if (st_confidential(st)) {
        json_object_set_new(s, "rootfs", json_string(""));
        json_t *a = json_object_get(s, "annotations");
        if (!json_is_object(a)) {
            a = json_object();
            json_object_set_new(s, "annotations", a);
        }
        json_object_set_new(a, "io.cista.mode", json_string("confidential"));
        json_object_set_new(a, "io.cista.tee", json_string(st_str(st, "tee")));
    }
    *out = s;
    return 0;
}

int rt_init_pid(pid_t *out, const rt_config *c, const char *id, cista_error **err)
{
    int rc;
    /* the pid file cista asked the delegate for (no delegate call needed) */
    if (rt_id_valid(id)) {
        _cleanup_free_ char *p = xasprintf("%s/%s/%s", c->root, id, RT_PID_FILE);
        _cleanup_free_ char *text = NULL;
        size_t size;
        cista_error *e = NULL;
        if (access(p, F_OK) == 0 && util_read_file(&text, &size, p, 64, &e) == 0) {
            long v = strtol(text, NULL, 10);
            if (v > 0) {
                *out = (pid_t)v;
                return 0;
            }
        }
        err_free(e);
    }
    _cleanup_json_ json_t *s = NULL;
    if ((rc = rt_state(&s, c, id, err)) < 0)
        return rc;
    *out = (pid_t)json_integer_value(json_object_get(s, "pid"));
    return 0;
}

static int open_sandbox(agent_sandbox **out, const rt_config *c, const char *id, const json_t *st,
                        cista_error **err)
{
    _cleanup_free_ char *dir = cdir(c, id);
    return agent_sandbox_open(out, dir, st_str(st, "container"), err);
}

int rt_kill(const rt_config *c, const char *id, int sig, bool all, cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *st = NULL;
    const char *droot;
    if ((rc = load_created(&st, &droot, c, id, err)) < 0)
        return rc;
    rt_config own_c;
    c = st_config(&own_c, c, st);
    if (st_confidential(st)) {
        _cleanup_sandbox_ agent_sandbox *sb = NULL;
        if ((rc = open_sandbox(&sb, c, id, st, err)) < 0 ||
            (rc = agent_allow_signal(sb, sig, err)) < 0)
            return rc;
    }
    char sigs[16];
    snprintf(sigs, sizeof(sigs), "%d", sig);
    const char *av[6];
    size_t k = 0;
    av[k++] = "";
    av[k++] = "kill";
    if (all)
        av[k++] = "--all";
    av[k++] = id;
    av[k++] = sigs;
    av[k] = NULL;
    return delegate_fail(rt__delegate(c, droot, av, -1, NULL, err), "kill", id, err);
}

/*
 * Whether process @pid has the container's rootfs as its root: the sandbox's (confidential) or
 * the generated plain bundle's root.path. A pid reused by another process, even one in a
 * container of its own, has another root — except in another sandbox of the same image whose
 * rootfs is also the read-only bind of the shared tree: so the init's start time, recorded at
 * create, must match too.
 */
static bool init_is_ours(const char *dir, long pid)
{
    _cleanup_free_ char *sp = xasprintf("%s/%s", dir, RT_INIT_START_FILE);
    _cleanup_free_ char *want = NULL;
    size_t wn;
    cista_error *se = NULL;
    if (util_read_file(&want, &wn, sp, 64, &se) == 0) {
        unsigned long long now = 0;
        if (proc_start_time(pid, &now) < 0 || strtoull(want, NULL, 10) != now)
            return false;
    }
    err_free(se);
    _cleanup_free_ char *proot = xasprintf("/proc/%ld/root", pid);
    struct stat a, b;
    if (stat(proot, &a) < 0)
        return false;
    _cleanup_free_ char *conf = xasprintf("%s/%s/%s", dir, AGENT_TEE_DIR, AGENT_ROOTFS);
    if (stat(conf, &b) == 0)
        return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    _cleanup_free_ char *cfgp = xasprintf("%s/%s/config.json", dir, RT_PLAIN_BUNDLE);
    _cleanup_free_ char *text = NULL;
    size_t size;
    cista_error *e = NULL;
    _cleanup_json_ json_t *cfg = NULL;
    if (util_read_file(&text, &size, cfgp, AGENT_MAX_CONFIG, &e) < 0 ||
        agent_parse_oci(&cfg, text, size, "config", &e) < 0) {
        err_free(e);
        return false;
    }
    const char *rp = json_string_value(json_object_get(json_object_get(cfg, "root"), "path"));
    return rp && stat(rp, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/*
 * After the delegate's delete (failed, done, or skipped for want of its state): the container's
 * state goes only once its init is gone (killed with --force, else refused), or a running
 * (confidential) container would be left that nothing manages or gates any more. The init is the
 * pid of the pid file, if it is in a pid namespace other than ours and its root is the
 * container's rootfs (a reused pid is not); killing it ends the container's pid namespace.
 */
static int stop_orphan(const rt_config *c, const char *id, bool force, cista_error **err)
{
    _cleanup_free_ char *p = xasprintf("%s/%s/%s", c->root, id, RT_PID_FILE);
    _cleanup_free_ char *text = NULL;
    size_t size;
    cista_error *e = NULL;
    if (access(p, F_OK) != 0 || util_read_file(&text, &size, p, 64, &e) < 0) {
        err_free(e);
        return 0;
    }
    long pid = strtol(text, NULL, 10);
    _cleanup_free_ char *ns = xasprintf("/proc/%ld/ns/pid", pid);
    struct stat a, b;
    _cleanup_free_ char *dir = cdir(c, id);
    if (pid <= 1 || stat(ns, &a) < 0 || stat("/proc/self/ns/pid", &b) < 0 ||
        (a.st_dev == b.st_dev && a.st_ino == b.st_ino) || !init_is_ours(dir, pid))
        return 0;
    if (kill((pid_t)pid, 0) < 0)
        return 0;
    if (!force)
        return err_set(err, -EBUSY,
                       "container %s: its init %ld still runs (the delegate did not stop "
                       "it); `delete --force` kills it",
                       id, pid);
    log_warn("container %s: the delegate could not delete it; killing its init %ld", id, pid);
    kill((pid_t)pid, SIGKILL);
    for (int i = 0; i < 200; i++) {
        if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
            return 0;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return err_set(err, -EBUSY,
                   "delete --force %s: the delegate failed and the container's init %ld is still "
                   "alive; its state is kept",
                   id, pid);
}

int rt_delete(const rt_config *c, const char *id, bool force, cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *st = NULL;
    if ((rc = load_state(&st, c, id, err)) < 0) {
        if (rc == -ENOENT && force) {
            err_clear(err);
            return 0;
        }
        return rc;
    }
    _cleanup_free_ char *dir = cdir(c, id);
    _cleanup_close_ int lock = lock_dir(dir, err);
    if (lock < 0)
        return lock;
    const char *av[5] = {"", "delete", force ? "--force" : id, force ? id : NULL, NULL};
    const char *droot = st_str(st, "delegate_root");
    rt_config own_c;
    c = st_config(&own_c, c, st);
    _cleanup_free_ char *dstate = droot ? xasprintf("%s/%s", droot, id) : NULL;
    /* a create that died, or a `run` that already cleaned up, left no delegate state */
    bool have = dstate && access(dstate, F_OK) == 0;
    rc = have ? rt__delegate(c, droot, av, -1, NULL, err) : 0;
    if (rc < 0)
        return rc;
    if (rc != 0 && !force)
        return delegate_fail(rc, "delete", id, err);
    /* whatever the delegate said: a delegate whose state was damaged may "delete" a container
     * without stopping it */
    if ((rc = stop_orphan(c, id, force, err)) < 0)
        return rc;
    remove_dir(c, id);
    log_info("container %s deleted", id);
    return 0;
}

int rt_exec(int *out_status, const rt_config *c, const char *id, const rt_exec_opts *o,
            cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *st = NULL;
    const char *droot;
    if ((rc = load_created(&st, &droot, c, id, err)) < 0)
        return rc;
    rt_config own_c;
    c = st_config(&own_c, c, st);
    _cleanup_free_ char *proc = NULL;
    size_t proc_size = 0;
    if (o->process_file) {
        if ((rc = util_read_regular_file(&proc, &proc_size, o->process_file, AGENT_MAX_CONFIG,
                                         err)) < 0)
            return rc;
    } else {
        if (!o->args || !o->args[0])
            return err_set(err, -EINVAL, "exec: no command (--process FILE or ARGS)");
        json_t *args = json_array();
        for (size_t i = 0; o->args[i]; i++)
            json_array_append_new(args, json_string(o->args[i]));
        json_t *env = json_array();
        for (size_t i = 0; o->env && o->env[i]; i++)
            json_array_append_new(env, json_string(o->env[i]));
        _cleanup_json_ json_t *p = json_pack("{s:o,s:o,s:s,s:b}", "args", args, "env", env, "cwd",
                                             o->cwd ? o->cwd : "", "terminal", o->tty);
        proc = js_dump_compact(p);
        proc_size = strlen(proc);
    }
    _cleanup_free_ char *dir = cdir(c, id);
    _cleanup_free_ char *ppath = NULL;
    _cleanup_close_ int out_fd = -1;
    if (st_confidential(st)) {
        _cleanup_sandbox_ agent_sandbox *sb = NULL;
        if ((rc = open_sandbox(&sb, c, id, st, err)) < 0 ||
            (rc = agent_exec_prepare(&ppath, sb, proc, proc_size, err)) < 0)
            return rc;
        if (!agent_sandbox_logs_allowed(sb)) {
            _cleanup_free_ char *lp = xasprintf("%s/%s", agent_sandbox_tee_dir(sb), AGENT_LOG);
            out_fd = openat(agent_sandbox_tee_fd(sb), AGENT_LOG,
                            O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (out_fd < 0)
                return err_set_sys(err, -errno, "open %s", lp);
        }
    } else {
        _cleanup_json_ json_t *p = NULL;
        if ((rc = agent_parse_oci(&p, proc, proc_size, "process.json", err)) < 0)
            return rc;
        _cleanup_json_ json_t *wrap = json_pack("{s:O}", "process", p);
        agent_clamp_rlimits(wrap);
        _cleanup_free_ char *text = agent_oci_dump_process(json_object_get(wrap, "process"));
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return err_set_sys(err, -errno, "open %s", dir);
        char name[64];
        snprintf(name, sizeof(name), "exec-%d.json", (int)getpid());
        if ((rc = util_write_file_atomic(dfd, name, text, strlen(text), 0600, err)) < 0)
            return rc;
        ppath = xasprintf("%s/%s", dir, name);
    }
    const char *av[14];
    size_t k = 0;
    av[k++] = "";
    av[k++] = "exec";
    av[k++] = "--process";
    av[k++] = ppath;
    if (o->detach)
        av[k++] = "--detach";
    if (o->pid_file) {
        av[k++] = "--pid-file";
        av[k++] = o->pid_file;
    }
    if (o->console_socket) {
        av[k++] = "--console-socket";
        av[k++] = o->console_socket;
    }
    av[k++] = id;
    av[k] = NULL;
    rc = rt__delegate(c, droot, av, out_fd, NULL, err);
    unlink(ppath);
    if (rc < 0)
        return rc;
    if (out_status)
        *out_status = rc;
    else if (rc != 0)
        return delegate_fail(rc, "exec", id, err);
    return 0;
}

int rt_ps(json_t **out, const rt_config *c, const char *id, cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *st = NULL;
    const char *droot;
    if ((rc = load_created(&st, &droot, c, id, err)) < 0)
        return rc;
    rt_config own_c;
    c = st_config(&own_c, c, st);
    const char *av[] = {"", "ps", "--format", "json", id, NULL};
    _cleanup_free_ char *text = NULL;
    rc = rt__delegate(c, droot, av, -1, &text, err);
    if ((rc = delegate_fail(rc, "ps", id, err)) < 0)
        return rc;
    return js_parse(out, text, strlen(text), RT_MAX_LOG, "delegate ps", err);
}

int rt_list(json_t **out, const rt_config *c, cista_error **err)
{
    (void)err;
    json_t *list = json_array();
    DIR *d = opendir(c->root);
    if (!d) {
        *out = list;
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!rt_id_valid(e->d_name))
            continue;
        cista_error *e2 = NULL;
        json_t *st = NULL;
        if (load_state(&st, c, e->d_name, &e2) < 0) {
            err_free(e2);
            continue;
        }
        json_t *s = NULL;
        if (rt_state(&s, c, e->d_name, &e2) == 0) {
            json_object_set(st, "status", json_object_get(s, "status"));
            json_object_set(st, "pid", json_object_get(s, "pid"));
            json_decref(s);
        } else {
            json_object_set_new(st, "status",
                                json_string(e2 && e2->code == -EBUSY ? "creating" : "unknown"));
            err_free(e2);
        }
        json_object_del(st, "delegate_root");
        json_array_append_new(list, st);
    }
    closedir(d);
    *out = list;
    return 0;
}

int rt_logs(char **out, size_t *out_size, const rt_config *c, const char *id, cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *st = NULL;
    if ((rc = load_state(&st, c, id, err)) < 0)
        return rc;
    _cleanup_free_ char *dir = cdir(c, id);
    _cleanup_free_ char *path = NULL;
    if (st_confidential(st)) {
        _cleanup_sandbox_ agent_sandbox *sb = NULL;
        if ((rc = open_sandbox(&sb, c, id, st, err)) < 0 || (rc = agent_allow_logs(sb, err)) < 0)
            return rc;
        path = xasprintf("%s/%s", agent_sandbox_tee_dir(sb), AGENT_LOG);
    } else {
        path = xasprintf("%s/%s", dir, RT_PLAIN_LOG);
    }
    if (access(path, F_OK) != 0) {
        *out = xstrdup("");
        *out_size = 0;
        return 0;
    }
    return util_read_file(out, out_size, path, RT_MAX_LOG, err);
}

int rt_inspect(json_t **out, const rt_config *c, const char *id, cista_error **err)
{
    int rc;
    json_t *st = NULL;
    if ((rc = load_state(&st, c, id, err)) < 0)
        return rc;
    if (st_confidential(st)) {
        _cleanup_sandbox_ agent_sandbox *sb = NULL;
        if ((rc = open_sandbox(&sb, c, id, st, err)) < 0) {
            json_decref(st);
            return rc;
        }
        const agent_timings *t = agent_sandbox_timings(sb);
        json_object_set_new(st, "timings_ms",
                            json_pack("{s:f,s:f,s:f,s:f,s:f}", "bind", t->bind, "attest", t->attest,
                                      "keys", t->keys, "unpack", t->unpack, "config", t->config));
        const json_t *cl = agent_sandbox_claims(sb);
        if (cl)
            json_object_set_new(st, "claims", json_deep_copy(cl));
        if (agent_sandbox_rootfs(sb))
            json_object_set_new(st, "rootfs", json_string(agent_sandbox_rootfs(sb)));
        /* the policy's answer kept in TEE state, not state.json's copy on the host's disk
         * (`cista run` streams the output on it) */
        json_object_set_new(st, "logs", json_boolean(agent_sandbox_logs_allowed(sb)));
    }
    json_object_del(st, "delegate_root");
    *out = st;
    return 0;
}

json_t *rt_features(const rt_config *c)
{
    const char *av[] = {"", "features", NULL};
    _cleanup_free_ char *text = NULL;
    cista_error *e = NULL;
    json_t *f = NULL;
    if (rt__delegate(c, "/run/runc", av, -1, &text, &e) == 0) {
        cista_error *e2 = NULL;
        if (js_parse_object(&f, text, strlen(text), 1u << 20, "features", &e2) < 0)
            err_free(e2);
    }
    err_free(e);
    if (!f)
        f = json_pack("{s:s,s:s}", "ociVersionMin", "1.0.0", "ociVersionMax", "1.0.2");
    json_t *a = json_object_get(f, "annotations");
    if (!json_is_object(a)) {
        a = json_object();
        json_object_set_new(f, "annotations", a);
    }
    json_object_set_new(a, RT_ANN_IMAGE, json_string("confidential image reference"));
    json_object_set_new(a, RT_ANN_POLICY, json_string("base64 container policy"));
    json_object_set_new(a, RT_ANN_POLICY_FILE, json_string("container policy file"));
    json_object_set_new(a, RT_ANN_POLICY_HASH, json_string("launch-bound policy SHA-256 (hex)"));
    json_object_set_new(a, RT_ANN_KBS, json_string("KBS URL"));
    json_object_set_new(a, RT_ANN_TEE, json_string("auto|sim|tpm|snp|tdx"));
    json_object_set_new(a, RT_ANN_CONTAINER, json_string("policy container name"));
    json_object_set_new(a, RT_ANN_IMAGE_KEY, json_string("KBS resource of the image key"));
    json_object_set_new(f, "io.cista.delegate", json_string(c->delegate));
    return f;
}

int rt_spec(const rt_config *c, const char *bundle, cista_error **err)
{
    const char *av[] = {"", "spec", "--bundle", bundle, NULL};
    return delegate_fail(rt__delegate(c, "/run/runc", av, -1, NULL, err), "spec", bundle, err);
}
