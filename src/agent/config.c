/*
 * config.c - the container's OCI config, built inside the TEE from the
 * verified image config and the policy, taking from the host's request only
 * fields that are then checked against the policy (process, mounts, sysctls)
 * or that cannot hurt the workload's confidentiality (cgroup limits,
 * hostname, network namespace). Hooks, devices, LSM labels and user
 * namespaces from the host are dropped; masked and read-only paths are
 * always cista's.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "agent/agent.h"
#include "agent/agent_int.h"
#include "util/json.h"
#include "util/log.h"
#include "util/util.h"

static const char *const g_masked[] = {
    "/proc/acpi",          "/proc/asound",     "/proc/kcore",       "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi",          "/sys/firmware",
};
static const char *const g_readonly[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static const char *const g_default_dest[] = {
    "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
};

bool agent__is_default_mount(const char *destination)
{
    for (size_t i = 0; i < ARRAY_LEN(g_default_dest); i++)
        if (!strcmp(destination, g_default_dest[i]))
            return true;
    return false;
}

json_t *agent__default_mounts(void)
{
    return json_pack("[{s:s,s:s,s:s,s:[sss]},"
                     "{s:s,s:s,s:s,s:[ssss]},"
                     "{s:s,s:s,s:s,s:[ssssss]},"
                     "{s:s,s:s,s:s,s:[sssss]},"
                     "{s:s,s:s,s:s,s:[sss]},"
                     "{s:s,s:s,s:s,s:[ssss]},"
                     "{s:s,s:s,s:s,s:[sssss]}]",
                     "destination", "/proc", "type", "proc", "source", "proc", "options", "nosuid",
                     "noexec", "nodev", "destination", "/dev", "type", "tmpfs", "source", "tmpfs",
                     "options", "nosuid", "strictatime", "mode=755", "size=65536k", "destination",
                     "/dev/pts", "type", "devpts", "source", "devpts", "options", "nosuid",
                     "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5", "destination",
                     "/dev/shm", "type", "tmpfs", "source", "shm", "options", "nosuid", "noexec",
                     "nodev", "mode=1777", "size=65536k", "destination", "/dev/mqueue", "type",
                     "mqueue", "source", "mqueue", "options", "nosuid", "noexec", "nodev",
                     "destination", "/sys", "type", "sysfs", "source", "sysfs", "options", "nosuid",
                     "noexec", "nodev", "ro", "destination", "/sys/fs/cgroup", "type", "cgroup",
                     "source", "cgroup", "options", "nosuid", "noexec", "nodev", "relatime", "ro");
}

static json_t *str_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static size_t vlen(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* "NAME=VALUE" -> length of NAME (the whole string when there is no '='). */
static size_t env_name_len(const char *e)
{
    const char *eq = strchr(e, '=');
    return eq ? (size_t)(eq - e) : strlen(e);
}

static bool env_has_name(const json_t *env, const char *e)
{
    size_t n = env_name_len(e);
    size_t i;
    json_t *v;
    json_array_foreach(env, i, v)
    {
        const char *s = json_string_value(v);
        if (s && env_name_len(s) == n && !strncmp(s, e, n))
            return true;
    }
    return false;
}

/* Append host env entries whose names the base does not define (base wins). */
static int merge_env(json_t *base, const json_t *host, cista_error **err)
{
    size_t i;
    json_t *v;
    if (!host)
        return 0;
    if (!json_is_array(host))
        return err_set(err, -EINVAL, "process.env of the host's request is not an array");
    json_array_foreach(host, i, v)
    {
        const char *s = json_string_value(v);
        if (!s)
            return err_set(err, -EINVAL, "process.env[%zu] of the host's request is not a string",
                           i);
        if (!env_has_name(base, s))
            json_array_append_new(base, json_string(s));
    }
    return 0;
}

/* Image user "UID[:GID]" (numeric only: names need the image's /etc/passwd, which policy
 * generation refuses too). */
static int image_user(int64_t *uid, int64_t *gid, const char *user, cista_error **err)
{
    *uid = 0;
    *gid = 0;
    if (!user || !*user)
        return 0;
    char *end;
    errno = 0;
    unsigned long u = strtoul(user, &end, 10);
    if (end == user || errno || u > 0xFFFFFFFEul || (*end && *end != ':'))
        return err_set(err, -EINVAL,
                       "image user \"%s\" is not numeric; build the image with a numeric "
                       "USER (uid[:gid])",
                       user);
    *uid = (int64_t)u;
    *gid = (int64_t)u;
    if (*end == ':') {
        const char *g = end + 1;
        unsigned long gv = strtoul(g, &end, 10);
        if (end == g || *end || errno || gv > 0xFFFFFFFEul)
            return err_set(err, -EINVAL, "image user \"%s\": group is not numeric", user);
        *gid = (int64_t)gv;
    }
    return 0;
}

static const struct {
    const char *name;
    int resource;
} g_rlimits[] = {
    {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_CORE", RLIMIT_CORE},
    {"RLIMIT_CPU", RLIMIT_CPU},
    {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE},
    {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_NPROC", RLIMIT_NPROC},
    {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME},
    {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_STACK", RLIMIT_STACK},
};

static json_int_t rl_val(rlim_t v)
{
    /* OCI uses uint64 with RLIM_INFINITY as all ones; jansson ints are signed. */
    return v == RLIM_INFINITY ? -1 : (json_int_t)v;
}

static rlim_t rl_from(const json_t *v)
{
    json_int_t x = json_integer_value(v);
    if (json_is_real(v))
        return RLIM_INFINITY; /* > 2^63, parsed as a real: "unlimited" */
    return x < 0 ? RLIM_INFINITY : (rlim_t)x;
}

int agent_clamp_rlimits(json_t *config)
{
    json_t *proc = json_object_get(config, "process");
    json_t *rl = proc ? json_object_get(proc, "rlimits") : NULL;
    if (!json_is_array(rl))
        return 0;
    int changed = 0;
    for (size_t i = 0; i < json_array_size(rl);) {
        json_t *e = json_array_get(rl, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        int res = -1;
        for (size_t k = 0; type && k < ARRAY_LEN(g_rlimits); k++)
            if (!strcmp(type, g_rlimits[k].name))
                res = g_rlimits[k].resource;
        struct rlimit cur;
        if (res < 0 || getrlimit(res, &cur) < 0) {
            log_info("dropping rlimit %s: unknown resource", type ? type : "(none)");
            json_array_remove(rl, i);
            changed++;
            continue;
        }
        rlim_t hard = rl_from(json_object_get(e, "hard"));
        rlim_t soft = rl_from(json_object_get(e, "soft"));
        rlim_t nh = hard, ns = soft;
        /* Without CAP_SYS_RESOURCE a hard limit can only go down. */
        if (cur.rlim_max != RLIM_INFINITY && (nh == RLIM_INFINITY || nh > cur.rlim_max))
            nh = cur.rlim_max;
        if (ns == RLIM_INFINITY ? nh != RLIM_INFINITY : (nh != RLIM_INFINITY && ns > nh))
            ns = nh;
        if (nh != hard || ns != soft) {
            log_info("rlimit %s clamped to soft %lld hard %lld (this host cannot raise limits)",
                     type, (long long)rl_val(ns), (long long)rl_val(nh));
            json_object_set_new(e, "hard", json_integer(rl_val(nh)));
            json_object_set_new(e, "soft", json_integer(rl_val(ns)));
            changed++;
        }
        i++;
    }
    return changed;
}

static json_t *default_rlimits(void)
{
    return json_pack("[{s:s,s:I,s:I}]", "type", "RLIMIT_NOFILE", "hard", (json_int_t)1024, "soft",
                     (json_int_t)1024);
}

static json_t *caps_from(const json_t *src)
{
    /* Inheritable is always empty (CVE-2022-29162: file caps gained on execve). */
    json_t *c = json_object();
    static const char *const sets[] = {"bounding", "effective", "permitted", "ambient"};
    for (size_t i = 0; i < ARRAY_LEN(sets); i++) {
        json_t *v = src ? json_object_get(src, sets[i]) : NULL;
        json_object_set_new(c, sets[i], json_is_array(v) ? json_deep_copy(v) : json_array());
    }
    json_object_set_new(c, "inheritable", json_array());
    return c;
}

static int check_strings(const json_t *a, const char *what, cista_error **err)
{
    size_t i;
    json_t *v;
    if (!json_is_array(a))
        return err_set(err, -EINVAL, "%s of the host's request is not an array", what);
    json_array_foreach(a, i, v) if (!json_is_string(v)) return err_set(
        err, -EINVAL, "%s[%zu] of the host's request is not a string", what, i);
    return 0;
}

/* The process: from the host's request where given, else from the image and the policy. */
static int build_process(json_t **out, const img_config *ic, const json_t *rules,
                         const agent_host_request *req, const json_t *host_proc, cista_error **err)
{
    int rc;
    const json_t *prules = json_object_get(rules, "process");
    _cleanup_json_ json_t *proc = json_object();

    /* args: the host's (checked), else the image's entrypoint + cmd */
    json_t *hargs = host_proc ? json_object_get(host_proc, "args") : NULL;
    if (req->args && req->args[0]) {
        json_t *a = json_array();
        size_t ne = vlen(ic->entrypoint);
        for (size_t i = 0; i < ne; i++)
            json_array_append_new(a, json_string(ic->entrypoint[i]));
        for (size_t i = 0; req->args[i]; i++)
            json_array_append_new(a, json_string(req->args[i]));
        json_object_set_new(proc, "args", a);
    } else if (hargs && json_array_size(hargs) > 0) {
        if ((rc = check_strings(hargs, "process.args", err)) < 0)
            return rc;
        json_object_set_new(proc, "args", json_deep_copy(hargs));
    } else {
        json_t *a = json_array();
        size_t ne = vlen(ic->entrypoint), nc = vlen(ic->cmd);
        for (size_t i = 0; i < ne; i++)
            json_array_append_new(a, json_string(ic->entrypoint[i]));
        for (size_t i = 0; i < nc; i++)
            json_array_append_new(a, json_string(ic->cmd[i]));
        if (json_array_size(a) == 0) {
            json_decref(a);
            return err_set(err, -EINVAL,
                           "no command: the image has no Entrypoint/Cmd and none was given");
        }
        json_object_set_new(proc, "args", a);
    }

    /* env: the image's (verified) first; host variables it does not define after them */
    json_t *env = json_array();
    json_object_set_new(proc, "env", env);
    size_t nenv = vlen(ic->env);
    for (size_t i = 0; i < nenv; i++)
        json_array_append_new(env, json_string(ic->env[i]));
    if (!env_has_name(env, "PATH="))
        json_array_append_new(
            env, json_string("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    if (host_proc && (rc = merge_env(env, json_object_get(host_proc, "env"), err)) < 0)
        return rc;
    for (size_t i = 0; req->env && req->env[i]; i++) {
        if (!strchr(req->env[i], '='))
            return err_set(err, -EINVAL, "env \"%s\" is not NAME=VALUE", req->env[i]);
        if (env_has_name(env, req->env[i])) {
            /* an explicit override replaces the image's value (and is checked) */
            size_t n = env_name_len(req->env[i]);
            for (size_t k = 0; k < json_array_size(env); k++) {
                const char *s = json_string_value(json_array_get(env, k));
                if (env_name_len(s) == n && !strncmp(s, req->env[i], n))
                    json_array_set_new(env, k, json_string(req->env[i]));
            }
        } else {
            json_array_append_new(env, json_string(req->env[i]));
        }
    }

    /* cwd: the host's unless it is the default "/", then the image's */
    const char *hcwd = host_proc ? json_string_value(json_object_get(host_proc, "cwd")) : NULL;
    const char *cwd = "/";
    if (hcwd && *hcwd && strcmp(hcwd, "/"))
        cwd = hcwd;
    else if (!host_proc && prules && json_string_value(json_object_get(prules, "cwd")))
        cwd = json_string_value(json_object_get(prules, "cwd"));
    else if (ic->working_dir && *ic->working_dir)
        cwd = ic->working_dir;
    json_object_set_new(proc, "cwd", json_string(cwd));

    /* user: the host's; uid 0 from a host that did not look at the image means the image's */
    int64_t iuid, igid;
    if ((rc = image_user(&iuid, &igid, ic->user, err)) < 0)
        return rc;
    json_t *huser = host_proc ? json_object_get(host_proc, "user") : NULL;
    json_t *user;
    if (huser && json_is_object(huser)) {
        int64_t uid = json_integer_value(json_object_get(huser, "uid"));
        int64_t gid = json_integer_value(json_object_get(huser, "gid"));
        if (uid == 0 && gid == 0 && (iuid || igid)) {
            uid = iuid;
            gid = igid;
        }
        user = json_pack("{s:I,s:I}", "uid", (json_int_t)uid, "gid", (json_int_t)gid);
        json_t *ag = json_object_get(huser, "additionalGids");
        if (json_is_array(ag))
            json_object_set_new(user, "additionalGids", json_deep_copy(ag));
    } else if (!host_proc && prules && json_is_object(json_object_get(prules, "user"))) {
        json_t *pu = json_object_get(prules, "user");
        user = json_pack("{s:I,s:I}", "uid", json_integer_value(json_object_get(pu, "uid")), "gid",
                         json_integer_value(json_object_get(pu, "gid")));
        json_t *ag = json_object_get(pu, "additional_gids");
        if (json_is_array(ag) && json_array_size(ag))
            json_object_set_new(user, "additionalGids", json_deep_copy(ag));
    } else {
        user = json_pack("{s:I,s:I}", "uid", (json_int_t)iuid, "gid", (json_int_t)igid);
    }
    json_object_set_new(proc, "user", user);

    /* capabilities: the host's sets (checked), else exactly the policy's */
    json_t *hcaps = host_proc ? json_object_get(host_proc, "capabilities") : NULL;
    json_object_set_new(
        proc, "capabilities",
        caps_from(json_is_object(hcaps) ? hcaps : json_object_get(rules, "capabilities")));

    bool nnp = json_is_true(json_object_get(prules, "no_new_privileges")) ||
               (host_proc && json_is_true(json_object_get(host_proc, "noNewPrivileges")));
    json_object_set_new(proc, "noNewPrivileges", json_boolean(nnp));

    bool terminal =
        host_proc ? json_is_true(json_object_get(host_proc, "terminal")) : req->terminal;
    json_object_set_new(proc, "terminal", json_boolean(terminal));
    json_t *cs = host_proc ? json_object_get(host_proc, "consoleSize") : NULL;
    if (json_is_object(cs))
        json_object_set_new(proc, "consoleSize", json_deep_copy(cs));
    json_t *oom = host_proc ? json_object_get(host_proc, "oomScoreAdj") : NULL;
    if (json_is_integer(oom))
        json_object_set_new(proc, "oomScoreAdj", json_deep_copy(oom));
    json_t *rl = host_proc ? json_object_get(host_proc, "rlimits") : NULL;
    json_object_set_new(proc, "rlimits",
                        json_is_array(rl) ? json_deep_copy(rl) : default_rlimits());
    *out = steal_ptr(&proc);
    return 0;
}

/*
 * A seccomp filter of the host's request restricts the container and so may pass, but not one
 * that hands syscalls to a user-space supervisor: SCMP_ACT_NOTIFY with a listener socket
 * (runc's listenerPath, crun's receiver) lets whoever holds the listener answer the workload's
 * syscalls and install its own fds in the process (SECCOMP_IOCTL_NOTIF_ADDFD), and
 * SCMP_ACT_TRACE defers them to a ptracer.
 */
static int check_seccomp(const json_t *sc, cista_error **err)
{
    static const char *const refused[] = {"SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE"};
    if (!json_is_object(sc))
        return err_set(err, -EINVAL, "the host's config.json: linux.seccomp is not an object");
    if (json_object_get(sc, "listenerPath") || json_object_get(sc, "listenerMetadata"))
        return err_set(err, -EPERM,
                       "the host's linux.seccomp names a listener: the workload's syscalls would "
                       "be answered outside the TEE (refused)");
    const char *action = json_string_value(json_object_get(sc, "defaultAction"));
    json_t *flags = json_object_get(sc, "flags"), *calls = json_object_get(sc, "syscalls"), *v;
    size_t i;
    json_array_foreach(flags, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), "SECCOMP_FILTER_FLAG_NEW_LISTENER"))
            return err_set(err, -EPERM,
                           "the host's linux.seccomp asks for SECCOMP_FILTER_FLAG_NEW_LISTENER "
                           "(a syscall supervisor outside the TEE; refused)");
    }
    for (i = 0; i <= json_array_size(calls); i++) {
        if (i > 0)
            action = json_string_value(json_object_get(json_array_get(calls, i - 1), "action"));
        for (size_t k = 0; action && k < ARRAY_LEN(refused); k++)
            if (!strcmp(action, refused[k]))
                return err_set(err, -EPERM,
                               "the host's linux.seccomp uses %s: the workload's syscalls would "
                               "be decided outside the TEE (refused)",
                               refused[k]);
    }
    return 0;
}

/*
 * The annotations of the host's request that reach the delegate: only these namespaces, which
 * runc and crun do not act on. Others may change how the container is made (crun's
 * run.oci.seccomp.receiver, run.oci.handler, run.oci.keep_original_groups; runc's
 * org.systemd.property.*), so they are dropped.
 */
static json_t *inert_annotations(const json_t *ann)
{
    static const char *const keep[] = {"io.kubernetes.", "io.cista.", "org.opencontainers.image.",
                                       "io.container.manager", "io.podman.annotations."};
    json_t *out = json_object();
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)ann, key, v)
    {
        bool ok = false;
        for (size_t k = 0; k < ARRAY_LEN(keep) && !ok; k++)
            ok = !strncmp(key, keep[k], strlen(keep[k]));
        if (ok)
            json_object_set(out, key, v);
        else
            log_info("dropping the host's annotation %s: only inert annotations reach the "
                     "runtime of a confidential container",
                     key);
    }
    return out;
}

/*
 * Whether @path is the namespace of kind @type this process is in (the host's, as far as the
 * container is concerned): its IPC objects (SysV shared memory, message queues), host name and
 * cgroup view are not the container's to share. The network is the host's anyway (untrusted,
 * as on any confidential VM), so joining it is left to the caller.
 */
static bool is_own_namespace(const char *type, const char *path)
{
    static const struct {
        const char *oci, *proc;
    } kinds[] = {{"ipc", "ipc"}, {"uts", "uts"}, {"cgroup", "cgroup"}};
    for (size_t i = 0; i < ARRAY_LEN(kinds); i++) {
        if (strcmp(type, kinds[i].oci))
            continue;
        _cleanup_free_ char *self = xasprintf("/proc/self/ns/%s", kinds[i].proc);
        struct stat a, b;
        return stat(path, &a) == 0 && stat(self, &b) == 0 && a.st_dev == b.st_dev &&
               a.st_ino == b.st_ino;
    }
    return false;
}

static int build_namespaces(json_t **out, const json_t *hlinux, const agent_host_request *req,
                            cista_error **err)
{
    json_t *hns = hlinux ? json_object_get(hlinux, "namespaces") : NULL;
    _cleanup_json_ json_t *ns = json_array();
    bool have[8] = {0};
    static const char *const known[] = {"pid", "network", "ipc", "uts", "mount", "cgroup"};
    if (json_is_array(hns)) {
        size_t i;
        json_t *v;
        json_array_foreach(hns, i, v)
        {
            const char *type = json_string_value(json_object_get(v, "type"));
            const char *path = json_string_value(json_object_get(v, "path"));
            size_t k;
            for (k = 0; type && k < ARRAY_LEN(known); k++)
                if (!strcmp(type, known[k]))
                    break;
            if (!type || k == ARRAY_LEN(known)) {
                if (type && !strcmp(type, "user"))
                    return err_set(err, -ENOTSUP,
                                   "linux.namespaces[%zu]: user namespaces are not supported for "
                                   "confidential containers",
                                   i);
                return err_set(err, -EINVAL, "linux.namespaces[%zu]: unknown type", i);
            }
            if (have[k])
                continue;
            have[k] = true;
            /* the container's mount and pid namespaces are always its own */
            if (path && (!strcmp(type, "mount") || !strcmp(type, "pid"))) {
                log_warn("ignoring the host's request to join %s namespace %s", type, path);
                path = NULL;
            }
            if (path && is_own_namespace(type, path))
                return err_set(err, -EPERM,
                               "the host's request joins the runtime's own %s namespace (%s): "
                               "refused for a confidential container",
                               type, path);
            json_array_append_new(ns, path ? json_pack("{s:s,s:s}", "type", type, "path", path)
                                           : json_pack("{s:s}", "type", type));
        }
        /* left out means shared with the runtime: never for these */
        for (size_t k = 0; k < ARRAY_LEN(known); k++)
            if (!have[k] && strcmp(known[k], "network") && strcmp(known[k], "cgroup"))
                json_array_append_new(ns, json_pack("{s:s}", "type", known[k]));
    } else {
        json_array_append_new(ns, json_pack("{s:s}", "type", "pid"));
        json_array_append_new(ns, json_pack("{s:s}", "type", "ipc"));
        json_array_append_new(ns, json_pack("{s:s}", "type", "uts"));
        json_array_append_new(ns, json_pack("{s:s}", "type", "mount"));
        if (!req->host_network)
            json_array_append_new(ns, json_pack("{s:s}", "type", "network"));
    }
    *out = steal_ptr(&ns);
    return 0;
}

/* ---- volumes (the policy container's "volumes": name, mount_point) ---- */

static const char *volume_mount_point(const json_t *rules, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(rules, "volumes"), i, v)
    {
        const char *n = json_string_value(json_object_get(v, "name"));
        if (n && name && !strcmp(n, name))
            return json_string_value(json_object_get(v, "mount_point"));
    }
    return NULL;
}

/* The volume whose mount point @dest is (normalised first), or NULL. */
static const char *volume_at(const json_t *rules, const char *dest)
{
    _cleanup_free_ char *nd = pol_path_normalize(dest);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(rules, "volumes"), i, v)
    {
        const char *mp = json_string_value(json_object_get(v, "mount_point"));
        if (nd && mp && !strcmp(mp, nd))
            return json_string_value(json_object_get(v, "name"));
    }
    return NULL;
}

static bool has_opt(const json_t *m, const char *o)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(m, "options"), i, v)
    {
        const char *s = json_string_value(v);
        if (s && !strcmp(s, o))
            return true;
    }
    return false;
}

static bool is_bind(const json_t *m)
{
    const char *type = json_string_value(json_object_get(m, "type"));
    if (type && !strcmp(type, "bind"))
        return true;
    if (type && *type && strcmp(type, "none"))
        return false;
    return has_opt(m, "bind") || has_opt(m, "rbind");
}

/*
 * The bind of the decrypted volume @name (mounted by the agent at ROOTFS/../volumes/NAME, on the
 * sandbox tmpfs) to @mount_point in the container.
 */
static json_t *volume_bind(const char *rootfs, const char *name, const char *mount_point, bool ro)
{
    const char *slash = strrchr(rootfs, '/');
    size_t base = slash ? (size_t)(slash - rootfs) : 0;
    _cleanup_free_ char *src = xasprintf("%.*s/%s/%s", (int)base, rootfs, AGENT_VOLUMES, name);
    json_t *opts = json_pack("[sss]", "rbind", "nosuid", "nodev");
    if (ro)
        json_array_append_new(opts, json_string("ro"));
    return json_pack("{s:s,s:s,s:s,s:o}", "destination", mount_point, "type", "bind", "source", src,
                     "options", opts);
}

int agent_build_config(json_t **out, const img_config *ic, const json_t *rules,
                       const agent_host_request *req, const char *rootfs, cista_error **err)
{
    int rc;
    _cleanup_json_ json_t *host = NULL;
    if (req->config) {
        if ((rc = js_parse_object(&host, req->config, req->config_size, AGENT_MAX_CONFIG,
                                  "the host's config.json", err)) < 0)
            return rc;
    }
    json_t *hproc = host ? json_object_get(host, "process") : NULL;
    if (host && !json_is_object(hproc))
        return err_set(err, -EINVAL, "the host's config.json has no process object");
    json_t *hlinux = host ? json_object_get(host, "linux") : NULL;
    if (hlinux && !json_is_object(hlinux))
        return err_set(err, -EINVAL, "the host's config.json: linux is not an object");

    _cleanup_json_ json_t *c = json_object();
    json_object_set_new(c, "ociVersion", json_string("1.0.2"));
    json_t *proc = NULL;
    if ((rc = build_process(&proc, ic, rules, req, hproc, err)) < 0)
        return rc;
    json_object_set_new(c, "process", proc);

    json_t *hroot = host ? json_object_get(host, "root") : NULL;
    bool ro = json_is_true(json_object_get(rules, "read_only_rootfs")) ||
              json_is_true(json_object_get(hroot, "readonly"));
    json_object_set_new(c, "root", json_pack("{s:s,s:b}", "path", rootfs, "readonly", ro));
    const char *hn = host ? json_string_value(json_object_get(host, "hostname")) : req->hostname;
    if (hn)
        json_object_set_new(c, "hostname", json_string(hn));

    /* mounts: cista's standard set, then the host's others (checked by the policy) */
    json_t *mounts = agent__default_mounts();
    json_object_set_new(c, "mounts", mounts);
    json_t *hm = host ? json_object_get(host, "mounts") : NULL;
    if (hm && !json_is_array(hm))
        return err_set(err, -EINVAL, "the host's config.json: mounts is not an array");
    size_t i;
    json_t *m;
    json_array_foreach(hm, i, m)
    {
        const char *dest = json_string_value(json_object_get(m, "destination"));
        if (!dest)
            return err_set(err, -EINVAL, "the host's config.json: mounts[%zu] has no destination",
                           i);
        if (agent__is_default_mount(dest))
            continue;
        /* containerd's default tmpfs on /run would hide the secrets injected there; the
         * rootfs is in TEE memory already */
        const char *type = json_string_value(json_object_get(m, "type"));
        if (!strcmp(dest, "/run") && type && !strcmp(type, "tmpfs")) {
            log_info("dropping the host's tmpfs on /run: the rootfs is in TEE memory already");
            continue;
        }
        /* a bind at a volume's mount point names the volume's ciphertext: the volume goes there */
        const char *vname = volume_at(rules, dest);
        if (vname && is_bind(m)) {
            json_array_append_new(mounts, volume_bind(rootfs, vname, dest, has_opt(m, "ro")));
            continue;
        }
        json_array_append_new(mounts, json_deep_copy(m));
    }
    /* volumes asked for by name (`cista run --volume`), at the policy's mount point */
    for (size_t k = 0; req->volumes && k < req->volume_count; k++) {
        const char *mp = volume_mount_point(rules, req->volumes[k].name);
        if (mp)
            json_array_append_new(mounts, volume_bind(rootfs, req->volumes[k].name, mp, false));
    }

    json_t *lx = json_object();
    json_object_set_new(c, "linux", lx);
    json_t *ns = NULL;
    if ((rc = build_namespaces(&ns, hlinux, req, err)) < 0)
        return rc;
    json_object_set_new(lx, "namespaces", ns);
    json_object_set_new(lx, "maskedPaths", str_array(g_masked, ARRAY_LEN(g_masked)));
    json_object_set_new(lx, "readonlyPaths", str_array(g_readonly, ARRAY_LEN(g_readonly)));
    if (hlinux) {
        static const char *const pass[] = {"cgroupsPath", "sysctl"};
        for (size_t k = 0; k < ARRAY_LEN(pass); k++) {
            json_t *v = json_object_get(hlinux, pass[k]);
            if (v)
                json_object_set_new(lx, pass[k], json_deep_copy(v));
        }
        json_t *sc = json_object_get(hlinux, "seccomp");
        if (sc) {
            if ((rc = check_seccomp(sc, err)) < 0)
                return rc;
            json_object_set_new(lx, "seccomp", json_deep_copy(sc));
        }
        json_t *res = json_object_get(hlinux, "resources");
        if (json_is_object(res)) {
            json_t *r = json_deep_copy(res);
            /* no host device into the TEE container */
            json_object_set_new(r, "devices",
                                json_pack("[{s:b,s:s}]", "allow", false, "access", "rwm"));
            json_object_set_new(lx, "resources", r);
        }
        if (json_object_get(hlinux, "devices"))
            log_warn("dropping linux.devices of the host's request: no host device enters a "
                     "confidential container");
    }
    if (host) {
        json_t *ann = json_object_get(host, "annotations");
        if (json_is_object(ann))
            json_object_set_new(c, "annotations", inert_annotations(ann));
        if (json_object_get(host, "hooks"))
            log_warn("dropping the hooks of the host's request: host binaries never run for a "
                     "confidential container");
    }
    agent_clamp_rlimits(c);
    *out = steal_ptr(&c);
    return 0;
}

static const struct {
    const char *name;
    int sig;
} g_signals[] = {
    {"HUP", SIGHUP},       {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"ILL", SIGILL},
    {"TRAP", SIGTRAP},     {"ABRT", SIGABRT}, {"BUS", SIGBUS},     {"FPE", SIGFPE},
    {"KILL", SIGKILL},     {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},
    {"PIPE", SIGPIPE},     {"ALRM", SIGALRM}, {"TERM", SIGTERM},   {"CHLD", SIGCHLD},
    {"CONT", SIGCONT},     {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN},
    {"TTOU", SIGTTOU},     {"URG", SIGURG},   {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ},
    {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"IO", SIGIO},
    {"PWR", SIGPWR},       {"SYS", SIGSYS},
};

int agent_parse_signal(const char *s)
{
    if (!s || !*s)
        return -EINVAL;
    if (s[0] >= '0' && s[0] <= '9') {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end || v <= 0 || v > 64)
            return -EINVAL;
        return (int)v;
    }
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < ARRAY_LEN(g_signals); i++)
        if (!strcasecmp(s, g_signals[i].name))
            return g_signals[i].sig;
    return -EINVAL;
}
