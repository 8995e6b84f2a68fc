/*
 * delegate.c - running the delegate OCI runtime (runc by default) with only
 * the standard fds, and the runtime configuration file. crun on a hybrid
 * cgroup host runs in a mount namespace of its own that shows it the v1
 * layout only (see below).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/magic.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent.h"
#include "runtime/runtime.h"
#include "runtime/rt_int.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

#define RT_MAX_CONFIG_FILE (64u << 10)
#define RT_MAX_CAPTURE (16u << 20)

/* ---- configuration ---- */

void rt_config_free(rt_config *c)
{
    if (!c)
        return;
    free(c->root);
    free(c->log_file);
    free(c->delegate);
    free(c->tee);
    free(c->sim_state_dir);
    free(c->tpm_tcti);
    free(c->tpm_eventlog);
    free(c->tmpfs_size);
    free(c->kbs_cert);
    for (size_t i = 0; i < c->dev_key_count; i++)
        free(c->dev_key_files[i]);
    free(c->dev_key_files);
    for (size_t i = 0; i < c->dev_secret_count; i++)
        free(c->dev_secrets[i]);
    free(c->dev_secrets);
    free(c);
}

void rt__config_freep(rt_config **c)
{
    rt_config_free(*c);
}

static rt_config *config_defaults(void)
{
    rt_config *c = xzalloc(sizeof(*c));
    c->root = xstrdup(RT_DEFAULT_ROOT);
    c->delegate = xstrdup("runc");
    c->tee = xstrdup("auto");
    return c;
}

static int get_str(char **dst, const json_t *o, const char *key, cista_error **err)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_string(v))
        return err_set(err, -EINVAL, "runtime configuration: \"%s\" must be a string", key);
    free(*dst);
    *dst = xstrdup(json_string_value(v));
    return 0;
}

int rt_config_parse(rt_config **out, const char *data, size_t size, cista_error **err)
{
    int rc;
    _cleanup_rt_config_ rt_config *c = config_defaults();
    _cleanup_json_ json_t *o = NULL;
    if ((rc = js_parse_object(&o, data, size, RT_MAX_CONFIG_FILE, "runtime configuration", err)) <
        0)
        return rc;
    static const char *const known[] = {
        "allow_plain", "runtime",  "tee",           "sim_state_dir", "tpm_tcti", "tpm_eventlog",
        "tmpfs_size",  "kbs_cert", "dev_key_files", "dev_secrets",   "root",     "image_store"};
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        size_t i;
        for (i = 0; i < ARRAY_LEN(known); i++)
            if (!strcmp(key, known[i]))
                break;
        if (i == ARRAY_LEN(known))
            return err_set(err, -EINVAL, "runtime configuration: unknown key \"%s\"", key);
    }
    json_t *ap = json_object_get(o, "allow_plain");
    if (ap && !json_is_boolean(ap))
        return err_set(err, -EINVAL, "runtime configuration: \"allow_plain\" must be a boolean");
    c->allow_plain = json_is_true(ap);
    json_t *is = json_object_get(o, "image_store");
    if (is && (!json_is_string(is) || (strcmp(json_string_value(is), "shared") != 0 &&
                                       strcmp(json_string_value(is), "private") != 0)))
        return err_set(err, -EINVAL,
                       "runtime configuration: \"image_store\" must be \"shared\" or \"private\"");
    c->private_rootfs = is && !strcmp(json_string_value(is), "private");
    if ((rc = get_str(&c->delegate, o, "runtime", err)) < 0 ||
        (rc = get_str(&c->tee, o, "tee", err)) < 0 ||
        (rc = get_str(&c->root, o, "root", err)) < 0 ||
        (rc = get_str(&c->sim_state_dir, o, "sim_state_dir", err)) < 0 ||
        (rc = get_str(&c->tpm_tcti, o, "tpm_tcti", err)) < 0 ||
        (rc = get_str(&c->tpm_eventlog, o, "tpm_eventlog", err)) < 0 ||
        (rc = get_str(&c->tmpfs_size, o, "tmpfs_size", err)) < 0 ||
        (rc = get_str(&c->kbs_cert, o, "kbs_cert", err)) < 0)
        return rc;
    json_t *kf = json_object_get(o, "dev_key_files");
    if (kf) {
        size_t i;
        if (!json_is_array(kf))
            return err_set(err, -EINVAL, "runtime configuration: dev_key_files is not an array");
        c->dev_key_files = xzalloc((json_array_size(kf) + 1) * sizeof(char *));
        json_array_foreach(kf, i, v)
        {
            if (!json_is_string(v))
                return err_set(err, -EINVAL, "runtime configuration: dev_key_files[%zu]", i);
            c->dev_key_files[c->dev_key_count++] = xstrdup(json_string_value(v));
        }
    }
    json_t *ds = json_object_get(o, "dev_secrets");
    if (ds) {
        if (!json_is_object(ds))
            return err_set(err, -EINVAL,
                           "runtime configuration: dev_secrets is not an object {resource: file}");
        c->dev_secrets = xzalloc((json_object_size(ds) + 1) * sizeof(char *));
        json_object_foreach(ds, key, v)
        {
            if (!json_is_string(v))
                return err_set(err, -EINVAL, "runtime configuration: dev_secrets.%s", key);
            c->dev_secrets[c->dev_secret_count++] = xasprintf("%s=%s", key, json_string_value(v));
        }
    }
    *out = steal_ptr(&c);
    return 0;
}

int rt_config_load(rt_config **out, const char *path, cista_error **err)
{
    int rc;
    if (!path)
        path = getenv("CISTA_RUNTIME_CONFIG");
    if (!path || !*path) {
        if (access(RT_DEFAULT_CONFIG, F_OK) != 0) {
            *out = config_defaults();
            return 0;
        }
        path = RT_DEFAULT_CONFIG;
    }
    _cleanup_free_ char *data = NULL;
    size_t size;
    if ((rc = util_read_file(&data, &size, path, RT_MAX_CONFIG_FILE, err)) < 0)
        return err_wrap(err, "runtime configuration %s", path);
    if ((rc = rt_config_parse(out, data, size, err)) < 0)
        return err_wrap(err, "%s", path);
    return 0;
}

/* ---- crun on a hybrid cgroup host ---- */

/*
 * A hybrid host mounts the cgroup v1 controllers under /sys/fs/cgroup and a cgroup v2 hierarchy at
 * /sys/fs/cgroup/unified. crun (1.8) refuses such a host as soon as the v2 hierarchy has any
 * controller ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"), even
 * with --cgroup-manager=disabled; runc uses the v1 controllers and ignores the v2 one. crun
 * decides from what it finds mounted: without /sys/fs/cgroup/unified it sees a plain v1 host. So
 * each crun that cista starts on such a host runs in a mount namespace of its own, a slave of the
 * host's (what the host mounts later still reaches it, nothing it mounts reaches the host), with
 * the v2 mount detached there. Every invocation (create, start, state, kill, delete, exec, ...)
 * must see the same layout, or one would look for cgroups where another did not put them.
 * The v2 controllers (hugetlb here) are then out of crun's reach, and a controller lives on one
 * hierarchy only: a container whose configuration asks for one of them is refused at create.
 */
#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP_UNIFIED CGROUP_ROOT "/unified"

static bool delegate_is_crun(const rt_config *c)
{
    const char *base = strrchr(c->delegate, '/');
    return !strcmp(base ? base + 1 : c->delegate, "crun");
}

/*
 * The controllers of the v2 hierarchy of a hybrid host in *out (space-separated, caller frees),
 * or NULL when the host is not hybrid or its v2 hierarchy has none (crun accepts both).
 */
static int hybrid_v2_controllers(char **out, cista_error **err)
{
    *out = NULL;
    struct statfs root, unified;
    if (statfs(CGROUP_ROOT, &root) < 0 || root.f_type == CGROUP2_SUPER_MAGIC ||
        statfs(CGROUP_UNIFIED, &unified) < 0 || unified.f_type != CGROUP2_SUPER_MAGIC)
        return 0;
    _cleanup_free_ char *list = NULL;
    size_t size;
    int rc = util_read_file(&list, &size, CGROUP_UNIFIED "/cgroup.controllers", 4096, err);
    if (rc < 0)
        return rc;
    while (size && (list[size - 1] == '\n' || list[size - 1] == ' '))
        list[--size] = 0;
    if (size)
        *out = steal_ptr(&list);
    return 0;
}

static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == 0 || p[n] == ' '))
            return true;
    return false;
}

static bool non_empty(const json_t *v)
{
    return (json_is_object(v) && json_object_size(v)) || (json_is_array(v) && json_array_size(v));
}

/*
 * Whether linux.resources of @cfg sets a limit whose cgroup controller is on the v2 list @v2: its
 * member in *out_what, the controller in @ctl.
 */
static bool resource_on_v2(const char **out_what, char ctl[static 32], const json_t *cfg,
                           const char *v2)
{
    json_t *res = json_object_get(json_object_get(cfg, "linux"), "resources");
    /* OCI linux.resources members and their controllers (devices and network: v1 or eBPF) */
    static const char *const map[][2] = {
        {"memory", "memory"}, {"blockIO", "io"}, {"hugepageLimits", "hugetlb"},
        {"pids", "pids"},     {"rdma", "rdma"},
    };
    for (size_t i = 0; i < ARRAY_LEN(map); i++) {
        *out_what = map[i][0];
        snprintf(ctl, 32, "%s", map[i][1]);
        if (non_empty(json_object_get(res, map[i][0])) && has_word(v2, ctl))
            return true;
    }
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(res, "cpu"), key, v)
    {
        *out_what = "cpu";
        snprintf(ctl, 32, "%s", !strcmp(key, "cpus") || !strcmp(key, "mems") ? "cpuset" : "cpu");
        if (!json_is_null(v) && has_word(v2, ctl))
            return true;
    }
    /* cgroup v2 files by name ("hugetlb.2MB.max"): the controller is the part before the dot */
    json_object_foreach(json_object_get(res, "unified"), key, v)
    {
        *out_what = "unified";
        snprintf(ctl, 32, "%.*s", (int)strcspn(key, "."), key);
        if (*ctl && has_word(v2, ctl))
            return true;
    }
    return false;
}

/* The bundle directory of a create/run command line (OCI: the working directory by default). */
static const char *bundle_arg(const char *const *argv)
{
    for (size_t i = 2; argv[i]; i++)
        if ((!strcmp(argv[i], "--bundle") || !strcmp(argv[i], "-b")) && argv[i + 1])
            return argv[i + 1];
    return ".";
}

/*
 * Whether @c's delegate must run with the v2 hierarchy hidden (*out), and for a create or run,
 * whether the bundle's configuration can do without the v2 controllers.
 */
static int plan_cgroup_view(bool *out, const rt_config *c, const char *const *argv,
                            cista_error **err)
{
    *out = false;
    if (!delegate_is_crun(c))
        return 0;
    _cleanup_free_ char *v2 = NULL;
    int rc = hybrid_v2_controllers(&v2, err);
    if (rc < 0 || !v2)
        return rc;
    *out = true;
    log_debug("delegate: %s runs in a mount namespace without " CGROUP_UNIFIED
              " (hybrid cgroup host; v2 controllers: %s)",
              c->delegate, v2);
    const char *verb = argv[1] ? argv[1] : "";
    if (strcmp(verb, "create") && strcmp(verb, "run"))
        return 0;
    const char *bundle = bundle_arg(argv);
    _cleanup_free_ char *p = xasprintf("%s/config.json", bundle);
    _cleanup_free_ char *text = NULL;
    size_t size;
    _cleanup_json_ json_t *cfg = NULL;
    if ((rc = util_read_file(&text, &size, p, AGENT_MAX_CONFIG, err)) < 0 ||
        (rc = agent_parse_oci(&cfg, text, size, p, err)) < 0)
        return rc;
    const char *what = NULL;
    char ctl[32];
    if (resource_on_v2(&what, ctl, cfg, v2))
        return err_set(err, -ENOTSUP,
                       "%s: linux.resources.%s needs the %s cgroup controller, which this host "
                       "attaches to the cgroup v2 hierarchy of a hybrid layout (" CGROUP_UNIFIED
                       ": %s); crun cannot use that hierarchy (cista hides it from crun so that "
                       "crun runs at all): drop the limit, or use runc as the delegate "
                       "(\"runtime\" in the runtime configuration)",
                       p, what, ctl, v2);
    return 0;
}

/*
 * In the forked child, before exec: a mount namespace of its own without the v2 hierarchy.
 * Only system calls (the parent may have threads).
 */
static int hide_cgroup_v2(const char **out_step)
{
    *out_step = "unshare(CLONE_NEWNS)";
    if (unshare(CLONE_NEWNS) < 0)
        return -errno;
    *out_step = "making / a recursive slave";
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        return -errno;
    *out_step = "umount " CGROUP_UNIFIED;
    if (umount2(CGROUP_UNIFIED, MNT_DETACH) < 0)
        return -errno;
    return 0;
}

/* ---- the delegate ---- */

/*
 * The environment of a delegate: ours without the variables that change how crun makes a
 * container (RUN_OCI_SECCOMP_RECEIVER hands the container's seccomp listener to a socket of the
 * host's choosing). Made before fork: the array is freed by the caller, its strings are ours.
 */
static char **delegate_env(void)
{
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = xzalloc((n + 1) * sizeof(char *));
    for (size_t i = 0, k = 0; i < n; i++)
        if (strncmp(environ[i], "RUN_OCI_", 8) != 0)
            envp[k++] = environ[i];
    return envp;
}

/*
 * The delegate's executable: a name is looked up in the system's directories, not in the
 * caller's PATH. The delegate gets the TEE's bundle (secret env values, the plaintext rootfs):
 * whoever sets cista's environment must not choose the program that receives it.
 */
#define RT_DELEGATE_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static char *resolve_delegate(const char *name, cista_error **err)
{
    if (strchr(name, '/'))
        return xstrdup(name);
    const char *dirs = RT_DELEGATE_PATH;
    while (*dirs) {
        size_t len = strcspn(dirs, ":");
        char *p = xasprintf("%.*s/%s", (int)len, dirs, name);
        if (access(p, X_OK) == 0)
            return p;
        free(p);
        dirs += len + (dirs[len] == ':');
    }
    err_set(err, -ENOENT,
            "delegate runtime \"%s\" not found in %s (install it, or give its "
            "absolute path as \"runtime\")",
            name, RT_DELEGATE_PATH);
    return NULL;
}

static int spawn(pid_t *out_pid, int *out_capture_fd, const rt_config *c, const char *delegate_root,
                 const char *const *argv, int out_fd, bool capture, cista_error **err)
{
    size_t n = 0;
    while (argv[n])
        n++;
    _cleanup_free_ const char **av = xzalloc((n + 12) * sizeof(char *));
    size_t k = 0;
    av[k++] = c->delegate;
    av[k++] = "--root";
    av[k++] = delegate_root;
    if (c->log_file) {
        av[k++] = "--log";
        av[k++] = c->log_file;
        av[k++] = "--log-format";
        av[k++] = c->log_json ? "json" : "text";
    }
    if (c->debug)
        av[k++] = "--debug";
    for (size_t i = 1; i < n; i++)
        av[k++] = argv[i];
    av[k] = NULL;
    if (log_get_level() >= LOG_LVL_DEBUG) {
        cbuf b = CBUF_INIT;
        for (size_t i = 0; av[i]; i++) {
            buf_puts(&b, i ? " " : "");
            buf_puts(&b, av[i]);
        }
        log_debug("delegate: %s", (char *)b.data);
        buf_free(&b);
    }

    _cleanup_free_ char *exe = resolve_delegate(c->delegate, err);
    if (!exe)
        return -ENOENT;
    bool hide_v2 = false;
    int rc = plan_cgroup_view(&hide_v2, c, argv, err);
    if (rc < 0)
        return rc;
    int pfd[2] = {-1, -1};
    if (capture && pipe2(pfd, O_CLOEXEC) < 0)
        return err_set_sys(err, -errno, "pipe");
    _cleanup_free_ char **envp = delegate_env();
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        if (capture) {
            close(pfd[0]);
            close(pfd[1]);
        }
        return err_set_sys(err, e, "fork");
    }
    if (pid == 0) {
        if (out_fd >= 0) {
            dup2(out_fd, STDOUT_FILENO);
            dup2(out_fd, STDERR_FILENO);
        }
        if (capture)
            dup2(pfd[1], STDOUT_FILENO);
        /* nothing of ours reaches the delegate or the container: CVE-2024-21626 */
        if (syscall(SYS_close_range, 3U, ~0U, 0U) < 0)
            for (int fd = 3; fd < 65536; fd++)
                close(fd);
        signal(SIGPIPE, SIG_DFL);
        const char *step = NULL;
        if (hide_v2 && (rc = hide_cgroup_v2(&step)) < 0) {
            fprintf(stderr,
                    "cista: running %s with the v1 cgroup layout of this hybrid host: %s: %s\n",
                    av[0], step, strerror(-rc));
            _exit(127);
        }
        execve(exe, (char *const *)av, envp);
        fprintf(stderr, "cista: exec %s: %s\n", av[0], strerror(errno));
        _exit(127);
    }
    if (capture) {
        close(pfd[1]);
        *out_capture_fd = pfd[0];
    }
    *out_pid = pid;
    return 0;
}

int rt__delegate_spawn(pid_t *out, const rt_config *c, const char *delegate_root,
                       const char *const *argv, int out_fd, cista_error **err)
{
    return spawn(out, NULL, c, delegate_root, argv, out_fd, false, err);
}

int rt__delegate(const rt_config *c, const char *delegate_root, const char *const *argv, int out_fd,
                 char **capture, cista_error **err)
{
    pid_t pid;
    int cfd = -1;
    int rc = spawn(&pid, &cfd, c, delegate_root, argv, out_fd, capture != NULL, err);
    if (rc < 0)
        return rc;
    cbuf out = CBUF_INIT;
    buf_init(&out, RT_MAX_CAPTURE, false);
    if (capture) {
        uint8_t tmp[8192];
        for (;;) {
            ssize_t r = read(cfd, tmp, sizeof(tmp));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            cista_error *e2 = NULL;
            if (buf_append(&out, tmp, (size_t)r, &e2) < 0)
                err_free(e2);
        }
        close(cfd);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            buf_free(&out);
            return err_set_sys(err, -errno, "wait for %s", c->delegate);
        }
    }
    if (capture) {
        size_t sz;
        if (!out.data)
            buf_puts(&out, "");
        *capture = (char *)buf_steal(&out, &sz);
    }
    buf_free(&out);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}
