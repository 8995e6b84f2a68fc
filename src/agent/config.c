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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "agent/agent.h"
#include "agent/agent_int.h"
#include "crypto/crypto.h"
#include "util/buf.h"
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
    /* "/dev/shm/" or "//dev/shm" is /dev/shm to the runtime too */
    _cleanup_free_ char *n = pol_path_normalize(destination);
    for (size_t i = 0; n && i < ARRAY_LEN(g_default_dest); i++)
        if (!strcmp(n, g_default_dest[i]))
            return true;
    return false;
}

bool agent__path_within(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return true;
    return !strncmp(path, dir, n) && (path[n] == 0 || path[n] == '/');
}

const char *agent__mount_over(const json_t *mounts, const char *path)
{
    _cleanup_free_ char *np = pol_path_normalize(path);
    size_t k;
    json_t *m;
    json_array_foreach(mounts, k, m)
    {
        const char *d = json_string_value(json_object_get(m, "destination"));
        _cleanup_free_ char *nd = d ? pol_path_normalize(d) : NULL;
        if (!np || !nd || agent__path_within(np, nd))
            return d ? d : !np ? path : "(no destination)";
    }
    return NULL;
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

/*
 * OCI rlimits are uint64 (RLIM_INFINITY is 2^64-1); jansson integers are signed, so a value is
 * held as its two's complement (agent_parse_oci() reads 2^64-1 as -1) and written back unsigned
 * by agent_oci_dump_*().
 */
static json_int_t rl_val(rlim_t v)
{
    return (json_int_t)(uint64_t)v;
}

/* false when @v is not an integer (runc and crun refuse it). */
static bool rl_from(rlim_t *out, const json_t *v)
{
    if (!json_is_integer(v))
        return false;
    *out = (rlim_t)(uint64_t)json_integer_value(v);
    return true;
}

/* "unlimited" or the number, for logs: @buf is at least 24 bytes. */
static const char *rl_str(char *buf, size_t size, rlim_t v)
{
    if (v == RLIM_INFINITY)
        return "unlimited";
    snprintf(buf, size, "%llu", (unsigned long long)v);
    return buf;
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
        rlim_t hard, soft;
        if (res < 0 || getrlimit(res, &cur) < 0) {
            log_info("dropping rlimit %s: unknown resource", type ? type : "(none)");
            json_array_remove(rl, i);
            changed++;
            continue;
        }
        if (!rl_from(&hard, json_object_get(e, "hard")) ||
            !rl_from(&soft, json_object_get(e, "soft"))) {
            log_info("dropping rlimit %s: hard or soft is not an unsigned integer", type);
            json_array_remove(rl, i);
            changed++;
            continue;
        }
        rlim_t nh = hard, ns = soft;
        /* Without CAP_SYS_RESOURCE a hard limit can only go down. */
        if (cur.rlim_max != RLIM_INFINITY && (nh == RLIM_INFINITY || nh > cur.rlim_max))
            nh = cur.rlim_max;
        if (ns == RLIM_INFINITY ? nh != RLIM_INFINITY : (nh != RLIM_INFINITY && ns > nh))
            ns = nh;
        if (nh != hard || ns != soft) {
            char a[24], b[24];
            log_info("rlimit %s clamped to soft %s hard %s (this host cannot raise limits)", type,
                     rl_str(a, sizeof(a), ns), rl_str(b, sizeof(b), nh));
            json_object_set_new(e, "hard", json_integer(rl_val(nh)));
            json_object_set_new(e, "soft", json_integer(rl_val(ns)));
            changed++;
        }
        i++;
    }
    return changed;
}

int agent_force_no_core(json_t *rlimits)
{
    if (!json_is_array(rlimits))
        return -EINVAL;
    for (size_t i = 0; i < json_array_size(rlimits);) {
        json_t *e = json_array_get(rlimits, i);
        const char *type = json_string_value(json_object_get(e, "type"));
        if (!type || strcmp(type, "RLIMIT_CORE")) {
            i++;
            continue;
        }
        rlim_t hard = 0, soft = 0;
        if (!rl_from(&hard, json_object_get(e, "hard")) ||
            !rl_from(&soft, json_object_get(e, "soft")) || hard || soft)
            log_info("the host's RLIMIT_CORE is replaced by 0: a core dump of a confidential "
                     "workload would carry its memory out of the TEE");
        json_array_remove(rlimits, i);
    }
    json_array_append_new(rlimits, json_pack("{s:s,s:I,s:I}", "type", "RLIMIT_CORE", "hard",
                                             (json_int_t)0, "soft", (json_int_t)0));
    return 0;
}

/* ---- OCI documents with uint64 members ---- */

/*
 * @data with every integer literal above INT64_MAX (and at most UINT64_MAX) written as its two's
 * complement into @out; false (and @out empty) when it has none. Only number tokens outside
 * strings are touched, and a valid literal becomes a valid literal, so what is malformed stays
 * malformed.
 */
static bool widen_u64(cbuf *out, const char *data, size_t size)
{
    size_t last = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < size; i++) {
        char c = data[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
            continue;
        }
        if (c != '-' && (c < '0' || c > '9'))
            continue;
        size_t j = i;
        bool digits = c != '-' && c != '0';
        while (j < size && data[j] && strchr("0123456789+-.eE", data[j])) {
            digits &= data[j] >= '0' && data[j] <= '9';
            j++;
        }
        /* INT64_MAX has 19 digits, UINT64_MAX 20 */
        if (digits && j - i >= 19 && j - i <= 20) {
            char tok[21];
            memcpy(tok, data + i, j - i);
            tok[j - i] = 0;
            errno = 0;
            unsigned long long v = strtoull(tok, NULL, 10);
            if (!errno && v > (unsigned long long)INT64_MAX) {
                buf_put(out, data + last, i - last);
                buf_printf(out, "%lld", (long long)(int64_t)(uint64_t)v);
                last = j;
            }
        }
        i = j - 1;
    }
    if (!last)
        return false;
    buf_put(out, data + last, size - last);
    return true;
}

int agent_parse_oci(json_t **out, const char *data, size_t size, const char *what,
                    cista_error **err)
{
    if (size > AGENT_MAX_CONFIG)
        return err_set(err, -EMSGSIZE, "%s: %zu bytes is more than the limit of %zu", what, size,
                       (size_t)AGENT_MAX_CONFIG);
    /* the config read back for an exec holds the secret env values: cleansed when freed */
    _cleanup_buf_ cbuf w = CBUF_INIT;
    buf_init(&w, 0, true);
    if (!widen_u64(&w, data, size))
        return js_parse_object(out, data, size, AGENT_MAX_CONFIG, what, err);
    /* a widened literal is one byte longer at most (2^63 -> -2^63): not a reason to refuse */
    return js_parse_object(out, w.data, w.size, w.size, what, err);
}

/*
 * The members the OCI types uint64 that are written unsigned (ELEM is any array element): the
 * rlimits, and the seccomp argument values (masks above 2^63 exist).
 */
static const char g_elem[] = "[]";
#define ELEM g_elem
static const char *const g_u64_members[][8] = {
    {"process", "rlimits", ELEM, "hard", NULL},
    {"process", "rlimits", ELEM, "soft", NULL},
    {"linux", "seccomp", "syscalls", ELEM, "args", ELEM, "value", NULL},
    {"linux", "seccomp", "syscalls", ELEM, "args", ELEM, "valueTwo", NULL},
};

/* 2 when the member at @path (@n components) is a uint64 one, 1 when it leads to one, else 0. */
static int u64_member(const char *const *path, size_t n)
{
    int best = 0;
    for (size_t i = 0; i < ARRAY_LEN(g_u64_members); i++) {
        const char *const *m = g_u64_members[i];
        size_t k = 0;
        /* ELEM is compared by address: no object key is that pointer */
        while (k < n && m[k] &&
               (path[k] == m[k] || (m[k] != ELEM && path[k] != ELEM && !strcmp(path[k], m[k]))))
            k++;
        if (k < n)
            continue;
        if (!m[k])
            return 2;
        best = 1;
    }
    return best;
}

static char *dump_any(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
}

/* jansson's output of a subtree may hold secrets (the env): cleansed before it is freed. */
static void put_dump(cbuf *b, char *s)
{
    buf_puts(b, s);
    crypto_cleanse(s, strlen(s));
    free(s);
}

static void dump_u64(cbuf *b, const json_t *v, const char **path, size_t n)
{
    int m = u64_member(path, n);
    if (m == 2 && json_is_integer(v)) {
        buf_printf(b, "%llu", (unsigned long long)(uint64_t)json_integer_value(v));
    } else if (m == 1 && json_is_object(v)) {
        const char *key;
        json_t *c;
        bool first = true;
        buf_puts(b, "{");
        json_object_foreach((json_t *)v, key, c)
        {
            json_t *k = json_string(key);
            buf_puts(b, first ? "" : ",");
            put_dump(b, dump_any(k));
            json_decref(k);
            buf_puts(b, ":");
            path[n] = key;
            dump_u64(b, c, path, n + 1);
            first = false;
        }
        buf_puts(b, "}");
    } else if (m == 1 && json_is_array(v)) {
        size_t i;
        json_t *c;
        buf_puts(b, "[");
        json_array_foreach(v, i, c)
        {
            buf_puts(b, i ? "," : "");
            path[n] = ELEM;
            dump_u64(b, c, path, n + 1);
        }
        buf_puts(b, "]");
    } else {
        put_dump(b, dump_any(v));
    }
}

static char *dump_oci(const json_t *v, const char *root)
{
    const char *path[8] = {root};
    cbuf b = CBUF_INIT;
    buf_init(&b, 0, true);
    dump_u64(&b, v, path, root ? 1 : 0);
    return (char *)buf_steal(&b, NULL);
}

char *agent_oci_dump_config(const json_t *config)
{
    return dump_oci(config, NULL);
}

char *agent_oci_dump_process(const json_t *process)
{
    return dump_oci(process, "process");
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
    json_t *rlimits = json_is_array(rl) ? json_deep_copy(rl) : default_rlimits();
    json_object_set_new(proc, "rlimits", rlimits);
    /* no core dump: the policy has no rule that could allow one */
    if (agent_force_no_core(rlimits) < 0)
        return err_set(err, -EINVAL, "process.rlimits is not an array");
    *out = steal_ptr(&proc);
    return 0;
}

/*
 * A seccomp filter of the host's request restricts the container and so may pass, but only with
 * actions that deny: the runtime installs it before it switches to the container's user and
 * drops capabilities (without noNewPrivileges), so an action that makes a syscall "succeed"
 * without running it would let the host undo the policy's user and capabilities
 * (setuid/setgroups/capset answered 0 leave the workload root with every capability). Refused:
 * - SCMP_ACT_ERRNO with errno 0 (errnoRet, or defaultErrnoRet for the default action; absent
 *   means EPERM in the OCI runtime spec): the syscall returns 0 and does nothing. Only an errno
 *   the kernel returns as it is (1..4095) passes: runc and libseccomp keep the low 16 bits of
 *   the value (65536 would be 0) and the kernel caps it at MAX_ERRNO;
 * - SCMP_ACT_NOTIFY with a listener socket (runc's listenerPath, crun's receiver): whoever holds
 *   the listener answers the workload's syscalls and installs its own fds in the process
 *   (SECCOMP_IOCTL_NOTIF_ADDFD); SCMP_ACT_TRACE defers them to a ptracer;
 * - any other action name (runc and crun know no more; an unknown one is not a restriction
 *   this code has judged).
 * SCMP_ACT_ALLOW and SCMP_ACT_LOG run the syscall; SCMP_ACT_KILL* and SCMP_ACT_TRAP only stop
 * it (a SIGSYS handler of the workload's own is the workload's).
 */
static bool seccomp_action_ok(const char *action)
{
    static const char *const ok[] = {
        "SCMP_ACT_ALLOW",       "SCMP_ACT_LOG",          "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"};
    for (size_t k = 0; action && k < ARRAY_LEN(ok); k++)
        if (!strcmp(action, ok[k]))
            return true;
    return false;
}

/* The syscall names of @rule, for a refusal: "setuid, setgid, …" (caller frees). */
static char *seccomp_rule_names(const json_t *rule)
{
    cbuf b = CBUF_INIT;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(rule, "names"), i, v)
    {
        if (i == 8) {
            buf_puts(&b, ", ...");
            break;
        }
        buf_printf(&b, "%s%.64s", i ? ", " : "", json_is_string(v) ? json_string_value(v) : "?");
    }
    if (!b.size)
        buf_puts(&b, "no names");
    return (char *)buf_steal(&b, NULL);
}

/* Refuse (and log) the host's seccomp filter: @where is the rule, @why the reason. */
static int seccomp_refuse(cista_error **err, const char *where, const char *why)
{
    log_warn("refusing the host's linux.seccomp: %s %s", where, why);
    return err_set(err, -EPERM, "the host's linux.seccomp: %s %s (refused)", where, why);
}

/* @action of @where with errno member @key of @obj: one that denies, or refused. */
static int seccomp_check_action(const json_t *obj, const char *action, const char *key,
                                const char *where, cista_error **err)
{
    if (!seccomp_action_ok(action)) {
        _cleanup_free_ char *why =
            action && (!strcmp(action, "SCMP_ACT_NOTIFY") || !strcmp(action, "SCMP_ACT_TRACE"))
                ? xasprintf("uses %s: the workload's syscalls would be decided outside the TEE",
                            action)
                : xasprintf("has action %s%.64s%s, not one of SCMP_ACT_ALLOW, SCMP_ACT_LOG, "
                            "SCMP_ACT_ERRNO, SCMP_ACT_KILL*, SCMP_ACT_TRAP",
                            action ? "\"" : "", action ? action : "(none)", action ? "\"" : "");
        return seccomp_refuse(err, where, why);
    }
    /* Checked whatever the action: a runtime that takes it as the fallback of another rule
     * must not find 0 there either (and the spec makes it an error with other actions). */
    json_t *e = json_object_get(obj, key);
    if (e && (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 4095)) {
        _cleanup_free_ char *val = js_dump_compact(e);
        _cleanup_free_ char *why =
            xasprintf("has %s %.32s (action %s): an errno must be from 1 to 4095; SCMP_ACT_ERRNO "
                      "with 0 makes the syscall return success without running it",
                      key, val, action);
        return seccomp_refuse(err, where, why);
    }
    return 0;
}

static int check_seccomp(const json_t *sc, cista_error **err)
{
    int rc;
    if (!json_is_object(sc))
        return err_set(err, -EINVAL, "the host's config.json: linux.seccomp is not an object");
    if (json_object_get(sc, "listenerPath") || json_object_get(sc, "listenerMetadata"))
        return seccomp_refuse(
            err, "names a listener:", "the workload's syscalls would be answered outside the TEE");
    json_t *flags = json_object_get(sc, "flags"), *calls = json_object_get(sc, "syscalls"), *v;
    if ((flags && !json_is_array(flags)) || (calls && !json_is_array(calls)))
        return err_set(err, -EINVAL,
                       "the host's config.json: linux.seccomp flags or syscalls is not an array");
    size_t i;
    json_array_foreach(flags, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), "SECCOMP_FILTER_FLAG_NEW_LISTENER"))
            return seccomp_refuse(err, "asks for SECCOMP_FILTER_FLAG_NEW_LISTENER",
                                  "(a syscall supervisor outside the TEE)");
    }
    if ((rc = seccomp_check_action(sc, json_string_value(json_object_get(sc, "defaultAction")),
                                   "defaultErrnoRet", "defaultAction", err)) < 0)
        return rc;
    json_array_foreach(calls, i, v)
    {
        if (!json_is_object(v))
            return err_set(err, -EINVAL,
                           "the host's config.json: linux.seccomp.syscalls[%zu] is not an object",
                           i);
        _cleanup_free_ char *names = seccomp_rule_names(v);
        _cleanup_free_ char *where = xasprintf("syscalls[%zu] (%s)", i, names);
        if ((rc = seccomp_check_action(v, json_string_value(json_object_get(v, "action")),
                                       "errnoRet", where, err)) < 0)
            return rc;
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
        if ((rc = agent_parse_oci(&host, req->config, req->config_size, "the host's config.json",
                                  err)) < 0)
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
        /* Normalised once, here, for every check below and for the config: the runtime mounts
         * "/dev/shm/" and "//run" where it mounts "/dev/shm" and "/run", and the policy judges
         * normalised destinations, so a spelling must not slip past a check made on another. */
        _cleanup_free_ char *nd = pol_path_normalize(dest);
        if (!nd)
            return err_set(err, -EINVAL,
                           "the host's config.json: mounts[%zu] destination \"%s\" is not an "
                           "absolute path without \"..\"",
                           i, dest);
        if (agent__is_default_mount(nd)) {
            if (strcmp(nd, dest))
                log_info("dropping the host's mount at \"%s\" (%s): cista's own is there", dest,
                         nd);
            continue;
        }
        /* containerd's default tmpfs on /run would hide the secrets injected there; the
         * rootfs is in TEE memory already */
        const char *type = json_string_value(json_object_get(m, "type"));
        if (!strcmp(nd, "/run") && type && !strcmp(type, "tmpfs")) {
            log_info("dropping the host's tmpfs on /run: the rootfs is in TEE memory already");
            continue;
        }
        /* a bind at a volume's mount point names the volume's ciphertext: the volume goes there */
        const char *vname = volume_at(rules, nd);
        if (vname && is_bind(m)) {
            json_array_append_new(mounts, volume_bind(rootfs, vname, nd, has_opt(m, "ro")));
            continue;
        }
        json_t *copy = json_deep_copy(m);
        json_object_set_new(copy, "destination", json_string(nd));
        json_array_append_new(mounts, copy);
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
